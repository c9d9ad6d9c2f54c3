//! `cargo xtask bench tiers`: what each stage of the tiered spending order costs per packet,
//! as a ratio to XDP_PASS in the same run, and how the global pools behave when two CPUs
//! charge them at once.
use std::sync::{Arc, Barrier};
use std::time::Instant;

use anyhow::Result;
use shaper::config::Config;
use shaper::datapath::{Datapath, bucket, global_config};
use shaper_common::{
    FLOWS_OFF, GLOBAL_BORROW, GLOBAL_FALLBACK, GLOBAL_YIELD, GlobalConfig, OUTCOME_BORROWED,
    OUTCOME_DROPPED, OUTCOME_EMERGENCY, OUTCOME_GREEN, TENANT_ACTIVE, TENANT_BORROW,
    TENANT_EMERGENCY, TenantConfig,
};

use crate::{frame, median, ns_per_run};

/// Four rules a 64-byte UDP frame to port 0 walks through; the last makes it gold.
fn config(rules: bool) -> Config {
    let token_types = if rules {
        r#""token_types": {
            "gold": { "match": [
                { "proto": "tcp", "dport": [1, 2, 3, 4, 5, 6, 7, 8] },
                { "proto": "udp", "sport": [1, 2, 3, 4, 5, 6, 7, 8] },
                { "dscp": [10, 12, 14] },
                { "proto": "udp", "dport": [0] }
            ] },
            "fallback": true
        },"#
    } else {
        ""
    };
    Config::parse(&format!(
        r#"{{
        "link": {{ "capacity": "400gbit" }},
        {token_types}
        "tenants": [
            {{ "name": "t0", "tier": "gold", "prefixes": ["10.0.0.0/24"], "rate": "100gbit", "ceil": "200gbit", "burst": "1000mb", "mix": {{ "gold": 0.34, "silver": 0.33, "bronze": 0.33 }} }},
            {{ "name": "t1", "tier": "gold", "prefixes": ["10.0.1.0/24"], "rate": "100gbit", "ceil": "200gbit", "burst": "1000mb", "mix": {{ "gold": 0.34, "silver": 0.33, "bronze": 0.33 }} }}
        ]
    }}"#
    ))
    .expect("bench config is valid")
}

/// Buckets that a few packets drain and that stay drained for the run: at 8 bit/s a 46-byte
/// packet's tokens take 46 s to come back.
fn drained() -> shaper_common::BucketParams {
    bucket(8, 1_500)
}

struct Scenario {
    name: &'static str,
    rules: bool,
    setup: fn(&mut Datapath, &mut GlobalConfig) -> Result<()>,
    /// The outcome every packet of the run must get, checked after the run.
    outcome: usize,
}

fn single_bucket(dp: &mut Datapath, g: &mut GlobalConfig) -> Result<()> {
    g.flags &= !(GLOBAL_BORROW | GLOBAL_YIELD);
    g.yield_ns = [0; 4];
    g.flow_sample_shift = FLOWS_OFF;
    let mut tc = dp.tenant(0)?;
    tc.flags &= !(TENANT_BORROW | TENANT_EMERGENCY);
    dp.write_tenant(0, &tc)?;
    Ok(())
}

fn tiered(_: &mut Datapath, g: &mut GlobalConfig) -> Result<()> {
    g.flow_sample_shift = FLOWS_OFF;
    Ok(())
}

/// As `tiered`, without drop precedence: what its capacity charge and yield check cost.
fn tiered_no_precedence(_: &mut Datapath, g: &mut GlobalConfig) -> Result<()> {
    g.flow_sample_shift = FLOWS_OFF;
    g.flags &= !GLOBAL_YIELD;
    g.yield_ns = [0; 4];
    Ok(())
}

fn tiered_flows(_: &mut Datapath, _: &mut GlobalConfig) -> Result<()> {
    Ok(())
}

fn tiered_every_flow(_: &mut Datapath, g: &mut GlobalConfig) -> Result<()> {
    g.flow_sample_shift = 0;
    Ok(())
}

/// Pre-allocated fill, gold, silver and bronze all drained; the borrow bucket has room but
/// the link refuses (so the borrow is refunded); the emergency pool pays.
fn longest(dp: &mut Datapath, g: &mut GlobalConfig) -> Result<()> {
    let mut tc = TenantConfig {
        flags: TENANT_ACTIVE | TENANT_BORROW | TENANT_EMERGENCY,
        tier: 2,
        ..TenantConfig::default()
    };
    tc.types = [drained(); 3];
    tc.pre = drained();
    tc.pre_cap_bytes = 1_500;
    tc.borrow = bucket(400_000_000_000, 1_000_000_000);
    dp.write_tenant(0, &tc)?;
    let link = drained();
    g.link_cost_fp = link.cost_fp;
    g.borrow_depth_ns = [link.burst_ns; 4];
    let e = bucket(400_000_000_000, 1_000_000_000);
    (g.emergency_cost_fp, g.emergency_burst_ns) = (e.cost_fp, e.burst_ns);
    g.flags |= GLOBAL_BORROW | GLOBAL_FALLBACK;
    Ok(())
}

/// The longest path with the emergency pool drained too: dropped.
fn longest_dropped(dp: &mut Datapath, g: &mut GlobalConfig) -> Result<()> {
    longest(dp, g)?;
    let e = drained();
    (g.emergency_cost_fp, g.emergency_burst_ns) = (e.cost_fp, e.burst_ns);
    Ok(())
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "single bucket (the foundation's path: no rules, no pools, no flows)",
        rules: false,
        setup: single_bucket,
        outcome: OUTCOME_GREEN,
    },
    Scenario {
        name: "own bucket, 4 rules, link charged (borrowing on), no precedence, no flow table",
        rules: true,
        setup: tiered_no_precedence,
        outcome: OUTCOME_GREEN,
    },
    Scenario {
        name: "own bucket, 4 rules, link and capacity charged, gold checks its yield, no flows",
        rules: true,
        setup: tiered,
        outcome: OUTCOME_GREEN,
    },
    Scenario {
        name: "own bucket, 4 rules, link charged, flows sampled 1 in 16 (default)",
        rules: true,
        setup: tiered_flows,
        outcome: OUTCOME_GREEN,
    },
    Scenario {
        name: "own bucket, 4 rules, link charged, every packet into the flow table",
        rules: true,
        setup: tiered_every_flow,
        outcome: OUTCOME_GREEN,
    },
    Scenario {
        name: "longest: 4 rules, pre, gold, silver, bronze, borrow refused, emergency pays",
        rules: true,
        setup: longest,
        outcome: OUTCOME_EMERGENCY,
    },
    Scenario {
        name: "longest, dropped at the end",
        rules: true,
        setup: longest_dropped,
        outcome: OUTCOME_DROPPED,
    },
];

fn prepare(s: &Scenario) -> Result<Datapath> {
    let cfg = config(s.rules);
    let mut dp = Datapath::load(16)?;
    dp.apply(&cfg)?;
    let mut g = global_config(&cfg);
    (s.setup)(&mut dp, &mut g)?;
    dp.write_global(&g)?;
    Ok(dp)
}

pub fn bench(repeat: u32, rounds: usize) -> Result<()> {
    let f = frame(false, 0);
    println!(
        "| path (IPv4, 64-byte frame) | XDP_PASS ns | shaper ns | shaper / XDP_PASS (median of {rounds}, min..max) |"
    );
    println!("| --- | ---: | ---: | --- |");
    for s in SCENARIOS {
        let dp = prepare(s)?;
        let mut floor = shaper::datapath::BenchPrograms::load()?;
        floor.pass_mut()?;
        // Warm-up: drains what the scenario drains (1500 bytes a bucket, 46 a packet), applies
        // the parameter epoch.
        for _ in 0..200 {
            ns_per_run(dp.program()?, &f, 1)?;
        }
        let before = shaper_tests_free_counters(&dp)?;
        let (mut base, mut cost, mut ratios) = (vec![], vec![], vec![]);
        for _ in 0..rounds {
            let b = ns_per_run(floor.pass_mut()?, &f, repeat)?;
            let c = ns_per_run(dp.program()?, &f, repeat)?;
            base.push(b);
            cost.push(c);
            ratios.push(c / b);
        }
        let after = shaper_tests_free_counters(&dp)?;
        let got = after.packets_of(s.outcome) - before.packets_of(s.outcome);
        anyhow::ensure!(
            got == u64::from(repeat) * rounds as u64,
            "{}: only {got} of the runs took the path",
            s.name
        );
        let (lo, hi) = ratios
            .iter()
            .fold((f64::MAX, 0f64), |(l, h), r| (l.min(*r), h.max(*r)));
        println!(
            "| {} | {:.1} | {:.1} | {:.2}x ({lo:.2}..{hi:.2}) |",
            s.name,
            median(base),
            median(cost),
            median(ratios)
        );
    }
    contention(repeat)
}

fn shaper_tests_free_counters(dp: &Datapath) -> Result<shaper_common::TenantCounters> {
    Ok(shaper::datapath::read_tenant_counters(dp.map(shaper::datapath::TENANT_COUNTERS)?, 1)?[0])
}

/// Two CPUs running the program at once, each on its own tenant or both on one, charging the
/// shared link word or not; and the link bucket's accuracy when both borrow from it.
/// The datapath for one contention case: the link charged or not, folded in batches or on
/// every packet; with `borrow_link` set, own buckets drained and the link bucket (that rate,
/// 1 MB) deciding every packet.
fn contention_case(charge: bool, every_packet: bool, borrow_link: Option<u64>) -> Result<Datapath> {
    let cfg = config(false);
    let mut dp = Datapath::load(16)?;
    dp.apply(&cfg)?;
    let mut g = global_config(&cfg);
    g.flow_sample_shift = FLOWS_OFF;
    if !charge {
        g.flags &= !GLOBAL_BORROW;
    }
    if every_packet {
        g.link_fold_bytes = 0;
    }
    if let Some(link_rate_bits) = borrow_link {
        g.flags |= GLOBAL_BORROW;
        let link = bucket(link_rate_bits, 1_000_000);
        g.link_cost_fp = link.cost_fp;
        g.borrow_depth_ns = [link.burst_ns; 4];
        g.emergency_burst_ns = 0;
        let mut tc = dp.tenant(0)?;
        tc.types = [drained(); 3];
        tc.borrow = bucket(400_000_000_000, 1_000_000_000);
        dp.write_tenant(0, &tc)?;
    }
    dp.write_global(&g)?;
    Ok(dp)
}

/// Runs `frames[cpu]` through the program on each of two CPUs at once, `repeat` times: ns
/// per packet, start and end of each run.
fn on_two_cpus(
    dp: &Arc<Datapath>,
    frames: &[Vec<u8>; 2],
    repeat: u32,
) -> Result<Vec<(f64, Instant, Instant)>> {
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = (0..2)
        .map(|cpu| {
            let (dp, barrier, fr) = (dp.clone(), barrier.clone(), frames[cpu].clone());
            std::thread::spawn(move || -> Result<(f64, Instant, Instant)> {
                shaper::lab::traffic::pin_to_cpu(cpu);
                barrier.wait();
                let start = Instant::now();
                let ns = ns_per_run(dp.program()?, &fr, repeat)?;
                Ok((ns, start, Instant::now()))
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().map_err(|_| anyhow::anyhow!("thread panicked"))?)
        .collect()
}

fn contention(repeat: u32) -> Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        println!("contention: needs two CPUs, this machine has {cpus}");
        return Ok(());
    }
    println!();
    println!(
        "| two CPUs at once | ns/packet CPU0 | ns/packet CPU1 | aggregate Mpps | vs one CPU alone |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    // (name, both CPUs on one tenant, link charged, both borrowing)
    let cases: [(&str, bool, bool, bool); 5] = [
        (
            "own buckets, separate tenants, link not charged",
            false,
            false,
            false,
        ),
        (
            "own buckets, separate tenants, link charged per CPU, folded in batches (default)",
            false,
            true,
            false,
        ),
        (
            "own buckets, separate tenants, shared link word charged on every packet",
            false,
            true,
            false,
        ),
        ("one tenant from both CPUs, link charged", true, true, false),
        (
            "both CPUs borrowing from the link bucket",
            true,
            false,
            true,
        ),
    ];
    let link_rate_bits = 1_000_000_000u64;
    for (name, same, charge, borrowing) in cases {
        let dp = contention_case(
            charge,
            name.contains("every packet"),
            borrowing.then_some(link_rate_bits),
        )?;
        let frames = [frame(false, 0), frame(false, if same { 0 } else { 256 })];
        for fr in &frames {
            for _ in 0..4 {
                ns_per_run(dp.program()?, fr, 1)?;
            }
        }
        let alone = ns_per_run(dp.program()?, &frames[0], repeat)?;
        let before = shaper_tests_free_counters(&dp)?;
        let dp = Arc::new(dp);
        let runs = on_two_cpus(&dp, &frames, repeat)?;
        let ns: Vec<f64> = runs.iter().map(|r| r.0).collect();
        // Tokens accrue while either CPU runs: from the first start to the last end.
        let first = runs.iter().map(|r| r.1).min().expect("two runs");
        let last = runs.iter().map(|r| r.2).max().expect("two runs");
        let elapsed = last.duration_since(first).as_secs_f64();
        let mpps = ns.iter().map(|n| 1e3 / n).sum::<f64>();
        println!(
            "| {name} | {:.1} | {:.1} | {mpps:.1} | {:.2}x the one-CPU rate ({alone:.1} ns) |",
            ns[0],
            ns[1],
            mpps / (1e3 / alone)
        );
        if borrowing {
            let after = shaper_tests_free_counters(&dp)?;
            let borrowed = after.bytes_of(OUTCOME_BORROWED) - before.bytes_of(OUTCOME_BORROWED);
            let allowed = link_rate_bits as f64 / 8.0 * elapsed + 1_000_000.0;
            println!(
                "\nlink bucket accuracy, both CPUs borrowing for {elapsed:.2} s: {borrowed} bytes passed of {allowed:.0} allowed ({:.2}%)",
                borrowed as f64 / allowed * 100.0
            );
        }
    }
    Ok(())
}
