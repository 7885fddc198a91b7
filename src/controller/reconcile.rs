//! One reconcile: resolve the target → validate (pure) → read ZITADEL → plan (pure) → apply with
//! bulk calls → write status only if it changed. Cleanup honours `deletionPolicy`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Api, ResourceExt};

use super::{Context, Error, FIELD_MANAGER, FINALIZER};
use crate::crd::{self, DeletionPolicy, MetadataResource, MetadataStatus, TargetRef};
use crate::plan::{self, Claim, Plan};
use crate::status::{self, Outcome, reason};
use crate::zitadel::{MetadataMap, ObjectDetails, Target, ZitadelError};

/// Reconcile one object (entry point given to the controller).
pub async fn reconcile<K: MetadataResource>(
    obj: Arc<K>,
    ctx: Arc<Context<K>>,
) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, obj.clone(), |event| async {
        match event {
            Event::Apply(o) => apply(o.as_ref(), &api, &ctx).await,
            Event::Cleanup(o) => cleanup(o.as_ref(), &api, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if result.is_ok() {
        ctx.reset_failures(&obj);
    }
    result
}

/// What a sync did before it finished or failed; kept even on failure so status never forgets a
/// write ZITADEL acknowledged.
#[derive(Default)]
struct Progress {
    /// Org the calls acted in.
    org_id: Option<String>,
    /// Details of the last successful write.
    details: Option<ObjectDetails>,
    /// Keys set by this reconcile.
    set: BTreeSet<String>,
    /// Keys removed by this reconcile.
    removed: BTreeSet<String>,
}

/// A sync failure: bad spec or a ZITADEL error.
enum SyncError {
    Invalid(crd::EntryError),
    Zitadel(ZitadelError),
}

impl From<ZitadelError> for SyncError {
    fn from(e: ZitadelError) -> Self {
        SyncError::Zitadel(e)
    }
}

/// The result of a successful sync.
struct Synced {
    /// Keys now managed by this object.
    managed: BTreeSet<String>,
    /// Keys left to an earlier object (key → that object).
    conflicts: BTreeMap<String, String>,
}

async fn apply<K: MetadataResource>(
    obj: &K,
    api: &Api<K>,
    ctx: &Context<K>,
) -> Result<Action, Error> {
    let previous = obj.status().cloned().unwrap_or_default();
    let mut progress = Progress::default();
    let result = sync(obj, ctx, &previous, &mut progress).await;

    let mut managed: BTreeSet<String> = previous.managed_keys.iter().cloned().collect();
    managed.extend(progress.set.iter().cloned());
    managed.retain(|k| !progress.removed.contains(k));

    let (outcome, action, error) = match result {
        Ok(synced) => {
            managed = synced.managed;
            if synced.conflicts.is_empty() {
                let message = format!("{} key(s) in sync with {}", managed.len(), obj.target());
                (
                    Outcome::Ready { message },
                    Action::requeue(ctx.settings.resync),
                    None,
                )
            } else {
                let list = synced
                    .conflicts
                    .iter()
                    .map(|(k, owner)| format!("{k:?} (managed by {owner})"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let message = format!(
                    "key(s) {list} are already managed by another object on {}; this object leaves them alone",
                    obj.target()
                );
                let outcome = Outcome::Stalled {
                    reason: reason::KEY_CONFLICT.into(),
                    message,
                };
                (outcome, Action::requeue(ctx.settings.resync), None)
            }
        }
        Err(SyncError::Invalid(e)) => (
            Outcome::Stalled {
                reason: reason::INVALID_SPEC.into(),
                message: e.to_string(),
            },
            Action::await_change(),
            None,
        ),
        Err(SyncError::Zitadel(e)) if e.is_transient() => (
            Outcome::Retrying {
                reason: e.reason().into(),
                message: format!("{e}; retrying with backoff"),
            },
            Action::await_change(),
            Some(e),
        ),
        Err(SyncError::Zitadel(e)) => {
            let message = match (&e, obj.target()) {
                (e, TargetRef::User { user_id, .. }) if e.is_target_missing() => {
                    format!(
                        "user {user_id} was not found in ZITADEL (or not in the given organization): {e}"
                    )
                }
                (e, target) if e.is_target_missing() => {
                    format!("{target} was not found in ZITADEL: {e}")
                }
                (e, _) => e.to_string(),
            };
            let outcome = Outcome::Stalled {
                reason: e.reason().into(),
                message,
            };
            (outcome, Action::requeue(ctx.settings.stalled_requeue), None)
        }
    };

    publish_write_events(obj, ctx, &progress).await;
    let new_status = build_status(obj, &previous, &progress, managed, &outcome);
    if new_status != previous {
        patch_status(api, obj, &new_status).await?;
        if let Outcome::Stalled { reason, message } | Outcome::Retrying { reason, message } =
            &outcome
        {
            publish(ctx, obj, EventType::Warning, reason, "Reconcile", message).await;
        }
    }
    match error {
        Some(e) => Err(Error::Zitadel(e)),
        None => Ok(action),
    }
}

/// Steps 1–5 of the pipeline; records acknowledged writes in `progress` as it goes.
async fn sync<K: MetadataResource>(
    obj: &K,
    ctx: &Context<K>,
    previous: &MetadataStatus,
    progress: &mut Progress,
) -> Result<Synced, SyncError> {
    let desired = crd::validate(obj.entries()).map_err(SyncError::Invalid)?;
    let target = resolve_target(obj, ctx, previous).await?;
    progress.org_id = Some(target.org_id().to_string());

    // Keys an earlier object on the same target already claims are not ours to write or remove.
    // The caches must be complete for that answer to be right (e.g. right after a restart).
    for store in &ctx.stores {
        // Err only if the watcher is gone, in which case the controller is stopping anyway.
        let _ = store.wait_until_ready().await;
    }
    let conflicts = conflicts(obj, ctx);
    let desired: MetadataMap = desired
        .into_iter()
        .filter(|(k, _)| !conflicts.contains_key(k))
        .collect();
    let managed: BTreeSet<String> = previous
        .managed_keys
        .iter()
        .filter(|k| !conflicts.contains_key(*k))
        .cloned()
        .collect();

    let mut observed = ctx.zitadel.list_metadata(&target).await?;
    let mut retried = false;
    loop {
        let plan = plan::plan(&desired, &observed, &managed);
        match execute(ctx, &target, &plan, progress).await {
            Ok(()) => break,
            // A key vanished between our read and the remove (someone else deleted it):
            // BulkRemove failed whole, so re-read and plan again, once.
            Err(e) if e.is_key_not_existing() && !retried => {
                retried = true;
                observed = ctx.zitadel.list_metadata(&target).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Synced {
        managed: desired.keys().cloned().collect(),
        conflicts,
    })
}

/// Apply a plan: at most the bulk sets and bulk removes ZITADEL's limits force; nothing when the
/// plan is empty.
async fn execute<K: MetadataResource>(
    ctx: &Context<K>,
    target: &Target,
    plan: &Plan,
    progress: &mut Progress,
) -> Result<(), ZitadelError> {
    for batch in plan.set_batches() {
        let details = ctx.zitadel.bulk_set_metadata(target, &batch).await?;
        progress
            .set
            .extend(batch.iter().map(|(k, _)| k.to_string()));
        progress.details = Some(details);
    }
    for batch in plan.remove_batches() {
        let details = ctx.zitadel.bulk_remove_metadata(target, &batch).await?;
        progress.removed.extend(batch.iter().map(|k| k.to_string()));
        progress.details = Some(details);
    }
    Ok(())
}

/// The org/user the calls act on. A UserMetadata without `organizationId` is looked up once; the
/// org found is kept in status and reused.
async fn resolve_target<K: MetadataResource>(
    obj: &K,
    ctx: &Context<K>,
    previous: &MetadataStatus,
) -> Result<Target, ZitadelError> {
    Ok(match obj.target() {
        TargetRef::Org { org_id } => Target::Org { org_id },
        TargetRef::User {
            user_id,
            org_id: Some(org_id),
        } => Target::User { org_id, user_id },
        TargetRef::User {
            user_id,
            org_id: None,
        } => {
            let org_id = match previous.organization_id.clone() {
                Some(org) => org,
                None => ctx.zitadel.user_organization(&user_id).await?,
            };
            Target::User { org_id, user_id }
        }
    })
}

/// Keys of `obj` that an earlier live object of the same kind claims on the same target.
fn conflicts<K: MetadataResource>(obj: &K, ctx: &Context<K>) -> BTreeMap<String, String> {
    let identity = obj.target().identity();
    let me = claim(obj);
    let others: Vec<Claim> = ctx
        .stores
        .iter()
        .flat_map(|s| s.state())
        .filter(|o| o.meta().deletion_timestamp.is_none() && o.target().identity() == identity)
        .map(|o| claim(o.as_ref()))
        .filter(|c| c.object != me.object)
        .collect();
    plan::conflicts(&me, &others)
}

fn claim<K: MetadataResource>(obj: &K) -> Claim {
    Claim {
        object: format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any()),
        created: obj
            .meta()
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string()),
        keys: obj.entries().iter().map(|e| e.key.clone()).collect(),
    }
}

fn build_status<K: MetadataResource>(
    obj: &K,
    previous: &MetadataStatus,
    progress: &Progress,
    managed: BTreeSet<String>,
    outcome: &Outcome,
) -> MetadataStatus {
    let generation = obj.meta().generation;
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let (sequence, change_date, resource_owner) = match &progress.details {
        Some(d) => (
            d.sequence.clone(),
            d.date().map(str::to_owned),
            d.resource_owner.clone(),
        ),
        None => (
            previous.sequence.clone(),
            previous.change_date.clone(),
            previous.resource_owner.clone(),
        ),
    };
    let managed_keys: Vec<String> = managed.into_iter().collect();
    MetadataStatus {
        observed_generation: generation,
        sequence,
        change_date,
        resource_owner,
        organization_id: progress
            .org_id
            .clone()
            .or_else(|| previous.organization_id.clone()),
        managed_key_count: Some(managed_keys.len() as i64),
        managed_keys,
        conditions: status::conditions(&previous.conditions, outcome, generation, &now),
    }
}

async fn patch_status<K: MetadataResource>(
    api: &Api<K>,
    obj: &K,
    status: &MetadataStatus,
) -> Result<(), Error> {
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

async fn publish_write_events<K: MetadataResource>(obj: &K, ctx: &Context<K>, progress: &Progress) {
    let target = obj.target();
    if !progress.set.is_empty() {
        let note = format!(
            "Set {} key(s) on {target}: {}",
            progress.set.len(),
            key_list(&progress.set)
        );
        publish(ctx, obj, EventType::Normal, "MetadataSet", "BulkSet", &note).await;
    }
    if !progress.removed.is_empty() {
        let note = format!(
            "Removed {} key(s) from {target}: {}",
            progress.removed.len(),
            key_list(&progress.removed)
        );
        publish(
            ctx,
            obj,
            EventType::Normal,
            "MetadataRemoved",
            "BulkRemove",
            &note,
        )
        .await;
    }
}

/// Key names for events (never values), shortened to fit the 1 kB event note.
fn key_list(keys: &BTreeSet<String>) -> String {
    let mut out = String::new();
    for (i, k) in keys.iter().enumerate() {
        if out.len() + k.len() > 800 {
            out.push_str(&format!(" and {} more", keys.len() - i));
            break;
        }
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(k);
    }
    out
}

async fn publish<K: MetadataResource>(
    ctx: &Context<K>,
    obj: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) {
    let event = KubeEvent {
        type_,
        reason: reason.to_string(),
        note: Some(note.chars().take(1000).collect()),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(controller = K::CONTROLLER, name = obj.name_any(), error = %e, "cannot publish event");
    }
}

/// Deletion: remove the managed keys (policy `Delete`) or leave them (`Orphan`), then release the
/// finalizer. A target that no longer exists does not block deletion.
async fn cleanup<K: MetadataResource>(
    obj: &K,
    api: &Api<K>,
    ctx: &Context<K>,
) -> Result<Action, Error> {
    let previous = obj.status().cloned().unwrap_or_default();
    if obj.deletion_policy() == DeletionPolicy::Orphan || previous.managed_keys.is_empty() {
        return Ok(Action::await_change());
    }
    // Keys another live object on the same target also lists are left to it.
    for store in &ctx.stores {
        let _ = store.wait_until_ready().await;
    }
    let claimed_elsewhere = conflicts_any(obj, ctx);
    let managed: BTreeSet<String> = previous
        .managed_keys
        .iter()
        .filter(|k| !claimed_elsewhere.contains(*k))
        .cloned()
        .collect();
    let mut progress = Progress::default();
    let result: Result<(), ZitadelError> = async {
        let target = resolve_target(obj, ctx, &previous).await?;
        let mut retried = false;
        loop {
            let observed = ctx.zitadel.list_metadata(&target).await?;
            let plan = plan::plan(&MetadataMap::new(), &observed, &managed);
            match execute(ctx, &target, &plan, &mut progress).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_key_not_existing() && !retried => retried = true,
                Err(e) => return Err(e),
            }
        }
    }
    .await;
    publish_write_events(obj, ctx, &progress).await;
    match result {
        Ok(()) => Ok(Action::await_change()),
        Err(e) if e.is_target_missing() => {
            let note = format!(
                "{} no longer exists in ZITADEL; nothing to clean up: {e}",
                obj.target()
            );
            publish(ctx, obj, EventType::Normal, "TargetGone", "Cleanup", &note).await;
            Ok(Action::await_change())
        }
        Err(e) => {
            let message = format!(
                "removing managed keys failed: {e}; set spec.deletionPolicy to Orphan to delete the object without cleanup"
            );
            let outcome = if e.is_transient() {
                Outcome::Retrying {
                    reason: reason::CLEANUP_FAILED.into(),
                    message,
                }
            } else {
                Outcome::Stalled {
                    reason: reason::CLEANUP_FAILED.into(),
                    message,
                }
            };
            let mut managed: BTreeSet<String> = previous.managed_keys.iter().cloned().collect();
            managed.retain(|k| !progress.removed.contains(k));
            let new_status = build_status(obj, &previous, &progress, managed, &outcome);
            if new_status != previous {
                patch_status(api, obj, &new_status).await?;
                publish(
                    ctx,
                    obj,
                    EventType::Warning,
                    reason::CLEANUP_FAILED,
                    "Cleanup",
                    &e.to_string(),
                )
                .await;
            }
            Err(Error::Zitadel(e))
        }
    }
}

/// Keys of `obj` that any other live object of the same kind lists on the same target.
fn conflicts_any<K: MetadataResource>(obj: &K, ctx: &Context<K>) -> BTreeSet<String> {
    let identity = obj.target().identity();
    let me = claim(obj);
    ctx.stores
        .iter()
        .flat_map(|s| s.state())
        .filter(|o| o.meta().deletion_timestamp.is_none() && o.target().identity() == identity)
        .map(|o| claim(o.as_ref()))
        .filter(|c| c.object != me.object)
        .flat_map(|c| c.keys)
        .collect()
}
