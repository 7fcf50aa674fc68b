"""Snapshot cycles: which member of a snapshot ensemble the trainer trains.

A snapshot ensemble (:class:`~rnnkit.models.LanguageModelEnsemble` with ``snapshots``; Huang et
al. 2017) keeps one member per cycle of the cosine schedule with restarts
(:func:`rnnkit.train.schedule.cycle_of`). When the run's progress enters cycle k, the model's
``start_cycle(k)`` freezes the members so far and continues training a copy of the newest, and
the optimizer's state moves to that copy (:func:`rnnkit.train.schedule.carry_optimizer_state`).
"""
from __future__ import annotations

import torch

from . import schedule

__all__ = ["SnapshotCycles"]


class SnapshotCycles:
    """Tells a snapshot ensemble when a cycle begins; does nothing for any other model.

    Args:
        model: the model trained; a snapshot ensemble has ``cycles`` (its number of members)
            and ``start_cycle(k)``.
        config: the :class:`~rnnkit.train.TrainConfig`, whose ``cycles`` must match the model's.
        optimizer: whose state follows the member trained.
    """

    def __init__(self, model: torch.nn.Module, config, optimizer: torch.optim.Optimizer):
        needed = getattr(model, "cycles", None)
        if needed is not None and needed != config.cycles:
            raise ValueError(f"Trainer: the model is an ensemble of {needed} snapshots, one per cycle of the "
                             f"schedule, and TrainConfig has cycles={config.cycles}; set cycles={needed}")
        self.model, self.config, self.optimizer = model, config, optimizer
        # the cycle the model was last told of: None at first, also after a resume, where the
        # model's start_cycle of the cycle already begun moves nothing
        self.current = None

    def advance(self, progress: float) -> bool:
        """The next member takes over when ``progress`` enters a new cycle (True then: the
        training step is rebuilt around the member now trained)."""
        cycle = schedule.cycle_of(self.config, progress)
        if getattr(self.model, "cycles", None) is None or cycle == self.current:
            return False
        schedule.carry_optimizer_state(self.optimizer, self.model.start_cycle(cycle))
        self.current = cycle
        return True
