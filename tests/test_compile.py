"""torch.compile of rnnkit models computes what eager computes: outputs and gradients.

The fused engine's recurrence enters the graph as one custom operator (rnnkit::fused_recurrence,
with its backward as another); torch's own sequence kernels run eagerly between compiled graphs;
everything else is compiled. Most cases
use the ``aot_eager`` backend (dynamo's capture and AOTAutograd, where a wrong trace would show)
to keep the suite fast; the models the issue found wrong go through inductor as a user's would.
"""
import pytest
import torch

import rnnkit
from rnnkit.cells import GRUCell
from rnnkit.models import LanguageModel, LanguageModelConfig

from conftest import cell_engine_cases

SHORTCUTS = (rnnkit.LSTM, rnnkit.GRU, rnnkit.ElmanRNN, rnnkit.GatedRNN, rnnkit.LeakyRNN)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _twins(make):
    a = make()
    b = make()
    b.load_state_dict(a.state_dict())
    return a, b


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _assert_compiled_equals_eager(make, x, *, backend="aot_eager", input_grad=True, train=False, rtol=1e-5):
    atol = rtol / 10
    eager, compiled = _twins(make)
    eager.train(train), compiled.train(train)
    floating = x.is_floating_point()
    xe = x.clone().requires_grad_(input_grad and floating)
    xc = x.clone().requires_grad_(input_grad and floating)
    torch.manual_seed(7)
    out = _first(eager(xe))
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    torch.manual_seed(7)
    out_c = _first(torch.compile(compiled, backend=backend)(xc))
    (out_c * torch.linspace(-1, 1, out_c.shape[-1])).sum().backward()
    assert torch.isfinite(out_c).all()
    torch.testing.assert_close(out_c, out, rtol=rtol, atol=atol)
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")
    if input_grad and floating:
        torch.testing.assert_close(xc.grad, xe.grad, rtol=rtol, atol=atol)


@pytest.mark.parametrize("shortcut", SHORTCUTS, ids=lambda c: c.__name__)
def test_every_shortcut_compiles_to_what_eager_computes(shortcut):
    _assert_compiled_equals_eager(lambda: shortcut(8, 16, num_layers=2), torch.randn(3, 7, 8))


@pytest.mark.parametrize("shortcut", (rnnkit.LSTM, rnnkit.GRU), ids=lambda c: c.__name__)
def test_inductor_compiles_the_lstm_and_gru_right_with_and_without_an_input_gradient(shortcut):
    # the GRU's CPU engine is fused: compiled, it gave NaN outputs and gradients; the LSTM's
    # native kernel crashed inductor on an input that needs no gradient
    for input_grad in (True, False):
        torch._dynamo.reset()
        _assert_compiled_equals_eager(lambda: shortcut(8, 16), torch.randn(3, 7, 8), backend="inductor",
                                      input_grad=input_grad)


CASES = cell_engine_cases()


@pytest.mark.parametrize("cell, engine", CASES, ids=lambda v: getattr(v, "__name__", v))
def test_a_recurrent_layer_compiles_right_on_each_engine(cell, engine):
    _assert_compiled_equals_eager(lambda: rnnkit.Recurrent(cell(8, 16), engine=engine), torch.randn(3, 7, 8))


@pytest.mark.parametrize("kind", ("lstm", "gru"))
def test_a_language_model_compiles_to_what_eager_computes(kind):
    make = lambda: LanguageModel(LanguageModelConfig(vocab_size=50, hidden_size=16, embedding_size=8,  # noqa: E731
                                                     cell=kind))
    _assert_compiled_equals_eager(make, torch.randint(50, (2, 12)), backend="inductor" if kind == "gru" else "aot_eager")


@pytest.mark.parametrize("engine", ["loop", "fused"])
def test_regularizers_compile_to_what_eager_computes_in_training(engine):
    from rnnkit.regularizers import VariationalDropout, Zoneout

    def make():
        return rnnkit.Recurrent(Zoneout(VariationalDropout(GRUCell(8, 16), 0.2, 0.3), 0.1), engine=engine)
    _assert_compiled_equals_eager(make, torch.randn(3, 7, 8), train=True)


def test_a_loop_layer_compiles_into_one_graph():
    explained = torch._dynamo.explain(rnnkit.Recurrent(GRUCell(8, 16), engine="loop"))(torch.randn(3, 7, 8))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


@pytest.mark.parametrize("make", [lambda: rnnkit.Recurrent(GRUCell(8, 16), engine="fused"),
                                  lambda: rnnkit.GRU(8, 16, num_layers=2, batch_first=True),
                                  lambda: LanguageModel(LanguageModelConfig(vocab_size=50, hidden_size=16,
                                                                            embedding_size=8, cell="gru"))],
                         ids=["fused-layer", "two-layer-gru", "language-model"])
def test_fused_layers_compile_into_one_graph(make):
    """The fused recurrence is one operator (rnnkit::fused_recurrence) inside the graph, no graph break."""
    model = make()
    x = torch.randint(50, (2, 7)) if isinstance(model, LanguageModel) else torch.randn(3, 7, 8)
    explained = torch._dynamo.explain(model)(x)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    ops = {str(node.target) for graph in explained.graphs for node in graph.graph.nodes
           if node.op == "call_function"}
    assert "rnnkit.fused_recurrence.default" in ops, sorted(ops)


@pytest.mark.parametrize("kind", ["elman-tanh", "leaky-learned", "rate-softplus-dale", "gated", "gru",
                                  "layernorm-gru", "lstm", "layernorm-lstm"])
def test_every_fused_kernel_compiles_to_what_eager_computes_under_every_regularizer(kind):
    from test_fused import CELLS, WRAPPERS

    # float64, so that only a wrong operator can tell the two apart: in float32 the compiled and eager
    # weight gradients of the layer-norm LSTM differed by 5e-6 (4e-5 relative) on an Intel Xeon, the
    # rounding of sums taken in another order
    def make():
        torch.manual_seed(3)
        return rnnkit.Recurrent(WRAPPERS["all"](CELLS[kind](8, 6, True), kind).double(), engine="fused")
    _assert_compiled_equals_eager(make, torch.randn(3, 7, 8, dtype=torch.float64), train=True, rtol=1e-10)


@pytest.mark.parametrize("kind", ["leaky-learned", "layernorm-lstm", "gru"])
def test_the_fused_operators_pass_torchs_operator_checks(kind):
    """torch.library.opcheck: schema, fake (meta) kernel against the real one, autograd registration."""
    from rnnkit.engines.fused.ops import fused_recurrence
    from test_fused import CELLS, WRAPPERS

    torch.manual_seed(0)
    cell = WRAPPERS["zoneout"](CELLS[kind](4, 5, True), kind).train()
    layer = rnnkit.Recurrent(cell, engine="fused")
    captured = []
    real = fused_recurrence._opoverload

    def spy(*args):
        captured.append(args)
        return real(*args)
    import rnnkit.engines.fused.ops as ops_module
    original = ops_module.fused_recurrence
    ops_module.fused_recurrence = spy
    try:
        torch.compile(layer, backend="eager")(torch.randn(2, 3, 4, dtype=torch.float64))
    finally:
        ops_module.fused_recurrence = original
    assert captured
    args = [a.detach().requires_grad_(a.is_floating_point() and a.numel() > 0) if isinstance(a, torch.Tensor) else
            [t.detach().requires_grad_(t.numel() > 0 and t.dim() < 3) for t in a] if isinstance(a, list) else a
            for a in captured[0]]
    torch.library.opcheck(fused_recurrence, args)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_inductor_takes_the_fused_operators_outputs_at_their_promised_strides(kind):
    """Large float32 weight gradients come from oneDNN as transposed views; inductor checks every
    operator output against the fake kernel's strides (forced here at a small size)."""
    from rnnkit.engines.fused import configured
    cell = {"lstm": rnnkit.cells.LSTMCell, "gru": GRUCell}[kind]
    with configured(numpy_gemm_max=-1):
        _assert_compiled_equals_eager(lambda: rnnkit.Recurrent(cell(8, 16), engine="fused"), torch.randn(3, 7, 8),
                                      backend="inductor")
