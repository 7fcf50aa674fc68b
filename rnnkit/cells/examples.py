r"""Cells written the way a user writes one: plain torch operations in ``project_inputs`` and ``step``,
no capability, no kernel of their own. The ``traced`` engine runs them (and any cell like them) at the
speed of a whole-sequence kernel; ``benchmarks/any_cell.py`` measures how close, and the tests hold
every one to the ``loop`` engine. They are also cells worth having:

- :class:`PlainGRUCell`: the GRU's equations (those of :class:`~rnnkit.cells.GRUCell`) as a user
  would type them, the benchmark's yardstick against the built-in fused GRU;
- :class:`PeepholeLSTMCell`: an LSTM whose gates also read the cell state (Gers & Schmidhuber 2000);
- :class:`IndRNNCell`: ``h_t = relu(W x_t + u ⊙ h_{t-1} + b)``, each unit its own recurrence
  (Li et al. 2018);
- :class:`MinimalGatedCell`: the minimal gated unit, one forget gate (Zhou et al. 2016).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .base import Cell, check_sizes

__all__ = ["PlainGRUCell", "PeepholeLSTMCell", "IndRNNCell", "MinimalGatedCell"]


class _Example(Cell):
    """Sizes, and weights ``U(-1/√H, 1/√H)`` as torch initializes its recurrent layers."""

    def __init__(self, input_size: int, hidden_size: int, state_sizes, device=None, dtype=None):
        super().__init__()
        check_sizes(type(self).__name__, input_size=input_size, hidden_size=hidden_size)
        self.input_size, self.hidden_size, self.state_sizes = input_size, hidden_size, state_sizes
        self._kw = {"device": device, "dtype": dtype}

    def _weight(self, *shape) -> nn.Parameter:
        bound = 1 / math.sqrt(self.hidden_size)
        return nn.Parameter(torch.empty(*shape, **self._kw).uniform_(-bound, bound))


class PlainGRUCell(_Example):
    r"""The GRU (torch's variant) in plain torch operations: what :class:`~rnnkit.cells.GRUCell`
    computes, without telling any engine so.

    .. math::
        [r, z] = \sigma(x_{rz} + W_{h,rz} h + b_{h,rz}),\quad n = \tanh(x_n + r ⊙ (W_{hn} h + b_{hn})),\quad
        h_t = n + z ⊙ (h - n)
    """

    def __init__(self, input_size: int, hidden_size: int, *, device=None, dtype=None):
        super().__init__(input_size, hidden_size, hidden_size, device, dtype)
        H = hidden_size
        self.weight_ih, self.weight_hh = self._weight(3 * H, input_size), self._weight(3 * H, H)
        self.bias_ih, self.bias_hh = self._weight(3 * H), self._weight(3 * H)

    def project_inputs(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias_ih)

    def step(self, p: Tensor, h: Tensor) -> Tensor:
        x_r, x_z, x_n = p.chunk(3, -1)
        h_r, h_z, h_n = F.linear(h, self.weight_hh, self.bias_hh).chunk(3, -1)
        r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        return n + z * (h - n)


class PeepholeLSTMCell(_Example):
    r"""An LSTM with peepholes: the input and forget gates read ``c_{t-1}``, the output gate ``c_t``.

    .. math::
        i = \sigma(x_i + W_{hi} h + p_i ⊙ c),\ f = \sigma(x_f + W_{hf} h + p_f ⊙ c),\ g = \tanh(x_g + W_{hg} h),\\
        c_t = f ⊙ c + i ⊙ g,\quad o = \sigma(x_o + W_{ho} h + p_o ⊙ c_t),\quad h_t = o ⊙ \tanh(c_t)

    State ``(h, c)``.
    """

    def __init__(self, input_size: int, hidden_size: int, *, device=None, dtype=None):
        super().__init__(input_size, hidden_size, (hidden_size, hidden_size), device, dtype)
        H = hidden_size
        self.weight_ih, self.weight_hh = self._weight(4 * H, input_size), self._weight(4 * H, H)
        self.bias = self._weight(4 * H)
        self.peephole = self._weight(3, H)

    def project_inputs(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias)

    def step(self, p: Tensor, state):
        h, c = state
        x_i, x_f, x_g, x_o = (p + h @ self.weight_hh.t()).chunk(4, -1)
        i = torch.sigmoid(x_i + self.peephole[0] * c)
        f = torch.sigmoid(x_f + self.peephole[1] * c)
        c = f * c + i * torch.tanh(x_g)
        o = torch.sigmoid(x_o + self.peephole[2] * c)
        return o * torch.tanh(c), c


class IndRNNCell(_Example):
    r"""The independently recurrent cell: ``h_t = relu(W x_t + b + u ⊙ h_{t-1})``; ``u`` starts in
    ``U(0, 1)`` so that no unit's recurrence explodes at first (``|u| ≤ 1``)."""

    def __init__(self, input_size: int, hidden_size: int, *, device=None, dtype=None):
        super().__init__(input_size, hidden_size, hidden_size, device, dtype)
        self.weight_ih, self.bias = self._weight(hidden_size, input_size), self._weight(hidden_size)
        self.weight_hh = nn.Parameter(torch.rand(hidden_size, **self._kw))

    def project_inputs(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias)

    def step(self, p: Tensor, h: Tensor) -> Tensor:
        return torch.relu(p + self.weight_hh * h)


class MinimalGatedCell(_Example):
    r"""The minimal gated unit: one gate that forgets and writes.

    .. math:: f = \sigma(x_f + W_{hf} h),\quad \tilde h = \tanh(x_h + W_{hh} (f ⊙ h)),\quad
              h_t = h + f ⊙ (\tilde h - h)
    """

    def __init__(self, input_size: int, hidden_size: int, *, device=None, dtype=None):
        super().__init__(input_size, hidden_size, hidden_size, device, dtype)
        H = hidden_size
        self.weight_ih, self.bias = self._weight(2 * H, input_size), self._weight(2 * H)
        self.weight_hf, self.weight_hh = self._weight(H, H), self._weight(H, H)

    def project_inputs(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias)

    def step(self, p: Tensor, h: Tensor) -> Tensor:
        x_f, x_h = p.chunk(2, -1)
        f = torch.sigmoid(x_f + h @ self.weight_hf.t())
        candidate = torch.tanh(x_h + (f * h) @ self.weight_hh.t())
        return h + f * (candidate - h)
