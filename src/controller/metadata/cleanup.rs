//! Deletion: remove the managed keys (policy `Delete`) or leave them (`Orphan`), then release the
//! finalizer. A target that no longer exists does not block deletion.

use std::collections::BTreeSet;

use kube::runtime::controller::Action;

use super::report::{Notice, build_status, write_notices};
use super::sync::{Progress, execute};
use super::target::{self, TargetError, describe};
use super::{Io, claims, connect};
use crate::controller::{CleanupError, Error};
use crate::crd::{DeletionPolicy, MetadataResource, MetadataStatus};
use crate::plan;
use crate::reason::Reason;
use crate::status::Outcome;
use crate::zitadel::MetadataMap;

/// Remove `managed` from the target; retried once when someone else removed a key meanwhile.
async fn remove_keys<K: MetadataResource>(
    obj: &K,
    io: &Io<'_, K>,
    previous: &MetadataStatus,
    managed: &BTreeSet<String>,
    progress: &mut Progress,
) -> Result<(), CleanupError> {
    let granted = connect(obj, io).await.map_err(CleanupError::Refused)?;
    let api = granted.api.as_ref();
    let target = match target::resolve(obj, api, previous).await {
        Ok(target) => target,
        Err(TargetError::Zitadel(e)) => return Err(e.into()),
        // A name that no longer resolves: nothing this object can clean up.
        Err(TargetError::Unresolved { .. }) => return Ok(()),
    };
    let mut retried = false;
    loop {
        let observed = api.list_metadata(&target).await?;
        let plan = plan::plan(&MetadataMap::new(), &observed, managed);
        match execute(api, &target, &plan, progress).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_key_not_existing() && !retried => retried = true,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Run the cleanup of `obj`. Keys another live object on the same target also lists are left to
/// it.
pub async fn cleanup<K: MetadataResource>(obj: &K, io: &Io<'_, K>) -> Result<Action, Error> {
    let previous = obj.status().cloned().unwrap_or_default();
    if obj.deletion_policy() == DeletionPolicy::Orphan || previous.managed_keys.is_empty() {
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
    let result = remove_keys(obj, io, &previous, &managed, &mut progress).await;
    for notice in write_notices(obj, &progress) {
        io.report.event(obj, notice).await;
    }
    match result {
        Ok(()) => Ok(Action::await_change()),
        Err(CleanupError::Zitadel(e)) if e.is_target_missing() => {
            let note = format!(
                "{} no longer exists in ZITADEL; nothing to clean up: {e}",
                describe(obj)
            );
            io.report
                .event(obj, cleanup_notice(false, Reason::TargetGone, note))
                .await;
            Ok(Action::await_change())
        }
        Err(e) => {
            let outcome = failed_outcome(&e);
            let mut managed: BTreeSet<String> = previous.managed_keys.iter().cloned().collect();
            managed.retain(|k| !progress.removed.contains(k));
            let new_status = build_status(obj, &previous, &progress, managed, &outcome);
            if new_status != previous {
                io.report.patch_status(obj, &new_status).await?;
                let notice = cleanup_notice(true, Reason::CleanupFailed, e.to_string());
                io.report.event(obj, notice).await;
            }
            Err(Error::Cleanup(e))
        }
    }
}

fn cleanup_notice(warning: bool, reason: Reason, note: String) -> Notice {
    Notice {
        warning,
        reason,
        action: "Cleanup",
        note,
    }
}

/// A failed cleanup: Reconciling when it clears by itself, else Stalled (the user can switch
/// the policy to `Orphan`).
fn failed_outcome(e: &CleanupError) -> Outcome {
    let message = format!(
        "removing managed keys failed: {e}; set spec.deletionPolicy to Orphan to delete the object without cleanup"
    );
    let reason = Reason::CleanupFailed;
    if e.is_transient() {
        Outcome::Retrying { reason, message }
    } else {
        Outcome::Stalled { reason, message }
    }
}
