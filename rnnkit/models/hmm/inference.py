"""HMM inference as pure functions of the log-parameters ``log_initial``, ``log_transition``,
``log_emission`` (see the package docstring for the maths): filter, smoother, Viterbi, sampling,
and the log-depth forms. Past :func:`~.checks._normalize` the normalized values go by their symbols,
``log_pi``, ``log_P``, ``log_C`` (log π, log P, log C).

One forward recursion per reason, each in its module: :func:`~.reference._reference_filter`
(differentiable, step by step, the filter cell's own step), :func:`~.fast._fast_forward` (no
gradient; the filter, the smoother and the likelihood alone all run it) and the log-depth pair
:func:`~.scans._parallel_filter` / :func:`~.scans._parallel_log_likelihood`. Every fast path has a
slow twin the tests hold it to. This module picks between them and holds the public functions;
:mod:`.checks` checks their arguments, :mod:`.emissions` turns observations into likelihoods and
:mod:`.sampling` draws from the model."""
from __future__ import annotations

import torch
from torch import Tensor

from .checks import _check_symbols, _normalize
from .emissions import _CategoricalEmissions, _Emissions
from .fast import _fast_passes
from .reference import _reference_filter
from .results import FilterResult, HMMSample, SmootherResult, ViterbiResult
from .sampling import hmm_sample
from .scans import _parallel_filter, _parallel_log_likelihood

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
