//! `cargo xtask scenarios`: every policy (static, HTB, reactive, predictive, and the oracle
//! that knows the demand to come) on every scenario of the suite in `bench/scenarios/` (a
//! seeded trace on a config, at several link capacities from roomy to short at peak), in the
//! simulator: one markdown table of measures, one of the prediction issue's criteria per
//! scenario and capacity, and a chart. Deterministic: the same build gives the same output.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;
use shaper::config::{Config, PolicyMode};
use shaper::simulate::{SimPolicy, SimResult, Trace, TraceKind, generate, harm, simulate};
use shaper::units::Rate;

use crate::plot;

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

/// One scenario file of the suite.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    description: String,
    /// The config, relative to the scenario file.
    config: PathBuf,
    /// A JSON merge patch (RFC 7386) over the config: objects merge, anything else replaces.
    #[serde(default)]
    patch: Option<serde_json::Value>,
    trace: TraceSpec,
    capacities_mbit: Vec<u64>,
    /// Recurring bursts: the pre-allocation criteria apply.
    #[serde(default)]
    bursts: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceSpec {
    kind: TraceKind,
    days: f64,
    seed: u64,
}

/// RFC 7386: `patch` merged into `target`; `null` removes a key.
fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn load(path: &Path) -> Result<(String, Scenario, Config)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let sc: Scenario =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let cfg_path = path.parent().unwrap_or(Path::new(".")).join(&sc.config);
    let cfg_text = std::fs::read_to_string(&cfg_path)
        .with_context(|| format!("reading {}", cfg_path.display()))?;
    let mut value: serde_json::Value = serde_json::from_str(&cfg_text)
        .with_context(|| format!("parsing {}", cfg_path.display()))?;
    if let Some(p) = &sc.patch {
        merge(&mut value, p);
    }
    let cfg = Config::parse(&value.to_string())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let name = path
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    Ok((name, sc, cfg))
}

/// One scenario at one capacity: every policy's result, in [`POLICIES`] order.
struct Case {
    name: String,
    mbit: u64,
    bursts: bool,
    /// The top tiers' in-profile demand fits the link in every cycle.
    top_fits: bool,
    runs: Vec<SimResult>,
}

pub fn run(dir: &Path, only: Option<&str>, chart: Option<&Path>) -> Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter(|p| {
            only.is_none_or(|o| {
                p.file_stem()
                    .is_some_and(|s| s.to_string_lossy().contains(o))
            })
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no scenario (*.json) in {}", dir.display());
    }
    println!(
        "| scenario | link | policy | in-profile dropped (MB) | by tier: platinum / gold / silver / bronze | gold/platinum violations | goodput (GB) | utilization | Jain | dropped while the link had room (MB) | rate changes per tenant-hour | pre used / deposited (MB) | burst-onset dropped (MB) | vs static |"
    );
    println!(
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    let mut cases = Vec::new();
    let mut described = Vec::new();
    for path in &files {
        let (name, sc, base) = load(path)?;
        described.push((name.clone(), sc.description.clone()));
        for &mbit in &sc.capacities_mbit {
            let mut cfg = base.clone();
            cfg.link.capacity = Rate(mbit * 1_000_000);
            let trace = generate(sc.trace.kind, &cfg, sc.trace.days, sc.trace.seed);
            let mut runs: Vec<SimResult> = Vec::new();
            for (policy, precedence) in POLICIES {
                let mut cfg = cfg.clone();
                cfg.policy.drop_precedence = precedence;
                let mut r = simulate(&trace, &cfg, policy).map_err(|e| anyhow::anyhow!(e))?;
                if precedence && policy == SimPolicy::Mode(PolicyMode::Static) {
                    r.policy.push_str("+dp");
                }
                let verdict = runs.first().map_or(String::new(), |s| no_harm(&r, s));
                println!(
                    "| {name} | {mbit} Mbit/s | {} | {:.0} | {} | {} | {:.1} | {:.1}% | {:.3} | {:.0} | {:.1} | {:.0} / {:.0} | {:.0} of {:.0} | {verdict} |",
                    r.policy,
                    r.in_profile_dropped_bytes / 1e6,
                    by_tier(&r)
                        .iter()
                        .map(|b| format!("{:.0}", b / 1e6))
                        .collect::<Vec<_>>()
                        .join(" / "),
                    r.violations,
                    r.passed_bytes / 1e9,
                    r.link_utilization * 100.0,
                    r.jain_fairness,
                    r.dropped_while_idle_bytes / 1e6,
                    r.rate_changes_per_tenant_hour(cfg.forecast.interval_ms as f64 / 1000.0),
                    r.pre_used_bytes / 1e6,
                    r.pre_deposited_bytes / 1e6,
                    r.onset_dropped_bytes / 1e6,
                    r.onset_bytes / 1e6,
                );
                runs.push(r);
            }
            cases.push(Case {
                name: name.clone(),
                mbit,
                bursts: sc.bursts,
                top_fits: top_fits(&trace, &cfg)?,
                runs,
            });
        }
    }
    println!();
    for (name, d) in &described {
        println!("- `{name}`: {d}");
    }
    println!();
    criteria(&cases);
    if let Some(path) = chart {
        draw(path, &cases)?;
        println!("\nchart: {}", path.display());
    }
    Ok(())
}

/// Whether the gold and platinum tenants' in-profile demand (what they offer up to their
/// rates) fits the link in every cycle of `trace`: where it does, the top must be protected.
fn top_fits(trace: &Trace, cfg: &Config) -> Result<bool> {
    let cap = cfg.link.capacity.bits_per_sec() as f64 / 8.0;
    let idx = trace.indices(cfg).map_err(|e| anyhow::anyhow!(e))?;
    let top: Vec<(usize, f64)> = shaper::planner::profiles(cfg)
        .iter()
        .zip(idx)
        .filter(|(p, _)| shaper::allocate::protected(p.priority))
        .map(|(p, k)| (k, p.rate))
        .collect();
    Ok((0..trace.cycles()).all(|c| {
        top.iter()
            .map(|&(k, rate)| trace.offered[k][c].min(rate))
            .sum::<f64>()
            <= cap
    }))
}

/// In-profile bytes dropped per tier: platinum, gold, silver, bronze.
fn by_tier(r: &SimResult) -> [f64; 4] {
    let mut out = [0.0; 4];
    for t in &r.tenants {
        let k = match t.tier.as_str() {
            "platinum" => 0,
            "gold" => 1,
            "silver" => 2,
            _ => 3,
        };
        out[k] += t.in_profile_dropped_bytes;
    }
    out
}

/// Whether a lower tier (silver, bronze) lost more in profile than under static by more than
/// the tiers above it were spared, with the do-no-harm slack (10% of static's loss and 1 MB).
fn lower_tiers_overpaid(r: &SimResult, s: &SimResult) -> bool {
    let (rt, st) = (by_tier(r), by_tier(s));
    let slack = 0.1 * s.in_profile_dropped_bytes + 1e6;
    (2..4).any(|k| {
        let spared: f64 = (0..k).map(|j| st[j] - rt[j]).sum();
        rt[k] - st[k] > spared.max(0.0) + slack
    })
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

/// The measures the oracle's gain is captured on: name, value, lower is better.
fn measures(r: &SimResult) -> [(&'static str, f64, bool); 5] {
    [
        ("in-profile loss", r.in_profile_dropped_bytes, true),
        ("violations", r.violations as f64, true),
        ("utilization", r.link_utilization, false),
        ("onset loss", r.onset_dropped_bytes, true),
        ("idle-link loss", r.dropped_while_idle_bytes, true),
    ]
}

/// The prediction issue's criteria for predictive on each case, one row each, and a count.
fn criteria(cases: &[Case]) {
    println!(
        "| # | scenario | link | do no harm | top protected | pre-allocation | oracle's gain captured |"
    );
    println!("| ---: | --- | --- | --- | --- | --- | --- |");
    let (mut held, mut total) = (0, 0);
    for (n, c) in cases.iter().enumerate() {
        let [stat, _, _, reactive, pred, oracle] = &c.runs[..] else {
            continue;
        };
        let mut ok = true;
        let mut harm_v = harm(pred, stat);
        if lower_tiers_overpaid(pred, stat) {
            harm_v.push("lower tiers lost more than the top was spared");
        }
        ok &= harm_v.is_empty();
        let harm_s = if harm_v.is_empty() {
            "yes".to_string()
        } else {
            format!("**no**: {}", harm_v.join(", "))
        };
        let top = if !c.top_fits {
            "n/a (the link cannot hold their contract)".to_string()
        } else if pred.violations as f64 <= 0.1 * stat.violations as f64 {
            format!("yes ({} vs static's {})", pred.violations, stat.violations)
        } else {
            ok = false;
            format!(
                "**no** ({} vs static's {})",
                pred.violations, stat.violations
            )
        };
        let pre = if !c.bursts {
            "n/a".to_string()
        } else {
            let used = if pred.pre_deposited_bytes > 0.0 {
                let share =
                    pred.pre_used_bytes.min(pred.pre_deposited_bytes) / pred.pre_deposited_bytes;
                ok &= share >= 0.7;
                format!("{:.0}% of deposits used", share * 100.0)
            } else {
                "no deposits".to_string()
            };
            let onset = if reactive.onset_dropped_bytes > 1e6 {
                let ratio = pred.onset_dropped_bytes / reactive.onset_dropped_bytes;
                ok &= ratio <= 0.5;
                format!(
                    "onset loss {:.0}% below reactive's{}",
                    (1.0 - ratio) * 100.0,
                    if ratio <= 0.5 { "" } else { " (**< 50%**)" }
                )
            } else {
                "reactive loses no onset".to_string()
            };
            format!("{used}; {onset}")
        };
        let mut captured = Vec::new();
        for ((name, s, lower), ((_, o, _), (_, p, _))) in measures(stat)
            .into_iter()
            .zip(measures(oracle).into_iter().zip(measures(pred)))
        {
            let gain = if lower { s - o } else { o - s };
            // The oracle beats static by at least 5% (and by more than rounding).
            if gain <= 0.05 * s.abs() || gain <= 1e-9 * s.abs().max(1.0) {
                continue;
            }
            let got = if lower { s - p } else { p - s };
            let share = got / gain;
            ok &= share >= 0.6;
            captured.push(format!(
                "{name} {:.0}%{}",
                share * 100.0,
                if share >= 0.6 { "" } else { " (**< 60%**)" }
            ));
        }
        let captured = if captured.is_empty() {
            "the oracle gains nothing".to_string()
        } else {
            captured.join(", ")
        };
        total += 1;
        held += usize::from(ok);
        println!(
            "| {} | {} | {} Mbit/s | {harm_s} | {top} | {pre} | {captured} |",
            n + 1,
            c.name,
            c.mbit
        );
    }
    println!("\nEvery criterion held on {held} of {total} cases.");
}

/// Per case and policy (x: the case's number in the criteria table): in-profile loss as a
/// multiple of static's (cases where static loses any), and burst-onset loss.
fn draw(path: &Path, cases: &[Case]) -> Result<()> {
    let panel = |title: &str, y: &str, f: &dyn Fn(&Case, usize) -> Option<f64>| plot::Panel {
        title: title.into(),
        x: "case (criteria table)".into(),
        y: y.into(),
        log_x: false,
        y_zero: true,
        series: (0..POLICIES.len())
            .map(|k| plot::Series {
                name: cases
                    .first()
                    .map_or_else(String::new, |c| c.runs[k].policy.clone()),
                color: k,
                points: cases
                    .iter()
                    .enumerate()
                    .filter_map(|(n, c)| Some(((n + 1) as f64, f(c, k)?)))
                    .collect(),
                scatter: true,
            })
            .collect(),
    };
    plot::png(
        path,
        &[
            panel("In-profile loss, x static's", "x static", &|c, k| {
                let s = c.runs[0].in_profile_dropped_bytes;
                (s > 1e6).then(|| c.runs[k].in_profile_dropped_bytes / s)
            }),
            panel("Burst-onset loss", "GB", &|c, k| {
                Some(c.runs[k].onset_dropped_bytes / 1e9)
            }),
        ],
    )
}
