//! `shaper stats`: a snapshot per tenant from the pinned maps; works while `shaper run` runs,
//! from another terminal.
use std::fmt::Write as _;

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use aya::maps::Map;
use serde::Serialize;

use crate::cli::StatsArgs;
use shaper::agent::StateDir;
use shaper::api::TenantView;
use shaper::datapath::{self, FLOWS, GLOBAL_COUNTERS, PIN_ROOT, TENANT_COUNTERS, TENANT_STATE};
use shaper::stats;
use shaper::units::human_bits;

#[derive(Debug, Serialize)]
pub struct StatsReport {
    pub iface: String,
    pub window_ms: u64,
    pub tenants: Vec<TenantView>,
    pub classes: Vec<stats::ClassStats>,
}

pub fn execute(args: &StatsArgs) -> Result<()> {
    let iface = match &args.iface {
        Some(i) => i.clone(),
        None => only_running_iface()?,
    };
    let window = Duration::from_millis(args.window_ms);
    if args.flows {
        let report = collect_flows(&iface, window, args.tenant.as_deref(), args.top)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", render_flows(&report));
        }
        return Ok(());
    }
    let report = collect_report(&iface, window)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// The interface of the one running shaper, or an error saying what to pass.
/// The interface asked for (or the only one running) and its agent's API socket; `what`
/// names the command in the error when there is none.
pub fn agent_socket(iface: Option<&str>, what: &str) -> Result<(String, std::path::PathBuf)> {
    let iface = match iface {
        Some(i) => i.to_string(),
        None => only_running_iface()?,
    };
    let state = shaper::agent::StateDir::new(&iface);
    let socket = state.api_socket().with_context(|| {
        format!(
            "no agent API socket for {iface} ({} missing): {what} needs `shaper run` running with api.socket",
            state.path().join("api.socket").display()
        )
    })?;
    Ok((iface, socket))
}

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
    let counters = Map::PerCpuArray(datapath::open_pinned_map(&dir, TENANT_COUNTERS)?);
    let classes = Map::PerCpuArray(datapath::open_pinned_map(&dir, GLOBAL_COUNTERS)?);
    let state = StateDir::new(iface);
    let table = state
        .read_table()
        .with_context(|| format!("cannot read the tenant table in {}", state.path().display()))?;
    let n = table.len() as u32;
    let states = Map::Array(datapath::open_pinned_map(&dir, TENANT_STATE)?);
    let flows = Map::LruHashMap(datapath::open_pinned_map(&dir, FLOWS)?);
    let first = stats::snapshot(&counters, &states, &flows, n)?;
    std::thread::sleep(window);
    let second = stats::snapshot(&counters, &states, &flows, n)?;
    let class_counts = datapath::read_class_counters(&classes)?;
    Ok(StatsReport {
        iface: iface.to_string(),
        window_ms: window.as_millis() as u64,
        tenants: stats::tenant_stats(&table, &first, &second)
            .iter()
            .map(|s| TenantView::new(s, None, None))
            .collect(),
        classes: stats::class_stats(&class_counts),
    })
}

#[derive(Debug, Serialize)]
pub struct FlowReport {
    pub iface: String,
    pub window_ms: u64,
    /// One packet in this many is sampled into the flow table; counts are scaled by it.
    pub sample_every: u64,
    pub flows: Vec<stats::FlowRate>,
}

/// Reads the pinned flow table of `iface` twice, `window` apart: the top flows by rate.
pub fn collect_flows(
    iface: &str,
    window: Duration,
    tenant: Option<&str>,
    top: usize,
) -> Result<FlowReport> {
    let dir = datapath::pin_dir(iface);
    datapath::check_pinned_version(&dir)?;
    let flows = Map::LruHashMap(datapath::open_pinned_map(&dir, FLOWS)?);
    let state = StateDir::new(iface);
    let table = state
        .read_table()
        .with_context(|| format!("cannot read the tenant table in {}", state.path().display()))?;
    if let Some(t) = tenant
        && !table.iter().any(|i| &*i.name == t)
    {
        bail!("no tenant named '{t}' on {iface}: see `shaper stats --iface {iface}`");
    }
    let before = datapath::read_flows(&flows)?;
    let start = std::time::Instant::now();
    std::thread::sleep(window);
    let after = datapath::read_flows(&flows)?;
    let secs = start.elapsed().as_secs_f64();
    Ok(FlowReport {
        iface: iface.to_string(),
        window_ms: window.as_millis() as u64,
        sample_every: 1 << datapath::FLOW_SAMPLE_SHIFT,
        flows: stats::top_flows(&table, &before, &after, secs, tenant, top),
    })
}

pub fn render_flows(r: &FlowReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "iface {}  top flows by rate over the last {} ms (sampled 1 in {}; counts are estimates)",
        r.iface, r.window_ms, r.sample_every
    );
    let _ = writeln!(
        s,
        "{:<16} {:<7} {:<5} {:>40} {:>40} {:>12} {:>12} {:>10}",
        "tenant", "type", "proto", "source", "destination", "rate", "bytes", "drops"
    );
    for f in &r.flows {
        let _ = writeln!(
            s,
            "{:<16} {:<7} {:<5} {:>40} {:>40} {:>12} {:>12} {:>10}",
            f.tenant,
            f.token_type,
            proto_name(f.proto),
            format!("{}:{}", f.src, f.sport),
            format!("{}:{}", f.dst, f.dport),
            human_bits(f.bps),
            f.bytes,
            f.drops
        );
    }
    if r.flows.is_empty() {
        let _ = writeln!(s, "(no flows sampled in the window)");
    }
    s
}

fn proto_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmp6".into(),
        132 => "sctp".into(),
        other => other.to_string(),
    }
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
        "{:<16} {:<9} {:>12} {:>14} {:>14} {:>7} {:>12} {:>14} {:>10} {:>10} {:>10} {:>10} {:>10} {:>14} {:>7}",
        "tenant",
        "tier",
        "rate",
        "passed/s",
        "offered/s",
        "drop%",
        "pass pkts",
        "pass bytes",
        "pre",
        "borrowed",
        "emergency",
        "mark pkts",
        "drop pkts",
        "drop bytes",
        "flows"
    );
    for t in &r.tenants {
        let outcome = |o: &str| -> u64 {
            t.by_type
                .iter()
                .filter_map(|(_, m)| m.get(o))
                .map(|c| c.packets)
                .sum()
        };
        let _ = writeln!(
            s,
            "{:<16} {:<9} {:>12} {:>14} {:>14} {:>6.1}% {:>12} {:>14} {:>10} {:>10} {:>10} {:>10} {:>10} {:>14} {:>7}",
            t.name,
            t.tier,
            human_bits(t.rate_bits as f64),
            human_bits(t.passed_bps),
            human_bits(t.offered_bps),
            t.drop_ratio * 100.0,
            t.passed_packets,
            t.passed_bytes,
            outcome("pre"),
            outcome("borrowed"),
            outcome("emergency"),
            t.marked_packets,
            t.dropped_packets,
            t.dropped_bytes,
            t.active_flows
        );
    }
    let _ = writeln!(
        s,
        "packets by token type and outcome (pre/green/borrowed/emergency/marked/dropped):"
    );
    for t in &r.tenants {
        let types: Vec<String> = t
            .by_type
            .iter()
            .filter(|(_, m)| m.iter().any(|(_, c)| c.packets > 0))
            .map(|(ty, m)| {
                let n: Vec<String> = shaper_common::OUTCOME_NAMES
                    .iter()
                    .map(|o| m.get(o).map_or(0, |c| c.packets).to_string())
                    .collect();
                format!("{ty} {}", n.join("/"))
            })
            .collect();
        if !types.is_empty() {
            let _ = writeln!(s, "  {:<16} {}", t.name, types.join("  "));
        }
        let p = &t.pre_pool;
        if p.deposited_bytes > 0 {
            let _ = writeln!(
                s,
                "  {:<16} pre-allocated: deposited {} B, used {} B, expired {} B, left {} B",
                t.name, p.deposited_bytes, p.used_bytes, p.expired_bytes, p.credit_bytes
            );
        }
    }
    let classes: Vec<String> = r
        .classes
        .iter()
        .map(|c| format!("{} {}", c.class, c.packets))
        .collect();
    let _ = writeln!(s, "packets by class: {}", classes.join(", "));
    s
}
