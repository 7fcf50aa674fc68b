"""Checks of scalar arguments (counts, numbers in a range, probabilities), shared by every module.

Each kind of mistake has one message, naming the owner, the argument, what it must be and what
came, so that the same slip reads the same wherever it is made::

    LSTMCell: hidden_size must be a positive integer, got 0
    GRU: num_layers must be an int, got float
    Zoneout: probability must be a probability in [0, 1), got 1.5
    RateCell: tau must be a positive finite number, got -1.0
    ContiguousBatches: rank must be an integer in [0, 1], got 2; world_size is 2

An empty owner leaves the prefix out: a command-line option (``--top-k``) is named as such, and the
command's error line already names the command.

This module imports nothing from rnnkit, so that the lowest layers (the cells) can use it.
"""
from __future__ import annotations

from math import inf
from numbers import Integral, Real

__all__ = ["check_int", "check_number", "check_probability", "check_positive"]


def _hint(hint: str) -> str:
    return f"; {hint}" if hint else ""


def _named(owner: str, name: str) -> str:
    return f"{owner}: {name}" if owner else name


def check_int(owner: str, name: str, value, minimum: int = 1, hint: str = "", *, maximum: int | None = None) -> int:
    """``value`` as an int of at least ``minimum`` (and at most ``maximum``); a TypeError for a
    non-integer (``bool`` included), a ValueError outside, with ``hint`` (how to fix it) appended."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{_named(owner, name)} must be an int, got {type(value).__name__}")
    if value < minimum or (maximum is not None and value > maximum):
        if maximum is not None:
            what = f"an integer in [{minimum}, {maximum}]"
        else:
            what = {1: "a positive integer", 0: "a non-negative integer"}.get(minimum, f"an integer >= {minimum}")
        raise ValueError(f"{_named(owner, name)} must be {what}, got {value}{_hint(hint)}")
    return int(value)


def check_number(owner: str, name: str, value, *, low: float = -inf, high: float = inf, low_closed: bool = True,
                 high_closed: bool = True, what: str | None = None, hint: str = "") -> float:
    """``value`` as a float in the interval from ``low`` to ``high`` (NaN never is); a TypeError for a
    non-number, a ValueError outside, naming the interval (or ``what``) and ``hint``."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{_named(owner, name)} must be a number, got {type(value).__name__}")
    inside = (value >= low if low_closed else value > low) and (value <= high if high_closed else value < high)
    if not inside:
        if what is None:
            what = f"in {'[' if low_closed else '('}{low:g}, {high:g}{']' if high_closed else ')'}"
        raise ValueError(f"{_named(owner, name)} must be {what}, got {value!r}{_hint(hint)}")
    return float(value)


def check_probability(owner: str, name: str, value, *, one: bool = False) -> float:
    """A probability in [0, 1), or in [0, 1] with ``one``."""
    interval = "[0, 1]" if one else "[0, 1)"
    return check_number(owner, name, value, low=0.0, high=1.0, high_closed=one, what=f"a probability in {interval}")


def check_positive(owner: str, name: str, value, hint: str = "") -> float:
    """A positive finite number."""
    return check_number(owner, name, value, low=0.0, high=inf, low_closed=False, high_closed=False,
                        what="a positive finite number", hint=hint)
