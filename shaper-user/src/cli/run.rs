//! `shaper run`: validate, load, write the tenants, pin, attach, then run the agent loop until
//! shutdown; detach and unpin on the way out, also on errors.
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use tracing::{debug, info, warn};

use crate::cli::RunArgs;
use crate::collect::{self, Snapshot};
use crate::config::Config;
use crate::datapath::{self, Datapath, DatapathError, TENANT_COUNTERS};
use crate::lock::AgentLock;
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
    dp.apply_table(cfg, &table)?;
    collect::write_tenant_table(&state, &table)
        .with_context(|| format!("cannot write {}", state.display()))?;
    let mode = dp.attach(&args.iface, args.xdp_mode, args.netns.as_deref())?;
    state_guard.1 = true;
    info!(iface = %args.iface, mode, clock = ?args.clock, tenants = table.len(), max_tenants = dp.max_tenants(), "shaper attached");
    ready();

    let interval = Duration::from_millis(cfg.forecast.interval_ms);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let n = collect::id_span(&table);
    let mut prev: Option<Snapshot> = None;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = ticker.tick() => {
                let started = Instant::now();
                let snap = Snapshot { at: started, tenants: collect::read_tenant_counters(dp.map(TENANT_COUNTERS)?, n)? };
                if let Some(p) = &prev {
                    for s in collect::tenant_stats(&table, p, &snap) {
                        debug!(tenant = %s.name, passed = %human_bits(s.passed_bps), offered = %human_bits(s.offered_bps), drop_ratio = s.drop_ratio, "cycle");
                    }
                }
                prev = Some(snap);
                let took = started.elapsed();
                if took > interval {
                    warn!(took_ms = took.as_millis() as u64, interval_ms = interval.as_millis() as u64, "agent cycle overran its interval");
                }
            }
        }
    }
    dp.detach()?;
    dp.unpin();
    info!(iface = %args.iface, "shaper detached");
    Ok(())
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
