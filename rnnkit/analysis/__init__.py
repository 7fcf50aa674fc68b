"""Seeing inside recurrent networks: gradient flow, Jacobian spectra, fixed points, plots."""
from .fixed_points import FixedPoints, find_fixed_points, plot_fixed_points, visited_states
