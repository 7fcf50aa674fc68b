"""The parallel scan against the step-by-step loop: leaky-linear and minGRU layers, the HMM forward filter.

    python benchmarks/scan.py            # ~2-4 minutes; writes results/scan.json
    python benchmarks/scan.py --quick    # fewer repetitions (noisier)

1. Layers, batch 8, input_size = hidden_size = 32, float32, one thread, T in {256, 1024,
   4096, 16384}: ``rnnkit.Recurrent(cell, engine=...)`` with ``LinearLeakyCell`` (per-unit
   alpha from 1 to 1/1000) and ``MinGRUCell``, engines ``loop`` (the reference) and ``scan``,
   forward only (no_grad) and forward+backward (``outputs.sum()``, gradients of the
   parameters). ``fused`` is timed too when it is registered and runs the cell (it runs
   none of these today), and ``torch.nn.GRU`` of the same sizes (torch's fused kernel for
   the nonlinear GRU) is a reference point for the minGRU row.
2. The HMM forward filter, K = 10 states, V = 30 symbols, one sequence, float64, the same T:
   ``loop`` = ``rnnkit.models.hmm.reference._reference_filter`` (step by step, differentiable),
   ``tree`` = the same recurrence by ``log_linear_recurrence(method="tree")``, ``scan`` =
   ``hmm_parallel_filter`` (``log_linear_recurrence``, the chunked scan), and ``numpy`` = ``CategoricalHMM.filter`` under
   no_grad (the fast sequential NumPy pass; forward only). Forward+backward differentiates
   the log-likelihood.
3. Ablation at T = 4096 (the diagonal recurrence alone): chunk sizes, the tree scan, and the
   log-space cumulative-sum form (Heinsen 2023) — time, and float32 error against float64
   for random and for saturated gates.
4. Width sweep at T = 4096 (linear-leaky, forward+backward, H = 32 … 256): on a CPU the scan
   is bound by passes over memory and the loop by per-step overhead, so the gain shrinks
   as B·H grows.

The bound: scan >= 10x faster than the loop at T = 4096 for the leaky-linear layer and the
HMM filter, forward and forward+backward, with equal results (max |difference| printed).

Memory: glibc hands large freed blocks back to the system, so a job that runs after one
that freed a big autograd graph (the loop's) pays for fresh pages — up to half of the
scan's time at these sizes. The benchmark asks glibc to keep freed memory for reuse
(``mallopt``), as PyTorch's CPU performance guide advises through jemalloc or tcmalloc;
``--default-malloc`` measures without it.
"""
from __future__ import annotations

import argparse
import ctypes
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import rnnkit  # noqa: E402
from benchmarks._timing import interleaved_medians, write_results  # noqa: E402
from rnnkit.cells.linear import LinearLeakyCell, MinGRUCell  # noqa: E402
from rnnkit.engines import ENGINES  # noqa: E402
from rnnkit.engines.scan import ScanEngine, linear_recurrence, log_linear_recurrence  # noqa: E402
from rnnkit.models.hmm import CategoricalHMM  # noqa: E402
from rnnkit.models.hmm import inference as hmm_module  # noqa: E402
from rnnkit.models.hmm import reference as hmm_reference  # noqa: E402
from rnnkit.models.hmm import scans as hmm_scans  # noqa: E402

if "scan" not in ENGINES:          # until rnnkit/engines/select.py registers it
    ENGINES["scan"] = ScanEngine()

STEPS = (256, 1024, 4096, 16384)
BATCH, SIZE = 8, 32
STATES, SYMBOLS = 10, 30
BOUND, AT = 10.0, 4096


def _repeats(steps: int, quick: bool) -> int:
    base = max(3, min(15, 60_000 // steps))
    return max(3, base // 3) if quick else base


def _ms(seconds: dict) -> dict:
    return {k: round(1e3 * v, 3) for k, v in seconds.items()}


# ----- 1. layers ------------------------------------------------------------------------------
def layer_rows(name: str, cell, quick: bool) -> list:
    rows = []
    engines = ["loop", "scan"] + (["fused"] if "fused" in ENGINES and ENGINES["fused"].supports(cell) is None else [])
    layers = {e: rnnkit.Recurrent(cell, engine=e) for e in engines}
    gru = nn.GRU(SIZE, SIZE, batch_first=True) if isinstance(cell, MinGRUCell) else None
    for steps in STEPS:
        x = torch.randn(BATCH, steps, SIZE)
        with torch.no_grad():
            outs = {e: layer(x)[0] for e, layer in layers.items()}
        difference = max(float((outs[e] - outs["loop"]).abs().max()) for e in engines)

        def forward(module):
            def run():
                with torch.no_grad():
                    module(x)
            return run

        def forward_backward(module):
            def run():
                module.zero_grad(set_to_none=True)
                module(x)[0].sum().backward()
            return run

        jobs = {}
        for e, layer in layers.items():
            jobs[f"{e} forward"], jobs[f"{e} forward+backward"] = forward(layer), forward_backward(layer)
        if gru is not None:
            jobs["torch.nn.GRU forward"], jobs["torch.nn.GRU forward+backward"] = forward(gru), forward_backward(gru)
        t = interleaved_medians(jobs, _repeats(steps, quick), warmup=1)
        row = {"workload": name, "T": steps, "ms": _ms(t), "max_abs_difference_vs_loop": difference,
               "speedup_forward": t["loop forward"] / t["scan forward"],
               "speedup_forward_backward": t["loop forward+backward"] / t["scan forward+backward"]}
        rows.append(row)
        _print_row(row, t)
    return rows


# ----- 2. the HMM filter -------------------------------------------------------------------------
def tree_parallel_filter(log_pi, log_P, em):
    """``hmm.scans._parallel_filter`` with the plain tree scan (``method="tree"``) instead of the chunked one."""
    mask = em.mask
    mats = hmm_scans._transfer_matrices(log_pi, log_P, em.log(), mask)             # (B, T, K, K)
    first = mats[:, 0, 0]                                                            # log π + log e_1
    log_alpha = torch.cat([first.unsqueeze(1), log_linear_recurrence(mats[:, 1:], first, method="tree")], 1)
    cum = torch.logsumexp(log_alpha, -1)
    filtered = torch.exp(log_alpha - cum.unsqueeze(-1)) * mask.unsqueeze(-1)
    lognorm = torch.diff(cum, dim=1, prepend=torch.zeros_like(cum[:, :1])) * mask
    return hmm_module.FilterResult(filtered, lognorm, lognorm.sum(1))


def hmm_rows(quick: bool) -> list:
    rows = []
    g = torch.Generator().manual_seed(3)
    model = CategoricalHMM(STATES, SYMBOLS, dtype=torch.float64)
    for steps in STEPS:
        symbols = torch.randint(0, SYMBOLS, (1, steps), generator=g)

        def prepared():
            return hmm_module._categorical("bench", *model.log_params(), symbols, None)

        def loop():
            log_pi, log_P, em = prepared()
            filtered, lognorm = hmm_reference._reference_filter(log_pi, log_P, em.log(), em.mask)
            return hmm_module.FilterResult(filtered, lognorm, lognorm.sum(1))

        filters = {"loop": loop, "tree": lambda: tree_parallel_filter(*prepared()),
                   "scan": lambda: hmm_module.hmm_parallel_filter(*model.log_params(), symbols)}
        with torch.no_grad():
            reference = model.filter(symbols)                                        # the NumPy pass
            results = {k: f() for k, f in filters.items()}
        difference = max(float((r.filtered - reference.filtered).abs().max()) for r in results.values())
        loglik_difference = max(float((r.log_likelihood - reference.log_likelihood).abs().max())
                                for r in results.values())

        def forward(f):
            def run():
                with torch.no_grad():
                    f()
            return run

        def forward_backward(f):
            def run():
                model.zero_grad(set_to_none=True)
                f().log_likelihood.sum().backward()
            return run

        jobs = {"numpy forward": forward(lambda: model.filter(symbols))}
        for k, f in filters.items():
            jobs[f"{k} forward"], jobs[f"{k} forward+backward"] = forward(f), forward_backward(f)
        t = interleaved_medians(jobs, _repeats(steps, quick), warmup=1)
        row = {"workload": "HMM filter", "T": steps, "ms": _ms(t),
               "max_abs_difference_filtered": difference, "max_abs_difference_loglik": loglik_difference,
               "speedup_forward": t["loop forward"] / t["scan forward"],
               "speedup_forward_backward": t["loop forward+backward"] / t["scan forward+backward"],
               "tree_speedup_forward": t["loop forward"] / t["tree forward"],
               "tree_speedup_forward_backward": t["loop forward+backward"] / t["tree forward+backward"]}
        rows.append(row)
        _print_row(row, t)
    return rows


# ----- 3. ablation ------------------------------------------------------------------------------
def log_space_form(A, b, initial):
    """The log-space cumulative-sum form (Heinsen 2023), for positive diagonal A:
    ``s_t = e^{a*_t} (s_0 + Σ_{u≤t} b_u e^{-a*_u})``, ``a*_t = Σ_{u≤t} log A_u``, with
    the signed terms split into two positive parts, each summed by ``logcumsumexp``.
    The alternative the chunked scan was chosen over."""
    a_star = torch.cat([torch.zeros_like(A[:, :1]), torch.cumsum(torch.log(A), 1)], 1)      # (B, 1+T, H)
    terms = torch.cat([initial.unsqueeze(1), b], 1)
    pos = torch.logcumsumexp(torch.log(terms.clamp_min(0)) - a_star, 1)
    neg = torch.logcumsumexp(torch.log((-terms).clamp_min(0)) - a_star, 1)
    return (torch.exp(pos + a_star) - torch.exp(neg + a_star))[:, 1:]


def _chunked_with(chunk_size: int):
    return lambda A, b, initial: linear_recurrence(A, b, initial, chunk_size=chunk_size)


def ablation(quick: bool) -> dict:
    steps = AT
    g = torch.Generator().manual_seed(5)
    A = 0.5 + 0.499 * torch.rand(BATCH, steps, SIZE, generator=g)                   # in (0.5, 1)
    saturated = torch.sigmoid(30 * torch.randn(BATCH, steps, SIZE, generator=g))    # gates at 0 and 1
    b = torch.randn(BATCH, steps, SIZE, generator=g)
    initial = torch.randn(BATCH, SIZE, generator=g)
    methods = {f"chunked L={n}": _chunked_with(n) for n in (8, 16, 32, 64)}
    methods["tree"] = lambda a, b_, s: linear_recurrence(a, b_, s, method="tree")
    methods["log-space cumsum"] = log_space_form
    errors = {}
    for label, coefficient in (("random", A), ("saturated", saturated)):
        exact = linear_recurrence(coefficient.double(), b.double(), initial.double(), method="sequential")
        for name, method in methods.items():
            with torch.no_grad():
                err = (method(coefficient, b, initial).double() - exact).abs().max()
            errors[f"{name} / {label}"] = float(err) if torch.isfinite(err) else "nan"
    leaves = [t.clone().requires_grad_() for t in (A, b, initial)]
    jobs = {}
    for name, method in methods.items():
        def run(method=method):
            method(*leaves).sum().backward()
        jobs[name] = run
    t = interleaved_medians(jobs, 3 if quick else 7, warmup=1)
    print(f"\nablation: the diagonal recurrence alone, B={BATCH} T={steps} H={SIZE} float32, forward+backward;")
    print("error: float32 against float64 stepping, A uniform in (0.5, 1) / A = sigmoid(30 N(0, 1)) (saturated)")
    print(f"{'method':20} {'ms':>8} {'max err, random A':>18} {'max err, saturated A':>21}")
    for name in methods:
        e1, e2 = errors[f"{name} / random"], errors[f"{name} / saturated"]
        fmt = (lambda e: f"{e:.1e}" if isinstance(e, float) else e)
        print(f"{name:20} {1e3 * t[name]:8.2f} {fmt(e1):>18} {fmt(e2):>21}")
    return {"T": steps, "forward_backward_ms": _ms(t), "float32_max_abs_error_vs_float64": errors}


def width_sweep(quick: bool) -> list:
    """Where the gain comes from: the loop costs about the same per step at any small width
    (it is bound by per-operation overhead), the scan's passes over memory grow with B·H."""
    rows = []
    x_size = SIZE
    print(f"\nwidth sweep: linear-leaky, B={BATCH} T={AT}, forward+backward ms")
    for size in (32, 64, 128, 256):
        cell = LinearLeakyCell(x_size, size, alpha=torch.logspace(0, -3, size))
        layers = {e: rnnkit.Recurrent(cell, engine=e) for e in ("loop", "scan")}
        x = torch.randn(BATCH, AT, x_size)

        def forward_backward(module):
            def run():
                module.zero_grad(set_to_none=True)
                module(x)[0].sum().backward()
            return run

        t = interleaved_medians({e: forward_backward(m) for e, m in layers.items()}, 3 if quick else 5, warmup=1)
        rows.append({"hidden_size": size, "ms": _ms(t), "speedup": t["loop"] / t["scan"]})
        print(f"  H={size:4d}  loop {1e3 * t['loop']:8.2f}  scan {1e3 * t['scan']:7.2f}  "
              f"speed-up {t['loop'] / t['scan']:5.1f}x", flush=True)
    return rows


def _print_row(row: dict, t: dict) -> None:
    ms = {k: 1e3 * v for k, v in t.items()}
    extra = "".join(f"  {k} {v:.2f}" for k, v in ms.items() if not k.startswith(("loop", "scan")))
    print(f"{row['workload']:16} T={row['T']:>6}  loop {ms['loop forward']:9.2f} / {ms['loop forward+backward']:9.2f}"
          f"  scan {ms['scan forward']:7.2f} / {ms['scan forward+backward']:7.2f}"
          f"  speed-up {row['speedup_forward']:6.1f}x / {row['speedup_forward_backward']:6.1f}x{extra}", flush=True)


def keep_freed_memory() -> str:
    """Ask glibc to reuse freed memory rather than return it to the system (see the module docs)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return "system default (not glibc)"
    m_trim_threshold, m_mmap_max = -1, -4
    if libc.mallopt(m_mmap_max, 0) == 1 and libc.mallopt(m_trim_threshold, 1 << 30) == 1:
        return "glibc mallopt(M_MMAP_MAX=0, M_TRIM_THRESHOLD=1 GiB)"
    return "system default (mallopt refused)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (noisier)")
    parser.add_argument("--default-malloc", action="store_true", help="leave the allocator as it is")
    args = parser.parse_args(argv)
    allocator = "system default" if args.default_malloc else keep_freed_memory()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"ms forward / forward+backward (median, 1 thread); layers B={BATCH} X=H={SIZE} float32; "
          f"HMM K={STATES} V={SYMBOLS} B=1 float64; allocator: {allocator}")
    rows = layer_rows("linear-leaky", LinearLeakyCell(SIZE, SIZE, alpha=torch.logspace(0, -3, SIZE)), args.quick)
    rows += layer_rows("minGRU", MinGRUCell(SIZE, SIZE), args.quick)
    rows += hmm_rows(args.quick)
    checks = {w: next(r for r in rows if r["workload"] == w and r["T"] == AT) for w in ("linear-leaky", "HMM filter")}
    ok = all(min(r["speedup_forward"], r["speedup_forward_backward"]) >= BOUND for r in checks.values())
    study = ablation(args.quick)
    widths = width_sweep(args.quick)
    path = write_results("scan", {
        "benchmark": "scan vs loop engine (layers) and scan vs step-by-step filter (HMM)", "allocator": allocator,
        "layers": {"batch_size": BATCH, "input_size": SIZE, "hidden_size": SIZE, "dtype": "float32"},
        "hmm": {"states": STATES, "symbols": SYMBOLS, "batch_size": 1, "dtype": "float64"},
        "bound": {"speedup": BOUND, "at_T": AT, "workloads": list(checks)}, "rows": rows,
        "bound_met": bool(ok), "ablation": study, "width_sweep_linear_leaky": widths})
    print(f"\nbound: scan >= {BOUND:g}x the loop at T={AT} for {', '.join(checks)}: "
          f"{'met' if ok else 'NOT met'} -- results in {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
