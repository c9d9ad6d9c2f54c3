//! Types shared by the XDP program and the agent. Every struct here is `#[repr(C)]`, has no
//! implicit padding and no `bool`, and its size is asserted at compile time, so the two sides
//! can never disagree about a map value's layout.
#![no_std]

use core::mem::size_of;

/// Written into [`GlobalConfig::magic`]; an agent refuses to drive a program whose maps hold
/// something else, and the program treats a config without it as "not configured yet".
pub const CONFIG_MAGIC: u32 = 0x5348_5052; // "SHPR"
/// Bumped whenever a map layout or the meaning of a field changes.
pub const CONFIG_VERSION: u32 = 2;

/// Tenant ids are indexes into the per-tenant arrays, so their count is fixed at load time.
pub const DEFAULT_MAX_TENANTS: u32 = 65_536;
/// The largest `max_tenants` the agent accepts at load time.
pub const MAX_TENANTS_LIMIT: u32 = 1 << 20;

/// Fixed-point shift of [`TenantConfig::cost_fp`]: nanoseconds per byte times 2^16.
pub const COST_SHIFT: u32 = 16;

/// Load-time clock of the buckets: `bpf_ktime_get_ns`, exact to the nanosecond.
pub const CLOCK_PRECISE: u8 = 0;
/// `bpf_ktime_get_coarse_ns`: one jiffy of resolution. The long-term rate stays exact (every
/// passed byte is charged); what changes is that up to one jiffy's worth of tokens may pass at
/// once on top of the burst, since "now" lags real time by up to a jiffy.
pub const CLOCK_COARSE: u8 = 1;

/// Match tenants on the destination address (download shaping on the receiving interface).
pub const MATCH_DST: u32 = 0;
/// Match tenants on the source address.
pub const MATCH_SRC: u32 = 1;

/// What to do with IP packets whose address belongs to no tenant.
pub const UNMATCHED_PASS: u32 = 0;
pub const UNMATCHED_DROP: u32 = 1;

/// Hash probes per packet at most: one per distinct prefix length of a family.
pub const MAX_PREFIX_PROBES: usize = 4;
/// [`GlobalConfig::v4_nprobes`] / `v6_nprobes` value meaning "use the LPM trie": the family
/// has more distinct prefix lengths than [`MAX_PREFIX_PROBES`].
pub const LOOKUP_LPM: u8 = 0xff;

/// Agent-written, single entry: how the program behaves as a whole.
///
/// Classification: since configs never hold overlapping prefixes, an address matches at most
/// one prefix, so probing an exact-match hash map once per configured prefix length (most
/// common length first) finds the same tenant as a longest-prefix match, at a cost that does
/// not grow with the number of tenants (an LPM trie's does). Families with more distinct
/// lengths than [`MAX_PREFIX_PROBES`] use the trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalConfig {
    pub magic: u32,
    pub version: u32,
    /// [`MATCH_DST`] or [`MATCH_SRC`].
    pub match_dir: u32,
    /// [`UNMATCHED_PASS`] or [`UNMATCHED_DROP`].
    pub unmatched: u32,
    /// Prefix lengths to probe in `TENANT_BY_HASH_V4`, in order.
    pub v4_probes: [u8; MAX_PREFIX_PROBES],
    pub v6_probes: [u8; MAX_PREFIX_PROBES],
    /// How many of `v4_probes` are used, or [`LOOKUP_LPM`].
    pub v4_nprobes: u8,
    pub v6_nprobes: u8,
    pub _pad: [u8; 6],
}
const _: () = assert!(size_of::<GlobalConfig>() == 32);

/// Key of `TENANT_BY_HASH_V4`: prefix length and the address with host bits cleared.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PrefixKeyV4 {
    pub len: u32,
    pub addr: [u8; 4],
}
const _: () = assert!(size_of::<PrefixKeyV4>() == 8);

/// Key of `TENANT_BY_HASH_V6`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PrefixKeyV6 {
    pub len: u32,
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<PrefixKeyV6>() == 20);

/// [`TenantConfig::flags`]: the entry holds a configured tenant.
pub const TENANT_ACTIVE: u32 = 1;
/// [`TenantConfig::flags`]: mark ECN-capable packets CE while the bucket is low.
pub const TENANT_ECN: u32 = 2;

/// Agent-written, one per tenant id. The bucket is a GCRA (virtual scheduling) bucket: the
/// datapath keeps one word of state per tenant ([`TenantState`]) and only reads this, so a
/// rate change never touches the bucket's state.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TenantConfig {
    /// Time one byte costs at the tenant's rate: ns/byte << [`COST_SHIFT`].
    pub cost_fp: u64,
    /// Bucket depth as time: `burst` bytes at `cost_fp`, in ns.
    pub burst_ns: u64,
    /// The configured rate in bytes/s, for tools reading the pinned maps.
    pub rate_bytes: u64,
    /// With [`TENANT_ECN`]: an ECN-capable packet that leaves less than this much of the
    /// bucket (as time) is marked CE instead of passing unmarked, so TCP backs off before the
    /// bucket is empty and packets are dropped.
    pub mark_ns: u64,
    /// [`TENANT_ACTIVE`] when the entry is in use, [`TENANT_ECN`] to mark.
    pub flags: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<TenantConfig>() == 40);

/// Datapath-written, one per tenant id: the theoretical arrival time of the next byte (GCRA).
/// The bucket is full when `tat <= now`; it holds `(burst_ns - (tat - now)) / cost` bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TenantState {
    pub tat: u64,
}
const _: () = assert!(size_of::<TenantState>() == 8);

/// Outcomes counted per tenant: index into [`TenantCounters`] arrays.
pub const OUTCOME_PASSED: usize = 0;
pub const OUTCOME_DROPPED: usize = 1;
/// Passed, marked CE (ECN).
pub const OUTCOME_MARKED: usize = 2;
pub const OUTCOMES: usize = 3;

/// Per-CPU counters of one tenant. Bytes are IP bytes (IPv4 total length, IPv6 header plus
/// payload length), the same bytes the bucket charges.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TenantCounters {
    pub packets: [u64; OUTCOMES],
    pub bytes: [u64; OUTCOMES],
}
const _: () = assert!(size_of::<TenantCounters>() == 48);

/// Classes of packets counted for the whole interface: index into `GLOBAL_COUNTERS`.
pub const CLASS_IPV4: u32 = 0;
pub const CLASS_IPV6: u32 = 1;
/// ARP, LLDP, more than two VLAN tags, any other ethertype: always passed.
pub const CLASS_NON_IP: u32 = 2;
/// Cut short or inconsistent headers: passed to the kernel, which discards them.
pub const CLASS_MALFORMED: u32 = 3;
pub const CLASS_UNMATCHED_PASSED: u32 = 4;
pub const CLASS_UNMATCHED_DROPPED: u32 = 5;
/// Packets that carried one or two VLAN tags (also counted in their own class).
pub const CLASS_VLAN: u32 = 6;
pub const CLASSES: u32 = 7;

/// Packets and bytes (frame bytes) of one class, per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketCount {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(size_of::<PacketCount>() == 16);

/// An IPv4 prefix key as the LPM trie wants it: prefix length, then the address in network order.
/// Declared here so both sides agree on the trie's key size.
pub const V4_KEY_BYTES: usize = 4;
pub const V6_KEY_BYTES: usize = 16;

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are repr(C), made of integers, with no padding (sizes asserted above).
    unsafe impl aya::Pod for GlobalConfig {}
    unsafe impl aya::Pod for TenantConfig {}
    unsafe impl aya::Pod for TenantState {}
    unsafe impl aya::Pod for TenantCounters {}
    unsafe impl aya::Pod for PacketCount {}
    unsafe impl aya::Pod for PrefixKeyV4 {}
    unsafe impl aya::Pod for PrefixKeyV6 {}
}
