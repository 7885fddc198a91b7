//! One reconcile: resolve the target → validate (pure) → read ZITADEL → plan (pure) → apply with
//! bulk calls → write status only if it changed. Cleanup honours `deletionPolicy`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Api, ResourceExt};

use super::{Context, Error, FIELD_MANAGER, FINALIZER};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use crate::crd::{
    self, DeletionPolicy, DriftPolicy, KeyRef, MetadataResource, MetadataStatus, OrgRef, TargetRef,
    UserRef, ValueSource,
};
use crate::plan::{self, Claim, Plan};
use crate::reason::Reason;
use crate::status::{self, Outcome};
use crate::zitadel::{
    Found, MetadataMap, ObjectDetails, OrgQuery, Target, UserQuery, ZitadelApi, ZitadelError,
};

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
    /// User the calls acted on (UserMetadata).
    user_id: Option<String>,
    /// Details of the last successful write.
    details: Option<ObjectDetails>,
    /// Keys set by this reconcile.
    set: BTreeSet<String>,
    /// Keys removed by this reconcile.
    removed: BTreeSet<String>,
}

/// A sync failure.
enum SyncError {
    /// The spec (or a value read from a source) cannot be sent to ZITADEL.
    Invalid(crd::EntryError),
    /// A referenced Secret/ConfigMap or key does not exist (message names it, never a value).
    SourceMissing(String),
    /// Reading a Secret/ConfigMap failed.
    Kube(kube::Error),
    /// ZITADEL answered with an error.
    Zitadel(ZitadelError),
    /// After a write, ZITADEL did not hold what was sent (keys listed).
    ReadBack(Vec<String>),
    /// The object's connection cannot be used right now, but will be without anyone acting
    /// (probe pending or failed transiently): retried with backoff.
    ConnectionPending {
        /// Why.
        reason: Reason,
        /// Human message.
        message: String,
    },
    /// The target named in the spec cannot be resolved to exactly one org/user.
    Resolve {
        /// Why.
        reason: Reason,
        /// Human message.
        message: String,
    },
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
    /// Keys that differ from the spec and were not written (driftPolicy `Report`).
    drifted: BTreeSet<String>,
    /// `Kind/name@resourceVersion` of the value sources read.
    source_versions: Vec<String>,
}

async fn apply<K: MetadataResource>(
    obj: &K,
    api: &Api<K>,
    ctx: &Context<K>,
) -> Result<Action, Error> {
    let previous = obj.status().cloned().unwrap_or_default();
    if obj.suspended() {
        let outcome = Outcome::Suspended {
            message: "reconciliation is suspended (spec.suspend is true); ZITADEL is neither read nor written".into(),
        };
        let managed = previous.managed_keys.iter().cloned().collect();
        let mut new_status = build_status(obj, &previous, &Progress::default(), managed, &outcome);
        new_status.observed_source_versions = previous.observed_source_versions.clone();
        if new_status != previous {
            patch_status(api, obj, &new_status).await?;
        }
        return Ok(Action::await_change());
    }

    let mut progress = Progress::default();
    let result = sync(obj, ctx, &previous, &mut progress).await;

    let mut managed: BTreeSet<String> = previous.managed_keys.iter().cloned().collect();
    managed.extend(progress.set.iter().cloned());
    managed.retain(|k| !progress.removed.contains(k));
    let mut source_versions = previous.observed_source_versions.clone();
    let mut drifted = None;

    let (outcome, action, error) = match result {
        Ok(synced) => {
            managed = synced.managed;
            source_versions = synced.source_versions;
            let requeue = match obj.drift_policy() {
                DriftPolicy::Ignore => Action::await_change(),
                DriftPolicy::Enforce | DriftPolicy::Report => Action::requeue(ctx.settings.resync),
            };
            if obj.drift_policy() == DriftPolicy::Report {
                drifted = Some(synced.drifted.clone());
            }
            if !synced.conflicts.is_empty() {
                let list = synced
                    .conflicts
                    .iter()
                    .map(|(k, owner)| format!("{k:?} (managed by {owner})"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let message = format!(
                    "key(s) {list} are already managed by another object on {}; this object leaves them alone",
                    describe(obj)
                );
                let outcome = Outcome::Stalled {
                    reason: Reason::KeyConflict,
                    message,
                };
                (outcome, requeue, None)
            } else if !synced.drifted.is_empty() {
                let message = format!(
                    "{} key(s) differ from the spec and were not written (driftPolicy Report): {}",
                    synced.drifted.len(),
                    key_list(&synced.drifted)
                );
                (Outcome::Drifted { message }, requeue, None)
            } else {
                let message = format!("{} key(s) in sync with {}", managed.len(), describe(obj));
                (Outcome::Ready { message }, requeue, None)
            }
        }
        Err(SyncError::Invalid(e)) => (
            Outcome::Stalled {
                reason: Reason::InvalidSpec,
                message: e.to_string(),
            },
            Action::await_change(),
            None,
        ),
        Err(SyncError::Resolve { reason, message }) => (
            Outcome::Stalled { reason, message },
            Action::requeue(ctx.settings.stalled_requeue),
            None,
        ),
        Err(SyncError::SourceMissing(message)) => (
            Outcome::Stalled {
                reason: Reason::ValueSourceNotFound,
                message: format!("{message}; nothing was written"),
            },
            Action::requeue(ctx.settings.stalled_requeue),
            None,
        ),
        Err(SyncError::ConnectionPending { reason, message }) => (
            Outcome::Retrying {
                reason,
                message: format!("{message}; retrying with backoff"),
            },
            Action::await_change(),
            Some(Error::ConnectionNotReady(message)),
        ),
        Err(SyncError::Kube(e)) => (
            Outcome::Retrying {
                reason: Reason::SourceUnreadable,
                message: format!("cannot read a value source: {e}"),
            },
            Action::await_change(),
            Some(Error::Kube(e)),
        ),
        Err(SyncError::ReadBack(keys)) => {
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
            (
                Outcome::Retrying {
                    reason: Reason::ReadBackMismatch,
                    message,
                },
                Action::await_change(),
                Some(error),
            )
        }
        Err(SyncError::Zitadel(e)) if e.is_transient() => (
            Outcome::Retrying {
                reason: e.reason(),
                message: format!("{e}; retrying with backoff"),
            },
            Action::await_change(),
            Some(Error::Zitadel(e)),
        ),
        Err(SyncError::Zitadel(e)) => {
            let message = match (&e, obj.target_ref()) {
                (e, Some(TargetRef::User { user, .. })) if e.is_target_missing() => {
                    format!(
                        "{} was not found in ZITADEL (or not in the given organization): {e}",
                        TargetRef::User { user, org_id: None }
                    )
                }
                (e, _) if e.is_target_missing() => {
                    format!("{} was not found in ZITADEL: {e}", describe(obj))
                }
                (e, _) => e.to_string(),
            };
            let outcome = Outcome::Stalled {
                reason: e.reason(),
                message,
            };
            (outcome, Action::requeue(ctx.settings.stalled_requeue), None)
        }
    };

    super::note_outcome(&outcome);
    publish_write_events(obj, ctx, &progress).await;
    let mut new_status = build_status(obj, &previous, &progress, managed, &outcome);
    new_status.observed_source_versions = source_versions;
    if let Some(drifted) = &drifted {
        let generation = obj.meta().generation;
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let condition = if drifted.is_empty() {
            (
                "False",
                Reason::InSync,
                "ZITADEL matches the spec".to_string(),
            )
        } else {
            (
                "True",
                Reason::Drifted,
                format!("differing keys: {}", key_list(drifted)),
            )
        };
        new_status.conditions.push(status::condition(
            &previous.conditions,
            status::DRIFTED,
            condition.0,
            condition.1,
            &condition.2,
            generation,
            &now,
        ));
    }
    if new_status != previous {
        patch_status(api, obj, &new_status).await?;
        if let Outcome::Stalled { reason, message } | Outcome::Retrying { reason, message } =
            &outcome
        {
            publish(ctx, obj, EventType::Warning, *reason, "Reconcile", message).await;
        }
        if let Outcome::Drifted { message } = &outcome {
            publish(
                ctx,
                obj,
                EventType::Warning,
                Reason::Drifted,
                "Reconcile",
                message,
            )
            .await;
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(action),
    }
}

/// The pipeline: validate → resolve value sources → resolve target → read → plan → write →
/// read back. Records acknowledged writes in `progress` as it goes.
async fn sync<K: MetadataResource>(
    obj: &K,
    ctx: &Context<K>,
    previous: &MetadataStatus,
    progress: &mut Progress,
) -> Result<Synced, SyncError> {
    let spec = crd::validate(obj.entries()).map_err(SyncError::Invalid)?;
    let ns = obj.namespace().unwrap_or_default();
    let (sourced, source_versions) = resolve_sources(&ctx.client, &ns, &spec.sourced).await?;
    let mut desired = spec.inline;
    desired.extend(sourced);

    // The connection: refused (missing, not Ready, namespace not allowed) → no ZITADEL call.
    let granted = ctx
        .connections
        .for_object(&ns, obj.connection_ref())
        .await
        .map_err(|r| {
            if r.transient {
                SyncError::ConnectionPending {
                    reason: r.reason,
                    message: r.message,
                }
            } else {
                SyncError::Resolve {
                    reason: r.reason,
                    message: r.message,
                }
            }
        })?;
    let api = granted.api.as_ref();

    // driftPolicy Ignore: nothing changed on our side since the last successful sync → leave
    // ZITADEL alone (not even read it).
    if obj.drift_policy() == DriftPolicy::Ignore
        && previous.observed_generation == obj.meta().generation
        && previous.observed_source_versions == source_versions
        && status::find(&previous.conditions, status::READY).is_some_and(|c| c.status == "True")
    {
        progress.org_id = previous.organization_id.clone();
        progress.user_id = previous.user_id.clone();
        return Ok(Synced {
            managed: previous.managed_keys.iter().cloned().collect(),
            conflicts: BTreeMap::new(),
            drifted: BTreeSet::new(),
            source_versions,
        });
    }

    let target = resolve_target(obj, api, previous).await?;
    if !granted.allowed.allows(target.org_id()) {
        return Err(SyncError::Resolve {
            reason: Reason::TargetNotAllowed,
            message: format!(
                "{} does not allow namespace {ns} to target organization {}",
                granted.name,
                target.org_id()
            ),
        });
    }
    progress.org_id = Some(target.org_id().to_string());
    if let Target::User { user_id, .. } = &target {
        progress.user_id = Some(user_id.clone());
    }

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

    let mut observed = api.list_metadata(&target).await?;

    if obj.drift_policy() == DriftPolicy::Report {
        let plan = plan::plan(&desired, &observed, &managed);
        let drifted: BTreeSet<String> =
            plan.set.keys().chain(plan.remove.iter()).cloned().collect();
        // Keys that already match are adopted; nothing is written.
        let mut now_managed: BTreeSet<String> = managed
            .intersection(&observed.keys().cloned().collect())
            .cloned()
            .collect();
        now_managed.extend(plan.unchanged.iter().cloned());
        return Ok(Synced {
            managed: now_managed,
            conflicts,
            drifted,
            source_versions,
        });
    }

    let mut retried = false;
    let plan = loop {
        let plan = plan::plan(&desired, &observed, &managed);
        match execute(api, &target, &plan, progress).await {
            Ok(()) => break plan,
            // A key vanished between our read and the remove (someone else deleted it):
            // BulkRemove failed whole, so re-read and plan again, once.
            Err(e) if e.is_key_not_existing() && !retried => {
                retried = true;
                observed = api.list_metadata(&target).await?;
            }
            Err(e) => return Err(e.into()),
        }
    };

    // Read back what was written: ZITADEL has had bugs that dropped writes silently.
    if !plan.is_empty() {
        let after = api.list_metadata(&target).await?;
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
        if !mismatched.is_empty() {
            return Err(SyncError::ReadBack(mismatched));
        }
    }

    Ok(Synced {
        managed: desired.keys().cloned().collect(),
        conflicts,
        drifted: BTreeSet::new(),
        source_versions,
    })
}

/// A source that exists: its resourceVersion and the key's bytes if the key exists.
type SourceLookup = (Option<String>, Option<Vec<u8>>);

/// Read `valueFrom` sources. Returns the values and the sources' `Kind/name@resourceVersion`.
/// A missing non-optional source fails the whole sync (no half-way writes).
async fn resolve_sources(
    client: &kube::Client,
    ns: &str,
    sourced: &BTreeMap<String, ValueSource>,
) -> Result<(MetadataMap, Vec<String>), SyncError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let mut secret_cache: BTreeMap<String, Option<Secret>> = BTreeMap::new();
    let mut cm_cache: BTreeMap<String, Option<ConfigMap>> = BTreeMap::new();
    let mut values = MetadataMap::new();
    let mut versions = BTreeSet::new();
    for (key, source) in sourced {
        let (kind, reference, found): (&str, &KeyRef, Option<SourceLookup>) =
            match (&source.secret_key_ref, &source.config_map_key_ref) {
                (Some(r), None) => {
                    if !secret_cache.contains_key(&r.name) {
                        let got = secrets.get_opt(&r.name).await.map_err(SyncError::Kube)?;
                        secret_cache.insert(r.name.clone(), got);
                    }
                    let found = secret_cache.get(&r.name).and_then(Option::as_ref).map(|s| {
                        let value = s
                            .data
                            .as_ref()
                            .and_then(|d| d.get(&r.key))
                            .map(|b| b.0.clone());
                        (s.metadata.resource_version.clone(), value)
                    });
                    ("Secret", r, found)
                }
                (None, Some(r)) => {
                    if !cm_cache.contains_key(&r.name) {
                        let got = config_maps
                            .get_opt(&r.name)
                            .await
                            .map_err(SyncError::Kube)?;
                        cm_cache.insert(r.name.clone(), got);
                    }
                    let found = cm_cache.get(&r.name).and_then(Option::as_ref).map(|c| {
                        let value = c
                            .data
                            .as_ref()
                            .and_then(|d| d.get(&r.key))
                            .map(|s| s.clone().into_bytes())
                            .or_else(|| {
                                c.binary_data
                                    .as_ref()
                                    .and_then(|d| d.get(&r.key))
                                    .map(|b| b.0.clone())
                            });
                        (c.metadata.resource_version.clone(), value)
                    });
                    ("ConfigMap", r, found)
                }
                _ => {
                    return Err(SyncError::Invalid(crd::EntryError::ValueChoice {
                        key: key.clone(),
                    }));
                }
            };
        if let Some((Some(rv), _)) = &found {
            versions.insert(format!("{kind}/{}@{rv}", reference.name));
        }
        match found {
            Some((_, Some(bytes))) => {
                crd::check_value(key, &bytes).map_err(SyncError::Invalid)?;
                values.insert(key.clone(), bytes);
            }
            _ if reference.optional => {}
            Some((_, None)) => {
                return Err(SyncError::SourceMissing(format!(
                    "metadata key {key:?}: {kind} {:?} has no key {:?}",
                    reference.name, reference.key
                )));
            }
            None => {
                return Err(SyncError::SourceMissing(format!(
                    "metadata key {key:?}: {kind} {:?} not found in namespace {ns}",
                    reference.name
                )));
            }
        }
    }
    Ok((values, versions.into_iter().collect()))
}

/// Apply a plan: at most the bulk sets and bulk removes ZITADEL's limits force; nothing when the
/// plan is empty.
async fn execute(
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

/// The org/user the calls act on. Names are resolved once through ZITADEL's search; the ids
/// found are kept in status and reused (the target fields are immutable). A UserMetadata without
/// an organization has its user looked up once for the org.
async fn resolve_target<K: MetadataResource>(
    obj: &K,
    api: &dyn ZitadelApi,
    previous: &MetadataStatus,
) -> Result<Target, SyncError> {
    let Some(target) = obj.target_ref() else {
        return Err(SyncError::Resolve {
            reason: Reason::InvalidSpec,
            message: "the spec names no target (set organizationId/organization or userId/user)"
                .into(),
        });
    };
    match target {
        TargetRef::Org(OrgRef::Id(org_id)) => Ok(Target::Org { org_id }),
        TargetRef::Org(reference) => {
            if let Some(org_id) = previous.organization_id.clone() {
                return Ok(Target::Org { org_id });
            }
            let query = match &reference {
                OrgRef::Name(n) => OrgQuery::Name(n.clone()),
                OrgRef::Domain(d) => OrgQuery::Domain(d.clone()),
                OrgRef::Id(_) => unreachable_ref(),
            };
            let found = api.find_organizations(&query).await?;
            let hit = exactly_one(found, &TargetRef::Org(reference))?;
            Ok(Target::Org { org_id: hit.id })
        }
        TargetRef::User {
            user: UserRef::Id(user_id),
            org_id,
        } => {
            let org_id = match org_id.or_else(|| previous.organization_id.clone()) {
                Some(org) => org,
                None => api.user_organization(&user_id).await?,
            };
            Ok(Target::User { org_id, user_id })
        }
        TargetRef::User { user, org_id } => {
            if let (Some(user_id), Some(org)) =
                (previous.user_id.clone(), previous.organization_id.clone())
            {
                return Ok(Target::User {
                    org_id: org_id.unwrap_or(org),
                    user_id,
                });
            }
            let query = match (&user, &org_id) {
                (UserRef::LoginName(l), _) => UserQuery::LoginName(l.clone()),
                (UserRef::UserName(u), Some(org)) => UserQuery::UserName {
                    org_id: org.clone(),
                    user_name: u.clone(),
                },
                (UserRef::Email(e), Some(org)) => UserQuery::Email {
                    org_id: org.clone(),
                    email: e.clone(),
                },
                _ => {
                    return Err(SyncError::Resolve {
                        reason: Reason::InvalidSpec,
                        message: "user.userName and user.email need spec.organizationId".into(),
                    });
                }
            };
            let reference = TargetRef::User {
                user,
                org_id: org_id.clone(),
            };
            let hit = exactly_one(api.find_users(&query).await?, &reference)?;
            let org = org_id.unwrap_or(hit.org_id);
            Ok(Target::User {
                org_id: org,
                user_id: hit.id,
            })
        }
    }
}

fn unreachable_ref() -> OrgQuery {
    // OrgRef::Id is handled before the search; kept total without panicking.
    OrgQuery::Name(String::new())
}

/// Exactly one search hit, or a Stalled-worthy error naming the candidates.
fn exactly_one(mut found: Vec<Found>, reference: &TargetRef) -> Result<Found, SyncError> {
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(SyncError::Resolve {
            reason: Reason::TargetNotFound,
            message: format!("no {reference} is visible to the operator in ZITADEL"),
        }),
        n => Err(SyncError::Resolve {
            reason: Reason::TargetAmbiguous,
            message: format!(
                "{n} matches for {reference} (ids {}); use an id instead",
                found
                    .iter()
                    .map(|f| f.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// Human description of the target for messages.
fn describe<K: MetadataResource>(obj: &K) -> String {
    obj.target_ref()
        .map_or_else(|| "no target".to_string(), |t| t.to_string())
}

/// Keys of `obj` that an earlier live object of the same kind claims on the same target.
fn conflicts<K: MetadataResource>(obj: &K, ctx: &Context<K>) -> BTreeMap<String, String> {
    let identity = identity(obj);
    let me = claim(obj);
    let others: Vec<Claim> = ctx
        .on_target(&identity)
        .iter()
        .filter(|o| o.meta().deletion_timestamp.is_none() && self::identity(o.as_ref()) == identity)
        .filter(|o| !refused_by_guard(o.as_ref()))
        .map(|o| claim(o.as_ref()))
        .filter(|c| c.object != me.object)
        .collect();
    plan::conflicts(&me, &others)
}

/// An object its connection's guard refuses (`TargetNotAllowed` for its current generation)
/// never writes, so it claims nothing: otherwise a namespace that may not use a connection could
/// block the keys of one that may, just by being created first.
fn refused_by_guard<K: MetadataResource>(obj: &K) -> bool {
    obj.status().is_some_and(|s| {
        s.observed_generation == obj.meta().generation
            && status::find(&s.conditions, status::STALLED).is_some_and(|c| {
                c.status == "True" && Reason::TargetNotAllowed == c.reason.as_str()
            })
    })
}

/// Which metadata store an object writes to, with the ids resolved so far.
pub(super) fn identity<K: MetadataResource>(obj: &K) -> String {
    obj.target_ref()
        .map_or_else(String::new, |t| t.identity(obj.status()))
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
        user_id: progress
            .user_id
            .clone()
            .or_else(|| previous.user_id.clone()),
        organization_id: progress
            .org_id
            .clone()
            .or_else(|| previous.organization_id.clone()),
        managed_key_count: Some(managed_keys.len() as i64),
        observed_source_versions: Vec::new(),
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
    let target = describe(obj);
    if !progress.set.is_empty() {
        let note = format!(
            "Set {} key(s) on {target}: {}",
            progress.set.len(),
            key_list(&progress.set)
        );
        publish_write(ctx, obj, Reason::MetadataSet, "BulkSet", &note).await;
    }
    if !progress.removed.is_empty() {
        let note = format!(
            "Removed {} key(s) from {target}: {}",
            progress.removed.len(),
            key_list(&progress.removed)
        );
        publish_write(ctx, obj, Reason::MetadataRemoved, "BulkRemove", &note).await;
    }
}

/// A write Event: each write gets an Event of its own naming its keys. The shared recorder would
/// fold a second write within six minutes into the first Event's series (keeping the first
/// note), and it keeps every Event it published for six minutes — at 10,000 objects converging
/// that cache was a third of the operator's memory. A recorder without history does neither.
async fn publish_write<K: MetadataResource>(
    ctx: &Context<K>,
    obj: &K,
    reason: Reason,
    action: &str,
    note: &str,
) {
    let recorder = Recorder::new(ctx.client.clone(), Reporter::from(super::FIELD_MANAGER));
    publish_with(&recorder, obj, EventType::Normal, reason, action, note).await;
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
    reason: Reason,
    action: &str,
    note: &str,
) {
    publish_with(&ctx.recorder, obj, type_, reason, action, note).await;
}

async fn publish_with<K: MetadataResource>(
    recorder: &Recorder,
    obj: &K,
    type_: EventType,
    reason: Reason,
    action: &str,
    note: &str,
) {
    let event = KubeEvent {
        type_,
        reason: reason.as_str().to_string(),
        note: Some(note.chars().take(1000).collect()),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &obj.object_ref(&())).await {
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
        let ns = obj.namespace().unwrap_or_default();
        let granted = match ctx.connections.for_object(&ns, obj.connection_ref()).await {
            Ok(granted) => granted,
            // A transient refusal is retried like an unreachable ZITADEL.
            Err(refusal) if refusal.transient => {
                return Err(ZitadelError::Transport(format!(
                    "{}: {}",
                    refusal.reason, refusal.message
                )));
            }
            Err(refusal) => {
                return Err(ZitadelError::Credentials(format!(
                    "{}: {}",
                    refusal.reason, refusal.message
                )));
            }
        };
        let api = granted.api.as_ref();
        let target = match resolve_target(obj, api, &previous).await {
            Ok(target) => target,
            Err(SyncError::Zitadel(e)) => return Err(e),
            // A name that no longer resolves: nothing this object can clean up.
            Err(_) => return Ok(()),
        };
        let mut retried = false;
        loop {
            let observed = api.list_metadata(&target).await?;
            let plan = plan::plan(&MetadataMap::new(), &observed, &managed);
            match execute(api, &target, &plan, &mut progress).await {
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
                describe(obj)
            );
            publish(
                ctx,
                obj,
                EventType::Normal,
                Reason::TargetGone,
                "Cleanup",
                &note,
            )
            .await;
            Ok(Action::await_change())
        }
        Err(e) => {
            let message = format!(
                "removing managed keys failed: {e}; set spec.deletionPolicy to Orphan to delete the object without cleanup"
            );
            let outcome = if e.is_transient() {
                Outcome::Retrying {
                    reason: Reason::CleanupFailed,
                    message,
                }
            } else {
                Outcome::Stalled {
                    reason: Reason::CleanupFailed,
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
                    Reason::CleanupFailed,
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
    let identity = identity(obj);
    let me = claim(obj);
    ctx.on_target(&identity)
        .iter()
        .filter(|o| o.meta().deletion_timestamp.is_none() && self::identity(o.as_ref()) == identity)
        .map(|o| claim(o.as_ref()))
        .filter(|c| c.object != me.object)
        .flat_map(|c| c.keys)
        .collect()
}
