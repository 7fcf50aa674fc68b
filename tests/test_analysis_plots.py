"""Hidden-state analysis (PCA, unit responses, text features) and the plots of rnnkit.analysis."""
import re
import sys

import matplotlib
import numpy as np
import pytest
import torch

import rnnkit
from rnnkit.analysis.gradients import gradient_flow
from rnnkit.analysis.hidden import HiddenStates, hidden_pca, hidden_states, text_features, unit_responses
from rnnkit.analysis.jacobians import (forget_gate_product, jacobian_products, jacobian_spectrum,
                                       recurrent_eigenvalues, step_jacobians)
from rnnkit.analysis.plots import (plot_forget_gates, plot_gradient_flow, plot_jacobian_products,
                                   plot_pca_trajectory, plot_spectrum, plot_unit_responses)
from rnnkit.cells import LSTMCell
from rnnkit.reference import lstm_forward

matplotlib.use("Agg")
F64 = torch.float64
PNG = b"\x89PNG\r\n\x1a\n"


# ----- hidden states ----------------------------------------------------------------------------

def test_hidden_states_are_the_lstm_h_and_c_of_the_reference():
    cell = LSTMCell(3, 4, dtype=F64)
    x = torch.randn(2, 7, 3, dtype=F64)
    hidden = hidden_states(cell, x)
    params = {k: getattr(cell, k).detach().numpy() for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    reference = lstm_forward(params, x.transpose(0, 1).numpy(), None, None)
    expected = np.concatenate([reference.hs[1:], reference.cs[1:]], axis=-1).transpose(1, 0, 2)
    torch.testing.assert_close(hidden.states, torch.tensor(expected), rtol=1e-12, atol=1e-14)
    assert hidden.labels == ["h0", "h1", "h2", "h3", "c0", "c1", "c2", "c3"]
    assert hidden.state_sizes == (4, 4)


def test_hidden_states_of_a_deeper_layer_are_its_outputs():
    gru = rnnkit.GRU(3, 5, num_layers=2, dtype=F64, batch_first=True)
    x = torch.randn(2, 6, 3, dtype=F64)
    first, _ = gru.stack.layers[0](x)
    second, _ = gru.stack.layers[1](first)
    torch.testing.assert_close(hidden_states(gru, x, layer=1).states, second, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(hidden_states(gru, x, layer="stack.layers.0").states, first,
                               rtol=1e-12, atol=1e-14)


def test_pca_equals_the_eigendecomposition_of_the_covariance():
    mix = torch.randn(6, 6, dtype=F64)
    states = torch.randn(3, 40, 6, dtype=F64) @ mix                  # correlated units
    pca = hidden_pca(states, num_components=3)
    flat = states.reshape(-1, 6).numpy()
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(flat, rowvar=False))
    order = np.argsort(eigenvalues)[::-1][:3]
    np.testing.assert_allclose(pca.explained_variance.numpy(), eigenvalues[order], rtol=1e-10)
    np.testing.assert_allclose(pca.explained_variance_ratio.numpy(), eigenvalues[order] / eigenvalues.sum(),
                               rtol=1e-10)
    for k in range(3):                                                 # same axes, up to sign
        assert abs(float(pca.components[k] @ torch.tensor(eigenvectors[:, order[k]]))) == pytest.approx(1, abs=1e-9)
        assert pca.components[k, pca.components[k].abs().argmax()] > 0
    expected = (flat - flat.mean(0)) @ pca.components.numpy().T
    np.testing.assert_allclose(pca.projected.reshape(-1, 3).numpy(), expected, rtol=1e-10, atol=1e-12)
    assert pca.projected.shape == (3, 40, 3)


def test_standardised_pca_is_the_pca_of_the_correlation_matrix():
    states = torch.randn(200, 5, dtype=F64) @ torch.randn(5, 5, dtype=F64) * torch.tensor([1, 1, 1, 1, 100.0])
    pca = hidden_pca(states, num_components=2, standardize=True)
    eigenvalues, eigenvectors = np.linalg.eigh(np.corrcoef(states.numpy(), rowvar=False))
    np.testing.assert_allclose(pca.explained_variance.numpy(), eigenvalues[::-1][:2], rtol=1e-10)
    for k in range(2):
        assert abs(float(pca.components[k] @ torch.tensor(eigenvectors[:, -1 - k]))) == pytest.approx(1, abs=1e-9)
    torch.testing.assert_close(pca.scale, states.std(0))
    plain = hidden_pca(states, num_components=1)
    assert plain.components[0, 4].abs() > 0.99                          # unscaled, the big unit is PC1 alone


def test_unit_responses_are_pearson_correlations():
    states = torch.randn(2, 50, 5, dtype=F64)
    ramp = torch.arange(50.0).expand(2, 50)
    states[..., 3] = 0.1 * ramp + 0.5 * torch.randn(2, 50, dtype=F64)
    features = {"ramp": ramp, "sign of unit 0": (states[..., 0] > 0).double(), "constant": torch.ones(2, 50)}
    responses = unit_responses(HiddenStates(states, [f"u{i}" for i in range(5)], (5,)), features, top=2)
    flat = states.reshape(-1, 5).numpy()
    for i, values in enumerate(features.values()):
        for j in range(5):
            expected = 0.0 if i == 2 else np.corrcoef(values.reshape(-1).numpy(), flat[:, j])[0, 1]
            assert responses.correlations[i, j].item() == pytest.approx(expected, abs=1e-12)
    assert responses.top_units[0, 0] == 3 and responses.top_units[1, 0] == 0
    assert responses.describe()[0].startswith("ramp: u3 (+0.9")
    assert responses.features == ["ramp", "sign of unit 0", "constant"]


def test_text_features_follow_strings_lines_indentation_and_brackets():
    f = text_features("x = f('a(b')\n  [1, \"2\n3]")
    assert f["inside string"].tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0]
    assert f["bracket depth"].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0]
    assert f["line position"].tolist()[11:16] == [12, 0, 1, 2, 3]
    assert f["indentation"].tolist()[12:16] == [0, 1, 2, 2]
    assert f["space"].tolist()[:3] == [0, 1, 0]
    assert all(len(v) == 24 for v in f.values())


def test_hidden_analysis_errors_say_what_to_fix():
    with pytest.raises(ValueError, match=re.escape(
            "hidden_pca: num_components must be an integer in [1, 4], got 5; 4 is the smaller of 10 states and "
            "4 units")):
        hidden_pca(torch.randn(10, 4), num_components=5)
    with pytest.raises(ValueError, match=re.escape(
            "hidden_pca: expected HiddenStates or a float tensor of states (B, T, S) or (N, S), got shape (4,) "
            "torch.float32")):
        hidden_pca(torch.randn(4))
    with pytest.raises(ValueError, match=re.escape(
            "unit_responses: feature 'f' has shape (2, 5), but the states are (2, 6, 3); give one value per "
            "state, (2, 6)")):
        unit_responses(torch.randn(2, 6, 3), {"f": torch.zeros(2, 5)})
    with pytest.raises(ValueError, match=re.escape(
            "unit_responses: top must be an integer in [1, 3], got 4; there are 3 units")):
        unit_responses(torch.randn(2, 6, 3), {"f": torch.zeros(2, 6)}, top=4)
    with pytest.raises(ValueError, match=re.escape(
            "text_features: expected a non-empty string (or a list of characters), got ''")):
        text_features("")


# ----- plots -------------------------------------------------------------------------------------

def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 10_000, (path, len(data))


@pytest.fixture(scope="module")
def lstm_run():
    torch.manual_seed(0)
    lstm = rnnkit.LSTM(3, 8, dtype=F64, batch_first=True)
    x = torch.randn(3, 25, 3, dtype=F64)
    return lstm, x


def test_gradient_flow_plot_draws_each_model_and_the_theory_on_top(tmp_path, lstm_run):
    lstm, x = lstm_run
    flows = {"lstm": gradient_flow(lstm, x, lambda out: out[0].pow(2).sum(-1)),
             "elman": gradient_flow(rnnkit.ElmanRNN(3, 8, dtype=F64, batch_first=True), x, lambda out: out[0].pow(2).sum(-1))}
    theory = {"0.8^(T-t)": 0.8 ** torch.arange(25, -1, -1.0)}
    fig = plot_gradient_flow(flows, tmp_path / "flow.png", theory=theory)
    assert_png(tmp_path / "flow.png")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_xlabel() and ax.get_ylabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sum(label.startswith("lstm: ") for label in labels) == 2 and labels[-1] == "0.8^(T-t)"
    theory_line = ax.get_lines()[-1]
    assert theory_line.get_zorder() > max(line.get_zorder() for line in ax.get_lines()[:-1])
    np.testing.assert_allclose(theory_line.get_ydata(), theory["0.8^(T-t)"].numpy())
    median = np.median(flows["lstm"].norms.numpy(), axis=0)
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), median, rtol=1e-12)


def test_spectrum_plot_has_the_unit_circle_and_every_eigenvalue(tmp_path, lstm_run):
    lstm, x = lstm_run
    spectrum = jacobian_spectrum(step_jacobians(lstm, x))
    fig = plot_spectrum(spectrum, tmp_path / "spectrum.png", weights=recurrent_eigenvalues(lstm))
    assert_png(tmp_path / "spectrum.png")
    plane = fig.axes[0]
    circle = next(line for line in plane.get_lines() if line.get_label() == "unit circle")
    np.testing.assert_allclose(np.hypot(circle.get_xdata(), circle.get_ydata()), 1.0, rtol=1e-12)
    dots = plane.collections[0].get_offsets()
    assert len(dots) == spectrum.eigenvalues.numel()
    np.testing.assert_allclose(np.sort(np.hypot(dots[:, 0], dots[:, 1])),
                               np.sort(spectrum.eigenvalues.abs().reshape(-1).numpy()), rtol=1e-6)
    assert plane.get_xlabel() == "Re λ" and plane.get_ylabel() == "Im λ"
    assert len(plane.collections) == 1 + 4                             # Jacobians + one set per gate


def test_products_and_forget_gate_plots(tmp_path, lstm_run):
    lstm, x = lstm_run
    products = jacobian_products(step_jacobians(lstm, x))
    fig = plot_jacobian_products(products, tmp_path / "products.png")
    assert_png(tmp_path / "products.png")
    largest = next(line for line in fig.axes[0].get_lines() if line.get_label() == "largest singular value")
    np.testing.assert_allclose(largest.get_ydata(), np.median(products.singular_values[..., 0].numpy(), 0))
    gates = forget_gate_product(lstm, x)
    fig = plot_forget_gates(gates, tmp_path / "forget.png")
    assert_png(tmp_path / "forget.png")
    np.testing.assert_allclose(fig.axes[0].get_images()[0].get_array(), gates.gates[0].T.numpy())


def test_pca_and_unit_response_plots(tmp_path, lstm_run):
    lstm, x = lstm_run
    hidden = hidden_states(lstm, x)
    pca = hidden_pca(hidden, num_components=3)
    text = "abc(de'f')\n  gh[i]jk lm\nnopq"[:25]
    fig = plot_pca_trajectory(pca, tmp_path / "pca.png", sequence=1, annotations=text)
    assert_png(tmp_path / "pca.png")
    trajectory = fig.axes[0].get_lines()[0]
    np.testing.assert_allclose(trajectory.get_xdata(), pca.projected[1, :, 0].numpy())
    assert "of variance" in fig.axes[0].get_xlabel()
    assert len(fig.axes[0].texts) == 25
    features = {k: v.expand(3, 25) for k, v in text_features(text).items() if v.min() < v.max()}
    responses = unit_responses(hidden, features)
    fig = plot_unit_responses(responses, hidden, features, tmp_path / "units.png", text=text)
    assert_png(tmp_path / "units.png")
    assert len(fig.axes) == len(features)
    unit = int(responses.top_units[0, 0])
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), hidden.states[0, :, unit].numpy())


def test_plots_refuse_the_wrong_result_and_name_the_missing_extra(monkeypatch, lstm_run):
    with pytest.raises(TypeError, match=re.escape(
            "plot_gradient_flow: expected a GradientFlow (from gradient_flow) or a dict name -> GradientFlow, "
            "got Tensor")):
        plot_gradient_flow(torch.zeros(3))
    with pytest.raises(TypeError, match=re.escape(
            "plot_spectrum: expected a JacobianSpectrum (from jacobian_spectrum), got StepJacobians")):
        plot_spectrum(step_jacobians(*lstm_run))
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)         # as if matplotlib were missing
    flow = gradient_flow(*lstm_run, lambda out: out[0].sum())
    with pytest.raises(ImportError, match=re.escape(
            'plot_gradient_flow needs matplotlib, which is not installed: pip install "rnnkit[plot]"')):
        plot_gradient_flow(flow)


def test_text_features_want_single_characters():
    assert text_features(list("ab'c'"))["inside string"].tolist() == [0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match=re.escape(
            "text_features: expected a list of single characters, got one holding '<unk>'; map longer tokens "
            "(such as '<unk>') to one character first")):
        text_features(["a", "<unk>"])
