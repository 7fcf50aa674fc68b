r"""What a cell gives the kernels of :mod:`rnnkit.engines.fused`: ``cell.fused_parameters()`` returns one
of these frozen records, the one of the kernel family its ``fused_kernel()`` names. A record holds the
tensors the kernel computes with (autograd tracks them through the run: the kernel's gradients flow back
to the cell's parameters) and every constant of the cell's equations as a number the cell computed, so
that no kernel reads a cell's attributes and no formula lives in two places.

>>> import rnnkit
>>> record = rnnkit.cells.LeakyCell(3, 4, alpha=0.25).fused_parameters()
>>> type(record).__name__, tuple(record.weight_hh.shape), record.activation
('LeakyParameters', (4, 4), 'tanh')
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["LeakyParameters", "GateParameters", "LayerNormParameters"]


@dataclass(frozen=True, eq=False)
class LeakyParameters:
    r"""The leaky family (kernels ``"elman"``, ``"leaky"``, ``"rate"``): a one-vector state ``z`` (B, H) with

    .. math::  z_t = z_{t-1} + \alpha \odot \big(f(W_{ih} x_t + b_{ih} + b_{hh} + W_{hh}\,\psi(z_{t-1}))
               - z_{t-1}\big) + \sigma \xi_t,\qquad \xi_t \sim \mathcal N(0, I)

    (no leak: ``z_t = f(...)``)."""
    weight_ih: Tensor                    # W_ih (H, X)
    weight_hh: Tensor                    # W_hh (H, H), the matrix the step multiplies by
    bias_ih: Tensor | None = None        # (H,)
    bias_hh: Tensor | None = None        # (H,)
    activation: str | None = None        # f, a key of cells.base.ACTIVATIONS; None: the identity
    phi: str | None = None               # ψ, on the state before W_hh; None: the identity
    alpha: Tensor | float | None = None  # the leak: None (none), per unit (H,) (a tensor autograd tracks) or a number
    noise_std: float | None = None       # σ, the std of the noise added to the state at every step; None: no noise


@dataclass(frozen=True, eq=False)
class LayerNormParameters:
    """Layer norms inside a gated cell (kernels ``"layernorm-gru"``, ``"layernorm-lstm"``): of the input side
    ``W_ih x`` (its bias: the cell's ``bias_ih``, with ``bias_hh`` added for the LSTM), of the recurrent side
    ``W_hh h`` (its bias: ``bias_hh``, GRU) and, LSTM, of the cell state."""
    input_weight: Tensor                 # γ (G,)
    hidden_weight: Tensor                # γ (G,)
    eps: float
    cell_weight: Tensor | None = None    # LSTM: γ (H,) of the cell state's norm
    cell_bias: Tensor | None = None      # LSTM: β (H,)


@dataclass(frozen=True, eq=False)
class GateParameters:
    """Stacked gate blocks in torch's layout (kernels ``"gated"``, ``"gru"``, ``"lstm"`` and their layer-norm
    kin): ``weight_ih`` (G, X), ``weight_hh`` (G, H) with ``G = blocks · H``, the blocks in the cell's order
    (gated: g, c; GRU: r, z, n; LSTM: i, f, g, o)."""
    weight_ih: Tensor
    weight_hh: Tensor
    bias_ih: Tensor | None = None        # (G,)
    bias_hh: Tensor | None = None        # (G,)
    layer_norm: LayerNormParameters | None = None
