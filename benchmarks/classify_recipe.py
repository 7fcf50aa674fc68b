"""How the default sequence-classification recipe was chosen: candidates compared on aeon datasets that
are not those of benchmarks/classify_uea.py.

    python benchmarks/classify_recipe.py                         # every candidate: ~6 min on 2 cores
    python benchmarks/classify_recipe.py --candidates both gru

The project's rule: never tune a default to the benchmark you report. The recipe (rnnkit.classify's
Recipe and the estimators' defaults) is chosen here on three problems that ship in aeon's wheel and are
not in the benchmark: OSULeaf (univariate, 427 steps, 6 classes, 200 training cases), ACSF1 (univariate,
1,460 steps, 10 classes, 100 cases) and PickupGestureWiimoteZ (univariate, 29 to 361 steps: unequal
lengths, 10 classes, 50 cases). Each candidate is rnnkit.classify.SequenceModel with one change from
the defaults, fitted with one thread on the archive's train split and scored on its test split (accuracy;
fit seconds), over the seeds given. Writes results/classify_recipe.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from aeon.datasets import load_classification

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._timing import write_results  # noqa: E402
from rnnkit.classify import Recipe, SequenceModel, as_cases  # noqa: E402

DATASETS = ("OSULeaf", "ACSF1", "PickupGestureWiimoteZ")
BASE = Recipe()
GRU = replace(BASE, reservoir_size=0)
CANDIDATES = {
    "both": BASE,
    "both-half": replace(BASE, reservoir_weight=float(BASE.members)),     # the reservoir half the vote
    "gru": GRU,
    "reservoir": replace(BASE, members=0),
    "gru-attention": replace(GRU, pooling="attention"),
    "gru-128-steps": replace(GRU, max_steps=128),
    "gru-1-member": replace(GRU, members=1),
}


def run(name: str, recipe: Recipe, seed: int) -> dict:
    X, y = load_classification(name, split="train")
    X_test, y_test = load_classification(name, split="test")
    classes, targets = np.unique(y, return_inverse=True)
    started = time.perf_counter()
    model = SequenceModel(recipe, "classification").fit(as_cases(X), targets, len(classes), seed)
    fit = time.perf_counter() - started
    accuracy = float((classes[model.predict(as_cases(X_test)).argmax(1)] == y_test).mean())
    return {"accuracy": accuracy, "fit_seconds": fit}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = {}
    print(f"{'candidate':<16}" + "".join(f"{d:>24}" for d in args.datasets) + f"{'mean':>8}")
    for candidate in args.candidates:
        recipe = CANDIDATES[candidate]
        row = {d: [run(d, recipe, seed) for seed in range(args.seeds)] for d in args.datasets}
        results[candidate] = row
        means = {d: (np.mean([r["accuracy"] for r in runs]), np.mean([r["fit_seconds"] for r in runs]))
                 for d, runs in row.items()}
        print(f"{candidate:<16}" + "".join(f"{a:>15.3f} ({s:4.1f} s)" for a, s in means.values())
              + f"{np.mean([a for a, _ in means.values()]):>8.3f}", flush=True)
    path = write_results("classify_recipe", {"datasets": args.datasets, "seeds": args.seeds, "results": results})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
