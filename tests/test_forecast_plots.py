"""Fan charts (rnnkit.forecast.plots): a panel per series up to max_series, the recent history, the point
forecast, the intervals shaded lighter the wider they are, the truth as dots; written all or nothing."""
import re

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

from rnnkit.forecast.plots import plot_forecasts  # noqa: E402


def tables(count=5, n=30, h=4):
    """``(history, forecasts)`` of ``count`` series: ``n`` observed steps, ``h`` forecast with 50/90 % bands."""
    history = pd.concat([pd.DataFrame({"unique_id": f"s{i}", "ds": np.arange(n), "y": np.sin(np.arange(n) / 3) + i})
                         for i in range(count)], ignore_index=True)
    forecasts = pd.DataFrame({"unique_id": np.repeat([f"s{i}" for i in range(count)], h),
                              "ds": np.tile(np.arange(n, n + h), count), "RNN": np.repeat(np.arange(count), h) + 0.5})
    for level, width in ((50, 0.3), (90, 1.0)):
        forecasts[f"RNN-lo-{level}"], forecasts[f"RNN-hi-{level}"] = forecasts["RNN"] - width, forecasts["RNN"] + width
    return history, forecasts


def test_a_panel_per_series_with_history_median_bands_and_truth():
    history, forecasts = tables()
    truth = forecasts[["unique_id", "ds"]].assign(y=1.0)
    figure = plot_forecasts(history, forecasts, level=[50, 90], truth_df=truth, max_series=4, history=10)
    assert [ax.get_title() for ax in figure.axes] == ["s0", "s1", "s2", "s3"]
    assert [text.get_text() for text in figure.texts] == ["the first 4 of 5 series"]
    ax = figure.axes[1]
    past, median, dots = ax.lines
    assert list(past.get_xdata()) == list(range(20, 30))                          # the last 10 steps
    np.testing.assert_allclose(median.get_ydata(), 1.5)
    assert list(dots.get_xdata()) == [30, 31, 32, 33] and dots.get_linestyle() == "None"
    wide, narrow = ax.collections                                                 # the 90 % band first
    assert wide.get_alpha() < narrow.get_alpha()
    for band, width in ((wide, 1.0), (narrow, 0.3)):
        corners = band.get_paths()[0].vertices
        np.testing.assert_allclose([corners[:, 1].min(), corners[:, 1].max()], [1.5 - width, 1.5 + width])


def test_the_picture_is_written_whole_into_a_new_folder(tmp_path):
    history, forecasts = tables(count=2)
    plot_forecasts(history, forecasts, level=[90], path=tmp_path / "charts" / "fan.png")
    assert [p.name for p in (tmp_path / "charts").iterdir()] == ["fan.png"]         # no temporary file left
    assert (tmp_path / "charts" / "fan.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_missing_columns_are_named():
    history, forecasts = tables(count=1)
    with pytest.raises(ValueError, match="^" + re.escape("plot_forecasts: the forecasts lack column(s) RNN-lo-80, "
                                                         "RNN-hi-80; they need unique_id, ds, RNN, RNN-lo-80, "
                                                         "RNN-hi-80") + "$"):
        plot_forecasts(history, forecasts, level=[80])
