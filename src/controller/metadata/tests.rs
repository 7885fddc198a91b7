//! The reconcile steps against in-memory fakes (no control plane, no HTTP): every reason a
//! metadata object's conditions or Events can carry is produced by one of these scenarios.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::outcome::Requeue;
use super::{apply, cleanup::cleanup};
use crate::connections::{AllowedOrgs, Granted, Refusal};
use crate::controller::{Error, Settings};
use crate::crd::{MetadataResource, MetadataStatus, OrgMetadata, UserMetadata};
use crate::reason::Reason;
use crate::status::{self, Outcome};
use crate::testing::{FakeIo, Op};
use crate::zitadel::{OrgQuery, Target, ZitadelError};
use kube::runtime::controller::Action;

const ORG: &str = "100000000000000001";

fn object<K: MetadataResource>(name: &str, spec: Value, status: Option<&MetadataStatus>) -> K {
    serde_json::from_value(json!({
        "apiVersion": "metadata.zitadel-operator.dev/v1alpha1",
        "kind": K::kind(&()),
        "metadata": {"name": name, "namespace": "team-a", "generation": 1, "uid": name,
                     "creationTimestamp": format!("2026-01-01T00:00:{:02}Z", name.len())},
        "spec": spec,
        "status": status,
    }))
    .expect("object")
}

fn org(spec: Value) -> OrgMetadata {
    object("acme", spec, None)
}

fn org_target() -> Target {
    Target::Org { org_id: ORG.into() }
}

fn entries(pairs: &[(&str, &str)]) -> Value {
    Value::Array(
        pairs
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect(),
    )
}

/// What one reconcile step left behind.
struct Seen {
    outcome: Option<Outcome>,
    result: Result<Action, String>,
    status: Option<MetadataStatus>,
    events: Vec<Reason>,
}

impl Seen {
    /// Reasons of the conditions written and of the Events.
    fn reasons(&self) -> BTreeSet<Reason> {
        let mut out: BTreeSet<Reason> = self.events.iter().copied().collect();
        for c in self.status.iter().flat_map(|s| s.conditions.iter()) {
            out.insert(Reason::parse(&c.reason).expect("a known reason"));
        }
        out
    }

    fn ready_reason(&self) -> Option<Reason> {
        self.outcome.as_ref().map(Outcome::reason)
    }

    fn stalled(&self) -> bool {
        self.outcome.as_ref().is_some_and(Outcome::is_stalled)
    }
}

fn requeue_of(result: Result<Action, Error>) -> Result<Action, String> {
    result.map_err(|e| e.to_string())
}

fn resync() -> Action {
    Requeue::After(Settings::default().resync).into()
}

fn await_change() -> Action {
    Requeue::AwaitChange.into()
}

async fn apply_once<K: MetadataResource>(io: &FakeIo<K>, obj: &K) -> Seen {
    let (result, outcome) = apply(obj, &io.io()).await;
    Seen {
        outcome,
        result: requeue_of(result),
        status: io.last_status(),
        events: io.event_reasons(),
    }
}

async fn cleanup_once<K: MetadataResource>(io: &FakeIo<K>, obj: &K) -> Seen {
    let result = cleanup(obj, &io.io()).await;
    Seen {
        outcome: None,
        result: requeue_of(result),
        status: io.last_status(),
        events: io.event_reasons(),
    }
}

/// Synced, with write Events; then a key leaves the spec and is removed.
async fn syncs_and_removes() -> BTreeSet<Reason> {
    let io = FakeIo::default();
    let first = org(json!({"organizationId": ORG, "metadata": entries(&[("a", "1"), ("b", "2")])}));
    let seen = apply_once(&io, &first).await;
    assert_eq!(seen.ready_reason(), Some(Reason::Synced));
    assert_eq!(seen.result, Ok(resync()));
    let status = seen.status.clone().expect("status");
    assert_eq!(status.managed_keys, vec!["a".to_string(), "b".into()]);
    assert_eq!(status.sequence.as_deref(), Some("1"));
    assert_eq!(io.zitadel.metadata(&org_target()).len(), 2);
    // Read back after the write: list, set, list.
    assert_eq!(io.zitadel.calls(), vec![Op::List, Op::Set, Op::List]);

    let second: OrgMetadata = object(
        "acme",
        json!({"organizationId": ORG, "metadata": entries(&[("a", "1")])}),
        Some(&status),
    );
    let seen2 = apply_once(&io, &second).await;
    assert_eq!(seen2.ready_reason(), Some(Reason::Synced));
    assert_eq!(
        io.zitadel
            .metadata(&org_target())
            .keys()
            .collect::<Vec<_>>(),
        vec!["a"]
    );
    let mut reasons = seen.reasons();
    reasons.extend(seen2.reasons());
    assert!(reasons.contains(&Reason::MetadataSet) && reasons.contains(&Reason::MetadataRemoved));
    reasons
}

/// driftPolicy Report: Drifted (never written), then InSync once ZITADEL matches.
async fn reports_drift() -> BTreeSet<Reason> {
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
async fn suspends() -> BTreeSet<Reason> {
    let io = FakeIo::default();
    let spec = json!({"organizationId": ORG, "suspend": true, "metadata": entries(&[("a", "1")])});
    let seen = apply_once(&io, &org(spec)).await;
    assert!(io.zitadel.calls().is_empty());
    assert_eq!(seen.result, Ok(await_change()));
    seen.reasons()
}

/// Spec, source and target problems: Stalled, nothing written.
async fn stalls_on_what_the_user_must_fix() -> BTreeSet<Reason> {
    let mut reasons = BTreeSet::new();
    let cases: Vec<(Value, Reason)> = vec![
        (
            json!({"organizationId": ORG, "metadata": [{"key": "no-value"}]}),
            Reason::InvalidSpec,
        ),
        (
            json!({"organizationId": ORG, "metadata": [{"key": "k", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "x"}}}]}),
            Reason::ValueSourceNotFound,
        ),
        (
            json!({"organization": {"name": "Nobody"}, "metadata": entries(&[("a", "1")])}),
            Reason::TargetNotFound,
        ),
        (
            json!({"organization": {"name": "Twice"}, "metadata": entries(&[("a", "1")])}),
            Reason::TargetAmbiguous,
        ),
    ];
    for (spec, want) in cases {
        let io = FakeIo::default();
        io.zitadel.add_org(OrgQuery::Name("Twice".into()), "1");
        io.zitadel.add_org(OrgQuery::Name("Twice".into()), "2");
        let seen = apply_once(&io, &org(spec)).await;
        assert_eq!(seen.ready_reason(), Some(want));
        assert!(seen.stalled() && want.is_stalled(), "{want}");
        assert!(!io.zitadel.calls().contains(&Op::Set), "{want}");
        reasons.extend(seen.reasons());
    }
    reasons
}

/// Values come from Secrets; the version is recorded, the value never leaves ZITADEL's side.
async fn reads_sources_once_and_records_versions() -> BTreeSet<Reason> {
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
async fn leaves_claimed_keys_alone() -> BTreeSet<Reason> {
    let io = FakeIo::default();
    let older: OrgMetadata = object(
        "a",
        json!({"organizationId": ORG, "metadata": entries(&[("shared", "old")])}),
        None,
    );
    io.neighbours
        .objects
        .lock()
        .expect("lock")
        .push(Arc::new(older));
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

/// Every ZITADEL error class: transient ones retry with backoff, permanent ones stall.
async fn maps_zitadel_errors() -> BTreeSet<Reason> {
    let cases: Vec<(ZitadelError, Reason)> = vec![
        (
            ZitadelError::from_response(401, None, "{}"),
            Reason::ZitadelUnauthenticated,
        ),
        (
            ZitadelError::from_response(403, None, "{}"),
            Reason::ZitadelPermissionDenied,
        ),
        (
            ZitadelError::from_response(404, None, "{}"),
            Reason::ZitadelNotFound,
        ),
        (
            ZitadelError::from_response(400, None, "{}"),
            Reason::ZitadelRejected,
        ),
        (
            ZitadelError::from_response(409, None, "{}"),
            Reason::ZitadelRejected,
        ),
        (
            ZitadelError::from_response(429, Some("3"), "busy"),
            Reason::ZitadelRateLimited,
        ),
        (
            ZitadelError::from_response(503, None, "{}"),
            Reason::ZitadelUnavailable,
        ),
        (
            ZitadelError::Timeout(Duration::from_secs(2)),
            Reason::ZitadelTimeout,
        ),
        (
            ZitadelError::Transport("refused".into()),
            Reason::ZitadelUnreachable,
        ),
        (
            ZitadelError::Tls("UnknownIssuer".into()),
            Reason::TlsVerificationFailed,
        ),
        (
            ZitadelError::Decode("not JSON".into()),
            Reason::ZitadelBadResponse,
        ),
        (
            ZitadelError::Credentials("no token".into()),
            Reason::CredentialsUnavailable,
        ),
    ];
    let mut reasons = BTreeSet::new();
    for (error, want) in cases {
        let transient = error.is_transient();
        let io = FakeIo::default();
        io.zitadel.fail(Op::List, error);
        let seen = apply_once(
            &io,
            &org(json!({"organizationId": ORG, "metadata": entries(&[("a", "1")])})),
        )
        .await;
        assert_eq!(seen.ready_reason(), Some(want));
        assert_eq!(seen.stalled(), !transient, "{want}");
        assert_eq!(seen.result.is_err(), transient, "{want}: {:?}", seen.result);
        assert!(!(seen.stalled() && want.is_transient() || transient && want.is_stalled()));
        assert_eq!(seen.events.last(), Some(&want));
        reasons.extend(seen.reasons());
    }
    reasons
}

/// A user outside the given org; a race on a remove (twice); a write ZITADEL does not keep.
async fn user_races_and_read_back() -> BTreeSet<Reason> {
    let mut reasons = BTreeSet::new();
    let io: FakeIo<UserMetadata> = FakeIo::default();
    io.zitadel.fail(
        Op::Set,
        ZitadelError::from_response(
            400,
            None,
            r#"{"code":9,"message":"x","details":[{"id":"COMMAND-uXHNj"}]}"#,
        ),
    );
    let user: UserMetadata = object(
        "alice",
        json!({"userId": "200", "organizationId": ORG, "metadata": entries(&[("a", "1")])}),
        None,
    );
    let seen = apply_once(&io, &user).await;
    assert_eq!(seen.ready_reason(), Some(Reason::UserNotFound));
    assert!(
        seen.outcome
            .as_ref()
            .is_some_and(|o| format!("{o:?}").contains("user 200"))
    );
    reasons.extend(seen.reasons());

    let io = FakeIo::default();
    io.zitadel.put(&org_target(), "gone", b"x");
    for _ in 0..2 {
        io.zitadel.fail(
            Op::Remove,
            ZitadelError::from_response(
                404,
                None,
                r#"{"code":5,"message":"x","details":[{"id":"META-2npds"}]}"#,
            ),
        );
    }
    let managed = MetadataStatus {
        managed_keys: vec!["gone".into()],
        ..Default::default()
    };
    let obj: OrgMetadata = object(
        "acme",
        json!({"organizationId": ORG, "metadata": []}),
        Some(&managed),
    );
    let seen = apply_once(&io, &obj).await;
    assert_eq!(seen.ready_reason(), Some(Reason::ConcurrentMetadataChange));
    assert_eq!(
        io.zitadel
            .calls()
            .iter()
            .filter(|c| **c == Op::Remove)
            .count(),
        2
    );
    reasons.extend(seen.reasons());

    let io = FakeIo::default();
    io.zitadel.drop_writes();
    let seen = apply_once(
        &io,
        &org(json!({"organizationId": ORG, "metadata": entries(&[("a", "1")])})),
    )
    .await;
    assert_eq!(seen.ready_reason(), Some(Reason::ReadBackMismatch));
    // The acknowledged write is remembered although the read-back failed.
    assert_eq!(
        seen.status.as_ref().map(|s| s.managed_keys.clone()),
        Some(vec!["a".into()])
    );
    reasons.extend(seen.reasons());
    reasons
}

/// Connection refusals: no ZITADEL call; transient ones retry, the others stall.
async fn refused_by_the_connection() -> BTreeSet<Reason> {
    let mut reasons = BTreeSet::new();
    let refusals = [
        (Reason::ConnectionNotFound, false),
        (Reason::ConnectionNotReady, false),
        (Reason::ConnectionNotReady, true),
        (Reason::TargetNotAllowed, false),
    ];
    for (reason, transient) in refusals {
        let io = FakeIo::default();
        let refusal = Refusal {
            reason,
            message: "no".into(),
            transient,
        };
        io.connections.set(Err(refusal));
        let seen = apply_once(
            &io,
            &org(json!({"organizationId": ORG, "metadata": entries(&[("a", "1")])})),
        )
        .await;
        assert_eq!(seen.ready_reason(), Some(reason));
        assert_eq!(seen.stalled(), !transient);
        assert!(io.zitadel.calls().is_empty());
        reasons.extend(seen.reasons());
    }
    // Allowed for other organizations only: refused after resolving, before any metadata call.
    let io = FakeIo::default();
    let api = io.zitadel.clone();
    io.connections.set(Ok(Granted {
        api,
        allowed: AllowedOrgs::Only(vec!["2".into()]),
        name: "c".into(),
    }));
    let seen = apply_once(
        &io,
        &org(json!({"organizationId": ORG, "metadata": entries(&[("a", "1")])})),
    )
    .await;
    assert_eq!(seen.ready_reason(), Some(Reason::TargetNotAllowed));
    assert!(io.zitadel.calls().is_empty());
    reasons.extend(seen.reasons());
    reasons
}

/// Deletion: keys removed; a gone target lets go; failures keep the finalizer.
async fn cleans_up() -> BTreeSet<Reason> {
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
    io.neighbours
        .objects
        .lock()
        .expect("lock")
        .push(Arc::new(other));
    let seen = cleanup_once(&io, &obj).await;
    assert_eq!(seen.result, Ok(await_change()));
    assert_eq!(
        io.zitadel
            .metadata(&org_target())
            .keys()
            .collect::<Vec<_>>(),
        vec!["shared"]
    );
    reasons.extend(seen.reasons());

    let io = FakeIo::default();
    io.zitadel.fail(
        Op::List,
        ZitadelError::from_response(
            404,
            None,
            r#"{"code":5,"message":"Organisation not found"}"#,
        ),
    );
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

#[tokio::test]
async fn every_reason_of_a_metadata_object_is_reachable() {
    let mut seen = BTreeSet::new();
    seen.extend(syncs_and_removes().await);
    seen.extend(reports_drift().await);
    seen.extend(suspends().await);
    seen.extend(stalls_on_what_the_user_must_fix().await);
    seen.extend(reads_sources_once_and_records_versions().await);
    seen.extend(leaves_claimed_keys_alone().await);
    seen.extend(maps_zitadel_errors().await);
    seen.extend(user_races_and_read_back().await);
    seen.extend(refused_by_the_connection().await);
    seen.extend(cleans_up().await);
    // The connection controller's own reasons are covered by `connections::build` and
    // `controller::probe` tests.
    let connection_only = [
        Reason::Connected,
        Reason::SecretNotFound,
        Reason::InvalidCredentials,
        Reason::SecretUnreadable,
        Reason::InvalidSettings,
    ];
    let missing: Vec<Reason> = Reason::ALL
        .iter()
        .copied()
        .filter(|r| !seen.contains(r) && !connection_only.contains(r))
        .collect();
    assert!(missing.is_empty(), "never produced: {missing:?}");
}

#[tokio::test]
async fn a_failed_status_write_is_retried() {
    let io: FakeIo<OrgMetadata> = FakeIo::default();
    *io.report.fail_patch.lock().expect("lock") = true;
    let seen = apply_once(
        &io,
        &org(json!({"organizationId": ORG, "metadata": entries(&[("a", "1")])})),
    )
    .await;
    assert!(seen.result.is_err());
    // The write Event is still published: ZITADEL was written.
    assert_eq!(seen.events, vec![Reason::MetadataSet]);
}

#[tokio::test]
async fn an_unchanged_outcome_writes_no_status_and_no_event() {
    let io: FakeIo<OrgMetadata> = FakeIo::default();
    let spec = json!({"organizationId": ORG, "metadata": entries(&[("a", "1")])});
    let first = apply_once(&io, &org(spec.clone())).await;
    let status = first.status.expect("status");
    let again: OrgMetadata = object("acme", spec, Some(&status));
    let before = io.report.statuses.lock().expect("lock").len();
    let second = apply_once(&io, &again).await;
    assert_eq!(io.report.statuses.lock().expect("lock").len(), before);
    assert_eq!(second.events, first.events);
    assert_eq!(
        io.zitadel.calls().iter().filter(|c| **c == Op::Set).count(),
        1
    );
}
