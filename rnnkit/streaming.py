r"""Token-by-token inference: a layer, a stack or a language model that keeps its own state.

A stream is what a sequence model is while it reads a sequence that has not ended yet:
each call takes the next input ``x_t`` and returns ``y_t``, and the state stays inside.
Feeding a whole sequence one step at a time gives the outputs and final state that
:class:`rnnkit.Recurrent` gives for the whole sequence at once (``tests/test_streaming.py``).

- :meth:`rnnkit.Recurrent.stream` → :class:`Stream`
- :meth:`rnnkit.Stack.stream` → :class:`StackStream`
- :meth:`rnnkit.models.LanguageModel.stream` → :class:`rnnkit.models.language_model.LanguageModelStream`
  (embedding → stack → readout, one token per call), built on :class:`StackStream`

This module knows cells only; the layers hand themselves in.

Cells with a fused torch kernel (``LSTMCell``, ``GRUCell``, ``ElmanCell``) step with
torch's single-step kernels (``lstm_cell``, ``gru_cell``, ``rnn_tanh_cell``,
``rnn_relu_cell``) on the cell's own weights; any other cell steps through its
``forward``. The per-call work beyond the kernel is one shape and dtype check.

**Gradients.** Streaming is for inference, so by default every step runs under
``torch.no_grad()`` (nothing is recorded, whatever the ambient mode). With
``grad=True`` the stream follows the ambient mode instead, and its state carries the
graph of every step since the last :meth:`~Stream.reset` — detach it (``reset(state.detach())``)
where an online learner wants to truncate.

>>> import torch, rnnkit
>>> layer = rnnkit.Recurrent(rnnkit.cells.LSTMCell(3, 4))
>>> stream = layer.stream(batch_size=2)
>>> x = torch.randn(2, 5, 3)
>>> ys = torch.stack([stream(x[:, t]) for t in range(5)], 1)
>>> out, (h, c) = layer(x)
>>> torch.allclose(ys, out), torch.allclose(stream.state[1], c)
(True, True)
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from ._arguments import check_int
from ._checks import check_state
from ._torch_private import step_kernels
from .cells.base import Cell, State, state_tensors

__all__ = ["Stream", "StackStream", "check_batch_size", "Inference"]

_STEP_KERNELS = step_kernels


def check_batch_size(owner: str, batch_size) -> int:
    return check_int(owner, "batch_size", batch_size)


def _is_recurrent(layer) -> bool:
    """An :class:`rnnkit.Recurrent` layer: one cell, one direction (told apart without importing it)."""
    return isinstance(getattr(layer, "cell", None), Cell) and isinstance(getattr(layer, "reverse", None), bool)


class Inference:
    """Runs ``_advance`` under ``no_grad`` unless the stream was made with ``grad=True``."""

    _grad: bool

    def __call__(self, x_t):
        if self._grad or not torch.is_grad_enabled():
            return self._advance(x_t)
        with torch.no_grad():
            return self._advance(x_t)


class Stream(Inference):
    """One :class:`~rnnkit.Recurrent` layer, fed one step per call: ``y_t = stream(x_t)``.

    Made by ``layer.stream(batch_size=1, state=None, grad=False)``. ``x_t`` is
    (batch_size, input_size), or (input_size,) when ``batch_size`` is 1 (then ``y_t`` is
    (output_size,)). ``state`` is the cell's state, each tensor (batch_size, size);
    ``reset(state=None)`` starts again from the cell's initial state or from ``state``.
    A layer built with ``reverse=True`` reads a sequence from its end and cannot stream.
    Make the stream after moving the layer to its device and dtype: the stream
    checks inputs against the parameters it finds then.
    """

    def __init__(self, layer, batch_size: int = 1, state: State | None = None, *,
                 grad: bool = False, owner: str = "Recurrent.stream"):
        if not _is_recurrent(layer):
            raise TypeError(f"{owner}: expected an rnnkit.Recurrent layer, got {type(layer).__name__}")
        if layer.reverse:
            raise ValueError(f"{owner}: the layer runs in reverse (reverse=True), from each sequence's end; "
                             f"a stream only reads forward, one step at a time")
        self.owner, self.layer, self.cell = owner, layer, layer.cell
        self.batch_size = check_batch_size(owner, batch_size)
        self._grad = bool(grad)
        like = state_tensors(self.cell.initial_state(1))[0]
        self._dtype, self._device = like.dtype, like.device
        self._shape = torch.Size((self.batch_size, self.cell.input_size))
        mode = self.cell.native_mode()
        if mode in _STEP_KERNELS and len(self.cell.flat_weights()) in (2, 4):     # torch's step kernels
            # take no projection (weight_hr): a projected LSTM steps through its own step
            self._kernel, self._weights = _STEP_KERNELS[mode], list(self.cell.flat_weights())
            if len(self._weights) == 2:                     # (w_ih, w_hh): no biases
                self._weights += [None, None]
            self._step = self._native_lstm_step if mode == "LSTM" else self._native_step
        else:
            self._step = self._cell_step
        self.reset(state)

    @property
    def state(self) -> State:
        """The cell's state after the last call (before any: the initial state)."""
        return self._state

    def reset(self, state: State | None = None) -> None:
        """Start again: from the cell's initial state, or from ``state`` (batch_size, size) per tensor."""
        if state is None:
            state = self.cell.initial_state(self.batch_size, device=self._device, dtype=self._dtype)
        else:
            like = torch.empty(0, dtype=self._dtype, device=self._device)
            check_state(self.owner, state, self.cell.state_sizes, self.batch_size, like)
            state = tuple(state) if isinstance(state, list) else state
        self._state = state

    # one step: the fast path checks one shape and one dtype; anything else goes to _unusual
    def _advance(self, x_t: Tensor) -> Tensor:
        if type(x_t) is not Tensor or x_t.shape != self._shape or x_t.dtype != self._dtype:
            return self._unusual(x_t)
        return self._step(x_t)

    def _native_lstm_step(self, x_t: Tensor) -> Tensor:
        self._state = state = self._kernel(x_t, self._state, *self._weights)      # (h, c)
        return state[0]

    def _native_step(self, x_t: Tensor) -> Tensor:
        self._state = h = self._kernel(x_t, self._state, *self._weights)
        return h

    def _cell_step(self, x_t: Tensor) -> Tensor:
        self._state = state = self.cell(x_t, self._state)
        return self.cell.output(state)

    def _unusual(self, x_t) -> Tensor:
        """An unbatched step, or a clear error."""
        owner, size = self.owner, self.cell.input_size
        if not isinstance(x_t, Tensor):
            raise TypeError(f"{owner}: expected x_t to be a torch.Tensor, got {type(x_t).__name__}")
        if x_t.dim() not in (1, 2):
            raise ValueError(f"{owner}: expected x_t of shape (batch, input_size) = {tuple(self._shape)}, "
                             f"got shape {tuple(x_t.shape)}")
        if x_t.shape[-1] != size:
            raise ValueError(f"{owner}: expected x_t of size {size} in the last dimension, got {x_t.shape[-1]}")
        if x_t.dim() == 2 and x_t.shape[0] != self.batch_size:
            raise ValueError(f"{owner}: expected a batch of {self.batch_size} (fixed when the stream was made), "
                             f"got {x_t.shape[0]}; make a new stream with stream(batch_size={x_t.shape[0]})")
        if x_t.dim() == 1 and self.batch_size != 1:
            raise ValueError(f"{owner}: a 1-D x_t (input_size,) is one sequence, but this stream has a batch of "
                             f"{self.batch_size}; pass x_t of shape {tuple(self._shape)}")
        if x_t.dtype != self._dtype:
            raise TypeError(f"{owner}: x_t dtype {x_t.dtype} does not match the layer's dtype {self._dtype}; "
                            f"convert it with .to({self._dtype})")
        if x_t.dim() == 1:
            return self._step(x_t.unsqueeze(0)).squeeze(0)
        return self._step(x_t)                   # a Tensor subclass of the right shape

    def __repr__(self) -> str:
        return f"Stream({self.owner.removesuffix('.stream')}, batch_size={self.batch_size}, grad={self._grad})"


class StackStream(Inference):
    """A :class:`~rnnkit.Stack` of forward :class:`~rnnkit.Recurrent` layers, one step per call.

    Made by ``stack.stream(batch_size=1, state=None, grad=False)``; ``state`` is a list
    with one cell state per layer, as :meth:`rnnkit.Stack.forward` takes and returns it.
    Dropout between layers and residual connections act as in ``Stack.forward`` (dropout
    only in training mode). Bidirectional layers cannot stream: their backward half needs
    the sequence's end first.
    """

    def __init__(self, stack, batch_size: int = 1, state=None, *, grad: bool = False,
                 owner: str = "Stack.stream"):
        if not all(hasattr(stack, name) for name in ("layers", "dropout", "residual")):
            raise TypeError(f"{owner}: expected an rnnkit.Stack, got {type(stack).__name__}")
        for i, layer in enumerate(stack.layers):
            if not _is_recurrent(layer):
                raise ValueError(f"{owner}: layer {i} is a {type(layer).__name__}; a stream reads one step at "
                                 f"a time, so every layer must be a forward rnnkit.Recurrent")
        if state is not None and (not isinstance(state, (list, tuple)) or len(state) != len(stack.layers)):
            got = len(state) if isinstance(state, (list, tuple)) else type(state).__name__
            raise ValueError(f"{owner}: expected one state per layer ({len(stack.layers)}), got {got}")
        self.owner, self.stack, self._grad = owner, stack, bool(grad)
        self.batch_size = check_batch_size(owner, batch_size)
        states = state if state is not None else [None] * len(stack.layers)
        self.streams = [Stream(layer, batch_size, s, grad=True, owner=f"{owner} (layer {i})")
                        for i, (layer, s) in enumerate(zip(stack.layers, states))]

    @property
    def state(self) -> list:
        """One cell state per layer."""
        return [s.state for s in self.streams]

    def reset(self, state=None) -> None:
        """Start again from the initial states, or from ``state`` (one per layer)."""
        if state is not None and (not isinstance(state, (list, tuple)) or len(state) != len(self.streams)):
            got = len(state) if isinstance(state, (list, tuple)) else type(state).__name__
            raise ValueError(f"{self.owner}: expected one state per layer ({len(self.streams)}), got {got}")
        for i, stream in enumerate(self.streams):
            stream.reset(None if state is None else state[i])

    def _advance(self, x_t: Tensor) -> Tensor:
        stack = self.stack
        dropout = stack.dropout if stack.training else 0.0
        for i, stream in enumerate(self.streams):
            inputs = x_t
            if i > 0 and dropout > 0:
                x_t = F.dropout(x_t, dropout, True)
            x_t = stream._advance(x_t)
            if stack.residual and i > 0:
                x_t = x_t + inputs
        return x_t

    def __repr__(self) -> str:
        return f"StackStream({len(self.streams)} layers, batch_size={self.batch_size}, grad={self._grad})"
