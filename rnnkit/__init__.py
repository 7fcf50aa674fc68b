"""rnnkit: recurrent neural networks as state machines ``s_t = f_s(s_{t-1}, x_t)``, ``y_t = f_o(s_t)``.

Cells (:mod:`rnnkit.cells`) define one step; engines (:mod:`rnnkit.engines`)
carry a cell through time; layers compose them; readouts (:mod:`rnnkit.readouts`)
turn states into distributions; :mod:`rnnkit.reference` proves the gradients right.
"""
from ._version import __version__
from . import analysis, cells, data, engines, init, machine, models, readouts, reference, regularizers, streaming, train
from .layers import Bidirectional, Recurrent, Stack
from .shortcuts import GRU, LSTM, ElmanRNN, GatedRNN, LeakyRNN

__all__ = ["analysis", "init", "cells", "data", "engines", "machine", "models", "readouts", "reference", "regularizers", "streaming", "train", "Recurrent", "Stack",
           "Bidirectional", "LSTM", "GRU", "ElmanRNN", "GatedRNN", "LeakyRNN", "__version__"]
