"""Helpers shared by the reference models: stable sigmoid, argument checks, the BPTT driver."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def _sigmoid(a: np.ndarray) -> np.ndarray:
    """Logistic sigmoid without overflow: only ``exp(-|a|)`` is ever evaluated."""
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _check_truncation(truncation) -> int | None:
    """``None`` or a positive int (bool refused); anything else is a ValueError."""
    if truncation is None:
        return None
    if isinstance(truncation, (bool, np.bool_)) or not isinstance(truncation, (int, np.integer)) \
            or truncation < 1:
        raise ValueError(f"truncation must be a positive integer or None, got {truncation!r}")
    return int(truncation)


def _as_array(owner: str, name: str, value, shape: Sequence[int | None]) -> np.ndarray:
    """``value`` as a float64 array of the given shape (``None`` entries are free)."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, arr.shape)):
        want = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{owner}: expected {name} of shape {want}, got {arr.shape}")
    return arr


def _check_xs(owner: str, xs) -> np.ndarray:
    xs = _as_array(owner, "xs", xs, (None, None, None))
    if xs.shape[0] == 0:
        raise ValueError(f"{owner}: expected at least one time step, got xs of shape {xs.shape}")
    return xs


def _bptt_driver(steps: int,
                 inject: Callable[[int], list],
                 step_backward: Callable[[int, list], list],
                 zero_state: Callable[[], list],
                 truncation: int | None) -> list:
    """Run the backward recursion over ``steps`` transitions; return the gradient on the
    initial state.

    Step ``j`` (0-based) maps state ``j`` to state ``j + 1``. ``inject(j)`` gives the upstream
    gradients that the loss term of step ``j`` puts directly on state ``j + 1``;
    ``step_backward(j, d)`` takes the gradient ``d`` on state ``j + 1``, accumulates the
    parameter and input gradients of step ``j`` and returns the gradient on state ``j``.
    States are lists of arrays (``[h]`` or ``[h, c]``).

    * ``truncation=None``: the usual O(T) recursion ``d_j = back_j(d_{j+1} + inject(j))``.
    * ``truncation=k``: the loss term of step ``j`` is back-propagated alone through steps
      ``j, j-1, ..., j-k+1`` and stops at state ``j+1-k``, which is a constant unless it is
      the initial state (``j + 1 - k <= 0``). Cost O(T k).
    """
    if truncation is None:
        d = zero_state()
        for j in range(steps - 1, -1, -1):
            d = step_backward(j, [a + b for a, b in zip(d, inject(j))])
        return d
    d0 = zero_state()
    for j in range(steps):
        d = inject(j)
        for i in range(j, max(0, j - truncation + 1) - 1, -1):
            d = step_backward(i, d)
        if j + 1 - truncation <= 0:                 # the window reached the initial state
            d0 = [a + b for a, b in zip(d0, d)]
    return d0
