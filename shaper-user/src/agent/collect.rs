//! Collect: the datapath's counters, bucket state and flows (summed over CPUs), the rates
//! since the last cycle, and host pressure (CPU busy share, NIC receive drops).
use crate::allocate::Host;
use crate::datapath::{FLOWS, GLOBAL_COUNTERS, TENANT_COUNTERS, TENANT_STATE, id_span};
use crate::stats::{self, ClassStats, TenantStats};

use super::{Agent, AgentError};

/// What one cycle collected: per-tenant stats in config order, per-class counts, host pressure.
pub(super) struct Collected {
    pub tenants: Vec<TenantStats>,
    pub classes: Vec<ClassStats>,
    pub host: Host,
}

impl Agent {
    /// This cycle's stats; `None` on the first cycle after a start or reload, which only keeps
    /// a snapshot to take rates from.
    pub(super) fn collect(&mut self) -> Result<Option<Collected>, AgentError> {
        let n = id_span(&self.table);
        let started = std::time::Instant::now();
        let snap = stats::snapshot(
            self.dp.map(TENANT_COUNTERS)?,
            self.dp.map(TENANT_STATE)?,
            self.dp.map(FLOWS)?,
            n,
        )?;
        let classes = crate::datapath::read_class_counters(self.dp.map(GLOBAL_COUNTERS)?)?;
        // The snapshot becomes the next cycle's previous one without a copy.
        let Some(prev) = self.prev.take() else {
            self.prev = Some(snap);
            return Ok(None);
        };
        let read = started.elapsed();
        let tenants = stats::tenant_stats(&self.table, &prev, &snap);
        self.prev = Some(snap);
        // Where a slow collection went (`RUST_LOG=shaper::agent::collect=debug`).
        tracing::debug!(
            read_ms = read.as_secs_f64() * 1e3,
            stats_ms = (started.elapsed() - read).as_secs_f64() * 1e3,
            "collected"
        );
        Ok(Some(Collected {
            tenants,
            classes: stats::class_stats(&classes),
            host: self.host.sample(),
        }))
    }
}

/// Host pressure between two cycles: CPU busy share from /proc/stat, and the interface's
/// receive drops (only outside a network namespace: sysfs shows the agent's own).
pub(super) struct HostSampler {
    iface: Option<String>,
    cpu: Option<(u64, u64)>,
    drops: Option<u64>,
}

impl HostSampler {
    pub(super) fn new(iface: Option<String>) -> HostSampler {
        HostSampler {
            iface,
            cpu: None,
            drops: None,
        }
    }

    pub(super) fn sample(&mut self) -> Host {
        let cpu = cpu_times();
        let cpu_busy = match (self.cpu, cpu) {
            (Some((t0, b0)), Some((t1, b1))) if t1 > t0 => (b1 - b0) as f64 / (t1 - t0) as f64,
            _ => 0.0,
        };
        self.cpu = cpu;
        let drops = self.iface.as_ref().and_then(|i| {
            std::fs::read_to_string(format!("/sys/class/net/{i}/statistics/rx_dropped"))
                .ok()?
                .trim()
                .parse::<u64>()
                .ok()
        });
        let nic_drops = match (self.drops, drops) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        };
        self.drops = drops;
        Host {
            cpu_busy,
            nic_drops,
        }
    }
}

/// Total and busy CPU time (jiffies) from /proc/stat's first line.
fn cpu_times() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<u64> = s
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total, total.saturating_sub(idle)))
}
