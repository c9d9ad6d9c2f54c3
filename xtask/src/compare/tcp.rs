//! TCP: goodput, retransmissions and RTT of one cubic flow through a 100 Mbit/s tenant.
use super::*;

/// Goodput (bit/s), retransmissions, mean RTT (ms).
type TcpResult = (f64, f64, f64);

/// One cubic flow through a 100 Mbit/s tenant over a 5 ms return path: goodput (bit/s of
/// payload), retransmissions and the sender's mean smoothed RTT (ms), after 2 s of slow start.
fn tcp(lab: &Lab, setup: Setup, secs: u64, dir: &Path) -> Result<TcpResult> {
    let t = Tenant::net(1, 100_000_000, 128_000);
    let _a = attach(lab, setup, std::slice::from_ref(&t), dir)?;
    let mut srv = in_ns(&lab.dut.name, "iperf3")
        .args(["-s", "-1", "-B", "10.10.1.1", "-p", "5299"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("iperf3 server (scripts/setup.sh installs iperf3)")?;
    std::thread::sleep(Duration::from_millis(300));
    let out = in_ns(&lab.src.name, "iperf3")
        .args([
            "-c",
            "10.10.1.1",
            "-p",
            "5299",
            "-C",
            "cubic",
            "-O",
            "2",
            "-J",
            "-t",
        ])
        .arg((secs + 2).to_string())
        .output()
        .context("iperf3 client")?;
    let _ = srv.kill();
    let _ = srv.wait();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 JSON")?;
    let goodput = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3: no sum_received")?;
    let retrans = v["end"]["sum_sent"]["retransmits"].as_f64().unwrap_or(0.0);
    let rtt_ms = v["end"]["streams"][0]["sender"]["mean_rtt"]
        .as_f64()
        .unwrap_or(f64::NAN)
        / 1000.0;
    Ok((goodput, retrans, rtt_ms))
}

/// Runs the test and prints, charts and records its results.
pub(super) fn report(run: &mut Run) -> Result<()> {
    let (lab, reps, secs, dir, out) = (run.lab, run.reps, run.secs, run.dir, run.out);
    let json = &mut run.json;
    println!("\n## TCP: one cubic flow, 100 Mbit/s tenant, 5 ms return path");
    let _delay = shaper::lab::DelayLine::start(
        lab,
        "10.10.1.2".parse().context("addr")?,
        Duration::from_millis(5),
    )?;
    let mut res: Vec<(Setup, Vec<TcpResult>)> = vec![
        (Setup::Htb, vec![]),
        (Setup::Shaper { ecn: false }, vec![]),
        (Setup::Shaper { ecn: true }, vec![]),
    ];
    for _ in 0..reps {
        for (s, v) in res.iter_mut() {
            v.push(tcp(lab, *s, secs, dir)?);
        }
    }
    let mut dots = Vec::new();
    for (s, v) in res {
        json.insert(format!("tcp {}", s.name()), serde_json::json!(v));
        dots.push(series(
            s.name(),
            color(s),
            v.iter().map(|x| (x.2, x.0 / 1e6)).collect(),
            true,
        ));
        let mut g: Vec<f64> = v.iter().map(|x| x.0 / 1e6).collect();
        let mut r: Vec<f64> = v.iter().map(|x| x.1).collect();
        let mut t: Vec<f64> = v.iter().map(|x| x.2).collect();
        let (gl, gh) = spread(&g);
        let (rl, rh) = spread(&r);
        let (tl, th) = spread(&t);
        println!(
            "{:>12}: goodput {:.1} Mbit/s [{gl:.1}-{gh:.1}], retransmissions {:.0} [{rl:.0}-{rh:.0}], mean RTT {:.2} ms [{tl:.2}-{th:.2}]",
            s.name(),
            median(&mut g),
            median(&mut r),
            median(&mut t)
        );
    }
    drop(_delay);
    plot::png(
        &out.join("tcp.png"),
        &[panel(
            "TCP through a 100 Mbit/s tenant, 5 ms path (each run)",
            "mean RTT, ms",
            "goodput, Mbit/s",
            false,
            dots,
        )],
    )?;
    Ok(())
}
