//! The reconcile steps against in-memory fakes (no control plane, no HTTP): every reason a
//! metadata object's conditions or Events can carry is produced by one of these scenarios.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::outcome::Requeue;
use super::{apply, cleanup::cleanup};
use crate::connections::{AllowedOrgs, Granted, Refusal};
use crate::controller::Error;
use crate::crd::{MetadataResource, MetadataStatus, OrgMetadata, UserMetadata};
use crate::reason::Reason;
use crate::status::{self, Outcome};
use crate::testing::{FakeIo, Op};
use crate::zitadel::{OrgQuery, Target, UserQuery, ZitadelError};
use kube::runtime::controller::Action;

mod deletion;
mod failures;
mod flows;
mod packed;

use failures::*;
use flows::*;

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

/// `alice`: user 200 in organization [`ORG`], with `a=1`.
fn user_alice() -> UserMetadata {
    object(
        "alice",
        json!({"userId": "200", "organizationId": ORG, "metadata": entries(&[("a", "1")])}),
        None,
    )
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

/// The keys ZITADEL holds on the org.
fn keys_held<K: Send + Sync + 'static>(io: &FakeIo<K>) -> Vec<String> {
    io.zitadel.metadata(&org_target()).into_keys().collect()
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

/// A successful sync: no timer; the kind's resync walker re-checks it at its phase.
fn resync() -> Action {
    Requeue::Resync.into()
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
    seen.extend(deletion::reasons_of_deletion_and_ambiguous_answers().await);
    // The connection controller's own reasons are covered by `connections::build` and
    // `controller::probe` tests.
    let connection_only = [
        Reason::Connected,
        Reason::SecretNotFound,
        Reason::InvalidCredentials,
        Reason::SecretUnreadable,
        Reason::InvalidSettings,
        // Connections being deleted while in use, and their finalizers (`controller::probe`,
        // `controller::token_secret`).
        Reason::InUse,
        Reason::FinalizerFailed,
        // Connection Events around a credential change (`controller::probe`).
        Reason::CredentialsChanged,
        Reason::CredentialsAccepted,
        Reason::CredentialsRejected,
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
    let first = apply_once(
        &io,
        &org(json!({"organizationId": ORG, "metadata": entries(&[("a", "1")])})),
    )
    .await;
    let status = first.status.expect("status");
    *io.report.fail_patch.lock().expect("lock") = true;
    let changed: OrgMetadata = object(
        "acme",
        json!({"organizationId": ORG, "metadata": entries(&[("a", "2")])}),
        Some(&status),
    );
    let seen = apply_once(&io, &changed).await;
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

/// A condition of a type the operator does not write (another client's) is kept: it causes no
/// status write at a resync, a status the operator writes carries it unchanged (the status
/// `PUT` replaces the whole status), and the operator's own `Drifted` goes before it.
#[tokio::test]
async fn conditions_of_other_clients_are_kept() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    let foreign = Condition {
        type_: "example.com/Approved".into(),
        status: "True".into(),
        reason: "Reviewed".into(),
        message: "by the platform team".into(),
        observed_generation: Some(1),
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    };
    let with_foreign = |status: Option<MetadataStatus>| {
        let mut status = status.expect("status");
        status.conditions.push(foreign.clone());
        status
    };
    let types = |s: &MetadataStatus| -> Vec<String> {
        s.conditions.iter().map(|c| c.type_.clone()).collect()
    };
    let io: FakeIo<OrgMetadata> = FakeIo::default();
    let spec = json!({"organizationId": ORG, "metadata": entries(&[("a", "1")])});
    let status = with_foreign(apply_once(&io, &org(spec.clone())).await.status);
    let writes = || io.report.statuses.lock().expect("lock").len();
    let before = writes();
    let again: OrgMetadata = object("acme", spec, Some(&status));
    apply_once(&io, &again).await;
    assert_eq!(
        writes(),
        before,
        "no status write for another client's condition"
    );

    let changed: OrgMetadata = object(
        "acme",
        json!({"organizationId": ORG, "metadata": entries(&[("a", "2")])}),
        Some(&status),
    );
    let written = apply_once(&io, &changed).await.status.expect("status");
    assert_eq!(writes(), before + 1);
    assert_eq!(written.conditions.last(), Some(&foreign));
    assert_eq!(
        types(&written),
        ["Ready", "Reconciling", "Stalled", "example.com/Approved"]
    );

    // driftPolicy Report: Drifted is the operator's, placed before the foreign condition.
    let io: FakeIo<OrgMetadata> = FakeIo::default();
    io.zitadel.put(&org_target(), "a", b"other");
    let spec =
        json!({"organizationId": ORG, "driftPolicy": "Report", "metadata": entries(&[("a", "1")])});
    let status = with_foreign(apply_once(&io, &org(spec.clone())).await.status);
    io.zitadel.put(&org_target(), "a", b"1");
    let next: OrgMetadata = object("acme", spec, Some(&status));
    let written = apply_once(&io, &next).await.status.expect("status");
    assert_eq!(
        types(&written),
        [
            "Ready",
            "Reconciling",
            "Stalled",
            "Drifted",
            "example.com/Approved"
        ]
    );
    assert_eq!(written.conditions.last(), Some(&foreign));
}
