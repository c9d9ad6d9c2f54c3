//! The per-tenant bucket: GCRA (virtual scheduling) on one word, shared by all CPUs.
//!
//! `tat` is the theoretical arrival time of the next byte. A packet of `len` bytes costs
//! `inc = len * cost` ns; it conforms when `max(tat, now) + inc - now <= burst_ns`. While the
//! bucket is not full (`tat >= now`) the charge is a single atomic add, which never retries: two
//! CPUs that both pass the check may overshoot the depth by one packet each, never the rate,
//! because every passed byte is charged. Only the full-bucket case (`tat < now`, which must move
//! `tat` up to `now`) needs a compare-and-swap; its retry loop is bounded.
use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd};

use shaper_common::COST_SHIFT;

/// Bound on compare-and-swap retries. A loser of the race sees `tat >= now` on its next try
/// and takes the add path, so two tries suffice for any number of CPUs; four is slack.
const CAS_TRIES: u32 = 4;

/// Load-time constant (`EbpfLoader::set_global`): one jiffy in ns with the coarse clock, 0
/// with the precise one. The coarse "now" moves a jiffy at a time, so every bucket holds a
/// jiffy's tokens on top of its burst; without it, a rate whose jiffy is worth more than the
/// burst would lose the excess at every tick (a 64 kB burst at 40 Gbit/s passed 128 Mbit/s).
#[unsafe(no_mangle)]
static CLOCK_SLACK_NS: u64 = 0;

/// Spend `len` bytes. `Some(room)` if the packet conforms, with the room (as time) the bucket
/// has left after it; `None` if it does not. `tat` must point to the tenant's state word.
///
/// # Safety
/// `tat` must be a valid, 8-byte aligned pointer into a map value.
#[inline(always)]
pub unsafe fn spend(tat: *mut u64, now: u64, len: u64, cost_fp: u64, burst_ns: u64) -> Option<u64> {
    // SAFETY: a read of a load-time constant.
    let burst_ns = burst_ns + unsafe { core::ptr::read_volatile(&CLOCK_SLACK_NS) };
    // len < 2^17 and cost_fp < 2^47 for any rate the agent accepts: no overflow.
    let inc = cost(len, cost_fp);
    if inc > burst_ns {
        return None;
    }
    for _ in 0..CAS_TRIES {
        // SAFETY: caller guarantees `tat` is valid and aligned.
        let cur = unsafe { core::ptr::read_volatile(tat) };
        if cur >= now {
            let used = cur - now + inc;
            if used > burst_ns {
                return None;
            }
            // SAFETY: as above.
            unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(tat, inc) };
            return Some(burst_ns - used);
        }
        // SAFETY: as above.
        let (_, swapped) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                tat,
                cur,
                now + inc,
            )
        };
        if swapped {
            return Some(burst_ns - inc);
        }
    }
    // Lost every race: other CPUs are spending this bucket right now; dropping is the side that
    // never exceeds the rate.
    None
}

/// The cost of `len` bytes at `cost_fp`, in ns.
#[inline(always)]
pub fn cost(len: u64, cost_fp: u64) -> u64 {
    (len * cost_fp) >> COST_SHIFT
}

/// Charges `inc` ns to a bucket without checking it: traffic that another bucket (the
/// tenant's own) already allowed still uses the link. Like a conforming spend, the charge
/// starts from `max(tat, now)`: a `tat` left behind by idle time must not swallow it.
///
/// # Safety
/// As [`spend`].
#[inline(always)]
pub unsafe fn charge(tat: *mut u64, now: u64, inc: u64, max_ns: u64) {
    // SAFETY: caller guarantees `tat` is valid and aligned.
    unsafe {
        let cur = core::ptr::read_volatile(tat);
        if max_ns != 0 && cur >= now.saturating_add(max_ns) {
            // Debt bounded: past this, more charges would only delay the link's recovery.
            return;
        }
        if cur >= now || !cas(tat, cur, now + inc) {
            // Busy link (the usual case), or another CPU just moved it to `now` or later.
            add(tat, inc);
        }
    }
}

/// Atomic add to a shared counter.
///
/// # Safety
/// As [`spend`].
#[inline(always)]
pub unsafe fn add(p: *mut u64, n: u64) {
    // SAFETY: caller guarantees `p` is valid and aligned.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, n) };
}

/// Gives back `inc` ns spent by [`spend`] when a later check refused the packet.
///
/// # Safety
/// As [`spend`].
#[inline(always)]
pub unsafe fn refund(tat: *mut u64, inc: u64) {
    // SAFETY: as `add`; the add wraps, which subtracts.
    unsafe { add(tat, inc.wrapping_neg()) };
}

/// Compare-and-swap of one word: true if `*p` was `old` and is now `new`.
///
/// # Safety
/// As [`spend`].
#[inline(always)]
pub unsafe fn cas(p: *mut u64, old: u64, new: u64) -> bool {
    // SAFETY: caller guarantees `p` is valid and aligned.
    unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(p, old, new).1
    }
}

/// Takes `len` bytes from a byte counter (the deposit credit) if it holds them.
///
/// # Safety
/// As [`spend`].
#[inline(always)]
pub unsafe fn take(p: *mut u64, len: u64) -> bool {
    for _ in 0..CAS_TRIES {
        // SAFETY: caller guarantees `p` is valid and aligned.
        let cur = unsafe { core::ptr::read_volatile(p) };
        if cur < len {
            return false;
        }
        // SAFETY: as above.
        if unsafe { cas(p, cur, cur - len) } {
            return true;
        }
    }
    false
}

/// Bytes worth `ns` at `cost_fp`, without overflow for any depth the agent writes.
#[inline(always)]
fn to_bytes(ns: u64, cost_fp: u64) -> u64 {
    if ns < 1 << 47 {
        (ns << COST_SHIFT) / cost_fp.max(1)
    } else {
        ns / (cost_fp >> COST_SHIFT).max(1)
    }
}

/// Nanoseconds that `bytes` cost at `cost_fp`, for byte counts up to a bucket's depth.
#[inline(always)]
fn to_ns(bytes: u64, cost_fp: u64) -> u64 {
    bytes * (cost_fp >> COST_SHIFT) + ((bytes * (cost_fp & 0xffff)) >> COST_SHIFT)
}

/// Re-expresses a bucket built with `old` parameters in `new` ones: the tokens it holds stay
/// the same number of bytes, capped at the new depth. A bucket that had no share starts
/// empty; one losing its share is left alone (nothing spends it). False when another CPU
/// changed the word meanwhile and nothing was written.
///
/// # Safety
/// As [`spend`].
#[inline(always)]
pub unsafe fn rescale(
    tat: *mut u64,
    now: u64,
    old_cost: u64,
    old_burst: u64,
    new_cost: u64,
    new_burst: u64,
) -> bool {
    if (old_cost == new_cost && old_burst == new_burst) || new_cost == 0 || new_burst == 0 {
        return true;
    }
    // SAFETY: caller guarantees `tat` is valid and aligned.
    let cur = unsafe { core::ptr::read_volatile(tat) };
    let tokens = if old_cost == 0 || old_burst == 0 {
        0
    } else {
        let used = cur.saturating_sub(now).min(old_burst);
        to_bytes(old_burst - used, old_cost)
    };
    let tokens = tokens.min(to_bytes(new_burst, new_cost));
    let used = new_burst.saturating_sub(to_ns(tokens, new_cost));
    // One try here (a loop would multiply what the verifier walks): on failure the caller
    // leaves this bucket in its old parameters for the next packet to convert.
    // SAFETY: as above.
    unsafe { cas(tat, cur, now + used) }
}
