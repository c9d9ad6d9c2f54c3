//! The agent: loads and attaches the datapath, then every `forecast.interval_ms` runs one
//! cycle, a stage per file in the order data flows:
//! [`collect`] (counters, host and NIC) -> [`plan`] (forecast and allocate) -> [`write`] (the
//! maps) -> [`record`] (the history store) -> [`publish`] (the API's view). [`reload`] and
//! exchanges come in between cycles; [`state`] is the per-interface state beside the pins.
//!
//! Shaped like mini-redis's server: [`run`] takes its options (nothing of clap), a validated
//! config, and the future that stops it, so the binary, the demo and the tests drive it alike.
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::allocate::{Allocation, Profile};
use crate::api;
use crate::config::{Config, ConfigError, PolicyMode};
use crate::datapath::{AttachMode, Clock, Datapath, DatapathError, TenantInfo, pin_dir};
use crate::planner::Planner;
use crate::stats::{PrePool, Snapshot};
use crate::store::{Store, StoreError};

mod collect;
mod coordinate;
mod lock;
mod plan;
mod publish;
mod record;
mod reload;
mod state;
mod write;

pub use self::lock::{AgentLock, LockError};
pub use self::reload::reload;
pub use self::state::{StateDir, state_dir};

/// How to run the agent: what `shaper run` takes besides the config.
#[derive(Clone, Debug)]
pub struct Options {
    /// Interface to shape (ingress).
    pub iface: String,
    /// The config file, read again on reload.
    pub config: PathBuf,
    pub xdp_mode: AttachMode,
    /// Tenant capacity of the maps, fixed at load time.
    pub max_tenants: u32,
    /// Attach to `iface` inside this named network namespace.
    pub netns: Option<String>,
    pub clock: Clock,
    /// Tests only: a fault injected into every cycle.
    pub fault: Option<Fault>,
}

/// Why the agent could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(
        "cannot open the history store (change history.path in the config to a writable place)"
    )]
    Store(#[source] StoreError),
    #[error("cannot write the agent's state in {}", path.display())]
    State {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A reload whose writes failed part way, put back to the config in force.
    #[error("writing the new config failed part way; the config in force was written back")]
    ReloadRolledBack(#[source] Box<DatapathError>),
    /// A reload whose writes failed part way and whose undo failed too.
    #[error(
        "writing the new config failed part way ({error}) and writing back the config in force failed too: the datapath may hold parts of both; fix the cause and reload again, or restart `shaper run`"
    )]
    ReloadHalfApplied {
        error: String,
        #[source]
        restore: Box<DatapathError>,
    },
    #[error(transparent)]
    Cluster(#[from] crate::cluster::StoreError),
    #[error("installing the SIGHUP handler")]
    Signal(#[source] std::io::Error),
    #[error(
        "interface '{0}' disappeared: the shaper was detached with it; start `shaper run` again when it is back"
    )]
    InterfaceGone(String),
    #[error(
        "the agent's worker thread was lost ({0}): the datapath stays pinned; `shaper run` adopts it"
    )]
    Lost(String),
    #[error(
        "started inside a private mount namespace (as `ip netns exec` makes) whose /sys/fs/bpf is not the host's: its pins would die with the agent and a crash would unshape the link; run `shaper run --netns NAME --iface IF` from the host instead"
    )]
    PrivateBpffs,
    #[error(
        "the maps pinned for '{iface}' belong to an agent of an interface of that name in another network namespace: detach it there first (`shaper detach --iface {iface}`), or give this interface another name"
    )]
    OtherNamespace { iface: String },
    #[error(
        "the XDP link pinned for '{iface}' is attached to another interface (index {pinned}; '{iface}' is {here} here): an agent left it for an interface since renamed; detach it first (`shaper detach --iface {iface}`)"
    )]
    PinnedLinkElsewhere {
        iface: String,
        pinned: u32,
        here: u32,
    },
}

/// What adopting the pins of `iface` would take over must be this interface's, in this
/// namespace: checked before anything is written. The previous agent recorded the namespace
/// it attached in (`owner` in the state directory); the pinned link says which interface
/// index it is attached to (0: its interface is gone, nothing to take over).
fn check_adoption(options: &Options, state: &StateDir) -> Result<(), AgentError> {
    let here = crate::datapath::netns_inode(options.netns.as_deref()).ok();
    if let (Some(here), Some(owner)) = (here, state.read_owner())
        && owner != here
    {
        return Err(AgentError::OtherNamespace {
            iface: options.iface.clone(),
        });
    }
    let link = pin_dir(&options.iface).join(crate::datapath::LINK_PIN);
    if link.exists()
        && let Ok(pinned) = crate::datapath::pinned_link_ifindex(&link)
        && let Ok(index) = crate::datapath::ifindex(&options.iface, options.netns.as_deref())
        && pinned != 0
        && pinned != index
    {
        return Err(AgentError::PinnedLinkElsewhere {
            iface: options.iface.clone(),
            pinned,
            here: index,
        });
    }
    Ok(())
}

/// True when this process sees another /sys/fs/bpf than the host's: what `ip netns exec` does
/// (a private mount namespace with a fresh /sys). Pins made there are invisible to every other
/// shell and vanish with the process: crash safety silently gone. The host's view is taken
/// from the first of the parent (what ran `ip netns exec`) and PID 1 that is in another mount
/// namespace and readable; none: nothing to compare, and the start goes on. A systemd unit's
/// private mounts keep the host's bpffs, and pass.
fn private_bpffs() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let link = |p: &str| std::fs::read_link(p).ok();
    let dev = |p: &str| std::fs::metadata(p).map(|m| m.dev()).ok();
    let Some(mine) = link("/proc/self/ns/mnt") else {
        return false;
    };
    for pid in [std::os::unix::process::parent_id(), 1] {
        match link(&format!("/proc/{pid}/ns/mnt")) {
            Some(theirs) if theirs != mine => {
                return match (
                    dev("/sys/fs/bpf"),
                    dev(&format!("/proc/{pid}/root/sys/fs/bpf")),
                ) {
                    (Some(a), Some(b)) => a != b,
                    // The host has a bpffs directory and this namespace has none.
                    (None, Some(_)) => true,
                    _ => false,
                };
            }
            _ => {}
        }
    }
    false
}

/// The agent's state between cycles.
struct Agent {
    iface: String,
    dp: Datapath,
    /// The largest packet the interface hands XDP (its MTU, or GRO's in skb mode), when
    /// known: every config's burst shares must hold one, reloads included.
    max_packet: Option<u64>,
    /// The tenants' ids in the maps, in config order.
    table: Vec<TenantInfo>,
    /// The previous cycle's counters: rates need two snapshots.
    prev: Option<Snapshot>,
    state: StateDir,
    shared: api::Shared,
    interval: Duration,
    /// The config in force (shared with the API: a reload of 100,000 tenants does not copy
    /// it), and its tenants' profiles (tier priority for violations).
    cfg: Arc<Config>,
    profiles: Vec<Profile>,
    /// Forecasting and allocation; `None` in static mode (the config's rates stay).
    planner: Option<Planner>,
    /// What orders the forecasters' samples (not the wall clock, which NTP may step).
    clock: crate::store::SteadyClock,
    host: collect::HostSampler,
    /// Each tenant's deposit totals at the last cycle, for this cycle's used and expired.
    /// (Config order; emptied by a reload.)
    last_pre: Vec<PrePool>,
    /// Tenants whose split over token types `shaper exchange` changed: bits/s per type.
    exchanged: HashMap<String, [f64; 3]>,
    /// Each tenant's last allocation (config order), so an exchange can be written at once.
    last_alloc: Vec<Option<Allocation>>,
    /// The history store's thread.
    recorder: record::Recorder,
    cycles_recorded: u64,
    /// Reactive overrides entered, by tenant and trigger, since the agent started.
    overrides: BTreeMap<(String, &'static str), u64>,
    /// The same as published, and summed by trigger: both derived from `overrides` when an
    /// override was entered since the last cycle.
    overrides_published: Arc<Vec<(String, &'static str, u64)>>,
    overrides_changed: bool,
    override_totals: BTreeMap<&'static str, u64>,
    /// Alerts raised since the agent started, by kind (see [`api::Health::alerts`]).
    alerts: BTreeMap<&'static str, u64>,
    /// Tenants whose forecasts were above the accuracy alert threshold last cycle.
    inaccurate_tenants: usize,
    /// What the log's once-a-minute summary gathers.
    minute: publish::Minute,
    /// Failures since the agent started, by stage.
    errors: BTreeMap<&'static str, u64>,
    /// How long each stage of the last cycle took, ms.
    stage_ms: BTreeMap<&'static str, f64>,
    fault: Option<Fault>,
    /// Cluster mode: this host's shares of the aggregate tenants.
    cluster: Option<coordinate::Cluster>,
}

/// A fault to inject (the fail-static tests): the agent must keep the datapath enforcing the
/// last rates through each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Every cycle fails.
    CycleError,
    /// The planner panics (as a forecaster would) every cycle.
    PlanPanic,
}

/// The largest packet generic (skb) mode hands XDP: a GRO super-packet.
const GRO_MAX: u64 = 65_535;

/// Runs the agent on `iface` with a validated config until `shutdown` completes; `ready` is
/// called once the program is attached. Everything attached or pinned is removed before
/// returning.
///
/// Fail-static: once attached, only `shutdown`, `shaper detach`, or the interface confirmed
/// gone removes the datapath. A cycle, reload or exchange that fails or panics is logged,
/// counted (`shaper_agent_errors_total{stage}`) and raised as an alert; the datapath keeps the
/// last rates written and the next cycle tries again. The work runs on a blocking thread, so
/// the API keeps answering however long a cycle takes.
pub async fn run(
    options: &Options,
    cfg: &Config,
    ready: impl FnOnce(),
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    crate::datapath::interface_name(&options.iface).map_err(DatapathError::BadInterfaceName)?;
    if private_bpffs() {
        return Err(AgentError::PrivateBpffs);
    }
    if cfg.tenants.len() > options.max_tenants as usize {
        return Err(DatapathError::TooManyTenants {
            tenants: cfg.tenants.len(),
            max: options.max_tenants,
        }
        .into());
    }
    // Bursts against the interface's largest packet (generic mode: GRO's 64 kB), before
    // anything is written; an interface not there yet is reported by attach.
    let max_packet = match options.xdp_mode {
        crate::datapath::AttachMode::Skb => Some(GRO_MAX),
        _ => crate::datapath::mtu(&options.iface, options.netns.as_deref())
            .ok()
            .flatten()
            .map(u64::from),
    };
    if let Some(m) = max_packet {
        crate::datapath::check_bursts(cfg, m)?;
    }
    raise_fd_limit();
    keep_freed_memory();
    let state = StateDir::new(&options.iface);
    let _lock = AgentLock::acquire(state.path(), &options.iface)?;
    let adopting = pin_dir(&options.iface)
        .join(crate::datapath::TENANT_STATE)
        .exists();
    // A fresh run removes what it created if it fails, refused before attaching included; an
    // adopted datapath (and the table it was written with) is left as it was found.
    let mut state_guard = state.remove_on_drop(!adopting);
    // Everything fallible that can be opened before attaching is.
    let store = Store::open(&cfg.history.path, &options.iface).map_err(AgentError::Store)?;
    let cluster_store = match &cfg.cluster {
        Some(c) => Some(crate::cluster::RedisStore::new(c)?),
        None => None,
    };
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(AgentError::Signal)?;
    if adopting {
        check_adoption(options, &state)?;
    }
    let mut dp =
        Datapath::open_pinned(options.max_tenants, options.clock, &pin_dir(&options.iface))?;
    if let Some(logger) = dp.take_logger() {
        tokio::spawn(crate::datapath::drain_logs(logger));
    }
    let table = apply_tenants(&mut dp, cfg, &state, &options.iface)?;
    let mode = dp.attach(&options.iface, options.xdp_mode, options.netns.as_deref())?;
    state_guard.arm();
    if let Ok(ino) = crate::datapath::netns_inode(options.netns.as_deref()) {
        state.write_owner(ino);
    }
    info!(iface = %options.iface, mode, clock = ?options.clock, tenants = table.len(), max_tenants = dp.max_tenants(), "shaper attached");
    ready();

    let (shared, mut requests) = api::Shared::new(&options.iface, mode, cfg);
    let (stop_api, api_stop) = tokio::sync::watch::channel(false);
    let (tcp, unix) = api::serve(
        api::router(shared.clone()),
        cfg.api.listen,
        &cfg.api.socket,
        api_stop,
    )
    .await;
    if let Some(addr) = tcp {
        info!(%addr, socket = ?unix, "API serving /v1/stats, /v1/health, /v1/config, /v1/tenants/NAME, POST /v1/reload and /v1/exchange, /metrics");
        info!("dashboard at http://{addr}/");
        state.write_api_addr(addr);
    }
    if let Some(socket) = &unix {
        state.write_api_socket(socket);
    }
    // The interface's index at attach, when it could be read (a failed read is not a change).
    let ifindex = crate::datapath::ifindex(&options.iface, options.netns.as_deref())
        .ok()
        .filter(|i| *i != 0);
    let mut agent = Box::new(Agent::new(options, cfg, dp, table, state, shared, store));
    agent.max_packet = max_packet;
    agent.cluster = cluster_store.and_then(|s| coordinate::Cluster::start(s, cfg));
    // In cluster mode the cycles fall just before the epochs start (see coordinate.rs).
    let first =
        tokio::time::Instant::now() + coordinate::Cluster::cycle_phase(cfg).unwrap_or_default();
    let mut ticker = tokio::time::interval_at(first, agent.interval);
    let mut shares = agent.cluster.as_ref().map(|c| c.subscribe());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut loaded = load_on_request(
        options.config.clone(),
        agent.shared.config.clone(),
        hangup,
        requests.reload,
    );
    let mut gone = false;
    tokio::pin!(shutdown);
    loop {
        // In this order when several are ready: a stop, a reload (its caller is waiting; it
        // is rate-limited), the cycle, then exchanges and cluster shares, which cannot starve
        // the cycle since it comes back every interval.
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some((file, reply)) = loaded.recv() => {
                let answer = reload::Answer::new(reply);
                agent = on_agent_thread(agent, "reload", move |a| a.reload(file, answer)).await?.0;
            }
            _ = ticker.tick() => {
                if agent.interface_gone(options, ifindex) {
                    gone = true;
                    break;
                }
                agent = on_agent_thread(agent, "cycle", Agent::tick).await?.0;
            }
            Some((body, reply)) = requests.exchange.recv() => {
                let (a, r) = on_agent_thread(agent, "exchange", move |a| a.exchange(&body)).await?;
                agent = a;
                let _ = reply.send(r.unwrap_or_else(|| Err("the exchange panicked".into())));
            }
            Ok(()) = async {
                match shares.as_mut() {
                    Some(s) => s.changed().await,
                    None => std::future::pending().await,
                }
            } => {
                agent = on_agent_thread(agent, "coordinate", Agent::shares_arrived).await?.0;
            }
        }
    }
    let _ = stop_api.send(true);
    if let Some(path) = unix {
        let _ = std::fs::remove_file(path);
    }
    if gone {
        // The kernel detached the program with the interface; remove what is ours.
        let _ = agent.dp.detach();
        agent.dp.unpin();
        return Err(AgentError::InterfaceGone(options.iface.clone()));
    }
    agent.dp.detach()?;
    agent.dp.unpin();
    info!(iface = %options.iface, "shaper detached");
    Ok(())
}

/// Reads, parses and validates the config file on each SIGHUP (`hangup`) and `POST
/// /v1/reload` (`requests`, with where the answer goes) as it comes, on a thread of its own:
/// the reading and checking of 100,000 tenants overlaps the cycle in progress instead of
/// waiting for it. The agent loop applies what arrives between cycles, in order. The file is
/// validated knowing the config in force (`in_force`), so what did not change is not checked
/// again.
fn load_on_request(
    path: std::path::PathBuf,
    in_force: Arc<RwLock<Arc<Config>>>,
    mut hangup: tokio::signal::unix::Signal,
    mut requests: tokio::sync::mpsc::Receiver<api::ReloadRequest>,
) -> tokio::sync::mpsc::Receiver<(reload::Loaded, Option<api::ReloadRequest>)> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        loop {
            let reply = tokio::select! {
                Some(()) = hangup.recv() => None,
                Some(reply) = requests.recv() => Some(reply),
                else => break,
            };
            let path = path.clone();
            let in_force = in_force.read().unwrap_or_else(|e| e.into_inner()).clone();
            // On a thread of its own, at the API's priority: the caller waits for the load,
            // and a blocking-pool thread may keep the lower priority of a cycle it ran
            // (loads of 100,000 tenants took 46-113 ms there, 47 alone).
            let (done, loaded) = tokio::sync::oneshot::channel();
            let spawned = std::thread::Builder::new()
                .name("shaper-load".into())
                .spawn(move || {
                    let _ = done.send(reload::Loaded::read(&path, &in_force));
                });
            let file = match spawned {
                Ok(_) => loaded.await.map_err(|_| "the load panicked".to_string()),
                Err(e) => Err(e.to_string()),
            };
            let file = match file {
                Ok(f) => f,
                Err(e) => {
                    // A SIGHUP has no one to answer: the log says it.
                    error!(cause = %e, "reading the config for a reload failed; nothing changed");
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(format!(
                            "reading the config failed: {e}; nothing changed"
                        )));
                    }
                    continue;
                }
            };
            if tx.send((file, reply)).await.is_err() {
                break;
            }
        }
    });
    rx
}

/// Runs `f` on the agent on a blocking thread (the API's runtime keeps serving meanwhile) and
/// hands the agent back. A panic in `f` is caught: counted as an error of `stage`, `None`
/// returned, the agent (and its datapath, enforcing the last rates) kept.
async fn on_agent_thread<T: Send + 'static>(
    mut agent: Box<Agent>,
    stage: &'static str,
    f: impl FnOnce(&mut Agent) -> T + Send + 'static,
) -> Result<(Box<Agent>, Option<T>), AgentError> {
    let task = tokio::task::spawn_blocking(move || {
        crate::api::yield_to_the_api();
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut agent)));
        let out = match out {
            Ok(v) => Some(v),
            Err(payload) => {
                let why = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                agent.failed(stage, &format!("panicked: {why}"));
                None
            }
        };
        (agent, out)
    });
    // The closure catches its panics, so the task cannot fail but by a runtime shutting down;
    // the agent is then gone with its thread, and Datapath's drop leaves the pins alone while
    // unwinding.
    task.await.map_err(|e| AgentError::Lost(e.to_string()))
}

/// A cycle at 100,000 tenants builds and drops tens of MB of vectors (counter snapshots,
/// per-tenant stats, the API's view). glibc hands blocks that large straight back to the
/// kernel and maps fresh zeroed pages for the next cycle: a page fault every 4 kB, a third of
/// the collect stage. Keeping them in the heap, the next cycle reuses the same pages.
fn keep_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes the allocator's thresholds, before the big allocations.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Raises the soft limit on open files to the hard one: API clients must not be able to take
/// the descriptors a cycle needs.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!(cause = %std::io::Error::last_os_error(), "cannot raise the open-files limit");
            }
        }
    }
}

/// Writes the config's tenants into the maps under ids that carry over from the agent whose
/// pins were adopted, and saves the table beside the pins.
fn apply_tenants(
    dp: &mut Datapath,
    cfg: &Config,
    state: &StateDir,
    iface: &str,
) -> Result<Vec<TenantInfo>, AgentError> {
    let read = dp.adopted().then(|| state.read_table());
    let previous = match &read {
        Some(Ok(t)) => t.clone(),
        _ => Vec::new(),
    };
    if dp.adopted() {
        info!(%iface, tenants = previous.len(), "adopting the pinned maps of a previous agent: buckets and counters carry over");
    }
    let table = crate::datapath::tenant_table(cfg, &previous);
    if let Some(Err(e)) = &read {
        // Without the previous table, an id may have been another tenant's: every tenant
        // starts afresh (full buckets, zero counters) rather than inherit a stranger's.
        tracing::warn!(%iface, cause = %e, "the previous agent's tenant table is missing or unreadable: buckets and counters start afresh");
        let ids: Vec<u32> = table.iter().map(|t| t.id).collect();
        dp.retire(&ids)?;
    }
    // Adopted: the previous agent's table, or, if it is gone, every id is checked.
    let known = (!previous.is_empty() || !dp.adopted()).then_some(previous.as_slice());
    dp.apply_table(cfg, &table, known)?;
    state.write_table(&table)?;
    Ok(table)
}

impl Agent {
    fn new(
        options: &Options,
        cfg: &Config,
        dp: Datapath,
        table: Vec<TenantInfo>,
        state: StateDir,
        shared: api::Shared,
        mut store: Store,
    ) -> Agent {
        let mut planner = predicting(cfg).then(|| Planner::new(cfg, cfg.policy.mode, None));
        // Live samples come after the newest one warmed, even if the wall clock was stepped
        // back since it was stored.
        let mut clock = crate::store::SteadyClock::new();
        if let Some(p) = planner.as_mut() {
            let newest = record::warm_start(p, &store, cfg);
            let next = newest + cfg.forecast.interval_ms as f64 / 1000.0;
            if next > clock.now() {
                clock = crate::store::SteadyClock::starting_at(next);
            }
        }
        record::purge_history(&mut store, cfg);
        Agent {
            recorder: record::Recorder::start(store),
            iface: options.iface.clone(),
            max_packet: None,
            dp,
            table,
            prev: None,
            state,
            shared,
            interval: Duration::from_millis(cfg.forecast.interval_ms),
            profiles: crate::planner::profiles(cfg),
            clock,
            cfg: Arc::new(cfg.clone()),
            planner,
            // Outside a network namespace only: sysfs shows the agent's own.
            host: collect::HostSampler::new(options.netns.is_none().then(|| options.iface.clone())),
            last_pre: Vec::new(),
            exchanged: HashMap::new(),
            last_alloc: Vec::new(),
            cycles_recorded: 1,
            overrides: BTreeMap::new(),
            overrides_published: Arc::default(),
            overrides_changed: false,
            override_totals: BTreeMap::new(),
            alerts: BTreeMap::new(),
            inaccurate_tenants: 0,
            minute: publish::Minute::new(),
            errors: BTreeMap::new(),
            stage_ms: BTreeMap::new(),
            fault: options.fault,
            cluster: None,
        }
    }

    /// One cycle; an error is logged and counted, and the datapath keeps the last rates.
    fn tick(&mut self) {
        if self.fault == Some(Fault::CycleError) {
            self.failed("cycle", "injected fault");
            return;
        }
        if let Err(e) = self.cycle() {
            self.failed("collect", &crate::datapath::error_chain(&e));
        }
    }

    /// One cycle: collect, plan, write, record, publish, each timed. The first cycle (and the
    /// first after a reload) only keeps a snapshot: rates need two.
    fn cycle(&mut self) -> Result<(), AgentError> {
        let started = Instant::now();
        let Some(collected) = self.collect()? else {
            return Ok(());
        };
        let mut t = Instant::now();
        let mut lap = |stage: &'static str, stages: &mut BTreeMap<&'static str, f64>| {
            stages.insert(stage, t.elapsed().as_secs_f64() * 1e3);
            t = Instant::now();
        };
        let mut stages = BTreeMap::new();
        stages.insert("collect", started.elapsed().as_secs_f64() * 1e3);
        self.apply_shares();
        let mut plans = self.plan(&collected);
        self.report_demand(&collected, plans.as_deref());
        lap("plan", &mut stages);
        if let Some(plans) = plans.as_mut() {
            self.write(plans);
        }
        lap("write", &mut stages);
        self.record(&collected.tenants, plans.as_deref());
        lap("record", &mut stages);
        self.stage_ms = stages;
        self.publish(collected, plans.as_deref(), started);
        Ok(())
    }

    /// A stage failed: logged, counted by stage, raised as the `agent_error` alert, shown as
    /// the last error; nothing else changes (the datapath keeps the last rates written).
    fn failed(&mut self, stage: &'static str, why: &str) {
        warn!(stage, cause = %why, "agent stage failed: the datapath keeps the last rates");
        *self.errors.entry(stage).or_default() += 1;
        *self.alerts.entry("agent_error").or_default() += 1;
        let mut h = write_lock(&self.shared.health);
        h.errors = self.errors.clone();
        h.alerts = self.alerts.clone();
        h.last_error = Some(format!("{stage}: {why}"));
    }

    /// True only when the interface is confirmed gone: the pinned link reports no interface
    /// (the kernel detached it), or, without a pinned link, the kernel says there is no such
    /// device or it was replaced. A failed check (no descriptors left, say) is an error, and
    /// shaping goes on.
    fn interface_gone(&mut self, options: &Options, ifindex: Option<u32>) -> bool {
        let seen = match self.dp.attached_ifindex() {
            Some(r) => r.map(|i| i == 0),
            None => crate::datapath::ifindex(&options.iface, options.netns.as_deref())
                .map(|i| i == 0 || ifindex.is_some_and(|was| i != was)),
        };
        match seen {
            Ok(gone) => gone,
            Err(e) => {
                self.failed("interface_check", &e.to_string());
                false
            }
        }
    }
}

/// The allocator writes predicted rates unless the policy is static.
fn predicting(cfg: &Config) -> bool {
    cfg.policy.mode != PolicyMode::Static
}

/// A lock's value even if a thread panicked holding it.
fn write_lock<T>(lock: &Arc<RwLock<T>>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}
