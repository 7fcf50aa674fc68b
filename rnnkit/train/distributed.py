"""Data parallelism with ``torch.distributed``: launched by ``torchrun``, a no-op otherwise.

Each process trains on its own share of the streams; gradients are averaged by
``DistributedDataParallel`` (all-reduces overlapped with the backward pass), so
``P`` processes with batch ``B`` follow the same trajectory as one process with
batch ``P·B``.
"""
from __future__ import annotations

import atexit
import os

import torch
import torch.distributed as dist

__all__ = ["setup", "wrap", "is_main", "broadcast_parameters", "share_from_main", "synchronize",
           "teardown"]


def setup() -> tuple[int, int, torch.device]:
    """``(rank, world_size, device)``; joins the process group when ``torchrun`` started us."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        # the group we joined is left before the interpreter starts to shut down: a gloo group
        # still alive at that point can abort the process (SIGABRT) after a run that succeeded
        atexit.register(teardown)
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


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
    device_ids = [torch.cuda.current_device()] if torch.cuda.is_available() else None
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
