//! Reports: the history store drawn as SVG charts, one per tenant (offered demand, what passed,
//! the forecast with its interval, the allocation, drops) plus an overview and an index HTML
//! with a summary table. SVG so a report needs no font or image library on the host, and opens
//! in any browser. Pure apart from writing the files.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::store::Row;
use crate::units::human_bits;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("nothing to report: the history has no rows in that time range")]
    Empty,
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("drawing the chart of {tenant}: {msg}")]
    Draw { tenant: String, msg: String },
}

/// One tenant's numbers over the report's range, as shown in the index.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub tenant: String,
    pub cycles: usize,
    /// Mean rates over the cycles, bytes/s.
    pub offered: f64,
    pub passed: f64,
    pub dropped: f64,
    /// Weighted absolute percentage error of the forecasts against the offered load they
    /// predicted (sum |forecast - offered| / sum offered), when any forecast was made.
    pub wape: Option<f64>,
    /// Share of predicted cycles whose offered load fell inside the forecast's interval.
    pub coverage: Option<f64>,
    /// The chart's file name inside the report directory.
    pub chart: String,
}

/// What `write` produced.
#[derive(Debug)]
pub struct Written {
    pub index: PathBuf,
    pub charts: Vec<PathBuf>,
    pub summaries: Vec<Summary>,
}

const WIDTH: u32 = 960;
const HEIGHT: u32 = 380;

/// Writes `index.html`, `overview.svg` and one SVG per tenant into `dir` (created if needed)
/// from `rows` (any order). `title` heads the index (the interface, the range).
pub fn write(dir: &Path, title: &str, rows: &[Row]) -> Result<Written, ReportError> {
    if rows.is_empty() {
        return Err(ReportError::Empty);
    }
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| ReportError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tenants = by_tenant(rows);
    let mut charts = Vec::new();
    let mut summaries = Vec::new();
    for (i, (name, rows)) in tenants.iter().enumerate() {
        let file = format!("tenant-{i}-{}.svg", file_safe(name));
        let path = dir.join(&file);
        let svg = tenant_chart(name, rows)?;
        std::fs::write(&path, svg).map_err(io(&path))?;
        charts.push(path);
        summaries.push(summarize(name, rows, file));
    }
    let overview = dir.join("overview.svg");
    std::fs::write(&overview, overview_chart(&tenants)?).map_err(io(&overview))?;
    charts.push(overview);
    let index = dir.join("index.html");
    std::fs::write(&index, index_html(title, rows, &summaries)).map_err(io(&index))?;
    Ok(Written {
        index,
        charts,
        summaries,
    })
}

/// Rows grouped by tenant, each oldest first.
fn by_tenant(rows: &[Row]) -> BTreeMap<String, Vec<Row>> {
    let mut m: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for r in rows {
        m.entry(r.tenant.clone()).or_default().push(r.clone());
    }
    for v in m.values_mut() {
        v.sort_by(|a, b| a.ts.total_cmp(&b.ts));
    }
    m
}

/// The cycle length: the median gap between consecutive rows (1 s when there is one row).
fn cycle(rows: &[Row]) -> f64 {
    let ts: Vec<f64> = rows.iter().map(|r| r.ts).collect();
    crate::forecast::eval::median_interval(&ts)
}

/// Runs of rows without a gap (an agent stopped and restarted), so lines do not bridge the
/// time nobody measured.
fn runs(rows: &[Row]) -> Vec<&[Row]> {
    let limit = 3.0 * cycle(rows);
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..rows.len() {
        if rows[i].ts - rows[i - 1].ts > limit {
            out.push(&rows[start..i]);
            start = i;
        }
    }
    if start < rows.len() {
        out.push(&rows[start..]);
    }
    out
}

/// (predicted, offered, low, high) pairs: each forecast against the next cycle's offered load.
fn predictions(rows: &[Row]) -> Vec<(f64, f64, f64, f64)> {
    runs(rows)
        .into_iter()
        .flat_map(|run| {
            run.windows(2)
                .filter_map(|w| w[0].forecast.map(|(m, l, h)| (m, w[1].offered, l, h)))
        })
        .collect()
}

fn summarize(name: &str, rows: &[Row], chart: String) -> Summary {
    let n = rows.len().max(1) as f64;
    let mean = |f: fn(&Row) -> f64| rows.iter().map(f).sum::<f64>() / n;
    let preds = predictions(rows);
    let offered_sum: f64 = preds.iter().map(|p| p.1).sum();
    let wape = (!preds.is_empty() && offered_sum > 0.0)
        .then(|| preds.iter().map(|p| (p.0 - p.1).abs()).sum::<f64>() / offered_sum);
    let coverage = (!preds.is_empty()).then(|| {
        preds.iter().filter(|p| p.1 >= p.2 && p.1 <= p.3).count() as f64 / preds.len() as f64
    });
    Summary {
        tenant: name.to_string(),
        cycles: rows.len(),
        offered: mean(|r| r.offered),
        passed: mean(|r| r.passed),
        dropped: mean(|r| r.dropped),
        wape,
        coverage,
        chart,
    }
}

/// The unit the chart's values are drawn in: bits/s divided by the returned factor.
fn unit(max_bits: f64) -> (f64, &'static str) {
    if max_bits >= 2e9 {
        (1e9, "Gbit/s")
    } else if max_bits >= 2e6 {
        (1e6, "Mbit/s")
    } else {
        (1e3, "kbit/s")
    }
}

fn clock(ts: f64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(ts.max(0.0));
    let s = humantime::format_rfc3339_seconds(t).to_string();
    // 2026-11-23T04:00:00Z -> 04:00:00
    s.get(11..19).unwrap_or(&s).to_string()
}

fn draw_err(tenant: &str) -> impl Fn(String) -> ReportError + '_ {
    move |msg| ReportError::Draw {
        tenant: tenant.to_string(),
        msg,
    }
}

/// The chart's time range, and a value range from 0 with headroom over `max`.
fn ranges(t0: f64, t1: f64, max: f64) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let t1 = if t1 > t0 { t1 } else { t0 + 1.0 };
    // Headroom above the data for the legend in the upper left.
    let y = if max > 0.0 { max * 1.45 } else { 1.0 };
    (t0..t1, 0.0..y)
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A white chart titled `title` over `ranges`, time labels below, `unit` beside.
fn frame<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    title: &str,
    (xr, yr): (std::ops::Range<f64>, std::ops::Range<f64>),
    unit: &str,
    err: &impl Fn(String) -> ReportError,
) -> Result<Chart<'a, 'b>, ReportError> {
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(xr, yr)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("time (UTC)")
        .y_desc(unit)
        .x_labels(8)
        .x_label_formatter(&|x| clock(*x))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    Ok(chart)
}

/// Draws the legend in the upper left and writes the chart out.
fn finish<'a, 'b>(
    chart: &mut Chart<'a, 'b>,
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    err: &impl Fn(String) -> ReportError,
) -> Result<(), ReportError> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))
}

const FORECAST: RGBColor = RGBColor(31, 119, 180);
const OFFERED: RGBColor = RGBColor(40, 40, 40);
const PASSED: RGBColor = RGBColor(44, 160, 44);
const ALLOCATION: RGBColor = RGBColor(255, 127, 14);
const DROPPED: RGBColor = RGBColor(214, 39, 40);

/// One tenant: offered, passed, dropped, forecast (at the time it predicted) with its interval
/// as a band, and the allocation (fill plus pre-allocated rate) in force.
fn tenant_chart(name: &str, rows: &[Row]) -> Result<String, ReportError> {
    let dt = cycle(rows);
    let t0 = rows.first().map_or(0.0, |r| r.ts);
    let t1 = rows.last().map_or(0.0, |r| r.ts) + dt;
    let max_bytes = rows
        .iter()
        .map(|r| {
            let f = r.forecast.map_or(0.0, |(m, _, h)| m.max(h));
            let a = r.fill.unwrap_or(0.0) + r.pre.unwrap_or(0.0);
            r.offered.max(r.passed).max(f).max(a)
        })
        .fold(0.0, f64::max);
    let (div, unit_name) = unit(max_bytes * 8.0);
    let v = |bytes: f64| bytes * 8.0 / div;
    let (xr, yr) = ranges(t0, t1, v(max_bytes));
    let mut svg = String::new();
    {
        let err = draw_err(name);
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let mut chart = frame(&root, name, (xr, yr), unit_name, &err)?;
        let runs = runs(rows);
        // Forecasts and allocations are drawn at the cycle they were made for, one cycle after
        // the row that made them.
        let mut first = true;
        for run in &runs {
            let band: Vec<(f64, f64, f64)> = run
                .iter()
                .filter_map(|r| r.forecast.map(|(_, l, h)| (r.ts + dt, v(l), v(h))))
                .collect();
            if band.len() >= 2 {
                let mut poly: Vec<(f64, f64)> = band.iter().map(|p| (p.0, p.2)).collect();
                poly.extend(band.iter().rev().map(|p| (p.0, p.1)));
                let s = chart
                    .draw_series(std::iter::once(Polygon::new(poly, FORECAST.mix(0.18))))
                    .map_err(|e| err(e.to_string()))?;
                if std::mem::take(&mut first) {
                    s.label("forecast interval").legend(|(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 18, y + 5)], FORECAST.mix(0.18).filled())
                    });
                }
            }
        }
        type Pick = fn(&Row) -> Option<f64>;
        let lines: [(&str, RGBColor, u32, f64, Pick); 5] = [
            ("offered", OFFERED, 2, 0.0, |r| Some(r.offered)),
            ("passed", PASSED, 2, 0.0, |r| Some(r.passed)),
            ("forecast", FORECAST, 2, 1.0, |r| r.forecast.map(|f| f.0)),
            ("allocation (fill + pre)", ALLOCATION, 2, 1.0, |r| {
                r.fill.map(|f| f + r.pre.unwrap_or(0.0))
            }),
            ("dropped", DROPPED, 1, 0.0, |r| Some(r.dropped)),
        ];
        for (label, color, width, shift, pick) in lines {
            let mut first = true;
            for run in &runs {
                let pts: Vec<(f64, f64)> = run
                    .iter()
                    .filter_map(|r| pick(r).map(|b| (r.ts + shift * dt, v(b))))
                    .collect();
                if pts.is_empty() {
                    continue;
                }
                let style = color.stroke_width(width);
                let s = chart
                    .draw_series(LineSeries::new(pts, style))
                    .map_err(|e| err(e.to_string()))?;
                if std::mem::take(&mut first) {
                    s.label(label).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(width))
                    });
                }
            }
        }
        finish(&mut chart, &root, &err)?;
    }
    Ok(svg)
}

/// Every tenant's passed rate on one chart.
fn overview_chart(tenants: &BTreeMap<String, Vec<Row>>) -> Result<String, ReportError> {
    let all = tenants.values().flatten();
    let t0 = all.clone().map(|r| r.ts).fold(f64::INFINITY, f64::min);
    let t1 = all.clone().map(|r| r.ts).fold(f64::NEG_INFINITY, f64::max);
    let max_bytes = all.map(|r| r.passed).fold(0.0, f64::max);
    let (div, unit_name) = unit(max_bytes * 8.0);
    let (xr, yr) = ranges(t0, t1, max_bytes * 8.0 / div);
    let mut svg = String::new();
    {
        let err = draw_err("all tenants");
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let mut chart = frame(&root, "passed, all tenants", (xr, yr), unit_name, &err)?;
        for (i, (name, rows)) in tenants.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let mut first = true;
            for run in runs(rows) {
                let pts = run.iter().map(|r| (r.ts, r.passed * 8.0 / div));
                let s = chart
                    .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                    .map_err(|e| err(e.to_string()))?;
                if std::mem::take(&mut first) {
                    s.label(name.as_str()).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
                }
            }
        }
        finish(&mut chart, &root, &err)?;
    }
    Ok(svg)
}

/// A tenant name as a file name: anything but letters, digits, `-`, `_` becomes `_`.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn html_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn index_html(title: &str, rows: &[Row], summaries: &[Summary]) -> String {
    let t0 = rows.iter().map(|r| r.ts).fold(f64::INFINITY, f64::min);
    let t1 = rows.iter().map(|r| r.ts).fold(f64::NEG_INFINITY, f64::max);
    let at = |ts: f64| {
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(ts.max(0.0)),
        )
        .to_string()
    };
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", v * 100.0));
    let mut h = String::new();
    let title = html_escape(title);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>\n<style>\
         body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}img{{display:block;margin:1em 0}}\
         </style></head><body>\n<h1>{title}</h1>\n<p>{} to {} ({} rows)</p>\n",
        at(t0),
        at(t1),
        rows.len()
    );
    h.push_str(
        "<table><tr><th>tenant</th><th>cycles</th><th>offered</th><th>passed</th>\
         <th>dropped</th><th>dropped share</th><th>forecast error (WAPE)</th>\
         <th>inside interval</th></tr>\n",
    );
    for s in summaries {
        let share = (s.offered > 0.0).then(|| s.dropped / s.offered);
        let _ = writeln!(
            h,
            "<tr><td><a href=\"#{id}\">{name}</a></td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            s.cycles,
            human_bits(s.offered * 8.0),
            human_bits(s.passed * 8.0),
            human_bits(s.dropped * 8.0),
            pct(share),
            pct(s.wape),
            pct(s.coverage),
            id = html_escape(&s.chart),
            name = html_escape(&s.tenant),
        );
    }
    h.push_str("</table>\n<p>Rates are means over the cycles. Each forecast is compared with the offered load of the cycle it predicted.</p>\n");
    h.push_str("<h2>all tenants</h2>\n<img src=\"overview.svg\" alt=\"passed, all tenants\">\n");
    for s in summaries {
        let _ = writeln!(
            h,
            "<h2 id=\"{id}\">{name}</h2>\n<img src=\"{id}\" alt=\"{name}\">",
            id = html_escape(&s.chart),
            name = html_escape(&s.tenant),
        );
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tenant: &str, ts: f64, offered: f64, forecast: Option<(f64, f64, f64)>) -> Row {
        Row {
            ts,
            tenant: tenant.into(),
            offered,
            passed: offered.min(1e6),
            dropped: (offered - 1e6).max(0.0),
            forecast,
            fill: Some(1e6),
            pre: Some(1e5),
        }
    }

    #[test]
    fn summary_compares_each_forecast_with_the_cycle_it_predicted() {
        // Forecasts at t predict t+1: 2e6 then 3e6 predicted, 2e6 and 1e6 came.
        let rows = vec![
            row("a", 0.0, 1e6, Some((2e6, 1.5e6, 2.5e6))),
            row("a", 1.0, 2e6, Some((3e6, 2.5e6, 3.5e6))),
            row("a", 2.0, 1e6, None),
        ];
        let s = summarize("a", &rows, "x.svg".into());
        assert_eq!(s.cycles, 3);
        // |2-2| + |3-1| over 2+1.
        assert!((s.wape.expect("wape") - 2.0 / 3.0).abs() < 1e-9, "{s:?}");
        assert!((s.coverage.expect("coverage") - 0.5).abs() < 1e-9, "{s:?}");
        assert!((s.dropped - 1e6 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn a_gap_splits_the_lines_and_no_forecast_is_scored_across_it() {
        let mut rows: Vec<Row> = (0..5)
            .map(|i| row("a", i as f64, 1e6, Some((1e6, 0.0, 2e6))))
            .collect();
        rows.extend((0..5).map(|i| row("a", 100.0 + i as f64, 5e6, Some((1e6, 0.0, 2e6)))));
        assert_eq!(runs(&rows).len(), 2);
        // 4 + 4 predictions, none pairing t=4 with t=100.
        let p = predictions(&rows);
        assert_eq!(p.len(), 8);
        assert_eq!(p.iter().filter(|p| p.1 == 5e6).count(), 4);
    }

    #[test]
    fn writes_an_index_and_a_chart_per_tenant() {
        let dir = std::env::temp_dir().join(format!("shaper-report-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let rows: Vec<Row> = (0..60)
            .flat_map(|i| {
                let t = 1_800_000_000.0 + i as f64;
                [
                    row(
                        "gold <a&b>",
                        t,
                        2e6 + 1e4 * i as f64,
                        Some((2e6, 1.8e6, 2.2e6)),
                    ),
                    row("bronze", t, 5e5, None),
                ]
            })
            .collect();
        let w = write(&dir, "eth9 report", &rows).expect("write");
        assert_eq!(w.charts.len(), 3);
        let index = std::fs::read_to_string(&w.index).expect("index");
        // Names are escaped, and each chart is linked.
        assert!(index.contains("gold &lt;a&amp;b&gt;"), "{index}");
        for c in &w.summaries {
            assert!(index.contains(&format!("src=\"{}\"", c.chart)));
            assert!(dir.join(&c.chart).exists());
        }
        let gold = std::fs::read_to_string(dir.join(&w.summaries[1].chart)).expect("gold");
        assert!(gold.starts_with("<svg"), "{}", &gold[..80.min(gold.len())]);
        for label in [
            "offered",
            "passed",
            "forecast interval",
            "allocation (fill + pre)",
        ] {
            assert!(gold.contains(label), "legend lacks {label}");
        }
        // The band is drawn: one polygon with a point per forecast each way.
        assert!(gold.contains("<polygon"), "no interval band");
        // Bronze never had a forecast: no band, no forecast line in its legend.
        let bronze = std::fs::read_to_string(dir.join(&w.summaries[0].chart)).expect("bronze");
        assert!(!bronze.contains("<polygon") && !bronze.contains(">forecast<"));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(write(&dir, "x", &[]), Err(ReportError::Empty)));
    }
}
