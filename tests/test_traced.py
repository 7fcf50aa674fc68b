"""The traced engine: any cell's step, traced once, equals the loop engine in float64 (outputs, final
states and every gradient), on generated NumPy code and on the torch graphs; untraceable steps fall
back to the loop with a reason."""
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnkit
from rnnkit.cells import (Cell, ElmanCell, GatedCell, GRUCell, IndRNNCell, JordanCell, LayerNormGRUCell,
                          LayerNormLSTMCell, LeakyCell, LinearLeakyCell, LSTMCell, MinGRUCell, MinimalGatedCell,
                          MinLSTMCell, NTMCell, PeepholeLSTMCell, PlainGRUCell, ProjectedLSTMCell, RateCell,
                          ReservoirCell, state_tensors)
from rnnkit.engines import traced
from rnnkit.engines.traced.engine import _CACHE, _TracedRun
from rnnkit.regularizers import VariationalDropout, WeightDrop, Zoneout

from test_fused import runs_of

USER_CELLS = (PlainGRUCell, PeepholeLSTMCell, IndRNNCell, MinimalGatedCell)
BUILT_IN = (LSTMCell, GRUCell, ElmanCell, GatedCell, LeakyCell, RateCell, MinGRUCell, MinLSTMCell, LinearLeakyCell,
            LayerNormLSTMCell, LayerNormGRUCell, lambda x, h: JordanCell(x, h, 3),
            lambda x, h: ProjectedLSTMCell(x, h + 1, h), lambda x, h: ReservoirCell(x, h, leak_rate=0.5, sparsity=0.0, seed=1),
            lambda x, h: NTMCell(x, h, controller_size=5, memory_slots=4, memory_width=3))


@pytest.fixture(params=[True, False], ids=["numpy", "torch"])
def code(request):
    before = traced.SETTINGS.numpy
    traced.SETTINGS.numpy = request.param
    yield request.param
    traced.SETTINGS.numpy = before


def program_of(cell):
    (found,) = _CACHE[cell].graphs.values()
    return found


def run_both(cell, x, lengths=None, reverse=False, h0=None, traceable=True):
    """Outputs, final state tensors and gradients (input, initial state, parameters) on loop and traced; the
    traced run is checked to be the traced program's (no hand-over to the loop) when the step is ``traceable``."""
    results = {}
    for engine in ("loop", "traced"):
        layer = rnnkit.Recurrent(cell, engine=engine, reverse=reverse)
        assert layer.engine_for(x) == engine
        with runs_of(_TracedRun) as runs:
            out, final = layer(x, h0, lengths=lengths)
        assert runs == (["_TracedRun"] if engine == "traced" and traceable else [])
        finals = state_tensors(final)
        weights = torch.sin(torch.arange(out.numel(), dtype=out.dtype)).reshape(out.shape)
        loss = (out * weights).sum() + sum((f * f.cos()).sum() for f in finals)
        wrt = [x, *([] if h0 is None else state_tensors(h0)), *cell.parameters()]
        grads = torch.autograd.grad(loss, wrt, allow_unused=True)
        results[engine] = (out, finals, grads)
    return results["loop"], results["traced"]


def assert_equal(reference, ours, tol=1e-10):
    for a, b in zip([reference[0], *reference[1], *reference[2]], [ours[0], *ours[1], *ours[2]], strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(b, a, rtol=tol, atol=tol)


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(USER_CELLS + BUILT_IN[:12]), batch=st.integers(1, 4), steps=st.integers(1, 7),
       sizes=st.tuples(st.integers(1, 5), st.integers(1, 6)), reverse=st.booleans(), ragged=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_user_and_built_in_cells_equal_the_loop_in_float64(kind, batch, steps, sizes, reverse, ragged, seed):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    cell = kind(*sizes).double()
    x = torch.randn(batch, steps, sizes[0], generator=gen, dtype=torch.float64, requires_grad=True)
    h0 = tuple(torch.randn(batch, s, generator=gen, dtype=torch.float64, requires_grad=True)
               for s in ((cell.state_sizes,) if isinstance(cell.state_sizes, int) else cell.state_sizes))
    h0 = h0[0] if len(h0) == 1 else h0
    lengths = torch.randint(1, steps + 1, (batch,), generator=gen) if ragged else None
    assert_equal(*run_both(cell, x, lengths, reverse, h0))


@pytest.mark.parametrize("kind", USER_CELLS + BUILT_IN)
def test_every_cell_equals_the_loop_on_both_codes(kind, code):
    torch.manual_seed(0)
    cell = kind(5, 7).double()
    x = torch.randn(3, 6, 5, dtype=torch.float64, requires_grad=True)
    assert_equal(*run_both(cell, x, lengths=torch.tensor([6, 4, 1])))
    graphs, program = program_of(cell)
    torch_ops = (LayerNormLSTMCell, LayerNormGRUCell, BUILT_IN[-1])     # layer norm, the NTM's addressing: torch
    assert program.numpy == (code and kind not in torch_ops)
    assert traced.reason(cell) is None


def test_the_parameters_gradients_run_once_over_all_steps_for_row_independent_steps():
    cell = PlainGRUCell(4, 6).double()
    run_both(cell, torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True))
    assert program_of(cell).graphs.stacked


class BatchMixing(Cell):
    """A step that reads the other rows of the batch (their mean): the deferred gradients cannot be stacked."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.input_size, self.hidden_size, self.state_sizes = input_size, hidden_size, hidden_size
        self.weight = torch.nn.Parameter(torch.randn(hidden_size, hidden_size) / hidden_size)
        self.proj = torch.nn.Linear(input_size, hidden_size)

    def project_inputs(self, x):
        return self.proj(x)

    def step(self, p, h):
        h = h - h.mean(0)
        return torch.tanh(p + h @ self.weight)


def test_a_step_that_mixes_rows_runs_its_deferred_gradients_step_by_step_and_stays_right():
    cell = BatchMixing(3, 4).double()
    assert_equal(*run_both(cell, torch.randn(3, 5, 3, dtype=torch.float64, requires_grad=True)))
    assert not program_of(cell).graphs.stacked


class ValueDependent(Cell):
    def __init__(self):
        super().__init__()
        self.input_size = self.hidden_size = self.state_sizes = 2
        self.weight = torch.nn.Parameter(torch.eye(2))

    def forward(self, x, h):
        if h.sum() > 0:                     # control flow on a value: cannot be traced
            return torch.tanh(x + h @ self.weight)
        return torch.tanh(x - h @ self.weight)


class InPlace(ValueDependent):
    def forward(self, x, h):
        out = torch.tanh(x + h @ self.weight)
        out.mul_(0.5)                      # an intermediate updated in place: traced (functionalized)
        h.mul_(0.5)                        # an input updated in place: not traced
        return out


@pytest.mark.parametrize("kind, words", [
    (ValueDependent, r"step not traceable \(its control flow depends on a tensor's value \(GuardOnDataDependent"),
    (InPlace, r"step not traceable \(it updates an input in place \(a leaf Variable")])
def test_an_untraceable_step_falls_back_to_the_loop_with_its_reason(kind, words):
    cell = kind().double()
    x = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=kind is ValueDependent)
    with pytest.warns(UserWarning, match=words):
        if kind is ValueDependent:
            assert_equal(*run_both(cell, x, traceable=False))
        else:
            rnnkit.Recurrent(cell, engine="traced")(x)
    reason = traced.reason(cell)
    assert reason.startswith(f"{kind.__name__}: step not traceable (") and reason.endswith("ran on the loop engine")
    assert "\n" not in reason
    with warnings.catch_warnings():
        warnings.simplefilter("error")                # the warning comes once per cell
        rnnkit.Recurrent(cell, engine="traced")(x)


def test_a_cell_is_traced_once_per_shape_and_again_when_a_plain_attribute_changes():
    cell = rnnkit.cells.LeakyCell(3, 4).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    layer = rnnkit.Recurrent(cell, engine="traced")
    layer(x)
    layer(torch.randn(2, 9, 3, dtype=torch.float64))        # another length: the same graphs
    assert len(_CACHE[cell].graphs) == 1
    layer(torch.randn(3, 5, 3, dtype=torch.float64))        # another batch size: traced again
    assert len(_CACHE[cell].graphs) == 2


class Scaled(Cell):
    def __init__(self):
        super().__init__()
        self.input_size = self.hidden_size = self.state_sizes = 3
        self.scale = 1.0
        self.weight = torch.nn.Parameter(torch.randn(3, 3))

    def forward(self, x, h):
        return torch.tanh(x + self.scale * (h @ self.weight))


def test_a_changed_plain_attribute_is_a_new_trace_not_a_stale_number():
    cell = Scaled().double()
    x = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    assert_equal(*run_both(cell, x))
    cell.scale = 0.25
    assert_equal(*run_both(cell, x))


def test_stacks_bidirectional_layers_and_auto_take_the_traced_engine_for_a_users_cell():
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(PeepholeLSTMCell(3, 4))
    assert layer.engine == "traced"                            # auto, on the CPU, for a cell without a kernel
    fwd, bwd = PlainGRUCell(3, 4).double(), PlainGRUCell(3, 4).double()
    x = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    outs = {}
    for engine in ("loop", "traced"):
        net = rnnkit.Bidirectional(rnnkit.Recurrent(fwd, engine=engine), rnnkit.Recurrent(bwd, engine=engine,
                                                                                             reverse=True))
        out, _ = net(x, lengths=torch.tensor([6, 3]))
        outs[engine] = (out, torch.autograd.grad(out.square().sum(), [x, *fwd.parameters(), *bwd.parameters()]))
    torch.testing.assert_close(outs["traced"][0], outs["loop"][0], rtol=1e-10, atol=1e-10)
    for a, b in zip(outs["loop"][1], outs["traced"][1]):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)


WRAPPERS = {"zoneout": lambda c: Zoneout(c, 0.3), "weightdrop": lambda c: WeightDrop(c, 0.4),
            "input-dropout": lambda c: VariationalDropout(c, input_dropout=0.3),
            "nested": lambda c: Zoneout(WeightDrop(VariationalDropout(c, input_dropout=0.2), 0.3), 0.2)}


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("wrap", WRAPPERS.values(), ids=WRAPPERS.keys())
@pytest.mark.parametrize("kind", [PlainGRUCell, PeepholeLSTMCell])
def test_regularizer_wrappers_around_a_users_cell_equal_the_loop(kind, wrap, training, code):
    torch.manual_seed(0)
    cell = wrap(kind(4, 5).double()).train(training)
    x = torch.randn(3, 6, 4, dtype=torch.float64, requires_grad=True)
    results = {}
    for engine in ("loop", "traced"):
        torch.manual_seed(7)                                  # the same masks for both runs
        out, final = rnnkit.Recurrent(cell, engine=engine)(x, lengths=torch.tensor([6, 5, 2]))
        loss = (out * out.sin()).sum() + sum(f.square().sum() for f in state_tensors(final))
        results[engine] = [out, *torch.autograd.grad(loss, [x, *cell.parameters()])]
    for a, b in zip(results["loop"], results["traced"]):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)


def test_hidden_dropout_reaches_the_traced_step_of_a_built_in_cell():
    torch.manual_seed(0)
    cell = VariationalDropout(GRUCell(4, 5).double(), input_dropout=0.2, hidden_dropout=0.4)
    x = torch.randn(3, 6, 4, dtype=torch.float64, requires_grad=True)
    results = {}
    for engine in ("loop", "traced"):
        torch.manual_seed(7)
        out, _ = rnnkit.Recurrent(cell, engine=engine)(x)
        results[engine] = [out, *torch.autograd.grad(out.square().sum(), [x, *cell.parameters()])]
    for a, b in zip(results["loop"], results["traced"]):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)


def test_unknown_wrappers_and_double_backward_are_refused_with_the_reason():
    class Clipped(Zoneout):
        def forward(self, x_t, state):
            return super().forward(x_t, state).clamp(-1, 1)

        def run_masks(self, steps, like):
            return None

    wrapped = Clipped(PlainGRUCell(3, 4), 0.1)
    assert rnnkit.Recurrent(wrapped).engine == "loop"
    with pytest.raises(ValueError, match="engine 'traced' cannot run this cell: Clipped is a cell wrapper the "
                                         "traced engine does not know"):
        rnnkit.Recurrent(wrapped, engine="traced")
    cell = PlainGRUCell(3, 4)
    x = torch.randn(2, 3, 3, requires_grad=True)
    out, _ = rnnkit.Recurrent(cell, engine="traced")(x)
    with pytest.raises(RuntimeError, match="traced engine: its backward cannot itself be differentiated"):
        torch.autograd.grad(out.sum(), x, create_graph=True)


# ----- the compiled loops (numba): the NumPy program is their twin ----------------------------------
@pytest.fixture
def compile_at_once(tmp_path_factory, monkeypatch):
    pytest.importorskip("numba")
    monkeypatch.setenv("RNNKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "rnnkit-cache"))
    monkeypatch.setattr(traced.SETTINGS, "compile_after", 0)


@pytest.mark.parametrize("kind", [PlainGRUCell, PeepholeLSTMCell, IndRNNCell, MinLSTMCell])
def test_compiled_loops_equal_the_numpy_twin_and_the_loop(kind, compile_at_once):
    from rnnkit.engines.traced.compiled import CompiledProgram

    torch.manual_seed(0)
    cell = kind(4, 6).double()
    x = torch.randn(3, 7, 4, dtype=torch.float64, requires_grad=True)
    h0 = tuple(torch.randn(3, 6, dtype=torch.float64, requires_grad=True) for _ in state_tensors(cell.initial_state(1)))
    h0 = h0[0] if len(h0) == 1 else h0
    for lengths in (None, torch.tensor([7, 3, 1])):
        reference, ours = run_both(cell, x, lengths, False, h0)
        assert isinstance(program_of(cell).program, CompiledProgram)
        assert_equal(reference, ours)
    traced.SETTINGS.compile_after = None                     # the NumPy twin, on the same graphs
    twin = rnnkit.Recurrent(kind(4, 6).double(), engine="traced")
    twin.load_state_dict(rnnkit.Recurrent(cell).state_dict())
    a, _ = rnnkit.Recurrent(cell, engine="traced")(x, h0)
    b, _ = twin(x, h0)
    assert type(program_of(twin.cell).program).__name__ == "Program"
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_a_program_compiles_after_its_steps_and_not_for_large_steps_or_without_numba(monkeypatch):
    from rnnkit.engines.traced import compiled

    monkeypatch.setattr(traced.SETTINGS, "compile_after", 10)
    calls = []
    monkeypatch.setattr(compiled, "compile_program", lambda *args: calls.append(args[1].shape) or None)
    layer = rnnkit.Recurrent(PlainGRUCell(3, 4), engine="traced")
    layer(torch.randn(2, 6, 3))
    assert calls == []                                       # 6 steps run, fewer than 10
    layer(torch.randn(2, 6, 3))
    assert calls == [(6, 2, 12)]                             # 12 steps: compiled (here: declined) once
    layer(torch.randn(2, 6, 3))
    assert len(calls) == 1
    monkeypatch.undo()
    big = PlainGRUCell(64, 256)
    rnnkit.Recurrent(big, engine="traced")(torch.randn(32, 2, 64))
    entry = program_of(big)
    assert compiled.compile_program(entry.program, torch.randn(2, 32, 768), [torch.zeros(32, 256)],
                                    list(big.parameters())) is None           # (32, 768) values: NumPy's
    small = PlainGRUCell(3, 4)
    rnnkit.Recurrent(small, engine="traced")(torch.randn(2, 2, 3))
    monkeypatch.setitem(__import__("sys").modules, "numba", None)            # numba not installed
    assert compiled.compile_program(program_of(small).program, torch.randn(2, 2, 12), [torch.zeros(2, 4)],
                                    list(small.parameters())) is None


def test_the_trainer_trains_a_language_model_whose_cell_runs_traced(tmp_path):
    from rnnkit.models import LanguageModel, LanguageModelConfig
    from rnnkit.train import TrainConfig, Trainer

    torch.manual_seed(0)
    data = torch.arange(4000) % 7                          # a cycle: learnable to a loss near 0
    model = LanguageModel(LanguageModelConfig(vocab_size=7, cell="gru", hidden_size=16, embedding_size=8))
    (layer,) = [m for m in model.modules() if isinstance(m, rnnkit.Recurrent)]
    layer.cell = PlainGRUCell(8, 16)                       # a user's cell in place of the built-in GRU
    assert layer.set_engine("auto").engine == "traced"
    config = TrainConfig(batch_size=8, truncation=16, lr=1e-2, max_steps=150, eval_every=50, max_minutes=None)
    summary = Trainer(model, config, tmp_path, progress=False).fit(data[:3600], data[3600:])
    assert summary["validation_loss"] < 0.1                # chance is ln 7 = 1.95


def test_compiled_and_exported_traced_layers_equal_eager():
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(PeepholeLSTMCell(3, 4).double(), engine="traced")
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    want, (h, c) = layer(x)
    got, (h2, c2) = torch.compile(layer, backend="aot_eager")(x)
    torch.testing.assert_close((got, h2, c2), (want, h, c), rtol=1e-12, atol=1e-12)
    with pytest.warns(UserWarning, match="exported as the step loop"):
        program = torch.export.export(layer.eval(), (x,))
    torch.testing.assert_close(program.module()(x)[0], want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", [PlainGRUCell, PeepholeLSTMCell])
def test_step_graphs_compiled_by_inductor_equal_the_loop(kind, monkeypatch):
    """The path of CUDA (torch graphs, the per-step ones compiled by torch.compile), forced on the CPU."""
    monkeypatch.setattr(traced.SETTINGS, "numpy", False)
    monkeypatch.setattr(traced.SETTINGS, "inductor", "on")
    torch.manual_seed(2)
    cell = kind(3, 4).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reference, ours = run_both(cell, x, lengths=torch.tensor([5, 3]))
    assert not [w for w in caught if "traced engine" in str(w.message)]   # a compile failure warns
    assert_equal(reference, ours)
    found = program_of(cell)
    assert type(found.program.fw).__name__ == "_Inductor" and found.program.fw.run is not found.program.fw.graph


def test_a_step_graph_that_does_not_compile_runs_uncompiled_with_a_warning():
    from rnnkit.engines.traced.lowering import _Inductor

    def breaks(x):                                   # a graph break: fullgraph compilation refuses it
        return (torch.tensor(x.tolist()) * 2,)
    runner = _Inductor(breaks, cuda_graphs=True)
    x = torch.arange(3.0)
    with pytest.warns(UserWarning, match=r"^traced engine: torch.compile failed on a step graph \(.*\); it runs "
                                         r"uncompiled$"):
        (first,) = runner(x)
    (second,) = runner(x + 1)
    assert runner.run is breaks and first.tolist() == [0.0, 2.0, 4.0] and second.tolist() == [2.0, 4.0, 6.0]


def test_outputs_of_graphs_replayed_as_cuda_graphs_are_copies(monkeypatch):
    """On CUDA a replay writes into the same output buffers every time; the loops keep every step's
    outputs, so they get copies. Simulated here: a stand-in for the compiled graph that reuses its buffer."""
    from rnnkit.engines.traced.lowering import _Inductor

    buffer = torch.empty(5)

    def replay(x):
        return (torch.sin(x, out=buffer),)
    monkeypatch.setattr(torch, "compile", lambda graph, **options: replay)
    runner = _Inductor(lambda x: (x.sin(),), cuda_graphs=True)
    x = torch.linspace(0, 1, 5)
    (a,), (b,) = runner(x), runner(x + 1)
    assert torch.equal(a, x.sin()) and torch.equal(b, (x + 1).sin())       # the first survives the second
