r"""The input side of a fused run: ``x W^T + b`` and ``LN(x W^T) γ + β`` for every step at once.

They equal ``F.linear`` and ``F.layer_norm(F.linear(x, W))`` (their slow twins, which every other
device and dtype uses, and tests/test_projection.py checks against in float64), but on CPU they
write into NumPy-backed buffers (see ``fused._empty``: a fresh (T, B, G) block costs a few page
faults, not one per 4 KiB) and run their large float32 weight-gradient GEMMs in oneDNN.

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

from . import fused

__all__ = ["linear", "linear_layer_norm"]


def _fast(x: Tensor, weight: Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype in fused._NP_DTYPES and weight.dtype == x.dtype
            and x.dim() >= 2 and x.numel() > 0)


def _forward_gemm(x2: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    out = fused._empty(x2, x2.shape[0], weight.shape[0])
    if bias is None:
        return torch.mm(x2, weight.t(), out=out)
    return torch.addmm(bias, x2, weight.t(), out=out)


def _input_grads(ctx, da2: Tensor, x2: Tensor, weight: Tensor, shape):
    dx = dW = None
    if ctx.needs_input_grad[0]:
        dx = torch.mm(da2, weight, out=fused._empty(da2, da2.shape[0], weight.shape[1])).view(shape)
    if ctx.needs_input_grad[1]:
        dW = fused._gemm_tn(da2, x2)
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


class _LinearLayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, ln_weight, ln_bias, eps):
        x2 = x.reshape(-1, x.shape[-1])
        a = _forward_gemm(x2, weight, None)
        N, G = a.shape
        a_, ones = a.numpy(), np.full((G, 1), 1.0 / G, dtype=a.numpy().dtype)
        scale = a_ @ ones                                            # mean, (N, 1)
        np.subtract(a_, scale, out=a_)
        out = fused._empty(a, N, G)
        out_ = out.numpy()
        np.multiply(a_, a_, out=out_)
        np.dot(out_, ones, out=scale)                                # variance
        np.add(scale, np.array(eps, dtype=scale.dtype), out=scale)
        np.sqrt(scale, out=scale)
        np.reciprocal(scale, out=scale)
        np.multiply(a_, scale, out=a_)                               # a is now the normalized n
        np.multiply(a_, ln_weight.detach().numpy(), out=out_)
        if ln_bias is not None:
            np.add(out_, ln_bias.detach().numpy(), out=out_)
        ctx.save_for_backward(x2, weight, ln_weight, a, torch.from_numpy(scale))
        ctx.shape = x.shape
        ctx.has_bias = ln_bias is not None
        return out.view(*x.shape[:-1], G)

    @staticmethod
    @once_differentiable
    def backward(ctx, dP):
        x2, weight, ln_weight, n, rstd = ctx.saved_tensors
        dP2 = dP.reshape(-1, dP.shape[-1]).contiguous()
        N, G = dP2.shape
        dP_, n_, r_ = dP2.numpy(), n.numpy(), rstd.numpy()
        ones = np.full((G, 1), 1.0 / G, dtype=dP_.dtype)
        scratch = fused._empty(dP2, N, G).numpy()
        d_gamma = d_beta = dx = dW = None
        if ctx.needs_input_grad[2]:
            d_gamma = torch.from_numpy(np.multiply(dP_, n_, out=scratch).sum(0))
        if ctx.needs_input_grad[3] and ctx.has_bias:
            d_beta = torch.from_numpy(dP_.sum(0))
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            da = fused._empty(dP2, N, G)
            dn = np.multiply(dP_, ln_weight.detach().numpy(), out=da.numpy())
            mean_dn = dn @ ones                                      # (N, 1)
            q = np.multiply(dn, n_, out=scratch) @ ones              # mean(dn ⊙ n)
            np.subtract(dn, np.multiply(n_, q, out=scratch), out=dn)
            np.subtract(dn, mean_dn, out=dn)
            np.multiply(dn, r_, out=dn)
            dx, dW = _input_grads(ctx, da, x2, weight, ctx.shape)
        return dx, dW, d_gamma, d_beta, None


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
