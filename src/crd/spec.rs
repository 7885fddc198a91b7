//! What both metadata kinds share: the spec fields, embedded in each spec with
//! `#[serde(flatten)]` (the generated schema lists them beside the kind's own target fields), and
//! the [`MetadataResource`] trait the reconciler is written against.

use serde::{Deserialize, Serialize};

use super::{ConnectionRef, DeletionPolicy, DriftPolicy, MetadataEntry, MetadataStatus, TargetRef};

/// What an `OrgMetadata` or `UserMetadata` declares besides its target: the entries, the
/// policies, `suspend` and the connection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetadataSpecCommon {
    /// The metadata entries. Keys must be unique.
    #[serde(default)]
    #[schemars(length(max = 1000))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["key"]))]
    pub metadata: Vec<MetadataEntry>,

    /// What to do with the managed keys when this object is deleted: `Delete` (default) removes
    /// them from ZITADEL, `Orphan` leaves them.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// What to do when ZITADEL differs from the spec: `Enforce` (default) repairs it, `Report`
    /// never writes and lists the differing keys in a `Drifted` condition, `Ignore` writes only
    /// when the spec or a referenced Secret/ConfigMap changes.
    #[serde(default)]
    pub drift_policy: DriftPolicy,

    /// Pause reconciliation: no ZITADEL calls until set back to false. Deletion still runs.
    #[serde(default)]
    pub suspend: bool,

    /// The ZitadelConnection (same namespace) or ClusterZitadelConnection to use. When
    /// omitted, the operator's default connection from its flags is used (single-tenant mode);
    /// without one, the object is refused with `ConnectionNotFound`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_ref: Option<ConnectionRef>,
}

/// What the reconciler needs from either kind.
pub trait MetadataResource:
    kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + Serialize
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// Short controller name used in logs, metrics and events.
    const CONTROLLER: &'static str;
    /// The kind, as in messages (`OrgMetadata`, `UserMetadata`).
    const KIND: &'static str;
    /// The target of the writes, as the spec names it (`None` if the spec names none, which
    /// the CRD's CEL rules prevent).
    fn target_ref(&self) -> Option<TargetRef>;
    /// The fields every metadata kind shares (entries, policies, `suspend`, connection).
    fn common(&self) -> &MetadataSpecCommon;
    /// The shared fields, to change in place.
    fn common_mut(&mut self) -> &mut MetadataSpecCommon;
    /// Current status, if any.
    fn status(&self) -> Option<&MetadataStatus>;

    /// The desired entries.
    fn entries(&self) -> &[MetadataEntry] {
        &self.common().metadata
    }
    /// The desired entries, to change in place (e.g. to drop the values from a cached copy
    /// that only needs the keys).
    fn entries_mut(&mut self) -> &mut Vec<MetadataEntry> {
        &mut self.common_mut().metadata
    }
    /// Deletion policy.
    fn deletion_policy(&self) -> DeletionPolicy {
        self.common().deletion_policy
    }
    /// Drift policy.
    fn drift_policy(&self) -> DriftPolicy {
        self.common().drift_policy
    }
    /// Whether reconciliation is paused.
    fn suspended(&self) -> bool {
        self.common().suspend
    }
    /// The connection to use (`None`: the operator's default connection).
    fn connection_ref(&self) -> Option<&ConnectionRef> {
        self.common().connection_ref.as_ref()
    }
}
