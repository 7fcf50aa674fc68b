"""The fused engine: a registry of kernels by the names cells give (``Cell.fused_kernel()``), the
autograd Function of a run, and :class:`FusedEngine`, which never asks which cell it runs."""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from ..._torch_private import can_swap_parameters, inside_functorch, swapped_parameters
from ...cells.base import Cell, State, state_tensors
from ...cells.wrapper import combined_masks, unknown_wrapper, unwrap_cell
from ._cpu import ops_for
from .adjoint import Run
from .gpu import twin, uses_triton
from .registry import KERNELS

__all__ = ["FusedEngine", "KERNELS"]



class _FusedRun(torch.autograd.Function):
    """The recurrence of one run: (P, W, initial state, extras) -> state histories."""

    @staticmethod
    def forward(ctx, kernel, run, P, W, *rest):
        m = kernel.components
        states, extras = rest[:m], rest[m:]
        ops = ops_for(P, W)
        outputs, saved = kernel.forward(ops, run, P, W, states, extras)
        ctx.kernel, ctx.run, ctx.saved, ctx.m, ctx.n_extras, ctx.ops = kernel, run, saved, m, len(extras), ops
        ctx.save_for_backward(W, *states, *extras, *outputs)
        return outputs

    @staticmethod
    def backward(ctx, *grads):
        if torch.is_grad_enabled():
            raise RuntimeError("fused engine: the hand-derived backward cannot itself be differentiated "
                               "(backward with create_graph=True); run this layer with engine='loop', or for an "
                               "LSTMCell, GRUCell or ElmanCell engine='native' (on the CPU, engine='auto' "
                               "trains GRU and Elman cells on fused)")
        W, *rest = ctx.saved_tensors
        m, e = ctx.m, ctx.n_extras
        states, extras, outputs = rest[:m], rest[m:m + e], rest[m + e:]
        needs = ctx.needs_input_grad[2:]
        dP, dW, d_states, d_extras = ctx.kernel.backward(ctx.ops, ctx.run, ctx.saved, W, tuple(states),
                                                         tuple(extras), tuple(outputs), grads, needs)
        return (None, None, dP, dW, *d_states, *d_extras)


def _run_opaque(name: str, kernel, run, P, W, states, extras):
    """The run: the autograd Function eagerly; inside ``torch.compile`` the operator of :mod:`.ops`,
    which the compiled graph holds as one node (dynamo must not trace into the NumPy loops, whose
    in-place writes into reused buffers it cannot follow)."""
    if torch.compiler.is_compiling():
        from .ops import run_as_operator
        return run_as_operator(name, run, P, W, states, extras)
    return _FusedRun.apply(kernel, run, P, W, *states, *extras)


def _traceable(cell: Cell, loop_only: bool = False):
    """What runs in place of the fused engine where its NumPy loops cannot be seen through. In an
    exported program: torch's kernel for a cell that has one (one op, any length), else the step
    loop (traced step by step: the program then holds for the traced length only, and the
    exporters refuse a dynamic length rather than answer wrongly). Inside a ``torch.func``
    transform: the step loop, plain torch ops that every transform handles."""
    from ..loop import LoopEngine
    from ..native import NativeEngine

    native = NativeEngine()
    return native if not loop_only and native.supports(cell) is None else LoopEngine()


def _cast_state(state: State, dtype) -> State:
    if state is None or isinstance(state, Tensor):
        return None if state is None else state.to(dtype)
    return tuple(t.to(dtype) for t in state)


def _kernel_for(cell: Cell):
    name = cell.fused_kernel()
    return None if name is None else KERNELS.get(name)


class FusedEngine:
    """Whole-sequence forward and hand-derived BPTT for every cell whose ``fused_kernel()`` names a
    kernel of :data:`KERNELS`, under any wrappers that describe themselves (``run_masks``)."""
    name = "fused"

    def supports(self, cell: Cell) -> str | None:
        base, wrappers = unwrap_cell(cell)
        unknown = unknown_wrapper(wrappers, "fused")
        if unknown is not None:
            return unknown
        for w in wrappers:
            if w.drops_weights and not can_swap_parameters():
                return (f"{type(w).__name__} drops weights, which fused runs through a private torch API "
                        f"that is unavailable or turned off (RNNKIT_TORCH_PRIVATE=0)")
        name = base.fused_kernel()
        if name is None:
            return (f"{type(base).__name__} has no fused kernel (fused runs cells whose fused_kernel() names "
                    f"one: {', '.join(sorted(KERNELS))})")
        if name not in KERNELS:
            return f"{type(base).__name__}.fused_kernel() returned unknown kernel {name!r}"
        return KERNELS[name].supports(base)

    def run(self, cell: Cell, x: Tensor, state: State, lengths: Tensor | None):
        if x.shape[0] == 0:                  # an empty batch: nothing to fuse, the loop handles it
            return _traceable(cell, loop_only=True).run(cell, x, state, lengths)
        if torch.compiler.is_exporting() or (not torch.compiler.is_compiling() and inside_functorch()):
            return _traceable(cell, loop_only=not torch.compiler.is_exporting()).run(cell, x, state, lengths)
        device = x.device.type
        if torch.is_autocast_enabled(device):
            # the kernels have no reduced-precision arithmetic: inside autocast the run computes in
            # the weights' dtype (float32), autocast off, and hands its float32 outputs on
            like = next(iter(cell.parameters()), x)
            with torch.autocast(device, enabled=False):
                return self._run(cell, x.to(like.dtype), _cast_state(state, like.dtype), lengths)
        return self._run(cell, x, state, lengths)

    def _run(self, cell: Cell, x: Tensor, state: State, lengths: Tensor | None):
        base, wrappers = unwrap_cell(cell)
        kernel = _kernel_for(base)
        B, T = x.shape[:2]
        xs = x.transpose(0, 1)                                                # (T, B, X)
        in_mask, hidden_mask, keep, dropped, binary = combined_masks(base, wrappers, T, x)
        if in_mask is not None:
            xs = xs * in_mask
        alive = None
        if lengths is not None:
            alive = torch.arange(T, device=x.device).unsqueeze(1) < lengths.to(x.device)   # (T, B)
            dead = (~alive).unsqueeze(-1)
            keep = [torch.where(dead, 1.0, k if k is not None else 0.0).to(x.dtype) for k in keep]
        swap = swapped_parameters(base, dropped) if dropped else contextlib.nullcontext()
        with swap:
            P, W, extras, options = kernel.prepare(base, xs)
        if uses_triton(P):                        # the same kernel with its recursions on Triton
            kernel = twin(base.fused_kernel())
        run = Run(tuple(keep), hidden_mask, binary, **options)
        histories = _run_opaque(base.fused_kernel(), kernel, run, P.contiguous(), W, state_tensors(state), extras)
        Z0 = histories[0]
        finals = (Z0[-1], *histories[1:])
        out = kernel.emitted(base, Z0)
        if alive is not None:
            out = out * alive.unsqueeze(-1).to(out.dtype)
        out = out.transpose(0, 1)                                             # (B, T, O)
        return out, (finals[0] if isinstance(state, Tensor) else finals)
