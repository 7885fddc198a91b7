//! End-to-end: the controllers (in-process) against a real kube-apiserver + etcd and the ZITADEL
//! emulator. Each test has its own namespace, emulator and operator.
//!
//! The operator's default connection is pinned to Management API v1 (`--zitadel-api v1`): the
//! tests assert v1 requests (operation names, bulk bodies, `details.sequence`). The same
//! scenario runs on every ZITADEL version, v2 included, in `tests/e2e_versions.rs`.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use serde_json::json;
use zitadel_metadata_operator::crd::MetadataResource;
use zitadel_metadata_operator::status::{RECONCILING, STALLED};
use zmo_testkit::emulator::{Fault, FaultKind, Operation};

fn set_keys(env: &TestEnv, op: Operation) -> Vec<Vec<String>> {
    env.emu
        .requests()
        .into_iter()
        .filter(|r| r.operation == op && r.status == 200)
        .map(|r| {
            let items = r.body["metadata"].as_array().cloned().unwrap_or_default();
            items
                .iter()
                .filter_map(|i| i["key"].as_str().map(str::to_owned))
                .collect()
        })
        .collect()
}

fn removed_keys(env: &TestEnv, op: Operation) -> Vec<Vec<String>> {
    env.emu
        .requests()
        .into_iter()
        .filter(|r| r.operation == op && r.status == 200)
        .map(|r| {
            let items = r.body["keys"].as_array().cloned().unwrap_or_default();
            items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn org_and_user_metadata_become_ready_with_zitadel_details() {
    let env = TestEnv::new("ready").await;
    let op = env.start_operator_with_api(fast_settings(), ApiMode::V1);
    let bin = base64::engine::general_purpose::STANDARD.encode([0u8, 159, 146, 150]);
    env.apply_org(
        "acme",
        json!({"organizationId": ACME, "metadata": [{"key": "tier", "value": "gold"}, {"key": "blob", "binaryValue": bin}]}),
    )
    .await;
    env.apply_user(
        "alice",
        json!({"userId": ALICE, "metadata": [{"key": "team", "value": "platform ✓"}]}),
    )
    .await;

    let org = env.wait_org_ready("acme").await;
    let user = env.wait_user_ready("alice").await;

    // ZITADEL holds the decoded values.
    let stored = env.emu.org_metadata(ACME);
    assert_eq!(stored.get("tier").map(Vec::as_slice), Some(&b"gold"[..]));
    assert_eq!(
        stored.get("blob").map(Vec::as_slice),
        Some(&[0u8, 159, 146, 150][..])
    );
    assert_eq!(
        env.emu.user_metadata(ALICE).get("team").map(Vec::as_slice),
        Some("platform ✓".as_bytes())
    );

    // Status carries what ZITADEL returned for the write.
    let st = org.status.as_ref().expect("status");
    assert_eq!(
        st.sequence.as_deref(),
        Some(env.emu.org_sequence(ACME).to_string().as_str())
    );
    assert!(
        st.change_date.as_deref().is_some_and(|d| d.ends_with('Z')),
        "{st:?}"
    );
    assert_eq!(st.resource_owner.as_deref(), Some(ACME));
    assert_eq!(
        st.managed_keys,
        vec!["blob".to_string(), "tier".to_string()]
    );
    assert_eq!(condition(org.status(), STALLED), Some("False"));
    assert_eq!(condition(org.status(), RECONCILING), Some("False"));

    // The user's org was looked up once and recorded.
    let ust = user.status.as_ref().expect("status");
    assert_eq!(ust.organization_id.as_deref(), Some(ACME));
    assert_eq!(ust.resource_owner.as_deref(), Some(ACME));
    assert_eq!(
        ust.sequence.as_deref(),
        Some(env.emu.user_sequence(ALICE).to_string().as_str())
    );
    assert_eq!(env.emu.count(Operation::GetUserV2), 1);

    // One bulk set per target, every org call scoped by header.
    assert_eq!(env.emu.count(Operation::BulkSetOrgMetadata), 1);
    assert_eq!(env.emu.count(Operation::BulkSetUserMetadata), 1);
    for r in env.emu.requests() {
        if matches!(
            r.operation,
            Operation::BulkSetOrgMetadata
                | Operation::ListOrgMetadata
                | Operation::BulkSetUserMetadata
        ) {
            assert_eq!(r.org_header.as_deref(), Some(ACME), "{:?}", r.operation);
        }
    }
    // The first sync publishes no write Event (the Ready condition tells it).
    let events = env.events().await;
    assert!(
        events.iter().all(|(reason, _)| reason != "MetadataSet"),
        "{events:?}"
    );
    // A later write does, naming keys but never values.
    env.apply_org(
        "acme",
        json!({"organizationId": ACME, "metadata": [{"key": "tier", "value": "platinum"}, {"key": "blob", "binaryValue": bin}]}),
    )
    .await;
    let events = common::eventually(Duration::from_secs(30), "a MetadataSet Event", || async {
        let events = env.events().await;
        events
            .iter()
            .any(|(reason, note)| reason == "MetadataSet" && note.contains("tier"))
            .then_some(events)
    })
    .await;
    assert_eq!(env.org_value(ACME, "tier").as_deref(), Some("platinum"));
    assert!(
        events
            .iter()
            .all(|(_, note)| !note.contains("gold") && !note.contains("platinum")),
        "{events:?}"
    );
    op.stop().await;
}

#[tokio::test]
async fn steady_state_writes_nothing_and_status_does_not_churn() {
    let env = TestEnv::new("steady").await;
    let op = env.start_operator_with_api(fast_settings(), ApiMode::V1);
    env.apply_org_values("acme", ACME, &[("a", "1")]).await;
    let ready = env.wait_org_ready("acme").await;
    // Let the status write settle into the cache, then observe several resync periods.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rv = env.org_version("acme").await;
    let lists_before = env.emu.count(Operation::ListOrgMetadata);
    let writes_before = env.emu.count(Operation::BulkSetOrgMetadata)
        + env.emu.count(Operation::BulkRemoveOrgMetadata);
    tokio::time::sleep(Duration::from_secs(5)).await;

    let lists_after = env.emu.count(Operation::ListOrgMetadata);
    assert!(
        lists_after >= lists_before + 3,
        "resync did not re-read ZITADEL: {lists_before} -> {lists_after}"
    );
    let writes_after = env.emu.count(Operation::BulkSetOrgMetadata)
        + env.emu.count(Operation::BulkRemoveOrgMetadata);
    assert_eq!(writes_before, 1);
    assert_eq!(
        writes_after, writes_before,
        "steady state must not write to ZITADEL"
    );
    let now = env.orgs().get("acme").await.expect("get");
    assert_eq!(
        now.metadata.resource_version, rv,
        "status churned at steady state"
    );
    assert_eq!(
        now.status,
        ready.status.clone().map(|mut s| {
            s.conditions = now
                .status
                .as_ref()
                .map(|n| n.conditions.clone())
                .unwrap_or_default();
            s
        })
    );
    op.stop().await;
}

#[tokio::test]
async fn edit_sends_only_the_changed_key_and_removal_sends_one_bulk_remove() {
    let env = TestEnv::new("edit").await;
    env.emu.put_org_metadata(ACME, "foreign", b"someone else's");
    let op = env.start_operator_with_api(fast_settings(), ApiMode::V1);
    env.apply_org_values("acme", ACME, &[("a", "1"), ("b", "2")])
        .await;
    env.wait_org_ready("acme").await;
    assert_eq!(
        set_keys(&env, Operation::BulkSetOrgMetadata),
        vec![vec!["a".to_string(), "b".to_string()]]
    );

    // Edit one value.
    env.apply_org_values("acme", ACME, &[("a", "1"), ("b", "changed")])
        .await;
    env.wait_org("acme", "Ready after edit", |o| {
        is_ready(o.status(), o.metadata.generation)
    })
    .await;
    let sets = set_keys(&env, Operation::BulkSetOrgMetadata);
    assert_eq!(sets.len(), 2, "{sets:?}");
    assert_eq!(sets[1], vec!["b".to_string()]);
    assert_eq!(env.org_value(ACME, "b").as_deref(), Some("changed"));

    // Remove a key from the spec.
    let before = env.orgs().get("acme").await.expect("get");
    env.apply_org_values("acme", ACME, &[("b", "changed")])
        .await;
    let after = env
        .wait_org("acme", "Ready after removal", |o| {
            is_ready(o.status(), o.metadata.generation)
        })
        .await;
    assert_eq!(
        removed_keys(&env, Operation::BulkRemoveOrgMetadata),
        vec![vec!["a".to_string()]]
    );
    assert_eq!(env.emu.count(Operation::BulkRemoveOrgMetadata), 1);
    assert_eq!(
        set_keys(&env, Operation::BulkSetOrgMetadata).len(),
        2,
        "removal must not set anything"
    );
    assert!(env.org_value(ACME, "a").is_none());
    assert_eq!(
        after.status.as_ref().map(|s| s.managed_keys.clone()),
        Some(vec!["b".to_string()])
    );
    // The remove's details moved the sequence in status.
    assert_ne!(
        after.status.as_ref().and_then(|s| s.sequence.clone()),
        before.status.as_ref().and_then(|s| s.sequence.clone())
    );
    // The key someone else wrote was never touched.
    assert_eq!(
        env.org_value(ACME, "foreign").as_deref(),
        Some("someone else's")
    );
    op.stop().await;
}

#[tokio::test]
async fn drift_is_repaired_within_one_resync() {
    let env = TestEnv::new("drift").await;
    let op = env.start_operator_with_api(fast_settings(), ApiMode::V1);
    env.apply_org_values("acme", ACME, &[("a", "1"), ("b", "2")])
        .await;
    env.wait_org_ready("acme").await;
    env.emu.put_org_metadata(ACME, "a", b"tampered");
    env.emu.delete_org_metadata(ACME, "b");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while (env.org_value(ACME, "a").as_deref() != Some("1")
        || env.org_value(ACME, "b").as_deref() != Some("2"))
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(env.org_value(ACME, "a").as_deref(), Some("1"));
    assert_eq!(env.org_value(ACME, "b").as_deref(), Some("2"));
    let sets = set_keys(&env, Operation::BulkSetOrgMetadata);
    assert_eq!(
        sets.last(),
        Some(&vec!["a".to_string(), "b".to_string()]),
        "{sets:?}"
    );
    // The repair's details are in status.
    env.wait_org("acme", "status sequence follows the repair", |o| {
        o.status.as_ref().and_then(|s| s.sequence.clone())
            == Some(env.emu.org_sequence(ACME).to_string())
    })
    .await;
    op.stop().await;
}

#[tokio::test]
async fn deletion_honours_deletion_policy() {
    let env = TestEnv::new("delete").await;
    let op = env.start_operator_with_api(fast_settings(), ApiMode::V1);
    env.apply_org_values("del", ACME, &[("gone", "1")]).await;
    env.apply_org(
        "keep",
        json!({"organizationId": GLOBEX, "deletionPolicy": "Orphan", "metadata": [{"key": "stays", "value": "1"}]}),
    )
    .await;
    for name in ["del", "keep"] {
        let o = env.wait_org_ready(name).await;
        assert!(o.metadata.finalizers.as_ref().is_some_and(|f| {
            f.iter()
                .any(|f| f == "metadata.zitadel-operator.dev/cleanup")
        }));
    }
    env.delete_org("del").await;
    env.delete_org("keep").await;
    env.wait_org_gone("del").await;
    env.wait_org_gone("keep").await;
    assert!(
        env.org_value(ACME, "gone").is_none(),
        "Delete policy must remove the key"
    );
    assert_eq!(
        env.org_value(GLOBEX, "stays").as_deref(),
        Some("1"),
        "Orphan policy must keep the key"
    );
    assert_eq!(
        removed_keys(&env, Operation::BulkRemoveOrgMetadata),
        vec![vec!["gone".to_string()]]
    );
    op.stop().await;
}

#[tokio::test]
async fn deleting_an_object_whose_user_is_gone_does_not_block() {
    let env = TestEnv::new("gone").await;
    let op = env.start_operator_with_api(fast_settings(), ApiMode::V1);
    env.apply_user(
        "bob",
        json!({"userId": BOB, "organizationId": GLOBEX, "metadata": [{"key": "k", "value": "v"}]}),
    )
    .await;
    env.wait_user_ready("bob").await;
    env.emu.remove_user(BOB);
    env.users()
        .delete("bob", &Default::default())
        .await
        .expect("delete");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while env.users().get_opt("bob").await.expect("get").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "deletion blocked by a missing user"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    op.stop().await;
}

#[tokio::test]
async fn zitadel_503_backs_off_then_recovers_without_losing_the_change() {
    let env = TestEnv::new("flaky").await;
    env.emu.inject(Fault {
        operations: Some(vec![Operation::BulkSetOrgMetadata]),
        kind: FaultKind::Status {
            http: 503,
            code: 14,
        },
        times: Some(3),
        probability: None,
    });
    let op = env.start_operator_with_api(fast_settings(), ApiMode::V1);
    env.apply_org_values("acme", ACME, &[("a", "1")]).await;
    let retrying = env
        .wait_org("acme", "Ready=False while ZITADEL is unavailable", |o| {
            condition(o.status(), RECONCILING) == Some("True")
        })
        .await;
    assert_eq!(condition(retrying.status(), "Ready"), Some("False"));
    assert_eq!(reason(retrying.status()), Some("ZitadelUnavailable"));
    assert_eq!(condition(retrying.status(), STALLED), Some("False"));

    env.wait_org("acme", "Ready after recovery", |o| {
        is_ready(o.status(), o.metadata.generation)
    })
    .await;
    assert_eq!(env.org_value(ACME, "a").as_deref(), Some("1"));
    // Three failures, then one success: retried, but not in a hot loop.
    let attempts: Vec<_> = env
        .emu
        .requests()
        .into_iter()
        .filter(|r| r.operation == Operation::BulkSetOrgMetadata)
        .collect();
    assert_eq!(
        attempts.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![503, 503, 503, 200]
    );
    op.stop().await;
}

#[tokio::test]
async fn unknown_user_stalls_with_a_clear_message_and_no_writes() {
    let env = TestEnv::new("nouser").await;
    let op = env.start_operator_with_api(fast_settings(), ApiMode::V1);
    env.apply_user(
        "ghost",
        json!({"userId": "299999999999999999", "metadata": [{"key": "k", "value": "v"}]}),
    )
    .await;
    let o = env.wait_user_stalled("ghost").await;
    assert_eq!(condition(o.status(), "Ready"), Some("False"));
    assert_eq!(reason(o.status()), Some("ZitadelNotFound"));
    assert_message_contains(o.status(), "299999999999999999");
    assert_eq!(env.emu.count(Operation::BulkSetUserMetadata), 0);

    // A user in another org than the one named: ZITADEL answers 400 (COMMAND-uXHNj) → Stalled.
    env.apply_user(
        "wrong-org",
        json!({"userId": BOB, "organizationId": ACME, "metadata": [{"key": "k", "value": "v"}]}),
    )
    .await;
    let o = env.wait_user_stalled("wrong-org").await;
    assert_eq!(reason(o.status()), Some("UserNotFound"));
    assert!(env.emu.user_metadata(BOB).is_empty());
    let events = env.events().await;
    assert!(
        events.iter().any(|(r, _)| r == "UserNotFound"),
        "{events:?}"
    );
    op.stop().await;
}

#[tokio::test]
async fn value_over_the_byte_limit_is_a_reconcile_time_error() {
    // 250 000 two-byte characters pass the schema's 500 000-character cap but are 500 000+ bytes.
    let env = TestEnv::new("toolarge").await;
    let op = env.start_operator_with_api(fast_settings(), ApiMode::V1);
    let value = "é".repeat(250_001);
    env.apply_org(
        "big",
        json!({"organizationId": ACME, "metadata": [{"key": "big", "value": value}]}),
    )
    .await;
    let o = env.wait_org_stalled("big").await;
    assert_eq!(reason(o.status()), Some("InvalidSpec"));
    assert_message_contains(o.status(), "500000");
    assert_eq!(env.emu.count(Operation::BulkSetOrgMetadata), 0);
    assert_eq!(
        env.emu.count(Operation::ListOrgMetadata),
        0,
        "invalid spec must not call ZITADEL"
    );
    op.stop().await;
}

#[tokio::test]
async fn second_object_claiming_a_key_reports_a_conflict_and_does_not_fight() {
    let env = TestEnv::new("conflict").await;
    let op = env.start_operator_with_api(fast_settings(), ApiMode::V1);
    env.apply_org_values("first", ACME, &[("shared", "first")])
        .await;
    env.wait_org_ready("first").await;
    // Creation timestamps have one-second resolution: make sure the second one is later.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    env.apply_org_values("second", ACME, &[("shared", "second"), ("own", "x")])
        .await;
    let second = env
        .wait_org("second", "KeyConflict", |o| {
            reason(o.status()) == Some("KeyConflict")
        })
        .await;
    assert_eq!(condition(second.status(), "Ready"), Some("False"));
    assert_eq!(condition(second.status(), STALLED), Some("True"));
    assert!(message(second.status()).contains("shared"));
    assert!(message(second.status()).contains("first"));
    // Its other key is synced; the shared key keeps the first object's value, over several resyncs.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.org_value(ACME, "own").as_deref(), Some("x"));
    assert_eq!(env.org_value(ACME, "shared").as_deref(), Some("first"));
    let first = env.orgs().get("first").await.expect("get");
    assert!(is_ready(first.status(), first.metadata.generation));
    let shared_writes = set_keys(&env, Operation::BulkSetOrgMetadata)
        .into_iter()
        .filter(|keys| keys.contains(&"shared".to_string()))
        .count();
    assert_eq!(shared_writes, 1, "the objects fought over the key");
    op.stop().await;
}

/// The operator's status write ([`KubeReport`], no operator running here): a `PUT` of the status
/// subresource conditional on the resourceVersion the reconcile read (a managedFields entry of
/// operation `Update`, no apply); from a copy that is out of date (the object changed since),
/// the same status is applied instead (server-side apply, forced) and lands all the same; a
/// deleted object is an error, not a success.
#[tokio::test]
async fn the_status_write_is_a_conditional_put_that_falls_back_to_apply_after_a_conflict() {
    use zitadel_metadata_operator::controller::FIELD_MANAGER;
    use zitadel_metadata_operator::controller::metadata::{KubeReport, Report};
    use zitadel_metadata_operator::crd::{MetadataStatus, OrgMetadata};

    let env = TestEnv::new("status-put").await;
    let spec = json!({"organizationId": ACME, "metadata": [{"key": "region", "value": "eu"}]});
    let read = env.apply_org("acme", spec).await;
    let report = KubeReport::new(env.client.clone());
    let operation_of = |o: &OrgMetadata| -> Vec<String> {
        o.metadata
            .managed_fields
            .iter()
            .flatten()
            .filter(|m| m.manager.as_deref() == Some(FIELD_MANAGER))
            .map(|m| {
                format!(
                    "{}/{}",
                    m.operation.as_deref().unwrap_or_default(),
                    m.subresource.as_deref().unwrap_or_default()
                )
            })
            .collect()
    };

    let first = MetadataStatus {
        observed_generation: read.metadata.generation,
        managed_keys: vec!["region".into()],
        managed_key_count: Some(1),
        ..MetadataStatus::default()
    };
    Report::<OrgMetadata>::write_status(&report, &read, &first)
        .await
        .expect("status PUT");
    let written = env.orgs().get("acme").await.expect("get");
    let status = written.status.clone().unwrap_or_default();
    assert_eq!(status.managed_keys, ["region"]);
    assert_eq!(
        operation_of(&written),
        ["Update/status"],
        "{:?}",
        written.metadata.managed_fields
    );

    // `read` is out of date now (the write above changed the object): the PUT conflicts and the
    // status is applied instead.
    let second = MetadataStatus {
        managed_keys: vec!["region".into(), "tier".into()],
        managed_key_count: Some(2),
        ..first.clone()
    };
    Report::<OrgMetadata>::write_status(&report, &read, &second)
        .await
        .expect("status apply after the conflict");
    let applied = env.orgs().get("acme").await.expect("get");
    let status = applied.status.clone().unwrap_or_default();
    assert_eq!(status.managed_keys, ["region", "tier"]);
    assert_eq!(status.managed_key_count, Some(2));
    assert!(
        operation_of(&applied).contains(&"Apply/status".to_string()),
        "{:?}",
        applied.metadata.managed_fields
    );

    // Gone: neither write succeeds.
    let current = applied;
    env.orgs()
        .patch(
            "acme",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("drop finalizers");
    env.orgs()
        .delete("acme", &Default::default())
        .await
        .expect("delete");
    env.wait_org_gone("acme").await;
    let gone = Report::<OrgMetadata>::write_status(&report, &current, &second).await;
    assert!(
        matches!(&gone, Err(kube::Error::Api(e)) if e.code == 404),
        "{gone:?}"
    );
}

/// A condition another client adds to the status (its own type, its own field manager) is kept:
/// the resyncs write no status because of it, and the operator's status `PUT` after a spec
/// change (which replaces the whole status) carries it unchanged.
#[tokio::test]
async fn another_clients_condition_is_kept_and_causes_no_status_writes() {
    use kube::api::{Patch, PatchParams};

    let env = TestEnv::new("foreign-cond").await;
    let op = env.start_operator_with_api(fast_settings(), ApiMode::V1);
    env.apply_org_values("acme", ACME, &[("a", "1")]).await;
    env.wait_org_ready("acme").await;
    let approved = json!({"type": "example.com/Approved", "status": "True", "reason": "Reviewed",
                          "message": "by the platform team",
                          "lastTransitionTime": "2026-01-01T00:00:00Z"});
    let patch = json!({
        "apiVersion": "metadata.zitadel-operator.dev/v1alpha1",
        "kind": "OrgMetadata",
        "status": {"conditions": [approved]},
    });
    env.orgs()
        .patch_status(
            "acme",
            &PatchParams::apply("platform-tool"),
            &Patch::Apply(&patch),
        )
        .await
        .expect("another client's status apply");
    let foreign = |o: &zitadel_metadata_operator::crd::OrgMetadata| -> Option<(String, String)> {
        o.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "example.com/Approved")
            .map(|c| (c.status.clone(), c.message.clone()))
    };
    let expected = Some(("True".to_string(), "by the platform team".to_string()));
    let rv = env.org_version("acme").await;

    // Several resyncs (1 s each): the operator re-reads ZITADEL but writes no status.
    let lists_before = env.emu.count(Operation::ListOrgMetadata);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        env.emu.count(Operation::ListOrgMetadata) >= lists_before + 2,
        "no resync ran"
    );
    let now = env.orgs().get("acme").await.expect("get");
    assert_eq!(
        now.metadata.resource_version, rv,
        "a status write for another client's condition"
    );
    assert_eq!(foreign(&now), expected);

    // A spec change: the operator's status write keeps the condition.
    env.apply_org_values("acme", ACME, &[("a", "2")]).await;
    let ready = env.wait_org_ready("acme").await;
    assert_eq!(env.org_value(ACME, "a").as_deref(), Some("2"));
    assert_eq!(foreign(&ready), expected, "{:?}", ready.status);

    // The fallback after a conflict (a write from an out-of-date read: `now`) applies only the
    // operator's conditions: the other client keeps owning its own ...
    use zitadel_metadata_operator::controller::metadata::{KubeReport, Report};
    let report = KubeReport::new(env.client.clone());
    let status = ready.status.clone().expect("status");
    Report::<zitadel_metadata_operator::crd::OrgMetadata>::write_status(&report, &now, &status)
        .await
        .expect("status apply after the conflict");
    let applied = env.orgs().get("acme").await.expect("get");
    let owners: Vec<String> = applied
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.to_string().contains("example.com/Approved"))
        })
        .map(|m| m.manager.clone().unwrap_or_default())
        .collect();
    assert!(
        applied.metadata.managed_fields.iter().flatten().any(|m| {
            m.manager.as_deref() == Some(zitadel_metadata_operator::controller::FIELD_MANAGER)
                && m.operation.as_deref() == Some("Apply")
                && m.subresource.as_deref() == Some("status")
        }),
        "the status was applied: {:?}",
        applied.metadata.managed_fields
    );
    assert_eq!(
        owners,
        ["platform-tool"],
        "{:?}",
        applied.metadata.managed_fields
    );
    // ... so its own apply can still remove it.
    let withdraw = json!({
        "apiVersion": "metadata.zitadel-operator.dev/v1alpha1",
        "kind": "OrgMetadata",
        "status": {"conditions": []},
    });
    env.orgs()
        .patch_status(
            "acme",
            &PatchParams::apply("platform-tool"),
            &Patch::Apply(&withdraw),
        )
        .await
        .expect("the other client withdraws its condition");
    let after = env.orgs().get("acme").await.expect("get");
    assert_eq!(foreign(&after), None, "{:?}", after.status);
    assert_eq!(condition(after.status.as_ref(), "Ready"), Some("True"));
    op.stop().await;
}
