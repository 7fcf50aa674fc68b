"""``rnnkit forecast``: forecasting tables of series from the command line, with :mod:`rnnkit.forecast`.

Three actions: ``fit`` learns an :class:`~rnnkit.forecast.RNNForecaster` from a table and saves it to a
folder, ``predict`` writes its forecasts as CSV, and ``evaluate`` backtests it on a table that holds the
truth, beside the seasonal naive forecast. pandas and the library are imported only once an action
runs, so that ``rnnkit --help`` works without the forecast extra.
"""
from __future__ import annotations

import shlex
from pathlib import Path

from .._arguments import check_int, check_number
from ._common import output_file, picture_file, run_action, write_output

HELP = "forecast tables of series: fit a model, predict, evaluate"
DESCRIPTION = ("Forecast many series at once with one recurrent network (rnnkit.forecast.RNNForecaster). A table "
               "is a CSV or Parquet file in the long format: unique_id (which series; a file of one series may "
               "leave it out), ds (dates or integer steps), y (the values), and covariate columns declared with "
               "--future, --past or --static. fit learns a model and saves it to a folder, predict writes its "
               "forecasts and intervals as CSV, evaluate backtests it against the seasonal naive forecast. Needs "
               "pip install \"rnnkit[forecast]\" (and \"rnnkit[plot]\" for --plot).")
EPILOG = ("example: rnnkit forecast fit --data sales.csv --horizon 12 --out runs/sales && "
          "rnnkit forecast predict runs/sales --output forecasts.csv --plot forecasts.png")
AT_LEAST_ONE = ("season_length", "steps", "windows", "plot_series", "ensemble")

ID, TIME, TARGET = "unique_id", "ds", "y"          # the long format's columns (rnnkit.forecast.data's names)
FILLS = ("previous", "zero", "linear")            # rnnkit.forecast.FILLS, named here without importing pandas
LIKELIHOODS = ("quantile", "normal", "studentt", "negbin")  # rnnkit.forecast.LIKELIHOODS, likewise
DECODERS = ("direct", "autoregressive")           # rnnkit.forecast.DECODERS, likewise
NAIVE = "SeasonalNaive"
EXTRA = ("pandas", "pyarrow", "utilsforecast", "scipy")    # the forecast extra



def add_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    fit = actions.add_parser("fit", help="learn a forecaster from a table and save it to a folder",
                             description="Learn one recurrent forecaster from every series of a table and save it "
                                         "(settings, weights and the series) to a new folder, all or nothing.")
    _data(fit, "the table of series to learn from (.csv or .parquet)")
    fit.add_argument("--horizon", type=int, required=True, metavar="H", help="steps to forecast")
    fit.add_argument("--freq", metavar="F", help="the frequency of ds: a pandas offset alias (D, W, MS, QS, YS, h) "
                     "or, for integer ds, the step between them (default: inferred)")
    fit.add_argument("--season-length", type=int, metavar="M", help="steps in a season (default: from the "
                     "frequency: monthly 12, quarterly 4, weekly 52, daily 7, hourly 24, yearly or integer ds 1)")
    _fill(fit)
    for kind, meaning in (("future", "known ahead, such as prices or holidays; predict needs their values for the "
                                     "steps it forecasts (--future-data)"),
                          ("past", "known only up to the last observation, such as a measured temperature"),
                          ("static", "that hold one value per series, such as a store's type")):
        fit.add_argument(f"--{kind}", nargs="+", action="extend", default=[], metavar="COLUMN",
                         help=f"covariate columns {meaning}")
    fit.add_argument("--likelihood", choices=LIKELIHOODS, help="what the network's outputs describe: quantiles, or "
                     "a normal, Student-t or negative binomial (counts) distribution (default: the model's)")
    fit.add_argument("--decoder", choices=DECODERS, help="direct: every step ahead at once (the default); "
                     "autoregressive: sample paths, each draw fed back")
    fit.add_argument("--ensemble", type=int, metavar="K", help="networks from K seeds, their quantiles averaged "
                     "(default: the model's)")
    fit.add_argument("--max-minutes", type=float, metavar="X", help="stop training after X minutes")
    fit.add_argument("--steps", type=int, metavar="N", help="training steps (default: the model's rule, from "
                     "the table's size); a few "
                     "dozen make a quick trial of the command, not a useful model")
    fit.add_argument("--seed", type=int, default=0, help="the random seed: the same data, seed and steps give the "
                     "same model")
    fit.add_argument("--out", required=True, metavar="DIR", help="the folder to save the model to (must not exist)")
    fit.add_argument("--quiet", action="store_true", help="no progress bar")

    predict = actions.add_parser("predict", help="forecast with a saved model, as CSV",
                                 description="Forecast the steps after each series' end with a saved model: CSV "
                                             "with unique_id, ds, the point forecast and each interval's bounds "
                                             "(MODEL-lo-80, MODEL-hi-80, ...).")
    predict.add_argument("model_dir", metavar="DIR", help="the folder rnnkit forecast fit saved")
    _data(predict, "forecast from the end of this table's series instead of the history the model was fitted on",
          required=False)
    predict.add_argument("--future-data", metavar="FILE", help="the future covariates' values for the forecast "
                         "steps: unique_id, ds and each --future column")
    _fill(predict)
    _levels(predict)
    predict.add_argument("--output", metavar="FILE", help="write the CSV here (default: standard output)")
    _plot(predict, "fan charts of the forecasts")

    evaluate = actions.add_parser("evaluate", help="backtest a saved model against the seasonal naive forecast",
                                  description="Backtest a saved model on a table that holds the history and the "
                                              "truth: forecasts from each of the last K cutoffs (without "
                                              "retraining), scored beside the seasonal naive forecast of the same "
                                              "windows by MASE, sMAPE (0-200), the scaled CRPS and each interval's "
                                              "coverage, averaged over series and windows.")
    evaluate.add_argument("model_dir", metavar="DIR", help="the folder rnnkit forecast fit saved")
    _data(evaluate, "the history and the truth (.csv or .parquet)")
    evaluate.add_argument("--windows", type=int, default=1, metavar="K", help="backtest windows: cutoffs "
                          "one horizon apart, the last one horizon before each series' end (default 1)")
    _fill(evaluate)
    _levels(evaluate)
    _plot(evaluate, "fan charts of the last window, with the truth")


def _data(parser, meaning: str, required: bool = True) -> None:
    parser.add_argument("--data", required=required, metavar="FILE", help=meaning)


def _fill(parser) -> None:
    parser.add_argument("--fill", choices=FILLS, help="fill gaps in ds: with the value before, zero, or a straight "
                        "line between the two sides (default: a gap is an error)")


def _levels(parser) -> None:
    parser.add_argument("--level", type=int, nargs="+", default=[80, 95], metavar="L",
                        help="the intervals, in percent (default: 80 95)")


def _plot(parser, what: str) -> None:
    parser.add_argument("--plot", metavar="PNG", help=f"write {what} to this PNG file (needs matplotlib)")
    parser.add_argument("--plot-series", type=int, default=12, metavar="N", help="series in the picture, the first "
                        "N (default 12)")


def run(args) -> int:
    return run_action(args, {"fit": _fit, "predict": _predict, "evaluate": _evaluate}, {name: name for name in EXTRA},
                      "forecasting", 'pip install "rnnkit[forecast]"')


# ----- the actions ---------------------------------------------------------------------------------------

def _fit(args) -> int:
    from ..forecast import RNNForecaster, check_horizon, load_panel, season_length_for

    horizon = check_horizon(args.horizon)
    seed = check_int("", "--seed", args.seed, 0)
    minutes = None if args.max_minutes is None else check_number(
        "", "--max-minutes", args.max_minutes, low=0.0, low_closed=False, high_closed=False)
    out = Path(args.out)
    if out.exists():                                     # said before the fit, not after it
        raise ValueError(f"--out '{out}' exists; name a new folder (a model is saved whole, never over another)")
    covariates = {kind: tuple(getattr(args, kind)) for kind in ("future", "past", "static")}
    panel = load_panel(args.data, freq=_freq(args.freq), fill=args.fill, **covariates)
    season_length = args.season_length
    if season_length is None:
        season_length, why = season_length_for(panel.freq)
        print(f"season length {season_length}: {why}; --season-length sets another")
    chosen = {name: value for name, value in (("likelihood", args.likelihood), ("steps", args.steps),
                                              ("decoder", args.decoder), ("ensemble", args.ensemble))
              if value is not None}                      # else the model's defaults
    model = RNNForecaster(horizon, season_length, max_minutes=minutes, random_state=seed, progress=not args.quiet,
                          **chosen)
    model.fit(panel)
    model.save(out)
    print(f"saved to {out}: {len(panel.ids)} series, horizon {horizon} steps ({panel.freq}); forecast with: "
          f"rnnkit forecast predict {shlex.quote(str(out))}")
    return 0


def _predict(args) -> int:
    levels, picture = sorted(set(args.level)), picture_file(args.plot)
    output = output_file(args.output, "forecasts.csv")
    model = _load(args.model_dir)
    history = None if args.data is None else model.read_like(args.data, fill=args.fill)
    forecasts = model.predict(level=levels, X_df=args.future_data, df=history)
    if picture is not None:
        _draw(model, (model.panel if history is None else history).df, forecasts, levels, args.plot_series, picture)
    write_output(forecasts.to_csv(index=False), output,
                 f"{len(forecasts)} rows, {forecasts[ID].nunique()} series x {model.config.h} steps")
    return 0


def _evaluate(args) -> int:
    from ..forecast import score

    levels, picture = sorted(set(args.level)), picture_file(args.plot)
    model = _load(args.model_dir)
    c = model.config
    panel = model.read_like(args.data, fill=args.fill)
    backtest = model.cross_validation(panel, n_windows=args.windows, level=levels)
    both = backtest.merge(_naive_windows(panel, backtest, c.h, c.season_length, levels), on=[ID, TIME, "cutoff"],
                          how="left")
    scores = score(both, panel.df, models=[c.alias, NAIVE], season_length=c.season_length, level=levels)
    windows = backtest["cutoff"].nunique()
    print(f"{len(panel.ids)} series, {windows} window{'s' * (windows > 1)} of {c.h} steps (the last cutoff "
          f"{_show(backtest['cutoff'].max())}); MASE against the seasonal naive forecast of season length "
          f"{c.season_length}")
    print(_table(scores))
    fitted_end = backtest[ID].map(model.panel.df.groupby(ID)[TIME].max())
    inside = backtest.loc[backtest[TIME] <= fitted_end, "cutoff"].nunique()
    if inside:
        print(f"note: the model was fitted on steps that {inside} of these {windows} window{'s' * (windows > 1)} "
              f"forecast, so the scores are in-sample; evaluate on data past the fitted history for a fair measure")
    if picture is not None:
        last = backtest[backtest["cutoff"] == backtest.groupby(ID)["cutoff"].transform("max")]
        before = panel.df[panel.df[TIME] <= panel.df[ID].map(last.groupby(ID)["cutoff"].first())]
        _draw(model, before, last, levels, args.plot_series, picture, truth=last)
    return 0


# ----- the parts --------------------------------------------------------------------------------------

def _freq(text):
    """``--freq`` as load_panel takes it: an integer step for integer ``ds``, else an offset alias."""
    return int(text) if text is not None and text.isdigit() else text


def _load(folder):
    from ..forecast import RNNForecaster

    return RNNForecaster.load(folder, progress=False)


def _naive_windows(panel, backtest, h: int, season_length: int, levels):
    """The seasonal naive forecasts of ``backtest``'s windows: each series cut at each of its cutoffs."""
    import pandas as pd

    from ..forecast import load_panel, seasonal_naive

    parts = []
    for cutoff, ids in backtest.drop_duplicates([ID, "cutoff"]).groupby("cutoff")[ID]:
        known = panel.df[panel.df[ID].isin(ids) & (panel.df[TIME] <= cutoff)][[ID, TIME, TARGET]]
        naive = seasonal_naive(load_panel(known, freq=panel.freq), h, season_length, level=levels, alias=NAIVE)
        parts.append(naive.assign(cutoff=cutoff))
    return pd.concat(parts, ignore_index=True)


def _table(scores) -> str:
    """The scores as an aligned table, a row per model."""
    columns = [("MASE", "mase", "{:.3f}"), ("sMAPE", "smape", "{:.2f}"), ("scaled CRPS", "scaled_crps", "{:.4f}"),
               *((name, name, "{:.1%}") for name in scores.columns if name.startswith("coverage-"))]
    columns = [column for column in columns if column[1] in scores.columns]
    rows = [["model", *(title for title, _, _ in columns)]]
    rows += [[str(row["model"]), *(form.format(row[key]) for _, key, form in columns)] for _, row in scores.iterrows()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join([row[0].ljust(widths[0]), *(cell.rjust(w) for cell, w in zip(row[1:], widths[1:]))])
                     for row in rows)


def _draw(model, history_df, forecasts, levels, series: int, path, truth=None) -> None:
    from ..forecast.plots import plot_forecasts

    c = model.config
    plot_forecasts(history_df, forecasts, alias=c.alias, level=levels, truth_df=truth, max_series=series,
                   history=3 * max(c.season_length, c.h), path=path)


def _show(ds) -> str:
    """A cutoff as people write it: a date without a midnight time."""
    import pandas as pd

    if isinstance(ds, pd.Timestamp) and ds == ds.normalize():
        return str(ds.date())
    return str(ds)
