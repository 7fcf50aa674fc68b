r"""How good forecasts are, in the field's measures, and the baseline every forecaster must beat.

:func:`score` takes forecasts beside the truth (``unique_id, ds, y``, a column per model, and the
model's interval columns ``MODEL-lo-80``, ``MODEL-hi-80``, ...) and the training table, and gives per
model, each averaged over series (and over cutoffs, where a ``cutoff`` column says which window):

- **sMAPE** as the M3 competition defines it, from 0 to 200:
  :math:`\frac{200}{h}\sum_t \frac{|y_t - \hat y_t|}{|y_t| + |\hat y_t|}` (utilsforecast's ``smape``, which
  leaves out the 200);
- **MASE**: the mean absolute error over the in-sample mean absolute error of the seasonal naive
  forecast, :math:`|y_t - y_{t-m}|` (utilsforecast's ``mase``);
- **coverage** of each interval: the share of true values inside it (utilsforecast's ``coverage``);
- **scaled CRPS** from the quantiles the intervals and the point forecast stand for (the median and
  the bounds ``(1 \mp l)/2``; utilsforecast's ``scaled_crps``): with so few quantiles an approximation of
  the continuous ranked probability score, comparable between models scored on the same levels.

:func:`seasonal_naive` is the baseline: each step repeats the value one season earlier, with normal
intervals from the in-sample errors of that rule, widening with each season ahead.
"""
from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pandas as pd
from utilsforecast import losses

from .data import ID, TARGET, TIME, Panel, check_horizon, load_panel

__all__ = ["score", "seasonal_naive", "interval_columns"]


def interval_columns(model: str, level: int) -> tuple:
    """``(MODEL-lo-L, MODEL-hi-L)``, the columns of a model's ``level`` % interval."""
    return f"{model}-lo-{level}", f"{model}-hi-{level}"


def score(df: pd.DataFrame, train_df: pd.DataFrame, *, models, season_length: int, level=()) -> pd.DataFrame:
    """One row per model of ``models``: ``smape``, ``mase``, ``coverage-L`` for each level of ``level`` and,
    where there are levels, ``scaled_crps``; each the mean over series (see the module's text)."""
    models, level = list(models), sorted(level)
    missing = [c for c in (ID, TIME, TARGET, *models, *(c for m in models for lv in level
                                                        for c in interval_columns(m, lv))) if c not in df.columns]
    if missing:
        raise ValueError(f"the forecasts lack column(s) {', '.join(missing)}")
    windows = [(df, train_df)] if "cutoff" not in df.columns else [
        (window.drop(columns="cutoff", errors="ignore"), train_df[train_df[TIME] <= cutoff])      # what was known at the cutoff
        for cutoff, window in df.groupby("cutoff", sort=True)]
    parts = [_per_series(window, train, models, season_length, level) for window, train in windows]
    per_series = pd.concat(parts, ignore_index=True)
    return per_series.groupby("model", sort=False).mean(numeric_only=True).reset_index()


def _per_series(df: pd.DataFrame, train_df: pd.DataFrame, models: list, season_length: int, level: list):
    """``model, unique_id`` and each measure, for forecasts from one cutoff."""
    measures = {"smape": 200.0 * losses.smape(df, models).set_index(ID),
                "mase": losses.mase(df, models, season_length, train_df).set_index(ID)}
    for lv in level:
        measures[f"coverage-{lv}"] = losses.coverage(df, models, lv).set_index(ID)
    if level:
        quantiles = np.array([*[(1 - lv / 100) / 2 for lv in reversed(level)], 0.5,
                              *[(1 + lv / 100) / 2 for lv in level]])
        columns = {m: [*[interval_columns(m, lv)[0] for lv in reversed(level)], m,
                       *[interval_columns(m, lv)[1] for lv in level]] for m in models}
        measures["scaled_crps"] = losses.scaled_crps(df, columns, quantiles).set_index(ID)
    return pd.concat([pd.DataFrame({"model": m, **{name: table[m] for name, table in measures.items()}})
                      for m in models]).rename_axis(ID).reset_index()


def seasonal_naive(panel, h: int, season_length: int, level=(), alias: str = "SeasonalNaive") -> pd.DataFrame:
    r"""The seasonal naive forecast of every series of ``panel``, ``h`` steps: :math:`\hat y_{T+k} =
    y_{T+k-m\lceil k/m\rceil}` (the last season repeated), with normal intervals for each level of
    ``level``, :math:`\hat y \pm z\,\sigma\sqrt{\lceil k/m \rceil}`, where :math:`\sigma^2` is the mean of the
    squared in-sample errors :math:`y_t - y_{t-m}`. A series shorter than two seasons uses
    :math:`m = 1` (the last value). ``panel``: a :class:`Panel`, or a table as :func:`load_panel` reads it.
    Columns ``unique_id, ds, ALIAS`` and the intervals."""
    h = check_horizon(h)
    panel = panel if isinstance(panel, Panel) else load_panel(panel)
    level = sorted(level)
    future = panel.future_frame(h)
    k = np.arange(1, h + 1)
    points, widths = [], []
    for _, series in panel.df.groupby(ID, sort=False):
        y = series[TARGET].to_numpy()
        m = season_length if len(y) >= 2 * season_length else 1
        seasons = (k - 1) // m + 1                                           # seasons ahead, ceil(k / m)
        points.append(y[len(y) - m + (k - 1) % m])
        errors = y[m:] - y[:-m]
        sigma = float(np.sqrt(np.mean(errors ** 2))) if len(errors) else np.nan
        widths.append(sigma * np.sqrt(seasons))
    future[alias] = np.concatenate(points)
    width = np.concatenate(widths)
    for lv in level:
        z = NormalDist().inv_cdf(0.5 + lv / 200)
        lo, hi = interval_columns(alias, lv)
        future[lo], future[hi] = future[alias] - z * width, future[alias] + z * width
    return future
