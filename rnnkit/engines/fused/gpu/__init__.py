"""The fused engine on GPUs: its kernels' forward passes and adjoint recursions as Triton kernels
(:mod:`.kernels`), one launch per sequence, behind the same :class:`~..adjoint.Kernel` objects
(:mod:`.twins`). Triton is optional (``pip install "rnnkit[gpu]"``); without it, or with
``configured(triton="off")``, CUDA runs take the loops on torch operations.

Nothing here imports Triton until a run needs it."""
from __future__ import annotations

import functools

from .._cpu import SETTINGS

__all__ = ["triton_status", "uses_triton", "twin"]


@functools.lru_cache(maxsize=None)
def _import_problem() -> str | None:
    try:
        from . import kernels  # noqa: F401
    except Exception as error:  # noqa: BLE001 - any failure to import means: no Triton path
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        return f"Triton is not usable here ({first}); install it with pip install \"rnnkit[gpu]\""
    return None


def triton_status() -> str | None:
    """None when the fused engine can run its Triton kernels, else why not, in one line."""
    if SETTINGS.triton == "off":
        return "the Triton kernels are turned off (configured(triton='off'))"
    return _import_problem()


# the kernels index with 32-bit offsets: a run whose (T + 1, B, G) histories hold more numbers takes
# the torch loops instead
MAX_ELEMENTS = 2 ** 31 - 1


def uses_triton(device, shape) -> bool:
    """Whether a run on ``device`` whose input side has ``shape`` (T, B, G) can take the Triton kernels: on
    CUDA where Triton imports (``SETTINGS.triton == "auto"``), anywhere when ``"on"``; never for a run too
    large for the kernels' 32-bit offsets. (:func:`rnnkit.engines.select.hand_over` asks, once a run.)"""
    choice = SETTINGS.triton
    if choice == "off" or (choice == "auto" and getattr(device, "type", device) != "cuda"):
        return False
    if len(shape) == 3 and (shape[0] + 1) * shape[1] * shape[2] > MAX_ELEMENTS:
        return False
    if choice == "on":
        if _import_problem() is not None:
            raise RuntimeError(f"fused engine: configured(triton='on') but {_import_problem()}")
        return True
    return _import_problem() is None


def twin(name: str):
    """The Triton kernel object standing in for the CPU kernel of ``name``."""
    from .twins import TWINS
    return TWINS[name]
