"""The fused engine on the CPU: its settings, the operations its loops use, and reused buffers.

- :data:`SETTINGS` / :func:`configured`: which paths a run takes (tests and benchmarks steer the
  engine through them, never through module globals).
- :class:`NumpyOps` and :class:`TorchOps`: the few operations the loops are written against, on
  NumPy arrays (CPU float32/float64: a third of torch's call overhead) or torch tensors (anything
  else). :func:`ops_for` picks one for a run.
- :func:`onednn`: oneDNN's fp32 matmul as torch ships it, behind a probe that runs once, on first
  use, and checks a product against its known value.

The buffers the loops write into come from :mod:`rnnkit._buffers`.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from ..._buffers import NUMPY_DTYPES, numpy_backed
from ..._torch_private import onednn_matmul

__all__ = ["SETTINGS", "configured", "onednn", "NumpyOps", "TorchOps", "ops_for", "gemm_tn", "numpy_or_none",
           "compiled"]


class Settings:
    """Which paths the fused engine takes. Every default is the fast choice; each other
    value selects a slow twin or forces a path, for the tests that compare them.

    - ``numpy_gemm_max``: a step's GEMM with at most this many multiply-adds (B·G·H) runs in
      NumPy's BLAS; a larger one in oneDNN (float32) or torch's BLAS (which follows
      ``torch.set_num_threads``).
    - ``chunk_elements``: the backward's per-step coefficients are computed this many elements
      at a time (sized to stay in cache).
    - ``backend``: ``"auto"`` (NumPy loops on CPU float32/float64, torch elsewhere) or ``"torch"``
      (torch operations everywhere: the path of GPUs and other dtypes).
    - ``onednn``: ``"auto"`` (oneDNN's matmul where the probe finds it), ``None`` (never: torch's
      BLAS instead), or a ``(linear, reorder)`` pair standing in for it.
    - ``compiled``: ``"auto"`` (numba's LSTM steps where numba is installed and they pay),
      ``"off"`` (the NumPy loops, their twin) or ``"stepwise"`` (a compiled step after each GEMM,
      in every dtype, never the whole-sequence loop).
    - ``triton``: ``"auto"`` (the Triton kernels of :mod:`.gpu` on CUDA where Triton imports),
      ``"off"`` (the loops on torch operations on every device: their twin) or ``"on"`` (Triton on
      any device: on the CPU under Triton's interpreter, ``TRITON_INTERPRET=1``, for the tests).
    - ``triton_blocks``: None (the kernels' own tile sizes) or ``(rows, hidden, inner)`` powers of
      two of at least 16, to force the tiled paths in the tests.
    """
    CHOICES = {"backend": ("auto", "torch"), "compiled": ("auto", "off", "stepwise"), "triton": ("auto", "off", "on")}

    def __init__(self):
        self.numpy_gemm_max = 2 ** 20
        self.chunk_elements = 2 ** 17
        self.backend = "auto"
        self.onednn = "auto"
        self.compiled = "auto"
        self.triton = "auto"
        self.triton_blocks = None

    def __repr__(self) -> str:
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in vars(self).items()) + ")"


SETTINGS = Settings()


@contextlib.contextmanager
def configured(**changes):
    """Within the block the fused engine runs with ``changes`` to :data:`SETTINGS`, then as before.

    >>> with configured(backend="torch"):           # the loops on torch operations
    ...     pass
    """
    for name, value in changes.items():
        if name not in vars(SETTINGS):
            raise TypeError(f"configured: unknown setting {name!r}; the settings are {sorted(vars(SETTINGS))}")
        if name in Settings.CHOICES and value not in Settings.CHOICES[name]:
            raise ValueError(f"configured: {name} must be one of {Settings.CHOICES[name]}, got {value!r}")
    before = {name: getattr(SETTINGS, name) for name in changes}
    vars(SETTINGS).update(changes)
    try:
        yield SETTINGS
    finally:
        vars(SETTINGS).update(before)


_PROBED = []


def _probe_onednn():
    """oneDNN's fp32 matmul as torch ships it (``x @ w^T`` against a weight laid out once), or None
    where this build or CPU lacks it or it gives a wrong product. On CPUs with AVX-512 it runs a
    step's large GEMM about twice as fast as torch.mm or NumPy (the MKL/OpenBLAS sgemm);
    torch.nn.LSTM's CPU kernel uses it too."""
    found = onednn_matmul()
    if found is None:
        return None
    linear, reorder = found
    try:
        g = torch.Generator().manual_seed(0)
        x, w = torch.randn(5, 7, generator=g), torch.randn(9, 7, generator=g)
        got = linear(x, reorder(w, 5), None, "none", [], "")
        if got.shape != (5, 9) or not torch.allclose(got, x @ w.t(), rtol=1e-4, atol=1e-5):
            return None
    except Exception:                      # a private op that fails in any way is not used
        return None
    return found


def onednn():
    """``(linear, reorder)`` for large float32 GEMMs, or None: as :data:`SETTINGS` says, the probe's
    result by default (probed once, on first use)."""
    choice = SETTINGS.onednn
    if choice != "auto":
        return choice
    if not _PROBED:
        _PROBED.append(_probe_onednn())
    return _PROBED[0]


class Packed:
    """The right operand ``b`` of a step's ``a @ b``, laid out once per run for oneDNN."""
    __slots__ = ("packed",)

    def __init__(self, b, rows: int):
        self.packed = onednn()[1](torch.from_numpy(b).t().contiguous(), rows)


# ----- the operations the loops use, on NumPy arrays or torch tensors -----------------------------------------
class NumpyOps:
    """NumPy ufuncs with ``out=``: under 1 µs a call on small arrays.

    Constants are 0-d arrays of the loop's dtype (a Python float operand costs NumPy
    twice as much), row sums are GEMVs against a ones vector, and sigmoid gates come
    from the one ``tanh`` over a whole gate row: their pre-activations arrive halved
    (``prescale``), and ``σ(a) = (1 + tanh(a/2)) / 2``.
    """
    mul, add, sub, tanh = np.multiply, np.add, np.subtract, np.tanh
    prescale = True

    def __init__(self, dtype, torch_gemm: bool):
        self.dtype = dtype
        self.torch_gemm = torch_gemm
        self.half = np.array(0.5, dtype=dtype)
        self.zero = np.array(0.0, dtype=dtype)
        self._ones = {}

    def _ones_over(self, n: int, scale: float):
        key = (n, scale)
        if key not in self._ones:
            self._ones[key] = np.full((n, 1), scale, dtype=self.dtype)
        return self._ones[key]

    @staticmethod
    def array(t: Tensor):
        return t.detach().numpy()

    def matrix(self, t: Tensor, rows: int):
        """A loop's fixed right GEMM operand (a weight), ready for ``gemm`` with ``rows``-row left operands."""
        b = np.ascontiguousarray(t.detach().numpy())
        # large float32 steps: oneDNN where torch has it
        return Packed(b, rows) if self.torch_gemm and self.dtype == np.float32 and onednn() is not None else b

    def gemm(self, a, b, out, add=None):
        if type(b) is Packed:
            y = onednn()[0](torch.from_numpy(a), b.packed, None, "none", [], "").numpy()
            if add is None:
                np.copyto(out, y)
                return out
            return np.add(y, add, out=out)
        if self.torch_gemm:                 # large float64: torch's BLAS, under torch.set_num_threads
            torch.mm(torch.from_numpy(a), torch.from_numpy(b), out=torch.from_numpy(out))
        else:
            np.dot(a, b, out=out)
        if add is not None:
            np.add(out, add, out=out)
        return out

    @staticmethod
    def lerp(a, b, w, out):
        """``a + w (b - a)``; ``out`` may be neither ``a`` nor ``w``."""
        np.subtract(b, a, out=out)
        np.multiply(out, w, out=out)
        return np.add(out, a, out=out)

    def sigmoid(self, a, out):
        np.multiply(a, self.half, out=out)
        np.tanh(out, out=out)
        return self.tanh_to_sigmoid(out)

    def tanh_to_sigmoid(self, t):
        """σ(a) in place from ``t = tanh(a/2)``."""
        np.multiply(t, self.half, out=t)
        return np.add(t, self.half, out=t)

    def relu(self, a, out):
        return np.maximum(a, self.zero, out=out)

    @staticmethod
    def keep_where(out, old, mask):
        """``out = old`` where the boolean ``mask`` holds."""
        np.copyto(out, old, where=mask)
        return out

    def softplus(self, a, out):
        return np.logaddexp(self.zero, a, out=out)

    def layer_norm(self, x, weight, bias, eps, out, scale, centred=None):
        """``out = weight ⊙ (x - mean x) / sqrt(var x + eps) + bias`` over the last axis.

        ``weight`` comes multiplied by ``√n``. Writes ``scale = (Σ(x - mean)² + n·eps)^(-1/2)``
        (B, 1), so that the normalized vector is ``(x - mean) · scale · √n``, and ``x - mean``
        into ``centred``; without ``centred``, ``x`` is taken as already centred.
        """
        n = x.shape[-1]
        if centred is not None:
            np.dot(x, self._ones_over(n, 1.0 / n), out=scale)
            x = np.subtract(x, scale, out=centred)
        self._row_dot(x, x, out, scale)
        np.add(scale, self._const(n * eps), out=scale)
        np.sqrt(scale, out=scale)
        np.reciprocal(scale, out=scale)
        np.multiply(x, scale, out=out)
        np.multiply(out, weight, out=out)
        if bias is not None:
            np.add(out, bias, out=out)
        return out

    def layer_norm_backward(self, dy, weight, X, rstd, rstd2_n, out, centred=True):
        """d(input) of LN from d(output) ``dy``, with ``X`` the centred input, ``rstd`` and
        ``rstd2_n = rstd² / n`` per row: ``rstd ⊙ (dn - mean(dn) - X · rstd²/n · Σ(dn ⊙ X))``,
        ``dn = weight ⊙ dy``. ``centred=False`` leaves out the ``mean(dn)`` term (for an input
        that a centred GEMM produced, where it cancels)."""
        n = dy.shape[-1]
        dn = np.multiply(dy, weight)
        q = self._row_dot(dn, X, out, np.empty((dy.shape[0], 1), dtype=self.dtype))
        np.multiply(q, rstd2_n, out=q)
        np.multiply(X, q, out=out)
        if centred:
            np.add(out, np.dot(dn, self._ones_over(n, 1.0 / n)), out=out)
        np.subtract(dn, out, out=out)
        return np.multiply(out, rstd, out=out)

    def _row_dot(self, a, b, scratch, out):
        """Row-wise ``Σ_k a_k b_k`` into ``out`` (B, 1): one GEMV for a single row."""
        if a.shape[0] == 1:
            return np.dot(a, b.T, out=out)
        np.multiply(a, b, out=scratch)
        return np.dot(scratch, self._ones_over(a.shape[-1], 1.0), out=out)

    def _const(self, value: float):
        key = ("const", value)
        if key not in self._ones:
            self._ones[key] = np.array(value, dtype=self.dtype)
        return self._ones[key]


NUMPY_OPS = {(dtype, large): NumpyOps(np_dtype, large) for dtype, np_dtype in NUMPY_DTYPES.items()
             for large in (False, True)}


class TorchOps:
    """The same operations on torch tensors: any device and dtype."""
    mul, add, sub, tanh = torch.mul, torch.add, torch.sub, torch.tanh
    prescale = False

    @staticmethod
    def array(t: Tensor):
        return t

    @staticmethod
    def matrix(t: Tensor, rows: int):
        return t.contiguous()

    @staticmethod
    def gemm(a, b, out, add=None):
        return torch.mm(a, b, out=out) if add is None else torch.addmm(add, a, b, out=out)

    @staticmethod
    def lerp(a, b, w, out):
        return torch.lerp(a, b, w, out=out)

    @staticmethod
    def sigmoid(a, out):
        return torch.sigmoid(a, out=out)

    @staticmethod
    def relu(a, out):
        return torch.clamp(a, min=0, out=out)

    @staticmethod
    def keep_where(out, old, mask):
        return out.copy_(torch.where(mask, old, out))

    @staticmethod
    def softplus(a, out):
        return out.copy_(F.softplus(a))

    @staticmethod
    def layer_norm(x, weight, bias, eps, out, scale, centred=None):
        n = x.shape[-1]
        if centred is not None:
            x = torch.sub(x, x.mean(-1, keepdim=True), out=centred)
        torch.pow((x * x).sum(-1, keepdim=True).add_(n * eps), -0.5, out=scale)
        torch.mul(x, scale, out=out).mul_(weight)
        return out if bias is None else out.add_(bias)

    @staticmethod
    def layer_norm_backward(dy, weight, X, rstd, rstd2_n, out, centred=True):
        dn = dy * weight
        torch.mul(X, (dn * X).sum(-1, keepdim=True) * rstd2_n, out=out)
        if centred:
            out.add_(dn.mean(-1, keepdim=True))
        return torch.sub(dn, out, out=out).mul_(rstd)


def ops_for(P: Tensor, W: Tensor):
    """The operations a run's loops use: NumPy's on CPU float32/float64 (unless the settings ask for
    torch's everywhere), torch's on every other device and dtype."""
    if SETTINGS.backend == "auto" and numpy_backed(P):
        T, B, G = P.shape
        return NUMPY_OPS[P.dtype, B * G * W.shape[1] > SETTINGS.numpy_gemm_max]
    return TorchOps


def gemm_tn(a: Tensor, b: Tensor) -> Tensor:
    """``a^T @ b`` for (N, m) and (N, n), a weight gradient. Large float32 on CPU: oneDNN over blocks
    of 512 rows, as ``(b^T a)^T`` (it copies a transposed operand: a block's copy stays in cache and its
    buffer is reused; measured 12 ms against torch.mm's 24 ms and NumPy's 21 ms at N, m, n = 4064, 1024,
    256, and 4.7 ms against 7.6 and 5.9 at 4096, 1024, 64)."""
    linear = onednn()
    if (linear is None or a.device.type != "cpu" or a.dtype != torch.float32 or a.shape[0] == 0
            or a.numel() * b.shape[1] <= SETTINGS.numpy_gemm_max):
        return a.t() @ b
    out = None
    for r0 in range(0, a.shape[0], 512):
        part = linear[0](b[r0:r0 + 512].t(), a[r0:r0 + 512].t(), None, "none", [], "")
        out = part if out is None else out.add_(part)
    return out.t()


def compiled():
    """The compiled (numba) loops of :mod:`.lstm_compiled`, or None where numba is not installed or the
    settings turn them off. Imported on first use: importing rnnkit does not import numba."""
    if SETTINGS.compiled == "off":
        return None
    from . import lstm_compiled
    return lstm_compiled if lstm_compiled.AVAILABLE else None


def numpy_or_none(t):
    return None if t is None else t.detach().numpy()
