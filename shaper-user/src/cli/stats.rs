//! `shaper stats`: a snapshot per tenant from the pinned maps; works while `shaper run` runs,
//! from another terminal.
use std::fmt::Write as _;

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use aya::maps::Map;
use serde::Serialize;

use crate::cli::StatsArgs;
use crate::collect::{self, TenantStats};
use crate::datapath::{self, FLOWS, GLOBAL_COUNTERS, PIN_ROOT, TENANT_COUNTERS, TENANT_STATE};
use crate::units::human_bits;

#[derive(Debug, Serialize)]
pub struct StatsReport {
    pub iface: String,
    pub window_ms: u64,
    pub tenants: Vec<TenantStats>,
    pub classes: Vec<collect::ClassStats>,
}

pub fn execute(args: &StatsArgs) -> Result<()> {
    let iface = match &args.iface {
        Some(i) => i.clone(),
        None => only_running_iface()?,
    };
    let report = collect_report(&iface, Duration::from_millis(args.window_ms))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// The interface of the one running shaper, or an error saying what to pass.
pub fn only_running_iface() -> Result<String> {
    let ifaces: Vec<String> = std::fs::read_dir(PIN_ROOT)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    match ifaces.as_slice() {
        [] => bail!(
            "no shaper is running (nothing pinned under {PIN_ROOT}): start one with `shaper run --iface IF --config F`"
        ),
        [one] => Ok(one.clone()),
        many => bail!(
            "shapers run on several interfaces ({}): pass --iface",
            many.join(", ")
        ),
    }
}

/// Reads the pinned maps of `iface` twice, `window` apart.
pub fn collect_report(iface: &str, window: Duration) -> Result<StatsReport> {
    let dir = datapath::pin_dir(iface);
    datapath::check_pinned_version(&dir)?;
    let counters = Map::PerCpuArray(datapath::open_pinned(&dir, TENANT_COUNTERS)?);
    let classes = Map::PerCpuArray(datapath::open_pinned(&dir, GLOBAL_COUNTERS)?);
    let state = collect::state_dir(iface);
    let table = collect::read_tenant_table(&state)
        .with_context(|| format!("cannot read the tenant table in {}", state.display()))?;
    let n = table.len() as u32;
    let states = Map::Array(datapath::open_pinned(&dir, TENANT_STATE)?);
    let flows = Map::LruHashMap(datapath::open_pinned(&dir, FLOWS)?);
    let first = collect::snapshot(&counters, &states, &flows, n)?;
    std::thread::sleep(window);
    let second = collect::snapshot(&counters, &states, &flows, n)?;
    let class_counts = collect::read_class_counters(&classes)?;
    Ok(StatsReport {
        iface: iface.to_string(),
        window_ms: window.as_millis() as u64,
        tenants: collect::tenant_stats(&table, &first, &second),
        classes: collect::class_stats(&class_counts),
    })
}

pub fn render(r: &StatsReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "iface {}  (rates over the last {} ms; bytes are IP bytes)",
        r.iface, r.window_ms
    );
    let _ = writeln!(
        s,
        "{:<16} {:<9} {:>12} {:>14} {:>14} {:>7} {:>12} {:>14} {:>10} {:>10} {:>14}",
        "tenant",
        "tier",
        "rate",
        "passed/s",
        "offered/s",
        "drop%",
        "pass pkts",
        "pass bytes",
        "mark pkts",
        "drop pkts",
        "drop bytes"
    );
    for t in &r.tenants {
        let _ = writeln!(
            s,
            "{:<16} {:<9} {:>12} {:>14} {:>14} {:>6.1}% {:>12} {:>14} {:>10} {:>10} {:>14}",
            t.name,
            t.tier,
            human_bits(t.rate_bits as f64),
            human_bits(t.passed_bps),
            human_bits(t.offered_bps),
            t.drop_ratio * 100.0,
            t.passed_packets,
            t.passed_bytes,
            t.marked_packets,
            t.dropped_packets,
            t.dropped_bytes
        );
    }
    let classes: Vec<String> = r
        .classes
        .iter()
        .map(|c| format!("{} {}", c.class, c.packets))
        .collect();
    let _ = writeln!(s, "packets by class: {}", classes.join(", "));
    s
}
