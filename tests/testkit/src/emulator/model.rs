//! Public data types of the emulator: permissions, token grants, operations, faults, modes and
//! recorded requests.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One API operation the emulator recognises, used to classify recorded requests and to target
/// faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Operation {
    /// `POST /management/v1/metadata/{key}`
    SetOrgMetadata,
    /// `POST /management/v1/metadata/_bulk`
    BulkSetOrgMetadata,
    /// `POST /management/v1/metadata/_search`
    ListOrgMetadata,
    /// `GET /management/v1/metadata/{key}`
    GetOrgMetadata,
    /// `DELETE /management/v1/metadata/{key}`
    RemoveOrgMetadata,
    /// `DELETE /management/v1/metadata/_bulk`
    BulkRemoveOrgMetadata,
    /// `POST /management/v1/users/{id}/metadata/{key}`
    SetUserMetadata,
    /// `POST /management/v1/users/{id}/metadata/_bulk`
    BulkSetUserMetadata,
    /// `POST /management/v1/users/{id}/metadata/_search`
    ListUserMetadata,
    /// `GET /management/v1/users/{id}/metadata/{key}`
    GetUserMetadata,
    /// `DELETE /management/v1/users/{id}/metadata/{key}`
    RemoveUserMetadata,
    /// `DELETE /management/v1/users/{id}/metadata/_bulk`
    BulkRemoveUserMetadata,
    /// `GET /v2/users/{userId}` (instance-wide user lookup).
    GetUserV2,
    /// `GET /management/v1/users/{id}` (context-org scoped user lookup).
    GetUserV1,
    /// `GET /management/v1/orgs/me`
    GetMyOrg,
    /// `POST /v2/organizations/_search` (instance-wide, filtered to orgs the caller may read).
    ListOrganizationsV2,
    /// `GET /management/v1/global/orgs/_by_domain?domain=` (primary domain, instance-wide).
    GetOrgByDomain,
    /// `GET /management/v1/global/users/_by_login_name?loginName=` (instance-wide).
    GetUserByLoginNameGlobal,
    /// `POST /management/v1/users/_search` (users of the context org).
    ListUsersV1,
    /// `POST /oauth/v2/token` (the OAuth token endpoint; the emulator implements the JWT profile
    /// grant, `urn:ietf:params:oauth:grant-type:jwt-bearer`).
    OAuthToken,
    /// `GET /.well-known/openid-configuration` (OIDC discovery).
    OidcDiscovery,
    /// Anything else (unknown routes, wrong methods).
    Other,
    /// v2 user Set: Connect `/zitadel.user.v2.UserService/SetUserMetadata` or REST
    /// `POST /v2/users/{userId}/metadata`.
    SetUserMetadataV2,
    /// v2 user List: Connect `…/ListUserMetadata` or REST `POST /v2/users/{userId}/metadata/search`.
    ListUserMetadataV2,
    /// v2 user Delete: Connect `…/DeleteUserMetadata` or REST
    /// `DELETE /v2/users/{userId}/metadata?keys=…`.
    DeleteUserMetadataV2,
    /// v2 org Set: Connect `/zitadel.org.v2.OrganizationService/SetOrganizationMetadata` or REST
    /// `POST /v2/organizations/{organizationId}/metadata`.
    SetOrgMetadataV2,
    /// v2 org List: Connect `…/ListOrganizationMetadata` or REST
    /// `POST /v2/organizations/{organizationId}/metadata/search`.
    ListOrgMetadataV2,
    /// v2 org Delete: Connect `…/DeleteOrganizationMetadata` or REST
    /// `DELETE /v2/organizations/{organizationId}/metadata?keys=…`.
    DeleteOrgMetadataV2,
    /// v2beta org Set: Connect `/zitadel.org.v2beta.OrganizationService/SetOrganizationMetadata`
    /// or REST `POST /v2beta/organizations/{organizationId}/metadata`.
    SetOrgMetadataV2beta,
    /// v2beta org List (`…/metadata/search`).
    ListOrgMetadataV2beta,
    /// v2beta org Delete (`DELETE …/metadata?keys=…`).
    DeleteOrgMetadataV2beta,
    /// v2 ListUsers: Connect `/zitadel.user.v2.UserService/ListUsers` or REST `POST /v2/users`.
    ListUsersV2,
    /// `POST /admin/v1/events/_search` (AdminService/ListEvents; REST only).
    ListEvents,
    /// `POST /admin/v1/events/types/_search` (AdminService/ListEventTypes).
    ListEventTypes,
    /// `POST /admin/v1/aggregates/types/_search` (AdminService/ListAggregateTypes).
    ListAggregateTypes,
    /// `POST /management/v1/orgs/me/changes/_search` (ManagementService/ListOrgChanges).
    ListOrgChanges,
    /// `POST /management/v1/users/{userId}/changes/_search` (ManagementService/ListUserChanges).
    ListUserChanges,
}

impl Operation {
    /// Every API operation (gRPC methods of the Management, v2 org and v2 user services) and
    /// [`Operation::Other`], in declaration order. The OAuth / OIDC endpoints are in
    /// [`Operation::OIDC`].
    pub const ALL: [Operation; 35] = [
        Operation::SetOrgMetadata,
        Operation::BulkSetOrgMetadata,
        Operation::ListOrgMetadata,
        Operation::GetOrgMetadata,
        Operation::RemoveOrgMetadata,
        Operation::BulkRemoveOrgMetadata,
        Operation::SetUserMetadata,
        Operation::BulkSetUserMetadata,
        Operation::ListUserMetadata,
        Operation::GetUserMetadata,
        Operation::RemoveUserMetadata,
        Operation::BulkRemoveUserMetadata,
        Operation::GetUserV2,
        Operation::GetUserV1,
        Operation::GetMyOrg,
        Operation::ListOrganizationsV2,
        Operation::GetOrgByDomain,
        Operation::GetUserByLoginNameGlobal,
        Operation::ListUsersV1,
        Operation::Other,
        Operation::SetUserMetadataV2,
        Operation::ListUserMetadataV2,
        Operation::DeleteUserMetadataV2,
        Operation::SetOrgMetadataV2,
        Operation::ListOrgMetadataV2,
        Operation::DeleteOrgMetadataV2,
        Operation::SetOrgMetadataV2beta,
        Operation::ListOrgMetadataV2beta,
        Operation::DeleteOrgMetadataV2beta,
        Operation::ListUsersV2,
        Operation::ListEvents,
        Operation::ListEventTypes,
        Operation::ListAggregateTypes,
        Operation::ListOrgChanges,
        Operation::ListUserChanges,
    ];

    /// The OAuth / OIDC endpoints (no gRPC method, no authentication).
    pub const OIDC: [Operation; 2] = [Operation::OAuthToken, Operation::OidcDiscovery];

    /// The fully qualified gRPC method name ZITADEL uses for this operation (`None` for
    /// [`Operation::Other`] and the OAuth / OIDC endpoints).
    pub fn grpc_method(self) -> Option<&'static str> {
        Some(match self {
            Operation::SetOrgMetadata => "/zitadel.management.v1.ManagementService/SetOrgMetadata",
            Operation::BulkSetOrgMetadata => {
                "/zitadel.management.v1.ManagementService/BulkSetOrgMetadata"
            }
            Operation::ListOrgMetadata => {
                "/zitadel.management.v1.ManagementService/ListOrgMetadata"
            }
            Operation::GetOrgMetadata => "/zitadel.management.v1.ManagementService/GetOrgMetadata",
            Operation::RemoveOrgMetadata => {
                "/zitadel.management.v1.ManagementService/RemoveOrgMetadata"
            }
            Operation::BulkRemoveOrgMetadata => {
                "/zitadel.management.v1.ManagementService/BulkRemoveOrgMetadata"
            }
            Operation::SetUserMetadata => {
                "/zitadel.management.v1.ManagementService/SetUserMetadata"
            }
            Operation::BulkSetUserMetadata => {
                "/zitadel.management.v1.ManagementService/BulkSetUserMetadata"
            }
            Operation::ListUserMetadata => {
                "/zitadel.management.v1.ManagementService/ListUserMetadata"
            }
            Operation::GetUserMetadata => {
                "/zitadel.management.v1.ManagementService/GetUserMetadata"
            }
            Operation::RemoveUserMetadata => {
                "/zitadel.management.v1.ManagementService/RemoveUserMetadata"
            }
            Operation::BulkRemoveUserMetadata => {
                "/zitadel.management.v1.ManagementService/BulkRemoveUserMetadata"
            }
            Operation::GetUserV2 => "/zitadel.user.v2.UserService/GetUserByID",
            Operation::GetUserV1 => "/zitadel.management.v1.ManagementService/GetUserByID",
            Operation::GetMyOrg => "/zitadel.management.v1.ManagementService/GetMyOrg",
            Operation::ListOrganizationsV2 => {
                "/zitadel.org.v2.OrganizationService/ListOrganizations"
            }
            Operation::GetOrgByDomain => {
                "/zitadel.management.v1.ManagementService/GetOrgByDomainGlobal"
            }
            Operation::GetUserByLoginNameGlobal => {
                "/zitadel.management.v1.ManagementService/GetUserByLoginNameGlobal"
            }
            Operation::ListUsersV1 => "/zitadel.management.v1.ManagementService/ListUsers",
            Operation::SetUserMetadataV2 => "/zitadel.user.v2.UserService/SetUserMetadata",
            Operation::ListUserMetadataV2 => "/zitadel.user.v2.UserService/ListUserMetadata",
            Operation::DeleteUserMetadataV2 => "/zitadel.user.v2.UserService/DeleteUserMetadata",
            Operation::SetOrgMetadataV2 => {
                "/zitadel.org.v2.OrganizationService/SetOrganizationMetadata"
            }
            Operation::ListOrgMetadataV2 => {
                "/zitadel.org.v2.OrganizationService/ListOrganizationMetadata"
            }
            Operation::DeleteOrgMetadataV2 => {
                "/zitadel.org.v2.OrganizationService/DeleteOrganizationMetadata"
            }
            Operation::SetOrgMetadataV2beta => {
                "/zitadel.org.v2beta.OrganizationService/SetOrganizationMetadata"
            }
            Operation::ListOrgMetadataV2beta => {
                "/zitadel.org.v2beta.OrganizationService/ListOrganizationMetadata"
            }
            Operation::DeleteOrgMetadataV2beta => {
                "/zitadel.org.v2beta.OrganizationService/DeleteOrganizationMetadata"
            }
            Operation::ListUsersV2 => "/zitadel.user.v2.UserService/ListUsers",
            Operation::ListEvents => "/zitadel.admin.v1.AdminService/ListEvents",
            Operation::ListEventTypes => "/zitadel.admin.v1.AdminService/ListEventTypes",
            Operation::ListAggregateTypes => "/zitadel.admin.v1.AdminService/ListAggregateTypes",
            Operation::ListOrgChanges => "/zitadel.management.v1.ManagementService/ListOrgChanges",
            Operation::ListUserChanges => {
                "/zitadel.management.v1.ManagementService/ListUserChanges"
            }
            Operation::OAuthToken | Operation::OidcDiscovery | Operation::Other => return None,
        })
    }

    /// Whether the operation is a metadata Set or BulkSet (org or user, v1, v2 or v2beta), the
    /// only operations [`FaultKind::DropWrites`] and [`FaultKind::CorruptWrites`] act on.
    pub fn sets_metadata(self) -> bool {
        matches!(
            self,
            Operation::SetOrgMetadata
                | Operation::BulkSetOrgMetadata
                | Operation::SetUserMetadata
                | Operation::BulkSetUserMetadata
                | Operation::SetUserMetadataV2
                | Operation::SetOrgMetadataV2
                | Operation::SetOrgMetadataV2beta
        )
    }

    /// Whether the operation belongs to the Management API v1 (`/management/v1`), which
    /// [`crate::emulator::Profile::V5`] no longer serves.
    pub fn is_management_v1(self) -> bool {
        self.grpc_method()
            .is_some_and(|m| m.starts_with("/zitadel.management.v1."))
    }

    /// Whether the operation is one of the v2 / v2beta metadata RPCs.
    pub fn is_v2_metadata(self) -> bool {
        matches!(
            self,
            Operation::SetUserMetadataV2
                | Operation::ListUserMetadataV2
                | Operation::DeleteUserMetadataV2
                | Operation::SetOrgMetadataV2
                | Operation::ListOrgMetadataV2
                | Operation::DeleteOrgMetadataV2
                | Operation::SetOrgMetadataV2beta
                | Operation::ListOrgMetadataV2beta
                | Operation::DeleteOrgMetadataV2beta
        )
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A ZITADEL permission as checked by the emulated authorization interceptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Permission {
    /// `org.read`
    #[serde(rename = "org.read")]
    OrgRead,
    /// `org.write`
    #[serde(rename = "org.write")]
    OrgWrite,
    /// `user.read`
    #[serde(rename = "user.read")]
    UserRead,
    /// `user.write`
    #[serde(rename = "user.write")]
    UserWrite,
}

impl Permission {
    /// All permissions the emulator knows.
    pub const ALL: [Permission; 4] = [
        Permission::OrgRead,
        Permission::OrgWrite,
        Permission::UserRead,
        Permission::UserWrite,
    ];

    /// The ZITADEL permission string (`org.read`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::OrgRead => "org.read",
            Permission::OrgWrite => "org.write",
            Permission::UserRead => "user.read",
            Permission::UserWrite => "user.write",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a bearer token is allowed to do.
///
/// A permission is never implied by another one (`org.write` does not grant `org.read`), like in
/// ZITADEL where the authorization interceptor matches permission strings exactly.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TokenGrant {
    /// The organization that owns the calling (service) user; it is the context org when a request
    /// carries no `x-zitadel-orgid` header.
    pub owner_org: String,
    /// Instance-wide administrator (IAM_OWNER): every permission in every existing org.
    pub iam_owner: bool,
    /// Permissions per org id (org memberships such as ORG_OWNER). An org listed here, even with
    /// an empty set, counts as a membership; an org missing here (and no instance role) is "no
    /// membership at all": v1 calls in it answer 404 `AUTHZ-cdgFk` (contract §3).
    pub org_permissions: BTreeMap<String, BTreeSet<Permission>>,
    /// Instance-wide read-only administrator (IAM_OWNER_VIEWER): `org.read`, `user.read` in every
    /// org and `events.read`.
    #[serde(default)]
    pub iam_owner_viewer: bool,
    /// The calling user's id, recorded as the editor of the events its writes produce. Access
    /// tokens of service users fill it with the service user's id; registered tokens without it
    /// write as [`crate::emulator::ANONYMOUS_EDITOR`].
    #[serde(default)]
    pub user_id: Option<String>,
}

impl TokenGrant {
    /// A valid token of a user in `owner_org` without any permission.
    pub fn new(owner_org: impl Into<String>) -> Self {
        TokenGrant {
            owner_org: owner_org.into(),
            iam_owner: false,
            org_permissions: BTreeMap::new(),
            iam_owner_viewer: false,
            user_id: None,
        }
    }

    /// IAM_OWNER: all permissions in all orgs; `owner_org` is the caller's own org.
    pub fn iam_owner(owner_org: impl Into<String>) -> Self {
        TokenGrant {
            iam_owner: true,
            ..TokenGrant::new(owner_org)
        }
    }

    /// IAM_OWNER_VIEWER: `org.read` and `user.read` in all orgs, and `events.read`; `owner_org` is
    /// the caller's own org.
    pub fn iam_owner_viewer(owner_org: impl Into<String>) -> Self {
        TokenGrant {
            iam_owner_viewer: true,
            ..TokenGrant::new(owner_org)
        }
    }

    /// Names the calling user (the `editor.userId` of events its writes produce).
    pub fn with_user_id(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// ORG_OWNER of `org` (org.read, org.write, user.read, user.write there), owned by `org`.
    pub fn org_owner(org: impl Into<String>) -> Self {
        let org = org.into();
        TokenGrant::new(org.clone()).with_permissions(org, Permission::ALL)
    }

    /// ORG_OWNER_VIEWER of `org` (org.read and user.read there), owned by `org`.
    pub fn org_owner_viewer(org: impl Into<String>) -> Self {
        let org = org.into();
        TokenGrant::new(org.clone())
            .with_permissions(org, [Permission::OrgRead, Permission::UserRead])
    }

    /// ORG_USER_MANAGER of `org` (user.read and user.write, but no org permissions), owned by
    /// `org`.
    pub fn user_manager(org: impl Into<String>) -> Self {
        let org = org.into();
        TokenGrant::new(org.clone())
            .with_permissions(org, [Permission::UserRead, Permission::UserWrite])
    }

    /// Adds one permission in `org`.
    pub fn with_permission(mut self, org: impl Into<String>, permission: Permission) -> Self {
        self.org_permissions
            .entry(org.into())
            .or_default()
            .insert(permission);
        self
    }

    /// Adds several permissions in `org`.
    pub fn with_permissions(
        mut self,
        org: impl Into<String>,
        permissions: impl IntoIterator<Item = Permission>,
    ) -> Self {
        self.org_permissions
            .entry(org.into())
            .or_default()
            .extend(permissions);
        self
    }

    /// Whether the grant holds `permission` in `org` (directly or as IAM owner / viewer).
    pub fn allows(&self, org: &str, permission: Permission) -> bool {
        self.iam_owner
            || (self.iam_owner_viewer
                && matches!(permission, Permission::OrgRead | Permission::UserRead))
            || self
                .org_permissions
                .get(org)
                .is_some_and(|p| p.contains(&permission))
    }

    /// Whether the caller holds any role in `org` or at instance level (else ZITADEL's
    /// `CheckUserAuthorization` answers 404 `AUTHZ-cdgFk`).
    pub fn has_membership(&self, org: &str) -> bool {
        self.iam_owner || self.iam_owner_viewer || self.org_permissions.contains_key(org)
    }

    /// Whether the grant holds `events.read` (IAM_OWNER, IAM_OWNER_VIEWER).
    pub fn reads_events(&self) -> bool {
        self.iam_owner || self.iam_owner_viewer
    }
}

/// Version switch for same-value writes (contract checklist item 10).
///
/// The org single Set always appends an event, in every mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mode {
    /// `BulkSetOrgMetadata` skips entries whose value is unchanged (ZITADEL main, March 2026+).
    /// When `false`, every entry appends an event (all released versions before that).
    pub org_bulk_set_skips_unchanged: bool,
    /// User `Set`/`BulkSet` skip unchanged values (ZITADEL v4.0+). When `false`, every write
    /// appends an event (v3 and older).
    pub user_set_skips_unchanged: bool,
}

impl Mode {
    /// Current ZITADEL main (2026): both switches on. This is the default.
    pub const fn main_2026() -> Self {
        Mode {
            org_bulk_set_skips_unchanged: true,
            user_set_skips_unchanged: true,
        }
    }

    /// Released v4.x: user writes skip unchanged values, org bulk writes always append.
    pub const fn v4() -> Self {
        Mode {
            org_bulk_set_skips_unchanged: false,
            user_set_skips_unchanged: true,
        }
    }

    /// v3 and older: every write appends an event.
    pub const fn legacy() -> Self {
        Mode {
            org_bulk_set_skips_unchanged: false,
            user_set_skips_unchanged: false,
        }
    }
}

impl Default for Mode {
    fn default() -> Self {
        Mode::main_2026()
    }
}

/// One request the emulator received (including failed and faulted ones).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// HTTP method (`GET`, `POST`, ...).
    pub method: String,
    /// Request path as received (still percent-encoded), without the query string.
    pub path: String,
    /// The operation the path and method were routed to.
    pub operation: Operation,
    /// Value of the `x-zitadel-orgid` header, if present.
    pub org_header: Option<String>,
    /// HTTP status returned; `0` while no response has been sent (in flight or hanging) and for
    /// a request answered by closing the connection ([`FaultKind::Reset`]).
    pub status: u16,
    /// The request body parsed as JSON: `null` when empty, a JSON string holding the raw text
    /// when it was not valid JSON.
    pub body: serde_json::Value,
    /// When the request arrived (before any injected latency), in microseconds since the Unix
    /// epoch; lets benchmarks attribute calls to time windows.
    #[serde(default)]
    pub received_unix_micros: u64,
    /// The answer body parsed as JSON (`null` when empty or not yet answered, a JSON string
    /// holding the raw text when it was not JSON, e.g. `404 page not found`). Bodies over
    /// [`RECORDED_BODY_LIMIT`] bytes (request or answer) are recorded as the string
    /// `"<N bytes not recorded>"`.
    #[serde(default)]
    pub response_body: serde_json::Value,
    /// `Content-Type` of the answer (empty until answered).
    #[serde(default)]
    pub response_content_type: String,
    /// The user id the bearer token acts as ([`TokenGrant::user_id`]; service users' access
    /// tokens carry theirs), when the token is known and names one: which client made the
    /// call, e.g. one of several operator processes sharing the work.
    #[serde(default)]
    pub caller: Option<String>,
}

/// Largest request or answer body kept in a [`RecordedRequest`] (8 MiB: every answer ZITADEL's
/// gateway lets through, and every request up to twice the gRPC limit).
pub const RECORDED_BODY_LIMIT: usize = 8 * 1024 * 1024;

/// Row order of lists that ZITADEL does not sort (contract checklist item 12, v2e §1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListOrder {
    /// Stable order: key order for metadata lists, id order for organizations (the default,
    /// what Postgres usually returns).
    #[default]
    Sorted,
    /// A different order on every request, drawn from a generator seeded with `seed`: v1
    /// metadata lists, org v2 / v2beta metadata lists and ListOrganizations without a sorting
    /// column. The user v2 metadata list still sorts by creation date but breaks ties (keys
    /// written in one request) in a random order.
    Shuffled {
        /// Seed of the order generator (the same seed and request sequence give the same orders).
        seed: u64,
    },
}

/// What an injected fault does.
///
/// JSON form (for `POST /_emulator/faults`): `{"latency_ms":250}`,
/// `{"status":{"http":503,"code":14}}`, `{"too_many_requests":{"retry_after":3,"plain_text":true}}`,
/// `"hang"`, `"reset"`, `"reset_after_handling"`, `"drop_writes"`, `"corrupt_writes"`,
/// `"org_lookup_failed"`, `"no_membership"` or `"route_not_found"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Wait this long, then handle the request normally.
    #[serde(rename = "latency_ms", with = "duration_ms")]
    Latency(Duration),
    /// Answer with a gRPC-gateway JSON error body `{"code":code,"message":...}` (no details) and
    /// this HTTP status, e.g. 503/14 or 500/13.
    Status {
        /// HTTP status code.
        http: u16,
        /// gRPC status code in the body.
        code: i32,
    },
    /// HTTP 429. `plain_text` gives the edge/limits variant (`Your ZITADEL instance is
    /// blocked.`, not JSON); otherwise a code-8 JSON error with id `QUOTA-vjAy8`.
    TooManyRequests {
        /// `Retry-After` header value in seconds, if any.
        #[serde(default)]
        retry_after: Option<u64>,
        /// Plain-text body instead of JSON.
        #[serde(default)]
        plain_text: bool,
    },
    /// Never answer (until the emulator shuts down); the client must time out.
    Hang,
    /// Close the TCP connection without answering, with a reset (RST, `SO_LINGER` 0): what a
    /// crashing pod or a load balancer dropping a connection looks like. The request is read and
    /// recorded (status 0: no response was sent) but not handled, so nothing is written.
    Reset,
    /// Handle the request normally (a write is stored), then close the connection with a reset
    /// instead of answering: the answer is lost after ZITADEL committed, as when a proxy or the
    /// network fails on the way back. Recorded with status 0.
    ResetAfterHandling,
    /// Silently lose the write: a metadata Set/BulkSet (org or user) is handled normally
    /// (authentication, validation and errors included) and answers 200 with the `details` it
    /// would have had, sequence advanced as if the events were written, but nothing is stored
    /// (values, sequences and event counts stay unchanged). Other operations are unaffected and do
    /// not consume the fault.
    DropWrites,
    /// Store a damaged value: a metadata Set/BulkSet (org or user) stores every value with its
    /// last byte inverted (all bits flipped; `"x"` is appended to an empty value) and answers
    /// normally. Same-value checks compare the damaged value. Other operations are unaffected and
    /// do not consume the fault.
    CorruptWrites,
    /// 403 code 7 `AUTH-Bs7Ds` "Organisation doesn't exist" for an org that does exist: what
    /// ZITADEL answers when its org lookup fails for any reason (database errors, timeouts;
    /// contract §3). Rendered in the transport's error shape.
    OrgLookupFailed,
    /// 404 code 5 `AUTHZ-cdgFk` (the caller has no membership; contract §3).
    NoMembership,
    /// The gateway's routing 404 `{"code":5,"message":"Not Found"}` without details (a removed
    /// API, contract §10).
    RouteNotFound,
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// An injected fault: which operations it applies to, what happens, and how often.
///
/// Faults are evaluated before routing errors and authentication. All matching latency faults add
/// up; then the first matching terminal fault (status, 429, hang, resets) answers the request.
/// Only when no terminal fault answers does the first matching write fault
/// ([`FaultKind::DropWrites`], [`FaultKind::CorruptWrites`]) apply, and only to metadata
/// Set/BulkSet requests ([`Operation::sets_metadata`]); it is consumed (`times`) even if the
/// request then fails authentication or validation, like every other fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// Operations this fault applies to; `None` = every request.
    #[serde(default)]
    pub operations: Option<Vec<Operation>>,
    /// What happens.
    pub kind: FaultKind,
    /// How many requests it affects; `None` = until [`crate::emulator::Emulator::clear_faults`].
    #[serde(default)]
    pub times: Option<u32>,
    /// Chance (0.0–1.0) that the fault hits a matching request; `None` = every one. Drawn from the
    /// emulator's seeded generator ([`crate::emulator::Emulator::seed_faults`]), so a run with
    /// the same seed and request order hits the same requests. A miss does not count against
    /// `times`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
}

impl Fault {
    /// A fault of `kind` on every operation, until cleared.
    pub fn new(kind: FaultKind) -> Self {
        Fault {
            operations: None,
            kind,
            times: None,
            probability: None,
        }
    }

    /// Delay every affected request by `delay`, then handle it normally.
    pub fn latency(delay: Duration) -> Self {
        Fault::new(FaultKind::Latency(delay))
    }

    /// Answer with HTTP `http` and gRPC code `code`.
    pub fn status(http: u16, code: i32) -> Self {
        Fault::new(FaultKind::Status { http, code })
    }

    /// HTTP 503, gRPC code 14 (Unavailable).
    pub fn unavailable() -> Self {
        Fault::status(503, 14)
    }

    /// HTTP 500, gRPC code 13 (Internal).
    pub fn internal() -> Self {
        Fault::status(500, 13)
    }

    /// HTTP 429, plain text (edge / blocked instance) or code-8 JSON (quota), with an optional
    /// `Retry-After` in seconds.
    pub fn too_many_requests(retry_after: Option<u64>, plain_text: bool) -> Self {
        Fault::new(FaultKind::TooManyRequests {
            retry_after,
            plain_text,
        })
    }

    /// Never answer.
    pub fn hang() -> Self {
        Fault::new(FaultKind::Hang)
    }

    /// Close the connection without answering ([`FaultKind::Reset`]).
    pub fn reset() -> Self {
        Fault::new(FaultKind::Reset)
    }

    /// Handle the request, then close the connection without answering
    /// ([`FaultKind::ResetAfterHandling`]).
    pub fn reset_after_handling() -> Self {
        Fault::new(FaultKind::ResetAfterHandling)
    }

    /// Answer metadata Set/BulkSet requests normally but store nothing
    /// ([`FaultKind::DropWrites`]).
    pub fn drop_writes() -> Self {
        Fault::new(FaultKind::DropWrites)
    }

    /// Store metadata Set/BulkSet values with their last byte flipped
    /// ([`FaultKind::CorruptWrites`]).
    pub fn corrupt_writes() -> Self {
        Fault::new(FaultKind::CorruptWrites)
    }

    /// A transient 403 `AUTH-Bs7Ds` for an existing org ([`FaultKind::OrgLookupFailed`]).
    pub fn org_lookup_failed() -> Self {
        Fault::new(FaultKind::OrgLookupFailed)
    }

    /// 404 `AUTHZ-cdgFk` ([`FaultKind::NoMembership`]).
    pub fn no_membership() -> Self {
        Fault::new(FaultKind::NoMembership)
    }

    /// The routing 404 without details ([`FaultKind::RouteNotFound`]).
    pub fn route_not_found() -> Self {
        Fault::new(FaultKind::RouteNotFound)
    }

    /// Restrict the fault to `op` (may be called repeatedly to add more operations).
    pub fn on(mut self, op: Operation) -> Self {
        self.operations.get_or_insert_with(Vec::new).push(op);
        self
    }

    /// Restrict the fault to `ops`.
    pub fn on_operations(mut self, ops: impl IntoIterator<Item = Operation>) -> Self {
        self.operations.get_or_insert_with(Vec::new).extend(ops);
        self
    }

    /// Apply the fault to the next `n` affected requests only.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    /// Hit each matching request with chance `p` (clamped to 0.0–1.0) instead of every one; see
    /// [`Fault::probability`](Fault#structfield.probability).
    pub fn with_probability(mut self, p: f64) -> Self {
        self.probability = Some(if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) });
        self
    }

    /// Whether the fault applies to `op`.
    pub fn applies_to(&self, op: Operation) -> bool {
        self.operations.as_ref().is_none_or(|ops| ops.contains(&op))
    }
}
