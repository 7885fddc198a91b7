//! The spec fields both metadata kinds share, embedded in each spec with `#[serde(flatten)]`
//! (the generated schema lists them beside the kind's own target fields).

use serde::{Deserialize, Serialize};

use super::{ConnectionRef, DeletionPolicy, DriftPolicy, MetadataEntry};

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
