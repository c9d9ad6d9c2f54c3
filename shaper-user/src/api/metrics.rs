//! Prometheus text exposition of what the agent publishes: one function per family group.
use std::fmt::Write as _;

use super::types::{AllocationView, CYCLE_BUCKETS, ForecastView, Health, TenantView, View};

/// Every alert kind, exported at 0 before it first fires.
pub const ALERTS: [&str; 5] = [
    "protected_violation",
    "forecast_inaccurate",
    "cycle_overrun",
    "write_failed",
    "agent_error",
];

/// Every stage whose failures are counted, exported at 0 before the first.
pub const STAGES: [&str; 8] = [
    "collect",
    "plan",
    "write",
    "record",
    "cycle",
    "reload",
    "exchange",
    "interface_check",
];

/// A label value escaped for the text exposition format.
fn esc(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return std::borrow::Cow::Borrowed(v);
    }
    std::borrow::Cow::Owned(
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n"),
    )
}

/// Writes `name{labels extra} value` and a newline, piece by piece: at 100,000 tenants the
/// formatting machinery (`writeln!`, float `Display`) was most of a 350 ms render, on the
/// cores the cycle needs.
fn sample(m: &mut String, name: &str, labels: &str, extra: &[&str], v: f64) {
    m.push_str(name);
    m.push('{');
    m.push_str(labels);
    for e in extra {
        m.push_str(e);
    }
    m.push_str("} ");
    push_value(m, v);
    m.push('\n');
}

/// A sample value as the text format spells it: integers without a fraction, others in
/// their shortest round-trip form, `NaN` and `+Inf`/`-Inf` (not Rust's `inf`).
fn push_value(m: &mut String, v: f64) {
    if v.is_nan() {
        m.push_str("NaN");
    } else if v.is_infinite() {
        m.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        m.push_str(itoa::Buffer::new().format(v as i64));
    } else {
        m.push_str(ryu::Buffer::new().format_finite(v));
    }
}

/// The Prometheus text exposition of a cycle's view and the agent's health.
pub fn render_metrics(view: &View, health: &Health) -> String {
    render_view(view) + &render_health(health)
}

/// The part of the exposition a cycle's view gives: build, tenants, classes. Rendered once
/// per cycle, by the first scrape.
pub fn render_view(view: &View) -> String {
    // About 1.5 kB a tenant (zero counters left out): one allocation, not a hundred doublings.
    let mut m = String::with_capacity(4096 + view.tenants().len() * 1536);
    build_info(&mut m, &view.iface);
    let tenants = view.tenants();
    // Each tenant's labels escaped once, not once per line.
    let labels: Vec<String> = tenants
        .iter()
        .map(|t| format!("tenant=\"{}\",tier=\"{}\"", esc(&t.name), esc(&t.tier)))
        .collect();
    tenant_counts(&mut m, tenants, &labels);
    tenant_gauges(&mut m, tenants, &labels);
    tenant_plans(&mut m, tenants, &labels);
    tenant_overrides(&mut m, &view.overrides);
    classes(&mut m, &view.classes);
    m
}

/// Reactive overrides entered per tenant and trigger: with the view's part, rendered once per
/// cycle (a busy host may put every tenant in override).
fn tenant_overrides(m: &mut String, overrides: &[(String, &'static str, u64)]) {
    family(
        m,
        "shaper_tenant_overrides_total",
        "counter",
        "Reactive overrides entered (tenant back to its base rate), by trigger.",
    );
    for (tenant, trigger, n) in overrides {
        let _ = writeln!(
            m,
            "shaper_tenant_overrides_total{{tenant=\"{}\",trigger=\"{trigger}\"}} {n}",
            esc(tenant)
        );
    }
}

/// The agent's own part: cycle times, reloads, alerts, errors (per-tenant overrides are the
/// view's).
pub fn render_health(health: &Health) -> String {
    let mut m = String::new();
    agent_health(&mut m, health);
    m
}

/// `# HELP` and `# TYPE` of a family.
fn family(m: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn build_info(m: &mut String, iface: &str) {
    family(
        m,
        "shaper_build_info",
        "gauge",
        "Build of the running agent.",
    );
    let _ = writeln!(
        m,
        "shaper_build_info{{version=\"{}\",iface=\"{}\"}} 1",
        esc(env!("CARGO_PKG_VERSION")),
        esc(iface)
    );
}

/// Bytes and packets per tenant, token type and outcome. A counter still at zero is left
/// out (a series appears when it first counts, and counters never go back): most tenants use
/// two or three of the eighteen type x outcome pairs, and at 100,000 tenants the zeros were
/// most of a 500 MB exposition.
fn tenant_counts(m: &mut String, tenants: &[TenantView], labels: &[String]) {
    for (name, what) in [
        ("shaper_tenant_bytes_total", "IP bytes"),
        ("shaper_tenant_packets_total", "packets"),
    ] {
        family(
            m,
            name,
            "counter",
            &format!("{what} per tenant and outcome, as the datapath counted them."),
        );
        let bytes = name.contains("bytes");
        for (t, l) in tenants.iter().zip(labels) {
            for (ty, outcomes) in t.by_type.iter() {
                for (outcome, c) in outcomes.iter() {
                    let v = if bytes { c.bytes } else { c.packets };
                    if v != 0 {
                        m.push_str(name);
                        m.push('{');
                        m.push_str(l);
                        for part in [",token_type=\"", ty, "\",outcome=\"", outcome, "\"} "] {
                            m.push_str(part);
                        }
                        m.push_str(itoa::Buffer::new().format(v));
                        m.push('\n');
                    }
                }
            }
        }
    }
}

/// One value per tenant: deposits (counters, left out while zero), configured rate, passed
/// and offered rates, flows.
fn tenant_gauges(m: &mut String, tenants: &[TenantView], labels: &[String]) {
    for (name, kind, help, get) in [
        (
            "shaper_tenant_pre_deposited_bytes_total",
            "counter",
            "Bytes deposited into the pre-allocated pool.",
            (|t: &TenantView| t.pre_pool.deposited_bytes as f64) as fn(&TenantView) -> f64,
        ),
        (
            "shaper_tenant_pre_used_bytes_total",
            "counter",
            "Deposited bytes spent by traffic.",
            |t: &TenantView| t.pre_pool.used_bytes as f64,
        ),
        (
            "shaper_tenant_pre_expired_bytes_total",
            "counter",
            "Deposited bytes that expired unused.",
            |t: &TenantView| t.pre_pool.expired_bytes as f64,
        ),
        (
            "shaper_tenant_rate_bits",
            "gauge",
            "Configured rate, bits/s.",
            |t: &TenantView| t.rate_bits as f64,
        ),
        (
            "shaper_tenant_passed_bits_per_second",
            "gauge",
            "Passed IP bits/s over the last cycle.",
            |t: &TenantView| t.passed_bps,
        ),
        (
            "shaper_tenant_offered_bits_per_second",
            "gauge",
            "Offered (passed + dropped) IP bits/s over the last cycle.",
            |t: &TenantView| t.offered_bps,
        ),
        (
            "shaper_tenant_active_flows",
            "gauge",
            "Flows seen in the last 10 s (sampled).",
            |t: &TenantView| t.active_flows as f64,
        ),
    ] {
        family(m, name, kind, help);
        for (t, l) in tenants.iter().zip(labels) {
            let v = get(t);
            if kind == "counter" && v == 0.0 {
                continue;
            }
            sample(m, name, l, &[], v);
        }
    }
}

/// What the agent forecast and allocated per tenant.
fn tenant_plans(m: &mut String, tenants: &[TenantView], labels: &[String]) {
    family(
        m,
        "shaper_tenant_forecast_bits_per_second",
        "gauge",
        "Forecast of offered IP bits/s for the next cycle: mean and prediction interval.",
    );
    for (t, l) in tenants.iter().zip(labels) {
        if let Some(f) = &t.forecast {
            for (bound, v) in [
                (",bound=\"mean\"", f.mean),
                (",bound=\"lo\"", f.lo),
                (",bound=\"hi\"", f.hi),
            ] {
                sample(
                    m,
                    "shaper_tenant_forecast_bits_per_second",
                    l,
                    &[bound],
                    v * 8.0,
                );
            }
        }
    }
    for (name, help, get) in [
        (
            "shaper_tenant_forecast_mase",
            "Rolling MASE of the one-step forecasts against the seasonal naive (< 1: better).",
            (|f: &ForecastView| f.mase) as fn(&ForecastView) -> Option<f64>,
        ),
        (
            "shaper_tenant_forecast_coverage",
            "Rolling share of offered rates inside the one-step forecast interval.",
            |f| f.coverage,
        ),
    ] {
        family(m, name, "gauge", help);
        for (t, l) in tenants.iter().zip(labels) {
            if let Some(v) = t.forecast.as_ref().and_then(get) {
                sample(m, name, l, &[], v);
            }
        }
    }
    for (name, help, get) in [
        (
            "shaper_tenant_fill_bits_per_second",
            "Allocated fill rate of the tenant's buckets, bits/s.",
            (|a: &AllocationView| a.fill_bps) as fn(&AllocationView) -> f64,
        ),
        (
            "shaper_tenant_pre_allocated_bits_per_second",
            "Allocated fill rate of the pre-allocated pool, bits/s.",
            |a| a.pre_bps,
        ),
        (
            "shaper_tenant_override",
            "1 while a reactive override holds the tenant at its base rate.",
            |a| f64::from(u8::from(a.override_reason.is_some())),
        ),
    ] {
        family(m, name, "gauge", help);
        for (t, l) in tenants.iter().zip(labels) {
            if let Some(a) = &t.allocation {
                sample(m, name, l, &[], get(a));
            }
        }
    }
}

fn classes(m: &mut String, classes: &[(String, u64, u64)]) {
    family(
        m,
        "shaper_packets_total",
        "counter",
        "Packets by class (ipv4, ipv6, non_ip, malformed, unmatched_*).",
    );
    for (class, packets, _) in classes {
        let _ = writeln!(
            m,
            "shaper_packets_total{{class=\"{}\"}} {packets}",
            esc(class)
        );
    }
}

/// The agent's own cycle times, reloads and alerts.
fn agent_health(m: &mut String, h: &Health) {
    family(
        m,
        "shaper_agent_cycle_seconds",
        "histogram",
        "Duration of the agent's cycles.",
    );
    for (le, c) in CYCLE_BUCKETS.iter().zip(h.cycle_buckets) {
        let _ = writeln!(m, "shaper_agent_cycle_seconds_bucket{{le=\"{le}\"}} {c}");
    }
    let _ = writeln!(
        m,
        "shaper_agent_cycle_seconds_bucket{{le=\"+Inf\"}} {}",
        h.cycles
    );
    let _ = writeln!(
        m,
        "shaper_agent_cycle_seconds_sum {}\nshaper_agent_cycle_seconds_count {}",
        h.cycle_sum_s, h.cycles
    );
    family(
        m,
        "shaper_agent_cycle_overruns_total",
        "counter",
        "Cycles that took longer than the interval.",
    );
    let _ = writeln!(m, "shaper_agent_cycle_overruns_total {}", h.overruns);
    family(
        m,
        "shaper_reloads_total",
        "counter",
        "Config reloads by result.",
    );
    let _ = writeln!(m, "shaper_reloads_total{{result=\"ok\"}} {}", h.reloads_ok);
    let _ = writeln!(
        m,
        "shaper_reloads_total{{result=\"rejected\"}} {}",
        h.reloads_rejected
    );
    family(
        m,
        "shaper_alerts_total",
        "counter",
        "Alerts by kind: protected_violation (gold or platinum in-profile traffic dropped in a cycle), cycle_overrun, write_failed, agent_error.",
    );
    for kind in ALERTS {
        let n = h.alerts.get(kind).copied().unwrap_or(0);
        let _ = writeln!(m, "shaper_alerts_total{{alert=\"{kind}\"}} {n}");
    }
    family(
        m,
        "shaper_agent_errors_total",
        "counter",
        "Failures of the agent by stage; the datapath kept the last rates each time.",
    );
    for stage in STAGES {
        let n = h.errors.get(stage).copied().unwrap_or(0);
        let _ = writeln!(m, "shaper_agent_errors_total{{stage=\"{stage}\"}} {n}");
    }
    family(
        m,
        "shaper_agent_stage_seconds",
        "gauge",
        "Duration of each stage of the last cycle.",
    );
    for (stage, ms) in &h.stage_ms {
        let _ = writeln!(
            m,
            "shaper_agent_stage_seconds{{stage=\"{stage}\"}} {}",
            ms / 1e3
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ForecastView;

    /// Sample values as Prometheus parses them: Rust's `inf` is not one.
    #[test]
    fn values_are_spelled_as_the_text_format_does() {
        let spelled = |v: f64| {
            let mut m = String::new();
            push_value(&mut m, v);
            m
        };
        assert_eq!(spelled(120_000_000.0), "120000000");
        assert_eq!(spelled(-3.0), "-3");
        assert_eq!(spelled(0.95), "0.95");
        assert_eq!(spelled(1e20), "1e20");
        assert_eq!(spelled(f64::NAN), "NaN");
        assert_eq!(spelled(f64::INFINITY), "+Inf");
        assert_eq!(spelled(f64::NEG_INFINITY), "-Inf");
        assert_eq!(spelled(0.1 + 0.2).parse::<f64>(), Ok(0.1 + 0.2));
    }

    fn tenant(name: &str) -> TenantView {
        TenantView {
            id: 0,
            name: name.into(),
            tier: "gold".into(),
            rate_bits: 100_000_000,
            passed_packets: 10,
            passed_bytes: 15_000,
            dropped_packets: 2,
            dropped_bytes: 3_000,
            passed_bps: 1e6,
            offered_bps: 1.2e6,
            drop_ratio: 1.0 / 6.0,
            offered_by_type_bps: [1.2e6, 0.0, 0.0],
            marked_packets: 1,
            marked_bytes: 1_500,
            by_type: {
                let mut b = crate::stats::ByType::default();
                b.0[shaper_common::TYPE_GOLD].0[shaper_common::OUTCOME_DROPPED] =
                    crate::stats::Count {
                        packets: 2,
                        bytes: 3_000,
                    };
                b
            },
            pre_pool: Default::default(),
            active_flows: 3,
            forecast: Some(ForecastView {
                mean: 1e6,
                lo: 0.5e6,
                hi: 2e6,
                model: None,
                mase: Some(0.8),
                coverage: Some(0.95),
                inaccurate: false,
            }),
            allocation: Some(AllocationView {
                fill_bps: 120e6,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn metrics_are_well_formed_exposition() {
        let view = View::new(
            "eth0",
            vec![tenant("a\"b")],
            vec![("ipv4".into(), 12, 18_000)],
        )
        .with_overrides(std::sync::Arc::new(vec![("a\"b".into(), "cpu_busy", 2)]));
        let mut health = Health::default();
        health.record_cycle(0.002);
        health.record_cycle(0.2);
        health.alerts.insert("cycle_overrun", 1);
        let text = render_metrics(&view, &health);
        assert!(
            text.contains(
                "shaper_tenant_overrides_total{tenant=\"a\\\"b\",trigger=\"cpu_busy\"} 2"
            )
        );
        assert!(text.contains("shaper_alerts_total{alert=\"cycle_overrun\"} 1"));
        assert!(text.contains("shaper_alerts_total{alert=\"protected_violation\"} 0"));
        assert!(text.contains("shaper_alerts_total{alert=\"forecast_inaccurate\"} 0"));
        assert!(text.contains("shaper_tenant_forecast_mase{tenant=\"a\\\"b\",tier=\"gold\"} 0.8"));
        assert!(
            text.contains("shaper_tenant_forecast_coverage{tenant=\"a\\\"b\",tier=\"gold\"} 0.95")
        );
        assert!(text.contains("shaper_tenant_bytes_total{tenant=\"a\\\"b\",tier=\"gold\",token_type=\"gold\",outcome=\"dropped\"} 3000"), "{text}");
        assert!(text.contains("shaper_agent_cycle_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains(
            "shaper_tenant_forecast_bits_per_second{tenant=\"a\\\"b\",tier=\"gold\",bound=\"hi\"} 16000000"
        ));
        assert!(text.contains(
            "shaper_tenant_fill_bits_per_second{tenant=\"a\\\"b\",tier=\"gold\"} 120000000"
        ));
        assert!(text.contains("shaper_agent_cycle_seconds_bucket{le=\"+Inf\"} 2"));
        // Every sample line belongs to a family declared by a TYPE line before it.
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap_or("").to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap_or("");
                assert!(
                    declared.iter().any(|d| name == d
                        || name
                            .strip_prefix(d.as_str())
                            .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))),
                    "undeclared: {line}"
                );
                let value = line.rsplit(' ').next().unwrap_or("");
                assert!(value.parse::<f64>().is_ok(), "bad value: {line}");
            }
        }
    }

    /// The Grafana dashboard (`packaging/grafana/shaper.json`) queries only metrics the agent
    /// exports: every `shaper_*` name in every panel's expression is a declared family (or a
    /// histogram's `_bucket`/`_sum`/`_count`).
    #[test]
    fn grafana_dashboard_queries_only_exported_metrics() {
        let view = View::new("eth0", vec![tenant("t")], vec![("ipv4".into(), 1, 1)]);
        let mut health = Health::default();
        health.record_cycle(0.01);
        let text = render_metrics(&view, &health);
        let declared: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|r| r.split_once(' '))
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        let exported = |name: &str| {
            declared.iter().any(|(d, t)| {
                name == d
                    || (t == "histogram"
                        && name
                            .strip_prefix(d.as_str())
                            .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s)))
            })
        };
        let dash: serde_json::Value =
            serde_json::from_str(include_str!("../../../packaging/grafana/shaper.json"))
                .expect("the dashboard is JSON");
        let panels = dash["panels"].as_array().expect("panels");
        assert!(panels.len() >= 10);
        let mut queried = 0;
        for p in panels {
            for t in p["targets"].as_array().expect("targets") {
                let expr = t["expr"].as_str().expect("expr");
                let mut rest = expr;
                while let Some(at) = rest.find("shaper_") {
                    let name: String = rest[at..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    assert!(
                        exported(&name),
                        "{} queries {name}, not exported",
                        p["title"]
                    );
                    queried += 1;
                    rest = &rest[at + name.len()..];
                }
            }
        }
        // The dashboard shows what the issue names: rates, drops, forecast vs offered,
        // allocation, overrides, alerts, cycle time.
        for must in [
            "shaper_tenant_passed_bits_per_second",
            "shaper_tenant_forecast_bits_per_second",
            "shaper_tenant_fill_bits_per_second",
            "shaper_tenant_override",
            "shaper_alerts_total",
            "shaper_agent_cycle_seconds_bucket",
        ] {
            assert!(dash.to_string().contains(must), "no panel shows {must}");
        }
        assert!(queried > 20);
    }
}
