"""Forecasting many series with recurrent networks: a user's table in, forecasts out.

The data come in the field's long format (``unique_id``, ``ds``, ``y`` and covariate columns, as
statsforecast and neuralforecast read them): :func:`load_panel` reads a CSV or Parquet file or a
pandas DataFrame and checks it, and every mistake it finds is one line naming the series and the row. :func:`score` measures
forecasts as the field does (sMAPE, MASE, interval coverage, scaled CRPS; utilsforecast's measures), and
:func:`seasonal_naive` is the baseline they are measured against. :class:`RNNForecaster` is the global
recurrent forecaster (``fit``, ``predict`` with intervals, ``cross_validation``, ``save``/``load``) with
covariates, four likelihoods and two decoders.

This package needs pandas (``pip install "rnnkit[forecast]"``); the rest of rnnkit does not.
"""
from __future__ import annotations

try:
    import pandas  # noqa: F401  (the extra this package needs: a clear line where it is missing)
except ImportError:                                                    # pragma: no cover - tested in a subprocess
    raise ImportError('rnnkit.forecast needs pandas, which is not installed: pip install "rnnkit[forecast]"') \
        from None

from .data import FILLS, Covariates, Panel, check_counts, check_future, check_horizon, load_panel, read_table
from .features import season_length_for
from .metrics import interval_columns, score, seasonal_naive
from .model import DECODERS, LIKELIHOODS, QUANTILES, RNNForecaster
from .plots import plot_forecasts

__all__ = ["FILLS", "Covariates", "Panel", "check_counts", "check_future", "check_horizon", "load_panel",
           "read_table", "season_length_for", "interval_columns", "score", "seasonal_naive", "QUANTILES",
           "LIKELIHOODS", "DECODERS", "RNNForecaster", "plot_forecasts"]
