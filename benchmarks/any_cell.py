"""Any cell at speed: cells written as a user writes them, on the traced engine, against the peers.

    OMP_NUM_THREADS=1 python benchmarks/any_cell.py          # about 2 minutes on 2 CPU cores

The cells of ``rnnkit.cells.examples`` (plain torch operations, no kernel of their own) train
(forward + backward) on the ``traced`` engine and, for the record, on ``loop`` (what a user's cell
got before). Each is measured against its peer in the same interleaved run: ``PlainGRUCell`` (the
GRU's maths) against the built-in ``GRUCell`` on its hand-derived fused kernel; the others against
``torch.nn.LSTM`` at equal FLOPs (the hidden size H' whose LSTM does as many multiply-adds per step
as the cell: ``4 H' (X + H') = H (a X + b H)`` for a cell with ``a`` input and ``b`` recurrent gate
blocks). Bounds (issue 17): traced / peer <= 1.5 at (B, T, X, H) = (32, 128, 64, 256) and <= 3.0
at (1, 1000, 32, 128); the first call of a cell at a shape (tracing and code generation) <= 20 s.
Writes results/any_cell.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._timing import interleaved_medians, write_results  # noqa: E402
from benchmarks.engines import equal_flops_hidden, forward_backward  # noqa: E402
import rnnkit  # noqa: E402
from rnnkit.cells import GRUCell, IndRNNCell, MinimalGatedCell, PeepholeLSTMCell, PlainGRUCell  # noqa: E402
from rnnkit.engines import traced  # noqa: E402
from rnnkit.engines.traced.engine import _CACHE  # noqa: E402

SHAPES = ((32, 128, 64, 256), (1, 1000, 32, 128))
BOUNDS = {(32, 128, 64, 256): 1.5, (1, 1000, 32, 128): 3.0}
FIRST_CALL_BOUND = 20.0
# name: (cell class, input gate blocks a, recurrent gate blocks b, built-in peer or None for torch.nn.LSTM)
CELLS = {"gru (plain torch)": (PlainGRUCell, 3, 3, GRUCell), "peephole lstm": (PeepholeLSTMCell, 4, 4, None),
         "indrnn": (IndRNNCell, 1, 0, None), "minimal gated": (MinimalGatedCell, 2, 2, None)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-compile", action="store_true", help="the NumPy programs only (no numba loops)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    # compile at the first call (a training job compiles after SETTINGS.compile_after steps), into an empty
    # cache folder, so that the first call's time includes numba's compilation
    traced.SETTINGS.compile_after = None if args.no_compile else 0
    os.environ["RNNKIT_CACHE_DIR"] = tempfile.mkdtemp(prefix="rnnkit-any-cell-")
    rows = []
    for shape in SHAPES:
        B, T, X, H = shape
        x = torch.randn(B, T, X, generator=torch.Generator().manual_seed(0))
        for name, (make, a, b, builtin) in CELLS.items():
            torch.manual_seed(0)
            cell = make(X, H)
            start = time.perf_counter()
            rnnkit.Recurrent(cell, engine="traced")(x[:, :2])[0].sum().backward()   # traces this cell at B
            first_call = time.perf_counter() - start
            (entry,) = _CACHE[cell].graphs.values()
            program = type(entry.program).__name__
            if builtin is not None:
                peer_name, peer = f"{builtin.__name__} (fused)", rnnkit.Recurrent(builtin(X, H), engine="fused")
            else:
                hidden = equal_flops_hidden(a, X, H, recurrent_blocks=b)
                peer_name, peer = f"torch.nn.LSTM({X}, {hidden})", nn.LSTM(X, hidden, batch_first=True)
            jobs = {"peer": forward_backward(peer, x),
                    "traced": forward_backward(rnnkit.Recurrent(cell, engine="traced"), x),
                    "loop": forward_backward(rnnkit.Recurrent(cell, engine="loop"), x)}
            times = interleaved_medians(jobs, args.repeats if T < 1000 else max(3, args.repeats - 2), warmup=1)
            ratio = times["traced"] / times["peer"]
            rows.append({"cell": name, "shape": list(shape), "peer": peer_name, "program": program,
                         "peer_ms": 1e3 * times["peer"], "traced_ms": 1e3 * times["traced"],
                         "loop_ms": 1e3 * times["loop"], "traced_ratio": ratio,
                         "loop_ratio": times["loop"] / times["peer"], "bound": BOUNDS[shape],
                         "first_call_s": first_call, "met": ratio <= BOUNDS[shape] and first_call <= FIRST_CALL_BOUND})
    print("fwd+bwd, one thread; ratio = time / the peer's time in the same run")
    print(f"{'cell':<18} {'(B, T, X, H)':<20} {'peer':<24} {'program':<16} {'traced':>7} {'loop':>7} {'bound':>6} "
          f"{'first call':>10}")
    for r in rows:
        print(f"{r['cell']:<18} {str(tuple(r['shape'])):<20} {r['peer']:<24} {r['program']:<16} {r['traced_ratio']:>7.2f} "
              f"{r['loop_ratio']:>7.2f} {r['bound']:>6.1f} {r['first_call_s']:>9.2f}s{'' if r['met'] else '  NOT MET'}")
    met = all(r["met"] for r in rows)
    print("all bounds met" if met else "some bounds NOT met")
    path = write_results("any_cell", {"benchmark": "user-written cells on the traced engine (benchmarks/any_cell.py)",
                                      "rows": rows, "all_met": met})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
