r"""Fixed points of a recurrent cell: where the state stops moving under a constant input.

With the input held at ``u``, a cell is a map of its state, :math:`F(h) = f_s(h, u)`.
Its fixed points :math:`h^* = F(h^*)` and their stability (the eigenvalues of the
Jacobian :math:`\partial F / \partial h` there) are the skeleton of what the
network computes: a trained memory network stores each memory as a stable
fixed point (Sussillo & Barak 2013).

:func:`find_fixed_points` minimises the speed :math:`q(h) = \tfrac12 \lVert F(h) - h \rVert^2`
from many starts at once, polishes with Newton's method, keeps the points whose
speed is (numerically) zero, merges duplicates and classifies each one.
:func:`~rnnkit.analysis.plots.plot_fixed_points` draws them in the top principal components of
the states the network visits, next to their Jacobian spectra.

>>> import torch
>>> from rnnkit.cells import ElmanCell
>>> cell = ElmanCell(1, 1, bias=False, dtype=torch.float64)
>>> with torch.no_grad():
...     _ = cell.weight_hh.fill_(2.0)                 # h' = tanh(2 h): three fixed points
>>> result = find_fixed_points(cell, initial_states=torch.linspace(-2, 2, 9, dtype=torch.float64)[:, None])
>>> [round(h, 9) for h in result.points.squeeze(1).sort().values.tolist()], result.num_stable
([-0.957504024, 0.0, 0.957504024], 2)
"""
from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from .._arguments import check_int, check_positive
from ..cells.base import Cell, State

__all__ = ["FixedPoints", "find_fixed_points", "visited_states"]


@dataclass(frozen=True, eq=False)
class FixedPoints:
    """The fixed points of a cell under one constant input (what :func:`find_fixed_points` returns).

    ``points`` (N, S): the distinct fixed points, most often reached first. A
    tuple state such as LSTM's ``(h, c)`` is concatenated into one vector of size
    ``S = sum(state_sizes)``; :meth:`states` splits it back.
    ``speeds`` (N,): :math:`q = \\tfrac12 \\lVert F(h) - h \\rVert^2` at each point.
    ``jacobians`` (N, S, S): :math:`\\partial F / \\partial h` there.
    ``eigenvalues`` (N, S) complex: the Jacobian's, largest modulus first.
    ``stable`` (N,) bool: every eigenvalue inside the unit circle (the map
    :math:`h \\mapsto F(h)` is discrete-time, so that is the test for a local attractor).
    ``counts`` (N,): how many starts ended at each point. ``inputs`` (X,): the
    constant input. ``num_starts``: starts tried; ``num_discarded``: starts whose
    speed stayed above the tolerance (slow points, or not converged).
    """

    points: Tensor
    speeds: Tensor
    jacobians: Tensor
    eigenvalues: Tensor
    stable: Tensor
    counts: Tensor
    inputs: Tensor
    state_sizes: int | tuple
    num_starts: int
    num_discarded: int

    def __len__(self) -> int:
        return len(self.points)

    @property
    def num_stable(self) -> int:
        return int(self.stable.sum())

    @property
    def num_unstable(self) -> int:
        return len(self) - self.num_stable

    def states(self) -> State:
        """The points in the cell's own state structure: (N, S), or a tuple of (N, size_i)."""
        return _split(self.points, self.state_sizes)

    def __repr__(self) -> str:
        return (f"FixedPoints({len(self)} points: {self.num_stable} stable, {self.num_unstable} unstable; "
                f"state size {self.points.shape[1]}, {self.num_starts} starts, {self.num_discarded} discarded)")


# ----- state plumbing ----------------------------------------------------------------------------
def _state_size(sizes) -> int:
    return sizes if isinstance(sizes, int) else sum(sizes)


def _split(flat: Tensor, sizes) -> State:
    if isinstance(sizes, int):
        return flat
    return tuple(flat.split(list(sizes), dim=-1))


def _join(state: State) -> Tensor:
    return state if isinstance(state, Tensor) else torch.cat(list(state), dim=-1)


def _map(cell: Cell, inputs: Tensor):
    """``F`` on a batch of flat states (N, S) -> (N, S), with the input held at ``inputs`` (X,)."""
    def step(flat: Tensor) -> Tensor:
        u = inputs.expand(flat.shape[0], -1)
        return _join(cell(u, _split(flat, cell.state_sizes)))
    return step


def _speeds(step, h: Tensor) -> Tensor:
    return 0.5 * (step(h) - h).pow(2).sum(-1)                                 # (N,)


def _jacobians(step, h: Tensor) -> Tensor:
    """:math:`\\partial F / \\partial h` at every row of ``h`` (N, S) -> (N, S, S).

    Row n of ``F`` depends only on row n of ``h``, so one backward pass per output
    coordinate fills that row of all N Jacobians at once.
    """
    with torch.enable_grad():
        h = h.detach().requires_grad_(True)
        out = step(h)
        rows = [torch.autograd.grad(out[:, i].sum(), h, retain_graph=True, allow_unused=True)[0]
                for i in range(out.shape[1])]
    rows = [torch.zeros_like(h) if r is None else r for r in rows]
    return torch.stack(rows, dim=1).detach()                                  # (N, S_out, S_in)


# ----- argument checks -----------------------------------------------------------------------------
_OWNER = "find_fixed_points"
_CHECK_EVERY, _MIN_PROGRESS = 50, 0.01     # descent stops when 50 steps lower the best summed speed < 1 %
_NEWTON_FROM = 1e-8                        # ... or when every speed is this small: Newton finishes faster


def _integer(name: str, value, minimum: int) -> int:
    return check_int(_OWNER, name, value, minimum)


def _positive(name: str, value) -> float:
    return check_positive(_OWNER, name, value)


def _search_copy(cell: Cell, dtype) -> Cell:
    """A deterministic copy of ``cell`` in ``dtype``: eval mode (no noise, no dropout), no grads."""
    work = copy.deepcopy(cell)
    if dtype is not None:
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"{_OWNER}: dtype must be a floating-point torch.dtype or None (the "
                            f"cell's own), got {dtype!r}")
        work = work.to(dtype)
    work.eval()
    for p in work.parameters():
        p.requires_grad_(False)
    return work


def _reference(cell: Cell) -> tuple:
    ref = next(cell.parameters(), None)
    if ref is None:
        ref = next(cell.buffers(), None)
    return (ref.device, ref.dtype) if ref is not None else (torch.device("cpu"), torch.get_default_dtype())


def _as_inputs(inputs, cell: Cell, device, dtype) -> Tensor:
    if inputs is None:
        return torch.zeros(cell.input_size, device=device, dtype=dtype)
    if not isinstance(inputs, Tensor):
        raise TypeError(f"{_OWNER}: inputs must be a torch.Tensor of shape ({cell.input_size},) "
                        f"(one constant input vector) or None for zeros, got {type(inputs).__name__}")
    if inputs.shape != (cell.input_size,):
        raise ValueError(f"{_OWNER}: inputs must be one constant input vector of shape ({cell.input_size},), "
                         f"got shape {tuple(inputs.shape)}")
    return inputs.detach().to(device=device, dtype=dtype)


def _as_starts(initial_states, num_starts, start_scale, generator, size, device, dtype) -> Tensor:
    if initial_states is None:
        count = 128 if num_starts is None else num_starts
        draws = torch.randn(count, size, generator=generator, dtype=torch.float64)
        return (start_scale * draws).to(device=device, dtype=dtype)
    if isinstance(initial_states, (tuple, list)):
        if not all(isinstance(s, Tensor) for s in initial_states):
            raise TypeError(f"{_OWNER}: initial_states must be a tensor (N, {size}) or a tuple of tensors "
                            f"in the cell's state structure")
        initial_states = torch.cat([s.detach() for s in initial_states], dim=-1)
    if not isinstance(initial_states, Tensor):
        raise TypeError(f"{_OWNER}: initial_states must be a tensor (N, {size}) or None, got "
                        f"{type(initial_states).__name__}")
    if initial_states.dim() == 3:                      # (B, T, S) states along trajectories
        initial_states = initial_states.reshape(-1, initial_states.shape[-1])
    if initial_states.dim() != 2 or initial_states.shape[1] != size or len(initial_states) == 0:
        raise ValueError(f"{_OWNER}: initial_states must have shape (N, {size}) with N >= 1 (or "
                         f"(B, T, {size}) from visited_states), got {tuple(initial_states.shape)}")
    starts = initial_states.detach().to(device=device, dtype=dtype)
    if num_starts is not None:
        if num_starts > len(starts):
            raise ValueError(f"{_OWNER}: num_starts={num_starts} but only {len(starts)} initial states "
                             f"were given; pass more states or a smaller num_starts")
        starts = starts[torch.randperm(len(starts), generator=generator)[:num_starts].to(device)]
    return starts


# ----- the search ----------------------------------------------------------------------------------
def find_fixed_points(cell: Cell, inputs: Tensor | None = None, *, initial_states=None,
                      num_starts: int | None = None, start_scale: float = 1.0, iterations: int = 1000,
                      lr: float = 1e-2, newton_steps: int = 20, tolerance: float = 1e-12,
                      merge_distance: float = 1e-4, dtype: torch.dtype | None = torch.float64,
                      generator: torch.Generator | None = None) -> FixedPoints:
    r"""Find the fixed points :math:`h^* = F(h^*)` of ``cell`` with its input held at ``inputs``.

    1. **Starts**: ``initial_states`` (N, S) — best, states the trained network
       visits (:func:`visited_states`; (B, T, S) is flattened), ``num_starts`` of
       them drawn at random if given — or else ``num_starts`` (default 128) draws
       from :math:`\mathcal{N}(0, \text{start\_scale}^2)`.
    2. **Descent** on :math:`\sum_n q(h_n)`, all starts in one batch,
       :math:`q(h) = \tfrac12 \lVert F(h) - h \rVert^2`, with Rprop: every coordinate
       of every start has its own step (first ``lr``), grown ×1.2 while its gradient
       keeps its sign and halved when it flips, so a far start travels fast and a
       near one settles — no learning rate to tune, unlike Adam or SGD, whose one
       step size is too small for the first and too large for the second. At most
       ``iterations`` steps, stopping early once every
       :math:`q \le \max(\text{tolerance}, 10^{-8})` (close enough for Newton) or once
       50 steps lower the smallest sum so far by less than 1 %.
    3. **Newton polish**: up to ``newton_steps`` steps :math:`h \leftarrow h - (J - I)^{+}(F(h) - h)`,
       each kept only where it lowers :math:`q` (halving it up to 4 times), which takes
       a point near a fixed point to machine precision.
    4. **Keep** the points with :math:`q \le` ``tolerance``; **merge** those within
       ``merge_distance`` (Euclidean) of a point with a lower :math:`q`; **classify**
       each by the eigenvalues of :math:`J = \partial F / \partial h`: stable when all
       :math:`|\lambda| < 1`.

    The search runs on a copy of the cell in eval mode (no noise, no dropout)
    converted to ``dtype`` (float64 by default, so a float32 network's fixed
    points come out exact; ``None`` keeps the cell's dtype); ``cell`` itself is
    untouched. ``inputs`` is one input vector (input_size,), zeros by default.
    A tuple state (LSTM's ``(h, c)``) is searched as the concatenated vector
    ``(h, c)``: the fixed point, its Jacobian and stability are those of the full
    state; :meth:`FixedPoints.states` splits the points back. ``generator``
    draws the random starts (or picks ``num_starts`` of the given ones).

    Cost: a descent step is one forward and backward pass over all N starts; a
    Newton step adds S backward passes (the Jacobians) and N pseudo-inverses of
    S × S matrices, so for states of many hundreds of units lower ``num_starts``
    or ``newton_steps``. If no start converges, the result is empty and a
    warning says so. Points whose speed stays small but not zero (slow points,
    Sussillo & Barak's "approximate fixed points") appear when ``tolerance`` is
    raised.

    >>> import torch
    >>> from rnnkit.cells.rate import RateCell
    >>> cell = RateCell(2, 3, activation="identity", spectral_radius=0.5, dtype=torch.float64)  # linear
    >>> u = torch.tensor([1.0, -1.0], dtype=torch.float64)
    >>> result = find_fixed_points(cell, u, num_starts=8)
    >>> w, drive = cell.recurrent_weights().detach(), cell.weight_ih.detach() @ u
    >>> expected = torch.linalg.solve(torch.eye(3, dtype=torch.float64) - w, drive)
    >>> len(result), torch.allclose(result.points[0], expected, atol=1e-12)
    (1, True)
    """
    if not isinstance(cell, Cell):
        raise TypeError(f"{_OWNER}: expected an rnnkit.cells.Cell, got {type(cell).__name__}")
    if num_starts is not None:
        num_starts = _integer("num_starts", num_starts, 1)
    iterations = _integer("iterations", iterations, 0)
    newton_steps = _integer("newton_steps", newton_steps, 0)
    start_scale, lr = _positive("start_scale", start_scale), _positive("lr", lr)
    tolerance, merge_distance = _positive("tolerance", tolerance), _positive("merge_distance", merge_distance)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{_OWNER}: generator must be a torch.Generator, got {type(generator).__name__}")
    work = _search_copy(cell, dtype)
    device, work_dtype = _reference(work)
    u = _as_inputs(inputs, cell, device, work_dtype)
    size = _state_size(cell.state_sizes)
    h = _as_starts(initial_states, num_starts, start_scale, generator, size, device, work_dtype)
    step = _map(work, u)

    # 2. descent on the summed speed: the starts do not interact, and Rprop's steps are
    # per coordinate, so each start is optimised as if alone
    h = h.clone().requires_grad_(True)
    optimiser = torch.optim.Rprop([h], lr=lr)
    best = earlier = math.inf
    with torch.enable_grad():
        for iteration in range(iterations):
            q = _speeds(step, h)
            total = q.sum()
            if bool((q <= max(tolerance, _NEWTON_FROM)).all()):
                break
            best = min(best, total.item())
            if iteration % _CHECK_EVERY == 0:
                # the starts left are stuck (slow points) or creeping: Newton does better
                if best > (1 - _MIN_PROGRESS) * earlier:
                    break
                earlier = best
            optimiser.zero_grad()
            total.backward()
            optimiser.step()
    h = h.detach()

    # 3. Newton polish, damped: a step is taken only where it lowers the speed
    with torch.no_grad():
        q = _speeds(step, h)
    for _ in range(newton_steps):
        if bool((q <= tolerance * 1e-6).all()):
            break
        eye = torch.eye(size, device=device, dtype=work_dtype)
        with torch.no_grad():
            residual = step(h) - h
        newton = -(torch.linalg.pinv(_jacobians(step, h) - eye) @ residual.unsqueeze(-1)).squeeze(-1)
        todo = torch.ones(len(h), dtype=torch.bool, device=device)
        with torch.no_grad():
            for scale in (1.0, 0.5, 0.25, 0.125, 0.0625):
                trial = h + scale * newton
                q_trial = _speeds(step, trial)
                better = todo & torch.isfinite(q_trial) & (q_trial < q)
                h = torch.where(better.unsqueeze(1), trial, h)
                q = torch.where(better, q_trial, q)
                todo &= ~better

    # 4. keep, merge, classify
    converged = q <= tolerance
    candidates, speeds = h[converged], q[converged]
    order = torch.argsort(speeds, stable=True)
    candidates, speeds = candidates[order], speeds[order]
    keep: list[int] = []
    owner = torch.full((len(candidates),), -1, dtype=torch.long, device=candidates.device)
    if len(candidates):
        distances = torch.cdist(candidates, candidates)                       # (M, M)
        for i in range(len(candidates)):
            if owner[i] >= 0:
                continue
            keep.append(i)
            near = (distances[i] <= merge_distance) & (owner < 0)
            owner[near] = i
    counts = torch.tensor([int((owner == i).sum()) for i in keep], dtype=torch.long, device=candidates.device)
    by_count = torch.argsort(-counts, stable=True)
    index = torch.tensor(keep, dtype=torch.long, device=candidates.device)[by_count.to(candidates.device)]
    points, speeds, counts = candidates[index], speeds[index], counts[by_count]
    if len(points):
        jacobians = _jacobians(step, points)
        eigenvalues = torch.linalg.eigvals(jacobians)
        eigenvalues = eigenvalues.gather(1, eigenvalues.abs().argsort(dim=1, descending=True, stable=True))
        stable = eigenvalues.abs().amax(dim=1) < 1
    else:
        best = q.min().item() if len(q) else math.nan
        warnings.warn(f"{_OWNER}: none of the {len(h)} starts reached a fixed point (smallest speed q = "
                      f"{best:.3g} > tolerance {tolerance:g}); raise iterations, try other initial_states, "
                      f"or raise tolerance to accept slow points", stacklevel=2)
        jacobians = torch.zeros(0, size, size, device=device, dtype=work_dtype)
        eigenvalues = torch.zeros(0, size, device=device, dtype=torch.complex128)
        stable = torch.zeros(0, dtype=torch.bool, device=device)
    return FixedPoints(points=points, speeds=speeds, jacobians=jacobians, eigenvalues=eigenvalues,
                       stable=stable, counts=counts, inputs=u, state_sizes=cell.state_sizes,
                       num_starts=len(h), num_discarded=int((~converged).sum()))


def visited_states(cell: Cell, x: Tensor, state: State | None = None) -> Tensor:
    """The states ``cell`` passes through on inputs ``x`` (B, T, input_size), as (B, T, S).

    Step t's row is the state after reading ``x[:, t]``; tuple states are
    concatenated as in :func:`find_fixed_points`. The cell runs as it is (its
    train/eval mode decides noise and dropout), without gradients. Use the
    result as ``initial_states`` and as the trajectories of :func:`~rnnkit.analysis.plots.plot_fixed_points`.

    >>> import torch
    >>> from rnnkit.cells import LSTMCell
    >>> visited_states(LSTMCell(2, 3), torch.randn(4, 5, 2)).shape      # (h, c) side by side
    torch.Size([4, 5, 6])
    """
    owner = "visited_states"
    if not isinstance(cell, Cell):
        raise TypeError(f"{owner}: expected an rnnkit.cells.Cell, got {type(cell).__name__}")
    if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != cell.input_size:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{owner}: expected inputs of shape (batch, time, {cell.input_size}), got {got}")
    if state is None:
        state = cell.initial_state(x.shape[0], device=x.device, dtype=x.dtype)
    states = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            state = cell(x[:, t], state)
            states.append(_join(state))
    return torch.stack(states, dim=1)                                         # (B, T, S)
