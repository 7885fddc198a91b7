//! The version matrix (issue #11 "Done when"): the end-to-end scenario — create, edit, prune,
//! drift repair, Secret rotation and deletion, for `OrgMetadata` and `UserMetadata` — against
//! every ZITADEL version the emulator imitates (`v3`, `v4.0`, `v4.x`, `v5`), with the operator's
//! default connection in `Auto` mode, on the real kube-apiserver. Plus `v4.x` with the API pinned
//! to v2 (the early opt-in).
//!
//! Asserted per profile: the API `Auto` chose (v1 wherever it is served, v2 on v5: README
//! "ZITADEL versions"), from the emulator's request log — on v5 not a single `/management/v1`
//! request after the probe —; `status.sequence` (ZITADEL's on v1, empty on v2, never invented);
//! ZITADEL's final state (managed keys gone, a foreign key untouched); and every request body
//! the operator sent and every answer it read, decoded strictly with ZITADEL's published
//! definitions (`tests/conformance`, when node and python are there; required on CI).
//!
//! One namespace, emulator and operator per profile; the profiles run in parallel (one test
//! each). Each prints `FIGURE version_matrix …` with its wall time and request counts.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use zitadel_metadata_operator::crd::MetadataResource;
use zmo_testkit::emulator::{Operation, Profile, RecordedRequest};

/// Which API the scenario must see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    V1,
    V2,
}

fn is_v1(r: &RecordedRequest) -> bool {
    r.path.starts_with("/management/v1")
}

/// v2 metadata operations (Connect or REST).
fn is_v2_metadata(op: Operation) -> bool {
    matches!(
        op,
        Operation::SetUserMetadataV2
            | Operation::ListUserMetadataV2
            | Operation::DeleteUserMetadataV2
            | Operation::SetOrgMetadataV2
            | Operation::ListOrgMetadataV2
            | Operation::DeleteOrgMetadataV2
    )
}

/// The probe's calls: lists for the fake user id `probe` or the v1 probe key.
fn is_probe(r: &RecordedRequest) -> bool {
    r.body["userId"] == "probe"
        || r.body["organizationId"] == "probe"
        || r.path.contains("/users/probe/")
        || r.body["queries"][0]["keyQuery"]["key"] == "zitadel-metadata-operator/probe"
}

async fn wait_value(env: &TestEnv, what: &str, check: impl Fn(&TestEnv) -> bool) {
    eventually(Duration::from_secs(30), what, || async {
        check(env).then_some(())
    })
    .await;
}

fn user_value(env: &TestEnv, key: &str) -> Option<String> {
    env.emu
        .user_metadata(ALICE)
        .get(key)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// A value from the Secret `values` (rotated by the scenario).
fn from_secret() -> serde_json::Value {
    json!({"key": "from-secret", "valueFrom": {"secretKeyRef": {"name": "values", "key": "secret"}}})
}

/// Create both objects: values written, `status.sequence` only where v1 reports one.
async fn create(env: &TestEnv, profile: Profile, expect: Expect) {
    let from_secret = from_secret();
    env.apply_org(
        "org",
        json!({"organizationId": ACME, "metadata": [
            {"key": "tier", "value": "gold"}, {"key": "prune-me", "value": "x"}, from_secret]}),
    )
    .await;
    env.apply_user(
        "user",
        json!({"userId": ALICE, "metadata": [
            {"key": "team", "value": "a"}, {"key": "prune-me", "value": "y"}, from_secret]}),
    )
    .await;
    let org = env.wait_org_ready("org").await;
    let user = env.wait_user_ready("user").await;
    assert_eq!(env.org_value(ACME, "tier").as_deref(), Some("gold"));
    assert_eq!(env.org_value(ACME, "from-secret").as_deref(), Some("s1"));
    assert_eq!(user_value(env, "team").as_deref(), Some("a"));
    assert_eq!(user_value(env, "from-secret").as_deref(), Some("s1"));
    for st in [org.status(), user.status()] {
        let st = st.expect("status");
        // v1 reports ZITADEL's sequence; v2 has none and none is invented.
        assert_eq!(
            st.sequence.is_some(),
            expect == Expect::V1,
            "{profile}: sequence {:?}",
            st.sequence
        );
        assert!(
            st.change_date.as_deref().is_some_and(|d| d.ends_with('Z')),
            "{profile}: {st:?}"
        );
    }
    if expect == Expect::V1 {
        let st = org.status().expect("status");
        assert_eq!(
            st.sequence.as_deref(),
            Some(env.emu.org_sequence(ACME).to_string().as_str())
        );
    }
}

/// Edit and prune, then drift repair and Secret rotation.
async fn edit_prune_repair_and_rotate(env: &TestEnv) {
    let from_secret = from_secret();
    // Edit and prune.
    env.apply_org(
        "org",
        json!({"organizationId": ACME, "metadata": [{"key": "tier", "value": "platinum"}, from_secret]}),
    )
    .await;
    env.apply_user(
        "user",
        json!({"userId": ALICE, "metadata": [{"key": "team", "value": "b"}, from_secret]}),
    )
    .await;
    env.wait_org_ready("org").await;
    env.wait_user_ready("user").await;
    assert_eq!(env.org_value(ACME, "tier").as_deref(), Some("platinum"));
    assert_eq!(env.org_value(ACME, "prune-me"), None);
    assert_eq!(user_value(env, "team").as_deref(), Some("b"));
    assert_eq!(user_value(env, "prune-me"), None);

    // Drift repair (resync every second).
    env.emu.put_org_metadata(ACME, "tier", b"tampered");
    env.emu.delete_user_metadata(ALICE, "team");
    wait_value(env, "drift repaired", |env| {
        env.org_value(ACME, "tier").as_deref() == Some("platinum")
            && user_value(env, "team").as_deref() == Some("b")
    })
    .await;

    // Secret rotation.
    env.put_secret(&env.ns, "values", "secret", "s2").await;
    wait_value(env, "rotated value written", |env| {
        env.org_value(ACME, "from-secret").as_deref() == Some("s2")
            && user_value(env, "from-secret").as_deref() == Some("s2")
    })
    .await;
}

/// Deletion removes exactly the managed keys.
async fn delete_removes_only_managed_keys(env: &TestEnv, profile: Profile) {
    env.delete_org("org").await;
    env.users()
        .delete("user", &Default::default())
        .await
        .expect("delete user");
    env.wait_org_gone("org").await;
    eventually(Duration::from_secs(30), "user object gone", || async {
        env.users()
            .get_opt("user")
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    let org_keys: BTreeSet<String> = env.emu.org_metadata(ACME).into_keys().collect();
    let user_keys: BTreeSet<String> = env.emu.user_metadata(ALICE).into_keys().collect();
    assert_eq!(
        org_keys,
        BTreeSet::from(["foreign".to_string()]),
        "{profile}"
    );
    assert_eq!(
        user_keys,
        BTreeSet::from(["foreign".to_string()]),
        "{profile}"
    );
}

/// The API used after the last probe, from the request log: (v1 requests, v2 metadata calls).
fn assert_api_used(
    requests: &[RecordedRequest],
    profile: Profile,
    api: ApiMode,
    expect: Expect,
) -> (usize, usize) {
    let last_probe = requests.iter().rposition(is_probe);
    let after_probe = &requests[last_probe.map_or(0, |i| i + 1)..];
    let v1_after = after_probe.iter().filter(|r| is_v1(r)).count();
    let v2_metadata = after_probe
        .iter()
        .filter(|r| is_v2_metadata(r.operation))
        .count();
    match expect {
        Expect::V1 => {
            assert_eq!(
                v2_metadata, 0,
                "{profile}: v2 metadata calls on a v1 selection"
            );
            assert!(v1_after > 0, "{profile}");
        }
        Expect::V2 => {
            assert_eq!(
                v1_after,
                0,
                "{profile}: /management/v1 requests after the probe: {:?}",
                after_probe
                    .iter()
                    .filter(|r| is_v1(r))
                    .map(|r| r.path.clone())
                    .collect::<Vec<_>>()
            );
            assert!(v2_metadata > 0, "{profile}");
        }
    }
    if api != ApiMode::Auto {
        assert!(last_probe.is_none(), "{profile}: pinned, no probe");
    }
    (v1_after, v2_metadata)
}

/// The scenario on one emulator profile with the default connection in `api` mode.
async fn scenario(profile: Profile, api: ApiMode, expect: Expect) {
    let started = Instant::now();
    let env = TestEnv::with_profile(&format!("ver-{profile}").replace('.', ""), profile).await;
    // Keys nobody manages must survive everything.
    env.emu.put_org_metadata(ACME, "foreign", b"keep");
    env.emu.put_user_metadata(ALICE, "foreign", b"keep");
    env.put_secret(&env.ns, "values", "secret", "s1").await;
    let op = env.start_operator_with_api(fast_settings(), api);

    create(&env, profile, expect).await;
    edit_prune_repair_and_rotate(&env).await;
    delete_removes_only_managed_keys(&env, profile).await;
    op.stop().await;

    // The API used, from the request log.
    let requests = env.emu.requests();
    let (v1_after, v2_metadata) = assert_api_used(&requests, profile, api, expect);
    let probes = requests.iter().filter(|r| is_probe(r)).count();
    let conformance = common::conformance::check(&requests, &format!("{profile}-{api:?}"));
    println!(
        "FIGURE version_matrix profile={profile} api={api:?} selected={expect:?} wall_s={:.1} requests={} probe_calls={probes} v1_after_probe={v1_after} v2_metadata_calls={v2_metadata} conformance={conformance}",
        started.elapsed().as_secs_f64(),
        requests.len(),
    );
}

#[tokio::test]
async fn v3_uses_v1() {
    scenario(Profile::V3, ApiMode::Auto, Expect::V1).await;
}

#[tokio::test]
async fn v4_0_uses_v1() {
    scenario(Profile::V4_0, ApiMode::Auto, Expect::V1).await;
}

#[tokio::test]
async fn v4_x_uses_v1() {
    scenario(Profile::V4x, ApiMode::Auto, Expect::V1).await;
}

#[tokio::test]
async fn v5_uses_v2_and_no_v1_after_the_probe() {
    scenario(Profile::V5, ApiMode::Auto, Expect::V2).await;
}

#[tokio::test]
async fn v4_x_pinned_to_v2() {
    scenario(Profile::V4x, ApiMode::V2, Expect::V2).await;
}
