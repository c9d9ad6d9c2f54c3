//! Tenant ids: which id each tenant of a config holds in the maps. Ids are stable by name
//! across configs and agents, so a tenant's bucket state and counters carry over.
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{Config, tier_str};

/// What `shaper run` applied, saved beside the pins so `shaper stats` can name tenant ids.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TenantInfo {
    pub id: u32,
    /// Shared, not copied: every cycle's stats and views carry the names of 100,000 tenants.
    pub name: Arc<str>,
    pub tier: Arc<str>,
    pub rate_bits: u64,
    pub burst_bytes: u64,
}

/// The tenants of `cfg` with their ids. A tenant named in `previous` (the table a previous
/// agent or config applied) keeps its id, so its bucket state and counters carry over; new
/// tenants take the lowest ids unused by either table (the datapath zeroes their state).
pub fn tenant_table(cfg: &Config, previous: &[TenantInfo]) -> Vec<TenantInfo> {
    let info = |t: &crate::config::Tenant, id, name, tier| TenantInfo {
        id,
        name,
        tier,
        rate_bits: t.rate.bits_per_sec(),
        burst_bytes: t.burst.bytes(),
    };
    // The same tenants in the same order (most reloads): the same ids, by index, and the
    // same shared names and tiers, without the two sets of 100,000 entries and the 200,000
    // strings the general case makes.
    if previous.len() == cfg.tenants.len()
        && previous
            .iter()
            .zip(&cfg.tenants)
            .all(|(p, t)| *p.name == *t.name)
    {
        return cfg
            .tenants
            .iter()
            .zip(previous)
            .map(|(t, p)| {
                let tier = tier_str(t.tier);
                let tier = if *p.tier == *tier {
                    p.tier.clone()
                } else {
                    tier.into()
                };
                info(t, p.id, p.name.clone(), tier)
            })
            .collect();
    }
    let old: std::collections::HashMap<&str, u32> =
        previous.iter().map(|t| (&*t.name, t.id)).collect();
    // Ids of the previous table are not reused in the same change, even those freed by it:
    // packets in flight may still be counted to them.
    let mut used: std::collections::HashSet<u32> = previous.iter().map(|t| t.id).collect();
    let mut next = 0u32;
    cfg.tenants
        .iter()
        .map(|t| {
            let id = match old.get(t.name.as_str()) {
                Some(id) => *id,
                None => {
                    while used.contains(&next) {
                        next += 1;
                    }
                    used.insert(next);
                    next
                }
            };
            info(t, id, t.name.as_str().into(), tier_str(t.tier).into())
        })
        .collect()
}

/// Ids to read counters for: 0..=the largest id in the table.
pub fn id_span(table: &[TenantInfo]) -> u32 {
    table.iter().map(|t| t.id + 1).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_by_name_across_configs() {
        let mut cfg = Config::parse(crate::config::EXAMPLE).expect("valid");
        let first = tenant_table(&cfg, &[]);
        assert_eq!(first.iter().map(|t| t.id).collect::<Vec<_>>(), [0, 1, 2]);
        // globex leaves, a new tenant arrives first in the list: acme and initech keep 0 and 2;
        // the newcomer does not take globex's id 1 in the same change, but 3.
        let mut newcomer = cfg.tenants[1].clone();
        newcomer.name = "hooli".into();
        newcomer.prefixes = vec!["10.10.9.0/24".into()];
        cfg.tenants.remove(1);
        cfg.tenants.insert(0, newcomer);
        let second = tenant_table(&cfg, &first);
        let ids: Vec<(&str, u32)> = second.iter().map(|t| (&*t.name, t.id)).collect();
        assert_eq!(ids, [("hooli", 3), ("acme", 0), ("initech", 2)]);
        assert_eq!(id_span(&second), 4);
        // One change later, id 1 is free again.
        let mut another = cfg.tenants[0].clone();
        another.name = "initrode".into();
        another.prefixes = vec!["10.10.8.0/24".into()];
        cfg.tenants.push(another);
        let third = tenant_table(&cfg, &second);
        assert_eq!(
            third.last().map(|t| (&*t.name, t.id)),
            Some(("initrode", 1))
        );
    }
}
