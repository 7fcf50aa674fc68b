r"""Cells whose update is linear in the state: :math:`s_t = A_t s_{t-1} + b_t`.

``A_t`` and ``b_t`` depend on the input ``x_t`` alone, so one projection gives them
for every step, and the ``scan`` engine (:class:`rnnkit.engines.scan.ScanEngine`)
solves the recurrence without stepping through time. Each cell states its update
twice: ``step`` is the equation, one step at a time (what the ``loop`` engine runs,
the reference), and ``linear_coefficients(x) -> (A, b)`` is the same update for all
steps at once, ``A`` (B, T, H) for the diagonal cells, (1, T, H, H) for
:class:`LTICell`, and ``b`` (B, T, H).

- :class:`LinearLeakyCell` — leaky integrators of a linear drive, fixed or learned rates
- :class:`MinGRUCell`, :class:`MinLSTMCell` — the gated linear recurrences of Feng et al. (2024)
- :class:`LTICell` — a linear time-invariant system with a full transition matrix
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .._arguments import check_positive
from .base import Cell, check_sizes
from .base import spectral_radius as radius_of
from .leaky import _LeakRates

__all__ = ["LinearLeakyCell", "MinGRUCell", "MinLSTMCell", "LTICell"]


class _InputDrivenCell(Cell):
    """What the linear cells share: the input projection ``weight_ih`` (k·H, input_size),
    ``bias_ih`` (k·H,), initialised ``U(-1/√input_size, 1/√input_size)`` as ``nn.Linear``."""

    def _make_projection(self, input_size: int, hidden_size: int, num_chunks: int, bias: bool,
                         device, dtype) -> None:
        check_sizes(type(self).__name__, input_size=input_size, hidden_size=hidden_size)
        self.input_size, self.hidden_size, self.state_sizes = input_size, hidden_size, hidden_size
        kw = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(num_chunks * hidden_size, input_size, **kw))
        self.bias_ih = nn.Parameter(torch.empty(num_chunks * hidden_size, **kw)) if bias else None
        self.bias = bias

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.input_size)
        with torch.no_grad():
            for p in (self.weight_ih, self.bias_ih):
                if p is not None:
                    p.uniform_(-bound, bound)

    def project_inputs(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias_ih)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}"


class LinearLeakyCell(_LeakRates, _InputDrivenCell):
    r"""Leaky integrators of a linear drive: no recurrent weights, so the update is linear in ``h``.

    .. math::  h_t = (1 - \alpha) \odot h_{t-1} + \alpha \odot (W x_t + c)

    ``alpha`` in (0, 1] is each unit's inverse time constant: a float shared by all
    units or one value per unit (``torch.logspace(-3, 0, hidden_size)`` spans time
    scales from 1 to 1000 steps). ``learn_alpha=True`` trains it through a sigmoid,
    inside (0, 1). ``W`` is ``weight_ih`` (H, input_size), ``c`` is ``bias_ih``.
    Coefficients: ``A_t = 1 - alpha`` (every step), ``b_t = alpha ⊙ (W x_t + c)``.

    >>> import torch
    >>> from rnnkit.cells.linear import LinearLeakyCell
    >>> cell = LinearLeakyCell(3, 4, alpha=torch.tensor([1.0, 0.5, 0.1, 0.01]))
    >>> A, b = cell.linear_coefficients(torch.randn(2, 7, 3))
    >>> tuple(A.shape), A[0, 0].tolist()
    ((2, 7, 4), [0.0, 0.5, 0.8999999761581421, 0.9900000095367432])
    """

    def __init__(self, input_size: int, hidden_size: int, alpha=0.5, learn_alpha: bool = False,
                 bias: bool = True, *, device=None, dtype=None):
        super().__init__()
        self._make_projection(input_size, hidden_size, 1, bias, device, dtype)
        self._init_leak_rates(type(self).__name__, alpha, hidden_size, learn_alpha, device, dtype)
        self.reset_parameters()

    def step(self, drive_t: Tensor, h: Tensor) -> Tensor:
        return h + self.alpha * (drive_t - h)                   # = (1 - α) h + α (W x + c)

    def linear_coefficients(self, x: Tensor):
        alpha = self.alpha
        bias = None if self.bias_ih is None else alpha * self.bias_ih
        b = F.linear(x, alpha.unsqueeze(-1) * self.weight_ih, bias)   # α ⊙ (W x + c), α folded into W
        return (1 - alpha).expand_as(b), b

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, learn_alpha={self.learn_alpha}"


class MinGRUCell(_InputDrivenCell):
    r"""minGRU (Feng et al. 2024, "Were RNNs All We Needed?"): a GRU whose gate and candidate see only the input.

    .. math::
        z_t &= \sigma(W_z x_t + b_z), \qquad \tilde h_t = W_h x_t + b_h \\
        h_t &= (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t

    Coefficients ``A_t = 1 - z_t``, computed as :math:`\sigma(-(W_z x_t + b_z))` so that a
    saturated gate keeps its small complement, and ``b_t = z_t ⊙ h̃_t``. ``weight_ih``
    stacks ``W_z`` over ``W_h`` (2H, input_size). The candidate is the plain linear map of
    the paper's sequential form (its log-space variant needs ``h̃ > 0``; this scan does not).

    >>> import torch
    >>> from rnnkit.cells.linear import MinGRUCell
    >>> cell = MinGRUCell(3, 5)
    >>> tuple(cell(torch.randn(2, 3), cell.initial_state(2)).shape)
    (2, 5)
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, device=None, dtype=None):
        super().__init__()
        self._make_projection(input_size, hidden_size, 2, bias, device, dtype)
        self.reset_parameters()

    def step(self, projected_t: Tensor, h: Tensor) -> Tensor:
        gate, candidate = projected_t.chunk(2, dim=-1)
        z = torch.sigmoid(gate)
        return h + z * (candidate - h)                          # = (1 - z) h + z h̃

    def linear_coefficients(self, x: Tensor):
        gate, candidate = self.project_inputs(x).chunk(2, dim=-1)   # (B, T, H) each
        return torch.sigmoid(-gate), torch.sigmoid(gate) * candidate


class MinLSTMCell(_InputDrivenCell):
    r"""minLSTM (Feng et al. 2024): forget and input gates of the input alone, normalized to sum to one.

    .. math::
        f_t &= \sigma(W_f x_t + b_f), \quad i_t = \sigma(W_i x_t + b_i), \quad \tilde h_t = W_h x_t + b_h \\
        h_t &= \frac{f_t}{f_t + i_t} \odot h_{t-1} + \frac{i_t}{f_t + i_t} \odot \tilde h_t

    The normalization (the paper's length-independent scaling) makes ``h_t`` a convex
    combination of ``h_{t-1}`` and ``h̃_t``, so the state stays within the range of the
    candidates whatever the sequence length. The normalized forget gate is computed as
    :math:`f_t/(f_t+i_t) = \sigma(\log f_t - \log i_t)` with
    :math:`\log\sigma(u) = -\mathrm{softplus}(-u)`, which never divides 0 by 0.
    Coefficients ``A_t = f_t/(f_t+i_t)``, ``b_t = i_t/(f_t+i_t) ⊙ h̃_t``. ``weight_ih``
    stacks ``W_f``, ``W_i``, ``W_h`` (3H, input_size).

    >>> import torch
    >>> from rnnkit.cells.linear import MinLSTMCell
    >>> cell = MinLSTMCell(3, 5)
    >>> A, b = cell.linear_coefficients(torch.randn(2, 7, 3))
    >>> bool(((A > 0) & (A < 1)).all())
    True
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, device=None, dtype=None):
        super().__init__()
        self._make_projection(input_size, hidden_size, 3, bias, device, dtype)
        self.reset_parameters()

    @staticmethod
    def _keep(forget: Tensor, input_: Tensor) -> Tensor:
        """``f / (f + i)`` from the gates' pre-activations."""
        return torch.sigmoid(F.softplus(-input_) - F.softplus(-forget))   # σ(log f - log i)

    def step(self, projected_t: Tensor, h: Tensor) -> Tensor:
        forget, input_, candidate = projected_t.chunk(3, dim=-1)
        keep = self._keep(forget, input_)
        return keep * h + (1 - keep) * candidate

    def linear_coefficients(self, x: Tensor):
        forget, input_, candidate = self.project_inputs(x).chunk(3, dim=-1)   # (B, T, H) each
        keep = self._keep(forget, input_)
        return keep, self._keep(input_, forget) * candidate                   # i/(f+i) = σ(log i - log f)


class LTICell(_InputDrivenCell):
    r"""A linear time-invariant system with a full transition matrix.

    .. math::  h_t = A h_{t-1} + B x_t + c

    ``A`` is ``weight_hh`` (H, H), ``B`` is ``weight_ih`` (H, input_size), ``c`` is
    ``bias_ih`` (with ``bias=True``). ``A`` starts uniform in ``±1/√H`` and is scaled
    down, if needed, to a spectral radius of ``spectral_radius`` (default 0.9) so that
    the state stays bounded. Coefficients: ``A`` for every step, as a (1, T, H, H)
    view shared by the batch and by time, and ``b_t = B x_t + c``. The scan composes a
    shared ``A`` within one chunk only, :math:`O(T H^2)` work like the loop; with
    ``lengths`` the engine needs ``A`` per sequence and step (the identity past each
    end), :math:`O(T H^3)`.

    >>> import torch
    >>> from rnnkit.cells.linear import LTICell
    >>> cell = LTICell(2, 3)
    >>> A, b = cell.linear_coefficients(torch.randn(4, 6, 2))
    >>> tuple(A.shape), tuple(b.shape)
    ((1, 6, 3, 3), (4, 6, 3))
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, spectral_radius: float = 0.9, *,
                 device=None, dtype=None):
        super().__init__()
        spectral_radius = check_positive(type(self).__name__, "spectral_radius", spectral_radius)
        self._make_projection(input_size, hidden_size, 1, bias, device, dtype)
        self.spectral_radius = spectral_radius
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            self.weight_hh.uniform_(-bound, bound)
            radius = radius_of(self.weight_hh)
            if radius > self.spectral_radius:
                self.weight_hh.mul_(self.spectral_radius / radius)

    def step(self, drive_t: Tensor, h: Tensor) -> Tensor:
        return F.linear(h, self.weight_hh) + drive_t            # A h + (B x + c)

    def linear_coefficients(self, x: Tensor):
        steps, size = x.shape[1], self.hidden_size
        return self.weight_hh.expand(1, steps, size, size), self.project_inputs(x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, spectral_radius={self.spectral_radius}"
