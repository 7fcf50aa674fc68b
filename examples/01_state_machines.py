"""Lesson 1: recurrent networks are state machines, s_t = f_s(s_{t-1}, x_t) and y_t = f_o(s_t).

Three machines from rnnkit.machine, each checked against an rnnkit cell or an exact computation:
a finite-state machine (parity of zeros, plus binary numbers mod 3) rebuilt as an Elman cell with
hand-set ReLU weights that agrees with the automaton on every binary string up to a length; a
linear time-invariant system whose impulse response is r^k cos(k theta) and whose twin is an
LTICell run by the scan engine; and the rational RNN h_t = h_{t-1}/2 + 1/h_{t-1}, whose correct
digits of sqrt(2) double at each step.
Run: python examples/01_state_machines.py [--quick]
"""
import itertools
import math
from decimal import Decimal, getcontext

import matplotlib.pyplot as plt
import torch

from _common import lesson, report, save

import rnnkit
from rnnkit.cells import ElmanCell, LTICell
from rnnkit.machine import FiniteStateMachine, LTISystem, RationalRNN, rational_sqrt2


# ----- 1. a finite-state machine as an Elman cell ---------------------------------------------
def elman_from_fsm(fsm):
    """An Elman ReLU cell that runs ``fsm`` exactly.

    One hidden unit per pair (q, a): the unit is 1 at step t when the machine was in q before
    reading a = x_t. Unit (q', a') switches on iff its symbol is read now (input weight 1) and
    the active pair of the previous step leads to q' (recurrent weight 1); the bias -1 makes
    relu(1 + 1 - 1) = 1 and relu(1 + 0 - 1) = relu(0 + 1 - 1) = 0. The state after step t is
    delta(active pair), so "accepting" is a linear readout of the hidden vector.
    """
    pairs = list(itertools.product(fsm.states, fsm.alphabet))
    cell = ElmanCell(len(fsm.alphabet), len(pairs), nonlinearity="relu", dtype=torch.float64)
    w_in, w_rec = torch.zeros(len(pairs), len(fsm.alphabet)), torch.zeros(len(pairs), len(pairs))
    for i, (q_new, a_new) in enumerate(pairs):
        w_in[i, fsm.alphabet.index(a_new)] = 1.0
        for j, (q, a) in enumerate(pairs):
            w_rec[i, j] = float(fsm.transitions[(q, a)] == q_new)
    with torch.no_grad():
        cell.weight_ih.copy_(w_in)
        cell.weight_hh.copy_(w_rec)
        cell.bias_ih.fill_(-1.0)
        cell.bias_hh.zero_()
    readout = torch.tensor([float(fsm.transitions[p] in fsm.accepting) for p in pairs], dtype=torch.float64)
    # s_0: any pair that leads to the start state stands for "the machine is in its start state"
    start = next(i for i, p in enumerate(pairs) if fsm.transitions[p] == fsm.start)
    h0 = torch.zeros(len(pairs), dtype=torch.float64)
    h0[start] = 1.0
    return cell, readout, h0


def check_every_string(fsm, max_length):
    """Compare automaton and Elman network on every string of length 1..max_length (all prefixes too)."""
    cell, readout, h0 = elman_from_fsm(fsm)
    layer = rnnkit.Recurrent(cell)
    strings = list(itertools.product(fsm.alphabet, repeat=max_length))   # every prefix is a shorter string
    x = torch.nn.functional.one_hot(torch.tensor([[fsm.alphabet.index(a) for a in w] for w in strings]),
                                    len(fsm.alphabet)).double()
    with torch.no_grad():
        hidden, _ = layer(x, h0.expand(len(strings), -1).contiguous())
    network = (hidden @ readout).round().bool()                           # (N, T): accept flag per prefix
    automaton = torch.tensor([fsm.transduce(w) for w in strings])
    return int((network != automaton).sum()), automaton.numel(), hidden


def divisible_by_three():
    """Binary numbers read most significant bit first; state = value mod 3."""
    delta = {(q, a): (2 * q + int(a)) % 3 for q in range(3) for a in "01"}
    return FiniteStateMachine(range(3), "01", delta, start=0, accepting={0})


# ----- 2. a linear time-invariant system -----------------------------------------------------
def damped_rotation(radius, angle):
    c, s = math.cos(angle), math.sin(angle)
    return radius * torch.tensor([[c, -s], [s, c]], dtype=torch.float64)


def lti_checks(steps, radius=0.93, angle=0.45):
    A, B, C = damped_rotation(radius, angle), torch.tensor([[1.0], [0.0]]), torch.tensor([[1.0, 0.0]])
    system = LTISystem(A, B, C, dtype=torch.float64)
    impulse = system.impulse_response(steps)[:, 0, 0]                  # h_k = C A^k B
    k = torch.arange(steps, dtype=torch.float64)
    closed_form = radius ** k * torch.cos(angle * k)                  # the eigenvalues are r e^{±i theta}
    # any input: y_t = sum_k h_{t-k} x_k (a convolution), and the same machine as an rnnkit cell
    x = torch.randn(4, steps, 1, dtype=torch.float64)
    y, _ = system(x)
    conv = torch.stack([(impulse[:t + 1].flip(0) * x[:, :t + 1, 0]).sum(1) for t in range(steps)], 1)
    cell = LTICell(1, 2, bias=False, dtype=torch.float64)
    with torch.no_grad():
        cell.weight_hh.copy_(A)
        cell.weight_ih.copy_(B)
    layer = rnnkit.Recurrent(cell)                                      # linear in the state: the scan engine
    with torch.no_grad():
        states, _ = layer(x)
    return dict(impulse=impulse, closed_form=closed_form, engine=layer.engine, radius=radius,
                impulse_error=float((impulse - closed_form).abs().max()),
                convolution_error=float((y[..., 0] - conv).abs().max()),
                cell_error=float((states @ C.double().T - y).abs().max()),
                spectral_radius=float(torch.linalg.eigvals(A).abs().max()))


# ----- 3. the rational RNN --------------------------------------------------------------------
def sqrt2_digits(steps):
    """Correct decimal digits of h_1..h_steps, computed exactly (Fractions) and in float64."""
    getcontext().prec = 400
    root = Decimal(2).sqrt()
    exact = rational_sqrt2(steps, exact=True)                           # fractions.Fraction, no rounding
    digits = [float(-(Decimal(h.numerator) / Decimal(h.denominator) - root).copy_abs().log10()) for h in exact]
    floats = RationalRNN(2, 2).iterate(steps)
    float_errors = [abs(Decimal(h) - root) for h in floats]
    return digits, float_errors, exact


def main():
    args = lesson(__doc__.splitlines()[0])
    max_length = 8 if args.quick else 14
    parity = FiniteStateMachine.parity_of_zeros()
    wrong, total, hidden = check_every_string(parity, max_length)
    report("parity: strings checked", 2 ** max_length)
    report("parity: prefixes checked", total)
    report("parity: disagreements with the automaton", wrong)
    wrong3, total3, _ = check_every_string(divisible_by_three(), max_length)
    report("mod 3: prefixes checked", total3)
    report("mod 3: disagreements with the automaton", wrong3)

    lti = lti_checks(steps=40 if args.quick else 80)
    report("LTI: spectral radius of A", lti["spectral_radius"])
    report("LTI: max |impulse response - r^k cos(k theta)|", lti["impulse_error"])
    report("LTI: max |y - impulse response * x| (convolution)", lti["convolution_error"])
    report(f"LTI: max |LTICell ({lti['engine']} engine) - LTISystem|", lti["cell_error"])

    steps = 7
    digits, float_errors, exact = sqrt2_digits(steps)
    for t, d in enumerate(digits, 1):
        report(f"sqrt2: correct digits at step {t}", d)
    report("sqrt2: digits of the denominator at step 7", len(str(exact[-1].denominator)))
    report("sqrt2: float64 error at step 5", float(float_errors[4]))
    report("sqrt2: float64 error at step 7", float(float_errors[-1]))
    report("sqrt2: one ulp of float64 at sqrt(2)", math.ulp(math.sqrt(2)))

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    word = "01101001110100"[:max_length]
    cell_states = hidden[int(word, 2)]          # strings are listed in binary order: row = the word's value
    ax = axes[0]
    ax.imshow(cell_states[: len(word)].T.numpy(), aspect="auto", cmap="Greys", origin="lower")
    ax.set_yticks(range(4), [f"({q},{a})" for q, a in itertools.product(parity.states, parity.alphabet)])
    ax.set_xticks(range(len(word)), list(word))
    flags = parity.transduce(word)
    ax.plot(range(len(word)), [3.6 if f else -0.6 for f in flags], "o-", color="tab:red", clip_on=False,
            label="automaton accepts (even # of zeros)")
    ax.set_xlabel("input symbol x_t")
    ax.set_ylabel("hidden unit (state before, symbol)")
    ax.set_title("Parity FSM as an Elman ReLU cell (black = 1)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), fontsize=8)

    ax = axes[1]
    ax.plot(lti["impulse"].numpy(), "o", ms=3, label="LTISystem.impulse_response  C A^k B")
    ax.plot(lti["closed_form"].numpy(), "-", lw=1, label="r^k cos(k θ)")
    k = torch.arange(len(lti["impulse"]))
    ax.plot((lti["radius"] ** k).numpy(), "--", color="grey", label="± r^k envelope")
    ax.plot(-(lti["radius"] ** k).numpy(), "--", color="grey")
    ax.set_xlabel("lag k")
    ax.set_ylabel("impulse response")
    ax.set_title(f"LTI system, eigenvalues r e^(±iθ), r = {lti['radius']}")
    ax.legend(fontsize=8)

    ax = axes[2]
    ax.plot(range(1, steps + 1), digits, "o-", label="exact (Fraction)")
    ax.plot(range(1, steps + 1), [min(float(-e.log10()), 17) if e else 17 for e in float_errors], "s--",
            label="float64")
    ax.axhline(16, color="grey", lw=0.8, ls=":", label="16 digits: float64's limit")
    ax.set_yscale("log")
    ax.set_xlabel("step t")
    ax.set_ylabel("correct digits of √2")
    ax.set_title("Rational RNN h_t = h_{t-1}/2 + 1/h_{t-1}")
    ax.legend(fontsize=8)
    fig.suptitle("Three state machines, s_t = f_s(s_{t-1}, x_t), y_t = f_o(s_t)")
    fig.tight_layout()
    save(fig, args, "01_state_machines")


if __name__ == "__main__":
    main()
