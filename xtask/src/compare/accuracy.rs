//! Accuracy: received over configured rate at 10, 100 and 1,000 Mbit/s.
use super::*;

/// Received over configured rate for one tenant at `rate_bits`, offered 1.5x from two CPUs.
fn accuracy(lab: &Lab, setup: Setup, rate_bits: u64, secs: u64, dir: &Path) -> Result<f64> {
    let burst = (rate_bits / 8 / 100).clamp(32_000, 2_000_000);
    let t = Tenant::net(1, rate_bits, burst);
    let _a = attach(lab, setup, std::slice::from_ref(&t), dir)?;
    let each = rate_bits * 3 / 4;
    let fl = floods(
        lab,
        &[
            (1, Some(each), 1400, Some(0)),
            (1, Some(each), 1400, Some(1)),
        ],
        secs,
    );
    let r = traffic::run_flows(&lab.dut.name, &fl, &Arc::new(AtomicBool::new(false)))?;
    Ok(r.received_bps(dst(1)) / rate_bits as f64)
}

/// Runs the test and prints, charts and records its results.
pub(super) fn report(run: &mut Run) -> Result<()> {
    let (lab, reps, secs, dir, out) = (run.lab, run.reps, run.secs, run.dir, run.out);
    let json = &mut run.json;
    println!("## accuracy: received / configured rate, one tenant offered 1.5x from two CPUs");
    let mut points: Vec<(Setup, Vec<(f64, f64)>)> =
        vec![(Setup::Shaper { ecn: false }, vec![]), (Setup::Htb, vec![])];
    for rate in [10_000_000u64, 100_000_000, 1_000_000_000] {
        let mut res: Vec<(Setup, Vec<f64>)> =
            vec![(Setup::Shaper { ecn: false }, vec![]), (Setup::Htb, vec![])];
        for _ in 0..reps {
            for (s, v) in res.iter_mut() {
                v.push(accuracy(lab, *s, rate, secs, dir)?);
            }
        }
        for (s, mut v) in res {
            let (lo, hi) = spread(&v);
            json.insert(
                format!("accuracy {} {}", s.name(), rate),
                serde_json::json!(v),
            );
            let m = median(&mut v);
            if let Some(p) = points.iter_mut().find(|p| p.0 == s) {
                p.1.push((rate as f64 / 1e6, m));
            }
            println!(
                "{:>5} Mbit/s {:>12}: {:.4} [{:.4}-{:.4}]",
                rate / 1_000_000,
                s.name(),
                m,
                lo,
                hi
            );
        }
    }
    plot::png(
        &out.join("accuracy.png"),
        &[Panel {
            y_zero: false,
            ..panel(
                "Enforced / configured rate (median)",
                "configured rate, Mbit/s",
                "received / configured",
                true,
                points
                    .into_iter()
                    .map(|(s, p)| series(s.name(), color(s), p, false))
                    .collect(),
            )
        }],
    )?;
    Ok(())
}
