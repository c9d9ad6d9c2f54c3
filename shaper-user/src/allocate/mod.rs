//! Allocate: from each tenant's forecast, tier, configured profile and last cycle's usage,
//! the fill rate, pre-allocated pool and deposit it gets next cycle. Pure and deterministic:
//! the live agent, the simulator and the tests call the same [`allocate`].
//!
//! Rates are bytes/s, sizes bytes, times seconds. The guaranteed pool (`capacity x
//! pools.guaranteed`) backs every tenant's base rate first; what is left goes to predicted
//! extra demand, higher tiers first, then in proportion to predicted demand (weighted max-min
//! water-filling). The opportunistic and emergency pools are the datapath's, sized from the
//! config, and not the allocator's to hand out.
use serde::{Deserialize, Serialize};

use crate::forecast::Prediction;

/// What the allocator does with forecasts: `static` keeps the configured rates, `reactive`
/// follows last cycle's use, `predictive` acts on the forecast.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    Static,
    Reactive,
    Predictive,
}

impl PolicyMode {
    /// The mode as the config spells it.
    pub fn name(self) -> &'static str {
        match self {
            PolicyMode::Static => "static",
            PolicyMode::Reactive => "reactive",
            PolicyMode::Predictive => "predictive",
        }
    }
}

/// The link and its pools, as the config gives them.
#[derive(Clone, Copy, Debug)]
pub struct LinkPools {
    pub capacity: f64,
    pub guaranteed: f64,
}

/// What the config says of one tenant.
#[derive(Clone, Copy, Debug)]
pub struct Profile {
    pub rate: f64,
    pub ceil: f64,
    pub burst: f64,
    /// Tier priority, 0 (bronze) to 3 (platinum).
    pub priority: u8,
    /// Tier risk tolerance 0..1: how much of an uncertain prediction to pre-allocate.
    pub risk: f64,
    /// The configured split of the rate over gold, silver and bronze tokens.
    pub mix: [f64; 3],
    /// What a bit/s of each type is worth (`token_types.exchange_rates`, default 1).
    pub worth: [f64; 3],
    /// The datapath lends it idle link capacity up to its ceiling, packet by packet (its tier
    /// borrows, its ceiling is above its rate and the link's opportunistic pool is on).
    pub borrows: bool,
}

/// What the datapath measured of one tenant over the last cycle.
#[derive(Clone, Copy, Debug, Default)]
pub struct Observed {
    /// Offered (passed + marked + dropped), bytes/s.
    pub offered: f64,
    pub dropped: f64,
    /// Dropped bytes/s of the traffic within the tenant's base rate over the cycle.
    pub in_profile_dropped: f64,
    /// Deposit bytes used and expired during the cycle.
    pub pre_used: f64,
    pub pre_expired: f64,
    /// Offered bytes/s per token type (gold, silver, bronze).
    pub by_type: [f64; 3],
}

/// A tenant's forecast: the next cycle, and the largest predicted cycle within the horizon
/// with how many cycles ahead it is.
#[derive(Clone, Copy, Debug, Default)]
pub struct Demand {
    pub next: Prediction,
    pub peak: Prediction,
    pub peak_in: usize,
    /// The forecasts have not been shown worse than the seasonal naive (rolling MASE below 1,
    /// or too few samples to tell). An untrusted tenant's demand is the seasonal naive's
    /// forecast (the better of the two), and it is allocated never below its base rate, with
    /// the reactive safety net, until its own forecasts recover.
    pub trusted: bool,
}

/// Host pressure: a reason for every tenant to return to base rates.
#[derive(Clone, Copy, Debug, Default)]
pub struct Host {
    /// Share of CPU time busy, 0..1.
    pub cpu_busy: f64,
    /// Packets the NIC dropped during the cycle.
    pub nic_drops: u64,
}

/// The policy section of the config, as the allocator uses it.
#[derive(Clone, Copy, Debug)]
pub struct PolicyParams {
    pub mode: PolicyMode,
    pub multiplier: f64,
    pub auto_tune: bool,
    pub in_profile_drop_ratio: f64,
    pub cpu_busy_ratio: f64,
    /// Fills may go below base rates (see `config::PolicyParams::overcommit`).
    pub overcommit: bool,
    /// The datapath gives higher tiers precedence at packet level when the link is really
    /// short (`policy.drop_precedence`): lower tiers need not be cut ahead of a predicted
    /// shortfall, so they keep their base rates.
    pub drop_precedence: bool,
    /// How far a tenant's mix may move from the configured one (`max_exchange_fraction`).
    pub mix_limit: f64,
}

/// A tier whose contract is an SLA: priority 2 and up (gold, platinum).
pub fn protected(priority: u8) -> bool {
    priority >= 2
}

/// An SLA violation: a tenant of a protected tier lost more than 0.1% of its in-profile
/// traffic (what it offered up to its base rate) in a cycle. `offered`, `passed` and `rate`
/// in the same unit (bytes or bytes/s).
pub fn violated(priority: u8, offered: f64, passed: f64, rate: f64) -> bool {
    let in_profile = offered.min(rate);
    protected(priority) && in_profile > 0.0 && (in_profile - passed).max(0.0) > 0.001 * in_profile
}

/// Cycles without a trigger before prediction resumes after a reactive override.
pub const OVERRIDE_HOLD: u32 = 3;
/// Bounds of the tuned multiplier and safety margin.
pub const MULTIPLIER_RANGE: (f64, f64) = (0.1, 2.0);
pub const MARGIN_RANGE: (f64, f64) = (0.0, 1.0);
/// A predicted cycle this much above the fill is a burst: it gets a deposit ahead of it.
pub const BURST_FACTOR: f64 = 1.5;
/// Deposits are made this many cycles (or fewer) before a predicted burst.
pub const DEPOSIT_LEAD: usize = 2;
/// Capacity predicted idle is lent in steps of this fraction of a tenant's headroom.
pub const LEND_STEPS: f64 = 8.0;
/// With overcommit, no tenant's fill goes below this share of its base rate.
pub const FLOOR_SHARE: f64 = 0.1;
/// Weight of a cycle in a tenant's smoothed per-type demand shares.
pub const MIX_WEIGHT: f64 = 0.2;

/// What the allocator carries from one cycle to the next, per tenant.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Tuning {
    pub multiplier: f64,
    pub margin: f64,
    /// The fill rate in force (the reactive policy steps it).
    pub fill: f64,
    /// The pre-allocated pool's fill rate in force.
    pub pre: f64,
    /// The part of the fill lent from capacity predicted idle, up to the ceiling: not a
    /// reservation the forecast asked for, so not one the feedback judges.
    pub lent: f64,
    /// Set while a reactive override holds the tenant at its base rate.
    pub overridden: Option<String>,
    /// Cycles left without a trigger before prediction resumes.
    pub hold: u32,
    /// Cycle of the burst the last deposit was for, so one burst gets one deposit.
    pub deposited_for: Option<u64>,
    /// Smoothed share of the offered bytes per token type: the per-type demand the mix
    /// follows. `None` until the tenant sent anything.
    pub type_share: Option<[f64; 3]>,
}

impl Tuning {
    pub fn new(policy: &PolicyParams, profile: &Profile) -> Tuning {
        Tuning {
            multiplier: policy.multiplier,
            margin: 0.1,
            fill: profile.rate,
            pre: 0.0,
            lent: 0.0,
            overridden: None,
            hold: 0,
            deposited_for: None,
            type_share: None,
        }
    }
}

/// A one-off deposit into the pre-allocated pool.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Deposit {
    pub bytes: f64,
    pub ttl_s: f64,
}

/// Why a tenant has its allocation (`shaper explain`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Decision {
    /// Static mode: the configured rate.
    Configured,
    /// A reactive override holds it at its base rate.
    Overridden,
    /// Reactive mode: towards last cycle's use.
    Reactive,
    /// Predictive mode, but its forecasts are worse than the seasonal naive (rolling MASE >= 1):
    /// allocated from the naive's forecast, never below its base rate, until they recover.
    Untrusted,
    /// Above its rate: toward its forecast, `granted` being the share of what it asked beyond
    /// its rate (fill and pre-allocation) that the guaranteed pool could give, higher tiers
    /// served first; and `lent` bytes/s more from capacity predicted idle, up to its ceiling.
    Raised {
        granted: f64,
        #[serde(default)]
        lent: f64,
    },
    /// The link is predicted short and overcommit cut it below its base rate.
    Lowered,
    /// Its forecast is within its rate: the base rate.
    Held,
}

/// One tenant's allocation for the next cycle.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Allocation {
    /// The tenant's bucket rate (its mix splits it over the token types).
    pub fill: f64,
    /// The pre-allocated pool's fill rate and cap.
    pub pre_rate: f64,
    pub pre_cap: f64,
    pub deposit: Option<Deposit>,
    /// Why the tenant is held at its base rate, if it is.
    pub overridden: Option<String>,
    /// The split over gold, silver and bronze moved toward the tenant's per-type demand
    /// (predictive mode only; `None`: the configured mix). `fill` already includes what the
    /// move is worth at the exchange rates.
    pub mix: Option<[f64; 3]>,
    pub decision: Decision,
}

impl Allocation {
    /// The tenant's configured rate and nothing else: no pool, deposit, or moved mix.
    pub fn base(rate: f64) -> Allocation {
        Allocation {
            fill: rate,
            pre_rate: 0.0,
            pre_cap: 0.0,
            deposit: None,
            overridden: None,
            mix: None,
            decision: Decision::Configured,
        }
    }
}

/// Something the allocator changed on its own, for the log.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Change {
    Override {
        tenant: usize,
        /// What crossed its threshold: `in_profile_drops`, `cpu_busy` or `nic_drops`.
        trigger: &'static str,
        reason: String,
    },
    Resume {
        tenant: usize,
    },
    Tuned {
        tenant: usize,
        multiplier: f64,
        margin: f64,
        why: &'static str,
    },
}

/// Everything one cycle needs. `profiles`, `observed`, `demand` and `state` are indexed alike.
pub struct Inputs<'a> {
    pub policy: &'a PolicyParams,
    pub link: LinkPools,
    pub profiles: &'a [Profile],
    pub observed: &'a [Observed],
    pub demand: &'a [Demand],
    pub host: Host,
    pub interval_s: f64,
    /// The cycle number (for one deposit per predicted burst).
    pub cycle: u64,
}

/// One cycle of allocation. Updates `state` (feedback, overrides) and returns one allocation
/// per tenant, and what changed on its own.
pub fn allocate(inp: &Inputs, state: &mut [Tuning]) -> (Vec<Allocation>, Vec<Change>) {
    let n = inp.profiles.len();
    let mut events = Vec::new();
    let p = inp.policy;
    if p.mode == PolicyMode::Static {
        // The config's rates, nothing more: what every shaper without prediction does.
        let out = inp
            .profiles
            .iter()
            .map(|prof| Allocation::base(prof.rate))
            .collect();
        return (out, events);
    }
    let host_reason = host_reason(inp);
    // What each tenant must keep (its base rate, or with overcommit what it is predicted to
    // need, up to its base rate), and asks for beyond its base rate: fill extra and
    // pre-allocated rate.
    let mut asks: Vec<Ask> = inp.profiles.iter().map(|p| Ask::base(p.rate)).collect();
    for i in 0..n {
        let (prof, obs) = (&inp.profiles[i], &inp.observed[i]);
        let st = &mut state[i];
        if p.mode == PolicyMode::Predictive {
            override_step(i, p, prof, obs, host_reason.as_ref(), st, &mut events);
            if p.auto_tune && st.overridden.is_none() {
                tune(i, prof, obs, st, &mut events);
            }
        }
        follow_type_share(st, obs);
        match p.mode {
            PolicyMode::Static => {}
            // Borrowing carries this tenant's excess while the link has room, and yields
            // before any tier's contract when it has not: a reservation on top would only
            // outrank lower tiers' in-profile traffic on a short link, and take from the
            // lent pool what tenants that cannot borrow need.
            _ if p.drop_precedence && prof.borrows => {}
            PolicyMode::Reactive => asks[i] = reactive_ask(p, prof, obs, st),
            PolicyMode::Predictive if st.overridden.is_none() => {
                asks[i] = if inp.demand[i].trusted {
                    predictive_ask(inp, i, st)
                } else {
                    Ask {
                        floor: prof.rate,
                        ..predictive_ask(inp, i, st)
                    }
                };
            }
            PolicyMode::Predictive => {}
        }
    }
    let floor: Vec<f64> = asks.iter().map(|a| a.floor).collect();
    let want: Vec<(f64, f64, f64)> = asks.iter().map(|a| (a.want.0, a.want.1, a.more)).collect();
    let (floor, grants) = fit(inp, &floor, &want);
    let out = (0..n)
        .map(|i| granted(inp, i, &asks[i], floor[i], grants[i], &mut state[i]))
        .collect();
    (out, events)
}

/// What one tenant asks of the guaranteed pool this cycle.
#[derive(Clone, Copy, Debug)]
struct Ask {
    /// What it must keep.
    floor: f64,
    /// Beyond its base rate: fill extra and pre-allocated rate.
    want: (f64, f64),
    /// Fill extra up to the ceiling: what it gets on top of `want` from what the pool has
    /// left once every tenant's `want` is met.
    more: f64,
    /// A deposit ahead of a predicted burst.
    deposit: Option<Deposit>,
}

impl Ask {
    fn base(rate: f64) -> Ask {
        Ask {
            floor: rate,
            want: (0.0, 0.0),
            more: 0.0,
            deposit: None,
        }
    }
}

/// Host pressure that sends every tenant back to its base rate: CPU above the threshold, or
/// NIC drops.
fn host_reason(inp: &Inputs) -> Option<(&'static str, String)> {
    let p = inp.policy;
    if inp.host.cpu_busy > p.cpu_busy_ratio {
        Some((
            "cpu_busy",
            format!(
                "CPU {:.0}% busy (threshold {:.0}%)",
                inp.host.cpu_busy * 100.0,
                p.cpu_busy_ratio * 100.0
            ),
        ))
    } else if inp.host.nic_drops > 0 {
        Some((
            "nic_drops",
            format!("the NIC dropped {} packets", inp.host.nic_drops),
        ))
    } else {
        None
    }
}

/// Smooths the tenant's share of offered bytes per token type (the demand its mix follows).
fn follow_type_share(st: &mut Tuning, obs: &Observed) {
    let offered_by_type: f64 = obs.by_type.iter().sum();
    if offered_by_type > 0.0 {
        let now = obs.by_type.map(|b| b / offered_by_type);
        st.type_share = Some(match st.type_share {
            Some(old) => std::array::from_fn(|k| old[k] + MIX_WEIGHT * (now[k] - old[k])),
            None => now,
        });
    }
}

/// A classic adaptive policer: up towards what was offered after drops, back down towards
/// what is used when the tenant uses less.
fn reactive_ask(p: &PolicyParams, prof: &Profile, obs: &Observed, st: &Tuning) -> Ask {
    let headroom = (prof.ceil - prof.rate).max(0.0);
    let step = headroom.max(0.5 * prof.rate);
    let lowest = if p.overcommit {
        FLOOR_SHARE * prof.rate
    } else {
        prof.rate
    };
    let fill = if obs.dropped > 0.0 {
        (st.fill + 0.5 * step).min(obs.offered.max(st.fill))
    } else if obs.offered < st.fill {
        (st.fill - 0.25 * step).max(obs.offered * 1.1)
    } else {
        st.fill
    };
    let fill = fill.clamp(lowest, prof.ceil.max(prof.rate));
    Ask {
        floor: fill.min(prof.rate),
        want: ((fill - prof.rate).max(0.0), 0.0),
        more: 0.0,
        deposit: None,
    }
}

/// Tenant `i`'s ask from its forecast: a fill towards the predicted mean, a pre-allocation
/// from the interval's upper bound discounted by how sure the forecast is and the tier's risk,
/// and a deposit ahead of a predicted burst.
fn predictive_ask(inp: &Inputs, i: usize, st: &mut Tuning) -> Ask {
    let (p, prof, dem) = (inp.policy, &inp.profiles[i], &inp.demand[i]);
    let headroom = (prof.ceil - prof.rate).max(0.0);
    let mu = dem.next.mean;
    let floor = if p.overcommit {
        (dem.next.hi * (1.0 + st.margin)).clamp(FLOOR_SHARE * prof.rate, prof.rate)
    } else {
        prof.rate
    };
    let s = if headroom > 0.0 {
        ((mu - prof.rate) / headroom).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let fill = prof.rate + (st.multiplier * s).min(1.0) * headroom;
    // The reactive safety net: traffic lost above the fill last cycle raises it at least as
    // far as the reactive policy would (a burst nobody predicted, or one the forecast is
    // still catching up with), whatever the forecast says.
    let obs = &inp.observed[i];
    let fill = if obs.dropped > 0.0 && obs.offered > st.fill {
        fill.max(prof.rate + reactive_ask(p, prof, obs, st).want.0)
    } else {
        fill
    };
    // The upper bound beyond the fill, discounted by how sure the forecast is
    // (a wide interval: mean far below its upper bound) and the tier's risk.
    let hi = dem.next.hi * (1.0 + st.margin);
    let sure = if hi > 0.0 {
        (mu / hi).clamp(0.0, 1.0)
    } else {
        0.0
    };
    // Never past the ceiling: fill and pre-allocation together stay within it.
    let pre = (prof.risk * sure * (hi - fill))
        .min(prof.ceil - fill)
        .max(0.0);
    Ask {
        floor,
        want: (fill - prof.rate, pre),
        // The multiplier and the tier's risk damp a reservation that takes from others; what
        // the pool has left after every damped ask is predicted idle, and goes up to the
        // ceiling: unused, a fill costs nothing (tokens are not traffic, and the link's idle
        // capacity stays open to borrowers), a burst nobody forecast (a flash crowd at a
        // random time) starts within it, and if the link turns out short this own traffic
        // yields, lowest tier first.
        more: (prof.ceil - fill - pre).max(0.0),
        deposit: burst_deposit(inp, i, fill, st),
    }
}

/// A burst ahead: a deposit of its predicted excess, made before it starts, once per burst.
fn burst_deposit(inp: &Inputs, i: usize, fill: f64, st: &mut Tuning) -> Option<Deposit> {
    let (prof, dem) = (&inp.profiles[i], &inp.demand[i]);
    let burst_cycle = inp.cycle + dem.peak_in as u64;
    let ahead = dem.peak_in >= 1
        && dem.peak_in <= DEPOSIT_LEAD
        && dem.peak.mean > BURST_FACTOR * fill.max(dem.next.mean)
        && st.deposited_for != Some(burst_cycle);
    if !ahead {
        return None;
    }
    let sure = if dem.peak.hi > 0.0 {
        (dem.peak.mean / dem.peak.hi).clamp(0.0, 1.0)
    } else {
        0.0
    };
    // Within the ceiling: the burst's excess, for one cycle.
    let bytes = (prof.risk.max(0.5) * sure.max(0.5) * (dem.peak.hi - fill)).min(prof.ceil - fill)
        * inp.interval_s;
    if bytes > 0.0 {
        st.deposited_for = Some(burst_cycle);
        Some(Deposit {
            bytes,
            ttl_s: (dem.peak_in as f64 + 1.0) * inp.interval_s,
        })
    } else {
        None
    }
}

/// Tenant `i`'s allocation from what the pool granted it: `floor` kept, `grant` (fill extra,
/// pre-allocated rate) on top; its deposit scaled like the rest of the grant, its mix moved
/// toward its per-type demand.
fn granted(
    inp: &Inputs,
    i: usize,
    ask: &Ask,
    floor: f64,
    (fill_extra, pre, lent): (f64, f64, f64),
    st: &mut Tuning,
) -> Allocation {
    let fill = floor + fill_extra + lent;
    st.fill = fill;
    st.pre = pre;
    st.lent = lent;
    // The deposit is part of the guaranteed pool too: scaled like the rest of the grant.
    let scale = {
        let asked = ask.want.0 + ask.want.1;
        if asked > 0.0 {
            ((fill_extra + pre) / asked).clamp(0.0, 1.0)
        } else {
            1.0
        }
    };
    let deposit = ask.deposit.map(|d| Deposit {
        bytes: d.bytes * scale,
        ttl_s: d.ttl_s,
    });
    let deposit = deposit.filter(|d| d.bytes >= 1.0);
    let prof = &inp.profiles[i];
    let decision = match inp.policy.mode {
        PolicyMode::Static => Decision::Configured,
        _ if st.overridden.is_some() => Decision::Overridden,
        PolicyMode::Reactive => Decision::Reactive,
        PolicyMode::Predictive if !inp.demand[i].trusted => Decision::Untrusted,
        PolicyMode::Predictive if fill + pre > prof.rate * (1.0 + 1e-9) => Decision::Raised {
            granted: scale,
            lent,
        },
        PolicyMode::Predictive if fill < prof.rate * (1.0 - 1e-9) => Decision::Lowered,
        PolicyMode::Predictive => Decision::Held,
    };
    // The pool's cap holds a cycle of its fill (at least a burst), and any deposit whole.
    let pre_cap = (pre * inp.interval_s)
        .max(if pre > 0.0 { prof.burst } else { 0.0 })
        .max(deposit.map_or(0.0, |d| d.bytes));
    // The mix follows the per-type demand in predictive mode, value for value.
    let (mix, fill) = match st.type_share {
        Some(share) if inp.policy.mode == PolicyMode::Predictive && st.overridden.is_none() => {
            let m = adjust_mix(prof.mix, share, inp.policy.mix_limit);
            (Some(m), fill * worth_factor(prof, &m))
        }
        _ => (None, fill),
    };
    Allocation {
        fill,
        pre_rate: pre,
        pre_cap,
        deposit,
        overridden: st.overridden.clone(),
        mix,
        decision,
    }
}

/// Reactive override: a trigger holds the tenant at its base rate at once; prediction
/// resumes after [`OVERRIDE_HOLD`] cycles without one.
fn override_step(
    i: usize,
    p: &PolicyParams,
    prof: &Profile,
    obs: &Observed,
    host: Option<&(&'static str, String)>,
    st: &mut Tuning,
    events: &mut Vec<Change>,
) {
    let in_profile = obs.offered.min(prof.rate);
    let reason =
        if in_profile > 0.0 && obs.in_profile_dropped / in_profile > p.in_profile_drop_ratio {
            Some((
                "in_profile_drops",
                format!(
                    "{:.1}% of in-profile traffic dropped (threshold {:.1}%)",
                    obs.in_profile_dropped / in_profile * 100.0,
                    p.in_profile_drop_ratio * 100.0
                ),
            ))
        } else {
            host.cloned()
        };
    match reason {
        Some((trigger, r)) => {
            if st.overridden.is_none() {
                events.push(Change::Override {
                    tenant: i,
                    trigger,
                    reason: r.clone(),
                });
            }
            st.overridden = Some(r);
            st.hold = OVERRIDE_HOLD;
        }
        None if st.overridden.is_some() => {
            st.hold = st.hold.saturating_sub(1);
            if st.hold == 0 {
                st.overridden = None;
                events.push(Change::Resume { tenant: i });
            }
        }
        None => {}
    }
}

/// Why the feedback shrank a tenant's multiplier and margin: what it reserved beyond its base
/// rate went unused.
pub const TUNED_DOWN: &str = "reservation left unused";
/// Why it grew them: the tenant lost traffic inside its contract, above its allocation.
pub const TUNED_UP: &str = "shortfall inside the contract";

/// Feedback both ways, bounded. Shrink: a deposit expired unused, or what was reserved beyond
/// the base rate (fill above it, pre-allocated rate) went mostly unused while nothing inside
/// the contract was lost. Grow: traffic inside the contract (up to the ceiling) was lost while
/// the tenant offered more than its fill and used what it had. A flood above the ceiling is not
/// a shortfall, and losses while a reservation sat unused are the link's, not the forecast's.
fn tune(i: usize, prof: &Profile, obs: &Observed, st: &mut Tuning, events: &mut Vec<Change>) {
    let (m0, g0) = (st.multiplier, st.margin);
    let passed = (obs.offered - obs.dropped).max(0.0);
    let contract = obs.offered.min(prof.ceil.max(prof.rate));
    let shortfall = contract > 0.0 && contract - passed > 0.01 * contract;
    let reserved = (st.fill - st.lent - prof.rate).max(0.0) + st.pre;
    let unused = reserved > 0.0 && (passed - prof.rate).max(0.0) < 0.5 * reserved;
    let expired = obs.pre_expired > obs.pre_used && obs.pre_expired > 0.0;
    let why = if expired || (unused && !shortfall) {
        st.multiplier *= 0.9;
        st.margin *= 0.8;
        TUNED_DOWN
    } else if shortfall && !unused && obs.offered > st.fill {
        st.multiplier *= 1.1;
        st.margin += 0.05;
        TUNED_UP
    } else {
        return;
    };
    st.multiplier = st.multiplier.clamp(MULTIPLIER_RANGE.0, MULTIPLIER_RANGE.1);
    st.margin = st.margin.clamp(MARGIN_RANGE.0, MARGIN_RANGE.1);
    if (st.multiplier, st.margin) != (m0, g0) {
        events.push(Change::Tuned {
            tenant: i,
            multiplier: st.multiplier,
            margin: st.margin,
            why,
        });
    }
}

/// Do no harm: with overcommit, fills go below base rates only when the link itself is
/// predicted short: the upper bound of the tenants' total demand (each within its ceiling)
/// above the link. A link with room passes every tenant's base rate, as static does; cutting
/// a quiet tenant "just in case" dropped its in-profile traffic while the link sat idle
/// whenever its demand came unforecast. The total's bound is the means plus the root of the
/// summed squared spreads: tenants' surprises are not all at their 95% bound at once (adding
/// the bounds predicted a short link on traffic that never filled half of it). Reactive has
/// no forecast, and an untrusted one is not used: their measure is what the tenants offer now.
fn link_predicted_short(inp: &Inputs) -> bool {
    let (mut mean, mut spread) = (0.0, 0.0);
    for (i, p) in inp.profiles.iter().enumerate() {
        let (m, hi) = predicted_use(inp, i, p.ceil);
        mean += m;
        spread += (hi - m).max(0.0).powi(2);
    }
    mean + spread.sqrt() > inp.link.capacity
}

/// Tenant `i`'s predicted use next cycle, up to `cap`: the forecast's mean and upper bound,
/// or, in reactive mode or for an untrusted forecast, last cycle's use for both.
fn predicted_use(inp: &Inputs, i: usize, cap: f64) -> (f64, f64) {
    let d = &inp.demand[i];
    if inp.policy.mode == PolicyMode::Reactive || !d.trusted {
        let used = inp.observed[i].offered.clamp(0.0, cap);
        (used, used)
    } else {
        (d.next.mean.clamp(0.0, cap), d.next.hi.clamp(0.0, cap))
    }
}

/// Fits every tenant's floor (its base rate, or with overcommit its predicted need) and wanted
/// extras into the guaranteed pool: floors first (scaled down only with overcommit, if even
/// they do not fit; without it an oversubscribed config keeps its base rates), then with
/// overcommit the way back up to base rates, then the extras; each stage by tier, highest
/// first, a tier that does not fit whole water-filled by predicted demand. With overcommit the
/// pool is the whole link when it is predicted short, and base rates stand when it is not
/// ([`link_predicted_short`]) or when the datapath's drop precedence takes the shortfall from
/// the lower tiers at packet level, only where and while it happens: cutting their fills ahead
/// left what the top did not use idle while they dropped (1.8x static's in-profile loss on a
/// link short at peak, in the simulator). `want` is each tenant's (fill extra, pre rate,
/// fill extra beyond both up to its ceiling): the third is served only from what is left
/// once every tenant has the first two. Returns the floors and (fill extra, pre rate, fill
/// lent up to the ceiling) per tenant.
fn fit(inp: &Inputs, floor: &[f64], want: &[(f64, f64, f64)]) -> (Vec<f64>, Vec<(f64, f64, f64)>) {
    let mut pool = inp.link.capacity * inp.link.guaranteed;
    let rates: Vec<f64>;
    let floor = if !inp.policy.overcommit {
        floor
    } else if !inp.policy.drop_precedence && link_predicted_short(inp) {
        // Short: the predicted needs are fitted into the link, not into its guaranteed share,
        // so the lowest tiers are cut by the shortfall, not by the whole non-guaranteed part
        // of the link (which then sat idle while they dropped).
        pool = pool.max(inp.link.capacity);
        floor
    } else {
        // Room: base rates stand, even where they oversubscribe the pool, as under static.
        rates = inp
            .profiles
            .iter()
            .zip(floor)
            .map(|(p, f)| f.max(p.rate))
            .collect();
        pool = pool.max(rates.iter().sum());
        &rates[..]
    };
    let base: f64 = floor.iter().sum();
    let floor: Vec<f64> = if base > pool && inp.policy.overcommit && base > 0.0 {
        floor.iter().map(|f| f * pool / base).collect()
    } else {
        floor.to_vec()
    };
    let mut left = (pool - floor.iter().sum::<f64>()).max(0.0);
    // Overcommit cuts below base rates only as far as the pool needs: what is left restores
    // base rates first (the contract), higher tiers first.
    let mut floor = floor;
    let lent = lendable(inp, &floor);
    if inp.policy.overcommit {
        let short: Vec<f64> = inp
            .profiles
            .iter()
            .zip(&floor)
            .map(|(p, f)| (p.rate - f).max(0.0))
            .collect();
        let back = by_tier(inp, &short, left);
        for (f, b) in floor.iter_mut().zip(&back) {
            *f += b;
        }
        left = (left - back.iter().sum::<f64>()).max(0.0);
    }
    let budget = left.max(lent);
    let asked: Vec<f64> = want.iter().map(|w| w.0 + w.1).collect();
    let given = by_tier(inp, &asked, budget);
    let more: Vec<f64> = want.iter().map(|w| w.2).collect();
    // Lent in eighths of each tenant's headroom, rounded down: the room predicted idle moves
    // a little with every forecast, and a fill that followed it would be rewritten nearly
    // every cycle (17 rate changes per tenant-hour on the suite's tightest links).
    let more: Vec<f64> = by_tier(inp, &more, budget - given.iter().sum::<f64>())
        .into_iter()
        .zip(inp.profiles)
        .map(|(m, p)| {
            let step = (p.ceil - p.rate).max(0.0) / LEND_STEPS;
            if step > 0.0 {
                (m / step + 1e-9).floor() * step
            } else {
                0.0
            }
        })
        .collect();
    let grant = want
        .iter()
        .zip(asked.iter().zip(&given))
        .zip(&more)
        .map(|((w, (a, g)), m)| {
            // Split the grant between fill and pre in the proportion asked; the part up to the
            // ceiling is fill (own tokens, which yield on a short link, lowest tier first;
            // pre-allocated ones stop there for every tier).
            let f = if *a > 0.0 { w.0 / a } else { 0.0 };
            (g * f, g * (1.0 - f), *m)
        })
        .collect();
    (floor, grant)
}

/// What the guaranteed pool can lend to extras beyond what the floors are predicted to use:
/// base rates oversubscribe the pool on any overbooked link (the example's eight tenants of
/// 120 Mbit/s on 800 Mbit/s of it), so extras backed only by unclaimed rates were never
/// granted, and prediction changed nothing. A base rate predicted idle backs another tenant's
/// extra instead (statistical multiplexing, as the link does anyway): the pool less the
/// floors' predicted mean use. Only with drop precedence: when a forecast is wrong and the
/// link runs short, the datapath takes the shortfall from the lower tiers at packet level, so
/// a lent rate never costs a higher tier its contract, and a margin here would only withhold
/// capacity (with the 95% bound of the total instead of the mean, bronze's flash crowds on the
/// suite's tightest link lost 5,172 MB at onsets instead of 1,044, reactive 12,075). Reactive
/// and untrusted tenants count at last cycle's use, their only measure.
fn lendable(inp: &Inputs, floor: &[f64]) -> f64 {
    if !inp.policy.drop_precedence || inp.policy.mode == PolicyMode::Static {
        return 0.0;
    }
    let used: f64 = floor
        .iter()
        .enumerate()
        .map(|(i, f)| predicted_use(inp, i, *f).0)
        .sum();
    (inp.link.capacity * inp.link.guaranteed - used).max(0.0)
}

/// Shares of `budget` for what each tenant `asked`: whole tiers while they fit, highest
/// first; the first tier that does not fit is water-filled, weighted by predicted demand.
fn by_tier(inp: &Inputs, asked: &[f64], budget: f64) -> Vec<f64> {
    let n = asked.len();
    let mut left = budget;
    let mut out = vec![0.0; n];
    for prio in (0..=3u8).rev() {
        let members: Vec<usize> = (0..n)
            .filter(|i| inp.profiles[*i].priority == prio)
            .collect();
        let tier_asked: Vec<f64> = members.iter().map(|i| asked[*i]).collect();
        let total: f64 = tier_asked.iter().sum();
        if total <= 0.0 {
            continue;
        }
        let given: Vec<f64> = if total <= left {
            tier_asked
        } else {
            let weights: Vec<f64> = members
                .iter()
                .map(|i| inp.demand[*i].next.mean.max(1.0))
                .collect();
            water_fill(&tier_asked, &weights, left)
        };
        for (i, g) in members.iter().zip(&given) {
            out[*i] = *g;
        }
        left = (left - given.iter().sum::<f64>()).max(0.0);
    }
    out
}

/// Weighted max-min fair shares of `budget`: each gets `min(asked, level x weight)`, the level
/// chosen so the shares add up to the budget (or everyone gets what they asked).
pub fn water_fill(asked: &[f64], weights: &[f64], budget: f64) -> Vec<f64> {
    let mut order: Vec<usize> = (0..asked.len()).collect();
    // Satisfied first: smallest asked-to-weight ratio.
    order.sort_by(|a, b| (asked[*a] / weights[*a]).total_cmp(&(asked[*b] / weights[*b])));
    let mut out = vec![0.0; asked.len()];
    let mut left = budget.max(0.0);
    let mut wsum: f64 = weights.iter().sum();
    for i in order {
        let level = if wsum > 0.0 { left / wsum } else { 0.0 };
        let share = asked[i].min(level * weights[i]);
        out[i] = share;
        left -= share;
        wsum -= weights[i];
    }
    out
}

pub mod aggregate;
mod mix;

pub use self::mix::{adjust_mix, exchange, worth_factor};

#[cfg(test)]
mod tests;
