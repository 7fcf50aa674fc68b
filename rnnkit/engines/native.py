"""Dispatch to torch's fused RNN kernels (cuDNN on GPU, oneDNN/ATen on CPU).

Cells that compute exactly what one of torch's kernels computes say so through
``Cell.native_mode()`` and expose their weights in torch's order through
``flat_weights()``; this engine then hands the whole sequence to the kernel.
"""
from __future__ import annotations

import weakref

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .._torch_private import flatten_for_cudnn, sequence_kernels
from ..cells.base import Cell, State, state_tensors
from .handover import tracing_tool

__all__ = ["NativeEngine", "flatten_cell"]

_KERNELS = sequence_kernels
_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}
_FLATTENED = weakref.WeakKeyDictionary()        # cell -> its weights' addresses when last flattened (or tried)


def flatten_cell(cell: Cell) -> bool:
    """On CUDA, ``cell``'s weights in one block of memory for cuDNN (:func:`~rnnkit._torch_private.
    flatten_for_cudnn`), once: again only when they have moved since (``.to()``, ``.cuda()``). True when
    they were laid out now. Nothing on the CPU, for a cell without a torch kernel, or for weights made
    for one run (DropConnect's masked copies): cuDNN copies those at every call anyway."""
    mode = cell.native_mode()
    weights = cell.flat_weights() if mode in _GATES else ()
    if not weights or not weights[0].is_cuda or not all(isinstance(w, torch.nn.Parameter) for w in weights):
        return False
    addresses = tuple(w.data_ptr() for w in weights)
    if _FLATTENED.get(cell) == addresses:
        return False
    projected = len(weights) in (3, 5)                 # (w_ih, w_hh[, b_ih, b_hh], w_hr)
    done = flatten_for_cudnn(weights, mode, weights[0].shape[1], weights[0].shape[0] // _GATES[mode],
                             weights[-1].shape[0] if projected else 0)
    _FLATTENED[cell] = tuple(w.data_ptr() for w in weights)
    return done


@torch.compiler.disable
def _eager(kernel, *args):
    return kernel(*args)


def _call(kernel, *args):
    """torch's sequence kernel: traced into an exported program (where it is one op, ``aten.lstm``
    and the like, with any batch and length), but run eagerly inside a compiled model (inductor's
    lowering of the oneDNN LSTM fails on inputs that need no gradient, and the eager kernel is
    what inductor would call anyway)."""
    if tracing_tool() == "export":
        return kernel(*args)
    return _eager(kernel, *args)


class NativeEngine:
    name = "native"
    # for the hand-over (:func:`.select.hand_over`): torch's sequence kernels have no vmap rule, so inside a
    # torch.func transform the step loop runs (export traces them as one op, torch.compile runs them eagerly)
    opaque_to = {"functorch": ("loop",)}

    def supports(self, cell: Cell) -> str | None:
        mode = cell.native_mode()
        if mode is None:
            return f"{type(cell).__name__} has no fused torch kernel (native runs LSTMCell, GRUCell and ElmanCell)"
        if mode not in _KERNELS:  # pragma: no cover - guards a custom cell's typo
            return f"{type(cell).__name__}.native_mode() returned unknown kernel {mode!r}"
        return None

    def run(self, cell: Cell, x: Tensor, state: State, lengths: Tensor | None):
        mode = cell.native_mode()
        kernel = _KERNELS[mode]
        weights = cell.flat_weights()
        if weights[0].is_cuda and tracing_tool() is None:
            flatten_cell(cell)                              # once: cuDNN then takes the weights as they are
        has_biases = len(weights) >= 4                     # (w_ih, w_hh[, b_ih, b_hh][, w_hr])
        hx = tuple(s.unsqueeze(0) for s in state_tensors(state))      # (1, B, H) each
        hx = hx if mode == "LSTM" else hx[0]
        if lengths is None:
            out, *final = _call(kernel, x, hx, weights, has_biases, 1, 0.0, cell.training, False, True)
            return out, _unpack(final)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        order, restore = packed.sorted_indices, packed.unsorted_indices
        hx = tuple(h.index_select(1, order) for h in hx) if mode == "LSTM" else hx.index_select(1, order)
        data, *final = _call(kernel, packed.data, packed.batch_sizes, hx, weights, has_biases, 1, 0.0,
                             cell.training, False)
        out, _ = pad_packed_sequence(PackedSequence(data, packed.batch_sizes, order, restore),
                                     batch_first=True, total_length=x.shape[1])
        return out, _unpack([h.index_select(1, restore) for h in final])


def _unpack(final) -> State:
    parts = tuple(h[0] for h in final)                                 # drop the layer dimension
    return parts[0] if len(parts) == 1 else parts
