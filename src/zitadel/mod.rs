//! ZITADEL Management API v1 client for organization and user metadata.
//!
//! [`ZitadelApi`] is the seam the reconciler is written against; [`HttpClient`] implements it over
//! HTTP/JSON as described by ZITADEL's protos (`shared/zitadel-api.md`). A future v2-API client
//! can implement the same trait.

mod error;
mod http;
mod jwt;
mod token;

use std::collections::BTreeMap;

pub use error::{ZitadelError, code, ids};
pub use http::{ClientConfig, HttpClient, MAX_RESPONSE_BYTES, RateLimit};
pub use jwt::{JwtProfile, KeyFile, KeyFileError};
pub use token::TokenSource;

use serde::{Deserialize, Deserializer, Serialize};

/// Where a metadata call acts: the org context (`x-zitadel-orgid`) and, for users, the user.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// Metadata of the organization `org_id`.
    Org {
        /// Organization id, sent as `x-zitadel-orgid`.
        org_id: String,
    },
    /// Metadata of user `user_id`, which belongs to organization `org_id`.
    User {
        /// The user's organization, sent as `x-zitadel-orgid`.
        org_id: String,
        /// User id.
        user_id: String,
    },
}

impl Target {
    /// The organization sent as `x-zitadel-orgid`.
    pub fn org_id(&self) -> &str {
        match self {
            Target::Org { org_id } | Target::User { org_id, .. } => org_id,
        }
    }
}

/// `details` of a write (`zitadel.v1.ObjectDetails`). Every field may be absent (protojson omits
/// zero values).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectDetails {
    /// The aggregate's sequence after the write (a 64-bit integer, sent as a string).
    #[serde(default, deserialize_with = "string_or_number")]
    pub sequence: Option<String>,
    /// Set by BulkSet / Remove / BulkRemove.
    #[serde(default)]
    pub change_date: Option<String>,
    /// Set by the single-key Set instead of `changeDate`.
    #[serde(default)]
    pub creation_date: Option<String>,
    /// The organization owning the object.
    #[serde(default)]
    pub resource_owner: Option<String>,
}

impl ObjectDetails {
    /// `changeDate`, or `creationDate` where ZITADEL filled that one instead.
    pub fn date(&self) -> Option<&str> {
        self.change_date
            .as_deref()
            .or(self.creation_date.as_deref())
    }
}

/// The metadata currently stored for a target: key → decoded value.
pub type MetadataMap = BTreeMap<String, Vec<u8>>;

/// The operations the operator needs from ZITADEL.
#[async_trait::async_trait]
pub trait ZitadelApi: Send + Sync {
    /// All metadata of the target (every page).
    async fn list_metadata(&self, target: &Target) -> Result<MetadataMap, ZitadelError>;

    /// Set the given keys in one all-or-nothing call. `entries` must not be empty.
    async fn bulk_set_metadata(
        &self,
        target: &Target,
        entries: &[(&str, &[u8])],
    ) -> Result<ObjectDetails, ZitadelError>;

    /// Remove the given keys in one all-or-nothing call (fails whole with 404 if any key is
    /// missing). `keys` must not be empty and hold at most 200 keys.
    async fn bulk_remove_metadata(
        &self,
        target: &Target,
        keys: &[&str],
    ) -> Result<ObjectDetails, ZitadelError>;

    /// The organization (resource owner) a user belongs to.
    async fn user_organization(&self, user_id: &str) -> Result<String, ZitadelError>;

    /// Organizations visible to the caller whose name (or a verified domain) equals `query`.
    async fn find_organizations(&self, query: &OrgQuery) -> Result<Vec<Found>, ZitadelError>;

    /// Users matching `query` (login name instance-wide; user name / email within an org).
    async fn find_users(&self, query: &UserQuery) -> Result<Vec<Found>, ZitadelError>;
}

/// How to find an organization by a human-friendly reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrgQuery {
    /// Exact organization name.
    Name(String),
    /// A verified domain of the organization.
    Domain(String),
}

/// How to find a user by a human-friendly reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserQuery {
    /// Exact login name (e.g. `alice@acme.example`), searched instance-wide.
    LoginName(String),
    /// User name within organization `org_id`.
    UserName {
        /// The organization to search in.
        org_id: String,
        /// The user name.
        user_name: String,
    },
    /// Email address (case-insensitive) within organization `org_id`.
    Email {
        /// The organization to search in.
        org_id: String,
        /// The email address.
        email: String,
    },
}

/// A search hit: the object's id and its organization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Id of the org or user.
    pub id: String,
    /// The org (for an org: itself; for a user: its resource owner).
    pub org_id: String,
}

/// protojson writes 64-bit integers as strings but accepts numbers; accept both.
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        S(String),
        N(u64),
    }
    Ok(Option::<Raw>::deserialize(d)?.map(|raw| match raw {
        Raw::S(s) => s,
        Raw::N(n) => n.to_string(),
    }))
}
