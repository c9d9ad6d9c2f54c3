//! Publish: the cycle's view for the API (per tenant stats, forecast and allocation in bits/s;
//! classes; the agent's health), alerts for protected tenants that lost in-profile traffic,
//! and overruns of the interval.
use std::sync::Arc;
use std::time::Instant;

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
        if let Some(s) = first {
            warn!(tenants = violations, first = %s.name, tier = %s.tier, offered = %human_bits(s.offered_rate * 8.0), passed = %human_bits(s.passed_rate * 8.0), "in-profile traffic of a protected tier dropped");
        }
        if let Some(plans) = plans {
            self.inaccurate_alert(&c, plans);
        }
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
        let view = View::of_cycle(&self.iface, c.tenants, plans, classes);
        let old = std::mem::replace(&mut *write_lock(&self.shared.view), Arc::new(view));
        // The old view goes outside the lock (100,000 tenants take a while to free).
        drop(old);
        let publish_ms = began.elapsed().as_secs_f64() * 1e3;
        let took = started.elapsed();
        let overran = took > self.interval;
        if overran {
            *self.alerts.entry("cycle_overrun").or_default() += 1;
            warn!(
                took_ms = took.as_millis() as u64,
                interval_ms = self.interval.as_millis() as u64,
                "agent cycle overran its interval"
            );
        }
        let mut h = write_lock(&self.shared.health);
        h.record_cycle(took.as_secs_f64());
        h.overrides = self
            .overrides
            .iter()
            .map(|((t, trigger), n)| (t.clone(), *trigger, *n))
            .collect();
        h.alerts = self.alerts.clone();
        h.errors = self.errors.clone();
        h.stage_ms = self.stage_ms.clone();
        h.stage_ms.insert("publish", publish_ms);
        if overran {
            h.overruns += 1;
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
    }
}
