"""The HMM modules: :class:`CategoricalHMM` and :class:`GaussianHMM`, their parameters, EM and gradient
fitting, over the pure functions of :mod:`.inference` and the modules beside it."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..._arguments import check_int
from ...cells.hmm import GaussianHMMFilterCell, HMMFilterCell
from ...layers import Recurrent
from .checks import _check_observations, _check_sample_sizes, _normalize_chain
from .emissions import _Emissions
from .fast import _fast_log_likelihood, _fast_passes
from .inference import _categorical, _filter, _smoother, _viterbi
from .results import FilterResult, HMMSample, SmootherResult, ViterbiResult
from .sampling import _sample_states, hmm_sample
from .scans import _parallel_filter, _parallel_log_likelihood

__all__ = ["CategoricalHMM", "GaussianHMM"]


def _check_probabilities(owner: str, name: str, p, shape: tuple, dtype, device) -> Tensor:
    """A non-negative array of ``shape`` whose last axis sums to one; returns it as a tensor."""
    what = "a probability vector" if len(shape) == 1 else "row-stochastic (each row a probability vector)"
    try:
        p = torch.as_tensor(p, dtype=dtype, device=device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{owner}: {name} must be a tensor or array of shape {shape}, "
                         f"got {type(p).__name__} ({err})") from None
    if tuple(p.shape) != shape:
        raise ValueError(f"{owner}: {name} must have shape {shape}, got {tuple(p.shape)}")
    if not torch.isfinite(p).all() or (p < 0).any():
        raise ValueError(f"{owner}: {name} must be {what} with finite non-negative entries, "
                         f"got a negative or non-finite entry")
    sums = p.sum(-1).reshape(-1)
    bad = ((sums - 1).abs() > 1e-6).nonzero()
    if len(bad):
        i = int(bad[0])
        where = "" if len(shape) == 1 else f"row {i} "
        raise ValueError(f"{owner}: {name} must be {what}; its {where}sums to {float(sums[i]):.6g}, "
                         f"not 1 (divide by the sum to normalize)")
    return p


def _check_iterations(owner: str, name: str, value) -> None:
    check_int(owner, name, value, 0)


class _HMM(nn.Module):
    """What the categorical and Gaussian HMMs share: inference, EM's chain updates, gradient fitting.

    A subclass holds its parameters in ``self.cell`` (a filter cell) and provides
    ``_prepare(owner, observations, lengths) -> (log π, log P, emissions, observations)`` (the
    emissions as an ``_Emissions``, which also carries the padding mask),
    ``_emission_update(posterior, observations)`` (EM's M-step for the emissions) and
    ``_cell_inputs(observations)`` (what the filter cell reads).
    """

    cell: nn.Module

    def __init__(self, cell: nn.Module):
        super().__init__()
        self.cell = cell
        self.recurrent = Recurrent(cell, engine="loop", name=type(self).__name__)

    @property
    def num_states(self) -> int:
        return self.cell.num_states

    # ----- inference -----------------------------------------------------------
    def log_likelihood(self, observations: Tensor, lengths=None) -> Tensor:
        """``log p(x_{1:L})`` (B,) by running the filter cell through :class:`rnnkit.Recurrent`
        (the RNN form; differentiable): the final cumulative log normalizer."""
        owner = f"{type(self).__name__}.log_likelihood"
        _, _, em, obs = self._prepare(owner, observations, lengths, need_emissions=False)
        mask = em.mask
        _, (_, loglik) = self.recurrent(self._cell_inputs(obs), lengths=mask.sum(1).cpu())
        return loglik.squeeze(-1)

    @torch.no_grad()
    def score(self, observations: Tensor, lengths=None) -> float:
        """Total log-likelihood of all sequences by the fast recursion (no gradient), as hmmlearn's ``score``."""
        return float(_fast_log_likelihood(*self._prepare(f"{type(self).__name__}.score", observations,
                                                         lengths)[:3]).sum())

    def filter(self, observations: Tensor, lengths=None) -> FilterResult:
        return _filter(*self._prepare(f"{type(self).__name__}.filter", observations, lengths)[:3])

    def smoother(self, observations: Tensor, lengths=None) -> SmootherResult:
        return _smoother(*self._prepare(f"{type(self).__name__}.smoother", observations, lengths)[:3])

    def viterbi(self, observations: Tensor, lengths=None) -> ViterbiResult:
        return _viterbi(*self._prepare(f"{type(self).__name__}.viterbi", observations, lengths)[:3])

    def parallel_log_likelihood(self, observations: Tensor, lengths=None) -> Tensor:
        return _parallel_log_likelihood(
            *self._prepare(f"{type(self).__name__}.parallel_log_likelihood", observations, lengths)[:3])

    def parallel_filter(self, observations: Tensor, lengths=None) -> FilterResult:
        return _parallel_filter(*self._prepare(f"{type(self).__name__}.parallel_filter", observations, lengths)[:3])

    # ----- fitting ---------------------------------------------------------------
    @torch.no_grad()
    def fit_em(self, observations: Tensor, lengths=None, iterations: int = 10,
               tolerance: float | None = None) -> list[float]:
        """Baum–Welch. Each iteration: E-step (the fast forward–backward) then the M-step
        ``π ∝ Σ_b γ_1``, ``P_ij ∝ Σ ξ_t(i, j)`` and the emissions' own update.

        Returns the total log-likelihoods (summed over the batch) before the first
        update and after each one: ``iterations + 1`` numbers, unless the gain of an
        iteration falls below ``tolerance`` (then it stops early). EM guarantees they
        never decrease. A state no sequence visits keeps its old rows rather than
        becoming 0/0."""
        owner = f"{type(self).__name__}.fit_em"
        _check_iterations(owner, "iterations", iterations)
        if tolerance is not None and not tolerance >= 0:
            raise ValueError(f"{owner}: tolerance must be None or >= 0, got {tolerance}")
        history: list[float] = []
        for it in range(iterations + 1):
            log_pi, log_P, em, obs = self._prepare(owner, observations, lengths)
            r = _fast_passes(log_pi, log_P, em, backward=True)
            history.append(float(r.log_likelihood.sum()))
            if it == iterations or (tolerance is not None and len(history) > 1
                                    and history[-1] - history[-2] < tolerance):
                break
            tiny = torch.finfo(r.posterior.dtype).tiny
            start = r.posterior[:, 0].sum(0)
            rows = r.transitions.sum(-1, keepdim=True)
            P_new = torch.where(rows > 0, r.transitions / rows.clamp_min(tiny), log_P.exp())
            self.cell.log_initial.copy_((start / start.sum()).clamp_min(tiny).log())
            self.cell.log_transition.copy_(P_new.clamp_min(tiny).log())
            self._emission_update(r.posterior, obs)
            del r                           # its buffers go back to the pool for the next E-step
        return history

    def fit_gradient(self, observations: Tensor, lengths=None, epochs: int = 10, lr: float = 0.05,
                     batch_size: int | None = None, optimizer: str = "adam",
                     generator: torch.Generator | None = None) -> list[float]:
        """Maximise the log-likelihood by gradient ascent through the RNN form (autograd).

        Each epoch shuffles the sequences into minibatches of ``batch_size`` (all of
        them by default) and takes one ``optimizer`` step (``"adam"`` or ``"sgd"``) per
        minibatch on the mean negative log-likelihood per observed step. Returns the
        total log-likelihood before training and after every epoch (``epochs + 1``
        numbers), comparable with :meth:`fit_em`'s history."""
        owner = f"{type(self).__name__}.fit_gradient"
        _check_iterations(owner, "epochs", epochs)
        if not lr > 0:
            raise ValueError(f"{owner}: lr must be > 0, got {lr}")
        optimizers = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}
        if optimizer not in optimizers:
            raise ValueError(f"{owner}: optimizer must be one of {sorted(optimizers)}, got {optimizer!r}")
        _, _, em, obs = self._prepare(owner, observations, lengths, need_emissions=False)
        mask = em.mask
        n = obs.shape[0]
        if batch_size is None:
            batch_size = n
        check_int(owner, "batch_size", batch_size)
        lengths_all = mask.sum(1)
        opt = optimizers[optimizer](self.parameters(), lr=lr)
        history = [self.score(obs, lengths_all)]
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator)
            for i in range(0, n, batch_size):
                idx = order[i:i + batch_size]
                loss = -self.log_likelihood(obs[idx], lengths_all[idx]).sum() / lengths_all[idx].sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
            history.append(self.score(obs, lengths_all))
        return history

    def extra_repr(self) -> str:
        return self.cell.extra_repr()


class CategoricalHMM(_HMM):
    """A categorical HMM whose parameters live in an :class:`~rnnkit.cells.HMMFilterCell`.

    ``log_likelihood`` runs the filter cell through :class:`rnnkit.Recurrent` (the RNN form,
    differentiable); ``parallel_log_likelihood`` and ``parallel_filter`` compute the same
    numbers by log-depth products; ``fit_em`` runs Baum–Welch on the fast smoother's expected
    counts and ``fit_gradient`` climbs the likelihood with Adam or SGD.

    >>> import torch
    >>> hmm = CategoricalHMM.from_probabilities([0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]],
    ...                                         [[0.7, 0.3], [0.1, 0.9]])
    >>> round(hmm.score(torch.tensor([[0, 0, 1, 1]])), 4)
    -3.1593
    """

    def __init__(self, num_states: int, num_symbols: int, *, device=None, dtype=None):
        super().__init__(HMMFilterCell(num_states, num_symbols, device=device, dtype=dtype))

    @classmethod
    def from_probabilities(cls, initial, transition, emission, *, device=None, dtype=torch.float64):
        """An HMM with the given ``π`` (K,), ``P`` (K, K) and ``C`` (K, V), checked to be stochastic."""
        owner = f"{cls.__name__}.from_probabilities"
        first = torch.as_tensor(initial) if not isinstance(initial, Tensor) else initial
        if first.dim() != 1 or first.shape[0] < 1:
            raise ValueError(f"{owner}: initial must be a vector (K,), got shape {tuple(first.shape)}")
        k = first.shape[0]
        em = torch.as_tensor(emission) if not isinstance(emission, Tensor) else emission
        if em.dim() != 2 or em.shape[0] != k or em.shape[1] < 1:
            raise ValueError(f"{owner}: emission must be (K, V) with K = {k}, got shape {tuple(em.shape)}")
        model = cls(k, em.shape[1], device=device, dtype=dtype)
        model.set_probabilities(initial, transition, emission)
        return model

    @torch.no_grad()
    def set_probabilities(self, initial, transition, emission) -> None:
        """Replace ``π``, ``P`` and ``C``; each must be non-negative with rows summing to one."""
        owner = f"{type(self).__name__}.set_probabilities"
        k, v = self.num_states, self.num_symbols
        like = self.cell.log_initial
        probs = [_check_probabilities(owner, name, p, shape, like.dtype, like.device)
                 for name, p, shape in (("initial", initial, (k,)), ("transition", transition, (k, k)),
                                        ("emission", emission, (k, v)))]
        tiny = torch.finfo(like.dtype).tiny
        for param, p in zip(self.log_params(), probs):
            param.copy_(p.clamp_min(tiny).log())

    @property
    def num_symbols(self) -> int:
        return self.cell.num_symbols

    def log_params(self):
        """``(log_initial, log_transition, log_emission)`` of the cell (unconstrained)."""
        return self.cell.log_initial, self.cell.log_transition, self.cell.log_emission

    def _prepare(self, owner, symbols, lengths, need_emissions=True):   # the gather is lazy anyway
        log_pi, log_P, em = _categorical(owner, *self.log_params(), symbols, lengths)
        return log_pi, log_P, em, em.symbols

    def _cell_inputs(self, symbols):
        return F.one_hot(symbols, self.num_symbols).to(self.cell.log_initial.dtype)

    def _emission_update(self, posterior, symbols):
        k, v = self.num_states, self.num_symbols
        counts = torch.zeros(v, k, dtype=posterior.dtype, device=posterior.device)
        # the fast passes are time-major: (T, B, K) is the contiguous view; posterior is 0 at padding
        counts.index_add_(0, symbols.t().reshape(-1), posterior.transpose(0, 1).reshape(-1, k))
        counts = counts.t()
        rows = counts.sum(-1, keepdim=True)
        tiny = torch.finfo(posterior.dtype).tiny
        C = torch.where(rows > 0, counts / rows.clamp_min(tiny), self.cell.emission())
        self.cell.log_emission.copy_(C.clamp_min(tiny).log())

    def sample(self, num_sequences: int, length: int, generator=None) -> HMMSample:
        return hmm_sample(*self.log_params(), num_sequences, length, generator)


class GaussianHMM(_HMM):
    """An HMM with diagonal-Gaussian emissions ``N(x_t; μ_k, diag σ²_k)``; observations (B, T, D).

    The parameters live in a :class:`~rnnkit.cells.GaussianHMMFilterCell`: ``log_initial``,
    ``log_transition``, ``means`` (K, D) and ``log_variances`` (K, D). Everything of
    :class:`CategoricalHMM` works the same way; EM's emission update is the posterior-weighted
    mean and variance of the observations per state, with the variances floored at
    ``min_variance`` so that a state cannot collapse onto a single point. The means start
    at N(0, 1) draws; for data on another scale call :meth:`init_from_data` first (or give
    the parameters with :meth:`from_parameters`).
    """

    def __init__(self, num_states: int, num_features: int, *, min_variance: float = 1e-6,
                 device=None, dtype=None):
        if not min_variance > 0:
            raise ValueError(f"GaussianHMM: min_variance must be > 0, got {min_variance}")
        super().__init__(GaussianHMMFilterCell(num_states, num_features, device=device, dtype=dtype))
        self.min_variance = float(min_variance)

    @classmethod
    def from_parameters(cls, initial, transition, means, variances, *, min_variance: float = 1e-6,
                        device=None, dtype=torch.float64):
        """An HMM with the given ``π`` (K,), ``P`` (K, K), means (K, D) and variances (K, D)."""
        owner = f"{cls.__name__}.from_parameters"
        mu = torch.as_tensor(means, dtype=dtype, device=device)
        if mu.dim() != 2 or min(mu.shape) < 1:
            raise ValueError(f"{owner}: means must be (K, D), got shape {tuple(mu.shape)}")
        model = cls(mu.shape[0], mu.shape[1], min_variance=min_variance, device=device, dtype=dtype)
        model.set_parameters(initial, transition, means, variances)
        return model

    @torch.no_grad()
    def set_parameters(self, initial, transition, means, variances) -> None:
        """Replace ``π``, ``P`` (checked stochastic), the means and the (positive) variances."""
        owner = f"{type(self).__name__}.set_parameters"
        k, d = self.num_states, self.num_features
        like = self.cell.log_initial
        pi = _check_probabilities(owner, "initial", initial, (k,), like.dtype, like.device)
        P = _check_probabilities(owner, "transition", transition, (k, k), like.dtype, like.device)
        mu = torch.as_tensor(means, dtype=like.dtype, device=like.device)
        var = torch.as_tensor(variances, dtype=like.dtype, device=like.device)
        for name, t in (("means", mu), ("variances", var)):
            if tuple(t.shape) != (k, d):
                raise ValueError(f"{owner}: {name} must have shape {(k, d)}, got {tuple(t.shape)}")
            if not torch.isfinite(t).all():
                raise ValueError(f"{owner}: {name} must be finite")
        if not (var > 0).all():
            raise ValueError(f"{owner}: variances must all be > 0, got {float(var.min()):.6g}")
        tiny = torch.finfo(like.dtype).tiny
        self.cell.log_initial.copy_(pi.clamp_min(tiny).log())
        self.cell.log_transition.copy_(P.clamp_min(tiny).log())
        self.cell.means.copy_(mu)
        self.cell.log_variances.copy_(var.log())

    @torch.no_grad()
    def init_from_data(self, observations: Tensor, lengths=None,
                       generator: torch.Generator | None = None) -> "GaussianHMM":
        """Start EM from the data: the means are K observations chosen by k-means++ seeding
        (the first at random, each next one with probability proportional to its squared
        distance from the nearest mean chosen so far, which spreads them over the data) and
        every variance is the overall variance of that feature (floored at ``min_variance``);
        ``π`` and ``P`` are left as they are. Returns ``self``."""
        owner = f"{type(self).__name__}.init_from_data"
        _, _, em, x = self._prepare(owner, observations, lengths, need_emissions=False)
        valid = x[em.mask]                                                 # (N, D)
        distinct = torch.unique(valid, dim=0)
        if distinct.shape[0] < self.num_states:
            raise ValueError(f"{owner}: need at least {self.num_states} distinct observations to place "
                             f"{self.num_states} means, got {distinct.shape[0]}")
        cpu = distinct.cpu()
        means = [cpu[torch.randint(cpu.shape[0], (1,), generator=generator)].squeeze(0)]
        nearest = ((cpu - means[0]) ** 2).sum(-1)
        for _ in range(1, self.num_states):
            pick = torch.multinomial(nearest, 1, generator=generator).squeeze(0)   # chosen points weigh 0
            means.append(cpu[pick])
            nearest = torch.minimum(nearest, ((cpu - means[-1]) ** 2).sum(-1))
        var = valid.var(0, unbiased=False).clamp_min(self.min_variance) if valid.shape[0] > 1 else \
            torch.ones_like(valid[0])
        self.cell.means.copy_(torch.stack(means).to(distinct.device))
        self.cell.log_variances.copy_(var.log().expand(self.num_states, -1))
        return self

    @property
    def num_features(self) -> int:
        return self.cell.num_features

    def log_params(self):
        """``(log_initial, log_transition, means, log_variances)`` of the cell."""
        return self.cell.log_initial, self.cell.log_transition, self.cell.means, self.cell.log_variances

    def _prepare(self, owner, x, lengths, need_emissions=True):
        log_pi, log_P = _normalize_chain(owner, self.cell.log_initial, self.cell.log_transition)
        x, lengths, mask = _check_observations(owner, x, lengths, self.num_features, log_pi)
        log_e = self.cell.log_emission_densities(x) if need_emissions else None
        return log_pi, log_P, _Emissions(log_e, mask), x

    def _cell_inputs(self, x):
        return x

    def _emission_update(self, posterior, x):
        k, d = self.num_states, self.num_features
        g = posterior.transpose(0, 1).reshape(-1, k)                       # time-major; zero at padding
        flat = x.transpose(0, 1).reshape(-1, d)
        weight = g.sum(0).unsqueeze(-1)                                    # (K, 1)
        seen = weight > 0
        w = weight.clamp_min(torch.finfo(g.dtype).tiny)
        mu = torch.where(seen, (g.t() @ flat) / w, self.cell.means)
        var = (g.t() @ (flat * flat)) / w - mu * mu
        var = torch.where(seen, var, self.cell.log_variances.exp()).clamp_min(self.min_variance)
        self.cell.means.copy_(mu)
        self.cell.log_variances.copy_(var.log())

    def sample(self, num_sequences: int, length: int, generator=None) -> HMMSample:
        """States (N, T) and observations (N, T, D) by ancestral sampling."""
        owner = "GaussianHMM.sample"
        log_pi, log_P = _normalize_chain(owner, self.cell.log_initial, self.cell.log_transition)
        _check_sample_sizes(owner, num_sequences, length)
        with torch.no_grad():
            states = _sample_states(log_pi, log_P, num_sequences, length, generator)
            mu, sd = self.cell.means[states], (0.5 * self.cell.log_variances[states]).exp()
            noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        return HMMSample(states, mu + sd * noise)

    def extra_repr(self) -> str:
        return f"{self.cell.extra_repr()}, min_variance={self.min_variance}"

