//! Reads what the datapath counted: per-tenant counters summed over CPUs, bucket state, the
//! flow table and the per-class counters, in batches where the kernel allows.
use aya::maps::{Array, Map, MapData, PerCpuArray};
use shaper_common::{
    CLASSES, FlowKey, FlowStats, OUTCOMES, PacketCount, TOKEN_TYPES, TenantCounters, TenantState,
};

use super::{DatapathError, FLOWS, GLOBAL_COUNTERS, TENANT_COUNTERS, TENANT_STATE, batch};

/// Counters of one tenant summed over CPUs.
pub fn sum_cpus(values: &[TenantCounters]) -> TenantCounters {
    sum_each(&mut values.iter().copied())
}

/// [`sum_cpus`] over the values as they come.
fn sum_each(values: &mut dyn Iterator<Item = TenantCounters>) -> TenantCounters {
    let mut out = TenantCounters::default();
    for v in values {
        for t in 0..TOKEN_TYPES {
            for o in 0..OUTCOMES {
                out.packets[t][o] = out.packets[t][o].wrapping_add(v.packets[t][o]);
                out.bytes[t][o] = out.bytes[t][o].wrapping_add(v.bytes[t][o]);
            }
        }
    }
    out
}

/// Reads the bucket state of tenant ids `0..n` (deposits, credit, expiry).
pub fn read_tenant_states(map: &Map, n: u32) -> Result<Vec<TenantState>, DatapathError> {
    let err = |source| DatapathError::Map {
        map: TENANT_STATE,
        source,
    };
    if let Map::Array(data) = map {
        if let Some(v) = super::mapped::read_array::<TenantState>(data, n) {
            return Ok(v);
        }
        let batched = batch::lookup_array_values::<TenantState>(data, n).map_err(|source| {
            DatapathError::Batch {
                map: TENANT_STATE,
                source,
            }
        })?;
        if let Some(v) = batched {
            return Ok(v);
        }
    }
    let arr: Array<&MapData, TenantState> = Array::try_from(map).map_err(err)?;
    (0..n).map(|id| arr.get(&id, 0).map_err(err)).collect()
}

/// Every entry of the flow table.
pub fn read_flows(map: &Map) -> Result<Vec<(FlowKey, FlowStats)>, DatapathError> {
    let err = |source| DatapathError::Map { map: FLOWS, source };
    if let Map::LruHashMap(data) = map {
        let batched = batch::lookup_hash::<FlowKey, FlowStats>(data)
            .map_err(|source| DatapathError::Batch { map: FLOWS, source })?;
        if let Some(v) = batched {
            return Ok(v);
        }
    }
    let m: aya::maps::HashMap<&MapData, FlowKey, FlowStats> =
        aya::maps::HashMap::try_from(map).map_err(err)?;
    // Entries evicted while iterating end the walk early or are skipped: a snapshot of an
    // LRU that the datapath keeps changing is best effort by nature.
    Ok(m.iter().filter_map(Result::ok).collect())
}

/// The clock the datapath stamps flows with (`bpf_ktime_get_ns` is CLOCK_MONOTONIC).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Tenants from which the counters are read in two halves on two threads: the kernel's copy
/// of every CPU's values is most of a collection's time, and a second thread halves it.
const SPLIT_FROM: u32 = 16_384;

/// Reads the counters of tenant ids `0..n`, summed over CPUs.
pub fn read_tenant_counters(map: &Map, n: u32) -> Result<Vec<TenantCounters>, DatapathError> {
    if let (Map::PerCpuArray(data), Ok(cpus)) = (map, aya::util::nr_cpus()) {
        let read = |from: u32, to: u32| {
            batch::lookup_array_folded::<TenantCounters, _>(data, from..to, cpus, sum_each).map_err(
                |source| DatapathError::Batch {
                    map: TENANT_COUNTERS,
                    source,
                },
            )
        };
        let batched = if n >= SPLIT_FROM {
            let half = n / 2;
            std::thread::scope(|s| {
                let upper = s.spawn(|| read(half, n));
                let lower = read(0, half);
                let upper = upper
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p));
                Ok::<_, DatapathError>(match (lower?, upper?) {
                    (Some(mut a), Some(b)) => {
                        a.extend(b);
                        Some(a)
                    }
                    _ => None,
                })
            })?
        } else {
            read(0, n)?
        };
        if let Some(v) = batched.filter(|v| v.len() == n as usize) {
            return Ok(v);
        }
    }
    read_tenant_counters_each(map, n)
}

/// The same as [`read_tenant_counters`], one syscall per tenant: the fallback where the kernel
/// has no batched lookups, and the reference the batched read is tested against.
pub fn read_tenant_counters_each(map: &Map, n: u32) -> Result<Vec<TenantCounters>, DatapathError> {
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
