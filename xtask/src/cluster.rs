//! `cargo xtask bench cluster`: cluster mode's cost and worth.
//!
//! 1. Coordination: `hosts` x `tenants` aggregate tenants through one `redis-server` (on a
//!    Unix socket), the hosts simulated in this process, each with its own connection,
//!    coordinator and division, as the agents run them: every epoch every host publishes its
//!    report, then every host reads all of them and divides every tenant. Wall time per
//!    epoch (both phases, all hosts, on this machine's cores), and each phase's.
//! 2. Follow-the-sun: one aggregate limit over three hosts whose load moves with the day,
//!    divided by each rule (even split, last measurement, prediction, the measurement moved by
//!    the trace's own shape, oracle) through the agent's forecaster, gate and division: bytes
//!    dropped that the aggregate had room for. Hosts, epochs and ramps are flags.
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use shaper::cluster::{ClusterStore, Coordinator, RedisStore, Roster, ShareState};
use shaper::config::{self, Cluster, Scope, ShareBy};
use shaper::lab::redis::RedisServer;
use shaper::simulate::cluster::Sun;
use shaper::units::{Rate, Size};

struct Host {
    store: RedisStore,
    coordinator: Coordinator,
    demand: Vec<f32>,
}

pub fn coordination(hosts: usize, tenants: usize, epochs: usize) -> Result<()> {
    let redis = RedisServer::start("bench", None)
        .context("redis-server (bash scripts/setup.sh installs it)")?;
    let mut cfg = config::synthetic(
        tenants as u32,
        Rate(400_000_000_000),
        Rate(90_000_000),
        Size(100_000),
    );
    for t in &mut cfg.tenants {
        t.scope = Scope::Aggregate;
    }
    let roster = Arc::new(Roster::of(&cfg));
    let cluster = |h: usize| Cluster {
        store: redis.url(),
        host_id: format!("h{h}"),
        name: "bench".into(),
        interval_ms: 1000,
        lease_s: 10.0,
        floor: 0.02,
        share_by: ShareBy::Predicted,
        auth_file: None,
    };
    let mut all: Vec<Host> = (0..hosts)
        .map(|h| {
            let c = cluster(h);
            Ok(Host {
                store: RedisStore::new(&c)?,
                coordinator: Coordinator::new(&c, Arc::clone(&roster)),
                // Each host's demand differs by tenant and host.
                demand: (0..tenants)
                    .map(|j| ((j * 7 + h * 13) % 100) as f32 * 1e5)
                    .collect(),
            })
        })
        .collect::<Result<_>>()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "coordination: {hosts} hosts x {tenants} aggregate tenants through one redis-server (Unix socket), {epochs} epochs"
    );
    let (mut total, mut publish, mut read) = (Vec::new(), Vec::new(), Vec::new());
    for epoch in 1..=epochs as u64 {
        let started = Instant::now();
        all = rt.block_on(async {
            let tasks: Vec<_> = all
                .into_iter()
                .map(|mut h| {
                    tokio::spawn(async move {
                        let blob = h.coordinator.report(epoch, &h.demand);
                        let forget = h.coordinator.forget().to_vec();
                        let r = h.store.publish(blob, &forget).await;
                        (h, r.is_ok())
                    })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                let (h, ok) = t.await.expect("publish task");
                assert!(ok, "publish failed");
                out.push(h);
            }
            out
        });
        let published = started.elapsed();
        all = rt.block_on(async {
            let tasks: Vec<_> = all
                .into_iter()
                .map(|mut h| {
                    tokio::spawn(async move {
                        let blobs = h.store.collect().await;
                        // The division is CPU work: off the runtime's workers, as it would
                        // be on a host of its own.
                        tokio::task::spawn_blocking(move || {
                            match blobs {
                                Ok(b) => h.coordinator.on_reports(epoch, &b, Instant::now()),
                                Err(_) => h.coordinator.on_failure(epoch, Instant::now()),
                            }
                            h
                        })
                        .await
                        .expect("division")
                    })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.expect("read task"));
            }
            out
        });
        let elapsed = started.elapsed();
        let divided = all
            .iter()
            .filter(|h| h.coordinator.shares().state == ShareState::Divided)
            .count();
        assert_eq!(divided, hosts, "epoch {epoch}: every host divides");
        // The hosts' shares of each tenant sum to at most its limit.
        for j in (0..tenants).step_by((tenants / 100).max(1)) {
            let sum: f64 = all.iter().map(|h| h.coordinator.shares().rate[j]).sum();
            assert!(sum <= roster.rate[j] * (1.0 + 1e-9), "tenant {j}: {sum}");
        }
        total.push(elapsed);
        publish.push(published);
        read.push(elapsed - published);
    }
    let ms = |v: &mut Vec<Duration>| {
        v.sort();
        let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
        (p(0.5), p(1.0))
    };
    let (t50, tmax) = ms(&mut total);
    let (p50, _) = ms(&mut publish);
    let (r50, _) = ms(&mut read);
    println!(
        "per epoch: p50 {t50:.1} ms, max {tmax:.1} ms (publish p50 {p50:.1} ms, read and divide p50 {r50:.1} ms); report {:.0} kB per host",
        (tenants * 4) as f64 / 1e3
    );
    Ok(())
}

pub fn follow_the_sun(sun: Sun, days: usize) {
    let interval = sun.interval_s;
    let limit = 15e6;
    println!(
        "\nfollow-the-sun: {} hosts, regions {:.0} h apart, business hours at {:.0} Mbit/s each (night a tenth), ramps {:.0} min up and {:.0} min down, aggregate {:.0} Mbit/s, {interval} s epochs, 7 days learned, {days} scored",
        sun.hosts,
        24.0 / sun.hosts as f64,
        sun.peak * 8.0 / 1e6,
        sun.ramp_up_h * 60.0,
        sun.ramp_down_h * 60.0,
        limit * 8.0 / 1e6
    );
    let forecast = sun.forecast();
    println!(
        "{:<10} {:>14} {:>16} {:>10}",
        "rule", "dropped GB", "avoidable GB", "vs measured"
    );
    for seed in [1u64, 2, 3] {
        let trace = shaper::simulate::cluster::follow_the_sun(sun, 7, days, seed);
        let r = shaper::simulate::cluster::replay(&trace, limit, 0.02, &forecast);
        let measured = r
            .iter()
            .find(|x| x.rule == "measured")
            .map_or(1.0, |x| x.avoidable_bytes.max(1.0));
        println!("seed {seed}");
        for x in &r {
            println!(
                "{:<10} {:>14.2} {:>16.3} {:>9.0}%",
                x.rule,
                x.dropped_bytes / 1e9,
                x.avoidable_bytes / 1e9,
                (x.avoidable_bytes / measured - 1.0) * 100.0
            );
        }
    }
}
