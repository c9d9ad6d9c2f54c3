//! Aggregate limits over several hosts: how one tenant's `rate` (or `ceil`) is divided among
//! the hosts its traffic enters through, from each host's demand. Every host of a cluster runs
//! this on the same reports and so arrives at the same division, with no leader.

/// Divides `limit` (bytes/s) among hosts by their `demand` (bytes/s), into `out` (one share a
/// host, same order). Never sums above `limit`:
///
/// 1. a floor each: `floor` (a fraction) of the limit, split evenly, so a flow starting where
///    there was no demand passes until the next division sees it;
/// 2. max-min fair on demand above the floor (water-filling): hosts that need less than an
///    even split get what they need, the others split the rest evenly;
/// 3. what no host asked for (total demand under the limit) is spread in proportion to demand,
///    evenly when there is none: work-conserving, a host whose demand grows has room before the
///    next division, and a host's unused share flows to those that use theirs.
///
/// `order` is scratch space (kept by the caller to divide many tenants without allocating).
pub fn divide(
    limit: f64,
    demand: &[f64],
    floor: f64,
    out: &mut Vec<f64>,
    order: &mut Vec<(f64, u32)>,
) {
    out.clear();
    let n = demand.len();
    if n == 0 {
        return;
    }
    let limit = limit.max(0.0);
    let each_floor = limit * floor.clamp(0.0, 1.0) / n as f64;
    let clean = |d: f64| if d.is_finite() { d.max(0.0) } else { 0.0 };
    out.extend(std::iter::repeat_n(each_floor, n));
    let mut left = limit - each_floor * n as f64;
    // Water-filling, smallest need first. An insertion sort: a cluster has tens of hosts,
    // and this runs for every aggregate tenant every epoch.
    order.clear();
    for (i, &d) in demand.iter().enumerate() {
        let need = clean(d);
        let mut at = order.len();
        while at > 0 && order[at - 1].0 > need {
            at -= 1;
        }
        order.insert(at, (need, i as u32));
    }
    for (k, &(need, i)) in order.iter().enumerate() {
        let need = (need - each_floor).max(0.0);
        let even = left / (n - k) as f64;
        let give = need.min(even);
        out[i as usize] += give;
        left -= give;
    }
    if left > 0.0 {
        let total: f64 = demand.iter().map(|&d| clean(d)).sum();
        for (o, &d) in out.iter_mut().zip(demand) {
            *o += if total > 0.0 {
                left * clean(d) / total
            } else {
                left / n as f64
            };
        }
    }
    // Rounding must not take the sum above the limit.
    let sum: f64 = out.iter().sum();
    if sum > limit && sum > 0.0 {
        let k = limit / sum;
        out.iter_mut().for_each(|o| *o *= k);
    }
}

/// Which demand a host reports for one aggregate tenant, of three estimates for when the
/// shares apply: what it measured last (distributed rate limiting's rule), its forecast, or
/// the measurement moved by the change the forecaster expects (a ramp it has seen every day,
/// on top of the level it sees now) — whichever has been nearest the demand that then came,
/// on this tenant's own history, at this time of day (slots of the season: the forecast may
/// win at the morning ramp and the measurement all night). Prediction earns its place tenant
/// by tenant and slot by slot; where it does not pay the host reports what it measured, and
/// is no worse than the rule it competes with.
#[derive(Clone, Debug)]
pub struct Gate {
    /// Each cycle's estimates and slot, kept until the cycle they are about.
    ring: Vec<([f64; ESTIMATES], u16)>,
    cycle: u64,
    /// Smoothed absolute error of each estimate, per slot of the season, and how many were
    /// scored there.
    err: Vec<[f32; ESTIMATES]>,
    scored: Vec<u32>,
}

/// Measured, forecast, measured + forecast change.
const ESTIMATES: usize = 3;
/// Errors are averaged over about this many cycles of a slot.
const GATE_MEMORY: f64 = 64.0;
/// Scored cycles of a slot before anything but the measurement may be reported there.
const GATE_TRUST: u32 = 16;

impl Gate {
    /// `horizon`: how many cycles ahead the estimates look; `slots`: how many slots the
    /// season is cut into (1: one error for all times).
    pub fn new(horizon: usize, slots: usize) -> Gate {
        let slots = slots.clamp(1, usize::from(u16::MAX));
        Gate {
            ring: vec![([0.0; ESTIMATES], 0); horizon.max(1)],
            cycle: 0,
            err: vec![[0.0; ESTIMATES]; slots],
            scored: vec![0; slots],
        }
    }

    /// This cycle's measured demand `actual`, the forecast `predicted` for `horizon` cycles
    /// ahead and the change `change` expected until then, made in `slot` of the season;
    /// returns the estimate to report.
    pub fn step(&mut self, actual: f64, predicted: f64, change: f64, slot: usize) -> f64 {
        let h = self.ring.len();
        let at = (self.cycle % h as u64) as usize;
        if self.cycle >= h as u64 {
            let (made, s) = self.ring[at];
            let s = usize::from(s);
            let a = 1.0 / GATE_MEMORY.min(f64::from(self.scored[s]) + 1.0);
            for (e, m) in self.err[s].iter_mut().zip(made) {
                *e += (a * ((m - actual).abs() - f64::from(*e))) as f32;
            }
            self.scored[s] = self.scored[s].saturating_add(1);
        }
        let slot = slot.min(self.err.len() - 1);
        let clean = |x: f64| if x.is_finite() { x.max(0.0) } else { actual };
        let now = [actual, clean(predicted), clean(actual + change)];
        self.ring[at] = (now, slot as u16);
        self.cycle += 1;
        now[self.choice(slot)]
    }

    /// Which estimate is reported in `slot`: 0 the measurement, 1 the forecast, 2 the
    /// measurement moved by the forecast change.
    pub fn choice(&self, slot: usize) -> usize {
        let slot = slot.min(self.err.len() - 1);
        if self.scored[slot] < GATE_TRUST {
            return 0;
        }
        // The measurement unless another has been strictly better.
        let e = &self.err[slot];
        let mut best = 0;
        for k in 1..ESTIMATES {
            if e[k] < e[best] {
                best = k;
            }
        }
        best
    }
}

/// Slots a season is cut into for the gate: half-hours of a day.
pub const GATE_SLOTS: usize = 48;

/// The gate's slot of time `ts` (seconds) in a season of `season_s`.
pub fn gate_slot(ts: f64, season_s: f64) -> usize {
    if !(ts.is_finite() && season_s > 0.0) {
        return 0;
    }
    let at = ts.rem_euclid(season_s) / season_s;
    ((at * GATE_SLOTS as f64) as usize).min(GATE_SLOTS - 1)
}

/// The safe split when the hosts cannot coordinate: the limit evenly over the hosts last seen.
pub fn safe_split(limit: f64, hosts: usize) -> f64 {
    limit / hosts.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(limit: f64, demand: &[f64], floor: f64) -> Vec<f64> {
        let (mut out, mut order) = (Vec::new(), Vec::new());
        divide(limit, demand, floor, &mut out, &mut order);
        out
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6 * b.abs().max(1.0)
    }

    #[test]
    fn never_above_the_limit_and_all_of_it_handed_out() {
        let cases: &[&[f64]] = &[
            &[0.0, 0.0, 0.0],
            &[10.0, 20.0, 30.0],
            &[1e9, 1e9, 0.0],
            &[f64::NAN, f64::INFINITY, -5.0, 40.0],
            &[90.0],
        ];
        for d in cases {
            for floor in [0.0, 0.02, 0.5] {
                let s = run(90.0, d, floor);
                let sum: f64 = s.iter().sum();
                assert!(sum <= 90.0 + 1e-9, "{d:?} {floor}: {s:?}");
                assert!(close(sum, 90.0), "work-conserving: {d:?} {floor}: {s:?}");
                assert!(s.iter().all(|x| x.is_finite() && *x >= 0.0), "{s:?}");
            }
        }
    }

    #[test]
    fn demand_above_the_limit_is_max_min_fair() {
        // 3:1:0 of a 90 limit offered 120 in all: the small host gets what it needs, the
        // idle one its floor, the big one the rest.
        let s = run(90.0, &[90.0, 30.0, 0.0], 0.03);
        assert!(close(s[2], 0.9), "{s:?}");
        assert!(close(s[1], 30.0), "{s:?}");
        assert!(close(s[0], 90.0 - 30.0 - 0.9), "{s:?}");
        // Two hosts both over an even split share it evenly.
        let s = run(90.0, &[100.0, 100.0, 10.0], 0.0);
        assert!(
            close(s[0], 40.0) && close(s[1], 40.0) && close(s[2], 10.0),
            "{s:?}"
        );
    }

    #[test]
    fn spare_goes_where_demand_is() {
        // 30 + 10 asked of 90: each gets its demand, and the 50 left in proportion (3:1).
        let s = run(90.0, &[30.0, 10.0, 0.0], 0.0);
        assert!(
            close(s[0], 30.0 + 37.5) && close(s[1], 10.0 + 12.5),
            "{s:?}"
        );
        assert!(close(s[2], 0.0), "{s:?}");
        // No demand anywhere: even.
        let s = run(90.0, &[0.0, 0.0, 0.0], 0.0);
        assert!(s.iter().all(|x| close(*x, 30.0)), "{s:?}");
    }

    #[test]
    fn the_gate_reports_forecasts_only_where_they_beat_the_last_measurement() {
        // A ramp a forecaster follows exactly 2 cycles ahead: the forecast wins.
        let mut g = Gate::new(2, 1);
        let mut last = 0.0;
        for t in 0..100 {
            let x = f64::from(t) * 10.0;
            last = g.step(x, x + 20.0, 0.0, 0);
        }
        assert_eq!(g.choice(0), 1);
        assert_eq!(last, 990.0 + 20.0);
        // A forecaster stuck on an old level while demand moved: the measurement wins.
        let mut g = Gate::new(2, 1);
        for t in 0..100 {
            let x = if t < 50 { 100.0 } else { 10.0 };
            last = g.step(x, 100.0, 0.0, 0);
        }
        assert_eq!(g.choice(0), 0);
        assert_eq!(last, 10.0);
        // Noise that persists (the last measurement knows today's level) on a ramp the
        // forecaster knows the shape of: the measurement moved by the expected change wins.
        let mut g = Gate::new(1, 1);
        let mut level = 0.0;
        for t in 0..200 {
            level = if t % 40 < 20 {
                level + 3.0
            } else {
                level - 1.0
            };
            let x = 1000.0 + f64::from(t) * 10.0 + level;
            last = g.step(x, 1000.0 + f64::from(t + 1) * 10.0, 10.0, 0);
        }
        assert_eq!(g.choice(0), 2, "{g:?}");
        assert!(last > 1000.0);
        // By slot: a ramp in slot 1 only, flat with noise in slot 0, where the expected
        // change is wrong: each slot keeps its own winner.
        let mut g = Gate::new(1, 2);
        let mut x = 100.0;
        for t in 0..400 {
            let slot = usize::from(t % 20 >= 10);
            let noise = if t % 2 == 0 { 1.0 } else { -1.0 };
            x = if slot == 1 { x + 10.0 } else { 100.0 + noise };
            g.step(x, 0.0, if slot == 1 { 10.0 } else { 3.0 }, slot);
        }
        assert_eq!((g.choice(0), g.choice(1)), (0, 2), "{g:?}");
    }

    #[test]
    fn every_host_keeps_its_floor() {
        let s = run(100.0, &[1e6, 0.0, 0.0, 0.0], 0.04);
        for x in &s[1..] {
            assert!(close(*x, 1.0), "{s:?}");
        }
        assert!(close(s[0], 97.0), "{s:?}");
    }
}
