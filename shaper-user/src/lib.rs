//! shaper: a predictive multi-tenant traffic shaper. The library holds every stage of the
//! agent; `main.rs` only parses arguments and calls into it.
//!
//! Data flow: [`config`] -> [`datapath`] (load, write maps, attach, pin) -> [`collect`]
//! (per-CPU counters summed, rates) -> [`forecast`] -> [`allocate`] (pure) -> [`cli`] (run,
//! stats, demo); [`store`] keeps every cycle on disk; [`simulate`] replays traces through the
//! same forecaster and allocator.
pub mod allocate;
pub mod api;
pub mod cli;
pub mod collect;
pub mod config;
pub mod datapath;
pub mod forecast;
pub mod lock;
pub mod netns;
pub mod report;
pub mod simulate;
pub mod store;
pub mod traffic;
pub mod units;
