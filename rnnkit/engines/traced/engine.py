"""The traced engine: any cell whose step is written in torch operations, run over the whole sequence
inside one autograd Function, from graphs traced once per cell and shape (:mod:`.graph`).

The forward calls the traced forward step ``T`` times and keeps what the backward reads; the backward
calls the serial graph ``T`` times (only what the adjoint of the previous state needs) and then the
deferred graph once on every step's inputs stacked (the parameters' gradients as one large GEMM).
On the CPU, in float32 and float64, the graphs run as generated NumPy code (:mod:`.lowering`), a
fraction of a microsecond per operation; elsewhere, or for an operation the lowering does not know,
as the traced torch graphs (the twin the tests hold the NumPy code to).

A step that cannot be traced (control flow on values, an in-place update, a tensor that is neither
a parameter nor a buffer) runs on the ``loop`` engine, with the reason in a warning (once per cell)
and in :func:`reason`.
"""
from __future__ import annotations

import warnings
import weakref

import torch
from torch import Tensor, nn

from ...cells.base import Cell, State, recurrent_mask, state_tensors
from ...cells.wrapper import combined_masks, unknown_wrapper, unwrap_cell
from ..handover import keep_past_the_end, refuse_double_backward
from ..loop import LoopEngine
from . import compiled
from .graph import NotTraceable, StepGraphs, trace_step
from .lowering import SETTINGS, lowered

__all__ = ["TracedEngine", "reason"]


class _Step(nn.Module):
    """The cell's recurrent part as a module of ``(p_t, state)``: ``step`` where the cell splits its
    update (``project_inputs`` runs outside, over all steps at once), else ``forward`` on ``x_t``."""

    def __init__(self, cell: Cell):
        super().__init__()
        self.cell = cell

    def forward(self, p, state, hidden_mask=None):
        if hidden_mask is not None:             # variational dropout where h enters weight_hh
            with recurrent_mask(self.cell, hidden_mask):
                return self.forward(p, state)
        return self.cell.step(p, state) if self.cell.has_projection() else self.cell(p, state)


_SIMPLE = (int, float, bool, str, type(None))


def _fingerprint(module: nn.Module) -> tuple:
    """The plain attributes (numbers, strings, flags) of every submodule: traced graphs bake them in,
    so a change of one is a new trace."""
    found = []
    for name, m in module.named_modules():
        for key, value in vars(m).items():
            if key.startswith("_") and key != "_name":
                continue
            if isinstance(value, _SIMPLE) or (isinstance(value, tuple) and all(isinstance(v, _SIMPLE) for v in value)):
                found.append((name, key, value))
        found.append((name, m.training))
    return tuple(found)


class _Traced:
    """What one cell needs at run time: its step module, tensors by name, and graphs by shape."""

    def __init__(self, cell: Cell):
        self.step = _Step(cell)
        self.graphs: dict = {}


_CACHE: "weakref.WeakKeyDictionary[Cell, _Traced]" = weakref.WeakKeyDictionary()
_REASONS: "weakref.WeakKeyDictionary[Cell, str]" = weakref.WeakKeyDictionary()


def reason(cell: Cell) -> str | None:
    """Why the traced engine ran ``cell`` on the step loop (None if it never had to)."""
    return _REASONS.get(cell)


def _tensors(step: nn.Module):
    names, tensors = [], []
    for name, t in step.named_parameters():
        names.append(name)
        tensors.append(t)
    for name, t in step.named_buffers():
        names.append(name)
        tensors.append(t)
    return names, tensors


def _graphs_for(cell: Cell, p: Tensor, states: list, dropped: dict, consts: list):
    """The traced graphs of ``cell`` at these shapes (traced on first use), or a NotTraceable; and the
    step's tensors (parameters, with ``dropped`` in place of those a wrapper drops, and buffers)."""
    entry = _CACHE.get(cell)
    if entry is None:
        entry = _CACHE[cell] = _Traced(cell)
    names, tensors = _tensors(entry.step)
    tensors = [dropped.get(name[len("cell."):], t) for name, t in zip(names, tensors)]
    key = (tuple((tuple(t.shape), t.dtype) for t in tensors), tuple(p.shape), p.dtype, p.device,
           tuple(tuple(s.shape) for s in states), tuple(tuple(c.shape) for c in consts), _fingerprint(cell),
           SETTINGS.numpy, SETTINGS.inductor)
    found = entry.graphs.get(key)
    if found is None:
        try:
            graphs = trace_step(entry.step, names, [t.detach() for t in tensors], p.detach(),
                                [s.detach() for s in states], [c.detach() for c in consts])
            found = _Compiled(graphs, lowered(graphs, p))
        except NotTraceable as error:
            found = error
        entry.graphs[key] = found
    return found, tensors


class _Compiled:
    """A traced step's graphs and the program that runs them: NumPy code first, numba's compiled loops
    once the program has run ``SETTINGS.compile_after`` time steps (see :mod:`.compiled`)."""

    def __init__(self, graphs: StepGraphs, program):
        self.graphs, self.program, self.steps, self.tried = graphs, program, 0, False

    def __iter__(self):                     # (graphs, program), as the autograd Function takes them
        return iter((self.graphs, self.program))

    def tier_up(self, P: Tensor, states: list, tensors: list) -> None:
        self.steps += P.shape[0]
        after = SETTINGS.compile_after
        if self.tried or after is None or self.steps < after or not self.program.numpy:
            return
        self.tried = True
        program = compiled.compile_program(self.program, P.detach(), [s.detach() for s in states],
                                           [t.detach() for t in tensors])
        if program is not None:
            self.program = program


class _TracedRun(torch.autograd.Function):
    """(graphs, mix, P, *initial states, *params) -> state histories (T, B, S) per component. ``mix`` is
    None or ``(keep, binary)``: per state None or the weight (T, B, S) of the old state in the new one
    (zoneout's draws, a finished sequence's 1), selected (``binary``) or interpolated."""

    @staticmethod
    def forward(ctx, program, mix, P, *rest):
        graphs, code = program
        m = graphs.n_states
        states, params = list(rest[:m]), rest[m:]
        with torch.no_grad():
            histories, saved = code.forward(params, P, states, mix)
        ctx.program, ctx.mix, ctx.saved = program, mix, saved
        ctx.save_for_backward(P, *states, *params, *histories)
        return tuple(histories)

    @staticmethod
    def backward(ctx, *d_histories):
        refuse_double_backward("traced")
        graphs, code = ctx.program
        m = graphs.n_states
        P, *rest = ctx.saved_tensors
        states, params, histories = rest[:m], rest[m:m + graphs.n_params], rest[m + graphs.n_params:]
        with torch.no_grad():
            dP, d_states, d_params = code.backward(params, P, list(states), list(histories), ctx.saved,
                                                   ctx.mix, list(d_histories), ctx.needs_input_grad[2:])
        return (None, None, dP, *d_states, *d_params)


class TracedEngine:
    """Whole-sequence forward and BPTT for any cell from its traced step (see the module's text)."""
    name = "traced"
    # for the hand-over (:func:`..select.hand_over`): no tool sees through the generated programs, and autocast
    # would pick each operation's precision: there, and for an empty batch, the step loop, which every tool handles
    opaque_to = {"export": ("loop",), "compile": ("loop",), "functorch": ("loop",)}
    whole_sequence = True
    under_autocast = "loop"

    def __init__(self, warn: bool = True):
        self.warn = warn

    def supports(self, cell: Cell) -> str | None:
        return unknown_wrapper(unwrap_cell(cell)[1], "the traced engine")

    def run(self, cell: Cell, x: Tensor, state: State, lengths: Tensor | None):
        base, wrappers = unwrap_cell(cell)
        T, B = x.shape[1], x.shape[0]
        in_mask, hidden_mask, keep, dropped, binary = combined_masks(base, wrappers, T, x)
        given = x
        if in_mask is not None:
            x = x * in_mask.unsqueeze(1)
        P = base.project_inputs(x) if base.has_projection() else x           # autograd tracks it
        P = P.transpose(0, 1).contiguous()                                     # (T, B, G)
        states = list(state_tensors(state))
        consts = [] if hidden_mask is None else [hidden_mask]
        found, tensors = _graphs_for(base, P[0], states, dropped, consts)
        if isinstance(found, NotTraceable):
            if base not in _REASONS:
                _REASONS[base] = f"{type(base).__name__}: step not traceable ({found}); ran on the loop engine"
                if self.warn:
                    warnings.warn(_REASONS[base], stacklevel=3)
            return LoopEngine().run(cell, given, state, lengths)
        alive, keep = keep_past_the_end(keep, lengths, x)
        mix = None
        if any(k is not None for k in keep):
            sizes = [s.shape[-1] for s in states]
            mix = ([None if k is None else k.expand(T, B, n).contiguous() for k, n in zip(keep, sizes)], binary)
        found.tier_up(P, states, [*tensors, *consts])
        histories = _TracedRun.apply(tuple(found), mix, P, *states, *tensors, *consts)
        finals = tuple(h[-1] for h in histories)
        final = finals[0] if isinstance(state, Tensor) else finals
        if type(base).output is Cell.output:
            out = histories[0]
        else:                                   # a cell's own output, step by step (autograd records it)
            out = torch.stack([base.output(histories[0][t] if len(histories) == 1 else
                                           tuple(z[t] for z in histories)) for t in range(T)])
        if alive is not None:
            out = out * alive.unsqueeze(-1).to(out.dtype)
        return out.transpose(0, 1), final
