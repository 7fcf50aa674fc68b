"""NumPy reference models with hand-derived backpropagation through time.

The test oracle of rnnkit: float64, NumPy only (no torch, no autograd), time-major
arrays (``xs`` is (T, B, X), states are (B, H)), weights laid out as in ``torch.nn``.

* Elman: :func:`elman_forward`, :func:`elman_bptt` (softmax cross-entropy readout),
  :func:`elman_jacobians` (per-step state Jacobians).
* LSTM: :func:`lstm_forward`, :func:`lstm_backward`.
* GRU: :func:`gru_forward`, :func:`gru_backward`.

Every backward function takes ``truncation=k`` for truncated BPTT: the loss (or upstream
gradient) of step ``t`` flows back through at most ``k`` transitions.
"""
from .elman import ElmanCache, elman_bptt, elman_forward, elman_jacobians
from .gru import GRUCache, gru_backward, gru_forward
from .lstm import LSTMCache, lstm_backward, lstm_forward

__all__ = ["ElmanCache", "elman_forward", "elman_bptt", "elman_jacobians",
           "LSTMCache", "lstm_forward", "lstm_backward",
           "GRUCache", "gru_forward", "gru_backward"]
