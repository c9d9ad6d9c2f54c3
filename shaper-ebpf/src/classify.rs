//! Address -> tenant id: hash probes per configured prefix length, or the LPM trie when a
//! family has more distinct lengths than `MAX_PREFIX_PROBES` (see `GlobalConfig`); and the
//! packet's token type from the token-type rules (DSCP, protocol, ports).
use aya_ebpf::maps::lpm_trie::Key;
use aya_ebpf::programs::XdpContext;
use shaper_common::{
    GlobalConfig, LOOKUP_LPM, MAX_PREFIX_PROBES, MAX_RULES, PrefixKeyV4, PrefixKeyV6, RULE_DPORT,
    RULE_DSCP, RULE_PROTO, RULE_SPORT, TOKEN_TYPES,
};

use crate::parse::{self, IpInfo};
use crate::{
    TENANT_BY_HASH_V4, TENANT_BY_HASH_V6, TENANT_BY_PREFIX_V4, TENANT_BY_PREFIX_V6, TOKEN_RULES,
};

#[inline(always)]
pub fn v4(cfg: &GlobalConfig, addr: [u8; 4]) -> Option<u32> {
    if cfg.v4_nprobes == LOOKUP_LPM {
        return TENANT_BY_PREFIX_V4.get(Key::new(32, addr)).copied();
    }
    let a = u32::from_be_bytes(addr);
    for i in 0..MAX_PREFIX_PROBES {
        if i >= cfg.v4_nprobes as usize {
            break;
        }
        let len = u32::from(cfg.v4_probes[i]).min(32);
        let masked = if len == 0 {
            0
        } else {
            a & (u32::MAX << (32 - len))
        };
        let key = PrefixKeyV4 {
            len,
            addr: masked.to_be_bytes(),
        };
        // SAFETY: the value is a u32 copied out at once.
        if let Some(id) = unsafe { TENANT_BY_HASH_V4.get(&key) } {
            return Some(*id);
        }
    }
    None
}

#[inline(always)]
pub fn v6(cfg: &GlobalConfig, addr: [u8; 16]) -> Option<u32> {
    if cfg.v6_nprobes == LOOKUP_LPM {
        return TENANT_BY_PREFIX_V6.get(Key::new(128, addr)).copied();
    }
    let hi = u64::from_be_bytes([
        addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
    ]);
    let lo = u64::from_be_bytes([
        addr[8], addr[9], addr[10], addr[11], addr[12], addr[13], addr[14], addr[15],
    ]);
    for i in 0..MAX_PREFIX_PROBES {
        if i >= cfg.v6_nprobes as usize {
            break;
        }
        let len = u32::from(cfg.v6_probes[i]).min(128);
        // Mask each 64-bit half on its own: BPF has no 128-bit shifts.
        let hi_m = mask64(hi, len.min(64));
        let lo_m = mask64(lo, len.saturating_sub(64));
        let mut key = PrefixKeyV6 { len, addr: [0; 16] };
        key.addr[..8].copy_from_slice(&hi_m.to_be_bytes());
        key.addr[8..].copy_from_slice(&lo_m.to_be_bytes());
        // SAFETY: the value is a u32 copied out at once.
        if let Some(id) = unsafe { TENANT_BY_HASH_V6.get(&key) } {
            return Some(*id);
        }
    }
    None
}

/// The top `bits` bits of `v` (0..=64).
#[inline(always)]
fn mask64(v: u64, bits: u32) -> u64 {
    if bits == 0 {
        0
    } else {
        v & (u64::MAX << (64 - bits))
    }
}

/// The packet's token type: the first rule that matches, else the default.
#[inline(always)]
pub(crate) fn token_type(ctx: &XdpContext, cfg: &GlobalConfig, ip: &IpInfo) -> usize {
    let fallback = (cfg.default_type as usize).min(TOKEN_TYPES - 1);
    let n = cfg.nrules as usize;
    if n == 0 {
        return fallback;
    }
    let Some(rules) = TOKEN_RULES.get(u32::from(cfg.slot & 1)) else {
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
