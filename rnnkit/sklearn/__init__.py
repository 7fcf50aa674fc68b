"""scikit-learn estimators for sequences: :class:`RNNClassifier` and :class:`RNNRegressor` (fit, predict,
predict_proba, score, get_params/set_params, clone; Pipeline, GridSearchCV, cross_val_score), over
collections in aeon's conventions; :func:`load` for an estimator saved with ``save``; :func:`evaluate` for
accuracy, balanced accuracy, per-class F1 and the confusion matrix.

This package needs scikit-learn (``pip install "rnnkit[classify]"``); the rest of rnnkit does not.
"""
from __future__ import annotations

try:
    import sklearn  # noqa: F401  (the extra this package needs: a clear line where it is missing)
except ImportError:                                                    # pragma: no cover - tested in a subprocess
    raise ImportError('rnnkit.sklearn needs scikit-learn, which is not installed: pip install "rnnkit[classify]"') \
        from None

from .estimators import RNNClassifier, RNNRegressor, load
from .metrics import Evaluation, check_known_labels, evaluate

__all__ = ["RNNClassifier", "RNNRegressor", "load", "Evaluation", "check_known_labels", "evaluate"]
