"""The traced graphs as code, and the loops that run them over a sequence.

:class:`Program` runs the three graphs of :mod:`.graph` over time: the forward ``T`` times, the
serial backward ``T`` times, the deferred backward once on stacked steps. It runs them either as
the traced torch graphs (any device and dtype: the twin) or as NumPy code generated from them
(CPU float32/float64): each aten operation becomes one NumPy expression, so a step costs a fraction
of a microsecond per operation instead of a torch dispatch. An operation without a NumPy form in
:data:`NUMPY_OPS` makes the whole program run on the torch graphs.
"""
from __future__ import annotations

import operator
import warnings

import numpy as np
import torch
from torch import Tensor

from ..._buffers import numpy_backed
from .graph import StepGraphs

__all__ = ["Program", "lowered", "to_numpy_code", "NUMPY_OPS", "SETTINGS"]


class _Settings:
    """``numpy``: generate NumPy code where possible (True), or always run the torch graphs (False,
    the twin; the tests switch it). ``compile_after``: the time steps a NumPy program runs before its
    loops are compiled with numba (:mod:`.compiled`; None: never), so that a long job pays the
    seconds of compilation and a short one does not. ``inductor``: where the torch graphs of the
    forward and serial steps (those run ``T`` times) are compiled with ``torch.compile``: ``"auto"``
    on CUDA (a step becomes a few fused Triton kernels replayed as one CUDA graph, instead of a
    launch per operation), ``"on"``
    on every device (the tests, on the CPU), ``"off"`` never (the twin)."""
    numpy = True
    compile_after = 50_000
    inductor = "auto"


SETTINGS = _Settings()


def _split(x, size, dim=0):
    n = x.shape[dim]
    index = [slice(None)] * x.ndim
    parts = []
    for start in range(0, n, size):
        index[dim] = slice(start, min(start + size, n))
        parts.append(x[tuple(index)])
    return parts


def _split_sizes(x, sizes, dim=0):
    index, parts, start = [slice(None)] * x.ndim, [], 0
    for size in sizes:
        index[dim] = slice(start, start + size)
        parts.append(x[tuple(index)])
        start += size
    return parts


def _slice(x, dim=0, start=None, end=None, step=1):
    index = [slice(None)] * x.ndim
    index[dim] = slice(start, end, step)
    return x[tuple(index)]


def _select(x, dim, i):
    index = [slice(None)] * x.ndim
    index[dim] = i
    return x[tuple(index)]


# a GEMM with more multiply-adds than this runs in torch's BLAS (MKL/oneDNN; measured 5-8x faster than the
# OpenBLAS NumPy ships, at (32, 256) @ (256, 768) on one thread); smaller ones in NumPy, whose call costs less
TORCH_GEMM_MIN = 2 ** 16


def _mm(a, b):
    if a.shape[0] * a.shape[1] * b.shape[1] <= TORCH_GEMM_MIN:
        return np.dot(a, b)
    return torch.mm(torch.from_numpy(a), torch.from_numpy(b)).numpy()


def _addmm(bias, a, b, beta=1, alpha=1):
    y = _mm(a, b)
    return y + bias if (alpha, beta) == (1, 1) else y * alpha + bias * beta


def _select_backward(g, sizes, dim, index):
    out = np.zeros(sizes, g.dtype)
    out[(slice(None),) * (dim % len(sizes)) + (index,)] = g
    return out


def _slice_backward(g, sizes, dim, start, end, step):
    out = np.zeros(sizes, g.dtype)
    out[(slice(None),) * (dim % len(sizes)) + (slice(start, end, step),)] = g
    return out


def _softplus(x, beta=1, threshold=20):
    """torch's softplus: ``log(1 + e^{βx}) / β``, ``x`` itself where ``βx > threshold``."""
    bx = x * beta
    return np.where(bx > threshold, x, np.logaddexp(0, bx) / beta)


def _softplus_backward(g, x, beta=1, threshold=20):
    bx = x * beta
    return np.where(bx > threshold, g, g * _sigmoid(bx))


def _sigmoid(x):
    return np.tanh(x * 0.5) * 0.5 + 0.5


def _sum(x, dims=None, keepdim=False, dtype=None):
    return np.sum(x, axis=None if dims is None or len(dims) == 0 else tuple(dims), keepdims=keepdim)


def _mean(x, dims=None, keepdim=False, dtype=None):
    return np.mean(x, axis=None if dims is None or len(dims) == 0 else tuple(dims), keepdims=keepdim)


def _view(x, shape):
    return np.reshape(x, shape)


def _like(fill):
    def make(x, *args, dtype=None, layout=None, device=None, pin_memory=None, memory_format=None):
        return np.full_like(x, fill)
    return make


def _full_like(x, value, dtype=None, layout=None, device=None, pin_memory=None, memory_format=None):
    return np.full_like(x, value)


def _clamp(x, low=None, high=None):
    return np.clip(x, low, high)


# aten operation (its overload's name) -> a NumPy function of the same arguments
NUMPY_OPS = {
    "aten.t.default": np.transpose, "aten.mm.default": _mm, "aten.addmm.default": _addmm,
    "aten.split.Tensor": _split, "aten.split_with_sizes.default": _split_sizes,
    "aten.slice.Tensor": _slice, "aten.select.int": _select, "aten.select_backward.default": _select_backward,
    "aten.slice_backward.default": _slice_backward,
    "aten.add.Tensor": lambda a, b, alpha=1: a + b if alpha == 1 else a + alpha * b,
    "aten.sub.Tensor": lambda a, b, alpha=1: a - b if alpha == 1 else a - alpha * b,
    "aten.rsub.Scalar": lambda a, b, alpha=1: b - a if alpha == 1 else b - alpha * a,
    "aten.mul.Tensor": operator.mul, "aten.div.Tensor": operator.truediv,
    "aten.add.Scalar": operator.add, "aten.mul.Scalar": operator.mul,
    "aten.neg.default": operator.neg, "aten.reciprocal.default": np.reciprocal,
    "aten.sigmoid.default": _sigmoid, "aten.softplus.default": _softplus,
    "aten.softplus_backward.default": _softplus_backward, "aten.tanh.default": np.tanh, "aten.exp.default": np.exp,
    "aten.log.default": np.log, "aten.sqrt.default": np.sqrt, "aten.rsqrt.default": lambda a: 1 / np.sqrt(a),
    "aten.abs.default": np.abs, "aten.sin.default": np.sin, "aten.cos.default": np.cos,
    "aten.pow.Tensor_Scalar": np.power, "aten.sign.default": np.sign,
    "aten.relu.default": lambda a: np.maximum(a, 0), "aten.maximum.default": np.maximum,
    "aten.minimum.default": np.minimum, "aten.clamp.default": _clamp,
    "aten.clamp_min.default": np.maximum, "aten.clamp_max.default": np.minimum,
    "aten.tanh_backward.default": lambda g, y: g * (1 - y * y),
    "aten.sigmoid_backward.default": lambda g, y: g * (y * (1 - y)),
    # g times the mask, not np.where: 4 us against 11 us at (32, 256); the two differ only where g is
    # already infinite or NaN under the threshold (0 * inf)
    "aten.threshold_backward.default": lambda g, x, threshold: g * (x > threshold),
    "aten.where.self": np.where, "aten.le.Scalar": operator.le, "aten.lt.Scalar": operator.lt,
    "aten.ge.Scalar": operator.ge, "aten.gt.Scalar": operator.gt, "aten.eq.Scalar": operator.eq,
    "aten.le.Tensor": operator.le, "aten.lt.Tensor": operator.lt, "aten.ge.Tensor": operator.ge,
    "aten.gt.Tensor": operator.gt,
    "aten.sum.dim_IntList": _sum, "aten.sum.default": _sum, "aten.mean.dim": _mean,
    "aten.view.default": _view, "aten._unsafe_view.default": _view, "aten.reshape.default": _view,
    "aten.expand.default": np.broadcast_to, "aten.unsqueeze.default": np.expand_dims,
    "aten.squeeze.dim": np.squeeze, "aten.permute.default": np.transpose,
    "aten.cat.default": lambda xs, dim=0: np.concatenate(xs, axis=dim),
    "aten.clone.default": lambda x, memory_format=None: np.array(x), "aten.detach.default": lambda x: x,
    "aten.alias.default": lambda x: x,
    "aten.zeros_like.default": _like(0), "aten.ones_like.default": _like(1), "aten.full_like.default": _full_like,
}


_SPLITS = ("aten.split.Tensor", "aten.split_with_sizes.default")


def _split_slices(n: torch.fx.Node, source: str) -> list:
    """The parts of a split as slicing expressions of ``source`` (the traced shapes are static)."""
    x = n.args[0].meta["val"]
    dim = n.args[2] if len(n.args) > 2 else n.kwargs.get("dim", 0)
    dim = dim % x.dim()
    total = x.shape[dim]
    if str(n.target) == "aten.split.Tensor":
        sizes = [min(n.args[1], total - start) for start in range(0, total, n.args[1])]
    else:
        sizes = list(n.args[1])
    parts, start = [], 0
    for size in sizes:
        index = ", ".join([":"] * dim + [f"{start}:{start + size}"])
        parts.append(f"{source}[{index}]")
        start += size
    return parts


def to_numpy_code(gm: torch.fx.GraphModule):
    """A Python function of NumPy arrays computing what ``gm`` computes, or None when an operation
    has no NumPy form. The arrays' dtype is kept (Python scalars do not promote in NumPy 2)."""
    namespace, lines, names, splits = {"inf": float("inf"), "nan": float("nan")}, [], {}, {}
    args = []

    def render(a):
        if isinstance(a, torch.fx.Node):
            return names[a]
        if isinstance(a, (list, tuple)):
            inner = ", ".join(render(v) for v in a)
            return f"[{inner}]" if isinstance(a, list) else f"({inner}{',' if len(a) == 1 else ''})"
        if isinstance(a, (bool, int, float, type(None))):
            return repr(a)
        if isinstance(a, (torch.dtype, torch.device, torch.layout, torch.memory_format)):
            return "None"                      # the arrays' own dtype and device: checked by the tests
        raise KeyError(type(a).__name__)

    for n in gm.graph.nodes:
        name = f"v_{n.name}"
        if n.op == "placeholder":
            names[n] = name
            args.append(name)
            continue
        if n.op == "output":
            lines.append(f"    return {render(tuple(n.args[0]))}")
            continue
        if n.op != "call_function":
            return None
        if n.target is operator.getitem and n.args[0] in splits:
            expr = splits[n.args[0]][n.args[1]]
        elif n.target is operator.getitem:
            expr = f"{render(n.args[0])}[{n.args[1]!r}]"
        elif str(n.target) in _SPLITS and all(u.target is operator.getitem for u in n.users):
            splits[n] = _split_slices(n, render(n.args[0]))        # each part a slice at its use
            names[n] = name
            continue
        else:
            fn = NUMPY_OPS.get(str(n.target))
            if fn is None:
                return None
            key = f"f_{len(namespace)}"
            namespace[key] = fn
            try:
                parts = [render(a) for a in n.args] + [f"{k}={render(v)}" for k, v in n.kwargs.items()]
            except KeyError:
                return None
            expr = f"{key}({', '.join(parts)})"
        names[n] = name
        lines.append(f"    {name} = {expr}")
    source = f"def lowered({', '.join(args)}):\n" + "\n".join(lines) + "\n"
    exec(compile(source, "<rnnkit traced step>", "exec"), namespace)
    return namespace["lowered"]


class Program:
    """The loops over time around a traced step's three graphs, on NumPy arrays or torch tensors."""

    def __init__(self, graphs: StepGraphs, forward, serial, deferred, numpy: bool):
        self.graphs, self.numpy = graphs, numpy
        self.fw, self.serial, self.deferred = forward, serial, deferred

    def _in(self, t):
        return None if t is None else (t.detach().numpy() if self.numpy else t)

    def _out(self, a):
        return None if a is None else (torch.from_numpy(np.ascontiguousarray(a)) if self.numpy else a)

    def _mix(self, mix):
        """Per state None or ``(keep (T, B, S), binary)``: with ``binary`` the keep mask as booleans
        (select the old state), else its weights (interpolate)."""
        if mix is None:
            return [None] * self.graphs.n_states
        keep, binary = mix
        return [None if k is None else ((self._in(k) > 0.5) if binary else self._in(k), binary) for k in keep]

    def forward(self, params, P: Tensor, states: list, mix):
        g, lib = self.graphs, (np if self.numpy else torch)
        m, T = g.n_states, P.shape[0]
        params = [self._in(t) for t in params]
        P_ = self._in(P)
        mix_ = self._mix(mix)
        histories = [torch.empty((T, *s.shape), dtype=s.dtype, device=s.device) for s in states]
        Z = [self._in(h) for h in histories]
        s = [self._in(t) for t in states]
        saved = []
        fw = self.fw
        for t in range(T):
            out = fw(*params, P_[t], *s)
            saved.append(out[m:])
            for i in range(m):
                new, k = out[i], mix_[i]
                if k is not None:
                    new = lib.where(k[0][t], s[i], new) if k[1] else new + k[0][t] * (s[i] - new)
                Z[i][t] = new
                s[i] = Z[i][t]
        return histories, saved

    def backward(self, params, P: Tensor, states: list, histories: list, saved: list, mix, d_histories: list,
                 needs):
        m, T = self.graphs.n_states, P.shape[0]
        params_ = [self._in(t) for t in params]
        P_ = self._in(P)
        s0 = [self._in(t) for t in states]
        Z = [self._in(h) for h in histories]
        dZ = [None if d is None else self._in(d) for d in d_histories]
        d, stash = self._serial(params_, s0, Z, saved, self._mix(mix), dZ, T)
        d_params, dP = self._deferred(params_, P_, s0, Z, saved, stash, T)
        d_params = [None if not needs[1 + m + i] else self._out(dp) for i, dp in enumerate(d_params)]
        return (self._out(dP) if needs[0] else None), [self._out(di) for di in d], d_params

    def _serial(self, params_, s0, Z, saved, mix_, dZ, T):
        """The adjoint of every state, last step first: ``(∂s_0 of the initial states, stash by step)``."""
        g, lib = self.graphs, (np if self.numpy else torch)
        m = g.n_states
        d = [lib.zeros_like(z[0]) if dz is None else dz[T - 1] for z, dz in zip(Z, dZ)]
        stash = [None] * T
        serial = self.serial
        for t in range(T - 1, -1, -1):
            prev = [Z[i][t - 1] if t > 0 else s0[i] for i in range(m)]
            keep = [None] * m                      # the adjoint a kept old state passes on
            for i, k in enumerate(mix_):
                if k is not None:
                    kt = k[0][t]
                    keep[i], d[i] = (d[i] * kt, d[i] * ~kt) if k[1] else (d[i] * kt, d[i] - d[i] * kt)
            ins = [saved[t][j] for j in g.serial_saved] + [prev[i] for i in g.serial_states]
            out = serial(*params_, *ins, *d)
            stash[t] = out[m:]
            d = [lib.zeros_like(prev[i]) if out[i] is None else out[i] for i in range(m)]
            d = [di if ki is None else di + ki for di, ki in zip(d, keep)]
            if t > 0:
                d = [di if dz is None else di + dz[t - 1] for di, dz in zip(d, dZ)]
        return d, stash

    def _deferred(self, params_, P_, s0, Z, saved, stash, T):
        """The parameters' gradients and ``∂P``: once on every step's inputs stacked, or step by step."""
        g, m = self.graphs, self.graphs.n_states

        def inputs(t):
            prev = [Z[i][t - 1] if t > 0 else s0[i] for i in range(m)]
            return [*stash[t], *[saved[t][j] for j in g.deferred_saved],
                    *[P_[t] if r == "p" else prev[r] for r in g.deferred_rows]]

        if g.stacked:
            lib = np if self.numpy else torch
            n_rows = len(g.deferred_rows)
            per_step = (inputs(t) for t in range(T))
            stacked = [lib.concatenate(column) if self.numpy else torch.cat(column)
                       for column in zip(*(row[:len(row) - n_rows] for row in per_step))]
            for r in g.deferred_rows:              # p and the previous states: whole histories, no copy of P
                rows = P_ if r == "p" else lib.concatenate([s0[r][None], Z[r][:-1]]) if self.numpy else \
                    torch.cat([s0[r][None], Z[r][:-1]])
                stacked.append(rows.reshape(T * rows.shape[1], *rows.shape[2:]))
            out = self.deferred(*params_, *stacked)
            d_params, dP = list(out[:-1]), out[-1]
            return d_params, (None if dP is None else dP.reshape(P_.shape))
        d_params, rows = [None] * len(params_), []
        for t in range(T):
            out = self.deferred(*params_, *inputs(t))
            d_params = [a if b is None else (b if a is None else a + b) for a, b in zip(d_params, out[:-1])]
            rows.append(out[-1])
        return d_params, (None if rows[0] is None else (np.stack(rows) if self.numpy else torch.stack(rows)))


class _Inductor:
    """A step graph compiled by ``torch.compile`` on its first call (shapes fixed: a program serves one
    shape); the graph itself, with a warning, if compiling fails. On CUDA in inductor's
    ``reduce-overhead`` mode: each step replays one CUDA graph instead of launching its kernels one by
    one; a replay reuses its output buffers, so the outputs, which the loops keep, are copied out."""

    def __init__(self, graph, cuda_graphs: bool = False):
        self.graph, self.run, self.cuda_graphs = graph, None, cuda_graphs

    def __call__(self, *args):
        out = self._call(*args)
        if self.cuda_graphs and self.run is not self.graph:
            out = tuple(o.clone() if isinstance(o, Tensor) else o for o in out)
        return out

    def _call(self, *args):
        if self.run is None:
            compiled = torch.compile(self.graph, dynamic=False, fullgraph=True,
                                     mode="reduce-overhead" if self.cuda_graphs else None)
            try:
                out = compiled(*args)
            except Exception as error:  # noqa: BLE001 - any compiler failure: run the graph as traced
                first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
                warnings.warn(f"traced engine: torch.compile failed on a step graph ({first}); it runs "
                              f"uncompiled", stacklevel=2)
                self.run = self.graph
                return self.graph(*args)
            self.run = compiled
            return out
        return self.run(*args)


def lowered(graphs: StepGraphs, like: Tensor) -> Program:
    """The graphs as NumPy code where the settings, ``like``'s device and dtype and every operation
    allow it; else as the torch graphs, the per-step ones compiled by inductor where
    ``SETTINGS.inductor`` says so."""
    if SETTINGS.numpy and numpy_backed(like):
        code = [to_numpy_code(gm) for gm in (graphs.forward, graphs.serial, graphs.deferred)]
        if all(c is not None for c in code):
            return Program(graphs, *code, numpy=True)
    if SETTINGS.inductor == "on" or (SETTINGS.inductor == "auto" and like.device.type == "cuda"):
        cuda_graphs = like.device.type == "cuda"
        return Program(graphs, _Inductor(graphs.forward, cuda_graphs), _Inductor(graphs.serial, cuda_graphs),
                       graphs.deferred, numpy=False)
    return Program(graphs, graphs.forward, graphs.serial, graphs.deferred, numpy=False)
