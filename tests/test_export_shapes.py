"""``rnnkit export``: the program declares the shapes it computes, at any batch and length.

torch's exporter traced its multi-layer RNN ops at the example's length (8) and declared logits
of (batch, 8, V); onnxruntime then warned "Expected shape from model of {-1,8,V} does not match
actual shape" at every other length (issue 32). The exports here run one after another in one
process, as the tests in tests/test_export.py do before them: no order may fix a length.
"""
import numpy as np
import pytest
import torch

from rnnkit.cli import main
from rnnkit.data.vocab import Vocabulary
from rnnkit.models import LanguageModelConfig, build_language_model, load_language_model
from rnnkit.train.checkpoint import save_checkpoint

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

LAYERS, HIDDEN = 2, 12


def _run_dir(folder, cell, **ensemble):
    """A run directory holding a checkpoint of an untrained language model (or an ensemble of two:
    members and snapshots export alike, through the ensemble's forward), as ``rnnkit train`` writes it."""
    vocab = Vocabulary.build("the quick brown fox jumps over the lazy dog")
    config = LanguageModelConfig(vocab_size=len(vocab), cell=cell, hidden_size=HIDDEN, embedding_size=6,
                                 num_layers=LAYERS, **ensemble)
    model = build_language_model(config)
    if config.snapshots > 1:
        model.start_cycle(1)                          # two snapshots so far
    save_checkpoint(folder, 1, model, {"model": config.to_dict(), "vocabulary": vocab.to_dict()}, {})
    return folder


def _dims(value):
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def _session(path):
    options = ort.SessionOptions()
    options.log_severity_level = 2                    # warnings and above, which onnxruntime's C++ writes to stderr
    return ort.InferenceSession(str(path), options)


def _no_warning(log):
    assert "does not match actual shape" not in log and "W:onnxruntime" not in log, log


@pytest.mark.parametrize("cell, ensemble", [("lstm", {}), ("gru", {"snapshots": 2})], ids=["lstm", "gru-snapshots"])
def test_exported_program_declares_the_inputs_batch_and_length_and_runs_any_without_warning(cell, ensemble, tmp_path,
                                                                                           capfd):
    run = _run_dir(tmp_path / "run", cell, **ensemble)
    assert main(["export", str(run)]) == 0
    model, vocab, _ = load_language_model(run)
    onnx.checker.check_model(str(run / "model.onnx"), full_check=True)

    program = onnx.load(str(run / "model.onnx"))
    (tokens,) = program.graph.input
    assert _dims(tokens) == ["batch", "time"]
    states = (2 if ensemble else 1) * (2 if cell == "lstm" else 1)
    assert [_dims(v) for v in program.graph.output] == \
        [["batch", "time", len(vocab)]] + [[LAYERS, "batch", HIDDEN]] * states

    capfd.readouterr()
    session = _session(run / "model.onnx")
    for shape in ((3, 3), (1, 8), (3, 13)):
        ids = torch.randint(len(vocab), shape)
        got = session.run(None, {tokens.name: ids.numpy()})
        with torch.no_grad():
            expected = torch.utils._pytree.tree_leaves(model(ids))
        assert len(got) == len(expected) == 1 + states
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a, b.numpy(), rtol=1e-4, atol=1e-5)
    _no_warning(capfd.readouterr().err)


def test_shapes_are_declared_from_the_input_in_place_of_the_traced_ones(tmp_path, capfd):
    # the way out where torch's length-free decompositions are missing (or RNNKIT_TORCH_PRIVATE=0):
    # a program declaring a dimension of the traced length, as the exporter then writes it
    from onnxscript import ir

    from rnnkit.commands.export import _shapes_from_the_input

    helper = onnx.helper
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["swapped"], perm=[1, 0]), helper.make_node("Relu", ["swapped"], ["y"])],
        "traced", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", "time"])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [8, "batch"])],
        value_info=[helper.make_tensor_value_info("swapped", onnx.TensorProto.FLOAT, [8, "batch"])])
    traced = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model = _shapes_from_the_input(ir.from_proto(traced))
    assert [str(d) for d in model.graph.outputs[0].shape] == ["time", "batch"]

    path = tmp_path / "declared.onnx"
    ir.save(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    capfd.readouterr()
    session = _session(path)
    for length in (3, 8, 13):
        x = np.random.default_rng(length).standard_normal((2, length)).astype(np.float32)
        np.testing.assert_array_equal(session.run(None, {"x": x})[0], np.maximum(x.T, 0))
    _no_warning(capfd.readouterr().err)
