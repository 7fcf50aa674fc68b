"""find_fixed_points against analytic answers; visited_states; plot_fixed_points."""
import math
import re
import sys

import numpy as np
import pytest
import scipy.optimize
import torch
from torch import nn

import rnnkit
from rnnkit.analysis.fixed_points import FixedPoints, find_fixed_points, visited_states
from rnnkit.analysis.plots import plot_fixed_points
from rnnkit.cells import Cell, ElmanCell, GRUCell, LSTMCell
from rnnkit.cells.rate import RateCell

from conftest import F64, assert_close


def exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


class AffineCell(Cell):
    """h' = A h + C u + b: a linear RNN whose fixed point is (I - A)^-1 (C u + b)."""

    def __init__(self, a: torch.Tensor, c: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.input_size, self.hidden_size = c.shape[1], a.shape[0]
        self.state_sizes = self.hidden_size
        self.a, self.c, self.b = nn.Parameter(a), nn.Parameter(c), nn.Parameter(b)

    def forward(self, u, h):
        return h @ self.a.T + u @ self.c.T + self.b


def with_radius(size: int, radius: float) -> torch.Tensor:
    a = torch.randn(size, size, dtype=F64)
    return a * radius / torch.linalg.eigvals(a).abs().max()


def scalar_cell(w: float) -> ElmanCell:
    """h' = tanh(w h)."""
    cell = ElmanCell(1, 1, bias=False, dtype=F64)
    with torch.no_grad():
        cell.weight_hh.fill_(w)
        cell.weight_ih.zero_()
    return cell


# ----- linear maps: the analytic fixed point and its stability --------------------------------------------
@pytest.mark.parametrize("radius, stable", [(0.7, True), (1.5, False)])
def test_linear_map_has_the_analytic_fixed_point_and_stability(radius, stable):
    a, c, b = with_radius(4, radius), torch.randn(4, 2, dtype=F64), torch.randn(4, dtype=F64)
    u = torch.randn(2, dtype=F64)
    result = find_fixed_points(AffineCell(a, c, b), u, num_starts=16, start_scale=3.0)
    expected = torch.linalg.solve(torch.eye(4, dtype=F64) - a, c @ u + b)
    assert len(result) == 1 and result.counts.tolist() == [16] and result.num_discarded == 0
    assert_close(result.points[0], expected, rtol=0, atol=1e-6)
    assert (result.points[0] - expected).abs().max().item() < 1e-10           # in fact to rounding
    assert_close(result.jacobians[0], a, rtol=0, atol=1e-12)
    expected_moduli = torch.linalg.eigvals(a).abs().sort(descending=True).values
    assert_close(result.eigenvalues[0].abs(), expected_moduli, rtol=0, atol=1e-10)
    assert result.stable.tolist() == [stable] and (result.num_stable, result.num_unstable) == (stable, not stable)


def test_linear_rate_network_fixed_point_is_i_minus_w_inverse_drive():
    cell = RateCell(3, 5, tau=10.0, dt=2.0, activation="identity", spectral_radius=0.9, dtype=F64)
    with torch.no_grad():
        cell.bias.normal_()
    u = torch.randn(3, dtype=F64)
    result = find_fixed_points(cell, u, num_starts=8)
    w = cell.recurrent_weights().detach()
    eye = torch.eye(5, dtype=F64)
    expected = torch.linalg.solve(eye - w, cell.weight_ih.detach() @ u + cell.bias.detach())
    assert len(result) == 1
    assert (result.points[0] - expected).abs().max().item() < 1e-10
    # the Euler map's Jacobian is (1 - alpha) I + alpha W: eigenvalues 1 - alpha + alpha lambda(W)
    assert_close(result.jacobians[0], (1 - cell.alpha) * eye + cell.alpha * w, rtol=0, atol=1e-12)
    assert result.num_stable == 1


# ----- a nonlinear map with several fixed points --------------------------------------------------------
@pytest.mark.parametrize("w", [1.5, 2.0, 4.0])
def test_tanh_map_has_zero_unstable_and_two_stable_points(w):
    """h' = tanh(w h), w > 1: fixed points 0 (slope w > 1: unstable) and ±h* (slope w (1 - h*²) < 1)."""
    h_star = scipy.optimize.brentq(lambda h: math.tanh(w * h) - h, 1e-3, 1.0, xtol=1e-15)
    result = find_fixed_points(scalar_cell(w), num_starts=64, start_scale=1.5)
    order = result.points[:, 0].argsort()
    assert_close(result.points[order, 0], torch.tensor([-h_star, 0.0, h_star], dtype=F64), rtol=0, atol=1e-12)
    slopes = result.eigenvalues[order, 0]
    assert_close(slopes.real, torch.tensor([w * (1 - h_star**2), w, w * (1 - h_star**2)], dtype=F64),
                 rtol=0, atol=1e-9)
    assert result.stable[order].tolist() == [True, False, True]
    assert int(result.counts.sum()) + result.num_discarded == 64


def test_contracting_tanh_map_has_only_the_origin():
    result = find_fixed_points(scalar_cell(0.5), num_starts=32, start_scale=2.0)
    assert len(result) == 1 and abs(result.points.item()) < 1e-12 and result.stable.tolist() == [True]
    assert result.eigenvalues[0, 0].real.item() == pytest.approx(0.5, abs=1e-12)


def test_merging_collapses_points_within_merge_distance():
    near = find_fixed_points(scalar_cell(2.0), num_starts=64, start_scale=1.5)
    coarse = find_fixed_points(scalar_cell(2.0), num_starts=64, start_scale=1.5, merge_distance=10.0)
    assert len(near) == 3 and len(coarse) == 1
    assert int(coarse.counts.sum()) == int(near.counts.sum())


# ----- the Jacobians against autograd's, tuple states ---------------------------------------------------------
def test_jacobians_match_torch_autograd_functional():
    cell = GRUCell(2, 4, dtype=F64)
    u = torch.randn(2, dtype=F64)
    result = find_fixed_points(cell, u, num_starts=16)
    assert len(result) >= 1
    for point, jacobian in zip(result.points, result.jacobians):
        slow = torch.autograd.functional.jacobian(lambda h: cell(u[None], h[None])[0], point)
        assert_close(jacobian, slow, rtol=1e-12, atol=1e-12)
        assert_close(cell(u[None], point[None])[0], point, rtol=0, atol=1e-12)


def test_tuple_state_is_searched_as_one_concatenated_vector():
    cell = LSTMCell(2, 3, dtype=F64)
    u = torch.randn(2, dtype=F64)
    result = find_fixed_points(cell, u, num_starts=16)
    assert result.points.shape[1] == 6 and len(result) >= 1
    h, c = result.states()
    assert h.shape == (len(result), 3) and c.shape == (len(result), 3)
    new_h, new_c = cell(u.expand(len(result), 2), (h, c))
    assert_close(torch.cat([new_h, new_c], 1), result.points, rtol=0, atol=1e-12)
    slow = torch.autograd.functional.jacobian(
        lambda s: torch.cat(cell(u[None], (s[None, :3], s[None, 3:])), 1)[0], result.points[0])
    assert_close(result.jacobians[0], slow, rtol=1e-12, atol=1e-12)


# ----- what the search leaves alone, and what it copes with ----------------------------------------------------
def test_cell_is_untouched_and_noise_is_off_in_the_search():
    cell = RateCell(2, 4, activation="identity", noise_std=1.0, spectral_radius=0.5)     # float32, training mode
    before = {k: v.clone() for k, v in cell.state_dict().items()}
    result = find_fixed_points(cell, num_starts=8)
    assert cell.training and cell.weight_hh.dtype == torch.float32 and cell.weight_hh.requires_grad
    assert all(torch.equal(before[k], v) for k, v in cell.state_dict().items())
    assert result.points.dtype == F64 and len(result) == 1                   # noise would scatter the points
    expected = torch.linalg.solve(torch.eye(4, dtype=F64) - cell.recurrent_weights().detach().double(),
                                  cell.bias.detach().double())
    assert (result.points[0] - expected).abs().max().item() < 1e-10
    kept = find_fixed_points(cell, num_starts=8, dtype=None, tolerance=1e-9)
    assert kept.points.dtype == torch.float32


def test_given_initial_states_and_subsampling():
    cell = scalar_cell(2.0)
    starts = torch.tensor([[-0.9], [-0.8], [0.7], [0.95]], dtype=F64)          # all in the outer basins
    result = find_fixed_points(cell, initial_states=starts)
    assert result.num_starts == 4 and len(result) == 2 and result.num_stable == 2
    picked = find_fixed_points(cell, initial_states=starts.view(2, 2, 1), num_starts=3,
                               generator=torch.Generator().manual_seed(0))
    assert picked.num_starts == 3


def test_no_converged_start_warns_and_returns_an_empty_result():
    cell = scalar_cell(2.0)
    q = 0.5 * (math.tanh(1.0) - 0.5) ** 2
    with pytest.warns(UserWarning, match=exactly(
            f"find_fixed_points: none of the 1 starts reached a fixed point (smallest speed q = {q:.3g} > "
            f"tolerance 1e-12); raise iterations, try other initial_states, or raise tolerance to accept slow "
            f"points")):
        result = find_fixed_points(cell, initial_states=torch.tensor([[0.5]], dtype=F64), iterations=0,
                                   newton_steps=0)
    assert len(result) == 0 and result.num_discarded == 1 and result.eigenvalues.shape == (0, 1)
    assert repr(result) == ("FixedPoints(0 points: 0 stable, 0 unstable; state size 1, 1 starts, 1 discarded)")


# ----- visited states ------------------------------------------------------------------------------------------
def test_visited_states_are_the_states_the_layer_passes_through():
    cell = LSTMCell(3, 4, dtype=F64)
    x = torch.randn(2, 6, 3, dtype=F64)
    states = visited_states(cell, x)
    outputs, (h, c) = rnnkit.Recurrent(cell, engine="loop")(x)
    assert states.shape == (2, 6, 8)
    assert_close(states[..., :4], outputs, rtol=0, atol=0)
    assert_close(states[:, -1], torch.cat([h, c], 1), rtol=0, atol=0)


# ----- errors ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, error, message", [
    (lambda c: find_fixed_points(nn.Linear(2, 2)), TypeError,
     "find_fixed_points: expected an rnnkit.cells.Cell, got Linear"),
    (lambda c: find_fixed_points(c, torch.zeros(3)), ValueError,
     "find_fixed_points: inputs must be one constant input vector of shape (2,), got shape (3,)"),
    (lambda c: find_fixed_points(c, [0.0, 0.0]), TypeError,
     "find_fixed_points: inputs must be a torch.Tensor of shape (2,) (one constant input vector) or None for "
     "zeros, got list"),
    (lambda c: find_fixed_points(c, initial_states=torch.zeros(5, 3)), ValueError,
     "find_fixed_points: initial_states must have shape (N, 4) with N >= 1 (or (B, T, 4) from visited_states), "
     "got (5, 3)"),
    (lambda c: find_fixed_points(c, initial_states=torch.zeros(5, 4), num_starts=6), ValueError,
     "find_fixed_points: num_starts=6 but only 5 initial states were given; pass more states or a smaller "
     "num_starts"),
    (lambda c: find_fixed_points(c, num_starts=0), ValueError,
     "find_fixed_points: num_starts must be a positive integer, got 0"),
    (lambda c: find_fixed_points(c, iterations=1.5), TypeError,
     "find_fixed_points: iterations must be an int, got float"),
    (lambda c: find_fixed_points(c, tolerance=0.0), ValueError,
     "find_fixed_points: tolerance must be a positive finite number, got 0.0"),
    (lambda c: find_fixed_points(c, lr="big"), TypeError, "find_fixed_points: lr must be a number, got str"),
    (lambda c: find_fixed_points(c, dtype=torch.int64), TypeError,
     "find_fixed_points: dtype must be a floating-point torch.dtype or None (the cell's own), got torch.int64"),
    (lambda c: find_fixed_points(c, generator=0), TypeError,
     "find_fixed_points: generator must be a torch.Generator, got int"),
    (lambda c: visited_states(c, torch.zeros(2, 3)), ValueError,
     "visited_states: expected inputs of shape (batch, time, 2), got (2, 3)"),
])
def test_bad_arguments_say_what_was_wrong(call, error, message):
    with pytest.raises(error, match=exactly(message)):
        call(ElmanCell(2, 4))


# ----- the picture -----------------------------------------------------------------------------------------------
def test_plot_projects_onto_the_principal_components_of_the_trajectories(tmp_path):
    # h' = tanh(W h), W = diag(2, 1.5, 0.5): coordinates {0, ±h*(2)} x {0, ±h*(1.5)} x {0}, nine
    # fixed points, of which the four with both h_1 and h_2 nonzero are stable
    cell = ElmanCell(1, 3, bias=False, dtype=F64)
    with torch.no_grad():
        cell.weight_ih.zero_()
        cell.weight_hh.copy_(torch.diag(torch.tensor([2.0, 1.5, 0.5], dtype=F64)))
    result = find_fixed_points(cell, num_starts=128, start_scale=1.5)
    assert (len(result), result.num_stable) == (9, 4)
    trajectories = visited_states(cell, torch.zeros(4, 10, 1, dtype=F64), torch.randn(4, 3, dtype=F64))
    path = tmp_path / "points.png"
    figure = plot_fixed_points(result, trajectories, path, components=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # PCA by hand (NumPy), up to the sign of each axis
    flat = trajectories.reshape(-1, 3).numpy()
    center = flat.mean(0)
    _, singular, vt = np.linalg.svd(flat - center, full_matrices=False)
    expected = (result.points.numpy() - center) @ vt[:2].T
    space = figure.axes[0]
    plotted = np.concatenate([c.get_offsets() for c in space.collections])   # unstable first, then stable
    order = np.concatenate([np.flatnonzero(~result.stable.numpy()), np.flatnonzero(result.stable.numpy())])
    assert np.allclose(np.abs(plotted), np.abs(expected[order]), atol=1e-9)
    share = singular**2 / (singular**2).sum()
    assert space.get_xlabel() == f"PC1 ({100 * share[0]:.0f}% of variance)"
    assert space.get_ylabel() == f"PC2 ({100 * share[1]:.0f}% of variance)"
    assert len(space.lines) == 4 + 1                                         # 4 trajectories + legend entry
    spectrum = figure.axes[1]
    assert (spectrum.get_xlabel(), spectrum.get_ylabel()) == ("Re λ", "Im λ")
    assert sum(len(c.get_offsets()) for c in spectrum.collections) == 3 * len(result)


def test_plot_in_three_dimensions_with_the_stable_points_as_basis():
    cell = ElmanCell(1, 3, bias=False, dtype=F64)
    with torch.no_grad():
        cell.weight_ih.zero_()
        cell.weight_hh.copy_(torch.diag(torch.tensor([2.0, 1.5, 0.5], dtype=F64)))
    result = find_fixed_points(cell, num_starts=128, start_scale=1.5)
    figure = plot_fixed_points(result, basis="stable", title="four memories")
    space = figure.axes[0]
    assert space.name == "3d" and figure.get_suptitle() == "four memories"
    # the stable points (±a, ±b, 0) are centred at 0 and span the first two axes: PC1 = ±a, PC2 = ±b
    a, b = (scipy.optimize.brentq(lambda h: math.tanh(w * h) - h, 1e-3, 1.0, xtol=1e-15) for w in (2.0, 1.5))
    stable_coords = np.array(space.collections[1]._offsets3d).T               # (4, 3)
    assert np.allclose(np.abs(stable_coords), [[a, b, 0.0]] * 4, atol=1e-9)
    assert [space.get_xlabel(), space.get_ylabel(), space.get_zlabel()] == [
        f"PC{i + 1} ({share:.0f}% of variance)" for i, share in enumerate(100 * np.array([a * a, b * b, 0.0])
                                                                            / (a * a + b * b))]


def test_plot_errors(monkeypatch):
    result = find_fixed_points(scalar_cell(2.0), num_starts=8)
    with pytest.raises(ValueError, match=exactly("plot_fixed_points: components must be an integer in [2, 3], got 4")):
        plot_fixed_points(result, components=4)
    with pytest.raises(ValueError, match=exactly(
            "plot_fixed_points: expected trajectories of shape (batch, time, 1) or (time, 1), got (3, 2)")):
        plot_fixed_points(result, torch.zeros(3, 2))
    with pytest.raises(ValueError, match=exactly(
            "plot_fixed_points: basis='trajectories' needs trajectories; pass them or use basis='points'")):
        plot_fixed_points(result, basis="trajectories")
    with pytest.raises(ValueError, match=exactly(
            "plot_fixed_points: basis must be one of ['trajectories', 'points', 'stable'], got 'pca'")):
        plot_fixed_points(result, basis="pca")
    with pytest.raises(TypeError, match=exactly(
            "plot_fixed_points: expected the FixedPoints that find_fixed_points returns, got dict")):
        plot_fixed_points({})
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=exactly(
            'plot_fixed_points needs matplotlib, which is not installed: pip install "rnnkit[plot]"')):
        plot_fixed_points(result)


def test_result_repr_and_counts():
    result = find_fixed_points(scalar_cell(2.0), num_starts=20, start_scale=1.5)
    assert isinstance(result, FixedPoints)
    assert repr(result) == ("FixedPoints(3 points: 2 stable, 1 unstable; state size 1, 20 starts, "
                            f"{result.num_discarded} discarded)")
    assert result.counts.tolist() == sorted(result.counts.tolist(), reverse=True)
