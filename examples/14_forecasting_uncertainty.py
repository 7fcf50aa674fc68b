"""Lesson 14: forecasting many noisy periodic series with intervals, and checking that the intervals hold.

rnnkit.forecast.RNNForecaster is a global model: one LSTM learns from every series of a table at once
and forecasts the next h steps of each with a median and intervals. The series here are a periodic
signal plus AR(1) noise, each with its own level and phase, so the true predictive law h steps ahead
is Gaussian with a known mean and standard deviation. The lesson fits three forecasters (quantile or
normal likelihood; direct or autoregressive decoder) on the first part of the series, backtests them
with cross_validation on the held-out rest, and compares their coverage by horizon, interval widths,
sMAPE and MASE with the exact law and with the seasonal naive baseline.
Run: python examples/14_forecasting_uncertainty.py [--quick]
"""
import time
from statistics import NormalDist

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from _common import lesson, report, save

from rnnkit.forecast import RNNForecaster, load_panel, score, seasonal_naive

args = lesson(__doc__.splitlines()[0])
torch.set_num_threads(1)            # small matrices: one thread is faster than two on a shared machine
SERIES, TRAIN, STEPS, STEP_SIZE = (12, 120, 80, 24) if args.quick else (64, 240, 1000, 6)
PERIOD, PHI, SIGMA, HORIZON, TEST = 24, 0.7, 0.05, 24, 120
LEVELS = (50, 90)
# explicit sizes, so the run takes the same time whatever RNNForecaster's defaults become
SIZES = dict(steps=STEPS, hidden_size=64, batch_size=128, ensemble=1, progress=False, random_state=args.seed)
MODELS = {"quantile, direct": dict(likelihood="quantile", decoder="direct"),
          "normal, direct": dict(likelihood="normal", decoder="direct"),
          "normal, autoregressive": dict(likelihood="normal", decoder="autoregressive")}

# ----- the series: y = level (1 + 0.2 signal(t + phase) + e_t), e_t = PHI e_{t-1} + SIGMA eps_t ------
rng = np.random.default_rng(args.seed)
n = TRAIN + TEST
t = np.arange(n)
level = np.exp(rng.uniform(np.log(1), np.log(100), SERIES))          # levels from 1 to 100
phase = rng.integers(0, PERIOD, SERIES)
angle = 2 * np.pi * (t[None, :] + phase[:, None]) / PERIOD
signal = np.sin(angle) + 0.5 * np.sin(2 * angle + 1.0)                  # (series, n)
shocks = SIGMA * rng.standard_normal((SERIES, n))
noise = np.zeros((SERIES, n))
for i in range(1, n):
    noise[:, i] = PHI * noise[:, i - 1] + shocks[:, i]
y = level[:, None] * (1 + 0.2 * signal + noise)
ids = np.array([f"s{i:02d}" for i in range(SERIES)])
table = pd.DataFrame({"unique_id": np.repeat(ids, n), "ds": np.tile(t, SERIES), "y": y.reshape(-1)})
train = table[table["ds"] < TRAIN]
windows = (TEST - HORIZON) // STEP_SIZE + 1          # cutoffs from the training part's last step onwards
report("series, training steps each, held-out steps each", f"{SERIES}, {TRAIN}, {TEST}")
report("held-out forecasts of 24 steps (series x cutoffs)", f"{SERIES} x {windows}")

# ----- the forecasters: fit on the training part, backtest on the held-out part -------------------------
backtests, seconds = {}, {}
for name, choice in MODELS.items():
    started = time.perf_counter()
    model = RNNForecaster(h=HORIZON, season_length=PERIOD, alias=name, **choice, **SIZES).fit(train)
    # the model reads each series up to each cutoff and is not refitted: every window in one batched pass
    backtests[name] = model.cross_validation(table, n_windows=windows, step_size=STEP_SIZE, level=LEVELS)
    seconds[name] = time.perf_counter() - started
    report(f"{name}, seconds to fit and backtest", seconds[name])
cv = backtests["quantile, direct"][["unique_id", "ds", "cutoff", "y"]].copy()
for name, got in backtests.items():
    cv = cv.merge(got.drop(columns="y"), on=["unique_id", "ds", "cutoff"])

# ----- the yardstick: the exact law, N(level (1 + 0.2 signal + PHI^k e_cutoff), level sd_k) --------------
series = pd.Index(ids).get_indexer(cv["unique_id"])
ahead = (cv["ds"] - cv["cutoff"]).to_numpy()                              # 1 .. HORIZON
steps_ahead = np.arange(1, HORIZON + 1)
exact_sd = SIGMA * np.sqrt((1 - PHI ** (2 * steps_ahead)) / (1 - PHI ** 2))   # in units of the level
mean = level[series] * (1 + 0.2 * signal[series, cv["ds"]] + PHI ** ahead * noise[series, cv["cutoff"]])
sd = level[series] * exact_sd[ahead - 1]
cv["exact"] = mean
for lv in LEVELS:
    z = NormalDist().inv_cdf(0.5 + lv / 200)
    cv[f"exact-lo-{lv}"], cv[f"exact-hi-{lv}"] = mean - z * sd, mean + z * sd

# ----- the baseline: the seasonal naive forecast from each cutoff ------------------------------------------
naive = []
for cutoff in np.unique(cv["cutoff"]):
    known = load_panel(table[table["ds"] <= cutoff])
    naive.append(seasonal_naive(known, HORIZON, PERIOD, level=LEVELS, alias="seasonal naive").assign(cutoff=cutoff))
cv = cv.merge(pd.concat(naive), on=["unique_id", "ds", "cutoff"])

# ----- the scores: sMAPE, MASE, coverage and scaled CRPS, averaged over series and cutoffs -----------------
names = ["exact", *MODELS, "seasonal naive"]
scores = score(cv, table, models=names, season_length=PERIOD, level=LEVELS).set_index("model")
for name in names:
    s = scores.loc[name]
    report(name, f"sMAPE {s['smape']:.2f}, MASE {s['mase']:.3f}, coverage of the 50/90 percent intervals "
                 f"{s['coverage-50']:.1%}/{s['coverage-90']:.1%}, scaled CRPS {s['scaled_crps']:.4f}")

inside = {name: ((cv["y"] >= cv[f"{name}-lo-90"]) & (cv["y"] <= cv[f"{name}-hi-90"])).groupby(ahead).mean()
          for name in names}                                                          # 90 % coverage by horizon
width = {name: ((cv[f"{name}-hi-90"] - cv[f"{name}-lo-90"]) / level[series]).groupby(ahead).mean()
         for name in names}                                                           # in units of the level
for name in names:
    report(f"{name}, 90 percent coverage 1 / 12 / 24 steps ahead",
           " / ".join(f"{inside[name][k]:.1%}" for k in (1, 12, 24)))
for name in names[1:]:
    report(f"{name}, 90 percent width over the exact one, 1 / 12 / 24 steps ahead",
           " / ".join(f"{width[name][k] / width['exact'][k]:.2f}" for k in (1, 12, 24)))

# ----- the figure ----------------------------------------------------------------------------------
colours = {"exact": "grey", "quantile, direct": "tab:blue", "normal, direct": "tab:green",
           "normal, autoregressive": "tab:purple", "seasonal naive": "tab:orange"}
fig, (fan, cover, wide) = plt.subplots(1, 3, figsize=(16, 4.6), gridspec_kw={"width_ratios": [1.5, 1, 1]})
first = cv["cutoff"].min()
one = cv[(cv["unique_id"] == ids[0]) & (cv["cutoff"] == first)]
past = table[(table["unique_id"] == ids[0]) & (table["ds"] <= first) & (table["ds"] > first - 3 * PERIOD)]
fan.plot(past["ds"], past["y"], color="black", linewidth=1, label="history")
fan.plot(one["ds"], one["y"], color="black", marker=".", linestyle="none", label="what happened")
fan.fill_between(one["ds"], one["quantile, direct-lo-90"], one["quantile, direct-hi-90"], color="tab:blue",
                 alpha=0.2, label="90% interval")
fan.fill_between(one["ds"], one["quantile, direct-lo-50"], one["quantile, direct-hi-50"], color="tab:blue",
                 alpha=0.35, label="50% interval")
fan.plot(one["ds"], one["quantile, direct"], color="tab:blue", label="median")
fan.plot(one["ds"], one["exact-lo-90"], color="grey", linestyle="--", linewidth=1, label="exact 90% interval")
fan.plot(one["ds"], one["exact-hi-90"], color="grey", linestyle="--", linewidth=1)
fan.set_xlabel("time step")
fan.set_ylabel("value")
fan.set_title(f"Series {ids[0]} from the first held-out cutoff (quantile, direct)")
fan.legend(loc="upper left", fontsize=7, ncol=3)
fan.set_ylim(None, fan.get_ylim()[1] + 0.25 * np.ptp(fan.get_ylim()))        # room for the legend

for name in names:
    cover.plot(steps_ahead, inside[name], color=colours[name], label=name,
               linewidth=1 if name == "exact" else 1.5)
    wide.plot(steps_ahead, width[name], color=colours[name], label=name,
              linestyle="--" if name == "exact" else "-")
cover.axhline(0.9, color="black", linestyle=":", linewidth=1)
cover.set_ylim(0.7, 1.0)
cover.set_xlabel("steps ahead")
cover.set_ylabel("share of held-out values inside")
cover.set_title("Coverage of the 90% interval (dotted: nominal)")
cover.legend(loc="lower left", fontsize=7)
wide.set_ylim(0, None)
wide.set_xlabel("steps ahead")
wide.set_ylabel("width of the 90% interval / the series' level")
wide.set_title("Interval width by horizon")
wide.legend(loc="lower right", fontsize=7)
fig.suptitle(f"{SERIES} periodic series with AR(1) noise (phi = {PHI}, sigma = {SIGMA}), "
             f"one global RNNForecaster, held-out windows from cross_validation")
fig.tight_layout()
save(fig, args, "14_forecasting_uncertainty")
