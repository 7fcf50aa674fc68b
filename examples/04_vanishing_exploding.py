"""Lesson 4: vanishing and exploding gradients, measured, and which cells learn the adding problem.

The gradient of the last step's loss reaches the state t steps earlier through a product of t
Jacobians. For a linear RNN with recurrent matrix W = lambda Q (Q orthogonal) the product shrinks or
grows exactly as lambda^t; rnnkit.analysis.gradient_flow measures it and gradient_decay_rate fits the
factor per step. The same W inside a tanh Elman cell decays faster, because tanh' <= 1. Then Elman,
LSTM and GRU regressors are trained on the adding problem (rnnkit.data.tasks), whose two marked
values lie up to T steps before the answer, and compared with the memoryless baseline MSE 1/6.
Run: python examples/04_vanishing_exploding.py [--quick]
"""
import matplotlib.pyplot as plt
import torch

from _common import lesson, report, save

import rnnkit
from rnnkit.analysis import gradient_decay_rate, gradient_flow
from rnnkit.data.tasks import adding_problem
from rnnkit.init import random_orthogonal
from rnnkit.models import SequenceRegressor

torch.set_num_threads(1)         # tiny models: one thread is fastest and fair to a shared machine
LAMBDAS = (0.8, 0.9, 1.0, 1.1, 1.3)


# ----- part 1: the |lambda|^t lines --------------------------------------------------------------
def last_step_flow(cell, steps, seed):
    """||dL_T/ds_t|| for t = 0..T, with L_t = ||s_t||^2, on random inputs (4 sequences)."""
    x = torch.randn(4, steps, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    flow = gradient_flow(cell, x, lambda out: out[0].pow(2).sum(-1))    # per-step losses (B, T)
    return flow, flow.last_step_norms / flow.last_step_norms[:, -1:]     # normalised at t = T


def spectral_lines(hidden, steps, seed):
    q = random_orthogonal(hidden, generator=torch.Generator().manual_seed(seed))
    lines = {}
    for kind in ("linear", "tanh"):
        for lam in LAMBDAS:
            cell = (rnnkit.cells.LTICell(1, hidden, bias=False, dtype=torch.float64) if kind == "linear"
                    else rnnkit.cells.ElmanCell(1, hidden, dtype=torch.float64))
            with torch.no_grad():
                cell.weight_hh.copy_(lam * q)                             # every singular value is lambda
            flow, relative = last_step_flow(cell, steps, seed)
            lines[kind, lam] = (relative.flip(1), gradient_decay_rate(flow))   # column n: lag n = T - t
    return lines


# ----- part 2: the adding problem ----------------------------------------------------------------
def marker_gradient(model, task):
    """Median over sequences of ||dL/ds_a|| / ||dL/ds_T||, a = the step that read the first marked value."""
    flow = gradient_flow(model, task.inputs, lambda out: (out - task.targets).pow(2).sum())
    first = task.inputs[..., 1].argmax(1)                                 # its input index; state index + 1
    rows = torch.arange(len(first))
    return float((flow.norms[rows, first + 1] / flow.norms[:, -1]).median())


def train_adding(cell, length, steps, seed, batch=64):
    torch.manual_seed(seed)
    model = SequenceRegressor(input_size=2, output_size=1, hidden_size=64, cell=cell)
    train = adding_problem(batch * steps, length, seed=seed + 1)
    test = adding_problem(1000, length, seed=seed + 2)
    at_start = marker_gradient(model, adding_problem(100, length, seed=seed + 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for i in range(steps):
        rows = slice(i * batch, (i + 1) * batch)
        loss, _ = model.loss(train.inputs[rows], train.targets[rows])   # mean squared error
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)          # lesson 3: no explosions
        optimizer.step()
        history.append(loss.item())
    with torch.no_grad():
        mse = float(model.loss(test.inputs, test.targets)[0])
    return dict(history=history, mse=mse, baseline=test.baseline, at_start=at_start,
                trained=marker_gradient(model, adding_problem(100, length, seed=seed + 3)))


def main():
    args = lesson(__doc__.splitlines()[0])
    steps_back = 30 if args.quick else 60
    lines = spectral_lines(hidden=32, steps=steps_back, seed=args.seed)
    for (kind, lam), (_, rate) in lines.items():
        report(f"{kind} RNN, W = {lam} Q: fitted gradient factor per step", rate)

    length, updates = (20, 30) if args.quick else (50, 1200)
    cells = ("elman", "lstm", "gru")
    runs = {cell: train_adding(cell, length, updates, args.seed) for cell in cells}
    report("adding problem: length T", length)
    report("adding problem: memoryless baseline MSE", runs["elman"]["baseline"])
    for cell, run in runs.items():
        report(f"{cell}: test MSE after {updates} Adam steps", run["mse"])
        report(f"{cell}: below 10% of the baseline", run["mse"] < 0.1 * run["baseline"])
        report(f"{cell}: ||dL/ds_marker|| / ||dL/ds_T|| at init", run["at_start"])
        report(f"{cell}: ||dL/ds_marker|| / ||dL/ds_T|| trained", run["trained"])

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    colors = dict(zip(LAMBDAS, plt.cm.viridis(torch.linspace(0, 0.9, len(LAMBDAS)).numpy())))
    lags = torch.arange(steps_back + 1)
    for ax, kind in zip(axes[:2], ("linear", "tanh")):
        for lam in LAMBDAS:
            relative, rate = lines[kind, lam]
            ax.plot(lags, relative.median(0).values, color=colors[lam], lw=2,
                    label=f"λ = {lam}: fitted {rate:.3f}")
            ax.plot(lags, lam ** lags.double(), color=colors[lam], ls="--", lw=1)
        ax.set_yscale("log")
        ax.set_ylim(1e-8, 1e8)
        ax.set_xlabel("lag T − t (steps back in time)")
        ax.set_ylabel("‖∂L_T/∂s_t‖ / ‖∂L_T/∂s_T‖")
        ax.legend(fontsize=8, title="dashed: λ^(T−t)", title_fontsize=8)
    axes[0].set_title("Linear RNN, W = λQ: exactly λ^t")
    axes[1].set_title("Same W in a tanh Elman cell: faster decay")
    ax = axes[2]
    window = max(1, updates // 40)
    for cell, run in runs.items():
        smooth = torch.tensor(run["history"]).unfold(0, window, 1).mean(1)
        ax.plot(range(window - 1, updates), smooth, label=f"{cell}: test MSE {run['mse']:.2g}")
    ax.axhline(runs["elman"]["baseline"], color="grey", ls="--", label="baseline 1/6 (predict 1)")
    ax.set_yscale("log")
    ax.set_xlabel("Adam step (batch 64)")
    ax.set_ylabel("training MSE (moving mean)")
    ax.set_title(f"Adding problem, T = {length}, 64 units")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, args, "04_vanishing_exploding")


if __name__ == "__main__":
    main()
