"""Checkpoints that survive a kill at any instant.

A run directory holds numbered checkpoint folders and two pointer files::

    run/checkpoints/step-00001200/model.safetensors   weights (safetensors)
    run/checkpoints/step-00001200/config.json         everything needed to rebuild the model
    run/checkpoints/step-00001200/trainer.pt          optimizer, data position, RNG, carried state
    run/latest   -> "checkpoints/step-00001200"       what --resume continues from
    run/best     -> "checkpoints/step-00001000"       lowest validation loss: what sample uses

A checkpoint folder is written completely under a temporary name and renamed
into place; then the pointer is replaced atomically (``os.replace``). A crash
before the rename leaves only a stray temporary folder; a crash after it leaves
a complete checkpoint. The pointers always name a complete one.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .._files import umask_mode, write_text_atomic

__all__ = ["save_checkpoint", "read_checkpoint", "checkpoint_dir", "NoCheckpointError"]

FORMAT_VERSION = 1


class NoCheckpointError(FileNotFoundError):
    """Raised when a directory holds no rnnkit checkpoint."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    """``path``'s bytes (a file's, or a folder's entries) on the disk before anything points at them."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(run_dir, step: int, model: torch.nn.Module, config: dict, trainer_state: dict,
                    *, best: bool = False, keep: int = 2) -> Path:
    """Write checkpoint ``step`` into ``run_dir``, point ``latest`` (and ``best``) at it.

    Keeps the newest ``keep`` checkpoints plus the one ``best`` names.
    """
    run_dir = Path(run_dir)
    folder = run_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=f".{name}."))
    umask_mode(staging, directory=True)
    try:
        # shared storage (tied weights) must be saved once; safetensors refuses aliases
        tensors, seen = {}, {}
        for key, value in model.state_dict().items():
            ptr = (value.data_ptr(), value.shape)
            if ptr in seen:
                config.setdefault("aliases", {})[key] = seen[ptr]
                continue
            seen[ptr] = key
            tensors[key] = value.detach().contiguous().cpu()
        record = {"format": FORMAT_VERSION, "step": step, **config}
        text = json.dumps(record, indent=2) + "\n"
        # the config travels in the weights' own metadata too: plain safetensors.torch.load_model (which
        # restores tied weights from the one copy kept) and any safetensors reader see what the file is
        save_file(tensors, str(staging / "model.safetensors"), metadata={"rnnkit_config": text})
        torch.save(trainer_state, staging / "trainer.pt")
        # checksums of the binary files, kept beside them: damage after writing is reported, not sampled
        checksums = {f: _sha256(staging / f) for f in ("model.safetensors", "trainer.pt")}
        (staging / "config.json").write_text(json.dumps({**record, "checksums": checksums}, indent=2) + "\n")
        for written in ("model.safetensors", "config.json", "trainer.pt"):
            umask_mode(staging / written)              # safetensors writes 0600 whatever the umask
            _fsync(staging / written)
        _fsync(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)      # a failed write (a full disk) leaves nothing behind
        raise
    final = folder / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    _fsync(folder)
    relative = f"checkpoints/{name}"
    write_text_atomic(run_dir / "latest", relative + "\n")
    if best or not (run_dir / "best").exists():
        write_text_atomic(run_dir / "best", relative + "\n")
    _prune(run_dir, keep)
    return final


def _prune(run_dir: Path, keep: int) -> None:
    pinned = {(run_dir / p).read_text().strip() for p in ("latest", "best") if (run_dir / p).exists()}
    folders = sorted(p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("step-"))
    for old in folders[:-keep]:
        if f"checkpoints/{old.name}" not in pinned:
            shutil.rmtree(old, ignore_errors=True)
    for stray in (run_dir / "checkpoints").glob(".step-*"):   # left by a crash mid-write
        shutil.rmtree(stray, ignore_errors=True)


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
        if name in checksums and _sha256(folder / name) != checksums[name]:
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
