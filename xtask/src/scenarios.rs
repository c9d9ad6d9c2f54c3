//! `cargo xtask scenarios`: every policy (static, HTB, reactive, predictive, and the oracle
//! that knows the demand to come) on every scenario (a seeded trace kind on the example
//! overbooked config, at several link capacities from roomy to short at peak), in the
//! simulator, as one markdown table. Deterministic: the same build gives the same table.
use std::path::Path;

use anyhow::{Context as _, Result};
use shaper::config::{Config, PolicyMode};
use shaper::simulate::{SimPolicy, SimResult, TraceKind, generate, harm, simulate};
use shaper::units::Rate;

/// Each policy, and whether the datapath's drop precedence is on under it. The baseline
/// (first) is static without precedence: a per-tenant policer at the configured rates, what
/// operators run today; `static+dp` shows what precedence alone gives, so what prediction
/// adds on top of it is plain.
const POLICIES: [(SimPolicy, bool); 6] = [
    (SimPolicy::Mode(PolicyMode::Static), false),
    (SimPolicy::Mode(PolicyMode::Static), true),
    (SimPolicy::Htb, false),
    (SimPolicy::Mode(PolicyMode::Reactive), true),
    (SimPolicy::Mode(PolicyMode::Predictive), true),
    (SimPolicy::Oracle, true),
];

pub fn run(config: &Path, capacities: &[u64], days: f64, seed: u64) -> Result<()> {
    let base = Config::load(config).with_context(|| format!("loading {}", config.display()))?;
    println!(
        "| link | trace | policy | in-profile dropped (MB) | gold/platinum violations | utilization | dropped while the link had room (MB) | rate changes per tenant-hour | pre used / deposited (MB) | burst-onset dropped (MB) | vs static |"
    );
    println!("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for &mbit in capacities {
        let mut cfg = base.clone();
        cfg.link.capacity = Rate(mbit * 1_000_000);
        for kind in [
            TraceKind::Diurnal,
            TraceKind::Batch,
            TraceKind::Flash,
            TraceKind::Onoff,
        ] {
            let trace = generate(kind, &cfg, days, seed);
            let mut stat: Option<SimResult> = None;
            for (policy, precedence) in POLICIES {
                let mut cfg = cfg.clone();
                cfg.policy.drop_precedence = precedence;
                let mut r = simulate(&trace, &cfg, policy).map_err(|e| anyhow::anyhow!(e))?;
                if precedence && policy == SimPolicy::Mode(PolicyMode::Static) {
                    r.policy.push_str("+dp");
                }
                let verdict = stat.as_ref().map_or(String::new(), |s| no_harm(&r, s));
                println!(
                    "| {mbit} Mbit/s | {kind:?} | {} | {:.0} | {} | {:.1}% | {:.0} | {:.1} | {:.0} / {:.0} | {:.0} of {:.0} | {verdict} |",
                    r.policy,
                    r.in_profile_dropped_bytes / 1e6,
                    r.violations,
                    r.link_utilization * 100.0,
                    r.dropped_while_idle_bytes / 1e6,
                    r.rate_changes_per_tenant_hour(cfg.forecast.interval_ms as f64 / 1000.0),
                    r.pre_used_bytes / 1e6,
                    r.pre_deposited_bytes / 1e6,
                    r.onset_dropped_bytes / 1e6,
                    r.onset_bytes / 1e6,
                );
                if stat.is_none() {
                    stat = Some(r);
                }
            }
        }
    }
    Ok(())
}

/// "no harm", or what was worse than static.
fn no_harm(r: &SimResult, s: &SimResult) -> String {
    let bad = harm(r, s);
    if bad.is_empty() {
        "no harm".into()
    } else {
        bad.join(", ")
    }
}
