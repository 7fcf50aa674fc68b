"""Echo state networks: the reservoir cell, the closed-form readout, Mackey–Glass."""
import re

import numpy as np
import pytest
import torch

import rnnkit
from rnnkit.cells.reservoir import ReservoirCell, spectral_radius
from rnnkit.models.esn import EchoStateNetwork, mackey_glass, nrmse, ridge_regression


# ----- reservoir cell ----------------------------------------------------------------
@pytest.mark.parametrize("radius,sparsity,dtype,tol", [(0.9, 0.9, torch.float64, 1e-6),
                                                       (1.25, 0.5, torch.float64, 1e-6),
                                                       (0.9, 0.0, torch.float32, 1e-6)])
def test_spectral_radius_and_sparsity(radius, sparsity, dtype, tol):
    cell = ReservoirCell(3, 200, spectral_radius=radius, sparsity=sparsity, seed=1, dtype=dtype)
    assert abs(spectral_radius(cell.weight) - radius) < tol
    zeros = (cell.weight == 0).double().mean().item()
    assert abs(zeros - sparsity) < 1 / 200 ** 2 + 1e-12
    assert cell.weight.dtype == dtype and cell.weight_in.shape == (200, 3)


def test_scalings_and_seed():
    a = ReservoirCell(2, 30, input_scaling=0.3, bias_scaling=0.2, seed=7)
    b = ReservoirCell(2, 30, input_scaling=0.3, bias_scaling=0.2, seed=7)
    c = ReservoirCell(2, 30, seed=8)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.weight_in, b.weight_in)
    assert not torch.equal(a.weight, c.weight)
    assert a.weight_in.abs().max() <= 0.3 and a.bias.abs().max() <= 0.2 and a.bias.abs().max() > 0
    assert torch.count_nonzero(ReservoirCell(2, 30, seed=7).bias) == 0   # bias_scaling=0 default


def test_weights_are_untrained_buffers():
    cell = ReservoirCell(2, 20, seed=0)
    assert list(cell.parameters()) == []
    assert {"weight", "weight_in", "bias"} <= set(dict(cell.named_buffers()))
    x = torch.randn(3, 5, 2, requires_grad=True)
    out, _ = rnnkit.Recurrent(cell)(x)
    out.sum().backward()
    assert x.grad is not None
    assert all(b.grad is None and not b.requires_grad for b in cell.buffers())
    assert set(cell.state_dict()) == {"weight", "weight_in", "bias"}


def test_update_equation():
    cell = ReservoirCell(2, 6, sparsity=0.0, leak_rate=0.3, bias_scaling=0.5, seed=0, dtype=torch.float64)
    x, h = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    expected = 0.7 * h + 0.3 * torch.tanh(x @ cell.weight_in.T + h @ cell.weight.T + cell.bias)
    torch.testing.assert_close(cell(x, h), expected)
    assert cell.initial_state(4).dtype == torch.float64


def test_echo_state_property():
    cell = ReservoirCell(1, 100, spectral_radius=0.9, seed=3, dtype=torch.float64)
    layer = rnnkit.Recurrent(cell)
    u = torch.rand(1, 300, 1, dtype=torch.float64) * 2 - 1
    h0 = torch.rand(2, 100, dtype=torch.float64) * 2 - 1
    out, _ = layer(u.expand(2, -1, -1), h0)
    gap = (out[0] - out[1]).norm(dim=-1)
    assert gap[0] > 1e-2 and gap[-1] < 1e-8


# ----- readout -----------------------------------------------------------------------
def test_ridge_matches_normal_equations_and_lstsq():
    g = torch.Generator().manual_seed(0)
    feats, y = torch.randn(80, 6, generator=g), torch.randn(80, 2, generator=g)
    a = np.hstack([feats.double().numpy(), np.ones((80, 1))])
    lam = 0.3
    w = ridge_regression(feats, y, lam).numpy()
    analytic = np.linalg.inv(a.T @ a + lam * np.eye(7)) @ a.T @ y.double().numpy()
    np.testing.assert_allclose(w, analytic, rtol=1e-10, atol=1e-12)
    # ridge = lam is least squares on A stacked over sqrt(lam)·I with zero targets
    aug = np.vstack([a, np.sqrt(lam) * np.eye(7)])
    yaug = np.vstack([y.double().numpy(), np.zeros((7, 2))])
    np.testing.assert_allclose(w, np.linalg.lstsq(aug, yaug, rcond=None)[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ridge_regression(feats, y, 0.0).numpy(),
                               np.linalg.lstsq(a, y.double().numpy(), rcond=None)[0], rtol=1e-9, atol=1e-12)


def test_fit_uses_all_series_after_warmup_multi_output():
    esn = EchoStateNetwork(2, 3, reservoir_size=40, ridge=1e-3, warmup=5, seed=0)
    x = torch.randn(3, 20, 2)
    y = torch.randn(3, 20, 3)
    esn.fit(x, y)
    states, _ = esn.states(x)
    w = ridge_regression(states[:, 5:].reshape(-1, 40), y[:, 5:].reshape(-1, 3), 1e-3)
    torch.testing.assert_close(esn.readout_weight, w[:-1].T)
    torch.testing.assert_close(esn.readout_bias, w[-1])
    pred = esn.predict(x)
    assert pred.shape == (3, 20, 3)
    torch.testing.assert_close(pred, states @ w[:-1] + w[-1])
    # exactly representable targets (a linear map of the states) are recovered
    target = states @ torch.randn(40, 3, dtype=torch.float64) + 0.5
    exact = EchoStateNetwork(2, 3, reservoir_size=40, ridge=0.0, warmup=5, seed=0).fit(x, target)
    torch.testing.assert_close(exact.predict(x)[:, 5:], target[:, 5:], rtol=1e-6, atol=1e-6)


# ----- Mackey–Glass ------------------------------------------------------------------
@pytest.fixture(scope="module")
def series():
    return mackey_glass(2600, tau=17)


def test_mackey_glass_series(series):
    assert series.shape == (2600,) and series.dtype == torch.float64
    assert series.min().item() == -1.0 and series.max().item() == 1.0
    torch.testing.assert_close(mackey_glass(300), mackey_glass(300))
    assert series.diff().abs().max() < 0.5          # smooth at one-time-unit sampling
    assert series.std() > 0.3                       # not collapsed to a fixed point


ONE_STEP_BOUND = 1e-3       # measured: 2.7e-4 (seed 0)


def test_one_step_prediction(series):
    x = series[:2500].view(1, -1, 1)
    esn = EchoStateNetwork(1, 1, reservoir_size=500, ridge=1e-6, warmup=100, spectral_radius=0.9,
                           leak_rate=1.0, seed=0)
    esn.fit(x[:, :2000], x[:, 1:2001])
    pred = esn.predict(x[:, 2000:2499], state=esn.last_state)
    err = nrmse(pred, x[:, 2001:2500])
    assert err < ONE_STEP_BOUND, err


def test_closed_loop_generation(series):
    x = series.view(1, -1, 1)
    esn = EchoStateNetwork(1, 1, reservoir_size=500, ridge=1e-6, warmup=100, spectral_radius=0.9,
                           bias_scaling=0.5, seed=0)
    esn.fit(x[:, :2000], x[:, 1:2001])
    gen = esn.generate(x[:, :2001], 500)[0, :, 0]
    target = series[2001:2501]
    running = (((gen - target) ** 2).cumsum(0) / torch.arange(1, 501)).sqrt() / series.std()
    bad = (running >= 0.1).nonzero()
    horizon = 500 if len(bad) == 0 else bad[0].item()
    assert horizon >= 200, horizon                  # measured: all 500 steps below 0.1
    # the first generated step is the teacher-forced one-step prediction
    torch.testing.assert_close(gen[0], esn.predict(x[:, :2001])[0, -1, 0])


# ----- errors ------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,message", [
    ({"spectral_radius": 0.0}, "ReservoirCell: spectral_radius must be > 0, got 0.0"),
    ({"spectral_radius": -1}, "ReservoirCell: spectral_radius must be > 0, got -1"),
    ({"leak_rate": 0.0}, "ReservoirCell: leak_rate must lie in (0, 1], got 0.0"),
    ({"leak_rate": 1.5}, "ReservoirCell: leak_rate must lie in (0, 1], got 1.5"),
    ({"sparsity": 1.0}, "ReservoirCell: sparsity (the fraction of zero recurrent weights) "
                        "must lie in [0, 1), got 1.0"),
    ({"sparsity": -0.1}, "ReservoirCell: sparsity (the fraction of zero recurrent weights) "
                         "must lie in [0, 1), got -0.1"),
])
def test_cell_errors(kwargs, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        ReservoirCell(2, 10, **kwargs)


def test_degenerate_reservoir_error():
    with pytest.raises(ValueError, match=r"^ReservoirCell: the random recurrent matrix \(0 non-zeros"):
        ReservoirCell(1, 2, sparsity=0.9)


def test_esn_errors():
    esn = EchoStateNetwork(2, 1, reservoir_size=10, warmup=5, seed=0)
    with pytest.raises(ValueError, match=re.escape(
            "EchoStateNetwork: predict needs a readout; call fit(inputs, targets) first")):
        esn.predict(torch.randn(1, 8, 2))
    with pytest.raises(ValueError, match=re.escape(
            "EchoStateNetwork: expected inputs of shape (batch, time, 2), got (1, 8, 3)")):
        esn.fit(torch.randn(1, 8, 3), torch.randn(1, 8, 1))
    with pytest.raises(ValueError, match=re.escape(
            "EchoStateNetwork: expected targets with the inputs' (batch, time) = (1, 8), got (1, 7)")):
        esn.fit(torch.randn(1, 8, 2), torch.randn(1, 7, 1))
    with pytest.raises(ValueError, match=re.escape(
            "EchoStateNetwork: series of 5 steps leave nothing to fit after warmup=5; "
            "expected more than 5 steps")):
        esn.fit(torch.randn(1, 5, 2), torch.randn(1, 5, 1))
    esn.fit(torch.randn(1, 8, 2), torch.randn(1, 8, 1))
    with pytest.raises(ValueError, match=re.escape(
            "EchoStateNetwork: generate feeds outputs back as inputs and needs "
            "input_size == output_size, got 2 and 1")):
        esn.generate(torch.randn(1, 8, 2), 3)
    with pytest.raises(ValueError, match=re.escape("EchoStateNetwork: ridge must be >= 0, got -1")):
        EchoStateNetwork(1, 1, ridge=-1)
    with pytest.raises(ValueError, match=re.escape(
            "EchoStateNetwork: warmup must be an integer >= 0, got -2")):
        EchoStateNetwork(1, 1, warmup=-2)
