"""Seeing inside recurrent networks: gradient flow, Jacobian spectra, fixed points, plots."""
from .fixed_points import FixedPoints, find_fixed_points, visited_states
from .gradients import GradientFlow, LayerRun, Recording, gradient_decay_rate, gradient_flow, record_states
from .hidden import HiddenPCA, HiddenStates, UnitResponses, hidden_pca, hidden_states, text_features, unit_responses
from .jacobians import (ForgetGates, JacobianProducts, JacobianSpectrum, StepJacobians, forget_gate_product,
                        jacobian_products, jacobian_spectrum, recurrent_eigenvalues, step_jacobians)
from .plots import (plot_fixed_points, plot_forget_gates, plot_gradient_flow, plot_jacobian_products,
                    plot_pca_trajectory, plot_spectrum, plot_unit_responses)

__all__ = ["FixedPoints", "find_fixed_points", "plot_fixed_points", "visited_states",
           "GradientFlow", "LayerRun", "Recording", "gradient_decay_rate", "gradient_flow",
           "record_states",
           "HiddenPCA", "HiddenStates", "UnitResponses", "hidden_pca", "hidden_states", "text_features",
           "unit_responses",
           "ForgetGates", "JacobianProducts", "JacobianSpectrum", "StepJacobians", "forget_gate_product",
           "jacobian_products", "jacobian_spectrum", "recurrent_eigenvalues", "step_jacobians",
           "plot_forget_gates", "plot_gradient_flow", "plot_jacobian_products", "plot_pca_trajectory",
           "plot_spectrum", "plot_unit_responses"]
