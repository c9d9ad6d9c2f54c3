//! `cargo xtask replay`: a trace through the real datapath. Builds a namespace lab, runs
//! `shaper run` on the receiving veth under each policy in turn, and sends every tenant's UDP
//! at the rates the trace prescribes, one trace cycle per second. The agent's history store
//! is then scored with the simulator's measures (`shaper::simulate::score`), so the numbers
//! compare with `shaper simulate` on the same trace.
//!
//! Forecasters need days of history, which cannot be replayed in real time: the cycles before
//! the replayed window are written into the history store first, and `shaper run` warm-starts
//! from them, the same for every policy.
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use shaper::config::{Config, PolicyMode};
use shaper::lab::traffic::{Sink, start_schedule};
use shaper::lab::{AgentProcess, Lab};
use shaper::simulate::{SimResult, Trace, score};
use shaper::store::{Row, Store, unix_now};

pub struct Args<'a> {
    pub trace: &'a Path,
    pub config: &'a Path,
    pub policies: &'a [String],
    pub from: usize,
    pub cycles: usize,
    pub warm: usize,
    pub scale: f64,
    pub rounds: usize,
}

const PAYLOAD: usize = 1400;
const PORT: u16 = 9000;

/// The config as replayed: one trace cycle per second (season and horizon kept in cycles),
/// rates and capacity scaled, history and API in `dir`.
fn replay_config(cfg: &Config, policy: PolicyMode, scale: f64, dir: &Path) -> Result<Config> {
    let mut c = cfg.clone();
    let interval_s = cfg.forecast.interval_ms as f64 / 1000.0;
    let cycles = |secs: u64| ((secs as f64 / interval_s).round() as u64).max(1);
    c.forecast.season_s = cycles(cfg.forecast.season_s).max(2);
    c.forecast.horizon_s = cycles(cfg.forecast.horizon_s);
    c.forecast.interval_ms = 1000;
    c.policy.mode = policy;
    let sc = |r: shaper::units::Rate| shaper::units::Rate((r.0 as f64 * scale) as u64);
    c.link.capacity = sc(c.link.capacity);
    for t in &mut c.tenants {
        t.rate = sc(t.rate);
        t.ceil = t.ceil.map(sc);
    }
    c.history.path = dir.join("history.db");
    c.api.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.api.socket = dir.join("api.sock");
    c.validate().context("the scaled config")?;
    Ok(c)
}

/// The first address of each tenant's first IPv4 prefix (the lab puts .1 on the dut side).
fn targets(cfg: &Config) -> Result<Vec<(String, SocketAddr)>> {
    cfg.tenants
        .iter()
        .map(|t| {
            let net = t
                .prefixes
                .iter()
                .find_map(|p| match shaper::config::Prefix::parse(p) {
                    Ok(shaper::config::Prefix::V4(a, _)) => Some(a.octets()),
                    _ => None,
                })
                .with_context(|| format!("tenant {} has no IPv4 prefix", t.name))?;
            Ok((
                format!("{}.{}.{}", net[0], net[1], net[2]),
                SocketAddr::new(IpAddr::V4(Ipv4Addr::new(net[0], net[1], net[2], 1)), PORT),
            ))
        })
        .collect()
}

/// Writes a config the agent accepts whatever the umask: `shaper run` refuses world-writable
/// configs.
pub(crate) fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

pub(crate) fn start_agent(
    lab: &Lab,
    config: &Path,
    log: &Path,
    extra: &[&str],
) -> Result<AgentProcess> {
    let exe = std::env::current_exe()?;
    let shaper = exe.with_file_name("shaper");
    if !shaper.exists() {
        bail!(
            "{} is missing: cargo build --release first",
            shaper.display()
        );
    }
    let err = std::fs::File::create(log)?;
    let child = Command::new(&shaper)
        .args(["run", "--iface", &lab.dut_if, "--netns", &lab.dut.name])
        .args(extra)
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .context("starting shaper run")?;
    let mut agent = AgentProcess::new(child, &lab.dut_if);
    let start = Instant::now();
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains("forecasters warm-started")
        && !std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains("shaper attached")
    {
        if start.elapsed() > Duration::from_secs(60) || agent.child.try_wait()?.is_some() {
            bail!(
                "shaper run did not start: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(agent)
}

/// One policy over the window: returns the scored history and the bytes the senders sent.
fn run_one(
    trace: &Trace,
    base: &Config,
    policy: PolicyMode,
    a: &Args,
    dir: &Path,
) -> Result<(SimResult, f64)> {
    std::fs::create_dir_all(dir)?;
    let cfg = replay_config(base, policy, a.scale, dir)?;
    let path = dir.join("config.json");
    write_private(&path, &serde_json::to_string_pretty(&cfg)?)?;
    let idx = trace.indices(&cfg).map_err(|e| anyhow::anyhow!(e))?;
    let targets = targets(&cfg)?;
    let nets: Vec<&str> = targets.iter().map(|(n, _)| n.as_str()).collect();
    let lab = Lab::new(&nets, &[]).context("building the lab")?;
    // History before the window, ending now: the agent warm-starts from it.
    let now = unix_now();
    let first = a.from.saturating_sub(a.warm);
    {
        let mut store = Store::open(&cfg.history.path, &lab.dut_if)?;
        for c in first..a.from {
            let ts = now - (a.from - c) as f64;
            let rows: Vec<Row> = cfg
                .tenants
                .iter()
                .zip(&idx)
                .map(|(t, &k)| {
                    let offered = trace.offered[k][c] * a.scale;
                    Row {
                        ts,
                        tenant: t.name.clone(),
                        offered,
                        passed: offered,
                        dropped: 0.0,
                        forecast: None,
                        fill: None,
                        pre: None,
                    }
                })
                .collect();
            store.append(&rows)?;
        }
    }
    let agent = start_agent(&lab, &path, &dir.join("run.log"), &[])?;
    let stop = Arc::new(AtomicBool::new(false));
    let window = Duration::from_secs(a.cycles as u64);
    let sinks = targets
        .iter()
        .map(|(_, dst)| {
            Ok(Sink::bind(&lab.dut.name, *dst)?
                .start(window + Duration::from_secs(3), stop.clone()))
        })
        .collect::<Result<Vec<_>>>()?;
    let started = unix_now();
    let senders: Vec<_> = targets
        .iter()
        .zip(&idx)
        .map(|((_, dst), &k)| {
            let rates: Vec<u64> = trace.offered[k][a.from..a.from + a.cycles]
                .iter()
                .map(|b| (b * a.scale * 8.0) as u64)
                .collect();
            start_schedule(
                lab.src.name.clone(),
                *dst,
                PAYLOAD,
                Duration::from_secs(1),
                rates,
                stop.clone(),
            )
        })
        .collect();
    let mut sent = 0.0;
    for s in senders {
        let s = s.join().map_err(|_| anyhow::anyhow!("sender panicked"))??;
        sent += s.bytes as f64;
    }
    // Two more cycles so the last interval is recorded.
    std::thread::sleep(Duration::from_millis(2500));
    drop(agent);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in sinks {
        let _ = s.join();
    }
    let store = Store::open(&cfg.history.path, &lab.dut_if)?;
    // Skip the first cycle (it spans the start), keep the window.
    let rows = store.since(None, started + 1.0)?;
    let end = started + a.cycles as f64 + 1.0;
    let mut offered = vec![Vec::new(); cfg.tenants.len()];
    let mut passed = vec![Vec::new(); cfg.tenants.len()];
    for r in rows.iter().filter(|r| r.ts <= end) {
        if let Some(i) = cfg.tenants.iter().position(|t| t.name == r.tenant) {
            offered[i].push(r.offered);
            passed[i].push(r.passed);
        }
    }
    drop(lab);
    let name = format!("{policy:?}").to_lowercase();
    Ok((score(&cfg, &name, 1.0, &offered, &passed), sent))
}

pub fn replay(a: &Args) -> Result<()> {
    if !shaper::lab::is_root() {
        bail!("replay builds network namespaces and loads XDP: run it as root");
    }
    let trace = Trace::from_csv(
        &std::fs::read_to_string(a.trace).with_context(|| a.trace.display().to_string())?,
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", a.trace.display()))?;
    let cfg = Config::load(a.config)?;
    if a.from + a.cycles > trace.cycles() {
        bail!(
            "--from {} + --cycles {} is beyond the trace's {} cycles",
            a.from,
            a.cycles,
            trace.cycles()
        );
    }
    let policies: Vec<PolicyMode> = a
        .policies
        .iter()
        .map(|p| serde_json::from_value(serde_json::Value::String(p.clone())))
        .collect::<Result<_, _>>()
        .context("--policies: static, reactive or predictive")?;
    let scratch: PathBuf = std::env::temp_dir().join(shaper::lab::unique_name("shaper-replay-"));
    println!(
        "trace {} cycles {}..{} ({} s each on the wire), {} cycles of history before, rates x{}",
        a.trace.display(),
        a.from,
        a.from + a.cycles,
        1,
        a.from - a.from.saturating_sub(a.warm),
        a.scale
    );
    println!(
        "{:>6} {:>11} {:>10} {:>10} {:>12} {:>10} {:>11} {:>6}",
        "round",
        "policy",
        "sent MB",
        "offered MB",
        "in-prof drop",
        "violations",
        "utilization",
        "jain"
    );
    let mut all = Vec::new();
    for round in 0..a.rounds {
        for &p in &policies {
            let dir = scratch.join(format!("{round}-{p:?}"));
            let (r, sent) = run_one(&trace, &cfg, p, a, &dir)?;
            println!(
                "{:>6} {:>11} {:>10.1} {:>10.1} {:>9.3} MB {:>10} {:>10.1}% {:>6.3}",
                round,
                r.policy,
                sent / 1e6,
                r.offered_bytes / 1e6,
                r.in_profile_dropped_bytes / 1e6,
                r.violations,
                r.link_utilization * 100.0,
                r.jain_fairness
            );
            all.push((round, r));
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    println!(
        "{}",
        serde_json::to_string(
            &all.iter()
                .map(|(k, r)| serde_json::json!({"round": k, "result": r}))
                .collect::<Vec<_>>()
        )?
    );
    Ok(())
}
