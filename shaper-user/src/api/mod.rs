//! The agent's API: versioned JSON over HTTP (`api.listen`, loopback by default) and over a
//! Unix socket (`api.socket`, mode 0600), plus Prometheus `/metrics`. The agent loop publishes
//! a snapshot each cycle into [`Shared`]; handlers only read it. A reload goes to the loop,
//! which owns the datapath, through a channel, and its answer comes back the same way.
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

use crate::config::Config;

mod metrics;
mod types;

pub use self::metrics::{ALERTS, render_metrics};
pub use self::types::{
    AllocationView, CYCLE_BUCKETS, ExchangeBody, ForecastView, Health, Published, TenantView,
};

/// Bumped when a response's shape changes incompatibly; also the path prefix.
pub const API_VERSION: u32 = 1;

/// A reload request to the agent loop: its answer is the error text, if rejected.
pub type ReloadRequest = oneshot::Sender<Result<usize, String>>;

/// An exchange for the agent loop, and where its answer (the tenant's new split, or why not)
/// goes.
pub type ExchangeRequest = (
    ExchangeBody,
    oneshot::Sender<Result<serde_json::Value, String>>,
);

#[derive(Clone)]
pub struct Shared {
    pub published: Arc<RwLock<Published>>,
    pub config: Arc<RwLock<Config>>,
    pub reload: mpsc::Sender<ReloadRequest>,
    pub exchange: mpsc::Sender<ExchangeRequest>,
}

/// The agent loop's ends of the API's request channels.
pub struct Requests {
    pub reload: mpsc::Receiver<ReloadRequest>,
    pub exchange: mpsc::Receiver<ExchangeRequest>,
}

impl Shared {
    /// What the handlers share with the agent of `iface` (attached in `mode`) on `cfg`, and
    /// the agent's ends of the request channels.
    pub fn new(iface: &str, mode: &str, cfg: &Config) -> (Shared, Requests) {
        let (reload, reload_rx) = mpsc::channel(4);
        let (exchange, exchange_rx) = mpsc::channel(4);
        let published = Published {
            iface: iface.to_string(),
            health: Health {
                version: env!("CARGO_PKG_VERSION").into(),
                mode: mode.into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let shared = Shared {
            published: Arc::new(RwLock::new(published)),
            config: Arc::new(RwLock::new(cfg.clone())),
            reload,
            exchange,
        };
        let requests = Requests {
            reload: reload_rx,
            exchange: exchange_rx,
        };
        (shared, requests)
    }
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
    let snap = read(&s.published);
    json(
        &serde_json::json!({ "api": API_VERSION, "iface": snap.iface, "tenants": snap.tenants, "classes": snap.classes }),
    )
}

async fn health(State(s): State<Shared>) -> Response {
    json(&serde_json::json!({ "api": API_VERSION, "health": read(&s.published).health }))
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
        render_metrics(&read(&s.published)),
    )
        .into_response()
}

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
