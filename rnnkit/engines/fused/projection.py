r"""The input side of a fused run: ``x W^T + b`` and ``LN(x W^T) γ + β`` for every step at once.

They equal ``F.linear`` and ``F.layer_norm(F.linear(x, W))`` (their slow twins, which every other
device and dtype uses, and tests/test_projection.py checks against in float64), but on CPU they
write into NumPy blocks reused between training steps (see ``empty``: a fresh (T, B, G)
block costs a page fault per page), run their large float32 GEMMs in oneDNN and, with numba, the
layer norm's rows compiled (``lstm_compiled.norm_rows_*``; the NumPy block loops are their twin).

The layer-norm backward, for rows ``a`` normalized to ``n = (a - mean a) · r`` with
``r = (var a + eps)^(-1/2)`` and ``dn = γ ⊙ dP``::

    da = r · (dn - mean(dn) - n · mean(dn ⊙ n)),   dγ = Σ_rows dP ⊙ n,   dβ = Σ_rows dP

Double backward is refused (``once_differentiable``), as by the fused recurrence itself.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from ..._buffers import empty
from ..handover import numpy_loops
from ._cpu import SETTINGS, compiled, gemm_tn, onednn

__all__ = ["linear", "linear_layer_norm"]


def _fast(x: Tensor, weight: Tensor) -> bool:
    # where a tool traces the call it gets the slow twin (F.linear), which torch.compile compiles well
    return numpy_loops(x.device, x.dtype) and weight.dtype == x.dtype and x.dim() >= 2 and x.numel() > 0


def _blocks(rows: int, width: int):
    """Row ranges of about ``SETTINGS.chunk_elements`` elements: every pass over a block stays in cache."""
    size = max(1, SETTINGS.chunk_elements // max(1, width))
    return [(r0, min(rows, r0 + size)) for r0 in range(0, rows, size)]


def _forward_gemm(x2: Tensor, weight: Tensor, bias: Tensor | None, out: Tensor | None = None) -> Tensor:
    """``x2 @ weight^T (+ bias)`` into ``out`` (default: a fresh :func:`empty` buffer). Large float32:
    oneDNN a block of rows at a time (its output buffer is reused hot; the copy into ``out`` is cheap)."""
    out = empty(x2, x2.shape[0], weight.shape[0]) if out is None else out
    fast = onednn()
    if fast is not None and x2.dtype == torch.float32 and x2.numel() * weight.shape[0] > SETTINGS.numpy_gemm_max:
        packed = fast[1](weight.detach(), min(x2.shape[0], 256))
        for r0, r1 in _blocks(x2.shape[0], weight.shape[0]):
            out[r0:r1] = fast[0](x2[r0:r1], packed, None if bias is None else bias.detach(), "none", [], "")
        return out
    if bias is None:
        return torch.mm(x2, weight.t(), out=out)
    return torch.addmm(bias, x2, weight.t(), out=out)


def _input_grads(ctx, da2: Tensor, x2: Tensor, weight: Tensor, shape):
    dx = dW = None
    if ctx.needs_input_grad[0]:
        dx = torch.mm(da2, weight, out=empty(da2, da2.shape[0], weight.shape[1])).view(shape)
    if ctx.needs_input_grad[1]:
        dW = gemm_tn(da2, x2)
    return dx, dW


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        x2 = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(x2, weight)
        ctx.shape = x.shape
        return _forward_gemm(x2, weight, bias).view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, dP):
        x2, weight = ctx.saved_tensors
        dP2 = dP.reshape(-1, dP.shape[-1])
        dx, dW = _input_grads(ctx, dP2, x2, weight, ctx.shape)
        db = dP2.sum(0) if ctx.needs_input_grad[2] else None
        return dx, dW, db


def _norm_rows_numpy(n_, out_, rstd_, gamma, beta, eps: float) -> None:
    """The NumPy twin of ``lstm_compiled.norm_rows_forward``, a cache-sized block of rows at a time."""
    G = n_.shape[1]
    ones, eps_ = np.full((G, 1), 1.0 / G, dtype=n_.dtype), np.array(eps, dtype=n_.dtype)
    for r0, r1 in _blocks(n_.shape[0], G):
        a, o, r = n_[r0:r1], out_[r0:r1], rstd_[r0:r1]
        np.dot(a, ones, out=r)                                       # mean
        np.subtract(a, r, out=a)
        np.dot(np.multiply(a, a, out=o), ones, out=r)                # variance
        np.reciprocal(np.sqrt(np.add(r, eps_, out=r), out=r), out=r)
        np.multiply(a, r, out=a)                                     # the normalized rows n
        np.multiply(a, gamma, out=o)
        if beta is not None:
            np.add(o, beta, out=o)


def _norm_rows_backward_numpy(dP_, n_, r_, gamma, d_gamma, d_beta, da_, want_gamma: bool, want_beta: bool) -> None:
    """The NumPy twin of ``lstm_compiled.norm_rows_backward``."""
    N, G = dP_.shape
    ones = np.full((G, 1), 1.0 / G, dtype=n_.dtype)
    block = max(r1 - r0 for r0, r1 in _blocks(N, G))
    scratch, mean_dn, q = np.empty((block, G), n_.dtype), np.empty((block, 1), n_.dtype), np.empty((block, 1), n_.dtype)
    for r0, r1 in _blocks(N, G):
        d, nn, m = dP_[r0:r1], n_[r0:r1], r1 - r0
        sc = scratch[:m]
        if want_gamma:
            d_gamma += np.multiply(d, nn, out=sc).sum(0)
        if want_beta:
            d_beta += d.sum(0)
        if da_ is not None:
            dn = np.multiply(d, gamma, out=da_[r0:r1])
            np.dot(dn, ones, out=mean_dn[:m])
            np.dot(np.multiply(dn, nn, out=sc), ones, out=q[:m])         # mean(dn ⊙ n)
            np.subtract(dn, np.multiply(nn, q[:m], out=sc), out=dn)
            np.subtract(dn, mean_dn[:m], out=dn)
            np.multiply(dn, r_[r0:r1], out=dn)


class _LinearLayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, ln_weight, ln_bias, eps):
        x2 = x.reshape(-1, x.shape[-1])
        N, G = x2.shape[0], weight.shape[0]
        n, out, rstd = empty(x2, N, G), empty(x2, N, G), empty(x2, N, 1)
        gamma, beta = ln_weight.detach().numpy(), None if ln_bias is None else ln_bias.detach().numpy()
        _forward_gemm(x2, weight, None, out=n)
        kernels = compiled()
        rows = _norm_rows_numpy if kernels is None else kernels.norm_rows_forward
        rows(n.numpy(), out.numpy(), rstd.numpy(), gamma, beta, eps)
        ctx.save_for_backward(x2, weight, ln_weight, n, rstd)
        ctx.shape = x.shape
        ctx.has_bias = ln_bias is not None
        return out.view(*x.shape[:-1], G)

    @staticmethod
    @once_differentiable
    def backward(ctx, dP):
        x2, weight, ln_weight, n, rstd = ctx.saved_tensors
        dP2 = dP.reshape(-1, dP.shape[-1])
        N, G = dP2.shape
        dtype = n.numpy().dtype
        want_gamma, want_beta = ctx.needs_input_grad[2], ctx.needs_input_grad[3] and ctx.has_bias
        want_a = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        d_gamma, d_beta = np.zeros(G, np.float64), np.zeros(G, np.float64)
        da = empty(n, N, G) if want_a else None
        args = (n.numpy(), rstd.numpy(), ln_weight.detach().numpy(), d_gamma, d_beta, None if da is None else da.numpy(),
                want_gamma, want_beta)
        kernels = compiled()
        if kernels is not None:
            kernels.norm_rows_backward(np.ascontiguousarray(dP2.numpy()), *args)
        else:
            _norm_rows_backward_numpy(dP2.numpy(), *args)
        dx, dW = _input_grads(ctx, da, x2, weight, ctx.shape) if want_a else (None, None)
        as_tensor = lambda v: torch.from_numpy(v.astype(dtype))  # noqa: E731
        return dx, dW, as_tensor(d_gamma) if want_gamma else None, as_tensor(d_beta) if want_beta else None, None


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)``; on CPU float32/float64 into a NumPy-backed buffer."""
    if not _fast(x, weight):
        return F.linear(x, weight, bias)
    return _Linear.apply(x, weight, bias)


def linear_layer_norm(x: Tensor, weight: Tensor, ln_weight: Tensor, ln_bias: Tensor | None, eps: float) -> Tensor:
    """``F.layer_norm(F.linear(x, weight), (G,), ln_weight, ln_bias, eps)`` (no bias inside the
    norm); on CPU float32/float64 into NumPy-backed buffers."""
    if not _fast(x, weight):
        a = F.linear(x, weight)
        return F.layer_norm(a, a.shape[-1:], ln_weight, ln_bias, eps)
    return _LinearLayerNorm.apply(x, weight, ln_weight, ln_bias, eps)
