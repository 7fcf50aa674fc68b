"""Compile the fused engine's Triton kernels for an H100 (sm_90) without a GPU: Triton's own compiler
and the ptxas it ships turn each kernel into a cubin, catching what the interpreter cannot (types,
layouts, unsupported operations). Run in a process where ``TRITON_INTERPRET`` is unset:

    python tests/triton_sm90.py          # the fullest and barest variant of each kernel, float32
    python tests/triton_sm90.py --all    # every combination the engine can launch, bfloat16 too

Prints one line per variant and exits 1 if any fails (tests/test_triton.py runs the first form)."""
import argparse
import inspect
import itertools
import os
import sys
import time

assert not os.environ.get("TRITON_INTERPRET"), "unset TRITON_INTERPRET: this compiles for the GPU"

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from rnnkit.engines.fused.gpu import kernels as K  # noqa: E402

INTS = {"T", "B", "H", "G"}
# each kernel's flags: the values the engine can pass (the first of each is the fullest variant)
FLAGS = {
    K.leaky_forward: {"ACT": [1, 2, 0], "PHI": [3, 0, 1, 2, 4], "HAS_BETA": [True, False], "HAS_MASK": [True, False]},
    K.gated_forward: {"HAS_KEEP": [True, False], "HAS_MASK": [True, False]},
    K.gru_forward: {"LN": [True, False], "HAS_BIAS": [True, False], "HAS_KEEP": [True, False], "HAS_MASK": [True, False]},
    K.lstm_forward: {"LN": [True, False], "HAS_CB": [True, False], "HAS_KH": [True, False], "HAS_KC": [True, False],
                     "HAS_MASK": [True, False]},
    K.single_backward: {"HAS_E": [True, False], "HAS_RHO": [True, False], "LN": [True, False]},
    K.lstm_backward: {"LN": [True, False], "HAS_KH": [True, False], "HAS_KC": [True, False], "HAS_MASK": [True, False]},
}


def signature(fn, dtype: str, constexprs: dict) -> dict:
    sig = {}
    for name in inspect.signature(fn.fn).parameters:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in INTS or (name[0] == "s" and "_" in name):      # sizes and strides
            sig[name] = "i32"
        else:
            sig[name] = "*" + dtype
    return sig


def variants(every: bool, dtypes):
    for fn, flags in FLAGS.items():
        combos = itertools.product(*flags.values()) if every else [tuple(v[0] for v in flags.values()),
                                                                   tuple(v[-1] for v in flags.values())]
        for values in combos:
            chosen = dict(zip(flags, values))
            if fn is K.lstm_forward and not chosen["LN"] and chosen["HAS_CB"]:
                continue                                  # a cell-norm bias without the norm: never launched
            for dtype in dtypes:
                yield fn, dtype, {**chosen, "IS64": dtype == "fp64", "PREC": "ieee", "BB": 16, "BH": 64, "BK": 64}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="every flag combination (a few minutes)")
    parser.add_argument("--dtypes", default=None, help="comma-separated, of fp32, fp64, bf16 (default: fp32; "
                                                         "with --all, all three)")
    args = parser.parse_args()
    dtypes = (args.dtypes or ("fp32,fp64,bf16" if args.all else "fp32")).split(",")
    target, failed, count = GPUTarget("cuda", 90, 32), 0, 0
    for fn, dtype, consts in variants(args.all, dtypes):
        count += 1
        start = time.perf_counter()
        flags = {k: v for k, v in consts.items() if k not in ("IS64", "PREC", "BB", "BH", "BK")}
        try:
            triton.compile(ASTSource(fn, signature(fn, dtype, consts), constexprs=consts), target=target)
            print(f"ok    {fn.__name__:16} {dtype}  {flags}  {time.perf_counter() - start:.1f} s", flush=True)
        except Exception as error:  # noqa: BLE001 - every failure is reported, then the next variant
            failed += 1
            print(f"FAIL  {fn.__name__:16} {dtype}  {flags}: {str(error).splitlines()[:3]}", flush=True)
    print(f"{count - failed} of {count} variants compiled for sm_90")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
