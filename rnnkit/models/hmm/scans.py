"""The log-depth forms: the likelihood by a reduction tree, and the filter by a parallel scan, over
log-space K×K transfer matrices (the log semiring of :mod:`rnnkit.engines.scan`)."""
from __future__ import annotations

import torch
from torch import Tensor

from ...engines.scan import log_linear_recurrence, log_matmul
from .emissions import _Emissions
from .results import FilterResult

__all__ = ["_transfer_matrices", "_parallel_log_likelihood", "_parallel_filter"]


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
