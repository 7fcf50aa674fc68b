r"""The neural Turing machine (Graves, Wayne & Danihelka 2014) as a model: :class:`NTMCell`
(:mod:`rnnkit.cells.ntm`) run by :class:`rnnkit.Recurrent`, with the loss of the copy task
(:func:`rnnkit.data.synthetic.copy_task`) and the head weightings over time."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_lengths
from ..cells.base import Cell, State
from ..cells.ntm import NTMCell
from ..data.synthetic import CopyTask, copy_task
from ..layers import Recurrent

__all__ = ["NTMCell", "NeuralTuringMachine", "NTMWeightings", "CopyTask", "copy_task"]


class _WithWeightings(Cell):
    """Emit ``[y_t, read weights, write weights]`` so that a runner returns the weightings over time."""

    def __init__(self, cell: NTMCell):
        super().__init__()
        self.inner = cell
        self.input_size, self.hidden_size = cell.input_size, cell.hidden_size
        self.state_sizes = cell.state_sizes

    @property
    def output_size(self) -> int:
        return self.inner.output_size + self.state_sizes[3] + self.state_sizes[4]

    def initial_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        return self.inner.initial_state(batch_size, device=device, dtype=dtype)

    def forward(self, x_t: Tensor, state: State) -> State:
        return self.inner(x_t, state)

    def output(self, state: State) -> Tensor:
        return torch.cat([self.inner.output(state), state[3], state[4]], dim=-1)


# ----- the model and its task --------------------------------------------------------------
class NTMWeightings(NamedTuple):
    """Head weightings over time: ``read`` (B, T, R, N), ``write`` (B, T, W, N); zero past a sequence's end."""

    read: Tensor
    write: Tensor


class NeuralTuringMachine(nn.Module):
    r"""An :class:`NTMCell` run through time with independent Bernoulli outputs, for the copy task.

    ``forward(inputs, state=None, *, return_weightings=False)`` returns the logits
    :math:`\eta_t` (B, T, output_size), :math:`p(y_{t,j} = 1) = \sigma(\eta_{t,j})`, and with
    ``return_weightings`` also an :class:`NTMWeightings` of the heads over time (to plot).
    ``inputs`` is ``x`` (B, T, input_size) or a pair ``(x, lengths)``.

    ``loss(inputs, targets, state=None, *, mask=None) -> (loss, None)``: the binary
    cross-entropy in nats per answer bit, :math:`-\frac{1}{|A|\,O}\sum_{(b,t) \in A}\sum_j
    [y \log \sigma(\eta) + (1-y) \log(1-\sigma(\eta))]_{btj}`, over the answer steps
    :math:`A`: ``mask`` (B, T) when given, else those of the :func:`copy_task` layout,
    found from the delimiter (the last input channel). There is no state to carry:
    every batch holds whole episodes, which is what the trainer needs.

    Args:
        input_size, output_size: channels in and bits out; ``width + 2`` and ``width``
            for :func:`copy_task`.
        **cell_options: passed to :class:`NTMCell` (``controller_size``, ``memory_slots``, ...).

    >>> task = copy_task(4, 1, 3, width=4, seed=0)
    >>> model = NeuralTuringMachine(6, 4, controller_size=16, memory_slots=8, memory_width=6)
    >>> logits, weightings = model(task.inputs, return_weightings=True)
    >>> tuple(logits.shape), tuple(weightings.write.shape)
    ((4, 8, 4), (4, 8, 1, 8))
    >>> loss, _ = model.loss(task.inputs, task.targets)
    >>> loss.shape
    torch.Size([])
    """

    def __init__(self, input_size: int, output_size: int, **cell_options):
        super().__init__()
        self.rnn = Recurrent(NTMCell(input_size, output_size, **cell_options), engine="loop",
                             name=type(self).__name__)

    @property
    def cell(self) -> NTMCell:
        return self.rnn.cell

    def _split(self, inputs):
        x, lengths = inputs if isinstance(inputs, (tuple, list)) else (inputs, None)
        if lengths is not None and isinstance(x, Tensor) and x.dim() == 3:
            lengths = check_lengths(type(self).__name__, lengths, x.shape[0], x.shape[1])
        return x, lengths

    def forward(self, inputs, state: State | None = None, *, return_weightings: bool = False):
        x, lengths = self._split(inputs)
        if not return_weightings:
            return self.rnn(x, state, lengths)[0]                                      # (B, T, O)
        runner = Recurrent(_WithWeightings(self.cell), engine="loop", name=type(self).__name__)
        out = runner(x, state, lengths)[0]
        c = self.cell
        logits, read, write = out.split([c.output_size, c.state_sizes[3], c.state_sizes[4]], dim=-1)
        shape = out.shape[:-1]
        return logits, NTMWeightings(read.reshape(*shape, c.read_heads, c.memory_slots),
                                     write.reshape(*shape, c.write_heads, c.memory_slots))

    def loss(self, inputs, targets: Tensor, state: State | None = None, *, mask: Tensor | None = None):
        logits, targets, mask = self._scored(inputs, targets, state, mask)
        return F.binary_cross_entropy_with_logits(logits[mask], targets[mask]), None

    def loss_weight(self, inputs, targets: Tensor) -> int:
        """How many bits the loss averages over: the answer steps times the output width."""
        x, lengths = self._split(inputs)
        return int(self._scored_steps(x, lengths).sum()) * targets.shape[-1]

    def _scored_steps(self, x: Tensor, lengths, mask: Tensor | None = None) -> Tensor:
        """(B, T) steps the loss scores: the given mask or the answer steps, within each length."""
        mask = self._answer_mask(x) if mask is None else mask
        if lengths is not None:
            mask = mask & (torch.arange(x.shape[1], device=x.device) < lengths.to(x.device).unsqueeze(1))
        return mask

    @torch.no_grad()
    def bit_errors(self, inputs, targets: Tensor, state: State | None = None, *,
                   mask: Tensor | None = None) -> Tensor:
        """Wrong answer bits per sequence (B,), predicting 1 where :math:`\\sigma(\\eta) > 1/2`."""
        logits, targets, mask = self._scored(inputs, targets, state, mask)
        wrong = (logits > 0) != (targets > 0.5)                                      # (B, T, O)
        return (wrong & mask.unsqueeze(-1)).sum((1, 2))

    def _scored(self, inputs, targets, state, mask):
        """Logits (B, T, O), targets in the logits' dtype and the mask (B, T) of the steps that count."""
        name = type(self).__name__
        x, lengths = self._split(inputs)
        logits = self.rnn(x, state, lengths)[0]                                       # (B, T, O)
        if logits.dim() != 3:
            raise ValueError(f"{name}: the loss takes a batch (batch, time, input_size), got an unbatched "
                             f"input of shape {tuple(x.shape)}; add a batch dimension with x.unsqueeze(0)")
        if not isinstance(targets, Tensor) or tuple(targets.shape) != tuple(logits.shape):
            got = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
            raise ValueError(f"{name}: expected targets of shape {tuple(logits.shape)} (batch, time, "
                             f"output_size), got {got}")
        mask = self._scored_steps(x, lengths, None if mask is None else self._check_mask(mask, logits))
        if not bool(mask.any()):
            raise ValueError(f"{name}: the mask selects no answer step, so there is nothing to score")
        return logits, targets.to(logits), mask

    def _check_mask(self, mask, logits: Tensor) -> Tensor:
        expected = tuple(logits.shape[:2])
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != expected:
            got = (f"dtype {mask.dtype} and shape {tuple(mask.shape)}" if isinstance(mask, Tensor)
                   else type(mask).__name__)
            raise ValueError(f"{type(self).__name__}: expected a bool mask of shape {expected} (batch, time), "
                             f"got {got}")
        return mask.to(logits.device)

    def _answer_mask(self, x: Tensor) -> Tensor:
        """Answer steps of the copy layout: delimiter at step d = L + 1, answers at d < t < 2d."""
        delimiter = x[..., -1] == 1                                                   # (B, T)
        if not bool(delimiter.any(1).all()):
            raise ValueError(f"{type(self).__name__}: could not find the answer steps: a sequence has no "
                             f"delimiter (a 1 in the last input channel); pass mask= for inputs that do "
                             f"not follow the copy_task layout")
        d = delimiter.to(torch.int64).argmax(1, keepdim=True)                        # (B, 1) first delimiter
        t = torch.arange(x.shape[1], device=x.device)
        return (t > d) & (t < 2 * d)
