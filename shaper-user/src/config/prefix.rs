//! Tenant prefixes: IPv4 and IPv6 networks, parsed strictly (no host bits set).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IPv4 or IPv6 prefix with no host bits set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Prefix {
    V4(Ipv4Addr, u8),
    V6(Ipv6Addr, u8),
}

impl Prefix {
    pub fn parse(s: &str) -> Result<Prefix, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("'{s}' is not an IPv4 or IPv6 address/prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len: u8 = match len {
            Some(l) => l
                .parse()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("'{s}': prefix length must be 0..={max}"))?,
            None => max,
        };
        let p = match addr {
            IpAddr::V4(a) => Prefix::V4(a, len),
            IpAddr::V6(a) => Prefix::V6(a, len),
        };
        if p.masked() != p {
            return Err(format!(
                "'{s}' has host bits set; did you mean '{}'?",
                p.masked()
            ));
        }
        Ok(p)
    }

    /// The prefix length in bits.
    pub fn bits(&self) -> u8 {
        match self {
            Prefix::V4(_, l) | Prefix::V6(_, l) => *l,
        }
    }

    /// The prefix with every bit past its length cleared.
    pub fn masked(&self) -> Prefix {
        match *self {
            Prefix::V4(a, l) => {
                let mask = if l == 0 { 0 } else { u32::MAX << (32 - l) };
                Prefix::V4(Ipv4Addr::from(u32::from(a) & mask), l)
            }
            Prefix::V6(a, l) => {
                let mask = if l == 0 { 0 } else { u128::MAX << (128 - l) };
                Prefix::V6(Ipv6Addr::from(u128::from(a) & mask), l)
            }
        }
    }

    /// True if `addr` falls in this prefix.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (*self, addr) {
            (Prefix::V4(_, l), IpAddr::V4(a)) => Prefix::V4(a, l).masked() == *self,
            (Prefix::V6(_, l), IpAddr::V6(a)) => Prefix::V6(a, l).masked() == *self,
            _ => false,
        }
    }

    /// True if the two prefixes share any address (one contains the other).
    pub fn overlaps(&self, other: &Prefix) -> bool {
        match (*self, *other) {
            (Prefix::V4(a, la), Prefix::V4(b, lb)) => {
                let l = la.min(lb);
                Prefix::V4(a, l).masked() == Prefix::V4(b, l).masked()
            }
            (Prefix::V6(a, la), Prefix::V6(b, lb)) => {
                let l = la.min(lb);
                Prefix::V6(a, l).masked() == Prefix::V6(b, l).masked()
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Prefix::V4(a, l) => write!(f, "{a}/{l}"),
            Prefix::V6(a, l) => write!(f, "{a}/{l}"),
        }
    }
}
