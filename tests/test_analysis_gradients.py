"""Gradient flow, step Jacobians, Pascanu's regularizer: numbers against the NumPy reference BPTT.

The oracle is rnnkit.reference: its backward functions return the gradient on the initial
state, so the delta on state s_t is the gradient on the initial state of a run that starts
at s_t and reads the rest of the sequence. Everything is float64 on fresh random inputs.
"""
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import rnnkit
from rnnkit.analysis.gradients import gradient_decay_rate, gradient_flow, record_states
from rnnkit.train.penalties import information_flow_penalty
from rnnkit.analysis.jacobians import (forget_gate_product, jacobian_products, jacobian_spectrum,
                                       recurrent_eigenvalues, step_jacobians)
from rnnkit.cells import Cell, ElmanCell, GRUCell, LSTMCell
from rnnkit.models import LanguageModel, LanguageModelConfig
from rnnkit.reference import (elman_bptt, elman_forward, elman_jacobians, gru_backward, gru_forward,
                              lstm_backward, lstm_forward)

F64 = torch.float64
RTOL, ATOL = 1e-9, 1e-12


def rng():
    return np.random.default_rng(torch.initial_seed())          # conftest seeds torch per test


# ----- matching pairs: a float64 torch cell and the reference's per-step deltas ----------------

class Problem:
    """A cell, inputs, a per-step loss, and the reference's dL/ds_t and dL_T/ds_t (t = 0..T)."""

    def __init__(self, kind, T=6, B=3, X=4, H=5, V=4):
        r = rng()
        self.kind, self.T, self.B, self.H = kind, T, B, H
        self.xs = r.normal(size=(T, B, X))                      # time-major for the reference
        self.x = torch.tensor(self.xs.transpose(1, 0, 2))      # (B, T, X) for rnnkit
        if kind.startswith("elman"):
            self.nonlinearity = kind.split("-")[1]
            self.params = {"W_sx": r.normal(scale=0.6, size=(H, X)),
                           "W_ss": r.normal(scale=1.0 / np.sqrt(H), size=(H, H)),
                           "b_s": np.abs(r.normal(scale=0.3, size=H)) + 0.3,
                           "W_o": r.normal(size=(V, H)), "b_o": r.normal(scale=0.3, size=V)}
            split = r.normal(size=H)
            self.cell = ElmanCell(X, H, nonlinearity=self.nonlinearity, dtype=F64)
            weights = {"weight_ih": self.params["W_sx"], "weight_hh": self.params["W_ss"],
                       "bias_ih": split, "bias_hh": self.params["b_s"] - split}
            self.targets = r.integers(0, V, size=(T, B))
            self.h0 = (r.normal(scale=0.5, size=(B, H)),)
        else:
            gates = 4 if kind == "lstm" else 3
            self.params = weights = {
                "weight_ih": r.normal(scale=0.6, size=(gates * H, X)),
                "weight_hh": r.normal(scale=1.0 / np.sqrt(H), size=(gates * H, H)),
                "bias_ih": r.normal(scale=0.3, size=gates * H), "bias_hh": r.normal(scale=0.3, size=gates * H)}
            self.cell = (LSTMCell if kind == "lstm" else GRUCell)(X, H, dtype=F64)
            self.G, self.GhT, self.GcT = r.normal(size=(T, B, H)), r.normal(size=(B, H)), r.normal(size=(B, H))
            self.h0 = tuple(r.normal(scale=0.5, size=(B, H)) for _ in range(2 if kind == "lstm" else 1))
        with torch.no_grad():
            for name, value in weights.items():
                getattr(self.cell, name).copy_(torch.tensor(value))

    @property
    def state(self):
        parts = tuple(torch.tensor(s) for s in self.h0)
        return parts if self.kind == "lstm" else parts[0]

    def loss_fn(self, output):
        """Per-step losses (B, T): the reference's loss, split by step."""
        outputs, final = output
        if self.kind.startswith("elman"):
            logits = outputs @ torch.tensor(self.params["W_o"]).T + torch.tensor(self.params["b_o"])
            return F.cross_entropy(logits.transpose(1, 2), torch.tensor(self.targets.T), reduction="none")
        per_step = (outputs * torch.tensor(self.G.transpose(1, 0, 2))).sum(-1)
        final_terms = (final[0] if self.kind == "lstm" else final) * torch.tensor(self.GhT)
        extra = final_terms.sum(-1)
        if self.kind == "lstm":
            extra = extra + (final[1] * torch.tensor(self.GcT)).sum(-1)
        return torch.cat([per_step[:, :-1], (per_step[:, -1] + extra)[:, None]], dim=1)

    # the reference, one suffix run per step
    def _suffix(self, t, end, last_only=False):
        """Gradient on s_t of the losses of steps t+1..end, from a reference run started at s_t."""
        if end <= t:
            return [np.zeros((self.B, self.H)) for _ in self.h0]
        if self.kind.startswith("elman"):
            hs = elman_forward(self.params, self.xs, self.h0[0], self.nonlinearity).hs
            _, grads = elman_bptt(self.params, self.xs[t:end], self.targets[t:end], hs[t],
                                  nonlinearity=self.nonlinearity)
            return [grads["h0"]]
        G = self.G[t:end].copy()
        if last_only:
            G[:-1] = 0.0
        final = end == self.T
        GhT, GcT = (self.GhT, self.GcT) if final else (None, None)
        if self.kind == "lstm":
            full = lstm_forward(self.params, self.xs, *self.h0)
            cache = lstm_forward(self.params, self.xs[t:end], full.hs[t], full.cs[t])
            grads = lstm_backward(self.params, cache, G, GhT, GcT)
            return [grads["h0"], grads["c0"]]
        full = gru_forward(self.params, self.xs, *self.h0)
        grads = gru_backward(self.params, gru_forward(self.params, self.xs[t:end], full.hs[t]), G, GhT)
        return [grads["h0"]]

    def _direct(self, t):
        """What the loss of step t puts on s_t directly (t >= 1)."""
        if self.kind.startswith("elman"):
            cache = elman_forward(self.params, self.xs, self.h0[0], self.nonlinearity)
            g = cache.probs[t - 1].copy()
            g[np.arange(self.B), self.targets[t - 1]] -= 1.0
            return [g @ self.params["W_o"]]
        direct = [self.G[t - 1] + (self.GhT if t == self.T else 0.0)]
        if self.kind == "lstm":
            direct.append(self.GcT if t == self.T else np.zeros((self.B, self.H)))
        return direct

    def reference_loss(self):
        if self.kind.startswith("elman"):
            return elman_bptt(self.params, self.xs, self.targets, self.h0[0], nonlinearity=self.nonlinearity)[0]
        if self.kind == "lstm":
            cache = lstm_forward(self.params, self.xs, *self.h0)
            return float((cache.outputs * self.G).sum() + (cache.hs[-1] * self.GhT).sum()
                         + (cache.cs[-1] * self.GcT).sum())
        cache = gru_forward(self.params, self.xs, *self.h0)
        return float((cache.outputs * self.G).sum() + (cache.hs[-1] * self.GhT).sum())

    def reference_total(self):
        rows = []
        for t in range(self.T + 1):
            parts = self._suffix(t, self.T)
            if t >= 1:
                parts = [a + b for a, b in zip(parts, self._direct(t))]
            rows.append(np.concatenate(parts, axis=-1))
        return torch.tensor(np.stack(rows, axis=1))                     # (B, T + 1, S)

    def reference_last_step(self):
        rows = []
        for t in range(self.T + 1):
            if t == self.T:
                parts = self._direct(t)
            elif self.kind.startswith("elman"):       # L_T alone = (L_{t+1..T}) - (L_{t+1..T-1}), by causality
                parts = [a - b for a, b in zip(self._suffix(t, self.T), self._suffix(t, self.T - 1))]
            else:
                parts = self._suffix(t, self.T, last_only=True)
            rows.append(np.concatenate(parts, axis=-1))
        return torch.tensor(np.stack(rows, axis=1))


KINDS = ["elman-tanh", "elman-relu", "lstm", "gru"]


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_flow_equals_the_reference_bptt_deltas(kind):
    p = Problem(kind)
    flow = gradient_flow(p.cell, p.x, p.loss_fn, state=p.state)
    total, last = p.reference_total(), p.reference_last_step()
    torch.testing.assert_close(flow.grads, total, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(flow.last_step_grads, last, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(flow.norms, total.norm(dim=-1), rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(flow.last_step_norms, last.norm(dim=-1), rtol=RTOL, atol=ATOL)
    assert flow.norms.shape == (p.B, p.T + 1)
    assert flow.loss == pytest.approx(p.reference_loss(), rel=1e-12)


def test_lstm_state_is_h_then_c_and_components_split_it():
    p = Problem("lstm")
    flow = gradient_flow(p.cell, p.x, p.loss_fn, state=p.state)
    total = p.reference_total()
    assert flow.state_sizes == (p.H, p.H)
    torch.testing.assert_close(flow.component(0), total[..., :p.H], rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(flow.component(1), total[..., p.H:], rtol=RTOL, atol=ATOL)
    full = lstm_forward(p.params, p.xs, *p.h0)
    torch.testing.assert_close(flow.component(1, "states"), torch.tensor(full.cs.transpose(1, 0, 2)),
                               rtol=RTOL, atol=ATOL)


# on the CPU, auto runs the LSTM on torch's kernel and the GRU on the fused engine; both are tried
@pytest.mark.parametrize("shortcut, cell_name, engine", [(rnnkit.LSTM, "lstm", "native"), (rnnkit.GRU, "gru", "native"),
                                                         (rnnkit.GRU, "gru", "auto")])
def test_shortcut_on_the_native_engine_gives_the_same_flow_and_keeps_its_engine(shortcut, cell_name, engine):
    p = Problem(cell_name)
    net = shortcut(p.x.shape[-1], p.H, dtype=F64, batch_first=True)
    net.load_state_dict({f"{k}_l0": torch.tensor(v) for k, v in p.params.items()})
    for layer in net._runners():
        layer.set_engine(engine)
    expected = "fused" if (cell_name, engine) == ("gru", "auto") else "native"
    assert net.engine == expected
    state = tuple(s[None] for s in p.state) if cell_name == "lstm" else p.state[None]
    flow = gradient_flow(net, p.x, _stacked(p), state=state)
    torch.testing.assert_close(flow.grads, p.reference_total(), rtol=RTOL, atol=ATOL)
    assert net.engine == expected                                  # restored after recording


def _stacked(p):
    """The problem's loss for a shortcut, whose final state is (num_layers, B, H)."""
    def loss(output):
        outputs, final = output
        final = tuple(f[0] for f in final) if isinstance(final, tuple) else final[0]
        return p.loss_fn((outputs, final))
    return loss


def test_language_model_targets_give_the_per_step_cross_entropy_flow():
    model = LanguageModel(LanguageModelConfig(vocab_size=7, cell="gru", hidden_size=6, embedding_size=4))
    model.double()
    tokens = torch.randint(7, (2, 9))
    flow = gradient_flow(model, tokens[:, :-1], targets=tokens[:, 1:])
    # the same numbers by hand: run the GRU cell step by step with leaf states
    cell = model.rnn.stack.layers[0].cell
    x = model.embedding(tokens[:, :-1])
    states = [torch.zeros(2, 6, dtype=F64, requires_grad=True)]
    for t in range(8):
        states.append(cell(x[:, t], states[-1]))
        states[-1].retain_grad()
    losses = [F.cross_entropy(model.readout.logits(h), tokens[:, t + 1], reduction="sum")
              for t, h in enumerate(states[1:])]
    total_loss = sum(losses)
    total_loss.backward(retain_graph=True)
    expected = torch.stack([s.grad for s in states], dim=1)
    torch.testing.assert_close(flow.grads, expected, rtol=RTOL, atol=ATOL)
    assert flow.loss == pytest.approx(total_loss.item(), rel=1e-12)
    last = torch.autograd.grad(losses[-1], states)
    torch.testing.assert_close(flow.last_step_grads, torch.stack(last, dim=1), rtol=RTOL, atol=ATOL)


# ----- vanishing and exploding: the linear RNN ----------------------------------------------------

class LinearCell(Cell):
    """s_t = W s_{t-1} + U x_t: the gradient's fate is decided by W alone."""

    def __init__(self, W, U):
        super().__init__()
        self.input_size, self.hidden_size, self.state_sizes = U.shape[1], W.shape[0], W.shape[0]
        self.weight_hh, self.weight_ih = torch.nn.Parameter(W), torch.nn.Parameter(U)

    def forward(self, x, h):
        return h @ self.weight_hh.T + x @ self.weight_ih.T


def orthogonal(size):
    q, r = torch.linalg.qr(torch.randn(size, size, dtype=F64))
    return q * torch.sign(torch.diagonal(r))


def last_step_flow(cell, steps, batch=3):
    g = torch.randn(cell.hidden_size, dtype=F64)
    return gradient_flow(cell, torch.randn(batch, steps, cell.input_size, dtype=F64), lambda out: out[0] @ g)


@pytest.mark.parametrize("eigenvalue", [0.9, 1.0, 1.1])
def test_linear_rnn_gradient_decays_or_grows_as_lambda_to_the_lag(eigenvalue):
    cell = LinearCell(eigenvalue * orthogonal(16), torch.randn(16, 2, dtype=F64))
    flow = last_step_flow(cell, 80)
    rate = gradient_decay_rate(flow)
    assert f"{rate:.2g}" == f"{eigenvalue:.2g}"                      # 2 significant digits, as promised
    assert rate == pytest.approx(eigenvalue, rel=1e-9)                # in fact exact: ||(W^T)^n g|| = λ^n ||g||
    lags = torch.arange(80, -1, -1, dtype=F64)
    torch.testing.assert_close(flow.last_step_norms, flow.last_step_norms[:, -1:] * eigenvalue ** lags,
                               rtol=1e-9, atol=0)


@pytest.mark.parametrize("radius", [0.9, 1.0, 1.1])
def test_linear_rnn_with_a_non_normal_matrix_decays_at_its_spectral_radius(radius):
    A = torch.randn(24, 24, dtype=F64)
    cell = LinearCell(radius * A / torch.linalg.eigvals(A).abs().max(), torch.randn(24, 2, dtype=F64))
    rate = gradient_decay_rate(last_step_flow(cell, 240), min_lag=120)     # past the transient
    assert f"{rate:.2g}" == f"{radius:.2g}"


def test_decay_rate_of_a_scalar_loss_uses_the_total_norms_and_checks_its_lags():
    cell = LinearCell(0.5 * orthogonal(4), torch.randn(4, 1, dtype=F64))
    flow = gradient_flow(cell, torch.randn(2, 12, 1, dtype=F64), lambda out: out[0][:, -1].sum())
    assert flow.last_step_norms is None
    assert gradient_decay_rate(flow) == pytest.approx(0.5, rel=1e-9)
    with pytest.raises(ValueError, match=re.escape(
            "gradient_decay_rate: need 0 <= min_lag < max_lag <= 12 (the number of steps), got min_lag=5, "
            "max_lag=5")):
        gradient_decay_rate(flow, min_lag=5, max_lag=5)
    with pytest.raises(ValueError, match=re.escape(
            "gradient_decay_rate: some gradient norms between lags 0 and 2 are 0 or not finite (vanished or "
            "overflowed in floating point); fit over fewer lags with max_lag=")):
        gradient_decay_rate(torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(TypeError, match=re.escape(
            "gradient_decay_rate: expected a GradientFlow or a tensor of norms (B, T + 1) or (T + 1,), got "
            "list")):
        gradient_decay_rate([1.0, 0.5])


# ----- step Jacobians and their spectra -----------------------------------------------------------

def test_elman_step_jacobian_is_diag_one_minus_h_squared_times_w_exactly():
    p = Problem("elman-tanh")
    jac = step_jacobians(p.cell, p.x, state=p.state)
    h = jac.states[:, 1:]                                                        # s_1 .. s_T
    W = p.cell.weight_hh.detach()
    # exact up to the last bit: the Jacobian comes from a batched recomputation of the steps, whose
    # matrix products may round the pre-activations differently from the step-by-step run
    torch.testing.assert_close(jac.jacobians, (1 - h * h)[..., None] * W, rtol=0, atol=1e-15)
    reference = elman_jacobians(p.params, elman_forward(p.params, p.xs, p.h0[0]).hs)   # (T, B, H, H)
    torch.testing.assert_close(jac.jacobians, torch.tensor(reference).transpose(0, 1), rtol=1e-12, atol=0)


def test_lstm_memory_block_is_the_forget_gate_and_its_product_the_retention():
    p = Problem("lstm")
    H = p.H
    jac = step_jacobians(p.cell, p.x, state=p.state).jacobians                   # (B, T, 2H, 2H)
    reference = lstm_forward(p.params, p.xs, *p.h0)
    f = torch.tensor(reference.f.transpose(1, 0, 2))                              # (B, T, H)
    assert torch.equal(jac[..., H:, H:], torch.diag_embed(jac[..., H:, H:].diagonal(dim1=-2, dim2=-1)))
    torch.testing.assert_close(jac[..., H:, H:].diagonal(dim1=-2, dim2=-1), f, rtol=1e-12, atol=0)
    gates = forget_gate_product(p.cell, p.x, state=p.state)
    torch.testing.assert_close(gates.gates, f, rtol=1e-12, atol=0)
    for k in range(p.T + 1):
        torch.testing.assert_close(gates.retention[:, k], torch.tensor(np.prod(reference.f[k:], axis=0)),
                                   rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("anchor", ["end", "start"])
def test_jacobian_products_equal_the_jacobian_of_the_whole_span(kind, anchor):
    p = Problem(kind, T=5, B=2)
    jac = step_jacobians(p.cell, p.x, state=p.state)
    products = jacobian_products(jac, anchor=anchor)
    sizes = jac.state_sizes

    def run(s, start, end, b):                  # s_start -> s_end of sequence b, by the cell itself
        state = s[None] if len(sizes) == 1 else tuple(t[None] for t in torch.split(s, list(sizes)))
        for t in range(start, end):
            state = p.cell(p.x[b:b + 1, t], state)
        return torch.cat(state, -1)[0] if isinstance(state, tuple) else state[0]

    T = p.T
    for b in range(2):
        for lag in range(T + 1):
            start, end = (T - lag, T) if anchor == "end" else (0, lag)
            expected = torch.autograd.functional.jacobian(lambda s: run(s, start, end, b), jac.states[b, start])
            torch.testing.assert_close(products.products[b, lag], expected, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(products.singular_values,
                               torch.tensor(np.linalg.svd(products.products.numpy(), compute_uv=False)),
                               rtol=1e-10, atol=1e-13)
    assert products.lags.tolist() == list(range(T + 1))


def test_spectrum_eigenvalues_and_singular_values_match_numpy():
    p = Problem("gru")
    spectrum = jacobian_spectrum(step_jacobians(p.cell, p.x, state=p.state))
    jac = step_jacobians(p.cell, p.x, state=p.state).jacobians.numpy()
    eig = np.linalg.eigvals(jac)
    # compare as sorted multisets: the order of eigenvalues is not defined
    ours = np.sort_complex(spectrum.eigenvalues.numpy().reshape(-1, jac.shape[-1]))
    np.testing.assert_allclose(ours, np.sort_complex(eig.reshape(-1, jac.shape[-1])), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(spectrum.singular_values.numpy(), np.linalg.svd(jac, compute_uv=False),
                               rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(spectrum.spectral_radius.numpy(), np.abs(eig).max(-1), rtol=1e-8)
    np.testing.assert_allclose(spectrum.largest_singular_value.numpy(), np.linalg.norm(jac, 2, axis=(-2, -1)),
                               rtol=1e-10)


def test_recurrent_eigenvalues_per_gate_block():
    lstm = rnnkit.LSTM(3, 6, dtype=F64, batch_first=True)
    eigs = recurrent_eigenvalues(lstm)
    W = lstm.stack.layers[0].cell.weight_hh.detach().numpy()
    assert list(eigs) == [f"stack.layers.0.cell.weight_hh[{g}]" for g in "ifgo"]
    for i, g in enumerate("ifgo"):
        expected = np.linalg.eigvals(W[6 * i:6 * (i + 1)])
        np.testing.assert_allclose(np.sort_complex(eigs[f"stack.layers.0.cell.weight_hh[{g}]"].numpy()),
                                   np.sort_complex(expected), rtol=1e-10)


# ----- Pascanu et al.'s regularizer ------------------------------------------------------------------

def brute_force_penalty(cell, x, state, loss_fn):
    """Omega from explicit per-step Jacobians (autograd.functional, one (b, k) at a time)."""
    flow = gradient_flow(cell, x, loss_fn, state=state)
    jac = step_jacobians(cell, x, state=state)
    B, T = x.shape[:2]
    total = 0.0
    for b in range(B):
        for k in range(T):
            g = flow.grads[b, k + 1]
            total += ((g @ jac.jacobians[b, k]).norm() / g.norm() - 1) ** 2
    return total / B


@pytest.mark.parametrize("kind", ["elman-tanh", "lstm", "gru"])
def test_information_flow_penalty_equals_the_formula_with_explicit_jacobians(kind):
    p = Problem(kind)
    layer = rnnkit.Recurrent(p.cell, engine="loop")
    with record_states(layer) as recording:
        output = layer(p.x, p.state)
        loss = p.loss_fn(output).sum()
    omega = information_flow_penalty(loss, recording)
    expected = brute_force_penalty(p.cell, p.x, p.state, p.loss_fn)
    torch.testing.assert_close(omega, expected, rtol=1e-10, atol=0)
    assert omega > 1e-3


def test_information_flow_penalty_is_T_times_lambda_minus_one_squared_for_a_scaled_orthogonal_rnn():
    for eigenvalue in (1.0, 0.5, 1.3):
        cell = LinearCell(eigenvalue * orthogonal(6), torch.randn(6, 2, dtype=F64))
        layer = rnnkit.Recurrent(cell)
        with record_states(layer) as recording:
            out, _ = layer(torch.randn(4, 9, 2, dtype=F64))
            loss = out.pow(2).sum()
        omega = information_flow_penalty(loss, recording)
        assert omega.item() == pytest.approx(9 * (eigenvalue - 1) ** 2, abs=1e-10)


def test_information_flow_penalty_gradient_flows_through_the_jacobians_only():
    """d Omega / d W_hh, with dL/ds held constant as in Pascanu et al., against the same
    formula built from autograd.functional Jacobians with create_graph=True."""
    p = Problem("gru", T=4, B=2)
    layer = rnnkit.Recurrent(p.cell, engine="loop")
    with record_states(layer) as recording:
        loss = p.loss_fn(layer(p.x, p.state)).sum()
    (ours,) = torch.autograd.grad(information_flow_penalty(loss, recording), p.cell.weight_hh)

    flow = gradient_flow(p.cell, p.x, p.loss_fn, state=p.state)
    expected_omega = 0.0
    for b in range(2):
        for k in range(p.T):
            J = torch.autograd.functional.jacobian(lambda s: p.cell(p.x[b:b + 1, k], s[None])[0],
                                                   flow.states[b, k], create_graph=True)
            g = flow.grads[b, k + 1]
            expected_omega = expected_omega + ((g @ J).norm() / g.norm() - 1) ** 2
    (expected,) = torch.autograd.grad(expected_omega / 2, p.cell.weight_hh)
    torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-12)
    assert expected.abs().max() > 1e-4


# ----- bad input ------------------------------------------------------------------------------------

def test_gradient_flow_errors_say_what_to_do():
    cell = ElmanCell(2, 3)
    x = torch.randn(2, 5, 2)
    with pytest.raises(ValueError, match=re.escape(
            "gradient_flow: pass exactly one of loss_fn= (a function of the model's output returning per-step "
            "losses (B, T) or a scalar) and targets= (for a LanguageModel)")):
        gradient_flow(cell, x)
    with pytest.raises(ValueError, match=re.escape(
            "gradient_flow: loss_fn returned losses of shape (2, 4), but the layer ran 5 steps; return per-step "
            "losses (B, 5) or (5,), or a scalar")):
        gradient_flow(cell, x, lambda out: out[0][:, 1:].sum(-1))
    with pytest.raises(TypeError, match=re.escape(
            "gradient_flow: loss_fn must return a floating-point tensor, got float")):
        gradient_flow(cell, x, lambda out: 1.0)
    with pytest.raises(TypeError, match=re.escape(
            "gradient_flow: targets= works for a LanguageModel (per-step cross-entropy); for Recurrent pass "
            "loss_fn=, a function of the model's output that returns per-step losses (B, T)")):
        gradient_flow(cell, x, targets=torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=re.escape(
            "gradient_flow: layer must be an index in [0, 2) or one of ['stack.layers.0', 'stack.layers.1'], "
            "got 2")):
        gradient_flow(rnnkit.GRU(2, 3, num_layers=2, batch_first=True), x, lambda out: out[0].sum(), layer=2)
    with pytest.raises(ValueError, match=re.escape(
            "gradient_flow: found no rnnkit.Recurrent layer in Linear; pass a Cell, a Recurrent layer, or a "
            "model built from them (rnnkit.LSTM, LanguageModel, ...)")):
        gradient_flow(torch.nn.Linear(2, 2), x, lambda out: out.sum())
    with pytest.raises(TypeError, match=re.escape(
            "gradient_flow: expected a Cell, a Recurrent layer or a model (torch.nn.Module) built from them, "
            "got str")):
        gradient_flow("lstm", x, lambda out: out.sum())


def test_language_model_targets_must_match_the_inputs():
    model = LanguageModel(LanguageModelConfig(vocab_size=5, hidden_size=4, embedding_size=3))
    tokens = torch.randint(5, (2, 6))
    with pytest.raises(ValueError, match=re.escape(
            "gradient_flow: expected targets of shape (2, 6) (token ids, one per input), got (2, 5)")):
        gradient_flow(model, tokens, targets=tokens[:, 1:])


def test_a_layer_run_twice_is_refused():
    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = rnnkit.Recurrent(ElmanCell(2, 3))

        def forward(self, x):
            return self.layer(x)[0] + self.layer(x)[0]

    with pytest.raises(ValueError, match=re.escape(
            "step_jacobians: recurrent layer 'layer' ran 2 times in one forward pass; the analysis needs exactly "
            "one run over the whole sequence (a model that steps a layer one token at a time cannot be analysed "
            "this way)")):
        step_jacobians(Twice(), torch.randn(1, 4, 2))


def test_forget_gates_need_an_lstm_and_jacobian_tools_check_shapes():
    with pytest.raises(TypeError, match=re.escape(
            "forget_gate_product: the layer runs a GRUCell; forget gates belong to the LSTMCell (for other cells "
            "look at step_jacobians)")):
        forget_gate_product(GRUCell(2, 3), torch.randn(1, 4, 2))
    with pytest.raises(ValueError, match=re.escape(
            "jacobian_products: expected StepJacobians or a tensor of Jacobians (B, T, S, S), got (4, 3, 3)")):
        jacobian_products(torch.zeros(4, 3, 3))
    with pytest.raises(ValueError, match=re.escape(
            "jacobian_products: anchor must be 'end' (d s_T / d s_k) or 'start' (d s_t / d s_0), got 'middle'")):
        jacobian_products(torch.zeros(1, 4, 3, 3), anchor="middle")
    with pytest.raises(ValueError, match=re.escape(
            "step_jacobians: padded batches (lengths) are not supported here; pass sequences of one length")):
        step_jacobians(rnnkit.models.SequenceClassifier(2, 3, hidden_size=4),
                       (torch.randn(2, 5, 2), torch.tensor([5, 3])))


def test_penalty_needs_a_recording_with_probes():
    layer = rnnkit.Recurrent(ElmanCell(2, 3))
    with record_states(layer, probe=False) as recording:
        loss = layer(torch.randn(1, 3, 2))[0].sum()
    with pytest.raises(ValueError, match=re.escape(
            "information_flow_penalty: the recording was made with probe=False; use record_states(model)")):
        information_flow_penalty(loss, recording)
    with pytest.raises(TypeError, match=re.escape(
            "information_flow_penalty: expected the Recording from `with record_states(model) as recording:`, "
            "got dict")):
        information_flow_penalty(loss, {})


# ----- the trainer's options ----------------------------------------------------------------------------

def test_trainer_adds_the_weighted_penalty_to_the_loss(tmp_path):
    from rnnkit.data.batching import ContiguousBatches
    from rnnkit.train import TrainConfig, Trainer
    from rnnkit.train.metrics import MetricsLog

    ids = torch.randint(6, (200,))
    model = LanguageModel(LanguageModelConfig(vocab_size=6, cell="lstm", hidden_size=5, embedding_size=3))
    model.double()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    weight, lr = 0.7, 0.05
    config = TrainConfig(batch_size=2, truncation=6, optimizer="sgd", momentum=0.0, lr=lr, clip_norm=None,
                         schedule="constant", max_steps=1, eval_every=1000, information_flow=weight)
    Trainer(model, config, tmp_path / "run", progress=False).fit(ids[:150], ids[150:])

    def one_step(penalty_weight):
        twin = LanguageModel(model.config).double()
        twin.load_state_dict(start)
        inputs, targets = next(iter(ContiguousBatches(ids[:150], 2, 6)))
        with record_states(twin) as recording:
            loss, _ = twin.loss(inputs, targets)
        (loss + penalty_weight * information_flow_penalty(loss, recording)).backward()
        return {n: p.detach() - lr * p.grad for n, p in twin.named_parameters()}, loss

    expected, _ = one_step(weight)
    plain, _ = one_step(0.0)
    for name, value in model.named_parameters():
        torch.testing.assert_close(value.detach(), expected[name], rtol=1e-10, atol=1e-12)
    moved = max((expected[n] - plain[n]).abs().max().item() for n in expected)
    assert moved > 1e-6                                  # the penalty changed the step
    records = [r for r in MetricsLog(tmp_path / "run" / "metrics.jsonl").read() if r["kind"] == "train"]
    assert records[0]["information_flow"] > 0
    assert model.rnn.engine == "native"


def test_train_config_checks_the_new_options():
    from rnnkit.train import TrainConfig

    with pytest.raises(ValueError, match=re.escape(
            "TrainConfig: information_flow is the regularizer's weight, a number >= 0 (0 = off), got -1.0")):
        TrainConfig(information_flow=-1.0)
    with pytest.raises(ValueError, match=re.escape(
            "TrainConfig: recurrent_init must be None or one of ['orthogonal', 'identity'], got 'eye'")):
        TrainConfig(recurrent_init="eye")
    with pytest.raises(ValueError, match=re.escape("TrainConfig: recurrent_gain must be a positive number, got 0")):
        TrainConfig(recurrent_gain=0)
    assert TrainConfig.from_dict(TrainConfig(information_flow=0.5).to_dict()).information_flow == 0.5


def test_step_jacobians_without_vectorised_backward_give_the_same_numbers(monkeypatch):
    """Cells whose operations have no batching rule fall back to one backward pass per row."""
    p = Problem("lstm")
    expected = step_jacobians(p.cell, p.x, state=p.state).jacobians
    grad = torch.autograd.grad

    def no_batching(*args, is_grads_batched=False, **kwargs):
        if is_grads_batched:
            raise RuntimeError("Batching rule not implemented")
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", no_batching)
    torch.testing.assert_close(step_jacobians(p.cell, p.x, state=p.state).jacobians, expected,
                               rtol=1e-13, atol=1e-15)
