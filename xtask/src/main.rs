//! Project tasks. `cargo xtask bench datapath`: per-packet cost of the XDP program through
//! BPF_PROG_TEST_RUN, as a ratio to an XDP_PASS program loaded from the same object and run
//! in alternation in the same process (these machines are noisy: only ratios mean much).
//! `cargo xtask bench tiers`: the same for the tiered paths, and the global pools' contention.
use anyhow::{Context as _, Result};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use clap::{Parser, Subcommand};
use shaper::config::synthetic;
use shaper::datapath::{Clock, Datapath};
use shaper::units::{Rate, Size};

mod agent_bench;
mod cluster;
mod compare;
mod cycle;
mod lab;
mod plot;
mod replay;
mod scenarios;
mod tiers;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    #[command(subcommand)]
    Bench(Bench),
    /// Every policy (static, HTB, reactive, predictive, oracle) on every scenario of the suite
    /// in the simulator: a markdown table of measures, one of the prediction criteria, a chart.
    Scenarios {
        /// The suite: one JSON file per scenario.
        #[arg(long, default_value = "bench/scenarios")]
        dir: std::path::PathBuf,
        /// Only the scenarios whose file name contains this.
        #[arg(long)]
        only: Option<String>,
        /// Write the chart (PNG) here.
        #[arg(long)]
        chart: Option<std::path::PathBuf>,
    },
    /// Replay a trace through the real datapath (netns lab, `shaper run`) under each policy,
    /// one trace cycle per second, and score the agent's history like `shaper simulate`.
    Replay {
        #[arg(long)]
        trace: std::path::PathBuf,
        #[arg(long)]
        config: std::path::PathBuf,
        #[arg(long, value_delimiter = ',', default_values_t = ["reactive".to_string(), "predictive".to_string()])]
        policies: Vec<String>,
        /// First trace cycle replayed.
        #[arg(long)]
        from: usize,
        /// Cycles replayed (seconds on the wire per policy).
        #[arg(long, default_value_t = 240)]
        cycles: usize,
        /// Cycles before `from` written to the history store for the forecasters.
        #[arg(long, default_value_t = 2880)]
        warm: usize,
        /// Rates (trace, tenants, link) multiplied by this, to fit the lab's veth.
        #[arg(long, default_value_t = 0.5)]
        scale: f64,
        /// Alternating rounds of all policies.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// A real link after the shaper: a TBF at the link's capacity on the receiving side
        /// (IFB); what the receivers got is scored. Needed for `htb`.
        #[arg(long)]
        bottleneck: bool,
        /// The link's capacity in Mbit/s (before `--scale`) instead of the config's.
        #[arg(long)]
        capacity: Option<u64>,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Cost per packet of the shaper vs XDP_PASS, IPv4 and IPv6, for several tenant counts.
    Datapath {
        /// Program runs per measurement (one BPF_PROG_TEST_RUN call).
        #[arg(long, default_value_t = 10_000_000)]
        repeat: u32,
        /// Alternating rounds (baseline, shaper); the median ratio is reported.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Tenant counts to load (each tenant has one IPv4 /32 and one IPv6 /128).
        #[arg(long, value_delimiter = ',', default_values_t = [1u32, 10_000, 1_048_576])]
        tenants: Vec<u32>,
    },
    /// Cost per packet of the tiered paths (single bucket, rules and link charge, flow
    /// sampling, the longest path) vs XDP_PASS, and the global pools under two CPUs at once.
    Tiers {
        #[arg(long, default_value_t = 10_000_000)]
        repeat: u32,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// The shaper against tc HTB on an IFB device on the same veth, alternating: rate
    /// accuracy, isolation, TCP through a 100 Mbit/s tenant, per-frame cost on one CPU,
    /// offered load stepped up to the loss point, 1/1,000/100,000 tenants; PNG charts.
    Compare {
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Seconds of traffic per measurement.
        #[arg(long, default_value_t = 5)]
        secs: u64,
        /// Which measurements: accuracy, isolation, tcp, wire, load, scale, and cost (two
        /// unpaced socket senders, not run by default: `load` measures the same, stepped).
        #[arg(long, value_delimiter = ',', default_values_t = ["accuracy".to_string(), "isolation".to_string(), "tcp".to_string(), "wire".to_string(), "load".to_string(), "scale".to_string()])]
        tests: Vec<String>,
        /// Where the PNG charts and the raw results (results.json) go.
        #[arg(long, default_value = "bench/compare")]
        out: std::path::PathBuf,
    },
    /// The agent's cycle: forecast and allocate for many tenants (`Planner::step`), per-cycle
    /// time and memory per tenant.
    /// The whole agent (`shaper run`) at scale: first cycle, stage times, memory, reload,
    /// API latency.
    Agent {
        #[arg(long, value_delimiter = ',', default_values_t = [10_000usize, 100_000])]
        tenants: Vec<usize>,
        /// Seconds measured per size.
        #[arg(long, default_value_t = 30)]
        secs: u64,
        /// How the agent keeps its intervals (`forecast.intervals`), to compare the two; the
        /// config's default if not given.
        #[arg(long, value_enum)]
        intervals: Option<shaper::forecast::IntervalMethod>,
    },
    /// Cluster mode: coordination cost per epoch for many hosts and aggregate tenants through
    /// one redis-server, and the follow-the-sun replay of each division rule.
    Cluster {
        #[arg(long, default_value_t = 10)]
        hosts: usize,
        #[arg(long, default_value_t = 100_000)]
        tenants: usize,
        #[arg(long, default_value_t = 20)]
        epochs: usize,
        /// Days scored in the follow-the-sun replay (after 7 learned).
        #[arg(long, default_value_t = 3)]
        days: usize,
        /// Follow-the-sun: hosts (regions 24 h / hosts apart).
        #[arg(long, default_value_t = 3)]
        sun_hosts: usize,
        /// Follow-the-sun: seconds per epoch (and forecaster interval).
        #[arg(long, default_value_t = 60.0)]
        epoch_s: f64,
        /// Follow-the-sun: the morning ramp and the evening one, minutes.
        #[arg(long, default_value_t = 10.0)]
        ramp_up_min: f64,
        #[arg(long, default_value_t = 30.0)]
        ramp_down_min: f64,
        /// Only the follow-the-sun replay (no redis-server, no coordination).
        #[arg(long)]
        sun_only: bool,
    },
    Cycle {
        #[arg(long, value_delimiter = ',', default_values_t = [100_000usize, 1_000_000])]
        tenants: Vec<usize>,
        /// Untimed cycles first, so windows and seasons fill.
        #[arg(long, default_value_t = 300)]
        warm: u64,
        #[arg(long, default_value_t = 20)]
        cycles: u64,
        /// forecast.model: auto or one model.
        #[arg(long, default_value = "auto")]
        model: String,
        /// forecast.intervals: tracking (the config's default) or window.
        #[arg(long, default_value = "tracking")]
        intervals: String,
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        #[arg(long, default_value_t = 86_400)]
        season_s: u64,
    },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Scenarios { dir, only, chart } => {
            scenarios::run(&dir, only.as_deref(), chart.as_deref())
        }
        Cmd::Bench(Bench::Agent {
            tenants,
            secs,
            intervals,
        }) => agent_bench::bench(&tenants, secs, intervals),
        Cmd::Bench(Bench::Cluster {
            hosts,
            tenants,
            epochs,
            days,
            sun_hosts,
            epoch_s,
            ramp_up_min,
            ramp_down_min,
            sun_only,
        }) => {
            if !sun_only {
                cluster::coordination(hosts, tenants, epochs)?;
            }
            let sun = shaper::simulate::cluster::Sun {
                hosts: sun_hosts,
                interval_s: epoch_s,
                peak: 10e6,
                ramp_up_h: ramp_up_min / 60.0,
                ramp_down_h: ramp_down_min / 60.0,
            };
            cluster::follow_the_sun(sun, days);
            Ok(())
        }
        Cmd::Bench(Bench::Datapath {
            repeat,
            rounds,
            tenants,
        }) => bench_datapath(repeat, rounds, &tenants),
        Cmd::Bench(Bench::Tiers { repeat, rounds }) => tiers::bench(repeat, rounds),
        Cmd::Bench(Bench::Compare {
            reps,
            secs,
            tests,
            out,
        }) => compare::compare(reps, secs, &tests, &out),
        Cmd::Replay {
            trace,
            config,
            policies,
            from,
            cycles,
            warm,
            scale,
            rounds,
            bottleneck,
            capacity,
        } => replay::replay(&replay::Args {
            bottleneck,
            capacity_mbit: capacity,
            trace: &trace,
            config: &config,
            policies: &policies,
            from,
            cycles,
            warm,
            scale,
            rounds,
        }),
        Cmd::Bench(Bench::Cycle {
            tenants,
            warm,
            cycles,
            model,
            intervals,
            interval_ms,
            season_s,
        }) => cycle::bench(
            &tenants,
            warm,
            cycles,
            &model,
            &intervals,
            interval_ms,
            season_s,
        ),
    }
}

/// A 64-byte frame (60 + FCS) to tenant `id`: IPv4/UDP, or IPv6/UDP (the smallest IPv6 frame).
pub(crate) fn frame(v6: bool, id: u32) -> Vec<u8> {
    if v6 {
        shaper::lab::frame::FrameBuilder {
            ip_len: 48,
            sport: 0,
            dport: 0,
            ..Default::default()
        }
        .v6(
            std::net::Ipv6Addr::LOCALHOST.octets(),
            (0x2001_0db8_u128 << 96 | u128::from(id)).to_be_bytes(),
        )
    } else {
        udp4_frame(
            ([0x02, 0, 0, 0, 0, 1], [0x02, 0, 0, 0, 0, 2]),
            [192, 0, 2, 1],
            (0x0a00_0000 | id).to_be_bytes(),
            (0, 0),
        )
    }
}

/// A 64-byte (60 + FCS) IPv4/UDP frame: `macs` (destination, source), addresses and
/// `ports` (source, destination), with a valid IP checksum and UDP length so a receiving
/// stack takes it.
pub(crate) fn udp4_frame(
    macs: ([u8; 6], [u8; 6]),
    src: [u8; 4],
    dst: [u8; 4],
    ports: (u16, u16),
) -> Vec<u8> {
    shaper::lab::frame::FrameBuilder {
        macs,
        ip_len: 46,
        sport: ports.0,
        dport: ports.1,
        ..Default::default()
    }
    .v4(src, dst)
}

pub(crate) fn ns_per_run(prog: &Xdp, frame: &[u8], repeat: u32) -> Result<f64> {
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })
        .context("BPF_PROG_TEST_RUN (run as root)")?;
    Ok(r.duration.as_nanos() as f64)
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    compare::median(&mut v)
}

/// Frames whose costs, subtracted, show where the time goes: a non-IP frame (parse and one
/// class counter), an IP frame of no tenant (plus config read and classification miss), and
/// a frame of the last tenant (plus the bucket: clock, compare-and-swap or add, counters).
fn frames(v6: bool, last: u32) -> [(&'static str, Vec<u8>); 3] {
    let mut arp = frame(false, 0);
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    // 10.255.255.255 and 2001:db8::ffff:ffff are beyond any synthetic tenant below 2^24.
    [
        ("non-IP", arp),
        ("unmatched", frame(v6, 0x00ff_ffff)),
        ("tenant", frame(v6, last)),
    ]
}

fn bench_datapath(repeat: u32, rounds: usize, tenant_counts: &[u32]) -> Result<()> {
    println!(
        "| tenants | clock | family | XDP_PASS ns | non-IP ns | unmatched ns | tenant ns | tenant / XDP_PASS (median of {rounds}, min..max) |"
    );
    println!("| ---: | --- | --- | ---: | ---: | ---: | ---: | --- |");
    for (&n, clock) in tenant_counts
        .iter()
        .flat_map(|n| [(n, Clock::Precise), (n, Clock::Coarse)])
    {
        // Rates far above what the runs offer: every packet takes the full pass path.
        let cfg = synthetic(
            n,
            Rate(400_000_000_000),
            Rate(400_000_000_000),
            Size(1_000_000_000),
        );
        let mut dp = Datapath::load_with(n.max(1), clock)?;
        dp.apply(&cfg)?;
        let mut floor = shaper::datapath::BenchPrograms::load()?;
        floor.pass_mut()?;
        for v6 in [false, true] {
            let fs = frames(v6, n - 1);
            let mut base = vec![];
            let mut costs: [Vec<f64>; 3] = Default::default();
            let mut ratios = vec![];
            for _ in 0..rounds {
                let b = ns_per_run(floor.pass_mut()?, &fs[2].1, repeat)?;
                base.push(b);
                for (k, (_, f)) in fs.iter().enumerate() {
                    costs[k].push(ns_per_run(dp.program()?, f, repeat)?);
                }
                ratios.push(costs[2].last().copied().unwrap_or(0.0) / b);
            }
            let (lo, hi) = ratios
                .iter()
                .fold((f64::MAX, 0f64), |(l, h), r| (l.min(*r), h.max(*r)));
            let [c0, c1, c2] = costs;
            println!(
                "| {n} | {clock:?} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2}x ({lo:.2}..{hi:.2}) |",
                if v6 { "IPv6" } else { "IPv4" },
                median(base),
                median(c0),
                median(c1),
                median(c2),
                median(ratios)
            );
        }
    }
    Ok(())
}
