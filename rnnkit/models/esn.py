"""Echo state network: a fixed random reservoir and a linear readout fitted in closed form."""
from __future__ import annotations


import torch
from torch import Tensor, nn

from .._checks import check_series
from ..cells.reservoir import ReservoirCell
from ..layers import Recurrent

__all__ = ["EchoStateNetwork", "ridge_regression", "mackey_glass", "nrmse"]


def ridge_regression(features: Tensor, targets: Tensor, ridge: float) -> Tensor:
    r"""Closed-form ridge regression with a bias column, in float64.

    With ``A = [features, 1]`` (N, F+1) and ``Y = targets`` (N, Y), returns
    ``W`` (F+1, Y) solving the normal equations

    .. math::  (A^\top A + \lambda I)\, W = A^\top Y

    (the bias row is regularised like the others; ``lambda = ridge >= 0``). The
    last row of ``W`` is the bias. ``ridge = 0`` is ordinary least squares.
    """
    a = torch.cat([features.to(torch.float64),
                   torch.ones(features.shape[0], 1, dtype=torch.float64, device=features.device)], 1)
    y = targets.to(torch.float64)
    gram = a.T @ a
    gram.diagonal().add_(ridge)
    return torch.linalg.solve(gram, a.T @ y)


def nrmse(prediction: Tensor, target: Tensor) -> float:
    """Root-mean-square error divided by the target's standard deviation."""
    p, t = prediction.to(torch.float64), target.to(torch.float64)
    return (torch.sqrt(((p - t) ** 2).mean()) / t.std()).item()


def mackey_glass(length: int, tau: float = 17.0, beta: float = 0.2, gamma: float = 0.1,
                 n: float = 10.0, x0: float = 1.2, dt: float = 0.1, sample_every: float = 1.0,
                 discard: int = 500) -> Tensor:
    r"""A Mackey–Glass series, sampled every ``sample_every`` time units, scaled to [-1, 1].

    .. math::  \frac{dx}{dt} = \beta \frac{x(t-\tau)}{1 + x(t-\tau)^n} - \gamma x(t)

    Integrated with fourth-order Runge–Kutta at step ``dt`` (the delayed term at a
    half step is the mean of the two neighbouring history points), with history
    ``x(t) = x0`` for ``t <= 0``. The first ``discard`` samples (the transient) are
    dropped, then ``length`` samples are min–max scaled to [-1, 1]. Returns a
    float64 tensor of shape ``(length,)``. ``tau = 17`` is the classic mildly
    chaotic benchmark.
    """
    if length < 2:
        raise ValueError(f"mackey_glass: length must be >= 2, got {length}")
    if tau <= 0 or dt <= 0 or sample_every <= 0:
        raise ValueError(f"mackey_glass: tau, dt and sample_every must be > 0, got "
                         f"tau={tau}, dt={dt}, sample_every={sample_every}")
    sub = max(1, int(round(sample_every / dt)))
    lag = max(1, int(round(tau / dt)))
    total = (length + discard) * sub
    hist = [x0] * (lag + 1) + [0.0] * total          # hist[lag + i] is x(i·dt); x = x0 for t <= 0
    f = lambda x, xd: beta * xd / (1.0 + xd ** n) - gamma * x
    base = lag
    for i in range(total):
        k = base + i                                  # index of x(t)
        x, xd0, xd1 = hist[k], hist[k - lag], hist[k - lag + 1]
        xdm = 0.5 * (xd0 + xd1)
        k1 = f(x, xd0)
        k2 = f(x + 0.5 * dt * k1, xdm)
        k3 = f(x + 0.5 * dt * k2, xdm)
        k4 = f(x + dt * k3, xd1)
        hist[k + 1] = x + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    series = torch.tensor(hist[base + 1:base + 1 + total:sub][discard:discard + length], dtype=torch.float64)
    lo, hi = series.min(), series.max()
    return 2 * (series - lo) / (hi - lo) - 1


class EchoStateNetwork(nn.Module):
    r"""Echo state network: ``h_t`` from a fixed :class:`ReservoirCell`, ``y_t = W_out [h_t; 1]``.

    .. math::
        h_t = (1 - a) h_{t-1} + a \tanh(W_{in} x_t + W h_{t-1} + b), \qquad
        y_t = W_{out} h_t + b_{out}

    Only the readout is learned, and in closed form: :meth:`fit` runs the
    reservoir over ``inputs`` (B, T, X) without gradients, drops the first
    ``warmup`` states of every series (the reservoir forgets its zero start),
    stacks the rest of all B series and solves the ridge regression
    ``(A^T A + ridge·I) W = A^T Y`` in float64 (see :func:`ridge_regression`).

    - :meth:`predict` (B, T, X) -> (B, T, Y): teacher-forced, one step ahead.
    - :meth:`generate` closed loop: after reading ``warmup_inputs`` every output is
      fed back as the next input (needs ``input_size == output_size``).

    ``reservoir_options`` go to :class:`ReservoirCell` (``spectral_radius``,
    ``sparsity``, ``input_scaling``, ``bias_scaling``, ``leak_rate``, ``seed``).
    The reservoir runs in ``dtype`` (float64 by default, for accurate readouts).

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
        if isinstance(output_size, bool) or not isinstance(output_size, int) or output_size <= 0:
            raise ValueError(f"{name}: output_size must be a positive integer, got {output_size}")
        if not ridge >= 0:
            raise ValueError(f"{name}: ridge must be >= 0, got {ridge}")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"{name}: warmup must be an integer >= 0, got {warmup}")
        self.input_size, self.output_size, self.reservoir_size = input_size, output_size, reservoir_size
        self.ridge, self.warmup = float(ridge), warmup
        self.cell = ReservoirCell(input_size, reservoir_size, device=device, dtype=dtype,
                                  **reservoir_options)
        self.reservoir = Recurrent(self.cell, engine="loop")
        self.register_buffer("readout_weight", torch.zeros(output_size, reservoir_size,
                                                            dtype=dtype, device=device))
        self.register_buffer("readout_bias", torch.zeros(output_size, dtype=dtype, device=device))
        self.fitted = False
        self.last_state: Tensor | None = None

    # ----- helpers ------------------------------------------------------------
    def _check_series(self, what: str, x: Tensor, size: int) -> Tensor:
        return check_series(type(self).__name__, what, x, size).to(self.cell.weight.dtype)

    def _read(self, states: Tensor) -> Tensor:
        return states @ self.readout_weight.T + self.readout_bias

    def _check_fitted(self, what: str) -> None:
        if not self.fitted:
            raise ValueError(f"{type(self).__name__}: {what} needs a readout; call fit(inputs, targets) first")

    @torch.no_grad()
    def states(self, inputs: Tensor, state: Tensor | None = None):
        """Reservoir states (B, T, H) over ``inputs`` (B, T, X), and the final state (B, H)."""
        inputs = self._check_series("inputs", inputs, self.input_size)
        return self.reservoir(inputs, state)

    # ----- API ----------------------------------------------------------------
    @torch.no_grad()
    def fit(self, inputs: Tensor, targets: Tensor, state: Tensor | None = None) -> "EchoStateNetwork":
        """Fit the readout on ``inputs`` (B, T, X) -> ``targets`` (B, T, Y); returns ``self``.

        The final reservoir state is kept in ``last_state`` so that
        ``predict``/``generate`` can continue right after the training data.
        """
        name = type(self).__name__
        inputs = self._check_series("inputs", inputs, self.input_size)
        targets = self._check_series("targets", targets, self.output_size)
        if targets.shape[:2] != inputs.shape[:2]:
            raise ValueError(f"{name}: expected targets with the inputs' (batch, time) = "
                             f"{tuple(inputs.shape[:2])}, got {tuple(targets.shape[:2])}")
        if inputs.shape[1] <= self.warmup:
            raise ValueError(f"{name}: series of {inputs.shape[1]} steps leave nothing to fit after "
                             f"warmup={self.warmup}; expected more than {self.warmup} steps")
        states, final = self.reservoir(inputs, state)
        feats = states[:, self.warmup:].reshape(-1, self.reservoir_size)
        w = ridge_regression(feats, targets[:, self.warmup:].reshape(-1, self.output_size), self.ridge)
        self.readout_weight.copy_(w[:-1].T)
        self.readout_bias.copy_(w[-1])
        self.fitted = True
        self.last_state = final
        return self

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
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"{name}: steps must be a positive integer, got {steps}")
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
