"""How well a fitted classifier labels a collection: the numbers ``rnnkit classify evaluate`` prints."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score
from sklearn.utils.validation import check_is_fitted

__all__ = ["Evaluation", "evaluate", "check_known_labels"]


class Evaluation(NamedTuple):
    """Accuracy, balanced accuracy (the mean of the per-class recalls), the F1 score of each class
    (``{label: F1}`` in the order of ``classes``), and the confusion matrix (rows: true class, columns:
    predicted, both in the order of ``classes``)."""
    accuracy: float
    balanced_accuracy: float
    f1: dict
    confusion: np.ndarray
    classes: np.ndarray


def check_known_labels(classes: np.ndarray, y) -> np.ndarray:
    """``y`` as an array; a ValueError naming the first label that is not among ``classes``."""
    y = np.asarray(y)
    unknown = ~np.isin(y, classes)
    if unknown.any():
        case = int(np.flatnonzero(unknown)[0])
        known = ", ".join(repr(c) for c in classes.tolist())
        raise ValueError(f"label {y[case].item()!r} (case {case}) was not seen in training; the model knows {known}")
    return y


def evaluate(classifier, X, y) -> Evaluation:
    """Score ``classifier`` (fitted) on the cases ``X`` with true labels ``y``; every label of ``y`` must be
    one the classifier was trained on.

    >>> import numpy as np
    >>> from rnnkit.sklearn import RNNClassifier
    >>> X, y = np.repeat([[0.0] * 6, [3.0] * 6], 6, axis=0), np.repeat(["a", "b"], 6)
    >>> result = evaluate(RNNClassifier(members=0, reservoir_size=20, random_state=0).fit(X, y), X, y)
    >>> result.accuracy, result.confusion.tolist()
    (1.0, [[6, 0], [0, 6]])
    """
    check_is_fitted(classifier, "classes_")
    y = check_known_labels(classifier.classes_, y)
    predicted = classifier.predict(X)
    classes = classifier.classes_
    f1 = f1_score(y, predicted, labels=classes, average=None, zero_division=0.0)
    return Evaluation(float(accuracy_score(y, predicted)), float(balanced_accuracy_score(y, predicted)),
                      {c: float(v) for c, v in zip(classes.tolist(), f1)},
                      confusion_matrix(y, predicted, labels=classes), classes)
