//! `cargo xtask replay`: a trace through the real datapath. Builds a namespace lab, runs
//! `shaper run` on the receiving veth under each policy in turn, and sends every tenant's UDP
//! at the rates the trace prescribes, one trace cycle per second. The agent's history store
//! is then scored with the simulator's measures (`shaper::simulate::score`), so the numbers
//! compare with `shaper simulate` on the same trace.
//!
//! Forecasters need days of history, which cannot be replayed in real time: the cycles before
//! the replayed window are written into the history store first, and `shaper run` warm-starts
//! from them, the same for every policy.
//!
//! With `--bottleneck`, the link is real: after the shaper's XDP, the receiving side's ingress
//! is redirected to an IFB whose TBF runs at the link's capacity (a FIFO that drops every
//! tenant alike when the shaper lets more through than the link carries), and what each
//! tenant's receiver got per second is scored. `htb` then runs no shaper: an HTB tree with
//! the config's rates, ceilings and tier priorities under the TBF.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use shaper::config::{Config, PolicyMode};
use shaper::lab::Lab;
use shaper::lab::traffic::{Sink, start_schedules};
use shaper::simulate::{SimPolicy, SimResult, Trace, score, simulate};
use shaper::store::{Row, Store, unix_now};

use crate::lab::{start_agent, write_private};

pub struct Args<'a> {
    pub bottleneck: bool,
    /// The link's capacity, Mbit/s before scaling, instead of the config's.
    pub capacity_mbit: Option<u64>,
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

/// What runs on the lab: one of the agent's policies, with drop precedence on or off, or HTB
/// alone as the link.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Policy {
    Agent(PolicyMode, bool),
    Htb,
}

impl Policy {
    /// `static` (precedence off: the plain per-tenant policer), `static+dp`, `reactive`,
    /// `predictive` (precedence on, the default), `htb`.
    fn parse(s: &str) -> Result<Policy> {
        Ok(match s {
            "htb" => Policy::Htb,
            "static" => Policy::Agent(PolicyMode::Static, false),
            "static+dp" => Policy::Agent(PolicyMode::Static, true),
            other => Policy::Agent(
                serde_json::from_value(serde_json::Value::String(other.to_string()))
                    .context("--policies: static, static+dp, reactive, predictive or htb")?,
                true,
            ),
        })
    }

    fn name(self) -> String {
        match self {
            Policy::Htb => "htb".into(),
            Policy::Agent(PolicyMode::Static, true) => "static+dp".into(),
            Policy::Agent(m, _) => format!("{m:?}").to_lowercase(),
        }
    }
}

/// The config as replayed: one trace cycle per second (season and horizon kept in cycles),
/// rates and capacity scaled, history and API in `dir`.
fn replay_config(
    cfg: &Config,
    (policy, precedence): (PolicyMode, bool),
    scale: f64,
    dir: &Path,
) -> Result<Config> {
    let mut c = cfg.clone();
    c.policy.drop_precedence = precedence;
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

/// The link after the shaper: the dut's ingress redirected to an IFB, and on it a TBF at the
/// link's capacity, or (`htb`) an HTB tree of the tenants under the link.
fn bottleneck(lab: &Lab, cfg: &Config, htb: bool, dir: &Path) -> Result<()> {
    let ns = &lab.dut.name;
    let ifb = format!("{}i", lab.dut_if);
    shaper::lab::ip(&["-n", ns, "link", "add", &ifb, "type", "ifb"])?;
    shaper::lab::ip(&["-n", ns, "link", "set", &ifb, "txqueuelen", "1000", "up"])?;
    let dev = &lab.dut_if;
    crate::lab::tc(
        ns,
        &["qdisc", "add", "dev", dev, "handle", "ffff:", "ingress"],
    )?;
    crate::lab::tc(
        ns,
        &[
            "filter", "add", "dev", dev, "parent", "ffff:", "protocol", "all", "u32", "match",
            "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", &ifb,
        ],
    )?;
    // The link carries `capacity` of IP bytes (what the shaper counts); the TBF counts the
    // Ethernet header too.
    let ip = (PAYLOAD + 28) as f64;
    let link = (cfg.link.capacity.bits_per_sec() as f64 * (ip + 14.0) / ip) as u64;
    // 4 ms of the link, at least a few full-size packets.
    let burst = (link / 8 / 250).max(32_000);
    crate::lab::tc(
        ns,
        &[
            "qdisc",
            "add",
            "dev",
            &ifb,
            "root",
            "handle",
            "1:",
            "tbf",
            "rate",
            &format!("{link}bit"),
            "burst",
            &burst.to_string(),
            "latency",
            "20ms",
        ],
    )?;
    if !htb {
        return Ok(());
    }
    // HTB under the TBF: the TBF is the line, HTB dequeues when it may send, classes under
    // their rate first, by priority, as on a real NIC. (HTB alone does not hold children
    // under their own rates to their parent's: an overbooked tree passes its whole total.)
    use std::fmt::Write as _;
    let mut b = String::new();
    writeln!(b, "qdisc add dev {ifb} parent 1:1 handle 2: htb default ff")?;
    writeln!(
        b,
        "class add dev {ifb} parent 2: classid 2:1 htb rate {link}bit ceil {link}bit burst {burst}b cburst {burst}b"
    )?;
    writeln!(
        b,
        "class add dev {ifb} parent 2:1 classid 2:ff htb rate 1mbit ceil {link}bit prio 7"
    )?;
    for (i, (t, (net, _))) in cfg.tenants.iter().zip(targets(cfg)?).enumerate() {
        let rate = t.rate.bits_per_sec();
        let tier = cfg.tiers.get(&t.tier);
        let ceil = match (t.ceil, tier.is_some_and(|x| x.borrow)) {
            (Some(c), true) => c.bits_per_sec().max(rate),
            _ => rate,
        };
        // HTB's prio 0 is served first: platinum (priority 3) gets 0.
        let prio = 3 - tier.map_or(0, |x| x.priority.min(3));
        let tb = t.burst.bytes();
        writeln!(
            b,
            "class add dev {ifb} parent 2:1 classid 2:{:x} htb rate {rate}bit ceil {ceil}bit burst {tb}b cburst {tb}b prio {prio}",
            i + 16
        )?;
        writeln!(
            b,
            "filter add dev {ifb} parent 2: prio 1 protocol ip u32 match ip dst {net}.0/24 flowid 2:{:x}",
            i + 16
        )?;
    }
    let path = dir.join("htb.batch");
    std::fs::write(&path, b)?;
    crate::lab::tc(ns, &["-batch", &path.display().to_string()])?;
    Ok(())
}

/// One policy over the window: returns the scored history and the bytes the senders sent.
fn run_one(trace: &Trace, base: &Config, policy: Policy, a: &Args, dir: &Path) -> Result<Run> {
    std::fs::create_dir_all(dir)?;
    let mode = match policy {
        Policy::Agent(m, dp) => (m, dp),
        Policy::Htb => (PolicyMode::Static, false),
    };
    let mut base = base.clone();
    if let Some(m) = a.capacity_mbit {
        base.link.capacity = shaper::units::Rate(m * 1_000_000);
    }
    let cfg = replay_config(&base, mode, a.scale, dir)?;
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
                .map(|(t, &k)| Row::unshaped(ts, &t.name, trace.offered[k][c] * a.scale))
                .collect();
            store.append(&rows)?;
        }
    }
    if a.bottleneck || policy == Policy::Htb {
        bottleneck(&lab, &cfg, policy == Policy::Htb, dir)?;
    }
    let agent = match policy {
        Policy::Agent(..) => Some(start_agent(&lab, &path, &dir.join("run.log"), &[])?),
        Policy::Htb => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let window = Duration::from_secs(a.cycles as u64);
    let epoch = Instant::now();
    let sinks = targets
        .iter()
        .map(|(_, dst)| {
            Ok(Sink::bind(&lab.dut.name, *dst)?.start_binned(
                Some((epoch, Duration::from_secs(1))),
                window + Duration::from_secs(3),
                stop.clone(),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let started = unix_now();
    let scaled: Vec<Vec<f64>> = idx
        .iter()
        .map(|&k| {
            trace.offered[k][a.from..a.from + a.cycles]
                .iter()
                .map(|b| b * a.scale)
                .collect()
        })
        .collect();
    let senders = start_schedules(
        &lab.src.name,
        targets
            .iter()
            .zip(&scaled)
            .map(|((_, dst), s)| (*dst, s.as_slice())),
        PAYLOAD,
        &stop,
    );
    let mut sent_each = Vec::new();
    for s in senders {
        let s = s.join().map_err(|_| anyhow::anyhow!("sender panicked"))??;
        sent_each.push(s.bytes as f64);
    }
    let sent = sent_each.iter().sum();
    // Two more cycles so the last interval is recorded.
    std::thread::sleep(Duration::from_millis(2500));
    // What the shaper dropped of each tenant over the whole run (its counters since attach).
    let shaper_dropped = match agent {
        Some(_) => Some(dropped_at_shaper(&cfg)?),
        None => None,
    };
    drop(agent);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut received = Vec::new();
    for s in sinks {
        received.push(s.join().map_err(|_| anyhow::anyhow!("sink panicked"))??);
    }
    let name = policy.name();
    // What the shaper itself let through, from the agent's history (its XDP counters).
    let at_shaper = match policy {
        Policy::Agent(..) => Some(scored_history(&cfg, &lab.dut_if, &name, started, a.cycles)?),
        Policy::Htb => None,
    };
    if a.bottleneck || policy == Policy::Htb {
        // What each receiver got per second against what its sender was told to send: the
        // link is after the shaper, so the agent's counters no longer say what passed.
        let link = LinkLoss {
            tbf_drops: tbf_drops(&lab)?,
            // Per tenant: sent, less what the shaper (if any) dropped, less what arrived
            // (every bin, the seconds after the window included).
            lost_after: (0..cfg.tenants.len())
                .map(|i| {
                    let shaped = shaper_dropped.as_ref().map_or(0.0, |d| d[i]);
                    sent_each[i] - shaped - received[i].bytes as f64
                })
                .collect(),
        };
        let offered = scaled;
        let passed: Vec<Vec<f64>> = received
            .iter()
            .map(|r| {
                (0..a.cycles)
                    .map(|c| r.bins.get(c).copied().unwrap_or(0) as f64)
                    .collect()
            })
            .collect();
        drop(lab);
        return Ok(Run {
            result: score(&cfg, &name, 1.0, &offered, &passed),
            at_shaper,
            link: Some(link),
            sent,
            cfg,
        });
    }
    drop(lab);
    let result = at_shaper.context("the agent's history")?;
    Ok(Run {
        result,
        at_shaper: None,
        link: None,
        sent,
        cfg,
    })
}

/// One policy's run over the window.
struct Run {
    /// Scored on what arrived (with a bottleneck: at the receivers, one-second bins), else on
    /// the agent's counters.
    result: SimResult,
    /// With a bottleneck, the same window scored on the shaper's own counters: what the
    /// shaper dropped, before the link dropped anything.
    at_shaper: Option<SimResult>,
    /// With a bottleneck, what was lost after the shaper.
    link: Option<LinkLoss>,
    /// Bytes the senders sent.
    sent: f64,
    /// The config as replayed.
    cfg: Config,
}

/// What a bottleneck run lost after the shaper.
struct LinkLoss {
    /// Packets the bottleneck's TBF dropped.
    tbf_drops: u64,
    /// Per tenant: bytes sent that the shaper (if any) did not drop and no receiver got, over
    /// the whole run (the link's drops, HTB's, the host's).
    lost_after: Vec<f64>,
}

/// The agent's history over the window (its first cycle, which spans the start, skipped),
/// scored as the simulator scores.
fn scored_history(
    cfg: &Config,
    iface: &str,
    name: &str,
    started: f64,
    cycles: usize,
) -> Result<SimResult> {
    let store = Store::open(&cfg.history.path, iface)?;
    let rows = store.since(None, started + 1.0)?;
    let end = started + cycles as f64 + 1.0;
    let mut offered = vec![Vec::new(); cfg.tenants.len()];
    let mut passed = vec![Vec::new(); cfg.tenants.len()];
    for r in rows.iter().filter(|r| r.ts <= end) {
        if let Some(i) = cfg.tenants.iter().position(|t| t.name == r.tenant) {
            offered[i].push(r.offered);
            passed[i].push(r.passed);
        }
    }
    Ok(score(cfg, name, 1.0, &offered, &passed))
}

/// Each tenant's dropped bytes since the agent attached, from its `/v1/stats`.
fn dropped_at_shaper(cfg: &Config) -> Result<Vec<f64>> {
    let (_, body) = shaper::api::request_socket(
        &cfg.api.socket,
        "GET",
        "/v1/stats",
        None,
        Duration::from_secs(5),
    )
    .context("the agent's /v1/stats")?;
    let v: serde_json::Value = serde_json::from_str(&body)?;
    let tenants = v["tenants"]
        .as_array()
        .context("/v1/stats without tenants")?;
    cfg.tenants
        .iter()
        .map(|t| {
            tenants
                .iter()
                .find(|x| x["name"] == t.name.as_str())
                .and_then(|x| x["dropped_bytes"].as_u64())
                .map(|b| b as f64)
                .with_context(|| format!("/v1/stats has no {}", t.name))
        })
        .collect()
}

/// The packets the bottleneck's TBF dropped (its qdisc statistics).
fn tbf_drops(lab: &Lab) -> Result<u64> {
    let ifb = format!("{}i", lab.dut_if);
    let out = crate::lab::tc(&lab.dut.name, &["-s", "-j", "qdisc", "show", "dev", &ifb])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("tc -j qdisc show: not JSON")?;
    v.as_array()
        .and_then(|qs| qs.iter().find(|q| q["kind"] == "tbf"))
        .and_then(|q| q["drops"].as_u64())
        .context("no TBF statistics on the bottleneck")
}

/// With a bottleneck, where the bytes were lost: at the shaper (its own counters, scored
/// per cycle), at the link's TBF, or elsewhere after the shaper (the receiving host: socket
/// buffers), the protected tiers' (gold, platinum) apart.
fn after_shaper(cfg: &Config, at: Option<&SimResult>, link: Option<&LinkLoss>) -> Option<String> {
    let LinkLoss {
        tbf_drops: drops,
        lost_after: lost,
    } = link?;
    let drops = *drops;
    // IP bytes, as the shaper and the receivers count them.
    let link_mb = drops as f64 * (PAYLOAD + 28) as f64 / 1e6;
    let mut line = format!("the link's TBF dropped {drops} packets ({link_mb:.2} MB)");
    if let Some(s) = at {
        line = format!(
            "at the shaper: in-prof drop {:.3} MB, violations {}, onset drop {:.3} MB; {line}",
            s.in_profile_dropped_bytes / 1e6,
            s.violations,
            s.onset_dropped_bytes / 1e6,
        );
    }
    let top: f64 = shaper::planner::profiles(cfg)
        .iter()
        .zip(lost)
        .filter(|(p, _)| shaper::allocate::protected(p.priority))
        .map(|(_, l)| l)
        .sum();
    let all: f64 = lost.iter().sum();
    let place = if at.is_some() {
        "after the shaper"
    } else {
        "in the tree and after"
    };
    line += &format!(
        "; lost {place} {:.3} MB, gold/platinum {:.3} MB",
        all / 1e6,
        top / 1e6
    );
    Some(line)
}

/// The simulator on the replayed window, under the same config as replayed (one cycle a
/// second, rates scaled): run over the warm-up and the window, less the same run over the
/// warm-up alone (it is deterministic), so each tenant's totals are the window's.
fn simulated(trace: &Trace, cfg: &Config, policy: Policy, a: &Args) -> Result<SimResult> {
    let first = a.from.saturating_sub(a.warm);
    let cut = |end: usize| Trace {
        interval_s: 1.0,
        start: trace.start,
        tenants: trace.tenants.clone(),
        offered: trace
            .offered
            .iter()
            .map(|s| s[first..end].iter().map(|b| b * a.scale).collect())
            .collect(),
    };
    let sim = match policy {
        Policy::Agent(m, _) => SimPolicy::Mode(m),
        Policy::Htb => SimPolicy::Htb,
    };
    let run = |t: &Trace| simulate(t, cfg, sim).map_err(|e| anyhow::anyhow!(e));
    let mut all = run(&cut(a.from + a.cycles))?;
    if a.from > first {
        let before = run(&cut(a.from))?;
        for (t, b) in all.tenants.iter_mut().zip(&before.tenants) {
            t.offered_bytes -= b.offered_bytes;
            t.passed_bytes -= b.passed_bytes;
            t.onset_bytes -= b.onset_bytes;
            t.onset_dropped_bytes -= b.onset_dropped_bytes;
        }
        all.onset_dropped_bytes -= before.onset_dropped_bytes;
    }
    Ok(all)
}

/// Each tenant's passed bytes on veth against the simulator's: the largest gap, as a share of
/// the simulator's, and whose it is.
fn largest_gap(veth: &SimResult, sim: &SimResult) -> (f64, String) {
    veth.tenants
        .iter()
        .zip(&sim.tenants)
        .map(|(v, s)| {
            let gap = (v.passed_bytes - s.passed_bytes).abs() / s.passed_bytes.max(1.0);
            (gap, v.name.clone())
        })
        .fold((0.0, String::new()), |b, x| if x.0 > b.0 { x } else { b })
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
    let policies: Vec<Policy> = a
        .policies
        .iter()
        .map(|p| Policy::parse(p))
        .collect::<Result<_>>()?;
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
        "{:>6} {:>11} {:>10} {:>10} {:>12} {:>10} {:>11} {:>6} {:>12} {:>12} {:>16}",
        "round",
        "policy",
        "sent MB",
        "offered MB",
        "in-prof drop",
        "violations",
        "utilization",
        "jain",
        "onset drop",
        "sim onset",
        "sim passed gap"
    );
    let mut all = Vec::new();
    for round in 0..a.rounds {
        for &p in &policies {
            let dir = scratch.join(format!("{round}-{}", p.name()));
            let Run {
                result: r,
                at_shaper,
                link,
                sent,
                cfg: replayed,
            } = run_one(&trace, &cfg, p, a, &dir)?;
            let sim = simulated(&trace, &replayed, p, a)?;
            let (gap, who) = largest_gap(&r, &sim);
            println!(
                "{:>6} {:>11} {:>10.1} {:>10.1} {:>9.3} MB {:>10} {:>10.1}% {:>6.3} {:>9.3} MB {:>9.3} MB {:>9.1}% {who}",
                round,
                r.policy,
                sent / 1e6,
                r.offered_bytes / 1e6,
                r.in_profile_dropped_bytes / 1e6,
                r.violations,
                r.link_utilization * 100.0,
                r.jain_fairness,
                r.onset_dropped_bytes / 1e6,
                sim.onset_dropped_bytes / 1e6,
                gap * 100.0
            );
            if let Some(line) = after_shaper(&replayed, at_shaper.as_ref(), link.as_ref()) {
                println!("{:>6} {line}", "");
            }
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
