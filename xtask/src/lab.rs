//! What the benchmarks share to run the shaper in a lab: its config written privately, the
//! `shaper run` process started beside this binary, and `tc` in a namespace.
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use shaper::lab::{AgentProcess, Lab};

/// `tc` in namespace `ns`: its output, or its error output on failure.
pub(crate) fn tc(ns: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("tc")
        .args(["-n", ns])
        .args(args)
        .output()
        .context("running tc (iproute2)")?;
    if !out.status.success() {
        bail!(
            "tc {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Writes a config the agent accepts whatever the umask: `shaper run` refuses world-writable
/// configs.
pub(crate) fn write_private(path: &Path, text: &str) -> Result<()> {
    Ok(shaper::lab::write_private(path, text)?)
}

/// `shaper run` (the binary beside this one) on the lab's interface, with `config` and
/// `extra` arguments, its log in `log`; returns once it attached.
pub(crate) fn start_agent(
    lab: &Lab,
    config: &Path,
    log: &Path,
    extra: &[&str],
) -> Result<AgentProcess> {
    let exe = std::env::current_exe()?;
    let shaper = exe.with_file_name("shaper");
    if !shaper.exists() {
        bail!(
            "{} is missing: cargo build --release first",
            shaper.display()
        );
    }
    let mut agent =
        AgentProcess::spawn(&shaper, lab, config, log, extra).context("starting shaper run")?;
    let start = Instant::now();
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains("forecasters warm-started")
        && !std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains("shaper attached")
    {
        if start.elapsed() > Duration::from_secs(60) || agent.child.try_wait()?.is_some() {
            bail!(
                "shaper run did not start: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(agent)
}
