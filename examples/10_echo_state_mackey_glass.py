"""Echo state networks on the Mackey-Glass series: only the readout learns, the spectral radius decides.

A fixed random reservoir of tanh units (rnnkit.models.EchoStateNetwork) reads the chaotic
Mackey-Glass series (tau = 17, rnnkit.models.mackey_glass) and a linear readout, fitted
in closed form by ridge regression, predicts the next value. We sweep the spectral radius
of the recurrent weights, the one knob that sets how long inputs echo in the state, and
measure the normalised error (NRMSE) one step ahead and when the network runs free on its
own predictions, over several random reservoirs per radius.
Run: python examples/10_echo_state_mackey_glass.py [--quick]
"""
import torch

from _common import lesson, report, save
from rnnkit.models import EchoStateNetwork, closed_loop_horizon, mackey_glass, nrmse

args = lesson(__doc__.splitlines()[0])
torch.set_num_threads(1)           # small problem: one thread is the fastest, and steady on a shared machine
if args.quick:
    UNITS, TRAIN, TEST, SEEDS, RADII = 200, 1000, 300, 1, [0.3, 0.9, 1.5]
else:
    UNITS, TRAIN, TEST, SEEDS = 500, 2000, 500, 5
    RADII = [0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.5, 2.0, 3.0]
AHEAD = 84                         # the free-running horizon Jaeger & Haas (2004) scored at

series = mackey_glass(TRAIN + TEST + 1).view(1, -1, 1)           # (1, T, 1), scaled to [-1, 1]
train_in, train_out = series[:, :TRAIN], series[:, 1:TRAIN + 1]
test_in, test_out = series[:, TRAIN:TRAIN + TEST], series[:, TRAIN + 1:]


def evaluate(radius, seed):
    """Fit one reservoir's readout; its one-step NRMSE, free-running NRMSE over AHEAD steps, the
    free-running horizon (steps within 0.1 running NRMSE), and the free-running path."""
    esn = EchoStateNetwork(1, 1, reservoir_size=UNITS, ridge=1e-6, warmup=100, spectral_radius=radius,
                           seed=seed).fit(train_in, train_out)
    one_step = nrmse(esn.predict(test_in, state=esn.last_state), test_out)
    free = esn.generate(test_in[:, :1], TEST, state=esn.last_state)      # from here on, its own outputs
    return one_step, nrmse(free[:, :AHEAD], test_out[:, :AHEAD]), closed_loop_horizon(free, test_out), free


results = {r: [evaluate(r, seed) for seed in range(SEEDS)] for r in RADII}
median = lambda values: torch.tensor(values, dtype=torch.float64).median().item()
for radius, runs in results.items():
    report(f"one-step NRMSE, radius {radius} (median of {SEEDS})", median([run[0] for run in runs]))
    report(f"free-running NRMSE over {AHEAD} steps, radius {radius}", median([run[1] for run in runs]))
    report(f"free-running horizon, radius {radius}", int(median([run[2] for run in runs])), f"steps (of {TEST})")
best = min(RADII, key=lambda r: median([run[1] for run in results[r]]))
report("best spectral radius (free-running NRMSE)", best)
too_large = 1.5                    # a radius past the best one, drawn beside it

import matplotlib.pyplot as plt  # noqa: E402  (_common has chosen the backend)

fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [1, 1.5]})
for index, label, color in ((0, "one step ahead (teacher forced)", "tab:blue"),
                            (1, f"free running, first {AHEAD} steps", "tab:red")):
    values = torch.tensor([[run[index] for run in results[r]] for r in RADII])          # (radii, seeds)
    left.plot(RADII, values.median(1).values, marker="o", color=color, label=label)
    left.fill_between(RADII, values.min(1).values, values.max(1).values, color=color, alpha=0.15)
left.axvline(1.0, color="black", lw=0.6, ls=":")
left.set(yscale="log", xlabel="spectral radius of the reservoir", ylabel="NRMSE",
         title=f"Error vs spectral radius ({SEEDS} reservoirs each: median and range)")
left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)

steps = torch.arange(1, TEST + 1)
right.plot(steps, test_out[0, :, 0], color="black", lw=2.5, alpha=0.35, label="Mackey-Glass (truth)")
for radius, color in ((best, "tab:green"), (too_large, "tab:red")):
    horizon = results[radius][0][2]
    span = f"good for all {TEST} steps" if horizon == TEST else f"good for {horizon} steps"
    right.plot(steps, results[radius][0][3][0, :, 0], color=color, lw=1,
               label=f"free running, radius {radius} ({span})")
right.set(xlabel="steps after the training data", ylabel="x (scaled)", title="Free-running prediction")
right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3)
fig.suptitle(f"Echo state network, {UNITS} reservoir units, readout fitted on {TRAIN} steps")
fig.tight_layout()
save(fig, args, "10_echo_state_mackey_glass")
