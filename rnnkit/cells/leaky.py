"""Leaky-integrator units: an Elman cell with per-unit time constants."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Cell, GatedWeightsMixin, check_sizes, resolve_activation
from .fused import LeakyParameters

__all__ = ["LeakyCell"]


class _LeakRates:
    """Per-unit leak rates ``alpha``, fixed (the buffer ``_alpha``) or learned through a sigmoid
    (the parameter ``alpha_logit``); shared by :class:`LeakyCell` and ``LinearLeakyCell``."""

    def _init_leak_rates(self, owner: str, alpha, hidden_size: int, learn_alpha: bool, device, dtype) -> None:
        """Check ``alpha`` — a float or (hidden_size,), in (0, 1], or (0, 1) when learned — and store it."""
        alpha = torch.as_tensor(alpha, dtype=dtype or torch.get_default_dtype(), device=device)
        if alpha.dim() == 0:
            alpha = alpha.expand(hidden_size).clone()
        if alpha.shape != (hidden_size,):
            raise ValueError(f"{owner}: alpha must be a float or have shape ({hidden_size},), "
                             f"got shape {tuple(alpha.shape)}")
        upper_ok = (alpha < 1).all() if learn_alpha else (alpha <= 1).all()
        if not ((alpha > 0).all() and upper_ok):
            bound = "(0, 1) when learn_alpha=True" if learn_alpha else "(0, 1]"
            raise ValueError(f"{owner}: alpha must lie in {bound}, got values from "
                             f"{alpha.min().item():g} to {alpha.max().item():g}")
        self.learn_alpha = learn_alpha
        if learn_alpha:
            self.alpha_logit = nn.Parameter(torch.logit(alpha))
        else:
            self.register_buffer("_alpha", alpha)

    @property
    def alpha(self) -> Tensor:
        return torch.sigmoid(self.alpha_logit) if self.learn_alpha else self._alpha


class LeakyCell(_LeakRates, GatedWeightsMixin, Cell):
    r"""Leaky units: each unit mixes its old value with a new Elman update.

    .. math::  h_t = (1 - \alpha) \odot h_{t-1} + \alpha \odot f(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})

    ``alpha`` in (0, 1] is the inverse time constant (``alpha = dt / tau``): a
    float shared by all units, or one value per unit — e.g.
    ``torch.logspace(-2, 0, hidden_size)`` gives units at time scales from 1 to
    100 steps. With ``learn_alpha=True`` each unit's alpha is trained, kept inside
    (0, 1) by a sigmoid. ``alpha = 1`` is the Elman cell.

    >>> import torch, rnnkit
    >>> cell = rnnkit.cells.LeakyCell(3, 4, alpha=torch.tensor([1.0, 0.5, 0.1, 0.01]))
    >>> tuple(cell(torch.randn(2, 3), cell.initial_state(2)).shape)
    (2, 4)
    """

    def __init__(self, input_size: int, hidden_size: int, alpha=0.5, learn_alpha: bool = False,
                 bias: bool = True, nonlinearity: str = "tanh", *, device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        check_sizes(name, input_size=input_size, hidden_size=hidden_size)
        self.input_size, self.hidden_size, self.state_sizes = input_size, hidden_size, hidden_size
        self.nonlinearity = nonlinearity
        self._act = resolve_activation(name, nonlinearity)
        self._make_weights(input_size, hidden_size, 1, bias, device, dtype)
        self._init_leak_rates(name, alpha, hidden_size, learn_alpha, device, dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self._init_uniform()

    def project_inputs(self, x: Tensor) -> Tensor:
        return self._project(x)

    def fused_kernel(self) -> str:
        return "leaky"                # the kernel of rnnkit.engines.fused

    def fused_parameters(self) -> LeakyParameters:
        return LeakyParameters(self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.nonlinearity,
                               alpha=self.alpha)

    def step(self, projected_t: Tensor, h: Tensor) -> Tensor:
        target = self._act(projected_t + self._recur(h))
        return h + self.alpha * (target - h)        # = (1 - a) h + a f(.)
