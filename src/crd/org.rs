//! The `OrgMetadata` kind.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{
    MetadataResource, MetadataSpecCommon, MetadataStatus, OrgRef, OrganizationReference, TargetRef,
};

/// Metadata of one ZITADEL organization, kept in sync by the operator.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "metadata.zitadel-operator.dev",
    version = "v1alpha1",
    kind = "OrgMetadata",
    plural = "orgmetadatas",
    singular = "orgmetadata",
    shortname = "orgmd",
    category = "zitadel",
    namespaced,
    status = "MetadataStatus",
    doc = "Declares key/value metadata of one ZITADEL organization. The operator sets the listed keys with ZITADEL's bulk calls, removes keys it manages once they leave the list, and leaves all other keys alone."
)]
#[x_kube(validation = Rule::new("has(self.organizationId) != has(self.organization)").message("set exactly one of organizationId or organization"))]
#[x_kube(validation = Rule::new("has(self.organizationId) == has(oldSelf.organizationId) && has(self.organization) == has(oldSelf.organization)").message("the target (organizationId / organization) is immutable; create a new object to target another organization"))]
#[serde(rename_all = "camelCase")]
pub struct OrgMetadataSpec {
    /// ID of the ZITADEL organization whose metadata this object manages (sent as the
    /// `x-zitadel-orgid` header). Set this or `organization`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::common::optional_id_schema")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("organizationId is immutable; create a new object to target another organization"))]
    pub organization_id: Option<String>,

    /// The organization by id, exact name or verified domain, resolved once through ZITADEL's
    /// search (the id found is kept in `status.organizationId`). Set this or `organizationId`.
    /// Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("organization is immutable; create a new object to target another organization"))]
    pub organization: Option<OrganizationReference>,

    /// The entries, policies, `suspend` and connection, as every metadata kind has them.
    #[serde(flatten)]
    pub common: MetadataSpecCommon,
}

impl MetadataResource for OrgMetadata {
    const CONTROLLER: &'static str = "orgmetadata";
    const KIND: &'static str = "OrgMetadata";

    fn target_ref(&self) -> Option<TargetRef> {
        match (&self.spec.organization_id, &self.spec.organization) {
            (Some(id), None) => Some(TargetRef::Org(OrgRef::Id(id.clone()))),
            (None, Some(reference)) => reference.to_ref().map(TargetRef::Org),
            _ => None,
        }
    }

    fn common(&self) -> &MetadataSpecCommon {
        &self.spec.common
    }

    fn common_mut(&mut self) -> &mut MetadataSpecCommon {
        &mut self.spec.common
    }

    fn status(&self) -> Option<&MetadataStatus> {
        self.status.as_ref()
    }

    fn status_mut(&mut self) -> Option<&mut MetadataStatus> {
        self.status.as_mut()
    }
}
