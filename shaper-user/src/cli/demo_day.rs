//! `shaper demo` (without `--quick`): a compressed day, run twice on the same lab traffic,
//! once with the config's rates (`static`) and once acting on forecasts (`predictive`), then
//! one table of the difference. The day has a predictable peak (gold `acme`), a burst that
//! recurs at the same time each day (silver `globex`) and a flash crowd at a time no history
//! tells (bronze `initech`, contracted to burst to twice its rate; bronze does not borrow at
//! packet level, so only an allocation made ahead can carry it). The forecasters warm-start from earlier days written into the
//! history store, as a shaper that has run for days would.
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use aya::maps::Map;
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::demo::{Scratch, spawn_agent, stop_on_ctrl_c};
use crate::cli::DemoArgs;
use shaper::agent::Options;
use shaper::config::{Config, EXAMPLE, PolicyMode, TierName, tier_str};
use shaper::datapath::{self, AttachMode, TENANT_COUNTERS};
use shaper::lab::Lab;
use shaper::lab::traffic::{Sink, start_schedules};
use shaper::simulate::{SimResult, score};
use shaper::store::{Row, Store, unix_now};
use shaper::units::Rate;

const PAYLOAD: usize = 1400;
/// Days of history written before the replayed one (the agent warm-starts from the last two).
const WARM_DAYS: usize = 3;
/// The demo's link: less than the tenants' peaks together, so what each is given matters.
const CAPACITY_MBIT: u64 = 450;

/// One run's outcome: the simulator's measures of what the agent stored, bytes paid by
/// pre-allocated tokens (from the datapath's counters), and the stored rows for the report.
struct Run {
    result: SimResult,
    pre_used_bytes: f64,
    rows: Vec<Row>,
}

pub async fn execute(args: &DemoArgs) -> Result<()> {
    if !shaper::lab::is_root() {
        bail!(
            "the demo builds network namespaces and loads XDP: run it as root (sudo shaper demo)"
        );
    }
    let day = args.day_secs;
    let scratch = Scratch(std::env::temp_dir().join(format!("shaper-demo-{}", std::process::id())));
    let base = demo_config(day)?;
    let trace = demo_trace(&base, day, args.seed);
    println!(
        "a compressed day of {day} s, run under static then predictive: acme (gold) peaks at the same hour each day, globex (silver) bursts at the same time each day, initech (bronze, may burst to 2x but does not borrow) gets a flash crowd no history predicts; link {CAPACITY_MBIT} Mbit/s"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let ctrlc = stop_on_ctrl_c(stop.clone());
    let mut runs = Vec::new();
    for mode in [PolicyMode::Static, PolicyMode::Predictive] {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mut cfg = base.clone();
        cfg.policy.mode = mode;
        cfg.history.path = scratch.0.join(format!("{}.db", mode.name()));
        runs.push((mode, run_day(&cfg, &trace, day, &stop).await?));
    }
    ctrlc.abort();
    if runs.len() < 2 {
        println!("interrupted before both runs finished: no comparison");
        return Ok(());
    }
    print!("{}", table(&base, &runs));
    let rows: Vec<Row> = runs
        .iter()
        .flat_map(|(mode, r)| {
            r.rows.iter().map(move |row| Row {
                tenant: format!("{} ({})", row.tenant, mode.name()),
                ..row.clone()
            })
        })
        .collect();
    let w = shaper::report::write(
        &args.report,
        "shaper demo: one compressed day, static and predictive",
        &rows,
    )?;
    println!(
        "report: {} (each tenant under both policies: offered, forecast, allocation, drops)",
        w.index.display()
    );
    Ok(())
}

/// The example's tenants on a smaller link, with a season of one compressed day and no
/// wall-clock events.
fn demo_config(day: u64) -> Result<Config> {
    let mut cfg = Config::parse(EXAMPLE)?;
    cfg.link.capacity = Rate(CAPACITY_MBIT * 1_000_000);
    cfg.forecast.interval_ms = 1000;
    cfg.forecast.season_s = day;
    cfg.events.clear();
    // Bronze may burst to twice its rate by contract, but does not borrow at packet level:
    // what carries its flash crowd is capacity the allocator predicts idle, or nothing.
    for t in cfg
        .tenants
        .iter_mut()
        .filter(|t| t.tier == TierName::Bronze)
    {
        t.ceil.get_or_insert(Rate(2 * t.rate.0));
    }
    cfg.validate().context("the demo's config")?;
    Ok(cfg)
}

/// Offered bytes/s per tenant (config order) and second, `WARM_DAYS + 1` days of `day` s.
fn demo_trace(cfg: &Config, day: u64, seed: u64) -> Vec<Vec<f64>> {
    let d = day as usize;
    let cycles = (WARM_DAYS + 1) * d;
    let mut rng = StdRng::seed_from_u64(seed);
    // Each day's flash crowd starts somewhere in the middle half of the day.
    let flashes: Vec<usize> = (0..=WARM_DAYS)
        .map(|_| rng.random_range(d / 4..3 * d / 4))
        .collect();
    cfg.tenants
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let r = t.rate.bits_per_sec() as f64 / 8.0;
            (0..cycles)
                .map(|c| {
                    let x = (c % d) as f64 / d as f64;
                    let noise = 1.0 + 0.1 * (rng.random::<f64>() * 2.0 - 1.0);
                    let v = match i {
                        // A daily peak at 1.4x the rate around mid-day.
                        0 => r * (0.4 + 1.0 * (-((x - 0.5) / 0.12).powi(2)).exp()),
                        // A burst at 1.8x at the same time every day.
                        1 => r * if (0.62..0.74).contains(&x) { 1.8 } else { 0.3 },
                        // A flash crowd at twice the rate, at a different time each day.
                        _ => {
                            let start = flashes[c / d];
                            let in_flash = (start..start + d / 10).contains(&(c % d));
                            r * if in_flash { 2.0 } else { 0.5 }
                        }
                    };
                    v * noise
                })
                .collect()
        })
        .collect()
}

/// One policy over the last day of `trace`: a fresh lab, history of the warm days written
/// first, the agent started, every tenant's traffic sent as the trace says, then scored.
async fn run_day(
    cfg: &Config,
    trace: &[Vec<f64>],
    day: u64,
    stop: &Arc<AtomicBool>,
) -> Result<Run> {
    let d = day as usize;
    let name = cfg.policy.mode.name();
    let lab = Lab::new(&["10.10.1", "10.10.2", "10.10.3"], &[]).context("building the lab")?;
    if let Some(dir) = cfg.history.path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let now = unix_now();
    {
        let mut store = Store::open(&cfg.history.path, &lab.dut_if)?;
        let warm = WARM_DAYS * d;
        for c in 0..warm {
            let ts = now - (warm - c) as f64;
            let rows: Vec<Row> = cfg
                .tenants
                .iter()
                .zip(trace)
                .map(|(t, s)| Row::unshaped(ts, &t.name, s[c]))
                .collect();
            store.append(&rows)?;
        }
    }
    let options = Options {
        iface: lab.dut_if.clone(),
        config: format!("(embedded example, {name})").into(),
        xdp_mode: AttachMode::Native,
        max_tenants: shaper_common::DEFAULT_MAX_TENANTS,
        netns: Some(lab.dut.name.clone()),
        clock: shaper::datapath::Clock::Precise,
        fault: None,
    };
    let (agent, ready_rx, quit_tx) = spawn_agent(options, cfg.clone());
    let outcome = async {
        if ready_rx.await.is_err() {
            return Ok(None);
        }
        // The agent has logged the dashboard's address (http://127.0.0.1:9464/ by default).
        println!("{name}: the day runs for {day} s");
        let started = unix_now();
        let targets: Vec<SocketAddr> = (0..cfg.tenants.len())
            .map(|i| SocketAddr::new(IpAddr::from([10, 10, 1 + i as u8, 1]), 9000))
            .collect();
        let window = Duration::from_secs(day + 3);
        let done = Arc::new(AtomicBool::new(false));
        let sinks = targets
            .iter()
            .map(|dst| Ok(Sink::bind(&lab.dut.name, *dst)?.start(window, done.clone())))
            .collect::<Result<Vec<_>>>()?;
        let senders = start_schedules(
            &lab.src.name,
            targets
                .iter()
                .zip(trace)
                .map(|(dst, s)| (*dst, &s[WARM_DAYS * d..])),
            PAYLOAD,
            stop,
        );
        tokio::task::spawn_blocking(move || -> Result<()> {
            for s in senders {
                s.join().map_err(|_| anyhow!("sender panicked"))??;
            }
            // Two more cycles, so the agent records the last second.
            std::thread::sleep(Duration::from_millis(2500));
            done.store(true, Ordering::Relaxed);
            for s in sinks {
                s.join().map_err(|_| anyhow!("sink panicked"))??;
            }
            Ok(())
        })
        .await
        .context("traffic thread")??;
        let counters = datapath::read_tenant_counters(
            &Map::PerCpuArray(datapath::open_pinned_map(
                &datapath::pin_dir(&lab.dut_if),
                TENANT_COUNTERS,
            )?),
            cfg.tenants.len() as u32,
        )?;
        let pre_used: u64 = counters
            .iter()
            .map(|c| c.bytes_of(shaper_common::OUTCOME_PRE))
            .sum();
        anyhow::Ok(Some((started, pre_used as f64)))
    }
    .await;
    let _ = quit_tx.send(());
    let agent_result = agent.await.context("agent task")?;
    let iface = lab.dut_if.clone();
    drop(lab);
    agent_result?;
    let Some((started, pre_used_bytes)) = outcome? else {
        bail!("the agent stopped before it attached");
    };
    let store = Store::open(&cfg.history.path, &iface)?;
    // The first cycle spans the start; the window is the day.
    let end = started + day as f64 + 1.0;
    let rows: Vec<Row> = store
        .since(None, started + 1.0)?
        .into_iter()
        .filter(|r| r.ts <= end)
        .collect();
    let mut offered = vec![Vec::new(); cfg.tenants.len()];
    let mut passed = vec![Vec::new(); cfg.tenants.len()];
    for r in &rows {
        if let Some(i) = cfg.tenants.iter().position(|t| t.name == r.tenant) {
            offered[i].push(r.offered);
            passed[i].push(r.passed);
        }
    }
    Ok(Run {
        result: score(cfg, name, 1.0, &offered, &passed),
        pre_used_bytes,
        rows,
    })
}

/// The two runs side by side: in-profile loss per tenant (by tier), loss at burst onsets,
/// utilization, what was lost while the link had room, pre-allocated bytes used.
fn table(cfg: &Config, runs: &[(PolicyMode, Run)]) -> String {
    let mut s = String::new();
    let pct = |num: f64, den: f64| {
        if den > 0.0 {
            format!("{:.2}%", 100.0 * num / den)
        } else {
            "-".to_string()
        }
    };
    let line = |s: &mut String, label: &str, cells: Vec<String>| {
        let _ = write!(s, "{label:<38}");
        for c in cells {
            let _ = write!(s, " {c:>14}");
        }
        s.push('\n');
    };
    s.push('\n');
    line(
        &mut s,
        "",
        runs.iter().map(|(m, _)| m.name().to_string()).collect(),
    );
    for (i, t) in cfg.tenants.iter().enumerate() {
        line(
            &mut s,
            &format!("in-profile loss, {} {}", tier_str(t.tier), t.name),
            runs.iter()
                .map(|(_, r)| {
                    r.result.tenants.get(i).map_or("-".into(), |x| {
                        pct(x.in_profile_dropped_bytes, x.in_profile_bytes)
                    })
                })
                .collect(),
        );
    }
    line(
        &mut s,
        "loss at burst onsets (within ceilings)",
        runs.iter()
            .map(|(_, r)| pct(r.result.onset_dropped_bytes, r.result.onset_bytes))
            .collect(),
    );
    line(
        &mut s,
        "link utilization",
        runs.iter()
            .map(|(_, r)| format!("{:.1}%", 100.0 * r.result.link_utilization))
            .collect(),
    );
    line(
        &mut s,
        "dropped while the link had room",
        runs.iter()
            .map(|(_, r)| format!("{:.1} MB", r.result.dropped_while_idle_bytes / 1e6))
            .collect(),
    );
    line(
        &mut s,
        "passed / offered",
        runs.iter()
            .map(|(_, r)| pct(r.result.passed_bytes, r.result.offered_bytes))
            .collect(),
    );
    line(
        &mut s,
        "paid by pre-allocated tokens",
        runs.iter()
            .map(|(_, r)| format!("{:.1} MB", r.pre_used_bytes / 1e6))
            .collect(),
    );
    s
}
