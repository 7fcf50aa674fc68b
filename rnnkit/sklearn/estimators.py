"""``RNNClassifier`` and ``RNNRegressor``: rnnkit's default sequence recipe as scikit-learn estimators.

``X`` follows aeon's conventions: a 3-D array (cases, channels, time), a list of 2-D arrays
(channels, time_i) of different lengths, or a 2-D array (cases, time) of univariate cases. ``__init__``
only stores its keywords; what ``fit`` learns ends in ``_``; ``save``/``load`` keep a fitted estimator
in a folder (what a command needs).
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, check_random_state, column_or_1d

from ..classify import Recipe, SequenceModel, as_cases

__all__ = ["RNNClassifier", "RNNRegressor", "load"]

_DEFAULTS = Recipe()


class _RNNEstimator(BaseEstimator):
    _task = ""

    def __init__(self, *, hidden_size: int = _DEFAULTS.hidden_size, num_layers: int = _DEFAULTS.num_layers,
                 cell: str = _DEFAULTS.cell, pooling: str = _DEFAULTS.pooling, max_steps: int = _DEFAULTS.max_steps,
                 members: int = _DEFAULTS.members, reservoir_size: int = _DEFAULTS.reservoir_size,
                 reservoir_weight: float = _DEFAULTS.reservoir_weight, dropout: float = _DEFAULTS.dropout,
                 lr: float = _DEFAULTS.lr, weight_decay: float = _DEFAULTS.weight_decay,
                 batch_size: int = _DEFAULTS.batch_size, max_epochs: int = _DEFAULTS.max_epochs,
                 patience: int = _DEFAULTS.patience, validation_size: float = _DEFAULTS.validation_size,
                 time_limit: float | None = None, random_state=None, progress: bool = False):
        self.hidden_size, self.num_layers, self.cell, self.pooling = hidden_size, num_layers, cell, pooling
        self.max_steps, self.members, self.reservoir_size, self.dropout = max_steps, members, reservoir_size, dropout
        self.reservoir_weight = reservoir_weight
        self.lr, self.weight_decay, self.batch_size, self.max_epochs = lr, weight_decay, batch_size, max_epochs
        self.patience, self.validation_size, self.time_limit = patience, validation_size, time_limit
        self.random_state, self.progress = random_state, progress

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.non_deterministic = self.time_limit is not None      # a budget may stop training at another epoch
        return tags

    def _recipe(self) -> Recipe:
        settings = {f.name: getattr(self, f.name) for f in fields(Recipe) if f.name != "time_limit"}
        if self.time_limit is not None:
            settings["time_limit"] = self.time_limit
        return Recipe(**settings)

    def _cases(self, X, y) -> tuple:
        """The checked cases of ``X`` and ``y`` as an array, one row per case."""
        cases = as_cases(X)
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        y = np.asarray(y)
        if y.ndim == 0 or len(y) != len(cases):
            raise ValueError(f"X has {len(cases)} case(s) but y has {len(y) if y.ndim else 0} label(s); give one "
                             f"per case")
        return cases, y

    def _fit(self, cases, targets, outputs: int):
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        self.model_ = SequenceModel(self._recipe(), self._task)
        self.model_.fit(cases, targets, outputs, seed=seed, progress=self.progress)
        self.n_features_in_ = self.model_.channels
        return self

    def _predict(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        return self.model_.predict(as_cases(X))

    # ----- saving ---------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write the fitted estimator to the new folder ``path``, all or nothing; :func:`load` reads it."""
        check_is_fitted(self, "model_")
        params = self.get_params()
        if not (params["random_state"] is None or isinstance(params["random_state"], int)):
            params["random_state"] = None                  # a RandomState object: what it drew is in the weights
        return self.model_.save(path, {"estimator": type(self).__name__, "params": params, **self._saved()})

    def _saved(self) -> dict:
        return {}


class RNNClassifier(ClassifierMixin, _RNNEstimator):
    """Sequence classification with rnnkit's default recipe, as a scikit-learn classifier.

    The recipe: per-channel normalization fitted on the training cases; ``members`` bidirectional
    GRUs (cases longer than ``max_steps`` read in patches of consecutive steps), each pooled by the mean
    and maximum of its states over the case's own steps, trained with balanced class weights on its own
    stratified split and stopped early on the held-out ``validation_size`` (the best epoch's weights
    kept); an echo-state reservoir readout (``reservoir_size`` units per leak rate, ridge penalty by
    leave-one-out; 0 leaves it out), counting as ``reservoir_weight`` members; the probabilities
    averaged. ``time_limit`` (seconds, ``None``: the recipe's 60) bounds the whole fit; ``progress``
    shows a bar. A fixed ``random_state`` gives the same model every time unless the budget cuts the
    training short, which depends on the machine's speed.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = [rng.normal(size=(2, int(n))) + k for k, n in zip([0, 2] * 10, rng.integers(5, 15, 20))]
    >>> model = RNNClassifier(members=1, max_epochs=5, random_state=0).fit(X, ["low", "high"] * 10)
    >>> model.predict(X[:2]).tolist(), model.predict_proba(X[:2]).shape
    (['low', 'high'], (2, 2))
    """
    _task = "classification"

    def fit(self, X, y) -> "RNNClassifier":
        """Learn from ``X`` (a collection of cases) and ``y`` (one label of any type per case)."""
        cases, y = self._cases(X, y)
        y = column_or_1d(y, warn=True)
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise ValueError("y contains NaN or infinite labels; drop those cases or give them a label")
        check_classification_targets(y)
        self.classes_, targets = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"y has one class ({self.classes_.tolist()[0]!r}); a classifier needs at least two")
        return self._fit(cases, targets, len(self.classes_))

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (cases, classes), the columns in the order of ``classes_``."""
        return self._predict(X)

    def predict(self, X) -> np.ndarray:
        """The most probable class of each case."""
        probabilities = self.predict_proba(X)
        return self.classes_[probabilities.argmax(1)]

    def _saved(self) -> dict:
        return {"classes": self.classes_.tolist(), "classes_dtype": self.classes_.dtype.str}


class RNNRegressor(RegressorMixin, _RNNEstimator):
    """Sequence regression with the same recipe as :class:`RNNClassifier` (targets standardized, the
    squared error, no class weights); ``y`` is (cases,) or (cases, outputs)."""
    _task = "regression"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X, y) -> "RNNRegressor":
        cases, y = self._cases(X, y)
        y = np.asarray(y, dtype=np.float64)
        if y.ndim not in (1, 2):
            raise ValueError(f"y has {y.ndim} dimensions; expected (cases,) or (cases, outputs)")
        if not np.isfinite(y).all():
            raise ValueError("y contains NaN or infinite values; drop or impute those cases")
        self.n_outputs_ = 1 if y.ndim == 1 else y.shape[1]
        self._one_output = y.ndim == 1
        return self._fit(cases, y.reshape(len(y), -1), self.n_outputs_)

    def predict(self, X) -> np.ndarray:
        out = self._predict(X)
        return out[:, 0] if self._one_output else out

    def _saved(self) -> dict:
        return {"one_output": self._one_output}


def load(path):
    """The estimator that :meth:`RNNClassifier.save` or :meth:`RNNRegressor.save` wrote to ``path``."""
    model, extra = SequenceModel.load(path)
    kinds = {"RNNClassifier": RNNClassifier, "RNNRegressor": RNNRegressor}
    if extra.get("estimator") not in kinds:
        raise ValueError(f"'{path}' holds no saved estimator ({extra.get('estimator')!r}); save one with .save()")
    estimator = kinds[extra["estimator"]](**extra["params"])
    estimator.model_, estimator.n_features_in_ = model, model.channels
    if isinstance(estimator, RNNClassifier):
        estimator.classes_ = np.asarray(extra["classes"], dtype=np.dtype(extra["classes_dtype"]))
    else:
        estimator.n_outputs_, estimator._one_output = model.outputs, extra["one_output"]
    return estimator
