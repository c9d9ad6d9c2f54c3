//! Ethernet frames built by hand for `BPF_PROG_TEST_RUN` and the benchmarks' generator: VLAN
//! tags, IPv4 with options and a valid checksum, IPv6 with extension headers, ports.
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;
pub const ETH_P_PPPOE_SESSION: u16 = 0x8864;

/// Builds Ethernet frames: `vlans` tags (outer first), then an IP packet of `ip_len` bytes.
#[derive(Clone, Debug)]
pub struct FrameBuilder {
    pub vlans: Vec<u16>,
    pub options: usize,
    pub ip_len: usize,
    /// IPv4 TOS / IPv6 traffic class: DSCP << 2 | ECN.
    pub tos: u8,
    /// IP protocol; TCP, UDP and SCTP get `sport` and `dport` as their first four bytes.
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    /// IPv6: this many 8-byte destination-options headers before the transport header.
    pub v6_ext: usize,
    /// Destination and source MAC.
    pub macs: ([u8; 6], [u8; 6]),
    /// A PPPoE session (its id) between the tags and the IP header.
    pub pppoe: Option<u16>,
}

impl Default for FrameBuilder {
    fn default() -> Self {
        FrameBuilder {
            vlans: vec![],
            options: 0,
            ip_len: 100,
            tos: 0,
            proto: 17,
            sport: 40_000,
            dport: 9,
            v6_ext: 0,
            macs: ([0x02, 0, 0, 0, 0, 1], [0x02, 0, 0, 0, 0, 2]),
            pppoe: None,
        }
    }
}

impl FrameBuilder {
    fn l2(&self, ethertype: u16) -> Vec<u8> {
        let mut f = Vec::with_capacity(64);
        f.extend_from_slice(&self.macs.0);
        f.extend_from_slice(&self.macs.1);
        for (i, vid) in self.vlans.iter().enumerate() {
            let tpid = if i == 0 && self.vlans.len() == 2 {
                ETH_P_8021AD
            } else {
                ETH_P_8021Q
            };
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&vid.to_be_bytes());
        }
        match self.pppoe {
            Some(session) => {
                let ppp: u16 = match ethertype {
                    ETH_P_IPV4 => 0x0021,
                    ETH_P_IPV6 => 0x0057,
                    // LCP: control traffic.
                    _ => 0xc021,
                };
                f.extend_from_slice(&ETH_P_PPPOE_SESSION.to_be_bytes());
                // Version/type, code, session; the length is set once the payload is there.
                f.extend_from_slice(&[0x11, 0]);
                f.extend_from_slice(&session.to_be_bytes());
                f.extend_from_slice(&[0, 0]);
                f.extend_from_slice(&ppp.to_be_bytes());
            }
            None => f.extend_from_slice(&ethertype.to_be_bytes()),
        }
        f
    }

    /// Where the IP header starts.
    fn l3(&self) -> usize {
        14 + 4 * self.vlans.len() + if self.pppoe.is_some() { 8 } else { 0 }
    }

    /// The PPPoE length field: the PPP protocol and what follows it.
    fn finish(&self, mut f: Vec<u8>) -> Vec<u8> {
        if self.pppoe.is_some() {
            let at = 14 + 4 * self.vlans.len();
            let len = (f.len() - at - 6) as u16;
            f[at + 4..at + 6].copy_from_slice(&len.to_be_bytes());
        }
        f
    }

    /// IPv4/UDP with `options` bytes of IP options (a multiple of 4, NOPs).
    pub fn v4(&self, src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut f = self.l2(ETH_P_IPV4);
        let hlen = 20 + self.options;
        let total = self.ip_len.max(hlen + 8);
        let mut h = vec![0u8; hlen];
        h[0] = 0x40 | (hlen / 4) as u8;
        h[1] = self.tos;
        h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        h[8] = 64;
        h[9] = self.proto;
        h[12..16].copy_from_slice(&src);
        h[16..20].copy_from_slice(&dst);
        for b in &mut h[20..] {
            *b = 1; // NOP
        }
        let csum = ipv4_checksum(&h);
        h[10..12].copy_from_slice(&csum.to_be_bytes());
        f.extend_from_slice(&h);
        f.resize(f.len() + total - hlen, 0xab);
        self.ports(&mut f, self.l3() + hlen);
        self.finish(f)
    }

    /// Ports for TCP, UDP and SCTP; UDP also gets its length, so a receiving stack takes it.
    fn ports(&self, f: &mut [u8], l4: usize) {
        if matches!(self.proto, 6 | 17 | 132) && f.len() >= l4 + 4 {
            f[l4..l4 + 2].copy_from_slice(&self.sport.to_be_bytes());
            f[l4 + 2..l4 + 4].copy_from_slice(&self.dport.to_be_bytes());
        }
        if self.proto == 17 && f.len() >= l4 + 8 {
            let len = (f.len() - l4) as u16;
            f[l4 + 4..l4 + 6].copy_from_slice(&len.to_be_bytes());
            f[l4 + 6..l4 + 8].fill(0);
        }
    }

    /// IPv6/UDP.
    pub fn v6(&self, src: [u8; 16], dst: [u8; 16]) -> Vec<u8> {
        let mut f = self.l2(ETH_P_IPV6);
        let ext = 8 * self.v6_ext;
        let total = self.ip_len.max(48 + ext);
        let mut h = vec![0u8; 40];
        h[0] = 0x60 | (self.tos >> 4);
        h[1] = (self.tos & 0x0f) << 4;
        h[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        h[6] = if self.v6_ext > 0 { 60 } else { self.proto };
        h[7] = 64;
        h[8..24].copy_from_slice(&src);
        h[24..40].copy_from_slice(&dst);
        f.extend_from_slice(&h);
        for i in 0..self.v6_ext {
            // Destination options: next header, length 0 (8 bytes), PadN.
            let next = if i + 1 < self.v6_ext { 60 } else { self.proto };
            f.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
        }
        f.resize(f.len() + total - 40 - ext, 0xab);
        self.ports(&mut f, self.l3() + 40 + ext);
        self.finish(f)
    }

    pub fn arp(&self) -> Vec<u8> {
        let mut f = self.l2(ETH_P_ARP);
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f.resize(f.len() + 20, 0);
        self.finish(f)
    }
}

pub fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for (i, c) in h.chunks(2).enumerate() {
        if i == 5 {
            continue;
        }
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
