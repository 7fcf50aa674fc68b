"""Every engine agrees with the reference ``loop`` engine: outputs, final state, all gradients."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

import rnnkit
from rnnkit.cells import Cell, ElmanCell, GatedCell, GRUCell, JordanCell, LeakyCell, LSTMCell
from rnnkit.engines import AUTO_PREFERENCE, ENGINES

from conftest import F64, assert_close

NATIVE_CELLS = {
    "elman-tanh": lambda x, h, bias: ElmanCell(x, h, bias, dtype=F64),
    "elman-relu": lambda x, h, bias: ElmanCell(x, h, bias, nonlinearity="relu", dtype=F64),
    "lstm": lambda x, h, bias: LSTMCell(x, h, bias, dtype=F64),
    "gru": lambda x, h, bias: GRUCell(x, h, bias, dtype=F64),
}


def run_with_grads(layer, x, state, lengths):
    x = x.clone().requires_grad_()
    state = tuple(s.clone().requires_grad_() for s in state)
    out, final = layer(x, state[0] if len(state) == 1 else state, lengths)
    final = (final,) if isinstance(final, torch.Tensor) else final
    # random projections of every result, so every gradient path carries signal
    g = torch.Generator().manual_seed(7)
    loss = (out * torch.randn(out.shape, generator=g, dtype=F64)).sum()
    for f in final:
        loss = loss + (f * torch.randn(f.shape, generator=g, dtype=F64)).sum()
    layer.zero_grad()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters()}
    grads["x"] = x.grad
    grads.update({f"state{i}": s.grad for i, s in enumerate(state)})
    return out.detach(), tuple(f.detach() for f in final), grads


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(sorted(NATIVE_CELLS)), batch=st.integers(1, 5), steps=st.integers(1, 9),
       input_size=st.integers(1, 6), hidden_size=st.integers(1, 7), bias=st.booleans(),
       reverse=st.booleans(), ragged=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_native_equals_loop(kind, batch, steps, input_size, hidden_size, bias, reverse, ragged, seed):
    torch.manual_seed(seed)
    cell = NATIVE_CELLS[kind](input_size, hidden_size, bias)
    x = torch.randn(batch, steps, input_size, dtype=F64)
    state = tuple(torch.randn(batch, hidden_size, dtype=F64) for _ in range(2 if kind == "lstm" else 1))
    lengths = torch.randint(1, steps + 1, (batch,)) if ragged else None
    native = rnnkit.Recurrent(cell, engine="native", reverse=reverse)
    loop = rnnkit.Recurrent(cell, engine="loop", reverse=reverse)
    assert_close(run_with_grads(native, x, state, lengths), run_with_grads(loop, x, state, lengths),
                 what=f"{kind} native vs loop")


# (cell, auto's engine on the CPU, on any other device): torch's kernels (cuDNN) off the CPU; on the
# CPU the fused engine for the GRU and Elman cells, whose torch CPU kernels it beats (benchmarks/engines.py);
# a cell with no kernel: its traced step on the CPU (benchmarks/any_cell.py), the loop elsewhere
@pytest.mark.parametrize("make, cpu, elsewhere", [
    (lambda: LSTMCell(3, 4), "native", "native"), (lambda: GRUCell(3, 4), "fused", "native"),
    (lambda: ElmanCell(3, 4), "fused", "native"), (lambda: ElmanCell(3, 4, nonlinearity="relu"), "fused", "native"),
    (lambda: GatedCell(3, 4), "fused", "fused"), (lambda: LeakyCell(3, 4), "fused", "fused"),
    (lambda: JordanCell(3, 4, output_size=2), "traced", "loop"),
])
def test_auto_picks_fastest_engine_that_runs_the_cell(make, cpu, elsewhere):
    layer = rnnkit.Recurrent(make())
    assert layer.engine == cpu
    assert (layer._engine.for_device("cpu"), layer._engine.for_device(torch.device("cuda"))) == (cpu, elsewhere)
    assert layer.to(torch.device("meta")).engine == elsewhere


def test_auto_runs_the_engine_of_the_inputs_device():
    """On the CPU a GRU layer on auto runs the fused engine (its Function is in the graph, and the
    result equals torch's kernel); on the meta device it runs torch's kernel (fused needs real memory)."""
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(GRUCell(3, 4, dtype=F64))
    x = torch.randn(2, 5, 3, dtype=F64)
    out, _ = layer(x)
    native_out, _ = rnnkit.Recurrent(layer.cell, engine="native")(x)
    assert _has_fused(out) and not _has_fused(native_out)
    meta_out, _ = rnnkit.Recurrent(GRUCell(3, 4, device="meta"))(torch.empty(2, 5, 3, device="meta"))
    assert meta_out.shape == (2, 5, 4) and meta_out.device.type == "meta"
    assert_close(out, native_out)


def test_auto_keeps_torchs_gru_kernel_for_cpu_inference_at_large_batches():
    """Measured: torch's CPU GRU loses to fused in training at every shape, wins inference at B >= 32."""
    layer = rnnkit.Recurrent(GRUCell(3, 4))
    small, large = torch.randn(1, 5, 3), torch.randn(16, 5, 3)
    auto = layer._engine
    assert [auto.choice(small).name, auto.choice(large).name] == ["fused", "fused"]     # weights need grads
    with torch.no_grad():
        assert [auto.choice(small).name, auto.choice(large).name] == ["fused", "native"]
    assert auto.choice(large, grad=False).name == "native" and auto.choice(large, grad=True).name == "fused"
    layer.requires_grad_(False)
    assert [auto.choice(large).name, auto.choice(large.requires_grad_()).name] == ["native", "fused"]
    elman = rnnkit.Recurrent(ElmanCell(3, 4))._engine                 # fused wins Elman inference too
    assert elman.choice(large, grad=False).name == "fused"
    with torch.no_grad():
        assert_close(layer(torch.ones(16, 5, 3))[0], rnnkit.Recurrent(layer.cell, engine="fused")(torch.ones(16, 5, 3))[0],
                     atol=1e-6)


def _has_fused(t) -> bool:
    """Whether the fused engine's autograd Function is in the graph behind ``t``."""
    seen, todo = set(), [t.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if "_FusedRun" in type(fn).__name__:
            return True
        todo += [f for f, _ in fn.next_functions]
    return False


def test_subclass_that_changes_the_maths_loses_the_native_kernel():
    class PeepholeLSTM(LSTMCell):
        def step(self, projected_t, state):
            h, c = super().step(projected_t, state)
            return h, 0.5 * c

    cell = PeepholeLSTM(3, 4)
    assert cell.native_mode() is None
    assert rnnkit.Recurrent(cell).engine == "traced"
    with pytest.raises(ValueError, match=r"engine 'native' cannot run this cell: PeepholeLSTM has no "
                                         r"fused torch kernel"):
        rnnkit.Recurrent(cell, engine="native")


def test_engine_registry_is_the_one_place_engines_are_named():
    assert set(AUTO_PREFERENCE) <= set(ENGINES)
    assert ENGINES["loop"].supports(GatedCell(2, 2)) is None


def test_loop_engine_runs_a_cell_defined_by_forward_only():
    class Accumulator(Cell):
        """s_t = s_{t-1} + x_t: the running sum, written with forward alone."""

        def __init__(self, size):
            super().__init__()
            self.input_size = self.hidden_size = self.state_sizes = size

        def forward(self, x_t, s):
            return s + x_t

    x = torch.randn(2, 6, 3, dtype=F64)
    layer = rnnkit.Recurrent(Accumulator(3), engine="loop")
    out, final = layer(x, lengths=[6, 4])
    assert_close(out[0], x[0].cumsum(0))
    assert_close(out[1, :4], x[1, :4].cumsum(0))
    assert torch.all(out[1, 4:] == 0)
    assert_close(final[1], x[1, :4].sum(0))


# ----- the hand-over: which engine runs an input (rnnkit/engines/select.py) --------------------------------
def test_engine_for_says_which_engine_runs_an_input_after_the_hand_over():
    x = torch.randn(2, 5, 3)
    fused = rnnkit.Recurrent(GRUCell(3, 4), engine="fused")
    traced = rnnkit.Recurrent(JordanCell(3, 4, output_size=2), engine="traced")
    lstm = rnnkit.Recurrent(LSTMCell(3, 4), engine="fused")
    assert (fused.engine_for(x), traced.engine_for(x), fused.engine_for(x[:0])) == ("fused", "traced", "loop")
    with torch.autocast("cpu", dtype=torch.bfloat16):            # fused computes in float32, traced hands over
        assert (fused.engine_for(x), traced.engine_for(x)) == ("fused", "loop")
    seen = []

    def loss(x):
        seen.extend([fused.engine_for(x), lstm.engine_for(x)])
        return fused(x)[0].sum() + lstm(x)[0].sum()
    torch.func.grad(loss)(x)                                        # torch.func sees through the step loop only
    assert seen == ["loop", "loop"]

    class Exported(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList([rnnkit.Recurrent(GatedCell(3, 4), engine="fused"), lstm])

        def forward(self, x):
            seen.extend(layer.engine_for(x) for layer in self.layers)
            return x
    seen.clear()
    torch.export.export(Exported(), (x,))
    assert seen == ["loop", "native"]                               # a torch kernel where the cell has one


def test_running_on_swaps_a_layers_engine_for_a_block_and_restores_it_after_an_error():
    layer = rnnkit.Recurrent(GRUCell(3, 4))
    auto = layer._engine
    with pytest.raises(KeyError):
        with layer.running_on("loop"):
            assert layer.engine == layer.engine_for(torch.randn(2, 5, 3)) == "loop"
            raise KeyError("inside")
    assert layer._engine is auto and layer.engine == "fused"
    with pytest.raises(ValueError, match="^Recurrent\\(GRUCell\\): unknown engine 'nope'"):
        with layer.running_on("nope"):
            pass
    assert layer._engine is auto
