"""Engine speed: every cell on every engine against torch.nn.LSTM at equal FLOPs, in the same run.

    python benchmarks/engines.py            # full table, writes results/engines.json (about 4 minutes)
    python benchmarks/engines.py --quick    # fewer repetitions (noisier)

**Equal FLOPs.** A step of a cell with ``k`` stacked gate blocks of hidden size ``H``
multiplies ``k·H × (X + H)`` weights per sequence (LSTM and layer-norm LSTM k = 4, GRU
3, gated 2, Elman, leaky and rate 1). Each cell is compared with a ``torch.nn.LSTM`` of
the hidden size ``H'`` that does the same multiply-adds per step, ``4 H' (X + H') = k H
(X + H)`` (``H' = H`` for the LSTM family), timed in the same interleaved repetitions.
This measures what a user would otherwise run for the same arithmetic; it does not
assume that time scales with FLOPs (at B = 1 it does not). Layer normalization and
regularizers add work that the reference does not do, and are counted against the cell.

**Modes.** ``fwd+bwd``: forward, ``sum()`` of the outputs, backward, gradients zeroed
each time; ``fwd``: forward under ``torch.no_grad()`` (torch then takes its oneDNN
inference kernel). Single-threaded (``torch.set_num_threads(1)`` and one OpenBLAS thread
for NumPy, which the fused engine's CPU loops use), so that the ratios compare work,
not thread pools.

Checks (the bounds of issue 7): fused custom cells (gated, leaky, layer-norm LSTM, LSTM
with zoneout, LSTM with variational dropout) within 1.5x of the reference fwd+bwd at
B = 32, and within 3x at B = 1, T = 1000; and ``native`` dispatch of ``rnnkit.LSTM`` /
``GRU`` costing nothing next to ``torch.nn.LSTM`` / ``GRU`` with the same weights (ratio
<= 1.05), and the engine ``auto`` picks for them (on the CPU: native for the LSTM, fused
for the GRU) no slower than that. The ``loop`` engine, the bar the fast engines must beat, is timed with fewer
repetitions.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")        # before NumPy loads its BLAS

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import rnnkit  # noqa: E402
from benchmarks._timing import interleaved_medians, write_results  # noqa: E402
from rnnkit.cells import ElmanCell, GatedCell, GRUCell, LeakyCell, LSTMCell  # noqa: E402
from rnnkit.cells.layernorm import LayerNormGRUCell, LayerNormLSTMCell  # noqa: E402
from rnnkit.cells.rate import RateCell  # noqa: E402
from rnnkit.regularizers import VariationalDropout, WeightDrop, Zoneout  # noqa: E402

SHAPES = [(32, 128, 64, 256), (64, 100, 128, 512), (1, 1000, 32, 128)]    # (B, T, X, H)
NATIVE_BOUND = 1.05
# cell name -> (constructor (X, H), gate blocks k, engines to time besides loop)
CELLS = {
    "lstm": (lambda X, H: LSTMCell(X, H), 4, ("native", "fused")),
    "lstm+zoneout": (lambda X, H: Zoneout(LSTMCell(X, H), (0.05, 0.1)), 4, ("fused",)),
    "lstm+variational": (lambda X, H: VariationalDropout(LSTMCell(X, H), 0.25, 0.25), 4, ("fused",)),
    "lstm+weightdrop": (lambda X, H: WeightDrop(LSTMCell(X, H), 0.5), 4, ("fused",)),
    "layernorm-lstm": (lambda X, H: LayerNormLSTMCell(X, H), 4, ("fused",)),
    "gru": (lambda X, H: GRUCell(X, H), 3, ("native", "fused")),
    "layernorm-gru": (lambda X, H: LayerNormGRUCell(X, H), 3, ("fused",)),
    "gated": (lambda X, H: GatedCell(X, H), 2, ("fused",)),
    "elman": (lambda X, H: ElmanCell(X, H), 1, ("native", "fused")),
    "leaky": (lambda X, H: LeakyCell(X, H), 1, ("fused",)),
    "rate": (lambda X, H: RateCell(X, H), 1, ("fused",)),
}
BOUNDED = ("gated", "leaky", "layernorm-lstm", "lstm+zoneout", "lstm+variational")
BOUNDS = {(32, 128, 64, 256): 1.5, (1, 1000, 32, 128): 3.0}


def equal_flops_hidden(blocks: int, X: int, H: int, recurrent_blocks: int | None = None) -> int:
    """The H' with 4 H' (X + H') = H (a X + b H): an LSTM doing as many multiply-adds per step as a cell
    with ``a = blocks`` input and ``b = recurrent_blocks`` (default: ``blocks``) gate blocks."""
    b = blocks if recurrent_blocks is None else recurrent_blocks
    return max(1, round((-X + math.sqrt(X * X + H * (blocks * X + b * H))) / 2))


def forward_backward(module, x):
    def run():
        module.zero_grad(set_to_none=True)
        out, _ = module(x)
        out.sum().backward()
    return run


def forward_only(module, x):
    def run():
        with torch.no_grad():
            module(x)
    return run


def time_group(blocks: int, shape, repeats: int, loop_repeats: int, rows: list) -> None:
    """All cells with ``blocks`` gate blocks at one shape, interleaved with their reference LSTM."""
    B, T, X, H = shape
    ref_hidden = equal_flops_hidden(blocks, X, H)
    reference = nn.LSTM(X, ref_hidden, batch_first=True)
    x = torch.randn(B, T, X)
    layers = {}
    for name, (make, k, engines) in CELLS.items():
        if k == blocks:
            cell = make(X, H)
            for engine in engines:
                layers[f"{name}|{engine}"] = rnnkit.Recurrent(cell, engine=engine)
            layers[f"{name}|loop"] = rnnkit.Recurrent(cell, engine="loop")
    fast = {key: layer for key, layer in layers.items() if not key.endswith("|loop")}
    fb = interleaved_medians({"torch": forward_backward(reference, x),
                              **{k: forward_backward(m, x) for k, m in fast.items()}}, repeats, 1)
    fw = interleaved_medians({"torch": forward_only(reference, x),
                              **{k: forward_only(m, x) for k, m in fast.items()}}, repeats, 1)
    loops = {k: forward_backward(m, x) for k, m in layers.items() if k.endswith("|loop")}
    slow = interleaved_medians({"torch": forward_backward(reference, x), **loops}, loop_repeats, 1)
    for key in layers:
        name, engine = key.split("|")
        row = {"cell": name, "blocks": blocks, "shape": list(shape), "engine": engine,
               "reference_hidden": ref_hidden}
        if engine == "loop":
            row.update(torch_fwd_bwd_s=slow["torch"], fwd_bwd_s=slow[key], fwd_bwd_ratio=slow[key] / slow["torch"],
                       torch_fwd_s=None, fwd_s=None, fwd_ratio=None)
        else:
            row.update(torch_fwd_bwd_s=fb["torch"], fwd_bwd_s=fb[key], fwd_bwd_ratio=fb[key] / fb["torch"],
                       torch_fwd_s=fw["torch"], fwd_s=fw[key], fwd_ratio=fw[key] / fw["torch"])
        rows.append(row)
        fwd = "" if row["fwd_ratio"] is None else f"{row['fwd_ratio']:8.2f}"
        print(f"{name:17} {str(tuple(shape)):>20} {engine:7} {ref_hidden:5d} {1e3 * row['torch_fwd_bwd_s']:9.2f} "
              f"{1e3 * row['fwd_bwd_s']:9.2f} {row['fwd_bwd_ratio']:8.2f} {fwd:>8}", flush=True)


def native_check(repeats: int) -> tuple:
    """rnnkit.LSTM/GRU against torch.nn with identical weights, on the native engine (dispatch must
    cost nothing) and on auto (which on the CPU runs the GRU on fused: it must be no slower)."""
    rows, ok = [], True
    for ours_cls, torch_cls in [(rnnkit.LSTM, nn.LSTM), (rnnkit.GRU, nn.GRU)]:
        for B, T, X, H in SHAPES:
            theirs = torch_cls(X, H, batch_first=True)
            ours = ours_cls.from_torch(theirs)
            native = ours_cls.from_torch(theirs)
            for layer in native._runners():
                layer.set_engine("native")
            x = torch.randn(B, T, X)
            times = interleaved_medians({"torch": forward_backward(theirs, x), "native": forward_backward(native, x),
                                         "auto": forward_backward(ours, x)}, repeats, 1)
            ratio, auto = times["native"] / times["torch"], times["auto"] / times["torch"]
            ok &= ratio <= NATIVE_BOUND and auto <= NATIVE_BOUND
            rows.append({"model": ours_cls.__name__, "shape": [B, T, X, H], "auto_engine": ours.engine,
                         "torch_s": times["torch"], "native_s": times["native"], "auto_s": times["auto"],
                         "ratio": ratio, "auto_ratio": auto})
            print(f"{ours_cls.__name__:6} {str((B, T, X, H)):>20} {1e3 * times['torch']:9.2f} "
                  f"{1e3 * times['native']:9.2f} {ratio:7.3f} {ours.engine:>7} {1e3 * times['auto']:9.2f} "
                  f"{auto:7.3f}", flush=True)
    return rows, ok


def check_bounds(rows: list) -> list:
    checks = []
    for row in rows:
        bound = BOUNDS.get(tuple(row["shape"]))
        if bound is not None and row["cell"] in BOUNDED and row["engine"] == "fused":
            checks.append({"cell": row["cell"], "shape": row["shape"], "bound": bound,
                           "fwd_bwd_ratio": row["fwd_bwd_ratio"], "met": row["fwd_bwd_ratio"] <= bound})
    return checks


README_ROWS = [("lstm", "LSTM", "native"), ("lstm", "LSTM", "fused"), ("lstm", "LSTM", "loop"),
               ("lstm+zoneout", "LSTM + zoneout", "fused"), ("lstm+variational", "LSTM + variational dropout", "fused"),
               ("lstm+weightdrop", "LSTM + weight drop", "fused"), ("layernorm-lstm", "layer-norm LSTM", "fused"),
               ("layernorm-lstm", "layer-norm LSTM", "loop"), ("gru", "GRU", "native"), ("gru", "GRU", "fused"),
               ("layernorm-gru", "layer-norm GRU", "fused"), ("gated", "gated", "fused"),
               ("elman", "Elman", "native"), ("elman", "Elman", "fused"), ("leaky", "leaky", "fused"),
               ("rate", "rate", "fused")]


def markdown_table(rows: list) -> str:
    """The README's engine table: fwd+bwd / fwd ratios per shape (fwd+bwd alone for the loop)."""
    found = {(r["cell"], r["engine"], tuple(r["shape"])): r for r in rows}
    lines = ["| cell | engine | " + " | ".join(str(s) for s in SHAPES) + " |", "|---|---|" + "---|" * len(SHAPES)]
    for cell, label, engine in README_ROWS:
        cells = []
        for shape in SHAPES:
            r = found.get((cell, engine, shape))
            if r is None:
                cells.append("")
            elif r["fwd_ratio"] is None:
                cells.append(f"{r['fwd_bwd_ratio']:.2f}")
            else:
                cells.append(f"{r['fwd_bwd_ratio']:.2f} / {r['fwd_ratio']:.2f}")
        lines.append(f"| {label} | {engine} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def backends() -> dict:
    """What the fused engine runs on here (the ratios depend on it)."""
    from rnnkit.engines import fused
    from rnnkit.engines.fused import lstm_compiled
    numba = None
    if lstm_compiled.AVAILABLE:
        numba = lstm_compiled.numba.__version__
    return {"numba_compiled_lstm_steps": numba, "onednn_matmul": fused.onednn() is not None,
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (noisier)")
    parser.add_argument("--repeats", type=int, default=None, help="repetitions of the fast engines")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 7)
    loop_repeats = 1 if args.quick else 2
    torch.manual_seed(0)
    print("cells against torch.nn.LSTM(X, H') at equal FLOPs; times in ms, ratio = ours / torch")
    print(f"{'cell':17} {'(B, T, X, H)':>20} {'engine':7} {'H_ref':>5} {'torch':>9} {'ours':>9} "
          f"{'fwd+bwd':>8} {'fwd':>8}")
    rows = []
    for shape in SHAPES:
        for blocks in sorted({k for _, k, _ in CELLS.values()}, reverse=True):
            time_group(blocks, shape, repeats, loop_repeats, rows)
    checks = check_bounds(rows)
    print(f"\nnative dispatch against torch.nn with the same weights (bound {NATIVE_BOUND})")
    print(f"{'model':6} {'(B, T, X, H)':>20} {'torch':>9} {'native':>9} {'ratio':>7} {'auto':>7} {'ms':>9} "
          f"{'ratio':>7}")
    native_rows, native_ok = native_check(2 * repeats)       # one kernel on both sides: more repetitions
    print("\nbounds of issue 7 (fused, fwd+bwd):")
    for c in checks:
        print(f"  {c['cell']:17} {str(tuple(c['shape'])):>20} {c['fwd_bwd_ratio']:6.2f} <= {c['bound']}: "
              f"{'met' if c['met'] else 'NOT met'}")
    all_met = all(c["met"] for c in checks) and native_ok
    print("\nfor the README (fwd+bwd / fwd):\n" + markdown_table(rows))
    path = write_results("engines", {
        "benchmark": "every cell x engine against torch.nn.LSTM at equal FLOPs (see benchmarks/engines.py)",
        "backends": backends(),
        "repeats": repeats, "loop_repeats": loop_repeats, "threads": args.threads, "rows": rows,
        "bounds": checks, "native_check": {"bound": NATIVE_BOUND, "rows": native_rows, "ok": bool(native_ok)},
        "all_within_bounds": bool(all_met)})
    print(f"\n{'all bounds met' if all_met else 'some bounds NOT met'} -- results in {path}")
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())
