//! Rolling accuracy of one-step forecasts: MASE (against seasonal naive), sMAPE and interval
//! coverage, as exponentially weighted sums with a memory of about `WINDOW` samples: O(1) per
//! update and 56 bytes per tenant (a ring of the last samples cost 8 kB per tenant, a third
//! of the agent's memory at 100,000 tenants).
use serde::{Deserialize, Serialize};

/// Samples of memory (the weight of a sample falls to 1/e after this many).
pub const WINDOW: usize = 512;

/// MASE when the seasonal naive made no error and the forecasts did (a strictly periodic
/// series): as bad as it gets, kept finite for JSON and Prometheus.
pub const MASE_NAIVE_EXACT: f64 = 1e6;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AccuracyTracker {
    /// Samples recorded.
    n: u64,
    /// Decayed sums: weights, absolute errors, naive absolute errors, sMAPE terms, covered.
    weight: f64,
    sum_abs: f64,
    sum_naive: f64,
    sum_smape: f64,
    covered: f64,
    /// Decayed sum of |actual|: the scale below which an error sum counts as none.
    #[serde(default)]
    sum_level: f64,
}

/// Rolling accuracy; `None` fields until enough samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    /// Samples in the memory (at most [`WINDOW`]).
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
        let smape = if denom > 0.0 {
            2.0 * (actual - forecast).abs() / denom
        } else {
            0.0
        };
        let keep = 1.0 - 1.0 / WINDOW as f64;
        self.n += 1;
        self.weight = self.weight * keep + 1.0;
        self.sum_abs = self.sum_abs * keep + (actual - forecast).abs();
        self.sum_naive = self.sum_naive * keep + naive_abs;
        self.sum_smape = self.sum_smape * keep + smape;
        self.covered = self.covered * keep + f64::from(u8::from(lo <= actual && actual <= hi));
        self.sum_level = self.sum_level * keep + actual.abs();
    }

    /// An error sum this small (a billionth of the series' level) is rounding, not error:
    /// a constant series is forecast exactly by the naive and by a smoothed level alike.
    fn negligible(&self) -> f64 {
        1e-9 * self.sum_level
    }

    pub fn accuracy(&self) -> Accuracy {
        if self.n == 0 || self.weight <= 0.0 {
            return Accuracy::default();
        }
        Accuracy {
            samples: self.n.min(WINDOW as u64) as usize,
            mase: if self.sum_naive > self.negligible() {
                Some(self.sum_abs.max(0.0) / self.sum_naive)
            } else if self.sum_abs > self.negligible() {
                Some(MASE_NAIVE_EXACT)
            } else {
                None
            },
            smape: Some(self.sum_smape.max(0.0) / self.weight),
            coverage: Some(self.covered / self.weight),
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
        // Alternating: half, to within the weight of the newest sample.
        assert!((a.coverage.expect("coverage") - 0.5).abs() < 0.01);
    }

    #[test]
    fn old_samples_fade() {
        let mut t = AccuracyTracker::default();
        for _ in 0..WINDOW {
            t.record(0.0, 100.0, 1.0, 0.0, 0.0);
        }
        assert!(t.accuracy().mase.expect("mase") > 50.0);
        for _ in 0..10 * WINDOW {
            t.record(5.0, 5.0, 1.0, 0.0, 10.0);
        }
        let a = t.accuracy();
        assert!(a.mase.expect("mase") < 0.01, "{a:?}");
        assert!(a.coverage.expect("coverage") > 0.999, "{a:?}");
    }
}
