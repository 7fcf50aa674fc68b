"""Metrics as JSON lines, and the loss plot."""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["MetricsLog", "plot_losses"]


class MetricsLog:
    """Append-only JSON-lines log: one object per event (``{"kind": "train", ...}``)."""

    def __init__(self, path, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled

    def write(self, **record) -> None:
        if self.enabled:
            with self.path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")

    def read(self) -> list:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


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
