//! `cargo xtask bench compare`: the shaper against tc HTB on an IFB device, on the same veth,
//! in the same run, alternating. HTB is set up as an operator would: an ingress `mirred`
//! redirect of everything arriving on the veth to an IFB device, an HTB root there with a
//! parent class at link rate and one class per tenant (`rate`, `ceil`, `burst`, `cburst` from
//! the same numbers as the shaper's tenant, `quantum` one MTU), a u32 filter per tenant
//! prefix. Both sides get the same tenants: bronze (no borrowing), so each tenant's rate is
//! all it gets.
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use shaper::netns::{Lab, in_ns};
use shaper::traffic::{self, Flood};

use crate::replay::{Agent, start_agent, write_private};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Setup {
    Htb,
    Shaper {
        ecn: bool,
    },
    /// The shaper in generic (skb) XDP mode.
    ShaperSkb,
    /// Nothing attached: the lab's own cost, subtracted in the cost test.
    Bare,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Htb => "HTB+IFB",
            Setup::Shaper { ecn: false } => "shaper",
            Setup::Shaper { ecn: true } => "shaper+ECN",
            Setup::ShaperSkb => "shaper (skb)",
            Setup::Bare => "no shaping",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Tenant {
    /// 10.10.`net`.0/24.
    net: u8,
    rate_bits: u64,
    burst_bytes: u64,
}

fn dst(net: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::from([10, 10, net, 1]), 9000)
}

/// Whatever a setup attached; removed on drop (the lab's namespaces go with the lab).
enum Attached {
    /// Held for its drop: SIGTERM detaches the shaper.
    Shaper(#[allow(dead_code)] Agent),
    Htb {
        ns: String,
        dev: String,
        ifb: String,
    },
    Bare,
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Attached::Htb { ns, dev, ifb } = self {
            let _ = shaper::netns::ip(&["-n", ns, "link", "del", ifb]);
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
        Setup::Shaper { .. } | Setup::ShaperSkb => {
            let ecn = setup == Setup::Shaper { ecn: true };
            let list: Vec<String> = tenants
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    format!(
                        r#"{{"name":"t{i}","tier":"bronze","prefixes":["10.10.{}.0/24"],"rate":"{}bit","burst":"{}b","ecn":{ecn}}}"#,
                        t.net, t.rate_bits, t.burst_bytes
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
            Ok(Attached::Shaper(start_agent(
                lab,
                &path,
                &dir.join("run.log"),
                &["--xdp-mode", mode],
            )?))
        }
        Setup::Htb => {
            let ns = lab.dut.name.clone();
            let dev = lab.dut_if.clone();
            let ifb = format!("{}i", lab.dut_if);
            shaper::netns::ip(&["-n", &ns, "link", "add", &ifb, "type", "ifb"])?;
            let attached = Attached::Htb {
                ns: ns.clone(),
                dev: dev.clone(),
                ifb: ifb.clone(),
            };
            shaper::netns::ip(&["-n", &ns, "link", "set", &ifb, "up"])?;
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
            tc(
                &ns,
                &[
                    "qdisc", "add", "dev", &ifb, "root", "handle", "1:", "htb", "default", "999",
                ],
            )?;
            tc(
                &ns,
                &[
                    "class", "add", "dev", &ifb, "parent", "1:", "classid", "1:1", "htb", "rate",
                    "100gbit", "ceil", "100gbit", "quantum", "1514",
                ],
            )?;
            // Unmatched traffic (ARP, the other direction's ACKs) is not held back.
            tc(
                &ns,
                &[
                    "class", "add", "dev", &ifb, "parent", "1:1", "classid", "1:999", "htb",
                    "rate", "1gbit", "ceil", "100gbit", "quantum", "1514",
                ],
            )?;
            for (i, t) in tenants.iter().enumerate() {
                let id = format!("1:{}", 10 + i);
                let rate = format!("{}bit", t.rate_bits);
                let burst = format!("{}b", t.burst_bytes);
                tc(
                    &ns,
                    &[
                        "class", "add", "dev", &ifb, "parent", "1:1", "classid", &id, "htb",
                        "rate", &rate, "ceil", &rate, "burst", &burst, "cburst", &burst, "quantum",
                        "1514",
                    ],
                )?;
                tc(
                    &ns,
                    &[
                        "filter",
                        "add",
                        "dev",
                        &ifb,
                        "parent",
                        "1:",
                        "protocol",
                        "ip",
                        "prio",
                        "1",
                        "u32",
                        "match",
                        "ip",
                        "dst",
                        &format!("10.10.{}.0/24", t.net),
                        "flowid",
                        &id,
                    ],
                )?;
            }
            Ok(attached)
        }
    }
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

/// Busy and total jiffies over all CPUs (`/proc/stat`).
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
    (total - idle, total)
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
    let t = Tenant {
        net: 1,
        rate_bits,
        burst_bytes: burst,
    };
    let _a = attach(lab, setup, &[t], dir)?;
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
    let t = |net| Tenant {
        net,
        rate_bits: 100_000_000,
        burst_bytes: 125_000,
    };
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
    let t = Tenant {
        net: 1,
        rate_bits: 100_000_000,
        burst_bytes: 128_000,
    };
    let _a = attach(lab, setup, &[t], dir)?;
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
    let t = Tenant {
        net: 1,
        rate_bits: 40_000_000_000,
        burst_bytes: 10_000_000,
    };
    let _a = attach(lab, setup, &[t], dir)?;
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

/// A 64-byte UDP frame from the src side to `10.10.1.1:9000`, addressed to the dut's MAC.
fn wire_frame(lab: &Lab) -> Result<Vec<u8>> {
    let dst = shaper::netns::mac_of(&lab.dut.name, &lab.dut_if)?;
    let src = shaper::netns::mac_of(&lab.src.name, &lab.src_if)?;
    Ok(crate::udp4_frame(
        (dst, src),
        [10, 10, 1, 2],
        [10, 10, 1, 1],
        (40000, 9000),
    ))
}

/// Frames per second one CPU turns around: a live-frames generator on CPU 0 sends 64-byte
/// frames out of the src veth (`BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES`), so
/// the dut's veth receives XDP frames, and everything after (the shaper's XDP program, or the
/// sk_buff, tc ingress, IFB and HTB) runs on that CPU. The tenant's rate is `rate_bits`.
fn wire_cost(lab: &Lab, setup: Setup, rate_bits: u64, secs: u64, dir: &Path) -> Result<f64> {
    let t = Tenant {
        net: 1,
        rate_bits,
        burst_bytes: 64_000,
    };
    let _a = attach(lab, setup, &[t], dir)?;
    let frame = wire_frame(lab)?;
    let ifindex = shaper::netns::ifindex(&lab.src_if, Some(&lab.src.name))?;
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
        let _in = shaper::netns::NetNsEnter::enter(&ns)?;
        let mut dp = shaper::datapath::Datapath::load(8)?;
        let prog = dp.generator_mut(ifindex)?;
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
        "  {}: generator {:.0}/s, received {:.0}/s",
        setup.name(),
        sent.0 as f64 / sent.1,
        got as f64 / sent.1
    );
    Ok(got as f64 / sent.1)
}

pub fn compare(reps: usize, secs: u64, tests: &[String]) -> Result<()> {
    let run = |t: &str| tests.iter().any(|x| x == t);
    if !shaper::netns::is_root() {
        bail!("compare builds network namespaces, loads XDP and runs tc: run it as root");
    }
    let dir = std::env::temp_dir().join(shaper::netns::unique_name("shaper-cmp-"));
    std::fs::create_dir_all(&dir)?;
    let lab = Lab::new(&["10.10.1", "10.10.2"], &[]).context("building the lab")?;
    for ns in [&lab.src.name, &lab.dut.name] {
        in_ns(ns, "sysctl")
            .args(["-qw", "net.ipv4.tcp_ecn=1"])
            .output()?;
    }
    println!("{reps} repetitions, {secs} s each, setups alternating; medians [min-max]\n");

    if run("accuracy") {
        println!("## accuracy: received / configured rate, one tenant offered 1.5x from two CPUs");
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
                println!(
                    "{:>5} Mbit/s {:>12}: {:.4} [{:.4}-{:.4}]",
                    rate / 1_000_000,
                    s.name(),
                    median(&mut v),
                    lo,
                    hi
                );
            }
        }
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
        let _delay = shaper::netns::DelayLine::start(
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
        for (s, v) in res {
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
        // A veth accepts XDP frames only when its receiving side runs NAPI: an XDP program
        // does that, GRO does it for the setups without one.
        in_ns(&lab.dut.name, "ethtool")
            .args(["-K", &lab.dut_if, "gro", "on"])
            .output()
            .context("ethtool")?;
        println!("\n## cost on one CPU: 64-byte XDP frames into the veth (live-frames generator)");
        for (what, rate) in [
            ("over its rate (1 Mbit/s): policed", 1_000_000u64),
            ("within its rate (40 Gbit/s): passed", 40_000_000_000),
        ] {
            let mut res: Vec<(Setup, Vec<f64>)> = vec![
                (Setup::Bare, vec![]),
                (Setup::Shaper { ecn: false }, vec![]),
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
            }
        }
    }
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
