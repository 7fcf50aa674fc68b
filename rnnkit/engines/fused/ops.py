"""The fused recurrence as one opaque operator for ``torch.compile``: ``rnnkit::fused_recurrence`` and
its backward ``rnnkit::fused_recurrence_backward`` (``torch.library.custom_op``, with fake kernels that
give the shapes and ``register_autograd``), so that a compiled model holds each fused layer as one
node of one graph (no graph break) and AOTAutograd places the hand-derived backward as one node of
the backward graph. Both run the very kernels the eager path runs (:mod:`.engine`'s autograd
Function, the twin the tests hold them to), so a compiled model computes what eager computes.

Eager calls keep the autograd Function (a custom operator's dispatch costs tens of microseconds a
call). Exported programs and ``torch.func`` transforms do not see these operators: ONNX has no
kernel for them, so there torch's kernels or the step loop run instead (:func:`rnnkit.engines.select.hand_over`).

What crosses the operator: the kernel's name and path (its Triton twin or not, as the engine chose), the
run's fields and which extras are present as text (:meth:`~.adjoint.Run.encode`), the tensors. A kernel's
saved intermediates are outputs of the forward operator (AOTAutograd keeps them for the backward),
laid out by :func:`layout`; outputs never alias each other or an input.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..handover import refuse_double_backward
from ._cpu import ops_for
from .adjoint import Run
from .gpu import twin
from .registry import KERNELS

__all__ = ["fused_recurrence", "layout", "run_as_operator"]


def _kernel(name: str, triton: bool):
    return twin(name) if triton else KERNELS[name]


def _encode(run: Run, extras) -> str:
    """The run's text (:meth:`~.adjoint.Run.encode`) and which extras are present."""
    return run.encode() + ";extras=" + "".join("0" if e is None else "1" for e in extras)


def _decode(config: str, extras, keep, mask):
    """The run and the extras with None where absent (the operators carry absent tensors as empty ones)."""
    text, _, present = config.rpartition(";extras=")
    return Run.decode(text, keep, mask), [e if flag == "1" else None for e, flag in zip(extras, present)]


def layout(name: str, run: Run, extras, H: int, G: int) -> list:
    """``[(name, width)]`` of the forward operator's outputs (the kernel's ``operator_outputs``)."""
    return KERNELS[name].operator_outputs(run, extras, H, G)


@torch.library.custom_op("rnnkit::fused_recurrence", mutates_args=())
def fused_recurrence(kernel: str, triton: bool, config: str, P: Tensor, W: Tensor, states: list[Tensor],
                     extras: list[Tensor], keep: list[Tensor], mask: Tensor) -> list[Tensor]:
    run, extras = _decode(config, extras, keep, mask)
    k = _kernel(kernel, triton)
    outputs, saved = k.forward(ops_for(P, W), run, P, W, tuple(states), tuple(extras))
    _, *rest = layout(kernel, run, extras, states[0].shape[-1], P.shape[-1])
    return [outputs[0].contiguous(), *[saved[name].contiguous() for name, _ in rest]]


@fused_recurrence.register_fake
def _(kernel, triton, config, P, W, states, extras, keep, mask):
    T, B, G = P.shape
    run, extras = _decode(config, extras, keep, mask)
    return [P.new_empty(T, B, width) for _, width in layout(kernel, run, extras, states[0].shape[-1], G)]


def _none_to_empty(t: Tensor | None, like: Tensor) -> Tensor:
    return like.new_empty(0) if t is None else t


@torch.library.custom_op("rnnkit::fused_recurrence_backward", mutates_args=())
def fused_recurrence_backward(kernel: str, triton: bool, config: str, W: Tensor, states: list[Tensor],
                              extras: list[Tensor], keep: list[Tensor], mask: Tensor, outs: list[Tensor],
                              grads: list[Optional[Tensor]], needs: list[bool]) -> list[Tensor]:
    """``[dP, dW, *d_states, *d_extras]``; an empty tensor where ``needs`` says no gradient is wanted."""
    run, extras = _decode(config, extras, keep, mask)
    T, B = outs[0].shape[:2]
    H, G = states[0].shape[-1], W.shape[0]
    names = [name for name, _ in layout(kernel, run, extras, H, G)]
    saved, by_name = dict(zip(names, outs)), dict(zip(names, grads))
    hist = outs[0]
    like_P = hist.new_empty(()).expand(T, B, G)                 # the forward's choices were made from P's shape
    k, ops = _kernel(kernel, triton), ops_for(like_P, W)
    outputs, d_outputs = k.operator_inputs(ops, run, extras, saved, by_name)
    dP, dW, d_states, d_extras = k.backward(ops, run, saved, W, tuple(states), tuple(extras), outputs, d_outputs,
                                            tuple(needs))
    result = [dP, dW, *d_states, *d_extras]
    # contiguous, as the fake kernel promises (a weight gradient may come as a transposed view)
    return [_none_to_empty(g if want else None, hist).contiguous() for g, want in zip(result, needs)]


@fused_recurrence_backward.register_fake
def _(kernel, triton, config, W, states, extras, keep, mask, outs, grads, needs):
    T, B = outs[0].shape[:2]
    shapes = [(T, B, W.shape[0]), W.shape, *[s.shape for s in states], *[e.shape for e in extras]]
    return [outs[0].new_empty(shape if want else (0,)) for shape, want in zip(shapes, needs)]


def _setup_context(ctx, inputs, output):
    kernel, triton, config, P, W, states, extras, keep, mask = inputs
    ctx.kernel, ctx.triton, ctx.config, ctx.keep, ctx.mask = kernel, triton, config, keep, mask
    ctx.needs = [P.requires_grad, W.requires_grad, *[s.requires_grad for s in states],
                 *[e.requires_grad for e in extras]]
    ctx.n_states, ctx.n_extras = len(states), len(extras)
    ctx.save_for_backward(W, *states, *extras, *output)


def _backward(ctx, grads):
    refuse_double_backward("fused")
    W, *rest = ctx.saved_tensors
    m = ctx.n_states
    states, extras, outs = rest[:m], rest[m:m + ctx.n_extras], rest[m + ctx.n_extras:]
    result = fused_recurrence_backward(ctx.kernel, ctx.triton, ctx.config, W, list(states), list(extras),
                                       list(ctx.keep), ctx.mask, list(outs), list(grads), ctx.needs)
    result = [g if want else None for g, want in zip(result, ctx.needs)]
    dP, dW, d_states, d_extras = result[0], result[1], result[2:2 + m], result[2 + m:]
    return None, None, None, dP, dW, d_states, d_extras, [None] * len(ctx.keep), None


fused_recurrence.register_autograd(_backward, setup_context=_setup_context)


def run_as_operator(name: str, triton: bool, run: Run, P: Tensor, W: Tensor, states, extras):
    """The histories the autograd Function returns (the kernel's ``forward`` outputs), through the operators."""
    absent = P.new_empty(0)
    outs = fused_recurrence(name, triton, _encode(run, extras), P, W, list(states),
                            [absent if e is None else e for e in extras],
                            [absent if k is None else k for k in run.keep], absent if run.mask is None else run.mask)
    names = [n for n, _ in layout(name, run, extras, states[0].shape[-1], P.shape[-1])]
    return KERNELS[name].histories(dict(zip(names, outs)))
