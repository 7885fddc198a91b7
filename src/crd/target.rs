//! How a spec names its target: organization and user references, and the resolved forms.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::common::optional_id_schema;
use super::*;

/// How a spec names an organization.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OrgRef {
    /// By id.
    Id(String),
    /// By exact name.
    Name(String),
    /// By a verified domain.
    Domain(String),
}

/// How a spec names a user.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UserRef {
    /// By id.
    Id(String),
    /// By login name (instance-wide).
    LoginName(String),
    /// By user name, within the spec's organization.
    UserName(String),
    /// By email, within the spec's organization.
    Email(String),
}

/// The ZITADEL object a resource writes metadata to, as the spec names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetRef {
    /// An organization.
    Org(OrgRef),
    /// A user, optionally with its organization.
    User {
        /// The user.
        user: UserRef,
        /// The user's organization, if the spec names it.
        org_id: Option<String>,
    },
}

impl TargetRef {
    /// Identity of the metadata store, for conflict detection, given the ids resolved so far (a
    /// user's metadata is the same whatever org header reaches it).
    pub fn identity(&self, status: Option<&MetadataStatus>) -> String {
        match self {
            TargetRef::Org(OrgRef::Id(id)) => format!("org/{id}"),
            TargetRef::Org(other) => match status.and_then(|s| s.organization_id.as_deref()) {
                Some(id) => format!("org/{id}"),
                None => format!("org/{other:?}"),
            },
            TargetRef::User {
                user: UserRef::Id(id),
                ..
            } => format!("user/{id}"),
            TargetRef::User { user, .. } => match status.and_then(|s| s.user_id.as_deref()) {
                Some(id) => format!("user/{id}"),
                None => format!("user/{user:?}"),
            },
        }
    }
}

impl std::fmt::Display for TargetRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetRef::Org(OrgRef::Id(id)) => write!(f, "organization {id}"),
            TargetRef::Org(OrgRef::Name(n)) => write!(f, "organization named {n:?}"),
            TargetRef::Org(OrgRef::Domain(d)) => write!(f, "organization with domain {d:?}"),
            TargetRef::User {
                user: UserRef::Id(id),
                ..
            } => write!(f, "user {id}"),
            TargetRef::User {
                user: UserRef::LoginName(l),
                ..
            } => write!(f, "user with login name {l:?}"),
            TargetRef::User {
                user: UserRef::UserName(u),
                org_id,
            } => {
                write!(
                    f,
                    "user named {u:?} in organization {}",
                    org_id.as_deref().unwrap_or("?")
                )
            }
            TargetRef::User {
                user: UserRef::Email(e),
                org_id,
            } => {
                write!(
                    f,
                    "user with email {e:?} in organization {}",
                    org_id.as_deref().unwrap_or("?")
                )
            }
        }
    }
}

/// `spec.organization`: an organization by id, name or verified domain (exactly one).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.id), has(self.name), has(self.domain)].filter(x, x).size() == 1").message("set exactly one of organization.id, organization.name or organization.domain"))]
pub struct OrganizationReference {
    /// The organization's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_id_schema")]
    pub id: Option<String>,
    /// The organization's exact name; must match exactly one organization the operator can see.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_id_schema")]
    pub name: Option<String>,
    /// One of the organization's verified domains (e.g. `acme.example`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_id_schema")]
    pub domain: Option<String>,
}

impl OrganizationReference {
    /// As an [`OrgRef`].
    pub fn to_ref(&self) -> Option<OrgRef> {
        match (&self.id, &self.name, &self.domain) {
            (Some(id), None, None) => Some(OrgRef::Id(id.clone())),
            (None, Some(n), None) => Some(OrgRef::Name(n.clone())),
            (None, None, Some(d)) => Some(OrgRef::Domain(d.clone())),
            _ => None,
        }
    }
}

/// `spec.user`: a user by id, login name, user name or email (exactly one).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.id), has(self.loginName), has(self.userName), has(self.email)].filter(x, x).size() == 1").message("set exactly one of user.id, user.loginName, user.userName or user.email"))]
pub struct UserReference {
    /// The user's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_id_schema")]
    pub id: Option<String>,
    /// The user's login name (e.g. `alice@acme.example`), searched instance-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_id_schema")]
    pub login_name: Option<String>,
    /// The user name, searched in `spec.organizationId` (required with this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_id_schema")]
    pub user_name: Option<String>,
    /// The email address (case-insensitive), searched in `spec.organizationId` (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_id_schema")]
    pub email: Option<String>,
}

impl UserReference {
    /// As a [`UserRef`].
    pub fn to_ref(&self) -> Option<UserRef> {
        match (&self.id, &self.login_name, &self.user_name, &self.email) {
            (Some(v), None, None, None) => Some(UserRef::Id(v.clone())),
            (None, Some(v), None, None) => Some(UserRef::LoginName(v.clone())),
            (None, None, Some(v), None) => Some(UserRef::UserName(v.clone())),
            (None, None, None, Some(v)) => Some(UserRef::Email(v.clone())),
            _ => None,
        }
    }
}
