"""Parallel prefix scans: every prefix of an associative product in O(log T) depth.

A recurrence ``s_t = s_{t-1} ∘ e_t`` whose combine ``∘`` is associative need not run
step by step: :func:`associative_scan` pairs neighbours, scans the half-length sequence
of pairs recursively and fills in the even positions, so it does ``O(T)`` combines in
``2⌈log₂ T⌉`` rounds, each round one batched tensor operation. Linear recurrences
(``s_t = A_t s_{t-1} + b_t``) and the HMM forward recursion are such products.

:func:`log_matmul` is the combine for products of matrices with positive entries kept
as logarithms, the stable form of the HMM's forward recursion.

:func:`linear_recurrence` (``s_t = A_t s_{t-1} + b_t``, diagonal or matrix ``A``) and
:func:`log_linear_recurrence` (``v_t = v_{t-1} M_t`` in log space, the HMM filter) solve
those two recurrences for every ``t`` at once. Their default ``"chunked"`` method runs
sequentially inside chunks of ``L`` steps — all chunks at once — and recursively over
the chunks' composed maps: ``O(L log_L T)`` rounds, and on a CPU a fraction of the
memory traffic of one :func:`associative_scan` over the whole sequence (``method="tree"``,
4-5x slower in ``benchmarks/scan.py``).
Neither divides by a product of many factors (as the cumulative-sum forms
``s_t = P_t Σ b_u / P_u`` do), so both are as stable as stepping.
:class:`ScanEngine` (``engine="scan"``) runs every cell with ``linear_coefficients``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .._arguments import check_int

__all__ = ["associative_scan", "sequential_scan", "log_matmul", "log_matmul_reference", "linear_recurrence",
           "log_linear_recurrence", "ScanEngine", "DEFAULT_CHUNK_SIZE"]


def associative_scan(combine: Callable[[Tensor, Tensor], Tensor], elements: Tensor, dim: int = 0) -> Tensor:
    """Inclusive scan ``out[t] = e[0] ∘ e[1] ∘ … ∘ e[t]`` along ``dim``.

    ``combine(a, b)`` takes two stacks of elements of equal length (any leading
    batch shape, the scanned dimension first) and returns ``a ∘ b`` element by
    element; it must be associative (it need not be commutative: the left operand
    is always the earlier one). Differentiable when ``combine`` is.

    >>> import torch
    >>> associative_scan(torch.add, torch.arange(1., 6.))
    tensor([ 1.,  3.,  6., 10., 15.])
    """
    if not isinstance(elements, Tensor):
        raise TypeError(f"associative_scan: elements must be a tensor, got {type(elements).__name__}")
    if elements.dim() == 0:
        raise ValueError("associative_scan: elements must have at least one dimension to scan along, "
                         "got a 0-d tensor")
    x = elements.movedim(dim, 0)
    return _scan(combine, x).movedim(0, dim)


def _scan(combine, x: Tensor) -> Tensor:
    n = x.shape[0]
    if n < 2:
        return x
    odd = _scan(combine, combine(x[0:n - 1:2], x[1:n:2]))   # odd[i] = e[0] ∘ … ∘ e[2i+1]
    even = combine(odd[:(n - 1) // 2], x[2:n:2])              # e[0] ∘ … ∘ e[2i+2]
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    out[0] = x[0]
    out[1::2] = odd
    out[2::2] = even
    return out


def sequential_scan(combine: Callable[[Tensor, Tensor], Tensor], elements: Tensor, dim: int = 0) -> Tensor:
    """The obvious twin of :func:`associative_scan`: one combine per step, left to right."""
    x = elements.movedim(dim, 0)
    acc, out = x[0], [x[0]]
    for t in range(1, x.shape[0]):
        acc = combine(acc.unsqueeze(0), x[t:t + 1])[0]
        out.append(acc)
    return torch.stack(out).movedim(0, dim)


def log_matmul(a: Tensor, b: Tensor) -> Tensor:
    """``log(exp(a) @ exp(b))`` on (..., K, K) by one matrix product.

    Each row of ``a`` and each column of ``b`` is shifted by its maximum before
    exponentiating, so every term is at most 1 and the largest of each row/column is
    exactly 1; the shifts are added back after the logarithm. Terms more than about
    700 nats (float64; 87 in float32) below both shifts underflow to zero, and an
    entry whose every term underflows is clamped to the smallest normal number
    instead of becoming ``-inf`` (keeping gradients finite).
    """
    am = a.amax(-1, keepdim=True)
    bm = b.amax(-2, keepdim=True)
    prod = torch.exp(a - am) @ torch.exp(b - bm)
    return torch.log(prod.clamp_min(torch.finfo(prod.dtype).tiny)) + am + bm


def log_matmul_reference(a: Tensor, b: Tensor) -> Tensor:
    """Twin of :func:`log_matmul`: ``logsumexp_k a_ik + b_kj`` with a (..., K, K, K) intermediate."""
    return torch.logsumexp(a.unsqueeze(-1) + b.unsqueeze(-3), dim=-2)


# ----- linear recurrences ---------------------------------------------------------------------
class _Maps:
    """How one kind of linear map composes and acts; the three phases of :func:`_chunked` use it."""

    @classmethod
    def running_maps(cls, a: Tensor):
        """Phase 1: ``a`` (B, C, L, ...) → the composed maps ``a_l ∘ … ∘ a_1`` at every ``l``, same shape."""
        steps = a.unbind(2)
        maps = [steps[0]]
        for a_l in steps[1:]:
            maps.append(cls.compose(a_l, maps[-1]))
        return torch.stack(maps, 2)

    @staticmethod
    def last_maps(maps) -> Tensor:
        """Each chunk's whole map (B, C, ...), in the form of ``a``: what the level above scans."""
        return maps[:, :, -1]

    @classmethod
    def apply_maps(cls, maps, entering: Tensor, sums: Tensor | None) -> Tensor:
        """Phase 3: the state after every step (B, C, L, H) from the state entering each chunk (B, C, H)."""
        return cls.affine(maps, entering.unsqueeze(2), sums)


class _Diagonal(_Maps):
    """``s ↦ a ⊙ s + b`` with ``a`` (..., H): the element-wise (diagonal) linear update."""

    @staticmethod
    def compose(later: Tensor, earlier: Tensor) -> Tensor:       # the map "earlier, then later"
        return later * earlier

    @staticmethod
    def affine(a: Tensor, s: Tensor, b: Tensor | None) -> Tensor:
        return a * s if b is None else torch.addcmul(b, a, s)


class _Matrix(_Maps):
    """``s ↦ A s + b`` with ``A`` (..., H, H) acting on column vectors."""

    @staticmethod
    def compose(later: Tensor, earlier: Tensor) -> Tensor:
        return later @ earlier

    @staticmethod
    def affine(a: Tensor, s: Tensor, b: Tensor | None) -> Tensor:
        out = (a @ s.unsqueeze(-1)).squeeze(-1)
        return out if b is None else out + b


class _LogRow(_Maps):
    """``log v ↦ log(v M)`` for row vectors ``v`` and positive matrices ``M``, both kept as logarithms."""

    @staticmethod
    def compose(later: Tensor, earlier: Tensor) -> Tensor:
        return log_matmul(earlier, later)

    @staticmethod
    def affine(m: Tensor, log_v: Tensor, b: None) -> Tensor:
        return log_matmul(log_v.unsqueeze(-2), m).squeeze(-2)

    @staticmethod
    def running_maps(log_m: Tensor):
        """Products of positive matrices without a logarithm per step: ``(Q, log_scale)``.

        Each factor is exponentiated once, shifted by its largest entry (a scalar, so the
        shift commutes with the product); the running product ``Q`` is kept in linear
        space, every row rescaled to a largest entry of 1 after each step, and the row
        scales summed as logarithms: the map is ``log Q + log_scale`` (B, C, L, K, 1). An
        entry is lost only when it falls 700 nats (float64; 87 in float32) below the
        largest of its own row, as in the step-by-step filter, which normalizes its
        message the same way.
        """
        shift = log_m.amax((-2, -1), keepdim=True)                         # (B, C, L, 1, 1)
        factors = torch.exp(log_m - shift).unbind(2)
        tiny = torch.finfo(log_m.dtype).tiny
        running, products, scales = factors[0], [], []
        for pos in range(len(factors)):
            if pos:
                running = running @ factors[pos]
            scale = running.amax(-1, keepdim=True).clamp_min(tiny)           # (B, C, K, 1)
            running = running / scale
            products.append(running)
            scales.append(scale)
        log_scale = torch.log(torch.stack(scales, 2)).cumsum(2) + shift.cumsum(2)
        return torch.stack(products, 2), log_scale                          # (B, C, L, K, K), (B, C, L, K, 1)

    @staticmethod
    def last_maps(maps) -> Tensor:
        products, log_scale = maps
        return torch.log(products[:, :, -1].clamp_min(torch.finfo(products.dtype).tiny)) + log_scale[:, :, -1]

    @staticmethod
    def apply_maps(maps, entering: Tensor, sums: None) -> Tensor:
        """``log(v Q)`` with the row scales folded into ``v``: only (B, C, L, K) values are exponentiated."""
        products, log_scale = maps
        weights = entering.unsqueeze(2) + log_scale.squeeze(-1)               # (B, C, L, K)
        top = weights.amax(-1, keepdim=True)
        out = (torch.exp(weights - top).unsqueeze(-2) @ products).squeeze(-2)
        return torch.log(out.clamp_min(torch.finfo(out.dtype).tiny)) + top


def _sequential(kind, a: Tensor, b: Tensor | None, initial: Tensor) -> Tensor:
    """States ``s_t = a_t s_{t-1} + b_t`` one step at a time: (B, T, H)."""
    bs = b.unbind(1) if b is not None else (None,) * a.shape[1]
    states, s = [], initial
    for a_t, b_t in zip(a.unbind(1), bs):
        s = kind.affine(a_t, s, b_t)
        states.append(s)
    return torch.stack(states, 1)


def _chunked(kind, a: Tensor, b: Tensor | None, initial: Tensor, chunk: int) -> Tensor:
    """States of the recurrence in three passes over chunks of ``chunk`` steps.

    1. Within every chunk at once, one step per position: the running map from the
       chunk's entry, ``P_l = a_l ∘ … ∘ a_1`` and ``S_l`` (the state reached from zero).
    2. The state entering each chunk: the same recurrence over the chunks' whole maps
       ``(P_L, S_L)`` — solved by this function again, one level up.
    3. Every state at once: ``s = P_l s_entry + S_l``.

    Only products of at most ``chunk`` factors within a chunk and the chunk-level
    recursion's own are formed, and nothing is divided by them (no ``b / ∏a`` as in the
    cumulative-sum forms), so nothing overflows that the sequential recurrence would not;
    a product that underflows does so to its true, negligible size, as it would step by
    step. A map shared by every step or row (stride 0) is composed only once.
    """
    steps = a.shape[1]
    full, rest = divmod(steps, chunk)
    if full < 2:
        return _sequential(kind, a, b, initial)
    n = full * chunk
    a_chunks = _unexpand(a[:, :n].unflatten(1, (full, chunk)))          # (B, full, chunk, ...), or 1 for B, full
    maps = kind.running_maps(a_chunks)
    sums = None
    if b is not None:                                                   # states reached from zero
        a_steps, b_steps = a_chunks.unbind(2), b[:, :n].unflatten(1, (full, chunk)).unbind(2)
        sums = [b_steps[0]]
        for pos in range(1, chunk):
            sums.append(kind.affine(a_steps[pos], sums[-1], b_steps[pos]))
        sums = torch.stack(sums, 2)                                     # (B, full, chunk, H)
    whole = kind.last_maps(maps)
    whole = whole.expand(whole.shape[0], full, *whole.shape[2:])
    ends = _chunked(kind, whole, sums[:, :, -1] if b is not None else None, initial, chunk)
    entering = torch.cat([initial.unsqueeze(1), ends[:, :-1]], 1)       # (B, full, H)
    states = kind.apply_maps(maps, entering, sums).flatten(1, 2)        # (B, n, H)
    if rest:
        tail = _sequential(kind, a[:, n:], b[:, n:] if b is not None else None, ends[:, -1])
        states = torch.cat([states, tail], 1)
    return states


def _unexpand(a: Tensor) -> Tensor:
    """Dimensions 0 and 1 that are expanded views (stride 0) shrunk to size 1.

    A map shared by the batch, or by every step (``LTICell``'s ``A``, a fixed leak rate),
    is then composed once for all rows or all chunks, and broadcast afterwards."""
    for dim in (0, 1):
        if a.shape[dim] > 1 and a.stride(dim) == 0:
            a = a.narrow(dim, 0, 1)
    return a


def _tree(kind, a: Tensor, b: Tensor | None, initial: Tensor) -> Tensor:
    """The same states by one :func:`associative_scan` over the whole sequence (``method="tree"``).

    The initial state is folded in as a first element that maps anything to it, so
    every prefix's map is a constant and its value is the state."""
    if kind is _Diagonal:
        first = torch.stack([torch.zeros_like(initial), initial], -1).unsqueeze(1)      # (B, 1, H, 2)
        elements = torch.cat([first, torch.stack([a.expand_as(b), b], -1)], 1)          # (B, 1+T, H, 2)
        return associative_scan(_affine_pair, elements, dim=1)[:, 1:, :, 1]
    if kind is _Matrix:
        batch, steps, size = b.shape
        last_row = b.new_zeros(batch, steps + 1, 1, size + 1)
        last_row[..., -1] = 1.0
        first = torch.cat([torch.zeros_like(initial).unsqueeze(-1).expand(batch, size, size),
                           initial.unsqueeze(-1)], -1).unsqueeze(1)                    # (B, 1, H, H+1)
        rest = torch.cat([a.expand(batch, steps, size, size), b.unsqueeze(-1)], -1)     # (B, T, H, H+1)
        elements = torch.cat([torch.cat([first, rest], 1), last_row], -2)              # (B, 1+T, H+1, H+1)
        return associative_scan(_compose_homogeneous, elements, dim=1)[:, 1:, :size, size]
    size = initial.shape[-1]
    first = initial.unsqueeze(-2).expand(-1, size, -1).unsqueeze(1)                    # every row log v_0
    elements = torch.cat([first, a.expand(initial.shape[0], -1, size, size)], 1)
    return associative_scan(log_matmul, elements, dim=1)[:, 1:, 0]


def _affine_pair(earlier: Tensor, later: Tensor) -> Tensor:
    """``(a₂, b₂) ∘ (a₁, b₁) = (a₂ a₁, a₂ b₁ + b₂)`` on pairs stacked in the last dimension."""
    a_later = later[..., :1]
    return torch.addcmul(torch.nn.functional.pad(later[..., 1:], (1, 0)), earlier, a_later)


def _compose_homogeneous(earlier: Tensor, later: Tensor) -> Tensor:
    """Affine maps as (H+1, H+1) matrices ``[[A, b], [0, 1]]``: "earlier, then later" is ``later @ earlier``."""
    return later @ earlier


_METHODS = ("chunked", "tree", "sequential")
DEFAULT_CHUNK_SIZE = 16


def _check_options(owner: str, chunk_size, method) -> None:
    if method not in _METHODS:
        raise ValueError(f"{owner}: method must be one of {list(_METHODS)}, got {method!r}")
    check_int(owner, "chunk_size", chunk_size, 2)


def _run(owner: str, kind, a, b, initial, chunk_size, method) -> Tensor:
    _check_options(owner, chunk_size, method)
    if method == "sequential":
        return _sequential(kind, a, b, initial)
    if method == "tree":
        return _tree(kind, a, b, initial)
    return _chunked(kind, a, b, initial, chunk_size)


def linear_recurrence(A: Tensor, b: Tensor, initial: Tensor, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
                      method: str = "chunked") -> Tensor:
    r"""Every state of :math:`s_t = A_t s_{t-1} + b_t`, :math:`s_0` = ``initial``, without stepping through time.

    Shapes: ``b`` (B, T, H), ``initial`` (B, H); ``A`` either (B, T, H), a diagonal
    update :math:`s_t = A_t \odot s_{t-1} + b_t`, or (B, T, H, H), a matrix acting on
    column vectors. ``A``'s batch and time dimensions may be 1 (or expanded views),
    for updates shared across the batch or over time. Returns the states (B, T, H).

    ``method``:

    - ``"chunked"`` (default): sequential within chunks of ``chunk_size`` steps, all
      chunks at once, and the same recurrence over the chunks' composed maps one level
      up — :math:`O(L \log_L T)` rounds of batched operations, :math:`O(T)` work for a
      diagonal ``A``. It forms only products of the factors of one chunk (and of the
      levels above) and never divides, so it is exactly as stable as stepping: a
      product of many factors below 1 underflows to its true, negligible size. On a
      CPU it does the fewest passes over memory (see ``benchmarks/scan.py``).
    - ``"tree"``: one :func:`associative_scan` of the affine maps
      :math:`(A_2, b_2) \circ (A_1, b_1) = (A_2 A_1, A_2 b_1 + b_2)`, :math:`2\lceil\log_2 T\rceil`
      rounds; as stable, but several passes over memory per round (4-5x the chunked
      method's time on a CPU).
    - ``"sequential"``: the obvious loop, the twin the others are tested against.

    A matrix ``A`` that changes with time costs :math:`O(T H^3)` (products of maps)
    against the loop's :math:`O(T H^2)`; one shared by every step (time dimension 1, or
    an expanded view) is composed within one chunk only, so the scan stays
    :math:`O(T H^2)`. Differentiable.

    >>> import torch
    >>> a = torch.full((1, 4, 1), 0.5); b = torch.ones(1, 4, 1)
    >>> linear_recurrence(a, b, torch.zeros(1, 1)).flatten().tolist()
    [1.0, 1.5, 1.75, 1.875]
    """
    owner = "linear_recurrence"
    for name, t in (("A", A), ("b", b), ("initial", initial)):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            got = t.dtype if isinstance(t, Tensor) else type(t).__name__
            raise TypeError(f"{owner}: {name} must be a floating-point tensor, got {got}")
    if b.dim() != 3:
        raise ValueError(f"{owner}: b must be (batch, time, hidden), got shape {tuple(b.shape)}")
    batch, steps, size = b.shape
    if tuple(initial.shape) != (batch, size):
        raise ValueError(f"{owner}: initial must be (batch, hidden) = {(batch, size)}, got {tuple(initial.shape)}")
    kind = _coefficient_kind(owner, A, batch, steps, size)
    if steps == 0:
        return b.new_empty(batch, 0, size)
    A = A.expand(A.shape[0], steps, *A.shape[2:])          # a batch dimension of 1 stays: shared maps
    return _run(owner, kind, A, b, initial, chunk_size, method)


def _coefficient_kind(owner: str, A, batch: int, steps: int, size: int, label: str = "A"):
    """``_Diagonal`` for A (B, T, H), ``_Matrix`` for A (B, T, H, H); B and T may be 1."""
    if not isinstance(A, Tensor) or not A.is_floating_point():
        got = A.dtype if isinstance(A, Tensor) else type(A).__name__
        raise TypeError(f"{owner}: {label} must be a floating-point tensor, got {got}")
    trailing = {3: (size,), 4: (size, size)}.get(A.dim())
    if (trailing is None or tuple(A.shape[2:]) != trailing or A.shape[0] not in (1, batch)
            or A.shape[1] not in (1, steps)):
        raise ValueError(f"{owner}: {label} must be (B, T, H) = {(batch, steps, size)} for a diagonal update or "
                         f"(B, T, H, H) = {(batch, steps, size, size)} for a matrix one (B and T may be 1), "
                         f"got shape {tuple(A.shape)}")
    return _Diagonal if A.dim() == 3 else _Matrix


def log_linear_recurrence(log_M: Tensor, log_initial: Tensor, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
                          method: str = "chunked") -> Tensor:
    r"""Every :math:`\log v_t` of :math:`v_t = v_{t-1} M_t` for positive row vectors and matrices, in log space.

    ``log_M`` (B, T, K, K) (the batch dimension may be 1), ``log_initial`` (B, K) is
    :math:`\log v_0`; returns :math:`\log v_t` (B, T, K), :math:`t = 1..T`. Products are
    kept as logarithms (:func:`log_matmul`), or within a chunk in linear space with every
    row rescaled to a largest entry of 1, so values far beyond the floating-point range
    stay finite.
    This is the HMM forward recursion :math:`\alpha_t = (\alpha_{t-1} P) \odot e_t`
    with :math:`M_t = P\,\mathrm{diag}(e_t)`. ``method`` and ``chunk_size`` as in
    :func:`linear_recurrence`; ``"chunked"`` does :math:`O(T K^3)` work in
    :math:`O(L \log_L T)` rounds, ``"tree"`` the same work in :math:`2\lceil\log_2 T\rceil`
    rounds with more passes over memory. Differentiable.

    >>> import math, torch
    >>> M = torch.log(torch.tensor([[[[0.5, 0.5], [0.0, 1.0]]]]).expand(1, 3, 2, 2))
    >>> log_linear_recurrence(M, torch.log(torch.tensor([[1.0, 0.0]]))).exp()
    tensor([[[0.5000, 0.5000],
             [0.2500, 0.7500],
             [0.1250, 0.8750]]])
    """
    owner = "log_linear_recurrence"
    for name, t in (("log_M", log_M), ("log_initial", log_initial)):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            got = t.dtype if isinstance(t, Tensor) else type(t).__name__
            raise TypeError(f"{owner}: {name} must be a floating-point tensor, got {got}")
    if log_initial.dim() != 2:
        raise ValueError(f"{owner}: log_initial must be (batch, K), got shape {tuple(log_initial.shape)}")
    batch, k = log_initial.shape
    if log_M.dim() != 4 or log_M.shape[0] not in (1, batch) or tuple(log_M.shape[2:]) != (k, k):
        raise ValueError(f"{owner}: log_M must be (B, T, K, K) with B = {batch} (or 1) and K = {k}, "
                         f"got shape {tuple(log_M.shape)}")
    if log_M.shape[1] == 0:
        return log_initial.new_empty(batch, 0, k)
    return _run(owner, _LogRow, log_M, None, log_initial, chunk_size, method)


# ----- the engine -------------------------------------------------------------------------------
class ScanEngine:
    """Run a cell whose update is linear in its state by a parallel scan over time.

    A cell qualifies by defining ``linear_coefficients(x) -> (A, b)`` for all steps at
    once (``x`` (B, T, input_size)): ``A`` (B, T, H) for a diagonal update
    ``s_t = A_t ⊙ s_{t-1} + b_t`` or (B, T, H, H) for a matrix one, ``b`` (B, T, H)
    (``A``'s batch and time dimensions may be 1). Its state must be one tensor. The
    states come from :func:`linear_recurrence`; a finished sequence gets ``A = I``,
    ``b = 0`` past its length, so it keeps its last state, and its outputs there are
    zero — the ``loop`` engine's contract, to rounding, gradients included.
    """

    name = "scan"

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE, method: str = "chunked"):
        _check_options("ScanEngine", chunk_size, method)
        self.chunk_size, self.method = chunk_size, method

    def supports(self, cell) -> str | None:
        name = type(cell).__name__
        if not callable(getattr(cell, "linear_coefficients", None)):
            return (f"{name} has no linear_coefficients (scan runs cells whose update is linear in the state: "
                    f"LinearLeakyCell, MinGRUCell, MinLSTMCell, LTICell)")
        if not isinstance(cell.state_sizes, int):
            return f"{name} has a state of {len(cell.state_sizes)} tensors; scan runs cells with one state tensor"
        return None

    def run(self, cell, x: Tensor, state: Tensor, lengths: Tensor | None):
        """``x`` (B, T, X) batch-first; ``lengths`` (B,) or None. Returns (outputs, final_state)."""
        batch, steps = x.shape[:2]
        A, b = cell.linear_coefficients(x)
        source = f"{type(cell).__name__}.linear_coefficients"
        if not isinstance(b, Tensor) or tuple(b.shape) != (batch, steps, cell.state_sizes):
            got = tuple(b.shape) if isinstance(b, Tensor) else type(b).__name__
            raise ValueError(f"ScanEngine: the b of {source} must be (B, T, H) = "
                             f"{(batch, steps, cell.state_sizes)}, got {got}")
        kind = _coefficient_kind("ScanEngine", A, batch, steps, cell.state_sizes, f"the A of {source}")
        if lengths is not None:
            alive = torch.arange(steps, device=x.device) < lengths.to(x.device).unsqueeze(1)   # (B, T)
            b = torch.where(alive.unsqueeze(-1), b, torch.zeros((), dtype=b.dtype, device=b.device))
            if kind is _Diagonal:
                A = torch.where(alive.unsqueeze(-1), A, torch.ones((), dtype=A.dtype, device=A.device))
            else:
                eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
                A = torch.where(alive.view(batch, steps, 1, 1), A, eye)
        states = _run("ScanEngine", kind, A.expand(A.shape[0], steps, *A.shape[2:]), b, state,
                      self.chunk_size, self.method)                                     # (B, T, H)
        outputs = cell.output(states.flatten(0, 1)).unflatten(0, (batch, steps))      # (B, T, O)
        if lengths is not None:
            outputs = outputs * alive.unsqueeze(-1).to(outputs.dtype)
        return outputs, states[:, -1]
