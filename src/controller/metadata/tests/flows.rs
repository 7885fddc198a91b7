//! Scenarios that end well (or as the spec asks): sync, removal, drift, suspension, sources,
//! claims, cleanup.

use std::collections::BTreeSet;

use serde_json::json;

use super::*;

/// Synced (the first sync: no write Event); then a value changes and a key leaves the spec
/// (Events for both writes).
pub(super) async fn syncs_and_removes() -> BTreeSet<Reason> {
    let io = FakeIo::default();
    let first = org(json!({"organizationId": ORG, "metadata": entries(&[("a", "1"), ("b", "2")])}));
    let seen = apply_once(&io, &first).await;
    assert_eq!(seen.ready_reason(), Some(Reason::Synced));
    assert_eq!(seen.result, Ok(resync()));
    let status = seen.status.clone().expect("status");
    assert_eq!(status.managed_keys, vec!["a".to_string(), "b".into()]);
    assert_eq!(status.sequence.as_deref(), Some("1"));
    assert_eq!(io.zitadel.metadata(&org_target()).len(), 2);
    // A new object manages nothing: no list before its first write, then the read-back of
    // every key written (2 calls). The Ready condition tells the first sync: no write Event.
    assert_eq!(io.zitadel.calls(), vec![Op::Set, Op::List]);
    assert!(seen.events.is_empty(), "{:?}", seen.events);
    // The read-back asks for the keys written (exact whatever the row order).
    let ab: BTreeSet<String> = ["a".to_string(), "b".into()].into();
    assert_eq!(io.zitadel.listings(), vec![Some(ab.clone())]);

    let second: OrgMetadata = object(
        "acme",
        json!({"organizationId": ORG, "metadata": entries(&[("a", "2")])}),
        Some(&status),
    );
    let seen2 = apply_once(&io, &second).await;
    assert_eq!(seen2.ready_reason(), Some(Reason::Synced));
    assert_eq!(keys_held(&io), vec!["a"]);
    // A later sync lists desired ∪ managed first.
    assert_eq!(
        io.zitadel.calls()[2..],
        [Op::List, Op::Set, Op::Remove, Op::List]
    );
    // "b" left the spec but is still managed: it is relevant to the listing.
    assert_eq!(io.zitadel.listings()[1], Some(ab));
    let mut reasons = seen.reasons();
    reasons.extend(seen2.reasons());
    assert!(reasons.contains(&Reason::MetadataSet) && reasons.contains(&Reason::MetadataRemoved));
    reasons
}

/// driftPolicy Report: Drifted (never written), then InSync once ZITADEL matches.
pub(super) async fn reports_drift() -> BTreeSet<Reason> {
    let io = FakeIo::default();
    io.zitadel.put(&org_target(), "a", b"other");
    let spec =
        json!({"organizationId": ORG, "driftPolicy": "Report", "metadata": entries(&[("a", "1")])});
    let seen = apply_once(&io, &org(spec.clone())).await;
    assert_eq!(seen.ready_reason(), Some(Reason::Drifted));
    assert!(!io.zitadel.calls().contains(&Op::Set));
    let drifted = seen
        .status
        .as_ref()
        .and_then(|s| status::find(&s.conditions, status::DRIFTED).cloned())
        .expect("Drifted condition");
    assert_eq!(
        (drifted.status.as_str(), drifted.message.as_str()),
        ("True", "differing keys: a")
    );
    io.zitadel.put(&org_target(), "a", b"1");
    let seen2 = apply_once(&io, &org(spec)).await;
    assert_eq!(seen2.ready_reason(), Some(Reason::Synced));
    let mut reasons = seen.reasons();
    reasons.extend(seen2.reasons());
    assert!(reasons.contains(&Reason::InSync));
    reasons
}

/// Suspended: no ZITADEL call.
pub(super) async fn suspends() -> BTreeSet<Reason> {
    let io = FakeIo::default();
    let spec = json!({"organizationId": ORG, "suspend": true, "metadata": entries(&[("a", "1")])});
    let seen = apply_once(&io, &org(spec)).await;
    assert!(io.zitadel.calls().is_empty());
    assert_eq!(seen.result, Ok(await_change()));
    seen.reasons()
}

/// Values come from Secrets; the version is recorded, the value never leaves ZITADEL's side.
pub(super) async fn reads_sources_once_and_records_versions() -> BTreeSet<Reason> {
    let io = FakeIo::default();
    io.sources.put_secret("team-a", "creds", "k", b"TOP-SECRET");
    let spec = json!({"organizationId": ORG, "metadata": [
        {"key": "one", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k"}}},
        {"key": "two", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k"}}},
        {"key": "opt", "valueFrom": {"configMapKeyRef": {"name": "none", "key": "k", "optional": true}}}]});
    let seen = apply_once(&io, &org(spec)).await;
    assert_eq!(seen.ready_reason(), Some(Reason::Synced));
    let status = seen.status.clone().expect("status");
    assert_eq!(
        status.observed_source_versions,
        vec!["Secret/creds@1".to_string()]
    );
    assert_eq!(
        io.zitadel
            .metadata(&org_target())
            .get("one")
            .map(Vec::as_slice),
        Some(&b"TOP-SECRET"[..])
    );
    let written = format!("{status:?}{:?}", io.report.events.lock().expect("events"));
    assert!(!written.contains("TOP-SECRET"), "{written}");
    io.sources.fail_reads();
    let failed = apply_once(
        &io,
        &org(json!({"organizationId": ORG, "metadata": [
        {"key": "one", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k"}}}]})),
    )
    .await;
    assert_eq!(failed.ready_reason(), Some(Reason::SourceUnreadable));
    assert!(failed.result.is_err());
    let mut reasons = seen.reasons();
    reasons.extend(failed.reasons());
    reasons
}

/// An earlier object on the same org holds the key: this one syncs the rest, Stalled.
pub(super) async fn leaves_claimed_keys_alone() -> BTreeSet<Reason> {
    let io = FakeIo::default();
    let older: OrgMetadata = object(
        "a",
        json!({"organizationId": ORG, "metadata": entries(&[("shared", "old")])}),
        None,
    );
    io.neighbours.add(older);
    let me: OrgMetadata = object(
        "later",
        json!({"organizationId": ORG, "metadata": entries(&[("shared", "new"), ("mine", "1")])}),
        None,
    );
    let seen = apply_once(&io, &me).await;
    assert_eq!(seen.ready_reason(), Some(Reason::KeyConflict));
    let held = io.zitadel.metadata(&org_target());
    assert!(held.contains_key("mine") && !held.contains_key("shared"));
    seen.reasons()
}

/// Deletion: keys removed; a gone target lets go; failures keep the finalizer.
pub(super) async fn cleans_up() -> BTreeSet<Reason> {
    let mut reasons = BTreeSet::new();
    let managed = MetadataStatus {
        managed_keys: vec!["a".into(), "shared".into()],
        ..Default::default()
    };
    let obj: OrgMetadata = object(
        "acme",
        json!({"organizationId": ORG, "metadata": entries(&[("a", "1"), ("shared", "1")])}),
        Some(&managed),
    );
    let io = FakeIo::default();
    io.zitadel.put(&org_target(), "a", b"1");
    io.zitadel.put(&org_target(), "shared", b"1");
    let other: OrgMetadata = object(
        "other",
        json!({"organizationId": ORG, "metadata": entries(&[("shared", "1")])}),
        None,
    );
    io.neighbours.add(other);
    let seen = cleanup_once(&io, &obj).await;
    assert_eq!(seen.result, Ok(await_change()));
    assert_eq!(keys_held(&io), vec!["shared"]);
    reasons.extend(seen.reasons());

    // A bare 404 (a missing route, an unknown org...) proves nothing: the finalizer stays.
    let io = listing_fails_with_404(r#"{"code":5,"message":"Organisation not found"}"#);
    let seen = cleanup_once(&io, &obj).await;
    assert!(seen.result.is_err(), "{:?}", seen.result);
    assert!(!seen.events.contains(&Reason::TargetGone));
    // Only ZITADEL's proof lets it go: `target_exists` → Gone (shared/zitadel-api.md §10).
    let io = listing_fails_with_404(
        r#"{"code":5,"message":"User could not be found (QUERY-Dfbg2)","details":[{"id":"QUERY-Dfbg2"}]}"#,
    );
    io.zitadel
        .set_existence(&org_target(), crate::zitadel::Existence::Gone);
    let seen = cleanup_once(&io, &obj).await;
    assert_eq!(seen.result, Ok(await_change()));
    assert_eq!(seen.events, vec![Reason::TargetGone]);
    reasons.extend(seen.reasons());

    for (transient, want_condition) in [(true, status::RECONCILING), (false, status::STALLED)] {
        let io = FakeIo::default();
        let refusal = Refusal {
            reason: Reason::ConnectionNotReady,
            message: "probe pending".into(),
            transient,
        };
        io.connections.set(Err(refusal));
        let seen = cleanup_once(&io, &obj).await;
        let message = seen.result.clone().expect_err("keeps the finalizer");
        assert!(
            message.contains("ConnectionNotReady: probe pending"),
            "{message}"
        );
        let status = seen.status.clone().expect("status");
        let c = status::find(&status.conditions, want_condition).expect("condition");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "CleanupFailed")
        );
        reasons.extend(seen.reasons());
    }
    reasons
}

/// Fakes whose metadata listing fails with HTTP 404 and `body`.
fn listing_fails_with_404<K: Send + Sync + 'static>(body: &str) -> FakeIo<K> {
    let io = FakeIo::default();
    io.zitadel
        .fail(Op::List, ZitadelError::from_response(404, None, body));
    io
}

/// A new object does not list before its first write: a key ZITADEL already holds with the
/// declared value is set once to itself (no "not changed" error exists for metadata) and read
/// back; the object then manages it, and a later sync lists first and writes nothing.
#[tokio::test]
async fn a_new_object_adopts_with_one_write_and_later_syncs_list_first() {
    let io = FakeIo::default();
    io.zitadel.put(&org_target(), "a", b"1");
    let spec = json!({"organizationId": ORG, "metadata": entries(&[("a", "1")])});
    let seen = apply_once(&io, &org(spec.clone())).await;
    assert_eq!(seen.ready_reason(), Some(Reason::Synced));
    assert_eq!(io.zitadel.calls(), vec![Op::Set, Op::List]);
    let status = seen.status.clone().expect("status");
    assert_eq!(status.managed_keys, vec!["a".to_string()]);

    // The same object again from a cache that does not show the status yet: it lists first
    // (this process already skipped the listing once for it) and writes nothing.
    let stale = apply_once(&io, &org(spec.clone())).await;
    assert_eq!(stale.ready_reason(), Some(Reason::Synced));
    assert_eq!(io.zitadel.calls()[2..], [Op::List]);

    let again: OrgMetadata = object("acme", spec, Some(&status));
    let seen2 = apply_once(&io, &again).await;
    assert_eq!(seen2.ready_reason(), Some(Reason::Synced));
    assert_eq!(io.zitadel.calls()[3..], [Op::List]);
    assert_eq!(keys_held(&io), vec!["a"]);
}
