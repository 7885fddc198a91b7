//! Objects as the caches keep them (entries packed): reconciled exactly like the objects the API
//! server sent, and claimed over like them.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::*;
use crate::controller::metadata::{claims, unpacked};
use crate::testing::FakeIo;

/// `seen` with the conditions' transition times cleared (each run has its own clock).
fn timeless(
    mut seen: Seen,
) -> (
    Option<Outcome>,
    Result<Action, String>,
    Option<MetadataStatus>,
    Vec<Reason>,
) {
    for c in seen.status.iter_mut().flat_map(|s| s.conditions.iter_mut()) {
        c.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    }
    (seen.outcome, seen.result, seen.status, seen.events)
}

/// Fakes with a Secret and a binary ConfigMap value, and keys ZITADEL holds already (one of them
/// claimed by an older object).
fn prepared() -> FakeIo<OrgMetadata> {
    let io = FakeIo::default();
    io.sources.put_secret("team-a", "creds", "k", b"TOP-SECRET");
    io.sources
        .put_config_map_binary("team-a", "blobs", "b", &[0, 159, 146, 150]);
    io.zitadel.put(&org_target(), "old", b"x");
    io.zitadel.put(&org_target(), "claimed", b"theirs");
    io
}

/// One reconcile (`apply`, or `cleanup` when deleting) of `obj` on fresh fakes, then what a
/// second reconcile of the object with the first one's status leaves, plus ZITADEL's state.
async fn run(obj: &OrgMetadata, deleting: bool) -> Vec<String> {
    let io = prepared();
    io.neighbours.add(object(
        // Created before `acme` (the fixture's creation time grows with the name's length).
        "old",
        json!({"organizationId": ORG, "metadata": entries(&[("claimed", "theirs")])}),
        None,
    ));
    let first = if deleting {
        cleanup_once(&io, obj).await
    } else {
        apply_once(&io, obj).await
    };
    let status = first.status.clone();
    let first = format!("{:?}", timeless(first));
    let mut again = obj.clone();
    again.status = status;
    if obj.is_packed() {
        // As the cache would hold it after the status write: the status packed too.
        again.pack();
        assert!(again.status.as_ref().is_none_or(MetadataStatus::is_packed));
    }
    let second = if deleting {
        cleanup_once(&io, &again).await
    } else {
        apply_once(&io, &again).await
    };
    vec![
        first,
        format!("{:?}", timeless(second)),
        held(&io),
        // A status restored inexactly (a transition time, a message) would be written again.
        format!(
            "{} status writes",
            io.report.statuses.lock().expect("lock").len()
        ),
        format!("{:?}", io.zitadel.calls()),
    ]
}

/// What ZITADEL holds, values shown by size and a checksum (some are large).
fn held(io: &FakeIo<OrgMetadata>) -> String {
    let shown: Vec<String> = io
        .zitadel
        .metadata(&org_target())
        .into_iter()
        .map(|(k, v)| {
            let sum = v
                .iter()
                .fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(*b)));
            format!("{k}: {} bytes #{sum:x}", v.len())
        })
        .collect();
    shown.join(", ")
}

fn specs() -> Vec<serde_json::Value> {
    let big = "v".repeat(200_000);
    vec![
        json!({"organizationId": ORG, "metadata": [
            {"key": "text", "value": "gold"},
            {"key": "big", "value": big},
            {"key": "bin", "binaryValue": "AJ+Slg=="},
            {"key": "secret", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k"}}},
            {"key": "cm", "valueFrom": {"configMapKeyRef": {"name": "blobs", "key": "b"}}},
            {"key": "gone", "valueFrom": {"configMapKeyRef": {"name": "none", "key": "k", "optional": true}}},
            {"key": "claimed", "value": "mine"}]}),
        // Invalid: the same key twice, and a missing required source.
        json!({"organizationId": ORG, "metadata": entries(&[("a", "1"), ("a", "2")])}),
        json!({"organizationId": ORG, "metadata": [
            {"key": "s", "valueFrom": {"secretKeyRef": {"name": "missing", "key": "k"}}}]}),
        json!({"organizationId": ORG, "driftPolicy": "Report", "metadata": entries(&[("old", "y")])}),
        json!({"organizationId": ORG, "suspend": true, "metadata": entries(&[("a", "1")])}),
    ]
}

#[tokio::test]
async fn a_packed_object_reconciles_exactly_like_the_object_it_was_packed_from() {
    for spec in specs() {
        let plain: OrgMetadata = object("acme", spec.clone(), None);
        let mut packed = plain.clone();
        packed.pack();
        assert!(packed.is_packed() && packed.common().metadata.is_empty());
        // Through the reconcile's choke point, and handed to `apply` packed (by mistake).
        let restored = unpacked(Arc::new(packed.clone()));
        assert_eq!(restored.spec, plain.spec);
        assert_eq!(restored.status, plain.status);
        let want = run(&plain, false).await;
        if spec["metadata"][1]["key"] == "big" {
            // The scenario does what it says: values from all kinds of entries, a conflict.
            assert!(want[0].contains("KeyConflict"), "{want:?}");
            // The second reconcile, of the object with its own status, writes none.
            assert_eq!(want[3], "1 status writes", "{want:?}");
            for key in ["text", "big", "bin", "secret", "cm"] {
                assert!(want[2].contains(&format!("{key}: ")), "{key}: {want:?}");
            }
        }
        assert_eq!(run(&restored, false).await, want, "{spec}");
        assert_eq!(run(&packed, false).await, want, "{spec}");
    }
}

#[tokio::test]
async fn a_packed_object_is_cleaned_up_exactly_like_the_object_it_was_packed_from() {
    let managed = MetadataStatus {
        managed_keys: vec!["old".into(), "claimed".into()],
        ..Default::default()
    };
    let plain: OrgMetadata = object(
        "acme",
        json!({"organizationId": ORG, "metadata": entries(&[("old", "x"), ("claimed", "x")])}),
        Some(&managed),
    );
    let mut packed = plain.clone();
    packed.pack();
    let want = run(&plain, true).await;
    // The older object's key is left to it; the other managed key is removed.
    assert!(
        want[2].starts_with("claimed: 6 bytes") && !want[2].contains("old"),
        "{want:?}"
    );
    assert_eq!(run(&packed, true).await, want);
}

#[test]
fn claims_over_packed_neighbours_equal_claims_over_unpacked_ones() {
    let me: OrgMetadata = object(
        "later",
        json!({"organizationId": ORG, "metadata": entries(&[("shared", "new"), ("mine", "1")])}),
        None,
    );
    let other_target: OrgMetadata = object(
        "other-org",
        json!({"organizationId": "9", "metadata": entries(&[("mine", "x")])}),
        None,
    );
    let older: OrgMetadata = object(
        "a",
        json!({"organizationId": ORG, "metadata": [
            {"key": "shared", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            {"key": "theirs", "binaryValue": "AAEC"}]}),
        None,
    );
    let plain: Vec<Arc<OrgMetadata>> = [older, other_target, me.clone()]
        .into_iter()
        .map(Arc::new)
        .collect();
    let packed: Vec<Arc<OrgMetadata>> = plain
        .iter()
        .map(|o| {
            let mut o = OrgMetadata::clone(o);
            o.pack();
            Arc::new(o)
        })
        .collect();
    let conflicts = claims::conflicts(&me, &plain);
    assert_eq!(
        conflicts.into_iter().collect::<Vec<_>>(),
        vec![("shared".to_string(), "team-a/a".to_string())]
    );
    assert_eq!(
        claims::conflicts(&me, &packed),
        claims::conflicts(&me, &plain)
    );
    let elsewhere = claims::claimed_elsewhere(&me, &packed);
    assert_eq!(elsewhere, ["shared".to_string(), "theirs".into()].into());
    assert_eq!(elsewhere, claims::claimed_elsewhere(&me, &plain));
    // An older object its connection refuses claims nothing, packed or not (its Stalled
    // condition's status and reason stay in place when the status is packed).
    let refused = MetadataStatus {
        observed_generation: Some(1),
        managed_keys: vec!["mine".into()],
        conditions: status::conditions(
            &[],
            &Outcome::Stalled {
                reason: Reason::TargetNotAllowed,
                message: "not allowed".into(),
            },
            Some(1),
            &Time(k8s_openapi::jiff::Timestamp::now()),
        ),
        ..MetadataStatus::default()
    };
    let mut guarded: OrgMetadata = object(
        "b",
        json!({"organizationId": ORG, "metadata": entries(&[("mine", "x")])}),
        Some(&refused),
    );
    let answer = claims::conflicts(&me, &[Arc::new(guarded.clone())]);
    guarded.pack();
    assert!(
        guarded
            .status
            .as_ref()
            .is_some_and(MetadataStatus::is_packed)
    );
    assert_eq!(claims::conflicts(&me, &[Arc::new(guarded)]), answer);
    assert!(answer.is_empty(), "{answer:?}");
    // The object itself packed (e.g. the cache's copy of the object being deleted).
    let mut me_packed = me.clone();
    me_packed.pack();
    assert_eq!(
        claims::conflicts(&me_packed, &packed),
        claims::conflicts(&me, &plain)
    );
}
