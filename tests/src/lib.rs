//! Helpers for the in-kernel and end-to-end tests: the root check, a packet builder, and a
//! userspace reference of the datapath's parser and classifier that the fuzz test compares
//! the kernel's verdicts against.
use std::net::IpAddr;

use shaper::config::Prefix;

use aya::programs::{TestRun, TestRunOptions};
use shaper::datapath::{Datapath, TENANT_COUNTERS};
use shaper_common::TenantCounters;

pub use shaper::lab::{root_test, xdp_attached};

/// Runs one frame through the program (`BPF_PROG_TEST_RUN`) and returns its verdict.
pub fn run(dp: &mut Datapath, frame: &[u8]) -> u32 {
    run_out(dp, frame).0
}

/// Runs one frame and returns the verdict and the frame as the program left it.
pub fn run_out(dp: &mut Datapath, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 256];
    let prog = dp.program_mut().expect("program");
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}

/// Counters of tenant `id`, summed over CPUs.
pub fn tenant(dp: &Datapath, id: u32) -> TenantCounters {
    shaper::datapath::read_tenant_counters(dp.map(TENANT_COUNTERS).expect("map"), id + 1)
        .expect("read")[id as usize]
}

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;

/// Builds Ethernet frames: `vlans` tags (outer first), then an IP packet of `ip_len` bytes.
#[derive(Clone, Debug)]
pub struct FrameBuilder {
    pub vlans: Vec<u16>,
    pub options: usize,
    pub ip_len: usize,
    /// IPv4 TOS / IPv6 traffic class: DSCP << 2 | ECN.
    pub tos: u8,
    /// IP protocol; TCP, UDP and SCTP get `sport` and `dport` as their first four bytes.
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    /// IPv6: this many 8-byte destination-options headers before the transport header.
    pub v6_ext: usize,
}

impl Default for FrameBuilder {
    fn default() -> Self {
        FrameBuilder {
            vlans: vec![],
            options: 0,
            ip_len: 100,
            tos: 0,
            proto: 17,
            sport: 40_000,
            dport: 9,
            v6_ext: 0,
        }
    }
}

impl FrameBuilder {
    fn l2(&self, ethertype: u16) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        for (i, vid) in self.vlans.iter().enumerate() {
            let tpid = if i == 0 && self.vlans.len() == 2 {
                ETH_P_8021AD
            } else {
                ETH_P_8021Q
            };
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&vid.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    /// IPv4/UDP with `options` bytes of IP options (a multiple of 4, NOPs).
    pub fn v4(&self, src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut f = self.l2(ETH_P_IPV4);
        let hlen = 20 + self.options;
        let total = self.ip_len.max(hlen + 8);
        let mut h = vec![0u8; hlen];
        h[0] = 0x40 | (hlen / 4) as u8;
        h[1] = self.tos;
        h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        h[8] = 64;
        h[9] = self.proto;
        h[12..16].copy_from_slice(&src);
        h[16..20].copy_from_slice(&dst);
        for b in &mut h[20..] {
            *b = 1; // NOP
        }
        let csum = ipv4_checksum(&h);
        h[10..12].copy_from_slice(&csum.to_be_bytes());
        f.extend_from_slice(&h);
        f.resize(f.len() + total - hlen, 0xab);
        self.ports(&mut f, 14 + 4 * self.vlans.len() + hlen);
        f
    }

    fn ports(&self, f: &mut [u8], l4: usize) {
        if matches!(self.proto, 6 | 17 | 132) && f.len() >= l4 + 4 {
            f[l4..l4 + 2].copy_from_slice(&self.sport.to_be_bytes());
            f[l4 + 2..l4 + 4].copy_from_slice(&self.dport.to_be_bytes());
        }
    }

    /// IPv6/UDP.
    pub fn v6(&self, src: [u8; 16], dst: [u8; 16]) -> Vec<u8> {
        let mut f = self.l2(ETH_P_IPV6);
        let ext = 8 * self.v6_ext;
        let total = self.ip_len.max(48 + ext);
        let mut h = vec![0u8; 40];
        h[0] = 0x60 | (self.tos >> 4);
        h[1] = (self.tos & 0x0f) << 4;
        h[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        h[6] = if self.v6_ext > 0 { 60 } else { self.proto };
        h[7] = 64;
        h[8..24].copy_from_slice(&src);
        h[24..40].copy_from_slice(&dst);
        f.extend_from_slice(&h);
        for i in 0..self.v6_ext {
            // Destination options: next header, length 0 (8 bytes), PadN.
            let next = if i + 1 < self.v6_ext { 60 } else { self.proto };
            f.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
        }
        f.resize(f.len() + total - 40 - ext, 0xab);
        self.ports(&mut f, 14 + 4 * self.vlans.len() + 40 + ext);
        f
    }

    pub fn arp(&self) -> Vec<u8> {
        let mut f = self.l2(ETH_P_ARP);
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f.resize(f.len() + 20, 0);
        f
    }
}

pub fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for (i, c) in h.chunks(2).enumerate() {
        if i == 5 {
            continue;
        }
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// What the reference parser says the datapath must do with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefClass {
    NonIp,
    Malformed,
    /// An IP packet: its source, destination and IP length.
    Ip {
        src: IpAddr,
        dst: IpAddr,
        len: u64,
    },
}

/// The parser, written again from the packet formats, independently of the eBPF code.
pub fn reference_parse(f: &[u8]) -> (RefClass, bool) {
    if f.len() < 14 {
        return (RefClass::Malformed, false);
    }
    let mut et = u16::from_be_bytes([f[12], f[13]]);
    let mut off = 14;
    let mut vlan = false;
    for _ in 0..2 {
        if et != ETH_P_8021Q && et != ETH_P_8021AD {
            break;
        }
        if f.len() < off + 4 {
            return (RefClass::Malformed, true);
        }
        et = u16::from_be_bytes([f[off + 2], f[off + 3]]);
        off += 4;
        vlan = true;
    }
    let rest = &f[off..];
    let class = match et {
        ETH_P_IPV4 => {
            if rest.len() < 20 {
                RefClass::Malformed
            } else {
                let ihl = usize::from(rest[0] & 0xf) * 4;
                let total = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
                if rest[0] >> 4 != 4 || ihl < 20 || total < ihl || total > rest.len() {
                    RefClass::Malformed
                } else {
                    let a =
                        |i: usize| IpAddr::from([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
                    RefClass::Ip {
                        src: a(12),
                        dst: a(16),
                        len: total as u64,
                    }
                }
            }
        }
        ETH_P_IPV6 => {
            if rest.len() < 40 {
                RefClass::Malformed
            } else {
                let payload = usize::from(u16::from_be_bytes([rest[4], rest[5]]));
                let total = if payload == 0 {
                    rest.len()
                } else {
                    40 + payload
                };
                if rest[0] >> 4 != 6 || total > rest.len() {
                    RefClass::Malformed
                } else {
                    let a = |i: usize| {
                        let mut b = [0u8; 16];
                        b.copy_from_slice(&rest[i..i + 16]);
                        IpAddr::from(b)
                    };
                    RefClass::Ip {
                        src: a(8),
                        dst: a(24),
                        len: total as u64,
                    }
                }
            }
        }
        _ => RefClass::NonIp,
    };
    (class, vlan)
}

/// Longest-prefix match over `(prefix, tenant)` pairs, by brute force.
pub fn reference_lookup(prefixes: &[(Prefix, usize)], addr: IpAddr) -> Option<usize> {
    prefixes
        .iter()
        .filter(|(p, _)| p.contains(addr))
        .max_by_key(|(p, _)| p.bits())
        .map(|(_, t)| *t)
}

/// A `shaper run` agent on a thread of its own (with its own runtime), attached to a lab
/// interface. Stopping it (or dropping it) detaches and unpins, as SIGTERM does.
pub struct Agent {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Agent {
    pub fn start(cfg: &shaper::config::Config, iface: &str, netns: &str) -> anyhow::Result<Agent> {
        let options = shaper::agent::Options {
            iface: iface.to_string(),
            config: "(test)".into(),
            xdp_mode: shaper::datapath::AttachMode::Native,
            max_tenants: shaper_common::DEFAULT_MAX_TENANTS,
            netns: Some(netns.to_string()),
            clock: shaper::datapath::Clock::Precise,
        };
        let cfg = cfg.clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(shaper::agent::run(
                &options,
                &cfg,
                move || {
                    let _ = ready_tx.send(());
                },
                async {
                    let _ = stop_rx.await;
                },
            ))?;
            anyhow::Ok(())
        });
        let mut agent = Agent {
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        if ready_rx.recv().is_err() {
            // The agent ended before attaching: return its error.
            return Err(agent
                .join()
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("agent exited before attaching")));
        }
        Ok(agent)
    }

    fn join(&mut self) -> anyhow::Result<()> {
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("agent thread panicked"))?,
            None => Ok(()),
        }
    }

    pub fn stop(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.join()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Err(e) = self.join() {
            eprintln!("agent: {e}");
        }
    }
}
