//! The shaper XDP program: parse the frame, classify it to a tenant by longest-prefix match,
//! spend the tenant's token bucket, count the outcome. No userspace in the packet path.
//!
//! Every packet is charged its IP length (IPv4 total length, IPv6 40 + payload length), as
//! RFC 2698 does; Ethernet and VLAN headers are not counted.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "atomic intrinsics: the BPF target has no atomic-cas"
)]

mod bucket;
mod classify;
mod parse;

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, xdp_action},
    macros::{map, xdp},
    maps::{Array, HashMap, LpmTrie, PerCpuArray},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use shaper_common::{
    CLASS_IPV4, CLASS_IPV6, CLASS_MALFORMED, CLASS_NON_IP, CLASS_UNMATCHED_DROPPED,
    CLASS_UNMATCHED_PASSED, CLASS_VLAN, CLASSES, CONFIG_MAGIC, DEFAULT_MAX_TENANTS, GlobalConfig,
    MATCH_SRC, OUTCOME_DROPPED, OUTCOME_MARKED, OUTCOME_PASSED, PacketCount, PrefixKeyV4,
    PrefixKeyV6, TENANT_ACTIVE, TENANT_ECN, TenantConfig, TenantCounters, TenantState,
    UNMATCHED_DROP, V4_KEY_BYTES, V6_KEY_BYTES,
};

use crate::parse::Parsed;

/// Load-time constant (`EbpfLoader::set_global`): [`shaper_common::CLOCK_COARSE`] reads the
/// jiffy clock (about 20 ns cheaper here) instead of the nanosecond one. The verifier sees it
/// as a constant and drops the branch not taken.
#[unsafe(no_mangle)]
static CLOCK: u8 = shaper_common::CLOCK_PRECISE;

/// Agent-written: match direction, unmatched action, magic and version.
#[map]
static GLOBAL_CONFIG: Array<GlobalConfig> = Array::with_max_entries(1, 0);

/// Agent-written: IPv4 prefix -> tenant id. Sized at load time.
#[map]
static TENANT_BY_PREFIX_V4: LpmTrie<[u8; V4_KEY_BYTES], u32> =
    LpmTrie::with_max_entries(DEFAULT_MAX_TENANTS, 0);

/// Agent-written: IPv6 prefix -> tenant id. Sized at load time.
#[map]
static TENANT_BY_PREFIX_V6: LpmTrie<[u8; V6_KEY_BYTES], u32> =
    LpmTrie::with_max_entries(DEFAULT_MAX_TENANTS, 0);

/// Agent-written: (prefix length, masked IPv4 address) -> tenant id, probed once per
/// configured length (see `GlobalConfig`). Sized at load time.
#[map]
static TENANT_BY_HASH_V4: HashMap<PrefixKeyV4, u32> =
    HashMap::with_max_entries(DEFAULT_MAX_TENANTS, BPF_F_NO_PREALLOC);

/// Agent-written: (prefix length, masked IPv6 address) -> tenant id.
#[map]
static TENANT_BY_HASH_V6: HashMap<PrefixKeyV6, u32> =
    HashMap::with_max_entries(DEFAULT_MAX_TENANTS, BPF_F_NO_PREALLOC);

/// Agent-written: per-tenant rate and burst, indexed by tenant id.
#[map]
static TENANT_CONFIG: Array<TenantConfig> = Array::with_max_entries(DEFAULT_MAX_TENANTS, 0);

/// Datapath-written: per-tenant bucket state (GCRA theoretical arrival time).
#[map]
static TENANT_STATE: Array<TenantState> = Array::with_max_entries(DEFAULT_MAX_TENANTS, 0);

/// Datapath-written: per-CPU packets and bytes per tenant and outcome.
#[map]
static TENANT_COUNTERS: PerCpuArray<TenantCounters> =
    PerCpuArray::with_max_entries(DEFAULT_MAX_TENANTS, 0);

/// Datapath-written: per-CPU packets and frame bytes per packet class.
#[map]
static GLOBAL_COUNTERS: PerCpuArray<PacketCount> = PerCpuArray::with_max_entries(CLASSES, 0);

#[xdp]
pub fn shaper(ctx: XdpContext) -> u32 {
    let frame_len = (ctx.data_end() - ctx.data()) as u64;
    let parsed = parse::parse(&ctx);
    match parsed {
        Parsed::NonIp { vlan } => {
            count_class(CLASS_NON_IP, frame_len, vlan);
            xdp_action::XDP_PASS
        }
        Parsed::Malformed { vlan } => {
            count_class(CLASS_MALFORMED, frame_len, vlan);
            xdp_action::XDP_PASS
        }
        Parsed::V4 {
            src,
            dst,
            len,
            vlan,
            l3,
            ecn,
        } => {
            count_class(CLASS_IPV4, frame_len, vlan);
            let cfg = global_config();
            let addr = if cfg.match_dir == MATCH_SRC { src } else { dst };
            let tenant = classify::v4(&cfg, addr);
            enforce(
                &ctx,
                &cfg,
                tenant,
                len,
                frame_len,
                Ecn {
                    l3,
                    field: ecn,
                    v4: true,
                },
            )
        }
        Parsed::V6 {
            src,
            dst,
            len,
            vlan,
            l3,
            ecn,
        } => {
            count_class(CLASS_IPV6, frame_len, vlan);
            let cfg = global_config();
            let addr = if cfg.match_dir == MATCH_SRC { src } else { dst };
            let tenant = classify::v6(&cfg, addr);
            enforce(
                &ctx,
                &cfg,
                tenant,
                len,
                frame_len,
                Ecn {
                    l3,
                    field: ecn,
                    v4: false,
                },
            )
        }
    }
}

/// The agent's global config, or the defaults (match dst, pass unmatched) before it wrote one.
#[inline(always)]
fn global_config() -> GlobalConfig {
    match GLOBAL_CONFIG.get(0) {
        Some(cfg) if cfg.magic == CONFIG_MAGIC => *cfg,
        _ => GlobalConfig::default(),
    }
}

/// Where a packet's ECN field is, and its value (0: not ECN-capable).
struct Ecn {
    l3: usize,
    field: u8,
    v4: bool,
}

/// Spend `len` bytes of the tenant's bucket and count the outcome.
#[inline(always)]
fn enforce(
    ctx: &XdpContext,
    cfg: &GlobalConfig,
    tenant: Option<u32>,
    len: u64,
    frame_len: u64,
    ecn: Ecn,
) -> u32 {
    let Some(id) = tenant else {
        return unmatched(cfg, frame_len);
    };
    let (Some(tc), Some(state)) = (TENANT_CONFIG.get(id), TENANT_STATE.get_ptr_mut(id)) else {
        return unmatched(cfg, frame_len);
    };
    if tc.flags & TENANT_ACTIVE == 0 {
        // A prefix points at an id the agent has not configured (yet): treat as unmatched.
        debug!(ctx, "prefix maps to unconfigured tenant {}", id);
        return unmatched(cfg, frame_len);
    }
    // SAFETY: `state` points into the array map's value for `id`, valid for the program's run.
    let tat = unsafe { &raw mut (*state).tat };
    // SAFETY: a read of a load-time constant; helpers with no arguments.
    let now = unsafe {
        if core::ptr::read_volatile(&CLOCK) == shaper_common::CLOCK_COARSE {
            aya_ebpf::helpers::bpf_ktime_get_coarse_ns()
        } else {
            aya_ebpf::helpers::bpf_ktime_get_ns()
        }
    };
    // SAFETY: `tat` is valid and aligned (above).
    let room = unsafe { bucket::spend(tat, now, len, tc.cost_fp, tc.burst_ns) };
    let pass = room.is_some();
    let outcome = match room {
        None => OUTCOME_DROPPED,
        // Low bucket, ECN-capable packet, tenant asked for it: mark CE rather than let the
        // bucket run dry and drop.
        Some(r) if r < tc.mark_ns && tc.flags & TENANT_ECN != 0 && ecn.field != 0 => {
            mark_ce(ctx, &ecn);
            OUTCOME_MARKED
        }
        Some(_) => OUTCOME_PASSED,
    };
    if let Some(c) = TENANT_COUNTERS.get_ptr_mut(id) {
        // SAFETY: per-CPU value: only this CPU writes it, and preemption is off in XDP.
        unsafe {
            (*c).packets[outcome] += 1;
            (*c).bytes[outcome] += len;
        }
    }
    if pass {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

/// Sets the ECN field to CE (11). IPv4's header checksum is updated incrementally (RFC 1624:
/// HC' = ~(~HC + ~m + m') over the 16-bit word holding the TOS byte); IPv6 has none.
#[inline(always)]
fn mark_ce(ctx: &XdpContext, ecn: &Ecn) {
    let start = ctx.data();
    if start + ecn.l3 + 12 > ctx.data_end() {
        return;
    }
    let h = (start + ecn.l3) as *mut u8;
    // SAFETY: the 12 bytes at `h` were just checked against data_end; XDP packet data is
    // writable.
    unsafe {
        if ecn.v4 {
            let old = u16::from_be_bytes([*h, *h.add(1)]);
            *h.add(1) |= 0x03;
            let new = u16::from_be_bytes([*h, *h.add(1)]);
            let hc = u16::from_be_bytes([*h.add(10), *h.add(11)]);
            let mut sum = u32::from(!hc) + u32::from(!old) + u32::from(new);
            sum = (sum & 0xffff) + (sum >> 16);
            sum = (sum & 0xffff) + (sum >> 16);
            let csum = !(sum as u16);
            let b = csum.to_be_bytes();
            *h.add(10) = b[0];
            *h.add(11) = b[1];
        } else {
            *h.add(1) |= 0x30;
        }
    }
}

#[inline(always)]
fn unmatched(cfg: &GlobalConfig, frame_len: u64) -> u32 {
    if cfg.unmatched == UNMATCHED_DROP {
        count_class(CLASS_UNMATCHED_DROPPED, frame_len, false);
        xdp_action::XDP_DROP
    } else {
        count_class(CLASS_UNMATCHED_PASSED, frame_len, false);
        xdp_action::XDP_PASS
    }
}

#[inline(always)]
fn count_class(class: u32, frame_len: u64, vlan: bool) {
    bump(class, frame_len);
    if vlan {
        bump(CLASS_VLAN, frame_len);
    }
}

#[inline(always)]
fn bump(class: u32, frame_len: u64) {
    if let Some(c) = GLOBAL_COUNTERS.get_ptr_mut(class) {
        // SAFETY: per-CPU value, written only by this CPU.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += frame_len;
        }
    }
}

/// Does nothing but pass: the baseline that `cargo xtask bench datapath` measures the shaper
/// against, loaded from the same object in the same run.
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
