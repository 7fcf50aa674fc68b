"""The flip-flop task, and a rate network that learns it and stores its memories as stable fixed points."""
import itertools
import math
import re

import pytest
import torch
from torch import nn

import rnnkit
from rnnkit.analysis.fixed_points import find_fixed_points, visited_states
from rnnkit.cells.rate import RateCell
from rnnkit.data.tasks import TASKS, flip_flop, make_task


def exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


# ----- the generator ----------------------------------------------------------------------------------------
def test_targets_hold_the_sign_of_each_channels_last_pulse():
    task = flip_flop(20, 30, bits=3, pulse_probability=0.2, seed=5)
    assert (task.name, task.kind, task.input_size, task.output_size) == ("flip_flop", "tagging", 3, 3)
    assert task.inputs.shape == task.targets.shape == (20, 30, 3) and task.lengths is None
    assert set(task.inputs.unique().tolist()) == {-1.0, 0.0, 1.0}
    assert bool((task.inputs[:, 0] != 0).all())                 # every memory set at step 0
    for n, b in itertools.product(range(20), range(3)):         # brute force, one channel at a time
        held = None
        for t in range(30):
            pulse = task.inputs[n, t, b].item()
            held = held if pulse == 0 else pulse
            assert task.targets[n, t, b].item() == (1.0 if held > 0 else 0.0)


def test_pulse_rate_and_signs():
    p, task = 0.1, flip_flop(400, 51, bits=2, pulse_probability=0.1, seed=1)
    later = task.inputs[:, 1:]                                  # 400 · 50 · 2 = 40,000 Bernoulli(p) draws
    rate = (later != 0).float().mean().item()
    assert abs(rate - p) < 5 * math.sqrt(p * (1 - p) / later.numel())
    pulses = task.inputs[task.inputs != 0]
    assert abs((pulses > 0).float().mean().item() - 0.5) < 5 * math.sqrt(0.25 / len(pulses))


def test_edge_probabilities():
    never = flip_flop(3, 8, bits=2, pulse_probability=0.0, seed=2)
    assert bool((never.inputs[:, 1:] == 0).all())
    assert torch.equal(never.targets, never.targets[:, :1].expand(-1, 8, -1))
    always = flip_flop(3, 8, bits=2, pulse_probability=1.0, seed=2)
    assert bool((always.inputs != 0).all()) and torch.equal(always.targets, (always.inputs > 0).float())


def test_baseline_is_the_memoryless_predictors_loss():
    """Seeing only the current input: certain at pulses, p = 1/2 otherwise."""
    bits, length, p = 3, 40, 0.15
    task = flip_flop(3000, length, bits, pulse_probability=p, seed=3)
    guess = torch.where(task.inputs == 0, 0.5, (task.inputs > 0).float())
    loss = nn.functional.binary_cross_entropy(guess, task.targets, reduction="none").sum(-1)   # (N, T)
    assert task.baseline == pytest.approx(bits * math.log(2) * (1 - p) * (length - 1) / length, rel=1e-12)
    # each sequence's mean loss is a sum of Bernoulli(1 - p) terms times ln 2: standard error below
    per_sequence = loss.mean(1)
    standard_error = per_sequence.std().item() / math.sqrt(len(per_sequence))
    assert abs(per_sequence.mean().item() - task.baseline) < 5 * standard_error


def test_seeds_generators_and_registry():
    first, again, other = (flip_flop(4, 10, seed=s) for s in (7, 7, 8))
    assert torch.equal(first.inputs, again.inputs) and not torch.equal(first.inputs, other.inputs)
    assert torch.equal(flip_flop(4, 10, generator=torch.Generator().manual_seed(7)).inputs, first.inputs)
    assert TASKS["flip_flop"] is flip_flop
    assert torch.equal(make_task("flip_flop", num_sequences=4, length=10, seed=7).targets, first.targets)


@pytest.mark.parametrize("call, error, message", [
    (lambda: flip_flop(0, 5), ValueError, "flip_flop: num_sequences must be a positive integer, got 0"),
    (lambda: flip_flop(2, 0), ValueError, "flip_flop: length must be a positive integer, got 0"),
    (lambda: flip_flop(2, 5, bits=0), ValueError, "flip_flop: bits must be a positive integer, got 0"),
    (lambda: flip_flop(2, 5, bits=2.0), TypeError, "flip_flop: bits must be an int, got float"),
    (lambda: flip_flop(2, 5, pulse_probability=1.5), ValueError,
     "flip_flop: pulse_probability must be a probability in [0, 1], got 1.5"),
    (lambda: flip_flop(2, 5, pulse_probability="0.1"), TypeError,
     "flip_flop: pulse_probability must be a number, got str"),
    (lambda: flip_flop(2, 5, seed=1, generator=torch.Generator()), ValueError,
     "flip_flop: pass either generator or seed, not both"),
])
def test_bad_arguments_say_what_was_wrong(call, error, message):
    with pytest.raises(error, match=exactly(message)):
        call()


# ----- a trained rate network: its memories are its stable fixed points --------------------------------------
def test_trained_rate_network_stores_two_bits_in_four_stable_fixed_points():
    """2-bit flip-flop (about 2 s): >= 99 % of bits right, and with the input off exactly four
    stable fixed points, whose readouts sit at the four corners of the memory square."""
    torch.manual_seed(0)
    bits, hidden = 2, 12
    cell = RateCell(bits, hidden, tau=100.0, dt=50.0)
    layer, readout = rnnkit.Recurrent(cell), nn.Linear(hidden, bits)
    optimiser = torch.optim.Adam([*cell.parameters(), *readout.parameters()], lr=0.03)
    train = flip_flop(128, 30, bits, pulse_probability=0.1, seed=0)
    for step in range(200):
        batch = slice(32 * (step % 4), 32 * (step % 4 + 1))
        loss = (readout(layer(train.inputs[batch])[0]) - (2 * train.targets[batch] - 1)).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    cell.eval()
    test = flip_flop(100, 200, bits, pulse_probability=0.05, seed=1)
    quiet = torch.cat([test.inputs, torch.zeros(100, 100, bits)], 1)          # then 100 steps of silence
    with torch.no_grad():
        rates, final = layer(quiet)
        accuracy = ((readout(rates[:, :200]) > 0).float() == test.targets).float().mean().item()
    assert accuracy >= 0.99

    result = find_fixed_points(cell, initial_states=visited_states(cell, test.inputs), num_starts=64,
                               generator=torch.Generator().manual_seed(0))
    assert result.num_stable == 4
    stable = result.points[result.stable]                                       # (4, H), float64
    assert bool((result.eigenvalues[result.stable].abs() < 1).all())
    with torch.no_grad():
        corners = readout(cell.output(stable.float()))                          # (4, bits)
    assert sorted(tuple(c) for c in torch.sign(corners).tolist()) == sorted(itertools.product((-1.0, 1.0), repeat=2))
    assert bool(((corners.abs() - 1).abs() < 0.25).all())
    # after the silence every network sits on one of those four points: the memory it reads out,
    # and (but for a pulse too late to take hold) the one its last pulses chose
    distance = torch.cdist(final.double(), stable)                              # (100, 4)
    assert distance.min(1).values.max().item() < 1e-4
    chosen = torch.sign(corners[distance.argmin(1)])
    assert torch.equal(chosen, torch.sign(readout(rates[:, -1])).detach())
    assert (chosen == 2 * test.targets[:, -1] - 1).all(1).float().mean().item() >= 0.97
