"""The named results of the HMM routines: what the filter, the smoother, Viterbi and sampling return."""
from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

__all__ = ["FilterResult", "SmootherResult", "ViterbiResult", "HMMSample"]


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
