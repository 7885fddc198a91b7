//! Deletion: remove the managed keys (policy `Delete`) or leave them (`Orphan`), then release the
//! finalizer.
//!
//! The finalizer is released with keys left behind **only** when ZITADEL positively proves the
//! target gone ([`ZitadelApi::target_exists`] → [`Existence::Gone`], `shared/zitadel-api.md`
//! §10). A missing route, `AUTHZ-cdgFk`, `AUTH-Bs7Ds`, any other 403/404, 5xx or timeout keeps it:
//! `CleanupFailed` with what to fix (and that `deletionPolicy: Orphan` lets go), an Event, a
//! metric, and a retry with backoff. While keys are being removed the object says so
//! (`Reconciling=True`, reason `Deleting`, keys removed / remaining).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::report::{Notice, build_status, write_notices};
use super::sync::{Progress, list_relevant};
use super::target::{self, TargetError, describe};
use super::{Io, claims, connect};
use crate::controller::{CleanupError, Error};
use crate::crd::{DeletionPolicy, MetadataResource, MetadataStatus};
use crate::plan::MAX_REMOVE_BATCH_KEYS;
use crate::reason::Reason;
use crate::status::{self, Outcome};
use crate::zitadel::{Existence, Target, ZitadelApi, ZitadelError};

/// Shortest interval between two progress reports of one cleanup (each is a status write).
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// Reports a running cleanup's progress in the status (at most every [`PROGRESS_INTERVAL`]).
struct Tracker<'a, K> {
    obj: &'a K,
    io: &'a Io<'a, K>,
    previous: MetadataStatus,
    /// Keys this cleanup has to remove (those not left to another object).
    total: usize,
    last: Option<Instant>,
}

impl<K: MetadataResource> Tracker<'_, K> {
    /// Write `Reconciling=True` (`Deleting`) with the keys removed so far and remaining, unless
    /// a report was written less than [`PROGRESS_INTERVAL`] ago (`force` writes anyway).
    async fn report(&mut self, progress: &Progress, force: bool) -> Result<(), kube::Error> {
        if !force && self.last.is_some_and(|t| t.elapsed() < PROGRESS_INTERVAL) {
            return Ok(());
        }
        let removed = progress.removed.len();
        let remaining = self.total.saturating_sub(removed);
        let message = format!(
            "deleting: removing the managed keys from {} ({removed} removed, {remaining} remaining)",
            describe(self.obj)
        );
        let mut managed: BTreeSet<String> = self.previous.managed_keys.iter().cloned().collect();
        managed.retain(|k| !progress.removed.contains(k));
        let outcome = Outcome::Deleting { message };
        let mut status = build_status(self.obj, &self.previous, progress, managed, &outcome);
        status.observed_source_versions = self.previous.observed_source_versions.clone();
        if status != self.previous {
            self.io.report.write_status(self.obj, &status).await?;
            self.previous = status;
        }
        self.last = Some(Instant::now());
        Ok(())
    }
}

/// Remove `managed` from `target`: list them (exact whatever the row order), remove those seen in
/// batches (reporting progress), and prove the others absent. A key someone else removes meanwhile
/// fails a batch whole: re-read and retry, once.
async fn remove_keys<K: MetadataResource>(
    api: &dyn ZitadelApi,
    target: &Target,
    managed: &BTreeSet<String>,
    progress: &mut Progress,
    tracker: &mut Tracker<'_, K>,
) -> Result<(), CleanupError> {
    let mut retried = false;
    let observed = loop {
        let observed = list_relevant(api, target, managed).await?;
        let present: Vec<&str> = managed
            .iter()
            .filter(|k| observed.contains_key(*k) && !progress.removed.contains(*k))
            .map(String::as_str)
            .collect();
        match remove_batches(api, target, &present, progress, tracker).await {
            Ok(()) => break observed,
            Err(e) if e.is_key_not_existing() && !retried => retried = true,
            Err(e) => return Err(e.into()),
        }
    };
    // Managed keys the listing did not show are gone already — or hidden from the service user
    // (a v2 list leaves out rows the caller may not read instead of refusing). ZITADEL's
    // all-or-nothing remove tells: "key not existing" for a single key proves it absent; a
    // permission error is an error.
    let unseen: Vec<&str> = managed
        .iter()
        .filter(|k| !observed.contains_key(*k) && !progress.removed.contains(*k))
        .map(String::as_str)
        .collect();
    confirm_absent(api, target, unseen, progress).await?;
    Ok(())
}

/// Remove `keys` in batches of at most [`MAX_REMOVE_BATCH_KEYS`], reporting progress after each.
async fn remove_batches<K: MetadataResource>(
    api: &dyn ZitadelApi,
    target: &Target,
    keys: &[&str],
    progress: &mut Progress,
    tracker: &mut Tracker<'_, K>,
) -> Result<(), ZitadelError> {
    for batch in keys.chunks(MAX_REMOVE_BATCH_KEYS) {
        let details = api.bulk_remove_metadata(target, batch).await?;
        progress.removed.extend(batch.iter().map(|k| k.to_string()));
        progress.details = Some(details);
        if progress.removed.len() < tracker.total {
            // A failed progress write does not stop the cleanup.
            let _ = tracker.report(progress, false).await;
        }
    }
    Ok(())
}

/// Prove each of `keys` absent, removing those that turn out to exist: remove a batch; "key not
/// existing" splits it (one key: proven absent).
async fn confirm_absent(
    api: &dyn ZitadelApi,
    target: &Target,
    keys: Vec<&str>,
    progress: &mut Progress,
) -> Result<(), ZitadelError> {
    let mut pending: Vec<Vec<&str>> = keys
        .chunks(MAX_REMOVE_BATCH_KEYS)
        .map(<[_]>::to_vec)
        .collect();
    while let Some(batch) = pending.pop() {
        match api.bulk_remove_metadata(target, &batch).await {
            Ok(details) => {
                progress.removed.extend(batch.iter().map(|k| k.to_string()));
                progress.details = Some(details);
            }
            Err(e) if e.is_key_not_existing() => {
                if batch.len() > 1 {
                    let (a, b) = batch.split_at(batch.len() / 2);
                    pending.push(a.to_vec());
                    pending.push(b.to_vec());
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether a failed cleanup should ask ZITADEL if the target is gone: for every answer that
/// might mean it (404, 403, 400, `AUTH-Bs7Ds`, a missing route), not while ZITADEL is down
/// (5xx, 429, timeouts: the existence check would fail the same way).
fn worth_confirming(e: &ZitadelError) -> bool {
    !e.is_transient() || e.is_org_lookup_failed()
}

/// Run the cleanup of `obj`. Keys another live object on the same target also lists are left to
/// it.
pub async fn cleanup<K: MetadataResource>(obj: &K, io: &Io<'_, K>) -> Result<Action, Error> {
    let uid = obj.uid().unwrap_or_default();
    io.first_writes.forget(&uid);
    // The keys the status shows, and those ZITADEL acknowledged but no status write recorded.
    let shown = obj.full_status().unwrap_or_default();
    let previous = io.unrecorded.managed_view(&uid, &shown).into_owned();
    if obj.deletion_policy() == DeletionPolicy::Orphan || previous.managed_keys.is_empty() {
        io.unrecorded.forget(&uid);
        return Ok(Action::await_change());
    }
    let claimed_elsewhere = claims::claimed_elsewhere(obj, &io.neighbours.on_target(obj).await);
    let managed: BTreeSet<String> = previous
        .managed_keys
        .iter()
        .filter(|k| !claimed_elsewhere.contains(*k))
        .cloned()
        .collect();
    let mut progress = Progress::default();
    let mut resolved = None;
    let mut tracker = Tracker {
        obj,
        io,
        previous: previous.clone(),
        total: managed.len(),
        last: None,
    };
    let result = run(
        obj,
        io,
        &managed,
        &mut progress,
        &mut resolved,
        &mut tracker,
    )
    .await;
    // What the object shows now (the progress reports may have written).
    let shown = tracker.previous;
    for notice in write_notices(obj, &progress) {
        io.report.event(obj, notice).await;
    }
    let error = match result {
        Ok(()) => {
            io.unrecorded.forget(&uid);
            return Ok(Action::await_change());
        }
        Err(e) => e,
    };
    // Keys are left behind only when ZITADEL proves the target gone.
    let mut check = None;
    if let (CleanupError::Zitadel(cause), Some((api, target))) = (&error, &resolved)
        && worth_confirming(cause)
    {
        match api.target_exists(target).await {
            Ok(Existence::Gone) => {
                let note = format!(
                    "{} no longer exists in ZITADEL (proven after: {cause}); its keys went with it",
                    describe(obj)
                );
                io.report
                    .event(obj, cleanup_notice(false, Reason::TargetGone, note))
                    .await;
                io.unrecorded.forget(&uid);
                return Ok(Action::await_change());
            }
            Ok(Existence::Exists) => check = Some("the target still exists".to_string()),
            Err(e) => check = Some(format!("whether the target still exists is unknown: {e}")),
        }
    }
    report_failure(obj, io, &previous, &shown, &progress, error, check).await
}

/// Record a failed cleanup: status (Retrying or Stalled, the keys still managed) and a Warning
/// Event when the status changed; the error to return.
async fn report_failure<K: MetadataResource>(
    obj: &K,
    io: &Io<'_, K>,
    previous: &MetadataStatus,
    shown: &MetadataStatus,
    progress: &Progress,
    error: CleanupError,
    check: Option<String>,
) -> Result<Action, Error> {
    let message = failure_message(obj, &error, check.as_deref());
    let outcome = if error.is_transient() {
        Outcome::Retrying {
            reason: Reason::CleanupFailed,
            message: message.clone(),
        }
    } else {
        Outcome::Stalled {
            reason: Reason::CleanupFailed,
            message: message.clone(),
        }
    };
    let mut managed: BTreeSet<String> = previous.managed_keys.iter().cloned().collect();
    managed.retain(|k| !progress.removed.contains(k));
    let mut new_status = build_status(obj, previous, progress, managed, &outcome);
    new_status.observed_source_versions = previous.observed_source_versions.clone();
    if new_status != *shown {
        io.report.write_status(obj, &new_status).await?;
        let notice = cleanup_notice(true, Reason::CleanupFailed, message);
        io.report.event(obj, notice).await;
    }
    Err(Error::Cleanup(error))
}

/// The client and target of a cleanup, once resolved (for the existence check).
type Resolved = (std::sync::Arc<dyn ZitadelApi>, Target);

/// Connect, resolve the target, announce the cleanup and remove the keys.
async fn run<K: MetadataResource>(
    obj: &K,
    io: &Io<'_, K>,
    managed: &BTreeSet<String>,
    progress: &mut Progress,
    resolved: &mut Option<Resolved>,
    tracker: &mut Tracker<'_, K>,
) -> Result<(), CleanupError> {
    let granted = connect(obj, io).await.map_err(CleanupError::Refused)?;
    let api = granted.api.clone();
    let previous = tracker.previous.clone();
    let target = match target::resolve(obj, api.as_ref(), &previous).await {
        Ok(target) => target,
        Err(TargetError::Zitadel(e)) => return Err(e.into()),
        // A name that no longer resolves and was never recorded: nothing was ever written.
        Err(TargetError::Unresolved { .. }) => return Ok(()),
    };
    *resolved = Some((api.clone(), target.clone()));
    // Say that deletion is under way before the first call that may take long — unless an
    // earlier attempt failed: its CleanupFailed stays shown until this one gets somewhere.
    let failed_before = status::find(&previous.conditions, status::READY)
        .is_some_and(|c| c.reason == Reason::CleanupFailed.as_str());
    if !failed_before {
        let _ = tracker.report(progress, true).await;
    }
    remove_keys(api.as_ref(), &target, managed, progress, tracker).await
}

fn cleanup_notice(warning: bool, reason: Reason, note: String) -> Notice {
    Notice {
        warning,
        reason,
        action: "Cleanup",
        note,
    }
}

/// What the user can do about a failed cleanup, by cause.
fn remedy(e: &CleanupError) -> &'static str {
    let CleanupError::Zitadel(z) = e else {
        return "fix the connection (see its status)";
    };
    if z.is_route_missing() {
        "the ZITADEL instance does not serve the metadata API in use: check the connection's spec.api (or --zitadel-api); Management API v1 is gone on ZITADEL v5"
    } else if z.is_org_lookup_failed() {
        "ZITADEL could not resolve the organization (AUTH-Bs7Ds: deleted, or its lookup failed); retrying"
    } else if z.is_permission() {
        "grant the service user a role that may remove metadata on the target (e.g. ORG_OWNER in its organization, or IAM_OWNER)"
    } else if z.is_transient() {
        "ZITADEL is not answering properly; retrying"
    } else {
        "check the error and the connection"
    }
}

/// The message of a failed cleanup (`CleanupFailed`: Reconciling when it clears by itself, else
/// Stalled; either way the finalizer stays and the cleanup is retried with backoff).
fn failure_message<K: MetadataResource>(obj: &K, e: &CleanupError, check: Option<&str>) -> String {
    let check = check.map(|c| format!(" ({c})")).unwrap_or_default();
    format!(
        "removing the managed keys from {} failed: {e}{check}; {}. The object keeps its finalizer until the keys are removed; set spec.deletionPolicy to Orphan to delete it and leave the keys in ZITADEL",
        describe(obj),
        remedy(e)
    )
}
