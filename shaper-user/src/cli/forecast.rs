//! `shaper forecast eval`: rolling-origin evaluation of every model on a CSV series;
//! `shaper forecast gen`: write a seeded traffic-like series as CSV.
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context as _, Result, bail};

use crate::cli::{ForecastEvalArgs, ForecastGenArgs};
use shaper::forecast::eval::{
    EvalResult, TrafficShape, all_choices, evaluate, median_interval, traffic_series,
};
use shaper::forecast::{MAX_HORIZON, ModelChoice, Settings};

/// Reads `timestamp,value` rows (a header line is skipped). Timestamps are unix seconds or
/// RFC 3339 times.
pub fn read_csv(path: &Path) -> Result<(Vec<f64>, Vec<f64>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (mut ts, mut ys) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((t, v)) = line.split_once(',') else {
            bail!("{}:{}: expected `timestamp,value`", path.display(), i + 1);
        };
        let (t, v) = (t.trim().trim_matches('"'), v.trim().trim_matches('"'));
        let value: f64 = match v.parse() {
            Ok(v) => v,
            Err(_) if i == 0 => continue, // header
            Err(_) => bail!("{}:{}: '{v}' is not a number", path.display(), i + 1),
        };
        let t = match t.parse::<f64>() {
            Ok(t) => t,
            Err(_) => humantime::parse_rfc3339_weak(t)
                .ok()
                .and_then(|st| st.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64())
                .with_context(|| {
                    format!(
                        "{}:{}: '{t}' is neither unix seconds nor an RFC 3339 time",
                        path.display(),
                        i + 1
                    )
                })?,
        };
        ts.push(t);
        ys.push(value);
    }
    if ys.len() < 10 {
        bail!(
            "{}: {} samples is too few to evaluate",
            path.display(),
            ys.len()
        );
    }
    Ok((ts, ys))
}

pub fn eval(args: &ForecastEvalArgs) -> Result<()> {
    let (ts, ys) = read_csv(&args.csv)?;
    let interval_s = median_interval(&ts);
    let season = args
        .season
        .unwrap_or_else(|| ((86_400.0 / interval_s).round() as usize).max(1));
    if season * 2 >= ys.len() {
        bail!(
            "season {season} needs at least {} samples; the series has {} (pass --season)",
            season * 2,
            ys.len()
        );
    }
    let settings = Settings {
        interval_s,
        horizon: args.horizon,
        season,
        weekly: if ys.len() >= season * 7 * 3 {
            season * 7
        } else {
            1
        },
        confidence: args.confidence,
        model: ModelChoice::Auto,
        alert_mase: 1.5,
        intervals: args.intervals,
    };
    let results = evaluate(&ts, &ys, &settings, &all_choices(&settings), args.origins);
    if args.json {
        let out = serde_json::json!({
            "file": args.csv.display().to_string(),
            "samples": ys.len(),
            "interval_s": interval_s,
            "season": season,
            "weekly": settings.weekly,
            "horizon": args.horizon,
            "confidence": args.confidence,
            "results": results,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", render(&args.csv, ys.len(), &settings, &results));
    }
    Ok(())
}

fn render(file: &Path, n: usize, s: &Settings, results: &[EvalResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {n} samples every {}s, season {}, weekly {}, horizon {}, {}% intervals, {} origins",
        file.display(),
        s.interval_s,
        s.season,
        s.weekly,
        s.horizon,
        s.confidence * 100.0,
        results.first().map_or(0, |r| r.origins)
    );
    let _ = writeln!(
        out,
        "{:<16} {:>8} {:>8} {:>9} {:>12}",
        "model", "MASE", "sMAPE", "coverage", "ns/update"
    );
    for r in results {
        let _ = writeln!(
            out,
            "{:<16} {:>8.3} {:>8.3} {:>8.1}% {:>12.0}{}",
            r.model,
            r.mase,
            r.smape,
            r.coverage * 100.0,
            r.ns_per_update,
            if r.model == "auto" {
                format!("  (ended on {})", r.final_model)
            } else {
                String::new()
            }
        );
    }
    out
}

pub fn generate(args: &ForecastGenArgs) -> Result<()> {
    let mut shape = TrafficShape::five_minute(args.days);
    shape.interval_s = args.interval_s;
    shape.samples = (args.days as f64 * 86_400.0 / args.interval_s) as usize;
    let (ts, ys) = traffic_series(&shape, args.seed);
    let mut out = String::from("timestamp,value\n");
    for (t, y) in ts.iter().zip(&ys) {
        let _ = writeln!(out, "{t},{y:.3}");
    }
    std::fs::write(&args.out, out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!("wrote {} samples to {}", ys.len(), args.out.display());
    Ok(())
}

/// Bounds for `--horizon`.
pub fn parse_horizon(s: &str) -> Result<usize, String> {
    let h: usize = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if !(1..=MAX_HORIZON).contains(&h) {
        return Err(format!("horizon must be 1..={MAX_HORIZON}"));
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_header_rfc3339_and_unix_times() {
        let dir = std::env::temp_dir().join(shaper::lab::unique_name("shaper-csv-"));
        std::fs::create_dir_all(&dir).expect("tmp");
        let p = dir.join("s.csv");
        let mut text = String::from("timestamp,value\n");
        for i in 0..12 {
            text.push_str(&format!("2026-01-01T00:{:02}:00Z,{}\n", i * 5, i));
        }
        std::fs::write(&p, text).expect("write");
        let (ts, ys) = read_csv(&p).expect("parse");
        assert_eq!(ys.len(), 12);
        assert_eq!(ts[1] - ts[0], 300.0);
        assert_eq!(median_interval(&ts), 300.0);
        std::fs::write(&p, "1,2\n2,x\n").expect("write");
        assert!(
            read_csv(&p)
                .expect_err("bad value")
                .to_string()
                .contains("'x' is not a number")
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
