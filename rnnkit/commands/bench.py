"""``rnnkit bench``: benchmark suites; ``tasks``, the long-dependency suite of
:mod:`rnnkit.train.task_suite`."""
from __future__ import annotations

from ..models.language_model import CELL_NETWORKS
from ..train.task_suite import SUITE, format_table, run_suite

HELP = "benchmark suites (see: rnnkit bench tasks --help)"
AT_LEAST_ONE = ("hidden_size",)


def add_arguments(parser) -> None:
    suites = parser.add_subparsers(dest="suite", metavar="SUITE", required=True)
    tasks = suites.add_parser(
        "tasks", help="which cell solves which long-dependency task",
        description="Train Elman, gated, LSTM and GRU cells on the adding problem, the copy task, delayed "
                    "recall, parity and the row-by-row digits for a fixed budget each, and print who beats "
                    "the memoryless baseline at which length.")
    tasks.add_argument("--task", action="append", help="limit to this task (repeatable)")
    tasks.add_argument("--sizes", type=int, nargs="+", help="lengths/delays to try instead of the defaults")
    tasks.add_argument("--cells", default="elman,gated,lstm,gru", help="comma-separated cells")
    tasks.add_argument("--seconds", type=float, default=30.0, help="training budget per run (default 30)")
    tasks.add_argument("--hidden-size", type=int, default=64)
    tasks.add_argument("--quiet", action="store_true")


def run(args) -> int:
    suite = [entry for entry in SUITE if not args.task or entry[0] in args.task]
    if args.task:
        unknown = sorted(set(args.task) - {name for name, _, _ in SUITE})
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; choose from {sorted(n for n, _, _ in SUITE)}")
    if args.sizes:
        suite = [(name, arg, tuple(args.sizes) if arg else sizes) for name, arg, sizes in suite]
    cells = tuple(args.cells.split(","))
    unknown = sorted(set(cells) - set(CELL_NETWORKS))
    if unknown:
        raise ValueError(f"unknown cell(s) {unknown}; choose from {sorted(CELL_NETWORKS)}")
    runs = run_suite(suite, cells, seconds=args.seconds, hidden_size=args.hidden_size,
                     progress=None if args.quiet else print)
    print("\n" + format_table(runs))
    return 0
