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
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..analysis.gradients import record_states
from ..data.batching import ContiguousBatches, evaluation_batches
from ..data.noise import unknown_noise
from ..init import init_recurrent_
from . import distributed, schedule
from .averaging import WeightAverage
from .checkpoint import read_checkpoint, save_checkpoint
from .clipping import clip_gradients
from .evaluation import token_nll
from .guards import Interrupts, RunLock
from .metrics import MetricsLog, plot_losses
from .penalties import information_flow_penalty
from .snapshots import SnapshotCycles
from .train_config import TrainConfig

__all__ = ["TrainConfig", "Trainer", "TrainingDiverged", "detach_state"]


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
    itself is kept in ``trainer.pt`` so that a resumed run continues exactly
    (:class:`~rnnkit.train.averaging.WeightAverage`, in :attr:`averaging`). A snapshot
    ensemble's members take turns with the schedule's cycles
    (:class:`~rnnkit.train.snapshots.SnapshotCycles`).
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
        self.averaging = WeightAverage(self.optimizer, enabled=config.optimizer == "ntasgd", nonmono=config.nonmono)
        self.last_checkpoint_step = None
        self._cycles = SnapshotCycles(self.model, config, self.optimizer)
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
        return schedule.learning_rate(self.config, progress, epoch, self.plateau_scale)

    def averaged(self):
        """Within this block the model holds the averaged weights (when averaging), then its iterate again."""
        return self.averaging.applied()

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
        averaging = self.averaging.state_dict()      # its history keeps its old place among the keys
        # on the CPU, so that a run trained on a GPU resumes anywhere (the optimizer moves its state back)
        saved = {"optimizer": _to_device(self.optimizer.state_dict(), "cpu"), "batches": batches.state_dict(),
                 "step": self.step, "tokens": self.tokens, "elapsed": self.elapsed,
                 "best_validation": self.best_validation, "best_step": self.best_step,
                 "bad_validations": self.bad_validations, "plateau_scale": self.plateau_scale,
                 "validation_history": averaging.pop("validation_history"), "rng": torch.get_rng_state(),
                 "carried_state": _to_device(state, "cpu"), "world_size": self.world_size}
        if self.scaler.is_enabled():
            saved["scaler"] = self.scaler.state_dict()
        saved.update(averaging)             # the iterate, when averaging (the weights file holds the average)
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
        if "scaler" in saved and self.scaler.is_enabled():
            self.scaler.load_state_dict(saved["scaler"])
        self.averaging.load_state_dict(saved)
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
        params = [p for group in self.optimizer.param_groups for p in group["params"]]    # clipped together
        regularize = c.information_flow > 0
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
                if self._cycles.advance(progress):               # DDP's buckets follow the member trained
                    step_module = distributed.wrap(_TrainingStep(self.model))
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
                self.averaging.update()
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
                   "averaging_from": self.averaging.started_at(self.step),
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
        started = self.averaging.observe(loss)
        if started:
            self.metrics.write(kind="event", step=self.step, event="averaging started")
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
        return tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}<{remaining}{postfix}]",
                    desc="training", dynamic_ncols=True)

    def _update_bar(self, bar, progress, smoothed, session) -> None:
        if bar is None:
            return
        bar.n = round(100 * progress, 1)
        rate = (self.tokens - session[1]) / max(self.elapsed - session[0], 1e-9)
        bar.set_postfix_str(f"loss {smoothed:.3f}, {rate / 1e3:.1f}k tok/s", refresh=self.step % 5 == 0)
