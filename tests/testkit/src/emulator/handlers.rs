//! Request pipeline of the emulated API, in ZITADEL's order: routing → body decoding (gateway) →
//! gRPC message size → authentication → context org → permission → request validation (PGV) →
//! command/query execution.

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::Json;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::Value;

use super::errors::{ApiError, Msg, code};
use super::lock;
use super::model::{Operation, Permission, TokenGrant};
use super::routes::{Params, Route};
use super::state::{Aggregate, MetaEntry, Org, Stamp, State, User};
use super::wire::{self, Obj, Out};

/// Names of `zitadel.v1.TextQueryMethod`, indexed by number.
pub(crate) const TEXT_QUERY_METHODS: [&str; 8] = [
    "TEXT_QUERY_METHOD_EQUALS",
    "TEXT_QUERY_METHOD_EQUALS_IGNORE_CASE",
    "TEXT_QUERY_METHOD_STARTS_WITH",
    "TEXT_QUERY_METHOD_STARTS_WITH_IGNORE_CASE",
    "TEXT_QUERY_METHOD_CONTAINS",
    "TEXT_QUERY_METHOD_CONTAINS_IGNORE_CASE",
    "TEXT_QUERY_METHOD_ENDS_WITH",
    "TEXT_QUERY_METHOD_ENDS_WITH_IGNORE_CASE",
];

/// Names of `zitadel.org.v2.OrganizationState`, indexed by number.
const ORG_STATES: [&str; 4] = [
    "ORGANIZATION_STATE_UNSPECIFIED",
    "ORGANIZATION_STATE_ACTIVE",
    "ORGANIZATION_STATE_INACTIVE",
    "ORGANIZATION_STATE_REMOVED",
];

/// Names of `zitadel.org.v2.OrganizationFieldName`, indexed by number.
const ORG_FIELD_NAMES: [&str; 3] = [
    "ORGANIZATION_FIELD_NAME_UNSPECIFIED",
    "ORGANIZATION_FIELD_NAME_NAME",
    "ORGANIZATION_FIELD_NAME_CREATION_DATE",
];

/// Names of `zitadel.user.v1.UserState`, indexed by number.
const USER_STATES: [&str; 7] = [
    "USER_STATE_UNSPECIFIED",
    "USER_STATE_ACTIVE",
    "USER_STATE_INACTIVE",
    "USER_STATE_DELETED",
    "USER_STATE_LOCKED",
    "USER_STATE_SUSPEND",
    "USER_STATE_INITIAL",
];

/// Names of `zitadel.user.v1.Type`, indexed by number.
const USER_TYPES: [&str; 3] = ["TYPE_UNSPECIFIED", "TYPE_HUMAN", "TYPE_MACHINE"];

/// Last name of every emulated (human) user; first and display name are the user name.
const PROFILE_LAST_NAME: &str = "Emulated";

use super::v2::{V2_DEFAULT_LIMIT, V2_MAX_LIMIT};

/// gRPC's default maximum received message size (4 MiB), enforced by the grpc-gateway's client
/// on requests and answers of REST calls (api §0, v2e §1.0); Connect has no limit.
pub(crate) const MAX_GRPC_MESSAGE: usize = 4 * 1024 * 1024;

/// The gateway's error for a message over [`MAX_GRPC_MESSAGE`]: 429, code 8, no details.
pub(crate) fn too_large(size: usize) -> ApiError {
    ApiError::plain(
        code::RESOURCE_EXHAUSTED,
        format!("grpc: received message larger than max ({size} vs. {MAX_GRPC_MESSAGE})"),
    )
}
const MAX_KEY_RUNES: usize = 200;
const MAX_ID_RUNES: usize = 200;
const MAX_VALUE_BYTES: usize = 500_000;
/// Max length of text search values (`max_len: 200` in the query messages).
const MAX_QUERY_RUNES: usize = 200;

/// A write fault applied to a metadata Set/BulkSet (see [`super::model::FaultKind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteFault {
    /// Answer as if written, store nothing.
    Drop,
    /// Store every value with its last byte flipped.
    Corrupt,
}

/// `TextQueryMethod` matching: literal (LIKE wildcards are escaped by ZITADEL); ignore-case
/// variants lowercase both sides.
fn text_matches(method: i32, value: &str, query: &str) -> bool {
    let ignore_case = method % 2 == 1;
    let (v, q) = if ignore_case {
        (value.to_lowercase(), query.to_lowercase())
    } else {
        (value.to_owned(), query.to_owned())
    };
    match method {
        0 | 1 => v == q,
        2 | 3 => v.starts_with(&q),
        4 | 5 => v.contains(&q),
        6 | 7 => v.ends_with(&q),
        _ => false,
    }
}

/// Whose metadata a request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    /// The context org.
    Org,
    /// A user (must belong to the context org).
    User(String),
}

impl Scope {
    fn is_org(&self) -> bool {
        matches!(self, Scope::Org)
    }

    /// The error id of the org (`org`) or the user (`user`) variant of a request.
    fn id(&self, org: &'static str, user: &'static str) -> &'static str {
        if self.is_org() { org } else { user }
    }

    /// The proto request message name, e.g. `SetOrgMetadataRequest`.
    fn request(&self, verb: &str) -> String {
        let kind = if self.is_org() { "Org" } else { "User" };
        format!("{verb}{kind}MetadataRequest")
    }

    fn check_id(&self, message: &str) -> Result<(), String> {
        match self {
            Scope::Org => Ok(()),
            Scope::User(id) => check(message, "Id", runes(id, 1, MAX_ID_RUNES)),
        }
    }

    fn read_permission(&self) -> Permission {
        if self.is_org() {
            Permission::OrgRead
        } else {
            Permission::UserRead
        }
    }

    fn write_permission(&self) -> Permission {
        if self.is_org() {
            Permission::OrgWrite
        } else {
            Permission::UserWrite
        }
    }
}

/// One `MetadataKeyQuery` (v1, v2beta) or `MetadataKeyFilter` (v2): the method numbers of
/// `TextQueryMethod` and `TextFilterMethod` coincide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyQuery {
    pub(crate) key: String,
    pub(crate) method: i32,
}

impl KeyQuery {
    pub(crate) fn matches(&self, key: &str) -> bool {
        text_matches(self.method, key, &self.key)
    }
}

/// One `zitadel.org.v2.SearchQuery`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OrgQuery {
    Name {
        name: String,
        method: i32,
    },
    /// Matches any verified domain of the org.
    Domain {
        domain: String,
        method: i32,
    },
    State(i32),
    Id(String),
    /// The instance's default org.
    Default,
}

impl OrgQuery {
    fn matches(&self, org: &Org, default_org: Option<&str>) -> bool {
        match self {
            OrgQuery::Name { name, method } => text_matches(*method, &org.name, name),
            OrgQuery::Domain { domain, method } => org
                .verified_domains()
                .any(|d| text_matches(*method, d, domain)),
            // Every emulated org is active.
            OrgQuery::State(state) => *state == 1,
            OrgQuery::Id(id) => org.id == *id,
            OrgQuery::Default => default_org == Some(org.id.as_str()),
        }
    }
}

/// A text field of a v1 user that a text query can filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UserField {
    UserName,
    FirstName,
    LastName,
    NickName,
    DisplayName,
    Email,
    /// Any of the user's login names.
    LoginName,
}

/// How a v1 user text query appears on the wire.
struct TextQuerySpec {
    field: UserField,
    /// Oneof field of `SearchQuery` (JSON, proto name); its message has the same (Go) name.
    oneof: (&'static str, &'static str),
    message: &'static str,
    /// Value field (JSON, proto, Go name).
    value: (&'static str, &'static str, &'static str),
}

/// A `TextQuerySpec` from the names of its query (JSON, proto, Go stem: `userName`, `user_name`,
/// `UserName` → `userNameQuery`, `user_name_query`, `UserNameQuery`) and of its value field
/// (the same stems unless given).
macro_rules! text_query {
    ($field:ident, $json:literal, $proto:literal, $go:literal) => {
        text_query!($field, $json, $proto, $go, ($json, $proto, $go))
    };
    ($field:ident, $json:literal, $proto:literal, $go:literal, $value:expr) => {
        TextQuerySpec {
            field: UserField::$field,
            oneof: (concat!($json, "Query"), concat!($proto, "_query")),
            message: concat!($go, "Query"),
            value: $value,
        }
    };
}

const USER_TEXT_QUERIES: [TextQuerySpec; 7] = [
    text_query!(UserName, "userName", "user_name", "UserName"),
    text_query!(FirstName, "firstName", "first_name", "FirstName"),
    text_query!(LastName, "lastName", "last_name", "LastName"),
    text_query!(NickName, "nickName", "nick_name", "NickName"),
    text_query!(DisplayName, "displayName", "display_name", "DisplayName"),
    text_query!(
        Email,
        "email",
        "email",
        "Email",
        ("emailAddress", "email_address", "EmailAddress")
    ),
    text_query!(LoginName, "loginName", "login_name", "LoginName"),
];

impl UserField {
    fn spec(self) -> &'static TextQuerySpec {
        USER_TEXT_QUERIES
            .iter()
            .find(|s| s.field == self)
            .unwrap_or(&USER_TEXT_QUERIES[0])
    }
}

/// One `zitadel.user.v1.SearchQuery`; `None` in lists = a query message with no query set.
#[derive(Debug, Clone, PartialEq, Eq)]
enum UserQuery {
    Text {
        field: UserField,
        text: String,
        method: i32,
    },
    State(i32),
    Type(i32),
    ResourceOwner(String),
    InUserIds(Vec<String>),
    Or(Vec<Option<UserQuery>>),
    And(Vec<Option<UserQuery>>),
    Not(Box<Option<UserQuery>>),
}

impl UserQuery {
    fn matches(&self, user: &User, orgs: &BTreeMap<String, Org>) -> bool {
        match self {
            UserQuery::Text {
                field: UserField::LoginName,
                text,
                method,
            } => user
                .login_names(orgs)
                .iter()
                .any(|l| text_matches(*method, l, text)),
            UserQuery::Text {
                field,
                text,
                method,
            } => {
                let value = match field {
                    UserField::UserName | UserField::FirstName | UserField::DisplayName => {
                        user.user_name.clone()
                    }
                    UserField::LastName => PROFILE_LAST_NAME.to_owned(),
                    UserField::NickName => String::new(),
                    UserField::Email | UserField::LoginName => user.email(orgs),
                };
                text_matches(*method, &value, text)
            }
            // Every emulated user is an active human.
            UserQuery::State(state) => *state == 1,
            UserQuery::Type(kind) => *kind == 1,
            UserQuery::ResourceOwner(org) => user.org_id == *org,
            UserQuery::InUserIds(ids) => ids.contains(&user.id),
            UserQuery::Or(queries) => queries.iter().flatten().any(|q| q.matches(user, orgs)),
            UserQuery::And(queries) => queries.iter().flatten().all(|q| q.matches(user, orgs)),
            UserQuery::Not(query) => query
                .as_ref()
                .as_ref()
                .is_some_and(|q| !q.matches(user, orgs)),
        }
    }
}

/// Paging and order of a v2 list request: offset, limit, ascending, sorting column number.
type V2List = (u64, u32, bool, i32);

/// A decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Req {
    Set {
        scope: Scope,
        key: String,
        value: Vec<u8>,
    },
    BulkSet {
        scope: Scope,
        items: Vec<(String, Vec<u8>)>,
    },
    List {
        scope: Scope,
        offset: u64,
        limit: u32,
        /// `None` = a `MetadataQuery` with no query set.
        queries: Vec<Option<KeyQuery>>,
    },
    Get {
        scope: Scope,
        key: String,
    },
    Remove {
        scope: Scope,
        key: String,
    },
    BulkRemove {
        scope: Scope,
        keys: Vec<String>,
    },
    UserV1 {
        id: String,
    },
    UserV2 {
        id: String,
    },
    MyOrg,
    ListOrgsV2 {
        list: V2List,
        /// `None` = a `SearchQuery` with no query set.
        queries: Vec<Option<OrgQuery>>,
    },
    OrgByDomain {
        domain: String,
    },
    UserByLoginName {
        login_name: String,
    },
    ListUsersV1 {
        offset: u64,
        limit: u32,
        queries: Vec<Option<UserQuery>>,
    },
    ListUsersV2 {
        list: V2List,
        queries: Vec<Option<UserQuery>>,
    },
}

impl Req {
    /// The permission checked in the context org; `None` = any valid token (v2 API).
    fn permission(&self) -> Option<Permission> {
        match self {
            Req::Set { scope, .. }
            | Req::BulkSet { scope, .. }
            | Req::Remove { scope, .. }
            | Req::BulkRemove { scope, .. } => Some(scope.write_permission()),
            Req::List { scope, .. } | Req::Get { scope, .. } => Some(scope.read_permission()),
            Req::UserV1 { .. } | Req::ListUsersV1 { .. } => Some(Permission::UserRead),
            Req::MyOrg => Some(Permission::OrgRead),
            // The `*.global.read` permissions, mapped onto the emulator's model: checked in the
            // context org like every v1 permission, the lookup itself is instance-wide.
            Req::OrgByDomain { .. } => Some(Permission::OrgRead),
            Req::UserByLoginName { .. } => Some(Permission::UserRead),
            // v2: any valid token; results are filtered per object.
            Req::UserV2 { .. } | Req::ListOrgsV2 { .. } | Req::ListUsersV2 { .. } => None,
        }
    }

    /// Size of the protobuf encoding of the request message.
    fn proto_size(&self) -> usize {
        let id = |scope: &Scope| match scope {
            Scope::Org => 0,
            Scope::User(id) => len_field(id.len()),
        };
        match self {
            Req::Set { scope, key, value } => {
                id(scope) + len_field(key.len()) + len_field(value.len())
            }
            Req::BulkSet { scope, items } => {
                id(scope)
                    + items
                        .iter()
                        .map(|(k, v)| len_field(len_field(k.len()) + len_field(v.len())))
                        .sum::<usize>()
            }
            Req::BulkRemove { scope, keys } => {
                id(scope) + keys.iter().map(|k| len_field(k.len())).sum::<usize>()
            }
            _ => 0,
        }
    }
}

/// Encoded size of a length-delimited field with a one-byte tag.
pub(crate) fn len_field(len: usize) -> usize {
    let mut varint = 1;
    let mut n = len >> 7;
    while n > 0 {
        varint += 1;
        n >>= 7;
    }
    1 + varint + len
}

/// Handles a routed request (`query` = the raw URL query string) and renders the response: in
/// Connect's shape for Connect routes, in the gateway's otherwise (with the 4 MiB answer limit).
pub(crate) fn handle(
    state: &Mutex<State>,
    route: &Route,
    headers: &HeaderMap,
    query: &str,
    body: &[u8],
    write_fault: Option<WriteFault>,
) -> Response {
    let connect = route.is_connect();
    match route {
        Route::ConnectNoMethod => return super::connect::page_not_found(),
        Route::ConnectWrongMethod => return super::connect::method_not_allowed(),
        _ => {}
    }
    if connect && !super::connect::is_json(headers) {
        return super::connect::unsupported_media_type();
    }
    if connect && let Some(refused) = super::connect::precheck(headers, body) {
        return refused.render_connect(false);
    }
    match exec(state, route, headers, query, body, write_fault) {
        Ok(value) => {
            if !connect {
                let size = wire::proto_size(&value);
                if size > MAX_GRPC_MESSAGE {
                    let german = lock(state).german;
                    return too_large(size).render(german);
                }
            }
            Json(value).into_response()
        }
        Err(e) => {
            let german = lock(state).german;
            e.render_for(connect, german)
        }
    }
}

fn exec(
    state: &Mutex<State>,
    route: &Route,
    headers: &HeaderMap,
    query: &str,
    body: &[u8],
    write_fault: Option<WriteFault>,
) -> Result<Value, ApiError> {
    let (op, params) = match route {
        Route::Api(op, params) => (*op, params.clone()),
        Route::Connect(op) => (*op, Params::default()),
        Route::NotFound | Route::ConnectNoMethod | Route::ConnectWrongMethod => {
            return Err(ApiError::plain(code::NOT_FOUND, "Not Found"));
        }
        Route::MethodNotAllowed => {
            return Err(ApiError::plain(code::UNIMPLEMENTED, "Method Not Allowed"));
        }
    };
    let connect = route.is_connect();
    if op.is_v2_metadata() {
        let prepared = super::v2::prepare(op, &params, query, body, !connect)?;
        let mut st = lock(state);
        let auth = authorize(&st, headers, None)?;
        return super::v2::exec(&mut st, &auth, prepared, write_fault);
    }
    if super::events::serves(op) {
        let mut st = lock(state);
        return super::events::exec(&mut st, headers, op, &params, body);
    }
    let req = decode(op, &params, query, body, connect)?;
    let size = req.proto_size();
    if size > MAX_GRPC_MESSAGE {
        return Err(too_large(size));
    }
    let mut st = lock(state);
    let auth = authorize(&st, headers, req.permission())?;
    validate(&req).map_err(ApiError::invalid_argument)?;
    execute(&mut st, &auth, req, write_fault)
}

// ---------------------------------------------------------------------------------------------
// Decoding (grpc-gateway: body and path parameters into the proto request message)
// ---------------------------------------------------------------------------------------------

fn decode(
    op: Operation,
    params: &Params,
    query: &str,
    body: &[u8],
    connect: bool,
) -> Result<Req, ApiError> {
    let id = params.id.clone().unwrap_or_default();
    let key = params.key.clone().unwrap_or_default();
    let user = || Scope::User(id.clone());
    Ok(match op {
        Operation::SetOrgMetadata => decode_set(Scope::Org, key, body)?,
        Operation::SetUserMetadata => decode_set(user(), key, body)?,
        Operation::BulkSetOrgMetadata => decode_bulk_set(Scope::Org, body)?,
        Operation::BulkSetUserMetadata => decode_bulk_set(user(), body)?,
        Operation::ListOrgMetadata => decode_list(Scope::Org, body)?,
        Operation::ListUserMetadata => decode_list(user(), body)?,
        Operation::GetOrgMetadata => Req::Get {
            scope: Scope::Org,
            key,
        },
        Operation::GetUserMetadata => Req::Get { scope: user(), key },
        Operation::RemoveOrgMetadata => Req::Remove {
            scope: Scope::Org,
            key,
        },
        Operation::RemoveUserMetadata => Req::Remove { scope: user(), key },
        Operation::BulkRemoveOrgMetadata => decode_bulk_remove(Scope::Org, body)?,
        Operation::BulkRemoveUserMetadata => decode_bulk_remove(user(), body)?,
        Operation::GetUserV1 => Req::UserV1 { id },
        Operation::GetUserV2 if connect => Req::UserV2 {
            id: wire::string(&wire::parse_body(body)?, "userId", "user_id")?,
        },
        Operation::GetUserV2 => Req::UserV2 { id },
        Operation::ListUsersV2 => decode_list_users_v2(body)?,
        Operation::GetMyOrg => Req::MyOrg,
        Operation::ListOrganizationsV2 => decode_list_orgs(body)?,
        Operation::GetOrgByDomain => Req::OrgByDomain {
            domain: wire::string(&wire::parse_query(query), "domain", "domain")?,
        },
        Operation::GetUserByLoginNameGlobal => Req::UserByLoginName {
            login_name: wire::string(&wire::parse_query(query), "loginName", "login_name")?,
        },
        Operation::ListUsersV1 => decode_list_users(body)?,
        // Served by `super::oauth`, `super::v2` and `super::events`; never decoded here.
        _ => {
            return Err(ApiError::plain(code::NOT_FOUND, "Not Found"));
        }
    })
}

/// Path parameters overwrite body fields of the same name; they are still type-checked.
fn decode_path_fields(scope: &Scope, obj: &Obj, has_key: bool) -> Result<(), ApiError> {
    if !scope.is_org() {
        wire::string(obj, "id", "id")?;
    }
    if has_key {
        wire::string(obj, "key", "key")?;
    }
    Ok(())
}

fn decode_set(scope: Scope, key: String, body: &[u8]) -> Result<Req, ApiError> {
    let obj = wire::parse_body(body)?;
    decode_path_fields(&scope, &obj, true)?;
    let value = wire::bytes(&obj, "value", "value")?;
    Ok(Req::Set { scope, key, value })
}

fn decode_bulk_set(scope: Scope, body: &[u8]) -> Result<Req, ApiError> {
    let obj = wire::parse_body(body)?;
    decode_path_fields(&scope, &obj, false)?;
    let items = metadata_items(&obj)?;
    Ok(Req::BulkSet { scope, items })
}

/// The `metadata` list of a bulk set (v1 and v2): key and decoded value of each item.
pub(crate) fn metadata_items(obj: &Obj) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
    wire::array(obj, "metadata", "metadata")?
        .iter()
        .map(|item| {
            let item = wire::element_message(item, "metadata")?;
            Ok((
                wire::string(item, "key", "key")?,
                wire::bytes(item, "value", "value")?,
            ))
        })
        .collect()
}

/// The `query` (`ListQuery`: offset, limit, asc) of a list request.
fn decode_list_query(obj: &Obj) -> Result<(u64, u32, bool), ApiError> {
    Ok(match wire::message(obj, "query", "query")? {
        Some(q) => (
            wire::uint64(q, "offset", "offset")?,
            wire::uint32(q, "limit", "limit")?,
            wire::boolean(q, "asc", "asc")?,
        ),
        None => (0, 0, false),
    })
}

fn decode_list(scope: Scope, body: &[u8]) -> Result<Req, ApiError> {
    let obj = wire::parse_body(body)?;
    decode_path_fields(&scope, &obj, false)?;
    // `asc` is accepted but has no effect: v1 metadata lists have no sorting column.
    let (offset, limit, _asc) = decode_list_query(&obj)?;
    let queries = wire::array(&obj, "queries", "queries")?
        .iter()
        .map(|q| {
            let q = wire::element_message(q, "queries")?;
            wire::message(q, "keyQuery", "key_query")?
                .map(|kq| {
                    Ok(KeyQuery {
                        key: wire::string(kq, "key", "key")?,
                        method: wire::enumeration(kq, "method", "method", &TEXT_QUERY_METHODS)?,
                    })
                })
                .transpose()
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Req::List {
        scope,
        offset,
        limit,
        queries,
    })
}

/// The enum `field` of the query message `oneof` (JSON, proto name), if that message is set.
fn enum_query(
    q: &Obj,
    (json, proto): (&str, &str),
    field: &str,
    names: &[&str],
) -> Result<Option<i32>, ApiError> {
    wire::message(q, json, proto)?
        .map(|m| wire::enumeration(m, field, field, names))
        .transpose()
}

/// Error of protojson when two fields of one oneof are set.
fn oneof_already_set(oneof: &str) -> ApiError {
    ApiError::invalid_argument(format!("proto: oneof {oneof} is already set"))
}

fn decode_org_query(q: &Obj) -> Result<Option<OrgQuery>, ApiError> {
    let mut found = Vec::new();
    if let Some(m) = wire::message(q, "nameQuery", "name_query")? {
        found.push(OrgQuery::Name {
            name: wire::string(m, "name", "name")?,
            method: wire::enumeration(m, "method", "method", &TEXT_QUERY_METHODS)?,
        });
    }
    if let Some(m) = wire::message(q, "domainQuery", "domain_query")? {
        found.push(OrgQuery::Domain {
            domain: wire::string(m, "domain", "domain")?,
            method: wire::enumeration(m, "method", "method", &TEXT_QUERY_METHODS)?,
        });
    }
    if let Some(v) = enum_query(q, ("stateQuery", "state_query"), "state", &ORG_STATES)? {
        found.push(OrgQuery::State(v));
    }
    if let Some(m) = wire::message(q, "idQuery", "id_query")? {
        found.push(OrgQuery::Id(wire::string(m, "id", "id")?));
    }
    if wire::message(q, "defaultQuery", "default_query")?.is_some() {
        found.push(OrgQuery::Default);
    }
    if found.len() > 1 {
        return Err(oneof_already_set("zitadel.org.v2.SearchQuery.query"));
    }
    Ok(found.pop())
}

/// The `query` and `sortingColumn` (one of `sorting_names`) of a v2 list request.
fn decode_v2_list(obj: &Obj, sorting_names: &[&str]) -> Result<V2List, ApiError> {
    let (offset, limit, asc) = decode_list_query(obj)?;
    let sorting = wire::enumeration(obj, "sortingColumn", "sorting_column", sorting_names)?;
    Ok((offset, limit, asc, sorting))
}

fn decode_list_orgs(body: &[u8]) -> Result<Req, ApiError> {
    let obj = wire::parse_body(body)?;
    let list = decode_v2_list(&obj, &ORG_FIELD_NAMES)?;
    let queries = wire::array(&obj, "queries", "queries")?
        .iter()
        .map(|q| decode_org_query(wire::element_message(q, "queries")?))
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Req::ListOrgsV2 { list, queries })
}

fn decode_user_queries(obj: &Obj, v2: bool) -> Result<Vec<Option<UserQuery>>, ApiError> {
    wire::array(obj, "queries", "queries")?
        .iter()
        .map(|q| decode_user_query(wire::element_message(q, "queries")?, v2))
        .collect()
}

/// Names of `zitadel.user.v2.UserState`, indexed by number.
const USER_STATES_V2: [&str; 6] = [
    "USER_STATE_UNSPECIFIED",
    "USER_STATE_ACTIVE",
    "USER_STATE_INACTIVE",
    "USER_STATE_DELETED",
    "USER_STATE_LOCKED",
    "USER_STATE_INITIAL",
];

/// Names of `zitadel.user.v2.UserFieldName`, indexed by number.
const USER_FIELD_NAMES_V2: [&str; 10] = [
    "USER_FIELD_NAME_UNSPECIFIED",
    "USER_FIELD_NAME_USER_NAME",
    "USER_FIELD_NAME_FIRST_NAME",
    "USER_FIELD_NAME_LAST_NAME",
    "USER_FIELD_NAME_NICK_NAME",
    "USER_FIELD_NAME_DISPLAY_NAME",
    "USER_FIELD_NAME_EMAIL",
    "USER_FIELD_NAME_STATE",
    "USER_FIELD_NAME_TYPE",
    "USER_FIELD_NAME_CREATION_DATE",
];

/// `zitadel.user.v2.ListUsersRequest` (v2e §1.8).
fn decode_list_users_v2(body: &[u8]) -> Result<Req, ApiError> {
    let obj = wire::parse_body(body)?;
    let list = decode_v2_list(&obj, &USER_FIELD_NAMES_V2)?;
    let queries = decode_user_queries(&obj, true)?;
    Ok(Req::ListUsersV2 { list, queries })
}

fn decode_user_query(q: &Obj, v2: bool) -> Result<Option<UserQuery>, ApiError> {
    let mut found = Vec::new();
    for spec in &USER_TEXT_QUERIES {
        if let Some(m) = wire::message(q, spec.oneof.0, spec.oneof.1)? {
            found.push(UserQuery::Text {
                field: spec.field,
                text: wire::string(m, spec.value.0, spec.value.1)?,
                method: wire::enumeration(m, "method", "method", &TEXT_QUERY_METHODS)?,
            });
        }
    }
    let states: &[&str] = if v2 { &USER_STATES_V2 } else { &USER_STATES };
    if let Some(v) = enum_query(q, ("stateQuery", "state_query"), "state", states)? {
        found.push(UserQuery::State(v));
    }
    if let Some(v) = enum_query(q, ("typeQuery", "type_query"), "type", &USER_TYPES)? {
        found.push(UserQuery::Type(v));
    }
    if !v2 && let Some(m) = wire::message(q, "resourceOwner", "resource_owner")? {
        found.push(UserQuery::ResourceOwner(wire::string(
            m, "orgId", "org_id",
        )?));
    }
    if v2 && let Some(m) = wire::message(q, "organizationIdQuery", "organization_id_query")? {
        found.push(UserQuery::ResourceOwner(wire::string(
            m,
            "organizationId",
            "organization_id",
        )?));
    }
    if let Some(m) = wire::message(q, "inUserIdsQuery", "in_user_ids_query")? {
        found.push(UserQuery::InUserIds(
            wire::array(m, "userIds", "user_ids")?
                .iter()
                .map(|id| wire::element_string(id, "user_ids"))
                .collect::<Result<_, _>>()?,
        ));
    }
    if let Some(m) = wire::message(q, "orQuery", "or_query")? {
        found.push(UserQuery::Or(decode_user_queries(m, v2)?));
    }
    if let Some(m) = wire::message(q, "andQuery", "and_query")? {
        found.push(UserQuery::And(decode_user_queries(m, v2)?));
    }
    if let Some(m) = wire::message(q, "notQuery", "not_query")? {
        let inner = match wire::message(m, "query", "query")? {
            Some(inner) => decode_user_query(inner, v2)?,
            None => None,
        };
        found.push(UserQuery::Not(Box::new(inner)));
    }
    if found.len() > 1 {
        return Err(oneof_already_set("zitadel.user.v1.SearchQuery.query"));
    }
    Ok(found.pop())
}

fn decode_list_users(body: &[u8]) -> Result<Req, ApiError> {
    let obj = wire::parse_body(body)?;
    // `asc` (and `sortingColumn`) are accepted but have no effect: results are ordered by id.
    let (offset, limit, _asc) = decode_list_query(&obj)?;
    let queries = decode_user_queries(&obj, false)?;
    Ok(Req::ListUsersV1 {
        offset,
        limit,
        queries,
    })
}

fn decode_bulk_remove(scope: Scope, body: &[u8]) -> Result<Req, ApiError> {
    let obj = wire::parse_body(body)?;
    decode_path_fields(&scope, &obj, false)?;
    let keys = wire::array(&obj, "keys", "keys")?
        .iter()
        .map(|k| wire::element_string(k, "keys"))
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Req::BulkRemove { scope, keys })
}

// ---------------------------------------------------------------------------------------------
// Authentication and authorization
// ---------------------------------------------------------------------------------------------

/// The authenticated caller.
pub(crate) struct Auth {
    pub(crate) grant: TokenGrant,
    /// Context org (empty for v2 calls, which ignore `x-zitadel-orgid`).
    pub(crate) ctx_org: String,
}

impl Auth {
    /// The editor recorded on the events of this caller's writes.
    pub(crate) fn editor(&self) -> String {
        self.grant
            .user_id
            .clone()
            .unwrap_or_else(|| super::state::ANONYMOUS_EDITOR.to_owned())
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .filter(|v| !v.is_empty())
}

pub(crate) fn authorize(
    st: &State,
    headers: &HeaderMap,
    permission: Option<Permission>,
) -> Result<Auth, ApiError> {
    let Some(raw) = header_text(headers, header::AUTHORIZATION.as_str()) else {
        return Err(ApiError::plain(
            code::UNAUTHENTICATED,
            "auth header missing",
        ));
    };
    let token = match raw.strip_prefix("Bearer ") {
        Some(token) if !token.contains("Bearer ") => token,
        _ => {
            return Err(ApiError::zitadel(
                code::UNAUTHENTICATED,
                "AUTH-toLo1",
                Msg::InvalidAuthHeader,
            ));
        }
    };
    let Some(grant) = st.token_grant(token) else {
        return Err(ApiError::zitadel(
            code::UNAUTHENTICATED,
            "AUTH-7fs1e",
            Msg::TokenInvalid,
        ));
    };
    let Some(permission) = permission else {
        return Ok(Auth {
            grant,
            ctx_org: String::new(),
        });
    };
    let ctx_org =
        header_text(headers, "x-zitadel-orgid").unwrap_or_else(|| grant.owner_org.clone());
    if !st.orgs.contains_key(&ctx_org) {
        return Err(ApiError::zitadel(
            code::PERMISSION_DENIED,
            "AUTH-Bs7Ds",
            Msg::OrgDoesNotExist,
        ));
    }
    if st.membership_check && !grant.has_membership(&ctx_org) {
        return Err(no_membership());
    }
    if !grant.allows(&ctx_org, permission) {
        return Err(ApiError::zitadel(
            code::PERMISSION_DENIED,
            "AUTH-5mWD2",
            Msg::NoMatchingPermissions,
        ));
    }
    Ok(Auth { grant, ctx_org })
}

/// 404 `AUTHZ-cdgFk`: the caller holds no role in the context org nor at instance level
/// (api §3).
pub(crate) fn no_membership() -> ApiError {
    ApiError::zitadel(code::NOT_FOUND, "AUTHZ-cdgFk", Msg::MembershipNotFound)
}

// ---------------------------------------------------------------------------------------------
// Validation (protoc-gen-validate): first violation only, no details
// ---------------------------------------------------------------------------------------------

fn runes(v: &str, min: usize, max: usize) -> Option<String> {
    let n = v.chars().count();
    (n < min || n > max)
        .then(|| format!("value length must be between {min} and {max} runes, inclusive"))
}

fn max_runes(v: &str, max: usize) -> Option<String> {
    (v.chars().count() > max).then(|| format!("value length must be at most {max} runes"))
}

fn byte_len(v: &[u8], min: usize, max: usize) -> Option<String> {
    (v.len() < min || v.len() > max)
        .then(|| format!("value length must be between {min} and {max} bytes, inclusive"))
}

fn defined_enum(v: i32, count: usize) -> Option<String> {
    usize::try_from(v)
        .ok()
        .filter(|v| *v < count)
        .is_none()
        .then(|| "value must be one of the defined enum values".to_owned())
}

/// `Err("invalid <message>.<field>: <reason>")` if a PGV rule gave a reason.
pub(crate) fn check(message: &str, field: &str, reason: Option<String>) -> Result<(), String> {
    match reason {
        Some(reason) => Err(format!("invalid {message}.{field}: {reason}")),
        None => Ok(()),
    }
}

/// PGV's message for an invalid embedded message.
pub(crate) fn embedded(message: &str, field: &str, cause: &str) -> String {
    format!("invalid {message}.{field}: embedded message failed validation | caused by: {cause}")
}

/// PGV's error for a required oneof with nothing set.
const QUERY_REQUIRED: &str = "invalid SearchQuery.Query: value is required";

/// Validates one text query message (`max_len` on the value, defined method enum).
fn check_text_query(
    message: &str,
    field: &str,
    text: &str,
    min: usize,
    method: i32,
) -> Result<(), String> {
    let length = if min == 0 {
        max_runes(text, MAX_QUERY_RUNES)
    } else {
        runes(text, min, MAX_QUERY_RUNES)
    };
    check(message, field, length).and_then(|()| {
        check(
            message,
            "Method",
            defined_enum(method, TEXT_QUERY_METHODS.len()),
        )
    })
}

fn validate_org_query(query: Option<&OrgQuery>) -> Result<(), String> {
    let in_search = |oneof: &str, cause: String| embedded("SearchQuery", oneof, &cause);
    match query {
        None => Err(QUERY_REQUIRED.to_owned()),
        Some(OrgQuery::Name { name, method }) => {
            check_text_query("OrganizationNameQuery", "Name", name, 1, *method)
                .map_err(|c| in_search("NameQuery", c))
        }
        Some(OrgQuery::Domain { domain, method }) => {
            check_text_query("OrganizationDomainQuery", "Domain", domain, 1, *method)
                .map_err(|c| in_search("DomainQuery", c))
        }
        Some(OrgQuery::State(state)) => check(
            "OrganizationStateQuery",
            "State",
            defined_enum(*state, ORG_STATES.len()),
        )
        .map_err(|c| in_search("StateQuery", c)),
        Some(OrgQuery::Id(id)) => check("OrganizationIDQuery", "Id", runes(id, 1, MAX_ID_RUNES))
            .map_err(|c| in_search("IdQuery", c)),
        Some(OrgQuery::Default) => Ok(()),
    }
}

fn validate_user_query(query: Option<&UserQuery>) -> Result<(), String> {
    let in_search = |oneof: &str, cause: String| embedded("SearchQuery", oneof, &cause);
    match query {
        None => Err(QUERY_REQUIRED.to_owned()),
        Some(UserQuery::Text {
            field,
            text,
            method,
        }) => {
            let spec = field.spec();
            check_text_query(spec.message, spec.value.2, text, 0, *method)
                .map_err(|c| in_search(spec.message, c))
        }
        Some(UserQuery::State(state)) => check(
            "StateQuery",
            "State",
            defined_enum(*state, USER_STATES.len()),
        )
        .map_err(|c| in_search("StateQuery", c)),
        Some(UserQuery::Type(kind)) => {
            check("TypeQuery", "Type", defined_enum(*kind, USER_TYPES.len()))
                .map_err(|c| in_search("TypeQuery", c))
        }
        Some(UserQuery::ResourceOwner(_) | UserQuery::InUserIds(_)) => Ok(()),
        Some(UserQuery::Or(queries)) => {
            validate_user_queries("OrQuery", queries).map_err(|c| in_search("OrQuery", c))
        }
        Some(UserQuery::And(queries)) => {
            validate_user_queries("AndQuery", queries).map_err(|c| in_search("AndQuery", c))
        }
        Some(UserQuery::Not(inner)) => validate_user_query(inner.as_ref().as_ref())
            .map_err(|c| in_search("NotQuery", embedded("NotQuery", "Query", &c))),
    }
}

fn validate_user_queries(message: &str, queries: &[Option<UserQuery>]) -> Result<(), String> {
    for (i, q) in queries.iter().enumerate() {
        validate_user_query(q.as_ref())
            .map_err(|c| embedded(message, &format!("Queries[{i}]"), &c))?;
    }
    Ok(())
}

fn validate(req: &Req) -> Result<(), String> {
    match req {
        Req::Set { scope, key, value } => {
            let m = scope.request("Set");
            scope.check_id(&m)?;
            check(&m, "Key", runes(key, 1, MAX_KEY_RUNES))?;
            check(&m, "Value", byte_len(value, 1, MAX_VALUE_BYTES))
        }
        Req::BulkSet { scope, items } => {
            let m = scope.request("BulkSet");
            scope.check_id(&m)?;
            let inner = format!("{m}_Metadata");
            for (i, (key, value)) in items.iter().enumerate() {
                check(&inner, "Key", runes(key, 1, MAX_KEY_RUNES))
                    .and_then(|()| check(&inner, "Value", byte_len(value, 1, MAX_VALUE_BYTES)))
                    .map_err(|cause| embedded(&m, &format!("Metadata[{i}]"), &cause))?;
            }
            Ok(())
        }
        Req::List { scope, queries, .. } => {
            let m = scope.request("List");
            scope.check_id(&m)?;
            for (i, q) in queries.iter().enumerate() {
                let Some(q) = q else { continue };
                check("MetadataKeyQuery", "Key", max_runes(&q.key, MAX_KEY_RUNES))
                    .and_then(|()| {
                        check(
                            "MetadataKeyQuery",
                            "Method",
                            defined_enum(q.method, TEXT_QUERY_METHODS.len()),
                        )
                    })
                    .map_err(|cause| {
                        embedded(
                            &m,
                            &format!("Queries[{i}]"),
                            &embedded("MetadataQuery", "KeyQuery", &cause),
                        )
                    })?;
            }
            Ok(())
        }
        Req::Get { scope, key } => {
            let m = scope.request("Get");
            scope.check_id(&m)?;
            check(&m, "Key", runes(key, 1, MAX_KEY_RUNES))
        }
        Req::Remove { scope, key } => {
            let m = scope.request("Remove");
            scope.check_id(&m)?;
            check(&m, "Key", runes(key, 1, MAX_KEY_RUNES))
        }
        Req::BulkRemove { scope, keys } => {
            let m = scope.request("BulkRemove");
            scope.check_id(&m)?;
            for (i, key) in keys.iter().enumerate() {
                check(&m, &format!("Keys[{i}]"), runes(key, 1, MAX_KEY_RUNES))?;
            }
            Ok(())
        }
        Req::UserV1 { id } => check("GetUserByIDRequest", "Id", runes(id, 1, MAX_ID_RUNES)),
        Req::UserV2 { id } => check("GetUserByIDRequest", "UserId", runes(id, 1, MAX_ID_RUNES)),
        Req::MyOrg => Ok(()),
        Req::ListOrgsV2 { queries, .. } => {
            for (i, q) in queries.iter().enumerate() {
                validate_org_query(q.as_ref()).map_err(|c| {
                    embedded("ListOrganizationsRequest", &format!("Queries[{i}]"), &c)
                })?;
            }
            Ok(())
        }
        Req::OrgByDomain { domain } => check(
            "GetOrgByDomainGlobalRequest",
            "Domain",
            runes(domain, 1, MAX_QUERY_RUNES),
        ),
        Req::UserByLoginName { login_name } => check(
            "GetUserByLoginNameGlobalRequest",
            "LoginName",
            runes(login_name, 1, MAX_QUERY_RUNES),
        ),
        Req::ListUsersV1 { queries, .. } | Req::ListUsersV2 { queries, .. } => {
            validate_user_queries("ListUsersRequest", queries)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Execution (commands and queries)
// ---------------------------------------------------------------------------------------------

fn user_not_found_command() -> ApiError {
    ApiError::zitadel(
        code::FAILED_PRECONDITION,
        "COMMAND-uXHNj",
        Msg::UserNotFound,
    )
}

fn no_data(id: &'static str) -> ApiError {
    ApiError::zitadel(code::FAILED_PRECONDITION, id, Msg::MetadataNoData)
}

/// The aggregate a write goes to, and its resource owner. User writes look the user up filtered
/// by the context org.
fn write_target<'a>(
    st: &'a mut State,
    scope: &Scope,
    ctx_org: &str,
) -> Result<(&'a mut Aggregate, String), ApiError> {
    match scope {
        Scope::Org => st
            .orgs
            .get_mut(ctx_org)
            .map(|o| (&mut o.agg, o.id.clone()))
            .ok_or_else(|| {
                ApiError::zitadel(code::FAILED_PRECONDITION, "COMMAND-QXPGs", Msg::OrgNotFound)
            }),
        Scope::User(id) => st
            .users
            .get_mut(id)
            .filter(|u| u.org_id == ctx_org)
            .map(|u| (&mut u.agg, u.org_id.clone()))
            .ok_or_else(user_not_found_command),
    }
}

/// The aggregate a read looks at (`None` when the user is not in the context org).
fn read_target<'a>(
    st: &'a State,
    scope: &Scope,
    ctx_org: &str,
) -> Option<(&'a Aggregate, &'a str)> {
    match scope {
        Scope::Org => st.orgs.get(ctx_org).map(|o| (&o.agg, o.id.as_str())),
        Scope::User(id) => st
            .users
            .get(id)
            .filter(|u| u.org_id == ctx_org)
            .map(|u| (&u.agg, u.org_id.as_str())),
    }
}

/// `ObjectDetails` of a write: Set fills `creationDate`, all other writes `changeDate`.
fn write_details(stamp: Stamp, owner: &str, creation_date: bool) -> Value {
    let date_field = if creation_date {
        "creationDate"
    } else {
        "changeDate"
    };
    Out::new()
        .obj(
            "details",
            Out::new()
                .u64("sequence", stamp.sequence)
                .time(date_field, stamp.at)
                .str("resourceOwner", owner),
        )
        .build()
}

fn metadata_item(key: &str, entry: &MetaEntry, owner: &str) -> Value {
    Out::new()
        .obj(
            "details",
            Out::new()
                .u64("sequence", entry.sequence)
                .time("creationDate", entry.creation_date)
                .time("changeDate", entry.change_date)
                .str("resourceOwner", owner),
        )
        .str("key", key)
        .bytes("value", &entry.value)
        .build()
}

/// [`WriteFault::Corrupt`]: flips all bits of the last byte (appends `x` to an empty value).
pub(crate) fn corrupt(value: &mut Vec<u8>) {
    match value.last_mut() {
        Some(last) => *last = !*last,
        None => value.push(b'x'),
    }
}

/// Offset/limit pagination; `limit` 0 = no limit.
pub(crate) fn page<T>(items: Vec<T>, offset: u64, limit: u32) -> Vec<T> {
    let skip = usize::try_from(offset).unwrap_or(usize::MAX);
    let take = if limit == 0 {
        usize::MAX
    } else {
        usize::try_from(limit).unwrap_or(usize::MAX)
    };
    items.into_iter().skip(skip).take(take).collect()
}

/// v1 `ListDetails` (`zitadel.v1.ListDetails`).
/// A list answer: the v1 or `v2` `details` with the total before paging, and the page of
/// `matches` (from `offset`, at most `limit`) as `result`, each built by `item`.
fn list_answer<T>(
    st: &State,
    v2: bool,
    matches: Vec<T>,
    (offset, limit): (u64, u32),
    item: impl FnMut(T) -> Value,
) -> Out {
    let total = matches.len() as u64;
    let result = page(matches, offset, limit).into_iter().map(item).collect();
    let details = if v2 {
        list_details_v2(total, st)
    } else {
        list_details_v1(total, st)
    };
    Out::new().obj("details", details).list("result", result)
}

fn list_details_v1(total: u64, st: &State) -> Out {
    Out::new()
        .u64("totalResult", total)
        .u64("processedSequence", st.total_events)
        .time("viewTimestamp", Utc::now())
}

/// v2 `ListDetails` (`zitadel.object.v2.ListDetails`: the timestamp field is `timestamp`).
fn list_details_v2(total: u64, st: &State) -> Out {
    Out::new()
        .u64("totalResult", total)
        .u64("processedSequence", st.total_events)
        .time("timestamp", Utc::now())
}

/// Runs one v1 / v2-query request on the state and builds its answer.
// Long because it is the dispatch over every v1 route: the larger arms are functions of their own
// (set, bulk_set, list_metadata, list_orgs_v2, list_users_v2); the short ones read best in place.
fn execute(
    st: &mut State,
    auth: &Auth,
    req: Req,
    write_fault: Option<WriteFault>,
) -> Result<Value, ApiError> {
    let ctx_org = auth.ctx_org.as_str();
    let editor = auth.editor();
    match req {
        Req::Set { scope, key, value } => set(st, auth, scope, key, value, write_fault),
        Req::BulkSet { scope, items } => bulk_set(st, auth, scope, items, write_fault),
        Req::Remove { scope, key } => {
            let push = st.push_by(&editor);
            let (agg, owner) = write_target(st, &scope, ctx_org)?;
            if !agg.metadata.contains_key(&key) {
                return Err(ApiError::zitadel(
                    code::NOT_FOUND,
                    scope.id("META-mcnw3", "META-ncnw3"),
                    Msg::MetadataNotFound,
                ));
            }
            let stamp = agg.remove_metadata(&push, &key);
            st.total_events += 1;
            Ok(write_details(stamp, &owner, false))
        }
        Req::BulkRemove { scope, keys } => {
            if keys.is_empty() {
                return Err(no_data(scope.id("META-9mw2d", "META-9mm2d")));
            }
            let push = st.push_by(&editor);
            let (agg, owner) = write_target(st, &scope, ctx_org)?;
            if keys.iter().any(|k| !agg.metadata.contains_key(k)) {
                return Err(ApiError::zitadel(
                    code::NOT_FOUND,
                    scope.id("META-2npds", "META-2nnds"),
                    Msg::MetadataKeyNotExisting,
                ));
            }
            let mut stamp = agg.last_metadata_stamp();
            for key in &keys {
                stamp = agg.remove_metadata(&push, key);
            }
            st.total_events += keys.len() as u64;
            Ok(write_details(stamp, &owner, false))
        }
        Req::Get { scope, key } => {
            let found = read_target(st, &scope, ctx_org)
                .and_then(|(agg, owner)| agg.metadata.get(&key).map(|e| (e, owner)));
            match found {
                Some((entry, owner)) => {
                    Ok(serde_json::json!({ "metadata": metadata_item(&key, entry, owner) }))
                }
                None => Err(ApiError::zitadel(
                    code::NOT_FOUND,
                    scope.id("QUERY-Rph32", "QUERY-Rgh32"),
                    Msg::MetadataNotFound,
                )),
            }
        }
        Req::List {
            scope,
            offset,
            limit,
            queries,
        } => list_metadata(st, auth, scope, (offset, limit), queries),
        Req::UserV1 { id } => {
            let user = st
                .users
                .get(&id)
                .filter(|u| u.org_id == ctx_org)
                .ok_or_else(|| {
                    ApiError::zitadel(code::NOT_FOUND, "MANAG-fpo4B", Msg::UserNotFound)
                })?;
            Ok(Out::new().obj("user", user_v1(user, st)).build())
        }
        Req::UserV2 { id } => {
            let user = st
                .users
                .get(&id)
                .filter(|u| auth.grant.allows(&u.org_id, Permission::UserRead))
                .ok_or_else(|| {
                    ApiError::zitadel(code::NOT_FOUND, "QUERY-Dfbg2", Msg::UserNotFound)
                })?;
            Ok(Out::new()
                .obj("details", user_v2_details(user))
                .obj("user", user_v2(user, st))
                .build())
        }
        Req::MyOrg => {
            let org = st.orgs.get(ctx_org).ok_or_else(|| {
                ApiError::zitadel(code::NOT_FOUND, "QUERY-Dgbe2", Msg::OrgNotFound)
            })?;
            Ok(Out::new().obj("org", org_v1(org)).build())
        }
        Req::ListOrgsV2 { list, queries } => list_orgs_v2(st, auth, list, queries),
        Req::OrgByDomain { domain } => {
            let org = st
                .orgs
                .values()
                .find(|o| o.primary_domain == domain)
                .ok_or_else(|| {
                    ApiError::zitadel(code::NOT_FOUND, "QUERY-iTTGJ", Msg::OrgNotFound)
                })?;
            Ok(Out::new().obj("org", org_v1(org)).build())
        }
        Req::UserByLoginName { login_name } => {
            // ZITADEL matches the preferred login name exactly (TextEquals).
            let user = st
                .users
                .values()
                .find(|u| u.login_name(&st.orgs) == login_name)
                .ok_or_else(|| {
                    ApiError::zitadel(code::NOT_FOUND, "QUERY-Dfbg2", Msg::UserNotFound)
                })?;
            Ok(Out::new().obj("user", user_v1(user, st)).build())
        }
        Req::ListUsersV2 { list, queries } => Ok(list_users_v2(st, auth, list, queries)),
        Req::ListUsersV1 {
            offset,
            limit,
            queries,
        } => {
            // Validation rejected queries with nothing set.
            let queries: Vec<UserQuery> = queries.into_iter().flatten().collect();
            let matches: Vec<&User> = st
                .users
                .values()
                .filter(|u| u.org_id == ctx_org)
                .filter(|u| queries.iter().all(|q| q.matches(u, &st.orgs)))
                .collect();
            Ok(list_answer(st, false, matches, (offset, limit), |u| {
                user_v1(u, st).build()
            })
            .build())
        }
    }
}

/// `SetMetadata` (v1): one key; a dropped write answers but stores nothing.
fn set(
    st: &mut State,
    auth: &Auth,
    scope: Scope,
    key: String,
    value: Vec<u8>,
    write_fault: Option<WriteFault>,
) -> Result<Value, ApiError> {
    let skip_unchanged = !scope.is_org() && st.mode.user_set_skips_unchanged;
    let (stamp, owner) = write_items(
        st,
        auth,
        &scope,
        vec![(key, value)],
        skip_unchanged,
        write_fault,
    )?;
    Ok(write_details(stamp, &owner, true))
}

/// `BulkSetMetadata` (v1); a dropped write answers but stores nothing.
fn bulk_set(
    st: &mut State,
    auth: &Auth,
    scope: Scope,
    items: Vec<(String, Vec<u8>)>,
    write_fault: Option<WriteFault>,
) -> Result<Value, ApiError> {
    if items.is_empty() {
        return Err(no_data("META-9mm2d"));
    }
    let skip_unchanged = if scope.is_org() {
        st.mode.org_bulk_set_skips_unchanged
    } else {
        st.mode.user_set_skips_unchanged
    };
    let (stamp, owner) = write_items(st, auth, &scope, items, skip_unchanged, write_fault)?;
    Ok(write_details(stamp, &owner, false))
}

/// Writes `items` (corrupted first by a corrupting fault) to the target of `scope`, one event
/// per written item, skipping unchanged values when `skip_unchanged`; a dropped write works on a
/// copy and stores nothing. Returns the stamp of the last event written (else of the latest
/// metadata event) and the owner.
fn write_items(
    st: &mut State,
    auth: &Auth,
    scope: &Scope,
    mut items: Vec<(String, Vec<u8>)>,
    skip_unchanged: bool,
    write_fault: Option<WriteFault>,
) -> Result<(Stamp, String), ApiError> {
    let dropped = write_fault == Some(WriteFault::Drop);
    if write_fault == Some(WriteFault::Corrupt) {
        for (_, value) in &mut items {
            corrupt(value);
        }
    }
    let push = st.push_by(&auth.editor());
    let (agg, owner) = write_target(st, scope, auth.ctx_org.as_str())?;
    let mut scratch;
    let agg = if dropped {
        scratch = agg.clone();
        &mut scratch
    } else {
        agg
    };
    let mut last = None;
    let mut written = 0;
    for (key, value) in &items {
        if skip_unchanged && agg.holds(key, value) {
            continue;
        }
        last = Some(agg.set_metadata(&push, key, value));
        written += 1;
    }
    let stamp = last.unwrap_or_else(|| agg.last_metadata_stamp());
    if !dropped {
        st.total_events += written;
    }
    Ok((stamp, owner))
}

/// `ListMetadata` (v1) of the context org or one of its users.
fn list_metadata(
    st: &mut State,
    auth: &Auth,
    scope: Scope,
    (offset, limit): (u64, u32),
    queries: Vec<Option<KeyQuery>>,
) -> Result<Value, ApiError> {
    let ctx_org = auth.ctx_org.as_str();
    let Some(queries) = queries.into_iter().collect::<Option<Vec<KeyQuery>>>() else {
        return Err(ApiError::zitadel(
            code::INVALID_ARGUMENT,
            scope.id("METAD-fdg23", "METAD-Vn7qy"),
            Msg::ListQueryInvalid,
        ));
    };
    let shuffle = st.shuffler();
    let (mut matches, owner) = match read_target(st, &scope, ctx_org) {
        Some((agg, owner)) => (
            agg.metadata
                .iter()
                .filter(|(k, _)| queries.iter().all(|q| q.matches(k)))
                .collect::<Vec<_>>(),
            owner,
        ),
        None => (Vec::new(), ""),
    };
    // No sorting column (checklist item 12): any order, a new one per request when
    // shuffled.
    super::state::apply_order(shuffle, &mut matches);
    let item = |(k, e): (&String, &MetaEntry)| metadata_item(k, e, owner);
    Ok(list_answer(st, false, matches, (offset, limit), item).build())
}

/// `ListOrganizations` of the organization v2 service: the orgs the caller may read.
fn list_orgs_v2(
    st: &mut State,
    auth: &Auth,
    (offset, limit, asc, sorting): V2List,
    queries: Vec<Option<OrgQuery>>,
) -> Result<Value, ApiError> {
    if limit > V2_MAX_LIMIT {
        return Err(ApiError::zitadel(
            code::INVALID_ARGUMENT,
            "QUERY-4M0fs",
            Msg::QueryLimitExceeded,
        ));
    }
    let limit = if limit == 0 { V2_DEFAULT_LIMIT } else { limit };
    // Validation rejected queries with nothing set.
    let queries: Vec<OrgQuery> = queries.into_iter().flatten().collect();
    let shuffle = st.shuffler();
    let default_org = st.default_org.as_deref();
    let mut matches: Vec<&Org> = st
        .orgs
        .values()
        .filter(|o| auth.grant.allows(&o.id, Permission::OrgRead))
        .filter(|o| queries.iter().all(|q| q.matches(o, default_org)))
        .collect();
    // Without a sorting column ZITADEL applies no ORDER BY; the emulator keeps id order.
    let sorted = match sorting {
        1 => {
            matches.sort_by_cached_key(|o| o.name.to_lowercase());
            true
        }
        2 => {
            matches.sort_by_key(|o| o.agg.creation_date);
            true
        }
        _ => {
            super::state::apply_order(shuffle, &mut matches);
            false
        }
    };
    if sorted && !asc {
        matches.reverse();
    }
    Ok(list_answer(st, true, matches, (offset, limit), |o| org_v2(o).build()).build())
}

/// `ListUsers` of the user v2 service: instance-wide, filtered to users the caller may read, no
/// default limit (v2e §1.8).
fn list_users_v2(
    st: &State,
    auth: &Auth,
    (offset, limit, asc, sorting): V2List,
    queries: Vec<Option<UserQuery>>,
) -> Value {
    // Validation rejected queries with nothing set.
    let queries: Vec<UserQuery> = queries.into_iter().flatten().collect();
    let mut matches: Vec<&User> = st
        .users
        .values()
        .filter(|u| auth.grant.allows(&u.org_id, Permission::UserRead))
        .filter(|u| queries.iter().all(|q| q.matches(u, &st.orgs)))
        .collect();
    let sorted = match sorting {
        1 | 2 | 5 => {
            matches.sort_by(|a, b| a.user_name.cmp(&b.user_name));
            true
        }
        6 => {
            matches.sort_by_cached_key(|u| u.email(&st.orgs));
            true
        }
        9 => {
            matches.sort_by_key(|u| u.agg.creation_date);
            true
        }
        _ => false,
    };
    if sorted && !asc {
        matches.reverse();
    }
    let sorting_name = usize::try_from(sorting)
        .ok()
        .and_then(|i| USER_FIELD_NAMES_V2.get(i))
        .filter(|_| sorting != 0)
        .copied()
        .unwrap_or_default();
    list_answer(st, true, matches, (offset, limit), |u| {
        user_v2(u, st).build()
    })
    .str("sortingColumn", sorting_name)
    .build()
}

fn login_name_values(user: &User, st: &State) -> Vec<Value> {
    user.login_names(&st.orgs)
        .into_iter()
        .map(Value::String)
        .collect()
}

/// The `details` of a user or org: v1 also reports the `creationDate`.
fn aggregate_details(agg: &Aggregate, owner: &str, creation_date: bool) -> Out {
    let details = Out::new().u64("sequence", agg.sequence);
    let details = if creation_date {
        details.time("creationDate", agg.creation_date)
    } else {
        details
    };
    details
        .time("changeDate", agg.change_date)
        .str("resourceOwner", owner)
}

/// The fields v1 and v2 name differently in a user: id, user name, given and family name,
/// email verified.
struct UserFieldNames {
    id: &'static str,
    user_name: &'static str,
    given: &'static str,
    family: &'static str,
    verified: &'static str,
    v1: bool,
}

fn user_out(user: &User, st: &State, n: &UserFieldNames) -> Out {
    let login = user.login_name(&st.orgs);
    let email = user.email(&st.orgs);
    let profile = Out::new()
        .str(n.given, &user.user_name)
        .str(n.family, PROFILE_LAST_NAME)
        .str("displayName", &user.user_name);
    let email = Out::new().str("email", &email).bool(n.verified, true);
    Out::new()
        .str(n.id, &user.id)
        .obj("details", aggregate_details(&user.agg, &user.org_id, n.v1))
        .str("state", "USER_STATE_ACTIVE")
        .str(n.user_name, &user.user_name)
        .list("loginNames", login_name_values(user, st))
        .str("preferredLoginName", &login)
        .obj(
            "human",
            Out::new().obj("profile", profile).obj("email", email),
        )
}

fn user_v1(user: &User, st: &State) -> Out {
    let names = UserFieldNames {
        id: "id",
        user_name: "userName",
        given: "firstName",
        family: "lastName",
        verified: "isEmailVerified",
        v1: true,
    };
    user_out(user, st, &names)
}

fn user_v2_details(user: &User) -> Out {
    aggregate_details(&user.agg, &user.org_id, false)
}

fn user_v2(user: &User, st: &State) -> Out {
    let names = UserFieldNames {
        id: "userId",
        user_name: "username",
        given: "givenName",
        family: "familyName",
        verified: "isVerified",
        v1: false,
    };
    user_out(user, st, &names)
}

/// `zitadel.org.v1.Org` (`v1`) or `zitadel.org.v2.Organization`.
fn org_out(org: &Org, v1: bool) -> Out {
    let state = if v1 {
        "ORG_STATE_ACTIVE"
    } else {
        "ORGANIZATION_STATE_ACTIVE"
    };
    Out::new()
        .str("id", &org.id)
        .obj("details", aggregate_details(&org.agg, &org.id, v1))
        .str("state", state)
        .str("name", &org.name)
        .str("primaryDomain", &org.primary_domain)
}

fn org_v1(org: &Org) -> Out {
    org_out(org, true)
}

/// `zitadel.org.v2.Organization`.
fn org_v2(org: &Org) -> Out {
    org_out(org, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_query_methods() {
        let q = |key: &str, method| KeyQuery {
            key: key.into(),
            method,
        };
        assert!(q("Team", 0).matches("Team"));
        assert!(!q("team", 0).matches("Team"));
        assert!(q("team", 1).matches("TEAM"));
        assert!(q("te", 2).matches("team"));
        assert!(q("TE", 3).matches("team"));
        assert!(q("a%", 4).matches("xa%y"));
        assert!(!q("a%", 4).matches("xaby"));
        assert!(q("EA", 5).matches("team"));
        assert!(q("am", 6).matches("team"));
        assert!(q("AM", 7).matches("team"));
        assert!(!q("a_", 6).matches("ab"));
    }

    #[test]
    fn corrupt_flips_the_last_byte() {
        let mut v = b"ab".to_vec();
        corrupt(&mut v);
        assert_eq!(v, [b'a', !b'b']);
        let mut empty = Vec::new();
        corrupt(&mut empty);
        assert_eq!(empty, b"x");
    }

    #[test]
    fn paging() {
        assert_eq!(page(vec![1, 2, 3, 4], 1, 2), [2, 3]);
        assert_eq!(page(vec![1, 2, 3], 0, 0), [1, 2, 3]);
        assert_eq!(page(vec![1, 2, 3], 5, 0), Vec::<i32>::new());
    }

    #[test]
    fn proto_sizes() {
        assert_eq!(len_field(0), 2);
        assert_eq!(len_field(127), 129);
        assert_eq!(len_field(128), 131);
    }
}
