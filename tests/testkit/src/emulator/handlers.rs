//! Request pipeline of the emulated API, in ZITADEL's order: routing → body decoding (gateway) →
//! gRPC message size → authentication → context org → permission → request validation (PGV) →
//! command/query execution.

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
const TEXT_QUERY_METHODS: [&str; 8] = [
    "TEXT_QUERY_METHOD_EQUALS",
    "TEXT_QUERY_METHOD_EQUALS_IGNORE_CASE",
    "TEXT_QUERY_METHOD_STARTS_WITH",
    "TEXT_QUERY_METHOD_STARTS_WITH_IGNORE_CASE",
    "TEXT_QUERY_METHOD_CONTAINS",
    "TEXT_QUERY_METHOD_CONTAINS_IGNORE_CASE",
    "TEXT_QUERY_METHOD_ENDS_WITH",
    "TEXT_QUERY_METHOD_ENDS_WITH_IGNORE_CASE",
];

/// gRPC's default maximum received message size.
const MAX_GRPC_MESSAGE: usize = 4 * 1024 * 1024;
const MAX_KEY_RUNES: usize = 200;
const MAX_ID_RUNES: usize = 200;
const MAX_VALUE_BYTES: usize = 500_000;

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

/// One `MetadataKeyQuery`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyQuery {
    key: String,
    method: i32,
}

impl KeyQuery {
    /// Literal matching (LIKE wildcards are escaped by ZITADEL); ignore-case variants lowercase
    /// both sides.
    fn matches(&self, key: &str) -> bool {
        let ignore_case = self.method % 2 == 1;
        let (k, q) = if ignore_case {
            (key.to_lowercase(), self.key.to_lowercase())
        } else {
            (key.to_owned(), self.key.clone())
        };
        match self.method {
            0 | 1 => k == q,
            2 | 3 => k.starts_with(&q),
            4 | 5 => k.contains(&q),
            6 | 7 => k.ends_with(&q),
            _ => false,
        }
    }
}

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
            Req::UserV1 { .. } => Some(Permission::UserRead),
            Req::MyOrg => Some(Permission::OrgRead),
            Req::UserV2 { .. } => None,
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
fn len_field(len: usize) -> usize {
    let mut varint = 1;
    let mut n = len >> 7;
    while n > 0 {
        varint += 1;
        n >>= 7;
    }
    1 + varint + len
}

/// Handles a routed request and renders the response.
pub(crate) fn handle(
    state: &Mutex<State>,
    route: &Route,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    match exec(state, route, headers, body) {
        Ok(value) => Json(value).into_response(),
        Err(e) => {
            let german = lock(state).german;
            e.render(german)
        }
    }
}

fn exec(
    state: &Mutex<State>,
    route: &Route,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, ApiError> {
    let (op, params) = match route {
        Route::Api(op, params) => (*op, params),
        Route::NotFound => return Err(ApiError::plain(code::NOT_FOUND, "Not Found")),
        Route::MethodNotAllowed => {
            return Err(ApiError::plain(code::UNIMPLEMENTED, "Method Not Allowed"));
        }
    };
    let req = decode(op, params, body)?;
    let size = req.proto_size();
    if size > MAX_GRPC_MESSAGE {
        return Err(ApiError::plain(
            code::RESOURCE_EXHAUSTED,
            format!("grpc: received message larger than max ({size} vs. {MAX_GRPC_MESSAGE})"),
        ));
    }
    let mut st = lock(state);
    let auth = authorize(&st, headers, req.permission())?;
    validate(&req).map_err(ApiError::invalid_argument)?;
    execute(&mut st, &auth, req)
}

// ---------------------------------------------------------------------------------------------
// Decoding (grpc-gateway: body and path parameters into the proto request message)
// ---------------------------------------------------------------------------------------------

fn decode(op: Operation, params: &Params, body: &[u8]) -> Result<Req, ApiError> {
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
        Operation::GetUserV2 => Req::UserV2 { id },
        Operation::GetMyOrg => Req::MyOrg,
        Operation::Other => return Err(ApiError::plain(code::NOT_FOUND, "Not Found")),
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
    let items = wire::array(&obj, "metadata", "metadata")?
        .iter()
        .map(|item| {
            let item = wire::element_message(item, "metadata")?;
            Ok((
                wire::string(item, "key", "key")?,
                wire::bytes(item, "value", "value")?,
            ))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Req::BulkSet { scope, items })
}

fn decode_list(scope: Scope, body: &[u8]) -> Result<Req, ApiError> {
    let obj = wire::parse_body(body)?;
    decode_path_fields(&scope, &obj, false)?;
    let (offset, limit) = match wire::message(&obj, "query", "query")? {
        Some(q) => {
            let offset = wire::uint64(q, "offset", "offset")?;
            let limit = wire::uint32(q, "limit", "limit")?;
            // `asc` is accepted but has no effect: v1 metadata lists have no sorting column.
            wire::boolean(q, "asc", "asc")?;
            (offset, limit)
        }
        None => (0, 0),
    };
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
struct Auth {
    grant: TokenGrant,
    /// Context org (empty for v2 calls, which ignore `x-zitadel-orgid`).
    ctx_org: String,
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .filter(|v| !v.is_empty())
}

fn authorize(
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
    let Some(grant) = st.tokens.get(token) else {
        return Err(ApiError::zitadel(
            code::UNAUTHENTICATED,
            "AUTH-7fs1e",
            Msg::TokenInvalid,
        ));
    };
    let Some(permission) = permission else {
        return Ok(Auth {
            grant: grant.clone(),
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
    if !grant.allows(&ctx_org, permission) {
        return Err(ApiError::zitadel(
            code::PERMISSION_DENIED,
            "AUTH-5mWD2",
            Msg::NoMatchingPermissions,
        ));
    }
    Ok(Auth {
        grant: grant.clone(),
        ctx_org,
    })
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

fn check(message: &str, field: &str, reason: Option<String>) -> Result<(), String> {
    match reason {
        Some(reason) => Err(format!("invalid {message}.{field}: {reason}")),
        None => Ok(()),
    }
}

fn embedded(message: &str, field: &str, cause: &str) -> String {
    format!("invalid {message}.{field}: embedded message failed validation | caused by: {cause}")
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

fn execute(st: &mut State, auth: &Auth, req: Req) -> Result<Value, ApiError> {
    let ctx_org = auth.ctx_org.as_str();
    let mode = st.mode;
    match req {
        Req::Set { scope, key, value } => {
            let skip_unchanged = !scope.is_org() && mode.user_set_skips_unchanged;
            let at = st.now();
            let (agg, owner) = write_target(st, &scope, ctx_org)?;
            let (stamp, written) = if skip_unchanged && agg.holds(&key, &value) {
                (agg.last_metadata_stamp(), 0)
            } else {
                (agg.set_metadata(&key, &value, at), 1)
            };
            st.total_events += written;
            Ok(write_details(stamp, &owner, true))
        }
        Req::BulkSet { scope, items } => {
            if items.is_empty() {
                return Err(no_data("META-9mm2d"));
            }
            let skip_unchanged = if scope.is_org() {
                mode.org_bulk_set_skips_unchanged
            } else {
                mode.user_set_skips_unchanged
            };
            let at = st.now();
            let (agg, owner) = write_target(st, &scope, ctx_org)?;
            let mut last = None;
            let mut written = 0;
            for (key, value) in &items {
                if skip_unchanged && agg.holds(key, value) {
                    continue;
                }
                last = Some(agg.set_metadata(key, value, at));
                written += 1;
            }
            let stamp = last.unwrap_or_else(|| agg.last_metadata_stamp());
            st.total_events += written;
            Ok(write_details(stamp, &owner, false))
        }
        Req::Remove { scope, key } => {
            let at = st.now();
            let (agg, owner) = write_target(st, &scope, ctx_org)?;
            if !agg.metadata.contains_key(&key) {
                let id = if scope.is_org() {
                    "META-mcnw3"
                } else {
                    "META-ncnw3"
                };
                return Err(ApiError::zitadel(
                    code::NOT_FOUND,
                    id,
                    Msg::MetadataNotFound,
                ));
            }
            let stamp = agg.remove_metadata(&key, at);
            st.total_events += 1;
            Ok(write_details(stamp, &owner, false))
        }
        Req::BulkRemove { scope, keys } => {
            if keys.is_empty() {
                return Err(no_data(if scope.is_org() {
                    "META-9mw2d"
                } else {
                    "META-9mm2d"
                }));
            }
            let at = st.now();
            let (agg, owner) = write_target(st, &scope, ctx_org)?;
            if keys.iter().any(|k| !agg.metadata.contains_key(k)) {
                let id = if scope.is_org() {
                    "META-2npds"
                } else {
                    "META-2nnds"
                };
                return Err(ApiError::zitadel(
                    code::NOT_FOUND,
                    id,
                    Msg::MetadataKeyNotExisting,
                ));
            }
            let mut stamp = agg.last_metadata_stamp();
            for key in &keys {
                stamp = agg.remove_metadata(key, at);
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
                None => {
                    let id = if scope.is_org() {
                        "QUERY-Rph32"
                    } else {
                        "QUERY-Rgh32"
                    };
                    Err(ApiError::zitadel(
                        code::NOT_FOUND,
                        id,
                        Msg::MetadataNotFound,
                    ))
                }
            }
        }
        Req::List {
            scope,
            offset,
            limit,
            queries,
        } => {
            let Some(queries) = queries.into_iter().collect::<Option<Vec<KeyQuery>>>() else {
                let id = if scope.is_org() {
                    "METAD-fdg23"
                } else {
                    "METAD-Vn7qy"
                };
                return Err(ApiError::zitadel(
                    code::INVALID_ARGUMENT,
                    id,
                    Msg::ListQueryInvalid,
                ));
            };
            let (matches, owner) = match read_target(st, &scope, ctx_org) {
                Some((agg, owner)) => (
                    agg.metadata
                        .iter()
                        .filter(|(k, _)| queries.iter().all(|q| q.matches(k)))
                        .collect::<Vec<_>>(),
                    owner,
                ),
                None => (Vec::new(), ""),
            };
            let total = matches.len() as u64;
            let skip = usize::try_from(offset).unwrap_or(usize::MAX);
            let take = if limit == 0 {
                usize::MAX
            } else {
                usize::try_from(limit).unwrap_or(usize::MAX)
            };
            let result = matches
                .into_iter()
                .skip(skip)
                .take(take)
                .map(|(k, e)| metadata_item(k, e, owner))
                .collect();
            Ok(Out::new()
                .obj(
                    "details",
                    Out::new()
                        .u64("totalResult", total)
                        .u64("processedSequence", st.total_events)
                        .time("viewTimestamp", Utc::now()),
                )
                .list("result", result)
                .build())
        }
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
    }
}

fn user_v1(user: &User, st: &State) -> Out {
    let login = user.login_name(&st.orgs);
    Out::new()
        .str("id", &user.id)
        .obj(
            "details",
            Out::new()
                .u64("sequence", user.agg.sequence)
                .time("creationDate", user.agg.creation_date)
                .time("changeDate", user.agg.change_date)
                .str("resourceOwner", &user.org_id),
        )
        .str("state", "USER_STATE_ACTIVE")
        .str("userName", &user.user_name)
        .list("loginNames", vec![Value::String(login.clone())])
        .str("preferredLoginName", &login)
        .obj(
            "human",
            Out::new()
                .obj(
                    "profile",
                    Out::new()
                        .str("firstName", &user.user_name)
                        .str("lastName", "Emulated")
                        .str("displayName", &user.user_name),
                )
                .obj(
                    "email",
                    Out::new()
                        .str("email", &login)
                        .bool("isEmailVerified", true),
                ),
        )
}

fn user_v2_details(user: &User) -> Out {
    Out::new()
        .u64("sequence", user.agg.sequence)
        .time("changeDate", user.agg.change_date)
        .str("resourceOwner", &user.org_id)
}

fn user_v2(user: &User, st: &State) -> Out {
    let login = user.login_name(&st.orgs);
    Out::new()
        .str("userId", &user.id)
        .obj("details", user_v2_details(user))
        .str("state", "USER_STATE_ACTIVE")
        .str("username", &user.user_name)
        .list("loginNames", vec![Value::String(login.clone())])
        .str("preferredLoginName", &login)
        .obj(
            "human",
            Out::new()
                .obj(
                    "profile",
                    Out::new()
                        .str("givenName", &user.user_name)
                        .str("familyName", "Emulated")
                        .str("displayName", &user.user_name),
                )
                .obj(
                    "email",
                    Out::new().str("email", &login).bool("isVerified", true),
                ),
        )
}

fn org_v1(org: &Org) -> Out {
    Out::new()
        .str("id", &org.id)
        .obj(
            "details",
            Out::new()
                .u64("sequence", org.agg.sequence)
                .time("creationDate", org.agg.creation_date)
                .time("changeDate", org.agg.change_date)
                .str("resourceOwner", &org.id),
        )
        .str("state", "ORG_STATE_ACTIVE")
        .str("name", &org.name)
        .str("primaryDomain", &org.primary_domain)
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
    fn proto_sizes() {
        assert_eq!(len_field(0), 2);
        assert_eq!(len_field(127), 129);
        assert_eq!(len_field(128), 131);
    }
}
