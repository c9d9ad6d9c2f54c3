//! Fail-static: after attach, nothing but a stop, `shaper detach` or the interface really
//! gone removes the datapath. A cycle that fails, a planner that panics, a history store that
//! cannot be written: each leaves XDP attached with the last rates enforced (measured with
//! traffic), and the failure visible in `/v1/health` and `/metrics`.
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use shaper::agent::{Fault, StateDir};
use shaper::config::Config;
use shaper::lab::traffic::{self, Flood};
use shaper::lab::{Lab, unique_name};
use shaper_tests::{Agent, root_test, xdp_attached};

const RATE: f64 = 100e6;

/// One 100 Mbit/s tenant; the API on a free loopback port; the history store in `history`.
fn config(history: &Path) -> Config {
    Config::parse(&format!(
        r#"{{"link":{{"capacity":"10gbit"}},
            "api":{{"listen":"127.0.0.1:0","socket":"{}"}},
            "history":{{"path":"{}","retention_days":7}},
            "tenants":[{{"name":"solo","tier":"bronze","prefixes":["10.10.1.0/24"],"rate":"100mbit","burst":"128kb"}}]}}"#,
        history.with_file_name("api.sock").display(),
        history.display()
    ))
    .expect("valid test config")
}

/// What the tenant received, bits/s, offered twice its rate for 3 s.
fn received(lab: &Lab) -> f64 {
    let to = SocketAddr::new(IpAddr::from([10, 10, 1, 1]), 9000);
    let flood = Flood {
        netns: lab.src.name.clone(),
        dst: to,
        rate_bits: Some(2 * RATE as u64),
        payload: 1400,
        duration: Duration::from_secs(3),
        cpu: None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    traffic::run_flows(&lab.dut.name, &[flood], &stop)
        .expect("traffic")
        .received_bps(to)
}

/// `GET path` from the agent's API on `iface`.
fn get(iface: &str, path: &str) -> String {
    let addr = StateDir::new(iface)
        .api_addr()
        .expect("the agent's API address");
    let (code, body) = shaper::api::request(addr, "GET", path, None).expect("API");
    assert_eq!(code, 200, "{body}");
    body
}

/// Runs the agent with `break_it` applied once it is attached (a fault injected from the
/// start, or something done to its surroundings), waits a few cycles, and checks the
/// datapath and the report of the failure of `stage`.
fn holds_the_last_rates(
    name: &str,
    fault: Option<Fault>,
    break_it: impl FnOnce(&Path),
    stage: &str,
) {
    let lab = Lab::new(&["10.10.1"], &[]).expect("lab");
    let dir = Scratch::new();
    let cfg = config(&dir.0.join("history.db"));
    let agent = Agent::start_with(&cfg, &lab.dut_if, &lab.dut.name, fault).expect("agent");
    break_it(&dir.0);
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        xdp_attached(&lab.dut.name, &lab.dut_if),
        "{name}: XDP detached"
    );
    let got = received(&lab);
    assert!(
        (got - RATE).abs() / RATE <= 0.05,
        "{name}: received {:.1} Mbit/s of a 100 Mbit/s rate",
        got / 1e6
    );
    let health: serde_json::Value =
        serde_json::from_str(&get(&lab.dut_if, "/v1/health")).expect("JSON");
    let errors = health["health"]["errors"][stage].as_u64().unwrap_or(0);
    assert!(errors >= 1, "{name}: no {stage} error in {health}");
    let metrics = get(&lab.dut_if, "/metrics");
    let line = format!("shaper_agent_errors_total{{stage=\"{stage}\"}} ");
    let counted: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(line.as_str()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(counted >= 1, "{name}: {line} missing or 0");
    assert!(
        metrics.lines().any(
            |l| l.starts_with("shaper_alerts_total{alert=\"agent_error\"} ") && !l.ends_with(" 0")
        ),
        "{name}: no agent_error alert"
    );
    agent
        .stop()
        .expect("the agent stops cleanly after its failures");
}

#[test]
fn a_failing_cycle_leaves_the_last_rates_enforced() {
    let Some(_root) = root_test("a_failing_cycle_leaves_the_last_rates_enforced") else {
        return;
    };
    holds_the_last_rates("cycle error", Some(Fault::CycleError), |_| {}, "cycle");
}

#[test]
fn a_planner_panic_leaves_the_last_rates_enforced() {
    let Some(_root) = root_test("a_planner_panic_leaves_the_last_rates_enforced") else {
        return;
    };
    holds_the_last_rates("planner panic", Some(Fault::PlanPanic), |_| {}, "cycle");
}

/// The history store's file system fills up mid-run (a small tmpfs, filled by hand).
#[test]
fn a_full_history_store_leaves_the_last_rates_enforced() {
    let Some(_root) = root_test("a_full_history_store_leaves_the_last_rates_enforced") else {
        return;
    };
    holds_the_last_rates(
        "history store full",
        None,
        |dir| {
            let mut f = std::fs::File::create(dir.join("filler")).expect("filler");
            let chunk = vec![0u8; 64 * 1024];
            while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
        },
        "record",
    );
}

/// A scratch directory on a 2 MB tmpfs of its own, unmounted and removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(unique_name("shaper-fs-"));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(&dir)
            .output()
            .expect("mount");
        assert!(out.status.success(), "mount tmpfs: {out:?}");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
