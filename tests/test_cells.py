"""Each cell computes the equation in its docstring, written here a second time, independently."""
import pytest
import torch
from torch import nn

import rnnkit
from rnnkit.cells import CELLS, ElmanCell, GatedCell, GRUCell, JordanCell, LeakyCell, LSTMCell

from conftest import F64, assert_close

B, X, H = 4, 3, 5


def _copy_torch_weights(ours, theirs):
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(theirs, name).copy_(getattr(ours, name))


@pytest.mark.parametrize("ours, theirs", [
    (lambda: ElmanCell(X, H, dtype=F64), lambda: nn.RNNCell(X, H, dtype=F64)),
    (lambda: ElmanCell(X, H, nonlinearity="relu", dtype=F64),
     lambda: nn.RNNCell(X, H, nonlinearity="relu", dtype=F64)),
    (lambda: GRUCell(X, H, dtype=F64), lambda: nn.GRUCell(X, H, dtype=F64)),
    (lambda: LSTMCell(X, H, dtype=F64), lambda: nn.LSTMCell(X, H, dtype=F64)),
])
def test_cell_step_equals_torch_cell(ours, theirs):
    ours, theirs = ours(), theirs()
    _copy_torch_weights(ours, theirs)
    x = torch.randn(B, X, dtype=F64)
    state = tuple(torch.randn(B, H, dtype=F64) for _ in range(len(ours.state_sizes)
                                                          if isinstance(ours.state_sizes, tuple) else 1))
    state = state if len(state) > 1 else state[0]
    assert_close(ours(x, state), theirs(x, state))


def test_gated_cell_is_its_equation():
    cell = GatedCell(X, H, dtype=F64)
    x, s = torch.randn(B, X, dtype=F64), torch.randn(B, H, dtype=F64)
    W_gx, W_sx = cell.weight_ih.split(H)
    W_gs, W_ss = cell.weight_hh.split(H)
    b_g = cell.bias_ih[:H] + cell.bias_hh[:H]
    b_s = cell.bias_ih[H:] + cell.bias_hh[H:]
    g = torch.sigmoid(x @ W_gx.T + s @ W_gs.T + b_g)
    expected = (1 - g) * s + g * torch.tanh(x @ W_sx.T + s @ W_ss.T + b_s)
    assert_close(cell(x, s), expected)


def test_leaky_cell_is_its_equation_with_per_unit_time_constants():
    alpha = torch.tensor([1.0, 0.5, 0.1, 0.01, 0.3], dtype=F64)
    cell = LeakyCell(X, H, alpha=alpha, dtype=F64)
    x, h = torch.randn(B, X, dtype=F64), torch.randn(B, H, dtype=F64)
    update = torch.tanh(x @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh)
    assert_close(cell(x, h), (1 - alpha) * h + alpha * update)


def test_leaky_cell_with_alpha_one_is_the_elman_cell():
    leaky, elman = LeakyCell(X, H, alpha=1.0, dtype=F64), ElmanCell(X, H, dtype=F64)
    elman.load_state_dict({k: v for k, v in leaky.state_dict().items() if not k.startswith("_")})
    x, h = torch.randn(B, X, dtype=F64), torch.randn(B, H, dtype=F64)
    assert_close(leaky(x, h), elman(x, h))


def test_learned_alpha_gets_gradients_and_stays_inside_the_unit_interval():
    cell = LeakyCell(X, H, alpha=0.2, learn_alpha=True, dtype=F64)
    layer = rnnkit.Recurrent(cell)
    opt = torch.optim.SGD(cell.parameters(), lr=50.0)
    for _ in range(5):
        out, _ = layer(torch.randn(B, 6, X, dtype=F64))
        opt.zero_grad()
        out.pow(2).sum().backward()
        assert cell.alpha_logit.grad.abs().sum() > 0
        opt.step()
    assert 0 < cell.alpha.min() and cell.alpha.max() < 1
    assert not torch.allclose(cell.alpha, torch.full((H,), 0.2, dtype=F64))


def test_lstm_forget_bias_starts_at_one_by_default_and_is_configurable():
    cell = LSTMCell(X, H)
    assert_close(cell.bias_ih[H:2 * H] + cell.bias_hh[H:2 * H], torch.ones(H))
    cell = LSTMCell(X, H, forget_bias=3.0)
    assert_close(cell.bias_ih[H:2 * H] + cell.bias_hh[H:2 * H], torch.full((H,), 3.0))
    gated = GatedCell(X, H, gate_bias=-2.0)
    assert_close(gated.bias_ih[:H] + gated.bias_hh[:H], torch.full((H,), -2.0))
    plain = LSTMCell(X, H, forget_bias=None)
    assert plain.bias_ih[H:2 * H].abs().max() <= 1 / H ** 0.5


def test_jordan_state_is_its_previous_output():
    cell = JordanCell(X, 8, output_size=2, dtype=F64)
    x, y_prev = torch.randn(B, X, dtype=F64), torch.randn(B, 2, dtype=F64)
    h = torch.tanh(cell.input_to_hidden(x) + y_prev @ cell.output_to_hidden.weight.T)
    assert_close(cell(x, y_prev), cell.hidden_to_output(h))


def test_jordan_teacher_forcing_equals_free_running_when_fed_its_own_outputs():
    cell = JordanCell(X, 8, output_size=2, output_activation="tanh", dtype=F64)
    x = torch.randn(B, 7, X, dtype=F64)
    free_running, _ = rnnkit.Recurrent(cell)(x)
    assert_close(cell.teacher_forced(x, free_running), free_running)


def test_jordan_network_learns_with_teacher_forcing_and_no_bptt():
    # from s[t] (input) and the fed-back true s[t+1] predict s[t+2] = 2 cos(0.3) s[t+1] - s[t]
    t = torch.arange(0, 40, dtype=F64)
    phases = torch.rand(16, 1, dtype=F64) * 6.28
    series = torch.sin(0.3 * t + phases).unsqueeze(-1)                  # (16, 40, 1)
    x, targets = series[:, :-2], series[:, 2:]
    cell = JordanCell(1, 16, output_size=1, dtype=F64)
    opt = torch.optim.Adam(cell.parameters(), lr=0.02)
    for _ in range(300):
        loss = (cell.teacher_forced(x, targets, initial_output=series[:, 1]) - targets).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 2e-3
    # closed loop, the model feeds back its own predictions; errors compound (exposure
    # bias), so only the first steps are held to a bound
    free_running, _ = rnnkit.Recurrent(cell)(x[:, :5], series[:, 1])
    assert (free_running - targets[:, :5]).pow(2).mean().item() < 1e-2


@pytest.mark.parametrize("name", sorted(CELLS))
def test_every_cell_runs_every_shape_in_float32(name):
    kwargs = {"output_size": 2} if name == "jordan" else {}
    cell = CELLS[name](X, H, **kwargs)
    out, final = rnnkit.Recurrent(cell)(torch.randn(B, 6, X))
    assert out.shape == (B, 6, cell.output_size) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
