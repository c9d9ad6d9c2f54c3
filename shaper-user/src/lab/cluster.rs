//! Several shaper hosts on one machine, one `redis-server` between them: each host is a lab of
//! its own (two namespaces and a veth pair, an agent attached to the receiving veth), every
//! one with the same aggregate tenant. Traffic follows a schedule per host; what each host's
//! receiver got is counted in bins, so the sum over hosts can be judged window by window.
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use super::redis::RedisServer;
use super::traffic::{Sink, start_schedule};
use super::{AgentFailed, AgentThread, Lab};
use crate::config::{Config, PolicyMode, ShareBy};

/// UDP payload of the lab's senders.
const PAYLOAD: usize = 1200;

/// The aggregate tenant's receiver in every host's lab.
pub fn receiver() -> SocketAddr {
    SocketAddr::new(IpAddr::from([10, 10, 1, 1]), 9000)
}

/// How the hosts are set up.
#[derive(Clone, Debug)]
pub struct Setup {
    pub hosts: usize,
    /// The aggregate limit, as the config spells it ("90mbit").
    pub limit: String,
    /// The agents' cycle and the cluster's epoch, ms.
    pub interval_ms: u64,
    pub mode: PolicyMode,
    pub share_by: ShareBy,
    /// `cluster.lease_s`.
    pub lease_s: f64,
}

/// The running hosts; torn down on drop (agents detach, namespaces go, Redis stops).
pub struct Cluster {
    pub setup: Setup,
    // Field order is drop order: agents (detaching as they drop) before their labs, Redis
    // last (its directory, removed with it, holds the hosts' sockets, stores and credentials).
    _agents: Vec<AgentThread>,
    labs: Vec<Lab>,
    pub redis: RedisServer,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterLabError {
    #[error("redis-server: {0} (bash scripts/setup.sh installs it)")]
    Redis(io::Error),
    #[error("building the lab: {0}")]
    Lab(io::Error),
    #[error("host {host}'s agent: {source}")]
    Agent {
        host: usize,
        #[source]
        source: Box<AgentFailed>,
    },
}

/// Host `i`'s config: the aggregate tenant, the cluster section, its own API socket and
/// history store under `dir`.
pub fn host_config(
    s: &Setup,
    i: usize,
    store: &str,
    auth: &std::path::Path,
    dir: &std::path::Path,
) -> Config {
    let text = serde_json::json!({
        "link": { "capacity": "10gbit" },
        "tenants": [{
            "name": "acme", "tier": "bronze", "prefixes": ["10.10.1.0/24"],
            "rate": s.limit, "burst": "64kb", "scope": "aggregate"
        }],
        "forecast": { "interval_ms": s.interval_ms, "horizon_s": 5, "season_s": 60 },
        "policy": { "mode": s.mode.name() },
        "api": { "listen": "127.0.0.1:0", "socket": dir.join(format!("h{i}.sock")) },
        "history": { "path": dir.join(format!("h{i}.db")) },
        "cluster": {
            "store": store, "host_id": format!("h{i}"), "name": "lab",
            "interval_ms": s.interval_ms, "lease_s": s.lease_s,
            "share_by": match s.share_by { ShareBy::Predicted => "predicted", ShareBy::Measured => "measured" },
            "auth_file": auth,
        }
    });
    // Built from our own values: it validates, or the lab is wrong.
    Config::parse(&text.to_string()).expect("the cluster lab's config is valid")
}

impl Cluster {
    /// Starts Redis (with a password, from a 0600 file), the hosts' labs and their agents.
    pub fn start(setup: Setup) -> Result<Cluster, ClusterLabError> {
        let password = format!("lab-{}", std::process::id());
        let redis =
            RedisServer::start("cluster", Some(&password)).map_err(ClusterLabError::Redis)?;
        let dir = redis.dir().join("hosts");
        std::fs::create_dir_all(&dir).map_err(ClusterLabError::Lab)?;
        let auth = dir.join("auth");
        super::write_private(&auth, &format!("{password}\n")).map_err(ClusterLabError::Lab)?;
        let mut labs = Vec::new();
        let mut agents = Vec::new();
        for i in 0..setup.hosts {
            let lab = Lab::new(&["10.10.1"], &[]).map_err(ClusterLabError::Lab)?;
            let cfg = host_config(&setup, i, &redis.url(), &auth, &dir);
            let agent = AgentThread::start(&cfg, &lab.dut_if, &lab.dut.name).map_err(|e| {
                ClusterLabError::Agent {
                    host: i,
                    source: Box::new(e),
                }
            })?;
            labs.push(lab);
            agents.push(agent);
        }
        Ok(Cluster {
            setup,
            _agents: agents,
            labs,
            redis,
        })
    }

    /// Offers each host the rates of its schedule (`rates[host][step]`, IP bits/s, one step a
    /// `step`) and returns what each host's receiver got per `bin` (IP bytes), from the start.
    pub fn run(
        &self,
        rates: &[Vec<u64>],
        step: Duration,
        bin: Duration,
    ) -> io::Result<Vec<Vec<u64>>> {
        self.run_until(rates, step, bin, &Arc::new(AtomicBool::new(false)))
    }

    /// [`Cluster::run`], ended early when `stop` is set (Ctrl-C in the demo).
    pub fn run_until(
        &self,
        rates: &[Vec<u64>],
        step: Duration,
        bin: Duration,
        stop: &Arc<AtomicBool>,
    ) -> io::Result<Vec<Vec<u64>>> {
        let sink_stop = Arc::new(AtomicBool::new(false));
        let steps = rates.iter().map(Vec::len).max().unwrap_or(0) as u32;
        let duration = step * steps;
        let epoch = Instant::now();
        let mut sinks = Vec::new();
        for lab in &self.labs {
            let sink = Sink::bind(&lab.dut.name, receiver())?;
            sinks.push(sink.start_binned(
                Some((epoch, bin)),
                duration + Duration::from_secs(2),
                sink_stop.clone(),
            ));
        }
        let senders: Vec<_> = self
            .labs
            .iter()
            .zip(rates)
            .map(|(lab, r)| {
                start_schedule(
                    lab.src.name.clone(),
                    receiver(),
                    PAYLOAD,
                    step,
                    r.clone(),
                    stop.clone(),
                )
            })
            .collect();
        for s in senders {
            s.join()
                .map_err(|_| io::Error::other("sender thread panicked"))??;
        }
        std::thread::sleep(Duration::from_millis(300));
        sink_stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let want = (duration.as_secs_f64() / bin.as_secs_f64()).ceil() as usize;
        let mut out = Vec::new();
        for h in sinks {
            let mut r = h
                .join()
                .map_err(|_| io::Error::other("sink thread panicked"))??;
            r.bins.resize(want, 0);
            out.push(r.bins);
        }
        Ok(out)
    }
}

/// What a schedule's run shows: the sum over hosts in sliding windows, and how long each
/// host took after each shift to get its share.
#[derive(Clone, Debug)]
pub struct Judged {
    /// Lowest and highest sum received over any window of `window` (bits/s), after the
    /// first window (the agents start at the whole limit).
    pub window_min: f64,
    pub window_max: f64,
    /// Per shift (the step it happened at), per host with demand, the cycles until its
    /// received rate was within 10% of its share in at least 90% of the phase's bins from
    /// then on (`None`: never).
    pub settle_cycles: Vec<(usize, Vec<Option<f64>>)>,
}

/// The max-min share of each host under `limit` for offered `rates` (bits/s), with the
/// division's floor: what each host should get.
pub fn expected_shares(limit: f64, offered: &[f64], floor: f64) -> Vec<f64> {
    let (mut out, mut order) = (Vec::new(), Vec::new());
    crate::allocate::aggregate::divide(limit, offered, floor, &mut out, &mut order);
    // A host receives no more than it is offered.
    out.iter().zip(offered).map(|(s, o)| s.min(*o)).collect()
}

/// Judges `bins` (per host, IP bytes per `bin`) of a run of `rates` (per host, per `step`)
/// against `limit` (bits/s).
pub fn judge(
    bins: &[Vec<u64>],
    bin: Duration,
    rates: &[Vec<u64>],
    step: Duration,
    limit: f64,
    window: Duration,
    cycle: Duration,
) -> Judged {
    let n = bins.iter().map(Vec::len).min().unwrap_or(0);
    let per_window = (window.as_secs_f64() / bin.as_secs_f64()).round() as usize;
    let bin_s = bin.as_secs_f64();
    let sum: Vec<f64> = (0..n)
        .map(|k| bins.iter().map(|b| b[k] as f64 * 8.0).sum())
        .collect();
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for start in per_window..n.saturating_sub(per_window) {
        let w: f64 = sum[start..start + per_window].iter().sum::<f64>() / window.as_secs_f64();
        lo = lo.min(w);
        hi = hi.max(w);
    }
    let steps = rates.iter().map(Vec::len).max().unwrap_or(0);
    let bins_per_step = (step.as_secs_f64() / bin_s).round() as usize;
    let mut settle = Vec::new();
    for s in 1..steps {
        let before: Vec<u64> = rates.iter().map(|r| r[s - 1]).collect();
        let now: Vec<u64> = rates.iter().map(|r| r[s]).collect();
        if before == now {
            continue;
        }
        // The phase runs until the schedule changes again.
        let end_step = (s + 1..steps)
            .find(|&t| rates.iter().any(|r| r[t] != r[s]))
            .unwrap_or(steps);
        let offered: Vec<f64> = now.iter().map(|&r| r as f64).collect();
        let share = expected_shares(limit, &offered, 0.02);
        let (from, to) = (s * bins_per_step, (end_step * bins_per_step).min(n));
        let mut per_host = Vec::new();
        for (h, b) in bins.iter().enumerate() {
            if offered[h] <= 0.0 {
                continue;
            }
            let ok = |k: usize| {
                let got = b[k] as f64 * 8.0 / bin_s;
                (got - share[h]).abs() <= 0.1 * share[h]
            };
            // The first bin within 10% from which at least 90% of the phase's bins are too:
            // a late packet train in one bin on a loaded machine is not a host without its
            // share.
            let good: Vec<bool> = (from..to).map(ok).collect();
            let mut after = 0usize;
            let mut first = None;
            for (i, g) in good.iter().enumerate().rev() {
                after += usize::from(*g);
                if *g && after * 10 >= (good.len() - i) * 9 {
                    first = Some(from + i);
                }
            }
            per_host.push(first.map(|k| (k - from) as f64 * bin_s / cycle.as_secs_f64()));
        }
        settle.push((s, per_host));
    }
    Judged {
        window_min: lo,
        window_max: hi,
        settle_cycles: settle,
    }
}
