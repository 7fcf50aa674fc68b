"""Regularizers do what their equations say, draw their masks once per run, and are off in evaluation."""
import re

import numpy as np
import pytest
import torch

import rnnkit
from rnnkit.cells import ElmanCell, GRUCell, LSTMCell
from rnnkit.cells.layernorm import LayerNormGRUCell, LayerNormLSTMCell
from rnnkit.cells.rate import RateCell
from rnnkit.models.language_model import LanguageModel, LanguageModelConfig
from rnnkit.regularizers import VariationalDropout, WeightDrop, Zoneout, embedding_dropout

from conftest import F64, assert_close


def steps_by_hand(cell, x, state, step):
    """Run ``step(t, x_t, state) -> state`` over (B, T, X); return the emitted outputs (B, T, H)."""
    outs = []
    for t in range(x.shape[1]):
        state = step(t, x[:, t], state)
        outs.append(cell.output(state))
    return torch.stack(outs, 1), state


# ----- variational dropout -----------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["loop", "fused"])
def test_variational_dropout_is_one_mask_per_sequence_on_inputs_and_recurrent_input(engine):
    base = LSTMCell(3, 5, dtype=F64)
    cell = VariationalDropout(base, input_dropout=0.5, hidden_dropout=0.5)
    x = torch.randn(4, 6, 3, dtype=F64)
    out, (h, c) = rnnkit.Recurrent(cell, engine=engine)(x)
    mx, mh = cell.masks["input"], cell.masks["hidden"]
    assert set(mx.unique().tolist()) <= {0.0, 2.0} and set(mh.unique().tolist()) <= {0.0, 2.0}
    assert mx.shape == (4, 3) and mh.shape == (4, 5)

    def step(t, x_t, state):                       # c is carried undropped; only W_hh (h ⊙ m_h)
        h, c = state
        gates = base.project_inputs(x_t * mx) + torch.nn.functional.linear(h * mh, base.weight_hh, base.bias_hh)
        i, f, g, o = gates.chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    want, (h_want, c_want) = steps_by_hand(base, x, base.initial_state(4), step)
    assert_close((out, h, c), (want, h_want, c_want))


def test_variational_masks_are_inverted_dropout_with_the_right_rate():
    cell = VariationalDropout(ElmanCell(200, 300, dtype=F64), input_dropout=0.25, hidden_dropout=0.6)
    cell.begin_sequence(100, 1)
    mx, mh = cell.masks["input"], cell.masks["hidden"]
    assert set(mx.unique().tolist()) == {0.0, 1 / 0.75} and set(mh.unique().tolist()) == {0.0, 1 / 0.4}
    assert abs((mx == 0).double().mean().item() - 0.25) < 0.01           # 20000 draws: std error 0.003
    assert abs((mh == 0).double().mean().item() - 0.6) < 0.01
    assert abs(mx.mean().item() - 1) < 0.02


def test_evaluation_turns_dropout_off():
    torch.manual_seed(3)
    base = GRUCell(3, 4, dtype=F64)
    x = torch.randn(2, 5, 3, dtype=F64)
    plain, _ = rnnkit.Recurrent(base, engine="loop")(x)
    for cell in (VariationalDropout(base, 0.5, 0.5), WeightDrop(base, 0.5)):
        train, _ = rnnkit.Recurrent(cell.train(), engine="fused")(x)
        assert (train - plain).abs().max() > 1e-3                         # it does drop in training
        for engine in ("loop", "fused"):
            out, _ = rnnkit.Recurrent(cell.eval(), engine=engine)(x)
            assert_close(out, plain)
        assert cell.masks in ({"input": None, "hidden": None}, {})


# ----- zoneout -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["loop", "fused"])
def test_zoneout_keeps_units_where_the_mask_says_and_uses_the_expectation_in_evaluation(engine):
    base = LSTMCell(3, 4, dtype=F64)
    cell = Zoneout(base, probability=(0.3, 0.6))
    x = torch.randn(2, 7, 3, dtype=F64)
    out, (h, c) = rnnkit.Recurrent(cell, engine=engine)(x)
    zh, zc = cell.masks
    assert zh.shape == zc.shape == (7, 2, 4) and set(torch.cat([zh, zc]).unique().tolist()) <= {0.0, 1.0}

    def step(t, x_t, state):
        new_h, new_c = base(x_t, state)            # h̃ from the new cell before zoneout (Krueger et al.)
        return zh[t] * state[0] + (1 - zh[t]) * new_h, zc[t] * state[1] + (1 - zc[t]) * new_c

    want = steps_by_hand(base, x, base.initial_state(2), step)
    assert_close((out, (h, c)), want)

    cell.eval()
    out, final = rnnkit.Recurrent(cell, engine=engine)(x)

    def expected(t, x_t, state):
        new_h, new_c = base(x_t, state)
        return 0.3 * state[0] + 0.7 * new_h, 0.6 * state[1] + 0.4 * new_c

    assert_close((out, final), steps_by_hand(base, x, base.initial_state(2), expected))


def test_zoneout_masks_have_the_rate_and_change_every_step():
    cell = Zoneout(ElmanCell(2, 100), 0.2)
    cell.begin_sequence(50, 8)
    (mask,) = cell.masks
    assert abs(mask.mean().item() - 0.2) < 0.01                          # 40000 draws
    assert not torch.equal(mask[0], mask[1])


# ----- weight drop -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["loop", "fused", "native"])
def test_weight_drop_is_one_dropconnect_mask_on_the_recurrent_weights(engine):
    base = GRUCell(3, 4, dtype=F64)
    cell = WeightDrop(base, 0.5)
    x = torch.randn(2, 5, 3, dtype=F64)
    out, h = rnnkit.Recurrent(cell, engine=engine)(x)
    (mask,) = cell.masks.values()
    assert mask.shape == (12, 4) and set(mask.unique().tolist()) == {0.0, 2.0}
    dropped = base.weight_hh.detach() * mask
    want = steps_by_hand(base, x, base.initial_state(2),
                         lambda t, x_t, s: torch.func.functional_call(base, {"weight_hh": dropped}, (x_t, s)))
    assert_close((out, h), want)
    out.sum().backward()
    assert torch.all(base.weight_hh.grad[mask == 0] == 0)                # dropped connections learn nothing
    assert base.weight_hh.grad[mask != 0].abs().sum() > 0


@pytest.mark.parametrize("bias", [True, False])
def test_weight_drop_runs_on_torchs_kernel_with_the_masked_weights(bias):
    """Around an LSTM (nested, on both weight matrices) the native engine runs torch's kernel on the
    masked weights: outputs, final state and every gradient equal the loop engine's with the same masks."""
    def run(engine):
        torch.manual_seed(4)
        base = LSTMCell(3, 5, bias=bias, dtype=F64)
        cell = WeightDrop(WeightDrop(base, 0.3, ("weight_ih", "weight_hh"), generator=torch.Generator().manual_seed(1)),
                          0.4, generator=torch.Generator().manual_seed(2))
        layer = rnnkit.Recurrent(cell, engine=engine)
        x = torch.randn(2, 6, 3, dtype=F64, requires_grad=True)
        out, (h, c) = layer(x, lengths=torch.tensor([6, 4]))
        (out.pow(2).sum() + h.sum() + 0.5 * c.sum()).backward()
        return out, h, c, x.grad, *(p.grad for p in base.parameters())
    assert rnnkit.Recurrent(WeightDrop(LSTMCell(3, 5))).engine == "native"
    assert_close(run("native"), run("loop"))


def test_weight_drop_on_a_rate_cell_drops_the_raw_weights_under_dale():
    cell = WeightDrop(RateCell(2, 6, activation="relu", dale=0.5, dtype=F64), 0.5)
    x = torch.randn(3, 4, 2, dtype=F64)
    torch.manual_seed(0)
    fast = rnnkit.Recurrent(cell, engine="fused")(x)
    (mask,) = cell.masks.values()
    torch.manual_seed(0)
    slow = rnnkit.Recurrent(cell, engine="loop")(x)
    assert torch.equal(mask, cell.masks["weight_hh"])
    assert_close(fast, slow)


# ----- masks: once per run, reproducible, checked -------------------------------------------------------------
def test_masks_are_drawn_once_per_run_and_a_generator_repeats_them():
    base = ElmanCell(3, 4)

    def make(seed):
        cell = ElmanCell(3, 4)
        cell.load_state_dict(base.state_dict())
        return Zoneout(VariationalDropout(cell, 0.5, 0.5, generator=torch.Generator().manual_seed(seed)), 0.5,
                       generator=torch.Generator().manual_seed(seed + 1))

    x = torch.randn(2, 6, 3)
    a, b, c = make(1), make(1), make(2)
    outs = [rnnkit.Recurrent(cell)(x)[0] for cell in (a, b, c)]
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])
    first = a.cell.masks["hidden"].clone()
    rnnkit.Recurrent(a)(x)
    assert not torch.equal(first, a.cell.masks["hidden"])                 # a new run, new masks


def test_stepping_by_hand_needs_begin_sequence_in_training():
    cell = Zoneout(ElmanCell(3, 4), 0.5)
    state = cell.initial_state(2)
    msg = ("Zoneout: no masks drawn for this sequence; rnnkit.Recurrent draws them once per run, so call "
           "cell.begin_sequence(batch_size, steps) before stepping the cell yourself (or use cell.eval())")
    with pytest.raises(RuntimeError, match=re.escape(msg)):
        cell(torch.randn(2, 3), state)
    cell.begin_sequence(2, 1)
    state = cell(torch.randn(2, 3), state)
    with pytest.raises(RuntimeError, match=re.escape("Zoneout: the masks were drawn for 1 steps and all are "
                                                     "used; call cell.begin_sequence for the next sequence")):
        cell(torch.randn(2, 3), state)
    cell.begin_sequence(5, 3)
    with pytest.raises(RuntimeError, match=re.escape("Zoneout: the masks were drawn for a batch of 5, got a "
                                                     "step with a batch of 2; call cell.begin_sequence again")):
        cell(torch.randn(2, 3), state)
    assert cell.eval()(torch.randn(2, 3), state).shape == (2, 4)


@pytest.mark.parametrize("make, error, msg", [
    (lambda: VariationalDropout(ElmanCell(2, 3), input_dropout=1.0), ValueError,
     "VariationalDropout: input_dropout must be a probability in [0, 1), got 1.0"),
    (lambda: Zoneout(ElmanCell(2, 3), -0.1), ValueError,
     "Zoneout: probability must be a probability in [0, 1), got -0.1"),
    (lambda: Zoneout(LSTMCell(2, 3), (0.1, 0.2, 0.3)), ValueError,
     "Zoneout: expected one probability per state tensor (2), got 3"),
    (lambda: WeightDrop(GRUCell(2, 3), 0.5, weights=("weight_xx",)), ValueError,
     "WeightDrop: GRUCell has no parameter 'weight_xx'; its parameters are ['bias_hh', 'bias_ih', "
     "'weight_hh', 'weight_ih']"),
    (lambda: WeightDrop(GRUCell(2, 3), 0.5, weights="weight_hh"), TypeError,
     "WeightDrop: weights must be a non-empty sequence of parameter names, got 'weight_hh'"),
    (lambda: VariationalDropout(RateCell(2, 3), hidden_dropout=0.5), TypeError,
     "VariationalDropout: hidden_dropout needs a cell whose hidden state enters weight_hh through "
     "GatedWeightsMixin (Elman, gated, LSTM, GRU, leaky, layer-norm cells), got RateCell; use input_dropout "
     "alone with it"),
    (lambda: Zoneout(torch.nn.Linear(2, 3)), TypeError,
     "Zoneout: expected an rnnkit.cells.Cell to wrap, got Linear"),
    (lambda: Zoneout(ElmanCell(2, 3), generator=0), TypeError,
     "Zoneout: generator must be a torch.Generator or None, got int"),
    (lambda: LayerNormLSTMCell(2, 3, eps=0), ValueError,
     "LayerNormLSTMCell: eps must be a positive finite number, got 0"),
])
def test_bad_arguments_are_explained(make, error, msg):
    with pytest.raises(error, match=re.escape(msg)):
        make()


# ----- embedding dropout -------------------------------------------------------------------------------------
def test_embedding_dropout_drops_whole_rows_scaled():
    weight = torch.randn(1000, 8)
    dropped = embedding_dropout(weight, 0.3, generator=torch.Generator().manual_seed(0))
    zero_rows = (dropped == 0).all(1)
    assert abs(zero_rows.double().mean().item() - 0.3) < 0.05
    assert_close(dropped[~zero_rows], weight[~zero_rows] / 0.7)
    assert embedding_dropout(weight, 0.3, training=False) is weight
    with pytest.raises(ValueError, match=re.escape("embedding_dropout: probability must be a probability in "
                                                   "[0, 1), got 1.5")):
        embedding_dropout(weight, 1.5)


def test_language_model_embedding_dropout_in_training_only_and_default_unchanged():
    config = LanguageModelConfig(vocab_size=20, hidden_size=8, embedding_size=6, embedding_dropout=0.5)
    assert LanguageModelConfig.from_dict(config.to_dict()) == config
    assert LanguageModelConfig(vocab_size=20).embedding_dropout == 0.0                # old checkpoints load
    torch.manual_seed(0)
    model = LanguageModel(config)
    tokens = torch.randint(20, (3, 7))
    model.eval()
    reference, _ = model(tokens)
    plain = LanguageModel(LanguageModelConfig(vocab_size=20, hidden_size=8, embedding_size=6))
    plain.load_state_dict(model.state_dict())
    assert torch.equal(plain.eval()(tokens)[0], reference)
    model.train()
    torch.manual_seed(1)
    dropped, _ = model(tokens)
    assert (dropped - reference).abs().max() > 1e-4
    with pytest.raises(ValueError, match=re.escape("LanguageModel: embedding_dropout must be a probability in [0, 1), got 1")):
        LanguageModelConfig(vocab_size=20, embedding_dropout=1)


# ----- layer-normalized cells against the equations, in NumPy ------------------------------------------------
def _ln(v, gain, shift, eps):
    mean = v.mean(-1, keepdims=True)
    var = ((v - mean) ** 2).mean(-1, keepdims=True)
    return gain * (v - mean) / np.sqrt(var + eps) + (0 if shift is None else shift)


def _sig(v):
    return 1 / (1 + np.exp(-v))


def test_layer_norm_lstm_cell_computes_ba_et_al():
    torch.manual_seed(0)
    cell = LayerNormLSTMCell(3, 4, eps=1e-3, dtype=F64)
    with torch.no_grad():
        for p in cell.parameters():
            p.add_(0.3 * torch.randn_like(p))
    p = {n: v.detach().numpy() for n, v in cell.named_parameters()}
    x, h, c = (torch.randn(2, n, dtype=F64) for n in (3, 4, 4))
    gates = (_ln(x.numpy() @ p["weight_ih"].T, p["ln_input_weight"], p["bias_ih"], 1e-3)
             + _ln(h.numpy() @ p["weight_hh"].T, p["ln_hidden_weight"], p["bias_hh"], 1e-3))
    i, f, g, o = np.split(gates, 4, axis=-1)
    c_new = _sig(f) * c.numpy() + _sig(i) * np.tanh(g)
    h_new = _sig(o) * np.tanh(_ln(c_new, p["ln_cell_weight"], p["ln_cell_bias"], 1e-3))
    got_h, got_c = cell(x, (h, c))
    assert_close((got_h, got_c), (torch.from_numpy(h_new), torch.from_numpy(c_new)))


def test_layer_norm_gru_cell_computes_its_equations():
    torch.manual_seed(1)
    cell = LayerNormGRUCell(3, 4, bias=False, dtype=F64)
    with torch.no_grad():
        for p in cell.parameters():
            p.add_(0.3 * torch.randn_like(p))
    p = {n: v.detach().numpy() for n, v in cell.named_parameters()}
    assert sorted(p) == ["ln_hidden_weight", "ln_input_weight", "weight_hh", "weight_ih"]
    x, h = torch.randn(2, 3, dtype=F64), torch.randn(2, 4, dtype=F64)
    xr, xz, xn = np.split(_ln(x.numpy() @ p["weight_ih"].T, p["ln_input_weight"], None, 1e-5), 3, axis=-1)
    hr, hz, hn = np.split(_ln(h.numpy() @ p["weight_hh"].T, p["ln_hidden_weight"], None, 1e-5), 3, axis=-1)
    r, z = _sig(xr + hr), _sig(xz + hz)
    n = np.tanh(xn + r * hn)
    assert_close(cell(x, h), torch.from_numpy((1 - z) * n + z * h.numpy()))


def test_layer_norm_lstm_starts_with_unit_gains_and_the_forget_shift():
    cell = LayerNormLSTMCell(3, 4)
    assert torch.equal(cell.ln_input_weight, torch.ones(16)) and torch.equal(cell.ln_cell_bias, torch.zeros(4))
    assert torch.equal(cell.bias_ih[4:8], torch.ones(4)) and torch.equal(cell.bias_hh, torch.zeros(16))
    assert rnnkit.Recurrent(cell).engine == "fused"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_masks_are_the_plain_uniform_draws(dtype):
    """On CPU the 0/1 draws go through NumPy buffers; they are exactly ``(torch.rand(...) < p)`` of the
    same generator state, in the requested dtype."""
    from rnnkit.regularizers import _bernoulli
    got = _bernoulli((7, 3, 5), 0.3, {"device": "cpu", "dtype": dtype}, torch.Generator().manual_seed(2))
    want = (torch.rand((7, 3, 5), generator=torch.Generator().manual_seed(2)) < 0.3).to(dtype)
    assert got.dtype == dtype and torch.equal(got, want)
    assert 0.15 < got.mean().item() < 0.45


@pytest.mark.parametrize("wrap", [lambda c: VariationalDropout(c, input_dropout=0.5, hidden_dropout=0.5),
                                  lambda c: Zoneout(c, 0.3), lambda c: WeightDrop(c, 0.5)],
                         ids=["variational", "zoneout", "weightdrop"])
def test_two_threads_training_one_wrapped_cell_each_keep_their_own_masks(wrap):
    """A run begun in one thread is not disturbed by another thread's run of another batch size (before:
    "the masks were drawn for a batch of 8" in the first thread)."""
    import threading

    cell = wrap(GRUCell(3, 4)).train()
    began, other_done, errors, results = threading.Event(), threading.Event(), [], {}

    def first():
        try:
            torch.manual_seed(1)
            cell.begin_sequence(16, 5)                    # this thread's run: batch 16 ...
            began.set()
            other_done.wait(30)                           # ... while the other thread runs batch 8
            x, h = torch.randn(16, 5, 3), cell.initial_state(16)
            for t in range(5):
                h = cell(x[:, t], h)
            results["first"] = h
        except Exception as error:                        # reported below, in the main thread
            errors.append(error)

    thread = threading.Thread(target=first)
    thread.start()
    began.wait(30)
    out, _ = rnnkit.Recurrent(cell, engine="loop")(torch.randn(8, 5, 3))
    other_done.set()
    thread.join(30)
    assert errors == [] and results["first"].shape == (16, 4) and out.shape == (8, 5, 4)
