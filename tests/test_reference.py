"""The NumPy reference models (hand-derived BPTT) against torch autograd and finite differences.

Every comparison is float64 at rtol 1e-6: losses, states and every gradient (weights,
biases, inputs, initial state), for full and truncated BPTT.
"""
import ast
import pathlib
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from rnnkit.reference import (elman_bptt, elman_forward, elman_jacobians, gru_backward,
                              gru_forward, lstm_backward, lstm_forward)

F64 = torch.float64
RTOL, ATOL = 1e-6, 1e-10
KINDS = ["elman-tanh", "elman-relu", "lstm", "gru"]
# (T, B, X, H, V): includes T=1 and B=1
SHAPES = [(1, 1, 2, 3, 4), (1, 3, 2, 4, 3), (5, 1, 3, 4, 5), (6, 3, 4, 5, 3)]
REFERENCE_DIR = pathlib.Path(__file__).resolve().parents[1] / "rnnkit" / "reference"


# ----------------------------------------------------------------------------------------
# problem setup: random parameters, inputs and loss data for one model kind
# ----------------------------------------------------------------------------------------

def make_problem(kind, rng, T, B, X, H, V):
    """Random float64 parameters, inputs, initial state and loss data (targets or G)."""
    def normal(*shape, scale=1.0):
        return rng.normal(scale=scale, size=shape)

    xs = normal(T, B, X)
    if kind.startswith("elman"):
        params = {"W_sx": normal(H, X, scale=0.6), "W_ss": normal(H, H, scale=0.8 / np.sqrt(H)),
                  "b_s": normal(H, scale=0.3), "W_o": normal(V, H), "b_o": normal(V, scale=0.3)}
        if kind == "elman-relu":    # mostly active units, so gradients travel several steps
            params["b_s"] = np.abs(params["b_s"]) + 0.5
        # split of b_s into torch's two biases
        extra = {"bias_split": normal(H), "targets": rng.integers(0, V, size=(T, B))}
        init = (normal(B, H, scale=0.5),)
    else:
        gates = 4 if kind == "lstm" else 3
        params = {"weight_ih": normal(gates * H, X, scale=0.6),
                  "weight_hh": normal(gates * H, H, scale=0.8 / np.sqrt(H)),
                  "bias_ih": normal(gates * H, scale=0.3), "bias_hh": normal(gates * H, scale=0.3)}
        init = tuple(normal(B, H, scale=0.5) for _ in range(2 if kind == "lstm" else 1))
        extra = {"G": normal(T, B, H), "GhT": normal(B, H), "GcT": normal(B, H)}
    return params, xs, init, extra


def reference_run(kind, params, xs, init, extra, truncation=None):
    """(loss, grads) from rnnkit.reference."""
    if kind.startswith("elman"):
        return elman_bptt(params, xs, extra["targets"], init[0], truncation=truncation,
                          nonlinearity=kind.split("-")[1])
    G, GhT, GcT = extra["G"], extra["GhT"], extra["GcT"]
    if kind == "lstm":
        cache = lstm_forward(params, xs, *init)
        grads = lstm_backward(params, cache, G, GhT, GcT, truncation=truncation)
        loss = (cache.outputs * G).sum() + (cache.hs[-1] * GhT).sum() + (cache.cs[-1] * GcT).sum()
    else:
        cache = gru_forward(params, xs, *init)
        grads = gru_backward(params, cache, G, GhT, truncation=truncation)
        loss = (cache.outputs * G).sum() + (cache.hs[-1] * GhT).sum()
    return float(loss), grads


class TorchTwin:
    """The same model as torch.nn.RNN / LSTM / GRU (+ readout), differentiated by autograd."""

    def __init__(self, kind, params, xs, init, extra):
        self.kind, self.extra = kind, extra
        T, B, X = xs.shape
        t64 = lambda a: torch.tensor(a, dtype=F64, requires_grad=True)  # noqa: E731
        self.xs, self.init = t64(xs), tuple(t64(s) for s in init)
        if kind.startswith("elman"):
            H = params["W_ss"].shape[0]
            self.module = torch.nn.RNN(X, H, nonlinearity=kind.split("-")[1], dtype=F64)
            weights = {"weight_ih_l0": params["W_sx"], "weight_hh_l0": params["W_ss"],
                       "bias_ih_l0": extra["bias_split"],
                       "bias_hh_l0": params["b_s"] - extra["bias_split"]}
            self.W_o, self.b_o = t64(params["W_o"]), t64(params["b_o"])
            self.targets = torch.tensor(extra["targets"], dtype=torch.int64)
        else:
            H = params["weight_hh"].shape[1]
            cls = torch.nn.LSTM if kind == "lstm" else torch.nn.GRU
            self.module = cls(X, H, dtype=F64)
            weights = {f"{k}_l0": v for k, v in params.items()}
            self.G = {k: torch.tensor(v, dtype=F64) for k, v in extra.items()}
        with torch.no_grad():
            for name, value in weights.items():
                getattr(self.module, name).copy_(torch.tensor(value, dtype=F64))

    def run(self, xs, state):
        """Outputs (t, B, H) and final state tuple, starting from ``state`` (tuple of (B, H))."""
        if self.kind == "lstm":
            out, (h, c) = self.module(xs, (state[0][None], state[1][None]))
            return out, (h[0], c[0])
        out, h = self.module(xs, state[0][None])
        return out, (h[0],)

    def step_loss(self, t, out_t, final):
        """Loss term of step t (1-based) from the output h_t; ``final`` is used when t == T."""
        T = self.xs.shape[0]
        if self.kind.startswith("elman"):
            logits = out_t @ self.W_o.T + self.b_o
            return F.cross_entropy(logits, self.targets[t - 1], reduction="sum")
        loss = (out_t * self.G["G"][t - 1]).sum()
        if t == T:
            loss = loss + (final[0] * self.G["GhT"]).sum()
            if self.kind == "lstm":
                loss = loss + (final[1] * self.G["GcT"]).sum()
        return loss

    def full(self):
        out, final = self.run(self.xs, self.init)
        T = self.xs.shape[0]
        loss = sum(self.step_loss(t, out[t - 1], final) for t in range(1, T + 1))
        loss.backward()
        return loss.item(), self.grads(), out.detach().numpy()

    def truncated(self, k):
        """Truncated BPTT by construction: for each t, rerun the cell for (at most) k steps
        from the detached state at t-k (or from the initial state when t-k <= 0)."""
        T = self.xs.shape[0]
        states = [tuple(s.detach() for s in self.init)]
        with torch.no_grad():
            for t in range(T):
                states.append(self.run(self.xs[t:t + 1], states[-1])[1])
        total = 0.0
        for t in range(1, T + 1):
            s = t - k
            start = self.init if s <= 0 else states[s]
            out, final = self.run(self.xs[max(s, 0):t], start)
            total = total + self.step_loss(t, out[-1], final)
        total.backward()
        return total.item(), self.grads()

    def grads(self):
        m = self.module
        if self.kind.startswith("elman"):
            # b_s = bias_ih + bias_hh, so both torch biases carry dL/db_s
            torch.testing.assert_close(m.bias_ih_l0.grad, m.bias_hh_l0.grad, rtol=1e-12, atol=0)
            g = {"W_sx": m.weight_ih_l0.grad, "W_ss": m.weight_hh_l0.grad, "b_s": m.bias_ih_l0.grad,
                 "W_o": self.W_o.grad, "b_o": self.b_o.grad}
        else:
            g = {k: getattr(m, f"{k}_l0").grad
                 for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            if self.kind == "lstm":
                g["c0"] = self.init[1].grad
        g["xs"], g["h0"] = self.xs.grad, self.init[0].grad
        return {k: v.numpy().copy() for k, v in g.items()}


def assert_grads_close(ref, twin, rtol=RTOL, atol=ATOL, what=""):
    assert sorted(ref) == sorted(twin), f"{what}: keys {sorted(ref)} vs {sorted(twin)}"
    for key in twin:
        assert ref[key].shape == twin[key].shape, f"{what} {key}: shape"
        assert ref[key].dtype == np.float64, f"{what} {key}: dtype {ref[key].dtype}"
        np.testing.assert_allclose(ref[key], twin[key], rtol=rtol, atol=atol, err_msg=f"{what} {key}")


# ----------------------------------------------------------------------------------------
# full BPTT against autograd
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape_index", range(len(SHAPES)))
def test_full_bptt_matches_autograd(kind, shape_index):
    T, B, X, H, V = SHAPES[shape_index]
    rng = np.random.default_rng(1000 * shape_index + KINDS.index(kind))
    params, xs, init, extra = make_problem(kind, rng, T, B, X, H, V)
    loss, grads = reference_run(kind, params, xs, init, extra)
    twin_loss, twin_grads, twin_out = TorchTwin(kind, params, xs, init, extra).full()
    np.testing.assert_allclose(loss, twin_loss, rtol=RTOL, atol=ATOL)
    assert_grads_close(grads, twin_grads, what=kind)
    # the forward states agree as well
    if kind.startswith("elman"):
        hs = elman_forward(params, xs, init[0], kind.split("-")[1]).hs
    else:
        hs = (lstm_forward(params, xs, *init) if kind == "lstm" else gru_forward(params, xs, *init)).hs
    np.testing.assert_allclose(hs[1:], twin_out, rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(hs[0], init[0])


@settings(max_examples=12, deadline=None)
@given(kind=st.sampled_from(KINDS), T=st.integers(1, 6), B=st.integers(1, 3),
       X=st.integers(1, 4), H=st.integers(1, 4), V=st.integers(2, 4), seed=st.integers(0, 2**32 - 1))
def test_full_bptt_matches_autograd_random_shapes(kind, T, B, X, H, V, seed):
    rng = np.random.default_rng(seed)
    params, xs, init, extra = make_problem(kind, rng, T, B, X, H, V)
    loss, grads = reference_run(kind, params, xs, init, extra)
    twin_loss, twin_grads, _ = TorchTwin(kind, params, xs, init, extra).full()
    np.testing.assert_allclose(loss, twin_loss, rtol=RTOL, atol=ATOL)
    assert_grads_close(grads, twin_grads, what=f"{kind} T={T} B={B} X={X} H={H}")


def test_elman_probs_and_logits_match_torch():
    rng = np.random.default_rng(11)
    params, xs, init, extra = make_problem("elman-tanh", rng, 4, 2, 3, 5, 6)
    cache = elman_forward(params, xs, init[0])
    logits = cache.hs[1:] @ params["W_o"].T + params["b_o"]
    np.testing.assert_allclose(cache.logits, logits, rtol=1e-12)
    np.testing.assert_allclose(cache.probs, torch.softmax(torch.tensor(logits), -1).numpy(), rtol=1e-12)
    np.testing.assert_allclose(cache.probs.sum(-1), 1.0, rtol=1e-12)
    assert cache.z1.shape == (4, 2, 5) and cache.hs.shape == (5, 2, 5)
    np.testing.assert_allclose(np.tanh(cache.z1), cache.hs[1:], rtol=1e-12)


# ----------------------------------------------------------------------------------------
# truncated BPTT
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("T,B", [(5, 2), (4, 1)])
@pytest.mark.parametrize("k", [1, 2, 3, "T"])
def test_truncated_bptt_matches_autograd_twin(kind, T, B, k):
    k = T if k == "T" else k
    rng = np.random.default_rng(7 * T + 31 * B + 101 * k + KINDS.index(kind))
    params, xs, init, extra = make_problem(kind, rng, T, B, 3, 4, 3)
    loss, grads = reference_run(kind, params, xs, init, extra, truncation=k)
    twin_loss, twin_grads = TorchTwin(kind, params, xs, init, extra).truncated(k)
    np.testing.assert_allclose(loss, twin_loss, rtol=RTOL, atol=ATOL)
    assert_grads_close(grads, twin_grads, what=f"{kind} k={k}")


@pytest.mark.parametrize("kind", KINDS)
def test_truncation_at_least_T_equals_full(kind):
    T = 5
    rng = np.random.default_rng(50 + KINDS.index(kind))
    params, xs, init, extra = make_problem(kind, rng, T, 2, 3, 4, 3)
    loss, full = reference_run(kind, params, xs, init, extra)
    for k in (T, T + 1, 100):
        loss_k, grads_k = reference_run(kind, params, xs, init, extra, truncation=k)
        assert loss_k == pytest.approx(loss, rel=1e-12)
        assert_grads_close(grads_k, full, rtol=1e-10, atol=1e-12, what=f"{kind} k={k}")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("k", [1, 2, 4])
def test_truncation_below_T_changes_the_gradient(kind, k):
    T = 5
    rng = np.random.default_rng(80 + k + 10 * KINDS.index(kind))
    params, xs, init, extra = make_problem(kind, rng, T, 2, 3, 4, 3)
    _, full = reference_run(kind, params, xs, init, extra)
    _, trunc = reference_run(kind, params, xs, init, extra, truncation=k)
    w_hh = "W_ss" if kind.startswith("elman") else "weight_hh"
    for key in (w_hh, "h0", "xs"):
        assert not np.allclose(trunc[key], full[key], rtol=1e-3, atol=1e-8), f"{kind} k={k} {key}"
    # the gradient of the last input only involves its own step, whatever k is
    np.testing.assert_allclose(trunc["xs"][-1], full["xs"][-1], rtol=1e-10, atol=1e-12)
    if kind.startswith("elman"):                    # the readout never sees the truncation
        np.testing.assert_allclose(trunc["W_o"], full["W_o"], rtol=1e-12)


def test_truncation_one_elman_is_local():
    """k=1: each L_t reaches only step t, so dL/dh0 comes from L_1 alone."""
    rng = np.random.default_rng(3)
    params, xs, init, extra = make_problem("elman-tanh", rng, 4, 2, 3, 4, 3)
    _, g1 = reference_run("elman-tanh", params, xs, init, extra, truncation=1)
    _, g_first = reference_run("elman-tanh", params, xs[:1], init,
                               {**extra, "targets": extra["targets"][:1]})
    np.testing.assert_allclose(g1["h0"], g_first["h0"], rtol=1e-12)


@pytest.mark.parametrize("bad", [0, -1, 1.5, 2.0, True, "3", [2]])
def test_bad_truncation_raises(bad):
    rng = np.random.default_rng(0)
    message = re.escape(f"truncation must be a positive integer or None, got {bad!r}")
    for kind in ("elman-tanh", "lstm", "gru"):
        params, xs, init, extra = make_problem(kind, rng, 3, 2, 2, 3, 3)
        with pytest.raises(ValueError, match=message):
            reference_run(kind, params, xs, init, extra, truncation=bad)


def test_bad_truncation_message_is_exact():
    rng = np.random.default_rng(0)
    params, xs, init, extra = make_problem("elman-tanh", rng, 3, 2, 2, 3, 3)
    with pytest.raises(ValueError) as info:
        elman_bptt(params, xs, extra["targets"], init[0], truncation=0)
    assert str(info.value) == "truncation must be a positive integer or None, got 0"


def test_numpy_integer_truncation_is_accepted():
    rng = np.random.default_rng(5)
    params, xs, init, extra = make_problem("gru", rng, 4, 2, 2, 3, 3)
    _, a = reference_run("gru", params, xs, init, extra, truncation=np.int64(2))
    _, b = reference_run("gru", params, xs, init, extra, truncation=2)
    assert_grads_close(a, b, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------
# Jacobians
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("B", [1, 3])
def test_elman_jacobians_match_autograd(nonlinearity, B):
    T, X, H = 4, 3, 5
    rng = np.random.default_rng(17 + B + (nonlinearity == "relu"))
    params, xs, init, _ = make_problem(f"elman-{nonlinearity}", rng, T, B, X, H, 3)
    hs = elman_forward(params, xs, init[0], nonlinearity).hs
    J = elman_jacobians(params, hs, nonlinearity)
    assert J.shape == (T, B, H, H)
    W_sx, W_ss, b_s = (torch.tensor(params[k]) for k in ("W_sx", "W_ss", "b_s"))
    act = torch.tanh if nonlinearity == "tanh" else torch.relu
    for t in range(T):
        x_t = torch.tensor(xs[t])
        step = lambda h: act(x_t @ W_sx.T + h @ W_ss.T + b_s)  # noqa: E731,B023
        full = torch.autograd.functional.jacobian(step, torch.tensor(hs[t]))   # (B, H, B, H)
        blocks = torch.stack([full[b, :, b, :] for b in range(B)]).numpy()
        np.testing.assert_allclose(J[t], blocks, rtol=RTOL, atol=ATOL)
    if nonlinearity == "tanh":      # the closed form of the docstring
        expected = (1 - hs[1:] ** 2)[..., None] * params["W_ss"]
        np.testing.assert_allclose(J, expected, rtol=1e-12)


def test_elman_jacobians_product_gives_long_range_gradient():
    """d s_T / d s_0 = J_{T-1} ... J_0 equals the BPTT gradient of a loss on s_T only
    (checked through autograd of the whole unrolled recursion)."""
    T, B, X, H = 5, 2, 3, 4
    rng = np.random.default_rng(23)
    params, xs, init, _ = make_problem("elman-tanh", rng, T, B, X, H, 3)
    hs = elman_forward(params, xs, init[0]).hs
    J = elman_jacobians(params, hs)
    prod = np.broadcast_to(np.eye(H), (B, H, H))
    for t in range(T):
        prod = J[t] @ prod
    W_sx, W_ss, b_s = (torch.tensor(params[k]) for k in ("W_sx", "W_ss", "b_s"))

    def unroll(h):
        for t in range(T):
            h = torch.tanh(torch.tensor(xs[t]) @ W_sx.T + h @ W_ss.T + b_s)
        return h

    full = torch.autograd.functional.jacobian(unroll, torch.tensor(init[0]))
    np.testing.assert_allclose(prod, np.stack([full[b, :, b, :].numpy() for b in range(B)]),
                               rtol=RTOL, atol=ATOL)


# ----------------------------------------------------------------------------------------
# finite differences: an oracle independent of torch
# ----------------------------------------------------------------------------------------

def central_difference(loss_of, arrays, eps=1e-6):
    """Central-difference gradient of ``loss_of()`` w.r.t. every entry of every array
    (arrays are perturbed in place and restored)."""
    out = {}
    for name, a in arrays.items():
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            old = a[idx]
            a[idx] = old + eps
            up = loss_of()
            a[idx] = old - eps
            down = loss_of()
            a[idx] = old
            g[idx] = (up - down) / (2 * eps)
        out[name] = g
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_match_finite_differences(kind):
    rng = np.random.default_rng(2024 + KINDS.index(kind))
    params, xs, init, extra = make_problem(kind, rng, 3, 2, 2, 3, 3)
    init = [s.copy() for s in init]
    if kind == "elman-relu":    # keep away from the kink, where differences are meaningless
        z1 = elman_forward(params, xs, init[0], "relu").z1
        assert np.abs(z1).min() > 1e-3
    _, grads = reference_run(kind, params, xs, init, extra)
    arrays = {**params, "xs": xs, "h0": init[0]}
    if kind == "lstm":
        arrays["c0"] = init[1]
    numeric = central_difference(lambda: reference_run(kind, params, xs, init, extra)[0], arrays)
    for name, g in numeric.items():
        np.testing.assert_allclose(grads[name], g, rtol=1e-5, atol=1e-8, err_msg=f"{kind} {name}")


# ----------------------------------------------------------------------------------------
# numerical stability, validation, no torch inside the reference
# ----------------------------------------------------------------------------------------

def test_extreme_inputs_stay_finite_without_warnings():
    rng = np.random.default_rng(9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for kind in KINDS:
            params, xs, init, extra = make_problem(kind, rng, 3, 2, 3, 4, 3)
            xs = xs * 1e4
            if kind.startswith("elman"):
                params = {**params, "W_o": params["W_o"] * 1e3}
            loss, grads = reference_run(kind, params, xs, init, extra)
            assert np.isfinite(loss)
            assert all(np.isfinite(g).all() for g in grads.values()), kind
            if kind.startswith("elman"):     # the loss is still exact at huge logits
                twin_loss, _, _ = TorchTwin(kind, params, xs, init, extra).full()
                assert loss == pytest.approx(twin_loss, rel=1e-10)


def test_input_validation():
    rng = np.random.default_rng(1)
    params, xs, init, extra = make_problem("elman-tanh", rng, 3, 2, 2, 3, 3)
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'"):
        elman_bptt(params, xs, extra["targets"], init[0], nonlinearity="sigmoid")
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 3\)"):
        elman_bptt(params, xs, extra["targets"] + 3, init[0])
    with pytest.raises(ValueError, match="expected h0 of shape"):
        elman_forward(params, xs, np.zeros((2, 4)))
    with pytest.raises(ValueError, match="expected at least one time step"):
        elman_forward(params, xs[:0], init[0])
    with pytest.raises(ValueError, match="missing"):
        elman_forward({k: v for k, v in params.items() if k != "W_ss"}, xs, init[0])
    lp, lxs, linit, _ = make_problem("lstm", rng, 3, 2, 2, 3, 3)
    cache = lstm_forward(lp, lxs, *linit)
    with pytest.raises(ValueError, match="expected d_outputs of shape"):
        lstm_backward(lp, cache, np.zeros((2, 2, 3)))


def test_zero_initial_state_and_missing_upstream_default_to_zeros():
    rng = np.random.default_rng(4)
    params, xs, _, extra = make_problem("lstm", rng, 3, 2, 2, 3, 3)
    zeros = np.zeros((2, 3))
    a = lstm_backward(params, lstm_forward(params, xs, None, None), extra["G"])
    b = lstm_backward(params, lstm_forward(params, xs, zeros, zeros), extra["G"], zeros, zeros)
    assert_grads_close(a, b, rtol=0, atol=0)


def test_reference_does_not_use_torch():
    """Statically: no module in rnnkit/reference imports torch. Dynamically: the package
    imports and runs in a fresh interpreter where importing torch is impossible."""
    files = sorted(REFERENCE_DIR.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "elman.py", "lstm.py", "gru.py"}
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "torch" for n in names), f"{f.name} imports torch"
    code = f"""
import importlib.util, sys
import numpy as np
sys.modules["torch"] = None          # any 'import torch' now raises ImportError
spec = importlib.util.spec_from_file_location(
    "standalone_reference", {str(REFERENCE_DIR / "__init__.py")!r},
    submodule_search_locations=[{str(REFERENCE_DIR)!r}])
ref = importlib.util.module_from_spec(spec)
sys.modules["standalone_reference"] = ref
spec.loader.exec_module(ref)
rng = np.random.default_rng(0)
p = {{"W_sx": rng.normal(size=(3, 2)), "W_ss": rng.normal(size=(3, 3)), "b_s": np.zeros(3),
     "W_o": rng.normal(size=(4, 3)), "b_o": np.zeros(4)}}
loss, g = ref.elman_bptt(p, rng.normal(size=(2, 1, 2)), np.array([[0], [3]]), np.zeros((1, 3)), truncation=1)
assert "torch" not in {{m.split(".")[0] for m in sys.modules if sys.modules[m] is not None}}
print("ok", sorted(ref.__all__))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


# ----------------------------------------------------------------------------------------
# the oracle against rnnkit's own cells on the loop engine (autograd through rnnkit's maths)
# ----------------------------------------------------------------------------------------

def _rnnkit_twin_grads(cell, xs, h0, d_outputs, truncation):
    """Autograd gradients of sum_t <d_outputs[t], h_t> with rnnkit's loop engine.

    Truncated: the term of step t is backpropagated from a state detached k steps earlier.
    """
    import rnnkit

    layer = rnnkit.Recurrent(cell, engine="loop", batch_first=False)
    x = torch.tensor(xs, requires_grad=True)
    state0 = tuple(torch.tensor(s, requires_grad=True) for s in h0)
    wrap = (lambda s: s[0]) if len(state0) == 1 else tuple
    steps = x.shape[0]
    g = torch.tensor(d_outputs)
    if truncation is None:
        out, _ = layer(x, wrap(state0))
        (out * g).sum().backward()
    else:
        with torch.no_grad():
            _, states = zip(*[layer(x[:t], wrap(state0)) for t in range(1, steps + 1)])
        for t in range(steps):
            start = t + 1 - truncation
            if start <= 0:
                out, _ = layer(x[: t + 1], wrap(state0))
            else:
                detached = tuple(s.detach() for s in (states[start - 1] if len(state0) > 1
                                                      else (states[start - 1],)))
                out, _ = layer(x[start: t + 1], wrap(detached))
            (out[-1] * g[t]).sum().backward()
    grads = {n: p.grad.numpy() for n, p in cell.named_parameters()}
    grads["xs"] = x.grad.numpy()
    grads.update({k: s.grad.numpy() for k, s in zip(("h0", "c0"), state0)})
    return grads


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("truncation", [None, 1, 3])
def test_reference_equals_rnnkit_cells_on_the_loop_engine(kind, truncation):
    import rnnkit
    from rnnkit.reference import gru_backward, gru_forward, lstm_backward, lstm_forward

    rng = np.random.default_rng(11 if kind == "lstm" else 12)
    T, B, X, H = 6, 3, 4, 5
    cell = (rnnkit.cells.LSTMCell if kind == "lstm" else rnnkit.cells.GRUCell)(X, H, dtype=torch.float64)
    params = {n: p.detach().numpy().copy() for n, p in cell.named_parameters()}
    xs = rng.standard_normal((T, B, X))
    h0 = [rng.standard_normal((B, H)) for _ in range(2 if kind == "lstm" else 1)]
    d_outputs = rng.standard_normal((T, B, H))
    if kind == "lstm":
        expected = lstm_backward(params, lstm_forward(params, xs, *h0), d_outputs, truncation=truncation)
    else:
        expected = gru_backward(params, gru_forward(params, xs, *h0), d_outputs, truncation=truncation)
    got = _rnnkit_twin_grads(cell, xs, h0, d_outputs, truncation)
    for name, value in got.items():
        np.testing.assert_allclose(value, expected[name], rtol=1e-6, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("truncation", [None, 2])
def test_reference_elman_bptt_equals_rnnkit_elman_cell_with_a_readout(truncation):
    import rnnkit

    rng = np.random.default_rng(5)
    T, B, X, H, V = 7, 2, 3, 4, 6
    cell = rnnkit.cells.ElmanCell(X, H, dtype=torch.float64)
    readout = torch.nn.Linear(H, V, dtype=torch.float64)
    params = {"W_sx": cell.weight_ih.detach().numpy(), "W_ss": cell.weight_hh.detach().numpy(),
              "b_s": (cell.bias_ih + cell.bias_hh).detach().numpy(),
              "W_o": readout.weight.detach().numpy(), "b_o": readout.bias.detach().numpy()}
    xs, h0 = rng.standard_normal((T, B, X)), rng.standard_normal((B, H))
    targets = rng.integers(0, V, size=(T, B))
    loss, expected = elman_bptt(params, xs, targets, h0, truncation=truncation)
    # the readout's gradient on h_t is the upstream gradient of a loss linear in h_t
    cache = elman_forward(params, xs, h0)
    g = cache.probs.copy()
    np.put_along_axis(g, targets[..., None], np.take_along_axis(g, targets[..., None], -1) - 1.0, -1)
    got = _rnnkit_twin_grads(cell, xs, [h0], g @ params["W_o"], truncation)
    np.testing.assert_allclose(got["weight_hh"], expected["W_ss"], rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(got["weight_ih"], expected["W_sx"], rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(got["bias_ih"], expected["b_s"], rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(got["xs"], expected["xs"], rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(got["h0"], expected["h0"], rtol=1e-6, atol=1e-10)
    out, _ = rnnkit.Recurrent(cell, batch_first=False)(torch.tensor(xs), torch.tensor(h0))
    torch_loss = torch.nn.functional.cross_entropy(readout(out).reshape(-1, V),
                                                   torch.tensor(targets).reshape(-1), reduction="sum")
    assert abs(torch_loss.item() - loss) <= 1e-9 * abs(loss)
