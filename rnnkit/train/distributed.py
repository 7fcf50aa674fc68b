"""Where each process trains, and data parallelism with ``torch.distributed`` (launched by
``torchrun``, a no-op otherwise).

Each process trains on its own share of the streams; gradients are averaged by
``DistributedDataParallel`` (all-reduces overlapped with the backward pass), so
``P`` processes with batch ``B`` follow the same trajectory as one process with
batch ``P·B``. :func:`choose_device` picks each process's device (``auto``: its GPU, by
``LOCAL_RANK``, when there is one) and :func:`mixed_precision` the autocast and gradient
scaling of a precision.
"""
from __future__ import annotations

import atexit
import os
from contextlib import nullcontext

import torch
import torch.distributed as dist

__all__ = ["DEVICES", "PRECISIONS", "choose_device", "mixed_precision", "setup", "wrap", "is_main",
           "broadcast_parameters", "share_from_main", "synchronize", "teardown"]

DEVICES = ("auto", "cpu", "cuda")
# autocast's dtype for each precision (fp32: no autocast)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def choose_device(device=None, *, option: str | None = None) -> torch.device:
    """The device this process computes on: ``None`` or ``"auto"``: CUDA when torch finds it (this
    process's GPU, ``LOCAL_RANK`` under ``torchrun``), else the CPU; ``"cpu"``; ``"cuda"`` (the local
    GPU) or ``"cuda:N"``; or a :class:`torch.device`. ``option`` names a command-line option in errors."""
    name = "auto" if device is None else str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        chosen = torch.device(name)
    except (RuntimeError, TypeError):
        chosen = None
    if chosen is None or chosen.type not in ("cpu", "cuda"):
        raise ValueError(f"{option or 'device'} must be 'auto', 'cpu' or 'cuda' (or 'cuda:N'), got {device!r}")
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            fix = "--device cpu" if option else "device='cpu'"
            raise ValueError(f"{option + ' ' if option else 'device '}{name}: torch finds no CUDA device on this "
                             f"machine; use {fix}")
        if chosen.index is None:
            chosen = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return chosen


def mixed_precision(device: torch.device, precision: str):
    """``(autocast, scaler)`` for training in ``precision`` ("fp32", "bf16" or "fp16") on ``device``:
    ``autocast()`` is the context the forward pass and the loss run in (``torch.autocast`` with
    bfloat16 or float16; nothing for fp32), ``scaler`` a ``torch.amp.GradScaler``, enabled for fp16 only."""
    dtype = PRECISIONS[precision]
    if precision == "fp16" and device.type != "cuda":
        # measured with torch 2.13: CPU float16 autocast fails in oneDNN's LSTM kernel (the default cell)
        raise ValueError("precision 'fp16' needs a CUDA device; use 'bf16' on the CPU")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision 'bf16' needs a GPU with bfloat16 support, and "
                         f"{torch.cuda.get_device_name(device)} has none; use 'fp16'")

    def autocast():
        return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
    return autocast, torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def setup(device=None, *, option: str | None = None) -> tuple[int, int, torch.device]:
    """``(rank, world_size, device)``; joins the process group when ``torchrun`` started us.
    ``device``: as :func:`choose_device` takes it (default: CUDA when available)."""
    chosen = choose_device(device, option=option)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        # on GPUs, NCCL for the tensors on them and gloo for the few scalars kept on the CPU
        dist.init_process_group("cpu:gloo,cuda:nccl" if chosen.type == "cuda" else "gloo")
        # the group we joined is left before the interpreter starts to shut down: a gloo group
        # still alive at that point can abort the process (SIGABRT) after a run that succeeded
        atexit.register(teardown)
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    return rank, world, chosen


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def broadcast_parameters(model: torch.nn.Module) -> None:
    if dist.is_initialized():
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)


def wrap(step_module: torch.nn.Module) -> torch.nn.Module:
    """``step_module`` inside :class:`~torch.nn.parallel.DistributedDataParallel` when this process is
    one of several: gradients are averaged over the processes by bucketed all-reduces that overlap
    the rest of the backward pass. Unchanged in one process."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return step_module
    where = next(step_module.parameters()).device
    device_ids = [where.index] if where.type == "cuda" else None
    # an adaptive softmax leaves the clusters no target of a batch falls in without a gradient
    return torch.nn.parallel.DistributedDataParallel(step_module, device_ids=device_ids,
                                                     find_unused_parameters=True)


def all_mean(value: float) -> float:
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return t.item() / dist.get_world_size()


def share_from_main(make):
    """``make()`` run by the main process alone, its (picklable) result handed to every process.
    An error there is raised in every process, so that none waits for the others forever."""
    if not dist.is_initialized():
        return make()
    box, failure = [None], None
    if dist.get_rank() == 0:
        try:
            box = [("ok", make())]
        except Exception as error:         # every process stops with the main process's message
            box, failure = [("error", str(error))], error
    dist.broadcast_object_list(box, src=0)
    if box[0][0] == "error":
        if failure is not None:
            raise failure
        raise ValueError(box[0][1])
    return box[0][1]


def synchronize() -> None:
    """Every process waits here for the others (a no-op in one process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
