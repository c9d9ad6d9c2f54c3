//! ECN: a tenant that asks for it has its ECN-capable packets marked CE while a bucket runs
//! low, before it is empty, so TCP backs off instead of losing packets.
use aya_ebpf::programs::XdpContext;
use shaper_common::TenantState;

use crate::bucket;
use crate::parse::IpInfo;

/// True if a packet leaving `room` in type `k`'s bucket takes it below a marking level
/// (`mark`, `mark / 2`, `mark / 4`) it was not below yet, or leaves it below the last one;
/// records the levels it is below now.
///
/// # Safety
/// `state` points into `TENANT_STATE`.
#[inline(always)]
pub(crate) unsafe fn crossed_mark_level(
    state: *mut TenantState,
    k: usize,
    room: u64,
    mark: u64,
) -> bool {
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

/// Sets the ECN field to CE (11). IPv4's header checksum is updated incrementally (RFC 1624:
/// HC' = ~(~HC + ~m + m') over the 16-bit word holding the TOS byte); IPv6 has none.
#[inline(always)]
pub(crate) fn mark_ce(ctx: &XdpContext, ip: &IpInfo) {
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
