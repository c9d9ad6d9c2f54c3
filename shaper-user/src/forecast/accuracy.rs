//! Rolling accuracy of one-step forecasts: MASE (against seasonal naive), sMAPE and interval
//! coverage over the last `N` samples, each kept as running sums over a ring, O(1) per update.
use serde::{Deserialize, Serialize};

pub const WINDOW: usize = 512;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AccuracyTracker {
    ring: Vec<Entry>,
    head: usize,
    sum_abs: f64,
    sum_naive: f64,
    sum_smape: f64,
    covered: usize,
}

/// One sample's errors, as f32: 16 bytes instead of 32, so the ring costs 8 kB per tenant.
/// The sums add and remove the same rounded values, so they stay exact to f32 per entry.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Entry {
    abs: f32,
    naive: f32,
    smape: f32,
    covered: bool,
}

/// Rolling accuracy; `None` fields until enough samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    pub samples: usize,
    /// Mean absolute error over the seasonal-naive mean absolute error: < 1 beats the baseline.
    pub mase: Option<f64>,
    /// Symmetric MAPE, 0..=2.
    pub smape: Option<f64>,
    /// Share of actuals inside the interval.
    pub coverage: Option<f64>,
}

impl AccuracyTracker {
    /// `naive_abs` is |actual - seasonal naive forecast| for the same step.
    pub fn record(&mut self, actual: f64, forecast: f64, naive_abs: f64, lo: f64, hi: f64) {
        let denom = actual.abs() + forecast.abs();
        let e = Entry {
            abs: (actual - forecast).abs() as f32,
            naive: naive_abs as f32,
            smape: if denom > 0.0 {
                (2.0 * (actual - forecast).abs() / denom) as f32
            } else {
                0.0
            },
            covered: lo <= actual && actual <= hi,
        };
        if self.ring.len() == WINDOW {
            let old = self.ring[self.head];
            self.sub(old);
            self.ring[self.head] = e;
            self.head = (self.head + 1) % WINDOW;
        } else {
            self.ring.push(e);
        }
        self.sum_abs += f64::from(e.abs);
        self.sum_naive += f64::from(e.naive);
        self.sum_smape += f64::from(e.smape);
        self.covered += usize::from(e.covered);
    }

    fn sub(&mut self, e: Entry) {
        self.sum_abs -= f64::from(e.abs);
        self.sum_naive -= f64::from(e.naive);
        self.sum_smape -= f64::from(e.smape);
        self.covered -= usize::from(e.covered);
    }

    pub fn accuracy(&self) -> Accuracy {
        let n = self.ring.len();
        if n == 0 {
            return Accuracy::default();
        }
        let nf = n as f64;
        Accuracy {
            samples: n,
            mase: (self.sum_naive > 0.0).then(|| self.sum_abs.max(0.0) / self.sum_naive),
            smape: Some(self.sum_smape.max(0.0) / nf),
            coverage: Some(self.covered as f64 / nf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mase_smape_and_coverage() {
        let mut t = AccuracyTracker::default();
        // Errors of 1 against naive errors of 2: MASE 0.5; half the actuals inside.
        for i in 0..100 {
            let inside = i % 2 == 0;
            t.record(10.0, 9.0, 2.0, if inside { 8.0 } else { 10.5 }, 12.0);
        }
        let a = t.accuracy();
        assert_eq!(a.samples, 100);
        assert!((a.mase.expect("mase") - 0.5).abs() < 1e-12);
        assert!((a.smape.expect("smape") - 2.0 / 19.0).abs() < 1e-7);
        assert!((a.coverage.expect("coverage") - 0.5).abs() < 1e-12);
    }

    #[test]
    fn old_samples_leave_the_window() {
        let mut t = AccuracyTracker::default();
        for _ in 0..WINDOW {
            t.record(0.0, 100.0, 1.0, 0.0, 0.0);
        }
        for _ in 0..WINDOW {
            t.record(5.0, 5.0, 1.0, 0.0, 10.0);
        }
        let a = t.accuracy();
        assert!(a.mase.expect("mase").abs() < 1e-9);
        assert_eq!(a.coverage, Some(1.0));
    }
}
