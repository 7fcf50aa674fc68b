"""Gated recurrent unit."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Cell, GatedWeightsMixin, check_sizes

__all__ = ["GRUCell"]


class GRUCell(GatedWeightsMixin, Cell):
    r"""GRU cell (Cho et al. 2014), in the variant cuDNN and ``torch.nn.GRU`` compute.

    .. math::
        r &= \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}) \\
        z &= \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz}) \\
        n &= \tanh(W_{in} x_t + b_{in} + r \odot (W_{hn} h_{t-1} + b_{hn})) \\
        h_t &= (1 - z) \odot n + z \odot h_{t-1}

    State ``h`` (B, hidden_size). Weights follow ``torch.nn.GRU`` (order r, z, n).

    >>> import torch, rnnkit
    >>> cell = rnnkit.cells.GRUCell(3, 5)
    >>> tuple(cell(torch.randn(2, 3), cell.initial_state(2)).shape)
    (2, 5)
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *,
                 device=None, dtype=None):
        super().__init__()
        check_sizes(type(self).__name__, input_size=input_size, hidden_size=hidden_size)
        self.input_size, self.hidden_size, self.state_sizes = input_size, hidden_size, hidden_size
        self._make_weights(input_size, hidden_size, 3, bias, device, dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self._init_uniform()

    def project_inputs(self, x: Tensor) -> Tensor:
        return self._project(x)                     # (..., 3H)

    def fused_kernel(self) -> str:
        return "gru"                # the kernel of rnnkit.engines.fused

    def step(self, projected_t: Tensor, h: Tensor) -> Tensor:
        x_r, x_z, x_n = projected_t.chunk(3, dim=-1)
        h_r, h_z, h_n = self._recur(h).chunk(3, dim=-1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        return n + z * (h - n)                      # = (1 - z) n + z h

    def native_mode(self):
        return "GRU"
