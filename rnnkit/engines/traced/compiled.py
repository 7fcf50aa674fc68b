"""The traced step's forward and serial backward as whole-sequence loops compiled by numba.

The NumPy program of :mod:`.lowering` pays a NumPy call (about half a microsecond) per operation
and a Python loop per step: at small batches that overhead is the whole cost. Here the forward
graph and the serial backward graph each become the body of one loop over time, generated as
source from the graphs (each aten operation one array expression, its GEMMs a compiled loop) and
compiled by numba (the ``fast`` extra), so a sequence is one call. The deferred backward (once per
sequence) stays NumPy. These loops compute what the NumPy program computes (its twin; the tests
hold them to it and to ``loop``), for steps whose GEMMs are small (``SMALL_GEMM``): at large
batches torch's BLAS beats a compiled loop, and the NumPy program keeps it.

Compiling takes seconds, so a program is compiled only after it has run ``SETTINGS.compile_after``
time steps (a long job, not a test); the source is written under rnnkit's cache folder, where
numba caches the machine code across processes.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import operator
import sys
import types

import numpy as np
import torch

from ..._files import cache_root
from .graph import StepGraphs
from .lowering import Program, _split_slices

__all__ = ["compile_program", "SMALL_GEMM"]

# a loop is compiled only if each of its GEMMs has at most this many multiply-adds (B·K·M) and each of its
# values at most SMALL_STEP numbers: there a NumPy call's overhead is the cost of an operation and the
# compiled loop wins; beyond, NumPy's vectorized operations and torch's BLAS do (measured: an IndRNN step
# at (B, H) = (32, 256), 8,192 numbers a value, backward 62 us compiled against 39 us in NumPy)
SMALL_GEMM = 2 ** 18
SMALL_STEP = 2 ** 12
# reassociation lets the compiler vectorize sums (the GEMM loops); no approximate functions, which would
# part the loops from their NumPy twin
_JIT = "@numba.njit(cache=True, fastmath={'nsz', 'contract', 'reassoc'}, nogil=True)"

_HELPERS = '''
import numpy as np
import numba


@numba.njit(cache=True, fastmath=True, nogil=True)
def _mm(a, b):
    n, k = a.shape
    m = b.shape[1]
    out = np.zeros((n, m), a.dtype)
    if b.T.flags.c_contiguous:                      # b = W^T with W contiguous: dot products of rows
        bt = b.T
        for i in range(n):
            for l in range(m):
                s = out[i, l]
                for j in range(k):
                    s += a[i, j] * bt[l, j]
                out[i, l] = s
    else:
        for i in range(n):
            for j in range(k):
                x = a[i, j]
                for l in range(m):
                    out[i, l] += x * b[j, l]
    return out
'''


def _value(x, dt: str) -> str:
    """A Python number as a constant of the loop's dtype (numba would promote float32 by a float64)."""
    x = float(x)
    if x != x:
        return f"{dt}(np.nan)"
    if x in (float("inf"), -float("inf")):
        return f"{dt}({'-' if x < 0 else ''}np.inf)"
    return f"{dt}({x!r})"


def _index(ndim: int, dim: int, part: str) -> str:
    return ", ".join([":"] * (dim % ndim) + [part])


def _shape(n) -> tuple:
    return tuple(n.meta["val"].shape)


def _expr(n, r, dt: str):
    """The numba expression of node ``n`` (``r`` renders an argument), or None if it has none."""
    name, a = str(n.target), n.args
    v = (lambda x: r(x) if isinstance(x, torch.fx.Node) else _value(x, dt))
    simple = {"aten.neg.default": "(-{0})", "aten.tanh.default": "np.tanh({0})", "aten.exp.default": "np.exp({0})",
              "aten.log.default": "np.log({0})", "aten.sqrt.default": "np.sqrt({0})", "aten.abs.default": "np.abs({0})",
              "aten.sin.default": "np.sin({0})", "aten.cos.default": "np.cos({0})",
              "aten.sigmoid.default": f"({dt}(1.0) / ({dt}(1.0) + np.exp(-{{0}})))",
              "aten.relu.default": f"np.maximum({{0}}, {dt}(0.0))", "aten.t.default": "{0}.T",
              "aten.reciprocal.default": f"({dt}(1.0) / {{0}})", "aten.rsqrt.default": f"({dt}(1.0) / np.sqrt({{0}}))",
              "aten.clone.default": "{0}", "aten.alias.default": "{0}", "aten.detach.default": "{0}",
              "aten.zeros_like.default": "np.zeros_like({0})", "aten.ones_like.default": "np.ones_like({0})"}
    if name in simple:
        return simple[name].format(r(a[0]))
    binary = {"aten.add.Tensor": "+", "aten.sub.Tensor": "-", "aten.mul.Tensor": "*", "aten.div.Tensor": "/",
              "aten.add.Scalar": "+", "aten.mul.Scalar": "*", "aten.le.Scalar": "<=", "aten.lt.Scalar": "<",
              "aten.ge.Scalar": ">=", "aten.gt.Scalar": ">", "aten.le.Tensor": "<=", "aten.lt.Tensor": "<",
              "aten.ge.Tensor": ">=", "aten.gt.Tensor": ">"}
    if name in binary:
        if n.kwargs.get("alpha", 1) != 1:
            return None
        return f"({v(a[0])} {binary[name]} {v(a[1])})"
    if name == "aten.rsub.Scalar" and n.kwargs.get("alpha", 1) == 1:
        return f"({v(a[1])} - {r(a[0])})"
    if name == "aten.pow.Tensor_Scalar":
        return f"({r(a[0])} * {r(a[0])})" if a[1] == 2 else f"({r(a[0])} ** {v(a[1])})"
    if name in ("aten.maximum.default", "aten.minimum.default", "aten.clamp_min.default", "aten.clamp_max.default"):
        fn = "np.maximum" if "max" in name.split(".")[1] and "clamp_max" not in name else "np.minimum"
        return f"{fn}({v(a[0])}, {v(a[1])})"
    if name in ("aten.softplus.default", "aten.softplus_backward.default"):
        x = r(a[0]) if name.endswith("softplus.default") else r(a[1])
        beta, threshold = (list(a[1 if "backward" not in name else 2:]) + [1, 20])[:2]
        bx = f"({x} * {v(beta)})"
        if "backward" not in name:
            return f"np.where({bx} > {v(threshold)}, {x}, np.logaddexp({dt}(0.0), {bx}) / {v(beta)})"
        return (f"np.where({bx} > {v(threshold)}, {r(a[0])}, {r(a[0])} * ({dt}(1.0) / ({dt}(1.0) + np.exp(-{bx}))))")
    if name == "aten.tanh_backward.default":
        return f"({r(a[0])} * ({dt}(1.0) - {r(a[1])} * {r(a[1])}))"
    if name == "aten.sigmoid_backward.default":
        return f"({r(a[0])} * ({r(a[1])} * ({dt}(1.0) - {r(a[1])})))"
    if name == "aten.threshold_backward.default":
        return f"np.where({r(a[1])} <= {v(a[2])}, np.zeros_like({r(a[0])}), {r(a[0])})"
    if name == "aten.where.self":
        return f"np.where({r(a[0])}, {v(a[1])}, {v(a[2])})"
    if name == "aten.mm.default":
        return f"_mm({r(a[0])}, {r(a[1])})"
    if name == "aten.addmm.default" and not n.kwargs:
        return f"(_mm({r(a[1])}, {r(a[2])}) + {r(a[0])})"
    if name == "aten.select.int":
        return f"{r(a[0])}[{_index(len(_shape(a[0])), a[1], str(a[2]))}]"
    if name == "aten.slice.Tensor":
        dim, start, end = (list(a[1:4]) + [0, None, None])[:3] if len(a) > 1 else (0, None, None)
        step = a[4] if len(a) > 4 else 1
        size = _shape(a[0])[dim]
        end = size if end is None or end > size else end
        return f"{r(a[0])}[{_index(len(_shape(a[0])), dim, f'{start or 0}:{end}:{step}')}]"
    if name == "aten.cat.default":
        dim = a[1] if len(a) > 1 else 0
        parts = ", ".join(f"np.ascontiguousarray({r(x)})" for x in a[0])
        return f"np.concatenate(({parts},), axis={dim % len(_shape(n))})"
    if name in ("aten.view.default", "aten._unsafe_view.default", "aten.reshape.default"):
        return f"np.ascontiguousarray({r(a[0])}).reshape({tuple(_shape(n))!r})"
    if name == "aten.expand.default":
        return f"np.broadcast_to({r(a[0])}, {tuple(_shape(n))!r})"
    if name == "aten.unsqueeze.default":
        return f"np.expand_dims({r(a[0])}, {a[1] % len(_shape(n))})"
    if name in ("aten.sum.dim_IntList", "aten.mean.dim") and len(a) > 1 and len(a[1]) == 1 and not n.kwargs:
        fn = "np.sum" if "sum" in name else "np.mean"
        dim = a[1][0] % len(_shape(a[0]))
        out = f"{fn}({r(a[0])}, axis={dim})"
        return f"np.expand_dims({out}, {dim})" if len(a) > 2 and a[2] else out
    return None


# elementwise operations whose expressions may be written into their one user's: numba fuses a chain of
# them into one loop (fewer temporaries, and a third of the compile time of one statement each)
_FUSABLE = {"aten.neg.default", "aten.tanh.default", "aten.exp.default", "aten.log.default", "aten.sqrt.default",
            "aten.abs.default", "aten.sin.default", "aten.cos.default", "aten.sigmoid.default", "aten.relu.default",
            "aten.reciprocal.default", "aten.rsqrt.default", "aten.add.Tensor", "aten.sub.Tensor", "aten.mul.Tensor",
            "aten.div.Tensor", "aten.add.Scalar", "aten.mul.Scalar", "aten.rsub.Scalar", "aten.maximum.default",
            "aten.minimum.default", "aten.clamp_min.default", "aten.clamp_max.default"}
# users whose template repeats an argument: an expression written into them would be computed twice
_REPEATS = {"aten.tanh_backward.default", "aten.sigmoid_backward.default", "aten.pow.Tensor_Scalar",
            "aten.softplus.default", "aten.softplus_backward.default", "aten.threshold_backward.default",
            "aten.select_backward.default", "aten.slice_backward.default", "aten.split.Tensor",
            "aten.split_with_sizes.default", "aten.sigmoid.default"}


def _statements(gm, names: dict, dt: str, indent: str):
    """Source lines computing every node of ``gm`` from the names given to its placeholders, and the
    rendered outputs; None where an operation has no numba form."""
    lines, splits, pending = [], {}, {}

    def r(x):                                   # a value by name (a pending expression is written out now)
        if x in pending:
            lines.append(f"{indent}v_{x.name} = {pending.pop(x)}")
            names[x] = f"v_{x.name}"
        return names[x]

    def r_once(x):                              # a value used once: a pending expression itself
        return f"({pending.pop(x)})" if x in pending else r(x)

    for n in gm.graph.nodes:
        if n.op == "placeholder":
            continue
        if n.op == "output":
            return lines, [None if o is None else r(o) for o in n.args[0]]
        target = str(n.target)
        if n.target is operator.getitem and n.args[0] in splits:
            names[n] = f"v_{n.name}"
            lines.append(f"{indent}v_{n.name} = {splits[n.args[0]][n.args[1]]}")
            continue
        if target in ("aten.split.Tensor", "aten.split_with_sizes.default"):
            if not all(u.target is operator.getitem for u in n.users):
                return None
            splits[n] = _split_slices(n, r(n.args[0]))
            continue
        if target in ("aten.select_backward.default", "aten.slice_backward.default"):
            g, sizes, dim = n.args[0], tuple(n.args[1]), n.args[2]
            part = str(n.args[3]) if "select" in target else f"{n.args[3]}:{min(n.args[4], sizes[dim])}:{n.args[5]}"
            source = r(g)
            lines.append(f"{indent}v_{n.name} = np.zeros({sizes!r}, {dt})")
            lines.append(f"{indent}v_{n.name}[{_index(len(sizes), dim, part)}] = {source}")
            names[n] = f"v_{n.name}"
            continue
        if n.op != "call_function" or n.target is operator.getitem:
            return None
        expr = _expr(n, r if target in _REPEATS else r_once, dt)
        if expr is None:
            return None
        (user, *more) = list(n.users) or [None]
        if (target in _FUSABLE and not more and user is not None and user.op == "call_function"
                and str(user.target) not in _REPEATS and user.target is not operator.getitem):
            pending[n] = expr                     # written into its user's expression
            continue
        names[n] = f"v_{n.name}"
        lines.append(f"{indent}v_{n.name} = {expr}")
    return None


def _small(graphs: StepGraphs) -> bool:
    """Whether every GEMM and every value of the step (those computed from the parameters alone, a
    transposed weight, aside) is small enough for the compiled loops to win."""
    for gm in (graphs.forward, graphs.serial):
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        params_only = set(placeholders[:graphs.n_params])
        for n in gm.graph.nodes:
            if n.op == "call_function" and all(a in params_only for a in n.all_input_nodes):
                params_only.add(n)
                continue
            value = n.meta.get("val")
            if n.op == "call_function" and isinstance(value, torch.Tensor) and value.numel() > SMALL_STEP:
                return False
            if str(n.target) in ("aten.mm.default", "aten.addmm.default"):
                (rows, k), m = _shape(n.args[-2]), _shape(n.args[-1])[1]
                if rows * k * m > SMALL_GEMM:
                    return False
    return True


def _source(graphs: StepGraphs, dt: str):
    """The forward and serial loops' source, or None."""
    g, m = graphs, graphs.n_states
    w = [f"w_{i}" for i in range(g.n_params)]
    fw_ph = [n for n in g.forward.graph.nodes if n.op == "placeholder"]
    names = dict(zip(fw_ph, [*w, "v_p", *[f"prev_{i}" for i in range(m)]]))
    body = _statements(g.forward, names, dt, " " * 8)
    if body is None:
        return None
    lines, outs = body
    n_saved = len(outs) - m
    src = [_JIT,
           f"def forward_all(P, binary, {''.join(f'A_{i}, ' for i in range(m))}{', '.join(f's_{i}' for i in range(m))}, "
           f"{', '.join(f'Z_{i}' for i in range(m))}, {''.join(f'K_{j}, ' for j in range(n_saved))}{', '.join(w)}):"
           .replace(", ,", ",").replace(", )", ")"),
           *[f"    prev_{i} = s_{i}" for i in range(m)],
           "    for t in range(P.shape[0]):",
           "        v_p = P[t]", *lines]
    for i in range(m):
        src += [f"        if A_{i}.shape[0] == 0:",
                f"            Z_{i}[t] = {outs[i]}",
                "        elif binary:",
                f"            Z_{i}[t] = np.where(A_{i}[t] > {dt}(0.5), prev_{i}, {outs[i]})",
                "        else:",
                f"            Z_{i}[t] = {outs[i]} + A_{i}[t] * (prev_{i} - {outs[i]})"]
    src += [f"        K_{j}[t] = {outs[m + j]}" for j in range(n_saved)]
    src += [f"        prev_{i} = Z_{i}[t]" for i in range(m)]
    src.append("")
    se_ph = [n for n in g.serial.graph.nodes if n.op == "placeholder"]
    ins = [*w, *[f"K_{j}[t]" for j in g.serial_saved], *[f"prev_{i}" for i in g.serial_states],
           *[f"d_{i}" for i in range(m)]]
    names = dict(zip(se_ph, ins))
    body = _statements(g.serial, names, dt, " " * 8)
    if body is None:
        return None
    lines, outs = body
    n_stash = len(outs) - m
    src += [_JIT,
            f"def serial_all(binary, {''.join(f'A_{i}, ' for i in range(m))}{''.join(f's_{i}, ' for i in range(m))}{''.join(f'Z_{i}, ' for i in range(m))}"
            f"{''.join(f'dZ_{i}, ' for i in range(m))}{''.join(f'K_{j}, ' for j in range(n_saved))}"
            f"{''.join(f'S_{k}, ' for k in range(n_stash))}{''.join(f'D_{i}, ' for i in range(m))}{', '.join(w)}):"
            .replace(", )", ")"),
            "    T = Z_0.shape[0]",
            *[f"    d_{i} = dZ_{i}[T - 1].copy()" for i in range(m)],
            "    for t in range(T - 1, -1, -1):"]
    for i in range(m):
        src += [f"        prev_{i} = Z_{i}[t - 1] if t > 0 else s_{i}",
                f"        keep_{i} = d_{i}",
                f"        if A_{i}.shape[0] > 0 and binary:",
                f"            zero_{i} = np.zeros_like(d_{i})",
                f"            keep_{i} = np.where(A_{i}[t] > {dt}(0.5), d_{i}, zero_{i})",
                f"            d_{i} = np.where(A_{i}[t] > {dt}(0.5), zero_{i}, d_{i})",
                f"        elif A_{i}.shape[0] > 0:",
                f"            keep_{i} = d_{i} * A_{i}[t]",
                f"            d_{i} = d_{i} - keep_{i}"]
    src += lines
    src += [f"        S_{k}[t] = {outs[m + k]}" for k in range(n_stash)]
    for i in range(m):
        new = f"np.zeros_like(prev_{i})" if outs[i] is None else outs[i]
        src += [f"        n_{i} = np.ascontiguousarray({new})",
                f"        if A_{i}.shape[0] > 0:",
                f"            n_{i} = n_{i} + keep_{i}",
                "        if t > 0:",
                f"            n_{i} = n_{i} + dZ_{i}[t - 1]",
                f"        d_{i} = n_{i}"]
    src += [f"    D_{i}[:] = d_{i}" for i in range(m)]
    return "\n".join(src) + "\n", n_saved, n_stash


class CompiledProgram(Program):
    """A :class:`~.lowering.Program` whose forward and serial backward loops are compiled."""

    def __init__(self, program: Program, module, n_saved: int, n_stash: int):
        super().__init__(program.graphs, program.fw, program.serial, program.deferred, numpy=True)
        self.module, self.n_saved, self.n_stash = module, n_saved, n_stash
        fw_out = [n for n in program.graphs.forward.graph.nodes if n.op == "output"][0].args[0]
        se_out = [n for n in program.graphs.serial.graph.nodes if n.op == "output"][0].args[0]
        m = program.graphs.n_states
        self.saved_shapes = [(_shape(n), n.meta["val"].dtype) for n in fw_out[m:]]
        self.stash_shapes = [(_shape(n), n.meta["val"].dtype) for n in se_out[m:]]

    def _mix(self, mix):
        return mix                             # the loops take the keep weights as they come

    def _keeps(self, mix, shapes, like):
        """``(binary, keep per state)``: each keep (T, B, S) contiguous, or an empty array for none."""
        empty = np.zeros((0, 1, 1), like)
        if mix is None:
            return (True, *[empty for _ in shapes])
        keep, binary = mix
        arrays = [empty if k is None else np.ascontiguousarray(k.detach().numpy() if isinstance(k, torch.Tensor)
                                                               else k) for k in keep]
        return (binary, *arrays)

    def forward(self, params, P, states, mix):
        T = P.shape[0]
        params_ = [np.ascontiguousarray(self._in(t)) for t in params]
        s0 = [np.ascontiguousarray(self._in(t)) for t in states]
        histories = [torch.empty((T, *s.shape), dtype=s.dtype) for s in states]
        K = [np.empty((T, *shape), _NUMPY[dtype]) for shape, dtype in self.saved_shapes]
        self.module.forward_all(self._in(P), *self._keeps(mix, s0, s0[0].dtype), *s0,
                                *[self._in(h) for h in histories], *K, *params_)
        saved = _Saved([k[t] for k in K] for t in range(T))
        saved.buffers = K
        return histories, saved

    def _serial(self, params_, s0, Z, saved, mix_, dZ, T):
        m = self.graphs.n_states
        K = getattr(saved, "buffers", None)
        if K is None:
            K = [np.stack([saved[t][j] for t in range(T)]) for j in range(self.n_saved)]
        S = [np.empty((T, *shape), _NUMPY[dtype]) for shape, dtype in self.stash_shapes]
        D = [np.empty_like(z[0]) for z in Z]
        dZ = [np.zeros_like(z) if d is None else np.ascontiguousarray(d) for z, d in zip(Z, dZ)]
        self.module.serial_all(*self._keeps(mix_, Z, Z[0].dtype),
                               *[np.ascontiguousarray(s) for s in s0], *Z, *dZ, *K, *S, *D,
                               *[np.ascontiguousarray(p) for p in params_])
        return D[:m], [[s[t] for s in S] for t in range(T)]


class _Saved(list):
    """Each step's saved values (views), with the (T, ...) buffers they are views of."""
    buffers: list


_NUMPY = {torch.float32: np.float32, torch.float64: np.float64, torch.bool: np.bool_, torch.int64: np.int64}
_MODULES: dict = {}


def _load(source: str):
    """The module of ``source``: written under the cache folder (numba then caches the machine code on
    disk), or executed in memory where the folder cannot be written."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:20]
    if digest in _MODULES:
        return _MODULES[digest]
    text = _HELPERS + "\n\n" + source
    try:
        folder = cache_root() / "traced"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step_{digest}.py"
        if not path.exists():
            tmp = path.with_suffix(f".{id(text)}.tmp")
            tmp.write_text(text)
            tmp.replace(path)
        name = f"rnnkit_traced_{digest}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module             # numba's disk cache finds the module by its name
        spec.loader.exec_module(module)
    except OSError:
        module = types.ModuleType(f"rnnkit_traced_{digest}")
        exec(compile(text.replace("cache=True", "cache=False"), f"<rnnkit traced {digest}>", "exec"), vars(module))
    _MODULES[digest] = module
    return module


@contextlib.contextmanager
def _optimization_level(level: int):
    """numba's LLVM optimization level for the compilations in the block: level 2 compiles the loops in
    about 60% of level 3's time (measured on a peephole LSTM's loops: 10 s against 16.5 s); where this
    numba has no such setting, its default."""
    import numba.core.config as config
    before = getattr(config, "OPT", None)
    try:
        config.OPT = type(before)(level)
    except Exception:                          # another numba: leave its setting alone
        yield
        return
    try:
        yield
    finally:
        config.OPT = before


def compile_program(program: Program, P, states, params):
    """``program`` with compiled loops, or None (no numba, a large GEMM, an operation without a numba
    form, or a failed compilation). Compiles now, by running the loops once on ``P[:1]``."""
    if not program.numpy or not _small(program.graphs):
        return None
    try:
        import numba  # noqa: F401  (the fast extra)
    except ImportError:
        return None
    dt = "np.float32" if P.dtype == torch.float32 else "np.float64"
    made = _source(program.graphs, dt)
    if made is None:
        return None
    source, n_saved, n_stash = made
    try:
        compiled = CompiledProgram(program, _load(source), n_saved, n_stash)
        with torch.no_grad(), _optimization_level(2):   # compile both loops now (later calls have the same types)
            histories, saved = compiled.forward(params, P[:1], states, None)
            compiled._serial([np.ascontiguousarray(compiled._in(t)) for t in params],
                             [compiled._in(s) for s in states], [compiled._in(h) for h in histories], saved, None,
                             [compiled._in(torch.ones_like(h)) for h in histories], 1)
    except Exception:                              # numba's typing refused something: keep NumPy
        return None
    return compiled
