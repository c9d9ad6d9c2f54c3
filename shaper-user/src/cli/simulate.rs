//! `shaper trace gen` and `shaper simulate`: synthetic traces, and replaying one through the
//! allocator under a policy.
use std::fmt::Write as _;

use anyhow::{Context as _, Result};

use crate::cli::{PolicyArg, SimulateArgs, TraceGenArgs};
use shaper::config::{Config, PolicyMode};
use shaper::simulate::{SimPolicy, SimResult, Trace, generate as gen_trace, simulate};
use shaper::units::human_bits;

pub fn generate(args: &TraceGenArgs) -> Result<()> {
    let cfg = Config::load(&args.config)?;
    if !(args.days > 0.0 && args.days <= 366.0) {
        anyhow::bail!("--days must be above 0 and at most 366");
    }
    let trace = gen_trace(args.kind, &cfg, args.days, args.seed);
    std::fs::write(&args.out, trace.to_csv())
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!(
        "wrote {} ({} tenants x {} cycles of {} s)",
        args.out.display(),
        trace.tenants.len(),
        trace.cycles(),
        trace.interval_s
    );
    Ok(())
}

pub fn execute(args: &SimulateArgs) -> Result<()> {
    let cfg = Config::load(&args.config)?;
    let text = std::fs::read_to_string(&args.trace)
        .with_context(|| format!("cannot read trace {}", args.trace.display()))?;
    let trace = Trace::from_csv(&text)
        .map_err(|e| anyhow::anyhow!("trace {}: {e}", args.trace.display()))?;
    let policy = match args.policy {
        None => SimPolicy::Mode(cfg.policy.mode),
        Some(PolicyArg::Static) => SimPolicy::Mode(PolicyMode::Static),
        Some(PolicyArg::Reactive) => SimPolicy::Mode(PolicyMode::Reactive),
        Some(PolicyArg::Predictive) => SimPolicy::Mode(PolicyMode::Predictive),
        Some(PolicyArg::Oracle) => SimPolicy::Oracle,
        Some(PolicyArg::Htb) => SimPolicy::Htb,
    };
    let r = simulate(&trace, &cfg, policy).map_err(|e| anyhow::anyhow!("simulate: {e}"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", render(&r, trace.interval_s));
    }
    Ok(())
}

pub fn render(r: &SimResult, interval_s: f64) -> String {
    let secs = r.cycles as f64 * interval_s;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "policy {}: {} cycles of {interval_s} s; rates are means over the run",
        r.policy, r.cycles
    );
    let _ = writeln!(
        s,
        "{:<12} {:<9} {:>13} {:>13} {:>16} {:>10} {:>12} {:>12}",
        "tenant",
        "tier",
        "offered",
        "passed",
        "in-profile drop",
        "violations",
        "pre used",
        "pre expired"
    );
    for t in &r.tenants {
        let _ = writeln!(
            s,
            "{:<12} {:<9} {:>13} {:>13} {:>15.3}% {:>10} {:>11.0}k {:>11.0}k",
            t.name,
            t.tier,
            human_bits(t.offered_bytes * 8.0 / secs),
            human_bits(t.passed_bytes * 8.0 / secs),
            t.in_profile_dropped_bytes / t.in_profile_bytes.max(1.0) * 100.0,
            t.violations,
            t.pre_used_bytes / 1e3,
            t.pre_expired_bytes / 1e3
        );
    }
    let _ = writeln!(
        s,
        "total: in-profile dropped {:.1} MB, gold/platinum violations {}, link utilization {:.1}%, Jain fairness {:.3}, pre-allocation used {:.1} MB / expired {:.1} MB",
        r.in_profile_dropped_bytes / 1e6,
        r.violations,
        r.link_utilization * 100.0,
        r.jain_fairness,
        r.pre_used_bytes / 1e6,
        r.pre_expired_bytes / 1e6
    );
    s
}
