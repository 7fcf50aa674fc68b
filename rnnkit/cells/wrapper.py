"""A cell around a cell (:class:`CellWrapper`): the base of the regularizers of
:mod:`rnnkit.regularizers`, and how engines that run a whole sequence at once learn what a
wrapper does (:class:`RunMasks`) without knowing its class."""
from __future__ import annotations

import threading

from dataclasses import dataclass, field
from typing import Optional, Tuple

import torch
from torch import Tensor

from .base import Cell, State

__all__ = ["CellWrapper", "RunMasks", "unwrap_cell"]


@dataclass
class RunMasks:
    """What a wrapper does to one run, described for an engine that runs the whole sequence at once
    (the ``loop`` engine calls the wrapper's ``forward`` instead). Every field is optional.

    - ``input`` (B, input_size): multiplies every ``x_t``;
    - ``hidden`` (B, hidden_size): multiplies ``h`` where it enters ``weight_hh``;
    - ``keep``: per state tensor, None or the weight of the old value in
      ``s_t = keep ⊙ s_{t-1} + (1 - keep) ⊙ f(x_t, s_{t-1})``, (T, B, size) or broadcastable;
    - ``binary``: ``keep`` holds 0/1 draws (False: expectations, as zoneout in evaluation);
    - ``weights``: a factor per parameter of the innermost cell, by name (DropConnect).
    """
    input: Optional[Tensor] = None
    hidden: Optional[Tensor] = None
    keep: Tuple[Optional[Tensor], ...] = ()
    binary: bool = True
    weights: dict = field(default_factory=dict)


def unknown_wrapper(wrappers: list, engine: str) -> str | None:
    """Why a whole-sequence ``engine`` cannot run these wrappers: the first one that does not describe
    its masks (``run_masks`` gives None: it rewrote its step), or None when every one does."""
    for w in wrappers:
        if w.run_masks(1, torch.zeros(())) is None:
            return (f"{type(w).__name__} is a cell wrapper {engine} does not know (it runs wrappers that "
                    f"describe their masks, as VariationalDropout, Zoneout and WeightDrop do)")
    return None


def combined_masks(base: Cell, wrappers: list, steps: int, like: Tensor):
    """What ``wrappers`` (outermost first) do to one run of ``base``, combined for a whole-sequence engine:
    ``(input mask, hidden mask, keep per state tensor, dropped weights by name, binary)``. Masks of nested
    wrappers multiply; keep weights combine as ``1 - Π(1 - k)``; dropped weights multiply the parameter."""
    sizes = base.state_sizes
    m = 1 if isinstance(sizes, int) else len(sizes)
    in_mask, hidden_mask, keep, dropped, binary = None, None, [None] * m, {}, True
    for w in wrappers:
        masks = w.run_masks(steps, like)
        if masks.input is not None:
            in_mask = masks.input if in_mask is None else in_mask * masks.input
        if masks.hidden is not None:
            hidden_mask = masks.hidden if hidden_mask is None else hidden_mask * masks.hidden
        binary &= masks.binary
        for j, k in enumerate(masks.keep):
            if k is not None:
                keep[j] = k if keep[j] is None else 1 - (1 - keep[j]) * (1 - k)
        for name, mask in masks.weights.items():
            dropped[name] = (dropped[name] if name in dropped else getattr(base, name)) * mask
    return in_mask, hidden_mask, keep, dropped, binary


def unwrap_cell(cell: Cell) -> Tuple[Cell, list]:
    """The innermost cell under any :class:`CellWrapper` layers, and the wrappers, outermost first."""
    wrappers = []
    while isinstance(cell, CellWrapper):
        wrappers.append(cell)
        cell = cell.cell
    return cell, wrappers


def _per_thread(name: str):
    """An attribute of the current run, kept per thread: two threads training one model each draw
    and read their own masks (one thread's begin_sequence cannot change another's run)."""
    def get(self):
        return self._run().get(name)

    def set(self, value):
        self._run()[name] = value
    return property(get, set, doc=f"``{name}`` of this thread's current run")


class CellWrapper(Cell):
    """A cell around a cell: same sizes, same state, same output; subclasses change the step.

    Subclasses draw their masks in ``_draw(batch_size, steps, like)`` (called in
    training mode only) and read them in ``forward``. One whose ``run_masks`` may give
    ``weights`` sets ``drops_weights = True``. A run's masks and counters belong to the thread
    that began it.
    """
    drops_weights = False
    masks = _per_thread("masks")
    _batch_size = _per_thread("_batch_size")
    _step = _per_thread("_step")
    _steps = _per_thread("_steps")

    def _run(self) -> dict:
        """This thread's run state (masks, counters), cleared on another thread's first use."""
        runs = self._runs
        # inside torch.compile one run state serves the compiled graph (it draws and reads its own masks),
        # and asking for the thread would break the graph
        ident = "compiled" if torch.compiler.is_compiling() else threading.get_ident()
        run = runs.get(ident)
        if run is None:
            constructed = bool(runs)                        # the first run is the constructor's own
            if len(runs) >= 8 and not torch.compiler.is_compiling():   # forget the runs of ended threads
                alive = {t.ident for t in threading.enumerate()}
                for key in [k for k in runs if k not in alive]:
                    del runs[key]
            run = runs[ident] = {}
            if constructed:
                self._clear()
        return run

    def __init__(self, cell: Cell, *, generator: torch.Generator | None = None):
        super().__init__()
        self._runs = {}                          # per thread: its run's masks and counters (see _run)
        if not isinstance(cell, Cell):
            raise TypeError(f"{type(self).__name__}: expected an rnnkit.cells.Cell to wrap, got "
                            f"{type(cell).__name__}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"{type(self).__name__}: generator must be a torch.Generator or None, got "
                            f"{type(generator).__name__}")
        self.cell = cell
        self.input_size, self.hidden_size, self.state_sizes = cell.input_size, cell.hidden_size, cell.state_sizes
        self.generator = generator
        self._batch_size = None                  # batch size of the drawn masks; None: none drawn

    @property
    def output_size(self) -> int:
        return self.cell.output_size

    @property
    def base_cell(self) -> Cell:
        """The innermost cell, under every wrapper."""
        return unwrap_cell(self)[0]

    def initial_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        return self.cell.initial_state(batch_size, device=device, dtype=dtype)

    def output(self, state: State) -> Tensor:
        return self.cell.output(state)

    def begin_sequence(self, batch_size: int, steps: int, *, device=None, dtype=None) -> None:
        if device is None or dtype is None:
            ref = next(self.parameters(), None)
            device = device if device is not None else (ref.device if ref is not None else None)
            dtype = dtype if dtype is not None else (ref.dtype if ref is not None else None)
        self._batch_size = None
        self._clear()
        if self.training:
            self._draw(batch_size, steps, {"device": device, "dtype": dtype})
            self._batch_size = batch_size
        self.cell.begin_sequence(batch_size, steps, device=device, dtype=dtype)

    def _clear(self) -> None:
        raise NotImplementedError

    def _draw(self, batch_size: int, steps: int, like: dict) -> None:
        raise NotImplementedError

    def _check_drawn(self, batch_size: int) -> None:
        """In training mode the step needs the masks of this run."""
        name = type(self).__name__
        if self._batch_size is None:
            raise RuntimeError(f"{name}: no masks drawn for this sequence; rnnkit.Recurrent draws them once "
                               f"per run, so call cell.begin_sequence(batch_size, steps) before stepping "
                               f"the cell yourself (or use cell.eval())")
        if batch_size != self._batch_size:
            raise RuntimeError(f"{name}: the masks were drawn for a batch of {self._batch_size}, got a step "
                               f"with a batch of {batch_size}; call cell.begin_sequence again")

    def run_masks(self, steps: int, like: Tensor) -> RunMasks | None:
        """This run's masks for an engine that runs the whole sequence at once (``steps`` long, in the
        dtype and device of ``like``), or None when the wrapper cannot be described so. A subclass
        that rewrites ``forward`` loses its parent's description (see :data:`rnnkit.cells.base.MATHS`)."""
        return None
