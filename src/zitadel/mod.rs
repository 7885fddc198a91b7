//! ZITADEL client for organization and user metadata: Management API v1 (REST) and the v2
//! services over Connect, chosen per instance.
//!
//! [`ZitadelApi`] is the seam the reconciler is written against; [`HttpClient`] implements it over
//! HTTP/JSON as described by ZITADEL's protos (`shared/zitadel-api.md`,
//! `shared/zitadel-v2-and-events.md`). Which API serves user and org metadata is decided per
//! instance ([`ApiMode`], [`ApiSelection`]).

mod error;
mod events;
mod http;
mod jwt;
mod listing;
mod probe;
mod token;
mod v1;
mod v2;

use std::collections::{BTreeMap, BTreeSet};

pub use error::{ZitadelError, code, ids};
pub use events::{DRIFT_EVENT_TYPES, Event, EventQuery, LIST_EVENTS, format_timestamp, value_hash};
pub use http::{ClientConfig, ConnectionCheck, HttpClient, MAX_RESPONSE_BYTES, RateLimit};
pub use jwt::{JwtProfile, KeyFile, KeyFileError};
pub use probe::{Api, ApiMode, ApiSelection};
pub use token::{TokenProvider, TokenSource};

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
        /// The user's organization, sent as `x-zitadel-orgid` (v1); on v2 the client checks
        /// that the user belongs to it (v2 itself ignores the organization).
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

    /// `org` for an organization target, `user` for a user target (paths, method names).
    pub(crate) fn pick<T>(&self, org: T, user: T) -> T {
        match self {
            Target::Org { .. } => org,
            Target::User { .. } => user,
        }
    }
}

/// The result of a write. On v1 it is ZITADEL's `details` (`zitadel.v1.ObjectDetails`); on v2
/// only a date is returned (`setDate` / `deletionDate`) and **`sequence` is `None`**: v2 has no
/// sequence, and none is invented. Every field may be absent (protojson omits zero values).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectDetails {
    /// v1: the aggregate's sequence after the write (a 64-bit integer, sent as a string).
    /// v2: always `None`.
    #[serde(default, deserialize_with = "string_or_number")]
    pub sequence: Option<String>,
    /// v1 BulkSet / Remove / BulkRemove: the change date. v2: `setDate` or `deletionDate`
    /// (`None` when ZITADEL answered the zero date of a no-op on an object without metadata
    /// events).
    #[serde(default)]
    pub change_date: Option<String>,
    /// Set by the v1 single-key Set instead of `changeDate`.
    #[serde(default)]
    pub creation_date: Option<String>,
    /// v1: the organization owning the object. v2: `None`.
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

/// Which keys of a listing the caller needs to be exact.
#[derive(Clone, Copy, Debug)]
pub enum Relevant<'a> {
    /// Every key: the listing must be complete (else [`ZitadelError::IncompleteListing`]).
    All,
    /// Only these keys (for a sync: desired ∪ managed). Each is reported exactly — present
    /// with its value, or absent — even when a paged listing lost rows; other keys are best
    /// effort.
    Only(&'a BTreeSet<String>),
}

/// The outcome of listing a target's metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Keys and values. Exact for every relevant key; when [`Self::complete`], exact for all.
    pub metadata: MetadataMap,
    /// Whether `metadata` holds every key of the target. False after a paged listing that did
    /// not add up was completed by targeted lookups of the relevant keys only.
    pub complete: bool,
    /// HTTP requests the listing made (pages, refused pages, targeted lookups).
    pub calls: u32,
}

impl Listing {
    /// Every key of the target, read in one call.
    pub fn whole(metadata: MetadataMap) -> Self {
        Self {
            metadata,
            complete: true,
            calls: 1,
        }
    }
}

/// Whether an organization or user exists, positively established (see
/// [`ZitadelApi::target_exists`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existence {
    /// It exists.
    Exists,
    /// It is proven gone.
    Gone,
}

/// The operations the operator needs from ZITADEL.
#[async_trait::async_trait]
pub trait ZitadelApi: Send + Sync {
    /// All metadata of the target, every key exact: fails (e.g. with
    /// [`ZitadelError::IncompleteListing`]) rather than return a listing that lost a key.
    async fn list_metadata(&self, target: &Target) -> Result<MetadataMap, ZitadelError>;

    /// The target's metadata, exact for the `relevant` keys whatever order ZITADEL returns rows
    /// in, at a cost of about `ceil(keys / page) + ceil(bytes / page budget)` requests plus a
    /// small constant ([`Listing::calls`]). The default lists everything with
    /// [`Self::list_metadata`] (and counts one call); [`HttpClient`] implements it.
    async fn list_metadata_for(
        &self,
        target: &Target,
        relevant: Relevant<'_>,
    ) -> Result<Listing, ZitadelError> {
        let _ = relevant;
        Ok(Listing::whole(self.list_metadata(target).await?))
    }

    /// Set the given keys in one all-or-nothing call. `entries` must not be empty, and no value
    /// may be empty (v2 reads an empty value as "delete"; the client refuses to send one).
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

    /// Whether the target exists, **positively** established (`shared/zitadel-api.md` §10):
    ///
    /// * a user is [`Existence::Gone`] only when `GetUserByID` answers 404 `QUERY-Dfbg2` (ZITADEL
    ///   looks the id up instance-wide before any permission check);
    /// * an org is `Gone` only when a lookup by id finds nothing while the same caller still
    ///   sees other organizations (and, where the org metadata API is v1, `x-zitadel-orgid`
    ///   for it answers `AUTH-Bs7Ds`, which tells a deleted org from a revoked membership).
    ///
    /// Anything else — a missing route, a permission error, `AUTH-Bs7Ds` alone, 5xx, timeouts,
    /// a caller that sees no organization at all — is an `Err`: existence unknown, keep the
    /// finalizer. The default proves nothing ([`ZitadelError::Unproven`]).
    async fn target_exists(&self, target: &Target) -> Result<Existence, ZitadelError> {
        let _ = target;
        Err(ZitadelError::Unproven(
            "this ZITADEL client cannot establish whether a target exists".into(),
        ))
    }

    /// Which API serves user and org metadata, once known (after the first call or
    /// [`HttpClient::select_api`]); `None` before.
    fn api_selection(&self) -> Option<ApiSelection> {
        None
    }

    /// The instance's metadata and removal events ([`DRIFT_EVENT_TYPES`]) through admin
    /// `ListEvents` (permission `events.read`: IAM_OWNER, IAM_OWNER_VIEWER). The default has no
    /// event log: it answers like ZITADEL to a caller without the permission would, never with
    /// events.
    async fn list_events(&self, query: &EventQuery) -> Result<Vec<Event>, ZitadelError> {
        let _ = query;
        Err(ZitadelError::from_response(
            403,
            None,
            r#"{"code":7,"message":"this client reads no events"}"#,
        ))
    }

    /// The ZITADEL user id the client acts as, when the credentials name it (a service-user key
    /// file's `userId`); `None` for a Personal Access Token (the contract has no call that
    /// tells a token's user).
    fn caller_id(&self) -> Option<String> {
        None
    }
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
