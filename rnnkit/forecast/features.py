"""What the forecaster reads at each step of a series, built once per table and cut into windows.

Every series of a :class:`~rnnkit.forecast.data.Panel` is laid end to end in one array (the rows of
``panel.df`` in order), optionally followed by ``extra`` rows per series for the steps to forecast.
For each row the :class:`Encoded` table holds:

- ``values``: ``y`` (0 in the rows to forecast) and ``observed`` (1 where ``y`` is known);
- ``steps``: what is known ahead for that step: the **calendar** (a sine and a cosine of the step's
  place in each period of :func:`periods`, counted from a fixed epoch, so series that start in
  different months are aligned where ``ds`` holds dates) and the **future covariates**;
- ``past``: the past covariates (0 in the rows to forecast);
- ``static``: the static covariates, one row per series.

Covariates are standardized with the mean and standard deviation of the table the model was fitted
on (:class:`Standardizer`), so a price in thousands and a flag in 0/1 weigh alike.

:meth:`Encoded.windows` cuts, for a list of ``(series, end)`` pairs, the ``context`` rows before
``end`` (padded on the left where the series is shorter) and the ``h`` rows from ``end``: one
gather for the whole batch, no loop over windows.
"""
from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral

import numpy as np
import pandas as pd

from .data import ID, TARGET, TIME, Panel

__all__ = ["season_length_for", "periods", "ordinals", "Standardizer", "Encoded", "encode"]

# the calendar's own periods, by the frequency's kind (besides the season length the user gives)
_CALENDAR = {"month": (12,), "quarter": (4,), "week": (52.1775,), "day": (7, 365.25), "hour": (24, 168),
             "minute": (60, 1440), "second": (60,)}


# the calendar's seasons: a frequency's offset alias (its part before "-") -> (the data's adjective, the
# step's name, steps in a season, the season's name)
_YEARLY, _QUARTERLY = ("yearly", "year", 1, "year"), ("quarterly", "quarter", 4, "year")
_MONTHLY = ("monthly", "month", 12, "year")
CALENDAR = {**dict.fromkeys(("Y", "YS", "YE", "A", "AS", "BY", "BYS", "BYE", "BA", "BAS"), _YEARLY),
            **dict.fromkeys(("Q", "QS", "QE", "BQ", "BQS", "BQE"), _QUARTERLY),
            **dict.fromkeys(("M", "MS", "ME", "BM", "BMS", "BME", "CBMS", "CBME"), _MONTHLY),
            "W": ("weekly", "week", 52, "year"), "D": ("daily", "day", 7, "week"),
            "B": ("business-daily", "business day", 5, "week"), "h": ("hourly", "hour", 24, "day"),
            "min": ("minutely", "minute", 60, "hour"), "s": ("secondly", "second", 60, "minute")}


def season_length_for(freq) -> tuple:
    """``(steps in a season, why in words)`` for data of frequency ``freq`` (a pandas offset alias, or the
    step of integer ``ds``): the calendar's cycle one step longer than a step (a year of months, a week of
    days, a day of hours)."""
    if not isinstance(freq, str):
        return 1, "ds counts steps, with no calendar to find a season in"
    offset = pd.tseries.frequencies.to_offset(freq)
    found = CALENDAR.get(offset.name.split("-")[0])
    if found is None:
        return 1, f"no calendar season is known for the frequency {freq}"
    adjective, step, count, season = found
    if count == 1:
        return 1, f"{adjective} data ({freq}), no season within a {season}"
    if offset.n == 1:
        return count, f"{adjective} data ({freq}), {count} {step}s a {season}"
    if count % offset.n:
        return 1, f"{adjective} data in steps of {offset.n} ({freq}), no whole number of steps a {season}"
    return count // offset.n, f"{adjective} data in steps of {offset.n} ({freq}), {count // offset.n} steps a {season}"


def _kind(freq) -> str | None:
    """``"month"``, ``"quarter"``, ``"year"``, ``"week"``, ``"day"``, ``"hour"``, ``"minute"``, ``"second"`` or
    None (integer steps, or an offset without a calendar meaning, such as business days)."""
    if isinstance(freq, Integral):
        return None
    offset = pd.tseries.frequencies.to_offset(freq)
    name = type(offset).__name__
    for kind, names in (("month", ("MonthBegin", "MonthEnd")), ("quarter", ("QuarterBegin", "QuarterEnd")),
                        ("year", ("YearBegin", "YearEnd")), ("week", ("Week",)), ("day", ("Day",)),
                        ("hour", ("Hour",)), ("minute", ("Minute",)), ("second", ("Second",))):
        if name in names:
            return kind
    return None


def periods(freq, season_length: int) -> tuple:
    """The periods whose phase the model reads: the season length (where above 1) and the calendar's own
    (a year of months or quarters, a week and a year of days, a day and a week of hours, ...)."""
    found = [float(season_length)] if season_length > 1 else []
    for p in _CALENDAR.get(_kind(freq), ()):
        if all(abs(p - q) > 1e-9 for q in found):
            found.append(float(p))
    return tuple(found)


def ordinals(ds, freq) -> np.ndarray:
    """The steps of ``freq`` from a fixed epoch to each ``ds`` (floats): for months, ``12 year + month``;
    for fixed-length offsets, the elapsed time over the step; integers as they are. None where ``ds``'s
    frequency has no calendar (the caller then counts from each series' first step)."""
    kind = _kind(freq)
    if isinstance(freq, Integral):
        return np.asarray(ds, dtype=np.float64) / freq
    dates = pd.DatetimeIndex(ds)
    if kind == "month":
        return (12 * dates.year + dates.month - 1).to_numpy(np.float64)
    if kind == "quarter":
        return (4 * dates.year + (dates.month - 1) // 3).to_numpy(np.float64)
    if kind == "year":
        return dates.year.to_numpy(np.float64)
    unit = {"week": 7 * 86400, "day": 86400, "hour": 3600, "minute": 60, "second": 1}.get(kind)
    if unit is None:
        return None
    seconds = (dates - pd.Timestamp("1970-01-05")).total_seconds().to_numpy()       # a Monday: weeks align
    return seconds / unit


def _phases(steps: np.ndarray, periods_: tuple) -> np.ndarray:
    """A sine and a cosine of ``steps``' place in each period: ``(len(steps), 2 len(periods_))``."""
    if not periods_:
        return np.zeros((len(steps), 0))
    angle = 2 * np.pi * (np.asarray(steps)[:, None] % np.asarray(periods_)) / np.asarray(periods_)
    return np.concatenate([np.sin(angle), np.cos(angle)], axis=1)


@dataclass
class Standardizer:
    """Each covariate's mean and standard deviation on the fitted table (1 where it is constant)."""
    mean: dict
    std: dict

    @classmethod
    def fit(cls, df: pd.DataFrame, columns) -> "Standardizer":
        mean = {c: float(df[c].astype(float).mean()) for c in columns}
        std = {c: float(df[c].astype(float).std(ddof=0)) or 1.0 for c in columns}
        return cls(mean, std)

    def __call__(self, df: pd.DataFrame, columns) -> np.ndarray:
        if not columns:
            return np.zeros((len(df), 0))
        return np.stack([(df[c].to_numpy(np.float64) - self.mean[c]) / self.std[c] for c in columns], axis=1)


@dataclass
class Encoded:
    """The rows of every series end to end (see the module's text): ``starts[i]`` is series ``i``'s first
    row, ``lengths[i]`` its observed rows; ``extra`` rows to forecast follow each."""
    values: np.ndarray          # (rows, 2): y, observed
    steps: np.ndarray           # (rows, S): calendar phases and future covariates
    past: np.ndarray            # (rows, P)
    static: np.ndarray          # (series, C)
    starts: np.ndarray
    lengths: np.ndarray
    extra: int

    def windows(self, series: np.ndarray, ends: np.ndarray, context: int, h: int) -> dict:
        """The inputs of the windows ending before row ``ends[k]`` of series ``series[k]`` (``ends`` counted
        from the series' first row): ``x`` (B, context, 2 + S + P) the context rows (y, observed, steps,
        past; zero where before the series' start), ``ahead`` (B, h, S) the steps of the ``h`` rows from
        ``end``, ``y`` (B, h) their values, ``known`` (B, h) whether those were observed, ``static``."""
        series, ends = np.asarray(series), np.asarray(ends)
        offsets = np.arange(-context, 0)[None, :] + ends[:, None]                       # (B, context)
        inside = offsets >= 0
        rows = self.starts[series][:, None] + np.where(inside, offsets, 0)
        x = np.concatenate([self.values[rows], self.steps[rows], self.past[rows]], axis=-1)
        x[~inside] = 0.0
        ahead_rows = self.starts[series][:, None] + ends[:, None] + np.arange(h)[None, :]
        span = self.lengths[series] + self.extra
        ahead_rows = np.minimum(ahead_rows, (self.starts[series] + span - 1)[:, None])
        return {"x": x, "ahead": self.steps[ahead_rows], "y": self.values[ahead_rows, 0],
                "known": self.values[ahead_rows, 1], "static": self.static[series]}


def encode(panel: Panel, season_length: int, standardizer: Standardizer, *, extra: int = 0,
           future: pd.DataFrame | None = None) -> Encoded:
    """The :class:`Encoded` table of ``panel`` with ``extra`` rows to forecast after each series; ``future``
    holds their future covariates (``unique_id, ds`` and the columns, in :meth:`Panel.future_frame`'s
    order), where the panel has any."""
    cov = panel.covariates
    df = panel.df
    if extra:
        ahead = panel.future_frame(extra) if future is None else future.copy()
        ahead[TARGET] = 0.0
        for column in (*cov.past, *cov.static):
            ahead[column] = df.groupby(ID, sort=False)[column].last().reindex(ahead[ID]).to_numpy() \
                if column in cov.static else 0.0
        ahead["_order"] = np.repeat(np.arange(len(panel.ids)), extra)
        df = df.assign(_order=df.groupby(ID, sort=False).ngroup(), _observed=1.0)
        ahead["_observed"] = 0.0
        df = pd.concat([df, ahead[df.columns]], ignore_index=True).sort_values("_order", kind="stable")
    else:
        df = df.assign(_observed=1.0)
    lengths = panel.lengths().to_numpy()
    starts = np.concatenate([[0], np.cumsum(lengths + extra)[:-1]])
    steps = ordinals(df[TIME].to_numpy(), panel.freq)
    if steps is None:                                       # no calendar: count from each series' first step
        steps = np.concatenate([np.arange(n + extra) for n in lengths]).astype(np.float64)
    calendar = _phases(steps, periods(panel.freq, season_length))
    values = np.stack([df[TARGET].to_numpy(np.float64), df["_observed"].to_numpy(np.float64)], axis=1)
    static = standardizer(df.groupby(ID, sort=False).first(), cov.static) if cov.static else \
        np.zeros((len(lengths), 0))
    return Encoded(values=values, steps=np.concatenate([calendar, standardizer(df, cov.future)], axis=1),
                   past=standardizer(df, cov.past), static=static, starts=starts, lengths=lengths, extra=extra)
