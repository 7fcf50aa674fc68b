"""Who solves what: Elman, gated, LSTM and GRU cells on the classic long-dependency tasks.

    python benchmarks/long_dependencies.py                       # the whole grid, 30 s a run
    python benchmarks/long_dependencies.py --task adding_problem:200 --cells lstm --seconds 240

Prints a table (rows: task and length; columns: cells; * where the memoryless
baseline is beaten) and writes results/long_dependencies[-NAME].json. The same
suite runs as ``rnnkit bench tasks``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._timing import write_results  # noqa: E402
from rnnkit.train.task_suite import SUITE, as_dicts, format_table, run_suite  # noqa: E402


def parse_tasks(specs):
    """``name`` or ``name:size`` entries -> a suite in the SUITE format."""
    if not specs:
        return SUITE
    known = {name: (arg, sizes) for name, arg, sizes in SUITE}
    suite = []
    for spec in specs:
        name, _, size = spec.partition(":")
        if name not in known:
            raise SystemExit(f"unknown task {name!r}; choose from {sorted(known)}")
        arg, sizes = known[name]
        suite.append((name, arg, (int(size),) if size else sizes))
    return suite


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", action="append", help="task or task:size (repeatable; default: all)")
    parser.add_argument("--cells", default="elman,gated,lstm,gru")
    parser.add_argument("--seconds", type=float, default=30.0, help="training budget per run")
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--name", default="", help="suffix of the results file")
    args = parser.parse_args(argv)
    runs = run_suite(parse_tasks(args.task), tuple(args.cells.split(",")), seconds=args.seconds,
                     hidden_size=args.hidden_size, lr=args.lr)
    print("\n" + format_table(runs))
    path = write_results("long_dependencies" + (f"-{args.name}" if args.name else ""),
                         {"seconds_per_run": args.seconds, "hidden_size": args.hidden_size, "lr": args.lr,
                          "runs": as_dicts(runs)})
    print(f"results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
