r"""The fused engine: whole-sequence forward and hand-derived backpropagation through time.

For the cells in :data:`FUSED_CELLS`, and the regularizers of
:mod:`rnnkit.regularizers` around them, a run is

1. the input side of every step at once, by autograd: ``P = project_inputs(x)``,
   one GEMM over (T·B, input_size), with the recurrent bias folded in;
2. one ``torch.autograd.Function`` for the recurrence. Its forward loop does the
   fewest operations per step the cell's equation allows — one GEMM against the
   pre-transposed ``weight_hh``, activations in place on contiguous gate blocks
   (the LSTM's three sigmoid gates side by side), the state update as a ``lerp`` —
   writing into preallocated (T, B, ·) histories. Its backward is derived by hand:
   everything that does not depend on the adjoint (gate derivatives, zoneout and
   length masks) is computed vectorized, a cache-sized chunk of steps at a time,
   leaving a per-step loop of a few multiplies and one GEMM; the gradient of
   ``weight_hh`` is then one GEMM over all steps, ``dU^T (G, T·B) @ z_prev (T·B, H)``;
3. the outputs (``cell.output`` of the states, zero past each sequence's end),
   by autograd again.

The backward equations, for a state ``z`` with recurrent GEMM output
``u_t = W ψ(z_{t-1})`` and a per-step keep mask ``k_t`` (zoneout, and 1 past a
sequence's end so that a finished sequence keeps its state)::

    z_t = lerp(f(P_t + u_t, z_{t-1}), z_{t-1}, k_t)
    du_t = R_t ⊙ dz_t                                  R: the step's derivative, per gate block
    dz_{t-1} = dZ_{t-1} + E_t ⊙ dz_t + (du_t W) ⊙ ρ_t    E: the direct path, ρ = ψ' ⊙ dropout mask
    dW = Σ_t du_t^T ψ(z_{t-1})

Each kernel below states its ``R``, ``E`` and ``ρ``. A layer norm of the recurrent
part runs on ``W_c = W - mean_g W`` (rows centred, by autograd outside): ``W_c h`` has
zero mean, so the loops skip the mean in the forward and the ``mean(dy)`` term in
the backward (``1^T W_c = 0``), and autograd projects ``dW_c`` back onto ``W``.

**Where the loops run.** On CPU (float32/float64) the loops run on NumPy views
of the very same buffers: at small batches a step is a few microseconds of
arithmetic and the cost is each operation's call overhead, a third of torch's
in NumPy; at large batches NumPy's vectorized ``tanh`` is several times faster
than torch's on CPU. A step's GEMM runs in NumPy's BLAS when small
(``B·G·H ≤ NUMPY_GEMM_MAX``) and otherwise, in float32, in oneDNN's matmul against a
weight laid out once per run (as torch.nn.LSTM's CPU kernel does; twice the speed of an
sgemm on CPUs with AVX-512), in float64 in torch's BLAS; both follow
``torch.set_num_threads``. Buffers come from NumPy blocks reused between training steps
(see :func:`_empty`). With numba installed (``pip install -e ".[fast]"``) the LSTM kernels run
their pointwise steps compiled (:mod:`._lstm_compiled`): the whole sequence in one call for small
steps (``B·G·H ≤ COMPILED_MAX``), one compiled step after each GEMM for large float32 ones; the
NumPy loops below stay as their twin (``COMPILED = False``) and run wherever numba is absent. The
first call compiles for a few seconds; numba caches the result on disk. On every other device or
dtype the loops run on torch operations. They are written once, against the few operations of ``_NumpyOps``
and ``_TorchOps``.

Every result equals the ``loop`` engine's to rounding (tests/test_fused.py
checks outputs, final states and all gradients in float64). Double backward
(``create_graph=True``) is refused with an error; the ``loop`` engine does it.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from torch.nn.utils.stateless import _reparametrize_module

from .. import _buffers
from ..cells.base import Cell, State, state_tensors
from ..cells.elman import ElmanCell
from ..cells.gated import GatedCell
from ..cells.gru import GRUCell
from ..cells.layernorm import LayerNormGRUCell, LayerNormLSTMCell
from ..cells.leaky import LeakyCell
from ..cells.lstm import LSTMCell
from ..regularizers import VariationalDropout, WeightDrop, Zoneout, unwrap_cell
from . import _lstm_compiled
from .projection import linear, linear_layer_norm

__all__ = ["FusedEngine", "FUSED_CELLS"]

# on CPU, a step's GEMM with at most this many multiply-adds (B·G·H) runs in NumPy's BLAS, a
# larger one in torch's (which follows torch.set_num_threads)
NUMPY_GEMM_MAX = 2 ** 20


def _onednn_linear():
    """oneDNN's fp32 matmul as torch ships it (``x @ w^T`` against a weight laid out once), or None
    where this build or CPU lacks it. On CPUs with AVX-512 it runs a step's large GEMM about twice
    as fast as torch.mm or NumPy (the MKL/OpenBLAS sgemm); torch.nn.LSTM's CPU kernel uses it too."""
    try:
        linear, reorder = torch.ops.mkldnn._linear_pointwise, torch.ops.mkldnn._reorder_linear_weight
        if not torch.backends.mkldnn.is_available():
            return None
        x, w = torch.ones(2, 3), torch.ones(4, 3)
        if not torch.equal(linear(x, reorder(w, 2), None, "none", [], ""), torch.full((2, 4), 3.0)):
            return None
    except (AttributeError, RuntimeError):
        return None
    return linear, reorder


ONEDNN = _onednn_linear()


class _Packed:
    """The right operand ``b`` of a step's ``a @ b``, laid out once per run for oneDNN."""
    __slots__ = ("packed",)

    def __init__(self, b, rows: int):
        self.packed = ONEDNN[1](torch.from_numpy(b).t().contiguous(), rows)


# ----- the operations the loops use, on NumPy arrays or torch tensors -----------------------------------------
class _NumpyOps:
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
        return _Packed(b, rows) if self.torch_gemm and self.dtype == np.float32 and ONEDNN is not None else b

    def gemm(self, a, b, out, add=None):
        if type(b) is _Packed:
            y = ONEDNN[0](torch.from_numpy(a), b.packed, None, "none", [], "").numpy()
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


_NUMPY_OPS = {(dtype, large): _NumpyOps(np_dtype, large) for dtype, np_dtype in
              ((torch.float32, np.float32), (torch.float64, np.float64)) for large in (False, True)}


class _TorchOps:
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


def _ops_for(P: Tensor, W: Tensor):
    if P.device.type == "cpu" and P.dtype in (torch.float32, torch.float64):
        T, B, G = P.shape
        return _NUMPY_OPS[P.dtype, B * G * W.shape[1] > NUMPY_GEMM_MAX]
    return _TorchOps


# ----- helpers on whole histories (torch, vectorized) ---------------------------------------------------------
def _act_grad(name: str, y: Tensor) -> Tensor:
    """f'(a) from y = f(a)."""
    return 1 - y * y if name == "tanh" else (y > 0).to(y.dtype)


def _phi_grad(name: str, x: Tensor) -> Tensor:
    """φ'(x) for the firing-rate activations."""
    if name == "tanh":
        t = torch.tanh(x)
        return 1 - t * t
    if name == "relu":
        return (x > 0).to(x.dtype)
    if name == "softplus":
        return torch.sigmoid(x)
    if name == "sigmoid":
        s = torch.sigmoid(x)
        return s * (1 - s)
    return torch.ones_like(x)                                              # identity


_PHI = {"tanh": torch.tanh, "relu": torch.relu, "softplus": F.softplus, "sigmoid": torch.sigmoid,
        "identity": lambda x: x}


def _phi_op(ops, name: str | None):
    """φ(a, out) in the loop's backend, or None for no transform."""
    if name is None or name == "identity":
        return None
    return getattr(ops, name)


def _prev(z0: Tensor, Z: Tensor, t0: int = 0, t1: int | None = None) -> Tensor:
    """States before steps ``t0 .. t1-1``: ``z_{t0-1} .. z_{t1-2}`` (t1 - t0, B, H)."""
    t1 = Z.shape[0] if t1 is None else t1
    if t0 > 0:
        return Z[t0 - 1:t1 - 1]
    return torch.cat([z0.unsqueeze(0), Z[:t1 - 1]])


def _weight_grad(DU: Tensor, z0: Tensor, Z: Tensor, transform=None) -> Tensor:
    """``Σ_t du_t^T r_t`` with ``r_t = transform(z_{t-1})``: one GEMM over all steps, (G, T·B) @ (T·B, H),
    plus the first step's term (no copy of the state history)."""
    r0, rest = (z0, Z[:-1]) if transform is None else (transform(z0), transform(Z[:-1]))
    G = DU.shape[-1]
    return _gemm_tn(DU[1:].reshape(-1, G), rest.reshape(-1, rest.shape[-1])) + DU[0].t() @ r0


def _gemm_tn(a: Tensor, b: Tensor) -> Tensor:
    """``a^T @ b`` for (N, m) and (N, n), a weight gradient. Large float32 on CPU: oneDNN over blocks
    of 512 rows, as ``(b^T a)^T`` (it copies a transposed operand: a block's copy stays in cache and its
    buffer is reused; measured 12 ms against torch.mm's 24 ms and NumPy's 21 ms at N, m, n = 4064, 1024,
    256, and 4.7 ms against 7.6 and 5.9 at 4096, 1024, 64)."""
    if (ONEDNN is None or a.device.type != "cpu" or a.dtype != torch.float32 or a.shape[0] == 0
            or a.numel() * b.shape[1] <= NUMPY_GEMM_MAX):
        return a.t() @ b
    out = None
    for r0 in range(0, a.shape[0], 512):
        part = ONEDNN[0](b[r0:r0 + 512].t(), a[r0:r0 + 512].t(), None, "none", [], "")
        out = part if out is None else out.add_(part)
    return out.t()


# coefficients of the backward loop are computed for a chunk of steps at a time, sized to stay in cache
_CHUNK_ELEMENTS = 2 ** 17


def _chunks(T: int, per_step: int) -> list:
    """``(t0, t1)`` step ranges, last first, of about ``_CHUNK_ELEMENTS / per_step`` steps."""
    size = max(1, min(T, _CHUNK_ELEMENTS // per_step))
    return [(max(0, t1 - size), t1) for t1 in range(T, 0, -size)]


def _layer_norm_scales(X: Tensor, S: Tensor):
    """For the backward loop, from the centred inputs ``X`` (n, B, m) and scales ``S`` (n, B, 1) of
    the forward loop: ``(X, rstd, rstd² / m)``; the normalized vectors are ``X · rstd``."""
    m = X.shape[-1]
    rstd = S * m ** 0.5
    return X, rstd, rstd * rstd / m


def _norm_weight_grad(D: Tensor, X: Tensor, S: Tensor) -> Tensor:
    """The gradient of a layer norm's weight, ``Σ_(t,b) D ⊙ X · S · √m`` for the adjoints ``D`` of its
    outputs, centred inputs ``X`` (T, B, m) and scales ``S`` (T, B, 1) (the normalized vectors are
    ``X · S · √m``). On CPU in cache-sized blocks of rows: no (T, B, m) temporaries."""
    m = X.shape[-1]
    if D.device.type != "cpu" or D.dtype not in _NP_DTYPES:
        return (D * (X * (S * m ** 0.5))).sum((0, 1))
    D_, X_, S_ = (a.detach().numpy().reshape(-1, a.shape[-1]) for a in (D.contiguous(), X, S))
    rows = max(1, _CHUNK_ELEMENTS // m)
    scratch = np.empty((min(rows, D_.shape[0]), m), dtype=D_.dtype)
    total = np.zeros(m, dtype=np.float64)
    for r0 in range(0, D_.shape[0], rows):
        r1 = min(r0 + rows, D_.shape[0])
        part = np.multiply(D_[r0:r1], X_[r0:r1], out=scratch[:r1 - r0])
        np.multiply(part, S_[r0:r1], out=part)
        total += part.sum(0)
    return torch.from_numpy((total * m ** 0.5).astype(D_.dtype))


def _centred_rows(W: Tensor) -> Tensor:
    """``W`` minus its mean row: ``W_c h`` then has zero mean over its outputs for every ``h``, so a
    layer norm of it skips the mean (forward and backward); autograd maps gradients back to ``W``."""
    return W - W.mean(0, keepdim=True)


def _sigmoid_scale(ops, like: Tensor, sigmoid_columns: int):
    """(G,) factors for a backend that takes sigmoid pre-activations halved (``ops.prescale``):
    1/2 on the first ``sigmoid_columns`` gate columns, 1 on the rest; None for the others."""
    if not ops.prescale:
        return None
    scale = torch.ones(like.shape[-1], dtype=like.dtype, device=like.device)
    scale[:sigmoid_columns] = 0.5
    return scale


def _bias_sum(*biases):
    """The sum of the biases that are not None (None if all are)."""
    present = [b for b in biases if b is not None]
    return None if not present else present[0] if len(present) == 1 else sum(present[1:], present[0])


def _dense(t: Tensor, copy: bool = False) -> Tensor:
    """``t`` laid out contiguously (a copy with ``copy``), into an :func:`_empty` buffer (an incoming
    gradient is often a broadcast or transposed view)."""
    if t.is_contiguous() and not copy:
        return t
    return _empty(t, *t.shape).copy_(t)


def _times(P: Tensor, scale: Tensor) -> Tensor:
    """``P * scale`` into an :func:`_empty` buffer."""
    return torch.mul(P, scale, out=_empty(P, *P.shape))


_NP_DTYPES = _buffers.NUMPY_DTYPES


def _empty(like: Tensor, *shape) -> Tensor:
    """An uninitialized buffer. On CPU a NumPy block, reused from one training step to the next
    (:mod:`rnnkit._buffers`): a fresh (T, B, G) history costs a page fault per page at its first write
    (measured: 16 MiB written once in 10 ms and more from torch.empty, on a virtual machine where faults
    are dear, 0.7 ms from NumPy, which asks for huge pages, and nothing from a reused block). The loops
    write every element before reading it."""
    if like.device.type == "cpu" and like.dtype in _NP_DTYPES:
        return torch.from_numpy(_buffers.empty(shape, _NP_DTYPES[like.dtype]))
    return torch.empty(shape, dtype=like.dtype, device=like.device)


class _Run:
    """Per-run data autograd does not track: masks and options."""

    def __init__(self, keep, mask, binary: bool, **options):
        self.keep = keep              # per state tensor: None or (T, B|1, H|1) with 1 = keep the old value
        self.binary = binary          # every keep mask is 0 or 1 (training zoneout, sequence ends)
        self.mask = mask              # (B, H) hidden-dropout mask on the recurrent input, or None
        self.__dict__.update(options)


def _adjoint_single(ops, coefficients, W: Tensor, dZ: Tensor, ln_weight=None):
    """The adjoint recursion of a one-tensor state (module docstring), backwards in time:

        du_t = R_t ⊙ dz_t,   dz_{t-1} = dZ_{t-1} + E_t ⊙ dz_t + (dv_t W) ⊙ ρ_t

    ``coefficients(t0, t1)`` gives, for steps ``t0 .. t1-1``, ``R`` (n, B, H) or (n, B, blocks, H),
    ``E`` (n, B, H) or None, ``ρ`` (n, B, H), (B, H) or None, and for a layer-normalized recurrent
    part computed by a centred GEMM ``(X, rstd, rstd²/G)`` (see :func:`_layer_norm_scales`;
    else None): then ``dv_t`` is the layer-norm backward of ``du_t``, else ``du_t`` itself.
    Returns ``DU`` (T, B, G), ``DV`` (T, B, G) (``DU`` itself without layer norm), ``DZ``
    (T, B, H) the adjoints of ``z_t``, and ``dz_{-1}``.
    """
    T, B, H = dZ.shape
    G = W.shape[0]
    DU, DZ = _empty(dZ, T, B, G), _empty(dZ, T, B, H)
    DV = DU if ln_weight is None else _empty(dZ, T, B, G)
    dz0 = _empty(dZ, B, H)
    a = ops.array
    du_, du4, dv_, dz_, dZ_, W_, dz0_ = a(DU), a(DU.view(T, B, -1, H)), a(DV), a(DZ), a(dZ), ops.matrix(W, B), a(dz0)
    ln_weight = None if ln_weight is None else a(ln_weight)
    tmp = a(_empty(dZ, B, H))
    dz_[T - 1] = dZ_[T - 1]
    for t0, t1 in _chunks(T, B * G):
        R, E, rho, ln = coefficients(t0, t1)
        R_, blocks = a(R), R.dim() == 4
        E_ = None if E is None else a(E)
        rho_, rho_steps = (None, False) if rho is None else (a(rho), rho.dim() == 3)
        if ln is not None:
            ln_x, ln_rstd, ln_r2 = (a(v) for v in ln)
        for t in range(t1 - 1, t0 - 1, -1):
            j = t - t0
            dz = dz_[t]
            if blocks:
                ops.mul(R_[j], dz[:, None], out=du4[t])
            else:
                ops.mul(R_[j], dz, out=du_[t])
            dv = du_[t]
            if ln is not None:
                dv = ops.layer_norm_backward(dv, ln_weight, ln_x[j], ln_rstd[j], ln_r2[j], out=dv_[t],
                                             centred=False)
            target = dz_[t - 1] if t > 0 else dz0_
            add = dZ_[t - 1] if t > 0 else None
            if rho_ is None:
                ops.gemm(dv, W_, out=target, add=add)
            else:
                ops.gemm(dv, W_, out=target)
                ops.mul(target, rho_[j] if rho_steps else rho_, out=target)
                if add is not None:
                    ops.add(target, add, out=target)
            if E_ is not None:
                ops.mul(dz, E_[j], out=tmp)
                ops.add(target, tmp, out=target)
    return DU, DV, DZ, dz0


def _steps(k: Tensor | None, T: int, B: int, H: int) -> Tensor | None:
    """A keep mask broadcast to (T, B, H) and laid out contiguously, for per-step rows."""
    if k is None:
        return None
    return _empty(k, T, B, H).copy_(k.expand(T, B, H))


# ----- compiled loops (numba, optional) -------------------------------------------------------------------------
# steps with at most this many multiply-adds (B·G·H) run the LSTM kernels' compiled loops when numba is installed:
# there the cost of a step is the call overhead of its NumPy operations; beyond, NumPy's BLAS and vectorized
# ufuncs win over the compiled row-by-row loops
COMPILED_MAX = 2 ** 18
COMPILED = _lstm_compiled.AVAILABLE          # False: always the NumPy loops (their twin); tests flip it


def _compiled_for(ops, B: int, G: int, H: int) -> bool:
    """Whether an LSTM run takes the compiled steps: float32 always (its tanh is vectorized), float64
    only as a whole small sequence (its C-library tanh is slower than NumPy's at large batches)."""
    if not (COMPILED and isinstance(ops, _NumpyOps)):
        return False
    return ops.dtype == np.float32 or _compiled_whole(ops, B, G, H)


def _compiled_whole(ops, B: int, G: int, H: int) -> bool:
    return not ops.torch_gemm and B * G * H <= COMPILED_MAX and not COMPILED_STEPWISE


COMPILED_STEPWISE = False                    # True: never the whole-sequence loops (tests)


def _numpy_or_none(t):
    return None if t is None else t.detach().numpy()


# ----- kernels ----------------------------------------------------------------------------------------------
class _Kernel:
    """One cell family: ``prepare`` (autograd side), ``forward`` and ``backward`` (inside the Function)."""
    components = 1                    # state tensors

    def supports(self, cell: Cell) -> str | None:
        return None

    def emitted(self, cell: Cell, Z0: Tensor) -> Tensor:
        """The layer output for the history of the first state tensor, (T, B, O)."""
        return Z0


class _LeakyKernel(_Kernel):
    r"""Elman, leaky and firing-rate cells: ``z_t = lerp(z_{t-1}, y_t, β_t)``, ``y_t = f(P_t + W ψ(z_{t-1}))``.

    Elman: ``f`` tanh/relu, ``ψ`` identity, no ``β`` (``z_t = y_t``); leaky: ``β = α``;
    rate: ``f`` identity, ``ψ = φ``, ``β = α = dt/τ``. With a keep mask ``β_t = α (1 - k_t)``.
    Backward: ``R = β ⊙ f'``, ``E = 1 - β``, ``ρ = ψ'(z_{t-1}) ⊙ m``;
    ``∂L/∂α = Σ dz_t ⊙ (1 - k_t) ⊙ (y_t - z_{t-1})``.
    """

    def prepare(self, cell, xs):
        if isinstance(cell, (ElmanCell, LeakyCell)):
            P = linear(xs, cell.weight_ih, _bias_sum(cell.bias_ih, cell.bias_hh))     # = project_inputs + b_hh
            alpha = cell.alpha if isinstance(cell, LeakyCell) else None
            return P, cell.weight_hh, (alpha,), {"act": cell.nonlinearity, "phi": None, "alpha_value": None}
        # RateCell: x' = x + α (W φ(x) + P - x) + σ √(2α) ξ; the noise is an input, folded into P
        P = linear(xs, cell.weight_ih, cell.bias)                                    # = project_inputs
        if cell.training and cell.noise_std > 0:
            P = P + (cell.noise_std * (2 * cell.alpha) ** 0.5 / cell.alpha) * torch.randn_like(P)
        return P, cell.recurrent_weights(), (None,), {"act": None, "phi": cell.activation,
                                                       "alpha_value": cell.alpha}

    def supports(self, cell):
        if not isinstance(cell, (ElmanCell, LeakyCell)) and cell.activation not in _PHI:
            return f"RateCell activation {cell.activation!r} has no fused derivative"
        return None

    def emitted(self, cell, Z0):
        return cell.output(Z0)

    @staticmethod
    def _beta(run, alpha, like: Tensor):
        """β: None, (H,) or a 0-d tensor, or per step (T, B, H)."""
        a = alpha
        if a is None and run.alpha_value is not None:
            a = torch.tensor(run.alpha_value, dtype=like.dtype, device=like.device)
        k = run.keep[0]
        if k is None:
            return a
        T, B, H = like.shape
        return _steps((1 - k) if a is None else a * (1 - k), T, B, H)

    def forward(self, ops, run, P, W, states, extras):
        (z0,), (alpha,) = states, extras
        T, B, H = P.shape
        beta = self._beta(run, alpha, P)
        Z = _empty(P, T, B, H)
        Y = Z if beta is None else _empty(P, T, B, H)
        a = ops.array
        P_, Z_, Y_, Wt = a(P), a(Z), a(Y), ops.matrix(W.t(), B)
        per_step = beta is not None and beta.dim() == 3
        beta_ = None if beta is None else a(beta)
        act = None if run.act is None else getattr(ops, run.act)
        phi = _phi_op(ops, run.phi)
        mask = None if run.mask is None else a(run.mask)
        r_buf = a(_empty(P, B, H))
        z = a(z0)
        for t in range(T):
            r = z
            if phi is not None:
                r = phi(z, out=r_buf)
            if mask is not None:
                r = ops.mul(r, mask, out=r_buf)
            y = ops.gemm(r, Wt, out=Y_[t], add=P_[t])
            if act is not None:
                act(y, out=y)
            if beta_ is not None:
                z = ops.lerp(z, y, beta_[t] if per_step else beta_, out=Z_[t])
            else:
                z = y
        return (Z,), {"Y": Y, "beta": beta}

    def backward(self, ops, run, saved, W, states, extras, outputs, grads, needs):
        (z0,), (alpha,), (Z,), (dZ,) = states, extras, outputs, grads
        T, B, H = Z.shape
        Y, beta = saved["Y"], saved["beta"]
        per_step = beta is not None and beta.dim() == 3
        phi, mask = run.phi if run.phi != "identity" else None, run.mask

        def coefficients(t0, t1):
            n = t1 - t0
            b = None if beta is None else (beta[t0:t1] if per_step else beta)
            R = _act_grad(run.act, Y[t0:t1]) if run.act is not None else None
            if b is not None:
                R = b.expand(n, B, H) if R is None else R * b
            E = None if b is None else (1 - b).expand(n, B, H)
            rho = mask
            if phi is not None:
                rho = _phi_grad(phi, _prev(z0, Z, t0, t1))
                rho = rho if mask is None else rho * mask
            return R.contiguous(), None if E is None else E.contiguous(), rho, None

        DU, _, DZ, dz0 = _adjoint_single(ops, coefficients, W, _dense(dZ))
        d_alpha = None
        if alpha is not None and needs[3]:
            diff = Y - _prev(z0, Z)
            if run.keep[0] is not None:
                diff = diff * (1 - run.keep[0])
            d_alpha = (DZ * diff).sum((0, 1))

        def transform(z):
            r = z if phi is None else _PHI[phi](z)
            return r if mask is None else r * mask
        return DU, _weight_grad(DU, z0, Z, transform), (dz0,), (d_alpha,)


class _GatedKernel(_Kernel):
    r"""Gated cell: blocks ``[g, c]``, ``z_t = lerp(z_{t-1}, tanh(c), β)`` with ``β = σ(g) (1 - k_t)``.

    Backward: ``R = [(tanh(c) - z_{t-1}) (1 - k) σ'(g), β (1 - tanh²(c))]``, ``E = 1 - β``, ``ρ = m``.
    """

    def prepare(self, cell, xs):
        P = linear(xs, cell.weight_ih, _bias_sum(cell.bias_ih, cell.bias_hh))         # = project_inputs + b_hh
        return P, cell.weight_hh, (), {}

    def forward(self, ops, run, P, W, states, extras):
        (z0,) = states
        T, B, G = P.shape
        H = G // 2
        A, Z = _empty(P, T, B, G), _empty(P, T, B, H)
        Wt, half = W.t().contiguous(), _sigmoid_scale(ops, P, H)
        if half is not None:
            P, Wt = _times(P, half), Wt * half
        a = ops.array
        P_, A_, Z_, Wt = a(P), a(A), a(Z), ops.matrix(Wt, B)
        gates, cands = a(A[..., :H]), a(A[..., H:])
        keep = run.keep[0]
        omk = None if keep is None else a(_steps(1 - keep, T, B, H))
        mask = None if run.mask is None else a(run.mask)
        r_buf, beta_buf = a(_empty(P, B, H)), a(_empty(P, B, H))
        z = a(z0)
        for t in range(T):
            r = z if mask is None else ops.mul(z, mask, out=r_buf)
            ops.gemm(r, Wt, out=A_[t], add=P_[t])
            g, c = gates[t], cands[t]
            if half is not None:
                ops.tanh(A_[t], out=A_[t])
                ops.tanh_to_sigmoid(g)
            else:
                ops.sigmoid(g, out=g)
                ops.tanh(c, out=c)
            beta = g if omk is None else ops.mul(g, omk[t], out=beta_buf)
            z = ops.lerp(z, c, beta, out=Z_[t])
        return (Z,), {"A": A}

    def backward(self, ops, run, saved, W, states, extras, outputs, grads, needs):
        (z0,), (Z,), (dZ,) = states, outputs, grads
        A, keep = saved["A"], run.keep[0]
        H = Z.shape[-1]

        def coefficients(t0, t1):
            g, c = A[t0:t1, :, :H], A[t0:t1, :, H:]
            dg = (c - _prev(z0, Z, t0, t1)) * g * (1 - g)
            beta = g
            if keep is not None:
                omk = 1 - keep[t0:t1]
                dg, beta = dg * omk, g * omk
            return torch.stack([dg, beta * (1 - c * c)], 2), 1 - beta, run.mask, None

        DU, _, _, dz0 = _adjoint_single(ops, coefficients, W, _dense(dZ))
        transform = None if run.mask is None else (lambda z: z * run.mask)
        return DU, _weight_grad(DU, z0, Z, transform), (dz0,), ()


class _GRUKernel(_Kernel):
    r"""GRU, torch's variant (with ``layer_norm``, the layer-norm GRU): blocks ``[r, z, n]``.

    ``u = W h + b_hh`` (layer norm: ``u = LN(W h; γ_h, b_hh)``), ``r, z = σ(P_rz + u_rz)``,
    ``n = tanh(P_n + r ⊙ u_n)``, ``h_t = lerp(n, h_{t-1}, ζ)`` with ``ζ = z + k (1 - z)``.
    Backward, with ``a = (1 - ζ)(1 - n²)``: ``R = [a u_n σ'(r), (h_{t-1} - n)(1 - k) σ'(z), a r]``
    on ``u``, ``E = ζ``, ``ρ = m``; the input side gets ``[du_r, du_z, a ⊙ dh]``.
    """

    def __init__(self, layer_norm: bool):
        self.layer_norm = layer_norm

    def prepare(self, cell, xs):
        H = cell.hidden_size
        if self.layer_norm:                                                           # = project_inputs
            P = linear_layer_norm(xs, cell.weight_ih, cell.ln_input_weight, cell.bias_ih, cell.eps)
            return P, _centred_rows(cell.weight_hh), (cell.ln_hidden_weight, cell.bias_hh), {"eps": cell.eps}
        if cell.bias_hh is None:
            return linear(xs, cell.weight_ih, cell.bias_ih), cell.weight_hh, (None,), {}
        # the r and z parts of b_hh add to the inputs; the n part sits inside r ⊙ (W_hn h + b_hn)
        P = linear(xs, cell.weight_ih, _bias_sum(cell.bias_ih, F.pad(cell.bias_hh[:2 * H], (0, H))))
        return P, cell.weight_hh, (cell.bias_hh[2 * H:],), {}

    def forward(self, ops, run, P, W, states, extras):
        (h0,) = states
        T, B, G = P.shape
        H = G // 3
        a = ops.array
        U, RZ, N, Z = _empty(P, T, B, G), _empty(P, T, B, 2 * H), _empty(P, T, B, H), _empty(P, T, B, H)
        Wt, half = W.t().contiguous(), _sigmoid_scale(ops, P, 2 * H)
        if half is not None:                           # r, z halved; the LN input W h is not
            P = _times(P, half)
            Wt = Wt if self.layer_norm else Wt * half
        U_, RZ_, N_, Z_, Wt = a(U), a(RZ), a(N), a(Z), ops.matrix(Wt, B)
        Prz, Pn = a(P[..., :2 * H]), a(P[..., 2 * H:])
        u_rz, u_n, r_, z_ = a(U[..., :2 * H]), a(U[..., 2 * H:]), a(RZ[..., :H]), a(RZ[..., H:])
        keep = run.keep[0]
        if keep is not None:
            keep_, omk = a(_steps(keep, T, B, H)), a(_steps(1 - keep, T, B, H))
        mask = None if run.mask is None else a(run.mask)
        saved = {}
        if self.layer_norm:
            ln_weight, ln_bias = extras[0] * G ** 0.5, extras[1]
            if half is not None:
                ln_weight, ln_bias = ln_weight * half, None if ln_bias is None else ln_bias * half
            ln_weight, ln_bias = a(ln_weight), None if ln_bias is None else a(ln_bias)
            V, S = _empty(P, T, B, G), _empty(P, T, B, 1)
            V_, S_ = a(V), a(S)
            saved.update(V=V, S=S)
            bias = None
        else:
            b_n = extras[0]
            bias = None if b_n is None else a(F.pad(b_n, (2 * H, 0)))
        r_buf, zeta_buf = a(_empty(P, B, H)), a(_empty(P, B, H))
        h = a(h0)
        for t in range(T):
            r_in = h if mask is None else ops.mul(h, mask, out=r_buf)
            if self.layer_norm:
                v = ops.gemm(r_in, Wt, out=V_[t])                        # centred: W has zero-mean rows
                ops.layer_norm(v, ln_weight, ln_bias, run.eps, out=U_[t], scale=S_[t])
            else:
                ops.gemm(r_in, Wt, out=U_[t], add=bias)
            rz = ops.add(Prz[t], u_rz[t], out=RZ_[t])
            if half is not None:
                ops.tanh_to_sigmoid(ops.tanh(rz, out=rz))
            else:
                ops.sigmoid(rz, out=rz)
            n = ops.mul(r_[t], u_n[t], out=N_[t])
            ops.add(n, Pn[t], out=n)
            ops.tanh(n, out=n)
            zeta = z_[t]
            if keep is not None:
                zeta = ops.mul(zeta, omk[t], out=zeta_buf)
                ops.add(zeta, keep_[t], out=zeta)
            h = ops.lerp(n, h, zeta, out=Z_[t])
        saved.update(U=U, RZ=RZ, N=N)
        return (Z,), saved

    def backward(self, ops, run, saved, W, states, extras, outputs, grads, needs):
        (h0,), (Z,), (dZ,) = states, outputs, grads
        T, B, H = Z.shape
        RZ, N, U, keep = saved["RZ"], saved["N"], saved["U"], run.keep[0]

        def gates(t0, t1):
            r, z = RZ[t0:t1, :, :H], RZ[t0:t1, :, H:]
            zeta = z if keep is None else keep[t0:t1] + z * (1 - keep[t0:t1])
            return r, z, zeta.expand(t1 - t0, B, H), (1 - zeta) * (1 - N[t0:t1] * N[t0:t1])

        def coefficients(t0, t1):
            r, z, zeta, a = gates(t0, t1)
            dz_gate = (_prev(h0, Z, t0, t1) - N[t0:t1]) * z * (1 - z)
            if keep is not None:
                dz_gate = dz_gate * (1 - keep[t0:t1])
            R = torch.stack([a * U[t0:t1, :, 2 * H:] * r * (1 - r), dz_gate, a * r], 2)     # (n, B, 3, H)
            ln = None
            if self.layer_norm:
                ln = _layer_norm_scales(saved["V"][t0:t1], saved["S"][t0:t1])
            return R, zeta.contiguous(), run.mask, ln

        DU, DV, DZ, dh0 = _adjoint_single(ops, coefficients, W, _dense(dZ),
                                          extras[0] if self.layer_norm else None)
        transform = None if run.mask is None else (lambda z: z * run.mask)
        dW = _weight_grad(DV, h0, Z, transform)
        grads_extra = (None,)
        if self.layer_norm:
            grads_extra = (_norm_weight_grad(DU, saved["V"], saved["S"]) if needs[3] else None,
                           DU.sum((0, 1)) if needs[4] and extras[1] is not None else None)
        elif extras[0] is not None and needs[3]:
            grads_extra = (DU[..., 2 * H:].sum((0, 1)),)
        # the input side: [du_r, du_z] and, for n, a ⊙ dh (not r a ⊙ dh): reuse DU's memory
        torch.mul(gates(0, T)[3], DZ, out=DU[..., 2 * H:])
        return DU, dW, (dh0,), grads_extra


# the LSTM kernels lay the gates out as [o, i, f, g]: one sigmoid over the first three blocks, one tanh
# over the last, and in the backward the i, f, g blocks (all driven by dc) are contiguous too
def _lstm_order(hidden_size: int, device) -> Tensor:
    H = hidden_size
    return torch.cat([torch.arange(3 * H, 4 * H), torch.arange(0, 3 * H)]).to(device)   # from i, f, g, o


class _LSTMKernel(_Kernel):
    r"""LSTM (with ``layer_norm``, the layer-norm LSTM); state ``(h, c)``, gates ``[o, i, f, g]``.

    Forward: ``c̃ = f c + i g``, ``h̃ = o tanh(c̃)`` (layer norm: ``o tanh(LN(c̃))``), then
    ``c_t = lerp(c̃, c_{t-1}, k^c_t)``, ``h_t = lerp(h̃, h_{t-1}, k^h_t)``.
    Backward, with ``A = (1 - k^h) o (1 - tanh²)``: ``dc̃ = (1 - k^c) dc + A dh`` (layer norm:
    the LN backward of ``A dh``), ``du = [(1 - k^h) tanh(·) σ'(o) dh, g σ'(i) dc̃, c_{t-1} σ'(f) dc̃,
    i (1 - g²) dc̃]``, ``dc_{t-1} = f dc̃ + k^c dc``, ``dh_{t-1} = dH_{t-1} + k^h dh + (du W) ⊙ m``.
    """
    components = 2

    def __init__(self, layer_norm: bool):
        self.layer_norm = layer_norm

    def prepare(self, cell, xs):
        order = _lstm_order(cell.hidden_size, xs.device)
        W_ih, W_hh = cell.weight_ih[order], cell.weight_hh[order]
        if self.layer_norm:
            bias = _bias_sum(cell.bias_ih, cell.bias_hh)
            P = linear_layer_norm(xs, W_ih, cell.ln_input_weight[order], None if bias is None else bias[order],
                                  cell.eps)
            extras = (cell.ln_hidden_weight[order], cell.ln_cell_weight, cell.ln_cell_bias)
            return P, _centred_rows(W_hh), extras, {"eps": cell.eps}
        bias = _bias_sum(cell.bias_ih, cell.bias_hh)
        return linear(xs, W_ih, None if bias is None else bias[order]), W_hh, (), {}

    def forward(self, ops, run, P, W, states, extras):
        T, B, G = P.shape
        if _compiled_for(ops, B, G, W.shape[1]):
            return self._forward_compiled(ops, run, P, W, states, extras)
        h0, c0 = states
        H = G // 4
        kh, kc = (_steps(k, T, B, H) for k in run.keep)
        binary = run.binary           # 0/1 masks: a masked copy in place of a lerp (3 operations)
        A, Hs, C, TC = _empty(P, T, B, G), _empty(P, T, B, H), _empty(P, T, B, H), _empty(P, T, B, H)
        Ct = C if kc is None or binary else _empty(P, T, B, H)            # c̃ before zoneout
        Wt, half = W.t().contiguous(), _sigmoid_scale(ops, P, 3 * H)
        a = ops.array
        P_, A_, Hs_, C_, Ct_, TC_, Wt = a(P), a(A), a(Hs), a(C), a(Ct), a(TC), ops.matrix(Wt, B)
        half = None if half is None else a(half)       # o, i, f halved a step at a time: no (T, B, G) copy
        sig, tanh_g = a(A[..., :3 * H]), a(A[..., 3 * H:])
        o_, i_, f_ = a(A[..., :H]), a(A[..., H:2 * H]), a(A[..., 2 * H:3 * H])
        kh_ = None if kh is None else a(kh > 0.5 if binary else kh)
        kc_ = None if kc is None else a(kc > 0.5 if binary else kc)
        mask = None if run.mask is None else a(run.mask)
        layer_norm = self.layer_norm
        saved = {"A": A, "TC": TC, "C": C}
        if layer_norm:
            ln_h = extras[0] * G ** 0.5
            ln_h, ln_c_weight = a(ln_h), a(extras[1] * H ** 0.5)
            ln_c_bias = None if extras[2] is None else a(extras[2])
            V, S, Cc, Sc = _empty(P, T, B, G), _empty(P, T, B, 1), _empty(P, T, B, H), _empty(P, T, B, 1)
            V_, S_, Cc_, Sc_ = a(V), a(S), a(Cc), a(Sc)
            saved.update(V=V, S=S, Cc=Cc, Sc=Sc)
        r_buf, tmp, hn_buf = a(_empty(P, B, H)), a(_empty(P, B, H)), a(_empty(P, B, H))
        h, c = a(h0), a(c0)
        for t in range(T):
            r_in = h if mask is None else ops.mul(h, mask, out=r_buf)
            if layer_norm:
                v = ops.gemm(r_in, Wt, out=V_[t])                        # centred: W has zero-mean rows
                ops.layer_norm(v, ln_h, None, run.eps, out=A_[t], scale=S_[t])
                ops.add(A_[t], P_[t], out=A_[t])
            else:
                ops.gemm(r_in, Wt, out=A_[t], add=P_[t])
            if half is not None:
                ops.mul(A_[t], half, out=A_[t])
                ops.tanh(A_[t], out=A_[t])
                ops.tanh_to_sigmoid(sig[t])
                g = tanh_g[t]
            else:
                ops.sigmoid(sig[t], out=sig[t])
                g = ops.tanh(tanh_g[t], out=tanh_g[t])
            ct = ops.mul(f_[t], c, out=Ct_[t])
            ops.add(ct, ops.mul(i_[t], g, out=tmp), out=ct)               # c̃ = f c + i g
            if layer_norm:
                ops.layer_norm(ct, ln_c_weight, ln_c_bias, run.eps, out=TC_[t], scale=Sc_[t], centred=Cc_[t])
                tc = ops.tanh(TC_[t], out=TC_[t])
            else:
                tc = ops.tanh(ct, out=TC_[t])
            hn = ops.mul(o_[t], tc, out=Hs_[t] if kh_ is None or binary else hn_buf)
            if kc_ is None:
                c = ct
            else:
                c = ops.keep_where(ct, c, kc_[t]) if binary else ops.lerp(ct, c, kc_[t], out=C_[t])
            if kh_ is None:
                h = hn
            else:
                h = ops.keep_where(hn, h, kh_[t]) if binary else ops.lerp(hn, h, kh_[t], out=Hs_[t])
        return (Hs, C[-1]), saved

    def backward(self, ops, run, saved, W, states, extras, outputs, grads, needs):
        if saved.get("compiled"):
            return self._backward_compiled(ops, run, saved, W, states, extras, outputs, grads, needs)
        h0, c0 = states
        dH, dcT = grads
        T, B, H = dH.shape
        G = 4 * H
        A, TC, C = saved["A"], saved["TC"], saved["C"]
        kh, kc = run.keep
        layer_norm = self.layer_norm

        def coefficients(t0, t1):
            o, i, f, g = A[t0:t1].chunk(4, -1)
            tc = TC[t0:t1]
            Ro = tc * o * (1 - o)                                      # dh -> du_o
            Ac = o * (1 - tc * tc)                                     # dh -> d(c̃, or LN(c̃))
            if kh is not None:
                Ro, Ac = Ro * (1 - kh[t0:t1]), Ac * (1 - kh[t0:t1])
            Rc = torch.stack([g * i * (1 - i), _prev(c0, C, t0, t1) * f * (1 - f), i * (1 - g * g)], 2)
            n = t1 - t0
            keeps = [None if k is None else k[t0:t1].expand(n, B, H).contiguous() for k in (kh, kc)]
            omkc = None if kc is None else 1 - keeps[1]
            ln = None
            if layer_norm:
                ln = (_layer_norm_scales(saved["V"][t0:t1], saved["S"][t0:t1]),
                      _layer_norm_scales(saved["Cc"][t0:t1], saved["Sc"][t0:t1]))
            return Ro, Ac, Rc, f, keeps[0], keeps[1], omkc, ln

        chunks = _chunks(T, B * G)
        if isinstance(ops, _NumpyOps):
            coefficients = self._numpy_coefficients(ops, run, saved, c0, T, B, H, max(t1 - t0 for t0, t1 in chunks))
        DU = _empty(dH, T, B, G)
        DV = _empty(dH, T, B, G) if layer_norm else DU
        DLNC = _empty(dH, T, B, H) if layer_norm else None
        a = ops.array
        du_, du4, dv_, dH_, W_ = a(DU), a(DU.view(T, B, 4, H)), a(DV), a(_dense(dH)), ops.matrix(W, B)
        mask = None if run.mask is None else a(run.mask)
        if layer_norm:
            ln_h, ln_c_weight, dlnc_ = a(extras[0]), a(extras[1]), a(DLNC)
        dh, dc = a(_dense(dH[T - 1], copy=True)), a(_dense(dcT, copy=True))
        dh_new, dc_new, dct, tmp = (a(_empty(dH, B, H)) for _ in range(4))
        for t0, t1 in chunks:
            Ro_, Ac_, Rc_, F_, kh_, kc_, omkc, ln = (None if v is None else a(v) if isinstance(v, Tensor) else v
                                                     for v in coefficients(t0, t1))
            if ln is not None:
                (x_h, rstd_h, r2_h), (x_c, rstd_c, r2_c) = ((a(v) if isinstance(v, Tensor) else v for v in part)
                                                                for part in ln)
            for t in range(t1 - 1, t0 - 1, -1):
                j = t - t0
                if layer_norm:
                    dl = ops.mul(dh, Ac_[j], out=dlnc_[t])
                    ops.layer_norm_backward(dl, ln_c_weight, x_c[j], rstd_c[j], r2_c[j], out=dct)
                else:
                    ops.mul(dh, Ac_[j], out=dct)
                ops.add(dct, dc if kc_ is None else ops.mul(dc, omkc[j], out=tmp), out=dct)
                du4t = du4[t]
                ops.mul(dh, Ro_[j], out=du4t[:, 0])
                ops.mul(Rc_[j], dct[:, None], out=du4t[:, 1:])
                dv = du_[t]
                if layer_norm:
                    dv = ops.layer_norm_backward(dv, ln_h, x_h[j], rstd_h[j], r2_h[j], out=dv_[t], centred=False)
                ops.mul(dct, F_[j], out=dc_new)
                if kc_ is not None:
                    ops.add(dc_new, ops.mul(dc, kc_[j], out=tmp), out=dc_new)
                ops.gemm(dv, W_, out=dh_new)
                if mask is not None:
                    ops.mul(dh_new, mask, out=dh_new)
                if kh_ is not None:
                    ops.add(dh_new, ops.mul(dh, kh_[j], out=tmp), out=dh_new)
                if t > 0:
                    ops.add(dh_new, dH_[t - 1], out=dh_new)
                dh, dh_new, dc, dc_new = dh_new, dh, dc_new, dc
        dh0, dc0 = (torch.as_tensor(v).clone() for v in (dh, dc))
        return self._gradients(run, saved, extras, needs, h0, outputs, DU, DV, DLNC, dh0, dc0)

    def _gradients(self, run, saved, extras, needs, h0, outputs, DU, DV, DLNC, dh0, dc0):
        """What the backward returns, from the per-step adjoints: weight gradients as one GEMM over all steps."""
        transform = None if run.mask is None else (lambda z: z * run.mask)
        dW = _weight_grad(DV, h0, outputs[0], transform)
        if not self.layer_norm:
            return DU, dW, (dh0, dc0), ()
        d_ln_h = _norm_weight_grad(DU, saved["V"], saved["S"]) if needs[4] else None
        d_c_weight = _norm_weight_grad(DLNC, saved["Cc"], saved["Sc"]) if needs[5] else None
        d_c_bias = DLNC.sum((0, 1)) if needs[6] and extras[2] is not None else None
        return DU, dW, (dh0, dc0), (d_ln_h, d_c_weight, d_c_bias)

    def _forward_compiled(self, ops, run, P, W, states, extras):
        """The forward on the compiled steps of :mod:`._lstm_compiled`: the whole sequence in one call
        for small steps, else a compiled pointwise step after each GEMM of ``ops``."""
        h0, c0 = states
        T, B, G = P.shape
        H = G // 4
        A, Hs, C, TC = _empty(P, T, B, G), _empty(P, T, B, H), _empty(P, T, B, H), _empty(P, T, B, H)
        kh, kc = (_steps(k, T, B, H) for k in run.keep)
        saved = {"A": A, "TC": TC, "C": C, "compiled": True}
        ln = (None,) * 7
        if self.layer_norm:
            V, S, Cc, Sc = _empty(P, T, B, G), _empty(P, T, B, 1), _empty(P, T, B, H), _empty(P, T, B, 1)
            saved.update(V=V, S=S, Cc=Cc, Sc=Sc)
            ln = (extras[0] * G ** 0.5, extras[1] * H ** 0.5, extras[2], V, S, Cc, Sc)
        n, eps = _numpy_or_none, run.__dict__.get("eps", 0.0)
        P_, Wt, h0_, c0_, A_, Hs_, C_, TC_ = (n(v) for v in (P, W.t().contiguous(), h0.contiguous(),
                                                              c0.contiguous(), A, Hs, C, TC))
        if _compiled_whole(ops, B, G, H):
            _lstm_compiled.forward(P_, Wt, h0_, c0_, n(run.mask), n(kh), n(kc), run.binary, n(ln[0]), n(ln[1]),
                                   n(ln[2]), eps, A_, Hs_, C_, TC_, *(n(v) for v in ln[3:]))
            return (Hs, C[-1]), saved
        (mask, kh_, kc_), ln_w, hist = _lstm_compiled.forward_args(P_.dtype, n(run.mask), n(kh), n(kc),
                                                                   *(n(v) for v in ln))
        k = _lstm_compiled.forward_constants(P_.dtype, G, H, eps)
        U, R = n(_empty(P, B, G)), n(_empty(P, B, H))
        if mask.size:
            np.multiply(h0_, mask, out=R)
        else:
            np.copyto(R, h0_)
        Wm, step = ops.matrix(torch.from_numpy(Wt), B), _lstm_compiled.step_forward
        V_ = hist[0]
        for t in range(T):
            u = ops.gemm(R, Wm, out=V_[t] if self.layer_norm else U)
            step(t, u, P_, h0_ if t == 0 else Hs_[t - 1], c0_ if t == 0 else C_[t - 1], mask, kh_, kc_, run.binary,
                 *ln_w, k, A_, Hs_, C_, TC_, *hist[1:], R)
        return (Hs, C[-1]), saved

    def _backward_compiled(self, ops, run, saved, W, states, extras, outputs, grads, needs):
        h0, c0 = states
        dH, dcT = grads
        T, B, H = dH.shape
        G = 4 * H
        DU = _empty(dH, T, B, G)
        DV = _empty(dH, T, B, G) if self.layer_norm else DU
        DLNC = _empty(dH, T, B, H) if self.layer_norm else None
        dh0, dc0 = _empty(dH, B, H), _empty(dH, B, H)
        kh, kc = (_steps(k, T, B, H) for k in run.keep)
        n = _numpy_or_none
        ln_h, ln_c = (extras[0], extras[1]) if self.layer_norm else (None, None)
        dH_, c0_, C_, A_, TC_ = n(_dense(dH)), n(c0.contiguous()), n(saved["C"]), n(saved["A"]), n(saved["TC"])
        hist = tuple(n(saved.get(name)) for name in ("V", "S", "Cc", "Sc"))
        if _compiled_whole(ops, B, G, H):
            _lstm_compiled.backward(dH_, n(_dense(dcT)), n(W.t().contiguous()), c0_, C_, n(run.mask), n(kh),
                                    n(kc), A_, TC_, *hist, n(ln_h), n(ln_c), n(DU), n(DV), n(DLNC), n(dh0), n(dc0))
        else:
            dt = dH_.dtype
            (mask, kh_, kc_), (ln_h_, ln_c_, _), hist = _lstm_compiled.forward_args(
                dt, n(run.mask), n(kh), n(kc), n(ln_h), n(ln_c), None, *hist)
            k = _lstm_compiled.backward_constants(dt, G, H)
            DU_, DV_, DLNC_ = n(DU), n(DV), _lstm_compiled.or_empty(n(DLNC), dt, 3)
            dh, dc, dW = n(dh0), n(dc0), n(_empty(dH, B, H))
            np.copyto(dh, dH_[T - 1])
            np.copyto(dc, n(dcT))
            Wm, step, tail = ops.matrix(W, B), _lstm_compiled.step_backward, _lstm_compiled.step_backward_tail
            for t in range(T - 1, -1, -1):
                step(t, dh, dc, c0_ if t == 0 else C_[t - 1], kh_, kc_, A_, TC_, *hist, ln_h_, ln_c_, k, DU_, DV_,
                     DLNC_)
                ops.gemm(DV_[t], Wm, out=dW)
                tail(t, dW, dh, mask, kh_, dH_)
        return self._gradients(run, saved, extras, needs, h0, outputs, DU, DV, DLNC, dh0, dc0)

    def _numpy_coefficients(self, ops, run, saved, c0, T, B, H, n_max):
        """``coefficients`` of the backward loop on NumPy arrays, into buffers reused by every chunk:
        the same numbers as the torch version in ``backward`` (its slow twin, the loop of ``_TorchOps``)
        without a fresh (n, B, H) tensor per operation."""
        dtype, one, a = ops.dtype, ops._const(1.0), ops.array
        A_, TC_, C_ = a(saved["A"]), a(saved["TC"]), a(saved["C"])
        Ro, Ac, prev0 = (np.empty((n_max, B, H), dtype) for _ in range(3))
        Rc = np.empty((n_max, B, 3, H), dtype)
        kh, kc = (None if k is None else _steps(k, T, B, H) for k in run.keep)
        kh, kc = (None if k is None else a(k) for k in (kh, kc))
        omkh, omkc = (None if k is None else np.subtract(one, k) for k in (kh, kc))
        if self.layer_norm:
            G = 4 * H
            V_, S_, Cc_, Sc_ = a(saved["V"]), a(saved["S"]), a(saved["Cc"]), a(saved["Sc"])
            scales = [np.empty((n_max, B, 1), dtype) for _ in range(4)]
            root_g, root_h, inv_g, inv_h = (ops._const(v) for v in (G ** 0.5, H ** 0.5, 1.0 / G, 1.0 / H))

        def coefficients(t0, t1):
            n = t1 - t0
            gates = A_[t0:t1]
            o, i, f, g = gates[..., :H], gates[..., H:2 * H], gates[..., 2 * H:3 * H], gates[..., 3 * H:]
            tc, ro, ac, rc = TC_[t0:t1], Ro[:n], Ac[:n], Rc[:n]
            np.multiply(np.subtract(one, o, out=ro), o, out=ro)
            np.multiply(ro, tc, out=ro)                                                # tanh(·) σ'(o)
            np.multiply(np.subtract(one, np.multiply(tc, tc, out=ac), out=ac), o, out=ac)   # o (1 - tanh²)
            if omkh is not None:
                np.multiply(ro, omkh[t0:t1], out=ro)
                np.multiply(ac, omkh[t0:t1], out=ac)
            if t0 > 0:
                prev = C_[t0 - 1:t1 - 1]
            else:
                prev = prev0[:n]
                prev[0] = a(c0)
                prev[1:] = C_[:t1 - 1]
            r = rc[:, :, 0]
            np.multiply(np.multiply(np.subtract(one, i, out=r), i, out=r), g, out=r)      # g σ'(i)
            r = rc[:, :, 1]
            np.multiply(np.multiply(np.subtract(one, f, out=r), f, out=r), prev, out=r)   # c_{t-1} σ'(f)
            r = rc[:, :, 2]
            np.multiply(np.subtract(one, np.multiply(g, g, out=r), out=r), i, out=r)      # i (1 - g²)
            ln = None
            if self.layer_norm:
                rs_h, r2_h, rs_c, r2_c = (v[:n] for v in scales)
                np.multiply(S_[t0:t1], root_g, out=rs_h)
                np.multiply(np.multiply(rs_h, rs_h, out=r2_h), inv_g, out=r2_h)
                np.multiply(Sc_[t0:t1], root_h, out=rs_c)
                np.multiply(np.multiply(rs_c, rs_c, out=r2_c), inv_h, out=r2_c)
                ln = ((V_[t0:t1], rs_h, r2_h), (Cc_[t0:t1], rs_c, r2_c))
            return (ro, ac, rc, f, None if kh is None else kh[t0:t1], None if kc is None else kc[t0:t1],
                    None if omkc is None else omkc[t0:t1], ln)

        return coefficients


def _rate_cell():
    try:
        from ..cells.rate import RateCell
    except ImportError:                                   # pragma: no cover - the cell is optional
        return None
    return RateCell


# the cell classes fused runs, each with the kernel that computes it
FUSED_CELLS = {ElmanCell: _LeakyKernel(), LeakyCell: _LeakyKernel(), GatedCell: _GatedKernel(),
               GRUCell: _GRUKernel(layer_norm=False), LSTMCell: _LSTMKernel(layer_norm=False),
               LayerNormGRUCell: _GRUKernel(layer_norm=True), LayerNormLSTMCell: _LSTMKernel(layer_norm=True)}
if _rate_cell() is not None:
    FUSED_CELLS[_rate_cell()] = _LeakyKernel()

# what a subclass may not redefine and keep its parent's kernel
_MATHS = ("forward", "step", "project_inputs", "output", "_recur", "_recurrent_input", "_recurrent_norm",
          "_project", "recurrent_weights", "alpha")
_WRAPPERS = (VariationalDropout, Zoneout, WeightDrop)


def _kernel_for(cell: Cell):
    for cls in type(cell).__mro__:
        if cls in FUSED_CELLS:
            return FUSED_CELLS[cls]
        if any(name in cls.__dict__ for name in _MATHS):
            return None                    # rewrites the maths of the family it derives from
    return None


class _FusedRun(torch.autograd.Function):
    """The recurrence of one run: (P, W, initial state, extras) -> state histories."""

    @staticmethod
    def forward(ctx, kernel, run, P, W, *rest):
        m = kernel.components
        states, extras = rest[:m], rest[m:]
        ops = _ops_for(P, W)
        outputs, saved = kernel.forward(ops, run, P, W, states, extras)
        ctx.kernel, ctx.run, ctx.saved, ctx.m, ctx.n_extras, ctx.ops = kernel, run, saved, m, len(extras), ops
        ctx.save_for_backward(W, *states, *extras, *outputs)
        return outputs

    @staticmethod
    def backward(ctx, *grads):
        if torch.is_grad_enabled():
            raise RuntimeError("fused engine: the hand-derived backward cannot itself be differentiated "
                               "(backward with create_graph=True); run this layer with engine='loop', or for an "
                               "LSTMCell, GRUCell or ElmanCell engine='native' (on the CPU, engine='auto' "
                               "trains GRU and Elman cells on fused)")
        W, *rest = ctx.saved_tensors
        m, e = ctx.m, ctx.n_extras
        states, extras, outputs = rest[:m], rest[m:m + e], rest[m + e:]
        needs = ctx.needs_input_grad[2:]
        dP, dW, d_states, d_extras = ctx.kernel.backward(ctx.ops, ctx.run, ctx.saved, W, tuple(states),
                                                         tuple(extras), tuple(outputs), grads, needs)
        return (None, None, dP, dW, *d_states, *d_extras)


class FusedEngine:
    """Whole-sequence forward and hand-derived BPTT for the cells in :data:`FUSED_CELLS`."""
    name = "fused"

    def supports(self, cell: Cell) -> str | None:
        base, wrappers = unwrap_cell(cell)
        for w in wrappers:
            if type(w) not in _WRAPPERS:
                return (f"{type(w).__name__} is a cell wrapper fused does not know (it runs "
                        f"VariationalDropout, Zoneout and WeightDrop)")
        kernel = _kernel_for(base)
        if kernel is None:
            names = ", ".join(sorted(c.__name__ for c in FUSED_CELLS))
            return f"{type(base).__name__} has no fused kernel (fused runs {names})"
        return kernel.supports(base)

    def run(self, cell: Cell, x: Tensor, state: State, lengths: Tensor | None):
        base, wrappers = unwrap_cell(cell)
        kernel = _kernel_for(base)
        B, T = x.shape[:2]
        xs = x.transpose(0, 1)                                                # (T, B, X)
        sizes = base.state_sizes
        m = 1 if isinstance(sizes, int) else len(sizes)
        in_mask, hidden_mask, keep, dropped, binary = None, None, [None] * m, {}, True
        for w in wrappers:                                                    # outermost first
            if isinstance(w, VariationalDropout) and w.training:
                mx, mh = w.masks["input"], w.masks["hidden"]
                in_mask = mx if in_mask is None or mx is None else in_mask * mx
                hidden_mask = mh if hidden_mask is None or mh is None else hidden_mask * mh
            elif isinstance(w, Zoneout):
                binary &= w.training
                for j, (p, mask) in enumerate(zip(w.probability, w.masks)):
                    k = mask if w.training else (None if p == 0 else x.new_full((T, 1, 1), p))
                    if k is not None:                                         # nested: 1 - Π(1 - k)
                        keep[j] = k if keep[j] is None else 1 - (1 - keep[j]) * (1 - k)
            elif isinstance(w, WeightDrop) and w.training:
                for name, mask in w.masks.items():
                    dropped[name] = (dropped[name] if name in dropped else getattr(base, name)) * mask
        if in_mask is not None:
            xs = xs * in_mask
        alive = None
        if lengths is not None:
            alive = torch.arange(T, device=x.device).unsqueeze(1) < lengths.to(x.device)   # (T, B)
            dead = (~alive).unsqueeze(-1)
            keep = [torch.where(dead, 1.0, k if k is not None else 0.0).to(x.dtype) for k in keep]
        swap = _reparametrize_module(base, dropped) if dropped else contextlib.nullcontext()
        with swap:
            P, W, extras, options = kernel.prepare(base, xs)
        run = _Run(tuple(keep), hidden_mask, binary, **options)
        histories = _FusedRun.apply(kernel, run, P.contiguous(), W, *state_tensors(state), *extras)
        Z0 = histories[0]
        finals = (Z0[-1], *histories[1:])
        out = kernel.emitted(base, Z0)
        if alive is not None:
            out = out * alive.unsqueeze(-1).to(out.dtype)
        out = out.transpose(0, 1)                                             # (B, T, O)
        return out, (finals[0] if isinstance(state, Tensor) else finals)
