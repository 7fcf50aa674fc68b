"""The forecasting measures (rnnkit.forecast.metrics) on series small enough to score by hand, and the
seasonal naive baseline's forecasts and intervals written out."""
from statistics import NormalDist

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

from rnnkit.forecast import load_panel  # noqa: E402
from rnnkit.forecast.metrics import score, seasonal_naive  # noqa: E402


def frames():
    train = pd.DataFrame({"unique_id": ["a"] * 6 + ["b"] * 6, "ds": list(range(1, 7)) * 2,
                          "y": [1.0, 2, 3, 4, 5, 6, 0, 1, 0, 1, 0, 3]})
    test = pd.DataFrame({"unique_id": ["a", "a", "b", "b"], "ds": [7, 8, 7, 8], "y": [8.0, 10, 1, 1],
                         "M": [7.0, 10, 0, 2], "M-lo-80": [6.0, 9.5, -1, 1], "M-hi-80": [7.5, 11, 0.5, 3]})
    return train, test


def test_smape_mase_and_coverage_are_the_competitions_averaged_over_series():
    train, test = frames()
    got = score(test, train, models=["M"], season_length=2, level=[80]).set_index("model").loc["M"]
    # a: sMAPE 200/2 (1/15 + 0) = 6.667, MASE (1 + 0)/2 over the in-sample |y_t - y_(t-2)| = 2: 0.25
    # b: sMAPE 200/2 (1/1 + 1/3) = 133.33, MASE (1 + 1)/2 over (0 + 0 + 0 + 2)/4 = 0.5: 2.0
    assert got["smape"] == pytest.approx((200 / 2 * (1 / 15) + 200 / 2 * (1 + 1 / 3)) / 2, rel=1e-12)
    assert got["mase"] == pytest.approx((0.25 + 2.0) / 2, rel=1e-12)
    # a: 8 above [6, 7.5], 10 inside [9.5, 11]; b: 1 above [-1, 0.5], 1 on [1, 3]'s bound (inside)
    assert got["coverage-80"] == pytest.approx((0.5 + 0.5) / 2, rel=1e-12)


def test_the_scaled_crps_is_twice_the_mean_quantile_loss_over_the_sum_of_absolute_values():
    train, test = frames()
    got = score(test, train, models=["M"], season_length=2, level=[80]).set_index("model").loc["M", "scaled_crps"]
    quantiles = {"M-lo-80": 0.1, "M": 0.5, "M-hi-80": 0.9}

    def pinball(q, y, f):
        u = y - f
        return np.maximum(q * u, (q - 1) * u)
    per_series = []
    for _, s in test.groupby("unique_id"):
        loss = np.mean([pinball(q, s["y"].to_numpy(), s[c].to_numpy()) for c, q in quantiles.items()], axis=0)
        per_series.append(2 * loss.sum() / np.abs(s["y"]).sum())
    assert got == pytest.approx(np.mean(per_series), rel=1e-9)
    perfect = test.assign(**{c: test["y"] for c in quantiles})
    assert score(perfect, train, models=["M"], season_length=2, level=[80])["scaled_crps"].iloc[0] == 0.0


def test_windows_are_scored_apart_each_against_what_was_known_at_its_cutoff():
    train, test = frames()
    full = pd.concat([train, test[["unique_id", "ds", "y"]]]).sort_values(["unique_id", "ds"], ignore_index=True)
    early = test.assign(ds=test["ds"] - 2, y=full.set_index(["unique_id", "ds"]).loc[
        list(zip(test["unique_id"], test["ds"] - 2)), "y"].to_numpy(), cutoff=4)
    both = pd.concat([early, test.assign(cutoff=6)], ignore_index=True)
    got = score(both, full, models=["M"], season_length=1, level=[80]).set_index("model").loc["M"]
    one = [score(w.drop(columns="cutoff", errors="ignore"), full[full["ds"] <= c], models=["M"], season_length=1,
                 level=[80]) for c, w in ((4, early), (6, test))]
    assert np.isfinite(got.to_numpy(dtype=float)).all()
    for measure in ("smape", "mase", "coverage-80", "scaled_crps"):
        assert got[measure] == pytest.approx((one[0][measure].iloc[0] + one[1][measure].iloc[0]) / 2, rel=1e-12)


def test_score_names_the_columns_it_lacks():
    train, test = frames()
    with pytest.raises(ValueError, match="^the forecasts lack column\\(s\\) M-lo-95, M-hi-95$"):
        score(test, train, models=["M"], season_length=2, level=[80, 95])


def test_the_seasonal_naive_forecast_repeats_the_last_season_with_intervals_widening_by_season():
    panel = load_panel(pd.DataFrame({"ds": range(8), "y": [1.0, 2, 3, 4, 5, 6, 7, 8]}))
    got = seasonal_naive(panel, 6, 4, level=[80, 95])
    assert got["ds"].tolist() == [8, 9, 10, 11, 12, 13]
    assert got["SeasonalNaive"].tolist() == [5.0, 6, 7, 8, 5, 6]
    sigma = 4.0                                                          # every in-sample error y_t - y_(t-4) is 4
    for level in (80, 95):
        z = NormalDist().inv_cdf(0.5 + level / 200)
        width = z * sigma * np.sqrt([1, 1, 1, 1, 2, 2])
        np.testing.assert_allclose(got[f"SeasonalNaive-hi-{level}"] - got["SeasonalNaive"], width, rtol=1e-12)
        np.testing.assert_allclose(got["SeasonalNaive"] - got[f"SeasonalNaive-lo-{level}"], width, rtol=1e-12)
    short = seasonal_naive(load_panel(pd.DataFrame({"ds": range(3), "y": [1.0, 3, 2]})), 2, 12, level=[80])
    assert short["SeasonalNaive"].tolist() == [2.0, 2.0]                # under two seasons: the last value
    z = NormalDist().inv_cdf(0.9)
    np.testing.assert_allclose(short["SeasonalNaive-hi-80"] - 2.0, z * np.sqrt(2.5) * np.sqrt([1, 2]), rtol=1e-12)
