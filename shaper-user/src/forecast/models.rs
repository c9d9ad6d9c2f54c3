//! The point-forecast models. Each is online: `update` is O(1) (AR refits a bounded window
//! every few updates, so it is O(1) amortized), and `forecast(h)` is O(1) (AR: O(p h)).
use half::bf16;
use serde::{Deserialize, Serialize};

use super::linalg::{MAX_COLS, Normal};

/// Which model, as named in the config and the CLI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    SeasonalNaive,
    /// y(t+h) = y(t+h-week): the seasonal naive of the weekly season.
    WeeklyNaive,
    Ewma,
    Holt,
    HoltWinters,
    /// Level, a daily and a weekly additive season and an AR(1) on its errors (Taylor's
    /// double-seasonal Holt-Winters, 2003), its smoothing parameters refitted every week:
    /// the online counterpart of MSTL's decomposition.
    Mstl,
    /// Daily and weekly profiles learned on what a slow trend leaves, forecast from the latest
    /// deseasonalised level: the online counterpart of MSTL as statsforecast forecasts with it.
    Stl,
    Ar,
}

impl ModelKind {
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::SeasonalNaive => "seasonal_naive",
            ModelKind::WeeklyNaive => "weekly_naive",
            ModelKind::Ewma => "ewma",
            ModelKind::Holt => "holt",
            ModelKind::HoltWinters => "holt_winters",
            ModelKind::Mstl => "mstl",
            ModelKind::Stl => "stl",
            ModelKind::Ar => "ar",
        }
    }
}

/// Damping of trends: forecasts of traffic should not run off to infinity.
const PHI: f64 = 0.98;

/// (base + h - 1) mod m without a division when h <= m (horizons are short, seasons long).
#[inline]
fn ahead(base: usize, h: usize, m: usize) -> usize {
    let i = base + h - 1;
    if h <= m {
        if i >= m { i - m } else { i }
    } else {
        i % m
    }
}

/// Most slots a daily season keeps (five-minute slots of a day), and a weekly one.
pub const DAILY_SLOTS: usize = 288;
pub const WEEKLY_SLOTS: usize = 2016;

/// A seasonal profile's clock: `len` slots of `stride` samples each. A season of 86,400
/// one-second samples is kept as 288 five-minute slots, so a tenant's memory stays bounded
/// whatever the interval (7.7 MB per tenant before, at one second), and each slot averages
/// the samples that fall in it. At coarse intervals the stride is 1: one slot per sample.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Slots {
    stride: usize,
    /// Samples already seen of the current slot.
    phase: usize,
    /// The next sample's slot.
    pos: usize,
    len: usize,
}

impl Slots {
    /// `season` samples in at most `cap` slots: the stride is the smallest divisor of the
    /// season that fits, so slots stay aligned to the season.
    pub fn new(season: usize, cap: usize) -> Slots {
        let season = season.max(1);
        let mut stride = season.div_ceil(cap.max(1));
        while !season.is_multiple_of(stride) {
            stride += 1;
        }
        Slots {
            stride,
            phase: 0,
            pos: 0,
            len: season / stride,
        }
    }
    /// Moves past one sample; true when that sample completed its slot.
    #[inline]
    fn advance(&mut self) -> bool {
        self.phase += 1;
        if self.phase == self.stride {
            self.phase = 0;
            self.pos = ahead(self.pos, 2, self.len);
            true
        } else {
            false
        }
    }
    /// The slot of the sample `h` >= 1 updates ahead (1 = the next).
    #[inline]
    fn at(&self, h: usize) -> usize {
        if self.stride == 1 {
            ahead(self.pos, h, self.len)
        } else {
            (self.pos + (self.phase + h - 1) / self.stride) % self.len
        }
    }
    /// The slot the last update wrote.
    #[inline]
    fn last(&self) -> usize {
        if self.phase == 0 {
            (self.pos + self.len - 1) % self.len
        } else {
            self.pos
        }
    }
    /// Samples in a whole season.
    fn season(&self) -> u64 {
        (self.len * self.stride) as u64
    }
    /// Per-sample smoothing that gives a slot, updated `stride` times a season, the same
    /// weight per season as `g` gives a one-sample slot.
    fn per_sample(&self, g: f64) -> f64 {
        if self.stride == 1 {
            g
        } else {
            1.0 - (1.0 - g).powf(1.0 / self.stride as f64)
        }
    }
}

/// level + damped(h) * trend + season(h) for h = 1..=out.len(), the damping accumulated.
#[inline]
fn trend_path(level: f64, trend: f64, out: &mut [f64], mut season: impl FnMut(usize) -> f64) {
    let (mut pow, mut sum) = (1.0, 0.0);
    for (h, v) in out.iter_mut().enumerate() {
        pow *= PHI;
        sum += pow;
        *v = level + sum * trend + season(h);
    }
}

/// Sum of PHI^1..=PHI^h.
fn damped(h: usize) -> f64 {
    PHI * (1.0 - PHI.powi(h as i32)) / (1.0 - PHI)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Model {
    SeasonalNaive(SeasonalNaive),
    WeeklyNaive(SeasonalNaive),
    Ewma(Ewma),
    Holt(Holt),
    HoltWinters(HoltWinters),
    /// Boxed: the largest state by far, and only at the seasons' resolution; inline it made
    /// every model of every tenant as large (6 x 168 bytes per tenant instead of 6 x 136).
    Mstl(Box<Mstl>),
    Stl(Box<Stl>),
    Ar(Ar),
}

impl Model {
    /// A fresh model of `kind`; `season` and `weekly` are periods in samples (>= 1), `horizon`
    /// the steps its forecasts are used at (a fitted model fits for it).
    pub fn new(kind: ModelKind, season: usize, weekly: usize, horizon: usize) -> Model {
        match kind {
            ModelKind::SeasonalNaive => {
                Model::SeasonalNaive(SeasonalNaive::new(season, DAILY_SLOTS))
            }
            ModelKind::WeeklyNaive => {
                Model::WeeklyNaive(SeasonalNaive::new(weekly, weekly_cap(weekly)))
            }
            ModelKind::Ewma => Model::Ewma(Ewma::new(0.3)),
            ModelKind::Holt => Model::Holt(Holt::new(0.3, 0.05)),
            ModelKind::HoltWinters => Model::HoltWinters(HoltWinters::new(season, 0.2, 0.01, 0.25)),
            ModelKind::Mstl => Model::Mstl(Box::new(Mstl::new(season, weekly, horizon))),
            ModelKind::Stl => Model::Stl(Box::new(Stl::new(season, weekly))),
            ModelKind::Ar => Model::Ar(Ar::new(8, 256, 128)),
        }
    }

    pub fn kind(&self) -> ModelKind {
        match self {
            Model::SeasonalNaive(_) => ModelKind::SeasonalNaive,
            Model::WeeklyNaive(_) => ModelKind::WeeklyNaive,
            Model::Ewma(_) => ModelKind::Ewma,
            Model::Holt(_) => ModelKind::Holt,
            Model::HoltWinters(_) => ModelKind::HoltWinters,
            Model::Mstl(_) => ModelKind::Mstl,
            Model::Stl(_) => ModelKind::Stl,
            Model::Ar(_) => ModelKind::Ar,
        }
    }

    pub fn update(&mut self, y: f64) {
        match self {
            Model::SeasonalNaive(m) | Model::WeeklyNaive(m) => m.update(y),
            Model::Ewma(m) => m.update(y),
            Model::Holt(m) => m.update(y),
            Model::HoltWinters(m) => m.update(y),
            Model::Mstl(m) => m.update(y),
            Model::Stl(m) => m.update(y),
            Model::Ar(m) => m.update(y),
        }
    }

    /// Point forecast `h` >= 1 steps after the last update.
    pub fn forecast(&self, h: usize) -> f64 {
        match self {
            Model::SeasonalNaive(m) | Model::WeeklyNaive(m) => m.forecast(h),
            Model::Ewma(m) => m.forecast(h),
            Model::Holt(m) => m.forecast(h),
            Model::HoltWinters(m) => m.forecast(h),
            Model::Mstl(m) => m.forecast(h),
            Model::Stl(m) => m.forecast(h),
            Model::Ar(m) => m.forecast(h),
        }
    }

    /// Forecasts for horizons 1..=out.len(), sharing the work between horizons: AR iterates
    /// its recursion once, the trend models accumulate the damping instead of recomputing it.
    pub fn forecast_into(&self, out: &mut [f64]) {
        match self {
            Model::Ar(m) => m.path(out),
            Model::Ewma(m) => out.iter_mut().for_each(|v| *v = m.level),
            Model::Holt(m) => trend_path(m.level, m.trend, out, |_| 0.0),
            Model::HoltWinters(m) if m.t >= m.slots.season() => {
                trend_path(m.level, m.trend, out, |h| {
                    f64::from(m.season[m.slots.at(h + 1)])
                })
            }
            _ => {
                for (h, v) in out.iter_mut().enumerate() {
                    *v = self.forecast(h + 1);
                }
            }
        }
    }

    /// True for the models with a seasonal profile or history.
    pub fn is_seasonal(&self) -> bool {
        !matches!(self, Model::Ewma(_) | Model::Holt(_) | Model::Ar(_))
    }

    /// Asks for the cache lines this model's next update and forecasts touch (see
    /// `Forecaster::prefetch`).
    #[inline]
    pub fn prefetch(&self) {
        match self {
            Model::SeasonalNaive(m) | Model::WeeklyNaive(m) => m.prefetch(),
            Model::HoltWinters(m) => {
                super::prefetch(&m.season[m.slots.pos.min(m.season.len() - 1)]);
                super::prefetch(&m.season[m.slots.at(1).min(m.season.len() - 1)]);
            }
            Model::Ar(m) => {
                super::prefetch(&m.window[m.pos.min(m.window.len() - 1)]);
                super::prefetch_all(&m.coef);
            }
            Model::Ewma(_) | Model::Holt(_) | Model::Mstl(_) | Model::Stl(_) => {}
        }
    }

    /// True if the state is finite: its scalars and the seasonal slots the last update wrote
    /// (the only ones an update can change), so the check is O(1).
    pub fn is_finite(&self) -> bool {
        match self {
            Model::SeasonalNaive(m) | Model::WeeklyNaive(m) => {
                m.slot(m.slots.last()).is_finite() && m.acc.is_finite() && m.last.is_finite()
            }
            Model::Ewma(m) => m.level.is_finite(),
            Model::Holt(m) => m.level.is_finite() && m.trend.is_finite(),
            Model::HoltWinters(m) => {
                m.level.is_finite() && m.trend.is_finite() && m.season[m.slots.last()].is_finite()
            }
            Model::Mstl(m) => m.is_finite(),
            Model::Stl(m) => m.is_finite(),
            Model::Ar(m) => m.coef.iter().all(|v| v.is_finite()) && m.back(0).is_finite(),
        }
    }
}

/// y(t+h) = y(t+h-k*m): the baseline every other model must beat (MASE's denominator). With
/// slots of several samples, the slot's mean a season ago.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeasonalNaive {
    /// Each slot's mean in its last complete pass, where a slot is one sample (f32: seven
    /// digits are plenty for a rate, and a week of slots is half the memory); empty where
    /// slots are several samples.
    hist: Vec<f32>,
    /// The same where each slot is the mean of several samples (at one-second cycles, five
    /// and fifteen minutes of them): bfloat16, within 0.4% of the mean, far inside what
    /// separates one such mean from the next. 1.9 kB less per tenant for the daily and weekly
    /// naives at one-second cycles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    coarse: Vec<bf16>,
    slots: Slots,
    /// Sum of the current slot's samples so far.
    acc: f64,
    last: f64,
    count: u64,
}

impl SeasonalNaive {
    /// Samples a slot of its history stands for.
    pub fn stride(&self) -> usize {
        self.slots.stride
    }

    /// A naive of `season` samples kept in at most `cap` slots.
    pub fn new(season: usize, cap: usize) -> Self {
        let slots = Slots::new(season, cap);
        let coarse = slots.stride > 1;
        SeasonalNaive {
            hist: if coarse {
                Vec::new()
            } else {
                vec![0.0; slots.len]
            },
            coarse: if coarse {
                vec![bf16::ZERO; slots.len]
            } else {
                Vec::new()
            },
            slots,
            acc: 0.0,
            last: 0.0,
            count: 0,
        }
    }
    fn update(&mut self, y: f64) {
        let slot = self.slots.pos;
        self.acc += y;
        self.last = y;
        self.count += 1;
        if self.slots.advance() {
            let mean = self.acc / self.slots.stride as f64;
            match self.coarse.get_mut(slot) {
                Some(v) => *v = bf16::from_f64(mean),
                None => {
                    if let Some(v) = self.hist.get_mut(slot) {
                        *v = mean as f32;
                    }
                }
            }
            self.acc = 0.0;
        }
    }
    /// Slot `i`'s mean.
    #[inline]
    fn slot(&self, i: usize) -> f64 {
        match self.coarse.get(i) {
            Some(v) => v.to_f64(),
            None => self.hist.get(i).map_or(0.0, |v| f64::from(*v)),
        }
    }
    fn forecast(&self, h: usize) -> f64 {
        if self.count < self.slots.season() {
            // Less than a season seen: the last value.
            return self.last;
        }
        self.slot(self.slots.at(h))
    }
    /// Asks for the lines of the slots the next update writes and reads.
    #[inline]
    fn prefetch(&self) {
        for i in [self.slots.pos, self.slots.at(1)] {
            if self.coarse.is_empty() {
                if let Some(v) = self.hist.get(i) {
                    super::prefetch(v);
                }
            } else if let Some(v) = self.coarse.get(i) {
                super::prefetch(v);
            }
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ewma {
    alpha: f64,
    level: f64,
    init: bool,
}

impl Ewma {
    pub fn new(alpha: f64) -> Self {
        Ewma {
            alpha,
            level: 0.0,
            init: false,
        }
    }
    fn update(&mut self, y: f64) {
        if self.init {
            self.level += self.alpha * (y - self.level);
        } else {
            self.level = y;
            self.init = true;
        }
    }
    fn forecast(&self, _h: usize) -> f64 {
        self.level
    }
}

/// Level and damped trend.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Holt {
    alpha: f64,
    beta: f64,
    level: f64,
    trend: f64,
    n: u64,
}

impl Holt {
    pub fn new(alpha: f64, beta: f64) -> Self {
        Holt {
            alpha,
            beta,
            level: 0.0,
            trend: 0.0,
            n: 0,
        }
    }
    fn update(&mut self, y: f64) {
        match self.n {
            0 => self.level = y,
            1 => {
                self.trend = y - self.level;
                self.level = y;
            }
            _ => {
                let prev = self.level;
                self.level = self.alpha * y + (1.0 - self.alpha) * (prev + PHI * self.trend);
                self.trend = self.beta * (self.level - prev) + (1.0 - self.beta) * PHI * self.trend;
            }
        }
        self.n += 1;
    }
    fn forecast(&self, h: usize) -> f64 {
        self.level + damped(h) * self.trend
    }
}

/// Additive Holt-Winters with a damped trend; the first season initialises the profile.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HoltWinters {
    alpha: f64,
    beta: f64,
    /// Per sample (see [`Slots::per_sample`]).
    gamma: f64,
    level: f64,
    trend: f64,
    /// The seasonal profile (f32, as the naives' histories).
    season: Vec<f32>,
    slots: Slots,
    /// Samples seen.
    t: u64,
    /// During the first season: the sum of every sample so far (the level is their mean),
    /// while `season` holds each slot's sum. Summed as they come: adding up the slots at every
    /// sample read a 2 kB vector per update for the whole first day at one-second cycles.
    #[serde(default)]
    warm_total: f64,
    /// Each slot's sum in the first season, as states saved before `warm_total` kept it; moved
    /// into `season` by the next update.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    warm: Vec<f64>,
}

/// The first season: each slot's sum so far in `profile`, the level as the running mean of
/// `total`. Returns the level; at the season's end `profile` gets each slot's mean less the
/// season's mean.
fn warm_up(total: &mut f64, slots: &Slots, t: u64, y: f64, profile: &mut [f32]) -> f64 {
    let i = slots.pos.min(profile.len().saturating_sub(1));
    if let Some(p) = profile.get_mut(i) {
        *p += y as f32;
    }
    *total += y;
    let mean = *total / (t + 1) as f64;
    if t + 1 == slots.season() {
        for p in profile.iter_mut() {
            *p = (f64::from(*p) / slots.stride as f64 - mean) as f32;
        }
        *total = 0.0;
    }
    mean
}

impl HoltWinters {
    pub fn new(season: usize, alpha: f64, beta: f64, gamma: f64) -> Self {
        let slots = Slots::new(season, DAILY_SLOTS);
        HoltWinters {
            alpha,
            beta,
            gamma: slots.per_sample(gamma),
            level: 0.0,
            trend: 0.0,
            season: vec![0.0; slots.len],
            slots,
            t: 0,
            warm_total: 0.0,
            warm: Vec::new(),
        }
    }
    fn update(&mut self, y: f64) {
        if self.t < self.slots.season() {
            if !self.warm.is_empty() {
                // A state saved mid-season with the sums apart: into the profile.
                for (p, w) in self.season.iter_mut().zip(&self.warm) {
                    *p = *w as f32;
                }
                self.warm_total = self.warm.iter().sum();
                self.warm = Vec::new();
            }
            self.level = warm_up(
                &mut self.warm_total,
                &self.slots,
                self.t,
                y,
                &mut self.season,
            );
            self.t += 1;
            self.slots.advance();
            return;
        }
        let i = self.slots.pos;
        let prev = self.level;
        let si = f64::from(self.season[i]);
        self.level = self.alpha * (y - si) + (1.0 - self.alpha) * (prev + PHI * self.trend);
        self.trend = self.beta * (self.level - prev) + (1.0 - self.beta) * PHI * self.trend;
        self.season[i] = (self.gamma * (y - self.level) + (1.0 - self.gamma) * si) as f32;
        self.t += 1;
        self.slots.advance();
    }
    fn forecast(&self, h: usize) -> f64 {
        if self.t < self.slots.season() {
            return self.level;
        }
        self.level + damped(h) * self.trend + f64::from(self.season[self.slots.at(h)])
    }
}

/// Smoothing parameters of the double-seasonal model, per slot.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DshwParams {
    pub alpha: f64,
    pub g_daily: f64,
    pub g_weekly: f64,
}

/// The parameter grid the double-seasonal model chooses from online: every combination runs
/// side by side, scored at the forecaster's horizon. The level moves slowly in every member
/// (the AR(1) on errors carries short-term deviations): a fast level soaks up what the seasons
/// should learn, since it moves every slot and a weekly slot once a week.
const GRID_ALPHA: [f64; 3] = [0.002, 0.02, 0.1];
const GRID_DAILY: [f64; 2] = [0.05, 0.15];
const GRID_WEEKLY: [f64; 2] = [0.3, 0.7];

/// Slots per week the double-seasonal model keeps at most at fine intervals: at one-second
/// samples a week is kept in 672 slots of 15 minutes (2.7 kB per profile as f32). At coarse
/// intervals (a week of at most [`WEEKLY_SLOTS`] samples) every sample is a slot.
pub const FINE_WEEKLY_SLOTS: usize = 672;

/// Most slots of a weekly profile: a week of samples when it fits in [`WEEKLY_SLOTS`], else
/// [`FINE_WEEKLY_SLOTS`] slots of several samples each.
pub fn weekly_cap(weekly: usize) -> usize {
    if weekly <= WEEKLY_SLOTS {
        WEEKLY_SLOTS
    } else {
        FINE_WEEKLY_SLOTS
    }
}

/// Daily and weekly clocks with one stride: the smallest that divides both seasons and keeps
/// the week in [`WEEKLY_SLOTS`] slots of one sample, or else in [`FINE_WEEKLY_SLOTS`].
pub fn shared_slots(daily: usize, weekly: usize) -> (Slots, Slots) {
    let (daily, weekly) = (daily.max(1), weekly.max(1));
    let cap = weekly_cap(weekly);
    let mut stride = 1;
    while weekly / stride > cap || !daily.is_multiple_of(stride) || !weekly.is_multiple_of(stride) {
        stride += 1;
    }
    let at = |season: usize| Slots {
        stride,
        phase: 0,
        pos: 0,
        len: season / stride,
    };
    (at(daily), at(weekly))
}

/// Adds sample `y` to the current slot of the shared daily and weekly clocks (`acc`, its
/// sum so far): the slot's mean and its daily and weekly positions when `y` completed it.
fn completed_slot(
    s1: &mut Slots,
    s2: &mut Slots,
    acc: &mut f64,
    y: f64,
) -> Option<(f64, usize, usize)> {
    let (i, j) = (s1.pos, s2.pos);
    *acc += y;
    s1.advance();
    if s2.advance() {
        let x = *acc / s2.stride as f64;
        *acc = 0.0;
        Some((x, i, j))
    } else {
        None
    }
}

/// What the double-seasonal model carries from slot to slot; a week-old copy is what a refit
/// replays from.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct DshwState {
    level: f64,
    daily: Vec<f32>,
    weekly: Vec<f32>,
    /// The last slot's one-step error, and the running sums of the AR(1) fit on errors.
    e: f64,
    sxy: f64,
    sxx: f64,
}

impl DshwState {
    /// The AR(1) coefficient of the errors: a positive autocorrelation carries today's
    /// deviation (a hot afternoon, a holiday) into the next slots, decaying.
    fn phi(&self) -> f64 {
        if self.sxx > 0.0 {
            (self.sxy / self.sxx).clamp(0.0, 0.98)
        } else {
            0.0
        }
    }

    /// Learns slot value `x` at daily slot `i` and weekly slot `j`; `keep` ages the AR sums.
    #[inline]
    fn step(&mut self, p: &DshwParams, x: f64, i: usize, j: usize, keep: f64) {
        let (d, w) = (f64::from(self.daily[i]), f64::from(self.weekly[j]));
        let e = x - (self.level + d + w);
        self.sxy = keep * self.sxy + e * self.e;
        self.sxx = keep * self.sxx + self.e * self.e;
        self.e = e;
        self.level += p.alpha * e;
        let d = d + p.g_daily * (x - self.level - w - d);
        self.daily[i] = d as f32;
        self.weekly[j] = (w + p.g_weekly * (x - self.level - d - w)) as f32;
    }

    /// The forecast `k` >= 1 slots ahead, at daily slot `i` and weekly slot `j`.
    #[inline]
    fn forecast(&self, i: usize, j: usize, k: usize, phi: f64) -> f64 {
        self.level
            + f64::from(self.daily[i])
            + f64::from(self.weekly[j])
            + phi.powi(k.min(i32::MAX as usize) as i32) * self.e
    }
}

/// A pending forecast not made yet. Not NaN: JSON has no NaN, and the state must survive a
/// save and restore.
const NOT_YET: f32 = f32::MIN;

/// Taylor's double-seasonal Holt-Winters with an AR(1) on its errors: level, daily and weekly
/// additive profiles, each updated on what the others leave. Its smoothing parameters are
/// fitted online: every combination of a small grid runs side by side from the start, each is
/// scored by its rolling error at the forecaster's horizon (the error that matters, not the
/// one-step one), and the model forecasts with the best. A refit from a snapshot of the live
/// state was tried and fell into a trap: a state shaped by a fast level favours a fast level.
/// Running the members in parallel costs memory (12 profiles), so `auto` uses this model only
/// at intervals where a week is at most [`WEEKLY_SLOTS`] samples.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Mstl {
    members: Vec<(DshwParams, DshwState)>,
    /// Per member: rolling absolute error at `ahead` slots.
    errors: Vec<f64>,
    /// Per member, the forecast it made `ahead` slots ago for the slot now completing (a ring
    /// of `ahead` per member; [`NOT_YET`] before one was made).
    pending: Vec<f32>,
    best: usize,
    s1: Slots,
    s2: Slots,
    /// The current slot's sum.
    acc: f64,
    /// Slots completed.
    k: u64,
    /// Slots ahead the members are scored at (the forecaster's horizon).
    ahead: usize,
}

impl Mstl {
    pub fn new(daily: usize, weekly: usize, horizon: usize) -> Self {
        let (s1, s2) = shared_slots(daily, weekly);
        let mut members = Vec::new();
        for alpha in GRID_ALPHA {
            for g_daily in GRID_DAILY {
                for g_weekly in GRID_WEEKLY {
                    members.push((
                        DshwParams {
                            alpha,
                            g_daily,
                            g_weekly,
                        },
                        DshwState {
                            level: 0.0,
                            daily: vec![0.0; s1.len],
                            weekly: vec![0.0; s2.len],
                            e: 0.0,
                            sxy: 0.0,
                            sxx: 0.0,
                        },
                    ));
                }
            }
        }
        let ahead = horizon.max(1).div_ceil(s1.stride).min(s2.len);
        Mstl {
            errors: vec![0.0; members.len()],
            pending: vec![NOT_YET; members.len() * ahead],
            best: 0,
            members,
            s1,
            s2,
            acc: 0.0,
            k: 0,
            ahead,
        }
    }

    /// Weight of a new error in the members' rolling errors, and of the AR sums' decay: about
    /// a week of slots.
    fn memory(&self) -> f64 {
        1.0 / (self.s2.len.max(50) as f64)
    }

    fn update(&mut self, y: f64) {
        if let Some((x, i, j)) = completed_slot(&mut self.s1, &mut self.s2, &mut self.acc, y) {
            self.slot(x, i, j);
        }
    }

    /// A completed slot: warm-up over the first day (the daily profile is each slot less the
    /// day's mean), then every member scores what it forecast for this slot, learns it, and
    /// forecasts `ahead` slots on.
    fn slot(&mut self, x: f64, i: usize, j: usize) {
        let days = self.s1.len as u64;
        let (d, w, ahead) = (self.s1.len, self.s2.len, self.ahead);
        let at = (self.k % ahead as u64) as usize;
        let m = self.memory();
        for (n, (p, st)) in self.members.iter_mut().enumerate() {
            if self.k < days {
                st.daily[i] = x as f32;
                st.level += (x - st.level) / (self.k + 1) as f64;
                if self.k + 1 == days {
                    let mean = st.level;
                    st.daily
                        .iter_mut()
                        .for_each(|v| *v = (f64::from(*v) - mean) as f32);
                }
                continue;
            }
            let f = self.pending[n * ahead + at];
            if f != NOT_YET {
                let f = f64::from(f);
                let e = &mut self.errors[n];
                *e += m * ((x - f).abs() - *e);
            }
            st.step(p, x, i, j, 1.0 - m);
            let f = st.forecast((i + ahead) % d, (j + ahead) % w, ahead, st.phi());
            self.pending[n * ahead + at] = f as f32;
        }
        self.k += 1;
        if let Some(b) = (0..self.members.len())
            .filter(|&n| self.errors[n] > 0.0)
            .min_by(|&a, &b| self.errors[a].total_cmp(&self.errors[b]))
        {
            self.best = b;
        }
    }

    fn forecast(&self, h: usize) -> f64 {
        let st = &self.members[self.best].1;
        if self.k < self.s1.len as u64 {
            return st.level;
        }
        // Slots from the current one (0) to the one `h` samples ahead.
        let slots = (self.s1.phase + h - 1) / self.s1.stride;
        st.forecast(self.s1.at(h), self.s2.at(h), slots + 1, st.phi())
    }

    fn is_finite(&self) -> bool {
        self.members.iter().all(|(_, st)| {
            st.level.is_finite()
                && st.e.is_finite()
                && st.sxy.is_finite()
                && st.sxx.is_finite()
                && st.daily[self.s1.last()].is_finite()
                && st.weekly[self.s2.last()].is_finite()
        })
    }
}

/// Weight of each day's new value in a daily slot, and of each week's in a weekly one: about
/// the seasonal windows of MSTL's defaults (an 11-day and, over eight weeks, a nearly uniform
/// mean: exponential means of about the same span). A slot's first visits take the running
/// mean instead, so two weeks of history count as much as they would in a batch fit.
const STL_DAILY: f64 = 1.0 / 6.0;
const STL_WEEKLY: f64 = 0.2;
/// Weight of the latest deseasonalised slot in the level the forecast starts from.
const STL_LEVEL: f64 = 0.5;

/// The online counterpart of MSTL (Bandara, Hyndman and Bergmeir, 2021) as statsforecast
/// forecasts with it: the seasonal profiles are learned on what a trend of about a week leaves
/// (slow enough that the day-of-week levels stay in the weekly profile), and the forecast is
/// the latest deseasonalised level carried flat, plus the profiles. Against the double-seasonal
/// Holt-Winters ([`Mstl`]), which forecasts from its slow level and lets an AR(1) carry the
/// current deviation for a few slots, this keeps the deviation for the whole horizon: a
/// hot or a quiet week stays so tomorrow. Only differences of the profiles reach the forecast
/// (a constant in them cancels against the level), so they need no normalising.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stl {
    daily: Vec<f32>,
    weekly: Vec<f32>,
    s1: Slots,
    s2: Slots,
    /// The current slot's sum.
    acc: f64,
    /// Slots completed.
    k: u64,
    trend: f64,
    level: f64,
}

impl Stl {
    pub fn new(daily: usize, weekly: usize) -> Self {
        let (s1, s2) = shared_slots(daily, weekly);
        Stl {
            daily: vec![0.0; s1.len],
            weekly: vec![0.0; s2.len],
            s1,
            s2,
            acc: 0.0,
            k: 0,
            trend: 0.0,
            level: 0.0,
        }
    }

    fn update(&mut self, y: f64) {
        if let Some((x, i, j)) = completed_slot(&mut self.s1, &mut self.s2, &mut self.acc, y) {
            self.slot(x, i, j);
        }
    }

    /// A completed slot of mean `x` at daily slot `i` and weekly slot `j`.
    fn slot(&mut self, x: f64, i: usize, j: usize) {
        // Every slot is visited once a pass, so a slot's visits so far are the passes done.
        let gain = |g: f64, len: usize| g.max(1.0 / (self.k / len as u64 + 1) as f64);
        let (gd, gw) = (gain(STL_DAILY, self.s1.len), gain(STL_WEEKLY, self.s2.len));
        // The trend's memory is about a week; the running mean until then.
        let gt = (1.0 / self.s2.len.max(2) as f64).max(1.0 / (self.k + 1) as f64);
        let w = f64::from(self.weekly[j]);
        let d = f64::from(self.daily[i]);
        let d = d + gd * (x - self.trend - w - d);
        let w = w + gw * (x - self.trend - d - w);
        self.daily[i] = d as f32;
        self.weekly[j] = w as f32;
        let z = x - d - w;
        self.trend += gt * (z - self.trend);
        self.level = if self.k == 0 {
            z
        } else {
            self.level + STL_LEVEL * (z - self.level)
        };
        self.k += 1;
    }

    fn forecast(&self, h: usize) -> f64 {
        self.level + f64::from(self.daily[self.s1.at(h)]) + f64::from(self.weekly[self.s2.at(h)])
    }

    fn is_finite(&self) -> bool {
        self.level.is_finite()
            && self.trend.is_finite()
            && self.acc.is_finite()
            && self.daily[self.s1.last()].is_finite()
            && self.weekly[self.s2.last()].is_finite()
    }
}

/// AR(p) with an intercept, fitted by least squares on a sliding window, refitted every
/// `refit` samples (O(p^2 W / refit) amortized per update, independent of history length).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ar {
    p: usize,
    /// The last `cap` samples (f32, as the seasonal profiles: half the memory of f64).
    window: Vec<f32>,
    cap: usize,
    pos: usize,
    len: usize,
    refit: usize,
    since_fit: usize,
    /// [intercept, phi_1 .. phi_p].
    coef: Vec<f64>,
    fitted: bool,
}

impl Ar {
    /// AR(`p`) (`p` < [`MAX_COLS`]) on the last `window` samples, refitted every `refit`.
    pub fn new(p: usize, window: usize, refit: usize) -> Self {
        let p = p.min(MAX_COLS - 1);
        Ar {
            p,
            window: vec![0.0; window],
            cap: window,
            pos: 0,
            len: 0,
            refit,
            since_fit: 0,
            coef: vec![0.0; p + 1],
            fitted: false,
        }
    }

    /// The value `k` steps back (0 = latest).
    fn back(&self, k: usize) -> f64 {
        f64::from(self.window[(self.pos + self.cap - 1 - k) % self.cap])
    }

    fn update(&mut self, y: f64) {
        self.window[self.pos] = y as f32;
        self.pos = (self.pos + 1) % self.cap;
        self.len = (self.len + 1).min(self.cap);
        self.since_fit += 1;
        if self.len > 4 * (self.p + 1) && (self.since_fit >= self.refit || !self.fitted) {
            self.fit();
        }
    }

    fn fit(&mut self) {
        self.since_fit = 0;
        let cols = self.p + 1;
        // Each value from the p-th on, oldest first, predicted from the p before it: the
        // rows are read off the ring as they are added, no design matrix is built.
        let mut s = Normal::new(cols);
        let mut x = [0.0f64; MAX_COLS];
        x[0] = 1.0;
        for t in 0..self.len {
            let y = self.back(self.len - 1 - t);
            if t >= self.p {
                s.add(&x[..cols], y);
            }
            // Shift the lags: x[1] is the value just before the next target.
            if cols > 1 {
                x.copy_within(1..cols - 1, 2);
                x[1] = y;
            }
        }
        if let Some(c) = s.solve()
            && c[..cols].iter().all(|v| v.is_finite())
        {
            self.coef.clear();
            self.coef.extend_from_slice(&c[..cols]);
            self.fitted = true;
        }
    }

    /// The fitted [intercept, phi_1, ...].
    pub fn coefficients(&self) -> &[f64] {
        &self.coef
    }

    fn forecast(&self, h: usize) -> f64 {
        let mut ahead = [0.0f64; 64];
        let steps = h.clamp(1, ahead.len());
        self.path(&mut ahead[..steps]);
        ahead[steps - 1]
    }

    /// Forecasts 1..=out.len() steps ahead: lags are observed values, then earlier forecasts.
    fn path(&self, out: &mut [f64]) {
        if self.len == 0 || !self.fitted {
            let last = if self.len == 0 { 0.0 } else { self.back(0) };
            out.iter_mut().for_each(|v| *v = last);
            return;
        }
        for s in 0..out.len() {
            let mut v = self.coef[0];
            for j in 1..=self.p {
                let lag = if j <= s {
                    out[s - j]
                } else {
                    self.back(j - s - 1)
                };
                v += self.coef[j] * lag;
            }
            out[s] = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(m: &mut Model, ys: impl IntoIterator<Item = f64>) {
        for y in ys {
            m.update(y);
        }
    }

    #[test]
    fn constant_series_is_forecast_exactly_by_every_model() {
        for kind in [
            ModelKind::SeasonalNaive,
            ModelKind::Ewma,
            ModelKind::Holt,
            ModelKind::HoltWinters,
            ModelKind::Mstl,
            ModelKind::Stl,
            ModelKind::Ar,
        ] {
            let mut m = Model::new(kind, 24, 168, 24);
            feed(&mut m, std::iter::repeat_n(42.0, 500));
            for h in [1, 5, 24] {
                assert!(
                    (m.forecast(h) - 42.0).abs() < 1e-6,
                    "{kind:?} h={h}: {}",
                    m.forecast(h)
                );
            }
        }
    }

    #[test]
    fn holt_follows_a_linear_trend() {
        let mut m = Model::new(ModelKind::Holt, 1, 1, 1);
        feed(&mut m, (0..400).map(|t| 100.0 + 2.0 * t as f64));
        // Next value is 100 + 2*400 = 900; damping shortens long horizons a little.
        assert!(
            (m.forecast(1) - 900.0).abs() / 900.0 < 0.005,
            "{}",
            m.forecast(1)
        );
        let h10 = 100.0 + 2.0 * 409.0;
        assert!(
            (m.forecast(10) - h10).abs() / h10 < 0.01,
            "{}",
            m.forecast(10)
        );
    }

    #[test]
    fn seasonal_models_reproduce_a_pure_season() {
        let season = |t: usize| 50.0 + 10.0 * ((t % 12) as f64 - 5.5);
        for kind in [ModelKind::SeasonalNaive, ModelKind::HoltWinters] {
            let mut m = Model::new(kind, 12, 84, 12);
            feed(&mut m, (0..240).map(season));
            for h in 1..=24 {
                assert!(
                    (m.forecast(h) - season(239 + h)).abs() < 1e-6,
                    "{kind:?} h={h}"
                );
            }
        }
        for kind in [ModelKind::Mstl, ModelKind::Stl] {
            let mut m = Model::new(kind, 12, 84, 12);
            feed(&mut m, (0..2000).map(season));
            for h in 1..=24 {
                assert!(
                    (m.forecast(h) - season(1999 + h)).abs() < 0.5,
                    "{kind:?} h={h}: {}",
                    m.forecast(h)
                );
            }
        }
    }

    /// A weekly pattern whose level moves up by a fifth of its mean and stays (a hot spell on
    /// electricity demand): the STL-like model carries the new level a day ahead from the
    /// next day on (its profiles learn on what a slow trend leaves, and its forecast starts
    /// from the latest deseasonalised level), and does not fight the change after.
    #[test]
    fn stl_follows_a_level_shift_within_a_day() {
        let (day, week) = (24, 168);
        let shift_at = 6 * week + 2 * day;
        let shape = |t: usize| {
            let weekday = (t / day) % 7 < 5;
            let hour = (t % day) as f64;
            (if weekday { 1.0 } else { 0.6 })
                * (1.0 + 0.5 * (hour / 24.0 * std::f64::consts::TAU).sin())
        };
        let y = |t: usize| 1000.0 * shape(t) + if t >= shift_at { 200.0 } else { 0.0 };
        let mut m = Model::new(ModelKind::Stl, day, week, day);
        let mut worst = Vec::new();
        for t in 0..shift_at + 3 * week {
            m.update(y(t));
            let since = (t + 1).saturating_sub(shift_at);
            if since > 0 && since % day == 0 {
                let err = (1..=day)
                    .map(|h| (m.forecast(h) - y(t + h)).abs() / y(t + h))
                    .fold(0.0, f64::max);
                worst.push(err);
            }
        }
        // From one day after the shift, every day-ahead forecast is within 5% everywhere.
        assert!(
            worst.iter().all(|e| *e < 0.05),
            "worst day-ahead errors by day: {worst:?}"
        );
    }

    #[test]
    fn ar1_coefficient_is_recovered_within_5_percent() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(7);
        let mut ar = Ar::new(1, 4096, 4096);
        let mut y = 0.0;
        for _ in 0..4096 {
            // Uniform noise with variance 1/3: any zero-mean noise identifies phi.
            y = 10.0 + 0.7 * (y - 10.0) + rng.random_range(-1.0..1.0);
            ar.update(y);
        }
        ar.fit();
        let phi = ar.coefficients()[1];
        assert!((phi - 0.7).abs() / 0.7 < 0.05, "phi = {phi}");
        let mean = ar.coefficients()[0] / (1.0 - phi);
        assert!((mean - 10.0).abs() < 0.5, "mean = {mean}");
    }
}
