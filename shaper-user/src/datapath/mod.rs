//! Loader: loads the XDP program, sizes its maps, attaches it. The only module that knows map
//! names. `write` puts a config into the maps, `pins` keeps maps and link in bpffs so the
//! datapath outlives its agent, `error` says what went wrong and what to do.
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
    BucketParams, CLOCK_COARSE, CLOCK_PRECISE, CONFIG_MAGIC, CONFIG_VERSION, COST_SHIFT,
    GLOBAL_BORROW, GLOBAL_FALLBACK, GLOBAL_YIELD, GlobalConfig, LOOKUP_LPM, MATCH_DST, MATCH_SRC,
    MAX_PREFIX_PROBES, MAX_TENANTS_LIMIT, PrefixKeyV4, PrefixKeyV6, RESCALED, RULE_DPORT,
    RULE_DSCP, RULE_PORTS, RULE_PROTO, RULE_SPORT, TENANT_ACTIVE, TENANT_BORROW, TENANT_ECN,
    TENANT_EMERGENCY, TIERS, TYPE_SILVER, TenantConfig, TenantCounters, TenantState, TokenRules,
    UNMATCHED_DROP, UNMATCHED_PASS, UNPARSED_DROP, UNPARSED_PASS, UNPARSED_POLICE,
};
#[cfg(test)]
use shaper_common::{TYPE_BRONZE, TYPE_GOLD, TokenRule};

use crate::config::{Config, MatchDir, Prefix, Unmatched, Unparsed};

pub mod batch;
mod bench;
mod diff;
mod encode;
mod error;
mod link_info;
mod mapped;
mod netns;
mod pins;
mod read;
mod tenants;
mod write;

pub use self::bench::BenchPrograms;
pub use self::encode::{
    DepositWrite, ECN_MARK_FRACTION, FLOW_SAMPLE_SHIFT, Lookup, TenantRates, TenantWrite, bucket,
    check_bursts, global_config, global_config_for, link_burst_bytes, lookup_plan, lookup_plan_of,
    tenant_config, tenant_params, tenant_params_at, token_rules,
};
pub(crate) use self::error::os_error;
pub use self::error::{DatapathError, error_chain};
use self::error::{is_permission, program_error};
pub use self::link_info::pinned_link_ifindex;
pub use self::netns::{NetNsEnter, ifindex, interface_name, mtu, netns_inode};
pub use self::pins::{
    check_pinned_layout, check_pinned_version, ensure_bpffs, open_pinned_map, pin_dir, remove_pins,
};
pub use self::read::{
    monotonic_ns, read_class_counters, read_flows, read_tenant_counters, read_tenant_counters_each,
    read_tenant_states, sum_cpus,
};
pub use self::tenants::{TenantInfo, id_span, tenant_table};
pub use self::write::{live_global, live_tenant};

/// The XDP program, built from shaper-ebpf by build.rs.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/shaper"));

pub const PROGRAM: &str = "shaper";
/// Prefix slots per tenant slot, in each family's maps: room for two per tenant on average.
pub const PREFIXES_PER_TENANT: u32 = 2;
pub const GLOBAL_CONFIG: &str = "GLOBAL_CONFIG";
pub const CONFIG_SLOT: &str = "CONFIG_SLOT";
pub const TENANT_BY_PREFIX_V4: &str = "TENANT_BY_PREFIX_V4";
pub const TENANT_BY_PREFIX_V6: &str = "TENANT_BY_PREFIX_V6";
pub const TENANT_BY_HASH_V4: &str = "TENANT_BY_HASH_V4";
pub const TENANT_BY_HASH_V6: &str = "TENANT_BY_HASH_V6";
pub const TENANT_CONFIG: &str = "TENANT_CONFIG";
pub const TENANT_SLOT: &str = "TENANT_SLOT";
pub const TOKEN_RULES: &str = "TOKEN_RULES";
pub const GLOBAL_STATE: &str = "GLOBAL_STATE";
pub const FLOWS: &str = "FLOWS";
pub const LINK_PENDING: &str = "LINK_PENDING";
pub const TENANT_STATE: &str = "TENANT_STATE";
pub const TENANT_COUNTERS: &str = "TENANT_COUNTERS";
pub const GLOBAL_COUNTERS: &str = "GLOBAL_COUNTERS";
/// Every map the agent pins, so `shaper stats` and later runs can find them.
pub const PINNED_MAPS: &[&str] = &[
    CONFIG_SLOT,
    GLOBAL_CONFIG,
    TENANT_BY_PREFIX_V4,
    TENANT_BY_PREFIX_V6,
    TENANT_BY_HASH_V4,
    TENANT_BY_HASH_V6,
    TENANT_CONFIG,
    TENANT_SLOT,
    TOKEN_RULES,
    GLOBAL_STATE,
    TENANT_STATE,
    TENANT_COUNTERS,
    GLOBAL_COUNTERS,
    FLOWS,
    LINK_PENDING,
];

/// Where pins live: `/sys/fs/bpf/shaper/IF/`.
pub const PIN_ROOT: &str = "/sys/fs/bpf/shaper";

/// How to attach: `auto` is native, and says how to ask for generic (skb) mode where the
/// driver has none; `skb` only when asked (it sees packets after GRO, up to 64 kB).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum AttachMode {
    #[default]
    Auto,
    Native,
    Skb,
}

/// One jiffy in ns: the resolution of `CLOCK_MONOTONIC_COARSE`, which is what
/// `bpf_ktime_get_coarse_ns` reads; 10 ms (HZ = 100, the slowest tick) if it cannot be read.
fn coarse_tick_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a plain syscall writing into a local.
    let ok = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) } == 0;
    let ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    if ok && ns > 0 { ns } else { 10_000_000 }
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

/// A loaded (not necessarily attached) shaper program and its maps.
pub struct Datapath {
    ebpf: Ebpf,
    max_tenants: u32,
    link: Option<Attachment>,
    /// Where the maps (and, once attached, the link) are pinned.
    pins: Option<PathBuf>,
    /// Whether dropping this removes the pins: not for adopted pins until attached, so a run
    /// that fails while adopting leaves the datapath enforcing as it found it.
    owns_pins: bool,
    adopted: bool,
    /// The agent-written maps hold a config (adopted, or applied before).
    populated: bool,
    /// The prefix lookup plan in force, as this process last wrote it (`None`: not known, as
    /// after adopting pins or a write that failed): a reload that moves no prefix keeps it,
    /// without parsing every prefix of both configs again.
    plan: Option<(Lookup, Lookup)>,
    logger: Option<DatapathLogger>,
    /// What each tenant's slot word selects, as this process last wrote or read it: the agent
    /// is the only writer of `TENANT_CONFIG` and `TENANT_SLOT`, so a cycle need not read every
    /// config back to see what changed.
    live_cache: Vec<Option<(u32, TenantConfig)>>,
    /// When this process last flipped `CONFIG_SLOT`: the entry it left may be rewritten only
    /// once every packet that read the old word is done with it ([`FLIP_GRACE`]).
    global_flip: Option<std::time::Instant>,
    /// When this process last flipped each tenant's slot word (monotonic ns, by id; 0: never),
    /// for the same grace: a tenant written twice in a row (an exchange right after a cycle)
    /// must not rewrite the slot a packet may still hold.
    tenant_flips: Vec<u64>,
}

/// How long a packet may still be reading the entry a slot word selected before a flip. An
/// XDP run takes microseconds; this is a wide margin, paid at most once per reload.
pub const FLIP_GRACE: std::time::Duration = std::time::Duration::from_millis(2);

/// How the program is attached.
enum Attachment {
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

    fn load_inner(
        max_tenants: u32,
        clock: Clock,
        pins: Option<&Path>,
    ) -> Result<Datapath, DatapathError> {
        if max_tenants == 0 || max_tenants > MAX_TENANTS_LIMIT {
            return Err(DatapathError::BadMaxTenants(max_tenants));
        }
        // Prefixes: room for two per tenant on average, in each family.
        let prefixes = max_tenants.saturating_mul(PREFIXES_PER_TENANT);
        let clock_value = match clock {
            Clock::Precise => CLOCK_PRECISE,
            Clock::Coarse => CLOCK_COARSE,
        };
        let slack_ns = match clock {
            Clock::Precise => 0u64,
            Clock::Coarse => coarse_tick_ns(),
        };
        let mut loader = EbpfLoader::new();
        loader
            .override_global("CLOCK", &clock_value, true)
            .override_global("CLOCK_SLACK_NS", &slack_ns, true)
            .map_max_entries(TENANT_CONFIG, 2 * max_tenants)
            .map_max_entries(TENANT_SLOT, max_tenants)
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
                DatapathError::Ebpf(e)
            }
        })?;
        // The datapath logs only rare events (misconfiguration), at debug level. The logger
        // must outlive loading (it holds the ring buffer's fd); `run` drains it.
        let logger = aya_log::EbpfLogger::init(&mut ebpf)
            .map_err(|e| tracing::debug!(cause = %e, "no aya-log from the datapath"))
            .ok();
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| DatapathError::Missing(format!("program {PROGRAM}")))?
            .try_into()
            .map_err(|e| program_error(PROGRAM, "type check", e))?;
        prog.load().map_err(|e| {
            if is_permission(os_error(&e)) {
                DatapathError::NoPermission
            } else {
                program_error(PROGRAM, "load", e)
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
            plan: None,
            logger,
            live_cache: Vec::new(),
            global_flip: None,
            tenant_flips: Vec::new(),
        })
    }

    /// Hands the datapath's log reader to the caller, to drain with [`drain_logs`].
    pub fn take_logger(&mut self) -> Option<DatapathLogger> {
        self.logger.take()
    }

    pub fn max_tenants(&self) -> u32 {
        self.max_tenants
    }

    fn map_mut<'a, T>(&'a mut self, name: &'static str) -> Result<T, DatapathError>
    where
        T: TryFrom<&'a mut Map, Error = aya::maps::MapError>,
    {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or_else(|| DatapathError::Missing(format!("map {name}")))?;
        T::try_from(map).map_err(|source| DatapathError::Map { map: name, source })
    }

    fn map_typed<'a, T>(&'a self, name: &'static str) -> Result<T, DatapathError>
    where
        T: TryFrom<&'a Map, Error = aya::maps::MapError>,
    {
        T::try_from(self.map(name)?).map_err(|source| DatapathError::Map { map: name, source })
    }

    /// A map by name, for writing outside [`Datapath::apply`] (tests, later stages).
    pub fn map_raw_mut(&mut self, name: &'static str) -> Result<&mut Map, DatapathError> {
        self.ebpf
            .map_mut(name)
            .ok_or_else(|| DatapathError::Missing(format!("map {name}")))
    }

    /// A map by name, for reading counters and state.
    pub fn map(&self, name: &'static str) -> Result<&Map, DatapathError> {
        self.ebpf
            .map(name)
            .ok_or_else(|| DatapathError::Missing(format!("map {name}")))
    }

    /// The program, shared, for `BPF_PROG_TEST_RUN` from several threads at once.
    pub fn program(&self) -> Result<&Xdp, DatapathError> {
        self.ebpf
            .program(PROGRAM)
            .ok_or_else(|| DatapathError::Missing(format!("program {PROGRAM}")))?
            .try_into()
            .map_err(|e| program_error(PROGRAM, "type check", e))
    }

    /// The program, for `BPF_PROG_TEST_RUN`.
    pub fn program_mut(&mut self) -> Result<&mut Xdp, DatapathError> {
        self.ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| DatapathError::Missing(format!("program {PROGRAM}")))?
            .try_into()
            .map_err(|e| program_error(PROGRAM, "type check", e))
    }

    /// The interface index the pinned link is attached to, as the kernel reports it (0: the
    /// interface is gone, and the program with it); `None` without a pinned link.
    pub fn attached_ifindex(&self) -> Option<io::Result<u32>> {
        match (&self.link, &self.pins) {
            (Some(Attachment::Pinned(_)), Some(dir)) => {
                Some(pinned_link_ifindex(&dir.join(LINK_PIN)))
            }
            _ => None,
        }
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
            // No silent fall back to generic mode for `auto`: see `DatapathError::NoNativeXdp`.
            AttachMode::Auto | AttachMode::Native => &[(XdpMode::Driver, "native")],
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
                    .map_err(|e| program_error(PROGRAM, "take link", e))?,
            )
            .map_err(DatapathError::Link)?;
            self.link = Some(Attachment::Pinned(fd));
            self.owns_pins = true;
            if let Some(dir) = link_pin.parent() {
                pins::restrict(dir)?;
            }
            return Ok("adopted");
        }
        let mut last = None;
        for (xdp_mode, name) in tries {
            let prog = self.program_mut()?;
            match prog.attach(iface, *xdp_mode) {
                Ok(id) => {
                    self.link = Some(Attachment::Managed(id));
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
        Err(match last {
            Some(DatapathError::Attach { iface, reason, .. }) if mode == AttachMode::Auto => {
                DatapathError::NoNativeXdp { iface, reason }
            }
            Some(e) => e,
            None => DatapathError::UnknownInterface(iface.into()),
        })
    }

    /// Detaches from the interface, if attached (a pinned link: its pin is removed and its
    /// last fd closed).
    pub fn detach(&mut self) -> Result<(), DatapathError> {
        match self.link.take() {
            Some(Attachment::Managed(id)) => self
                .program_mut()?
                .detach(id)
                .map_err(|e| program_error(PROGRAM, "detach", e)),
            Some(Attachment::Pinned(fd)) => {
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

impl Drop for Datapath {
    fn drop(&mut self) {
        // Managed links are detached when the program is dropped; pins must be removed by
        // hand, and only when they are ours (see `owns_pins`). Never while a panic unwinds:
        // the pinned datapath keeps enforcing the last rates (fail-static), and the next
        // agent adopts it.
        if self.owns_pins && !std::thread::panicking() {
            self.unpin();
        }
    }
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
