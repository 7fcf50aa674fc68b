"""Shared timing helpers for the benchmarks: interleaved repetitions, medians, JSON output."""
from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def interleaved_medians(jobs: dict, repeats: int, warmup: int = 3) -> dict:
    """Median seconds of each zero-argument callable in ``jobs``.

    The callables take turns within every repetition, so a slow spell of the
    machine costs all of them alike and their ratio stays honest.
    """
    for fn in jobs.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in jobs}
    for _ in range(repeats):
        for name, fn in jobs.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


def machine() -> dict:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version(), "processor": platform.processor() or platform.machine()}


def write_results(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    return path
