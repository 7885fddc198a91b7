//! What both metadata kinds share: the spec fields, embedded in each spec with
//! `#[serde(flatten)]` (the generated schema lists them beside the kind's own target fields), and
//! the [`MetadataResource`] trait the reconciler is written against.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::{
    ConnectionRef, DeletionPolicy, DriftPolicy, EntryViews, MetadataEntry, MetadataStatus,
    PackedEntries, TargetRef,
};

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

    /// The entries of a cached copy in compact form, `metadata` then being empty (see
    /// [`MetadataResource::pack`]). Never serialised and not part of the CRD: only the
    /// operator's caches set it.
    #[serde(skip)]
    #[schemars(skip)]
    pub packed: Option<PackedEntries>,
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
    /// Current status, if any. Of a cached copy it is packed: the ids, `observedGeneration` and
    /// `managedKeyCount` are there, the conditions are read with [`MetadataStatus::condition`];
    /// what the reconcile compares and writes is read with [`MetadataResource::full_status`].
    fn status(&self) -> Option<&MetadataStatus>;
    /// The status, to change in place.
    fn status_mut(&mut self) -> Option<&mut MetadataStatus>;
    /// The complete status (unpacked from a cached copy's compact form): what the reconcile
    /// starts from, compares its new status with and keeps fields of.
    fn full_status(&self) -> Option<MetadataStatus> {
        let mut status = self.status().cloned()?;
        status.unpack();
        Some(status)
    }

    /// The desired entries: borrowed, or unpacked from a cached copy's compact form (a copy;
    /// the reconcile unpacks its object once up front, see [`MetadataResource::unpacked`]).
    fn entries(&self) -> Cow<'_, [MetadataEntry]> {
        match &self.common().packed {
            Some(packed) => Cow::Owned(packed.unpack()),
            None => Cow::Borrowed(&self.common().metadata),
        }
    }
    /// The keys and `valueFrom` source names of the entries, packed or not, without copying
    /// (what the readers of cached objects need: key claims, the dependents of a Secret).
    fn entry_views(&self) -> EntryViews<'_> {
        match &self.common().packed {
            Some(packed) => EntryViews::Packed(packed.views()),
            None => EntryViews::Entries(self.common().metadata.iter()),
        }
    }
    /// The desired entries, to change in place (e.g. to drop the values from a cached copy
    /// that only needs the keys); unpacks them first.
    fn entries_mut(&mut self) -> &mut Vec<MetadataEntry> {
        self.unpack();
        &mut self.common_mut().metadata
    }
    /// Whether the entries or the status are in compact form (a cached copy).
    fn is_packed(&self) -> bool {
        self.common().packed.is_some() || self.status().is_some_and(MetadataStatus::is_packed)
    }
    /// Move the entries ([`PackedEntries`]) and the parts of the status only the reconcile
    /// reads ([`MetadataStatus::pack`]) into their compact forms: how the controllers' caches
    /// hold objects. [`MetadataResource::unpack`] restores them. A part whose compact form
    /// would not restore it exactly stays as it is.
    fn pack(&mut self) {
        let common = self.common_mut();
        if common.packed.is_none() {
            let packed = PackedEntries::pack(&common.metadata);
            // Kept packed only when the buffer restores the entries exactly (checked in release
            // builds too: the entries decide which keys a reconcile writes and removes).
            if packed.unpack() == common.metadata {
                common.packed = Some(packed);
                common.metadata = Vec::new();
            } else {
                tracing::error!(
                    "entries could not be packed losslessly; they are cached as they are"
                );
            }
        }
        if let Some(status) = self.status_mut() {
            status.pack();
        }
    }
    /// Restore the entries and the status from their compact forms (no-op when not packed).
    fn unpack(&mut self) {
        let common = self.common_mut();
        if let Some(packed) = common.packed.take() {
            common.metadata = packed.unpack();
        }
        if let Some(status) = self.status_mut() {
            status.unpack();
        }
    }
    /// A copy with the entries and status restored: the object exactly as the API server sent
    /// it (less what the caches strip from its metadata).
    fn unpacked(&self) -> Self {
        let mut copy = self.clone();
        copy.unpack();
        copy
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
