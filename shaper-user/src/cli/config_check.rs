//! `shaper config check F`: validate and show what would be applied.
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use shaper::config::{Config, tier_str};
use shaper::units::{Rate, Size};

pub fn execute(file: &Path, json: bool) -> Result<()> {
    let cfg = Config::load(file)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&cfg)?);
    } else {
        print!("{}", describe(&cfg));
    }
    Ok(())
}

/// The human summary `config check` prints.
pub fn describe(cfg: &Config) -> String {
    let mut s = String::new();
    let l = &cfg.link;
    // The JSON spelling of the enums ("dst", "pass"), as the operator wrote them.
    let name = |v: serde_json::Value| v.as_str().unwrap_or("?").to_string();
    let _ = writeln!(
        s,
        "link: {}  match: {}  unmatched: {}",
        l.capacity,
        name(serde_json::json!(l.match_dir)),
        name(serde_json::json!(l.unmatched))
    );
    let total: u64 = cfg.tenants.iter().map(|t| t.rate.bits_per_sec()).sum();
    let _ = writeln!(
        s,
        "tenants: {}  (sum of rates {} of {})",
        cfg.tenants.len(),
        Rate(total),
        l.capacity
    );
    let _ = writeln!(
        s,
        "  {:<4} {:<16} {:<9} {:>10} {:>10} {:>10} {:>12} {:>14}  prefixes",
        "id", "name", "tier", "rate", "burst", "ceil", "depth", "mix g/s/b"
    );
    for (id, t) in cfg.tenants.iter().enumerate() {
        let depth_ms = t.burst.bytes() as f64 * 8.0 / t.rate.bits_per_sec() as f64 * 1e3;
        let mix = t
            .mix
            .clone()
            .unwrap_or_else(|| cfg.token_types.default_mix());
        let _ = writeln!(
            s,
            "  {:<4} {:<16} {:<9} {:>10} {:>10} {:>10} {:>9.2} ms {:>14}  {}",
            id,
            t.name,
            tier_str(t.tier),
            t.rate.to_string(),
            Size(t.burst.bytes()).to_string(),
            t.ceil.map_or_else(|| "-".to_string(), |c| c.to_string()),
            depth_ms,
            format!("{:.2}/{:.2}/{:.2}", mix.gold, mix.silver, mix.bronze),
            t.prefixes.join(", ")
        );
    }
    if total > l.capacity.bits_per_sec() {
        let _ = writeln!(
            s,
            "warning: tenant rates add up to more than the link: the link is oversubscribed"
        );
    }
    let _ = writeln!(
        s,
        "enforced now: link, pools, tiers (borrow, emergency, priority), token_types, tenants (prefixes, rate, burst, ceil, mix, ecn)\n\
         validated, acted on by later stages: tiers.risk, forecast, policy, events ({}), history",
        cfg.events.len()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_every_tenant_and_its_bucket_depth() {
        let cfg = Config::parse(shaper::config::EXAMPLE).expect("valid");
        let d = describe(&cfg);
        assert!(
            d.contains("link: 1gbit  match: dst  unmatched: pass"),
            "{d}"
        );
        assert!(
            d.contains("tenants: 3  (sum of rates 350mbit of 1gbit)"),
            "{d}"
        );
        // acme: 256 kB at 200 Mbit/s = 25 MB/s -> 10.24 ms of depth.
        assert!(
            d.lines().any(|l| l.contains("acme")
                && l.contains("10.24 ms")
                && l.contains("2001:db8:1::/48")),
            "{d}"
        );
        assert!(!d.contains("oversubscribed"));
    }
}
