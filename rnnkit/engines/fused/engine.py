"""The fused engine: the autograd Function of a run and :class:`FusedEngine`, which never asks which cell it
runs: the kernel comes from :data:`KERNELS` by the name the cell gives (``Cell.fused_kernel()``), the
parameters from the cell's ``fused_parameters()``, and the path (Function or torch.compile's operator,
the loops or their Triton twins) from :mod:`..select`."""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from ..._torch_private import can_swap_parameters, swapped_parameters
from ...cells.base import Cell, State, state_tensors
from ...cells.wrapper import combined_masks, unknown_wrapper, unwrap_cell
from ..handover import keep_past_the_end, refuse_double_backward
from ._cpu import ops_for
from .adjoint import Run
from .gpu import twin
from .ops import run_as_operator
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
        refuse_double_backward("fused")
        W, *rest = ctx.saved_tensors
        m, e = ctx.m, ctx.n_extras
        states, extras, outputs = rest[:m], rest[m:m + e], rest[m + e:]
        needs = ctx.needs_input_grad[2:]
        dP, dW, d_states, d_extras = ctx.kernel.backward(ctx.ops, ctx.run, ctx.saved, W, tuple(states),
                                                         tuple(extras), tuple(outputs), grads, needs)
        return (None, None, dP, dW, *d_states, *d_extras)


class FusedEngine:
    """Whole-sequence forward and hand-derived BPTT for every cell whose ``fused_kernel()`` names a
    kernel of :data:`KERNELS`, under any wrappers that describe themselves (``run_masks``)."""
    name = "fused"
    # for the hand-over (:func:`..select.hand_over`): tools that cannot see through the NumPy and Triton
    # loops, each with what runs instead (in an exported program torch's kernel for a cell that has one:
    # one op, any length; else the step loop, traced for the example's length only; torch.compile holds
    # a run as one custom operator, :mod:`.ops`); an empty batch goes to the loop; the kernels have no
    # reduced-precision arithmetic, so under autocast a run computes in the weights' dtype
    opaque_to = {"export": ("native", "loop"), "functorch": ("loop",)}
    whole_sequence = True
    under_autocast = "weights' dtype"

    def __init__(self, *, operator: bool = False, triton: bool = False):
        self.operator, self.triton = operator, triton
        self._paths = {(operator, triton): self}

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
        reason = KERNELS[name].supports(base.fused_parameters())
        return None if reason is None else f"{type(base).__name__} {reason}"

    def on(self, *, operator: bool, triton: bool) -> "FusedEngine":
        """This engine on a path (:mod:`..select` chooses it for each input)."""
        key = (operator, triton)
        if key not in self._paths:
            self._paths[key] = FusedEngine(operator=operator, triton=triton)
        return self._paths[key]

    def run(self, cell: Cell, x: Tensor, state: State, lengths: Tensor | None):
        base, wrappers = unwrap_cell(cell)
        name = base.fused_kernel()
        kernel = twin(name) if self.triton else KERNELS[name]     # the same kernel with its recursions on Triton
        xs = x.transpose(0, 1)                                                # (T, B, X)
        in_mask, hidden_mask, keep, dropped, binary = combined_masks(base, wrappers, x.shape[1], x)
        if in_mask is not None:
            xs = xs * in_mask
        alive, keep = keep_past_the_end(keep, lengths, x)
        swap = swapped_parameters(base, dropped) if dropped else contextlib.nullcontext()
        with swap:                                       # the record holds the dropped weights of this run
            P, W, extras, options = kernel.prepare(base.fused_parameters(), xs)
        run = Run(tuple(keep), hidden_mask, binary, **options)
        P, states = P.contiguous(), state_tensors(state)
        if self.operator:            # one node of the compiled graph (dynamo cannot follow the NumPy loops)
            histories = run_as_operator(name, self.triton, run, P, W, states, extras)
        else:
            histories = _FusedRun.apply(kernel, run, P, W, *states, *extras)
        Z0 = histories[0]
        finals = (Z0[-1], *histories[1:])
        out = kernel.emitted(base, Z0)
        if alive is not None:
            out = out * alive.unsqueeze(-1).to(out.dtype)
        out = out.transpose(0, 1)                                             # (B, T, O)
        return out, (finals[0] if isinstance(state, Tensor) else finals)
