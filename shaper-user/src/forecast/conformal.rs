//! Split-conformal prediction intervals: for each horizon, the empirical quantiles of the
//! last `N` signed out-of-sample residuals (actual - forecast). No distribution is assumed, so
//! skewed, bursty traffic gets an asymmetric interval. Kept sorted incrementally: an update
//! is one binary search and one memmove of at most `N` values; a quantile is an index.
use half::bf16;
use serde::{Deserialize, Serialize};

/// Residuals kept per horizon: enough for 2.5% tails of ~6 samples each.
pub const WINDOW: usize = 256;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResidualWindow {
    /// Arrival order, to know which residual leaves. Residuals are kept as bfloat16: f32's
    /// range (rates up to terabits) with 8 significant bits, so a bound is off by at most
    /// 0.4% of its residual; a window is 1 kB instead of 2 (three per tenant by default).
    fifo: Vec<bf16>,
    head: usize,
    /// The same values, sorted.
    sorted: Vec<bf16>,
}

impl Default for ResidualWindow {
    fn default() -> Self {
        ResidualWindow {
            fifo: Vec::with_capacity(WINDOW),
            head: 0,
            sorted: Vec::with_capacity(WINDOW),
        }
    }
}

impl ResidualWindow {
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn push(&mut self, r: f64) {
        let r = bf16::from_f64(r);
        if self.fifo.len() < WINDOW {
            self.fifo.push(r);
            let j = self.sorted.partition_point(|v| v.total_cmp(&r).is_lt());
            self.sorted.insert(j, r);
            return;
        }
        let old = std::mem::replace(&mut self.fifo[self.head], r);
        self.head = (self.head + 1) % WINDOW;
        // Replace `old` by `r` in place: one shift of the values between their two ranks,
        // instead of a removal and an insertion that each move half the window.
        let (Ok(i) | Err(i)) = self.sorted.binary_search_by(|v| v.total_cmp(&old));
        let i = i.min(self.sorted.len() - 1);
        let j = self.sorted.partition_point(|v| v.total_cmp(&r).is_lt());
        if j <= i {
            self.sorted.copy_within(j..i, j + 1);
            self.sorted[j] = r;
        } else {
            self.sorted.copy_within(i + 1..j, i);
            self.sorted[j - 1] = r;
        }
    }

    /// The split-conformal quantile at level `q` in (0, 1): the ceil((n + 1) q)-th smallest,
    /// clamped to the sample (with few residuals the interval is the sample's range).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.sorted.len();
        if n == 0 {
            return None;
        }
        // ceil((n + 1) q) by truncation: f64::ceil is a libm call on baseline x86-64.
        let x = (n as f64 + 1.0) * q.clamp(0.0, 1.0);
        let t = x as usize;
        let k = if (t as f64) < x { t + 1 } else { t };
        Some(self.sorted[k.clamp(1, n) - 1].to_f64())
    }
}

/// How a forecaster keeps its residuals for intervals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IntervalMethod {
    /// Split-conformal quantiles of the last [`WINDOW`] residuals per anchor horizon (1 kB
    /// each): the most faithful, and the default.
    #[default]
    Window,
    /// Online quantile tracking (conformal PID's "quantile tracker", Angelopoulos, Candès and
    /// Tibshirani, 2023): two quantiles per anchor nudged by each residual, 24 bytes. For
    /// hundreds of thousands of tenants, where the windows dominate a cycle's memory traffic.
    Tracking,
}

/// Tracks the `a/2` and `1 - a/2` quantiles of a residual stream by stochastic (sub)gradient
/// steps on the pinball loss: a miss above moves the upper bound up by `(1 - a/2)` steps, a
/// hit moves it down by `a/2` steps, so it settles where `a/2` of residuals exceed it. The
/// step is a fraction of the residuals' running mean magnitude, so it fits any scale.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct QuantileTracker {
    lo: f64,
    hi: f64,
    /// Running mean of |residual|.
    scale: f64,
    n: u32,
}

/// Step size as a share of the residuals' mean magnitude.
const TRACK_RATE: f64 = 0.05;
/// Weight of a new residual in the running magnitude.
const SCALE_WEIGHT: f64 = 0.01;

impl QuantileTracker {
    pub fn push(&mut self, r: f64, a: f64) {
        if self.n == 0 {
            (self.lo, self.hi, self.scale) = (r, r, r.abs());
        } else {
            self.scale += SCALE_WEIGHT * (r.abs() - self.scale);
            let step = TRACK_RATE * self.scale.max(f64::MIN_POSITIVE);
            let tail = a / 2.0;
            self.hi += step * if r > self.hi { 1.0 - tail } else { -tail };
            self.lo += step * if r < self.lo { -(1.0 - tail) } else { tail };
            if self.lo > self.hi {
                let mid = 0.5 * (self.lo + self.hi);
                (self.lo, self.hi) = (mid, mid);
            }
        }
        self.n = self.n.saturating_add(1);
    }
}

/// One anchor horizon's residuals, kept either way.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Residuals {
    Window(ResidualWindow),
    Tracking(QuantileTracker),
}

impl Residuals {
    pub fn new(method: IntervalMethod) -> Residuals {
        match method {
            IntervalMethod::Window => Residuals::Window(ResidualWindow::default()),
            IntervalMethod::Tracking => Residuals::Tracking(QuantileTracker::default()),
        }
    }

    /// Residuals seen (a window: held), to know when the bounds mean something.
    pub fn len(&self) -> usize {
        match self {
            Residuals::Window(w) => w.len(),
            Residuals::Tracking(t) => t.n as usize,
        }
    }

    /// Adds residual `r`; `a` is the miscoverage the tracker aims at.
    pub fn push(&mut self, r: f64, a: f64) {
        match self {
            Residuals::Window(w) => w.push(r),
            Residuals::Tracking(t) => t.push(r, a),
        }
    }

    /// The interval's residual bounds at miscoverage `a`.
    pub fn bounds(&self, a: f64) -> Option<(f64, f64)> {
        match self {
            Residuals::Window(w) => Some((w.quantile(a / 2.0)?, w.quantile(1.0 - a / 2.0)?)),
            Residuals::Tracking(t) => (t.n > 0).then_some((t.lo, t.hi)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_window_sorted() {
        let mut w = ResidualWindow::default();
        for i in 0..(WINDOW + 100) {
            w.push(((i * 7919) % 1000) as f64);
        }
        assert_eq!(w.len(), WINDOW);
        assert!(w.sorted.windows(2).all(|p| p[0] <= p[1]));
        let mut last: Vec<bf16> = (100..WINDOW + 100)
            .map(|i| bf16::from_f64(((i * 7919) % 1000) as f64))
            .collect();
        last.sort_by(bf16::total_cmp);
        assert_eq!(w.sorted, last);
    }

    #[test]
    fn quantiles_of_a_uniform_sample() {
        let mut w = ResidualWindow::default();
        for i in 0..WINDOW {
            w.push(i as f64);
        }
        // ceil(257 * 0.975) = 251 -> the 251st smallest = 250.
        assert_eq!(w.quantile(0.975), Some(250.0));
        assert_eq!(w.quantile(0.025), Some(6.0));
        assert_eq!(ResidualWindow::default().quantile(0.5), None);
    }

    #[test]
    fn the_tracker_settles_on_the_asked_coverage() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(7);
        let mut t = QuantileTracker::default();
        let (mut inside, mut seen) = (0, 0);
        for i in 0..20_000 {
            // Skewed residuals: exponential above, a narrow tail below, scale 1000.
            let u: f64 = rng.random_range(1e-9..1.0);
            let r = if rng.random_bool(0.8) {
                -u.ln() * 1000.0
            } else {
                -200.0 * u
            };
            if i >= 2_000 {
                seen += 1;
                inside += usize::from(t.lo <= r && r <= t.hi);
            }
            t.push(r, 0.05);
        }
        let coverage = inside as f64 / seen as f64;
        assert!((coverage - 0.95).abs() < 0.02, "coverage {coverage}");
        assert!(t.hi > 2_000.0 && t.lo < 0.0, "{t:?}");
    }
}
