//! `shaper run`: parse the options, load the config, run the agent until SIGINT or SIGTERM.
use std::future::Future;

use anyhow::Result;
use tracing::info;

use shaper::agent::{self, Options};
use shaper::config::Config;

use crate::cli::RunArgs;

/// `shaper run`: runs until `shutdown` completes. Everything attached or pinned is removed
/// before returning.
pub async fn execute(args: &RunArgs, shutdown: impl Future<Output = ()>) -> Result<()> {
    let cfg = Config::load(&args.config)?;
    agent::run(&options(args), &cfg, || {}, shutdown).await?;
    Ok(())
}

/// The agent's options from the command line.
pub fn options(args: &RunArgs) -> Options {
    Options {
        iface: args.iface.clone(),
        config: args.config.clone(),
        xdp_mode: args.xdp_mode,
        max_tenants: args.max_tenants,
        netns: args.netns.clone(),
        clock: args.clock,
        fault: None,
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn signals() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Cannot install handlers: fall back to Ctrl-C only.
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = int.recv() => info!("SIGINT: stopping"),
        _ = term.recv() => info!("SIGTERM: stopping"),
    }
}
