//! Cluster mode: tenants whose limits are aggregates over several shaper hosts
//! (`scope: "aggregate"`), divided among the hosts by demand through a shared store.
//!
//! No leader. Time is cut into epochs of `cluster.interval_ms` (wall clock, so every host
//! agrees on their numbers). At the start of epoch `e` each host publishes its report (one
//! demand per aggregate tenant: predicted for when the shares apply, or measured,
//! `cluster.share_by`) in one pipelined round trip; a quarter of an epoch later it reads
//! every host's report in another, and divides each tenant's limits with the same pure
//! [`divide`](crate::allocate::aggregate::divide). Every host reads the same reports (all
//! were written a quarter of an epoch before anyone reads: clocks may differ by up to that),
//! so every host computes the same shares, each applying its own, and there is no election
//! to lose when a host or the store fails. Reading in the same round trip as writing would
//! read the previous epoch (the only one surely complete) and cost a whole epoch of lag at
//! every shift of demand: measured on the three-host lab, three cycles to settle instead of
//! two. A leader holding a lease would read the reports once instead of every host reading
//! them all (`H` times less store traffic), at the price of a failover that stalls every
//! share for a lease; at the cluster sizes this is for (tens of hosts) the reads are cheap
//! and the failover is not.
//!
//! Faults ([`Coordinator`]): the store unreachable or slow, shares hold for `lease_s`, then
//! each host takes the safe split (limit / hosts last seen); a host silent for `lease_s` has
//! its share reclaimed by the others; a returning store is back to divided shares at the
//! first epoch every host writes again.
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::allocate::aggregate::{divide, safe_split};
use crate::config::{Config, Scope, ShareBy};

pub mod redis;
mod wire;

pub use self::redis::RedisStore;
pub use self::wire::Report;

/// A store the hosts share: two calls an epoch, each one round trip.
pub trait ClusterStore: Send {
    /// Writes this host's report `blob` (replacing its last) and forgets the reports of the
    /// hosts in `forget` (silent past the lease).
    fn publish(
        &mut self,
        blob: Vec<u8>,
        forget: &[String],
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;

    /// Every host's last report (this host's included), undecoded.
    fn collect(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Vec<Vec<u8>>, StoreError>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cluster store {store}: {message}")]
    Unreachable { store: String, message: String },
    #[error(
        "cluster.auth_file {path}: {message}; it holds the password, or USER PASSWORD, and must be mode 0600"
    )]
    Auth { path: String, message: String },
}

/// The config's aggregate tenants in the order every host uses: by name. `digest` covers
/// names and limits, so hosts whose configs differ (a rollout half done) notice.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Roster {
    pub names: Vec<Arc<str>>,
    /// Each one's index in the config's tenants.
    pub index: Vec<usize>,
    /// Aggregate rate and ceiling, bytes/s.
    pub rate: Vec<f64>,
    pub ceil: Vec<f64>,
    pub digest: u64,
}

impl Roster {
    pub fn of(cfg: &Config) -> Roster {
        let mut all: Vec<(usize, &crate::config::Tenant)> = cfg
            .tenants
            .iter()
            .enumerate()
            .filter(|(_, t)| t.scope == Scope::Aggregate)
            .collect();
        all.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        let mut r = Roster::default();
        let mut h = Fnv::new();
        for (k, t) in all {
            let rate = t.rate.bits_per_sec() as f64 / 8.0;
            let ceil = t
                .ceil
                .map_or(rate, |c| c.bits_per_sec() as f64 / 8.0)
                .max(rate);
            h.write(t.name.as_bytes());
            h.write(&[0]);
            h.write(&rate.to_le_bytes());
            h.write(&ceil.to_le_bytes());
            r.names.push(t.name.as_str().into());
            r.index.push(k);
            r.rate.push(rate);
            r.ceil.push(ceil);
        }
        r.digest = h.0;
        r
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// FNV-1a, 64 bits: a digest every build computes alike (std's hasher may change).
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Where this host's shares come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareState {
    /// Not yet in a division: alone, the whole limit; with others, a floor's worth until they
    /// count this host (so the sum stays under the limit while it joins).
    Joining,
    /// Divided with the other hosts this epoch.
    Divided,
    /// The store failed: the last division holds until the lease runs out.
    Held,
    /// The lease ran out: limit / hosts last seen.
    Fallback,
}

/// This host's share of every aggregate tenant, roster order, bytes/s.
#[derive(Clone, Debug, PartialEq)]
pub struct Shares {
    pub epoch: u64,
    pub digest: u64,
    pub state: ShareState,
    /// Hosts in the division (or last seen).
    pub hosts: usize,
    pub rate: Vec<f64>,
    pub ceil: Vec<f64>,
}

/// The division, epoch by epoch: pure (the store's answers and the time come in), so the
/// faults are tested without a store.
pub struct Coordinator {
    host: String,
    roster: Arc<Roster>,
    floor: f64,
    /// Epochs a host's last report stays in the division.
    ttl_epochs: u64,
    lease: Duration,
    last_divided: Option<Instant>,
    shares: Arc<Shares>,
    /// Hosts whose last report is past the lease: the store may drop it.
    forget: Vec<String>,
    // Scratch, kept between tenants and epochs.
    demand: Vec<f64>,
    out: Vec<f64>,
    order: Vec<(f64, u32)>,
}

impl Coordinator {
    pub fn new(c: &crate::config::Cluster, roster: Arc<Roster>) -> Coordinator {
        let lease = Duration::from_secs_f64(c.lease_s);
        let shares = Arc::new(Shares {
            epoch: 0,
            digest: roster.digest,
            state: ShareState::Joining,
            hosts: 1,
            rate: roster.rate.clone(),
            ceil: roster.ceil.clone(),
        });
        Coordinator {
            host: c.host_id.clone(),
            floor: c.floor,
            ttl_epochs: (lease.as_millis() as u64).div_ceil(c.interval_ms.max(1)),
            lease,
            last_divided: None,
            forget: Vec::new(),
            shares,
            roster,
            demand: Vec::new(),
            out: Vec::new(),
            order: Vec::new(),
        }
    }

    pub fn shares(&self) -> &Arc<Shares> {
        &self.shares
    }

    pub fn roster(&self) -> &Arc<Roster> {
        &self.roster
    }

    /// Hosts silent past the lease at the last exchange, for the store to drop.
    pub fn forget(&self) -> &[String] {
        &self.forget
    }

    /// A new config's roster: tenants that stay keep nothing of the old division (their order
    /// may differ); until the next division every share is the safe split.
    pub fn set_roster(&mut self, roster: Arc<Roster>) {
        if roster.digest == self.roster.digest {
            return;
        }
        self.roster = roster;
        self.shares = Arc::new(self.fallback(self.shares.epoch, self.shares.hosts));
    }

    /// The safe split of every roster tenant over `hosts` (at least one).
    fn fallback(&self, epoch: u64, hosts: usize) -> Shares {
        let hosts = hosts.max(1);
        let split = |limits: &[f64]| limits.iter().map(|&l| safe_split(l, hosts)).collect();
        Shares {
            epoch,
            digest: self.roster.digest,
            state: ShareState::Fallback,
            hosts,
            rate: split(&self.roster.rate),
            ceil: split(&self.roster.ceil),
        }
    }

    /// This host's report for `epoch`: `demand` per roster tenant, bytes/s.
    pub fn report(&self, epoch: u64, demand: &[f32]) -> Vec<u8> {
        wire::encode(&Report {
            host: self.host.clone(),
            epoch,
            roster: self.roster.digest,
            demand: demand.to_vec(),
        })
    }

    /// The store answered in `epoch` with `blobs` (every host's last report).
    pub fn on_reports(&mut self, epoch: u64, blobs: &[Vec<u8>], now: Instant) {
        let (reports, stale): (Vec<Report>, Vec<Report>) = blobs
            .iter()
            .filter_map(|b| wire::decode(b))
            .filter(|r| r.epoch <= epoch)
            .partition(|r| epoch - r.epoch <= self.ttl_epochs);
        self.forget = stale.into_iter().map(|r| r.host).collect();
        let mut hosts: Vec<&Report> = reports.iter().collect();
        hosts.sort_by(|a, b| a.host.cmp(&b.host));
        hosts.dedup_by(|a, b| a.host == b.host);
        let me = hosts.iter().position(|r| r.host == self.host);
        let Some(me) = me else {
            // This host's report did not reach the store (it failed between the two calls)
            // or not yet: the others do not count it.
            match self.shares.state {
                ShareState::Joining => {
                    let others = hosts.len();
                    let n = others + 1;
                    let share = |l: f64| {
                        if others == 0 {
                            l
                        } else {
                            l * self.floor / n as f64
                        }
                    };
                    self.shares = Arc::new(Shares {
                        epoch,
                        digest: self.roster.digest,
                        state: ShareState::Joining,
                        hosts: n,
                        rate: self.roster.rate.iter().map(|&l| share(l)).collect(),
                        ceil: self.roster.ceil.iter().map(|&l| share(l)).collect(),
                    });
                }
                _ => self.on_failure(epoch, now),
            }
            return;
        };
        let n = hosts.len();
        let roster = Arc::clone(&self.roster);
        let mut rate = Vec::with_capacity(roster.len());
        let mut ceil = Vec::with_capacity(roster.len());
        for j in 0..roster.len() {
            self.demand.clear();
            for r in &hosts {
                let d = if r.roster == roster.digest {
                    r.demand.get(j).map_or(0.0, |&d| f64::from(d))
                } else {
                    // A host with another config (a rollout half done): its demand is not
                    // known by tenant, so it is counted at an even split.
                    roster.rate[j] / n as f64
                };
                self.demand.push(d);
            }
            divide(
                roster.rate[j],
                &self.demand,
                self.floor,
                &mut self.out,
                &mut self.order,
            );
            rate.push(self.out[me]);
            // A ceiling at the rate (the common case) divides the same way.
            if roster.ceil[j] > roster.rate[j] {
                divide(
                    roster.ceil[j],
                    &self.demand,
                    self.floor,
                    &mut self.out,
                    &mut self.order,
                );
            }
            ceil.push(self.out[me]);
        }
        self.last_divided = Some(now);
        self.shares = Arc::new(Shares {
            epoch,
            digest: roster.digest,
            state: ShareState::Divided,
            hosts: n,
            rate,
            ceil,
        });
    }

    /// The store failed (or was too slow) at `epoch`: hold the last division while the lease
    /// lasts, then the safe split.
    pub fn on_failure(&mut self, epoch: u64, now: Instant) {
        let holding = self
            .last_divided
            .is_some_and(|t| now.saturating_duration_since(t) < self.lease);
        let s = &self.shares;
        let next = match s.state {
            ShareState::Divided | ShareState::Held if holding => Shares {
                epoch,
                state: ShareState::Held,
                ..(**s).clone()
            },
            // A host that never divided keeps what it joined with.
            ShareState::Joining => Shares {
                epoch,
                ..(**s).clone()
            },
            _ => self.fallback(epoch, s.hosts),
        };
        if next != **s {
            self.shares = Arc::new(next);
        }
    }
}

/// The epoch of unix time `ms`.
pub fn epoch_at(unix_ms: u64, interval_ms: u64) -> u64 {
    unix_ms / interval_ms.max(1)
}

/// Wall-clock milliseconds: epochs are numbered by it, so every host agrees on them.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the agent hands the coordination task each cycle.
#[derive(Clone, Debug, Default)]
pub struct Demand {
    pub roster: Arc<Roster>,
    /// Per roster tenant: bytes offered since the agent started (measured demand is their
    /// difference between two epochs over the time between).
    pub offered_total: Vec<f64>,
    /// When the totals were taken (seconds, any monotonic origin).
    pub at: f64,
    /// Per roster tenant: the demand forecast for when the next shares apply, bytes/s.
    pub predicted: Vec<f32>,
}

/// The coordination task's two ends, kept by the agent.
pub struct Link {
    pub demand: tokio::sync::watch::Sender<Arc<Demand>>,
    pub shares: tokio::sync::watch::Receiver<Arc<Shares>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the coordination task: each epoch, publish at its start and read a quarter of it
/// later, each call bounded by a quarter of the epoch, so a slow store delays nothing past
/// it.
pub fn spawn<S: ClusterStore + 'static>(
    mut store: S,
    mut coordinator: Coordinator,
    c: &crate::config::Cluster,
) -> Link {
    let interval_ms = c.interval_ms;
    let share_by = c.share_by;
    let (demand_tx, mut demand_rx) = tokio::sync::watch::channel(Arc::new(Demand {
        roster: Arc::clone(coordinator.roster()),
        ..Demand::default()
    }));
    let (shares_tx, shares_rx) = tokio::sync::watch::channel(Arc::clone(coordinator.shares()));
    let task = tokio::spawn(async move {
        let mut last: Option<Arc<Demand>> = None;
        let mut values: Vec<f32> = Vec::new();
        // The state last logged: a line per change, not per epoch.
        let mut said = ShareState::Joining;
        loop {
            let now = unix_ms();
            let epoch = epoch_at(now, interval_ms);
            let d = Arc::clone(&demand_rx.borrow_and_update());
            coordinator.set_roster(Arc::clone(&d.roster));
            match share_by {
                ShareBy::Predicted if d.predicted.len() == d.roster.len() => {
                    values.clone_from(&d.predicted)
                }
                _ => match measured(last.as_deref(), &d) {
                    Some(m) => {
                        values = m;
                        last = Some(Arc::clone(&d));
                    }
                    None => {
                        // Totals of another roster (or none yet): measuring starts from
                        // these. The same totals again (a slow cycle): the last measure.
                        if !last.as_deref().is_some_and(|l| comparable(l, &d)) {
                            last = Some(Arc::clone(&d));
                        }
                        if values.len() != d.roster.len() {
                            values = vec![0.0; d.roster.len()];
                        }
                    }
                },
            }
            let blob = coordinator.report(epoch, &values);
            let budget = Duration::from_millis((interval_ms / 4).max(1));
            let forget = coordinator.forget().to_vec();
            let published = tokio::time::timeout(budget, store.publish(blob, &forget)).await;
            // A quarter of an epoch on, every host has published (clocks closer than that).
            sleep_until_ms(epoch * interval_ms + interval_ms / 4).await;
            let read = match published {
                Ok(Ok(())) => tokio::time::timeout(budget, store.collect()).await,
                Ok(Err(e)) => Ok(Err(e)),
                Err(e) => Err(e),
            };
            match read {
                Ok(Ok(blobs)) => coordinator.on_reports(epoch, &blobs, Instant::now()),
                Ok(Err(e)) => {
                    tracing::debug!(cause = %e, "cluster exchange failed");
                    coordinator.on_failure(epoch, Instant::now());
                }
                Err(_) => coordinator.on_failure(epoch, Instant::now()),
            }
            let state = coordinator.shares().state;
            if state != said {
                match state {
                    ShareState::Held => tracing::warn!(
                        "cluster store unreachable: the last shares hold for cluster.lease_s"
                    ),
                    ShareState::Fallback => tracing::warn!(
                        hosts = coordinator.shares().hosts,
                        "cluster lease ran out: each aggregate tenant at limit / hosts last seen"
                    ),
                    ShareState::Divided => tracing::info!(
                        hosts = coordinator.shares().hosts,
                        "cluster shares divided with the other hosts"
                    ),
                    ShareState::Joining => {}
                }
                said = state;
            }
            let _ = shares_tx.send(Arc::clone(coordinator.shares()));
            // The next epoch's start (a few ms in, so clocks a little apart agree on it).
            sleep_until_ms((epoch + 1) * interval_ms + 5).await;
        }
    });
    Link {
        demand: demand_tx,
        shares: shares_rx,
        task,
    }
}

async fn sleep_until_ms(unix: u64) {
    let wait = unix.saturating_sub(unix_ms());
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

/// Measured demand per roster tenant: offered bytes between two of the agent's totals over
/// the time between; `None` without two comparable totals.
fn measured(last: Option<&Demand>, d: &Demand) -> Option<Vec<f32>> {
    let l = last?;
    (comparable(l, d) && d.at > l.at).then(|| {
        d.offered_total
            .iter()
            .zip(&l.offered_total)
            .map(|(a, b)| ((a - b).max(0.0) / (d.at - l.at)) as f32)
            .collect()
    })
}

/// Two totals of the same tenants, in the same order.
fn comparable(a: &Demand, b: &Demand) -> bool {
    a.roster.digest == b.roster.digest
        && a.offered_total.len() == b.offered_total.len()
        && a.offered_total.len() == a.roster.len()
}

#[cfg(test)]
mod tests;
