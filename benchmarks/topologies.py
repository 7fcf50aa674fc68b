"""Quality of the topologies beyond language models, each trained through the shared trainer.

    python benchmarks/topologies.py            # all; writes results/topologies.json

- seq2seq with attention reversing digit sequences (length 5-10): held-out
  exact-match accuracy of greedy decoding and of beam search (width 4);
  bound >= 95 %, and beam >= greedy on the same model;
- forecaster on a noisy sine: 50-step closed-loop forecast (median of 100
  sample paths) against the persistence forecast; bound: RMSE 5x lower.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._timing import write_results  # noqa: E402
from rnnkit.data import SequenceBatches  # noqa: E402
from rnnkit.models import Forecaster, Seq2Seq  # noqa: E402
from rnnkit.train import TrainConfig, Trainer  # noqa: E402

PAD, START, END, FIRST_SYMBOL, SYMBOLS = 0, 1, 2, 3, 10


def reversal_data(count: int, seed: int, min_length: int = 5, max_length: int = 10):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_length, max_length + 1, (count,), generator=g)
    source = torch.full((count, max_length), PAD)
    targets = torch.full((count, max_length + 1), PAD)
    for i, n in enumerate(lengths.tolist()):
        seq = torch.randint(FIRST_SYMBOL, FIRST_SYMBOL + SYMBOLS, (n,), generator=g)
        source[i, :n] = seq
        targets[i, :n] = seq.flip(0)
        targets[i, n] = END
    return source, lengths, targets


def seq2seq_reversal(seconds: float) -> dict:
    torch.manual_seed(0)
    source, lengths, targets = reversal_data(20_000, seed=0)
    test_source, test_lengths, test_targets = reversal_data(1_000, seed=1)
    vocab = FIRST_SYMBOL + SYMBOLS
    model = Seq2Seq(vocab, vocab, hidden_size=128, embedding_size=32, attention="additive")
    train = SequenceBatches(source, targets, lengths, batch_size=64)
    valid = SequenceBatches(test_source, test_targets, test_lengths, batch_size=500, shuffle=False)
    config = TrainConfig(lr=3e-3, max_minutes=seconds / 60, eval_every=10**9, warmup=0.05)
    with tempfile.TemporaryDirectory() as run_dir:
        summary = Trainer(model, config, run_dir, progress=False).fit(train, valid)
    model.eval()
    truth = [row[: row.tolist().index(END)].tolist() for row in test_targets]

    def exact(decoded):
        return sum(list(map(int, got)) == want for got, want in zip(decoded.tokens, truth)) / len(truth)

    with torch.no_grad():
        greedy = model.greedy(test_source, test_lengths, max_length=12)
        beam = model.beam_search(test_source, test_lengths, beam_width=4, max_length=12)
    return {"validation_loss": summary["validation_loss"], "steps": summary["steps"],
            "greedy_exact_match": exact(greedy), "beam_exact_match": exact(beam),
            "beam_mean_log_prob": float(torch.as_tensor(beam.log_probs).mean()),
            "greedy_mean_log_prob": float(torch.as_tensor(greedy.log_probs).mean())}


def forecasting(seconds: float) -> dict:
    torch.manual_seed(0)
    t = torch.arange(0, 6000, dtype=torch.float32)
    series = (torch.sin(2 * math.pi * t / 40) + 0.05 * torch.randn_like(t)).view(1, -1, 1)
    windows = series[0, :5000].unfold(0, 101, 10).permute(0, 2, 1)                 # (N, 101, 1)
    model = Forecaster(1, 64)
    train = SequenceBatches(windows[:, :-1], windows[:, 1:], batch_size=32)
    valid = SequenceBatches(windows[-50:, :-1], windows[-50:, 1:], batch_size=50, shuffle=False)
    config = TrainConfig(lr=5e-3, max_minutes=seconds / 60, eval_every=10**9, warmup=0.05)
    with tempfile.TemporaryDirectory() as run_dir:
        Trainer(model, config, run_dir, progress=False).fit(train, valid)
    starts = range(5200, 5900, 50)                                                 # held-out origins
    history = torch.cat([series[:, s - 200: s] for s in starts])                    # (K, 200, 1)
    future = torch.cat([series[:, s: s + 50] for s in starts])                      # (K, 50, 1)
    paths = model.forecast(history, steps=50, num_samples=100, seed=0)
    median = Forecaster.quantiles(paths, (0.5,))[0]
    rmse = (median - future).pow(2).mean().sqrt().item()
    persistence = (history[:, -1:] - future).pow(2).mean().sqrt().item()
    low, high = Forecaster.quantiles(paths, (0.05, 0.95))
    coverage = ((future >= low) & (future <= high)).float().mean().item()
    return {"rmse": rmse, "persistence_rmse": persistence, "ratio": persistence / rmse,
            "coverage_90": coverage, "origins": len(starts)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=90.0, help="training budget per model")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    s2s = seq2seq_reversal(args.seconds)
    fc = forecasting(args.seconds)
    print(f"{'benchmark':34} {'figure':>10} {'bound':>10}")
    print(f"{'seq2seq reversal, greedy exact':34} {s2s['greedy_exact_match']:10.3f} {'>= 0.95':>10}")
    print(f"{'seq2seq reversal, beam-4 exact':34} {s2s['beam_exact_match']:10.3f} {'>= greedy':>10}")
    print(f"{'forecast 50 steps, RMSE':34} {fc['rmse']:10.4f}")
    print(f"{'persistence, RMSE':34} {fc['persistence_rmse']:10.4f}")
    print(f"{'persistence / forecaster':34} {fc['ratio']:10.1f} {'>= 5':>10}")
    print(f"{'90% interval coverage':34} {fc['coverage_90']:10.3f}")
    met = s2s["greedy_exact_match"] >= 0.95 and s2s["beam_exact_match"] >= s2s["greedy_exact_match"] \
        and fc["ratio"] >= 5
    path = write_results("topologies", {"seconds_per_model": args.seconds, "seq2seq_reversal": s2s,
                                        "forecasting": fc, "all_bounds_met": met,
                                        "wall_seconds": time.perf_counter() - started})
    print(f"bounds {'met' if met else 'NOT met'}; results in {path}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
