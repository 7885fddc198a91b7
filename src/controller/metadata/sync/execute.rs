//! Plan and execute: the writes, then the read-back that confirms them.

use super::*;

/// Plan and execute. A key that vanished between our read and the remove (someone else deleted
/// it) fails the whole BulkRemove: re-read and plan again, once.
pub(super) async fn write(
    api: &dyn ZitadelApi,
    target: &Target,
    desired: &MetadataMap,
    managed: &BTreeSet<String>,
    mut observed: MetadataMap,
    progress: &mut Progress,
) -> Result<Plan, SyncError> {
    let mut retried = false;
    loop {
        let plan = plan::plan(desired, &observed, managed);
        match execute(api, target, &plan, progress).await {
            Ok(()) => return Ok(plan),
            Err(e) if e.is_key_not_existing() && !retried => {
                retried = true;
                observed = list_relevant(api, target, &relevant_keys(desired, managed)).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Read back what was written: ZITADEL has had bugs that dropped writes silently.
pub(super) async fn read_back(
    api: &dyn ZitadelApi,
    target: &Target,
    plan: &Plan,
) -> Result<(), SyncError> {
    if plan.is_empty() {
        return Ok(());
    }
    let written: BTreeSet<String> = plan.set.keys().chain(plan.remove.iter()).cloned().collect();
    let after = list_relevant(api, target, &written).await?;
    let mut mismatched: Vec<String> = plan
        .set
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    mismatched.extend(
        plan.remove
            .iter()
            .filter(|k| after.contains_key(*k))
            .cloned(),
    );
    if mismatched.is_empty() {
        Ok(())
    } else {
        Err(SyncError::ReadBack(mismatched))
    }
}

/// Apply a plan: at most the bulk sets and bulk removes ZITADEL's limits force; nothing when the
/// plan is empty.
pub async fn execute(
    api: &dyn ZitadelApi,
    target: &Target,
    plan: &Plan,
    progress: &mut Progress,
) -> Result<(), ZitadelError> {
    for batch in plan.set_batches() {
        let details = api.bulk_set_metadata(target, &batch).await?;
        progress
            .set
            .extend(batch.iter().map(|(k, _)| k.to_string()));
        progress.details = Some(details);
    }
    for batch in plan.remove_batches() {
        let details = api.bulk_remove_metadata(target, &batch).await?;
        progress.removed.extend(batch.iter().map(|k| k.to_string()));
        progress.details = Some(details);
    }
    Ok(())
}
