//! Writing a config into the agent-written maps: per-tenant bucket parameters, prefixes
//! (hash probes or LPM), the global config; on maps that already hold one, retiring what left.
use super::*;

/// Per-tenant parameters as the datapath wants them: GCRA cost and depth in nanoseconds.
pub fn tenant_config(rate_bits: u64, burst_bytes: u64) -> TenantConfig {
    // ns per byte << COST_SHIFT = 8e9 / rate_bits << COST_SHIFT, in 128 bits to keep precision.
    let cost_fp = ((8_000_000_000u128 << COST_SHIFT) / rate_bits.max(1) as u128) as u64;
    let burst_ns = ((burst_bytes as u128 * cost_fp as u128) >> COST_SHIFT) as u64;
    TenantConfig {
        cost_fp,
        burst_ns,
        rate_bytes: rate_bits / 8,
        mark_ns: 0,
        flags: TENANT_ACTIVE,
        _pad: 0,
    }
}

/// Share of the bucket below which ECN-capable packets are marked CE: TCP halves its window
/// on a mark, so marking from half empty leaves the other half for the reaction to arrive.
pub const ECN_MARK_FRACTION: f64 = 0.5;

/// The tenant's bucket parameters as its config says, ECN marking included.
pub fn tenant_params(t: &crate::config::Tenant) -> TenantConfig {
    let mut tc = tenant_config(t.rate.bits_per_sec(), t.burst.bytes());
    if t.ecn {
        tc.flags |= TENANT_ECN;
        tc.mark_ns = (tc.burst_ns as f64 * ECN_MARK_FRACTION) as u64;
    }
    tc
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

/// Removes the `keys` (collected first: deleting while iterating a map skips entries) for
/// which `stale` holds.
fn prune<K>(
    keys: Vec<K>,
    stale: impl Fn(&K) -> bool,
    mut remove: impl FnMut(&K) -> Result<(), aya::maps::MapError>,
) -> Result<(), aya::maps::MapError> {
    keys.iter().filter(|k| stale(k)).try_for_each(&mut remove)
}

impl Datapath {
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
                tc.set(*id, tenant_params(t), 0)
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
        // A hash entry is stale when the family now uses the trie or the prefix left; a trie
        // entry when the family now uses hash probes or the prefix left.
        let (lpm4, lpm6) = (matches!(v4, Lookup::Lpm), matches!(v6, Lookup::Lpm));
        let mut h4: HashMap<&mut MapData, PrefixKeyV4, u32> = self.map_mut(TENANT_BY_HASH_V4)?;
        let keys = h4
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(err(TENANT_BY_HASH_V4))?;
        prune(keys, |k| lpm4 || !want4.contains_key(k), |k| h4.remove(k))
            .map_err(err(TENANT_BY_HASH_V4))?;
        let mut h6: HashMap<&mut MapData, PrefixKeyV6, u32> = self.map_mut(TENANT_BY_HASH_V6)?;
        let keys = h6
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(err(TENANT_BY_HASH_V6))?;
        prune(keys, |k| lpm6 || !want6.contains_key(k), |k| h6.remove(k))
            .map_err(err(TENANT_BY_HASH_V6))?;
        let mut t4: LpmTrie<&mut MapData, [u8; 4], u32> = self.map_mut(TENANT_BY_PREFIX_V4)?;
        let keys = t4
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(err(TENANT_BY_PREFIX_V4))?;
        let stale4 = |k: &Key<[u8; 4]>| {
            !lpm4
                || !want4.contains_key(&PrefixKeyV4 {
                    len: k.prefix_len(),
                    addr: k.data(),
                })
        };
        prune(keys, stale4, |k| t4.remove(k)).map_err(err(TENANT_BY_PREFIX_V4))?;
        let mut t6: LpmTrie<&mut MapData, [u8; 16], u32> = self.map_mut(TENANT_BY_PREFIX_V6)?;
        let keys = t6
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(err(TENANT_BY_PREFIX_V6))?;
        let stale6 = |k: &Key<[u8; 16]>| {
            !lpm6
                || !want6.contains_key(&PrefixKeyV6 {
                    len: k.prefix_len(),
                    addr: k.data(),
                })
        };
        prune(keys, stale6, |k| t6.remove(k)).map_err(err(TENANT_BY_PREFIX_V6))?;
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
