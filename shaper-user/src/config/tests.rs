use serde_json::{Value, json};

use super::*;

fn example() -> Value {
    serde_json::from_str(EXAMPLE).expect("example is JSON")
}

/// Applies `edit` to the example and returns the error text, which must name `path`. A
/// reload of the same text over the example in force (validated knowing what changed) is
/// refused with the same error.
fn rejected(edit: impl FnOnce(&mut Value), path: &str) -> String {
    let mut v = example();
    edit(&mut v);
    let err = Config::parse(&v.to_string())
        .expect_err("config should be rejected")
        .to_string();
    assert!(
        err.contains(&format!("at {path}:")),
        "expected path {path} in: {err}"
    );
    let in_force = Config::parse(EXAMPLE).expect("valid");
    let over = Config::parse_since(&v.to_string(), Some(&in_force))
        .expect_err("refused as a reload too")
        .to_string();
    assert_eq!(over, err, "a reload over the example");
    err
}

/// A reload validated knowing the config in force: a tenant that changed is checked again,
/// one that did not is checked again when a setting it depends on changed.
#[test]
fn a_reload_checks_what_changed_and_what_it_depends_on() {
    let in_force = Config::parse(EXAMPLE).expect("valid");
    let reload = |edit: &dyn Fn(&mut Value)| {
        let mut v = example();
        edit(&mut v);
        Config::parse_since(&v.to_string(), Some(&in_force)).map_err(|e| e.to_string())
    };
    let cfg = reload(&|v| v["tenants"][1]["rate"] = json!("20mbit")).expect("a valid change");
    assert_eq!(cfg.tenants[1].rate, Rate::parse("20mbit").expect("rate"));
    let e = reload(&|v| v["tenants"][1]["rate"] = json!("20gbit")).expect_err("over the link");
    assert!(e.contains("tenants[1].rate"), "{e}");
    // Tenant 0 is unchanged, but its rate is now above the link's capacity.
    let rate = in_force.tenants[0].rate;
    let e = reload(&|v| v["link"]["capacity"] = json!(format!("{}bit", rate.bits_per_sec() - 1)))
        .expect_err("a tenant over the new capacity");
    assert!(e.contains("tenants[0].rate"), "{e}");
    // Names and prefixes as they were, but a tier no longer defined.
    let tier = tier_str(in_force.tenants[2].tier);
    let e = reload(&|v| {
        v["tiers"].as_object_mut().expect("tiers").remove(tier);
    })
    .expect_err("a tenant's tier removed");
    assert!(e.contains("tier"), "{e}");
}

/// `shaper config example`: the annotated config is accepted, comments and all, and every
/// section it spells out is exactly the default (so the comments document what an absent
/// section gets); a comment-related parse error still points at the right line.
#[test]
fn annotated_example_spells_out_the_defaults() {
    let cfg = Config::parse(ANNOTATED).expect("the annotated example is valid");
    assert_eq!(cfg.pools, Pools::default());
    assert_eq!(cfg.tiers, default_tiers());
    assert_eq!(cfg.forecast, Forecast::default());
    assert_eq!(cfg.policy, Policy::default());
    assert_eq!(cfg.api, Api::default());
    assert_eq!(cfg.history, History::default());
    assert_eq!(cfg.link.match_dir, MatchDir::default());
    assert_eq!(cfg.link.unmatched, Unmatched::default());
    assert_eq!(cfg.tenants.len(), 2);
    let err = Config::parse("// a comment\n{ \"link\": 5 }")
        .expect_err("bad link")
        .to_string();
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn example_is_valid() {
    let cfg = Config::parse(EXAMPLE).expect("example config is valid");
    assert_eq!(cfg.tenants.len(), 3);
    assert_eq!(cfg.link.capacity, Rate(1_000_000_000));
    assert_eq!(cfg.tenants[0].rate, Rate(200_000_000));
    assert_eq!(cfg.tenants[0].burst, Size(256_000));
    assert_eq!(cfg.link.match_dir, MatchDir::Dst);
    assert_eq!(cfg.prefixes().len(), 4);
}

#[test]
fn minimal_config_takes_defaults() {
    let cfg = Config::parse(
        r#"{"link":{"capacity":"100mbit"},"tenants":[{"name":"a","tier":"gold","prefixes":["10.0.0.0/8"],"rate":"10mbit","burst":"64kb"}]}"#,
    )
    .expect("valid");
    assert_eq!(cfg.link.unmatched, Unmatched::Pass);
    assert_eq!(cfg.tiers.len(), 4);
    assert_eq!(cfg.forecast.interval_ms, 1000);
}

#[test]
fn unknown_fields_are_rejected_with_their_path() {
    let e = rejected(
        |v| v["tenants"][1]["rtae"] = json!("1mbit"),
        "tenants[1].rtae",
    );
    assert!(e.contains("rtae"), "{e}");
    rejected(|v| v["link"]["speed"] = json!(1), "link.speed");
    rejected(|v| v["bogus"] = json!(1), "bogus");
}

#[test]
fn malformed_json_and_bad_types() {
    assert!(matches!(Config::parse("{"), Err(ConfigError::Parse { .. })));
    rejected(|v| v["tenants"][0]["rate"] = json!(100), "tenants[0].rate");
    rejected(
        |v| v["tenants"][2]["tier"] = json!("diamond"),
        "tenants[2].tier",
    );
    rejected(|v| v["link"]["match"] = json!("both"), "link.match");
}

#[test]
fn unit_errors_name_the_field() {
    let e = rejected(
        |v| v["tenants"][0]["rate"] = json!("200"),
        "tenants[0].rate",
    );
    assert!(e.contains("no unit"), "{e}");
    rejected(
        |v| v["tenants"][0]["burst"] = json!("256mbit"),
        "tenants[0].burst",
    );
    rejected(|v| v["link"]["capacity"] = json!("fast"), "link.capacity");
}

#[test]
fn duplicate_tenants() {
    let e = rejected(
        |v| v["tenants"][2]["name"] = json!("acme"),
        "tenants[2].name",
    );
    assert!(e.contains("duplicate"), "{e}");
}

#[test]
fn bad_tenant_names() {
    rejected(|v| v["tenants"][0]["name"] = json!(""), "tenants[0].name");
    rejected(
        |v| v["tenants"][0]["name"] = json!("a b"),
        "tenants[0].name",
    );
    rejected(
        |v| v["tenants"][0]["name"] = json!("x".repeat(65)),
        "tenants[0].name",
    );
}

#[test]
fn overlapping_prefixes_between_tenants() {
    let e = rejected(
        |v| v["tenants"][1]["prefixes"] = json!(["10.10.1.128/25"]),
        "tenants[1].prefixes",
    );
    assert!(e.contains("acme") && e.contains("globex"), "{e}");
    rejected(
        |v| v["tenants"][2]["prefixes"] = json!(["10.0.0.0/8"]),
        "tenants[2].prefixes",
    );
    rejected(
        |v| v["tenants"][1]["prefixes"] = json!(["2001:db8:1:5::/64"]),
        "tenants[1].prefixes",
    );
    rejected(
        |v| v["tenants"][0]["prefixes"] = json!(["10.10.1.0/24", "10.10.1.7"]),
        "tenants[0].prefixes",
    );
}

#[test]
fn contained_prefix_further_down_the_sorted_list_is_found() {
    // 10.0.0.0/8 contains 10.1.0.0/16 and 10.2.0.0/16; the second is not adjacent to it.
    let e = rejected(
        |v| {
            v["tenants"][0]["prefixes"] = json!(["10.0.0.0/8"]);
            v["tenants"][1]["prefixes"] = json!(["10.1.0.0/16"]);
            v["tenants"][2]["prefixes"] = json!(["10.2.0.0/16"]);
        },
        "tenants[1].prefixes",
    );
    assert!(e.contains("overlaps"), "{e}");
}

#[test]
fn bad_prefixes() {
    let e = rejected(
        |v| v["tenants"][0]["prefixes"][0] = json!("10.10.1.5/24"),
        "tenants[0].prefixes[0]",
    );
    assert!(e.contains("10.10.1.0/24"), "{e}");
    rejected(
        |v| v["tenants"][0]["prefixes"][0] = json!("10.10.1.0/33"),
        "tenants[0].prefixes[0]",
    );
    rejected(
        |v| v["tenants"][0]["prefixes"][0] = json!("not-an-ip"),
        "tenants[0].prefixes[0]",
    );
    rejected(
        |v| v["tenants"][0]["prefixes"] = json!([]),
        "tenants[0].prefixes",
    );
}

#[test]
fn rates_above_the_link_zero_or_absurd() {
    let e = rejected(
        |v| v["tenants"][0]["rate"] = json!("2gbit"),
        "tenants[0].rate",
    );
    assert!(e.contains("above the link"), "{e}");
    rejected(
        |v| v["tenants"][0]["rate"] = json!("0mbit"),
        "tenants[0].rate",
    );
    rejected(
        |v| v["tenants"][0]["ceil"] = json!("2gbit"),
        "tenants[0].ceil",
    );
    rejected(
        |v| v["tenants"][0]["ceil"] = json!("100mbit"),
        "tenants[0].ceil",
    );
    rejected(
        |v| v["tenants"][0]["burst"] = json!("0b"),
        "tenants[0].burst",
    );
    rejected(
        |v| v["tenants"][0]["burst"] = json!("100b"),
        "tenants[0].burst",
    );
    rejected(
        |v| v["tenants"][0]["burst"] = json!("5gb"),
        "tenants[0].burst",
    );
    rejected(|v| v["link"]["capacity"] = json!("0bit"), "link.capacity");
    rejected(|v| v["link"]["capacity"] = json!("1tbit"), "link.capacity");
}

#[test]
fn mixes_pools_and_fractions() {
    rejected(
        |v| v["tenants"][0]["mix"]["gold"] = json!(0.5),
        "tenants[0].mix",
    );
    rejected(
        |v| v["tenants"][0]["mix"]["gold"] = json!(-0.2),
        "tenants[0].mix.gold",
    );
    rejected(|v| v["pools"]["guaranteed"] = json!(0.9), "pools");
    rejected(|v| v["pools"]["emergency"] = json!(1.5), "pools.emergency");
    rejected(
        |v| v["tiers"]["gold"]["risk"] = json!(2.0),
        "tiers.gold.risk",
    );
    rejected(
        |v| v["policy"]["max_exchange_fraction"] = json!(1.1),
        "policy.max_exchange_fraction",
    );
    rejected(
        |v| v["policy"]["adjustment_multiplier"] = json!(50),
        "policy.adjustment_multiplier",
    );
    rejected(
        |v| v["policy"]["reactive_override"]["cpu_busy_ratio"] = json!(3),
        "policy.reactive_override.cpu_busy_ratio",
    );
}

#[test]
fn tenant_tier_must_be_defined() {
    rejected(
        |v| {
            v["tiers"].as_object_mut().expect("object").remove("bronze");
        },
        "tenants[2].tier",
    );
}

#[test]
fn token_type_rules() {
    rejected(
        |v| v["token_types"]["gold"]["match"][0] = json!({}),
        "token_types.gold.match[0]",
    );
    rejected(
        |v| v["token_types"]["gold"]["match"][0] = json!({"dscp": [64]}),
        "token_types.gold.match[0].dscp",
    );
    rejected(
        |v| v["token_types"]["gold"]["match"][0] = json!({"dport": [53]}),
        "token_types.gold.match[0]",
    );
    rejected(
        |v| v["token_types"]["gold"]["match"][0] = json!({"proto": "udp", "dport": []}),
        "token_types.gold.match[0].dport",
    );
    rejected(
        |v| v["token_types"]["default"] = json!("copper"),
        "token_types.default",
    );
}

#[test]
fn forecast_bounds() {
    rejected(
        |v| v["forecast"]["interval_ms"] = json!(10),
        "forecast.interval_ms",
    );
    rejected(
        |v| v["forecast"]["interval_ms"] = json!(120_000),
        "forecast.interval_ms",
    );
    rejected(
        |v| v["forecast"]["horizon_s"] = json!(0),
        "forecast.horizon_s",
    );
    rejected(
        |v| v["forecast"]["confidence"] = json!(1.0),
        "forecast.confidence",
    );
    rejected(
        |v| v["forecast"]["model"] = json!("prophet"),
        "forecast.model",
    );
    rejected(
        |v| v["forecast"]["accuracy_alert_mase"] = json!(0),
        "forecast.accuracy_alert_mase",
    );
    rejected(
        |v| v["forecast"]["season_s"] = json!(0),
        "forecast.season_s",
    );
}

#[test]
fn events() {
    rejected(
        |v| v["events"][0]["tenant"] = json!("nobody"),
        "events[0].tenant",
    );
    rejected(
        |v| v["events"][0]["start"] = json!("tomorrow"),
        "events[0].start",
    );
    rejected(
        |v| v["events"][0]["duration_s"] = json!(0),
        "events[0].duration_s",
    );
    rejected(
        |v| v["events"][0]["rate"] = json!("5gbit"),
        "events[0].rate",
    );
}

#[test]
fn api_and_history() {
    rejected(|v| v["api"]["listen"] = json!("localhost"), "api.listen");
    rejected(
        |v| v["history"]["retention_days"] = json!(0),
        "history.retention_days",
    );
}

#[test]
fn no_tenants() {
    rejected(|v| v["tenants"] = json!([]), "tenants");
}

#[test]
fn prefix_math() {
    let p = Prefix::parse("10.10.1.0/24").expect("valid");
    assert!(p.contains("10.10.1.200".parse().expect("ip")));
    assert!(!p.contains("10.10.2.1".parse().expect("ip")));
    assert!(!p.contains("::1".parse().expect("ip")));
    assert_eq!(Prefix::parse("10.1.2.3").expect("valid").bits(), 32);
    assert_eq!(Prefix::parse("2001:db8::/32").expect("valid").bits(), 32);
    assert!(Prefix::parse("0.0.0.0/0").expect("valid").overlaps(&p));
    assert!(!Prefix::parse("2001:db8::/32").expect("valid").overlaps(&p));
}

#[test]
fn the_api_stays_on_loopback_unless_asked() {
    let e = rejected(|v| v["api"]["listen"] = json!("0.0.0.0:9464"), "api.listen");
    assert!(e.contains("allow_remote"), "{e}");
    rejected(|v| v["api"]["listen"] = json!("[::]:9464"), "api.listen");
    let mut v = example();
    v["api"]["listen"] = json!("[::1]:9464");
    Config::parse(&v.to_string()).expect("IPv6 loopback is local");
    v["api"]["listen"] = json!("0.0.0.0:9464");
    v["api"]["allow_remote"] = json!(true);
    Config::parse(&v.to_string()).expect("remote API asked for");
}

#[test]
fn a_world_writable_config_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::temp_dir().join(format!("shaper-ww-{}.json", std::process::id()));
    std::fs::write(&path, EXAMPLE).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let e = Config::load(&path).expect_err("world-writable").to_string();
    assert!(
        e.contains("world-writable") && e.contains("chmod o-w"),
        "{e}"
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    Config::load(&path).expect("0644 is fine");
    let _ = std::fs::remove_file(&path);
}

/// Config trust: a config that someone other than root or the agent's user can change is
/// refused (group-writable by a non-root group, owned by another user, in a directory others
/// may change), one line each saying what to do; 0600 in a private directory loads.
#[test]
fn configs_others_could_change_are_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(format!("shaper-trust-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = dir.join("c.json");
    std::fs::write(&path, EXAMPLE).expect("write");
    let mode = |m| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m));
    mode(0o600).expect("chmod");
    Config::load(&path).expect("0600 in a private directory loads");
    // SAFETY: geteuid has no arguments.
    let root = unsafe { libc::geteuid() } == 0;
    let chown = |p: &Path, uid: u32, gid: u32| {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::chown(c.as_ptr(), uid, gid) }, 0);
    };
    mode(0o664).expect("chmod");
    if root {
        // Root's own files are in group 0, which is trusted: give it another group.
        chown(&path, 0, 65534);
    }
    let err = Config::load(&path).expect_err("group-writable").to_string();
    assert!(err.contains("chmod g-w"), "{err}");
    mode(0o600).expect("chmod");
    if root {
        chown(&path, 65534, 0);
        let err = Config::load(&path).expect_err("another owner").to_string();
        assert!(err.contains("owned by uid 65534"), "{err}");
        chown(&path, 0, 0);
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let err = Config::load(&path).expect_err("open directory").to_string();
    assert!(err.contains("/etc/shaper"), "{err}");
    // The sticky bit (as on /tmp) keeps others from replacing the file: accepted.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    Config::load(&path).expect("sticky directory");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cluster_section_and_aggregate_tenants() {
    let with_cluster = |v: &mut Value| {
        v["cluster"] = json!({"store": "unix:///run/redis/redis.sock", "host_id": "edge-1"});
        v["tenants"][0]["scope"] = json!("aggregate");
    };
    let mut v = example();
    with_cluster(&mut v);
    let cfg = Config::parse(&v.to_string()).expect("a cluster config is valid");
    let c = cfg.cluster.as_ref().expect("cluster");
    assert_eq!((c.interval_ms, c.lease_s, c.floor), (1000, 10.0, 0.02));
    assert_eq!(cfg.tenants[0].scope, Scope::Aggregate);
    assert_eq!(cfg.tenants[1].scope, Scope::Host);
    let e = rejected(
        |v| v["tenants"][0]["scope"] = json!("aggregate"),
        "tenants[0].scope",
    );
    assert!(e.contains("cluster"), "{e}");
    let e = rejected(
        |v| {
            with_cluster(v);
            v["cluster"]["store"] = json!("redis://agent:secret@10.0.0.1:6379");
        },
        "cluster.store",
    );
    assert!(e.contains("auth_file"), "{e}");
    rejected(
        |v| {
            with_cluster(v);
            v["cluster"]["store"] = json!("rediss://10.0.0.1");
        },
        "cluster.store",
    );
    rejected(
        |v| {
            with_cluster(v);
            v["cluster"]["host_id"] = json!("a b");
        },
        "cluster.host_id",
    );
    rejected(
        |v| {
            with_cluster(v);
            v["cluster"]["interval_ms"] = json!(10);
        },
        "cluster.interval_ms",
    );
    rejected(
        |v| {
            with_cluster(v);
            v["cluster"]["lease_s"] = json!(1.0);
        },
        "cluster.lease_s",
    );
    rejected(
        |v| {
            with_cluster(v);
            v["cluster"]["floor"] = json!(0.9);
        },
        "cluster.floor",
    );
}
