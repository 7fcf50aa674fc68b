"""Engine registry and the ``engine="auto"`` choice.

Adding an engine means adding it to ``ENGINES`` and, if ``auto`` should pick
it, to ``AUTO_PREFERENCE`` — nothing else changes.
"""
from __future__ import annotations

from ..cells.base import Cell
from .fused import FusedEngine
from .loop import LoopEngine
from .native import NativeEngine
from .scan import ScanEngine

__all__ = ["ENGINES", "AUTO_PREFERENCE", "get_engine"]

ENGINES = {engine.name: engine for engine in (LoopEngine(), NativeEngine(), FusedEngine(), ScanEngine())}

# fastest first; an engine is picked when it supports the cell: torch's own kernels, the parallel
# scan for cells linear in their state, the whole-sequence fused engine with hand-derived BPTT,
# then the step-by-step reference
AUTO_PREFERENCE = ("native", "scan", "fused", "loop")


class _BeginsSequences:
    """An engine behind a ``cell.begin_sequence`` call: the cell draws its per-run masks
    (:mod:`rnnkit.regularizers`) once, before any engine reads them."""

    def __init__(self, engine):
        self.engine = engine
        self.name = engine.name

    def supports(self, cell: Cell) -> str | None:
        return self.engine.supports(cell)

    def run(self, cell: Cell, x, state, lengths):
        cell.begin_sequence(x.shape[0], x.shape[1], device=x.device, dtype=x.dtype)
        return self.engine.run(cell, x, state, lengths)


def _for(cell: Cell, engine):
    if type(cell).begin_sequence is Cell.begin_sequence:
        return engine
    return _BeginsSequences(engine)


def get_engine(name: str, cell: Cell, owner: str):
    """The engine object for ``name`` ("auto" or a key of ``ENGINES``), checked against ``cell``."""
    if name == "auto":
        for candidate in AUTO_PREFERENCE:
            if ENGINES[candidate].supports(cell) is None:
                return _for(cell, ENGINES[candidate])
    if name not in ENGINES:
        raise ValueError(f"{owner}: unknown engine {name!r}; choose 'auto' or one of {sorted(ENGINES)}")
    reason = ENGINES[name].supports(cell)
    if reason is not None:
        raise ValueError(f"{owner}: engine {name!r} cannot run this cell: {reason}. "
                         f"Use engine='auto' or engine='loop'.")
    return _for(cell, ENGINES[name])
