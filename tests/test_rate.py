"""RateCell: the Euler step against a float64 twin, the ODE limit, Dale's law, noise, Poisson counts."""
import contextlib
import math
import re

import numpy as np
import pytest
import scipy.linalg
import torch

import rnnkit
from rnnkit.cells.rate import RATE_ACTIVATIONS, RateCell
from rnnkit.readouts import PoissonReadout, sequence_nll

from conftest import F64, assert_close


def exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


# ----- the update equation against a hand-written float64 twin -------------------------------------
TWIN_PHI = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0), "softplus": lambda x: np.log1p(np.exp(x)),
            "sigmoid": lambda x: 1 / (1 + np.exp(-x)), "identity": lambda x: x}


def twin_run(cell: RateCell, u: np.ndarray, x: np.ndarray):
    """x_{t+1} = x_t + (dt/tau)(-x_t + W phi(x_t) + B u_t + b), written out in NumPy."""
    w = cell.weight_hh.detach().numpy()
    if cell.signs is not None:
        w = np.abs(w) * cell.signs.numpy()[None, :]          # column j: unit j's outgoing weights
    if not cell.autapses:
        w = w * (1 - np.eye(len(w)))
    b_in, bias, phi, alpha = cell.weight_ih.detach().numpy(), cell.bias.detach().numpy(), \
        TWIN_PHI[cell.activation], cell.dt / cell.tau
    outputs = []
    for t in range(u.shape[1]):
        x = x + alpha * (-x + phi(x) @ w.T + u[:, t] @ b_in.T + bias)
        outputs.append(phi(x))
    return np.stack(outputs, 1), x


@pytest.mark.parametrize("activation", sorted(RATE_ACTIVATIONS))
@pytest.mark.parametrize("dale, autapses", [(None, True), (0.75, False), ([1, -1, 1, 1, -1], True)])
def test_run_matches_the_float64_twin(activation, dale, autapses):
    odd = dale is not None and activation in ("tanh", "identity")     # rates may go negative: warned
    with pytest.warns(UserWarning) if odd else contextlib.nullcontext():
        cell = RateCell(3, 5, tau=10.0, dt=3.0, activation=activation, dale=dale, autapses=autapses, dtype=F64)
    with torch.no_grad():
        cell.bias.normal_()                                    # starts at zero: make it count
    u, x0 = torch.randn(4, 7, 3, dtype=F64), torch.randn(4, 5, dtype=F64)
    outputs, final = rnnkit.Recurrent(cell)(u, x0)
    twin_outputs, twin_final = twin_run(cell, u.numpy(), x0.numpy())
    assert_close(outputs, torch.from_numpy(twin_outputs), rtol=1e-12, atol=1e-12)
    assert_close(final, torch.from_numpy(twin_final), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dale", [None, 0.6])
def test_gradients_match_finite_differences(dale):
    cell = RateCell(2, 5, tau=5.0, dt=1.0, activation="softplus", dale=dale, dtype=F64)
    names = [n for n, _ in cell.named_parameters()]

    def run(u, x0, *params):
        state = dict(zip(names, params))
        out, final = torch.func.functional_call(rnnkit.Recurrent(cell), state, (u, x0))
        return out.sum(-1), final

    args = (torch.randn(2, 4, 2, dtype=F64, requires_grad=True), torch.randn(2, 5, dtype=F64, requires_grad=True),
            *(p.detach().clone().requires_grad_(True) for p in cell.parameters()))
    assert torch.autograd.gradcheck(run, args)


def test_dt_equal_to_tau_is_the_discrete_network():
    cell = RateCell(2, 4, tau=7.0, dt=7.0, dtype=F64)
    u, x = torch.randn(3, 2, dtype=F64), torch.randn(3, 4, dtype=F64)
    w = cell.recurrent_weights().detach()
    assert_close(cell(u, x), torch.tanh(x) @ w.T + u @ cell.weight_ih.detach().T + cell.bias.detach(),
                 rtol=1e-13, atol=1e-13)


# ----- the ODE limit ---------------------------------------------------------------------------------
def test_euler_steps_converge_to_the_ode_at_first_order():
    """Linear network: x(t) = x* + expm((W - I) t / tau)(x0 - x*), x* = (I - W)^-1 (B u + b)."""
    tau, horizon = 10.0, 20.0
    errors = []
    reference = RateCell(2, 3, tau=tau, dt=1.0, activation="identity", spectral_radius=0.8, dtype=F64)
    with torch.no_grad():
        reference.bias.normal_()
    u, x0 = torch.randn(2, dtype=F64), torch.randn(1, 3, dtype=F64)
    w = reference.recurrent_weights().detach()
    eye = torch.eye(3, dtype=F64)
    fixed = torch.linalg.solve(eye - w, reference.weight_ih.detach() @ u + reference.bias.detach())
    exact = fixed + torch.linalg.matrix_exp((w - eye) * horizon / tau) @ (x0[0] - fixed)
    for dt in (1.0, 0.1, 0.01):
        cell = RateCell(2, 3, tau=tau, dt=dt, activation="identity", dtype=F64)
        cell.load_state_dict(reference.state_dict())
        steps = round(horizon / dt)
        _, final = rnnkit.Recurrent(cell)(u.expand(1, steps, 2), x0)
        errors.append((final[0] - exact).norm().item())
    # Euler's global error is O(dt): each tenfold smaller step cuts it about tenfold
    assert 8 < errors[0] / errors[1] < 12 and 9 < errors[1] / errors[2] < 11, errors
    assert errors[2] < 1e-3 * exact.norm().item()


# ----- Dale's law ---------------------------------------------------------------------------------------
def test_dale_signs_survive_adam_training():
    cell = RateCell(2, 10, activation="relu", dale=0.8, autapses=False)
    assert cell.signs.tolist() == [1.0] * 8 + [-1.0] * 2
    readout = torch.nn.Linear(10, 1)
    layer = rnnkit.Recurrent(cell)
    u = torch.randn(16, 12, 2)
    target = torch.sin(u.cumsum(1)[..., :1])                     # a function no tiny net fits exactly
    raw_before = cell.weight_hh.detach().clone()
    optimiser = torch.optim.Adam([*cell.parameters(), *readout.parameters()], lr=0.05)
    losses = []
    for _ in range(60):
        loss = (readout(layer(u)[0]) - target).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0] and losses[-1] > 1e-3
    # the optimiser did push raw weights across zero, so unconstrained weights would have broken Dale's law
    assert bool((torch.sign(cell.weight_hh.detach()) != torch.sign(raw_before)).any())
    w = cell.recurrent_weights().detach()
    assert bool((w[:, :8] >= 0).all()) and bool((w[:, 8:] <= 0).all())
    assert bool((w != 0).sum(0).gt(0).all())                    # and no column collapsed to zero
    assert torch.equal(torch.diagonal(w), torch.zeros(10))     # autapses stay off


def test_dale_initialisation_balances_excitation_and_inhibition():
    cell = RateCell(1, 200, activation="relu", dale=0.8, spectral_radius=1.3, dtype=F64)
    w = cell.recurrent_weights().detach()
    excitation, inhibition = w[:, :160].sum().item(), -w[:, 160:].sum().item()
    # |N(0, 1)| has mean 0.80 and sd 0.60: the two totals (32,000 and 8,000 draws) have relative
    # standard errors 0.4 % and 0.8 %, so 5 % is more than five of them
    assert abs(excitation - inhibition) / excitation < 0.05
    assert torch.linalg.eigvals(w).abs().max().item() == pytest.approx(1.3, rel=1e-9)


def test_explicit_signs_and_the_effective_weights():
    signs = [1, -1, -1, 1]
    cell = RateCell(2, 4, activation="sigmoid", dale=torch.tensor(signs), dtype=F64)
    with torch.no_grad():
        cell.weight_hh.copy_(torch.tensor([[1.0, -2.0, 3.0, -4.0]] * 4, dtype=F64))
    expected = torch.tensor([[1.0, -2.0, -3.0, 4.0]] * 4, dtype=F64)
    assert torch.equal(cell.recurrent_weights(), expected)
    assert cell.extra_repr() == "2, 4, tau=100, dt=20, activation='sigmoid', dale=2E/2I, autapses=True"


# ----- private noise ----------------------------------------------------------------------------------
def test_stationary_noise_covariance_is_the_discrete_lyapunov_solution():
    """Linear cell: x' = A x + sigma sqrt(2 alpha) xi with A = (1 - alpha) I + alpha W, so the
    stationary covariance solves Sigma = A Sigma A^T + 2 alpha sigma^2 I."""
    sigma, chains = 0.3, 20_000
    cell = RateCell(1, 3, tau=10.0, dt=2.0, activation="identity", noise_std=sigma, spectral_radius=0.5,
                    dtype=F64)
    alpha = cell.alpha
    a = ((1 - alpha) * torch.eye(3, dtype=F64) + alpha * cell.recurrent_weights().detach()).numpy()
    expected = scipy.linalg.solve_discrete_lyapunov(a, 2 * alpha * sigma**2 * np.eye(3))
    # |A| <= 0.9, so after 200 steps the start (zero) is forgotten to 0.9^200 < 1e-9
    with torch.no_grad():
        _, final = rnnkit.Recurrent(cell.train())(torch.zeros(chains, 200, 1, dtype=F64))
    empirical = np.cov(final.numpy().T)
    # standard error of a sample covariance: sqrt((S_ii S_jj + S_ij^2) / n); allow five of them
    standard_error = np.sqrt((np.outer(np.diag(expected), np.diag(expected)) + expected**2) / chains)
    assert np.all(np.abs(empirical - expected) < 5 * standard_error), (empirical, expected)
    assert abs(final.mean().item()) < 5 * math.sqrt(expected.max() / chains)


def test_unconnected_unit_has_variance_sigma_squared_over_one_minus_half_alpha():
    sigma, chains = 0.5, 20_000
    cell = RateCell(1, 2, tau=1.0, dt=0.5, activation="identity", noise_std=sigma, dtype=F64)
    with torch.no_grad():
        cell.weight_hh.zero_()
    with torch.no_grad():
        _, final = rnnkit.Recurrent(cell)(torch.zeros(chains, 80, 1, dtype=F64))
    expected = sigma**2 / (1 - cell.alpha / 2)                  # -> sigma^2 as dt -> 0
    variance = final.var(0)
    assert torch.all((variance - expected).abs() < 5 * expected * math.sqrt(2 / chains)), variance


def test_noise_only_in_training_mode():
    cell = RateCell(2, 4, noise_std=0.5)
    u, x = torch.randn(3, 2), torch.randn(3, 4)
    assert not torch.equal(cell(u, x), cell(u, x))              # training mode: fresh noise each step
    cell.eval()
    quiet = RateCell(2, 4)
    quiet.load_state_dict(cell.state_dict())
    assert torch.equal(cell(u, x), quiet(u, x))                 # eval mode: the deterministic map
    assert torch.equal(quiet.train()(u, x), quiet(u, x))        # noise_std = 0: deterministic always


# ----- a Poisson readout: spike counts --------------------------------------------------------------------
def test_rate_network_fitted_to_poisson_counts_nearly_reaches_the_true_models_likelihood():
    steps, sequences = 50, 64
    g = torch.Generator().manual_seed(0)

    def drive(n):
        t = torch.arange(steps, dtype=torch.float32) / steps
        frequency, phase = 1 + 3 * torch.rand(n, 1, 2, generator=g), 6.28 * torch.rand(n, 1, 2, generator=g)
        return torch.sin(6.28 * frequency * t[None, :, None] + phase)               # (N, T, 2)

    teacher, teacher_readout = RateCell(2, 16, spectral_radius=0.9), PoissonReadout(16, 5)
    with torch.no_grad():
        teacher.weight_ih.mul_(3)
        teacher_readout.weight.mul_(3)
    u_train, u_test = drive(sequences), drive(sequences)
    with torch.no_grad():
        rates_train, rates_test = rnnkit.Recurrent(teacher)(u_train)[0], rnnkit.Recurrent(teacher)(u_test)[0]
        y_train = teacher_readout.sample(rates_train, generator=g)
        y_test = teacher_readout.sample(rates_test, generator=g)
    # bound: the best constant-rate (homogeneous Poisson) model, each neuron at its mean count
    rate = y_train.mean((0, 1))
    constant = (rate - y_test * rate.log() + torch.lgamma(y_test + 1)).sum(-1).mean().item()
    truth = sequence_nll(teacher_readout, y_test, rates_test, reduction="mean").item()
    student, readout = RateCell(2, 16), PoissonReadout(16, 5)
    layer = rnnkit.Recurrent(student)
    optimiser = torch.optim.Adam([*student.parameters(), *readout.parameters()], lr=0.03)
    for _ in range(100):
        loss = sequence_nll(readout, y_train, layer(u_train)[0], reduction="mean")
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        fitted = sequence_nll(readout, y_test, layer(u_test)[0], reduction="mean").item()
    assert constant - truth > 0.5                              # the counts do carry the input
    assert fitted < truth + 0.15 * (constant - truth), (fitted, truth, constant)


# ----- the cell in the library ------------------------------------------------------------------------------
def test_layer_runs_it_and_emits_rates():
    cell = RateCell(3, 6, activation="relu")
    out, final = rnnkit.Recurrent(cell)(torch.randn(2, 5, 3))
    assert out.shape == (2, 5, 6) and final.shape == (2, 6)
    assert torch.equal(out[:, -1], torch.relu(final))
    assert cell.alpha == pytest.approx(0.2)
    assert rnnkit.Recurrent(cell).engine == "fused"


def test_tanh_with_dale_warns():
    with pytest.warns(UserWarning, match=exactly(
            "RateCell: Dale's law with activation 'tanh' lets rates go negative, so an 'excitatory' unit can "
            "inhibit; use one of ['relu', 'softplus', 'sigmoid']")):
        RateCell(1, 5, dale=0.8)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(tau=0.0), ValueError, "RateCell: tau must be a positive finite number, got 0.0"),
    (dict(tau="1"), TypeError, "RateCell: tau must be a number, got str"),
    (dict(dt=-1.0), ValueError, "RateCell: dt must be a positive finite number, got -1.0"),
    (dict(tau=10.0, dt=20.0), ValueError,
     "RateCell: dt must not exceed tau, got dt=20.0 > tau=10.0; an Euler step longer than the time constant "
     "overshoots the leak (dt = tau is the discrete-time network); take a smaller dt"),
    (dict(activation="elu"), ValueError,
     "RateCell: unknown activation 'elu'; choose one of ['identity', 'relu', 'sigmoid', 'softplus', 'tanh']"),
    (dict(noise_std=-0.1), ValueError, "RateCell: noise_std must be a finite number >= 0, got -0.1"),
    (dict(noise_std=None), TypeError, "RateCell: noise_std must be a number, got NoneType"),
    (dict(dale=1.0, activation="relu"), ValueError,
     "RateCell: dale must be an excitatory fraction in (0, 1), got 1.0; pass a sequence of +1/-1 signs "
     "for an all-excitatory network"),
    (dict(dale=0.9, activation="relu"), ValueError,
     "RateCell: excitatory fraction 0.9 of hidden_size=4 gives 4 excitatory units; both kinds need at least "
     "one, so enlarge hidden_size or pass the signs explicitly"),
    (dict(dale=[1, -1], activation="relu"), ValueError, "RateCell: dale signs must have shape (4,), got shape (2,)"),
    (dict(dale=[1, 0, -1, 1], activation="relu"), ValueError,
     "RateCell: dale signs must be +1 (excitatory) or -1 (inhibitory), got 0"),
    (dict(dale="EEIE", activation="relu"), TypeError,
     "RateCell: dale must be None, an excitatory fraction in (0, 1) or a sequence of +1/-1 signs, got str"),
    (dict(autapses=0), TypeError, "RateCell: autapses must be True or False, got int"),
    (dict(spectral_radius=0), ValueError, "RateCell: spectral_radius must be a positive finite number, got 0"),
])
def test_bad_arguments_say_what_was_wrong(kwargs, error, message):
    with pytest.raises(error, match=exactly(message)):
        RateCell(2, 4, **kwargs)


def test_bad_sizes():
    with pytest.raises(ValueError, match=exactly("RateCell: hidden_size must be a positive integer, got 0")):
        RateCell(2, 0)
