"""The checkpoint file format, and reading it: what both the trainer (which writes checkpoints,
:mod:`rnnkit.train.checkpoint`) and :func:`rnnkit.models.load_language_model` (which reads them)
agree on, kept below both.

A run directory holds numbered checkpoint folders and two pointer files::

    run/checkpoints/step-00001200/model.safetensors   weights (safetensors)
    run/checkpoints/step-00001200/config.json         everything needed to rebuild the model
    run/checkpoints/step-00001200/trainer.pt          optimizer, data position, RNG, carried state
    run/latest   -> "checkpoints/step-00001200"       what --resume continues from
    run/best     -> "checkpoints/step-00001000"       lowest validation loss: what sample uses

``config.json`` holds ``format`` (:data:`FORMAT_VERSION`), ``step``, what the trainer was given
to describe the model, ``aliases`` (tied weights, saved once: alias -> the key saved) and the
SHA-256 ``checksums`` of the two binary files.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

__all__ = ["FORMAT_VERSION", "NoCheckpointError", "sha256", "checkpoint_dir", "read_checkpoint"]

FORMAT_VERSION = 1


class NoCheckpointError(FileNotFoundError):
    """Raised when a directory holds no rnnkit checkpoint."""


def sha256(path: Path) -> str:
    """The hex SHA-256 of the file at ``path``, read in blocks (a checkpoint's checksums)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_dir(run_dir, which: str = "best") -> Path:
    """The checkpoint folder that ``run_dir/which`` points at."""
    run_dir = Path(run_dir)
    if which not in ("best", "latest"):
        raise ValueError(f"which must be 'best' or 'latest', got {which!r}")
    if not run_dir.is_dir():
        raise NoCheckpointError(f"no such run directory: '{run_dir}'; pass the --out directory "
                                f"of an `rnnkit train` run")
    pointer = run_dir / which
    if not pointer.exists():
        raise NoCheckpointError(f"'{run_dir}' holds no rnnkit checkpoint (no '{which}' file); pass the "
                                f"--out directory of an `rnnkit train` run, or train one first")
    folder = run_dir / pointer.read_text().strip()
    if not (folder / "model.safetensors").exists():
        raise NoCheckpointError(f"'{pointer}' names {folder}, which is missing or incomplete")
    return folder


def _other(which: str) -> str:
    return "--checkpoint latest" if which == "best" else "--checkpoint best"


def read_checkpoint(run_dir, which: str = "best", *, with_trainer_state: bool = False):
    """``(state_dict, config, trainer_state or None)`` of the checkpoint ``which`` names."""
    folder = checkpoint_dir(run_dir, which)
    config = json.loads((folder / "config.json").read_text())
    if config.get("format") != FORMAT_VERSION:
        raise ValueError(f"{folder} has checkpoint format {config.get('format')!r}; this rnnkit reads "
                         f"format {FORMAT_VERSION}")
    checksums = config.pop("checksums", {})
    for name in ("model.safetensors",) + (("trainer.pt",) if with_trainer_state else ()):
        if name in checksums and sha256(folder / name) != checksums[name]:
            raise ValueError(f"{folder / name} is damaged (its checksum differs from the one saved with it); "
                             f"use the run's other checkpoint ({_other(which)}), or train again")
    try:
        state = load_file(str(folder / "model.safetensors"))
    except Exception as error:               # a truncated or foreign file: one line, not a traceback
        raise ValueError(f"{folder / 'model.safetensors'} cannot be read ({error}); use the run's other "
                         f"checkpoint ({_other(which)}), or train again") from None
    for alias, source in config.get("aliases", {}).items():
        state[alias] = state[source]
    trainer_state = None
    if with_trainer_state:
        trainer_state = torch.load(folder / "trainer.pt", weights_only=True)
    return state, config, trainer_state
