"""Models: an input encoding in front of recurrent layers, a readout behind."""
from .language_model import (CELL_NETWORKS, LanguageModel, LanguageModelConfig, LanguageModelStream,
                             bits_per_token, perplexity)
from .ensemble import LanguageModelEnsemble, LanguageModelEnsembleStream
from .loading import build_language_model, load_language_model
from .esn import (EchoStateNetwork, closed_loop_horizon, mackey_glass, nrmse, recursive_least_squares,
                  ridge_regression)
from .forecaster import Forecaster
from .hmm import (CategoricalHMM, GaussianHMM, hmm_filter, hmm_parallel_filter, hmm_parallel_log_likelihood,
                  hmm_sample, hmm_smoother, hmm_viterbi)
from .memory import NeuralTuringMachine, NTMCell, copy_task
from .seq2seq import Attention, Decoded, Seq2Seq, VectorToSequence
from .sequence import SequenceClassifier, SequenceRegressor, SequenceTagger
from .tree import Tree, TreeBatches, TreeRNN, arithmetic_expressions, parse_expression

__all__ = ["LanguageModel", "LanguageModelConfig", "LanguageModelStream", "CELL_NETWORKS", "perplexity", "bits_per_token",
           "load_language_model", "build_language_model", "LanguageModelEnsemble", "LanguageModelEnsembleStream",
           "SequenceClassifier", "SequenceRegressor", "SequenceTagger",
           "Forecaster", "Seq2Seq", "VectorToSequence", "Attention", "Decoded",
           "Tree", "TreeRNN", "TreeBatches", "parse_expression", "arithmetic_expressions",
           "NeuralTuringMachine", "NTMCell", "copy_task", "EchoStateNetwork", "mackey_glass",
           "closed_loop_horizon", "nrmse", "recursive_least_squares", "ridge_regression",
           "CategoricalHMM", "GaussianHMM", "hmm_filter", "hmm_parallel_filter", "hmm_smoother", "hmm_viterbi", "hmm_sample",
           "hmm_parallel_log_likelihood"]
