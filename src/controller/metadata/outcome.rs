//! The outcome of a sync (pure): conditions' outcome, when to look again, and whether the
//! controller should retry with backoff.

use std::collections::BTreeSet;
use std::time::Duration;

use kube::runtime::controller::Action;

use super::report::key_list;
use super::sync::{Confirmed, Progress, SyncError, Synced};
use super::target::describe;
use crate::controller::{Error, Settings};
use crate::crd::{DriftPolicy, MetadataResource, MetadataStatus, TargetRef};
use crate::reason::Reason;
use crate::status::Outcome;
use crate::zitadel::{Target, ZitadelError};

/// When the object is looked at again (besides its own changes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requeue {
    /// Only when something it depends on changes.
    AwaitChange,
    /// At its phase of its re-check interval, by the kind's resync walker (and when something
    /// it depends on changes): no timer of its own.
    Resync,
    /// After this long.
    After(Duration),
}

impl From<Requeue> for Action {
    fn from(r: Requeue) -> Action {
        match r {
            Requeue::AwaitChange | Requeue::Resync => Action::await_change(),
            Requeue::After(d) => Action::requeue(d),
        }
    }
}

/// What a reconcile reports and does next.
#[derive(Debug)]
pub struct Decision {
    /// The conditions' outcome.
    pub outcome: Outcome,
    /// `Ok`: done, look again as said. `Err`: the controller retries with backoff.
    pub next: Result<Requeue, Error>,
    /// Keys managed after this reconcile.
    pub managed: BTreeSet<String>,
    /// `status.observedSourceVersions` after this reconcile.
    pub source_versions: Vec<String>,
    /// driftPolicy `Report`: the differing keys (empty: in sync), for the `Drifted` condition.
    pub drifted: Option<BTreeSet<String>>,
}

/// Map a sync result to its decision. A failed sync keeps what it did (`progress`): keys set are
/// managed, keys removed are not.
pub fn decide<K: MetadataResource>(
    obj: &K,
    settings: &Settings,
    previous: &MetadataStatus,
    progress: &Progress,
    result: Result<Synced, SyncError>,
) -> Decision {
    match result {
        Ok(synced) => synced_decision(obj, synced),
        Err(error) => {
            let mut managed: BTreeSet<String> = previous.managed_keys.iter().cloned().collect();
            managed.extend(progress.set.iter().cloned());
            managed.retain(|k| !progress.removed.contains(k));
            let (outcome, next) = failed(obj, settings, error);
            Decision {
                outcome,
                next,
                managed,
                source_versions: previous.observed_source_versions.clone(),
                drifted: None,
            }
        }
    }
}

fn synced_decision<K: MetadataResource>(obj: &K, synced: Synced) -> Decision {
    let requeue = match obj.drift_policy() {
        DriftPolicy::Ignore => Requeue::AwaitChange,
        DriftPolicy::Enforce | DriftPolicy::Report => Requeue::Resync,
    };
    let outcome = if !synced.conflicts.is_empty() {
        let list = synced
            .conflicts
            .iter()
            .map(|(k, owner)| format!("{k:?} (managed by {owner})"))
            .collect::<Vec<_>>()
            .join(", ");
        Outcome::Stalled {
            reason: Reason::KeyConflict,
            message: format!(
                "key(s) {list} are already managed by another object on {}; this object leaves them alone",
                describe(obj)
            ),
        }
    } else if !synced.drifted.is_empty() {
        Outcome::Drifted {
            message: format!(
                "{} key(s) differ from the spec and were not written (driftPolicy Report): {}",
                synced.drifted.len(),
                key_list(&synced.drifted)
            ),
        }
    } else {
        Outcome::Ready {
            message: format!(
                "{} key(s) in sync with {}",
                synced.managed.len(),
                describe(obj)
            ),
        }
    };
    Decision {
        outcome,
        next: Ok(requeue),
        drifted: (obj.drift_policy() == DriftPolicy::Report).then(|| synced.drifted.clone()),
        managed: synced.managed,
        source_versions: synced.source_versions,
    }
}

fn stalled(reason: Reason, message: String) -> Outcome {
    Outcome::Stalled { reason, message }
}

fn retrying(reason: Reason, message: String) -> Outcome {
    Outcome::Retrying { reason, message }
}

/// A failed sync: Stalled (look again after `stalled_requeue`, or on the next change) or Retrying
/// (the error goes to the controller, which backs off).
fn failed<K: MetadataResource>(
    obj: &K,
    settings: &Settings,
    error: SyncError,
) -> (Outcome, Result<Requeue, Error>) {
    let slow = Ok(Requeue::After(settings.stalled_requeue));
    match error {
        SyncError::Invalid(e) => (
            stalled(Reason::InvalidSpec, e.to_string()),
            Ok(Requeue::AwaitChange),
        ),
        SyncError::Resolve { reason, message } => (stalled(reason, message), slow),
        SyncError::SourceMissing(message) => (
            stalled(
                Reason::ValueSourceNotFound,
                format!("{message}; nothing was written"),
            ),
            slow,
        ),
        SyncError::Refused(r) if r.transient => (
            retrying(r.reason, format!("{}; retrying with backoff", r.message)),
            Err(Error::ConnectionNotReady(r.message)),
        ),
        SyncError::Refused(r) => (stalled(r.reason, r.message), slow),
        SyncError::Kube(e) => (
            retrying(
                Reason::SourceUnreadable,
                format!("cannot read a value source: {e}"),
            ),
            Err(Error::Kube(e)),
        ),
        SyncError::ReadBack(keys) => {
            let keys: BTreeSet<String> = keys.into_iter().collect();
            let message = format!(
                "ZITADEL acknowledged the write but does not hold the values sent for {} key(s): {}; retrying",
                keys.len(),
                key_list(&keys)
            );
            let error = Error::ReadBack {
                target: describe(obj),
                keys: key_list(&keys),
            };
            (retrying(Reason::ReadBackMismatch, message), Err(error))
        }
        SyncError::Ambiguous {
            target,
            cause,
            check,
        } => ambiguous(obj, settings, &target, cause, check),
        SyncError::Zitadel(e) if e.is_transient() => (
            retrying(e.reason(), format!("{e}; retrying with backoff")),
            Err(Error::Zitadel(e)),
        ),
        SyncError::Zitadel(e) => (stalled(e.reason(), zitadel_message(obj, &e)), slow),
    }
}

/// An answer that may mean "the target is gone", after asking ZITADEL whether it exists: gone
/// is `TargetNotFound` (Stalled); a user found in another organization is `UserNotFound`
/// (Stalled); anything else is retried with backoff — never called "not found" unproven.
fn ambiguous<K: MetadataResource>(
    obj: &K,
    settings: &Settings,
    target: &Target,
    cause: ZitadelError,
    check: Confirmed,
) -> (Outcome, Result<Requeue, Error>) {
    let what = match target {
        Target::Org { org_id } => format!("organization {org_id}"),
        Target::User { user_id, .. } => format!("user {user_id}"),
    };
    let retry = |reason: Reason, message: String| {
        let error = Error::Unconfirmed(message.clone());
        (retrying(reason, message), Err(error))
    };
    match check {
        Confirmed::Gone => (
            stalled(
                Reason::TargetNotFound,
                format!(
                    "{} no longer exists in ZITADEL ({what} confirmed gone after: {cause})",
                    describe(obj)
                ),
            ),
            Ok(Requeue::After(settings.stalled_requeue)),
        ),
        Confirmed::Exists {
            user_org: Some(actual),
        } if actual != target.org_id() => (
            stalled(
                Reason::UserNotFound,
                format!(
                    "{what} is in organization {actual}, not in {}: fix spec.organizationId ({cause})",
                    target.org_id()
                ),
            ),
            Ok(Requeue::After(settings.stalled_requeue)),
        ),
        Confirmed::Exists { .. } => {
            let reason = if cause.is_org_lookup_failed() {
                Reason::OrganizationLookupFailed
            } else {
                Reason::ZitadelRejected
            };
            retry(
                reason,
                format!("{cause}; {what} still exists in ZITADEL: retrying with backoff"),
            )
        }
        Confirmed::Unknown(e) => retry(
            Reason::TargetExistenceUnknown,
            format!(
                "{cause}; whether {what} still exists could not be established ({e}): retrying with backoff"
            ),
        ),
    }
}

/// A permanent ZITADEL error, naming the target when ZITADEL says it does not exist.
fn zitadel_message<K: MetadataResource>(obj: &K, e: &ZitadelError) -> String {
    match obj.target_ref() {
        _ if !(e.is_target_missing() || e.is_user_not_in_org()) => e.to_string(),
        Some(TargetRef::User { user, .. }) => format!(
            "{} was not found in ZITADEL (or not in the given organization): {e}",
            TargetRef::User { user, org_id: None }
        ),
        _ => format!("{} was not found in ZITADEL: {e}", describe(obj)),
    }
}
