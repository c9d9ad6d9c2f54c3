//! The JSON config: parsed strictly (unknown fields refused), then validated as a whole, every
//! error naming the JSON path it is about. A [`Config`] that exists is a config that is valid.
//!
//! Sections that later stages act on (`pools`, `token_types`, `forecast`, `policy`, `events`,
//! `api`, `history`) are parsed and validated now, so a config written today keeps working.
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::allocate::PolicyMode;
use crate::forecast::ModelChoice;
use crate::units::{Rate, Size};

/// The example config shipped with the project (and embedded for `shaper demo`).
pub const EXAMPLE: &str = include_str!("../../../examples/tiers.json");
/// Every setting at its default, with a comment each: what `shaper config example` prints.
pub const ANNOTATED: &str = include_str!("../../../examples/annotated.json");

/// Lowest tenant rate accepted: below it one full-size packet takes seconds.
pub const MIN_RATE: Rate = Rate(8_000);
/// Highest link capacity accepted.
pub const MAX_LINK: Rate = Rate(400_000_000_000);
/// A burst must hold at least one full-size Ethernet-MTU IP packet, or such packets never pass.
pub const MIN_BURST: Size = Size(1_500);
/// Bursts above this are a typo, not a policy.
pub const MAX_BURST: Size = Size(1_000_000_000);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config: at {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config: at {path}: {message}")]
    Invalid { path: String, message: String },
    #[error(
        "config {path} is world-writable (mode {mode:o}): anyone could change the rates; run chmod o-w on it"
    )]
    WorldWritable { path: PathBuf, mode: u32 },
    /// Someone other than root and the agent's own user could change the config.
    #[error("config {path}: {why}: anyone who can write it sets every tenant's rate; {fix}")]
    Untrusted {
        path: PathBuf,
        why: String,
        fix: &'static str,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub link: Link,
    #[serde(default)]
    pub pools: Pools,
    #[serde(default = "default_tiers")]
    pub tiers: BTreeMap<TierName, Tier>,
    #[serde(default)]
    pub token_types: TokenTypes,
    pub tenants: Vec<Tenant>,
    #[serde(default)]
    pub forecast: Forecast,
    #[serde(default)]
    pub policy: Policy,
    #[serde(default)]
    pub events: Vec<Event>,
    #[serde(default)]
    pub api: Api,
    #[serde(default)]
    pub history: History,
    /// Cluster mode (`scope: "aggregate"` tenants share their limits with other hosts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Cluster>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MatchDir {
    #[default]
    Dst,
    Src,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Unmatched {
    #[default]
    Pass,
    Drop,
}

/// Frames no tenant can be charged for (malformed, non-IP but ARP, a third VLAN tag, PPPoE
/// control traffic, MPLS): passed (a router's stack discards what it cannot use), dropped (a bridge
/// would forward them unshaped), or policed together at `link.unparsed_rate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Unparsed {
    #[default]
    Pass,
    Drop,
    Police,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub capacity: Rate,
    #[serde(default, rename = "match")]
    pub match_dir: MatchDir,
    #[serde(default)]
    pub unmatched: Unmatched,
    #[serde(default)]
    pub unparsed: Unparsed,
    /// The shared rate of unparsed frames under `police` (default: 1% of the capacity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unparsed_rate: Option<Rate>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pools {
    pub guaranteed: f64,
    pub opportunistic: f64,
    pub emergency: f64,
}

impl Default for Pools {
    fn default() -> Self {
        Pools {
            guaranteed: 0.80,
            opportunistic: 0.15,
            emergency: 0.05,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TierName {
    Bronze,
    Silver,
    Gold,
    Platinum,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub priority: u8,
    pub borrow: bool,
    pub emergency: bool,
    pub risk: f64,
}

fn default_tiers() -> BTreeMap<TierName, Tier> {
    let t = |priority, borrow, emergency, risk| Tier {
        priority,
        borrow,
        emergency,
        risk,
    };
    BTreeMap::from([
        (TierName::Bronze, t(0, false, false, 0.2)),
        (TierName::Silver, t(1, true, false, 0.5)),
        (TierName::Gold, t(2, true, true, 0.8)),
        (TierName::Platinum, t(3, true, true, 1.0)),
    ])
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenType {
    Gold,
    Silver,
    Bronze,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenTypes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gold: Option<TypeRules>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silver: Option<TypeRules>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bronze: Option<TypeRules>,
    #[serde(default = "default_token_type")]
    pub default: TokenType,
    #[serde(default)]
    pub fallback: bool,
    /// How tenants without their own `mix` split their rate and burst over the token types;
    /// absent: all of it on the `default` type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mix: Option<Mix>,
    /// What one bit/s of each type is worth in `shaper exchange`: giving up X of type A buys
    /// X x A / B of type B. Absent: all 1 (rate moves one for one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_rates: Option<Mix>,
}

impl TokenTypes {
    /// The rules in the order the datapath evaluates them (gold, silver, bronze; first match
    /// wins), each with its type.
    pub fn ordered_rules(&self) -> Vec<(TokenType, &MatchRule)> {
        [
            (TokenType::Gold, &self.gold),
            (TokenType::Silver, &self.silver),
            (TokenType::Bronze, &self.bronze),
        ]
        .into_iter()
        .flat_map(|(ty, r)| {
            r.iter()
                .flat_map(move |r| r.rules.iter().map(move |m| (ty, m)))
        })
        .collect()
    }

    /// The mix of a tenant that sets none.
    pub fn default_mix(&self) -> Mix {
        self.mix.clone().unwrap_or(Mix {
            gold: f64::from(u8::from(self.default == TokenType::Gold)),
            silver: f64::from(u8::from(self.default == TokenType::Silver)),
            bronze: f64::from(u8::from(self.default == TokenType::Bronze)),
        })
    }
}

impl TokenType {
    /// Index into the datapath's per-type arrays (`shaper_common::TYPE_*`).
    pub fn index(self) -> usize {
        match self {
            TokenType::Gold => shaper_common::TYPE_GOLD,
            TokenType::Silver => shaper_common::TYPE_SILVER,
            TokenType::Bronze => shaper_common::TYPE_BRONZE,
        }
    }
}

impl Mix {
    /// The shares in type index order.
    pub fn shares(&self) -> [f64; shaper_common::TOKEN_TYPES] {
        [self.gold, self.silver, self.bronze]
    }
}

fn default_token_type() -> TokenType {
    TokenType::Silver
}

impl Default for TokenTypes {
    fn default() -> Self {
        TokenTypes {
            gold: None,
            silver: None,
            bronze: None,
            default: TokenType::Silver,
            fallback: false,
            mix: None,
            exchange_rates: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeRules {
    #[serde(rename = "match")]
    pub rules: Vec<MatchRule>,
}

/// One rule: every field given must match (AND); a packet takes the type of the first rule
/// list that has a matching rule (OR within a list).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dscp: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<Proto>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dport: Option<Vec<u16>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sport: Option<Vec<u16>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    Sctp,
}

impl Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Icmp => 1,
            Proto::Icmpv6 => 58,
            Proto::Sctp => 132,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    pub name: String,
    pub tier: TierName,
    pub prefixes: Vec<String>,
    pub rate: Rate,
    pub burst: Size,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceil: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mix: Option<Mix>,
    #[serde(default)]
    pub ecn: bool,
    /// `host` (default): `rate` and `ceil` are this host's. `aggregate`: they are limits on
    /// the sum over every host of the cluster (`cluster`), divided among them by demand.
    #[serde(default, skip_serializing_if = "Scope::is_host")]
    pub scope: Scope,
}

/// Where a tenant's limits apply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    #[default]
    Host,
    Aggregate,
}

impl Scope {
    pub fn is_host(&self) -> bool {
        *self == Scope::Host
    }
}

/// How a host's share of an aggregate tenant is sized: by the demand its forecaster predicts
/// for when the share applies, or by the demand it measured last (distributed rate limiting's
/// rule, for comparison).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShareBy {
    #[default]
    Predicted,
    Measured,
}

/// Cluster mode: the agents of several hosts divide each aggregate tenant's `rate` and `ceil`
/// among themselves through a shared store, every `interval_ms`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// `redis://HOST:PORT[/DB]` or `unix:///PATH/redis.sock`.
    pub store: String,
    /// This host's name in the cluster: unique among the hosts.
    pub host_id: String,
    /// Namespace of the cluster's keys in the store (several clusters may share one store).
    #[serde(default = "default_cluster_name")]
    pub name: String,
    #[serde(default = "default_cluster_interval")]
    pub interval_ms: u64,
    /// How long shares hold without the store (then each host takes aggregate / hosts seen),
    /// and how long a silent host keeps its share before the others reclaim it.
    #[serde(default = "default_lease")]
    pub lease_s: f64,
    /// Share of each aggregate limit kept as floors, evenly over the active hosts, so a flow
    /// starting where there was no demand gets through until the next division.
    #[serde(default = "default_floor")]
    pub floor: f64,
    #[serde(default)]
    pub share_by: ShareBy,
    /// A file (mode 0600) holding the store's password, or `USER PASSWORD` for an ACL user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_file: Option<PathBuf>,
}

fn default_cluster_name() -> String {
    "shaper".into()
}
fn default_cluster_interval() -> u64 {
    1000
}
fn default_lease() -> f64 {
    10.0
}
fn default_floor() -> f64 {
    0.02
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
/// Shares of the token types; a type not named has none (the shares must still add up to 1).
pub struct Mix {
    #[serde(default)]
    pub gold: f64,
    #[serde(default)]
    pub silver: f64,
    #[serde(default)]
    pub bronze: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Forecast {
    pub interval_ms: u64,
    pub horizon_s: u64,
    pub season_s: u64,
    /// `auto` or one model's name (see `forecast::ModelKind`).
    pub model: ModelChoice,
    pub confidence: f64,
    pub accuracy_alert_mase: f64,
    /// `tracking` (default) or `window`: how intervals are kept (see
    /// `forecast::IntervalMethod`).
    #[serde(default)]
    pub intervals: crate::forecast::IntervalMethod,
}

impl Default for Forecast {
    fn default() -> Self {
        Forecast {
            interval_ms: 1000,
            horizon_s: 10,
            season_s: 86_400,
            model: ModelChoice::Auto,
            confidence: 0.95,
            accuracy_alert_mase: 1.5,
            intervals: Default::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub mode: PolicyMode,
    pub adjustment_multiplier: f64,
    pub auto_tune: bool,
    pub max_exchange_fraction: f64,
    pub reactive_override: ReactiveOverride,
    /// Let the allocator give a tenant less than its base rate while its predicted demand is
    /// lower (overbooking the guaranteed pool); off: every tenant always keeps its base rate.
    #[serde(default)]
    pub overcommit: bool,
    /// Drop precedence in the datapath: while the link is really short (its bucket in debt
    /// past every borrow depth), the own-token traffic of lower tiers gives way to higher
    /// tiers' at packet level, bronze first, instead of the downstream queue dropping every
    /// tier alike. Lower tiers keep their fills: capacity the top leaves unused is theirs at
    /// once. A datapath mechanism: it applies in every mode, `static` included.
    #[serde(default = "yes")]
    pub drop_precedence: bool,
}

fn yes() -> bool {
    true
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            mode: PolicyMode::Predictive,
            adjustment_multiplier: 0.5,
            auto_tune: true,
            max_exchange_fraction: 0.5,
            reactive_override: ReactiveOverride::default(),
            overcommit: false,
            drop_precedence: true,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReactiveOverride {
    pub in_profile_drop_ratio: f64,
    pub cpu_busy_ratio: f64,
}

impl Default for ReactiveOverride {
    fn default() -> Self {
        ReactiveOverride {
            in_profile_drop_ratio: 0.01,
            cpu_busy_ratio: 0.95,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub tenant: String,
    pub start: String,
    pub duration_s: u64,
    pub rate: Rate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Api {
    pub listen: SocketAddr,
    pub socket: PathBuf,
    /// The API can change rates (reload, exchange): a `listen` beyond loopback must be asked
    /// for explicitly.
    #[serde(default)]
    pub allow_remote: bool,
    /// A file (mode 0600) holding a bearer token that lets TCP clients reload and exchange.
    /// Without one, TCP is read-only: changes go through the Unix socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            socket: PathBuf::from("/run/shaper/shaper.sock"),
            allow_remote: false,
            token_file: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct History {
    pub path: PathBuf,
    pub retention_days: u32,
}

impl Default for History {
    fn default() -> Self {
        History {
            path: PathBuf::from("/var/lib/shaper/history.db"),
            retention_days: 14,
        }
    }
}

impl Config {
    /// Reads, parses and validates a config file. Whoever can write it sets every tenant's
    /// rate on the next reload, so it must be writable only by root or the agent's own user,
    /// in a directory only they can change. The file is opened once and the open file is
    /// checked (no window between the check and the read).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_since(path, None)
    }

    /// [`Config::load`] for a reload: validated knowing `in_force`, the config it replaces
    /// (see [`Config::validate_since`]).
    pub fn load_since(path: &Path, in_force: Option<&Config>) -> Result<Config, ConfigError> {
        use std::io::Read as _;
        use std::os::unix::fs::MetadataExt as _;
        let read = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut f = std::fs::File::open(path).map_err(read)?;
        let meta = f.metadata().map_err(read)?;
        let mode = meta.mode();
        if mode & 0o002 != 0 {
            return Err(ConfigError::WorldWritable {
                path: path.to_path_buf(),
                mode: mode & 0o7777,
            });
        }
        // SAFETY: geteuid has no arguments and cannot fail.
        let me = unsafe { libc::geteuid() };
        let untrusted = |why: String, fix| ConfigError::Untrusted {
            path: path.to_path_buf(),
            why,
            fix,
        };
        if meta.uid() != 0 && meta.uid() != me {
            return Err(untrusted(
                format!("owned by uid {}", meta.uid()),
                "chown it to root (or the agent's user)",
            ));
        }
        if mode & 0o020 != 0 && meta.gid() != 0 {
            return Err(untrusted(
                format!(
                    "group-writable (mode {:o}, gid {})",
                    mode & 0o7777,
                    meta.gid()
                ),
                "run chmod g-w on it",
            ));
        }
        // The directory: whoever may rename or replace entries in it can swap the file.
        let dir = std::fs::canonicalize(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        if let Some(dir) = dir
            && let Ok(d) = std::fs::metadata(&dir)
        {
            let sticky = d.mode() & 0o1000 != 0;
            let others_write = d.mode() & 0o002 != 0 || (d.mode() & 0o020 != 0 && d.gid() != 0);
            if (others_write && !sticky) || (d.uid() != 0 && d.uid() != me) {
                return Err(untrusted(
                    format!(
                        "its directory {} can be changed by others (mode {:o}, uid {})",
                        dir.display(),
                        d.mode() & 0o7777,
                        d.uid()
                    ),
                    "keep configs in a directory only root writes, such as /etc/shaper",
                ));
            }
        }
        let mut text = String::new();
        f.read_to_string(&mut text).map_err(read)?;
        Config::parse_since(&text, in_force)
    }

    /// Parses and validates config text: JSON, with `//` and `/* */` comments allowed (blanked
    /// out in place, so an error's line and column still point into the file).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_since(text, None)
    }

    /// [`Config::parse`], validated knowing `in_force` (see [`Config::validate_since`]).
    pub fn parse_since(text: &str, in_force: Option<&Config>) -> Result<Config, ConfigError> {
        // Comments are blanked only where there may be some (a 100,000-tenant file has none,
        // and the byte-by-byte pass over its 10 MB cost as much as parsing it).
        let mut plain = String::new();
        let text = if text.contains("//") || text.contains("/*") {
            plain.reserve(text.len());
            std::io::Read::read_to_string(
                &mut json_comments::StripComments::new(text.as_bytes()),
                &mut plain,
            )
            .map_err(|e| ConfigError::Parse {
                path: "(top level)".into(),
                message: format!("an unterminated comment: {e}"),
            })?;
            plain.as_str()
        } else {
            text
        };
        // The plain parser first; a config it refuses is parsed again with its path tracked
        // for the error message (tracking every element's path doubled a large load).
        if let Ok(cfg) = serde_json::from_str::<Config>(text) {
            cfg.validate_since(in_force)?;
            return Ok(cfg);
        }
        let de = &mut serde_json::Deserializer::from_str(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = strip_position(&inner.to_string());
            ConfigError::Parse {
                path: if path == "." {
                    "(top level)".into()
                } else {
                    path
                },
                message: format!(
                    "{message} (line {}, column {})",
                    inner.line(),
                    inner.column()
                ),
            }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Every tenant prefix, parsed, with the index of its tenant. Valid configs only.
    pub fn prefixes(&self) -> Vec<(Prefix, usize)> {
        self.tenants
            .iter()
            .enumerate()
            .flat_map(|(i, t)| {
                t.prefixes
                    .iter()
                    .filter_map(move |s| Prefix::parse(s).ok().map(|p| (p, i)))
            })
            .collect()
    }
}

/// A config of `n` tenants for tests and benchmarks: tenant `i` owns 10.0.0.0 + i (a /32) and
/// 2001:db8:: + i (a /128), at `rate` with `burst`. `n` is at most 2^24.
pub fn synthetic(n: u32, capacity: Rate, rate: Rate, burst: Size) -> Config {
    let tenants = (0..n)
        .map(|i| Tenant {
            name: format!("t{i}"),
            tier: TierName::Gold,
            prefixes: vec![
                Ipv4Addr::from(0x0a00_0000 | (i & 0x00ff_ffff)).to_string(),
                Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i)).to_string(),
            ],
            rate,
            burst,
            ceil: None,
            mix: None,
            ecn: false,
            scope: Scope::Host,
        })
        .collect();
    Config {
        link: Link {
            capacity,
            match_dir: MatchDir::Dst,
            unmatched: Unmatched::Pass,
            unparsed: Unparsed::Pass,
            unparsed_rate: None,
        },
        pools: Pools::default(),
        tiers: default_tiers(),
        token_types: TokenTypes::default(),
        tenants,
        forecast: Forecast::default(),
        policy: Policy::default(),
        events: vec![],
        api: Api::default(),
        history: History::default(),
        cluster: None,
    }
}

pub fn tier_str(t: TierName) -> &'static str {
    match t {
        TierName::Bronze => "bronze",
        TierName::Silver => "silver",
        TierName::Gold => "gold",
        TierName::Platinum => "platinum",
    }
}

/// serde_json appends " at line L column C"; we print the position ourselves.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

mod prefix;
mod validate;

pub use self::prefix::Prefix;

#[cfg(test)]
mod tests;
