"""Ancestral sampling: states by the chain, then a symbol (or, for a Gaussian HMM, a vector) per state."""
from __future__ import annotations

import torch
from torch import Tensor

from .checks import _check_sample_sizes, _normalize
from .results import HMMSample

__all__ = ["hmm_sample"]


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
