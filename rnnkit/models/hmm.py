"""Categorical hidden Markov models: filtering, smoothing, Viterbi, sampling and EM.

Parameters are *unconstrained log-weights*, normalized here with ``log_softmax``:

- ``log_pi`` (K,)    → ``π = softmax(log_pi)``,             ``π_k = p(z_1 = k)``
- ``log_P``  (K, K)  → ``P = softmax(log_P, dim=-1)``,      ``P_ij = p(z_{t+1} = j | z_t = i)``
- ``log_C``  (K, V)  → ``C = softmax(log_C, dim=-1)``,      ``C_kv = p(x_t = v | z_t = k)``

(already-normalized log-probabilities pass through unchanged). Observations are
integer symbols ``(B, T)`` in ``[0, V)``; ``lengths`` (B,) marks a right-padded
batch, and padded positions are ignored (their symbols may be anything).

Every routine runs the scaled recursions, so sequences of any length stay finite::

    α̂_t = p(z_t | x_{1:t}) ∝ (α̂_{t-1} P) ⊙ C[:, x_t],   z_t = p(x_t | x_{1:t-1}),
    log p(x_{1:T}) = Σ_t log z_t,
    β̂_T = 1,  β̂_t = P (C[:, x_{t+1}] ⊙ β̂_{t+1}) / z_{t+1},
    γ_t = α̂_t ⊙ β̂_t = p(z_t | x_{1:T}),
    ξ_t(i, j) = α̂_t(i) P_ij C[j, x_{t+1}] β̂_{t+1}(j) / z_{t+1} = p(z_t=i, z_{t+1}=j | x_{1:T}).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .._checks import check_lengths

from ..cells.hmm import HMMFilterCell
from ..layers import Recurrent

__all__ = [
    "CategoricalHMM",
    "FilterResult",
    "HMMSample",
    "SmootherResult",
    "ViterbiResult",
    "hmm_filter",
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
    pairwise: Tensor          # (B, T-1, K, K)  p(z_t, z_{t+1} | x_{1:L}); zero past each length
    log_likelihood: Tensor    # (B,)


class ViterbiResult(NamedTuple):
    path: Tensor              # (B, T) long, most likely states; -1 past each length
    log_prob: Tensor          # (B,)   log p(x_{1:L}, path)


class HMMSample(NamedTuple):
    states: Tensor            # (N, T) long
    symbols: Tensor           # (N, T) long


# ----- validation -------------------------------------------------------------
def _normalize(owner: str, log_pi: Tensor, log_P: Tensor, log_C: Tensor):
    for name, t in (("log_pi", log_pi), ("log_P", log_P), ("log_C", log_C)):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise ValueError(f"{owner}: {name} must be a floating-point tensor, got "
                             f"{type(t).__name__ if not isinstance(t, Tensor) else t.dtype}")
    if log_pi.dim() != 1:
        raise ValueError(f"{owner}: log_pi must be (K,), got shape {tuple(log_pi.shape)}")
    k = log_pi.shape[0]
    if log_P.shape != (k, k):
        raise ValueError(f"{owner}: log_P must be (K, K) = ({k}, {k}), got shape {tuple(log_P.shape)}")
    if log_C.dim() != 2 or log_C.shape[0] != k:
        raise ValueError(f"{owner}: log_C must be (K, V) with K = {k}, got shape {tuple(log_C.shape)}")
    return (torch.log_softmax(log_pi, -1), torch.log_softmax(log_P, -1), torch.log_softmax(log_C, -1))


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
    lengths = check_lengths(owner, lengths, b, t)                # the layers' own check
    lengths = (torch.full((b,), t, dtype=torch.long, device=device) if lengths is None
               else lengths.to(device))
    mask = torch.arange(t, device=device).unsqueeze(0) < lengths.unsqueeze(1)   # (B, T)
    valid = symbols[mask]
    if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= num_symbols):
        bad = int(valid.min()) if int(valid.min()) < 0 else int(valid.max())
        raise ValueError(f"{owner}: symbols must lie in [0, V) = [0, {num_symbols}), got {bad}")
    return torch.where(mask, symbols, torch.zeros_like(symbols)), lengths, mask


def _emissions(log_C: Tensor, symbols: Tensor) -> Tensor:
    """``log C[:, x_t]`` for every step: (B, T, K)."""
    return log_C.t()[symbols]


# ----- filtering / smoothing ----------------------------------------------------
def _forward(owner, log_pi, log_P, log_C, symbols, lengths):
    log_pi, log_P, log_C = _normalize(owner, log_pi, log_P, log_C)
    symbols, lengths, mask = _check_symbols(owner, symbols, lengths, log_C.shape[1], log_pi.device)
    P = log_P.exp()
    e = _emissions(log_C, symbols).exp()                                  # (B, T, K)
    b, t = symbols.shape
    alpha = log_pi.exp().unsqueeze(0).expand(b, -1)                       # predictive (B, K)
    filtered, lognorm = [], []
    for s in range(t):
        c = alpha * e[:, s]
        z = c.sum(-1, keepdim=True)
        f = c / z
        m = mask[:, s].unsqueeze(-1)
        filtered.append(torch.where(m, f, torch.zeros_like(f)))
        lognorm.append(torch.where(m, z.log(), torch.zeros_like(z)).squeeze(-1))
        alpha = torch.where(m, f @ P, alpha)
    filtered, lognorm = torch.stack(filtered, 1), torch.stack(lognorm, 1)
    return filtered, lognorm, P, e, mask


def hmm_filter(log_pi: Tensor, log_P: Tensor, log_C: Tensor, symbols: Tensor, lengths=None) -> FilterResult:
    """Normalized forward filter. Returns filtered marginals (B, T, K), log normalizers (B, T)
    and ``log p(x_{1:L})`` (B,) = the sum of the log normalizers."""
    filtered, lognorm, *_ = _forward("hmm_filter", log_pi, log_P, log_C, symbols, lengths)
    return FilterResult(filtered, lognorm, lognorm.sum(1))


def hmm_smoother(log_pi: Tensor, log_P: Tensor, log_C: Tensor, symbols: Tensor, lengths=None) -> SmootherResult:
    """Scaled forward–backward: posterior marginals ``γ`` (B, T, K) and pairwise marginals ``ξ`` (B, T-1, K, K)."""
    filtered, lognorm, P, e, mask = _forward("hmm_smoother", log_pi, log_P, log_C, symbols, lengths)
    b, t, k = filtered.shape
    z = lognorm.exp()                                                     # 1 at padding
    beta = torch.ones(b, k, dtype=filtered.dtype, device=filtered.device)
    betas, xis = [beta], []
    for s in range(t - 2, -1, -1):
        nxt = mask[:, s + 1]                                              # step s+1 exists
        w = e[:, s + 1] * beta / z[:, s + 1].unsqueeze(-1)                # (B, K)
        xi = filtered[:, s].unsqueeze(-1) * P.unsqueeze(0) * w.unsqueeze(1)
        xis.append(torch.where(nxt.view(b, 1, 1), xi, torch.zeros_like(xi)))
        beta = torch.where(nxt.unsqueeze(-1), w @ P.t(), torch.ones_like(beta))
        betas.append(beta)
    betas.reverse()
    xis.reverse()
    posterior = filtered * torch.stack(betas, 1)                          # filtered is 0 at padding
    pairwise = torch.stack(xis, 1) if xis else filtered.new_zeros(b, 0, k, k)
    return SmootherResult(posterior, pairwise, lognorm.sum(1))


def hmm_viterbi(log_pi: Tensor, log_P: Tensor, log_C: Tensor, symbols: Tensor, lengths=None) -> ViterbiResult:
    """Most likely state path by max-product in log space: ``δ_t(j) = max_i δ_{t-1}(i) + log P_ij + log C[j, x_t]``.

    Ties go to the lowest state index. Positions past each length hold -1."""
    owner = "hmm_viterbi"
    log_pi, log_P, log_C = _normalize(owner, log_pi, log_P, log_C)
    symbols, lengths, mask = _check_symbols(owner, symbols, lengths, log_C.shape[1], log_pi.device)
    le = _emissions(log_C, symbols)                                       # (B, T, K)
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


def hmm_sample(log_pi: Tensor, log_P: Tensor, log_C: Tensor, num_sequences: int, length: int,
               generator: torch.Generator | None = None) -> HMMSample:
    """Draw ``num_sequences`` state/symbol sequences of ``length`` steps by ancestral sampling."""
    owner = "hmm_sample"
    log_pi, log_P, log_C = _normalize(owner, log_pi, log_P, log_C)
    for name, v in (("num_sequences", num_sequences), ("length", length)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{owner}: {name} must be a positive integer, got {v!r}")
    pi, P, C = log_pi.exp(), log_P.exp(), log_C.exp()
    state = torch.multinomial(pi.expand(num_sequences, -1), 1, generator=generator).squeeze(1)
    states, symbols = [], []
    for s in range(length):
        if s:
            state = torch.multinomial(P[state], 1, generator=generator).squeeze(1)
        states.append(state)
        symbols.append(torch.multinomial(C[state], 1, generator=generator).squeeze(1))
    return HMMSample(torch.stack(states, 1), torch.stack(symbols, 1))


def _log_matmul(a: Tensor, b: Tensor) -> Tensor:
    """``(a ⊗ b)_ij = logsumexp_k a_ik + b_kj`` on (..., K, K)."""
    return torch.logsumexp(a.unsqueeze(-1) + b.unsqueeze(-3), dim=-2)


def hmm_parallel_log_likelihood(log_pi: Tensor, log_P: Tensor, log_C: Tensor, symbols: Tensor,
                                lengths=None) -> Tensor:
    """``log p(x_{1:L})`` (B,) by a pairwise reduction tree of log-space K×K matrices (depth ⌈log₂ T⌉).

    ``M_1(i, j) = log π_j + log C[j, x_1]`` (every row alike), ``M_t(i, j) = log P_ij + log C[j, x_t]``,
    and ``M_t`` is the log identity past a sequence's end; ``log p = logsumexp_j (M_1 ⊗ … ⊗ M_T)(0, j)``
    with ``⊗`` the associative log-semiring product. The log identity uses a large finite negative
    number instead of ``-inf`` so gradients stay finite."""
    owner = "hmm_parallel_log_likelihood"
    log_pi, log_P, log_C = _normalize(owner, log_pi, log_P, log_C)
    symbols, lengths, mask = _check_symbols(owner, symbols, lengths, log_C.shape[1], log_pi.device)
    le = _emissions(log_C, symbols)                                       # (B, T, K)
    b, t, k = le.shape
    neg = -1e30
    eye = torch.full((k, k), neg, dtype=le.dtype, device=le.device).fill_diagonal_(0.0)
    mats = log_P.unsqueeze(0).unsqueeze(0) + le.unsqueeze(2)              # (B, T, K, K)
    first = (log_pi + le[:, 0]).unsqueeze(1).expand(b, k, k)
    mats = torch.cat([first.unsqueeze(1), mats[:, 1:]], 1)
    mats = torch.where(mask.view(b, t, 1, 1), mats, eye)
    while mats.shape[1] > 1:
        if mats.shape[1] % 2:
            mats = torch.cat([mats, eye.expand(b, 1, k, k)], 1)
        mats = _log_matmul(mats[:, 0::2], mats[:, 1::2])
    return torch.logsumexp(mats[:, 0, 0], dim=-1)


# ----- module -------------------------------------------------------------------
class CategoricalHMM(nn.Module):
    """A categorical HMM whose parameters live in an :class:`~rnnkit.cells.HMMFilterCell`.

    ``log_likelihood`` runs the filter cell through :class:`rnnkit.Recurrent` (the RNN form,
    differentiable); ``parallel_log_likelihood`` computes the same number by a log-depth
    reduction tree; ``fit_em`` runs Baum–Welch on the smoother's expected counts.
    """

    def __init__(self, num_states: int, num_symbols: int, *, device=None, dtype=None):
        super().__init__()
        self.cell = HMMFilterCell(num_states, num_symbols, device=device, dtype=dtype)
        self.recurrent = Recurrent(self.cell, engine="loop", name="CategoricalHMM")

    @property
    def num_states(self) -> int:
        return self.cell.num_states

    @property
    def num_symbols(self) -> int:
        return self.cell.num_symbols

    def log_params(self):
        """``(log_initial, log_transition, log_emission)`` of the cell (unconstrained)."""
        return self.cell.log_initial, self.cell.log_transition, self.cell.log_emission

    def log_likelihood(self, symbols: Tensor, lengths=None) -> Tensor:
        """``log p(x_{1:L})`` (B,) via ``Recurrent(HMMFilterCell)``: the final cumulative log normalizer."""
        symbols, lengths, _ = _check_symbols("CategoricalHMM.log_likelihood", symbols, lengths,
                                             self.num_symbols, self.cell.log_initial.device)
        x = F.one_hot(symbols, self.num_symbols).to(self.cell.log_initial.dtype)
        _, (_, loglik) = self.recurrent(x, lengths=lengths.cpu())
        return loglik.squeeze(-1)

    def parallel_log_likelihood(self, symbols: Tensor, lengths=None) -> Tensor:
        return hmm_parallel_log_likelihood(*self.log_params(), symbols, lengths)

    def filter(self, symbols: Tensor, lengths=None) -> FilterResult:
        return hmm_filter(*self.log_params(), symbols, lengths)

    def smoother(self, symbols: Tensor, lengths=None) -> SmootherResult:
        return hmm_smoother(*self.log_params(), symbols, lengths)

    def viterbi(self, symbols: Tensor, lengths=None) -> ViterbiResult:
        return hmm_viterbi(*self.log_params(), symbols, lengths)

    def sample(self, num_sequences: int, length: int, generator=None) -> HMMSample:
        return hmm_sample(*self.log_params(), num_sequences, length, generator)

    @torch.no_grad()
    def fit_em(self, symbols: Tensor, lengths=None, iterations: int = 10) -> list[float]:
        """Baum–Welch. Each iteration: E-step (smoother) then M-step
        ``π ∝ Σ_b γ_1``, ``P_ij ∝ Σ ξ_t(i, j)``, ``C_kv ∝ Σ_t γ_t(k) [x_t = v]``.

        Returns ``iterations + 1`` total log-likelihoods (summed over the batch): before the
        first update and after each one. EM guarantees they never decrease."""
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
            raise ValueError(f"CategoricalHMM.fit_em: iterations must be a non-negative integer, "
                             f"got {iterations!r}")
        history = []
        for _ in range(iterations + 1):
            post = self.smoother(symbols, lengths)
            history.append(float(post.log_likelihood.sum()))
            if len(history) == iterations + 1:
                break
            sym, _, mask = _check_symbols("CategoricalHMM.fit_em", symbols, lengths, self.num_symbols,
                                          post.posterior.device)
            onehot = F.one_hot(sym, self.num_symbols).to(post.posterior.dtype) * mask.unsqueeze(-1)
            tiny = torch.finfo(post.posterior.dtype).tiny
            pi = post.posterior[:, 0].sum(0)
            trans = post.pairwise.sum((0, 1))
            emis = torch.einsum("btk,btv->kv", post.posterior, onehot)
            # a state never visited keeps its old row rather than becoming 0/0
            P_old, C_old = self.cell.transition(), self.cell.emission()
            rows_t = trans.sum(-1, keepdim=True)
            rows_e = emis.sum(-1, keepdim=True)
            P_new = torch.where(rows_t > 0, trans / rows_t.clamp_min(tiny), P_old)
            C_new = torch.where(rows_e > 0, emis / rows_e.clamp_min(tiny), C_old)
            self.cell.log_initial.copy_((pi / pi.sum()).clamp_min(tiny).log())
            self.cell.log_transition.copy_(P_new.clamp_min(tiny).log())
            self.cell.log_emission.copy_(C_new.clamp_min(tiny).log())
        return history

    def extra_repr(self) -> str:
        return f"num_states={self.num_states}, num_symbols={self.num_symbols}"
