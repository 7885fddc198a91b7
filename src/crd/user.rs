//! The `UserMetadata` kind.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{
    MetadataResource, MetadataSpecCommon, MetadataStatus, TargetRef, UserRef, UserReference,
};

/// Metadata of one ZITADEL user, kept in sync by the operator.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "metadata.zitadel-operator.dev",
    version = "v1alpha1",
    kind = "UserMetadata",
    plural = "usermetadatas",
    singular = "usermetadata",
    shortname = "usermd",
    category = "zitadel",
    namespaced,
    status = "MetadataStatus",
    doc = "Declares key/value metadata of one ZITADEL user (human or machine). The operator sets the listed keys with ZITADEL's bulk calls, removes keys it manages once they leave the list, and leaves all other keys alone."
)]
#[x_kube(validation = Rule::new("!has(oldSelf.organizationId) || (has(self.organizationId) && self.organizationId == oldSelf.organizationId)").message("organizationId is immutable once set"))]
#[x_kube(validation = Rule::new("has(self.userId) != has(self.user)").message("set exactly one of userId or user"))]
#[x_kube(validation = Rule::new("has(self.userId) == has(oldSelf.userId) && has(self.user) == has(oldSelf.user)").message("the target (userId / user) is immutable; create a new object to target another user"))]
#[x_kube(validation = Rule::new("!has(self.user) || !(has(self.user.userName) || has(self.user.email)) || has(self.organizationId)").message("user.userName and user.email are searched within organizationId, which must be set"))]
#[serde(rename_all = "camelCase")]
pub struct UserMetadataSpec {
    /// ID of the ZITADEL user whose metadata this object manages. Set this or `user`.
    /// Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::common::optional_id_schema")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("userId is immutable; create a new object to target another user"))]
    pub user_id: Option<String>,

    /// The user by id, login name (instance-wide), user name or email (both searched in
    /// `organizationId`, which is then required), resolved once through ZITADEL's search (the
    /// id found is kept in `status.userId`). Set this or `userId`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("user is immutable; create a new object to target another user"))]
    pub user: Option<UserReference>,

    /// ID of the user's organization (sent as `x-zitadel-orgid`). ZITADEL only accepts user
    /// metadata writes in the user's own organization; when omitted, the operator looks the
    /// user up once and records the organization in `status.organizationId`. May be added
    /// later, but not changed or removed once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::common::optional_id_schema")]
    pub organization_id: Option<String>,

    /// The entries, policies, `suspend` and connection, as every metadata kind has them.
    #[serde(flatten)]
    pub common: MetadataSpecCommon,
}

impl MetadataResource for UserMetadata {
    const CONTROLLER: &'static str = "usermetadata";
    const KIND: &'static str = "UserMetadata";

    fn target_ref(&self) -> Option<TargetRef> {
        let user = match (&self.spec.user_id, &self.spec.user) {
            (Some(id), None) => UserRef::Id(id.clone()),
            (None, Some(reference)) => reference.to_ref()?,
            _ => return None,
        };
        Some(TargetRef::User {
            user,
            org_id: self.spec.organization_id.clone(),
        })
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
