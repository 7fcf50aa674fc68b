"""The trainer's learning-rate schedules, and the cycles of a cosine schedule with restarts.

``cycles`` > 1 splits the cosine schedule into that many equal cycles (Loshchilov & Hutter
2017, SGDR): each restarts at the peak rate and decays to ``lr * min_lr_fraction`` by its end;
the warm-up, when there is one, opens the first. A snapshot ensemble
(:class:`~rnnkit.models.LanguageModelEnsemble` with ``snapshots``; Huang et al. 2017) keeps
the model each cycle ends with: at the start of cycle k the trainer calls the model's
``start_cycle(k)``, which freezes the model so far as a member and continues training a copy
of it, and :func:`carry_optimizer_state` hands that copy the optimizer's moments.
"""
from __future__ import annotations

import math

import torch

__all__ = ["cycle_of", "learning_rate", "carry_optimizer_state"]


def cycle_of(config, progress: float) -> int:
    """The cycle (from 0) that ``progress`` (a fraction of the run) falls in."""
    return min(int(progress * config.cycles), config.cycles - 1)


def learning_rate(config, progress: float, epoch: int = 0, plateau_scale: float = 1.0) -> float:
    """The learning rate at ``progress`` (a fraction of the run) of schedule ``config.schedule``."""
    c = config
    if c.schedule == "constant":
        return c.lr
    if c.schedule == "plateau":
        return c.lr * plateau_scale
    if c.schedule == "step":
        return c.lr * c.decay_factor ** max(0, epoch + 1 - c.decay_start)
    if progress < c.warmup:
        return c.lr * max(progress / c.warmup, 1e-3)
    cycle = cycle_of(c, progress)
    start, end = max(cycle / c.cycles, c.warmup), (cycle + 1) / c.cycles
    span = min(1.0, (progress - start) / (end - start))
    return c.lr * (c.min_lr_fraction + (1 - c.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * span)))


def carry_optimizer_state(optimizer: torch.optim.Optimizer, pairs) -> None:
    """Move the optimizer's state (Adam's moments, SGD's momentum) of each ``(old, new)``
    parameter pair to ``new``, which continues where ``old`` stopped; ``old`` is frozen."""
    for old, new in pairs:
        state = optimizer.state.pop(old, None)
        if state:
            optimizer.state[new] = {key: value.clone() if isinstance(value, torch.Tensor) else value
                                    for key, value in state.items()}
