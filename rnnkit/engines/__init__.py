"""Engines carry a cell through time. All of them must agree with ``loop``."""
from .fused import FusedEngine, release_memory
from .loop import LoopEngine
from .native import NativeEngine
from .scan import ScanEngine, associative_scan, linear_recurrence, log_linear_recurrence, log_matmul
from .select import AUTO_PREFERENCE, ENGINES, get_engine

__all__ = ["LoopEngine", "NativeEngine", "FusedEngine", "ENGINES", "AUTO_PREFERENCE", "get_engine",
           "ScanEngine", "associative_scan", "linear_recurrence", "log_linear_recurrence", "log_matmul",
           "release_memory"]
