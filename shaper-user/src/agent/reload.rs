//! Reload (SIGHUP or `POST /v1/reload`): a new config applied to the running datapath, all of
//! it or none of it; tenants that stay keep their ids, buckets, counters and forecasters.
use tracing::{error, info, warn};

use crate::config::{Config, Tenant};
use crate::datapath::{Datapath, DatapathError, TenantInfo, error_chain, id_span, tenant_table};
use crate::planner::Planner;

use super::{Agent, AgentError, predicting, write_lock};

impl Agent {
    /// The new table's size, or why nothing changed.
    pub(super) fn reload(&mut self) -> Result<usize, String> {
        match reload(&mut self.dp, &self.config_path, &self.table) {
            Ok((cfg, table)) => {
                info!(tenants = table.len(), "config reloaded");
                self.take_config(cfg, table);
                write_lock(&self.shared.health).reloads_ok += 1;
                Ok(self.table.len())
            }
            Err(e) => {
                let why = error_chain(&e);
                error!(cause = %why, "config reload rejected; nothing changed");
                let mut h = write_lock(&self.shared.health);
                h.reloads_rejected += 1;
                h.last_error = Some(why.clone());
                Err(why)
            }
        }
    }

    /// Makes an applied config the one in force: the planner keeps what it learned of the
    /// tenants that stay, exchanges stand while a tenant's rate and mix stay as they were.
    fn take_config(&mut self, cfg: Config, table: Vec<TenantInfo>) {
        self.planner =
            predicting(&cfg).then(|| Planner::new(&cfg, cfg.policy.mode, self.planner.take()));
        self.profiles = crate::planner::profiles(&cfg);
        let old = std::mem::replace(&mut self.cfg, cfg.clone());
        let kept: Vec<Tenant> = cfg
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
        let rewrite: Vec<&Tenant> = kept
            .iter()
            .filter(|t| self.exchanged.contains_key(&t.name))
            .collect();
        for t in rewrite {
            if let Err(e) = self.write_now(t) {
                warn!(tenant = %t.name, cause = %e, "cannot rewrite an exchange");
            }
        }
        if let Err(e) = self.state.write_table(&table) {
            warn!(cause = %e, "cannot write the tenant table");
        }
        self.table = table;
        self.prev = None;
        *write_lock(&self.shared.config) = cfg;
    }
}

/// Reloads the config file into the running datapath. A config that does not validate, or that
/// does not fit the maps, changes nothing; a good one adds, removes and changes tenants, and
/// the buckets and counters of tenants that stay carry on.
pub fn reload(
    dp: &mut Datapath,
    path: &std::path::Path,
    current: &[TenantInfo],
) -> Result<(Config, Vec<TenantInfo>), AgentError> {
    let cfg = Config::load(path)?;
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
    dp.apply_table(&cfg, &table, Some(current))?;
    Ok((cfg, table))
}
