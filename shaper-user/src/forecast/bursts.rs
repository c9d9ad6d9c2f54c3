//! Bursts: a sample above the one-step interval's upper bound starts one, the first sample back
//! inside ends it. Bursts that start at the same time of day on two or more days (or the same
//! time of week in two or more weeks) become a pattern, and forecasts that reach into the
//! pattern's next occurrence are raised to its level before it starts. Raised to, not added
//! to: a seasonal model that already carries the burst is left as it is (adding would count it
//! twice); a model that does not carry it gets it.
use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

const DAY: f64 = 86_400.0;
const WEEK: f64 = 7.0 * DAY;
/// Two starts this close in time of day (or of week) are the same pattern.
const TOLERANCE_S: f64 = 600.0;
const MAX_PATTERNS: usize = 32;
const MAX_RECENT: usize = 64;
/// Patterns considered at once for one forecast (confirmed ones at the same time of day).
const MAX_LIVE: usize = 8;

/// The patterns that may add to a window of forecasts.
pub struct Live<'a> {
    items: [Option<&'a Pattern>; MAX_LIVE],
    len: usize,
}

impl<'a> Live<'a> {
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The rate (bytes/s) expected at `ts` from bursts: the largest pattern's level, 0 outside.
    pub fn level_at(&self, ts: f64) -> f64 {
        self.items[..self.len]
            .iter()
            .flatten()
            .map(|p| p.level_at(ts))
            .fold(0.0, f64::max)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BurstEvent {
    /// Unix seconds of the first sample above the bound.
    pub start: f64,
    pub duration_s: f64,
    /// Bytes above the forecast over the burst.
    pub size: f64,
    /// Highest rate seen.
    pub peak: f64,
    /// Bytes over the burst (its mean rate is this over the duration).
    #[serde(default)]
    pub volume: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Recurrence {
    Daily,
    Weekly,
}

impl Recurrence {
    fn period(self) -> f64 {
        match self {
            Recurrence::Daily => DAY,
            Recurrence::Weekly => WEEK,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pattern {
    pub recurrence: Recurrence,
    /// Mean start, seconds into the day or week.
    pub offset_s: f64,
    pub mean_duration_s: f64,
    /// Mean bytes/s above the forecast while it lasts.
    pub mean_rate: f64,
    /// Mean bytes/s while it lasts (what forecasts are raised to).
    #[serde(default)]
    pub mean_level: f64,
    /// Distinct day or week numbers it was seen in (most recent last, bounded).
    pub periods: Vec<i64>,
    seen: u32,
}

impl Pattern {
    /// Seen in two consecutive periods, the latest of them the current or the previous one:
    /// random bursts that happen to line up once in a while are not predicted, and a pattern
    /// that stops recurring stops being predicted after one miss.
    pub fn confirmed_at(&self, ts: f64) -> bool {
        let now = period_number(ts, self.recurrence.period());
        match self.periods.as_slice() {
            [.., a, b] => b - a == 1 && now - b <= 1,
            _ => false,
        }
    }

    /// Extra bytes/s (above the forecast of the time) this pattern predicts at unix time `ts`.
    pub fn extra_at(&self, ts: f64) -> f64 {
        if self.in_window(ts) {
            self.mean_rate
        } else {
            0.0
        }
    }

    /// The rate this pattern predicts at unix time `ts` (0 outside its window).
    pub fn level_at(&self, ts: f64) -> f64 {
        if self.in_window(ts) {
            self.mean_level
        } else {
            0.0
        }
    }

    /// True if `ts` falls in a confirmed occurrence of this pattern.
    fn in_window(&self, ts: f64) -> bool {
        if !self.confirmed_at(ts) {
            return false;
        }
        let p = self.recurrence.period();
        let into = ts.rem_euclid(p);
        let d = (into - self.offset_s).rem_euclid(p);
        d < self.mean_duration_s.max(1.0)
    }
}

/// floor(ts / period): truncation for the (usual) non-negative times, as floor is a libm
/// call on baseline x86-64 and this runs per forecast.
fn period_number(ts: f64, period: f64) -> i64 {
    let q = ts / period;
    if q >= 0.0 { q as i64 } else { q.floor() as i64 }
}

/// Signed distance between two offsets on a circle of `period`.
fn circular_gap(a: f64, b: f64, period: f64) -> f64 {
    let d = (a - b).rem_euclid(period);
    if d > period / 2.0 { d - period } else { d }
}

/// A burst in progress, measured against the forecast and bound from just before it began:
/// the models adapt within a few samples, and the burst must not end because they did.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Active {
    event: BurstEvent,
    baseline: f64,
    bound: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BurstTracker {
    active: Option<Active>,
    recent: VecDeque<BurstEvent>,
    patterns: Vec<Pattern>,
}

impl BurstTracker {
    /// Feeds one sample with the one-step forecast and upper bound made for it. Returns the
    /// burst that this sample ended, if any.
    pub fn observe(
        &mut self,
        ts: f64,
        interval_s: f64,
        actual: f64,
        forecast: f64,
        hi: f64,
    ) -> Option<BurstEvent> {
        let (baseline, bound) = self
            .active
            .map_or((forecast, hi), |a| (a.baseline, a.bound));
        if actual > bound {
            let a = self.active.get_or_insert(Active {
                event: BurstEvent {
                    start: ts,
                    duration_s: 0.0,
                    size: 0.0,
                    peak: 0.0,
                    volume: 0.0,
                },
                baseline,
                bound,
            });
            a.event.duration_s += interval_s;
            a.event.size += (actual - baseline).max(0.0) * interval_s;
            a.event.peak = a.event.peak.max(actual);
            a.event.volume += actual * interval_s;
            return None;
        }
        let done = self.active.take()?;
        if self.recent.len() == MAX_RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(done.event);
        // Patterns are learned from material bursts only: at least two samples, and on average
        // twice as far above the forecast as the bound is. The 2.5% of ordinary samples above
        // a 95% bound are events, not patterns.
        let b = done.event;
        let material = b.duration_s >= 2.0 * interval_s
            && b.size / b.duration_s >= 2.0 * (done.bound - done.baseline).max(f64::MIN_POSITIVE);
        if material {
            self.learn(b, Recurrence::Daily);
            self.learn(b, Recurrence::Weekly);
        }
        Some(b)
    }

    /// The burst in progress, if any.
    pub fn active(&self) -> Option<&BurstEvent> {
        self.active.as_ref().map(|a| &a.event)
    }

    fn learn(&mut self, b: BurstEvent, rec: Recurrence) {
        let period = rec.period();
        let offset = b.start.rem_euclid(period);
        let number = period_number(b.start, period);
        let (rate, level) = if b.duration_s > 0.0 {
            (b.size / b.duration_s, b.volume / b.duration_s)
        } else {
            (0.0, 0.0)
        };
        if let Some(p) = self.patterns.iter_mut().find(|p| {
            p.recurrence == rec && circular_gap(offset, p.offset_s, period).abs() <= TOLERANCE_S
        }) {
            let n = f64::from(p.seen);
            let gap = circular_gap(offset, p.offset_s, period);
            p.offset_s = (p.offset_s + gap / (n + 1.0)).rem_euclid(period);
            p.mean_duration_s = (p.mean_duration_s * n + b.duration_s) / (n + 1.0);
            p.mean_rate = (p.mean_rate * n + rate) / (n + 1.0);
            p.mean_level = (p.mean_level * n + level) / (n + 1.0);
            p.seen += 1;
            if p.periods.last() != Some(&number) {
                p.periods.push(number);
                if p.periods.len() > 8 {
                    p.periods.remove(0);
                }
            }
            return;
        }
        if self.patterns.len() == MAX_PATTERNS {
            // Forget the pattern seen least recently.
            if let Some(i) = (0..self.patterns.len())
                .min_by_key(|&i| self.patterns[i].periods.last().copied().unwrap_or(i64::MIN))
            {
                self.patterns.remove(i);
            }
        }
        self.patterns.push(Pattern {
            recurrence: rec,
            offset_s: offset,
            mean_duration_s: b.duration_s,
            mean_rate: rate,
            mean_level: level,
            periods: vec![number],
            seen: 1,
        });
    }

    /// Extra bytes/s expected at unix time `ts` from confirmed patterns (the largest one: a
    /// daily and a weekly pattern describing the same burst are not added up).
    pub fn expected_extra(&self, ts: f64) -> f64 {
        self.patterns
            .iter()
            .map(|p| p.extra_at(ts))
            .fold(0.0, f64::max)
    }

    /// The patterns that can add to forecasts between `from` and `to` (usually none or one),
    /// so forecasting every horizon does not walk every pattern each time. Without allocating:
    /// this runs every update.
    pub fn live(&self, from: f64, to: f64) -> Live<'_> {
        let mut live = Live {
            items: [None; MAX_LIVE],
            len: 0,
        };
        for p in self
            .patterns
            .iter()
            .filter(|p| p.confirmed_at(from) || p.confirmed_at(to))
        {
            if live.len == MAX_LIVE {
                break;
            }
            live.items[live.len] = Some(p);
            live.len += 1;
        }
        live
    }

    pub fn recent(&self) -> impl Iterator<Item = &BurstEvent> {
        self.recent.iter()
    }

    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_has_start_size_and_duration() {
        let mut t = BurstTracker::default();
        assert_eq!(t.observe(0.0, 1.0, 10.0, 10.0, 20.0), None);
        assert_eq!(t.observe(1.0, 1.0, 50.0, 10.0, 20.0), None);
        assert_eq!(t.observe(2.0, 1.0, 70.0, 10.0, 20.0), None);
        let b = t.observe(3.0, 1.0, 10.0, 10.0, 20.0).expect("burst ended");
        assert_eq!(
            (b.start, b.duration_s, b.size, b.peak),
            (1.0, 2.0, 100.0, 70.0)
        );
    }

    #[test]
    fn a_daily_burst_is_predicted_on_the_third_day() {
        let mut t = BurstTracker::default();
        let at = 14.0 * 3600.0;
        for day in 0..2 {
            let start = day as f64 * DAY + at;
            for s in 0..300 {
                t.observe(start + s as f64, 1.0, 1000.0, 100.0, 200.0);
            }
            t.observe(start + 300.0, 1.0, 100.0, 100.0, 200.0);
        }
        let day3 = 2.0 * DAY + at;
        assert_eq!(t.expected_extra(day3 - 60.0), 0.0, "not before it starts");
        assert!((t.expected_extra(day3 + 10.0) - 900.0).abs() < 1e-6);
        assert_eq!(t.expected_extra(day3 + 400.0), 0.0, "not after it ends");
        assert!(
            t.patterns()
                .iter()
                .any(|p| p.recurrence == Recurrence::Daily && p.confirmed_at(day3))
        );
        assert_eq!(
            t.expected_extra(day3 + DAY + 10.0),
            0.0,
            "missed on day 3: not predicted on day 4"
        );
    }

    #[test]
    fn one_sample_excursions_are_events_but_never_patterns() {
        let mut t = BurstTracker::default();
        for day in 0..5 {
            let at = day as f64 * DAY + 100.0;
            t.observe(at, 1.0, 1000.0, 100.0, 200.0);
            assert!(
                t.observe(at + 1.0, 1.0, 100.0, 100.0, 200.0).is_some(),
                "an event"
            );
        }
        assert_eq!(t.expected_extra(5.0 * DAY + 100.0), 0.0);
        assert!(t.patterns().is_empty());
    }

    #[test]
    fn a_burst_lasts_while_above_the_bound_from_before_it() {
        let mut t = BurstTracker::default();
        t.observe(0.0, 1.0, 1000.0, 100.0, 200.0);
        // The models adapted: forecast 900, bound 1100. The burst still runs.
        assert_eq!(t.observe(1.0, 1.0, 1000.0, 900.0, 1100.0), None);
        let b = t.observe(2.0, 1.0, 150.0, 900.0, 1100.0).expect("ended");
        assert_eq!((b.duration_s, b.size), (2.0, 1800.0));
    }
}
