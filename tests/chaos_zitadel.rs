//! Chaos on the ZITADEL side: the operator (in-process) against the real control plane and the
//! ZITADEL emulator while the emulator fails — 500/503 bursts, 429 with `Retry-After` (quota JSON
//! and plain text, API and token endpoint), connection resets before ZITADEL handled a write and
//! after it committed one (answer lost), hangs past the client timeout (API and token endpoint),
//! slow answers below it, keys removed by someone else between the operator's read and its remove
//! (once, twice in a row, during deletion), access tokens expiring mid-run, ZITADEL down while a
//! connection is probed, steady state under 5% errors, and a load run with 1,000 objects created,
//! edited and partly deleted while 5% of the requests fail.
//!
//! The scenarios assert backoff (attempt counts and delays from the emulator's request log and
//! its arrival timestamps), the conditions while the fault lasts (Ready=False, Reconciling=True
//! with a transient reason, Stalled=False), convergence afterwards, and no duplicate or lost
//! write (final emulator state == desired state; successful bulk writes == writes needed).
//!
//! Each scenario prints one `FIGURE <name> key=value…` line (also appended to
//! `$CARGO_TARGET_TMPDIR/chaos_zitadel_figures.txt`); run with `-- --nocapture` to see them:
//!
//! ```sh
//! cargo test --test chaos_zitadel -- --nocapture
//! CHAOS_LONG=1 cargo test --test chaos_zitadel load -- --nocapture   # 5,000 objects
//! ```
//!
//! `CHAOS_LONG=1` runs the load scenario with 5,000 objects instead of 1,000 (`CHAOS_OBJECTS=N`
//! picks any other count). Measured on the shared 2-core machine (2026-11-23, debug build): the
//! default file takes about a minute of test time (scenarios run in parallel), the 5,000-object
//! load run alone 7.1 minutes.
//!
//! The default connection (and the connections the tests create) is pinned to Management API
//! v1: the scenarios inject faults into, and count, v1 operations. The deletion-safety cases
//! (routing 404, `AUTHZ-cdgFk`, `AUTH-Bs7Ds`) are in `tests/chaos_deletion.rs`, on both APIs.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt as _;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams};
use serde_json::{Value, json};
use zitadel_metadata_operator::controller::Settings;
use zitadel_metadata_operator::crd::{MetadataResource, OrgMetadata};
use zitadel_metadata_operator::status::{READY, RECONCILING, STALLED};
use zmo_testkit::emulator::{Fault, Operation, RecordedRequest, TokenGrant};

/// Timings of the fault scenarios: base and max large enough that the delays dominate the
/// reconcile's own time on a loaded machine, small enough to see several retries in seconds.
fn chaos_settings() -> Settings {
    Settings {
        resync: Duration::from_secs(300),
        backoff_base: Duration::from_millis(300),
        backoff_max: Duration::from_millis(2400),
        concurrency: 8,
        ..fast_settings()
    }
}

/// Jitter factor bounds of the operator's backoff.
const JITTER_MIN: f64 = 0.8;
const JITTER_MAX: f64 = 1.2;

/// One `FIGURE` line: printed and appended to the figures file.
fn figure(name: &str, fields: &[(&str, String)]) {
    let mut line = format!("FIGURE {name}");
    for (k, v) in fields {
        line.push_str(&format!(" {k}={v}"));
    }
    println!("{line}");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("chaos_zitadel_figures.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// Org ids for the scenarios (18 digits, outside the demo ids).
fn org_id(i: usize) -> String {
    format!("{}", 110_000_000_000_000_000u64 + i as u64)
}

fn user_id(i: usize) -> String {
    format!("{}", 210_000_000_000_000_000u64 + i as u64)
}

fn entries(map: &BTreeMap<String, String>) -> Value {
    Value::Array(
        map.iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect(),
    )
}

fn kv(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn decoded(map: BTreeMap<String, Vec<u8>>) -> BTreeMap<String, String> {
    map.into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect()
}

/// Requests carrying `x-zitadel-orgid: org`, in arrival order.
fn requests_in(emu_requests: &[RecordedRequest], org: &str) -> Vec<RecordedRequest> {
    emu_requests
        .iter()
        .filter(|r| r.org_header.as_deref() == Some(org))
        .cloned()
        .collect()
}

fn secs_between(a: &RecordedRequest, b: &RecordedRequest) -> f64 {
    (b.received_unix_micros as f64 - a.received_unix_micros as f64) / 1e6
}

/// The operator's backoff before attempt `n + 1` after `n` consecutive failures, before jitter.
fn nominal_backoff(s: &Settings, failures: u32) -> f64 {
    let exp = s.backoff_base.as_secs_f64() * 2f64.powi(failures.saturating_sub(1) as i32);
    exp.min(s.backoff_max.as_secs_f64())
}

/// Shortest delay the operator may wait after `failures` failures (jitter and bounds applied).
fn min_backoff(s: &Settings, failures: u32) -> f64 {
    (nominal_backoff(s, failures) * JITTER_MIN).max(s.backoff_base.as_secs_f64())
}

fn conditions_of(st: Option<&zitadel_metadata_operator::crd::MetadataStatus>) -> (String, String) {
    let c = |t| condition(st, t).unwrap_or("-");
    (
        format!(
            "Ready={},Reconciling={},Stalled={}",
            c(READY),
            c(RECONCILING),
            c(STALLED)
        ),
        reason(st).unwrap_or_default().to_string(),
    )
}

/// Ready=False, Reconciling=True, Stalled=False with `want_reason`, for the current generation.
fn retrying_with<K: MetadataResource>(o: &K, want_reason: &str) -> bool {
    let st = o.status();
    condition(st, READY) == Some("False")
        && condition(st, RECONCILING) == Some("True")
        && condition(st, STALLED) == Some("False")
        && reason(st) == Some(want_reason)
        && st.and_then(|s| s.observed_generation) == o.meta().generation
}

/// Wait (up to `limit`) until the OrgMetadata `name` is Retrying with `want_reason`.
async fn wait_retrying(env: &TestEnv, name: &str, want_reason: &str) -> OrgMetadata {
    env.wait_org(name, &format!("Reconciling with {want_reason}"), |o| {
        retrying_with(o, want_reason)
    })
    .await
}

/// A test namespace and an operator with [`chaos_settings`], pinned to Management API v1.
async fn chaos_v1(prefix: &str) -> (TestEnv, Operator) {
    let env = TestEnv::new(prefix).await;
    let op = env.start_operator_with_api(chaos_settings(), ApiMode::V1);
    (env, op)
}

/// Applies `name` on ACME with exactly `pairs`; returns the pairs.
async fn apply_acme(env: &TestEnv, name: &str, pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let desired = kv(pairs);
    env.apply_org(
        name,
        json!({"organizationId": ACME, "metadata": entries(&desired)}),
    )
    .await;
    desired
}

/// Holds the next `times` requests of `op` for `ms` on arrival, before ZITADEL handles them.
fn hold(env: &TestEnv, op: Operation, ms: u64, times: u32) {
    env.emu.inject(
        Fault::latency(Duration::from_millis(ms))
            .on(op)
            .times(times),
    );
}

/// `name` on ACME with exactly `pairs`, once Ready; returns the pairs.
async fn synced_org(env: &TestEnv, name: &str, pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let desired = apply_acme(env, name, pairs).await;
    wait_ready(env, name).await;
    desired
}

async fn wait_ready(env: &TestEnv, name: &str) -> OrgMetadata {
    env.wait_org(name, "Ready", |o| {
        is_ready(o.status(), o.metadata.generation)
    })
    .await
}

/// Successful bulk sets (status 200) in `requests`, with the keys each carried.
fn bulk_sets(requests: &[RecordedRequest], op: Operation) -> Vec<BTreeSet<String>> {
    requests
        .iter()
        .filter(|r| r.operation == op && r.status == 200)
        .map(|r| {
            r.body["metadata"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|m| m["key"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect()
}

/// Warning events whose reason is `reason`.
async fn warnings(env: &TestEnv, reason: &str) -> usize {
    env.events()
        .await
        .iter()
        .filter(|(r, _)| r == reason)
        .count()
}

// ---------------------------------------------------------------------------------------------
// 500/503 bursts: exponential backoff with jitter, bounded attempts, conditions, convergence.
// ---------------------------------------------------------------------------------------------

/// Retry gaps (seconds) of the objects in a burst: all normalized to their nominal delay, and
/// the waits before the 2nd, 3rd and 5th attempt.
#[derive(Default)]
struct Gaps {
    normalized: Vec<f64>,
    first: Vec<f64>,
    second: Vec<f64>,
    fourth: Vec<f64>,
}

/// One object's attempts during a 503 burst cleared at `cleared_at`: each failed attempt is one
/// list, spaced by at least the backoff minimum and at most its jittered maximum, no more than
/// fit the window; afterwards one bulk set. Returns the failed attempts and when the first came.
fn check_burst_retries(
    env: &TestEnv,
    settings: &Settings,
    reqs: &[RecordedRequest],
    org: &str,
    desired: &BTreeMap<String, String>,
    cleared_at: u64,
    gaps: &mut Gaps,
) -> (usize, u64) {
    let mine = requests_in(reqs, org);
    let failed: Vec<&RecordedRequest> = mine.iter().filter(|r| r.status == 503).collect();
    // Each failed attempt is one request (the first call of the reconcile): the new object's
    // first attempt is its bulk set (it manages nothing, so it does not list first); every
    // retry lists first (the outcome of a failed write is not known for sure).
    assert!(
        failed.first().map(|r| r.operation) == Some(Operation::BulkSetOrgMetadata)
            && failed[1..]
                .iter()
                .all(|r| r.operation == Operation::ListOrgMetadata),
        "{org}: a failed reconcile went past its first call: {:?}",
        failed.iter().map(|r| r.operation).collect::<Vec<_>>()
    );
    for (n, pair) in failed.windows(2).enumerate() {
        let failures = n as u32 + 1;
        let gap = secs_between(pair[0], pair[1]);
        let min = min_backoff(settings, failures);
        assert!(
            gap >= min - 0.002,
            "{org}: retry {failures} came after {gap:.3} s, before the backoff minimum {min:.3} s"
        );
        // Generous upper bound: 20% jitter plus a loaded machine's scheduling delays.
        let max = nominal_backoff(settings, failures) * JITTER_MAX + 2.0;
        assert!(
            gap <= max,
            "{org}: retry {failures} waited {gap:.3} s (> {max:.3} s)"
        );
        gaps.normalized
            .push(gap / nominal_backoff(settings, failures));
        if failures == 1 {
            gaps.first.push(gap);
        }
        if failures == 2 {
            gaps.second.push(gap);
        }
        if failures == 4 {
            gaps.fourth.push(gap);
        }
    }
    // Bounded: no more attempts than the shortest possible delays fit into the fault window.
    let window = (cleared_at.saturating_sub(failed[0].received_unix_micros)) as f64 / 1e6;
    let (mut t, mut possible) = (0.0, 1u32);
    while t + min_backoff(settings, possible) <= window {
        t += min_backoff(settings, possible);
        possible += 1;
    }
    assert!(
        failed.len() as u32 <= possible,
        "{org}: {} failed attempts in {window:.2} s, at most {possible} possible with backoff",
        failed.len()
    );
    // After the fault: one bulk set with both keys, one read-back.
    let after: Vec<&RecordedRequest> = mine.iter().filter(|r| r.status != 503).collect();
    assert!(after.iter().all(|r| r.status == 200), "{org}: {after:?}");
    assert_eq!(
        bulk_sets(&mine, Operation::BulkSetOrgMetadata),
        vec![desired.keys().cloned().collect::<BTreeSet<_>>()],
        "{org}: exactly one bulk set after the burst"
    );
    assert_eq!(decoded(env.emu.org_metadata(org)), *desired, "{org}");
    (failed.len(), failed[0].received_unix_micros)
}

#[tokio::test]
async fn unavailable_burst_backs_off_with_growing_jittered_delays() {
    const OBJECTS: usize = 8;
    let env = TestEnv::new("chaos-503").await;
    let settings = chaos_settings();
    for i in 0..OBJECTS {
        env.emu.add_org(&org_id(i), &format!("Burst {i}"));
    }
    // 503 on every call until cleared (500s for half the orgs' first calls are covered by the
    // load scenario; here one kind keeps the attempt arithmetic simple).
    env.emu.inject(Fault::unavailable());
    let op = env.start_operator_with_api(settings.clone(), ApiMode::V1);
    let desired = kv(&[("tier", "gold"), ("region", "eu")]);
    for i in 0..OBJECTS {
        env.apply_org(
            &format!("o{i}"),
            json!({"organizationId": org_id(i), "metadata": entries(&desired)}),
        )
        .await;
    }
    // During the burst: Ready=False, Reconciling=True (ZitadelUnavailable), not Stalled.
    for i in 0..OBJECTS {
        let o = wait_retrying(&env, &format!("o{i}"), "ZitadelUnavailable").await;
        let (conds, _) = conditions_of(o.status());
        assert!(message(o.status()).contains("503"), "{conds}");
    }
    // Keep the fault until every object failed at least 5 times (~0.3+0.6+1.2+2.4 s).
    let fault_started = Instant::now();
    loop {
        let reqs = env.emu.requests();
        if (0..OBJECTS).all(|i| requests_in(&reqs, &org_id(i)).len() >= 5) {
            break;
        }
        assert!(
            fault_started.elapsed() < Duration::from_secs(60),
            "objects did not retry 5 times within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.emu.clear_faults();
    let cleared_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default();
    let converge_start = Instant::now();
    for i in 0..OBJECTS {
        wait_ready(&env, &format!("o{i}")).await;
    }
    let converge_s = converge_start.elapsed().as_secs_f64();

    let reqs = env.emu.requests();
    let mut gaps = Gaps::default();
    let mut failed_total = 0;
    let mut starts = Vec::new();
    for i in 0..OBJECTS {
        let org = org_id(i);
        let (failed, started) = check_burst_retries(
            &env, &settings, &reqs, &org, &desired, cleared_at, &mut gaps,
        );
        failed_total += failed;
        starts.push(started);
    }
    // Growing delays. The first wait also carries the first failure's status write and Event,
    // so compare the 4th (nominal 2.4 s, capped) with the 2nd (0.6 s).
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(
        mean(&gaps.fourth) > 2.0 * mean(&gaps.second),
        "delays do not grow: second {:?}, fourth {:?}",
        gaps.second,
        gaps.fourth
    );
    // Jitter: some waits are shorter than the nominal delay (scheduling only ever adds time),
    // and the objects that started together drift apart.
    let below = gaps.normalized.iter().filter(|n| **n < 0.97).count();
    assert!(
        below > 0,
        "no wait below its nominal delay: no jitter? {:?}",
        gaps.normalized
    );
    let (lo, hi) = gaps
        .normalized
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), n| (lo.min(*n), hi.max(*n)));
    assert!(
        !(0..OBJECTS).any(|i| {
            let mine = requests_in(&reqs, &org_id(i));
            mine.iter()
                .any(|r| r.status == 503 && r.received_unix_micros > cleared_at + 50_000)
        }),
        "503 after the fault was cleared"
    );
    let start_spread =
        (starts.iter().max().unwrap_or(&0) - starts.iter().min().unwrap_or(&0)) as f64 / 1e3;
    figure(
        "zitadel_503_burst",
        &[
            ("objects", OBJECTS.to_string()),
            ("failed_attempts", failed_total.to_string()),
            (
                "attempts_per_object",
                format!("{:.1}", failed_total as f64 / OBJECTS as f64),
            ),
            ("first_wait_s", format!("{:.3}", mean(&gaps.first))),
            ("second_wait_s", format!("{:.3}", mean(&gaps.second))),
            ("fourth_wait_s", format!("{:.3}", mean(&gaps.fourth))),
            ("jitter_range", format!("{lo:.2}-{hi:.2}")),
            ("start_spread_ms", format!("{start_spread:.0}")),
            ("converge_after_clear_s", format!("{converge_s:.2}")),
            ("bulk_sets_per_object", "1".into()),
        ],
    );
    op.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 429 with Retry-After (quota JSON and plain-text edge variant).
// ---------------------------------------------------------------------------------------------

async fn rate_limited(plain_text: bool) {
    const RETRY_AFTER: u64 = 3;
    const TIMES: u32 = 2;
    let name = if plain_text {
        "chaos-429-text"
    } else {
        "chaos-429-json"
    };
    let env = TestEnv::new(name).await;
    let settings = chaos_settings();
    assert!(Duration::from_secs(RETRY_AFTER) > settings.backoff_max);
    // A new object's first call is its bulk set (it does not list before its first write).
    env.emu.inject(
        Fault::too_many_requests(Some(RETRY_AFTER), plain_text)
            .on(Operation::BulkSetOrgMetadata)
            .times(TIMES),
    );
    let op = env.start_operator_with_api(settings, ApiMode::V1);
    let desired = apply_acme(&env, "limited", &[("plan", "enterprise")]).await;
    let during = wait_retrying(&env, "limited", "ZitadelRateLimited").await;
    assert!(
        message(during.status()).contains("429"),
        "{:?}",
        message(during.status())
    );
    let started = Instant::now();
    wait_ready(&env, "limited").await;
    let reqs = requests_in(&env.emu.requests(), ACME);
    let limited: Vec<&RecordedRequest> = reqs.iter().filter(|r| r.status == 429).collect();
    assert_eq!(limited.len(), TIMES as usize, "{reqs:?}");
    // No request to ZITADEL before Retry-After elapsed (Retry-After 3 s > backoff_max 2.4 s).
    let mut waits = Vec::new();
    for pair in reqs.windows(2).filter(|p| p[0].status == 429) {
        let gap = secs_between(&pair[0], &pair[1]);
        assert!(
            gap >= RETRY_AFTER as f64,
            "retried {gap:.3} s after a 429 with Retry-After {RETRY_AFTER}"
        );
        assert!(
            gap < RETRY_AFTER as f64 * JITTER_MAX + 3.0,
            "waited {gap:.3} s"
        );
        waits.push(gap);
    }
    assert_eq!(
        bulk_sets(&reqs, Operation::BulkSetOrgMetadata).len(),
        1,
        "exactly one write"
    );
    assert_eq!(decoded(env.emu.org_metadata(ACME)), desired);
    assert!(warnings(&env, "ZitadelRateLimited").await >= 1);
    figure(
        if plain_text {
            "zitadel_429_plain_text"
        } else {
            "zitadel_429_quota_json"
        },
        &[
            ("retry_after_s", RETRY_AFTER.to_string()),
            ("rate_limited", TIMES.to_string()),
            (
                "waits_s",
                waits
                    .iter()
                    .map(|w| format!("{w:.2}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "ready_after_first_retry_s",
                format!("{:.2}", started.elapsed().as_secs_f64()),
            ),
            ("bulk_sets", "1".into()),
        ],
    );
    op.stop().await;
}

#[tokio::test]
async fn rate_limited_quota_json_honours_retry_after() {
    rate_limited(false).await;
}

#[tokio::test]
async fn rate_limited_plain_text_honours_retry_after() {
    rate_limited(true).await;
}

// ---------------------------------------------------------------------------------------------
// Connection resets, hangs past the timeout, slow answers.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn connection_resets_on_writes_are_retried_without_duplicates() {
    const RESETS: u32 = 3;
    let env = TestEnv::new("chaos-reset").await;
    let settings = chaos_settings();
    // The write's connection is dropped before ZITADEL handles it: nothing is written.
    env.emu.inject(
        Fault::reset()
            .on(Operation::BulkSetOrgMetadata)
            .times(RESETS),
    );
    let op = env.start_operator_with_api(settings.clone(), ApiMode::V1);
    let desired = apply_acme(&env, "reset", &[("a", "1"), ("b", "2"), ("c", "3")]).await;
    let during = wait_retrying(&env, "reset", "ZitadelUnreachable").await;
    let (conds, reason_during) = conditions_of(during.status());
    wait_ready(&env, "reset").await;
    let reqs = requests_in(&env.emu.requests(), ACME);
    let writes: Vec<&RecordedRequest> = reqs
        .iter()
        .filter(|r| r.operation == Operation::BulkSetOrgMetadata)
        .collect();
    let statuses: Vec<u16> = writes.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        vec![0, 0, 0, 200],
        "resets then one successful write"
    );
    // Each reset ends a reconcile; the retries back off.
    for (n, pair) in writes.windows(2).enumerate() {
        let gap = secs_between(pair[0], pair[1]);
        let min = min_backoff(&settings, n as u32 + 1);
        assert!(
            gap >= min - 0.002,
            "write retry {n} after {gap:.3} s < {min:.3} s"
        );
    }
    assert_eq!(decoded(env.emu.org_metadata(ACME)), desired);
    figure(
        "zitadel_connection_reset",
        &[
            ("resets", RESETS.to_string()),
            ("write_attempts", writes.len().to_string()),
            ("successful_writes", "1".into()),
            ("condition_during", conds),
            ("reason_during", reason_during),
            (
                "recovered_s",
                format!("{:.2}", secs_between(writes[0], writes[writes.len() - 1])),
            ),
        ],
    );
    op.stop().await;
}

#[tokio::test]
async fn answers_lost_after_zitadel_committed_are_not_written_twice() {
    let (env, op) = chaos_v1("chaos-lost-answer").await;
    // ZITADEL stores the bulk set, then the connection dies before the answer arrives.
    env.emu.inject(
        Fault::reset_after_handling()
            .on(Operation::BulkSetOrgMetadata)
            .times(1),
    );
    let before = env.emu.org_sequence(ACME);
    let desired = apply_acme(&env, "lost", &[("a", "1"), ("b", "2")]).await;
    let o = wait_ready(&env, "lost").await;
    // The retry re-reads, finds both values and writes nothing: one event per key, once.
    assert_eq!(decoded(env.emu.org_metadata(ACME)), desired);
    assert_eq!(
        env.emu.org_sequence(ACME),
        before + 2,
        "a key was written twice"
    );
    let reqs = requests_in(&env.emu.requests(), ACME);
    let sets: Vec<u16> = reqs
        .iter()
        .filter(|r| r.operation == Operation::BulkSetOrgMetadata)
        .map(|r| r.status)
        .collect();
    assert_eq!(sets, vec![0], "the committed write was sent again");
    assert_eq!(
        o.status()
            .map(|s| s.managed_keys.clone())
            .unwrap_or_default(),
        vec!["a".to_string(), "b".to_string()]
    );
    assert!(warnings(&env, "ZitadelUnreachable").await >= 1);
    let sequence_recorded = o.status().and_then(|s| s.sequence.clone()).is_some();

    // The same for a remove.
    env.emu.clear_requests();
    env.emu.inject(
        Fault::reset_after_handling()
            .on(Operation::BulkRemoveOrgMetadata)
            .times(1),
    );
    let before = env.emu.org_sequence(ACME);
    let keep = synced_org(&env, "lost", &[("a", "1")]).await;
    assert_eq!(decoded(env.emu.org_metadata(ACME)), keep);
    assert_eq!(env.emu.org_sequence(ACME), before + 1);
    let removes: Vec<u16> = env
        .emu
        .requests()
        .iter()
        .filter(|r| r.operation == Operation::BulkRemoveOrgMetadata)
        .map(|r| r.status)
        .collect();
    assert_eq!(removes, vec![0], "the committed remove was sent again");
    figure(
        "zitadel_answer_lost_after_commit",
        &[
            ("lost_answers", "2".into()),
            ("writes_sent", "1".into()),
            ("removes_sent", "1".into()),
            ("duplicate_events", "0".into()),
            (
                "status_sequence_after_lost_answer",
                sequence_recorded.to_string(),
            ),
        ],
    );
    op.stop().await;
}

#[tokio::test]
async fn failed_read_back_after_a_write_does_not_write_again() {
    let (env, op) = chaos_v1("chaos-readback").await;
    // Hold the bulk set 500 ms; while it is held, make the next list (the read-back) fail.
    hold(&env, Operation::BulkSetOrgMetadata, 500, 1);
    let desired = apply_acme(&env, "rb", &[("verified", "later")]).await;
    wait_arrived(&env, Operation::BulkSetOrgMetadata, 1, "a bulk set").await;
    env.emu
        .inject(Fault::unavailable().on(Operation::ListOrgMetadata).times(1));
    wait_ready(&env, "rb").await;
    let reqs = requests_in(&env.emu.requests(), ACME);
    let calls: Vec<(Operation, u16)> = reqs.iter().map(|r| (r.operation, r.status)).collect();
    // set (a new object does not list first), read-back 503 → backoff → list finds the value
    // (status kept the acknowledged key as managed): nothing more to write.
    assert_eq!(
        calls,
        vec![
            (Operation::BulkSetOrgMetadata, 200),
            (Operation::ListOrgMetadata, 503),
            (Operation::ListOrgMetadata, 200),
        ]
    );
    assert_eq!(decoded(env.emu.org_metadata(ACME)), desired);
    figure(
        "zitadel_read_back_failed",
        &[
            ("bulk_sets", "1".into()),
            ("calls", calls.len().to_string()),
        ],
    );
    op.stop().await;
}

#[tokio::test]
async fn hangs_past_the_client_timeout_time_out_and_retry() {
    const HANGS: u32 = 2;
    // The in-process operator's ZITADEL client times out after 2 s (tests/common).
    const TIMEOUT_S: f64 = 2.0;
    let env = TestEnv::new("chaos-hang").await;
    let settings = chaos_settings();
    env.emu
        .inject(Fault::hang().on(Operation::ListOrgMetadata).times(HANGS));
    let op = env.start_operator_with_api(settings.clone(), ApiMode::V1);
    let desired = apply_acme(&env, "hang", &[("hung", "no")]).await;
    let during = wait_retrying(&env, "hang", "ZitadelTimeout").await;
    assert!(message(during.status()).contains("timed out"));
    wait_ready(&env, "hang").await;
    let reqs = requests_in(&env.emu.requests(), ACME);
    let lists: Vec<&RecordedRequest> = reqs
        .iter()
        .filter(|r| r.operation == Operation::ListOrgMetadata)
        .collect();
    // The new object's bulk set, then its read-back hangs (never answered: status 0), the retry
    // lists (the acknowledged key is managed now) and hangs again, then a list finds the value:
    // nothing more to write.
    assert_eq!(
        lists.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![0, 0, 200]
    );
    let mut waits = Vec::new();
    for n in 0..HANGS as usize {
        let gap = secs_between(lists[n], lists[n + 1]);
        let min = TIMEOUT_S + min_backoff(&settings, n as u32 + 1);
        assert!(
            gap >= min - 0.002,
            "attempt after a hang at {gap:.3} s < {min:.3} s"
        );
        assert!(gap < min + 4.0, "attempt after a hang only at {gap:.3} s");
        waits.push(gap);
    }
    assert_eq!(bulk_sets(&reqs, Operation::BulkSetOrgMetadata).len(), 1);
    assert_eq!(decoded(env.emu.org_metadata(ACME)), desired);
    figure(
        "zitadel_hang",
        &[
            ("hangs", HANGS.to_string()),
            ("client_timeout_s", format!("{TIMEOUT_S}")),
            (
                "next_attempt_after_s",
                waits
                    .iter()
                    .map(|w| format!("{w:.2}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("bulk_sets", "1".into()),
        ],
    );
    op.stop().await;
}

#[tokio::test]
async fn slow_answers_below_the_timeout_succeed_without_duplicate_writes() {
    // Every call takes 1 s; the client's timeout is 2 s.
    const LATENCY: Duration = Duration::from_millis(1000);
    let env = TestEnv::new("chaos-slow").await;
    env.emu.inject(Fault::latency(LATENCY));
    let op = env.start_operator_with_api(chaos_settings(), ApiMode::V1);
    let orgs = [ACME, GLOBEX];
    let mut desired: Vec<BTreeMap<String, String>> = Vec::new();
    let started = Instant::now();
    for (i, org) in orgs.iter().enumerate() {
        let d = kv(&[("slow", "yes"), ("n", &i.to_string())]);
        env.apply_org(
            &format!("s{i}"),
            json!({"organizationId": org, "metadata": entries(&d)}),
        )
        .await;
        desired.push(d);
    }
    for i in 0..orgs.len() {
        wait_ready(&env, &format!("s{i}")).await;
    }
    let create_s = started.elapsed().as_secs_f64();
    // One edit: one more write.
    desired[0].insert("slow".into(), "still".into());
    env.apply_org(
        "s0",
        json!({"organizationId": ACME, "metadata": entries(&desired[0])}),
    )
    .await;
    let edit_started = Instant::now();
    wait_ready(&env, "s0").await;
    let edit_s = edit_started.elapsed().as_secs_f64();
    let reqs = env.emu.requests();
    assert!(
        reqs.iter().all(|r| r.status == 200),
        "a slow call failed: {:?}",
        reqs.iter().filter(|r| r.status != 200).collect::<Vec<_>>()
    );
    for (i, org) in orgs.iter().enumerate() {
        let mine = requests_in(&reqs, org);
        let sets = bulk_sets(&mine, Operation::BulkSetOrgMetadata);
        assert_eq!(sets.len(), if i == 0 { 2 } else { 1 }, "{org}: {sets:?}");
        assert_eq!(decoded(env.emu.org_metadata(org)), desired[i]);
    }
    // An edit costs list + set + read-back, each 1 s: at least 3 s, no timeout in between.
    assert!(edit_s >= 3.0 * LATENCY.as_secs_f64() - 0.3, "{edit_s}");
    assert_eq!(warnings(&env, "ZitadelTimeout").await, 0);
    figure(
        "zitadel_slow",
        &[
            ("latency_ms", LATENCY.as_millis().to_string()),
            ("client_timeout_s", "2".into()),
            ("create_ready_s", format!("{create_s:.2}")),
            ("edit_ready_s", format!("{edit_s:.2}")),
            ("failed_calls", "0".into()),
            (
                "bulk_sets",
                format!("{}", bulk_sets(&reqs, Operation::BulkSetOrgMetadata).len()),
            ),
        ],
    );
    op.stop().await;
}

// ---------------------------------------------------------------------------------------------
// A key removed by someone else between the operator's list and its remove.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn key_removed_by_someone_else_between_list_and_remove() {
    let (env, op) = chaos_v1("chaos-race").await;
    synced_org(&env, "race", &[("keep", "1"), ("gone", "2"), ("drop", "3")]).await;
    env.emu.clear_requests();
    // Hold the next bulk remove 800 ms on arrival, before ZITADEL handles it.
    hold(&env, Operation::BulkRemoveOrgMetadata, 800, 1);
    let keep = apply_acme(&env, "race", &[("keep", "1")]).await;
    // As soon as the operator's remove arrived (it listed both keys), someone removes one.
    remove_as_removes_arrive(&env, &["gone"]).await;
    let o = wait_ready(&env, "race").await;
    assert_eq!(
        o.status()
            .map(|s| s.managed_keys.clone())
            .unwrap_or_default(),
        vec!["keep".to_string()]
    );
    let reqs = env.emu.requests();
    let removes: Vec<(u16, Value)> = reqs
        .iter()
        .filter(|r| r.operation == Operation::BulkRemoveOrgMetadata)
        .map(|r| (r.status, r.body["keys"].clone()))
        .collect();
    // All-or-nothing: the first remove fails (META-2npds), the operator re-reads and removes
    // what is left, within the same reconcile.
    assert_eq!(
        removes,
        vec![(404, json!(["drop", "gone"])), (200, json!(["drop"]))],
        "{reqs:?}"
    );
    assert_eq!(decoded(env.emu.org_metadata(ACME)), keep);
    let lists = reqs
        .iter()
        .filter(|r| r.operation == Operation::ListOrgMetadata)
        .count();
    // list, re-list after the failed remove, read-back.
    assert_eq!(lists, 3);
    assert_eq!(
        reqs.iter().filter(|r| r.operation.sets_metadata()).count(),
        0
    );
    assert!(
        !env.events()
            .await
            .iter()
            .any(|(r, _)| r.starts_with("Zitadel")),
        "the race surfaced as a failure"
    );
    figure(
        "zitadel_key_removed_concurrently",
        &[
            ("bulk_removes", removes.len().to_string()),
            ("first_status", removes[0].0.to_string()),
            ("lists", lists.to_string()),
            ("stalled", "0".into()),
        ],
    );
    op.stop().await;
}

/// Hold the next `keys.len()` bulk removes 800 ms each on arrival, and remove `keys[n]` "by
/// someone else" as soon as the n-th one arrived (before ZITADEL handles it).
async fn remove_behind_the_operators_back(env: &TestEnv, keys: &[&str]) {
    let removes = u32::try_from(keys.len()).expect("a few keys");
    hold(env, Operation::BulkRemoveOrgMetadata, 800, removes);
    remove_as_removes_arrive(env, keys).await;
}

/// Removes `keys[n]` "by someone else" as soon as the n-th bulk remove arrived.
async fn remove_as_removes_arrive(env: &TestEnv, keys: &[&str]) {
    for (done, key) in keys.iter().enumerate() {
        let what = format!("bulk remove {done}");
        wait_arrived(env, Operation::BulkRemoveOrgMetadata, done + 1, &what).await;
        env.emu.delete_org_metadata(ACME, key);
    }
}

/// Polls (every 5 ms, for 30 s at most) until `n` requests of `op` arrived.
async fn wait_arrived(env: &TestEnv, op: Operation, n: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.emu.count(op) < n {
        assert!(Instant::now() < deadline, "{what} did not come within 30 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn keys_removed_by_someone_else_twice_in_a_row_is_retried_not_stalled() {
    let (env, op) = chaos_v1("chaos-race2").await;
    synced_org(
        &env,
        "race2",
        &[("keep", "1"), ("drop", "2"), ("gone1", "3"), ("gone2", "4")],
    )
    .await;
    env.emu.clear_requests();
    let keep = apply_acme(&env, "race2", &[("keep", "1")]).await;
    let started = Instant::now();
    // Both the remove and the one re-read-and-remove of the same reconcile lose the race.
    remove_behind_the_operators_back(&env, &["gone1", "gone2"]).await;
    let o = wait_ready(&env, "race2").await;
    let ready_s = started.elapsed().as_secs_f64();
    assert_eq!(decoded(env.emu.org_metadata(ACME)), keep);
    assert_eq!(
        o.status()
            .map(|s| s.managed_keys.clone())
            .unwrap_or_default(),
        vec!["keep".to_string()]
    );
    let removes: Vec<(u16, Value)> = env
        .emu
        .requests()
        .iter()
        .filter(|r| r.operation == Operation::BulkRemoveOrgMetadata)
        .map(|r| (r.status, r.body["keys"].clone()))
        .collect();
    assert_eq!(
        removes,
        vec![
            (404, json!(["drop", "gone1", "gone2"])),
            (404, json!(["drop", "gone2"])),
            (200, json!(["drop"])),
        ]
    );
    // A race with another writer is transient: retried with backoff, never reported as a
    // missing organization (Stalled until the stalled-retry interval).
    let events = env.events().await;
    assert!(
        !events.iter().any(|(r, _)| r == "ZitadelNotFound"),
        "reported as not found: {events:?}"
    );
    assert!(
        ready_s < 15.0,
        "Ready only after {ready_s:.1} s (stalled-retry interval?)"
    );
    figure(
        "zitadel_key_removed_concurrently_twice",
        &[
            ("bulk_removes", removes.len().to_string()),
            ("ready_s", format!("{ready_s:.2}")),
            ("stalled", "0".into()),
        ],
    );
    op.stop().await;
}

#[tokio::test]
async fn deleting_while_someone_else_removes_keys_still_removes_the_rest() {
    let (env, op) = chaos_v1("chaos-race-del").await;
    synced_org(&env, "racedel", &[("a", "1"), ("b", "2"), ("c", "3")]).await;
    env.emu.put_org_metadata(ACME, "unmanaged", b"x");
    env.emu.clear_requests();
    env.delete_org("racedel").await;
    remove_behind_the_operators_back(&env, &["a", "b"]).await;
    env.wait_org_gone("racedel").await;
    // The finalizer went only after every managed key was gone: nothing left behind.
    assert_eq!(
        decoded(env.emu.org_metadata(ACME)),
        kv(&[("unmanaged", "x")])
    );
    let events = env.events().await;
    assert!(
        !events.iter().any(|(r, _)| r == "TargetGone"),
        "treated as a vanished organization: {events:?}"
    );
    let removes = env
        .emu
        .requests()
        .iter()
        .filter(|r| r.operation == Operation::BulkRemoveOrgMetadata && r.status == 200)
        .count();
    assert_eq!(removes, 1);
    figure(
        "zitadel_key_removed_during_delete",
        &[
            ("removed_after_race", "1".into()),
            ("left_behind", "0".into()),
        ],
    );
    op.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Access tokens expiring mid-run (JWT-profile connection).
// ---------------------------------------------------------------------------------------------

/// API calls (metadata or the connection's probe) answered 401.
fn unauthorized(reqs: &[RecordedRequest]) -> usize {
    reqs.iter()
        .filter(|r| r.status == 401 && !r.path.starts_with("/oauth/"))
        .count()
}

#[tokio::test]
async fn access_token_expiring_mid_run_is_renewed_without_failures() {
    let env = TestEnv::new("chaos-token").await;
    let op = jwt_profile_connection(&env, "300000000000000077").await;
    let conn = json!({"name": "acme"});
    let mut org_values = kv(&[("o", "0")]);
    let mut user_values = kv(&[("u", "0")]);
    env.apply_org(
        "tok",
        json!({"organizationId": ACME, "connectionRef": conn, "metadata": entries(&org_values)}),
    )
    .await;
    env.apply_user("tok", json!({"userId": ALICE, "organizationId": ACME, "connectionRef": conn, "metadata": entries(&user_values)}))
        .await;
    wait_ready(&env, "tok").await;
    env.wait_user("tok", "Ready", |u| {
        is_ready(u.status(), u.metadata.generation)
    })
    .await;
    let exchanges_before = env.emu.token_requests();

    // Phase 1: the operator's cached (12 h) token expires early (revoked, clock skew): the next
    // call gets 401, the client fetches a new token and repeats the call once.
    env.emu.expire_access_tokens();
    org_values.insert("o".into(), "1".into());
    env.apply_org(
        "tok",
        json!({"organizationId": ACME, "connectionRef": conn, "metadata": entries(&org_values)}),
    )
    .await;
    wait_ready(&env, "tok").await;
    let after_expiry = env.emu.requests();
    assert!(
        unauthorized(&after_expiry) >= 1,
        "the expired token was never used"
    );
    assert!(env.emu.token_requests() > exchanges_before);

    // Phase 2: short-lived tokens (2 s) during 8 s of edits every 0.5 s.
    env.emu.set_access_token_lifetime(Duration::from_secs(2));
    env.emu.expire_access_tokens();
    let exchanges_phase2 = env.emu.token_requests();
    let started = Instant::now();
    let mut edits = 0;
    while started.elapsed() < Duration::from_secs(8) {
        edits += 1;
        if edits % 2 == 0 {
            org_values.insert("o".into(), format!("{}", edits + 1));
            env.apply_org("tok", json!({"organizationId": ACME, "connectionRef": conn, "metadata": entries(&org_values)}))
                .await;
        } else {
            user_values.insert("u".into(), format!("{}", edits + 1));
            env.apply_user("tok", json!({"userId": ALICE, "organizationId": ACME, "connectionRef": conn, "metadata": entries(&user_values)}))
                .await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    wait_ready(&env, "tok").await;
    env.wait_user("tok", "Ready", |u| {
        is_ready(u.status(), u.metadata.generation)
    })
    .await;
    let exchanges = env.emu.token_requests() - exchanges_phase2;
    assert!(
        exchanges >= 3,
        "only {exchanges} token exchanges in 8 s of 2 s tokens"
    );
    assert_eq!(decoded(env.emu.org_metadata(ACME)), org_values);
    assert_eq!(decoded(env.emu.user_metadata(ALICE)), user_values);
    let reqs = env.emu.requests();
    // Every metadata call that got a 401 was repeated with a fresh token and succeeded: no
    // failure reached the objects.
    let failed: Vec<&RecordedRequest> = reqs
        .iter()
        .filter(|r| r.path.contains("/metadata") && r.status != 200 && r.status != 401)
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(warnings(&env, "ZitadelUnauthenticated").await, 0);
    // No lost or duplicate write: one bulk set per edit that changed something (plus the
    // initial ones and phase 1).
    let org_sets = bulk_sets(&reqs, Operation::BulkSetOrgMetadata).len();
    let user_sets = bulk_sets(&reqs, Operation::BulkSetUserMetadata).len();
    assert!(
        org_sets <= 2 + edits / 2,
        "{org_sets} org writes for {edits} edits"
    );
    assert!(
        user_sets <= 1 + edits.div_ceil(2),
        "{user_sets} user writes for {edits} edits"
    );
    figure(
        "zitadel_token_expiry",
        &[
            ("token_lifetime_s", "2".into()),
            ("edits", edits.to_string()),
            ("token_exchanges", exchanges.to_string()),
            ("unauthorized_then_retried", unauthorized(&reqs).to_string()),
            ("failed_reconciles", "0".into()),
            ("bulk_sets", (org_sets + user_sets).to_string()),
        ],
    );
    op.stop().await;
}

#[tokio::test]
async fn zitadel_down_while_a_connection_is_probed_is_transient_for_its_objects() {
    let env = TestEnv::new("chaos-probe").await;
    env.emu.add_token("pat-probe", TokenGrant::iam_owner(ACME));
    env.put_secret(&env.ns, "zitadel-pat", "token", "pat-probe")
        .await;
    // ZITADEL is down when the operator starts and probes the connection.
    env.emu.inject(Fault::unavailable());
    let op =
        Operator::start_multi_tenant(env.client.clone(), vec![env.ns.clone()], chaos_settings());
    env.apply_connection("main", json!({"url": env.emu.url(), "api": "V1", "credentials": {"personalAccessToken": {"name": "zitadel-pat", "key": "token"}}})).await;
    let desired = kv(&[("probe", "ok")]);
    env.apply_org("probed", json!({"organizationId": ACME, "connectionRef": {"name": "main"}, "metadata": entries(&desired)}))
        .await;
    // While it is down: waiting for ZITADEL, not stuck on something the user must fix.
    let o = env
        .wait_org("probed", "a condition", |o| {
            condition(o.status(), READY) == Some("False")
                && o.status().and_then(|s| s.observed_generation) == o.metadata.generation
        })
        .await;
    let (conds, reason_during) = conditions_of(o.status());
    let fault_started = Instant::now();
    while fault_started.elapsed() < Duration::from_secs(3) {
        let o = env.orgs().get("probed").await.expect("get");
        let (conds, why) = conditions_of(o.status());
        assert_eq!(
            condition(o.status(), STALLED),
            Some("False"),
            "{conds} {why}: {}",
            message(o.status())
        );
        assert_eq!(
            condition(o.status(), RECONCILING),
            Some("True"),
            "{conds} {why}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.emu.clear_faults();
    let cleared = Instant::now();
    wait_ready(&env, "probed").await;
    let recovered_s = cleared.elapsed().as_secs_f64();
    assert!(
        recovered_s < 15.0,
        "Ready only {recovered_s:.1} s after ZITADEL came back"
    );
    assert_eq!(decoded(env.emu.org_metadata(ACME)), desired);
    figure(
        "zitadel_down_during_connection_probe",
        &[
            ("condition_during", conds),
            ("reason_during", reason_during),
            ("ready_after_recovery_s", format!("{recovered_s:.2}")),
        ],
    );
    op.stop().await;
}

/// The service user `service_user` (org owner of ACME) with a key file in a Secret, the operator
/// in multi-tenant mode, and a JWT-profile connection `acme` using that key.
async fn jwt_profile_connection(env: &TestEnv, service_user: &str) -> Operator {
    env.emu
        .register_service_user(service_user, TokenGrant::org_owner(ACME));
    let key_json = env.emu.generate_key_file(service_user).expect("key file");
    env.put_secret(&env.ns, "zitadel-key", "key.json", &key_json)
        .await;
    let op =
        Operator::start_multi_tenant(env.client.clone(), vec![env.ns.clone()], chaos_settings());
    env.apply_connection("acme", json!({"url": env.emu.url(), "api": "V1", "credentials": {"jwtProfile": {"name": "zitadel-key", "key": "key.json"}}})).await;
    op
}

#[tokio::test]
async fn rate_limited_token_endpoint_honours_retry_after() {
    const RETRY_AFTER: u64 = 3;
    let env = TestEnv::new("chaos-token-429").await;
    let op = jwt_profile_connection(&env, "300000000000000078").await;
    // Only the reconcile's calls: the connection's events probe (drift detection) would send
    // its own call with the cached token at any moment, which says nothing about Retry-After.
    env.apply_connection("acme", json!({"url": env.emu.url(), "api": "V1", "driftDetection": {"mode": "Polling"}, "credentials": {"jwtProfile": {"name": "zitadel-key", "key": "key.json"}}})).await;
    let conn = json!({"name": "acme"});
    env.apply_org("tok429", json!({"organizationId": ACME, "connectionRef": conn, "metadata": entries(&kv(&[("t", "0")]))}))
        .await;
    wait_ready(&env, "tok429").await;
    // The token expires; the token endpoint answers 429 with Retry-After once.
    env.emu.expire_access_tokens();
    env.emu.inject(
        Fault::too_many_requests(Some(RETRY_AFTER), false)
            .on(Operation::OAuthToken)
            .times(1),
    );
    env.emu.clear_requests();
    let desired = kv(&[("t", "1")]);
    env.apply_org(
        "tok429",
        json!({"organizationId": ACME, "connectionRef": conn, "metadata": entries(&desired)}),
    )
    .await;
    wait_ready(&env, "tok429").await;
    let reqs = env.emu.requests();
    let tokens: Vec<&RecordedRequest> = reqs
        .iter()
        .filter(|r| r.operation == Operation::OAuthToken)
        .collect();
    assert_eq!(tokens[0].status, 429, "{tokens:?}");
    let trace = || {
        reqs.iter()
            .map(|r| (r.operation, r.status, r.path.as_str()))
            .collect::<Vec<_>>()
    };
    // The token endpoint is not asked again before its Retry-After, by any caller: the
    // reconcile and the connection's probe share the service user's token.
    let next = tokens.get(1).expect("a token request after the 429");
    let gap = secs_between(tokens[0], next);
    assert!(
        gap >= RETRY_AFTER as f64,
        "next token request {gap:.3} s after the token endpoint's 429 with Retry-After {RETRY_AFTER}: {:?}",
        trace()
    );
    // Meanwhile only calls that already held the (expired) token went out, and failed with 401:
    // nothing was sent with a token obtained around the pause.
    let between: Vec<_> = reqs
        .iter()
        .skip_while(|r| r.status != 429)
        .skip(1)
        .take_while(|r| r.operation != Operation::OAuthToken)
        .collect();
    assert!(
        between.iter().all(|r| r.status == 401),
        "requests between the 429 and the next token request: {:?}",
        trace()
    );
    assert_eq!(decoded(env.emu.org_metadata(ACME)), desired);
    figure(
        "zitadel_token_endpoint_429",
        &[
            ("retry_after_s", RETRY_AFTER.to_string()),
            ("next_request_after_s", format!("{gap:.2}")),
        ],
    );
    op.stop().await;
}

#[tokio::test]
async fn hanging_token_endpoint_times_out_and_recovers() {
    let env = TestEnv::new("chaos-token-hang").await;
    let op = jwt_profile_connection(&env, "300000000000000079").await;
    let conn = json!({"name": "acme"});
    env.apply_org("tokhang", json!({"organizationId": ACME, "connectionRef": conn, "metadata": entries(&kv(&[("t", "0")]))}))
        .await;
    wait_ready(&env, "tokhang").await;
    env.emu.expire_access_tokens();
    env.emu
        .inject(Fault::hang().on(Operation::OAuthToken).times(1));
    let desired = kv(&[("t", "1")]);
    env.apply_org(
        "tokhang",
        json!({"organizationId": ACME, "connectionRef": conn, "metadata": entries(&desired)}),
    )
    .await;
    let during = wait_retrying(&env, "tokhang", "ZitadelTimeout").await;
    // The message names the real timeout (2 s in tests/common).
    assert_message_contains(during.status(), "timed out after 2s");
    let started = Instant::now();
    wait_ready(&env, "tokhang").await;
    assert_eq!(decoded(env.emu.org_metadata(ACME)), desired);
    figure(
        "zitadel_token_endpoint_hang",
        &[
            ("client_timeout_s", "2".into()),
            (
                "ready_after_timeout_s",
                format!("{:.2}", started.elapsed().as_secs_f64()),
            ),
        ],
    );
    op.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Load: 1,000 objects (5,000 with CHAOS_LONG=1) while 5% of the requests fail.
// ---------------------------------------------------------------------------------------------

fn load_objects() -> usize {
    if let Some(n) = std::env::var("CHAOS_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return n;
    }
    if std::env::var("CHAOS_LONG").is_ok_and(|v| v == "1") {
        5000
    } else {
        1000
    }
}

/// Objects of the load run: even indexes OrgMetadata on org `i/2 % ORGS`, odd ones UserMetadata
/// on user `i/2 % USERS` (half of them without `organizationId`); keys unique per object.
const ORGS: usize = 40;
const USERS: usize = 200;

fn load_desired(i: usize, round: u32) -> BTreeMap<String, String> {
    let mut d = BTreeMap::new();
    d.insert(format!("k{i}-a"), format!("v{round}"));
    if round == 0 {
        // Removed by the edit.
        d.insert(format!("k{i}-b"), "b".into());
    }
    d.insert(format!("k{i}-c"), format!("c{}", i % 7));
    d
}

fn load_spec(i: usize, round: u32) -> (bool, String, Value) {
    let d = load_desired(i, round);
    let half = i / 2;
    if i.is_multiple_of(2) {
        let org = org_id(half % ORGS);
        (
            true,
            format!("o{i}"),
            json!({"organizationId": org, "metadata": entries(&d)}),
        )
    } else {
        let user = user_id(half % USERS);
        let org = org_id((half % USERS) % ORGS);
        // Every other UserMetadata leaves the org to a lookup (GET /v2/users/{id}).
        let spec = if half.is_multiple_of(2) {
            json!({"userId": user, "organizationId": org, "metadata": entries(&d)})
        } else {
            json!({"userId": user, "metadata": entries(&d)})
        };
        (false, format!("u{i}"), spec)
    }
}

/// Apply object `i`'s spec for `round`.
async fn apply_load_object(env: &TestEnv, i: usize, round: u32) {
    let (is_org, name, spec) = load_spec(i, round);
    if is_org {
        env.apply_org(&name, spec).await;
    } else {
        env.apply_user(&name, spec).await;
    }
}

/// Apply every object's spec for `round`, 16 at a time.
async fn apply_all(env: &TestEnv, n: usize, round: u32) {
    futures::stream::iter(0..n)
        .map(|i| apply_load_object(env, i, round))
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}

/// Wait until every object is Ready for its current generation; returns seconds waited.
async fn wait_all_ready(env: &TestEnv, n: usize, limit: Duration) -> f64 {
    let started = Instant::now();
    loop {
        let orgs = env.orgs().list(&ListParams::default()).await.expect("list");
        let users = env
            .users()
            .list(&ListParams::default())
            .await
            .expect("list");
        let ready = orgs
            .items
            .iter()
            .filter(|o| is_ready(o.status(), o.metadata.generation))
            .count()
            + users
                .items
                .iter()
                .filter(|u| is_ready(u.status(), u.metadata.generation))
                .count();
        let stalled: Vec<String> = orgs
            .items
            .iter()
            .filter(|o| condition(o.status(), STALLED) == Some("True"))
            .map(|o| format!("{}: {}", o.name_any(), message(o.status())))
            .chain(
                users
                    .items
                    .iter()
                    .filter(|u| condition(u.status(), STALLED) == Some("True"))
                    .map(|u| format!("{}: {}", u.name_any(), message(u.status()))),
            )
            .collect();
        assert!(
            stalled.is_empty(),
            "transient faults stalled objects: {stalled:?}"
        );
        if ready == n {
            return started.elapsed().as_secs_f64();
        }
        assert!(
            started.elapsed() < limit,
            "{ready}/{n} Ready after {limit:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Metadata per org or per user id.
type State = BTreeMap<String, BTreeMap<String, String>>;

/// What ZITADEL must hold after `round`: per org and per user.
fn expected_state(n: usize, round: u32) -> (State, State) {
    let (mut orgs, mut users) = (BTreeMap::new(), BTreeMap::new());
    for i in 0..n {
        let d = load_desired(i, round);
        let half = i / 2;
        let slot = if i.is_multiple_of(2) {
            orgs.entry(org_id(half % ORGS))
        } else {
            users.entry(user_id(half % USERS))
        };
        slot.or_insert_with(BTreeMap::new).extend(d);
    }
    (orgs, users)
}

fn assert_state(env: &TestEnv, n: usize, round: u32) {
    assert_state_without(env, n, round, &BTreeSet::new());
}

/// [`assert_state`] after the objects `gone` were deleted (their keys removed).
fn assert_state_without(env: &TestEnv, n: usize, round: u32, gone: &BTreeSet<usize>) {
    let (mut orgs, mut users) = expected_state(n, round);
    for i in gone {
        for k in load_desired(*i, round).keys() {
            for m in orgs.values_mut().chain(users.values_mut()) {
                m.remove(k);
            }
        }
    }
    for (org, want) in &orgs {
        assert_eq!(&decoded(env.emu.org_metadata(org)), want, "org {org}");
    }
    for (user, want) in &users {
        assert_eq!(&decoded(env.emu.user_metadata(user)), want, "user {user}");
    }
}

#[tokio::test]
async fn steady_state_under_five_percent_errors_writes_nothing() {
    const OBJECTS: usize = 40;
    const WINDOW: Duration = Duration::from_secs(10);
    let env = TestEnv::new("chaos-steady").await;
    for o in 0..OBJECTS {
        env.emu.add_org(&org_id(o), &format!("Steady {o}"));
    }
    // Resync every second: each object re-reads ZITADEL about 10 times in the window.
    let settings = Settings {
        resync: Duration::from_secs(1),
        ..chaos_settings()
    };
    let op = env.start_operator_with_api(settings, ApiMode::V1);
    for i in 0..OBJECTS {
        env.apply_org(
            &format!("s{i}"),
            json!({"organizationId": org_id(i), "metadata": entries(&load_desired(i, 0))}),
        )
        .await;
    }
    for i in 0..OBJECTS {
        wait_ready(&env, &format!("s{i}")).await;
    }
    env.emu.clear_requests();
    env.emu.seed_faults(7);
    env.emu.inject(Fault::unavailable().with_probability(0.05));
    let started = Instant::now();
    let (mut samples, mut not_ready, mut stalled) = (0usize, 0usize, 0usize);
    while started.elapsed() < WINDOW {
        for o in env
            .orgs()
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
        {
            samples += 1;
            if condition(o.status(), READY) != Some("True") {
                not_ready += 1;
                assert_eq!(
                    condition(o.status(), RECONCILING),
                    Some("True"),
                    "{}: {:?}",
                    o.name_any(),
                    conditions_of(o.status())
                );
            }
            if condition(o.status(), STALLED) == Some("True") {
                stalled += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    env.emu.clear_faults();
    for i in 0..OBJECTS {
        wait_ready(&env, &format!("s{i}")).await;
    }
    let reqs = env.emu.requests();
    assert_eq!(stalled, 0);
    // Nothing changed: no write at all, whatever failed.
    let writes: Vec<&RecordedRequest> = reqs
        .iter()
        .filter(|r| {
            r.operation.sets_metadata()
                || matches!(
                    r.operation,
                    Operation::BulkRemoveOrgMetadata | Operation::RemoveOrgMetadata
                )
        })
        .collect();
    assert!(writes.is_empty(), "steady state wrote: {writes:?}");
    assert_state_orgs(&env, OBJECTS);
    let failed = injected(&reqs);
    assert!(failed > 0, "no fault hit in {} calls", reqs.len());
    figure(
        "steady_state_5pct",
        &[
            ("objects", OBJECTS.to_string()),
            ("resync_s", "1".into()),
            ("window_s", WINDOW.as_secs().to_string()),
            ("calls", reqs.len().to_string()),
            ("errors_injected", failed.to_string()),
            ("writes", "0".into()),
            (
                "ready_false_share",
                format!("{:.3}", not_ready as f64 / samples.max(1) as f64),
            ),
            ("stalled", "0".into()),
        ],
    );
    op.stop().await;
}

/// Every org `o{i}` of the steady-state scenario holds `load_desired(i, 0)` exactly.
fn assert_state_orgs(env: &TestEnv, objects: usize) {
    for i in 0..objects {
        let want = load_desired(i, 0);
        assert_eq!(decoded(env.emu.org_metadata(&org_id(i))), want, "org {i}");
    }
}

/// Requests the faults answered: injected statuses, or no answer (reset).
fn injected(reqs: &[RecordedRequest]) -> usize {
    reqs.iter()
        .filter(|r| matches!(r.status, 0 | 429 | 500 | 503))
        .count()
}

/// Every object edited twice back to back (value v2, then v3), so the second edit often lands
/// while the first one's reconcile is in flight.
async fn racing_edits(env: &TestEnv, n: usize) {
    futures::stream::iter(0..n)
        .map(|i| async move {
            for round in [2, 3] {
                apply_load_object(env, i, round).await;
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}

/// Delete every fourth object and wait until the finalizers let them go; returns their indexes.
async fn delete_every_fourth(
    env: &TestEnv,
    n: usize,
    started: Instant,
    limit: Duration,
) -> Vec<usize> {
    let deleted: Vec<usize> = (0..n).filter(|i| i % 4 == 3).collect();
    let env_ref = env;
    futures::stream::iter(deleted.iter().copied())
        .map(|i| async move {
            let (is_org, name, _) = load_spec(i, 1);
            let dp = DeleteParams::default();
            if is_org {
                env_ref.orgs().delete(&name, &dp).await.expect("delete");
            } else {
                env_ref.users().delete(&name, &dp).await.expect("delete");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let remaining = n - deleted.len();
    loop {
        let left = env
            .orgs()
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len()
            + env
                .users()
                .list(&ListParams::default())
                .await
                .expect("list")
                .items
                .len();
        if left == remaining {
            break;
        }
        assert!(
            started.elapsed() < limit,
            "{left} objects left, want {remaining}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    deleted
}

/// Successful bulk sets per key (org and user).
fn key_writes(reqs: &[RecordedRequest]) -> BTreeMap<String, usize> {
    let mut per_key = BTreeMap::new();
    for keys in bulk_sets(reqs, Operation::BulkSetOrgMetadata)
        .into_iter()
        .chain(bulk_sets(reqs, Operation::BulkSetUserMetadata))
    {
        for k in keys {
            *per_key.entry(k).or_insert(0) += 1;
        }
    }
    per_key
}

/// Successful bulk removes (org and user).
fn successful_removes(reqs: &[RecordedRequest]) -> impl Iterator<Item = &RecordedRequest> {
    reqs.iter().filter(|r| {
        matches!(
            r.operation,
            Operation::BulkRemoveOrgMetadata | Operation::BulkRemoveUserMetadata
        ) && r.status == 200
    })
}

/// The key sets of the successful bulk removes.
fn removed_key_sets(reqs: &[RecordedRequest]) -> Vec<BTreeSet<String>> {
    successful_removes(reqs)
        .map(|r| {
            r.body["keys"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|k| k.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect()
}

/// Racing edits: only the edited key is written, once or twice (v2 may be skipped when the
/// reconcile already saw v3), never more; nothing removed. Returns the number of writes.
fn check_racing_edit_writes(race: &[RecordedRequest], n: usize) -> usize {
    let wr = key_writes(race);
    assert_eq!(
        wr.keys().cloned().collect::<BTreeSet<_>>(),
        (0..n).map(|i| format!("k{i}-a")).collect::<BTreeSet<_>>(),
        "racing edits wrote other keys or lost one"
    );
    assert!(
        wr.values().all(|c| (1..=2).contains(c)),
        "a key written more than twice for two edits: {:?}",
        wr.iter().filter(|(_, c)| **c > 2).collect::<Vec<_>>()
    );
    let race_writes: usize = wr.values().sum();
    assert!(
        !race.iter().any(|r| matches!(
            r.operation,
            Operation::BulkRemoveOrgMetadata | Operation::BulkRemoveUserMetadata
        ) && r.status == 200),
        "racing edits removed keys"
    );

    race_writes
}

#[tokio::test]
async fn load_converges_while_five_percent_of_requests_fail() {
    let n = load_objects();
    let env = TestEnv::new("chaos-load").await;
    for o in 0..ORGS {
        env.emu.add_org(&org_id(o), &format!("Load {o}"));
    }
    for u in 0..USERS {
        env.emu
            .add_user(&user_id(u), &org_id(u % ORGS), &format!("load{u}"));
    }
    // 5% of all requests fail: 2.5% 503, 1% 500, 0.5% 429 (quota, Retry-After 1 s), 1% reset.
    env.emu.seed_faults(2026);
    env.emu.inject(Fault::unavailable().with_probability(0.025));
    env.emu.inject(Fault::internal().with_probability(0.01));
    env.emu
        .inject(Fault::too_many_requests(Some(1), false).with_probability(0.005));
    env.emu.inject(Fault::reset().with_probability(0.01));
    let settings = Settings {
        resync: Duration::from_secs(600),
        stalled_requeue: Duration::from_secs(600),
        backoff_base: Duration::from_millis(200),
        backoff_max: Duration::from_secs(3),
        concurrency: 16,
        request_timeout: Duration::from_secs(10),
        ..fast_settings()
    };
    let limit = Duration::from_secs(if n > 1000 { 900 } else { 240 });
    let op = env.start_operator_with_api(settings, ApiMode::V1);

    // Round 0: create everything at once.
    let started = Instant::now();
    apply_all(&env, n, 0).await;
    let applied_s = started.elapsed().as_secs_f64();
    wait_all_ready(&env, n, limit).await;
    let create_s = started.elapsed().as_secs_f64();
    assert_state(&env, n, 0);
    let round0 = env.emu.requests();

    // Round 1: edit everything at once (one value changes, one key goes).
    env.emu.clear_requests();
    let started = Instant::now();
    apply_all(&env, n, 1).await;
    wait_all_ready(&env, n, limit).await;
    let edit_s = started.elapsed().as_secs_f64();
    assert_state(&env, n, 1);
    let round1 = env.emu.requests();

    // Racing edits: every object edited twice back to back (value v2, then v3), so the second
    // edit often lands while the first one's reconcile is in flight.
    env.emu.clear_requests();
    let started = Instant::now();
    racing_edits(&env, n).await;
    wait_all_ready(&env, n, limit).await;
    let race_s = started.elapsed().as_secs_f64();
    assert_state(&env, n, 3);
    let race = env.emu.requests();

    // Round 2: delete every fourth object; the finalizer removes its keys.
    env.emu.clear_requests();
    let started = Instant::now();
    let deleted = delete_every_fourth(&env, n, started, limit).await;
    let delete_s = started.elapsed().as_secs_f64();
    let gone: BTreeSet<usize> = deleted.iter().copied().collect();
    assert_state_without(&env, n, 3, &gone);
    let round2 = env.emu.requests();
    env.emu.clear_faults();

    // No duplicate or lost writes: per round exactly one successful bulk set per object with
    // exactly the keys that had to change, and (round 1) one successful bulk remove.
    let w0 = key_writes(&round0);
    let want0: BTreeMap<String, usize> = (0..n)
        .flat_map(|i| load_desired(i, 0).into_keys())
        .map(|k| (k, 1))
        .collect();
    assert_eq!(w0, want0, "round 0: every key written exactly once");
    let w1 = key_writes(&round1);
    let want1: BTreeMap<String, usize> = (0..n).map(|i| (format!("k{i}-a"), 1)).collect();
    assert_eq!(w1, want1, "round 1: only the changed key, exactly once");
    let removes = successful_removes(&round1).count();
    assert_eq!(removes, n, "round 1: one successful bulk remove per object");
    // Round 2: one successful bulk remove per deleted object, with its keys; nothing set.
    let mut removed = removed_key_sets(&round2);
    removed.sort();
    let mut want_removed: Vec<BTreeSet<String>> = deleted
        .iter()
        .map(|i| load_desired(*i, 3).into_keys().collect())
        .collect();
    want_removed.sort();
    assert_eq!(
        removed, want_removed,
        "round 2: each deleted object's keys removed once"
    );
    assert_eq!(
        round2
            .iter()
            .filter(|r| r.operation.sets_metadata())
            .count(),
        0,
        "round 2 wrote values"
    );

    let race_writes = check_racing_edit_writes(&race, n);

    let (calls0, calls1, calls2) = (round0.len(), round1.len(), round2.len());
    let (inj0, inj1, inj2) = (injected(&round0), injected(&round1), injected(&round2));
    let calls = calls0 + calls1 + calls2 + race.len();
    let injected_total = inj0 + inj1 + inj2 + injected(&race);
    let share = injected_total as f64 / calls as f64;
    assert!(
        (0.02..0.09).contains(&share),
        "injected {share:.3} of the calls, expected about 5%"
    );
    // Retries stay bounded: failures cost a few calls each, not a hot loop.
    let per_object = (calls0 + calls1) as f64 / n as f64;
    assert!(
        per_object < 12.0,
        "{per_object:.1} calls per object over two rounds"
    );
    let per_deleted = calls2 as f64 / deleted.len() as f64;
    assert!(
        per_deleted < 5.0,
        "{per_deleted:.1} calls per deleted object"
    );
    figure(
        &format!("load_{n}_5pct"),
        &[
            ("objects", n.to_string()),
            ("converge_s", format!("{create_s:.1}")),
            ("apply_s", format!("{applied_s:.1}")),
            ("edit_converge_s", format!("{edit_s:.1}")),
            ("racing_edits_converge_s", format!("{race_s:.1}")),
            ("racing_edit_writes", race_writes.to_string()),
            ("deleted", deleted.len().to_string()),
            ("delete_s", format!("{delete_s:.1}")),
            ("calls", calls.to_string()),
            ("calls_create", calls0.to_string()),
            ("calls_edit", calls1.to_string()),
            ("calls_racing_edits", race.len().to_string()),
            ("calls_delete", calls2.to_string()),
            ("errors_injected", injected_total.to_string()),
            ("error_share", format!("{share:.3}")),
            ("calls_per_object", format!("{per_object:.2}")),
            ("duplicate_writes", "0".into()),
            ("lost_writes", "0".into()),
        ],
    );
    op.stop().await;
}
