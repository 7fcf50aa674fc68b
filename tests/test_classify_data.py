"""rnnkit.classify's collections and files: the same cases from .ts (checked against aeon's reader on the
archive's files where aeon is installed), CSV and .npz; each bad file's one line."""
import re

import numpy as np
import pytest

from rnnkit.classify import as_cases
from rnnkit.classify.files import read_collection

TS = """# a comment
@problemName Tiny
@timeStamps false
@missing true
@univariate false
@dimensions 2
@equalLength false
@classLabel true up down
@data
1,2,3:4,5,6:up
7,8:9,?:down
"""


def cases_of_tiny():
    return [np.array([[1.0, 2, 3], [4, 5, 6]]), np.array([[7.0, 8], [9, np.nan]])]


def assert_same_cases(found, expected):
    assert len(found) == len(expected)
    for a, b in zip(found, expected):
        np.testing.assert_array_equal(a, b)


def test_the_same_cases_from_ts_csv_and_npz(tmp_path):
    (tmp_path / "tiny.ts").write_text(TS)
    ts = read_collection(tmp_path / "tiny.ts")
    assert_same_cases(ts.X, cases_of_tiny())
    assert ts.y.tolist() == ["up", "down"]

    rows = ["case,time,pressure,flow,label", "b,1,8,,down", "a,2,3,6,up", "a,0,1,4,up", "b,0,7,9,down", "a,1,2,5,up"]
    (tmp_path / "tiny.csv").write_text("\n".join(rows) + "\n")
    table = read_collection(tmp_path / "tiny.csv")
    assert table.names == ["b", "a"] and table.y.tolist() == ["down", "up"]
    assert_same_cases(table.X, cases_of_tiny()[::-1])

    X = np.full((2, 2, 3), np.nan)
    X[0], X[1, :, :2] = cases_of_tiny()[0], cases_of_tiny()[1]
    np.savez(tmp_path / "tiny.npz", X=X, y=np.array(["up", "down"]))
    npz = read_collection(tmp_path / "tiny.npz")
    assert npz.y.tolist() == ["up", "down"]
    # NaN at the end of a case is padding: the checked cases agree across the three formats
    with pytest.raises(ValueError, match=re.escape("case 1 has NaN at step 1 of channel 1, inside the sequence")):
        as_cases(npz.X)
    X[1, 1, 1] = 10.0
    np.savez(tmp_path / "whole.npz", X=X)
    whole = read_collection(tmp_path / "whole.npz")
    assert whole.y is None
    assert [c.shape for c in as_cases(whole.X)] == [(2, 3), (2, 2)]


def test_csv_without_labels_and_unlabelled_ts(tmp_path):
    (tmp_path / "plain.csv").write_text("case,time,x\n1,0,0.5\n1,1,1.5\n2,0,2.5\n")
    plain = read_collection(tmp_path / "plain.csv")
    assert plain.y is None and plain.names == ["1", "2"]
    assert_same_cases(plain.X, [np.array([[0.5, 1.5]]), np.array([[2.5]])])
    (tmp_path / "plain.ts").write_text("@problemName P\n@univariate true\n@classLabel false\n@data\n1,2\n3,4,5\n")
    ts = read_collection(tmp_path / "plain.ts")
    assert ts.y is None and [c.tolist() for c in ts.X] == [[[1.0, 2.0]], [[3.0, 4.0, 5.0]]]


@pytest.mark.parametrize("name", ["JapaneseVowels", "BasicMotions", "ItalyPowerDemand"])
def test_the_archives_files_read_as_aeon_reads_them(name):
    pytest.importorskip("aeon")
    from pathlib import Path

    import aeon
    from aeon.datasets import load_from_ts_file

    path = Path(aeon.__file__).parent / "datasets" / "data" / name / f"{name}_TRAIN.ts"
    X, y = load_from_ts_file(str(path))
    ours = read_collection(path)
    assert [label.lower() for label in ours.y] == list(y)        # aeon lowercases labels; we keep the file's
    assert_same_cases(as_cases(ours.X), as_cases(X))


def test_each_bad_file_is_one_line(tmp_path):
    def bad(message, name, text):
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match="^" + re.escape(message.format(path=tmp_path / name)) + "$"):
            read_collection(tmp_path / name)

    with pytest.raises(ValueError, match="^" + re.escape("'cases.xlsx' is in no known format: expected a .ts, "
                                                         ".csv or .npz file") + "$"):
        read_collection("cases.xlsx")
    with pytest.raises(FileNotFoundError, match=re.escape("does not exist")):
        read_collection(tmp_path / "missing.csv")
    bad("{path}: no @data line; is this a .ts file?", "header.ts", "@problemName P\n")
    bad("{path}:2: could not convert string to float: 'x'", "word.ts", "@data\n1,x\n")
    bad("{path}:2: time-stamped .ts files are not read; give the values only", "stamped.ts",
        "@problemName P\n@timeStamps true\n@data\n")
    bad("{path}:3: 2 field(s), but the header has 3", "short.csv", "case,time,x\n1,0,1\n1,1\n")
    bad("{path}:3: case '1' has the label 'b' here but 'a' above; a case has one label", "labels.csv",
        "case,time,x,label\n1,0,1,a\n1,1,2,b\n")
    bad("{path}: case '1' has two rows for one time; give one row per case and time", "twice.csv",
        "case,time,x\n1,0,1\n1,0,2\n")
    bad("{path}: the header ['case', 'time', 'label'] has no channel column; expected case, time, channel "
        "columns[, label]", "nochannel.csv", "case,time,label\n1,0,a\n")
    np.savez(tmp_path / "other.npz", data=np.zeros(3))
    with pytest.raises(ValueError, match=re.escape("no array named X (it holds ['data']); save the cases as X")):
        read_collection(tmp_path / "other.npz")


def test_predictions_are_written_one_row_per_case_with_each_class_probability(tmp_path):
    import csv

    from rnnkit.classify import write_predictions

    probabilities = np.array([[0.123456789, 0.876543211], [1.0, 0.0]])
    write_predictions(tmp_path / "out.csv", ["case-1", "case-2"], [7, 3], probabilities, [3, 7])
    rows = list(csv.reader(open(tmp_path / "out.csv")))
    assert rows[0] == ["case", "label", "p_3", "p_7"]
    assert rows[1][:2] == ["case-1", "7"] and rows[2] == ["case-2", "3", "1.0", "0.0"]
    assert [float(v) for v in rows[1][2:]] == probabilities[0].tolist()           # exactly the API's numbers
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]                   # no temporary file left
