"""The data layer of the language model that ``rnnkit train`` trains.

- :mod:`~rnnkit.data.corpus`: read the text (a file, a directory, standard input,
  or the default corpus of Python's own standard library) and split off validation.
- :mod:`~rnnkit.data.vocab`: characters, words or BPE tokens to ids and back.
- :mod:`~rnnkit.data.tokens`: a corpus tokenized once into a memory-mapped token file.
- :mod:`~rnnkit.data.batching`: contiguous streams cut into chunks for truncated BPTT.
- :mod:`~rnnkit.data.noise`: rare training words read and predicted as ``<unk>`` now and then.
- :mod:`~rnnkit.data.tasks`, :mod:`~rnnkit.data.synthetic`, :mod:`~rnnkit.data.trees`: the
  long-dependency tasks, the copy task and Mackey–Glass series, and trees of expressions.

>>> from rnnkit.data import ContiguousBatches, Vocabulary, split_train_validation
>>> text = "the cat sat on the mat\\n" * 20
>>> vocab = Vocabulary.build(text, level="char")
>>> train, validation = split_train_validation(vocab.encode(text))
>>> batches = ContiguousBatches(train, batch_size=4, truncation=16)
>>> len(vocab), len(train), len(validation), batches.stream_length, len(batches)
(14, 414, 46, 103, 7)
"""
from .batching import ContiguousBatches, evaluation_batches
from .corpus import (DEFAULT_CORPUS_MODULES, DataNotFoundError, default_corpus, describe_default_corpus,
                     read_text, split_train_validation)
from .noise import UnknownNoise, token_counts
from .sequences import SequenceBatches
from .synthetic import copy_task, mackey_glass
from .tasks import TASKS, Task, make_task
from .tokens import TokenFile, TokenFileError, TokenSplit, prepare
from .trees import Tree, TreeBatches, arithmetic_expressions, parse_expression
from .vocab import LEVELS, SPECIAL_TOKENS, Vocabulary

__all__ = ["Vocabulary", "LEVELS", "SPECIAL_TOKENS", "read_text", "DataNotFoundError",
           "DEFAULT_CORPUS_MODULES", "default_corpus", "describe_default_corpus", "split_train_validation",
           "ContiguousBatches", "evaluation_batches", "TokenFile", "TokenFileError", "TokenSplit", "prepare",
           "SequenceBatches", "Task", "TASKS", "make_task", "copy_task", "mackey_glass", "Tree", "TreeBatches",
           "arithmetic_expressions", "parse_expression", "UnknownNoise", "token_counts"]
