"""The hidden Markov model's forward filter, written as an rnnkit cell.

A categorical HMM with ``K`` hidden states and ``V`` symbols has

- initial distribution ``π = softmax(log_initial)``                 (K,)
- transition matrix    ``P = softmax(log_transition, dim=-1)``      (K, K), ``P[i, j] = p(z_{t+1}=j | z_t=i)``
- emission matrix      ``C = softmax(log_emission, dim=-1)``        (K, V), ``C[i, v] = p(x_t=v | z_t=i)``

The normalized forward filter is a recurrence ``s_t = f_s(s_{t-1}, x_t)`` on the
*predictive* state distribution ``ᾱ_t = p(z_t | x_{1:t-1})`` (B, K) and the running
log-likelihood ``ℓ_t`` (B, 1)::

    c      = ᾱ_t ⊙ (C x_t)          (unnormalized filtered marginal, x_t one-hot (B, V))
    z_t    = Σ_k c_k               = p(x_t | x_{1:t-1})
    ᾱ_{t+1} = (c / z_t) P
    ℓ_t    = ℓ_{t-1} + log z_t

so ``log p(x_{1:T}) = Σ_t log z_t`` — the sum of the log normalizers — is the second
state tensor after the last step. ``ᾱ_1 = π`` and ``ℓ_0 = 0``. The emitted vector is
the predictive distribution of the next symbol ``p(x_{t+1} | x_{1:t}) = ᾱ_{t+1} C`` (B, V).

:class:`GaussianHMMFilterCell` is the same recurrence with diagonal-Gaussian emissions
``N(x_t; μ_k, diag σ²_k)`` in place of ``C x_t``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import Cell, check_sizes

__all__ = ["HMMFilterCell", "GaussianHMMFilterCell", "filter_step", "gaussian_log_density"]


def filter_step(predictive: Tensor, likelihood: Tensor, transition: Tensor):
    """One step of the normalized forward filter, the one home of its maths (the cells below and
    the step-by-step reference of :mod:`rnnkit.models.hmm` both take it)::

        c = ᾱ ⊙ e,   z = Σ_k c_k,   α̂ = c / z,   ᾱ' = α̂ P

    ``predictive`` ᾱ (B, K), ``likelihood`` e (B, K), ``transition`` P (K, K); returns the
    filtered marginal ``α̂`` (B, K), the normalizer ``z`` (B, 1) and the next predictive ``ᾱ'`` (B, K).
    """
    c = predictive * likelihood                                       # (B, K)
    z = c.sum(dim=-1, keepdim=True)                                   # (B, 1)
    filtered = c / z
    return filtered, z, filtered @ transition


class _MarkovChainCell(Cell):
    """What every HMM filter cell shares: the hidden chain ``π``, ``P`` and the filter state."""

    def _init_chain(self, num_states: int, kw) -> None:
        self.num_states = num_states
        self.hidden_size = num_states
        self.state_sizes = (num_states, 1)
        self.log_initial = nn.Parameter(torch.zeros(num_states, **kw))
        self.log_transition = nn.Parameter(torch.randn(num_states, num_states, **kw))

    def initial(self) -> Tensor:
        """``π`` (K,)."""
        return torch.softmax(self.log_initial, dim=-1)

    def transition(self) -> Tensor:
        """``P`` (K, K), rows sum to one."""
        return torch.softmax(self.log_transition, dim=-1)

    def initial_state(self, batch_size: int, *, device=None, dtype=None) -> tuple[Tensor, Tensor]:
        """``(π repeated (B, K), zeros (B, 1))``."""
        pi = self.initial()
        device = device if device is not None else pi.device
        dtype = dtype if dtype is not None else pi.dtype
        pi = pi.to(device=device, dtype=dtype)
        return (pi.unsqueeze(0).expand(batch_size, -1),
                torch.zeros(batch_size, 1, device=device, dtype=dtype))

    def _advance(self, alpha: Tensor, loglik: Tensor, likelihood: Tensor, log_shift=None):
        """:func:`filter_step`, then ``ℓ' = ℓ + log z (+ shift)``."""
        _, z, following = filter_step(alpha, likelihood, self.transition())
        loglik = loglik + torch.log(z)
        return following, loglik if log_shift is None else loglik + log_shift


class HMMFilterCell(_MarkovChainCell):
    """Normalized HMM forward filter: state ``(ᾱ (B, K), log-likelihood (B, 1))``, input one-hot ``(B, V)``.

    Args:
        num_states: ``K``, the number of hidden states.
        num_symbols: ``V``, the number of observable symbols.

    Parameters (unconstrained, rows pass through softmax): ``log_initial`` (K,),
    ``log_transition`` (K, K), ``log_emission`` (K, V). ``log_initial`` starts at zero
    (uniform); the other two are drawn from N(0, 1), far enough from uniform that
    fitting tells the states apart at once. (From a near-uniform start, 0.1 N(0, 1),
    Baum–Welch sat on the symmetric saddle for 10–40 iterations in ``benchmarks/hmm.py``.)
    """

    def __init__(self, num_states: int, num_symbols: int, *, device=None, dtype=None):
        super().__init__()
        check_sizes("HMMFilterCell", num_states=num_states, num_symbols=num_symbols)
        kw = {"device": device, "dtype": dtype}
        self._init_chain(num_states, kw)
        self.num_symbols = num_symbols
        self.input_size = num_symbols
        self.log_emission = nn.Parameter(torch.randn(num_states, num_symbols, **kw))

    @property
    def output_size(self) -> int:
        return self.num_symbols

    def emission(self) -> Tensor:
        """``C`` (K, V), rows sum to one."""
        return torch.softmax(self.log_emission, dim=-1)

    def forward(self, x_t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """One filter step: ``c = ᾱ ⊙ (x_t Cᵀ)``, ``z = Σc``, ``ᾱ' = (c/z) P``, ``ℓ' = ℓ + log z``."""
        return self._advance(*state, x_t @ self.emission().t())

    def output(self, state: tuple[Tensor, Tensor]) -> Tensor:
        """Predictive distribution of the next symbol ``ᾱ C`` (B, V)."""
        return state[0] @ self.emission()

    def extra_repr(self) -> str:
        return f"num_states={self.num_states}, num_symbols={self.num_symbols}"


def gaussian_log_density(x: Tensor, means: Tensor, log_variances: Tensor) -> Tensor:
    """``log N(x; μ_k, diag σ²_k)`` for every state: x (..., D), means and log-variances (K, D) -> (..., K)."""
    diff = x.unsqueeze(-2) - means                                    # (..., K, D)
    return -0.5 * ((diff * diff) * torch.exp(-log_variances) + log_variances
                   + math.log(2 * math.pi)).sum(-1)


class GaussianHMMFilterCell(_MarkovChainCell):
    """The forward filter of an HMM with diagonal-Gaussian emissions, as a cell.

    Input ``x_t`` (B, D) real; state ``(ᾱ (B, K), log-likelihood (B, 1))`` as in
    :class:`HMMFilterCell`. Emission ``p(x | z=k) = N(x; μ_k, diag σ²_k)`` with
    parameters ``means`` (K, D) and ``log_variances`` (K, D). Densities can be far
    below the smallest float, so the step shifts them by their largest log value
    ``m`` before exponentiating and adds ``m`` back to ``ℓ``::

        e = exp(log N(x_t; μ, σ²) - m),  c = ᾱ ⊙ e,  z = Σc,  ᾱ' = (c/z) P,  ℓ' = ℓ + log z + m

    The emitted vector is the predictive mean of the next observation ``ᾱ μ`` (B, D).
    """

    def __init__(self, num_states: int, num_features: int, *, device=None, dtype=None):
        super().__init__()
        check_sizes("GaussianHMMFilterCell", num_states=num_states, num_features=num_features)
        kw = {"device": device, "dtype": dtype}
        self._init_chain(num_states, kw)
        self.num_features = num_features
        self.input_size = num_features
        self.means = nn.Parameter(torch.randn(num_states, num_features, **kw))
        self.log_variances = nn.Parameter(torch.zeros(num_states, num_features, **kw))

    @property
    def output_size(self) -> int:
        return self.num_features

    def log_emission_densities(self, x: Tensor) -> Tensor:
        """``log N(x; μ_k, diag σ²_k)``: (..., D) -> (..., K)."""
        return gaussian_log_density(x, self.means, self.log_variances)

    def forward(self, x_t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        le = self.log_emission_densities(x_t)                          # (B, K)
        m = le.amax(-1, keepdim=True).detach()
        return self._advance(*state, torch.exp(le - m), m)

    def output(self, state: tuple[Tensor, Tensor]) -> Tensor:
        """Predictive mean of the next observation ``ᾱ μ`` (B, D)."""
        return state[0] @ self.means

    def extra_repr(self) -> str:
        return f"num_states={self.num_states}, num_features={self.num_features}"
