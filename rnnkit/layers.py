"""Layers: a runner that carries a cell through time, and wrappers that compose runners.

``Recurrent`` is the only place that knows about time; ``Stack`` (depth) and
``Bidirectional`` (direction) are wrappers around runners, never flags in a cell.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Iterable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ._arguments import check_probability
from ._checks import check_input, check_lengths, check_state
from .cells.base import Cell, State, map_state
from .engines.select import get_engine
from .engines.traced import reason
from .regularizers import locked_dropout
from .streaming import StackStream, Stream

__all__ = ["Recurrent", "Stack", "Bidirectional", "reverse_padded"]


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of ``x`` (B, T, F) in time within its own length.

    Padding stays where it is, so a reversed batch is still left-aligned.
    """
    if lengths is None:
        return x.flip(1)
    t = torch.arange(x.shape[1], device=x.device)                      # (T,)
    ends = lengths.to(x.device).unsqueeze(1)                           # (B, 1)
    index = torch.where(t < ends, ends - 1 - t, t)                     # (B, T)
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


def autocast_state(state, x):
    """Under autocast, a state in another floating dtype than the input (the lower precision a
    layer or torch's kernel returned it in, carried to the next chunk) taken in the input's, as
    torch.nn.LSTM takes it; outside autocast the state as given (a dtype mismatch stays an error)."""
    if not (isinstance(x, Tensor) and x.is_floating_point() and torch.is_autocast_enabled(x.device.type)):
        return state
    return map_state(lambda s: s.to(x.dtype) if isinstance(s, Tensor) and s.is_floating_point() else s, state)


class Recurrent(nn.Module):
    """Run ``cell`` over a sequence: many-to-many, ``(outputs, final_state)``.

    Args:
        cell: any :class:`rnnkit.cells.Cell`.
        engine: ``"auto"`` (the fastest engine that runs this cell), ``"loop"``
            (reference) or ``"native"`` (torch's fused kernels).
        batch_first: input is (B, T, input_size) when True, else (T, B, input_size).
        reverse: run from the last valid step to the first (the backward half of a
            bidirectional layer). Outputs are returned in the original time order.

    ``forward(x, state=None, lengths=None)``: ``state`` defaults to the cell's
    initial state; ``lengths`` (B,) marks a padded batch — outputs past a
    sequence's end are zero and its final state is the state at its own last step.
    A 2-D ``x`` (T, input_size) is one unbatched sequence.

    >>> import torch, rnnkit
    >>> layer = rnnkit.Recurrent(rnnkit.cells.LSTMCell(8, 16))
    >>> out, (h, c) = layer(torch.randn(4, 10, 8), lengths=[10, 7, 3, 1])
    >>> tuple(out.shape), layer.engine
    ((4, 10, 16), 'native')
    """

    def __init__(self, cell: Cell, engine: str = "auto", batch_first: bool = True,
                 reverse: bool = False, *, name: str | None = None):
        super().__init__()
        if not isinstance(cell, Cell):
            raise TypeError(f"Recurrent: expected an rnnkit.cells.Cell, got {type(cell).__name__}")
        self.cell = cell
        self.batch_first = batch_first
        self.reverse = reverse
        self._name = name or f"Recurrent({type(cell).__name__})"
        self.set_engine(engine)

    @property
    def input_size(self) -> int:
        return self.cell.input_size

    @property
    def output_size(self) -> int:
        return self.cell.output_size

    @property
    def engine(self) -> str:
        """Name of the engine this layer runs (``auto`` resolved)."""
        return self._engine.name

    @property
    def engine_reason(self) -> str | None:
        """Why this layer runs a slower engine than it asked for: the traced engine's reason for running
        the cell's step on the loop (a step that cannot be traced), or None."""
        return reason(self.cell) if self.engine == "traced" else None

    def set_engine(self, engine) -> "Recurrent":
        """Run on ``engine`` from now on: a name, as for ``engine=``, or an engine object (``name``,
        ``supports(cell)``, ``run(cell, x, state, lengths)``), checked against the cell."""
        self._engine = get_engine(engine, self.cell, self._name)
        return self

    @contextlib.contextmanager
    def running_on(self, engine):
        """Within the block this layer runs on ``engine`` (as for :meth:`set_engine`), then on its own
        engine again, also after an error (:func:`rnnkit.analysis.gradients.record_states` records
        states this way)."""
        before = self._engine
        self.set_engine(engine)
        try:
            yield self
        finally:
            self._engine = before

    def engine_for(self, x: Tensor) -> str:
        """The name of the engine that runs input ``x`` (laid out as for :meth:`forward`) if called now:
        ``auto``'s choice for its device, batch size and gradient, handed over where a tool traces the
        call (torch.compile, export, torch.func), autocast is on or the batch is empty
        (:func:`rnnkit.engines.select.hand_over`)."""
        x = x.unsqueeze(0) if x.dim() == 2 else x if self.batch_first else x.transpose(0, 1)
        return self._engine.for_input(self.cell, x).name

    def forward(self, x: Tensor, state: State | None = None, lengths=None):
        owner, cell = self._name, self.cell
        like = next(cell.parameters(), None)
        check_input(owner, x, cell.input_size, like, self.batch_first)
        if (not torch.compiler.is_compiling() and x.is_inference() and torch.is_grad_enabled()
                and not torch.is_inference_mode_enabled()):
            x = x.clone()           # made under inference_mode, used where autograd records: every engine takes it
        unbatched = x.dim() == 2
        if unbatched:
            if lengths is not None:
                raise ValueError(f"{owner}: lengths apply to a batch; an unbatched (time, features) "
                                 f"input is one sequence of its full length")
            x = x.unsqueeze(0)
            if state is not None:
                state = map_state(lambda s: s.unsqueeze(0), state)
        elif not self.batch_first:
            x = x.transpose(0, 1)
        batch, steps = x.shape[:2]
        lengths = check_lengths(owner, lengths, batch, steps)
        if lengths is not None:
            # padding never reaches a state or a gradient, whatever it holds (NaN included): the
            # engines keep a finished sequence's state, but NaN * 0 is still NaN. Past its end a
            # sequence reads its own first input again: a value every cell accepts (zeros are not
            # one: an HMM filter's log-probabilities, say)
            alive = torch.arange(steps, device=x.device) < lengths.to(x.device).unsqueeze(1)
            x = torch.where(alive.unsqueeze(-1), x, x[:, :1])
        if state is None:
            state = cell.initial_state(batch, device=x.device, dtype=x.dtype)
        else:
            state = autocast_state(state, x)
            check_state(owner, state, cell.state_sizes, batch, x)
        if self.reverse:
            x = reverse_padded(x, lengths)
        outputs, final = self._engine.run(cell, x, state, lengths)   # (B, T, O)
        if self.reverse:
            outputs = reverse_padded(outputs, lengths)
        if unbatched:
            return outputs.squeeze(0), map_state(lambda s: s.squeeze(0), final)
        if not self.batch_first:
            outputs = outputs.transpose(0, 1)
        return outputs, final

    def stream(self, batch_size: int = 1, state: State | None = None, *, grad: bool = False):
        """A :class:`rnnkit.streaming.Stream` over this layer: ``y_t = stream(x_t)``, one step per call,
        the state kept inside; under ``no_grad`` unless ``grad=True``."""
        return Stream(self, batch_size, state, grad=grad, owner=f"{self._name}.stream")

    def extra_repr(self) -> str:
        return f"engine={self.engine!r}, batch_first={self.batch_first}, reverse={self.reverse}"


class Bidirectional(nn.Module):
    """Run a forward and a backward layer over the same input and merge their outputs.

    ``backward_layer`` must be built with ``reverse=True``. ``merge`` is
    ``"concat"`` (output size = sum of both) or ``"sum"`` (sizes must agree).
    The final state is ``(forward_state, backward_state)``; the backward state is
    the one after reading each sequence's first step.

    >>> import torch, rnnkit
    >>> from rnnkit.cells import GRUCell
    >>> bi = rnnkit.Bidirectional(rnnkit.Recurrent(GRUCell(3, 5)),
    ...                           rnnkit.Recurrent(GRUCell(3, 5), reverse=True))
    >>> out, (h_fwd, h_bwd) = bi(torch.randn(2, 7, 3))
    >>> tuple(out.shape)
    (2, 7, 10)
    """

    def __init__(self, forward_layer: Recurrent, backward_layer: Recurrent, merge: str = "concat"):
        super().__init__()
        name = type(self).__name__
        if forward_layer.reverse or not backward_layer.reverse:
            raise ValueError(f"{name}: the forward layer needs reverse=False and the backward layer "
                             f"reverse=True, got {forward_layer.reverse} and {backward_layer.reverse}")
        if forward_layer.input_size != backward_layer.input_size:
            raise ValueError(f"{name}: both layers must read the same input size, got "
                             f"{forward_layer.input_size} and {backward_layer.input_size}")
        if merge not in ("concat", "sum"):
            raise ValueError(f"{name}: merge must be 'concat' or 'sum', got {merge!r}")
        if merge == "sum" and forward_layer.output_size != backward_layer.output_size:
            raise ValueError(f"{name}: merge='sum' needs equal output sizes, got "
                             f"{forward_layer.output_size} and {backward_layer.output_size}")
        self.forward_layer, self.backward_layer, self.merge = forward_layer, backward_layer, merge

    @property
    def input_size(self) -> int:
        return self.forward_layer.input_size

    @property
    def output_size(self) -> int:
        size = self.forward_layer.output_size
        return size + self.backward_layer.output_size if self.merge == "concat" else size

    def forward(self, x: Tensor, state=None, lengths=None):
        if state is None:
            state = (None, None)
        elif not (isinstance(state, (tuple, list)) and len(state) == 2):
            raise TypeError(f"{type(self).__name__}: expected the state as a pair "
                            f"(forward_state, backward_state), got {type(state).__name__}")
        out_f, final_f = self.forward_layer(x, state[0], lengths)
        out_b, final_b = self.backward_layer(x, state[1], lengths)
        out = torch.cat([out_f, out_b], dim=-1) if self.merge == "concat" else out_f + out_b
        return out, (final_f, final_b)

    def extra_repr(self) -> str:
        return f"merge={self.merge!r}"


class Stack(nn.Module):
    """Deep RNN: layers applied one after another.

    Args:
        layers: ``Recurrent`` or ``Bidirectional`` layers; each one's input size
            must equal the previous one's output size.
        dropout: dropout probability on the outputs of every layer but the last.
        locked: draw that dropout's mask once per sequence, the same at every step
            (:func:`rnnkit.regularizers.locked_dropout`), not anew at each step.
        residual: add each layer's input to its output (from the second layer
            on), a skip connection that eases gradient flow in deep stacks; those
            layers must keep the size unchanged.

    ``forward(x, state=None, lengths=None) -> (outputs, [final state per layer])``.

    >>> import torch, rnnkit
    >>> from rnnkit.cells import LSTMCell
    >>> deep = rnnkit.Stack([rnnkit.Recurrent(LSTMCell(3, 8)), rnnkit.Recurrent(LSTMCell(8, 8))],
    ...                     dropout=0.1, residual=True)
    >>> out, states = deep(torch.randn(2, 5, 3))
    >>> tuple(out.shape), len(states)
    ((2, 5, 8), 2)
    """

    def __init__(self, layers: Iterable[nn.Module], dropout: float = 0.0, residual: bool = False, *,
                 locked: bool = False):
        super().__init__()
        name = type(self).__name__
        layers = list(layers)
        if not layers:
            raise ValueError(f"{name}: expected at least one layer, got none")
        for i in range(1, len(layers)):
            if layers[i].input_size != layers[i - 1].output_size:
                raise ValueError(f"{name}: layer {i} expects input size {layers[i].input_size} but "
                                 f"layer {i - 1} outputs {layers[i - 1].output_size}")
            if residual and layers[i].input_size != layers[i].output_size:
                raise ValueError(f"{name}: residual=True needs layer {i} to keep its size, but it maps "
                                 f"{layers[i].input_size} to {layers[i].output_size}")
        dropout = check_probability(name, "dropout", dropout)
        if dropout > 0 and len(layers) == 1:
            warnings.warn(f"{name}: dropout={dropout} has no effect with one layer; it is applied "
                          f"between layers", stacklevel=2)
        self.layers = nn.ModuleList(layers)
        self.dropout, self.residual, self.locked = float(dropout), residual, bool(locked)

    @property
    def input_size(self) -> int:
        return self.layers[0].input_size

    @property
    def output_size(self) -> int:
        return self.layers[-1].output_size

    def forward(self, x: Tensor, state=None, lengths=None):
        if state is None:
            state = [None] * len(self.layers)
        elif len(state) != len(self.layers):
            raise ValueError(f"{type(self).__name__}: expected one state per layer "
                             f"({len(self.layers)}), got {len(state)}")
        finals = []
        for i, layer in enumerate(self.layers):
            inputs = x
            if i > 0 and self.dropout > 0:
                if self.locked:
                    x = locked_dropout(x, self.dropout, self.training,
                                       batch_first=getattr(self.layers[0], "batch_first", True))
                else:
                    x = F.dropout(x, self.dropout, self.training)
            x, final = layer(x, state[i], lengths)
            if self.residual and i > 0:
                x = x + inputs
            finals.append(final)
        return x, finals

    def stream(self, batch_size: int = 1, state=None, *, grad: bool = False):
        """A :class:`rnnkit.streaming.StackStream`: every layer one step per call, the states
        kept inside (one per layer); under ``no_grad`` unless ``grad=True``."""
        return StackStream(self, batch_size, state, grad=grad)

    def extra_repr(self) -> str:
        return f"dropout={self.dropout}, residual={self.residual}" + (", locked=True" if self.locked else "")
