"""The prepared device check of issue 18: one command, one table, one JSON file, under 8 minutes on an H100.

    python benchmarks/gpu.py --out "$OUT"              # on a GPU machine (see benchmarks/README.md, "GPU check")
    python benchmarks/gpu.py --device cpu --quick      # smoke test of the script's logic, here (< 1 minute)

Sections, each with a time budget, each recorded on its own (a section that fails leaves its message and
the tail of its traceback in the JSON, and the others still run; parity and speed each run in a child
process of their own, so that a CUDA error, which poisons the process's context, stays in its section).
They run in the order environment, speed (the device to itself), then the language model and, beside
it, parity: parity's figures do not depend on timing, and its kernel compilations (Triton, inductor)
take minutes that the 8 would not otherwise hold; the model shares the GPU for those minutes, which can
only lower its figure (``--sections language_model`` runs it alone).

1. ``environment``: python, torch, CUDA, cuDNN and Triton versions, the GPU, the TF32 switches, the CLI's
   flags, and ``rnnkit.engines.fused.triton_status()`` (None: the fused engine's Triton kernels run here).
2. ``parity``: every engine against ``loop`` on the same device (native: LSTM, GRU, Elman; scan: MinGRU,
   LTI; fused: every fused cell bare and under zoneout, variational dropout, DropConnect and all three
   at once, in training mode, the masks drawn from a seeded generator so that both runs draw the same
   ones, which is checked; traced: the peephole LSTM of ``rnnkit.cells.examples``), in float32 (TF32
   off), with ``lengths=``, in float64 where the engine takes it, and under bf16 autocast against the
   float32 reference. Compared: outputs, final states, gradients of the input, the initial state and every
   parameter. An error passes when ``max|a - b| <= tol * max(1, max|b|)``; tol is 1e-4 in float32,
   1e-9 in float64, 5e-2 under bf16 autocast. On CUDA also: the native engine raises no "not part of
   single contiguous chunk of memory" warning (its cuDNN weights are compacted).
3. ``speed``: forward+backward of ``engine="fused"`` for each fused cell of ``benchmarks/engines.py``
   against ``torch.nn.LSTM`` (cuDNN) at equal FLOPs (``equal_flops_hidden``), at (64, 128, 256, 512) and
   (1, 1000, 64, 256), synchronized, warmed up, interleaved repetitions, median; bounds 1.25 and 2.0.
   Sanity rows: ``rnnkit.LSTM`` / ``GRU`` on the native engine against ``torch.nn.LSTM`` / ``GRU`` with
   the same weights (bound ``NATIVE_BOUND`` of benchmarks/engines.py). Timed at torch's defaults for
   TF32 (``--tf32`` changes them), which are recorded.
4. ``language_model``: ``rnnkit train`` on tiny-shakespeare (first 90 % train, last 10 % held out and
   scored whole, the split of benchmarks/shakespeare.py) for 5 minutes on the GPU; the held-out loss
   of the final weights in nats/char, bound 1.40. A 3 x 768 LSTM (dropout 0.4, batch 128 x 128) in
   float32 (TF32 in cuDNN); ``--lm-args`` and ``--lm-precision`` change it.

Shapes are (batch, time, input, hidden). Writes ``gpu.json`` to ``--out`` (default benchmarks/results/)
after every section, so that a run stopped early still leaves what it measured. Exit status 0 when no
check failed. ``--quick``: tiny shapes, few repetitions, a 9-second language model, no bounds judged.
``--device cpu``: the same logic on the CPU (the fused engine runs its CPU kernels there; Triton runs on
the CPU only under ``TRITON_INTERPRET=1``), cuDNN's checks skipped with a note.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks._timing import RESULTS, interleaved_medians, machine  # noqa: E402

SECTIONS = ("environment", "parity", "speed", "language_model")
ISOLATED = ("parity", "speed")                 # run in a child process each
# order: environment; speed (the device to itself); then the language model with parity beside it
# seconds each section may start work in (a case under way finishes; a child is killed GRACE later)
BUDGETS = {"environment": 30, "parity": 200, "speed": 90}
# quick: parity's small fixed set runs whole (the budget is a safety cap), speed takes what 6 s allow
QUICK_BUDGETS = {"environment": 30, "parity": 90, "speed": 6}
GRACE = 45
LM_MINUTES, QUICK_LM_MINUTES = 5.0, 0.15
LM_OVERHEAD = 75                               # tokenizing, starting, the final evaluation over 111k chars

TOLERANCES = {"float32": 1e-4, "float64": 1e-9, "bf16-autocast": 5e-2}
PARITY_SHAPE, QUICK_PARITY_SHAPE = (5, 11, 7, 40), (3, 5, 4, 6)
LARGE_SHAPE = (3, 6, 9, 300)                   # a hidden size over one tile of most kernels
SEED = 1234
# left out of the bf16 runs: relu's derivative is a step, so bf16 rounding that moves a pre-activation across 0
# switches a unit's whole gradient term on or off (measured on the CPU: 0.47 x the reference's scale)
BF16_LEFT_OUT = {"elman-relu": "relu's derivative is a step: bf16 rounding switches units' gradient terms"}

SPEED_SHAPES = [(64, 128, 256, 512), (1, 1000, 64, 256)]
QUICK_SPEED_SHAPES = [(4, 16, 8, 16), (1, 20, 4, 8)]
SPEED_BOUNDS = {(64, 128, 256, 512): 1.25, (1, 1000, 64, 256): 2.0}
REPEATS, QUICK_REPEATS = 15, 3

LM_BOUND = 1.40
# the model for 5 minutes of one GPU; options after these (--lm-args) win
LM_OPTIONS = ["--num-layers", "3", "--hidden-size", "768", "--embedding-size", "128", "--dropout", "0.4",
              "--batch-size", "128", "--truncation", "128", "--lr", "2e-3"]
QUICK_LM_OPTIONS = ["--num-layers", "1", "--hidden-size", "48", "--embedding-size", "16", "--batch-size", "16",
                    "--truncation", "32", "--eval-every", "1000000"]
DATA_CANDIDATES = [ROOT / "runs" / "gpu-data" / "tinyshakespeare.txt", ROOT / "shared" / "data" / "tinyshakespeare.txt",
                   ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"]


# ---------------------------------------------------------------------------------------------- helpers

class Budget:
    def __init__(self, seconds: float):
        self.seconds, self.start = seconds, time.perf_counter()

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)


def failure(error: BaseException) -> dict:
    tail = traceback.format_exception(type(error), error, error.__traceback__)
    return {"message": f"{type(error).__name__}: {error}".strip()[:2000], "traceback": "".join(tail)[-3000:]}


def device_of(args) -> torch.device:
    return torch.device(args.device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synced(fn, device: torch.device):
    """``fn`` followed by a device synchronization, so that a wall-clock time covers its kernels."""
    if device.type != "cuda":
        return fn

    def run():
        fn()
        torch.cuda.synchronize(device)
    return run


@contextlib.contextmanager
def tf32(matmul: bool | None, cudnn: bool | None):
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    if matmul is not None:
        torch.backends.cuda.matmul.allow_tf32 = matmul
    if cudnn is not None:
        torch.backends.cudnn.allow_tf32 = cudnn
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@functools.lru_cache(maxsize=None)
def cli_flags() -> dict:
    """Which of the flags this check relies on ``rnnkit train`` has (read from its --help; asked once, before
    any thread starts, since it captures stdout)."""
    import io

    from rnnkit.cli import main as rnnkit_main
    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.suppress(SystemExit):
        rnnkit_main(["train", "--help"])
    return {flag: flag in text.getvalue() for flag in ("--device", "--precision")}


def is_contiguity_warning(message: str) -> bool:
    return "single contiguous chunk of memory" in message


# ------------------------------------------------------------------------------------------ environment

def environment(section: dict, budget: Budget, args) -> None:
    import platform
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "device": args.device, "triton_interpret": os.environ.get("TRITON_INTERPRET")}
    try:
        import triton
        info["triton"] = triton.__version__
    except Exception as error:              # noqa: BLE001 - recorded
        info["triton"] = f"not importable: {type(error).__name__}: {error}"
    info["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    info["tf32_defaults"] = {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}
    section["info"] = info
    checks = section.setdefault("checks", [])
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda but torch.cuda.is_available() is False (no GPU, or a CPU build of torch)")
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, capability=f"{p.major}.{p.minor}", multiprocessors=p.multi_processor_count,
                    memory_gib=round(p.total_memory / 2 ** 30, 1))
    else:
        info["gpu"] = None
    import rnnkit
    info["rnnkit"] = rnnkit.__version__
    from rnnkit import _torch_private
    info["cudnn_weight_compaction_helper"] = [n for n in ("flatten_for_cudnn",) if hasattr(_torch_private, n)]
    try:
        from rnnkit.engines.fused import triton_status
    except ImportError as error:
        status, missing = None, (f"rnnkit.engines.fused.triton_status is missing ({error}): the Triton path is "
                                 f"not in this checkout")
    else:
        status, missing = triton_status(), None
    info["triton_status"] = missing or status
    if args.device == "cuda":
        usable = missing is None and status is None
        checks.append({"check": "Triton path (triton_status())",
                       "figure": "usable" if usable else ("missing" if missing else "unusable"), "bound": "usable",
                       "result": "pass" if usable else "FAIL"})
    else:
        checks.append({"check": "Triton path (triton_status())",
                       "figure": "missing" if missing else ("unusable" if status else "usable"), "bound": "-",
                       "result": "n/a"})
        section["notes"] = ["on the CPU the fused engine runs its CPU kernels (Triton only under TRITON_INTERPRET=1)"]
    if missing or status:
        section.setdefault("notes", []).append(f"triton_status: {missing or status}")
    info["cli_flags"] = flags = cli_flags()
    for flag, present in flags.items():
        if not present:
            checks.append({"check": f"rnnkit train {flag}", "figure": "missing", "bound": "present",
                           "result": "FAIL" if args.device == "cuda" else "n/a"})
    print(f"environment: torch {info['torch']} (CUDA {info['cuda']}, cuDNN {info['cudnn']}), triton {info['triton']}, "
          f"{info.get('gpu') or 'CPU'}; triton_status: {info['triton_status'] or 'usable'}", flush=True)


# ----------------------------------------------------------------------------------------------- parity

def _hidden_dropout_ok(name: str) -> bool:
    return not name.startswith("rate")          # the rate cell takes no variational hidden dropout


def parity_cases(quick: bool) -> list:
    """(group, engine, cell name, constructor (X, H) -> cell, mode, shape), most telling first."""
    from benchmarks.engines import CELLS
    from rnnkit.cells import ElmanCell, GRUCell, LSTMCell, LTICell, MinGRUCell, PeepholeLSTMCell
    from rnnkit.regularizers import VariationalDropout, WeightDrop, Zoneout

    fused_cells = {name: make for name, (make, _, engines) in CELLS.items() if "+" not in name and "fused" in engines}
    wrappers = {
        "zoneout": lambda c, n: Zoneout(c, 0.3),
        "variational": lambda c, n: VariationalDropout(c, 0.3, 0.4 if _hidden_dropout_ok(n) else 0.0),
        "weightdrop": lambda c, n: WeightDrop(c, 0.4),
        "all": lambda c, n: WeightDrop(Zoneout(VariationalDropout(c, 0.2, 0.25 if _hidden_dropout_ok(n) else 0.0),
                                              0.3), 0.3),
    }
    native_cells = {"lstm": lambda X, H: LSTMCell(X, H), "gru": lambda X, H: GRUCell(X, H),
                    "elman": lambda X, H: ElmanCell(X, H),
                    "elman-relu": lambda X, H: ElmanCell(X, H, nonlinearity="relu")}
    scan_cells = {"mingru": lambda X, H: MinGRUCell(X, H), "lti": lambda X, H: LTICell(X, H)}
    traced_cells = {"peephole-lstm": lambda X, H: PeepholeLSTMCell(X, H)}     # one: on CUDA each shape compiles
    shape = QUICK_PARITY_SHAPE if quick else PARITY_SHAPE
    others = [("native", native_cells), ("scan", scan_cells), ("traced", traced_cells)]
    cases = []

    def add(group, engine, name, make, mode, at=shape):
        cases.append({"group": group, "engine": engine, "cell": name, "make": make, "mode": mode, "shape": at})

    for name, make in fused_cells.items():
        add("fused float32", "fused", name, make, "float32")
    for wrapper, wrap in wrappers.items():
        for name, make in fused_cells.items():
            add("fused float32 + regularizers", "fused", f"{name}+{wrapper}",
                lambda X, H, make=make, wrap=wrap, name=name: wrap(make(X, H), name),
                "float32+lengths" if wrapper == "all" else "float32")
    for engine, cells in others:
        for name, make in cells.items():
            add(f"{engine} float32", engine, name, make, "float32")
    for engine, cells in [("fused", fused_cells), *others]:
        for name, make in cells.items():
            add(f"{engine} float32 + lengths", engine, name, make, "float32+lengths")
    for engine, cells in [("fused", fused_cells), *others]:
        for name, make in cells.items():
            if name not in BF16_LEFT_OUT:
                add(f"{engine} bf16 autocast", engine, name, make, "bf16-autocast")
    for engine, cells in [("fused", fused_cells), *others]:
        for name, make in cells.items():
            add(f"{engine} float64 + lengths, reversed", engine, name, make, "float64+lengths+reverse")
    if not quick:
        for name, make in fused_cells.items():
            add("fused float32, H = 300", "fused", name, make, "float32", LARGE_SHAPE)
    return cases


def _masks_of(cell) -> list:
    found = []
    while hasattr(cell, "cell"):
        m = getattr(cell, "masks", None)
        if m is not None:
            found += list(m.values()) if isinstance(m, dict) else list(m)
        cell = cell.cell
    return [None if t is None else t.detach().clone() for t in found]


def _run_with_grads(layer, x, state, lengths, autocast_dtype):
    """Outputs, final states and every gradient of a fixed random projection of both; the masks come
    from the global generators, seeded, so that two runs draw the same ones."""
    x = x.clone().requires_grad_()
    state = tuple(s.clone().requires_grad_() for s in state)
    torch.manual_seed(SEED)
    context = (torch.autocast(x.device.type, dtype=autocast_dtype) if autocast_dtype is not None
               else contextlib.nullcontext())
    with context:
        out, final = layer(x, state[0] if len(state) == 1 else state, lengths)
    final = (final,) if isinstance(final, torch.Tensor) else tuple(final)
    g = torch.Generator().manual_seed(7)
    loss = (out.double() * torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.device)).sum()
    for f in final:
        loss = loss + (f.double() * torch.randn(f.shape, generator=g, dtype=torch.float64).to(f.device)).sum()
    layer.zero_grad(set_to_none=True)
    loss.backward()
    results = {"output": out.detach()}
    results.update({f"state{i}": f.detach() for i, f in enumerate(final)})
    results["grad x"] = x.grad
    results.update({f"grad state{i}": s.grad for i, s in enumerate(state)})
    results.update({f"grad {n}": p.grad for n, p in layer.named_parameters() if p.grad is not None})
    return results


def run_parity_case(case: dict, device: torch.device) -> dict:
    import rnnkit
    mode = case["mode"]
    dtype = torch.float64 if mode.startswith("float64") else torch.float32
    autocast = torch.bfloat16 if mode == "bf16-autocast" else None
    tol = TOLERANCES["bf16-autocast" if autocast is not None else str(dtype).replace("torch.", "")]
    B, T, X, H = case["shape"]
    torch.manual_seed(SEED)
    cell = case["make"](X, H).to(device=device, dtype=dtype).train()
    g = torch.Generator().manual_seed(99)
    x = torch.randn(B, T, X, generator=g, dtype=torch.float64).to(device, dtype)
    sizes = cell.state_sizes
    sizes = (sizes,) if isinstance(sizes, int) else tuple(sizes)
    state = tuple(torch.randn(B, n, generator=g, dtype=torch.float64).to(device, dtype) for n in sizes)
    lengths = None
    if "lengths" in mode:
        lengths = torch.tensor([T, 1, max(1, T - 3), 2, T][:B] + [T] * max(0, B - 5))
    reverse = "reverse" in mode
    row = {k: case[k] for k in ("group", "engine", "cell", "mode")}
    row.update(shape=list(case["shape"]), tolerance=tol)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fast = rnnkit.Recurrent(cell, engine=case["engine"], reverse=reverse)
        slow = rnnkit.Recurrent(cell, engine="loop", reverse=reverse)
        got = _run_with_grads(fast, x, state, lengths, autocast)
        got_masks = _masks_of(cell)
        want = _run_with_grads(slow, x, state, lengths, None)
        want_masks = _masks_of(cell)
        synchronize(device)
    messages = sorted({str(w.message).splitlines()[0][:300] for w in caught})
    row["warnings"] = messages
    problems = []
    if device.type == "cuda" and case["engine"] == "native" and any(is_contiguity_warning(m) for m in messages):
        problems.append("cuDNN weights not compacted (torch's 'not part of single contiguous chunk' warning)")
    same = len(got_masks) == len(want_masks) and all(
        (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
        for a, b in zip(got_masks, want_masks))
    if not same:
        problems.append("the two runs drew different masks")
    if set(got) != set(want):
        problems.append(f"different gradients: {sorted(set(got) ^ set(want))}")
    errors, worst = {}, 0.0
    for key in want:
        if key not in got:
            continue
        a, b = got[key], want[key]
        if a.shape != b.shape:
            problems.append(f"{key}: shape {tuple(a.shape)} vs {tuple(b.shape)}")
            continue
        a64, b64 = a.detach().double(), b.detach().double()
        if a64.numel() == 0:
            continue
        if not bool(torch.isfinite(a64).all()):
            problems.append(f"{key}: not finite")
            continue
        err, scale = (a64 - b64).abs().max().item(), b64.abs().max().item()
        scaled = err / max(1.0, scale)
        errors[key] = {"max_abs_error": err, "reference_max_abs": scale, "scaled_error": scaled}
        if scaled > tol:
            problems.append(f"{key}: error {err:.2e} (reference max {scale:.2g}) over {tol:g} x max(1, ref)")
        worst = max(worst, scaled)
    kinds = {"outputs": lambda k: k == "output", "final states": lambda k: k.startswith("state"),
             "input/state gradients": lambda k: k.startswith(("grad x", "grad state")),
             "parameter gradients": lambda k: k.startswith("grad ") and not k.startswith(("grad x", "grad state"))}
    row["max_error"] = {name: max((e["max_abs_error"] for k, e in errors.items() if belongs(k)), default=None)
                        for name, belongs in kinds.items()}
    row.update(errors=errors, scaled_error=worst, problems=problems, passed=not problems)
    if autocast is not None:
        row["output_dtype"] = str(got["output"].dtype).replace("torch.", "")
    return row


def compaction_check(device: torch.device) -> dict:
    """On CUDA, torch warns on every cuDNN call whose weights are not one flat buffer: the native engine
    must hand it compacted weights, after .to(device), after an optimizer step, in training and inference."""
    import rnnkit
    from rnnkit.cells import ElmanCell
    torch.manual_seed(SEED)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        models = [rnnkit.LSTM(8, 16, num_layers=2, batch_first=True, engine="native").to(device),
                  rnnkit.GRU(8, 16, batch_first=True, engine="native").to(device),
                  rnnkit.Recurrent(ElmanCell(8, 16), engine="native").to(device),
                  rnnkit.LSTM.from_torch(torch.nn.LSTM(8, 16, batch_first=True).to(device))]
        for runner in models[-1]._runners():
            runner.set_engine("native")
        x = torch.randn(4, 7, 8, device=device)
        for model in models:
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            for _ in range(2):
                out, _ = model(x)
                out.float().sum().backward()
                optimizer.step()
                optimizer.zero_grad()
            with torch.no_grad():
                model(x)
        synchronize(device)
    messages = [str(w.message).splitlines()[0][:300] for w in caught]
    hits = [m for m in messages if is_contiguity_warning(m)]
    return {"group": "native: cuDNN weights compacted", "engine": "native", "cell": "LSTM x2, GRU, Elman, from_torch",
            "mode": "float32", "warnings": sorted(set(messages)), "contiguity_warnings": len(hits),
            "problems": [f"{len(hits)} 'not part of single contiguous chunk' warnings"] if hits else [],
            "passed": not hits, "scaled_error": None, "tolerance": None}


def parity(section: dict, budget: Budget, args, save) -> None:
    device = device_of(args)
    if device.type == "cpu":
        torch.set_num_threads(1)           # tiny tensors: a thread pool only spins (and stalls on a busy machine)
    section["tolerances"] = {**TOLERANCES, "rule": "max|engine - loop| <= tol * max(1, max|loop|), per tensor"}
    section["notes"] = [f"not under bf16: {name} ({why})" for name, why in BF16_LEFT_OUT.items()]
    section["tf32"] = "off during parity (torch.backends.cuda.matmul and cudnn allow_tf32 = False)"
    rows, skipped = section.setdefault("cases", []), section.setdefault("skipped", [])
    refused = section.setdefault("float64_refused", [])
    with tf32(False, False):
        if device.type == "cuda":
            try:
                rows.append(compaction_check(device))
            except Exception as error:              # noqa: BLE001 - recorded as the case's failure
                rows.append({"group": "native: cuDNN weights compacted", "engine": "native", "cell": "-",
                             "mode": "float32", "passed": False, "error": failure(error),
                             "problems": [failure(error)["message"]], "scaled_error": None, "tolerance": None})
        else:
            section["notes"].append("cuDNN weight compaction check skipped: no cuDNN on the CPU")
        cases = parity_cases(args.quick)
        for i, case in enumerate(cases):
            label = f"{case['engine']} {case['cell']} {case['mode']}"
            if budget.left() <= 0:
                skipped.append(label)
                continue
            try:
                row = run_parity_case(case, device)
            except Exception as error:              # noqa: BLE001 - one case's failure is its row
                if case["mode"].startswith("float64") and re.search(r"float64|double|dtype", str(error), re.I) \
                        and "CUDA error" not in str(error):
                    refused.append(f"{label}: {failure(error)['message'].splitlines()[0][:200]}")
                    continue                        # "float64 where the engine allows"
                row = {"group": case["group"], "engine": case["engine"], "cell": case["cell"], "mode": case["mode"],
                       "shape": list(case["shape"]), "passed": False, "error": failure(error),
                       "problems": [failure(error)["message"]], "scaled_error": None,
                       "tolerance": TOLERANCES.get(case["mode"].split("+")[0])}
                if device.type == "cuda" and "CUDA error" in str(error):
                    rows.append(row)
                    section["aborted"] = "a CUDA error poisons this process: the remaining cases were not run"
                    skipped += [f"{c['engine']} {c['cell']} {c['mode']}" for c in cases[i + 1:]]
                    break
            rows.append(row)
            if not row["passed"]:
                print(f"  parity FAIL {label}: {'; '.join(row['problems'])[:300]}", flush=True)
            save()
    section["passed"] = sum(r["passed"] for r in rows)
    section["failed"] = sum(not r["passed"] for r in rows)
    print(f"parity: {section['passed']} passed, {section['failed']} failed, {len(skipped)} skipped (budget)",
          flush=True)


# ------------------------------------------------------------------------------------------------ speed

def _time_pair(jobs: dict, device, repeats: int, warmup: int, allowance: float) -> tuple:
    """Median seconds of each job, interleaved; warm-up first (compilation), then as many repetitions as
    ``allowance`` seconds leave room for (at least 3, at most ``repeats``)."""
    jobs = {name: synced(fn, device) for name, fn in jobs.items()}
    synchronize(device)
    per_round = 0.0
    for _ in range(max(1, warmup)):
        per_round = 0.0
        for fn in jobs.values():
            start = time.perf_counter()
            fn()
            per_round += time.perf_counter() - start
    n = max(min(3, repeats), min(repeats, int(allowance / max(per_round, 1e-6))))
    return interleaved_medians(jobs, n, warmup=0), n


def speed(section: dict, budget: Budget, args, save) -> None:
    from torch import nn

    import rnnkit
    from benchmarks.engines import CELLS, NATIVE_BOUND, equal_flops_hidden, forward_backward
    device = device_of(args)
    if device.type == "cpu":
        torch.set_num_threads(1)           # as benchmarks/engines.py: the ratios compare work, not thread pools
    shapes = QUICK_SPEED_SHAPES if args.quick else SPEED_SHAPES
    repeats, warmup = (QUICK_REPEATS, 1) if args.quick else (REPEATS, 3)
    judged = device.type == "cuda" and not args.quick
    if not judged:
        section["notes"] = ["bounds not judged: " + ("quick mode's tiny shapes" if args.quick else
                                                     "on the CPU torch.nn.LSTM is oneDNN's kernel, not cuDNN")]
    matmul, cudnn = {"default": (None, None), "on": (True, True), "off": (False, False)}[args.tf32]
    rows, native_rows, skipped = section.setdefault("rows", []), section.setdefault("native_rows", []), \
        section.setdefault("skipped", [])
    contiguity = 0
    # the sanity rows first (cheap), then each cell at both shapes, so that a spent budget leaves whole cells out
    plan = [("native", shape, name) for name in ("LSTM", "GRU") for shape in shapes]
    plan += [("fused", shape, name) for name, (_, _, engines) in CELLS.items() if "fused" in engines
             for shape in shapes]
    with tf32(matmul, cudnn), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        section["tf32"] = {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}
        for i, (kind, shape, name) in enumerate(plan):
            B, T, X, H = shape
            left = budget.left()
            if left <= 0 and (rows if kind == "fused" else native_rows):    # the first row of each kind always runs
                skipped.append(f"{kind} {name} {shape}")
                continue
            allowance = max(left, 0.0) / (len(plan) - i)
            torch.manual_seed(SEED)
            x = torch.randn(B, T, X, device=device)
            try:
                if kind == "fused":
                    make, blocks, _ = CELLS[name]
                    hidden = equal_flops_hidden(blocks, X, H)
                    reference = nn.LSTM(X, hidden, batch_first=True).to(device)
                    layer = rnnkit.Recurrent(make(X, H), engine="fused").to(device)
                    jobs = {"torch": forward_backward(reference, x), "fused": forward_backward(layer, x)}
                    times, n = _time_pair(jobs, device, repeats, warmup, allowance)
                    ratio = times["fused"] / times["torch"]
                    bound = SPEED_BOUNDS.get(tuple(shape)) if judged else None
                    rows.append({"cell": name, "shape": list(shape), "reference_hidden": hidden,
                                 "torch_ms": 1e3 * times["torch"], "fused_ms": 1e3 * times["fused"], "ratio": ratio,
                                 "repeats": n, "bound": bound, "met": None if bound is None else ratio <= bound})
                else:
                    ours_cls, theirs_cls = (rnnkit.LSTM, nn.LSTM) if name == "LSTM" else (rnnkit.GRU, nn.GRU)
                    theirs = theirs_cls(X, H, batch_first=True).to(device)
                    ours = ours_cls.from_torch(theirs).to(device)
                    for runner in ours._runners():
                        runner.set_engine("native")
                    times, n = _time_pair({"torch": forward_backward(theirs, x), "native": forward_backward(ours, x)},
                                          device, repeats, warmup, allowance)
                    ratio = times["native"] / times["torch"]
                    bound = NATIVE_BOUND if judged else None
                    native_rows.append({"model": name, "shape": list(shape), "torch_ms": 1e3 * times["torch"],
                                        "native_ms": 1e3 * times["native"], "ratio": ratio, "repeats": n,
                                        "bound": bound, "met": None if bound is None else ratio <= bound})
            except Exception as error:              # noqa: BLE001 - recorded in its row
                target, key = (rows, "cell") if kind == "fused" else (native_rows, "model")
                target.append({key: name, "shape": list(shape), "error": failure(error), "ratio": None,
                               "bound": SPEED_BOUNDS.get(tuple(shape)) if judged else None, "met": False})
                print(f"  speed ERROR {kind} {name} {shape}: {failure(error)['message'][:300]}", flush=True)
                if device.type == "cuda" and "CUDA error" in str(error):
                    section["aborted"] = "a CUDA error poisons this process: the remaining rows were not run"
                    skipped += [f"{k} {n_} {s}" for k, s, n_ in plan[i + 1:]]
                    break
            save()
        contiguity = sum(is_contiguity_warning(str(w.message)) for w in caught)
    section["contiguity_warnings"] = contiguity
    done = [r for r in rows if r.get("ratio") is not None]
    print(f"speed: {len(done)} fused rows, {len(native_rows)} native rows, {len(skipped)} skipped (budget)", flush=True)


# --------------------------------------------------------------------------------------- language model

def find_data(args) -> Path | None:
    if args.data:
        return Path(args.data)
    if os.environ.get("RNNKIT_SHAKESPEARE"):
        return Path(os.environ["RNNKIT_SHAKESPEARE"])
    return next((p for p in DATA_CANDIDATES if p.exists()), None)


def language_model(section: dict, budget: Budget, args, save) -> None:
    data = find_data(args)
    if data is None or not data.exists():
        raise FileNotFoundError(
            f"tiny-shakespeare not found ({data or ', '.join(str(p) for p in DATA_CANDIDATES)}): copy "
            f"../shared/data/tinyshakespeare.txt to runs/gpu-data/ here and name runs/gpu-data in the device "
            f"tool's carry (see benchmarks/README.md, 'GPU check'), or pass --data")
    minutes = args.lm_minutes
    flags = cli_flags()
    options = list(QUICK_LM_OPTIONS if args.quick else LM_OPTIONS)
    notes = []
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    if args.device == "cpu":
        env["OMP_NUM_THREADS"] = "1"       # the smoke test's tiny model: a thread pool only spins beside parity
    if flags["--device"]:
        options += ["--device", args.device]
    else:
        notes.append("rnnkit train has no --device: it picks CUDA when torch sees a GPU")
        if args.device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
    precision = args.lm_precision or "fp32"
    if flags["--precision"]:
        options += ["--precision", precision]
    else:
        notes.append(f"rnnkit train has no --precision: ran in its default precision, not {precision}")
        precision = None
    options += shlex.split(args.lm_args or "")
    run_dir = Path(tempfile.mkdtemp(prefix="rnnkit-gpu-lm-")) / "run"
    env["RNNKIT_CACHE_DIR"] = str(run_dir.parent / "cache")
    command = [sys.executable, "-m", "rnnkit.cli", "train", "--data", str(data), "--test-fraction", "0",
               "--eval-tokens", "0", "--max-minutes", f"{minutes:.4f}", "--out", str(run_dir), "--quiet", *options]
    shown = ["rnnkit", *command[3:]]
    shown[shown.index("--data") + 1] = data.name
    shown[shown.index("--out") + 1] = "RUN_DIR"
    section.update(command=" ".join(shlex.quote(c) for c in shown), data=str(data), minutes=minutes,
                   precision=precision, notes=notes)
    is_shakespeare = "shakespeare" in data.name.lower()
    print(f"language model: {section['command']}", flush=True)
    save()
    started = time.perf_counter()
    timeout = minutes * 60 + LM_OVERHEAD + (60 if args.quick else 0)
    try:
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        output, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as error:
        output = (error.stdout or b"").decode() if isinstance(error.stdout, bytes) else (error.stdout or "")
        output, code = output + f"\n[killed after {timeout:.0f} s]", None
    section["wall_s"] = time.perf_counter() - started
    section["output_tail"] = "\n".join(output.strip().splitlines()[-15:])
    section["returncode"] = code
    found = re.search(r"engine (\w+), on ([\w:]+)", output)
    section["engine"], section["ran_on"] = (found.group(1), found.group(2)) if found else (None, None)
    metrics = run_dir / "metrics.jsonl"
    summary = None
    if metrics.exists():
        records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        summary = next((r for r in reversed(records) if r.get("kind") == "summary"), None)
    if code != 0 or summary is None:
        raise RuntimeError(f"rnnkit train ended with status {code} and {'no' if summary is None else 'a'} summary; "
                           f"its output ends:\n{section['output_tail']}")
    loss = summary["validation_loss"]
    section.update(nats_per_char=loss, best_nats_per_char=summary.get("best_validation_loss"),
                   steps=summary.get("steps"), tokens=summary.get("tokens"), training_s=summary.get("seconds"),
                   tokens_per_second=summary.get("tokens_per_second"), stopped_by=summary.get("stopped_by"))
    judged = args.device == "cuda" and not args.quick and is_shakespeare and minutes >= LM_MINUTES
    section["bound"] = LM_BOUND if judged else None
    section["met"] = (loss <= LM_BOUND) if judged else None
    if args.device == "cuda" and section["ran_on"] and not section["ran_on"].startswith("cuda"):
        section["met"] = False
        notes.append(f"ran on {section['ran_on']}, not the GPU")
    print(f"language model: {loss:.4f} nats/char held out after {summary.get('seconds', 0):.0f} s, "
          f"{summary.get('tokens_per_second', 0) / 1e3:.1f}k chars/s, engine {section['engine']} on "
          f"{section['ran_on']}", flush=True)


# ----------------------------------------------------------------------------------------------- report

def checks_of(report: dict) -> list:
    """One line per check: (section, check, figure, bound, result)."""
    lines = []
    s = report["sections"]

    def section_error(name):
        sec = s.get(name)
        if sec is None:
            return [(name, "not run", "-", "-", "skipped")]
        if sec.get("status") == "failed":
            return [(name, "section failed (message below)", "-", "-", "ERROR")]
        return []

    env = s.get("environment", {})
    lines += section_error("environment")
    for c in env.get("checks", []):
        lines.append(("environment", c["check"], str(c["figure"])[:40], str(c["bound"]), c["result"]))
    lines += section_error("parity")
    par = s.get("parity", {})
    groups = collections.OrderedDict()
    for row in par.get("cases", []):
        groups.setdefault(row["group"], []).append(row)
    for group, rows in groups.items():
        passed = sum(r["passed"] for r in rows)
        errors = [r["scaled_error"] for r in rows if r.get("scaled_error") is not None]
        tol = next((r["tolerance"] for r in rows if r.get("tolerance") is not None), None)
        figure = f"{max(errors):.1e}" if errors else "-"
        result = f"pass {passed}/{len(rows)}" if passed == len(rows) else f"FAIL {len(rows) - passed}/{len(rows)}"
        if passed != len(rows):
            bad = [r["cell"] for r in rows if not r["passed"]]
            result += " (" + ", ".join(bad)[:40] + ")"
        lines.append(("parity", group, figure, "-" if tol is None else f"{tol:g}", result))
    if par.get("float64_refused"):
        lines.append(("parity", "float64 cases the engines refuse", str(len(par["float64_refused"])), "-", "n/a"))
    if par.get("skipped"):
        lines.append(("parity", "cases not run (budget)", str(len(par["skipped"])), "0", "skipped"))
    lines += section_error("speed")
    sp = s.get("speed", {})
    by_name = collections.OrderedDict()           # one line per cell: its shapes side by side, " | " between
    for row in sp.get("native_rows", []) + sp.get("rows", []):
        name = f"{row['cell']} fused / LSTM" if "cell" in row else f"{row['model']} native / torch.nn.{row['model']}"
        by_name.setdefault(name, []).append(row)
    for name, rows in by_name.items():
        figures, bounds, results = [], [], []
        for row in rows:
            bound = row.get("bound")
            bounds.append("-" if bound is None else f"{bound:g}")
            if row.get("ratio") is None:
                figures.append("error")
                results.append("ERROR")
            else:
                figures.append(f"{row['ratio']:.2f}")
                results.append("n/a" if row.get("met") is None else ("pass" if row["met"] else "FAIL"))
        result = " | ".join(results)
        if any(r in ("FAIL", "ERROR") for r in results):
            result = ("ERROR" if "ERROR" in results else "FAIL") + f" ({result})"
        lines.append(("speed", name, " | ".join(figures), " | ".join(bounds), result))
    if sp.get("skipped"):
        lines.append(("speed", "rows not run (budget)", str(len(sp["skipped"])), "0", "skipped"))
    if sp.get("contiguity_warnings"):
        lines.append(("speed", "contiguity warnings (cuDNN)", str(sp["contiguity_warnings"]), "0",
                      "FAIL" if report["device"] == "cuda" else "n/a"))
    lines += section_error("language_model")
    lm = s.get("language_model", {})
    if lm.get("nats_per_char") is not None:
        bound = lm.get("bound")
        result = "n/a" if lm.get("met") is None else ("pass" if lm["met"] else "FAIL")
        lines.append(("language_model", f"held-out nats/char, {lm['minutes'] * 60:.0f} s on {lm.get('ran_on')}",
                      f"{lm['nats_per_char']:.4f}", "-" if bound is None else f"{bound:g}", result))
    return lines


def print_table(report: dict) -> None:
    env = report["sections"].get("environment", {}).get("info", {})
    print(f"\nGPU check (issue 18) on {env.get('gpu') or report['device']}: torch {env.get('torch')}, "
          f"CUDA {env.get('cuda')}, triton {env.get('triton')}; {report['seconds']:.0f} s"
          f"{'; quick' if report['quick'] else ''}")
    shapes = [tuple(r["shape"]) for r in report["sections"].get("speed", {}).get("rows", [])]
    shapes = list(dict.fromkeys(shapes))
    print("parity figure: max |engine - loop| / max(1, max|loop|) over outputs, states and gradients; speed figure: "
          "fwd+bwd time / torch's (cuDNN on CUDA) at equal FLOPs" + (f", at {' | '.join(map(str, shapes))}"
                                                                     if shapes else ""))
    widths = (14, 36, 13, 11)
    print(f"{'section':{widths[0]}} {'check':{widths[1]}}  {'figure':>{widths[2]}}  {'bound':>{widths[3]}}  result")
    for section, check, figure, bound, result in checks_of(report):
        print(f"{section:{widths[0]}} {check[:widths[1]]:{widths[1]}}  {figure:>{widths[2]}}  {bound:>{widths[3]}}  "
              f"{result}")
    for name, section in report["sections"].items():
        for note in section.get("notes", []):
            print(f"note ({name}): {note}")
        if section.get("aborted"):
            print(f"note ({name}): {section['aborted']}")
    messages = []                                 # the first few failures in a line each (all are in the JSON)
    for name, section in report["sections"].items():
        if section.get("status") == "failed":
            messages.append(f"{name}: {section['error']['message'].splitlines()[0]}")
        for row in section.get("cases", []):
            if not row.get("passed", True):
                messages.append(f"parity {row['engine']} {row['cell']} {row['mode']}: {'; '.join(row['problems'])}")
        for row in section.get("native_rows", []) + section.get("rows", []):
            if row.get("error"):
                messages.append(f"speed {row.get('cell') or row.get('model')} {tuple(row['shape'])}: "
                                f"{row['error']['message'].splitlines()[0]}")
    for message in messages[:12]:
        print(f"failure: {message[:240]}")
    if len(messages) > 12:
        print(f"failure: ... {len(messages) - 12} more in the JSON")


def failed(report: dict) -> list:
    return [line for line in checks_of(report) if line[4].startswith(("FAIL", "ERROR"))]


# ------------------------------------------------------------------------------------------------- main

RUNNERS = {"environment": environment, "parity": parity, "speed": speed, "language_model": language_model}


def run_here(name: str, args, budget_s: float, save_to=None) -> dict:
    """Run one section in this process; ``save_to(section)`` after each step (a child's file)."""
    section = {"status": "running", "budget_s": budget_s}
    save = (lambda: save_to(section)) if save_to else (lambda: None)
    start = time.perf_counter()
    try:
        if name == "environment":
            environment(section, Budget(budget_s), args)
        else:
            RUNNERS[name](section, Budget(budget_s), args, save)
        section["status"] = "ok"
    except Exception as error:                    # noqa: BLE001 - the section's failure is its record
        section["status"] = "failed"
        section["error"] = failure(error)
        print(f"{name}: FAILED: {section['error']['message'][:500]}", flush=True)
    section["seconds"] = time.perf_counter() - start
    save()
    return section


def run_child(name: str, args, budget_s: float) -> dict:
    """Run one section in a child process of this script (a CUDA error stays there), killed GRACE
    seconds after its budget; its file holds what it finished."""
    with tempfile.TemporaryDirectory(prefix="rnnkit-gpu-") as folder:
        path = Path(folder) / f"{name}.json"
        command = [sys.executable, __file__, "--section", name, "--section-out", str(path), "--device", args.device,
                   "--tf32", args.tf32, "--budget", f"{budget_s:.1f}"] + (["--quick"] if args.quick else [])
        start = time.perf_counter()
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        tail = collections.deque(maxlen=25)

        def pump():
            for line in proc.stdout:
                tail.append(line.rstrip("\n"))
                print(line, end="", flush=True)
        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            code = proc.wait(timeout=budget_s + GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
            tail.append(f"[killed {budget_s + GRACE:.0f} s after it started]")
        reader.join(timeout=5)
        section = json.loads(path.read_text()) if path.exists() else {"budget_s": budget_s}
        if code != 0 or section.get("status") != "ok":
            if section.get("status") in (None, "running"):
                section["status"] = "failed"
                section["error"] = {"message": f"the child process ended with status {code} before the section did",
                                    "traceback": "\n".join(tail)[-3000:]}
        section["seconds"] = time.perf_counter() - start
        return section


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, few repetitions, a 9-second language model")
    parser.add_argument("--out", default=str(RESULTS), help="folder for gpu.json (default benchmarks/results)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--data", help="tinyshakespeare.txt (default: runs/gpu-data/, shared/data/ or ../shared/data/)")
    parser.add_argument("--lm-minutes", type=float, help=f"training minutes of the language model (default "
                                                         f"{LM_MINUTES:g}; quick {QUICK_LM_MINUTES:g})")
    parser.add_argument("--lm-precision", choices=("fp32", "bf16", "fp16"),
                        help="rnnkit train --precision (default fp32: cuDNN's LSTM takes TF32 tensor cores in float32 "
                             "already; whether bf16 helps it is untried)")
    parser.add_argument("--lm-args", help="more rnnkit train options, after (and over) the script's own, e.g. "
                                          "'--hidden-size 1024 --dropout 0.5'")
    parser.add_argument("--tf32", choices=("default", "on", "off"), default="default",
                        help="TF32 for the speed section (default: torch's defaults, recorded)")
    parser.add_argument("--budgets", default="", help="seconds for sections, e.g. 'parity=200,speed=120' (defaults: "
                        + ", ".join(f"{k}={v}" for k, v in BUDGETS.items() if k != "environment") + "; quick: "
                        + ", ".join(f"{k}={v}" for k, v in QUICK_BUDGETS.items() if k != "environment") + ")")
    parser.add_argument("--in-process", action="store_true", help="run parity and speed in this process")
    parser.add_argument("--section", help=argparse.SUPPRESS)
    parser.add_argument("--section-out", help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = set(args.sections.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"--sections: unknown {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    budgets = dict(QUICK_BUDGETS if args.quick else BUDGETS)
    for item in filter(None, args.budgets.split(",")):
        name, _, seconds = item.partition("=")
        if name not in ("environment", "parity", "speed"):
            parser.error(f"--budgets: {name!r} is not a section with a budget; choose environment, parity or speed "
                         f"(the language model's is --lm-minutes)")
        try:
            budgets[name] = float(seconds)
        except ValueError:
            parser.error(f"--budgets: expected NAME=SECONDS, got {item!r}")
    args.section_budgets = budgets
    if args.lm_minutes is None:
        args.lm_minutes = QUICK_LM_MINUTES if args.quick else LM_MINUTES
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.section:                              # a child: one section, into one file
        path = Path(args.section_out)

        def save_to(section):
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(section, default=str))
            tmp.replace(path)
        run_here(args.section, args, args.budget, save_to)
        return 0
    budgets = args.section_budgets
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "gpu.json"
    report = {"benchmark": "the device check of issue 18 (benchmarks/gpu.py)", "machine": machine(),
              "device": args.device, "quick": args.quick,
              "arguments": {k: v for k, v in vars(args).items() if k not in ("section", "section_out", "budget")},
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": 0.0, "sections": {}}
    start = time.perf_counter()

    def write():
        report["seconds"] = time.perf_counter() - start
        report["failed_checks"] = [" | ".join(line) for line in failed(report)]
        path.write_text(json.dumps(report, indent=1, default=str) + "\n")

    lock = threading.Lock()

    def run(name):
        if name == "language_model":
            budget = args.lm_minutes * 60 + LM_OVERHEAD
        else:
            budget = budgets[name]
        if name in ISOLATED and not args.in_process:
            section = run_child(name, args, budget)
        else:
            section = run_here(name, args, budget)
        with lock:
            report["sections"][name] = section
            write()

    chosen = args.sections.split(",")
    # the environment, then speed with the device to itself; then the language model and, beside it, parity
    # (correctness does not depend on timing; the model shares the GPU with parity's small kernels for the
    # minute or two parity takes, which can only lower its figure)
    for name in ("environment", "speed"):
        if name in chosen:
            run(name)
    if "language_model" in chosen:
        with contextlib.suppress(Exception):     # a failure here is the language model section's to report
            cli_flags()
    beside = [threading.Thread(target=run, args=(name,)) for name in ("language_model", "parity") if name in chosen]
    for thread in beside:
        thread.start()
    for thread in beside:
        thread.join()
    report["sections"] = {name: report["sections"][name] for name in SECTIONS if name in report["sections"]}
    if "language_model" in report["sections"] and "parity" in report["sections"]:
        report["sections"]["language_model"]["shared_gpu_with_parity_s"] = report["sections"]["parity"].get("seconds")
    write()
    print_table(report)
    bad = failed(report)
    print(f"\n{'all checks met' if not bad else f'{len(bad)} checks NOT met'} -- results in {path}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
