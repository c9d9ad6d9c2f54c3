//! Cluster mode, simulated: one aggregate limit divided among hosts, cycle by cycle, over a
//! trace whose load moves between them, under each rule for the demand a host reports. The
//! division, the gate and the forecasters are the agent's own; the datapath is a fluid
//! model (a host passes what it is offered up to its share).
//!
//! Rules: `even` (limit / hosts, what a per-box shaper does), `measured` (last cycle's
//! demand: distributed rate limiting's rule), `predicted` (the forecast for the cycle the
//! shares apply to, through the gate that falls back to the measurement where forecasts have
//! not been better), and `oracle` (the demand that comes: the bound).
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;

use crate::allocate::aggregate::{GATE_SLOTS, Gate, divide, gate_slot};
use crate::config;
use crate::forecast::Forecaster;

/// Offered bytes/s per host and cycle.
#[derive(Clone, Debug)]
pub struct HostTrace {
    pub interval_s: f64,
    /// `demand[host][cycle]`.
    pub demand: Vec<Vec<f64>>,
    /// Cycles before this are learned from, not scored.
    pub warm: usize,
}

/// A follow-the-sun day: each host serves a region whose business hours (08:00-18:00 local,
/// regions `24 / hosts` hours apart) carry `peak` bytes/s, with a fast morning ramp (10 min)
/// and a slower evening one (30 min), a tenth of it at night; each day's level varies by
/// +-10% per host, and an AR(1) noise of 5% rides on top. `warm_days` are learned from, then
/// `days` are scored.
pub fn follow_the_sun(
    hosts: usize,
    warm_days: usize,
    days: usize,
    interval_s: f64,
    peak: f64,
    seed: u64,
) -> HostTrace {
    let mut rng = StdRng::seed_from_u64(seed);
    let per_day = (86_400.0 / interval_s).round() as usize;
    let n = per_day * (warm_days + days);
    let mut demand = vec![Vec::with_capacity(n); hosts];
    for (h, out) in demand.iter_mut().enumerate() {
        let offset = h as f64 * 24.0 / hosts as f64;
        let mut noise = 0.0f64;
        let mut scale = 1.0;
        for k in 0..n {
            if k % per_day == 0 {
                scale = 1.0 + rng.random_range(-0.1..0.1);
            }
            let hour = ((k as f64 * interval_s / 3600.0) + offset).rem_euclid(24.0);
            let level = business(hour);
            noise = 0.9 * noise
                + rng.random_range(-1.0..1.0) * 0.05 * (1.0f64 - 0.81).sqrt() * 3f64.sqrt();
            out.push((peak * level * scale * (1.0 + noise)).max(0.0));
        }
    }
    HostTrace {
        interval_s,
        demand,
        warm: per_day * warm_days,
    }
}

/// A region's load at local `hour`: 0.1 at night, 1 in business hours, ramps between.
fn business(hour: f64) -> f64 {
    let night = 0.1;
    let up = ((hour - 8.0) / (10.0 / 60.0)).clamp(0.0, 1.0);
    let down = 1.0 - ((hour - 18.0) / 0.5).clamp(0.0, 1.0);
    night + (1.0 - night) * up.min(down)
}

/// What one rule did over the scored cycles.
#[derive(Clone, Debug, Serialize)]
pub struct RuleResult {
    pub rule: &'static str,
    /// Bytes dropped because a host's demand was above its share.
    pub dropped_bytes: f64,
    /// Of those, bytes the aggregate had room for (demand over all hosts under the limit,
    /// or what the limit could have passed): what a better division would have delivered.
    pub avoidable_bytes: f64,
    /// Cycles in which the shares summed above the limit (must be none).
    pub over_limit_cycles: usize,
}

/// Replays `trace` under each rule with `limit` bytes/s in aggregate and the division's
/// `floor`; forecasts with the agent's forecaster at `forecast` settings (its interval is the
/// trace's).
pub fn replay(
    trace: &HostTrace,
    limit: f64,
    floor: f64,
    forecast: &config::Forecast,
) -> Vec<RuleResult> {
    let settings = crate::planner::forecast_settings(forecast);
    let hosts = trace.demand.len();
    let n = trace.demand.iter().map(Vec::len).min().unwrap_or(0);
    let rules = ["even", "measured", "predicted", "oracle"];
    let mut results: Vec<RuleResult> = rules
        .iter()
        .map(|&rule| RuleResult {
            rule,
            dropped_bytes: 0.0,
            avoidable_bytes: 0.0,
            over_limit_cycles: 0,
        })
        .collect();
    let mut forecasters: Vec<Forecaster> = (0..hosts)
        .map(|_| Forecaster::new(settings.clone()))
        .collect();
    let mut gates: Vec<Gate> = (0..hosts).map(|_| Gate::new(1, GATE_SLOTS)).collect();
    let (mut out, mut order) = (Vec::new(), Vec::new());
    // Each rule's estimates for the next cycle, made this cycle.
    let mut next: Vec<Vec<f64>> = vec![vec![limit / hosts as f64; hosts]; rules.len()];
    for k in 0..n {
        let d: Vec<f64> = (0..hosts).map(|h| trace.demand[h][k]).collect();
        let ts = k as f64 * trace.interval_s;
        // This cycle, under the shares divided from last cycle's estimates.
        if k >= trace.warm {
            let total: f64 = d.iter().sum();
            for (r, est) in results.iter_mut().zip(&next) {
                divide(limit, est, floor, &mut out, &mut order);
                if out.iter().sum::<f64>() > limit * (1.0 + 1e-9) {
                    r.over_limit_cycles += 1;
                }
                let passed: f64 = d.iter().zip(&out).map(|(x, s)| x.min(*s)).sum();
                r.dropped_bytes += (total - passed) * trace.interval_s;
                r.avoidable_bytes += (total.min(limit) - passed).max(0.0) * trace.interval_s;
            }
        }
        // Estimates for the next cycle.
        for (h, f) in forecasters.iter_mut().enumerate() {
            f.update(ts, d[h]);
            next[0][h] = limit / hosts as f64;
            next[1][h] = d[h];
            // As the agent reports (`agent/coordinate.rs`): one epoch ahead.
            let slot = gate_slot(ts, forecast.season_s as f64);
            next[2][h] = gates[h].step(d[h], f.forecast(1).mean, f.seasonal_change(1), slot);
            next[3][h] = trace.demand[h].get(k + 1).copied().unwrap_or(d[h]);
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a day whose load moves with the sun, predicted shares (the gate: measurement moved
    /// by the change the seasonal profile saw at this time, at the ramps; the measurement
    /// elsewhere) drop at most half the bytes the last measurement's shares drop, none above
    /// the oracle, and both far fewer than an even split.
    #[test]
    fn predicted_shares_drop_at_most_half_of_what_measured_ones_drop_following_the_sun() {
        let interval = 60.0;
        let trace = follow_the_sun(3, 7, 2, interval, 10e6, 1);
        let forecast = config::Forecast {
            interval_ms: (interval * 1000.0) as u64,
            horizon_s: 600,
            season_s: 86_400,
            ..config::Forecast::default()
        };
        let r = replay(&trace, 15e6, 0.02, &forecast);
        let by = |name: &str| r.iter().find(|x| x.rule == name).expect("rule");
        for x in &r {
            assert_eq!(x.over_limit_cycles, 0, "{x:?}");
        }
        let (m, p, o) = (by("measured"), by("predicted"), by("oracle"));
        assert!(o.avoidable_bytes <= p.avoidable_bytes + 1.0, "{r:?}");
        assert!(p.avoidable_bytes <= m.avoidable_bytes * 0.5, "{r:?}");
        assert!(
            m.avoidable_bytes * 10.0 < by("even").avoidable_bytes,
            "{r:?}"
        );
    }
}
