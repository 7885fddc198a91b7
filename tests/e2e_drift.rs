//! End-to-end: event-driven drift detection on the real kube-apiserver and the ZITADEL emulator
//! (which records every change as an event and serves admin `ListEvents` per the contract:
//! strict `since`, same-timestamp pushes, `events.read` for IAM_OWNER / IAM_OWNER_VIEWER only).
//!
//! - With `events.read`, the steady state costs one `ListEvents` per poll interval and nothing
//!   else; an out-of-band edit is repaired within the poll interval (+5 s), by re-syncing only
//!   the object on the edited organization or user (the request log shows no other listing).
//! - The operator's own writes trigger nothing: by payload for a Personal Access Token (the
//!   contract names no call that tells a token's user), by `editor.userId` for a key file.
//! - A batch of events sharing one timestamp and cut by the page limit loses nothing.
//! - Organization and user removal events reach the objects (which then report the target
//!   gone by the existing rules).
//! - A connection without `events.read` falls back to polling and says so in its status.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zitadel_metadata_operator::controller::{self, DefaultConnection, Hooks, Settings, Shutdown};
use zitadel_metadata_operator::crd::{MetadataResource, ZitadelConnection};
use zitadel_metadata_operator::drift::{Detection, DriftSettings};
use zitadel_metadata_operator::metrics::Metrics;
use zitadel_metadata_operator::status;
use zitadel_metadata_operator::zitadel::{ClientConfig, HttpClient, TokenSource};
use zmo_testkit::emulator::{Operation, RecordedRequest, TokenGrant};

/// The poll interval of these tests.
const POLL: Duration = Duration::from_secs(2);
/// A repair must land within the poll interval plus this.
const REPAIR_SLACK: Duration = Duration::from_secs(5);
/// The operator's service user (its PAT's user: the editor of its writes' events).
const OPERATOR_USER: &str = "300000000000000100";

fn events_settings() -> Settings {
    Settings {
        // Polling would re-list every 2 minutes; in Events mode the safety net is an hour.
        resync: Duration::from_secs(120),
        drift: DriftSettings {
            detection: Detection::Auto,
            event_poll_interval: POLL,
            events_resync: Duration::from_secs(3600),
        },
        ..fast_settings()
    }
}

/// The controllers in-process, with their metrics at hand.
struct Running {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
    metrics: Arc<Metrics>,
}

impl Running {
    fn start(
        env: &TestEnv,
        default: Option<DefaultConnection>,
        namespaces: Vec<String>,
        settings: Settings,
    ) -> Running {
        let (stop, rx) = watch::channel(false);
        let shutdown = move || -> Shutdown {
            let mut rx = rx.clone();
            Box::pin(async move {
                let _ = rx.wait_for(|s| *s).await;
            })
        };
        let metrics = Arc::new(Metrics::new());
        let hooks = Hooks {
            metrics: metrics.clone(),
            ..Hooks::default()
        };
        let handle = tokio::spawn(controller::run_with(
            env.client.clone(),
            default,
            controller::Namespaces::Only(namespaces),
            settings,
            shutdown,
            hooks,
        ));
        Running {
            stop,
            handle,
            metrics,
        }
    }

    /// Sum of the samples whose line starts with `prefix` (name and, optionally, labels).
    fn metric(&self, prefix: &str) -> f64 {
        self.metrics
            .encode()
            .expect("metrics")
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.handle).await;
    }
}

/// The default connection: the operator's PAT, Management API v1 (so that each request names
/// its target: the org in `x-zitadel-orgid`, the user in the path).
fn default_connection(env: &TestEnv, token: &str) -> DefaultConnection {
    let mut config = ClientConfig::new(
        env.emu.url().parse().expect("url"),
        TokenSource::Static(Arc::from(token)),
    );
    config.request_timeout = Duration::from_secs(5);
    config.api = ApiMode::V1;
    DefaultConnection::from(Arc::new(HttpClient::new(config).expect("client"))
        as Arc<dyn zitadel_metadata_operator::zitadel::ZitadelApi>)
}

fn org_id(i: usize) -> String {
    format!("1000000000000007{i:02}")
}

fn user_id(i: usize) -> String {
    format!("2000000000000007{i:02}")
}

fn is_list(op: Operation) -> bool {
    matches!(
        op,
        Operation::ListOrgMetadata
            | Operation::ListUserMetadata
            | Operation::ListOrgMetadataV2
            | Operation::ListUserMetadataV2
    )
}

fn is_write(op: Operation) -> bool {
    op.sets_metadata()
        || matches!(
            op,
            Operation::BulkRemoveOrgMetadata
                | Operation::BulkRemoveUserMetadata
                | Operation::RemoveOrgMetadata
                | Operation::RemoveUserMetadata
                | Operation::DeleteOrgMetadataV2
                | Operation::DeleteUserMetadataV2
        )
}

fn requests_since(env: &TestEnv, mark: usize) -> Vec<RecordedRequest> {
    env.emu.requests().into_iter().skip(mark).collect()
}

/// Wait until `check` holds, returning how long it took; panics after `within`.
async fn time_until(within: Duration, what: &str, check: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if check() {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn org_value(env: &TestEnv, org: &str, key: &str) -> Option<String> {
    env.org_value(org, key)
}

fn user_value(env: &TestEnv, user: &str, key: &str) -> Option<String> {
    env.emu
        .user_metadata(user)
        .get(key)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

const EVENTS_ORGS: usize = 4;
const EVENTS_USERS: usize = 3;

/// The operator (IAM_OWNER PAT, Events mode) with 4 OrgMetadata and 3 UserMetadata, all
/// Ready.
async fn start_with_objects_in_events_mode(env: &TestEnv) -> Running {
    env.emu.add_token(
        "operator-pat",
        TokenGrant::iam_owner(ACME).with_user_id(OPERATOR_USER),
    );
    for i in 0..EVENTS_ORGS {
        env.emu.add_org(&org_id(i), &format!("Drift {i}"));
    }
    for i in 0..EVENTS_USERS {
        env.emu.add_user(&user_id(i), ACME, &format!("drift{i}"));
    }
    let op = Running::start(
        env,
        Some(default_connection(env, "operator-pat")),
        vec![env.ns.clone()],
        events_settings(),
    );
    for i in 0..EVENTS_ORGS {
        env.apply_org_values(
            &format!("o{i}"),
            &org_id(i),
            &[("tier", &format!("gold-{i}")), ("team", "platform")],
        )
        .await;
    }
    for i in 0..EVENTS_USERS {
        env.apply_user(
            &format!("u{i}"),
            json!({"userId": user_id(i), "organizationId": ACME,
                   "metadata": [{"key": "role", "value": format!("dev-{i}")}]}),
        )
        .await;
    }
    for i in 0..EVENTS_ORGS {
        env.wait_org_ready(&format!("o{i}")).await;
    }
    for i in 0..EVENTS_USERS {
        env.wait_user_ready(&format!("u{i}")).await;
    }
    op
}

/// Events mode in the metric, the operator's own writes recognised, and a steady state of
/// ListEvents only (at most 2 per poll interval, no write).
async fn assert_events_mode_steady_state(env: &TestEnv, op: &Running) {
    // Events mode, shown in the metric.
    let mode = r#"zitadel_drift_detection_mode{connection_kind="default",mode="Events"}"#;
    eventually(Duration::from_secs(10), "Events mode metric", || async {
        (op.metric(mode) == 1.0).then_some(())
    })
    .await;

    // The events of the operator's own writes (2 keys × 4 orgs + 1 key × 3 users) are read and
    // recognised as its own: no re-sync.
    let own_writes = (EVENTS_ORGS * 2 + EVENTS_USERS) as f64;
    let own = r#"zitadel_drift_events_total{verdict="own"}"#;
    eventually(POLL * 4, "own writes' events read", || async {
        (op.metric(own) >= own_writes).then_some(())
    })
    .await;
    assert_eq!(
        op.metric(r#"zitadel_drift_events_total{verdict="drift"}"#),
        0.0
    );

    // Steady state: ListEvents only, at most 2 calls per poll interval, no write.
    let mark = env.emu.requests().len();
    let window = POLL * 5;
    tokio::time::sleep(window).await;
    let steady = requests_since(env, mark);
    let ops: BTreeSet<Operation> = steady.iter().map(|r| r.operation).collect();
    assert_eq!(
        ops,
        BTreeSet::from([Operation::ListEvents]),
        "steady state made other calls: {ops:?}"
    );
    let intervals = window.as_secs_f64() / POLL.as_secs_f64();
    let per_interval = steady.len() as f64 / intervals;
    assert!(
        per_interval <= 2.0,
        "{} calls in {window:?} ({per_interval:.2} per poll interval)",
        steady.len()
    );
    assert!(!steady.is_empty(), "the event log is read");
    println!(
        "FIGURE drift_steady_state objects={} poll_interval_s={} window_s={} zitadel_calls={} calls_per_poll_interval={per_interval:.2} writes=0 lists=0",
        EVENTS_ORGS + EVENTS_USERS,
        POLL.as_secs(),
        window.as_secs(),
        steady.len()
    );
}

type Check<'a> = Box<dyn Fn() -> bool + 'a>;

/// The out-of-band edits: what, the target, the edit, and "repaired".
fn out_of_band_edits(env: &TestEnv) -> Vec<(&'static str, String, Check<'_>, Check<'_>)> {
    vec![
        (
            "org value changed",
            format!("org/{}", org_id(1)),
            Box::new(|| {
                env.emu.put_org_metadata(&org_id(1), "tier", b"tampered");
                true
            }),
            Box::new(|| org_value(env, &org_id(1), "tier").as_deref() == Some("gold-1")),
        ),
        (
            "org key removed",
            format!("org/{}", org_id(2)),
            Box::new(|| {
                env.emu.delete_org_metadata(&org_id(2), "team");
                true
            }),
            Box::new(|| org_value(env, &org_id(2), "team").as_deref() == Some("platform")),
        ),
        (
            "user value changed",
            format!("user/{}", user_id(0)),
            Box::new(|| {
                env.emu.put_user_metadata(&user_id(0), "role", b"admin");
                true
            }),
            Box::new(|| user_value(env, &user_id(0), "role").as_deref() == Some("dev-0")),
        ),
        (
            "user key removed",
            format!("user/{}", user_id(2)),
            Box::new(|| {
                env.emu.delete_user_metadata(&user_id(2), "role");
                true
            }),
            Box::new(|| user_value(env, &user_id(2), "role").as_deref() == Some("dev-2")),
        ),
    ]
}

/// After the edit of `target`: only it was listed, one repair write, nothing else but ListEvents.
fn assert_only_the_edited_target_resynced(what: &str, target: &str, calls: &[RecordedRequest]) {
    let listed: BTreeSet<String> = calls
        .iter()
        .filter(|r| is_list(r.operation))
        .filter_map(target_of)
        .collect();
    assert_eq!(
        listed,
        BTreeSet::from([target.to_string()]),
        "{what}: only the edited target is listed"
    );
    let written: Vec<String> = calls
        .iter()
        .filter(|r| is_write(r.operation))
        .filter_map(target_of)
        .collect();
    assert_eq!(
        written,
        vec![target.to_string()],
        "{what}: one repair write"
    );
    assert!(
        calls.iter().all(
            |r| r.operation == Operation::ListEvents || target_of(r).as_deref() == Some(target)
        ),
        "{what}: {:?}",
        calls
            .iter()
            .map(|r| (r.operation, target_of(r)))
            .collect::<Vec<_>>()
    );
}

/// Out-of-band edits (by someone else) repaired within one poll interval (+5 s), each by a
/// re-sync of only the object on that organization or user; a steady state of one ListEvents
/// per poll interval, no write, no listing; the operator's own writes (PAT: recognised by
/// payload) trigger nothing.
#[tokio::test]
async fn events_mode_repairs_out_of_band_edits_from_the_event_log_alone() {
    let env = TestEnv::new("drift-events").await;
    let op = start_with_objects_in_events_mode(&env).await;
    assert_events_mode_steady_state(&env, &op).await;

    // Out-of-band edits, each repaired by re-syncing only its object.
    let bound = POLL + REPAIR_SLACK;
    let mut latencies = Vec::new();
    let cases = out_of_band_edits(&env);
    for (what, target, edit, repaired) in &cases {
        let mark = env.emu.requests().len();
        edit();
        assert!(!repaired(), "{what}: the edit took");
        let took = time_until(bound, what, repaired).await;
        // Let the read-back finish, then look at what was called.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let calls = requests_since(&env, mark);
        assert_only_the_edited_target_resynced(what, target, &calls);
        latencies.push((what.to_string(), took));
    }
    for (what, took) in &latencies {
        println!(
            "FIGURE drift_repair case={:?} latency_ms={} poll_interval_s={}",
            what,
            took.as_millis(),
            POLL.as_secs()
        );
    }
    // Each edit was read as drift (4), and nothing else was.
    assert_eq!(
        op.metric(r#"zitadel_drift_events_total{verdict="drift"}"#),
        4.0
    );
    // The repairs' own events trigger nothing more: quiet again.
    tokio::time::sleep(POLL * 2).await;
    let mark = env.emu.requests().len();
    tokio::time::sleep(POLL * 3).await;
    let quiet = requests_since(&env, mark);
    assert!(
        quiet.iter().all(|r| r.operation == Operation::ListEvents),
        "after the repairs: {:?}",
        quiet.iter().map(|r| r.operation).collect::<Vec<_>>()
    );
    op.stop().await;
}

/// 150 events of one push (one timestamp) — 145 on an organization no object targets, then one
/// edit on each of 5 objects' organizations — are more than a page (100): the poll pages with a
/// bigger page for the batch and repairs all five.
#[tokio::test]
async fn same_timestamp_batches_cut_by_the_page_limit_lose_nothing() {
    const ORGS: usize = 5;
    let env = TestEnv::new("drift-batch").await;
    env.emu.add_token(
        "operator-pat",
        TokenGrant::iam_owner(ACME).with_user_id(OPERATOR_USER),
    );
    for i in 0..ORGS {
        env.emu.add_org(&org_id(10 + i), &format!("Batch {i}"));
    }
    let noise = org_id(30);
    env.emu.add_org(&noise, "Noise");
    let op = Running::start(
        &env,
        Some(default_connection(&env, "operator-pat")),
        vec![env.ns.clone()],
        events_settings(),
    );
    for i in 0..ORGS {
        env.apply_org_values(&format!("b{i}"), &org_id(10 + i), &[("k", "desired")])
            .await;
    }
    for i in 0..ORGS {
        env.wait_org_ready(&format!("b{i}")).await;
    }
    let own = r#"zitadel_drift_events_total{verdict="own"}"#;
    eventually(POLL * 4, "own writes' events read", || async {
        (op.metric(own) >= ORGS as f64).then_some(())
    })
    .await;

    let mark = env.emu.requests().len();
    env.emu.freeze_clock(None);
    for n in 0..145 {
        env.emu
            .put_org_metadata(&noise, &format!("noise-{n}"), b"x");
    }
    for i in 0..ORGS {
        env.emu.put_org_metadata(&org_id(10 + i), "k", b"tampered");
    }
    let at = env.emu.now();
    env.emu.unfreeze_clock();
    let batch: Vec<_> = env
        .emu
        .events()
        .into_iter()
        .filter(|e| e.creation_date == at)
        .collect();
    assert_eq!(batch.len(), 150, "one timestamp for the whole batch");

    let all_repaired =
        || (0..ORGS).all(|i| org_value(&env, &org_id(10 + i), "k").as_deref() == Some("desired"));
    let took = time_until(POLL + REPAIR_SLACK, "all five repaired", all_repaired).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls = requests_since(&env, mark);
    // The batch was paged: a page of 100 came back full, and a bigger one followed.
    let limits: Vec<u64> = calls
        .iter()
        .filter(|r| r.operation == Operation::ListEvents)
        .filter_map(|r| r.body["limit"].as_u64())
        .collect();
    assert!(
        limits.iter().any(|l| *l > 100),
        "no bigger page for the batch: {limits:?}"
    );
    // Nothing was listed for the organization no object targets.
    assert!(
        !calls
            .iter()
            .any(|r| is_list(r.operation) && target_of(r) == Some(format!("org/{noise}"))),
        "the noise organization was listed"
    );
    println!(
        "FIGURE drift_same_timestamp_batch events=150 page=100 repaired=5 latency_ms={} list_events_limits={limits:?}",
        took.as_millis()
    );
    op.stop().await;
}

/// `user.removed` and `org.removed` re-sync the objects on that user, that organization, and
/// the users of that organization (ZITADEL writes no `user.removed` for them); each then reports
/// the target gone by the existing rules instead of staying Ready.
#[tokio::test]
async fn org_and_user_removal_events_reach_their_objects() {
    let env = TestEnv::new("drift-removal").await;
    env.emu.add_token(
        "operator-pat",
        TokenGrant::iam_owner(ACME).with_user_id(OPERATOR_USER),
    );
    let doomed_org = org_id(40);
    env.emu.add_org(&doomed_org, "Doomed");
    let member = user_id(40);
    env.emu.add_user(&member, &doomed_org, "member");
    let doomed_user = user_id(41);
    env.emu.add_user(&doomed_user, ACME, "leaver");
    let op = Running::start(
        &env,
        Some(default_connection(&env, "operator-pat")),
        vec![env.ns.clone()],
        events_settings(),
    );
    env.apply_org_values("org", &doomed_org, &[("k", "v")])
        .await;
    env.apply_user(
        "member",
        json!({"userId": member, "organizationId": doomed_org, "metadata": [{"key": "k", "value": "v"}]}),
    )
    .await;
    env.apply_user(
        "leaver",
        json!({"userId": doomed_user, "organizationId": ACME, "metadata": [{"key": "k", "value": "v"}]}),
    )
    .await;
    env.apply_org_values("bystander", ACME, &[("b", "v")]).await;
    for name in ["org", "bystander"] {
        env.wait_org_ready(name).await;
    }
    for name in ["member", "leaver"] {
        env.wait_user_ready(name).await;
    }
    let not_ready = |s: Option<&zitadel_metadata_operator::crd::MetadataStatus>| {
        condition(s, status::READY) == Some("False")
    };
    let bound = POLL + REPAIR_SLACK;

    let started = Instant::now();
    env.emu.remove_user(&doomed_user);
    let leaver = env
        .wait_user("leaver", "not Ready after user.removed", |u| {
            not_ready(u.status())
        })
        .await;
    let took = started.elapsed();
    assert!(
        took <= bound,
        "user.removed reached its object after {took:?}"
    );
    println!(
        "FIGURE drift_user_removed latency_ms={} reason={:?}",
        took.as_millis(),
        reason(leaver.status())
    );

    let started = Instant::now();
    env.emu.remove_org(&doomed_org);
    let org = env
        .wait_org("org", "not Ready after org.removed", |o| {
            not_ready(o.status())
        })
        .await;
    let member_obj = env
        .wait_user("member", "not Ready after org.removed", |u| {
            not_ready(u.status())
        })
        .await;
    let took = started.elapsed();
    assert!(
        took <= bound,
        "org.removed reached its objects after {took:?}"
    );
    println!(
        "FIGURE drift_org_removed latency_ms={} org_reason={:?} member_reason={:?}",
        took.as_millis(),
        reason(org.status()),
        reason(member_obj.status())
    );
    // The bystander on another organization was left alone.
    let bystander = env.wait_org_ready("bystander").await;
    assert_eq!(condition(bystander.status(), status::READY), Some("True"));
    op.stop().await;
}

fn drift_mode(c: &ZitadelConnection) -> Option<String> {
    c.status
        .as_ref()
        .and_then(|s| s.drift_detection.as_ref())
        .map(|d| d.mode.clone())
}

/// A key-file connection with IAM_OWNER reads events (its own writes recognised by
/// `editor.userId`, the key file's user); an ORG_OWNER PAT connection may not, falls back to
/// polling and says so in its status and the metric — and is still repaired, by its resync.
#[tokio::test]
async fn connections_show_their_mode_and_fall_back_to_polling_without_events_read() {
    let env = TestEnv::new("drift-conns").await;
    let service_user = "300000000000000777";
    env.emu
        .register_service_user(service_user, TokenGrant::iam_owner(ACME));
    let key_json = env.emu.generate_key_file(service_user).expect("key file");
    env.put_secret(&env.ns, "events-key", "key.json", &key_json)
        .await;
    env.emu.add_token(
        "globex-owner",
        TokenGrant::org_owner(GLOBEX).with_user_id("300000000000000778"),
    );
    env.put_secret(&env.ns, "globex-pat", "token", "globex-owner")
        .await;
    let settings = Settings {
        // The polling connection's objects re-list every 4 s (at their phase: 2 … 6 s).
        resync: Duration::from_secs(4),
        ..events_settings()
    };
    let op = Running::start(&env, None, vec![env.ns.clone()], settings);
    env.apply_connection(
        "events",
        json!({"url": env.emu.url(), "api": "V1",
               "credentials": {"jwtProfile": {"name": "events-key", "key": "key.json"}}}),
    )
    .await;
    env.apply_connection(
        "polling",
        json!({"url": env.emu.url(), "api": "V1",
               "credentials": {"personalAccessToken": {"name": "globex-pat", "key": "token"}}}),
    )
    .await;
    let events = env
        .wait_connection("events", "Events mode", |c| {
            drift_mode(c).as_deref() == Some("Events")
        })
        .await;
    let shown = events
        .status
        .and_then(|s| s.drift_detection)
        .expect("shown");
    assert_eq!(shown.event_poll_interval.as_deref(), Some("2s"));
    let polling = env
        .wait_connection("polling", "Polling mode", |c| {
            drift_mode(c).as_deref() == Some("Polling")
        })
        .await;
    let said = polling
        .status
        .and_then(|s| s.drift_detection)
        .expect("shown");
    assert!(said.message.contains("events.read"), "{}", said.message);

    env.apply_org(
        "via-events",
        json!({"organizationId": ACME, "connectionRef": {"name": "events"}, "metadata": [{"key": "e", "value": "1"}]}),
    )
    .await;
    env.apply_org(
        "via-polling",
        json!({"organizationId": GLOBEX, "connectionRef": {"name": "polling"}, "metadata": [{"key": "p", "value": "1"}]}),
    )
    .await;
    env.wait_org_ready("via-events").await;
    env.wait_org_ready("via-polling").await;
    let by_kind = |mode: &str| {
        format!(
            r#"zitadel_drift_detection_mode{{connection_kind="ZitadelConnection",mode="{mode}"}}"#
        )
    };
    eventually(
        Duration::from_secs(10),
        "both modes in the metric",
        || async {
            (op.metric(&by_kind("Events")) == 1.0 && op.metric(&by_kind("Polling")) == 1.0)
                .then_some(())
        },
    )
    .await;

    // The key file's user wrote `e`: recognised by editor, nothing re-lists ACME afterwards.
    let own = r#"zitadel_drift_events_total{verdict="own"}"#;
    eventually(POLL * 4, "own write's event read", || async {
        (op.metric(own) >= 1.0).then_some(())
    })
    .await;
    let mark = env.emu.requests().len();
    tokio::time::sleep(POLL * 3).await;
    let acme_lists = requests_since(&env, mark)
        .iter()
        .filter(|r| is_list(r.operation) && target_of(r) == Some(format!("org/{ACME}")))
        .count();
    assert_eq!(acme_lists, 0, "the operator's own write re-listed ACME");

    // Out-of-band edits: ACME through the event log, GLOBEX by its resync.
    let started = Instant::now();
    env.emu.put_org_metadata(ACME, "e", b"tampered");
    time_until(POLL + REPAIR_SLACK, "ACME repaired from events", || {
        env.org_value(ACME, "e").as_deref() == Some("1")
    })
    .await;
    println!(
        "FIGURE drift_repair_key_file_connection latency_ms={}",
        started.elapsed().as_millis()
    );
    let started = Instant::now();
    env.emu.put_org_metadata(GLOBEX, "p", b"tampered");
    time_until(
        Duration::from_secs(6) + REPAIR_SLACK,
        "GLOBEX repaired by polling",
        || env.org_value(GLOBEX, "p").as_deref() == Some("1"),
    )
    .await;
    println!(
        "FIGURE drift_repair_polling_connection latency_ms={} resync_s=4",
        started.elapsed().as_millis()
    );
    op.stop().await;
}

/// Whether the org-scoped changes APIs (the fallback of credentials without `events.read`,
/// v2e §2.3) would make polling cheaper, measured on the emulator: they cost one call per
/// organization (`ListOrgChanges`, context org) or user (`ListUserChanges`) — as many calls as
/// listing the metadata — carry no payload (so a change still needs the listing afterwards),
/// and only save bytes while nothing changed. Polling therefore keeps plain listings; see the
/// README's Drift detection section.
#[tokio::test]
async fn org_scoped_changes_apis_cost_a_call_per_target_like_a_listing() {
    let emu = zmo_testkit::emulator::Emulator::start_seeded()
        .await
        .expect("emulator");
    emu.add_token("owner", TokenGrant::org_owner(ACME));
    for k in 0..10 {
        emu.put_org_metadata(ACME, &format!("key-{k}"), b"a-value-of-some-12-bytes");
        emu.put_user_metadata(ALICE, &format!("key-{k}"), b"a-value-of-some-12-bytes");
    }
    let http = reqwest::Client::new();
    let call = |path: String, body: serde_json::Value| {
        let http = http.clone();
        let url = format!("{}{path}", emu.url());
        async move {
            let response = http
                .post(url)
                .bearer_auth("owner")
                .header("x-zitadel-orgid", ACME)
                .json(&body)
                .send()
                .await
                .expect("call");
            assert_eq!(response.status(), 200);
            response.bytes().await.expect("body").len()
        }
    };
    let org_changes = call(
        "/management/v1/orgs/me/changes/_search".into(),
        json!({"query": {"sequence": "0", "limit": 0, "asc": true}}),
    )
    .await;
    let latest = emu.org_sequence(ACME);
    let org_unchanged = call(
        "/management/v1/orgs/me/changes/_search".into(),
        json!({"query": {"sequence": latest.to_string(), "limit": 0, "asc": true}}),
    )
    .await;
    let user_changes = call(
        format!("/management/v1/users/{ALICE}/changes/_search"),
        json!({"query": {"sequence": "0", "limit": 0, "asc": true}}),
    )
    .await;
    let org_list = call(
        "/management/v1/metadata/_search".into(),
        json!({"query": {"offset": "0", "asc": true}}),
    )
    .await;
    // No payload in the changes: the keys and values are not there.
    let text = http
        .post(format!(
            "{}/management/v1/orgs/me/changes/_search",
            emu.url()
        ))
        .bearer_auth("owner")
        .header("x-zitadel-orgid", ACME)
        .json(&json!({"query": {"sequence": "0", "limit": 0, "asc": true}}))
        .send()
        .await
        .expect("call")
        .text()
        .await
        .expect("text");
    assert!(text.contains("EventTypes.org.metadata.set"));
    assert!(
        !text.contains("key-0") && !text.contains("YS12YWx1ZS"),
        "{text}"
    );
    assert!(org_unchanged < org_list, "an unchanged org answers smaller");
    println!(
        "FIGURE changes_api calls_per_org=1 calls_per_user=1 calls_per_listing=1 org_changes_bytes={org_changes} org_unchanged_bytes={org_unchanged} user_changes_bytes={user_changes} org_list_bytes={org_list} payload=none"
    );
    emu.shutdown().await;
}
