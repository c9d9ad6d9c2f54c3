//! shaper: a predictive multi-tenant traffic shaper. The library holds the agent and every
//! stage below it; the `shaper` binary (`main.rs` and `cli/`) parses arguments and calls in.
//!
//! From the bottom up: [`units`] and [`config`]; the pure stages [`forecast`] and
//! [`allocate`], joined to the config by the [`planner`]; [`datapath`] (load, write maps,
//! attach, pin, read counters) and [`stats`] (rates between two counter snapshots); [`store`]
//! (history on disk); [`api`]; and the [`agent`] that runs the cycle. [`simulate`] replays
//! traces through the same planner; [`report`] draws the history; [`lab`] builds the demo's,
//! the tests' and the benchmarks' namespaces and traffic.
pub mod agent;
pub mod allocate;
pub mod api;
pub mod cluster;
pub mod config;
pub mod datapath;
pub mod forecast;
pub mod lab;
pub mod planner;
pub mod report;
pub mod simulate;
pub mod stats;
pub mod store;
pub mod units;
