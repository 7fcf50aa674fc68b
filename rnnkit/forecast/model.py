r"""A global recurrent forecaster for many series: one network learns from every series at once.

For each series the network reads a window of its last ``context`` steps and says, for each of the
next ``h`` steps, what the value will be and how sure it is:

- **scaling**: the window's values are divided by their mean absolute value :math:`s` (a series of
  thousands and one of tens look alike to the network) and the forecasts are multiplied back by it;
- **what each step shows** (:mod:`rnnkit.forecast.features`): the scaled value, whether it was
  observed (a short series is padded on the left), the step's place in the season and in the
  calendar (from ``ds``, aligned across series where ``ds`` holds dates), the future and past
  covariates (standardized), and the static ones;
- **the network** (:mod:`rnnkit.forecast.network`): an LSTM (:class:`rnnkit.LSTM`) over the window
  and a decoder, ``direct`` (every step ahead at once) or ``autoregressive`` (sample paths, each draw
  fed back);
- **the likelihood** (:mod:`rnnkit.forecast.heads`): ``quantile`` (the pinball loss of the 2.5 ... 97.5 %
  quantiles, which never cross), ``normal``, ``studentt`` or ``negbin`` (counts);
- **an ensemble**: ``ensemble`` networks from different seeds, their quantiles averaged.

The point forecast is the median; the ``l`` % interval is the pair of quantiles ``(1 ∓ l/100)/2``.
"""
from __future__ import annotations

import contextlib
import copy
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from .._arguments import check_int, check_number
from .._files import new_folder
from .data import ID, TARGET, TIME, Panel, check_counts, check_future, check_horizon, load_panel
from .features import Encoded, Standardizer, encode, season_length_for
from .heads import LIKELIHOODS, QUANTILES, empirical_quantiles, head
from .metrics import interval_columns
from .network import DECODERS, PATHS, Network, Scaler, scaled, train

__all__ = ["RNNForecaster", "QUANTILES", "LIKELIHOODS", "DECODERS"]

_OWNER = "RNNForecaster"
STEPS = (1500, 4000)       # the fewest and most training steps the epochs rule gives
TRANSFORMS = ("none", "log")


@dataclass
class ForecasterConfig:
    """Everything that rebuilds a fitted forecaster (saved beside its weights)."""
    h: int
    season_length: int | None = None      # None: from the frequency (season_length_for)
    context: int | None = None            # None: max(2 h, 2 seasons, 8), capped by the longest series
    hidden_size: int = 64
    num_layers: int = 1
    steps: int | None = None              # None: epochs passes over the windows, within STEPS
    epochs: float = 20.0
    batch_size: int = 128
    lr: float = 3e-3
    likelihood: str = "quantile"
    decoder: str = "direct"
    transform: str = "none"               # log: model log(1 + y/s), for series never negative
    baseline: bool = False                # direct decoder: learn the change from the seasonal naive forecast
    ensemble: int = 5
    threads: int | None = 1               # torch's threads while fitting and forecasting (None: as set)
    max_minutes: float | None = None
    alias: str = "RNN"
    random_state: int = 0
    quantiles: tuple = field(default_factory=lambda: QUANTILES)


def _choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{_OWNER}: {name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


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

    def __init__(self, h: int, season_length: int | None = None, *, context: int | None = None, hidden_size: int = 64,
                 num_layers: int = 1, steps: int | None = None, epochs: float = 20.0, batch_size: int = 128,
                 lr: float = 3e-3, likelihood: str = "quantile", decoder: str = "direct", transform: str = "none",
                 baseline: bool = False, ensemble: int = 5, threads: int | None = 1, max_minutes: float | None = None,
                 alias: str = "RNN", random_state: int = 0, progress: bool = True):
        positive = {"low": 0.0, "low_closed": False, "high_closed": False}
        self.config = ForecasterConfig(
            h=check_horizon(h),
            season_length=None if season_length is None else check_int(_OWNER, "season_length", season_length),
            context=None if context is None else check_int(_OWNER, "context", context),
            hidden_size=check_int(_OWNER, "hidden_size", hidden_size),
            num_layers=check_int(_OWNER, "num_layers", num_layers),
            steps=None if steps is None else check_int(_OWNER, "steps", steps),
            epochs=check_number(_OWNER, "epochs", epochs, **positive),
            batch_size=check_int(_OWNER, "batch_size", batch_size), lr=check_number(_OWNER, "lr", lr, **positive),
            likelihood=_choice("likelihood", likelihood, LIKELIHOODS), decoder=_choice("decoder", decoder, DECODERS),
            transform=_choice("transform", transform, TRANSFORMS), baseline=bool(baseline),
            ensemble=check_int(_OWNER, "ensemble", ensemble),
            threads=None if threads is None else check_int(_OWNER, "threads", threads),
            max_minutes=None if max_minutes is None else check_number(_OWNER, "max_minutes", max_minutes, **positive),
            alias=str(alias), random_state=check_int(_OWNER, "random_state", random_state, 0))
        self.settings = self.config          # as given; fit resolves what is left to the data in a copy
        self.progress = progress
        self.panel: Panel | None = None
        self.standardizer: Standardizer | None = None
        self.networks: list = []

    # ----- fitting -------------------------------------------------------------------------------
    def fit(self, df, *, freq=None, fill: str | None = None, future=(), past=(), static=()) -> "RNNForecaster":
        """Learn from every series of ``df`` (a table, or the path of one, as :func:`~rnnkit.forecast.load_panel`
        reads it, with the covariate columns ``future``, ``past`` and ``static``; or a :class:`Panel`)."""
        panel = df if isinstance(df, Panel) else load_panel(df, freq=freq, fill=fill, future=future, past=past,
                                                            static=static)
        c = self.config = replace(self.settings)
        if c.season_length is None:
            c.season_length = season_length_for(panel.freq)[0]
        if c.likelihood == "negbin":
            check_counts(panel, "negbin")
        if c.decoder == "autoregressive" and panel.covariates.past:
            raise ValueError(f"{_OWNER}: the autoregressive decoder cannot read past covariates "
                             f"({', '.join(panel.covariates.past)}), which are unknown beyond each series' end; "
                             f"use decoder='direct' or declare them as future covariates")
        _long_enough(panel, c.h + 1, f"forecasting {c.h} steps needs at least {c.h + 1}; drop it or lower h")
        if c.transform == "log" and (c.likelihood == "negbin" or (panel.df[TARGET] < 0).any()):
            raise ValueError(f"{_OWNER}: transform='log' needs series that are never negative, and a likelihood for "
                             f"real values (not negbin); use transform='none'")
        longest = int(panel.lengths().max())
        if c.context is None:
            c.context = max(2 * c.h, 2 * c.season_length, 8)
        c.context = min(c.context, max(longest - c.h, 1))
        if c.steps is None:
            windows = int((panel.lengths() - c.h).sum())
            c.steps = int(np.clip(round(c.epochs * windows / c.batch_size), *STEPS))
        self.panel = panel
        self.standardizer = Standardizer.fit(panel.df, (*panel.covariates.future, *panel.covariates.past,
                                                        *panel.covariates.static))
        encoded = self._encode(panel)
        budget = None if c.max_minutes is None else 60 * c.max_minutes / c.ensemble
        self.networks = []
        with _threads(c.threads):
            self._fit_members(encoded, budget)
        return self

    def _fit_members(self, encoded: Encoded, budget) -> None:
        c = self.config
        for member in range(c.ensemble):
            torch.manual_seed(c.random_state + member)
            network = self._network(encoded)
            train(network, self._head(), self._scaler(), encoded, context=c.context, h=c.h, steps=c.steps,
                  batch_size=c.batch_size,
                  lr=c.lr, budget=budget, rng=np.random.default_rng(c.random_state + member), progress=self.progress,
                  desc="fit" if c.ensemble == 1 else f"fit {member + 1}/{c.ensemble}")
            self.networks.append(network)

    def _encode(self, panel: Panel, extra: int = 0, future=None) -> Encoded:
        return encode(panel, self.config.season_length, self.standardizer, extra=extra, future=future)

    def _scaler(self) -> Scaler:
        return Scaler(log=self.config.transform == "log", counts=self.config.likelihood == "negbin")

    def _head(self):
        return head(self.config.likelihood, self.config.quantiles)

    def _network(self, encoded: Encoded) -> Network:
        c = self.config
        return Network(values=2, steps=encoded.steps.shape[1], past=encoded.past.shape[1],
                       static=encoded.static.shape[1], h=c.h, outputs=self._head().n, hidden=c.hidden_size,
                       layers=c.num_layers, decoder=c.decoder,
                       season=self._baseline_season())

    def _baseline_season(self) -> int:
        """The season of the direct decoder's baseline (0: none; counts are modelled without one)."""
        c = self.config
        use = c.baseline and c.decoder == "direct" and c.likelihood != "negbin"
        return min(c.season_length, c.context) if use else 0

    # ----- forecasting ---------------------------------------------------------------------------
    def make_future_dataframe(self, h: int | None = None, df=None) -> pd.DataFrame:
        """``unique_id, ds`` of the ``h`` steps (default: the fitted ``h``) after each series' end (of ``df``,
        or of the fitted table): the frame to fill with future covariates and pass as ``X_df``."""
        h = self._horizon(h, "make_future_dataframe")
        return (self.panel if df is None else self.read_like(df)).future_frame(h)

    def predict(self, h: int | None = None, level=(80, 95), X_df=None, df=None) -> pd.DataFrame:
        """The forecasts of the next ``h`` steps (default: the ``h`` fitted) of every series: ``unique_id, ds,
        ALIAS`` (the median) and ``ALIAS-lo-L, ALIAS-hi-L`` for each level of ``level``. ``X_df``: the future
        covariates of those steps; ``df``: forecast after this table's series instead of the fitted ones
        (same columns; the model is not refitted)."""
        h = self._horizon(h)
        columns = self._columns(level)
        panel = self.panel if df is None else self.read_like(df)
        future = _extended(check_future(panel, h, X_df), panel, h, self.config.h)
        encoded = self._encode(panel, extra=self.config.h, future=future)
        series = np.arange(len(encoded.lengths))
        quantiles = self._quantiles(encoded, series, encoded.lengths, list(columns.values()))[:, :h]
        out = panel.future_frame(h)
        for k, name in enumerate(columns):
            out[name] = quantiles[..., k].reshape(-1)
        return out

    def cross_validation(self, df=None, *, h: int | None = None, n_windows: int = 1, step_size: int | None = None,
                         level=(80, 95), refit: bool = False) -> pd.DataFrame:
        """Forecasts from each of the last ``n_windows`` cutoffs of every series of ``df`` (default: the fitted
        table), ``step_size`` steps apart (default ``h``), beside the truth: ``unique_id, ds, cutoff, y`` and
        the forecast columns. The model reads each series up to the cutoff and is not refitted (one batched
        pass for every window); ``refit=True`` fits a fresh model on the table cut at each cutoff instead.
        Without ``df`` (or with the fitted table) and without refitting, the windows lie in the history the
        model learnt from: the scores are in-sample, flattering; pass later data for a fair measure."""
        h = self._horizon(h, "cross_validation")
        n_windows = check_int(_OWNER, "n_windows", n_windows)
        step_size = h if step_size is None else check_int(_OWNER, "step_size", step_size)
        panel = self.panel if df is None else self.read_like(df)
        back = h + (n_windows - 1) * step_size
        _long_enough(panel, back + 1, f"{n_windows} window(s) of {h} steps, {step_size} apart, need at least "
                                      f"{back + 1}; lower n_windows or h")
        if refit:
            return self._refitted(panel, h, n_windows, step_size, level)
        columns = self._columns(level)
        encoded = self._encode(panel)
        lengths = encoded.lengths
        ends = np.stack([lengths - h - j * step_size for j in reversed(range(n_windows))], 1)     # (series, windows)
        series = np.repeat(np.arange(len(lengths)), n_windows)
        quantiles = self._quantiles(encoded, series, ends.reshape(-1), list(columns.values()))[:, :h]
        rows = (encoded.starts[:, None, None] + ends[..., None] + np.arange(h)).reshape(-1)   # (series, window, h)
        cut = (encoded.starts[:, None] + ends - 1).reshape(-1)
        df_ = panel.df
        out = pd.DataFrame({ID: df_[ID].to_numpy()[rows], TIME: df_[TIME].to_numpy()[rows],
                            "cutoff": np.repeat(df_[TIME].to_numpy()[cut], h), TARGET: df_[TARGET].to_numpy()[rows]})
        for k, name in enumerate(columns):
            out[name] = quantiles[..., k].reshape(-1)
        return out

    def _refitted(self, panel, h, n_windows, step_size, level) -> pd.DataFrame:
        parts = []
        for j in reversed(range(n_windows)):
            keep = panel.df.groupby(ID, sort=False).cumcount(ascending=False) >= h + j * step_size
            past = panel.df[keep].reset_index(drop=True)
            model = copy.deepcopy(self)
            model.fit(Panel(past, panel.freq, panel.covariates, panel.rows[keep.to_numpy()]))
            truth = panel.df[~keep].groupby(ID, sort=False).head(h)
            X_df = truth[[ID, TIME, *panel.covariates.future]] if panel.covariates.future else None
            got = model.predict(h, level, X_df=X_df)
            got.insert(2, "cutoff", got[ID].map(past.groupby(ID, sort=False)[TIME].last()))
            parts.append(got.merge(truth[[ID, TIME, TARGET]], on=[ID, TIME]))
        out = pd.concat(parts, ignore_index=True)
        order = {uid: i for i, uid in enumerate(panel.ids)}
        out = out.sort_values([ID, "cutoff", TIME], key=lambda s: s.map(order) if s.name == ID else s, kind="stable")
        return out[[ID, TIME, "cutoff", TARGET, *[c for c in out.columns if c not in (ID, TIME, "cutoff", TARGET)]]] \
            .reset_index(drop=True)

    def _quantiles(self, encoded: Encoded, series: np.ndarray, ends: np.ndarray, levels: list) -> np.ndarray:
        """The quantiles at ``levels`` of the ``h`` steps after each window, averaged over the ensemble:
        (windows, h, len(levels)) in the series' units."""
        c, h_ = self.config, self._head()
        batch = {k: v.astype(np.float32) for k, v in encoded.windows(series, ends, c.context, c.h).items()}
        scaler = self._scaler()
        x, scale = scaled(batch, scaler)
        ahead, static = torch.from_numpy(batch["ahead"]), torch.from_numpy(batch["static"])
        generator = torch.Generator().manual_seed(c.random_state)
        total = 0.0
        with torch.no_grad(), _threads(c.threads):
            for network in self._require():
                if c.decoder == "direct":
                    target_scale = scaler.targets(scale, scale)[1].double()[:, None]
                    got = h_.quantiles(network(x, ahead, static).double(), target_scale, levels, generator)
                    got = scaler.values(got, scale.double()[:, None, None])
                else:
                    paths = network.paths(x, ahead, static, scale, h_, scaler, generator, PATHS)
                    got = empirical_quantiles(paths.double(), levels, dim=1)
                total = total + got.double().numpy()
        return total / len(self.networks)

    def _require(self, method: str = "predict") -> list:
        if not self.networks:
            raise RuntimeError(f"{_OWNER}: call fit(df) before {method}()")
        return self.networks

    def _horizon(self, h, method: str = "predict") -> int:
        self._require(method)
        h = self.config.h if h is None else check_horizon(h)
        if h > self.config.h:
            raise ValueError(f"{_OWNER}: the model forecasts up to {self.config.h} steps (its h), got h={h}; refit "
                             f"with h={h}")
        return h

    def read_like(self, df, *, fill: str | None = None) -> Panel:
        """``df`` (a table, the path of one, or a :class:`Panel`) read as the fitted table was: with its
        frequency and covariates, gaps filled as ``fill`` says."""
        self._require("read_like")
        cov = self.panel.covariates
        panel = df if isinstance(df, Panel) else load_panel(df, freq=self.panel.freq, fill=fill, future=cov.future,
                                                            past=cov.past, static=cov.static)
        if panel.freq != self.panel.freq:
            raise ValueError(f"the table's frequency is {panel.freq!r}, the model was fitted on {self.panel.freq!r}; "
                             f"pass a table of the same frequency")
        return panel

    def _columns(self, level) -> dict:
        """``{column: quantile}`` of the median and each interval of ``level``."""
        c = self.config
        columns = {c.alias: 0.5}
        learnt = c.quantiles if c.likelihood == "quantile" else None
        for lv in sorted(level):
            lo, hi = round((1 - lv / 100) / 2, 6), round((1 + lv / 100) / 2, 6)
            if learnt is not None and (lo not in learnt or hi not in learnt):
                trained = sorted({round(100 * (1 - 2 * q)) for q in learnt if q < 0.5})
                raise ValueError(f"{_OWNER}: level {lv} needs the {lo:g} and {hi:g} quantiles, which the model "
                                 f"does not learn; choose levels among {', '.join(map(str, trained))}")
            if not 0 < lv < 100:
                raise ValueError(f"{_OWNER}: a level is a percentage between 0 and 100, got {lv}")
            low, high = interval_columns(c.alias, lv)
            columns[low], columns[high] = lo, hi
        return columns

    # ----- saving --------------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write the fitted model to the folder ``path`` (its settings, weights and the series it forecasts),
        all or nothing: the folder appears only once every file is written."""
        if not self.networks:
            raise RuntimeError(f"{_OWNER}: call fit(df) before save()")
        path = Path(path)
        with new_folder(path) as staging:
            config = asdict(self.config)
            config["quantiles"] = list(config["quantiles"])
            cov = self.panel.covariates
            (staging / "config.json").write_text(json.dumps({
                "forecaster": config, "freq": self.panel.freq, "standardizer": asdict(self.standardizer),
                "covariates": {"future": list(cov.future), "past": list(cov.past), "static": list(cov.static)}}))
            weights = {f"{i}.{k}": v.contiguous() for i, network in enumerate(self.networks)
                       for k, v in network.state_dict().items()}
            save_file(weights, str(staging / "weights.safetensors"))
            self.panel.df.to_parquet(staging / "series.parquet", index=False)
        return path

    @classmethod
    def load(cls, path, *, progress: bool = True) -> "RNNForecaster":
        """The forecaster :meth:`save` wrote to ``path``."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"'{path}' holds no saved forecaster (no config.json); pass the folder save() "
                                    f"wrote")
        saved = json.loads((path / "config.json").read_text())
        config = ForecasterConfig(**{**saved["forecaster"], "quantiles": tuple(saved["forecaster"]["quantiles"])})
        model = cls(config.h, config.season_length, progress=progress)
        model.config = model.settings = config
        cov = saved.get("covariates", {})
        model.panel = load_panel(pd.read_parquet(path / "series.parquet"), freq=saved["freq"],
                                 future=cov.get("future", ()), past=cov.get("past", ()), static=cov.get("static", ()))
        model.standardizer = Standardizer(**saved.get("standardizer", {"mean": {}, "std": {}}))
        encoded = model._encode(model.panel)
        weights = load_file(str(path / "weights.safetensors"))
        if not all(k.split(".", 1)[0].isdigit() for k in weights):          # one network, no member prefix
            raise ValueError(f"'{path}' holds a forecaster saved by an earlier rnnkit (one network, before "
                             f"covariates and ensembles); fit it again")
        members = sorted({int(k.split(".", 1)[0]) for k in weights})
        for i in members:
            network = model._network(encoded)
            network.load_state_dict({k.split(".", 1)[1]: v for k, v in weights.items() if k.startswith(f"{i}.")})
            network.eval()
            model.networks.append(network)
        return model


@contextlib.contextmanager
def _threads(count: int | None):
    """torch's intra-op threads set to ``count`` within the block (None: left as they are). One is the
    default: the network is small, so a second thread gains little on an idle machine and costs much
    where another process holds a core (each matrix product waits for the slower thread)."""
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _long_enough(panel: Panel, needed: int, why: str) -> None:
    lengths = panel.lengths()
    short = lengths[lengths < needed]
    if len(short):
        raise ValueError(f"series {short.index[0]!r} has {int(short.iloc[0])} observation(s); {why}")


def _extended(future, panel: Panel, h: int, fitted_h: int):
    """The future covariates of the first ``h`` steps (checked, in :meth:`Panel.future_frame`'s order) made
    ``fitted_h`` steps long, as the network reads them: the later steps, whose forecasts are dropped,
    repeat each series' last row."""
    if future is None or h == fitted_h:
        return future
    grid = panel.future_frame(fitted_h)
    last = future.groupby(ID, sort=False).last()
    columns = list(panel.covariates.future)
    values = future[columns].to_numpy().reshape(len(last), h, len(columns))
    padded = np.concatenate([values, np.repeat(last[columns].to_numpy()[:, None], fitted_h - h, 1)], 1)
    grid[columns] = padded.reshape(-1, len(columns))
    return grid
