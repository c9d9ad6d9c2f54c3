//! The spending order: the pre-allocated pool (deposits, then its fill), the token type's
//! bucket and, if allowed, lower types', the opportunistic pool (borrowing up to the ceiling
//! through the link bucket), the emergency pool; and the rescale of every bucket after the
//! agent changed a tenant's rates, so tokens are neither lost nor minted.
use aya_ebpf::programs::XdpContext;
use shaper_common::{
    BucketParams, GLOBAL_BORROW, GLOBAL_FALLBACK, GLOBAL_YIELD, GlobalConfig, GlobalState,
    OUTCOME_BORROWED, OUTCOME_DROPPED, OUTCOME_EMERGENCY, OUTCOME_GREEN, OUTCOME_MARKED,
    OUTCOME_PRE, TENANT_BORROW, TENANT_ECN, TENANT_EMERGENCY, TOKEN_TYPES, TenantConfig,
    TenantState,
};

use crate::parse::IpInfo;
use crate::{GLOBAL_STATE, LINK_PENDING, bucket, ecn};

/// The spending order. Returns the outcome.
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "inlined: the packet context, its parsed fields and the maps it spends from"
)]
pub(crate) fn spend(
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
    let global = GLOBAL_STATE.get_ptr_mut(0);
    // Pre-allocated bytes are above the tenant's rate: like borrowed ones, they stop while the
    // link is over capacity (the allocator lends them out of capacity predicted idle; when the
    // prediction is wrong, a lower tier's reservation must not outrank a higher tier's
    // contract). The packet then tries the tenant's own bucket.
    if has_pre(tc)
        && !global.is_some_and(|g| unsafe { over_capacity(cfg, g, now) })
        && unsafe { pre_allocated(tc, state, now, len) }
    {
        charge_link(cfg, now, len);
        return OUTCOME_PRE;
    }
    if yields(cfg, tc, now) {
        return OUTCOME_DROPPED;
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
                && unsafe { ecn::crossed_mark_level(state, k, room, tc.mark_ns[k]) }
            {
                ecn::mark_ce(ctx, ip);
                return OUTCOME_MARKED;
            }
            return OUTCOME_GREEN;
        }
    }
    if tc.flags & TENANT_BORROW != 0
        && cfg.flags & GLOBAL_BORROW != 0
        && tc.borrow.burst_ns != 0
        && let Some(g) = global
        && unsafe { borrow(cfg, tc, state, g, now, len) }
    {
        charge_capacity(cfg, now, len);
        return OUTCOME_BORROWED;
    }
    if tc.flags & TENANT_EMERGENCY != 0
        && cfg.emergency_burst_ns != 0
        && let Some(g) = global
        && !unsafe { over_capacity(cfg, g, now) }
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
        // In the link bucket too: with precedence it spans the whole link, reserve included.
        charge_link(cfg, now, len);
        return OUTCOME_EMERGENCY;
    }
    OUTCOME_DROPPED
}

/// Drop precedence: traffic within any tenant's rate outranks traffic above it (borrowed,
/// emergency, pre-allocated), so those stop once the link is over capacity, before bronze's
/// own traffic yields (at half its depth). The link bucket alone cannot say so: its debt is
/// bounded.
///
/// # Safety
/// `global` points into `GLOBAL_STATE`.
#[inline(always)]
unsafe fn over_capacity(cfg: &GlobalConfig, global: *mut GlobalState, now: u64) -> bool {
    // SAFETY: caller guarantees `global`.
    cfg.flags & GLOBAL_YIELD != 0
        && cfg.yield_ns[0] != 0
        && unsafe { in_use_past(global, now, cfg.yield_ns[0] / 2) }
}

/// The capacity word is in use past `depth` ns: the link has carried that much more than its
/// capacity lately.
///
/// # Safety
/// `global` points into `GLOBAL_STATE`.
#[inline(always)]
unsafe fn in_use_past(global: *const GlobalState, now: u64, depth: u64) -> bool {
    // SAFETY: caller guarantees `global`: an array map value, valid and aligned.
    unsafe { core::ptr::read_volatile(&raw const (*global).cap_tat) > now.saturating_add(depth) }
}

/// Drop precedence: the link is really over capacity (the capacity word in use beyond the
/// tenant's tier's yield depth), so this tier's own traffic gives way to higher tiers' before
/// the downstream queue drops everyone's alike. One read of the shared word, only for tiers
/// that yield.
#[inline(always)]
fn yields(cfg: &GlobalConfig, tc: &TenantConfig, now: u64) -> bool {
    let y = cfg.yield_ns[(tc.tier as usize) & 3];
    if y == 0 {
        return false;
    }
    // SAFETY: an array map value, valid and aligned for the program's run.
    GLOBAL_STATE
        .get_ptr(0)
        .is_some_and(|g| unsafe { in_use_past(g, now, y) })
}

/// After a change of rates or depths: every changed bucket keeps its tokens (see
/// `bucket::rescale`). Runs on the CPU that won the epoch word. Returns false when a bucket's
/// word changed under it (another CPU spent meanwhile): that bucket is left in its old
/// parameters, recorded as such, for the caller to hand the epoch back so the next packet
/// converts it (the others, already in the new parameters, are then skipped).
///
/// # Safety
/// `state` points into `TENANT_STATE`.
#[inline(never)]
pub(crate) unsafe fn rescale_all(tc: &TenantConfig, state: *mut TenantState, now: u64) -> bool {
    // SAFETY: caller guarantees `state`; indexes are below the array lengths.
    unsafe {
        let set = &raw mut (*state).applied_set;
        let applied: *mut BucketParams = (&raw mut (*state).applied).cast();
        // What the words are in: the last parameters applied here, or before any, what the
        // agent saw live (copied in once, so every read below is of one map value).
        if core::ptr::read_volatile(set) == 0 {
            // Field by field: a copy of the whole array would go through the stack.
            for k in 0..shaper_common::RESCALED {
                let p = tc.prev[k];
                core::ptr::write_volatile(&raw mut (*applied.add(k)).cost_fp, p.cost_fp);
                core::ptr::write_volatile(&raw mut (*applied.add(k)).burst_ns, p.burst_ns);
            }
            core::ptr::write_volatile(set, 1);
        }
        let each = |tat: *mut u64, k: usize, n: &BucketParams| {
            let o = core::ptr::read_volatile(applied.add(k));
            let done = bucket::rescale(tat, now, o.cost_fp, o.burst_ns, n.cost_fp, n.burst_ns);
            if done {
                core::ptr::write_volatile(applied.add(k), *n);
            }
            done
        };
        let a = each(&raw mut (*state).tat[0], 0, &tc.types[0]);
        let b = each(&raw mut (*state).tat[1], 1, &tc.types[1]);
        let c = each(&raw mut (*state).tat[2], 2, &tc.types[2]);
        let d = each(&raw mut (*state).pre_tat, TOKEN_TYPES, &tc.pre);
        let e = each(&raw mut (*state).borrow_tat, TOKEN_TYPES + 1, &tc.borrow);
        a & b & c & d & e
    }
}

/// A pre-allocated pool or a deposit, now or before: two loads of the config on the common
/// path. A tenant that had a deposit keeps spending its credit until it expires, even when the
/// cycles after it grant no pool (a cap of 0 would otherwise strand it).
#[inline(always)]
fn has_pre(tc: &TenantConfig) -> bool {
    tc.pre_cap_bytes != 0 || tc.deposit_seq != 0
}

/// The pre-allocated pool: first a pending deposit is applied (once, by whichever CPU wins
/// the sequence word), then the deposit credit is spent unless expired, then the pool's fill.
///
/// # Safety
/// `state` points into `TENANT_STATE`.
#[inline(always)]
unsafe fn pre_allocated(tc: &TenantConfig, state: *mut TenantState, now: u64, len: u64) -> bool {
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

/// Adds a deposit to the credit, clamped to the cap, and records what was added. An atomic
/// add, not a compare-and-swap that could give up under contention after the deposit's
/// sequence number was taken (and lose it). Only the CPU that took the sequence number adds;
/// others only take credit away, so the credit never passes the cap (a packet that spent
/// credit meanwhile leaves the deposit a little short of the room it made).
///
/// # Safety
/// As [`pre_allocated`].
#[inline(always)]
unsafe fn add_credit(state: *mut TenantState, amount: u64, cap: u64) {
    // SAFETY: caller guarantees `state`.
    unsafe {
        let credit = &raw mut (*state).credit;
        let c = core::ptr::read_volatile(credit);
        let add = amount.min(cap.saturating_sub(c));
        if add != 0 {
            bucket::add(credit, add);
            bucket::add(&raw mut (*state).deposited, add);
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
        if over_capacity(cfg, global, now) {
            return false;
        }
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
/// busy the link is, and to the capacity word, so yielding tiers see when it is over
/// capacity; only what some tenant reads (borrowing, drop precedence).
#[inline(always)]
fn charge_link(cfg: &GlobalConfig, now: u64, len: u64) {
    if cfg.flags & GLOBAL_BORROW != 0 {
        fold(0, cfg, now, len);
    }
    charge_capacity(cfg, now, len);
}

/// Charges a packet to the capacity word alone (borrowed packets, already in the link
/// bucket), while drop precedence is on.
#[inline(always)]
fn charge_capacity(cfg: &GlobalConfig, now: u64, len: u64) {
    if cfg.flags & GLOBAL_YIELD != 0 {
        fold(1, cfg, now, len);
    }
}

/// Bytes gather per CPU and fold into shared word `k` (0: link, 1: capacity) in batches of
/// `link_fold_bytes`: sharing one word on every packet halved the packet rate of two CPUs
/// (BENCHMARKS.md).
#[inline(always)]
fn fold(k: u32, cfg: &GlobalConfig, now: u64, len: u64) {
    let Some(pending) = LINK_PENDING.get_ptr_mut(k) else {
        return;
    };
    // SAFETY: a per-CPU value: only this CPU touches it, with preemption off.
    let total = unsafe {
        *pending += len;
        *pending
    };
    if total < cfg.link_fold_bytes {
        return;
    }
    if let Some(g) = GLOBAL_STATE.get_ptr_mut(0) {
        // SAFETY: an array map value, valid and aligned for the program's run; `pending` as
        // above.
        unsafe {
            if k == 0 {
                let ns = bucket::cost(total, cfg.link_cost_fp);
                bucket::charge(&raw mut (*g).link_tat, now, ns, cfg.link_max_ns);
            } else {
                let ns = bucket::cost(total, cfg.cap_cost_fp);
                bucket::charge(&raw mut (*g).cap_tat, now, ns, cfg.cap_max_ns);
            }
            *pending = 0;
        }
    }
}
