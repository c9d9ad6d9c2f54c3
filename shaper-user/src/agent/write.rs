//! Write: each tenant's allocation into the maps in a few batched syscalls (each tenant still
//! changes as one unit), and the operator's exchanges, which stand over the allocator's mix.
use std::collections::HashMap;

use tracing::info;

use crate::allocate::Allocation;
use crate::api;
use crate::config::Tenant;
use crate::datapath::{DepositWrite, TenantRates, TenantWrite, error_chain};

use super::Agent;
use super::plan::Planned;

impl Agent {
    /// Writes every tenant's plan; on failure the datapath keeps the last rates it had
    /// (fail-static) and the alert says so.
    pub(super) fn write(&mut self, plans: &mut [Planned]) {
        let mut writes = Vec::with_capacity(plans.len());
        for (k, (t, p)) in self.cfg.tenants.iter().zip(plans.iter_mut()).enumerate() {
            let Some(info) = self.table.get(k).filter(|i| *i.name == *t.name) else {
                continue;
            };
            // An aggregate tenant's allocation is its share of the cluster's division (which
            // acted on the forecasts already): at its share, up to its share of the ceiling,
            // the same whether written here or the moment the share arrived.
            let limit = self
                .cluster
                .as_ref()
                .and_then(|c| c.limits.get(k).copied().flatten());
            if let Some((rate, _)) = limit {
                p.alloc = Allocation::base(rate);
            }
            // An operator's exchange stands over the allocator's mix.
            let (shares, factor) = split_of(&self.exchanged, t);
            p.shares = shares.or(p.alloc.mix);
            let mut rates = rates(&p.alloc, factor);
            rates.ceil = limit.map(|l| l.1);
            writes.push(TenantWrite {
                id: info.id,
                tenant: k,
                rates,
                shares: p.shares,
            });
            if self.last_alloc.len() <= k {
                self.last_alloc.resize(k + 1, None);
            }
            self.last_alloc[k] = Some(p.alloc.clone());
        }
        if let Err(e) = self.dp.apply_allocations(&self.cfg, &writes, self.interval) {
            *self.alerts.entry("write_failed").or_default() += 1;
            self.failed("write", &error_chain(&e));
        }
    }

    /// `shaper exchange` / `POST /v1/exchange`: moves rate between a tenant's token types
    /// within `policy.max_exchange_fraction`, writes it at once, and keeps it until the
    /// tenant's rate or mix changes in the config.
    pub(super) fn exchange(
        &mut self,
        req: &api::ExchangeBody,
    ) -> Result<serde_json::Value, String> {
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
            t.ceil.map_or(rate, |c| c.bits_per_sec() as f64).max(rate),
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
    pub(super) fn write_now(&mut self, t: &Tenant) -> Result<(), String> {
        let id = self
            .table
            .iter()
            .find(|i| *i.name == *t.name)
            .map(|i| i.id)
            .ok_or_else(|| format!("tenant '{}' has no id", t.name))?;
        let base = Allocation::base(t.rate.bits_per_sec() as f64 / 8.0);
        let last = self
            .cfg
            .tenants
            .iter()
            .position(|c| c.name == t.name)
            .and_then(|k| self.last_alloc.get(k).cloned().flatten())
            .unwrap_or(base);
        let (shares, factor) = split_of(&self.exchanged, t);
        let a = Allocation {
            deposit: None,
            ..last
        };
        self.dp
            .apply_allocation(
                id,
                (t, &self.cfg),
                &rates(&a, factor),
                self.interval,
                shares,
            )
            .map_err(|e| error_chain(&e))
    }
}

/// What the datapath is given of an allocation, its fill scaled by `factor` (an exchange's).
fn rates(a: &Allocation, factor: f64) -> TenantRates {
    TenantRates {
        fill: a.fill * factor,
        pre_rate: a.pre_rate,
        pre_cap: a.pre_cap,
        deposit: a.deposit.map(|d| DepositWrite {
            bytes: d.bytes,
            ttl_s: d.ttl_s,
        }),
        ceil: None,
    }
}

/// A tenant's split after exchanges, as shares of the whole, and how its total compares with
/// its configured rate (exchange prices can change it); `(None, 1)` if it never exchanged.
fn split_of(exchanged: &HashMap<String, [f64; 3]>, t: &Tenant) -> (Option<[f64; 3]>, f64) {
    match exchanged.get(&t.name) {
        Some(split) => {
            let total: f64 = split.iter().sum();
            let shares = split.map(|v| v / total.max(1.0));
            (Some(shares), total / t.rate.bits_per_sec().max(1) as f64)
        }
        None => (None, 1.0),
    }
}
