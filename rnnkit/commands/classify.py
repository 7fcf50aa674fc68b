"""``rnnkit classify``: sequence classification (or regression) from the command line, with
:mod:`rnnkit.sklearn`'s estimators and :mod:`rnnkit.classify`'s files.

Three actions: ``fit`` learns an :class:`~rnnkit.sklearn.RNNClassifier` (or, with ``--regression``, an
:class:`~rnnkit.sklearn.RNNRegressor`) from a collection file and saves it to a folder, ``predict`` writes
each case's label and class probabilities as CSV, and ``evaluate`` scores the model on a labelled file.
scikit-learn and the library are imported only once an action runs, so that ``rnnkit --help`` works
without the classify extra.
"""
from __future__ import annotations

import shlex
from pathlib import Path

from .._arguments import check_int, check_number
from ._common import output_file, picture_file, run_action, write_output

HELP = "classify collections of sequences: fit a model, predict, evaluate"
DESCRIPTION = ("Classify recordings (sequences of one or more channels, of any length) with rnnkit's default "
               "recipe (rnnkit.sklearn.RNNClassifier; --regression: RNNRegressor). A collection is a .ts file "
               "(the UCR/UEA archive's format), a CSV table with the columns case, time, one per channel and "
               "optionally label, or a .npz file with arrays X (cases, channels, time) and y. fit learns a model "
               "and saves it to a folder, predict writes each case's label and class probabilities as CSV, "
               "evaluate prints accuracy, balanced accuracy and each class's F1. Needs pip install "
               "\"rnnkit[classify]\" (and \"rnnkit[plot]\" for --plot).")
EPILOG = ("example: rnnkit classify fit --train vowels_train.ts --out runs/vowels && "
          "rnnkit classify evaluate runs/vowels --data vowels_test.ts --plot confusion.png")
AT_LEAST_ONE = ("epochs",)

EXTRA = {"sklearn": "scikit-learn"}               # the classify extra: its module and the name installed
INSTALL = 'pip install "rnnkit[classify]"'


def add_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    fit = actions.add_parser("fit", help="learn a model from a labelled collection and save it to a folder",
                             description="Learn rnnkit's default sequence recipe from every case of a labelled "
                                         "collection and save it to a new folder, all or nothing.")
    fit.add_argument("--train", required=True, metavar="FILE", help="the labelled cases to learn from (.ts, .csv "
                     "or .npz)")
    fit.add_argument("--out", required=True, metavar="DIR", help="the folder to save the model to (must not exist)")
    fit.add_argument("--time-limit", type=float, metavar="SECONDS", help="the budget of the whole fit (default: the "
                     "recipe's 60 s); a fit cut short by it depends on the machine's speed")
    fit.add_argument("--seed", type=int, default=0, help="the random seed: the same data and seed give the same "
                     "model, unless the time limit cuts training short")
    fit.add_argument("--regression", action="store_true", help="the labels are numbers to predict, not classes")
    fit.add_argument("--epochs", type=int, metavar="N", help="at most N epochs for each network (default: the "
                     "recipe's 200, stopped early); a few make a quick trial of the command, not a useful model")
    fit.add_argument("--quiet", action="store_true", help="no progress bar")

    predict = actions.add_parser("predict", help="label cases with a saved model, as CSV",
                                 description="Label each case of a collection with a saved model: CSV with the "
                                             "case's name, its label and each class's probability (p_<class>); "
                                             "for a regression model, the predicted value as the label.")
    _model_dir(predict)
    predict.add_argument("--data", required=True, metavar="FILE", help="the cases to label (.ts, .csv or .npz; "
                         "labels in it are ignored)")
    predict.add_argument("--output", metavar="FILE", help="write the CSV here (default: standard output)")

    evaluate = actions.add_parser("evaluate", help="score a saved model on a labelled collection",
                                  description="Score a saved model on a labelled collection: accuracy, balanced "
                                              "accuracy (the mean of the classes' recalls) and each class's F1; "
                                              "for a regression model, the mean absolute error, the root mean "
                                              "squared error and R².")
    _model_dir(evaluate)
    evaluate.add_argument("--data", required=True, metavar="FILE", help="the labelled cases (.ts, .csv or .npz)")
    evaluate.add_argument("--plot", metavar="PNG", help="write the confusion matrix to this PNG file (needs "
                          "matplotlib)")


def _model_dir(parser) -> None:
    parser.add_argument("model_dir", metavar="DIR", help="the folder rnnkit classify fit saved")


def run(args) -> int:
    return run_action(args, {"fit": _fit, "predict": _predict, "evaluate": _evaluate}, EXTRA, "classifying", INSTALL)


# ----- the actions ---------------------------------------------------------------------------------------

def _fit(args) -> int:
    from ..sklearn import RNNClassifier, RNNRegressor

    seed = check_int("", "--seed", args.seed, 0)
    limit = None if args.time_limit is None else check_number(
        "", "--time-limit", args.time_limit, low=0.0, low_closed=False, high_closed=False)
    out = Path(args.out)
    if out.exists():                                     # said before the fit, not after it
        raise ValueError(f"--out '{out}' exists; name a new folder (a model is saved whole, never over another)")
    X, y = _labelled(args.train, args.regression)
    chosen = {} if args.epochs is None else {"max_epochs": args.epochs}
    kind = RNNRegressor if args.regression else RNNClassifier
    model = kind(time_limit=limit, random_state=seed, progress=not args.quiet, **chosen).fit(X, y)
    model.save(out)
    what = "a numeric target" if args.regression else \
        f"{len(model.classes_)} classes ({', '.join(map(str, model.classes_.tolist()))})"
    print(f"saved to {out}: {len(X)} cases, {what}, {model.n_features_in_} channel"
          f"{'s' * (model.n_features_in_ != 1)}; predict with: rnnkit classify predict {shlex.quote(str(out))} "
          f"--data FILE")
    return 0


def _predict(args) -> int:
    from ..classify import format_predictions, read_collection

    output = output_file(args.output, "predictions.csv")
    model = _load(args.model_dir)
    collection = read_collection(args.data)
    if hasattr(model, "classes_"):
        probabilities = model.predict_proba(collection.X)
        labels, classes = model.classes_[probabilities.argmax(1)].tolist(), model.classes_.tolist()
    else:
        values = model.predict(collection.X)
        if values.ndim != 1:
            raise ValueError(f"'{args.model_dir}' predicts {values.shape[1]} values a case; the command writes one")
        labels, probabilities, classes = values.tolist(), values.reshape(-1, 1)[:, :0], []   # no classes: (N, 0)
    write_output(format_predictions(collection.names, labels, probabilities, classes), output, f"{len(labels)} cases")
    return 0


def _evaluate(args) -> int:
    picture = picture_file(args.plot)
    model = _load(args.model_dir)
    regression = not hasattr(model, "classes_")
    if regression and picture is not None:
        raise ValueError("--plot draws a confusion matrix, which a regression model has none of; leave it out")
    X, y = _labelled(args.data, regression)
    if regression:
        print(_regression_scores(model, X, y))
        return 0
    from ..sklearn import evaluate

    result = evaluate(model, X, y)
    print(f"{len(X)} cases, {len(result.classes)} classes")
    print(_scores_table(result))
    if picture is not None:
        from ..classify import plot_confusion

        plot_confusion(result.confusion, result.classes.tolist(), path=picture)
    return 0


# ----- the parts --------------------------------------------------------------------------------------

def _labelled(path, regression: bool):
    """The cases and labels of the collection file ``path``; a file without labels is refused."""
    import numpy as np

    from ..classify import read_collection

    collection = read_collection(path)
    if collection.y is None:
        raise ValueError(f"'{path}' has no labels; give each case one (a label column, @classLabel true, or y in "
                         f"the .npz)")
    if not regression:
        return collection.X, collection.y
    try:
        return collection.X, np.asarray(collection.y, dtype=np.float64)
    except ValueError:
        raise ValueError(f"'{path}' has labels that are not numbers, such as {str(collection.y[0])!r}; "
                         f"--regression needs numeric targets") from None


def _load(folder):
    from ..sklearn import load

    return load(folder)


def _scores_table(result) -> str:
    """Accuracy and balanced accuracy, then a table of each class's F1 and number of cases, each aligned."""
    totals = _aligned([["accuracy", f"{result.accuracy:.3f}"],
                       ["balanced accuracy", f"{result.balanced_accuracy:.3f}"]])
    classes = _aligned([["class", "F1", "cases"], *([str(label), f"{f1:.3f}", str(count)] for (label, f1), count
                                                    in zip(result.f1.items(), result.confusion.sum(1)))])
    return f"{totals}\n\n{classes}"


def _aligned(rows: list) -> str:
    """``rows`` of text as columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join([row[0].ljust(widths[0]), *(cell.rjust(w) for cell, w in zip(row[1:], widths[1:]))])
                     for row in rows)


def _regression_scores(model, X, y) -> str:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    predicted = model.predict(X)
    return (f"{len(X)} cases\nMAE   {mean_absolute_error(y, predicted):.4g}\n"
            f"RMSE  {mean_squared_error(y, predicted) ** 0.5:.4g}\nR²    {r2_score(y, predicted):.4f}")
