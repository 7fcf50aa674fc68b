"""HMM inference as pure functions of the log-parameters ``log_initial``, ``log_transition``,
``log_emission`` (see the package docstring for the maths): filter, smoother, Viterbi, sampling,
and the log-depth forms. Past :func:`_normalize` the normalized values go by their symbols,
``log_pi``, ``log_P``, ``log_C`` (log π, log P, log C).

One forward recursion per reason: :func:`_reference_filter` (differentiable, step by step, the
filter cell's own step), :func:`_fast_forward` (no gradient; the filter, the smoother and the
likelihood alone all run it) and the log-depth pair :func:`_parallel_filter` /
:func:`_parallel_log_likelihood`. Every fast path has a slow twin the tests hold it to."""
from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..._arguments import check_int
from ..._checks import check_lengths
from ...cells.hmm import filter_step
from ...engines.fused._cpu import NUMPY_DTYPES
from ...engines.fused.buffers import empty
from ...engines.scan import log_linear_recurrence, log_matmul

__all__ = [
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


def _normalize_chain(owner: str, log_initial: Tensor, log_transition: Tensor):
    """Check the chain's log-weights and return them normalized: ``(log π (K,), log P (K, K))``."""
    _check_float(owner, "log_initial", log_initial)
    _check_float(owner, "log_transition", log_transition)
    if log_initial.dim() != 1:
        raise ValueError(f"{owner}: log_initial must be (K,), got shape {tuple(log_initial.shape)}")
    k = log_initial.shape[0]
    if log_transition.shape != (k, k):
        raise ValueError(f"{owner}: log_transition must be (K, K) = ({k}, {k}), "
                         f"got shape {tuple(log_transition.shape)}")
    return torch.log_softmax(log_initial, -1), torch.log_softmax(log_transition, -1)


def _normalize(owner: str, log_initial: Tensor, log_transition: Tensor, log_emission: Tensor):
    """As :func:`_normalize_chain`, and ``log C`` (K, V) from ``log_emission``."""
    log_pi, log_P = _normalize_chain(owner, log_initial, log_transition)
    _check_float(owner, "log_emission", log_emission)
    k = log_pi.shape[0]
    if log_emission.dim() != 2 or log_emission.shape[0] != k:
        raise ValueError(f"{owner}: log_emission must be (K, V) with K = {k}, "
                         f"got shape {tuple(log_emission.shape)}")
    return log_pi, log_P, torch.log_softmax(log_emission, -1)


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
    padded steps, in a fresh buffer the caller may overwrite."""

    def __init__(self, log_e: Tensor, mask: Tensor):
        self._log, self.mask = log_e, mask

    @property
    def requires_grad(self) -> bool:
        return self._log.requires_grad

    def log(self) -> Tensor:
        return self._log

    def scaled(self):
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

    def scaled(self):
        with torch.no_grad():
            v, k = self.log_C.shape[1], self.log_C.shape[0]
            table = torch.cat([self.log_C.detach().exp().t(), self.log_C.new_ones(1, k)])
            index = self.symbols if bool(self.mask.all()) else self.symbols.masked_fill(~self.mask, v)
            t, b = index.shape[1], index.shape[0]
            out = empty(table, t, b, k)
            torch.index_select(table, 0, index.t().reshape(-1), out=out.view(t * b, k))
            return out, None


# ----- the reference recursions (autograd) ------------------------------------------
def _shifted(log_e: Tensor):
    """``(exp(log_e - shift), shift)`` with the per-step ``shift = max_k log e`` (B, T, 1), detached."""
    shift = log_e.amax(-1, keepdim=True).detach()
    return (log_e - shift).exp(), shift


def _reference_filter(log_pi: Tensor, log_P: Tensor, log_e: Tensor, mask: Tensor):
    """Step-by-step scaled forward pass on log-emissions (B, T, K): (filtered, log normalizers).

    Each step is the filter cell's own (:func:`rnnkit.cells.hmm.filter_step`); this loop keeps
    what the cell run through :class:`rnnkit.Recurrent` cannot give, the filtered marginal and the
    normalizer of every step (the cell's state is the *predictive* distribution and the running
    sum). The differentiable filter, and the slow twin of :func:`_fast_forward`."""
    P = log_P.exp()
    e, shift = _shifted(log_e)
    b, t, _ = log_e.shape
    alpha = log_pi.exp().unsqueeze(0).expand(b, -1)                       # predictive (B, K)
    filtered, lognorm = [], []
    for s in range(t):
        f, z, following = filter_step(alpha, e[:, s], P)
        m = mask[:, s].unsqueeze(-1)
        filtered.append(torch.where(m, f, torch.zeros_like(f)))
        lognorm.append(torch.where(m, z.log() + shift[:, s], torch.zeros_like(z)).squeeze(-1))
        alpha = torch.where(m, following, alpha)
    return torch.stack(filtered, 1), torch.stack(lognorm, 1)


def _reference_smoother(log_pi: Tensor, log_P: Tensor, log_e: Tensor, mask: Tensor) -> SmootherResult:
    """Step-by-step scaled forward–backward; the twin the fast smoother is tested against."""
    filtered, lognorm = _reference_filter(log_pi, log_P, log_e, mask)
    P = log_P.exp()
    b, t, k = filtered.shape
    e, shift = _shifted(log_e)
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


# The loops run on NumPy views of torch tensors where the fused engine's loops do (CPU float32/float64,
# its NUMPY_DTYPES: a third of torch's per-call overhead), on torch operations elsewhere. Their (T, B, K)
# buffers come from the fused engine's pool (engines.fused.buffers.empty): reused once no tensor holds
# them, freed by rnnkit.engines.release_memory(), measured as fast as the per-fit workspace they replace
# (fresh pages cost more than the recursions). The engine's NumpyOps/TorchOps are not used: ops_for
# picks them by the engine's settings and GEMM sizes, for its kernels; these loops need three ufuncs.
def _array_ops(like: Tensor):
    """``(module, view)`` the fast loops are written against: ``(numpy, Tensor.numpy)`` (a zero-copy
    view) or ``(torch, identity)``."""
    if like.device.type == "cpu" and like.dtype in NUMPY_DTYPES:
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


def _log_eye(k: int, like: Tensor) -> Tensor:
    """The identity of the log semiring (K, K): 0 on the diagonal, ``_LOG_ZERO`` elsewhere."""
    return torch.full((k, k), _LOG_ZERO, dtype=like.dtype, device=like.device).fill_diagonal_(0.0)


def _transfer_matrices(log_pi, log_P, le, mask) -> Tensor:
    """``M_1(i, j) = log π_j + log e_1(j)`` (rows alike), ``M_t(i, j) = log P_ij + log e_t(j)``,
    and the log identity past each length: (B, T, K, K)."""
    b, t, k = le.shape
    mats = log_P.unsqueeze(0).unsqueeze(0) + le.unsqueeze(2)
    first = (log_pi + le[:, 0]).unsqueeze(1).expand(b, k, k)
    mats = torch.cat([first.unsqueeze(1), mats[:, 1:]], 1)
    return torch.where(mask.view(b, t, 1, 1), mats, _log_eye(k, le))


# The log-depth pair share the transfer matrices but not the reduction, on purpose: the likelihood
# alone is one product of all of them (a reduction tree, no prefixes), the filter every prefix (a
# scan). Reading the likelihood off the scan costs more where it matters, with a gradient (CPU,
# float64, K = 8, fwd+bwd: 44 against 75 ms at (1, 10000), 139 against 166 ms at (64, 500));
# forward only the scan is ~15% faster, but there the fast sequential pass is the one to use.
def _parallel_log_likelihood(log_pi, log_P, em: _Emissions) -> Tensor:
    mats = _transfer_matrices(log_pi, log_P, em.log(), em.mask)
    b, _, k, _ = mats.shape
    eye = _log_eye(k, mats)
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
def _categorical(owner, log_initial, log_transition, log_emission, symbols, lengths):
    """Check and normalize the parameters and the symbols: ``(log π, log P, emissions)``."""
    log_pi, log_P, log_C = _normalize(owner, log_initial, log_transition, log_emission)
    symbols, lengths, mask = _check_symbols(owner, symbols, lengths, log_C.shape[1], log_pi.device)
    return log_pi, log_P, _CategoricalEmissions(log_C, symbols, mask)


def hmm_filter(log_initial: Tensor, log_transition: Tensor, log_emission: Tensor, symbols: Tensor,
               lengths=None) -> FilterResult:
    """Normalized forward filter. Returns filtered marginals (B, T, K), log normalizers (B, T)
    and ``log p(x_{1:L})`` (B,) = the sum of the log normalizers.

    Differentiable (the step-by-step recursion) when a parameter requires a gradient;
    otherwise the fast recursion."""
    return _filter(*_categorical("hmm_filter", log_initial, log_transition, log_emission, symbols, lengths))


def hmm_smoother(log_initial: Tensor, log_transition: Tensor, log_emission: Tensor, symbols: Tensor,
                 lengths=None) -> SmootherResult:
    """Scaled forward–backward: posterior marginals ``γ`` (B, T, K) and pairwise marginals ``ξ`` (B, T-1, K, K).

    Not differentiable (no gradient flows back); the gradient of the log-likelihood
    from :func:`hmm_filter` already *is* the expected counts (see the module docs)."""
    return _smoother(*_categorical("hmm_smoother", log_initial, log_transition, log_emission, symbols, lengths))


def hmm_viterbi(log_initial: Tensor, log_transition: Tensor, log_emission: Tensor, symbols: Tensor,
                lengths=None) -> ViterbiResult:
    """Most likely state path by max-product in log space: ``δ_t(j) = max_i δ_{t-1}(i) + log P_ij + log C[j, x_t]``.

    Ties go to the lowest state index. Positions past each length hold -1."""
    return _viterbi(*_categorical("hmm_viterbi", log_initial, log_transition, log_emission, symbols, lengths))


def _check_sample_sizes(owner, num_sequences, length):
    for name, v in (("num_sequences", num_sequences), ("length", length)):
        check_int(owner, name, v)


def _sample_states(log_pi, log_P, num_sequences, length, generator) -> Tensor:
    pi, P = log_pi.exp(), log_P.exp()
    state = torch.multinomial(pi.expand(num_sequences, -1), 1, generator=generator).squeeze(1)
    states = [state]
    for _ in range(length - 1):
        state = torch.multinomial(P[state], 1, generator=generator).squeeze(1)
        states.append(state)
    return torch.stack(states, 1)


def hmm_sample(log_initial: Tensor, log_transition: Tensor, log_emission: Tensor, num_sequences: int,
               length: int, generator: torch.Generator | None = None) -> HMMSample:
    """Draw ``num_sequences`` state/symbol sequences of ``length`` steps by ancestral sampling."""
    owner = "hmm_sample"
    log_pi, log_P, log_C = _normalize(owner, log_initial, log_transition, log_emission)
    _check_sample_sizes(owner, num_sequences, length)
    states = _sample_states(log_pi, log_P, num_sequences, length, generator)
    probs = log_C.exp()[states.reshape(-1)]
    symbols = torch.multinomial(probs, 1, generator=generator).view(num_sequences, length)
    return HMMSample(states, symbols)


def hmm_parallel_log_likelihood(log_initial: Tensor, log_transition: Tensor, log_emission: Tensor,
                                symbols: Tensor, lengths=None) -> Tensor:
    """``log p(x_{1:L})`` (B,) by a pairwise reduction tree of log-space K×K matrices (depth ⌈log₂ T⌉).

    ``M_1(i, j) = log π_j + log C[j, x_1]`` (every row alike), ``M_t(i, j) = log P_ij + log C[j, x_t]``,
    and ``M_t`` is the log identity past a sequence's end; ``log p = logsumexp_j (M_1 ⊗ … ⊗ M_T)(0, j)``
    with ``⊗`` the associative log-semiring product (:func:`rnnkit.engines.scan.log_matmul`). The
    log identity uses a large finite negative number instead of ``-inf`` so gradients stay finite."""
    return _parallel_log_likelihood(*_categorical("hmm_parallel_log_likelihood", log_initial, log_transition,
                                                  log_emission, symbols, lengths))


def hmm_parallel_filter(log_initial: Tensor, log_transition: Tensor, log_emission: Tensor, symbols: Tensor,
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
    return _parallel_filter(*_categorical("hmm_parallel_filter", log_initial, log_transition, log_emission,
                                          symbols, lengths))

