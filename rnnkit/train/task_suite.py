"""The long-dependency suite: which cell solves which task at which length.

Each run builds the model the task's kind calls for (regressor, classifier or
tagger) over one cell, trains it through the shared trainer for a fixed
wall-clock budget, and measures it on fresh test sequences against the task's
memoryless baseline. Used by ``rnnkit bench tasks`` and
``benchmarks/long_dependencies.py``.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass

import torch

from ..data import SequenceBatches
from ..data.tasks import make_task
from ..models import SequenceClassifier, SequenceRegressor, SequenceTagger
from .train_config import TrainConfig
from .trainer import Trainer

__all__ = ["TaskRun", "run_task", "run_suite", "SUITE", "format_table", "as_dicts"]

# (task, size argument, sizes): the default grid
SUITE = [("adding_problem", "length", (50, 100, 200)),
         ("copy_memory", "delay", (10, 50, 100)),
         ("delayed_recall", "delay", (10, 50, 100)),
         ("parity", "length", (8, 16)),
         ("digits_rows", None, (None,))]


@dataclass
class TaskRun:
    task: str
    size: int | None
    cell: str
    metric: str            # "mse", "cross-entropy" or "accuracy"
    value: float
    loss: float            # test loss in the task's own units (MSE or nats)
    baseline: float        # the memoryless baseline's loss
    beats_baseline: bool   # test loss below 90 % of the baseline
    seconds: float
    steps: int


def _model(task, cell: str, hidden_size: int):
    tokens = not task.inputs.is_floating_point()
    shape = dict(input_size=16 if tokens else task.input_size, hidden_size=hidden_size, cell=cell,
                 vocab_size=task.input_size if tokens else None)
    if task.kind == "regression":
        return SequenceRegressor(output_size=task.output_size, **shape)
    if task.kind == "classification":
        return SequenceClassifier(num_classes=task.output_size, **shape)
    if task.targets.dim() == 2:                        # per-step class ids (copy task)
        return SequenceTagger(num_tags=task.output_size, bidirectional=False, **shape)
    raise ValueError(f"run_task: no model for {task.name} (multi-label tagging is not in the suite)")


def _data(name: str, size_arg: str | None, size, count: int, seed: int):
    kwargs = {} if size_arg is None else {size_arg: size}
    if name == "digits_rows":
        return make_task(name, split="train"), make_task(name, split="test")
    return (make_task(name, num_sequences=count, seed=seed, **kwargs),
            make_task(name, num_sequences=max(count // 10, 500), seed=seed + 1, **kwargs))


def _batches(task, batch_size: int, shuffle: bool = True):
    inputs = task.inputs if task.lengths is None else (task.inputs, task.lengths)
    return inputs, SequenceBatches(task.inputs, task.targets, task.lengths, batch_size=batch_size,
                                   shuffle=shuffle)


def run_task(name: str, size_arg: str | None, size, cell: str, *, seconds: float = 30.0,
             hidden_size: int = 64, lr: float = 1e-2, batch_size: int = 64, train_sequences: int = 10_000,
             seed: int = 0) -> TaskRun:
    """Train one cell on one task for ``seconds`` and measure it on held-out sequences."""
    torch.manual_seed(seed)
    train, test = _data(name, size_arg, size, train_sequences, seed)
    model = _model(train, cell, hidden_size)
    _, train_batches = _batches(train, batch_size)
    test_inputs, test_batches = _batches(test, 1024, shuffle=False)
    config = TrainConfig(batch_size=batch_size, lr=lr, max_minutes=seconds / 60, eval_every=10**9,
                         warmup=0.05, seed=seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(model, config, run_dir, progress=False)
        summary = trainer.fit(train_batches, test_batches)
    loss = summary["validation_loss"]
    model.eval()
    if train.kind == "classification":
        with torch.no_grad():
            accuracy = (model.predict(test_inputs) == test.targets).float().mean().item()
        metric, value = "accuracy", accuracy
    elif train.kind == "regression":
        metric, value = "mse", loss
    else:
        metric, value = "cross-entropy", loss
    return TaskRun(task=name, size=size, cell=cell, metric=metric, value=value, loss=loss,
                   baseline=train.baseline, beats_baseline=loss < 0.9 * train.baseline,
                   seconds=time.perf_counter() - started, steps=summary["steps"])


def format_table(runs: list[TaskRun]) -> str:
    """Rows: task and size; columns: cells. A mark shows where the baseline is beaten."""
    cells = list(dict.fromkeys(r.cell for r in runs))
    keys = list(dict.fromkeys((r.task, r.size) for r in runs))
    by_key = {(r.task, r.size, r.cell): r for r in runs}
    header = f"{'task':16} {'size':>5} {'metric':>13} {'baseline':>9} " + " ".join(f"{c:>10}" for c in cells)
    lines = [header, "-" * len(header)]
    for task, size in keys:
        some = next(r for r in runs if (r.task, r.size) == (task, size))
        row = f"{task:16} {'' if size is None else size:>5} {some.metric:>13} {some.baseline:9.4f} "
        for cell in cells:
            r = by_key.get((task, size, cell))
            row += f" {'':>10}" if r is None else f" {r.value:9.4f}{'*' if r.beats_baseline else ' '}"
        lines.append(row)
    lines.append("* = test loss below 90% of the memoryless baseline (accuracy rows: the loss decides)")
    return "\n".join(lines)


def run_suite(suite=SUITE, cells=("elman", "gated", "lstm", "gru"), *, seconds=30.0, progress=print,
              **options) -> list[TaskRun]:
    runs = []
    for name, size_arg, sizes in suite:
        for size in sizes:
            for cell in cells:
                run = run_task(name, size_arg, size, cell, seconds=seconds, **options)
                runs.append(run)
                if progress:
                    progress(f"{name}{'' if size is None else f'({size_arg}={size})'} {cell}: "
                             f"{run.metric} {run.value:.4f} (baseline loss {run.baseline:.4f}, "
                             f"{run.steps} steps, {run.seconds:.0f} s)")
    return runs


def as_dicts(runs: list[TaskRun]) -> list[dict]:
    return [asdict(r) for r in runs]


