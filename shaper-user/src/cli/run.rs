//! `shaper run`: validate, load, write the tenants, pin, attach, then run the agent loop until
//! shutdown; detach and unpin on the way out, also on errors.
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use tracing::{debug, error, info, warn};

use crate::allocate::{Event, Host, Observed, Planner};
use crate::api;
use crate::cli::RunArgs;
use crate::collect::{self, Snapshot};
use crate::config::Config;
use crate::datapath::{
    self, Datapath, DatapathError, FLOWS, GLOBAL_COUNTERS, TENANT_COUNTERS, TENANT_STATE,
};
use crate::lock::AgentLock;
use crate::store::{Row as StoreRow, Store};
use crate::units::human_bits;

/// `shaper run`: runs until `shutdown` completes. Everything attached or pinned is removed
/// before returning.
pub async fn execute(args: &RunArgs, shutdown: impl Future<Output = ()>) -> Result<()> {
    let cfg = Config::load(&args.config)?;
    serve(&cfg, args, || {}, shutdown).await
}

/// The agent on a validated config; `ready` is called once the program is attached.
pub async fn serve(
    cfg: &Config,
    args: &RunArgs,
    ready: impl FnOnce(),
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    if cfg.tenants.len() > args.max_tenants as usize {
        return Err(DatapathError::TooManyTenants {
            tenants: cfg.tenants.len(),
            max: args.max_tenants,
        }
        .into());
    }
    let state = collect::state_dir(&args.iface);
    let _lock = AgentLock::acquire(&state, &args.iface)?;
    let mut dp = Datapath::open_pinned(
        args.max_tenants,
        args.clock,
        &datapath::pin_dir(&args.iface),
    )?;
    // A fresh run removes what it created if it fails; an adopted datapath keeps enforcing.
    let mut state_guard = RemoveOnDrop(state.clone(), !dp.adopted());
    if let Some(logger) = dp.take_logger() {
        tokio::spawn(datapath::drain_logs(logger));
    }
    let previous = if dp.adopted() {
        collect::read_tenant_table(&state).unwrap_or_default()
    } else {
        Vec::new()
    };
    if dp.adopted() {
        info!(iface = %args.iface, tenants = previous.len(), "adopting the pinned maps of a previous agent: buckets and counters carry over");
    }
    let table = collect::tenant_table(cfg, &previous);
    // Adopted: the previous agent's table, or, if it is gone, every id is checked.
    let known = (!previous.is_empty() || !dp.adopted()).then_some(previous.as_slice());
    dp.apply_table(cfg, &table, known)?;
    collect::write_tenant_table(&state, &table)
        .with_context(|| format!("cannot write {}", state.display()))?;
    let mode = dp.attach(&args.iface, args.xdp_mode, args.netns.as_deref())?;
    state_guard.1 = true;
    info!(iface = %args.iface, mode, clock = ?args.clock, tenants = table.len(), max_tenants = dp.max_tenants(), "shaper attached");
    ready();

    let interval = Duration::from_millis(cfg.forecast.interval_ms);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel::<api::ReloadRequest>(4);
    let (exchange_tx, mut exchange_rx) = tokio::sync::mpsc::channel::<api::ExchangeRequest>(4);
    let shared = api::Shared {
        snapshot: Arc::new(RwLock::new(api::Snapshot {
            iface: args.iface.clone(),
            health: api::Health {
                version: env!("CARGO_PKG_VERSION").into(),
                mode: mode.into(),
                ..Default::default()
            },
            ..Default::default()
        })),
        config: Arc::new(RwLock::new(cfg.clone())),
        reload: reload_tx,
        exchange: exchange_tx,
    };
    let (stop_api, api_stop) = tokio::sync::watch::channel(false);
    let (tcp, unix) = api::serve(
        api::router(shared.clone()),
        cfg.api.listen,
        &cfg.api.socket,
        api_stop,
    )
    .await;
    if let Some(addr) = tcp {
        info!(%addr, socket = ?unix, "API serving /v1/stats, /v1/health, /v1/config, POST /v1/reload, /metrics");
        let _ = std::fs::write(state.join("api.addr"), addr.to_string());
    }
    let mut planner = predicting(cfg).then(|| Planner::new(cfg, cfg.policy.mode, None));
    let mut store = Store::open(&cfg.history.path, &args.iface)
        .with_context(|| "change history.path in the config to a writable place".to_string())?;
    if let Some(p) = planner.as_mut() {
        let warmed = warm_start(p, &store, cfg);
        if warmed > 0 {
            info!(samples = warmed, path = %cfg.history.path.display(), "forecasters warm-started from history");
        }
    }
    purge_history(&mut store, cfg);
    let mut agent = AgentLoop {
        dp,
        table,
        prev: None,
        state: state.clone(),
        config: args.config.clone(),
        shared,
        interval,
        cfg: cfg.clone(),
        planner,
        host: HostSampler::new(if args.netns.is_some() {
            None
        } else {
            Some(args.iface.clone())
        }),
        last_pre: std::collections::HashMap::new(),
        exchanged: std::collections::HashMap::new(),
        last_alloc: std::collections::HashMap::new(),
        store,
        cycles_recorded: 1,
        overrides: Default::default(),
        alerts: Default::default(),
    };
    // The interface must stay the one attached to: if it disappears (a veth deleted, a NIC
    // unplugged), the program went with it and the agent says so and exits.
    let ifindex = crate::netns::ifindex(&args.iface, args.netns.as_deref()).unwrap_or(0);
    let mut gone = false;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = hangup.recv() => {
                let _ = agent.reload();
            }
            Some(reply) = reload_rx.recv() => {
                let _ = reply.send(agent.reload());
            }
            Some((body, reply)) = exchange_rx.recv() => {
                let _ = reply.send(agent.exchange(&body));
            }
            _ = ticker.tick() => {
                if crate::netns::ifindex(&args.iface, args.netns.as_deref()).unwrap_or(0) != ifindex {
                    gone = true;
                    break;
                }
                agent.cycle()?;
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
        anyhow::bail!(
            "interface '{}' disappeared: the shaper was detached with it; start `shaper run` again when it is back",
            args.iface
        );
    }
    agent.dp.detach()?;
    agent.dp.unpin();
    info!(iface = %args.iface, "shaper detached");
    Ok(())
}

/// The agent's state between cycles.
struct AgentLoop {
    dp: Datapath,
    table: Vec<collect::TenantInfo>,
    prev: Option<Snapshot>,
    state: std::path::PathBuf,
    config: std::path::PathBuf,
    shared: api::Shared,
    interval: Duration,
    /// The config in force.
    cfg: Config,
    /// Forecasting and allocation; `None` in static mode (the config's rates stay).
    planner: Option<Planner>,
    host: HostSampler,
    /// Each tenant's deposit totals at the last cycle, for this cycle's used and expired.
    last_pre: std::collections::HashMap<String, collect::PrePool>,
    /// Tenants whose split over token types `shaper exchange` changed: bits/s per type.
    exchanged: std::collections::HashMap<String, [f64; 3]>,
    /// Each tenant's last allocation, so an exchange can be written at once.
    last_alloc: std::collections::HashMap<String, crate::allocate::Allocation>,
    /// The history store: one row per tenant per cycle.
    store: Store,
    cycles_recorded: u64,
    /// Reactive overrides entered, by tenant and trigger, since the agent started.
    overrides: std::collections::BTreeMap<(String, &'static str), u64>,
    /// Alerts raised since the agent started, by kind (see [`api::Health::alerts`]).
    alerts: std::collections::BTreeMap<&'static str, u64>,
}

/// A gold or platinum tenant lost more than 0.1% of its in-profile traffic (what it offered
/// up to its rate) in the cycle: the simulator's definition of a violation.
fn violated(s: &collect::TenantStats) -> bool {
    let in_profile = s.offered_bps.min(s.rate_bits as f64);
    matches!(s.tier.as_str(), "gold" | "platinum")
        && s.drop_ratio > 0.0
        && in_profile > 0.0
        && in_profile - s.passed_bps > 0.001 * in_profile
}

/// How many past cycles per tenant a restart feeds its forecaster: two days of one-second
/// cycles at most, enough for the daily season.
const WARM_SAMPLES: usize = 2 * 86_400;

/// Feeds every tenant's forecaster its history; returns how many samples were taken.
fn warm_start(planner: &mut Planner, store: &Store, cfg: &Config) -> usize {
    let per_tenant = (2.0 * cfg.forecast.season_s as f64 * 1000.0
        / cfg.forecast.interval_ms.max(1) as f64)
        .min(WARM_SAMPLES as f64) as usize;
    cfg.tenants
        .iter()
        .map(|t| match store.recent(&t.name, per_tenant.max(1)) {
            Ok(samples) => planner.warm(&t.name, &samples),
            Err(e) => {
                warn!(tenant = %t.name, cause = %e, "cannot read history");
                0
            }
        })
        .sum()
}

/// Deletes history older than `history.retention_days`.
fn purge_history(store: &mut Store, cfg: &Config) {
    let before = unix_now() - f64::from(cfg.history.retention_days) * 86_400.0;
    if let Err(e) = store.purge(before) {
        warn!(cause = %e, "cannot purge old history");
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The allocator writes predicted rates unless the policy is static.
fn predicting(cfg: &Config) -> bool {
    cfg.policy.mode != crate::config::PolicyMode::Static
}

/// Host pressure between two cycles: CPU busy share from /proc/stat, and the interface's
/// receive drops (only outside a network namespace: sysfs shows the agent's own).
struct HostSampler {
    iface: Option<String>,
    cpu: Option<(u64, u64)>,
    drops: Option<u64>,
}

impl HostSampler {
    fn new(iface: Option<String>) -> HostSampler {
        HostSampler {
            iface,
            cpu: None,
            drops: None,
        }
    }

    fn sample(&mut self) -> Host {
        let cpu = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            let v: Vec<u64> = s
                .lines()
                .next()?
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let total: u64 = v.iter().sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            Some((total, total.saturating_sub(idle)))
        });
        let cpu_busy = match (self.cpu, cpu) {
            (Some((t0, b0)), Some((t1, b1))) if t1 > t0 => (b1 - b0) as f64 / (t1 - t0) as f64,
            _ => 0.0,
        };
        self.cpu = cpu;
        let drops = self.iface.as_ref().and_then(|i| {
            std::fs::read_to_string(format!("/sys/class/net/{i}/statistics/rx_dropped"))
                .ok()?
                .trim()
                .parse::<u64>()
                .ok()
        });
        let nic_drops = match (self.drops, drops) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        };
        self.drops = drops;
        Host {
            cpu_busy,
            nic_drops,
        }
    }
}

/// A tenant's split after exchanges, as shares of the whole, and how its total compares with
/// its configured rate (exchange prices can change it); `(None, 1)` if it never exchanged.
fn split_of(
    exchanged: &std::collections::HashMap<String, [f64; 3]>,
    t: &crate::config::Tenant,
) -> (Option<[f64; 3]>, f64) {
    match exchanged.get(&t.name) {
        Some(split) => {
            let total: f64 = split.iter().sum();
            let shares = split.map(|v| v / total.max(1.0));
            (Some(shares), total / t.rate.bits_per_sec().max(1) as f64)
        }
        None => (None, 1.0),
    }
}

impl AgentLoop {
    /// Appends this cycle to the history store (one transaction); purges old rows hourly.
    fn record(&mut self, tenants: &[collect::TenantStats]) {
        let ts = unix_now();
        let rows: Vec<StoreRow> = tenants
            .iter()
            .map(|t| StoreRow {
                ts,
                tenant: t.name.clone(),
                offered: t.offered_bps / 8.0,
                passed: t.passed_bps / 8.0,
                dropped: t.offered_bps / 8.0 * t.drop_ratio,
                forecast: t.forecast.map(|f| (f.mean, f.lo, f.hi)),
                fill: t.allocation.as_ref().map(|a| a.fill_bps / 8.0),
                pre: t.allocation.as_ref().map(|a| a.pre_bps / 8.0),
            })
            .collect();
        if let Err(e) = self.store.append(&rows) {
            warn!(cause = %e, "cannot write history");
        }
        let cycles_per_hour = 3_600_000 / self.cfg.forecast.interval_ms.max(1);
        if self.cycles_recorded.is_multiple_of(cycles_per_hour.max(1)) {
            purge_history(&mut self.store, &self.cfg);
        }
        self.cycles_recorded += 1;
    }

    /// `shaper exchange` / `POST /v1/exchange`: moves rate between a tenant's token types
    /// within `policy.max_exchange_fraction`, writes it at once, and keeps it until the
    /// tenant's rate or mix changes in the config.
    fn exchange(&mut self, req: &api::ExchangeBody) -> Result<serde_json::Value, String> {
        let amount = crate::units::Rate::parse(&req.amount)
            .map_err(|e| format!("amount '{}': {e}", req.amount))?
            .bits_per_sec() as f64;
        let t = self
            .cfg
            .tenants
            .iter()
            .find(|t| t.name == req.tenant)
            .ok_or_else(|| format!("no tenant named '{}'", req.tenant))?
            .clone();
        let rate = t.rate.bits_per_sec() as f64;
        let mix = t
            .mix
            .clone()
            .unwrap_or_else(|| self.cfg.token_types.default_mix());
        let configured = mix.shares().map(|s| s * rate);
        let current = self.exchanged.get(&t.name).copied().unwrap_or(configured);
        let values = self
            .cfg
            .token_types
            .exchange_rates
            .as_ref()
            .map_or([1.0; 3], |m| m.shares());
        let next = crate::allocate::exchange(
            configured,
            current,
            (req.from.index(), req.to.index()),
            amount,
            values,
            self.cfg.policy.max_exchange_fraction * rate,
        )?;
        self.exchanged.insert(t.name.clone(), next);
        self.write_now(&t)?;
        info!(tenant = %t.name, from = ?req.from, to = ?req.to, amount = %req.amount, "exchanged");
        Ok(serde_json::json!({
            "api": api::API_VERSION,
            "exchanged": true,
            "tenant": t.name,
            "split_bps": { "gold": next[0], "silver": next[1], "bronze": next[2] },
        }))
    }

    /// Writes tenant `t` now, with its exchanged split, at its last allocation (or its rate).
    fn write_now(&mut self, t: &crate::config::Tenant) -> Result<(), String> {
        let id = self
            .table
            .iter()
            .find(|i| i.name == t.name)
            .map(|i| i.id)
            .ok_or_else(|| format!("tenant '{}' has no id", t.name))?;
        let base = crate::allocate::Allocation::base(t.rate.bits_per_sec() as f64 / 8.0);
        let last = self.last_alloc.get(&t.name).cloned().unwrap_or(base);
        let (shares, factor) = split_of(&self.exchanged, t);
        let a = crate::allocate::Allocation {
            fill: last.fill * factor,
            deposit: None,
            ..last
        };
        self.dp
            .apply_allocation(id, (t, &self.cfg), &a, self.interval, shares)
            .map_err(|e| crate::datapath::error_chain(&e))
    }

    /// Forecast and allocate from this cycle's stats, write the allocations, and add the
    /// forecast and allocation to the stats the API shows.
    fn plan(&mut self, tenants: &mut [collect::TenantStats]) {
        let Some(planner) = self.planner.as_mut() else {
            return;
        };
        let by_name: std::collections::HashMap<String, usize> = tenants
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        let observed: Vec<Observed> = self
            .cfg
            .tenants
            .iter()
            .map(|t| {
                let Some(s) = by_name.get(&t.name).map(|i| &tenants[*i]) else {
                    return Observed::default();
                };
                let offered = s.offered_bps / 8.0;
                let passed = s.passed_bps / 8.0;
                let rate = t.rate.bits_per_sec() as f64 / 8.0;
                let last = self.last_pre.get(&t.name).copied().unwrap_or(s.pre_pool);
                Observed {
                    offered,
                    dropped: offered * s.drop_ratio,
                    in_profile_dropped: (offered.min(rate) - passed).max(0.0),
                    pre_used: s.pre_pool.used_bytes.saturating_sub(last.used_bytes) as f64,
                    pre_expired: s.pre_pool.expired_bytes.saturating_sub(last.expired_bytes) as f64,
                    by_type: s.offered_by_type_bps.map(|b| b / 8.0),
                }
            })
            .collect();
        for s in tenants.iter() {
            self.last_pre.insert(s.name.clone(), s.pre_pool);
        }
        let ts = unix_now();
        let (allocs, events, demand) = planner.step(ts, &observed, self.host.sample());
        for ev in &events {
            let name = |i: &usize| self.cfg.tenants.get(*i).map_or("?", |t| t.name.as_str());
            match ev {
                Event::Override {
                    tenant,
                    trigger,
                    reason,
                } => {
                    warn!(tenant = name(tenant), %reason, "reactive override: back to base rates");
                    *self
                        .overrides
                        .entry((name(tenant).to_string(), trigger))
                        .or_default() += 1;
                }
                Event::Resume { tenant } => info!(tenant = name(tenant), "prediction resumes"),
                Event::Tuned {
                    tenant,
                    multiplier,
                    margin,
                    why,
                } => info!(
                    tenant = name(tenant),
                    multiplier, margin, why, "allocator tuned"
                ),
            }
        }
        let ids: std::collections::HashMap<&str, u32> =
            self.table.iter().map(|t| (t.name.as_str(), t.id)).collect();
        let mut writes = Vec::with_capacity(allocs.len());
        for (k, ((t, a), d)) in self
            .cfg
            .tenants
            .iter()
            .zip(&allocs)
            .zip(&demand)
            .enumerate()
        {
            let Some(id) = ids.get(t.name.as_str()) else {
                continue;
            };
            // An operator's exchange stands over the allocator's mix.
            let (shares, factor) = split_of(&self.exchanged, t);
            let shares = shares.or(a.mix);
            writes.push(crate::datapath::AllocationWrite {
                id: *id,
                tenant: k,
                alloc: crate::allocate::Allocation {
                    fill: a.fill * factor,
                    ..a.clone()
                },
                shares,
            });
            self.last_alloc.insert(t.name.clone(), a.clone());
            if let Some(i) = by_name.get(&t.name) {
                tenants[*i].forecast = Some(d.next);
                tenants[*i].allocation = Some(collect::AllocationView {
                    fill_bps: a.fill * 8.0,
                    pre_bps: a.pre_rate * 8.0,
                    pre_cap_bytes: a.pre_cap,
                    deposit_bytes: a.deposit.map_or(0.0, |d| d.bytes),
                    override_reason: a.overridden.clone(),
                    mix: shares,
                });
            }
        }
        // All tenants in a few batched syscalls; each still changes as one unit.
        if let Err(e) = self.dp.apply_allocations(&self.cfg, &writes, self.interval) {
            // The datapath keeps the last rates it had: fail-static.
            warn!(cause = %e, "cannot write the allocations");
            *self.alerts.entry("write_failed").or_default() += 1;
        }
    }

    /// Collect: counters, rates over the last cycle; published for the API.
    fn cycle(&mut self) -> Result<()> {
        let started = Instant::now();
        let n = collect::id_span(&self.table);
        let snap = collect::snapshot(
            self.dp.map(TENANT_COUNTERS)?,
            self.dp.map(TENANT_STATE)?,
            self.dp.map(FLOWS)?,
            n,
        )?;
        let classes = collect::read_class_counters(self.dp.map(GLOBAL_COUNTERS)?)?;
        // Rates need two snapshots: the first cycle (and the first after a reload) only keeps one.
        let Some(prev) = self.prev.replace(snap.clone()) else {
            return Ok(());
        };
        let mut tenants = collect::tenant_stats(&self.table, &prev, &snap);
        self.plan(&mut tenants);
        self.record(&tenants);
        for s in &tenants {
            debug!(tenant = %s.name, passed = %human_bits(s.passed_bps), offered = %human_bits(s.offered_bps), drop_ratio = s.drop_ratio, "cycle");
        }
        for s in tenants.iter().filter(|s| violated(s)) {
            warn!(tenant = %s.name, tier = %s.tier, offered = %human_bits(s.offered_bps), passed = %human_bits(s.passed_bps), "in-profile traffic of a protected tier dropped");
            *self.alerts.entry("protected_violation").or_default() += 1;
        }
        let took = started.elapsed();
        if took > self.interval {
            *self.alerts.entry("cycle_overrun").or_default() += 1;
        }
        let mut out = self
            .shared
            .snapshot
            .write()
            .unwrap_or_else(|e| e.into_inner());
        out.tenants = tenants;
        out.classes = collect::class_stats(&classes)
            .into_iter()
            .map(|c| (c.class.to_string(), c.packets, c.bytes))
            .collect();
        out.health.record_cycle(took.as_secs_f64());
        out.health.overrides = self
            .overrides
            .iter()
            .map(|((t, trigger), n)| (t.clone(), *trigger, *n))
            .collect();
        out.health.alerts = self.alerts.clone();
        if took > self.interval {
            out.health.overruns += 1;
            warn!(
                took_ms = took.as_millis() as u64,
                interval_ms = self.interval.as_millis() as u64,
                "agent cycle overran its interval"
            );
        }
        Ok(())
    }

    /// SIGHUP or `POST /v1/reload`: the new table's size, or why nothing changed.
    fn reload(&mut self) -> Result<usize, String> {
        let result = reload(&mut self.dp, &self.config, &self.table);
        let snapshot = self.shared.snapshot.clone();
        let mut snap = snapshot.write().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok((cfg, new)) => {
                info!(tenants = new.len(), "config reloaded");
                self.planner = predicting(&cfg)
                    .then(|| Planner::new(&cfg, cfg.policy.mode, self.planner.take()));
                // Exchanges stand while the tenant's rate and mix stay as they were.
                let old = std::mem::replace(&mut self.cfg, cfg.clone());
                let kept: Vec<crate::config::Tenant> = cfg
                    .tenants
                    .iter()
                    .filter(|t| {
                        old.tenants
                            .iter()
                            .any(|o| o.name == t.name && o.rate == t.rate && o.mix == t.mix)
                    })
                    .cloned()
                    .collect();
                self.exchanged
                    .retain(|name, _| kept.iter().any(|t| &t.name == name));
                self.last_alloc
                    .retain(|name, _| kept.iter().any(|t| &t.name == name));
                let rewrite: Vec<crate::config::Tenant> = kept
                    .into_iter()
                    .filter(|t| self.exchanged.contains_key(&t.name))
                    .collect();
                for t in &rewrite {
                    if let Err(e) = self.write_now(t) {
                        warn!(tenant = %t.name, cause = %e, "cannot rewrite an exchange");
                    }
                }
                if let Err(e) = collect::write_tenant_table(&self.state, &new) {
                    warn!(cause = %e, "cannot write the tenant table");
                }
                self.table = new;
                self.prev = None;
                snap.health.reloads_ok += 1;
                *self
                    .shared
                    .config
                    .write()
                    .unwrap_or_else(|e| e.into_inner()) = cfg;
                Ok(self.table.len())
            }
            Err(e) => {
                let why = crate::datapath::error_chain(e.as_ref());
                error!(cause = %why, "config reload rejected; nothing changed");
                snap.health.reloads_rejected += 1;
                snap.health.last_error = Some(why.clone());
                Err(why)
            }
        }
    }
}

/// Reloads the config file into the running datapath. A config that does not validate, or that
/// does not fit the maps, changes nothing; a good one adds, removes and changes tenants, and
/// the buckets and counters of tenants that stay carry on.
pub fn reload(
    dp: &mut Datapath,
    path: &std::path::Path,
    current: &[collect::TenantInfo],
) -> Result<(Config, Vec<collect::TenantInfo>)> {
    let cfg = Config::load(path)?;
    let table = collect::tenant_table(&cfg, current);
    // Checked before the first write, so a config too big for the maps changes nothing.
    let span = collect::id_span(&table);
    if span > dp.max_tenants() {
        return Err(DatapathError::TooManyTenants {
            tenants: span as usize,
            max: dp.max_tenants(),
        }
        .into());
    }
    dp.apply_table(&cfg, &table, Some(current))?;
    Ok((cfg, table))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn signals() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Cannot install handlers: fall back to Ctrl-C only.
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = int.recv() => info!("SIGINT: stopping"),
        _ = term.recv() => info!("SIGTERM: stopping"),
    }
}

/// Removes the agent's state directory on the way out, when the second field says so.
struct RemoveOnDrop(std::path::PathBuf, bool);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if self.1 {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::violated;
    use crate::collect::TenantStats;

    fn stats(tier: &str, offered: f64, passed: f64) -> TenantStats {
        TenantStats {
            tier: tier.into(),
            rate_bits: 100_000_000,
            offered_bps: offered,
            passed_bps: passed,
            drop_ratio: if offered > 0.0 {
                1.0 - passed / offered
            } else {
                0.0
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_violation_is_in_profile_traffic_of_a_protected_tier_lost() {
        // Gold offered 80 of its 100 and got 79: 1.25% of in-profile lost.
        assert!(violated(&stats("gold", 80e6, 79e6)));
        assert!(violated(&stats("platinum", 300e6, 90e6)));
        // Above its rate and got all of its rate: drops beyond the profile are not a violation.
        assert!(!violated(&stats("gold", 300e6, 100e6)));
        assert!(!violated(&stats("gold", 80e6, 79.99e6)), "within 0.1%");
        assert!(
            !violated(&stats("silver", 80e6, 10e6)),
            "silver is not protected"
        );
        assert!(!violated(&stats("gold", 0.0, 0.0)));
    }
}
