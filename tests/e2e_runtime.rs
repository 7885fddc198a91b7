//! The production runtime of the real operator binary: leader election between replicas
//! (SIGKILL fail-over and SIGTERM hand-over, measured), `/metrics` after a scenario, and the
//! health endpoints. Runs against the shared test control plane and a ZITADEL emulator.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use serde_json::json;
use tokio::time::Instant;
use zitadel_metadata_operator::crd::MetadataResource;
use zmo_testkit::emulator::{Fault, Operation};

/// The Lease name when `--leader-election-id` is not given.
const LEASE: &str = "zitadel-metadata-operator";
/// The default timings (the tests use them, so the measured times are the production ones).
const LEASE_DURATION: Duration = Duration::from_secs(15);
const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// One operator process.
struct Replica {
    name: String,
    binary: OperatorBinary,
    health: String,
    metrics: String,
}

impl Replica {
    /// Start the binary watching the test namespace; `leader_elect` adds `--leader-elect` with
    /// the Lease in the test namespace. `POD_NAME` = `name`, so the Lease holder names the replica.
    fn start(env: &TestEnv, token_file: &std::path::Path, name: &str, leader_elect: bool) -> Self {
        Self::start_with(env, token_file, name, leader_elect, &[])
    }

    /// [`Self::start`] with `extra` flags.
    fn start_with(
        env: &TestEnv,
        token_file: &std::path::Path,
        name: &str,
        leader_elect: bool,
        extra: &[&str],
    ) -> Self {
        let (health, metrics) = (free_addr(), free_addr());
        let mut launch = Launch::new(env.cp.kubeconfig_path(), &env.ns, "2s")
            .zitadel(&env.emu.url(), token_file)
            // The metrics checked below are v1 operation names: the API is pinned (and the
            // flag's effect is visible in `zitadel_api_selected`).
            .args(["--zitadel-api", "v1"])
            .args(["--max-concurrent-reconciles", "3"])
            .addresses(&health, &metrics)
            .env("RUST_LOG", "info,kube=warn")
            .env("POD_NAME", name)
            .args(extra.iter().copied());
        if leader_elect {
            launch = launch.args(["--leader-elect", "--leader-election-namespace", &env.ns]);
        }
        Replica {
            name: name.to_string(),
            binary: launch.spawn(),
            health,
            metrics,
        }
    }

    async fn get(addr: &str, path: &str) -> Option<(u16, String, String)> {
        http_get(addr, path).await
    }

    async fn health_status(&self, path: &str) -> Option<u16> {
        Self::get(&self.health, path).await.map(|(s, _, _)| s)
    }

    async fn scrape(&self) -> Option<String> {
        match Self::get(&self.metrics, "/metrics").await {
            Some((200, _, body)) => Some(body),
            _ => None,
        }
    }

    /// `leader_election_master_status` of this replica, if it answers.
    async fn leading(&self) -> Option<bool> {
        let text = self.scrape().await?;
        sample(
            &text,
            &format!("leader_election_master_status{{name=\"{LEASE}\"}}"),
        )
        .map(|v| v == 1.0)
    }

    async fn kill(&mut self) {
        self.binary.kill().await;
    }

    fn terminate(&self) {
        self.binary.terminate();
    }

    async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        self.binary.wait_exit(within).await
    }
}

/// The value of the sample `series` (metric name with its labels, exactly as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// `replica-a`, started alone with leader election, once it leads.
async fn leading_replica(env: &TestEnv, token: &std::path::Path) -> Replica {
    let a = Replica::start(env, token, "replica-a", true);
    eventually(Duration::from_secs(30), "replica-a leads", || async {
        a.leading().await.filter(|l| *l)
    })
    .await;
    a
}

/// Wait until exactly one of `replicas` reports leadership and the others report standby;
/// returns the leader's index.
async fn one_leader(replicas: &[&Replica]) -> usize {
    eventually(Duration::from_secs(30), "exactly one leader", || async {
        let mut states = Vec::new();
        for r in replicas {
            states.push(r.leading().await?);
        }
        (states.iter().filter(|l| **l).count() == 1).then(|| {
            states
                .iter()
                .position(|l| *l)
                .expect("one leader in the list")
        })
    })
    .await
}

async fn lease_holder(env: &TestEnv) -> (Option<String>, i32) {
    let api: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns);
    let lease = api.get(LEASE).await.expect("Lease exists");
    let spec = lease.spec.unwrap_or_default();
    (spec.holder_identity, spec.lease_transitions.unwrap_or(0))
}

fn token_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).expect("token file");
    token
}

async fn create_ready_org(env: &TestEnv, name: &str, org: &str) -> Duration {
    let started = Instant::now();
    env.apply_org(
        name,
        json!({"organizationId": org, "metadata": [{"key": name, "value": "v"}]}),
    )
    .await;
    env.wait_org_ready(name).await;
    started.elapsed()
}

/// No reconcile and no ZITADEL request went through `text` (a standby's metrics).
fn did_no_work(text: &str) -> bool {
    text.lines().all(|l| {
        !(l.starts_with("controller_runtime_reconcile_total{")
            || l.starts_with("zitadel_requests_total{"))
            || l.ends_with(" 0")
    })
}

#[tokio::test]
async fn sigkill_of_the_leader_fails_over_within_the_lease_duration() {
    let env = TestEnv::new("le-kill").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = token_file(&dir);
    let mut replicas = vec![
        Replica::start(&env, &token, "replica-a", true),
        Replica::start(&env, &token, "replica-b", true),
    ];
    let leader = one_leader(&[&replicas[0], &replicas[1]]).await;
    let standby = 1 - leader;
    let (holder, _) = lease_holder(&env).await;
    let holder = holder.expect("Lease has a holder");
    assert!(
        holder.starts_with(&format!("{}_", replicas[leader].name)),
        "Lease held by {holder}, but {} reports leadership",
        replicas[leader].name
    );
    // Both are healthy and ready: the leader once synced, the standby because it stands by.
    for r in &replicas {
        eventually(
            Duration::from_secs(30),
            "healthz and readyz 200",
            || async {
                (r.health_status("/healthz").await == Some(200)
                    && r.health_status("/readyz").await == Some(200))
                .then_some(())
            },
        )
        .await;
    }

    create_ready_org(&env, "before", ACME).await;
    // Only the leader reconciled and talked to ZITADEL.
    let standby_text = replicas[standby].scrape().await.expect("standby metrics");
    assert!(
        did_no_work(&standby_text),
        "standby worked:\n{standby_text}"
    );
    let leader_text = replicas[leader].scrape().await.expect("leader metrics");
    assert!(
        sample(
            &leader_text,
            "zitadel_requests_total{operation=\"BulkSetOrgMetadata\",code=\"200\"}"
        )
        .is_some_and(|v| v >= 1.0),
        "{leader_text}"
    );

    // SIGKILL: no release, the standby must wait for the Lease to expire.
    replicas[leader].kill().await;
    let killed = Instant::now();
    let survivor = &replicas[standby];
    eventually(
        LEASE_DURATION + RETRY_PERIOD * 3 + Duration::from_secs(2),
        "standby takes over",
        || async { survivor.leading().await.filter(|l| *l) },
    )
    .await;
    let failover = killed.elapsed();
    let ready_in = create_ready_org(&env, "after", GLOBEX).await;
    eprintln!(
        "MEASURED SIGKILL fail-over: standby leading {:.1}s after the kill (lease duration {:?}, retry period {:?}); an object created then was Ready {:.1}s later",
        failover.as_secs_f64(),
        LEASE_DURATION,
        RETRY_PERIOD,
        ready_in.as_secs_f64()
    );
    // The standby waits for a full lease duration from the last renewal it saw (client-go's
    // rule): at most lease duration + one retry period after the kill, plus its own poll.
    assert!(
        failover <= LEASE_DURATION + RETRY_PERIOD * 3,
        "fail-over took {failover:?}"
    );
    assert!(
        failover >= LEASE_DURATION - RETRY_PERIOD * 2,
        "took over before the Lease could expire: {failover:?}"
    );
    let (holder, transitions) = lease_holder(&env).await;
    assert!(
        holder
            .as_deref()
            .is_some_and(|h| h.starts_with(&format!("{}_", survivor.name))),
        "{holder:?}"
    );
    assert!(transitions >= 1, "leaseTransitions {transitions}");
    assert_eq!(env.org_value(GLOBEX, "after").as_deref(), Some("v"));

    let status = replicas.swap_remove(standby).binary.stop().await;
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn sigterm_of_the_leader_hands_over_at_once() {
    let env = TestEnv::new("le-term").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = token_file(&dir);
    // Let the first one win, so the roles are known.
    let mut a = leading_replica(&env, &token).await;
    let mut b = Replica::start(&env, &token, "replica-b", true);
    eventually(Duration::from_secs(30), "replica-b stands by", || async {
        (b.leading().await == Some(false) && b.health_status("/readyz").await == Some(200))
            .then_some(())
    })
    .await;
    assert_eq!(one_leader(&[&a, &b]).await, 0);
    create_ready_org(&env, "before", ACME).await;
    let (_, transitions_before) = lease_holder(&env).await;

    // SIGTERM: the leader finishes in-flight work, releases the Lease and exits 0.
    a.terminate();
    let terminated = Instant::now();
    let status = a.wait_exit(Duration::from_secs(15)).await;
    let exited = terminated.elapsed();
    assert!(status.success(), "leader exited with {status}");
    eventually(Duration::from_secs(10), "replica-b takes over", || async {
        b.leading().await.filter(|l| *l)
    })
    .await;
    let handover = terminated.elapsed();
    let ready_in = create_ready_org(&env, "after", GLOBEX).await;
    eprintln!(
        "MEASURED SIGTERM hand-over: leader exited {:.2}s after SIGTERM, standby leading {:.2}s after SIGTERM (retry period {:?}); an object created then was Ready {:.1}s later",
        exited.as_secs_f64(),
        handover.as_secs_f64(),
        RETRY_PERIOD,
        ready_in.as_secs_f64()
    );
    // Released, not expired: within one jittered retry period (≤ 2.4 s) plus the shutdown;
    // the slack is for a loaded CI machine.
    assert!(handover < RETRY_PERIOD * 3, "hand-over took {handover:?}");
    let (holder, transitions) = lease_holder(&env).await;
    assert!(
        holder
            .as_deref()
            .is_some_and(|h| h.starts_with("replica-b_")),
        "{holder:?}"
    );
    assert_eq!(transitions, transitions_before + 1);

    b.terminate();
    let status = b.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "{status}");
    // The last leader released the Lease too.
    let (holder, _) = lease_holder(&env).await;
    assert_eq!(holder, None);
}

/// A reconcile stuck in a ZITADEL call that never answers (within a long `--request-timeout`)
/// does not hold the shutdown: after `--shutdown-timeout` the leader stops it, releases the
/// Lease and exits 0.
#[tokio::test]
async fn sigterm_with_a_stuck_reconcile_exits_after_the_shutdown_timeout() {
    let env = TestEnv::new("le-stuck").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = token_file(&dir);
    let flags = ["--request-timeout", "120s", "--shutdown-timeout", "2s"];
    let mut a = Replica::start_with(&env, &token, "replica-a", true, &flags);
    eventually(Duration::from_secs(30), "replica-a leads", || async {
        a.leading().await.filter(|l| *l)
    })
    .await;
    env.emu.inject(
        Fault::hang()
            .on(Operation::BulkSetOrgMetadata)
            .on(Operation::ListOrgMetadata),
    );
    env.apply_org(
        "stuck",
        json!({"organizationId": ACME, "metadata": [{"key": "k", "value": "v"}]}),
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "a metadata call in flight",
        || async {
            env.emu
                .requests()
                .iter()
                .any(|r| r.status == 0 && r.path.starts_with("/management/v1/metadata"))
                .then_some(())
        },
    )
    .await;
    a.terminate();
    let terminated = Instant::now();
    // Without the bound the leader would wait for the 120 s request timeout.
    let status = a.wait_exit(Duration::from_secs(15)).await;
    let exited = terminated.elapsed();
    eprintln!(
        "MEASURED stuck shutdown: exited {:.2}s after SIGTERM (--shutdown-timeout 2s)",
        exited.as_secs_f64()
    );
    assert!(status.success(), "leader exited with {status}");
    assert!(
        exited >= Duration::from_secs(2),
        "exited before the timeout: {exited:?}"
    );
    assert_eq!(lease_holder(&env).await.0, None, "the Lease was released");
}

/// Healthy and ready, then two Ready orgs, one Ready user and one user that stalls (unknown in
/// ZITADEL); returns the org names.
async fn healthy_with_four_objects(env: &TestEnv, op: &Replica) -> [&'static str; 2] {
    eventually(Duration::from_secs(30), "healthz 200", || async {
        (op.health_status("/healthz").await == Some(200)).then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(30),
        "readyz 200 after cache sync",
        || async { (op.health_status("/readyz").await == Some(200)).then_some(()) },
    )
    .await;

    // Two Ready orgs, one Ready user, one user that stalls (unknown in ZITADEL).
    let names = ["metrics-alpha-org", "metrics-beta-org"];
    create_ready_org(env, names[0], ACME).await;
    create_ready_org(env, names[1], GLOBEX).await;
    env.apply_user(
        "metrics-gamma-user",
        json!({"userId": ALICE, "metadata": [{"key": "team", "value": "sre"}]}),
    )
    .await;
    env.wait_user_ready("metrics-gamma-user").await;
    env.apply_user(
        "metrics-ghost-user",
        json!({"userId": "299999999999999999", "metadata": [{"key": "k", "value": "v"}]}),
    )
    .await;
    env.wait_user("metrics-ghost-user", "Stalled", |o| {
        condition(o.status(), "Stalled") == Some("True")
    })
    .await;

    names
}

/// The sample `series` of `text`, at least `min`.
fn at_least(text: &str, series: &str, min: f64) -> f64 {
    let v = sample(text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert!(v >= min, "{series} = {v}, expected >= {min}");
    v
}

/// The sample `series` of `text` is `want`.
fn exactly(text: &str, series: &str, want: f64) {
    let v = sample(text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert_eq!(v, want, "{series}");
}

/// The controller-runtime families after [`healthy_with_four_objects`] (`text` is `/metrics`).
fn check_controller_metrics(text: &str) {
    let at_least = |series: &str, min: f64| at_least(text, series, min);
    let exactly = |series: &str, want: f64| exactly(text, series, want);
    at_least(
        "controller_runtime_reconcile_total{controller=\"orgmetadata\",result=\"success\"}",
        2.0,
    );
    at_least(
        "controller_runtime_reconcile_total{controller=\"usermetadata\",result=\"success\"}",
        1.0,
    );
    // The first reconcile of each object only adds the finalizer.
    at_least(
        "controller_runtime_reconcile_total{controller=\"orgmetadata\",result=\"requeue\"}",
        2.0,
    );
    // The unknown user: a terminal error (Stalled), counted as an error too.
    at_least(
        "controller_runtime_reconcile_total{controller=\"usermetadata\",result=\"error\"}",
        1.0,
    );
    at_least(
        "controller_runtime_reconcile_errors_total{controller=\"usermetadata\"}",
        1.0,
    );
    at_least(
        "controller_runtime_terminal_reconcile_errors_total{controller=\"usermetadata\"}",
        1.0,
    );
    exactly(
        "controller_runtime_terminal_reconcile_errors_total{controller=\"orgmetadata\"}",
        0.0,
    );
    let reconciles = at_least(
        "controller_runtime_reconcile_time_seconds_count{controller=\"orgmetadata\"}",
        4.0,
    );
    let seconds = at_least(
        "controller_runtime_reconcile_time_seconds_sum{controller=\"orgmetadata\"}",
        0.0,
    );
    assert!(
        seconds / reconciles < 5.0,
        "mean reconcile {}",
        seconds / reconciles
    );
    exactly(
        "controller_runtime_max_concurrent_reconciles{controller=\"orgmetadata\"}",
        3.0,
    );
    exactly(
        "controller_runtime_max_concurrent_reconciles{controller=\"usermetadata\"}",
        3.0,
    );
    let active = at_least(
        "controller_runtime_active_workers{controller=\"orgmetadata\"}",
        0.0,
    );
    assert!(active <= 3.0, "active workers {active}");
}

/// The ZITADEL client's families: they match what the emulator saw.
fn check_zitadel_metrics(text: &str, env: &TestEnv) {
    let at_least = |series: &str, min: f64| at_least(text, series, min);
    let exactly = |series: &str, want: f64| exactly(text, series, want);
    // ZITADEL client: one bulk set per org, matching what the emulator saw.
    exactly(
        "zitadel_requests_total{operation=\"BulkSetOrgMetadata\",code=\"200\"}",
        env.emu
            .requests()
            .iter()
            .filter(|r| r.operation == Operation::BulkSetOrgMetadata && r.status == 200)
            .count() as f64,
    );
    at_least(
        "zitadel_requests_total{operation=\"BulkSetOrgMetadata\",code=\"200\"}",
        2.0,
    );
    at_least(
        "zitadel_requests_total{operation=\"ListOrgMetadata\",code=\"200\"}",
        2.0,
    );
    at_least(
        "zitadel_requests_total{operation=\"BulkSetUserMetadata\",code=\"200\"}",
        1.0,
    );
    // `--zitadel-api v1` reached the default connection: pinned, no probe.
    exactly(
        "zitadel_api_selected{service=\"org_metadata\",api=\"v1\"}",
        1.0,
    );
    exactly(
        "zitadel_api_selected{service=\"user_metadata\",api=\"v1\"}",
        1.0,
    );
    at_least(
        "zitadel_requests_total{operation=\"GetUserByID\",code=\"404\"}",
        1.0,
    );
    at_least(
        "zitadel_request_duration_seconds_count{operation=\"BulkSetOrgMetadata\"}",
        2.0,
    );
}

#[tokio::test]
async fn metrics_and_health_after_a_scenario() {
    let env = TestEnv::new("runtime-metrics").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = token_file(&dir);
    let op = Replica::start(&env, &token, "solo", false);

    let names = healthy_with_four_objects(&env, &op).await;
    // The gauges read the caches, which follow the API within moments.
    let text = eventually(Duration::from_secs(10), "object gauges settle", || async {
        let text = op.scrape().await?;
        let org_true = sample(
            &text,
            "zitadel_metadata_objects{kind=\"OrgMetadata\",condition=\"True\"}",
        )?;
        let user_true = sample(
            &text,
            "zitadel_metadata_objects{kind=\"UserMetadata\",condition=\"True\"}",
        )?;
        let user_false = sample(
            &text,
            "zitadel_metadata_objects{kind=\"UserMetadata\",condition=\"False\"}",
        )?;
        (org_true == 2.0 && user_true == 1.0 && user_false == 1.0).then_some(text)
    })
    .await;
    eprintln!("--- /metrics after the scenario ---\n{text}---");

    let (_, content_type, _) = Replica::get(&op.metrics, "/metrics").await.expect("scrape");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    check_controller_metrics(&text);
    check_zitadel_metrics(&text, &env);
    let exactly = |series: &str, want: f64| exactly(&text, series, want);
    exactly("zitadel_token_refreshes_total", 0.0);
    exactly(
        "zitadel_metadata_objects{kind=\"OrgMetadata\",condition=\"Unknown\"}",
        0.0,
    );
    // Without --leader-elect there is no election to report.
    assert!(!text.contains("leader_election_master_status{"), "{text}");
    // Bounded labels only: no object names, no namespace, no ids.
    for needle in names.iter().copied().chain([
        "metrics-gamma-user",
        "metrics-ghost-user",
        env.ns.as_str(),
        ACME,
        "299999999999999999",
    ]) {
        assert!(!text.contains(needle), "{needle} appears in /metrics");
    }

    // A rotated token file counts as a refresh.
    std::fs::write(&token, format!("{TOKEN}-rotated")).expect("rotate token");
    env.emu.add_token(
        &format!("{TOKEN}-rotated"),
        zmo_testkit::emulator::TokenGrant::iam_owner(ACME),
    );
    env.apply_org(
        names[0],
        json!({"organizationId": ACME, "metadata": [{"key": names[0], "value": "w"}]}),
    )
    .await;
    env.wait_org(names[0], "Ready again", |o| {
        is_ready(o.status(), o.metadata.generation)
    })
    .await;
    eventually(Duration::from_secs(10), "token refresh counted", || async {
        let text = op.scrape().await?;
        (sample(&text, "zitadel_token_refreshes_total")? >= 1.0).then_some(())
    })
    .await;

    let status = op.binary.stop().await;
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn a_leader_that_loses_its_lease_stops_at_once() {
    let env = TestEnv::new("le-lost").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = token_file(&dir);
    let mut a = leading_replica(&env, &token).await;
    create_ready_org(&env, "before", ACME).await;

    // Someone else takes the Lease (as a partitioned leader would find after the fact).
    let api: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns);
    let mut lease = api.get(LEASE).await.expect("Lease");
    let spec = lease.spec.get_or_insert_with(Default::default);
    spec.holder_identity = Some("intruder".into());
    spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    api.replace(LEASE, &Default::default(), &lease)
        .await
        .expect("take the Lease");
    let taken = Instant::now();
    let status = a.wait_exit(RETRY_PERIOD * 2 + Duration::from_secs(2)).await;
    eprintln!(
        "MEASURED lease loss: leader exited {:.2}s after another holder took the Lease",
        taken.elapsed().as_secs_f64()
    );
    assert!(
        !status.success(),
        "a leader that lost its Lease must exit non-zero, got {status}"
    );
    // It did not write the Lease back.
    let (holder, _) = lease_holder(&env).await;
    assert_eq!(holder.as_deref(), Some("intruder"));
}
