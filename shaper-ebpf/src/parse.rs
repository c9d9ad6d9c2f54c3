//! Frame parser: Ethernet, up to two VLAN tags (802.1Q, 802.1ad), a PPPoE session carrying
//! IPv4 or IPv6, IPv4 with options, IPv6.
//! Every read goes through [`bytes_at`], which checks it against `data_end` next to the read.
use aya_ebpf::programs::XdpContext;

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const ETH_P_PPPOE_SESSION: u16 = 0x8864;
/// PPPoE session header (version/type, code, session, length) and the PPP protocol field.
const PPPOE_HLEN: usize = 8;
const PPP_IPV4: u16 = 0x0021;
const PPP_IPV6: u16 = 0x0057;
/// The furthest an IP header can start: two tags and a PPPoE header.
const MAX_L3: usize = ETH_HLEN + MAX_VLAN_TAGS * VLAN_HLEN + PPPOE_HLEN;
pub const ETH_P_ARP: u16 = 0x0806;
const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
/// Tags parsed before giving up on a frame (QinQ is two).
const MAX_VLAN_TAGS: usize = 2;

/// What the parser found. `len` is the IP length the bucket charges.
pub enum Parsed {
    NonIp {
        vlan: bool,
        /// ARP always passes: without it, a bridge would carry no IPv4 at all.
        arp: bool,
    },
    Malformed {
        vlan: bool,
    },
    V4 {
        src: [u8; 4],
        dst: [u8; 4],
        len: u64,
        vlan: bool,
        ip: IpInfo,
    },
    V6 {
        src: [u8; 16],
        dst: [u8; 16],
        len: u64,
        vlan: bool,
        ip: IpInfo,
    },
}

/// What the token-type rules, the ECN marker and the flow table need of an IP packet.
#[derive(Clone, Copy)]
pub struct IpInfo {
    /// The IP header's offset in the frame.
    pub l3: usize,
    pub v4: bool,
    /// The ECN field (0: not ECN-capable).
    pub ecn: u8,
    pub dscp: u8,
    /// IPv4 protocol, or IPv6's upper-layer header after the extension headers skipped.
    pub proto: u8,
    /// Offset of the transport header, 0 when there is none to read ports from (a later
    /// fragment, an unknown extension header).
    pub l4: usize,
}

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_DSTOPTS: u8 = 60;
/// IPv6 extension headers skipped looking for the transport header.
const MAX_EXT_HEADERS: usize = 3;

/// Source and destination port of a TCP, UDP or SCTP header at `l4` (all three start with
/// them), or zeros.
#[inline(always)]
pub fn ports(ctx: &XdpContext, ip: &IpInfo) -> (u16, u16) {
    if ip.l4 == 0 || !matches!(ip.proto, 6 | 17 | 132) {
        return (0, 0);
    }
    match bytes_at::<4>(ctx, ip.l4) {
        Some(p) => (
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        ),
        None => (0, 0),
    }
}

/// `N` bytes at `offset`, or `None` if the frame is shorter.
#[inline(always)]
fn bytes_at<const N: usize>(ctx: &XdpContext, offset: usize) -> Option<[u8; N]> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + N > end {
        return None;
    }
    // SAFETY: the range [start+offset, start+offset+N) was just checked against data_end.
    Some(unsafe { core::ptr::read_unaligned((start + offset) as *const [u8; N]) })
}

/// Always 0 at run time (nothing writes it), but the verifier cannot know that: the IP header's
/// offset mixed with it is a bounded unknown, so frames with no, one or two tags, with or without
/// PPPoE, are verified as one path from there on instead of six (each path is the whole
/// classify-and-spend program: six copies went past the verifier's budget).
#[unsafe(no_mangle)]
static mut OPAQUE_ZERO: usize = 0;

/// `offset` as a value the verifier only knows to be at most [`MAX_L3`]: the same unknown
/// whichever constant it was, so the paths meet. (An `|` would keep the constant's bits known,
/// a `min` would fork a path at the bound.)
#[inline(always)]
fn opaque_offset(offset: usize) -> Option<usize> {
    // SAFETY: a plain read of a global nobody writes; volatile so the compiler keeps it.
    let zero = unsafe { core::ptr::read_volatile(&raw const OPAQUE_ZERO) };
    let offset = offset.wrapping_add(zero);
    (offset <= MAX_L3).then_some(offset)
}

#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Parsed {
    let Some(eth) = bytes_at::<ETH_HLEN>(ctx, 0) else {
        return Parsed::Malformed { vlan: false };
    };
    let mut ethertype = u16::from_be_bytes([eth[12], eth[13]]);
    let mut offset = ETH_HLEN;
    let mut vlan = false;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let Some(tag) = bytes_at::<VLAN_HLEN>(ctx, offset) else {
            return Parsed::Malformed { vlan: true };
        };
        ethertype = u16::from_be_bytes([tag[2], tag[3]]);
        offset += VLAN_HLEN;
        vlan = true;
    }
    let mut avail = (ctx.data_end() - ctx.data()) - offset;
    if ethertype == ETH_P_PPPOE_SESSION {
        let Some(p) = bytes_at::<PPPOE_HLEN>(ctx, offset) else {
            return Parsed::Malformed { vlan };
        };
        // The session's length counts the PPP protocol field and what follows it.
        let ppp_len = u16::from_be_bytes([p[4], p[5]]) as usize;
        if p[0] != 0x11 || p[1] != 0 || ppp_len < 2 || ppp_len + 6 > avail {
            return Parsed::Malformed { vlan };
        }
        ethertype = match u16::from_be_bytes([p[6], p[7]]) {
            PPP_IPV4 => ETH_P_IPV4,
            PPP_IPV6 => ETH_P_IPV6,
            // LCP, IPCP, authentication: the session's control traffic.
            _ => return Parsed::NonIp { vlan, arp: false },
        };
        offset += PPPOE_HLEN;
        avail = ppp_len - 2;
    }
    if ethertype != ETH_P_IPV4 && ethertype != ETH_P_IPV6 {
        // ARP, LLDP, a third VLAN tag, MPLS, anything else: not a tenant's IP packet.
        return Parsed::NonIp {
            vlan,
            arp: ethertype == ETH_P_ARP,
        };
    }
    let Some(offset) = opaque_offset(offset) else {
        return Parsed::Malformed { vlan };
    };
    match ethertype {
        ETH_P_IPV4 => parse_v4(ctx, offset, avail, vlan),
        ETH_P_IPV6 => parse_v6(ctx, offset, avail, vlan),
        _ => Parsed::NonIp { vlan, arp: false },
    }
}

#[inline(always)]
fn parse_v4(ctx: &XdpContext, offset: usize, avail: usize, vlan: bool) -> Parsed {
    let Some(h) = bytes_at::<IPV4_MIN_HLEN>(ctx, offset) else {
        return Parsed::Malformed { vlan };
    };
    let ihl = ((h[0] & 0x0f) as usize) * 4;
    let total = u16::from_be_bytes([h[2], h[3]]) as usize;
    // Options are not read, but they must be there: the header must fit in the packet, and the
    // packet in the frame (the tail may be Ethernet padding).
    if h[0] >> 4 != 4 || ihl < IPV4_MIN_HLEN || total < ihl || total > avail {
        return Parsed::Malformed { vlan };
    }
    // A later fragment (offset != 0) carries no transport header.
    let later_fragment = (u16::from_be_bytes([h[6], h[7]]) & 0x1fff) != 0;
    Parsed::V4 {
        src: [h[12], h[13], h[14], h[15]],
        dst: [h[16], h[17], h[18], h[19]],
        len: total as u64,
        vlan,
        ip: IpInfo {
            l3: offset,
            v4: true,
            ecn: h[1] & 0x03,
            dscp: h[1] >> 2,
            proto: h[9],
            l4: if later_fragment { 0 } else { offset + ihl },
        },
    }
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext, offset: usize, avail: usize, vlan: bool) -> Parsed {
    let Some(h) = bytes_at::<IPV6_HLEN>(ctx, offset) else {
        return Parsed::Malformed { vlan };
    };
    let payload = u16::from_be_bytes([h[4], h[5]]) as usize;
    // Payload length 0 is a jumbogram (hop-by-hop option); charge what the frame carries.
    let total = if payload == 0 {
        avail
    } else {
        IPV6_HLEN + payload
    };
    if h[0] >> 4 != 6 || total > avail {
        return Parsed::Malformed { vlan };
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    dst.copy_from_slice(&h[24..40]);
    let (proto, l4) = v6_transport(ctx, h[6], offset + IPV6_HLEN);
    Parsed::V6 {
        src,
        dst,
        len: total as u64,
        vlan,
        ip: IpInfo {
            l3: offset,
            v4: false,
            // Traffic class spans bytes 0-1: its low two bits are bits 4-5 of byte 1.
            ecn: (h[1] >> 4) & 0x03,
            dscp: ((h[0] & 0x0f) << 2) | (h[1] >> 6),
            proto,
            l4,
        },
    }
}

/// Skips up to [`MAX_EXT_HEADERS`] IPv6 extension headers (hop-by-hop, routing, destination
/// options, fragment) from `next` at `offset`: the upper-layer protocol and its offset, or
/// offset 0 if it cannot be reached (truncated, a later fragment, too many headers).
#[inline(always)]
fn v6_transport(ctx: &XdpContext, mut next: u8, mut offset: usize) -> (u8, usize) {
    for _ in 0..MAX_EXT_HEADERS {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let Some(e) = bytes_at::<2>(ctx, offset) else {
                    return (next, 0);
                };
                next = e[0];
                offset += (e[1] as usize + 1) * 8;
            }
            IPPROTO_FRAGMENT => {
                let Some(e) = bytes_at::<4>(ctx, offset) else {
                    return (next, 0);
                };
                next = e[0];
                offset += 8;
                if u16::from_be_bytes([e[2], e[3]]) >> 3 != 0 {
                    return (next, 0);
                }
            }
            _ => return (next, offset),
        }
    }
    match next {
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT => (next, 0),
        _ => (next, offset),
    }
}
