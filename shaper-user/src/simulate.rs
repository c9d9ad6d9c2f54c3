//! Simulate: replays a multi-tenant trace through the forecaster and the allocator (the code
//! the agent runs) and a fluid model of the datapath's spending order, one cycle at a time,
//! deterministically. Also generates seeded synthetic traces.
//!
//! The model, per cycle of `interval_s`: each tenant offers `d` bytes/s. Deposit credit pays
//! first, then the pre-allocated pool, then the tenant's own bucket (its fill rate, plus up to
//! a burst carried over); if the tenants' own buckets together pass more than the link, the
//! link drops the excess from everyone in proportion (what an oversubscribed NIC does). What
//! is left borrows the link bucket's idle part (tiers with `borrow`, higher priority first,
//! up to `ceil`), then the emergency pool (tiers with `emergency`); the rest is dropped.
//! In-profile traffic is what a tenant offers within its base rate over the cycle.
//!
//! Besides the agent's policies, two references: the oracle (the predictive allocator fed the
//! demand that actually comes, the upper bound of what forecasting can give) and an HTB tree
//! with the same rates, ceilings and priorities (each tenant's rate assured, the link's idle
//! capacity lent by priority, in proportion to rate within one, up to the ceiling).
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use crate::allocate::{self, Demand, Host, Observed};
use crate::config::{Config, PolicyMode};
use crate::forecast::Prediction;
use crate::planner::{self, Planner};

/// Offered bytes/s per tenant and cycle.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    pub interval_s: f64,
    /// Unix time of the first cycle.
    pub start: f64,
    pub tenants: Vec<String>,
    /// `offered[tenant][cycle]`, bytes/s.
    pub offered: Vec<Vec<f64>>,
}

impl Trace {
    /// Where each of `cfg`'s tenants is in the trace, config order.
    pub fn indices(&self, cfg: &Config) -> Result<Vec<usize>, String> {
        cfg.tenants
            .iter()
            .map(|t| {
                self.tenants
                    .iter()
                    .position(|n| *n == t.name)
                    .ok_or_else(|| format!("tenant '{}' is not in the trace", t.name))
            })
            .collect()
    }

    pub fn cycles(&self) -> usize {
        self.offered.first().map_or(0, Vec::len)
    }

    /// `time,tenant,offered_bytes` rows: unix seconds, tenant name, bytes offered during the
    /// cycle that starts then.
    pub fn to_csv(&self) -> String {
        let mut s = String::from("time,tenant,offered_bytes\n");
        for c in 0..self.cycles() {
            let t = self.start + c as f64 * self.interval_s;
            for (name, series) in self.tenants.iter().zip(&self.offered) {
                s.push_str(&format!("{t},{name},{:.0}\n", series[c] * self.interval_s));
            }
        }
        s
    }

    /// Parses [`Trace::to_csv`]'s format. Every tenant needs a row at every time; times must
    /// be evenly spaced.
    pub fn from_csv(text: &str) -> Result<Trace, String> {
        let mut rows: Vec<(f64, String, f64)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || (n == 0 && line.starts_with("time")) {
                continue;
            }
            let f: Vec<&str> = line.split(',').collect();
            let [t, name, bytes] = f.as_slice() else {
                return Err(format!("line {}: want time,tenant,offered_bytes", n + 1));
            };
            let t: f64 = t
                .parse()
                .map_err(|_| format!("line {}: bad time '{t}'", n + 1))?;
            let b: f64 = bytes
                .parse()
                .ok()
                .filter(|b: &f64| b.is_finite() && *b >= 0.0)
                .ok_or_else(|| format!("line {}: bad byte count '{bytes}'", n + 1))?;
            rows.push((t, name.to_string(), b));
        }
        let mut times: Vec<f64> = rows.iter().map(|r| r.0).collect();
        times.sort_by(f64::total_cmp);
        times.dedup();
        let mut tenants: Vec<String> = rows.iter().map(|r| r.1.clone()).collect();
        tenants.sort();
        tenants.dedup();
        if times.len() < 2 || tenants.is_empty() {
            return Err("a trace needs at least two times and one tenant".into());
        }
        let interval = times[1] - times[0];
        if interval <= 0.0
            || times
                .windows(2)
                .any(|w| ((w[1] - w[0]) - interval).abs() > 1e-6 * interval.max(1.0))
        {
            return Err("times must be evenly spaced".into());
        }
        let mut offered = vec![vec![f64::NAN; times.len()]; tenants.len()];
        for (t, name, b) in rows {
            let c = ((t - times[0]) / interval).round() as usize;
            let i = tenants
                .binary_search(&name)
                .map_err(|_| "tenant".to_string())?;
            offered[i][c] = b / interval;
        }
        if let Some((i, c)) = offered
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.iter().position(|v| v.is_nan()).map(|c| (i, c)))
        {
            return Err(format!(
                "tenant '{}' has no row at time {}",
                tenants[i],
                times[0] + c as f64 * interval
            ));
        }
        Ok(Trace {
            interval_s: interval,
            start: times[0],
            tenants,
            offered,
        })
    }
}

/// Kinds of synthetic traces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceKind {
    /// Daily cycles peaking at 1.2x the rate, each tenant at its own hour.
    Diurnal,
    /// A low diurnal base and a nightly batch job per tenant at its rate, same time each day.
    Batch,
    /// A diurnal base and a daily flash crowd per tenant at 1.5x its rate, plus one at a random
    /// time each day.
    Flash,
    /// Pareto ON/OFF: unpredictable by construction.
    Onoff,
    /// Weekdays as `diurnal`; Saturdays and Sundays at half the level, peaking six hours
    /// later (the trace starts on a Tuesday).
    Weekly,
    /// `diurnal`, until every other tenant changes pattern halfway through the trace: its
    /// peak eight hours later and 30% higher (a customer that moved time zone, or grew).
    Shift,
}

const DAY: f64 = 86_400.0;

/// A seeded trace for the tenants of `cfg`, `days` long, one row per forecast interval.
pub fn generate(kind: TraceKind, cfg: &Config, days: f64, seed: u64) -> Trace {
    let interval = cfg.forecast.interval_ms as f64 / 1000.0;
    let cycles = (days * DAY / interval).round() as usize;
    // Midnight UTC, 2026-12-01: the time of day matters to the daily patterns.
    let start = 1_796_083_200.0;
    let mut rng = StdRng::seed_from_u64(seed);
    let n = cfg.tenants.len();
    let mut offered = vec![vec![0.0; cycles]; n];
    for (i, (t, series)) in cfg.tenants.iter().zip(offered.iter_mut()).enumerate() {
        let r = t.rate.bits_per_sec() as f64 / 8.0;
        let phase = i as f64 / n.max(1) as f64;
        let diurnal =
            |ts: f64| 0.5 + 0.5 * (2.0 * std::f64::consts::PI * (ts / DAY - 0.25 - phase)).sin();
        // The diurnal kind's level: from 0.3x to 1.2x the rate.
        let daily = |ts: f64| r * (0.3 + 0.9 * diurnal(ts));
        // Per-day random flash (flash kind) and the ON/OFF state (onoff kind).
        let mut random_flash = 0usize;
        let (mut on, mut left) = (false, 0usize);
        for (c, slot) in series.iter_mut().enumerate() {
            let ts = c as f64 * interval;
            let day_cycle = ((ts % DAY) / interval) as usize;
            if day_cycle == 0 {
                random_flash = rng.random_range(0..(DAY / interval) as usize);
            }
            let noise = 1.0 + 0.1 * (rng.random::<f64>() * 2.0 - 1.0);
            let hour = (ts % DAY) / 3600.0;
            let v = match kind {
                TraceKind::Diurnal => daily(ts),
                TraceKind::Weekly => {
                    // 2026-12-01 is a Tuesday: day 4 of the trace is Saturday.
                    let weekday = ((ts / DAY) as usize + 1) % 7;
                    if weekday >= 5 {
                        0.5 * daily(ts - 6.0 * 3600.0)
                    } else {
                        daily(ts)
                    }
                }
                TraceKind::Shift => {
                    if i % 2 == 1 && c >= cycles / 2 {
                        1.3 * daily(ts - 8.0 * 3600.0)
                    } else {
                        daily(ts)
                    }
                }
                TraceKind::Batch => {
                    let job_start = 1.0 + (i % 5) as f64;
                    let base = r * (0.1 + 0.2 * diurnal(ts));
                    if hour >= job_start && hour < job_start + 0.5 {
                        base + r
                    } else {
                        base
                    }
                }
                TraceKind::Flash => {
                    let at = 12.0 + 0.25 * i as f64;
                    let base = r * (0.2 + 0.4 * diurnal(ts));
                    let flash = (hour >= at && hour < at + 5.0 / 60.0)
                        || (day_cycle >= random_flash
                            && (day_cycle - random_flash) as f64 * interval < 180.0);
                    if flash { r * 1.5 } else { base }
                }
                TraceKind::Onoff => {
                    if left == 0 {
                        on = !on;
                        // Pareto (shape 1.5) durations: mean 5 min on, 10 min off.
                        let mean = if on { 300.0 } else { 600.0 };
                        let u: f64 = rng.random_range(1e-6..1.0);
                        let d = mean / 3.0 * u.powf(-1.0 / 1.5);
                        left = ((d / interval).round() as usize).max(1);
                    }
                    left -= 1;
                    if on {
                        r * rng.random_range(0.8..1.2)
                    } else {
                        r * 0.05
                    }
                }
            };
            *slot = (v * noise).max(0.0);
        }
    }
    Trace {
        interval_s: interval,
        start,
        tenants: cfg.tenants.iter().map(|t| t.name.clone()).collect(),
        offered,
    }
}

/// One tenant's totals over a simulation.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TenantResult {
    pub name: String,
    pub tier: String,
    pub offered_bytes: f64,
    pub passed_bytes: f64,
    pub dropped_bytes: f64,
    pub in_profile_bytes: f64,
    pub in_profile_dropped_bytes: f64,
    /// Cycles in which a gold or platinum tenant lost more than 0.1% of its in-profile bytes.
    pub violations: u64,
    pub pre_deposited_bytes: f64,
    pub pre_used_bytes: f64,
    pub pre_expired_bytes: f64,
    /// Burst onsets: cycles whose offered bytes are above the base rate and more than 1.5x the
    /// cycle before. What they offered within the ceiling, and what of it was dropped (the
    /// loss pre-allocation is meant to prevent: a reactive allocator only follows a ramp).
    pub onset_bytes: f64,
    pub onset_dropped_bytes: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SimResult {
    pub policy: String,
    pub cycles: usize,
    pub tenants: Vec<TenantResult>,
    pub offered_bytes: f64,
    pub passed_bytes: f64,
    pub in_profile_dropped_bytes: f64,
    /// Gold and platinum violations, all tenants.
    pub violations: u64,
    /// Passed bytes over what the link could carry in the whole run.
    pub link_utilization: f64,
    /// Jain's index of passed / demand (offered, capped at the ceiling), per tenant.
    pub jain_fairness: f64,
    pub pre_deposited_bytes: f64,
    pub pre_used_bytes: f64,
    pub pre_expired_bytes: f64,
    /// Burst onsets, all tenants (see [`TenantResult::onset_bytes`]).
    pub onset_bytes: f64,
    pub onset_dropped_bytes: f64,
    /// Bytes dropped within what tenants may use (their ceiling where their tier borrows,
    /// else their rate) in cycles whose link had room left, up to that room: capacity a
    /// policy left idle while someone entitled to it lost traffic.
    pub dropped_while_idle_bytes: f64,
    /// Times a tenant's fill rate moved by more than 0.1% from one cycle to the next (what
    /// the agent would write to the datapath), all tenants.
    pub rate_changes: u64,
}

impl SimResult {
    /// Fill-rate changes per tenant and hour.
    pub fn rate_changes_per_tenant_hour(&self, dt: f64) -> f64 {
        let hours = self.cycles as f64 * dt / 3600.0;
        let tenants = self.tenants.len().max(1) as f64;
        if hours > 0.0 {
            self.rate_changes as f64 / hours / tenants
        } else {
            0.0
        }
    }
}

/// What drives a simulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimPolicy {
    /// One of the agent's policies.
    Mode(PolicyMode),
    /// The predictive allocator fed the demand that actually comes instead of forecasts.
    Oracle,
    /// An HTB tree with the same rates, ceilings and priorities; no forecasts.
    Htb,
}

impl SimPolicy {
    pub fn name(self) -> String {
        match self {
            SimPolicy::Mode(m) => m.name().into(),
            SimPolicy::Oracle => "oracle".into(),
            SimPolicy::Htb => "htb".into(),
        }
    }
}

/// Shares `pool` among `members` for what each `asks`, max-min fair in proportion to
/// `weights`, no more than the link has `room` for, moving the shares from `rem` to `passed`
/// and taking them from both the pool and the room.
fn share(
    members: &[usize],
    (asks, weights): (&[f64], &[f64]),
    (pool, room): (&mut f64, &mut f64),
    passed: &mut [f64],
    rem: &mut [f64],
) {
    let got = allocate::water_fill(asks, weights, pool.min(*room));
    for (k, &i) in members.iter().enumerate() {
        passed[i] += got[k];
        rem[i] -= got[k];
        *pool -= got[k];
        *room -= got[k];
    }
}

/// Per-tenant model state between cycles.
#[derive(Clone, Copy, Default)]
struct Buckets {
    own: f64,
    pre: f64,
    credit: f64,
    credit_until: usize,
}

/// Rounds of the fluid model's fit of pre-allocated bytes into a link over capacity.
const PRE_ROUNDS: usize = 3;

/// The fluid model of the datapath's spending order, per tenant: deposit credit, the
/// pre-allocated pool, the own bucket, then the link's idle capacity and the emergency pool.
struct Fluid {
    profiles: Vec<allocate::Profile>,
    borrow: Vec<bool>,
    emergency: Vec<bool>,
    buckets: Vec<Buckets>,
    /// The allocation in force.
    alloc: Vec<allocate::Allocation>,
    /// Bytes/s: the link, what borrowers may use of it, the emergency reserve.
    cap: f64,
    link_pool: f64,
    emergency_pool: f64,
    dt: f64,
    /// HTB's borrowing instead of the datapath's: every class with a ceiling (its tier borrows)
    /// borrows the whole link's idle part, in proportion to its rate within a priority; no
    /// emergency pool.
    htb: bool,
    /// Drop precedence, bytes/s: what the own-token traffic of all tiers may use before the
    /// lower tiers' yields, bronze first: the link's capacity (the datapath's capacity word;
    /// HTB dequeues in-rate classes by priority). `None`: off.
    precedence: Option<f64>,
}

/// One cycle of one tenant through the model, bytes.
#[derive(Clone, Copy, Debug, Default)]
struct Flow {
    passed: f64,
    /// Offered and not passed.
    rem: f64,
    /// Paid from the deposit credit or the pre-allocated pool.
    used: f64,
    /// Deposit credit that expired unused.
    expired: f64,
}

impl Fluid {
    fn new(cfg: &Config, profiles: Vec<allocate::Profile>, dt: f64, htb: bool) -> Fluid {
        let tier_has = |f: fn(&crate::config::Tier) -> bool| -> Vec<bool> {
            cfg.tenants
                .iter()
                .map(|t| cfg.tiers.get(&t.tier).is_some_and(f))
                .collect()
        };
        let cap = cfg.link.capacity.bits_per_sec() as f64 / 8.0;
        let link_pool = cap * (cfg.pools.guaranteed + cfg.pools.opportunistic);
        Fluid {
            // As the datapath: no borrowing at all without an opportunistic pool. HTB has no
            // such pool: a class borrows up to its ceiling, which it has where its tier
            // borrows (as `xtask replay` builds the tree).
            borrow: if htb {
                tier_has(|t| t.borrow)
            } else {
                profiles.iter().map(|p| p.borrows).collect()
            },
            emergency: tier_has(|t| t.emergency),
            alloc: profiles
                .iter()
                .map(|p| allocate::Allocation::base(p.rate))
                .collect(),
            buckets: profiles
                .iter()
                .map(|p| Buckets {
                    own: p.burst,
                    ..Buckets::default()
                })
                .collect(),
            profiles,
            cap,
            // With precedence the reserve is lent to borrowers until the top tiers need it.
            link_pool: if htb || cfg.policy.drop_precedence {
                cap
            } else {
                link_pool
            },
            emergency_pool: if htb { 0.0 } else { cap * cfg.pools.emergency },
            dt,
            htb,
            precedence: (htb || cfg.policy.drop_precedence).then_some(cap),
        }
    }

    /// Cycle `c` with `offered` bytes per tenant.
    fn cycle(&mut self, c: usize, offered: &[f64]) -> Vec<Flow> {
        // The buckets as the cycle found them, should pre-allocation have to be spent again.
        let before = self.precedence.is_some().then(|| self.buckets.clone());
        let mut flows: Vec<Flow> = offered
            .iter()
            .enumerate()
            .map(|(i, d)| self.own(i, c, *d, f64::INFINITY))
            .collect();
        if let (Some(room), Some(before)) = (self.precedence, before) {
            // Pre-allocated bytes are above their tenant's rate: with the link over capacity
            // they stop, as borrowed ones do, and what they would have carried tries the own
            // bucket. Spent again with pre-allocation limited to the room the own-token
            // traffic leaves, shared in proportion (the datapath's first come); that traffic
            // grows with what pre-allocation no longer carries, hence a few rounds.
            let wanted: Vec<f64> = flows.iter().map(|f| f.used).collect();
            let used: f64 = wanted.iter().sum();
            let mut total: f64 = flows.iter().map(|f| f.passed).sum();
            let mut own = total - used;
            for _ in 0..PRE_ROUNDS {
                if used <= 0.0 || total <= room * self.dt {
                    break;
                }
                let keep = ((room * self.dt - own) / used).clamp(0.0, 1.0);
                self.buckets = before.clone();
                flows = offered
                    .iter()
                    .zip(&wanted)
                    .enumerate()
                    .map(|(i, (d, w))| self.own(i, c, *d, w * keep))
                    .collect();
                total = flows.iter().map(|f| f.passed).sum();
                own = total - flows.iter().map(|f| f.used).sum::<f64>();
            }
            self.yield_own(&mut flows, room);
        }
        // An oversubscribed link drops the excess of what the buckets let through.
        let total: f64 = flows.iter().map(|f| f.passed).sum();
        if total > self.cap * self.dt {
            let keep = self.cap * self.dt / total;
            for f in &mut flows {
                f.rem += f.passed * (1.0 - keep);
                f.passed *= keep;
            }
        }
        self.pools(&mut flows);
        flows
    }

    /// Deposit credit and the pre-allocated pool (together at most `pre_allow` bytes), the
    /// own bucket.
    fn own(&mut self, i: usize, c: usize, offered: f64, pre_allow: f64) -> Flow {
        let (b, a, dt) = (&mut self.buckets[i], &self.alloc[i], self.dt);
        let mut f = Flow {
            rem: offered,
            ..Flow::default()
        };
        if b.credit > 0.0 && c >= b.credit_until {
            f.expired = b.credit;
            b.credit = 0.0;
        }
        let from_credit = f.rem.min(b.credit).min(pre_allow);
        b.credit -= from_credit;
        b.pre = (b.pre + a.pre_rate * dt).min(a.pre_cap);
        let from_pre = (f.rem - from_credit)
            .min(b.pre)
            .min(pre_allow - from_credit);
        b.pre -= from_pre;
        f.used = from_credit + from_pre;
        let own_tokens = b.own + a.fill * dt;
        let from_own = (f.rem - from_credit - from_pre).min(own_tokens);
        b.own = (own_tokens - from_own).min(self.profiles[i].burst);
        f.passed = from_credit + from_pre + from_own;
        f.rem -= f.passed;
        f
    }

    /// Drop precedence: own-token traffic beyond `room` yields, lowest tier first, in
    /// proportion within a tier. Pre-allocated bytes were already limited to the room (see
    /// [`Fluid::cycle`]); the top tier's own traffic never yields (under HTB the top tier is
    /// served first anyway).
    fn yield_own(&self, flows: &mut [Flow], room: f64) {
        // Pre-allocated bytes passed first (limited to the room already).
        let mut left = room * self.dt - flows.iter().map(|f| f.used).sum::<f64>();
        for prio in (0..=3u8).rev() {
            let members: Vec<usize> = (0..flows.len())
                .filter(|i| self.profiles[*i].priority == prio)
                .collect();
            let own = |f: &Flow| (f.passed - f.used).max(0.0);
            let total: f64 = members.iter().map(|&i| own(&flows[i])).sum();
            let keep = if prio == 3 || total <= left {
                1.0
            } else {
                left.max(0.0) / total
            };
            for &i in &members {
                let cut = own(&flows[i]) * (1.0 - keep);
                flows[i].passed -= cut;
                flows[i].rem += cut;
            }
            left -= total * keep;
        }
    }

    /// Borrowing (the link's idle part, up to the ceiling), higher priority first, then the
    /// emergency pool, first come.
    fn pools(&self, flows: &mut [Flow]) {
        let n = flows.len();
        let mut passed: Vec<f64> = flows.iter().map(|f| f.passed).collect();
        let mut rem: Vec<f64> = flows.iter().map(|f| f.rem).collect();
        let mut idle = (self.link_pool * self.dt - passed.iter().sum::<f64>()).max(0.0);
        let mut emerg = self.emergency_pool * self.dt;
        // Neither pool passes more than the link has left: the emergency reserve is part of
        // the link, not beyond it.
        let mut room = (self.cap * self.dt - passed.iter().sum::<f64>()).max(0.0);
        for prio in (0..=3u8).rev() {
            let members: Vec<usize> = (0..n)
                .filter(|i| self.profiles[*i].priority == prio)
                .collect();
            let asks: Vec<f64> = members
                .iter()
                .map(|&i| {
                    if self.borrow[i] {
                        let room = (self.profiles[i].ceil - self.alloc[i].fill) * self.dt;
                        rem[i].min(room.max(0.0))
                    } else {
                        0.0
                    }
                })
                .collect();
            let weights: Vec<f64> = members
                .iter()
                .map(|&i| {
                    if self.htb {
                        self.profiles[i].rate.max(1.0)
                    } else {
                        1.0
                    }
                })
                .collect();
            share(
                &members,
                (&asks, &weights),
                (&mut idle, &mut room),
                &mut passed,
                &mut rem,
            );
        }
        // The emergency pool is one bucket, first come first served among the tiers with
        // access, whatever their priority (as in the datapath): in a fluid model, shares in
        // proportion to what each still lacks.
        let members: Vec<usize> = (0..n).filter(|&i| self.emergency[i]).collect();
        let asks: Vec<f64> = members.iter().map(|&i| rem[i]).collect();
        let weights: Vec<f64> = asks.iter().map(|a| a.max(1e-9)).collect();
        share(
            &members,
            (&asks, &weights),
            (&mut emerg, &mut room),
            &mut passed,
            &mut rem,
        );
        for (f, (p, r)) in flows.iter_mut().zip(passed.into_iter().zip(rem)) {
            (f.passed, f.rem) = (p, r);
        }
    }

    /// The next cycle's allocation, its deposits credited (up to the pool's cap, spendable
    /// until they expire); returns the bytes deposited per tenant and how many fill rates
    /// moved (by more than 0.1%).
    fn allocate(&mut self, c: usize, alloc: Vec<allocate::Allocation>) -> (Vec<f64>, u64) {
        let changes = alloc
            .iter()
            .zip(&self.alloc)
            .filter(|(new, old)| (new.fill - old.fill).abs() > 1e-3 * old.fill.abs().max(1.0))
            .count() as u64;
        let mut deposited = vec![0.0; alloc.len()];
        for (i, a) in alloc.iter().enumerate() {
            if let Some(dep) = a.deposit {
                let b = &mut self.buckets[i];
                let add = dep.bytes.min((a.pre_cap - b.credit).max(0.0));
                b.credit += add;
                b.credit_until = c + 1 + (dep.ttl_s / self.dt).ceil() as usize;
                deposited[i] = add;
            }
        }
        self.alloc = alloc;
        (deposited, changes)
    }
}

/// The demand tenant `k` of `trace` offers from cycle `c + 1` on, as the oracle knows it: the
/// next cycle and the peak within `horizon` cycles, exact (no interval).
fn known_demand(trace: &Trace, k: usize, c: usize, horizon: usize) -> Demand {
    let series = &trace.offered[k];
    let at = |i: usize| series.get(i).copied().unwrap_or_else(|| series[c]);
    let exact = |v: f64| Prediction {
        mean: v,
        lo: v,
        hi: v,
    };
    let (mut peak_in, mut peak) = (1, at(c + 1));
    for h in 2..=horizon.max(1) {
        if at(c + h) > peak {
            (peak_in, peak) = (h, at(c + h));
        }
    }
    Demand {
        next: exact(at(c + 1)),
        peak: exact(peak),
        peak_in,
        trusted: true,
    }
}

/// Replays `trace` through the allocator under `policy`, the rest of `cfg` as given. The
/// trace's tenants must be the config's, and its interval the config's forecast interval.
pub fn simulate(trace: &Trace, cfg: &Config, policy: SimPolicy) -> Result<SimResult, String> {
    let mode = match policy {
        SimPolicy::Mode(m) => m,
        SimPolicy::Oracle => PolicyMode::Predictive,
        SimPolicy::Htb => PolicyMode::Static,
    };
    let interval = cfg.forecast.interval_ms as f64 / 1000.0;
    if (trace.interval_s - interval).abs() > 1e-9 {
        return Err(format!(
            "the trace's interval is {} s, the config's forecast.interval_ms says {} s",
            trace.interval_s, interval
        ));
    }
    let idx = trace.indices(cfg)?;
    let dt = interval;
    let mut planner = Planner::new(cfg, mode, None);
    let mut fluid = Fluid::new(cfg, planner.profiles.clone(), dt, policy == SimPolicy::Htb);
    let horizon = planner.horizon();
    let mut res = empty_results(cfg);
    let entitled = entitled(cfg);
    let mut idle_lost = 0.0;
    let mut rate_changes = 0;
    for c in 0..trace.cycles() {
        let d: Vec<f64> = idx.iter().map(|&k| trace.offered[k][c] * dt).collect();
        let flows = fluid.cycle(c, &d);
        let passed: Vec<f64> = flows.iter().map(|f| f.passed).collect();
        idle_lost += idle_loss(fluid.cap * dt, &entitled, dt, &d, &passed);
        let observed: Vec<Observed> = flows
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let prev = (c > 0).then(|| trace.offered[idx[i]][c - 1] * dt);
                let ip_dropped =
                    account(&mut res[i], &fluid.profiles[i], dt, (prev, d[i]), f.passed);
                res[i].pre_used_bytes += f.used;
                res[i].pre_expired_bytes += f.expired;
                Observed {
                    offered: d[i] / dt,
                    dropped: f.rem.max(0.0) / dt,
                    in_profile_dropped: ip_dropped / dt,
                    pre_used: f.used,
                    pre_expired: f.expired,
                    // The trace has no token types: the mix stays as configured.
                    by_type: [0.0; 3],
                }
            })
            .collect();
        // Allocate the next cycle.
        let ts = trace.start + c as f64 * dt;
        let a = if policy == SimPolicy::Oracle {
            let demand: Vec<Demand> = idx
                .iter()
                .map(|&k| known_demand(trace, k, c, horizon))
                .collect();
            planner.step_known(&observed, &demand, Host::default()).0
        } else {
            planner.step(ts, &observed, Host::default()).0
        };
        let (deposited, changes) = fluid.allocate(c, a);
        rate_changes += changes;
        for (r, add) in res.iter_mut().zip(deposited) {
            r.pre_deposited_bytes += add;
        }
    }
    let mut r = summarize(
        &policy.name(),
        trace.cycles(),
        dt,
        fluid.cap,
        &fluid.profiles,
        res,
    );
    r.dropped_while_idle_bytes = idle_lost;
    r.rate_changes = rate_changes;
    Ok(r)
}

/// Each tenant's most a policy may give it, bytes/s: its ceiling where its tier borrows,
/// else its rate.
fn entitled(cfg: &Config) -> Vec<f64> {
    cfg.tenants
        .iter()
        .map(|t| {
            let rate = t.rate.bits_per_sec() as f64 / 8.0;
            let borrows = cfg.tiers.get(&t.tier).is_some_and(|tier| tier.borrow);
            match t.ceil {
                Some(c) if borrows => rate.max(c.bits_per_sec() as f64 / 8.0),
                _ => rate,
            }
        })
        .collect()
}

/// One cycle's bytes dropped within what each tenant may use (`entitled`, bytes/s), up to
/// the link's room left (`cap_dt` less what passed): see
/// [`SimResult::dropped_while_idle_bytes`].
fn idle_loss(cap_dt: f64, entitled: &[f64], dt: f64, offered: &[f64], passed: &[f64]) -> f64 {
    let room = (cap_dt - passed.iter().sum::<f64>()).max(0.0);
    let lost: f64 = offered
        .iter()
        .zip(passed)
        .zip(entitled)
        .map(|((o, p), e)| (o.min(e * dt) - p).max(0.0))
        .sum();
    lost.min(room)
}

/// A cycle offering this many times the one before (and above the base rate) is a burst onset.
const ONSET: f64 = 1.5;

/// A zero result per tenant of `cfg`, named and tiered.
fn empty_results(cfg: &Config) -> Vec<TenantResult> {
    cfg.tenants
        .iter()
        .map(|t| TenantResult {
            name: t.name.clone(),
            tier: crate::config::tier_str(t.tier).to_string(),
            ..TenantResult::default()
        })
        .collect()
}

/// Adds one cycle of one tenant (bytes offered and passed in it) to its totals; returns the
/// in-profile bytes dropped. In profile: what was offered up to the base rate. A gold or
/// platinum tenant that lost more than 0.1% of it had a violation.
fn account(
    r: &mut TenantResult,
    p: &allocate::Profile,
    dt: f64,
    (prev, offered): (Option<f64>, f64),
    passed: f64,
) -> f64 {
    if prev.is_some_and(|prev| offered > p.rate * dt && offered > ONSET * prev) {
        let within = offered.min(p.ceil.max(p.rate) * dt);
        r.onset_bytes += within;
        r.onset_dropped_bytes += (within - passed).max(0.0);
    }
    let ip = offered.min(p.rate * dt);
    let ip_dropped = (ip - passed).max(0.0);
    r.offered_bytes += offered;
    r.passed_bytes += passed;
    r.dropped_bytes += (offered - passed).max(0.0);
    r.in_profile_bytes += ip;
    r.in_profile_dropped_bytes += ip_dropped;
    if allocate::violated(p.priority, offered, passed, p.rate * dt) {
        r.violations += 1;
    }
    ip_dropped
}

/// The run's totals, link utilization and fairness from each tenant's totals.
fn summarize(
    policy: &str,
    cycles: usize,
    dt: f64,
    cap: f64,
    profiles: &[allocate::Profile],
    res: Vec<TenantResult>,
) -> SimResult {
    let sum = |f: fn(&TenantResult) -> f64| res.iter().map(f).sum::<f64>();
    let xs: Vec<f64> = res
        .iter()
        .zip(profiles)
        .map(|(r, p)| {
            let want = r.offered_bytes.min(p.ceil * dt * cycles as f64);
            if want > 0.0 {
                (r.passed_bytes / want).min(1.0)
            } else {
                1.0
            }
        })
        .collect();
    let jain = {
        let s: f64 = xs.iter().sum();
        let s2: f64 = xs.iter().map(|x| x * x).sum();
        if s2 > 0.0 {
            s * s / (xs.len() as f64 * s2)
        } else {
            1.0
        }
    };
    SimResult {
        policy: policy.to_string(),
        cycles,
        offered_bytes: sum(|r| r.offered_bytes),
        passed_bytes: sum(|r| r.passed_bytes),
        in_profile_dropped_bytes: sum(|r| r.in_profile_dropped_bytes),
        violations: res.iter().map(|r| r.violations).sum(),
        link_utilization: sum(|r| r.passed_bytes) / (cap * dt * cycles.max(1) as f64),
        jain_fairness: jain,
        pre_deposited_bytes: sum(|r| r.pre_deposited_bytes),
        pre_used_bytes: sum(|r| r.pre_used_bytes),
        pre_expired_bytes: sum(|r| r.pre_expired_bytes),
        onset_bytes: sum(|r| r.onset_bytes),
        onset_dropped_bytes: sum(|r| r.onset_dropped_bytes),
        dropped_while_idle_bytes: 0.0,
        rate_changes: 0,
        tenants: res,
    }
}

/// What a policy's run `r` did worse than static's `s` on the same scenario, by the
/// do-no-harm test: in-profile bytes dropped above 1.1x static's (+1 MB), utilization more
/// than half a point lower, more gold/platinum violations. Empty: no harm.
pub fn harm(r: &SimResult, s: &SimResult) -> Vec<&'static str> {
    let mut bad = Vec::new();
    if r.in_profile_dropped_bytes > 1.1 * s.in_profile_dropped_bytes + 1e6 {
        bad.push("more in-profile loss");
    }
    if r.link_utilization < s.link_utilization - 0.005 {
        bad.push("lower utilization");
    }
    if r.violations > s.violations {
        bad.push("more violations");
    }
    bad
}

/// The simulator's measures of a real run: `offered[t][c]` and `passed[t][c]` are tenant
/// `t`'s bytes/s in cycle `c`, tenants in config order (what `shaper run` stores each cycle).
/// Pre-allocation totals are not in the history, so they stay 0.
pub fn score(
    cfg: &Config,
    policy: &str,
    dt: f64,
    offered: &[Vec<f64>],
    passed: &[Vec<f64>],
) -> SimResult {
    let profiles = planner::profiles(cfg);
    let cycles = offered.iter().map(Vec::len).min().unwrap_or(0);
    let mut res = empty_results(cfg);
    for (i, r) in res.iter_mut().enumerate() {
        for c in 0..cycles {
            let (o, p) = (offered[i][c] * dt, passed[i][c] * dt);
            let prev = (c > 0).then(|| offered[i][c - 1] * dt);
            account(r, &profiles[i], dt, (prev, o), p.min(o));
        }
    }
    let cap = cfg.link.capacity.bits_per_sec() as f64 / 8.0;
    let entitled = entitled(cfg);
    let idle_lost = (0..cycles)
        .map(|c| {
            let o: Vec<f64> = offered.iter().map(|s| s[c] * dt).collect();
            let p: Vec<f64> = passed
                .iter()
                .zip(&o)
                .map(|(s, o)| (s[c] * dt).min(*o))
                .collect();
            idle_loss(cap * dt, &entitled, dt, &o, &p)
        })
        .sum();
    let mut r = summarize(policy, cycles, dt, cap, &profiles, res);
    r.dropped_while_idle_bytes = idle_lost;
    r
}

pub mod cluster;

#[cfg(test)]
mod tests;
