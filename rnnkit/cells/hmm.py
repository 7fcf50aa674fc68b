"""The categorical hidden Markov model's forward filter, written as an rnnkit cell.

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
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Cell, check_sizes

__all__ = ["HMMFilterCell"]


class HMMFilterCell(Cell):
    """Normalized HMM forward filter: state ``(ᾱ (B, K), log-likelihood (B, 1))``, input one-hot ``(B, V)``.

    Args:
        num_states: ``K``, the number of hidden states.
        num_symbols: ``V``, the number of observable symbols.

    Parameters (unconstrained, rows pass through softmax): ``log_initial`` (K,),
    ``log_transition`` (K, K), ``log_emission`` (K, V). Initialised to zeros plus
    small noise so that states are distinguishable.
    """

    def __init__(self, num_states: int, num_symbols: int, *, device=None, dtype=None):
        super().__init__()
        check_sizes("HMMFilterCell", num_states=num_states, num_symbols=num_symbols)
        kw = {"device": device, "dtype": dtype}
        self.num_states, self.num_symbols = num_states, num_symbols
        self.input_size = num_symbols
        self.hidden_size = num_states
        self.state_sizes = (num_states, 1)
        self.log_initial = nn.Parameter(torch.zeros(num_states, **kw))
        self.log_transition = nn.Parameter(0.1 * torch.randn(num_states, num_states, **kw))
        self.log_emission = nn.Parameter(0.1 * torch.randn(num_states, num_symbols, **kw))

    @property
    def output_size(self) -> int:
        return self.num_symbols

    # ----- probabilities ----------------------------------------------------
    def initial(self) -> Tensor:
        """``π`` (K,)."""
        return torch.softmax(self.log_initial, dim=-1)

    def transition(self) -> Tensor:
        """``P`` (K, K), rows sum to one."""
        return torch.softmax(self.log_transition, dim=-1)

    def emission(self) -> Tensor:
        """``C`` (K, V), rows sum to one."""
        return torch.softmax(self.log_emission, dim=-1)

    # ----- cell contract ----------------------------------------------------
    def initial_state(self, batch_size: int, *, device=None, dtype=None) -> tuple[Tensor, Tensor]:
        """``(π repeated (B, K), zeros (B, 1))``."""
        pi = self.initial()
        device = device if device is not None else pi.device
        dtype = dtype if dtype is not None else pi.dtype
        pi = pi.to(device=device, dtype=dtype)
        return (pi.unsqueeze(0).expand(batch_size, -1),
                torch.zeros(batch_size, 1, device=device, dtype=dtype))

    def forward(self, x_t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """One filter step: ``c = ᾱ ⊙ (x_t Cᵀ)``, ``z = Σc``, ``ᾱ' = (c/z) P``, ``ℓ' = ℓ + log z``."""
        alpha, loglik = state
        c = alpha * (x_t @ self.emission().t())                       # (B, K)
        z = c.sum(dim=-1, keepdim=True)                               # (B, 1)
        alpha_next = (c / z) @ self.transition()                      # (B, K)
        return alpha_next, loglik + torch.log(z)

    def output(self, state: tuple[Tensor, Tensor]) -> Tensor:
        """Predictive distribution of the next symbol ``ᾱ C`` (B, V)."""
        return state[0] @ self.emission()

    def extra_repr(self) -> str:
        return f"num_states={self.num_states}, num_symbols={self.num_symbols}"
