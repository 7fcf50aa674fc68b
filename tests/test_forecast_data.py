"""Series in the long format (rnnkit.forecast.data): the same panel from a DataFrame, a CSV and a
Parquet file; frequencies inferred and checked; gaps refused or filled; and every bad input refused in
one line naming the series and the row, word for word."""
import re

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

from conftest import run_without  # noqa: E402
from rnnkit.forecast import Covariates, check_counts, check_future, check_horizon, load_panel  # noqa: E402


def monthly(n=5, ids=("a", "b"), start="2024-01-01"):
    dates = pd.date_range(start, periods=n, freq="MS")
    return pd.DataFrame({"unique_id": np.repeat(ids, n), "ds": np.tile(dates, len(ids)),
                         "y": np.arange(n * len(ids), dtype=float) + 1.0})


def refused(table, message, **options):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        load_panel(table, **options)


# ----- reading -----------------------------------------------------------------------------------

def test_a_csv_a_parquet_file_and_a_dataframe_give_the_same_panel(tmp_path):
    table = monthly()
    table["price"] = np.linspace(1, 2, len(table))
    table["family"] = np.repeat(["x", "y"], 5)
    table = table.sample(frac=1.0, random_state=0)                      # any row order
    table.to_csv(tmp_path / "t.csv", index=False)
    table.to_parquet(tmp_path / "t.parquet", index=False)
    panels = [load_panel(source, future=["price"], static="family")
              for source in (table, tmp_path / "t.csv", str(tmp_path / "t.parquet"))]
    for panel in panels:
        assert panel.freq == "MS" and panel.covariates == Covariates(("price",), (), ("family",))
        assert panel.df.columns.tolist() == ["unique_id", "ds", "y", "price", "family"]
        pd.testing.assert_frame_equal(panel.df, panels[0].df)
    assert panels[0].df["y"].tolist() == [float(v) for v in range(1, 11)]            # sorted by series, time


def test_a_file_of_one_series_needs_no_unique_id_and_integer_steps_are_a_frequency(tmp_path):
    (tmp_path / "one.csv").write_text("ds,y\n3,1.5\n1,0.5\n2,1.0\n")
    panel = load_panel(tmp_path / "one.csv")
    assert panel.freq == 1 and panel.ids == ["series"]
    assert panel.df["ds"].tolist() == [1, 2, 3] and panel.df["y"].tolist() == [0.5, 1.0, 1.5]
    every_other = load_panel(pd.DataFrame({"ds": [10, 12, 14], "y": [1.0, 2.0, 3.0]}))
    assert every_other.freq == 2 and every_other.future_frame(2)["ds"].tolist() == [16, 18]


@pytest.mark.parametrize("freq, start", [("D", "2024-02-27"), ("W-SUN", "2024-01-07"), ("MS", "2023-11-01"),
                                         ("QS-JAN", "2023-10-01"), ("YS-JAN", "2020-01-01"), ("h", "2024-03-30 22:00"),
                                         ("ME", "2024-01-31")])
def test_the_frequency_is_inferred_and_the_next_steps_follow_it(freq, start):
    dates = pd.date_range(start, periods=6, freq=freq)
    panel = load_panel(pd.DataFrame({"ds": dates, "y": np.ones(6)}))
    # the same grid: pandas versions name some anchors differently (quarters from October: QS-OCT or QS-JAN)
    assert list(pd.date_range(start, periods=6, freq=panel.freq)) == list(dates)
    future = panel.future_frame(3)
    assert future["ds"].tolist() == list(pd.date_range(start, periods=9, freq=freq)[6:])


def test_the_frequency_is_found_where_the_longest_series_has_a_gap_and_the_gap_is_then_refused():
    table = pd.concat([monthly(8, ("long",)).drop(index=3), monthly(5, ("short",))], ignore_index=True)
    refused(table, "series 'long' has a gap in ds: after 2024-03-01 (row 3) comes 2024-05-01 (row 4), where "
                   "2024-04-01 was due; add the missing rows, or fill them (--fill previous/zero/linear)")


@pytest.mark.parametrize("fill, filled", [("previous", 3.0), ("zero", 0.0), ("linear", 4.0)])
def test_a_gap_is_filled_as_asked(fill, filled):
    table = monthly(6, ("a",))
    table["y"] = [1.0, 2.0, 3.0, 99.0, 5.0, 6.0]
    table["price"] = [10.0, 11, 12, 13, 14, 15]
    panel = load_panel(table.drop(index=3), fill=fill, past="price")
    assert panel.df["y"].tolist() == [1.0, 2.0, 3.0, filled, 5.0, 6.0]
    assert panel.df["price"].tolist() == [10.0, 11, 12, 12, 14, 15]                  # covariates: the step before
    assert panel.df["ds"].tolist() == list(pd.date_range("2024-01-01", periods=6, freq="MS"))


# ----- bad input: one line, the series and the row -------------------------------------------------

def test_each_bad_value_is_refused_naming_its_series_and_row():
    table = monthly()
    table.loc[6, "y"] = np.nan
    refused(table, "series 'b', row 7 (ds 2024-02-01): y is missing (NaN); fill or drop the row")
    table.loc[6, "y"] = np.inf
    refused(table, "series 'b', row 7 (ds 2024-02-01): y is inf; fix the value")
    table = monthly().astype({"y": object})
    table.loc[2, "y"] = "12,5"
    refused(table, "series 'a', row 3 (ds 2024-03-01): y is '12,5', not a number; write it as a number")
    table = monthly()
    table["price"] = ["1"] * 9 + ["cheap"]
    refused(table, "series 'b', row 10 (ds 2024-05-01): covariate 'price' is 'cheap', not a number; write it as "
                   "a number", future=["price"])


def test_duplicates_and_dates_off_the_grid_are_refused():
    table = pd.concat([monthly(), monthly(5, ("b",)).iloc[[2]]], ignore_index=True)
    refused(table, "series 'b' has 2 rows for ds 2024-03-01 (rows 8 and 11); keep one")
    table = monthly()
    table.loc[3, "ds"] = pd.Timestamp("2024-04-15")
    refused(table, "series 'a', row 4: ds 2024-04-15 is off the grid of frequency 'MS' (its steps from the series' "
                   "first ds, 2024-01-01); pass the frequency that fits (--freq), e.g. 'D' (days), 'W' (weeks), "
                   "'MS' (months), 'QS' (quarters), 'YS' (years), 'h' (hours)")


def test_dates_that_are_not_dates_and_frequencies_that_do_not_fit_are_refused(tmp_path):
    (tmp_path / "t.csv").write_text("unique_id,ds,y\nA,2024-01-01,1\nA,2024-13-01,2\n")
    with pytest.raises(ValueError, match=re.escape("series 'A', row 2: ds is '2024-13-01', neither a date nor an "
                                                   "integer; ds holds dates (2024-01-31) or integer steps")):
        load_panel(tmp_path / "t.csv")
    refused(pd.DataFrame({"ds": [1.0, 2.5], "y": [1.0, 2.0]}),
            "series 'series', row 2: ds is 2.5, neither a date nor an integer; ds holds dates (2024-01-31) or "
            "integer steps")
    refused(monthly(), "unknown frequency 'monthly'; use a pandas offset alias, e.g. 'D' (days), 'W' (weeks), 'MS' "
                       "(months), 'QS' (quarters), 'YS' (years), 'h' (hours)", freq="monthly")
    refused(monthly(), "ds holds dates, so the frequency is a pandas offset alias (e.g. 'D' (days), 'W' (weeks), 'MS' "
                       "(months), 'QS' (quarters), 'YS' (years), 'h' (hours)), got 7", freq=7)
    refused(pd.DataFrame({"ds": [1, 2], "y": [1.0, 2.0]}),
            "ds holds integers, so the frequency is a whole number of them per step (1), got 'D'", freq="D")
    odd = pd.DataFrame({"ds": pd.to_datetime(["2024-01-01", "2024-01-03", "2024-01-10"]), "y": [1.0, 2.0, 3.0]})
    refused(odd, "cannot infer the frequency of ds from series 'series' (2024-01-01, 2024-01-03, 2024-01-10); pass "
                 "it as freq (--freq), e.g. 'D' (days), 'W' (weeks), 'MS' (months), 'QS' (quarters), 'YS' (years), "
                 "'h' (hours)")
    assert load_panel(odd, freq="D", fill="linear").df["y"].iloc[1] == 1.5             # given, the gaps fill


def test_columns_that_are_missing_undeclared_or_inconsistent_are_refused():
    refused(monthly().rename(columns={"y": "sales"}),
            "the table has no column y; it needs ds (dates or integers) and y (the values), and unique_id for several "
            "series; its columns are unique_id, ds, sales")
    table = monthly()
    table["promo"] = 0.0
    refused(table, "column(s) promo are neither unique_id, ds, y nor a declared covariate; declare each as future, "
                   "past or static (--future/--past/--static) or drop it")
    refused(table, "covariate(s) price are not columns of the table; its columns are unique_id, ds, y, promo",
            future=["promo", "price"])
    refused(table, "covariate(s) promo declared as more than one kind; each is future, past or static",
            future="promo", past="promo")
    table["promo"] = [0.0] * 7 + [1.0] * 3
    refused(table, "static covariate 'promo' takes 2 values in series 'b' (rows 6 and 8); a static covariate has "
                   "one value per series, so declare it as past or future instead", static="promo")
    table = monthly().astype({"unique_id": object})
    table.loc[4, "unique_id"] = None
    refused(table, "row 5: unique_id is missing; every row names its series")
    refused(monthly().iloc[:0], "the table has no rows; it needs a row per series and time step (unique_id, ds, y)")
    refused(monthly(), "fill must be one of previous, zero, linear, got 'mean'", fill="mean")


def test_files_in_no_known_format_or_missing_are_refused(tmp_path):
    (tmp_path / "t.xlsx").write_text("")
    with pytest.raises(ValueError, match=re.escape(f"'{tmp_path / 't.xlsx'}' is neither a CSV (.csv) nor a Parquet "
                                                   f"(.parquet) file; save the table as one of them")):
        load_panel(tmp_path / "t.xlsx")
    with pytest.raises(FileNotFoundError, match=re.escape(f"'{tmp_path / 'no.csv'}' is not a file; pass the path of "
                                                          f"a CSV or Parquet file")):
        load_panel(tmp_path / "no.csv")


def test_a_horizon_below_one_step_and_negative_counts_are_refused():
    with pytest.raises(ValueError, match=re.escape("horizon must be a positive integer, got 0; a forecast is at "
                                                   "least one step ahead")):
        check_horizon(0)
    with pytest.raises(TypeError, match=re.escape("horizon must be an int, got float")):
        check_horizon(2.0)
    table = monthly()
    table.loc[8, "y"] = -2.0
    with pytest.raises(ValueError, match=re.escape(
            "series 'b', row 9: y is -2; the negative binomial likelihood models counts, which are never negative; "
            "choose a likelihood for real values (e.g. 'studentt') or fix y")):
        check_counts(load_panel(table), "negative binomial")


def test_future_covariates_must_come_for_every_series_and_step_with_the_fitted_columns():
    table = monthly()
    table["price"] = 1.0
    panel = load_panel(table, future=["price"])
    future = panel.future_frame(2).assign(price=[5.0, 6.0, 7.0, 8.0])
    got = check_future(panel, 2, future.sample(frac=1.0, random_state=1))
    assert got["price"].tolist() == [5.0, 6.0, 7.0, 8.0]                             # the panel's order
    for X_df, message in [
            (None, "the model reads future covariates (price): pass their values for the 2 steps after each "
                   "series' end as X_df (--future-data)"),
            (future.drop(columns="price"), "the future covariates lack column(s) price; they need unique_id, ds "
                                           "and price"),
            (future.assign(promo=1.0), "the future covariates have column(s) promo that the model was not fitted "
                                       "with; it reads price"),
            (future.drop(index=3), "the future covariates have no row for series 'b' at ds 2024-07-01 (step 2 of 2 "
                                   "after its end); give every series all 2 steps")]:
        with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
            check_future(panel, 2, X_df)
    with pytest.raises(ValueError, match=re.escape("future covariates were given, but the model was fitted without "
                                                   "any; drop X_df (--future-data), or refit declaring them")):
        check_future(load_panel(monthly()), 2, future)


def test_rnnkit_works_without_pandas_and_the_forecast_package_says_what_to_install():
    code = ("import rnnkit, torch\n"
            "layer = rnnkit.LSTM(2, 3)\n"
            "print(tuple(layer(torch.zeros(4, 1, 2))[0].shape))\n"
            "try:\n"
            "    import rnnkit.forecast\n"
            "except ImportError as error:\n"
            "    print(error)\n")
    result = run_without("pandas", code)
    assert result.stdout.splitlines() == ["(4, 1, 3)", 'rnnkit.forecast needs pandas, which is not installed: '
                                                       'pip install "rnnkit[forecast]"']
