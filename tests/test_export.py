"""Export: ONNX programs (the dynamo exporter) checked against onnxruntime at a batch and length
other than the traced ones, and torch.export programs against eager.

The fused engine's NumPy loops are invisible to exporters, so an exported program runs torch's
kernels for the cells that have one (a torch-like network in one multi-layer call, which the
ONNX exporter keeps free of the length when the batch comes first) and the step loop otherwise;
a program that fixed the length (a loop, torch's Elman RNN, torch.export's programs) holds for
the traced length only, and onnxruntime refuses any other (never a wrong answer).
"""
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch

import rnnkit
from rnnkit.cells import GatedCell
from rnnkit.models import LanguageModel, LanguageModelConfig, build_language_model

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def _onnx(model, example, path, dynamic=True):
    model.eval()
    shapes = ({0: torch.export.Dim("batch"), 1: torch.export.Dim("time")},) if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=shapes, verbose=False)
    program.save(str(path))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options)


def _onnx_in_a_fresh_process(model, example, folder):
    """:func:`_onnx` in a process of its own. In torch 2.13 an LSTM exported after another LSTM in
    the same process comes out with its length fixed to the traced one (plain torch.nn.LSTM too,
    and torch._dynamo.reset() does not undo it), so this test would pass or fail by test order:
    torch's exporter swaps in its length-free LSTM decomposition without emptying the op's dispatch
    cache (``rnnkit export`` empties it: :func:`rnnkit._torch_private.length_free_rnn_export`)."""
    torch.save({"model": model, "example": example}, folder / "model.pt")
    code = textwrap.dedent("""
        import sys, warnings, torch
        saved = torch.load(sys.argv[1], weights_only=False)
        model = saved["model"].eval()
        dims = ({0: torch.export.Dim("batch"), 1: torch.export.Dim("time")},)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (saved["example"],), dynamo=True, dynamic_shapes=dims, verbose=False)
        program.save(sys.argv[2])
    """)
    result = subprocess.run([sys.executable, "-c", code, str(folder / "model.pt"), str(folder / "model.onnx")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(folder / "model.onnx"), options)


def _run(session, x):
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


def _flat(outputs):
    out, state = outputs
    return [out, *(state if isinstance(state, tuple) else (state,))]


@pytest.mark.parametrize("make", [
    lambda: rnnkit.LSTM(8, 16, num_layers=2, bidirectional=True, batch_first=True),
    lambda: rnnkit.GRU(8, 16, num_layers=2, batch_first=True),
], ids=["lstm-2-bidirectional", "gru-2"])
def test_onnx_of_a_torch_like_network_runs_any_batch_and_length(make, tmp_path):
    model = make()
    session = _onnx_in_a_fresh_process(model, torch.randn(2, 5, 8), tmp_path)
    for shape in ((3, 11, 8), (1, 2, 8)):
        x = torch.randn(shape)
        got = _run(session, x)
        with torch.no_grad():
            expected = _flat(model(x))
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a, b.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_onnx_of_a_language_model_runs_any_batch_and_length(cell, tmp_path):
    config = LanguageModelConfig(vocab_size=40, hidden_size=16, embedding_size=8, cell=cell, num_layers=2,
                                 weight_drop=0.3, dropout=0.2)
    model = LanguageModel(config)
    session = _onnx(model, torch.randint(40, (2, 5)), tmp_path / "lm.onnx")
    tokens = torch.randint(40, (3, 13))
    got = _run(session, tokens)
    with torch.no_grad():
        expected = _flat(model(tokens))
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-4, atol=1e-5)


def test_onnx_of_an_ensemble_gives_its_mean_probabilities_and_every_members_state(tmp_path):
    torch.manual_seed(0)
    config = LanguageModelConfig(vocab_size=30, hidden_size=12, embedding_size=6, num_layers=2, members=2,
                                 dropout=0.3)
    model = build_language_model(config)
    session = _onnx(model, torch.randint(30, (2, 5)), tmp_path / "ensemble.onnx")
    tokens = torch.randint(30, (3, 11))
    got = _run(session, tokens)
    with torch.no_grad():
        log_p, state = model(tokens)
    expected = [log_p, *torch.utils._pytree.tree_leaves(state)]
    assert len(got) == len(expected) == 1 + 2 * 2                # log-probabilities, then (h, c) of each member
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("make", [lambda: rnnkit.Recurrent(GatedCell(8, 16)), lambda: rnnkit.ElmanRNN(8, 16, batch_first=True)],
                         ids=["gated-loop", "elman"])
@pytest.mark.filterwarnings("ignore:.*exported as the step loop")
def test_onnx_of_a_loop_holds_for_its_length_and_refuses_another(make, tmp_path):
    model = make()
    x = torch.randn(2, 5, 8)
    session = _onnx(model, x, tmp_path / "loop.onnx", dynamic=False)
    with torch.no_grad():
        np.testing.assert_allclose(_run(session, x)[0], model(x)[0].numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(Exception, match="dimension|shape"):
        _run(session, torch.randn(2, 7, 8))


@pytest.mark.filterwarnings("ignore:GatedCell. exported as the step loop")
def test_torch_export_of_the_default_cpu_engines_equals_eager():
    # torch.export decomposes torch's RNN ops step by step, so its programs fix the length (as
    # they do for torch.nn.GRU); the batch stays free
    for model in (rnnkit.GRU(8, 16, num_layers=2, batch_first=True).eval(), rnnkit.Recurrent(GatedCell(8, 16)).eval()):
        program = torch.export.export(model, (torch.randn(2, 5, 8),),
                                      dynamic_shapes=({0: torch.export.Dim("batch")},))
        other = torch.randn(3, 5, 8)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(other)[0], model(other)[0])


def test_exporting_a_loop_says_the_program_holds_for_the_traced_length():
    with pytest.warns(UserWarning, match=r"^GatedCell: exported as the step loop, unrolled over the 5 steps of the "
                                         r"example input; the program holds for that length only"):
        torch.export.export(rnnkit.Recurrent(GatedCell(8, 16)).eval(), (torch.randn(2, 5, 8),))
