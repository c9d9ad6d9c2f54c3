//! The JSON config: parsed strictly (unknown fields refused), then validated as a whole, every
//! error naming the JSON path it is about. A [`Config`] that exists is a config that is valid.
//!
//! Sections that later stages act on (`pools`, `token_types`, `forecast`, `policy`, `events`,
//! `api`, `history`) are parsed and validated now, so a config written today keeps working.
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::allocate::PolicyMode;
use crate::forecast::ModelChoice;
use crate::units::{Rate, Size};

/// The example config shipped with the project (and embedded for `shaper demo`).
pub const EXAMPLE: &str = include_str!("../../examples/tiers.json");

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
}

/// A mix's shares are fractions that add up to 1.
fn validate_mix(path: &str, m: &Mix) -> Result<(), ConfigError> {
    for (name, v) in [("gold", m.gold), ("silver", m.silver), ("bronze", m.bronze)] {
        fraction(&format!("{path}.{name}"), v)?;
    }
    let sum = m.gold + m.silver + m.bronze;
    if (sum - 1.0).abs() > 1e-6 {
        return Err(invalid(path, format!("shares add up to {sum:.3}, not 1.0")));
    }
    Ok(())
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.into(),
        message: message.into(),
    }
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub capacity: Rate,
    #[serde(default, rename = "match")]
    pub match_dir: MatchDir,
    #[serde(default)]
    pub unmatched: Unmatched,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    pub gold: f64,
    pub silver: f64,
    pub bronze: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forecast {
    pub interval_ms: u64,
    pub horizon_s: u64,
    pub season_s: u64,
    /// `auto` or one model's name (see `forecast::ModelKind`).
    pub model: ModelChoice,
    pub confidence: f64,
    pub accuracy_alert_mase: f64,
    /// `window` (default) or `tracking`: how intervals are kept (see
    /// `forecast::IntervalMethod`); tracking for hundreds of thousands of tenants.
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
#[serde(deny_unknown_fields)]
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
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
pub struct Api {
    pub listen: SocketAddr,
    pub socket: PathBuf,
    /// The API can change rates (reload, exchange): a `listen` beyond loopback must be asked
    /// for explicitly.
    #[serde(default)]
    pub allow_remote: bool,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            socket: PathBuf::from("/run/shaper/shaper.sock"),
            allow_remote: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        use std::os::unix::fs::PermissionsExt as _;
        let read = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mode = std::fs::metadata(path).map_err(read)?.permissions().mode();
        // Whoever writes the config sets every tenant's rate on the next reload.
        if mode & 0o002 != 0 {
            return Err(ConfigError::WorldWritable {
                path: path.to_path_buf(),
                mode: mode & 0o7777,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        Config::parse(&text)
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
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

    /// Every check that needs more than one field, and every bound a type cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let cap = self.link.capacity;
        if cap < MIN_RATE || cap > MAX_LINK {
            return Err(invalid(
                "link.capacity",
                format!("{cap} is outside {MIN_RATE}..{MAX_LINK}"),
            ));
        }
        self.validate_pools()?;
        self.validate_tiers()?;
        self.validate_token_types()?;
        self.validate_tenants()?;
        self.validate_forecast()?;
        self.validate_policy()?;
        self.validate_events()?;
        if !self.api.listen.ip().is_loopback() && !self.api.allow_remote {
            return Err(invalid(
                "api.listen",
                format!(
                    "{} is reachable from other hosts and the API can change rates: use 127.0.0.1, or set api.allow_remote to true",
                    self.api.listen
                ),
            ));
        }
        if self.history.retention_days == 0 || self.history.retention_days > 3650 {
            return Err(invalid("history.retention_days", "must be 1..=3650"));
        }
        Ok(())
    }

    fn validate_pools(&self) -> Result<(), ConfigError> {
        let p = &self.pools;
        for (name, v) in [
            ("guaranteed", p.guaranteed),
            ("opportunistic", p.opportunistic),
            ("emergency", p.emergency),
        ] {
            fraction(&format!("pools.{name}"), v)?;
        }
        let sum = p.guaranteed + p.opportunistic + p.emergency;
        if sum > 1.0 + 1e-9 {
            return Err(invalid(
                "pools",
                format!("shares add up to {sum:.3}, more than the link (1.0)"),
            ));
        }
        if p.guaranteed <= 0.0 {
            return Err(invalid("pools.guaranteed", "must be above 0"));
        }
        Ok(())
    }

    fn validate_tiers(&self) -> Result<(), ConfigError> {
        for (name, t) in &self.tiers {
            let path = format!("tiers.{}", tier_str(*name));
            fraction(&format!("{path}.risk"), t.risk)?;
        }
        Ok(())
    }

    fn validate_token_types(&self) -> Result<(), ConfigError> {
        let tt = &self.token_types;
        if let Some(m) = &tt.mix {
            validate_mix("token_types.mix", m)?;
        }
        if let Some(r) = &tt.exchange_rates {
            for (name, v) in [("gold", r.gold), ("silver", r.silver), ("bronze", r.bronze)] {
                if !(v > 0.0 && v <= 100.0) {
                    return Err(invalid(
                        format!("token_types.exchange_rates.{name}"),
                        format!("{v} is outside (0, 100]"),
                    ));
                }
            }
        }
        let n = tt.ordered_rules().len();
        if n > shaper_common::MAX_RULES {
            return Err(invalid(
                "token_types",
                format!(
                    "{n} rules; the datapath evaluates at most {}",
                    shaper_common::MAX_RULES
                ),
            ));
        }
        for (name, rules) in [
            ("gold", &tt.gold),
            ("silver", &tt.silver),
            ("bronze", &tt.bronze),
        ] {
            let Some(rules) = rules else { continue };
            for (i, r) in rules.rules.iter().enumerate() {
                let path = format!("token_types.{name}.match[{i}]");
                if r.dscp.is_none() && r.proto.is_none() && r.dport.is_none() && r.sport.is_none() {
                    return Err(invalid(
                        path,
                        "a rule needs at least one of dscp, proto, dport, sport",
                    ));
                }
                if let Some(bad) = r.dscp.as_ref().and_then(|d| d.iter().find(|v| **v > 63)) {
                    return Err(invalid(
                        format!("{path}.dscp"),
                        format!("{bad} is not a DSCP value (0..=63)"),
                    ));
                }
                let ports = r.dport.is_some() || r.sport.is_some();
                if ports && !matches!(r.proto, Some(Proto::Tcp | Proto::Udp | Proto::Sctp)) {
                    return Err(invalid(
                        path,
                        "ports need \"proto\": \"tcp\", \"udp\" or \"sctp\"",
                    ));
                }
                for (field, list) in [("dport", &r.dport), ("sport", &r.sport)] {
                    if list.as_ref().is_some_and(|l| l.is_empty()) {
                        return Err(invalid(
                            format!("{path}.{field}"),
                            "empty list matches nothing",
                        ));
                    }
                    if list
                        .as_ref()
                        .is_some_and(|l| l.len() > shaper_common::RULE_PORTS)
                    {
                        return Err(invalid(
                            format!("{path}.{field}"),
                            format!(
                                "at most {} ports per rule; split it into more rules",
                                shaper_common::RULE_PORTS
                            ),
                        ));
                    }
                }
                if r.dscp.as_ref().is_some_and(|l| l.is_empty()) {
                    return Err(invalid(
                        format!("{path}.dscp"),
                        "empty list matches nothing",
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_tenants(&self) -> Result<(), ConfigError> {
        if self.tenants.is_empty() {
            return Err(invalid("tenants", "no tenants: nothing to shape"));
        }
        let cap = self.link.capacity;
        let mut names = HashSet::new();
        let mut all: Vec<(Prefix, usize)> = Vec::new();
        for (i, t) in self.tenants.iter().enumerate() {
            let path = format!("tenants[{i}]");
            if t.name.is_empty()
                || t.name.len() > 64
                || !t
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(invalid(
                    format!("{path}.name"),
                    format!(
                        "'{}': names are 1-64 characters of A-Z a-z 0-9 - _ .",
                        t.name
                    ),
                ));
            }
            if !names.insert(t.name.as_str()) {
                return Err(invalid(
                    format!("{path}.name"),
                    format!("duplicate tenant '{}'", t.name),
                ));
            }
            if !self.tiers.contains_key(&t.tier) {
                return Err(invalid(
                    format!("{path}.tier"),
                    format!("tier '{}' is not defined in tiers", tier_str(t.tier)),
                ));
            }
            if t.rate < MIN_RATE {
                return Err(invalid(
                    format!("{path}.rate"),
                    format!("{} is below the minimum {MIN_RATE}", t.rate),
                ));
            }
            if t.rate > cap {
                return Err(invalid(
                    format!("{path}.rate"),
                    format!("{} is above the link capacity {cap}", t.rate),
                ));
            }
            if let Some(ceil) = t.ceil {
                if ceil < t.rate {
                    return Err(invalid(
                        format!("{path}.ceil"),
                        format!("{ceil} is below the tenant's rate {}", t.rate),
                    ));
                }
                if ceil > cap {
                    return Err(invalid(
                        format!("{path}.ceil"),
                        format!("{ceil} is above the link capacity {cap}"),
                    ));
                }
            }
            if t.burst < MIN_BURST || t.burst > MAX_BURST {
                return Err(invalid(
                    format!("{path}.burst"),
                    format!(
                        "{} is outside {MIN_BURST}..{MAX_BURST} (a burst must hold one full-size packet)",
                        t.burst
                    ),
                ));
            }
            if let Some(m) = &t.mix {
                validate_mix(&format!("{path}.mix"), m)?;
            }
            if t.prefixes.is_empty() {
                return Err(invalid(
                    format!("{path}.prefixes"),
                    "a tenant needs at least one prefix",
                ));
            }
            for (j, s) in t.prefixes.iter().enumerate() {
                let p =
                    Prefix::parse(s).map_err(|m| invalid(format!("{path}.prefixes[{j}]"), m))?;
                all.push((p, i));
            }
        }
        // Sorted by address, the prefixes inside a prefix follow it as one block, so if anything
        // overlaps a prefix, its immediate successor does.
        all.sort();
        for w in all.windows(2) {
            let ((p, owner), (q, other)) = (w[0], w[1]);
            if !p.overlaps(&q) {
                continue;
            }
            let (a, b) = (&self.tenants[owner].name, &self.tenants[other].name);
            let msg = if owner == other {
                format!("tenant '{a}' lists {p} and {q}, which overlap")
            } else {
                format!("{q} of tenant '{b}' overlaps {p} of tenant '{a}'")
            };
            return Err(invalid(
                format!("tenants[{}].prefixes", other.max(owner)),
                msg,
            ));
        }
        Ok(())
    }

    fn validate_forecast(&self) -> Result<(), ConfigError> {
        let f = &self.forecast;
        if !(100..=60_000).contains(&f.interval_ms) {
            return Err(invalid(
                "forecast.interval_ms",
                format!("{} is outside 100..=60000", f.interval_ms),
            ));
        }
        if f.horizon_s == 0 || f.horizon_s > 86_400 {
            return Err(invalid("forecast.horizon_s", "must be 1..=86400"));
        }
        if f.season_s * 1000 < f.interval_ms * 2 || f.season_s > 31 * 86_400 {
            return Err(invalid(
                "forecast.season_s",
                "must span at least two intervals and at most 31 days",
            ));
        }
        if !(f.confidence > 0.5 && f.confidence < 1.0) {
            return Err(invalid(
                "forecast.confidence",
                format!("{} is outside (0.5, 1)", f.confidence),
            ));
        }
        if !(f.accuracy_alert_mase > 0.0 && f.accuracy_alert_mase.is_finite()) {
            return Err(invalid(
                "forecast.accuracy_alert_mase",
                "must be a positive number",
            ));
        }
        Ok(())
    }

    fn validate_policy(&self) -> Result<(), ConfigError> {
        let p = &self.policy;
        if !(0.0..=10.0).contains(&p.adjustment_multiplier) {
            return Err(invalid(
                "policy.adjustment_multiplier",
                format!("{} is outside 0..=10", p.adjustment_multiplier),
            ));
        }
        fraction("policy.max_exchange_fraction", p.max_exchange_fraction)?;
        fraction(
            "policy.reactive_override.in_profile_drop_ratio",
            p.reactive_override.in_profile_drop_ratio,
        )?;
        fraction(
            "policy.reactive_override.cpu_busy_ratio",
            p.reactive_override.cpu_busy_ratio,
        )?;
        Ok(())
    }

    fn validate_events(&self) -> Result<(), ConfigError> {
        for (i, e) in self.events.iter().enumerate() {
            let path = format!("events[{i}]");
            if !self.tenants.iter().any(|t| t.name == e.tenant) {
                return Err(invalid(
                    format!("{path}.tenant"),
                    format!("no tenant named '{}'", e.tenant),
                ));
            }
            humantime::parse_rfc3339(&e.start).map_err(|_| {
                invalid(
                    format!("{path}.start"),
                    format!(
                        "'{}' is not an RFC 3339 UTC time like 2026-12-01T02:00:00Z",
                        e.start
                    ),
                )
            })?;
            if e.duration_s == 0 || e.duration_s > 31 * 86_400 {
                return Err(invalid(
                    format!("{path}.duration_s"),
                    "must be 1..=2678400 (31 days)",
                ));
            }
            if e.rate.0 == 0 || e.rate > self.link.capacity {
                return Err(invalid(
                    format!("{path}.rate"),
                    format!("{} must be above 0 and at most the link capacity", e.rate),
                ));
            }
        }
        Ok(())
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
        })
        .collect();
    Config {
        link: Link {
            capacity,
            match_dir: MatchDir::Dst,
            unmatched: Unmatched::Pass,
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

fn fraction(path: &str, v: f64) -> Result<(), ConfigError> {
    if !(0.0..=1.0).contains(&v) {
        return Err(invalid(path, format!("{v} is outside 0..=1")));
    }
    Ok(())
}

/// serde_json appends " at line L column C"; we print the position ourselves.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests;
