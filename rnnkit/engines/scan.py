"""Parallel prefix scans: every prefix of an associative product in O(log T) depth.

A recurrence ``s_t = s_{t-1} ∘ e_t`` whose combine ``∘`` is associative need not run
step by step: :func:`associative_scan` pairs neighbours, scans the half-length sequence
of pairs recursively and fills in the even positions, so it does ``O(T)`` combines in
``2⌈log₂ T⌉`` rounds, each round one batched tensor operation. Linear recurrences
(``s_t = A_t s_{t-1} + b_t``) and the HMM forward recursion are such products.

:func:`log_matmul` is the combine for products of matrices with positive entries kept
as logarithms, the stable form of the HMM's forward recursion.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = ["associative_scan", "sequential_scan", "log_matmul", "log_matmul_reference"]


def associative_scan(combine: Callable[[Tensor, Tensor], Tensor], elements: Tensor, dim: int = 0) -> Tensor:
    """Inclusive scan ``out[t] = e[0] ∘ e[1] ∘ … ∘ e[t]`` along ``dim``.

    ``combine(a, b)`` takes two stacks of elements of equal length (any leading
    batch shape, the scanned dimension first) and returns ``a ∘ b`` element by
    element; it must be associative (it need not be commutative: the left operand
    is always the earlier one). Differentiable when ``combine`` is.

    >>> import torch
    >>> associative_scan(torch.add, torch.arange(1., 6.))
    tensor([ 1.,  3.,  6., 10., 15.])
    """
    if not isinstance(elements, Tensor):
        raise TypeError(f"associative_scan: elements must be a tensor, got {type(elements).__name__}")
    if elements.dim() == 0:
        raise ValueError("associative_scan: elements must have at least one dimension to scan along, "
                         "got a 0-d tensor")
    x = elements.movedim(dim, 0)
    return _scan(combine, x).movedim(0, dim)


def _scan(combine, x: Tensor) -> Tensor:
    n = x.shape[0]
    if n < 2:
        return x
    odd = _scan(combine, combine(x[0:n - 1:2], x[1:n:2]))   # odd[i] = e[0] ∘ … ∘ e[2i+1]
    even = combine(odd[:(n - 1) // 2], x[2:n:2])              # e[0] ∘ … ∘ e[2i+2]
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    out[0] = x[0]
    out[1::2] = odd
    out[2::2] = even
    return out


def sequential_scan(combine: Callable[[Tensor, Tensor], Tensor], elements: Tensor, dim: int = 0) -> Tensor:
    """The obvious twin of :func:`associative_scan`: one combine per step, left to right."""
    x = elements.movedim(dim, 0)
    acc, out = x[0], [x[0]]
    for t in range(1, x.shape[0]):
        acc = combine(acc.unsqueeze(0), x[t:t + 1])[0]
        out.append(acc)
    return torch.stack(out).movedim(0, dim)


def log_matmul(a: Tensor, b: Tensor) -> Tensor:
    """``log(exp(a) @ exp(b))`` on (..., K, K) by one matrix product.

    Each row of ``a`` and each column of ``b`` is shifted by its maximum before
    exponentiating, so every term is at most 1 and the largest of each row/column is
    exactly 1; the shifts are added back after the logarithm. Terms more than about
    700 nats (float64; 87 in float32) below both shifts underflow to zero, and an
    entry whose every term underflows is clamped to the smallest normal number
    instead of becoming ``-inf`` (keeping gradients finite).
    """
    am = a.amax(-1, keepdim=True)
    bm = b.amax(-2, keepdim=True)
    prod = torch.exp(a - am) @ torch.exp(b - bm)
    return torch.log(prod.clamp_min(torch.finfo(prod.dtype).tiny)) + am + bm


def log_matmul_reference(a: Tensor, b: Tensor) -> Tensor:
    """Twin of :func:`log_matmul`: ``logsumexp_k a_ik + b_kj`` with a (..., K, K, K) intermediate."""
    return torch.logsumexp(a.unsqueeze(-1) + b.unsqueeze(-3), dim=-2)
