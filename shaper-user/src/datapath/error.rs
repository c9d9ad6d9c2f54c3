//! Errors of the datapath layer: each says what happened and what to do about it.
use super::*;

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "permission denied loading the BPF program: run as root (sudo) or grant CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON"
    )]
    NoPermission,
    #[error("interface '{0}' not found: check the name with `ip -br link`")]
    UnknownInterface(String),
    #[error("{0}")]
    BadInterfaceName(String),
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
        "interface {iface} has no native XDP ({reason}); generic (skb) mode sees packets after GRO, up to 64 kB each, which buckets smaller than that drop whole (TCP collapses): pass --xdp-mode skb to accept it, with bursts of 64kb or more"
    )]
    NoNativeXdp { iface: String, reason: String },
    #[error(
        "tenant '{tenant}': its {token_type} share of the burst is {bytes} bytes, below the largest packet the interface hands XDP ({mtu} bytes: its MTU, or GRO's 64 kB in generic mode), which could never pass: raise its burst to at least {need}b"
    )]
    BurstBelowMtu {
        tenant: String,
        token_type: &'static str,
        bytes: u64,
        mtu: u64,
        need: u64,
    },
    #[error(
        "config has {tenants} tenants but the program is loaded for at most {max}: pass --max-tenants {tenants} or more (up to {MAX_TENANTS_LIMIT})"
    )]
    TooManyTenants { tenants: usize, max: u32 },
    #[error(
        "config has {count} {family} prefixes but the maps hold at most {max} (twice --max-tenants): pass --max-tenants {need} or more"
    )]
    TooManyPrefixes {
        family: &'static str,
        count: usize,
        max: u64,
        need: u64,
    },
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
    #[error(
        "bpffs is not mounted at /sys/fs/bpf and mounting it failed ({0}): run `mount -t bpf bpf /sys/fs/bpf`"
    )]
    NoBpffs(io::Error),
    #[error("no shaper maps pinned at {0}: is `shaper run` running on this interface?")]
    NotPinned(PathBuf),
    #[error("cannot enter network namespace '{name}': {source}")]
    NetNs { name: String, source: io::Error },
    #[error("loading the BPF object failed")]
    Ebpf(#[source] aya::EbpfError),
    #[error("BPF program {program}: {what} failed")]
    Program {
        program: String,
        what: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("{0} is missing from the BPF object (a build of another shaper version?)")]
    Missing(String),
    #[error("taking the XDP link failed")]
    Link(#[source] aya::programs::links::LinkError),
    #[error("{0}")]
    Load(String),
    #[error("BPF map {map}: {source}")]
    Map {
        map: &'static str,
        source: aya::maps::MapError,
    },
    #[error("BPF map {map}: batched read: {source}")]
    Batch {
        map: &'static str,
        source: io::Error,
    },
    #[error("pinning {path}: {reason}")]
    Pin { path: PathBuf, reason: String },
}

/// A failed operation on program `program`, with aya's error as its source.
pub(super) fn program_error(
    program: &str,
    what: &'static str,
    source: aya::programs::ProgramError,
) -> DatapathError {
    DatapathError::Program {
        program: program.to_string(),
        what,
        source,
    }
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

pub(super) fn is_permission(code: Option<i32>) -> bool {
    matches!(code, Some(libc::EPERM | libc::EACCES))
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

impl DatapathError {
    /// The OS error inside, if any (for tests and exit codes).
    pub fn os_code(&self) -> Option<i32> {
        self.source().and_then(os_error)
    }
}
