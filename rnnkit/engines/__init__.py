"""Engines carry a cell through time. All of them must agree with ``loop``."""
from .fused import FUSED_CELLS, FusedEngine
from .loop import LoopEngine
from .native import NativeEngine
from .scan import ScanEngine, associative_scan, linear_recurrence, log_linear_recurrence, log_matmul
from .select import AUTO_PREFERENCE, ENGINES, get_engine


def release_memory() -> int:
    """Free the CPU buffers the fused engine keeps for reuse between training steps (those no tensor
    still uses); returns the bytes released. Free blocks beyond 2 GiB in all are released anyway
    (``rnnkit._buffers.MAX_BYTES``)."""
    from .. import _buffers
    return _buffers.release()


__all__ = ["LoopEngine", "NativeEngine", "FusedEngine", "FUSED_CELLS", "ENGINES", "AUTO_PREFERENCE", "get_engine",
           "ScanEngine", "associative_scan", "linear_recurrence", "log_linear_recurrence", "log_matmul",
           "release_memory"]
