"""A firing-rate network learns the 3-bit flip-flop; its fixed points are the 8 memories.

    python benchmarks/flipflop.py                     # about a minute on one CPU core
    python benchmarks/flipflop.py --dt 50 --steps 600 # coarser Euler step: learns faster

Trains a :class:`~rnnkit.cells.rate.RateCell` (tanh rates, tau = 100 ms, private
noise while training) with a linear readout to hold the sign of each channel's
last input pulse (Sussillo & Barak 2013), measures the bit accuracy on fresh,
longer sequences, then runs :func:`~rnnkit.analysis.fixed_points.find_fixed_points`
with the input off, starting from states the network visits. A network that
stores 3 bits needs 2^3 = 8 stable fixed points, one per corner of the memory
cube: the readout of each stable point is reported with its corner and its
Jacobian's largest eigenvalue moduli.

Writes results/flipflop.json, results/flipflop_fixed_points.png (the fixed
points in the top 3 principal components of the visited states, with
trajectories, next to their Jacobian spectra) and results/flipflop_traces.png
(inputs, targets and the network's outputs on test sequences).
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._timing import RESULTS, write_results  # noqa: E402
from rnnkit import Recurrent  # noqa: E402
from rnnkit.analysis.fixed_points import find_fixed_points, visited_states  # noqa: E402
from rnnkit.analysis.plots import plot_fixed_points  # noqa: E402
from rnnkit.cells.rate import RateCell  # noqa: E402
from rnnkit.data.tasks import flip_flop  # noqa: E402


def train(args):
    """The cell and readout after ``args.steps`` Adam steps on fresh batches (MSE to ±1 targets)."""
    torch.manual_seed(args.seed)
    cell = RateCell(args.bits, args.hidden_size, tau=args.tau, dt=args.dt, noise_std=args.noise_std)
    layer, readout = Recurrent(cell), nn.Linear(args.hidden_size, args.bits)
    optimiser = torch.optim.Adam([*cell.parameters(), *readout.parameters()], lr=args.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, args.steps, eta_min=args.lr / 20)
    data = torch.Generator().manual_seed(args.seed)
    losses = []
    for step in range(args.steps):
        batch = flip_flop(args.batch_size, args.length, args.bits, args.pulse_probability, generator=data)
        rates, _ = layer(batch.inputs)                                         # (B, T, H)
        loss = (readout(rates) - (2 * batch.targets - 1)).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
        if step % 200 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}", flush=True)
    return cell.eval(), readout, losses


def saddle_flows(cell, result, steps: int = 150, nudge: float = 0.05):
    """Trajectories (2·U, steps, H) that leave each unstable point along its most unstable
    direction, both ways, with the input off: they trace the edges between the memories."""
    starts = []
    for i in torch.nonzero(~result.stable).view(-1).tolist():
        values, vectors = torch.linalg.eig(result.jacobians[i])
        direction = vectors[:, values.abs().argmax()].real
        direction = direction / direction.norm()
        starts += [result.points[i] + nudge * direction, result.points[i] - nudge * direction]
    starts = torch.stack(starts).float()                                      # (2·U, H)
    return visited_states(cell, torch.zeros(len(starts), steps, cell.input_size), starts)


def corner_of(point_readout: torch.Tensor) -> str:
    return "".join("+" if v > 0 else "-" for v in point_readout.tolist())


def plot_traces(test, outputs, path: Path, sequences: int = 1) -> None:
    from matplotlib.figure import Figure
    bits = test.inputs.shape[-1]
    figure = Figure(figsize=(10, 1.9 * bits), layout="constrained")
    axes = figure.subplots(bits, 1, sharex=True)
    for b, ax in enumerate(axes):
        steps = torch.arange(test.inputs.shape[1])
        ax.vlines(steps.numpy(), 0, test.inputs[0, :, b].numpy(), color="grey", linewidth=1.5, label="input pulse")
        ax.step(steps.numpy(), (2 * test.targets[0, :, b] - 1).numpy(), where="post", color="black",
                linewidth=1.2, label="target")
        ax.plot(steps.numpy(), outputs[0, :, b].numpy(), color="tab:orange", linewidth=1.2, label="network")
        ax.set_ylabel(f"bit {b + 1}")
        ax.set_ylim(-1.6, 1.6)
    axes[0].legend(loc="upper right", ncol=3, fontsize=8)
    axes[-1].set_xlabel("time step")
    figure.suptitle("3-bit flip-flop: each output holds the sign of its channel's last pulse")
    figure.savefig(path, dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bits", type=int, default=3)
    parser.add_argument("--hidden-size", type=int, default=32)
    parser.add_argument("--tau", type=float, default=100.0)
    parser.add_argument("--dt", type=float, default=20.0)
    parser.add_argument("--noise-std", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--pulse-probability", type=float, default=0.05)
    parser.add_argument("--starts", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    cell, readout, losses = train(args)
    train_seconds = time.perf_counter() - started

    test = flip_flop(500, 4 * args.length, args.bits, args.pulse_probability / 2, seed=args.seed + 1000)
    with torch.no_grad():
        rates, _ = Recurrent(cell)(test.inputs)
        outputs = readout(rates)                                              # (N, T, bits)
    accuracy = ((outputs > 0).float() == test.targets).float().mean().item()
    print(f"bit accuracy on {len(test)} fresh sequences of {test.inputs.shape[1]} steps: {accuracy:.4%}")

    started = time.perf_counter()
    states = visited_states(cell, test.inputs)                                # (N, T, H)
    result = find_fixed_points(cell, initial_states=states, num_starts=args.starts,
                               generator=torch.Generator().manual_seed(args.seed))
    search_seconds = time.perf_counter() - started
    print(result)
    with torch.no_grad():
        point_readouts = readout(cell.output(result.points.float()))          # (N, bits)
    stable_points = []
    for i in torch.nonzero(result.stable).view(-1).tolist():
        moduli = result.eigenvalues[i].abs()
        stable_points.append({"readout": [round(v, 4) for v in point_readouts[i].tolist()],
                              "corner": corner_of(point_readouts[i]),
                              "largest_eigenvalue_moduli": [round(v, 4) for v in moduli[:3].tolist()],
                              "speed_q": result.speeds[i].item(), "starts_reaching_it": int(result.counts[i])})
        print(f"  stable  corner {stable_points[-1]['corner']}  readout {stable_points[-1]['readout']}  "
              f"|λ| {stable_points[-1]['largest_eigenvalue_moduli']}")
    corners = {"".join(c) for c in itertools.product("+-", repeat=args.bits)}
    found = {p["corner"] for p in stable_points}
    unstable = [{"readout": [round(v, 4) for v in point_readouts[i].tolist()],
                 "unstable_directions": int((result.eigenvalues[i].abs() > 1).sum())}
                for i in torch.nonzero(~result.stable).view(-1).tolist()]

    RESULTS.mkdir(exist_ok=True)
    picture = RESULTS / "flipflop_fixed_points.png"
    flows = saddle_flows(cell, result) if result.num_unstable else None
    plot_fixed_points(result, flows, picture, basis="stable", max_trajectories=60,
                      title=f"RateCell ({args.hidden_size} units), {args.bits}-bit flip-flop, input off: "
                            f"{result.num_stable} stable points (the memories); lines leave each unstable "
                            f"point along its most unstable direction")
    traces = RESULTS / "flipflop_traces.png"
    plot_traces(test, outputs, traces)
    path = write_results("flipflop", {
        "config": vars(args), "train_seconds": round(train_seconds, 1), "final_train_loss": losses[-1],
        "bit_accuracy": accuracy, "test_sequences": len(test), "test_length": test.inputs.shape[1],
        "fixed_point_search_seconds": round(search_seconds, 2), "num_starts": result.num_starts,
        "num_discarded": result.num_discarded, "num_stable": result.num_stable,
        "num_unstable": result.num_unstable, "every_corner_has_one_stable_point":
            found == corners and len(stable_points) == len(corners),
        "stable_points": stable_points, "unstable_points": unstable,
        "figures": [str(p.relative_to(RESULTS.parents[1])) for p in (picture, traces)]})
    print(f"train {train_seconds:.0f} s, search {search_seconds:.1f} s; results in {path}, plots {picture}, {traces}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
