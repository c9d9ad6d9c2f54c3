//! Record: every cycle into the history store, on a thread of its own behind a bounded queue,
//! so a slow disk never holds a cycle up (a cycle whose rows find the queue full drops them,
//! counted as a `record` error). With many tenants each one's rows are downsampled to keep the
//! store at about [`ROWS_PER_SECOND`]: a tenant's row then holds the means of its last cycles.
//! Old rows are purged hourly, in small batches; a restart warms the forecasters from the
//! store.
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::config::Config;
use crate::planner::Planner;
use crate::stats::TenantStats;
use crate::store::{Row, Store, unix_now};

use super::Agent;
use super::plan::Planned;

/// How many past cycles per tenant a restart feeds its forecaster: two days of one-second
/// cycles at most, enough for the daily season.
const WARM_SAMPLES: usize = 2 * 86_400;

/// How long a restart may spend warming forecasters; tenants not reached start cold.
const WARM_BUDGET: Duration = Duration::from_secs(5);

/// The rows per second the store is asked to take, whatever the tenant count.
pub const ROWS_PER_SECOND: u64 = 10_000;

/// Batches of rows queued for the store's thread.
const QUEUE: usize = 4;

/// What the store's thread has to say: failures since the last look, and the last one.
#[derive(Default)]
struct Failures {
    count: u64,
    last: Option<String>,
}

/// The store's thread and the queue to it.
pub(super) struct Recorder {
    queue: Option<SyncSender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    failures: Arc<Mutex<Failures>>,
    /// Per tenant (config order): sums over the cycles since its last row.
    acc: Vec<Acc>,
    cycle: u64,
}

enum Job {
    Rows(Vec<Row>),
    Purge(f64),
}

/// A tenant's cycles since its last row.
#[derive(Clone, Copy, Debug, Default)]
struct Acc {
    n: u32,
    offered: f64,
    passed: f64,
    dropped: f64,
}

impl Recorder {
    pub(super) fn start(mut store: Store) -> Recorder {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(QUEUE);
        let failures = Arc::new(Mutex::new(Failures::default()));
        let f = failures.clone();
        let thread = std::thread::Builder::new()
            .name("shaper-history".into())
            .spawn(move || {
                crate::api::yield_to_the_cycle();
                write_jobs(&mut store, &rx, &f)
            })
            .ok();
        Recorder {
            queue: Some(tx),
            thread,
            failures,
            acc: Vec::new(),
            cycle: 0,
        }
    }

    /// Failures of the store's thread since the last call, and the last one's text.
    fn take_failures(&self) -> Option<(u64, String)> {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = std::mem::take(&mut f.count);
        (n > 0).then(|| (n, f.last.take().unwrap_or_default()))
    }

    fn send(&self, job: Job) -> Result<(), &'static str> {
        match self.queue.as_ref().map(|q| q.try_send(job)) {
            Some(Ok(())) => Ok(()),
            Some(Err(TrySendError::Full(_))) => Err("the history store is behind: rows dropped"),
            _ => Err("the history store's thread is gone"),
        }
    }
}

impl Drop for Recorder {
    /// Lets the thread write what is queued, then ends it.
    fn drop(&mut self) {
        self.queue.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn write_jobs(store: &mut Store, rx: &Receiver<Job>, failures: &Mutex<Failures>) {
    for job in rx {
        let r = match job {
            Job::Rows(rows) => store.append(&rows).map(|_| ()),
            Job::Purge(before) => store.purge(before).map(|_| ()),
        };
        if let Err(e) = r {
            let mut f = failures.lock().unwrap_or_else(|e| e.into_inner());
            f.count += 1;
            f.last = Some(crate::datapath::error_chain(&e));
        }
    }
}

/// Every how many cycles a tenant gets a row: 1 until `tenants` rows per cycle exceed
/// [`ROWS_PER_SECOND`].
fn every(tenants: usize, interval_ms: u64) -> u64 {
    let per_second = tenants as u64 * 1000 / interval_ms.max(1);
    per_second.div_ceil(ROWS_PER_SECOND).max(1)
}

impl Agent {
    /// Queues this cycle's rows (tenants whose turn it is: their means since their last row);
    /// purges old rows hourly; reports the store thread's failures.
    pub(super) fn record(&mut self, tenants: &[TenantStats], plans: Option<&[Planned]>) {
        let ts = unix_now();
        let every = every(tenants.len(), self.cfg.forecast.interval_ms);
        let rec = &mut self.recorder;
        rec.acc.resize(tenants.len(), Acc::default());
        let cycle = rec.cycle;
        rec.cycle += 1;
        let mut rows = Vec::with_capacity(tenants.len() / every as usize + 1);
        for (i, t) in tenants.iter().enumerate() {
            let a = &mut rec.acc[i];
            a.n += 1;
            a.offered += t.offered_rate;
            a.passed += t.passed_rate;
            a.dropped += t.offered_rate * t.drop_ratio;
            // Tenants take turns, so each cycle writes about the same number of rows.
            if !(cycle + i as u64).is_multiple_of(every) {
                continue;
            }
            let n = f64::from(a.n);
            let p = plans.and_then(|p| p.get(i));
            rows.push(Row {
                ts,
                tenant: t.name.to_string(),
                offered: a.offered / n,
                passed: a.passed / n,
                dropped: a.dropped / n,
                forecast: p.map(|p| (p.forecast.mean, p.forecast.lo, p.forecast.hi)),
                fill: p.map(|p| p.alloc.fill),
                pre: p.map(|p| p.alloc.pre_rate),
            });
            *a = Acc::default();
        }
        if !rows.is_empty()
            && let Err(why) = rec.send(Job::Rows(rows))
        {
            self.failed("record", why);
        }
        let cycles_per_hour = 3_600_000 / self.cfg.forecast.interval_ms.max(1);
        if self.cycles_recorded.is_multiple_of(cycles_per_hour.max(1))
            && let Err(why) = self.recorder.send(Job::Purge(retention_cutoff(&self.cfg)))
        {
            self.failed("record", why);
        }
        self.cycles_recorded += 1;
        if let Some((n, why)) = self.recorder.take_failures() {
            self.failed("record", &format!("{n} write(s) failed: {why}"));
        }
    }
}

/// Feeds every tenant's forecaster its history, within [`WARM_BUDGET`].
/// Returns the newest sample's time (0 without any), so the live clock starts after it.
pub(super) fn warm_start(planner: &mut Planner, store: &Store, cfg: &Config) -> f64 {
    let per_tenant = (2.0 * cfg.forecast.season_s as f64 * 1000.0
        / cfg.forecast.interval_ms.max(1) as f64)
        .min(WARM_SAMPLES as f64) as usize;
    let started = Instant::now();
    let mut warmed = 0usize;
    let mut reached = 0usize;
    let mut newest = 0f64;
    for t in &cfg.tenants {
        if started.elapsed() > WARM_BUDGET {
            break;
        }
        reached += 1;
        match store.recent(&t.name, per_tenant.max(1)) {
            Ok(samples) => {
                newest = samples.iter().map(|s| s.0).fold(newest, f64::max);
                warmed += planner.warm(&t.name, &samples);
            }
            Err(e) => warn!(tenant = %t.name, cause = %e, "cannot read history"),
        }
    }
    if warmed > 0 {
        info!(samples = warmed, path = %cfg.history.path.display(), "forecasters warm-started from history");
    }
    if reached < cfg.tenants.len() {
        warn!(
            warmed = reached,
            cold = cfg.tenants.len() - reached,
            "warm start stopped at its time budget: the other tenants' forecasters start cold"
        );
    }
    newest
}

/// Unix time before which history is past `history.retention_days`.
fn retention_cutoff(cfg: &Config) -> f64 {
    unix_now() - f64::from(cfg.history.retention_days) * 86_400.0
}

/// Deletes history older than `history.retention_days`.
pub(super) fn purge_history(store: &mut Store, cfg: &Config) {
    if let Err(e) = store.purge(retention_cutoff(cfg)) {
        warn!(cause = %e, "cannot purge old history");
    }
}

#[cfg(test)]
mod tests {
    use super::every;

    #[test]
    fn rows_are_downsampled_only_past_the_budget() {
        assert_eq!(every(3, 1000), 1);
        assert_eq!(every(10_000, 1000), 1);
        assert_eq!(every(10_001, 1000), 2);
        assert_eq!(every(100_000, 1000), 10);
        assert_eq!(every(10_000, 100), 10);
    }
}
