//! `cargo xtask bench agent --tenants 10000,100000`: the whole agent as an operator runs it.
//! For each size: a lab veth, the default config with that many /32 tenants (model `auto`,
//! history on, 1 s interval), the real `shaper run`, live UDP to one tenant; then time to the
//! first cycle, each stage's p50/p99 from `/v1/health`, overruns, resident memory per tenant,
//! a one-tenant reload, and `/v1/health`'s latency while a client scrapes `/metrics` every
//! second.
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use shaper::config::{Config, synthetic};
use shaper::forecast::IntervalMethod;
use shaper::lab::traffic::{self, Flood};
use shaper::lab::{AgentProcess, Lab};
use shaper::units::{Rate, Size};

use crate::lab::write_private;

/// One size's results.
struct Report {
    tenants: usize,
    first_cycle_s: f64,
    /// (stage, p50 ms, p99 ms), `cycle` the whole.
    stages: Vec<(String, f64, f64)>,
    cycles: u64,
    overruns: u64,
    rss_bytes: u64,
    reload_ms: f64,
    health_p50_ms: f64,
    health_p99_ms: f64,
    metrics_ms: f64,
}

pub fn bench(tenants: &[usize], secs: u64, intervals: Option<IntervalMethod>) -> Result<()> {
    if !shaper::lab::is_root() {
        bail!("bench agent builds a lab and loads XDP: run it as root");
    }
    let mut reports = Vec::new();
    for &n in tenants {
        let r = one(n, secs, intervals).with_context(|| format!("{n} tenants"))?;
        print_one(&r);
        reports.push(r);
    }
    println!(
        "\n| tenants | first cycle | cycle p50 / p99 | collect | plan | write | record | publish | overruns | RSS per tenant | one-tenant reload (median of 5) | /v1/health p50 / p99 (scraped) | /metrics |"
    );
    println!(
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for r in &reports {
        let stage = |name: &str| {
            r.stages
                .iter()
                .find(|s| s.0 == name)
                .map_or("-".to_string(), |s| format!("{:.0} / {:.0} ms", s.1, s.2))
        };
        println!(
            "| {} | {:.1} s | {} | {} | {} | {} | {} | {} | {} of {} | {:.1} kB | {:.0} ms | {:.1} / {:.1} ms | {:.0} ms |",
            r.tenants,
            r.first_cycle_s,
            stage("cycle"),
            stage("collect"),
            stage("plan"),
            stage("write"),
            stage("record"),
            stage("publish"),
            r.overruns,
            r.cycles,
            r.rss_bytes as f64 / r.tenants as f64 / 1e3,
            r.reload_ms,
            r.health_p50_ms,
            r.health_p99_ms,
            r.metrics_ms,
        );
    }
    Ok(())
}

fn print_one(r: &Report) {
    println!(
        "{} tenants: first cycle after {:.1} s; {} cycles, {} overruns; RSS {:.0} MB ({:.1} kB per tenant); reload {:.0} ms; health p50 {:.1} ms p99 {:.1} ms",
        r.tenants,
        r.first_cycle_s,
        r.cycles,
        r.overruns,
        r.rss_bytes as f64 / 1e6,
        r.rss_bytes as f64 / r.tenants as f64 / 1e3,
        r.reload_ms,
        r.health_p50_ms,
        r.health_p99_ms
    );
    for (s, p50, p99) in &r.stages {
        println!("  {s:>8}: p50 {p50:.1} ms, p99 {p99:.1} ms");
    }
}

/// The default config with `n` /32 tenants; tenant 0 owns the lab's 10.200.1.0/24 (synthetic
/// tenants stay below 10.16/12 up to a million).
fn config(n: usize, dir: &Path, intervals: Option<IntervalMethod>) -> Config {
    let mut cfg = synthetic(
        n as u32,
        Rate(400_000_000_000),
        Rate(100_000_000),
        Size(128_000),
    );
    cfg.tenants[0].prefixes = vec!["10.200.1.0/24".into()];
    cfg.api.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.api.socket = dir.join("api.sock");
    cfg.history.path = dir.join("history.db");
    // The agent issue's million-tenant case is judged at a 5 s interval.
    if n >= 1_000_000 {
        cfg.forecast.interval_ms = 5_000;
    }
    if let Some(m) = intervals {
        cfg.forecast.intervals = m;
    }
    cfg
}

/// One-tenant reloads timed per size.
const RELOADS: usize = 5;

fn one(n: usize, secs: u64, intervals: Option<IntervalMethod>) -> Result<Report> {
    let dir = std::env::temp_dir().join(shaper::lab::unique_name("shaper-agent-"));
    std::fs::create_dir_all(&dir)?;
    let lab = Lab::new(&["10.200.1"], &[]).context("building the lab")?;
    let mut cfg = config(n, &dir, intervals);
    let path = dir.join("agent.json");
    write_private(&path, &serde_json::to_string(&cfg)?)?;
    let started = Instant::now();
    let agent = start(&lab, &path, &dir.join("run.log"), n)?;
    let addr = wait_for(|| shaper::agent::StateDir::new(&lab.dut_if).api_addr(), 120)?;
    wait_for(|| (health(addr).ok()?.cycles >= 1).then_some(()), 300)?;
    let first_cycle_s = started.elapsed().as_secs_f64();
    // Live traffic to tenant 0 for the whole measurement.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (ns, dut, stop) = (lab.src.name.clone(), lab.dut.name.clone(), stop.clone());
        let to = SocketAddr::new(IpAddr::from([10, 200, 1, 1]), 9000);
        std::thread::spawn(move || {
            let f = Flood {
                netns: ns,
                dst: to,
                rate_bits: Some(50_000_000),
                payload: 1400,
                duration: Duration::from_secs(secs + 30),
                cpu: None,
            };
            traffic::run_flows(&dut, &[f], &stop)
        })
    };
    let scraping = Arc::new(AtomicBool::new(true));
    let scraper = {
        let scraping = scraping.clone();
        std::thread::spawn(move || {
            let mut took = Vec::new();
            while scraping.load(Ordering::Relaxed) {
                let t = Instant::now();
                if shaper::api::request(addr, "GET", "/metrics", None).is_ok() {
                    took.push(t.elapsed().as_secs_f64() * 1e3);
                }
                std::thread::sleep(Duration::from_secs(1).saturating_sub(t.elapsed()));
            }
            took
        })
    };
    let (stages, latencies, last) = sample(addr, secs)?;
    scraping.store(false, Ordering::Relaxed);
    let metrics = scraper
        .join()
        .map_err(|_| anyhow::anyhow!("scraper panicked"))?;
    let rss_bytes = crate::compare::process_memory(agent.child.id()).0;
    // One tenant's rate changes, five times (back and forth, a second apart); the reload's
    // answer comes once it is applied. The median is reported: one reload is at the mercy of
    // whatever else the two cores were doing.
    let mut reloads = Vec::new();
    for k in 0..RELOADS {
        cfg.tenants[n / 2].rate = Rate(if k % 2 == 0 { 90_000_000 } else { 100_000_000 });
        write_private(&path, &serde_json::to_string(&cfg)?)?;
        let t = Instant::now();
        let (code, body) = shaper::api::request_socket(
            &dir.join("api.sock"),
            "POST",
            "/v1/reload",
            None,
            Duration::from_secs(120),
        )?;
        reloads.push(t.elapsed().as_secs_f64() * 1e3);
        if code != 200 {
            bail!("reload refused: {body}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    println!(
        "{n} tenants, one-tenant reloads: {}",
        reloads
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    reloads.sort_by(f64::total_cmp);
    let reload_ms = reloads[reloads.len() / 2];
    // The agent's own account of each: applied (load, diff and writes) and in total; with
    // RUST_LOG=info,shaper::agent::reload=debug, the load and the writes apart.
    for line in std::fs::read_to_string(dir.join("run.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("config reloaded") || l.contains("reload applied"))
    {
        println!("{n} tenants, the agent's reload line: {}", line.trim());
    }
    stop.store(true, Ordering::Relaxed);
    let _ = traffic.join();
    drop(agent);
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Report {
        tenants: n,
        first_cycle_s,
        stages,
        cycles: last.cycles,
        overruns: last.overruns,
        rss_bytes,
        reload_ms,
        health_p50_ms: percentile(&latencies, 0.5),
        health_p99_ms: percentile(&latencies, 0.99),
        metrics_ms: percentile(&metrics, 0.5),
    })
}

/// `shaper run` for `n` tenants; returns once attached.
fn start(lab: &Lab, config: &Path, log: &Path, n: usize) -> Result<AgentProcess> {
    let max = n.max(1024).to_string();
    crate::lab::start_agent(lab, config, log, &["--max-tenants", &max])
}

/// What `/v1/health` says of the cycles.
#[derive(Clone, Debug, Default)]
struct Health {
    cycles: u64,
    overruns: u64,
    last_cycle_ms: f64,
    stage_ms: Vec<(String, f64)>,
}

fn health(addr: SocketAddr) -> Result<Health> {
    let (_, body) = shaper::api::request(addr, "GET", "/v1/health", None)?;
    let v: serde_json::Value = serde_json::from_str(&body)?;
    let h = &v["health"];
    Ok(Health {
        cycles: h["cycles"].as_u64().unwrap_or(0),
        overruns: h["overruns"].as_u64().unwrap_or(0),
        last_cycle_ms: h["last_cycle_ms"].as_f64().unwrap_or(0.0),
        stage_ms: h["stage_ms"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(0.0)))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

type Sampled = (Vec<(String, f64, f64)>, Vec<f64>, Health);

/// Probes `/v1/health` every 100 ms for `secs`: each new cycle's stage times (p50, p99 per
/// stage) and every probe's latency.
fn sample(addr: SocketAddr, secs: u64) -> Result<Sampled> {
    let mut per_stage: Vec<(String, Vec<f64>)> = Vec::new();
    let mut latencies = Vec::new();
    let mut last = health(addr)?;
    // Each cycle's stages on stderr, to see where a p99 comes from.
    let each = std::env::var_os("BENCH_EACH_CYCLE").is_some();
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        let Ok(h) = health(addr) else {
            latencies.push(f64::INFINITY);
            continue;
        };
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
        if h.cycles > last.cycles {
            if each {
                eprintln!(
                    "cycle {}: {:.1} ms {:?}",
                    h.cycles, h.last_cycle_ms, h.stage_ms
                );
            }
            let stages = h
                .stage_ms
                .iter()
                .cloned()
                .chain([("cycle".to_string(), h.last_cycle_ms)]);
            for (s, ms) in stages {
                match per_stage.iter_mut().find(|x| x.0 == s) {
                    Some(x) => x.1.push(ms),
                    None => per_stage.push((s, vec![ms])),
                }
            }
        }
        last = h;
    }
    let stages = per_stage
        .into_iter()
        .map(|(s, v)| (s, percentile(&v, 0.5), percentile(&v, 0.99)))
        .collect();
    Ok((stages, latencies, last))
}

fn percentile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Polls `f` every 100 ms until it gives a value, for at most `secs`.
fn wait_for<T>(mut f: impl FnMut() -> Option<T>, secs: u64) -> Result<T> {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > end {
            bail!("timed out after {secs} s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
