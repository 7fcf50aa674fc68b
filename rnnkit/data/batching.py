r"""Batches for truncated backpropagation through time over contiguous streams.

A corpus of ``N`` token ids ``x_0 ... x_{N-1}`` is cut into ``S = batch_size *
world_size`` streams that lie end to end, each of ``L = (N - 1) // S`` input
positions. Stream ``s`` reads the inputs ``x_{sL} ... x_{sL+L-1}`` and predicts
the targets one token ahead, ``x_{sL+1} ... x_{sL+L}``, so the target of a
stream's last input is the first input of the next stream, and the single extra
token that needs is why ``N - 1`` and not ``N`` is divided. The last
``N - 1 - S L`` tokens (fewer than ``S``) are dropped; every other consecutive
pair ``(x_i, x_{i+1})``, ``i < S L``, is a training example exactly once per epoch.

An epoch walks the streams left to right in chunks of ``truncation`` steps::

    stream 0:  [ chunk 0 ][ chunk 1 ] ... [ last ]      inputs  (batch_size, <= truncation)
    stream 1:  [ chunk 0 ][ chunk 1 ] ... [ last ]      targets = inputs shifted by one
    ...

Row ``b`` of chunk ``k + 1`` continues row ``b`` of chunk ``k``, so the hidden state
a model ends chunk ``k`` with is the right initial state for chunk ``k + 1``: the
trainer carries it (detached) from chunk to chunk and resets it at the start of an
epoch. Process ``rank`` of ``world_size`` takes streams
``rank * batch_size ... (rank + 1) * batch_size - 1``; every process sees the same
number of chunks, and together they see exactly the chunks of one process with
``batch_size * world_size`` streams.

>>> import torch
>>> batches = ContiguousBatches(torch.arange(11), batch_size=2, truncation=3)
>>> for inputs, targets in batches:
...     print(inputs.tolist(), targets.tolist())
[[0, 1, 2], [5, 6, 7]] [[1, 2, 3], [6, 7, 8]]
[[3, 4], [8, 9]] [[4, 5], [9, 10]]
>>> len(batches), batches.tokens_per_epoch, batches.state_dict()
(2, 10, {'epoch': 1, 'chunk': 0})
"""
from __future__ import annotations

from numbers import Integral
from typing import Iterator, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .._arguments import check_int

__all__ = ["ContiguousBatches", "evaluation_batches"]


def _check_count(owner: str, name: str, value, fix: str) -> int:
    return check_int(owner, name, value, 1, hint=fix)


def _as_ids(owner: str, ids):
    """``ids`` as a 1-D integer tensor or NumPy array (a token file's memory map stays one)."""
    if hasattr(ids, "tokens") and hasattr(ids, "context"):          # a TokenSplit
        ids = ids.tokens
    if isinstance(ids, np.ndarray):
        if not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"{owner}: expected integer token ids, got dtype {ids.dtype}")
        if ids.ndim != 1:
            raise ValueError(f"{owner}: expected a 1-D sequence of token ids, got shape {ids.shape}")
        return ids
    if not isinstance(ids, Tensor):
        if not isinstance(ids, Sequence) or not all(isinstance(i, Integral) for i in ids):
            raise TypeError(f"{owner}: expected the token ids as a 1-D integer tensor or a list of ints, "
                            f"got {type(ids).__name__}")
        ids = torch.tensor(list(ids), dtype=torch.int64)
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(f"{owner}: expected integer token ids, got dtype {ids.dtype}; "
                        f"encode the text with Vocabulary.encode")
    if ids.dim() != 1:
        raise ValueError(f"{owner}: expected a 1-D sequence of token ids, got shape {tuple(ids.shape)}; "
                         f"flatten it with ids.reshape(-1) if it is one stream")
    return ids.to(torch.int64).contiguous()


def _as_long(block) -> Tensor:
    """A (rows, steps) block of ids as a contiguous int64 tensor (a copy of just that block)."""
    if isinstance(block, np.ndarray):
        return torch.from_numpy(block.astype(np.int64))
    return block.contiguous()


class ResumablePosition:
    """Where a batch source is: ``epoch`` and ``chunk`` (batches handed out this epoch).

    Subclasses define ``__len__`` (batches per epoch) and iterate with
    :meth:`_advance`, which rolls into the next epoch when the last one is used up;
    :meth:`state_dict`/:meth:`load_state_dict` save and restore the position.
    """

    _epoch = 0
    _chunk = 0

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def chunk(self) -> int:
        return self._chunk

    def _advance(self) -> Iterator[int]:
        """The index of each remaining batch of the current epoch, then roll over."""
        if self._chunk >= len(self):        # the last epoch ended without the loop asking for more
            self._epoch, self._chunk = self._epoch + 1, 0
        while self._chunk < len(self):
            index = self._chunk
            self._chunk += 1
            yield index
        self._epoch, self._chunk = self._epoch + 1, 0

    def state_dict(self) -> dict:
        """The position, ``{"epoch": int, "chunk": int}``."""
        return {"epoch": self._epoch, "chunk": self._chunk}

    def load_state_dict(self, state: dict) -> None:
        """Resume at a position :meth:`state_dict` returned."""
        owner = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state, dict) or set(state) != {"epoch", "chunk"}:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{owner}: expected a dict with the keys 'epoch' and 'chunk', got {got}")
        for key in ("epoch", "chunk"):
            value = state[key]
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
                raise ValueError(f"{owner}: {key} must be an int of at least 0, got {value!r}")
        if state["chunk"] > len(self):
            raise ValueError(f"{owner}: chunk {state['chunk']} is past the {len(self)} chunks of an epoch; "
                             f"the position was saved with other data, batch_size, truncation or world_size")
        self._epoch, self._chunk = int(state["epoch"]), int(state["chunk"])


class ContiguousBatches(ResumablePosition):
    """Chunks ``(inputs, targets)`` of ``batch_size`` parallel streams, for truncated BPTT.

    Args:
        ids: the corpus, token ids (N,).
        batch_size: streams of this process, the rows of every chunk.
        truncation: time steps per chunk, the BPTT truncation length; the last chunk
            of an epoch holds what is left (``stream_length % truncation`` steps if
            that is not 0).
        rank, world_size: this process and how many share the corpus (data parallel).
        noise: an optional :class:`~rnnkit.data.noise.UnknownNoise` applied to each chunk's
            tokens (inputs and targets alike: a replaced token is read and predicted as
            unknown); which tokens it replaces depends on the epoch and their place in the
            corpus only, so any batching, rank or resume sees the same.

    Iterating yields int64 tensors ``inputs, targets`` of shape (batch_size, T),
    ``T <= truncation``, with ``targets[:, t]`` the token after ``inputs[:, t]``.
    ``len()`` is the number of chunks per epoch.

    The position is resumable: ``chunk`` counts the chunks of the current ``epoch``
    already handed out, and counts a chunk as soon as it is handed out, so a
    checkpoint written after its optimiser step resumes at the next one.
    Iteration starts where the position says; when an epoch's last chunk has been
    handed out and the loop asks for more, ``epoch`` goes up by one and ``chunk``
    back to 0. One pass at a time: two loops over the same object share the position.

    >>> import torch
    >>> batches = ContiguousBatches(torch.arange(1, 14), batch_size=3, truncation=2)
    >>> batches.stream_length, len(batches)
    (4, 2)
    >>> inputs, targets = next(iter(batches))
    >>> inputs.tolist(), targets.tolist(), batches.state_dict()
    ([[1, 2], [5, 6], [9, 10]], [[2, 3], [6, 7], [10, 11]], {'epoch': 0, 'chunk': 1})
    """

    contiguous = True          # chunk k+1 continues chunk k: the trainer carries the state across

    def __init__(self, ids: Union[Tensor, Sequence[int]], batch_size: int, truncation: int, *,
                 rank: int = 0, world_size: int = 1, noise=None):
        owner = type(self).__name__
        ids = _as_ids(owner, ids)
        self.batch_size = _check_count(owner, "batch_size", batch_size, "pass --batch-size 1 or more")
        self.truncation = _check_count(owner, "truncation", truncation, "pass --truncation 1 or more")
        self.world_size = _check_count(owner, "world_size", world_size, "use 1 for a single process")
        self.rank = check_int(owner, "rank", rank, 0, f"world_size is {world_size}", maximum=world_size - 1)

        streams = self.batch_size * self.world_size
        self.stream_length = (len(ids) - 1) // streams
        if self.stream_length < 1:
            processes = "process" if self.world_size == 1 else "processes"
            raise ValueError(f"the corpus has {len(ids)} tokens, too few for {streams} streams "
                             f"(batch_size {self.batch_size} × {self.world_size} {processes}) of at least "
                             f"2 tokens each; use a smaller --batch-size or more text")
        # this process's streams are one contiguous stretch of the corpus: its shard, and all it
        # ever reads (a token file's memory map is touched only there)
        length = self.batch_size * self.stream_length
        shard = ids[self.rank * length: (self.rank + 1) * length + 1]
        self.shard = (self.rank * length, (self.rank + 1) * length + 1)
        self.noise = noise
        self._inputs = shard[:-1].reshape(self.batch_size, self.stream_length)          # (B, L)
        self._targets = shard[1:].reshape(self.batch_size, self.stream_length)          # (B, L)
        self._chunks = -(-self.stream_length // self.truncation)

    def __len__(self) -> int:
        return self._chunks

    @property
    def tokens_per_epoch(self) -> int:
        """Targets this process predicts per epoch, ``batch_size * stream_length``
        (times ``world_size`` for the whole run)."""
        return self.batch_size * self.stream_length

    def __iter__(self) -> Iterator[Tuple[Tensor, Tensor]]:
        for index in self._advance():
            steps = slice(index * self.truncation, (index + 1) * self.truncation)
            if self.noise is None:
                yield _as_long(self._inputs[:, steps]), _as_long(self._targets[:, steps])
            else:
                yield self._noised(steps)

    def _noised(self, steps: slice) -> Tuple[Tensor, Tensor]:
        """The chunk as one block of tokens (the inputs and the last targets), noised, then split."""
        inputs, targets = self._inputs[:, steps], self._targets[:, steps]
        as_array = (lambda a: a.numpy()) if isinstance(inputs, Tensor) else np.asarray
        block = np.concatenate([as_array(inputs), as_array(targets[:, -1:])], axis=1)
        rows = np.arange(self.batch_size, dtype=np.int64)[:, None] * self.stream_length
        positions = self.shard[0] + rows + steps.start + np.arange(block.shape[1], dtype=np.int64)[None, :]
        block = torch.from_numpy(self.noise(block, positions, self.epoch).astype(np.int64))
        return block[:, :-1].contiguous(), block[:, 1:].contiguous()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(batch_size={self.batch_size}, truncation={self.truncation}, "
                f"stream_length={self.stream_length}, chunks={self._chunks}, rank={self.rank}, "
                f"world_size={self.world_size})")


def evaluation_batches(ids: Union[Tensor, Sequence[int]], batch_size: int, truncation: int
                       ) -> ContiguousBatches:
    """The chunks of a validation set, for a loss computed with carried hidden state.

    The same chunking as training (one process); a validation set too short for
    ``batch_size`` streams gets as many streams as it has, ``min(batch_size, N - 1)``,
    so a small corpus can still be evaluated. The mean loss is the summed loss over
    an epoch's chunks divided by ``tokens_per_epoch``.

    >>> import torch
    >>> batches = evaluation_batches(torch.arange(5), batch_size=64, truncation=8)
    >>> batches.batch_size, [inputs.tolist() for inputs, targets in batches]
    (4, [[[0], [1], [2], [3]]])
    """
    ids = _as_ids("evaluation_batches", ids)
    batch_size = _check_count("evaluation_batches", "batch_size", batch_size, "pass --batch-size 1 or more")
    if len(ids) < 2:
        raise ValueError(f"the validation set has {len(ids)} tokens, too few for one input and one "
                         f"target; use more text or a larger validation fraction")
    return ContiguousBatches(ids, min(batch_size, len(ids) - 1), truncation)
