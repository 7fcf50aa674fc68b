"""The scan engine and the linear recurrences under it agree with stepping through time.

Every comparison is in float64 on fresh random inputs: outputs, final states and all
gradients, against the ``loop`` engine (for cells) or a plain Python loop written here
(for the recurrence functions).
"""
import contextlib
import math
import re
from unittest import mock

import pytest
import torch
from conftest import F64, assert_close
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnkit
from rnnkit.cells import LSTMCell
from rnnkit.cells.base import Cell
from rnnkit.cells.linear import LinearLeakyCell, LTICell, MinGRUCell, MinLSTMCell
from rnnkit.engines import AUTO_PREFERENCE, ENGINES
from rnnkit.engines.loop import LoopEngine
from rnnkit.engines.scan import ScanEngine, linear_recurrence, log_linear_recurrence
from rnnkit.models.hmm import inference as hmm_module
from rnnkit.models.hmm import scans as hmm_scans

CELLS = {
    "linear-leaky": lambda x, h, bias: LinearLeakyCell(x, h, alpha=torch.rand(h, dtype=F64) * 0.9 + 0.05,
                                                       bias=bias, dtype=F64),
    "linear-leaky-learned": lambda x, h, bias: LinearLeakyCell(x, h, alpha=0.3, learn_alpha=True, bias=bias,
                                                               dtype=F64),
    "mingru": lambda x, h, bias: MinGRUCell(x, h, bias, dtype=F64),
    "minlstm": lambda x, h, bias: MinLSTMCell(x, h, bias, dtype=F64),
    "lti": lambda x, h, bias: LTICell(x, h, bias, dtype=F64),
}
TIGHT = {"rtol": 1e-8, "atol": 1e-10}


@contextlib.contextmanager
def scan_registered(**options):
    """``engine="scan"`` for the length of a block, whether or not select.py registers it yet."""
    with mock.patch.dict(ENGINES, {"scan": ScanEngine(**options)}):
        yield


def run_with_grads(layer, x, state, lengths):
    """Outputs, final state and the gradient of every parameter, of ``x`` and of the initial state."""
    x = x.clone().requires_grad_()
    state = state.clone().requires_grad_()
    out, final = layer(x, state, lengths)
    g = torch.Generator().manual_seed(7)
    loss = (out * torch.randn(out.shape, generator=g, dtype=F64)).sum() \
        + (final * torch.randn(final.shape, generator=g, dtype=F64)).sum()
    layer.zero_grad()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters()}
    return out.detach(), final.detach(), grads, x.grad, state.grad


# ----- the recurrence functions -------------------------------------------------------------
def stepped(A, b, initial):
    """s_t = A_t s_{t-1} + b_t, written out."""
    states, s = [], initial
    for t in range(b.shape[1]):
        a = A[:, min(t, A.shape[1] - 1)]
        s = (a * s if A.dim() == 3 else torch.einsum("bij,bj->bi", a.expand(s.shape[0], -1, -1), s)) + b[:, t]
        states.append(s)
    return torch.stack(states, 1)


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 3), steps=st.integers(1, 70), hidden=st.integers(1, 4), matrix=st.booleans(),
       shared=st.booleans(), chunk=st.integers(2, 9), method=st.sampled_from(["chunked", "tree"]),
       seed=st.integers(0, 2**31 - 1))
def test_linear_recurrence_equals_stepping(batch, steps, hidden, matrix, shared, chunk, method, seed):
    g = torch.Generator().manual_seed(seed)
    a_batch = 1 if shared else batch
    if matrix:
        A = torch.randn(a_batch, steps, hidden, hidden, generator=g, dtype=F64) / (1.5 * math.sqrt(hidden))
    else:
        A = torch.rand(a_batch, steps, hidden, generator=g, dtype=F64) * 2.2 - 1.1   # signs, |a| > 1 too
    b = torch.randn(batch, steps, hidden, generator=g, dtype=F64)
    h0 = torch.randn(batch, hidden, generator=g, dtype=F64)
    leaves = [t.requires_grad_() for t in (A, b, h0)]
    weights = torch.randn(batch, steps, hidden, generator=g, dtype=F64)

    def result(fn):
        out = fn(*leaves)
        grads = torch.autograd.grad((out * weights).sum(), leaves)
        return out.detach(), grads

    assert_close(result(lambda *t: linear_recurrence(*t, chunk_size=chunk, method=method)), result(stepped),
                 **TIGHT, what=f"{method} L={chunk}")


def test_linear_recurrence_shared_over_time_and_doc_example():
    A = torch.tensor([[[0.5]]], dtype=F64)                                 # (1, 1, 1): one map for all
    b = torch.ones(2, 6, 1, dtype=F64)
    out = linear_recurrence(A, b, torch.zeros(2, 1, dtype=F64), chunk_size=2)
    assert_close(out[0, :, 0], torch.tensor([1 - 0.5 ** t for t in range(1, 7)], dtype=F64) * 2, **TIGHT)


def log_stepped(log_M, log_v):
    """log v_t = logsumexp_i (log v_{t-1}(i) + log M_t(i, j)), written out."""
    out = []
    for t in range(log_M.shape[1]):
        log_v = torch.logsumexp(log_v.unsqueeze(-1) + log_M[:, t], dim=-2)
        out.append(log_v)
    return torch.stack(out, 1)


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 3), steps=st.integers(1, 80), k=st.integers(1, 4), shared=st.booleans(),
       chunk=st.integers(2, 9), method=st.sampled_from(["chunked", "tree"]), seed=st.integers(0, 2**31 - 1))
def test_log_linear_recurrence_equals_stepping(batch, steps, k, shared, chunk, method, seed):
    g = torch.Generator().manual_seed(seed)
    log_M = (3 * torch.randn(1 if shared else batch, steps, k, k, generator=g, dtype=F64)).requires_grad_()
    log_v = torch.randn(batch, k, generator=g, dtype=F64).requires_grad_()
    weights = torch.randn(batch, steps, k, generator=g, dtype=F64)

    def result(fn):
        out = fn(log_M, log_v)
        return out.detach(), torch.autograd.grad((out * weights).sum(), (log_M, log_v))

    ours = result(lambda m, v: log_linear_recurrence(m, v, chunk_size=chunk, method=method))
    assert_close(ours, result(log_stepped), rtol=1e-10, atol=1e-9, what=f"{method} L={chunk}")


def test_log_linear_recurrence_handles_entries_far_beyond_the_float_range():
    # every factor ~ e^-800: the values underflow float64 after one step, their logarithms do not
    log_M = torch.randn(2, 300, 3, 3, dtype=F64) - 800.0
    log_v = torch.zeros(2, 3, dtype=F64)
    ours = log_linear_recurrence(log_M, log_v, chunk_size=8)
    assert torch.isfinite(ours).all() and ours[:, -1].max() < -239_000
    assert_close(ours, log_stepped(log_M, log_v), rtol=1e-12, atol=1e-8)


# ----- the engine against the loop ------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(sorted(CELLS)), batch=st.integers(1, 4), steps=st.integers(1, 70),
       input_size=st.integers(1, 4), hidden_size=st.integers(1, 5), bias=st.booleans(), reverse=st.booleans(),
       ragged=st.booleans(), chunk=st.integers(2, 8), seed=st.integers(0, 2**31 - 1))
def test_scan_equals_loop(kind, batch, steps, input_size, hidden_size, bias, reverse, ragged, chunk, seed):
    torch.manual_seed(seed)
    cell = CELLS[kind](input_size, hidden_size, bias)
    x = torch.randn(batch, steps, input_size, dtype=F64)
    state = torch.randn(batch, hidden_size, dtype=F64)
    lengths = torch.randint(1, steps + 1, (batch,)) if ragged else None
    with scan_registered(chunk_size=chunk):
        scan = rnnkit.Recurrent(cell, engine="scan", reverse=reverse)
        loop = rnnkit.Recurrent(cell, engine="loop", reverse=reverse)
        assert_close(run_with_grads(scan, x, state, lengths), run_with_grads(loop, x, state, lengths),
                     **TIGHT, what=f"{kind} scan vs loop")


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_scan_engine_run_matches_loop_engine_run_directly(kind):
    """The engines' own contract, without Recurrent: (B, T, X) in, zero outputs past each length."""
    cell = CELLS[kind](3, 4, True)
    x, state = torch.randn(3, 40, 3, dtype=F64), torch.randn(3, 4, dtype=F64)
    lengths = torch.tensor([40, 17, 1])
    out, final = ScanEngine(chunk_size=4).run(cell, x, state, lengths)
    ref_out, ref_final = LoopEngine().run(cell, x, state, lengths)
    assert_close((out, final), (ref_out, ref_final), **TIGHT)
    assert torch.all(out[1, 17:] == 0) and torch.all(out[2, 1:] == 0)


@pytest.mark.parametrize("kind", ["linear-leaky", "mingru", "minlstm", "lti"])
def test_ten_thousand_steps_stay_finite_and_equal(kind):
    cell = CELLS[kind](2, 3, True)
    x = torch.randn(2, 10_000, 2, dtype=F64)
    state = torch.randn(2, 3, dtype=F64)
    with torch.no_grad():
        out, final = ScanEngine().run(cell, x, state, torch.tensor([10_000, 6_001]))
        ref_out, ref_final = LoopEngine().run(cell, x, state, torch.tensor([10_000, 6_001]))
    assert torch.isfinite(out).all() and torch.isfinite(final).all()
    assert_close((out, final), (ref_out, ref_final), **TIGHT)


def test_long_sequence_gradients_equal_with_saturated_gates():
    # gates pushed to 0 and 1: A_t down to ~1e-40, so products of a few factors leave the float range
    cell = MinGRUCell(2, 3, dtype=F64)
    with torch.no_grad():
        cell.weight_ih.mul_(60.0)
    x = torch.randn(1, 2_000, 2, dtype=F64)
    state = torch.randn(1, 3, dtype=F64)
    A, _ = cell.linear_coefficients(x)
    assert A.min() < 1e-30                                          # the premise: saturated gates
    with scan_registered():
        ours = run_with_grads(rnnkit.Recurrent(cell, engine="scan"), x, state, None)
    ref = run_with_grads(rnnkit.Recurrent(cell, engine="loop"), x, state, None)
    assert all(torch.isfinite(g).all() for g in ours[2].values())
    assert_close(ours, ref, **TIGHT)


def test_float32_long_sequence_matches_float64():
    cell = MinLSTMCell(3, 4, dtype=F64)
    x = torch.randn(2, 10_000, 3, dtype=F64)
    with torch.no_grad():
        ref, _ = ScanEngine().run(cell, x, cell.initial_state(2), None)
        out, _ = ScanEngine().run(cell.float(), x.float(), cell.initial_state(2), None)
    assert torch.isfinite(out).all()
    assert (out.double() - ref).abs().max() < 1e-4


def test_scan_through_recurrent_unbatched_and_time_major():
    cell = MinGRUCell(3, 4, dtype=F64)
    x = torch.randn(5, 2, 3, dtype=F64)                             # (T, B, X)
    with scan_registered():
        out, final = rnnkit.Recurrent(cell, engine="scan", batch_first=False)(x)
        one, one_final = rnnkit.Recurrent(cell, engine="scan")(x[:, 0])     # (T, X): one sequence
    ref, ref_final = rnnkit.Recurrent(cell, engine="loop", batch_first=False)(x)
    assert_close((out, final), (ref, ref_final), **TIGHT)
    assert_close((one, one_final), (ref[:, 0], ref_final[0]), **TIGHT)


# ----- the HMM forward filter ---------------------------------------------------------------
def chunked_parallel_filter(log_pi, log_P, em):
    """What ``rnnkit.models.hmm.scans._parallel_filter`` computes, with the chunked log-space scan."""
    mask = em.mask
    mats = hmm_scans._transfer_matrices(log_pi, log_P, em.log(), mask)             # (B, T, K, K)
    first = mats[:, 0, 0]                                                            # log π + log e_1
    log_alpha = torch.cat([first.unsqueeze(1), log_linear_recurrence(mats[:, 1:], first, chunk_size=5)], 1)
    cum = torch.logsumexp(log_alpha, -1)
    filtered = torch.exp(log_alpha - cum.unsqueeze(-1)) * mask.unsqueeze(-1)
    lognorm = torch.diff(cum, dim=1, prepend=torch.zeros_like(cum[:, :1])) * mask
    return filtered, lognorm, lognorm.sum(1)


def test_hmm_filter_by_the_chunked_scan_equals_the_step_by_step_filter():
    k, v = 4, 6
    params = [torch.randn(k, dtype=F64), torch.randn(k, k, dtype=F64), torch.randn(k, v, dtype=F64)]
    params = [p.requires_grad_() for p in params]
    symbols = torch.randint(0, v, (3, 500))
    lengths = torch.tensor([500, 333, 1])
    weights = torch.randn(3, 500, k, dtype=F64)

    def result(filter_fn):
        filtered, lognorm, loglik = filter_fn()
        loss = (filtered * weights).sum() + loglik.sum()
        return (filtered.detach(), lognorm.detach(), loglik.detach()), torch.autograd.grad(loss, params)

    ours = result(lambda: chunked_parallel_filter(*hmm_module._categorical("test", *params, symbols, lengths)))
    reference = result(lambda: hmm_module.hmm_filter(*params, symbols, lengths))      # step by step
    assert_close(ours, reference, **TIGHT)


# ----- errors ------------------------------------------------------------------------------
def test_engine_says_which_cells_it_runs():
    assert ScanEngine().supports(MinGRUCell(2, 3)) is None
    assert ScanEngine().supports(LSTMCell(2, 3)) == (
        "LSTMCell has no linear_coefficients (scan runs cells whose update is linear in the state: "
        "LinearLeakyCell, MinGRUCell, MinLSTMCell, LTICell)")

    class PairState(MinGRUCell):
        def __init__(self):
            super().__init__(2, 3)
            self.state_sizes = (3, 3)

    assert ScanEngine().supports(PairState()) == (
        "PairState has a state of 2 tensors; scan runs cells with one state tensor")
    with scan_registered():
        with pytest.raises(ValueError, match=re.escape(
                "Recurrent(LSTMCell): engine 'scan' cannot run this cell: LSTMCell has no linear_coefficients")):
            rnnkit.Recurrent(LSTMCell(2, 3), engine="scan")


class _BadCoefficients(Cell):
    def __init__(self, a_shape, b_shape):
        super().__init__()
        self.input_size = self.hidden_size = self.state_sizes = 3
        self.a_shape, self.b_shape = a_shape, b_shape

    def forward(self, x_t, h):
        return h

    def linear_coefficients(self, x):
        return torch.zeros(self.a_shape), torch.zeros(self.b_shape)


@pytest.mark.parametrize("a_shape, b_shape, message", [
    ((2, 5, 3), (2, 5, 4), "ScanEngine: the b of _BadCoefficients.linear_coefficients must be (B, T, H) = "
                           "(2, 5, 3), got (2, 5, 4)"),
    ((2, 5, 4), (2, 5, 3), "ScanEngine: the A of _BadCoefficients.linear_coefficients must be (B, T, H) = "
                           "(2, 5, 3) for a diagonal update or (B, T, H, H) = (2, 5, 3, 3) for a matrix one "
                           "(B and T may be 1), got shape (2, 5, 4)"),
    ((3, 5, 3, 3), (2, 5, 3), "got shape (3, 5, 3, 3)"),
])
def test_engine_rejects_coefficients_of_the_wrong_shape(a_shape, b_shape, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ScanEngine().run(_BadCoefficients(a_shape, b_shape), torch.zeros(2, 5, 3), torch.zeros(2, 3), None)


@pytest.mark.parametrize("call, error, message", [
    (lambda: linear_recurrence(torch.ones(2, 4, 3), torch.ones(2, 4), torch.ones(2, 3)), ValueError,
     "linear_recurrence: b must be (batch, time, hidden), got shape (2, 4)"),
    (lambda: linear_recurrence(torch.ones(2, 4, 3), torch.ones(2, 4, 3), torch.ones(3)), ValueError,
     "linear_recurrence: initial must be (batch, hidden) = (2, 3), got (3,)"),
    (lambda: linear_recurrence(torch.ones(2, 4, 3), torch.ones(2, 4, 3, dtype=torch.long), torch.ones(2, 3)),
     TypeError, "linear_recurrence: b must be a floating-point tensor, got torch.int64"),
    (lambda: linear_recurrence(torch.ones(2, 3, 3), torch.ones(2, 4, 3), torch.ones(2, 3)), ValueError,
     "linear_recurrence: A must be (B, T, H) = (2, 4, 3) for a diagonal update"),
    (lambda: linear_recurrence(torch.ones(2, 4, 3), torch.ones(2, 4, 3), torch.ones(2, 3), method="fft"),
     ValueError, "linear_recurrence: method must be one of ['chunked', 'tree', 'sequential'], got 'fft'"),
    (lambda: linear_recurrence(torch.ones(2, 4, 3), torch.ones(2, 4, 3), torch.ones(2, 3), chunk_size=1),
     ValueError, "linear_recurrence: chunk_size must be an integer >= 2, got 1"),
    (lambda: ScanEngine(chunk_size=0), ValueError, "ScanEngine: chunk_size must be an integer >= 2, got 0"),
    (lambda: log_linear_recurrence(torch.ones(2, 4, 3, 2), torch.ones(2, 3)), ValueError,
     "log_linear_recurrence: log_M must be (B, T, K, K) with B = 2 (or 1) and K = 3, got shape (2, 4, 3, 2)"),
    (lambda: log_linear_recurrence(torch.ones(2, 4, 3, 3), torch.ones(3)), ValueError,
     "log_linear_recurrence: log_initial must be (batch, K), got shape (3,)"),
])
def test_recurrence_argument_errors(call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call()


def test_recurrences_of_no_steps_are_empty():
    assert log_linear_recurrence(torch.zeros(2, 0, 3, 3), torch.zeros(2, 3)).shape == (2, 0, 3)
    assert linear_recurrence(torch.zeros(2, 0, 3), torch.zeros(2, 0, 3), torch.zeros(2, 3)).shape == (2, 0, 3)


# ----- the cells are the equations of their papers ----------------------------------------------
def test_cells_step_by_their_equations():
    x, h = torch.randn(4, 3, dtype=F64), torch.randn(4, 5, dtype=F64)
    leaky = LinearLeakyCell(3, 5, alpha=torch.linspace(0.1, 1.0, 5, dtype=F64), dtype=F64)
    alpha = torch.linspace(0.1, 1.0, 5, dtype=F64)
    assert_close(leaky(x, h), (1 - alpha) * h + alpha * (x @ leaky.weight_ih.T + leaky.bias_ih), **TIGHT)

    gru = MinGRUCell(3, 5, dtype=F64)
    w_z, w_h = gru.weight_ih.chunk(2)
    b_z, b_h = gru.bias_ih.chunk(2)
    z = torch.sigmoid(x @ w_z.T + b_z)
    assert_close(gru(x, h), (1 - z) * h + z * (x @ w_h.T + b_h), **TIGHT)

    lstm = MinLSTMCell(3, 5, dtype=F64)
    (w_f, w_i, w_h), (b_f, b_i, b_h) = lstm.weight_ih.chunk(3), lstm.bias_ih.chunk(3)
    f, i = torch.sigmoid(x @ w_f.T + b_f), torch.sigmoid(x @ w_i.T + b_i)
    assert_close(lstm(x, h), f / (f + i) * h + i / (f + i) * (x @ w_h.T + b_h), **TIGHT)

    lti = LTICell(3, 5, dtype=F64)
    assert_close(lti(x, h), h @ lti.weight_hh.T + x @ lti.weight_ih.T + lti.bias_ih, **TIGHT)


def test_minlstm_normalized_gates_never_divide_zero_by_zero():
    cell = MinLSTMCell(1, 2)
    with torch.no_grad():
        cell.weight_ih.zero_()
        cell.bias_ih.copy_(torch.tensor([-200.0, -200.0, -200.0, -210.0, 1.0, 1.0]))   # f, i ≈ e^-200 in float32
    A, b = cell.linear_coefficients(torch.zeros(1, 2, 1))
    assert_close(A[0, 0], torch.tensor([0.5, 1 / (1 + math.exp(-10))]))
    assert_close(b[0, 0], torch.tensor([0.5, 1 / (1 + math.exp(10))]), rtol=1e-6, atol=0)   # i/(f+i), kept exact
    assert torch.isfinite(cell(torch.zeros(1, 1), cell.initial_state(1))).all()


def test_lti_cell_starts_stable():
    for size in (1, 2, 8, 40):
        cell = LTICell(2, size, spectral_radius=0.9, dtype=F64)
        assert torch.linalg.eigvals(cell.weight_hh).abs().max() <= 0.9 + 1e-12


@pytest.mark.parametrize("make, message", [
    (lambda: LinearLeakyCell(2, 3, alpha=0.0), "LinearLeakyCell: alpha must lie in (0, 1], got values from 0 to 0"),
    (lambda: LinearLeakyCell(2, 3, alpha=1.0, learn_alpha=True),
     "LinearLeakyCell: alpha must lie in (0, 1) when learn_alpha=True, got values from 1 to 1"),
    (lambda: LinearLeakyCell(2, 3, alpha=[0.5, 0.5]),
     "LinearLeakyCell: alpha must be a float or have shape (3,), got shape (2,)"),
    (lambda: MinGRUCell(0, 3), "MinGRUCell: input_size must be a positive integer, got 0"),
    (lambda: LTICell(2, 3, spectral_radius=-1.0),
     "LTICell: spectral_radius must be a positive finite number, got -1.0"),
])
def test_cell_argument_errors(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


# ----- registration ----------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: LinearLeakyCell(2, 3), lambda: MinGRUCell(2, 3),
                                  lambda: MinLSTMCell(2, 3), lambda: LTICell(2, 3)])
def test_scan_is_registered_and_auto_picks_it(make):
    cell = make()
    assert rnnkit.Recurrent(cell, engine="scan").engine == "scan"
    assert rnnkit.Recurrent(cell).engine == "scan"
    assert AUTO_PREFERENCE.index("scan") < AUTO_PREFERENCE.index("loop")
    assert rnnkit.Recurrent(LSTMCell(2, 3)).engine == "native"
