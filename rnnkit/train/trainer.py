"""A small, model-agnostic trainer: truncated BPTT over contiguous streams.

The model only needs ``loss(inputs, targets, state) -> (loss, state)``. The
trainer carries the recurrent state from one chunk of ``truncation`` steps to
the next and detaches it there (truncated backpropagation through time), clips
gradients, schedules the learning rate, validates, checkpoints atomically,
stops on a wall-clock budget, and resumes exactly where a killed run stopped.
"""
from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from .._arguments import check_number
from .._config import DictConfig
from ..data.batching import ContiguousBatches, evaluation_batches
from ..data.noise import unknown_noise
from ..init import SCHEMES, init_recurrent_
from . import distributed
from .checkpoint import read_checkpoint, save_checkpoint
from .clipping import clip_gradients
from .evaluation import token_nll
from .guards import Interrupts, RunLock
from .metrics import MetricsLog, plot_losses

__all__ = ["TrainConfig", "Trainer", "TrainingDiverged", "detach_state"]


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
    eval_tokens: int | None = None        # tokens each evaluation predicts at most (None: all of them)
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
        for name in ("batch_size", "truncation", "eval_every", "plateau_patience", "nonmono", "decay_start"):
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
        if self.max_minutes is None and self.max_epochs is None and self.max_steps is None:
            raise ValueError("TrainConfig: set at least one limit: max_minutes, max_epochs or max_steps")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class _TrainingStep(torch.nn.Module):
    """One training forward, the loss and the model's own penalty (AR/TAR) together, so that
    DistributedDataParallel, which averages the gradients of what its forward computed, sees both."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs, targets, state):
        loss, state = self.model.loss(inputs, targets, state)
        penalty = getattr(self.model, "penalty", None)
        return loss, state, None if penalty is None else penalty()


def detach_state(state):
    """Cut the graph at a chunk boundary; works on tensors and nested tuples/lists."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    return type(state)(detach_state(s) for s in state)


def _is_token_stream(data) -> bool:
    """A 1-D stream of token ids: a tensor, a NumPy array (a token file's memory map) or a TokenSplit."""
    return isinstance(data, (Tensor, np.ndarray)) or (hasattr(data, "tokens") and hasattr(data, "context"))


def _to_device(value, device):
    """Move a tensor, or the tensors in nested tuples, lists and dicts, to ``device``."""
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return type(value)(_to_device(v, device) for v in value) if isinstance(value, (tuple, list)) else value


class Trainer:
    """Train ``model`` on token ids with truncated BPTT.

    Args:
        model: any module with ``loss(inputs, targets, state) -> (loss, state)``; if its
            loss is a mean over fewer items than ``targets.numel()`` (padding, masks),
            ``loss_weight(inputs, targets)`` gives that number, for exact validation means.
            A model with ``token_nll(inputs, targets, state)`` (per-token losses) is evaluated
            exactly on token streams (:func:`rnnkit.train.evaluation.token_nll`); one with
            ``penalty()`` has that term (AR/TAR) added to the loss it is trained on.
        config: :class:`TrainConfig`.
        run_dir: where checkpoints, ``metrics.jsonl`` and ``loss.png`` go.
        checkpoint_config: JSON-serialisable description saved with each checkpoint
            (for a language model: its config and vocabulary), so that a
            checkpoint alone rebuilds the model.
        progress: show a progress bar (main process only).
        on_step: optional ``callback(trainer)`` after every optimizer step.
        loggers: callables that each receive every metrics record (a dict with ``kind``
            "train", "validation", "test", "event" or "summary", and the figures
            ``metrics.jsonl`` gets), on the main process: :class:`~rnnkit.train.TensorBoardLogger`,
            or a few lines that forward them to another tracker.
        device: where to train: ``None`` or "auto" (CUDA when torch finds it, each process's own GPU
            under ``torchrun``, else the CPU), "cpu", "cuda" or a :class:`torch.device`. Not a
            training choice: a run may resume on another device. ``config.precision`` is one: the
            forward pass and the loss (in training and evaluation) run under ``torch.autocast`` in
            bfloat16 (CPU or GPU) or float16 (GPU only, with a ``GradScaler``).

    Remedies for vanishing and exploding gradients, all in :class:`TrainConfig`:
    ``clip_norm`` and ``clip_value`` (clipping); ``recurrent_init`` (orthogonal or identity
    recurrent blocks, applied here when the trainer is built, see
    :func:`rnnkit.init.init_recurrent_`); ``information_flow`` (adds ``λ·Ω``, Pascanu et
    al.'s regularizer from :func:`rnnkit.train.information_flow_penalty`; it
    needs a model whose recurrence runs through ``rnnkit.Recurrent`` layers, and runs them
    on the loop engine, slower than the fused kernels).

    ``optimizer="ntasgd"`` is Merity et al.'s non-monotonically triggered averaged SGD:
    plain SGD until a validation loss is worse than the best one from more than
    ``nonmono`` checks earlier, then SGD whose iterates are averaged from that step on.
    From then on evaluations, checkpoints and samples use the average; the iterate
    itself is kept in ``trainer.pt`` so that a resumed run continues exactly.
    """

    def __init__(self, model: torch.nn.Module, config: TrainConfig, run_dir, *,
                 checkpoint_config: dict | None = None, progress: bool = True,
                 on_step: Callable[["Trainer"], None] | None = None, loggers=(), device=None):
        self.config, self.run_dir = config, Path(run_dir)
        self.rank, self.world_size, self.device = distributed.setup(device)
        self._autocast, self.scaler = distributed.mixed_precision(self.device, config.precision)
        self.model = model.to(self.device)
        if config.recurrent_init is not None:
            init_recurrent_(self.model, config.recurrent_init, config.recurrent_gain)
        self.checkpoint_config = dict(checkpoint_config or {})
        self.progress, self.on_step = progress, on_step
        self.main = distributed.is_main()
        params = [p for p in model.parameters() if p.requires_grad]
        if config.optimizer == "adam":
            self.optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(params, lr=config.lr, weight_decay=config.weight_decay,
                                             momentum=config.momentum if config.optimizer == "sgd" else 0.0)
        self.step = 0
        self.tokens = 0                      # tokens seen by all processes together
        self.elapsed = 0.0                   # training seconds, carried across resumes
        self.best_validation = math.inf
        self.best_step = None
        self.bad_validations = 0
        self.plateau_scale = 1.0
        self.validation_history = []         # every periodic validation loss (ntasgd's trigger)
        self.average, self.averaged_steps = None, 0      # ntasgd: the running mean of the iterates
        self.last_checkpoint_step = None
        self.evaluated = {}                  # tokens predicted by the latest evaluation of each split
        self._last_check = None              # (step, loss) of the latest periodic validation
        self._best_weights = None            # a CPU copy of the best weights, kept when there is a test split
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl", enabled=self.main, loggers=loggers)
        self._interrupts = Interrupts()

    # ----- schedule ----------------------------------------------------------
    def progress_fraction(self, tokens_per_epoch: int) -> float:
        c, parts = self.config, []
        if c.max_steps:
            parts.append(self.step / c.max_steps)
        if c.max_epochs:
            parts.append(self.tokens / (c.max_epochs * tokens_per_epoch))
        if c.max_minutes:
            parts.append(self.elapsed / (60.0 * c.max_minutes))
        return min(1.0, max(parts))

    def learning_rate(self, progress: float, epoch: int = 0) -> float:
        c = self.config
        if c.schedule == "constant":
            return c.lr
        if c.schedule == "plateau":
            return c.lr * self.plateau_scale
        if c.schedule == "step":
            return c.lr * c.decay_factor ** max(0, epoch + 1 - c.decay_start)
        if progress < c.warmup:
            return c.lr * max(progress / c.warmup, 1e-3)
        span = (progress - c.warmup) / (1.0 - c.warmup)
        return c.lr * (c.min_lr_fraction + (1 - c.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * span)))

    # ----- averaged weights (ntasgd) ----------------------------------------------
    def _parameters(self) -> list:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    @contextmanager
    def averaged(self):
        """Within this block the model holds the averaged weights (when averaging), then its iterate again."""
        if self.average is None:
            yield
            return
        params = self._parameters()
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

    def _update_average(self) -> None:
        with torch.no_grad():
            self.averaged_steps += 1
            for a, p in zip(self.average, self._parameters()):
                a.add_(p.detach() - a, alpha=1.0 / self.averaged_steps)

    def _maybe_start_averaging(self, loss: float) -> bool:
        """ntasgd's trigger; True when averaging starts now."""
        c, history = self.config, self.validation_history
        history.append(loss)
        if c.optimizer == "ntasgd" and self.average is None and len(history) > c.nonmono \
                and loss > min(history[:-c.nonmono]):
            self.average = [p.detach().clone() for p in self._parameters()]
            self.averaged_steps = 1
            self.metrics.write(kind="event", step=self.step, event="averaging started")
            return True
        return False

    # ----- evaluation ----------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, data, max_tokens: int | None = None, *, name: str | None = None) -> float:
        """Mean loss per target over ``data``: a token stream (a tensor, an array or a
        :class:`~rnnkit.data.tokens.TokenSplit`; every token predicted once, the first
        ``max_tokens`` when given) or a batch source. Runs on the averaged weights when
        averaging; ``name`` records the count in :attr:`evaluated`."""
        was_training = self.model.training
        self.model.eval()
        try:
            with self.averaged(), self._autocast():
                total, count = self._evaluate(data, max_tokens)
        finally:
            self.model.train(was_training)
        if name is not None:
            self.evaluated[name] = count
        return total / count

    def _evaluate(self, data, max_tokens):
        c = self.config
        if _is_token_stream(data) and hasattr(self.model, "token_nll"):
            return token_nll(self.model, data, batch_size=c.batch_size, truncation=max(c.truncation, 256),
                             max_tokens=max_tokens, device=self.device)
        if _is_token_stream(data):               # a model with a mean loss only: whole chunks
            data = getattr(data, "tokens", data)[: None if max_tokens is None else max_tokens + 1]
            if isinstance(data, np.ndarray):
                data = torch.from_numpy(data.astype(np.int64))
            batch = max(1, min(c.batch_size, (len(data) - 1) // 2))
            pairs = evaluation_batches(data, batch, max(c.truncation, 256))
            carry = True
        else:
            pairs = data.evaluation_batches()
            carry = getattr(data, "contiguous", False)
        total, count, state = 0.0, 0, None
        # a model whose loss averages over fewer targets than targets.numel() (padding, masks)
        # says how many through loss_weight, so batches are weighted by what they really score
        weigh = getattr(self.model, "loss_weight", None)
        for inputs, targets in pairs:
            inputs, targets = _to_device(inputs, self.device), targets.to(self.device)
            loss, state = self.model.loss(inputs, targets, state if carry else None)
            weight = weigh(inputs, targets) if weigh is not None else targets.numel()
            total += loss.item() * weight
            count += weight
        return total, count

    def _whole(self, name: str) -> bool:
        """Whether the latest evaluation of ``name`` scored all of it (fewer tokens than the cap)."""
        cap = self.config.eval_tokens
        return cap is None or self.evaluated.get(name, cap) < cap

    # ----- checkpoints -----------------------------------------------------------
    def _trainer_state(self, batches, state) -> dict:
        # on the CPU, so that a run trained on a GPU resumes anywhere (the optimizer moves its state back)
        saved = {"optimizer": _to_device(self.optimizer.state_dict(), "cpu"), "batches": batches.state_dict(),
                 "step": self.step, "tokens": self.tokens, "elapsed": self.elapsed,
                 "best_validation": self.best_validation, "best_step": self.best_step,
                 "bad_validations": self.bad_validations, "plateau_scale": self.plateau_scale,
                 "validation_history": list(self.validation_history), "rng": torch.get_rng_state(),
                 "carried_state": _to_device(state, "cpu"), "world_size": self.world_size}
        if self.scaler.is_enabled():
            saved["scaler"] = self.scaler.state_dict()
        if self.average is not None:        # the weights file holds the average: keep the iterate here
            saved["iterate"] = [p.detach().cpu().clone() for p in self._parameters()]
            saved["averaged_steps"] = self.averaged_steps
        return saved

    def save(self, batches, state, *, best: bool) -> None:
        if self.main:
            config = {**self.checkpoint_config, "training": self.config.to_dict(),
                      "validation_loss": self.best_validation if best else None}
            trainer_state = self._trainer_state(batches, state)
            with self.averaged():
                save_checkpoint(self.run_dir, self.step, self.model, config, trainer_state, best=best)
        self.last_checkpoint_step = self.step

    def _resume(self, batches):
        weights, _, saved = read_checkpoint(self.run_dir, "latest", with_trainer_state=True)
        if saved["world_size"] != self.world_size:
            raise ValueError(f"cannot resume: the checkpoint was written by {saved['world_size']} "
                             f"process(es), this run has {self.world_size}")
        self.model.load_state_dict(weights)
        self.optimizer.load_state_dict(saved["optimizer"])
        batches.load_state_dict(saved["batches"])
        for key in ("step", "tokens", "elapsed", "best_validation", "bad_validations", "plateau_scale"):
            setattr(self, key, saved[key])
        self.best_step = saved.get("best_step")
        self.validation_history = list(saved.get("validation_history", []))
        if "scaler" in saved and self.scaler.is_enabled():
            self.scaler.load_state_dict(saved["scaler"])
        if "iterate" in saved:               # averaging: the weights were the average
            params = self._parameters()
            self.average = [p.detach().clone() for p in params]
            self.averaged_steps = saved["averaged_steps"]
            with torch.no_grad():
                for p, x in zip(params, saved["iterate"]):
                    p.copy_(x)
        torch.set_rng_state(saved["rng"])
        self.last_checkpoint_step = self.step
        # the log keeps only what the resumed run will not write again
        kept = [r for r in self.metrics.read() if r.get("step", 0) <= self.step]
        if self.main:
            self.metrics.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        return _to_device(saved["carried_state"], self.device)

    def _note_best(self, loss: float, keep_copy: bool) -> bool:
        """Record ``loss`` if it is the best yet; True if it is."""
        if not loss < self.best_validation:
            return False
        self.best_validation, self.best_step = loss, self.step
        if keep_copy:
            with self.averaged():
                self._best_weights = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        return True

    @contextmanager
    def _best(self):
        """Within this block the model holds the weights of the best validation."""
        if self.best_step is None or self.best_step == self.step:
            with self.averaged():
                yield
            return
        current = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        weights = self._best_weights
        if weights is None:                   # chosen before a resume: it is on disk
            weights, _, _ = read_checkpoint(self.run_dir, "best")
        self.model.load_state_dict(weights)
        try:
            yield
        finally:
            self.model.load_state_dict(current)

    # ----- the loop ------------------------------------------------------------------
    def fit(self, train, validation, *, test=None, resume: bool = False) -> dict:
        """Train until a limit is reached; returns a summary (losses, steps, tokens, seconds).

        ``train`` is a token stream (a 1-D tensor, a NumPy array such as a token file's
        memory map, or a :class:`~rnnkit.data.tokens.TokenSplit`; cut into contiguous
        streams for truncated BPTT) or a batch source such as
        :class:`rnnkit.data.SequenceBatches`; ``validation`` and ``test`` likewise. The
        validation loss picks the ``best`` checkpoint; ``test``, when given, is evaluated
        once at the end, on the best weights, and never used for any choice.
        """
        with RunLock(self.run_dir, enabled=self.main), self._interrupts:
            return self._fit(train, validation, test=test, resume=resume)

    def _fit(self, train, validation, *, test=None, resume: bool = False) -> dict:
        c = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(c.seed)
        distributed.broadcast_parameters(self.model)
        if _is_token_stream(train):
            noise = unknown_noise(train, c.unk_noise, c.seed, share=distributed.share_from_main)
            batches = ContiguousBatches(train, c.batch_size, c.truncation, rank=self.rank,
                                        world_size=self.world_size, noise=noise)
        elif c.unk_noise > 0:
            raise ValueError(f"TrainConfig: unk_noise applies to a token stream, and this run trains on "
                             f"{type(train).__name__}; set unk_noise=0 or pass the tokens as one stream")
        else:
            batches = train
        state = self._resume(batches) if resume else None
        tokens_per_epoch = batches.tokens_per_epoch * self.world_size
        carry = getattr(batches, "contiguous", False)      # streams carry state; independent items don't
        params = self._parameters()
        regularize = c.information_flow > 0
        if regularize:                 # the analysis package is needed only for the regularizer
            from ..analysis.gradients import record_states
            from .penalties import information_flow_penalty
        step_module = distributed.wrap(_TrainingStep(self.model))
        keep_best = test is not None
        bar = self._progress_bar()
        self.model.train()
        start, smoothed, stop_reason = time.perf_counter() - self.elapsed, None, None
        session = (self.elapsed, self.tokens)           # for this session's tokens/s
        while stop_reason is None:
            if batches.chunk == 0 or batches.chunk >= len(batches):
                state = None                               # each epoch starts from the zero state
            epoch = iter(batches)
            while True:
                # the limit is checked before the next chunk is drawn: a stopped run's position is
                # the first chunk it did not train on, so that --resume continues exactly there
                # an interruption (Ctrl-C, SIGTERM) on the main process stops every process here
                progress = self._agree(2.0 if self._interrupts.requested else self.progress_fraction(tokens_per_epoch))
                if progress >= 1.0:
                    stop_reason = (f"interrupted ({self._interrupts.requested or 'on the main process'})"
                                   if progress > 1.0 else "limit")
                    break
                try:
                    inputs, targets = next(epoch)
                except StopIteration:
                    break
                lr = self.learning_rate(progress, batches.epoch)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                with self._autocast(), record_states(self.model) if regularize else nullcontext() as recording:
                    loss, state, extra = step_module(_to_device(inputs, self.device), targets.to(self.device),
                                                     state if carry else None)
                penalty = information_flow_penalty(loss, recording) if regularize else None
                state = detach_state(state)
                if not torch.isfinite(loss):
                    where = (f"the last good checkpoint (step {self.last_checkpoint_step}) is in "
                             f"{self.run_dir}" if self.last_checkpoint_step is not None
                             else "no checkpoint had been written yet")
                    raise TrainingDiverged(f"loss became {loss.item()} at step {self.step + 1}; training "
                                           f"stopped and {where}. Lower --lr or clip with --clip-norm.")
                objective = loss if penalty is None else loss + c.information_flow * penalty
                if extra is not None:
                    objective = objective + extra
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(objective).backward()        # fp16: scaled, so that no gradient underflows
                if c.clip_value or c.clip_norm:
                    self.scaler.unscale_(self.optimizer)         # clipped as they are (a no-op unless fp16)
                grad_norm = clip_gradients(self.model, params, c.clip_value, c.clip_norm)
                self.scaler.step(self.optimizer)                 # fp16: skipped when a gradient is not finite
                self.scaler.update()
                if self.average is not None:
                    self._update_average()
                self.step += 1
                self.tokens += targets.numel() * self.world_size
                self.elapsed = time.perf_counter() - start
                value = distributed.all_mean(loss.item())
                smoothed = value if smoothed is None else 0.95 * smoothed + 0.05 * value
                if self.step % 10 == 0 or self.step == 1:
                    terms = {} if penalty is None else {"information_flow": penalty.item()}
                    if extra is not None:
                        terms["penalty"] = float(extra.detach()) if isinstance(extra, Tensor) else float(extra)
                    self.metrics.write(kind="train", step=self.step, tokens=self.tokens, loss=value,
                                       lr=lr, seconds=round(self.elapsed, 3),
                                       grad_norm=None if grad_norm is None else float(grad_norm), **terms)
                self._update_bar(bar, progress, smoothed, session)
                if self.step % c.eval_every == 0:
                    if self._validate(validation, batches, state, bar, keep_best):
                        stop_reason = "early stopping"
                        break
                if self.on_step is not None:
                    self.on_step(self)
        if bar is not None:
            bar.close()
        # the periodic check may have just measured (and saved) these very weights
        just_checked = self._last_check[1] if self._last_check and self._last_check[0] == self.step else None
        if just_checked is not None:
            final_loss = just_checked
        else:
            final_loss = self.evaluate(validation, c.eval_tokens, name="validation")
            improved = self._note_best(final_loss, keep_best)
            self.metrics.write(kind="validation", step=self.step, tokens=self.tokens, loss=final_loss,
                               full=self._whole("validation"), seconds=round(self.elapsed, 3))
            self.save(batches, state, best=improved)
        test_loss = None
        if test is not None:
            with self._best():
                test_loss = self.evaluate(test, c.eval_tokens, name="test")
            self.metrics.write(kind="test", step=self.step, best_step=self.best_step, loss=test_loss,
                               tokens=self.evaluated["test"])
        plot, plot_note = plot_losses(self.metrics.path, self.run_dir / "loss.png") if self.main else (None, None)
        summary = {"validation_loss": final_loss, "best_validation_loss": self.best_validation,
                   "best_step": self.best_step, "test_loss": test_loss,
                   "evaluated_tokens": dict(self.evaluated),
                   "steps": self.step, "tokens": self.tokens, "seconds": self.elapsed,
                   "tokens_per_second": (self.tokens - session[1]) / max(self.elapsed - session[0], 1e-9),
                   "averaging_from": None if self.average is None else self.step - self.averaged_steps + 1,
                   "stopped_by": stop_reason, "plot": str(plot) if plot else None, "plot_note": plot_note}
        self.metrics.write(kind="summary", **summary)
        self.metrics.flush()
        distributed.synchronize()        # the processes leave together: none tears the group down under another
        return summary

    def _validate(self, validation, batches, state, bar, keep_best: bool) -> bool:
        """Periodic validation + checkpoint; True when early stopping says stop."""
        c = self.config
        loss = self.evaluate(validation, c.eval_tokens, name="validation")
        improved = self._note_best(loss, keep_best)
        if improved:
            self.bad_validations = 0
        else:
            self.bad_validations += 1
            if c.schedule == "plateau" and self.bad_validations % c.plateau_patience == 0:
                self.plateau_scale *= c.plateau_factor
        started = self._maybe_start_averaging(loss)
        self.metrics.write(kind="validation", step=self.step, tokens=self.tokens, loss=loss,
                           full=self._whole("validation"), seconds=round(self.elapsed, 3))
        self._last_check = (self.step, loss)
        if bar is not None:
            bar.write(f"step {self.step:>6}  validation loss {loss:.4f}"
                      f"{'  (best)' if improved else ''}"
                      f"{'  (averaging the weights from here on)' if started else ''}")
        self.save(batches, state, best=improved)
        return bool(c.early_stopping and self.bad_validations >= c.early_stopping)

    def _agree(self, progress: float) -> float:
        """All processes use rank 0's clock, so they stop and schedule together."""
        if self.world_size == 1:
            return progress
        value = torch.tensor([progress], dtype=torch.float64)
        torch.distributed.broadcast(value, src=0)
        return value.item()

    def _progress_bar(self):
        if not (self.progress and self.main):
            return None
        from tqdm.auto import tqdm
        return tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}<{remaining}{postfix}]",
                    desc="training", dynamic_ncols=True)

    def _update_bar(self, bar, progress, smoothed, session) -> None:
        if bar is None:
            return
        bar.n = round(100 * progress, 1)
        rate = (self.tokens - session[1]) / max(self.elapsed - session[0], 1e-9)
        bar.set_postfix_str(f"loss {smoothed:.3f}, {rate / 1e3:.1f}k tok/s", refresh=self.step % 5 == 0)
