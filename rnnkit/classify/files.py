"""Collections from files: the UCR/UEA archive's ``.ts`` format, a long CSV table and NumPy's ``.npz``.

Every reader returns a :class:`Collection`: the cases as (channels, time_i) arrays (not yet checked:
:func:`~rnnkit.classify.as_cases` does that), their labels (``None`` where the file has none) and
their names. Each mistake in a file is one line naming the file and, where it can, the line.

- ``.ts`` (the archive's format, as aeon's ``load_from_ts_file`` reads it): ``#`` comments, ``@`` header
  lines up to ``@data``, then one case per line, its channels separated by ``:``, the values of a
  channel by ``,``, ``?`` for a missing value, and the label last where ``@classLabel true`` (or
  ``@targetLabel true`` for regression) says so. Time stamps (``@timeStamps true``) are not read.
- ``.csv``: a header, then one row per case and time step: ``case, time, <one column per channel>``
  and, where the last column is named ``label``, the case's label (the same on each of its rows). Rows
  may come in any order: a case's steps are sorted by time; cases keep the order of first appearance.
  An empty cell is a missing value.
- ``.npz``: an array ``X`` (cases, channels, time), unequal cases padded with NaN at the end, and
  optionally ``y`` (cases,); no pickled objects.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .._files import write_text_atomic

__all__ = ["Collection", "FORMATS", "read_collection", "read_ts", "read_csv", "read_npz", "format_predictions", "write_predictions"]


class Collection(NamedTuple):
    """Cases (a list of (channels, time_i) float arrays), labels (an array, or ``None``) and case names."""
    X: list
    y: np.ndarray | None
    names: list


def _labels(values: list, numeric: bool) -> np.ndarray:
    """Labels as the archive spells them; a regression file's targets as numbers."""
    return np.array([float(v) for v in values]) if numeric else np.array(values)


def read_ts(path) -> Collection:
    """The cases and labels of a ``.ts`` file (see the module's text)."""
    path = Path(path)
    header, has_labels, numeric, cases, labels = {}, False, False, [], []
    with open(path, encoding="utf-8") as handle:
        reading_data = False
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not reading_data:
                if not line.startswith("@"):
                    raise ValueError(f"{path}:{number}: expected a header line starting with @ before @data, "
                                     f"got {line[:40]!r}")
                key, _, value = line[1:].partition(" ")
                key = key.lower()
                header[key] = value.strip()
                if key == "data":
                    reading_data = True
                elif key == "timestamps" and value.strip().lower() == "true":
                    raise ValueError(f"{path}:{number}: time-stamped .ts files are not read; give the values only")
                elif key in ("classlabel", "targetlabel"):
                    has_labels = value.split()[0].lower() == "true" if value.split() else False
                    numeric = key == "targetlabel"
                continue
            fields = line.split(":")
            if has_labels:
                if len(fields) < 2:
                    raise ValueError(f"{path}:{number}: expected channels and a label separated by ':', got one field")
                labels.append(fields.pop().strip())
            try:
                channels = [[np.nan if v.strip() == "?" else float(v) for v in field.split(",")] for field in fields]
            except ValueError as error:
                raise ValueError(f"{path}:{number}: {error}") from None
            width = max(len(c) for c in channels)                    # a shorter channel: NaN after its end
            cases.append(np.array([c + [np.nan] * (width - len(c)) for c in channels]))
    if "data" not in header:
        raise ValueError(f"{path}: no @data line; is this a .ts file?")
    if not cases:
        raise ValueError(f"{path}: no cases after @data")
    y = _labels(labels, numeric) if has_labels else None
    return Collection(cases, y, [str(i) for i in range(len(cases))])


def read_csv(path) -> Collection:
    """The cases and labels of a long CSV table (see the module's text)."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise ValueError(f"{path}: the file is empty; expected a header: case, time, channel columns[, label]")
    header = [name.strip() for name in rows[0]]
    has_labels = header[-1].lower() == "label"
    channels = len(header) - 2 - has_labels
    if channels < 1:
        raise ValueError(f"{path}: the header {header} has no channel column; expected case, time, channel "
                         f"columns[, label]")
    steps, labels = {}, {}
    for number, row in enumerate(rows[1:], 2):
        if not row:
            continue
        if len(row) != len(header):
            raise ValueError(f"{path}:{number}: {len(row)} field(s), but the header has {len(header)}")
        case = row[0]
        try:
            time = float(row[1])
            values = [float(v) if v.strip() else np.nan for v in row[2:2 + channels]]
        except ValueError as error:
            raise ValueError(f"{path}:{number}: {error}") from None
        steps.setdefault(case, []).append((time, values))
        if has_labels:
            if labels.setdefault(case, row[-1]) != row[-1]:
                raise ValueError(f"{path}:{number}: case {case!r} has the label {row[-1]!r} here but "
                                 f"{labels[case]!r} above; a case has one label")
    if not steps:
        raise ValueError(f"{path}: no rows after the header")
    cases = []
    for case, found in steps.items():
        times = [t for t, _ in found]
        if len(set(times)) != len(times):
            raise ValueError(f"{path}: case {case!r} has two rows for one time; give one row per case and time")
        order = np.argsort(times, kind="stable")
        cases.append(np.array([found[i][1] for i in order]).T)                     # (channels, time)
    y = _labels([labels[c] for c in steps], numeric=False) if has_labels else None
    return Collection(cases, y, list(steps))


def read_npz(path) -> Collection:
    """The cases (``X``) and labels (``y``, if any) of a NumPy ``.npz`` file (see the module's text)."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as archive:
        if "X" not in archive.files:
            raise ValueError(f"{path}: no array named X (it holds {sorted(archive.files)}); save the cases as X")
        X = archive["X"]
        y = archive["y"] if "y" in archive.files else None
    if X.ndim == 2:
        X = X[:, None, :]
    if X.ndim != 3:
        raise ValueError(f"{path}: X has {X.ndim} dimension(s); expected (cases, channels, time)")
    return Collection(list(X), y, [str(i) for i in range(len(X))])


FORMATS = {".ts": read_ts, ".csv": read_csv, ".npz": read_npz}


def read_collection(path) -> Collection:
    """The collection in ``path``, read by its suffix: ``.ts``, ``.csv`` or ``.npz``.

    >>> read_collection("recordings.xlsx")
    Traceback (most recent call last):
    ...
    ValueError: 'recordings.xlsx' is in no known format: expected a .ts, .csv or .npz file
    """
    path = Path(path)
    reader = FORMATS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"'{path}' is in no known format: expected a .ts, .csv or .npz file")
    if not path.is_file():
        raise FileNotFoundError(f"'{path}' does not exist")
    return reader(path)


def format_predictions(names: list, labels, probabilities: np.ndarray, classes) -> str:
    """The CSV text :func:`write_predictions` writes: a header, then one row per case."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case", "label", *(f"p_{c}" for c in classes)])
    for name, label, row in zip(names, labels, np.asarray(probabilities)):
        writer.writerow([name, label, *(repr(float(p)) for p in row)])     # the shortest text that reads back exactly
    return buffer.getvalue()


def write_predictions(path, names: list, labels, probabilities: np.ndarray, classes) -> None:
    """Write one row per case to the CSV file ``path``, whole or not at all: ``case, label`` and, for
    each class, ``p_<class>``, its probability (the float's exact value as Python writes it).

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "predictions.csv")
    >>> write_predictions(path, ["a", "b"], ["up", "down"], np.array([[0.25, 0.75], [0.9, 0.1]]), ["down", "up"])
    >>> print(open(path).read().strip())
    case,label,p_down,p_up
    a,up,0.25,0.75
    b,down,0.9,0.1
    """
    write_text_atomic(path, format_predictions(names, labels, probabilities, classes))
