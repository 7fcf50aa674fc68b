"""Hidden Markov models against hmmlearn, EM against gradient ascent, scan against the loop.

    pip install -e ".[peers,plot]"
    python benchmarks/hmm.py                 # ~1 minute; writes results/hmm.json and results/hmm_em_vs_sgd.png

1. Baum–Welch on K=10 states, V=30 symbols, 100 sequences x 1,000 steps, 20 iterations,
   from the same initial parameters in both libraries: the log-likelihood of every
   iteration (largest relative difference) and the time, as a ratio to hmmlearn's
   default implementation ("log") and to its faster "scaling" one. Bound: >= 10x.
2. ``score`` on the same data, both implementations.
3. EM against Adam on the same data (sampled from a known HMM), from the same random
   starts: the log-likelihood per symbol after every pass over the data, printed and plotted.
4. The parallel prefix-scan filter against the sequential one at T = 4,096 and 10,000
   (one sequence, K=10): equal results, and the time of each.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._timing import RESULTS, interleaved_medians, write_results  # noqa: E402
from rnnkit.models.hmm import CategoricalHMM  # noqa: E402


def _random_problem(k, v, n, t, seed):
    rng = np.random.default_rng(seed)
    pi, P, C = rng.dirichlet(np.ones(k)), rng.dirichlet(np.ones(k), k), rng.dirichlet(np.ones(v), k)
    symbols = rng.integers(0, v, (n, t))
    return pi, P, C, symbols


def _hmmlearn(k, v, pi, P, C, iterations, implementation):
    from hmmlearn import hmm

    peer = hmm.CategoricalHMM(k, n_iter=iterations, tol=-np.inf, init_params="", params="ste",
                              implementation=implementation, n_features=v)
    peer.startprob_, peer.transmat_, peer.emissionprob_ = pi.copy(), P.copy(), C.copy()
    history = []
    report = peer.monitor_.report
    peer.monitor_.report = lambda value: (history.append(value), report(value))[1]
    return peer, history


def versus_hmmlearn(repeats: int) -> dict:
    k, v, n, t, iterations = 10, 30, 100, 1000, 20
    pi, P, C, symbols = _random_problem(k, v, n, t, seed=0)
    X, lengths = symbols.reshape(-1, 1), [t] * n
    x = torch.from_numpy(symbols)

    ours = CategoricalHMM.from_probabilities(pi, P, C).fit_em(x, iterations=iterations)[:iterations]
    rel = {}
    for impl in ("log", "scaling"):
        peer, history = _hmmlearn(k, v, pi, P, C, iterations, impl)
        peer.fit(X, lengths)
        rel[impl] = float(np.max(np.abs((np.array(ours) - np.array(history)) / np.array(history))))

    def fit_ours():
        CategoricalHMM.from_probabilities(pi, P, C).fit_em(x, iterations=iterations)

    def fit_peer(impl):
        return lambda: _hmmlearn(k, v, pi, P, C, iterations, impl)[0].fit(X, lengths)

    fit = interleaved_medians({"rnnkit": fit_ours, "hmmlearn-log": fit_peer("log"),
                               "hmmlearn-scaling": fit_peer("scaling")}, repeats=repeats, warmup=1)

    model = CategoricalHMM.from_probabilities(pi, P, C)
    peers = {impl: _hmmlearn(k, v, pi, P, C, 1, impl)[0] for impl in ("log", "scaling")}
    scores = {"rnnkit": model.score(x), **{f"hmmlearn-{i}": float(p.score(X, lengths)) for i, p in peers.items()}}
    score = interleaved_medians({"rnnkit": lambda: model.score(x),
                                 "hmmlearn-log": lambda: peers["log"].score(X, lengths),
                                 "hmmlearn-scaling": lambda: peers["scaling"].score(X, lengths)},
                                repeats=5 * repeats, warmup=2)
    return {"problem": {"states": k, "symbols": v, "sequences": n, "steps": t, "iterations": iterations},
            "em_loglik_history_rnnkit": ours, "em_max_relative_difference": rel,
            "fit_seconds": fit, "score_seconds": score, "scores": scores,
            "fit_speedup": {p: fit[p] / fit["rnnkit"] for p in ("hmmlearn-log", "hmmlearn-scaling")},
            "score_speedup": {p: score[p] / score["rnnkit"] for p in ("hmmlearn-log", "hmmlearn-scaling")}}


METHODS = {"EM (Baum–Welch)": None, "Adam lr 0.1, batches of 4": (0.1, 4), "Adam lr 0.1, full batch": (0.1, None)}


def em_versus_gradient(passes: int, seeds: int) -> dict:
    """Data from a known HMM with sticky states and peaked emissions; for every seed, EM and
    Adam start from the same random parameters (the model's default initialisation)."""
    k, v, n, t = 4, 8, 32, 200
    g = torch.Generator().manual_seed(1)
    P = torch.full((k, k), 0.1 / (k - 1)).fill_diagonal_(0.9)
    C = torch.softmax(3 * torch.randn(k, v, generator=g), -1)
    truth = CategoricalHMM.from_probabilities(torch.full((k,), 1 / k), P, C)
    data = truth.sample(n, t, generator=g).symbols
    symbols = data.numel()

    curves = {name: [] for name in METHODS}
    seconds = {name: 0.0 for name in METHODS}
    for seed in range(seeds):
        for name, adam in METHODS.items():
            start = time.perf_counter()
            torch.manual_seed(seed)
            model = CategoricalHMM(k, v, dtype=torch.float64)
            if adam is None:
                history = model.fit_em(data, iterations=passes)
            else:
                history = model.fit_gradient(data, epochs=passes, lr=adam[0], batch_size=adam[1],
                                             generator=torch.Generator().manual_seed(seed))
            curves[name].append([h / symbols for h in history])
            seconds[name] += time.perf_counter() - start
    # passes until a run comes within 0.005 nats/symbol of the best value any method found from that start
    reach = {name: [] for name in METHODS}
    for seed in range(seeds):
        best = max(max(curves[name][seed]) for name in METHODS)
        for name in METHODS:
            reach[name].append(next((i for i, h in enumerate(curves[name][seed]) if h >= best - 0.005), None))
    return {"problem": {"states": k, "symbols": v, "sequences": n, "steps": t, "passes": passes, "seeds": seeds},
            "truth_loglik_per_symbol": truth.score(data) / symbols, "curves": curves,
            "passes_to_best_within_0.005": reach,
            "seconds_per_pass": {name: sec / (seeds * passes) for name, sec in seconds.items()}}


def scan_versus_loop(repeats: int) -> dict:
    out = {}
    g = torch.Generator().manual_seed(3)
    model = CategoricalHMM(10, 30, dtype=torch.float64)
    for t in (4096, 10_000):
        symbols = torch.randint(0, 30, (1, t), generator=g)
        with torch.no_grad():
            seq = model.filter(symbols)
            par = model.parallel_filter(symbols)
            log_pi, log_P, em, _ = model._prepare("bench", symbols, None)
            from rnnkit.models.hmm.reference import _reference_filter
            times = interleaved_medians({
                "loop (step by step)": lambda: _reference_filter(log_pi, log_P, em.log(), em.mask),
                "fast sequential": lambda: model.filter(symbols),
                "parallel scan": lambda: model.parallel_filter(symbols)}, repeats=repeats, warmup=1)
        out[str(t)] = {"seconds": times,
                       "max_abs_difference_filtered": float((seq.filtered - par.filtered).abs().max()),
                       "relative_difference_loglik": float(((seq.log_likelihood - par.log_likelihood)
                                                            / seq.log_likelihood).abs().max())}
    return out


def plot(curves: dict, truth: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    for (name, runs), color in zip(curves.items(), ("tab:blue", "tab:orange", "tab:green")):
        runs = np.array(runs)
        for run in runs:
            ax.plot(range(len(run)), run, color=color, alpha=0.3, linewidth=0.8)
        ax.plot(range(runs.shape[1]), np.median(runs, 0), color=color, linewidth=2.2, label=f"{name} (median)")
    ax.axhline(truth, color="black", linestyle="--", linewidth=1, label="true parameters")
    ax.set_xlabel("passes over the data")
    ax.set_ylabel("log-likelihood per symbol (nats)")
    ax.set_title("Baum–Welch against gradient ascent (thin lines: one start each)")
    low = min(min(run[1:]) for runs in curves.values() for run in runs)
    ax.set_ylim(low - 0.05, truth + 0.05)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions of each fit (default 3)")
    parser.add_argument("--passes", type=int, default=30, help="passes of EM and of Adam (default 30)")
    parser.add_argument("--seeds", type=int, default=4, help="random starts for EM against Adam (default 4)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    peer = versus_hmmlearn(args.repeats)
    print("Baum–Welch, K=10 V=30, 100 x 1000 steps, 20 iterations (median of", args.repeats, "runs, 1 thread)")
    print(f"{'':22}{'fit (s)':>10}{'score (s)':>11}{'score':>16}")
    for name in ("rnnkit", "hmmlearn-log", "hmmlearn-scaling"):
        print(f"{name:22}{peer['fit_seconds'][name]:10.3f}{peer['score_seconds'][name]:11.4f}"
              f"{peer['scores'][name]:16.6f}")
    for p in ("hmmlearn-log", "hmmlearn-scaling"):
        impl = p.split("-")[1]
        print(f"rnnkit is {peer['fit_speedup'][p]:.1f}x faster than {p} at EM "
              f"({peer['score_speedup'][p]:.1f}x at score); "
              f"largest relative difference of an iteration's log-likelihood: "
              f"{peer['em_max_relative_difference'][impl]:.1e}")

    race = em_versus_gradient(args.passes, args.seeds)
    print(f"\nEM against Adam, K=4 V=8, 32 x 200 steps, {args.seeds} random starts; median log-likelihood "
          f"per symbol (true parameters: {race['truth_loglik_per_symbol']:.4f})")
    marks = [m for m in (0, 1, 2, 5, 10, 20, 30, 40, 60) if m <= args.passes]
    print(f"{'after passes':28}" + "".join(f"{m:>8}" for m in marks) + "  s/pass  passes to within 0.005 of best")
    for name, runs in race["curves"].items():
        med = np.median(np.array(runs), 0)
        reach = ["-" if r is None else str(r) for r in race["passes_to_best_within_0.005"][name]]
        print(f"{name:28}" + "".join(f"{med[m]:8.4f}" for m in marks)
              + f"{race['seconds_per_pass'][name]:8.3f}  " + " ".join(reach))
    png = RESULTS / "hmm_em_vs_sgd.png"
    RESULTS.mkdir(exist_ok=True)
    plot(race["curves"], race["truth_loglik_per_symbol"], png)
    print(f"plot: {png}")

    scan = scan_versus_loop(args.repeats)
    print("\nforward filter, one sequence, K=10 (median seconds)")
    for t, r in scan.items():
        s = r["seconds"]
        print(f"T={t:>6}: " + ", ".join(f"{k} {v:.4f}" for k, v in s.items())
              + f"; scan is {s['loop (step by step)'] / s['parallel scan']:.1f}x the loop; "
              f"max |Δ filtered| {r['max_abs_difference_filtered']:.1e}")
    path = write_results("hmm", {"versus_hmmlearn": peer, "em_versus_gradient": race, "scan": scan})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
