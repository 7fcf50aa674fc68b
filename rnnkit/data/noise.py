r"""Rare-word noise: training words now and then read and predicted as the unknown token.

A word-level model trained on a small text sees ``<unk>`` only where the text has one,
but at test time every word the training text lacks is ``<unk>`` as well: on Penn
Treebank's validation text (66k training words), 4.8% of the training tokens are
``<unk>`` against 10.3% of the test tokens. The model underestimates how often an
unknown word comes, and every one of them costs it.

:class:`UnknownNoise` replaces a training token seen ``c`` times with the unknown token
with probability ``alpha / (alpha + c)`` (the word dropout of Kiperwasser & Goldberg
2016): at ``alpha = 0.5``, ``rnnkit train``'s word-level default, a word seen once is
``<unk>`` a third of the time, a word seen a hundred times almost never. Rare words stand in for the unseen ones, as
Good-Turing counting would have it, and the model learns both how often an unknown
word comes and what to do after one. Evaluation never applies it.

Whether a token is replaced depends only on the seed, the epoch and its position in
the corpus, through a counter-based hash (SplitMix64): the same in every run, on every
rank, and after ``--resume``, however the corpus is cut into batches.

>>> import numpy as np
>>> ids = np.array([3, 3, 3, 3, 4, 5, 3, 3])
>>> noise = UnknownNoise(token_counts(ids), alpha=1.0)
>>> noise.probability[3:].round(3).tolist()              # seen 6, 1 and 1 times
[0.143, 0.5, 0.5]
>>> noised = noise(ids[None, :], np.arange(8)[None, :], epoch=0)
>>> bool(((noised == ids) | (noised == 0)).all())        # a token stays or becomes <unk>
True
"""
from __future__ import annotations

from numbers import Real

import numpy as np

__all__ = ["UnknownNoise", "token_counts", "unknown_noise"]

_BLOCK = 1 << 24                      # tokens counted at a time: memory stays flat in corpus size


def token_counts(ids, minlength: int = 0) -> np.ndarray:
    """How often each id occurs in ``ids`` (a 1-D array, memory map or tensor), counted in blocks."""
    ids = ids.numpy() if hasattr(ids, "numpy") else ids
    counts = np.zeros(minlength, dtype=np.int64)
    for start in range(0, len(ids), _BLOCK):
        block = np.bincount(np.asarray(ids[start:start + _BLOCK]).astype(np.int64), minlength=len(counts))
        if len(block) > len(counts):
            counts = np.concatenate([counts, np.zeros(len(block) - len(counts), dtype=np.int64)])
        counts += block
    return counts


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer on uint64 values (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


class UnknownNoise:
    """Replace token ``i`` with ``unknown`` with probability ``alpha / (alpha + counts[i])``.

    Args:
        counts: how often each id occurs in the training text (:func:`token_counts`).
        alpha: the noise's strength, a number > 0; 0.25 makes a word seen once ``<unk>``
            a fifth of the time.
        unknown: the unknown token's id (rnnkit's vocabularies: 0).
        seed: with the epoch and a token's position, decides which tokens are replaced.
    """

    def __init__(self, counts, alpha: float, *, unknown: int = 0, seed: int = 0):
        if isinstance(alpha, bool) or not isinstance(alpha, Real) or not 0 < alpha < float("inf"):
            raise ValueError(f"UnknownNoise: alpha must be a number > 0, got {alpha!r} (to turn the noise "
                             f"off, do not use it)")
        counts = np.asarray(counts, dtype=np.float64)
        self.alpha, self.unknown, self.seed = float(alpha), int(unknown), int(seed)
        self.probability = np.where(counts > 0, self.alpha / (self.alpha + counts), 0.0)
        if self.unknown < len(self.probability):
            self.probability[self.unknown] = 0.0

    def __call__(self, tokens: np.ndarray, positions: np.ndarray, epoch: int) -> np.ndarray:
        """``tokens`` with some replaced by the unknown token; ``positions`` (same shape) are
        the tokens' places in the corpus, which with ``epoch`` and the seed decide which."""
        tokens = np.asarray(tokens)
        key = _mix(_mix(np.uint64(self.seed)) ^ np.uint64(epoch))
        with np.errstate(over="ignore"):
            bits = _mix(key + np.asarray(positions).astype(np.uint64))
        uniform = (bits >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
        known = np.minimum(tokens.astype(np.int64), len(self.probability) - 1)
        replace = uniform < np.where(tokens < len(self.probability), self.probability[known], 0.0)
        return np.where(replace, np.asarray(self.unknown, dtype=tokens.dtype), tokens)

    def __repr__(self) -> str:
        return f"UnknownNoise(alpha={self.alpha:g}, unknown={self.unknown}, seed={self.seed})"


def unknown_noise(stream, alpha: float, seed: int = 0, *, share=None):
    """The :class:`UnknownNoise` of a training ``stream`` (ids, a memory map or a token file's
    split), its counts taken over the whole stream; None when ``alpha`` is 0. ``share(make)``,
    when given, runs ``make`` once and hands its result to every process (data parallelism:
    one process reads the whole stream, once, and the others only their shards)."""
    if not alpha:
        return None
    count = lambda: token_counts(getattr(stream, "tokens", stream))          # noqa: E731
    return UnknownNoise(count() if share is None else share(count), alpha, seed=seed)
