"""The reused CPU buffers of rnnkit._buffers (the fused engine's, the masks', the HMMs'): a block goes out
again only when nothing refers to it."""
import gc

import numpy as np
import pytest
import torch

import rnnkit
from rnnkit.cells import LSTMCell
from rnnkit.engines import release_memory
from rnnkit._buffers import POOL

SHAPE = (256, 1024)                                             # 1 MiB of float32: pooled


def address(a) -> int:
    return a.__array_interface__["data"][0]


@pytest.fixture(autouse=True)
def empty_pool():
    release_memory()
    yield
    release_memory()


def test_a_freed_block_is_reused_and_a_used_one_never():
    a = POOL.array(SHAPE, np.float32)
    first = address(a)
    b = POOL.array(SHAPE, np.float32)
    assert address(b) != first                                  # a is alive
    del a
    c = POOL.array(SHAPE, np.float32)
    assert address(c) == first                                  # a's block, free again
    t = torch.from_numpy(c)
    view = t[3:5]
    del c, t
    assert address(POOL.array(SHAPE, np.float32)) != first  # a tensor view still uses it
    del view
    assert address(POOL.array(SHAPE, np.float32)) == first
    assert POOL.array(SHAPE, np.float64).shape == SHAPE     # another size: another block
    del b


def test_a_block_held_only_by_a_reference_cycle_is_free_after_collection():
    """Freedom is the death of the block's lease, not a reference count: a cycle keeps the block in use
    until the collector breaks it, and never lets it out twice meanwhile."""
    gc.disable()
    try:
        holder = {"array": POOL.array(SHAPE, np.float32)}
        holder["self"] = holder
        first = address(holder["array"])
        del holder
        assert address(POOL.array(SHAPE, np.float32)) != first      # the cycle still holds it
        gc.collect()
        assert address(POOL.array(SHAPE, np.float32)) == first
    finally:
        gc.enable()


def test_small_requests_bypass_the_pool():
    before = POOL.held_bytes()
    POOL.array((3, 4), np.float32)
    assert POOL.held_bytes() == before


def test_release_frees_only_unused_blocks():
    kept = POOL.array(SHAPE, np.float32)
    POOL.array(SHAPE, np.float64)
    assert release_memory() == SHAPE[0] * SHAPE[1] * 8           # the float64 block, nothing holds it
    assert POOL.held_bytes() == kept.nbytes
    del kept
    assert release_memory() == SHAPE[0] * SHAPE[1] * 4


def test_pool_is_bounded(monkeypatch):
    monkeypatch.setattr(POOL, "max_bytes", 3 * (1 << 20))
    for _ in range(6):
        POOL.array(SHAPE, np.float32)                       # each dropped at once
        POOL.array((512, 1024), np.float32)
    assert POOL.held_bytes() <= 3 * (1 << 20)


def test_training_steps_keep_the_saved_histories_of_a_live_graph_intact():
    """Two forward passes whose graphs are both alive get distinct buffers: backward of the first,
    after the second ran, still gives the gradients of a fresh run."""
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(LSTMCell(8, 256), engine="fused")
    x1, x2 = torch.randn(4, 64, 8), torch.randn(4, 64, 8)
    out1, _ = layer(x1)
    out2, _ = layer(x2)                                         # allocated while out1's graph lives
    (g1,) = torch.autograd.grad(out1.sum(), layer.cell.weight_hh)
    (g2,) = torch.autograd.grad(out2.sum(), layer.cell.weight_hh)
    fresh = rnnkit.Recurrent(layer.cell, engine="loop")
    (w1,) = torch.autograd.grad(fresh(x1)[0].sum(), layer.cell.weight_hh)
    (w2,) = torch.autograd.grad(fresh(x2)[0].sum(), layer.cell.weight_hh)
    torch.testing.assert_close((g1, g2), (w1, w2), rtol=1e-4, atol=1e-4)
