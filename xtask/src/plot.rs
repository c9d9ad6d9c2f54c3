//! PNG charts for `bench compare` (plotters' bitmap backend). Text is drawn with a TrueType
//! font read at run time (DejaVu Sans, Debian's `fonts-dejavu-core`) by ab_glyph, so no font
//! library is linked.
use std::path::Path;

use ab_glyph::{Font as _, FontVec, PxScale, ScaleFont as _};
use anyhow::{Result, anyhow};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};
use plotters_backend::{BackendColor, BackendCoord, BackendTextStyle, DrawingErrorKind};

const FONTS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// The chart font, read once; one line naming the package when it is missing.
fn font() -> Result<&'static FontVec> {
    static FONT: std::sync::OnceLock<Option<FontVec>> = std::sync::OnceLock::new();
    FONT.get_or_init(|| {
        FONTS
            .iter()
            .find_map(|f| FontVec::try_from_vec(std::fs::read(f).ok()?).ok())
    })
    .as_ref()
    .ok_or_else(|| anyhow!("no DejaVuSans.ttf for chart text: apt-get install fonts-dejavu-core"))
}

/// plotters' bitmap backend with text drawn by ab_glyph (plotters' own font support stays off,
/// see Cargo.toml).
struct Png<'a> {
    inner: BitMapBackend<'a>,
    font: &'static FontVec,
}

impl Png<'_> {
    /// Glyphs of `text` at `px` pixels, positioned from (0, baseline 0), and the text's width.
    fn layout(&self, text: &str, px: f32) -> (Vec<ab_glyph::Glyph>, f32) {
        let scaled = self.font.as_scaled(PxScale::from(px));
        let mut x = 0.0;
        let mut glyphs = Vec::new();
        let mut prev = None;
        for c in text.chars() {
            let id = scaled.glyph_id(c);
            if let Some(p) = prev {
                x += scaled.kern(p, id);
            }
            glyphs.push(id.with_scale_and_position(px, ab_glyph::point(x, 0.0)));
            x += scaled.h_advance(id);
            prev = Some(id);
        }
        (glyphs, x)
    }
}

type DrawResult<E> = Result<(), DrawingErrorKind<E>>;

impl DrawingBackend for Png<'_> {
    type ErrorType = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> DrawResult<Self::ErrorType> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> DrawResult<Self::ErrorType> {
        self.inner.present()
    }

    fn draw_pixel(&mut self, p: BackendCoord, c: BackendColor) -> DrawResult<Self::ErrorType> {
        self.inner.draw_pixel(p, c)
    }

    fn draw_line<S: plotters_backend::BackendStyle>(
        &mut self,
        a: BackendCoord,
        b: BackendCoord,
        s: &S,
    ) -> DrawResult<Self::ErrorType> {
        self.inner.draw_line(a, b, s)
    }

    fn draw_rect<S: plotters_backend::BackendStyle>(
        &mut self,
        a: BackendCoord,
        b: BackendCoord,
        s: &S,
        fill: bool,
    ) -> DrawResult<Self::ErrorType> {
        self.inner.draw_rect(a, b, s, fill)
    }

    fn draw_path<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        s: &S,
    ) -> DrawResult<Self::ErrorType> {
        self.inner.draw_path(path, s)
    }

    fn draw_circle<S: plotters_backend::BackendStyle>(
        &mut self,
        c: BackendCoord,
        r: u32,
        s: &S,
        fill: bool,
    ) -> DrawResult<Self::ErrorType> {
        self.inner.draw_circle(c, r, s, fill)
    }

    fn fill_polygon<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        s: &S,
    ) -> DrawResult<Self::ErrorType> {
        self.inner.fill_polygon(vert, s)
    }

    fn estimate_text_size<T: BackendTextStyle>(
        &self,
        text: &str,
        style: &T,
    ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        let (_, w) = self.layout(text, style.size() as f32);
        Ok((w.ceil() as u32, style.size().ceil() as u32))
    }

    fn draw_text<T: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &T,
        pos: BackendCoord,
    ) -> DrawResult<Self::ErrorType> {
        let color = style.color();
        let px = style.size() as f32;
        let (glyphs, width) = self.layout(text, px);
        let scaled = self.font.as_scaled(PxScale::from(px));
        let (ascent, height) = (scaled.ascent(), scaled.height());
        // Offsets of the anchor within the text box (its top left at 0, 0).
        let dx = match style.anchor().h_pos {
            HPos::Left => 0.0,
            HPos::Center => -width / 2.0,
            HPos::Right => -width,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0.0,
            VPos::Center => -height / 2.0,
            VPos::Bottom => -height,
        };
        let trans = style.transform();
        let (w, h) = self.get_size();
        let mut pixels = Vec::new();
        for g in glyphs {
            if let Some(o) = self.font.outline_glyph(g) {
                let b = o.px_bounds();
                o.draw(|x, y, cover| {
                    if cover > 0.05 {
                        let fx = b.min.x + x as f32 + dx;
                        let fy = b.min.y + y as f32 + ascent + dy;
                        pixels.push((fx.round() as i32, fy.round() as i32, cover));
                    }
                });
            }
        }
        for (x, y, cover) in pixels {
            let (x, y) = trans.transform(x, y);
            let (x, y) = (pos.0 + x, pos.1 + y);
            if x >= 0 && y >= 0 && (x as u32) < w && (y as u32) < h {
                self.inner.draw_pixel(
                    (x, y),
                    BackendColor {
                        alpha: color.alpha * f64::from(cover),
                        rgb: color.rgb,
                    },
                )?;
            }
        }
        Ok(())
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
    let font = font()?;
    let cols = panels.len().clamp(1, 2);
    let rows = panels.len().div_ceil(2).max(1);
    let size = (640 * cols as u32, 440 * rows as u32);
    let root = Png {
        inner: BitMapBackend::new(path, size),
        font,
    }
    .into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("chart: {e}"))?;
    for (area, p) in root.split_evenly((rows, cols)).iter().zip(panels) {
        draw(area, p)?;
    }
    root.present()
        .map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_with_text_is_written() {
        if font().is_err() {
            eprintln!("skipped: no DejaVuSans.ttf (apt-get install fonts-dejavu-core)");
            return;
        }
        let dir = std::env::temp_dir().join(format!("shaper-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("chart.png");
        let panels = [Panel {
            title: "a title".into(),
            x: "x".into(),
            y: "y".into(),
            log_x: true,
            y_zero: false,
            series: vec![Series {
                name: "line".into(),
                color: 0,
                points: vec![(1.0, 0.99), (10.0, 1.01), (100.0, 1.0)],
                scatter: false,
            }],
        }];
        png(&path, &panels).expect("chart");
        let bytes = std::fs::read(&path).expect("read chart");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(&bytes[1..4], b"PNG");
        // Text and lines make a compressed image well above a blank canvas's few kB.
        assert!(bytes.len() > 10_000, "{} bytes", bytes.len());
    }
}
