//! Unit tests of `config`.

use super::*;

fn parse(args: &[&str]) -> Result<Config, clap::Error> {
    let mut argv = vec!["zitadel-metadata-operator"];
    argv.extend_from_slice(args);
    Config::try_parse_from(argv)
}

#[test]
fn defaults_and_durations() {
    let c = parse(&[
        "--zitadel-url",
        "https://z.example",
        "--token-secret",
        "ops/zitadel",
    ])
    .expect("parse");
    assert_eq!(c.resync_interval, Duration::from_secs(300));
    assert_eq!(c.shutdown_timeout, Duration::from_secs(20));
    assert_eq!(c.zitadel_rps, 0, "no request budget unless asked for");
    assert_eq!(
        c.zitadel_api,
        ApiMode::Auto,
        "the API is probed unless pinned"
    );
    assert!(matches!(c.watch(), Namespaces::All));
    assert!(
        matches!(c.validate(), Ok(Some(TokenConfig::Secret { ref key, .. })) if key == "token")
    );
    assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
    assert!(parse_duration("soon").is_err());
}

#[test]
fn no_url_and_no_token_is_multi_tenant_mode() {
    let c = Config::try_parse_from(["zitadel-metadata-operator"]).expect("parse");
    assert!(matches!(c.validate(), Ok(None)));
    let c = Config::try_parse_from(["zitadel-metadata-operator", "--token-secret", "a/b"])
        .expect("parse");
    assert!(matches!(c.validate(), Err(ConfigError::MissingUrl)));
}

#[test]
fn clear_errors_for_bad_config() {
    let c = parse(&["--zitadel-url", "https://z.example"]).expect("parse");
    assert_eq!(
        c.validate().map_err(|e| e.to_string()).err().as_deref(),
        Some(
            "set exactly one of --token-file (ZITADEL_TOKEN_FILE) or --token-secret (ZITADEL_TOKEN_SECRET)"
        )
    );
    let c = parse(&[
        "--zitadel-url",
        "https://z.example",
        "--token-secret",
        "nons",
    ])
    .expect("parse");
    assert!(matches!(c.validate(), Err(ConfigError::SecretRef(_))));
    let c = parse(&["--zitadel-url", "ftp://z.example", "--token-secret", "a/b"]).expect("parse");
    assert!(matches!(c.validate(), Err(ConfigError::Url(_))));
    // A token file that does not exist yet is a state the operator reports, not a flag error.
    let c = parse(&[
        "--zitadel-url",
        "https://z.example",
        "--token-file",
        "/nonexistent/token",
    ])
    .expect("parse");
    assert!(matches!(c.validate(), Ok(Some(TokenConfig::File(_)))));
    // An empty path is a flag error (clap refuses it; validate too, for a built Config).
    assert!(parse(&["--zitadel-url", "https://z.example", "--token-file", ""]).is_err());
    let mut c = c;
    c.default_connection.token_file = Some(std::path::PathBuf::new());
    assert!(matches!(c.validate(), Err(ConfigError::TokenFile)));
    assert!(parse(&["--zitadel-url", "not a url", "--token-file", "x"]).is_err());
    assert!(
        parse(&[
            "--zitadel-url",
            "https://z",
            "--token-file",
            "x",
            "--max-concurrent-reconciles",
            "0"
        ])
        .is_err()
    );
}

#[test]
fn leader_election_flags() {
    let base = ["--zitadel-url", "https://z", "--token-secret", "a/b"];
    let c = parse(&base).expect("parse");
    assert!(!c.leader_elect);
    assert!(c.leader_election("me".into()).is_none());
    assert_eq!(c.health_addr, "0.0.0.0:8080".parse().expect("addr"));
    assert_eq!(c.metrics_addr, "0.0.0.0:9090".parse().expect("addr"));

    let mut args = base.to_vec();
    args.extend(["--leader-elect", "--leader-election-namespace", "ops"]);
    let c = parse(&args).expect("parse");
    assert!(c.leader_elect);
    assert!(c.validate().is_ok());
    let le = c.leader_election("me".into()).expect("enabled");
    assert_eq!(le.namespace, "ops");
    assert_eq!(le.name, "zitadel-metadata-operator");
    assert_eq!(le.lease_duration, Duration::from_secs(15));
    assert_eq!(le.renew_deadline, Duration::from_secs(10));
    assert_eq!(le.retry_period, Duration::from_secs(2));

    let mut args = base.to_vec();
    args.extend(["--leader-elect=false"]);
    assert!(!parse(&args).expect("parse").leader_elect);

    let mut args = base.to_vec();
    args.extend(["--leader-elect", "--leader-election-renew-deadline", "20s"]);
    let c = parse(&args).expect("parse");
    assert!(matches!(
        c.validate(),
        Err(ConfigError::LeaderTiming { .. })
    ));
}

#[test]
fn leader_election_namespace_fallbacks() {
    let c = parse(&["--zitadel-url", "https://z", "--token-file", "x"]).expect("parse");
    let dir = tempfile::tempdir().expect("tempdir");
    let sa = dir.path().join("namespace");
    assert_eq!(c.leader_election_namespace_or(None, &sa), "default");
    std::fs::write(&sa, "from-sa\n").expect("write");
    assert_eq!(c.leader_election_namespace_or(None, &sa), "from-sa");
    assert_eq!(
        c.leader_election_namespace_or(Some("from-env".into()), &sa),
        "from-env"
    );
    let c = parse(&[
        "--zitadel-url",
        "https://z",
        "--token-file",
        "x",
        "--leader-election-namespace",
        "from-flag",
    ])
    .expect("parse");
    assert_eq!(
        c.leader_election_namespace_or(Some("from-env".into()), &sa),
        "from-flag"
    );
}

#[test]
fn namespace_list() {
    let c = parse(&[
        "--zitadel-url",
        "https://z",
        "--token-file",
        "x",
        "--namespace",
        "a,b",
        "--namespace",
        "c",
    ])
    .expect("parse");
    assert!(matches!(c.watch(), Namespaces::Only(ref v) if v == &["a", "b", "c"]));
}

#[test]
fn the_api_of_the_default_connection_can_be_pinned() {
    let base = [
        "--zitadel-url",
        "https://z.example",
        "--token-secret",
        "a/b",
    ];
    for (flag, mode) in [
        ("auto", ApiMode::Auto),
        ("v1", ApiMode::V1),
        ("V2", ApiMode::V2),
    ] {
        let mut args = base.to_vec();
        args.extend(["--zitadel-api", flag]);
        assert_eq!(parse(&args).expect("parse").zitadel_api, mode, "{flag}");
    }
    let mut args = base.to_vec();
    args.extend(["--zitadel-api", "v3"]);
    let err = parse(&args).expect_err("v3 is not an API");
    assert!(err.to_string().contains("use auto, v1 or v2"), "{err}");
}

#[test]
fn drift_detection_and_sharding_flags() {
    let base = [
        "--zitadel-url",
        "https://z.example",
        "--token-secret",
        "a/b",
    ];
    let settings = parse(&base).expect("parse").settings();
    assert_eq!(settings.drift.detection, Detection::Auto);
    assert_eq!(settings.drift.event_poll_interval, Duration::from_secs(15));
    assert_eq!(settings.drift.events_resync, Duration::from_secs(3600));
    assert_eq!(settings.watch_selector, None);
    let mut args = base.to_vec();
    args.extend([
        "--drift-detection",
        "Polling",
        "--event-poll-interval",
        "5s",
        "--events-resync-interval",
        "30m",
        "--watch-label-selector",
        " shard=a ",
    ]);
    let settings = parse(&args).expect("parse").settings();
    assert_eq!(settings.drift.detection, Detection::Polling);
    assert_eq!(settings.drift.event_poll_interval, Duration::from_secs(5));
    assert_eq!(settings.drift.events_resync, Duration::from_secs(1800));
    assert_eq!(settings.watch_selector.as_deref(), Some("shard=a"));
    let mut args = base.to_vec();
    args.extend(["--drift-detection", "events-only"]);
    assert!(parse(&args).is_err());
}

#[test]
fn label_selectors_are_checked_at_start() {
    for ok in [
        "shard=a",
        "shard==a",
        "shard!=b",
        "example.com/shard in (a, b),tier",
        "!legacy",
        "shard notin (c)",
        "shard=",
        "",
    ] {
        assert!(parse_label_selector(ok).is_ok(), "{ok}");
    }
    for bad in ["shard in a", "shard=(a", "-x=1", "a b", "shard=a)"] {
        let err = parse_label_selector(bad).expect_err(bad);
        assert!(
            err.contains("invalid label selector") || err.contains("unbalanced"),
            "{err}"
        );
    }
}
