"""Echo state network: a fixed random reservoir and a linear readout fitted in closed form or online."""
from __future__ import annotations

import inspect

import torch
from torch import Tensor, nn

from .._arguments import check_int, check_number, check_positive
from .._checks import check_state
from ..cells.base import check_sizes
from ..cells.reservoir import ReservoirCell
from ..data.synthetic import mackey_glass
from ..layers import Recurrent

__all__ = ["EchoStateNetwork", "ridge_regression", "recursive_least_squares", "mackey_glass", "nrmse",
           "closed_loop_horizon"]

_RESERVOIR_OPTIONS = tuple(p for p in inspect.signature(ReservoirCell).parameters
                           if p not in ("input_size", "hidden_size", "device", "dtype"))
_ONLINE_METHODS = ("rls", "force")


def _with_ones(features: Tensor) -> Tensor:
    """``[features, 1]`` in float64: the readout's design matrix (..., F) -> (..., F+1)."""
    f = features.to(torch.float64)
    return torch.cat([f, torch.ones(*f.shape[:-1], 1, dtype=torch.float64, device=f.device)], -1)


def _gram(a: Tensor) -> Tensor:
    """``A^T A`` of a 2-D float64 matrix.

    On CPU NumPy recognises ``a.T @ a`` and calls the symmetric rank-k update
    (BLAS ``syrk``), half the work of the general product torch runs; the
    result is the same up to rounding (tested against ``a.T @ a``).
    """
    if a.device.type == "cpu" and not a.requires_grad:
        n = a.contiguous().numpy()
        return torch.from_numpy(n.T @ n)
    return a.T @ a


def ridge_regression(features: Tensor, targets: Tensor, ridge: float) -> Tensor:
    r"""Closed-form ridge regression with a bias column, in float64.

    With ``A = [features, 1]`` (N, F+1) and ``Y = targets`` (N, Y), returns
    ``W`` (F+1, Y) solving the normal equations

    .. math::  (A^\top A + \lambda I)\, W = A^\top Y

    (the bias row is regularised like the others; ``lambda = ridge >= 0``). The
    last row of ``W`` is the bias. ``ridge = 0`` is ordinary least squares.

    >>> import torch
    >>> x = torch.arange(4.0).view(4, 1)
    >>> [round(v, 9) for v in ridge_regression(x, 3 * x + 1, ridge=0.0).flatten().tolist()]
    [3.0, 1.0]
    """
    a = _with_ones(features)
    gram = _gram(a)
    gram.diagonal().add_(ridge)
    return torch.linalg.solve(gram, a.T @ targets.to(torch.float64))


def _rls_update(p: Tensor, w: Tensor, a: Tensor, y: Tensor, forgetting: float) -> None:
    """One block RLS update of ``p`` (F, F) and ``w`` (F, Y), in place, from ``a`` (B, F), ``y`` (B, Y)."""
    pa = p @ a.T                                                   # (F, B)
    s = a @ pa                                                     # (B, B)
    s.diagonal().add_(forgetting)
    gain = torch.linalg.solve(s, pa.T).T                           # (F, B), s is symmetric
    w.addmm_(gain, y - a @ w)
    p.addmm_(gain, pa.T, alpha=-1.0)
    if forgetting != 1.0:
        p.div_(forgetting)


def _check_forgetting(owner: str, forgetting) -> float:
    return check_number(owner, "forgetting", forgetting, low=0.0, high=1.0, low_closed=False,
                        hint="1 remembers every sample equally")


def recursive_least_squares(features: Tensor, targets: Tensor, ridge: float,
                            forgetting: float = 1.0) -> Tensor:
    r"""Recursive least squares with a bias column, in float64: ridge regression one step at a time.

    ``features`` (T, B, F) and ``targets`` (T, B, Y) are T blocks of B samples
    (a 2-D (N, F) / (N, Y) pair is N blocks of one sample). With
    ``A_t = [features_t, 1]`` (B, F+1), ``lambda = forgetting``, ``P_0 = I/ridge``
    and ``W_0 = 0``, every block updates

    .. math::
        S_t = \lambda I + A_t P_{t-1} A_t^\top, \quad
        K_t = P_{t-1} A_t^\top S_t^{-1}, \quad
        W_t = W_{t-1} + K_t (Y_t - A_t W_{t-1}), \quad
        P_t = (P_{t-1} - K_t A_t P_{t-1}) / \lambda

    so that ``P_t`` is the inverse of ``lambda^t ridge I + sum_s lambda^(t-s) A_s^T A_s``
    and the returned ``W_T`` (F+1, Y, bias last) minimises

    .. math::  \sum_t \lambda^{T-t} \lVert Y_t - A_t W \rVert^2 + \lambda^T\, \mathrm{ridge}\, \lVert W \rVert^2.

    With ``forgetting = 1`` this is exactly :func:`ridge_regression` on all
    samples (up to rounding); ``forgetting < 1`` weighs recent blocks more and
    tracks a drifting target. Needs ``ridge > 0``.

    >>> import torch
    >>> x, y = torch.randn(50, 3, dtype=torch.float64), torch.randn(50, 2, dtype=torch.float64)
    >>> bool(torch.allclose(recursive_least_squares(x, y, 0.1), ridge_regression(x, y, 0.1)))
    True
    """
    name = "recursive_least_squares"
    check_positive(name, "ridge", ridge, hint="P starts at I/ridge")
    forgetting = _check_forgetting(name, forgetting)
    if not isinstance(features, Tensor) or not isinstance(targets, Tensor):
        raise TypeError(f"{name}: expected features and targets as tensors, got "
                        f"{type(features).__name__} and {type(targets).__name__}")
    pair = features.dim(), targets.dim()
    if pair not in ((2, 2), (3, 3)) or features.shape[:pair[0] - 1] != targets.shape[:pair[0] - 1]:
        raise ValueError(f"{name}: expected features (T, B, F) and targets (T, B, Y) with the same "
                         f"(T, B), or (N, F) and (N, Y); got {tuple(features.shape)} and "
                         f"{tuple(targets.shape)}")
    if pair == (2, 2):
        features, targets = features.unsqueeze(1), targets.unsqueeze(1)    # N blocks of one sample
    a, y = _with_ones(features), targets.to(torch.float64)
    p = torch.eye(a.shape[-1], dtype=torch.float64, device=a.device) / ridge
    w = torch.zeros(a.shape[-1], y.shape[-1], dtype=torch.float64, device=a.device)
    for a_t, y_t in zip(a.unbind(0), y.unbind(0)):
        _rls_update(p, w, a_t, y_t, forgetting)
    return w


def nrmse(prediction: Tensor, target: Tensor) -> float:
    """Root-mean-square error divided by the target's standard deviation."""
    p, t = prediction.to(torch.float64), target.to(torch.float64)
    return (torch.sqrt(((p - t) ** 2).mean()) / t.std()).item()


def closed_loop_horizon(generated: Tensor, target: Tensor, threshold: float = 0.1,
                        scale: float | None = None) -> int:
    r"""How many leading steps a generated path stays within ``threshold`` running NRMSE.

    ``generated`` and ``target`` are (B, T, Y). The running NRMSE after ``k``
    steps is

    .. math::  e_k = \sqrt{\operatorname{mean}_{b,\, t \le k,\, y} (g_{bty} - s_{bty})^2} \,/\, \sigma

    with ``sigma = scale`` or, by default, the standard deviation of the whole
    ``target``. Returns ``k - 1`` for the first ``k`` with ``e_k > threshold``, or
    ``T`` if there is none: the number of steps the continuation is good for.

    >>> import torch
    >>> truth = torch.sin(torch.arange(10.0)).view(1, 10, 1)
    >>> closed_loop_horizon(truth + torch.tensor([0.0] * 6 + [1.0] * 4).view(1, 10, 1), truth)
    6
    """
    name = "closed_loop_horizon"
    if not isinstance(generated, Tensor) or not isinstance(target, Tensor) or generated.dim() != 3 \
            or generated.shape != target.shape or generated.shape[1] == 0:
        got = [tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__ for v in (generated, target)]
        raise ValueError(f"{name}: expected generated and target of the same shape (batch, time, size) "
                         f"with time >= 1, got {got[0]} and {got[1]}")
    g, t = generated.to(torch.float64), target.to(torch.float64)
    sigma = t.std().item() if scale is None else float(scale)
    per_step = ((g - t) ** 2).mean(dim=(0, 2))                                 # (T,)
    running = (per_step.cumsum(0) / torch.arange(1, len(per_step) + 1, dtype=torch.float64)).sqrt()
    bad = (running / sigma > threshold).nonzero()
    return len(per_step) if len(bad) == 0 else int(bad[0, 0])


class EchoStateNetwork(nn.Module):
    r"""Echo state network: ``h_t`` from a fixed :class:`ReservoirCell`, ``y_t = W_out [h_t; 1]``.

    .. math::
        h_t = (1 - a) h_{t-1} + a \tanh(W_{in} x_t + W h_{t-1} + b), \qquad
        y_t = W_{out} h_t + b_{out}

    Only the readout is learned:

    - :meth:`fit` (closed form): runs the reservoir over ``inputs`` (B, T, X)
      without gradients (:meth:`ReservoirCell.run`), drops the first ``warmup``
      states of every series (the reservoir forgets its zero start), stacks the
      rest of all B series and solves the ridge regression
      ``(A^T A + ridge·I) W = A^T Y`` in float64 (see :func:`ridge_regression`).
    - :meth:`fit_online`: the same readout one step at a time by recursive least
      squares (``method="rls"``, teacher-forced), or FORCE learning
      (``method="force"``): the network runs on its own output while RLS keeps
      that output on the target.

    and then:

    - :meth:`predict` (B, T, X) -> (B, T, Y): teacher-forced, one step ahead.
    - :meth:`generate` closed loop: after reading ``warmup_inputs`` every output is
      fed back as the next input (needs ``input_size == output_size``).

    ``reservoir_options`` go to :class:`ReservoirCell` (``spectral_radius``,
    ``sparsity``, ``input_scaling``, ``bias_scaling``, ``leak_rate``, ``seed``);
    :meth:`from_cell` wraps a reservoir you built (e.g. with
    :meth:`ReservoirCell.from_weights`). The reservoir runs in ``dtype`` (float64
    by default, for accurate readouts). ``reservoir`` is the same cell as a
    :class:`rnnkit.Recurrent` layer (loop engine, with autograd): the slow,
    obvious twin of the fast :meth:`states`.

    >>> import torch
    >>> x = mackey_glass(600).view(1, -1, 1)
    >>> esn = EchoStateNetwork(1, 1, reservoir_size=100, warmup=50, seed=0).fit(x[:, :-1], x[:, 1:])
    >>> esn.predict(x[:, :-1]).shape
    torch.Size([1, 599, 1])
    """

    def __init__(self, input_size: int, output_size: int, reservoir_size: int = 500,
                 ridge: float = 1e-6, warmup: int = 100, *, dtype=torch.float64, device=None,
                 **reservoir_options):
        super().__init__()
        name = type(self).__name__
        check_sizes(name, input_size=input_size, reservoir_size=reservoir_size)
        unknown = sorted(set(reservoir_options) - set(_RESERVOIR_OPTIONS))
        if unknown:
            raise TypeError(f"{name}: unknown reservoir option(s) {unknown}; the reservoir takes "
                            f"{list(_RESERVOIR_OPTIONS)}")
        cell = ReservoirCell(input_size, reservoir_size, device=device, dtype=dtype, **reservoir_options)
        self._setup(cell, output_size, ridge, warmup)

    @classmethod
    def from_cell(cls, cell: ReservoirCell, output_size: int, ridge: float = 1e-6,
                  warmup: int = 100) -> EchoStateNetwork:
        """An echo state network around an existing reservoir (its dtype and device).

        >>> import torch
        >>> cell = ReservoirCell.from_weights(0.5 * torch.eye(3, dtype=torch.float64),
        ...                                   torch.ones(3, 1, dtype=torch.float64))
        >>> EchoStateNetwork.from_cell(cell, output_size=1, warmup=0).reservoir_size
        3
        """
        if not isinstance(cell, ReservoirCell):
            raise TypeError(f"{cls.__name__}.from_cell: expected a ReservoirCell, got {type(cell).__name__}")
        esn = cls.__new__(cls)
        nn.Module.__init__(esn)
        esn._setup(cell, output_size, ridge, warmup)
        return esn

    def _setup(self, cell: ReservoirCell, output_size: int, ridge: float, warmup: int) -> None:
        name = type(self).__name__
        check_int(name, "output_size", output_size)
        check_number(name, "ridge", ridge, low=0.0, high_closed=False, what="a finite number >= 0")
        check_int(name, "warmup", warmup, 0)
        self.input_size, self.output_size = cell.input_size, output_size
        self.reservoir_size = cell.hidden_size
        self.ridge, self.warmup = float(ridge), warmup
        self.cell = cell
        self.reservoir = Recurrent(cell, engine="loop")
        kw = {"dtype": cell.weight.dtype, "device": cell.weight.device}
        self.register_buffer("readout_weight", torch.zeros(output_size, cell.hidden_size, **kw))
        self.register_buffer("readout_bias", torch.zeros(output_size, **kw))
        self.fitted = False
        self.last_state: Tensor | None = None

    # ----- helpers ------------------------------------------------------------
    def _check_series(self, what: str, x: Tensor, size: int) -> Tensor:
        name = type(self).__name__
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != size:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name}: expected {what} of shape (batch, time, {size}), got {got}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"{name}: expected {what} with at least one series of at least one step, "
                             f"got shape {tuple(x.shape)}")
        if x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"{name}: expected real-valued {what}, got {x.dtype}")
        bad = ~torch.isfinite(x)
        if bad.any():
            b, t = bad.any(-1).nonzero()[0].tolist()
            raise ValueError(f"{name}: {what} contain NaN or infinite values (the first at series {b}, "
                             f"step {t}); clean or impute them first")
        return x.to(self.cell.weight.dtype)

    def _check_targets(self, inputs: Tensor, targets: Tensor) -> Tensor:
        targets = self._check_series("targets", targets, self.output_size)
        if targets.shape[:2] != inputs.shape[:2]:
            raise ValueError(f"{type(self).__name__}: expected targets with the inputs' (batch, time) = "
                             f"{tuple(inputs.shape[:2])}, got {tuple(targets.shape[:2])}")
        if inputs.shape[1] <= self.warmup:
            raise ValueError(f"{type(self).__name__}: series of {inputs.shape[1]} steps leave nothing to "
                             f"fit after warmup={self.warmup}; expected more than {self.warmup} steps")
        return targets

    def _read(self, states: Tensor) -> Tensor:
        return states @ self.readout_weight.T + self.readout_bias

    def _set_readout(self, w: Tensor) -> None:
        """Install ``w`` (H+1, Y), bias last, as the readout."""
        self.readout_weight.copy_(w[:-1].T)
        self.readout_bias.copy_(w[-1])
        self.fitted = True

    def _check_fitted(self, what: str) -> None:
        if not self.fitted:
            raise ValueError(f"{type(self).__name__}: {what} needs a readout; call fit(inputs, targets) first")

    @torch.no_grad()
    def states(self, inputs: Tensor, state: Tensor | None = None):
        """Reservoir states (B, T, H) over ``inputs`` (B, T, X), and the final state (B, H).

        Runs :meth:`ReservoirCell.run`; ``self.reservoir(inputs, state)`` computes the
        same with autograd, one step at a time.
        """
        inputs = self._check_series("inputs", inputs, self.input_size)
        return self.cell.run(inputs, state)

    # ----- API ----------------------------------------------------------------
    @torch.no_grad()
    def fit(self, inputs: Tensor, targets: Tensor, state: Tensor | None = None) -> EchoStateNetwork:
        """Fit the readout on ``inputs`` (B, T, X) -> ``targets`` (B, T, Y); returns ``self``.

        The final reservoir state is kept in ``last_state`` so that
        ``predict``/``generate`` can continue right after the training data.
        """
        inputs = self._check_series("inputs", inputs, self.input_size)
        targets = self._check_targets(inputs, targets)
        states, final = self.cell.run(inputs, state)
        feats = states[:, self.warmup:].reshape(-1, self.reservoir_size)
        self._set_readout(ridge_regression(feats, targets[:, self.warmup:].reshape(-1, self.output_size),
                                           self.ridge))
        self.last_state = final
        return self

    @torch.no_grad()
    def fit_online(self, inputs: Tensor, targets: Tensor, method: str = "rls", forgetting: float = 1.0,
                   state: Tensor | None = None) -> EchoStateNetwork:
        r"""Fit the readout one time step at a time; returns ``self``.

        Both methods use the block RLS update of :func:`recursive_least_squares`
        with features ``A_t = [h_t; 1]`` (one row per series), ``P_0 = I/ridge``,
        ``W_0 = 0`` and ``lambda = forgetting`` in (0, 1], learning from every
        step ``t >= warmup``. They differ in what the reservoir reads:

        - ``method="rls"``: the given ``inputs`` (teacher forcing). With
          ``forgetting=1`` the result equals :meth:`fit` up to rounding.
        - ``method="force"``: FORCE learning (Sussillo & Abbott 2009) for a
          generator. Up to step ``warmup`` the reservoir reads ``inputs``; from
          then on it reads its own previous output ``z_{t-1} = W_{t-1}^\top
          A_{t-1}``, while RLS keeps that output on the target. The readout so
          learns on the states its own outputs produce, which is what
          :meth:`generate` will face. ``z`` is the output *after* the update at
          its step (a posteriori): in discrete time the output before the
          update carries a whole step's error into the loop, and training
          with it did not converge in our tests. Needs ``input_size ==
          output_size``; ``targets`` are usually ``inputs`` shifted one step
          ahead, and a small ``ridge`` (a large ``P_0``) makes the first steps
          learn fast.

        Each step costs ``O(H^2)`` for the update of ``P`` (H+1, H+1).
        ``last_state`` keeps the final reservoir state.
        """
        name = type(self).__name__
        if method not in _ONLINE_METHODS:
            raise ValueError(f"{name}: unknown online method {method!r}; choose one of {list(_ONLINE_METHODS)}")
        forgetting = _check_forgetting(name, forgetting)
        if not self.ridge > 0:
            raise ValueError(f"{name}: fit_online needs ridge > 0 (RLS starts from P = I/ridge), got "
                             f"ridge={self.ridge}; use fit() for ordinary least squares")
        if method == "force" and self.input_size != self.output_size:
            raise ValueError(f"{name}: FORCE feeds outputs back as inputs and needs input_size == "
                             f"output_size, got {self.input_size} and {self.output_size}")
        inputs = self._check_series("inputs", inputs, self.input_size)
        targets = self._check_targets(inputs, targets)
        if method == "rls":
            states, final = self.cell.run(inputs, state)
            w = recursive_least_squares(states[:, self.warmup:].transpose(0, 1),
                                        targets[:, self.warmup:].transpose(0, 1), self.ridge, forgetting)
            self._set_readout(w)
            self.last_state = final
            return self
        self._set_readout(self._force(inputs, targets, state, forgetting))
        return self

    def _force(self, inputs: Tensor, targets: Tensor, state: Tensor | None, forgetting: float) -> Tensor:
        batch, steps = inputs.shape[:2]
        if state is None:
            state = self.cell.initial_state(batch)
        check_state(type(self).__name__, state, self.reservoir_size, batch, inputs)
        h = state
        size = self.reservoir_size + 1
        p = torch.eye(size, dtype=torch.float64, device=h.device) / self.ridge
        w = torch.zeros(size, self.output_size, dtype=torch.float64, device=h.device)
        ones = torch.ones(batch, 1, dtype=h.dtype, device=h.device)
        z = None
        for t in range(steps):
            h = self.cell(inputs[:, t] if t <= self.warmup else z, h)
            if t < self.warmup:
                continue
            a = torch.cat([h, ones], 1).to(torch.float64)                # (B, H+1)
            _rls_update(p, w, a, targets[:, t].to(torch.float64), forgetting)
            z = (a @ w).to(h.dtype)                                        # the output after learning
        self.last_state = h
        return w

    @torch.no_grad()
    def predict(self, inputs: Tensor, state: Tensor | None = None, return_state: bool = False):
        """One-step predictions (B, T, Y) for teacher-forced ``inputs`` (B, T, X).

        ``state`` (B, H) continues from a previous run (e.g. ``last_state``);
        with ``return_state=True`` returns ``(outputs, final_state)``.
        """
        self._check_fitted("predict")
        states, final = self.states(inputs, state)
        out = self._read(states)
        return (out, final) if return_state else out

    @torch.no_grad()
    def generate(self, warmup_inputs: Tensor, steps: int, state: Tensor | None = None) -> Tensor:
        """Closed-loop run: read ``warmup_inputs`` (B, T, X), then emit ``steps`` outputs (B, steps, Y).

        The first output is the prediction after the last warm-up input; each
        output is then fed back as the next input.
        """
        name = type(self).__name__
        self._check_fitted("generate")
        if self.input_size != self.output_size:
            raise ValueError(f"{name}: generate feeds outputs back as inputs and needs "
                             f"input_size == output_size, got {self.input_size} and {self.output_size}")
        check_int(name, "steps", steps)
        _, h = self.states(warmup_inputs, state)
        y = self._read(h)
        outs = [y]
        for _ in range(steps - 1):
            h = self.cell(y, h)
            y = self._read(h)
            outs.append(y)
        return torch.stack(outs, 1)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.output_size}, reservoir_size={self.reservoir_size}, "
                f"ridge={self.ridge}, warmup={self.warmup}")
