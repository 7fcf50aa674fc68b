"""Lesson 14: forecasting a noisy periodic series with predictive intervals, and checking that the intervals hold.

rnnkit.models.Forecaster is an autoregressive RNN: an LSTM reads the series and a Gaussian readout
predicts the next value's mean and standard deviation. To forecast it runs closed loop, feeding each
sampled value back in as the next input, so many sample paths give a whole predictive distribution
and its quantiles give intervals. The series here is a periodic signal plus AR(1) noise, whose true
forecast uncertainty grows with the horizon and is known exactly; the lesson measures how often
held-out values fall inside the model's 50% and 90% intervals and compares the interval widths with
the exact ones. Run: python examples/14_forecasting_uncertainty.py [--quick]
"""
import math

import matplotlib.pyplot as plt
import torch

from _common import lesson, report, save

from rnnkit.models import Forecaster

args = lesson(__doc__.splitlines()[0])
torch.set_num_threads(1)            # small matrices: one thread is faster than two on a shared machine
STEPS, ORIGINS, PATHS, HORIZON = (60, 6, 50, 20) if args.quick else (600, 120, 300, 30)
PERIOD, PHI, SIGMA = 24, 0.7, 0.2    # signal period; AR(1) noise e_t = PHI e_{t-1} + SIGMA eps_t

# ----- the series: a known periodic signal plus AR(1) noise -------------------------------------------
generator = torch.Generator().manual_seed(args.seed)
n = 3000
t = torch.arange(n, dtype=torch.float32)
signal = torch.sin(2 * math.pi * t / PERIOD) + 0.5 * torch.sin(4 * math.pi * t / PERIOD + 1.0)
shocks = SIGMA * torch.randn(n, generator=generator)
noise = torch.zeros(n)
for i in range(1, n):
    noise[i] = PHI * noise[i - 1] + shocks[i]
series = (signal + noise).view(1, n, 1)
split = 2000                                      # train on the first 2000 points, test on the rest

# the exact predictive law h steps ahead: mean signal + PHI^h e_t, sd SIGMA sqrt((1 - PHI^2h) / (1 - PHI^2))
steps_ahead = torch.arange(1, HORIZON + 1, dtype=torch.float32)
exact_sd = SIGMA * torch.sqrt((1 - PHI ** (2 * steps_ahead)) / (1 - PHI ** 2))

# ----- training: one-step-ahead negative log-likelihood on windows of the training part -------------
windows = series[0, :split].unfold(0, 65, 8).permute(0, 2, 1)          # (N, 65, 1) overlapping windows
model = Forecaster(series_size=1, hidden_size=32)
optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
order = torch.Generator().manual_seed(args.seed)
for step in range(STEPS):
    batch = windows[torch.randint(len(windows), (32,), generator=order)]
    loss, _ = model.loss(batch[:, :-1], batch[:, 1:])                   # predict each next value
    optimiser.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimiser.step()

# ----- one step ahead on the test part: the predicted sd and the NLL, against the exact law ------------
model.eval()
with torch.no_grad():
    report("one-step NLL on the training windows", model.loss(windows[:, :-1], windows[:, 1:])[0].item(), "nats")
    hidden, _ = model(series[:, split - 201:-1])            # 200 steps of warm-up before the test part
    hidden = hidden[:, 200:]
    targets = series[:, split:]
    test_nll = -model.readout.log_prob(targets, hidden).mean().item()
    predicted_sd = model.readout.std(hidden).squeeze()
exact_next = signal[split:] + PHI * noise[split - 1:-1]      # the exact one-step mean, sd SIGMA
exact_nll = (0.5 * ((series[0, split:, 0] - exact_next) / SIGMA) ** 2 + math.log(SIGMA * math.sqrt(2 * math.pi)))
report("one-step NLL on the test part", test_nll, "nats")
report("one-step NLL of the exact law on the test part", exact_nll.mean().item(), "nats")
report("true one-step sd of the noise (SIGMA)", SIGMA)
report("one-step predicted sd on the test part, median", predicted_sd.median().item())

# ----- closed-loop forecasts from many origins in the test part -----------------------------------------
origins = torch.linspace(split + 100, n - HORIZON, ORIGINS).long()
history = torch.stack([series[0, o - 100:o] for o in origins])          # (origins, 100, 1)
future = torch.stack([series[0, o:o + HORIZON, 0] for o in origins])    # (origins, HORIZON)
paths = model.forecast(history, steps=HORIZON, num_samples=PATHS, seed=args.seed)     # (paths, origins, H, 1)
q05, q25, q50, q75, q95 = Forecaster.quantiles(paths, (0.05, 0.25, 0.5, 0.75, 0.95))[..., 0]
inside90 = ((future >= q05) & (future <= q95)).float()                   # (origins, HORIZON)
inside50 = ((future >= q25) & (future <= q75)).float()
report("forecast origins x steps ahead scored", f"{ORIGINS} x {HORIZON}")
report("coverage of the 90 percent interval", inside90.mean().item())
report("coverage of the 50 percent interval", inside50.mean().item())
report("coverage of the 90 percent interval, 1 step ahead", inside90[:, 0].mean().item())
report(f"coverage of the 90 percent interval, {HORIZON} steps ahead", inside90[:, -1].mean().item())

# the exact forecaster knows the signal and the current noise value: what a perfect model achieves
exact_mean = torch.stack([signal[o:o + HORIZON] + PHI ** steps_ahead * noise[o - 1] for o in origins])
exact_inside = ((future - exact_mean).abs() <= 1.645 * exact_sd).float()
report("coverage of the exact 90 percent interval (a perfect model, for comparison)", exact_inside.mean().item())
width = (q95 - q05).mean(0)                                             # (HORIZON,)
report("90 percent interval width 1 step ahead, model / exact", f"{width[0]:.3f} / {2 * 1.645 * exact_sd[0]:.3f}")
report(f"90 percent interval width {HORIZON} steps ahead, model / exact",
       f"{width[-1]:.3f} / {2 * 1.645 * exact_sd[-1]:.3f}")
report("RMSE of the median forecast", (q50 - future).pow(2).mean().sqrt().item())
report("RMSE of the exact mean (the best possible)", (exact_mean - future).pow(2).mean().sqrt().item())

# ----- the figure ----------------------------------------------------------------------------
fig, (fan, cover, wide) = plt.subplots(1, 3, figsize=(16, 4.6), gridspec_kw={"width_ratios": [1.5, 1, 1]})
k = 0
past = torch.arange(origins[k] - 60, origins[k])
ahead = torch.arange(origins[k], origins[k] + HORIZON)
fan.plot(past, series[0, past, 0], color="black", linewidth=1, label="history")
fan.plot(ahead, future[k], color="black", marker=".", linestyle="none", label="what happened")
fan.fill_between(ahead, q05[k], q95[k], color="tab:blue", alpha=0.2, label="90% interval")
fan.fill_between(ahead, q25[k], q75[k], color="tab:blue", alpha=0.35, label="50% interval")
fan.plot(ahead, q50[k], color="tab:blue", label="median of the sample paths")
fan.plot(ahead, exact_mean[k] + 1.645 * exact_sd, color="grey", linestyle="--", linewidth=1, label="exact 90% interval")
fan.plot(ahead, exact_mean[k] - 1.645 * exact_sd, color="grey", linestyle="--", linewidth=1)
fan.set_xlabel("time step")
fan.set_ylabel("value")
fan.set_title(f"One held-out forecast from {PATHS} closed-loop sample paths")
fan.set_ylim(None, fan.get_ylim()[1] + 1.0)                    # room for the legend
fan.legend(loc="upper left", fontsize=7, ncol=3)

cover.plot(steps_ahead, inside90.mean(0), marker="o", color="tab:blue", label="90% interval")
cover.plot(steps_ahead, inside50.mean(0), marker="s", color="tab:orange", label="50% interval")
cover.plot(steps_ahead, exact_inside.mean(0), color="grey", linewidth=1, label="exact 90% interval")
cover.axhline(0.9, color="tab:blue", linestyle="--", linewidth=1)
cover.axhline(0.5, color="tab:orange", linestyle="--", linewidth=1)
cover.set_ylim(0, 1.05)
cover.set_xlabel("steps ahead")
cover.set_ylabel(f"fraction of the {ORIGINS} test origins inside")
cover.set_title("Coverage (dashed: nominal)")
cover.legend(loc="lower left", fontsize=8)

wide.plot(steps_ahead, width, color="tab:blue", label="model (5% to 95% of the paths)")
wide.plot(steps_ahead, 2 * 1.645 * exact_sd, color="grey", linestyle="--", label="exact")
wide.set_ylim(0, None)
wide.set_xlabel("steps ahead")
wide.set_ylabel("width of the 90% interval")
wide.set_title("Uncertainty grows with the horizon")
wide.legend(loc="lower right", fontsize=8)
fig.suptitle(f"Forecasting a periodic series with AR(1) noise (phi = {PHI}, sigma = {SIGMA}) with an LSTM Forecaster")
fig.tight_layout()
save(fig, args, "14_forecasting_uncertainty")
