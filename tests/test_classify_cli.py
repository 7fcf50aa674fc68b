"""The classification command line (rnnkit classify): fit and predict give the library's probabilities
number for number, evaluate prints the numbers evaluate() gives, every mistake is one line that leaves
nothing behind, and without scikit-learn the command says what to install."""
import contextlib
import csv
import io
import re

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from conftest import run_without  # noqa: E402
from rnnkit.classify import read_collection  # noqa: E402
from rnnkit.cli import main  # noqa: E402
from rnnkit.sklearn import RNNClassifier, evaluate, load  # noqa: E402

EPOCHS, SEED = 3, 4                # three epochs a network: a trial of the command, a second on one thread


def cli(argv):
    """``(status, stdout, stderr)`` of ``rnnkit argv`` run in this process (argparse's exits included)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main([str(a) for a in argv])
        except SystemExit as exit_:
            status = exit_.code
    return status, out.getvalue(), err.getvalue()


def recordings(count: int, seed: int, labels=("slow", "fast")):
    """``count`` cases of 2 channels and 8 to 15 steps, waves slow or fast, with their labels."""
    rng = np.random.default_rng(seed)
    cases, names = [], []
    for i in range(count):
        t = np.arange(rng.integers(8, 16))
        speed = (0.3, 1.2)[i % 2]
        cases.append(np.sin(speed * t + rng.uniform(0, 6, size=(2, 1))) + 0.2 * rng.normal(size=(2, len(t))))
        names.append(labels[i % 2])
    return cases, names


def write_csv(path, cases, labels=None) -> None:
    """The long CSV table of ``cases``: case, time, a, b[, label]."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "time", "a", "b", *(["label"] if labels is not None else [])])
        for i, case in enumerate(cases):
            for step in range(case.shape[1]):
                writer.writerow([f"c{i}", step, *(repr(float(v)) for v in case[:, step]), *([labels[i]] if labels is not None else [])])


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                      # a small network: one thread is as fast, and never oversubscribed
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """``train.csv`` and ``test.csv`` (labelled), and the model ``rnnkit classify fit`` saved from
    ``train.csv``, with what it printed."""
    root = tmp_path_factory.mktemp("classify")
    write_csv(root / "train.csv", *recordings(24, 0))
    write_csv(root / "test.csv", *recordings(10, 1))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        printed = cli(["classify", "fit", "--train", root / "train.csv", "--epochs", EPOCHS, "--seed", SEED,
                       "--out", root / "model"])
    finally:
        torch.set_num_threads(threads)
    return root, printed


def read_predictions(source):
    rows = list(csv.reader(source))
    return rows[0], [row[0] for row in rows[1:]], [row[1] for row in rows[1:]], \
        np.array([[float(v) for v in row[2:]] for row in rows[1:]])


# ----- what the commands compute -------------------------------------------------------------------------

def test_fit_and_predict_give_the_probabilities_the_library_gives(files, tmp_path):
    root, (status, out, err) = files
    assert status == 0, err
    assert out == (f"saved to {root / 'model'}: 24 cases, 2 classes (fast, slow), 2 channels; predict with: "
                   f"rnnkit classify predict {root / 'model'} --data FILE\n")
    assert re.search(r"fit: +\d+%.* \d+/15 \[", err), err                   # the progress bar: 5 networks x 3 epochs
    status, out, err = cli(["classify", "predict", root / "model", "--data", root / "test.csv"])
    assert (status, err) == (0, "")
    header, names, labels, probabilities = read_predictions(io.StringIO(out))
    test = read_collection(root / "test.csv")
    saved = load(root / "model")                                      # the folder the command wrote, read by the API
    assert header == ["case", "label", "p_fast", "p_slow"] and names == [f"c{i}" for i in range(10)]
    np.testing.assert_array_equal(probabilities, saved.predict_proba(test.X))             # exactly: repr round-trips
    assert labels == saved.predict(test.X).tolist()
    X, y = read_collection(root / "train.csv")[:2]
    fitted = RNNClassifier(max_epochs=EPOCHS, random_state=SEED).fit(X, y)                # the same fit, by the API
    np.testing.assert_array_equal(probabilities, fitted.predict_proba(test.X))

    status, out, err = cli(["classify", "predict", root / "model", "--data", root / "test.csv",
                            "--output", tmp_path / "predictions.csv"])
    assert (status, out, err) == (0, f"wrote {tmp_path / 'predictions.csv'}: 10 cases\n", "")
    with open(tmp_path / "predictions.csv", newline="") as handle:
        np.testing.assert_array_equal(read_predictions(handle)[3], probabilities)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.csv"]             # no temporary file left


def test_evaluate_prints_the_numbers_of_evaluate(files):
    root, _ = files
    status, out, err = cli(["classify", "evaluate", root / "model", "--data", root / "test.csv"])
    assert status == 0, err
    test = read_collection(root / "test.csv")
    result = evaluate(load(root / "model"), test.X, test.y)
    lines = out.splitlines()
    assert lines[0] == "10 cases, 2 classes"
    assert lines[1].split() == ["accuracy", f"{result.accuracy:.3f}"]
    assert lines[2].split() == ["balanced", "accuracy", f"{result.balanced_accuracy:.3f}"]
    assert lines[3] == "" and lines[4].split() == ["class", "F1", "cases"]
    assert [line.split() for line in lines[5:]] == [[label, f"{f1:.3f}", "5"] for label, f1 in result.f1.items()]
    assert len({len(line) for line in lines[1:3]}) == len({len(line) for line in lines[4:]}) == 1     # aligned


def test_plot_writes_the_confusion_matrix_as_png(files, tmp_path):
    root, _ = files
    status, _, err = cli(["classify", "evaluate", root / "model", "--data", root / "test.csv",
                          "--plot", tmp_path / "confusion.png"])
    assert status == 0, err
    picture = (tmp_path / "confusion.png").read_bytes()
    assert len(picture) > 1000 and picture.startswith(b"\x89PNG\r\n\x1a\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confusion.png"]


def test_regression_predicts_and_scores_numbers(tmp_path):
    cases, names = recordings(16, 2)
    targets = [repr(float(case.shape[1])) for case in cases]                       # the length, to predict
    write_csv(tmp_path / "train.csv", cases, targets)
    status, out, err = cli(["classify", "fit", "--train", tmp_path / "train.csv", "--regression", "--epochs", 2,
                            "--out", tmp_path / "model", "--quiet"])
    assert (status, err) == (0, "")
    assert out.startswith(f"saved to {tmp_path / 'model'}: 16 cases, a numeric target, 2 channels;")
    status, out, _ = cli(["classify", "predict", tmp_path / "model", "--data", tmp_path / "train.csv"])
    header, _, labels, _ = read_predictions(io.StringIO(out))
    X = read_collection(tmp_path / "train.csv").X
    assert status == 0 and header == ["case", "label"]
    np.testing.assert_array_equal([float(v) for v in labels], load(tmp_path / "model").predict(X))
    status, out, _ = cli(["classify", "evaluate", tmp_path / "model", "--data", tmp_path / "train.csv"])
    assert status == 0 and [line.split()[0] for line in out.splitlines()] == ["16", "MAE", "RMSE", "R²"]


# ----- mistakes ------------------------------------------------------------------------------------------

def _mistakes(root, tmp):
    model, train = root / "model", root / "train.csv"
    return [
        (["classify", "fit", "--train", tmp / "cases.xlsx", "--out", tmp / "new"],
         f"'{tmp / 'cases.xlsx'}' is in no known format: expected a .ts, .csv or .npz file"),
        (["classify", "fit", "--train", tmp / "absent.csv", "--out", tmp / "new"], f"'{tmp / 'absent.csv'}' does not "
                                                                                   f"exist"),
        (["classify", "fit", "--train", train, "--out", model],
         f"--out '{model}' exists; name a new folder (a model is saved whole, never over another)"),
        (["classify", "fit", "--train", tmp / "unlabelled.csv", "--out", tmp / "new"],
         f"'{tmp / 'unlabelled.csv'}' has no labels; give each case one (a label column, @classLabel true, or y in "
         f"the .npz)"),
        (["classify", "fit", "--train", train, "--regression", "--out", tmp / "new"],
         f"'{train}' has labels that are not numbers, such as 'slow'; --regression needs numeric targets"),
        (["classify", "fit", "--train", train, "--seed", "-1", "--out", tmp / "new"],
         "--seed must be a non-negative integer, got -1"),
        (["classify", "fit", "--train", train, "--time-limit", "0", "--out", tmp / "new"],
         "--time-limit must be in (0, inf), got 0.0"),
        (["classify", "predict", model, "--data", tmp / "one_channel.npz"],
         "X has 1 channel(s) but the model was fitted on 2; give the channels it was trained with"),
        (["classify", "predict", tmp, "--data", train],
         f"'{tmp}' holds no saved model (no model.json); pass the folder save() wrote"),
        (["classify", "predict", model, "--data", train, "--output", tmp], f"--output '{tmp}' is a folder; name a file "
                                                                           f"(predictions.csv)"),
        (["classify", "evaluate", model, "--data", tmp / "unseen.csv"],
         "label 'medium' (case 0) was not seen in training; the model knows 'fast', 'slow'"),
        (["classify", "evaluate", model, "--data", tmp / "unlabelled.csv"],
         f"'{tmp / 'unlabelled.csv'}' has no labels; give each case one (a label column, @classLabel true, or y in "
         f"the .npz)"),
        (["classify", "evaluate", model, "--data", train, "--plot", tmp / "confusion.jpg"],
         f"--plot '{tmp / 'confusion.jpg'}' does not end in .png; name the picture NAME.png")]


def test_each_mistake_is_one_line_and_writes_nothing(files, tmp_path):
    root, _ = files
    cases, labels = recordings(3, 5)
    write_csv(tmp_path / "unlabelled.csv", cases)
    write_csv(tmp_path / "unseen.csv", cases, ["medium", "slow", "fast"])
    np.savez(tmp_path / "one_channel.npz", X=np.zeros((3, 1, 10)))
    before = sorted(tmp_path.iterdir()), sorted((root / "model").iterdir()), sorted(root.iterdir())
    for argv, message in _mistakes(root, tmp_path):
        assert cli(argv) == (2, "", f"rnnkit classify: error: {message}\n"), argv
    assert (sorted(tmp_path.iterdir()), sorted((root / "model").iterdir()), sorted(root.iterdir())) == before


@pytest.mark.parametrize("argv, message", [
    (["fit", "--train", "x.csv", "--out", "o", "--epochs", "0"], "--epochs must be at least 1, got 0"),
    (["predict", "DIR"], "the following arguments are required: --data"),
    ([], "the following arguments are required: ACTION")])
def test_usage_errors_are_argparse_s(argv, message):
    status, out, err = cli(["classify", *argv])
    assert status == 2 and out == "" and message in err.splitlines()[-1]


def test_without_scikit_learn_the_command_says_what_to_install():
    code = ("from rnnkit.cli import main\n"
            "print(main(['classify', 'fit', '--train', 'x.csv', '--out', 'o']))\n"
            "main(['--help'])\n")
    result = run_without("sklearn", code)
    assert result.stderr == 'rnnkit classify: error: classifying needs scikit-learn, which is not installed: pip ' \
                            'install "rnnkit[classify]"\n'
    assert result.stdout.startswith("2\nusage: rnnkit") and "classify  classify collections" in result.stdout
