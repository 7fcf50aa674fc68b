r"""NT-ASGD's averaged weights (Merity, Keskar & Socher 2017): when to start averaging, the
running mean, and swapping it in for evaluation and checkpoints.

The trigger is non-monotone: plain SGD runs until a validation loss is worse than the best one
from more than ``nonmono`` checks earlier; from that step on the iterates :math:`w_t` are averaged,

.. math::  \bar w_n = \bar w_{n-1} + \frac{1}{n} (w_t - \bar w_{n-1}),
           \qquad n = 1, 2, \dots \text{ the steps since averaging began.}

The :class:`~rnnkit.train.Trainer` evaluates, checkpoints and samples on :math:`\bar w`, and
keeps the iterate in ``trainer.pt`` so that a resumed run continues exactly.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

__all__ = ["WeightAverage"]


class WeightAverage:
    """The averaging state of one run: every periodic validation loss (the trigger's history) and,
    once triggered, the running mean of the parameters that ``optimizer`` updates.

    Args:
        optimizer: whose ``param_groups`` name the parameters averaged (read at each use, so that
            a snapshot ensemble's next member is what is averaged once it trains).
        enabled: ``optimizer="ntasgd"``; otherwise the history is kept and averaging never starts.
        nonmono: the trigger's window, in validations.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, enabled: bool, nonmono: int):
        self.optimizer, self.enabled, self.nonmono = optimizer, enabled, nonmono
        self.history = []                    # every periodic validation loss
        self.average, self.steps = None, 0   # the running mean, and how many iterates it holds

    def parameters(self) -> list:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def observe(self, loss: float) -> bool:
        """Record a periodic validation ``loss``; True when averaging starts now."""
        history = self.history
        history.append(loss)
        if self.enabled and self.average is None and len(history) > self.nonmono \
                and loss > min(history[:-self.nonmono]):
            self.average = [p.detach().clone() for p in self.parameters()]
            self.steps = 1
            return True
        return False

    def update(self) -> None:
        """Fold the parameters after an optimizer step into the mean (nothing before the trigger)."""
        if self.average is None:
            return
        with torch.no_grad():
            self.steps += 1
            for a, p in zip(self.average, self.parameters()):
                a.add_(p.detach() - a, alpha=1.0 / self.steps)

    @contextmanager
    def applied(self):
        """Within this block the parameters hold the average (when averaging), then the iterate again."""
        if self.average is None:
            yield
            return
        params = self.parameters()
        with torch.no_grad():
            iterate = [p.detach().clone() for p in params]
            for p, a in zip(params, self.average):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, x in zip(params, iterate):
                    p.copy_(x)

    def started_at(self, step: int) -> int | None:
        """The first step averaged, given that ``step`` steps have run; None before the trigger."""
        return None if self.average is None else step - self.steps + 1

    # ----- checkpoints: the weights file holds the average, so the iterate is kept here ---------
    def state_dict(self) -> dict:
        """``validation_history``; with ``iterate`` (CPU copies) and ``averaged_steps`` when averaging."""
        saved = {"validation_history": list(self.history)}
        if self.average is not None:
            saved["iterate"] = [p.detach().cpu().clone() for p in self.parameters()]
            saved["averaged_steps"] = self.steps
        return saved

    def load_state_dict(self, saved: dict) -> None:
        """Restore from a trainer state whose model weights (the average, when averaging) are loaded."""
        self.history = list(saved.get("validation_history", []))
        if "iterate" in saved:               # averaging: the weights loaded were the average
            params = self.parameters()
            self.average = [p.detach().clone() for p in params]
            self.steps = saved["averaged_steps"]
            with torch.no_grad():
                for p, x in zip(params, saved["iterate"]):
                    p.copy_(x)
