"""Corpora at scale: `rnnkit train` on 300 MB and 1.2 GB of text, time and peak memory.

    python benchmarks/data.py                 # ~2 minutes, ~5 GB of disk under --work
    python benchmarks/data.py --skip-large    # without the 1.2 GB corpus

Makes the corpora itself (tinyshakespeare repeated to 300 MB and 1.2 GB) and runs the
real command line, `rnnkit train --data FILE --max-steps 5` (character level, every other
option at its default), each in a fresh process whose peak resident memory is read
from the kernel (wait4's ru_maxrss: the process's largest resident set, its token file's
mapped pages included). Each corpus starts with an empty token cache. Checks:

- first run on 300 MB, tokenization included: <= 20 s and <= 1.5 GB peak;
- second run on the same file (the token file found in the cache): <= 5 s;
- first run on 1.2 GB: peak no higher than at 300 MB (+5% for noise): memory does not
  grow with the corpus;
- two processes (gloo, launched as torchrun would, with RANK/WORLD_SIZE) on the 300 MB
  token file: each rank's peak within 10% of the single process's.

Writes results/data.json.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._timing import write_results  # noqa: E402

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
BOUNDS = {"first_seconds": 20.0, "first_peak_gb": 1.5, "second_seconds": 5.0, "flat": 1.05, "ranks": 1.10}


def make_corpus(path: Path, size: int) -> Path:
    if path.exists() and path.stat().st_size >= size:
        return path
    text = SHAKESPEARE.read_bytes()
    with open(path, "wb") as out:
        written = 0
        while written < size:
            out.write(text)
            written += len(text)
    return path


def run(argv, env, log) -> tuple:
    """(seconds, peak resident GB, return code) of one process."""
    started = time.perf_counter()
    with open(log, "ab") as output:
        process = subprocess.Popen(argv, env=env, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    return time.perf_counter() - started, usage.ru_maxrss / 2 ** 20, os.waitstatus_to_exitcode(status)


def train_command(data: Path, out: Path) -> list:
    return [sys.executable, "-m", "rnnkit.cli", "train", "--data", str(data), "--max-steps", "5",
            "--out", str(out), "--quiet"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_ranks(data: Path, out: Path, env: dict, log: Path) -> list:
    """Peak GB of each of two gloo ranks, started as torchrun starts them."""
    port, processes = free_port(), []
    started = time.perf_counter()
    with open(log, "ab") as output:
        for rank in range(2):
            rank_env = {**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                        "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
                        "OMP_NUM_THREADS": "1"}
            processes.append(subprocess.Popen(train_command(data, out), env=rank_env, stdout=output,
                                              stderr=subprocess.STDOUT))
        results = []
        for process in processes:
            _, status, usage = os.wait4(process.pid, 0)
            results.append((usage.ru_maxrss / 2 ** 20, os.waitstatus_to_exitcode(status)))
    return results, time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/rnnkit-data-benchmark", help="folder for the corpora and runs")
    parser.add_argument("--skip-large", action="store_true", help="no 1.2 GB corpus")
    args = parser.parse_args(argv)
    if not SHAKESPEARE.exists():
        print(f"missing {SHAKESPEARE}: this benchmark reads ../shared/data/tinyshakespeare.txt", file=sys.stderr)
        return 2
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    log.write_text("")
    root = Path(__file__).resolve().parents[1]
    base_env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    sizes = {"300MB": 300_000_000} if args.skip_large else {"300MB": 300_000_000, "1.2GB": 1_200_000_000}
    rows, results = [], {}
    for name, size in sizes.items():
        corpus = make_corpus(work / f"shakespeare-{name}.txt", size)
        cache = work / f"cache-{name}"
        shutil.rmtree(cache, ignore_errors=True)
        env = {**base_env, "RNNKIT_CACHE_DIR": str(cache)}
        for attempt in ("first", "second") if name == "300MB" else ("first",):
            out = work / f"run-{name}-{attempt}"
            shutil.rmtree(out, ignore_errors=True)
            seconds, peak, code = run(train_command(corpus, out), env, log)
            if code != 0:
                print(f"rnnkit train failed (exit {code}); see {log}", file=sys.stderr)
                return 1
            results[f"{name} {attempt}"] = {"seconds": round(seconds, 2), "peak_gb": round(peak, 3),
                                            "corpus_bytes": corpus.stat().st_size}
            rows.append((f"{name}, {attempt} run", seconds, peak))
        if name == "300MB":
            out = work / "run-300MB-ranks"
            shutil.rmtree(out, ignore_errors=True)
            ranks, seconds = two_ranks(corpus, out, env, log)
            if any(code != 0 for _, code in ranks):
                print(f"the two-rank run failed ({[c for _, c in ranks]}); see {log}", file=sys.stderr)
                return 1
            results["300MB two ranks"] = {"seconds": round(seconds, 2),
                                          "peak_gb_per_rank": [round(p, 3) for p, _ in ranks]}
            for rank, (peak, _) in enumerate(ranks):
                rows.append((f"300MB, 2 ranks: rank {rank}", seconds, peak))
    first, second = results["300MB first"], results["300MB second"]
    checks = {
        "first run on 300 MB <= 20 s": first["seconds"] <= BOUNDS["first_seconds"],
        "first run on 300 MB <= 1.5 GB peak": first["peak_gb"] <= BOUNDS["first_peak_gb"],
        "second run <= 5 s": second["seconds"] <= BOUNDS["second_seconds"],
        "each rank's peak within 10% of one process's": all(
            p <= BOUNDS["ranks"] * second["peak_gb"] for p in results["300MB two ranks"]["peak_gb_per_rank"]),
    }
    if "1.2GB first" in results:
        checks["peak at 1.2 GB <= peak at 300 MB (+5%)"] = \
            results["1.2GB first"]["peak_gb"] <= BOUNDS["flat"] * first["peak_gb"]
    print(f"\n{'run':32} {'seconds':>8} {'peak GB':>8}")
    for label, seconds, peak in rows:
        print(f"{label:32} {seconds:8.1f} {peak:8.3f}")
    print()
    for label, met in checks.items():
        print(f"{'met    ' if met else 'NOT met'}  {label}")
    path = write_results("data", {"command": "rnnkit train --data FILE --max-steps 5 --out DIR --quiet",
                                  "runs": results, "bounds": BOUNDS, "checks": checks})
    print(f"results in {path}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
