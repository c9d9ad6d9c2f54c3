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

/// Spend `len` bytes. `Some(room)` if the packet conforms, with the room (as time) the bucket
/// has left after it; `None` if it does not. `tat` must point to the tenant's state word.
///
/// # Safety
/// `tat` must be a valid, 8-byte aligned pointer into a map value.
#[inline(always)]
pub unsafe fn spend(tat: *mut u64, now: u64, len: u64, cost_fp: u64, burst_ns: u64) -> Option<u64> {
    // len < 2^17 and cost_fp < 2^47 for any rate the agent accepts: no overflow.
    let inc = (len * cost_fp) >> COST_SHIFT;
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
