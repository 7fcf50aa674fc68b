"""What every lesson of the course shares: its command line and where its figure goes.

Each lesson is one script, ``python examples/NN_topic.py [--quick] [--out DIR] [--seed N]``:

- it prints what it measured, one ``name: value`` line each (the numbers its page discusses);
- it saves one figure, ``NN_topic.png``, in ``--out`` (default: ``docs/course/figures``, where the
  lesson's page in the documentation site shows it);
- with ``--quick`` it finishes in a few seconds (smaller sizes, fewer steps: the tests run every
  lesson this way); without, it runs the sizes its page describes.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")                       # no screen needed
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "course" / "figures"
if str(ROOT) not in sys.path:               # run from a checkout without installing
    sys.path.insert(0, str(ROOT))


def lesson(description: str, argv=None) -> argparse.Namespace:
    """The lesson's command line: ``--quick``, ``--out``, ``--seed`` (and the seed set in torch)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes: a few seconds (what the tests run)")
    parser.add_argument("--out", type=Path, default=FIGURES, help=f"folder for the figure (default: {FIGURES})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    args = parser.parse_args(argv)
    import torch

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)                 # small models: one thread is fastest, and no oversubscription
    args.started = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    return args


def report(name: str, value, unit: str = "") -> None:
    """One measured number, as ``name: value unit``."""
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    print(f"{name}: {text}{' ' + unit if unit else ''}")


def save(fig, args: argparse.Namespace, name: str) -> Path:
    """Save ``fig`` as ``<out>/<name>.png`` and say where, with the lesson's running time."""
    path = Path(args.out) / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"figure: {path}")
    print(f"seconds: {time.perf_counter() - args.started:.1f}")
    return path
