"""The simple gated RNN: one update gate, no separate memory cell."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Cell, GatedWeightsMixin, check_sizes

__all__ = ["GatedCell"]


class GatedCell(GatedWeightsMixin, Cell):
    r"""Simple gated RNN: a learned, input-dependent leak between old and new state.

    .. math::
        g_t &= \sigma(W_{gx} x_t + W_{gs} s_{t-1} + b_g) \\
        s_t &= (1 - g_t) \odot s_{t-1} + g_t \odot \tanh(W_{sx} x_t + W_{ss} s_{t-1} + b_s)

    ``weight_ih`` stacks ``[W_gx; W_sx]`` (2H, input_size), ``weight_hh`` stacks
    ``[W_gs; W_ss]`` (2H, H). ``gate_bias`` initialises ``b_g`` (a negative value
    makes units keep their state longer at the start of training).

    >>> import torch, rnnkit
    >>> cell = rnnkit.cells.GatedCell(3, 5)
    >>> tuple(cell(torch.randn(2, 3), cell.initial_state(2)).shape)
    (2, 5)
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 gate_bias: float | None = None, *, device=None, dtype=None):
        super().__init__()
        check_sizes(type(self).__name__, input_size=input_size, hidden_size=hidden_size)
        self.input_size, self.hidden_size, self.state_sizes = input_size, hidden_size, hidden_size
        self.gate_bias = gate_bias
        self._make_weights(input_size, hidden_size, 2, bias, device, dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self._init_uniform()
        if self.bias and self.gate_bias is not None:
            self._set_chunk_bias(0, self.gate_bias)          # chunks: gate, candidate

    def project_inputs(self, x: Tensor) -> Tensor:
        return self._project(x)                     # (..., 2H)

    def fused_kernel(self) -> str:
        return "gated"                # the kernel of rnnkit.engines.fused

    def step(self, projected_t: Tensor, s: Tensor) -> Tensor:
        g, candidate = (projected_t + self._recur(s)).chunk(2, dim=-1)
        g = torch.sigmoid(g)
        return s + g * (torch.tanh(candidate) - s)  # = (1 - g) s + g tanh(.)
