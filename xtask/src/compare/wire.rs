//! Wire: frames/s on one CPU of live XDP frames into the veth, policed and passed.
use super::*;

/// [`wire_rate`] through one tenant (10.10.1.0/24) of `rate_bits`, whose burst is 64 kB or
/// 10 ms of its rate.
fn wire_cost(lab: &Lab, setup: Setup, rate_bits: u64, secs: u64, dir: &Path) -> Result<f64> {
    // At least 10 ms of the rate: the coarse clock (one jiffy, up to 4 ms) must hold a tick's
    // tokens, or it polices a tenant sending within its rate.
    let t = Tenant::net(1, rate_bits, (rate_bits / 800).max(64_000));
    let _a = attach(lab, setup, std::slice::from_ref(&t), dir)?;
    wire_rate(lab, setup.name(), [10, 10, 1, 1], secs)
}

/// Runs the test and prints, charts and records its results.
pub(super) fn report(run: &mut Run) -> Result<()> {
    let (lab, reps, secs, dir) = (run.lab, run.reps, run.secs, run.dir);
    let json = &mut run.json;
    gro_on(lab)?;
    println!("\n## cost on one CPU: 64-byte XDP frames into the veth (live-frames generator)");
    for (what, rate) in [
        ("over its rate (1 Mbit/s): policed", 1_000_000u64),
        ("within its rate (40 Gbit/s): passed", 40_000_000_000),
    ] {
        let mut res: Vec<(Setup, Vec<f64>)> = vec![
            (Setup::Bare, vec![]),
            (
                Setup::Floor {
                    drop: rate < 1_000_000_000,
                },
                vec![],
            ),
            (Setup::Shaper { ecn: false }, vec![]),
            (Setup::ShaperCoarse, vec![]),
            (Setup::Htb, vec![]),
        ];
        for _ in 0..reps {
            for (s, v) in res.iter_mut() {
                v.push(wire_cost(lab, *s, rate, secs, dir)?);
            }
        }
        println!("tenant {what}:");
        let mut meds = Vec::new();
        for (s, mut v) in res {
            json.insert(format!("wire {} {what}", s.name()), serde_json::json!(v));
            let (lo, hi) = spread(&v);
            let m = median(&mut v);
            meds.push((s.name(), m));
            println!(
                "{:>12}: {:.0} frames/s [{lo:.0}-{hi:.0}], {:.0} ns per frame",
                s.name(),
                m,
                1e9 / m
            );
        }
        if let (Some(sh), Some(htb)) = (
            meds.iter().find(|m| m.0 == "shaper"),
            meds.iter().find(|m| m.0 == "HTB+IFB"),
        ) {
            println!(
                "shaper / HTB+IFB: {:.2}x the frames/s on one CPU",
                sh.1 / htb.1
            );
            let coarse = meds.iter().find(|m| m.0 == Setup::ShaperCoarse.name());
            if let Some(c) = coarse {
                println!(
                    "shaper (coarse clock) / HTB+IFB: {:.2}x the frames/s on one CPU",
                    c.1 / htb.1
                );
            }
            if let Some(floor) = meds.iter().find(|m| m.0.starts_with("XDP_")) {
                let above = |x: f64| 1e9 / x - 1e9 / floor.1;
                for s in [Some(sh), coarse].into_iter().flatten() {
                    println!(
                        "above the {} floor ({:.0} ns): {} {:.0} ns, HTB+IFB {:.0} ns per frame: HTB+IFB / {} {:.2}x",
                        floor.0,
                        1e9 / floor.1,
                        s.0,
                        above(s.1),
                        above(htb.1),
                        s.0,
                        above(htb.1) / above(s.1)
                    );
                }
            }
        }
    }
    Ok(())
}
