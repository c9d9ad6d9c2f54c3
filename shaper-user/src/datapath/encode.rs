//! Encoding: what a config, a tenant and a cycle's rates become in the maps (bucket
//! parameters, token-type rules, the lookup plan, the global config, epochs and deposits).
//! Pure, tested without BPF; `write` puts the results into the maps.
use super::*;

/// A GCRA bucket for `rate_bits` per second and `burst_bytes` deep: cost and depth in ns.
pub fn bucket(rate_bits: u64, burst_bytes: u64) -> BucketParams {
    // ns per byte << COST_SHIFT = 8e9 / rate_bits << COST_SHIFT, in 128 bits to keep precision.
    let cost_fp = ((8_000_000_000u128 << COST_SHIFT) / rate_bits.max(1) as u128) as u64;
    let burst_ns = ((burst_bytes as u128 * cost_fp as u128) >> COST_SHIFT) as u64;
    BucketParams { cost_fp, burst_ns }
}

/// A tenant with a single bucket: the whole rate and burst on the silver token type (the type
/// every packet takes when the config has no rules), no pools. Tests and benchmarks use it.
pub fn tenant_config(rate_bits: u64, burst_bytes: u64) -> TenantConfig {
    let mut tc = TenantConfig {
        rate_bytes: rate_bits / 8,
        ceil_bytes: rate_bits / 8,
        flags: TENANT_ACTIVE,
        ..TenantConfig::default()
    };
    tc.types[TYPE_SILVER] = bucket(rate_bits, burst_bytes);
    tc
}

/// Share of the bucket below which ECN-capable packets start being marked CE (one mark per
/// level crossed: this, half and a quarter of it; see `TenantState::ecn_levels`). Measured on
/// one cubic flow over a 5 ms round trip (BENCHMARKS.md): 0.5 cost a fifth of the goodput
/// (TCP cuts by 30% while half the bucket is unspent, and the refill overflows); 0.2 kept the
/// most goodput with no retransmission after slow start; 0.1 let losses back in.
pub const ECN_MARK_FRACTION: f64 = 0.2;

/// The tenant's parameters as the config says: its rate and burst split over the token types
/// by its mix (a type's burst never below one full-size packet, so its packets can pass), ECN
/// marking, its tier's borrowing (up to `ceil`) and emergency access. The pre-allocated pool
/// is the allocator's, not the config's: it starts empty.
pub fn tenant_params(t: &crate::config::Tenant, cfg: &Config) -> TenantConfig {
    tenant_params_at(t, cfg, t.rate.bits_per_sec(), None)
}

/// Every tenant's share of its burst for each token type it has must hold a full-size packet
/// of the interface (`mtu` bytes of IP): a smaller bucket could never pass one (jumbo frames
/// through a 1,500-byte share). Checked before anything is written.
pub fn check_bursts(cfg: &Config, mtu: u64) -> Result<(), DatapathError> {
    for t in &cfg.tenants {
        let mix = t
            .mix
            .clone()
            .unwrap_or_else(|| cfg.token_types.default_mix());
        for (k, share) in mix.shares().into_iter().enumerate() {
            if share <= 0.0 {
                continue;
            }
            let bytes =
                ((t.burst.bytes() as f64 * share) as u64).max(crate::config::MIN_BURST.bytes());
            if bytes < mtu {
                return Err(DatapathError::BurstBelowMtu {
                    tenant: t.name.clone(),
                    token_type: shaper_common::TYPE_NAMES[k],
                    bytes,
                    mtu,
                    need: (mtu as f64 / share).ceil() as u64,
                });
            }
        }
    }
    Ok(())
}

/// As [`tenant_params`], with the tenant's buckets filled at `fill_bits` (the allocator's
/// predicted fill rate) instead of its configured rate, split by `shares` (after `shaper
/// exchange`) instead of its mix; borrowing covers the rest of the way to its ceiling.
pub fn tenant_params_at(
    t: &crate::config::Tenant,
    cfg: &Config,
    fill_bits: u64,
    shares: Option<[f64; 3]>,
) -> TenantConfig {
    tenant_params_within(t, cfg, fill_bits, t.ceil.map(|c| c.bits_per_sec()), shares)
}

/// As [`tenant_params_at`], up to `ceil_bits` (the config's ceiling, or an aggregate
/// tenant's share of it; `None`: no ceiling above the rate).
fn tenant_params_within(
    t: &crate::config::Tenant,
    cfg: &Config,
    fill_bits: u64,
    ceil_bits: Option<u64>,
    shares: Option<[f64; 3]>,
) -> TenantConfig {
    let rate = fill_bits.max(1);
    let burst = t.burst.bytes();
    let mix = match shares {
        Some([gold, silver, bronze]) => crate::config::Mix {
            gold,
            silver,
            bronze,
        },
        None => t
            .mix
            .clone()
            .unwrap_or_else(|| cfg.token_types.default_mix()),
    };
    let mut tc = TenantConfig {
        rate_bytes: rate / 8,
        ceil_bytes: ceil_bits.unwrap_or(t.rate.bits_per_sec()).max(rate) / 8,
        flags: TENANT_ACTIVE,
        ..TenantConfig::default()
    };
    for (k, share) in mix.shares().into_iter().enumerate() {
        if share <= 0.0 {
            continue;
        }
        let r = ((rate as f64 * share) as u64).max(1);
        let b = ((burst as f64 * share) as u64).max(crate::config::MIN_BURST.bytes());
        tc.types[k] = bucket(r, b);
        if t.ecn {
            tc.mark_ns[k] = (tc.types[k].burst_ns as f64 * ECN_MARK_FRACTION) as u64;
        }
    }
    if t.ecn {
        tc.flags |= TENANT_ECN;
    }
    if let Some(tier) = cfg.tiers.get(&t.tier) {
        tc.tier = u32::from(tier.priority.min(TIERS as u8 - 1));
        let ceil = ceil_bits.unwrap_or(0);
        if tier.borrow && ceil > rate {
            tc.flags |= TENANT_BORROW;
            tc.borrow = bucket(ceil - rate, burst);
        }
        if tier.emergency {
            tc.flags |= TENANT_EMERGENCY;
        }
    }
    tc
}

/// The token-type rules as the datapath evaluates them.
pub fn token_rules(cfg: &Config) -> TokenRules {
    let mut out = TokenRules::default();
    for (slot, (ty, m)) in out.rules.iter_mut().zip(cfg.token_types.ordered_rules()) {
        slot.token_type = ty.index() as u8;
        if let Some(d) = &m.dscp {
            slot.flags |= RULE_DSCP;
            slot.dscp_mask = d.iter().fold(0, |acc, v| acc | 1u64 << (v & 63));
        }
        if let Some(p) = m.proto {
            slot.flags |= RULE_PROTO;
            slot.proto = p.number();
        }
        let fill = |list: &[u16], into: &mut [u16; RULE_PORTS]| {
            // Unused slots repeat the first port, so they match only what it matches.
            for (i, dst) in into.iter_mut().enumerate() {
                *dst = list.get(i).or(list.first()).copied().unwrap_or(0);
            }
        };
        if let Some(l) = &m.dport {
            slot.flags |= RULE_DPORT;
            fill(l, &mut slot.dports);
        }
        if let Some(l) = &m.sport {
            slot.flags |= RULE_SPORT;
            fill(l, &mut slot.sports);
        }
    }
    out
}

/// Depth of the link bucket: enough for the burstiest tenant twice over, and at least 2 ms of
/// the link, so borrowing is smooth but overshoot stays within about one burst.
pub fn link_burst_bytes(cfg: &Config) -> u64 {
    let max_burst = cfg
        .tenants
        .iter()
        .map(|t| t.burst.bytes())
        .max()
        .unwrap_or(0);
    (cfg.link.capacity.bits_per_sec() / 8 / 500).max(2 * max_burst)
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
    lookup_plan_of(&cfg.prefixes())
}

/// [`lookup_plan`] of prefixes already parsed (a reload of 100,000 tenants parsed them six
/// times over, 30 ms each).
pub fn lookup_plan_of(prefixes: &[(Prefix, usize)]) -> (Lookup, Lookup) {
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
    global_config_for(cfg, &lookup_plan(cfg))
}

/// [`global_config`] with the lookup plan already made.
pub fn global_config_for(cfg: &Config, (v4, v6): &(Lookup, Lookup)) -> GlobalConfig {
    let (v4_probes, v4_nprobes) = v4.encode();
    let (v6_probes, v6_nprobes) = v6.encode();
    let cap = cfg.link.capacity.bits_per_sec() as f64;
    // The link bucket: what is not held back for emergencies; with drop precedence, the whole
    // link: the reserve is lent to borrowers while the top tiers do not need it, and taken back
    // at packet level when they do (borrowing stops once the link is over capacity).
    let lent = if cfg.policy.drop_precedence {
        1.0
    } else {
        cfg.pools.guaranteed + cfg.pools.opportunistic
    };
    let link_rate = (cap * lent).max(1.0) as u64;
    let link = bucket(link_rate, link_burst_bytes(cfg));
    let emergency_rate = (cap * cfg.pools.emergency) as u64;
    let emergency = if emergency_rate == 0 {
        BucketParams::default()
    } else {
        // 5 ms of the pool, at least a few full-size packets.
        bucket(emergency_rate, (emergency_rate / 8 / 200).max(16_000))
    };
    let mut borrow_depth_ns = [0; TIERS];
    for (p, d) in borrow_depth_ns.iter_mut().enumerate() {
        // Priority p may fill the link bucket to (p + 1) quarters: bronze stops borrowing
        // first, platinum last.
        *d = link.burst_ns / TIERS as u64 * (p as u64 + 1);
    }
    // The capacity word, as deep as the link bucket in bytes: bronze's own traffic yields
    // once a quarter of that has passed above capacity, silver at half, gold at three
    // quarters; platinum never.
    let capacity = bucket((cap as u64).max(1), link_burst_bytes(cfg));
    let mut yield_ns = [0; TIERS];
    if cfg.policy.drop_precedence {
        for (p, y) in yield_ns.iter_mut().enumerate().take(TIERS - 1) {
            *y = capacity.burst_ns / TIERS as u64 * (p as u64 + 1);
        }
    }
    // Unparsed frames under `police`: one shared bucket, a tenth of a second deep (at least
    // a few full-size frames).
    let unparsed_bits = cfg
        .link
        .unparsed_rate
        .map_or(cap as u64 / 100, |r| r.bits_per_sec())
        .max(1);
    let unparsed = bucket(unparsed_bits, (unparsed_bits / 80).max(4 * 1518));
    let tenants_borrow = cfg.tenants.iter().any(|t| {
        t.ceil.is_some_and(|c| c > t.rate) && cfg.tiers.get(&t.tier).is_some_and(|tier| tier.borrow)
    });
    let mut flags = 0;
    if tenants_borrow && cfg.pools.opportunistic > 0.0 {
        flags |= GLOBAL_BORROW;
    }
    if cfg.token_types.fallback {
        flags |= GLOBAL_FALLBACK;
    }
    if yield_ns.iter().any(|&y| y != 0) {
        flags |= GLOBAL_YIELD;
    }
    GlobalConfig {
        v4_probes,
        v4_nprobes,
        v6_probes,
        v6_nprobes,
        default_type: cfg.token_types.default.index() as u8,
        nrules: cfg.token_types.ordered_rules().len() as u8,
        flow_sample_shift: FLOW_SAMPLE_SHIFT,
        slot: 0,
        unparsed: match cfg.link.unparsed {
            Unparsed::Pass => UNPARSED_PASS,
            Unparsed::Drop => UNPARSED_DROP,
            Unparsed::Police => UNPARSED_POLICE,
        },
        _pad: [0; 1],
        unparsed_cost_fp: unparsed.cost_fp,
        unparsed_burst_ns: unparsed.burst_ns,
        flags,
        link_cost_fp: link.cost_fp,
        borrow_depth_ns,
        emergency_cost_fp: emergency.cost_fp,
        emergency_burst_ns: emergency.burst_ns,
        link_fold_bytes: link_burst_bytes(cfg) / LINK_FOLD_DIVISOR,
        link_max_ns: link.burst_ns,
        cap_cost_fp: capacity.cost_fp,
        cap_max_ns: capacity.burst_ns,
        yield_ns,
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

/// One cycle's rates for a tenant, as the agent decided them: bytes/s and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TenantRates {
    /// The buckets' fill, split over the token types by the write's shares.
    pub fill: f64,
    /// The pre-allocated pool's fill rate and cap.
    pub pre_rate: f64,
    pub pre_cap: f64,
    pub deposit: Option<DepositWrite>,
    /// This host's ceiling, bytes/s, where it is not the config's: an aggregate tenant's
    /// share of its ceiling (cluster mode).
    pub ceil: Option<f64>,
}

/// Bytes deposited into the pre-allocated pool, spendable for `ttl_s` seconds (at least one
/// cycle).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DepositWrite {
    pub bytes: f64,
    pub ttl_s: f64,
}

/// One tenant's rates to write: its map id, its index in the config's tenants, the rates and
/// the split over token types (`None`: the configured mix).
#[derive(Clone, Debug)]
pub struct TenantWrite {
    pub id: u32,
    pub tenant: usize,
    pub rates: TenantRates,
    pub shares: Option<[f64; 3]>,
}

/// The config an allocation makes of tenant `t`, from its `live` config and `state`: buckets
/// at the allocated fill, its pre-allocated pool, and a deposit if there is one.
pub(super) fn allocation_config(
    (t, cfg): (&crate::config::Tenant, &Config),
    a: &TenantRates,
    interval: std::time::Duration,
    shares: Option<[f64; 3]>,
    live: &TenantConfig,
    state: &TenantState,
) -> TenantConfig {
    let ceil_bits = match a.ceil {
        Some(c) => Some((c * 8.0).round() as u64),
        None => t.ceil.map(|c| c.bits_per_sec()),
    };
    let mut tc = tenant_params_within(t, cfg, (a.fill * 8.0).round() as u64, ceil_bits, shares);
    keep_pre_pool(&mut tc, live);
    let pre_bits = (a.pre_rate * 8.0).round() as u64;
    let cap = a.pre_cap.round() as u64;
    tc.pre = if pre_bits == 0 || cap == 0 {
        BucketParams::default()
    } else {
        bucket(pre_bits, cap)
    };
    tc.pre_cap_bytes = cap;
    // The pre-allocated pool's fill counts against the ceiling too: borrowing covers only
    // what fill and pool leave of it.
    if tc.flags & TENANT_BORROW != 0 && pre_bits > 0 {
        let fill_bits = (a.fill * 8.0).round() as u64;
        let room = (tc.ceil_bytes * 8).saturating_sub(fill_bits + pre_bits);
        if room == 0 {
            tc.flags &= !TENANT_BORROW;
            tc.borrow = BucketParams::default();
        } else {
            tc.borrow = bucket(room, t.burst.bytes());
        }
    }
    if let Some(d) = a.deposit {
        let ttl = std::time::Duration::from_secs_f64(d.ttl_s.max(interval.as_secs_f64()));
        with_deposit(&mut tc, state, d.bytes.round() as u64, ttl);
    }
    tc
}

/// The buckets whose tokens carry across parameter changes, in `RESCALED` order.
fn rescaled(tc: &TenantConfig) -> [BucketParams; RESCALED] {
    [tc.types[0], tc.types[1], tc.types[2], tc.pre, tc.borrow]
}

/// `tc` with the epoch and previous parameters that make the datapath carry tokens over from
/// `live` (see `TenantConfig::epoch`). A tenant that is not live starts fresh (full buckets);
/// when the datapath has not yet applied the live epoch (`applied`), the bucket state is
/// still expressed in the live config's own `prev`.
pub(super) fn with_epoch(tc: &TenantConfig, live: &TenantConfig, applied: u64) -> TenantConfig {
    let mut out = *tc;
    if live.flags & TENANT_ACTIVE == 0 || tc.flags & TENANT_ACTIVE == 0 {
        out.epoch = applied.max(live.epoch);
        out.prev = rescaled(tc);
        return out;
    }
    if rescaled(tc) == rescaled(live) {
        out.epoch = live.epoch;
        out.prev = live.prev;
        return out;
    }
    out.prev = if applied == live.epoch {
        rescaled(live)
    } else {
        live.prev
    };
    out.epoch = live.epoch.max(applied) + 1;
    out
}

/// Sets a deposit of `bytes`, expiring after `ttl`, numbered past both the live config's and
/// the last one the datapath applied (`state`), so it is applied exactly once.
pub(super) fn with_deposit(
    tc: &mut TenantConfig,
    state: &TenantState,
    bytes: u64,
    ttl: std::time::Duration,
) {
    tc.deposit_seq = tc.deposit_seq.max(state.deposit_seq) + 1;
    tc.deposit_bytes = bytes;
    tc.deposit_expires_ns = monotonic_ns() + ttl.as_nanos() as u64;
}

/// Copies the allocator-owned fields (pre-allocated pool, deposit) of the live config.
pub(super) fn keep_pre_pool(tc: &mut TenantConfig, live: &TenantConfig) {
    tc.pre = live.pre;
    tc.pre_cap_bytes = live.pre_cap_bytes;
    tc.deposit_seq = live.deposit_seq;
    tc.deposit_bytes = live.deposit_bytes;
    tc.deposit_expires_ns = live.deposit_expires_ns;
}

/// Each CPU folds its link charges into the shared word once they reach this fraction of the
/// link bucket's depth: with n CPUs, borrowers may see the link up to n/16 of a depth emptier
/// than it is.
pub const LINK_FOLD_DIVISOR: u64 = 16;

/// One packet in 2^this of each tenant x type x outcome updates the flow table.
pub const FLOW_SAMPLE_SHIFT: u8 = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_config_math() {
        // 10 Mbit/s = 1.25 MB/s = 800 ns per byte.
        let c = tenant_config(10_000_000, 125_000);
        let b = c.types[TYPE_SILVER];
        assert_eq!(b.cost_fp >> COST_SHIFT, 800);
        assert_eq!(b.burst_ns, 125_000 * 800);
        assert_eq!(c.rate_bytes, 1_250_000);
        assert_eq!(c.flags, TENANT_ACTIVE);
        assert_eq!(c.types[TYPE_GOLD], BucketParams::default());
        // 1 Gbit/s = 8 ns per byte; 400 Gbit/s keeps 0.02 ns/byte within 0.1%.
        assert_eq!(bucket(1_000_000_000, 1500).cost_fp, 8 << COST_SHIFT);
        let fast = bucket(400_000_000_000, 1500).cost_fp as f64 / f64::from(1u32 << COST_SHIFT);
        assert!((fast - 0.02).abs() / 0.02 < 0.001, "{fast}");
        // The slowest rate keeps len * cost_fp far below u64 for a 64 KiB packet.
        let slow = bucket(crate::config::MIN_RATE.0, 1500).cost_fp;
        assert!(slow.checked_mul(70_000).is_some());
    }

    /// acme (gold tier, 200 Mbit/s, ceil 400, mix 0.2/0.6/0.2, ECN) in the example config.
    #[test]
    fn tenant_params_split_the_rate_by_mix_and_follow_the_tier() {
        let cfg = Config::parse(crate::config::EXAMPLE).expect("valid");
        let acme = tenant_params(&cfg.tenants[0], &cfg);
        let rate_of = |b: BucketParams| 8e9 * f64::from(1u32 << COST_SHIFT) / b.cost_fp as f64;
        for (k, want) in [(TYPE_GOLD, 40e6), (TYPE_SILVER, 120e6), (TYPE_BRONZE, 40e6)] {
            let got = rate_of(acme.types[k]);
            assert!((got - want).abs() / want < 1e-3, "type {k}: {got}");
            let mark = (acme.types[k].burst_ns as f64 * ECN_MARK_FRACTION) as u64;
            assert_eq!(acme.mark_ns[k], mark);
        }
        assert!(
            (rate_of(acme.borrow) - 200e6).abs() / 200e6 < 1e-3,
            "ceil - rate"
        );
        assert_eq!(
            acme.flags,
            TENANT_ACTIVE | TENANT_ECN | TENANT_BORROW | TENANT_EMERGENCY
        );
        assert_eq!(acme.tier, 2);
        assert_eq!(acme.ceil_bytes, 50_000_000);
        // globex: silver tier, no mix: all on the default type; borrows, no emergency.
        let globex = tenant_params(&cfg.tenants[1], &cfg);
        assert_eq!(globex.types[TYPE_GOLD], BucketParams::default());
        assert_eq!(globex.types[TYPE_SILVER], bucket(100_000_000, 128_000));
        assert_eq!(globex.flags, TENANT_ACTIVE | TENANT_BORROW);
        // initech: bronze tier, no ceil: never borrows.
        let initech = tenant_params(&cfg.tenants[2], &cfg);
        assert_eq!(initech.flags, TENANT_ACTIVE);
        assert_eq!(initech.borrow, BucketParams::default());
    }

    #[test]
    fn token_rules_compile_in_order_with_ports_padded() {
        let cfg = Config::parse(crate::config::EXAMPLE).expect("valid");
        let r = token_rules(&cfg);
        let g = global_config(&cfg);
        assert_eq!(g.nrules, 4);
        assert_eq!(usize::from(g.default_type), TYPE_SILVER);
        assert_eq!(g.flags, GLOBAL_BORROW | GLOBAL_FALLBACK | GLOBAL_YIELD);
        // gold: dscp [46, 34]; then udp dport 53; bronze: dscp 8; then tcp dport 873.
        assert_eq!(r.rules[0].flags, RULE_DSCP);
        assert_eq!(r.rules[0].dscp_mask, (1 << 46) | (1 << 34));
        assert_eq!(usize::from(r.rules[0].token_type), TYPE_GOLD);
        assert_eq!(r.rules[1].flags, RULE_PROTO | RULE_DPORT);
        assert_eq!(
            (r.rules[1].proto, r.rules[1].dports),
            (17, [53; RULE_PORTS])
        );
        assert_eq!(usize::from(r.rules[2].token_type), TYPE_BRONZE);
        assert_eq!(r.rules[3].proto, 6);
        assert_eq!(r.rules[4], TokenRule::default());
        // Drop precedence: each tier may fill the link bucket further than the one below with
        // borrowed packets, and the capacity word with its own; platinum never yields; the
        // debt bound past every yield.
        assert!(g.borrow_depth_ns.windows(2).all(|w| w[0] < w[1]));
        assert!(g.yield_ns[..3].windows(2).all(|w| w[0] < w[1]));
        assert_eq!(g.yield_ns[3], 0);
        assert!(g.cap_max_ns > g.yield_ns[2]);
        assert_eq!(
            g.cap_cost_fp, g.link_cost_fp,
            "with precedence, both words span the whole link"
        );
        let mut off = cfg.clone();
        off.policy.drop_precedence = false;
        let g = global_config(&off);
        assert_eq!((g.yield_ns, g.flags & GLOBAL_YIELD), ([0; 4], 0));
        assert!(
            g.link_cost_fp > g.cap_cost_fp,
            "without it, the link bucket holds the emergency share back"
        );
    }

    #[test]
    fn burst_shares_are_checked_against_the_largest_packet() {
        let cfg = Config::parse(crate::config::EXAMPLE).expect("valid");
        assert!(check_bursts(&cfg, 1500).is_ok());
        // The example's smallest share: acme's gold fifth of 256 kB, 51,200 bytes.
        let e = check_bursts(&cfg, 65_535).expect_err("below GRO's 64 kB");
        assert!(
            matches!(&e, DatapathError::BurstBelowMtu { bytes, need, .. } if *bytes < 65_535 && *need >= 65_535),
            "{e}"
        );
        assert!(check_bursts(&cfg, 9000).is_ok(), "jumbo frames fit");
    }

    #[test]
    fn unparsed_policy_is_encoded_with_its_bucket() {
        let mut cfg = Config::parse(crate::config::EXAMPLE).expect("valid");
        assert_eq!(global_config(&cfg).unparsed, UNPARSED_PASS);
        cfg.link.unparsed = Unparsed::Police;
        cfg.link.unparsed_rate = Some(crate::units::Rate(8_000_000));
        let g = global_config(&cfg);
        assert_eq!(g.unparsed, UNPARSED_POLICE);
        // 8 Mbit/s: 1 us a byte; 100 ms deep.
        assert_eq!(g.unparsed_cost_fp, 1000 << COST_SHIFT);
        assert_eq!(g.unparsed_burst_ns, 100_000_000);
        cfg.link.unparsed = Unparsed::Drop;
        assert_eq!(global_config(&cfg).unparsed, UNPARSED_DROP);
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
