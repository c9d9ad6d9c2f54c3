//! Publish: the cycle's view for the API (per tenant stats, forecast and allocation in bits/s;
//! classes; the agent's health), alerts for protected tenants that lost in-profile traffic,
//! and overruns of the interval; once a minute, one summary line for the log.
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::allocate::violated;
use crate::api::{AllocationView, ForecastView, Plan, View};
use crate::units::human_bits;

use super::collect::Collected;
use super::plan::Planned;
use super::{Agent, write_lock};

impl Agent {
    /// Publishes the cycle that began at `started`; its time, this stage's included, goes
    /// into the health.
    pub(super) fn publish(&mut self, c: Collected, plans: Option<&[Planned]>, started: Instant) {
        let began = Instant::now();
        for s in &c.tenants {
            debug!(tenant = %s.name, passed = %human_bits(s.passed_rate * 8.0), offered = %human_bits(s.offered_rate * 8.0), drop_ratio = s.drop_ratio, "cycle");
        }
        // Each violation at debug; one line a cycle above it, whatever the tenant count.
        let mut violations = 0usize;
        let mut first = None;
        for (s, p) in c.tenants.iter().zip(&self.profiles) {
            if violated(p.priority, s.offered_rate, s.passed_rate, p.rate) {
                debug!(tenant = %s.name, tier = %s.tier, offered = %human_bits(s.offered_rate * 8.0), passed = %human_bits(s.passed_rate * 8.0), "in-profile traffic of a protected tier dropped");
                *self.alerts.entry("protected_violation").or_default() += 1;
                violations += 1;
                first.get_or_insert(s);
            }
        }
        self.minute.violations += violations;
        if let Some(s) = first
            && self.minute.first_violation.is_none()
        {
            self.minute.first_violation = Some(format!(
                "{} ({}): offered {}, passed {}",
                s.name,
                s.tier,
                human_bits(s.offered_rate * 8.0),
                human_bits(s.passed_rate * 8.0)
            ));
        }
        if let Some(plans) = plans {
            self.inaccurate_alert(&c, plans);
        }
        // Once a minute: tenants allocated above and below their base rates now.
        let shifted = (self.minute.since.elapsed() >= Minute::EVERY).then(|| {
            plans.map_or((0, 0), |plans| {
                plans
                    .iter()
                    .zip(&self.profiles)
                    .fold((0, 0), |(r, l), (p, prof)| {
                        let f = p.alloc.fill + p.alloc.pre_rate;
                        (
                            r + usize::from(f > prof.rate * 1.001),
                            l + usize::from(f < prof.rate * 0.999),
                        )
                    })
            })
        });
        let plans: Vec<Plan> = match plans {
            Some(plans) => plans
                .iter()
                .map(|p| (Some(forecast_view(p)), Some(allocation_view(p))))
                .collect(),
            None => Vec::new(),
        };
        let classes = c
            .classes
            .iter()
            .map(|c| (c.class.to_string(), c.packets, c.bytes))
            .collect();
        if std::mem::take(&mut self.overrides_changed) {
            let mut totals = std::collections::BTreeMap::new();
            self.overrides_published = Arc::new(
                self.overrides
                    .iter()
                    .map(|((t, trigger), n)| {
                        *totals.entry(*trigger).or_default() += n;
                        (t.clone(), *trigger, *n)
                    })
                    .collect(),
            );
            self.override_totals = totals;
        }
        let view = View::of_cycle(&self.iface, c.tenants, plans, classes)
            .with_overrides(self.overrides_published.clone());
        let old = std::mem::replace(&mut *write_lock(&self.shared.view), Arc::new(view));
        // The old view goes outside the lock (100,000 tenants take a while to free).
        drop(old);
        let publish_ms = began.elapsed().as_secs_f64() * 1e3;
        let took = started.elapsed();
        let overran = took > self.interval;
        if overran {
            *self.alerts.entry("cycle_overrun").or_default() += 1;
            let (took_ms, interval_ms) =
                (took.as_millis() as u64, self.interval.as_millis() as u64);
            // The minute's first at warn, the rest in its summary.
            if self.minute.overruns == 0 {
                warn!(took_ms, interval_ms, "agent cycle overran its interval");
            } else {
                debug!(took_ms, interval_ms, "agent cycle overran its interval");
            }
            self.minute.overruns += 1;
        }
        self.minute.cycle(took);
        if let Some((raised, lowered)) = shifted {
            let m = std::mem::replace(&mut self.minute, Minute::new());
            m.log(raised, lowered, self.inaccurate_tenants);
        }
        let mut h = write_lock(&self.shared.health);
        h.record_cycle(took.as_secs_f64());
        h.overrides = self.override_totals.clone();
        h.overridden_tenants = self.overrides.len();
        h.alerts = self.alerts.clone();
        h.errors = self.errors.clone();
        h.stage_ms = self.stage_ms.clone();
        h.stage_ms.insert("publish", publish_ms);
        if overran {
            h.overruns += 1;
        }
    }
}

/// What one minute of cycles did, for one log line: the per-tenant details are at debug.
pub(super) struct Minute {
    pub since: Instant,
    pub cycles: u64,
    pub overruns: u64,
    pub slowest: Duration,
    pub total: Duration,
    /// Tenant-cycles: reactive overrides entered, prediction resumed, feedback grown/shrunk,
    /// protected violations.
    pub overridden: usize,
    pub resumed: usize,
    pub tuned_up: usize,
    pub tuned_down: usize,
    pub violations: usize,
    pub first_override: Option<String>,
    pub first_violation: Option<String>,
}

impl Minute {
    pub const EVERY: Duration = Duration::from_secs(60);

    pub fn new() -> Minute {
        Minute {
            since: Instant::now(),
            cycles: 0,
            overruns: 0,
            slowest: Duration::ZERO,
            total: Duration::ZERO,
            overridden: 0,
            resumed: 0,
            tuned_up: 0,
            tuned_down: 0,
            violations: 0,
            first_override: None,
            first_violation: None,
        }
    }

    fn cycle(&mut self, took: Duration) {
        self.cycles += 1;
        self.slowest = self.slowest.max(took);
        self.total += took;
    }

    /// The line: at info, or at warn when a protected tenant lost in-profile traffic, an
    /// override held tenants at base rates or a cycle overran during the minute. `raised`/`lowered`: tenants whose
    /// allocation is now above / below their base rate; `inaccurate`: tenants above the
    /// accuracy alert threshold now.
    fn log(self, raised: usize, lowered: usize, inaccurate: usize) {
        let mean_ms = if self.cycles > 0 {
            (self.total.as_secs_f64() * 1e3 / self.cycles as f64 * 10.0).round() / 10.0
        } else {
            0.0
        };
        let slowest_ms = (self.slowest.as_secs_f64() * 1e4).round() / 10.0;
        let quiet = self.violations == 0 && self.overridden == 0 && self.overruns == 0;
        let (violation, reason) = (
            self.first_violation.unwrap_or_default(),
            self.first_override.unwrap_or_default(),
        );
        macro_rules! line {
            ($lvl:ident) => {
                $lvl!(
                    cycles = self.cycles,
                    overruns = self.overruns,
                    cycle_ms = mean_ms,
                    slowest_ms,
                    raised,
                    lowered,
                    overridden = self.overridden,
                    resumed = self.resumed,
                    tuned_up = self.tuned_up,
                    tuned_down = self.tuned_down,
                    violations = self.violations,
                    inaccurate,
                    first_violation = %violation,
                    override_reason = %reason,
                    "the last minute"
                )
            };
        }
        if quiet {
            line!(info);
        } else {
            line!(warn);
        }
    }
}

impl Agent {
    /// `forecast_inaccurate`: tenants whose rolling MASE is above the alert threshold, counted
    /// per tenant and cycle like violations; each at debug, one warning when their number
    /// changes (not every cycle a bad tenant stays bad).
    fn inaccurate_alert(&mut self, c: &Collected, plans: &[Planned]) {
        let mut n = 0usize;
        let mut first = None;
        for (s, p) in c.tenants.iter().zip(plans).filter(|(_, p)| p.inaccurate) {
            debug!(tenant = %s.name, mase = p.mase.map(|m| (m * 100.0).round() / 100.0), "forecasts worse than the alert threshold");
            n += 1;
            first.get_or_insert((s, p));
        }
        *self.alerts.entry("forecast_inaccurate").or_default() += n as u64;
        if n != self.inaccurate_tenants {
            match first {
                Some((s, p)) => warn!(
                    tenants = n,
                    first = %s.name,
                    mase = p.mase.map(|m| (m * 100.0).round() / 100.0),
                    "forecasts above the accuracy alert threshold (forecast.accuracy_alert_mase)"
                ),
                None => info!("every tenant's forecasts are back within the accuracy threshold"),
            }
            self.inaccurate_tenants = n;
        }
    }
}

fn forecast_view(p: &Planned) -> ForecastView {
    ForecastView {
        mean: p.forecast.mean,
        lo: p.forecast.lo,
        hi: p.forecast.hi,
        model: Some(p.model),
        mase: p.mase,
        coverage: p.coverage,
        inaccurate: p.inaccurate,
    }
}

fn allocation_view(p: &Planned) -> AllocationView {
    let a = &p.alloc;
    AllocationView {
        fill_bps: a.fill * 8.0,
        pre_bps: a.pre_rate * 8.0,
        pre_cap_bytes: a.pre_cap,
        deposit_bytes: a.deposit.map_or(0.0, |d| d.bytes),
        override_reason: a.overridden.clone(),
        mix: p.shares,
        decision: Some(a.decision),
    }
}
