//! `shaper history` and `shaper report`: the history store exported as a table or CSV, or drawn.
use std::fmt::Write as _;

use anyhow::{Result, bail};

use crate::cli::stats::only_running_iface;
use crate::cli::{HistoryArgs, HistorySource, ReportArgs};
use shaper::store::{Row, Store, to_csv};
use shaper::units::human_bits;

/// `90s`, `15m`, `1h`, `2d` in seconds.
pub fn parse_age(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok().filter(|n: &f64| *n >= 0.0)?;
    let mult = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return None,
    };
    Some(n * mult)
}

/// The rows `src` selects, oldest first per tenant, and the interface they belong to.
fn load(src: &HistorySource) -> Result<(String, Vec<Row>)> {
    let Some(age) = parse_age(&src.since) else {
        bail!(
            "--since '{}': want a number and s, m, h or d (`1h`, `30m`)",
            src.since
        );
    };
    if !src.db.exists() {
        bail!(
            "no history store at {}: pass --db (the config's history.path)",
            src.db.display()
        );
    }
    let iface = match &src.iface {
        Some(i) => i.clone(),
        None => only_running_iface()?,
    };
    let store = Store::open(&src.db, &iface)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let rows = store.since(src.tenant.as_deref(), now - age)?;
    Ok((iface, rows))
}

/// `shaper report`: the selected history as charts and an index page.
pub fn report(args: &ReportArgs) -> Result<()> {
    let (iface, rows) = load(&args.source)?;
    if rows.is_empty() {
        bail!(
            "no history for {iface} in the last {}{}: widen --since, or check --iface and --db",
            args.source.since,
            args.source
                .tenant
                .as_deref()
                .map_or(String::new(), |t| format!(" for tenant {t}")),
        );
    }
    let title = format!("shaper on {iface}: the last {}", args.source.since);
    let w = shaper::report::write(&args.out, &title, &rows)?;
    println!(
        "wrote {} ({} charts, {} tenants, {} rows)",
        w.index.display(),
        w.charts.len(),
        w.summaries.len(),
        rows.len()
    );
    Ok(())
}

pub fn execute(args: &HistoryArgs) -> Result<()> {
    let (iface, rows) = load(&args.source)?;
    if args.csv {
        print!("{}", to_csv(&rows));
        return Ok(());
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<16} {:>19} {:>13} {:>13} {:>13} {:>13} {:>13}",
        "tenant", "time (UTC)", "offered", "passed", "dropped", "forecast", "fill"
    );
    for r in &rows {
        let t = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(r.ts.max(0.0)),
        )
        .to_string();
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| human_bits(v * 8.0));
        let _ = writeln!(
            s,
            "{:<16} {:>19} {:>13} {:>13} {:>13} {:>13} {:>13}",
            r.tenant,
            t.trim_end_matches('Z').replace('T', " "),
            human_bits(r.offered * 8.0),
            human_bits(r.passed * 8.0),
            human_bits(r.dropped * 8.0),
            opt(r.forecast.map(|f| f.0)),
            opt(r.fill)
        );
    }
    if rows.is_empty() {
        let _ = writeln!(
            s,
            "(no history for {iface} in the last {})",
            args.source.since
        );
    }
    print!("{s}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages_parse() {
        assert_eq!(super::parse_age("90s"), Some(90.0));
        assert_eq!(super::parse_age("1.5h"), Some(5400.0));
        assert_eq!(super::parse_age("2d"), Some(172_800.0));
        assert_eq!(super::parse_age("5"), None);
        assert_eq!(super::parse_age("3w"), None);
    }
}
