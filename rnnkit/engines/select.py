"""Engine registry and the ``engine="auto"`` choice.

Adding an engine means adding it to ``ENGINES`` and, if ``auto`` should pick
it, to ``AUTO_PREFERENCE`` — nothing else changes.
"""
from __future__ import annotations

from ..cells.base import Cell
from .loop import LoopEngine
from .native import NativeEngine

__all__ = ["ENGINES", "AUTO_PREFERENCE", "get_engine"]

ENGINES = {engine.name: engine for engine in (LoopEngine(), NativeEngine())}

# fastest first; an engine is picked when it supports the cell
AUTO_PREFERENCE = ("native", "loop")


def get_engine(name: str, cell: Cell, owner: str):
    """The engine object for ``name`` ("auto" or a key of ``ENGINES``), checked against ``cell``."""
    if name == "auto":
        for candidate in AUTO_PREFERENCE:
            if ENGINES[candidate].supports(cell) is None:
                return ENGINES[candidate]
    if name not in ENGINES:
        raise ValueError(f"{owner}: unknown engine {name!r}; choose 'auto' or one of {sorted(ENGINES)}")
    reason = ENGINES[name].supports(cell)
    if reason is not None:
        raise ValueError(f"{owner}: engine {name!r} cannot run this cell: {reason}. "
                         f"Use engine='auto' or engine='loop'.")
    return ENGINES[name]
