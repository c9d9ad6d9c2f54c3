//! The API's wire types: what `/v1/stats`, `/v1/health` and `shaper stats --json` show, in
//! the units operators read (rates in bits/s, like `tc`). The agent's own types stay inside
//! it; these change only with [`API_VERSION`](super::API_VERSION).
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::TokenType;
use crate::stats::{ByType, PrePool, TenantStats};

/// Upper bounds (seconds) of the cycle-time histogram buckets.
pub const CYCLE_BUCKETS: [f64; 8] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// What the agent publishes each cycle: shared by every request until the next cycle
/// replaces it (behind an `Arc`, never cloned per request). The cycle's stats move in as they
/// are; the wire view of each tenant and the bodies are built once, by the first request that
/// needs them, off the agent's thread.
#[derive(Debug, Default)]
pub struct View {
    pub iface: String,
    /// Packets by class: (class name, packets, bytes).
    pub classes: Vec<(String, u64, u64)>,
    stats: Vec<TenantStats>,
    plans: Vec<Plan>,
    tenants: std::sync::OnceLock<Vec<TenantView>>,
    /// Reactive overrides entered since the agent started: (tenant, trigger, count). Shared
    /// from cycle to cycle while unchanged.
    pub overrides: Arc<Vec<(String, &'static str, u64)>>,
    /// `/v1/stats`, rendered on first use.
    pub(super) stats_body: std::sync::OnceLock<axum::body::Bytes>,
    /// The per-tenant and per-class part of `/metrics`, rendered on first use.
    pub(super) metrics: std::sync::OnceLock<axum::body::Bytes>,
}

/// What the agent forecast and allocated for one tenant (none in static mode).
pub type Plan = (Option<ForecastView>, Option<AllocationView>);

impl View {
    /// A view of tenants already in wire form.
    pub fn new(iface: &str, tenants: Vec<TenantView>, classes: Vec<(String, u64, u64)>) -> View {
        View {
            iface: iface.to_string(),
            classes,
            tenants: std::sync::OnceLock::from(tenants),
            ..View::default()
        }
    }

    /// The view with the agent's per-tenant override counts.
    pub fn with_overrides(self, overrides: Arc<Vec<(String, &'static str, u64)>>) -> View {
        View { overrides, ..self }
    }

    /// A cycle's view: its stats and plans (config order), turned into wire form only when
    /// asked.
    pub fn of_cycle(
        iface: &str,
        stats: Vec<TenantStats>,
        plans: Vec<Plan>,
        classes: Vec<(String, u64, u64)>,
    ) -> View {
        View {
            iface: iface.to_string(),
            classes,
            stats,
            plans,
            ..View::default()
        }
    }

    /// One tenant in wire form, by name, without turning every other tenant into it.
    pub fn tenant(&self, name: &str) -> Option<TenantView> {
        if let Some(all) = self.tenants.get() {
            return all.iter().find(|t| &*t.name == name).cloned();
        }
        let i = self.stats.iter().position(|s| &*s.name == name)?;
        let (f, a) = self.plans.get(i).cloned().unwrap_or_default();
        Some(TenantView::new(&self.stats[i], f, a))
    }

    /// Every tenant in wire form.
    pub fn tenants(&self) -> &[TenantView] {
        self.tenants.get_or_init(|| {
            self.stats
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let (f, a) = self.plans.get(i).cloned().unwrap_or_default();
                    TenantView::new(s, f, a)
                })
                .collect()
        })
    }
}

/// Cluster mode in the health check.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterHealth {
    pub host_id: String,
    /// `divided` (with the other hosts this epoch), `held` (the store failed; the last
    /// division holds for the lease), `fallback` (limit / hosts last seen), `joining`.
    pub state: crate::cluster::ShareState,
    pub hosts: usize,
    pub epoch: u64,
    pub aggregate_tenants: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Health {
    pub version: String,
    pub mode: String,
    pub cycles: u64,
    pub last_cycle_ms: f64,
    pub overruns: u64,
    pub reloads_ok: u64,
    pub reloads_rejected: u64,
    pub last_error: Option<String>,
    /// Reactive overrides entered since the agent started, by trigger (all tenants).
    pub overrides: BTreeMap<&'static str, u64>,
    /// Tenants that entered an override since the agent started (per trigger: each counted
    /// once per trigger). Per tenant they are in `/metrics`: a health check stays a few
    /// hundred bytes when a busy host puts a million tenants in override.
    pub overridden_tenants: usize,
    /// Alerts since the agent started, by kind: `protected_violation` (a gold or platinum
    /// tenant lost in-profile traffic in a cycle), `cycle_overrun`, `write_failed` (an
    /// allocation could not be written; the datapath kept its last rates), `agent_error` (a
    /// stage failed or panicked; the datapath kept its last rates).
    pub alerts: BTreeMap<&'static str, u64>,
    /// Failures since the agent started, by stage (`collect`, `plan`, `write`, `record`,
    /// `cycle` for a panic, `reload`, `exchange`, `interface_check`).
    pub errors: BTreeMap<&'static str, u64>,
    /// How long each stage of the last cycle took, ms.
    pub stage_ms: BTreeMap<&'static str, f64>,
    /// Cluster mode: where this host's shares of the aggregate tenants come from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterHealth>,
    /// Cumulative counts per bucket of [`CYCLE_BUCKETS`], then the total and the sum (s).
    #[serde(skip)]
    pub cycle_buckets: [u64; 8],
    #[serde(skip)]
    pub cycle_sum_s: f64,
}

impl Health {
    /// Records one cycle's duration.
    pub fn record_cycle(&mut self, secs: f64) {
        self.cycles += 1;
        self.last_cycle_ms = secs * 1e3;
        self.cycle_sum_s += secs;
        for (b, le) in self.cycle_buckets.iter_mut().zip(CYCLE_BUCKETS) {
            if secs <= le {
                *b += 1;
            }
        }
    }
}

/// A tenant's forecast of offered traffic for the next cycle, bytes/s: mean and interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ForecastView {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
    /// The model the forecaster leans on now (`auto`'s choice at the full horizon).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<crate::forecast::ModelKind>,
    /// Rolling MASE of the one-step forecasts against the seasonal naive (< 1: better than
    /// it); at 1 or above the allocator treats the tenant reactively until it recovers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mase: Option<f64>,
    /// Rolling share of actuals inside the one-step interval (the target is the config's
    /// `forecast.confidence`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f64>,
    /// The MASE is above `forecast.accuracy_alert_mase`: the `forecast_inaccurate` alert.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inaccurate: bool,
}

/// One tenant's allocation as the API shows it: rates in bits/s.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AllocationView {
    pub fill_bps: f64,
    pub pre_bps: f64,
    pub pre_cap_bytes: f64,
    pub deposit_bytes: f64,
    /// Why the tenant is held at its base rate (reactive override), if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_reason: Option<String>,
    /// The split over gold, silver and bronze the allocator moved toward the per-type demand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mix: Option<[f64; 3]>,
    /// Why the allocator decided this (`shaper explain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<crate::allocate::Decision>,
}

/// One tenant: its counters, its rates over the last window (bits/s), and what the agent
/// forecast and allocated (absent in static mode and from the pinned maps alone).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TenantView {
    pub id: u32,
    pub name: Arc<str>,
    pub tier: Arc<str>,
    pub rate_bits: u64,
    pub passed_packets: u64,
    pub passed_bytes: u64,
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
    /// Passed with their ECN field set to CE (the bucket was low); counted in passed too.
    #[serde(default)]
    pub marked_packets: u64,
    #[serde(default)]
    pub marked_bytes: u64,
    /// Counts per token type, then per outcome (`pre`, `green`, `borrowed`, `emergency`,
    /// `marked`, `dropped`).
    #[serde(default)]
    pub by_type: ByType,
    #[serde(default)]
    pub pre_pool: PrePool,
    /// Flows seen in the last 10 s (sampled, so small flows may be missed).
    #[serde(default)]
    pub active_flows: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<ForecastView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<AllocationView>,
    /// Passed (marked or not) IP bits per second over the sampling window.
    pub passed_bps: f64,
    /// Offered (passed + marked + dropped) IP bits per second over the sampling window.
    pub offered_bps: f64,
    /// Dropped share of offered bytes over the window, 0..=1.
    pub drop_ratio: f64,
    /// Offered IP bits per second per token type (gold, silver, bronze) over the window.
    #[serde(default)]
    pub offered_by_type_bps: [f64; 3],
}

impl TenantView {
    /// The view of a tenant's stats, with what the agent forecast and allocated if it did.
    pub fn new(
        s: &TenantStats,
        forecast: Option<ForecastView>,
        allocation: Option<AllocationView>,
    ) -> TenantView {
        TenantView {
            id: s.id,
            name: s.name.clone(),
            tier: s.tier.clone(),
            rate_bits: s.rate_bits,
            passed_packets: s.passed_packets,
            passed_bytes: s.passed_bytes,
            dropped_packets: s.dropped_packets,
            dropped_bytes: s.dropped_bytes,
            marked_packets: s.marked_packets,
            marked_bytes: s.marked_bytes,
            by_type: s.by_type,
            pre_pool: s.pre_pool,
            active_flows: s.active_flows,
            forecast,
            allocation,
            passed_bps: s.passed_rate * 8.0,
            offered_bps: s.offered_rate * 8.0,
            drop_ratio: s.drop_ratio,
            offered_by_type_bps: s.offered_by_type.map(|r| r * 8.0),
        }
    }
}

/// `POST /v1/exchange`: move `amount` (a rate, `10mbit`) of `tenant`'s rate between two of its
/// token types.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeBody {
    pub tenant: String,
    pub from: TokenType,
    pub to: TokenType,
    pub amount: String,
}
