"""Seeing inside recurrent networks: gradient flow, Jacobian spectra, fixed points, plots."""
