//! PNG charts for `bench compare` (plotters' bitmap backend). Text is drawn with a TrueType
//! font read at run time (DejaVu Sans, Debian's `fonts-dejavu-core`), so no font library is
//! linked.
use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

const FONTS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers the font once; charts fail with one line naming the package when it is missing.
fn font() -> Result<()> {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *DONE.get_or_init(|| {
        FONTS.iter().any(|f| {
            std::fs::read(f).ok().is_some_and(|b| {
                plotters::style::register_font(
                    "sans-serif",
                    FontStyle::Normal,
                    Box::leak(b.into_boxed_slice()),
                )
                .is_ok()
            })
        })
    }) {
        Ok(())
    } else {
        Err(anyhow!(
            "no DejaVuSans.ttf for chart text: apt-get install fonts-dejavu-core"
        ))
    }
}

/// One line of a chart: its legend, colour index and points.
pub struct Series {
    pub name: String,
    pub color: usize,
    pub points: Vec<(f64, f64)>,
    /// Points only, no line.
    pub scatter: bool,
}

/// One panel: a title, axis names, log scale on x, and its series.
pub struct Panel {
    pub title: String,
    pub x: String,
    pub y: String,
    pub log_x: bool,
    /// Start the y axis at zero (off: fit the data, for ratios near 1).
    pub y_zero: bool,
    pub series: Vec<Series>,
}

fn color(i: usize) -> RGBColor {
    [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
        RGBColor(127, 127, 127),
    ][i % 6]
}

/// The axis range of `v`: with margins, from zero when `zero`, a factor wider on a log axis.
fn range(v: impl Iterator<Item = f64> + Clone, log: bool, zero: bool) -> (f64, f64) {
    let lo = v.clone().fold(f64::INFINITY, f64::min);
    let hi = v.fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (if log { 1.0 } else { 0.0 }, 1.0);
    }
    if log {
        (lo / 1.5, hi * 1.5)
    } else if zero {
        (0.0_f64.min(lo), hi * 1.1 + f64::EPSILON)
    } else {
        let pad = ((hi - lo) * 0.2).max(hi.abs() * 0.005);
        (lo - pad, hi + pad)
    }
}

/// Axis numbers: 8.4M, 120k, 95.6, 1.002.
fn num(v: &f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 || *v == v.round() {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn draw<DB: DrawingBackend>(area: &DrawingArea<DB, plotters::coord::Shift>, p: &Panel) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let all = || p.series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = range(all().map(|q| q.0), p.log_x, true);
    let (y0, y1) = range(all().map(|q| q.1), false, p.y_zero);
    let mut b = ChartBuilder::on(area);
    b.caption(&p.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(p.x.as_str())
                .y_desc(p.y.as_str())
                .label_style(("sans-serif", 13))
                .x_label_formatter(&num)
                .y_label_formatter(&num)
                .draw()
                .map_err(|e| anyhow!("chart: {e}"))?;
            for s in &p.series {
                let c = color(s.color);
                let mut pts = s.points.clone();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                if s.scatter {
                    chart
                        .draw_series(pts.iter().map(|q| Circle::new(*q, 5, c.filled())))
                        .map_err(|e| anyhow!("chart: {e}"))?
                        .label(s.name.as_str())
                        .legend(move |(x, y)| Circle::new((x + 10, y), 5, c.filled()));
                } else {
                    chart
                        .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                        .map_err(|e| anyhow!("chart: {e}"))?
                        .label(s.name.as_str())
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                        });
                    chart
                        .draw_series(pts.iter().map(|q| Circle::new(*q, 3, c.filled())))
                        .map_err(|e| anyhow!("chart: {e}"))?;
                }
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .label_font(("sans-serif", 13))
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| anyhow!("chart: {e}"))?;
        }};
    }
    if p.log_x {
        body!(
            b.build_cartesian_2d((x0..x1).log_scale(), y0..y1)
                .map_err(|e| anyhow!("chart: {e}"))?
        );
    } else {
        body!(
            b.build_cartesian_2d(x0..x1, y0..y1)
                .map_err(|e| anyhow!("chart: {e}"))?
        );
    }
    Ok(())
}

/// Writes `panels` side by side (two per row) into one PNG.
pub fn png(path: &Path, panels: &[Panel]) -> Result<()> {
    font()?;
    let cols = panels.len().clamp(1, 2);
    let rows = panels.len().div_ceil(2).max(1);
    let size = (640 * cols as u32, 440 * rows as u32);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("chart: {e}"))?;
    for (area, p) in root.split_evenly((rows, cols)).iter().zip(panels) {
        draw(area, p)?;
    }
    root.present()
        .map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
    Ok(())
}
