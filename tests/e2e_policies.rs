//! End-to-end: values from Secrets/ConfigMaps, drift policies, suspend, adoption — against the real
//! API server and the ZITADEL emulator.
//!
//! The default connection is pinned to Management API v1 (`--zitadel-api v1`): the tests count
//! v1 operations and read v1 bulk bodies. The policies themselves do not depend on the API.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use zitadel_metadata_operator::crd::MetadataResource;
use zitadel_metadata_operator::status::DRIFTED;
use zmo_testkit::emulator::Operation;

fn writes(env: &TestEnv) -> usize {
    env.emu.count(Operation::BulkSetOrgMetadata) + env.emu.count(Operation::BulkRemoveOrgMetadata)
}

/// Wait until ZITADEL holds `value` for `key` in `org`.
async fn wait_value(env: &TestEnv, org: &str, key: &str, value: Option<&str>, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while env.org_value(org, key).as_deref() != value {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key} in {org} is {:?}, expected {value:?}",
            env.org_value(org, key)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn secret_values_sync_rotate_on_watch_and_report_a_missing_secret() {
    let env = TestEnv::new("secret").await;
    // A resync far away: a change that lands quickly came through the Secret watch.
    let mut settings = fast_settings();
    settings.resync = Duration::from_secs(3600);
    let op = env.start_operator_with_api(settings, ApiMode::V1);
    env.put_secret(&env.ns, "api-creds", "client-id", "first-secret-value")
        .await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.ns);
    cms.create(
        &PostParams::default(),
        &ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some("settings".into()),
                ..Default::default()
            },
            binary_data: Some(BTreeMap::from([(
                "logo".to_string(),
                ByteString(vec![0, 1, 2, 255]),
            )])),
            ..Default::default()
        },
    )
    .await
    .expect("configmap");
    env.apply_org(
        "acme",
        json!({"organizationId": ACME, "metadata": [
            {"key": "client-id", "valueFrom": {"secretKeyRef": {"name": "api-creds", "key": "client-id"}}},
            {"key": "logo", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "logo"}}},
            {"key": "maybe", "valueFrom": {"secretKeyRef": {"name": "not-there", "key": "x", "optional": true}}},
            {"key": "plain", "value": "p"}
        ]}),
    )
    .await;
    let o = env.wait_org_ready("acme").await;
    assert_eq!(
        env.org_value(ACME, "client-id").as_deref(),
        Some("first-secret-value")
    );
    assert_eq!(
        env.emu.org_metadata(ACME).get("logo"),
        Some(&vec![0, 1, 2, 255])
    );
    assert!(
        env.org_value(ACME, "maybe").is_none(),
        "an optional missing source sets nothing"
    );
    let st = o.status.as_ref().expect("status");
    assert!(
        st.observed_source_versions
            .iter()
            .any(|v| v.starts_with("Secret/api-creds@")),
        "{st:?}"
    );
    // The secret value is nowhere in status or events.
    assert!(
        !serde_json::to_string(&o.status)
            .expect("json")
            .contains("first-secret-value")
    );

    // Rotate: ZITADEL follows within seconds, without waiting for a resync.
    env.put_secret(&env.ns, "api-creds", "client-id", "rotated-secret-value")
        .await;
    wait_value(
        &env,
        ACME,
        "client-id",
        Some("rotated-secret-value"),
        Duration::from_secs(10),
    )
    .await;
    let sets = env
        .emu
        .requests()
        .into_iter()
        .filter(|r| r.operation == Operation::BulkSetOrgMetadata && r.status == 200)
        .count();
    assert_eq!(sets, 2, "initial sync + rotation");

    // Delete the Secret: a clear condition naming it; nothing is written or removed.
    let before = writes(&env);
    Api::<Secret>::namespaced(env.client.clone(), &env.ns)
        .delete("api-creds", &DeleteParams::default())
        .await
        .expect("delete secret");
    let o = env
        .wait_org("acme", "ValueSourceNotFound", |o| {
            reason(o.status()) == Some("ValueSourceNotFound")
        })
        .await;
    assert_message_contains(o.status(), "\"api-creds\"");
    assert_eq!(condition(o.status(), "Ready"), Some("False"));
    assert_eq!(writes(&env), before);
    assert_eq!(
        env.org_value(ACME, "client-id").as_deref(),
        Some("rotated-secret-value")
    );
    let events = env.events().await;
    assert!(
        events.iter().any(|(r, _)| r == "ValueSourceNotFound"),
        "{events:?}"
    );
    for (_, note) in &events {
        assert!(
            !note.contains("secret-value"),
            "secret value leaked into an event: {note}"
        );
    }
    op.stop().await;
}

#[tokio::test]
async fn drift_policy_report_never_writes_and_lists_keys() {
    let env = TestEnv::new("report").await;
    env.emu.put_org_metadata(ACME, "same", b"1");
    env.emu.put_org_metadata(ACME, "differs", b"outside value");
    let op = env.start_operator_with_api(fast_settings(), ApiMode::V1);
    env.apply_org(
        "acme",
        json!({"organizationId": ACME, "driftPolicy": "Report", "metadata": [
            {"key": "same", "value": "1"}, {"key": "differs", "value": "spec value"}, {"key": "missing", "value": "m"}
        ]}),
    )
    .await;
    let o = env
        .wait_org("acme", "Drifted", |o| {
            condition(o.status(), DRIFTED) == Some("True")
        })
        .await;
    let drifted = o
        .status
        .as_ref()
        .and_then(|s| zitadel_metadata_operator::status::find(&s.conditions, DRIFTED))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        drifted.contains("differs") && drifted.contains("missing"),
        "{drifted}"
    );
    assert!(!drifted.contains("same"), "{drifted}");
    assert!(
        !drifted.contains("outside value") && !drifted.contains("spec value"),
        "values leaked: {drifted}"
    );
    assert_eq!(condition(o.status(), "Ready"), Some("False"));
    assert_eq!(reason(o.status()), Some("Drifted"));
    // The equal key is adopted.
    assert_eq!(
        o.status.as_ref().map(|s| s.managed_keys.clone()),
        Some(vec!["same".to_string()])
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(writes(&env), 0, "Report must never write");
    assert_eq!(
        env.org_value(ACME, "differs").as_deref(),
        Some("outside value")
    );

    // Fix ZITADEL by hand: the object becomes Ready and Drifted=False.
    env.emu.put_org_metadata(ACME, "differs", b"spec value");
    env.emu.put_org_metadata(ACME, "missing", b"m");
    let o = env.wait_org_ready("acme").await;
    assert_eq!(condition(o.status(), DRIFTED), Some("False"));
    assert_eq!(writes(&env), 0);
    op.stop().await;
}

#[tokio::test]
async fn drift_policy_ignore_applies_spec_changes_but_leaves_outside_edits() {
    let env = TestEnv::new("ignore").await;
    let op = env.start_operator_with_api(fast_settings(), ApiMode::V1);
    env.apply_org("acme", json!({"organizationId": ACME, "driftPolicy": "Ignore", "metadata": [{"key": "a", "value": "1"}]}))
        .await;
    env.wait_org_ready("acme").await;
    let lists = env.emu.count(Operation::ListOrgMetadata);
    env.emu.put_org_metadata(ACME, "a", b"edited outside");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        env.org_value(ACME, "a").as_deref(),
        Some("edited outside"),
        "Ignore must not repair drift"
    );
    assert_eq!(
        env.emu.count(Operation::ListOrgMetadata),
        lists,
        "Ignore must not poll ZITADEL"
    );
    // A spec change is applied.
    env.apply_org("acme", json!({"organizationId": ACME, "driftPolicy": "Ignore", "metadata": [{"key": "a", "value": "2"}]}))
        .await;
    env.wait_org_ready("acme").await;
    assert_eq!(env.org_value(ACME, "a").as_deref(), Some("2"));
    op.stop().await;
}

#[tokio::test]
async fn suspend_pauses_all_calls_until_resumed() {
    let env = TestEnv::new("suspend").await;
    let op = env.start_operator_with_api(fast_settings(), ApiMode::V1);
    env.apply_org_values("acme", ACME, &[("a", "1")]).await;
    env.wait_org_ready("acme").await;
    env.apply_org(
        "acme",
        json!({"organizationId": ACME, "suspend": true, "metadata": [{"key": "a", "value": "2"}]}),
    )
    .await;
    let o = env
        .wait_org("acme", "Suspended", |o| {
            // No Ready condition while suspended (kstatus Current); Stalled carries the reason.
            condition(o.status(), "Ready").is_none()
                && o.status()
                    .and_then(|s| zitadel_metadata_operator::status::find(&s.conditions, "Stalled"))
                    .is_some_and(|c| c.reason == "Suspended")
        })
        .await;
    assert_eq!(
        o.status.as_ref().and_then(|s| s.observed_generation),
        o.metadata.generation
    );
    let calls = env.emu.requests().len();
    env.emu.put_org_metadata(ACME, "a", b"drifted");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        env.emu.requests().len(),
        calls,
        "a suspended object must not call ZITADEL"
    );
    assert_eq!(env.org_value(ACME, "a").as_deref(), Some("drifted"));
    env.apply_org(
        "acme",
        json!({"organizationId": ACME, "suspend": false, "metadata": [{"key": "a", "value": "2"}]}),
    )
    .await;
    env.wait_org_ready("acme").await;
    assert_eq!(env.org_value(ACME, "a").as_deref(), Some("2"));
    op.stop().await;
}

#[tokio::test]
async fn adoption_of_existing_keys() {
    let env = TestEnv::new("adopt").await;
    env.emu.put_org_metadata(ACME, "equal", b"same");
    env.emu.put_org_metadata(ACME, "other", b"old");
    let op = env.start_operator_with_api(fast_settings(), ApiMode::V1);
    env.apply_org_values("eq", ACME, &[("equal", "same")]).await;
    let o = env.wait_org_ready("eq").await;
    // A new object manages nothing, so it does not list before its first write: it sets its
    // keys once (an equal value is set to itself; ZITADEL has no "not changed" error for
    // metadata) and the read-back verifies them: 2 calls, and the key is adopted.
    assert_eq!(writes(&env), 1, "one bulk set");
    assert_eq!(
        env.emu.count(Operation::ListOrgMetadata),
        1,
        "the read-back"
    );
    assert_eq!(env.org_value(ACME, "equal").as_deref(), Some("same"));
    assert_eq!(
        o.status.as_ref().map(|s| s.managed_keys.clone()),
        Some(vec!["equal".to_string()])
    );
    // A later sync lists first and writes nothing for an equal value: only the new key.
    env.emu.put_org_metadata(ACME, "more", b"x");
    env.apply_org_values("eq", ACME, &[("equal", "same"), ("more", "x")])
        .await;
    env.wait_org("eq", "both keys managed", |o| {
        o.status.as_ref().is_some_and(|s| {
            s.managed_keys.len() == 2 && s.observed_generation == o.metadata.generation
        })
    })
    .await;
    assert_eq!(writes(&env), 1, "equal values are adopted without a write");

    env.apply_org_values("diff", ACME, &[("other", "new")])
        .await;
    env.wait_org_ready("diff").await;
    assert_eq!(env.org_value(ACME, "other").as_deref(), Some("new"));
    assert_eq!(env.emu.count(Operation::BulkSetOrgMetadata), 2);

    // Adopted keys are removed on deletion (deletionPolicy Delete).
    env.delete_org("eq").await;
    env.wait_org_gone("eq").await;
    assert!(env.org_value(ACME, "equal").is_none());
    op.stop().await;
}
