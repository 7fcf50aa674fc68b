"""Checkpoints that survive a kill at any instant: the trainer's writer of the format that
:mod:`rnnkit._checkpoint` describes and reads.

A checkpoint folder is written completely under a temporary name and renamed
into place; then the pointer (``latest``, and ``best``) is replaced atomically
(``os.replace``). A crash before the rename leaves only a stray temporary folder;
a crash after it leaves a complete checkpoint. The pointers always name a complete one.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from .._checkpoint import FORMAT_VERSION, NoCheckpointError, checkpoint_dir, read_checkpoint, sha256
from .._files import umask_mode, write_text_atomic

__all__ = ["save_checkpoint", "read_checkpoint", "checkpoint_dir", "NoCheckpointError"]


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
        checksums = {f: sha256(staging / f) for f in ("model.safetensors", "trainer.pt")}
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
