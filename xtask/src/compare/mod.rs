//! `cargo xtask bench compare`: the shaper against tc HTB on an IFB device, on the same veth,
//! in the same run, alternating. HTB is set up as an operator would: an ingress `mirred`
//! redirect of everything arriving on the veth to an IFB device, an HTB root there with a
//! parent class at link rate and one class per tenant (`rate`, `ceil`, `burst`, `cburst` from
//! the same numbers as the shaper's tenant, `quantum` one MTU), a u32 filter per tenant
//! prefix (hashing filters when there are many). Both sides get the same tenants: bronze (no
//! borrowing), so each tenant's rate is all it gets. Charts (PNG) and raw results go to
//! `--out`.
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use shaper::lab::traffic::{self, Flood};
use shaper::lab::{Lab, in_ns};

use crate::lab::{start_agent, tc, write_private};
use crate::plot::{self, Panel, Series};
use shaper::lab::AgentProcess;

mod accuracy;
mod cost;
mod isolation;
mod load;
mod scale;
mod tcp;
mod wire;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Setup {
    Htb,
    Shaper {
        ecn: bool,
    },
    /// The shaper in generic (skb) XDP mode.
    ShaperSkb,
    /// The shaper with the coarse bucket clock (`--clock coarse`: jiffies, no
    /// `bpf_ktime_get_ns` per packet).
    ShaperCoarse,
    /// Nothing attached: the lab's own cost, subtracted in the cost test.
    Bare,
    /// A do-nothing XDP program on the dut's veth (XDP_DROP, or XDP_PASS): the floor a
    /// frame costs the generator, the veth and the XDP hook, whatever runs there.
    Floor {
        drop: bool,
    },
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Htb => "HTB+IFB",
            Setup::Shaper { ecn: false } => "shaper",
            Setup::Shaper { ecn: true } => "shaper+ECN",
            Setup::ShaperSkb => "shaper (skb, bursts >= 64 kB a share)",
            Setup::ShaperCoarse => "shaper (coarse clock)",
            Setup::Bare => "no shaping",
            Setup::Floor { drop: true } => "XDP_DROP",
            Setup::Floor { drop: false } => "XDP_PASS",
        }
    }
}

#[derive(Clone, Debug)]
struct Tenant {
    /// An IPv4 prefix: `10.10.N.0/24` for the lab's networks, `10.64.B.C/32` for the many
    /// tenants of the scale test.
    prefix: String,
    rate_bits: u64,
    burst_bytes: u64,
}

impl Tenant {
    /// The lab's network 10.10.`net`.0/24.
    fn net(net: u8, rate_bits: u64, burst_bytes: u64) -> Tenant {
        Tenant {
            prefix: format!("10.10.{net}.0/24"),
            rate_bits,
            burst_bytes,
        }
    }

    /// The `i`th host of the scale test's tenants (10.64.0.0 upwards).
    fn host(i: usize, rate_bits: u64, burst_bytes: u64) -> Tenant {
        Tenant {
            prefix: format!("10.{}.{}.{}/32", 64 + (i >> 16), (i >> 8) & 255, i & 255),
            rate_bits,
            burst_bytes,
        }
    }

    /// (B, C) of a `10.64.B.C/32` tenant: the ones HTB classifies through hashing filters.
    fn hashed(&self) -> Option<(u8, u8)> {
        let host = self.prefix.strip_prefix("10.64.")?.strip_suffix("/32")?;
        let (b, c) = host.split_once('.')?;
        Some((b.parse().ok()?, c.parse().ok()?))
    }
}

fn dst(net: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::from([10, 10, net, 1]), 9000)
}

/// Whatever a setup attached; removed on drop (the lab's namespaces go with the lab).
enum Attached {
    /// Held for its drop: SIGTERM detaches the shaper.
    Shaper(AgentProcess),
    Htb {
        ns: String,
        dev: String,
        ifb: String,
    },
    Bare,
    /// Held for its drop: the object's programs detach with it.
    Floor(#[expect(dead_code, reason = "held for its drop")] Box<shaper::datapath::BenchPrograms>),
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Attached::Htb { ns, dev, ifb } = self {
            let _ = shaper::lab::ip(&["-n", ns, "link", "del", ifb]);
            let _ = std::process::Command::new("tc")
                .args(["-n", ns, "qdisc", "del", "dev", dev, "ingress"])
                .output();
        }
    }
}

/// A burst generic (skb) mode accepts: it sees packets after GRO, up to 64 kB, so the agent
/// refuses a burst whose share for any token type of the default mix is smaller. The skb rows
/// run with that burst where the others' is smaller (their label says so).
fn skb_burst(burst: u64) -> u64 {
    let shares = shaper::config::TokenTypes::default().default_mix().shares();
    let least = shares.into_iter().filter(|s| *s > 0.0).fold(1.0, f64::min);
    burst.max((65_535.0 / least).ceil() as u64)
}

fn attach(lab: &Lab, setup: Setup, tenants: &[Tenant], dir: &Path) -> Result<Attached> {
    match setup {
        Setup::Bare => Ok(Attached::Bare),
        Setup::Floor { drop } => {
            let _in = shaper::datapath::NetNsEnter::enter(&lab.dut.name)?;
            let mut floor = shaper::datapath::BenchPrograms::load()?;
            let prog = if drop {
                floor.drop_mut()?
            } else {
                floor.pass_mut()?
            };
            prog.attach(&lab.dut_if, aya::programs::XdpMode::Driver)
                .context("attaching the XDP floor")?;
            Ok(Attached::Floor(Box::new(floor)))
        }
        Setup::Shaper { .. } | Setup::ShaperSkb | Setup::ShaperCoarse => {
            let ecn = setup == Setup::Shaper { ecn: true };
            let list: Vec<String> = tenants
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let burst = if setup == Setup::ShaperSkb {
                        skb_burst(t.burst_bytes)
                    } else {
                        t.burst_bytes
                    };
                    format!(
                        r#"{{"name":"t{i}","tier":"bronze","prefixes":["{}"],"rate":"{}bit","burst":"{burst}b","ecn":{ecn}}}"#,
                        t.prefix, t.rate_bits
                    )
                })
                .collect();
            let text = format!(
                r#"{{"link":{{"capacity":"100gbit"}},"tenants":[{}],
                    "policy":{{"mode":"static","adjustment_multiplier":0.5,"auto_tune":false,"max_exchange_fraction":0.5,
                               "reactive_override":{{"in_profile_drop_ratio":0.01,"cpu_busy_ratio":0.95}}}},
                    "history":{{"path":"{}","retention_days":1}},
                    "api":{{"listen":"127.0.0.1:0","socket":"{}"}}}}"#,
                list.join(","),
                dir.join("history.db").display(),
                dir.join("api.sock").display()
            );
            let path = dir.join("config.json");
            write_private(&path, &text)?;
            let mode = if setup == Setup::ShaperSkb {
                "skb"
            } else {
                "native"
            };
            // Maps sized for the tenants, as an operator sizes them (`--max-tenants`).
            let max = (tenants.len() + 1)
                .next_power_of_two()
                .max(shaper_common::DEFAULT_MAX_TENANTS as usize)
                .to_string();
            Ok(Attached::Shaper(start_agent(
                lab,
                &path,
                &dir.join("run.log"),
                &[
                    "--xdp-mode",
                    mode,
                    "--max-tenants",
                    &max,
                    "--clock",
                    if setup == Setup::ShaperCoarse {
                        "coarse"
                    } else {
                        "precise"
                    },
                ],
            )?))
        }
        Setup::Htb => {
            let ns = lab.dut.name.clone();
            let dev = lab.dut_if.clone();
            let ifb = format!("{}i", lab.dut_if);
            shaper::lab::ip(&["-n", &ns, "link", "add", &ifb, "type", "ifb"])?;
            let attached = Attached::Htb {
                ns: ns.clone(),
                dev: dev.clone(),
                ifb: ifb.clone(),
            };
            shaper::lab::ip(&["-n", &ns, "link", "set", &ifb, "up"])?;
            tc(
                &ns,
                &["qdisc", "add", "dev", &dev, "handle", "ffff:", "ingress"],
            )?;
            tc(
                &ns,
                &[
                    "filter", "add", "dev", &dev, "parent", "ffff:", "protocol", "all", "u32",
                    "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev",
                    &ifb,
                ],
            )?;
            tc(&ns, &["-batch", &htb_batch(&ifb, tenants, dir)?])?;
            Ok(attached)
        }
    }
}

/// The HTB side as one `tc -batch` file: the root (unmatched traffic to class 1:2, not held
/// back), a parent at link rate, a class per tenant (`rate` = `ceil`, `burst` = `cburst`,
/// `quantum` one MTU) and its u32 filter. Many /32 tenants are classified as LARTC's "hashing
/// filters" describe, so a packet meets a few filters instead of one per tenant: a table on
/// the third byte of the destination, linking to a table on the fourth.
fn htb_batch(ifb: &str, tenants: &[Tenant], dir: &Path) -> Result<String> {
    use std::fmt::Write as _;
    // Class minors are 16 bits: 0x10 onwards for tenants.
    if tenants.len() > 0xffff - 0x10 {
        bail!(
            "one HTB qdisc holds at most {} tenant classes (16-bit minor)",
            0xffff - 0x10
        );
    }
    let mut b = String::new();
    let hash = tenants.len() > 16;
    writeln!(b, "qdisc add dev {ifb} root handle 1: htb default 2")?;
    writeln!(
        b,
        "class add dev {ifb} parent 1: classid 1:1 htb rate 100gbit ceil 100gbit quantum 1514"
    )?;
    writeln!(
        b,
        "class add dev {ifb} parent 1:1 classid 1:2 htb rate 1gbit ceil 100gbit quantum 1514"
    )?;
    let mut hashed = Vec::new();
    for (i, t) in tenants.iter().enumerate() {
        let minor = 0x10 + i;
        let (rate, burst) = (t.rate_bits, t.burst_bytes);
        writeln!(
            b,
            "class add dev {ifb} parent 1:1 classid 1:{minor:x} htb rate {rate}bit ceil {rate}bit burst {burst}b cburst {burst}b quantum 1514"
        )?;
        match t.hashed() {
            Some(bc) if hash => hashed.push((bc, minor)),
            _ => writeln!(
                b,
                "filter add dev {ifb} parent 1: prio 1 protocol ip u32 match ip dst {} flowid 1:{minor:x}",
                t.prefix
            )?,
        }
    }
    if !hashed.is_empty() {
        let thirds: std::collections::BTreeSet<u8> = hashed.iter().map(|((b, _), _)| *b).collect();
        writeln!(
            b,
            "filter add dev {ifb} parent 1: prio 1 handle 100: protocol ip u32 divisor 256"
        )?;
        for t in &thirds {
            let h = 0x200 + usize::from(*t);
            writeln!(
                b,
                "filter add dev {ifb} parent 1: prio 1 handle {h:x}: protocol ip u32 divisor 256"
            )?;
            writeln!(
                b,
                "filter add dev {ifb} parent 1: prio 1 protocol ip u32 ht 100:{t:x}: match ip dst 10.64.{t}.0/24 hashkey mask 0x000000ff at 16 link {h:x}:"
            )?;
        }
        writeln!(
            b,
            "filter add dev {ifb} parent 1: prio 1 protocol ip u32 ht 800:: match ip dst 10.64.0.0/16 hashkey mask 0x0000ff00 at 16 link 100:"
        )?;
        for ((t, f), minor) in hashed {
            let h = 0x200 + usize::from(t);
            writeln!(
                b,
                "filter add dev {ifb} parent 1: prio 1 protocol ip u32 ht {h:x}:{f:x}: match ip dst 10.64.{t}.{f}/32 flowid 1:{minor:x}"
            )?;
        }
    }
    let path = dir.join("htb.batch");
    std::fs::write(&path, b)?;
    Ok(path.display().to_string())
}

/// The median (NaN for none); sorts `v`.
pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn spread(v: &[f64]) -> (f64, f64) {
    (
        v.iter().copied().fold(f64::INFINITY, f64::min),
        v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    )
}

/// Busy and softirq jiffies over all CPUs (`/proc/stat`).
fn cpu_jiffies() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, v.get(6).copied().unwrap_or(0))
}

fn floods(lab: &Lab, list: &[(u8, Option<u64>, usize, Option<usize>)], secs: u64) -> Vec<Flood> {
    list.iter()
        .map(|&(net, rate, payload, cpu)| Flood {
            netns: lab.src.name.clone(),
            dst: dst(net),
            rate_bits: rate,
            payload,
            duration: Duration::from_secs(secs),
            cpu,
        })
        .collect()
}

fn panel(title: &str, x: &str, y: &str, log_x: bool, series: Vec<Series>) -> Panel {
    Panel {
        title: title.to_string(),
        x: x.to_string(),
        y: y.to_string(),
        log_x,
        y_zero: true,
        series,
    }
}

fn series(name: &str, color: usize, points: Vec<(f64, f64)>, scatter: bool) -> Series {
    Series {
        name: name.to_string(),
        color,
        points,
        scatter,
    }
}

/// A setup's colour, the same in every chart.
fn color(s: Setup) -> usize {
    match s {
        Setup::Shaper { ecn: false } => 0,
        Setup::Htb => 1,
        Setup::Bare | Setup::Floor { .. } => 5,
        Setup::Shaper { ecn: true } => 2,
        Setup::ShaperSkb => 3,
        Setup::ShaperCoarse => 4,
    }
}

/// The run whose value is the median, for charts that show one run.
fn median_run<T>(runs: &[T], key: impl Fn(&T) -> f64) -> Option<&T> {
    let mut idx: Vec<usize> = (0..runs.len()).collect();
    idx.sort_by(|a, b| key(&runs[*a]).total_cmp(&key(&runs[*b])));
    idx.get(idx.len() / 2).map(|i| &runs[*i])
}

/// Frames per second one CPU turns around: a live-frames generator on CPU 0 sends 64-byte
/// frames to `dst` out of the src veth (`BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES`),
/// so the dut's veth receives XDP frames, and everything after (the shaper's XDP program, or
/// the sk_buff, tc ingress, IFB and HTB) runs on that CPU. Whatever is attached stays so.
fn wire_rate(lab: &Lab, name: &str, dst: [u8; 4], secs: u64) -> Result<f64> {
    let frame = wire_frame(lab, dst)?;
    let ifindex = shaper::lab::ifindex(&lab.src_if, Some(&lab.src.name))?;
    // What the dut's veth took off its ring (every frame the generator sent beyond a full ring
    // is dropped by the sending side, uncounted here).
    let received = || -> Result<u64> {
        let out = in_ns(&lab.dut.name, "ethtool")
            .args(["-S", &lab.dut_if])
            .output()
            .context("ethtool -S")?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.trim_start().starts_with("rx_queue_") && l.contains("_xdp_packets:"))
            .filter_map(|l| l.rsplit(':').next()?.trim().parse::<u64>().ok())
            .sum())
    };
    let before = received()?;
    let ns = lab.src.name.clone();
    let sent = std::thread::spawn(move || -> Result<(u64, f64)> {
        traffic::pin_to_cpu(0);
        let _in = shaper::datapath::NetNsEnter::enter(&ns)?;
        let mut gen_programs = shaper::datapath::BenchPrograms::load()?;
        let prog = gen_programs.generator_mut(ifindex)?;
        let start = std::time::Instant::now();
        let mut frames = 0u64;
        let repeat = 1u32 << 20;
        while start.elapsed() < Duration::from_secs(secs) {
            use aya::programs::{TestRun as _, TestRunAttrs, TestRunOptions};
            prog.test_run(TestRunOptions {
                data_in: Some(&frame),
                repeat,
                attrs: TestRunAttrs::new().xdp_live_frames(64),
                ..Default::default()
            })
            .context("BPF_PROG_TEST_RUN with live frames")?;
            frames += u64::from(repeat);
        }
        Ok((frames, start.elapsed().as_secs_f64()))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("generator thread panicked"))??;
    let got = received()? - before;
    eprintln!(
        "  {name}: generator {:.0}/s, received {:.0}/s",
        sent.0 as f64 / sent.1,
        got as f64 / sent.1
    );
    Ok(got as f64 / sent.1)
}

/// A 64-byte UDP frame from the src side to `dst`:9000, addressed to the dut's MAC.
fn wire_frame(lab: &Lab, dst: [u8; 4]) -> Result<Vec<u8>> {
    let dmac = shaper::lab::mac_of(&lab.dut.name, &lab.dut_if)?;
    let smac = shaper::lab::mac_of(&lab.src.name, &lab.src_if)?;
    Ok(crate::udp4_frame(
        (dmac, smac),
        [10, 10, 1, 2],
        dst,
        (40000, 9000),
    ))
}

/// A veth accepts XDP frames only when its receiving side runs NAPI: an XDP program does that,
/// GRO does it for the setups without one.
fn gro_on(lab: &Lab) -> Result<()> {
    in_ns(&lab.dut.name, "ethtool")
        .args(["-K", &lab.dut_if, "gro", "on"])
        .output()
        .context("ethtool")?;
    Ok(())
}

/// Resident memory of a process and the BPF memory (maps and programs, `memlock` in fdinfo)
/// its descriptors hold, in bytes.
pub(crate) fn process_memory(pid: u32) -> (u64, u64) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    let mut bpf = 0;
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) {
        for fd in fds.flatten() {
            bpf += std::fs::read_to_string(fd.path())
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    (rss, bpf)
}

/// What every test of one `compare` run shares.
struct Run<'a> {
    lab: &'a Lab,
    reps: usize,
    secs: u64,
    /// Scratch space for configs.
    dir: &'a Path,
    /// Where charts and results.json go.
    out: &'a Path,
    /// Raw results by test, merged into results.json.
    json: serde_json::Map<String, serde_json::Value>,
}

/// One test: runs, prints, charts and records its results.
type Report = fn(&mut Run) -> Result<()>;

/// The tests in the order they run, each a module with its `report`.
const TESTS: [(&str, Report); 7] = [
    ("accuracy", accuracy::report),
    ("isolation", isolation::report),
    ("tcp", tcp::report),
    ("cost", cost::report),
    ("wire", wire::report),
    ("load", load::report),
    ("scale", scale::report),
];

pub fn compare(reps: usize, secs: u64, tests: &[String], out: &Path) -> Result<()> {
    if !shaper::lab::is_root() {
        bail!("compare builds network namespaces, loads XDP and runs tc: run it as root");
    }
    let dir = std::env::temp_dir().join(shaper::lab::unique_name("shaper-cmp-"));
    std::fs::create_dir_all(&dir)?;
    let lab = Lab::new(&["10.10.1", "10.10.2"], &[]).context("building the lab")?;
    for ns in [&lab.src.name, &lab.dut.name] {
        in_ns(ns, "sysctl")
            .args(["-qw", "net.ipv4.tcp_ecn=1"])
            .output()?;
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // Results of the tests run now replace theirs in an earlier results.json; others stay.
    let json: serde_json::Map<String, serde_json::Value> = std::fs::read(out.join("results.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    println!("{reps} repetitions, {secs} s each, setups alternating; medians [min-max]\n");
    let mut run = Run {
        lab: &lab,
        reps,
        secs,
        dir: &dir,
        out,
        json,
    };
    for (name, report) in TESTS {
        if tests.iter().any(|t| t == name) {
            report(&mut run)?;
        }
    }
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&serde_json::Value::Object(run.json))?,
    )?;
    println!("\ncharts and raw results: {}", out.display());
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
