"""Vanishing and exploding gradients, measured: the theory line against the numbers.

    python benchmarks/gradients.py            # about 2-3 minutes on two CPU cores

1. A linear RNN s_t = W s_{t-1} + U x_t with the loss on its last state: the gradient on s_t
   is (W^T)^(T-t) dL/ds_T, so with W = λQ (Q orthogonal) its norm is exactly |λ|^(T-t) times
   the last one, and for any W it ends up shrinking or growing by the spectral radius ρ(W) per
   step. Measured rates (a line fitted to log ||dL/ds_t|| against T - t) against |λ|, for λ
   below, at and above 1, drawn with the theory line on top.
2. Elman vs LSTM vs GRU on the adding problem at the same length: how much of the gradient of
   the final prediction's loss reaches the early steps (where the two marked numbers are), at
   initialisation and after the same short training.
3. Clipping on a task prone to explosions: an IRNN (ReLU Elman network, identity recurrent
   weights, Le et al. 2015) on the adding problem with SGD, without clipping, clipping each
   element and clipping the global norm: the trainer's own options, side by side.
4. The vanishing gradient's remedies in the trainer, on the Elman network of part 2: orthogonal
   recurrent initialisation and Pascanu et al.'s information-flow regularizer.

Prints the tables, writes results/gradients.json and results/gradients-*.png.
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._timing import RESULTS, write_results  # noqa: E402
import rnnkit  # noqa: E402
from rnnkit.analysis.gradients import gradient_decay_rate, gradient_flow  # noqa: E402
from rnnkit.analysis.plots import plot_gradient_flow  # noqa: E402
from rnnkit.cells import Cell  # noqa: E402
from rnnkit.data import SequenceBatches  # noqa: E402
from rnnkit.data.tasks import adding_problem  # noqa: E402
from rnnkit.init import random_orthogonal  # noqa: E402
from rnnkit.train import TrainConfig, Trainer, TrainingDiverged  # noqa: E402
from rnnkit.train.metrics import MetricsLog  # noqa: E402

F64 = torch.float64


# ----- 1. the linear RNN ------------------------------------------------------------------------------

class LinearCell(Cell):
    """s_t = W s_{t-1} + U x_t."""

    def __init__(self, W, U):
        super().__init__()
        self.input_size, self.hidden_size, self.state_sizes = U.shape[1], W.shape[0], W.shape[0]
        self.weight_hh, self.weight_ih = nn.Parameter(W), nn.Parameter(U)

    def forward(self, x, s):
        return s @ self.weight_hh.T + x @ self.weight_ih.T


def linear_rnn(eigenvalues=(0.9, 1.0, 1.1), hidden_size=32, steps=100, batch=8):
    generator = torch.Generator().manual_seed(0)
    rows, orthogonal, nonnormal, theory = [], {}, {}, {}
    for lam in eigenvalues:
        U = torch.randn(hidden_size, 2, generator=generator, dtype=F64)
        g = torch.randn(hidden_size, generator=generator, dtype=F64)
        x = torch.randn(batch, steps, 2, generator=generator, dtype=F64)
        A = torch.randn(hidden_size, hidden_size, generator=generator, dtype=F64)
        for kind, W, store in (("λQ, Q orthogonal", lam * random_orthogonal(hidden_size, generator=generator),
                                orthogonal),
                               ("Gaussian, ρ(W) = λ", lam * A / torch.linalg.eigvals(A).abs().max(), nonnormal)):
            flow = gradient_flow(LinearCell(W, U), x, lambda out: (out[0][:, -1] @ g).sum())   # L = <g, s_T>
            # past the transient of a non-normal W only the largest |eigenvalue| is left
            min_lag = 0 if store is orthogonal else steps // 2
            rate = gradient_decay_rate(flow, min_lag=min_lag)
            rows.append({"W": kind, "lambda": lam, "measured_rate": rate, "fit_lags": [min_lag, steps],
                         "matches_to_2_digits": f"{rate:.2g}" == f"{lam:.2g}"})
            store[f"λ = {lam}"] = flow
            lags = torch.arange(steps, -1, -1, dtype=F64)
            anchor = flow.norms.log().mean(0).exp()[-1] if store is orthogonal else \
                flow.norms.log().mean(0).exp()[0] * lam ** -float(steps)
            theory[(kind, lam)] = anchor * lam ** lags
    for store, kind, name in ((orthogonal, "λQ, Q orthogonal", "gradients-linear.png"),
                              (nonnormal, "Gaussian, ρ(W) = λ", "gradients-linear-nonnormal.png")):
        lines = {f"theory |λ|^(T−t), λ = {lam}": theory[(kind, lam)] for lam in eigenvalues}
        plot_gradient_flow(store, RESULTS / name, theory=lines,
                           title=f"Linear RNN, W = {kind}: loss on s_T, gradient against theory")
    return rows


# ----- 2. Elman vs LSTM vs GRU on the adding problem --------------------------------------------------

def adding_flow(model, task, count=64):
    """Gradient of the summed squared error of the final prediction, on ``count`` sequences, measured
    on a float64 copy of the model (float32 underflows after a few dozen vanishing steps)."""
    x, y = task.inputs[:count].double(), task.targets[:count].double()
    twin = copy.deepcopy(model).double().eval()
    return gradient_flow(twin, x, lambda prediction: (prediction - y).pow(2).sum())


def flow_numbers(flow):
    norms = flow.norms.log().mean(0).exp()                 # geometric mean over the sequences
    try:
        rate = gradient_decay_rate(flow)
    except ValueError:                                     # underflowed to 0 somewhere
        rate = None
    return {"first_over_last": float(norms[0] / norms[-1]), "decay_rate_per_step": rate}


def adding_runs(variants, length=100, hidden_size=64, train_steps=600):
    """Train each variant (label -> (cell, extra TrainConfig options)) on the adding problem and
    measure its gradient flow before and after; returns (rows, flows at init, flows after)."""
    from rnnkit.models import SequenceRegressor

    train, test = adding_problem(4000, length, seed=1), adding_problem(500, length, seed=2)
    rows, at_init, trained = [], {}, {}
    for label, (cell, options) in variants.items():
        torch.manual_seed(0)
        model = SequenceRegressor(2, 1, hidden_size=hidden_size, cell=cell)
        config = TrainConfig(batch_size=64, lr=1e-2, max_steps=train_steps, eval_every=10**9, seed=0, **options)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as run_dir:
            trainer = Trainer(model, config, run_dir, progress=False)        # applies recurrent_init
            at_init[label] = adding_flow(model, test)
            summary = trainer.fit(SequenceBatches(train.inputs, train.targets, batch_size=64),
                                  SequenceBatches(test.inputs, test.targets, batch_size=500, shuffle=False))
        trained[label] = adding_flow(model, test)
        rows.append({"model": label, "cell": cell, "options": options, "state": "[h; c]" if cell == "lstm" else "h",
                     "at_init": flow_numbers(at_init[label]), "after_training": flow_numbers(trained[label]),
                     "test_mse": summary["validation_loss"], "baseline_mse": test.baseline,
                     "train_steps": train_steps, "seconds": time.perf_counter() - started})
    return rows, at_init, trained


def adding_comparison(length=100, train_steps=600):
    variants = {cell: (cell, {}) for cell in ("elman", "lstm", "gru")}
    rows, at_init, trained = adding_runs(variants, length, train_steps=train_steps)
    plot_gradient_flow(at_init, RESULTS / "gradients-adding-init.png",
                       title=f"Adding problem, T = {length}: gradient of the final loss, at initialisation")
    plot_gradient_flow(trained, RESULTS / "gradients-adding-trained.png",
                       title=f"Adding problem, T = {length}: after {train_steps} Adam steps")
    return rows, trained["elman"]


def remedies_comparison(plain_row, plain_flow, length=100, train_steps=600, weight=1.0):
    """The Elman network again, with orthogonal recurrent weights or the information-flow regularizer."""
    variants = {"elman, orthogonal init": ("elman", {"recurrent_init": "orthogonal"}),
                f"elman, information flow λ = {weight:g}": ("elman", {"information_flow": weight})}
    rows, _, trained = adding_runs(variants, length, train_steps=train_steps)
    plot_gradient_flow({"elman, plain": plain_flow, **trained}, RESULTS / "gradients-remedies.png",
                       title=f"Elman on the adding problem, T = {length}, after {train_steps} steps: remedies")
    return [{**plain_row, "model": "elman, plain"}, *rows]


# ----- 3. clipping on a task prone to explosions ------------------------------------------------------

class IRNNRegressor(nn.Module):
    """ReLU Elman network + linear readout of the last state; the trainer's loss contract."""

    def __init__(self, hidden_size):
        super().__init__()
        self.rnn = rnnkit.ElmanRNN(2, hidden_size, nonlinearity="relu", batch_first=True)
        self.readout = nn.Linear(hidden_size, 1)
        cell = self.rnn.stack.layers[0].cell
        nn.init.zeros_(cell.bias_ih)
        nn.init.zeros_(cell.bias_hh)

    def forward(self, x):
        return self.readout(self.rnn(x)[0][:, -1])

    def loss(self, x, y, state=None):
        return (self(x) - y).pow(2).mean(), None


def clipping_comparison(length=100, hidden_size=64, steps=600):
    train, test = adding_problem(3000, length, seed=1), adding_problem(500, length, seed=2)
    options = {"no clipping": {"clip_norm": None},
               "clip each element at 0.1": {"clip_norm": None, "clip_value": 0.1},
               "clip the global norm at 1": {"clip_norm": 1.0}}
    rows, curves = [], {}
    for name, clip in options.items():
        torch.manual_seed(0)
        model = IRNNRegressor(hidden_size)
        config = TrainConfig(batch_size=32, optimizer="sgd", lr=1e-2, momentum=0.9, schedule="constant",
                             max_steps=steps, eval_every=10**9, recurrent_init="identity", seed=0, **clip)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as run_dir:
            try:
                summary = Trainer(model, config, run_dir, progress=False).fit(
                    SequenceBatches(train.inputs, train.targets, batch_size=32),
                    SequenceBatches(test.inputs, test.targets, batch_size=500, shuffle=False))
                outcome, mse = f"{summary['steps']} steps", summary["validation_loss"]
            except TrainingDiverged as error:
                outcome, mse = str(error).split(";")[0], None
            records = [r for r in MetricsLog(Path(run_dir) / "metrics.jsonl").read() if r["kind"] == "train"]
        losses = [r["loss"] for r in records]
        curves[name] = ([r["step"] for r in records], losses)
        norms = [r["grad_norm"] for r in records if r.get("grad_norm") is not None]
        rows.append({"clipping": name, "outcome": outcome, "test_mse": mse, "baseline_mse": test.baseline,
                     "largest_logged_train_loss": max(losses) if losses else None,
                     "logged_steps_with_loss_above_1": sum(v > 1 for v in losses),
                     "largest_gradient_norm_before_clipping": max(norms) if norms else None,
                     "seconds": time.perf_counter() - started})
    _plot_clipping(curves, rows, length)
    return rows


def _plot_clipping(curves, rows, length):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.5), dpi=110)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.12, top=0.9)
    ax = fig.add_subplot()
    for (name, (steps, losses)), row, color in zip(curves.items(), rows, ("#d62728", "#ff7f0e", "#1f77b4")):
        result = "diverged" if row["test_mse"] is None else f"test MSE {row['test_mse']:.3f}"
        label = f"{name}: {result}"
        ax.plot(steps, [v if math.isfinite(v) else float("nan") for v in losses], "o-", ms=3, color=color,
                label=label)
        if row["test_mse"] is None:                        # mark where it broke off, and why
            last = min(max(v for v in losses if math.isfinite(v)), 1e30)
            ax.plot(steps[-1:], [last], "X", ms=14, color=color)
            ax.annotate(row["outcome"], (steps[-1], last), textcoords="offset points", xytext=(12, -4),
                        color=color, fontsize=8)
    ax.axhline(rows[0]["baseline_mse"], color="gray", ls="--", label="predict the mean (MSE 1/6)")
    ax.set_yscale("log")
    ax.set_xlabel("SGD step")
    ax.set_ylabel("training loss (MSE, batch mean, every 10th step)")
    ax.set_title(f"IRNN on the adding problem, T = {length}: clipping against explosions")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(RESULTS / "gradients-clipping.png")


# ----- report -----------------------------------------------------------------------------------------

def print_flow_table(rows):
    width = max(len(r["model"]) for r in rows)
    print(f"   {'model':{width}} {'init: ratio':>12} {'factor':>8}   {'trained: ratio':>14} {'factor':>8}   "
          f"test MSE (baseline {rows[0]['baseline_mse']:.3f})")
    for r in rows:
        a, b = r["at_init"], r["after_training"]
        fmt = lambda v: "     n/a" if v is None else f"{v:8.4f}"  # noqa: E731
        print(f"   {r['model']:{width}} {a['first_over_last']:12.2e} {fmt(a['decay_rate_per_step'])}   "
              f"{b['first_over_last']:14.2e} {fmt(b['decay_rate_per_step'])}   {r['test_mse']:.4f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=100, help="adding-problem length (default 100)")
    parser.add_argument("--train-steps", type=int, default=600, help="training steps per model (default 600)")
    args = parser.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    started = time.perf_counter()

    linear = linear_rnn()
    print("1. linear RNN s_t = W s_(t-1) + U x_t, loss on s_T: per-step factor of ||dL/ds_t||")
    print(f"   {'W':22} {'|λ|':>5} {'measured':>10} {'fit over lags':>14}  2 digits")
    for r in linear:
        print(f"   {r['W']:22} {r['lambda']:5.2f} {r['measured_rate']:10.6f} {str(r['fit_lags']):>14}  "
              f"{'yes' if r['matches_to_2_digits'] else 'NO'}")

    adding, plain_flow = adding_comparison(args.length, train_steps=args.train_steps)
    print(f"\n2. adding problem, T = {args.length}, hidden 64, {args.train_steps} Adam steps: ||dL/ds_0|| / "
          f"||dL/ds_T|| and the fitted factor per step back (geometric mean over 64 sequences)")
    print_flow_table(adding)

    clipping = clipping_comparison(args.length, steps=args.train_steps)
    print(f"\n3. IRNN (ReLU, identity recurrent weights) on the adding problem, T = {args.length}, SGD lr 0.01, "
          f"momentum 0.9, {args.train_steps} steps")
    print(f"   {'clipping':27} {'outcome':38} {'test MSE':>9} {'max loss':>10} {'max grad norm':>14}")
    for r in clipping:
        mse = "diverged" if r["test_mse"] is None else f"{r['test_mse']:.4f}"
        norm = "-" if r["largest_gradient_norm_before_clipping"] is None \
            else f"{r['largest_gradient_norm_before_clipping']:.3g}"
        print(f"   {r['clipping']:27} {r['outcome']:38} {mse:>9} {r['largest_logged_train_loss']:10.3g} "
              f"{norm:>14}")

    remedies = remedies_comparison(adding[0], plain_flow, args.length, train_steps=args.train_steps)
    print("\n4. remedies for the vanishing gradient of the Elman network on the same task")
    print_flow_table(remedies)

    path = write_results("gradients", {"linear_rnn": linear, "adding": adding, "clipping": clipping,
                                       "remedies": remedies,
                                       "seconds": time.perf_counter() - started})
    print(f"\nresults in {path}; figures: " + ", ".join(sorted(p.name for p in RESULTS.glob("gradients-*.png"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
