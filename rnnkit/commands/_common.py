"""What several commands share: where a loaded model runs."""
from __future__ import annotations

from ..train.distributed import DEVICES, choose_device


def add_device(parser) -> None:
    """``--device`` of a command that loads a trained model (training has its own, default auto)."""
    parser.add_argument("--device", choices=DEVICES, default="cpu", help="cpu, cuda, or auto: CUDA when "
                        "torch finds a GPU (default cpu)")


def device(args):
    """The torch device ``--device`` names."""
    return choose_device(args.device, option="--device")
