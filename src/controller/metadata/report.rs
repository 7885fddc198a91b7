//! Reporting: the status an outcome gives (pure), and the Events. Status and Events leave the
//! process through [`Report`].

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::{Api, Client, ResourceExt};

use super::sync::Progress;
use super::target::describe;
use crate::controller::FIELD_MANAGER;
use crate::crd::{MetadataResource, MetadataStatus};
use crate::reason::Reason;
use crate::status::{self, Outcome};

/// One Event about an object. The note names keys, never values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// Warning (else Normal).
    pub warning: bool,
    /// Why.
    pub reason: Reason,
    /// What the operator was doing (`Reconcile`, `Cleanup`, `BulkSet`, …).
    pub action: &'static str,
    /// Human note (cut to 1,000 characters when published).
    pub note: String,
}

/// Where status and Events go (the Kubernetes API in production, a list in unit tests).
#[async_trait::async_trait]
pub trait Report<K>: Send + Sync {
    /// Write `status` (field manager `zitadel-metadata-operator`; [`KubeReport`] says how).
    async fn write_status(&self, obj: &K, status: &MetadataStatus) -> Result<(), kube::Error>;
    /// Publish an Event (failures are logged, not returned).
    async fn event(&self, obj: &K, notice: Notice);
}

/// [`Report`] through the Kubernetes API.
pub struct KubeReport {
    client: Client,
    recorder: Recorder,
    /// The status `PUT` was refused for lack of the `update` verb on `<kind>/status` (RBAC of an
    /// older chart or manifest): from then on the status is applied (`patch`) directly.
    put_forbidden: std::sync::atomic::AtomicBool,
}

impl KubeReport {
    /// Reports with `client`.
    pub fn new(client: Client) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), Reporter::from(FIELD_MANAGER)),
            client,
            put_forbidden: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

#[async_trait::async_trait]
impl<K: MetadataResource> Report<K> for KubeReport {
    /// A `PUT` of the status subresource, conditional on the object's `resourceVersion` as the
    /// reconcile read it; when the object changed since (`409 Conflict`: an edit meanwhile, or
    /// a cache that has not seen the operator's previous write yet), a forced server-side apply
    /// instead, as before. The status is built from what this reconcile did in ZITADEL, so it is
    /// written either way; a newer generation is reconciled next and `observedGeneration` says
    /// which one this status describes.
    ///
    /// Why not server-side apply every time: a status `PUT` costs kube-apiserver + etcd about a
    /// quarter less CPU (no YAML decode of an apply body, no structured merge; `bench
    /// --write-costs`, `docs/perf-findings-13.md` section 1), and the status write is the one
    /// Kubernetes write a created object costs. The body carries only `apiVersion`, `kind`,
    /// name, namespace, `resourceVersion`, `uid` and the status: the status subresource keeps
    /// the stored spec and metadata. Conditions of types the operator does not write (another
    /// client's) are carried along in the `PUT` as they were read and left out of the apply
    /// (their field manager owns them), so both leave the same status.
    ///
    /// Without the `update` verb on the status subresource (RBAC older than this operator: the
    /// chart grants `patch` and `update`), the first refused `PUT` logs a warning and every
    /// later status write is applied directly.
    async fn write_status(&self, obj: &K, status: &MetadataStatus) -> Result<(), kube::Error> {
        use std::sync::atomic::Ordering;
        let ns = obj.namespace().unwrap_or_default();
        let name = obj.name_any();
        let api: Api<K> = Api::namespaced(self.client.clone(), &ns);
        let version = obj.meta().resource_version.as_deref();
        if let Some(version) = version.filter(|_| !self.put_forbidden.load(Ordering::Relaxed)) {
            let body = serde_json::json!({
                "apiVersion": K::api_version(&()),
                "kind": K::kind(&()),
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "resourceVersion": version,
                    "uid": obj.meta().uid,
                },
                "status": status,
            });
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PostParams::default()
            };
            match api
                .replace_subresource("status", &name, &params, &body)
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    tracing::debug!(
                        object = %name,
                        "status write: the object changed since it was read; applying the status instead"
                    );
                }
                Err(kube::Error::Api(e)) if e.code == 403 => {
                    if !self.put_forbidden.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            kind = %K::kind(&()),
                            "the operator may not `update` {}/status (RBAC grants `patch` only?): status is \
                             written by server-side apply from now on, which costs the API server more; \
                             grant `update` on the status subresource (the Helm chart does)",
                            K::plural(&()),
                        );
                    }
                }
                Err(e) => return Err(e),
            }
        }
        // Only the operator's own conditions: another client's belong to its field manager, and
        // a forced apply of them would take them over (its own apply could no longer remove
        // them).
        let mut own = status.clone();
        own.conditions.retain(is_own_condition);
        let patch = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": own,
        });
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        Ok(())
    }

    /// A write Event (MetadataSet / MetadataRemoved) gets an Event of its own naming its keys:
    /// the shared recorder would fold a second write within six minutes into the first Event's
    /// series (keeping the first note), and it keeps every Event it published for six minutes —
    /// at 10,000 objects converging that cache was a third of the operator's memory. A recorder
    /// without history does neither.
    async fn event(&self, obj: &K, notice: Notice) {
        let fresh;
        let recorder = if matches!(notice.reason, Reason::MetadataSet | Reason::MetadataRemoved) {
            fresh = Recorder::new(self.client.clone(), Reporter::from(FIELD_MANAGER));
            &fresh
        } else {
            &self.recorder
        };
        let event = KubeEvent {
            type_: if notice.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: notice.reason.to_string(),
            note: Some(notice.note.chars().take(1000).collect()),
            action: notice.action.to_string(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(controller = K::CONTROLLER, name = obj.name_any(), error = %e, "cannot publish event");
        }
    }
}

/// Key names for events (never values), shortened to fit the 1 kB event note.
pub fn key_list(keys: &BTreeSet<String>) -> String {
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

/// The status after a reconcile: ids and write details from `progress` (else kept), the managed
/// keys, and the conditions of `outcome`. `observedSourceVersions` is left empty for the caller.
pub fn build_status<K: MetadataResource>(
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
        conditions: with_foreign(
            status::conditions(&previous.conditions, outcome, generation, &now),
            previous,
        ),
        packed: None,
    }
}

/// The condition types the operator writes on its objects. A condition of any other type in
/// `status.conditions` was added by another client and is kept as it is: the status `PUT`
/// replaces the whole status, and a status that differed only by it would be written again on
/// every resync.
const OWN_CONDITIONS: [&str; 4] = [
    status::READY,
    status::RECONCILING,
    status::STALLED,
    status::DRIFTED,
];

/// Whether the operator writes conditions of `condition`'s type.
fn is_own_condition(condition: &Condition) -> bool {
    OWN_CONDITIONS.contains(&condition.type_.as_str())
}

/// `own` followed by the conditions of `previous` whose types the operator does not write.
fn with_foreign(own: Vec<Condition>, previous: &MetadataStatus) -> Vec<Condition> {
    let mut all = own;
    all.extend(
        previous
            .conditions
            .iter()
            .filter(|c| !is_own_condition(c))
            .cloned(),
    );
    all
}

/// Add one of the operator's own conditions to `status`: after the others of its own, before
/// those of other clients (the order a status the operator wrote has).
pub fn add_own_condition(status: &mut MetadataStatus, condition: Condition) {
    let at = status
        .conditions
        .iter()
        .position(|c| !is_own_condition(c))
        .unwrap_or(status.conditions.len());
    status.conditions.insert(at, condition);
}

/// The `Drifted` condition of driftPolicy `Report` (True with the differing keys, else False).
pub fn drifted_condition<K: MetadataResource>(
    obj: &K,
    previous: &MetadataStatus,
    drifted: &BTreeSet<String>,
) -> Condition {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let (state, reason, message) = if drifted.is_empty() {
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
    status::condition(
        &previous.conditions,
        status::DRIFTED,
        state,
        reason,
        &message,
        obj.meta().generation,
        &now,
    )
}

/// The Event a new outcome is announced with, if any (failures and drift are Warnings).
pub fn outcome_notice(outcome: &Outcome) -> Option<Notice> {
    match outcome {
        Outcome::Stalled { reason, message } | Outcome::Retrying { reason, message } => {
            Some(Notice {
                warning: true,
                reason: *reason,
                action: "Reconcile",
                note: message.clone(),
            })
        }
        Outcome::Drifted { message } => Some(Notice {
            warning: true,
            reason: Reason::Drifted,
            action: "Reconcile",
            note: message.clone(),
        }),
        Outcome::Ready { .. } | Outcome::Suspended { .. } | Outcome::Deleting { .. } => None,
    }
}

/// The write Events of `progress`: one per kind of write, naming the keys.
pub fn write_notices<K: MetadataResource>(obj: &K, progress: &Progress) -> Vec<Notice> {
    let target = describe(obj);
    let mut out = Vec::new();
    if !progress.set.is_empty() {
        out.push(Notice {
            warning: false,
            reason: Reason::MetadataSet,
            action: "BulkSet",
            note: format!(
                "Set {} key(s) on {target}: {}",
                progress.set.len(),
                key_list(&progress.set)
            ),
        });
    }
    if !progress.removed.is_empty() {
        out.push(Notice {
            warning: false,
            reason: Reason::MetadataRemoved,
            action: "BulkRemove",
            note: format!(
                "Removed {} key(s) from {target}: {}",
                progress.removed.len(),
                key_list(&progress.removed)
            ),
        });
    }
    out
}
