"""Reused CPU buffers for the fused engine's (T, B, ·) histories and temporaries.

A fresh large block costs a page fault per page at its first write (on the virtual machines we
measure on, 10 ms per 16 MiB for 4 KiB pages), and the C library hands blocks above 32 MiB back
to the kernel when they are freed, so every training step would pay again. Here a freed block is
kept and handed out again for a request of the same size: like the caching allocators of GPU
frameworks, it trades memory held for time.

A block is free when nothing but the pool refers to it: every NumPy view and every tensor made
from one (``torch.from_numpy``) holds a reference to its base, so a block still in use — a saved
history of a graph not yet freed, an output the caller kept — is never handed out twice.
:func:`release` drops every free block (``rnnkit.engines.release_memory``).
"""
from __future__ import annotations

import math
import sys
import threading

import numpy as np
import torch

__all__ = ["empty", "release", "held_bytes", "NUMPY_DTYPES"]

NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}     # the dtypes a block can hold

# blocks below this size come from malloc as usual (cheap to fault, and reused by malloc itself)
MIN_BYTES = 1 << 20
# free blocks beyond this many bytes in all are released rather than kept
MAX_BYTES = 2 << 30

_blocks: dict = {}               # nbytes -> list of 1-D uint8 arrays
_lock = threading.Lock()


def _refs(block) -> int:
    return sys.getrefcount(block)


def _calibrate() -> int:
    """References to a free block as the loops below see it (the pool's list, the loop variable,
    the argument): measured, not assumed, since interpreters count borrowed references differently."""
    pool = [np.empty(1, np.uint8)]
    for candidate in pool:
        return _refs(candidate)


_FREE_REFS = _calibrate()


def empty(shape, dtype) -> np.ndarray:
    """An uninitialized C-contiguous array, from a reused block when one of its size is free."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(int(n) for n in shape) * dtype.itemsize
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype)
    with _lock:
        same = _blocks.setdefault(nbytes, [])
        block = None
        for candidate in same:
            if _refs(candidate) <= _FREE_REFS:      # nothing else refers to it
                block = candidate
                break
            del candidate
        if block is None:
            _drop_free(MAX_BYTES - nbytes)
            block = np.empty(nbytes, np.uint8)
            same.append(block)
    return block.view(dtype).reshape(shape)


def _drop_free(budget: int) -> int:
    """Release free blocks, largest first, while the pool holds more than ``budget`` bytes (a negative
    budget: every free block); returns the bytes released. The caller holds the lock."""
    total = released = held_bytes()
    if total <= budget:
        return 0
    for nbytes in sorted(_blocks, reverse=True):
        kept = []
        for block in _blocks[nbytes]:
            if total > budget and _refs(block) <= _FREE_REFS:
                total -= nbytes
            else:
                kept.append(block)
            del block
        _blocks[nbytes][:] = kept                   # in place: a caller may hold this list
    return released - total


def held_bytes() -> int:
    """Bytes the pool holds, in use or free."""
    return sum(n * len(blocks) for n, blocks in _blocks.items())


def release() -> int:
    """Drop every free block; returns the bytes released."""
    with _lock:
        return _drop_free(-1)
