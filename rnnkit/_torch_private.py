"""Every private torch API rnnkit uses, in this one module, each with what it is for.

A torch release may rename or remove any of them; when one goes, this is the only file to
change, and each has a public fallback or a clear failure where it is used.

- ``sequence_kernels`` / ``step_kernels``: torch's fused RNN kernels (``torch._VF``), as
  ``torch.nn.LSTM`` and ``torch.nn.LSTMCell`` call them: the ``native`` engine and streaming.
- :func:`onednn_matmul`: oneDNN's fp32 matmul against a weight laid out once
  (``torch.ops.mkldnn``), the fused engine's large float32 GEMMs; None where it is missing.
- :func:`swapped_parameters`: a module's parameters replaced for the length of a block
  (``torch.nn.utils.stateless``), the fused engine's DropConnect weights.
"""
from __future__ import annotations

from torch import _VF
from torch.nn.utils.stateless import _reparametrize_module

__all__ = ["sequence_kernels", "step_kernels", "onednn_matmul", "swapped_parameters"]

sequence_kernels = {"LSTM": _VF.lstm, "GRU": _VF.gru, "RNN_TANH": _VF.rnn_tanh, "RNN_RELU": _VF.rnn_relu}
step_kernels = {"LSTM": _VF.lstm_cell, "GRU": _VF.gru_cell, "RNN_TANH": _VF.rnn_tanh_cell,
                "RNN_RELU": _VF.rnn_relu_cell}


def onednn_matmul():
    """``(linear, reorder)``: ``linear(x, reorder(w, rows), bias, "none", [], "") = x @ w^T + bias``,
    or None where this torch build lacks them."""
    import torch

    try:
        if not torch.backends.mkldnn.is_available():
            return None
        return torch.ops.mkldnn._linear_pointwise, torch.ops.mkldnn._reorder_linear_weight
    except (AttributeError, RuntimeError):
        return None


def swapped_parameters(module, tensors: dict):
    """A context manager within which ``module``'s parameters named in ``tensors`` are those tensors."""
    return _reparametrize_module(module, tensors)
