//! The planner: one cycle's forecast and allocation for every tenant of a config. It is where
//! the config is translated for the pure stages below it (forecasting settings and known
//! events, the allocator's policy and profiles), so neither `forecast` nor `allocate` knows
//! the config. The live agent, the simulator and the benchmarks share it.
use crate::allocate::{
    Allocation, Change, Demand, Host, Inputs, LinkPools, Observed, PolicyMode, PolicyParams,
    Profile, Tuning, allocate,
};
use crate::config::{self, Config};
use crate::forecast::{Forecaster, KnownEvent, ModelKind, Outcome, Settings};

/// The allocator's policy from the config's `policy` section.
pub fn policy(p: &config::Policy) -> PolicyParams {
    PolicyParams {
        mode: p.mode,
        multiplier: p.adjustment_multiplier,
        auto_tune: p.auto_tune,
        in_profile_drop_ratio: p.reactive_override.in_profile_drop_ratio,
        cpu_busy_ratio: p.reactive_override.cpu_busy_ratio,
        overcommit: p.overcommit,
        drop_precedence: p.drop_precedence,
        mix_limit: p.max_exchange_fraction,
    }
}

/// Forecasting settings from the config's `forecast` section. A daily `season_s` also gives a
/// weekly season.
pub fn forecast_settings(f: &config::Forecast) -> Settings {
    let interval_s = f.interval_ms as f64 / 1000.0;
    let steps = |secs: u64| ((secs as f64 / interval_s).round() as usize).max(1);
    Settings {
        interval_s,
        horizon: steps(f.horizon_s).clamp(1, crate::forecast::MAX_HORIZON),
        season: steps(f.season_s),
        weekly: if f.season_s == 86_400 {
            7 * steps(f.season_s)
        } else {
            1
        },
        confidence: f.confidence,
        model: f.model,
        alert_mase: f.accuracy_alert_mase,
        intervals: f.intervals,
    }
}

/// A scheduled event of the config (`events`) as demand the forecaster adds: `None` if its
/// start is not an RFC 3339 time.
pub fn known_event(e: &config::Event) -> Option<KnownEvent> {
    let start = humantime::parse_rfc3339(&e.start).ok()?;
    let start = start
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    Some(KnownEvent {
        start,
        duration_s: e.duration_s as f64,
        rate: e.rate.bytes_per_sec() as f64,
    })
}

/// What a tenant's forecaster leans on and how accurate it is, for the API.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ForecastInfo {
    pub model: ModelKind,
    /// Rolling one-step MASE against the seasonal naive.
    pub mase: Option<f64>,
    /// Rolling share of actuals inside the one-step interval.
    pub coverage: Option<f64>,
    /// The MASE is above `forecast.accuracy_alert_mase` (with enough samples).
    pub inaccurate: bool,
}

impl Default for ForecastInfo {
    fn default() -> Self {
        ForecastInfo {
            model: ModelKind::Ewma,
            mase: None,
            coverage: None,
            inaccurate: false,
        }
    }
}

/// Scored samples before a tenant's forecasts may be found worse than the seasonal naive
/// (before that they are trusted: a new tenant is predicted from its first cycles).
const TRUST_AFTER: usize = 100;

/// Tenants from which `Planner::step` forecasts on several threads, and at most how many.
const PARALLEL_FROM: usize = 4096;
/// How many tenants ahead a forecaster's memory is asked for (see `Forecaster::prefetch`).
const PREFETCH_AHEAD: usize = 8;
const MAX_THREADS: usize = 8;

/// The forecast-and-allocate stage of one agent, or of one simulation: a forecaster per
/// tenant, the allocator's state, and the profiles from the config. Pure: callers bring the
/// measurements and apply the allocations.
pub struct Planner {
    pub policy: PolicyParams,
    pub profiles: Vec<Profile>,
    names: Vec<String>,
    forecasters: Vec<Forecaster>,
    state: Vec<Tuning>,
    capacity: f64,
    guaranteed: f64,
    interval_s: f64,
    cycle: u64,
}

/// The profiles of a config's tenants, in config order.
pub fn profiles(cfg: &Config) -> Vec<Profile> {
    cfg.tenants
        .iter()
        .map(|t| {
            let tier = cfg.tiers.get(&t.tier);
            let rate = t.rate.bits_per_sec() as f64 / 8.0;
            Profile {
                rate,
                ceil: t.ceil.map_or(rate, |c| c.bits_per_sec() as f64 / 8.0),
                burst: t.burst.bytes() as f64,
                priority: tier.map_or(0, |t| t.priority.min(3)),
                risk: tier.map_or(0.5, |t| t.risk),
                mix: {
                    let m = t
                        .mix
                        .clone()
                        .unwrap_or_else(|| cfg.token_types.default_mix());
                    [m.gold, m.silver, m.bronze]
                },
                worth: cfg
                    .token_types
                    .exchange_rates
                    .as_ref()
                    .map_or([1.0; 3], |m| [m.gold, m.silver, m.bronze]),
                borrows: tier.is_some_and(|t| t.borrow)
                    && t.ceil.is_some_and(|c| c > t.rate)
                    && cfg.pools.opportunistic > 0.0,
            }
        })
        .collect()
}

impl Planner {
    /// A planner for `cfg` under `mode`. Tenants of `previous` that `cfg` still has keep their
    /// forecaster and allocator state (a reload does not forget what was learned).
    pub fn new(cfg: &Config, mode: PolicyMode, previous: Option<Planner>) -> Planner {
        let mut policy = policy(&cfg.policy);
        policy.mode = mode;
        let profiles = profiles(cfg);
        let settings = forecast_settings(&cfg.forecast);
        // What the previous planner learned, by tenant: kept where it is when the tenants are
        // the same in the same order (a reload that changed a rate: 100,000 forecasters are
        // neither moved nor copied), else found by name.
        let (forecasters, state) = match previous {
            Some(p)
                if p.names.len() == cfg.tenants.len()
                    && p.names.iter().zip(&cfg.tenants).all(|(n, t)| *n == t.name) =>
            {
                (p.forecasters, p.state)
            }
            previous => {
                let mut old: std::collections::HashMap<String, (Forecaster, Tuning)> = previous
                    .map(|p| {
                        p.names
                            .into_iter()
                            .zip(p.forecasters.into_iter().zip(p.state))
                            .collect()
                    })
                    .unwrap_or_default();
                cfg.tenants
                    .iter()
                    .zip(&profiles)
                    .map(|(t, prof)| {
                        old.remove(&t.name).unwrap_or_else(|| {
                            (
                                Forecaster::new(settings.clone()),
                                Tuning::new(&policy, prof),
                            )
                        })
                    })
                    .unzip()
            }
        };
        let (mut forecasters, state): (Vec<Forecaster>, Vec<Tuning>) = (forecasters, state);
        for (t, f) in cfg.tenants.iter().zip(forecasters.iter_mut()) {
            // Scheduled demand (config `events`) is known, not forecast.
            f.set_events(
                cfg.events
                    .iter()
                    .filter(|e| e.tenant == t.name)
                    .filter_map(known_event)
                    .collect(),
            );
        }
        Planner {
            policy,
            names: cfg.tenants.iter().map(|t| t.name.clone()).collect(),
            forecasters,
            state,
            capacity: cfg.link.capacity.bits_per_sec() as f64 / 8.0,
            guaranteed: cfg.pools.guaranteed,
            interval_s: cfg.forecast.interval_ms as f64 / 1000.0,
            cycle: 0,
            profiles,
        }
    }

    /// One cycle: learns what each tenant offered (`observed`, config order) at unix time
    /// `ts`, forecasts, and allocates the next cycle. Also returns what each tenant's
    /// forecaster leans on and how accurate it is, read in the same pass.
    pub fn step(
        &mut self,
        ts: f64,
        observed: &[Observed],
        host: Host,
    ) -> (Vec<Allocation>, Vec<Change>, Vec<Demand>, Vec<ForecastInfo>) {
        let forecast = |fs: &mut [Forecaster],
                        obs: &[Observed],
                        (out, info): (&mut [Demand], &mut [ForecastInfo])| {
            for (j, ((o, d), i)) in obs.iter().zip(out).zip(info).enumerate() {
                // The cycle waits on memory: ask for the next tenants' state while this one
                // is worked on (the forecaster itself, then its vectors, then what those
                // point to).
                if let Some(next) = fs.get(j + 2 * PREFETCH_AHEAD) {
                    next.prefetch_self();
                }
                if let Some(next) = fs.get(j + PREFETCH_AHEAD) {
                    next.prefetch();
                }
                if let Some(next) = fs.get(j + PREFETCH_AHEAD / 2) {
                    next.prefetch_deep();
                }
                let Some(f) = fs.get_mut(j) else { break };
                f.update(ts, o.offered);
                let a = f.accuracy();
                let trusted = a.samples < TRUST_AFTER || a.mase.is_none_or(|m| m < 1.0);
                // Forecasts worse than the seasonal naive give way to the naive's: it predicted
                // better (a recurring burst a level model misses at its onset). Their accuracy
                // is still tracked on their own forecasts, so trust returns when they recover.
                let (next, peak_in, peak) = if trusted {
                    let (peak_in, peak) = f.peak();
                    (f.forecast(1), peak_in, peak)
                } else {
                    f.naive_outlook()
                };
                *d = Demand {
                    next,
                    peak,
                    peak_in,
                    trusted,
                };
                *i = ForecastInfo {
                    model: f.model(),
                    mase: a.mase,
                    coverage: a.coverage,
                    inaccurate: f.accuracy_alert(),
                };
            }
        };
        let n = self.forecasters.len().min(observed.len());
        let mut demand = vec![Demand::default(); n];
        let mut info = vec![ForecastInfo::default(); n];
        // Forecasters are independent: with many tenants, one chunk per core. Each tenant's
        // update touches its own few kilobytes, so the cycle is bound by memory, and cores
        // share that work well.
        let threads = if n >= PARALLEL_FROM {
            std::thread::available_parallelism().map_or(1, |c| c.get().min(MAX_THREADS))
        } else {
            1
        };
        if threads == 1 {
            forecast(
                &mut self.forecasters[..n],
                &observed[..n],
                (&mut demand, &mut info),
            );
        } else {
            let chunk = n.div_ceil(threads);
            std::thread::scope(|s| {
                for (((fs, os), ds), is) in self.forecasters[..n]
                    .chunks_mut(chunk)
                    .zip(observed[..n].chunks(chunk))
                    .zip(demand.chunks_mut(chunk))
                    .zip(info.chunks_mut(chunk))
                {
                    s.spawn(move || forecast(fs, os, (ds, is)));
                }
            });
        }
        let (a, ev) = self.allocate_for(observed, &demand, host);
        (a, ev, demand, info)
    }

    /// One cycle with the demand given instead of forecast: the oracle of the simulator, fed
    /// what the trace will offer (the upper bound of what forecasting can give).
    pub fn step_known(
        &mut self,
        observed: &[Observed],
        demand: &[Demand],
        host: Host,
    ) -> (Vec<Allocation>, Vec<Change>) {
        self.allocate_for(observed, demand, host)
    }

    /// The allocator's step for this cycle's measures and demand.
    fn allocate_for(
        &mut self,
        observed: &[Observed],
        demand: &[Demand],
        host: Host,
    ) -> (Vec<Allocation>, Vec<Change>) {
        let (a, ev) = allocate(
            &Inputs {
                policy: &self.policy,
                link: LinkPools {
                    capacity: self.capacity,
                    guaranteed: self.guaranteed,
                },
                profiles: &self.profiles,
                observed,
                demand,
                host,
                interval_s: self.interval_s,
                cycle: self.cycle,
            },
            &mut self.state,
        );
        self.cycle += 1;
        (a, ev)
    }

    /// The forecast horizon in cycles.
    /// Tenant `k`'s forecast `steps` cycles ahead (at most the horizon).
    pub fn forecast_at(&self, k: usize, steps: usize) -> Option<crate::forecast::Prediction> {
        let h = steps.clamp(1, self.horizon());
        self.forecasters.get(k).map(|f| f.forecast(h))
    }

    /// Tenant `k`'s change over the `steps` cycles ahead as its seasonal naive sees it.
    pub fn seasonal_change(&self, k: usize, steps: usize) -> f64 {
        let h = steps.clamp(1, self.horizon().saturating_sub(1).max(1));
        self.forecasters
            .get(k)
            .map_or(0.0, |f| f.seasonal_change(h))
    }

    pub fn horizon(&self) -> usize {
        self.forecasters.first().map_or(1, |f| f.settings().horizon)
    }

    /// Tenant names, config order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Feeds tenant `name`'s forecaster past (unix time, offered bytes/s) samples, oldest
    /// first: a restart continues from history instead of from nothing. Returns how many it
    /// took.
    pub fn warm(&mut self, name: &str, samples: &[(f64, f64)]) -> usize {
        let Some(i) = self.names.iter().position(|n| n == name) else {
            return 0;
        };
        samples
            .iter()
            .filter(|(ts, v)| {
                matches!(
                    self.forecasters[i].update(*ts, *v),
                    Outcome::Accepted | Outcome::Gap { .. } | Outcome::Clamped { .. }
                )
            })
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduled_events_become_known_demand() {
        let ev = config::Event {
            tenant: "a".into(),
            start: "2026-12-01T02:00:00Z".into(),
            duration_s: 1800,
            rate: crate::units::Rate(8_000_000),
            note: None,
        };
        let k = known_event(&ev).expect("parse");
        assert_eq!((k.start, k.rate), (1_796_090_400.0, 1_000_000.0));
    }

    /// A reload keeps what was learned of every tenant that stays: in place when the tenants
    /// are the same in the same order, by name when they moved; a new tenant starts afresh.
    #[test]
    fn a_reload_keeps_what_each_staying_tenant_learned() {
        let cfg = |names: &[&str]| {
            let tenants: Vec<String> = names
                .iter()
                .enumerate()
                .map(|(i, n)| format!(r#"{{ "name": "{n}", "tier": "gold", "prefixes": ["10.0.{i}.0/24"], "rate": "100mbit", "burst": "64kb" }}"#))
                .collect();
            Config::parse(&format!(
                r#"{{ "link": {{ "capacity": "1gbit" }}, "tenants": [{}] }}"#,
                tenants.join(",")
            ))
            .expect("valid")
        };
        let first = cfg(&["a", "b"]);
        let mut p = Planner::new(&first, PolicyMode::Predictive, None);
        for c in 0..50 {
            let obs = [1e6, 5e6].map(|offered| Observed {
                offered,
                ..Observed::default()
            });
            p.step(1.7e9 + c as f64, &obs, Host::default());
        }
        let learned = |p: &Planner, i: usize| p.forecasters[i].forecast(1).mean;
        let (a, b) = (learned(&p, 0), learned(&p, 1));
        assert!(a > 0.0 && b > a);
        let p = Planner::new(&first, PolicyMode::Predictive, Some(p));
        assert_eq!(
            (learned(&p, 0), learned(&p, 1)),
            (a, b),
            "same tenants, same order"
        );
        let p = Planner::new(&cfg(&["c", "b", "a"]), PolicyMode::Predictive, Some(p));
        assert_eq!((learned(&p, 1), learned(&p, 2)), (b, a), "found by name");
        assert_eq!(learned(&p, 0), 0.0, "a new tenant starts afresh");
    }

    /// Accuracy in the loop: a tenant whose forecasts lose to the seasonal naive is flagged
    /// inaccurate (the `forecast_inaccurate` alert), untrusted (allocated reactively), and its
    /// MASE and coverage come out for the API.
    #[test]
    fn forecasts_worse_than_naive_raise_the_alert_and_lose_trust() {
        let cfg = Config::parse(
            r#"{
            "link": { "capacity": "1gbit" },
            "tenants": [ { "name": "a", "tier": "gold", "prefixes": ["10.0.0.0/24"], "rate": "100mbit", "burst": "64kb" } ],
            "forecast": { "interval_ms": 1000, "season_s": 24, "horizon_s": 4, "model": "holt", "accuracy_alert_mase": 0.5 }
        }"#,
        )
        .expect("valid");
        let mut p = Planner::new(&cfg, PolicyMode::Predictive, None);
        // A strict 24-sample season: the seasonal naive is exact, Holt is not.
        let mut last = None;
        for c in 0..400 {
            let offered = if c % 24 < 6 { 9e6 } else { 1e6 };
            let obs = [Observed {
                offered,
                ..Observed::default()
            }];
            last = Some(p.step(1.7e9 + c as f64, &obs, Host::default()));
        }
        let (_, _, demand, info) = last.expect("ran");
        assert!(info[0].inaccurate, "{:?}", info[0]);
        assert!(info[0].mase.is_some_and(|m| m > 1.0), "{:?}", info[0]);
        assert!(info[0].coverage.is_some());
        assert!(!demand[0].trusted);
    }
}
