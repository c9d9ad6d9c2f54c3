//! Flow sampling: one packet in 2^`flow_sample_shift` of each tenant x type x outcome updates
//! the LRU flow table, scaled by the sampling rate, for `shaper stats --flows`.
use aya_ebpf::bindings::BPF_NOEXIST;
use aya_ebpf::programs::XdpContext;
use shaper_common::{FlowKey, FlowStats, OUTCOME_DROPPED};

use crate::parse::{self, IpInfo};
use crate::{FLOWS, bucket};

/// A packet's addresses, for the flow table (built only for sampled packets).
#[derive(Clone, Copy)]
pub(crate) enum Addrs<'a> {
    V4(&'a [u8; 4], &'a [u8; 4]),
    V6(&'a [u8; 16], &'a [u8; 16]),
}

/// The flow a packet belongs to.
#[inline(always)]
pub(crate) fn key(ctx: &XdpContext, ip: &IpInfo, addrs: Addrs) -> FlowKey {
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
    key
}

/// Counts a sampled packet into its flow's entry, scaled by the sampling rate.
#[inline(always)]
pub(crate) fn sample(
    key: &FlowKey,
    id: u32,
    ty: usize,
    outcome: usize,
    len: u64,
    now: u64,
    shift: u8,
) {
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
