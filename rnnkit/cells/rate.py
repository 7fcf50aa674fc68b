r"""Firing-rate networks: the continuous-time RNN of computational neuroscience.

Each unit has an internal state :math:`x_i` (a synaptic current or membrane
potential) and a firing rate :math:`r_i = \phi(x_i)`; the network obeys

.. math::  \tau \frac{dx}{dt} = -x + W \phi(x) + B u + b + \sqrt{2\tau}\,\sigma\,\eta(t)

with :math:`\eta` white noise. :class:`RateCell` is one Euler–Maruyama step of it.
"""
from __future__ import annotations

import math
import warnings
from numbers import Real

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .._arguments import check_number, check_positive
from .base import ACTIVATIONS, Cell, check_sizes
from .base import spectral_radius as radius_of
from .fused import LeakyParameters

__all__ = ["RateCell", "RATE_ACTIVATIONS"]

RATE_ACTIVATIONS = ACTIVATIONS
# activations whose rates are never negative: only with these does a unit's sign decide
# whether it excites or inhibits its targets
_NON_NEGATIVE = ("relu", "softplus", "sigmoid")


class RateCell(Cell):
    r"""A continuous-time firing-rate network, discretized with step ``dt``.

    .. math::  x_{t+1} = x_t + \alpha\,\big(-x_t + W \phi(x_t) + B u_t + b\big)
               + \sigma \sqrt{2 \alpha}\; \xi_t, \qquad \alpha = dt / \tau,
               \quad \xi_t \sim \mathcal{N}(0, I)

    The state is ``x`` (B, hidden_size); the cell emits the firing rates
    ``output(x) = φ(x)`` (B, hidden_size). ``B`` is ``weight_ih`` (H, input_size),
    ``b`` is ``bias`` (H,), ``W`` is :meth:`recurrent_weights` (H, H); ``tau`` and
    ``dt`` are in any one unit of time (the defaults read as 100 ms and 20 ms).
    ``dt = tau`` gives the discrete network ``x_{t+1} = W φ(x_t) + B u_t + b``;
    ``dt > tau`` would overshoot the leak and is an error.

    **Noise.** Each unit gets private white noise of strength ``noise_std`` = σ.
    The term :math:`\sigma\sqrt{2\alpha}\,\xi_t` is the Euler–Maruyama step of
    :math:`\sqrt{2\tau}\,\sigma\,dW/\tau` over ``dt``, scaled so that σ is the
    stationary standard deviation of an unconnected unit (an Ornstein–Uhlenbeck
    process) whatever ``dt``: the discrete chain's variance is
    :math:`\sigma^2 / (1 - \alpha/2)`, which tends to σ² as ``dt → 0``. Like dropout,
    noise is drawn only in training mode (``cell.train()``) and never when
    ``noise_std = 0``, so ``cell.eval()`` gives the deterministic map.

    **Dale's law.** ``dale`` is None (any signs), a fraction (e.g. 0.8: the first
    ``round(0.8·H)`` units excitatory, the rest inhibitory), or a length-H sequence
    of +1 (excitatory) and -1 (inhibitory). Column ``j`` of ``W`` holds unit ``j``'s
    outgoing weights, so the effective weights are

    .. math::  W = |W_{raw}| \cdot \mathrm{diag}(s), \qquad s_j \in \{+1, -1\}

    with ``W_raw = weight_hh`` the trained parameter and ``s`` the buffer ``signs``:
    every column keeps its sign by construction, under any optimizer. Input
    weights ``B`` stay unconstrained. The sign only decides excitation with
    non-negative rates, so use ``"relu"``, ``"softplus"`` or ``"sigmoid"`` with it
    (``"tanh"`` gives a warning). ``autapses=False`` fixes the diagonal of ``W`` at
    zero (no unit drives itself).

    **Initialisation.** ``W_raw`` has :math:`\mathcal{N}(0, 1/H)` entries (their
    magnitudes under Dale's law, with the inhibitory columns multiplied by
    :math:`n_E / n_I` so that every unit's excitatory and inhibitory input balance
    on average); then ``W`` is rescaled to spectral radius ``spectral_radius``.
    ``B`` is :math:`U(-1/\sqrt{X}, 1/\sqrt{X})`, ``b`` is zero.

    Activations: ``"tanh"``, ``"relu"``, ``"softplus"``, ``"sigmoid"``, ``"identity"``
    (a linear network).

    >>> import torch
    >>> cell = RateCell(3, 10, tau=100.0, dt=20.0, activation="relu", dale=0.8)
    >>> cell.signs.tolist()
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0, -1.0]
    >>> x = cell(torch.randn(4, 3), cell.initial_state(4))
    >>> tuple(x.shape), bool((cell.output(x) >= 0).all())
    ((4, 10), True)
    """

    def __init__(self, input_size: int, hidden_size: int, tau: float = 100.0, dt: float = 20.0,
                 activation: str = "tanh", dale=None, noise_std: float = 0.0, autapses: bool = True,
                 spectral_radius: float = 1.0, *, device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        check_sizes(name, input_size=input_size, hidden_size=hidden_size)
        self.input_size, self.hidden_size, self.state_sizes = input_size, hidden_size, hidden_size
        self.tau = check_positive(name, "tau", tau)
        self.dt = check_positive(name, "dt", dt)
        if self.dt > self.tau:
            raise ValueError(f"{name}: dt must not exceed tau, got dt={dt!r} > tau={tau!r}; an Euler "
                             f"step longer than the time constant overshoots the leak (dt = tau is "
                             f"the discrete-time network); take a smaller dt")
        if not isinstance(activation, str) or activation not in RATE_ACTIVATIONS:
            raise ValueError(f"{name}: unknown activation {activation!r}; choose one of "
                             f"{sorted(RATE_ACTIVATIONS)}")
        self.activation = activation
        self._phi = RATE_ACTIVATIONS[activation]
        self.noise_std = check_number(name, "noise_std", noise_std, low=0.0, high_closed=False,
                                      what="a finite number >= 0")
        if not isinstance(autapses, bool):
            raise TypeError(f"{name}: autapses must be True or False, got {type(autapses).__name__}")
        self.autapses = autapses
        self.spectral_radius = check_positive(name, "spectral_radius", spectral_radius)
        signs = self._dale_signs(name, dale, hidden_size)
        if signs is not None and activation not in _NON_NEGATIVE:
            warnings.warn(f"{name}: Dale's law with activation {activation!r} lets rates go negative, "
                          f"so an 'excitatory' unit can inhibit; use one of {list(_NON_NEGATIVE)}",
                          stacklevel=2)
        self.dale = signs is not None
        kw = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size, **kw))
        self.bias = nn.Parameter(torch.empty(hidden_size, **kw))
        like = self.weight_hh
        self.register_buffer("signs", None if signs is None else signs.to(like.device, like.dtype))
        self.register_buffer("_no_autapse", None if autapses else
                             1 - torch.eye(hidden_size, device=like.device, dtype=like.dtype))
        self.reset_parameters()

    @staticmethod
    def _dale_signs(name: str, dale, hidden_size: int) -> Tensor | None:
        if dale is None:
            return None
        if isinstance(dale, Real) and not isinstance(dale, bool):
            check_number(name, "dale", dale, low=0.0, high=1.0, low_closed=False, high_closed=False,
                         what="an excitatory fraction in (0, 1)",
                         hint="pass a sequence of +1/-1 signs for an all-excitatory network")
            excitatory = round(dale * hidden_size)
            if not 0 < excitatory < hidden_size:
                raise ValueError(f"{name}: excitatory fraction {dale!r} of hidden_size={hidden_size} "
                                 f"gives {excitatory} excitatory units; both kinds need at least one, "
                                 f"so enlarge hidden_size or pass the signs explicitly")
            return torch.cat([torch.ones(excitatory), -torch.ones(hidden_size - excitatory)])
        try:
            signs = torch.as_tensor(dale, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{name}: dale must be None, an excitatory fraction in (0, 1) or a sequence "
                            f"of +1/-1 signs, got {type(dale).__name__}") from None
        if signs.shape != (hidden_size,):
            raise ValueError(f"{name}: dale signs must have shape ({hidden_size},), got shape "
                             f"{tuple(signs.shape)}")
        bad = (signs != 1) & (signs != -1)
        if bool(bad.any()):
            raise ValueError(f"{name}: dale signs must be +1 (excitatory) or -1 (inhibitory), got "
                             f"{signs[bad][0].item():g}")
        return signs

    # ----- parameters -----------------------------------------------------------------------------
    @property
    def alpha(self) -> float:
        """The Euler step in units of the time constant, ``dt / tau``."""
        return self.dt / self.tau

    def recurrent_weights(self) -> Tensor:
        r"""The effective recurrent matrix ``W`` (H, H): ``|W_raw| · diag(s)`` under Dale's
        law, ``W_raw`` otherwise, with a zero diagonal when ``autapses=False``."""
        weight = self.weight_hh
        if self.signs is not None:
            weight = weight.abs() * self.signs                     # column j scaled by s_j
        if self._no_autapse is not None:
            weight = weight * self._no_autapse
        return weight

    def reset_parameters(self) -> None:
        h = self.hidden_size
        with torch.no_grad():
            raw = torch.randn(h, h, dtype=torch.float64) / math.sqrt(h)
            if self.signs is not None:
                signs = self.signs.to(torch.float64)
                excitatory, inhibitory = int((signs > 0).sum()), int((signs < 0).sum())
                raw = raw.abs()
                if excitatory and inhibitory:
                    raw[:, signs < 0] *= excitatory / inhibitory
                effective = raw * signs
            else:
                effective = raw
            if not self.autapses:
                effective = effective * (1 - torch.eye(h, dtype=torch.float64))
            radius = radius_of(effective)
            if radius > 0:                                  # zero only for H = 1 without autapses
                raw = raw * (self.spectral_radius / radius)
            self.weight_hh.copy_(raw)
            bound = 1 / math.sqrt(self.input_size)
            self.weight_ih.uniform_(-bound, bound)
            self.bias.zero_()

    # ----- the step -------------------------------------------------------------------------------
    def project_inputs(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias)               # (..., H) = B u + b

    def fused_kernel(self) -> str:
        return "rate"                # the kernel of rnnkit.engines.fused

    def fused_parameters(self) -> LeakyParameters:
        return LeakyParameters(self.weight_ih, self.recurrent_weights(), self.bias, phi=self.activation,
                               alpha=self.alpha, noise_std=self._noise_scale())

    def _noise_scale(self) -> float | None:
        """σ √(2α), the std of the noise an Euler step adds to the state; None in evaluation mode or without noise."""
        return self.noise_std * math.sqrt(2 * self.alpha) if self.training and self.noise_std > 0 else None

    def step(self, projected_t: Tensor, x: Tensor) -> Tensor:
        drive = F.linear(self._phi(x), self.recurrent_weights()) + projected_t      # (B, H)
        x_next = x + self.alpha * (drive - x)
        noise = self._noise_scale()
        if noise is not None:
            x_next = x_next + noise * torch.randn_like(x)
        return x_next

    def output(self, x: Tensor) -> Tensor:
        """The firing rates ``φ(x)`` (B, H)."""
        return self._phi(x)

    def extra_repr(self) -> str:
        dale = "" if self.signs is None else f", dale={int((self.signs > 0).sum())}E/{int((self.signs < 0).sum())}I"
        noise = f", noise_std={self.noise_std:g}" if self.noise_std else ""
        return (f"{self.input_size}, {self.hidden_size}, tau={self.tau:g}, dt={self.dt:g}, "
                f"activation={self.activation!r}{dale}{noise}, autapses={self.autapses}")
