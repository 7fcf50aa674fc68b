"""Five UCR/UEA problems: rnnkit's default classifier against aeon's 1-NN DTW and MiniRocket, in one run.

    python benchmarks/classify_uea.py                          # all: ~15 min on 2 cores
    python benchmarks/classify_uea.py --datasets GunPoint --seeds 2

The task of issue 31. The data ship inside aeon's wheel (``aeon.datasets.load_classification``, the
archive's own train/test splits): JapaneseVowels (12 channels, 7 to 26 steps: unequal lengths, 9
classes), BasicMotions (6 channels, 100 steps, 4 classes), GunPoint (1 channel, 150 steps, 2 classes),
ItalyPowerDemand (1 channel, 24 steps, 2 classes) and ArrowHead (1 channel, 251 steps, 3 classes).
Every model is fitted on the train split and scored by accuracy on the test split, over 5 seeds (the
mean and standard deviation), with fit and predict wall seconds, one thread each:

- ``rnnkit``: ``rnnkit.sklearn.RNNClassifier(random_state=seed)``, its defaults untouched (they were
  chosen on other problems: benchmarks/classify_recipe.py). It reads JapaneseVowels' unequal cases as
  they are.
- ``1-NN DTW``: ``aeon.classification.distance_based.KNeighborsTimeSeriesClassifier(distance="dtw",
  n_neighbors=1)``; deterministic, so it runs once. It too reads the unequal cases.
- ``MiniRocket``: ``aeon.classification.convolution_based.MiniRocketClassifier(random_state=seed)``.
  It needs equal lengths: on JapaneseVowels it reads the archive's equal-length version
  (``JapaneseVowels_eq``, shipped beside the original in aeon's data folder).

Goals (issue 31): rnnkit's mean accuracy at or above MiniRocket's on every problem, 0.99 or more on
JapaneseVowels, each rnnkit fit within 60 s on 2 cores. Writes results/classify_uea.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from aeon.classification.convolution_based import MiniRocketClassifier
from aeon.classification.distance_based import KNeighborsTimeSeriesClassifier
from aeon.datasets import load_classification, load_from_ts_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._timing import write_results  # noqa: E402
from rnnkit.sklearn import RNNClassifier  # noqa: E402

DATASETS = ("JapaneseVowels", "BasicMotions", "GunPoint", "ItalyPowerDemand", "ArrowHead")
MODELS = ("rnnkit", "1-NN DTW", "MiniRocket")


def load(name: str, equal_length: bool = False):
    """``(X_train, y_train, X_test, y_test)``; ``equal_length`` reads the archive's ``<name>_eq`` files
    where the problem's cases differ in length."""
    if equal_length:
        folder = Path(sys.modules["aeon.datasets"].__file__).parent / "data" / name
        if (folder / f"{name}_eq_TRAIN.ts").is_file():
            return (*load_from_ts_file(str(folder / f"{name}_eq_TRAIN.ts")),
                    *load_from_ts_file(str(folder / f"{name}_eq_TEST.ts")))
    return (*load_classification(name, split="train"), *load_classification(name, split="test"))


def make(model: str, seed: int):
    if model == "rnnkit":
        return RNNClassifier(random_state=seed)
    if model == "1-NN DTW":
        return KNeighborsTimeSeriesClassifier(distance="dtw", n_neighbors=1, n_jobs=1)
    return MiniRocketClassifier(random_state=seed, n_jobs=1)


def run(model: str, name: str, seed: int) -> dict:
    X, y, X_test, y_test = load(name, equal_length=model == "MiniRocket")
    estimator = make(model, seed)
    started = time.perf_counter()
    estimator.fit(X, y)
    fitted = time.perf_counter()
    predicted = estimator.predict(X_test)
    done = time.perf_counter()
    return {"seed": seed, "accuracy": float(np.mean(predicted == y_test)), "fit_seconds": fitted - started,
            "predict_seconds": done - fitted}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = {}
    print(f"{'dataset':<18}{'model':<12}{'accuracy':>16}{'fit s':>9}{'predict s':>11}")
    for name in args.datasets:
        results[name] = {}
        for model in args.models:
            seeds = [0] if model == "1-NN DTW" else range(args.seeds)
            runs = [run(model, name, seed) for seed in seeds]
            accuracy = [r["accuracy"] for r in runs]
            summary = {"accuracy_mean": float(np.mean(accuracy)), "accuracy_std": float(np.std(accuracy)),
                       "fit_seconds_mean": float(np.mean([r["fit_seconds"] for r in runs])),
                       "fit_seconds_max": float(np.max([r["fit_seconds"] for r in runs])),
                       "predict_seconds_mean": float(np.mean([r["predict_seconds"] for r in runs])), "runs": runs}
            results[name][model] = summary
            print(f"{name:<18}{model:<12}{summary['accuracy_mean']:>9.3f} ± {summary['accuracy_std']:.3f}"
                  f"{summary['fit_seconds_mean']:>9.1f}{summary['predict_seconds_mean']:>11.2f}", flush=True)
    goals = {}
    if {"rnnkit", "MiniRocket"} <= set(args.models):
        goals = {name: {"at_or_above_minirocket": r["rnnkit"]["accuracy_mean"] >= r["MiniRocket"]["accuracy_mean"],
                        "fit_within_60_s": r["rnnkit"]["fit_seconds_max"] <= 60.0} for name, r in results.items()}
        if "JapaneseVowels" in results:
            goals["JapaneseVowels"]["at_least_0.99"] = results["JapaneseVowels"]["rnnkit"]["accuracy_mean"] >= 0.99
        for name, met in goals.items():
            print(f"{name:<18}" + ", ".join(f"{goal}: {'met' if ok else 'NOT met'}" for goal, ok in met.items()))
    payload = {"datasets": args.datasets, "seeds": args.seeds, "aeon": version("aeon"),
               "scikit-learn": version("scikit-learn"), "results": results, "goals": goals}
    if args.datasets == list(DATASETS) and args.models == list(MODELS) and args.seeds == 5:
        path = write_results("classify_uea", payload)
    else:
        path = write_results("classify_uea-partial", payload)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
