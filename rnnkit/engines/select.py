"""Engine registry and the ``engine="auto"`` choice.

Adding an engine means adding it to ``ENGINES`` and, if ``auto`` should pick
it, to ``AUTO_PREFERENCE`` — nothing else changes.
"""
from __future__ import annotations

import torch

from ..cells.base import Cell
from .fused import FusedEngine
from .loop import LoopEngine
from .native import NativeEngine
from .scan import ScanEngine
from .traced import TracedEngine

__all__ = ["ENGINES", "AUTO_PREFERENCE", "CPU_FUSED_OVER_NATIVE", "get_engine"]

ENGINES = {engine.name: engine for engine in (LoopEngine(), NativeEngine(), FusedEngine(), ScanEngine(),
                                              TracedEngine())}
QUIET_TRACED = TracedEngine(warn=False)       # auto's: an untraceable step runs on the loop without a warning

# fastest first; an engine is picked when it supports the cell: torch's own kernels, the parallel
# scan for cells linear in their state, the whole-sequence fused engine with hand-derived BPTT, the
# traced step of any other cell (on the CPU only: its speed is measured there, benchmarks/any_cell.py,
# where it beat the loop for every cell and shape), then the step-by-step reference
AUTO_PREFERENCE = ("native", "scan", "fused", "traced", "loop")

# torch kernels that ``auto`` passes over on the CPU for the fused engine, each with the batch size
# from which it keeps torch's kernel for inference (no gradient), or None. Torch's CPU GRU and
# tanh/ReLU RNN have no oneDNN path; in benchmarks/engines.py (one thread, time / torch.nn.LSTM at
# equal FLOPs, fused vs native, shapes (32,128,64,256), (64,100,128,512), (1,1000,32,128)) fused won
# every training run (GRU 1.09 vs 1.39, 1.30 vs 1.31, 2.44 vs 14.7; Elman 1.15 vs 1.45, 1.16 vs
# 1.29, 1.41 vs 7.78) and every Elman inference run, but torch's GRU won inference at batch 32 and
# 64 (1.56 vs 1.71, 1.52 vs 1.80; at batch 1 fused: 2.86 vs 4.70). The LSTM keeps torch's oneDNN
# kernel on the CPU; off the CPU every cell keeps its torch kernel (cuDNN).
CPU_FUSED_OVER_NATIVE = {"GRU": 16, "RNN_TANH": None, "RNN_RELU": None}


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


class _Auto:
    """``engine="auto"``: the first engine of ``AUTO_PREFERENCE`` that runs the cell, except that on
    the CPU the fused engine replaces the torch kernels of ``CPU_FUSED_OVER_NATIVE`` (chosen at every
    call from the input: its device, its batch size, whether a gradient is being recorded).
    ``name`` is the choice for training on the device of the cell's weights."""

    def __init__(self, cell: Cell):
        self.elsewhere = next(_for(cell, ENGINES[c]) for c in AUTO_PREFERENCE if ENGINES[c].supports(cell) is None)
        self.cpu, self.inference_batch = self.elsewhere, None
        if self.elsewhere.name == "traced":              # measured on the CPU; elsewhere the loop
            self.cpu, self.elsewhere = _for(cell, QUIET_TRACED), _for(cell, ENGINES["loop"])
        mode = cell.native_mode() if self.elsewhere.name == "native" else None
        if mode in CPU_FUSED_OVER_NATIVE and ENGINES["fused"].supports(cell) is None:
            self.cpu, self.inference_batch = _for(cell, ENGINES["fused"]), CPU_FUSED_OVER_NATIVE[mode]
        self._cell = cell

    def choice(self, x, *, grad: bool | None = None):
        """The engine that runs input ``x`` (B, T, X); ``grad`` (default: whether autograd would record
        this call) says whether a backward pass will follow."""
        if x.device.type != "cpu":
            return self.elsewhere
        if self.inference_batch is not None and x.shape[0] >= self.inference_batch:
            if grad is None:
                grad = torch.is_grad_enabled() and (x.requires_grad or any(
                    p.requires_grad for p in self._cell.parameters()))
            if not grad:
                return self.elsewhere
        return self.cpu

    def for_device(self, device) -> str:
        """The engine ``auto`` trains with on ``device`` (a ``torch.device`` or its type, e.g. "cuda")."""
        return (self.cpu if getattr(device, "type", device) == "cpu" else self.elsewhere).name

    @property
    def name(self) -> str:
        like = next(iter(self._cell.parameters()), None)
        if like is None:
            like = next(iter(self._cell.buffers()), None)
        return self.for_device("cpu" if like is None else like.device)

    def supports(self, cell: Cell) -> str | None:
        return self.elsewhere.supports(cell)

    def run(self, cell: Cell, x, state, lengths):
        return self.choice(x).run(cell, x, state, lengths)


def get_engine(name: str, cell: Cell, owner: str):
    """The engine object for ``name`` ("auto" or a key of ``ENGINES``), checked against ``cell``."""
    if name == "auto":
        return _Auto(cell)
    if name not in ENGINES:
        raise ValueError(f"{owner}: unknown engine {name!r}; choose 'auto' or one of {sorted(ENGINES)}")
    reason = ENGINES[name].supports(cell)
    if reason is not None:
        raise ValueError(f"{owner}: engine {name!r} cannot run this cell: {reason}. "
                         f"Use engine='auto' or engine='loop'.")
    return _for(cell, ENGINES[name])
