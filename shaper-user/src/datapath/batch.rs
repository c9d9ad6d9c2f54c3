//! Batched map reads (`BPF_MAP_LOOKUP_BATCH`, kernels since 5.6): thousands of array entries
//! per syscall instead of one syscall per tenant, so a cycle's collection stays cheap at a
//! million tenants. aya has no batch API yet, hence the raw `bpf(2)` call. Callers fall back
//! to per-key reads when the kernel refuses (`Ok(None)`).
use std::io;
use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::maps::MapData;

/// `BPF_MAP_LOOKUP_BATCH` from `enum bpf_cmd`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Entries per syscall: 4096 per-CPU counter entries on 2 CPUs is about 2.4 MB of buffer.
const CHUNK: u32 = 4096;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// One `bpf(2)` batch command on `attr`.
///
/// # Safety
/// Every pointer in `attr` must point at a buffer the command may read (and, for lookups,
/// write) `attr.count` keys and values of the map's sizes in, alive for the call.
unsafe fn bpf_batch(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: the caller vouches for the buffers; `attr` itself is a live `union bpf_attr`
    // prefix of the size passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<BatchAttr>(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Reads entries `0..n` of an array map: one value each, or for a per-CPU map
/// (`per_cpu: Some(possible CPUs)`) one per CPU. `Ok(None)`: this kernel or map type does not
/// do batches.
pub fn lookup_array<V: aya::Pod>(
    map: &MapData,
    n: u32,
    per_cpu: Option<usize>,
) -> io::Result<Option<Vec<Vec<V>>>> {
    let Some(entries) = lookup::<u32, V>(map, n as usize, per_cpu)? else {
        return Ok(None);
    };
    // Arrays come back in index order; anything else is not what was asked for.
    if entries
        .iter()
        .enumerate()
        .any(|(i, (k, _))| *k as usize != i)
    {
        return Ok(None);
    }
    Ok(Some(entries.into_iter().map(|(_, v)| v).collect()))
}

/// Reads entries `0..n` of a plain (not per-CPU) array, one value each, straight into one
/// vector: no vector per entry (at 100,000 tenants those allocations were most of the time
/// it took to read the bucket states). `Ok(None)` as [`lookup_array`].
pub fn lookup_array_values<V: aya::Pod>(map: &MapData, n: u32) -> io::Result<Option<Vec<V>>> {
    let mut out = Vec::with_capacity(n as usize);
    let mut in_order = true;
    let found = lookup_each::<u32, V>(map, 0, n as usize, None, |key, vals| {
        in_order &= key as usize == out.len();
        if let Some(v) = vals.next() {
            out.push(v);
        }
    })?;
    Ok(found
        .filter(|_| in_order && out.len() == n as usize)
        .map(|_| out))
}

/// Every entry of a hash map (one value per key), a few syscalls for a whole table.
pub fn lookup_hash<K: aya::Pod, V: aya::Pod>(map: &MapData) -> io::Result<Option<Vec<(K, V)>>> {
    Ok(lookup::<K, V>(map, usize::MAX, None)?.map(|e| {
        e.into_iter()
            .filter_map(|(k, v)| Some((k, *v.first()?)))
            .collect()
    }))
}

/// Keys with their values (one per CPU for per-CPU maps).
type Entries<K, V> = Vec<(K, Vec<V>)>;

/// Up to `max` entries from the start of the map. The kernel lays a per-CPU entry out as one
/// value per possible CPU, each padded to 8 bytes; any other entry is one value as it is.
fn lookup<K: aya::Pod, V: aya::Pod>(
    map: &MapData,
    max: usize,
    per_cpu: Option<usize>,
) -> io::Result<Option<Entries<K, V>>> {
    let mut out: Vec<(K, Vec<V>)> = Vec::new();
    let found = lookup_each::<K, V>(map, 0, max, per_cpu, |key, vals| {
        out.push((key, vals.collect()));
    })?;
    Ok(found.map(|_| out))
}

/// Reads entries `ids` of a per-CPU array and folds each entry's values (one per possible
/// CPU) into one as it goes, chunk by chunk: at no point are all tenants' per-CPU values in
/// memory (with 128 possible CPUs and 100,000 tenants that would be gigabytes). Ranges that
/// do not overlap can be read on threads of their own. `Ok(None)`: no batches here, or the
/// entries came back out of order.
pub fn lookup_array_folded<V: aya::Pod, T>(
    map: &MapData,
    ids: std::ops::Range<u32>,
    cpus: usize,
    mut fold: impl FnMut(&mut dyn Iterator<Item = V>) -> T,
) -> io::Result<Option<Vec<T>>> {
    let mut out = Vec::with_capacity(ids.len());
    let mut in_order = true;
    let start = ids.start;
    let found = lookup_each::<u32, V>(map, start, ids.len(), Some(cpus), |key, vals| {
        in_order &= key as usize == start as usize + out.len();
        out.push(fold(vals));
    })?;
    Ok(found.filter(|_| in_order).map(|_| out))
}

/// Visits up to `max` entries from the start of the map (of an array: from index `start`), a
/// chunk of [`CHUNK`] per syscall: each key with an iterator over its values (one per CPU for
/// per-CPU maps). Returns how many were visited, or `None` where the kernel or map type does
/// not do batches.
fn lookup_each<K: aya::Pod, V: aya::Pod>(
    map: &MapData,
    start: u32,
    max: usize,
    per_cpu: Option<usize>,
    mut visit: impl FnMut(K, &mut dyn Iterator<Item = V>),
) -> io::Result<Option<usize>> {
    let (cpus, stride) = match per_cpu {
        Some(c) => (c.max(1), size_of::<V>().div_ceil(8) * 8),
        None => (1, size_of::<V>()),
    };
    let per_key = stride * cpus;
    let mut seen = 0usize;
    // The kernel's batch token is the last key read: a read from index `start` of an array
    // begins as if `start - 1` had been; without one (`in_batch` null) it starts at the first
    // entry.
    let mut token: Option<u32> = start.checked_sub(1);
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    while seen < max {
        let want = (max - seen).min(CHUNK as usize);
        keys.resize(want * size_of::<K>(), 0u8);
        values.resize(want * per_key, 0u8);
        let mut next: u32 = 0;
        let mut attr = BatchAttr {
            in_batch: token.as_mut().map_or(0, |t| std::ptr::from_mut(t) as u64),
            out_batch: std::ptr::from_mut(&mut next) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: want as u32,
            map_fd: map.fd().as_fd().as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` points at buffers sized for `count` keys and values, alive for the
        // call; the kernel writes at most `count` of each, and the u32 token.
        let ret = unsafe { bpf_batch(BPF_MAP_LOOKUP_BATCH, &mut attr) };
        let done = match ret {
            Ok(()) => false,
            Err(e) => match e.raw_os_error() {
                // The end of the map: what `count` says was filled is valid.
                Some(libc::ENOENT) => true,
                // 524 is the kernel's ENOTSUPP.
                // Refused on the first call (nothing read yet): no batches here.
                Some(libc::EINVAL | libc::ENOTSUP | 524) if seen == 0 => return Ok(None),
                _ => return Err(e),
            },
        };
        let got = (attr.count as usize).min(want);
        for k in 0..got {
            // SAFETY: `keys` holds `want` keys and `values` `want` entries of `cpus` strides
            // of at least size_of::<V>() bytes; K and V are Pod (any bytes are a value).
            let key = unsafe {
                std::ptr::read_unaligned(keys[k * size_of::<K>()..].as_ptr().cast::<K>())
            };
            let entry = &values[k * per_key..(k + 1) * per_key];
            let mut vals = (0..cpus).map(|c| unsafe {
                std::ptr::read_unaligned(entry[c * stride..].as_ptr().cast::<V>())
            });
            visit(key, &mut vals);
        }
        seen += got;
        if done || got == 0 {
            break;
        }
        token = Some(next);
    }
    Ok(Some(seen))
}

/// `BPF_MAP_UPDATE_BATCH` from `enum bpf_cmd`.
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// Writes `entries` (key, value) into a map in batches of [`CHUNK`], in order. `Ok(false)`: this
/// kernel or map type does not do batches, and nothing was written.
pub fn update<K: aya::Pod, V: aya::Pod>(map: &MapData, entries: &[(K, V)]) -> io::Result<bool> {
    for (i, chunk) in entries.chunks(CHUNK as usize).enumerate() {
        let keys: Vec<K> = chunk.iter().map(|e| e.0).collect();
        let values: Vec<V> = chunk.iter().map(|e| e.1).collect();
        let mut attr = BatchAttr {
            keys: keys.as_ptr() as u64,
            values: values.as_ptr() as u64,
            count: chunk.len() as u32,
            map_fd: map.fd().as_fd().as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `keys` and `values` hold `count` plain-data entries each and outlive the
        // call; the kernel only reads them (and writes `count` back into `attr`).
        if let Err(e) = unsafe { bpf_batch(BPF_MAP_UPDATE_BATCH, &mut attr) } {
            return match e.raw_os_error() {
                Some(libc::EINVAL | libc::ENOTSUP | 524) if i == 0 && attr.count == 0 => Ok(false),
                _ => Err(e),
            };
        }
    }
    Ok(true)
}
