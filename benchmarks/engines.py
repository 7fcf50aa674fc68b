"""Engine speed: rnnkit layers against torch.nn in the same run.

    python benchmarks/engines.py            # full table, writes results/engines.json
    python benchmarks/engines.py --quick    # fewer repetitions

Forward+backward time of ``rnnkit.LSTM``/``GRU`` (engine auto -> native) against
``torch.nn.LSTM``/``GRU`` with identical weights: native dispatch must cost
nothing (ratio <= 1.05). The ``loop`` engine is timed too: it is the bar the
fused engines must beat.
"""
from __future__ import annotations

import argparse
import sys

import torch
from torch import nn

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
import rnnkit  # noqa: E402
from benchmarks._timing import interleaved_medians, write_results  # noqa: E402

SHAPES = [(32, 128, 64, 256), (1, 1000, 32, 128)]    # (B, T, X, H)
BOUND = 1.05


def forward_backward(module, x):
    def run():
        module.zero_grad(set_to_none=True)
        out, _ = module(x)
        out.sum().backward()
    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (noisier)")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    repeats = args.repeats or (7 if args.quick else 25)
    torch.manual_seed(0)
    rows, ok = [], True
    print(f"{'model':6} {'(B, T, X, H)':>20} {'torch ms':>9} {'rnnkit ms':>10} {'ratio':>6} "
          f"{'loop ms':>9} {'loop/torch':>10}")
    for ours_cls, torch_cls in [(rnnkit.LSTM, nn.LSTM), (rnnkit.GRU, nn.GRU)]:
        for B, T, X, H in SHAPES:
            theirs = torch_cls(X, H, batch_first=True)
            ours = ours_cls.from_torch(theirs)
            loop = ours_cls.from_torch(theirs, engine="loop")
            x = torch.randn(B, T, X)
            times = interleaved_medians({"torch": forward_backward(theirs, x),
                                         "rnnkit": forward_backward(ours, x)}, repeats)
            loop_time = interleaved_medians({"loop": forward_backward(loop, x)}, max(3, repeats // 5), 1)["loop"]
            ratio = times["rnnkit"] / times["torch"]
            ok &= ratio <= BOUND
            rows.append({"model": ours_cls.__name__, "shape": [B, T, X, H], "engine": ours.engine,
                         "torch_s": times["torch"], "rnnkit_s": times["rnnkit"], "ratio": ratio,
                         "loop_s": loop_time, "loop_ratio": loop_time / times["torch"]})
            print(f"{ours_cls.__name__:6} {str((B, T, X, H)):>20} {1e3 * times['torch']:9.2f} "
                  f"{1e3 * times['rnnkit']:10.2f} {ratio:6.3f} {1e3 * loop_time:9.1f} "
                  f"{loop_time / times['torch']:10.2f}")
    path = write_results("engines", {"benchmark": "forward+backward, rnnkit (auto) vs torch.nn",
                                     "bound": BOUND, "repeats": repeats, "rows": rows,
                                     "all_within_bound": bool(ok)})
    print(f"\nratio bound {BOUND}: {'met' if ok else 'NOT met'} -- results in {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
