//! `cargo xtask bench cycle`: the agent's per-cycle cost of forecasting and allocating for
//! many tenants (the same `Planner::step` `shaper run` calls), and the memory it holds per
//! tenant. No BPF: the datapath's share of a cycle is measured by `bench datapath`.
use std::time::Instant;

use anyhow::{Context as _, Result};
use shaper::allocate::{Host, Observed};
use shaper::config::{Config, EXAMPLE, PolicyMode};
use shaper::planner::Planner;

/// Resident memory of this process, bytes (VmRSS).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The example config with `n` tenants (copies of its three, renamed) and the given forecast
/// settings. Prefixes do not matter to the planner.
fn config(
    n: usize,
    model: &str,
    intervals: &str,
    interval_ms: u64,
    season_s: u64,
) -> Result<Config> {
    let mut cfg = Config::parse(EXAMPLE)?;
    cfg.forecast.intervals = serde_json::from_value(serde_json::Value::String(intervals.into()))
        .with_context(|| format!("unknown interval method '{intervals}'"))?;
    cfg.forecast.interval_ms = interval_ms;
    cfg.forecast.season_s = season_s;
    cfg.forecast.horizon_s = (interval_ms * 10 / 1000).max(1);
    cfg.forecast.model = serde_json::from_value(serde_json::Value::String(model.into()))
        .with_context(|| format!("unknown model '{model}'"))?;
    cfg.policy.mode = PolicyMode::Predictive;
    let base = cfg.tenants.clone();
    cfg.tenants = (0..n)
        .map(|i| {
            let mut t = base[i % base.len()].clone();
            t.name = format!("t{i}");
            t
        })
        .collect();
    Ok(cfg)
}

/// Each tenant's offered load at cycle `c`: a daily wave at its own phase plus noise, so
/// forecasts and allocations differ between tenants and cycles.
fn offered(i: usize, c: u64, rate: f64, out: &mut [Observed]) {
    let phase = (i as f64 * 0.618).fract() * std::f64::consts::TAU;
    let x = (c as f64 / 300.0 + phase).sin();
    let noise = (((i as u64).wrapping_mul(2_654_435_761) ^ c.wrapping_mul(40_503)) % 1000) as f64
        / 1000.0
        - 0.5;
    let v = rate * (0.8 + 0.5 * x + 0.2 * noise);
    out[i] = Observed {
        offered: v.max(0.0),
        dropped: (v - 1.2 * rate).max(0.0),
        ..Default::default()
    };
}

pub fn bench(
    tenants: &[usize],
    warm: u64,
    cycles: u64,
    model: &str,
    intervals: &str,
    interval_ms: u64,
    season_s: u64,
) -> Result<()> {
    println!(
        "model {model}, intervals {intervals}, interval {interval_ms} ms, season {season_s} s; {warm} warm-up cycles, then {cycles} timed"
    );
    println!(
        "{:>10} {:>12} {:>12} {:>12} {:>14} {:>12}",
        "tenants", "median ms", "max ms", "ns/tenant", "memory MiB", "B/tenant"
    );
    for &n in tenants {
        let cfg = config(n, model, intervals, interval_ms, season_s)?;
        let rates: Vec<f64> = cfg
            .tenants
            .iter()
            .map(|t| t.rate.bits_per_sec() as f64 / 8.0)
            .collect();
        let before = rss();
        let mut planner = Planner::new(&cfg, PolicyMode::Predictive, None);
        let mut obs = vec![Observed::default(); n];
        let dt = interval_ms as f64 / 1000.0;
        let mut times = Vec::new();
        for c in 0..warm + cycles {
            for (i, r) in rates.iter().enumerate() {
                offered(i, c, *r, &mut obs);
            }
            let t = Instant::now();
            let (allocs, _, _, _) = planner.step(c as f64 * dt, &obs, Host::default());
            let took = t.elapsed().as_secs_f64() * 1e3;
            std::hint::black_box(allocs);
            if c >= warm {
                times.push(took);
            }
        }
        let held = rss().saturating_sub(before);
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let max = times.last().copied().unwrap_or(0.0);
        println!(
            "{:>10} {:>12.1} {:>12.1} {:>12.0} {:>14.1} {:>12.0}",
            n,
            median,
            max,
            median * 1e6 / n as f64,
            held as f64 / (1 << 20) as f64,
            held as f64 / n as f64
        );
        drop(planner);
    }
    Ok(())
}
