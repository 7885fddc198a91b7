//! One object → what the controller's next reconcile of it would do, through the controller's
//! own steps: [`sync::prepare_with`] (everything before the first write) and [`outcome::decide`]
//! (the conditions it would report). Nothing here writes.

use std::collections::BTreeSet;

use kube::ResourceExt;

use crate::controller::Settings;
use crate::controller::metadata::sync::{self, Listing, Planned, Prepared, Progress};
use crate::controller::metadata::{Reads, outcome};
use crate::crd::MetadataResource;
use crate::status::Outcome;

/// What the next reconcile would do.
pub enum Verdict {
    /// `spec.suspend`: no ZITADEL call at all.
    Suspended,
    /// The object is being deleted: the cleanup runs instead of a sync (not previewed).
    Deleting,
    /// driftPolicy `Ignore` and nothing changed since the last successful sync: ZITADEL is
    /// neither read nor written.
    Unchanged,
    /// ZITADEL was read and the writes planned; `outcome` is what the conditions would say once
    /// the plan ran.
    Planned {
        /// The read state and the plan.
        planned: Box<Planned>,
        /// The conditions after the sync.
        outcome: Outcome,
    },
    /// The sync would stop before writing (or could not be previewed); `outcome` holds the
    /// reason and message its conditions would carry.
    Failed {
        /// The conditions after the failed sync.
        outcome: Outcome,
    },
}

/// The preview of one object.
pub struct ObjectPreview {
    /// What would happen.
    pub verdict: Verdict,
    /// The organization the calls would act in, once resolved.
    pub org_id: Option<String>,
    /// The user the calls would act on (UserMetadata), once resolved.
    pub user_id: Option<String>,
    /// `status.managedKeys` before the reconcile.
    pub previously_managed: BTreeSet<String>,
}

/// Preview the next reconcile of `obj` (whose status is the live one: managed keys, resolved
/// ids), reading through `reads`. Same order as the controller: deletion, suspension, sync.
pub async fn preview<K: MetadataResource>(
    obj: &K,
    reads: &Reads<'_, K>,
    settings: &Settings,
) -> ObjectPreview {
    let previous = obj.full_status().unwrap_or_default();
    let previously_managed = previous.managed_keys.iter().cloned().collect();
    let mut progress = Progress::default();
    let verdict = if obj.meta().deletion_timestamp.is_some() {
        Verdict::Deleting
    } else if obj.suspended() {
        Verdict::Suspended
    } else {
        match sync::prepare_with(obj, reads, &previous, &mut progress, Listing::Preview).await {
            Ok(Prepared::Unchanged(_)) => Verdict::Unchanged,
            Ok(Prepared::Planned(planned)) => {
                let synced = planned.synced(obj.drift_policy());
                let decision = outcome::decide(obj, settings, &previous, &progress, Ok(synced));
                Verdict::Planned {
                    planned,
                    outcome: decision.outcome,
                }
            }
            Err(error) => {
                tracing::debug!(
                    namespace = %obj.namespace().unwrap_or_default(),
                    name = %obj.name_any(),
                    "preview stopped before planning"
                );
                let decision = outcome::decide(obj, settings, &previous, &progress, Err(error));
                Verdict::Failed {
                    outcome: decision.outcome,
                }
            }
        }
    };
    ObjectPreview {
        verdict,
        org_id: progress.org_id,
        user_id: progress.user_id,
        previously_managed,
    }
}
