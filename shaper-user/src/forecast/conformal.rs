//! Split-conformal prediction intervals: for each horizon, the empirical quantiles of the
//! last `N` signed out-of-sample residuals (actual - forecast). No distribution is assumed, so
//! skewed, bursty traffic gets an asymmetric interval. Kept sorted incrementally: an update
//! is one binary search and one memmove of at most `N` values; a quantile is an index.
use serde::{Deserialize, Serialize};

/// Residuals kept per horizon: enough for 2.5% tails of ~6 samples each.
pub const WINDOW: usize = 256;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResidualWindow {
    /// Arrival order, to know which residual leaves.
    fifo: Vec<f64>,
    head: usize,
    /// The same values, sorted.
    sorted: Vec<f64>,
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
        Some(self.sorted[k.clamp(1, n) - 1])
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
        let mut last: Vec<f64> = (100..WINDOW + 100)
            .map(|i| ((i * 7919) % 1000) as f64)
            .collect();
        last.sort_by(f64::total_cmp);
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
}
