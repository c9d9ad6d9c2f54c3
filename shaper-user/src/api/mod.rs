//! The agent's API: versioned JSON over HTTP (`api.listen`, loopback by default) and over a
//! Unix socket (`api.socket`, mode 0600), plus Prometheus `/metrics`. The agent loop publishes
//! a snapshot each cycle into [`Shared`]; handlers only read it. A reload goes to the loop,
//! which owns the datapath, through a channel, and its answer comes back the same way.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;

mod dashboard;
mod metrics;
mod types;

pub use self::metrics::{ALERTS, STAGES, render_metrics};
pub use self::types::{
    AllocationView, CYCLE_BUCKETS, ClusterHealth, ExchangeBody, ForecastView, Health, Plan,
    TenantView, View,
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

/// What the handlers share with the agent: the last cycle's view, the agent's health (small,
/// updated between cycles too), the config in force, and the agent's request channels.
#[derive(Clone)]
pub struct Shared {
    pub view: Arc<RwLock<Arc<View>>>,
    pub health: Arc<RwLock<Health>>,
    /// The config in force, shared with the agent (a reload swaps it; nothing copies it).
    pub config: Arc<RwLock<Arc<Config>>>,
    pub reload: mpsc::Sender<ReloadRequest>,
    pub exchange: mpsc::Sender<ExchangeRequest>,
    /// The bearer token that lets TCP clients change rates (`api.token_file`).
    pub token: Option<Arc<str>>,
    last_reload: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
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
        let health = Health {
            version: env!("CARGO_PKG_VERSION").into(),
            mode: mode.into(),
            ..Default::default()
        };
        let shared = Shared {
            view: Arc::new(RwLock::new(Arc::new(View::new(
                iface,
                Vec::new(),
                Vec::new(),
            )))),
            health: Arc::new(RwLock::new(health)),
            config: Arc::new(RwLock::new(Arc::new(cfg.clone()))),
            reload,
            exchange,
            token: cfg.api.token_file.as_deref().and_then(read_token),
            last_reload: Arc::default(),
        };
        let requests = Requests {
            reload: reload_rx,
            exchange: exchange_rx,
        };
        (shared, requests)
    }
}

/// The token in `path`: refused (logged, TCP stays read-only) unless the file is owned by
/// root or the agent's user and readable by no one else.
fn read_token(path: &Path) -> Option<Arc<str>> {
    use std::os::unix::fs::MetadataExt as _;
    let refuse = |why: String| {
        tracing::error!(path = %path.display(), "{why}: the TCP API stays read-only");
        None
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return refuse(format!("cannot read api.token_file: {e}")),
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.mode() & 0o077 != 0 || (meta.uid() != 0 && meta.uid() != me) {
        return refuse("api.token_file must be mode 0600 and owned by root".into());
    }
    match std::fs::read_to_string(path) {
        Ok(t) if t.trim().len() >= 16 => Some(t.trim().into()),
        Ok(_) => refuse("api.token_file holds fewer than 16 characters".into()),
        Err(e) => refuse(format!("cannot read api.token_file: {e}")),
    }
}

/// Who is on the other end of a connection, as the accept loop saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// Over the Unix socket, a process of this uid (`SO_PEERCRED`).
    Socket { uid: u32 },
    /// Over TCP: anyone on the host (or beyond, with `api.allow_remote`).
    Tcp,
}

/// Reloads at most this often: a client cannot keep the agent reloading.
pub const RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Why `caller` may not change rates (reload, exchange), as the answer to send; `None` if it
/// may: over the socket, root or the agent's own user; over TCP, only with the configured
/// bearer token.
fn refusal(
    s: &Shared,
    caller: Option<Caller>,
    headers: &axum::http::HeaderMap,
) -> Option<Response> {
    let refuse = |code: StatusCode, why: &str| {
        (
            code,
            json(&serde_json::json!({ "api": API_VERSION, "error": why })),
        )
            .into_response()
    };
    match caller {
        Some(Caller::Socket { uid }) => {
            // SAFETY: geteuid has no preconditions.
            let me = unsafe { libc::geteuid() };
            (uid != 0 && uid != me).then(|| {
                refuse(
                    StatusCode::FORBIDDEN,
                    "only root or the agent's user may change rates",
                )
            })
        }
        _ => {
            let Some(token) = &s.token else {
                return Some(refuse(
                    StatusCode::FORBIDDEN,
                    "the TCP API is read-only: change rates over the Unix socket (api.socket), or set api.token_file",
                ));
            };
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            (!same_secret(given.as_bytes(), token.as_bytes())).then(|| {
                refuse(
                    StatusCode::UNAUTHORIZED,
                    "a valid bearer token is needed to change rates over TCP",
                )
            })
        }
    }
}

/// Compares two secrets in time that depends on their lengths only.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Requests over TCP must name the host as an address, `localhost` or `shaper`: a web page
/// that rebinds its own name to 127.0.0.1 cannot reach the API through the browser.
async fn check_host(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let tcp = !matches!(
        req.extensions().get::<Caller>(),
        Some(Caller::Socket { .. })
    );
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    if tcp
        && let Some(h) = host
        && !host_allowed(&h)
    {
        return (StatusCode::FORBIDDEN, "unexpected Host header\n").into_response();
    }
    next.run(req).await
}

/// `h` (a Host header, port and brackets included) names this machine's API.
fn host_allowed(h: &str) -> bool {
    let name = match h.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => h.rsplit_once(':').map_or(h, |(n, p)| {
            if p.chars().all(|c| c.is_ascii_digit()) {
                n
            } else {
                h
            }
        }),
    };
    name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || name == "shaper"
}

pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/", get(dashboard::page))
        .route("/dashboard.js", get(dashboard::script))
        .route("/v1/stats", get(stats))
        .route("/v1/health", get(health))
        .route("/v1/config", get(config))
        .route("/v1/tenants/{name}", get(tenant))
        .route("/v1/reload", post(reload))
        .route("/v1/exchange", post(exchange))
        .route("/metrics", get(metrics))
        .with_state(shared)
        .layer(axum::middleware::from_fn(check_host))
}

/// A client call to a running agent's API over TCP (what `shaper top` and `shaper exchange`
/// use): the status code and the body.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    request_within(addr, method, path, body, std::time::Duration::from_secs(5))
}

/// [`request`], waiting at most `timeout` for the answer.
pub fn request_within(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: std::time::Duration,
) -> std::io::Result<(u16, String)> {
    let s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(300))?;
    s.set_read_timeout(Some(timeout))?;
    exchange_http(s, method, path, body)
}

/// A client call over the agent's Unix socket, where rates may be changed (as root or the
/// agent's user): the status code and the body.
pub fn request_socket(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: std::time::Duration,
) -> std::io::Result<(u16, String)> {
    let s = std::os::unix::net::UnixStream::connect(socket)?;
    s.set_read_timeout(Some(timeout))?;
    exchange_http(s, method, path, body)
}

/// One HTTP/1.1 request and its whole answer on a fresh connection.
fn exchange_http(
    mut s: impl std::io::Read + std::io::Write,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
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

/// The current view (an `Arc` clone: the view itself is never copied).
fn current(s: &Shared) -> Arc<View> {
    read(&s.view)
}

/// How much less CPU the agent's work gets than the thread that answers the API when both want
/// it (the nice value, inherited by the forecasters' threads): on a busy box, health checks
/// are answered first and a cycle takes a little longer.
const WORK_NICE: i32 = 5;

/// The nice value of work that may wait for a cycle: rendering large bodies (`/metrics` at
/// 100,000 tenants is a quarter of a second of CPU) and writing history. At the cycles' own
/// priority, a scrape landing in a cycle took half the two cores from the forecasters and
/// stretched that cycle by as much; at nice 10 it gets a quarter while a cycle runs.
const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's priority to [`WORK_NICE`] (Linux nice values are per thread):
/// for the agent's cycles.
pub fn yield_to_the_api() {
    lower_priority(WORK_NICE);
}

/// Lowers the calling thread's priority to [`BACKGROUND_NICE`]: for what may wait for both
/// the API and a cycle.
pub fn yield_to_the_cycle() {
    lower_priority(BACKGROUND_NICE);
}

fn lower_priority(nice: i32) {
    // SAFETY: gettid and setpriority on the calling thread; no memory is passed.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        if libc::getpriority(libc::PRIO_PROCESS, tid) < nice {
            libc::setpriority(libc::PRIO_PROCESS, tid, nice);
        }
    }
}

/// A body rendered once per view, off the runtime's thread (a large one takes a while to
/// render, and health checks must not wait behind it), on a thread of its own at
/// [`BACKGROUND_NICE`] (not the blocking pool's: the agent's cycles run there, and a pool
/// thread lowered for a render would keep that priority for a later cycle). The view goes
/// with the thread: if this request held the last reference, freeing it (100,000 tenants)
/// happens there too.
async fn rendered(
    view: Arc<View>,
    pick: fn(&View) -> &std::sync::OnceLock<Bytes>,
    render: fn(&View) -> String,
) -> Bytes {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("shaper-render".into())
        .spawn(move || {
            yield_to_the_cycle();
            let body = pick(&view)
                .get_or_init(|| Bytes::from(render(&view)))
                .clone();
            let _ = tx.send(body);
        });
    if let Err(e) = spawned {
        return Bytes::from(format!("rendering failed: {e}\n"));
    }
    rx.await
        .unwrap_or_else(|_| Bytes::from_static(b"rendering failed: the renderer panicked\n"))
}

fn stats_body(v: &View) -> String {
    serde_json::to_string_pretty(
        &serde_json::json!({ "api": API_VERSION, "iface": v.iface, "tenants": v.tenants(), "classes": v.classes }),
    )
    .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

async fn stats(State(s): State<Shared>) -> Response {
    let body = rendered(current(&s), |v| &v.stats_body, stats_body).await;
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn health(State(s): State<Shared>) -> Response {
    json(&serde_json::json!({ "api": API_VERSION, "health": read(&s.health) }))
}

async fn config(State(s): State<Shared>) -> Response {
    let cfg = read(&s.config);
    json(&serde_json::json!({ "api": API_VERSION, "config": &*cfg }))
}

/// One tenant: its stats, forecast and allocation with the allocator's decision, its config
/// entry, its tier and the policy in force (what `shaper explain` prints); 404 if unknown.
async fn tenant(
    State(s): State<Shared>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    let found = current(&s).tenant(&name);
    // A guard, not a clone: the config may hold 100,000 tenants.
    let cfg = s.config.read().unwrap_or_else(|e| e.into_inner());
    let entry = cfg.tenants.iter().find(|t| t.name == name);
    let view = match (found, entry) {
        (Some(v), _) => v,
        (None, Some(_)) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                json(
                    &serde_json::json!({ "error": "no cycle has run yet: try again in a moment" }),
                ),
            )
                .into_response();
        }
        (None, None) => {
            return (
                StatusCode::NOT_FOUND,
                json(&serde_json::json!({ "error": format!("no tenant named '{name}'") })),
            )
                .into_response();
        }
    };
    let tier = entry.and_then(|t| cfg.tiers.get(&t.tier));
    json(&serde_json::json!({
        "api": API_VERSION,
        "tenant": view,
        "config": entry,
        "tier": tier,
        "policy": cfg.policy,
        "link": cfg.link,
    }))
}

async fn reload(
    State(s): State<Shared>,
    caller: Option<axum::Extension<Caller>>,
    headers: axum::http::HeaderMap,
) -> Response {
    if let Some(r) = refusal(&s, caller.map(|c| c.0), &headers) {
        return r;
    }
    {
        let mut last = s.last_reload.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < RELOAD_EVERY) {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, "1")],
                json(&serde_json::json!({ "api": API_VERSION, "reloaded": false, "error": "one reload a second at most" })),
            )
                .into_response();
        }
        *last = Some(std::time::Instant::now());
    }
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
    caller: Option<axum::Extension<Caller>>,
    headers: axum::http::HeaderMap,
    body: Result<axum::Json<ExchangeBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Some(r) = refusal(&s, caller.map(|c| c.0), &headers) {
        return r;
    }
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
        {
            let tenants = rendered(current(&s), |v| &v.metrics, metrics::render_view).await;
            let health = metrics::render_health(&read(&s.health));
            // Two chunks: the view's body is never copied.
            let chunks = [
                Ok::<_, std::convert::Infallible>(tenants),
                Ok(Bytes::from(health)),
            ];
            axum::body::Body::from_stream(futures_util::stream::iter(chunks))
        },
    )
        .into_response()
}

/// Connections served at once on each listener; more are closed as they come, so no client
/// can take the descriptors or the memory the agent needs. The Unix socket has its own, so the
/// operator's way in stays open while TCP is busy.
pub const MAX_CONNECTIONS: usize = 128;

/// How long a client may take to send a request's headers, idle keep-alive included: then the
/// connection is closed.
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves `router` on TCP `listen` and on the Unix socket `socket` until `stop` resolves.
/// A listener that cannot be opened is reported and skipped: the shaper keeps shaping without
/// its API rather than stopping. Returns the bound TCP address (port 0 picks one).
pub async fn serve(
    router: Router,
    listen: SocketAddr,
    socket: &Path,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Option<SocketAddr>, Option<PathBuf>) {
    let tcp = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => {
            let addr = l.local_addr().ok();
            let (r, s) = (router.clone(), stop.clone());
            let l = Arc::new(l);
            let accept = move || {
                let l = l.clone();
                async move { l.accept().await.map(|(s, _)| (s, Caller::Tcp)) }
            };
            tokio::spawn(accept_loop(accept, r, s));
            addr
        }
        Err(e) => {
            tracing::error!(cause = %e, %listen, "cannot serve the API on TCP: change api.listen (the shaper keeps running)");
            None
        }
    };
    let unix = match bind_unix(socket) {
        Ok(l) => {
            let l = Arc::new(l);
            let accept = move || {
                let l = l.clone();
                async move {
                    let (s, _) = l.accept().await?;
                    let uid = s.peer_cred().map_or(u32::MAX, |c| c.uid());
                    Ok((s, Caller::Socket { uid }))
                }
            };
            tokio::spawn(accept_loop(accept, router, stop));
            Some(socket.to_path_buf())
        }
        Err(e) => {
            tracing::error!(cause = %e, socket = %socket.display(), "cannot serve the API on the Unix socket: change api.socket (the shaper keeps running)");
            None
        }
    };
    (tcp, unix)
}

/// Accepts connections until `stop`, each served by hyper's HTTP/1 with a header-read
/// timeout, at most [`MAX_CONNECTIONS`] at once.
async fn accept_loop<S, F, Fut>(
    mut accept: F,
    router: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<(S, Caller)>>,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            r = accept() => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, caller) = match accepted {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors or memory: back off rather than spin.
                tracing::debug!(cause = %e, "API accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Over the cap: closed at once.
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(
            router.clone().layer(axum::Extension(caller)),
        );
        tokio::spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(cause = %e, "API connection ended");
            }
        });
    }
}

/// Binds a Unix socket with mode 0600, replacing a stale one (nobody accepting on it). Only
/// a socket is ever removed: a file of another kind at the path is an error. The socket is
/// created under a umask that leaves it 0600 from the start (a chmod after bind would leave a
/// window in which others could connect).
fn bind_unix(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket: remove it or set another api.socket",
                    path.display()
                ),
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another agent serves this socket",
            ));
        }
        std::fs::remove_file(path)?;
    }
    // SAFETY: umask only swaps the process's file mode mask; restored right after the bind.
    let old = unsafe { libc::umask(0o177) };
    let l = tokio::net::UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    l
}

#[cfg(test)]
mod tests {
    use super::{bind_unix, host_allowed, same_secret};

    /// The API socket is 0600 from its creation, a stale socket is replaced, and a file of
    /// another kind at its path is left alone with a clear error.
    #[tokio::test]
    async fn the_api_socket_is_private_and_never_replaces_a_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("shaper-sock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("api.sock");
        let l = bind_unix(&path).expect("bind");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(l);
        bind_unix(&path).expect("a stale socket is replaced");
        let file = dir.join("notes.txt");
        std::fs::write(&file, "keep me").expect("write");
        let err = bind_unix(&file).expect_err("not a socket");
        assert!(err.to_string().contains("is not a socket"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&file).expect("still there"),
            "keep me"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn hosts_that_name_this_machine_pass_and_other_names_do_not() {
        for ok in [
            "127.0.0.1",
            "127.0.0.1:9464",
            "[::1]:9464",
            "[::1]",
            "localhost",
            "LOCALHOST:9464",
            "shaper",
            "10.0.0.5:9464",
        ] {
            assert!(host_allowed(ok), "{ok}");
        }
        for bad in [
            "attacker.example",
            "attacker.example:9464",
            "localhost.evil",
            "",
        ] {
            assert!(!host_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn secrets_match_only_when_equal() {
        assert!(same_secret(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same_secret(b"0123456789abcdeF", b"0123456789abcdef"));
        assert!(!same_secret(b"0123456789abcde", b"0123456789abcdef"));
        assert!(!same_secret(b"", b"0123456789abcdef"));
    }
}
