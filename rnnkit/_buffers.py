"""Reused CPU buffers: NumPy blocks kept from one training step to the next (:data:`POOL`), handed out
by :func:`empty`, with :func:`dense` and :func:`times` built on it; :data:`NUMPY_DTYPES` and
:func:`numpy_backed` say which tensors NumPy code can work on. The bottom layer that the fused engine,
the regularizers' masks and the HMMs' forward-backward passes share (it imports nothing of rnnkit)."""
from __future__ import annotations

import math
import threading
import weakref

import numpy as np
import torch
from torch import Tensor

__all__ = ["POOL", "BufferPool", "NUMPY_DTYPES", "numpy_backed", "empty", "dense", "times"]

NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}     # the dtypes NumPy loops run


def numpy_backed(like: Tensor) -> bool:
    """Whether NumPy code can work on ``like``'s memory: a CPU tensor of a dtype of :data:`NUMPY_DTYPES`.
    (Whether it may, where a tool traces the call, is :func:`rnnkit.engines.handover.numpy_loops`.)"""
    return like.device.type == "cpu" and like.dtype in NUMPY_DTYPES


def dense(t: Tensor, copy: bool = False) -> Tensor:
    """``t`` laid out contiguously (a copy with ``copy``), into an :func:`empty` buffer (an incoming
    gradient is often a broadcast or transposed view)."""
    if t.is_contiguous() and not copy:
        return t
    return empty(t, *t.shape).copy_(t)


def times(P: Tensor, scale: Tensor) -> Tensor:
    """``P * scale`` into an :func:`empty` buffer."""
    return torch.mul(P, scale, out=empty(P, *P.shape))


def empty(like: Tensor, *shape) -> Tensor:
    """An uninitialized buffer. On CPU a NumPy block, reused from one training step to the next
    (:data:`POOL`): a fresh (T, B, G) history costs a page fault per page at its first write
    (measured: 16 MiB written once in 10 ms and more from torch.empty, on a virtual machine where faults
    are dear, 0.7 ms from NumPy, which asks for huge pages, and nothing from a reused block). The loops
    write every element before reading it."""
    if numpy_backed(like):
        return torch.from_numpy(POOL.array(shape, NUMPY_DTYPES[like.dtype]))
    return torch.empty(shape, dtype=like.dtype, device=like.device)


class BufferPool:
    """NumPy blocks for the loops' (T, B, ·) histories and temporaries, reused between training steps.

    A fresh large block costs a page fault per page at its first write (on the virtual machines we
    measure on, 10 ms per 16 MiB for 4 KiB pages), and the C library hands blocks above 32 MiB back to
    the kernel when they are freed, so every training step would pay again. A block is handed out
    through a fresh *lease*: an array over the block that every view, and every tensor made from one
    (``torch.from_numpy``), refers to (NumPy collapses a view's base to it). The pool keeps only a
    weak reference to the lease, so the block is free again exactly when the lease is gone: no
    reference counts are read, and an interpreter that frees objects later only delays the reuse.

    Requests below ``min_bytes`` bypass the pool; free blocks beyond ``max_bytes`` in all are
    dropped, largest first.
    """

    def __init__(self, min_bytes: int = 1 << 20, max_bytes: int = 2 << 30):
        self.min_bytes, self.max_bytes = min_bytes, max_bytes
        self._blocks: dict = {}                 # nbytes -> list of [block, weak reference to its lease]
        self._lock = threading.Lock()

    def array(self, shape, dtype) -> np.ndarray:
        """An uninitialized C-contiguous array, on a free block of its size when there is one."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(int(n) for n in shape) * dtype.itemsize
        if nbytes < self.min_bytes:
            return np.empty(shape, dtype)
        with self._lock:
            same = self._blocks.setdefault(nbytes, [])
            entry = next((e for e in same if e[1]() is None), None)
            if entry is None:
                self._drop_free(self.max_bytes - nbytes)
                entry = [np.empty(nbytes, np.uint8), None]
                same.append(entry)
            lease = np.frombuffer(memoryview(entry[0]), np.uint8)
            entry[1] = weakref.ref(lease)
        return lease.view(dtype).reshape(shape)

    def _drop_free(self, budget: int) -> int:
        """Drop free blocks, largest first, while the pool holds more than ``budget`` bytes (a negative
        budget: every free block); returns the bytes dropped. The caller holds the lock."""
        total = held = self.held_bytes()
        for nbytes in sorted(self._blocks, reverse=True):
            if total <= budget:
                break
            kept = []
            for entry in self._blocks[nbytes]:
                if total > budget and entry[1]() is None:
                    total -= nbytes
                else:
                    kept.append(entry)
            self._blocks[nbytes] = kept
        return held - total

    def held_bytes(self) -> int:
        """Bytes the pool holds, in use or free."""
        return sum(n * len(entries) for n, entries in self._blocks.items())

    def release(self) -> int:
        """Drop every free block; returns the bytes released."""
        with self._lock:
            return self._drop_free(-1)


POOL = BufferPool()
