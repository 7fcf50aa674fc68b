"""Minibatches of a fixed dataset of sequences (classification, tagging, seq2seq, forecasting).

The batch-source protocol the trainer reads: iterate to get ``(inputs, targets)``
pairs, ``contiguous`` (whether the state carries from one batch to the next), ``len()`` batches per epoch, ``epoch`` and ``chunk`` (batches handed out
this epoch), ``state_dict()``/``load_state_dict()`` to resume mid-epoch,
``tokens_per_epoch`` (targets per epoch for this process) and
``evaluation_batches()`` (every item once, fixed order).
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

from .._arguments import check_int
from .batching import ResumablePosition

__all__ = ["SequenceBatches"]


class SequenceBatches(ResumablePosition):
    """Shuffled, resumable minibatches of ``(inputs, targets[, lengths])``.

    ``inputs`` (N, ...) and ``targets`` (N, ...) share their first dimension;
    ``lengths`` (N,) marks padded sequences. Batches yield ``((x, lengths), y)``
    when lengths are given, else ``(x, y)``. The order of epoch ``e`` is a
    permutation seeded by ``(seed, e)``, so a resumed run sees the same batches.
    With ``world_size`` processes each batch of ``batch_size · world_size`` items
    is split between them by ``rank``.

    >>> import torch
    >>> data = SequenceBatches(torch.randn(10, 5, 3), torch.arange(10), batch_size=4, seed=0)
    >>> [tuple(x.shape) for x, y in data]
    [(4, 5, 3), (4, 5, 3), (2, 5, 3)]
    """

    contiguous = False         # items are independent: no state is carried between batches

    def __init__(self, inputs: Tensor, targets: Tensor, lengths: Tensor | None = None, *, batch_size: int,
                 shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1):
        name = type(self).__name__
        if len(inputs) != len(targets) or (lengths is not None and len(lengths) != len(inputs)):
            raise ValueError(f"{name}: inputs, targets and lengths must have the same first dimension, got "
                             f"{len(inputs)}, {len(targets)}"
                             + ("" if lengths is None else f" and {len(lengths)}"))
        if len(inputs) == 0:
            raise ValueError(f"{name}: the dataset is empty")
        check_int(name, "batch_size", batch_size)
        if len(inputs) < batch_size * world_size and world_size > 1:
            raise ValueError(f"{name}: {len(inputs)} items are too few for {world_size} processes with "
                             f"batch_size {batch_size}")
        self.inputs, self.targets, self.lengths = inputs, targets, lengths
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return -(-len(self.inputs) // (self.batch_size * self.world_size))

    @property
    def tokens_per_epoch(self) -> int:
        per_item = self.targets[0].numel()
        return per_item * len(self.inputs) // self.world_size

    def _order(self) -> Tensor:
        if not self.shuffle:
            return torch.arange(len(self.inputs))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self._epoch)
        return torch.randperm(len(self.inputs), generator=generator)

    def _take(self, index: Tensor):
        x, y = self.inputs[index], self.targets[index]
        return ((x, self.lengths[index]) if self.lengths is not None else x), y

    def __iter__(self) -> Iterator:
        step, order = self.batch_size * self.world_size, None
        for index in self._advance():
            if order is None:                       # after _advance has settled the epoch
                order = self._order()
            group = order[index * step: (index + 1) * step]
            yield self._take(group.tensor_split(self.world_size)[self.rank])

    def evaluation_batches(self) -> Iterator:
        for start in range(0, len(self.inputs), self.batch_size):
            yield self._take(torch.arange(start, min(start + self.batch_size, len(self.inputs))))
