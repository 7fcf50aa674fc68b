"""``rnnkit export``: a trained language model as an ONNX program that takes any batch and length."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .._torch_private import length_free_rnn_export
from ..models import load_language_model

HELP = "write a trained language model as an ONNX program"
DESCRIPTION = ("Export a trained language model with torch's ONNX exporter: the program takes token ids of any "
               "batch size and length and returns the logits and the final state (onnxruntime runs it without "
               "torch or rnnkit). Needs pip install 'rnnkit[export]'.")


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--format", choices=["onnx"], default="onnx", help="the format (onnx)")
    parser.add_argument("--checkpoint", choices=["best", "latest"], default="best")
    parser.add_argument("--out", metavar="PATH", help="where to write it (default RUN_DIR/model.onnx)")


def run(args) -> int:
    try:
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError:
        raise ValueError("exporting to ONNX needs the onnx and onnxscript packages: "
                         "pip install 'rnnkit[export]'") from None
    model, vocab, _ = load_language_model(args.run_dir, args.checkpoint)
    model.eval()
    out = Path(args.out) if args.out else Path(args.run_dir) / "model.onnx"
    example = torch.zeros(2, 8, dtype=torch.long)
    dims = ({0: torch.export.Dim("batch"), 1: torch.export.Dim("time")},)
    with warnings.catch_warnings(), length_free_rnn_export():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=dims, verbose=False)
    program.model = _shapes_from_the_input(program.model)
    program.save(str(out))
    states = "h" if model.config.cell != "lstm" else "h and c"
    if hasattr(model, "live"):                 # an ensemble: its members, or its snapshots so far
        count, noun = len(model.live()), "member" if model.cycles is None else "snapshot"
        outputs = (f"log-probabilities (batch, time, {len(vocab):,}) of the mean of its {count} {noun}"
                   f"{'s' if count > 1 else ''} and each {noun}'s final state")
    else:
        outputs = f"logits (batch, time, {len(vocab):,}) and the final state"
    print(f"wrote {out}: input token ids (batch, time) int64 from a {len(vocab):,}-token {vocab.level} "
          f"vocabulary; outputs {outputs} ({states}, (layers, batch, hidden) each), starting from zeros")
    return 0


def _shapes_from_the_input(model):
    """``model`` (an ONNX IR model) declaring each value's shape, the outputs' among them, as
    ONNX's shape inference derives it from the input's (batch, time), in place of the shapes
    the exporter recorded while tracing.

    Where torch traces its multi-layer RNN ops through their default decompositions (one step
    per time step of the example: see :func:`~rnnkit._torch_private.length_free_rnn_export`),
    the ONNX LSTM/GRU ops still take any length, but the program declared logits of (batch, 8,
    V), and onnxruntime warned "does not match actual shape" at every other length. A shape
    that inference cannot derive is left undeclared, never the traced one.
    """
    from onnxscript.ir.passes.common import ShapeInferencePass

    for graph in model.graphs():
        for node in graph:
            for value in node.outputs:
                value.shape = None
    return ShapeInferencePass(strict_mode=True, data_prop=True)(model).model
