"""The fast recursions (no gradient): the filter, the smoother and the likelihood alone by one forward
loop of two operations per step on reused buffers, renormalized every few steps, then a few large
array operations for the normalizers, posteriors and summed pairwise counts (see the package
docstring). Held to :mod:`.reference` to 1e-12 by the tests."""
from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..._buffers import empty, numpy_backed
from .emissions import _Emissions

__all__ = ["_fast_forward", "_fast_log_likelihood", "_fast_passes"]


class _Passes(NamedTuple):
    filtered: Tensor          # (B, T, K), zero at padding
    log_normalizers: Tensor   # (B, T), zero at padding
    log_likelihood: Tensor    # (B,)
    posterior: Tensor | None  # (B, T, K)
    pairwise: Tensor | None   # (B, T-1, K, K)
    transitions: Tensor | None  # (K, K) Σ_b Σ_t ξ_t


_RENORMALIZE_EVERY = 8   # steps between renormalizations of the fast recursions
_SMALLEST_SUM = 1e-200   # below this a message may have lost digits: rerun renormalizing every step


# The loops run on NumPy views of torch tensors where the fused engine's loops do (CPU float32/float64,
# rnnkit._buffers.numpy_backed: a third of torch's per-call overhead), on torch operations elsewhere. Their
# (T, B, K) buffers come from the shared pool (rnnkit._buffers.empty): reused once no tensor holds
# them, freed by rnnkit.engines.release_memory(), measured as fast as the per-fit workspace they replace
# (fresh pages cost more than the recursions). The engine's NumpyOps/TorchOps are not used: ops_for
# picks them by the engine's settings and GEMM sizes, for its kernels; these loops need three ufuncs.
def _array_ops(like: Tensor):
    """``(module, view)`` the fast loops are written against: ``(numpy, Tensor.numpy)`` (a zero-copy
    view) or ``(torch, identity)``."""
    if numpy_backed(like):
        return np, Tensor.numpy
    return torch, (lambda u: u)


def _fast_forward(log_pi: Tensor, log_P: Tensor, em: _Emissions, *, history: bool, keep_emissions: bool = False,
                  every: int = _RENORMALIZE_EVERY):
    """The forward recursion without autograd: ``(e, shift, a, logscale)``.

    ``e``, ``shift`` are ``em.scaled()``; ``a`` holds the forward messages, unnormalized between
    renormalizations every ``every`` steps (and at the last step), so a step is one elementwise
    product and one (B, K) × (K, K) product on NumPy views on the CPU; ``logscale`` (T, B) is the
    log of the sum divided out at each renormalization, 0 elsewhere. With ``history`` ``a`` is
    (T, B, K), every step's message, written over ``e`` (then ``a is e``: no buffer) unless
    ``keep_emissions``; without, ``a`` is the last message (B, K) alone, for the likelihood (a
    row that stays in cache: 10% faster than writing the history). Since the rows of ``P`` sum
    to one and ``e ≤ 1``, a message's sum only falls between renormalizations, so the sums
    divided out are the smallest ones: if any falls below 1e-200 the pass is rerun
    renormalizing at every step."""
    e, shift = em.scaled()                                                # (T, B, K), (T, B) | None
    t, b, k = e.shape
    xp, as_x = _array_ops(e)
    E, Pm = as_x(e), as_x(log_P.detach().exp().contiguous())
    pred = as_x(log_pi.detach().exp().unsqueeze(0).expand(b, k).contiguous())
    if history:
        a = empty(e, t, b, k) if keep_emissions else e
        rows = as_x(a)                                                    # iterates over row views
    else:
        a = e.new_empty(b, k)
        rows = itertools.repeat(as_x(a), t)
    logscale_t = e.new_zeros(t, b)
    logscale = as_x(logscale_t)
    for s, (row, e_s) in enumerate(zip(rows, E)):
        xp.multiply(pred, e_s, out=row)
        if s % every == every - 1 or s == t - 1:
            total = row.sum(-1)
            row /= total[:, None]
            logscale[s] = xp.log(total)
        if s < t - 1:
            xp.matmul(row, Pm, out=pred)
    if every > 1 and not float(logscale_t.min()) >= math.log(_SMALLEST_SUM):   # NaN too
        return _fast_forward(log_pi, log_P, em, history=history, keep_emissions=keep_emissions, every=1)
    return e, shift, a, logscale_t


def _fast_log_likelihood(log_pi: Tensor, log_P: Tensor, em: _Emissions, every: int = _RENORMALIZE_EVERY) -> Tensor:
    """``log p(x_{1:L})`` (B,) by :func:`_fast_forward` alone: the sums divided out, and the shifts
    (the last step is renormalized, so nothing is left in the message)."""
    with torch.no_grad():
        _, shift, _, logscale = _fast_forward(log_pi, log_P, em, history=False, every=every)
        loglik = logscale.sum(0)
        return loglik if shift is None else loglik + shift.sum(0)


def _fast_passes(log_pi: Tensor, log_P: Tensor, em: _Emissions, *, backward: bool,
                 pairwise: bool = False, every: int = _RENORMALIZE_EVERY) -> _Passes:
    """Filter (and smoother) by :func:`_fast_forward` and a backward recursion written the same way.

    The scale a message picks up between two steps *is* the normalizer ``z_t``, recovered
    afterwards from the stored sums; normalizers, posteriors and the summed pairwise counts
    then come from a few large array operations. The summed pairwise counts need
    ``n_t = Σ_ij α̂_t(i) P_ij e_{t+1}(j) β_{t+1}(j)``, which equals ``z_{t+1} Σ_j α̂_{t+1}(j) β_{t+1}(j)``:
    the normalizer times the sum that normalizes ``γ_{t+1}``, so it costs nothing extra.
    """
    with torch.no_grad():
        mask = em.mask
        full = bool(mask.all())
        e, shift, a_t, logscale_t = _fast_forward(log_pi, log_P, em, history=True, keep_emissions=backward,
                                                   every=every)
        t, b, k = e.shape
        sums = a_t.sum(-1)                                                # (T, B)
        if shift is not None:
            logscale_t += shift
        cumlog = torch.cumsum(logscale_t, 0).add_(torch.log(sums))       # ℓ_t (T, B)
        loglik = cumlog[-1].clone()
        lognorm = torch.diff(cumlog, dim=0, prepend=torch.zeros_like(cumlog[:1]))
        a_t /= sums.unsqueeze(-1)                                         # a_t is now α̂_t (filtered)
        maskT = None if full else mask.t()
        filtered = a_t if maskT is None else a_t * maskT.unsqueeze(-1)
        if not backward:
            return _Passes(filtered.transpose(0, 1), (lognorm if full else lognorm * maskT).t(), loglik,
                           None, None, None)

        P = log_P.detach().exp()
        xp, as_x = _array_ops(e)
        E, PT = as_x(e), as_x(P.t().contiguous())
        beta_t, w_t = empty(e, t, b, k), empty(e, t, b, k)                # w_t = e_t ⊙ β_t, t ≥ 1
        beta, w = as_x(beta_t), as_x(w_t)
        beta[t - 1] = 1.0
        for s in range(t - 2, -1, -1):
            xp.multiply(E[s + 1], beta[s + 1], out=w[s + 1])
            xp.matmul(w[s + 1], PT, out=beta[s])
            if (t - 2 - s) % every == every - 1:
                beta[s] /= beta[s].sum(-1)[:, None]
        gamma = beta_t.mul_(a_t)                                          # γ reuses β's buffer
        gsum = gamma.sum(-1)                                              # (T, B)
        gamma /= gsum.unsqueeze(-1)
        if maskT is not None:
            gamma *= maskT.unsqueeze(-1)
        pair = None
        if t > 1:
            zscaled = lognorm[1:] if shift is None else lognorm[1:] - shift[1:]
            inv = zscaled.exp().mul_(gsum[1:]).reciprocal_()              # 1 / n_t  (T-1, B)
            if maskT is not None:
                inv = inv.masked_fill_(~maskT[1:], 0.0)                   # no pair where t+1 is padding
            w1 = w_t[1:]
            w1 *= inv.unsqueeze(-1)
            transitions = P * (a_t[:-1].reshape(-1, k).t() @ w1.reshape(-1, k))
            if pairwise:
                pair = (a_t[:-1].unsqueeze(-1) * P * w1.unsqueeze(-2)).transpose(0, 1)
        else:
            transitions = e.new_zeros(k, k)
            if pairwise:
                pair = e.new_zeros(b, 0, k, k)
        if maskT is not None:
            lognorm *= maskT
        return _Passes(filtered.transpose(0, 1), lognorm.t(), loglik, gamma.transpose(0, 1), pair, transitions)
