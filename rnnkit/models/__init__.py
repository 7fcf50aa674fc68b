"""Models: an input encoding in front of recurrent layers, a readout behind."""
from .language_model import (CELL_NETWORKS, LanguageModel, LanguageModelConfig, bits_per_token,
                             load_language_model, perplexity)
from .forecaster import Forecaster
from .sequence import SequenceClassifier, SequenceRegressor, SequenceTagger

__all__ = ["LanguageModel", "LanguageModelConfig", "CELL_NETWORKS", "perplexity", "bits_per_token",
           "load_language_model", "SequenceClassifier", "SequenceRegressor", "SequenceTagger",
           "Forecaster"]
