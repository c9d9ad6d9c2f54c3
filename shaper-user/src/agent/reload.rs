//! Reload (SIGHUP or `POST /v1/reload`): a new config applied to the running datapath, all of
//! it or none of it; tenants that stay keep their ids, buckets, counters and forecasters.
use std::collections::HashMap;
use std::sync::Arc;

use tracing::{error, info, warn};

use crate::config::{Config, Tenant};
use crate::datapath::{Datapath, DatapathError, TenantInfo, error_chain, id_span, tenant_table};
use crate::planner::Planner;

use super::{Agent, AgentError, predicting, write_lock};

/// A config file read, parsed and validated off the agent's thread (while a cycle may be
/// running), with how long that took; the agent applies it between cycles.
pub(super) struct Loaded {
    pub config: Result<Config, crate::config::ConfigError>,
    pub load: std::time::Duration,
}

impl Loaded {
    /// Reads and validates the file at `path`, knowing the config in force: the part of a
    /// reload that needs neither the agent nor the datapath.
    pub(super) fn read(path: &std::path::Path, in_force: &Config) -> Loaded {
        let started = std::time::Instant::now();
        let config = Config::load_since(path, Some(in_force));
        Loaded {
            config,
            load: started.elapsed(),
        }
    }
}

/// Where a reload's answer goes (`POST /v1/reload`; a SIGHUP has none): sent as soon as the
/// new config is live, before the agent's own bookkeeping; a reload that panics before then
/// says so.
pub(super) struct Answer(Option<crate::api::ReloadRequest>);

impl Answer {
    pub(super) fn new(reply: Option<crate::api::ReloadRequest>) -> Answer {
        Answer(reply)
    }

    fn send(&mut self, r: Result<usize, String>) {
        if let Some(reply) = self.0.take() {
            let _ = reply.send(r);
        }
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.send(Err("the reload panicked; nothing changed".into()));
        }
    }
}

impl Agent {
    /// Applies a loaded config, or says why nothing changed (to the log, `/v1/health` and
    /// `answer`).
    pub(super) fn reload(&mut self, loaded: Loaded, mut answer: Answer) {
        let started = std::time::Instant::now();
        let load_ms = (loaded.load.as_secs_f64() * 1e3).round();
        let applied = loaded
            .config
            .map_err(AgentError::from)
            .and_then(|cfg| apply(&mut self.dp, cfg, (&self.cfg, &self.table), self.max_packet));
        match applied {
            Ok((cfg, table)) => {
                let applied = started.elapsed();
                let tenants = table.len();
                let answered = self.take_config(cfg, table, &mut answer, started);
                let ms = |d: std::time::Duration| (d.as_secs_f64() * 1e3).round();
                info!(
                    tenants,
                    load_ms,
                    applied_ms = ms(applied),
                    answered_ms = ms(answered),
                    total_ms = ms(started.elapsed()),
                    "config reloaded"
                );
            }
            Err(e) => {
                let why = error_chain(&e);
                if matches!(e, AgentError::ReloadHalfApplied { .. }) {
                    error!(cause = %why, "config reload failed part way and could not be undone");
                } else {
                    error!(cause = %why, "config reload rejected; nothing changed");
                }
                {
                    let mut h = write_lock(&self.shared.health);
                    h.reloads_rejected += 1;
                    h.last_error = Some(why.clone());
                }
                answer.send(Err(why));
            }
        }
    }

    /// Makes an applied config the one in force. Once the datapath enforces it and the API
    /// shows it, `answer` hears so (how long after `started` is returned); then the planner
    /// keeps what it learned of the tenants that stay, and exchanges stand while a tenant's
    /// rate and mix stay as they were. At 100,000 tenants the planner's part is most of the
    /// work and no part of what the caller waits for: it is done before the next cycle.
    fn take_config(
        &mut self,
        cfg: Config,
        table: Vec<TenantInfo>,
        answer: &mut Answer,
        started: std::time::Instant,
    ) -> std::time::Duration {
        let cfg = Arc::new(cfg);
        let old = std::mem::replace(&mut self.cfg, cfg.clone());
        // Where each tenant of the new config was in the old one, if its rate and mix stayed:
        // by index where the tenants are the same in the same order (most reloads), by name
        // otherwise.
        let same_order = old.tenants.len() == cfg.tenants.len()
            && old
                .tenants
                .iter()
                .zip(&cfg.tenants)
                .all(|(a, b)| a.name == b.name);
        let was: HashMap<&str, usize> = if same_order {
            HashMap::new()
        } else {
            old.tenants
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name.as_str(), i))
                .collect()
        };
        let kept: Vec<Option<usize>> = cfg
            .tenants
            .iter()
            .enumerate()
            .map(|(k, t)| {
                let at = if same_order {
                    Some(k)
                } else {
                    was.get(t.name.as_str()).copied()
                };
                at.filter(|&i| old.tenants[i].rate == t.rate && old.tenants[i].mix == t.mix)
            })
            .collect();
        drop(was);
        // In the new config's order before an exchange is rewritten (it starts from its
        // tenant's last allocation). Each old index is kept at most once (names are unique),
        // so each moves.
        let mut old_alloc = std::mem::take(&mut self.last_alloc);
        self.last_alloc = kept
            .iter()
            .map(|k| k.and_then(|i| old_alloc.get_mut(i).and_then(Option::take)))
            .collect();
        if !self.exchanged.is_empty() {
            let kept_names: std::collections::HashSet<&str> = cfg
                .tenants
                .iter()
                .zip(&kept)
                .filter(|(_, k)| k.is_some())
                .map(|(t, _)| t.name.as_str())
                .collect();
            self.exchanged
                .retain(|name, _| kept_names.contains(name.as_str()));
        }
        let rewrite: Vec<Tenant> = cfg
            .tenants
            .iter()
            .filter(|t| self.exchanged.contains_key(&t.name))
            .cloned()
            .collect();
        for t in &rewrite {
            if let Err(e) = self.write_now(t) {
                warn!(tenant = %t.name, cause = %e, "cannot rewrite an exchange");
            }
        }
        // Live: the datapath holds the new config, and so does the API's view of it.
        *write_lock(&self.shared.config) = cfg.clone();
        write_lock(&self.shared.health).reloads_ok += 1;
        answer.send(Ok(table.len()));
        let answered = started.elapsed();

        self.planner =
            predicting(&cfg).then(|| Planner::new(&cfg, cfg.policy.mode, self.planner.take()));
        // The planner made them from this config already (100,000 tenants' mixes and tiers
        // looked up once, not twice).
        self.profiles = match &self.planner {
            Some(p) => p.profiles.clone(),
            None => crate::planner::profiles(&cfg),
        };
        if let Some(c) = self.cluster.as_mut() {
            c.reconfigure(&cfg);
        }
        if let Err(e) = self.state.write_table(&table) {
            warn!(cause = %e, "cannot write the tenant table");
        }
        self.table = table;
        self.prev = None;
        self.last_pre.clear();
        // The config replaced is freed on a thread of its own: 100,000 tenants' strings are
        // 20 ms of frees no one need wait for. Where no thread can be made, the refused
        // closure, and the config with it, is dropped here.
        let _ = std::thread::Builder::new()
            .name("shaper-free".into())
            .spawn(move || drop((old, old_alloc)));
        answered
    }
}

/// Reloads the config file into the running datapath. A config that does not validate, or that
/// does not fit the maps, changes nothing; a good one adds, removes and changes tenants, and
/// the buckets and counters of tenants that stay carry on. Writes that fail part way are undone
/// (the config in force written back) before the error is returned. With `max_packet` (the largest
/// packet the interface hands XDP), burst shares that could never pass one are refused too.
pub fn reload(
    dp: &mut Datapath,
    path: &std::path::Path,
    current: (&Config, &[TenantInfo]),
    max_packet: Option<u64>,
) -> Result<(Config, Vec<TenantInfo>), AgentError> {
    apply(
        dp,
        Config::load_since(path, Some(current.0))?,
        current,
        max_packet,
    )
}

/// [`reload`] of a config already loaded and validated.
fn apply(
    dp: &mut Datapath,
    cfg: Config,
    (current_cfg, current): (&Config, &[TenantInfo]),
    max_packet: Option<u64>,
) -> Result<(Config, Vec<TenantInfo>), AgentError> {
    let started = std::time::Instant::now();
    if cfg.cluster != current_cfg.cluster {
        return Err(crate::config::ConfigError::Invalid {
            path: "cluster".into(),
            message: "changes only with a restart of `shaper run` (the store, the host's id and the epochs are fixed while it runs); nothing changed".into(),
        }
        .into());
    }
    if let Some(m) = max_packet {
        crate::datapath::check_bursts(&cfg, m)?;
    }
    let table = tenant_table(&cfg, current);
    // Checked before the first write, so a config too big for the maps changes nothing.
    let span = id_span(&table);
    if span > dp.max_tenants() {
        return Err(DatapathError::TooManyTenants {
            tenants: span as usize,
            max: dp.max_tenants(),
        }
        .into());
    }
    if let Err(e) = dp.apply_changes(&cfg, &table, (current_cfg, current)) {
        // Some of the new config may be live: the same diff the other way round writes back
        // every tenant, prefix and global setting it could have touched.
        return Err(
            match dp.apply_changes(current_cfg, current, (&cfg, &table)) {
                Ok(()) => AgentError::ReloadRolledBack(Box::new(e)),
                Err(restore) => AgentError::ReloadHalfApplied {
                    error: error_chain(&e),
                    restore: Box::new(restore),
                },
            },
        );
    }
    tracing::debug!(
        write_ms = (started.elapsed().as_secs_f64() * 1e3).round(),
        "reload applied"
    );
    Ok((cfg, table))
}
