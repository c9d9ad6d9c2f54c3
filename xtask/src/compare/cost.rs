//! Cost: packets/s and CPU per packet of 64-byte frames from two CPUs, nothing limited.
use super::*;

/// Small packets (64-byte frames) as fast as two sender CPUs go, through a tenant that never
/// limits them: packets delivered per second and CPU time (all CPUs, busy jiffies) per packet.
fn cost(lab: &Lab, setup: Setup, secs: u64, dir: &Path) -> Result<(f64, f64)> {
    let t = Tenant::net(1, 40_000_000_000, 10_000_000);
    let _a = attach(lab, setup, std::slice::from_ref(&t), dir)?;
    let fl = floods(lab, &[(1, None, 18, Some(0)), (1, None, 18, Some(1))], secs);
    let (b0, _) = cpu_jiffies();
    let r = traffic::run_flows(&lab.dut.name, &fl, &Arc::new(AtomicBool::new(false)))?;
    let (b1, _) = cpu_jiffies();
    let rx = r
        .received
        .iter()
        .find(|(d, _)| *d == dst(1))
        .map(|(_, x)| x.clone())
        .unwrap_or_default();
    let pps = rx.packets as f64 / secs as f64;
    // USER_HZ is 100: a jiffy is 10 ms.
    let cpu_ns = (b1 - b0) as f64 * 1e7 / rx.packets.max(1) as f64;
    Ok((pps, cpu_ns))
}

/// Runs the test and prints, charts and records its results.
pub(super) fn report(run: &mut Run) -> Result<()> {
    let (lab, reps, secs, dir) = (run.lab, run.reps, run.secs, run.dir);
    println!("\n## cost: 64-byte frames from two CPUs as fast as they go, nothing limited");
    println!("(both CPUs saturated: CPU per packet is all CPU time over delivered packets)");
    let mut res: Vec<(Setup, Vec<(f64, f64)>)> = vec![
        (Setup::Bare, vec![]),
        (Setup::Shaper { ecn: false }, vec![]),
        (Setup::ShaperSkb, vec![]),
        (Setup::Htb, vec![]),
    ];
    for _ in 0..reps {
        for (s, v) in res.iter_mut() {
            v.push(cost(lab, *s, secs, dir)?);
        }
    }
    let bare_ns = {
        let mut b: Vec<f64> = res[0].1.iter().map(|x| x.1).collect();
        median(&mut b)
    };
    let mut added = Vec::new();
    for (s, v) in &res {
        let mut p: Vec<f64> = v.iter().map(|x| x.0).collect();
        let mut c: Vec<f64> = v.iter().map(|x| x.1).collect();
        let (pl, ph) = spread(&p);
        let (cl, ch) = spread(&c);
        let (pm, cm) = (median(&mut p), median(&mut c));
        added.push((s.name(), pm, cm - bare_ns));
        println!(
            "{:>12}: {:.0} packets/s delivered [{pl:.0}-{ph:.0}], CPU {:.0} ns per packet [{cl:.0}-{ch:.0}], {:+.0} ns over no shaping",
            s.name(),
            pm,
            cm,
            cm - bare_ns
        );
    }
    for (name, pps, _) in &added {
        if let Some(htb) = added.iter().find(|a| a.0 == "HTB+IFB") {
            println!("{name} / HTB+IFB: {:.2}x the packets/s", pps / htb.1);
        }
    }
    Ok(())
}
