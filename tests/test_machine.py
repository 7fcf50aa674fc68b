"""State machines compute what their definitions say, checked against independent computations."""
import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from rnnkit.machine import FiniteStateMachine, LTISystem, RationalRNN, StateMachine, rational_sqrt2

from conftest import F64


def _binary_strings(max_len):
    for n in range(max_len + 1):
        for bits in itertools.product("01", repeat=n):
            yield "".join(bits)


# ----- StateMachine ----------------------------------------------------------

def test_transduce_emits_output_of_each_state_after_its_transition():
    seen = []

    def f_s(s, x):
        seen.append((s, x))
        return 3 * s + x

    machine = StateMachine(1, f_s, output=lambda s: s % 5)
    xs = [2, 0, 1, 4]
    expected_states, s = [], 1
    for x in xs:
        s = 3 * s + x
        expected_states.append(s)
    assert machine.trace(xs) == expected_states == [5, 15, 46, 142]
    seen.clear()
    assert machine.transduce(xs) == [v % 5 for v in expected_states]
    assert seen == list(zip([1] + expected_states[:-1], xs))   # f_s called once per step, in order
    assert machine.run(xs) == ([v % 5 for v in expected_states], 142)
    assert machine.final_state(xs) == 142
    assert machine.step(1, 2) == (5, 0)


def test_default_output_is_identity_and_run_resumes_from_a_given_state():
    machine = StateMachine("", lambda s, x: s + x)
    assert machine.transduce("abc") == ["a", "ab", "abc"]
    outputs, final = machine.run("de", state="abc")
    assert (outputs, final) == (["abcd", "abcde"], "abcde")
    assert machine.transduce([]) == []
    assert machine.run([]) == ([], "")


def test_running_in_two_pieces_equals_running_at_once():
    machine = StateMachine((0, 1), lambda s, x: (s[1], s[0] + s[1] * x), output=lambda s: s[0])
    xs = [1, 2, 1, 3, 1, 1, 2]
    first, mid = machine.run(xs[:3])
    second, end = machine.run(xs[3:], state=mid)
    assert first + second == machine.transduce(xs)
    assert end == machine.final_state(xs)


def test_state_machine_rejects_non_callables():
    with pytest.raises(TypeError, match=r"StateMachine: transition must be a callable .* got int"):
        StateMachine(0, 3)
    with pytest.raises(TypeError, match=r"StateMachine: output must be a callable .* got str"):
        StateMachine(0, lambda s, x: s, output="identity")
    with pytest.raises(ValueError, match=r"StateMachine: steps must be a non-negative integer, got -1"):
        StateMachine(0, lambda s, x: s).iterate(-1)


# ----- FiniteStateMachine ----------------------------------------------------

def test_parity_of_zeros_matches_brute_force_on_every_binary_string_up_to_length_10():
    fsm = FiniteStateMachine.parity_of_zeros()
    count = 0
    for w in _binary_strings(10):
        assert fsm.accepts(w) == (w.count("0") % 2 == 0), w
        count += 1
    assert count == 2 ** 11 - 1


def test_parity_transduce_flags_every_prefix_and_trace_lists_the_states():
    fsm = FiniteStateMachine.parity_of_zeros()
    for w in _binary_strings(7):
        flags = fsm.transduce(w)
        assert flags == [w[:t].count("0") % 2 == 0 for t in range(1, len(w) + 1)]
        assert fsm.trace(w) == ["even" if f else "odd" for f in flags]
        assert fsm.transduce(list(w)) == flags                      # any iterable of symbols


def test_parity_of_zeros_definition():
    fsm = FiniteStateMachine.parity_of_zeros()
    assert set(fsm.alphabet) == {"0", "1"}
    assert fsm.start == "even" and fsm.accepting == {"even"}
    assert fsm.accepts("")


def test_fsm_over_non_string_symbols_counts_modulo_three():
    states, alphabet = (0, 1, 2), ("inc", "dec", "nop")
    delta = {(q, a): (q + {"inc": 1, "dec": -1, "nop": 0}[a]) % 3 for q in states for a in alphabet}
    fsm = FiniteStateMachine(states, alphabet, delta, start=0, accepting=[0])
    word = ["inc", "inc", "nop", "dec", "inc", "inc"]
    assert fsm.trace(word) == [1, 2, 2, 1, 2, 0]
    assert fsm.accepts(word) and not fsm.accepts(word[:-1])


def test_fsm_incomplete_table_names_the_missing_pair():
    delta = {("even", "0"): "odd", ("even", "1"): "even", ("odd", "0"): "even"}
    with pytest.raises(ValueError, match=r"FiniteStateMachine: the transition table is incomplete: "
                                         r"no entry for \(state, symbol\) = \('odd', '1'\)"):
        FiniteStateMachine(["even", "odd"], ["0", "1"], delta, "even", ["even"])


@pytest.mark.parametrize("change, message", [
    (dict(start="zero"), r"start state 'zero' is not one of the states \['even', 'odd'\]"),
    (dict(accepting={"done"}), r"accepting state 'done' is not one of the states"),
    (dict(extra={("even", "2"): "odd"}), r"transition \('even', '2'\) reads '2', which is not in the alphabet \['0', '1'\]"),
    (dict(extra={("even", "1"): "gone"}), r"transition \('even', '1'\) goes to 'gone'"),
    (dict(extra={("half", "1"): "odd"}), r"transition \('half', '1'\) starts from 'half'"),
    (dict(alphabet=["0", "1", "0"]), r"alphabet lists '0' twice"),
])
def test_fsm_rejects_inconsistent_definitions(change, message):
    base = FiniteStateMachine.parity_of_zeros()
    table = {**base.transitions, **change.get("extra", {})}
    with pytest.raises(ValueError, match="FiniteStateMachine: " + message):
        FiniteStateMachine(base.states, change.get("alphabet", base.alphabet), table,
                           change.get("start", "even"), change.get("accepting", {"even"}))


def test_fsm_unknown_symbol_is_named_with_its_position_and_the_alphabet():
    fsm = FiniteStateMachine.parity_of_zeros()
    with pytest.raises(ValueError, match=r"FiniteStateMachine: symbol '2' at position 3 is not in "
                                         r"the alphabet \['0', '1'\]"):
        fsm.accepts("0102")
    with pytest.raises(ValueError, match=r"symbol 1 at position 0 is not in the alphabet"):
        fsm.transduce([1, 0])                          # ints are not the symbols "1", "0"
    with pytest.raises(ValueError, match=r"FiniteStateMachine: symbol 'x' is not in the alphabet"):
        fsm.step("even", "x")


# ----- LTISystem -------------------------------------------------------------

def _random_lti(n, m, p, rng):
    A = rng.standard_normal((n, n))
    A *= 0.9 / max(abs(np.linalg.eigvals(A)))          # stable, but not trivially so
    return A, rng.standard_normal((n, m)), rng.standard_normal((p, n))


def _closed_form(A, B, C, xs, s0):
    """y_t = C A^t s0 + sum_{k=1}^t C A^{t-k} B x_k, in numpy float64, for t = 1..T."""
    batch, steps, _ = xs.shape
    ys = np.zeros((batch, steps, C.shape[0]))
    for t in range(1, steps + 1):
        ys[:, t - 1] = s0 @ (C @ np.linalg.matrix_power(A, t)).T
        for k in range(1, t + 1):
            ys[:, t - 1] += xs[:, k - 1] @ (C @ np.linalg.matrix_power(A, t - k) @ B).T
    final = s0 @ np.linalg.matrix_power(A, steps).T
    for k in range(1, steps + 1):
        final += xs[:, k - 1] @ (np.linalg.matrix_power(A, steps - k) @ B).T
    return ys, final


@pytest.mark.parametrize("with_state", [False, True])
def test_lti_forward_equals_closed_form_convolution(with_state):
    rng = np.random.default_rng(1234 + with_state)
    n, m, p, batch, steps = 4, 2, 3, 5, 9
    A, B, C = _random_lti(n, m, p, rng)
    xs = rng.standard_normal((batch, steps, m))
    s0 = rng.standard_normal((batch, n)) if with_state else np.zeros((batch, n))
    system = LTISystem(A, B, C)
    assert system.A.dtype == F64 and [name for name, _ in system.named_buffers()] == ["A", "B", "C"]
    assert list(system.parameters()) == []
    ys, final = system(torch.from_numpy(xs), torch.from_numpy(s0) if with_state else None)
    ys_ref, final_ref = _closed_form(A, B, C, xs, s0)
    assert ys.shape == (batch, steps, p) and final.shape == (batch, n)
    np.testing.assert_allclose(ys.numpy(), ys_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(final.numpy(), final_ref, rtol=1e-10, atol=1e-12)


def test_lti_impulse_response_is_markov_parameters_and_convolves_to_the_output():
    rng = np.random.default_rng(7)
    A, B, C = _random_lti(3, 2, 2, rng)
    system = LTISystem(A, B, C)
    h = system.impulse_response(6)
    assert h.shape == (6, 2, 2)
    for k in range(6):
        np.testing.assert_allclose(h[k].numpy(), C @ np.linalg.matrix_power(A, k) @ B, rtol=1e-12)
    xs = torch.from_numpy(rng.standard_normal((2, 6, 2)))
    ys, _ = system(xs)
    conv = torch.stack([sum(xs[:, k - 1] @ h[t - k].T for k in range(1, t + 1)) for t in range(1, 7)], 1)
    torch.testing.assert_close(ys, conv, rtol=1e-10, atol=1e-12)
    assert system.impulse_response(0).shape == (0, 2, 2)


def test_lti_linear_coefficients_drive_the_same_recurrence():
    rng = np.random.default_rng(3)
    system = LTISystem(*_random_lti(4, 3, 2, rng))
    xs = torch.from_numpy(rng.standard_normal((2, 5, 3)))
    A, b = system.linear_coefficients(xs)
    assert A.shape == (4, 4) and b.shape == (2, 5, 4)
    torch.testing.assert_close(b, torch.einsum("nm,btm->btn", system.B, xs))
    s = torch.zeros(2, 4, dtype=F64)
    for t in range(5):
        s = s @ A.T + b[:, t]
    torch.testing.assert_close(s, system(xs)[1])


def test_lti_step_chain_and_unbatched_input_agree_with_forward():
    rng = np.random.default_rng(11)
    system = LTISystem(*_random_lti(3, 2, 4, rng))
    xs = torch.from_numpy(rng.standard_normal((1, 4, 2)))
    ys, final = system(xs)
    state, outs = system.initial_state(1), []
    for t in range(4):
        state, y = system.step(state, xs[:, t])
        outs.append(y)
    torch.testing.assert_close(torch.stack(outs, 1), ys)
    ys1, final1 = system(xs[0], final[0])                       # unbatched, resumed
    ys2, final2 = system(torch.cat([xs, xs], 1))
    torch.testing.assert_close(ys1, ys2[0, 4:])
    torch.testing.assert_close(final1, final2[0])


def test_lti_keeps_float32_and_converts_on_request():
    eye = torch.eye(2)
    assert LTISystem(eye, eye, eye).A.dtype == torch.float32
    assert LTISystem(eye, eye, eye, dtype=F64).C.dtype == F64
    assert LTISystem([[1]], [[1]], [[1]]).A.dtype == torch.get_default_dtype()   # ints become floats


def test_lti_shape_and_dtype_errors_say_what_to_fix():
    with pytest.raises(ValueError, match=r"LTISystem: A must be square \(n, n\), got shape \(2, 3\)"):
        LTISystem(torch.zeros(2, 3), torch.zeros(2, 1), torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"LTISystem: B must have n = 2 rows to match A, got shape \(3, 1\)"):
        LTISystem(torch.zeros(2, 2), torch.zeros(3, 1), torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"LTISystem: C must have n = 2 columns to match A, got shape \(1, 3\)"):
        LTISystem(torch.zeros(2, 2), torch.zeros(2, 1), torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"LTISystem: B must be a 2-D matrix, got shape \(2,\)"):
        LTISystem(torch.zeros(2, 2), torch.zeros(2), torch.zeros(1, 2))
    system = LTISystem(torch.zeros(2, 2, dtype=F64), torch.zeros(2, 3, dtype=F64), torch.zeros(1, 2, dtype=F64))
    with pytest.raises(ValueError, match=r"LTISystem: expected input of size 3 in the last dimension, got 4$"):
        system(torch.zeros(5, 7, 4, dtype=F64))
    with pytest.raises(ValueError, match=r"LTISystem: expected input of shape \(batch, T, input_size\)"):
        system(torch.zeros(3, dtype=F64))
    with pytest.raises(TypeError, match=r"LTISystem: input dtype torch.float32 does not match .* torch.float64"):
        system(torch.zeros(5, 7, 3))
    with pytest.raises(ValueError, match=r"LTISystem: expected state of shape \(5, 2\), got \(5, 3\)"):
        system(torch.zeros(5, 7, 3, dtype=F64), torch.zeros(5, 3, dtype=F64))
    with pytest.raises(TypeError, match=r"LTISystem: expected the input to be a torch.Tensor, got list"):
        system([[0.0, 0.0, 0.0]])


# ----- rational RNN ----------------------------------------------------------

def test_rational_rnn_converges_to_sqrt2_within_1e_12_in_a_handful_of_steps():
    hs = rational_sqrt2(6)
    assert hs[:2] == [1.5, 1.5 / 2 + 1 / 1.5]
    assert abs(hs[3] - math.sqrt(2)) < 1e-11                  # quadratic: 4 steps to ~1.6e-12
    assert all(abs(h - math.sqrt(2)) < 1e-12 for h in hs[4:])
    assert all(a >= b for a, b in zip([2.0] + hs, hs))         # monotone non-increasing
    assert all(a > b for a, b in zip([2.0] + hs[:4], hs[:4]))  # strictly, until float precision


def test_rational_rnn_in_exact_arithmetic_decreases_strictly_and_stays_above_sqrt2():
    hs = rational_sqrt2(6, exact=True)
    assert hs[0] == Fraction(3, 2) and hs[1] == Fraction(17, 12) and hs[2] == Fraction(577, 408)
    assert all(h * h > 2 for h in hs)                          # never reaches sqrt(2) exactly
    assert all(a > b for a, b in zip([Fraction(2)] + hs, hs))
    assert abs(float(hs[-1]) - math.sqrt(2)) < 1e-15
    for h_prev, h in zip([Fraction(2)] + hs, hs):              # the error squares every step
        assert h * h - 2 == (h_prev * h_prev - 2) ** 2 / (4 * h_prev * h_prev)


def test_rational_rnn_is_a_state_machine_for_any_positive_square():
    rnn = RationalRNN(a=10, initial_state=1)
    assert isinstance(rnn, StateMachine)
    assert abs(rnn.iterate(8)[-1] - math.sqrt(10)) < 1e-12
    assert rnn.step(4.0, None) == (4.0 / 2 + 5 / 4.0,) * 2
    with pytest.raises(ValueError, match=r"RationalRNN: initial_state must be a positive finite number, got -1; "
                                         r"Newton's iteration"):
        RationalRNN(2, -1)
    with pytest.raises(TypeError, match=r"RationalRNN: a must be a number, got str"):
        RationalRNN("2")
