"""Input checks shared by the layers. Every message names the owner, what was
expected and what came, so the person reading it knows what to change."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ._state import State, state_tensors


def _autocast_mix(x: Tensor, like: Tensor) -> bool:
    """Inside ``torch.autocast`` a float32 module meets activations in the autocast dtype, by design."""
    device = x.device.type
    return (x.is_floating_point() and like.is_floating_point() and torch.is_autocast_enabled(device)
            and {x.dtype, like.dtype} <= {torch.float32, torch.get_autocast_dtype(device)})


def check_features(owner: str, what: str, x, size: int, like: Tensor | None, holder: str) -> Tensor:
    """``x`` is a tensor whose last dimension is ``size``, on the dtype and device of
    ``like`` (a parameter or buffer of ``holder``: "layer", "readout", "system")."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{owner}: expected the {what} to be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0 or x.shape[-1] != size:
        got = x.shape[-1] if x.dim() else "a scalar"
        raise ValueError(f"{owner}: expected {what} of size {size} in the last dimension, got {got}")
    if like is not None:
        if x.dtype != like.dtype and not _autocast_mix(x, like):
            raise TypeError(f"{owner}: {what} dtype {x.dtype} does not match the {holder}'s dtype "
                            f"{like.dtype}; convert the {what} with .to({like.dtype}) or the {holder} "
                            f"with .to({x.dtype})")
        if x.device != like.device:
            raise ValueError(f"{owner}: {what} is on {x.device} but the {holder} is on {like.device}; "
                             f"move one of them with .to(device)")
    return x


def check_series(owner: str, what: str, x, size: int) -> Tensor:
    """``x`` is a batch of series, (batch, time, size)."""
    if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != size:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{owner}: expected {what} of shape (batch, time, {size}), got {got}")
    return x


def check_input(owner: str, x, input_size: int, like: Tensor | None, batch_first: bool) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{owner}: expected the input to be a torch.Tensor, got {type(x).__name__}")
    layout = "(batch, time, features)" if batch_first else "(time, batch, features)"
    if x.dim() not in (2, 3):
        raise ValueError(f"{owner}: expected input of rank 3 {layout}, or rank 2 (time, features) "
                         f"for one unbatched sequence, got rank {x.dim()} with shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{owner}: expected a floating-point input, got {x.dtype}; "
                        f"convert it with x.float() (token ids go through an embedding first)")
    check_features(owner, "input", x, input_size, like, "layer")
    time_dim = 0 if (x.dim() == 2 or not batch_first) else 1
    if x.shape[time_dim] == 0:
        raise ValueError(f"{owner}: expected at least one time step, got an input of shape {tuple(x.shape)}")
    return x


def check_lengths(owner: str, lengths, batch_size: int, steps: int) -> Tensor | None:
    """Validated lengths as an int64 tensor, or None when every sequence is full."""
    if lengths is None:
        return None
    if not isinstance(lengths, Tensor):
        if not isinstance(lengths, Sequence) or not all(isinstance(v, int) for v in lengths):
            raise TypeError(f"{owner}: lengths must be a 1-D tensor or a list of ints, got "
                            f"{type(lengths).__name__}")
        lengths = torch.tensor(list(lengths), dtype=torch.int64)
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise TypeError(f"{owner}: lengths must hold integers, got dtype {lengths.dtype}")
    if lengths.shape != (batch_size,):
        raise ValueError(f"{owner}: expected lengths of shape ({batch_size},), one per sequence, "
                         f"got {tuple(lengths.shape)}")
    if batch_size == 0:
        return None                                   # an empty batch has no sequence to cut short
    low, high = int(lengths.min()), int(lengths.max())
    if low < 1:
        raise ValueError(f"{owner}: every length must be at least 1, got a length of {low}")
    if high > steps:
        raise ValueError(f"{owner}: lengths cannot exceed the {steps} time steps of the input, "
                         f"got a length of {high}")
    if low == steps:
        return None
    return lengths.to(torch.int64)


def check_state(owner: str, state: State, sizes, batch_size: int, like: Tensor,
                names: Sequence[str] | None = None) -> None:
    expected = (sizes,) if isinstance(sizes, int) else tuple(sizes)
    tensors = state_tensors(state) if isinstance(state, (Tensor, tuple, list)) else None
    if tensors is None or isinstance(state, Tensor) != isinstance(sizes, int) or len(tensors) != len(expected):
        shape = "a tensor" if isinstance(sizes, int) else f"a tuple of {len(expected)} tensors"
        raise TypeError(f"{owner}: expected the state to be {shape}, got {_describe(state)}")
    for k, (tensor, size) in enumerate(zip(tensors, expected)):
        label = names[k] if names else ("state" if len(expected) == 1 else f"state[{k}]")
        check_tensor_like(owner, label, tensor, (batch_size, size), like)


def check_tensor_like(owner: str, label: str, tensor, shape: tuple, like: Tensor) -> None:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{owner}: expected {label} to be a tensor, got {type(tensor).__name__}")
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"{owner}: expected {label} of shape {tuple(shape)}, got {tuple(tensor.shape)}")
    if tensor.dtype != like.dtype:
        raise TypeError(f"{owner}: {label} has dtype {tensor.dtype} but the input has {like.dtype}")
    if tensor.device != like.device:
        raise ValueError(f"{owner}: {label} is on {tensor.device} but the input is on {like.device}")


def _describe(value) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return type(value).__name__
