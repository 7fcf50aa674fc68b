"""Fuzzing the command line's option values: every outcome of `rnnkit train` and `rnnkit sample` with
values drawn at their edges (0, negatives, NaN, infinities, huge, tiny, words where numbers go) is a run
that succeeds or one error line (argparse's usage error, or "rnnkit <command>: error: ..."), never a
traceback and never a silent success on a value that makes no sense."""
import contextlib
import io
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnkit.cli import main

EDGES = ["0", "-1", "1", "2", "0.5", "1e-30", "1e30", "nan", "inf", "-inf", "3.5", "many", "", "1e400", "-0"]
TRAIN_OPTIONS = ["--hidden-size", "--num-layers", "--embedding-size", "--dropout", "--lr", "--batch-size",
                 "--truncation", "--clip-norm", "--clip-value", "--weight-decay", "--momentum", "--warmup",
                 "--decay-factor", "--eval-every", "--init-scale", "--recurrent-gain",
                 "--validation-fraction", "--test-fraction", "--min-count", "--seed", "--weight-drop",
                 "--embedding-dropout", "--activation-penalty", "--information-flow"]
SAMPLE_OPTIONS = ["--length", "--temperature", "--top-k", "--top-p", "--seed"]
TEXT = "the quick brown fox jumps over the lazy dog.\n" * 60


def run(argv):
    """``(status, stderr)`` of ``rnnkit argv`` run in this process; an escaping exception fails the test."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(argv)
        except SystemExit as exit_:                       # argparse's usage errors
            status = exit_.code
    return status, err.getvalue()


def assert_clean(status, stderr, command):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr
    if status == 0:
        return
    if status == 1:                                   # a run that diverged: said in one line, with the fix
        assert len(lines) == 1 and lines[0].startswith("rnnkit: training stopped: "), stderr
        return
    assert status == 2, stderr
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1, stderr
    assert errors[0].startswith(f"rnnkit {command}: error: ") or lines[0].startswith("usage: rnnkit"), stderr


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    data = root / "text.txt"
    data.write_text(TEXT)
    status, stderr = run(["train", "--data", str(data), "--out", str(root / "trained"), "--hidden-size", "8",
                          "--embedding-size", "4", "--max-steps", "2", "--quiet", "--cache-dir", str(root / "cache")])
    assert status == 0, stderr
    return root


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(options=st.lists(st.tuples(st.sampled_from(TRAIN_OPTIONS), st.sampled_from(EDGES)), min_size=1, max_size=3,
                        unique_by=lambda o: o[0]),
       n=st.integers(0, 10 ** 9))
def test_train_options_at_their_edges_run_or_fail_in_one_line(corpus, options, n):
    argv = ["train", "--data", str(corpus / "text.txt"), "--out", str(corpus / f"run{n}"), "--quiet",
            "--cache-dir", str(corpus / "cache"), "--hidden-size", "8", "--embedding-size", "4"]
    for name, value in options:
        argv += [name, value]
    argv += ["--max-steps", "2", "--max-minutes", "0.5", "--eval-tokens", "200"]   # the limits always hold
    assert_clean(*run(argv), "train")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(options=st.lists(st.tuples(st.sampled_from(SAMPLE_OPTIONS), st.sampled_from(EDGES)), min_size=1, max_size=3,
                        unique_by=lambda o: o[0]))
def test_sample_options_at_their_edges_run_or_fail_in_one_line(corpus, options):
    argv = ["sample", str(corpus / "trained")]
    for name, value in options:
        argv += [name, value]
    if not any(name == "--length" for name, _ in options):
        argv += ["--length", "20"]
    status, stderr = run(argv)
    assert_clean(status, stderr, "sample")
    lengths = [float(v) for name, v in options if name == "--length" and v not in ("many", "")]
    if status == 0 and lengths:                               # a length it accepted is a sane one
        assert math.isfinite(lengths[0]) and lengths[0] >= 1 and lengths[0] <= 1e9
