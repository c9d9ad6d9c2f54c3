//! In-kernel tests of the tiered datapath through `BPF_PROG_TEST_RUN`: token types from the
//! rules, the spending order (pre-allocated pool, the type's bucket, fallback to lower types,
//! borrowing under the ceiling, the emergency pool), drop precedence between tiers, and the
//! deposit accounting. Buckets run at 8 kbit/s (1000 bytes a second), so the microseconds a
//! test takes refill nothing that matters and every verdict is exact.
//!
//! The config gives every tenant a share of every bucket, full: a test that rewrites a
//! tenant's parameters keeps its tokens (capped at the new depth), as any rate change does.
use std::time::Duration;

use shaper::config::Config;
use shaper::datapath::{Datapath, bucket, global_config};
use shaper_common::{
    GLOBAL_BORROW, GLOBAL_FALLBACK, GLOBAL_YIELD, GlobalConfig, GlobalState, OUTCOME_BORROWED,
    OUTCOME_DROPPED, OUTCOME_EMERGENCY, OUTCOME_GREEN, OUTCOME_PRE, TENANT_ACTIVE, TENANT_BORROW,
    TENANT_EMERGENCY, TYPE_BRONZE, TYPE_GOLD, TYPE_SILVER, TenantConfig,
};
use shaper_tests::{FrameBuilder, root_test, run, tenant};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
/// 8 kbit/s: one byte costs 1 ms.
const SLOW: u64 = 8_000;
const SRC4: [u8; 4] = [172, 16, 0, 9];
const T0: [u8; 4] = [10, 1, 0, 1];
const T1: [u8; 4] = [10, 2, 0, 1];
const T0_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5,
];
const SRC6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
];

fn config() -> Config {
    Config::parse(
        r#"{
        "link": { "capacity": "400gbit", "unmatched": "drop" },
        "token_types": {
            "gold": { "match": [ { "dscp": [46] }, { "proto": "udp", "dport": [53, 5353] } ] },
            "bronze": { "match": [ { "proto": "tcp", "sport": [873] } ] },
            "default": "silver",
            "fallback": true
        },
        "policy": { "drop_precedence": false },
        "tenants": [
            { "name": "t0", "tier": "gold", "prefixes": ["10.1.0.0/16", "2001:db8:a::/48"], "rate": "100gbit", "burst": "1000mb", "ceil": "200gbit", "mix": { "gold": 0.4, "silver": 0.3, "bronze": 0.3 } },
            { "name": "t1", "tier": "silver", "prefixes": ["10.2.0.0/16"], "rate": "100gbit", "burst": "1000mb", "ceil": "200gbit", "mix": { "gold": 0.4, "silver": 0.3, "bronze": 0.3 } }
        ]
    }"#,
    )
    .expect("test config is valid")
}

fn load() -> (Datapath, GlobalConfig) {
    let cfg = config();
    let mut dp = Datapath::load(8).expect("load the XDP program");
    dp.apply(&cfg).expect("write the config");
    (dp, global_config(&cfg))
}

/// A GCRA word that says "full": its theoretical arrival time is not in the future.
fn full(tat: u64) -> bool {
    tat <= shaper::datapath::monotonic_ns()
}

/// A tenant whose types hold `bytes[k]` each (0: no share), at 8 kbit/s.
fn slow_tenant(bytes: [u64; 3], flags: u32, tier: u32) -> TenantConfig {
    let mut tc = TenantConfig {
        flags: TENANT_ACTIVE | flags,
        tier,
        ..TenantConfig::default()
    };
    for (k, b) in bytes.into_iter().enumerate() {
        if b > 0 {
            tc.types[k] = bucket(SLOW, b);
        }
    }
    tc
}

/// A 1000-byte IPv4 packet to `dst` with the given DSCP.
fn packet(dst: [u8; 4], dscp: u8) -> Vec<u8> {
    FrameBuilder {
        ip_len: 1000,
        tos: dscp << 2,
        ..Default::default()
    }
    .v4(SRC4, dst)
}

/// The link bucket at 8 kbit/s, `depth` bytes deep, each tier priority allowed to fill it to
/// `tiers[p]` bytes with borrowed packets.
fn slow_link(g: &mut GlobalConfig, depth: u64, tiers: [u64; 4]) {
    let link = bucket(SLOW, depth);
    g.link_cost_fp = link.cost_fp;
    g.link_max_ns = link.burst_ns;
    // Every packet's charge reaches the shared words at once.
    g.link_fold_bytes = 0;
    for (d, b) in g.borrow_depth_ns.iter_mut().zip(tiers) {
        *d = bucket(SLOW, b).burst_ns;
    }
}

#[test]
fn token_types_come_from_dscp_protocol_and_ports_in_ipv4_and_ipv6() {
    let Some(_root) = root_test("token_types_come_from_dscp_protocol_and_ports_in_ipv4_and_ipv6")
    else {
        return;
    };
    let (mut dp, _) = load();
    // Every type has tokens to spare, so each packet is green in its own type.
    let mut tc = slow_tenant([0; 3], 0, 3);
    tc.types = [bucket(100_000_000_000, 1_000_000_000); 3];
    dp.write_tenant(0, &tc).expect("write");
    let udp = |dport: u16| FrameBuilder {
        dport,
        ..Default::default()
    };
    let tcp = |sport: u16, dport: u16| FrameBuilder {
        proto: 6,
        sport,
        dport,
        ..Default::default()
    };
    let mut later_fragment = udp(53).v4(SRC4, T0);
    later_fragment[14 + 6] = 0x00;
    later_fragment[14 + 7] = 0x10; // offset 16 x 8 bytes: no UDP header here
    let cases: Vec<(&str, Vec<u8>, usize)> = vec![
        (
            "dscp 46",
            FrameBuilder {
                tos: 46 << 2,
                ..Default::default()
            }
            .v4(SRC4, T0),
            TYPE_GOLD,
        ),
        ("udp dport 53", udp(53).v4(SRC4, T0), TYPE_GOLD),
        (
            "udp dport 5353 (second port)",
            udp(5353).v4(SRC4, T0),
            TYPE_GOLD,
        ),
        ("udp dport 54", udp(54).v4(SRC4, T0), TYPE_SILVER),
        ("tcp sport 873", tcp(873, 40_000).v4(SRC4, T0), TYPE_BRONZE),
        (
            "tcp dport 873 (rule is on sport)",
            tcp(40_000, 873).v4(SRC4, T0),
            TYPE_SILVER,
        ),
        (
            "tcp dport 53 (rule is udp)",
            tcp(40_000, 53).v4(SRC4, T0),
            TYPE_SILVER,
        ),
        (
            "icmp",
            FrameBuilder {
                proto: 1,
                ..Default::default()
            }
            .v4(SRC4, T0),
            TYPE_SILVER,
        ),
        (
            "IPv4 options before udp 53",
            FrameBuilder {
                options: 12,
                dport: 53,
                ..Default::default()
            }
            .v4(SRC4, T0),
            TYPE_GOLD,
        ),
        ("later fragment of udp 53", later_fragment, TYPE_SILVER),
        (
            "IPv6 traffic class dscp 46",
            FrameBuilder {
                tos: 46 << 2,
                ..Default::default()
            }
            .v6(SRC6, T0_V6),
            TYPE_GOLD,
        ),
        ("IPv6 udp 53", udp(53).v6(SRC6, T0_V6), TYPE_GOLD),
        (
            "IPv6 udp 53 behind two extension headers",
            FrameBuilder {
                dport: 53,
                v6_ext: 2,
                ..Default::default()
            }
            .v6(SRC6, T0_V6),
            TYPE_GOLD,
        ),
        (
            "IPv6 tcp sport 873",
            tcp(873, 1).v6(SRC6, T0_V6),
            TYPE_BRONZE,
        ),
    ];
    for (what, frame, want) in cases {
        let before = tenant(&dp, 0);
        assert_eq!(run(&mut dp, &frame), XDP_PASS, "{what}");
        let after = tenant(&dp, 0);
        let got: Vec<usize> = (0..3)
            .filter(|k| after.packets[*k][OUTCOME_GREEN] > before.packets[*k][OUTCOME_GREEN])
            .collect();
        assert_eq!(got, vec![want], "{what}: counted as type {got:?}");
    }
}

/// One gold packet after another, each 1000 bytes, through every stage in order: two from a
/// 2000-byte deposit (the standard buckets untouched), two from gold's bucket, two from
/// silver's and two from bronze's (fallback), two borrowed (the ceiling's 2000 bytes), two
/// from the emergency pool; then drops.
#[test]
fn spending_order_is_pre_type_fallback_borrow_emergency_then_drop() {
    let Some(_root) = root_test("spending_order_is_pre_type_fallback_borrow_emergency_then_drop")
    else {
        return;
    };
    let (mut dp, mut g) = load();
    let mut tc = slow_tenant([2000; 3], TENANT_BORROW | TENANT_EMERGENCY, 2);
    tc.borrow = bucket(SLOW, 2000);
    tc.pre_cap_bytes = 10_000;
    dp.write_tenant(0, &tc).expect("write");
    g.flags = GLOBAL_BORROW | GLOBAL_FALLBACK;
    slow_link(&mut g, 1_000_000, [1_000_000; 4]);
    let e = bucket(SLOW, 2000);
    (g.emergency_cost_fp, g.emergency_burst_ns) = (e.cost_fp, e.burst_ns);
    dp.write_global(&g).expect("global");
    dp.deposit(0, 2000, Duration::from_secs(60))
        .expect("deposit");

    let gold = packet(T0, 46);
    let mut seq = Vec::new();
    for i in 0..13 {
        let before = tenant(&dp, 0);
        let v = run(&mut dp, &gold);
        let after = tenant(&dp, 0);
        let outcome = (0..6)
            .find(|o| after.packets[TYPE_GOLD][*o] > before.packets[TYPE_GOLD][*o])
            .expect("counted");
        seq.push(outcome);
        assert_eq!(v == XDP_DROP, outcome == OUTCOME_DROPPED, "packet {i}");
        if i == 1 {
            let st = dp.tenant_state(0).expect("state");
            assert!(
                st.tat.iter().all(|t| full(*t)),
                "the deposit spared the buckets"
            );
            assert_eq!(st.credit, 0);
        }
    }
    use shaper_common::OUTCOME_NAMES as N;
    let names: Vec<&str> = seq.iter().map(|o| N[*o]).collect();
    assert_eq!(
        seq,
        [
            OUTCOME_PRE,
            OUTCOME_PRE,
            OUTCOME_GREEN,
            OUTCOME_GREEN,
            OUTCOME_GREEN,
            OUTCOME_GREEN,
            OUTCOME_GREEN,
            OUTCOME_GREEN,
            OUTCOME_BORROWED,
            OUTCOME_BORROWED,
            OUTCOME_EMERGENCY,
            OUTCOME_EMERGENCY,
            OUTCOME_DROPPED,
        ],
        "{names:?}"
    );
    let st = dp.tenant_state(0).expect("state");
    assert!(
        st.tat.iter().all(|t| !full(*t)),
        "gold, silver and bronze all spent: {:?}",
        st.tat
    );
    assert_eq!(
        (st.deposited, st.expired, st.credit),
        (2000, 0, 0),
        "the whole deposit used"
    );
}

/// Fallback goes down only: a silver packet spends bronze when silver is empty and the
/// config allows fallback; a bronze packet never spends gold, even when gold is full.
#[test]
fn fallback_goes_to_lower_types_only_and_only_when_allowed() {
    let Some(_root) = root_test("fallback_goes_to_lower_types_only_and_only_when_allowed") else {
        return;
    };
    let (mut dp, mut g) = load();
    let bronze = FrameBuilder {
        ip_len: 1000,
        proto: 6,
        sport: 873,
        ..Default::default()
    }
    .v4(SRC4, T1);
    let silver = packet(T1, 0);
    dp.write_tenant(1, &slow_tenant([2000, 1000, 2000], 0, 0))
        .expect("write");
    assert_eq!(run(&mut dp, &silver), XDP_PASS, "silver's own");
    assert!(full(dp.tenant_state(1).expect("state").tat[TYPE_BRONZE]));
    assert_eq!(run(&mut dp, &silver), XDP_PASS, "fallback to bronze");
    assert!(!full(dp.tenant_state(1).expect("state").tat[TYPE_BRONZE]));
    // Without fallback, silver empty means dropped, bronze's 1000 bytes notwithstanding.
    g.flags &= !GLOBAL_FALLBACK;
    dp.write_global(&g).expect("global");
    assert_eq!(run(&mut dp, &silver), XDP_DROP, "fallback while disabled");
    // Bronze's last 1000 bytes, then nothing: gold's 2000 are out of bronze's reach.
    g.flags |= GLOBAL_FALLBACK;
    dp.write_global(&g).expect("global");
    assert_eq!(run(&mut dp, &bronze), XDP_PASS);
    assert_eq!(run(&mut dp, &bronze), XDP_DROP, "bronze spent gold");
    let c = tenant(&dp, 1);
    assert_eq!(c.packets[TYPE_SILVER][OUTCOME_GREEN], 2);
    assert_eq!(c.packets[TYPE_SILVER][OUTCOME_DROPPED], 1);
    assert_eq!(c.packets[TYPE_BRONZE][OUTCOME_GREEN], 1);
    assert_eq!(c.packets[TYPE_BRONZE][OUTCOME_DROPPED], 1);
    assert!(
        full(dp.tenant_state(1).expect("state").tat[TYPE_GOLD]),
        "gold untouched"
    );
}

/// Emergency pool: only a tenant whose tier has access spends it; a tenant without does not,
/// even with the pool full.
#[test]
fn only_tiers_with_emergency_access_spend_the_reserve() {
    let Some(_root) = root_test("only_tiers_with_emergency_access_spend_the_reserve") else {
        return;
    };
    let (mut dp, mut g) = load();
    dp.write_tenant(0, &slow_tenant([0, 0, 0], TENANT_EMERGENCY, 3))
        .expect("write");
    dp.write_tenant(1, &slow_tenant([0, 0, 0], 0, 0))
        .expect("write");
    let e = bucket(SLOW, 5000);
    (g.emergency_cost_fp, g.emergency_burst_ns) = (e.cost_fp, e.burst_ns);
    dp.write_global(&g).expect("global");
    for _ in 0..4 {
        assert_eq!(run(&mut dp, &packet(T1, 0)), XDP_DROP, "no access");
    }
    let passed = (0..8)
        .filter(|_| run(&mut dp, &packet(T0, 0)) == XDP_PASS)
        .count();
    assert_eq!(passed, 5, "the 5000-byte pool, then nothing");
    assert_eq!(tenant(&dp, 0).packets[TYPE_SILVER][OUTCOME_EMERGENCY], 5);
    assert_eq!(tenant(&dp, 1).packets[TYPE_SILVER][OUTCOME_DROPPED], 4);
}

/// Borrowing: never past the ceiling (the borrow bucket), and lower tiers stop first. The
/// link bucket is 8000 bytes deep; bronze (priority 0) may borrow while it is at most 2000
/// full, platinum (3) up to 8000. Traffic paid by the tenant's own tokens fills the link too.
#[test]
fn borrowing_stops_at_the_ceiling_and_lower_tiers_stop_first() {
    let Some(_root) = root_test("borrowing_stops_at_the_ceiling_and_lower_tiers_stop_first") else {
        return;
    };
    let (mut dp, mut g) = load();
    g.flags |= GLOBAL_BORROW;
    slow_link(&mut g, 8000, [2000, 4000, 6000, 8000]);
    dp.write_global(&g).expect("global");
    // t0: platinum, 1000 bytes of its own, borrows up to a 10,000-byte ceiling.
    let mut t0 = slow_tenant([0, 1000, 0], TENANT_BORROW, 3);
    t0.borrow = bucket(SLOW, 10_000);
    // t1: bronze priority, nothing of its own, may borrow 3000 bytes.
    let mut t1 = slow_tenant([0, 0, 0], TENANT_BORROW, 0);
    t1.borrow = bucket(SLOW, 3000);
    dp.write_tenant(0, &t0).expect("write");
    dp.write_tenant(1, &t1).expect("write");

    // t0's own packet fills the link to 1000: t1 borrows one packet (to 2000), not two.
    assert_eq!(run(&mut dp, &packet(T0, 0)), XDP_PASS);
    let t1_passed = (0..3)
        .filter(|_| run(&mut dp, &packet(T1, 0)) == XDP_PASS)
        .count();
    assert_eq!(
        t1_passed, 1,
        "bronze borrows only below a quarter of the link"
    );
    // Platinum keeps borrowing up to the full depth: 6 more packets (2000 -> 8000).
    let t0_borrowed = (0..10)
        .filter(|_| run(&mut dp, &packet(T0, 0)) == XDP_PASS)
        .count();
    assert_eq!(t0_borrowed, 6, "platinum borrows to the full link depth");
    let c0 = tenant(&dp, 0);
    assert_eq!(c0.packets[TYPE_SILVER][OUTCOME_GREEN], 1);
    assert_eq!(c0.packets[TYPE_SILVER][OUTCOME_BORROWED], 6);
    assert_eq!(c0.packets[TYPE_SILVER][OUTCOME_DROPPED], 4);

    // With the link wide open, t1's ceiling is what stops it: 3000 bytes, of which one
    // packet was already borrowed.
    slow_link(&mut g, 1_000_000, [1_000_000; 4]);
    dp.write_global(&g).expect("global");
    let more = (0..5)
        .filter(|_| run(&mut dp, &packet(T1, 0)) == XDP_PASS)
        .count();
    assert_eq!(more, 2, "the ceiling");
    assert_eq!(tenant(&dp, 1).packets[TYPE_SILVER][OUTCOME_BORROWED], 3);
}

/// The capacity word, in bytes at 8 kbit/s: how far the link is over capacity (0: not).
fn over_capacity(dp: &Datapath) -> u64 {
    let m: aya::maps::Array<_, GlobalState> =
        aya::maps::Array::try_from(dp.map("GLOBAL_STATE").expect("map")).expect("array");
    let tat = m.get(&0, 0).expect("read").cap_tat;
    tat.saturating_sub(shaper::datapath::monotonic_ns()) / 1_000_000
}

/// Drop precedence on a link of 8000 bytes at 8 kbit/s: the capacity word at that rate and
/// depth, yield depths of 5000, 6000 and 7000 bytes for bronze, silver and gold (platinum
/// never yields), every charge reaching the shared words at once.
fn short_link(g: &mut GlobalConfig) {
    g.flags |= GLOBAL_YIELD;
    slow_link(g, 8000, [1000, 2000, 3000, 4000]);
    let capacity = bucket(SLOW, 8000);
    (g.cap_cost_fp, g.cap_max_ns) = (capacity.cost_fp, capacity.burst_ns);
    for (y, b) in g.yield_ns.iter_mut().zip([5000, 6000, 7000, 0]) {
        *y = if b == 0 { 0 } else { bucket(SLOW, b).burst_ns };
    }
}

/// Drop precedence: own-token traffic of a lower tier passes while the link has room, and
/// yields (is dropped, its own tokens kept) once the capacity word is in use past the tier's
/// yield depth, bronze before silver; platinum's own traffic never yields, and its charges
/// stop adding debt at the bound.
#[test]
fn lower_tiers_yield_their_own_traffic_only_when_the_link_is_short() {
    let Some(_root) = root_test("lower_tiers_yield_their_own_traffic_only_when_the_link_is_short")
    else {
        return;
    };
    let (mut dp, mut g) = load();
    assert_eq!(g.flags & GLOBAL_YIELD, 0, "the test config turns it off");
    short_link(&mut g);
    dp.write_global(&g).expect("global");
    // t0: platinum, t1: bronze; plenty of their own tokens, no borrowing.
    dp.write_tenant(0, &slow_tenant([0, 20_000, 0], 0, 3))
        .expect("write");
    dp.write_tenant(1, &slow_tenant([0, 20_000, 0], 0, 0))
        .expect("write");

    // The link has room: bronze's own traffic passes, and is charged to the capacity word.
    assert_eq!(run(&mut dp, &packet(T1, 0)), XDP_PASS);
    assert!((999..=1000).contains(&over_capacity(&dp)));
    // Platinum takes the link 6000 bytes over capacity: past bronze's yield depth (5000).
    for _ in 0..5 {
        assert_eq!(run(&mut dp, &packet(T0, 0)), XDP_PASS);
    }
    assert_eq!(run(&mut dp, &packet(T1, 0)), XDP_DROP, "bronze yields");
    let c1 = tenant(&dp, 1);
    assert_eq!(c1.packets[TYPE_SILVER][OUTCOME_GREEN], 1);
    assert_eq!(c1.packets[TYPE_SILVER][OUTCOME_DROPPED], 1);
    // A silver tenant (yield depth 6000) still passes at 6000, not past it.
    dp.write_tenant(1, &slow_tenant([0, 20_000, 0], 0, 1))
        .expect("write");
    assert_eq!(
        run(&mut dp, &packet(T1, 0)),
        XDP_PASS,
        "silver at its depth"
    );
    assert_eq!(run(&mut dp, &packet(T1, 0)), XDP_DROP, "silver past it");
    // Platinum never yields; its charges stop adding debt at the bound (8000 bytes), give or
    // take the packet that crossed it.
    for _ in 0..6 {
        assert_eq!(run(&mut dp, &packet(T0, 0)), XDP_PASS);
    }
    assert!(
        over_capacity(&dp) <= 9000,
        "debt bounded: {}",
        over_capacity(&dp)
    );
    // Precedence off: the same full link no longer stops silver's own traffic.
    g.yield_ns = [0; 4];
    dp.write_global(&g).expect("global");
    assert_eq!(run(&mut dp, &packet(T1, 0)), XDP_PASS);
}

/// Drop precedence and pre-allocation: deposit credit is above the tenant's rate, so while
/// the link is over capacity (past half bronze's yield depth) it stops, as borrowed traffic
/// does, and the packet tries the tenant's own bucket: platinum's passes there, bronze's
/// (no tokens of its own) is dropped, its credit kept for when the link has room again.
#[test]
fn pre_allocated_bytes_stop_while_the_link_is_over_capacity() {
    let Some(_root) = root_test("pre_allocated_bytes_stop_while_the_link_is_over_capacity") else {
        return;
    };
    let (mut dp, mut g) = load();
    short_link(&mut g);
    dp.write_global(&g).expect("global");
    // t0: platinum with its own tokens and credit; t1: bronze with credit only.
    dp.write_tenant(0, &slow_tenant([0, 20_000, 0], 0, 3))
        .expect("write");
    dp.write_tenant(1, &slow_tenant([0, 0, 0], 0, 0))
        .expect("write");
    for t in 0..2 {
        dp.set_pre_pool(t, 0, 10_000).expect("pre pool");
        dp.deposit(t, 10_000, Duration::from_secs(60))
            .expect("deposit");
    }
    // The link has room: both spend credit.
    assert_eq!(run(&mut dp, &packet(T1, 0)), XDP_PASS);
    assert_eq!(run(&mut dp, &packet(T0, 0)), XDP_PASS);
    // Platinum's credit takes the link 3000 bytes over capacity, past half bronze's depth
    // (2500): its next packet is paid by its own bucket, bronze's is dropped.
    assert_eq!(run(&mut dp, &packet(T0, 0)), XDP_PASS);
    assert!(over_capacity(&dp) > 2500, "{}", over_capacity(&dp));
    assert_eq!(
        run(&mut dp, &packet(T0, 0)),
        XDP_PASS,
        "platinum's own bucket"
    );
    assert_eq!(
        run(&mut dp, &packet(T1, 0)),
        XDP_DROP,
        "bronze's credit stops"
    );
    let (c0, c1) = (tenant(&dp, 0), tenant(&dp, 1));
    assert_eq!(c0.packets[TYPE_SILVER][OUTCOME_PRE], 2);
    assert_eq!(c0.packets[TYPE_SILVER][OUTCOME_GREEN], 1);
    assert_eq!(c1.packets[TYPE_SILVER][OUTCOME_PRE], 1);
    assert_eq!(c1.packets[TYPE_SILVER][OUTCOME_DROPPED], 1);
    assert_eq!(dp.tenant_state(1).expect("state").credit, 9000, "kept");
    // Precedence off: the same full link no longer stops credit.
    g.yield_ns = [0; 4];
    dp.write_global(&g).expect("global");
    assert_eq!(run(&mut dp, &packet(T1, 0)), XDP_PASS);
    assert_eq!(tenant(&dp, 1).packets[TYPE_SILVER][OUTCOME_PRE], 2);
}

/// Every passed packet counts against the link's capacity, whoever paid for it: own tokens,
/// borrowing, the emergency pool (otherwise traffic above the tenants' rates would overload
/// the link unseen by drop precedence); and once the link is over capacity, traffic above
/// any tenant's rate (borrowed, emergency) stops before anyone's own traffic yields.
#[test]
fn borrowed_and_emergency_packets_count_against_capacity() {
    let Some(_root) = root_test("borrowed_and_emergency_packets_count_against_capacity") else {
        return;
    };
    let (mut dp, mut g) = load();
    g.flags |= GLOBAL_BORROW | GLOBAL_YIELD;
    slow_link(&mut g, 1_000_000, [1_000_000; 4]);
    let capacity = bucket(SLOW, 1_000_000);
    (g.cap_cost_fp, g.cap_max_ns) = (capacity.cost_fp, capacity.burst_ns);
    let e = bucket(SLOW, 1000);
    (g.emergency_cost_fp, g.emergency_burst_ns) = (e.cost_fp, e.burst_ns);
    g.yield_ns = [bucket(SLOW, 100_000).burst_ns, 0, 0, 0];
    dp.write_global(&g).expect("global");
    // Nothing of its own: one packet borrowed, the next from the emergency pool.
    let mut t = slow_tenant([0, 0, 0], TENANT_BORROW | TENANT_EMERGENCY, 2);
    t.borrow = bucket(SLOW, 1000);
    dp.write_tenant(0, &t).expect("write");
    assert_eq!(run(&mut dp, &packet(T0, 0)), XDP_PASS);
    assert_eq!(run(&mut dp, &packet(T0, 0)), XDP_PASS);
    let c = tenant(&dp, 0);
    assert_eq!(c.packets[TYPE_SILVER][OUTCOME_BORROWED], 1);
    assert_eq!(c.packets[TYPE_SILVER][OUTCOME_EMERGENCY], 1);
    assert!(
        (1999..=2000).contains(&over_capacity(&dp)),
        "{}",
        over_capacity(&dp)
    );
    // Over capacity past half bronze's yield depth (1500 bytes): traffic above any rate gives
    // way, though the link bucket, the borrow bucket and the emergency pool have room.
    let e = bucket(SLOW, 100_000);
    (g.emergency_cost_fp, g.emergency_burst_ns) = (e.cost_fp, e.burst_ns);
    g.yield_ns = [bucket(SLOW, 3000).burst_ns, 0, 0, 0];
    dp.write_global(&g).expect("global");
    let mut t = slow_tenant([0, 0, 0], TENANT_BORROW, 3);
    t.borrow = bucket(SLOW, 10_000);
    dp.write_tenant(1, &t).expect("write");
    assert_eq!(run(&mut dp, &packet(T1, 0)), XDP_DROP, "no borrowing");
    assert_eq!(run(&mut dp, &packet(T0, 0)), XDP_DROP, "no emergency pool");
    // Below it (2500 bytes): both again.
    g.yield_ns = [bucket(SLOW, 5000).burst_ns, 0, 0, 0];
    dp.write_global(&g).expect("global");
    assert_eq!(run(&mut dp, &packet(T1, 0)), XDP_PASS);
    assert_eq!(tenant(&dp, 1).packets[TYPE_SILVER][OUTCOME_BORROWED], 1);
    g.yield_ns = [bucket(SLOW, 7000).burst_ns, 0, 0, 0];
    dp.write_global(&g).expect("global");
    assert_eq!(run(&mut dp, &packet(T0, 0)), XDP_PASS);
    assert_eq!(
        tenant(&dp, 0).packets[TYPE_SILVER][OUTCOME_EMERGENCY],
        2,
        "{:?}",
        tenant(&dp, 0).packets[TYPE_SILVER]
    );
}

/// The link bucket's debt is bounded at its depth: own traffic far above the link, then idle
/// for one depth, and borrowing works again (unbounded, the debt of the flood would block it
/// for as long as the flood lasted).
#[test]
fn link_debt_is_bounded_so_borrowing_recovers_after_a_flood() {
    let Some(_root) = root_test("link_debt_is_bounded_so_borrowing_recovers_after_a_flood") else {
        return;
    };
    let (mut dp, mut g) = load();
    g.flags |= GLOBAL_BORROW;
    // The link at 8 Mbit/s (a 1000-byte packet costs 1 ms), 8000 bytes deep.
    let link = bucket(8_000_000, 8000);
    (g.link_cost_fp, g.link_max_ns, g.link_fold_bytes) = (link.cost_fp, link.burst_ns, 0);
    g.borrow_depth_ns = [link.burst_ns; 4];
    dp.write_global(&g).expect("global");
    dp.write_tenant(0, &slow_tenant([0, 400_000, 0], 0, 3))
        .expect("write");
    let mut t1 = slow_tenant([0, 0, 0], TENANT_BORROW, 0);
    t1.borrow = bucket(SLOW, 3000);
    dp.write_tenant(1, &t1).expect("write");
    // 300 ms of the link's worth of own traffic, sent in far less time.
    let start = std::time::Instant::now();
    for _ in 0..300 {
        assert_eq!(run(&mut dp, &packet(T0, 0)), XDP_PASS);
    }
    let took = start.elapsed();
    assert!(took < Duration::from_millis(150), "sent in {took:?}");
    // One depth (8 ms) and a packet later, bronze borrows again.
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(
        run(&mut dp, &packet(T1, 0)),
        XDP_PASS,
        "borrowing works again"
    );
    assert_eq!(tenant(&dp, 1).packets[TYPE_SILVER][OUTCOME_BORROWED], 1);
}

/// Deposits: applied once, clamped to the cap, used first; what is left at expiry moves to
/// `expired`. The pool's own fill passes packets without any deposit.
#[test]
fn deposits_are_used_clamped_and_expire() {
    let Some(_root) = root_test("deposits_are_used_clamped_and_expire") else {
        return;
    };
    let (mut dp, _) = load();
    dp.write_tenant(0, &slow_tenant([0, 100_000, 0], 0, 0))
        .expect("write");
    dp.set_pre_pool(0, 0, 4000).expect("pre pool");
    dp.deposit(0, 10_000, Duration::from_secs(60))
        .expect("deposit");
    let p = packet(T0, 0);
    assert_eq!(run(&mut dp, &p), XDP_PASS);
    let st = dp.tenant_state(0).expect("state");
    assert_eq!(
        (st.deposited, st.credit),
        (4000, 3000),
        "clamped to the 4000-byte cap"
    );
    // Rewriting the config (same deposit sequence) applies nothing again.
    let live = dp.tenant(0).expect("live");
    let mut changed = live;
    changed.types[TYPE_SILVER] = bucket(SLOW, 90_000);
    dp.write_tenant(0, &changed).expect("write");
    assert_eq!(run(&mut dp, &p), XDP_PASS);
    assert_eq!(dp.tenant_state(0).expect("state").deposited, 4000);
    // A deposit that expires at once: the 2000 left plus the new 1000 expire on the next
    // packet, which the bucket then pays for.
    dp.deposit(0, 1000, Duration::ZERO).expect("deposit");
    assert_eq!(run(&mut dp, &p), XDP_PASS);
    let st = dp.tenant_state(0).expect("state");
    assert_eq!((st.deposited, st.expired, st.credit), (5000, 3000, 0));
    let pre = shaper::stats::PrePool::from_state(&st);
    assert_eq!(pre.used_bytes, 2000);
    let c = tenant(&dp, 0);
    assert_eq!(c.packets[TYPE_SILVER][OUTCOME_PRE], 2);
    assert_eq!(c.packets[TYPE_SILVER][OUTCOME_GREEN], 1);
    // The pool's fill: it starts empty (a new pool creates no tokens) and fills at 8 Mbit/s
    // (a byte a microsecond) to its 2000 bytes; two packets pass on it before the bucket pays.
    dp.set_pre_pool(0, 8_000_000, 2000).expect("pre pool");
    assert_eq!(run(&mut dp, &p), XDP_PASS);
    std::thread::sleep(Duration::from_millis(20));
    for _ in 0..3 {
        assert_eq!(run(&mut dp, &p), XDP_PASS);
    }
    let c = tenant(&dp, 0);
    assert_eq!(c.packets[TYPE_SILVER][OUTCOME_PRE], 4);
    assert_eq!(c.packets[TYPE_SILVER][OUTCOME_GREEN], 3);
    assert_eq!(dp.tenant(0).expect("live").pre, bucket(8_000_000, 2000));
}

/// A deposit stays spendable until it expires when the cycle after it grants no pre-allocated
/// pool at all (rate 0, cap 0): the credit is not stranded.
#[test]
fn a_deposit_outlives_a_cycle_without_a_pool() {
    let Some(_root) = root_test("a_deposit_outlives_a_cycle_without_a_pool") else {
        return;
    };
    let (mut dp, _) = load();
    dp.write_tenant(0, &slow_tenant([0, 100_000, 0], 0, 0))
        .expect("write");
    dp.set_pre_pool(0, 0, 4000).expect("pre pool");
    dp.deposit(0, 3000, Duration::from_secs(60))
        .expect("deposit");
    let p = packet(T0, 0);
    assert_eq!(run(&mut dp, &p), XDP_PASS);
    // The next cycle: no pool.
    dp.set_pre_pool(0, 0, 0).expect("no pool");
    for _ in 0..3 {
        assert_eq!(run(&mut dp, &p), XDP_PASS);
    }
    let c = tenant(&dp, 0);
    assert_eq!(
        (
            c.packets[TYPE_SILVER][OUTCOME_PRE],
            c.packets[TYPE_SILVER][OUTCOME_GREEN]
        ),
        (3, 1),
        "the 3000 bytes of credit pay three packets, the bucket the fourth"
    );
    assert_eq!(dp.tenant_state(0).expect("state").credit, 0);
}

/// A change of rate or depth keeps a bucket's tokens as bytes: never more than it held, never
/// more than the new depth, never reset to full.
#[test]
fn rate_and_depth_changes_carry_tokens_over() {
    let Some(_root) = root_test("rate_and_depth_changes_carry_tokens_over") else {
        return;
    };
    let (mut dp, _) = load();
    let p = packet(T1, 0);
    let passes = |dp: &mut Datapath, n: usize| (0..n).filter(|_| run(dp, &p) == XDP_PASS).count();
    dp.write_tenant(1, &slow_tenant([0, 10_000, 0], 0, 0))
        .expect("write");
    assert_eq!(passes(&mut dp, 4), 4, "10,000 bytes, 4000 spent");
    // Twice the rate (the same 10,000-byte depth): 6000 bytes left, not a full bucket.
    let mut faster = slow_tenant([0, 0, 0], 0, 0);
    faster.types[TYPE_SILVER] = bucket(2 * SLOW, 10_000);
    dp.write_tenant(1, &faster).expect("write");
    assert_eq!(passes(&mut dp, 3), 3);
    // Shallower (2000 bytes): the 3000 left are capped at the new depth.
    dp.write_tenant(1, &slow_tenant([0, 2000, 0], 0, 0))
        .expect("write");
    assert_eq!(passes(&mut dp, 5), 2, "capped at the new depth");
    // Deeper again (50,000): nothing is created; the bucket is empty.
    dp.write_tenant(1, &slow_tenant([0, 50_000, 0], 0, 0))
        .expect("write");
    assert_eq!(passes(&mut dp, 3), 0, "a deeper bucket gains no tokens");
    let c = tenant(&dp, 1);
    assert_eq!(c.packets[TYPE_SILVER][OUTCOME_GREEN], 9);
}

/// An allocation's fill and pre-allocated pool count against the ceiling: borrowing gets only
/// what they leave of it, and none when they take all of it.
#[test]
fn an_allocation_leaves_borrowing_what_fill_and_pool_leave_of_the_ceiling() {
    let Some(_root) =
        root_test("an_allocation_leaves_borrowing_what_fill_and_pool_leave_of_the_ceiling")
    else {
        return;
    };
    let cfg = config();
    let (mut dp, _) = load();
    let rate = |b: shaper_common::BucketParams| 8e9 * 65536.0 / b.cost_fp as f64;
    let mut a = shaper::datapath::TenantRates {
        fill: 120e9 / 8.0,
        pre_rate: 30e9 / 8.0,
        pre_cap: 1e6,
        deposit: None,
        ceil: None,
    };
    let t0 = (&cfg.tenants[0], &cfg);
    dp.apply_allocation(0, t0, &a, Duration::from_secs(1), None)
        .expect("apply");
    let live = dp.tenant(0).expect("live");
    let types: f64 = live.types.iter().map(|b| rate(*b)).sum();
    assert!((types - 120e9).abs() / 120e9 < 1e-3, "fill {types}");
    assert!((rate(live.pre) - 30e9).abs() / 30e9 < 1e-3);
    assert!(
        (rate(live.borrow) - 50e9).abs() / 50e9 < 1e-3,
        "200 - 120 - 30: {}",
        rate(live.borrow)
    );
    a.pre_rate = 80e9 / 8.0;
    dp.apply_allocation(0, t0, &a, Duration::from_secs(1), None)
        .expect("apply");
    assert_eq!(dp.tenant(0).expect("live").flags & TENANT_BORROW, 0);
}

/// The agent's batched write of a cycle's allocations leaves every tenant exactly as one
/// write per tenant does: the same live config (mix, pool, borrowing, deposit, epoch) and
/// slot; a tenant whose allocation did not change is not rewritten.
#[test]
fn batched_allocation_writes_match_one_write_per_tenant() {
    let Some(_root) = root_test("batched_allocation_writes_match_one_write_per_tenant") else {
        return;
    };
    let cfg = config();
    let (mut each, _) = load();
    let (mut batched, _) = load();
    let alloc = |fill: f64, deposit: bool| shaper::datapath::TenantRates {
        fill: fill / 8.0,
        pre_rate: 20e9 / 8.0,
        pre_cap: 2e6,
        deposit: deposit.then_some(shaper::datapath::DepositWrite {
            bytes: 5e5,
            ttl_s: 2.0,
        }),
        ceil: None,
    };
    let one_second = Duration::from_secs(1);
    // Two cycles: the second flips each tenant's slot again; tenant 1 keeps its allocation.
    for (cycle, fills) in [[120e9, 90e9], [150e9, 90e9]].iter().enumerate() {
        let writes: Vec<shaper::datapath::TenantWrite> = fills
            .iter()
            .enumerate()
            .map(|(i, f)| shaper::datapath::TenantWrite {
                id: i as u32,
                tenant: i,
                rates: alloc(*f, i == 0 && cycle == 1),
                shares: (i == 1).then_some([0.2, 0.2, 0.6]),
            })
            .collect();
        for w in &writes {
            each.apply_allocation(
                w.id,
                (&cfg.tenants[w.tenant], &cfg),
                &w.rates,
                one_second,
                w.shares,
            )
            .expect("one write");
        }
        batched
            .apply_allocations(&cfg, &writes, one_second)
            .expect("batched write");
        for id in 0..2 {
            let mut a = each.tenant(id).expect("live");
            let mut b = batched.tenant(id).expect("live");
            // The deposit's expiry is a clock reading at the write.
            assert!(a.deposit_expires_ns.abs_diff(b.deposit_expires_ns) < 1_000_000_000);
            (a.deposit_expires_ns, b.deposit_expires_ns) = (0, 0);
            assert_eq!(a, b, "cycle {cycle}, tenant {id}");
        }
    }
    // The slot words were read and written in batches (u32 values, no padding).
    let aya::maps::Map::Array(slots) = batched.map(shaper::datapath::TENANT_SLOT).expect("map")
    else {
        panic!("TENANT_SLOT is an array")
    };
    let words = shaper::datapath::batch::lookup_array::<u32>(slots, 2, None)
        .expect("batch")
        .expect("batched lookups");
    // Tenant 0 changed twice (back to its first slot), tenant 1 once.
    assert_eq!(words, [vec![0], vec![1]]);
}
