//! `shaper explain --tenant T`: why a tenant has its current fill and pre-allocation, from the
//! running agent (`GET /v1/tenants/{name}` over the Unix socket): configured rate and ceiling,
//! forecast and interval, accuracy, the allocator's decision and what decided it, and which
//! tokens paid its packets.
use anyhow::{Context as _, Result, bail};
use serde::Deserialize;

use crate::cli::ExplainArgs;
use crate::cli::stats::agent_socket;
use shaper::allocate::Decision;
use shaper::api::TenantView;
use shaper::config::{Link, Policy, Tenant, Tier};
use shaper::units::human_bits;

/// The agent's answer.
#[derive(Deserialize)]
struct Answer {
    tenant: TenantView,
    config: Option<Tenant>,
    tier: Option<Tier>,
    policy: Policy,
    link: Link,
}

pub fn execute(args: &ExplainArgs) -> Result<()> {
    let (iface, socket) = agent_socket(args.iface.as_deref(), "explain")?;
    // Names go into the path: percent-encode all but unreserved characters.
    let name: String = args
        .tenant
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let (code, reply) = shaper::api::request_socket(
        &socket,
        "GET",
        &format!("/v1/tenants/{name}"),
        None,
        std::time::Duration::from_secs(10),
    )
    .with_context(|| format!("cannot reach the agent's API at {}", socket.display()))?;
    if code == 404 {
        bail!(
            "the agent on {iface} has no tenant named '{}' (shaper stats lists them)",
            args.tenant
        );
    }
    if code == 503 {
        bail!("the agent on {iface} has not finished its first cycle: try again in a moment");
    }
    if code != 200 {
        bail!("the agent answered {code}: {}", reply.trim());
    }
    if args.json {
        println!("{}", reply.trim());
        return Ok(());
    }
    let a: Answer = serde_json::from_str(&reply)
        .with_context(|| format!("the agent's answer is not understood: {}", reply.trim()))?;
    print!("{}", render(&a));
    Ok(())
}

fn bits(bytes_per_sec: f64) -> String {
    human_bits(bytes_per_sec * 8.0)
}

/// The explanation, a few lines.
fn render(a: &Answer) -> String {
    use std::fmt::Write as _;
    let t = &a.tenant;
    let mut out = String::new();
    let rate = t.rate_bits as f64 / 8.0;
    let _ = write!(out, "{} ({}", t.name, t.tier);
    if let Some(tier) = &a.tier {
        let _ = write!(
            out,
            ": priority {}, {}borrows, {}emergency pool",
            tier.priority,
            if tier.borrow { "" } else { "never " },
            if tier.emergency { "" } else { "no " }
        );
    }
    let _ = writeln!(out, ")");
    if let Some(c) = &a.config {
        let ceil = c
            .ceil
            .map_or("none".to_string(), |r| human_bits(r.bits_per_sec() as f64));
        let _ = writeln!(
            out,
            "  configured: rate {}, ceiling {ceil}, burst {} bytes",
            human_bits(c.rate.bits_per_sec() as f64),
            c.burst.bytes()
        );
    }
    let _ = writeln!(
        out,
        "  policy: {} (overcommit {}, drop precedence {}), link {}",
        a.policy.mode.name(),
        on(a.policy.overcommit),
        on(a.policy.drop_precedence),
        human_bits(a.link.capacity.bits_per_sec() as f64)
    );
    let _ = writeln!(
        out,
        "  last cycle: offered {}, passed {} ({:.1}% dropped)",
        human_bits(t.offered_bps),
        human_bits(t.passed_bps),
        t.drop_ratio * 100.0
    );
    match &t.forecast {
        Some(f) => {
            let _ = write!(
                out,
                "  forecast for the next cycle: {} (interval {} .. {})",
                bits(f.mean),
                bits(f.lo),
                bits(f.hi)
            );
            if let Some(m) = f.model {
                let _ = write!(out, ", model {}", m.name());
            }
            let _ = writeln!(out);
            let accuracy = match f.mase {
                Some(m) => format!(
                    "rolling MASE {m:.2} ({} the seasonal naive)",
                    if m < 1.0 {
                        "better than"
                    } else {
                        "no better than"
                    }
                ),
                None => "not scored yet".to_string(),
            };
            let coverage = f.coverage.map_or(String::new(), |c| {
                format!(", interval coverage {:.0}%", c * 100.0)
            });
            let alert = if f.inaccurate {
                ", above forecast.accuracy_alert_mase (alert forecast_inaccurate)"
            } else {
                ""
            };
            let _ = writeln!(out, "  accuracy: {accuracy}{coverage}{alert}");
        }
        None => {
            let _ = writeln!(out, "  forecast: none (static mode, or no cycle yet)");
        }
    }
    match &t.allocation {
        Some(al) => {
            let fill = al.fill_bps / 8.0;
            let _ = write!(out, "  allocation: fill {}", bits(fill));
            if al.pre_bps > 0.0 {
                let _ = write!(
                    out,
                    ", pre-allocated {} (cap {:.0} bytes)",
                    human_bits(al.pre_bps),
                    al.pre_cap_bytes
                );
            }
            if al.deposit_bytes > 0.0 {
                let _ = write!(
                    out,
                    ", deposit {:.0} bytes ahead of a burst",
                    al.deposit_bytes
                );
            }
            let _ = writeln!(out);
            let why = match (al.decision, &al.override_reason) {
                (_, Some(r)) => format!("held at its base rate by a reactive override: {r}"),
                (Some(d), None) => decision_text(d, fill, rate),
                (None, None) => "not given by this agent".to_string(),
            };
            let _ = writeln!(out, "  why: {why}");
        }
        None => {
            let _ = writeln!(
                out,
                "  allocation: the configured rate (static mode, or no cycle yet)"
            );
        }
    }
    // Which tokens paid, since the agent started.
    let mut by_outcome = [0u64; shaper_common::OUTCOMES];
    for (_, o) in t.by_type.iter() {
        for (k, (_, c)) in o.iter().enumerate() {
            by_outcome[k] += c.bytes;
        }
    }
    let total: u64 = by_outcome.iter().sum();
    if total > 0 {
        let parts: Vec<String> = shaper_common::OUTCOME_NAMES
            .iter()
            .zip(by_outcome)
            .filter(|(_, b)| *b > 0)
            .map(|(n, b)| format!("{n} {:.1}%", b as f64 / total as f64 * 100.0))
            .collect();
        let _ = writeln!(
            out,
            "  bytes by what paid (since start): {}",
            parts.join(", ")
        );
    }
    out
}

fn on(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// The allocator's decision in words.
fn decision_text(d: Decision, fill: f64, rate: f64) -> String {
    match d {
        Decision::Configured => "static mode: the configured rate".into(),
        Decision::Overridden => "held at its base rate by a reactive override".into(),
        Decision::Reactive => "reactive mode: the fill follows last cycle's use".into(),
        Decision::Untrusted => "its forecasts are no better than the seasonal naive: allocated from the naive's forecast, never below its base rate, until they recover".into(),
        Decision::Raised { granted, lent } => format!(
            "raised {} above its rate: toward the forecast, the guaranteed pool gave {:.0}% of what it asked beyond its rate (higher tiers are served first){}",
            bits((fill - rate).max(0.0)),
            granted * 100.0,
            if lent > 0.0 {
                format!(
                    "; {} of it lent from capacity predicted idle, up to its ceiling (it does not borrow at packet level)",
                    bits(lent)
                )
            } else {
                String::new()
            }
        ),
        Decision::Lowered => "lowered below its base rate: the link is predicted short (overcommit on, drop precedence off)".into(),
        Decision::Held => "held at its base rate: the forecast is within it".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_read_as_sentences() {
        let t = decision_text(
            Decision::Raised {
                granted: 0.5,
                lent: 0.0,
            },
            2e6,
            1e6,
        );
        assert!(t.contains("raised 8.0 Mbit/s") && t.contains("50%"), "{t}");
        assert!(!t.contains("lent"), "{t}");
        let t = decision_text(
            Decision::Raised {
                granted: 1.0,
                lent: 0.5e6,
            },
            2e6,
            1e6,
        );
        assert!(t.contains("4.0 Mbit/s of it lent"), "{t}");
        assert!(decision_text(Decision::Untrusted, 1.0, 1.0).contains("seasonal naive"));
    }
}
