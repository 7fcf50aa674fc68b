"""Every private torch API rnnkit uses, in this one module, each probed and each with a way out.

A torch release may rename or remove any of them. Each is looked up on first use inside a probe
that catches every failure, and ``RNNKIT_TORCH_PRIVATE=0`` in the environment turns them all off;
either way rnnkit keeps working on public APIs only, as stated below.

- :func:`onednn_matmul`: oneDNN's fp32 matmul against a weight laid out once
  (``torch.ops.mkldnn``), the fused engine's large float32 GEMMs. Without it: ``torch.mm``.
- :func:`swapped_parameters`: a module's parameters replaced for the length of a block
  (``torch.nn.utils.stateless``), the fused engine's DropConnect weights. Without it: the fused
  engine declines cells under a weight-dropping wrapper, and ``auto`` picks another engine.
- :func:`inside_functorch`: whether a ``torch.func`` transform (vmap, grad, jacrev, ...) is
  running (``torch._C._functorch``), so that the NumPy kernels, which no transform can see
  through, hand over to torch's ops. Without it: a clear error from torch inside a transform.
- :func:`flatten_for_cudnn`: one layer's weights laid out in one block of GPU memory
  (``torch._cudnn_rnn_flatten_weight``, what ``torch.nn.LSTM.flatten_parameters()`` calls), so
  that cuDNN takes them as they are. Without it: cuDNN copies them into one block at every call
  (and warns that they are "not part of single contiguous chunk of memory"); the numbers are the same.
- :func:`length_free_rnn_export`: torch's length-free decompositions of its multi-layer LSTM and
  GRU ops (``torch.export._patches``) for the whole of an export, and those ops' dispatch caches
  emptied around it. Without it: torch's exporter uses them while it captures the graph only, so
  the shapes of its program are traced at the example's length, and a second export in one
  process may fix the length altogether (``rnnkit export`` declares its shapes from the input
  through ONNX's shape inference either way).

torch's sequence and step kernels (``torch.lstm``, ``torch.gru_cell``, ...; the functions
``torch.nn.LSTM`` calls) are public names of the ``torch`` namespace and need no fence.
"""
from __future__ import annotations

import contextlib
import os

import torch

__all__ = ["sequence_kernels", "step_kernels", "onednn_matmul", "swapped_parameters", "can_swap_parameters",
           "inside_functorch", "flatten_for_cudnn", "length_free_rnn_export", "enabled"]

sequence_kernels = {"LSTM": torch.lstm, "GRU": torch.gru, "RNN_TANH": torch.rnn_tanh, "RNN_RELU": torch.rnn_relu}
step_kernels = {"LSTM": torch.lstm_cell, "GRU": torch.gru_cell, "RNN_TANH": torch.rnn_tanh_cell,
                "RNN_RELU": torch.rnn_relu_cell}


def enabled() -> bool:
    """False when ``RNNKIT_TORCH_PRIVATE=0``: no private torch API is used."""
    return os.environ.get("RNNKIT_TORCH_PRIVATE", "1").strip() != "0"


def onednn_matmul():
    """``(linear, reorder)``: ``linear(x, reorder(w, rows), bias, "none", [], "") = x @ w^T + bias``,
    or None where this torch build lacks them or they are turned off."""
    if not enabled():
        return None
    try:
        if not torch.backends.mkldnn.is_available():
            return None
        return torch.ops.mkldnn._linear_pointwise, torch.ops.mkldnn._reorder_linear_weight
    except Exception:                      # any failure of a private API means: do without it
        return None


def _reparametrize():
    if not enabled():
        return None
    try:
        from torch.nn.utils.stateless import _reparametrize_module
        return _reparametrize_module
    except Exception:
        return None


def can_swap_parameters() -> bool:
    return _reparametrize() is not None


def swapped_parameters(module, tensors: dict):
    """A context manager within which ``module``'s parameters named in ``tensors`` are those tensors."""
    swap = _reparametrize()
    if swap is None:
        raise RuntimeError("swapped_parameters: torch.nn.utils.stateless is unavailable or turned off "
                           "(RNNKIT_TORCH_PRIVATE=0); check can_swap_parameters() first")
    return swap(module, tensors)


def inside_functorch() -> bool:
    """True while a ``torch.func`` transform runs (False where this cannot be asked)."""
    if not enabled():
        return False
    try:
        return torch._C._functorch.peek_interpreter_stack() is not None
    except Exception:
        return False


def flatten_for_cudnn(weights, mode: str, input_size: int, hidden_size: int, proj_size: int = 0) -> bool:
    """Lay out ``weights`` (one layer and direction of a ``mode`` kernel, "LSTM", "GRU", "RNN_TANH" or
    "RNN_RELU", in torch's order: ``w_ih, w_hh[, b_ih, b_hh][, w_hr]``) in one block of GPU memory, in
    place and under ``torch.no_grad()``, as ``torch.nn.LSTM.flatten_parameters()`` does; True when done.

    The tensors keep their identity and values (an optimizer holding them is unaffected); only their
    storage moves. Does nothing and returns False on the CPU, without cuDNN, for tensors cuDNN does not
    take (mixed dtypes, aliases), when turned off, or when the private API fails: never an error."""
    if not enabled() or not weights:
        return False
    try:
        first = weights[0]
        if not all(isinstance(w, torch.Tensor) and w.is_cuda and w.dtype == first.dtype
                   and torch.backends.cudnn.is_acceptable(w) for w in weights):
            return False
        if len({w.data_ptr() for w in weights}) != len(weights) or not torch._use_cudnn_rnn_flatten_weight():
            return False
        from torch.backends.cudnn import rnn as cudnn_rnn
        with torch.cuda.device_of(first), torch.no_grad():
            torch._cudnn_rnn_flatten_weight(list(weights), len(weights), input_size, cudnn_rnn.get_cudnn_mode(mode),
                                            hidden_size, proj_size, 1, False, False)
        return True
    except Exception:                      # any failure of a private API means: do without it
        return False


@contextlib.contextmanager
def length_free_rnn_export():
    """Within this block, torch's exporters see ``aten.lstm`` and ``aten.gru`` through torch's own
    ``while_loop`` decompositions, which leave the length free (a plain context where they are
    missing or turned off).

    torch's ONNX exporter puts them in place while it captures the graph only: the decomposition
    step after it traces the same ops through the default decompositions, one step per time
    step of the example, so the program declared outputs of the example's length. It puts them
    in place by writing the ops' Python kernels, around the cache in which each op keeps the
    kernel it dispatched to last, so the default kernel, cached by one export, is what the next
    export in the process captures with: an LSTM or GRU whose length is fixed. Hence the caches
    are emptied on entry and on exit."""
    patches, ops = contextlib.ExitStack(), ()
    try:
        if enabled():
            from torch.export._patches import (register_gru_while_loop_decomposition,
                                               register_lstm_while_loop_decomposition)
            ops = (torch.ops.aten.lstm.input, torch.ops.aten.gru.input)
            for op in ops:
                op._dispatch_cache.clear()
            patches.enter_context(register_lstm_while_loop_decomposition())
            patches.enter_context(register_gru_while_loop_decomposition())
    except Exception:                      # any failure of a private API means: do without it
        patches.close()
        ops = ()
    try:
        with patches:
            yield
    finally:
        for op in ops:
            op._dispatch_cache.clear()
