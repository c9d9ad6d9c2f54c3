//! Isolation: a quiet tenant's traffic delivered while its neighbour floods.
use super::*;

/// Two tenants of 100 Mbit/s: one floods at 5x, the other sends 90 Mbit/s. Returns the share
/// of the quiet tenant's traffic delivered.
fn isolation(lab: &Lab, setup: Setup, secs: u64, dir: &Path) -> Result<f64> {
    let t = |net| Tenant::net(net, 100_000_000, 125_000);
    let _a = attach(lab, setup, &[t(1), t(2)], dir)?;
    let fl = floods(
        lab,
        &[
            (1, Some(500_000_000), 1400, Some(0)),
            (2, Some(90_000_000), 1400, Some(1)),
        ],
        secs,
    );
    let r = traffic::run_flows(&lab.dut.name, &fl, &Arc::new(AtomicBool::new(false)))?;
    Ok(r.received_bps(dst(2)) / r.offered_bps(dst(2)).max(1.0))
}

/// Runs the test and prints, charts and records its results.
pub(super) fn report(run: &mut Run) -> Result<()> {
    let (lab, reps, secs, dir) = (run.lab, run.reps, run.secs, run.dir);
    println!("\n## isolation: a 100 Mbit/s tenant sending 90 while its neighbour floods at 500");
    let mut res: Vec<(Setup, Vec<f64>)> =
        vec![(Setup::Shaper { ecn: false }, vec![]), (Setup::Htb, vec![])];
    for _ in 0..reps {
        for (s, v) in res.iter_mut() {
            v.push(isolation(lab, *s, secs, dir)?);
        }
    }
    for (s, mut v) in res {
        let (lo, hi) = spread(&v);
        println!(
            "{:>12}: {:.4} of the quiet tenant's traffic delivered [{:.4}-{:.4}]",
            s.name(),
            median(&mut v),
            lo,
            hi
        );
    }
    Ok(())
}
