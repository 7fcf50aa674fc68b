"""Engines carry a cell through time. All of them must agree with ``loop``."""
from .loop import LoopEngine
from .native import NativeEngine
from .scan import associative_scan, log_matmul
from .select import AUTO_PREFERENCE, ENGINES, get_engine

__all__ = ["LoopEngine", "NativeEngine", "ENGINES", "AUTO_PREFERENCE", "get_engine", "associative_scan", "log_matmul"]
