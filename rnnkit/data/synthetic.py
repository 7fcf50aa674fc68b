r"""Synthetic data that rnnkit's examples and benchmarks train on: the copy task of the neural
Turing machine (:func:`copy_task`) and the Mackey–Glass series of reservoir computing
(:func:`mackey_glass`). The long-dependency tasks of the task suite are in :mod:`.tasks`."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .._arguments import check_int, check_positive
from ..cells.base import check_sizes

__all__ = ["CopyTask", "copy_task", "mackey_glass"]


class CopyTask(NamedTuple):
    """A batch of copy-task episodes: ``inputs`` (N, T, width+2), ``targets`` (N, T, width), ``mask`` (N, T)."""

    inputs: Tensor
    targets: Tensor
    mask: Tensor


def copy_task(num_sequences: int, min_length: int, max_length: int, width: int = 8, *, seed: int = 0,
              dtype: torch.dtype | None = None) -> CopyTask:
    r"""Episodes of the copy task (Graves et al. 2014, §4.1): read random bit vectors, then write them back.

    Each episode draws a length :math:`L` uniformly from ``[min_length, max_length]``
    and :math:`L` vectors of ``width`` fair bits. With :math:`T = 2\,\text{max\_length} + 2`:

    ======================  ==================================  =====================
    step                    input (width + 2 channels)          target (width)
    ======================  ==================================  =====================
    0                       start flag (channel ``width``)      0
    1 … L                   bit vector ``1 … L`` (channels      0
                            ``0 … width-1``)
    L + 1                   delimiter (channel ``width + 1``)   0
    L + 2 … 2L + 1          0 (nothing: recall)                 bit vector ``1 … L``
    2L + 2 … T - 1          0 (padding)                         0
    ======================  ==================================  =====================

    ``mask`` (N, T) is true on the answer steps ``L + 2 … 2L + 1`` only. ``seed``
    fixes the episodes; ``dtype`` (default: torch's) is that of inputs and targets.

    >>> task = copy_task(3, 1, 3, width=3, seed=1)
    >>> tuple(task.inputs.shape), tuple(task.targets.shape), task.mask.sum(1).tolist()
    ((3, 8, 5), (3, 8, 3), [2, 3, 1])
    """
    name = "copy_task"
    check_sizes(name, num_sequences=num_sequences, min_length=min_length, max_length=max_length, width=width)
    if min_length > max_length:
        raise ValueError(f"{name}: min_length ({min_length}) must not exceed max_length ({max_length})")
    generator = torch.Generator().manual_seed(seed)
    dtype = dtype or torch.get_default_dtype()
    steps = 2 * max_length + 2
    lengths = torch.randint(min_length, max_length + 1, (num_sequences,), generator=generator)     # (N,)
    bits = torch.randint(0, 2, (num_sequences, max_length, width), generator=generator).to(dtype)  # (N, L, w)
    t = torch.arange(max_length)
    bits = bits * (t < lengths.unsqueeze(1)).unsqueeze(-1).to(dtype)            # zero beyond each L
    rows = torch.arange(num_sequences)
    inputs = torch.zeros(num_sequences, steps, width + 2, dtype=dtype)
    targets = torch.zeros(num_sequences, steps, width, dtype=dtype)
    inputs[:, 0, width] = 1
    inputs[:, 1:max_length + 1, :width] = bits
    inputs[rows, lengths + 1, width + 1] = 1
    # the answer of episode n starts at step L_n + 2: gather the bits into place
    step = torch.arange(steps)
    source = step - (lengths.unsqueeze(1) + 2)                                 # (N, T) index into bits
    mask = (source >= 0) & (source < lengths.unsqueeze(1))
    targets[mask] = bits[rows.unsqueeze(1).expand_as(mask)[mask], source[mask]]
    return CopyTask(inputs, targets, mask)


def mackey_glass(length: int, tau: float = 17.0, beta: float = 0.2, gamma: float = 0.1,
                 n: float = 10.0, x0: float = 1.2, dt: float = 0.1, sample_every: float = 1.0,
                 discard: int = 500) -> Tensor:
    r"""A Mackey–Glass series, sampled every ``sample_every`` time units, scaled to [-1, 1].

    .. math::  \frac{dx}{dt} = \beta \frac{x(t-\tau)}{1 + x(t-\tau)^n} - \gamma x(t)

    Integrated with fourth-order Runge–Kutta at step ``dt`` (the delayed term at a
    half step is the mean of the two neighbouring history points), with history
    ``x(t) = x0`` for ``t <= 0``. The first ``discard`` samples (the transient) are
    dropped, then ``length`` samples are min–max scaled to [-1, 1]. Returns a
    float64 tensor of shape ``(length,)``. ``tau = 17`` is the classic mildly
    chaotic benchmark.
    """
    check_int("mackey_glass", "length", length, 2)
    for name, value in (("tau", tau), ("dt", dt), ("sample_every", sample_every)):
        check_positive("mackey_glass", name, value)
    sub = max(1, int(round(sample_every / dt)))
    lag = max(1, int(round(tau / dt)))
    total = (length + discard) * sub
    hist = [x0] * (lag + 1) + [0.0] * total          # hist[lag + i] is x(i·dt); x = x0 for t <= 0
    f = lambda x, xd: beta * xd / (1.0 + xd ** n) - gamma * x
    base = lag
    for i in range(total):
        k = base + i                                  # index of x(t)
        x, xd0, xd1 = hist[k], hist[k - lag], hist[k - lag + 1]
        xdm = 0.5 * (xd0 + xd1)
        k1 = f(x, xd0)
        k2 = f(x + 0.5 * dt * k1, xdm)
        k3 = f(x + 0.5 * dt * k2, xdm)
        k4 = f(x + dt * k3, xd1)
        hist[k + 1] = x + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    series = torch.tensor(hist[base + 1:base + 1 + total:sub][discard:discard + length], dtype=torch.float64)
    lo, hi = series.min(), series.max()
    return 2 * (series - lo) / (hi - lo) - 1
