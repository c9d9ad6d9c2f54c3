//! Writing a config into the agent-written maps: per-tenant bucket parameters, prefixes
//! (hash probes or LPM), the global config; on maps that already hold one, retiring what left.
//! Each tenant's config is written to its free slot, then the slot word flips, so a packet
//! sees one whole config. What the values are is `encode`'s.
use super::encode::{allocation_config, keep_pre_pool, with_deposit, with_epoch};
use super::*;

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
        self.apply_table(cfg, &tenant_table(cfg, &[]), Some(&[]))
    }

    /// Writes the tenants of `cfg` under the ids of `table` (see [`tenant_table`]), then
    /// their prefixes, then the global config. Over maps that already hold a config (adopted,
    /// or a reload): tenants of `previous` no longer configured are deactivated (`None`: the
    /// previous table is unknown, every id is checked), stale prefixes are deleted, and ids
    /// that were inactive get their bucket state and counters zeroed before they go live.
    /// Tenants that stay keep their bucket state and counters: only agent-written maps change.
    pub fn apply_table(
        &mut self,
        cfg: &Config,
        table: &[TenantInfo],
        previous: Option<&[TenantInfo]>,
    ) -> Result<(), DatapathError> {
        let span = id_span(table);
        if cfg.tenants.len() > self.max_tenants as usize || span > self.max_tenants {
            return Err(DatapathError::TooManyTenants {
                tenants: cfg.tenants.len(),
                max: self.max_tenants,
            });
        }
        // Every family's prefixes against its maps' room, before anything is written: a map
        // found full halfway through the writes would leave part of the config live. Parsed
        // once, for the check and the writes below.
        let room = u64::from(self.max_tenants) * u64::from(PREFIXES_PER_TENANT);
        let prefixes = cfg.prefixes();
        self.plan = None;
        for (family, v4) in [("IPv4", true), ("IPv6", false)] {
            let count = prefixes
                .iter()
                .filter(|(p, _)| matches!(p, Prefix::V4(..)) == v4)
                .count();
            if count as u64 > room {
                return Err(DatapathError::TooManyPrefixes {
                    family,
                    count,
                    max: room,
                    need: (count as u64).div_ceil(u64::from(PREFIXES_PER_TENANT)),
                });
            }
        }
        let ids: Vec<u32> = table.iter().map(|t| t.id).collect();
        let populated = self.populated;
        if populated {
            self.retire_and_reset(&ids, previous)?;
        }
        let batched = !populated && self.write_fresh(cfg, &ids)?;
        for (t, id) in cfg.tenants.iter().zip(&ids).filter(|_| !batched) {
            let mut tc = tenant_params(t, cfg);
            if populated {
                // The allocator's pre-allocated pool survives a reload.
                let live = self.tenant(*id)?;
                if live.flags & TENANT_ACTIVE != 0 {
                    keep_pre_pool(&mut tc, &live);
                }
            }
            self.write_tenant(*id, &tc)?;
        }
        let plan = lookup_plan_of(&prefixes);
        let (v4, v6) = &plan;
        let mut want4: std::collections::HashMap<PrefixKeyV4, u32> =
            std::collections::HashMap::new();
        let mut want6: std::collections::HashMap<PrefixKeyV6, u32> =
            std::collections::HashMap::new();
        for &(prefix, i) in &prefixes {
            match prefix {
                Prefix::V4(a, l) => want4.insert(key_v4(a, l), ids[i]),
                Prefix::V6(a, l) => want6.insert(key_v6(a, l), ids[i]),
            };
        }
        // Insert into the maps the new plan reads, flip the plan, then delete what is stale:
        // moving a family between hash probes and the trie (or to new prefix lengths) never
        // leaves a staying tenant's packets unmatched while its entries go in.
        let rest = self.insert_hashed(&want4, &want6, (v4, v6))?;
        for &(prefix, i) in &prefixes {
            let lookup = if matches!(prefix, Prefix::V4(..)) {
                v4
            } else {
                v6
            };
            if rest.contains(&prefix) {
                self.insert_prefix(prefix, ids[i], lookup)?;
            }
        }
        self.write_global_with(&global_config_for(cfg, &plan), &token_rules(cfg))?;
        if populated {
            self.remove_stale_prefixes(&want4, &want6, v4, v6)?;
        }
        self.populated = true;
        self.plan = Some(plan);
        Ok(())
    }

    /// A fresh load's tenants in batches: every config into slot 0 (nothing reads a tenant
    /// that was never active, so no slot flips), thousands per syscall. `false` where the
    /// kernel has no batches (nothing was written; the caller writes one by one).
    fn write_fresh(&mut self, cfg: &Config, ids: &[u32]) -> Result<bool, DatapathError> {
        let none = TenantConfig::default();
        let entries: Vec<(u32, TenantConfig)> = cfg
            .tenants
            .iter()
            .zip(ids)
            .map(|(t, id)| (2 * id, with_epoch(&tenant_params(t, cfg), &none, 0)))
            .collect();
        let Ok(Map::Array(configs)) = self.map(TENANT_CONFIG) else {
            return Ok(false);
        };
        let written = batch::update(configs, &entries).map_err(|source| DatapathError::Batch {
            map: TENANT_CONFIG,
            source,
        })?;
        if written {
            for (key, tc) in entries {
                self.remember(key / 2, 0, tc);
            }
        }
        Ok(written)
    }

    /// Inserts the prefixes of families looked up by hash probes in batches; returns the ones
    /// left to insert one by one (the trie's, or all where the kernel has no batches).
    fn insert_hashed(
        &mut self,
        want4: &std::collections::HashMap<PrefixKeyV4, u32>,
        want6: &std::collections::HashMap<PrefixKeyV6, u32>,
        (v4, v6): (&Lookup, &Lookup),
    ) -> Result<std::collections::HashSet<Prefix>, DatapathError> {
        let mut rest = std::collections::HashSet::new();
        let v4_hashed = matches!(v4, Lookup::Hash(_));
        if !batch_into(self, TENANT_BY_HASH_V4, v4_hashed, want4)? {
            rest.extend(
                want4
                    .keys()
                    .map(|k| Prefix::V4(std::net::Ipv4Addr::from(k.addr), k.len as u8)),
            );
        }
        let v6_hashed = matches!(v6, Lookup::Hash(_));
        if !batch_into(self, TENANT_BY_HASH_V6, v6_hashed, want6)? {
            rest.extend(
                want6
                    .keys()
                    .map(|k| Prefix::V6(std::net::Ipv6Addr::from(k.addr), k.len as u8)),
            );
        }
        Ok(rest)
    }

    /// Deactivates the tenants that leave, and zeroes the bucket state and counters of ids
    /// about to go live that were inactive (a reused id must not inherit a past tenant's).
    fn retire_and_reset(
        &mut self,
        ids: &[u32],
        previous: Option<&[TenantInfo]>,
    ) -> Result<(), DatapathError> {
        let live: std::collections::HashSet<u32> = ids.iter().copied().collect();
        let max = self.max_tenants;
        let fresh: Vec<u32> = {
            let leaving: Vec<u32> = match previous {
                Some(prev) => prev
                    .iter()
                    .map(|t| t.id)
                    .filter(|id| !live.contains(id))
                    .collect(),
                None => (0..max).filter(|id| !live.contains(id)).collect(),
            };
            for id in leaving {
                if self.tenant(id)?.flags & TENANT_ACTIVE != 0 {
                    self.write_tenant(id, &TenantConfig::default())?;
                }
            }
            let mut fresh = Vec::new();
            for id in ids {
                if self.tenant(*id)?.flags & TENANT_ACTIVE == 0 {
                    fresh.push(*id);
                }
            }
            fresh
        };
        self.reset_state(&fresh)
    }

    /// Deactivates the live tenants among `ids`: tenants a reload removed, or (on an adoption
    /// that cannot tell whose they were) every tenant, so the next apply treats them as new
    /// (their bucket state and counters zeroed).
    pub fn retire(&mut self, ids: &[u32]) -> Result<(), DatapathError> {
        for &id in ids {
            if self.tenant(id)?.flags & TENANT_ACTIVE != 0 {
                self.write_tenant(id, &TenantConfig::default())?;
            }
        }
        Ok(())
    }

    /// Zeroes the bucket state and counters of `ids` (about to go live, inactive before: a
    /// reused id must not inherit a past tenant's).
    pub(super) fn reset_state(&mut self, fresh: &[u32]) -> Result<(), DatapathError> {
        if fresh.is_empty() {
            return Ok(());
        }
        {
            let mut st: Array<&mut MapData, TenantState> = self.map_mut(TENANT_STATE)?;
            for id in fresh {
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
        for &id in fresh {
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

    /// The live config of tenant `id` (the slot its slot word selects).
    pub fn tenant(&self, id: u32) -> Result<TenantConfig, DatapathError> {
        self.live(id).map(|(_, tc)| tc)
    }

    /// Replaces tenant `id`'s config as one unit from the datapath's point of view: the slot
    /// not in use is written, then the slot word flips (one aligned word). Maps never written
    /// before are written in place: nothing reads a tenant that was never active.
    ///
    /// A packet that read the old slot word may still be reading the old slot, so the same
    /// tenant must not be written twice within one program run (microseconds); the agent
    /// writes each tenant at most once per cycle.
    pub fn write_tenant(&mut self, id: u32, tc: &TenantConfig) -> Result<(), DatapathError> {
        let (live_slot, live) = self.live(id)?;
        let state = self.tenant_state(id)?;
        self.write_over(id, (live_slot, &live), &state, tc)
    }

    /// The slot word of tenant `id` and the config it selects.
    fn live(&self, id: u32) -> Result<(u32, TenantConfig), DatapathError> {
        live_slot(self.map(TENANT_CONFIG)?, self.map(TENANT_SLOT)?, id)
    }

    /// [`Datapath::write_tenant`] for a caller that has read the live slot and config and the
    /// tenant's state already.
    fn write_over(
        &mut self,
        id: u32,
        (live_slot, live): (u32, &TenantConfig),
        state: &TenantState,
        tc: &TenantConfig,
    ) -> Result<(), DatapathError> {
        let err = |map| move |source| DatapathError::Map { map, source };
        let tc = with_epoch(tc, live, state.epoch);
        if *live == tc {
            return Ok(());
        }
        let next = if self.populated {
            1 - live_slot
        } else {
            live_slot
        };
        if next != live_slot {
            self.wait_grace(&[id]);
        }
        {
            let mut m: Array<&mut MapData, TenantConfig> = self.map_mut(TENANT_CONFIG)?;
            m.set(2 * id + next, tc, 0).map_err(err(TENANT_CONFIG))?;
        }
        if next != live_slot {
            let mut slots: Array<&mut MapData, u32> = self.map_mut(TENANT_SLOT)?;
            slots.set(id, next, 0).map_err(err(TENANT_SLOT))?;
            self.flipped(&[id]);
        }
        self.remember(id, next, tc);
        Ok(())
    }

    /// The datapath-written state of tenant `id`: bucket words, deposit credit and totals.
    pub fn tenant_state(&self, id: u32) -> Result<TenantState, DatapathError> {
        let m: Array<&MapData, TenantState> = self.map_typed(TENANT_STATE)?;
        m.get(&id, 0).map_err(|source| DatapathError::Map {
            map: TENANT_STATE,
            source,
        })
    }

    /// Sets tenant `id`'s pre-allocated pool: tokens flow in at `fill_bits` per second up to
    /// `cap_bytes`, and deposits are clamped to the same cap. Existing tokens are kept.
    pub fn set_pre_pool(
        &mut self,
        id: u32,
        fill_bits: u64,
        cap_bytes: u64,
    ) -> Result<(), DatapathError> {
        let mut tc = self.tenant(id)?;
        tc.pre = if fill_bits == 0 || cap_bytes == 0 {
            BucketParams {
                cost_fp: 0,
                burst_ns: 0,
            }
        } else {
            bucket(fill_bits, cap_bytes)
        };
        tc.pre_cap_bytes = cap_bytes;
        self.write_tenant(id, &tc)
    }

    /// Deposits `bytes` into tenant `id`'s pre-allocated pool ahead of a predicted burst: added
    /// once (clamped to the cap) when the next packet of the tenant arrives; whatever is left
    /// after `ttl` expires. Returns the deposit's sequence number.
    pub fn deposit(
        &mut self,
        id: u32,
        bytes: u64,
        ttl: std::time::Duration,
    ) -> Result<u64, DatapathError> {
        let (slot, live) = self.live(id)?;
        if live.flags & TENANT_ACTIVE == 0 {
            return Err(DatapathError::Load(format!(
                "tenant id {id} is not configured"
            )));
        }
        let state = self.tenant_state(id)?;
        let mut tc = live;
        with_deposit(&mut tc, &state, bytes, ttl);
        self.write_over(id, (slot, &live), &state, &tc)?;
        Ok(tc.deposit_seq)
    }

    /// Writes one cycle's allocation for tenant `id` (tenant `t` of `cfg`) in one write: its
    /// buckets at the allocated fill, its pre-allocated pool, and a deposit if there is one.
    /// Tokens carry over (see `write_tenant`).
    pub fn apply_allocation(
        &mut self,
        id: u32,
        (t, cfg): (&crate::config::Tenant, &Config),
        a: &TenantRates,
        interval: std::time::Duration,
        shares: Option<[f64; 3]>,
    ) -> Result<(), DatapathError> {
        let (slot, live) = self.live(id)?;
        let state = self.tenant_state(id)?;
        let tc = allocation_config((t, cfg), a, interval, shares, &live, &state);
        self.write_over(id, (slot, &live), &state, &tc)
    }

    /// [`Datapath::apply_allocation`] for each of `items`: where the kernel has no batches.
    fn apply_each(
        &mut self,
        cfg: &Config,
        items: &[TenantWrite],
        interval: std::time::Duration,
    ) -> Result<(), DatapathError> {
        for w in items {
            let t = (&cfg.tenants[w.tenant], cfg);
            self.apply_allocation(w.id, t, &w.rates, interval, w.shares)?;
        }
        Ok(())
    }

    /// One cycle's allocations for many tenants, in a handful of syscalls: slots, live configs
    /// and states read in batches, every changed config written to its tenant's free slot in
    /// one batch, then every slot word flipped in another. Each tenant still changes as one
    /// unit (its config is whole before its slot flips). Falls back to
    /// [`Datapath::apply_allocation`] per tenant where the kernel has no batches.
    pub fn apply_allocations(
        &mut self,
        cfg: &Config,
        items: &[TenantWrite],
        interval: std::time::Duration,
    ) -> Result<(), DatapathError> {
        let span = items.iter().map(|w| w.id + 1).max().unwrap_or(0);
        if !self.live_known(items) && !self.read_live(span)? {
            return self.apply_each(cfg, items, interval);
        }
        // What changes, judged against what this process wrote: unchanged tenants (most of
        // them, cycle after cycle) cost no syscall at all.
        let changed: Vec<&TenantWrite> = items
            .iter()
            .filter(|w| {
                let Some((_, live)) = self.known_live(w.id) else {
                    return false;
                };
                let t = &cfg.tenants[w.tenant];
                let none = TenantState::default();
                let tc = allocation_config((t, cfg), &w.rates, interval, w.shares, &live, &none);
                w.rates.deposit.is_some() || with_epoch(&tc, &live, live.epoch) != live
            })
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        let states = self.states_of(&changed, span)?;
        let mut new_configs = Vec::with_capacity(changed.len());
        let mut flips = Vec::new();
        for (w, state) in changed.iter().zip(&states) {
            let Some((slot, live)) = self.known_live(w.id) else {
                continue;
            };
            let t = &cfg.tenants[w.tenant];
            let tc = allocation_config((t, cfg), &w.rates, interval, w.shares, &live, state);
            let tc = with_epoch(&tc, &live, state.epoch);
            if live == tc {
                continue;
            }
            let next = if self.populated { 1 - slot } else { slot };
            new_configs.push((2 * w.id + next, tc));
            if next != slot {
                flips.push((w.id, next));
            }
        }
        let arr = |name: &'static str| match self.map(name) {
            Ok(Map::Array(d)) => Ok(d),
            Ok(_) => Err(DatapathError::Load(format!("{name} is not an array"))),
            Err(e) => Err(e),
        };
        let ids: Vec<u32> = flips.iter().map(|(id, _)| *id).collect();
        self.wait_grace(&ids);
        let write = |name: &'static str| move |source| DatapathError::Batch { map: name, source };
        let written =
            batch::update(arr(TENANT_CONFIG)?, &new_configs).map_err(write(TENANT_CONFIG))?;
        if !written {
            return self.apply_each(cfg, items, interval);
        }
        // Only once every new config is whole do the slot words flip to them.
        if !batch::update(arr(TENANT_SLOT)?, &flips).map_err(write(TENANT_SLOT))? {
            let mut m: Array<&mut MapData, u32> = self.map_mut(TENANT_SLOT)?;
            for (id, next) in &flips {
                m.set(*id, *next, 0).map_err(|source| DatapathError::Map {
                    map: TENANT_SLOT,
                    source,
                })?;
            }
        }
        self.flipped(&ids);
        for (key, tc) in new_configs {
            self.remember(key / 2, key & 1, tc);
        }
        Ok(())
    }

    /// Waits until [`FLIP_GRACE`] has passed since the last flip of any of `ids`: the slots
    /// about to be written were live then. Cycles are far apart, so this waits only when a
    /// tenant is written twice in a row (an exchange right after a write).
    fn wait_grace(&self, ids: &[u32]) {
        let grace = FLIP_GRACE.as_nanos() as u64;
        let now = monotonic_ns();
        let wait = ids
            .iter()
            .filter_map(|id| self.tenant_flips.get(*id as usize))
            .filter(|t| **t != 0)
            .map(|t| (t + grace).saturating_sub(now))
            .max()
            .unwrap_or(0);
        if wait > 0 {
            std::thread::sleep(std::time::Duration::from_nanos(wait.min(grace)));
        }
    }

    /// Notes that the slot words of `ids` flipped now.
    fn flipped(&mut self, ids: &[u32]) {
        let now = monotonic_ns();
        for &id in ids {
            let i = id as usize;
            if self.tenant_flips.len() <= i {
                self.tenant_flips.resize(i + 1, 0);
            }
            self.tenant_flips[i] = now;
        }
    }

    /// Whether every tenant of `items` has its live config remembered.
    fn live_known(&self, items: &[TenantWrite]) -> bool {
        items.iter().all(|w| self.known_live(w.id).is_some())
    }

    /// The remembered live slot and config of tenant `id`.
    fn known_live(&self, id: u32) -> Option<(u32, TenantConfig)> {
        self.live_cache.get(id as usize).copied().flatten()
    }

    /// Remembers what tenant `id`'s slot word now selects.
    pub(super) fn remember(&mut self, id: u32, slot: u32, tc: TenantConfig) {
        let i = id as usize;
        if self.live_cache.len() <= i {
            self.live_cache.resize(i + 1, None);
        }
        self.live_cache[i] = Some((slot, tc));
    }

    /// Reads the live slots and configs of ids `0..span` in batches into memory; `false`
    /// where the kernel has no batches.
    fn read_live(&mut self, span: u32) -> Result<bool, DatapathError> {
        let read = |name: &'static str| move |source| DatapathError::Batch { map: name, source };
        let arr = |name: &'static str| match self.map(name) {
            Ok(Map::Array(d)) => Ok(d),
            Ok(_) => Err(DatapathError::Load(format!("{name} is not an array"))),
            Err(e) => Err(e),
        };
        let slots = batch::lookup_array_values::<u32>(arr(TENANT_SLOT)?, span)
            .map_err(read(TENANT_SLOT))?;
        let configs = batch::lookup_array_values::<TenantConfig>(arr(TENANT_CONFIG)?, 2 * span)
            .map_err(read(TENANT_CONFIG))?;
        let (Some(slots), Some(configs)) = (slots, configs) else {
            return Ok(false);
        };
        for id in 0..span {
            if let Some(slot) = slots.get(id as usize).copied()
                && let Some(tc) = configs.get((2 * id + (slot & 1)) as usize).copied()
            {
                self.remember(id, slot & 1, tc);
            }
        }
        Ok(true)
    }

    /// The bucket states of the tenants of `changed`, in order: one batch of all `span` ids
    /// when many changed, a read each when few did.
    fn states_of(
        &self,
        changed: &[&TenantWrite],
        span: u32,
    ) -> Result<Vec<TenantState>, DatapathError> {
        if changed.len() > 256
            && let Ok(Map::Array(d)) = self.map(TENANT_STATE)
        {
            let all = batch::lookup_array_values::<TenantState>(d, span).map_err(|source| {
                DatapathError::Batch {
                    map: TENANT_STATE,
                    source,
                }
            })?;
            if let Some(all) = all {
                return Ok(changed
                    .iter()
                    .map(|w| all.get(w.id as usize).copied().unwrap_or_default())
                    .collect());
            }
        }
        changed.iter().map(|w| self.tenant_state(w.id)).collect()
    }

    /// Writes the global config `g` and the token-type rules `rules` into the entries of
    /// `GLOBAL_CONFIG` and `TOKEN_RULES` not in use, then flips `CONFIG_SLOT` to them: a packet
    /// sees the old pair or the new one, never a config half written or rules of the other
    /// (a reload from four rules to none must not classify default traffic by an empty rule).
    pub fn write_global_with(
        &mut self,
        g: &GlobalConfig,
        rules: &TokenRules,
    ) -> Result<(), DatapathError> {
        let err = |map| move |source| DatapathError::Map { map, source };
        let live = self.config_slot()?;
        if self.live_global_is(live, g, rules)? {
            // Nothing to flip: no grace to wait, and an undone reload of other parts of a
            // config does not depend on this write.
            return Ok(());
        }
        let next = 1 - live;
        // The entry about to be written was live before the last flip: packets that read the
        // old word may still be reading it.
        if let Some(wait) = self
            .global_flip
            .and_then(|t| FLIP_GRACE.checked_sub(t.elapsed()))
        {
            std::thread::sleep(wait);
        }
        {
            let mut r: Array<&mut MapData, TokenRules> = self.map_mut(TOKEN_RULES)?;
            r.set(next, *rules, 0).map_err(err(TOKEN_RULES))?;
        }
        {
            let mut m: Array<&mut MapData, GlobalConfig> = self.map_mut(GLOBAL_CONFIG)?;
            let g = GlobalConfig {
                slot: next as u8,
                ..*g
            };
            m.set(next, g, 0).map_err(err(GLOBAL_CONFIG))?;
        }
        let mut slot: Array<&mut MapData, u32> = self.map_mut(CONFIG_SLOT)?;
        slot.set(0, next, 0).map_err(err(CONFIG_SLOT))?;
        self.global_flip = Some(std::time::Instant::now());
        Ok(())
    }

    /// Whether entry `live` of `GLOBAL_CONFIG` and `TOKEN_RULES` already holds `g` and `rules`.
    fn live_global_is(
        &self,
        live: u32,
        g: &GlobalConfig,
        rules: &TokenRules,
    ) -> Result<bool, DatapathError> {
        let err = |map| move |source| DatapathError::Map { map, source };
        let r: Array<&MapData, TokenRules> = self.map_typed(TOKEN_RULES)?;
        let m: Array<&MapData, GlobalConfig> = self.map_typed(GLOBAL_CONFIG)?;
        let want = GlobalConfig {
            slot: live as u8,
            ..*g
        };
        Ok(r.get(&live, 0).map_err(err(TOKEN_RULES))? == *rules
            && m.get(&live, 0).map_err(err(GLOBAL_CONFIG))? == want)
    }

    /// Writes the global config with the token-type rules in force (for tests and benchmarks
    /// that build one by hand).
    pub fn write_global(&mut self, g: &GlobalConfig) -> Result<(), DatapathError> {
        let live = self.config_slot()?;
        let rules: Array<&MapData, TokenRules> = self.map_typed(TOKEN_RULES)?;
        let rules = rules.get(&live, 0).map_err(|source| DatapathError::Map {
            map: TOKEN_RULES,
            source,
        })?;
        self.write_global_with(g, &rules)
    }

    /// The live entry of `GLOBAL_CONFIG` and `TOKEN_RULES`.
    fn config_slot(&self) -> Result<u32, DatapathError> {
        let m: Array<&MapData, u32> = self.map_typed(CONFIG_SLOT)?;
        m.get(&0, 0)
            .map(|s| s & 1)
            .map_err(|source| DatapathError::Map {
                map: CONFIG_SLOT,
                source,
            })
    }

    /// Deletes a prefix from the map its family's lookup uses (absent already: fine).
    pub(super) fn remove_prefix(
        &mut self,
        prefix: Prefix,
        lookup: &Lookup,
    ) -> Result<(), DatapathError> {
        let gone = |map| {
            move |source: aya::maps::MapError| match os_error(&source) {
                Some(libc::ENOENT) => Ok(()),
                _ => Err(DatapathError::Map { map, source }),
            }
        };
        match (prefix, lookup) {
            (Prefix::V4(addr, len), Lookup::Hash(_)) => {
                let key = key_v4(addr, len);
                let mut m: HashMap<&mut MapData, PrefixKeyV4, u32> =
                    self.map_mut(TENANT_BY_HASH_V4)?;
                m.remove(&key).or_else(gone(TENANT_BY_HASH_V4))
            }
            (Prefix::V6(addr, len), Lookup::Hash(_)) => {
                let key = key_v6(addr, len);
                let mut m: HashMap<&mut MapData, PrefixKeyV6, u32> =
                    self.map_mut(TENANT_BY_HASH_V6)?;
                m.remove(&key).or_else(gone(TENANT_BY_HASH_V6))
            }
            (Prefix::V4(addr, len), Lookup::Lpm) => {
                let mut m: LpmTrie<&mut MapData, [u8; 4], u32> =
                    self.map_mut(TENANT_BY_PREFIX_V4)?;
                m.remove(&Key::new(u32::from(len), addr.octets()))
                    .or_else(gone(TENANT_BY_PREFIX_V4))
            }
            (Prefix::V6(addr, len), Lookup::Lpm) => {
                let mut m: LpmTrie<&mut MapData, [u8; 16], u32> =
                    self.map_mut(TENANT_BY_PREFIX_V6)?;
                m.remove(&Key::new(u32::from(len), addr.octets()))
                    .or_else(gone(TENANT_BY_PREFIX_V6))
            }
        }
    }

    /// Writes a prefix into the map its family's lookup uses.
    pub(super) fn insert_prefix(
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
                let key = key_v4(addr, len);
                let mut m: HashMap<&mut MapData, PrefixKeyV4, u32> =
                    self.map_mut(TENANT_BY_HASH_V4)?;
                m.insert(key, id, 0).map_err(|e| full(TENANT_BY_HASH_V4, e))
            }
            (Prefix::V6(addr, len), Lookup::Hash(_)) => {
                let key = key_v6(addr, len);
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

/// The hash-probe key of an IPv4 prefix.
fn key_v4(addr: std::net::Ipv4Addr, len: u8) -> PrefixKeyV4 {
    PrefixKeyV4 {
        len: u32::from(len),
        addr: addr.octets(),
    }
}

/// The hash-probe key of an IPv6 prefix.
fn key_v6(addr: std::net::Ipv6Addr, len: u8) -> PrefixKeyV6 {
    PrefixKeyV6 {
        len: u32::from(len),
        addr: addr.octets(),
    }
}

/// Writes `entries` into the hash map `name` in batches when `used` (its family is looked up
/// by hash probes); `false` when not used or the kernel has no batches (nothing written).
fn batch_into<K: aya::Pod>(
    dp: &Datapath,
    name: &'static str,
    used: bool,
    entries: &std::collections::HashMap<K, u32>,
) -> Result<bool, DatapathError> {
    let (true, Ok(Map::HashMap(d))) = (used, dp.map(name)) else {
        return Ok(false);
    };
    let e: Vec<(K, u32)> = entries.iter().map(|(k, v)| (*k, *v)).collect();
    batch::update(d, &e).map_err(|source| match source.raw_os_error() {
        Some(libc::ENOSPC | libc::E2BIG | libc::ENOMEM) => DatapathError::MapFull {
            map: name,
            what: "the config's prefixes".into(),
        },
        _ => DatapathError::Batch { map: name, source },
    })
}

/// The live global config from the `GLOBAL_CONFIG` and `CONFIG_SLOT` maps (loaded or pinned).
pub fn live_global(configs: &Map, slot: &Map) -> Result<GlobalConfig, DatapathError> {
    let err = |map| move |source| DatapathError::Map { map, source };
    let slot: Array<&MapData, u32> = Array::try_from(slot).map_err(err(CONFIG_SLOT))?;
    let s = slot.get(&0, 0).map_err(err(CONFIG_SLOT))? & 1;
    let g: Array<&MapData, GlobalConfig> = Array::try_from(configs).map_err(err(GLOBAL_CONFIG))?;
    g.get(&s, 0).map_err(err(GLOBAL_CONFIG))
}

/// The live config of tenant `id` from the `TENANT_CONFIG` and `TENANT_SLOT` maps (loaded or
/// pinned).
pub fn live_tenant(configs: &Map, slots: &Map, id: u32) -> Result<TenantConfig, DatapathError> {
    live_slot(configs, slots, id).map(|(_, tc)| tc)
}

/// The slot word of tenant `id` and the config it selects.
fn live_slot(configs: &Map, slots: &Map, id: u32) -> Result<(u32, TenantConfig), DatapathError> {
    let err = |map| move |source| DatapathError::Map { map, source };
    let slots: Array<&MapData, u32> = Array::try_from(slots).map_err(err(TENANT_SLOT))?;
    let slot = slots.get(&id, 0).map_err(err(TENANT_SLOT))? & 1;
    let tc: Array<&MapData, TenantConfig> = Array::try_from(configs).map_err(err(TENANT_CONFIG))?;
    Ok((
        slot,
        tc.get(&(2 * id + slot), 0).map_err(err(TENANT_CONFIG))?,
    ))
}
