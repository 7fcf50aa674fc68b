"""Jordan's network: the output, not the hidden layer, is fed back."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Cell, check_sizes, resolve_activation

__all__ = ["JordanCell"]

_OUTPUT_ACTIVATIONS = {"identity": lambda v: v, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
                       "softmax": lambda v: torch.softmax(v, dim=-1)}


class JordanCell(Cell):
    r"""Jordan cell: output-to-hidden recurrence.

    .. math::
        h_t &= f(W_{ih} x_t + W_{yh} y_{t-1} + b_h) \\
        y_t &= g(W_{hy} h_t + b_y)

    The state *is* the previous output ``y`` (B, output_size); the hidden layer
    ``h`` is recomputed each step. Because the recurrence passes only through
    ``y``, training with **teacher forcing** — feeding the true ``y*_{t-1}`` in
    place of the model's own — cuts every loop: :meth:`teacher_forced` computes all
    steps in parallel and needs no backpropagation through time.

    >>> import torch, rnnkit
    >>> cell = rnnkit.cells.JordanCell(3, 8, output_size=2)
    >>> y = cell(torch.randn(4, 3), cell.initial_state(4))
    >>> tuple(y.shape)
    (4, 2)
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int,
                 nonlinearity: str = "tanh", output_activation: str = "identity", *,
                 device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        check_sizes(name, input_size=input_size, hidden_size=hidden_size, output_size=output_size)
        if output_activation not in _OUTPUT_ACTIVATIONS:
            raise ValueError(f"{name}: unknown output_activation {output_activation!r}; "
                             f"choose one of {sorted(_OUTPUT_ACTIVATIONS)}")
        self.input_size, self.hidden_size, self._output_size = input_size, hidden_size, output_size
        self.state_sizes = output_size
        self._act = resolve_activation(name, nonlinearity)
        self._out_act = _OUTPUT_ACTIVATIONS[output_activation]
        kw = {"device": device, "dtype": dtype}
        self.input_to_hidden = nn.Linear(input_size, hidden_size, **kw)
        self.output_to_hidden = nn.Linear(output_size, hidden_size, bias=False, **kw)
        self.hidden_to_output = nn.Linear(hidden_size, output_size, **kw)

    @property
    def output_size(self) -> int:
        return self._output_size

    def project_inputs(self, x: Tensor) -> Tensor:
        return self.input_to_hidden(x)              # (..., H)

    def step(self, projected_t: Tensor, y_prev: Tensor) -> Tensor:
        h = self._act(projected_t + self.output_to_hidden(y_prev))
        return self._out_act(self.hidden_to_output(h))

    def output(self, y: Tensor) -> Tensor:
        return y

    def teacher_forced(self, x: Tensor, targets: Tensor, initial_output: Tensor | None = None) -> Tensor:
        """All outputs at once, feeding ``targets[:, t-1]`` back at step ``t``.

        ``x`` (B, T, input_size), ``targets`` (B, T, output_size); ``y_0`` is
        ``initial_output`` or zeros. Returns (B, T, output_size).
        """
        name = type(self).__name__
        if x.dim() != 3 or targets.dim() != 3 or x.shape[:2] != targets.shape[:2]:
            raise ValueError(f"{name}.teacher_forced: expected x (B, T, {self.input_size}) and targets "
                             f"(B, T, {self.output_size}) with the same B and T, got "
                             f"{tuple(x.shape)} and {tuple(targets.shape)}")
        if targets.shape[-1] != self.output_size:
            raise ValueError(f"{name}.teacher_forced: expected targets of size {self.output_size} "
                             f"in the last dimension, got {targets.shape[-1]}")
        y0 = initial_output if initial_output is not None else targets.new_zeros(targets.shape[0], self.output_size)
        fed_back = torch.cat([y0.unsqueeze(1), targets[:, :-1]], dim=1)     # (B, T, O)
        return self.step(self.project_inputs(x), fed_back)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, output_size={self.output_size}"
