"""bfloat16 on the CPU: does `rnnkit train --precision bf16` pay here? (issue 32, item 3)

    python benchmarks/bf16_cpu.py                      # 600 steps each, fp32 and bf16, twice, interleaved
    python benchmarks/bf16_cpu.py --steps 100 --rounds 1

Trains the character-level language model with its defaults on tiny-shakespeare (../shared/data) for
the same number of optimizer steps in float32 and under bfloat16 autocast, alternating the two so a
change in the machine's load hits both, and reads what `rnnkit train` prints at the end: tokens per
second and the validation loss (nats per character). Prints a table and the ratios (bf16 over fp32)
and writes results/bf16_cpu.json with the CPU's bf16 flags (AVX512-BF16, AMX): where the CPU has
neither, oneDNN emulates bfloat16 products and the throughput is expected to fall, not rise.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._timing import write_results  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
SPEED = re.compile(r"after (\d+) steps, ([\d,]+) tokens, .*\(([\d.]+)k tokens/s\)")
LOSS = re.compile(r"validation: loss ([\d.]+) nats/char")


def cpu_flags() -> list:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    wanted = ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f")
    return [flag for flag in wanted if re.search(rf"\b{flag}\b", text)]


def train(precision: str, steps: int, folder: Path) -> dict:
    command = [sys.executable, "-m", "rnnkit.cli", "train", "--data", str(CORPUS), "--max-steps", str(steps),
               "--eval-every", str(10 * steps), "--precision", precision, "--out", str(folder), "--seed", "0"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{precision}: rnnkit train failed: {done.stderr.strip().splitlines()[-1]}")
    speed, loss = SPEED.search(done.stdout), LOSS.search(done.stdout)
    if not speed or not loss:
        raise RuntimeError(f"{precision}: cannot read the summary of rnnkit train:\n{done.stdout[-800:]}")
    return {"tokens_per_s": 1000 * float(speed.group(3)), "validation_nats": float(loss.group(1))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    if not CORPUS.is_file():
        print(f"no corpus at {CORPUS}; this benchmark reads ../shared/data/tinyshakespeare.txt", file=sys.stderr)
        return 2
    runs = {"fp32": [], "bf16": []}
    with tempfile.TemporaryDirectory() as root:
        for r in range(args.rounds):
            for precision in ("fp32", "bf16"):
                got = train(precision, args.steps, Path(root) / f"{precision}-{r}")
                runs[precision].append(got)
                print(f"round {r + 1} {precision}: {got['tokens_per_s'] / 1000:.1f}k tokens/s, validation "
                      f"{got['validation_nats']:.4f} nats/char", flush=True)
    mean = {p: {k: sum(run[k] for run in rs) / len(rs) for k in ("tokens_per_s", "validation_nats")}
            for p, rs in runs.items()}
    speedup = mean["bf16"]["tokens_per_s"] / mean["fp32"]["tokens_per_s"]
    gap = mean["bf16"]["validation_nats"] - mean["fp32"]["validation_nats"]
    print(f"\n{'precision':10} {'tokens/s':>10} {'val nats/char':>14}")
    for p in ("fp32", "bf16"):
        print(f"{p:10} {mean[p]['tokens_per_s']:10.0f} {mean[p]['validation_nats']:14.4f}")
    print(f"bf16 / fp32 throughput {speedup:.3f}; validation loss bf16 - fp32 {gap:+.4f} nats/char "
          f"(CPU flags: {', '.join(cpu_flags()) or 'none of avx512_bf16, amx'})")
    path = write_results("bf16_cpu", {"steps": args.steps, "rounds": args.rounds, "cpu_flags": cpu_flags(),
                                      "runs": runs, "mean": mean, "throughput_ratio": speedup, "loss_gap": gap})
    print(f"results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
