//! Rolling-origin evaluation of the forecasters on a series, and a seeded generator of
//! traffic-like series (daily and weekly seasons, trend, ON/OFF bursts with Pareto sizes,
//! noise) for tests, benchmarks and the comparison with other tools.
use std::time::Instant;

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;

use super::{Forecaster, ModelChoice, ModelKind, Settings};

#[derive(Clone, Debug, Serialize)]
pub struct EvalResult {
    pub model: String,
    pub mase: f64,
    pub smape: f64,
    pub coverage: f64,
    /// Mean wall time of one update plus one forecast of every horizon, in ns.
    pub ns_per_update: f64,
    pub origins: usize,
    /// Share of origins where `auto` was on each model at the end, for `auto` only.
    pub final_model: String,
}

/// The sampling interval of a series: the median gap between its timestamps (1 s with
/// fewer than two).
pub fn median_interval(ts: &[f64]) -> f64 {
    let mut gaps: Vec<f64> = ts
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|g| *g > 0.0)
        .collect();
    if gaps.is_empty() {
        return 1.0;
    }
    gaps.sort_by(f64::total_cmp);
    gaps[gaps.len() / 2]
}

/// The first origin: the models need a fifth of the series or two seasons to learn.
pub fn warmup(n: usize, season: usize) -> usize {
    (n / 5).max(2 * season).min(n.saturating_sub(1))
}

/// The origins: every index after warm-up, or `k` evenly spaced ones (the same formula the
/// Python comparison uses: warmup + (last - warmup) * j // (k - 1)).
pub fn origins(n: usize, season: usize, horizon: usize, k: Option<usize>) -> Vec<usize> {
    let w = warmup(n, season);
    let last = n.saturating_sub(horizon + 1);
    if last < w {
        return vec![];
    }
    match k {
        None => (w..=last).collect(),
        Some(0) => vec![],
        Some(1) => vec![last],
        Some(k) => (0..k).map(|j| w + (last - w) * j / (k - 1)).collect(),
    }
}

/// Seasonal-naive MAE over the whole series: MASE's scale, shared by every model (and peer).
pub fn naive_scale(values: &[f64], season: usize) -> f64 {
    let m = if values.len() > season && season > 1 {
        season
    } else {
        1
    };
    let d: Vec<f64> = values.windows(m + 1).map(|w| (w[m] - w[0]).abs()).collect();
    if d.is_empty() {
        1.0
    } else {
        (d.iter().sum::<f64>() / d.len() as f64).max(f64::MIN_POSITIVE)
    }
}

/// Evaluates every model in `choices` on `values` (sampled at `timestamps`), forecasting
/// `settings.horizon` steps from each origin.
pub fn evaluate(
    timestamps: &[f64],
    values: &[f64],
    settings: &Settings,
    choices: &[ModelChoice],
    k: Option<usize>,
) -> Vec<EvalResult> {
    let n = values.len();
    let h_max = settings.horizon;
    let at = origins(n, settings.season, h_max, k);
    let scale = naive_scale(values, settings.season);
    choices
        .iter()
        .map(|choice| {
            let mut f = Forecaster::new(Settings {
                model: *choice,
                ..settings.clone()
            });
            let (mut abs, mut smape, mut covered, mut count) = (0.0, 0.0, 0usize, 0usize);
            let mut next_origin = at.iter().peekable();
            let start = Instant::now();
            for i in 0..n {
                f.update(timestamps[i], values[i]);
                let is_origin = next_origin.peek().is_some_and(|&&o| o == i);
                if is_origin {
                    next_origin.next();
                }
                // Forecasting every horizon at every step keeps the timing honest even when
                // only some origins are scored.
                for h in 1..=h_max {
                    let p = f.forecast(h);
                    if is_origin && i + h < n {
                        let y = values[i + h];
                        abs += (y - p.mean).abs();
                        let d = y.abs() + p.mean.abs();
                        smape += if d > 0.0 {
                            2.0 * (y - p.mean).abs() / d
                        } else {
                            0.0
                        };
                        covered += usize::from(p.lo <= y && y <= p.hi);
                        count += 1;
                    }
                }
            }
            let ns = start.elapsed().as_nanos() as f64 / n.max(1) as f64;
            let c = count.max(1) as f64;
            EvalResult {
                model: match choice {
                    ModelChoice::Auto => "auto".to_string(),
                    ModelChoice::Fixed(k) => k.name().to_string(),
                },
                mase: abs / c / scale,
                smape: smape / c,
                coverage: covered as f64 / c,
                ns_per_update: ns,
                origins: at.len(),
                final_model: f.model().name().to_string(),
            }
        })
        .collect()
}

/// Every fixed model the settings allow, then `auto`.
pub fn all_choices(settings: &Settings) -> Vec<ModelChoice> {
    let mut v: Vec<ModelChoice> = settings
        .candidates()
        .into_iter()
        .map(ModelChoice::Fixed)
        .collect();
    v.sort_by_key(|c| match c {
        ModelChoice::Fixed(ModelKind::SeasonalNaive) => 0,
        _ => 1,
    });
    v.push(ModelChoice::Auto);
    v
}

/// Shape of a generated traffic series.
#[derive(Clone, Debug)]
pub struct TrafficShape {
    pub interval_s: f64,
    pub samples: usize,
    /// Mean level in bytes/s.
    pub base: f64,
    /// Daily swing as a share of the base.
    pub daily: f64,
    /// Weekend dip as a share of the base.
    pub weekly: f64,
    /// Growth of the base over the whole series, as a share.
    pub trend: f64,
    /// Multiplicative noise (standard deviation as a share).
    pub noise: f64,
    /// Mean ON/OFF burst starts per day, Pareto sizes with this shape.
    pub bursts_per_day: f64,
    pub pareto_alpha: f64,
}

impl TrafficShape {
    /// Five-minute samples over `days` days.
    pub fn five_minute(days: usize) -> TrafficShape {
        TrafficShape {
            interval_s: 300.0,
            samples: days * 288,
            base: 12.5e6,
            daily: 0.6,
            weekly: 0.3,
            trend: 0.2,
            noise: 0.05,
            bursts_per_day: 2.0,
            pareto_alpha: 1.8,
        }
    }
}

/// A seeded traffic-like series: (unix timestamps from 0, bytes/s).
pub fn traffic_series(shape: &TrafficShape, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let day = 86_400.0;
    let mut ts = Vec::with_capacity(shape.samples);
    let mut ys = Vec::with_capacity(shape.samples);
    let mut burst_left = 0usize;
    let mut burst_rate = 0.0;
    let p_start = shape.bursts_per_day * shape.interval_s / day;
    for i in 0..shape.samples {
        let t = i as f64 * shape.interval_s;
        let tod = (t % day) / day;
        let weekday = ((t / day) as u64 + 3) % 7; // day 0 is a Thursday, as 1970-01-01
        let level = shape.base * (1.0 + shape.trend * i as f64 / shape.samples as f64);
        // Peak in the evening, trough before dawn.
        let daily = 1.0 + shape.daily * (2.0 * std::f64::consts::PI * (tod - 0.375)).sin();
        let weekly = if weekday >= 5 {
            1.0 - shape.weekly
        } else {
            1.0
        };
        if burst_left == 0 && rng.random::<f64>() < p_start {
            // ON period: a Pareto-sized extra rate for 15 minutes to 2 hours.
            let u: f64 = rng.random_range(1e-9..1.0);
            burst_rate = shape.base * 0.3 / u.powf(1.0 / shape.pareto_alpha);
            burst_left = rng.random_range(
                (900.0 / shape.interval_s).ceil() as usize
                    ..=(7200.0 / shape.interval_s).ceil() as usize,
            );
        }
        let burst = if burst_left > 0 {
            burst_left -= 1;
            burst_rate
        } else {
            0.0
        };
        // Box-Muller normal noise.
        let (u1, u2): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        let y = (level * daily * weekly * (1.0 + shape.noise * z) + burst).max(0.0);
        ts.push(t);
        ys.push(y);
    }
    (ts, ys)
}
