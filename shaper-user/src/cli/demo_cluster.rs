//! `shaper demo --hosts N`: cluster mode on one machine. N hosts (a lab and an agent each)
//! and one `redis-server` between them; one tenant, `acme`, limited to 90 Mbit/s over all of
//! them. Its traffic moves from evenly spread to 3:1:0 and back, then Redis is killed for a
//! few seconds under traffic. Prints, per phase, what each host received against its share,
//! the sum over 5 s windows, how many cycles each host took to get its share after a shift,
//! and how the hosts rode out the outage.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};

use super::demo::stop_on_ctrl_c;
use crate::cli::DemoArgs;
use shaper::config::{PolicyMode, ShareBy};
use shaper::lab::cluster::{Cluster, Setup, expected_shares, judge};

const LIMIT_MBIT: f64 = 90.0;
const CYCLE: Duration = Duration::from_millis(100);
const STEP: Duration = Duration::from_secs(1);

pub async fn execute(args: &DemoArgs, hosts: usize) -> Result<()> {
    if !shaper::lab::is_root() {
        bail!(
            "the demo builds network namespaces and loads XDP: run it as root (sudo shaper demo --hosts {hosts})"
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let ctrlc = stop_on_ctrl_c(stop.clone());
    let secs = args.seconds.max(6) as usize;
    let outage = args.outage_secs;
    let outcome = tokio::task::spawn_blocking(move || run(hosts, secs, outage, &stop)).await;
    ctrlc.abort();
    outcome?
}

/// A phase's name and each host's offered Mbit/s.
type Phase = (&'static str, Vec<f64>);

/// Evenly spread (each offered 1.5x an even share), then 3:1:0 (host 0 the whole limit, host
/// 1 a third of it, the rest nothing), then evenly again.
fn schedule(hosts: usize, secs: usize) -> (Vec<Vec<u64>>, Vec<Phase>) {
    let even = vec![1.5 * LIMIT_MBIT / hosts as f64; hosts];
    let mut moved = vec![0.0; hosts];
    moved[0] = LIMIT_MBIT;
    moved[1] = LIMIT_MBIT / 3.0;
    let phases = vec![("even", even.clone()), ("3:1:0", moved), ("even", even)];
    let rates = (0..hosts)
        .map(|h| {
            phases
                .iter()
                .flat_map(|(_, r)| std::iter::repeat_n((r[h] * 1e6) as u64, secs))
                .collect()
        })
        .collect();
    (rates, phases)
}

fn run(hosts: usize, secs: usize, outage_secs: u64, stop: &Arc<AtomicBool>) -> Result<()> {
    println!(
        "starting redis-server and {hosts} hosts (a namespace pair, a veth and an agent each); tenant acme limited to {LIMIT_MBIT} Mbit/s over all of them, {} ms cycles",
        CYCLE.as_millis()
    );
    let cluster = Cluster::start(Setup {
        hosts,
        limit: format!("{LIMIT_MBIT}mbit"),
        interval_ms: CYCLE.as_millis() as u64,
        mode: PolicyMode::Predictive,
        share_by: ShareBy::Predicted,
        lease_s: 1.0,
    })?;
    println!("store: {} (password from a 0600 file)", cluster.redis.url());
    let (rates, phases) = schedule(hosts, secs);
    println!(
        "traffic moves: evenly spread, then 3:1:0, then evenly again, {secs} s each (UDP, IP bits/s)..."
    );
    let bins = cluster.run_until(&rates, STEP, CYCLE, stop)?;
    if stop.load(Ordering::Relaxed) {
        return Ok(());
    }
    let limit = LIMIT_MBIT * 1e6;
    let j = judge(
        &bins,
        CYCLE,
        &rates,
        STEP,
        limit,
        Duration::from_secs(5),
        CYCLE,
    );
    let per_phase = secs * (STEP.as_millis() / CYCLE.as_millis()) as usize;
    println!(
        "\n{:<8} {:>6} {:>10} {:>10} {:>10}",
        "phase", "host", "offered", "share", "received"
    );
    for (p, (name, offered)) in phases.iter().enumerate() {
        let share = expected_shares(
            limit,
            &offered.iter().map(|o| o * 1e6).collect::<Vec<_>>(),
            0.02,
        );
        // The phase's last half: past the shift.
        let (from, to) = (p * per_phase + per_phase / 2, (p + 1) * per_phase);
        let mut total = 0.0;
        for h in 0..hosts {
            let got = bins[h][from..to].iter().sum::<u64>() as f64 * 8.0
                / ((to - from) as f64 * CYCLE.as_secs_f64())
                / 1e6;
            total += got;
            println!(
                "{:<8} {:>6} {:>10.1} {:>10.1} {:>10.1}",
                if h == 0 { name } else { "" },
                format!("h{h}"),
                offered[h],
                share[h] / 1e6,
                got
            );
        }
        println!(
            "{:<8} {:>6} {:>10} {:>10.1} {:>10.1}",
            "", "sum", "", LIMIT_MBIT, total
        );
    }
    println!(
        "\nsum received over every 5 s window: {:.1}..{:.1} Mbit/s ({:+.1}%..{:+.1}% of {LIMIT_MBIT})",
        j.window_min / 1e6,
        j.window_max / 1e6,
        (j.window_min / limit - 1.0) * 100.0,
        (j.window_max / limit - 1.0) * 100.0
    );
    for (at, settle) in &j.settle_cycles {
        let text: Vec<String> = settle
            .iter()
            .map(|c| c.map_or("never".into(), |c| format!("{c:.0}")))
            .collect();
        println!(
            "after the shift at {at} s, cycles until each host with demand had its share (within 10%): {}",
            text.join(", ")
        );
    }
    outage(&cluster, hosts, outage_secs, stop)
}

/// 3:1:0 with Redis killed from 3 s for `secs`, and 4 s after it is back.
fn outage(cluster: &Cluster, hosts: usize, secs: u64, stop: &Arc<AtomicBool>) -> Result<()> {
    let mut offered = vec![0.0; hosts];
    offered[0] = LIMIT_MBIT;
    offered[1] = LIMIT_MBIT / 3.0;
    let total = 3 + secs as usize + 4;
    let rates: Vec<Vec<u64>> = offered
        .iter()
        .map(|o| vec![(o * 1e6) as u64; total])
        .collect();
    println!("\nRedis killed for {secs} s under 3:1:0 traffic (lease: 1 s, then limit / hosts)...");
    let bins = std::thread::scope(|s| {
        let traffic = s.spawn(|| cluster.run_until(&rates, STEP, CYCLE, stop));
        std::thread::sleep(Duration::from_secs(3));
        cluster.redis.kill();
        std::thread::sleep(Duration::from_secs(secs));
        let back = cluster.redis.restart();
        (traffic.join(), back)
    });
    let (traffic, back) = bins;
    back?;
    let bins = match traffic {
        Ok(b) => b?,
        Err(_) => bail!("the traffic thread panicked"),
    };
    let cycle = CYCLE.as_secs_f64();
    let sum = |from: f64, to: f64| {
        let (a, b) = (
            (from / cycle).round() as usize,
            (to / cycle).round() as usize,
        );
        bins.iter()
            .map(|h| h[a..b].iter().sum::<u64>())
            .sum::<u64>() as f64
            * 8.0
            / (to - from)
            / 1e6
    };
    let back = 3.0 + secs as f64;
    let end = back + 4.0;
    println!("{:<40} {:>10}", "", "sum Mbit/s");
    let row = |what: &str, from: f64, to: f64| {
        println!(
            "{:<40} {:>10.1}",
            format!("{what} ({from:.1}-{to:.1} s)"),
            sum(from, to)
        );
    };
    row("divided", 1.0, 3.0);
    row("store down, lease holds", 3.1, 3.8);
    row("lease over: safe split", 4.4, back);
    row("store back", back + 0.4, end);
    println!("\ntearing down: agents detach, namespaces and redis-server go");
    Ok(())
}
