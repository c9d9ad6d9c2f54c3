//! Loader: loads the XDP program, sizes its maps, writes the config into them, attaches it
//! and pins the maps. The only module that knows map names.
use std::error::Error as _;
use std::io;
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray, PerCpuValues};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::{XdpLink, XdpLinkId};
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use shaper_common::{
    CLOCK_COARSE, CLOCK_PRECISE, CONFIG_MAGIC, CONFIG_VERSION, COST_SHIFT, GlobalConfig,
    LOOKUP_LPM, MATCH_DST, MATCH_SRC, MAX_PREFIX_PROBES, MAX_TENANTS_LIMIT, PrefixKeyV4,
    PrefixKeyV6, TENANT_ACTIVE, TenantConfig, TenantCounters, TenantState, UNMATCHED_DROP,
    UNMATCHED_PASS,
};

use crate::config::{Config, MatchDir, Prefix, Unmatched};
use crate::netns::NetNsEnter;

/// The XDP program, built from shaper-ebpf by build.rs.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/shaper"));

pub const PROGRAM: &str = "shaper";
/// An XDP_PASS program in the same object: the benchmarks' baseline.
pub const BASELINE_PROGRAM: &str = "xdp_pass";
pub const GLOBAL_CONFIG: &str = "GLOBAL_CONFIG";
pub const TENANT_BY_PREFIX_V4: &str = "TENANT_BY_PREFIX_V4";
pub const TENANT_BY_PREFIX_V6: &str = "TENANT_BY_PREFIX_V6";
pub const TENANT_BY_HASH_V4: &str = "TENANT_BY_HASH_V4";
pub const TENANT_BY_HASH_V6: &str = "TENANT_BY_HASH_V6";
pub const TENANT_CONFIG: &str = "TENANT_CONFIG";
pub const TENANT_STATE: &str = "TENANT_STATE";
pub const TENANT_COUNTERS: &str = "TENANT_COUNTERS";
pub const GLOBAL_COUNTERS: &str = "GLOBAL_COUNTERS";
/// Every map the agent pins, so `shaper stats` and later runs can find them.
pub const PINNED_MAPS: &[&str] = &[
    GLOBAL_CONFIG,
    TENANT_BY_PREFIX_V4,
    TENANT_BY_PREFIX_V6,
    TENANT_BY_HASH_V4,
    TENANT_BY_HASH_V6,
    TENANT_CONFIG,
    TENANT_STATE,
    TENANT_COUNTERS,
    GLOBAL_COUNTERS,
];

/// Where pins live: `/sys/fs/bpf/shaper/IF/`.
pub const PIN_ROOT: &str = "/sys/fs/bpf/shaper";

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "permission denied loading the BPF program: run as root (sudo) or grant CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON"
    )]
    NoPermission,
    #[error("interface '{0}' not found: check the name with `ip -br link`")]
    UnknownInterface(String),
    #[error(
        "interface '{0}' already has an XDP program attached: remove it (`ip link set dev {0} xdp off`) or stop the shaper that owns it"
    )]
    AlreadyAttached(String),
    #[error("cannot attach XDP to '{iface}' in {mode} mode: {reason}")]
    Attach {
        iface: String,
        mode: &'static str,
        reason: String,
    },
    #[error(
        "config has {tenants} tenants but the program is loaded for at most {max}: pass --max-tenants {tenants} or more (up to {MAX_TENANTS_LIMIT})"
    )]
    TooManyTenants { tenants: usize, max: u32 },
    #[error("--max-tenants {0} is outside 1..={MAX_TENANTS_LIMIT}")]
    BadMaxTenants(u32),
    #[error("map {map} is full writing {what}: raise --max-tenants")]
    MapFull { map: &'static str, what: String },
    #[error(
        "the pinned maps at {0} belong to a different shaper version: remove them with `shaper detach` first"
    )]
    VersionMismatch(PathBuf),
    #[error(
        "the maps pinned at {dir} were created for {pinned} tenants, not {asked}: pass --max-tenants {pinned}, or remove them with `shaper detach`"
    )]
    PinnedSize {
        dir: PathBuf,
        pinned: u32,
        asked: u32,
    },
    #[error("cannot use the agent state at {path}: {source}")]
    State { path: PathBuf, source: io::Error },
    #[error("another shaper agent runs on '{iface}'{pid}: stop it first (SIGTERM detaches it)")]
    AnotherAgent { iface: String, pid: String },
    #[error(
        "bpffs is not mounted at /sys/fs/bpf and mounting it failed ({0}): run `mount -t bpf bpf /sys/fs/bpf`"
    )]
    NoBpffs(io::Error),
    #[error("no shaper maps pinned at {0}: is `shaper run` running on this interface?")]
    NotPinned(PathBuf),
    #[error("cannot enter network namespace '{name}': {source}")]
    NetNs { name: String, source: io::Error },
    #[error("loading the BPF program failed: {0}")]
    Load(String),
    #[error("BPF map {map}: {source}")]
    Map {
        map: &'static str,
        source: aya::maps::MapError,
    },
    #[error("pinning {path}: {reason}")]
    Pin { path: PathBuf, reason: String },
}

/// The first OS error code anywhere in an error's source chain.
pub(crate) fn os_error(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(code) = e
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
        {
            return Some(code);
        }
        cur = e.source();
    }
    None
}

fn is_permission(code: Option<i32>) -> bool {
    matches!(code, Some(libc::EPERM | libc::EACCES))
}

/// How to attach: `auto` tries native first and falls back to generic (skb) mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum AttachMode {
    #[default]
    Auto,
    Native,
    Skb,
}

/// The buckets' clock, fixed at load time (see `shaper_common::CLOCK_COARSE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Clock {
    /// Nanosecond clock: bursts exact to the byte.
    #[default]
    Precise,
    /// Jiffy clock: cheaper per packet; up to one jiffy of extra burst.
    Coarse,
}

/// Per-tenant parameters as the datapath wants them: GCRA cost and depth in nanoseconds.
pub fn tenant_config(rate_bits: u64, burst_bytes: u64) -> TenantConfig {
    // ns per byte << COST_SHIFT = 8e9 / rate_bits << COST_SHIFT, in 128 bits to keep precision.
    let cost_fp = ((8_000_000_000u128 << COST_SHIFT) / rate_bits.max(1) as u128) as u64;
    let burst_ns = ((burst_bytes as u128 * cost_fp as u128) >> COST_SHIFT) as u64;
    TenantConfig {
        cost_fp,
        burst_ns,
        rate_bytes: rate_bits / 8,
        flags: TENANT_ACTIVE,
        _pad: 0,
    }
}

/// How one address family is looked up: hash probes for these lengths (most prefixes first),
/// or the LPM trie when there are more distinct lengths than the probes allow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    Hash(Vec<u8>),
    Lpm,
}

impl Lookup {
    /// Chooses the lookup for a family from its prefix lengths.
    pub fn plan(lengths: impl IntoIterator<Item = u8>) -> Lookup {
        let mut counts: std::collections::BTreeMap<u8, usize> = std::collections::BTreeMap::new();
        for l in lengths {
            *counts.entry(l).or_default() += 1;
        }
        if counts.len() > MAX_PREFIX_PROBES {
            return Lookup::Lpm;
        }
        let mut by_count: Vec<(u8, usize)> = counts.into_iter().collect();
        // Most prefixes first (the likeliest hit), longer first on ties: deterministic.
        by_count.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
        Lookup::Hash(by_count.into_iter().map(|(l, _)| l).collect())
    }

    fn encode(&self) -> ([u8; MAX_PREFIX_PROBES], u8) {
        match self {
            Lookup::Lpm => ([0; MAX_PREFIX_PROBES], LOOKUP_LPM),
            Lookup::Hash(lens) => {
                let mut probes = [0; MAX_PREFIX_PROBES];
                probes[..lens.len()].copy_from_slice(lens);
                (probes, lens.len() as u8)
            }
        }
    }
}

/// The lookup plan of each family for a config: (IPv4, IPv6).
pub fn lookup_plan(cfg: &Config) -> (Lookup, Lookup) {
    let prefixes = cfg.prefixes();
    let v4 = Lookup::plan(
        prefixes
            .iter()
            .filter(|(p, _)| matches!(p, Prefix::V4(..)))
            .map(|(p, _)| p.bits()),
    );
    let v6 = Lookup::plan(
        prefixes
            .iter()
            .filter(|(p, _)| matches!(p, Prefix::V6(..)))
            .map(|(p, _)| p.bits()),
    );
    (v4, v6)
}

pub fn global_config(cfg: &Config) -> GlobalConfig {
    let (v4, v6) = lookup_plan(cfg);
    let (v4_probes, v4_nprobes) = v4.encode();
    let (v6_probes, v6_nprobes) = v6.encode();
    GlobalConfig {
        v4_probes,
        v4_nprobes,
        v6_probes,
        v6_nprobes,
        _pad: [0; 6],
        magic: CONFIG_MAGIC,
        version: CONFIG_VERSION,
        match_dir: match cfg.link.match_dir {
            MatchDir::Dst => MATCH_DST,
            MatchDir::Src => MATCH_SRC,
        },
        unmatched: match cfg.link.unmatched {
            Unmatched::Pass => UNMATCHED_PASS,
            Unmatched::Drop => UNMATCHED_DROP,
        },
    }
}

/// A loaded (not necessarily attached) shaper program and its maps.
pub struct Datapath {
    ebpf: Ebpf,
    max_tenants: u32,
    link: Option<Link>,
    /// Where the maps (and, once attached, the link) are pinned.
    pins: Option<PathBuf>,
    /// Whether dropping this removes the pins: not for adopted pins until attached, so a run
    /// that fails while adopting leaves the datapath enforcing as it found it.
    owns_pins: bool,
    adopted: bool,
    /// The agent-written maps hold a config (adopted, or applied before).
    populated: bool,
    logger: Option<DatapathLogger>,
}

/// How the program is attached.
enum Link {
    /// Owned by this process (not pinned): detached when dropped.
    Managed(XdpLinkId),
    /// A bpf_link pinned at `pins/link`: stays attached if this process dies (fail-static).
    Pinned(FdLink),
}

/// The link's pin, beside the maps'.
pub const LINK_PIN: &str = "link";

pub type DatapathLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

impl Datapath {
    /// Loads the program with its per-tenant maps sized for `max_tenants`, precise clock.
    pub fn load(max_tenants: u32) -> Result<Datapath, DatapathError> {
        Self::load_with(max_tenants, Clock::Precise)
    }

    /// Loads the program with its per-tenant maps sized for `max_tenants` and the given clock.
    pub fn load_with(max_tenants: u32, clock: Clock) -> Result<Datapath, DatapathError> {
        Self::load_inner(max_tenants, clock, None)
    }

    /// Loads the program with its maps pinned under `dir`: maps already pinned there (a
    /// previous agent that was killed, or that is being replaced) are adopted with their
    /// contents, bucket state and counters; missing ones are created and pinned. Attaching
    /// then pins the link too, or takes over the pinned one.
    pub fn open_pinned(
        max_tenants: u32,
        clock: Clock,
        dir: &Path,
    ) -> Result<Datapath, DatapathError> {
        ensure_bpffs()?;
        let adopted = dir.join(TENANT_CONFIG).exists();
        if adopted {
            check_pinned_version(dir)?;
            let map =
                MapData::from_pin(dir.join(TENANT_CONFIG)).map_err(|e| DatapathError::Pin {
                    path: dir.join(TENANT_CONFIG),
                    reason: error_chain(&e),
                })?;
            let pinned = map.info().map(|i| i.max_entries()).unwrap_or(0);
            if pinned != max_tenants {
                return Err(DatapathError::PinnedSize {
                    dir: dir.to_path_buf(),
                    pinned,
                    asked: max_tenants,
                });
            }
        }
        std::fs::create_dir_all(dir).map_err(|e| DatapathError::Pin {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut dp = Self::load_inner(max_tenants, clock, Some(dir));
        if let Ok(dp) = &mut dp {
            dp.pins = Some(dir.to_path_buf());
            dp.owns_pins = !adopted;
            dp.adopted = adopted;
            dp.populated = adopted;
        } else if !adopted {
            let _ = std::fs::remove_dir(dir);
        }
        dp
    }

    /// True when the maps were adopted from pins rather than created.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    fn load_inner(
        max_tenants: u32,
        clock: Clock,
        pins: Option<&Path>,
    ) -> Result<Datapath, DatapathError> {
        if max_tenants == 0 || max_tenants > MAX_TENANTS_LIMIT {
            return Err(DatapathError::BadMaxTenants(max_tenants));
        }
        // Prefixes: room for two per tenant on average, in each family.
        let prefixes = max_tenants.saturating_mul(2);
        let clock_value = match clock {
            Clock::Precise => CLOCK_PRECISE,
            Clock::Coarse => CLOCK_COARSE,
        };
        let mut loader = EbpfLoader::new();
        loader
            .override_global("CLOCK", &clock_value, true)
            .map_max_entries(TENANT_CONFIG, max_tenants)
            .map_max_entries(TENANT_STATE, max_tenants)
            .map_max_entries(TENANT_COUNTERS, max_tenants)
            .map_max_entries(TENANT_BY_PREFIX_V4, prefixes)
            .map_max_entries(TENANT_BY_PREFIX_V6, prefixes)
            .map_max_entries(TENANT_BY_HASH_V4, prefixes)
            .map_max_entries(TENANT_BY_HASH_V6, prefixes);
        let paths: Vec<(&str, PathBuf)> = pins
            .map(|d| PINNED_MAPS.iter().map(|n| (*n, d.join(n))).collect())
            .unwrap_or_default();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(EBPF_OBJECT).map_err(|e| {
            if is_permission(os_error(&e)) {
                DatapathError::NoPermission
            } else {
                DatapathError::Load(error_chain(&e))
            }
        })?;
        // The datapath logs only rare events (misconfiguration), at debug level. The logger
        // must outlive loading (it holds the ring buffer's fd); `run` drains it.
        let logger = aya_log::EbpfLogger::init(&mut ebpf)
            .map_err(|e| tracing::debug!(cause = %e, "no aya-log from the datapath"))
            .ok();
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| {
                DatapathError::Load(format!("program {PROGRAM} missing from the object"))
            })?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| DatapathError::Load(error_chain(&e)))?;
        prog.load().map_err(|e| {
            if is_permission(os_error(&e)) {
                DatapathError::NoPermission
            } else {
                DatapathError::Load(error_chain(&e))
            }
        })?;
        Ok(Datapath {
            ebpf,
            max_tenants,
            link: None,
            pins: None,
            owns_pins: false,
            adopted: false,
            populated: false,
            logger,
        })
    }

    /// Hands the datapath's log reader to the caller, to drain with [`drain_logs`].
    pub fn take_logger(&mut self) -> Option<DatapathLogger> {
        self.logger.take()
    }

    pub fn max_tenants(&self) -> u32 {
        self.max_tenants
    }

    /// Writes `cfg` with ids in config order (a fresh load).
    pub fn apply(&mut self, cfg: &Config) -> Result<(), DatapathError> {
        self.apply_table(cfg, &crate::collect::tenant_table(cfg, &[]), Some(&[]))
    }

    /// Writes the tenants of `cfg` under the ids of `table` (see `collect::tenant_table`), then
    /// their prefixes, then the global config. Over maps that already hold a config (adopted,
    /// or a reload): tenants of `previous` no longer configured are deactivated (`None`: the
    /// previous table is unknown, every id is checked), stale prefixes are deleted, and ids
    /// that were inactive get their bucket state and counters zeroed before they go live.
    /// Tenants that stay keep their bucket state and counters: only agent-written maps change.
    pub fn apply_table(
        &mut self,
        cfg: &Config,
        table: &[crate::collect::TenantInfo],
        previous: Option<&[crate::collect::TenantInfo]>,
    ) -> Result<(), DatapathError> {
        let span = crate::collect::id_span(table);
        if cfg.tenants.len() > self.max_tenants as usize || span > self.max_tenants {
            return Err(DatapathError::TooManyTenants {
                tenants: cfg.tenants.len(),
                max: self.max_tenants,
            });
        }
        let ids: Vec<u32> = table.iter().map(|t| t.id).collect();
        let populated = self.populated;
        if populated {
            self.retire_and_reset(&ids, previous)?;
        }
        {
            let mut tc: Array<&mut MapData, TenantConfig> = self.map_mut(TENANT_CONFIG)?;
            for (t, id) in cfg.tenants.iter().zip(&ids) {
                tc.set(
                    *id,
                    tenant_config(t.rate.bits_per_sec(), t.burst.bytes()),
                    0,
                )
                .map_err(|source| DatapathError::Map {
                    map: TENANT_CONFIG,
                    source,
                })?;
            }
        }
        let (v4, v6) = lookup_plan(cfg);
        let mut want4: std::collections::HashMap<PrefixKeyV4, u32> =
            std::collections::HashMap::new();
        let mut want6: std::collections::HashMap<PrefixKeyV6, u32> =
            std::collections::HashMap::new();
        for (prefix, i) in cfg.prefixes() {
            match prefix {
                Prefix::V4(a, l) => want4.insert(
                    PrefixKeyV4 {
                        len: u32::from(l),
                        addr: a.octets(),
                    },
                    ids[i],
                ),
                Prefix::V6(a, l) => want6.insert(
                    PrefixKeyV6 {
                        len: u32::from(l),
                        addr: a.octets(),
                    },
                    ids[i],
                ),
            };
        }
        if populated {
            self.remove_stale_prefixes(&want4, &want6, &v4, &v6)?;
        }
        for (prefix, i) in cfg.prefixes() {
            let lookup = if matches!(prefix, Prefix::V4(..)) {
                &v4
            } else {
                &v6
            };
            self.insert_prefix(prefix, ids[i], lookup)?;
        }
        let mut g: Array<&mut MapData, GlobalConfig> = self.map_mut(GLOBAL_CONFIG)?;
        g.set(0, global_config(cfg), 0)
            .map_err(|source| DatapathError::Map {
                map: GLOBAL_CONFIG,
                source,
            })?;
        self.populated = true;
        Ok(())
    }

    /// Deactivates the tenants that leave, and zeroes the bucket state and counters of ids
    /// about to go live that were inactive (a reused id must not inherit a past tenant's).
    fn retire_and_reset(
        &mut self,
        ids: &[u32],
        previous: Option<&[crate::collect::TenantInfo]>,
    ) -> Result<(), DatapathError> {
        let live: std::collections::HashSet<u32> = ids.iter().copied().collect();
        let max = self.max_tenants;
        let cfg_err = |source| DatapathError::Map {
            map: TENANT_CONFIG,
            source,
        };
        let fresh: Vec<u32> = {
            let mut tc: Array<&mut MapData, TenantConfig> = self.map_mut(TENANT_CONFIG)?;
            let leaving: Vec<u32> = match previous {
                Some(prev) => prev
                    .iter()
                    .map(|t| t.id)
                    .filter(|id| !live.contains(id))
                    .collect(),
                None => (0..max).filter(|id| !live.contains(id)).collect(),
            };
            for id in leaving {
                if tc.get(&id, 0).map_err(cfg_err)?.flags & TENANT_ACTIVE != 0 {
                    tc.set(id, TenantConfig::default(), 0).map_err(cfg_err)?;
                }
            }
            let mut fresh = Vec::new();
            for id in ids {
                if tc.get(id, 0).map_err(cfg_err)?.flags & TENANT_ACTIVE == 0 {
                    fresh.push(*id);
                }
            }
            fresh
        };
        if fresh.is_empty() {
            return Ok(());
        }
        {
            let mut st: Array<&mut MapData, TenantState> = self.map_mut(TENANT_STATE)?;
            for id in &fresh {
                st.set(*id, TenantState::default(), 0)
                    .map_err(|source| DatapathError::Map {
                        map: TENANT_STATE,
                        source,
                    })?;
            }
        }
        let cpus = aya::util::nr_cpus()
            .map_err(|(_, e)| DatapathError::Load(format!("counting CPUs: {e}")))?;
        let mut ctr: PerCpuArray<&mut MapData, TenantCounters> = self.map_mut(TENANT_COUNTERS)?;
        for id in fresh {
            let zeros = PerCpuValues::try_from(vec![TenantCounters::default(); cpus])
                .map_err(|e| DatapathError::Load(format!("per-CPU values: {e}")))?;
            ctr.set(id, zeros, 0).map_err(|source| DatapathError::Map {
                map: TENANT_COUNTERS,
                source,
            })?;
        }
        Ok(())
    }

    /// Deletes prefix entries that the new config does not have (or that the family's new
    /// lookup does not use).
    fn remove_stale_prefixes(
        &mut self,
        want4: &std::collections::HashMap<PrefixKeyV4, u32>,
        want6: &std::collections::HashMap<PrefixKeyV6, u32>,
        v4: &Lookup,
        v6: &Lookup,
    ) -> Result<(), DatapathError> {
        let err = |map| move |source| DatapathError::Map { map, source };
        {
            let mut m: HashMap<&mut MapData, PrefixKeyV4, u32> = self.map_mut(TENANT_BY_HASH_V4)?;
            let keys: Vec<PrefixKeyV4> = m
                .keys()
                .collect::<Result<_, _>>()
                .map_err(err(TENANT_BY_HASH_V4))?;
            for k in keys
                .iter()
                .filter(|k| matches!(v4, Lookup::Lpm) || !want4.contains_key(k))
            {
                m.remove(k).map_err(err(TENANT_BY_HASH_V4))?;
            }
        }
        {
            let mut m: HashMap<&mut MapData, PrefixKeyV6, u32> = self.map_mut(TENANT_BY_HASH_V6)?;
            let keys: Vec<PrefixKeyV6> = m
                .keys()
                .collect::<Result<_, _>>()
                .map_err(err(TENANT_BY_HASH_V6))?;
            for k in keys
                .iter()
                .filter(|k| matches!(v6, Lookup::Lpm) || !want6.contains_key(k))
            {
                m.remove(k).map_err(err(TENANT_BY_HASH_V6))?;
            }
        }
        {
            let mut m: LpmTrie<&mut MapData, [u8; 4], u32> = self.map_mut(TENANT_BY_PREFIX_V4)?;
            let keys: Vec<Key<[u8; 4]>> = m
                .keys()
                .collect::<Result<_, _>>()
                .map_err(err(TENANT_BY_PREFIX_V4))?;
            for k in keys.iter().filter(|k| {
                matches!(v4, Lookup::Hash(_))
                    || !want4.contains_key(&PrefixKeyV4 {
                        len: k.prefix_len(),
                        addr: k.data(),
                    })
            }) {
                m.remove(k).map_err(err(TENANT_BY_PREFIX_V4))?;
            }
        }
        let mut m: LpmTrie<&mut MapData, [u8; 16], u32> = self.map_mut(TENANT_BY_PREFIX_V6)?;
        let keys: Vec<Key<[u8; 16]>> = m
            .keys()
            .collect::<Result<_, _>>()
            .map_err(err(TENANT_BY_PREFIX_V6))?;
        for k in keys.iter().filter(|k| {
            matches!(v6, Lookup::Hash(_))
                || !want6.contains_key(&PrefixKeyV6 {
                    len: k.prefix_len(),
                    addr: k.data(),
                })
        }) {
            m.remove(k).map_err(err(TENANT_BY_PREFIX_V6))?;
        }
        Ok(())
    }

    /// Writes a prefix into the map its family's lookup uses.
    fn insert_prefix(
        &mut self,
        prefix: Prefix,
        id: u32,
        lookup: &Lookup,
    ) -> Result<(), DatapathError> {
        let full = |map, source: aya::maps::MapError| {
            if matches!(
                os_error(&source),
                Some(libc::ENOSPC | libc::E2BIG | libc::ENOMEM)
            ) {
                DatapathError::MapFull {
                    map,
                    what: prefix.to_string(),
                }
            } else {
                DatapathError::Map { map, source }
            }
        };
        match (prefix, lookup) {
            (Prefix::V4(addr, len), Lookup::Hash(_)) => {
                let key = PrefixKeyV4 {
                    len: u32::from(len),
                    addr: addr.octets(),
                };
                let mut m: HashMap<&mut MapData, PrefixKeyV4, u32> =
                    self.map_mut(TENANT_BY_HASH_V4)?;
                m.insert(key, id, 0).map_err(|e| full(TENANT_BY_HASH_V4, e))
            }
            (Prefix::V6(addr, len), Lookup::Hash(_)) => {
                let key = PrefixKeyV6 {
                    len: u32::from(len),
                    addr: addr.octets(),
                };
                let mut m: HashMap<&mut MapData, PrefixKeyV6, u32> =
                    self.map_mut(TENANT_BY_HASH_V6)?;
                m.insert(key, id, 0).map_err(|e| full(TENANT_BY_HASH_V6, e))
            }
            (Prefix::V4(addr, len), Lookup::Lpm) => {
                let mut m: LpmTrie<&mut MapData, [u8; 4], u32> =
                    self.map_mut(TENANT_BY_PREFIX_V4)?;
                m.insert(&Key::new(u32::from(len), addr.octets()), id, 0)
                    .map_err(|e| full(TENANT_BY_PREFIX_V4, e))
            }
            (Prefix::V6(addr, len), Lookup::Lpm) => {
                let mut m: LpmTrie<&mut MapData, [u8; 16], u32> =
                    self.map_mut(TENANT_BY_PREFIX_V6)?;
                m.insert(&Key::new(u32::from(len), addr.octets()), id, 0)
                    .map_err(|e| full(TENANT_BY_PREFIX_V6, e))
            }
        }
    }

    fn map_mut<'a, T>(&'a mut self, name: &'static str) -> Result<T, DatapathError>
    where
        T: TryFrom<&'a mut Map, Error = aya::maps::MapError>,
    {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or_else(|| DatapathError::Load(format!("map {name} missing from the object")))?;
        T::try_from(map).map_err(|source| DatapathError::Map { map: name, source })
    }

    /// A map by name, for writing outside [`Datapath::apply`] (tests, later stages).
    pub fn map_raw_mut(&mut self, name: &'static str) -> Result<&mut Map, DatapathError> {
        self.ebpf
            .map_mut(name)
            .ok_or_else(|| DatapathError::Load(format!("map {name} missing from the object")))
    }

    /// A map by name, for reading counters and state.
    pub fn map(&self, name: &'static str) -> Result<&Map, DatapathError> {
        self.ebpf
            .map(name)
            .ok_or_else(|| DatapathError::Load(format!("map {name} missing from the object")))
    }

    /// The XDP_PASS baseline, loaded on first use (benchmarks only).
    pub fn baseline_mut(&mut self) -> Result<&mut Xdp, DatapathError> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(BASELINE_PROGRAM)
            .ok_or_else(|| DatapathError::Load(format!("program {BASELINE_PROGRAM} missing")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| DatapathError::Load(error_chain(&e)))?;
        if prog.fd().is_err() {
            prog.load()
                .map_err(|e| DatapathError::Load(error_chain(&e)))?;
        }
        Ok(prog)
    }

    /// The program, shared, for `BPF_PROG_TEST_RUN` from several threads at once.
    pub fn program(&self) -> Result<&Xdp, DatapathError> {
        self.ebpf
            .program(PROGRAM)
            .ok_or_else(|| DatapathError::Load(format!("program {PROGRAM} missing")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| DatapathError::Load(error_chain(&e)))
    }

    /// The program, for `BPF_PROG_TEST_RUN`.
    pub fn program_mut(&mut self) -> Result<&mut Xdp, DatapathError> {
        self.ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| DatapathError::Load(format!("program {PROGRAM} missing")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| DatapathError::Load(error_chain(&e)))
    }

    /// Attaches to `iface` (inside network namespace `netns` if given). Returns the mode used.
    pub fn attach(
        &mut self,
        iface: &str,
        mode: AttachMode,
        netns: Option<&str>,
    ) -> Result<&'static str, DatapathError> {
        let _ns = netns
            .map(|name| {
                NetNsEnter::enter(name).map_err(|source| DatapathError::NetNs {
                    name: name.into(),
                    source,
                })
            })
            .transpose()?;
        let tries: &[(XdpMode, &'static str)] = match mode {
            AttachMode::Auto => &[(XdpMode::Driver, "native"), (XdpMode::Skb, "skb")],
            AttachMode::Native => &[(XdpMode::Driver, "native")],
            AttachMode::Skb => &[(XdpMode::Skb, "skb")],
        };
        // A pinned link left by a previous agent: swap our program into it, atomically; the
        // interface never runs without a shaper.
        if let Some(link_pin) = self
            .pins
            .as_ref()
            .map(|d| d.join(LINK_PIN))
            .filter(|p| p.exists())
        {
            let pinned = PinnedLink::from_pin(&link_pin).map_err(|e| DatapathError::Pin {
                path: link_pin.clone(),
                reason: error_chain(&e),
            })?;
            let xdp_link =
                XdpLink::try_from(FdLink::from(pinned)).map_err(|e| DatapathError::Pin {
                    path: link_pin.clone(),
                    reason: error_chain(&e),
                })?;
            let prog = self.program_mut()?;
            let id = prog
                .attach_to_link(xdp_link)
                .map_err(|e| DatapathError::Attach {
                    iface: iface.into(),
                    mode: "adopted",
                    reason: error_chain(&e),
                })?;
            let fd = FdLink::try_from(
                prog.take_link(id)
                    .map_err(|e| DatapathError::Load(error_chain(&e)))?,
            )
            .map_err(|e| DatapathError::Load(error_chain(&e)))?;
            self.link = Some(Link::Pinned(fd));
            self.owns_pins = true;
            return Ok("adopted");
        }
        let mut last = None;
        for (xdp_mode, name) in tries {
            let prog = self.program_mut()?;
            match prog.attach(iface, *xdp_mode) {
                Ok(id) => {
                    self.link = Some(Link::Managed(id));
                    self.pin_link()?;
                    return Ok(name);
                }
                Err(aya::programs::ProgramError::UnknownInterface { .. }) => {
                    return Err(DatapathError::UnknownInterface(iface.into()));
                }
                Err(e) => {
                    let code = os_error(&e);
                    if matches!(code, Some(libc::EBUSY | libc::EEXIST)) {
                        return Err(DatapathError::AlreadyAttached(iface.into()));
                    }
                    if is_permission(code) {
                        return Err(DatapathError::NoPermission);
                    }
                    last = Some(DatapathError::Attach {
                        iface: iface.into(),
                        mode: name,
                        reason: error_chain(&e),
                    });
                }
            }
        }
        Err(last.unwrap_or_else(|| DatapathError::UnknownInterface(iface.into())))
    }

    /// With pins, pins the link beside the maps, so the program stays attached if the agent
    /// dies. A netlink attachment (kernels without XDP bpf_link) cannot be pinned: it stays
    /// managed, and the agent says so.
    fn pin_link(&mut self) -> Result<(), DatapathError> {
        let (Some(dir), Some(Link::Managed(id))) = (self.pins.clone(), self.link.take()) else {
            return Ok(());
        };
        let prog = self.program_mut()?;
        let link = prog
            .take_link(id)
            .map_err(|e| DatapathError::Load(error_chain(&e)))?;
        let fd = match FdLink::try_from(link) {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(cause = %e, "XDP attached through netlink: the program detaches if the agent dies");
                return Ok(());
            }
        };
        let path = dir.join(LINK_PIN);
        let pinned = fd.pin(&path).map_err(|e| DatapathError::Pin {
            path,
            reason: error_chain(&e),
        })?;
        self.link = Some(Link::Pinned(FdLink::from(pinned)));
        Ok(())
    }

    /// Detaches from the interface, if attached (a pinned link: its pin is removed and its
    /// last fd closed).
    pub fn detach(&mut self) -> Result<(), DatapathError> {
        match self.link.take() {
            Some(Link::Managed(id)) => self
                .program_mut()?
                .detach(id)
                .map_err(|e| DatapathError::Load(format!("detach: {}", error_chain(&e)))),
            Some(Link::Pinned(fd)) => {
                if let Some(dir) = &self.pins {
                    let _ = std::fs::remove_file(dir.join(LINK_PIN));
                }
                drop(fd);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Detaches and removes the pins (and the directory).
    pub fn unpin(&mut self) {
        let _ = self.detach();
        if let Some(dir) = self.pins.take() {
            remove_pins(&dir);
        }
    }
}

/// Removes the link and map pins of `dir` and the directory (and `/sys/fs/bpf/shaper` when it
/// was the last interface): removing the link pin detaches a program no process holds.
pub fn remove_pins(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(LINK_PIN));
    for name in PINNED_MAPS {
        let _ = std::fs::remove_file(dir.join(name));
    }
    let _ = std::fs::remove_dir(dir);
    // Remove the parent /sys/fs/bpf/shaper too when this was its last interface.
    if let Some(parent) = dir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        // Managed links are detached when the program is dropped; pins must be removed by
        // hand, and only when they are ours (see `owns_pins`).
        if self.owns_pins {
            self.unpin();
        }
    }
}

/// The directory the maps of `iface` are pinned in.
pub fn pin_dir(iface: &str) -> PathBuf {
    Path::new(PIN_ROOT).join(iface)
}

/// Mounts bpffs on /sys/fs/bpf when it is not mounted, as bpftool does.
pub fn ensure_bpffs() -> Result<(), DatapathError> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "))
    {
        return Ok(());
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
        .status()
        .map_err(DatapathError::NoBpffs)?;
    if !status.success() {
        return Err(DatapathError::NoBpffs(io::Error::other(format!(
            "mount exited with {status}"
        ))));
    }
    tracing::info!("mounted bpffs on /sys/fs/bpf");
    Ok(())
}

/// Opens a pinned map of the shaper running on `dir`.
pub fn open_pinned(dir: &Path, name: &str) -> Result<MapData, DatapathError> {
    let path = dir.join(name);
    if !path.exists() {
        return Err(DatapathError::NotPinned(dir.to_path_buf()));
    }
    MapData::from_pin(&path).map_err(|e| {
        if is_permission(os_error(&e)) {
            DatapathError::NoPermission
        } else {
            DatapathError::Pin {
                path,
                reason: error_chain(&e),
            }
        }
    })
}

/// Checks the pinned global config was written by this version of the shaper.
pub fn check_pinned_version(dir: &Path) -> Result<(), DatapathError> {
    let map = Map::Array(open_pinned(dir, GLOBAL_CONFIG)?);
    let arr: Array<&MapData, GlobalConfig> =
        Array::try_from(&map).map_err(|source| DatapathError::Map {
            map: GLOBAL_CONFIG,
            source,
        })?;
    let g = arr.get(&0, 0).map_err(|source| DatapathError::Map {
        map: GLOBAL_CONFIG,
        source,
    })?;
    if g.magic != CONFIG_MAGIC || g.version != CONFIG_VERSION {
        return Err(DatapathError::VersionMismatch(dir.to_path_buf()));
    }
    Ok(())
}

/// "outer: inner: innermost", since aya's errors keep the useful part in their sources.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let t = e.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = e.source();
    }
    s
}

/// Forwards aya-log records from the datapath to `log` (and so to `tracing`) until the
/// logger's ring buffer closes.
pub async fn drain_logs(logger: DatapathLogger) {
    // SAFETY: the logger owns its ring buffer fd and keeps it open for as long as the AsyncFd
    // holds the logger; nothing else closes it.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    };
    let Ok(mut fd) = registered else {
        return;
    };
    loop {
        let Ok(mut guard) = fd.readable_mut().await else {
            return;
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}

impl DatapathError {
    /// The OS error inside, if any (for tests and exit codes).
    pub fn os_code(&self) -> Option<i32> {
        self.source().and_then(os_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_config_math() {
        // 10 Mbit/s = 1.25 MB/s = 800 ns per byte.
        let c = tenant_config(10_000_000, 125_000);
        assert_eq!(c.cost_fp >> COST_SHIFT, 800);
        assert_eq!(c.burst_ns, 125_000 * 800);
        assert_eq!(c.rate_bytes, 1_250_000);
        assert_eq!(c.flags, TENANT_ACTIVE);
        // 1 Gbit/s = 8 ns per byte; 400 Gbit/s keeps 0.02 ns/byte within 0.1%.
        assert_eq!(tenant_config(1_000_000_000, 1500).cost_fp, 8 << COST_SHIFT);
        let fast =
            tenant_config(400_000_000_000, 1500).cost_fp as f64 / f64::from(1u32 << COST_SHIFT);
        assert!((fast - 0.02).abs() / 0.02 < 0.001, "{fast}");
        // The slowest rate keeps len * cost_fp far below u64 for a 64 KiB packet.
        let slow = tenant_config(crate::config::MIN_RATE.0, 1500).cost_fp;
        assert!(slow.checked_mul(70_000).is_some());
    }

    #[test]
    fn lookup_plan_probes_most_common_lengths_first_or_falls_back_to_lpm() {
        assert_eq!(
            Lookup::plan([24, 32, 32, 24, 32]),
            Lookup::Hash(vec![32, 24])
        );
        assert_eq!(
            Lookup::plan([16, 24]),
            Lookup::Hash(vec![24, 16]),
            "ties: longer first"
        );
        assert_eq!(Lookup::plan([]), Lookup::Hash(vec![]));
        assert_eq!(
            Lookup::plan([8, 16, 24, 32]),
            Lookup::Hash(vec![32, 24, 16, 8])
        );
        assert_eq!(Lookup::plan([8, 16, 20, 24, 32]), Lookup::Lpm);
        let cfg = Config::parse(crate::config::EXAMPLE).expect("valid");
        assert_eq!(
            lookup_plan(&cfg),
            (Lookup::Hash(vec![24]), Lookup::Hash(vec![48]))
        );
        let g = global_config(&cfg);
        assert_eq!(
            (g.v4_nprobes, g.v4_probes[0], g.v6_nprobes, g.v6_probes[0]),
            (1, 24, 1, 48)
        );
        assert_eq!(Lookup::Lpm.encode().1, LOOKUP_LPM);
    }

    #[test]
    fn global_config_follows_link_section() {
        let mut cfg = Config::parse(crate::config::EXAMPLE).expect("valid");
        let g = global_config(&cfg);
        assert_eq!(
            (g.magic, g.version, g.match_dir, g.unmatched),
            (CONFIG_MAGIC, CONFIG_VERSION, MATCH_DST, UNMATCHED_PASS)
        );
        cfg.link.match_dir = MatchDir::Src;
        cfg.link.unmatched = Unmatched::Drop;
        let g = global_config(&cfg);
        assert_eq!((g.match_dir, g.unmatched), (MATCH_SRC, UNMATCHED_DROP));
    }
}
