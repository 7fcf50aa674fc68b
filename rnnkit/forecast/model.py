r"""A global recurrent forecaster for many series: one network learns from every series at once.

For each series the network reads a window of its last ``context`` values and gives, for each of the
next ``h`` steps, a set of quantiles (a direct multi-horizon decoder: all steps at once, no sampling):

- **scaling**: the window is divided by its mean absolute value :math:`s` (a series of thousands and one
  of tens look alike to the network) and the forecasts are multiplied back by it;
- **inputs per step**: the scaled value, whether it was observed (a short series is padded on the left)
  and, for seasonal data, the step's place in the season as a sine and cosine, counted from the series'
  first observation (not yet from the calendar: series that start in different months are not aligned);
- **the network**: an LSTM (:class:`rnnkit.LSTM`) over the window, its last state mapped to ``h`` times
  ``Q`` numbers; the quantiles are the first plus a running sum of positive increments, so they never
  cross;
- **the loss**: the pinball loss of every quantile, averaged (its minimum is the true quantile).

The point forecast is the median; the ``l`` % interval is the pair of quantiles ``(1 ∓ l/100)/2``.
Training draws windows from every series at random ends, for a number of steps or a time budget.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from .._arguments import check_int, check_number
from .._files import umask_mode
from ..shortcuts import LSTM
from .data import ID, TARGET, Panel, check_horizon, load_panel
from .metrics import interval_columns

__all__ = ["RNNForecaster", "QUANTILES"]

# the quantiles every model learns: the median and the bounds of the 50, 80, 90 and 95 % intervals
QUANTILES = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975)


@dataclass
class ForecasterConfig:
    """Everything that rebuilds a fitted forecaster (saved beside its weights)."""
    h: int
    season_length: int = 1
    context: int | None = None            # None: max(2 h, 2 seasons, 8), capped by the longest series
    hidden_size: int = 64
    num_layers: int = 1
    steps: int = 1500
    batch_size: int = 128
    lr: float = 3e-3
    max_minutes: float | None = None
    alias: str = "RNN"
    random_state: int = 0
    quantiles: tuple = field(default_factory=lambda: QUANTILES)


class _Network(nn.Module):
    def __init__(self, inputs: int, config: ForecasterConfig):
        super().__init__()
        self.h, self.q = config.h, len(config.quantiles)
        self.rnn = LSTM(inputs, config.hidden_size, num_layers=config.num_layers, batch_first=True)
        self.head = nn.Linear(config.hidden_size, self.h * self.q)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, context, inputs) -> quantiles (B, h, Q), increasing along Q."""
        out, _ = self.rnn(x)                                                   # (B, context, H)
        raw = self.head(out[:, -1]).view(-1, self.h, self.q)
        steps = nn.functional.softplus(raw[..., 1:])
        return torch.cat([raw[..., :1], raw[..., :1] + torch.cumsum(steps, -1)], -1)


def _pinball(quantiles: torch.Tensor, y: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Mean pinball loss of ``quantiles`` (B, h, Q) at ``levels`` (Q,) for the truth ``y`` (B, h)."""
    u = y.unsqueeze(-1) - quantiles
    return torch.maximum(levels * u, (levels - 1) * u).mean()


class RNNForecaster:
    """A global recurrent forecaster in statsforecast's manner (see the module's text).

    >>> import pandas as pd, numpy as np
    >>> t = np.arange(60)
    >>> df = pd.DataFrame({"unique_id": np.repeat(["a", "b"], 60), "ds": np.tile(t, 2),
    ...                    "y": np.concatenate([10 + np.sin(t * np.pi / 6), 50 + 5 * np.cos(t * np.pi / 6)])})
    >>> model = RNNForecaster(h=6, season_length=12, steps=50, progress=False).fit(df)
    >>> list(model.predict(level=[80]).columns)
    ['unique_id', 'ds', 'RNN', 'RNN-lo-80', 'RNN-hi-80']
    """

    def __init__(self, h: int, season_length: int = 1, *, context: int | None = None, hidden_size: int = 64,
                 num_layers: int = 1, steps: int = 1500, batch_size: int = 128, lr: float = 3e-3,
                 max_minutes: float | None = None, alias: str = "RNN", random_state: int = 0, progress: bool = True):
        self.config = ForecasterConfig(
            h=check_horizon(h), season_length=check_int("RNNForecaster", "season_length", season_length),
            context=None if context is None else check_int("RNNForecaster", "context", context),
            hidden_size=check_int("RNNForecaster", "hidden_size", hidden_size),
            num_layers=check_int("RNNForecaster", "num_layers", num_layers),
            steps=check_int("RNNForecaster", "steps", steps), batch_size=check_int("RNNForecaster", "batch_size",
                                                                                    batch_size),
            lr=check_number("RNNForecaster", "lr", lr, low=0.0, low_closed=False, high_closed=False),
            max_minutes=None if max_minutes is None else check_number(
                "RNNForecaster", "max_minutes", max_minutes, low=0.0, low_closed=False, high_closed=False),
            alias=str(alias), random_state=check_int("RNNForecaster", "random_state", random_state, 0))
        self.progress = progress
        self.panel: Panel | None = None
        self.network: _Network | None = None

    # ----- fitting -------------------------------------------------------------------------------
    def fit(self, df, *, freq=None, fill: str | None = None) -> "RNNForecaster":
        """Learn from every series of ``df`` (a table as :func:`~rnnkit.forecast.load_panel` reads it)."""
        panel = df if isinstance(df, Panel) else load_panel(df, freq=freq, fill=fill)
        if panel.covariates.columns:
            raise ValueError(f"RNNForecaster does not read covariates yet; drop {', '.join(panel.covariates.columns)}")
        c = self.config
        short = panel.lengths()
        short = short[short < c.h + 1]
        if len(short):
            raise ValueError(f"series {short.index[0]!r} has {int(short.iloc[0])} observation(s); forecasting {c.h} "
                             f"steps needs at least {c.h + 1}; drop it or lower h")
        longest = int(panel.lengths().max())
        if c.context is None:
            c.context = max(2 * c.h, 2 * c.season_length, 8)
        c.context = min(c.context, max(longest - c.h, 1))
        self.panel = panel
        torch.manual_seed(c.random_state)
        self.network = _Network(self._inputs(), c)
        self._train(np.random.default_rng(c.random_state))
        return self

    def _inputs(self) -> int:
        return 2 + (2 if self.config.season_length > 1 else 0)

    def _series(self) -> list:
        return [group[TARGET].to_numpy(dtype=np.float64) for _, group in self.panel.df.groupby(ID, sort=False)]

    def _window(self, y: np.ndarray, end: int) -> tuple:
        """The network's input for the window of ``context`` values before position ``end`` of ``y``, and
        the scale: ``(features (context, inputs), scale)``."""
        c = self.config
        start = max(0, end - c.context)
        values = y[start:end]
        scale = float(np.mean(np.abs(values))) or 1.0
        x = np.zeros((c.context, self._inputs()))
        x[c.context - len(values):, 0] = values / scale
        x[c.context - len(values):, 1] = 1.0
        if c.season_length > 1:                                   # the step's place in its season
            phase = 2 * np.pi * (np.arange(end - c.context, end) % c.season_length) / c.season_length
            x[:, 2], x[:, 3] = np.sin(phase), np.cos(phase)
        return x, scale

    def _train(self, rng) -> None:
        c, series = self.config, self._series()
        ends = [np.arange(1, len(y) - c.h + 1) for y in series]             # windows with h values after them
        weights = np.array([len(e) for e in ends], dtype=float)
        optimizer = torch.optim.Adam(self.network.parameters(), lr=c.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, c.steps, eta_min=c.lr * 0.05)
        levels = torch.tensor(c.quantiles)
        started, budget = time.perf_counter(), None if c.max_minutes is None else 60 * c.max_minutes
        bar = tqdm(range(c.steps), desc="fit", disable=not self.progress, leave=False)
        for _ in bar:
            picks = rng.choice(len(series), size=c.batch_size, p=weights / weights.sum())
            xs, ys = [], []
            for i in picks:
                end = int(rng.choice(ends[i]))
                x, scale = self._window(series[i], end)
                xs.append(x)
                ys.append(series[i][end:end + c.h] / scale)
            x, y = (torch.from_numpy(np.stack(a)).float() for a in (xs, ys))
            loss = _pinball(self.network(x), y, levels)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(self.network.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            if budget is not None and time.perf_counter() - started > budget:
                break

    # ----- forecasting -------------------------------------------------------------------------------
    def predict(self, h: int | None = None, level=(80, 95), X_df=None) -> pd.DataFrame:
        """The forecasts of the next ``h`` steps (default: the ``h`` fitted) of every series: ``unique_id, ds,
        ALIAS`` (the median) and ``ALIAS-lo-L, ALIAS-hi-L`` for each level of ``level``."""
        if self.network is None:
            raise RuntimeError("RNNForecaster: call fit(df) before predict()")
        c = self.config
        h = c.h if h is None else check_horizon(h)
        if h > c.h:
            raise ValueError(f"RNNForecaster: the model forecasts up to {c.h} steps (its h), got h={h}; refit with "
                             f"h={h}")
        if X_df is not None:
            raise ValueError("RNNForecaster was fitted without future covariates; drop X_df")
        columns = self._columns(level)
        series = self._series()
        windows = [self._window(y, len(y)) for y in series]
        x = torch.from_numpy(np.stack([w for w, _ in windows])).float()
        scales = np.array([s for _, s in windows])[:, None, None]
        self.network.eval()
        with torch.no_grad():
            quantiles = self.network(x).double().numpy()[:, :h] * scales                # (series, h, Q)
        out = self.panel.future_frame(h)
        for name, q in columns.items():
            out[name] = quantiles[..., c.quantiles.index(q)].reshape(-1)
        return out

    def _columns(self, level) -> dict:
        """``{column: quantile}`` of the median and each interval of ``level``."""
        c = self.config
        columns = {c.alias: 0.5}
        for lv in sorted(level):
            lo, hi = round((1 - lv / 100) / 2, 6), round((1 + lv / 100) / 2, 6)
            if lo not in c.quantiles or hi not in c.quantiles:
                trained = sorted({round(100 * (1 - 2 * q)) for q in c.quantiles if q < 0.5})
                raise ValueError(f"RNNForecaster: level {lv} needs the {lo:g} and {hi:g} quantiles, which the model "
                                 f"does not learn; choose levels among {', '.join(map(str, trained))}")
            low, high = interval_columns(c.alias, lv)
            columns[low], columns[high] = lo, hi
        return columns

    # ----- saving --------------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write the fitted model to the folder ``path`` (its settings, weights and the series it forecasts),
        all or nothing: the folder appears only once every file is written."""
        if self.network is None:
            raise RuntimeError("RNNForecaster: call fit(df) before save()")
        path = Path(path)
        if path.exists():
            raise FileExistsError(f"'{path}' exists; save to a new folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".rnnkit-", dir=path.parent))     # beside it: the move is a rename
        umask_mode(staging, directory=True)              # mkdtemp's 0700 would outlive the rename
        try:
            config = asdict(self.config)
            config["quantiles"] = list(config["quantiles"])
            (staging / "config.json").write_text(json.dumps({"forecaster": config, "freq": self.panel.freq}))
            save_file({k: v.contiguous() for k, v in self.network.state_dict().items()}, str(staging / "weights.safetensors"))
            self.panel.df.to_parquet(staging / "series.parquet", index=False)
            shutil.move(str(staging), str(path))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(cls, path, *, progress: bool = True) -> "RNNForecaster":
        """The forecaster :meth:`save` wrote to ``path``."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"'{path}' holds no saved forecaster (no config.json); pass the folder save() wrote")
        saved = json.loads((path / "config.json").read_text())
        config = ForecasterConfig(**{**saved["forecaster"], "quantiles": tuple(saved["forecaster"]["quantiles"])})
        model = cls(config.h, config.season_length, progress=progress)
        model.config = config
        model.panel = load_panel(pd.read_parquet(path / "series.parquet"), freq=saved["freq"])
        model.network = _Network(model._inputs(), config)
        model.network.load_state_dict(load_file(str(path / "weights.safetensors")))
        model.network.eval()
        return model
