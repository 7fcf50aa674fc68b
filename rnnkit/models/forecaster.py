"""Autoregressive forecasting of real-valued or count series with a GLM readout."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .._arguments import check_int
from .._checks import check_series
from ..readouts import GaussianReadout, PoissonReadout
from .language_model import CELL_NETWORKS

__all__ = ["Forecaster"]

FAMILIES = ("gaussian", "poisson")


class Forecaster(nn.Module):
    r"""One-step-ahead model :math:`p(y_{t+1} \mid y_{\le t})` of a series, sampled forward to forecast.

    ``h_t = RNN(h_{t-1}, f(y_t))`` and :math:`y_{t+1} \sim \mathcal N(\mu(h_t), \sigma(h_t)^2)`
    (``family="gaussian"``, σ predicted per step) or :math:`\mathrm{Poisson}(e^{\eta(h_t)})`
    (``family="poisson"``, counts; the network reads ``f(y) = log(1 + y)``).
    Training minimises the one-step negative log-likelihood; :meth:`forecast`
    runs closed loop — every sampled value is fed back as the next input — for
    any number of steps and many sample paths, from which :meth:`quantiles`
    gives prediction intervals.

    ``series`` tensors are (B, T, series_size).

    >>> import torch
    >>> model = Forecaster(series_size=1, hidden_size=8)
    >>> history = torch.randn(2, 20, 1)
    >>> paths = model.forecast(history, steps=5, num_samples=10, seed=0)
    >>> tuple(paths.shape)                  # (samples, batch, steps, series_size)
    (10, 2, 5, 1)
    """

    def __init__(self, series_size: int = 1, hidden_size: int = 64, *, cell: str = "lstm",
                 num_layers: int = 1, family: str = "gaussian", dropout: float = 0.0, engine: str = "auto"):
        super().__init__()
        name = type(self).__name__
        if family not in FAMILIES:
            raise ValueError(f"{name}: family must be one of {list(FAMILIES)}, got {family!r}")
        if cell not in CELL_NETWORKS:
            raise ValueError(f"{name}: unknown cell {cell!r}; choose one of {sorted(CELL_NETWORKS)}")
        self.series_size, self.family = series_size, family
        self.rnn = CELL_NETWORKS[cell](series_size, hidden_size, num_layers,
                                       dropout=dropout if num_layers > 1 else 0.0, engine=engine, batch_first=True)
        self.readout = (GaussianReadout(hidden_size, series_size, std="predicted") if family == "gaussian"
                        else PoissonReadout(hidden_size, series_size))

    def _encode(self, series: Tensor) -> Tensor:
        return torch.log1p(series) if self.family == "poisson" else series

    def _check(self, series: Tensor, what: str) -> None:
        name = type(self).__name__
        check_series(name, what, series, self.series_size)
        if series.shape[1] == 0:
            raise ValueError(f"{name}: {what} has no time steps")

    def forward(self, series: Tensor, state=None):
        """Hidden states after reading ``series`` (B, T, D) and the final state."""
        self._check(series, "series")
        return self.rnn(self._encode(series), state)

    def loss(self, inputs: Tensor, targets: Tensor, state=None):
        """Mean one-step negative log-likelihood of ``targets`` (the inputs shifted by one step)."""
        if targets.shape != inputs.shape:
            raise ValueError(f"{type(self).__name__}: targets must have the inputs' shape "
                             f"{tuple(inputs.shape)}, got {tuple(targets.shape)}")
        h, state = self(inputs, state)
        return -self.readout.log_prob(targets, h).mean(), state

    @torch.no_grad()
    def forecast(self, history: Tensor, steps: int, num_samples: int = 100, *, seed: int | None = None,
                 mean_path: bool = False) -> Tensor:
        """Sample paths ``(num_samples, B, steps, D)`` continuing each history (B, T, D).

        ``mean_path=True`` feeds back the predicted mean instead of a sample (one
        deterministic path, returned with num_samples = 1).
        """
        name = type(self).__name__
        self._check(history, "history")
        check_int(name, "steps", steps)
        check_int(name, "num_samples", num_samples)
        was_training = self.training
        self.eval()
        generator = None if seed is None else torch.Generator(device=history.device).manual_seed(seed)
        samples = 1 if mean_path else num_samples
        batch = history.shape[0]
        h, state = self(history.repeat_interleave(samples, dim=0))      # (S·B, T, H)
        last = h[:, -1:]                                                   # (S·B, 1, H)
        paths = []
        for _ in range(steps):
            value = self.readout.mean(last) if mean_path else self.readout.sample(last, generator=generator)
            paths.append(value)
            last, state = self(value, state)
        out = torch.cat(paths, dim=1)                                      # (S·B, steps, D)
        self.train(was_training)
        return out.view(batch, samples, steps, self.series_size).transpose(0, 1)

    @staticmethod
    def quantiles(paths: Tensor, levels=(0.1, 0.5, 0.9)) -> Tensor:
        """Pointwise quantiles of sample paths: ``(len(levels), B, steps, D)``."""
        q = torch.as_tensor(levels, dtype=paths.dtype, device=paths.device)
        return torch.quantile(paths, q, dim=0)
