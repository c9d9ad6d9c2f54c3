//! Coordinate (cluster mode): before planning, this host's shares of the aggregate tenants
//! become their rate and ceiling here (the allocator plans within them, the datapath enforces
//! them); after, the cycle's measured and predicted demand goes to the coordination task
//! ([`crate::cluster`]), which exchanges it with the other hosts once an epoch.
use std::sync::Arc;
use std::time::Instant;

use crate::allocate::Allocation;
use crate::allocate::aggregate::{GATE_SLOTS, Gate, gate_slot, safe_split};
use crate::api::ClusterHealth;
use crate::cluster::{self, Coordinator, Demand, RedisStore, Roster, ShareState, Shares};
use crate::config::Config;
use crate::datapath::{TenantRates, TenantWrite, error_chain};

use super::Agent;
use super::collect::Collected;
use super::plan::Planned;
use crate::forecast::Prediction;

/// The agent's side of cluster mode.
pub(super) struct Cluster {
    link: cluster::Link,
    roster: Arc<Roster>,
    host_id: String,
    /// Per roster tenant: bytes offered here since the agent started.
    offered_total: Vec<f64>,
    started: Instant,
    last: Instant,
    /// Per config tenant: this host's rate and ceiling (bytes/s) if it is aggregate.
    pub limits: Vec<Option<(f64, f64)>>,
    /// The shares last applied.
    applied: Option<Arc<Shares>>,
    /// Per roster tenant: last cycle's forecast of this cycle's demand, to tell a surprise.
    expected: Vec<Option<Prediction>>,
    /// Per roster tenant: whether its forecasts or its measurements are reported.
    gates: Vec<Gate>,
    /// How many of the agent's cycles ahead the reported forecast looks: a report carries the
    /// cycle just before an epoch starts, and the shares divided from it hold through that
    /// epoch (from a quarter in to a quarter into the next): one epoch of cycles ahead.
    steps_ahead: usize,
}

impl Cluster {
    /// Starts the coordination task on `store` for `cfg`'s aggregate tenants.
    pub fn start(store: RedisStore, cfg: &Config) -> Option<Cluster> {
        let c = cfg.cluster.as_ref()?;
        let roster = Arc::new(Roster::of(cfg));
        let link = cluster::spawn(store, Coordinator::new(c, Arc::clone(&roster)), c);
        let m = c.interval_ms as f64 / cfg.forecast.interval_ms.max(1) as f64;
        Some(Cluster {
            link,
            offered_total: vec![0.0; roster.len()],
            roster,
            host_id: c.host_id.clone(),
            started: Instant::now(),
            last: Instant::now(),
            limits: Vec::new(),
            applied: None,
            expected: Vec::new(),
            gates: Vec::new(),
            steps_ahead: m.round().max(1.0) as usize,
        })
    }

    /// A reloaded config: its roster goes to the task with the next demand; totals of the
    /// tenants that stay carry over.
    pub fn reconfigure(&mut self, cfg: &Config) {
        // The new config's profiles start from its own rates: the shares go over them again.
        self.applied = None;
        let roster = Arc::new(Roster::of(cfg));
        if roster.digest == self.roster.digest {
            return;
        }
        let old: std::collections::HashMap<&str, f64> = self
            .roster
            .names
            .iter()
            .map(|n| &**n)
            .zip(self.offered_total.iter().copied())
            .collect();
        self.offered_total = roster
            .names
            .iter()
            .map(|n| old.get(&**n).copied().unwrap_or(0.0))
            .collect();
        self.roster = roster;
        self.expected.clear();
        self.gates.clear();
    }

    /// A receiver that wakes when the task has new shares.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<Shares>> {
        self.link.shares.clone()
    }

    /// When the agent's first cycle should fall: the coordination task exchanges a few ms
    /// after each epoch starts, so a cycle that ends just before hands it a fresh measurement.
    pub fn cycle_phase(cfg: &Config) -> Option<std::time::Duration> {
        let c = cfg.cluster.as_ref()?;
        let ms = epoch_start_ms(c.interval_ms, cfg.forecast.interval_ms);
        Some(std::time::Duration::from_millis(ms))
    }

    pub fn health(&self) -> ClusterHealth {
        let s = self.link.shares.borrow();
        ClusterHealth {
            host_id: self.host_id.clone(),
            state: s.state,
            hosts: s.hosts,
            epoch: s.epoch,
            aggregate_tenants: self.roster.len(),
        }
    }
}

impl Agent {
    /// New shares from the coordination task, between cycles: written at once (at the share,
    /// as static mode would) rather than a cycle later; the next cycle's allocator plans
    /// within them.
    pub(super) fn shares_arrived(&mut self) {
        if self.apply_shares() && self.planner.is_some() {
            self.write_static_shares();
        }
    }

    /// This host's shares as the aggregate tenants' rate and ceiling: in the allocator's
    /// profiles and, in static mode (no allocator), written to the datapath. True if they
    /// changed.
    pub(super) fn apply_shares(&mut self) -> bool {
        let Some(cl) = self.cluster.as_mut() else {
            return false;
        };
        let shares = Arc::clone(&cl.link.shares.borrow());
        let changed = cl.applied.as_ref().is_none_or(|a| !Arc::ptr_eq(a, &shares));
        if !changed {
            return false;
        }
        cl.limits = vec![None; self.cfg.tenants.len()];
        let r = &cl.roster;
        for (j, &k) in r.index.iter().enumerate() {
            // Shares of another roster (a reload not yet seen by the task): the safe split.
            let (rate, ceil) = if shares.digest == r.digest {
                (shares.rate[j], shares.ceil[j])
            } else {
                let hosts = shares.hosts.max(1);
                (safe_split(r.rate[j], hosts), safe_split(r.ceil[j], hosts))
            };
            let (rate, ceil) = (rate.max(1.0), ceil.max(rate.max(1.0)));
            cl.limits[k] = Some((rate, ceil));
            for p in self
                .profiles
                .get_mut(k)
                .into_iter()
                .chain(self.planner.as_mut().and_then(|p| p.profiles.get_mut(k)))
            {
                p.rate = rate;
                p.ceil = ceil;
            }
        }
        if shares.state != ShareState::Divided {
            tracing::debug!(state = ?shares.state, hosts = shares.hosts, "cluster shares not divided this epoch");
        }
        cl.applied = Some(shares);
        super::write_lock(&self.shared.health).cluster = Some(cl.health());
        if self.planner.is_none() {
            self.write_static_shares();
        }
        true
    }

    /// Static mode: each aggregate tenant at its share, with no allocator in between.
    fn write_static_shares(&mut self) {
        let Some(cl) = self.cluster.as_ref() else {
            return;
        };
        let writes: Vec<TenantWrite> = cl
            .limits
            .iter()
            .enumerate()
            .filter_map(|(k, l)| {
                let (rate, ceil) = (*l)?;
                let info = self
                    .table
                    .get(k)
                    .filter(|i| *i.name == *self.cfg.tenants[k].name)?;
                let a = Allocation::base(rate);
                Some(TenantWrite {
                    id: info.id,
                    tenant: k,
                    rates: TenantRates {
                        fill: a.fill,
                        pre_rate: 0.0,
                        pre_cap: 0.0,
                        deposit: None,
                        ceil: Some(ceil),
                    },
                    shares: None,
                })
            })
            .collect();
        if let Err(e) = self.dp.apply_allocations(&self.cfg, &writes, self.interval) {
            *self.alerts.entry("write_failed").or_default() += 1;
            self.failed("write", &error_chain(&e));
        }
    }

    /// The cycle's demand of each aggregate tenant for the coordination task: offered bytes
    /// (measured) and the forecast for when the next shares apply. A tenant whose demand this
    /// cycle fell outside the interval forecast for it (a shift no history announced) is
    /// reported at what it offered: a wrong forecast must not hold its hosts' shares where
    /// the demand was for the epochs the forecaster needs to catch up.
    pub(super) fn report_demand(&mut self, c: &Collected, plans: Option<&[Planned]>) {
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        let now = Instant::now();
        let dt = now.duration_since(cl.last).as_secs_f64();
        cl.last = now;
        let r = Arc::clone(&cl.roster);
        for (j, &k) in r.index.iter().enumerate() {
            if let Some(s) = c
                .tenants
                .get(k)
                .filter(|s| *s.name == *self.cfg.tenants[k].name)
            {
                cl.offered_total[j] += s.offered_rate * dt;
            }
        }
        let predicted = match (self.planner.as_ref(), plans) {
            (Some(p), Some(plans)) => {
                cl.expected.resize(r.len(), None);
                cl.gates
                    .resize(r.len(), Gate::new(cl.steps_ahead, GATE_SLOTS));
                let slot = gate_slot(self.clock.now(), self.cfg.forecast.season_s as f64);
                r.index
                    .iter()
                    .zip(cl.expected.iter_mut().zip(cl.gates.iter_mut()))
                    .map(|(&k, (expected, gate))| {
                        let offered = c.tenants.get(k).map_or(0.0, |s| s.offered_rate);
                        let surprise = expected.is_some_and(|e| offered < e.lo || offered > e.hi);
                        *expected = plans.get(k).map(|p| p.forecast);
                        let s = cl.steps_ahead;
                        let ahead = p.forecast_at(k, s).map_or(offered, |f| f.mean);
                        // What the series did over the same cycles a season ago: `auto`'s own
                        // forecasts at two horizons may come from different mixes, so their
                        // difference is not a change.
                        let change = p.seasonal_change(k, s);
                        let estimate = gate.step(offered, ahead, change, slot);
                        (if surprise { offered } else { estimate }) as f32
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        let _ = cl.link.demand.send(Arc::new(Demand {
            roster: r,
            offered_total: cl.offered_total.clone(),
            at: now.duration_since(cl.started).as_secs_f64(),
            predicted,
        }));
    }
}

/// Milliseconds from now until the next agent cycle should start: a multiple of the cycle
/// (epochs are multiples of it too) less a fifth of a cycle, at most 50 ms, which is when
/// the cycle's demand is ready for the exchange at the epoch's start.
fn epoch_start_ms(epoch_ms: u64, cycle_ms: u64) -> u64 {
    let now = cluster::unix_ms();
    let lead = (cycle_ms / 5).min(50);
    let step = cycle_ms.max(1).min(epoch_ms.max(1));
    let target = (now + lead).div_ceil(step) * step;
    (target - lead).saturating_sub(now)
}
