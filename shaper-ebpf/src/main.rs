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
mod ecn;
mod flows;
mod parse;
mod runtime;
mod spend;

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, xdp_action},
    macros::{map, xdp},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use shaper_common::{
    CLASS_IPV4, CLASS_IPV6, CLASS_MALFORMED, CLASS_NON_IP, CLASS_UNMATCHED_DROPPED,
    CLASS_UNMATCHED_PASSED, CLASS_UNPARSED_DROPPED, CLASS_VLAN, CLASSES, CONFIG_MAGIC,
    DEFAULT_MAX_TENANTS, FLOWS_OFF, FlowKey, FlowStats, GlobalConfig, GlobalState, MATCH_SRC,
    OUTCOME_DROPPED, PacketCount, PrefixKeyV4, PrefixKeyV6, TENANT_ACTIVE, TenantConfig,
    TenantCounters, TenantState, TokenRules, UNMATCHED_DROP, UNPARSED_DROP, UNPARSED_POLICE,
    V4_KEY_BYTES, V6_KEY_BYTES,
};

use crate::parse::{IpInfo, Parsed};

/// Load-time constant (`EbpfLoader::set_global`): [`shaper_common::CLOCK_COARSE`] reads the
/// jiffy clock (about 20 ns cheaper here) instead of the nanosecond one. The verifier sees it
/// as a constant and drops the branch not taken.
#[unsafe(no_mangle)]
static CLOCK: u8 = shaper_common::CLOCK_PRECISE;

/// Agent-written: which entry of `GLOBAL_CONFIG` and `TOKEN_RULES` is live. The agent writes
/// the other entry of both, then flips this word: a packet sees one whole config and its rules,
/// never a config half written or the rules of another.
#[map]
static CONFIG_SLOT: Array<u32> = Array::with_max_entries(1, 0);

/// Agent-written, two entries (see `CONFIG_SLOT`): match direction, unmatched action,
/// token-type defaults, global pools.
#[map]
static GLOBAL_CONFIG: Array<GlobalConfig> = Array::with_max_entries(2, 0);

/// Agent-written, two entries (see `CONFIG_SLOT`): the token-type rules, in order.
#[map]
static TOKEN_RULES: Array<TokenRules> = Array::with_max_entries(2, 0);

/// Datapath-written: the link bucket and the emergency pool.
#[map]
static GLOBAL_STATE: Array<GlobalState> = Array::with_max_entries(1, 0);

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

/// Agent-written: which of a tenant's two `TENANT_CONFIG` entries is live (bit 0). The agent
/// writes the other entry, then flips this word, so every packet sees one whole config.
#[map]
static TENANT_SLOT: Array<u32> = Array::with_max_entries(DEFAULT_MAX_TENANTS, 0);

/// Agent-written: per-tenant parameters at `2 * id + slot`. Sized at load time (twice the
/// tenants).
#[map]
static TENANT_CONFIG: Array<TenantConfig> = Array::with_max_entries(2 * DEFAULT_MAX_TENANTS, 0);

/// Datapath-written: per-tenant bucket state. Mappable, so the agent reads it from memory
/// each cycle instead of copying it out through the kernel (30 ms a cycle at 100,000 tenants
/// with batched lookups).
#[map]
static TENANT_STATE: Array<TenantState> =
    Array::with_max_entries(DEFAULT_MAX_TENANTS, BPF_F_MMAPABLE);

/// Datapath-written: per-CPU packets and bytes per tenant, token type and outcome.
#[map]
static TENANT_COUNTERS: PerCpuArray<TenantCounters> =
    PerCpuArray::with_max_entries(DEFAULT_MAX_TENANTS, 0);

/// Datapath-written: per-CPU packets and frame bytes per packet class.
#[map]
static GLOBAL_COUNTERS: PerCpuArray<PacketCount> = PerCpuArray::with_max_entries(CLASSES, 0);

/// Datapath-written, per CPU: bytes passed and not yet charged to the shared link word (0) and
/// capacity word (1).
#[map]
static LINK_PENDING: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// Datapath-written: sampled active flows, least recently used evicted first.
#[map]
static FLOWS: LruHashMap<FlowKey, FlowStats> = LruHashMap::with_max_entries(65_536, 0);

#[xdp]
pub fn shaper(ctx: XdpContext) -> u32 {
    let frame_len = (ctx.data_end() - ctx.data()) as u64;
    let parsed = parse::parse(&ctx);
    match parsed {
        Parsed::NonIp { vlan, arp } => {
            count_class(CLASS_NON_IP, frame_len, vlan);
            if arp {
                xdp_action::XDP_PASS
            } else {
                unparsed(frame_len)
            }
        }
        Parsed::Malformed { vlan } => {
            count_class(CLASS_MALFORMED, frame_len, vlan);
            unparsed(frame_len)
        }
        Parsed::V4 {
            src,
            dst,
            len,
            vlan,
            ip,
        } => {
            count_class(CLASS_IPV4, frame_len, vlan);
            let Some(cfg) = global_config() else {
                return unconfigured(frame_len);
            };
            let addr = if cfg.match_dir == MATCH_SRC { src } else { dst };
            let tenant = classify::v4(cfg, addr);
            enforce(
                &ctx,
                cfg,
                tenant,
                len,
                frame_len,
                &ip,
                flows::Addrs::V4(&src, &dst),
            )
        }
        Parsed::V6 {
            src,
            dst,
            len,
            vlan,
            ip,
        } => {
            count_class(CLASS_IPV6, frame_len, vlan);
            let Some(cfg) = global_config() else {
                return unconfigured(frame_len);
            };
            let addr = if cfg.match_dir == MATCH_SRC { src } else { dst };
            let tenant = classify::v6(cfg, addr);
            enforce(
                &ctx,
                cfg,
                tenant,
                len,
                frame_len,
                &ip,
                flows::Addrs::V6(&src, &dst),
            )
        }
    }
}

/// The agent's global config, by reference (it is 96 bytes: no copy per packet), or `None`
/// before an agent wrote one.
#[inline(always)]
fn global_config() -> Option<&'static GlobalConfig> {
    let slot = CONFIG_SLOT.get(0).map_or(0, |s| *s & 1);
    GLOBAL_CONFIG
        .get(slot)
        .filter(|cfg| cfg.magic == CONFIG_MAGIC)
}

/// A frame no tenant can be charged for: the config's unparsed-frame policy (pass before any
/// config).
#[inline(always)]
fn unparsed(frame_len: u64) -> u32 {
    let Some(cfg) = global_config() else {
        return xdp_action::XDP_PASS;
    };
    let pass = match cfg.unparsed {
        UNPARSED_DROP => false,
        UNPARSED_POLICE => GLOBAL_STATE.get_ptr_mut(0).is_some_and(|g| {
            // SAFETY: an array map value, valid and aligned for the program's run.
            unsafe {
                bucket::spend(
                    &raw mut (*g).unparsed_tat,
                    now(),
                    frame_len,
                    cfg.unparsed_cost_fp,
                    cfg.unparsed_burst_ns,
                )
                .is_some()
            }
        }),
        _ => true,
    };
    if pass {
        xdp_action::XDP_PASS
    } else {
        bump(CLASS_UNPARSED_DROPPED, frame_len);
        xdp_action::XDP_DROP
    }
}

/// Before any config: no tenants, so every IP packet is unmatched, and passes.
#[inline(always)]
fn unconfigured(frame_len: u64) -> u32 {
    count_class(CLASS_UNMATCHED_PASSED, frame_len, false);
    xdp_action::XDP_PASS
}

/// Now, from the clock chosen at load time.
#[inline(always)]
fn now() -> u64 {
    // SAFETY: a read of a load-time constant; helpers with no arguments.
    unsafe {
        if core::ptr::read_volatile(&CLOCK) == shaper_common::CLOCK_COARSE {
            aya_ebpf::helpers::bpf_ktime_get_coarse_ns()
        } else {
            aya_ebpf::helpers::bpf_ktime_get_ns()
        }
    }
}

/// Spend `len` bytes in the design's order (pre-allocated pool, the type's bucket, lower types'
/// buckets, the opportunistic pool, the emergency pool), mark or drop, and count the outcome.
#[inline(always)]
fn enforce(
    ctx: &XdpContext,
    cfg: &GlobalConfig,
    tenant: Option<u32>,
    len: u64,
    frame_len: u64,
    ip: &IpInfo,
    addrs: flows::Addrs,
) -> u32 {
    let Some(id) = tenant else {
        return unmatched(cfg, frame_len);
    };
    let slot = match TENANT_SLOT.get(id) {
        Some(s) => *s & 1,
        None => return unmatched(cfg, frame_len),
    };
    let (Some(tc), Some(state)) = (
        TENANT_CONFIG.get(id.wrapping_mul(2) + slot),
        TENANT_STATE.get_ptr_mut(id),
    ) else {
        return unmatched(cfg, frame_len);
    };
    if tc.flags & TENANT_ACTIVE == 0 {
        // A prefix points at an id the agent has not configured (yet): treat as unmatched.
        debug!(ctx, "prefix maps to unconfigured tenant {}", id);
        return unmatched(cfg, frame_len);
    }
    let now = now();
    // Before the packet's token type: the rules loop leaves many register states behind, and
    // the verifier walks the rescale once for each that reaches it.
    // SAFETY: `state` points into the array map's value for `id`.
    unsafe {
        let epoch = &raw mut (*state).epoch;
        let seen = core::ptr::read_volatile(epoch);
        // Ordered: a CPU still holding an older config never moves the words back to it.
        if tc.epoch > seen
            && bucket::cas(epoch, seen, tc.epoch)
            && !spend::rescale_all(tc, state, now)
        {
            // A bucket moved under the conversion: hand the epoch back, so the next packet
            // converts what is left (a word left in its old scale would read, after a tenfold
            // raise, as ten times the debt, and after a cut as tokens nobody paid for).
            bucket::cas(epoch, tc.epoch, seen);
        }
    }
    let ty = classify::token_type(ctx, cfg, ip);
    let outcome = spend::spend(ctx, cfg, tc, state, ty, now, len, ip);
    if let Some(c) = TENANT_COUNTERS.get_ptr_mut(id) {
        // SAFETY: per-CPU value: only this CPU writes it, and preemption is off in XDP.
        let n = unsafe {
            let p = &mut (*c).packets[ty][outcome];
            *p += 1;
            (*c).bytes[ty][outcome] += len;
            *p
        };
        let shift = cfg.flow_sample_shift;
        if shift != FLOWS_OFF && n & ((1u64 << (shift & 31)) - 1) == 0 {
            let key = flows::key(ctx, ip, addrs);
            flows::sample(&key, id, ty, outcome, len, now, shift & 31);
        }
    }
    if outcome == OUTCOME_DROPPED {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
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
