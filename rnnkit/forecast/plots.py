"""Fan charts: each series' recent history, its point forecast and the intervals around it.

:func:`plot_forecasts` draws the tables the forecasters give (``unique_id, ds, ALIAS`` and the interval
columns ``ALIAS-lo-L``, ``ALIAS-hi-L``) beside the history they were made from, one small panel per
series in a grid, and, where the truth is known (a backtest), the true values as dots. The wider an
interval, the lighter its shade. The figure is built without ``pyplot`` (no global state; a PNG is
written by matplotlib's Agg renderer), so it works on a server and shows in a notebook as a cell's
value. matplotlib is the optional extra ``plot``: ``pip install "rnnkit[plot]"``.

>>> import numpy as np, pandas as pd
>>> history = pd.DataFrame({"unique_id": "a", "ds": np.arange(10), "y": np.sin(np.arange(10.0))})
>>> ahead = pd.DataFrame({"unique_id": "a", "ds": [10, 11], "RNN": [0.0, 0.5],
...                       "RNN-lo-80": [-0.5, 0.0], "RNN-hi-80": [0.5, 1.0]})
>>> figure = plot_forecasts(history, ahead, level=[80])
>>> len(figure.axes)
1
"""
from __future__ import annotations

import math

import pandas as pd

from .._arguments import check_int
from .._files import write_figure_atomic
from .data import ID, TARGET, TIME
from .metrics import interval_columns

__all__ = ["plot_forecasts"]

_HISTORY, _FORECAST, _TRUTH = "#444444", "#1f5fa8", "#d62728"
_COLUMNS = 3                                       # panels per row of the grid


def plot_forecasts(history_df, forecasts_df, *, alias: str = "RNN", level=(80, 95), truth_df=None,
                   max_series: int = 12, history: int | None = None, path=None):
    """A grid of fan charts, one per series (the first ``max_series`` of ``forecasts_df``, in its order).

    Args:
        history_df: ``unique_id, ds, y``, the values the forecasts start from; the last ``history``
            steps of each series are drawn (default: three times its forecast's length).
        forecasts_df: ``unique_id, ds``, the point forecast ``alias`` and its interval columns for each
            level of ``level``.
        truth_df: ``unique_id, ds, y`` (optional): the true values of the forecast steps, drawn as dots.
        path: where to write the picture (optional; PNG unless its suffix names another format
            matplotlib writes), through a temporary file in the same folder, renamed once complete.

    Returns the ``matplotlib.figure.Figure``.
    """
    owner = "plot_forecasts"
    max_series = check_int(owner, "max_series", max_series)
    level = sorted(level, reverse=True)                     # the widest first: drawn underneath, lightest
    _columns(owner, "forecasts", forecasts_df, [ID, TIME, alias, *(c for lv in level
                                                                 for c in interval_columns(alias, lv))])
    _columns(owner, "history", history_df, [ID, TIME, TARGET])
    if truth_df is not None:
        _columns(owner, "truth", truth_df, [ID, TIME, TARGET])
    ids = list(pd.unique(forecasts_df[ID]))
    if not ids:
        raise ValueError(f"{owner}: the forecasts have no rows")
    shown = ids[:max_series]
    if history is None:
        history = 3 * int(forecasts_df.groupby(ID, sort=False).size().max())
    history = check_int(owner, "history", history, 0)

    across = min(_COLUMNS, len(shown))
    down = math.ceil(len(shown) / across)
    fig = _figure(owner, (4.2 * across, 2.7 * down + (0.3 if len(ids) > len(shown) else 0)))
    histories, truths = history_df.groupby(ID, sort=False), None if truth_df is None else truth_df.groupby(ID)
    for i, uid in enumerate(shown):
        ax = fig.add_subplot(down, across, i + 1)
        ahead = forecasts_df[forecasts_df[ID] == uid].sort_values(TIME)
        if uid in histories.groups:
            past = histories.get_group(uid).sort_values(TIME)
            past = past.iloc[len(past) - min(history, len(past)):]
            ax.plot(past[TIME], past[TARGET], color=_HISTORY, lw=1.2, label="history")
        for rank, lv in enumerate(level):
            low, high = interval_columns(alias, lv)
            ax.fill_between(ahead[TIME], ahead[low], ahead[high], color=_FORECAST, lw=0,
                            alpha=0.18 + 0.22 * rank / max(len(level) - 1, 1), label=f"{lv} % interval")
        ax.plot(ahead[TIME], ahead[alias], color=_FORECAST, lw=1.6, label=alias)
        if truths is not None and uid in truths.groups:
            truth = truths.get_group(uid)
            truth = truth[truth[TIME].isin(ahead[TIME])]
            if len(truth):
                ax.plot(truth[TIME], truth[TARGET], ".", color=_TRUTH, ms=5, label="truth")
        ax.set_title(str(uid), fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25)
        if i == 0:
            ax.legend(fontsize=7, loc="upper left")
    if len(ids) > len(shown):
        fig.suptitle(f"the first {len(shown)} of {len(ids)} series", fontsize=9)
    if pd.api.types.is_datetime64_any_dtype(forecasts_df[TIME]):
        fig.autofmt_xdate(rotation=30)
    if path is not None:
        write_figure_atomic(fig, path)
    return fig


def _columns(owner: str, name: str, table, wanted: list) -> None:
    missing = [c for c in wanted if c not in table.columns]
    if missing:
        raise ValueError(f"{owner}: the {name} lack column(s) {', '.join(missing)}; they need {', '.join(wanted)}")


def _figure(owner: str, size):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(f'{owner} needs matplotlib, which is not installed: pip install "rnnkit[plot]"') from None
    return Figure(figsize=size, dpi=100, layout="constrained")
