"""What several commands share: where a loaded model runs."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

from .._files import write_text_atomic
from ..train.distributed import DEVICES, choose_device


def add_device(parser) -> None:
    """``--device`` of a command that loads a trained model (training has its own, default auto)."""
    parser.add_argument("--device", choices=DEVICES, default="cpu", help="cpu, cuda, or auto: CUDA when "
                        "torch finds a GPU (default cpu)")


def device(args):
    """The torch device ``--device`` names."""
    return choose_device(args.device, option="--device")


def output_file(path, example: str):
    """``--output`` checked before any work: None (standard output) or a file's path, never a folder
    (``example`` names a file in the message)."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--output '{path}' is a folder; name a file ({example})")
    return path


def picture_file(path):
    """``--plot`` checked before any work: a .png name, and matplotlib there to draw it."""
    if path is None:
        return None
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"--plot '{path}' does not end in .png; name the picture NAME.png")
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        raise ValueError('--plot needs matplotlib, which is not installed: pip install "rnnkit[plot]"') from None
    return path


def run_action(args, actions: dict, needs: dict, purpose: str, install: str) -> int:
    """A command's action ``args.action`` (its function in ``actions``) once every package of ``needs``
    (``{module: the name a user installs}``) imports, else one line: ``purpose`` needs it, and ``install``;
    the library's FileExistsError becomes a one-line error as its ValueErrors are."""
    for module, name in needs.items():
        try:
            importlib.import_module(module)
        except ImportError:
            raise ValueError(f"{purpose} needs {name}, which is not installed: {install}") from None
    try:
        return actions[args.action](args)
    except FileExistsError as error:
        raise ValueError(str(error)) from None


def write_output(text: str, path, summary: str) -> None:
    """``text`` to standard output where ``path`` is None, else written atomically to ``path`` (its folder
    made), and one line saying so: ``wrote PATH: SUMMARY``."""
    if path is None:
        sys.stdout.write(text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    print(f"wrote {path}: {summary}")
