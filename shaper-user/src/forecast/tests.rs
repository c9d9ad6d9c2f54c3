use rand::{Rng, SeedableRng, rngs::StdRng};

use super::eval::{TrafficShape, evaluate, traffic_series};
use super::*;

fn settings(season: usize, horizon: usize, model: ModelChoice) -> Settings {
    Settings {
        interval_s: 1.0,
        horizon,
        season,
        weekly: if season > 1 { season * 7 } else { 1 },
        confidence: 0.95,
        model,
        alert_mase: 1.5,
        intervals: Default::default(),
    }
}

fn feed(f: &mut Forecaster, ys: &[f64]) {
    for (i, y) in ys.iter().enumerate() {
        f.update(i as f64, *y);
    }
}

#[test]
fn constant_series() {
    let mut f = Forecaster::new(settings(24, 4, ModelChoice::Auto));
    feed(&mut f, &[1000.0; 500]);
    for h in 1..=4 {
        let p = f.forecast(h);
        assert!((p.mean - 1000.0).abs() < 1e-6, "{p:?}");
        assert!(p.lo <= p.mean && p.mean <= p.hi);
        assert!(p.hi - p.lo < 1e-6, "no spread on a constant: {p:?}");
    }
}

#[test]
fn linear_trend_is_followed() {
    let mut f = Forecaster::new(settings(1, 5, ModelChoice::Auto));
    let ys: Vec<f64> = (0..600).map(|t| 1000.0 + 10.0 * t as f64).collect();
    feed(&mut f, &ys);
    let p = f.forecast(1);
    assert!(
        (p.mean - 7000.0).abs() / 7000.0 < 0.01,
        "{p:?} by {:?}",
        f.model()
    );
}

#[test]
fn pure_season_is_learned_and_auto_picks_a_seasonal_model() {
    let season = |t: usize| 500.0 + 200.0 * ((t % 24) as f64 / 24.0 * std::f64::consts::TAU).sin();
    let mut f = Forecaster::new(settings(24, 6, ModelChoice::Auto));
    let ys: Vec<f64> = (0..2000).map(season).collect();
    feed(&mut f, &ys);
    for h in 1..=6 {
        assert!(
            (f.forecast(h).mean - season(1999 + h)).abs() < 1.0,
            "h={h}: {:?}",
            f.forecast(h)
        );
    }
    assert!(
        matches!(
            f.model(),
            ModelKind::SeasonalNaive | ModelKind::HoltWinters | ModelKind::Mstl
        ),
        "{:?}",
        f.model()
    );
}

#[test]
fn ar1_series_selects_a_model_that_beats_naive() {
    let mut rng = StdRng::seed_from_u64(11);
    let mut y = 100.0;
    let ys: Vec<f64> = (0..3000)
        .map(|_| {
            y = 100.0 + 0.8 * (y - 100.0) + rng.random_range(-10.0..10.0);
            y
        })
        .collect();
    let mut f = Forecaster::new(settings(1, 1, ModelChoice::Auto));
    feed(&mut f, &ys);
    assert!(
        matches!(f.model(), ModelKind::Ar | ModelKind::Ewma | ModelKind::Holt),
        "{:?}",
        f.model()
    );
    assert!(f.accuracy().mase.expect("mase") < 1.0, "{:?}", f.accuracy());
}

/// Held-out coverage of the 95% interval on generated traffic (daily and weekly seasons,
/// trend, Pareto bursts, noise): within 3 points of 95%, at every horizon together.
#[test]
fn coverage_of_the_95_percent_interval_is_calibrated() {
    for seed in [1, 2, 3] {
        let shape = TrafficShape::five_minute(42);
        let (ts, ys) = traffic_series(&shape, seed);
        let s = Settings {
            interval_s: 300.0,
            ..settings(288, 12, ModelChoice::Auto)
        };
        let r = evaluate(&ts, &ys, &s, &[ModelChoice::Auto], None);
        assert!(
            (r[0].coverage - 0.95).abs() <= 0.03,
            "seed {seed}: coverage {:.3}",
            r[0].coverage
        );
        assert!(
            r[0].mase < 1.0,
            "seed {seed}: auto should beat seasonal naive, MASE {:.3}",
            r[0].mase
        );
    }
}

#[test]
fn bad_inputs_never_poison_the_state() {
    let mut f = Forecaster::new(settings(24, 4, ModelChoice::Auto));
    feed(&mut f, &vec![100.0; 300]);
    let before = f.forecast(1);
    let t = 300.0;
    assert_eq!(
        f.update(t, f64::NAN),
        Outcome::Rejected(Rejection::NotFinite)
    );
    assert_eq!(
        f.update(t, f64::INFINITY),
        Outcome::Rejected(Rejection::NotFinite)
    );
    assert_eq!(f.update(t, -5.0), Outcome::Rejected(Rejection::Negative));
    assert_eq!(f.update(t, 1e300), Outcome::Rejected(Rejection::Absurd));
    assert_eq!(
        f.update(f64::NAN, 100.0),
        Outcome::Rejected(Rejection::NotFinite)
    );
    assert_eq!(
        f.update(299.0, 100.0),
        Outcome::Rejected(Rejection::OutOfOrder),
        "duplicate timestamp"
    );
    assert_eq!(f.forecast(1), before, "rejected samples change nothing");
    assert_eq!(f.counts.rejected, 6);
    // An enormous outlier (a counter glitch) is clamped for the state.
    assert!(matches!(f.update(t, 9e12), Outcome::Clamped { .. }));
    let after = f.forecast(1);
    assert!(
        after.mean < 1000.0,
        "one outlier must not poison the level: {after:?}"
    );
    // A gap (agent down for 50 intervals) keeps seasons aligned and the state finite.
    assert_eq!(f.update(t + 51.0, 100.0), Outcome::Gap { missing: 50 });
    assert!(
        (f.forecast(1).mean - 100.0).abs() < 20.0,
        "{:?}",
        f.forecast(1)
    );
    // A counter reset shows up as zero demand: accepted, not a crash.
    assert_eq!(f.update(t + 52.0, 0.0), Outcome::Accepted);
}

#[test]
fn a_real_level_shift_is_still_learned() {
    let mut f = Forecaster::new(settings(1, 1, ModelChoice::Auto));
    feed(&mut f, &vec![100.0; 300]);
    for i in 0..300 {
        f.update(300.0 + i as f64, 10_000.0);
    }
    assert!(
        (f.forecast(1).mean - 10_000.0).abs() < 100.0,
        "{:?}",
        f.forecast(1)
    );
}

#[test]
fn state_round_trips_through_serde() {
    let mut f = Forecaster::new(settings(24, 4, ModelChoice::Auto));
    let ys: Vec<f64> = (0..400).map(|t| 100.0 + (t % 24) as f64).collect();
    feed(&mut f, &ys);
    // Right after a gap, pending forecasts are void: that state must save too.
    f.update(410.0, 120.0);
    let json = serde_json::to_string(&f).expect("serialize");
    let mut g: Forecaster = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(g.forecast(3), f.forecast(3));
    // Both continue identically after the restart.
    f.update(411.0, 110.0);
    g.update(411.0, 110.0);
    assert_eq!(g.forecast(1), f.forecast(1));
}

#[test]
fn known_events_add_to_the_forecast_in_their_window() {
    let mut f = Forecaster::new(settings(1, 10, ModelChoice::Fixed(ModelKind::Ewma)));
    feed(&mut f, &vec![100.0; 200]);
    // Samples at t = 0..199; forecast h lands at 199 + h.
    f.set_events(vec![KnownEvent {
        start: 203.0,
        duration_s: 3.0,
        rate: 1000.0,
    }]);
    let m: Vec<f64> = (1..=10).map(|h| f.forecast(h).mean).collect();
    assert!((m[2] - 100.0).abs() < 1e-6, "{m:?}");
    assert!(
        (m[3] - 1100.0).abs() < 1e-6 && (m[5] - 1100.0).abs() < 1e-6,
        "{m:?}"
    );
    assert!((m[6] - 100.0).abs() < 1e-6, "{m:?}");
}

#[test]
fn recurring_daily_burst_is_predicted_before_it_starts() {
    // One sample a minute; a burst every day at 14:00 for 20 minutes.
    let s = Settings {
        interval_s: 60.0,
        ..settings(1440, 30, ModelChoice::Auto)
    };
    let mut f = Forecaster::new(s);
    let burst = |t: f64| {
        let tod = t % 86_400.0;
        if (50_400.0..51_600.0).contains(&tod) {
            5_000.0
        } else {
            0.0
        }
    };
    let mut rng = StdRng::seed_from_u64(5);
    // Three days, then stop at 13:45 on the fourth.
    let end = 3.0 * 86_400.0 + 49_500.0;
    let mut t = 0.0;
    while t < end {
        f.update(t, 1000.0 + rng.random_range(-50.0..50.0) + burst(t));
        t += 60.0;
    }
    assert!(
        f.bursts().patterns().iter().any(|p| p.confirmed_at(end)),
        "{:?}",
        f.bursts().patterns()
    );
    // 15 minutes before 14:00: the forecast 20 minutes ahead (14:05) carries the burst.
    let p = f.forecast(20);
    assert!(p.mean > 4000.0, "burst not predicted: {p:?}");
    assert!(
        f.forecast(5).mean < 2000.0,
        "nothing extra before the onset: {:?}",
        f.forecast(5)
    );
}

#[test]
fn accuracy_alert_when_mase_is_high() {
    // Pure noise: nothing beats seasonal naive by much, and a fixed Holt does worse.
    let mut rng = StdRng::seed_from_u64(3);
    let mut f = Forecaster::new(Settings {
        alert_mase: 0.5,
        intervals: Default::default(),
        ..settings(24, 1, ModelChoice::Fixed(ModelKind::Holt))
    });
    let ys: Vec<f64> = (0..1000).map(|_| rng.random_range(0.0..1000.0)).collect();
    feed(&mut f, &ys);
    assert!(f.accuracy_alert(), "{:?}", f.accuracy());
    let mut g = Forecaster::new(settings(24, 1, ModelChoice::Auto));
    feed(&mut g, &vec![5.0; 1000]);
    assert!(!g.accuracy_alert());
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever arrives, forecasts and bounds are finite and ordered.
        #[test]
        fn forecasts_are_finite_and_ordered(
            values in prop::collection::vec(prop_oneof![
                0.0f64..1e9,
                Just(0.0),
                Just(f64::NAN),
                Just(-1.0),
                Just(f64::INFINITY),
                1e9f64..1e13,
            ], 1..400),
            gaps in prop::collection::vec(1u32..4, 400),
            season in 1usize..30,
        ) {
            let mut f = Forecaster::new(settings(season, 5, ModelChoice::Auto));
            let mut t = 0.0;
            for (v, g) in values.iter().zip(&gaps) {
                t += f64::from(*g);
                f.update(t, *v);
                for h in 1..=5 {
                    let p = f.forecast(h);
                    prop_assert!(p.lo.is_finite() && p.mean.is_finite() && p.hi.is_finite(), "{:?}", p);
                    prop_assert!(0.0 <= p.lo && p.lo <= p.mean && p.mean <= p.hi, "{:?}", p);
                }
            }
        }
    }
}

#[test]
fn fine_seasons_are_kept_in_bounded_slots() {
    // One-second samples, a season of 3,600: kept as 240 slots of 15 samples.
    let slots = models::Slots::new(3_600, models::DAILY_SLOTS);
    assert_eq!(
        format!("{slots:?}"),
        "Slots { stride: 15, phase: 0, pos: 0, len: 240 }"
    );
    assert_eq!(
        format!("{:?}", models::Slots::new(288, models::DAILY_SLOTS)),
        "Slots { stride: 1, phase: 0, pos: 0, len: 288 }",
        "coarse seasons keep a slot per sample"
    );
    // A square wave over the season: high for its first quarter. After three seasons, every
    // seasonal model forecasts the step where it is, a slot's width (15 samples) at worst.
    let season = 3_600;
    let wave = |t: usize| {
        if t % season < season / 4 {
            5_000.0
        } else {
            1_000.0
        }
    };
    for kind in [
        ModelKind::SeasonalNaive,
        ModelKind::HoltWinters,
        ModelKind::Mstl,
    ] {
        let mut m = models::Model::new(kind, season, season * 7);
        let end = 3 * season + season / 4 - 40;
        for t in 0..end {
            m.update(wave(t));
        }
        // 40 samples before the wave falls: high for the next 25, low after the slot that
        // straddles the step.
        for h in [1, 20] {
            assert!(
                (m.forecast(h) - 5_000.0).abs() < 800.0,
                "{kind:?} h={h}: {}",
                m.forecast(h)
            );
        }
        for h in [60, 100] {
            assert!(
                (m.forecast(h) - 1_000.0).abs() < 800.0,
                "{kind:?} h={h}: {}",
                m.forecast(h)
            );
        }
        assert!(m.is_finite());
    }
}
