"""rnnkit.sklearn's estimators and rnnkit.classify's recipe: scikit-learn's estimator checks, the
ecosystem (Pipeline, GridSearchCV, cross_val_score), ragged cases read as if alone, normalization from
the training cases only, saving, and every bad input's one line, word for word."""
import re

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from conftest import run_without  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from rnnkit.classify import PooledRNN, Recipe, ReservoirReadout, as_cases, batch_cases  # noqa: E402
from rnnkit.classify.training import balanced_weights, train_members, validation_split  # noqa: E402
from rnnkit.sklearn import RNNClassifier, RNNRegressor, evaluate, load  # noqa: E402

torch.set_num_threads(1)

SMALL = {"hidden_size": 8, "members": 1, "reservoir_size": 30, "max_epochs": 5, "random_state": 0}

# scikit-learn's checks read a 2-D X as (n_samples, n_features); aeon's convention, which these
# estimators follow, reads it as (cases, time): univariate series whose length may differ from fit
# to predict. The checks below assume the tabular reading.
TABULAR = {
    "check_n_features_in": "n_features_in_ is the number of channels (1 for a 2-D X), not X.shape[1], "
                           "which is the series' length",
    "check_n_features_in_after_fitting": "a 2-D X's second axis is time: series of another length are legal "
                                         "at predict, so X.shape[1] may differ from fit",
    "check_estimators_empty_data_messages": "a (cases, 0) X is a collection of empty series, reported as "
                                            "'case 0 is empty (no time steps); drop it', not in "
                                            "scikit-learn's words about features",
}
EXPECTED_FAILURES = {
    "RNNClassifier": {**TABULAR, "check_classifiers_train": "it asserts that predict refuses a different "
                      "number of columns (legal here: another length); its accuracy part is "
                      "test_an_easy_task_is_learned_through_pipeline_grid_search_and_cross_validation"},
    "RNNRegressor": TABULAR,
}


@parametrize_with_checks([RNNClassifier(**SMALL), RNNRegressor(**SMALL)],
                         expected_failed_checks=lambda estimator: EXPECTED_FAILURES[type(estimator).__name__])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def waves(n: int, seed: int = 0, channels: int = 2):
    """Ragged cases of two classes: slow and fast sines with noise, 12 to 30 steps, ``channels`` channels."""
    rng = np.random.default_rng(seed)
    X, y = [], []
    for i in range(n):
        label = i % 2
        t = np.arange(int(rng.integers(12, 31)))
        phase = rng.uniform(0, 2 * np.pi, size=(channels, 1))
        X.append(np.sin((0.3 + 0.9 * label) * t + phase) + 0.2 * rng.normal(size=(channels, len(t))))
        y.append(["slow", "fast"][label])
    return X, np.array(y)


def test_an_easy_task_is_learned_through_pipeline_grid_search_and_cross_validation():
    X, y = waves(48)
    X_test, y_test = waves(40, seed=1)
    settings = {**SMALL, "max_epochs": 15}
    scale = FunctionTransformer(lambda cases: [10.0 * case for case in cases])      # any step before it
    pipeline = make_pipeline(scale, RNNClassifier(**settings)).fit(X, y)
    assert pipeline.score(X_test, y_test) >= 0.9
    scores = cross_val_score(RNNClassifier(**settings), X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() >= 0.85
    search = GridSearchCV(RNNClassifier(**settings), {"hidden_size": [4, 8]}, cv=2).fit(X, y)
    assert search.best_params_["hidden_size"] in (4, 8) and search.best_score_ >= 0.85
    assert search.best_estimator_.score(X_test, y_test) >= 0.9


def test_clone_keeps_the_settings_and_nothing_learned():
    model = RNNClassifier(**{**SMALL, "time_limit": 5.0}).fit(*waves(12))
    copy = clone(model)
    assert copy.get_params() == model.get_params() and not hasattr(copy, "model_")


@pytest.mark.parametrize("pooling", ["meanmax", "attention", "last"])
def test_a_case_alone_gives_what_it_gives_in_a_batch_of_longer_ones(pooling):
    """float64: the network reads a case's own steps only, in patches as without."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cases = [rng.normal(size=(3, n)) for n in (7, 19, 12)]
    net = PooledRNN(3 * 2, 4, hidden_size=5, pooling=pooling, dtype=torch.float64).eval()
    together = net(*batch_cases(cases, patch=2, dtype=torch.float64))
    for i, case in enumerate(cases):
        alone = net(*batch_cases([case], patch=2, dtype=torch.float64))
        torch.testing.assert_close(alone[0], together[i], rtol=0, atol=1e-12)
    readout = ReservoirReadout(3, reservoir_size=20, seed=1)
    features = readout.features(cases)
    for i, case in enumerate(cases):
        np.testing.assert_allclose(readout.features([case])[0], features[i], rtol=0, atol=1e-12)


def test_the_estimators_probabilities_of_a_case_do_not_depend_on_its_batch():
    X, y = waves(20)
    model = RNNClassifier(**SMALL).fit(X, y)
    together = model.predict_proba(X)
    alone = np.concatenate([model.predict_proba([case]) for case in X])
    np.testing.assert_allclose(alone, together, rtol=0, atol=1e-6)
    np.testing.assert_allclose(together.sum(1), 1.0, rtol=0, atol=1e-12)
    assert (together >= 0).all() and list(model.classes_) == ["fast", "slow"]
    assert (model.predict(X) == model.classes_[together.argmax(1)]).all()


def test_normalization_comes_from_the_training_cases_only():
    X, y = waves(16, channels=2)
    X = [case * np.array([[1.0], [50.0]]) + np.array([[3.0], [-7.0]]) for case in X]
    model = RNNClassifier(**SMALL).fit(X, y)
    values = np.concatenate(X, axis=1)
    normalizer = model.model_.normalizer
    np.testing.assert_allclose(normalizer.mean, values.mean(1), rtol=1e-12)
    np.testing.assert_allclose(normalizer.std, values.std(1), rtol=1e-12)
    before = model.predict_proba(X[:3])
    model.predict_proba([case * 1000.0 for case in X])                            # other data: nothing refits
    np.testing.assert_array_equal(model.predict_proba(X[:3]), before)
    np.testing.assert_allclose(normalizer.mean, values.mean(1), rtol=1e-12)


def test_labels_of_any_type_and_three_dimensional_input():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(18, 2, 10)) + np.repeat([0.0, 2.0, -2.0], 6)[:, None, None]
    for labels in (np.array([3, 7, 11]), np.array(["a", "b", "c"]),
                   np.array(["north", "south", "east"], dtype=object)):
        y = np.repeat(labels, 6)
        model = RNNClassifier(**{**SMALL, "max_epochs": 10}).fit(X, y)
        assert model.score(X, y) >= 0.9 and model.predict(X).dtype == y.dtype
        assert model.n_features_in_ == 2


def test_the_regressor_reads_ragged_cases_and_several_targets():
    X, _ = waves(30)
    y = np.stack([[case.mean(), case.shape[1]] for case in X])
    model = RNNRegressor(**{**SMALL, "members": 0}).fit(X, y)
    assert model.predict(X).shape == (30, 2) and model.score(X, y) >= 0.9
    assert RNNRegressor(**SMALL).fit(X, y[:, 1]).predict(X).shape == (30,)


def test_early_stopping_keeps_the_best_epochs_weights_and_classes_weigh_alike():
    X, y = waves(40)
    targets = (y == "fast").astype(int)
    targets[:8] = 1                                               # imbalance: 24 of one class, 16 of the other
    cases = as_cases(X)
    recipe = Recipe(hidden_size=6, members=2, max_epochs=12, patience=3)
    networks, report = train_members(cases, targets, "classification", 2, 1, recipe, seed=0)
    for network, row in zip(networks, report):
        assert 1 <= row["best_epoch"] <= row["epochs"] <= 12
        held = np.array(row["validation_cases"])
        train = np.setdiff1d(np.arange(40), held)
        assert len(held) == 8 and sorted(np.bincount(targets[held])) == [3, 5]    # a fifth of each class
        x, lengths = batch_cases([cases[i] for i in held])
        loss = torch.nn.CrossEntropyLoss(weight=balanced_weights(targets[train], 2))
        with torch.no_grad():
            assert float(loss(network(x, lengths), torch.as_tensor(targets[held]))) == pytest.approx(
                row["validation_loss"], rel=1e-5)
    weights = balanced_weights(np.array([0, 0, 0, 1]), 2)
    assert weights.tolist() == [pytest.approx(4 / 6), 2.0]
    train, held = validation_split(np.array([0] * 9 + [1] * 3 + [2]), 0.2, np.random.default_rng(0), True)
    assert len(held) == 3 and 12 in train                          # a class's only case is never held out


def test_the_time_limit_bounds_the_fit_and_the_progress_bar_shows(capsys):
    import time

    X, y = waves(40)
    started = time.perf_counter()
    RNNClassifier(hidden_size=16, members=3, reservoir_size=0, max_epochs=10_000, patience=10_000,
                  time_limit=1.0, random_state=0, progress=True).fit(X, y)
    assert time.perf_counter() - started < 3.0
    assert "fit" in capsys.readouterr().err


def test_save_and_load_give_the_same_predictions_all_or_nothing(tmp_path, monkeypatch):
    X, y = waves(20)
    model = RNNClassifier(**SMALL).fit(X, y)
    model.save(tmp_path / "model")
    again = load(tmp_path / "model")
    np.testing.assert_array_equal(again.predict_proba(X), model.predict_proba(X))
    assert again.get_params() == model.get_params() and list(again.classes_) == list(model.classes_)
    drawn = RNNClassifier(**{**SMALL, "random_state": np.random.RandomState(3)}).fit(X, y)
    assert load(drawn.save(tmp_path / "drawn")).get_params()["random_state"] is None
    regressor = RNNRegressor(**SMALL).fit(X, [case.shape[1] for case in X])
    np.testing.assert_array_equal(load(regressor.save(tmp_path / "regressor")).predict(X), regressor.predict(X))
    with pytest.raises(FileExistsError, match=re.escape(f"'{tmp_path / 'model'}' exists; save to a new folder")):
        model.save(tmp_path / "model")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("rnnkit.classify.model.save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        model.save(tmp_path / "half")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drawn", "model", "regressor"]   # no half, no staging


def test_evaluate_reports_accuracy_balanced_accuracy_f1_and_the_confusion_matrix():
    X, y = waves(20)
    model = RNNClassifier(**{**SMALL, "max_epochs": 10}).fit(X, y)
    result = evaluate(model, X, y)
    predicted = model.predict(X)
    assert result.accuracy == pytest.approx((predicted == y).mean())
    assert result.confusion.sum() == 20 and list(result.f1) == ["fast", "slow"]
    recalls = [(predicted[y == c] == c).mean() for c in ("fast", "slow")]
    assert result.balanced_accuracy == pytest.approx(np.mean(recalls))


def bad(message: str):
    return pytest.raises((ValueError, TypeError), match="^" + re.escape(message) + "$")


def test_every_bad_input_is_one_line_word_for_word():
    X, y = waves(12)
    model = RNNClassifier(**SMALL).fit(X, y)
    with bad("case 1 has 3 channel(s) but case 0 has 2; every case needs the same channels"):
        model.fit([X[0], np.zeros((3, 5))], ["slow", "fast"])
    with bad("X has 1 channel(s) but the model was fitted on 2; give the channels it was trained with"):
        model.predict([np.zeros((1, 5))])
    inside = X[2].copy()
    inside[1, 4] = np.nan
    with bad("case 2 has NaN at step 4 of channel 1, inside the sequence (only NaN at the end of a case is read "
             "as padding); impute it or cut the case"):
        model.fit(X[:2] + [inside] + X[3:], y)
    padded = np.concatenate([X[2], np.full((2, 3), np.nan)], axis=1)              # NaN at the end: padding
    np.testing.assert_allclose(model.predict_proba([padded]), model.predict_proba([X[2]]), rtol=0, atol=1e-12)
    with bad("case 1 is empty (no time steps); drop it"):
        model.predict([X[0], np.zeros((2, 0))])
    with bad("case 0 is empty (no time steps); drop it"):
        model.predict([np.full((2, 4), np.nan)])
    infinite = X[0].copy()
    infinite[0, 2] = np.inf
    with bad("case 0 has an infinite value at step 2 of channel 0; clip or drop it"):
        model.predict([infinite])
    with bad("y has one class ('slow'); a classifier needs at least two"):
        RNNClassifier(**SMALL).fit(X, ["slow"] * 12)
    with bad("X has 12 case(s) but y has 11 label(s); give one per case"):
        RNNClassifier(**SMALL).fit(X, y[:11])
    with bad("X holds no cases; expected at least one"):
        model.predict([])
    with bad("label 'medium' (case 3) was not seen in training; the model knows 'fast', 'slow'"):
        evaluate(model, X[:4], ["slow", "fast", "slow", "medium"])
    with bad("SequenceModel: members=0 and reservoir_size=0 leave no model; give either a positive number"):
        RNNClassifier(members=0, reservoir_size=0).fit(X, y)


def test_rnnkit_works_without_scikit_learn_and_the_estimators_say_what_to_install():
    code = ("import numpy as np, rnnkit, rnnkit.classify\n"
            "print(len(rnnkit.classify.as_cases(np.zeros((2, 1, 3)))))\n"
            "try:\n"
            "    import rnnkit.sklearn\n"
            "except ImportError as error:\n"
            "    print(error)\n")
    result = run_without("sklearn", code)
    assert result.stdout.splitlines() == ["2", 'rnnkit.sklearn needs scikit-learn, which is not installed: '
                                               'pip install "rnnkit[classify]"']
