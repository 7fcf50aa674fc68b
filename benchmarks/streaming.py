"""Streaming inference: the per-call time of an rnnkit stream against torch's own single-step module.

    python benchmarks/streaming.py            # ~30 s; writes results/streaming.json
    python benchmarks/streaming.py --quick    # fewer repetitions (noisier)

Batch 1, input_size = hidden_size = H in {128, 512}, float32, one thread, all under
``torch.no_grad()`` (inference), the same weight tensors everywhere (at H = 512 they fill
8 MB, so separate copies would compete for the cache). Per cell (LSTM, GRU):

- ``torch.nn``: ``torch.nn.LSTMCell`` / ``GRUCell`` called directly, ``h, c = cell(x, (h, c))``;
- ``stream``: ``rnnkit.Recurrent(LSTMCell).stream()``, ``y = stream(x)``;
- ``kernel``: ``torch._VF.lstm_cell`` / ``gru_cell`` on the weights, no module at all — the floor.

The bound: stream / torch.nn <= 1.10 (per-call overhead close to the raw kernel). Then, per
token of a character language model (V = 65, one LSTM layer of H, embedding 64), the
stream against ``model(token (1, 1), state)``, the call ``rnnkit.generate`` makes today.
Each timed job is a run of ``CALLS`` consecutive calls; the table gives microseconds per call.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import _VF, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import rnnkit  # noqa: E402
from benchmarks._timing import interleaved_medians, write_results  # noqa: E402
from rnnkit.models import LanguageModel, LanguageModelConfig  # noqa: E402
from rnnkit.streaming import LanguageModelStream  # noqa: E402

SIZES = (128, 512)
CALLS = 200
BOUND = 1.10


def _repeat(step):
    def run():
        for _ in range(CALLS):
            step()
    return run


def single_step_jobs(kind: str, size: int) -> dict:
    torch_cell = {"LSTM": nn.LSTMCell, "GRU": nn.GRUCell}[kind](size, size)
    ours = {"LSTM": rnnkit.cells.LSTMCell, "GRU": rnnkit.cells.GRUCell}[kind](size, size)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):       # the very same tensors: same cache lines
        setattr(ours, name, getattr(torch_cell, name))
    stream = rnnkit.Recurrent(ours).stream()
    x = torch.randn(1, size)
    weights = (torch_cell.weight_ih, torch_cell.weight_hh, torch_cell.bias_ih, torch_cell.bias_hh)
    if kind == "LSTM":
        state = [(torch.zeros(1, size), torch.zeros(1, size))] * 2

        def torch_step():
            state[0] = torch_cell(x, state[0])

        def kernel_step():
            state[1] = _VF.lstm_cell(x, state[1], *weights)
    else:
        state = [torch.zeros(1, size)] * 2

        def torch_step():
            state[0] = torch_cell(x, state[0])

        def kernel_step():
            state[1] = _VF.gru_cell(x, state[1], *weights)

    # same numbers from all three, or the timing means nothing
    with torch.no_grad():
        torch_step()
        y = stream(x)
        assert torch.allclose(state[0][0] if kind == "LSTM" else state[0], y, atol=1e-6)
    return {"torch.nn": _repeat(torch_step), "stream": _repeat(lambda: stream(x)), "kernel": _repeat(kernel_step)}


def language_model_jobs(size: int) -> dict:
    model = LanguageModel(LanguageModelConfig(vocab_size=65, cell="lstm", hidden_size=size, embedding_size=64)).eval()
    token = torch.tensor([[7]])
    _, state = model(token)
    held = [state]
    stream = LanguageModelStream(model, state=state)

    def model_step():
        _, held[0] = model(token, held[0])

    return {"model(token, state)": _repeat(model_step), "LanguageModelStream": _repeat(lambda: stream(token[0]))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (noisier)")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    repeats = args.repeats or (7 if args.quick else 25)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows, ok = [], True
    print(f"per call, batch 1, float32, 1 thread, no_grad; median of {repeats} runs of {CALLS} calls")
    print(f"{'cell':5} {'H':>4} {'torch.nn us':>12} {'stream us':>10} {'kernel us':>10} {'stream/torch.nn':>16} "
          f"{'stream/kernel':>14}")
    with torch.no_grad():
        for kind in ("LSTM", "GRU"):
            for size in SIZES:
                t = interleaved_medians(single_step_jobs(kind, size), repeats)
                us = {k: 1e6 * v / CALLS for k, v in t.items()}
                ratio = us["stream"] / us["torch.nn"]
                ok &= ratio <= BOUND
                rows.append({"cell": kind, "hidden_size": size, "microseconds_per_call": us,
                             "stream_over_torch_nn": ratio, "stream_over_kernel": us["stream"] / us["kernel"]})
                print(f"{kind:5} {size:4d} {us['torch.nn']:12.2f} {us['stream']:10.2f} {us['kernel']:10.2f} "
                      f"{ratio:16.3f} {us['stream'] / us['kernel']:14.3f}")
        print("\nper token, character language model (V=65, LSTM, embedding 64)")
        print(f"{'H':>4} {'model(token, state) us':>23} {'stream us':>10} {'speed-up':>9}")
        lm_rows = []
        for size in SIZES:
            t = interleaved_medians(language_model_jobs(size), repeats)
            us = {k: 1e6 * v / CALLS for k, v in t.items()}
            speedup = us["model(token, state)"] / us["LanguageModelStream"]
            lm_rows.append({"hidden_size": size, "microseconds_per_token": us, "speedup": speedup})
            print(f"{size:4d} {us['model(token, state)']:23.2f} {us['LanguageModelStream']:10.2f} {speedup:9.2f}")
    path = write_results("streaming", {
        "benchmark": "per-call time: rnnkit stream vs torch.nn single-step module (and the raw kernel)",
        "batch_size": 1, "dtype": "float32", "calls_per_run": CALLS, "repeats": repeats, "bound": BOUND,
        "rows": rows, "all_within_bound": bool(ok), "language_model": lm_rows})
    print(f"\nratio bound {BOUND}: {'met' if ok else 'NOT met'} -- results in {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
