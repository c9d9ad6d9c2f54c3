//! The command line: one file per verb, each with an `execute` entry point.
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::datapath::{AttachMode, Clock};

pub mod config_check;
pub mod demo;
pub mod run;
pub mod stats;

#[derive(Debug, Parser)]
#[command(
    name = "shaper",
    version,
    about = "Predictive multi-tenant traffic shaper (XDP)"
)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load, attach and run the shaper on an interface until SIGINT/SIGTERM.
    Run(RunArgs),
    /// One snapshot per tenant from the pinned maps: packets, bytes, current rates.
    Stats(StatsArgs),
    /// Config file commands.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Build a namespace lab with three tenants, shape real traffic for ~20 s, report, tear down.
    Demo(DemoArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Interface to shape (ingress).
    #[arg(long)]
    pub iface: String,
    /// JSON config file.
    #[arg(long)]
    pub config: PathBuf,
    /// XDP attach mode: auto tries native, then generic (skb).
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub xdp_mode: AttachMode,
    /// Tenant capacity of the maps, fixed at load time (up to 1048576).
    #[arg(long, default_value_t = shaper_common::DEFAULT_MAX_TENANTS)]
    pub max_tenants: u32,
    /// Attach to IFACE inside this named network namespace (`ip netns`).
    #[arg(long)]
    pub netns: Option<String>,
    /// Bucket clock: precise (ns, exact bursts) or coarse (jiffies: cheaper per packet, up to
    /// one jiffy of extra burst; long-term rates stay exact).
    #[arg(long, value_enum, default_value_t = Clock::Precise)]
    pub clock: Clock,
}

#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// Interface whose shaper to read; optional when only one runs.
    #[arg(long)]
    pub iface: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Window over which current rates are measured, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub window_ms: u64,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a config and print what it would apply.
    Check {
        file: PathBuf,
        /// Print the normalized config as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Seconds of traffic.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(2..=600))]
    pub seconds: u64,
}
