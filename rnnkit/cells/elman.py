"""Elman's simple recurrent network (the "vanilla" RNN)."""
from __future__ import annotations

from torch import Tensor

from .base import Cell, GatedWeightsMixin, check_sizes, resolve_activation
from .fused import LeakyParameters

__all__ = ["ElmanCell"]


class ElmanCell(GatedWeightsMixin, Cell):
    r"""Elman cell: the hidden state feeds back into itself.

    .. math::  h_t = f(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}),\quad f \in \{\tanh, \mathrm{relu}\}

    Shapes: ``x_t`` (B, input_size), state ``h`` (B, hidden_size). Weights are laid
    out as in ``torch.nn.RNN`` (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``).

    >>> import torch, rnnkit
    >>> cell = rnnkit.cells.ElmanCell(3, 5)
    >>> h = cell(torch.randn(2, 3), cell.initial_state(2))
    >>> tuple(h.shape)
    (2, 5)
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", *, device=None, dtype=None):
        super().__init__()
        check_sizes(type(self).__name__, input_size=input_size, hidden_size=hidden_size)
        self.input_size, self.hidden_size, self.state_sizes = input_size, hidden_size, hidden_size
        self.nonlinearity = nonlinearity
        self._act = resolve_activation(type(self).__name__, nonlinearity)
        self._make_weights(input_size, hidden_size, 1, bias, device, dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self._init_uniform()

    def project_inputs(self, x: Tensor) -> Tensor:
        return self._project(x)                     # (..., H)

    def fused_kernel(self) -> str:
        return "elman"                # the kernel of rnnkit.engines.fused

    def fused_parameters(self) -> LeakyParameters:
        return LeakyParameters(self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.nonlinearity)

    def step(self, projected_t: Tensor, h: Tensor) -> Tensor:
        return self._act(projected_t + self._recur(h))

    def native_mode(self):
        return "RNN_TANH" if self.nonlinearity == "tanh" else "RNN_RELU"

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, nonlinearity={self.nonlinearity!r}, bias={self.bias}"
