//! Per-tenant statistics between two snapshots of the datapath's counters: rates, drops,
//! token types and outcomes, deposits, flows. Rates are bytes/s; bits only at the edges
//! (the API, the CLI).
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use aya::maps::Map;
use serde::{Deserialize, Serialize};
use shaper_common::{
    CLASS_IPV4, CLASS_IPV6, CLASS_MALFORMED, CLASS_NON_IP, CLASS_UNMATCHED_DROPPED,
    CLASS_UNMATCHED_PASSED, CLASS_UNPARSED_DROPPED, CLASS_VLAN, FlowKey, FlowStats,
    OUTCOME_DROPPED, OUTCOME_MARKED, OUTCOME_NAMES, OUTCOMES, PacketCount, TOKEN_TYPES, TYPE_NAMES,
    TenantCounters, TenantState,
};

use crate::datapath::{
    DatapathError, TenantInfo, monotonic_ns, read_flows, read_tenant_counters, read_tenant_states,
};

/// A flow counts as active if a packet of it was sampled within this long.
pub const ACTIVE_FLOW_NS: u64 = 10_000_000_000;

/// Active flows per tenant id: the forecaster's signal of how many senders a tenant has.
pub fn active_flows(flows: &[(FlowKey, FlowStats)], now_ns: u64) -> HashMap<u32, u64> {
    let mut out = HashMap::new();
    for (_, f) in flows {
        if now_ns.saturating_sub(f.last_seen_ns) <= ACTIVE_FLOW_NS {
            *out.entry(f.tenant).or_default() += 1;
        }
    }
    out
}

/// One flow and its rate between two reads of the flow table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowRate {
    pub tenant: String,
    pub token_type: String,
    pub proto: u8,
    pub src: String,
    pub dst: String,
    pub sport: u16,
    pub dport: u16,
    /// Counts are estimates: sampled packets scaled by the sampling rate.
    pub packets: u64,
    pub bytes: u64,
    pub drops: u64,
    pub bps: f64,
}

/// The `top` flows by rate between two reads, optionally of one tenant.
pub fn top_flows(
    table: &[TenantInfo],
    before: &[(FlowKey, FlowStats)],
    after: &[(FlowKey, FlowStats)],
    secs: f64,
    tenant: Option<&str>,
    top: usize,
) -> Vec<FlowRate> {
    let prev: HashMap<&FlowKey, &FlowStats> = before.iter().map(|(k, v)| (k, v)).collect();
    let names: HashMap<u32, &str> = table.iter().map(|t| (t.id, &*t.name)).collect();
    let mut out: Vec<FlowRate> = after
        .iter()
        .filter_map(|(k, f)| {
            let name = names.get(&f.tenant)?;
            if tenant.is_some_and(|t| t != *name) {
                return None;
            }
            let was = prev.get(k).map_or(0, |p| p.bytes);
            let addr = |a: &[u8; 16]| -> String {
                if k.family == 4 {
                    std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string()
                } else {
                    std::net::Ipv6Addr::from(*a).to_string()
                }
            };
            Some(FlowRate {
                tenant: name.to_string(),
                token_type: TYPE_NAMES
                    .get(f.token_type as usize)
                    .unwrap_or(&"?")
                    .to_string(),
                proto: k.proto,
                src: addr(&k.src),
                dst: addr(&k.dst),
                sport: k.sport,
                dport: k.dport,
                packets: f.packets,
                bytes: f.bytes,
                drops: f.drops,
                bps: if secs > 0.0 {
                    f.bytes.saturating_sub(was) as f64 * 8.0 / secs
                } else {
                    0.0
                },
            })
        })
        .collect();
    out.sort_by(|a, b| b.bps.total_cmp(&a.bps).then(b.bytes.cmp(&a.bytes)));
    out.truncate(top);
    out
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
    (CLASS_UNPARSED_DROPPED, "unparsed_dropped"),
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

/// Counters of every tenant at one instant, with what else the maps could tell.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub at: Instant,
    pub tenants: Vec<TenantCounters>,
    /// Bucket state per tenant id (empty: not read).
    pub states: Vec<TenantState>,
    /// Active flows per tenant id (empty: not read).
    pub flows: HashMap<u32, u64>,
}

impl Snapshot {
    pub fn new(at: Instant, tenants: Vec<TenantCounters>) -> Snapshot {
        Snapshot {
            at,
            tenants,
            states: Vec::new(),
            flows: HashMap::new(),
        }
    }
}

/// Reads counters, bucket state and active flows of tenant ids `0..n` now. With many
/// tenants the counters are read on a second thread while this one reads the rest: the
/// per-CPU counters are the kernel copying every CPU's values (at 100,000 tenants 23-60 ms in
/// the live agent, itself split in two), the states a read of the map's memory (3-9 ms).
/// Each part's time is logged at debug level, to find where a slow collection went.
pub fn snapshot(
    counters: &Map,
    states: &Map,
    flows: &Map,
    n: u32,
) -> Result<Snapshot, DatapathError> {
    let at = Instant::now();
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let rest = || -> Result<_, DatapathError> {
        let t = Instant::now();
        let states = read_tenant_states(states, n)?;
        let states_ms = ms(t);
        let flows = active_flows(&read_flows(flows)?, monotonic_ns());
        tracing::debug!(
            states_ms,
            flows_ms = ms(t) - states_ms,
            "read states and flows"
        );
        Ok((states, flows))
    };
    let count = || {
        let t = Instant::now();
        let v = read_tenant_counters(counters, n);
        tracing::debug!(counters_ms = ms(t), "read counters");
        v
    };
    let (tenants, (states, flows)) = if n >= PARALLEL_FROM {
        std::thread::scope(|s| {
            let counted = s.spawn(count);
            let rest = rest();
            let counted = counted
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            Ok::<_, DatapathError>((counted?, rest?))
        })?
    } else {
        (count()?, rest()?)
    };
    Ok(Snapshot {
        at,
        tenants,
        states,
        flows,
    })
}

/// Tenants from which a snapshot is read, and stats computed, on two threads.
const PARALLEL_FROM: u32 = 4096;

/// Packets and bytes of one token type and outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

/// Counts per token type (gold, silver, bronze), then per outcome (`OUTCOME_NAMES`): fixed
/// arrays, so 100,000 tenants' stats are not 1.8 million small maps a cycle. Serialized as
/// maps keyed by the names (`{"gold": {"pre": {...}, ...}, ...}`); indexed by name too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ByType(pub [Outcomes; TOKEN_TYPES]);

/// One token type's counts per outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcomes(pub [Count; OUTCOMES]);

impl ByType {
    /// Each token type's name and counts.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Outcomes)> {
        TYPE_NAMES.iter().copied().zip(self.0.iter())
    }
}

impl Outcomes {
    /// Each outcome's name and count.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Count)> {
        OUTCOME_NAMES.iter().copied().zip(self.0.iter())
    }

    /// The count of outcome `name`, if there is such an outcome.
    pub fn get(&self, name: &str) -> Option<&Count> {
        OUTCOME_NAMES
            .iter()
            .position(|o| *o == name)
            .map(|i| &self.0[i])
    }
}

impl std::ops::Index<&str> for ByType {
    type Output = Outcomes;
    fn index(&self, name: &str) -> &Outcomes {
        let k = TYPE_NAMES.iter().position(|t| *t == name);
        &self.0[k.unwrap_or_else(|| panic!("no token type {name}"))]
    }
}

impl std::ops::Index<&str> for Outcomes {
    type Output = Count;
    fn index(&self, name: &str) -> &Count {
        self.get(name)
            .unwrap_or_else(|| panic!("no outcome {name}"))
    }
}

impl Serialize for ByType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl Serialize for Outcomes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for ByType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ByType, D::Error> {
        let m = BTreeMap::<String, BTreeMap<String, Count>>::deserialize(d)?;
        let mut out = ByType::default();
        for (k, ty) in TYPE_NAMES.iter().enumerate() {
            for (o, name) in OUTCOME_NAMES.iter().enumerate() {
                if let Some(c) = m.get(*ty).and_then(|x| x.get(*name)) {
                    out.0[k].0[o] = *c;
                }
            }
        }
        Ok(out)
    }
}

/// The pre-allocated pool's deposits: what went in, what was spent, what expired unused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrePool {
    pub deposited_bytes: u64,
    pub used_bytes: u64,
    pub expired_bytes: u64,
    /// Credit left now (not yet used, not yet expired).
    pub credit_bytes: u64,
}

impl PrePool {
    pub fn from_state(s: &TenantState) -> PrePool {
        PrePool {
            deposited_bytes: s.deposited,
            used_bytes: s
                .deposited
                .saturating_sub(s.expired)
                .saturating_sub(s.credit),
            expired_bytes: s.expired,
            credit_bytes: s.credit,
        }
    }
}

/// One tenant's counters and its rates between two snapshots.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TenantStats {
    pub id: u32,
    pub name: Arc<str>,
    pub tier: Arc<str>,
    pub rate_bits: u64,
    pub passed_packets: u64,
    pub passed_bytes: u64,
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
    /// Passed with their ECN field set to CE (the bucket was low); counted in passed too.
    pub marked_packets: u64,
    pub marked_bytes: u64,
    /// Counts per token type, then per outcome (`pre`, `green`, `borrowed`, `emergency`,
    /// `marked`, `dropped`).
    pub by_type: ByType,
    pub pre_pool: PrePool,
    /// Flows seen in the last 10 s (sampled, so small flows may be missed).
    pub active_flows: u64,
    /// Passed (marked or not) IP bytes/s over the sampling window.
    pub passed_rate: f64,
    /// Offered (passed + marked + dropped) IP bytes/s over the sampling window.
    pub offered_rate: f64,
    /// Dropped share of offered bytes over the window, 0..=1.
    pub drop_ratio: f64,
    /// Offered IP bytes/s per token type (gold, silver, bronze) over the window.
    pub offered_by_type: [f64; 3],
}

/// Rates between `prev` and `cur`. A counter that went backwards (the program was reloaded)
/// counts as zero for the window rather than as a huge wrapped delta.
pub fn tenant_stats(table: &[TenantInfo], prev: &Snapshot, cur: &Snapshot) -> Vec<TenantStats> {
    let secs = cur.at.saturating_duration_since(prev.at).as_secs_f64();
    let rate = |d: u64| {
        if secs > 0.0 { d as f64 / secs } else { 0.0 }
    };
    let stats = |t: &TenantInfo| {
        let zero = TenantCounters::default();
        let c = cur.tenants.get(t.id as usize).unwrap_or(&zero);
        let p = prev.tenants.get(t.id as usize).unwrap_or(&zero);
        let dp = c.passed_bytes().saturating_sub(p.passed_bytes());
        let dd = c
            .bytes_of(OUTCOME_DROPPED)
            .saturating_sub(p.bytes_of(OUTCOME_DROPPED));
        let by_type = ByType(std::array::from_fn(|k| {
            Outcomes(std::array::from_fn(|o| Count {
                packets: c.packets[k][o],
                bytes: c.bytes[k][o],
            }))
        }));
        TenantStats {
            id: t.id,
            name: t.name.clone(),
            tier: t.tier.clone(),
            rate_bits: t.rate_bits,
            passed_packets: c.passed_packets(),
            passed_bytes: c.passed_bytes(),
            dropped_packets: c.packets_of(OUTCOME_DROPPED),
            dropped_bytes: c.bytes_of(OUTCOME_DROPPED),
            marked_packets: c.packets_of(OUTCOME_MARKED),
            marked_bytes: c.bytes_of(OUTCOME_MARKED),
            by_type,
            pre_pool: cur
                .states
                .get(t.id as usize)
                .map(PrePool::from_state)
                .unwrap_or_default(),
            active_flows: cur.flows.get(&t.id).copied().unwrap_or(0),
            offered_by_type: std::array::from_fn(|k| {
                rate(
                    c.bytes[k]
                        .iter()
                        .sum::<u64>()
                        .saturating_sub(p.bytes[k].iter().sum::<u64>()),
                )
            }),
            passed_rate: rate(dp),
            offered_rate: rate(dp + dd),
            drop_ratio: if dp + dd > 0 {
                dd as f64 / (dp + dd) as f64
            } else {
                0.0
            },
        }
    };
    if table.len() < PARALLEL_FROM as usize {
        return table.iter().map(stats).collect();
    }
    // Two halves on two threads (the per-tenant work is mostly waiting on memory).
    let (a, b) = table.split_at(table.len() / 2);
    std::thread::scope(|s| {
        let second = s.spawn(|| b.iter().map(stats).collect::<Vec<_>>());
        let mut out = Vec::with_capacity(table.len());
        out.extend(a.iter().map(stats));
        out.extend(
            second
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p)),
        );
        out
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shaper_common::{OUTCOME_GREEN, TYPE_GOLD, TYPE_SILVER};

    use super::*;

    /// `passed` bytes on green silver tokens, `dropped` dropped, 1000 bytes a packet.
    fn counters(passed: u64, dropped: u64) -> TenantCounters {
        let mut c = TenantCounters::default();
        c.packets[TYPE_SILVER][OUTCOME_GREEN] = passed / 1000;
        c.bytes[TYPE_SILVER][OUTCOME_GREEN] = passed;
        c.packets[TYPE_SILVER][OUTCOME_DROPPED] = dropped / 1000;
        c.bytes[TYPE_SILVER][OUTCOME_DROPPED] = dropped;
        c
    }

    fn info(id: u32) -> TenantInfo {
        TenantInfo {
            id,
            name: format!("t{id}").into(),
            tier: "gold".into(),
            rate_bits: 8_000_000,
            burst_bytes: 10_000,
        }
    }

    #[test]
    fn marked_packets_passed_and_count_as_offered() {
        let t0 = Instant::now();
        let prev = Snapshot::new(t0, vec![TenantCounters::default()]);
        let mut c = counters(250_000, 250_000);
        c.packets[TYPE_GOLD][OUTCOME_MARKED] = 2;
        c.bytes[TYPE_GOLD][OUTCOME_MARKED] = 500_000;
        let mut cur = Snapshot::new(t0 + Duration::from_secs(1), vec![c]);
        cur.states = vec![TenantState {
            deposited: 10_000,
            expired: 3_000,
            credit: 2_000,
            ..TenantState::default()
        }];
        cur.flows.insert(0, 7);
        let s = tenant_stats(&[info(0)], &prev, &cur);
        assert!(
            (s[0].passed_rate - 6e6 / 8.0).abs() < 1.0,
            "{}",
            s[0].passed_rate
        );
        assert!((s[0].offered_rate - 8e6 / 8.0).abs() < 1.0);
        assert_eq!((s[0].marked_packets, s[0].marked_bytes), (2, 500_000));
        assert_eq!(s[0].passed_packets, 252, "marked packets passed");
        assert!((s[0].drop_ratio - 0.25).abs() < 1e-9);
        assert_eq!(s[0].by_type["gold"]["marked"].bytes, 500_000);
        assert_eq!(s[0].by_type["silver"]["green"].packets, 250);
        assert_eq!(
            s[0].pre_pool.used_bytes, 5_000,
            "deposited - expired - credit"
        );
        assert_eq!(s[0].active_flows, 7);
    }

    #[test]
    fn sums_cpus() {
        let s = crate::datapath::sum_cpus(&[counters(1000, 0), counters(2000, 3000)]);
        assert_eq!(s, counters(3000, 3000));
    }

    #[test]
    fn rates_over_the_window() {
        let t0 = Instant::now();
        let prev = Snapshot::new(t0, vec![counters(0, 0), counters(500, 0)]);
        let cur = Snapshot::new(
            t0 + Duration::from_millis(500),
            vec![counters(500_000, 500_000), counters(500, 0)],
        );
        let s = tenant_stats(&[info(0), info(1)], &prev, &cur);
        // 500 kB passed in 0.5 s = 8 Mbit/s; offered twice that; half dropped.
        assert!(
            (s[0].passed_rate - 8e6 / 8.0).abs() < 1.0,
            "{}",
            s[0].passed_rate
        );
        assert!((s[0].offered_rate - 16e6 / 8.0).abs() < 1.0);
        assert!((s[0].drop_ratio - 0.5).abs() < 1e-9);
        assert_eq!(s[0].passed_bytes, 500_000);
        // Idle tenant: zero rate, no division by zero.
        assert_eq!((s[1].passed_rate, s[1].drop_ratio), (0.0, 0.0));
    }

    #[test]
    fn counter_going_backwards_is_not_a_huge_rate() {
        let t0 = Instant::now();
        let prev = Snapshot::new(t0, vec![counters(9_000_000, 0)]);
        let cur = Snapshot::new(t0 + Duration::from_secs(1), vec![counters(1000, 0)]);
        let s = tenant_stats(&[info(0)], &prev, &cur);
        assert_eq!(s[0].passed_rate, 0.0);
    }

    #[test]
    fn zero_window_and_missing_ids() {
        let t0 = Instant::now();
        let snap = Snapshot::new(t0, vec![]);
        let s = tenant_stats(&[info(3)], &snap, &snap);
        assert_eq!((s[0].passed_rate, s[0].passed_bytes), (0.0, 0));
    }
}
