"""The fused engine equals the reference ``loop`` engine: outputs, final states and all gradients,
in float64, for every cell it runs and every regularizer around them (with the same masks)."""
import contextlib
import re

import pytest
import torch
from hypothesis import given, settings, strategies as st

import rnnkit
from rnnkit.cells import Cell, ElmanCell, GatedCell, GRUCell, JordanCell, LeakyCell, LSTMCell
from rnnkit.cells.layernorm import LayerNormGRUCell, LayerNormLSTMCell
from rnnkit.cells.rate import RateCell
from rnnkit.engines import AUTO_PREFERENCE, ENGINES
from rnnkit.engines import fused
from rnnkit.engines.fused import configured
from rnnkit.engines.fused.engine import _FusedRun
from rnnkit.regularizers import VariationalDropout, WeightDrop, Zoneout

from conftest import F64, assert_close

CELLS = {
    "elman-tanh": lambda x, h, bias: ElmanCell(x, h, bias, dtype=F64),
    "elman-relu": lambda x, h, bias: ElmanCell(x, h, bias, nonlinearity="relu", dtype=F64),
    "leaky": lambda x, h, bias: LeakyCell(x, h, alpha=torch.rand(h) * 0.9 + 0.05, bias=bias, dtype=F64),
    "leaky-learned": lambda x, h, bias: LeakyCell(x, h, alpha=torch.rand(h) * 0.9 + 0.05, learn_alpha=True,
                                                  bias=bias, dtype=F64),
    "gated": lambda x, h, bias: GatedCell(x, h, bias, dtype=F64),
    "gru": lambda x, h, bias: GRUCell(x, h, bias, dtype=F64),
    "lstm": lambda x, h, bias: LSTMCell(x, h, bias, dtype=F64),
    "layernorm-lstm": lambda x, h, bias: LayerNormLSTMCell(x, h, bias, dtype=F64),
    "layernorm-gru": lambda x, h, bias: LayerNormGRUCell(x, h, bias, dtype=F64),
    "rate-tanh": lambda x, h, bias: RateCell(x, h, dtype=F64),
    "rate-softplus-dale": lambda x, h, bias: RateCell(x, h + 1, tau=50.0, dt=10.0, activation="softplus",
                                                      dale=0.5, autapses=False, dtype=F64),
    "rate-relu": lambda x, h, bias: RateCell(x, h, tau=1.0, dt=1.0, activation="relu", dtype=F64),
}
_HIDDEN_DROPOUT_OK = ("elman", "leaky", "gated", "gru", "lstm", "layernorm")
WRAPPERS = {
    "none": lambda c, kind: c,
    "zoneout": lambda c, kind: Zoneout(c, 0.3),
    "zoneout-per-tensor": lambda c, kind: Zoneout(c, (0.2, 0.5) if isinstance(c.state_sizes, tuple) else 0.4),
    "variational": lambda c, kind: VariationalDropout(c, 0.3, 0.4 if kind.startswith(_HIDDEN_DROPOUT_OK) else 0.0),
    "weightdrop": lambda c, kind: WeightDrop(c, 0.4),
    "weightdrop-both": lambda c, kind: WeightDrop(c, 0.3, weights=("weight_ih", "weight_hh")),
    "all": lambda c, kind: WeightDrop(Zoneout(VariationalDropout(
        c, 0.2, 0.25 if kind.startswith(_HIDDEN_DROPOUT_OK) else 0.0), 0.3), 0.3),
    "nested": lambda c, kind: Zoneout(Zoneout(c, 0.2), 0.3),
}


def run_with_grads(layer, x, state, lengths, seed):
    """Outputs, final state and every gradient of a random projection of both; the masks
    are drawn from the global generator, seeded, so that two runs see the same masks."""
    x = x.clone().requires_grad_()
    state = tuple(s.clone().requires_grad_() for s in state)
    torch.manual_seed(seed)
    out, final = layer(x, state[0] if len(state) == 1 else state, lengths)
    final = (final,) if isinstance(final, torch.Tensor) else final
    g = torch.Generator().manual_seed(7)
    loss = (out * torch.randn(out.shape, generator=g, dtype=F64)).sum()
    for f in final:
        loss = loss + (f * torch.randn(f.shape, generator=g, dtype=F64)).sum()
    layer.zero_grad()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}
    grads["x"] = x.grad
    grads.update({f"state{i}": s.grad for i, s in enumerate(state)})
    return out.detach(), tuple(f.detach() for f in final), grads


@contextlib.contextmanager
def runs_of(function):
    """The runs of an autograd Function (its ``forward``) inside the block, one entry each: proof that an
    engine's own kernel ran, not a step loop it handed over to."""
    calls, kept = [], vars(function)["forward"]
    real = function.forward

    def forward(ctx, *args):
        calls.append(function.__name__)
        return real(ctx, *args)
    function.forward = staticmethod(forward)
    try:
        yield calls
    finally:
        function.forward = kept


def masks_of(cell):
    found = []
    while hasattr(cell, "masks"):
        m = cell.masks
        found += list(m.values()) if isinstance(m, dict) else list(m)
        cell = cell.cell
    return [None if t is None else t.clone() for t in found]


def check_fused_equals_loop(kind, wrapper, batch, steps, input_size, hidden_size, bias, reverse, ragged,
                            training, seed):
    torch.manual_seed(seed)
    cell = WRAPPERS[wrapper](CELLS[kind](input_size, hidden_size, bias), kind).train(training)
    sizes = cell.state_sizes
    sizes = (sizes,) if isinstance(sizes, int) else sizes
    x = torch.randn(batch, steps, input_size, dtype=F64)
    state = tuple(torch.randn(batch, size, dtype=F64) for size in sizes)
    lengths = torch.randint(1, steps + 1, (batch,)) if ragged else None
    fast = rnnkit.Recurrent(cell, engine="fused", reverse=reverse)
    slow = rnnkit.Recurrent(cell, engine="loop", reverse=reverse)
    assert (fast.engine_for(x), slow.engine_for(x)) == ("fused", "loop")        # no hand-over: fused runs x
    with runs_of(_FusedRun) as runs:
        got = run_with_grads(fast, x, state, lengths, seed)
    assert runs == ["_FusedRun"]                                                 # its kernel, once

    fast_masks = masks_of(cell)
    want = run_with_grads(slow, x, state, lengths, seed)
    assert_close(fast_masks, masks_of(cell), what="masks")
    assert_close(got, want, what=f"{wrapper}({kind}) fused vs loop")


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(sorted(CELLS)), wrapper=st.sampled_from(sorted(WRAPPERS)), batch=st.integers(1, 4),
       steps=st.integers(1, 7), input_size=st.integers(1, 5), hidden_size=st.integers(1, 6), bias=st.booleans(),
       reverse=st.booleans(), ragged=st.booleans(), training=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_fused_equals_loop(kind, wrapper, batch, steps, input_size, hidden_size, bias, reverse, ragged, training,
                           seed):
    check_fused_equals_loop(kind, wrapper, batch, steps, input_size, hidden_size, bias, reverse, ragged,
                            training, seed)


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_every_cell_with_every_regularizer_at_once(kind):
    """Each cell once under all regularizers, ragged and reversed (hypothesis samples the rest)."""
    check_fused_equals_loop(kind, "all", 3, 6, 4, 5, True, True, True, True, seed=11)


@pytest.fixture
def torch_loops():
    """The loops on torch operations (the path of GPUs and other dtypes), in small time chunks."""
    with configured(backend="torch", chunk_elements=7):
        yield


@pytest.fixture
def small_chunks_torch_gemm():
    """NumPy loops with torch's GEMM (the large-step path), in chunks of one or two steps."""
    with configured(numpy_gemm_max=-1, chunk_elements=7):
        yield


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_torch_loops_equal_loop(kind, torch_loops):
    check_fused_equals_loop(kind, "all", 3, 6, 4, 5, True, False, True, True, seed=5)
    check_fused_equals_loop(kind, "zoneout", 2, 5, 3, 4, False, True, False, False, seed=6)


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_chunked_backward_with_torch_gemm_equals_loop(kind, small_chunks_torch_gemm):
    check_fused_equals_loop(kind, "all", 3, 7, 4, 5, True, False, True, True, seed=8)


@pytest.mark.skipif(fused.onednn() is None, reason="this torch build has no oneDNN matmul")
@pytest.mark.parametrize("kind", sorted(CELLS))
def test_onednn_steps_equal_blas_steps(kind):
    """Large float32 steps take oneDNN's matmul (step GEMMs and the weight gradient); its slow twin is
    torch.mm. The two runs agree to float32 rounding in outputs, states and every gradient."""
    torch.manual_seed(3)
    cell = WRAPPERS["all"](CELLS[kind](4, 5, True), kind).train().float()
    sizes = cell.state_sizes
    sizes = (sizes,) if isinstance(sizes, int) else sizes
    x = torch.randn(3, 6, 4)
    state = tuple(torch.randn(3, size) for size in sizes)
    lengths = torch.tensor([6, 2, 5])
    layer = rnnkit.Recurrent(cell, engine="fused")
    linear, reorder = fused.onednn()
    calls = []

    def counted(*args):
        calls.append(args[0].shape[0])
        return linear(*args)

    with configured(numpy_gemm_max=-1, chunk_elements=7, onednn=(counted, reorder)):
        got = run_with_grads(layer, x, state, lengths, seed=9)
    assert calls.count(3) >= 6, f"the step GEMMs (3 rows) did not go to oneDNN: {calls}"
    with configured(numpy_gemm_max=-1, chunk_elements=7, onednn=None):
        want = run_with_grads(layer, x, state, lengths, seed=9)
    assert_close(got, want, rtol=1e-5, atol=1e-5, what=f"{kind} oneDNN vs torch.mm")


def test_float32_matches_float64_reference():
    """Single precision takes the tanh-based sigmoid of the NumPy loops: close to the float64 run."""
    torch.manual_seed(0)
    cell = Zoneout(LSTMCell(4, 6, dtype=F64), (0.1, 0.2)).eval()
    x = torch.randn(3, 9, 4, dtype=F64)
    want, (h, c) = rnnkit.Recurrent(cell, engine="loop")(x)
    got, (h32, c32) = rnnkit.Recurrent(cell.float(), engine="fused")(x.float())
    assert got.dtype == torch.float32
    assert_close((got.double(), h32.double(), c32.double()), (want, h, c), rtol=1e-5, atol=1e-6)


def test_auto_prefers_native_then_fused_then_traced_then_loop():
    assert AUTO_PREFERENCE == ("native", "scan", "fused", "traced", "loop")

    class Accumulator(Cell):
        """s_t = s_{t-1} + x_t, written with forward only."""

        def __init__(self, size):
            super().__init__()
            self.input_size = self.hidden_size = self.state_sizes = size

        def forward(self, x_t, s):
            return s + x_t

    picks = {"lstm": rnnkit.Recurrent(LSTMCell(3, 4)).engine,
             "lstm+zoneout": rnnkit.Recurrent(Zoneout(LSTMCell(3, 4), 0.1)).engine,
             "lstm+variational": rnnkit.Recurrent(VariationalDropout(LSTMCell(3, 4), 0.1, 0.1)).engine,
             "lstm+weightdrop": rnnkit.Recurrent(WeightDrop(LSTMCell(3, 4))).engine,
             "layernorm-lstm": rnnkit.Recurrent(LayerNormLSTMCell(3, 4)).engine,
             "gated": rnnkit.Recurrent(GatedCell(3, 4)).engine,
             "leaky": rnnkit.Recurrent(LeakyCell(3, 4)).engine,
             "rate": rnnkit.Recurrent(RateCell(3, 4)).engine,
             "jordan": rnnkit.Recurrent(JordanCell(3, 4, output_size=2)).engine,
             "forward-only": rnnkit.Recurrent(Accumulator(3)).engine}
    assert picks == {"lstm": "native", "lstm+zoneout": "fused", "lstm+variational": "fused",
                     "lstm+weightdrop": "native", "layernorm-lstm": "fused", "gated": "fused", "leaky": "fused",
                     "rate": "fused", "jordan": "traced", "forward-only": "traced"}


def test_fused_runs_the_cells_of_the_issue():
    runs = {cls for cls in vars(rnnkit.cells).values() if isinstance(cls, type) and issubclass(cls, Cell)
            and cls.fused_kernel not in (Cell.fused_kernel, rnnkit.cells.base._unavailable)}
    assert runs == {ElmanCell, LeakyCell, GatedCell, GRUCell, LSTMCell, LayerNormLSTMCell, LayerNormGRUCell, RateCell}
    assert ENGINES["fused"].supports(Zoneout(WeightDrop(GRUCell(2, 3)), 0.1)) is None


def test_unsupported_cells_are_refused_with_the_reason():
    names = "elman, gated, gru, layernorm-gru, layernorm-lstm, leaky, lstm, rate"
    msg = (f"Recurrent(JordanCell): engine 'fused' cannot run this cell: JordanCell has no fused kernel "
           f"(fused runs cells whose fused_kernel() names one: {names}). Use engine='auto' or engine='loop'.")
    with pytest.raises(ValueError, match=re.escape(msg)):
        rnnkit.Recurrent(JordanCell(3, 4, output_size=2), engine="fused")

    class PeepholeLSTM(LSTMCell):
        def step(self, projected_t, state):
            h, c = super().step(projected_t, state)
            return h, 0.5 * c

    assert rnnkit.Recurrent(PeepholeLSTM(3, 4)).engine == "traced"
    with pytest.raises(ValueError, match=re.escape("PeepholeLSTM has no fused kernel")):
        rnnkit.Recurrent(Zoneout(PeepholeLSTM(3, 4), 0.1), engine="fused")

    class Renamed(GatedCell):                       # a subclass that keeps the maths keeps the kernel
        pass

    assert rnnkit.Recurrent(Renamed(3, 4)).engine == "fused"


def test_a_subclass_that_changes_the_recurrent_input_loses_the_kernel():
    class Doubled(GRUCell):
        def _recurrent_input(self, h):
            return 2 * h

    assert ENGINES["fused"].supports(Doubled(2, 3)) == (
        "Doubled has no fused kernel (fused runs cells whose fused_kernel() names one: elman, gated, gru, "
        "layernorm-gru, layernorm-lstm, leaky, lstm, rate)")


def test_unknown_wrapper_is_refused():
    class Clipped(Zoneout):
        def forward(self, x_t, state):
            return super().forward(x_t, state).clamp(-1, 1)

    assert ENGINES["fused"].supports(Clipped(GRUCell(2, 3))) == (
        "Clipped is a cell wrapper fused does not know (it runs wrappers that describe their masks, as "
        "VariationalDropout, Zoneout and WeightDrop do)")
    assert rnnkit.Recurrent(Clipped(GRUCell(2, 3))).engine == "loop"


def test_rate_noise_in_training_has_the_euler_maruyama_variance():
    """Unconnected units from zero: one step gives x_1 = σ √(2α) ξ, whatever the engine."""
    cell = RateCell(1, 400, tau=100.0, dt=20.0, noise_std=0.5, dtype=F64)
    with torch.no_grad():
        cell.weight_hh.zero_()
        cell.weight_ih.zero_()
    out, x1 = rnnkit.Recurrent(cell, engine="fused")(torch.zeros(50, 1, 1, dtype=F64))
    assert abs(x1.std().item() - 0.5 * (2 * 0.2) ** 0.5) < 0.02          # 20000 draws: std error ~0.002
    assert abs(x1.mean().item()) < 0.01
    cell.eval()
    assert torch.all(rnnkit.Recurrent(cell, engine="fused")(torch.zeros(5, 1, 1, dtype=F64))[1] == 0)


def test_double_backward_is_refused_not_silently_wrong():
    layer = rnnkit.Recurrent(GatedCell(2, 3, dtype=F64), engine="fused")
    x = torch.randn(2, 4, 2, dtype=F64, requires_grad=True)
    out, _ = layer(x)
    msg = ("fused engine: its backward cannot itself be differentiated (backward with create_graph=True); run "
           "this layer with engine='loop', or for an LSTMCell, GRUCell or ElmanCell engine='native' (on the CPU, "
           "engine='auto' trains GRU and Elman cells on fused)")
    with pytest.raises(RuntimeError, match=re.escape(msg)):
        torch.autograd.grad(out.sum(), x, create_graph=True)
    gru = rnnkit.GRU(2, 3, dtype=F64, batch_first=True)                         # auto: fused on the CPU
    with pytest.raises(RuntimeError, match=re.escape(msg)):
        torch.autograd.grad(gru(x)[0].sum(), x, create_graph=True)
    for layer in gru._runners():                              # as the message says: torch's kernel
        layer.set_engine("native")
    g, = torch.autograd.grad(gru(x)[0].pow(2).sum(), x, create_graph=True)
    assert g.requires_grad


def test_outputs_past_the_end_are_zero_and_the_final_state_is_the_last_valid_one():
    cell = Zoneout(LSTMCell(3, 4, dtype=F64), 0.5).eval()                 # the expectation: deterministic
    x = torch.randn(2, 6, 3, dtype=F64)
    layer = rnnkit.Recurrent(cell, engine="fused")
    out, (h, c) = layer(x, lengths=[6, 3])
    assert torch.all(out[1, 3:] == 0)
    alone, (h_alone, c_alone) = layer(x[1:, :3])
    assert_close((out[1:, :3], h[1:], c[1:]), (alone, h_alone, c_alone))


# ----- the compiled LSTM steps (numba) and their NumPy twin ---------------------------------------------------
LSTM_KINDS = ("lstm", "layernorm-lstm")

def _needs_numba():
    from rnnkit.engines.fused import lstm_compiled
    if not lstm_compiled.AVAILABLE:
        pytest.skip("numba is not installed (the fast extra)")


@pytest.fixture
def numpy_twin():
    """The LSTM kernels on their NumPy loops, the compiled steps switched off."""
    with configured(compiled="off"):
        yield


@pytest.fixture
def compiled_steps():
    """The compiled pointwise steps after NumPy GEMMs (the large-batch path), in float64 too."""
    _needs_numba()
    with configured(compiled="stepwise"):
        yield


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
@pytest.mark.parametrize("kind", LSTM_KINDS)
def test_numpy_twin_of_the_compiled_steps_equals_loop(kind, wrapper, numpy_twin):
    check_fused_equals_loop(kind, wrapper, 3, 6, 4, 5, True, False, True, True, seed=21)
    check_fused_equals_loop(kind, wrapper, 1, 4, 2, 3, False, True, False, False, seed=22)


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
@pytest.mark.parametrize("kind", LSTM_KINDS)
def test_compiled_steps_equal_loop(kind, wrapper, compiled_steps):
    check_fused_equals_loop(kind, wrapper, 3, 6, 4, 5, True, False, True, True, seed=23)
    check_fused_equals_loop(kind, wrapper, 2, 5, 3, 4, True, True, True, False, seed=24)


@pytest.mark.parametrize("kind", LSTM_KINDS)
def test_whole_sequence_compiled_loop_is_taken_and_equals_numpy_twin(kind, monkeypatch):
    """Small float64 steps run the whole sequence in one compiled call; its results are the NumPy
    loop's to rounding (the hypothesis test above compares both with the loop engine)."""
    _needs_numba()
    from rnnkit.engines.fused import lstm_compiled
    calls = []
    for name in ("forward", "backward"):
        original = getattr(lstm_compiled, name)
        monkeypatch.setattr(lstm_compiled, name, lambda *a, _f=original, _n=name: (calls.append(_n), _f(*a))[1])
    torch.manual_seed(4)
    cell = WRAPPERS["all"](CELLS[kind](3, 4, True), kind).train()
    x, state = torch.randn(2, 5, 3, dtype=F64), (torch.randn(2, 4, dtype=F64), torch.randn(2, 4, dtype=F64))
    layer = rnnkit.Recurrent(cell, engine="fused")
    got = run_with_grads(layer, x, state, torch.tensor([5, 3]), seed=3)
    assert calls == ["forward", "backward"]
    with configured(compiled="off"):
        want = run_with_grads(layer, x, state, torch.tensor([5, 3]), seed=3)
    assert_close(got, want, rtol=1e-12, atol=1e-12, what=f"{kind} compiled vs NumPy loop")


@pytest.mark.parametrize("stepwise", [False, True])
@pytest.mark.parametrize("kind", LSTM_KINDS)
def test_float32_compiled_steps_match_float64_loop(kind, stepwise):
    """float32 takes the rational tanh of the compiled steps: within float32 rounding of the float64 loop."""
    _needs_numba()
    torch.manual_seed(5)
    cell = WRAPPERS["all"](CELLS[kind](4, 6, True), kind).train()
    x, state = torch.randn(3, 9, 4, dtype=F64), (torch.randn(3, 6, dtype=F64), torch.randn(3, 6, dtype=F64))
    lengths = torch.tensor([9, 4, 7])
    want = run_with_grads(rnnkit.Recurrent(cell, engine="loop"), x, state, lengths, seed=6)
    cell = cell.float()
    with configured(compiled="stepwise" if stepwise else "auto"):
        got = run_with_grads(rnnkit.Recurrent(cell, engine="fused"), x.float(), tuple(s.float() for s in state),
                             lengths, seed=6)
    to64 = lambda v: {k: t.double() for k, t in v.items()} if isinstance(v, dict) else (  # noqa: E731
        tuple(t.double() for t in v) if isinstance(v, tuple) else v.double())
    assert_close(tuple(to64(v) for v in got), want, rtol=1e-4, atol=2e-5, what=f"float32 {kind}")


def test_compiled_float32_tanh():
    """The vectorizable float32 tanh: within 4e-7 of tanh everywhere, |tanh| <= 1, NaN kept, ±inf -> ±1,
    and the NumPy transcription (tanh32) agrees with the compiled one."""
    _needs_numba()
    import numba
    import numpy as np
    from rnnkit.engines.fused import lstm_compiled as _lstm_compiled

    @numba.njit(error_model="numpy", fastmath={"reassoc", "contract"})
    def apply(x, y):
        for j in range(x.shape[0]):
            y[j] = _lstm_compiled._tanh(x[j])

    x = np.concatenate([np.linspace(-12, 12, 400_001), [0.0, -0.0, 1e-30, -1e-30, 1e-8, np.inf, -np.inf, np.nan]])
    x = x.astype(np.float32)
    y = np.empty_like(x)
    apply(x, y)
    finite = np.isfinite(x)
    exact = np.tanh(x[finite].astype(np.float64))
    assert np.abs(y[finite] - exact).max() <= 4e-7
    assert np.abs(y[finite]).max() <= 1.0
    assert np.all(np.abs(y[finite] - exact) <= 4e-7 * np.maximum(np.abs(exact), 1e-30) + 1e-37)  # relative near 0
    assert y[-3] == 1.0 and y[-2] == -1.0 and np.isnan(y[-1])
    assert np.abs(_lstm_compiled.tanh32(x[finite]) - y[finite]).max() <= 8e-7       # FMAs round differently


def test_a_run_crosses_the_compiled_operator_as_text_and_comes_back_the_same():
    from rnnkit.engines.fused.adjoint import Run

    keep, mask = torch.rand(6, 2, 1), torch.ones(2, 3)
    run = Run((keep, None), mask, True, act="relu", phi="softplus", alpha_value=0.1 + 0.2, eps=1e-5)
    back = Run.decode(run.encode(), [keep, torch.empty(0)], mask)
    assert back.keep[0] is keep and back.keep[1] is None and back.mask is mask
    assert (back.binary, back.act, back.phi, back.alpha_value, back.eps) == (True, "relu", "softplus", 0.1 + 0.2, 1e-5)
    plain = Run.decode(Run((None,), None, False).encode(), [torch.empty(0)], torch.empty(0))
    assert (plain.keep, plain.mask, plain.binary, plain.act, plain.phi, plain.alpha_value, plain.eps) == \
        ((None,), None, False, None, None, None, 0.0)
