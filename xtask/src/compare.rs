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

use crate::plot::{self, Panel, Series};
use crate::replay::{start_agent, write_private};
use shaper::lab::AgentProcess;

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
            Setup::ShaperSkb => "shaper (skb)",
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

fn tc(ns: &str, args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("tc")
        .args(["-n", ns])
        .args(args)
        .output()
        .context("running tc (iproute2)")?;
    if !out.status.success() {
        bail!(
            "tc {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
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
                    format!(
                        r#"{{"name":"t{i}","tier":"bronze","prefixes":["{}"],"rate":"{}bit","burst":"{}b","ecn":{ecn}}}"#,
                        t.prefix, t.rate_bits, t.burst_bytes
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

fn median(v: &mut [f64]) -> f64 {
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

/// Received over configured rate for one tenant at `rate_bits`, offered 1.5x from two CPUs.
fn accuracy(lab: &Lab, setup: Setup, rate_bits: u64, secs: u64, dir: &Path) -> Result<f64> {
    let burst = (rate_bits / 8 / 100).clamp(32_000, 2_000_000);
    let t = Tenant::net(1, rate_bits, burst);
    let _a = attach(lab, setup, std::slice::from_ref(&t), dir)?;
    let each = rate_bits * 3 / 4;
    let fl = floods(
        lab,
        &[
            (1, Some(each), 1400, Some(0)),
            (1, Some(each), 1400, Some(1)),
        ],
        secs,
    );
    let r = traffic::run_flows(&lab.dut.name, &fl, &Arc::new(AtomicBool::new(false)))?;
    Ok(r.received_bps(dst(1)) / rate_bits as f64)
}

/// Two tenants of 100 Mbit/s: one floods at 5x, the other sends 90 Mbit/s. Returns the share
/// of the quiet tenant's traffic delivered.
fn isolation(lab: &Lab, setup: Setup, secs: u64, dir: &Path) -> Result<f64> {
    let t = |net| Tenant::net(net, 100_000_000, 125_000);
    let _a = attach(lab, setup, &[t(1), t(2)], dir)?;
    let fl = floods(
        lab,
        &[
            (1, Some(500_000_000), 1400, Some(0)),
            (2, Some(90_000_000), 1400, Some(1)),
        ],
        secs,
    );
    let r = traffic::run_flows(&lab.dut.name, &fl, &Arc::new(AtomicBool::new(false)))?;
    Ok(r.received_bps(dst(2)) / r.offered_bps(dst(2)).max(1.0))
}

/// Goodput (bit/s), retransmissions, mean RTT (ms).
type TcpResult = (f64, f64, f64);

/// One cubic flow through a 100 Mbit/s tenant over a 5 ms return path: goodput (bit/s of
/// payload), retransmissions and the sender's mean smoothed RTT (ms), after 2 s of slow start.
fn tcp(lab: &Lab, setup: Setup, secs: u64, dir: &Path) -> Result<TcpResult> {
    let t = Tenant::net(1, 100_000_000, 128_000);
    let _a = attach(lab, setup, std::slice::from_ref(&t), dir)?;
    let mut srv = in_ns(&lab.dut.name, "iperf3")
        .args(["-s", "-1", "-B", "10.10.1.1", "-p", "5299"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("iperf3 server (scripts/setup.sh installs iperf3)")?;
    std::thread::sleep(Duration::from_millis(300));
    let out = in_ns(&lab.src.name, "iperf3")
        .args([
            "-c",
            "10.10.1.1",
            "-p",
            "5299",
            "-C",
            "cubic",
            "-O",
            "2",
            "-J",
            "-t",
        ])
        .arg((secs + 2).to_string())
        .output()
        .context("iperf3 client")?;
    let _ = srv.kill();
    let _ = srv.wait();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 JSON")?;
    let goodput = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3: no sum_received")?;
    let retrans = v["end"]["sum_sent"]["retransmits"].as_f64().unwrap_or(0.0);
    let rtt_ms = v["end"]["streams"][0]["sender"]["mean_rtt"]
        .as_f64()
        .unwrap_or(f64::NAN)
        / 1000.0;
    Ok((goodput, retrans, rtt_ms))
}

/// Small packets (64-byte frames) as fast as two sender CPUs go, through a tenant that never
/// limits them: packets delivered per second and CPU time (all CPUs, busy jiffies) per packet.
fn cost(lab: &Lab, setup: Setup, secs: u64, dir: &Path) -> Result<(f64, f64)> {
    let t = Tenant::net(1, 40_000_000_000, 10_000_000);
    let _a = attach(lab, setup, std::slice::from_ref(&t), dir)?;
    let fl = floods(lab, &[(1, None, 18, Some(0)), (1, None, 18, Some(1))], secs);
    let (b0, _) = cpu_jiffies();
    let r = traffic::run_flows(&lab.dut.name, &fl, &Arc::new(AtomicBool::new(false)))?;
    let (b1, _) = cpu_jiffies();
    let rx = r
        .received
        .iter()
        .find(|(d, _)| *d == dst(1))
        .map(|(_, x)| *x)
        .unwrap_or_default();
    let pps = rx.packets as f64 / secs as f64;
    // USER_HZ is 100: a jiffy is 10 ms.
    let cpu_ns = (b1 - b0) as f64 * 1e7 / rx.packets.max(1) as f64;
    Ok((pps, cpu_ns))
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

/// A veth accepts XDP frames only when its receiving side runs NAPI: an XDP program does that,
/// GRO does it for the setups without one.
fn gro_on(lab: &Lab) -> Result<()> {
    in_ns(&lab.dut.name, "ethtool")
        .args(["-K", &lab.dut_if, "gro", "on"])
        .output()
        .context("ethtool")?;
    Ok(())
}

/// [`wire_rate`] through one tenant (10.10.1.0/24) of `rate_bits`, whose burst is 64 kB or
/// 10 ms of its rate.
fn wire_cost(lab: &Lab, setup: Setup, rate_bits: u64, secs: u64, dir: &Path) -> Result<f64> {
    // At least 10 ms of the rate: the coarse clock (one jiffy, up to 4 ms) must hold a tick's
    // tokens, or it polices a tenant sending within its rate.
    let t = Tenant::net(1, rate_bits, (rate_bits / 800).max(64_000));
    let _a = attach(lab, setup, std::slice::from_ref(&t), dir)?;
    wire_rate(lab, setup.name(), [10, 10, 1, 1], secs)
}

/// Datagrams that reached UDP in the dut (delivered or dropped at a full socket): what got
/// past the shaping, whether or not the one sink thread kept up.
fn udp_arrivals(lab: &Lab) -> Result<u64> {
    let out = in_ns(&lab.dut.name, "cat")
        .arg("/proc/net/snmp")
        .output()
        .context("reading /proc/net/snmp")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().unwrap_or(""), udp.next().unwrap_or(""));
    Ok(names
        .split_whitespace()
        .zip(values.split_whitespace())
        .filter(|(n, _)| matches!(*n, "InDatagrams" | "RcvbufErrors" | "NoPorts"))
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum())
}

/// One step of offered load: packets per second asked for, sent, and that reached UDP in the
/// dut; softirq and all busy CPU time per delivered packet.
#[derive(Clone, Copy, Debug)]
struct Step {
    target: f64,
    sent: f64,
    delivered: f64,
    softirq_ns: f64,
    busy_ns: f64,
    /// The rung of the ladder (the same offered loads for every setup), `None` for a step
    /// bisected between a rung sustained and the next.
    rung: Option<usize>,
}

impl Step {
    /// Within 2% of the offered load: neither the senders nor the receive path fell behind.
    fn sustained(&self) -> bool {
        self.delivered >= 0.98 * self.target
    }
}

/// Seconds per step of the load ladder.
const STEP_SECS: u64 = 2;
const LADDER_START: f64 = 50_000.0;
const LADDER_FACTOR: f64 = 1.3;

/// Offered load stepped up (a ladder from 50k packets/s, x1.3 a rung) through two tenants that
/// limit nothing, from `cpus` sender CPUs, until a step is not sustained (CPU saturation: the
/// senders drive the receive path on veth, so a full CPU shows as packets not sent or not
/// received); then two bisections between the last rung sustained and the first not.
fn load(lab: &Lab, setup: Setup, payload: usize, cpus: usize, dir: &Path) -> Result<Vec<Step>> {
    let tenants = [
        Tenant::net(1, 40_000_000_000, 10_000_000),
        Tenant::net(2, 40_000_000_000, 10_000_000),
    ];
    let _a = attach(lab, setup, &tenants, dir)?;
    let pkt_bits = (payload as f64 + 28.0) * 8.0;
    let step = |pps: f64, rung: Option<usize>| -> Result<Step> {
        let each = (pps / cpus as f64 * pkt_bits) as u64;
        let list: Vec<_> = (0..cpus)
            .map(|c| (c as u8 + 1, Some(each), payload, Some(c)))
            .collect();
        let fl = floods(lab, &list, STEP_SECS);
        let u0 = udp_arrivals(lab)?;
        let (b0, s0) = cpu_jiffies();
        let r = traffic::run_flows(&lab.dut.name, &fl, &Arc::new(AtomicBool::new(false)))?;
        let (b1, s1) = cpu_jiffies();
        let got = udp_arrivals(lab)? - u0;
        let sent: u64 = r.floods.iter().map(|(_, s)| s.packets).sum();
        let secs = STEP_SECS as f64;
        // USER_HZ is 100: a jiffy is 10 ms.
        let per = |j: u64| j as f64 * 1e7 / got.max(1) as f64;
        Ok(Step {
            target: pps,
            sent: sent as f64 / secs,
            delivered: got as f64 / secs,
            softirq_ns: per(s1 - s0),
            busy_ns: per(b1 - b0),
            rung,
        })
    };
    let mut steps = Vec::new();
    let mut pps = LADDER_START;
    for rung in 0..16 {
        let s = step(pps, Some(rung))?;
        steps.push(s);
        if !s.sustained() {
            break;
        }
        pps *= LADDER_FACTOR;
    }
    let last = steps.len() - 1;
    if !steps[last].sustained() && last > 0 {
        let (mut lo, mut hi) = (steps[last - 1].target, steps[last].target);
        for _ in 0..2 {
            let mid = (lo * hi).sqrt();
            let s = step(mid, None)?;
            steps.push(s);
            if s.sustained() {
                lo = mid;
            } else {
                hi = mid;
            }
        }
    }
    Ok(steps)
}

/// The most packets per second delivered at a sustained step.
fn max_sustained(steps: &[Step]) -> f64 {
    steps
        .iter()
        .filter(|s| s.sustained())
        .map(|s| s.delivered)
        .fold(0.0, f64::max)
}

/// Resident memory of a process and the BPF memory (maps and programs, `memlock` in fdinfo)
/// its descriptors hold, in bytes.
fn process_memory(pid: u32) -> (u64, u64) {
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

/// Kernel slab and per-CPU memory (`/proc/meminfo`), bytes: what tc's classes and filters take.
fn kernel_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("Slab:") || l.starts_with("Percpu:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum::<u64>()
        * 1024
}

/// Frames per second; resident (or slab) and BPF memory, bytes.
type ScaleResult = (f64, u64, u64);

/// One setup with `n` tenants configured (10.64.0.0 upwards, /32 each, 10 Mbit/s), the last of
/// which (`rate_bits`) receives 64-byte frames on one CPU ([`wire_rate`]). Returns frames per
/// second, and the memory the setup took (bytes): the agent's resident memory and the BPF
/// memory its maps and programs hold for the shaper; the kernel's slab growth and 0 for HTB.
fn scale(
    lab: &Lab,
    setup: Setup,
    n: usize,
    rate_bits: u64,
    secs: u64,
    dir: &Path,
) -> Result<ScaleResult> {
    let tenants: Vec<Tenant> = (0..n)
        .map(|i| {
            if i + 1 == n {
                Tenant::host(i, rate_bits, 64_000)
            } else {
                Tenant::host(i, 10_000_000, 32_000)
            }
        })
        .collect();
    let dst = {
        let i = n - 1;
        [10, 64 + (i >> 16) as u8, (i >> 8) as u8, i as u8]
    };
    let k0 = kernel_memory();
    let a = attach(lab, setup, &tenants, dir)?;
    let (m0, m1) = match &a {
        Attached::Shaper(agent) => {
            // A few agent cycles, so its tables and forecasters are all allocated.
            std::thread::sleep(Duration::from_secs(3));
            process_memory(agent.child.id())
        }
        _ => (kernel_memory().saturating_sub(k0), 0),
    };
    let fps = wire_rate(lab, &format!("{} x{n}", setup.name()), dst, secs)?;
    Ok((fps, m0, m1))
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

pub fn compare(reps: usize, secs: u64, tests: &[String], out: &Path) -> Result<()> {
    let run = |t: &str| tests.iter().any(|x| x == t);
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
    let mut json: serde_json::Map<String, serde_json::Value> =
        std::fs::read(out.join("results.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
    println!("{reps} repetitions, {secs} s each, setups alternating; medians [min-max]\n");

    if run("accuracy") {
        println!("## accuracy: received / configured rate, one tenant offered 1.5x from two CPUs");
        let mut points: Vec<(Setup, Vec<(f64, f64)>)> =
            vec![(Setup::Shaper { ecn: false }, vec![]), (Setup::Htb, vec![])];
        for rate in [10_000_000u64, 100_000_000, 1_000_000_000] {
            let mut res: Vec<(Setup, Vec<f64>)> =
                vec![(Setup::Shaper { ecn: false }, vec![]), (Setup::Htb, vec![])];
            for _ in 0..reps {
                for (s, v) in res.iter_mut() {
                    v.push(accuracy(&lab, *s, rate, secs, &dir)?);
                }
            }
            for (s, mut v) in res {
                let (lo, hi) = spread(&v);
                json.insert(
                    format!("accuracy {} {}", s.name(), rate),
                    serde_json::json!(v),
                );
                let m = median(&mut v);
                if let Some(p) = points.iter_mut().find(|p| p.0 == s) {
                    p.1.push((rate as f64 / 1e6, m));
                }
                println!(
                    "{:>5} Mbit/s {:>12}: {:.4} [{:.4}-{:.4}]",
                    rate / 1_000_000,
                    s.name(),
                    m,
                    lo,
                    hi
                );
            }
        }
        plot::png(
            &out.join("accuracy.png"),
            &[Panel {
                y_zero: false,
                ..panel(
                    "Enforced / configured rate (median)",
                    "configured rate, Mbit/s",
                    "received / configured",
                    true,
                    points
                        .into_iter()
                        .map(|(s, p)| series(s.name(), color(s), p, false))
                        .collect(),
                )
            }],
        )?;
    }
    if run("isolation") {
        println!(
            "\n## isolation: a 100 Mbit/s tenant sending 90 while its neighbour floods at 500"
        );
        let mut res: Vec<(Setup, Vec<f64>)> =
            vec![(Setup::Shaper { ecn: false }, vec![]), (Setup::Htb, vec![])];
        for _ in 0..reps {
            for (s, v) in res.iter_mut() {
                v.push(isolation(&lab, *s, secs, &dir)?);
            }
        }
        for (s, mut v) in res {
            let (lo, hi) = spread(&v);
            println!(
                "{:>12}: {:.4} of the quiet tenant's traffic delivered [{:.4}-{:.4}]",
                s.name(),
                median(&mut v),
                lo,
                hi
            );
        }
    }
    if run("tcp") {
        println!("\n## TCP: one cubic flow, 100 Mbit/s tenant, 5 ms return path");
        let _delay = shaper::lab::DelayLine::start(
            &lab,
            "10.10.1.2".parse().context("addr")?,
            Duration::from_millis(5),
        )?;
        let mut res: Vec<(Setup, Vec<TcpResult>)> = vec![
            (Setup::Htb, vec![]),
            (Setup::Shaper { ecn: false }, vec![]),
            (Setup::Shaper { ecn: true }, vec![]),
        ];
        for _ in 0..reps {
            for (s, v) in res.iter_mut() {
                v.push(tcp(&lab, *s, secs, &dir)?);
            }
        }
        let mut dots = Vec::new();
        for (s, v) in res {
            json.insert(format!("tcp {}", s.name()), serde_json::json!(v));
            dots.push(series(
                s.name(),
                color(s),
                v.iter().map(|x| (x.2, x.0 / 1e6)).collect(),
                true,
            ));
            let mut g: Vec<f64> = v.iter().map(|x| x.0 / 1e6).collect();
            let mut r: Vec<f64> = v.iter().map(|x| x.1).collect();
            let mut t: Vec<f64> = v.iter().map(|x| x.2).collect();
            let (gl, gh) = spread(&g);
            let (rl, rh) = spread(&r);
            let (tl, th) = spread(&t);
            println!(
                "{:>12}: goodput {:.1} Mbit/s [{gl:.1}-{gh:.1}], retransmissions {:.0} [{rl:.0}-{rh:.0}], mean RTT {:.2} ms [{tl:.2}-{th:.2}]",
                s.name(),
                median(&mut g),
                median(&mut r),
                median(&mut t)
            );
        }
        drop(_delay);
        plot::png(
            &out.join("tcp.png"),
            &[panel(
                "TCP through a 100 Mbit/s tenant, 5 ms path (each run)",
                "mean RTT, ms",
                "goodput, Mbit/s",
                false,
                dots,
            )],
        )?;
    }
    if run("cost") {
        println!("\n## cost: 64-byte frames from two CPUs as fast as they go, nothing limited");
        println!("(both CPUs saturated: CPU per packet is all CPU time over delivered packets)");
        let mut res: Vec<(Setup, Vec<(f64, f64)>)> = vec![
            (Setup::Bare, vec![]),
            (Setup::Shaper { ecn: false }, vec![]),
            (Setup::ShaperSkb, vec![]),
            (Setup::Htb, vec![]),
        ];
        for _ in 0..reps {
            for (s, v) in res.iter_mut() {
                v.push(cost(&lab, *s, secs, &dir)?);
            }
        }
        let bare_ns = {
            let mut b: Vec<f64> = res[0].1.iter().map(|x| x.1).collect();
            median(&mut b)
        };
        let mut added = Vec::new();
        for (s, v) in &res {
            let mut p: Vec<f64> = v.iter().map(|x| x.0).collect();
            let mut c: Vec<f64> = v.iter().map(|x| x.1).collect();
            let (pl, ph) = spread(&p);
            let (cl, ch) = spread(&c);
            let (pm, cm) = (median(&mut p), median(&mut c));
            added.push((s.name(), pm, cm - bare_ns));
            println!(
                "{:>12}: {:.0} packets/s delivered [{pl:.0}-{ph:.0}], CPU {:.0} ns per packet [{cl:.0}-{ch:.0}], {:+.0} ns over no shaping",
                s.name(),
                pm,
                cm,
                cm - bare_ns
            );
        }
        for (name, pps, _) in &added {
            if let Some(htb) = added.iter().find(|a| a.0 == "HTB+IFB") {
                println!("{name} / HTB+IFB: {:.2}x the packets/s", pps / htb.1);
            }
        }
    }
    if run("wire") {
        gro_on(&lab)?;
        println!("\n## cost on one CPU: 64-byte XDP frames into the veth (live-frames generator)");
        for (what, rate) in [
            ("over its rate (1 Mbit/s): policed", 1_000_000u64),
            ("within its rate (40 Gbit/s): passed", 40_000_000_000),
        ] {
            let mut res: Vec<(Setup, Vec<f64>)> = vec![
                (Setup::Bare, vec![]),
                (
                    Setup::Floor {
                        drop: rate < 1_000_000_000,
                    },
                    vec![],
                ),
                (Setup::Shaper { ecn: false }, vec![]),
                (Setup::ShaperCoarse, vec![]),
                (Setup::Htb, vec![]),
            ];
            for _ in 0..reps {
                for (s, v) in res.iter_mut() {
                    v.push(wire_cost(&lab, *s, rate, secs, &dir)?);
                }
            }
            println!("tenant {what}:");
            let mut meds = Vec::new();
            for (s, mut v) in res {
                json.insert(format!("wire {} {what}", s.name()), serde_json::json!(v));
                let (lo, hi) = spread(&v);
                let m = median(&mut v);
                meds.push((s.name(), m));
                println!(
                    "{:>12}: {:.0} frames/s [{lo:.0}-{hi:.0}], {:.0} ns per frame",
                    s.name(),
                    m,
                    1e9 / m
                );
            }
            if let (Some(sh), Some(htb)) = (
                meds.iter().find(|m| m.0 == "shaper"),
                meds.iter().find(|m| m.0 == "HTB+IFB"),
            ) {
                println!(
                    "shaper / HTB+IFB: {:.2}x the frames/s on one CPU",
                    sh.1 / htb.1
                );
                let coarse = meds.iter().find(|m| m.0 == Setup::ShaperCoarse.name());
                if let Some(c) = coarse {
                    println!(
                        "shaper (coarse clock) / HTB+IFB: {:.2}x the frames/s on one CPU",
                        c.1 / htb.1
                    );
                }
                if let Some(floor) = meds.iter().find(|m| m.0.starts_with("XDP_")) {
                    let above = |x: f64| 1e9 / x - 1e9 / floor.1;
                    for s in [Some(sh), coarse].into_iter().flatten() {
                        println!(
                            "above the {} floor ({:.0} ns): {} {:.0} ns, HTB+IFB {:.0} ns per frame: HTB+IFB / {} {:.2}x",
                            floor.0,
                            1e9 / floor.1,
                            s.0,
                            above(s.1),
                            above(htb.1),
                            s.0,
                            above(htb.1) / above(s.1)
                        );
                    }
                }
            }
        }
    }
    if run("load") {
        println!(
            "\n## load: offered packets/s stepped up until loss; two tenants that limit nothing"
        );
        let setups = [
            Setup::Bare,
            Setup::Shaper { ecn: false },
            Setup::ShaperSkb,
            Setup::Htb,
        ];
        let mut panels = Vec::new();
        for (payload, frames) in [(18usize, "64-byte frames"), (1472, "1514-byte frames")] {
            for cpus in [1usize, 2] {
                let mut res: Vec<(Setup, Vec<Vec<Step>>)> =
                    setups.iter().map(|s| (*s, Vec::new())).collect();
                for _ in 0..reps {
                    for (s, v) in res.iter_mut() {
                        v.push(load(&lab, *s, payload, cpus, &dir)?);
                    }
                }
                // CPU per packet compared at one load: the highest rung every run sustained.
                let common = res
                    .iter()
                    .flat_map(|(_, v)| v.iter())
                    .map(|st| {
                        st.iter()
                            .filter(|s| s.sustained())
                            .filter_map(|s| s.rung)
                            .max()
                            .unwrap_or(0)
                    })
                    .min()
                    .unwrap_or(0);
                let at = LADDER_START * LADDER_FACTOR.powi(common as i32);
                println!(
                    "{frames}, {cpus} sender CPU(s); CPU per packet at {at:.0} packets/s offered:"
                );
                let mut lines = Vec::new();
                let mut meds = Vec::new();
                for (s, runs) in &res {
                    let mut max: Vec<f64> = runs.iter().map(|r| max_sustained(r)).collect();
                    let pick = |f: fn(&Step) -> f64| -> Vec<f64> {
                        runs.iter()
                            .filter_map(|r| r.iter().find(|x| x.rung == Some(common)).map(f))
                            .collect()
                    };
                    let (mut soft, mut busy) = (pick(|x| x.softirq_ns), pick(|x| x.busy_ns));
                    let (ml, mh) = spread(&max);
                    let (sl, sh) = spread(&soft);
                    let (m, so, bu) = (median(&mut max), median(&mut soft), median(&mut busy));
                    meds.push((*s, m, so));
                    println!(
                        "{:>12}: max sustained {m:.0} packets/s [{ml:.0}-{mh:.0}]; softirq {so:.0} ns per packet [{sl:.0}-{sh:.0}], all CPU {bu:.0} ns",
                        s.name()
                    );
                    json.insert(
                        format!("load {} {payload} {cpus}", s.name()),
                        serde_json::json!(
                            runs.iter()
                                .map(|r| r
                                    .iter()
                                    .map(|x| [
                                        x.target,
                                        x.sent,
                                        x.delivered,
                                        x.softirq_ns,
                                        x.busy_ns
                                    ])
                                    .collect::<Vec<_>>())
                                .collect::<Vec<_>>()
                        ),
                    );
                    if let Some(run) = median_run(runs, |r| max_sustained(r)) {
                        lines.push(series(
                            s.name(),
                            color(*s),
                            run.iter().map(|x| (x.target, x.delivered)).collect(),
                            false,
                        ));
                    }
                }
                let find = |s: Setup| meds.iter().find(|m| m.0 == s).copied();
                if let (Some(sh), Some(htb)) =
                    (find(Setup::Shaper { ecn: false }), find(Setup::Htb))
                {
                    println!(
                        "shaper / HTB+IFB: {:.2}x the packets/s sustained; HTB+IFB / shaper: {:.2}x the softirq time per packet",
                        sh.1 / htb.1,
                        htb.2 / sh.2
                    );
                }
                panels.push(panel(
                    &format!("{frames}, {cpus} sender CPU(s) (median run)"),
                    "offered, packets/s",
                    "reached UDP in the dut, packets/s",
                    false,
                    lines,
                ));
            }
        }
        plot::png(&out.join("load.png"), &panels)?;
    }
    if run("scale") {
        // One HTB qdisc holds 65,519 tenant classes (16-bit minors, from 0x10): its last row is
        // at 64,000.
        const HTB_MAX: usize = 64_000;
        gro_on(&lab)?;
        println!(
            "\n## scale: tenants configured (/32 each); 64-byte frames on one CPU to the last one"
        );
        let counts = [1usize, 1_000, 100_000];
        let mut panels = Vec::new();
        // (setup, tenants, [(resident or slab, BPF)]).
        type Memory = Vec<(f64, f64)>;
        let mut mem: Vec<(Setup, usize, Memory)> = Vec::new();
        for (what, rate) in [
            ("policed (1 Mbit/s)", 1_000_000u64),
            ("passed (40 Gbit/s)", 40_000_000_000),
        ] {
            let mut lines = Vec::new();
            for setup in [Setup::Shaper { ecn: false }, Setup::Htb] {
                lines.push(series(setup.name(), color(setup), Vec::new(), false));
            }
            // The floor: what the generator, the veth and the XDP hook cost whatever runs.
            let floor = Setup::Floor {
                drop: rate < 1_000_000_000,
            };
            let mut f: Vec<f64> = Vec::new();
            for _ in 0..reps {
                f.push(scale(&lab, floor, 1, rate, secs, &dir)?.0);
            }
            let (lo, hi) = spread(&f);
            let fm = median(&mut f);
            println!(
                "{what}, floor {:>8}: {fm:.0} frames/s [{lo:.0}-{hi:.0}], {:.0} ns per frame",
                floor.name(),
                1e9 / fm
            );
            lines.push(series(
                floor.name(),
                color(floor),
                counts.iter().map(|n| (*n as f64, 1e9 / fm)).collect(),
                false,
            ));
            for n in counts {
                let mut res: Vec<(Setup, usize, Vec<ScaleResult>)> = vec![
                    (Setup::Shaper { ecn: false }, n, Vec::new()),
                    (Setup::Htb, n.min(HTB_MAX), Vec::new()),
                ];
                for _ in 0..reps {
                    for (s, k, v) in res.iter_mut() {
                        v.push(scale(&lab, *s, *k, rate, secs, &dir)?);
                    }
                }
                for (i, (s, k, v)) in res.iter().enumerate() {
                    let mut f: Vec<f64> = v.iter().map(|x| x.0).collect();
                    let m: Vec<(f64, f64)> = v.iter().map(|x| (x.1 as f64, x.2 as f64)).collect();
                    let (lo, hi) = spread(&f);
                    let fm = median(&mut f);
                    println!(
                        "{what}, {k:>7} tenants {:>8}: {fm:.0} frames/s [{lo:.0}-{hi:.0}], {:.0} ns per frame",
                        s.name(),
                        1e9 / fm,
                    );
                    json.insert(
                        format!("scale {} {what} {k}", s.name()),
                        serde_json::json!(v),
                    );
                    lines[i].points.push((*k as f64, 1e9 / fm));
                    match mem.iter_mut().find(|x| x.0 == *s && x.1 == *k) {
                        Some(x) => x.2.extend(m),
                        None => mem.push((*s, *k, m)),
                    }
                }
            }
            panels.push(panel(
                &format!("Tenant {what}: CPU per frame (median)"),
                "tenants configured",
                "ns per frame, one CPU",
                true,
                lines,
            ));
        }
        println!(
            "memory: the shaper's agent resident + BPF (maps, programs); HTB+IFB: kernel slab growth"
        );
        for (s, k, m) in mem {
            let mut a: Vec<f64> = m.iter().map(|x| x.0 / 1e6).collect();
            let mut b: Vec<f64> = m.iter().map(|x| x.1 / 1e6).collect();
            let ((al, ah), (bl, bh)) = (spread(&a), spread(&b));
            println!(
                "{:>8} {k:>7} tenants: {:.1} MB [{al:.1}-{ah:.1}] + {:.1} MB [{bl:.1}-{bh:.1}]",
                s.name(),
                median(&mut a),
                median(&mut b)
            );
        }
        plot::png(&out.join("scale.png"), &panels)?;
    }
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&serde_json::Value::Object(json))?,
    )?;
    println!("\ncharts and raw results: {}", out.display());
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
