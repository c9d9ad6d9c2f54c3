//! Record: every cycle into the history store (one row per tenant), old rows purged, and the
//! forecasters warmed from it after a restart.
use tracing::{info, warn};

use crate::config::Config;
use crate::planner::Planner;
use crate::stats::TenantStats;
use crate::store::{Row, Store};

use super::Agent;
use super::plan::Planned;
use crate::store::unix_now;

/// How many past cycles per tenant a restart feeds its forecaster: two days of one-second
/// cycles at most, enough for the daily season.
const WARM_SAMPLES: usize = 2 * 86_400;

impl Agent {
    /// Appends this cycle to the history store (one transaction); purges old rows hourly.
    pub(super) fn record(&mut self, tenants: &[TenantStats], plans: Option<&[Planned]>) {
        let ts = unix_now();
        let rows: Vec<Row> = tenants
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let p = plans.and_then(|p| p.get(i));
                Row {
                    ts,
                    tenant: t.name.clone(),
                    offered: t.offered_rate,
                    passed: t.passed_rate,
                    dropped: t.offered_rate * t.drop_ratio,
                    forecast: p.map(|p| (p.forecast.mean, p.forecast.lo, p.forecast.hi)),
                    fill: p.map(|p| p.alloc.fill),
                    pre: p.map(|p| p.alloc.pre_rate),
                }
            })
            .collect();
        if let Err(e) = self.store.append(&rows) {
            self.failed("record", &crate::datapath::error_chain(&e));
        }
        let cycles_per_hour = 3_600_000 / self.cfg.forecast.interval_ms.max(1);
        if self.cycles_recorded.is_multiple_of(cycles_per_hour.max(1)) {
            purge_history(&mut self.store, &self.cfg);
        }
        self.cycles_recorded += 1;
    }
}

/// Feeds every tenant's forecaster its history.
pub(super) fn warm_start(planner: &mut Planner, store: &Store, cfg: &Config) {
    let per_tenant = (2.0 * cfg.forecast.season_s as f64 * 1000.0
        / cfg.forecast.interval_ms.max(1) as f64)
        .min(WARM_SAMPLES as f64) as usize;
    let warmed: usize = cfg
        .tenants
        .iter()
        .map(|t| match store.recent(&t.name, per_tenant.max(1)) {
            Ok(samples) => planner.warm(&t.name, &samples),
            Err(e) => {
                warn!(tenant = %t.name, cause = %e, "cannot read history");
                0
            }
        })
        .sum();
    if warmed > 0 {
        info!(samples = warmed, path = %cfg.history.path.display(), "forecasters warm-started from history");
    }
}

/// Deletes history older than `history.retention_days`.
pub(super) fn purge_history(store: &mut Store, cfg: &Config) {
    let before = unix_now() - f64::from(cfg.history.retention_days) * 86_400.0;
    if let Err(e) = store.purge(before) {
        warn!(cause = %e, "cannot purge old history");
    }
}
