//! Plan: each tenant's forecast and next allocation from what it offered (the planner), and a
//! log line for what the allocator changed on its own.
use tracing::debug;

use crate::allocate::{Allocation, Change, Observed, TUNED_UP};
use crate::forecast::{ModelKind, Prediction};
use crate::stats::{PrePool, TenantStats};

use super::Agent;
use super::collect::Collected;

/// One tenant's plan for the next cycle, config order.
pub(super) struct Planned {
    pub forecast: Prediction,
    /// The model the tenant's forecaster leans on now.
    pub model: ModelKind,
    /// Its rolling MASE against the seasonal naive, interval coverage, and whether the MASE
    /// is above the alert threshold.
    pub mase: Option<f64>,
    pub coverage: Option<f64>,
    pub inaccurate: bool,
    pub alloc: Allocation,
    /// The split over token types written (an exchange's, else the allocator's mix).
    pub shares: Option<[f64; 3]>,
}

impl Agent {
    /// Forecasts and allocates the next cycle; `None` in static mode.
    pub(super) fn plan(&mut self, c: &Collected) -> Option<Vec<Planned>> {
        if self.fault == Some(super::Fault::PlanPanic) {
            panic!("injected planner panic");
        }
        let planner = self.planner.as_mut()?;
        let observed: Vec<Observed> = self
            .cfg
            .tenants
            .iter()
            .enumerate()
            .map(
                |(i, t)| match c.tenants.get(i).filter(|s| *s.name == *t.name) {
                    // The profile's rate: an aggregate tenant's is this host's share.
                    Some(s) => observed(
                        s,
                        self.profiles
                            .get(i)
                            .map_or(t.rate.bits_per_sec() as f64 / 8.0, |p| p.rate),
                        self.last_pre.get(i).copied(),
                    ),
                    None => Observed::default(),
                },
            )
            .collect();
        self.last_pre = c.tenants.iter().map(|s| s.pre_pool).collect();
        let (allocs, events, demand, info) = planner.step(self.clock.now(), &observed, c.host);
        self.log_events(&events);
        Some(
            allocs
                .into_iter()
                .zip(demand)
                .zip(info)
                .map(|((alloc, d), info)| Planned {
                    forecast: d.next,
                    model: info.model,
                    mase: info.mase,
                    coverage: info.coverage,
                    inaccurate: info.inaccurate,
                    shares: alloc.mix,
                    alloc,
                })
                .collect(),
        )
    }

    /// Each change at debug; at most one line per kind and cycle above it, so a host-wide
    /// override of 100,000 tenants is one line, not 100,000.
    fn log_events(&mut self, events: &[Change]) {
        let (mut overridden, mut resumed, mut tuned) = (0usize, 0usize, (0usize, 0usize));
        let mut first_reason: Option<&str> = None;
        for ev in events {
            let name = |i: &usize| self.cfg.tenants.get(*i).map_or("?", |t| t.name.as_str());
            match ev {
                Change::Override {
                    tenant,
                    trigger,
                    reason,
                } => {
                    debug!(tenant = name(tenant), %reason, "reactive override: back to base rates");
                    *self
                        .overrides
                        .entry((name(tenant).to_string(), trigger))
                        .or_default() += 1;
                    self.overrides_changed = true;
                    overridden += 1;
                    first_reason.get_or_insert(reason);
                }
                Change::Resume { tenant } => {
                    debug!(tenant = name(tenant), "prediction resumes");
                    resumed += 1;
                }
                Change::Tuned {
                    tenant,
                    multiplier,
                    margin,
                    why,
                } => {
                    debug!(
                        tenant = name(tenant),
                        multiplier = (multiplier * 1000.0).round() / 1000.0,
                        margin = (margin * 1000.0).round() / 1000.0,
                        why,
                        "allocator tuned"
                    );
                    if *why == TUNED_UP {
                        tuned.0 += 1;
                    } else {
                        tuned.1 += 1;
                    }
                }
            }
        }
        // Per cycle only at debug: the minute's summary says the rest.
        if overridden > 0 {
            debug!(
                tenants = overridden,
                reason = first_reason.unwrap_or(""),
                "reactive override: back to base rates"
            );
        }
        let m = &mut self.minute;
        m.overridden += overridden;
        m.resumed += resumed;
        m.tuned_up += tuned.0;
        m.tuned_down += tuned.1;
        if m.first_override.is_none() {
            m.first_override = first_reason.map(str::to_string);
        }
    }
}

/// What the allocator learns of a tenant from its stats `s` (bytes/s) and its base `rate`
/// (bytes/s); `last` is its deposit totals a cycle ago.
fn observed(s: &TenantStats, rate: f64, last: Option<PrePool>) -> Observed {
    let last = last.unwrap_or(s.pre_pool);
    Observed {
        offered: s.offered_rate,
        dropped: s.offered_rate * s.drop_ratio,
        in_profile_dropped: (s.offered_rate.min(rate) - s.passed_rate).max(0.0),
        pre_used: s.pre_pool.used_bytes.saturating_sub(last.used_bytes) as f64,
        pre_expired: s.pre_pool.expired_bytes.saturating_sub(last.expired_bytes) as f64,
        by_type: s.offered_by_type,
    }
}
