//! The sync: validate → read value sources → connection → resolve target → claims → list →
//! plan → execute → read back. Acknowledged writes are recorded in [`Progress`] as they happen.

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt;

use super::sources::{self, SourceError};
use super::target::{self, TargetError};
use super::{Io, Reads, claims};
use crate::connections::{Granted, Refusal};
use crate::crd::{self, DriftPolicy, MetadataResource, MetadataStatus};
use crate::plan::{self, Plan};
use crate::reason::Reason;
use crate::status;
use crate::zitadel::{
    Existence, MetadataMap, ObjectDetails, Relevant, Target, ZitadelApi, ZitadelError,
};

mod error;
mod execute;
mod first;

pub use error::{Confirmed, SyncError};
pub use execute::execute;
use execute::{read_back, write};
pub use first::FirstWrites;

/// What a sync did before it finished or failed; kept even on failure so status never forgets a
/// write ZITADEL acknowledged.
#[derive(Debug, Default)]
pub struct Progress {
    /// Org the calls acted in.
    pub org_id: Option<String>,
    /// User the calls acted on (UserMetadata).
    pub user_id: Option<String>,
    /// Details of the last successful write.
    pub details: Option<ObjectDetails>,
    /// Keys set by this reconcile.
    pub set: BTreeSet<String>,
    /// Keys removed by this reconcile.
    pub removed: BTreeSet<String>,
}

/// The result of a successful sync.
#[derive(Debug, Default)]
pub struct Synced {
    /// Keys now managed by this object.
    pub managed: BTreeSet<String>,
    /// Keys left to an earlier object (key → that object).
    pub conflicts: BTreeMap<String, String>,
    /// Keys that differ from the spec and were not written (driftPolicy `Report`).
    pub drifted: BTreeSet<String>,
    /// `Kind/name@resourceVersion` of the value sources read.
    pub source_versions: Vec<String>,
}

/// driftPolicy Ignore: nothing changed on our side since the last successful sync.
fn unchanged_since_ready<K: MetadataResource>(
    obj: &K,
    previous: &MetadataStatus,
    source_versions: &[String],
) -> bool {
    obj.drift_policy() == DriftPolicy::Ignore
        && previous.observed_generation == obj.meta().generation
        && previous.observed_source_versions == source_versions
        && status::find(&previous.conditions, status::READY).is_some_and(|c| c.status == "True")
}

/// What a sync read and decided before any write: the planning half of [`sync`], shared with the
/// `diff` preview (which stops here and writes nothing).
pub enum Prepared {
    /// driftPolicy `Ignore` and nothing changed on our side since the last successful sync:
    /// ZITADEL is neither read nor written; this is the sync's result.
    Unchanged(Synced),
    /// ZITADEL was read and the writes planned.
    Planned(Box<Planned>),
}

/// The target's metadata as read, and the writes planned for it.
pub struct Planned {
    /// The connection the calls go through.
    pub granted: Granted,
    /// The org/user the calls act on.
    pub target: Target,
    /// Desired keys and values, without the keys an earlier object claims.
    pub desired: MetadataMap,
    /// Keys this object manages (`status.managedKeys`), without the keys an earlier object
    /// claims.
    pub managed: BTreeSet<String>,
    /// What ZITADEL holds.
    pub observed: MetadataMap,
    /// Keys of the spec left to an earlier object (key → that object).
    pub conflicts: BTreeMap<String, String>,
    /// `Kind/name@resourceVersion` of the value sources read.
    pub source_versions: Vec<String>,
    /// The writes that make ZITADEL match (`plan::plan(desired, observed, managed)`).
    pub plan: Plan,
}

impl Planned {
    /// The sync's result once the plan is executed (`Enforce`, `Ignore`) or only reported
    /// (`Report`: nothing is written, keys that already match are adopted).
    pub fn synced(&self, policy: DriftPolicy) -> Synced {
        if policy == DriftPolicy::Report {
            return report_only(
                &self.desired,
                &self.observed,
                &self.managed,
                self.conflicts.clone(),
                self.source_versions.clone(),
            );
        }
        Synced {
            managed: self.desired.keys().cloned().collect(),
            conflicts: self.conflicts.clone(),
            drifted: BTreeSet::new(),
            source_versions: self.source_versions.clone(),
        }
    }
}

/// Whether this sync is the object's first successful one: it manages no key and was never
/// Ready. Its writes get no `MetadataSet` Event (the `Ready` condition says the same; at 10,000
/// creates one Event each was ~8 % of the operator's kube-apiserver cost); later writes do.
pub fn first_sync(previous: &MetadataStatus) -> bool {
    previous.managed_keys.is_empty()
        && status::find(&previous.conditions, status::READY).is_none_or(|c| c.status != "True")
}

/// Whether the operator has never reported on this object: no condition and no managed key in
/// its status (a new object, or one whose first status write never landed).
pub fn never_reported(previous: &MetadataStatus) -> bool {
    previous.conditions.is_empty() && previous.managed_keys.is_empty()
}

/// Whether [`prepare_with`] lists the target before planning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    /// Always, and plan from what was listed (a retry, a resync).
    Always,
    /// List (the `diff` preview shows what ZITADEL holds) but plan like the controller's first
    /// write of a new object ([`Listing::SkipForNewObjects`]): every desired key is set, even
    /// one that already holds its value, so the preview shows exactly what the operator sends.
    Preview,
    /// Not for an object the operator [never reported on](never_reported) that may write
    /// (driftPolicy `Enforce` or `Ignore`): it manages nothing yet, so the plan removes nothing
    /// and sets every desired key whatever ZITADEL holds (ZITADEL has no "not changed" error for
    /// metadata: a key that already has the value is set to itself). The read-back after the
    /// write still verifies every key, so a created object costs 2 ZITADEL calls (bulk set +
    /// read-back) instead of 3.
    SkipForNewObjects,
}

/// The pipeline. Records acknowledged writes in `progress` as it goes.
pub async fn sync<K: MetadataResource>(
    obj: &K,
    io: &Io<'_, K>,
    previous: &MetadataStatus,
    progress: &mut Progress,
) -> Result<Synced, SyncError> {
    let uid = obj.uid().unwrap_or_default();
    let listing = if io
        .first_writes
        .may_skip_listing(&uid, never_reported(previous))
    {
        Listing::SkipForNewObjects
    } else {
        Listing::Always
    };
    let planned = match prepare_with(obj, &io.reads(), previous, progress, listing).await? {
        Prepared::Unchanged(synced) => return Ok(synced),
        Prepared::Planned(planned) => planned,
    };
    let synced = planned.synced(obj.drift_policy());
    if obj.drift_policy() == DriftPolicy::Report {
        return Ok(synced);
    }
    let Planned {
        granted,
        target,
        desired,
        managed,
        observed,
        ..
    } = *planned;
    let api = granted.api.as_ref();
    let written = match write(api, &target, &desired, &managed, observed, progress).await {
        Ok(plan) => read_back(api, &target, &plan).await,
        Err(e) => Err(e),
    };
    match written {
        Ok(()) => Ok(synced),
        Err(SyncError::Zitadel(cause)) if cause.needs_existence_proof() => {
            Err(ambiguous(api, target, cause).await)
        }
        Err(e) => Err(e),
    }
}

/// Everything before the first write: validate → read value sources → connection → resolve
/// target → claims → list (as `listing` says) → plan. Only reads (Kubernetes through `reads`,
/// ZITADEL through the connection's client); records the target in `progress`.
pub async fn prepare_with<K: MetadataResource>(
    obj: &K,
    reads: &Reads<'_, K>,
    previous: &MetadataStatus,
    progress: &mut Progress,
    listing: Listing,
) -> Result<Prepared, SyncError> {
    let spec = crd::validate(&obj.entries()).map_err(SyncError::Invalid)?;
    let ns = obj.namespace().unwrap_or_default();
    let sourced = sources::resolve(reads.sources, &ns, &spec.sourced).await?;
    let source_versions = sourced.versions;
    let mut desired = spec.inline;
    desired.extend(sourced.values);

    // The connection: refused (missing, not Ready, namespace not allowed) → no ZITADEL call.
    let granted = reads
        .connections
        .for_object(&ns, obj.connection_ref())
        .await
        .map_err(SyncError::Refused)?;
    let api = granted.api.as_ref();

    // Leave ZITADEL alone (not even read it) when nothing changed on our side (driftPolicy
    // Ignore).
    if unchanged_since_ready(obj, previous, &source_versions) {
        progress.org_id = previous.organization_id.clone();
        progress.user_id = previous.user_id.clone();
        return Ok(Prepared::Unchanged(Synced {
            managed: previous.managed_keys.iter().cloned().collect(),
            source_versions,
            ..Synced::default()
        }));
    }

    let target = target::resolve(obj, api, previous).await?;
    if !granted.allowed.allows(target.org_id()) {
        return Err(SyncError::Refused(Refusal {
            reason: Reason::TargetNotAllowed,
            message: format!(
                "{} does not allow namespace {ns} to target organization {}",
                granted.name,
                target.org_id()
            ),
            transient: false,
        }));
    }
    progress.org_id = Some(target.org_id().to_string());
    if let Target::User { user_id, .. } = &target {
        progress.user_id = Some(user_id.clone());
    }

    // Keys an earlier object on the same target already claims are not ours to write or remove.
    let conflicts = claims::conflicts(obj, &reads.neighbours.on_target(obj).await);
    let (desired, managed) = unclaimed(desired, previous, &conflicts);

    let blind = listing != Listing::Always
        && obj.drift_policy() != DriftPolicy::Report
        && never_reported(previous)
        && managed.is_empty();
    let observed = if blind && listing == Listing::SkipForNewObjects {
        MetadataMap::new()
    } else {
        observe(api, &target, &desired, &managed).await?
    };
    let plan = if blind {
        plan::plan(&desired, &MetadataMap::new(), &managed)
    } else {
        plan::plan(&desired, &observed, &managed)
    };
    Ok(Prepared::Planned(Box::new(Planned {
        granted,
        target,
        desired,
        managed,
        observed,
        conflicts,
        source_versions,
        plan,
    })))
}

/// What ZITADEL holds of the keys a sync must see exactly; an answer that may mean "the target
/// is gone" comes back with what ZITADEL says about the target's existence.
async fn observe(
    api: &dyn ZitadelApi,
    target: &Target,
    desired: &MetadataMap,
    managed: &BTreeSet<String>,
) -> Result<MetadataMap, SyncError> {
    match list_relevant(api, target, &relevant_keys(desired, managed)).await {
        Ok(observed) => Ok(observed),
        Err(cause) if cause.needs_existence_proof() => {
            Err(ambiguous(api, target.clone(), cause).await)
        }
        Err(e) => Err(e.into()),
    }
}

/// The keys a sync must see exactly: desired ∪ managed (other keys of the target are not
/// ours and are never touched).
fn relevant_keys(desired: &MetadataMap, managed: &BTreeSet<String>) -> BTreeSet<String> {
    desired.keys().chain(managed.iter()).cloned().collect()
}

/// The target's metadata, exact for `relevant` (see [`Relevant::Only`]).
pub(super) async fn list_relevant(
    api: &dyn ZitadelApi,
    target: &Target,
    relevant: &BTreeSet<String>,
) -> Result<MetadataMap, ZitadelError> {
    let listing = api
        .list_metadata_for(target, Relevant::Only(relevant))
        .await?;
    tracing::debug!(
        org = target.org_id(),
        calls = listing.calls,
        keys = listing.metadata.len(),
        complete = listing.complete,
        "listed metadata"
    );
    Ok(listing.metadata)
}

/// An answer that may mean "the target is gone" (see [`ZitadelError::needs_existence_proof`]),
/// with what ZITADEL says about the target's existence.
async fn ambiguous(api: &dyn ZitadelApi, target: Target, cause: ZitadelError) -> SyncError {
    let check = confirm(api, &target).await;
    SyncError::Ambiguous {
        target,
        cause,
        check,
    }
}

/// Ask ZITADEL whether `target` exists after an ambiguous answer; for a user that exists, also
/// which organization it is in (v1's `COMMAND-uXHNj` also means "in another organization").
pub(super) async fn confirm(api: &dyn ZitadelApi, target: &Target) -> Confirmed {
    match api.target_exists(target).await {
        Ok(Existence::Gone) => Confirmed::Gone,
        Ok(Existence::Exists) => {
            let user_org = match target {
                Target::User { user_id, .. } => api.user_organization(user_id).await.ok(),
                Target::Org { .. } => None,
            };
            Confirmed::Exists { user_org }
        }
        Err(e) => Confirmed::Unknown(e),
    }
}

/// The desired and the managed keys without those an earlier object claims.
fn unclaimed(
    desired: MetadataMap,
    previous: &MetadataStatus,
    conflicts: &BTreeMap<String, String>,
) -> (MetadataMap, BTreeSet<String>) {
    let desired = desired
        .into_iter()
        .filter(|(k, _)| !conflicts.contains_key(k))
        .collect();
    let managed = previous
        .managed_keys
        .iter()
        .filter(|k| !conflicts.contains_key(*k))
        .cloned()
        .collect();
    (desired, managed)
}

/// driftPolicy `Report`: nothing is written; keys that already match are adopted.
fn report_only(
    desired: &MetadataMap,
    observed: &MetadataMap,
    managed: &BTreeSet<String>,
    conflicts: BTreeMap<String, String>,
    source_versions: Vec<String>,
) -> Synced {
    let plan = plan::plan(desired, observed, managed);
    let drifted: BTreeSet<String> = plan.set.keys().chain(plan.remove.iter()).cloned().collect();
    let mut now_managed: BTreeSet<String> = managed
        .iter()
        .filter(|k| observed.contains_key(*k))
        .cloned()
        .collect();
    now_managed.extend(plan.unchanged.iter().cloned());
    Synced {
        managed: now_managed,
        conflicts,
        drifted,
        source_versions,
    }
}
