//! The report built from previews on in-memory fakes, checked against what the controller's
//! `apply` then does on the same fakes: the preview shows exactly its writes.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use serde_json::{Value as Json, json};

use super::*;
use crate::controller::metadata::apply;
use crate::crd::{MetadataStatus, OrgMetadata};
use crate::diff::preview::preview;
use crate::testing::{FakeIo, Op};
use crate::zitadel::{MetadataMap, Target};

const ORG: &str = "100000000000000001";

fn target() -> Target {
    Target::Org { org_id: ORG.into() }
}

fn org(name: &str, created: &str, spec: Json, status: Option<&MetadataStatus>) -> OrgMetadata {
    serde_json::from_value(json!({
        "apiVersion": "metadata.zitadel-operator.dev/v1alpha1",
        "kind": "OrgMetadata",
        "metadata": {"name": name, "namespace": "team-a", "generation": 2, "uid": name,
                     "creationTimestamp": created},
        "spec": spec,
        "status": status,
    }))
    .expect("object")
}

fn managed(keys: &[&str]) -> MetadataStatus {
    MetadataStatus {
        observed_generation: Some(1),
        organization_id: Some(ORG.into()),
        managed_keys: keys.iter().map(|k| k.to_string()).collect(),
        ..MetadataStatus::default()
    }
}

async fn diff_of(io: &FakeIo<OrgMetadata>, obj: &OrgMetadata, reveal: Reveal) -> ObjectDiff {
    let preview = preview(obj, &io.io().reads(), &io.settings).await;
    object_diff(obj, &preview, reveal)
}

fn actions(diff: &ObjectDiff) -> Vec<(&str, KeyAction)> {
    diff.keys
        .iter()
        .map(|k| (k.key.as_str(), k.action))
        .collect()
}

// Long because one object covers every key action and value origin at once, and the report is
// checked as a whole.
#[tokio::test]
async fn every_key_gets_its_action_and_values_are_redacted_by_origin() {
    let io: FakeIo<OrgMetadata> = FakeIo::default();
    for (k, v) in [
        ("changed", "old"),
        ("adopted", "same"),
        ("kept", "k"),
        ("dropped", "d"),
        ("foreign", "f"),
        ("claimed", "c"),
        ("secret", "old-secret"),
    ] {
        io.zitadel.put(&target(), k, v.as_bytes());
    }
    io.sources.put_secret("team-a", "creds", "s", b"new-secret");
    io.sources
        .put_config_map_binary("team-a", "cm", "c", &[0xff, 0x00]);
    io.neighbours.add(org(
        "older",
        "2025-01-01T00:00:00Z",
        json!({"organizationId": ORG, "metadata": [{"key": "claimed", "value": "c"}]}),
        None,
    ));
    let obj = org(
        "acme",
        "2026-01-01T00:00:00Z",
        json!({"organizationId": ORG, "metadata": [
            {"key": "changed", "value": "new"},
            {"key": "added", "binaryValue": "3q2+7w=="},
            {"key": "adopted", "value": "same"},
            {"key": "kept", "value": "k"},
            {"key": "claimed", "value": "mine"},
            {"key": "secret", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "s"}}},
            {"key": "fromcm", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "c"}}},
        ]}),
        Some(&managed(&[
            "changed", "kept", "dropped", "vanished", "secret",
        ])),
    );
    let diff = diff_of(&io, &obj, Reveal::NonSecret).await;
    assert_eq!(diff.result, ObjectResult::Changes);
    assert_eq!(
        actions(&diff),
        vec![
            ("added", KeyAction::Set),
            ("adopted", KeyAction::Adopt),
            ("changed", KeyAction::Set),
            ("claimed", KeyAction::Conflict),
            ("dropped", KeyAction::Remove),
            ("foreign", KeyAction::Unmanaged),
            ("fromcm", KeyAction::Set),
            ("kept", KeyAction::Unchanged),
            ("secret", KeyAction::Set),
            ("vanished", KeyAction::Forget),
        ]
    );
    let key = |name: &str| diff.keys.iter().find(|k| k.key == name).expect("key");
    assert_eq!(key("changed").change, Some(Change::Update));
    assert_eq!(key("changed").current, Some(Value::Text("old".into())));
    assert_eq!(key("changed").desired, Some(Value::Text("new".into())));
    assert_eq!(key("added").change, Some(Change::Add));
    assert_eq!(key("added").desired, Some(Value::Base64("3q2+7w==".into())));
    assert_eq!(key("fromcm").desired, Some(Value::Base64("/wA=".into())));
    assert_eq!(key("fromcm").source.as_deref(), Some("ConfigMap/cm"));
    assert_eq!(key("claimed").claimed_by.as_deref(), Some("team-a/older"));
    // --show-values: never a Secret's value (new or old), nor values of unknown origin.
    for name in ["secret", "dropped", "foreign", "claimed"] {
        let k = key(name);
        assert!(
            k.current.is_none() && k.desired.is_none() && k.redacted,
            "{name}"
        );
    }
    assert_eq!(key("secret").source.as_deref(), Some("Secret/creds"));
    assert_eq!(
        diff.outcome.as_ref().map(|o| o.reason.as_str()),
        Some("KeyConflict")
    );
    assert_eq!(diff.target.organization_id.as_deref(), Some(ORG));
    assert_eq!(diff.connection.as_deref(), Some("the fake connection"));

    // Default: nothing shown; the JSON holds no value at all.
    let hidden = diff_of(&io, &obj, Reveal::None).await;
    let json = serde_json::to_string(&hidden).expect("json");
    for value in [
        "old",
        "new",
        "same",
        "new-secret",
        "old-secret",
        "3q2+7w==",
        "/wA=",
    ] {
        assert!(!json.contains(&format!("\"{value}\"")), "{value} in {json}");
    }
    assert!(
        hidden
            .keys
            .iter()
            .all(|k| k.current.is_none() && k.desired.is_none())
    );
    // --show-secret-values: everything.
    let all = diff_of(&io, &obj, Reveal::All).await;
    let secret = all.keys.iter().find(|k| k.key == "secret").expect("secret");
    assert_eq!(secret.desired, Some(Value::Text("new-secret".into())));
    assert_eq!(secret.current, Some(Value::Text("old-secret".into())));
    assert!(all.keys.iter().all(|k| !k.redacted));
    // The preview read and wrote nothing but one listing.
    assert_eq!(io.zitadel.calls(), vec![Op::List, Op::List, Op::List]);
    assert!(io.report.statuses.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn policies_suspension_and_errors_have_their_result() {
    let io: FakeIo<OrgMetadata> = FakeIo::default();
    io.zitadel.put(&target(), "a", b"other");
    let spec = |extra: Json| {
        let mut s = json!({"organizationId": ORG, "metadata": [{"key": "a", "value": "1"}]});
        s.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        s
    };
    let report = org(
        "r",
        "2026-01-01T00:00:00Z",
        spec(json!({"driftPolicy": "Report"})),
        None,
    );
    let diff = diff_of(&io, &report, Reveal::None).await;
    assert_eq!(diff.result, ObjectResult::DriftReported);
    assert_eq!(actions(&diff), vec![("a", KeyAction::Drift)]);
    assert_eq!(
        diff.outcome.as_ref().map(|o| o.state.as_str()),
        Some("Drifted")
    );

    let suspended = org(
        "s",
        "2026-01-01T00:00:00Z",
        spec(json!({"suspend": true})),
        None,
    );
    let diff = diff_of(&io, &suspended, Reveal::None).await;
    assert_eq!(diff.result, ObjectResult::Suspended);
    assert!(diff.keys.is_empty());

    let missing = org(
        "m",
        "2026-01-01T00:00:00Z",
        json!({"organizationId": ORG, "metadata": [
            {"key": "s", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}]}),
        None,
    );
    let diff = diff_of(&io, &missing, Reveal::None).await;
    assert_eq!(diff.result, ObjectResult::Error);
    let outcome = diff.outcome.expect("outcome");
    assert_eq!(
        (outcome.state.as_str(), outcome.reason.as_str()),
        ("Stalled", "ValueSourceNotFound")
    );

    // driftPolicy Ignore, Ready for this generation, sources unchanged: not even read.
    let mut ready = managed(&["a"]);
    ready.observed_generation = Some(2);
    ready.conditions = vec![crate::status::condition(
        &[],
        crate::status::READY,
        "True",
        crate::reason::Reason::Synced,
        "m",
        Some(2),
        &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    )];
    let ignore = org(
        "i",
        "2026-01-01T00:00:00Z",
        spec(json!({"driftPolicy": "Ignore"})),
        Some(&ready),
    );
    let calls = io.zitadel.calls().len();
    let diff = diff_of(&io, &ignore, Reveal::None).await;
    assert_eq!(diff.result, ObjectResult::NotRead);
    assert_eq!(io.zitadel.calls().len(), calls);

    let report = DiffReport::new(Mode::Manifests, vec![diff], Vec::new(), Vec::new());
    assert_eq!((report.exit_code, report.changes), (EXIT_NO_CHANGES, false));
}

/// A new object (no status yet): the operator's first write sends every key without listing,
/// so a key ZITADEL already holds with the desired value is adopted by setting it again: the
/// preview says so, and the controller's writes match (the property test below found the
/// difference).
#[tokio::test]
async fn a_new_objects_first_write_is_previewed_as_an_adoption_by_a_write() {
    let io: FakeIo<OrgMetadata> = FakeIo::default();
    io.zitadel.put(&target(), "a", b"2");
    io.zitadel.put(&target(), "d", b"1");
    let obj = org(
        "acme",
        "2026-01-01T00:00:00Z",
        json!({"organizationId": ORG, "metadata": [{"key": "a", "value": "2"}]}),
        None,
    );
    let diff = diff_of(&io, &obj, Reveal::All).await;
    assert_eq!(
        actions(&diff),
        vec![("a", KeyAction::Adopt), ("d", KeyAction::Unmanaged)]
    );
    let a = diff.keys.iter().find(|k| k.key == "a").expect("a");
    assert_eq!(a.change, Some(Change::Same));
    let line = crate::diff::render::key_line(a);
    assert!(line.contains("sets it again"), "{line}");
    // No value changes in ZITADEL: nothing to review.
    assert_eq!(diff.result, ObjectResult::NoChanges);
    let calls = io.zitadel.calls().len();
    let (_, outcome) = apply(&obj, &io.io()).await;
    outcome.expect("outcome");
    let writes: Vec<Op> = io.zitadel.calls()[calls..]
        .iter()
        .copied()
        .filter(|op| matches!(op, Op::Set | Op::Remove))
        .collect();
    assert_eq!(writes, vec![Op::Set]);
    // Once it reported (status with managed keys), the same state previews as unchanged.
    let reported = org(
        "acme",
        "2026-01-01T00:00:00Z",
        json!({"organizationId": ORG, "metadata": [{"key": "a", "value": "2"}]}),
        Some(&managed(&["a"])),
    );
    let diff = diff_of(&io, &reported, Reveal::All).await;
    assert_eq!(
        actions(&diff),
        vec![("a", KeyAction::Unchanged), ("d", KeyAction::Unmanaged)]
    );
}

/// Keys `a`..`e`; values `0`..`2`.
fn arb_map() -> impl Strategy<Value = BTreeMap<String, u8>> {
    prop::collection::btree_map("[a-e]", 0u8..3, 0..5)
}

fn bytes(map: &BTreeMap<String, u8>) -> MetadataMap {
    map.iter()
        .map(|(k, v)| (k.clone(), vec![b'0' + v]))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    /// Whatever ZITADEL holds, the spec asks, the object manages and an earlier object claims:
    /// the preview's `set` / `remove` keys are exactly what the controller's reconcile then
    /// writes, its other keys stay as they were, and the conditions match.
    #[test]
    fn the_preview_shows_exactly_the_controllers_writes(
        observed in arb_map(),
        desired in arb_map(),
        managed_keys in prop::collection::btree_set("[a-e]", 0..5),
        claimed in prop::collection::btree_set("[a-e]", 0..3),
        report in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        runtime.block_on(async {
            let io: FakeIo<OrgMetadata> = FakeIo::default();
            for (k, v) in bytes(&observed) {
                io.zitadel.put(&target(), &k, &v);
            }
            let claims: Vec<Json> = claimed.iter().map(|k| json!({"key": k, "value": "0"})).collect();
            io.neighbours.add(org("older", "2025-01-01T00:00:00Z",
                json!({"organizationId": ORG, "metadata": claims}), None));
            let entries: Vec<Json> = bytes(&desired).into_iter()
                .map(|(k, v)| json!({"key": k, "value": String::from_utf8(v).expect("utf-8")}))
                .collect();
            let policy = if report { "Report" } else { "Enforce" };
            let keys: Vec<&str> = managed_keys.iter().map(String::as_str).collect();
            let obj = org("acme", "2026-01-01T00:00:00Z",
                json!({"organizationId": ORG, "driftPolicy": policy, "metadata": entries}),
                Some(&managed(&keys)));

            let diff = diff_of(&io, &obj, Reveal::All).await;
            let before = io.zitadel.metadata(&target());
            let calls_before = io.zitadel.calls().len();
            let (_, outcome) = apply(&obj, &io.io()).await;
            let after = io.zitadel.metadata(&target());
            let writes: Vec<Op> = io.zitadel.calls()[calls_before..].iter()
                .copied().filter(|op| matches!(op, Op::Set | Op::Remove)).collect();

            let mut expected = before.clone();
            for key in &diff.keys {
                match key.action {
                    KeyAction::Set => {
                        let Some(Value::Text(v)) = &key.desired else { panic!("desired value shown") };
                        expected.insert(key.key.clone(), v.as_bytes().to_vec());
                    }
                    KeyAction::Remove => { expected.remove(&key.key); }
                    _ => {}
                }
            }
            prop_assert_eq!(&after, &expected);
            // A new object's first write also sets the keys it adopts (`adopt` + `same`).
            let sets = diff.keys.iter().any(|k| k.action == KeyAction::Set
                || (k.action == KeyAction::Adopt && k.change == Some(Change::Same)));
            let removes = diff.keys.iter().any(|k| k.action == KeyAction::Remove);
            prop_assert_eq!(writes.contains(&Op::Set), sets);
            prop_assert_eq!(writes.contains(&Op::Remove), removes);
            // "Changes" = ZITADEL's values change (an adoption by a write changes none).
            prop_assert_eq!(diff.result == ObjectResult::Changes, after != before);
            let outcome = outcome.expect("outcome");
            prop_assert_eq!(diff.outcome.as_ref().map(|o| o.reason.clone()),
                Some(outcome.reason().to_string()));
            // Managed afterwards = what the preview says stays or becomes managed.
            let status = io.last_status().unwrap_or_else(|| managed(&keys));
            let now: BTreeSet<String> = status.managed_keys.into_iter().collect();
            let previewed: BTreeSet<String> = diff.keys.iter()
                .filter(|k| match (k.action, k.change) {
                    (KeyAction::Set | KeyAction::Adopt | KeyAction::Unchanged, _) => true,
                    // Report keeps managing what it manages and ZITADEL still holds.
                    (KeyAction::Drift, Some(Change::Remove)) => true,
                    (KeyAction::Drift, Some(Change::Update)) => managed_keys.contains(&k.key),
                    _ => false,
                })
                .map(|k| k.key.clone())
                .collect();
            prop_assert_eq!(now, previewed);
            Ok(())
        })?;
    }
}
