"""Sequence classification and regression as a product: collections of labelled recordings in, a fitted
model out.

:func:`read_collection` reads one from a ``.ts``, CSV or ``.npz`` file; :func:`as_cases` reads a
collection in aeon's conventions and checks it (one line per mistake); :class:`Normalizer` standardizes each channel with the training cases' statistics, :class:`Recipe`
holds the default recipe's settings and :class:`SequenceModel` fits it (trained bidirectional GRUs and
an echo-state reservoir readout, averaged) and saves it; :func:`plot_confusion` draws a confusion
matrix. The scikit-learn estimators in :mod:`rnnkit.sklearn` wrap it. This package needs nothing beyond
rnnkit's own dependencies, but matplotlib to draw (``pip install "rnnkit[plot]"``).
"""
from __future__ import annotations

from .collection import Normalizer, as_cases, batch_cases, check_channels, patch_length
from .files import FORMATS, Collection, format_predictions, read_collection, write_predictions
from .model import TASKS, SequenceModel
from .network import POOLINGS, PooledRNN
from .plots import plot_confusion
from .reservoir import ReservoirReadout
from .training import Recipe

__all__ = ["FORMATS", "Collection", "read_collection", "format_predictions", "write_predictions", "Normalizer", "as_cases", "batch_cases", "check_channels", "patch_length", "TASKS", "SequenceModel",
           "POOLINGS", "PooledRNN", "ReservoirReadout", "Recipe", "plot_confusion"]
