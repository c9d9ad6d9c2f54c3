//! The command line: one file per verb, each with an `execute` entry point.
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use shaper::datapath::{AttachMode, Clock};

pub mod config_check;
pub mod demo;
pub mod demo_cluster;
pub mod demo_day;
pub mod detach;
pub mod exchange;
pub mod explain;
pub mod forecast;
pub mod history;
pub mod run;
pub mod simulate;
pub mod stats;
pub mod top;

#[derive(Debug, Parser)]
#[command(
    name = "shaper",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("SHAPER_GIT_HASH"), ")"),
    about = "Predictive multi-tenant traffic shaper (XDP)"
)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    pub log: String,
    /// Log lines as text, or one JSON object per line (journald, log shippers).
    #[arg(long, global = true, value_parser = ["text", "json"], default_value = "text")]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load, attach and run the shaper on an interface until SIGINT/SIGTERM.
    Run(RunArgs),
    /// One snapshot per tenant from the pinned maps: packets, bytes, current rates.
    Stats(StatsArgs),
    /// Live terminal view of the tenants (q quits, s sorts, / filters).
    Top {
        /// Interface whose shaper to watch; optional when only one runs.
        #[arg(long, value_parser = shaper::datapath::interface_name)]
        iface: Option<String>,
        /// Refresh period in milliseconds.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
        refresh_ms: u64,
    },
    /// Detach a shaper left running without its agent (after a crash) and remove its pins.
    Detach {
        #[arg(long, value_parser = shaper::datapath::interface_name)]
        iface: String,
    },
    /// Config file commands.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Build a namespace lab with three tenants, shape real traffic for ~20 s, report, tear down.
    Demo(DemoArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell) to stdout.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff) to stdout.
    Man,
    /// Forecasting tools.
    #[command(subcommand)]
    Forecast(ForecastCommand),
    /// Move rate between a tenant's token types, within policy.max_exchange_fraction, at the
    /// config's exchange rates (through the running agent).
    Exchange(ExchangeArgs),
    /// Why a tenant has its current fill and pre-allocation: configured rate and ceiling,
    /// forecast and accuracy, the allocator's decision, which tokens paid its packets (through
    /// the running agent).
    Explain(ExplainArgs),
    /// Export the history store: every tenant's offered, passed and dropped rate per cycle,
    /// with its forecast and allocation.
    History(HistoryArgs),
    /// Charts of the history store (offered, forecast with its interval, allocation, drops per
    /// tenant) as SVG files and an index.html.
    Report(ReportArgs),
    /// Synthetic multi-tenant traces.
    #[command(subcommand)]
    Trace(TraceCommand),
    /// Replay a trace through the allocator and a model of the datapath, deterministically.
    Simulate(SimulateArgs),
}

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// Interface whose agent to ask; optional when only one runs.
    #[arg(long, value_parser = shaper::datapath::interface_name)]
    pub iface: Option<String>,
    #[arg(long)]
    pub tenant: String,
    /// The agent's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ExchangeArgs {
    /// Interface whose agent to ask; optional when only one runs.
    #[arg(long, value_parser = shaper::datapath::interface_name)]
    pub iface: Option<String>,
    #[arg(long)]
    pub tenant: String,
    #[arg(long, value_parser = ["gold", "silver", "bronze"])]
    pub from: String,
    #[arg(long, value_parser = ["gold", "silver", "bronze"])]
    pub to: String,
    /// A rate: `10mbit`, `500kbit`.
    #[arg(long)]
    pub amount: String,
    #[arg(long)]
    pub json: bool,
}

/// Which rows of the history store to read: `shaper history` and `shaper report`.
#[derive(Debug, clap::Args)]
pub struct HistorySource {
    /// Interface whose history to read; optional when only one shaper runs.
    #[arg(long, value_parser = shaper::datapath::interface_name)]
    pub iface: Option<String>,
    /// One tenant; default all.
    #[arg(long)]
    pub tenant: Option<String>,
    /// How far back: `90s`, `15m`, `1h`, `2d`.
    #[arg(long, default_value = "1h")]
    pub since: String,
    /// The store (the config's history.path).
    #[arg(long, default_value = "/var/lib/shaper/history.db")]
    pub db: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub source: HistorySource,
    /// CSV instead of a table.
    #[arg(long)]
    pub csv: bool,
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub source: HistorySource,
    /// Directory to write index.html and the SVG charts into (created if needed).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum TraceCommand {
    /// Write a seeded trace (CSV: time, tenant, offered bytes) for a config's tenants.
    Gen(TraceGenArgs),
}

#[derive(Debug, clap::Args)]
pub struct TraceGenArgs {
    #[arg(long, value_enum)]
    pub kind: shaper::simulate::TraceKind,
    /// The tenants (and their rates) and the interval (forecast.interval_ms) come from here.
    #[arg(long)]
    pub config: PathBuf,
    #[arg(long, default_value_t = 3.0)]
    pub days: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    #[arg(long)]
    pub trace: PathBuf,
    #[arg(long)]
    pub config: PathBuf,
    /// Allocation policy; default: the config's policy.mode.
    #[arg(long, value_enum)]
    pub policy: Option<PolicyArg>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum PolicyArg {
    Static,
    Reactive,
    Predictive,
    /// The predictive allocator fed the demand that actually comes (the upper bound).
    Oracle,
    /// An HTB tree with the same rates, ceilings and priorities.
    Htb,
}

#[derive(Debug, Subcommand)]
pub enum ForecastCommand {
    /// Rolling-origin evaluation of every model on a `timestamp,value` CSV series.
    Eval(ForecastEvalArgs),
    /// Write a seeded traffic-like series (daily and weekly seasons, trend, bursts) as CSV.
    Gen(ForecastGenArgs),
}

#[derive(Debug, clap::Args)]
pub struct ForecastEvalArgs {
    #[arg(long)]
    pub csv: PathBuf,
    /// Season in samples (default: one day at the series' interval).
    #[arg(long)]
    pub season: Option<usize>,
    /// Horizon in samples.
    #[arg(long, default_value_t = 12, value_parser = forecast::parse_horizon)]
    pub horizon: usize,
    /// Interval confidence.
    #[arg(long, default_value_t = 0.95)]
    pub confidence: f64,
    /// Score only this many evenly spaced origins (the Python comparison uses the same ones).
    #[arg(long)]
    pub origins: Option<usize>,
    /// How intervals are kept: tracking (default) or window.
    #[arg(long, value_enum, default_value = "tracking")]
    pub intervals: shaper::forecast::IntervalMethod,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ForecastGenArgs {
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 56)]
    pub days: usize,
    #[arg(long, default_value_t = 300.0)]
    pub interval_s: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Interface to shape (ingress).
    #[arg(long, value_parser = shaper::datapath::interface_name)]
    pub iface: String,
    /// JSON config file.
    #[arg(long)]
    pub config: PathBuf,
    /// XDP attach mode: auto is native and refuses with a line naming skb where the driver
    /// has none; skb (generic) only when asked: it sees packets after GRO, up to 64 kB.
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
    #[arg(long, value_parser = shaper::datapath::interface_name)]
    pub iface: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Window over which current rates are measured, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub window_ms: u64,
    /// List the top flows by rate (from the datapath's sampled flow table) instead of tenants.
    #[arg(long)]
    pub flows: bool,
    /// With --flows: only this tenant's flows.
    #[arg(long, requires = "flows")]
    pub tenant: Option<String>,
    /// With --flows: how many flows to list.
    #[arg(long, default_value_t = 20, requires = "flows")]
    pub top: usize,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print a full config with every setting at its default and a comment each (what
    /// `config check` accepts; comments are allowed in configs).
    Example,
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
    /// The 20-second demo: every tenant offered three times its rate, one run.
    #[arg(long)]
    pub quick: bool,
    /// Seconds of traffic (with --quick).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(2..=600))]
    pub seconds: u64,
    /// Seconds in the compressed day each policy runs (without --quick).
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u64).range(20..=3600))]
    pub day_secs: u64,
    /// Seed of the day's noise and flash crowds.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Where to write the report of the run (index.html and SVG charts).
    #[arg(long, default_value = "shaper-demo-report")]
    pub report: PathBuf,
    /// Cluster mode: this many hosts (a lab and an agent each) share one tenant's aggregate
    /// limit through a local redis-server; `--seconds` per phase.
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..=8))]
    pub hosts: Option<u64>,
    /// With --hosts: how long Redis stays killed under traffic.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(2..=120))]
    pub outage_secs: u64,
}
