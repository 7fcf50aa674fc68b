"""Recurrent cells: one transition ``s_t = f_s(s_{t-1}, x_t)`` and its output map each."""
from .base import Cell, State, map_state, state_tensors, state_where
from .elman import ElmanCell
from .gated import GatedCell
from .gru import GRUCell
from .hmm import GaussianHMMFilterCell, HMMFilterCell
from .jordan import JordanCell
from .layernorm import LayerNormGRUCell, LayerNormLSTMCell
from .leaky import LeakyCell
from .linear import LinearLeakyCell, LTICell, MinGRUCell, MinLSTMCell
from .lstm import LSTMCell
from .rate import RateCell
from .reservoir import ReservoirCell

CELLS = {"elman": ElmanCell, "jordan": JordanCell, "gated": GatedCell, "lstm": LSTMCell,
         "gru": GRUCell, "leaky": LeakyCell, "rate": RateCell}
# ReservoirCell (fixed random weights) and HMMFilterCell (states and symbols, not input and
# hidden sizes) are cells too, but not general trainable ones: they are not in the registry.

__all__ = ["Cell", "State", "ElmanCell", "JordanCell", "GatedCell", "LSTMCell", "GRUCell", "LayerNormLSTMCell", "LayerNormGRUCell",
           "LeakyCell", "LinearLeakyCell", "MinGRUCell", "MinLSTMCell", "LTICell", "RateCell", "ReservoirCell", "HMMFilterCell", "GaussianHMMFilterCell", "CELLS",
           "map_state", "state_tensors", "state_where"]
