"""Which engine runs a cell, and on which path: the one place that decides.

- ``engine="auto"``: the first engine of ``AUTO_PREFERENCE`` that runs the cell, chosen at every call
  from the input on the CPU (:class:`_Auto`).
- The hand-over (:func:`hand_over`): where a tool traces the call (torch.compile, export, torch.func:
  :func:`~.handover.tracing_tool`), autocast is on or the batch is empty, the engine that runs in place
  of the chosen one, from what each engine declares (``opaque_to``, ``whole_sequence``,
  ``under_autocast``); and the fused engine's path: its autograd Function or torch.compile's operator,
  its kernels' loops or their Triton twins.
- The torch kernel a whole torch-like network exports as (:func:`network_kernel`).

A layer asks through :func:`get_engine` (an engine's name, or an engine object such as the analysis
tools' recorder); ``Recurrent.engine_for(x)`` says which engine runs an input. Adding an engine means
adding it to ``ENGINES`` and, if ``auto`` should pick it, to ``AUTO_PREFERENCE`` — nothing else changes.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..cells.base import Cell, map_state
from ..cells.wrapper import unwrap_cell
from .fused import KERNELS, FusedEngine
from .fused.gpu import uses_triton
from .handover import tracing_tool
from .loop import LoopEngine
from .native import NativeEngine
from .scan import ScanEngine
from .traced import TracedEngine

__all__ = ["ENGINES", "AUTO_PREFERENCE", "CPU_FUSED_OVER_NATIVE", "get_engine", "hand_over", "network_kernel"]

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


class _InWeightsDtype:
    """An engine whose kernels have no reduced-precision arithmetic, inside autocast: the run computes in
    the weights' dtype (float32), autocast off, and hands its float32 outputs on."""

    def __init__(self, engine):
        self.engine, self.name = engine, engine.name

    def run(self, cell: Cell, x, state, lengths):
        like = next(iter(cell.parameters()), x)
        with torch.autocast(x.device.type, enabled=False):
            state = None if state is None else map_state(lambda s: s.to(like.dtype), state)
            return self.engine.run(cell, x.to(like.dtype), state, lengths)


def _fused_path(engine: FusedEngine, cell: Cell, x, tool: str | None) -> FusedEngine:
    """The fused engine on its path for ``x`` (B, T, X): as torch.compile's custom operator inside a compiled
    graph, else its autograd Function; with the kernels' Triton twins where they run (:func:`~.fused.gpu.
    uses_triton`: on CUDA where Triton imports, for histories that fit their 32-bit offsets)."""
    base = unwrap_cell(cell)[0]
    shape = (x.shape[1], x.shape[0], KERNELS[base.fused_kernel()].blocks * base.hidden_size)    # P's (T, B, G)
    return engine.on(operator=tool == "compile", triton=uses_triton(x.device, shape))


def hand_over(engine, cell: Cell, x):
    """The engine that runs input ``x`` (B, T, X) where ``engine`` was chosen: ``engine`` on its path, or the
    one that runs in its place. An engine that runs a whole sequence at once (``whole_sequence``) hands an
    empty batch to the loop; where a tool it is opaque to traces the call (``opaque_to``: tool -> engines
    to run instead, the first that runs the cell) the stand-in runs; under autocast (``under_autocast``)
    the loop, or the engine in the weights' dtype."""
    if getattr(engine, "whole_sequence", False) and (x.shape[0] == 0 or x.shape[1] == 0):
        return ENGINES["loop"]
    opaque = getattr(engine, "opaque_to", None) or {}
    tool = tracing_tool() if opaque else None
    if tool in opaque:
        return next(ENGINES[name] for name in opaque[tool] if ENGINES[name].supports(cell) is None)
    if isinstance(engine, FusedEngine):
        engine = _fused_path(engine, cell, x, tool)
    autocast = getattr(engine, "under_autocast", None)
    if autocast is not None and torch.is_autocast_enabled(x.device.type):
        return ENGINES["loop"] if autocast == "loop" else _InWeightsDtype(engine)
    return engine


class _Fixed:
    """A layer's engine: the one asked for, handed over for each input (:func:`hand_over`), after the
    cell's ``begin_sequence`` (where :mod:`rnnkit.regularizers` draw a run's masks, once, before any
    engine reads them)."""

    def __init__(self, engine, cell: Cell):
        self.engine = engine
        self._begins = type(cell).begin_sequence is not Cell.begin_sequence

    @property
    def name(self) -> str:
        return self.engine.name

    def supports(self, cell: Cell) -> str | None:
        return self.engine.supports(cell)

    def choice(self, x, *, grad: bool | None = None):
        """The engine chosen for input ``x`` before the hand-over."""
        return self.engine

    def for_input(self, cell: Cell, x):
        """The engine that runs input ``x`` (B, T, X) now."""
        return hand_over(self.choice(x), cell, x)

    def run(self, cell: Cell, x, state, lengths):
        if self._begins:
            cell.begin_sequence(x.shape[0], x.shape[1], device=x.device, dtype=x.dtype)
        return hand_over(self.choice(x), cell, x).run(cell, x, state, lengths)


class _Auto(_Fixed):
    """``engine="auto"``: the first engine of ``AUTO_PREFERENCE`` that runs the cell, except that on
    the CPU the fused engine replaces the torch kernels of ``CPU_FUSED_OVER_NATIVE`` (chosen at every
    call from the input: its device, its batch size, whether a gradient is being recorded).
    ``name`` is the choice for training on the device of the cell's weights."""

    def __init__(self, cell: Cell):
        elsewhere = next(ENGINES[c] for c in AUTO_PREFERENCE if ENGINES[c].supports(cell) is None)
        super().__init__(elsewhere, cell)
        self.elsewhere, self.cpu, self.inference_batch = elsewhere, elsewhere, None
        if elsewhere.name == "traced":              # measured on the CPU; elsewhere the loop
            self.cpu, self.elsewhere = QUIET_TRACED, ENGINES["loop"]
        mode = cell.native_mode() if self.elsewhere.name == "native" else None
        if mode in CPU_FUSED_OVER_NATIVE and ENGINES["fused"].supports(cell) is None:
            self.cpu, self.inference_batch = ENGINES["fused"], CPU_FUSED_OVER_NATIVE[mode]
        self._cell = cell

    def choice(self, x, *, grad: bool | None = None):
        """The engine that runs input ``x`` (B, T, X) before the hand-over; ``grad`` (default: whether
        autograd would record this call) says whether a backward pass will follow."""
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


def get_engine(engine, cell: Cell, owner: str):
    """The engine of a layer: ``engine`` ("auto", a key of ``ENGINES``, or an engine object with ``name``,
    ``supports(cell)`` and ``run(cell, x, state, lengths)``) checked against ``cell``."""
    if engine == "auto":
        return _Auto(cell)
    if isinstance(engine, str):
        if engine not in ENGINES:
            raise ValueError(f"{owner}: unknown engine {engine!r}; choose 'auto' or one of {sorted(ENGINES)}")
        engine = ENGINES[engine]
    reason = engine.supports(cell)
    if reason is not None:
        raise ValueError(f"{owner}: engine {engine.name!r} cannot run this cell: {reason}. "
                         f"Use engine='auto' or engine='loop'.")
    return _Fixed(engine, cell)


def network_kernel(cells, x, lengths, *, training: bool, residual: bool) -> str | None:
    """The torch kernel (``native_mode``) that runs a whole torch-like network (``rnnkit.LSTM``, ...) in one
    call, or None: only in an exported program, where the exporters keep a length-free op for that call (a
    chain of single-layer calls loses it), in evaluation mode, without residual connections or lengths, on
    a 3-D input, when all its cells (``cells()``, asked only then) share one kernel."""
    if lengths is not None or training or residual or not (isinstance(x, Tensor) and x.dim() == 3):
        return None
    if tracing_tool() != "export":
        return None
    modes = {cell.native_mode() for cell in cells()}
    return modes.pop() if len(modes) == 1 and None not in modes else None
