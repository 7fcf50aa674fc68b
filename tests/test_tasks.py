"""The long-dependency task generators: structure, determinism, baselines, errors."""
import math
import re
import sys
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from rnnkit.data.reber import _AUTOMATON
from rnnkit.data.tasks import (REBER_SYMBOLS, TASKS, Task, adding_problem, copy_memory, delayed_recall, digits_rows,
                               embedded_reber, is_valid_prediction, make_task, parity, reber_accepts,
                               reber_next_symbols)

SMALL = {"adding_problem": dict(num_sequences=6, length=9),
         "copy_memory": dict(num_sequences=6, delay=5, num_symbols=3, copy_length=4),
         "parity": dict(num_sequences=6, length=7, variable_length=True),
         "embedded_reber": dict(num_sequences=6),
         "delayed_recall": dict(num_sequences=6, delay=4, num_symbols=3)}
RANDOM = sorted(SMALL)


def exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


def strings_of(task: Task) -> list[str]:
    ids = task.inputs.argmax(-1)
    return ["".join(REBER_SYMBOLS[i] for i in row[:n]) for row, n in zip(ids, task.lengths)]


def multi_hot(symbols: str) -> list[float]:
    return [float(s in symbols) for s in REBER_SYMBOLS]


# ----- every task ------------------------------------------------------------------------------
EXPECTED = {  # name: inputs shape, inputs dtype, targets shape, targets dtype, kind, input_size, output_size
    "adding_problem": ((6, 9, 2), torch.float32, (6, 1), torch.float32, "regression", 2, 1),
    "copy_memory": ((6, 13), torch.long, (6, 13), torch.long, "tagging", 5, 4),
    "parity": ((6, 7, 1), torch.float32, (6,), torch.long, "classification", 1, 2),
    "delayed_recall": ((6, 5, 4), torch.float32, (6,), torch.long, "classification", 4, 3),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shapes_dtypes_and_sizes(name):
    task = make_task(name, **SMALL[name])
    shape, dtype, target_shape, target_dtype, kind, input_size, output_size = EXPECTED[name]
    assert (tuple(task.inputs.shape), task.inputs.dtype) == (shape, dtype)
    assert (tuple(task.targets.shape), task.targets.dtype) == (target_shape, target_dtype)
    assert (task.kind, task.input_size, task.output_size, task.name, len(task)) == (
        kind, input_size, output_size, name, 6)
    if task.targets.dtype == torch.long:
        assert 0 <= int(task.targets.min()) and int(task.targets.max()) < output_size
    if task.inputs.dtype == torch.long:
        assert 0 <= int(task.inputs.min()) and int(task.inputs.max()) < input_size


def test_task_is_frozen_and_checks_its_fields():
    task = parity(2, 3)
    with pytest.raises(AttributeError):
        task.baseline = 0.0
    with pytest.raises(ValueError, match=exactly("Task: kind must be one of ['regression', 'classification', "
                                                 "'tagging'], got 'ranking'")):
        Task(task.inputs, task.targets, None, "ranking", 0.0, 1, 2, "x")
    with pytest.raises(ValueError, match=exactly("Task: inputs, targets and lengths must have the same first "
                                                 "dimension, got 2, 1")):
        Task(task.inputs, task.targets[:1], None, "classification", 0.0, 1, 2, "x")


@pytest.mark.parametrize("name", RANDOM)
def test_same_seed_same_data_other_seed_other_data(name):
    first, again, other = (make_task(name, **SMALL[name], seed=s) for s in (3, 3, 4))
    fields = ("inputs", "targets", "lengths")
    for field in fields:
        a, b = getattr(first, field), getattr(again, field)
        assert (a is None and b is None) or torch.equal(a, b), field
    assert not all(torch.equal(getattr(first, f), getattr(other, f)) for f in ("inputs", "targets"))
    from_generator = make_task(name, **SMALL[name], generator=torch.Generator().manual_seed(3))
    assert torch.equal(from_generator.inputs, first.inputs)
    assert torch.equal(make_task(name, **SMALL[name]).inputs, make_task(name, **SMALL[name], seed=0).inputs)


# ----- adding problem --------------------------------------------------------------------------
@pytest.mark.parametrize("length", [2, 9, 10])
def test_adding_two_markers_one_per_half_target_is_their_sum(length):
    task = adding_problem(200, length, seed=1)
    values, markers = task.inputs[..., 0], task.inputs[..., 1]
    half = length // 2
    assert set(markers.unique().tolist()) <= {0.0, 1.0}
    assert markers[:, :half].sum(1).tolist() == [1.0] * 200
    assert markers[:, half:].sum(1).tolist() == [1.0] * 200
    assert 0 <= float(values.min()) and float(values.max()) < 1
    assert torch.equal(task.targets.squeeze(1), (values * markers).sum(1))
    if length == 10:  # every position of each half is used
        assert set(markers.argmax(1).tolist()) == set(range(half))


def test_adding_baseline_is_the_mse_of_predicting_one():
    task = adding_problem(20_000, 10, seed=2)
    assert task.baseline == 1 / 6
    assert abs(float(((task.targets - 1) ** 2).mean()) - 1 / 6) < 0.01


# ----- copy memory -----------------------------------------------------------------------------
def test_copy_memory_structure():
    delay, symbols, copy = 7, 5, 3
    task = copy_memory(50, delay, num_symbols=symbols, copy_length=copy, seed=0)
    steps = delay + 2 * copy
    x, y = task.inputs, task.targets
    assert x.shape == y.shape == (50, steps)
    assert 1 <= int(x[:, :copy].min()) and int(x[:, :copy].max()) <= symbols
    assert (x[:, copy:copy + delay] == 0).all()
    assert (x[:, copy + delay] == symbols + 1).all()                    # the delimiter, once
    assert ((x == symbols + 1).sum(1) == 1).all()
    assert (x[:, copy + delay + 1:] == 0).all()
    assert (y[:, : steps - copy] == 0).all()
    assert torch.equal(y[:, steps - copy:], x[:, :copy])


@pytest.mark.parametrize("delay", [0, 30])
def test_copy_memory_baseline_is_the_memoryless_cross_entropy(delay):
    task = copy_memory(40, delay, seed=5)
    steps, copy, symbols = delay + 20, 10, 8
    assert task.baseline == pytest.approx(10 * math.log(8) / (delay + 20), rel=1e-12)
    probs = torch.zeros(steps, symbols + 1, dtype=torch.float64)        # blanks, then a uniform guess
    probs[: steps - copy, 0] = 1.0
    probs[steps - copy:, 1:] = 1.0 / symbols
    log_probs = probs.log().expand(40, steps, symbols + 1)
    loss = F.nll_loss(log_probs.reshape(-1, symbols + 1), task.targets.reshape(-1))
    assert float(loss) == pytest.approx(task.baseline, rel=1e-12)


# ----- parity ----------------------------------------------------------------------------------
def test_parity_is_xor_over_valid_steps_and_padding_is_zero():
    task = parity(300, 8, variable_length=True, seed=6)
    bits = task.inputs.squeeze(-1)
    assert set(task.lengths.tolist()) == set(range(2, 9))
    for row, n, target in zip(bits.tolist(), task.lengths.tolist(), task.targets.tolist()):
        assert all(b in (0.0, 1.0) for b in row[:n]) and row[n:] == [0.0] * (8 - n)
        xor = 0
        for b in row[:n]:
            xor ^= int(b)
        assert target == xor
    fixed = parity(100, 5, seed=6)
    assert fixed.lengths is None
    assert torch.equal(fixed.targets, fixed.inputs.squeeze(-1).long().sum(1) % 2)
    assert fixed.baseline == math.log(2)
    assert 0.3 < float(task.targets.float().mean()) < 0.7


# ----- embedded Reber --------------------------------------------------------------------------
def test_every_generated_string_is_grammatical_and_padded_with_zeros():
    task = embedded_reber(300, seed=7)
    strings = strings_of(task)
    assert all(reber_accepts(s) for s in strings)
    assert all(s[1] == s[-2] for s in strings)
    assert int(task.lengths.min()) == 9
    for x, y, n in zip(task.inputs, task.targets, task.lengths.tolist()):
        assert (x[:n].sum(-1) == 1).all() and (x[n:] == 0).all() and (y[n - 1:] == 0).all()


@pytest.mark.parametrize("string, embedded, accepted", [
    ("BTBTXSETE", True, True), ("BPBPVVEPE", True, True), ("BTBTSSXXTVVETE", True, True),
    ("BPBPTVPSEPE", True, True),
    ("BTBTXSEPE", True, False),                 # the second symbol must come back
    ("BTBTXSET", True, False), ("BTBTXSETEE", True, False), ("", True, False), ("BTXSE", True, False),
    ("BTBTXXETE", True, False), ("BTBTXSETE ", True, False), ("btbtxsete", True, False),
    ("BTSSXXTVVE", False, True), ("BPVVE", False, True), ("BTXSE", False, True),
    ("BTXXVVE", False, True), ("BTSXE", False, False), ("BPVE", False, False), ("BTBTXSETE", False, False),
])
def test_reber_accepts(string, embedded, accepted):
    assert reber_accepts(string, embedded=embedded) is accepted


def test_next_symbol_sets_of_a_hand_checked_string():
    string = "BPBTSXXVPSEPE"
    expected = ["TP", "B", "TP", "SX", "SX", "SX", "TV", "PV", "SX", "E", "P", "E", ""]
    assert [reber_next_symbols(string[:t]) for t in range(1, len(string) + 1)] == expected
    assert reber_next_symbols("") == "B"
    assert reber_next_symbols("BPVV", embedded=False) == "E"
    assert reber_next_symbols("BPVVE", embedded=False) == ""


def test_reber_targets_are_the_next_symbol_sets():
    task = embedded_reber(40, seed=8)
    for string, y in zip(strings_of(task), task.targets):
        want = [multi_hot(reber_next_symbols(string[: t + 1])) for t in range(len(string))]
        assert y[: len(string)].tolist() == want
        assert y[len(string) - 3].tolist() == multi_hot(string[1])     # the long dependency


def test_expected_reber_length_is_twelve():
    # Brute force over the automaton: E[symbols still to come] solves L(s) = 1 + mean over edges of L(next).
    states = [s for s in _AUTOMATON if s != "end"]
    index = {s: i for i, s in enumerate(states)}
    system, ones = torch.eye(len(states), dtype=torch.float64), torch.ones(len(states), dtype=torch.float64)
    for s, edges in _AUTOMATON.items():
        for _, after in edges:
            if after != "end":
                system[index[s], index[after]] -= 1 / len(edges)
    expected = torch.linalg.solve(system, ones)
    assert float(expected[index["start"]]) == pytest.approx(12, rel=1e-12)
    inner = expected[index[("T", 0)]] - expected[index[("T", 7)]]   # a plain Reber string, B to E
    assert float(inner) == pytest.approx(8, rel=1e-12)


def test_reber_baseline_is_the_loss_of_forgetting_the_second_symbol():
    task = embedded_reber(5000, seed=9)
    assert task.baseline == pytest.approx(math.log(2) / 6, rel=1e-12)
    rows = torch.arange(len(task))
    forgetful = task.targets.clone()
    critical = task.lengths - 3                                        # the step reading the inner E
    forgetful[rows, critical, REBER_SYMBOLS.index("T")] = 0.5
    forgetful[rows, critical, REBER_SYMBOLS.index("P")] = 0.5
    per_step = F.binary_cross_entropy(forgetful, task.targets, reduction="none").sum(-1)   # (N, T)
    loss = float(per_step.sum() / task.lengths.sum())                  # padding costs 0: both are 0
    assert loss == pytest.approx(2 * math.log(2) * len(task) / float(task.lengths.sum()), rel=1e-6)
    assert abs(loss - task.baseline) < 0.002
    assert not is_valid_prediction(forgetful, task.targets, task.lengths).any()
    guess_t = forgetful.clone()
    guess_t[rows, critical, REBER_SYMBOLS.index("T")] = 0.6
    solved = is_valid_prediction(guess_t, task.targets, task.lengths)
    assert torch.equal(solved, task.inputs[:, 1, REBER_SYMBOLS.index("T")].bool())


def test_is_valid_prediction_ignores_padding_and_checks_every_valid_step():
    task = embedded_reber(3, seed=10)
    assert int(task.lengths[0]) < task.targets.shape[1]
    noisy = task.targets.clone()
    noisy[0, int(task.lengths[0]):] = 1.0                              # padding: ignored
    noisy[1, 0, REBER_SYMBOLS.index("E")] = 0.7                        # an illegal symbol predicted
    noisy[2, 2, :] = 0.4 * task.targets[2, 2]                          # legal ones below threshold
    assert is_valid_prediction(noisy, task.targets, task.lengths).tolist() == [True, False, False]
    assert is_valid_prediction(noisy, task.targets).tolist() == [False, False, False]


# ----- delayed recall --------------------------------------------------------------------------
def test_delayed_recall_structure():
    task = delayed_recall(400, delay=6, num_symbols=3, noise_std=2.0, seed=11)
    x, symbols = task.inputs, task.targets
    assert x.shape == (400, 7, 4)
    assert torch.equal(x[:, 0, :3], F.one_hot(symbols, 3).float()) and (x[:, 0, 3] == 0).all()
    assert (x[:, 1:, :3] == 0).all()
    assert abs(float(x[:, 1:, 3].std()) - 2.0) < 0.1
    assert torch.bincount(symbols, minlength=3).min() > 100
    assert task.baseline == math.log(3) and task.lengths is None


# ----- digits ----------------------------------------------------------------------------------
def test_digits_split_sizes_union_and_stratification():
    datasets = pytest.importorskip("sklearn.datasets")
    train, test = digits_rows("train"), digits_rows("test")
    assert (len(train), len(test)) == (1348, 449)
    assert train.inputs.shape == (1348, 8, 8) and test.targets.dtype == torch.long
    assert 0 <= float(train.inputs.min()) and float(train.inputs.max()) == 1.0
    assert (train.kind, train.input_size, train.output_size, train.baseline) == (
        "classification", 8, 10, math.log(10))
    full = datasets.load_digits()
    rows = lambda images, labels: Counter(zip(map(tuple, images.reshape(len(images), -1).tolist()),
                                              labels.tolist()))
    assert rows(torch.cat([train.inputs, test.inputs]) * 16, torch.cat([train.targets, test.targets])) == \
        rows(torch.as_tensor(full.images), torch.as_tensor(full.target))
    counts = torch.bincount(torch.as_tensor(full.target), minlength=10).double()
    assert (torch.bincount(test.targets, minlength=10) - 0.25 * counts).abs().max() < 1
    assert torch.equal(digits_rows("test").inputs, test.inputs)
    assert not torch.equal(digits_rows("test", seed=1).inputs, test.inputs)
    assert len(digits_rows("test", test_fraction=0.1)) == 180


def test_digits_without_scikit_learn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=exactly("digits_rows: needs scikit-learn for its bundled digits; "
                                                  "install it with pip install scikit-learn")):
        digits_rows()


# ----- registry and errors ---------------------------------------------------------------------
def test_registry_lists_every_generator():
    assert sorted(TASKS) == ["adding_problem", "copy_memory", "delayed_recall", "digits_rows",
                             "embedded_reber", "flip_flop", "parity"]
    assert all(make_task(name, **SMALL[name]).name == name for name in RANDOM)
    with pytest.raises(ValueError, match=exactly(
            "make_task: unknown task 'adding'; choose one of ['adding_problem', 'copy_memory', "
            "'delayed_recall', 'digits_rows', 'embedded_reber', 'flip_flop', 'parity']")):
        make_task("adding", num_sequences=2, length=4)


@pytest.mark.parametrize("call, error, message", [
    (lambda: adding_problem(4, 1), ValueError,
     "adding_problem: length must be an integer >= 2, got 1; one marker goes in each half"),
    (lambda: adding_problem(0, 5), ValueError, "adding_problem: num_sequences must be a positive integer, got 0"),
    (lambda: adding_problem(4, 5.0), TypeError, "adding_problem: length must be an int, got float"),
    (lambda: adding_problem(True, 5), TypeError, "adding_problem: num_sequences must be an int, got bool"),
    (lambda: adding_problem(4, 5, seed=1, generator=torch.Generator()), ValueError,
     "adding_problem: pass either generator or seed, not both"),
    (lambda: adding_problem(4, 5, generator=1), TypeError,
     "adding_problem: generator must be a torch.Generator, got int"),
    (lambda: adding_problem(4, 5, seed="1"), TypeError, "adding_problem: seed must be an int, got str"),
    (lambda: copy_memory(4, -1), ValueError, "copy_memory: delay must be a non-negative integer, got -1"),
    (lambda: copy_memory(4, 10, num_symbols=1), ValueError, "copy_memory: num_symbols must be an integer >= 2, got 1"),
    (lambda: copy_memory(4, 10, copy_length=0), ValueError, "copy_memory: copy_length must be a positive integer, got 0"),
    (lambda: parity(4, 1), ValueError, "parity: length must be an integer >= 2, got 1"),
    (lambda: parity(4, 5, variable_length=1), TypeError, "parity: variable_length must be True or False, got int"),
    (lambda: embedded_reber(-2), ValueError, "embedded_reber: num_sequences must be a positive integer, got -2"),
    (lambda: delayed_recall(4, 0), ValueError, "delayed_recall: delay must be a positive integer, got 0"),
    (lambda: delayed_recall(4, 3, noise_std=-1.0), ValueError,
     "delayed_recall: noise_std must be a finite number >= 0, got -1.0"),
    (lambda: delayed_recall(4, 3, noise_std="1"), TypeError, "delayed_recall: noise_std must be a number, got str"),
    (lambda: digits_rows(test_fraction="0.2"), TypeError, "digits_rows: test_fraction must be a number, got str"),
    (lambda: digits_rows("valid"), ValueError, "digits_rows: split must be 'train' or 'test', got 'valid'"),
    (lambda: digits_rows(test_fraction=1.0), ValueError,
     "digits_rows: test_fraction must be in (0, 1), got 1.0"),
    (lambda: digits_rows(test_fraction=1e-5), ValueError,
     "digits_rows: test_fraction 1e-05 leaves an empty split of the 1797 images"),
    (lambda: make_task(3), TypeError, "make_task: name must be a string, one of ['adding_problem', 'copy_memory', "
                                      "'delayed_recall', 'digits_rows', 'embedded_reber', 'flip_flop', "
                                      "'parity'], got int"),
    (lambda: reber_accepts(["B"]), TypeError, "reber_accepts: expected a string over 'BTSXPVE', got list"),
    (lambda: reber_next_symbols("BTBQ"), ValueError,
     "reber_next_symbols: 'BTBQ' does not begin any string of the embedded Reber grammar"),
    (lambda: reber_next_symbols("BPVE", embedded=False), ValueError,
     "reber_next_symbols: 'BPVE' does not begin any string of the Reber grammar"),
    (lambda: is_valid_prediction(torch.zeros(2, 3, 7), torch.zeros(2, 4, 7)), ValueError,
     "is_valid_prediction: expected probabilities and targets of the same shape (N, T, symbols), "
     "got (2, 3, 7) and (2, 4, 7)"),
    (lambda: is_valid_prediction(torch.zeros(2, 3, 7), torch.zeros(2, 3, 7), torch.tensor([3])), ValueError,
     "is_valid_prediction: expected lengths as a tensor of shape (2,), got (1,)"),
])
def test_bad_arguments_say_what_was_expected(call, error, message):
    with pytest.raises(error, match=exactly(message)):
        call()
