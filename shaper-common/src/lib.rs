//! Types shared by the XDP program and the agent. Every struct here is `#[repr(C)]`, has no
//! implicit padding and no `bool`, and its size is asserted at compile time, so the two sides
//! can never disagree about a map value's layout.
#![no_std]

use core::mem::size_of;

/// Written into [`GlobalConfig::magic`]; an agent refuses to drive a program whose maps hold
/// something else, and the program treats a config without it as "not configured yet".
pub const CONFIG_MAGIC: u32 = 0x5348_5052; // "SHPR"
/// Bumped whenever a map layout or the meaning of a field changes.
pub const CONFIG_VERSION: u32 = 5;

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

/// [`GlobalConfig::unparsed`]: frames the parser cannot charge to a tenant (malformed, non-IP
/// but ARP, a third VLAN tag, PPPoE control traffic, MPLS) pass, as a router whose stack discards them
/// wants; dropped, for a bridge that would forward them unshaped; or policed together at
/// [`GlobalConfig::unparsed_cost_fp`].
pub const UNPARSED_PASS: u8 = 0;
pub const UNPARSED_DROP: u8 = 1;
pub const UNPARSED_POLICE: u8 = 2;

/// Hash probes per packet at most: one per distinct prefix length of a family.
pub const MAX_PREFIX_PROBES: usize = 4;
/// [`GlobalConfig::v4_nprobes`] / `v6_nprobes` value meaning "use the LPM trie": the family
/// has more distinct prefix lengths than [`MAX_PREFIX_PROBES`].
pub const LOOKUP_LPM: u8 = 0xff;

/// Token types, index into the per-type arrays: gold (critical), silver, bronze (bulk). Fallback
/// goes toward higher indexes only (gold -> silver -> bronze), never back.
pub const TYPE_GOLD: usize = 0;
pub const TYPE_SILVER: usize = 1;
pub const TYPE_BRONZE: usize = 2;
pub const TOKEN_TYPES: usize = 3;

/// Tier priorities, 0 (bronze) to 3 (platinum): the index of [`GlobalConfig::borrow_depth_ns`].
pub const TIERS: usize = 4;

/// [`GlobalConfig::flags`]: some tenant may borrow, so every passed packet is charged to the
/// link bucket (the opportunistic pool is what that bucket has left).
pub const GLOBAL_BORROW: u32 = 1;
/// [`GlobalConfig::flags`]: when no token type spends the tenant's type, fall back to lower ones.
pub const GLOBAL_FALLBACK: u32 = 2;
/// [`GlobalConfig::flags`]: drop precedence is on (some tier's [`GlobalConfig::yield_ns`] is
/// set), so every passed packet is charged to the capacity word.
pub const GLOBAL_YIELD: u32 = 4;

/// [`GlobalConfig::flow_sample_shift`] value meaning "no flow table".
pub const FLOWS_OFF: u8 = 0xff;

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
    /// Token type of packets no rule matches.
    pub default_type: u8,
    /// Rules in `TOKEN_RULES` in use (0: every packet takes `default_type`).
    pub nrules: u8,
    /// One packet in `2^shift` of each tenant x type x outcome updates the flow table, its
    /// counts scaled by `2^shift`; [`FLOWS_OFF`] disables the table.
    pub flow_sample_shift: u8,
    /// The entry of `GLOBAL_CONFIG` (and of `TOKEN_RULES`, written with it) this config is:
    /// a packet reads the rules of the config it classified with, never the other buffer's.
    pub slot: u8,
    /// [`UNPARSED_PASS`], [`UNPARSED_DROP`] or [`UNPARSED_POLICE`].
    pub unparsed: u8,
    pub _pad: [u8; 1],
    /// [`GLOBAL_BORROW`], [`GLOBAL_FALLBACK`].
    pub flags: u32,
    /// The link bucket (GCRA): capacity minus the emergency share (the whole capacity with drop
    /// precedence on, which takes the reserve back when needed). Every passed packet is charged
    /// to it when borrowing is on; borrowed packets must also fit in it.
    pub link_cost_fp: u64,
    /// How full the link bucket may get with a borrowed packet, per tier priority: lower tiers
    /// stop borrowing while the link still has room for higher ones (drop precedence).
    pub borrow_depth_ns: [u64; TIERS],
    /// The emergency pool (GCRA): its share of capacity and depth.
    pub emergency_cost_fp: u64,
    pub emergency_burst_ns: u64,
    /// Link charges of traffic paid by tenants' own tokens gather per CPU and reach the shared
    /// words once they add up to this many bytes: one CPU's charges never wait longer than
    /// that, and the CPUs do not fight over one cache line on every packet.
    pub link_fold_bytes: u64,
    /// The link bucket's debt is bounded: charges stop adding once it is this many ns in use,
    /// so an hour above capacity does not block borrowing for minutes afterwards.
    pub link_max_ns: u64,
    /// The capacity word (GCRA at the link's full capacity, emergency share included): every
    /// passed packet is charged to it while drop precedence is on; in use only while the link
    /// is really over capacity, bounded at `cap_max_ns`.
    pub cap_cost_fp: u64,
    pub cap_max_ns: u64,
    /// Drop precedence, per tier priority: a packet its own tokens would pass is dropped while
    /// the capacity word is more than this many ns in use (0: never), bronze first, then
    /// silver, then gold; platinum never. Borrowing, of every tier, stops before any of them:
    /// at half bronze's depth.
    pub yield_ns: [u64; TIERS],
    /// The shared bucket (GCRA) of unparsed frames under [`UNPARSED_POLICE`], frame bytes.
    pub unparsed_cost_fp: u64,
    pub unparsed_burst_ns: u64,
}
const _: () = assert!(size_of::<GlobalConfig>() == 176);

/// Match rule fields: [`TokenRule::flags`] says which are set; unset fields match anything.
pub const RULE_DSCP: u8 = 1;
pub const RULE_PROTO: u8 = 2;
pub const RULE_DPORT: u8 = 4;
pub const RULE_SPORT: u8 = 8;
/// Ports one rule can list.
pub const RULE_PORTS: usize = 8;
/// Rules the datapath evaluates at most (first match wins).
pub const MAX_RULES: usize = 16;

/// One token-type rule: every field set must match; a port field matches if any listed port
/// does (unused slots repeat the first port, so the datapath need not know the count).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenRule {
    /// Bit d set: DSCP d matches.
    pub dscp_mask: u64,
    pub dports: [u16; RULE_PORTS],
    pub sports: [u16; RULE_PORTS],
    /// IP protocol number (IPv6: the upper-layer header after extension headers).
    pub proto: u8,
    pub flags: u8,
    /// The token type a matching packet takes.
    pub token_type: u8,
    pub _pad: [u8; 5],
}
const _: () = assert!(size_of::<TokenRule>() == 48);

/// Agent-written entry of `TOKEN_RULES` (one per `GLOBAL_CONFIG` slot): the rules in order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenRules {
    pub rules: [TokenRule; MAX_RULES],
}
const _: () = assert!(size_of::<TokenRules>() == 768);

impl Default for TokenRules {
    fn default() -> Self {
        TokenRules {
            rules: [TokenRule::default(); MAX_RULES],
        }
    }
}

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
/// [`TenantConfig::flags`]: the tenant's tier may borrow idle capacity up to its ceiling.
pub const TENANT_BORROW: u32 = 4;
/// [`TenantConfig::flags`]: the tenant's tier may spend the emergency pool.
pub const TENANT_EMERGENCY: u32 = 8;

/// One GCRA bucket's parameters: the time a byte costs and the depth, both in ns. A depth of 0
/// is an empty bucket that never conforms (a token type with no share of the rate).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BucketParams {
    /// ns/byte << [`COST_SHIFT`].
    pub cost_fp: u64,
    pub burst_ns: u64,
}
const _: () = assert!(size_of::<BucketParams>() == 16);

/// Agent-written, one per tenant id and slot (double-buffered: see `TENANT_SLOT`). The datapath
/// keeps the bucket state in [`TenantState`] and only reads this, so a rate change never
/// touches tokens. The agent writes the slot not in use, then flips the tenant's slot word,
/// so a packet sees one whole config, old or new.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TenantConfig {
    /// Per token type: its share (the mix) of the tenant's rate and burst.
    pub types: [BucketParams; TOKEN_TYPES],
    /// With [`TENANT_ECN`], per token type: an ECN-capable packet that leaves less than this
    /// much of the type's bucket (as time) is marked CE, so TCP backs off before the bucket is
    /// empty and packets are dropped.
    pub mark_ns: [u64; TOKEN_TYPES],
    /// The pre-allocated pool's fill (a GCRA bucket; `cost_fp` 0: no fill). Its depth is the
    /// pool's cap.
    pub pre: BucketParams,
    /// Cap of the deposit credit, bytes.
    pub pre_cap_bytes: u64,
    /// A deposit is applied once, when the datapath sees `deposit_seq` above the one it last
    /// applied: `deposit_bytes` are added to the credit, clamped to the cap, and whatever
    /// credit is left at `deposit_expires_ns` (bpf_ktime_get_ns clock) expires.
    pub deposit_seq: u64,
    pub deposit_bytes: u64,
    pub deposit_expires_ns: u64,
    /// Borrowing: at most `ceil - rate` on top of the tenant's own buckets.
    pub borrow: BucketParams,
    /// The configured rate and ceiling in bytes/s, for tools reading the pinned maps.
    pub rate_bytes: u64,
    pub ceil_bytes: u64,
    /// [`TENANT_ACTIVE`], [`TENANT_ECN`], [`TENANT_BORROW`], [`TENANT_EMERGENCY`].
    pub flags: u32,
    /// Tier priority, 0..[`TIERS`].
    pub tier: u32,
    /// Bumped when a bucket's rate or depth changes. The first packet that sees an epoch above
    /// its [`TenantState::epoch`] re-expresses each changed bucket's tokens in the new
    /// parameters (at most the new depth), so a change never creates or destroys tokens. The
    /// parameters the words are in are the ones the datapath applied last
    /// ([`TenantState::applied`]); `prev` (the agent's view of them, [`RESCALED`] order) is
    /// used only before the datapath ever applied any.
    pub epoch: u64,
    pub prev: [BucketParams; RESCALED],
}
const _: () = assert!(size_of::<TenantConfig>() == 248);

/// Buckets carried across parameter changes: the token types, the pre-allocated pool's fill,
/// the borrow bucket, in this order.
pub const RESCALED: usize = TOKEN_TYPES + 2;

/// Datapath-written, one per tenant id.
///
/// GCRA words: the theoretical arrival time of the next byte; a bucket is full when
/// `tat <= now` and holds `(burst_ns - (tat - now)) / cost` bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TenantState {
    /// Bucket words in [`RESCALED`] order: token types, pre-allocated fill, borrow.
    pub tat: [u64; TOKEN_TYPES],
    pub pre_tat: u64,
    pub borrow_tat: u64,
    /// Deposit credit left, bytes.
    pub credit: u64,
    /// The last deposit applied.
    pub deposit_seq: u64,
    /// Bytes ever added to the credit (after the cap) and ever expired unused: what was used
    /// is `deposited - expired - credit`.
    pub deposited: u64,
    pub expired: u64,
    /// The [`TenantConfig::epoch`] the bucket words are expressed in.
    pub epoch: u64,
    /// ECN marking levels the bucket of each token type is below, 3 bits per type: a packet
    /// is marked when its bucket falls below a level (`mark_ns`, half, a quarter of it) it
    /// was not below yet, and every packet below the last; a level re-arms once the bucket is
    /// back above it. One mark per level crossed is what TCP needs (it cuts once per round
    /// trip); marking every packet below the mark made it cut twice and leave rate unused.
    pub ecn_levels: u64,
    /// The parameters the bucket words are expressed in ([`RESCALED`] order), written by the
    /// CPU that applied the last epoch: a rescale converts from what was really applied, not
    /// from what the agent believed when it wrote (two writes between packets, or a packet
    /// that applied an epoch while the agent was writing the next, would otherwise convert
    /// from the wrong scale).
    pub applied: [BucketParams; RESCALED],
    /// Nonzero once `applied` holds parameters.
    pub applied_set: u64,
}
const _: () = assert!(size_of::<TenantState>() == 176);

/// Datapath-written, single entry: the global pools' GCRA words, each on its own cache line
/// so CPUs charging the link do not also bounce the emergency word.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalState {
    pub link_tat: u64,
    /// The capacity word: charged with the link word, so on the same line.
    pub cap_tat: u64,
    pub _pad0: [u64; 6],
    pub emergency_tat: u64,
    /// The unparsed frames' bucket ([`UNPARSED_POLICE`]): rare, so beside the emergency word.
    pub unparsed_tat: u64,
    pub _pad1: [u64; 6],
}
const _: () = assert!(size_of::<GlobalState>() == 128);

/// Outcomes counted per tenant and token type: which tokens paid for the packet.
/// Pre-allocated pool.
pub const OUTCOME_PRE: usize = 0;
/// The token type's own bucket (or a lower type's, by fallback).
pub const OUTCOME_GREEN: usize = 1;
/// The opportunistic pool, under the tenant's ceiling.
pub const OUTCOME_BORROWED: usize = 2;
/// The emergency pool.
pub const OUTCOME_EMERGENCY: usize = 3;
/// Passed with CE set (ECN), from the tenant's own bucket or the emergency pool.
pub const OUTCOME_MARKED: usize = 4;
pub const OUTCOME_DROPPED: usize = 5;
pub const OUTCOMES: usize = 6;
/// Names of the outcomes, in index order, as the CLI, API and metrics print them.
pub const OUTCOME_NAMES: [&str; OUTCOMES] =
    ["pre", "green", "borrowed", "emergency", "marked", "dropped"];
/// Names of the token types, in index order.
pub const TYPE_NAMES: [&str; TOKEN_TYPES] = ["gold", "silver", "bronze"];

/// Per-CPU counters of one tenant, per token type and outcome. Bytes are IP bytes (IPv4 total
/// length, IPv6 header plus payload length), the same bytes the buckets charge.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TenantCounters {
    pub packets: [[u64; OUTCOMES]; TOKEN_TYPES],
    pub bytes: [[u64; OUTCOMES]; TOKEN_TYPES],
}
const _: () = assert!(size_of::<TenantCounters>() == 288);

impl TenantCounters {
    /// Packets of one outcome, all token types.
    pub fn packets_of(&self, outcome: usize) -> u64 {
        self.packets.iter().map(|t| t[outcome]).sum()
    }
    /// Bytes of one outcome, all token types.
    pub fn bytes_of(&self, outcome: usize) -> u64 {
        self.bytes.iter().map(|t| t[outcome]).sum()
    }
    /// Packets that passed, whatever paid for them.
    pub fn passed_packets(&self) -> u64 {
        self.packets.iter().flat_map(|t| t.iter()).sum::<u64>() - self.packets_of(OUTCOME_DROPPED)
    }
    /// Bytes that passed, whatever paid for them.
    pub fn passed_bytes(&self) -> u64 {
        self.bytes.iter().flat_map(|t| t.iter()).sum::<u64>() - self.bytes_of(OUTCOME_DROPPED)
    }
}

/// Key of the flow table: addresses (IPv4 in the first 4 bytes), ports, protocol, family.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// 4 or 6.
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<FlowKey>() == 40);

/// Value of the flow table, counts scaled by the sampling rate.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub tenant: u32,
    pub token_type: u32,
    pub packets: u64,
    pub bytes: u64,
    pub drops: u64,
    /// bpf_ktime_get_ns (or the coarse clock) at the last sampled packet.
    pub last_seen_ns: u64,
}
const _: () = assert!(size_of::<FlowStats>() == 40);

/// Classes of packets counted for the whole interface: index into `GLOBAL_COUNTERS`.
pub const CLASS_IPV4: u32 = 0;
pub const CLASS_IPV6: u32 = 1;
/// ARP, LLDP, more than two VLAN tags, PPPoE control traffic, MPLS, any other ethertype.
pub const CLASS_NON_IP: u32 = 2;
/// Cut short or inconsistent headers.
pub const CLASS_MALFORMED: u32 = 3;
pub const CLASS_UNMATCHED_PASSED: u32 = 4;
pub const CLASS_UNMATCHED_DROPPED: u32 = 5;
/// Packets that carried one or two VLAN tags (also counted in their own class).
pub const CLASS_VLAN: u32 = 6;
/// Non-IP and malformed frames dropped by the unparsed-frame policy (also counted in their
/// own class).
pub const CLASS_UNPARSED_DROPPED: u32 = 7;
pub const CLASSES: u32 = 8;

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
    unsafe impl aya::Pod for TokenRules {}
    unsafe impl aya::Pod for GlobalState {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowStats {}
}
