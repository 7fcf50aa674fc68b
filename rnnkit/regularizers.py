r"""Regularizers for recurrent networks that every engine runs alike.

Each one wraps a cell and is itself a cell, so wrappers compose
(``Zoneout(VariationalDropout(LSTMCell(8, 16), 0.25, 0.25), 0.1)``) and any layer
runs them:

- :class:`VariationalDropout` (Gal & Ghahramani 2016): one dropout mask per
  sequence on the inputs and one on the hidden state that enters ``weight_hh``,
  the same at every step.
- :class:`Zoneout` (Krueger et al. 2017): at each step each state unit keeps its
  previous value with probability ``p``.
- :class:`WeightDrop` (DropConnect on the recurrent weights, Merity et al. 2018):
  one mask on ``weight_hh`` per sequence.
- :func:`embedding_dropout`: drops whole rows of an embedding matrix.
- :func:`locked_dropout`: one dropout mask per sequence on a layer's inputs or outputs,
  the same at every step (the "variational" dropout between layers of Gal & Ghahramani
  and AWD-LSTM).

Dropout between layers is :class:`rnnkit.Stack`'s ``dropout``; layer normalization
inside the cell is :class:`rnnkit.cells.LayerNormLSTMCell` / ``LayerNormGRUCell``.

**Masks.** A wrapper draws every mask it needs for a whole run — for zoneout one
per step — in :meth:`~rnnkit.cells.Cell.begin_sequence`, which the layer calls once
per forward call before the first step. The masks are then fixed for that run,
whichever engine carries the cell (``loop`` reads them step by step, ``fused`` all
at once), and they stay readable as ``wrapper.masks`` until the next run. Pass a
``torch.Generator`` as ``generator=`` for masks of their own random stream
(reseed it to repeat a run). In evaluation mode (``cell.eval()``) nothing is
drawn: dropout is off and zoneout uses its expectation.

>>> import torch, rnnkit
>>> from rnnkit.cells import LSTMCell
>>> cell = Zoneout(VariationalDropout(LSTMCell(8, 16), input_dropout=0.25, hidden_dropout=0.25),
...                probability=(0.05, 0.15))                 # (h, c)
>>> layer = rnnkit.Recurrent(cell)
>>> out, (h, c) = layer(torch.randn(4, 10, 8))
>>> tuple(out.shape), tuple(cell.masks[0].shape)          # zoneout mask of h: (T, B, H)
((4, 10, 16), (10, 4, 16))
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ._arguments import check_probability
from .cells.base import Cell, GatedWeightsMixin, State, recurrent_mask, state_tensors
from .cells.wrapper import CellWrapper, RunMasks, unwrap_cell
from ._buffers import NUMPY_DTYPES, POOL
from .engines.handover import numpy_loops

__all__ = ["CellWrapper", "VariationalDropout", "Zoneout", "WeightDrop", "embedding_dropout",
           "locked_dropout", "unwrap_cell"]


def _bernoulli(shape, probability: float, like: dict, generator) -> Tensor:
    """0/1 draws with ``P(1) = probability`` (uniforms below ``p``: on CPU many times faster
    than ``bernoulli_``)."""
    device, dtype, drawn = torch.device(like["device"]), like["dtype"], torch.get_default_dtype()
    if drawn not in NUMPY_DTYPES or not numpy_loops(device, dtype):      # a traced call gets torch's ops
        uniform = torch.rand(shape, device=device, generator=generator)
        return (uniform < probability).to(dtype)
    # on CPU the same draws into reused NumPy blocks (rnnkit._buffers' pool: no page faults at every step)
    uniform = torch.from_numpy(POOL.array(shape, NUMPY_DTYPES[drawn]))
    torch.rand(shape, generator=generator, out=uniform)
    mask = POOL.array(shape, NUMPY_DTYPES[dtype])
    np.copyto(mask, np.less(uniform.numpy(), probability))
    return torch.from_numpy(mask)


def _keep_mask(shape, probability: float, like: dict, generator) -> Tensor:
    """Inverted-dropout mask: ``Bernoulli(1 - p) / (1 - p)``, so its mean is one."""
    keep = 1.0 - probability
    return _bernoulli(shape, keep, like, generator).div_(keep)


class VariationalDropout(CellWrapper):
    r"""Dropout with one mask per sequence on the inputs and on the recurrent input.

    .. math::  s_t = f(x_t \odot m_x,\; s_{t-1}) \quad\text{with } W_{hh} (h_{t-1} \odot m_h)
               \text{ in place of } W_{hh} h_{t-1}

    ``m_x`` (B, input_size) and ``m_h`` (B, hidden_size) are drawn once per run
    (Bernoulli(1 - p), scaled by 1/(1 - p)) and used at every step: the network
    sees the same thinned units all along the sequence (Gal & Ghahramani 2016).
    The hidden mask acts only where ``h`` enters ``weight_hh``; the state that is
    carried on (``c`` of an LSTM, the ``z ⊙ h`` of a GRU, the leak of a leaky or
    gated cell) is never dropped. Hidden dropout therefore needs a cell built on
    ``GatedWeightsMixin`` (Elman, gated, LSTM, GRU, leaky and the layer-norm
    cells); input dropout works with any cell. Off in evaluation mode.

    ``masks`` holds ``{"input": (B, X) or None, "hidden": (B, H) or None}`` of the
    current run.
    """

    def __init__(self, cell: Cell, input_dropout: float = 0.0, hidden_dropout: float = 0.0, *,
                 generator: torch.Generator | None = None):
        super().__init__(cell, generator=generator)
        name = type(self).__name__
        self.input_dropout = check_probability(name, "input_dropout", input_dropout)
        self.hidden_dropout = check_probability(name, "hidden_dropout", hidden_dropout)
        if self.hidden_dropout > 0 and not isinstance(self.base_cell, GatedWeightsMixin):
            raise TypeError(f"{name}: hidden_dropout needs a cell whose hidden state enters weight_hh through "
                            f"GatedWeightsMixin (Elman, gated, LSTM, GRU, leaky, layer-norm cells), got "
                            f"{type(self.base_cell).__name__}; use input_dropout alone with it")
        self._clear()

    def _clear(self) -> None:
        self.masks = {"input": None, "hidden": None}

    def _draw(self, batch_size: int, steps: int, like: dict) -> None:
        gen = self.generator
        if self.input_dropout > 0:
            self.masks["input"] = _keep_mask((batch_size, self.input_size), self.input_dropout, like, gen)
        if self.hidden_dropout > 0:
            self.masks["hidden"] = _keep_mask((batch_size, self.hidden_size), self.hidden_dropout, like, gen)

    def forward(self, x_t: Tensor, state: State) -> State:
        if not self.training or (self.input_dropout == 0 and self.hidden_dropout == 0):
            return self.cell(x_t, state)
        self._check_drawn(x_t.shape[0])
        if self.masks["input"] is not None:
            x_t = x_t * self.masks["input"]
        hidden = self.masks["hidden"]
        if hidden is None:
            return self.cell(x_t, state)
        with recurrent_mask(self.base_cell, hidden):
            return self.cell(x_t, state)

    def run_masks(self, steps: int, like: Tensor) -> RunMasks:
        return RunMasks(**self.masks) if self.training else RunMasks()

    def extra_repr(self) -> str:
        return f"input_dropout={self.input_dropout}, hidden_dropout={self.hidden_dropout}"


class Zoneout(CellWrapper):
    r"""Zoneout: each state unit keeps its previous value with probability ``p``.

    .. math::  s_t = z_t \odot s_{t-1} + (1 - z_t) \odot f(x_t, s_{t-1}), \qquad
               z_t \sim \mathrm{Bernoulli}(p) \text{ per unit and step}

    (Krueger et al. 2017). ``probability`` is one ``p`` for every state tensor or
    one per state tensor, e.g. ``(p_h, p_c)`` for an LSTM; a tensor with ``p = 0``
    is never zoned out. The cell's own step sees the full previous state, so for an
    LSTM ``h̃_t = o ⊙ tanh(c̃_t)`` uses the new cell before zoneout, as in the
    paper. In evaluation mode the mask is replaced by its expectation,
    :math:`s_t = p\,s_{t-1} + (1 - p)\,f(x_t, s_{t-1})`.

    ``masks`` holds one (T, B, size) 0/1 mask per state tensor (None where ``p = 0``)
    for the current run.
    """

    def __init__(self, cell: Cell, probability=0.1, *, generator: torch.Generator | None = None):
        super().__init__(cell, generator=generator)
        name = type(self).__name__
        sizes = self.state_sizes
        self._sizes = (sizes,) if isinstance(sizes, int) else tuple(sizes)
        if isinstance(probability, Sequence) and not isinstance(probability, str):
            if len(probability) != len(self._sizes):
                raise ValueError(f"{name}: expected one probability per state tensor ({len(self._sizes)}), "
                                 f"got {len(probability)}")
            probs = tuple(check_probability(name, "probability", p) for p in probability)
        else:
            probs = (check_probability(name, "probability", probability),) * len(self._sizes)
        self.probability = probs
        self._clear()

    def _clear(self) -> None:
        self.masks = tuple(None for _ in self._sizes)
        self._step = 0
        self._steps = 0

    def _draw(self, batch_size: int, steps: int, like: dict) -> None:
        self.masks = tuple(
            None if p == 0 else _bernoulli((steps, batch_size, size), p, like, self.generator)
            for p, size in zip(self.probability, self._sizes))
        self._steps = steps

    def forward(self, x_t: Tensor, state: State) -> State:
        new = state_tensors(self.cell(x_t, state))
        old = state_tensors(state)
        if not self.training:
            keep = self.probability
        else:
            self._check_drawn(x_t.shape[0])
            if self._step >= self._steps:
                raise RuntimeError(f"{type(self).__name__}: the masks were drawn for {self._steps} steps and "
                                   f"all are used; call cell.begin_sequence for the next sequence")
            keep = tuple(m if m is None else m[self._step] for m in self.masks)
            self._step += 1
        mixed = tuple(n if (k is None or (not isinstance(k, Tensor) and k == 0)) else k * o + (1 - k) * n
                      for k, o, n in zip(keep, old, new))
        return mixed[0] if isinstance(state, Tensor) else mixed

    def run_masks(self, steps: int, like: Tensor) -> RunMasks:
        if self.training:
            return RunMasks(keep=self.masks)
        return RunMasks(keep=tuple(None if p == 0 else like.new_full((steps, 1, 1), p) for p in self.probability),
                        binary=False)

    def extra_repr(self) -> str:
        return f"probability={self.probability}"


class WeightDrop(CellWrapper):
    r"""DropConnect on weight matrices: one mask per run, shared by every step and sequence.

    .. math::  \tilde W = W \odot M / (1 - p), \qquad M_{ij} \sim \mathrm{Bernoulli}(1 - p)

    for each parameter named in ``weights`` (parameters of the innermost cell;
    default the recurrent matrix ``weight_hh``, as in AWD-LSTM, Merity et al. 2018).
    Unlike dropout on activations this leaves the recurrence itself untouched, so
    it works with any cell; around an LSTM, GRU or Elman cell torch's kernels run it
    (the ``native`` engine, handed the masked weights). Off in evaluation mode.

    ``masks`` maps each weight name to its mask for the current run.
    """
    drops_weights = True


    def __init__(self, cell: Cell, probability: float = 0.5, weights: Sequence[str] = ("weight_hh",), *,
                 generator: torch.Generator | None = None):
        super().__init__(cell, generator=generator)
        name = type(self).__name__
        self.probability = check_probability(name, "probability", probability)
        if isinstance(weights, str) or not isinstance(weights, Sequence) or not weights:
            raise TypeError(f"{name}: weights must be a non-empty sequence of parameter names, got {weights!r}")
        base, wrappers = unwrap_cell(cell)
        own = dict(base.named_parameters(recurse=False))
        for w in weights:
            if w not in own:
                raise ValueError(f"{name}: {type(base).__name__} has no parameter {w!r}; its parameters are "
                                 f"{sorted(own)}")
        self.weights = tuple(weights)
        self._prefix = "cell." * len(wrappers)     # path from self.cell down to the base cell
        self._clear()

    def _clear(self) -> None:
        self.masks = {}

    def _draw(self, batch_size: int, steps: int, like: dict) -> None:
        if self.probability > 0:
            base = self.base_cell
            self.masks = {w: _keep_mask(getattr(base, w).shape, self.probability, like, self.generator)
                          for w in self.weights}

    def dropped_weights(self) -> dict:
        """``{name: W ⊙ M / (1 - p)}`` for this run (empty in evaluation mode or with p = 0)."""
        base = self.base_cell
        return {w: getattr(base, w) * mask for w, mask in self.masks.items()}

    def forward(self, x_t: Tensor, state: State) -> State:
        if not self.training or self.probability == 0:
            return self.cell(x_t, state)
        self._check_drawn(x_t.shape[0])
        swapped = {self._prefix + w: value for w, value in self.dropped_weights().items()}
        return torch.func.functional_call(self.cell, swapped, (x_t, state))

    def run_masks(self, steps: int, like: Tensor) -> RunMasks:
        return RunMasks(weights=dict(self.masks)) if self.training else RunMasks()

    def native_mode(self) -> str | None:
        """The wrapped cell's torch kernel: DropConnect only changes the weights it is handed."""
        inner = getattr(self.cell, "native_mode", None)
        return None if inner is None else inner()

    def flat_weights(self) -> list:
        """The wrapped cell's weights in torch's kernel order, those named in ``weights`` times this
        run's masks (in training)."""
        inner, plain = self.cell.flat_weights(), self.base_cell.flat_weights()
        if not self.training or not self.masks:
            return inner
        names = {id(p): n for n, p in self.base_cell.named_parameters(recurse=False)}
        return [w * self.masks[names[id(p)]] if names.get(id(p)) in self.masks else w for w, p in zip(inner, plain)]

    def extra_repr(self) -> str:
        return f"probability={self.probability}, weights={self.weights}"


def embedding_dropout(weight: Tensor, probability: float, training: bool = True, *,
                      generator: torch.Generator | None = None) -> Tensor:
    r"""Drop whole rows (word types) of an embedding matrix ``weight`` (V, E).

    Returns ``weight ⊙ m / (1 - p)`` with ``m_v ~ Bernoulli(1 - p)`` per row: a
    dropped word is missing everywhere it occurs in the batch, not only at some
    positions (Gal & Ghahramani 2016). The identity when not ``training`` or ``p = 0``.
    """
    p = check_probability("embedding_dropout", "probability", probability)
    if not training or p == 0:
        return weight
    mask = _keep_mask((weight.shape[0], 1), p, {"device": weight.device, "dtype": weight.dtype}, generator)
    return weight * mask


def locked_dropout(x: Tensor, probability: float, training: bool = True, *, batch_first: bool = True,
                   generator: torch.Generator | None = None) -> Tensor:
    r"""Dropout with one mask per sequence, shared by all its steps: ``x ⊙ m / (1 - p)`` with
    ``m`` of shape (B, 1, F) (or (1, B, F) when not ``batch_first``; (1, F) for an unbatched
    (T, F) input). The identity when not ``training`` or ``p = 0``.

    >>> x = torch.ones(2, 5, 3)
    >>> y = locked_dropout(x, 0.5, generator=torch.Generator().manual_seed(0))
    >>> bool((y == y[:, :1]).all())                 # the same mask at every step
    True
    """
    p = check_probability("locked_dropout", "probability", probability)
    if not training or p == 0:
        return x
    if x.dim() == 2:
        shape = (1, x.shape[-1])
    else:
        shape = (x.shape[0], 1, x.shape[-1]) if batch_first else (1, x.shape[1], x.shape[-1])
    return x * _keep_mask(shape, p, {"device": x.device, "dtype": x.dtype}, generator)
