"""The traced engine: any cell whose step is written in torch operations, at the speed of a whole-sequence
kernel. :mod:`.graph` traces the step and its derivative once per cell and shape; :mod:`.lowering` runs the
graphs over time, as generated NumPy code on the CPU; :mod:`.engine` is the engine and its autograd Function."""
from .engine import TracedEngine, reason
from .lowering import SETTINGS

__all__ = ["TracedEngine", "reason", "SETTINGS"]
