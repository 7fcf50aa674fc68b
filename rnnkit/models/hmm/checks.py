"""Checks of the HMM routines' arguments: the log-weights (normalized on the way), the observations
(categorical symbols or real vectors) with their lengths, and the sizes of a sample. Every message
names the routine (``owner``) and the parameter by its one name (see the package docstring)."""
from __future__ import annotations

import torch
from torch import Tensor

from ..._arguments import check_int
from ..._checks import check_lengths

__all__ = ["_normalize_chain", "_normalize", "_check_symbols", "_check_observations", "_check_sample_sizes"]


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


def _check_sample_sizes(owner, num_sequences, length):
    for name, v in (("num_sequences", num_sequences), ("length", length)):
        check_int(owner, name, v)
