"""Mixed precision: every model runs under ``torch.autocast("cpu", torch.bfloat16)``, forward and
backward, and stays within bfloat16's rounding of the float32 result. The fused engine and the
NumPy input projection compute in float32 inside an autocast region (stated in the README); the
rest follows autocast's own rules."""
import pytest
import torch

import rnnkit
from rnnkit.cells import ElmanCell, GRUCell, LSTMCell
from rnnkit.models import LanguageModel, LanguageModelConfig

from conftest import cell_engine_cases


def _loss_and_grads(model, run):
    model.zero_grad()
    loss = run(model)
    loss.backward()
    return loss.float().item(), [p.grad.float().clone() for p in model.parameters()]


def _assert_autocast_close(model, run, rtol=0.05):
    full, full_grads = _loss_and_grads(model, run)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, mixed_grads = _loss_and_grads(model, run)
    assert mixed == pytest.approx(full, rel=rtol)
    for a, b in zip(mixed_grads, full_grads):
        assert torch.isfinite(a).all()
        assert (a - b).norm() <= 0.1 * b.norm() + 1e-6


@pytest.mark.parametrize("kind", ["lstm", "gru", "elman", "gated"])
@pytest.mark.parametrize("softmax", ["full", "adaptive"])
def test_a_language_model_trains_under_cpu_bfloat16_autocast(kind, softmax):
    config = LanguageModelConfig(vocab_size=60, hidden_size=32, embedding_size=16, cell=kind, softmax=softmax,
                                 num_layers=2,
                                 **({"cutoffs": [20, 40]} if softmax == "adaptive" else {}))
    model = LanguageModel(config)
    tokens = torch.randint(60, (4, 17))
    _assert_autocast_close(model, lambda m: m.loss(tokens[:, :-1], tokens[:, 1:])[0])


CASES = cell_engine_cases()


@pytest.mark.parametrize("cell, engine", CASES, ids=lambda v: getattr(v, "__name__", v))
def test_every_engine_runs_under_cpu_bfloat16_autocast(cell, engine):
    layer = rnnkit.Recurrent(cell(8, 16), engine=engine)
    head = torch.nn.Linear(16, 1)
    model = torch.nn.ModuleList([layer, head])
    x = torch.randn(4, 9, 8)
    _assert_autocast_close(model, lambda m: m[1](m[0](x)[0]).float().square().mean())


def test_a_stack_passes_bfloat16_outputs_of_one_engine_to_the_float32_kernels_of_the_next():
    stack = rnnkit.Stack([rnnkit.Recurrent(LSTMCell(8, 16), engine="native"),
                          rnnkit.Recurrent(GRUCell(16, 16), engine="fused"),
                          rnnkit.Recurrent(ElmanCell(16, 16), engine="loop")])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        first = stack.layers[0](torch.randn(2, 5, 8))[0]
    assert first.dtype == torch.bfloat16                  # torch's kernel follows autocast
    x = torch.randn(4, 9, 8)
    _assert_autocast_close(stack, lambda m: m(x)[0].float().square().mean())
