//! Helpers for the in-kernel and end-to-end tests: the root check, a packet builder, and a
//! userspace reference of the datapath's parser and classifier that the fuzz test compares
//! the kernel's verdicts against.
use std::net::IpAddr;

use shaper::config::Prefix;

use aya::programs::{TestRun, TestRunOptions};
use shaper::datapath::{Datapath, TENANT_COUNTERS};
use shaper_common::TenantCounters;

pub use shaper::lab::frame::{
    ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IPV4, ETH_P_IPV6, ETH_P_PPPOE_SESSION,
    FrameBuilder, ipv4_checksum,
};
pub use shaper::lab::{AgentThread as Agent, root_test, xdp_attached};

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

/// Runs one frame through the program behind `prog` (`BPF_PROG_TEST_RUN` by hand) and returns
/// its verdict: for a thread that drives frames while another holds the `Datapath` and
/// rewrites its maps.
pub fn run_fd(prog: std::os::fd::BorrowedFd<'_>, frame: &[u8]) -> u32 {
    use std::os::fd::AsRawFd as _;
    /// The `test` member of `union bpf_attr`.
    #[repr(C)]
    #[derive(Default)]
    struct TestAttr {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
        flags: u32,
        cpu: u32,
        batch_size: u32,
        _pad: u32,
    }
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    let mut attr = TestAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat: 1,
        ..Default::default()
    };
    // SAFETY: `attr` is a live `union bpf_attr` prefix of the size passed; the frame outlives
    // the call and the kernel only reads it (no data_out).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            std::ptr::from_mut(&mut attr),
            size_of::<TestAttr>(),
        )
    };
    assert!(
        ret >= 0,
        "BPF_PROG_TEST_RUN: {}",
        std::io::Error::last_os_error()
    );
    attr.retval
}

/// Counters of tenant `id`, summed over CPUs.
pub fn tenant(dp: &Datapath, id: u32) -> TenantCounters {
    shaper::datapath::read_tenant_counters(dp.map(TENANT_COUNTERS).expect("map"), id + 1)
        .expect("read")[id as usize]
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
    let mut rest = &f[off..];
    if et == ETH_P_PPPOE_SESSION {
        if rest.len() < 8 {
            return (RefClass::Malformed, vlan);
        }
        // Length: the PPP protocol field and its payload.
        let len = usize::from(u16::from_be_bytes([rest[4], rest[5]]));
        if rest[0] != 0x11 || rest[1] != 0 || len < 2 || 6 + len > rest.len() {
            return (RefClass::Malformed, vlan);
        }
        et = match u16::from_be_bytes([rest[6], rest[7]]) {
            0x0021 => ETH_P_IPV4,
            0x0057 => ETH_P_IPV6,
            _ => return (RefClass::NonIp, vlan),
        };
        rest = &rest[8..6 + len];
    }
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
