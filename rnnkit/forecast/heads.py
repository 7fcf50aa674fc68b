"""What the forecaster's network says about each future step: a likelihood, its loss and its quantiles.

A head turns ``n`` raw numbers per step into a predictive distribution of ``y`` and offers:

- ``loss(raw, y, scale, known)``: the mean loss over the known steps, for training;
- ``quantiles(raw, scale, levels, generator)``: the distribution's quantiles at ``levels``, in the
  series' own units;
- ``sample(raw, scale, generator)``: one draw per step (the autoregressive decoder feeds them back).

The network reads values divided by a scale :math:`s` (the mean absolute value of its window); the
heads for real values model :math:`y/s` and multiply back, the count head models the counts themselves
with a mean proportional to :math:`s`:

- ``quantile``: :data:`QUANTILES` directly, learnt by the pinball loss; the first plus a running sum of
  positive steps, so they never cross (a draw interpolates between them);
- ``normal``: a mean and a positive standard deviation, the Gaussian negative log-likelihood;
- ``studentt``: a mean, a scale and degrees of freedom above 2 (heavy tails with a finite variance);
- ``negbin``: the negative binomial of the counts, a mean :math:`s\\,\\mathrm{softplus}(\\cdot)` and a
  dispersion (the variance is :math:`\\mu + \\alpha\\mu^2`).

Quantiles of the Student-t and negative binomial heads are read off 2,000 draws from a seeded
generator, so the same model gives the same intervals every time.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.distributions import NegativeBinomial, Normal, StudentT

__all__ = ["QUANTILES", "LIKELIHOODS", "head", "empirical_quantiles"]

# the quantiles the quantile head learns: the median and the bounds of the 50, 80, 90 and 95 % intervals
QUANTILES = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975)
LIKELIHOODS = ("quantile", "normal", "studentt", "negbin")
DRAWS = 2000


def _masked_mean(loss: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    return (loss * known).sum() / known.sum().clamp_min(1.0)


class QuantileHead:
    name = "quantile"

    def __init__(self, quantiles=QUANTILES):
        self.levels = tuple(quantiles)
        self.n = len(self.levels)

    def _values(self, raw):
        steps = nn.functional.softplus(raw[..., 1:])
        return torch.cat([raw[..., :1], raw[..., :1] + torch.cumsum(steps, -1)], -1)

    def loss(self, raw, y, scale, known):
        u = (y / scale).unsqueeze(-1) - self._values(raw)
        levels = torch.tensor(self.levels, dtype=raw.dtype)
        return _masked_mean(torch.maximum(levels * u, (levels - 1) * u).mean(-1), known)

    def quantiles(self, raw, scale, levels, generator=None):
        values, known = self._values(raw) * scale.unsqueeze(-1), torch.tensor(self.levels, dtype=raw.dtype)
        wanted = torch.tensor(levels, dtype=raw.dtype)
        if all(q in self.levels for q in levels):
            return values[..., [self.levels.index(q) for q in levels]]
        return _interpolate(values, known, wanted)

    def sample(self, raw, scale, generator=None):
        u = torch.rand(raw.shape[:-1], generator=generator, dtype=raw.dtype)
        u = u.clamp(self.levels[0], self.levels[-1])
        values = self._values(raw) * scale.unsqueeze(-1)
        return _interpolate(values, torch.tensor(self.levels, dtype=raw.dtype), u.unsqueeze(-1)).squeeze(-1)


def empirical_quantiles(draws: torch.Tensor, levels, dim: int) -> torch.Tensor:
    """The quantiles at ``levels`` of ``draws`` along ``dim`` (linear between order statistics, as
    ``torch.quantile``, which refuses large inputs), on a new last axis."""
    ordered = draws.sort(dim).values.movedim(dim, -1)
    position = torch.tensor(levels, dtype=torch.float64) * (ordered.shape[-1] - 1)
    lo = position.floor().long()
    hi = (lo + 1).clamp_max(ordered.shape[-1] - 1)
    weight = (position - lo).to(ordered.dtype)
    return ordered[..., lo] * (1 - weight) + ordered[..., hi] * weight


def _interpolate(values, known, wanted):
    """Piecewise-linear quantile function through ``(known, values)`` at ``wanted`` (broadcast on the last
    axis; ends held flat)."""
    wanted = wanted.expand(*values.shape[:-1], wanted.shape[-1]).contiguous()
    i = torch.searchsorted(known, wanted.clamp(known[0], known[-1])).clamp(1, len(known) - 1)
    lo, hi = known[i - 1], known[i]
    weight = ((wanted.clamp(known[0], known[-1]) - lo) / (hi - lo))
    return torch.gather(values, -1, i - 1) * (1 - weight) + torch.gather(values, -1, i) * weight


class _Parametric:
    """A head whose distribution torch knows: quantiles analytic where torch has them, else from draws."""

    def quantiles(self, raw, scale, levels, generator=None):
        dist = self.distribution(raw, scale)
        wanted = torch.tensor(levels, dtype=raw.dtype)
        if isinstance(dist, Normal):
            return dist.icdf(wanted.expand(*raw.shape[:-1], len(levels)).movedim(-1, 0)).movedim(0, -1)
        return empirical_quantiles(self._draws(dist, generator), levels, dim=0)

    def sample(self, raw, scale, generator=None):
        return self._draws(self.distribution(raw, scale), generator, 1)[0]

    @staticmethod
    def _draws(dist, generator, count=DRAWS):
        # torch's samplers take no generator: draw under a fork of the global one, seeded from ``generator``
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator)) if generator is not None else None
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            return dist.sample((count,)).to(torch.float64)

    def loss(self, raw, y, scale, known):
        return _masked_mean(-self.distribution(raw, scale).log_prob(self._target(y, known)), known)

    def _target(self, y, known):
        return y


class NormalHead(_Parametric):
    name, n = "normal", 2

    def distribution(self, raw, scale):
        return Normal(raw[..., 0] * scale, (nn.functional.softplus(raw[..., 1]) + 1e-3) * scale)


class StudentTHead(_Parametric):
    name, n = "studentt", 3

    def distribution(self, raw, scale):
        return StudentT(2.0 + nn.functional.softplus(raw[..., 2]), raw[..., 0] * scale,
                        (nn.functional.softplus(raw[..., 1]) + 1e-3) * scale)


class NegBinHead(_Parametric):
    name, n = "negbin", 2

    def distribution(self, raw, scale):
        mean = nn.functional.softplus(raw[..., 0]) * scale + 1e-6
        count = 1.0 / (nn.functional.softplus(raw[..., 1]) + 1e-4)             # 1 / dispersion
        return NegativeBinomial(total_count=count, logits=torch.log(mean) - torch.log(count))

    def _target(self, y, known):
        return torch.where(known > 0, y, torch.zeros_like(y)).round()


def head(likelihood: str, quantiles=QUANTILES):
    """The head of ``likelihood`` (one of :data:`LIKELIHOODS`)."""
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}, got {likelihood!r}")
    if likelihood == "quantile":
        return QuantileHead(quantiles)
    return {"normal": NormalHead, "studentt": StudentTHead, "negbin": NegBinHead}[likelihood]()
