//! The agent's API: versioned JSON over HTTP (`api.listen`, loopback by default) and over a
//! Unix socket (`api.socket`, mode 0600), plus Prometheus `/metrics`. The agent loop publishes
//! a snapshot each cycle into [`Shared`]; handlers only read it. A reload goes to the loop,
//! which owns the datapath, through a channel, and its answer comes back the same way.
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::collect::TenantStats;
use crate::config::Config;

/// Bumped when a response's shape changes incompatibly; also the path prefix.
pub const API_VERSION: u32 = 1;

/// Upper bounds (seconds) of the cycle-time histogram buckets.
pub const CYCLE_BUCKETS: [f64; 8] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// What the agent publishes each cycle.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Snapshot {
    pub iface: String,
    pub tenants: Vec<TenantStats>,
    /// Packets by class: (class name, packets, bytes).
    pub classes: Vec<(String, u64, u64)>,
    pub health: Health,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Health {
    pub version: String,
    pub mode: String,
    pub cycles: u64,
    pub last_cycle_ms: f64,
    pub overruns: u64,
    pub reloads_ok: u64,
    pub reloads_rejected: u64,
    pub last_error: Option<String>,
    /// Reactive overrides entered since the agent started: (tenant, trigger, count).
    pub overrides: Vec<(String, &'static str, u64)>,
    /// Alerts since the agent started, by kind: `protected_violation` (a gold or platinum
    /// tenant lost in-profile traffic in a cycle), `cycle_overrun`, `write_failed` (an
    /// allocation could not be written; the datapath kept its last rates).
    pub alerts: std::collections::BTreeMap<&'static str, u64>,
    /// Cumulative counts per bucket of [`CYCLE_BUCKETS`], then the total and the sum (s).
    #[serde(skip)]
    pub cycle_buckets: [u64; 8],
    #[serde(skip)]
    pub cycle_sum_s: f64,
}

impl Health {
    /// Records one cycle's duration.
    pub fn record_cycle(&mut self, secs: f64) {
        self.cycles += 1;
        self.last_cycle_ms = secs * 1e3;
        self.cycle_sum_s += secs;
        for (b, le) in self.cycle_buckets.iter_mut().zip(CYCLE_BUCKETS) {
            if secs <= le {
                *b += 1;
            }
        }
    }
}

/// A reload request to the agent loop: its answer is the error text, if rejected.
pub type ReloadRequest = oneshot::Sender<Result<usize, String>>;

/// `POST /v1/exchange`: move `amount` (a rate, `10mbit`) of `tenant`'s rate between two of its
/// token types.
#[derive(Clone, Debug, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeBody {
    pub tenant: String,
    pub from: crate::config::TokenType,
    pub to: crate::config::TokenType,
    pub amount: String,
}

/// An exchange for the agent loop, and where its answer (the tenant's new split, or why not)
/// goes.
pub type ExchangeRequest = (
    ExchangeBody,
    oneshot::Sender<Result<serde_json::Value, String>>,
);

#[derive(Clone)]
pub struct Shared {
    pub snapshot: Arc<RwLock<Snapshot>>,
    pub config: Arc<RwLock<Config>>,
    pub reload: mpsc::Sender<ReloadRequest>,
    pub exchange: mpsc::Sender<ExchangeRequest>,
}

pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/v1/stats", get(stats))
        .route("/v1/health", get(health))
        .route("/v1/config", get(config))
        .route("/v1/reload", post(reload))
        .route("/v1/exchange", post(exchange))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

/// A client call to a running agent's API over TCP (what `shaper top` and `shaper exchange`
/// use): the status code and the body.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(300))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: shaper\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP body"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status"))?;
    Ok((code, body.to_string()))
}

fn json<T: Serialize>(v: &T) -> Response {
    match serde_json::to_string_pretty(v) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read()
        .map(|g| g.clone())
        .unwrap_or_else(|e| e.into_inner().clone())
}

async fn stats(State(s): State<Shared>) -> Response {
    let snap = read(&s.snapshot);
    json(
        &serde_json::json!({ "api": API_VERSION, "iface": snap.iface, "tenants": snap.tenants, "classes": snap.classes }),
    )
}

async fn health(State(s): State<Shared>) -> Response {
    json(&serde_json::json!({ "api": API_VERSION, "health": read(&s.snapshot).health }))
}

async fn config(State(s): State<Shared>) -> Response {
    json(&serde_json::json!({ "api": API_VERSION, "config": read(&s.config) }))
}

async fn reload(State(s): State<Shared>) -> Response {
    let (tx, rx) = oneshot::channel();
    if s.reload.send(tx).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping\n").into_response();
    }
    match rx.await {
        Ok(Ok(tenants)) => {
            json(&serde_json::json!({ "api": API_VERSION, "reloaded": true, "tenants": tenants }))
        }
        Ok(Err(e)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            json(&serde_json::json!({ "api": API_VERSION, "reloaded": false, "error": e })),
        )
            .into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping\n").into_response(),
    }
}

async fn exchange(
    State(s): State<Shared>,
    body: Result<axum::Json<ExchangeBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let refuse = |code, e: String| {
        (
            code,
            json(&serde_json::json!({ "api": API_VERSION, "exchanged": false, "error": e })),
        )
            .into_response()
    };
    let body = match body {
        Ok(axum::Json(b)) => b,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let (tx, rx) = oneshot::channel();
    if s.exchange.send((body, tx)).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping\n").into_response();
    }
    match rx.await {
        Ok(Ok(v)) => json(&v),
        Ok(Err(e)) => refuse(StatusCode::UNPROCESSABLE_ENTITY, e),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping\n").into_response(),
    }
}

async fn metrics(State(s): State<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render_metrics(&read(&s.snapshot)),
    )
        .into_response()
}

/// A label value escaped for the text exposition format.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition of a snapshot.
pub fn render_metrics(snap: &Snapshot) -> String {
    let mut m = String::new();
    let family = |m: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        &mut m,
        "shaper_build_info",
        "gauge",
        "Build of the running agent.",
    );
    let _ = writeln!(
        m,
        "shaper_build_info{{version=\"{}\",iface=\"{}\"}} 1",
        esc(&snap.health.version),
        esc(&snap.iface)
    );
    for (name, what) in [
        ("shaper_tenant_bytes_total", "IP bytes"),
        ("shaper_tenant_packets_total", "packets"),
    ] {
        family(
            &mut m,
            name,
            "counter",
            &format!("{what} per tenant and outcome, as the datapath counted them."),
        );
        for t in &snap.tenants {
            let bytes = name.contains("bytes");
            for (ty, outcomes) in &t.by_type {
                for (outcome, c) in outcomes {
                    let v = if bytes { c.bytes } else { c.packets };
                    let _ = writeln!(
                        m,
                        "{name}{{tenant=\"{}\",tier=\"{}\",token_type=\"{}\",outcome=\"{}\"}} {v}",
                        esc(&t.name),
                        esc(&t.tier),
                        esc(ty),
                        esc(outcome)
                    );
                }
            }
        }
    }
    for (name, kind, help, get) in [
        (
            "shaper_tenant_pre_deposited_bytes_total",
            "counter",
            "Bytes deposited into the pre-allocated pool.",
            (|t: &TenantStats| t.pre_pool.deposited_bytes as f64) as fn(&TenantStats) -> f64,
        ),
        (
            "shaper_tenant_pre_used_bytes_total",
            "counter",
            "Deposited bytes spent by traffic.",
            |t: &TenantStats| t.pre_pool.used_bytes as f64,
        ),
        (
            "shaper_tenant_pre_expired_bytes_total",
            "counter",
            "Deposited bytes that expired unused.",
            |t: &TenantStats| t.pre_pool.expired_bytes as f64,
        ),
        (
            "shaper_tenant_rate_bits",
            "gauge",
            "Configured rate, bits/s.",
            |t: &TenantStats| t.rate_bits as f64,
        ),
        (
            "shaper_tenant_passed_bits_per_second",
            "gauge",
            "Passed IP bits/s over the last cycle.",
            |t: &TenantStats| t.passed_bps,
        ),
        (
            "shaper_tenant_offered_bits_per_second",
            "gauge",
            "Offered (passed + dropped) IP bits/s over the last cycle.",
            |t: &TenantStats| t.offered_bps,
        ),
        (
            "shaper_tenant_active_flows",
            "gauge",
            "Flows seen in the last 10 s (sampled).",
            |t: &TenantStats| t.active_flows as f64,
        ),
    ] {
        family(&mut m, name, kind, help);
        for t in &snap.tenants {
            let _ = writeln!(
                m,
                "{name}{{tenant=\"{}\",tier=\"{}\"}} {}",
                esc(&t.name),
                esc(&t.tier),
                get(t)
            );
        }
    }
    family(
        &mut m,
        "shaper_tenant_forecast_bits_per_second",
        "gauge",
        "Forecast of offered IP bits/s for the next cycle: mean and prediction interval.",
    );
    for t in &snap.tenants {
        if let Some(f) = &t.forecast {
            for (bound, v) in [("mean", f.mean), ("lo", f.lo), ("hi", f.hi)] {
                let _ = writeln!(
                    m,
                    "shaper_tenant_forecast_bits_per_second{{tenant=\"{}\",tier=\"{}\",bound=\"{bound}\"}} {}",
                    esc(&t.name),
                    esc(&t.tier),
                    v * 8.0
                );
            }
        }
    }
    for (name, help, get) in [
        (
            "shaper_tenant_fill_bits_per_second",
            "Allocated fill rate of the tenant's buckets, bits/s.",
            (|a: &crate::collect::AllocationView| a.fill_bps)
                as fn(&crate::collect::AllocationView) -> f64,
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
        family(&mut m, name, "gauge", help);
        for t in &snap.tenants {
            if let Some(a) = &t.allocation {
                let _ = writeln!(
                    m,
                    "{name}{{tenant=\"{}\",tier=\"{}\"}} {}",
                    esc(&t.name),
                    esc(&t.tier),
                    get(a)
                );
            }
        }
    }
    family(
        &mut m,
        "shaper_packets_total",
        "counter",
        "Packets by class (ipv4, ipv6, non_ip, malformed, unmatched_*).",
    );
    for (class, packets, _) in &snap.classes {
        let _ = writeln!(
            m,
            "shaper_packets_total{{class=\"{}\"}} {packets}",
            esc(class)
        );
    }
    let h = &snap.health;
    family(
        &mut m,
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
        &mut m,
        "shaper_agent_cycle_overruns_total",
        "counter",
        "Cycles that took longer than the interval.",
    );
    let _ = writeln!(m, "shaper_agent_cycle_overruns_total {}", h.overruns);
    family(
        &mut m,
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
        &mut m,
        "shaper_tenant_overrides_total",
        "counter",
        "Reactive overrides entered (tenant back to its base rate), by trigger.",
    );
    for (tenant, trigger, n) in &h.overrides {
        let _ = writeln!(
            m,
            "shaper_tenant_overrides_total{{tenant=\"{}\",trigger=\"{trigger}\"}} {n}",
            esc(tenant)
        );
    }
    family(
        &mut m,
        "shaper_alerts_total",
        "counter",
        "Alerts by kind: protected_violation (gold or platinum in-profile traffic dropped in a cycle), cycle_overrun, write_failed.",
    );
    for kind in ALERTS {
        let n = h.alerts.get(kind).copied().unwrap_or(0);
        let _ = writeln!(m, "shaper_alerts_total{{alert=\"{kind}\"}} {n}");
    }
    m
}

/// Every alert kind, exported at 0 before it first fires.
pub const ALERTS: [&str; 3] = ["protected_violation", "cycle_overrun", "write_failed"];

/// Serves `router` on TCP `listen` and on the Unix socket `socket` until `stop` resolves.
/// A listener that cannot be opened is reported and skipped: the shaper keeps shaping without
/// its API rather than stopping. Returns the bound TCP address (port 0 picks one).
pub async fn serve(
    router: Router,
    listen: SocketAddr,
    socket: &Path,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Option<SocketAddr>, Option<PathBuf>) {
    let shutdown = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let tcp = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => {
            let addr = l.local_addr().ok();
            tokio::spawn(
                axum::serve(l, router.clone())
                    .with_graceful_shutdown(shutdown(stop.clone()))
                    .into_future(),
            );
            addr
        }
        Err(e) => {
            tracing::error!(cause = %e, %listen, "cannot serve the API on TCP: change api.listen (the shaper keeps running)");
            None
        }
    };
    let unix = match bind_unix(socket) {
        Ok(l) => {
            tokio::spawn(
                axum::serve(l, router)
                    .with_graceful_shutdown(shutdown(stop))
                    .into_future(),
            );
            Some(socket.to_path_buf())
        }
        Err(e) => {
            tracing::error!(cause = %e, socket = %socket.display(), "cannot serve the API on the Unix socket: change api.socket (the shaper keeps running)");
            None
        }
    };
    (tcp, unix)
}

/// Binds a Unix socket with mode 0600, replacing a stale one (nobody accepting on it).
fn bind_unix(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another agent serves this socket",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let l = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> TenantStats {
        TenantStats {
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
            by_type: [(
                "gold".to_string(),
                [(
                    "dropped".to_string(),
                    crate::collect::Count {
                        packets: 2,
                        bytes: 3_000,
                    },
                )]
                .into(),
            )]
            .into(),
            pre_pool: Default::default(),
            active_flows: 3,
            forecast: Some(crate::forecast::Prediction {
                mean: 1e6,
                lo: 0.5e6,
                hi: 2e6,
            }),
            allocation: Some(crate::collect::AllocationView {
                fill_bps: 120e6,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn metrics_are_well_formed_exposition() {
        let mut snap = Snapshot {
            iface: "eth0".into(),
            tenants: vec![tenant("a\"b")],
            ..Default::default()
        };
        snap.classes.push(("ipv4".into(), 12, 18_000));
        snap.health.record_cycle(0.002);
        snap.health.record_cycle(0.2);
        snap.health.overrides.push(("a\"b".into(), "cpu_busy", 2));
        snap.health.alerts.insert("cycle_overrun", 1);
        let text = render_metrics(&snap);
        assert!(
            text.contains(
                "shaper_tenant_overrides_total{tenant=\"a\\\"b\",trigger=\"cpu_busy\"} 2"
            )
        );
        assert!(text.contains("shaper_alerts_total{alert=\"cycle_overrun\"} 1"));
        assert!(text.contains("shaper_alerts_total{alert=\"protected_violation\"} 0"));
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
}
