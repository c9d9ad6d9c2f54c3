//! Load: offered packets/s stepped up until loss, 64- and 1514-byte frames, one and two CPUs.
use super::*;

/// Datagrams that reached UDP in the dut (delivered or dropped at a full socket): what got
/// past the shaping, whether or not the one sink thread kept up.
fn udp_arrivals(lab: &Lab) -> Result<u64> {
    let out = in_ns(&lab.dut.name, "cat")
        .arg("/proc/net/snmp")
        .output()
        .context("reading /proc/net/snmp")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().unwrap_or(""), udp.next().unwrap_or(""));
    Ok(names
        .split_whitespace()
        .zip(values.split_whitespace())
        .filter(|(n, _)| matches!(*n, "InDatagrams" | "RcvbufErrors" | "NoPorts"))
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum())
}

/// One step of offered load: packets per second asked for, sent, and that reached UDP in the
/// dut; softirq and all busy CPU time per delivered packet.
#[derive(Clone, Copy, Debug)]
struct Step {
    target: f64,
    sent: f64,
    delivered: f64,
    softirq_ns: f64,
    busy_ns: f64,
    /// The rung of the ladder (the same offered loads for every setup), `None` for a step
    /// bisected between a rung sustained and the next.
    rung: Option<usize>,
}

impl Step {
    /// Within 2% of the offered load: neither the senders nor the receive path fell behind.
    fn sustained(&self) -> bool {
        self.delivered >= 0.98 * self.target
    }
}

/// Seconds per step of the load ladder.
const STEP_SECS: u64 = 2;
const LADDER_START: f64 = 50_000.0;
const LADDER_FACTOR: f64 = 1.3;

/// Offered load stepped up (a ladder from 50k packets/s, x1.3 a rung) through two tenants that
/// limit nothing, from `cpus` sender CPUs, until a step is not sustained (CPU saturation: the
/// senders drive the receive path on veth, so a full CPU shows as packets not sent or not
/// received); then two bisections between the last rung sustained and the first not.
fn load(lab: &Lab, setup: Setup, payload: usize, cpus: usize, dir: &Path) -> Result<Vec<Step>> {
    let tenants = [
        Tenant::net(1, 40_000_000_000, 10_000_000),
        Tenant::net(2, 40_000_000_000, 10_000_000),
    ];
    let _a = attach(lab, setup, &tenants, dir)?;
    let pkt_bits = (payload as f64 + 28.0) * 8.0;
    let step = |pps: f64, rung: Option<usize>| -> Result<Step> {
        let each = (pps / cpus as f64 * pkt_bits) as u64;
        let list: Vec<_> = (0..cpus)
            .map(|c| (c as u8 + 1, Some(each), payload, Some(c)))
            .collect();
        let fl = floods(lab, &list, STEP_SECS);
        let u0 = udp_arrivals(lab)?;
        let (b0, s0) = cpu_jiffies();
        let r = traffic::run_flows(&lab.dut.name, &fl, &Arc::new(AtomicBool::new(false)))?;
        let (b1, s1) = cpu_jiffies();
        let got = udp_arrivals(lab)? - u0;
        let sent: u64 = r.floods.iter().map(|(_, s)| s.packets).sum();
        let secs = STEP_SECS as f64;
        // USER_HZ is 100: a jiffy is 10 ms.
        let per = |j: u64| j as f64 * 1e7 / got.max(1) as f64;
        Ok(Step {
            target: pps,
            sent: sent as f64 / secs,
            delivered: got as f64 / secs,
            softirq_ns: per(s1 - s0),
            busy_ns: per(b1 - b0),
            rung,
        })
    };
    let mut steps = Vec::new();
    let mut pps = LADDER_START;
    for rung in 0..16 {
        let s = step(pps, Some(rung))?;
        steps.push(s);
        if !s.sustained() {
            break;
        }
        pps *= LADDER_FACTOR;
    }
    let last = steps.len() - 1;
    if !steps[last].sustained() && last > 0 {
        let (mut lo, mut hi) = (steps[last - 1].target, steps[last].target);
        for _ in 0..2 {
            let mid = (lo * hi).sqrt();
            let s = step(mid, None)?;
            steps.push(s);
            if s.sustained() {
                lo = mid;
            } else {
                hi = mid;
            }
        }
    }
    Ok(steps)
}

/// The most packets per second delivered at a sustained step.
fn max_sustained(steps: &[Step]) -> f64 {
    steps
        .iter()
        .filter(|s| s.sustained())
        .map(|s| s.delivered)
        .fold(0.0, f64::max)
}

/// Runs the test and prints, charts and records its results.
pub(super) fn report(run: &mut Run) -> Result<()> {
    let (lab, reps, dir, out) = (run.lab, run.reps, run.dir, run.out);
    let json = &mut run.json;
    println!("\n## load: offered packets/s stepped up until loss; two tenants that limit nothing");
    let setups = [
        Setup::Bare,
        Setup::Shaper { ecn: false },
        Setup::ShaperSkb,
        Setup::Htb,
    ];
    let mut panels = Vec::new();
    for (payload, frames) in [(18usize, "64-byte frames"), (1472, "1514-byte frames")] {
        for cpus in [1usize, 2] {
            let mut res: Vec<(Setup, Vec<Vec<Step>>)> =
                setups.iter().map(|s| (*s, Vec::new())).collect();
            for _ in 0..reps {
                for (s, v) in res.iter_mut() {
                    v.push(load(lab, *s, payload, cpus, dir)?);
                }
            }
            // CPU per packet compared at one load: the highest rung every run sustained.
            let common = res
                .iter()
                .flat_map(|(_, v)| v.iter())
                .map(|st| {
                    st.iter()
                        .filter(|s| s.sustained())
                        .filter_map(|s| s.rung)
                        .max()
                        .unwrap_or(0)
                })
                .min()
                .unwrap_or(0);
            let at = LADDER_START * LADDER_FACTOR.powi(common as i32);
            println!(
                "{frames}, {cpus} sender CPU(s); CPU per packet at {at:.0} packets/s offered:"
            );
            let mut lines = Vec::new();
            let mut meds = Vec::new();
            for (s, runs) in &res {
                let mut max: Vec<f64> = runs.iter().map(|r| max_sustained(r)).collect();
                let pick = |f: fn(&Step) -> f64| -> Vec<f64> {
                    runs.iter()
                        .filter_map(|r| r.iter().find(|x| x.rung == Some(common)).map(f))
                        .collect()
                };
                let (mut soft, mut busy) = (pick(|x| x.softirq_ns), pick(|x| x.busy_ns));
                let (ml, mh) = spread(&max);
                let (sl, sh) = spread(&soft);
                let (m, so, bu) = (median(&mut max), median(&mut soft), median(&mut busy));
                meds.push((*s, m, so));
                println!(
                    "{:>12}: max sustained {m:.0} packets/s [{ml:.0}-{mh:.0}]; softirq {so:.0} ns per packet [{sl:.0}-{sh:.0}], all CPU {bu:.0} ns",
                    s.name()
                );
                json.insert(
                    format!("load {} {payload} {cpus}", s.name()),
                    serde_json::json!(
                        runs.iter()
                            .map(|r| r
                                .iter()
                                .map(|x| [x.target, x.sent, x.delivered, x.softirq_ns, x.busy_ns])
                                .collect::<Vec<_>>())
                            .collect::<Vec<_>>()
                    ),
                );
                if let Some(run) = median_run(runs, |r| max_sustained(r)) {
                    lines.push(series(
                        s.name(),
                        color(*s),
                        run.iter().map(|x| (x.target, x.delivered)).collect(),
                        false,
                    ));
                }
            }
            let find = |s: Setup| meds.iter().find(|m| m.0 == s).copied();
            if let (Some(sh), Some(htb)) = (find(Setup::Shaper { ecn: false }), find(Setup::Htb)) {
                println!(
                    "shaper / HTB+IFB: {:.2}x the packets/s sustained; HTB+IFB / shaper: {:.2}x the softirq time per packet",
                    sh.1 / htb.1,
                    htb.2 / sh.2
                );
            }
            panels.push(panel(
                &format!("{frames}, {cpus} sender CPU(s) (median run)"),
                "offered, packets/s",
                "reached UDP in the dut, packets/s",
                false,
                lines,
            ));
        }
    }
    plot::png(&out.join("load.png"), &panels)?;
    Ok(())
}
