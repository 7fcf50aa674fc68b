"""benchmarks/gpu.py, the device check of issue 18, runs end to end here on the CPU (``--device cpu
--quick``): every section is recorded in the JSON, every engine agrees with the loop within the stated
tolerances, the speed section has figures and the language model a held-out loss. No speed is judged
(never a timed test): the GPU's figures come from a device machine."""
import json
import math
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = {"environment", "parity", "speed", "language_model"}


def write_corpus(path: Path) -> None:
    """60k characters of verse-like word salad from a fixed seed: the language model needs a text, and
    tiny-shakespeare lives outside the repository."""
    rng = random.Random(0)
    words = ("the king queen lord lady speak love night day blood crown sword heart death sleep dream "
             "thou thee thy art hath doth shall will not and of to in my your his her").split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 10))).capitalize() + "," for _ in range(1500)]
    path.write_text("\n".join(lines) + "\n")


def test_the_gpu_check_runs_on_the_cpu_and_records_every_section(tmp_path):
    data, out = tmp_path / "verse.txt", tmp_path / "out"
    write_corpus(data)
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu", "--quick",
                             "--out", str(out), "--data", str(data)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, f"gpu.py failed:\n{result.stdout[-4000:]}\n{result.stderr[-3000:]}"
    assert "section" in result.stdout and "all checks met" in result.stdout
    report = json.loads((out / "gpu.json").read_text())
    sections = report["sections"]
    assert set(sections) == SECTIONS
    for name, section in sections.items():
        assert section["status"] == "ok", f"{name}: {section.get('error')}"
    assert report["failed_checks"] == []
    assert report["device"] == "cpu" and sections["environment"]["info"]["torch"]

    parity = sections["parity"]
    cases = parity["cases"]
    assert {case["engine"] for case in cases} == {"fused", "native", "scan", "traced"}
    assert {case["mode"] for case in cases} >= {"float32", "float32+lengths", "bf16-autocast"}
    assert any("+all" in case["cell"] for case in cases), "the regularizers around the fused cells"
    for case in cases:
        assert case["passed"], f"{case['engine']} {case['cell']} {case['mode']}: {case['problems']}"
        assert case["errors"] and 0 <= case["scaled_error"] <= case["tolerance"], case
        assert {"output", "grad x"} <= set(case["errors"]), "outputs and the input's gradient are compared"
        assert any(key.startswith("grad cell") for key in case["errors"]), "every parameter's gradient"

    speed = sections["speed"]
    assert speed["rows"] and speed["native_rows"]
    for row in speed["rows"]:
        assert row["torch_ms"] > 0 and row["fused_ms"] > 0 and math.isfinite(row["ratio"]), row
        assert row["reference_hidden"] >= 1 and row["bound"] is None      # no bound judged on the CPU
    for row in speed["native_rows"]:
        assert row["torch_ms"] > 0 and row["native_ms"] > 0 and math.isfinite(row["ratio"]), row

    model = sections["language_model"]
    assert model["ran_on"] == "cpu" and model["steps"] > 0
    assert 0 < model["nats_per_char"] < math.log(64), "below a uniform guess over the characters"
