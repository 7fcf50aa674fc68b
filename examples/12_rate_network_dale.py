"""Lesson 12: a firing-rate network under Dale's law learns a 2-bit flip-flop and keeps its memories in fixed points.

RateCell is the Euler step of the continuous-time rate equation tau dx/dt = -x + W relu(x) + B u + b; with
dale=0.8 its first 80% of units are excitatory and the rest inhibitory, and every column of W (a unit's
outgoing weights) keeps its sign by construction while training. The lesson trains such a network on
the 2-bit flip-flop task (remember the sign of each channel's last pulse), checks the sign constraint
and the held-out error, then asks rnnkit.analysis.find_fixed_points where the dynamics come to rest
with the input off: four stable points, one per stored memory, plus the saddles between them.
Run: python examples/12_rate_network_dale.py [--quick]
"""
import matplotlib.pyplot as plt
import torch
from torch import nn

from _common import lesson, report, save

import rnnkit
from rnnkit.analysis import find_fixed_points, hidden_pca, visited_states
from rnnkit.cells import RateCell
from rnnkit.data.tasks import flip_flop

args = lesson(__doc__.splitlines()[0])
torch.set_num_threads(1)            # tiny matrices: one thread is faster than two on a shared machine
BITS, HIDDEN = 2, 20
STEPS, STARTS = (150, 24) if args.quick else (1500, 128)
TRIALS, LENGTH = (40, 100) if args.quick else (100, 200)            # held-out trials

# ----- the network: 16 excitatory and 4 inhibitory units, no self-connections --------------------
cell = RateCell(BITS, HIDDEN, tau=100.0, dt=50.0, activation="relu", dale=0.8, autapses=False)
layer, readout = rnnkit.Recurrent(cell), nn.Linear(HIDDEN, BITS)
excitatory = cell.signs > 0
raw_before = cell.weight_hh.detach().clone()

# ----- training: outputs should hold +1 / -1, the sign of each channel's latest pulse --------------
train = flip_flop(256, 40, BITS, pulse_probability=0.1, seed=args.seed)
optimiser = torch.optim.Adam([*cell.parameters(), *readout.parameters()], lr=0.02)
losses = []
for step in range(STEPS):
    rows = slice(32 * (step % 8), 32 * (step % 8 + 1))
    rates, _ = layer(train.inputs[rows])
    loss = (readout(rates) - (2 * train.targets[rows] - 1)).pow(2).mean()
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    losses.append(loss.item())

# ----- held-out trials, longer than any training trial -----------------------------------------
cell.eval()
test = flip_flop(TRIALS, LENGTH, BITS, pulse_probability=0.05, seed=args.seed + 1)
with torch.no_grad():
    outputs = readout(layer(test.inputs)[0])
report("training loss (MSE), mean of the last 50 steps", sum(losses[-50:]) / len(losses[-50:]))
report("held-out loss (MSE, an output stuck at 0 scores 1)", (outputs - (2 * test.targets - 1)).pow(2).mean().item())
report("held-out bits right", ((outputs > 0).float() == test.targets).float().mean().item())

# ----- Dale's law: check the effective weights, and that the constraint was needed -------------------
W = cell.recurrent_weights().detach()                # column j = unit j's outgoing weights
report("excitatory units / inhibitory units", f"{int(excitatory.sum())} / {int((~excitatory).sum())}")
report("every excitatory column is non-negative", bool((W[:, excitatory] >= 0).all()))
report("every inhibitory column is non-positive", bool((W[:, ~excitatory] <= 0).all()))
crossed = (torch.sign(cell.weight_hh.detach()) != torch.sign(raw_before)).sum().item()
report("raw weights that crossed zero in training (their signs kept by abs)", crossed)

# ----- fixed points with the input off, searched from states the network visits ----------------------
visited = visited_states(cell, test.inputs)                                   # (trials, time, units)
found = find_fixed_points(cell, initial_states=visited, num_starts=STARTS,
                          generator=torch.Generator().manual_seed(args.seed))
report("fixed points found", len(found))
report("stable / unstable", f"{found.num_stable} / {found.num_unstable}")
with torch.no_grad():
    memories = readout(cell.output(found.points[found.stable].float()))
for i, memory in enumerate(memories.tolist()):
    report(f"readout at stable point {i + 1}", "(" + ", ".join(f"{v:+.2f}" for v in memory) + ")")

# ----- the figure ----------------------------------------------------------------------------
fig = plt.figure(figsize=(15, 4.6))
trial = fig.add_subplot(1, 3, 1)
for b, color in zip(range(BITS), ("tab:blue", "tab:orange")):
    offset = 4.5 * b
    pulses = test.inputs[0, :, b]
    for sign, marker in ((1, "^"), (-1, "v")):
        when = (pulses == sign).nonzero().squeeze(1)
        trial.scatter(when, offset + 1.5 * sign + 0 * when, marker=marker, color=color, s=25)
    trial.plot(offset + 2 * test.targets[0, :, b] - 1, color="black", linestyle="--", linewidth=1)
    trial.plot(offset + outputs[0, :, b], color=color, linewidth=1.6, label=f"bit {b + 1} output")
trial.set_xlabel("time step (dt = 50 ms)")
trial.set_yticks([0, 4.5], ["bit 1", "bit 2"])
trial.set_title("A held-out trial: pulses (triangles), target (dashed), output")
trial.legend(loc="lower right", fontsize=8)

weights = fig.add_subplot(1, 3, 2)
limit = W.abs().max().item()
image = weights.imshow(W.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
weights.axvline(int(excitatory.sum()) - 0.5, color="black", linewidth=1)
weights.set_xticks(range(0, HIDDEN, 5))
weights.set_yticks(range(0, HIDDEN, 5))
weights.set_xlabel("from unit (16 excitatory | 4 inhibitory)")
weights.set_ylabel("to unit")
weights.set_title("Trained W: every column keeps one sign")
fig.colorbar(image, ax=weights, fraction=0.046)

space = fig.add_subplot(1, 3, 3)
pca = hidden_pca(visited, num_components=2)
for path in pca.projected[:8]:
    space.plot(path[:, 0], path[:, 1], color="tab:blue", alpha=0.3, linewidth=0.8)
points = ((found.points.float() - pca.mean) / pca.scale) @ pca.components.T
space.scatter(*points[found.stable].T, color="black", s=60, zorder=3, label=f"stable ({found.num_stable})")
space.scatter(*points[~found.stable].T, color="tab:red", marker="x", s=70, zorder=3,
              label=f"unstable ({found.num_unstable})")
reach = points.abs().max().item() * 2.5                      # zoom on the fixed points
space.set_xlim(-reach, reach)
space.set_ylim(-reach, reach)
share = 100 * pca.explained_variance_ratio
space.set_xlabel(f"PC1 ({share[0]:.0f}% of variance)")
space.set_ylabel(f"PC2 ({share[1]:.0f}% of variance)")
space.set_title("State trajectories and fixed points (input off)")
space.legend(loc="best", fontsize=8)
fig.suptitle("A rate network with Dale's law (relu rates, 80% excitatory) solving the 2-bit flip-flop")
fig.tight_layout()
save(fig, args, "12_rate_network_dale")
