"""Metrics as JSON lines, loggers that receive every record (TensorBoard's among them), the loss plot."""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["MetricsLog", "TensorBoardLogger", "plot_losses"]


class MetricsLog:
    """Append-only JSON-lines log: one object per event (``{"kind": "train", ...}``), each also
    handed to every logger: a callable ``logger(record: dict)`` (for instance a
    :class:`TensorBoardLogger`, or a function that sends it to any other tracker)."""

    def __init__(self, path, enabled: bool = True, loggers=()):
        self.path, self.enabled, self.loggers = Path(path), enabled, list(loggers)

    def write(self, **record) -> None:
        if self.enabled:
            with self.path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            for logger in self.loggers:
                logger(dict(record))

    def flush(self) -> None:
        for logger in self.loggers:
            if hasattr(logger, "flush"):
                logger.flush()

    def read(self) -> list:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


class TensorBoardLogger:
    """Training records as TensorBoard scalars (``torch.utils.tensorboard``; ``pip install
    'rnnkit[tensorboard]'``), against the optimizer step: ``train/loss``, ``train/lr``,
    ``train/grad_norm``, ``validation/loss``, ``test/loss`` and the summary's ``tokens_per_second``.

    >>> trainer = Trainer(model, config, "runs/x", loggers=[TensorBoardLogger("runs/x/tensorboard")])  # doctest: +SKIP
    """

    SCALARS = {"train": ("loss", "lr", "grad_norm", "penalty", "information_flow"),
               "validation": ("loss",), "test": ("loss",)}

    def __init__(self, log_dir):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:        # torch raises this when the tensorboard package is missing
            raise ImportError("TensorBoardLogger needs the tensorboard package: pip install "
                              "'rnnkit[tensorboard]'") from error
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(str(self.log_dir))

    def __call__(self, record: dict) -> None:
        kind, step = record.get("kind"), record.get("step")
        for name in self.SCALARS.get(kind, ()):
            if record.get(name) is not None:
                self.writer.add_scalar(f"{kind}/{name}", record[name], step)
        if kind == "summary" and record.get("tokens_per_second") is not None:
            self.writer.add_scalar("summary/tokens_per_second", record["tokens_per_second"], record.get("steps"))

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


MISSING_MATPLOTLIB = "pip install 'rnnkit[plot]' for matplotlib"
TOO_SHORT = "too few steps to plot"


def plot_losses(metrics_path, png_path) -> tuple:
    """Training and validation loss against tokens seen, and the test loss of the best
    checkpoint: ``(path, None)``, or ``(None, why not)`` when matplotlib is missing or the run
    logged fewer than two points of either curve."""
    records = MetricsLog(metrics_path).read()
    train = [r for r in records if r.get("kind") == "train"]
    valid = [r for r in records if r.get("kind") == "validation"]
    tests = [r for r in records if r.get("kind") == "test"]
    if len(train) < 2 and len(valid) < 2:
        return None, TOO_SHORT
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None, MISSING_MATPLOTLIB
    partial = any(not r.get("full", True) for r in valid)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    if train:
        ax.plot([r["tokens"] / 1e6 for r in train], [r["loss"] for r in train], lw=1, alpha=0.7,
                label="training (batch mean)")
    if valid:
        ax.plot([r["tokens"] / 1e6 for r in valid], [r["loss"] for r in valid], "o-", lw=2,
                label="validation (its first tokens)" if partial else "validation")
        best = min(valid, key=lambda r: r["loss"])
        ax.annotate(f"best {best['loss']:.3f}", (best["tokens"] / 1e6, best["loss"]),
                    textcoords="offset points", xytext=(-10, 12), ha="right")
        if tests:
            ax.plot([best["tokens"] / 1e6], [tests[-1]["loss"]], "*", ms=14, color="black",
                    label=f"test, best checkpoint: {tests[-1]['loss']:.3f}")
    ax.set_xlabel("tokens seen (millions)")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title("rnnkit training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return Path(png_path), None
