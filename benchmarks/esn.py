"""Echo state networks: rnnkit against ReservoirPy on Mackey–Glass, in the same run.

    python benchmarks/esn.py            # 5 seeds, 15 timing repetitions, writes results/esn.json
    python benchmarks/esn.py --quick    # 3 seeds, 5 repetitions

The task of issue 5. One Mackey–Glass series (tau = 17, rnnkit's generator, 2,501
samples = 2,500 one-step pairs, scaled to [-1, 1]) is the *same* float64 array
for both libraries: inputs ``s[0:2000]`` -> targets ``s[1:2001]`` for training
(the first 100 states are warm-up and not fitted), ``s[2000:2500]`` ->
``s[2001:2501]`` for the one-step test. Both reservoirs have 500 units, spectral
radius 0.9, leak rate 1, ridge 1e-6, and are otherwise each library's defaults.

What is matched, and what is not (and why):

- matched: units, spectral radius (both rescale exactly), leak, ridge, warm-up,
  and the density of ``W``: ReservoirPy's ``rc_connectivity=0.1`` is rnnkit's
  default ``sparsity=0.9``, so both reservoirs have 25,000 recurrent weights and
  the same cost per step.
- not matched, each library's default on purpose (the issue compares what a user
  gets): ReservoirPy draws ``W`` from a normal distribution, ``W_in`` as ±1
  on 10 % of the units, and no bias; rnnkit draws ``W`` and ``W_in`` from
  ``U(-1, 1)`` (``W_in`` dense) and a bias ``0.5·U(-1, 1)``. The bias decides
  the closed loop (see (d)), so ReservoirPy is also run with the same kind of
  bias (``bias=uniform(low=-0.5, high=0.5)``, the ``+bias`` rows).
- readout: ReservoirPy centres the data and does not regularise the intercept;
  rnnkit regularises the bias row like the weights (what makes its recursive
  least squares equal its ridge solution). At ridge 1e-6 the predictions differ
  by ~1e-10 (see (b)).

Reported:

(a) one-step NRMSE (RMSE / std of the test targets) over ``--seeds`` reservoirs per
    library: median, range, and the ratio of medians rnnkit / ReservoirPy
    (goal: <= 1.1).
(b) parity: ReservoirPy's own ``W``, ``Win`` and ``bias`` (seed 0) copied into
    ``ReservoirCell.from_weights``: the largest differences of the training states
    and of the one-step test predictions (goal: < 1e-8) of the two pipelines.
(c) fitting time, a reservoir already built: run it over the 2,000 training inputs
    from a zero state and solve the readout (``EchoStateNetwork.fit`` /
    ``ESN.fit(warmup=100)``). Median of interleaved repetitions, with the two parts
    timed alone as well, and the previous rnnkit path (the loop engine + ridge) for
    reference. Goal: ReservoirPy / rnnkit >= 3.
(d) closed loop: from the state after the training inputs, read ``s[2000]`` and feed
    every output back for 500 steps; the horizon is the number of leading steps
    whose running NRMSE ``sqrt(mean_{t<=k} (g_t - s_t)^2) / std(s[2001:2501])``
    stays <= 0.1 (``rnnkit.models.esn.closed_loop_horizon``; 500 = never exceeded).
    Goal: >= 100 for every rnnkit seed.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._timing import interleaved_medians, write_results  # noqa: E402
from rnnkit.cells.reservoir import ReservoirCell  # noqa: E402
from rnnkit.models.esn import (EchoStateNetwork, closed_loop_horizon, mackey_glass, nrmse,  # noqa: E402
                               ridge_regression)

UNITS, RADIUS, LEAK, RIDGE, WARMUP = 500, 0.9, 1.0, 1e-6, 100
TRAIN, TEST = 2000, 500
NRMSE_RATIO_BOUND, SPEED_BOUND, PARITY_BOUND, HORIZON_BOUND = 1.1, 3.0, 1e-8, 100


def reservoirpy_model(seed: int, with_bias: bool):
    from reservoirpy import ESN
    from reservoirpy.mat_gen import uniform
    from reservoirpy.nodes import Reservoir, Ridge
    extra = {"bias": uniform(low=-0.5, high=0.5)} if with_bias else {}
    reservoir = Reservoir(UNITS, sr=RADIUS, lr=LEAK, seed=seed, **extra)
    return ESN(reservoir=reservoir, readout=Ridge(ridge=RIDGE)), reservoir


def evaluate_reservoirpy(data: np.ndarray, seed: int, with_bias: bool) -> dict:
    model, reservoir = reservoirpy_model(seed, with_bias)
    model.fit(data[:TRAIN], data[1:TRAIN + 1], warmup=WARMUP)
    after_training = reservoir.state
    one_step = model.run(data[TRAIN:TRAIN + TEST])
    reservoir.state = after_training
    outputs = [model.step(data[TRAIN])]
    for _ in range(TEST - 1):
        outputs.append(model.step(outputs[-1]))
    truth = torch.from_numpy(data[TRAIN + 1:TRAIN + TEST + 1]).view(1, TEST, 1)
    generated = torch.from_numpy(np.stack(outputs)).view(1, TEST, 1)
    return {"nrmse": nrmse(torch.from_numpy(one_step), truth[0]), "horizon": closed_loop_horizon(generated, truth)}


def evaluate_rnnkit(esn: EchoStateNetwork, x: torch.Tensor) -> dict:
    esn.fit(x[:, :TRAIN], x[:, 1:TRAIN + 1])
    truth = x[:, TRAIN + 1:TRAIN + TEST + 1]
    one_step = esn.predict(x[:, TRAIN:TRAIN + TEST], state=esn.last_state)
    generated = esn.generate(x[:, TRAIN:TRAIN + 1], TEST, state=esn.last_state)
    return {"nrmse": nrmse(one_step, truth), "horizon": closed_loop_horizon(generated, truth),
            "one_step": one_step, "generated": generated}


def summary(values: list) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "all": values}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 seeds, 5 timing repetitions (noisier)")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    seeds = list(range(args.seeds or (3 if args.quick else 5)))
    repeats = args.repeats or (5 if args.quick else 15)

    series = mackey_glass(TRAIN + TEST + 1, tau=17)                 # float64, [-1, 1]
    x = series.view(1, -1, 1)
    data = series.numpy().reshape(-1, 1)                            # the same memory, for ReservoirPy

    # (a) + (d): each library with its own random reservoirs
    runs = {"rnnkit": [], "reservoirpy": [], "reservoirpy+bias": []}
    for seed in seeds:
        esn = EchoStateNetwork(1, 1, UNITS, ridge=RIDGE, warmup=WARMUP, spectral_radius=RADIUS,
                               leak_rate=LEAK, seed=seed)
        runs["rnnkit"].append(evaluate_rnnkit(esn, x))
        runs["reservoirpy"].append(evaluate_reservoirpy(data, seed, with_bias=False))
        runs["reservoirpy+bias"].append(evaluate_reservoirpy(data, seed, with_bias=True))
    accuracy = {name: {"nrmse": summary([r["nrmse"] for r in rs]), "horizon": summary([r["horizon"] for r in rs])}
                for name, rs in runs.items()}
    nrmse_ratio = accuracy["rnnkit"]["nrmse"]["median"] / accuracy["reservoirpy"]["nrmse"]["median"]

    # (b) parity: ReservoirPy's own weights (seed 0, defaults) in an rnnkit cell
    model_b, res_b = reservoirpy_model(0, with_bias=False)
    model_b.fit(data[:TRAIN], data[1:TRAIN + 1], warmup=WARMUP)
    their_one_step = model_b.run(data[TRAIN:TRAIN + TEST])
    bias = float(res_b.bias) if np.ndim(res_b.bias) == 0 else torch.from_numpy(np.asarray(res_b.bias).reshape(-1))
    cell = ReservoirCell.from_weights(torch.from_numpy(res_b.W.toarray()), torch.from_numpy(res_b.Win.toarray()),
                                      bias, leak_rate=float(res_b.lr))
    twin = EchoStateNetwork.from_cell(cell, 1, ridge=RIDGE, warmup=WARMUP)
    ours = evaluate_rnnkit(twin, x)
    res_b.reset()
    their_states = res_b.run(data[:TRAIN])
    parity = {
        "states_max_abs_diff": float(np.abs(cell.run(x[:, :TRAIN])[0][0].numpy() - their_states).max()),
        "one_step_max_abs_diff": float(np.abs(ours["one_step"][0].numpy() - their_one_step).max()),
        "readout_weight_max_abs_diff": float(np.abs(twin.readout_weight[0].numpy()
                                                    - model_b.readout.Wout[:, 0]).max()),
        "rnnkit_nrmse": ours["nrmse"], "reservoirpy_nrmse": runs["reservoirpy"][0]["nrmse"],
        "rnnkit_horizon": ours["horizon"], "reservoirpy_horizon": runs["reservoirpy"][0]["horizon"],
    }

    # (c) fitting time on built reservoirs (seed 0 of each)
    esn = EchoStateNetwork(1, 1, UNITS, ridge=RIDGE, warmup=WARMUP, spectral_radius=RADIUS,
                           leak_rate=LEAK, seed=0)
    model, reservoir = reservoirpy_model(0, with_bias=False)
    model.fit(data[:TRAIN], data[1:TRAIN + 1], warmup=WARMUP)        # builds W (not timed)
    from reservoirpy.nodes import Ridge
    x_train, y_train = x[:, :TRAIN], x[:, 1:TRAIN + 1]
    states = esn.states(x_train)[0][0, WARMUP:]
    their_train_states = reservoir.run(data[:TRAIN])

    def rpy_fit():
        model.reset()
        model.fit(data[:TRAIN], data[1:TRAIN + 1], warmup=WARMUP)

    def rpy_run():
        reservoir.reset()
        reservoir.run(data[:TRAIN])

    def loop_fit():                        # the previous path: generic loop engine + ridge
        with torch.no_grad():
            h, _ = esn.reservoir(x_train)
        ridge_regression(h[0, WARMUP:], y_train[0, WARMUP:], RIDGE)

    times = interleaved_medians({
        "rnnkit fit": lambda: esn.fit(x_train, y_train),
        "reservoirpy fit": rpy_fit,
        "rnnkit run": lambda: esn.states(x_train),
        "reservoirpy run": rpy_run,
        "rnnkit readout": lambda: ridge_regression(states, y_train[0, WARMUP:], RIDGE),
        "reservoirpy readout": lambda: Ridge(ridge=RIDGE).fit(their_train_states, data[1:TRAIN + 1],
                                                              warmup=WARMUP),
        "rnnkit loop-engine fit": loop_fit,
    }, repeats, warmup=2)
    speedup = times["reservoirpy fit"] / times["rnnkit fit"]

    checks = {"nrmse_within_10pct": nrmse_ratio <= NRMSE_RATIO_BOUND,
              "parity_1e-8": parity["one_step_max_abs_diff"] < PARITY_BOUND,
              "fit_3x_faster": speedup >= SPEED_BOUND,
              "closed_loop_100_steps": accuracy["rnnkit"]["horizon"]["min"] >= HORIZON_BOUND}

    print(f"Mackey-Glass tau=17, {UNITS} units, radius {RADIUS}, leak {LEAK}, ridge {RIDGE}, warm-up {WARMUP}, "
          f"train {TRAIN} / test {TEST}; seeds {seeds}; torch threads {torch.get_num_threads()}\n")
    print(f"{'(a)+(d)':18} {'one-step NRMSE median':>22} {'range':>21} {'closed-loop horizon':>20} "
          f"{'range':>11}")
    for name, acc in accuracy.items():
        n, h = acc["nrmse"], acc["horizon"]
        print(f"{name:18} {n['median']:22.3e} {n['min']:10.3e}..{n['max']:.3e} {h['median']:20.0f} "
              f"{h['min']:5d}..{h['max']:<5d}")
    print(f"NRMSE ratio rnnkit / ReservoirPy (medians): {nrmse_ratio:.3f} (goal <= {NRMSE_RATIO_BOUND})\n")
    print(f"(b) parity, ReservoirPy seed-0 weights in ReservoirCell.from_weights: states differ by at most "
          f"{parity['states_max_abs_diff']:.1e}, one-step predictions by {parity['one_step_max_abs_diff']:.1e} "
          f"(goal < {PARITY_BOUND:.0e}), readout weights by {parity['readout_weight_max_abs_diff']:.1e}; "
          f"NRMSE {parity['rnnkit_nrmse']:.4e} vs {parity['reservoirpy_nrmse']:.4e}, horizon "
          f"{parity['rnnkit_horizon']} vs {parity['reservoirpy_horizon']}\n")
    print(f"(c) fitting time, median of {repeats} interleaved repetitions (ms)")
    print(f"{'':24} {'rnnkit':>8} {'ReservoirPy':>12} {'ratio':>7}")
    for part in ("fit", "run", "readout"):
        a, b = times[f"rnnkit {part}"], times[f"reservoirpy {part}"]
        print(f"{part:24} {1e3 * a:8.1f} {1e3 * b:12.1f} {b / a:7.2f}")
    print(f"{'rnnkit loop-engine fit':24} {1e3 * times['rnnkit loop-engine fit']:8.1f}")
    print(f"speed-up of fit, ReservoirPy / rnnkit: {speedup:.2f} (goal >= {SPEED_BOUND})\n")
    print("checks: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in checks.items()))

    path = write_results("esn", {
        "benchmark": "echo state network on Mackey-Glass, rnnkit vs ReservoirPy (see benchmarks/esn.py)",
        "config": {"units": UNITS, "spectral_radius": RADIUS, "leak_rate": LEAK, "ridge": RIDGE,
                   "warmup": WARMUP, "train": TRAIN, "test": TEST, "tau": 17, "seeds": seeds,
                   "repeats": repeats},
        "accuracy": accuracy, "nrmse_ratio": nrmse_ratio, "parity": parity,
        "fit_seconds": times, "fit_speedup": speedup, "checks": checks,
        "reservoirpy": __import__("reservoirpy").__version__})
    print(f"results in {path}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
