"""The reference recursions: the scaled forward (and forward–backward) pass step by step, with
autograd, on the filter cell's own step. The differentiable filter, and the slow twins the fast
recursions (:mod:`.fast`) are tested against."""
from __future__ import annotations

import torch
from torch import Tensor

from ...cells.hmm import filter_step
from .results import SmootherResult

__all__ = ["_reference_filter", "_reference_smoother"]


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
