"""Long short-term memory."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Cell, GatedWeightsMixin, check_sizes

__all__ = ["LSTMCell", "ProjectedLSTMCell"]


class LSTMCell(GatedWeightsMixin, Cell):
    r"""LSTM cell (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000).

    .. math::
        [i, f, g, o] &= W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh} \\
        c_t &= \sigma(f) \odot c_{t-1} + \sigma(i) \odot \tanh(g) \\
        h_t &= \sigma(o) \odot \tanh(c_t)

    State ``(h, c)``, each (B, hidden_size); the cell emits ``h``. Weights follow
    ``torch.nn.LSTM`` (gate order i, f, g, o). The forget-gate bias starts at
    ``forget_bias`` (default 1, Jozefowicz et al. 2015) so that memory is kept
    by default early in training; set ``forget_bias=None`` for torch's plain init.

    >>> import torch, rnnkit
    >>> cell = rnnkit.cells.LSTMCell(3, 5)
    >>> h, c = cell(torch.randn(2, 3), cell.initial_state(2))
    >>> float((cell.bias_ih[5:10] + cell.bias_hh[5:10]).mean().detach())
    1.0
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 forget_bias: float | None = 1.0, *, device=None, dtype=None):
        super().__init__()
        check_sizes(type(self).__name__, input_size=input_size, hidden_size=hidden_size)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.state_sizes = (hidden_size, hidden_size)
        self.forget_bias = forget_bias
        self._make_weights(input_size, hidden_size, 4, bias, device, dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self._init_uniform()
        if self.bias and self.forget_bias is not None:
            self._set_chunk_bias(1, self.forget_bias)        # gate order i, f, g, o

    def project_inputs(self, x: Tensor) -> Tensor:
        return self._project(x)                     # (..., 4H)

    def fused_kernel(self) -> str:
        return "lstm"                # the kernel of rnnkit.engines.fused

    def step(self, projected_t: Tensor, state):
        h, c = state
        i, f, g, o = (projected_t + self._recur(h)).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def native_mode(self):
        return "LSTM"

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}, forget_bias={self.forget_bias}"


class ProjectedLSTMCell(LSTMCell):
    r"""LSTM with a projected hidden state (Sak et al. 2014; ``torch.nn.LSTM(proj_size=...)``).

    .. math::
        [i, f, g, o] &= W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh} \\
        c_t &= \sigma(f) \odot c_{t-1} + \sigma(i) \odot \tanh(g) \\
        h_t &= W_{hr} \left(\sigma(o) \odot \tanh(c_t)\right)

    State ``(h, c)``: ``h`` (B, proj_size), ``c`` (B, hidden_size); the cell emits ``h``.
    ``weight_hh`` is (4·hidden_size, proj_size) and ``weight_hr`` (proj_size, hidden_size),
    as in torch, so a projected ``torch.nn.LSTM``'s state dict loads unchanged.

    >>> import torch, rnnkit
    >>> cell = rnnkit.cells.ProjectedLSTMCell(3, 8, proj_size=2)
    >>> h, c = cell(torch.randn(5, 3), cell.initial_state(5))
    >>> tuple(h.shape), tuple(c.shape)
    ((5, 2), (5, 8))
    """

    def __init__(self, input_size: int, hidden_size: int, proj_size: int, bias: bool = True,
                 forget_bias: float | None = 1.0, *, device=None, dtype=None):
        name = type(self).__name__
        check_sizes(name, input_size=input_size, hidden_size=hidden_size, proj_size=proj_size)
        if proj_size >= hidden_size:
            raise ValueError(f"{name}: proj_size must be smaller than hidden_size ({hidden_size}), got "
                             f"{proj_size}")
        self.proj_size = proj_size
        super().__init__(input_size, hidden_size, bias, forget_bias, device=device, dtype=dtype)
        self.state_sizes = (proj_size, hidden_size)

    def _make_weights(self, input_size, hidden_size, num_chunks, bias, device=None, dtype=None) -> None:
        super()._make_weights(input_size, hidden_size, num_chunks, bias, device, dtype)
        kw = {"device": device, "dtype": dtype}
        self.weight_hh = torch.nn.Parameter(torch.empty(num_chunks * hidden_size, self.proj_size, **kw))
        self.weight_hr = torch.nn.Parameter(torch.empty(self.proj_size, hidden_size, **kw))

    def reset_parameters(self) -> None:
        super().reset_parameters()
        bound = 1.0 / self.hidden_size ** 0.5
        with torch.no_grad():
            self.weight_hr.uniform_(-bound, bound)

    @property
    def output_size(self) -> int:
        return self.proj_size

    def step(self, projected_t: Tensor, state):
        h, c = super().step(projected_t, state)          # the LSTM's step on the projected h: σ(o) ⊙ tanh(c)
        return torch.nn.functional.linear(h, self.weight_hr), c

    def native_mode(self):
        return "LSTM"                # torch's kernel takes weight_hr as a fifth (or third) weight

    def flat_weights(self) -> list:
        return [*super().flat_weights(), self.weight_hr]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, proj_size={self.proj_size}"
