//! Forecast: per-tenant online demand forecasts with calibrated prediction intervals.
//!
//! Pure: no I/O, no clock. Feed one sample per interval (offered bytes/s with its unix
//! timestamp) with [`Forecaster::update`]; ask [`Forecaster::forecast`] for any horizon up to
//! the configured one. Every model runs on every sample (each O(1)); `auto` combines them,
//! weighted by the inverse square of each one's rolling one-step error, so the models that
//! forecast well lately dominate and the choice shifts as the workload changes. Intervals are
//! split-conformal: empirical quantiles of the forecaster's own recent out-of-sample
//! residuals, per horizon.
mod accuracy;
mod bursts;
mod conformal;
pub mod eval;
mod linalg;
mod models;
mod rings;

use serde::{Deserialize, Serialize};

pub use self::accuracy::Accuracy;
use self::accuracy::AccuracyTracker;
pub use self::bursts::{BurstEvent, BurstTracker, Pattern, Recurrence};
pub use self::conformal::IntervalMethod;
use self::conformal::Residuals;
pub use self::models::{Model, ModelKind};
use self::rings::Rings;

/// Longest horizon, in samples, a forecaster keeps intervals for.
pub const MAX_HORIZON: usize = 64;
/// Samples above this (bytes/s, 80 Tbit/s) are not traffic but a broken counter.
pub const MAX_VALUE: f64 = 1e13;
/// Missing intervals filled with the model's own forecasts at most; longer gaps only move the
/// seasonal clocks.
const MAX_IMPUTE: u64 = 2_000;
/// The long memory of `auto`'s rolling errors, in samples: four seasons (so a model good at
/// night and bad by day is judged on both, and a day-ahead error on several days), within
/// these bounds.
const ERROR_MEMORY: (f64, f64) = (50.0, 1000.0);
/// `auto` switches only to a model at least this much better (hysteresis).
const SWITCH_MARGIN: f64 = 0.97;
/// Samples before `auto` may switch, and before outliers are clamped.
const WARMUP: u64 = 64;
/// Above the one-step upper bound plus this many interval widths a sample is an outlier: the
/// models learn it, but the rolling errors that weigh them see it damped to that bound.
const OUTLIER_WIDTHS: f64 = 3.0;
/// A pending slot with no forecast (forecasts are never negative). Not NaN: JSON has no NaN,
/// and the state must survive a save and restore.
const NO_FORECAST: f64 = -1.0;
/// Step of adaptive conformal inference (Gibbs & Candes, 2021): after each scored forecast
/// the miscoverage level moves by this times (target - observed miss), so coverage holds in
/// the long run even when bursts and regime changes break exchangeability.
const ACI_STEP: f64 = 0.005;
/// The lowest miscoverage level adaptive conformal inference may reach: below zero the
/// window's quantiles lie past its extremes (extrapolated along its tail, at most an eighth
/// of the window past them). With a floor inside the window, a regime whose misses the last
/// residuals never saw (a holiday, a Monday after a weekend) left the interval at the
/// window's extremes and coverage short (taylor 90.7% day ahead for a 95% target).
const LEVEL_FLOOR: f64 = -2.0 * conformal::BEYOND;

/// Horizons with their own residual window: 1, 4, 16, 64 up to `horizon`, and `horizon`
/// itself. Spread grows smoothly with the horizon (about as its square root), so the others
/// are interpolated; this keeps an update's cost and a tenant's memory near-flat in the
/// horizon (three windows of 2 kB at the default ten-step horizon: full windows were the
/// larger part of the agent's steady-state cycle and memory at 100,000 tenants).
pub fn anchor_horizons(horizon: usize) -> Vec<usize> {
    let mut a: Vec<usize> = [1, 4, 16, 64]
        .into_iter()
        .filter(|&h| h < horizon)
        .collect();
    a.push(horizon.max(1));
    a
}

/// The ways `auto` mixes its models, each a candidate scored like a model. Two cutoffs: narrow
/// (only the models within 10% of the best one's rolling error at a horizon weigh there: a
/// model that is bad a day ahead gets no weight a day ahead) and broad (every model within 5x
/// of the best, weighted by inverse squared error: averaging many models pays on noisy, bursty
/// traffic); each on two memories of the models' errors: short ([`FAST_MEMORY`] samples, to
/// follow bursts and regime changes) and long (four seasons, for errors a day ahead). At each
/// horizon `auto` forecasts with the mix whose own rolling error there is lowest: as good as
/// selection where one model dominates, as averaging where none does.
const MIX_CUTOFFS: [f64; 2] = [1.1, 5.0];
const MIXES: usize = 4;
/// Models `auto` runs at most (its candidates).
const MAX_MODELS: usize = 8;
/// Samples of the short memory of the models' rolling errors.
const FAST_MEMORY: f64 = 50.0;
/// Samples of memory of the mixes' rolling errors.
const MIX_MEMORY: f64 = 5000.0;

/// The horizon between one step and the full one at which every model's (and mix's) error
/// is scored too: the geometric middle. Errors scored only at the two ends and interpolated
/// in log h misjudged the horizons between: day ahead on half-hourly electricity demand the
/// double-seasonal model, best one step out by far, looked best up to half a day out and
/// `auto` followed it there, where the STL-like model was better by a fifth. 0 (none) below
/// [`MIDDLE_FROM`] steps.
pub fn middle_horizon(hmax: usize) -> usize {
    if hmax < MIDDLE_FROM {
        0
    } else {
        ((hmax as f64).sqrt().round() as usize).clamp(1, hmax)
    }
}

/// Horizons shorter than this are interpolated between one step and the full horizon alone:
/// at the agent's default (ten one-second steps) a middle's rings and errors cost 0.5 kB
/// per tenant and about a tenth of the planner's cycle at 100,000 tenants, and the errors a
/// few steps apart differ little.
const MIDDLE_FROM: usize = 16;

/// A model's rolling error at a horizon: its errors one step (`near`), at the middle horizon
/// (`mid`) and at the full one (`far`), interpolated in log h (errors grow fast at short
/// horizons and slowly after) by the horizon's weight `w` from [`log_weights`]: 0..=1 between
/// one step and the middle, 1..=2 between the middle and the full horizon (a table made once
/// instead of logarithms per model, horizon and memory: they were a sixth of a forecast's
/// time). An error not scored yet is interpolated from the others.
fn blend(near: f64, mid: f64, far: f64, w: f64) -> f64 {
    interpolate(known(near, mid, far), w)
}

/// [`blend`] of three errors already filled by [`known`].
#[inline]
fn interpolate((near, mid, far): (f64, f64, f64), w: f64) -> f64 {
    if w <= 1.0 {
        near + w * (mid - near)
    } else {
        mid + (w - 1.0) * (far - mid)
    }
}

/// A rolling error's update with `err`, weight `w`: the error itself when `fresh`.
#[inline]
fn roll(e: &mut f64, err: f64, w: f64, fresh: bool) {
    *e = if fresh { err } else { *e + w * (err - *e) };
}

/// Middle-horizon errors kept for `nm` models at horizon `h`: none without a middle.
fn mids(h: usize, nm: usize) -> usize {
    if middle_horizon(h) > 0 { nm } else { 0 }
}

/// The three errors [`blend`] interpolates, an unknown one (0: not scored yet) filled from
/// the others: no far error, the one-step one everywhere; no middle one, the ends' mean (so
/// the interpolation is the straight one between the ends).
#[inline]
fn known(near: f64, mid: f64, far: f64) -> (f64, f64, f64) {
    if far <= 0.0 {
        (near, near, near)
    } else if mid <= 0.0 {
        (near, 0.5 * (near + far), far)
    } else {
        (near, mid, far)
    }
}

/// Each horizon's weight for [`blend`]: `ln h / ln mid` up to the middle horizon, then
/// `1 + ln(h / mid) / ln(hmax / mid)`: one table per `hmax`, made once per process (every
/// update of every tenant reads it).
fn log_weights(hmax: usize) -> &'static [f64; MAX_HORIZON] {
    static TABLES: std::sync::OnceLock<Vec<[f64; MAX_HORIZON]>> = std::sync::OnceLock::new();
    let tables = TABLES.get_or_init(|| {
        (0..=MAX_HORIZON)
            .map(|hmax| {
                let mut w = [0.0; MAX_HORIZON];
                let mid = middle_horizon(hmax) as f64;
                for (i, v) in w.iter_mut().enumerate().take(hmax) {
                    let h = (i + 1) as f64;
                    *v = if mid == 0.0 {
                        // No middle: straight in log h between the ends (the middle error
                        // [`known`] fills in is their mean).
                        if hmax > 1 {
                            2.0 * h.ln() / (hmax as f64).ln()
                        } else {
                            0.0
                        }
                    } else if h <= mid {
                        if mid > 1.0 { h.ln() / mid.ln() } else { 1.0 }
                    } else {
                        1.0 + (h / mid).ln() / (hmax as f64 / mid).ln()
                    };
                }
                w
            })
            .collect()
    });
    &tables[hmax.min(MAX_HORIZON)]
}

/// A model's rolling errors on one memory: one step, middle and full horizon.
type Errors<'a> = (&'a [f64], &'a [f64], &'a [f64]);

/// The mixes' point forecasts (`out[set * 2 + cutoff]`, see [`MIXES`]) at each horizon `i`
/// for the mixes in `need[i]` (a bit per mix: the others are left at zero), and every model's
/// forecasts at the middle and the full horizon (`scored`, to score them). `sets` are the
/// models' rolling errors on the long and the short memory. One model, or `auto` before
/// warm-up: its forecasts, in every mix.
#[allow(clippy::too_many_arguments)]
fn combine(
    models: &[Model],
    sets: [Errors; 2],
    selected: usize,
    warm: bool,
    out: &mut [[f64; MAX_HORIZON]; MIXES],
    need: &[u8],
    h: usize,
    scored: &mut [(f64, f64)],
) {
    let mid = middle_horizon(h);
    // A model's forecasts at the middle (0 without one) and the full horizon.
    let ends = |m: &Model| (if mid > 0 { m.forecast(mid) } else { 0.0 }, m.forecast(h));
    let of_path = |path: &[f64]| (if mid > 0 { path[mid - 1] } else { 0.0 }, path[h - 1]);
    if models.len() == 1 || !warm {
        models[selected].forecast_into(&mut out[0][..h]);
        for m in 1..MIXES {
            out[m] = out[0];
        }
        for (k, (m, f)) in models.iter().zip(scored.iter_mut()).enumerate() {
            *f = if k == selected {
                of_path(&out[0])
            } else {
                ends(m)
            };
        }
        return;
    }
    let nm = models.len().min(MAX_MODELS);
    let ws = log_weights(h);
    // Each model's three errors on both memories, the unknown ones filled once (no middle
    // horizon: none kept); at horizon `i` its error is `at(set, k, i)`.
    let mut errs = [[(0.0f64, 0.0f64, 0.0f64); MAX_MODELS]; 2];
    for (set, (near, mid_err, far_err)) in sets.iter().enumerate() {
        for k in 0..nm {
            let m = mid_err.get(k).copied().unwrap_or(0.0);
            errs[set][k] = known(near[k], m, far_err[k]);
        }
    }
    let at = |set: usize, k: usize, i: usize| interpolate(errs[set][k], ws[i]);
    let mut best = [[f64::INFINITY; MAX_HORIZON]; 2];
    for (set, b) in best.iter_mut().enumerate() {
        for (i, b) in b[..h].iter_mut().enumerate() {
            *b = (0..nm).map(|k| at(set, k, i)).fold(*b, f64::min).max(1e-9);
        }
    }
    let mut tmp = [0.0f64; MAX_HORIZON];
    let mut total = [[0.0f64; MAX_HORIZON]; MIXES];
    for o in out.iter_mut() {
        o[..h].iter_mut().for_each(|v| *v = 0.0);
    }
    let broad = MIX_CUTOFFS[1];
    for (k, (m, f)) in models.iter().zip(scored.iter_mut()).enumerate().take(nm) {
        let ratio = |set: usize, i: usize| {
            let b = best[set][i];
            (at(set, k, i).max(b * 1e-3), b)
        };
        if (0..h).all(|i| {
            (0..2).all(|set| {
                let (e, b) = ratio(set, i);
                e > broad * b
            })
        }) {
            *f = ends(m);
            continue;
        }
        m.forecast_into(&mut tmp[..h]);
        *f = of_path(&tmp);
        for (i, &wanted) in need.iter().enumerate().take(h) {
            for set in 0..2 {
                if wanted & (0b11 << (set * 2)) == 0 {
                    continue;
                }
                let (e, b) = ratio(set, i);
                let w = 1.0 / (e * e);
                for (c, cutoff) in MIX_CUTOFFS.iter().enumerate() {
                    let mix = set * 2 + c;
                    if wanted & (1 << mix) != 0 && e <= cutoff * b {
                        out[mix][i] += w * tmp[i];
                        total[mix][i] += w;
                    }
                }
            }
        }
    }
    for (o, t) in out.iter_mut().zip(&total) {
        for (v, t) in o[..h].iter_mut().zip(&t[..h]) {
            *v /= t.max(f64::MIN_POSITIVE);
        }
    }
}

/// A forecast as issued: within 0..=MAX_VALUE, and 0 if it is not finite.
fn bounded(v: f64) -> f64 {
    if v.is_finite() {
        v.clamp(0.0, MAX_VALUE)
    } else {
        0.0
    }
}

/// The largest of `at(1..=horizon)` and how many steps ahead it is (the first if several tie).
fn first_peak(horizon: usize, at: impl Fn(usize) -> f64) -> (usize, f64) {
    let mut best = (1, at(1));
    for h in 2..=horizon {
        let v = at(h);
        if v > best.1 {
            best = (h, v);
        }
    }
    best
}

/// Which model forecasts: in the config, `"auto"` or a model's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelChoice {
    Auto,
    #[serde(untagged)]
    Fixed(ModelKind),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub interval_s: f64,
    /// Horizon in samples, 1..=[`MAX_HORIZON`].
    pub horizon: usize,
    /// Daily season in samples (1 = none).
    pub season: usize,
    /// Weekly season in samples, for the multi-seasonal model (1 = none).
    pub weekly: usize,
    pub confidence: f64,
    pub model: ModelChoice,
    pub alert_mase: f64,
    #[serde(default)]
    pub intervals: IntervalMethod,
}

impl Settings {
    /// The models `auto` chooses among: seasonal ones only when there is a season, weekly
    /// ones when there is a week.
    pub fn candidates(&self) -> Vec<ModelKind> {
        let mut k = vec![ModelKind::Ewma, ModelKind::Holt, ModelKind::Ar];
        if self.season > 1 {
            k.extend([ModelKind::SeasonalNaive, ModelKind::HoltWinters]);
        }
        if self.has_week() {
            k.push(ModelKind::WeeklyNaive);
            // The double-seasonal model runs a grid of members side by side, the STL-like one
            // two more profiles: worth their memory where forecasts are made at the seasons'
            // resolution, not at one-second cycles whose horizon is far shorter than a slot
            // (there the short-term models lead).
            if self.at_seasons_resolution() {
                k.extend([ModelKind::Mstl, ModelKind::Stl]);
            }
        }
        k
    }

    /// A daily and a longer weekly season.
    fn has_week(&self) -> bool {
        self.weekly > self.season && self.season > 1
    }

    /// Forecasts made at the seasons' resolution: a week of at most
    /// [`models::WEEKLY_SLOTS`] samples (intervals of five minutes or more).
    fn at_seasons_resolution(&self) -> bool {
        self.has_week() && self.weekly <= models::WEEKLY_SLOTS
    }
}

impl Settings {
    /// Residuals per conformal window: two weekly seasons where forecasts are made at the
    /// seasons' resolution (as for the double-seasonal model), within
    /// [`conformal::MAX_WINDOW`]; else [`conformal::WINDOW`].
    /// A window shorter than a week has not seen every day's errors: day ahead on half-hourly
    /// electricity demand (taylor), 256 residuals are 5.3 days and covered 90.7% for a 95%
    /// target, two weeks (672) 92.6%. At one-second cycles a week cannot be held, and the
    /// spread a ten-second horizon needs changes within minutes.
    pub fn residual_window(&self) -> usize {
        if self.at_seasons_resolution() {
            (2 * self.weekly).clamp(conformal::WINDOW, conformal::MAX_WINDOW)
        } else {
            conformal::WINDOW
        }
    }
}

/// A point forecast and its prediction interval, in bytes/s; always `0 <= lo <= mean <= hi`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
}

/// Demand known in advance (config `events`): `rate` bytes/s from `start` for `duration_s`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct KnownEvent {
    pub start: f64,
    pub duration_s: f64,
    pub rate: f64,
}

impl KnownEvent {
    fn rate_at(&self, ts: f64) -> f64 {
        if ts >= self.start && ts < self.start + self.duration_s {
            self.rate
        } else {
            0.0
        }
    }
}

/// What an update did with its sample.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    Accepted,
    /// Accepted after filling `missing` skipped intervals with the model's own forecasts.
    Gap {
        missing: u64,
    },
    /// Accepted, but an enormous outlier: the seasonal models learned it as it is; the level
    /// models and the rolling errors saw it damped to `used`, so one spike neither throws a
    /// level off nor overturns which model `auto` trusts.
    Clamped {
        used: f64,
    },
    /// Not used; the state is unchanged.
    Rejected(Rejection),
    /// A model's state went non-finite; that model started afresh.
    Restored,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    NotFinite,
    Negative,
    Absurd,
    /// Timestamp not after the previous sample's.
    OutOfOrder,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Accepted => f.write_str("accepted"),
            Outcome::Gap { missing } => write!(
                f,
                "accepted after a gap of {missing} intervals, filled with forecasts"
            ),
            Outcome::Clamped { used } => write!(f, "outlier: scored as {used:.0}"),
            Outcome::Rejected(r) => write!(f, "sample rejected ({r:?}); state unchanged"),
            Outcome::Restored => f.write_str("a model's state went non-finite; it starts afresh"),
        }
    }
}

/// Asks the CPU to bring `v`'s cache line in (a hint: never faults, no effect elsewhere than
/// x86-64).
#[inline(always)]
fn prefetch<T>(v: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it reads nothing architecturally and never faults. SSE is
    // part of the x86-64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch(
            std::ptr::from_ref(v).cast::<i8>(),
            core::arch::x86_64::_MM_HINT_T0,
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// [`prefetch`] of every cache line of `v`.
#[inline(always)]
fn prefetch_all<T>(v: &[T]) {
    let bytes = std::mem::size_of_val(v);
    let base = v.as_ptr().cast::<u8>();
    let mut off = 0;
    while off < bytes {
        // SAFETY: `off` is within the slice's bytes.
        prefetch(unsafe { &*base.add(off) });
        off += 64;
    }
}

/// The per-tenant forecaster: all models, the selection, the intervals, accuracy and bursts.
/// Serializable, so the agent can save it and warm-start after a restart.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Forecaster {
    settings: Settings,
    models: Vec<Model>,
    /// Rolling one-step absolute error of each model.
    errors: Vec<f64>,
    /// Rolling full-horizon absolute error of each model.
    far_errors: Vec<f64>,
    /// The same two on the short memory ([`FAST_MEMORY`]).
    #[serde(default)]
    fast_errors: Vec<f64>,
    #[serde(default)]
    fast_far_errors: Vec<f64>,
    /// Rolling errors at the middle horizon ([`middle_horizon`]), long and short memory.
    #[serde(default)]
    mid_errors: Vec<f64>,
    #[serde(default)]
    fast_mid_errors: Vec<f64>,
    /// Per model, its full-horizon forecasts of the last `horizon` updates (a ring).
    far: Rings,
    /// Per model, its middle-horizon forecasts of the last `middle_horizon` updates.
    #[serde(default)]
    mid: Rings,

    /// The same for `auto`'s four mixes (see [`MIX_CUTOFFS`]): rolling errors one step and at
    /// the full horizon, full-horizon forecasts of the last `horizon` updates (a ring), and
    /// the one-step forecast of the last update.
    #[serde(default)]
    mixes: Mixes,
    selected: usize,
    /// Seasonal naive for MASE's scale, when the models have none of their own (`auto` has:
    /// a second copy was 1.2 kB and one more update per tenant and sample).
    #[serde(default)]
    naive: Option<Model>,
    /// Horizons that keep residual windows (see [`anchor_horizons`]); others interpolate.
    anchors: Vec<usize>,
    /// Per anchor: recent out-of-sample residuals.
    windows: Vec<Residuals>,
    /// Per anchor: the miscoverage level the interval is drawn at (adapted, see ACI_STEP).
    levels: Vec<f64>,
    /// `pending[slot * anchors + k]`: the forecast issued at update `slot` for `anchors[k]`
    /// later (only those are scored: a full row per update was horizon^2 values, 32 kB per
    /// tenant at the longest horizon).
    pending: Vec<f64>,
    /// The forecasts of every horizon issued at the last update.
    #[serde(default)]
    latest: Vec<f64>,
    /// Updates accepted so far (and forecasts issued).
    n: u64,
    last_ts: Option<f64>,
    /// The one-step prediction made for the next sample.
    next: Option<Prediction>,
    /// The same from the model alone (no events, no predicted bursts): bursts are detected
    /// against it, so a predicted recurring burst is still seen when it comes.
    next_model: Option<(f64, f64)>,
    accuracy: AccuracyTracker,
    bursts: BurstTracker,
    events: Vec<KnownEvent>,
    pub counts: Counts,
    /// Each anchor's residual bounds as of the last update: forecasts read these few values
    /// instead of two quantiles of a 2 kB window per horizon (cache misses that were half
    /// of a cycle's time with 10,000 tenants). Empty after deserializing: then computed.
    #[serde(skip)]
    bounds: Vec<Option<(f64, f64)>>,
}

/// `auto`'s two mixes scored like models.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Mixes {
    near: [f64; MIXES],
    far_err: [f64; MIXES],
    far: Rings,
    next: [f64; MIXES],
    #[serde(default)]
    mid_err: [f64; MIXES],
    #[serde(default)]
    mid: Rings,
}

impl Mixes {
    /// Scores the forecasts made for `value` (one step ago, and the middle and the full
    /// horizon ago at ring slots `slots`).
    fn score(&mut self, value: f64, slots: (usize, usize), weight: f64, first: bool) {
        let scored = |e: &mut f64, f: Option<f64>| {
            if let Some(f) = f.filter(|f| *f >= 0.0) {
                let fresh = *e == 0.0;
                roll(e, (value - f).abs(), weight, fresh);
            }
        };
        for m in 0..MIXES {
            roll(
                &mut self.near[m],
                (value - self.next[m]).abs(),
                weight,
                first,
            );
            scored(&mut self.mid_err[m], self.mid.get(m, slots.0));
            scored(&mut self.far_err[m], self.far.get(m, slots.1));
        }
    }

    /// Which mix forecasts the horizon of weight `w` ([`log_weights`]): the one with the
    /// lowest rolling error there.
    fn pick(&self, w: f64) -> usize {
        let e = |m: usize| blend(self.near[m], self.mid_err[m], self.far_err[m], w);
        (1..MIXES).fold(0, |b, m| if e(m) < e(b) { m } else { b })
    }
}

/// How many samples took each path, for the agent's logs and the API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub accepted: u64,
    pub rejected: u64,
    pub imputed: u64,
    pub clamped: u64,
    pub restored: u64,
    pub switches: u64,
}

impl Forecaster {
    pub fn new(settings: Settings) -> Forecaster {
        let kinds = match settings.model {
            ModelChoice::Auto => settings.candidates(),
            ModelChoice::Fixed(k) => vec![k],
        };
        let (season, weekly) = (settings.season.max(1), settings.weekly.max(1));
        let h = settings.horizon.clamp(1, MAX_HORIZON);
        Forecaster {
            models: kinds
                .iter()
                .map(|k| Model::new(*k, season, weekly, h))
                .collect(),
            errors: vec![0.0; kinds.len()],
            far_errors: vec![0.0; kinds.len()],
            fast_errors: vec![0.0; kinds.len()],
            fast_far_errors: vec![0.0; kinds.len()],
            mid_errors: vec![0.0; mids(h, kinds.len())],
            fast_mid_errors: vec![0.0; mids(h, kinds.len())],
            far: Rings::new(kinds.len(), h, NO_FORECAST),
            mid: Rings::new(kinds.len(), middle_horizon(h), NO_FORECAST),

            mixes: Mixes {
                far: Rings::new(MIXES, h, NO_FORECAST),
                mid: Rings::new(MIXES, middle_horizon(h), NO_FORECAST),
                ..Mixes::default()
            },
            selected: 0,
            naive: (!kinds.contains(&ModelKind::SeasonalNaive))
                .then(|| Model::new(ModelKind::SeasonalNaive, season, weekly, h)),
            windows: vec![
                Residuals::new(settings.intervals, settings.residual_window());
                anchor_horizons(h).len()
            ],
            levels: vec![1.0 - settings.confidence; anchor_horizons(h).len()],
            anchors: anchor_horizons(h),
            pending: vec![NO_FORECAST; h * anchor_horizons(h).len()],
            latest: vec![NO_FORECAST; h],
            n: 0,
            last_ts: None,
            next: None,
            next_model: None,
            accuracy: AccuracyTracker::default(),
            bursts: BurstTracker::default(),
            events: Vec::new(),
            counts: Counts::default(),
            bounds: Vec::new(),
            settings: Settings {
                horizon: h,
                ..settings
            },
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Known demand to add; applies to forecasts issued from the next update on. The same
    /// events again change nothing (a reload re-sets every tenant's: re-issuing 100,000
    /// forecasts for nothing was most of a reload's time).
    pub fn set_events(&mut self, events: Vec<KnownEvent>) {
        if events == self.events {
            return;
        }
        self.events = events;
        if self.n > 0 {
            // A loaded state may lack what `issue` fills (see `fill_missing_state`).
            self.fill_missing_state();
            self.issue();
        }
    }

    /// The model forecasting now.
    pub fn model(&self) -> ModelKind {
        self.models[self.selected].kind()
    }

    pub fn accuracy(&self) -> Accuracy {
        self.accuracy.accuracy()
    }

    /// True when the rolling MASE is above the configured alert threshold (with enough samples).
    pub fn accuracy_alert(&self) -> bool {
        let a = self.accuracy();
        a.samples >= 100 && a.mase.is_some_and(|m| m > self.settings.alert_mase)
    }

    pub fn bursts(&self) -> &BurstTracker {
        &self.bursts
    }

    /// Feeds the sample for unix time `ts`: `value` offered bytes/s.
    pub fn update(&mut self, ts: f64, value: f64) -> Outcome {
        self.fill_missing_state();
        let reject = |s: &mut Self, r| {
            s.counts.rejected += 1;
            Outcome::Rejected(r)
        };
        if !value.is_finite() || !ts.is_finite() {
            return reject(self, Rejection::NotFinite);
        }
        if value < 0.0 {
            return reject(self, Rejection::Negative);
        }
        if value > MAX_VALUE {
            return reject(self, Rejection::Absurd);
        }
        let mut outcome = Outcome::Accepted;
        if let Some(last) = self.last_ts {
            if ts <= last {
                return reject(self, Rejection::OutOfOrder);
            }
            let steps = ((ts - last) / self.settings.interval_s).round() as u64;
            if steps > 1 {
                self.fill_gap(steps - 1);
                outcome = Outcome::Gap { missing: steps - 1 };
            }
        }

        self.score_pending(value);
        let (used, clamped) = self.observe(ts, value);
        if let Some(o) = clamped {
            outcome = o;
        }
        self.learn(value, used);
        if !self.models.iter().all(Model::is_finite) {
            self.restore();
            outcome = Outcome::Restored;
        }
        self.n += 1;
        self.last_ts = Some(ts);
        self.issue();
        self.counts.accepted += 1;
        outcome
    }

    /// The seasonal naive MASE is scaled by: the models' own, or the one kept beside them.
    fn naive(&self) -> &Model {
        self.naive
            .as_ref()
            .or_else(|| {
                self.models
                    .iter()
                    .find(|m| m.kind() == ModelKind::SeasonalNaive)
            })
            // Never reached: a forecaster without a seasonal naive model keeps its own (and
            // fill_missing_state gives one to a saved forecaster that lacks both).
            .unwrap_or(&self.models[0])
    }

    /// A forecaster saved before the short-memory errors and the mixes existed starts them
    /// afresh (from the long-memory errors), instead of indexing empty vectors; one saved
    /// without a seasonal naive of any kind gets its own.
    fn fill_missing_state(&mut self) {
        if self.naive.is_none()
            && !self
                .models
                .iter()
                .any(|m| m.kind() == ModelKind::SeasonalNaive)
        {
            let (season, weekly) = (self.settings.season.max(1), self.settings.weekly.max(1));
            self.naive = Some(Model::new(
                ModelKind::SeasonalNaive,
                season,
                weekly,
                self.settings.horizon,
            ));
        }
        let nm = self.models.len();
        if self.fast_errors.len() != nm || self.fast_far_errors.len() != nm {
            self.fast_errors = self.errors.clone();
            self.fast_far_errors = self.far_errors.clone();
        }
        let h = self.settings.horizon;
        let na = self.anchors.len();
        if self.latest.len() != h || self.pending.len() != h * na {
            self.pending_from_rows();
        }
        if self.mixes.far.len() != h || self.mixes.far.count() != MIXES {
            self.mixes.far = Rings::new(MIXES, h, NO_FORECAST);
        }
        // Saved before the middle horizon was scored: its errors start unknown (interpolated
        // from the ends until scored).
        let mid = middle_horizon(h);
        let n_mid = mids(h, nm);
        if self.mid_errors.len() != n_mid || self.fast_mid_errors.len() != n_mid {
            self.mid_errors = vec![0.0; n_mid];
            self.fast_mid_errors = vec![0.0; n_mid];
        }
        // Without a middle the rings are empty (a count of 0 whatever the models).
        if self.mid.len() != mid || (mid > 0 && self.mid.count() != nm) {
            self.mid = Rings::new(nm, mid, NO_FORECAST);
        }

        if self.mixes.mid.len() != mid || (mid > 0 && self.mixes.mid.count() != MIXES) {
            self.mixes.mid = Rings::new(MIXES, mid, NO_FORECAST);
            self.mixes.mid_err = [0.0; MIXES];
        }
    }

    /// Pending forecasts saved as full rows (`pending[slot * horizon + h - 1]`, before only
    /// the anchors' were kept) into the anchors' and the last row; anything else starts
    /// afresh.
    fn pending_from_rows(&mut self) {
        let (h, na) = (self.settings.horizon, self.anchors.len());
        let rows = std::mem::take(&mut self.pending);
        self.pending = vec![NO_FORECAST; h * na];
        self.latest = vec![NO_FORECAST; h];
        if rows.len() != h * h {
            return;
        }
        for slot in 0..h {
            for (k, &a) in self.anchors.iter().enumerate() {
                self.pending[slot * na + k] = rows[slot * h + a - 1];
            }
        }
        if self.n > 0 {
            let slot = ((self.n - 1) % h as u64) as usize;
            self.latest.copy_from_slice(&rows[slot * h..(slot + 1) * h]);
        }
    }

    /// Scores what was forecast for this sample at every anchor horizon before learning from
    /// it: residual windows, adaptive conformal levels, and the bounds they give.
    fn score_pending(&mut self, value: f64) {
        let h_max = self.settings.horizon;
        let target = 1.0 - self.settings.confidence;
        for k in 0..self.anchors.len() {
            let h = self.anchors[k];
            if self.n >= h as u64 {
                let slot = ((self.n - h as u64) % h_max as u64) as usize;
                let f = self.pending[slot * self.anchors.len() + k];
                if f >= 0.0 {
                    let r = value - f;
                    // Adaptive conformal levels for windows; a tracker adapts by itself.
                    if let (Some((lo, hi)), IntervalMethod::Window) =
                        (self.residual_bounds(k), self.settings.intervals)
                    {
                        let miss = if lo <= r && r <= hi { 0.0 } else { 1.0 };
                        self.levels[k] =
                            (self.levels[k] + ACI_STEP * (target - miss)).clamp(LEVEL_FLOOR, 0.5);
                    }
                    self.windows[k].push(r, target);
                }
            }
        }
        self.bounds.clear();
        for k in 0..self.anchors.len() {
            let b = self.window_bounds(k);
            self.bounds.push(b);
        }
    }

    /// Records the sample against the last forecast (accuracy, bursts) and returns the value
    /// the models' errors are scored against: the sample, or the outlier bound it exceeded,
    /// with the outcome that says so.
    fn observe(&mut self, ts: f64, value: f64) -> (f64, Option<Outcome>) {
        let naive_abs = (value - self.naive().forecast(1)).abs();
        let Some(p) = self.next else {
            return (value, None);
        };
        // The score starts again at the first full season: before it the seasonal naive has
        // no season to repeat (it is the last value) and the seasonal models are warming up,
        // a different contest. Carried over, those cycles kept MASE above 1 for hundreds of
        // samples after a warm start (1.66 after 100, 0.94 after 540 on a periodic series
        // whose forecasts beat the naive from the second season on), so the allocator
        // distrusted forecasts that were good.
        if self.settings.season > 1 && self.n == self.settings.season as u64 {
            self.accuracy = AccuracyTracker::default();
        }
        self.accuracy.record(value, p.mean, naive_abs, p.lo, p.hi);
        if let Some((mean, hi)) = self.next_model {
            self.bursts
                .observe(ts, self.settings.interval_s, value, mean, hi);
        }
        if self.n >= WARMUP && self.windows[0].len() >= 32 {
            // windows[0] is horizon 1: anchors always start at 1.
            let cap = p.hi + OUTLIER_WIDTHS * (p.hi - p.lo).max(1.0);
            if value > cap {
                self.counts.clamped += 1;
                return (cap, Some(Outcome::Clamped { used: cap }));
            }
        }
        (value, None)
    }

    /// The seasonal models learn the sample as it is (an outlier included: a clamp written into
    /// a season or a naive's history would come back a season later, and would fight a real
    /// change); the level models and every rolling error, which weighs the models, see it
    /// damped to `used`.
    fn learn(&mut self, value: f64, used: f64) {
        let slot = self.next_slot();
        let mid_slot = self.mid_slot(self.n);
        let weight = self.error_weight();
        for (k, m) in self.models.iter_mut().enumerate() {
            let err = (used - m.forecast(1)).abs();
            roll(&mut self.errors[k], err, weight, self.n == 0);
            roll(
                &mut self.fast_errors[k],
                err,
                1.0 / FAST_MEMORY,
                self.n == 0,
            );
            // The full-horizon forecast made `horizon` updates ago targets this sample.
            if let Some(f) = self.far.get(k, slot).filter(|f| *f >= 0.0) {
                let err = (used - f).abs();
                let fresh = self.far_errors[k] == 0.0;
                roll(&mut self.far_errors[k], err, weight, fresh);
                roll(&mut self.fast_far_errors[k], err, 1.0 / FAST_MEMORY, fresh);
            }
            if let Some(f) = self.mid.get(k, mid_slot).filter(|f| *f >= 0.0) {
                let err = (used - f).abs();
                let fresh = self.mid_errors[k] == 0.0;
                roll(&mut self.mid_errors[k], err, weight, fresh);
                roll(&mut self.fast_mid_errors[k], err, 1.0 / FAST_MEMORY, fresh);
            }
            // Seasonal state and a naive's history take the sample as it is; a level model
            // takes it damped, so one counter glitch does not throw the level off for minutes.
            m.update(if m.is_seasonal() { value } else { used });
        }
        if self.models.len() > 1 {
            // Which mix suits a series is a property of the series, not of the last day:
            // judged on a long memory (a running mean, then MIX_MEMORY samples), so the
            // choice does not flip with noise.
            let w = (1.0 / (self.n + 1) as f64).max(1.0 / MIX_MEMORY);
            self.mixes.score(used, (mid_slot, slot), w, self.n == 0);
        }
        if let Some(naive) = &mut self.naive {
            naive.update(value);
        }
        if self.n >= WARMUP {
            self.select();
        }
    }

    /// EWMA weight of the newest error in the rolling errors (see [`ERROR_MEMORY`]).
    fn error_weight(&self) -> f64 {
        1.0 / (4.0 * self.settings.season as f64).clamp(ERROR_MEMORY.0, ERROR_MEMORY.1)
    }

    /// Model `k`'s rolling error at the full horizon (one step until that is known).
    fn horizon_error(&self, k: usize) -> f64 {
        let far = self.far_errors[k];
        if far > 0.0 { far } else { self.errors[k] }
    }

    /// The model `auto` leans on most at the full horizon, reported as its current model;
    /// with hysteresis, so the report does not flicker between near-equal models.
    fn select(&mut self) {
        let best = (0..self.errors.len())
            .min_by(|&a, &b| self.horizon_error(a).total_cmp(&self.horizon_error(b)))
            .unwrap_or(0);
        if best != self.selected
            && self.horizon_error(best) < SWITCH_MARGIN * self.horizon_error(self.selected)
        {
            self.selected = best;
            self.counts.switches += 1;
        }
    }

    /// Starts afresh each model whose state went non-finite. It re-learns from the next
    /// sample on, trusted least meanwhile (the largest error of the others); the other models
    /// keep forecasting. No snapshot is kept: at 100,000s of tenants a copy of every model's
    /// seasons would double the agent's memory for a case bounded inputs make rare.
    fn restore(&mut self) {
        self.counts.restored += 1;
        let worst = self
            .errors
            .iter()
            .copied()
            .filter(|e| e.is_finite())
            .fold(0.0, f64::max);
        let (season, weekly) = (self.settings.season.max(1), self.settings.weekly.max(1));
        for k in 0..self.models.len() {
            if !self.models[k].is_finite() {
                self.models[k] =
                    Model::new(self.models[k].kind(), season, weekly, self.settings.horizon);
                self.errors[k] = worst;
                self.far_errors[k] = 0.0;
                self.fast_errors[k] = worst;
                self.fast_far_errors[k] = 0.0;
                for e in [&mut self.mid_errors, &mut self.fast_mid_errors] {
                    if let Some(e) = e.get_mut(k) {
                        *e = 0.0;
                    }
                }
                self.far.ring_mut(k).fill(NO_FORECAST);
                self.mid.ring_mut(k).fill(NO_FORECAST);
            }
        }
    }

    /// Fills `missing` skipped intervals with each model's own one-step forecast, so seasonal
    /// positions stay aligned with time; forecasts pending for the gap are void.
    fn fill_gap(&mut self, missing: u64) {
        self.counts.imputed += missing;
        for _ in 0..missing.min(MAX_IMPUTE) {
            for m in &mut self.models {
                let f = m.forecast(1);
                m.update(f);
            }
            if let Some(naive) = &mut self.naive {
                let f = naive.forecast(1);
                naive.update(f);
            }
        }
        self.pending.fill(NO_FORECAST);
        self.latest.fill(NO_FORECAST);
        self.far.all_mut().fill(NO_FORECAST);
        self.mid.all_mut().fill(NO_FORECAST);
        self.mixes.far.all_mut().fill(NO_FORECAST);
        self.mixes.mid.all_mut().fill(NO_FORECAST);
        self.next = None;
        self.next_model = None;
    }

    /// Issues the forecasts of every horizon from the current state: the selected model's
    /// point forecast plus known events and predicted recurring bursts. Residuals are scored
    /// against exactly these, so the intervals are calibrated for what is reported.
    fn issue(&mut self) {
        let h_max = self.settings.horizon;
        let slot = ((self.n - 1) % h_max as u64) as usize;
        let last = self.last_ts.unwrap_or(0.0);
        let step = self.settings.interval_s;
        let live = self.bursts.live(last + step, last + h_max as f64 * step);
        // A seasonal naive chosen as such stays exactly one: it is the baseline.
        let raise = !matches!(
            self.settings.model,
            ModelChoice::Fixed(ModelKind::SeasonalNaive | ModelKind::WeeklyNaive)
        );
        let mut scored = [(0.0f64, 0.0f64); MAX_MODELS];
        let nm = self.models.len();
        let (mid, mid_slot) = (middle_horizon(h_max), self.mid_slot(self.n - 1));
        let mut mixed = [[0.0f64; MAX_HORIZON]; MIXES];
        // Every mix is scored at the scored horizons; in between, only the mix each horizon
        // is forecast by is worth computing (it is picked on errors known now).
        let ws = log_weights(h_max);
        let mut picks = [0u8; MAX_HORIZON];
        let mut need = [0u8; MAX_HORIZON];
        for i in 0..h_max {
            picks[i] = self.mixes.pick(ws[i]) as u8;
            need[i] = if i == 0 || i + 1 == mid || i + 1 == h_max {
                (1 << MIXES) - 1
            } else {
                1 << picks[i]
            };
        }
        combine(
            &self.models,
            [
                (&self.errors, &self.mid_errors, &self.far_errors),
                (
                    &self.fast_errors,
                    &self.fast_mid_errors,
                    &self.fast_far_errors,
                ),
            ],
            self.selected,
            self.n >= WARMUP,
            &mut mixed,
            &need[..h_max],
            h_max,
            &mut scored[..nm],
        );
        for (k, (m, f)) in scored[..nm].iter().enumerate() {
            self.mid.set(k, mid_slot, m.max(0.0));
            self.far.set(k, slot, f.max(0.0));
        }
        if nm > 1 {
            let mx = &mut self.mixes;
            for (m, (next, path)) in mx.next.iter_mut().zip(&mixed).enumerate() {
                *next = path[0].max(0.0);
                if mid > 0 {
                    mx.mid.set(m, mid_slot, path[mid - 1].max(0.0));
                }
                mx.far.set(m, slot, path[h_max - 1].max(0.0));
            }
        }
        let row = &mut self.latest[..h_max];
        for (i, v) in row.iter_mut().enumerate() {
            *v = mixed[usize::from(picks[i])][i];
        }
        let model1 = row[0].max(0.0);
        for (h, v) in (1..=h_max).zip(row.iter_mut()) {
            let ts = last + h as f64 * step;
            *v = v.max(0.0);
            if !self.events.is_empty() {
                *v += self.events.iter().map(|e| e.rate_at(ts)).sum::<f64>();
            }
            if raise && !live.is_empty() {
                *v = v.max(live.level_at(ts));
            }
        }
        let na = self.anchors.len();
        for (k, &a) in self.anchors.iter().enumerate() {
            self.pending[slot * na + k] = self.latest[a - 1];
        }
        let p = self.predict(1);
        self.next = Some(p);
        self.next_model = Some((model1, model1 + (p.hi - p.mean)));
    }

    /// The step before [`Forecaster::prefetch`]: the lines of this forecaster itself (about a
    /// kilobyte: its vectors' pointers, the mixes, the trackers), which `prefetch` reads to
    /// find its vectors.
    #[inline]
    pub fn prefetch_self(&self) {
        prefetch_all(std::slice::from_ref(self));
    }

    /// Asks for the cache lines of this forecaster's own vectors, which its next update
    /// reads first. With 100,000 tenants every update starts with cache misses on some thirty
    /// small allocations, and the cycle waits on memory, not arithmetic: callers ask a few
    /// tenants ahead ([`Forecaster::prefetch_deep`] for what these vectors point to).
    #[inline]
    pub fn prefetch(&self) {
        prefetch_all(&self.models);
        prefetch_all(&self.windows);
        prefetch_all(&self.errors);
        prefetch_all(&self.far_errors);
        prefetch_all(&self.fast_errors);
        prefetch_all(&self.fast_far_errors);
        prefetch_all(&self.mid_errors);
        prefetch_all(&self.fast_mid_errors);
        prefetch_all(&self.levels);
        prefetch_all(&self.bounds);
        // The anchors' pending forecasts are a few lines: all of them (each anchor scores a
        // different slot).
        prefetch_all(&self.pending);
        prefetch_all(&self.latest);
    }

    /// The slot of the horizon-long rings (pending forecasts, far forecasts) the next update
    /// scores and fills.
    fn next_slot(&self) -> usize {
        (self.n % self.settings.horizon.max(1) as u64) as usize
    }

    /// The middle-horizon rings' slot of update `n` (written by the forecast issued after
    /// update `n`, read when the sample `middle_horizon` later is scored).
    fn mid_slot(&self, n: u64) -> usize {
        n.checked_rem(middle_horizon(self.settings.horizon) as u64)
            .unwrap_or(0) as usize
    }

    /// The second step of [`Forecaster::prefetch`], once its lines are in: the models'
    /// slots, the residual windows, the rings at this update's slot.
    #[inline]
    pub fn prefetch_deep(&self) {
        for m in &self.models {
            m.prefetch();
        }
        for w in &self.windows {
            w.prefetch();
        }
        let slot = self.next_slot();
        for rings in [&self.far, &self.mixes.far] {
            for v in rings.all().iter().skip(slot).step_by(rings.len().max(1)) {
                prefetch(v);
            }
        }
        // The middle rings are a few values per model: all of them.
        prefetch_all(self.mid.all());
        prefetch_all(self.mixes.mid.all());
    }

    /// The forecast `h` (1..=horizon) intervals after the last sample.
    pub fn forecast(&self, h: usize) -> Prediction {
        self.predict(h.clamp(1, self.settings.horizon))
    }

    /// The residual quantiles of anchor `k` at its adapted level, once there are enough.
    fn residual_bounds(&self, k: usize) -> Option<(f64, f64)> {
        match self.bounds.get(k) {
            Some(b) => *b,
            None => self.window_bounds(k),
        }
    }

    /// Anchor `k`'s residual quantiles at its current level.
    fn window_bounds(&self, k: usize) -> Option<(f64, f64)> {
        let w = &self.windows[k];
        if w.len() < 20 {
            return None;
        }
        w.bounds(self.levels[k])
    }

    /// Residual bounds for any horizon: its anchor's, or interpolated between the two anchors
    /// around it.
    fn bounds_at(&self, h: usize) -> Option<(f64, f64)> {
        let k = self.anchors.partition_point(|&a| a < h);
        let at = self.anchors.get(k).copied()?;
        let upper = self.residual_bounds(k)?;
        if at == h || k == 0 {
            return Some(upper);
        }
        let lower = self.residual_bounds(k - 1)?;
        // Spread grows about as the square root of the horizon: interpolated in sqrt(h).
        let (a, b) = ((self.anchors[k - 1] as f64).sqrt(), (at as f64).sqrt());
        let w = ((h as f64).sqrt() - a) / (b - a);
        Some((
            lower.0 + w * (upper.0 - lower.0),
            lower.1 + w * (upper.1 - lower.1),
        ))
    }

    /// The largest point forecast within the horizon, how many steps ahead (the first if
    /// several tie), with its interval: one interval computed instead of one per horizon.
    pub fn peak(&self) -> (usize, Prediction) {
        let (h, _) = first_peak(self.settings.horizon, |h| self.point(h));
        (h, self.predict(h))
    }

    /// The seasonal naive's outlook: its next forecast and the horizon's peak (how many steps
    /// ahead), each with the width of this forecaster's own interval there. For a tenant whose
    /// forecasts are worse than the naive's (rolling MASE >= 1): the naive is then the better
    /// forecast of the two, and the width of the worse one is a safe bound for it.
    /// The change over the next `h` steps as the seasonal naive saw it a season ago: a ramp
    /// seen every day, without any model's level. Where the naive keeps a slot per several
    /// samples, the change is the slope between the slots around now, spread per step.
    pub fn seasonal_change(&self, h: usize) -> f64 {
        let naive = self.naive();
        let stride = match naive {
            Model::SeasonalNaive(n) => n.stride(),
            _ => 1,
        };
        let w = stride.max(h);
        let change = (naive.forecast(1 + w) - naive.forecast(1)) * h as f64 / w as f64;
        if change.is_finite() { change } else { 0.0 }
    }

    pub fn naive_outlook(&self) -> (Prediction, usize, Prediction) {
        let naive = self.naive();
        let at = |h: usize| bounded(naive.forecast(h));
        let around = |h: usize, v: f64| {
            let own = self.predict(h);
            Prediction {
                mean: v,
                lo: (v - (own.mean - own.lo)).max(0.0),
                hi: v + (own.hi - own.mean),
            }
        };
        let peak = first_peak(self.settings.horizon, at);
        (around(1, at(1)), peak.0, around(peak.0, peak.1))
    }

    /// The point forecast `h` steps ahead, finite and within 0..=MAX_VALUE.
    fn point(&self, h: usize) -> f64 {
        let h_max = self.settings.horizon;
        let base = if self.n == 0 {
            0.0
        } else {
            self.latest
                .get(h.clamp(1, h_max) - 1)
                .copied()
                .unwrap_or(0.0)
        };
        // A model extrapolating a wild series can overflow where its state did not: such a
        // forecast falls back to the naive one, and nothing is forecast beyond MAX_VALUE.
        let base = if base.is_finite() {
            base
        } else {
            self.naive().forecast(h)
        };
        bounded(base)
    }

    fn predict(&self, h: usize) -> Prediction {
        let base = self.point(h);
        let (mut lo, mut hi) = match (self.bounds_at(h), self.residual_bounds(0)) {
            (Some((l, u)), _) => (base + l, base + u),
            // Too few residuals at this horizon yet: the one-step spread, widened.
            (None, Some((l, u))) => {
                let s = (h as f64).sqrt();
                (base + l * s, base + u * s)
            }
            // Nothing learned yet: an honest, wide interval.
            (None, None) => (0.0, base * 2.0 + 1.0),
        };
        let mean = base;
        lo = if lo.is_finite() {
            lo.clamp(0.0, mean)
        } else {
            0.0
        };
        hi = if hi.is_finite() {
            hi.clamp(mean, MAX_VALUE.max(mean))
        } else {
            MAX_VALUE.max(mean)
        };
        Prediction { mean, lo, hi }
    }
}

#[cfg(test)]
mod tests;
