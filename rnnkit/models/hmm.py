"""Hidden Markov models: filtering, smoothing, Viterbi, sampling, EM and gradient fitting.

Parameters are *unconstrained log-weights*, normalized here with ``log_softmax``:

- ``log_pi`` (K,)    → ``π = softmax(log_pi)``,             ``π_k = p(z_1 = k)``
- ``log_P``  (K, K)  → ``P = softmax(log_P, dim=-1)``,      ``P_ij = p(z_{t+1} = j | z_t = i)``
- ``log_C``  (K, V)  → ``C = softmax(log_C, dim=-1)``,      ``C_kv = p(x_t = v | z_t = k)``

(already-normalized log-probabilities pass through unchanged). Observations are
integer symbols ``(B, T)`` in ``[0, V)`` (:class:`CategoricalHMM`) or real vectors
``(B, T, D)`` with diagonal-Gaussian emissions (:class:`GaussianHMM`); ``lengths`` (B,)
marks a right-padded batch, and padded positions are ignored (they may hold anything).

Every routine runs the scaled recursions, so sequences of any length stay finite. With
``e_t(k) = p(x_t | z_t = k)``::

    α̂_t = p(z_t | x_{1:t}) ∝ (α̂_{t-1} P) ⊙ e_t,   z_t = p(x_t | x_{1:t-1}),
    log p(x_{1:T}) = Σ_t log z_t,
    β̂_T = 1,  β̂_t = P (e_{t+1} ⊙ β̂_{t+1}) / z_{t+1},
    γ_t = α̂_t ⊙ β̂_t = p(z_t | x_{1:T}),
    ξ_t(i, j) = α̂_t(i) P_ij e_{t+1}(j) β̂_{t+1}(j) / z_{t+1} = p(z_t=i, z_{t+1}=j | x_{1:T}).

**The gradient identity.** Differentiating ``log p(x_{1:T})`` through the filter (the
RNN form, by autograd) gives exactly the expected sufficient statistics of the
forward–backward pass, minus what the softmax parameterization subtracts::

    ∂ log p / ∂ log_C[k, v] = Σ_t γ_t(k) [x_t = v]  −  C_kv Σ_t γ_t(k)
    ∂ log p / ∂ log_P[i, j] = Σ_t ξ_t(i, j)         −  P_ij Σ_j' Σ_t ξ_t(i, j')
    ∂ log p / ∂ log_pi[k]   = γ_1(k)                −  π_k

(the log-likelihood is a log-partition function of the path distribution, and the
gradient of a log-partition function is an expectation). So backpropagation through
time on this RNN *is* the E-step, and EM's M-step is the closed-form solution of the
gradient's fixed point. ``tests/test_hmm.py::test_gradient_identity`` checks it to 1e-8.

Two implementations compute them. The *reference* one follows these lines step by
step with autograd; it is used whenever a gradient is needed. The *fast* one (no
gradient; EM, scoring, smoothing) runs the two recursions with two operations per step
on preallocated buffers (NumPy on the CPU), renormalizes only every few steps, and
computes normalizers, posteriors and the summed pairwise counts afterwards in a few
large matrix products. Padded steps get ``e = 1``, which leaves every message unchanged,
so no per-step masking is needed. The tests hold the two to 1e-12.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .._checks import check_lengths
from ..cells.hmm import GaussianHMMFilterCell, HMMFilterCell
from ..engines.scan import log_linear_recurrence, log_matmul
from ..layers import Recurrent

__all__ = [
    "CategoricalHMM",
    "GaussianHMM",
    "FilterResult",
    "HMMSample",
    "SmootherResult",
    "ViterbiResult",
    "hmm_filter",
    "hmm_parallel_filter",
    "hmm_parallel_log_likelihood",
    "hmm_sample",
    "hmm_smoother",
    "hmm_viterbi",
]


class FilterResult(NamedTuple):
    filtered: Tensor          # (B, T, K) p(z_t | x_{1:t}); zero past each length
    log_normalizers: Tensor   # (B, T)    log p(x_t | x_{1:t-1}); zero past each length
    log_likelihood: Tensor    # (B,)      log p(x_{1:L})


class SmootherResult(NamedTuple):
    posterior: Tensor         # (B, T, K)       p(z_t | x_{1:L}); zero past each length
    pairwise: Tensor | None   # (B, T-1, K, K)  p(z_t, z_{t+1} | x_{1:L}); zero past each length
    log_likelihood: Tensor    # (B,)


class ViterbiResult(NamedTuple):
    path: Tensor              # (B, T) long, most likely states; -1 past each length
    log_prob: Tensor          # (B,)   log p(x_{1:L}, path)


class HMMSample(NamedTuple):
    states: Tensor            # (N, T) long
    symbols: Tensor           # (N, T) long for a categorical HMM, (N, T, D) float for a Gaussian one


# ----- validation -------------------------------------------------------------
def _check_float(owner: str, name: str, t) -> None:
    if not isinstance(t, Tensor) or not t.is_floating_point():
        raise ValueError(f"{owner}: {name} must be a floating-point tensor, got "
                         f"{t.dtype if isinstance(t, Tensor) else type(t).__name__}")


def _normalize_chain(owner: str, log_pi: Tensor, log_P: Tensor):
    _check_float(owner, "log_pi", log_pi)
    _check_float(owner, "log_P", log_P)
    if log_pi.dim() != 1:
        raise ValueError(f"{owner}: log_pi must be (K,), got shape {tuple(log_pi.shape)}")
    k = log_pi.shape[0]
    if log_P.shape != (k, k):
        raise ValueError(f"{owner}: log_P must be (K, K) = ({k}, {k}), got shape {tuple(log_P.shape)}")
    return torch.log_softmax(log_pi, -1), torch.log_softmax(log_P, -1)


def _normalize(owner: str, log_pi: Tensor, log_P: Tensor, log_C: Tensor):
    log_pi, log_P = _normalize_chain(owner, log_pi, log_P)
    _check_float(owner, "log_C", log_C)
    k = log_pi.shape[0]
    if log_C.dim() != 2 or log_C.shape[0] != k:
        raise ValueError(f"{owner}: log_C must be (K, V) with K = {k}, got shape {tuple(log_C.shape)}")
    return log_pi, log_P, torch.log_softmax(log_C, -1)


def _lengths_and_mask(owner: str, lengths, b: int, t: int, device):
    lengths = check_lengths(owner, lengths, b, t)                # the layers' own check
    lengths = (torch.full((b,), t, dtype=torch.long, device=device) if lengths is None
               else lengths.to(device))
    return lengths, torch.arange(t, device=device).unsqueeze(0) < lengths.unsqueeze(1)   # (B, T)


def _check_symbols(owner: str, symbols: Tensor, lengths, num_symbols: int, device):
    """Validate ``symbols`` (B, T) and ``lengths``; return (symbols clamped at padding, lengths, mask (B, T))."""
    if not isinstance(symbols, Tensor) or symbols.dtype not in (torch.int64, torch.int32, torch.int16,
                                                                torch.int8, torch.uint8):
        raise ValueError(f"{owner}: symbols must be an integer tensor (B, T), got "
                         f"{symbols.dtype if isinstance(symbols, Tensor) else type(symbols).__name__}")
    if symbols.dim() != 2:
        raise ValueError(f"{owner}: symbols must be (B, T), got shape {tuple(symbols.shape)}")
    b, t = symbols.shape
    if b == 0 or t == 0:
        raise ValueError(f"{owner}: empty input; symbols must have at least one sequence and one step, "
                         f"got shape {tuple(symbols.shape)}")
    symbols = symbols.to(device=device, dtype=torch.long)
    lengths, mask = _lengths_and_mask(owner, lengths, b, t, device)
    valid = symbols[mask]
    lo, hi = int(valid.min()), int(valid.max())
    if lo < 0 or hi >= num_symbols:
        raise ValueError(f"{owner}: symbols must lie in [0, V) = [0, {num_symbols}), got {lo if lo < 0 else hi}")
    return torch.where(mask, symbols, torch.zeros_like(symbols)), lengths, mask


def _check_observations(owner: str, x: Tensor, lengths, num_features: int, like: Tensor):
    """Validate real observations ``x`` (B, T, D); return (x with zeros at padding, lengths, mask)."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"{owner}: observations must be a floating-point tensor (B, T, {num_features}), got "
                         f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}")
    if x.dim() != 3 or x.shape[-1] != num_features:
        raise ValueError(f"{owner}: observations must be (B, T, D) with D = {num_features}, "
                         f"got shape {tuple(x.shape)}")
    b, t, _ = x.shape
    if b == 0 or t == 0:
        raise ValueError(f"{owner}: empty input; observations must have at least one sequence and one step, "
                         f"got shape {tuple(x.shape)}")
    x = x.to(device=like.device, dtype=like.dtype)
    lengths, mask = _lengths_and_mask(owner, lengths, b, t, like.device)
    x = torch.where(mask.unsqueeze(-1), x, torch.zeros_like(x))
    if not torch.isfinite(x).all():
        raise ValueError(f"{owner}: observations hold NaN or infinite values inside the sequences' lengths")
    return x, lengths, mask


class _Emissions:
    """``log p(x_t | z_t = k)`` for every step, in the two forms the recursions want.

    ``log()`` is (B, T, K) for the reference and log-space routines; ``scaled()`` is
    ``(e, shift)`` for the fast ones: ``e`` (T, B, K) time-major likelihoods divided by
    ``exp(shift)`` (shift (T, B), or None when no shift is needed) and exactly 1 at
    padded steps."""

    def __init__(self, log_e: Tensor, mask: Tensor):
        self._log, self.mask = log_e, mask

    @property
    def requires_grad(self) -> bool:
        return self._log.requires_grad

    def log(self) -> Tensor:
        return self._log

    def scaled(self, out: Tensor | None = None):
        with torch.no_grad():
            maskT = self.mask.t()
            log_e = self._log.detach().transpose(0, 1)
            shift = log_e.amax(-1).masked_fill_(~maskT, 0.0)
            e = torch.exp(log_e - shift.unsqueeze(-1)).masked_fill_(~maskT.unsqueeze(-1), 1.0)
            return e.contiguous(), shift


class _CategoricalEmissions(_Emissions):
    """``log C[:, x_t]``; the fast form is one gather from ``Cᵀ`` with a row of ones for padding."""

    def __init__(self, log_C: Tensor, symbols: Tensor, mask: Tensor):
        self.log_C, self.symbols, self.mask = log_C, symbols, mask

    @property
    def requires_grad(self) -> bool:
        return self.log_C.requires_grad

    def log(self) -> Tensor:
        return self.log_C.t()[self.symbols]

    def scaled(self, out: Tensor | None = None):
        with torch.no_grad():
            v, k = self.log_C.shape[1], self.log_C.shape[0]
            table = torch.cat([self.log_C.detach().exp().t(), self.log_C.new_ones(1, k)])
            index = self.symbols if bool(self.mask.all()) else self.symbols.masked_fill(~self.mask, v)
            t, b = index.shape[1], index.shape[0]
            if out is None:
                out = table.new_empty(t, b, k)
            torch.index_select(table, 0, index.t().reshape(-1), out=out.view(t * b, k))
            return out, None


# ----- the reference recursions (autograd) ------------------------------------------
def _reference_filter(log_pi: Tensor, log_P: Tensor, log_e: Tensor, mask: Tensor):
    """Step-by-step scaled forward pass on log-emissions (B, T, K): (filtered, log normalizers)."""
    P = log_P.exp()
    shift = log_e.amax(-1, keepdim=True).detach()
    e = (log_e - shift).exp()
    b, t, _ = log_e.shape
    alpha = log_pi.exp().unsqueeze(0).expand(b, -1)                       # predictive (B, K)
    filtered, lognorm = [], []
    for s in range(t):
        c = alpha * e[:, s]
        z = c.sum(-1, keepdim=True)
        f = c / z
        m = mask[:, s].unsqueeze(-1)
        filtered.append(torch.where(m, f, torch.zeros_like(f)))
        lognorm.append(torch.where(m, z.log() + shift[:, s], torch.zeros_like(z)).squeeze(-1))
        alpha = torch.where(m, f @ P, alpha)
    return torch.stack(filtered, 1), torch.stack(lognorm, 1)


def _reference_smoother(log_pi: Tensor, log_P: Tensor, log_e: Tensor, mask: Tensor) -> SmootherResult:
    """Step-by-step scaled forward–backward; the twin the fast smoother is tested against."""
    filtered, lognorm = _reference_filter(log_pi, log_P, log_e, mask)
    P = log_P.exp()
    b, t, k = filtered.shape
    shift = log_e.amax(-1, keepdim=True)
    e = (log_e - shift).exp()
    z = (lognorm - shift.squeeze(-1)).exp()                               # scaled normalizers
    beta = torch.ones(b, k, dtype=filtered.dtype, device=filtered.device)
    betas, xis = [beta], []
    for s in range(t - 2, -1, -1):
        nxt = mask[:, s + 1]                                              # step s+1 exists
        w = e[:, s + 1] * beta / torch.where(nxt, z[:, s + 1], torch.ones_like(z[:, s + 1])).unsqueeze(-1)
        xi = filtered[:, s].unsqueeze(-1) * P.unsqueeze(0) * w.unsqueeze(1)
        xis.append(torch.where(nxt.view(b, 1, 1), xi, torch.zeros_like(xi)))
        beta = torch.where(nxt.unsqueeze(-1), w @ P.t(), torch.ones_like(beta))
        betas.append(beta)
    betas.reverse()
    xis.reverse()
    posterior = filtered * torch.stack(betas, 1)                          # filtered is 0 at padding
    pairwise = torch.stack(xis, 1) if xis else filtered.new_zeros(b, 0, k, k)
    return SmootherResult(posterior, pairwise, lognorm.sum(1))


# ----- the fast recursions (no gradient) ----------------------------------------------
class _Passes(NamedTuple):
    filtered: Tensor          # (B, T, K), zero at padding
    log_normalizers: Tensor   # (B, T), zero at padding
    log_likelihood: Tensor    # (B,)
    posterior: Tensor | None  # (B, T, K)
    pairwise: Tensor | None   # (B, T-1, K, K)
    transitions: Tensor | None  # (K, K) Σ_b Σ_t ξ_t


_RENORMALIZE_EVERY = 8   # steps between renormalizations of the fast recursions
_SMALLEST_SUM = 1e-200   # below this a message may have lost digits: rerun renormalizing every step


def _array_ops(like: Tensor):
    """``(module, view)`` for the recursions' loops: NumPy and a zero-copy ``.numpy()`` view for
    CPU tensors (a third of torch's per-call overhead), torch itself on other devices."""
    if like.device.type == "cpu":
        return np, Tensor.numpy
    return torch, (lambda u: u)


def _buffer(workspace: dict | None, name: str, like: Tensor) -> Tensor:
    """A (T, B, K) buffer like ``like``, reused from ``workspace`` across calls of the same shape
    (fresh pages cost more than the recursions themselves at these sizes)."""
    if workspace is None:
        return torch.empty_like(like, memory_format=torch.contiguous_format)
    buf = workspace.get(name)
    if buf is None or buf.shape != like.shape or buf.dtype != like.dtype or buf.device != like.device:
        buf = workspace[name] = torch.empty_like(like, memory_format=torch.contiguous_format)
    return buf


def _fast_passes(log_pi: Tensor, log_P: Tensor, em: _Emissions, *, backward: bool,
                 pairwise: bool = False, every: int = _RENORMALIZE_EVERY,
                 workspace: dict | None = None) -> _Passes:
    """Forward (and backward) recursions without autograd.

    Messages are kept unnormalized between renormalizations every ``every`` steps, so a
    step is one elementwise product and one (B, K) × (K, K) product on preallocated
    time-major buffers (NumPy arrays sharing memory with the tensors on the CPU).
    Since the rows of ``P`` sum to one, the scale a message picks up between two steps
    *is* the normalizer ``z_t``, recovered afterwards from the stored sums. If any
    message sum falls below 1e-200 the pass is rerun renormalizing at every step.

    The summed pairwise counts need ``n_t = Σ_ij α̂_t(i) P_ij e_{t+1}(j) β_{t+1}(j)``, which
    equals ``z_{t+1} Σ_j α̂_{t+1}(j) β_{t+1}(j)``: the normalizer times the sum that
    normalizes ``γ_{t+1}``, so it costs nothing extra. ``workspace`` (a dict) keeps the
    buffers between calls, as EM does; results then share memory with those buffers
    and are overwritten by the next call with the same workspace.
    """
    with torch.no_grad():
        mask = em.mask
        full = bool(mask.all())
        b, t = mask.shape
        k = log_pi.shape[0]
        out = None if workspace is None else _buffer(workspace, "e", log_pi.new_empty(t, b, k))
        e, shift = em.scaled(out)                                         # (T, B, K), (T, B) | None
        e = e.contiguous()
        P, pi = log_P.detach().exp(), log_pi.detach().exp()
        xp, as_x = _array_ops(e)
        E, Pm, PT = as_x(e), as_x(P.contiguous()), as_x(P.t().contiguous())

        a_t = _buffer(workspace, "a", e)
        a = as_x(a_t)
        logscale_t = e.new_zeros(t, b)
        logscale = as_x(logscale_t)
        pred = as_x(pi.unsqueeze(0).expand(b, k).contiguous())
        for s in range(t):
            xp.multiply(pred, E[s], out=a[s])
            if s % every == every - 1 or s == t - 1:
                total = a[s].sum(-1)
                a[s] /= total[:, None]
                logscale[s] = xp.log(total)
            if s < t - 1:
                xp.matmul(a[s], Pm, out=pred)
        sums = a_t.sum(-1)                                                # (T, B)
        if every > 1 and (float(sums.min()) < _SMALLEST_SUM or not bool(torch.isfinite(logscale_t).all())):
            return _fast_passes(log_pi, log_P, em, backward=backward, pairwise=pairwise, every=1,
                                workspace=workspace)
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

        beta_t, w_t = _buffer(workspace, "beta", e), _buffer(workspace, "w", e)   # w_t = e_t ⊙ β_t, t ≥ 1
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


def _fast_log_likelihood(log_pi: Tensor, log_P: Tensor, em: _Emissions, every: int = _RENORMALIZE_EVERY) -> Tensor:
    """``log p(x_{1:L})`` (B,) by the forward recursion alone, keeping only the current message."""
    with torch.no_grad():
        e, shift = em.scaled()
        e = e.contiguous()
        t, b, k = e.shape
        P, pi = log_P.detach().exp(), log_pi.detach().exp()
        xp, as_x = _array_ops(e)
        E, Pm = as_x(e), as_x(P.contiguous())
        pred = as_x(pi.unsqueeze(0).expand(b, k).contiguous())
        a = as_x(e.new_empty(b, k))
        loglik = e.new_zeros(b)
        logscale = as_x(loglik)
        smallest = math.inf
        for s in range(t):
            xp.multiply(pred, E[s], out=a)
            if s % every == every - 1 or s == t - 1:
                total = a.sum(-1)
                smallest = min(smallest, float(total.min()))
                a /= total[:, None]
                logscale += xp.log(total)
            if s < t - 1:
                xp.matmul(a, Pm, out=pred)
        if every > 1 and not smallest >= _SMALLEST_SUM:
            return _fast_log_likelihood(log_pi, log_P, em, every=1)
        return loglik if shift is None else loglik + shift.sum(0)          # loglik shares logscale's memory


def _needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _filter(log_pi, log_P, em: _Emissions) -> FilterResult:
    if _needs_grad(log_pi, log_P, em):
        filtered, lognorm = _reference_filter(log_pi, log_P, em.log(), em.mask)
        return FilterResult(filtered, lognorm, lognorm.sum(1))
    r = _fast_passes(log_pi, log_P, em, backward=False)
    return FilterResult(r.filtered, r.log_normalizers, r.log_likelihood)


def _smoother(log_pi, log_P, em: _Emissions) -> SmootherResult:
    r = _fast_passes(log_pi, log_P, em, backward=True, pairwise=True)
    return SmootherResult(r.posterior, r.pairwise, r.log_likelihood)


def _viterbi(log_pi, log_P, em: _Emissions) -> ViterbiResult:
    le, mask = em.log(), em.mask
    b, t, k = le.shape
    delta = log_pi.unsqueeze(0) + le[:, 0]
    keep = torch.arange(k, device=le.device).expand(b, k)
    pointers = []
    for s in range(1, t):
        best, arg = (delta.unsqueeze(-1) + log_P.unsqueeze(0)).max(dim=1)   # over previous state
        m = mask[:, s].unsqueeze(-1)
        delta = torch.where(m, best + le[:, s], delta)
        pointers.append(torch.where(m, arg, keep))
    log_prob, state = delta.max(dim=-1)
    path = [state]
    for ptr in reversed(pointers):
        state = ptr.gather(1, state.unsqueeze(1)).squeeze(1)
        path.append(state)
    path.reverse()
    path = torch.stack(path, 1)
    return ViterbiResult(torch.where(mask, path, torch.full_like(path, -1)), log_prob)


_LOG_ZERO = -1e30   # a finite log 0, so that gradients through the log-space products stay finite


def _transfer_matrices(log_pi, log_P, le, mask) -> Tensor:
    """``M_1(i, j) = log π_j + log e_1(j)`` (rows alike), ``M_t(i, j) = log P_ij + log e_t(j)``,
    and the log identity past each length: (B, T, K, K)."""
    b, t, k = le.shape
    eye = torch.full((k, k), _LOG_ZERO, dtype=le.dtype, device=le.device).fill_diagonal_(0.0)
    mats = log_P.unsqueeze(0).unsqueeze(0) + le.unsqueeze(2)
    first = (log_pi + le[:, 0]).unsqueeze(1).expand(b, k, k)
    mats = torch.cat([first.unsqueeze(1), mats[:, 1:]], 1)
    return torch.where(mask.view(b, t, 1, 1), mats, eye)


def _parallel_log_likelihood(log_pi, log_P, em: _Emissions) -> Tensor:
    mats = _transfer_matrices(log_pi, log_P, em.log(), em.mask)
    b, _, k, _ = mats.shape
    eye = torch.full((k, k), _LOG_ZERO, dtype=mats.dtype, device=mats.device).fill_diagonal_(0.0)
    while mats.shape[1] > 1:
        if mats.shape[1] % 2:
            mats = torch.cat([mats, eye.expand(b, 1, k, k)], 1)
        mats = log_matmul(mats[:, 0::2], mats[:, 1::2])
    return torch.logsumexp(mats[:, 0, 0], dim=-1)


def _parallel_filter(log_pi, log_P, em: _Emissions) -> FilterResult:
    mask = em.mask
    mats = _transfer_matrices(log_pi, log_P, em.log(), mask)
    first = mats[:, 0, 0]                                                  # log α_1 (B, K)
    log_alpha = torch.cat([first.unsqueeze(1), log_linear_recurrence(mats[:, 1:], first)], 1)   # (B, T, K)
    cum = torch.logsumexp(log_alpha, -1)                                   # ℓ_t
    filtered = torch.exp(log_alpha - cum.unsqueeze(-1)) * mask.unsqueeze(-1)
    lognorm = torch.diff(cum, dim=1, prepend=torch.zeros_like(cum[:, :1])) * mask
    return FilterResult(filtered, lognorm, lognorm.sum(1))


# ----- categorical functions ----------------------------------------------------------
def _categorical(owner, log_pi, log_P, log_C, symbols, lengths):
    log_pi, log_P, log_C = _normalize(owner, log_pi, log_P, log_C)
    symbols, lengths, mask = _check_symbols(owner, symbols, lengths, log_C.shape[1], log_pi.device)
    return log_pi, log_P, _CategoricalEmissions(log_C, symbols, mask)


def hmm_filter(log_pi: Tensor, log_P: Tensor, log_C: Tensor, symbols: Tensor, lengths=None) -> FilterResult:
    """Normalized forward filter. Returns filtered marginals (B, T, K), log normalizers (B, T)
    and ``log p(x_{1:L})`` (B,) = the sum of the log normalizers.

    Differentiable (the step-by-step recursion) when a parameter requires a gradient;
    otherwise the fast recursion."""
    return _filter(*_categorical("hmm_filter", log_pi, log_P, log_C, symbols, lengths))


def hmm_smoother(log_pi: Tensor, log_P: Tensor, log_C: Tensor, symbols: Tensor, lengths=None) -> SmootherResult:
    """Scaled forward–backward: posterior marginals ``γ`` (B, T, K) and pairwise marginals ``ξ`` (B, T-1, K, K).

    Not differentiable (no gradient flows back); the gradient of the log-likelihood
    from :func:`hmm_filter` already *is* the expected counts (see the module docs)."""
    return _smoother(*_categorical("hmm_smoother", log_pi, log_P, log_C, symbols, lengths))


def hmm_viterbi(log_pi: Tensor, log_P: Tensor, log_C: Tensor, symbols: Tensor, lengths=None) -> ViterbiResult:
    """Most likely state path by max-product in log space: ``δ_t(j) = max_i δ_{t-1}(i) + log P_ij + log C[j, x_t]``.

    Ties go to the lowest state index. Positions past each length hold -1."""
    return _viterbi(*_categorical("hmm_viterbi", log_pi, log_P, log_C, symbols, lengths))


def _check_sample_sizes(owner, num_sequences, length):
    for name, v in (("num_sequences", num_sequences), ("length", length)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{owner}: {name} must be a positive integer, got {v!r}")


def _sample_states(log_pi, log_P, num_sequences, length, generator) -> Tensor:
    pi, P = log_pi.exp(), log_P.exp()
    state = torch.multinomial(pi.expand(num_sequences, -1), 1, generator=generator).squeeze(1)
    states = [state]
    for _ in range(length - 1):
        state = torch.multinomial(P[state], 1, generator=generator).squeeze(1)
        states.append(state)
    return torch.stack(states, 1)


def hmm_sample(log_pi: Tensor, log_P: Tensor, log_C: Tensor, num_sequences: int, length: int,
               generator: torch.Generator | None = None) -> HMMSample:
    """Draw ``num_sequences`` state/symbol sequences of ``length`` steps by ancestral sampling."""
    owner = "hmm_sample"
    log_pi, log_P, log_C = _normalize(owner, log_pi, log_P, log_C)
    _check_sample_sizes(owner, num_sequences, length)
    states = _sample_states(log_pi, log_P, num_sequences, length, generator)
    probs = log_C.exp()[states.reshape(-1)]
    symbols = torch.multinomial(probs, 1, generator=generator).view(num_sequences, length)
    return HMMSample(states, symbols)


def hmm_parallel_log_likelihood(log_pi: Tensor, log_P: Tensor, log_C: Tensor, symbols: Tensor,
                                lengths=None) -> Tensor:
    """``log p(x_{1:L})`` (B,) by a pairwise reduction tree of log-space K×K matrices (depth ⌈log₂ T⌉).

    ``M_1(i, j) = log π_j + log C[j, x_1]`` (every row alike), ``M_t(i, j) = log P_ij + log C[j, x_t]``,
    and ``M_t`` is the log identity past a sequence's end; ``log p = logsumexp_j (M_1 ⊗ … ⊗ M_T)(0, j)``
    with ``⊗`` the associative log-semiring product (:func:`rnnkit.engines.scan.log_matmul`). The
    log identity uses a large finite negative number instead of ``-inf`` so gradients stay finite."""
    return _parallel_log_likelihood(*_categorical("hmm_parallel_log_likelihood", log_pi, log_P, log_C,
                                                  symbols, lengths))


def hmm_parallel_filter(log_pi: Tensor, log_P: Tensor, log_C: Tensor, symbols: Tensor,
                        lengths=None) -> FilterResult:
    """The forward filter at every step by a parallel scan over time.

    The unnormalized forward messages obey ``log α_t = log α_{t-1} ⊗ M_t`` with the
    matrices ``M_t`` of :func:`hmm_parallel_log_likelihood`, a linear recurrence in
    the log semiring; :func:`~rnnkit.engines.scan.log_linear_recurrence` computes all
    of them at once (sequential inside chunks of 16 steps, all chunks together, then
    the chunks' composed maps one level up: ``O(L log_L T)`` rounds instead of ``T``
    steps, ``O(T K³)`` work instead of ``O(T K²)``). ``ℓ_t = logsumexp α_t`` and the
    filtered marginal is ``softmax(log α_t)``. Same result as :func:`hmm_filter`.
    Differentiable."""
    return _parallel_filter(*_categorical("hmm_parallel_filter", log_pi, log_P, log_C, symbols, lengths))


# ----- modules -------------------------------------------------------------------
def _check_probabilities(owner: str, name: str, p, shape: tuple, dtype, device) -> Tensor:
    """A non-negative array of ``shape`` whose last axis sums to one; returns it as a tensor."""
    what = "a probability vector" if len(shape) == 1 else "row-stochastic (each row a probability vector)"
    try:
        p = torch.as_tensor(p, dtype=dtype, device=device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{owner}: {name} must be a tensor or array of shape {shape}, "
                         f"got {type(p).__name__} ({err})") from None
    if tuple(p.shape) != shape:
        raise ValueError(f"{owner}: {name} must have shape {shape}, got {tuple(p.shape)}")
    if not torch.isfinite(p).all() or (p < 0).any():
        raise ValueError(f"{owner}: {name} must be {what} with finite non-negative entries, "
                         f"got a negative or non-finite entry")
    sums = p.sum(-1).reshape(-1)
    bad = ((sums - 1).abs() > 1e-6).nonzero()
    if len(bad):
        i = int(bad[0])
        where = "" if len(shape) == 1 else f"row {i} "
        raise ValueError(f"{owner}: {name} must be {what}; its {where}sums to {float(sums[i]):.6g}, "
                         f"not 1 (divide by the sum to normalize)")
    return p


def _check_iterations(owner: str, name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{owner}: {name} must be a non-negative integer, got {value!r}")


class _HMM(nn.Module):
    """What the categorical and Gaussian HMMs share: inference, EM's chain updates, gradient fitting.

    A subclass holds its parameters in ``self.cell`` (a filter cell) and provides
    ``_prepare(owner, observations, lengths) -> (log π, log P, emissions, observations)`` (the
    emissions as an ``_Emissions``, which also carries the padding mask),
    ``_emission_update(posterior, observations)`` (EM's M-step for the emissions) and
    ``_cell_inputs(observations)`` (what the filter cell reads).
    """

    cell: nn.Module

    def __init__(self, cell: nn.Module):
        super().__init__()
        self.cell = cell
        self.recurrent = Recurrent(cell, engine="loop", name=type(self).__name__)

    @property
    def num_states(self) -> int:
        return self.cell.num_states

    # ----- inference -----------------------------------------------------------
    def log_likelihood(self, observations: Tensor, lengths=None) -> Tensor:
        """``log p(x_{1:L})`` (B,) by running the filter cell through :class:`rnnkit.Recurrent`
        (the RNN form; differentiable): the final cumulative log normalizer."""
        owner = f"{type(self).__name__}.log_likelihood"
        _, _, em, obs = self._prepare(owner, observations, lengths, need_emissions=False)
        mask = em.mask
        _, (_, loglik) = self.recurrent(self._cell_inputs(obs), lengths=mask.sum(1).cpu())
        return loglik.squeeze(-1)

    @torch.no_grad()
    def score(self, observations: Tensor, lengths=None) -> float:
        """Total log-likelihood of all sequences by the fast recursion (no gradient), as hmmlearn's ``score``."""
        return float(_fast_log_likelihood(*self._prepare(f"{type(self).__name__}.score", observations,
                                                         lengths)[:3]).sum())

    def filter(self, observations: Tensor, lengths=None) -> FilterResult:
        return _filter(*self._prepare(f"{type(self).__name__}.filter", observations, lengths)[:3])

    def smoother(self, observations: Tensor, lengths=None) -> SmootherResult:
        return _smoother(*self._prepare(f"{type(self).__name__}.smoother", observations, lengths)[:3])

    def viterbi(self, observations: Tensor, lengths=None) -> ViterbiResult:
        return _viterbi(*self._prepare(f"{type(self).__name__}.viterbi", observations, lengths)[:3])

    def parallel_log_likelihood(self, observations: Tensor, lengths=None) -> Tensor:
        return _parallel_log_likelihood(
            *self._prepare(f"{type(self).__name__}.parallel_log_likelihood", observations, lengths)[:3])

    def parallel_filter(self, observations: Tensor, lengths=None) -> FilterResult:
        return _parallel_filter(*self._prepare(f"{type(self).__name__}.parallel_filter", observations, lengths)[:3])

    # ----- fitting ---------------------------------------------------------------
    @torch.no_grad()
    def fit_em(self, observations: Tensor, lengths=None, iterations: int = 10,
               tolerance: float | None = None) -> list[float]:
        """Baum–Welch. Each iteration: E-step (the fast forward–backward) then the M-step
        ``π ∝ Σ_b γ_1``, ``P_ij ∝ Σ ξ_t(i, j)`` and the emissions' own update.

        Returns the total log-likelihoods (summed over the batch) before the first
        update and after each one: ``iterations + 1`` numbers, unless the gain of an
        iteration falls below ``tolerance`` (then it stops early). EM guarantees they
        never decrease. A state no sequence visits keeps its old rows rather than
        becoming 0/0."""
        owner = f"{type(self).__name__}.fit_em"
        _check_iterations(owner, "iterations", iterations)
        if tolerance is not None and not tolerance >= 0:
            raise ValueError(f"{owner}: tolerance must be None or >= 0, got {tolerance}")
        history: list[float] = []
        workspace: dict = {}
        for it in range(iterations + 1):
            log_pi, log_P, em, obs = self._prepare(owner, observations, lengths)
            r = _fast_passes(log_pi, log_P, em, backward=True, workspace=workspace)
            history.append(float(r.log_likelihood.sum()))
            if it == iterations or (tolerance is not None and len(history) > 1
                                    and history[-1] - history[-2] < tolerance):
                break
            tiny = torch.finfo(r.posterior.dtype).tiny
            start = r.posterior[:, 0].sum(0)
            rows = r.transitions.sum(-1, keepdim=True)
            P_new = torch.where(rows > 0, r.transitions / rows.clamp_min(tiny), log_P.exp())
            self.cell.log_initial.copy_((start / start.sum()).clamp_min(tiny).log())
            self.cell.log_transition.copy_(P_new.clamp_min(tiny).log())
            self._emission_update(r.posterior, obs)
        return history

    def fit_gradient(self, observations: Tensor, lengths=None, epochs: int = 10, lr: float = 0.05,
                     batch_size: int | None = None, optimizer: str = "adam",
                     generator: torch.Generator | None = None) -> list[float]:
        """Maximise the log-likelihood by gradient ascent through the RNN form (autograd).

        Each epoch shuffles the sequences into minibatches of ``batch_size`` (all of
        them by default) and takes one ``optimizer`` step (``"adam"`` or ``"sgd"``) per
        minibatch on the mean negative log-likelihood per observed step. Returns the
        total log-likelihood before training and after every epoch (``epochs + 1``
        numbers), comparable with :meth:`fit_em`'s history."""
        owner = f"{type(self).__name__}.fit_gradient"
        _check_iterations(owner, "epochs", epochs)
        if not lr > 0:
            raise ValueError(f"{owner}: lr must be > 0, got {lr}")
        optimizers = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}
        if optimizer not in optimizers:
            raise ValueError(f"{owner}: optimizer must be one of {sorted(optimizers)}, got {optimizer!r}")
        _, _, em, obs = self._prepare(owner, observations, lengths, need_emissions=False)
        mask = em.mask
        n = obs.shape[0]
        if batch_size is None:
            batch_size = n
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"{owner}: batch_size must be a positive integer, got {batch_size!r}")
        lengths_all = mask.sum(1)
        opt = optimizers[optimizer](self.parameters(), lr=lr)
        history = [self.score(obs, lengths_all)]
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator)
            for i in range(0, n, batch_size):
                idx = order[i:i + batch_size]
                loss = -self.log_likelihood(obs[idx], lengths_all[idx]).sum() / lengths_all[idx].sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
            history.append(self.score(obs, lengths_all))
        return history

    def extra_repr(self) -> str:
        return self.cell.extra_repr()


class CategoricalHMM(_HMM):
    """A categorical HMM whose parameters live in an :class:`~rnnkit.cells.HMMFilterCell`.

    ``log_likelihood`` runs the filter cell through :class:`rnnkit.Recurrent` (the RNN form,
    differentiable); ``parallel_log_likelihood`` and ``parallel_filter`` compute the same
    numbers by log-depth products; ``fit_em`` runs Baum–Welch on the fast smoother's expected
    counts and ``fit_gradient`` climbs the likelihood with Adam or SGD.

    >>> import torch
    >>> hmm = CategoricalHMM.from_probabilities([0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]],
    ...                                         [[0.7, 0.3], [0.1, 0.9]])
    >>> round(hmm.score(torch.tensor([[0, 0, 1, 1]])), 4)
    -3.1593
    """

    def __init__(self, num_states: int, num_symbols: int, *, device=None, dtype=None):
        super().__init__(HMMFilterCell(num_states, num_symbols, device=device, dtype=dtype))

    @classmethod
    def from_probabilities(cls, initial, transition, emission, *, device=None, dtype=torch.float64):
        """An HMM with the given ``π`` (K,), ``P`` (K, K) and ``C`` (K, V), checked to be stochastic."""
        owner = f"{cls.__name__}.from_probabilities"
        first = torch.as_tensor(initial) if not isinstance(initial, Tensor) else initial
        if first.dim() != 1 or first.shape[0] < 1:
            raise ValueError(f"{owner}: initial must be a vector (K,), got shape {tuple(first.shape)}")
        k = first.shape[0]
        em = torch.as_tensor(emission) if not isinstance(emission, Tensor) else emission
        if em.dim() != 2 or em.shape[0] != k or em.shape[1] < 1:
            raise ValueError(f"{owner}: emission must be (K, V) with K = {k}, got shape {tuple(em.shape)}")
        model = cls(k, em.shape[1], device=device, dtype=dtype)
        model.set_probabilities(initial, transition, emission)
        return model

    @torch.no_grad()
    def set_probabilities(self, initial, transition, emission) -> None:
        """Replace ``π``, ``P`` and ``C``; each must be non-negative with rows summing to one."""
        owner = f"{type(self).__name__}.set_probabilities"
        k, v = self.num_states, self.num_symbols
        like = self.cell.log_initial
        probs = [_check_probabilities(owner, name, p, shape, like.dtype, like.device)
                 for name, p, shape in (("initial", initial, (k,)), ("transition", transition, (k, k)),
                                        ("emission", emission, (k, v)))]
        tiny = torch.finfo(like.dtype).tiny
        for param, p in zip(self.log_params(), probs):
            param.copy_(p.clamp_min(tiny).log())

    @property
    def num_symbols(self) -> int:
        return self.cell.num_symbols

    def log_params(self):
        """``(log_initial, log_transition, log_emission)`` of the cell (unconstrained)."""
        return self.cell.log_initial, self.cell.log_transition, self.cell.log_emission

    def _prepare(self, owner, symbols, lengths, need_emissions=True):   # the gather is lazy anyway
        log_pi, log_P, log_C = _normalize(owner, *self.log_params())
        symbols, lengths, mask = _check_symbols(owner, symbols, lengths, self.num_symbols, log_pi.device)
        return log_pi, log_P, _CategoricalEmissions(log_C, symbols, mask), symbols

    def _cell_inputs(self, symbols):
        return F.one_hot(symbols, self.num_symbols).to(self.cell.log_initial.dtype)

    def _emission_update(self, posterior, symbols):
        k, v = self.num_states, self.num_symbols
        counts = torch.zeros(v, k, dtype=posterior.dtype, device=posterior.device)
        # the fast passes are time-major: (T, B, K) is the contiguous view; posterior is 0 at padding
        counts.index_add_(0, symbols.t().reshape(-1), posterior.transpose(0, 1).reshape(-1, k))
        counts = counts.t()
        rows = counts.sum(-1, keepdim=True)
        tiny = torch.finfo(posterior.dtype).tiny
        C = torch.where(rows > 0, counts / rows.clamp_min(tiny), self.cell.emission())
        self.cell.log_emission.copy_(C.clamp_min(tiny).log())

    def sample(self, num_sequences: int, length: int, generator=None) -> HMMSample:
        return hmm_sample(*self.log_params(), num_sequences, length, generator)


class GaussianHMM(_HMM):
    """An HMM with diagonal-Gaussian emissions ``N(x_t; μ_k, diag σ²_k)``; observations (B, T, D).

    The parameters live in a :class:`~rnnkit.cells.GaussianHMMFilterCell`: ``log_initial``,
    ``log_transition``, ``means`` (K, D) and ``log_variances`` (K, D). Everything of
    :class:`CategoricalHMM` works the same way; EM's emission update is the posterior-weighted
    mean and variance of the observations per state, with the variances floored at
    ``min_variance`` so that a state cannot collapse onto a single point. The means start
    at N(0, 1) draws; for data on another scale call :meth:`init_from_data` first (or give
    the parameters with :meth:`from_parameters`).
    """

    def __init__(self, num_states: int, num_features: int, *, min_variance: float = 1e-6,
                 device=None, dtype=None):
        if not min_variance > 0:
            raise ValueError(f"GaussianHMM: min_variance must be > 0, got {min_variance}")
        super().__init__(GaussianHMMFilterCell(num_states, num_features, device=device, dtype=dtype))
        self.min_variance = float(min_variance)

    @classmethod
    def from_parameters(cls, initial, transition, means, variances, *, min_variance: float = 1e-6,
                        device=None, dtype=torch.float64):
        """An HMM with the given ``π`` (K,), ``P`` (K, K), means (K, D) and variances (K, D)."""
        owner = f"{cls.__name__}.from_parameters"
        mu = torch.as_tensor(means, dtype=dtype, device=device)
        if mu.dim() != 2 or min(mu.shape) < 1:
            raise ValueError(f"{owner}: means must be (K, D), got shape {tuple(mu.shape)}")
        model = cls(mu.shape[0], mu.shape[1], min_variance=min_variance, device=device, dtype=dtype)
        model.set_parameters(initial, transition, means, variances)
        return model

    @torch.no_grad()
    def set_parameters(self, initial, transition, means, variances) -> None:
        """Replace ``π``, ``P`` (checked stochastic), the means and the (positive) variances."""
        owner = f"{type(self).__name__}.set_parameters"
        k, d = self.num_states, self.num_features
        like = self.cell.log_initial
        pi = _check_probabilities(owner, "initial", initial, (k,), like.dtype, like.device)
        P = _check_probabilities(owner, "transition", transition, (k, k), like.dtype, like.device)
        mu = torch.as_tensor(means, dtype=like.dtype, device=like.device)
        var = torch.as_tensor(variances, dtype=like.dtype, device=like.device)
        for name, t in (("means", mu), ("variances", var)):
            if tuple(t.shape) != (k, d):
                raise ValueError(f"{owner}: {name} must have shape {(k, d)}, got {tuple(t.shape)}")
            if not torch.isfinite(t).all():
                raise ValueError(f"{owner}: {name} must be finite")
        if not (var > 0).all():
            raise ValueError(f"{owner}: variances must all be > 0, got {float(var.min()):.6g}")
        tiny = torch.finfo(like.dtype).tiny
        self.cell.log_initial.copy_(pi.clamp_min(tiny).log())
        self.cell.log_transition.copy_(P.clamp_min(tiny).log())
        self.cell.means.copy_(mu)
        self.cell.log_variances.copy_(var.log())

    @torch.no_grad()
    def init_from_data(self, observations: Tensor, lengths=None,
                       generator: torch.Generator | None = None) -> "GaussianHMM":
        """Start EM from the data: the means are K observations chosen by k-means++ seeding
        (the first at random, each next one with probability proportional to its squared
        distance from the nearest mean chosen so far, which spreads them over the data) and
        every variance is the overall variance of that feature (floored at ``min_variance``);
        ``π`` and ``P`` are left as they are. Returns ``self``."""
        owner = f"{type(self).__name__}.init_from_data"
        _, _, em, x = self._prepare(owner, observations, lengths, need_emissions=False)
        valid = x[em.mask]                                                 # (N, D)
        distinct = torch.unique(valid, dim=0)
        if distinct.shape[0] < self.num_states:
            raise ValueError(f"{owner}: need at least {self.num_states} distinct observations to place "
                             f"{self.num_states} means, got {distinct.shape[0]}")
        cpu = distinct.cpu()
        means = [cpu[torch.randint(cpu.shape[0], (1,), generator=generator)].squeeze(0)]
        nearest = ((cpu - means[0]) ** 2).sum(-1)
        for _ in range(1, self.num_states):
            pick = torch.multinomial(nearest, 1, generator=generator).squeeze(0)   # chosen points weigh 0
            means.append(cpu[pick])
            nearest = torch.minimum(nearest, ((cpu - means[-1]) ** 2).sum(-1))
        var = valid.var(0, unbiased=False).clamp_min(self.min_variance) if valid.shape[0] > 1 else \
            torch.ones_like(valid[0])
        self.cell.means.copy_(torch.stack(means).to(distinct.device))
        self.cell.log_variances.copy_(var.log().expand(self.num_states, -1))
        return self

    @property
    def num_features(self) -> int:
        return self.cell.num_features

    def log_params(self):
        """``(log_initial, log_transition, means, log_variances)`` of the cell."""
        return self.cell.log_initial, self.cell.log_transition, self.cell.means, self.cell.log_variances

    def _prepare(self, owner, x, lengths, need_emissions=True):
        log_pi, log_P = _normalize_chain(owner, self.cell.log_initial, self.cell.log_transition)
        x, lengths, mask = _check_observations(owner, x, lengths, self.num_features, log_pi)
        log_e = self.cell.log_emission_densities(x) if need_emissions else None
        return log_pi, log_P, _Emissions(log_e, mask), x

    def _cell_inputs(self, x):
        return x

    def _emission_update(self, posterior, x):
        k, d = self.num_states, self.num_features
        g = posterior.transpose(0, 1).reshape(-1, k)                       # time-major; zero at padding
        flat = x.transpose(0, 1).reshape(-1, d)
        weight = g.sum(0).unsqueeze(-1)                                    # (K, 1)
        seen = weight > 0
        w = weight.clamp_min(torch.finfo(g.dtype).tiny)
        mu = torch.where(seen, (g.t() @ flat) / w, self.cell.means)
        var = (g.t() @ (flat * flat)) / w - mu * mu
        var = torch.where(seen, var, self.cell.log_variances.exp()).clamp_min(self.min_variance)
        self.cell.means.copy_(mu)
        self.cell.log_variances.copy_(var.log())

    def sample(self, num_sequences: int, length: int, generator=None) -> HMMSample:
        """States (N, T) and observations (N, T, D) by ancestral sampling."""
        owner = "GaussianHMM.sample"
        log_pi, log_P = _normalize_chain(owner, self.cell.log_initial, self.cell.log_transition)
        _check_sample_sizes(owner, num_sequences, length)
        with torch.no_grad():
            states = _sample_states(log_pi, log_P, num_sequences, length, generator)
            mu, sd = self.cell.means[states], (0.5 * self.cell.log_variances[states]).exp()
            noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        return HMMSample(states, mu + sd * noise)

    def extra_repr(self) -> str:
        return f"{self.cell.extra_repr()}, min_variance={self.min_variance}"

