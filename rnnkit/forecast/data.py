"""Series in the field's long format, read and checked.

A table has one row per series and time step: ``unique_id`` (which series; optional for a file of
one series), ``ds`` (dates, or integers counting steps) and ``y`` (the value), plus covariate columns,
each declared as one of three kinds (:class:`Covariates`):

- ``future``: known ahead (a price list, a holiday, a promotion planned): the model reads them for
  the steps it forecasts, so :meth:`Panel.future_frame` asks for them at prediction time;
- ``past``: known only up to the last observation (another sensor, the weather measured);
- ``static``: one value per series (a store's type, a product's family).

:func:`load_panel` reads a CSV or Parquet file or a pandas DataFrame, checks it and returns a
:class:`Panel`: the rows sorted by series then time, the frequency of ``ds`` (inferred, or the one
given, checked), and the covariates. Each mistake is refused in one line that names the series and
the row (the row of the table as given, counting from 1, the header left out) and says what to do;
nothing is dropped or repaired silently. Gaps in ``ds`` are refused unless ``fill`` says how to fill
them (:data:`FILLS`).

>>> import pandas as pd
>>> table = pd.DataFrame({"unique_id": ["a", "a", "a", "b", "b", "b"],
...                       "ds": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01"] * 2),
...                       "y": [1.0, 2.0, 3.0, 10.0, 20.0, 30.0]})
>>> panel = load_panel(table)
>>> panel.freq, panel.lengths().tolist()
('MS', [3, 3])
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

import numpy as np
import pandas as pd

from .._arguments import check_int

__all__ = ["FILLS", "Covariates", "Panel", "load_panel", "read_table", "check_horizon", "check_counts",
           "check_future"]

ID, TIME, TARGET = "unique_id", "ds", "y"
ROW = "_row"                         # the row of the table as given (1 = the first row after the header)
# how fill= fills the rows a gap lacks: y from the step before, 0 (counts: nothing happened) or a straight
# line between the two sides; covariates always from the step before
FILLS = ("previous", "zero", "linear")
_FREQ_HINT = "e.g. 'D' (days), 'W' (weeks), 'MS' (months), 'QS' (quarters), 'YS' (years), 'h' (hours)"


@dataclass(frozen=True)
class Covariates:
    """The covariate columns of a table by kind: ``future`` (known ahead), ``past`` (known up to the last
    observation) and ``static`` (one value per series)."""
    future: tuple = ()
    past: tuple = ()
    static: tuple = ()

    @property
    def columns(self) -> tuple:
        return (*self.future, *self.past, *self.static)


@dataclass(frozen=True, eq=False)
class Panel:
    """A checked table of series: ``df`` holds ``unique_id, ds, y`` and the covariates, sorted by series
    then time (no gaps, no duplicates, finite ``y``); ``freq`` is a pandas offset alias (``"MS"``) for
    dates or the integer step for integer ``ds``; ``rows`` the row of the table as given that each row of
    ``df`` came from (0 for a row that filling a gap made), for messages about it."""
    df: pd.DataFrame
    freq: str | int
    covariates: Covariates
    rows: np.ndarray

    @property
    def ids(self) -> list:
        return list(self.df[ID].unique())

    def lengths(self) -> pd.Series:
        """Observations per series, in the panel's order."""
        return self.df.groupby(ID, sort=False).size()

    def step(self, ds, steps: int):
        """``ds`` (one value or an array of them) moved ``steps`` steps of the panel's frequency later."""
        if isinstance(self.freq, Integral):
            return ds + steps * self.freq
        return pd.DatetimeIndex(np.atleast_1d(ds)) + steps * pd.tseries.frequencies.to_offset(self.freq)

    def future_frame(self, h: int) -> pd.DataFrame:
        """``unique_id, ds`` of the ``h`` steps after each series' last observation (where the future
        covariates must be given at prediction time), series by series."""
        h = check_horizon(h)
        last = self.df.groupby(ID, sort=False)[TIME].last()
        ends = last.to_numpy()
        ds = np.stack([np.asarray(self.step(ends, k)) for k in range(1, h + 1)], axis=1)    # (series, h)
        return pd.DataFrame({ID: np.repeat(last.index.to_numpy(), h), TIME: ds.reshape(-1)})


def read_table(source) -> pd.DataFrame:
    """The table ``source`` names: a pandas DataFrame (copied), or a CSV (``.csv``) or Parquet
    (``.parquet``, ``.pq``) file. A file's ``unique_id`` is read as text (so "007" stays "007")."""
    if isinstance(source, pd.DataFrame):
        return source.copy()
    if not isinstance(source, (str, Path)):
        raise TypeError(f"expected a pandas DataFrame or the path of a CSV or Parquet file, got "
                        f"{type(source).__name__}")
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"'{path}' is not a file; pass the path of a CSV or Parquet file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:
            return pd.read_csv(path, dtype={ID: str}, skipinitialspace=True)
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
            raise ValueError(f"'{path}' cannot be read as CSV: {str(error).strip().splitlines()[0]}") from None
    if suffix in (".parquet", ".pq"):
        try:
            table = pd.read_parquet(path)
        except ImportError:
            raise ImportError('reading Parquet needs pyarrow: pip install "rnnkit[forecast]"') from None
        except Exception as error:                      # pyarrow's own error types: one line either way
            raise ValueError(f"'{path}' cannot be read as Parquet: {str(error).strip().splitlines()[0]}") from None
        if ID in table and table[ID].dtype == object:
            table[ID] = table[ID].astype(str)
        return table
    raise ValueError(f"'{path}' is neither a CSV (.csv) nor a Parquet (.parquet) file; save the table as one of them")


def load_panel(source, *, freq=None, future=(), past=(), static=(), fill: str | None = None) -> Panel:
    """Read and check a table of series (see the module's text): ``source`` a DataFrame or the path of a
    CSV or Parquet file; ``freq`` the frequency of ``ds`` (a pandas offset alias, or an integer step for
    integer ``ds``; default: inferred); ``future``, ``past``, ``static`` the covariate columns by kind
    (every other column is refused); ``fill`` how to fill gaps in ``ds`` (one of :data:`FILLS`; default:
    a gap is refused)."""
    covariates = Covariates(*(_names(kind, columns) for kind, columns in
                              (("future", future), ("past", past), ("static", static))))
    if fill is not None and fill not in FILLS:
        raise ValueError(f"fill must be one of {', '.join(FILLS)}, got {fill!r}")
    df = _columns(read_table(source), covariates)
    df[ROW] = np.arange(1, len(df) + 1)
    df[TIME] = _times(df)
    df[TARGET] = _numbers(df, TARGET, "y")
    _no_duplicates(df)
    for column in (*covariates.future, *covariates.past):
        df[column] = _numbers(df, column, f"covariate '{column}'")
    _static(df, covariates.static)
    df = df.sort_values([ID, TIME], kind="stable").reset_index(drop=True)
    freq = _frequency(df, freq)
    df = _on_grid(df, freq, fill, covariates)
    return Panel(df[[ID, TIME, TARGET, *covariates.columns]].reset_index(drop=True), freq, covariates,
                 df[ROW].to_numpy())


def check_horizon(h) -> int:
    """The forecast horizon: a whole number of steps, at least 1."""
    return check_int("", "horizon", h, 1, "a forecast is at least one step ahead")


def check_counts(panel: Panel, likelihood: str) -> None:
    """A count likelihood (``likelihood``) needs every ``y`` to be 0 or more."""
    negative = (panel.df[TARGET] < 0).to_numpy()
    if negative.any():
        i = int(np.flatnonzero(negative)[0])
        row = panel.df.iloc[i].copy()
        row[ROW] = panel.rows[i]
        raise ValueError(f"{_where(row)}: y is {row[TARGET]:g}; the {likelihood} likelihood models counts, which "
                         f"are never negative; choose a likelihood for real values (e.g. 'studentt') or fix y")


def check_future(panel: Panel, h: int, X_df) -> pd.DataFrame | None:
    """The future covariates for the ``h`` steps after each series' end: ``X_df`` (a DataFrame or a path)
    with ``unique_id, ds`` and exactly the panel's future covariates, every step present and finite.
    Returns them in :meth:`Panel.future_frame`'s order, or None where the panel has none."""
    wanted = list(panel.covariates.future)
    if not wanted:
        if X_df is not None:
            raise ValueError("future covariates were given, but the model was fitted without any; drop X_df "
                             "(--future-data), or refit declaring them")
        return None
    if X_df is None:
        raise ValueError(f"the model reads future covariates ({', '.join(wanted)}): pass their values for the "
                         f"{h} steps after each series' end as X_df (--future-data)")
    table = read_table(X_df)
    missing = [c for c in (ID, TIME, *wanted) if c not in table.columns]
    if missing:
        raise ValueError(f"the future covariates lack column(s) {', '.join(missing)}; they need unique_id, ds "
                         f"and {', '.join(wanted)}")
    extra = [c for c in table.columns if c not in (ID, TIME, *wanted)]
    if extra:
        raise ValueError(f"the future covariates have column(s) {', '.join(map(str, extra))} that the model was "
                         f"not fitted with; it reads {', '.join(wanted)}")
    table[ROW] = np.arange(1, len(table) + 1)
    if panel.df[ID].dtype == object:                   # a file's ids are text; so are the panel's
        table[ID] = table[ID].astype(str)
    table[TIME] = _times(table)
    for column in wanted:
        table[column] = _numbers(table, column, f"covariate '{column}'")
    grid = panel.future_frame(h)
    merged = grid.merge(table, on=[ID, TIME], how="left", indicator=True)
    absent = merged["_merge"] == "left_only"
    if absent.any():
        first = merged[absent].iloc[0]
        step = int(np.flatnonzero(absent.to_numpy())[0] % h) + 1
        raise ValueError(f"the future covariates have no row for series {first[ID]!r} at ds {_show(first[TIME])} "
                         f"(step {step} of {h} after its end); give every series all {h} steps")
    return merged[[ID, TIME, *wanted]]


# ----- the checks, in the order load_panel makes them -----------------------------------------------

def _names(kind: str, columns) -> tuple:
    columns = (columns,) if isinstance(columns, str) else tuple(columns)
    for column in columns:
        if column in (ID, TIME, TARGET):
            raise ValueError(f"'{column}' cannot be a {kind} covariate: it is one of unique_id, ds, y")
    return columns


def _columns(df: pd.DataFrame, covariates: Covariates) -> pd.DataFrame:
    if len(df) == 0:
        raise ValueError("the table has no rows; it needs a row per series and time step (unique_id, ds, y)")
    missing = [c for c in (TIME, TARGET) if c not in df.columns]
    if missing:
        raise ValueError(f"the table has no column {' or '.join(missing)}; it needs ds (dates or integers) and y "
                         f"(the values), and unique_id for several series; its columns are "
                         f"{', '.join(map(str, df.columns))}")
    declared = covariates.columns
    repeated = sorted({c for c in declared if declared.count(c) > 1})
    if repeated:
        raise ValueError(f"covariate(s) {', '.join(repeated)} declared as more than one kind; each is future, "
                         f"past or static")
    absent = [c for c in declared if c not in df.columns]
    if absent:
        raise ValueError(f"covariate(s) {', '.join(absent)} are not columns of the table; its columns are "
                         f"{', '.join(map(str, df.columns))}")
    unknown = [c for c in df.columns if c not in (ID, TIME, TARGET, *declared)]
    if unknown:
        raise ValueError(f"column(s) {', '.join(map(str, unknown))} are neither unique_id, ds, y nor a declared "
                         f"covariate; declare each as future, past or static (--future/--past/--static) or drop it")
    if ID not in df.columns:
        df.insert(0, ID, "series")                     # one series: a name for it
    elif df[ID].isna().any():
        raise ValueError(f"row {int(np.flatnonzero(df[ID].isna().to_numpy())[0]) + 1}: unique_id is missing; every "
                         f"row names its series")
    return df


def _where(row) -> str:
    return f"series {row[ID]!r}, row {int(row[ROW])}"


def _show(ds) -> str:
    if isinstance(ds, pd.Timestamp):
        return str(ds.date()) if ds == ds.normalize() else str(ds)
    return str(ds)


def _times(df: pd.DataFrame) -> pd.Series:
    """``ds`` as integers (all whole numbers) or as dates; one line for the first that is neither."""
    ds = df[TIME]
    if pd.api.types.is_integer_dtype(ds) and not pd.api.types.is_bool_dtype(ds):
        return ds.astype("int64")
    if pd.api.types.is_datetime64_any_dtype(ds):
        parsed, bad = ds, ds.isna().to_numpy()
    else:
        numbers = pd.to_numeric(ds, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        whole = np.isfinite(numbers) & (numbers == np.round(numbers))
        if whole.all():
            return pd.Series(numbers.astype("int64"), index=ds.index)
        if pd.api.types.is_numeric_dtype(ds):       # numbers, but not all whole: the first that is not
            parsed, bad = ds, ~whole
        else:
            parsed = pd.to_datetime(ds, errors="coerce", format="mixed")
            bad = parsed.isna().to_numpy()
    if bad.any():
        row = df[bad].iloc[0]
        value = row[TIME]
        shown = repr(value) if isinstance(value, str) else str(value)
        what = "missing" if pd.isna(value) else f"{shown}, neither a date nor an integer"
        raise ValueError(f"{_where(row)}: ds is {what}; ds holds dates (2024-01-31) or integer steps")
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_localize(None)
    return parsed


def _numbers(df: pd.DataFrame, column: str, name: str) -> pd.Series:
    """``column`` as float64; one line for the first value that is not a finite number."""
    values = df[column]
    numbers = pd.to_numeric(values, errors="coerce") if not pd.api.types.is_bool_dtype(values) else \
        values.astype("float64")
    numbers = numbers.astype("float64")
    bad = ~np.isfinite(numbers.to_numpy())
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        row, given, got = df.iloc[i], values.iloc[i], numbers.iloc[i]
        if pd.isna(given):
            what, fix = "missing (NaN)", "fill or drop the row"
        elif math.isnan(got):
            what, fix = f"{given!r}, not a number", "write it as a number"
        else:
            what, fix = f"{got:g}", "fix the value"
        raise ValueError(f"{_where(row)} (ds {_show(row[TIME])}): {name} is {what}; {fix}")
    return numbers


def _no_duplicates(df: pd.DataFrame) -> None:
    twice = df.duplicated([ID, TIME], keep=False)
    if twice.any():
        first = df[twice].iloc[0]
        rows = df[twice & (df[ID] == first[ID]) & (df[TIME] == first[TIME])][ROW].tolist()
        listed = ", ".join(map(str, rows[:-1])) + f" and {rows[-1]}"
        raise ValueError(f"series {first[ID]!r} has {len(rows)} rows for ds {_show(first[TIME])} (rows {listed}); "
                         f"keep one")


def _static(df: pd.DataFrame, columns) -> None:
    for column in columns:
        counts = df.groupby(ID, sort=False)[column].nunique(dropna=False)
        varying = counts[counts > 1]
        if len(varying):
            uid = varying.index[0]
            rows = df[df[ID] == uid].drop_duplicates(column)[ROW].tolist()[:2]
            raise ValueError(f"static covariate '{column}' takes {int(varying.iloc[0])} values in series {uid!r} "
                             f"(rows {rows[0]} and {rows[1]}); a static covariate has one value per series, so "
                             f"declare it as past or future instead")


def _frequency(df: pd.DataFrame, freq):
    """The frequency of ``ds``: ``freq`` checked, or inferred from the longest series."""
    dates = pd.api.types.is_datetime64_any_dtype(df[TIME])
    if not dates:
        if freq is None:
            steps = df.groupby(ID, sort=False)[TIME].diff().dropna()
            return int(steps.min()) if len(steps) else 1
        if isinstance(freq, bool) or not isinstance(freq, Integral) or freq < 1:
            raise ValueError(f"ds holds integers, so the frequency is a whole number of them per step (1), "
                             f"got {freq!r}")
        return int(freq)
    if freq is not None:
        if isinstance(freq, Integral):
            raise ValueError(f"ds holds dates, so the frequency is a pandas offset alias ({_FREQ_HINT}), got {freq!r}")
        try:
            return pd.tseries.frequencies.to_offset(freq).freqstr
        except ValueError:
            raise ValueError(f"unknown frequency {freq!r}; use a pandas offset alias, {_FREQ_HINT}") from None
    lengths = df.groupby(ID, sort=False).size().sort_values(ascending=False, kind="stable")
    for uid in lengths.index[:20]:               # the longest series first: a gap in one leaves the others
        found = _infer_frequency(df.loc[df[ID] == uid, TIME]) if lengths[uid] >= 3 else None
        if found is not None:
            return found
    longest = lengths.index[0]
    dates_of = df.loc[df[ID] == longest, TIME]
    shown = ", ".join(_show(d) for d in dates_of.iloc[:4]) + (", ..." if len(dates_of) > 4 else "")
    raise ValueError(f"cannot infer the frequency of ds from series {longest!r} ({shown}); pass it as freq "
                     f"(--freq), {_FREQ_HINT}")


def _infer_frequency(dates: pd.Series) -> str | None:
    """pandas' offset alias for ``dates`` (sorted), or None: inferred from all of them, else the alias most
    runs of three consecutive dates agree on (a gap spoils the whole series' inference, not the runs
    beside it; the gap is then refused, or filled, on that frequency's grid)."""
    dates = pd.DatetimeIndex(dates)
    found = _infer(dates)
    if found is None:
        runs = [alias for i in range(min(len(dates) - 2, 64)) if (alias := _infer(dates[i:i + 3])) is not None]
        found = max(set(runs), key=runs.count) if runs else None
    return found


def _infer(dates: pd.DatetimeIndex) -> str | None:
    # pandas 3 warns that a later version returns an offset object: the alias is taken from the offset either way
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="A future version of pandas will return a BaseOffset")
        found = pd.infer_freq(dates)
    return None if found is None else pd.tseries.frequencies.to_offset(found).freqstr


def _grid(start, end, freq):
    """The steps of ``freq`` from ``start`` to ``end`` (both included)."""
    if isinstance(freq, Integral):
        return np.arange(start, end + 1, freq)
    return pd.date_range(start, end, freq=freq)


def _on_grid(df: pd.DataFrame, freq, fill: str | None, covariates: Covariates) -> pd.DataFrame:
    """Every series on the grid of ``freq`` from its first ``ds``, without gaps (or with its gaps filled)."""
    parts, filled = [], False
    for uid, series in df.groupby(ID, sort=False):
        ds = series[TIME].to_numpy()
        grid = _grid(ds[0], ds[-1], freq)
        grid = grid.to_numpy() if hasattr(grid, "to_numpy") else grid
        if len(grid) == len(ds) and np.array_equal(grid, ds):
            parts.append(series)
            continue
        on = np.isin(ds, grid)
        if not on.all():
            row = series.iloc[int(np.flatnonzero(~on)[0])]
            raise ValueError(f"{_where(row)}: ds {_show(row[TIME])} is off the grid of frequency {freq!r} (its "
                             f"steps from the series' first ds, {_show(series[TIME].iloc[0])}); pass the frequency "
                             f"that fits (--freq), {_FREQ_HINT}")
        if fill is None:
            i = int(np.flatnonzero(~np.isin(grid, ds))[0])            # the first step missing
            before = series.iloc[i - 1]
            after = series.iloc[i]
            raise ValueError(f"series {uid!r} has a gap in ds: after {_show(before[TIME])} (row {int(before[ROW])}) "
                             f"comes {_show(after[TIME])} (row {int(after[ROW])}), where {_show(pd.Series(grid).iloc[i])} "
                             f"was due; add the missing rows, or fill them (--fill {'/'.join(FILLS)})")
        parts.append(_filled(series, grid, fill, covariates))
        filled = True
    return pd.concat(parts, ignore_index=True) if filled else df


def _filled(series: pd.DataFrame, grid, fill: str, covariates: Covariates) -> pd.DataFrame:
    full = series.set_index(TIME).reindex(grid)
    full.index.name = TIME
    gap = full[TARGET].isna()
    if fill == "previous":
        full[TARGET] = full[TARGET].ffill()
    elif fill == "zero":
        full[TARGET] = full[TARGET].fillna(0.0)
    else:
        full[TARGET] = full[TARGET].interpolate(method="linear")
    rest = [ID, ROW, *covariates.columns]
    full[rest] = full[rest].ffill()
    full.loc[gap, ROW] = 0                     # a row made by the filling: none of the table's
    full[ROW] = full[ROW].astype("int64")
    return full.reset_index()
