//! A tenant's mix (its rate split over gold, silver and bronze tokens): moved by the allocator
//! toward the per-type demand, or by the operator's exchanges, within
//! `policy.max_exchange_fraction` and at the configured exchange rates.
use super::Profile;

/// `configured` moved toward `demand` (both splits over gold, silver, bronze summing to 1):
/// each share stays between `(1 - limit)` times its configured value and that value plus
/// `limit` of what is left to 1, and the result sums to 1.
pub fn adjust_mix(configured: [f64; 3], demand: [f64; 3], limit: f64) -> [f64; 3] {
    let limit = limit.clamp(0.0, 1.0);
    let lo = configured.map(|c| c * (1.0 - limit));
    let hi = configured.map(|c| c + limit * (1.0 - c));
    let mut m: [f64; 3] = std::array::from_fn(|k| demand[k].clamp(lo[k], hi[k]));
    // Back to a sum of 1, moving each share in proportion to its room: the bounds allow it
    // (their sums bracket 1), so one pass is exact.
    let sum: f64 = m.iter().sum();
    if sum > 1.0 {
        let room: f64 = (0..3).map(|k| m[k] - lo[k]).sum();
        if room > 0.0 {
            let cut = (sum - 1.0) / room;
            m = std::array::from_fn(|k| m[k] - cut * (m[k] - lo[k]));
        }
    } else if sum < 1.0 {
        let room: f64 = (0..3).map(|k| hi[k] - m[k]).sum();
        if room > 0.0 {
            let add = (1.0 - sum) / room;
            m = std::array::from_fn(|k| m[k] + add * (hi[k] - m[k]));
        }
    }
    m
}

/// The factor on the fill that keeps a moved mix worth what the configured one is at the
/// exchange rates: more of a dearer type costs rate, more of a cheaper one adds it.
pub fn worth_factor(p: &Profile, mix: &[f64; 3]) -> f64 {
    let of = |m: &[f64; 3]| (0..3).map(|k| m[k] * p.worth[k]).sum::<f64>();
    let now = of(mix);
    if now > 0.0 { of(&p.mix) / now } else { 1.0 }
}

/// `shaper exchange`: moves `amount` bits/s of a tenant's rate from token type `from` to `to`
/// (indexes), priced by `values` (what one bit/s of each type is worth). `current` is the
/// tenant's split now, `configured` the config's; the rate moved out of the configured split
/// may not exceed `limit` (`policy.max_exchange_fraction` x the tenant's rate), and the new
/// split's total may not exceed `ceil` (the tenant's ceiling, or its rate without one: at
/// unequal prices an exchange adds more bits/s than it takes). Returns the new split, or why
/// not, in words an operator can act on.
pub fn exchange(
    configured: [f64; 3],
    current: [f64; 3],
    (from, to): (usize, usize),
    amount: f64,
    values: [f64; 3],
    limit: f64,
    ceil: f64,
) -> Result<[f64; 3], String> {
    let name = |k: usize| shaper_common::TYPE_NAMES.get(k).copied().unwrap_or("?");
    let mbit = |v: f64| v / 1e6;
    if from == to || from > 2 || to > 2 {
        return Err("--from and --to must be two different token types".into());
    }
    if amount.is_nan() || amount <= 0.0 {
        return Err("the amount must be above zero".into());
    }
    if amount > current[from] + 1e-6 {
        return Err(format!(
            "the tenant has only {:.3} Mbit/s of {} to give",
            mbit(current[from]),
            name(from)
        ));
    }
    let mut next = current;
    next[from] -= amount;
    next[to] += amount * values[from] / values[to];
    let moved: f64 = configured
        .iter()
        .zip(&next)
        .map(|(c, n)| (c - n).max(0.0))
        .sum();
    if moved > limit + 1e-6 {
        return Err(format!(
            "that would move {:.3} Mbit/s out of the tenant's configured mix; \
             policy.max_exchange_fraction allows {:.3}",
            mbit(moved),
            mbit(limit)
        ));
    }
    let total: f64 = next.iter().sum();
    if total > ceil + 1e-6 {
        return Err(format!(
            "at these exchange rates that would raise the tenant's total to {:.3} Mbit/s, \
             above its ceiling of {:.3}",
            mbit(total),
            mbit(ceil)
        ));
    }
    Ok(next)
}
