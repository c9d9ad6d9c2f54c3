//! Scale: CPU per frame and memory at 1, 1,000 and 100,000 tenants.
use super::*;

/// Kernel slab and per-CPU memory (`/proc/meminfo`), bytes: what tc's classes and filters take.
fn kernel_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("Slab:") || l.starts_with("Percpu:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum::<u64>()
        * 1024
}

/// Frames per second; resident (or slab) and BPF memory, bytes.
type ScaleResult = (f64, u64, u64);

/// One setup with `n` tenants configured (10.64.0.0 upwards, /32 each, 10 Mbit/s), the last of
/// which (`rate_bits`) receives 64-byte frames on one CPU ([`wire_rate`]). Returns frames per
/// second, and the memory the setup took (bytes): the agent's resident memory and the BPF
/// memory its maps and programs hold for the shaper; the kernel's slab growth and 0 for HTB.
fn scale(
    lab: &Lab,
    setup: Setup,
    n: usize,
    rate_bits: u64,
    secs: u64,
    dir: &Path,
) -> Result<ScaleResult> {
    let tenants: Vec<Tenant> = (0..n)
        .map(|i| {
            if i + 1 == n {
                Tenant::host(i, rate_bits, 64_000)
            } else {
                Tenant::host(i, 10_000_000, 32_000)
            }
        })
        .collect();
    let dst = {
        let i = n - 1;
        [10, 64 + (i >> 16) as u8, (i >> 8) as u8, i as u8]
    };
    let k0 = kernel_memory();
    let a = attach(lab, setup, &tenants, dir)?;
    let (m0, m1) = match &a {
        Attached::Shaper(agent) => {
            // A few agent cycles, so its tables and forecasters are all allocated.
            std::thread::sleep(Duration::from_secs(3));
            process_memory(agent.child.id())
        }
        _ => (kernel_memory().saturating_sub(k0), 0),
    };
    let fps = wire_rate(lab, &format!("{} x{n}", setup.name()), dst, secs)?;
    Ok((fps, m0, m1))
}

/// Runs the test and prints, charts and records its results.
pub(super) fn report(run: &mut Run) -> Result<()> {
    let (lab, reps, secs, dir, out) = (run.lab, run.reps, run.secs, run.dir, run.out);
    let json = &mut run.json;
    // One HTB qdisc holds 65,519 tenant classes (16-bit minors, from 0x10): its last row is
    // at 64,000.
    const HTB_MAX: usize = 64_000;
    gro_on(lab)?;
    println!(
        "\n## scale: tenants configured (/32 each); 64-byte frames on one CPU to the last one"
    );
    let counts = [1usize, 1_000, 100_000];
    let mut panels = Vec::new();
    // (setup, tenants, [(resident or slab, BPF)]).
    type Memory = Vec<(f64, f64)>;
    let mut mem: Vec<(Setup, usize, Memory)> = Vec::new();
    for (what, rate) in [
        ("policed (1 Mbit/s)", 1_000_000u64),
        ("passed (40 Gbit/s)", 40_000_000_000),
    ] {
        let mut lines = Vec::new();
        for setup in [Setup::Shaper { ecn: false }, Setup::Htb] {
            lines.push(series(setup.name(), color(setup), Vec::new(), false));
        }
        // The floor: what the generator, the veth and the XDP hook cost whatever runs.
        let floor = Setup::Floor {
            drop: rate < 1_000_000_000,
        };
        let mut f: Vec<f64> = Vec::new();
        for _ in 0..reps {
            f.push(scale(lab, floor, 1, rate, secs, dir)?.0);
        }
        let (lo, hi) = spread(&f);
        let fm = median(&mut f);
        println!(
            "{what}, floor {:>8}: {fm:.0} frames/s [{lo:.0}-{hi:.0}], {:.0} ns per frame",
            floor.name(),
            1e9 / fm
        );
        lines.push(series(
            floor.name(),
            color(floor),
            counts.iter().map(|n| (*n as f64, 1e9 / fm)).collect(),
            false,
        ));
        for n in counts {
            let mut res: Vec<(Setup, usize, Vec<ScaleResult>)> = vec![
                (Setup::Shaper { ecn: false }, n, Vec::new()),
                (Setup::Htb, n.min(HTB_MAX), Vec::new()),
            ];
            for _ in 0..reps {
                for (s, k, v) in res.iter_mut() {
                    v.push(scale(lab, *s, *k, rate, secs, dir)?);
                }
            }
            for (i, (s, k, v)) in res.iter().enumerate() {
                let mut f: Vec<f64> = v.iter().map(|x| x.0).collect();
                let m: Vec<(f64, f64)> = v.iter().map(|x| (x.1 as f64, x.2 as f64)).collect();
                let (lo, hi) = spread(&f);
                let fm = median(&mut f);
                println!(
                    "{what}, {k:>7} tenants {:>8}: {fm:.0} frames/s [{lo:.0}-{hi:.0}], {:.0} ns per frame",
                    s.name(),
                    1e9 / fm,
                );
                json.insert(
                    format!("scale {} {what} {k}", s.name()),
                    serde_json::json!(v),
                );
                lines[i].points.push((*k as f64, 1e9 / fm));
                match mem.iter_mut().find(|x| x.0 == *s && x.1 == *k) {
                    Some(x) => x.2.extend(m),
                    None => mem.push((*s, *k, m)),
                }
            }
        }
        panels.push(panel(
            &format!("Tenant {what}: CPU per frame (median)"),
            "tenants configured",
            "ns per frame, one CPU",
            true,
            lines,
        ));
    }
    println!(
        "memory: the shaper's agent resident + BPF (maps, programs); HTB+IFB: kernel slab growth"
    );
    for (s, k, m) in mem {
        let mut a: Vec<f64> = m.iter().map(|x| x.0 / 1e6).collect();
        let mut b: Vec<f64> = m.iter().map(|x| x.1 / 1e6).collect();
        let ((al, ah), (bl, bh)) = (spread(&a), spread(&b));
        println!(
            "{:>8} {k:>7} tenants: {:.1} MB [{al:.1}-{ah:.1}] + {:.1} MB [{bl:.1}-{bh:.1}]",
            s.name(),
            median(&mut a),
            median(&mut b)
        );
    }
    plot::png(&out.join("scale.png"), &panels)?;
    Ok(())
}
