r"""Readouts: generalized linear models from a hidden state to a distribution over targets.

A readout is the output map :math:`f_o` of the state machine, made probabilistic.
From the hidden state :math:`h` (..., hidden_size) it forms the linear predictor

.. math::  \eta = W h + b

and passes it through an inverse link :math:`g^{-1}` to the mean of an
exponential-family distribution :math:`p(y \mid h)`:

=============================  =====================  ===================================
readout                        mean :math:`g^{-1}`      target ``y``
=============================  =====================  ===================================
:class:`CategoricalReadout`    softmax                class ids, integer (...,)
:class:`GaussianReadout`       identity               real vectors (..., output_size)
:class:`BernoulliReadout`      sigmoid                0/1 vectors (..., output_size)
:class:`PoissonReadout`        exp                    counts (..., output_size)
=============================  =====================  ===================================

The categorical, Bernoulli and Poisson links are canonical, so
:math:`\partial \log p(y \mid h) / \partial \eta = y - \mathbb{E}[y]`.

Every readout has ``forward(h) -> eta``, ``log_prob(y, h)``, ``nll(y, h)``,
``mean(h)`` and ``sample(h, generator=None)``; :func:`sequence_nll` sums the
per-step negative log-likelihood over padded batches of sequences.

>>> import torch
>>> readout = CategoricalReadout(hidden_size=8, num_classes=5)
>>> h = torch.randn(2, 3, 8)                          # (batch, time, hidden_size)
>>> y = torch.randint(0, 5, (2, 3))
>>> tuple(readout.log_prob(y, h).shape), tuple(readout.mean(h).shape)
((2, 3), (2, 3, 5))
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._arguments import check_number, check_positive
from ._checks import check_features, check_lengths
from .cells.base import check_sizes

__all__ = ["Readout", "CategoricalReadout", "GaussianReadout", "BernoulliReadout",
           "PoissonReadout", "READOUTS", "make_readout", "sequence_nll"]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class Readout(nn.Module):
    r"""Base class of GLM readouts: :math:`\eta = W h + b`, then a link.

    Parameters ``weight`` (output_size, hidden_size) and ``bias`` (output_size,)
    (``None`` with ``bias=False``), initialised :math:`U(-1/\sqrt{H}, 1/\sqrt{H})`.

    Subclasses implement ``log_prob``, ``mean`` and ``sample`` and check targets
    in ``_check_target``. ``forward(h)`` returns :math:`\eta` (..., output_size).
    """

    hidden_size: int
    output_size: int

    def __init__(self, hidden_size: int, output_size: int, bias: bool = True, *, device=None, dtype=None):
        super().__init__()
        check_sizes(type(self).__name__, hidden_size=hidden_size, output_size=output_size)
        self.hidden_size, self.output_size = hidden_size, output_size
        kw = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(output_size, hidden_size, **kw))
        self.bias = nn.Parameter(torch.empty(output_size, **kw)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    # ----- the GLM -----------------------------------------------------------
    def forward(self, h: Tensor) -> Tensor:
        r"""The linear predictor :math:`\eta = W h + b`: (..., hidden_size) -> (..., output_size)."""
        return F.linear(self._check_hidden(h), self.weight, self.bias)

    def log_prob(self, y: Tensor, h: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} does not define log_prob")

    def mean(self, h: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} does not define mean")

    def sample(self, h: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError(f"{type(self).__name__} does not define sample")

    def nll(self, y: Tensor, h: Tensor) -> Tensor:
        r"""Negative log-likelihood :math:`-\log p(y \mid h)`, shape ``h.shape[:-1]``."""
        return -self.log_prob(y, h)

    def target_shape(self, h_shape) -> tuple:
        """The shape a target must have for hidden states of shape ``h_shape``."""
        return tuple(h_shape[:-1]) + (self.output_size,)

    # ----- checks ------------------------------------------------------------
    def _check_hidden(self, h) -> Tensor:
        return check_features(type(self).__name__, "hidden state", h, self.hidden_size, self.weight, "readout")

    def _check_target_tensor(self, y, h: Tensor) -> Tensor:
        owner = type(self).__name__
        if not isinstance(y, Tensor):
            raise TypeError(f"{owner}: expected the target to be a torch.Tensor, got {type(y).__name__}")
        expected = self.target_shape(h.shape)
        if tuple(y.shape) != expected:
            raise ValueError(f"{owner}: expected target of shape {expected} for hidden state of shape "
                             f"{tuple(h.shape)}, got {tuple(y.shape)}")
        if y.device != h.device:
            raise ValueError(f"{owner}: target is on {y.device} but the hidden state is on {h.device}")
        return y

    def _real_target(self, y: Tensor, h: Tensor, what: str) -> Tensor:
        """A float target in h's dtype; integer and bool targets are converted exactly."""
        if y.is_complex():
            raise TypeError(f"{type(self).__name__}: {what} must be real, got dtype {y.dtype}")
        if y.is_floating_point() and y.dtype != h.dtype:
            raise TypeError(f"{type(self).__name__}: target dtype {y.dtype} does not match the hidden "
                            f"state's dtype {h.dtype}; convert it with .to({h.dtype})")
        return y.to(h.dtype)

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, output_size={self.output_size}, bias={self.bias is not None}"


class CategoricalReadout(Readout):
    r"""Softmax readout over ``num_classes`` classes.

    .. math::  \eta = W h + b, \qquad p(y = k \mid h) = \mathrm{softmax}(\eta)_k

    Shapes: ``h`` (..., hidden_size); target ``y`` integer class ids (...,) in
    ``[0, num_classes)``; ``log_prob`` (...,); ``mean``/``probs`` and ``logits``
    (..., num_classes); ``sample`` int64 (...,).

    >>> import torch
    >>> readout = CategoricalReadout(4, 3)
    >>> h = torch.randn(5, 4)
    >>> readout.log_prob(torch.tensor([0, 2, 1, 1, 0]), h).shape
    torch.Size([5])
    >>> readout.sample(h, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([5])
    """

    def __init__(self, hidden_size: int, num_classes: int, bias: bool = True, *, device=None, dtype=None):
        check_sizes(type(self).__name__, hidden_size=hidden_size, num_classes=num_classes)
        super().__init__(hidden_size, num_classes, bias, device=device, dtype=dtype)

    @property
    def num_classes(self) -> int:
        return self.output_size

    def target_shape(self, h_shape) -> tuple:
        return tuple(h_shape[:-1])

    def logits(self, h: Tensor) -> Tensor:
        """Unnormalised log-probabilities :math:`\\eta` (..., num_classes)."""
        return self(h)

    def log_prob(self, y: Tensor, h: Tensor) -> Tensor:
        log_p = F.log_softmax(self(h), dim=-1)
        y = self._check_target(y, h)
        return log_p.gather(-1, y.unsqueeze(-1)).squeeze(-1)

    def mean(self, h: Tensor) -> Tensor:
        """Class probabilities :math:`\\mathrm{softmax}(\\eta)` — the mean of the one-hot target."""
        return torch.softmax(self(h), dim=-1)

    probs = mean

    def sample(self, h: Tensor, temperature: float = 1.0,
               generator: Optional[torch.Generator] = None) -> Tensor:
        """Draw classes from :math:`\\mathrm{softmax}(\\eta / \\tau)`; ``temperature=0`` takes the argmax."""
        owner = type(self).__name__
        check_number(owner, "temperature", temperature, low=0.0, high_closed=False, what="a finite number >= 0",
                     hint="0 means greedy argmax")
        logits = self(h)
        if temperature == 0:
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits / temperature, dim=-1)
        flat = probs.reshape(-1, self.num_classes)
        if flat.shape[0] == 0:
            return torch.zeros(probs.shape[:-1], dtype=torch.int64, device=probs.device)
        draws = torch.multinomial(flat, 1, replacement=True, generator=generator)
        return draws.reshape(probs.shape[:-1])

    def _check_target(self, y, h: Tensor) -> Tensor:
        owner = type(self).__name__
        y = self._check_target_tensor(y, h)
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise TypeError(f"{owner}: expected integer class ids as the target, got dtype {y.dtype}; "
                            f"convert it with .long()")
        if y.numel():
            low, high = int(y.min()), int(y.max())
            if high >= self.num_classes:
                raise ValueError(f"{owner}: target contains class {high} but num_classes is "
                                 f"{self.num_classes}")
            if low < 0:
                raise ValueError(f"{owner}: target contains class {low}; classes run from 0 to "
                                 f"num_classes - 1 = {self.num_classes - 1} (mask padding with "
                                 f"sequence_nll's lengths instead of a negative id)")
        return y.long()

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, num_classes={self.num_classes}, bias={self.bias is not None}"


_STD_MODES = ("learned", "predicted")


class GaussianReadout(Readout):
    r"""Gaussian readout with identity link and diagonal covariance.

    .. math::  \mu = W h + b, \qquad y \sim \mathcal{N}(\mu, \mathrm{diag}(\sigma^2)),
       \qquad \log p(y \mid h) = \sum_j -\tfrac12 \big(\tfrac{y_j - \mu_j}{\sigma_j}\big)^2
       - \log \sigma_j - \tfrac12 \log 2\pi

    ``std`` chooses :math:`\sigma`:

    - ``"learned"``: one learned :math:`\log \sigma_j` per output (parameter ``log_std``, starts at 0);
    - ``"predicted"``: heteroscedastic, :math:`\log \sigma = W_\sigma h + b_\sigma`
      (parameters ``std_weight``, ``std_bias``);
    - a positive float: fixed :math:`\sigma` for every output (buffer ``log_std``).

    Shapes: ``h`` (..., hidden_size); ``y``, ``mean``, ``std``, ``sample``
    (..., output_size); ``log_prob`` (...,).

    >>> import torch
    >>> readout = GaussianReadout(4, 2, std="predicted")
    >>> h = torch.randn(3, 4)
    >>> readout.log_prob(torch.randn(3, 2), h).shape, readout.std(h).shape
    (torch.Size([3]), torch.Size([3, 2]))
    """

    def __init__(self, hidden_size: int, output_size: int, std: Union[str, float] = "learned",
                 bias: bool = True, *, device=None, dtype=None):
        owner = type(self).__name__
        if isinstance(std, str):
            if std not in _STD_MODES:
                raise ValueError(f"{owner}: std must be 'learned', 'predicted' or a positive float, "
                                 f"got {std!r}")
        elif isinstance(std, bool) or not isinstance(std, Real):
            raise TypeError(f"{owner}: std must be 'learned', 'predicted' or a positive float, "
                            f"got {type(std).__name__}")
        else:
            check_positive(owner, "std", std)
        super().__init__(hidden_size, output_size, bias, device=device, dtype=dtype)
        self.std_mode = std if isinstance(std, str) else "fixed"
        kw = {"device": device, "dtype": self.weight.dtype}
        if self.std_mode == "learned":
            self.log_std = nn.Parameter(torch.zeros(output_size, **kw))
        elif self.std_mode == "predicted":
            self.std_weight = nn.Parameter(torch.empty(output_size, hidden_size, **kw))
            self.std_bias = nn.Parameter(torch.zeros(output_size, **kw))
            bound = 1.0 / math.sqrt(hidden_size)
            with torch.no_grad():
                self.std_weight.uniform_(-bound, bound)
        else:
            self.register_buffer("log_std", torch.full((output_size,), math.log(std), **kw))

    def log_scale(self, h: Tensor) -> Tensor:
        r""":math:`\log \sigma`, broadcast to (..., output_size)."""
        h = self._check_hidden(h)
        if self.std_mode == "predicted":
            return F.linear(h, self.std_weight, self.std_bias)
        return self.log_std.expand(*h.shape[:-1], self.output_size)

    def std(self, h: Tensor) -> Tensor:
        r""":math:`\sigma` (..., output_size)."""
        return self.log_scale(h).exp()

    def log_prob(self, y: Tensor, h: Tensor) -> Tensor:
        mu, log_sigma = self(h), self.log_scale(h)
        y = self._check_target(y, h)
        z = (y - mu) * torch.exp(-log_sigma)
        return (-0.5 * z * z - log_sigma - _LOG_SQRT_2PI).sum(-1)

    def mean(self, h: Tensor) -> Tensor:
        """:math:`\\mu = W h + b` (..., output_size)."""
        return self(h)

    def sample(self, h: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        mu, sigma = self(h), self.std(h)
        noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        return mu + sigma * noise

    def _check_target(self, y, h: Tensor) -> Tensor:
        y = self._check_target_tensor(y, h)
        if not y.is_floating_point():
            raise TypeError(f"{type(self).__name__}: expected a floating-point target, got dtype "
                            f"{y.dtype}; convert it with .to({h.dtype})")
        return self._real_target(y, h, "the target")

    def extra_repr(self) -> str:
        std = repr(self.std_mode) if self.std_mode != "fixed" else f"{math.exp(float(self.log_std[0])):g}"
        return f"{super().extra_repr()}, std={std}"


class BernoulliReadout(Readout):
    r"""Independent Bernoulli outputs with the logistic (canonical) link.

    .. math::  \eta = W h + b, \qquad p_j = \sigma(\eta_j), \qquad
       \log p(y \mid h) = \sum_j y_j \eta_j - \log(1 + e^{\eta_j})

    Shapes: ``h`` (..., hidden_size); ``y`` (..., output_size) with entries in
    {0, 1} (float, integer or bool); ``mean``, ``sample`` (..., output_size);
    ``log_prob`` (...,).

    >>> import torch
    >>> readout = BernoulliReadout(4, 3)
    >>> h = torch.randn(2, 4)
    >>> readout.log_prob(torch.tensor([[0., 1., 1.], [1., 0., 0.]]), h).shape
    torch.Size([2])
    """

    def log_prob(self, y: Tensor, h: Tensor) -> Tensor:
        logits = self(h)
        y = self._check_target(y, h)
        return -F.binary_cross_entropy_with_logits(logits, y, reduction="none").sum(-1)

    def logits(self, h: Tensor) -> Tensor:
        return self(h)

    def mean(self, h: Tensor) -> Tensor:
        """Probabilities :math:`\\sigma(\\eta)` (..., output_size)."""
        return torch.sigmoid(self(h))

    probs = mean

    def sample(self, h: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        return torch.bernoulli(self.mean(h), generator=generator)

    def _check_target(self, y, h: Tensor) -> Tensor:
        y = self._real_target(self._check_target_tensor(y, h), h, "the target")
        bad = (y != 0) & (y != 1)
        if bool(bad.any()):
            value = y[bad][0].item()
            raise ValueError(f"{type(self).__name__}: targets must be 0 or 1, got {value}; "
                             f"threshold or binarise the targets first")
        return y


class PoissonReadout(Readout):
    r"""Independent Poisson counts with the log (canonical) link.

    .. math::  \eta = W h + b, \qquad \lambda = e^{\eta}, \qquad
       \log p(y \mid h) = \sum_j y_j \eta_j - e^{\eta_j} - \log \Gamma(y_j + 1)

    Shapes: ``h`` (..., hidden_size); ``y`` (..., output_size) non-negative whole
    counts (float or integer); ``mean`` (the rate :math:`\lambda`), ``sample``
    (..., output_size); ``log_prob`` (...,).

    >>> import torch
    >>> readout = PoissonReadout(4, 2)
    >>> h = torch.randn(3, 4)
    >>> readout.log_prob(torch.tensor([[0, 3], [1, 0], [2, 2]]), h).shape
    torch.Size([3])
    """

    def log_prob(self, y: Tensor, h: Tensor) -> Tensor:
        eta = self(h)
        y = self._check_target(y, h)
        return (y * eta - eta.exp() - torch.lgamma(y + 1)).sum(-1)

    def mean(self, h: Tensor) -> Tensor:
        """The rate :math:`\\lambda = e^{\\eta}` (..., output_size)."""
        return self(h).exp()

    rate = mean

    def sample(self, h: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        return torch.poisson(self.mean(h), generator=generator)

    def _check_target(self, y, h: Tensor) -> Tensor:
        owner = type(self).__name__
        y = self._real_target(self._check_target_tensor(y, h), h, "the target")
        if y.numel():
            if not bool(torch.isfinite(y).all()):
                raise ValueError(f"{owner}: targets must be finite counts, got {y[~torch.isfinite(y)][0].item()}")
            low = float(y.min())
            if low < 0:
                raise ValueError(f"{owner}: targets must be non-negative counts, got {low:g}")
            fractional = y != torch.floor(y)
            if bool(fractional.any()):
                raise ValueError(f"{owner}: targets must be whole counts, got {y[fractional][0].item():g}; "
                                 f"round them or use GaussianReadout for real-valued targets")
        return y


READOUTS = {"categorical": CategoricalReadout, "gaussian": GaussianReadout,
            "bernoulli": BernoulliReadout, "poisson": PoissonReadout}


def make_readout(family: str, hidden_size: int, output_size: int, **kw) -> Readout:
    """Build a readout by family name: one of ``"categorical"``, ``"gaussian"``, ``"bernoulli"``, ``"poisson"``.

    For ``"categorical"``, ``output_size`` is the number of classes. Extra keywords
    go to the readout (``bias``, ``dtype``, ``device``; ``std`` for ``"gaussian"``).

    >>> make_readout("poisson", 16, 4)
    PoissonReadout(hidden_size=16, output_size=4, bias=True)
    """
    if not isinstance(family, str):
        raise TypeError(f"make_readout: family must be a string, one of {sorted(READOUTS)}, "
                        f"got {type(family).__name__}")
    if family not in READOUTS:
        raise ValueError(f"make_readout: unknown family {family!r}; choose one of {sorted(READOUTS)}")
    return READOUTS[family](hidden_size, output_size, **kw)


_REDUCTIONS = ("sum", "mean", "none")


def sequence_nll(readout: Readout, y: Tensor, h: Tensor, lengths=None, reduction: str = "sum") -> Tensor:
    r"""Negative log-likelihood of whole sequences, summed over their valid steps.

    .. math::  \mathcal{L} = -\sum_{b} \sum_{t < \ell_b} \log p(y_{b,t} \mid h_{b,t})

    Shapes: ``h`` (B, T, hidden_size); ``y`` (B, T, ...) — what ``readout.log_prob``
    takes per step; ``lengths`` (B,) ints in ``[1, T]`` or None (every step valid).
    Steps ``t >= lengths[b]`` are padding: their ``y`` and ``h`` are never read
    (they may hold any value — out-of-range classes, NaN — and get zero gradient).

    ``reduction``: ``"sum"`` the total (scalar), ``"mean"`` the total divided by the
    number of valid steps (scalar), ``"none"`` per step (B, T) with zeros at padding.

    >>> import torch
    >>> readout = CategoricalReadout(8, 5)
    >>> h, y = torch.randn(2, 4, 8), torch.randint(0, 5, (2, 4))
    >>> loss = sequence_nll(readout, y, h, lengths=torch.tensor([4, 2]), reduction="mean")
    >>> loss.shape
    torch.Size([])
    """
    owner = "sequence_nll"
    if not isinstance(readout, Readout):
        raise TypeError(f"{owner}: expected a Readout (e.g. CategoricalReadout), got {type(readout).__name__}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{owner}: unknown reduction {reduction!r}; choose one of {list(_REDUCTIONS)}")
    for name, value in (("h", h), ("y", y)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{owner}: expected {name} to be a torch.Tensor, got {type(value).__name__}")
    if h.dim() != 3:
        raise ValueError(f"{owner}: expected hidden states h of shape (batch, T, hidden_size), got shape "
                         f"{tuple(h.shape)}")
    batch, steps = h.shape[0], h.shape[1]
    if y.dim() < 2 or tuple(y.shape[:2]) != (batch, steps):
        raise ValueError(f"{owner}: expected targets y of shape ({batch}, {steps}, ...) to match h's "
                         f"(batch, T), got {tuple(y.shape)}")
    lengths = check_lengths(owner, lengths, batch, steps)
    if lengths is None:
        per_step = -readout.log_prob(y, h)                               # (B, T)
        valid = batch * steps
    else:
        lengths = lengths.to(h.device)
        alive = torch.arange(steps, device=h.device) < lengths.unsqueeze(1)   # (B, T)
        # Padding is replaced before the readout sees it, so its values can neither fail a
        # target check nor leak NaN/inf into the loss or the gradients.
        h = torch.where(alive.unsqueeze(-1), h, torch.zeros((), dtype=h.dtype, device=h.device))
        y = torch.where(alive.view(batch, steps, *([1] * (y.dim() - 2))), y,
                        torch.zeros((), dtype=y.dtype, device=y.device))
        per_step = torch.where(alive, -readout.log_prob(y, h),
                               torch.zeros((), dtype=h.dtype, device=h.device))
        valid = int(lengths.sum())
    if reduction == "none":
        return per_step
    total = per_step.sum()
    return total if reduction == "sum" else total / valid
