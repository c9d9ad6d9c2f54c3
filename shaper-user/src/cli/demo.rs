//! `shaper demo --quick`: the main job on an embedded default, in 20 seconds. Builds a lab
//! (two network namespaces joined by a veth pair), runs the shaper with the example config's three tenants on the
//! receiving veth, offers each tenant UDP at three times its rate, prints what each offered,
//! got and lost and which tokens paid (its own, borrowed up to its ceiling, the emergency
//! reserve), tears everything down (also on Ctrl-C), and draws a report of the agent's history
//! (see `report`).
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use aya::maps::Map;

use crate::cli::DemoArgs;
use shaper::agent::{self, Options};
use shaper::config::{Config, EXAMPLE};
use shaper::datapath::{self, AttachMode, TENANT_COUNTERS};
use shaper::lab::Lab;
use shaper::lab::traffic::{self, Flood};
use shaper::store::unix_now;
use shaper::units::human_bits;

/// Offered load as a multiple of each tenant's rate.
const OVERLOAD: u64 = 3;
const PAYLOAD: usize = 1400;

pub async fn execute(args: &DemoArgs) -> Result<()> {
    if !shaper::lab::is_root() {
        bail!(
            "the demo builds network namespaces and loads XDP: run it as root (sudo shaper demo)"
        );
    }
    let mut cfg = Config::parse(EXAMPLE)?;
    // The demo's history goes to a scratch store the report is drawn from, not the system's.
    let scratch = Scratch(std::env::temp_dir().join(format!("shaper-demo-{}", std::process::id())));
    cfg.history.path = scratch.0.join("history.db");
    let started = unix_now();
    println!(
        "building the lab: namespaces joined by a veth pair, tenants {}",
        names(&cfg)
    );
    let lab = Lab::new(&["10.10.1", "10.10.2", "10.10.3"], &["2001:db8:1:"])
        .context("building the lab")?;
    let options = Options {
        iface: lab.dut_if.clone(),
        config: "(embedded example)".into(),
        xdp_mode: AttachMode::Native,
        max_tenants: shaper_common::DEFAULT_MAX_TENANTS,
        netns: Some(lab.dut.name.clone()),
        clock: shaper::datapath::Clock::Precise,
        fault: None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (agent, ready_rx, quit_tx) = spawn_agent(options, cfg.clone());
    let ctrlc = stop_on_ctrl_c(stop.clone());
    let outcome = async {
        if ready_rx.await.is_err() {
            // The agent failed before attaching: its error is reported below.
            return Ok(None);
        }
        println!(
            "shaper attached (native XDP) to {} in {}; offering each tenant {}x its rate for {} s...",
            lab.dut_if, lab.dut.name, OVERLOAD, args.seconds
        );
        let floods = floods(&cfg, &lab, args.seconds);
        let dut_ns = lab.dut.name.clone();
        let stop2 = stop.clone();
        let flows = tokio::task::spawn_blocking(move || traffic::run_flows(&dut_ns, &floods, &stop2).map(|r| (r, floods)))
            .await
            .context("traffic thread")??;
        let counters = shaper::datapath::read_tenant_counters(
            &Map::PerCpuArray(datapath::open_pinned_map(&datapath::pin_dir(&lab.dut_if), TENANT_COUNTERS)?),
            cfg.tenants.len() as u32,
        )?;
        anyhow::Ok(Some((flows, counters)))
    }
    .await;
    let _ = quit_tx.send(());
    let agent_result = agent.await.context("agent task")?;
    ctrlc.abort();
    let lab_iface = lab.dut_if.clone();
    drop(lab);
    println!("lab torn down");
    agent_result?;
    if let Some(((flows, floods), counters)) = outcome? {
        print!("{}", report(&cfg, &flows, &floods, &counters));
        let w = write_report(&cfg, &lab_iface, started, &args.report)?;
        println!(
            "report: {} (offered, forecast with its interval, allocation and drops per tenant)",
            w.index.display()
        );
    }
    Ok(())
}

/// The agent on a task of its own: its handle, a channel that fires once it attached, and
/// the sender that stops it.
pub(super) fn spawn_agent(
    options: Options,
    cfg: Config,
) -> (
    tokio::task::JoinHandle<Result<(), agent::AgentError>>,
    tokio::sync::oneshot::Receiver<()>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (quit_tx, quit_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let ready = move || {
            let _ = ready_tx.send(());
        };
        agent::run(&options, &cfg, ready, async {
            let _ = quit_rx.await;
        })
        .await
    });
    (task, ready_rx, quit_tx)
}

/// Ctrl-C stops the traffic early; everything after it still runs, so the lab is torn down.
pub(super) fn stop_on_ctrl_c(stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\ninterrupted: stopping traffic and tearing the lab down");
            stop.store(true, Ordering::Relaxed);
        }
    })
}

/// Each tenant offered `OVERLOAD` times its rate for `secs`, from the lab's source side.
fn floods(cfg: &Config, lab: &Lab, secs: u64) -> Vec<Flood> {
    cfg.tenants
        .iter()
        .enumerate()
        .map(|(i, t)| Flood {
            netns: lab.src.name.clone(),
            dst: SocketAddr::new(IpAddr::from([10, 10, 1 + i as u8, 1]), 9000),
            rate_bits: Some(t.rate.bits_per_sec() * OVERLOAD),
            payload: PAYLOAD,
            duration: Duration::from_secs(secs),
            cpu: None,
        })
        .collect()
}

/// The demo's scratch directory, removed however the demo ends.
pub(super) struct Scratch(pub(super) std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Draws what the agent stored during the demo into `out`.
fn write_report(
    cfg: &Config,
    iface: &str,
    since: f64,
    out: &std::path::Path,
) -> Result<shaper::report::Written> {
    let store = shaper::store::Store::open(&cfg.history.path, iface)?;
    let rows = store.since(None, since)?;
    let title = format!("shaper demo on {iface}");
    Ok(shaper::report::write(out, &title, &rows)?)
}

fn names(cfg: &Config) -> String {
    cfg.tenants
        .iter()
        .map(|t| {
            format!(
                "{} ({} {})",
                t.name,
                shaper::config::tier_str(t.tier),
                t.rate
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn report(
    cfg: &Config,
    flows: &traffic::FlowsResult,
    floods: &[Flood],
    counters: &[shaper_common::TenantCounters],
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nper tenant, IP bits per second (received = measured by the receiving socket):"
    );
    let _ = writeln!(
        s,
        "{:<10} {:<8} {:>12} {:>12} {:>14} {:>14} {:>7} {:>9} {:>11} {:>11} {:>11} {:>11}",
        "tenant",
        "tier",
        "rate",
        "ceil",
        "offered",
        "received",
        "lost",
        "rcv/rate",
        "own pk",
        "borrowed pk",
        "emergency",
        "dropped pk"
    );
    for ((t, f), c) in cfg.tenants.iter().zip(floods).zip(counters) {
        let offered = flows.offered_bps(f.dst);
        let got = flows.received_bps(f.dst);
        let sent = flows.sent_bytes(f.dst).max(1) as f64;
        let lost = 1.0 - flows.received_bytes(f.dst) as f64 / sent;
        let _ = writeln!(
            s,
            "{:<10} {:<8} {:>12} {:>12} {:>14} {:>14} {:>6.1}% {:>8.1}% {:>11} {:>11} {:>11} {:>11}",
            t.name,
            shaper::config::tier_str(t.tier),
            human_bits(t.rate.bits_per_sec() as f64),
            t.ceil
                .map_or_else(|| "-".to_string(), |c| human_bits(c.bits_per_sec() as f64)),
            human_bits(offered),
            human_bits(got),
            lost * 100.0,
            got / t.rate.bits_per_sec() as f64 * 100.0,
            c.packets_of(shaper_common::OUTCOME_PRE)
                + c.packets_of(shaper_common::OUTCOME_GREEN)
                + c.packets_of(shaper_common::OUTCOME_MARKED),
            c.packets_of(shaper_common::OUTCOME_BORROWED),
            c.packets_of(shaper_common::OUTCOME_EMERGENCY),
            c.packets_of(shaper_common::OUTCOME_DROPPED),
        );
    }
    let _ = writeln!(
        s,
        "\nown: the tenant's token buckets; borrowed: idle link capacity, up to the ceiling, for \
         tiers that may borrow; emergency: the reserve only gold and platinum may spend"
    );
    s
}
