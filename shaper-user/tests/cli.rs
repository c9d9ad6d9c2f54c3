//! The `shaper` binary as an operator runs it: exit codes, one-line errors, nothing left
//! attached or pinned after a failure, and `run` + `stats` + SIGTERM on a lab interface.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shaper::datapath::{AttachMode, Datapath, pin_dir};
use shaper::lab::traffic::{Flood, Sink, start_flood};
use shaper::lab::{AgentProcess, Lab, root_test};

fn shaper() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shaper"))
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/tiers.json")
}

/// The example config written into `tmp` with the API on a free loopback port and its socket,
/// and the history store, inside `tmp`, then `edits` (text replacements) applied.
fn example_in(tmp: &Path, edits: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(example())
        .expect("example")
        .replace("127.0.0.1:9464", "127.0.0.1:0")
        .replace(
            "/run/shaper/shaper.sock",
            &tmp.join("api.sock").display().to_string(),
        )
        .replace(
            "/var/lib/shaper/history.db",
            &tmp.join("history.db").display().to_string(),
        );
    for (from, to) in edits {
        assert!(text.contains(from), "the example has no {from}");
        text = text.replace(from, to);
    }
    let config = tmp.join("tiers.json");
    std::fs::write(&config, text).expect("write config");
    config
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The error is one line, starts with "error:", and contains `what`.
fn assert_one_line_error(o: &Output, what: &str) {
    assert!(!o.status.success(), "expected failure, got {:?}", o.status);
    let e = stderr(o);
    let lines: Vec<&str> = e.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "one error line expected: {e}");
    assert!(lines[0].contains(what), "'{what}' not in: {e}");
}

fn lab_run(lab: &Lab) -> Command {
    let mut c = shaper();
    c.args(["run", "--iface", &lab.dut_if, "--netns", &lab.dut.name]);
    c
}

fn xdp_attached(lab: &Lab) -> bool {
    shaper::lab::xdp_attached(&lab.dut.name, &lab.dut_if)
}

fn assert_nothing_left(lab: &Lab) {
    assert!(!pin_dir(&lab.dut_if).exists(), "pins left behind");
    assert!(!xdp_attached(lab), "XDP left attached");
}

#[test]
fn bad_arguments_exit_nonzero_with_usage() {
    let o = shaper()
        .args(["run", "--config", "x.json"])
        .output()
        .expect("run shaper");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--iface"), "{}", stderr(&o));
    let o = shaper()
        .args([
            "run",
            "--iface",
            "x",
            "--config",
            "y",
            "--xdp-mode",
            "turbo",
        ])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("turbo"));
}

/// `shaper config check PATH`.
fn config_check(path: &Path) -> std::process::Output {
    shaper()
        .args(["config", "check"])
        .arg(path)
        .output()
        .expect("run")
}

/// A section that sets one field takes the README's defaults for the rest, and a mix may
/// name only some token types: each of these partial configs passes `shaper config check`,
/// and a mix whose named shares do not add up to 1 is still refused.
#[test]
fn partial_sections_take_the_defaults() {
    let dir = std::env::temp_dir().join(shaper::lab::unique_name("shaper-cli-"));
    std::fs::create_dir_all(&dir).expect("tmp");
    let tenant = r#"{"name":"a","tier":"gold","prefixes":["10.0.0.0/24"],"rate":"10mbit","burst":"64kb"MIX}"#;
    let cases = [
        ("forecast", r#""forecast":{"model":"holt"},"#, ""),
        ("policy", r#""policy":{"mode":"static"},"#, ""),
        ("mix", "", r#","mix":{"gold":1.0}"#),
        (
            "override",
            r#""policy":{"reactive_override":{"cpu_busy_ratio":0.9}},"#,
            "",
        ),
        ("pools", r#""pools":{"guaranteed":0.7},"#, ""),
    ];
    for (name, section, mix) in cases {
        let text = format!(
            r#"{{"link":{{"capacity":"1gbit"}},{section}"tenants":[{}]}}"#,
            tenant.replace("MIX", mix)
        );
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, &text).expect("write");
        let o = config_check(&path);
        assert!(o.status.success(), "{name}: {text}: {}", stderr(&o));
    }
    let path = dir.join("half-mix.json");
    let text = format!(
        r#"{{"link":{{"capacity":"1gbit"}},"tenants":[{}]}}"#,
        tenant.replace("MIX", r#","mix":{"gold":0.5}"#)
    );
    std::fs::write(&path, text).expect("write");
    assert_one_line_error(&config_check(&path), "mix");
    // `config example` prints a full annotated config that `config check` accepts.
    let o = shaper().args(["config", "example"]).output().expect("run");
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("// ") && text.contains("\"drop_precedence\": true"),
        "{text}"
    );
    let path = dir.join("example.json");
    std::fs::write(&path, text.as_bytes()).expect("write");
    let o = config_check(&path);
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_check_accepts_the_example_and_names_the_path_of_an_error() {
    let o = config_check(&example());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("acme") && out.contains("globex") && out.contains("initech"),
        "{out}"
    );

    let dir = std::env::temp_dir().join(shaper::lab::unique_name("shaper-cli-"));
    std::fs::create_dir_all(&dir).expect("tmp");
    let bad = dir.join("bad.json");
    let text = std::fs::read_to_string(example())
        .expect("example")
        .replace("\"50mbit\"", "\"50\"");
    std::fs::write(&bad, text).expect("write");
    assert_one_line_error(&config_check(&bad), "at tenants[2].rate");
    let o = shaper()
        .args(["config", "check", "/nonexistent/tiers.json"])
        .output()
        .expect("run");
    assert_one_line_error(&o, "cannot read config");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn unknown_interface() {
    let Some(_root) = root_test("unknown_interface") else {
        return;
    };
    let o = shaper()
        .args(["run", "--iface", "shpnosuch0", "--config"])
        .arg(example())
        .output()
        .expect("run");
    assert_one_line_error(&o, "interface 'shpnosuch0' not found");
    assert!(!pin_dir("shpnosuch0").exists());
}

/// Started through `ip netns exec`, the agent would pin into a private bpffs that dies with
/// it (and SIGKILL would unshape the link): refused in one line that names `--netns`, nothing
/// attached.
#[test]
fn ip_netns_exec_is_refused_naming_netns() {
    let Some(_root) = root_test("ip_netns_exec_is_refused_naming_netns") else {
        return;
    };
    let lab = Lab::new(&["10.10.1"], &[]).expect("lab");
    let exe = env!("CARGO_BIN_EXE_shaper");
    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.dut.name,
            exe,
            "run",
            "--iface",
            &lab.dut_if,
        ])
        .arg("--config")
        .arg(example())
        .output()
        .expect("run");
    assert_one_line_error(&o, "--netns");
    assert_nothing_left(&lab);
}

#[test]
fn not_root_is_told_to_use_sudo_and_nothing_is_attached() {
    let Some(_root) = root_test("not_root_is_told_to_use_sudo_and_nothing_is_attached") else {
        return;
    };
    let lab = Lab::new(&["10.10.1"], &[]).expect("lab");
    // The same command as nobody, without capabilities.
    let o = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_shaper"))
        .args([
            "run",
            "--iface",
            &lab.dut_if,
            "--netns",
            &lab.dut.name,
            "--config",
        ])
        .arg(example())
        .output()
        .expect("setpriv (util-linux)");
    assert_one_line_error(&o, "run as root");
    assert_nothing_left(&lab);
}

#[test]
fn xdp_already_attached_by_someone_else() {
    let Some(_root) = root_test("xdp_already_attached_by_someone_else") else {
        return;
    };
    let lab = Lab::new(&["10.10.1"], &[]).expect("lab");
    let mut other = Datapath::load(16).expect("load");
    other
        .attach(&lab.dut_if, AttachMode::Native, Some(&lab.dut.name))
        .expect("first attach");
    let o = lab_run(&lab)
        .arg("--config")
        .arg(example())
        .output()
        .expect("run");
    assert_one_line_error(&o, "already has an XDP program attached");
    assert!(
        !pin_dir(&lab.dut_if).exists(),
        "the failed run left its pins"
    );
    assert!(xdp_attached(&lab), "the other program must stay attached");
    drop(other);
    assert_nothing_left(&lab);
}

#[test]
fn more_tenants_than_the_maximum() {
    let Some(_root) = root_test("more_tenants_than_the_maximum") else {
        return;
    };
    let lab = Lab::new(&["10.10.1"], &[]).expect("lab");
    let o = lab_run(&lab)
        .args(["--max-tenants", "2", "--config"])
        .arg(example())
        .output()
        .expect("run");
    assert_one_line_error(&o, "--max-tenants");
    assert_nothing_left(&lab);
}

#[test]
fn invalid_config_changes_nothing() {
    let Some(_root) = root_test("invalid_config_changes_nothing") else {
        return;
    };
    let lab = Lab::new(&["10.10.1"], &[]).expect("lab");
    let o = lab_run(&lab)
        .args(["--config", "/nonexistent.json"])
        .output()
        .expect("run");
    assert_one_line_error(&o, "cannot read config");
    assert_nothing_left(&lab);
}

/// `shaper run` in the background, traffic, `shaper stats --json` from another process, then
/// SIGTERM: exit 0, detached, unpinned.
#[test]
fn run_stats_and_sigterm() {
    let Some(_root) = root_test("run_stats_and_sigterm") else {
        return;
    };
    let lab = Lab::new(&["10.10.1", "10.10.2", "10.10.3"], &[]).expect("lab");
    // The example without acme's ceiling and with no emergency pool, so acme's own buckets
    // are all it gets: UDP to port 9000 takes silver tokens (120 of its 200 Mbit/s) and falls
    // back to bronze (40).
    let tmp = std::env::temp_dir().join(shaper::lab::unique_name("shaper-stats-"));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let config = example_in(
        &tmp,
        &[
            (r#""ceil": "400mbit","#, ""),
            (r#""emergency": 0.05"#, r#""emergency": 0.0"#),
        ],
    );
    let child = lab_run(&lab)
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn shaper run");
    let mut child = AgentProcess::new(child, &lab.dut_if);
    let pins = pin_dir(&lab.dut_if);
    let start = Instant::now();
    while !(pins.join("TENANT_COUNTERS").exists() && xdp_attached(&lab)) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "shaper run did not attach"
        );
        assert!(
            child.child.try_wait().expect("wait").is_none(),
            "shaper run exited early"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Traffic into acme (10.10.1.1) at 400 Mbit/s, twice its 200 Mbit/s.
    let stop = Arc::new(AtomicBool::new(false));
    let to: SocketAddr = "10.10.1.1:9000".parse().expect("addr");
    let sink = Sink::bind(&lab.dut.name, to)
        .expect("sink")
        .start(Duration::from_secs(5), stop.clone());
    let sender = start_flood(
        Flood {
            netns: lab.src.name.clone(),
            dst: to,
            rate_bits: Some(400_000_000),
            payload: 1400,
            duration: Duration::from_secs(2),
            cpu: None,
        },
        stop.clone(),
    );
    std::thread::sleep(Duration::from_millis(700));
    let o = shaper()
        .args([
            "stats",
            "--iface",
            &lab.dut_if,
            "--json",
            "--window-ms",
            "500",
        ])
        .output()
        .expect("stats");
    let flows = shaper()
        .args([
            "stats",
            "--iface",
            &lab.dut_if,
            "--flows",
            "--tenant",
            "acme",
            "--json",
            "--window-ms",
            "300",
        ])
        .output()
        .expect("stats --flows");
    let _ = sender.join();
    stop.store(true, Ordering::Relaxed);
    let _ = sink.join();
    assert!(flows.status.success(), "{}", stderr(&flows));
    let f: serde_json::Value = serde_json::from_slice(&flows.stdout).expect("flows JSON");
    let top = &f["flows"][0];
    assert_eq!(
        (&top["tenant"], &top["dst"], &top["dport"], &top["proto"]),
        (
            &serde_json::json!("acme"),
            &serde_json::json!("10.10.1.1"),
            &serde_json::json!(9000),
            &serde_json::json!(17)
        ),
        "{f}"
    );
    // Offered at 400 Mbit/s, sampled 1 in 16: the estimate is well above zero.
    assert!(top["bps"].as_f64().unwrap_or(0.0) > 50e6, "{f}");
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stats JSON");
    assert!(
        v["tenants"][0]["active_flows"].as_u64().unwrap_or(0) >= 1,
        "{v}"
    );
    let acme = &v["tenants"][0];
    assert_eq!(acme["name"], "acme");
    assert!(
        acme["passed_packets"].as_u64().unwrap_or(0) > 1000,
        "{acme}"
    );
    assert!(
        acme["dropped_packets"].as_u64().unwrap_or(0) > 1000,
        "{acme}"
    );
    // Never above the rate (10% slack for the 500 ms window's edges); well above zero, though
    // how far depends on how much of the CPU the sender got next to the other tests.
    let passed_bps = acme["passed_bps"].as_f64().unwrap_or(0.0);
    assert!(
        passed_bps < 176e6,
        "current rate {passed_bps} above acme's silver and bronze tokens (160 Mbit/s)"
    );
    let silver = &acme["by_type"]["silver"];
    assert!(
        silver["green"]["packets"].as_u64().unwrap_or(0) > 1000,
        "{acme}"
    );
    assert!(
        silver["dropped"]["packets"].as_u64().unwrap_or(0) > 1000,
        "{acme}"
    );
    assert_eq!(silver["borrowed"]["packets"], 0, "{acme}");
    assert!(
        passed_bps > 50e6,
        "current rate {passed_bps}: acme's traffic is not counted"
    );
    assert_eq!(v["tenants"][1]["passed_packets"], 0);

    // SAFETY: kill with the pid of our own child.
    unsafe { libc::kill(child.child.id() as i32, libc::SIGTERM) };
    let status = child.wait_timeout(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "shaper run did not exit cleanly on SIGTERM: {status:?}"
    );
    assert_nothing_left(&lab);
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Starts `shaper run` on the lab with `config`, its stderr into `log`; returns once attached.
/// The API address the agent on `iface` wrote, once it has (and `also` exists, if given),
/// within `secs`; its log is shown if not.
fn api_up(iface: &str, log: &Path, secs: u64, also: Option<&Path>) -> SocketAddr {
    let dir = shaper::agent::StateDir::new(iface);
    let start = Instant::now();
    loop {
        if let Some(addr) = dir.api_addr().filter(|_| also.is_none_or(Path::exists)) {
            return addr;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "API not up: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_run(lab: &Lab, config: &Path, log: &Path) -> AgentProcess {
    start_run_with(lab, config, log, &[])
}

/// [`start_run`] with `extra` arguments for `shaper run`.
fn start_run_with(lab: &Lab, config: &Path, log: &Path, extra: &[&str]) -> AgentProcess {
    let mut child = AgentProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_shaper")),
        lab,
        config,
        log,
        extra,
    )
    .expect("spawn shaper run");
    let start = Instant::now();
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains("shaper attached")
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "shaper run did not attach: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        assert!(
            child.child.try_wait().expect("wait").is_none(),
            "shaper run exited: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn kill9(child: &mut AgentProcess) {
    child.child.kill().expect("SIGKILL");
    child.child.wait().expect("reap");
}

fn one_tenant_config(dir: &Path) -> PathBuf {
    let p = dir.join("solo.json");
    std::fs::write(
        &p,
        r#"{"link":{"capacity":"1gbit"},"tenants":[{"name":"solo","tier":"bronze","prefixes":["10.10.1.0/24"],"rate":"100mbit","burst":"128kb"}]}"#,
    )
    .expect("write config");
    p
}

fn pinned_tat(lab: &Lab) -> u64 {
    let map = aya::maps::Map::Array(
        shaper::datapath::open_pinned_map(&pin_dir(&lab.dut_if), shaper::datapath::TENANT_STATE)
            .expect("pinned state"),
    );
    let arr: aya::maps::Array<&aya::maps::MapData, shaper_common::TenantState> =
        aya::maps::Array::try_from(&map).expect("typed");
    arr.get(&0, 0).expect("tenant 0").tat[shaper_common::TYPE_SILVER]
}

fn pinned_passed(lab: &Lab) -> u64 {
    let map = aya::maps::Map::PerCpuArray(
        shaper::datapath::open_pinned_map(&pin_dir(&lab.dut_if), shaper::datapath::TENANT_COUNTERS)
            .expect("pinned counters"),
    );
    shaper::datapath::read_tenant_counters(&map, 1).expect("read")[0]
        .packets_of(shaper_common::OUTCOME_GREEN)
}

/// SIGKILL under traffic leaves the datapath enforcing the last rates (fail-static); a new
/// `shaper run` adopts the pinned program and maps without resetting tokens or counters; SIGTERM
/// then removes everything.
#[test]
fn killed_agent_fails_static_and_a_restart_adopts_without_reset() {
    let Some(_root) = root_test("killed_agent_fails_static_and_a_restart_adopts_without_reset")
    else {
        return;
    };
    let lab = Lab::new(&["10.10.1"], &[]).expect("lab");
    let tmp = std::env::temp_dir().join(shaper::lab::unique_name("shaper-crash-"));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let config = one_tenant_config(&tmp);
    let mut first = start_run(&lab, &config, &tmp.join("first.log"));
    kill9(&mut first);
    assert!(
        xdp_attached(&lab),
        "the program must stay attached after SIGKILL"
    );
    assert!(
        pin_dir(&lab.dut_if)
            .join(shaper::datapath::LINK_PIN)
            .exists(),
        "link pin"
    );

    // No agent: 400 Mbit/s offered, the last written 100 Mbit/s still enforced.
    let to: SocketAddr = "10.10.1.1:9000".parse().expect("addr");
    let flood = Flood {
        netns: lab.src.name.clone(),
        dst: to,
        rate_bits: Some(400_000_000),
        payload: 1400,
        duration: Duration::from_secs(3),
        cpu: None,
    };
    let r =
        shaper::lab::traffic::run_flows(&lab.dut.name, &[flood], &Arc::new(AtomicBool::new(false)))
            .expect("traffic");
    let got = r.received_bps(to);
    assert!(
        (got - 100e6).abs() / 100e6 <= 0.05,
        "without its agent the datapath passed {:.1} Mbit/s",
        got / 1e6
    );

    let (tat, passed) = (pinned_tat(&lab), pinned_passed(&lab));
    assert!(passed > 10_000, "traffic was counted: {passed}");
    let mut second = start_run(&lab, &config, &tmp.join("second.log"));
    let log = std::fs::read_to_string(tmp.join("second.log")).unwrap_or_default();
    assert!(log.contains("adopting"), "the restart must adopt: {log}");
    assert_eq!(pinned_tat(&lab), tat, "bucket state reset by the restart");
    assert_eq!(pinned_passed(&lab), passed, "counters reset by the restart");

    // SAFETY: kill with the pid of our own child.
    unsafe { libc::kill(second.child.id() as i32, libc::SIGTERM) };
    let status = second.wait_timeout(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert_nothing_left(&lab);
    let _ = std::fs::remove_dir_all(&tmp);
}

/// `shaper detach` removes what a killed agent left; it refuses while an agent runs.
#[test]
fn detach_removes_what_a_killed_agent_left() {
    let Some(_root) = root_test("detach_removes_what_a_killed_agent_left") else {
        return;
    };
    let lab = Lab::new(&["10.10.1"], &[]).expect("lab");
    let tmp = std::env::temp_dir().join(shaper::lab::unique_name("shaper-detach-"));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let config = one_tenant_config(&tmp);
    let mut agent = start_run(&lab, &config, &tmp.join("run.log"));
    let o = shaper()
        .args(["detach", "--iface", &lab.dut_if])
        .output()
        .expect("detach");
    assert_one_line_error(&o, "another shaper agent runs");
    assert!(xdp_attached(&lab));
    kill9(&mut agent);
    let o = shaper()
        .args(["detach", "--iface", &lab.dut_if])
        .output()
        .expect("detach");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_nothing_left(&lab);
    assert!(
        !shaper::agent::state_dir(&lab.dut_if).exists(),
        "state left"
    );
    let o = shaper()
        .args(["detach", "--iface", &lab.dut_if])
        .output()
        .expect("detach");
    assert_one_line_error(&o, "no shaper maps pinned");
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Everything the agent writes, read back from the pins: tenant configs (both slots of the
/// first 8 ids, then the slot words), hash prefixes, the global config.
fn agent_maps(
    lab: &Lab,
) -> (
    Vec<shaper_common::TenantConfig>,
    Vec<(shaper_common::PrefixKeyV4, u32)>,
    shaper_common::GlobalConfig,
) {
    use aya::maps::{HashMap, Map, MapData};
    let dir = pin_dir(&lab.dut_if);
    let open = |n| shaper::datapath::open_pinned_map(&dir, n).expect("pinned map");
    let tc = Map::Array(open(shaper::datapath::TENANT_CONFIG));
    let slots = Map::Array(open(shaper::datapath::TENANT_SLOT));
    let configs = (0..8)
        .map(|id| shaper::datapath::live_tenant(&tc, &slots, id).expect("read"))
        .collect();
    let h4 = Map::HashMap(open(shaper::datapath::TENANT_BY_HASH_V4));
    let h4: HashMap<&MapData, shaper_common::PrefixKeyV4, u32> =
        HashMap::try_from(&h4).expect("typed");
    let mut prefixes: Vec<_> = h4.iter().map(|r| r.expect("entry")).collect();
    prefixes.sort_by_key(|(k, _)| (k.addr, k.len));
    let g = Map::Array(open(shaper::datapath::GLOBAL_CONFIG));
    let slot = Map::Array(open(shaper::datapath::CONFIG_SLOT));
    let mut g = shaper::datapath::live_global(&g, &slot).expect("global");
    // Which buffer is live says nothing about the config in it.
    g.slot = 0;
    (configs, prefixes, g)
}

fn sighup_and_wait(child: &AgentProcess, log: &Path, marker: &str, count: usize) {
    // SAFETY: kill with the pid of our own child.
    unsafe { libc::kill(child.child.id() as i32, libc::SIGHUP) };
    let start = Instant::now();
    while std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches(marker)
        .count()
        < count
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no '{marker}' in: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// SIGHUP: every class of bad config leaves the maps byte-for-byte unchanged; a good one adds,
/// removes and changes tenants while untouched tenants keep their config and bucket.
#[test]
fn sighup_reload_is_all_or_nothing() {
    let Some(_root) = root_test("sighup_reload_is_all_or_nothing") else {
        return;
    };
    let lab = Lab::new(&["10.10.1"], &[]).expect("lab");
    let tmp = std::env::temp_dir().join(shaper::lab::unique_name("shaper-reload-"));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let config = tmp.join("tiers.json");
    let good = std::fs::read_to_string(example()).expect("example");
    std::fs::write(&config, &good).expect("write");
    let log = tmp.join("run.log");
    let agent = start_run(&lab, &config, &log);
    let before = agent_maps(&lab);
    assert_eq!(before.0.iter().filter(|c| c.flags != 0).count(), 3);
    let tat = pinned_tat(&lab);
    let bad = [
        "{".to_string(),
        good.replacen("\"ecn\": true", "\"ecn\": true, \"bogus\": 1", 1),
        good.replacen("\"10.10.2.0/24\"", "\"10.10.1.128/25\"", 1),
        good.replacen("\"200mbit\"", "\"2gbit\"", 1),
        good.replacen("\"globex\"", "\"acme\"", 1),
        good.replacen("\"128kb\"", "\"0kb\"", 1),
    ];
    for (i, text) in bad.iter().enumerate() {
        assert_ne!(text, &good, "variant {i} must differ");
        std::fs::write(&config, text).expect("write");
        sighup_and_wait(&agent, &log, "config reload rejected", i + 1);
        assert_eq!(agent_maps(&lab), before, "bad config {i} changed the maps");
    }
    // Good: globex leaves (its event goes to hooli), initech goes to 80 Mbit/s, hooli arrives.
    let next = good
        .replacen("\"50mbit\"", "\"80mbit\"", 1)
        .replace("\"globex\"", "\"hooli\"")
        .replacen("\"10.10.2.0/24\"", "\"10.10.9.0/24\"", 1);
    std::fs::write(&config, next).expect("write");
    sighup_and_wait(&agent, &log, "config reloaded", 1);
    let after = agent_maps(&lab);
    assert_eq!(after.0[0], before.0[0], "acme untouched");
    assert_eq!(pinned_tat(&lab), tat, "acme's bucket untouched");
    assert_eq!(after.0[1].flags, 0, "globex (id 1) deactivated");
    assert_eq!(after.0[2].rate_bytes, 10_000_000, "initech at 80 Mbit/s");
    assert_eq!(
        after.0[3].rate_bytes, 12_500_000,
        "hooli at id 3 with globex's old rate"
    );
    let nets: Vec<([u8; 4], u32)> = after.1.iter().map(|(k, v)| (k.addr, *v)).collect();
    assert_eq!(
        nets,
        [
            ([10, 10, 1, 0], 0),
            ([10, 10, 3, 0], 2),
            ([10, 10, 9, 0], 3)
        ]
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn version_names_the_commit_and_packaging_outputs_are_generated() {
    let o = shaper().arg("--version").output().expect("run");
    let v = String::from_utf8_lossy(&o.stdout);
    let hash = v
        .trim()
        .strip_prefix(&format!("shaper {} (", env!("CARGO_PKG_VERSION")))
        .and_then(|r| r.strip_suffix(')'));
    assert!(
        hash.is_some_and(
            |h| h == "unknown" || (h.len() == 12 && h.chars().all(|c| c.is_ascii_hexdigit()))
        ),
        "{v}"
    );
    let man = shaper().arg("man").output().expect("run");
    let man = String::from_utf8_lossy(&man.stdout);
    assert!(
        man.contains(".TH shaper 1") && man.contains("detach"),
        "{man}"
    );
    let bash = shaper()
        .args(["completions", "bash"])
        .output()
        .expect("run");
    assert!(
        String::from_utf8_lossy(&bash.stdout).contains("complete -F"),
        "bash completions"
    );
}

/// One HTTP/1.1 request over `stream`; returns (status, body).
fn http(
    mut stream: impl std::io::Read + std::io::Write,
    method: &str,
    path: &str,
) -> (u16, String) {
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: shaper\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut resp = String::new();
    stream.read_to_string(&mut resp).expect("read");
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The API over real sockets against a running agent: stats, health, config, metrics over TCP
/// and the Unix socket (mode 0600), and POST /v1/reload refusing a bad config with its reason.
#[test]
fn api_over_tcp_and_unix_socket() {
    use std::os::unix::fs::PermissionsExt as _;
    let Some(_root) = root_test("api_over_tcp_and_unix_socket") else {
        return;
    };
    let lab = Lab::new(&["10.10.1"], &[]).expect("lab");
    let tmp = std::env::temp_dir().join(shaper::lab::unique_name("shaper-api-"));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let socket = tmp.join("api.sock");
    let config = example_in(&tmp, &[]);
    let good = std::fs::read_to_string(&config).expect("config");
    let log = tmp.join("run.log");
    let agent = start_run(&lab, &config, &log);
    let addr = api_up(&lab.dut_if, &log, 5, Some(&socket));
    assert!(addr.ip().is_loopback());
    assert_eq!(
        std::fs::metadata(&socket)
            .expect("socket")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // The pins are the control surface too: the directory 0700, every pin 0600.
    let pins = shaper::datapath::pin_dir(&lab.dut_if);
    let mode = |p: &Path| std::fs::metadata(p).expect("pin").permissions().mode() & 0o777;
    assert_eq!(mode(&pins), 0o700);
    let mut n = 0;
    for e in std::fs::read_dir(&pins).expect("pins") {
        let p = e.expect("entry").path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
        n += 1;
    }
    assert!(n > 5, "{n} pins");
    std::thread::sleep(Duration::from_millis(2200)); // two cycles: rates exist
    let tcp = || std::net::TcpStream::connect(addr).expect("connect");
    let (code, body) = http(tcp(), "GET", "/v1/stats");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["api"], 1);
    let names: Vec<&str> = v["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["acme", "globex", "initech"]);
    let (code, body) = http(
        std::os::unix::net::UnixStream::connect(&socket).expect("unix"),
        "GET",
        "/v1/health",
    );
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert!(v["health"]["cycles"].as_u64().unwrap_or(0) >= 2, "{v}");
    let (code, body) = http(tcp(), "GET", "/v1/config");
    assert_eq!((code, body.contains("\"acme\"")), (200, true), "{body}");
    let (code, metrics) = http(tcp(), "GET", "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("# TYPE shaper_tenant_bytes_total counter"),
        "{metrics}"
    );
    // No traffic here: counters still at zero are left out (the label layout of one that
    // counts is the unit test's), while every tenant's gauges are there.
    assert!(!metrics.contains("outcome=\"green\"} 0\n"), "{metrics}");
    assert!(
        metrics.contains("shaper_tenant_rate_bits{tenant=\"acme\",tier=\"gold\"} "),
        "{metrics}"
    );
    assert!(
        metrics.contains("shaper_agent_cycle_seconds_count ")
            && metrics.contains("# TYPE shaper_tenant_overrides_total counter")
            && metrics.contains("shaper_alerts_total{alert=\"protected_violation\"} 0"),
        "{metrics}"
    );
    assert_eq!(
        http(tcp(), "GET", "/v2/stats").0,
        404,
        "unversioned paths do not exist"
    );

    let before = agent_maps(&lab);
    let unix = || std::os::unix::net::UnixStream::connect(&socket).expect("unix");
    std::fs::write(&config, good.replace("\"50mbit\"", "\"60mbit\"")).expect("write");
    let (code, body) = http(tcp(), "POST", "/v1/reload");
    assert_eq!(
        code, 403,
        "the TCP API is read-only without a token: {body}"
    );
    assert_eq!(
        agent_maps(&lab),
        before,
        "a refused reload changed the maps"
    );
    std::fs::write(&config, good.replace("\"200mbit\"", "\"5gbit\"")).expect("write");
    let (code, body) = http(unix(), "POST", "/v1/reload");
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("tenants[0].rate"),
        "the reason comes back: {body}"
    );
    assert_eq!(
        agent_maps(&lab),
        before,
        "a rejected reload changed the maps"
    );
    std::fs::write(&config, good.replace("\"50mbit\"", "\"60mbit\"")).expect("write");
    std::thread::sleep(shaper::api::RELOAD_EVERY);
    let (code, body) = http(unix(), "POST", "/v1/reload");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        agent_maps(&lab).0[2].rate_bytes,
        7_500_000,
        "initech at 60 Mbit/s"
    );
    let (_, metrics) = http(tcp(), "GET", "/metrics");
    assert!(
        metrics.contains("shaper_reloads_total{result=\"rejected\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("shaper_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(&tmp);
}

/// A tmux session killed on drop.
struct Tmux(String);

impl Tmux {
    fn start(cmd: &str) -> Tmux {
        let name = shaper::lab::unique_name("shptop");
        let ok = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &name,
                "-x",
                "150",
                "-y",
                "30",
                cmd,
            ])
            .status()
            .expect("tmux (scripts/setup.sh installs it)");
        assert!(ok.success(), "tmux new-session");
        Tmux(name)
    }
    fn screen(&self) -> String {
        let o = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .expect("capture-pane");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    fn wait_for(&self, what: &[&str]) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if what.iter().all(|w| s.contains(w)) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{what:?} not on screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["has-session", "-t", &self.0])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

/// `shaper top` in a real terminal: tenants and rates appear, `q` quits; with the agent killed
/// it falls back to the pinned maps.
#[test]
fn top_in_a_real_terminal() {
    let Some(_root) = root_test("top_in_a_real_terminal") else {
        return;
    };
    let lab = Lab::new(&["10.10.1"], &[]).expect("lab");
    let tmp = std::env::temp_dir().join(shaper::lab::unique_name("shaper-top-"));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let config = example_in(&tmp, &[]);
    let mut agent = start_run(&lab, &config, &tmp.join("run.log"));
    let top = format!(
        "{} top --iface {} --refresh-ms 300",
        env!("CARGO_BIN_EXE_shaper"),
        lab.dut_if
    );
    let t = Tmux::start(&top);
    let screen = t.wait_for(&["acme", "globex", "initech", "source: agent API", "bit/s"]);
    assert!(screen.contains("200.0 Mbit/s"), "acme's rate:\n{screen}");
    let _ = Command::new("tmux")
        .args(["send-keys", "-t", &t.0, "q"])
        .status();
    let start = Instant::now();
    while t.alive() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "q did not quit:\n{}",
            t.screen()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    kill9(&mut agent);
    let t = Tmux::start(&top);
    t.wait_for(&["acme", "pinned maps (agent down)"]);
    drop(t);
    let o = shaper()
        .args(["detach", "--iface", &lab.dut_if])
        .output()
        .expect("detach");
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&tmp);
}

/// The interface disappears under a running agent: it says so in one line, exits non-zero,
/// and leaves no pins behind.
#[test]
fn interface_disappearing_stops_the_agent_cleanly() {
    let Some(_root) = root_test("interface_disappearing_stops_the_agent_cleanly") else {
        return;
    };
    let lab = Lab::new(&["10.10.1"], &[]).expect("lab");
    let tmp = std::env::temp_dir().join(shaper::lab::unique_name("shaper-gone-"));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let config = one_tenant_config(&tmp);
    let log = tmp.join("run.log");
    let mut agent = start_run(&lab, &config, &log);
    shaper::lab::ip(&["-n", &lab.dut.name, "link", "del", &lab.dut_if]).expect("delete the veth");
    let status = agent.wait_timeout(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| !s.success()),
        "the agent must exit non-zero: {status:?}"
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{text}");
    assert!(errors[0].contains("disappeared"), "{text}");
    assert!(!pin_dir(&lab.dut_if).exists(), "pins left behind");
    let _ = std::fs::remove_dir_all(&tmp);
}

/// `shaper trace gen` then `shaper simulate --json` on the overbooked example: every policy
/// (and the oracle and HTB references) runs, predictive drops no more in-profile bytes than
/// reactive nor than static (+10%, +1 MB), a bad trace is one clear line.
#[test]
fn trace_gen_and_simulate() {
    let dir = std::env::temp_dir().join(shaper::lab::unique_name("shaper-sim-"));
    std::fs::create_dir_all(&dir).expect("tmp");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/overbooked.json");
    let trace = dir.join("batch.csv");
    let o = shaper()
        .args([
            "trace", "gen", "--kind", "batch", "--days", "1", "--seed", "5", "--config",
        ])
        .arg(&config)
        .arg("--out")
        .arg(&trace)
        .output()
        .expect("trace gen");
    assert!(o.status.success(), "{}", stderr(&o));
    let mut dropped = Vec::new();
    for policy in ["static", "reactive", "predictive", "oracle", "htb"] {
        let o = shaper()
            .args(["simulate", "--json", "--policy", policy, "--trace"])
            .arg(&trace)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("simulate");
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
        assert_eq!(v["policy"], policy);
        assert_eq!(v["cycles"], 1440);
        assert_eq!(v["tenants"].as_array().map_or(0, Vec::len), 8);
        dropped.push(v["in_profile_dropped_bytes"].as_f64().unwrap_or(f64::NAN));
    }
    assert!(
        dropped[2] <= dropped[1] && dropped[2] <= 1.1 * dropped[0] + 1e6,
        "predictive vs reactive and static: {dropped:?}"
    );
    std::fs::write(dir.join("bad.csv"), "time,tenant,offered_bytes\n0,p1,5\n").expect("write");
    let o = shaper()
        .args(["simulate", "--trace"])
        .arg(dir.join("bad.csv"))
        .arg("--config")
        .arg(&config)
        .output()
        .expect("simulate");
    assert_one_line_error(&o, "at least two times");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `shaper exchange` against a running agent: 10 Mbit/s of acme's gold becomes bronze in the
/// datapath at once (its buckets' rates read back from the pins); an exchange beyond
/// `policy.max_exchange_fraction` and one for an unknown tenant are refused in one line.
#[test]
fn exchange_moves_rate_between_token_types_within_the_limit() {
    let Some(_root) = root_test("exchange_moves_rate_between_token_types_within_the_limit") else {
        return;
    };
    let lab = Lab::new(&["10.10.1"], &[]).expect("lab");
    let tmp = std::env::temp_dir().join(shaper::lab::unique_name("shaper-xchg-"));
    std::fs::create_dir_all(&tmp).expect("tmp");
    // Static policy: only the exchange changes the buckets. The limit: 10% of 200 Mbit/s.
    let config = example_in(
        &tmp,
        &[
            (r#""mode": "predictive""#, r#""mode": "static""#),
            (
                r#""max_exchange_fraction": 0.5"#,
                r#""max_exchange_fraction": 0.1"#,
            ),
        ],
    );
    let log = tmp.join("run.log");
    let agent = start_run(&lab, &config, &log);
    api_up(&lab.dut_if, &log, 5, None);
    let exchange = |amount: &str, tenant: &str| {
        shaper()
            .args(["exchange", "--iface", &lab.dut_if, "--tenant", tenant])
            .args(["--from", "gold", "--to", "bronze", "--amount", amount])
            .output()
            .expect("exchange")
    };
    let o = exchange("10mbit", "acme");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "acme: gold 30.000, silver 120.000, bronze 50.000 Mbit/s"
    );
    let dir = pin_dir(&lab.dut_if);
    let open = |n| shaper::datapath::open_pinned_map(&dir, n).expect("pinned");
    let configs = aya::maps::Map::Array(open(shaper::datapath::TENANT_CONFIG));
    let slots = aya::maps::Map::Array(open(shaper::datapath::TENANT_SLOT));
    let mbit = |b: shaper_common::BucketParams| 8e9 * 65536.0 / b.cost_fp as f64 / 1e6;
    let exchanged = || {
        let live = shaper::datapath::live_tenant(&configs, &slots, 0).expect("acme");
        let rates = live.types.map(mbit);
        assert!(
            (rates[0] - 30.0).abs() < 0.01
                && (rates[1] - 120.0).abs() < 0.01
                && (rates[2] - 50.0).abs() < 0.01,
            "{rates:?}"
        );
    };
    exchanged();
    // 10 more would take 20 Mbit/s out of the configured mix; the limit is 20: refused at 11.
    assert_one_line_error(&exchange("11mbit", "acme"), "max_exchange_fraction");
    assert_one_line_error(&exchange("1mbit", "nobody"), "no tenant named 'nobody'");
    // A reload that moves acme to the end of the list, its rate and mix as they were: the
    // exchange stands (acme keeps id 0).
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).expect("read")).expect("json");
    let tenants = v["tenants"].as_array_mut().expect("tenants");
    let acme = tenants.remove(0);
    tenants.push(acme);
    std::fs::write(&config, v.to_string()).expect("write");
    sighup_and_wait(&agent, &log, "config reloaded", 1);
    exchanged();
    let _ = std::fs::remove_dir_all(&tmp);
}

/// `shaper explain` against a running agent: the tenant's configured rate and ceiling, policy,
/// forecast and accuracy, the allocator's decision in words, what paid its packets; `--json`
/// gives the agent's answer; an unknown tenant is one clear line.
#[test]
fn explain_says_why_a_tenant_has_its_allocation() {
    let Some(_root) = root_test("explain_says_why_a_tenant_has_its_allocation") else {
        return;
    };
    let lab = Lab::new(&["10.10.1"], &[]).expect("lab");
    let tmp = std::env::temp_dir().join(shaper::lab::unique_name("shaper-explain-"));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let config = example_in(&tmp, &[]);
    let log = tmp.join("run.log");
    let _agent = start_run(&lab, &config, &log);
    api_up(&lab.dut_if, &log, 5, None);
    let explain = |tenant: &str, json: bool| {
        let mut c = shaper();
        c.args(["explain", "--iface", &lab.dut_if, "--tenant", tenant]);
        if json {
            c.arg("--json");
        }
        c.output().expect("explain")
    };
    // Once a cycle has planned, the decision is there.
    let start = Instant::now();
    let text = loop {
        let o = explain("acme", false);
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        if o.status.success() && text.contains("why:") {
            break text;
        }
        assert!(
            o.status.success() || stderr(&o).contains("first cycle"),
            "{}",
            stderr(&o)
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no decision: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for want in [
        "acme (gold: priority 2",
        "configured: rate 200.0 Mbit/s",
        "policy: predictive",
        "forecast for the next cycle:",
        "accuracy:",
        "allocation: fill",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    eprintln!("{text}");
    assert!(
        [
            "held at its base rate",
            "raised",
            "seasonal naive",
            "reactive override"
        ]
        .iter()
        .any(|w| text.contains(w)),
        "{text}"
    );
    let o = explain("acme", true);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["tenant"]["name"], "acme");
    assert!(
        v["tenant"]["allocation"]["decision"]["kind"].is_string(),
        "{v}"
    );
    assert_eq!(v["config"]["name"], "acme");
    assert_one_line_error(&explain("nobody", false), "no tenant named 'nobody'");
    let _ = std::fs::remove_dir_all(&tmp);
}

/// `--log-format json`: every line the agent logs is one JSON object with its level and
/// message (what journald and log shippers take).
#[test]
fn json_logs_are_one_object_per_line() {
    let Some(_root) = root_test("json_logs_are_one_object_per_line") else {
        return;
    };
    let lab = Lab::new(&["10.10.1"], &[]).expect("lab");
    let tmp = std::env::temp_dir().join(shaper::lab::unique_name("shaper-jsonlog-"));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let config = example_in(&tmp, &[]);
    let log = tmp.join("run.log");
    let mut agent = start_run_with(&lab, &config, &log, &["--log-format", "json"]);
    api_up(&lab.dut_if, &log, 5, None);
    // SAFETY: kill with the pid of our own child.
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGTERM) };
    assert!(agent.wait_timeout(Duration::from_secs(10)).is_some());
    let text = std::fs::read_to_string(&log).expect("log");
    let mut messages = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string(), "{line}");
        messages.push(v["message"].as_str().unwrap_or("").to_string());
    }
    assert!(
        messages.iter().any(|m| m.contains("shaper attached")),
        "{messages:?}"
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

/// History: every cycle lands in the store; SIGKILL loses nothing already written; the next
/// `shaper run` warm-starts its forecasters from it; `shaper history --csv` exports it.
#[test]
fn history_survives_a_kill_and_warm_starts_the_next_run() {
    let Some(_root) = root_test("history_survives_a_kill_and_warm_starts_the_next_run") else {
        return;
    };
    let lab = Lab::new(&["10.10.1", "10.10.2", "10.10.3"], &[]).expect("lab");
    let tmp = std::env::temp_dir().join(shaper::lab::unique_name("shaper-hist-"));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let db = tmp.join("history.db");
    let config = example_in(&tmp, &[(r#""interval_ms": 1000"#, r#""interval_ms": 200"#)]);
    let mut first = start_run(&lab, &config, &tmp.join("first.log"));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = start_flood(
        Flood {
            netns: lab.src.name.clone(),
            dst: "10.10.2.1:9000".parse().expect("addr"),
            rate_bits: Some(50_000_000),
            payload: 1400,
            duration: Duration::from_millis(1500),
            cpu: None,
        },
        stop.clone(),
    );
    let _ = sender.join();
    kill9(&mut first);
    let store = shaper::store::Store::open(&db, &lab.dut_if).expect("store");
    let rows = store.since(Some("globex"), 0.0).expect("rows");
    assert!(rows.len() >= 5, "{} rows", rows.len());
    assert!(
        rows.iter().any(|r| r.offered * 8.0 > 30e6),
        "the flood is in the history: {rows:?}"
    );
    let log = tmp.join("second.log");
    let _second = start_run(&lab, &config, &log);
    let start = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("forecasters warm-started from history")
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no warm start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    let o = shaper()
        .args(["history", "--iface", &lab.dut_if, "--tenant", "globex"])
        .args(["--since", "1h", "--csv", "--db"])
        .arg(&db)
        .output()
        .expect("history");
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = String::from_utf8_lossy(&o.stdout);
    assert!(csv.starts_with("time,tenant,offered_bps"), "{csv}");
    assert!(csv.lines().count() > rows.len(), "{csv}");
    // The report draws what the killed and the running agent stored.
    let out = tmp.join("report");
    let o = shaper()
        .args(["report", "--iface", &lab.dut_if, "--since", "1h", "--db"])
        .arg(&db)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("report");
    assert!(o.status.success(), "{}", stderr(&o));
    let index = std::fs::read_to_string(out.join("index.html")).expect("index.html");
    for t in ["acme", "globex", "initech"] {
        assert!(index.contains(&format!(">{t}</a>")), "{t} missing: {index}");
    }
    let chart = std::fs::read_to_string(out.join("tenant-1-globex.svg")).expect("globex chart");
    assert!(chart.contains("<polyline") && chart.contains("forecast interval"));
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn report_writes_charts_and_refuses_an_empty_range() {
    let tmp = std::env::temp_dir().join(shaper::lab::unique_name("shaper-report-"));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let db = tmp.join("history.db");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let mut store = shaper::store::Store::open(&db, "veth9").expect("store");
    let rows: Vec<shaper::store::Row> = (0..30)
        .map(|i| shaper::store::Row {
            ts: now - 7200.0 + f64::from(i),
            tenant: "acme".into(),
            offered: 1e6,
            passed: 9e5,
            dropped: 1e5,
            forecast: Some((1e6, 8e5, 1.2e6)),
            fill: Some(9e5),
            pre: Some(0.0),
        })
        .collect();
    store.append(&rows).expect("append");
    drop(store);
    let report = |since: &str, out: &Path| {
        shaper()
            .args(["report", "--iface", "veth9", "--since", since, "--db"])
            .arg(&db)
            .arg("--out")
            .arg(out)
            .output()
            .expect("report")
    };
    // The rows are two hours old: the last hour has nothing, and nothing is written.
    let empty = tmp.join("empty");
    let o = report("1h", &empty);
    assert_one_line_error(&o, "widen --since");
    assert!(!empty.exists());
    let out = tmp.join("out");
    let o = report("3h", &out);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("30 rows"));
    assert!(out.join("index.html").exists() && out.join("tenant-0-acme.svg").exists());
    assert!(out.join("overview.svg").exists());
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn a_world_writable_config_is_refused_in_one_line() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = std::env::temp_dir().join(shaper::lab::unique_name("shaper-ww-"));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let config = example_in(&tmp, &[]);
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o646)).expect("chmod");
    let o = shaper()
        .args(["config", "check"])
        .arg(&config)
        .output()
        .expect("config check");
    assert_one_line_error(&o, "world-writable");
    // `shaper run` refuses it before touching the interface.
    let o = shaper()
        .args(["run", "--iface", "shaper-none0", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert_one_line_error(&o, "world-writable");
    let _ = std::fs::remove_dir_all(&tmp);
}

/// A local user holding 2,000 idle connections to the API of an agent limited to 1,024 open
/// files: the connection cap and the header-read timeout keep the agent's descriptors free,
/// so its cycles go on, XDP stays attached, and the Unix socket answers meanwhile.
#[test]
fn idle_api_connections_do_not_stop_shaping() {
    let Some(_root) = root_test("idle_api_connections_do_not_stop_shaping") else {
        return;
    };
    let lab = Lab::new(&["10.10.1"], &[]).expect("lab");
    let tmp = std::env::temp_dir().join(shaper::lab::unique_name("shaper-fds-"));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let config = example_in(&tmp, &[]);
    let log = tmp.join("run.log");
    let err = std::fs::File::create(&log).expect("log");
    let child = Command::new("prlimit")
        .args(["--nofile=1024:1024", "--"])
        .arg(env!("CARGO_BIN_EXE_shaper"))
        .args(["run", "--iface", &lab.dut_if, "--netns", &lab.dut.name])
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("spawn");
    let mut agent = AgentProcess::new(child, &lab.dut_if);
    let port = api_up(&lab.dut_if, &log, 10, None).port();
    let script = format!(
        "ulimit -n 4096; n=0; for i in $(seq 2000); do exec {{fd}}<>/dev/tcp/127.0.0.1/{port} || break; n=$((n+1)); done; echo $n; sleep 8"
    );
    let flood = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "timeout",
            "20",
            "bash",
            "-c",
        ])
        .arg(&script)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("setpriv");
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        agent.child.try_wait().expect("wait").is_none(),
        "the agent exited under idle connections: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(xdp_attached(&lab), "XDP detached under idle connections");
    let (code, body) = http(
        std::os::unix::net::UnixStream::connect(tmp.join("api.sock")).expect("unix"),
        "GET",
        "/v1/health",
    );
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert!(v["health"]["cycles"].as_u64().unwrap_or(0) >= 3, "{v}");
    let out = flood.wait_with_output().expect("flood");
    let opened: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(
        opened >= 1000,
        "the client opened only {opened} connections"
    );
    assert!(
        agent.child.try_wait().expect("wait").is_none(),
        "the agent exited after the idle connections: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(xdp_attached(&lab));
    drop(agent);
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Rates change only through the operator: over TCP an unprivileged user's reload and
/// exchange are refused (403) and the maps stay byte for byte as they were; a request naming
/// another host (a page rebinding its name to 127.0.0.1) is refused too; the operator's
/// `shaper exchange` goes through the Unix socket.
#[test]
fn only_the_operator_changes_rates() {
    let Some(_root) = root_test("only_the_operator_changes_rates") else {
        return;
    };
    let lab = Lab::new(&["10.10.1"], &[]).expect("lab");
    let tmp = std::env::temp_dir().join(shaper::lab::unique_name("shaper-auth-"));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let config = example_in(&tmp, &[]);
    let log = tmp.join("run.log");
    let agent = start_run(&lab, &config, &log);
    let port = api_up(&lab.dut_if, &log, 5, None).port();
    let before = agent_maps(&lab);
    let as_nobody = |request: &str| -> String {
        let script =
            format!("exec 3<>/dev/tcp/127.0.0.1/{port}; printf '{request}' >&3; head -c 200 <&3");
        let out = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "timeout",
                "10",
                "bash",
                "-c",
            ])
            .arg(&script)
            .output()
            .expect("setpriv");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let reload = as_nobody(
        "POST /v1/reload HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nContent-Length: 0\\r\\nConnection: close\\r\\n\\r\\n",
    );
    assert!(reload.starts_with("HTTP/1.1 403"), "{reload}");
    let body = r#"{"tenant":"acme","from":"gold","to":"bronze","amount":"10mbit"}"#;
    let exchange = as_nobody(&format!(
        "POST /v1/exchange HTTP/1.1\\r\\nHost: localhost\\r\\nContent-Type: application/json\\r\\nContent-Length: {}\\r\\nConnection: close\\r\\n\\r\\n{body}",
        body.len()
    ));
    assert!(exchange.starts_with("HTTP/1.1 403"), "{exchange}");
    let rebound = as_nobody(
        "GET /v1/stats HTTP/1.1\\r\\nHost: attacker.example\\r\\nConnection: close\\r\\n\\r\\n",
    );
    assert!(rebound.starts_with("HTTP/1.1 403"), "{rebound}");
    assert_eq!(agent_maps(&lab), before, "a refused call changed the maps");
    // The operator's way: the CLI over the Unix socket.
    let o = shaper()
        .args(["exchange", "--iface", &lab.dut_if, "--tenant", "acme"])
        .args(["--from", "gold", "--to", "bronze", "--amount", "10mbit"])
        .output()
        .expect("exchange");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_ne!(
        agent_maps(&lab),
        before,
        "the operator's exchange was written"
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(&tmp);
}

/// A name that cannot be an interface's never reaches a path (pins, state): refused in one
/// line before anything is created.
#[test]
fn bad_interface_names_are_refused_before_any_path() {
    for name in ["", "..", "a/b", "../../etc"] {
        let o = shaper()
            .args(["run", "--iface", name, "--config"])
            .arg(example())
            .output()
            .expect("run");
        assert_one_line_error(&o, "not an interface name");
        let o = shaper()
            .args(["detach", "--iface", name])
            .output()
            .expect("detach");
        assert_one_line_error(&o, "not an interface name");
    }
}

/// Checked before anything is written, each refused with one line that says what to do: a
/// burst share below a jumbo MTU (no full-size packet could ever pass it), generic mode with
/// bursts below GRO's 64 kB, and an interface without native XDP (no silent fall back to
/// generic mode, whose post-GRO packets small buckets drop whole).
#[test]
fn jumbo_mtu_and_generic_mode_are_checked_before_attaching() {
    let Some(_root) = root_test("jumbo_mtu_and_generic_mode_are_checked_before_attaching") else {
        return;
    };
    let lab = Lab::new(&["10.10.1"], &[]).expect("lab");
    let tmp = std::env::temp_dir().join(shaper::lab::unique_name("shaper-mtu-"));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let small = example_in(&tmp, &[("\"burst\": \"64kb\"", "\"burst\": \"4kb\"")]);
    shaper::lab::ip(&[
        "-n",
        &lab.dut.name,
        "link",
        "set",
        &lab.dut_if,
        "mtu",
        "9000",
    ])
    .expect("mtu");
    let o = lab_run(&lab)
        .arg("--config")
        .arg(&small)
        .output()
        .expect("run");
    assert_one_line_error(&o, "hands XDP (9000 bytes");
    assert_nothing_left(&lab);
    // A running agent refuses a reload to such a burst the same way, and keeps its config.
    let good = example_in(&tmp, &[]);
    let log = tmp.join("run.log");
    let agent = start_run(&lab, &good, &log);
    example_in(&tmp, &[("\"burst\": \"64kb\"", "\"burst\": \"4kb\"")]);
    sighup_and_wait(&agent, &log, "config reload rejected", 1);
    assert!(
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("hands XDP (9000 bytes"),
        "the reload was not refused for its burst"
    );
    let mut agent = agent;
    // SAFETY: kill with the pid of our own child.
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGTERM) };
    let status = agent.wait_timeout(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert_nothing_left(&lab);
    let o = lab_run(&lab)
        .args(["--xdp-mode", "skb", "--config"])
        .arg(example_in(&tmp, &[]))
        .output()
        .expect("run");
    assert_one_line_error(&o, "hands XDP (65535 bytes");
    assert_nothing_left(&lab);
    // An IFB device has no native XDP: refused, naming the flag that accepts generic mode.
    shaper::lab::ip(&["-n", &lab.dut.name, "link", "add", "shpifb0", "type", "ifb"]).expect("ifb");
    let o = shaper()
        .args([
            "run",
            "--iface",
            "shpifb0",
            "--netns",
            &lab.dut.name,
            "--config",
        ])
        .arg(example_in(&tmp, &[]))
        .output()
        .expect("run");
    assert_one_line_error(&o, "--xdp-mode skb");
    assert!(!shaper::lab::xdp_attached(&lab.dut.name, "shpifb0"));
    assert!(!pin_dir("shpifb0").exists(), "pins left behind");
    assert!(
        !shaper::agent::state_dir("shpifb0").exists(),
        "a refused fresh start left its state directory"
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Adoption takes over only this interface's pins in this namespace: an interface of the same
/// name in another namespace, and an interface that took the name of one a killed agent
/// shaped, are each refused with one line, and the killed agent's datapath stays as it was.
#[test]
fn adoption_of_another_namespace_or_interface_is_refused() {
    let Some(_root) = root_test("adoption_of_another_namespace_or_interface_is_refused") else {
        return;
    };
    let lab = Lab::new(&["10.10.1"], &[]).expect("lab");
    let other = Lab::new(&["10.10.2"], &[]).expect("lab");
    let tmp = std::env::temp_dir().join(shaper::lab::unique_name("shaper-adopt-"));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let config = one_tenant_config(&tmp);
    let mut first = start_run(&lab, &config, &tmp.join("first.log"));
    kill9(&mut first);
    assert!(xdp_attached(&lab));
    let ip = |ns: &str, args: &[&str]| {
        let mut a = vec!["-n", ns];
        a.extend_from_slice(args);
        shaper::lab::ip(&a).expect("ip");
    };
    // The other lab's interface renamed to the killed agent's, in its own namespace.
    ip(&other.dut.name, &["link", "set", &other.dut_if, "down"]);
    ip(
        &other.dut.name,
        &["link", "set", &other.dut_if, "name", &lab.dut_if],
    );
    ip(&other.dut.name, &["link", "set", &lab.dut_if, "up"]);
    let o = shaper()
        .args([
            "run",
            "--iface",
            &lab.dut_if,
            "--netns",
            &other.dut.name,
            "--config",
        ])
        .arg(&config)
        .output()
        .expect("run");
    assert_one_line_error(&o, "another network namespace");
    assert!(
        xdp_attached(&lab),
        "the killed agent's datapath was touched"
    );
    assert!(!shaper::lab::xdp_attached(&other.dut.name, &lab.dut_if));
    // In the killed agent's namespace, its interface renamed and a new one under its name.
    let moved = shaper::lab::unique_name("shpmv");
    ip(&lab.dut.name, &["link", "set", &lab.dut_if, "down"]);
    ip(&lab.dut.name, &["link", "set", &lab.dut_if, "name", &moved]);
    ip(&lab.dut.name, &["link", "set", &moved, "up"]);
    ip(&lab.dut.name, &["link", "add", &lab.dut_if, "type", "ifb"]);
    ip(&lab.dut.name, &["link", "set", &lab.dut_if, "up"]);
    let o = lab_run(&lab)
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run");
    assert_one_line_error(&o, "attached to another interface");
    assert!(
        shaper::lab::xdp_attached(&lab.dut.name, &moved),
        "the killed agent's datapath was touched"
    );
    assert!(
        pin_dir(&lab.dut_if)
            .join(shaper::datapath::LINK_PIN)
            .exists()
    );
    let o = shaper()
        .args(["detach", "--iface", &lab.dut_if])
        .output()
        .expect("detach");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!shaper::lab::xdp_attached(&lab.dut.name, &moved));
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Pins of another layout (an older shaper's 88-byte bucket state) are refused with one line
/// naming `shaper detach`, and left where they are.
#[test]
fn pins_of_another_layout_are_refused_and_kept() {
    let Some(_root) = root_test("pins_of_another_layout_are_refused_and_kept") else {
        return;
    };
    let lab = Lab::new(&["10.10.1"], &[]).expect("lab");
    let tmp = std::env::temp_dir().join(shaper::lab::unique_name("shaper-layout-"));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let dir = pin_dir(&lab.dut_if);
    std::fs::create_dir_all(&dir).expect("pin dir");
    let pin = dir.join(shaper::datapath::TENANT_STATE);
    let pin_s = pin.display().to_string();
    let made = shaper::lab::run(
        "bpftool",
        &[
            "map",
            "create",
            &pin_s,
            "type",
            "array",
            "key",
            "4",
            "value",
            "88",
            "entries",
            "65536",
            "name",
            "TENANT_STATE",
        ],
    );
    assert!(made.is_ok_and(|o| o.status.success()), "bpftool map create");
    let o = lab_run(&lab)
        .arg("--config")
        .arg(one_tenant_config(&tmp))
        .output()
        .expect("run");
    assert_one_line_error(&o, "belong to a different shaper version");
    assert!(pin.exists(), "the foreign pin was deleted");
    assert!(!xdp_attached(&lab));
    let _ = std::fs::remove_file(&pin);
    let _ = std::fs::remove_dir(&dir);
    let _ = std::fs::remove_dir_all(shaper::agent::state_dir(&lab.dut_if));
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Adopting pins whose tenant table is gone: nobody can say whose each id was, so every
/// tenant starts afresh (zero counters, full buckets) instead of inheriting another's.
#[test]
fn adoption_without_the_tenant_table_starts_afresh() {
    let Some(_root) = root_test("adoption_without_the_tenant_table_starts_afresh") else {
        return;
    };
    let lab = Lab::new(&["10.10.1"], &[]).expect("lab");
    let tmp = std::env::temp_dir().join(shaper::lab::unique_name("shaper-notable-"));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let config = one_tenant_config(&tmp);
    let mut first = start_run(&lab, &config, &tmp.join("first.log"));
    let to: SocketAddr = "10.10.1.1:9000".parse().expect("addr");
    let flood = Flood {
        netns: lab.src.name.clone(),
        dst: to,
        rate_bits: Some(50_000_000),
        payload: 1400,
        duration: Duration::from_secs(1),
        cpu: None,
    };
    shaper::lab::traffic::run_flows(&lab.dut.name, &[flood], &Arc::new(AtomicBool::new(false)))
        .expect("traffic");
    kill9(&mut first);
    assert!(pinned_passed(&lab) > 1000, "traffic was counted");
    std::fs::remove_file(shaper::agent::state_dir(&lab.dut_if).join("tenants.json"))
        .expect("remove the table");
    let mut second = start_run(&lab, &config, &tmp.join("second.log"));
    let log = std::fs::read_to_string(tmp.join("second.log")).unwrap_or_default();
    assert!(log.contains("start afresh"), "{log}");
    assert_eq!(pinned_passed(&lab), 0, "a tenant inherited counters");
    // SAFETY: kill with the pid of our own child.
    unsafe { libc::kill(second.child.id() as i32, libc::SIGTERM) };
    let status = second.wait_timeout(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert_nothing_left(&lab);
    let _ = std::fs::remove_dir_all(&tmp);
}

/// The headless browser the dashboard test drives (Debian's `chromium-headless-shell`), if
/// installed.
fn headless_browser() -> Option<PathBuf> {
    ["chromium-headless-shell", "chromium", "chromium-browser"]
        .iter()
        .flat_map(|b| {
            std::env::var_os("PATH")
                .into_iter()
                .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .map(move |d| d.join(b))
        })
        .find(|p| p.is_file())
}

/// The page at `url` as the browser's DOM after its scripts ran for a few seconds.
fn rendered_dom(browser: &Path, url: &str, profile: &Path) -> String {
    let o = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=4000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .expect("run the browser");
    assert!(o.status.success(), "browser failed: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The cells of tenant `name`'s row in a dumped dashboard.
fn dashboard_row(dom: &str, name: &str) -> Vec<String> {
    let start = dom
        .find(&format!("data-tenant=\"{name}\""))
        .unwrap_or_else(|| panic!("no row for {name} in:\n{dom}"));
    let row = &dom[start..];
    let row = &row[..row.find("</tr>").unwrap_or(row.len())];
    row.split("<td")
        .skip(1)
        .map(|c| {
            let c = &c[c.find('>').map_or(0, |i| i + 1)..];
            c[..c.find("</td>").unwrap_or(c.len())].to_string()
        })
        .collect()
}

/// The web dashboard in a real browser against a running agent with traffic: every tenant
/// has a row, and the offered rate of the tenant under traffic changes between two captures
/// (traffic on, then off).
#[test]
fn the_dashboard_shows_every_tenant_live_in_a_browser() {
    let Some(_root) = root_test("the_dashboard_shows_every_tenant_live_in_a_browser") else {
        return;
    };
    let Some(browser) = headless_browser() else {
        eprintln!("skipped: no headless Chromium (apt install chromium-headless-shell)");
        return;
    };
    let lab = Lab::new(&["10.10.1", "10.10.2", "10.10.3"], &[]).expect("lab");
    let tmp = std::env::temp_dir().join(shaper::lab::unique_name("shaper-web-"));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let config = example_in(&tmp, &[]);
    let log = tmp.join("run.log");
    let _agent = start_run(&lab, &config, &log);
    let addr = api_up(&lab.dut_if, &log, 5, None);
    let url = format!("http://{addr}/");

    let stop = Arc::new(AtomicBool::new(false));
    let sender = start_flood(
        Flood {
            netns: lab.src.name.clone(),
            dst: "10.10.2.1:9000".parse().expect("addr"),
            rate_bits: Some(40_000_000),
            payload: 1400,
            duration: Duration::from_secs(8),
            cpu: None,
        },
        stop.clone(),
    );
    std::thread::sleep(Duration::from_secs(3));
    let during = rendered_dom(&browser, &url, &tmp.join("profile"));
    let _ = sender.join();
    std::thread::sleep(Duration::from_secs(3));
    let after = rendered_dom(&browser, &url, &tmp.join("profile"));

    for name in ["acme", "globex", "initech"] {
        assert_eq!(dashboard_row(&during, name)[0], name, "{name}'s row");
    }
    // Columns: tenant, tier, rate, ceiling, allocated, pre-allocated, forecast, offered, ...
    let (busy, idle) = (
        dashboard_row(&during, "globex")[7].clone(),
        dashboard_row(&after, "globex")[7].clone(),
    );
    assert!(
        busy.contains("Mbit/s"),
        "globex offered {busy} under 40 Mbit/s"
    );
    assert_ne!(busy, idle, "the offered rate did not change");
    assert!(after.contains("interface "), "the header shows the agent");
    let _ = std::fs::remove_dir_all(&tmp);
}

/// `shaper demo` with `args`, its report in `tmp`: everything it printed (logs included), once
/// it succeeded.
fn demo_output(args: &[&str], tmp: &Path) -> String {
    let o = shaper()
        .arg("demo")
        .args(args)
        .arg("--report")
        .arg(tmp.join("report"))
        .output()
        .expect("run the demo");
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(o.status.success(), "{out}");
    out
}

/// `shaper demo --quick`: the lab, the shaper, every tenant's line, the report, in at most 40
/// lines of output (logs included), and nothing left behind.
#[test]
fn the_quick_demo_runs_in_forty_lines() {
    let Some(_root) = root_test("the_quick_demo_runs_in_forty_lines") else {
        return;
    };
    let tmp = std::env::temp_dir().join(shaper::lab::unique_name("shaper-demo-"));
    let out = demo_output(&["--quick", "--seconds", "4"], &tmp);
    let lines = out.lines().count();
    assert!(lines <= 40, "{lines} lines:\n{out}");
    for want in ["acme", "globex", "initech", "lab torn down", "report:"] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
    assert!(tmp.join("report/index.html").exists(), "no report");
    let _ = std::fs::remove_dir_all(&tmp);
}

/// `shaper demo` with a short day: both policies run on the same traffic, the table compares
/// them row by row, both shaped (some but not all of the flash crowd above bronze's rate
/// passes), and the report holds both runs.
#[test]
fn the_day_demo_compares_static_and_predictive() {
    let Some(_root) = root_test("the_day_demo_compares_static_and_predictive") else {
        return;
    };
    let tmp = std::env::temp_dir().join(shaper::lab::unique_name("shaper-demo-"));
    let out = demo_output(&["--day-secs", "20"], &tmp);
    let header = out
        .lines()
        .find(|l| l.contains("static") && l.contains("predictive") && !l.contains("run under"))
        .unwrap_or_else(|| panic!("no comparison table:\n{out}"));
    assert!(header.trim_start().starts_with("static"), "{header}");
    let row = |label: &str| -> Vec<f64> {
        let line = out
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no row {label:?}:\n{out}"));
        line[label.len()..]
            .split_whitespace()
            .filter_map(|c| c.trim_end_matches('%').parse().ok())
            .collect()
    };
    for label in [
        "in-profile loss, gold acme",
        "in-profile loss, silver globex",
        "in-profile loss, bronze initech",
        "loss at burst onsets",
        "link utilization",
    ] {
        assert_eq!(row(label).len(), 2, "{label}: a number per policy:\n{out}");
    }
    for passed in row("passed / offered") {
        assert!(
            (50.0..100.0).contains(&passed),
            "shaped, and traffic went through: {passed}%\n{out}"
        );
    }
    let report = std::fs::read_to_string(tmp.join("report/index.html")).expect("report");
    assert!(
        report.contains("acme (static)") && report.contains("acme (predictive)"),
        "both runs in the report"
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
