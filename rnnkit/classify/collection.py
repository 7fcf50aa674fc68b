"""Collections of labelled recordings in aeon's conventions, checked, normalized and batched.

A *collection* is what aeon and the UCR/UEA archive hand over: a 3-D array ``(cases, channels, time)``,
a list of 2-D arrays ``(channels, time_i)`` whose lengths differ, or a 2-D array ``(cases, time)`` of
univariate cases (scikit-learn's ``(n_samples, n_features)``, each row read as one series). NaN at the
end of a case is padding (aeon pads unequal cases so): it is cut off. Everything else that cannot be
read is one line naming the case, the channel and the step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["as_cases", "check_channels", "Normalizer", "patch_length", "batch_cases"]


def _case(index: int, array) -> np.ndarray:
    """One case as a float64 (channels, time) array with its trailing NaN padding cut off."""
    if np.iscomplexobj(array):
        raise ValueError(f"Complex data not supported: case {index} holds complex numbers; expected real "
                         f"numbers (channels, time)")
    try:
        x = np.asarray(array, dtype=np.float64)
    except TypeError as error:
        raise TypeError(f"case {index} is not numeric ({error}); expected numbers (channels, time)") from None
    except ValueError as error:
        raise ValueError(f"case {index} is not numeric ({error}); expected numbers (channels, time)") from None
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"case {index} has {x.ndim} dimensions; expected (channels, time)")
    if x.shape[0] == 0:
        raise ValueError(f"case {index} has no channels; expected (channels, time) with at least one channel")
    missing = np.isnan(x)
    padded = np.flatnonzero(~missing.all(0))          # steps where some channel has a value
    x = x[:, :padded[-1] + 1] if len(padded) else x[:, :0]
    if x.shape[1] == 0:
        raise ValueError(f"case {index} is empty (no time steps); drop it")
    bad = ~np.isfinite(x)
    if bad.any():
        channel, step = (int(v[0]) for v in np.nonzero(bad))
        if np.isnan(x[channel, step]):
            raise ValueError(f"case {index} has NaN at step {step} of channel {channel}, inside the sequence "
                             f"(only NaN at the end of a case is read as padding); impute it or cut the case")
        raise ValueError(f"case {index} has an infinite value at step {step} of channel {channel}; "
                         f"clip or drop it")
    return x


def as_cases(X) -> list:
    """``X`` as a list of float64 arrays ``(channels, time_i)``, every case checked (see the module's text).

    >>> [c.shape for c in as_cases(np.zeros((2, 3, 5)))]
    [(3, 5), (3, 5)]
    >>> [c.shape for c in as_cases([np.ones((2, 4)), np.array([[1.0, 2.0, np.nan], [3.0, 4.0, np.nan]])])]
    [(2, 4), (2, 2)]
    """
    if hasattr(X, "toarray") or hasattr(X, "todense"):
        raise TypeError(f"X is a sparse {type(X).__name__}; sparse input is not supported: pass a dense array "
                        f"(X.toarray())")
    if isinstance(X, np.ndarray) and X.dtype != object:
        if X.ndim not in (2, 3):
            raise ValueError(f"X has {X.ndim} dimension(s); expected (cases, channels, time), (cases, time) or a "
                             f"list of (channels, time) arrays. Reshape your data: X.reshape(1, -1) is one "
                             f"univariate case")
        items = list(X[:, None, :] if X.ndim == 2 else X)
    elif isinstance(X, (list, tuple)) or (isinstance(X, np.ndarray) and X.dtype == object):
        items = list(X)
        if items and not any(np.ndim(item) >= 1 for item in items):     # a bare list of numbers
            raise ValueError("X is one sequence of numbers; expected a collection of cases: (cases, channels, "
                             "time), (cases, time) or a list of (channels, time) arrays")
        if items and all(np.ndim(item) == 1 for item in items):          # rows of a 2-D list: univariate
            items = [np.asarray(item)[None, :] for item in items]
    else:
        try:
            return as_cases(np.asarray(X))
        except (TypeError, ValueError) as error:
            if "case" in str(error) or "X has" in str(error):
                raise
            raise ValueError(f"X of type {type(X).__name__} is not a collection of cases; expected a NumPy array "
                             f"(cases, channels, time) or a list of (channels, time) arrays") from None
    if not items:
        raise ValueError("X holds no cases; expected at least one")
    cases = [_case(i, item) for i, item in enumerate(items)]
    check_channels(cases)
    return cases


def check_channels(cases: list, expected: int | None = None) -> int:
    """The number of channels every case has; a ValueError naming the first case that differs (from the
    first case, or from ``expected``: what the model was fitted on)."""
    first = cases[0].shape[0]
    if expected is not None and first != expected:
        raise ValueError(f"X has {first} channel(s) but the model was fitted on {expected}; give the channels "
                         f"it was trained with")
    for i, case in enumerate(cases):
        if case.shape[0] != first:
            raise ValueError(f"case {i} has {case.shape[0]} channel(s) but case 0 has {first}; every case needs "
                             f"the same channels")
    return first


@dataclass
class Normalizer:
    r"""Per-channel standardization fitted on the training cases only: ``(x_c - mean_c) / std_c`` with the
    mean and standard deviation of channel ``c`` over every step of every training case (a constant
    channel keeps its scale: ``std_c = 1``)."""
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, cases: list) -> "Normalizer":
        values = np.concatenate(cases, axis=1)                                # (C, total steps)
        std = values.std(1)
        return cls(values.mean(1), np.where(std > 1e-12 * np.maximum(np.abs(values).max(1), 1.0), std, 1.0))

    def __call__(self, cases: list) -> list:
        return [(case - self.mean[:, None]) / self.std[:, None] for case in cases]


def patch_length(lengths, max_steps: int) -> int:
    """How many consecutive steps one recurrent step reads, so that the longest case takes at most
    ``max_steps`` steps: ``ceil(longest / max_steps)`` (1 for short cases)."""
    return max(1, -(-int(max(lengths)) // max_steps))


def batch_cases(cases: list, patch: int = 1, dtype=torch.float32):
    """A padded batch ``(x (B, T, C·patch), lengths (B,))`` of ``cases`` (C, time_i).

    Each group of ``patch`` consecutive steps becomes one step of ``C·patch`` inputs (the channels of
    its first step, then of its second, ...); a case whose length is no multiple of ``patch`` is
    completed with zeros inside its own last step, so a case reads the same alone or in any batch.
    Steps past a case's end are zero and ``lengths`` says where each ends.

    >>> x, lengths = batch_cases([np.ones((2, 5)), np.ones((2, 2))], patch=2)
    >>> tuple(x.shape), lengths.tolist(), x[0, 2].tolist()
    ((2, 3, 4), [3, 1], [1.0, 1.0, 0.0, 0.0])
    """
    steps = [-(-case.shape[1] // patch) for case in cases]
    channels = cases[0].shape[0]
    out = np.zeros((len(cases), max(steps), patch * channels))
    for i, case in enumerate(cases):
        flat = np.zeros((steps[i] * patch, channels))
        flat[:case.shape[1]] = case.T
        out[i, :steps[i]] = flat.reshape(steps[i], patch * channels)
    return torch.as_tensor(out, dtype=dtype), torch.tensor(steps)
