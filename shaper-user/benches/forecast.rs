//! Cost of one update plus one forecast (at the full horizon) per tenant, per model and for
//! `auto`, on generated five-minute traffic with a daily season (288) and a 12-step horizon.
//! `cargo bench -p shaper-user --bench forecast`
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use shaper::forecast::eval::{TrafficShape, all_choices, traffic_series};
use shaper::forecast::{Forecaster, ModelChoice, Settings};

fn bench(c: &mut Criterion) {
    let settings = Settings {
        interval_s: 300.0,
        horizon: 12,
        season: 288,
        weekly: 288 * 7,
        confidence: 0.95,
        model: ModelChoice::Auto,
        alert_mase: 1.5,
        intervals: Default::default(),
    };
    let (ts, ys) = traffic_series(&TrafficShape::five_minute(60), 9);
    let warm = 288 * 21;
    let mut group = c.benchmark_group("update+forecast");
    for choice in all_choices(&settings) {
        let name = match choice {
            ModelChoice::Auto => "auto".to_string(),
            ModelChoice::Fixed(k) => k.name().to_string(),
        };
        let mut f = Forecaster::new(Settings {
            model: choice,
            ..settings.clone()
        });
        for i in 0..warm {
            f.update(ts[i], ys[i]);
        }
        let mut i = warm;
        let mut t = ts[warm - 1];
        group.bench_function(name, |b| {
            b.iter(|| {
                t += 300.0;
                i = if i + 1 < ys.len() { i + 1 } else { warm };
                f.update(t, ys[i]);
                black_box(f.forecast(12))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
