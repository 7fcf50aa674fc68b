"""torch.compile against eager: one training step of a LanguageModel on each engine.

    python benchmarks/compile.py            # about 3 minutes on 2 CPU cores

For each engine that runs the model's cell, the same model (LSTM or GRU, 2 layers of 256,
vocabulary 2,000, batch 32, 64 steps of BPTT) takes a training step (forward, backward, SGD
update) eagerly and as ``torch.compile(model)``; the two alternate within every repetition
and the medians are compared. The bound: compiled no slower than eager by more than 5%
(ratio compiled / eager <= 1.05). A fused layer is one custom operator inside the compiled
graph (rnnkit::fused_recurrence, running the same kernels as eager) and torch's native kernels
run eagerly between graphs (inductor fails to lower oneDNN's), so their ratio measures what
compilation adds around the recurrence.
Writes results/compile.json.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._timing import interleaved_medians, write_results  # noqa: E402
from rnnkit.models import LanguageModel, LanguageModelConfig  # noqa: E402

BOUND = 1.05
VOCAB, BATCH, STEPS = 2000, 32, 64


def step_of(model, compiled: bool):
    run = torch.compile(model) if compiled else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    tokens = torch.randint(VOCAB, (BATCH, STEPS + 1), generator=torch.Generator().manual_seed(0))

    def step():
        optimizer.zero_grad(set_to_none=True)
        logits, _ = run(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))
        loss.backward()
        optimizer.step()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    rows = []
    cases = [("lstm", "native"), ("lstm", "fused"), ("lstm", "loop"), ("gru", "native"), ("gru", "fused"),
             ("gru", "loop")]
    for cell, engine in cases:
        torch.manual_seed(0)
        config = LanguageModelConfig(vocab_size=VOCAB, hidden_size=256, embedding_size=128, num_layers=2,
                                     cell=cell, engine=engine)
        eager_model = LanguageModel(config)
        compiled_model = LanguageModel(config)
        compiled_model.load_state_dict(eager_model.state_dict())
        torch._dynamo.reset()
        jobs = {"eager": step_of(eager_model, False), "compiled": step_of(compiled_model, True)}
        times = interleaved_medians(jobs, args.repeats, warmup=3)
        ratio = times["compiled"] / times["eager"]
        rows.append({"cell": cell, "engine": engine, "eager_ms": 1e3 * times["eager"],
                     "compiled_ms": 1e3 * times["compiled"], "ratio": ratio, "met": ratio <= BOUND})
        print(f"{cell:5s} {engine:7s} eager {1e3 * times['eager']:8.1f} ms   compiled "
              f"{1e3 * times['compiled']:8.1f} ms   compiled/eager {ratio:5.2f}  "
              f"{'ok' if ratio <= BOUND else 'SLOWER'}", flush=True)
    path = write_results("compile", {"bound": BOUND, "vocab": VOCAB, "batch": BATCH, "steps": STEPS,
                                     "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
