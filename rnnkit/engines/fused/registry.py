"""The fused engine's kernels by the names cells give (``Cell.fused_kernel()``): read by the engine
(:mod:`.engine`) and by the compiler's operator (:mod:`.ops`)."""
from __future__ import annotations

from .gru import GRUKernel
from .leaky import GatedKernel, LeakyKernel, RateKernel
from .lstm import LSTMKernel

__all__ = ["KERNELS"]

KERNELS = {"elman": LeakyKernel(), "leaky": LeakyKernel(), "rate": RateKernel(),
           "gated": GatedKernel(), "gru": GRUKernel(layer_norm=False), "layernorm-gru": GRUKernel(layer_norm=True),
           "lstm": LSTMKernel(layer_norm=False), "layernorm-lstm": LSTMKernel(layer_norm=True)}
