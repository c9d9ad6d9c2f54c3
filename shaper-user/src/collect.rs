//! Collect: per-tenant and per-class counters read from the maps (live or pinned), summed over
//! CPUs, and the rate math between two snapshots. The math is pure and tested without BPF.
use std::path::{Path, PathBuf};
use std::time::Instant;

use aya::maps::{Map, MapData, PerCpuArray};
use serde::{Deserialize, Serialize};
use shaper_common::{
    CLASS_IPV4, CLASS_IPV6, CLASS_MALFORMED, CLASS_NON_IP, CLASS_UNMATCHED_DROPPED,
    CLASS_UNMATCHED_PASSED, CLASS_VLAN, CLASSES, OUTCOME_DROPPED, OUTCOME_MARKED, OUTCOME_PASSED,
    OUTCOMES, PacketCount, TenantCounters,
};

use crate::config::{Config, tier_str};
use crate::datapath::{DatapathError, GLOBAL_COUNTERS, TENANT_COUNTERS};

/// What `shaper run` applied, saved beside the pins so `shaper stats` can name tenant ids.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TenantInfo {
    pub id: u32,
    pub name: String,
    pub tier: String,
    pub rate_bits: u64,
    pub burst_bytes: u64,
}

/// The tenants of `cfg` with their ids. A tenant named in `previous` (the table a previous
/// agent or config applied) keeps its id, so its bucket state and counters carry over; new
/// tenants take the lowest ids unused by either table (the datapath zeroes their state).
pub fn tenant_table(cfg: &Config, previous: &[TenantInfo]) -> Vec<TenantInfo> {
    let old: std::collections::HashMap<&str, u32> =
        previous.iter().map(|t| (t.name.as_str(), t.id)).collect();
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
            TenantInfo {
                id,
                name: t.name.clone(),
                tier: tier_str(t.tier).to_string(),
                rate_bits: t.rate.bits_per_sec(),
                burst_bytes: t.burst.bytes(),
            }
        })
        .collect()
}

/// Ids to read counters for: 0..=the largest id in the table.
pub fn id_span(table: &[TenantInfo]) -> u32 {
    table.iter().map(|t| t.id + 1).max().unwrap_or(0)
}

/// Where the tenant table of `iface` lives.
pub fn state_dir(iface: &str) -> PathBuf {
    Path::new("/run/shaper").join(iface)
}

pub fn write_tenant_table(dir: &Path, table: &[TenantInfo]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join("tenants.json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(table).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(tmp, dir.join("tenants.json"))
}

pub fn read_tenant_table(dir: &Path) -> std::io::Result<Vec<TenantInfo>> {
    let text = std::fs::read(dir.join("tenants.json"))?;
    serde_json::from_slice(&text).map_err(std::io::Error::other)
}

/// Counters of one tenant summed over CPUs.
pub fn sum_cpus(values: &[TenantCounters]) -> TenantCounters {
    let mut out = TenantCounters::default();
    for v in values {
        for o in 0..OUTCOMES {
            out.packets[o] = out.packets[o].wrapping_add(v.packets[o]);
            out.bytes[o] = out.bytes[o].wrapping_add(v.bytes[o]);
        }
    }
    out
}

/// Reads the counters of tenant ids `0..n`, summed over CPUs.
pub fn read_tenant_counters(map: &Map, n: u32) -> Result<Vec<TenantCounters>, DatapathError> {
    let arr: PerCpuArray<&MapData, TenantCounters> =
        PerCpuArray::try_from(map).map_err(|source| DatapathError::Map {
            map: TENANT_COUNTERS,
            source,
        })?;
    (0..n)
        .map(|id| {
            arr.get(&id, 0)
                .map(|v| sum_cpus(&v))
                .map_err(|source| DatapathError::Map {
                    map: TENANT_COUNTERS,
                    source,
                })
        })
        .collect()
}

/// Reads the per-class counters, summed over CPUs, indexed by `CLASS_*`.
pub fn read_class_counters(map: &Map) -> Result<Vec<PacketCount>, DatapathError> {
    let arr: PerCpuArray<&MapData, PacketCount> =
        PerCpuArray::try_from(map).map_err(|source| DatapathError::Map {
            map: GLOBAL_COUNTERS,
            source,
        })?;
    (0..CLASSES)
        .map(|c| {
            arr.get(&c, 0)
                .map(|v| {
                    v.iter().fold(PacketCount::default(), |a, b| PacketCount {
                        packets: a.packets.wrapping_add(b.packets),
                        bytes: a.bytes.wrapping_add(b.bytes),
                    })
                })
                .map_err(|source| DatapathError::Map {
                    map: GLOBAL_COUNTERS,
                    source,
                })
        })
        .collect()
}

#[derive(Debug, Serialize)]
pub struct ClassStats {
    pub class: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

pub const CLASS_NAMES: &[(u32, &str)] = &[
    (CLASS_IPV4, "ipv4"),
    (CLASS_IPV6, "ipv6"),
    (CLASS_VLAN, "vlan_tagged"),
    (CLASS_NON_IP, "non_ip"),
    (CLASS_MALFORMED, "malformed"),
    (CLASS_UNMATCHED_PASSED, "unmatched_passed"),
    (CLASS_UNMATCHED_DROPPED, "unmatched_dropped"),
];

pub fn class_stats(counts: &[PacketCount]) -> Vec<ClassStats> {
    CLASS_NAMES
        .iter()
        .map(|(c, name)| {
            let pc = counts.get(*c as usize).copied().unwrap_or_default();
            ClassStats {
                class: name,
                packets: pc.packets,
                bytes: pc.bytes,
            }
        })
        .collect()
}

/// Counters of every tenant at one instant.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub at: Instant,
    pub tenants: Vec<TenantCounters>,
}

/// One tenant's counters and its rates between two snapshots.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TenantStats {
    pub id: u32,
    pub name: String,
    pub tier: String,
    pub rate_bits: u64,
    pub passed_packets: u64,
    pub passed_bytes: u64,
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
    /// Passed with their ECN field set to CE (the bucket was low).
    #[serde(default)]
    pub marked_packets: u64,
    #[serde(default)]
    pub marked_bytes: u64,
    /// Passed (marked or not) IP bits per second over the sampling window.
    pub passed_bps: f64,
    /// Offered (passed + marked + dropped) IP bits per second over the sampling window.
    pub offered_bps: f64,
    /// Dropped share of offered bytes over the window, 0..=1.
    pub drop_ratio: f64,
}

/// Rates between `prev` and `cur`. A counter that went backwards (the program was reloaded)
/// counts as zero for the window rather than as a huge wrapped delta.
pub fn tenant_stats(table: &[TenantInfo], prev: &Snapshot, cur: &Snapshot) -> Vec<TenantStats> {
    let secs = cur.at.saturating_duration_since(prev.at).as_secs_f64();
    let rate = |d: u64| {
        if secs > 0.0 {
            d as f64 * 8.0 / secs
        } else {
            0.0
        }
    };
    table
        .iter()
        .map(|t| {
            let zero = TenantCounters::default();
            let c = cur.tenants.get(t.id as usize).unwrap_or(&zero);
            let p = prev.tenants.get(t.id as usize).unwrap_or(&zero);
            let d = |o: usize| c.bytes[o].saturating_sub(p.bytes[o]);
            let (dp, dd) = (d(OUTCOME_PASSED) + d(OUTCOME_MARKED), d(OUTCOME_DROPPED));
            TenantStats {
                id: t.id,
                name: t.name.clone(),
                tier: t.tier.clone(),
                rate_bits: t.rate_bits,
                passed_packets: c.packets[OUTCOME_PASSED],
                passed_bytes: c.bytes[OUTCOME_PASSED],
                dropped_packets: c.packets[OUTCOME_DROPPED],
                dropped_bytes: c.bytes[OUTCOME_DROPPED],
                marked_packets: c.packets[OUTCOME_MARKED],
                marked_bytes: c.bytes[OUTCOME_MARKED],
                passed_bps: rate(dp),
                offered_bps: rate(dp + dd),
                drop_ratio: if dp + dd > 0 {
                    dd as f64 / (dp + dd) as f64
                } else {
                    0.0
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn counters(passed: u64, dropped: u64) -> TenantCounters {
        TenantCounters {
            packets: [passed / 1000, dropped / 1000, 0],
            bytes: [passed, dropped, 0],
        }
    }

    fn info(id: u32) -> TenantInfo {
        TenantInfo {
            id,
            name: format!("t{id}"),
            tier: "gold".into(),
            rate_bits: 8_000_000,
            burst_bytes: 10_000,
        }
    }

    #[test]
    fn marked_packets_passed_and_count_as_offered() {
        let t0 = Instant::now();
        let prev = Snapshot {
            at: t0,
            tenants: vec![TenantCounters::default()],
        };
        let c = TenantCounters {
            packets: [1, 1, 2],
            bytes: [250_000, 250_000, 500_000],
        };
        let cur = Snapshot {
            at: t0 + Duration::from_secs(1),
            tenants: vec![c],
        };
        let s = tenant_stats(&[info(0)], &prev, &cur);
        assert!((s[0].passed_bps - 6e6).abs() < 1.0, "{}", s[0].passed_bps);
        assert!((s[0].offered_bps - 8e6).abs() < 1.0);
        assert_eq!((s[0].marked_packets, s[0].marked_bytes), (2, 500_000));
        assert!((s[0].drop_ratio - 0.25).abs() < 1e-9);
    }

    #[test]
    fn sums_cpus() {
        let s = sum_cpus(&[counters(1000, 0), counters(2000, 3000)]);
        assert_eq!(s.bytes, [3000, 3000, 0]);
        assert_eq!(s.packets, [3, 3, 0]);
    }

    #[test]
    fn rates_over_the_window() {
        let t0 = Instant::now();
        let prev = Snapshot {
            at: t0,
            tenants: vec![counters(0, 0), counters(500, 0)],
        };
        let cur = Snapshot {
            at: t0 + Duration::from_millis(500),
            tenants: vec![counters(500_000, 500_000), counters(500, 0)],
        };
        let s = tenant_stats(&[info(0), info(1)], &prev, &cur);
        // 500 kB passed in 0.5 s = 8 Mbit/s; offered twice that; half dropped.
        assert!((s[0].passed_bps - 8e6).abs() < 1.0, "{}", s[0].passed_bps);
        assert!((s[0].offered_bps - 16e6).abs() < 1.0);
        assert!((s[0].drop_ratio - 0.5).abs() < 1e-9);
        assert_eq!(s[0].passed_bytes, 500_000);
        // Idle tenant: zero rate, no division by zero.
        assert_eq!((s[1].passed_bps, s[1].drop_ratio), (0.0, 0.0));
    }

    #[test]
    fn counter_going_backwards_is_not_a_huge_rate() {
        let t0 = Instant::now();
        let prev = Snapshot {
            at: t0,
            tenants: vec![counters(9_000_000, 0)],
        };
        let cur = Snapshot {
            at: t0 + Duration::from_secs(1),
            tenants: vec![counters(1000, 0)],
        };
        let s = tenant_stats(&[info(0)], &prev, &cur);
        assert_eq!(s[0].passed_bps, 0.0);
    }

    #[test]
    fn zero_window_and_missing_ids() {
        let t0 = Instant::now();
        let snap = Snapshot {
            at: t0,
            tenants: vec![],
        };
        let s = tenant_stats(&[info(3)], &snap, &snap);
        assert_eq!((s[0].passed_bps, s[0].passed_bytes), (0.0, 0));
    }

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
        let ids: Vec<(&str, u32)> = second.iter().map(|t| (t.name.as_str(), t.id)).collect();
        assert_eq!(ids, [("hooli", 3), ("acme", 0), ("initech", 2)]);
        assert_eq!(id_span(&second), 4);
        // One change later, id 1 is free again.
        let mut another = cfg.tenants[0].clone();
        another.name = "initrode".into();
        another.prefixes = vec!["10.10.8.0/24".into()];
        cfg.tenants.push(another);
        let third = tenant_table(&cfg, &second);
        assert_eq!(
            third.last().map(|t| (t.name.as_str(), t.id)),
            Some(("initrode", 1))
        );
    }

    #[test]
    fn tenant_table_round_trips_through_disk() {
        let dir = std::env::temp_dir().join(crate::netns::unique_name("shaper-test-"));
        let cfg = Config::parse(crate::config::EXAMPLE).expect("valid");
        let table = tenant_table(&cfg, &[]);
        assert_eq!(table[1].name, "globex");
        assert_eq!(table[1].rate_bits, 100_000_000);
        write_tenant_table(&dir, &table).expect("write");
        assert_eq!(read_tenant_table(&dir).expect("read"), table);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
