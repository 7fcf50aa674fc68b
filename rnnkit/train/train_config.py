"""The trainer's options, :class:`TrainConfig`: saved in every checkpoint, checked when made."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .._arguments import check_number
from .._config import DictConfig
from ..init import SCHEMES
from . import distributed

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig(DictConfig):
    """Training options (saved in every checkpoint). Limits: whichever comes first."""

    batch_size: int = 32
    truncation: int = 64
    optimizer: str = "adam"               # adam | sgd | ntasgd (SGD, then averaged: see Trainer)
    lr: float = 1e-2
    momentum: float = 0.9                 # sgd only
    nonmono: int = 5                      # ntasgd: average once a validation is worse than the best
                                          # of those more than this many checks before it
    weight_decay: float = 0.0
    clip_norm: float | None = 1.0         # clip the global gradient norm
    clip_value: float | None = None       # clip each gradient element
    information_flow: float = 0.0         # weight of Pascanu et al.'s information-flow regularizer (0 = off)
    unk_noise: float = 0.0                # a token seen c times is id 0 (<unk>) w.p. unk_noise / (unk_noise + c)
    recurrent_init: str | None = None     # "orthogonal" | "identity": re-initialise recurrent weights first
    recurrent_gain: float = 1.0           # the scale of recurrent_init's blocks
    schedule: str = "cosine"              # cosine | plateau | constant | step
    cycles: int = 1                       # cosine: restarts, one cycle per 1/cycles of the run (SGDR)
    warmup: float = 0.02                  # fraction of the run spent warming up (cosine)
    min_lr_fraction: float = 0.0          # cosine decays to lr * min_lr_fraction
    plateau_factor: float = 0.5           # plateau: multiply lr by this ...
    plateau_patience: int = 1             # ... after this many validations without improvement
    decay_start: int = 1                  # step: lr * decay_factor ** max(0, epoch + 1 - decay_start),
    decay_factor: float = 0.5             # epoch counted from 0 (Zaremba et al.'s schedule)
    max_minutes: float | None = 2.0
    max_epochs: float | None = None
    max_steps: int | None = None
    eval_every: int = 500                 # steps between validations (and checkpoints)
    eval_tokens: int | None = None        # tokens each evaluation predicts at most (None: all of them;
                                          # rnnkit train caps it, commands/train_options.py says why)
    early_stopping: int | None = None     # stop after this many validations without improvement
    seed: int = 0
    precision: str = "fp32"               # fp32 | bf16 | fp16: autocast's dtype for the forward pass and loss

    def __post_init__(self):
        def positive(name, value, kind=int):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 < value < math.inf          # NaN and infinity too
                                      or (kind is int and int(value) != value)):
                raise ValueError(f"TrainConfig: {name} must be a positive {'integer' if kind is int else 'number'}, "
                                 f"got {value!r}")
        for name in ("batch_size", "truncation", "eval_every", "plateau_patience", "nonmono", "decay_start",
                     "cycles"):
            positive(name, getattr(self, name))
        for name in ("max_steps", "eval_tokens", "early_stopping"):
            positive(name, getattr(self, name))
        for name in ("lr", "max_minutes", "max_epochs", "clip_norm", "clip_value", "recurrent_gain",
                     "decay_factor"):
            positive(name, getattr(self, name), float)
        check_number("TrainConfig", "momentum", self.momentum, low=0.0, high=1.0, high_closed=False)
        check_number("TrainConfig", "weight_decay", self.weight_decay, low=0.0, high_closed=False)
        check_number("TrainConfig", "unk_noise", self.unk_noise, low=0.0, high_closed=False)
        weight = self.information_flow
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise ValueError(f"TrainConfig: information_flow is the regularizer's weight, a number >= 0 "
                             f"(0 = off), got {weight!r}")
        if self.recurrent_init is not None and self.recurrent_init not in SCHEMES:
            raise ValueError(f"TrainConfig: recurrent_init must be None or one of {list(SCHEMES)}, got "
                             f"{self.recurrent_init!r}")
        if self.optimizer not in ("adam", "sgd", "ntasgd"):
            raise ValueError(f"TrainConfig: optimizer must be 'adam', 'sgd' or 'ntasgd', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "plateau", "constant", "step"):
            raise ValueError(f"TrainConfig: schedule must be 'cosine', 'plateau', 'constant' or 'step', got "
                             f"{self.schedule!r}")
        if self.precision not in distributed.PRECISIONS:
            raise ValueError(f"TrainConfig: precision must be 'fp32', 'bf16' or 'fp16', got {self.precision!r}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"TrainConfig: warmup is a fraction of the run in [0, 1), got {self.warmup}")
        if self.cycles > 1 and self.schedule != "cosine":
            raise ValueError(f"TrainConfig: cycles restart the cosine schedule; schedule {self.schedule!r} has "
                             f"none (set schedule='cosine' or cycles=1)")
        if self.cycles > 1 and self.optimizer == "ntasgd":
            raise ValueError("TrainConfig: ntasgd averages the iterates from its trigger on, across any restart "
                             "of the schedule; use cycles=1 with it, or optimizer 'adam' or 'sgd'")
        if self.cycles > 1 and self.warmup >= 1 / self.cycles:
            raise ValueError(f"TrainConfig: the warm-up ({self.warmup} of the run) must end within the first of "
                             f"{self.cycles} cycles; lower warmup below {1 / self.cycles:.3g}")
        if self.max_minutes is None and self.max_epochs is None and self.max_steps is None:
            raise ValueError("TrainConfig: set at least one limit: max_minutes, max_epochs or max_steps")
