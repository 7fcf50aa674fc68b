"""The forecasting command line (rnnkit forecast): fit and predict give the library's forecasts number for
number, evaluate prints the scores that score() gives, every mistake is one line that leaves nothing
behind, and without pandas the command says what to install."""
import contextlib
import io
import re

import numpy as np
import pytest
import torch

pd = pytest.importorskip("pandas")

from conftest import run_without  # noqa: E402
from rnnkit.cli import main  # noqa: E402
from rnnkit.commands import forecast as command  # noqa: E402
from rnnkit.forecast import (DECODERS, FILLS, LIKELIHOODS, RNNForecaster, load_panel, score,  # noqa: E402
                             season_length_for, seasonal_naive)

H, STEPS, SEED = 6, 30, 3                       # a fit of 30 steps: a trial of the command, seconds on one thread


def cli(argv):
    """``(status, stdout, stderr)`` of ``rnnkit argv`` run in this process (argparse's exits included)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main([str(a) for a in argv])
        except SystemExit as exit_:
            status = exit_.code
    return status, out.getvalue(), err.getvalue()


def monthly(months: int) -> pd.DataFrame:
    """Three monthly series with a yearly wave, at levels 10, 100 and 50."""
    t = np.arange(months)
    return pd.concat([pd.DataFrame({"unique_id": f"s{i}", "ds": pd.date_range("2020-01-01", periods=months, freq="MS"),
                                    "y": level * (1 + 0.3 * np.sin(2 * np.pi * t / 12 + i)) + 0.1 * t})
                      for i, level in enumerate((10.0, 100.0, 50.0))], ignore_index=True)


def read_forecasts(source) -> pd.DataFrame:
    return pd.read_csv(source, parse_dates=["ds"], dtype={"unique_id": str}, float_precision="round_trip")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                      # a small network: one thread is as fast, and never oversubscribed
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """``train.csv`` (36 months of each series) and ``full.csv`` (42: six more, the truth), and the model
    ``rnnkit forecast fit`` saved from ``train.csv`` with what it printed."""
    root = tmp_path_factory.mktemp("forecast")
    monthly(42).to_csv(root / "full.csv", index=False)
    monthly(36).to_csv(root / "train.csv", index=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        printed = cli(["forecast", "fit", "--data", root / "train.csv", "--horizon", H, "--steps", STEPS,
                       "--seed", SEED, "--out", root / "model"])
    finally:
        torch.set_num_threads(threads)
    return root, printed


# ----- what the commands compute -------------------------------------------------------------------------

def test_fit_and_predict_give_the_forecasts_the_library_gives(files, tmp_path):
    root, (status, out, err) = files
    assert status == 0, err
    assert out == (f"season length 12: monthly data (MS), 12 months a year; --season-length sets another\n"
                   f"saved to {root / 'model'}: 3 series, horizon 6 steps (MS); forecast with: rnnkit forecast "
                   f"predict {root / 'model'}\n")
    assert re.search(rf"fit 5/5: +\d+%.* \d+/{STEPS} \[", err), err           # the model's progress bar, 5 members
    status, out, err = cli(["forecast", "predict", root / "model", "--output", tmp_path / "forecasts.csv"])
    assert (status, out, err) == (0, f"wrote {tmp_path / 'forecasts.csv'}: 18 rows, 3 series x 6 steps\n", "")
    api = RNNForecaster(h=H, season_length=12, steps=STEPS, random_state=SEED, progress=False).fit(root / "train.csv")
    expected = api.predict(level=(80, 95))
    pd.testing.assert_frame_equal(read_forecasts(tmp_path / "forecasts.csv"), expected, check_exact=True)
    assert expected["ds"].min() == pd.Timestamp("2023-01-01") and len(expected) == 18
    status, out, _ = cli(["forecast", "predict", root / "model", "--level", "50", "90"])        # to standard output
    assert status == 0
    pd.testing.assert_frame_equal(read_forecasts(io.StringIO(out)), api.predict(level=(50, 90)), check_exact=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["forecasts.csv"]          # no temporary file left


def test_predict_from_another_history_forecasts_from_its_end(files):
    root, _ = files
    saved = read_forecasts(io.StringIO(cli(["forecast", "predict", root / "model"])[1]))
    status, out, err = cli(["forecast", "predict", root / "model", "--data", root / "train.csv"])
    assert status == 0, err
    pd.testing.assert_frame_equal(read_forecasts(io.StringIO(out)), saved)          # the same history: the same
    status, out, err = cli(["forecast", "predict", root / "model", "--data", root / "full.csv"])
    later = read_forecasts(io.StringIO(out))
    assert status == 0 and later["ds"].min() == pd.Timestamp("2023-07-01") and len(later) == 18
    assert not np.allclose(later["RNN"], saved["RNN"])


@pytest.mark.parametrize("windows", [1, 2])
def test_evaluate_prints_the_scores_of_score_beside_the_seasonal_naive_forecast(files, windows):
    root, _ = files
    status, out, err = cli(["forecast", "evaluate", root / "model", "--data", root / "full.csv",
                            "--windows", windows])
    assert status == 0, err
    model, panel = RNNForecaster.load(root / "model", progress=False), load_panel(root / "full.csv")
    backtest = model.cross_validation(panel.df, n_windows=windows, level=(80, 95))
    naive = []
    for cutoff in backtest["cutoff"].unique():
        known = panel.df[panel.df["ds"] <= cutoff]
        naive.append(seasonal_naive(load_panel(known), H, 12, level=(80, 95)).assign(cutoff=cutoff))
    both = backtest.merge(pd.concat(naive), on=["unique_id", "ds", "cutoff"])
    scores = score(both, panel.df, models=["RNN", "SeasonalNaive"], season_length=12, level=(80, 95))
    lines = out.splitlines()
    assert lines[0] == (f"3 series, {windows} window{'s' * (windows > 1)} of 6 steps (the last cutoff 2022-12-01); "
                        f"MASE against the seasonal naive forecast of season length 12")
    assert lines[1].split() == ["model", "MASE", "sMAPE", "scaled", "CRPS", "coverage-80", "coverage-95"]
    for line, (_, row) in zip(lines[2:4], scores.iterrows()):
        assert line.split() == [row["model"], f"{row['mase']:.3f}", f"{row['smape']:.2f}", f"{row['scaled_crps']:.4f}",
                                f"{row['coverage-80']:.1%}", f"{row['coverage-95']:.1%}"]
    assert [row["model"] for _, row in scores.iterrows()] == ["RNN", "SeasonalNaive"]
    assert len(lines[1]) == len(lines[2]) == len(lines[3])                                       # aligned
    notes = lines[4:]                    # the earlier window (cutoff 2022-06-01) forecasts months fitted on
    assert notes == ([] if windows == 1 else [
        "note: the model was fitted on steps that 1 of these 2 windows forecast, so the scores are in-sample; "
        "evaluate on data past the fitted history for a fair measure"])


def test_plot_writes_fan_charts_as_png(files, tmp_path):
    root, _ = files
    for argv in (["predict", root / "model", "--output", tmp_path / "f.csv", "--plot", tmp_path / "predict.png"],
                 ["evaluate", root / "model", "--data", root / "full.csv", "--plot", tmp_path / "evaluate.png",
                  "--plot-series", "2"]):
        status, _, err = cli(["forecast", *argv])
        assert status == 0, err
    for name in ("predict.png", "evaluate.png"):
        picture = (tmp_path / name).read_bytes()
        assert len(picture) > 1000 and picture.startswith(b"\x89PNG\r\n\x1a\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evaluate.png", "f.csv", "predict.png"]


@pytest.mark.parametrize("freq, length, why", [
    ("MS", 12, "monthly data (MS), 12 months a year"), ("QS-OCT", 4, "quarterly data (QS-OCT), 4 quarters a year"),
    ("W-SUN", 52, "weekly data (W-SUN), 52 weeks a year"), ("D", 7, "daily data (D), 7 days a week"),
    ("h", 24, "hourly data (h), 24 hours a day"), ("YS-JAN", 1, "yearly data (YS-JAN), no season within a year"),
    ("2h", 12, "hourly data in steps of 2 (2h), 12 steps a day"),
    ("5h", 1, "hourly data in steps of 5 (5h), no whole number of steps a day"),
    (1, 1, "ds counts steps, with no calendar to find a season in")])
def test_the_season_length_follows_the_frequency(freq, length, why):
    assert season_length_for(freq) == (length, why)


def test_the_command_offers_the_librarys_fills_and_likelihoods():
    assert (command.FILLS, command.LIKELIHOODS, command.DECODERS) == (FILLS, LIKELIHOODS, DECODERS)


# ----- mistakes ------------------------------------------------------------------------------------------

def _mistakes(root, tmp):
    model, train = root / "model", root / "train.csv"
    fit = ["forecast", "fit", "--data", train, "--horizon", H, "--steps", 2, "--out", tmp / "new"]
    return [
        (["forecast", "fit", "--data", tmp / "absent.csv", "--horizon", H, "--out", tmp / "new"],
         f"'{tmp / 'absent.csv'}' is not a file; pass the path of a CSV or Parquet file"),
        (["forecast", "fit", "--data", tmp / "table.txt", "--horizon", H, "--out", tmp / "new"],
         f"'{tmp / 'table.txt'}' is neither a CSV (.csv) nor a Parquet (.parquet) file; save the table as one of "
         f"them"),
        (["forecast", "fit", "--data", train, "--horizon", H, "--out", model],
         f"--out '{model}' exists; name a new folder (a model is saved whole, never over another)"),
        ([*fit[:5], 0, *fit[6:]], "horizon must be a positive integer, got 0; a forecast is at least one step ahead"),
        ([*fit, "--max-minutes", "0"], "--max-minutes must be in (0, inf), got 0.0"),
        ([*fit, "--seed", "-1"], "--seed must be a non-negative integer, got -1"),
        ([*fit, "--freq", "fortnightly"], "unknown frequency 'fortnightly'; use a pandas offset alias, e.g. 'D' "
                                          "(days), 'W' (weeks), 'MS' (months), 'QS' (quarters), 'YS' (years), 'h' "
                                          "(hours)"),
        ([*fit[:3], tmp / "extra.csv", *fit[4:]],
         "column(s) price are neither unique_id, ds, y nor a declared covariate; declare each as future, past or "
         "static (--future/--past/--static) or drop it"),
        (["forecast", "predict", tmp], f"'{tmp}' holds no saved forecaster (no config.json); pass the folder save() "
                                       f"wrote"),
        (["forecast", "predict", model, "--level", "80", "99"],
         "RNNForecaster: level 99 needs the 0.005 and 0.995 quantiles, which the model does not learn; choose levels "
         "among 50, 80, 90, 95"),
        (["forecast", "predict", model, "--data", tmp / "extra.csv"],
         "column(s) price are neither unique_id, ds, y nor a declared covariate; declare each as future, past or "
         "static (--future/--past/--static) or drop it"),
        (["forecast", "predict", model, "--future-data", tmp / "extra.csv"],
         "future covariates were given, but the model was fitted without any; drop X_df (--future-data), or refit "
         "declaring them"),
        (["forecast", "predict", model, "--output", tmp], f"--output '{tmp}' is a folder; name a file (forecasts.csv)"),
        (["forecast", "predict", model, "--plot", tmp / "chart.jpg"],
         f"--plot '{tmp / 'chart.jpg'}' does not end in .png; name the picture NAME.png"),
        (["forecast", "evaluate", model, "--data", tmp / "absent.csv"],
         f"'{tmp / 'absent.csv'}' is not a file; pass the path of a CSV or Parquet file"),
        (["forecast", "evaluate", model, "--data", tmp / "gap.csv"],
         "series 's0' has a gap in ds: after 2020-03-01 (row 3) comes 2020-05-01 (row 4), where 2020-04-01 was due; "
         "add the missing rows, or fill them (--fill previous/zero/linear)")]


def test_each_mistake_is_one_line_and_writes_nothing(files, tmp_path):
    root, _ = files
    (tmp_path / "table.txt").write_text("ds,y\n1,2\n")
    monthly(36).assign(price=1.0).to_csv(tmp_path / "extra.csv", index=False)
    monthly(42).drop(index=3).to_csv(tmp_path / "gap.csv", index=False)
    before = sorted(tmp_path.iterdir()), sorted((root / "model").iterdir())
    for argv, message in _mistakes(root, tmp_path):
        assert cli(argv) == (2, "", f"rnnkit forecast: error: {message}\n"), argv
    assert (sorted(tmp_path.iterdir()), sorted((root / "model").iterdir())) == before


@pytest.mark.parametrize("argv, message", [
    (["predict", "DIR", "--plot-series", "0"], "--plot-series must be at least 1, got 0"),
    (["evaluate", "DIR", "--data", "x.csv", "--windows", "0"], "--windows must be at least 1, got 0"),
    (["fit", "--data", "x.csv", "--horizon", "3", "--out", "o", "--likelihood", "poisson"],
     "argument --likelihood: invalid choice: 'poisson'"),
    ([], "the following arguments are required: ACTION")])
def test_usage_errors_are_argparse_s(argv, message):
    status, out, err = cli(["forecast", *argv])
    assert status == 2 and out == "" and message in err.splitlines()[-1]


def test_without_pandas_the_command_says_what_to_install():
    code = ("from rnnkit.cli import main\n"
            "print(main(['forecast', 'fit', '--data', 'x.csv', '--horizon', '3', '--out', 'o']))\n"
            "main(['--help'])\n")
    result = run_without("pandas", code)
    assert result.stderr == 'rnnkit forecast: error: forecasting needs pandas, which is not installed: pip install ' \
                            '"rnnkit[forecast]"\n'
    assert result.stdout.startswith("2\nusage: rnnkit") and "forecast  forecast tables of series" in result.stdout


# ----- covariates and likelihoods -----------------------------------------------------------------------

def test_future_covariates_go_in_at_fit_and_predict(tmp_path):
    table = monthly(36).assign(price=lambda d: 1.0 + (d["ds"].dt.month == 12))
    table.to_csv(tmp_path / "train.csv", index=False)
    future = pd.DataFrame({"unique_id": np.repeat(["s0", "s1", "s2"], H),
                           "ds": np.tile(pd.date_range("2023-01-01", periods=H, freq="MS"), 3), "price": 1.0})
    future.to_csv(tmp_path / "future.csv", index=False)
    status, _, err = cli(["forecast", "fit", "--data", tmp_path / "train.csv", "--horizon", H, "--steps", STEPS,
                          "--future", "price", "--out", tmp_path / "model", "--quiet"])
    assert status == 0, err
    assert cli(["forecast", "predict", tmp_path / "model"]) == (
        2, "", "rnnkit forecast: error: the model reads future covariates (price): pass their values for the 6 steps "
               "after each series' end as X_df (--future-data)\n")
    status, out, err = cli(["forecast", "predict", tmp_path / "model", "--future-data", tmp_path / "future.csv"])
    assert status == 0, err
    model = RNNForecaster.load(tmp_path / "model", progress=False)
    pd.testing.assert_frame_equal(read_forecasts(io.StringIO(out)), model.predict(X_df=future), check_exact=True)


def test_the_likelihood_decoder_and_ensemble_are_the_models(files, tmp_path):
    root, _ = files
    status, _, err = cli(["forecast", "fit", "--data", root / "train.csv", "--horizon", H, "--steps", 5,
                          "--likelihood", "normal", "--decoder", "autoregressive", "--ensemble", 2,
                          "--out", tmp_path / "model", "--quiet"])
    assert status == 0, err
    model = RNNForecaster.load(tmp_path / "model", progress=False)
    assert (model.config.likelihood, model.config.decoder, model.config.ensemble, len(model.networks)) == \
        ("normal", "autoregressive", 2, 2)
