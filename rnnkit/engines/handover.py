"""What every engine and :mod:`.select` ask alike: which tool traces this call (:func:`tracing_tool`, the
one hand-over predicate), whether NumPy code may run on a tensor now (:func:`numpy_loops`), the keep
masks of a padded batch (:func:`keep_past_the_end`) and the one refusal of double backward
(:func:`refuse_double_backward`). :mod:`.select` decides with them which engine runs; the engines
only run. Nothing here imports an engine, so that every engine can import it."""
from __future__ import annotations

import torch
from torch import Tensor

from .._buffers import NUMPY_DTYPES
from .._torch_private import inside_functorch

__all__ = ["tracing_tool", "numpy_loops", "keep_past_the_end", "refuse_double_backward", "DOUBLE_BACKWARD"]

DOUBLE_BACKWARD = ("{engine} engine: its backward cannot itself be differentiated (backward with create_graph=True); "
                   "run this layer with engine='loop', or for an LSTMCell, GRUCell or ElmanCell engine='native' "
                   "(on the CPU, engine='auto' trains GRU and Elman cells on fused)")


def tracing_tool() -> str | None:
    """The tool that traces this call, to which loops over NumPy arrays and Triton launches are opaque:
    ``"export"`` (``torch.export`` and the exporters built on it), ``"compile"`` (``torch.compile``; an
    export is compiling too), ``"functorch"`` (a ``torch.func`` transform), or None for an eager call."""
    if torch.compiler.is_exporting():
        return "export"
    if torch.compiler.is_compiling():
        return "compile"
    # asked last: a compiled graph leaves the query out (asking it cost a fifth of an LSTM language model's step)
    return "functorch" if inside_functorch() else None


def numpy_loops(device, dtype) -> bool:
    """Whether NumPy code may run on tensors of ``device`` and ``dtype`` now: on the CPU, in a dtype of
    :data:`~rnnkit._buffers.NUMPY_DTYPES`, in a call no tool traces (their in-place writes into reused
    buffers are invisible to torch.compile, export and torch.func)."""
    return torch.device(device).type == "cpu" and dtype in NUMPY_DTYPES and tracing_tool() is None


def keep_past_the_end(keep: list, lengths: Tensor | None, like: Tensor):
    """For a padded batch of ``T = like.shape[1]`` steps: ``alive`` (T, B), true up to each sequence's end, and
    the keep masks (per state tensor None or (T, B|1, H|1), 1 = keep the old value) with 1 past each end,
    so that a finished sequence keeps its state; without ``lengths``, ``(None, keep)``."""
    if lengths is None:
        return None, keep
    alive = torch.arange(like.shape[1], device=like.device).unsqueeze(1) < lengths.to(like.device)   # (T, B)
    dead = (~alive).unsqueeze(-1)
    return alive, [torch.where(dead, 1.0, k if k is not None else 0.0).to(like.dtype) for k in keep]


def refuse_double_backward(engine: str) -> None:
    """In a backward derived outside autograd (by hand, or from traced graphs): refuse to be differentiated
    again (``create_graph=True``), in the same words for every engine and for the compiled operator."""
    if torch.is_grad_enabled():
        raise RuntimeError(DOUBLE_BACKWARD.format(engine=engine))
