//! In-kernel tests: the real XDP program and maps, driven with crafted packets through
//! `BPF_PROG_TEST_RUN`. One test per parser branch, the bucket arithmetic, concurrency from
//! every CPU, and a fuzz run compared against the userspace reference.
use std::net::IpAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use aya::maps::{MapData, PerCpuArray};
use aya::programs::{TestRun, TestRunOptions};
use rand::{Rng, SeedableRng, rngs::StdRng};
use shaper::config::Config;
use shaper::datapath::{
    CONFIG_SLOT, Clock, Datapath, GLOBAL_CONFIG, GLOBAL_COUNTERS, Lookup, TENANT_COUNTERS,
    lookup_plan, tenant_config,
};
use shaper::units::{Rate, Size};
use shaper_common::{
    CLASS_IPV4, CLASS_IPV6, CLASS_MALFORMED, CLASS_NON_IP, CLASS_UNMATCHED_DROPPED,
    CLASS_UNMATCHED_PASSED, CLASS_VLAN, OUTCOME_DROPPED, OUTCOME_GREEN, OUTCOME_MARKED,
    PacketCount, TYPE_SILVER, TenantConfig, TenantCounters,
};
use shaper_tests::{
    FrameBuilder, RefClass, reference_lookup, reference_parse, root_test, run, run_out, tenant,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// alpha and beta have rates far above anything a test sends; gamma is slow, for bucket tests.
fn config(unmatched: &str, match_dir: &str) -> Config {
    config_with(unmatched, match_dir, "")
}

/// `extra_alpha` adds prefixes to alpha, e.g. to give IPv4 more distinct prefix lengths than
/// the hash probes allow, which moves the family to the LPM trie.
fn config_with(unmatched: &str, match_dir: &str, extra_alpha: &str) -> Config {
    let text = format!(
        r#"{{
        "link": {{ "capacity": "100gbit", "match": "{match_dir}", "unmatched": "{unmatched}" }},
        "tenants": [
            {{ "name": "alpha", "tier": "gold", "prefixes": ["10.1.0.0/16", "2001:db8:a::/48"{extra_alpha}], "rate": "100gbit", "burst": "1000mb" }},
            {{ "name": "beta", "tier": "silver", "prefixes": ["10.2.3.4/32", "192.168.0.0/24", "2001:db8:b::1"], "rate": "100gbit", "burst": "1000mb" }},
            {{ "name": "gamma", "tier": "bronze", "prefixes": ["10.3.0.0/24"], "rate": "8kbit", "burst": "10kb" }}
        ]
    }}"#
    );
    Config::parse(&text).expect("test config is valid")
}

fn load(cfg: &Config) -> Datapath {
    let mut dp = Datapath::load(64).expect("load the XDP program");
    dp.apply(cfg).expect("write the config");
    dp
}

fn class(dp: &Datapath, c: u32) -> PacketCount {
    let arr: PerCpuArray<&MapData, PacketCount> =
        PerCpuArray::try_from(dp.map(GLOBAL_COUNTERS).expect("map")).expect("typed");
    arr.get(&c, 0)
        .expect("read")
        .iter()
        .fold(PacketCount::default(), |a, b| PacketCount {
            packets: a.packets + b.packets,
            bytes: a.bytes + b.bytes,
        })
}

const SRC4: [u8; 4] = [172, 16, 0, 9];
const V6_ALPHA: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5,
];
const V6_BETA: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0x0b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
];
const V6_NOBODY: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
];

/// The verifier walks every path of the program once per distinct parser outcome it cannot
/// merge; past 1,000,000 instructions the kernel refuses the load. A parser or policy change
/// that multiplies the paths shows here long before it breaks a start.
#[test]
fn the_program_verifies_with_room_to_grow() {
    let Some(_root) = root_test("the_program_verifies_with_room_to_grow") else {
        return;
    };
    let dp = load(&config("drop", "dst"));
    let info = dp_program(&dp).info().expect("program info");
    let Some(insns) = info.verified_instruction_count() else {
        eprintln!("skipped: this kernel does not report verified instructions");
        return;
    };
    eprintln!("verified instructions: {insns}");
    assert!(
        insns < 500_000,
        "{insns} instructions verified: under half the verifier's budget is left"
    );
}

#[test]
fn ipv4_packet_is_classified_by_destination_and_counted() {
    let Some(_root) = root_test("ipv4_packet_is_classified_by_destination_and_counted") else {
        return;
    };
    let mut dp = load(&config("drop", "dst"));
    let f = FrameBuilder {
        ip_len: 300,
        ..Default::default()
    }
    .v4(SRC4, [10, 1, 7, 7]);
    assert_eq!(run(&mut dp, &f), XDP_PASS);
    let c = tenant(&dp, 0);
    // Bytes are IP bytes: the total length, not the frame.
    assert_eq!(
        (c.packets_of(OUTCOME_GREEN), c.bytes_of(OUTCOME_GREEN)),
        (1, 300)
    );
    assert_eq!(class(&dp, CLASS_IPV4).packets, 1);
    // A /32 prefix and a /24 of another tenant.
    let f = FrameBuilder::default().v4(SRC4, [10, 2, 3, 4]);
    assert_eq!(run(&mut dp, &f), XDP_PASS);
    let f = FrameBuilder::default().v4(SRC4, [192, 168, 0, 200]);
    assert_eq!(run(&mut dp, &f), XDP_PASS);
    assert_eq!(tenant(&dp, 1).packets_of(OUTCOME_GREEN), 2);
}

#[test]
fn ipv4_with_options() {
    let Some(_root) = root_test("ipv4_with_options") else {
        return;
    };
    let mut dp = load(&config("drop", "dst"));
    let f = FrameBuilder {
        options: 12,
        ip_len: 200,
        ..Default::default()
    }
    .v4(SRC4, [10, 1, 0, 1]);
    assert_eq!(run(&mut dp, &f), XDP_PASS);
    assert_eq!(tenant(&dp, 0).bytes_of(OUTCOME_GREEN), 200);
    // The maximal header (IHL 15: 40 bytes of options).
    let f = FrameBuilder {
        options: 40,
        ip_len: 200,
        ..Default::default()
    }
    .v4(SRC4, [10, 1, 0, 1]);
    assert_eq!(run(&mut dp, &f), XDP_PASS);
    assert_eq!(tenant(&dp, 0).packets_of(OUTCOME_GREEN), 2);
}

#[test]
fn ipv6_packet() {
    let Some(_root) = root_test("ipv6_packet") else {
        return;
    };
    let mut dp = load(&config("drop", "dst"));
    let f = FrameBuilder {
        ip_len: 500,
        ..Default::default()
    }
    .v6(V6_NOBODY, V6_ALPHA);
    assert_eq!(run(&mut dp, &f), XDP_PASS);
    assert_eq!(tenant(&dp, 0).bytes_of(OUTCOME_GREEN), 500);
    let f = FrameBuilder::default().v6(V6_NOBODY, V6_BETA);
    assert_eq!(run(&mut dp, &f), XDP_PASS);
    assert_eq!(tenant(&dp, 1).packets_of(OUTCOME_GREEN), 1);
    assert_eq!(class(&dp, CLASS_IPV6).packets, 2);
}

#[test]
fn one_and_two_vlan_tags() {
    let Some(_root) = root_test("one_and_two_vlan_tags") else {
        return;
    };
    let mut dp = load(&config("drop", "dst"));
    let f = FrameBuilder {
        vlans: vec![100],
        ..Default::default()
    }
    .v4(SRC4, [10, 1, 0, 1]);
    assert_eq!(run(&mut dp, &f), XDP_PASS);
    let f = FrameBuilder {
        vlans: vec![100, 200],
        ..Default::default()
    }
    .v6(V6_NOBODY, V6_ALPHA);
    assert_eq!(run(&mut dp, &f), XDP_PASS);
    assert_eq!(tenant(&dp, 0).packets_of(OUTCOME_GREEN), 2);
    assert_eq!(class(&dp, CLASS_VLAN).packets, 2);
    // Unmatched behind two tags is still found and dropped by policy.
    let f = FrameBuilder {
        vlans: vec![100, 200],
        ..Default::default()
    }
    .v4(SRC4, [10, 9, 0, 1]);
    assert_eq!(run(&mut dp, &f), XDP_DROP);
    // A third tag is not parsed: the frame passes as non-IP.
    let f = FrameBuilder {
        vlans: vec![1, 2, 3],
        ..Default::default()
    }
    .v4(SRC4, [10, 9, 0, 1]);
    assert_eq!(run(&mut dp, &f), XDP_PASS);
    assert_eq!(class(&dp, CLASS_NON_IP).packets, 1);
}

/// PPPoE sessions carrying IP (behind no, one or two tags) are charged to the tenant of the
/// inner packet, by its IP length; a session length the packet does not fit in is malformed, and
/// the session's control traffic is not IP.
#[test]
fn pppoe_sessions_are_parsed_and_shaped() {
    let Some(_root) = root_test("pppoe_sessions_are_parsed_and_shaped") else {
        return;
    };
    let mut dp = load(&config("drop", "dst"));
    let session = |vlans: Vec<u16>| FrameBuilder {
        vlans,
        pppoe: Some(0x1234),
        ip_len: 300,
        ..Default::default()
    };
    assert_eq!(
        run(&mut dp, &session(vec![]).v4(SRC4, [10, 1, 0, 1])),
        XDP_PASS
    );
    assert_eq!(
        run(&mut dp, &session(vec![7]).v6(V6_NOBODY, V6_ALPHA)),
        XDP_PASS
    );
    assert_eq!(
        run(&mut dp, &session(vec![7, 8]).v4(SRC4, [10, 1, 9, 9])),
        XDP_PASS
    );
    let alpha = tenant(&dp, 0);
    assert_eq!(alpha.packets_of(OUTCOME_GREEN), 3);
    assert_eq!(alpha.bytes_of(OUTCOME_GREEN), 900, "charged the IP length");
    assert_eq!(class(&dp, CLASS_IPV4).packets, 2);
    assert_eq!(class(&dp, CLASS_IPV6).packets, 1);
    // Behind PPPoE, an address nobody has is unmatched and dropped by policy.
    assert_eq!(
        run(&mut dp, &session(vec![]).v4(SRC4, [10, 9, 0, 1])),
        XDP_DROP
    );

    // The session says 100 bytes follow; the IP header claims 300: malformed.
    let mut short = session(vec![]).v4(SRC4, [10, 1, 0, 1]);
    short[18..20].copy_from_slice(&100u16.to_be_bytes());
    assert_eq!(run(&mut dp, &short), XDP_PASS);
    assert_eq!(class(&dp, CLASS_MALFORMED).packets, 1);
    // A truncated session header is malformed too.
    let mut cut = session(vec![]).v4(SRC4, [10, 1, 0, 1]);
    cut.truncate(18);
    assert_eq!(run(&mut dp, &cut), XDP_PASS);
    assert_eq!(class(&dp, CLASS_MALFORMED).packets, 2);
    // LCP is the session's control traffic: not IP, not charged.
    assert_eq!(run(&mut dp, &session(vec![]).arp()), XDP_PASS);
    assert_eq!(class(&dp, CLASS_NON_IP).packets, 1);
    assert_eq!(tenant(&dp, 0).packets_of(OUTCOME_GREEN), 3);
}

#[test]
fn arp_and_other_non_ip_always_pass() {
    let Some(_root) = root_test("arp_and_other_non_ip_always_pass") else {
        return;
    };
    let mut dp = load(&config("drop", "dst"));
    assert_eq!(run(&mut dp, &FrameBuilder::default().arp()), XDP_PASS);
    assert_eq!(
        run(
            &mut dp,
            &FrameBuilder {
                vlans: vec![5],
                ..Default::default()
            }
            .arp()
        ),
        XDP_PASS
    );
    let mut lldp = FrameBuilder::default().arp();
    lldp[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
    assert_eq!(run(&mut dp, &lldp), XDP_PASS);
    assert_eq!(class(&dp, CLASS_NON_IP).packets, 3);
    assert_eq!(class(&dp, CLASS_UNMATCHED_DROPPED).packets, 0);
}

#[test]
fn truncated_at_every_header_passes_and_is_counted() {
    let Some(_root) = root_test("truncated_at_every_header_passes_and_is_counted") else {
        return;
    };
    let mut dp = load(&config("drop", "dst"));
    let v4 = FrameBuilder {
        options: 8,
        ip_len: 200,
        ..Default::default()
    }
    .v4(SRC4, [10, 9, 0, 1]);
    let v6 = FrameBuilder {
        ip_len: 200,
        ..Default::default()
    }
    .v6(V6_NOBODY, V6_NOBODY);
    let vlan = FrameBuilder {
        vlans: vec![7, 8],
        ..Default::default()
    }
    .v4(SRC4, [10, 9, 0, 1]);
    // The kernel refuses test_run input shorter than an Ethernet header, so that branch of the
    // parser cannot be reached this way (a real NIC never hands XDP such a frame either).
    let short = dp.program_mut().expect("program").test_run(TestRunOptions {
        data_in: Some(&v4[..10]),
        ..Default::default()
    });
    assert!(
        short.is_err(),
        "the kernel accepted a 10-byte frame: test it like the others"
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("at the end of ethernet", v4[..14].to_vec()),
        ("inside the outer vlan tag", vlan[..16].to_vec()),
        ("inside the inner vlan tag", vlan[..20].to_vec()),
        ("inside the ipv4 header", v4[..14 + 12].to_vec()),
        ("inside the ipv4 options", v4[..14 + 24].to_vec()),
        ("inside the ipv4 payload", v4[..14 + 100].to_vec()),
        ("inside the ipv6 header", v6[..14 + 30].to_vec()),
        ("inside the ipv6 payload", v6[..14 + 100].to_vec()),
    ];
    for (i, (what, frame)) in cases.iter().enumerate() {
        assert_eq!(run(&mut dp, frame), XDP_PASS, "truncated {what}");
        assert_eq!(
            class(&dp, CLASS_MALFORMED).packets,
            i as u64 + 1,
            "counted: truncated {what}"
        );
    }
    // Inconsistent headers: wrong version, IHL below 5, total length below the header.
    let mut bad = v4.clone();
    bad[14] = 0x65;
    assert_eq!(run(&mut dp, &bad), XDP_PASS);
    let mut bad = v4.clone();
    bad[14] = 0x44;
    assert_eq!(run(&mut dp, &bad), XDP_PASS);
    let mut bad = v4.clone();
    bad[16..18].copy_from_slice(&10u16.to_be_bytes());
    assert_eq!(run(&mut dp, &bad), XDP_PASS);
    let mut bad = v6.clone();
    bad[14] = 0x40;
    assert_eq!(run(&mut dp, &bad), XDP_PASS);
    assert_eq!(class(&dp, CLASS_MALFORMED).packets, cases.len() as u64 + 4);
    assert_eq!(
        class(&dp, CLASS_UNMATCHED_DROPPED).packets,
        0,
        "nothing malformed reached the classifier"
    );
}

#[test]
fn unknown_tenant_follows_unmatched_policy() {
    let Some(_root) = root_test("unknown_tenant_follows_unmatched_policy") else {
        return;
    };
    let f4 = FrameBuilder::default().v4(SRC4, [10, 9, 9, 9]);
    let f6 = FrameBuilder::default().v6(V6_ALPHA, V6_NOBODY);
    let mut dp = load(&config("pass", "dst"));
    assert_eq!(run(&mut dp, &f4), XDP_PASS);
    assert_eq!(run(&mut dp, &f6), XDP_PASS);
    assert_eq!(class(&dp, CLASS_UNMATCHED_PASSED).packets, 2);
    let mut dp = load(&config("drop", "dst"));
    assert_eq!(run(&mut dp, &f4), XDP_DROP);
    assert_eq!(run(&mut dp, &f6), XDP_DROP);
    assert_eq!(class(&dp, CLASS_UNMATCHED_DROPPED).packets, 2);
}

#[test]
fn match_on_source_address() {
    let Some(_root) = root_test("match_on_source_address") else {
        return;
    };
    let mut dp = load(&config("drop", "src"));
    // Source in alpha, destination in beta: src matching charges alpha.
    let f = FrameBuilder::default().v4([10, 1, 2, 3], [10, 2, 3, 4]);
    assert_eq!(run(&mut dp, &f), XDP_PASS);
    assert_eq!(tenant(&dp, 0).packets_of(OUTCOME_GREEN), 1);
    assert_eq!(tenant(&dp, 1).packets_of(OUTCOME_GREEN), 0);
    let f = FrameBuilder::default().v6(V6_BETA, V6_ALPHA);
    assert_eq!(run(&mut dp, &f), XDP_PASS);
    assert_eq!(tenant(&dp, 1).packets_of(OUTCOME_GREEN), 1);
}

/// gamma: 8 kbit/s (1000 B/s), 10 kB burst. Back-to-back 1000-byte packets: exactly ten pass,
/// because the refill during the run (microseconds) is a fraction of a byte.
#[test]
fn burst_passes_exactly_what_it_allows() {
    let Some(_root) = root_test("burst_passes_exactly_what_it_allows") else {
        return;
    };
    let mut dp = load(&config("drop", "dst"));
    let f = FrameBuilder {
        ip_len: 1000,
        ..Default::default()
    }
    .v4(SRC4, [10, 3, 0, 1]);
    let verdicts: Vec<u32> = (0..15).map(|_| run(&mut dp, &f)).collect();
    assert_eq!(verdicts[..10], [XDP_PASS; 10], "{verdicts:?}");
    assert_eq!(verdicts[10..], [XDP_DROP; 5], "{verdicts:?}");
    let c = tenant(&dp, 2);
    assert_eq!(
        (c.packets_of(OUTCOME_GREEN), c.bytes_of(OUTCOME_GREEN)),
        (10, 10_000)
    );
    assert_eq!(
        (c.packets_of(OUTCOME_DROPPED), c.bytes_of(OUTCOME_DROPPED)),
        (5, 5_000)
    );
}

/// A packet larger than the whole bucket can never conform.
#[test]
fn packet_larger_than_burst_is_dropped() {
    let Some(_root) = root_test("packet_larger_than_burst_is_dropped") else {
        return;
    };
    let mut dp = load(&config("drop", "dst"));
    set_tenant(&mut dp, 2, tenant_config(8_000_000, 1500));
    let f = FrameBuilder {
        ip_len: 1600,
        ..Default::default()
    }
    .v4(SRC4, [10, 3, 0, 1]);
    assert_eq!(run(&mut dp, &f), XDP_DROP);
    let f = FrameBuilder {
        ip_len: 1500,
        ..Default::default()
    }
    .v4(SRC4, [10, 3, 0, 1]);
    assert_eq!(run(&mut dp, &f), XDP_PASS);
}

/// Replaces tenant `id` by a new one with `tc`: retired first, so its buckets start full
/// (a rate change of a live tenant would carry its tokens over instead).
fn set_tenant(dp: &mut Datapath, id: u32, tc: TenantConfig) {
    dp.write_tenant(id, &TenantConfig::default())
        .expect("retire tenant");
    dp.write_tenant(id, &tc).expect("write tenant config");
}

/// Packets passed on own tokens, dropped, marked: the single-bucket outcomes.
fn outcomes(c: &TenantCounters) -> [u64; 3] {
    [
        c.packets_of(OUTCOME_GREEN),
        c.packets_of(OUTCOME_DROPPED),
        c.packets_of(OUTCOME_MARKED),
    ]
}

/// Sends `frame` from the calling thread, one run per syscall (a `repeat` above 1 costs ~15 ms
/// of set-up per call on this kernel, which would starve the bucket of packets), until `dur`.
fn hammer(dp: &Datapath, frame: &[u8], dur: Duration) {
    let prog: &aya::programs::Xdp = dp_program(dp);
    let start = Instant::now();
    while start.elapsed() < dur {
        prog.test_run(TestRunOptions {
            data_in: Some(frame),
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    }
}

fn dp_program(dp: &Datapath) -> &aya::programs::Xdp {
    dp.program().expect("program")
}

/// Offers gamma 1000-byte packets far above 20 Mbit/s (2.5 MB/s, 250 kB burst, 100 ms: absorbs scheduling gaps) for `dur`;
/// returns (passed bytes, burst + rate x elapsed).
fn measure_refill(dp: &mut Datapath, dur: Duration) -> (f64, f64) {
    measure_refill_with(dp, dur, 250_000)
}

/// [`measure_refill`] with a burst of `burst` bytes.
fn measure_refill_with(dp: &mut Datapath, dur: Duration, burst: u64) -> (f64, f64) {
    let rate = 2_500_000.0;
    set_tenant(dp, 2, tenant_config(20_000_000, burst));
    let burst = burst as f64;
    let f = FrameBuilder {
        ip_len: 1000,
        ..Default::default()
    }
    .v4(SRC4, [10, 3, 0, 1]);
    let start = Instant::now();
    hammer(dp, &f, dur);
    let elapsed = start.elapsed().as_secs_f64();
    assert!(
        tenant(dp, 2).packets_of(OUTCOME_DROPPED) > 0,
        "the offered load must exceed the rate"
    );
    (
        tenant(dp, 2).bytes_of(OUTCOME_GREEN) as f64,
        burst + rate * elapsed,
    )
}

/// Refill over time matches the rate: offered far above it for ~400 ms, the passed bytes are
/// the burst plus rate x elapsed, within 3%.
#[test]
fn refill_over_time_matches_the_rate() {
    let Some(_root) = root_test("refill_over_time_matches_the_rate") else {
        return;
    };
    measured_twice(|| {
        let mut dp = load(&config("drop", "dst"));
        let (passed, expected) = measure_refill(&mut dp, Duration::from_millis(400));
        ((passed - expected).abs() / expected < 0.03)
            .then_some(())
            .ok_or(format!("passed {passed} bytes, expected {expected:.0}"))
    });
}

/// Runs a measurement against the clock; a miss is measured once more before it fails the test.
/// These machines preempt a test thread for tens of milliseconds now and then (kernel workers
/// freeing the previous test's maps, for one), which starves the offered load; a real error
/// in the bucket misses both times.
fn measured_twice(measure: impl Fn() -> Result<(), String>) {
    if let Err(first) = measure() {
        if let Err(second) = measure() {
            panic!("missed twice: {first}; then {second}");
        }
        eprintln!("first measurement missed ({first}); the second was within bounds");
    }
}

/// The coarse (jiffy) clock keeps the long-term rate: passed bytes are the burst plus rate x
/// elapsed, within 3% plus one jiffy's worth (HZ is at least 100, so a jiffy is <= 10 ms).
#[test]
fn coarse_clock_keeps_the_long_term_rate() {
    let Some(_root) = root_test("coarse_clock_keeps_the_long_term_rate") else {
        return;
    };
    coarse_refill_within_bounds(250_000);
}

/// With the coarse clock a burst smaller than a jiffy's tokens (2 kB; a jiffy at 20 Mbit/s is
/// 10-25 kB) still passes the rate: each bucket holds a jiffy more than its burst, since "now"
/// moves a jiffy at a time. Without that, 2 kB per jiffy passed (a fifth of the rate or less).
#[test]
fn coarse_clock_keeps_the_rate_of_a_burst_under_a_jiffy() {
    let Some(_root) = root_test("coarse_clock_keeps_the_rate_of_a_burst_under_a_jiffy") else {
        return;
    };
    coarse_refill_within_bounds(2_000);
}

/// [`measure_refill_with`] under the coarse clock for 600 ms: within 3% plus a jiffy's worth.
fn coarse_refill_within_bounds(burst: u64) {
    measured_twice(|| {
        let mut dp = Datapath::load_with(64, Clock::Coarse).expect("load with the coarse clock");
        dp.apply(&config("drop", "dst")).expect("apply");
        let (passed, expected) = measure_refill_with(&mut dp, Duration::from_millis(600), burst);
        let slack = expected * 0.03 + 2_500_000.0 * 0.010;
        ((passed - expected).abs() <= slack)
            .then_some(())
            .ok_or(format!(
                "passed {passed}, expected {expected:.0} +- {slack:.0}"
            ))
    });
}

/// Every CPU spends the same bucket at once: the total passed must still match the rate.
#[test]
fn all_cpus_at_once_never_exceed_the_rate() {
    let Some(_root) = root_test("all_cpus_at_once_never_exceed_the_rate") else {
        return;
    };
    measured_twice(all_cpus_once);
}

fn all_cpus_once() -> Result<(), String> {
    let cpus = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    let mut dp = load(&config("drop", "dst"));
    // 40 Mbit/s = 5 MB/s, 500 kB burst (100 ms: absorbs scheduling gaps).
    set_tenant(&mut dp, 2, tenant_config(40_000_000, 500_000));
    let (rate, burst) = (5_000_000.0, 500_000.0);
    let f = FrameBuilder {
        ip_len: 500,
        ..Default::default()
    }
    .v4(SRC4, [10, 3, 0, 1]);
    let dp = Arc::new(dp);
    let barrier = Arc::new(Barrier::new(cpus));
    let threads: Vec<_> = (0..cpus)
        .map(|cpu| {
            let (dp, barrier, f) = (dp.clone(), barrier.clone(), f.clone());
            std::thread::spawn(move || {
                shaper::lab::traffic::pin_to_cpu(cpu);
                barrier.wait();
                let start = Instant::now();
                hammer(&dp, &f, Duration::from_millis(500));
                (start, Instant::now())
            })
        })
        .collect();
    let spans: Vec<(Instant, Instant)> = threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    // Tokens accrue while any thread sends: from the first start to the last end (thread
    // creation and joining are not part of the window).
    let first = spans.iter().map(|s| s.0).min().expect("threads");
    let last = spans.iter().map(|s| s.1).max().expect("threads");
    let elapsed = last.duration_since(first).as_secs_f64();
    let arr: PerCpuArray<&MapData, TenantCounters> =
        PerCpuArray::try_from(dp.map(TENANT_COUNTERS).expect("map")).expect("typed");
    let per_cpu = arr.get(&2, 0).expect("read");
    let busy = per_cpu
        .iter()
        .filter(|c| c.packets_of(OUTCOME_GREEN) + c.packets_of(OUTCOME_DROPPED) > 0)
        .count();
    assert!(
        busy >= 2,
        "traffic must come from at least two CPUs, got {busy}"
    );
    let passed = tenant(&dp, 2).bytes_of(OUTCOME_GREEN) as f64;
    let expected = burst + rate * elapsed;
    if passed > expected * 1.05 {
        return Err(format!(
            "passed {passed} > {expected:.0} + 5% from {busy} CPUs"
        ));
    }
    if passed < expected * 0.95 {
        return Err(format!(
            "passed {passed} < {expected:.0} - 5%: tokens lost under contention"
        ));
    }
    Ok(())
}

/// The test config loaded, and gamma (8 kbit/s, 10 kB) drained by ten 1000-byte packets; the
/// frame that drained it.
fn gamma_drained() -> (Datapath, Vec<u8>) {
    let mut dp = load(&config("drop", "dst"));
    let f = FrameBuilder {
        ip_len: 1000,
        ..Default::default()
    }
    .v4(SRC4, [10, 3, 0, 1]);
    for _ in 0..10 {
        assert_eq!(run(&mut dp, &f), XDP_PASS);
    }
    assert_eq!(run(&mut dp, &f), XDP_DROP, "bucket drained");
    (dp, f)
}

/// A rate change rewrites only the config map: an empty bucket stays empty (no reset to a full
/// burst), and what was spent stays spent.
#[test]
fn rate_change_does_not_reset_the_bucket() {
    let Some(_root) = root_test("rate_change_does_not_reset_the_bucket") else {
        return;
    };
    let (mut dp, f) = gamma_drained();
    // Re-applying the config (as a reload would) and a higher rate with a larger burst.
    let cfg = config("drop", "dst");
    dp.apply(&cfg).expect("re-apply");
    assert_eq!(
        run(&mut dp, &f),
        XDP_DROP,
        "re-applying must not refill the bucket"
    );
    set_tenant(&mut dp, 2, tenant_config(16_000, 20_000));
    // At twice the rate the debt (10 kB at the old rate) is worth 20 kB of time... the bucket
    // holds burst - debt: still no room for a full burst of new tokens appearing at once.
    let passed = (0..25).filter(|_| run(&mut dp, &f) == XDP_PASS).count();
    assert!(
        passed < 20,
        "{passed} packets passed right after the change: tokens were created"
    );
}

/// 100,000 random and mutated frames, classified by hash probes (three IPv4 and two IPv6
/// prefix lengths): the program never errors, and every verdict and every per-tenant count
/// matches the userspace reference parser and longest-prefix classifier.
#[test]
fn fuzz_verdicts_match_the_reference() {
    let Some(_root) = root_test("fuzz_verdicts_match_the_reference") else {
        return;
    };
    let cfg = config("drop", "dst");
    assert!(matches!(lookup_plan(&cfg).0, Lookup::Hash(_)));
    fuzz(&cfg, 100_000, 0x5eed);
}

/// The same against the LPM trie: IPv4 with more distinct prefix lengths than hash probes.
#[test]
fn fuzz_verdicts_match_the_reference_with_the_lpm_trie() {
    let Some(_root) = root_test("fuzz_verdicts_match_the_reference_with_the_lpm_trie") else {
        return;
    };
    let cfg = config_with(
        "drop",
        "dst",
        r#", "10.4.0.0/15", "10.6.0.0/20", "10.7.0.0/27""#,
    );
    assert_eq!(lookup_plan(&cfg).0, Lookup::Lpm);
    fuzz(&cfg, 50_000, 0xfeed);
}

fn fuzz(cfg: &Config, n: usize, seed: u64) {
    let mut dp = load(cfg);
    // gamma never conforms (depth 0), so its verdict is DROP whatever the clock does.
    set_tenant(&mut dp, 2, {
        let mut tc = tenant_config(8_000, 1500);
        tc.types[TYPE_SILVER].burst_ns = 0;
        tc
    });
    let prefixes = cfg.prefixes();
    let mut rng = StdRng::seed_from_u64(seed);
    let seeds: Vec<Vec<u8>> = vec![
        FrameBuilder::default().v4(SRC4, [10, 1, 0, 1]),
        FrameBuilder {
            options: 8,
            ..Default::default()
        }
        .v4(SRC4, [10, 2, 3, 4]),
        FrameBuilder {
            vlans: vec![3],
            ..Default::default()
        }
        .v4(SRC4, [10, 3, 0, 7]),
        FrameBuilder {
            vlans: vec![3, 4],
            ..Default::default()
        }
        .v4(SRC4, [192, 168, 0, 1]),
        FrameBuilder::default().v6(V6_NOBODY, V6_ALPHA),
        FrameBuilder {
            vlans: vec![9],
            ..Default::default()
        }
        .v6(V6_NOBODY, V6_BETA),
        FrameBuilder::default().v4(SRC4, [10, 200, 0, 1]),
        FrameBuilder::default().arp(),
        FrameBuilder {
            pppoe: Some(7),
            ..Default::default()
        }
        .v4(SRC4, [10, 1, 2, 3]),
        FrameBuilder {
            vlans: vec![5],
            pppoe: Some(8),
            ..Default::default()
        }
        .v6(V6_NOBODY, V6_BETA),
    ];
    let mut expected = [TenantCounters::default(); 3];
    for i in 0..n {
        let mut frame = mutate(&mut rng, &seeds[i % seeds.len()]);
        // The kernel refuses test_run input shorter than an Ethernet header.
        frame.resize(frame.len().max(14), 0);
        let (class, _) = reference_parse(&frame);
        let want = match class {
            RefClass::NonIp | RefClass::Malformed => XDP_PASS,
            RefClass::Ip { dst, len, .. } => match reference_lookup(&prefixes, dst) {
                None => XDP_DROP,
                Some(t) => {
                    let outcome = if t == 2 {
                        OUTCOME_DROPPED
                    } else {
                        OUTCOME_GREEN
                    };
                    expected[t].packets[TYPE_SILVER][outcome] += 1;
                    expected[t].bytes[TYPE_SILVER][outcome] += len;
                    if t == 2 { XDP_DROP } else { XDP_PASS }
                }
            },
        };
        let got = run(&mut dp, &frame);
        assert_eq!(got, want, "frame {i} ({class:?}): {frame:02x?}");
    }
    for (t, want) in expected.iter().enumerate() {
        assert_eq!(tenant(&dp, t as u32), *want, "counters of tenant {t}");
    }
    assert!(
        expected
            .iter()
            .all(|c| c.packets.iter().flatten().sum::<u64>() > 1000),
        "every tenant was exercised: {expected:?}"
    );
}

/// A seed frame with random damage: truncation, byte flips, random ethertypes, lengths and
/// addresses, or random bytes altogether.
fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut f = seed.to_vec();
    match rng.random_range(0..8) {
        0 => f.truncate(rng.random_range(0..=f.len())),
        1 => {
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..f.len());
                f[i] = rng.random();
            }
        }
        2 => {
            let i = rng.random_range(12..f.len().min(40));
            f[i] = rng.random();
        }
        3 => {
            // Lengths: IPv4 total length or IPv6 payload length, wherever the header is.
            let i = rng.random_range(14..f.len().min(40));
            let v: u16 = rng.random_range(0..2000);
            if i + 1 < f.len() {
                f[i..i + 2].copy_from_slice(&v.to_be_bytes());
            }
        }
        4 => {
            let len = rng.random_range(0..200);
            f = (0..len).map(|_| rng.random()).collect();
        }
        5 => {
            // Random destination address inside or near the configured prefixes.
            let nets: [[u8; 2]; 7] = [
                [10, 1],
                [10, 2],
                [10, 3],
                [192, 168],
                [10, 5],
                [10, 6],
                [10, 7],
            ];
            let net = nets[rng.random_range(0..nets.len())];
            if let Some(off) = ipv4_dst_offset(&f) {
                f[off..off + 4].copy_from_slice(&[
                    net[0],
                    net[1],
                    rng.random_range(0..4),
                    rng.random(),
                ]);
            }
        }
        6 => f.extend((0..rng.random_range(0..64)).map(|_| rng.random::<u8>())),
        _ => {}
    }
    f
}

fn ipv4_dst_offset(f: &[u8]) -> Option<usize> {
    match reference_parse(f).0 {
        RefClass::Ip {
            dst: IpAddr::V4(_), ..
        } => {
            let mut off = 14;
            while off + 2 <= f.len()
                && matches!(
                    u16::from_be_bytes([f[off - 2], f[off - 1]]),
                    0x8100 | 0x88a8
                )
            {
                off += 4;
            }
            (off + 20 <= f.len()).then_some(off + 16)
        }
        _ => None,
    }
}

/// The largest load-time size: 1,048,576 tenants, each with a /32, loaded and applied; packets
/// to the first and the last tenant are classified and counted.
#[test]
fn a_million_tenants_load_and_classify() {
    let Some(_root) = root_test("a_million_tenants_load_and_classify") else {
        return;
    };
    let n = shaper_common::MAX_TENANTS_LIMIT;
    let cfg = shaper::config::synthetic(
        n,
        Rate(100_000_000_000),
        Rate(100_000_000_000),
        Size(1_000_000),
    );
    cfg.validate()
        .expect("a million tenants are a valid config");
    let start = Instant::now();
    let mut dp = Datapath::load(n).expect("load with a million tenants");
    dp.apply(&cfg).expect("apply a million tenants");
    eprintln!("loaded and applied {n} tenants in {:?}", start.elapsed());
    for id in [0, n - 1] {
        let f = FrameBuilder {
            ip_len: 321,
            ..Default::default()
        }
        .v4(SRC4, (0x0a00_0000 | id).to_be_bytes());
        assert_eq!(run(&mut dp, &f), XDP_PASS);
        assert_eq!(tenant(&dp, id).bytes_of(OUTCOME_GREEN), 321, "tenant {id}");
    }
    let too_many = shaper::config::synthetic(
        n + 1,
        Rate(100_000_000_000),
        Rate(100_000_000_000),
        Size(1_000_000),
    );
    let err = dp.apply(&too_many).expect_err("more than the maximum");
    assert!(err.to_string().contains("--max-tenants"), "{err}");
}

/// A small ECN bucket for tenant `id`: 8 kbit/s, 10 kB, marking below half.
fn ecn_tenant(dp: &mut Datapath, id: u32) {
    let mut tc = tenant_config(8_000, 10_000);
    tc.flags |= shaper_common::TENANT_ECN;
    tc.mark_ns[TYPE_SILVER] = tc.types[TYPE_SILVER].burst_ns / 2;
    set_tenant(dp, id, tc);
}

/// ECN, IPv4: ECT(0) packets pass unmarked while more than half the bucket is left; below
/// that, a packet is marked CE each time the bucket crosses a level (half, a quarter, an
/// eighth) and every packet below the last, with the header checksum still right
/// (recomputed from scratch); packets are dropped only when the bucket is empty. Non-ECT
/// packets are never marked.
#[test]
fn ecn_marks_ipv4_before_the_bucket_is_empty() {
    let Some(_root) = root_test("ecn_marks_ipv4_before_the_bucket_is_empty") else {
        return;
    };
    let mut dp = load(&config("drop", "dst"));
    ecn_tenant(&mut dp, 2);
    let ect0 = FrameBuilder {
        ip_len: 1000,
        tos: (10 << 2) | 0b10,
        ..Default::default()
    }
    .v4(SRC4, [10, 3, 0, 1]);
    let mut verdicts = Vec::new();
    for k in 1..=12 {
        let (v, out) = run_out(&mut dp, &ect0);
        verdicts.push(v);
        if v == XDP_PASS {
            let h = &out[14..34];
            let marked = h[1] & 0x03 == 0x03;
            // 1000 bytes a packet out of 10,000: the k-th leaves 10,000 - 1000 k. Marked
            // once per level crossed: below 5000 (the 6th), 2500 (8th), 1250 (9th); every
            // packet below the last level (the 10th).
            assert_eq!(
                marked,
                [6, 8, 9, 10].contains(&k),
                "packet {k}: tos {:#04x}",
                h[1]
            );
            assert_eq!(h[1] >> 2, 10, "DSCP kept");
            let csum = u16::from_be_bytes([h[10], h[11]]);
            assert_eq!(
                csum,
                shaper_tests::ipv4_checksum(h),
                "packet {k}: checksum after marking"
            );
        }
    }
    assert_eq!(verdicts[..10], [XDP_PASS; 10], "{verdicts:?}");
    assert_eq!(verdicts[10..], [XDP_DROP; 2], "{verdicts:?}");
    let c = tenant(&dp, 2);
    assert_eq!(outcomes(&c), [6, 2, 4], "passed, dropped, marked");

    let mut dp = load(&config("drop", "dst"));
    ecn_tenant(&mut dp, 2);
    let not_ect = FrameBuilder {
        ip_len: 1000,
        tos: 10 << 2,
        ..Default::default()
    }
    .v4(SRC4, [10, 3, 0, 1]);
    for _ in 0..12 {
        let (v, out) = run_out(&mut dp, &not_ect);
        if v == XDP_PASS {
            assert_eq!(out[15], 10 << 2, "a non-ECT packet was modified");
        }
    }
    assert_eq!(
        outcomes(&tenant(&dp, 2)),
        [10, 2, 0],
        "non-ECT: never marked, dropped when empty"
    );

    // A tenant without ECN drops rather than marks, ECT or not.
    let mut dp = load(&config("drop", "dst"));
    set_tenant(&mut dp, 2, tenant_config(8_000, 10_000));
    for _ in 0..12 {
        let (_, out) = run_out(&mut dp, &ect0);
        assert_ne!(
            out.get(15).map(|t| t & 3),
            Some(3),
            "marked without ECN configured"
        );
    }
    assert_eq!(outcomes(&tenant(&dp, 2)), [10, 2, 0]);
}

/// ECN, IPv6: the ECN bits of the traffic class are set to CE (no checksum in IPv6).
#[test]
fn ecn_marks_ipv6_traffic_class() {
    let Some(_root) = root_test("ecn_marks_ipv6_traffic_class") else {
        return;
    };
    let mut dp = load(&config("drop", "dst"));
    ecn_tenant(&mut dp, 0);
    let ect1 = FrameBuilder {
        ip_len: 1000,
        tos: (46 << 2) | 0b01,
        ..Default::default()
    }
    .v6(V6_NOBODY, V6_ALPHA);
    let mut marked = 0;
    for _ in 0..10 {
        let (v, out) = run_out(&mut dp, &ect1);
        assert_eq!(v, XDP_PASS);
        let tc = ((out[14] & 0x0f) << 4) | (out[15] >> 4);
        assert_eq!(tc >> 2, 46, "DSCP kept");
        if tc & 3 == 3 {
            marked += 1;
        } else {
            assert_eq!(tc & 3, 1, "ECT(1) kept until marked");
        }
        assert_eq!(out[..14], ect1[..14], "Ethernet header untouched");
        assert_eq!(out[16..], ect1[16..], "nothing else changed");
    }
    assert_eq!(marked, 4, "one mark per level crossed, then every packet");
    assert_eq!(outcomes(&tenant(&dp, 0)), [6, 0, 4]);
}

/// A marking level re-arms once the bucket is back above it: after a refill, the next
/// crossing marks again.
#[test]
fn ecn_levels_rearm_when_the_bucket_refills() {
    let Some(_root) = root_test("ecn_levels_rearm_when_the_bucket_refills") else {
        return;
    };
    let mut dp = load(&config("drop", "dst"));
    // 800 kbit/s: 100 bytes a millisecond, a few per test run; 10,000 bytes deep.
    let mut tc = tenant_config(800_000, 10_000);
    tc.flags |= shaper_common::TENANT_ECN;
    tc.mark_ns[TYPE_SILVER] = tc.types[TYPE_SILVER].burst_ns / 2;
    set_tenant(&mut dp, 2, tc);
    let ect0 = FrameBuilder {
        ip_len: 1000,
        tos: 0b10,
        ..Default::default()
    }
    .v4(SRC4, [10, 3, 0, 1]);
    let marks = |dp: &mut Datapath| {
        (0..6)
            .map(|_| run_out(dp, &ect0).1[15] & 3 == 3)
            .collect::<Vec<bool>>()
    };
    let want = [false, false, false, false, false, true];
    assert_eq!(marks(&mut dp), want, "first crossing of the half level");
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(marks(&mut dp), want, "re-armed after the refill");
}

/// At the sizes where the agent reads counters in two halves on two threads (from 16,384
/// tenants) and bucket states from the map's memory, both give what one read per key gives:
/// every tenant's own values, the halves' seam included, none shifted or lost.
#[test]
fn split_and_mapped_reads_match_per_key_reads_at_scale() {
    let Some(_root) = root_test("split_and_mapped_reads_match_per_key_reads_at_scale") else {
        return;
    };
    const N: u32 = 40_001;
    let dp = Datapath::load(N).expect("load the XDP program");
    let writable = |name| {
        let info = match dp.map(name).expect("map") {
            aya::maps::Map::PerCpuArray(d) | aya::maps::Map::Array(d) => d.info().expect("info"),
            _ => panic!("{name} is an array"),
        };
        MapData::from_id(info.id()).expect("open by id")
    };
    let cpus = aya::util::nr_cpus().expect("cpus");
    let mut counters: PerCpuArray<MapData, TenantCounters> =
        PerCpuArray::try_from(aya::maps::Map::PerCpuArray(writable(TENANT_COUNTERS)))
            .expect("typed");
    let mut states: aya::maps::Array<MapData, shaper_common::TenantState> =
        aya::maps::Array::try_from(aya::maps::Map::Array(writable(
            shaper::datapath::TENANT_STATE,
        )))
        .expect("typed");
    // The first and last ids, both sides of the seam at N / 2, and chunk edges (4,096).
    let ids = [0, 1, 4095, 4096, N / 2 - 1, N / 2, N / 2 + 1, N - 2, N - 1];
    for &id in &ids {
        let values: Vec<TenantCounters> = (0..cpus)
            .map(|c| {
                let mut v = TenantCounters::default();
                v.packets[0][OUTCOME_GREEN] = u64::from(id) * 10 + c as u64 + 1;
                v.bytes[2][OUTCOME_DROPPED] = u64::from(id) + 7;
                v
            })
            .collect();
        counters
            .set(
                id,
                aya::maps::PerCpuValues::try_from(values).expect("values"),
                0,
            )
            .expect("write counters");
        let st = shaper_common::TenantState {
            deposited: u64::from(id) + 1,
            expired: u64::from(id) / 2,
            credit: 3,
            ..Default::default()
        };
        states.set(id, st, 0).expect("write state");
    }
    let map = dp.map(TENANT_COUNTERS).expect("map");
    let split = shaper::datapath::read_tenant_counters(map, N).expect("split read");
    let each = shaper::datapath::read_tenant_counters_each(map, N).expect("each");
    assert_eq!(split.len(), N as usize);
    assert!(split == each, "the split read differs from per-key reads");
    let cpus64 = cpus as u64;
    for &id in &ids {
        let c = &split[id as usize];
        let id64 = u64::from(id);
        assert_eq!(
            c.packets[0][OUTCOME_GREEN],
            id64 * 10 * cpus64 + cpus64 * (cpus64 + 1) / 2,
            "tenant {id}"
        );
        assert_eq!(
            c.bytes[2][OUTCOME_DROPPED],
            (id64 + 7) * cpus64,
            "tenant {id}"
        );
    }
    let touched = split
        .iter()
        .filter(|c| **c != TenantCounters::default())
        .count();
    assert_eq!(touched, ids.len());

    let smap = dp.map(shaper::datapath::TENANT_STATE).expect("map");
    let aya::maps::Map::Array(sdata) = smap else {
        panic!("TENANT_STATE is an array")
    };
    // The datapath made it mappable, so the read below is the memory path, not a fallback.
    assert_ne!(sdata.info().expect("info").map_flags() & (1 << 10), 0);
    let mapped = shaper::datapath::read_tenant_states(smap, N).expect("states");
    assert_eq!(mapped.len(), N as usize);
    for &id in &ids {
        let s = &mapped[id as usize];
        assert_eq!(
            (s.deposited, s.expired, s.credit),
            (u64::from(id) + 1, u64::from(id) / 2, 3)
        );
    }
    let arr: aya::maps::Array<&MapData, shaper_common::TenantState> =
        aya::maps::Array::try_from(smap).expect("typed");
    for id in (0..N).step_by(997).chain(ids) {
        assert_eq!(
            mapped[id as usize],
            arr.get(&id, 0).expect("read"),
            "tenant {id}"
        );
    }
}

/// The agent's batched reads (BPF_MAP_LOOKUP_BATCH) return what one lookup per key returns:
/// counters summed over CPUs, bucket states, and the flow table.
#[test]
fn batched_map_reads_match_per_key_reads() {
    let Some(_root) = root_test("batched_map_reads_match_per_key_reads") else {
        return;
    };
    let mut dp = load(&config("drop", "dst"));
    // Different counts per tenant, from many source ports (flows).
    for (dst, n) in [
        ([10, 1, 7, 7], 40u16),
        ([10, 2, 3, 4], 7),
        ([10, 3, 0, 1], 3),
    ] {
        for k in 0..n {
            let f = FrameBuilder {
                sport: 1000 + k,
                ..Default::default()
            }
            .v4(SRC4, dst);
            run(&mut dp, &f);
        }
    }
    let counters = dp.map(TENANT_COUNTERS).expect("map");
    // The batch path itself answers (no silent fallback to per-key reads).
    let aya::maps::Map::PerCpuArray(data) = counters else {
        panic!("TENANT_COUNTERS is a per-CPU array")
    };
    let cpus = aya::util::nr_cpus().expect("cpus");
    let raw = shaper::datapath::batch::lookup_array::<TenantCounters>(data, 3, Some(cpus))
        .expect("batch lookup")
        .expect("this kernel does batched lookups");
    assert_eq!(raw.len(), 3);
    assert_eq!(raw[0].len(), cpus);
    let batched = shaper::datapath::read_tenant_counters(counters, 3).expect("batched");
    let each = shaper::datapath::read_tenant_counters_each(counters, 3).expect("each");
    assert_eq!(batched, each);
    let total = |c: &TenantCounters| c.packets.iter().flatten().sum::<u64>();
    assert_eq!(batched.iter().map(total).collect::<Vec<_>>(), [40, 7, 3]);
    // More ids than tenants: the array's unused entries read as zero, both ways.
    assert_eq!(
        shaper::datapath::read_tenant_counters(counters, 64).expect("batched"),
        shaper::datapath::read_tenant_counters_each(counters, 64).expect("each")
    );
    let states = dp.map(shaper::datapath::TENANT_STATE).expect("map");
    let s = shaper::datapath::read_tenant_states(states, 3).expect("states");
    let arr: aya::maps::Array<&MapData, shaper_common::TenantState> =
        aya::maps::Array::try_from(states).expect("typed");
    for (id, st) in s.iter().enumerate() {
        let one = arr.get(&(id as u32), 0).expect("read");
        assert_eq!(format!("{st:?}"), format!("{one:?}"));
    }
    let flows = dp.map(shaper::datapath::FLOWS).expect("map");
    let aya::maps::Map::LruHashMap(fdata) = flows else {
        panic!("FLOWS is an LRU hash")
    };
    assert!(
        shaper::datapath::batch::lookup_hash::<shaper_common::FlowKey, shaper_common::FlowStats>(
            fdata
        )
        .expect("batch lookup")
        .is_some()
    );
    let mut batched = shaper::datapath::read_flows(flows).expect("flows");
    let m: aya::maps::HashMap<&MapData, shaper_common::FlowKey, shaper_common::FlowStats> =
        aya::maps::HashMap::try_from(flows).expect("typed");
    let mut each: Vec<_> = m.iter().filter_map(Result::ok).collect();
    let key = |e: &(shaper_common::FlowKey, shaper_common::FlowStats)| format!("{:?}", e.0);
    batched.sort_by_key(key);
    each.sort_by_key(key);
    assert!(!each.is_empty(), "sampled flows exist");
    assert_eq!(format!("{batched:?}"), format!("{each:?}"));
}

/// A config with more prefixes of a family than its maps hold is refused before anything is
/// written: the config in force stays whole, and none of the refused config's tenants goes
/// live (a map found full halfway through the writes would leave part of it applied).
#[test]
fn oversized_reload_is_refused_before_any_write() {
    let Some(_root) = root_test("oversized_reload_is_refused_before_any_write") else {
        return;
    };
    // Four tenant slots: eight IPv4 prefix slots.
    let mut dp = Datapath::load(4).expect("load the XDP program");
    let small = Config::parse(
        r#"{ "link": { "capacity": "1gbit" }, "tenants": [
            { "name": "a", "tier": "gold", "prefixes": ["10.1.0.0/24"], "rate": "10mbit", "burst": "64kb" } ] }"#,
    )
    .expect("valid");
    dp.apply(&small).expect("the small config fits");
    let before = dp.tenant(0).expect("a");
    let prefixes: Vec<String> = (0..9).map(|k| format!("\"10.2.{k}.0/24\"")).collect();
    let big = Config::parse(&format!(
        r#"{{ "link": {{ "capacity": "1gbit" }}, "tenants": [
            {{ "name": "a", "tier": "gold", "prefixes": ["10.1.0.0/24"], "rate": "20mbit", "burst": "64kb" }},
            {{ "name": "b", "tier": "gold", "prefixes": [{}], "rate": "10mbit", "burst": "64kb" }} ] }}"#,
        prefixes.join(",")
    ))
    .expect("valid");
    let err = dp
        .apply(&big)
        .expect_err("nine IPv4 prefixes in eight slots");
    assert!(
        err.to_string().contains("10 IPv4 prefixes") && err.to_string().contains("--max-tenants 5"),
        "{err}"
    );
    assert_eq!(
        dp.tenant(0).expect("a"),
        before,
        "the config in force is untouched"
    );
    assert_eq!(
        dp.tenant(1).expect("slot 1").flags & shaper_common::TENANT_ACTIVE,
        0,
        "b never went live"
    );
}

/// `BPF_MAP_FREEZE`: the map refuses every write from userspace from now on (the kernel's own
/// way to make a write fail, for a reload that fails part way).
fn freeze(map: &aya::maps::Map) {
    use std::os::fd::{AsFd, AsRawFd};
    let aya::maps::Map::Array(data) = map else {
        panic!("an array map");
    };
    // union bpf_attr for BPF_MAP_FREEZE: the map's fd, the rest zero.
    let mut attr = [0u32; 32];
    attr[0] = data.fd().as_fd().as_raw_fd() as u32;
    const BPF_MAP_FREEZE: libc::c_long = 22;
    // SAFETY: attr outlives the call and is as large as the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_FREEZE,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    assert_eq!(rc, 0, "freeze: {}", std::io::Error::last_os_error());
}

/// A reload whose writes fail part way (here the flip of the global config: tenants and
/// prefixes were written already) is undone: every tenant's live config, the prefixes and the
/// global config are as before, the new tenant is not live and its address is unmatched.
#[test]
fn a_reload_that_fails_part_way_is_undone() {
    let Some(_root) = root_test("a_reload_that_fails_part_way_is_undone") else {
        return;
    };
    let path = std::env::temp_dir().join(format!("shaper-undo-{}.json", std::process::id()));
    let before_cfg = config("drop", "dst");
    let table = shaper::datapath::tenant_table(&before_cfg, &[]);
    let mut dp = load(&before_cfg);
    // Each rate change is an epoch of its own (a rescale in each direction): the parameters
    // must be back, the epoch counts on.
    let live = |dp: &Datapath| -> Vec<_> {
        (0..4)
            .map(|id| TenantConfig {
                epoch: 0,
                prev: Default::default(),
                ..dp.tenant(id).expect("read")
            })
            .collect()
    };
    let before = live(&dp);
    let global = shaper::datapath::live_global(
        dp.map(GLOBAL_CONFIG).expect("map"),
        dp.map(CONFIG_SLOT).expect("map"),
    )
    .expect("global");
    // Alpha's rate changes, delta comes with a prefix of its own, unmatched traffic now passes.
    let mut v = serde_json::to_value(&before_cfg).expect("json");
    v["link"]["unmatched"] = serde_json::json!("pass");
    v["tenants"][0]["rate"] = serde_json::json!("50mbit");
    v["tenants"]
        .as_array_mut()
        .expect("tenants")
        .push(serde_json::json!({ "name": "delta", "tier": "gold",
            "prefixes": ["10.4.0.0/24"], "rate": "10mbit", "burst": "64kb" }));
    std::fs::write(&path, v.to_string()).expect("write the new config");
    freeze(dp.map(CONFIG_SLOT).expect("map"));

    let result = shaper::agent::reload(&mut dp, &path, (&before_cfg, &table), None);
    let _ = std::fs::remove_file(&path);
    let err = result.expect_err("the flip cannot be written");
    assert!(
        matches!(err, shaper::agent::AgentError::ReloadRolledBack(_)),
        "{err}"
    );
    assert_eq!(live(&dp), before, "every tenant's live config as before");
    assert_eq!(
        shaper::datapath::live_global(
            dp.map(GLOBAL_CONFIG).expect("map"),
            dp.map(CONFIG_SLOT).expect("map"),
        )
        .expect("global"),
        global
    );
    // Delta's address is nobody's: dropped as unmatched, as the config in force says.
    let frame = FrameBuilder::default().v4(SRC4, [10, 4, 0, 1]);
    assert_eq!(run(&mut dp, &frame), XDP_DROP);
    assert_eq!(class(&dp, CLASS_UNMATCHED_DROPPED).packets, 1);
}

/// A reload that changes one tenant's rate and a global setting but no prefix is written in
/// place (one pass by index, only that tenant encoded, the plan in force): the tenant's live
/// entry is the new config's, the others' are untouched, the global config is the new one.
/// Then a reload that moves a prefix takes the general diff: the old address is nobody's, the
/// new one is charged to its tenant.
#[test]
fn a_reload_of_rates_is_written_in_place_and_one_of_prefixes_by_the_diff() {
    let Some(_root) =
        root_test("a_reload_of_rates_is_written_in_place_and_one_of_prefixes_by_the_diff")
    else {
        return;
    };
    let before = config("drop", "dst");
    let table = shaper::datapath::tenant_table(&before, &[]);
    let id = |name: &str| table.iter().find(|t| &*t.name == name).expect("tenant").id;
    let mut dp = load(&before);
    // Epochs and the previous parameters move with every rate write: compared without them.
    let entry = |dp: &Datapath, id: u32| TenantConfig {
        epoch: 0,
        prev: Default::default(),
        ..dp.tenant(id).expect("read")
    };
    let untouched: Vec<TenantConfig> = ["beta", "gamma"]
        .iter()
        .map(|n| entry(&dp, id(n)))
        .collect();
    let mut rates = before.clone();
    rates.tenants[0].rate = Rate(50_000_000);
    rates.link.unmatched = shaper::config::Unmatched::Pass;
    dp.apply_changes(&rates, &table, (&before, &table))
        .expect("reload");
    let want = TenantConfig {
        epoch: 0,
        prev: Default::default(),
        ..shaper::datapath::tenant_params(&rates.tenants[0], &rates)
    };
    assert_eq!(entry(&dp, id("alpha")), want);
    let now: Vec<TenantConfig> = ["beta", "gamma"]
        .iter()
        .map(|n| entry(&dp, id(n)))
        .collect();
    assert_eq!(now, untouched);
    let global = shaper::datapath::live_global(
        dp.map(GLOBAL_CONFIG).expect("map"),
        dp.map(CONFIG_SLOT).expect("map"),
    )
    .expect("global");
    assert_eq!(
        global,
        shaper_common::GlobalConfig {
            slot: global.slot,
            ..shaper::datapath::global_config(&rates)
        }
    );
    let unmatched = FrameBuilder::default().v4(SRC4, [10, 5, 0, 1]);
    assert_eq!(
        run(&mut dp, &unmatched),
        XDP_PASS,
        "unmatched traffic passes now"
    );
    // gamma moves from 10.3.0.0/24 to 10.5.0.0/24.
    let mut moved = rates.clone();
    moved.tenants[2].prefixes = vec!["10.5.0.0/24".into()];
    dp.apply_changes(&moved, &table, (&rates, &table))
        .expect("reload");
    let before_gamma = tenant(&dp, id("gamma")).packets_of(OUTCOME_GREEN)
        + tenant(&dp, id("gamma")).packets_of(OUTCOME_DROPPED);
    run(&mut dp, &unmatched);
    let after_gamma = tenant(&dp, id("gamma")).packets_of(OUTCOME_GREEN)
        + tenant(&dp, id("gamma")).packets_of(OUTCOME_DROPPED);
    assert_eq!(after_gamma, before_gamma + 1, "10.5.0.1 is gamma's now");
    let unmatched_before = class(&dp, CLASS_UNMATCHED_PASSED).packets;
    run(&mut dp, &FrameBuilder::default().v4(SRC4, [10, 3, 0, 1]));
    assert_eq!(
        class(&dp, CLASS_UNMATCHED_PASSED).packets,
        unmatched_before + 1,
        "10.3.0.1 is nobody's now"
    );
}

/// `dp`, loaded with `first`, reloaded to `other` and back `rounds` times in all on this
/// thread while another drives `frame` through its program; returns how many frames ran.
fn frames_during_reloads(
    dp: &mut Datapath,
    frame: &[u8],
    rounds: usize,
    (first, other): (&Config, &Config),
) -> u64 {
    use std::sync::atomic::{AtomicBool, Ordering};
    let table = shaper::datapath::tenant_table(first, &[]);
    let prog = dp_program(dp)
        .fd()
        .expect("program fd")
        .try_clone()
        .expect("dup the program fd");
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let runner = s.spawn(|| {
            let mut n = 0u64;
            // Bounded: the reloads end it, or ten seconds do.
            let start = Instant::now();
            while !done.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(10) {
                use std::os::fd::AsFd as _;
                assert_eq!(shaper_tests::run_fd(prog.as_fd(), frame), XDP_PASS);
                n += 1;
            }
            n
        });
        for i in 0..rounds {
            let (to, from) = if i % 2 == 0 {
                (other, first)
            } else {
                (first, other)
            };
            dp.apply_changes(to, &table, (from, &table))
                .expect("reload");
        }
        done.store(true, Ordering::Relaxed);
        runner.join().expect("runner")
    })
}

/// Moving a family between hash probes and the LPM trie (a fifth prefix length, then back)
/// while a staying tenant's frames run: the new entries go in, the plan flips, then stale
/// entries go; no frame is ever unmatched.
#[test]
fn lookup_switch_never_leaves_a_tenant_unmatched() {
    let Some(_root) = root_test("lookup_switch_never_leaves_a_tenant_unmatched") else {
        return;
    };
    let hashed = config("pass", "dst");
    let trie = config_with("pass", "dst", r#", "10.200.0.0/20", "10.201.0.0/22""#);
    assert!(matches!(lookup_plan(&hashed).0, Lookup::Hash(_)));
    assert!(matches!(lookup_plan(&trie).0, Lookup::Lpm));
    let mut dp = load(&hashed);
    // beta's /32 stays in every config.
    let f = FrameBuilder::default().v4(SRC4, [10, 2, 3, 4]);
    let ran = frames_during_reloads(&mut dp, &f, 100, (&hashed, &trie));
    assert!(
        ran > 100,
        "the runner kept up with the reloads ({ran} frames)"
    );
    assert_eq!(
        class(&dp, CLASS_UNMATCHED_PASSED).packets,
        0,
        "no frame of a staying tenant unmatched in {ran}"
    );
    assert_eq!(tenant(&dp, 1).packets_of(OUTCOME_GREEN), ran);
}

/// A reload from four token-type rules to none, and back, while default traffic runs: the
/// rules and the global config that counts them flip as one, so default traffic never takes
/// an emptied rule's type (gold).
#[test]
fn rules_and_global_config_flip_together() {
    let Some(_root) = root_test("rules_and_global_config_flip_together") else {
        return;
    };
    let with_rules = |rules: &str| {
        Config::parse(&format!(
            r#"{{ "link": {{ "capacity": "100gbit" }},
            "token_types": {{ {rules} "default": "bronze", "fallback": false }},
            "tenants": [ {{ "name": "a", "tier": "gold", "prefixes": ["10.1.0.0/16"],
                "rate": "100gbit", "burst": "1000mb" }} ] }}"#
        ))
        .expect("valid")
    };
    let four = with_rules(
        r#""gold": { "match": [ { "dscp": [46] }, { "proto": "udp", "dport": [53] } ] },
           "silver": { "match": [ { "dscp": [26] }, { "proto": "tcp", "dport": [443] } ] },"#,
    );
    let none = with_rules("");
    assert!(shaper::datapath::token_rules(&four).rules[3].flags != 0);
    let mut dp = load(&four);
    // DSCP 0, UDP to port 9: no rule matches it.
    let f = FrameBuilder::default().v4(SRC4, [10, 1, 0, 1]);
    let ran = frames_during_reloads(&mut dp, &f, 200, (&four, &none));
    let c = tenant(&dp, 0);
    let of = |ty: usize| c.packets[ty].iter().sum::<u64>();
    assert!(
        ran > 100,
        "the runner kept up with the reloads ({ran} frames)"
    );
    assert_eq!(of(shaper_common::TYPE_GOLD), 0, "default traffic took gold");
    assert_eq!(
        of(shaper_common::TYPE_SILVER),
        0,
        "default traffic took silver"
    );
    assert_eq!(of(shaper_common::TYPE_BRONZE), ran);
}

/// A tenant written twice in a row (an exchange right after a cycle's write): the second
/// write goes to the slot the first one left, which a packet may still hold, so it waits out
/// the grace; other tenants are not held up by it.
#[test]
fn a_tenant_is_not_rewritten_within_the_flip_grace() {
    let Some(_root) = root_test("a_tenant_is_not_rewritten_within_the_flip_grace") else {
        return;
    };
    let mut dp = load(&config("pass", "dst"));
    let a = tenant_config(10_000_000, 64_000);
    let b = tenant_config(20_000_000, 64_000);
    let start = Instant::now();
    dp.write_tenant(0, &a).expect("first");
    dp.write_tenant(0, &b).expect("second");
    assert!(
        start.elapsed() >= shaper::datapath::FLIP_GRACE,
        "rewrote tenant 0's slot after {:?}",
        start.elapsed()
    );
    assert_eq!(dp.tenant(0).expect("live").rate_bytes, b.rate_bytes);
}

/// Four threads hammer one tenant while its rate flips between 200 Mbit/s and 2 Gbit/s every
/// 10 ms. After a raise, packets pass again within 2 ms (a bucket word left in the old scale
/// would read as ten times the debt: ~9 ms of drops); after a cut, what passes is what the
/// new rate refills, not a new depth's worth of tokens the saturated bucket never held.
/// Each run is stamped when it starts and when it ends, each flip before and after its
/// write: a segment counts only runs wholly between one flip's write and the next's, so a
/// write the scheduler stretches (a packet passed at the next rate while the syscall was in
/// flight) is not counted against the rate before it.
#[test]
fn rate_flips_under_load_neither_stall_nor_mint() {
    let Some(_root) = root_test("rate_flips_under_load_neither_stall_nor_mint") else {
        return;
    };
    use std::os::fd::AsFd as _;
    use std::sync::atomic::{AtomicBool, Ordering};
    let (lo_bits, hi_bits, depth) = (200_000_000u64, 2_000_000_000u64, 256_000u64);
    let (lo, hi) = (tenant_config(lo_bits, depth), tenant_config(hi_bits, depth));
    let mut dp = load(&config("drop", "dst"));
    set_tenant(&mut dp, 2, lo);
    let len = 1000usize;
    let f = FrameBuilder {
        ip_len: len,
        ..Default::default()
    }
    .v4(SRC4, [10, 3, 0, 1]);
    let prog = dp_program(&dp)
        .fd()
        .expect("program fd")
        .try_clone()
        .expect("dup");
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let done = AtomicBool::new(false);
    // (before the write, after it, raise)
    let mut flips: Vec<(Instant, Instant, bool)> = Vec::new();
    // (run started, run ended, passed)
    type Run = (Instant, Instant, bool);
    let runs: Vec<Vec<Run>> = std::thread::scope(|s| {
        let runners: Vec<_> = (0..4)
            .map(|i| {
                let (prog, f, done) = (&prog, &f, &done);
                s.spawn(move || {
                    shaper::lab::traffic::pin_to_cpu(i % cpus);
                    let mut v = Vec::with_capacity(1 << 20);
                    let start = Instant::now();
                    while !done.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(5)
                    {
                        let began = Instant::now();
                        let verdict = shaper_tests::run_fd(prog.as_fd(), f);
                        v.push((began, Instant::now(), verdict == XDP_PASS));
                    }
                    v
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        for i in 0..40 {
            let raise = i % 2 == 0;
            let before = Instant::now();
            dp.write_tenant(2, if raise { &hi } else { &lo })
                .expect("flip");
            flips.push((before, Instant::now(), raise));
            std::thread::sleep(Duration::from_millis(10));
        }
        done.store(true, Ordering::Relaxed);
        runners
            .into_iter()
            .map(|r| r.join().expect("runner"))
            .collect()
    });
    let mut all: Vec<Run> = runs.into_iter().flatten().collect();
    all.sort_by_key(|r| r.0);
    let grace = Duration::from_millis(2);
    let mut saturated = 0;
    for (k, &(_, t, raise)) in flips.iter().enumerate() {
        let end = flips
            .get(k + 1)
            .map_or(all.last().expect("frames").1, |f| f.0);
        let seg: Vec<&Run> = all.iter().filter(|r| r.0 > t && r.1 <= end).collect();
        if raise {
            // Drops later than the grace and before the first pass: the stall.
            let first_pass = seg.iter().find(|r| r.2).map_or(end, |r| r.0);
            let stalled = seg
                .iter()
                .filter(|r| !r.2 && r.0 > t + grace && r.0 < first_pass)
                .count();
            assert_eq!(
                stalled,
                0,
                "raise {k}: first pass {:?} after it, {stalled} drops past 2 ms before it",
                first_pass.duration_since(t)
            );
            if seg.iter().any(|r| !r.2) {
                saturated += 1;
            }
        } else {
            // The cut came after a saturated 2 Gbit/s segment (drops seen): its bucket was
            // empty, so what passes is the refill at the new rate, plus a packet per CPU.
            let prev_dropped = all
                .iter()
                .any(|r| r.0 > flips[k - 1].1 && r.1 <= flips[k].0 && !r.2);
            if !prev_dropped {
                continue;
            }
            let passed = seg.iter().filter(|r| r.2).count() as f64 * len as f64;
            let refill = lo_bits as f64 / 8.0 * end.duration_since(t).as_secs_f64();
            let bound = refill + depth as f64 / 4.0 + (cpus * len) as f64;
            assert!(
                passed <= bound,
                "cut {k}: {passed} bytes passed in {:?}, refill {refill:.0} (bound {bound:.0}): tokens minted",
                end.duration_since(t)
            );
        }
    }
    assert!(
        saturated >= 10,
        "the runners must offer more than 2 Gbit/s for the test to mean anything ({saturated} of 20 raises saw drops)"
    );
}

/// Writes `tc` over tenant `id`'s live slot as is (epoch and `prev` untouched): what a packet
/// holding a slot the agent has since replaced, or an agent that raced a packet, would leave.
fn overwrite_live(dp: &mut Datapath, id: u32, tc: &TenantConfig) {
    let slot = {
        let m = aya::maps::Array::<&MapData, u32>::try_from(
            dp.map(shaper::datapath::TENANT_SLOT).expect("map"),
        )
        .expect("typed");
        m.get(&id, 0).expect("slot") & 1
    };
    let mut m = aya::maps::Array::<&mut MapData, TenantConfig>::try_from(
        dp.map_raw_mut(shaper::datapath::TENANT_CONFIG)
            .expect("map"),
    )
    .expect("typed");
    m.set(2 * id + slot, *tc, 0).expect("write");
}

/// A rescale converts from the parameters the datapath really applied, not from the `prev`
/// a config claims (an agent that read the state just before a packet applied an epoch
/// writes the wrong one); and a config of an older epoch (a CPU still holding a replaced
/// slot) never converts the words back.
#[test]
fn rescale_uses_what_was_applied_and_never_goes_back() {
    let Some(_root) = root_test("rescale_uses_what_was_applied_and_never_goes_back") else {
        return;
    };
    let (mut dp, f) = gamma_drained();
    let a = dp.tenant(2).expect("a");
    // Ten times the rate, same depth: the empty bucket stays empty once a packet applies it.
    dp.write_tenant(2, &tenant_config(80_000, 10_000))
        .expect("b");
    assert_eq!(run(&mut dp, &f), XDP_DROP, "b applied, still empty");
    let b = dp.tenant(2).expect("b");
    assert!(b.epoch > a.epoch);
    // The next config claims the words are still in a's parameters (wrong: b is applied).
    let mut c = tenant_config(800_000, 10_000);
    c.epoch = b.epoch + 1;
    c.prev = a.prev;
    c.prev[shaper_common::TYPE_SILVER] = a.types[shaper_common::TYPE_SILVER];
    overwrite_live(&mut dp, 2, &c);
    // Converting b's debt (1 s at 80 kbit/s) as if in a's scale would find 9 kB of tokens.
    let passed = (0..10).filter(|_| run(&mut dp, &f) == XDP_PASS).count();
    assert!(
        passed <= 1,
        "{passed} packets passed: tokens minted from a stale prev"
    );
    // A stale config of an older epoch live again (as a CPU holding the old slot sees it):
    // the state keeps c's epoch and scale.
    let applied = dp.tenant_state(2).expect("state").epoch;
    overwrite_live(&mut dp, 2, &a);
    let _ = run(&mut dp, &f);
    assert_eq!(
        dp.tenant_state(2).expect("state").epoch,
        applied,
        "an older epoch moved the bucket words back"
    );
}

/// The unparsed-frame policy, for a bridge that would forward what the shaper cannot charge:
/// under `drop`, a flood of malformed, MPLS, PPPoE control and triple-tagged frames is dropped while ARP and a
/// tenant's IP traffic pass; under `police`, the flood passes at the policed rate at most.
#[test]
fn unparsed_frames_follow_the_policy() {
    let Some(_root) = root_test("unparsed_frames_follow_the_policy") else {
        return;
    };
    let with = |policy: &str| {
        let mut cfg = config("pass", "dst");
        let mut v = serde_json::to_value(&cfg).expect("json");
        v["link"]["unparsed"] = serde_json::json!(policy);
        if policy == "police" {
            v["link"]["unparsed_rate"] = serde_json::json!("8mbit");
        }
        cfg = Config::parse(&v.to_string()).expect("valid");
        cfg
    };
    let truncated = {
        let mut f = FrameBuilder::default().v4(SRC4, [10, 1, 0, 1]);
        f.truncate(30);
        f
    };
    let mpls = {
        let mut f = FrameBuilder::default().v4(SRC4, [10, 1, 0, 1]);
        f[12..14].copy_from_slice(&0x8847u16.to_be_bytes());
        f
    };
    // A PPPoE session's control traffic (LCP) carries no tenant's IP packet.
    let pppoe = FrameBuilder {
        pppoe: Some(1),
        ..Default::default()
    }
    .arp();
    let three_tags = FrameBuilder {
        vlans: vec![1, 2, 3],
        ..Default::default()
    }
    .v4(SRC4, [10, 1, 0, 1]);
    let flood = [&truncated, &mpls, &pppoe, &three_tags];
    let arp = FrameBuilder::default().arp();
    let ip = FrameBuilder::default().v4(SRC4, [10, 1, 0, 1]);

    let mut dp = load(&with("pass"));
    for f in flood {
        assert_eq!(run(&mut dp, f), XDP_PASS, "pass is the default");
    }

    let mut dp = load(&with("drop"));
    for _ in 0..100 {
        for f in flood {
            assert_eq!(run(&mut dp, f), XDP_DROP);
        }
    }
    assert_eq!(run(&mut dp, &arp), XDP_PASS, "ARP always passes");
    assert_eq!(
        run(&mut dp, &ip),
        XDP_PASS,
        "a tenant's IP traffic is shaped as ever"
    );
    assert_eq!(
        class(&dp, shaper_common::CLASS_UNPARSED_DROPPED).packets,
        400
    );

    // 8 Mbit/s = 1 MB/s, 100 ms deep: a 1000-byte flood for ~200 ms passes at most
    // ~100 kB of depth plus ~200 kB of refill, never the flood.
    let mut dp = load(&with("police"));
    let big = {
        let mut f = FrameBuilder {
            ip_len: 1000,
            ..Default::default()
        }
        .v4(SRC4, [10, 1, 0, 1]);
        f[12..14].copy_from_slice(&0x8847u16.to_be_bytes());
        f
    };
    let start = Instant::now();
    let mut offered = 0usize;
    while start.elapsed() < Duration::from_millis(200) {
        run(&mut dp, &big);
        offered += big.len();
    }
    let secs = start.elapsed().as_secs_f64();
    let passed = offered as u64 - class(&dp, shaper_common::CLASS_UNPARSED_DROPPED).bytes;
    let bound = 100_000.0 + 1_000_000.0 * secs + 2.0 * big.len() as f64;
    assert!(
        offered as f64 > 2.0 * bound,
        "the flood ({offered} bytes) must exceed the policed rate"
    );
    assert!(
        (passed as f64) <= bound,
        "{passed} bytes of unparsed frames passed, bound {bound:.0}"
    );
    assert!(
        passed > 50_000,
        "the policed rate lets some through ({passed})"
    );
}
