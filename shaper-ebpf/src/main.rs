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
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST, xdp_action},
    macros::{map, xdp},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use shaper_common::{
    CLASS_IPV4, CLASS_IPV6, CLASS_MALFORMED, CLASS_NON_IP, CLASS_UNMATCHED_DROPPED,
    CLASS_UNMATCHED_PASSED, CLASS_VLAN, CLASSES, CONFIG_MAGIC, DEFAULT_MAX_TENANTS, FLOWS_OFF,
    FlowKey, FlowStats, GLOBAL_BORROW, GLOBAL_FALLBACK, GlobalConfig, GlobalState, MATCH_SRC,
    MAX_RULES, OUTCOME_BORROWED, OUTCOME_DROPPED, OUTCOME_EMERGENCY, OUTCOME_GREEN, OUTCOME_MARKED,
    OUTCOME_PRE, PacketCount, PrefixKeyV4, PrefixKeyV6, RULE_DPORT, RULE_DSCP, RULE_PROTO,
    RULE_SPORT, TENANT_ACTIVE, TENANT_BORROW, TENANT_ECN, TENANT_EMERGENCY, TOKEN_TYPES,
    TenantConfig, TenantCounters, TenantState, TokenRules, UNMATCHED_DROP, V4_KEY_BYTES,
    V6_KEY_BYTES,
};

use crate::parse::{IpInfo, Parsed};

/// Load-time constant (`EbpfLoader::set_global`): [`shaper_common::CLOCK_COARSE`] reads the
/// jiffy clock (about 20 ns cheaper here) instead of the nanosecond one. The verifier sees it
/// as a constant and drops the branch not taken.
#[unsafe(no_mangle)]
static CLOCK: u8 = shaper_common::CLOCK_PRECISE;

/// Agent-written: match direction, unmatched action, token-type defaults, global pools.
#[map]
static GLOBAL_CONFIG: Array<GlobalConfig> = Array::with_max_entries(1, 0);

/// Agent-written: the token-type rules, in order.
#[map]
static TOKEN_RULES: Array<TokenRules> = Array::with_max_entries(1, 0);

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

/// Datapath-written: per-tenant bucket state.
#[map]
static TENANT_STATE: Array<TenantState> = Array::with_max_entries(DEFAULT_MAX_TENANTS, 0);

/// Datapath-written: per-CPU packets and bytes per tenant, token type and outcome.
#[map]
static TENANT_COUNTERS: PerCpuArray<TenantCounters> =
    PerCpuArray::with_max_entries(DEFAULT_MAX_TENANTS, 0);

/// Datapath-written: per-CPU packets and frame bytes per packet class.
#[map]
static GLOBAL_COUNTERS: PerCpuArray<PacketCount> = PerCpuArray::with_max_entries(CLASSES, 0);

/// Datapath-written, per CPU: link charges not yet folded into the shared link word (ns).
#[map]
static LINK_PENDING: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Datapath-written: sampled active flows, least recently used evicted first.
#[map]
static FLOWS: LruHashMap<FlowKey, FlowStats> = LruHashMap::with_max_entries(65_536, 0);

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
                Addrs::V4(&src, &dst),
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
                Addrs::V6(&src, &dst),
            )
        }
    }
}

/// The agent's global config, by reference (it is 96 bytes: no copy per packet), or `None`
/// before an agent wrote one.
#[inline(always)]
fn global_config() -> Option<&'static GlobalConfig> {
    GLOBAL_CONFIG.get(0).filter(|cfg| cfg.magic == CONFIG_MAGIC)
}

/// Before any config: no tenants, so every IP packet is unmatched, and passes.
#[inline(always)]
fn unconfigured(frame_len: u64) -> u32 {
    count_class(CLASS_UNMATCHED_PASSED, frame_len, false);
    xdp_action::XDP_PASS
}

/// A packet's addresses, for the flow table (built only for sampled packets).
#[derive(Clone, Copy)]
enum Addrs<'a> {
    V4(&'a [u8; 4], &'a [u8; 4]),
    V6(&'a [u8; 16], &'a [u8; 16]),
}

/// The packet's token type: the first rule that matches, else the default.
#[inline(always)]
fn token_type(ctx: &XdpContext, cfg: &GlobalConfig, ip: &IpInfo) -> usize {
    let fallback = (cfg.default_type as usize).min(TOKEN_TYPES - 1);
    let n = cfg.nrules as usize;
    if n == 0 {
        return fallback;
    }
    let Some(rules) = TOKEN_RULES.get(0) else {
        return fallback;
    };
    let (sport, dport) = parse::ports(ctx, ip);
    for i in 0..MAX_RULES {
        if i >= n {
            break;
        }
        let Some(r) = rules.rules.get(i) else {
            break;
        };
        if r.flags & RULE_DSCP != 0 && r.dscp_mask & (1u64 << (ip.dscp & 63)) == 0 {
            continue;
        }
        if r.flags & RULE_PROTO != 0 && r.proto != ip.proto {
            continue;
        }
        if r.flags & RULE_DPORT != 0 && !r.dports.contains(&dport) {
            continue;
        }
        if r.flags & RULE_SPORT != 0 && !r.sports.contains(&sport) {
            continue;
        }
        return (r.token_type as usize).min(TOKEN_TYPES - 1);
    }
    fallback
}

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
    addrs: Addrs,
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
    let ty = token_type(ctx, cfg, ip);
    let now = now();
    // SAFETY: `state` points into the array map's value for `id`.
    unsafe {
        let epoch = &raw mut (*state).epoch;
        let seen = core::ptr::read_volatile(epoch);
        if tc.epoch != seen && bucket::cas(epoch, seen, tc.epoch) {
            rescale_all(tc, state, now);
        }
    }
    let outcome = spend(ctx, cfg, tc, state, ty, now, len, ip);
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
            let mut key = FlowKey {
                proto: ip.proto,
                ..FlowKey::default()
            };
            match addrs {
                Addrs::V4(s, d) => {
                    key.family = 4;
                    key.src[..4].copy_from_slice(s);
                    key.dst[..4].copy_from_slice(d);
                }
                Addrs::V6(s, d) => {
                    key.family = 6;
                    key.src = *s;
                    key.dst = *d;
                }
            }
            (key.sport, key.dport) = parse::ports(ctx, ip);
            sample_flow(&key, id, ty, outcome, len, now, shift & 31);
        }
    }
    if outcome == OUTCOME_DROPPED {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// The spending order. Returns the outcome.
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "inlined: the packet context, its parsed fields and the maps it spends from"
)]
fn spend(
    ctx: &XdpContext,
    cfg: &GlobalConfig,
    tc: &TenantConfig,
    state: *mut TenantState,
    ty: usize,
    now: u64,
    len: u64,
    ip: &IpInfo,
) -> usize {
    // SAFETY (every block below): `state` and the global state point into array map values,
    // valid and 8-byte aligned for the program's run; indexes are below the array lengths.
    if unsafe { pre_allocated(tc, state, now, len) } {
        charge_link(cfg, now, len);
        return OUTCOME_PRE;
    }
    let last = if cfg.flags & GLOBAL_FALLBACK != 0 {
        TOKEN_TYPES - 1
    } else {
        ty
    };
    for k in 0..TOKEN_TYPES {
        if k < ty || k > last {
            continue;
        }
        let p = tc.types[k];
        if p.burst_ns == 0 {
            continue;
        }
        let tat = unsafe { &raw mut (*state).tat[k] };
        if let Some(room) = unsafe { bucket::spend(tat, now, len, p.cost_fp, p.burst_ns) } {
            charge_link(cfg, now, len);
            // Low bucket, ECN-capable packet, tenant asked for it: mark CE rather than let the
            // bucket run dry and drop.
            if tc.flags & TENANT_ECN != 0
                && ip.ecn != 0
                && unsafe { crossed_mark_level(state, k, room, tc.mark_ns[k]) }
            {
                mark_ce(ctx, ip);
                return OUTCOME_MARKED;
            }
            return OUTCOME_GREEN;
        }
    }
    let global = GLOBAL_STATE.get_ptr_mut(0);
    if tc.flags & TENANT_BORROW != 0
        && cfg.flags & GLOBAL_BORROW != 0
        && tc.borrow.burst_ns != 0
        && let Some(g) = global
        && unsafe { borrow(cfg, tc, state, g, now, len) }
    {
        return OUTCOME_BORROWED;
    }
    if tc.flags & TENANT_EMERGENCY != 0
        && cfg.emergency_burst_ns != 0
        && let Some(g) = global
        && unsafe {
            bucket::spend(
                &raw mut (*g).emergency_tat,
                now,
                len,
                cfg.emergency_cost_fp,
                cfg.emergency_burst_ns,
            )
        }
        .is_some()
    {
        return OUTCOME_EMERGENCY;
    }
    OUTCOME_DROPPED
}

/// True if a packet leaving `room` in type `k`'s bucket takes it below a marking level
/// (`mark`, `mark / 2`, `mark / 4`) it was not below yet, or leaves it below the last one;
/// records the levels it is below now.
///
/// # Safety
/// `state` points into `TENANT_STATE`.
#[inline(always)]
unsafe fn crossed_mark_level(state: *mut TenantState, k: usize, room: u64, mark: u64) -> bool {
    let below: u64 = if room >= mark {
        0
    } else if room >= mark / 2 {
        0b001
    } else if room >= mark / 4 {
        0b011
    } else {
        0b111
    };
    let shift = 3 * (k as u64 & 3);
    // SAFETY: caller guarantees `state`.
    unsafe {
        let word = &raw mut (*state).ecn_levels;
        let cur = core::ptr::read_volatile(word);
        let was = (cur >> shift) & 0b111;
        if was == below {
            // Below the last level the bucket is nearly empty: every packet is marked, so a
            // flow still too fast after its cut is told again next round trip.
            return below == 0b111;
        }
        // One try: a CPU that loses the race leaves the other's record, at worst one mark
        // more or fewer.
        bucket::cas(word, cur, (cur & !(0b111 << shift)) | (below << shift));
        below & !was != 0
    }
}

/// After a change of rates or depths: every changed bucket keeps its tokens (see
/// `bucket::rescale`). Runs once per change, on the CPU that won the epoch word.
///
/// # Safety
/// `state` points into `TENANT_STATE`.
#[inline(never)]
unsafe fn rescale_all(tc: &TenantConfig, state: *mut TenantState, now: u64) {
    // SAFETY: caller guarantees `state`; indexes are below the array lengths.
    unsafe {
        for k in 0..TOKEN_TYPES {
            let (o, n) = (tc.prev[k], tc.types[k]);
            let tat = &raw mut (*state).tat[k];
            bucket::rescale(tat, now, o.cost_fp, o.burst_ns, n.cost_fp, n.burst_ns);
        }
        let (o, n) = (tc.prev[TOKEN_TYPES], tc.pre);
        let tat = &raw mut (*state).pre_tat;
        bucket::rescale(tat, now, o.cost_fp, o.burst_ns, n.cost_fp, n.burst_ns);
        let (o, n) = (tc.prev[TOKEN_TYPES + 1], tc.borrow);
        let tat = &raw mut (*state).borrow_tat;
        bucket::rescale(tat, now, o.cost_fp, o.burst_ns, n.cost_fp, n.burst_ns);
    }
}

/// The pre-allocated pool: first a pending deposit is applied (once, by whichever CPU wins
/// the sequence word), then the deposit credit is spent unless expired, then the pool's fill.
///
/// # Safety
/// `state` points into `TENANT_STATE`.
#[inline(always)]
unsafe fn pre_allocated(tc: &TenantConfig, state: *mut TenantState, now: u64, len: u64) -> bool {
    // No pool (its cap bounds both the fill and the deposits): one load on the common path.
    if tc.pre_cap_bytes == 0 {
        return false;
    }
    // SAFETY: caller guarantees `state`; fields of a repr(C) struct of u64s are aligned.
    unsafe {
        let seq = &raw mut (*state).deposit_seq;
        let applied = core::ptr::read_volatile(seq);
        if tc.deposit_seq > applied && bucket::cas(seq, applied, tc.deposit_seq) {
            add_credit(state, tc.deposit_bytes, tc.pre_cap_bytes);
        }
        let credit = &raw mut (*state).credit;
        let c = core::ptr::read_volatile(credit);
        if c != 0 {
            if now >= tc.deposit_expires_ns {
                if bucket::cas(credit, c, 0) {
                    bucket::add(&raw mut (*state).expired, c);
                }
            } else if bucket::take(credit, len) {
                return true;
            }
        }
        tc.pre.burst_ns != 0
            && tc.pre.cost_fp != 0
            && bucket::spend(
                &raw mut (*state).pre_tat,
                now,
                len,
                tc.pre.cost_fp,
                tc.pre.burst_ns,
            )
            .is_some()
    }
}

/// Adds a deposit to the credit, clamped to the cap, and records what was added.
///
/// # Safety
/// As [`pre_allocated`].
#[inline(always)]
unsafe fn add_credit(state: *mut TenantState, amount: u64, cap: u64) {
    // SAFETY: caller guarantees `state`.
    unsafe {
        let credit = &raw mut (*state).credit;
        for _ in 0..4 {
            let c = core::ptr::read_volatile(credit);
            let new = c.saturating_add(amount).min(cap);
            if new <= c {
                return;
            }
            if bucket::cas(credit, c, new) {
                bucket::add(&raw mut (*state).deposited, new - c);
                return;
            }
        }
    }
}

/// Borrowing: the tenant's borrow bucket (its ceiling minus its rate) and the link bucket, filled
/// no further than the tier's depth, must both take the packet.
///
/// # Safety
/// `state` points into `TENANT_STATE`, `global` into `GLOBAL_STATE`.
#[inline(always)]
unsafe fn borrow(
    cfg: &GlobalConfig,
    tc: &TenantConfig,
    state: *mut TenantState,
    global: *mut GlobalState,
    now: u64,
    len: u64,
) -> bool {
    let depth = cfg.borrow_depth_ns[(tc.tier as usize) & 3];
    // SAFETY: caller guarantees both pointers.
    unsafe {
        let own = &raw mut (*state).borrow_tat;
        if bucket::spend(own, now, len, tc.borrow.cost_fp, tc.borrow.burst_ns).is_none() {
            return false;
        }
        if bucket::spend(
            &raw mut (*global).link_tat,
            now,
            len,
            cfg.link_cost_fp,
            depth,
        )
        .is_some()
        {
            return true;
        }
        bucket::refund(own, bucket::cost(len, tc.borrow.cost_fp));
    }
    false
}

/// Charges a packet the tenant's own tokens paid for to the link bucket, so borrowers see how
/// busy the link is; only when some tenant may borrow (otherwise nobody reads the link
/// bucket). Charges gather per CPU and fold into the shared word in batches of
/// `link_fold_ns`: sharing one word on every packet halved the packet rate of two CPUs
/// (BENCHMARKS.md).
#[inline(always)]
fn charge_link(cfg: &GlobalConfig, now: u64, len: u64) {
    if cfg.flags & GLOBAL_BORROW == 0 {
        return;
    }
    let Some(pending) = LINK_PENDING.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a per-CPU value: only this CPU touches it, with preemption off.
    let total = unsafe {
        *pending += bucket::cost(len, cfg.link_cost_fp);
        *pending
    };
    if total < cfg.link_fold_ns {
        return;
    }
    if let Some(g) = GLOBAL_STATE.get_ptr_mut(0) {
        // SAFETY: an array map value, valid and aligned for the program's run; `pending` as
        // above.
        unsafe {
            bucket::charge(&raw mut (*g).link_tat, now, total);
            *pending = 0;
        }
    }
}

/// Counts a sampled packet into its flow's entry, scaled by the sampling rate.
#[inline(always)]
fn sample_flow(key: &FlowKey, id: u32, ty: usize, outcome: usize, len: u64, now: u64, shift: u8) {
    let scale = 1u64 << shift;
    let drops = if outcome == OUTCOME_DROPPED { scale } else { 0 };
    match FLOWS.get_ptr_mut(key) {
        // SAFETY: a hash map value, valid for the program's run; shared by CPUs, so atomics.
        Some(f) => unsafe {
            bucket::add(&raw mut (*f).packets, scale);
            bucket::add(&raw mut (*f).bytes, len << shift);
            if drops != 0 {
                bucket::add(&raw mut (*f).drops, drops);
            }
            core::ptr::write_volatile(&raw mut (*f).last_seen_ns, now);
        },
        None => {
            let v = FlowStats {
                tenant: id,
                token_type: ty as u32,
                packets: scale,
                bytes: len << shift,
                drops,
                last_seen_ns: now,
            };
            // Another CPU may have inserted it first: its entry counts, this sample is lost.
            let _ = FLOWS.insert(key, &v, u64::from(BPF_NOEXIST));
        }
    }
}

/// Sets the ECN field to CE (11). IPv4's header checksum is updated incrementally (RFC 1624:
/// HC' = ~(~HC + ~m + m') over the 16-bit word holding the TOS byte); IPv6 has none.
#[inline(always)]
fn mark_ce(ctx: &XdpContext, ip: &IpInfo) {
    let start = ctx.data();
    if start + ip.l3 + 12 > ctx.data_end() {
        return;
    }
    let h = (start + ip.l3) as *mut u8;
    // SAFETY: the 12 bytes at `h` were just checked against data_end; XDP packet data is
    // writable.
    unsafe {
        if ip.v4 {
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

/// Drops everything: the floor `cargo xtask bench compare` measures a policing drop against
/// (what receiving and dropping an XDP frame costs with no work at all).
#[xdp]
pub fn xdp_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// The ifindex `xdp_tx_gen` sends out of (benchmarks only).
#[map]
static TX_IFINDEX: Array<u32> = Array::with_max_entries(1, 0);

/// A traffic generator for `cargo xtask bench compare`: run through `BPF_PROG_TEST_RUN` with
/// live frames, it sends every frame out of the device in `TX_IFINDEX`, so a veth's peer
/// receives XDP frames (as from a NIC) rather than socket buffers.
#[xdp]
pub fn xdp_tx_gen(_ctx: XdpContext) -> u32 {
    match TX_IFINDEX.get(0) {
        // SAFETY: a helper call with plain integer arguments.
        Some(i) => unsafe { aya_ebpf::helpers::bpf_redirect(*i, 0) as u32 },
        None => xdp_action::XDP_ABORTED,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
