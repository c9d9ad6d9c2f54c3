use proptest::prelude::*;

use super::*;

const MB: f64 = 1e6;

fn policy(mode: PolicyMode) -> PolicyParams {
    PolicyParams {
        mode,
        multiplier: 0.5,
        auto_tune: true,
        in_profile_drop_ratio: 0.01,
        cpu_busy_ratio: 0.95,
        overcommit: false,
        drop_precedence: false,
        mix_limit: 0.5,
    }
}

fn profile(rate: f64, ceil: f64, priority: u8) -> Profile {
    Profile {
        rate,
        ceil,
        burst: 100_000.0,
        priority,
        risk: 0.8,
        mix: [0.2, 0.5, 0.3],
        worth: [1.0; 3],
        borrows: false,
    }
}

fn demand(mean: f64, lo: f64, hi: f64) -> Demand {
    let p = Prediction { mean, lo, hi };
    Demand {
        next: p,
        peak: p,
        peak_in: 1,
        trusted: true,
    }
}

struct Case {
    policy: PolicyParams,
    link: LinkPools,
    profiles: Vec<Profile>,
    observed: Vec<Observed>,
    demand: Vec<Demand>,
    host: Host,
}

impl Case {
    fn new(mode: PolicyMode, profiles: Vec<Profile>, demand: Vec<Demand>) -> Case {
        let n = profiles.len();
        Case {
            policy: policy(mode),
            link: LinkPools {
                capacity: 125.0 * MB,
                guaranteed: 0.8,
            },
            profiles,
            observed: vec![Observed::default(); n],
            demand,
            host: Host::default(),
        }
    }

    fn state(&self) -> Vec<Tuning> {
        self.profiles
            .iter()
            .map(|p| Tuning::new(&self.policy, p))
            .collect()
    }

    fn inputs(&self, cycle: u64) -> Inputs<'_> {
        Inputs {
            policy: &self.policy,
            link: self.link,
            profiles: &self.profiles,
            observed: &self.observed,
            demand: &self.demand,
            host: self.host,
            interval_s: 1.0,
            cycle,
        }
    }

    fn run(&self, state: &mut [Tuning], cycle: u64) -> (Vec<Allocation>, Vec<Change>) {
        allocate(&self.inputs(cycle), state)
    }
}

#[test]
fn static_mode_is_the_config() {
    let c = Case::new(
        PolicyMode::Static,
        vec![profile(10.0 * MB, 20.0 * MB, 2)],
        vec![demand(50.0 * MB, 40.0 * MB, 60.0 * MB)],
    );
    let (a, ev) = c.run(&mut c.state(), 0);
    assert_eq!(a[0].fill, 10.0 * MB);
    assert_eq!((a[0].pre_rate, a[0].deposit), (0.0, None));
    assert!(ev.is_empty());
}

/// Predicted demand between rate and ceil asks a fill raised by the multiplier times the
/// forecast's share of the headroom; a wider interval around the same mean asks a smaller
/// pre-allocation per byte of doubt. Those are the damped asks, served first; a pool with room
/// left after them gives the rest of the way to the ceiling as fill.
#[test]
fn fill_follows_the_forecast_and_a_wide_interval_pre_allocates_less() {
    let ask = |lo: f64, hi: f64| {
        let c = Case::new(
            PolicyMode::Predictive,
            vec![profile(10.0 * MB, 20.0 * MB, 2)],
            vec![demand(15.0 * MB, lo * MB, hi * MB)],
        );
        let inp = c.inputs(0);
        let mut st = c.state();
        let a = predictive_ask(&inp, 0, &mut st[0]);
        let (alloc, _) = c.run(&mut c.state(), 0);
        (a, alloc[0].clone())
    };
    let (narrow, a) = ask(14.0, 16.0);
    // s = (15 - 10) / 10 = 0.5; fill = 10 + 0.5 x 0.5 x 10.
    assert!((narrow.want.0 - 2.5 * MB).abs() < 1.0, "{:?}", narrow.want);
    let (wide, b) = ask(5.0, 40.0);
    assert_eq!(wide.want.0, narrow.want.0, "same mean, same fill");
    assert!(narrow.want.1 > 0.0);
    // Narrow: 0.8 x (15/17.6) x (17.6 - 12.5) = 3.48 MB/s; wide: 0.8 x (15/44) x 31.5 = 8.6.
    // The upper bound is far higher, but so is the doubt: per byte of gap, less is asked.
    let per_gap = |w: (f64, f64), hi: f64| w.1 / (hi * 1.1 - (10.0 * MB + w.0));
    assert!(per_gap(wide.want, 40.0 * MB) < per_gap(narrow.want, 16.0 * MB) / 2.0);
    // The pool (100 MB/s, one tenant) has room: fill and pre reach the ceiling, to within
    // the step it is lent in (an eighth of the 10 MB/s headroom), never past it; the
    // pre-allocated part is the damped one.
    for x in [&a, &b] {
        let top = x.fill + x.pre_rate;
        assert!(
            top <= 20.0 * MB + 1.0 && top > 20.0 * MB - 1.25 * MB,
            "{x:?}"
        );
    }
    assert!((a.pre_rate - narrow.want.1).abs() < 1.0, "{a:?} {narrow:?}");
    assert!((b.pre_rate - wide.want.1).abs() < 1.0, "{b:?} {wide:?}");
}

#[test]
fn a_predicted_burst_gets_one_deposit_before_it_starts() {
    let mut c = Case::new(
        PolicyMode::Predictive,
        vec![profile(10.0 * MB, 20.0 * MB, 2)],
        vec![Demand {
            next: Prediction {
                mean: 5.0 * MB,
                lo: 4.0 * MB,
                hi: 6.0 * MB,
            },
            peak: Prediction {
                mean: 30.0 * MB,
                lo: 25.0 * MB,
                hi: 35.0 * MB,
            },
            peak_in: 3,
            trusted: true,
        }],
    );
    let mut st = c.state();
    let (a, _) = c.run(&mut st, 10);
    assert_eq!(a[0].deposit, None, "three cycles ahead: not yet");
    c.demand[0].peak_in = 2;
    let (a, _) = c.run(&mut st, 11);
    let d = a[0].deposit.expect("two cycles ahead: deposit");
    // The predicted excess (0.8 x 30/35 x (35 - 10) = 17 MB/s) capped at what the ceiling
    // leaves above the fill (20 - 10), for one cycle.
    assert!((d.bytes - 10.0 * MB).abs() < 1.0 && d.ttl_s >= 2.0, "{d:?}");
    assert!(a[0].pre_cap >= d.bytes, "the pool's cap holds the deposit");
    c.demand[0].peak_in = 1;
    let (a, _) = c.run(&mut st, 12);
    assert_eq!(
        a[0].deposit, None,
        "the same burst (cycle 13) gets one deposit"
    );
}

#[test]
fn in_profile_drops_override_to_base_rates_until_three_clean_cycles() {
    let mut c = Case::new(
        PolicyMode::Predictive,
        vec![
            profile(10.0 * MB, 20.0 * MB, 2),
            profile(10.0 * MB, 20.0 * MB, 2),
        ],
        vec![demand(18.0 * MB, 17.0 * MB, 19.0 * MB); 2],
    );
    let mut st = c.state();
    c.observed[0] = Observed {
        offered: 12.0 * MB,
        dropped: 1.0 * MB,
        in_profile_dropped: 0.5 * MB,
        ..Observed::default()
    };
    let (a, ev) = c.run(&mut st, 0);
    assert_eq!((a[0].fill, a[0].pre_rate), (10.0 * MB, 0.0));
    assert!(
        a[0].overridden
            .as_deref()
            .unwrap_or("")
            .contains("in-profile")
    );
    assert!(a[1].fill > 10.0 * MB, "the other tenant is not affected");
    assert!(
        matches!(ev[0], Change::Override { tenant: 0, .. }),
        "{ev:?}"
    );
    c.observed[0] = Observed::default();
    for cycle in 1..3 {
        let (a, _) = c.run(&mut st, cycle);
        assert_eq!(a[0].fill, 10.0 * MB, "hysteresis, cycle {cycle}");
    }
    let (a, ev) = c.run(&mut st, 3);
    assert!(a[0].fill > 10.0 * MB);
    // (Tenant 1's unused reservation is tuned down meanwhile: offered nothing.)
    let of_0: Vec<&Change> = ev
        .iter()
        .filter(|e| {
            matches!(
                e,
                Change::Resume { tenant: 0 } | Change::Override { tenant: 0, .. }
            )
        })
        .collect();
    assert_eq!(of_0, vec![&Change::Resume { tenant: 0 }]);
    // Host pressure overrides everyone.
    c.host.cpu_busy = 0.99;
    let (a, _) = c.run(&mut st, 4);
    assert!(
        a.iter()
            .all(|a| a.fill == 10.0 * MB && a.overridden.is_some())
    );
}

#[test]
fn feedback_shrinks_on_expired_pre_allocation_and_grows_on_shortfall_within_bounds() {
    let mut c = Case::new(
        PolicyMode::Predictive,
        vec![profile(10.0 * MB, 20.0 * MB, 2)],
        vec![demand(15.0 * MB, 14.0 * MB, 16.0 * MB)],
    );
    let mut st = c.state();
    c.observed[0].pre_expired = 1.0 * MB;
    for cycle in 0..100 {
        c.run(&mut st, cycle);
    }
    assert_eq!(st[0].multiplier, MULTIPLIER_RANGE.0);
    // A flood far above the ceiling, the ceiling's worth passed: no shortfall inside the
    // contract, so nothing grows.
    c.observed[0] = Observed {
        offered: 40.0 * MB,
        dropped: 20.0 * MB,
        ..Observed::default()
    };
    let (_, ev) = c.run(&mut st, 100);
    assert_eq!(st[0].multiplier, MULTIPLIER_RANGE.0, "{ev:?}");
    // 1 MB/s of the contract lost, what was reserved used: grows.
    c.observed[0].dropped = 21.0 * MB;
    let (_, ev) = c.run(&mut st, 100);
    assert!(st[0].multiplier > MULTIPLIER_RANGE.0);
    assert!(matches!(ev[0], Change::Tuned { why: TUNED_UP, .. }));
    for cycle in 101..200 {
        c.run(&mut st, cycle);
    }
    assert_eq!(st[0].multiplier, MULTIPLIER_RANGE.1);
    assert!(st[0].margin <= MARGIN_RANGE.1);
    // Demand falls to the base rate: what is reserved above it goes unused, and shrinks.
    c.observed[0] = Observed {
        offered: 10.0 * MB,
        ..Observed::default()
    };
    let (_, ev) = c.run(&mut st, 200);
    assert!(st[0].multiplier < MULTIPLIER_RANGE.1);
    assert!(matches!(
        ev[0],
        Change::Tuned {
            why: TUNED_DOWN,
            ..
        }
    ));
}

#[test]
fn reactive_mode_steps_up_after_drops_and_back_down() {
    let mut c = Case::new(
        PolicyMode::Reactive,
        vec![profile(10.0 * MB, 20.0 * MB, 1)],
        vec![demand(0.0, 0.0, 0.0)],
    );
    let mut st = c.state();
    c.observed[0] = Observed {
        offered: 18.0 * MB,
        dropped: 8.0 * MB,
        ..Observed::default()
    };
    let (a, _) = c.run(&mut st, 0);
    assert_eq!(a[0].fill, 15.0 * MB, "half the headroom up");
    let (a, _) = c.run(&mut st, 1);
    assert_eq!(a[0].fill, 18.0 * MB, "up to what was offered");
    c.observed[0] = Observed {
        offered: 4.0 * MB,
        ..Observed::default()
    };
    let (a, _) = c.run(&mut st, 2);
    assert_eq!(a[0].fill, 15.5 * MB, "a quarter of the headroom down");
    c.policy.overcommit = true;
    for cycle in 3..20 {
        c.run(&mut st, cycle);
    }
    let (a, _) = c.run(&mut st, 20);
    assert_eq!(
        a[0].fill,
        10.0 * MB,
        "overcommit cuts nothing while the pool has room"
    );
    // A link of 7.5 MB/s (a pool of 6) while the tenant offers 4: the link has room, so the
    // base rate stands, as under static (do no harm).
    c.link.capacity = 7.5 * MB;
    let (a, _) = c.run(&mut st, 21);
    assert_eq!(a[0].fill, 10.0 * MB, "no cut while the link has room");
    // A link of 3 MB/s is short of the 4 offered: the fill is what the link holds, below the
    // base rate of 10.
    c.link.capacity = 3.0 * MB;
    let (a, _) = c.run(&mut st, 22);
    assert!(
        (a[0].fill - 3.0 * MB).abs() < 1.0,
        "with overcommit on a short link, what the link holds: {}",
        a[0].fill
    );
    assert_eq!(
        (a[0].pre_rate, a[0].deposit),
        (0.0, None),
        "never pre-allocates"
    );
    // With drop precedence the datapath takes the shortfall at packet level, only while it
    // lasts: the base rate stands.
    c.policy.drop_precedence = true;
    let (a, _) = c.run(&mut st, 23);
    assert_eq!(a[0].fill, 10.0 * MB, "precedence: no cut ahead");
}

#[test]
fn exchange_moves_rate_at_the_configured_prices_within_the_limit() {
    let cfg = [40e6, 120e6, 40e6];
    let even = [1.0; 3];
    // The tenant's ceiling: 250 Mbit/s over its rate of 200.
    const CEIL: f64 = 250e6;
    // 10 Mbit/s of gold to bronze, one for one.
    let next = exchange(cfg, cfg, (0, 2), 10e6, even, 100e6, CEIL).expect("within limits");
    assert_eq!(next, [30e6, 120e6, 50e6]);
    // Priced: gold is worth 2 silver.
    let priced = exchange(cfg, cfg, (0, 1), 10e6, [2.0, 1.0, 0.5], 100e6, CEIL).expect("priced");
    assert_eq!(priced, [30e6, 140e6, 40e6]);
    // Cumulative limit: 0.05 x 200 = 10 Mbit/s may leave the configured mix.
    let err = exchange(cfg, next, (1, 2), 5e6, even, 10e6, CEIL).expect_err("beyond the limit");
    assert!(err.contains("max_exchange_fraction"), "{err}");
    // Moving back towards the configured mix is always allowed.
    assert_eq!(
        exchange(cfg, next, (2, 0), 10e6, even, 10e6, CEIL).expect("back"),
        cfg
    );
    let err = exchange(cfg, cfg, (0, 2), 50e6, even, 200e6, CEIL).expect_err("more than it has");
    assert!(err.contains("only 40.000 Mbit/s of gold"), "{err}");
    assert!(exchange(cfg, cfg, (1, 1), 1e6, even, 200e6, CEIL).is_err());
    assert!(exchange(cfg, cfg, (0, 1), 0.0, even, 200e6, CEIL).is_err());
    // At unequal prices the total grows (10 of gold buys 20 of silver): never past the
    // ceiling, here the rate itself.
    let err = exchange(cfg, cfg, (0, 1), 10e6, [2.0, 1.0, 0.5], 100e6, 200e6)
        .expect_err("above the ceiling");
    assert!(err.contains("above its ceiling of 200.000"), "{err}");
}

#[test]
fn water_fill_is_max_min_fair_by_weight() {
    let got = water_fill(&[1.0, 10.0, 10.0], &[1.0, 1.0, 3.0], 9.0);
    // 1 is satisfied; the 8 left split 1:3.
    assert!(
        (got[0] - 1.0).abs() < 1e-9 && (got[1] - 2.0).abs() < 1e-9 && (got[2] - 6.0).abs() < 1e-9,
        "{got:?}"
    );
    assert_eq!(water_fill(&[1.0, 2.0], &[1.0, 1.0], 10.0), vec![1.0, 2.0]);
}

prop_compose! {
    fn tenant()(rate in 0.1f64..20.0, extra in 0.0f64..30.0, prio in 0u8..4, risk in 0.0f64..1.0,
                mean in 0.0f64..60.0, spread in 0.0f64..30.0, offered in 0.0f64..60.0,
                drop in 0.0f64..1.0) -> (Profile, Demand, Observed) {
        let p = Profile { rate: rate * MB, ceil: (rate + extra) * MB, burst: 64_000.0, priority: prio, risk, mix: [0.2, 0.5, 0.3], worth: [1.0; 3], borrows: false };
        let d = demand(mean * MB, (mean - spread).max(0.0) * MB, (mean + spread) * MB);
        let o = Observed { offered: offered * MB, dropped: offered * drop * MB, ..Observed::default() };
        (p, d, o)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the forecasts and usage: nothing negative, every tenant at least its base
    /// rate (without overcommit; with it, at least its floor), the allocations within the
    /// guaranteed pool when the config fits in it (with overcommit: within the link, or the
    /// base rates where those alone are more, as under static), and the same inputs give the
    /// same outputs.
    #[test]
    fn invariants_hold(tenants in prop::collection::vec(tenant(), 1..12),
                       mode in prop_oneof![Just(PolicyMode::Static), Just(PolicyMode::Reactive), Just(PolicyMode::Predictive)],
                       overcommit in any::<bool>(), capacity in 10.0f64..1000.0) {
        let mut c = Case::new(mode, tenants.iter().map(|t| t.0).collect(), tenants.iter().map(|t| t.1).collect());
        c.observed = tenants.iter().map(|t| t.2).collect();
        c.link.capacity = capacity * MB;
        c.policy.overcommit = overcommit;
        let base: f64 = c.profiles.iter().map(|p| p.rate).sum();
        let pool = c.link.capacity * c.link.guaranteed;
        let mut st = c.state();
        let mut st2 = c.state();
        for cycle in 0..3 {
            let (a, _) = c.run(&mut st, cycle);
            let (b, _) = c.run(&mut st2, cycle);
            prop_assert_eq!(&a, &b);
            let mut sum = 0.0;
            for (x, p) in a.iter().zip(&c.profiles) {
                let lowest = if overcommit && mode != PolicyMode::Static { 0.0 } else { p.rate - 1e-6 };
                prop_assert!(x.fill >= lowest && x.pre_rate >= 0.0 && x.pre_cap >= 0.0);
                prop_assert!(x.fill <= p.ceil.max(p.rate) + 1e-6, "fill {} above ceil {}", x.fill, p.ceil);
                prop_assert!(x.deposit.is_none_or(|d| d.bytes > 0.0 && d.ttl_s > 0.0));
                sum += x.fill + x.pre_rate;
            }
            if mode != PolicyMode::Static && overcommit {
                let most = c.link.capacity.max(base).max(pool);
                prop_assert!(sum <= most * (1.0 + 1e-9), "{} above the link {}", sum, most);
            } else if mode != PolicyMode::Static && base <= pool {
                prop_assert!(sum <= pool * (1.0 + 1e-9), "{} above the pool {}", sum, pool);
            }
        }
    }

    /// Two tenants alike but for their tier, competing for a pool too small for both: the
    /// higher tier never gets less.
    #[test]
    fn higher_tiers_never_get_less(rate in 1.0f64..10.0, mean in 10.0f64..200.0, lo in 0u8..3, gap in 1u8..4) {
        let hi_prio = (lo + gap).min(3);
        prop_assume!(hi_prio > lo);
        let profiles = vec![profile(rate * MB, 200.0 * MB, lo), profile(rate * MB, 200.0 * MB, hi_prio)];
        let d = demand(mean * MB, mean * 0.8 * MB, mean * 1.2 * MB);
        let c = Case::new(PolicyMode::Predictive, profiles, vec![d, d]);
        let (a, _) = c.run(&mut c.state(), 0);
        prop_assert!(a[1].fill + a[1].pre_rate >= a[0].fill + a[0].pre_rate - 1e-6, "{:?}", a);
    }
}

#[test]
fn the_mix_moves_toward_per_type_demand_within_the_limit() {
    // Configured 20/50/30; all traffic is bronze: bronze rises to 30 + 50% of 70 = 65,
    // the others give it up in proportion to their room above half their share.
    let m = adjust_mix([0.2, 0.5, 0.3], [0.0, 0.0, 1.0], 0.5);
    assert!((m.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{m:?}");
    assert!((m[2] - 0.65).abs() < 1e-12, "{m:?}");
    assert!(m[0] >= 0.1 - 1e-12 && m[1] >= 0.25 - 1e-12, "{m:?}");
    // Demand like the configuration: nothing moves. No room to move: nothing moves.
    assert_eq!(
        adjust_mix([0.2, 0.5, 0.3], [0.2, 0.5, 0.3], 0.5),
        [0.2, 0.5, 0.3]
    );
    let fixed = adjust_mix([0.2, 0.5, 0.3], [1.0, 0.0, 0.0], 0.0);
    assert!(
        fixed
            .iter()
            .zip([0.2, 0.5, 0.3])
            .all(|(a, b)| (a - b).abs() < 1e-12)
    );
}

#[test]
fn a_moved_mix_keeps_its_worth_at_the_exchange_rates() {
    // Gold is worth 2, bronze 0.5: moving toward bronze adds rate, toward gold costs it.
    let mut p = profile(10.0 * MB, 20.0 * MB, 1);
    p.worth = [2.0, 1.0, 0.5];
    let to_bronze = adjust_mix(p.mix, [0.0, 0.0, 1.0], 0.5);
    let to_gold = adjust_mix(p.mix, [1.0, 0.0, 0.0], 0.5);
    assert!(worth_factor(&p, &to_bronze) > 1.0);
    assert!(worth_factor(&p, &to_gold) < 1.0);
    let worth = |m: &[f64; 3], f: f64| (0..3).map(|k| m[k] * f * p.worth[k]).sum::<f64>();
    let base = worth(&p.mix, 1.0);
    for m in [to_bronze, to_gold] {
        assert!((worth(&m, worth_factor(&p, &m)) - base).abs() < 1e-12);
    }
}

proptest! {
    #[test]
    fn adjusted_mixes_sum_to_one_within_bounds(
        c in (0.0f64..1.0, 0.0f64..1.0, 0.0f64..1.0),
        d in (0.0f64..1.0, 0.0f64..1.0, 0.0f64..1.0),
        limit in 0.0f64..1.0,
    ) {
        let norm = |(a, b, c): (f64, f64, f64)| {
            let s = a + b + c;
            if s > 0.0 { [a / s, b / s, c / s] } else { [1.0, 0.0, 0.0] }
        };
        let (conf, dem) = (norm(c), norm(d));
        let m = adjust_mix(conf, dem, limit);
        prop_assert!((m.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{:?}", m);
        for k in 0..3 {
            prop_assert!(m[k] >= conf[k] * (1.0 - limit) - 1e-9, "{:?} {:?}", m, conf);
            prop_assert!(m[k] <= conf[k] + limit * (1.0 - conf[k]) + 1e-9, "{:?} {:?}", m, conf);
        }
    }
}

#[test]
fn a_violation_is_in_profile_traffic_of_a_protected_tier_lost() {
    let (gold, platinum, silver) = (2, 3, 1);
    // Gold offered 80 of its 100 and got 79: 1.25% of in-profile lost.
    assert!(violated(gold, 80e6, 79e6, 100e6));
    assert!(violated(platinum, 300e6, 90e6, 100e6));
    // Above its rate and got all of its rate: drops beyond the profile are not a violation.
    assert!(!violated(gold, 300e6, 100e6, 100e6));
    assert!(!violated(gold, 80e6, 79.99e6, 100e6), "within 0.1%");
    assert!(
        !violated(silver, 80e6, 10e6, 100e6),
        "silver is not protected"
    );
    assert!(!violated(gold, 0.0, 0.0, 100e6));
}
