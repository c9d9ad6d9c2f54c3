//! A reload in proportion to its change: against the config in force, only the tenants whose
//! parameters or ids changed are written, only the prefixes that changed are inserted (before
//! any stale one is deleted, so a tenant's packets never go unmatched meanwhile), and tenants
//! that left are retired. A change of the lookup plan (hash probes or the trie) rewrites
//! everything, as a fresh apply does.
use std::collections::{HashMap, HashSet};

use super::encode::keep_pre_pool;
use super::*;

/// Whether `cfg` under `table` has the tenants of `old_cfg` under `old_table`, in the same
/// order, under the same ids and with the same prefixes, and the same tiers and token types
/// (all that a tenant's entry is encoded from, but the tenant itself).
fn same_tenants_and_prefixes(
    cfg: &Config,
    table: &[TenantInfo],
    old_cfg: &Config,
    old_table: &[TenantInfo],
) -> bool {
    cfg.tiers == old_cfg.tiers
        && cfg.token_types == old_cfg.token_types
        && cfg.tenants.len() == old_cfg.tenants.len()
        && table.len() == cfg.tenants.len()
        && old_table.len() == old_cfg.tenants.len()
        && cfg
            .tenants
            .iter()
            .zip(&old_cfg.tenants)
            .zip(table.iter().zip(old_table))
            .all(|((t, o), (a, b))| a.id == b.id && t.name == o.name && t.prefixes == o.prefixes)
}

/// Every prefix (parsed, with its tenant's index) with the id of its tenant.
fn keys(prefixes: &[(Prefix, usize)], ids: &[u32]) -> HashMap<Prefix, u32> {
    prefixes.iter().map(|&(p, i)| (p, ids[i])).collect()
}

impl Datapath {
    /// Moves the maps from `old` (the config and table in force) to `cfg` under `table`,
    /// writing only what differs. Tenants that stay keep their bucket state, counters and
    /// pre-allocated pool.
    pub fn apply_changes(
        &mut self,
        cfg: &Config,
        table: &[TenantInfo],
        (old_cfg, old_table): (&Config, &[TenantInfo]),
    ) -> Result<(), DatapathError> {
        let in_place = self
            .plan
            .clone()
            .filter(|_| same_tenants_and_prefixes(cfg, table, old_cfg, old_table));
        if let Some(plan) = in_place {
            // Unknown until every write is in: a failure part way leaves the general diff for
            // the undo and the next reload.
            self.plan = None;
            self.apply_in_place(cfg, table, old_cfg, &plan)?;
            self.plan = Some(plan);
            return Ok(());
        }
        // Unknown until this diff is all in (a failure after the global write would leave the
        // old plan here while the new one is live).
        self.plan = None;
        // Each config's prefixes parsed once, for the plans, the diff and the global config.
        let (want, had) = (cfg.prefixes(), old_cfg.prefixes());
        let plan = lookup_plan_of(&want);
        if !self.populated || plan != lookup_plan_of(&had) {
            return self.apply_table(cfg, table, Some(old_table));
        }
        let span = id_span(table);
        if cfg.tenants.len() > self.max_tenants as usize || span > self.max_tenants {
            return Err(DatapathError::TooManyTenants {
                tenants: cfg.tenants.len(),
                max: self.max_tenants,
            });
        }
        let was: HashMap<&str, (usize, u32)> = old_table
            .iter()
            .enumerate()
            .map(|(i, t)| (&*t.name, (i, t.id)))
            .collect();
        let ids: Vec<u32> = table.iter().map(|t| t.id).collect();
        let staying: HashSet<u32> = ids.iter().copied().collect();
        // New and changed tenants first, so their prefixes find them configured.
        let mut fresh = Vec::new();
        for (t, id) in cfg.tenants.iter().zip(&ids) {
            let mut tc = tenant_params(t, cfg);
            match was.get(t.name.as_str()) {
                Some(&(i, old_id)) if old_id == *id => {
                    if old_cfg
                        .tenants
                        .get(i)
                        .is_some_and(|o| tenant_params(o, old_cfg) == tc)
                    {
                        continue;
                    }
                    let live = self.tenant(*id)?;
                    if live.flags & TENANT_ACTIVE != 0 {
                        keep_pre_pool(&mut tc, &live);
                    }
                }
                _ => fresh.push(*id),
            }
            if fresh.last() == Some(id) {
                self.reset_state(&[*id])?;
            }
            self.write_tenant(*id, &tc)?;
        }
        // New and moved prefixes in, the new plan (probe lengths, rules) live, then stale
        // prefixes out: a tenant moving to another prefix length stays matched throughout.
        let old_ids: Vec<u32> = old_table.iter().map(|t| t.id).collect();
        let stale = self.insert_prefixes(keys(&want, &ids), keys(&had, &old_ids), &plan)?;
        self.write_global_with(&global_config_for(cfg, &plan), &token_rules(cfg))?;
        let (v4, v6) = &plan;
        for p in stale {
            self.remove_prefix(p, if matches!(p, Prefix::V4(..)) { v4 } else { v6 })?;
        }
        // Tenants that left go last: their packets stay matched until their prefixes are gone.
        let left: Vec<u32> = old_ids
            .iter()
            .copied()
            .filter(|id| !staying.contains(id))
            .collect();
        self.retire(&left)?;
        self.plan = Some(plan);
        Ok(())
    }

    /// [`Datapath::apply_changes`] where both configs have the same tenants in the same order
    /// under the same ids, with the same prefixes, tiers and token types (a reload that
    /// changes some tenants' rates, bursts or mixes): one pass by index, only the tenants
    /// whose entries differ encoded and written, the global config under the plan in force.
    /// The general diff builds maps of every tenant and prefix of both configs: 150 ms of a
    /// one-tenant reload at 100,000 tenants.
    fn apply_in_place(
        &mut self,
        cfg: &Config,
        table: &[TenantInfo],
        old_cfg: &Config,
        plan: &(Lookup, Lookup),
    ) -> Result<(), DatapathError> {
        for ((t, o), info) in cfg.tenants.iter().zip(&old_cfg.tenants).zip(table) {
            if t == o {
                continue;
            }
            let mut tc = tenant_params(t, cfg);
            if tenant_params(o, old_cfg) == tc {
                continue;
            }
            let live = self.tenant(info.id)?;
            if live.flags & TENANT_ACTIVE != 0 {
                keep_pre_pool(&mut tc, &live);
            }
            self.write_tenant(info.id, &tc)?;
        }
        self.write_global_with(&global_config_for(cfg, plan), &token_rules(cfg))
    }

    /// Inserts the prefixes `want` adds or moves to another id (prefix to tenant id, against
    /// `had`, the config in force); returns those it dropped, for the caller to delete once
    /// the new plan is live.
    fn insert_prefixes(
        &mut self,
        want: HashMap<Prefix, u32>,
        had: HashMap<Prefix, u32>,
        (v4, v6): &(Lookup, Lookup),
    ) -> Result<Vec<Prefix>, DatapathError> {
        for (p, id) in &want {
            if had.get(p) != Some(id) {
                let lookup = if matches!(p, Prefix::V4(..)) { v4 } else { v6 };
                self.insert_prefix(*p, *id, lookup)?;
            }
        }
        Ok(had.into_keys().filter(|p| !want.contains_key(p)).collect())
    }
}
