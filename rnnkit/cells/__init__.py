"""Recurrent cells: one transition ``s_t = f_s(s_{t-1}, x_t)`` and its output map each."""
from .base import Cell, State, map_state, state_tensors, state_where
from .wrapper import CellWrapper, RunMasks, unwrap_cell
from .elman import ElmanCell
from .examples import IndRNNCell, MinimalGatedCell, PeepholeLSTMCell, PlainGRUCell
from .gated import GatedCell
from .gru import GRUCell
from .hmm import GaussianHMMFilterCell, HMMFilterCell
from .jordan import JordanCell
from .layernorm import LayerNormGRUCell, LayerNormLSTMCell
from .leaky import LeakyCell
from .linear import LinearLeakyCell, LTICell, MinGRUCell, MinLSTMCell
from .lstm import LSTMCell, ProjectedLSTMCell
from .ntm import NTMCell
from .rate import RateCell
from .reservoir import ReservoirCell

CELLS = {"elman": ElmanCell, "jordan": JordanCell, "gated": GatedCell, "lstm": LSTMCell,
         "gru": GRUCell, "leaky": LeakyCell, "rate": RateCell}
# ReservoirCell (fixed random weights), HMMFilterCell (states and symbols, not input and hidden
# sizes), NTMCell (a controller and a memory) and ProjectedLSTMCell (a third size, proj_size; the
# LSTM network's proj_size=) are cells too, but not general trainable
# recurrences of one input and one hidden size: they are not in the registry.

__all__ = ["Cell", "State", "CellWrapper", "RunMasks", "unwrap_cell", "ElmanCell", "JordanCell", "GatedCell",
           "LSTMCell", "ProjectedLSTMCell", "GRUCell", "LayerNormLSTMCell", "LayerNormGRUCell", "LeakyCell",
           "LinearLeakyCell", "MinGRUCell", "MinLSTMCell", "LTICell", "RateCell", "ReservoirCell", "HMMFilterCell",
           "GaussianHMMFilterCell", "NTMCell", "PlainGRUCell", "PeepholeLSTMCell", "IndRNNCell",
           "MinimalGatedCell", "CELLS", "map_state", "state_tensors", "state_where"]
