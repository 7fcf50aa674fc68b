"""The forecaster's inputs, heads, decoders and cross-validation (rnnkit.forecast.features, heads, network,
model): each fast path against a slow twin, the intervals of a known process, and each misuse in one line."""
import re

import numpy as np
import pytest
import torch

pd = pytest.importorskip("pandas")

from rnnkit.forecast import load_panel, seasonal_naive  # noqa: E402
from rnnkit.forecast.features import Standardizer, encode, ordinals, periods  # noqa: E402
from rnnkit.forecast.heads import QUANTILES, empirical_quantiles, head  # noqa: E402
from rnnkit.forecast.model import RNNForecaster  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ar1_panel(count=60, n=120, phi=0.8, sigma=1.0, mean=20.0, seed=0):
    """AR(1) series around ``mean``: y_t - mean = phi (y_{t-1} - mean) + sigma e_t."""
    rng = np.random.default_rng(seed)
    y = np.empty((count, n))
    y[:, 0] = mean + rng.normal(size=count) * sigma / np.sqrt(1 - phi ** 2)
    for t in range(1, n):
        y[:, t] = mean + phi * (y[:, t - 1] - mean) + sigma * rng.normal(size=count)
    return pd.DataFrame({"unique_id": np.repeat([f"s{i}" for i in range(count)], n), "ds": np.tile(np.arange(n), count),
                         "y": y.reshape(-1)})


def covariate_panel(seed=0, count=20, n=60):
    """Monthly series whose level jumps by half on promotion months (a future covariate), with a static size."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        promo = (rng.random(n) < 0.3).astype(float)
        level = 50 + 10 * (i % 3)
        rows.append(pd.DataFrame({"unique_id": f"s{i}", "ds": pd.date_range("2001-01-01", periods=n, freq="MS"),
                                  "y": level * (1 + 0.5 * promo) + rng.normal(size=n), "promo": promo,
                                  "size": float(i % 3)}))
    return pd.concat(rows, ignore_index=True)


# ----- features --------------------------------------------------------------------------------

def test_the_calendar_counts_months_from_a_fixed_epoch_so_series_align():
    jan, jul = ordinals(pd.to_datetime(["1999-01-01", "2024-07-01"]), "MS")
    assert jan % 12 == 0 and jul % 12 == 6
    q = ordinals(pd.to_datetime(["2020-10-01", "2021-01-01"]), "QS-OCT")
    assert (q[0] % 4, q[1] % 4) == (3, 0)
    monday, sunday = ordinals(pd.to_datetime(["2024-01-01", "2024-01-07"]), "D")
    assert (monday % 7, sunday % 7) == (0, 6)
    assert periods("MS", 12) == (12.0,) and periods("D", 7) == (7.0, 365.25) and periods(1, 4) == (4.0,)
    assert periods(1, 1) == () and periods("h", 24) == (24.0, 168.0)


def test_windows_equal_a_loop_over_rows():
    """The one-gather windows against a loop that cuts each window row by row."""
    df = covariate_panel(count=3, n=30)
    df = df[~((df["unique_id"] == "s1") & (df["ds"] < "2001-09-01"))]             # a shorter series
    panel = load_panel(df, future=["promo"], static=["size"])
    std = Standardizer.fit(panel.df, ["promo", "size"])
    enc = encode(panel, 12, std)
    series, ends, context, h = np.array([0, 1, 2, 1]), np.array([5, 3, 20, 16]), 8, 4
    got = enc.windows(series, ends, context, h)
    for k, (i, e) in enumerate(zip(series, ends)):
        rows = enc.starts[i] + np.arange(e - context, e)
        for j, r in enumerate(rows):
            want = np.zeros(got["x"].shape[-1]) if r < enc.starts[i] else np.concatenate(
                [enc.values[r], enc.steps[r], enc.past[r]])
            np.testing.assert_array_equal(got["x"][k, j], want)
        np.testing.assert_array_equal(got["y"][k], enc.values[enc.starts[i] + e + np.arange(h), 0])
        np.testing.assert_array_equal(got["ahead"][k], enc.steps[enc.starts[i] + e + np.arange(h)])
    one = panel.df[panel.df["unique_id"] == "s1"]
    np.testing.assert_array_equal(enc.values[enc.starts[1]:enc.starts[1] + len(one), 0], one["y"])
    np.testing.assert_allclose(enc.static[:, 0], (np.array([0, 1, 2.0]) - std.mean["size"]) / std.std["size"])


# ----- heads -----------------------------------------------------------------------------------

def test_empirical_quantiles_equal_torch_quantile():
    draws = torch.randn(501, 7, 3, dtype=torch.float64)
    levels = [0.025, 0.1, 0.5, 0.9, 0.975]
    want = torch.quantile(draws, torch.tensor(levels, dtype=torch.float64), dim=0).movedim(0, -1)
    torch.testing.assert_close(empirical_quantiles(draws, levels, dim=0), want)


@pytest.mark.parametrize("likelihood", ["quantile", "normal", "studentt", "negbin"])
def test_every_head_gives_ordered_quantiles_near_its_distribution(likelihood):
    """Quantiles never cross; a normal head's are the normal's; about half the draws fall between the 25 and
    75 % quantiles."""
    torch.manual_seed(0)
    h = head(likelihood)
    raw = torch.randn(4, 5, h.n, dtype=torch.float64)
    scale = torch.full((4, 1), 7.0, dtype=torch.float64)
    levels = [0.05, 0.25, 0.5, 0.75, 0.95]
    q = h.quantiles(raw, scale, levels, torch.Generator().manual_seed(1))
    assert q.shape == (4, 5, 5) and (q.diff(dim=-1) >= 0).all()
    if likelihood == "normal":
        sd = (torch.nn.functional.softplus(raw[..., 1]) + 1e-3) * 7
        want = raw[..., 0] * 7 + sd * torch.distributions.Normal(0, 1).icdf(torch.tensor(0.95, dtype=torch.float64))
        torch.testing.assert_close(q[..., -1], want)
    if likelihood == "studentt":                    # scipy's inverse against a million draws
        dist = h.distribution(raw[:1, :1], scale[:1])
        draws = dist.sample((1_000_000,)).double()
        torch.testing.assert_close(q[0, 0], empirical_quantiles(draws, levels, dim=0)[0, 0], rtol=0.02, atol=0.02)
    draws = torch.stack([h.sample(raw, scale, torch.Generator().manual_seed(s)) for s in range(400)])
    closed = ((draws >= q[..., 1]) & (draws <= q[..., 3])).double().mean()
    open_ = ((draws > q[..., 1]) & (draws < q[..., 3])).double().mean()
    assert open_ <= 0.60 and closed >= 0.40         # the 25-75 % band holds about half (counts: atoms on its ends)


def test_the_negative_binomial_head_has_the_mean_it_says():
    h = head("negbin")
    raw = torch.tensor([[[0.3, -1.0]]], dtype=torch.float64)
    dist = h.distribution(raw, torch.tensor([[10.0]], dtype=torch.float64))
    want = torch.nn.functional.softplus(torch.tensor(0.3, dtype=torch.float64)) * 10 + 1e-6
    torch.testing.assert_close(dist.mean, want.reshape(1, 1), atol=1e-9, rtol=1e-9)
    dispersion = float(torch.nn.functional.softplus(torch.tensor(-1.0))) + 1e-4
    torch.testing.assert_close(dist.variance, (want + dispersion * want ** 2).reshape(1, 1), atol=1e-6, rtol=1e-6, check_dtype=False)


# ----- the model -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ar1_model():
    torch.set_num_threads(1)
    df = ar1_panel()
    return RNNForecaster(h=4, steps=600, likelihood="normal", context=16, ensemble=1, progress=False).fit(df), df


def test_intervals_of_an_ar1_process_cover_what_they_say(ar1_model):
    """Fresh AR(1) series (phi 0.8, sigma 1): the 80 % and 95 % intervals 4 steps ahead, scored over 6 windows
    of 60 new series, cover 74-86 % and 91-98 %; the exact intervals' half widths at step 1 and 4 are 1.28 and
    1.28 sqrt((1 - 0.8^8) / (1 - 0.8^2)) = 1.96, and the model's are within 20 % of them."""
    model, _ = ar1_model
    fresh = ar1_panel(seed=1)
    cv = model.cross_validation(fresh, n_windows=6, step_size=4, level=[80, 95])
    for lv, low, high in ((80, 0.74, 0.86), (95, 0.91, 0.98)):
        inside = ((cv["y"] >= cv[f"RNN-lo-{lv}"]) & (cv["y"] <= cv[f"RNN-hi-{lv}"])).mean()
        assert low <= inside <= high, (lv, inside)
    step = cv.groupby("unique_id").cumcount() % 4
    width = ((cv["RNN-hi-80"] - cv["RNN-lo-80"]) / 2).groupby(step).median()
    exact = 1.2816 * np.sqrt((1 - 0.8 ** (2 * np.arange(1, 5))) / (1 - 0.8 ** 2))
    np.testing.assert_allclose(width.to_numpy(), exact, rtol=0.2)


def test_scaling_round_trips(ar1_model):
    """The network reads values over their window's mean: a table 1,000 times larger gets forecasts and
    intervals 1,000 times larger."""
    model, df = ar1_model
    small = model.predict(level=[80])
    large = model.predict(level=[80], df=df.assign(y=df["y"] * 1000))
    for column in ("RNN", "RNN-lo-80", "RNN-hi-80"):
        np.testing.assert_allclose(large[column], 1000 * small[column], rtol=1e-5)


def test_cross_validation_equals_predict_on_the_table_cut_at_each_cutoff(ar1_model):
    """The batched pass over every window against one predict per window on the cut table."""
    model, df = ar1_model
    cv = model.cross_validation(n_windows=3, step_size=2, h=3, level=[80])
    assert list(cv.columns) == ["unique_id", "ds", "cutoff", "y", "RNN", "RNN-lo-80", "RNN-hi-80"]
    assert len(cv) == 60 * 3 * 3 and sorted(cv["cutoff"].unique()) == [112, 114, 116]
    for cutoff in (112, 114, 116):
        slow = model.predict(h=3, level=[80], df=df[df["ds"] <= cutoff])
        fast = cv[cv["cutoff"] == cutoff].drop(columns=["cutoff"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(fast.drop(columns=["y"]), slow, rtol=1e-5)
        np.testing.assert_array_equal(fast["y"], df.set_index(["unique_id", "ds"]).loc[
            list(zip(slow["unique_id"], slow["ds"])), "y"])


def test_a_future_covariate_is_read_and_a_saved_ensemble_predicts_the_same(tmp_path):
    """Promotions lift y by half: reading them as a future covariate cuts the error on held-out months
    (measured 0.30x the error without, bound 0.6x); an ensemble of two Student-t networks saved and loaded
    gives the same intervals; the first 3 steps' covariates are enough for a 3-step forecast."""
    df = covariate_panel()
    train, test = df.groupby("unique_id").head(52), df.groupby("unique_id").tail(8)
    kwargs = dict(h=8, season_length=12, steps=200, progress=False)
    plain = RNNForecaster(**kwargs, ensemble=1).fit(train.drop(columns=["promo", "size"]))
    told = RNNForecaster(**kwargs, likelihood="studentt", ensemble=2).fit(train, future=["promo"], static=["size"])
    future = test[["unique_id", "ds", "promo"]]
    error = {name: (f.merge(test, on=["unique_id", "ds"]).eval("abs(RNN - y)").mean())
             for name, f in (("plain", plain.predict()), ("told", told.predict(X_df=future)))}
    assert error["told"] <= 0.6 * error["plain"], error
    told.save(tmp_path / "m")
    again = RNNForecaster.load(tmp_path / "m", progress=False)
    pd.testing.assert_frame_equal(again.predict(X_df=future), told.predict(X_df=future))
    first = told.predict(h=3, X_df=future.groupby("unique_id").head(3))     # the first 3 steps' covariates suffice
    pd.testing.assert_frame_equal(first, told.predict(X_df=future).groupby("unique_id").head(3).reset_index(drop=True))


def test_the_log_transform_maps_the_quantiles_back_and_round_trips_the_scale():
    """log(1 + y/s): forecasts never negative, quantiles ordered, a table 1,000 times larger forecast 1,000
    times larger; the Scaler's inverse undoes it."""
    from rnnkit.forecast.network import Scaler
    y, s = torch.tensor([[0.0, 3.0, 250.0]], dtype=torch.float64), torch.tensor([[10.0]], dtype=torch.float64)
    torch.testing.assert_close(Scaler(log=True).inverse(Scaler(log=True)(y, s), s), y)
    df = covariate_panel(count=6, n=40).drop(columns=["promo", "size"])
    model = RNNForecaster(h=4, season_length=12, steps=60, transform="log", progress=False).fit(df)
    got = model.predict(level=[80, 95])
    ordered = ["RNN-lo-95", "RNN-lo-80", "RNN", "RNN-hi-80", "RNN-hi-95"]
    assert (got[ordered].to_numpy() >= 0).all() and (np.diff(got[ordered].to_numpy(), axis=1) >= 0).all()
    large = model.predict(level=[80, 95], df=df.assign(y=df["y"] * 1000))
    np.testing.assert_allclose(large[ordered].to_numpy(), 1000 * got[ordered].to_numpy(), rtol=1e-5)


def test_the_autoregressive_decoder_forecasts_from_sample_paths():
    df = ar1_panel(count=20, n=60)
    model = RNNForecaster(h=3, steps=100, likelihood="normal", decoder="autoregressive", ensemble=1,
                          progress=False).fit(df)
    got = model.predict(level=[80, 95])
    ordered = ["RNN-lo-95", "RNN-lo-80", "RNN", "RNN-hi-80", "RNN-hi-95"]
    assert len(got) == 60 and (np.diff(got[ordered].to_numpy(), axis=1) >= 0).all()
    pd.testing.assert_frame_equal(model.predict(level=[80, 95]), got)             # seeded: the same paths


def test_each_misuse_of_the_new_options_is_one_line():
    df = covariate_panel(count=2, n=30)
    fitted = RNNForecaster(h=2, steps=2, progress=False).fit(df, future=["promo"], static=["size"])
    counts = ar1_panel(count=2, n=20, mean=0.0)
    for call, error, message in [
            (lambda: RNNForecaster(h=2, likelihood="poisson"), ValueError,
             "RNNForecaster: likelihood must be one of quantile, normal, studentt, negbin, got 'poisson'"),
            (lambda: RNNForecaster(h=2, decoder="seq2seq"), ValueError,
             "RNNForecaster: decoder must be one of direct, autoregressive, got 'seq2seq'"),
            (lambda: RNNForecaster(h=2, likelihood="negbin").fit(counts), ValueError,
             f"series 's0', row {int(np.flatnonzero(counts['y'] < 0)[0]) + 1}: y is "
             f"{counts['y'][counts['y'] < 0].iloc[0]:g}; the negbin likelihood models counts, which are never "
             f"negative; choose a likelihood for real values (e.g. 'studentt') or fix y"),
            (lambda: RNNForecaster(h=2, decoder="autoregressive", likelihood="normal").fit(df, past=["promo"],
                                                                                           static=["size"]),
             ValueError, "RNNForecaster: the autoregressive decoder cannot read past covariates (promo), which are "
                         "unknown beyond each series' end; use decoder='direct' or declare them as future covariates"),
            (lambda: fitted.predict(), ValueError,
             "the model reads future covariates (promo): pass their values for the 2 steps after each series' end "
             "as X_df (--future-data)"),
            (lambda: fitted.cross_validation(n_windows=20), ValueError,
             "series 's0' has 30 observation(s); 20 window(s) of 2 steps, 2 apart, need at least 41; lower "
             "n_windows or h"),
            (lambda: RNNForecaster(h=2).cross_validation(df), RuntimeError,
             "RNNForecaster: call fit(df) before cross_validation()"),
            (lambda: RNNForecaster(h=2, transform="log").fit(counts), ValueError,
             "RNNForecaster: transform='log' needs series that are never negative, and a likelihood for real values "
             "(not negbin); use transform='none'"),
            (lambda: RNNForecaster(h=2, transform="sqrt"), ValueError,
             "RNNForecaster: transform must be one of none, log, got 'sqrt'"),
            (lambda: fitted.predict(level=[100]), ValueError,
             "RNNForecaster: level 100 needs the 0 and 1 quantiles, which the model does not learn; choose levels "
             "among 50, 80, 90, 95")]:
        with pytest.raises(error, match="^" + re.escape(message) + "$"):
            call()
    assert QUANTILES[4] == 0.5


def test_the_baseline_is_the_seasonal_naive_forecast_in_the_networks_units():
    """Network.baseline (one gather) against the rule written out: step k repeats the value one season
    before it, from the window's last season."""
    from rnnkit.forecast.network import Network
    net = Network(values=2, steps=0, past=0, static=0, h=7, outputs=3, hidden=8, layers=1, decoder="direct", season=3)
    x = torch.randn(2, 10, 2, dtype=torch.float64)
    want = torch.stack([x[:, 10 - 3 + (k % 3), 0] for k in range(7)], 1)
    torch.testing.assert_close(net.baseline(x), want)
    out = net.double()(x, torch.zeros(2, 7, 0, dtype=torch.float64), torch.zeros(2, 0, dtype=torch.float64))
    assert out.shape == (2, 7, 3)
    df = ar1_panel(count=4, n=40)
    model = RNNForecaster(h=5, season_length=4, steps=3, baseline=True, progress=False).fit(df)
    assert model.networks[0].season == 4 and len(model.predict()) == 20


def test_what_fit_leaves_to_the_data_is_chosen_afresh_for_each_table(monkeypatch):
    """season_length from the frequency, steps from the number of windows
    (20 passes, within 1,500-4,000); the settings as given stay as given."""
    import rnnkit.forecast.model as module
    steps, threads = [], []
    monkeypatch.setattr(module, "train", lambda *a, **k: steps.append(k["steps"]) or threads.append(
        torch.get_num_threads()))                                                        # no training: the choices
    model = RNNForecaster(h=4, ensemble=1, progress=False)
    model.fit(covariate_panel(count=3, n=30).drop(columns=["promo", "size"]))               # 78 windows
    assert (model.config.season_length, steps[-1]) == (12, 1500)
    model.fit(ar1_panel(count=300, n=100, mean=0.0))            # 28,800 windows: 20 x 28,800 / 128 = 4,500 > 4,000
    assert (model.config.season_length, steps[-1]) == (1, 4000)
    assert (model.settings.season_length, model.settings.steps) == (None, None)
    torch.set_num_threads(2)
    RNNForecaster(h=4, ensemble=1, progress=False).fit(ar1_panel(count=2, n=20))
    RNNForecaster(h=4, threads=None, ensemble=1, progress=False).fit(ar1_panel(count=2, n=20))
    assert threads[-2:] == [1, 2] and torch.get_num_threads() == 2          # one thread while fitting, then as before


def test_the_future_frame_and_the_seasonal_naive_forecast_take_plain_tables():
    df = covariate_panel(count=2, n=24)
    model = RNNForecaster(h=3, steps=2, progress=False).fit(df, future=["promo"], static=["size"])
    frame = model.make_future_dataframe()
    assert frame["ds"].dt.strftime("%Y-%m").tolist() == ["2003-01", "2003-02", "2003-03"] * 2
    assert len(model.make_future_dataframe(h=2, df=df[df["ds"] < "2002-06-01"])) == 4
    plain = df[["unique_id", "ds", "y"]]
    pd.testing.assert_frame_equal(seasonal_naive(plain, 3, 12), seasonal_naive(load_panel(plain), 3, 12))


def test_cross_validation_with_refitting_gives_the_same_table_as_without():
    """refit=True fits a fresh model on the table cut at each cutoff: the same rows, cutoffs and truth as
    the batched pass, and a forecast that is the cut model's own predict."""
    df = covariate_panel(count=3, n=30)
    model = RNNForecaster(h=3, season_length=12, steps=5, progress=False).fit(df, future=["promo"], static=["size"])
    fast = model.cross_validation(n_windows=2, h=2, step_size=3, level=[80])
    slow = model.cross_validation(n_windows=2, h=2, step_size=3, level=[80], refit=True)
    assert list(slow.columns) == list(fast.columns)
    pd.testing.assert_frame_equal(slow[["unique_id", "ds", "cutoff", "y"]], fast[["unique_id", "ds", "cutoff", "y"]])
    cut = df[df["ds"] <= slow["cutoff"].min()]
    again = RNNForecaster(h=3, season_length=12, steps=5, progress=False).fit(cut, future=["promo"], static=["size"])
    first = slow[slow["cutoff"] == slow["cutoff"].min()].drop(columns=["cutoff", "y"]).reset_index(drop=True)
    future = df[df["ds"] > slow["cutoff"].min()].groupby("unique_id").head(2)[["unique_id", "ds", "promo"]]
    pd.testing.assert_frame_equal(first, again.predict(h=2, level=[80], X_df=future))
