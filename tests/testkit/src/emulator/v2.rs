//! The v2 and v2beta metadata RPCs (v2e §1.1–§1.5), over Connect and the `/v2/...` REST
//! transcoding: decoding, PGV validation, the command layer's order of checks, permissions,
//! pagination and the exact answer shapes.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::errors::{ApiError, Msg, code};
use super::handlers::{Auth, KeyQuery, check, embedded, len_field};
use super::model::{Operation, Permission};
use super::profile::ProfileFacts;
use super::routes::Params;
use super::state::{Aggregate, MetaEntry, Push, State};
use super::wire::{self, Obj, Out};

/// v2 list default and maximum limit (`SystemDefaults.DefaultQueryLimit` / `MaxQueryLimit`).
pub(crate) const V2_DEFAULT_LIMIT: u32 = 100;
pub(crate) const V2_MAX_LIMIT: u32 = 1000;
const MAX_KEY_RUNES: usize = 200;
const MAX_ID_RUNES: usize = 200;
const MAX_VALUE_BYTES: usize = 500_000;

/// Names of `zitadel.filter.v2.TextFilterMethod`, indexed by number.
const TEXT_FILTER_METHODS: [&str; 8] = [
    "TEXT_FILTER_METHOD_EQUALS",
    "TEXT_FILTER_METHOD_EQUALS_IGNORE_CASE",
    "TEXT_FILTER_METHOD_STARTS_WITH",
    "TEXT_FILTER_METHOD_STARTS_WITH_IGNORE_CASE",
    "TEXT_FILTER_METHOD_CONTAINS",
    "TEXT_FILTER_METHOD_CONTAINS_IGNORE_CASE",
    "TEXT_FILTER_METHOD_ENDS_WITH",
    "TEXT_FILTER_METHOD_ENDS_WITH_IGNORE_CASE",
];

/// Which service a v2 metadata RPC belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    User,
    Org,
    OrgBeta,
}

impl Api {
    fn id_field(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Api::User => ("userId", "user_id", "UserId"),
            Api::Org | Api::OrgBeta => ("organizationId", "organization_id", "OrganizationId"),
        }
    }

    fn request(self, verb: &str) -> String {
        match self {
            Api::User => format!("{verb}UserMetadataRequest"),
            Api::Org | Api::OrgBeta => format!("{verb}OrganizationMetadataRequest"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum V2Req {
    Set {
        target: String,
        items: Vec<(String, Vec<u8>)>,
    },
    List {
        target: String,
        offset: u64,
        limit: u32,
        asc: bool,
        /// `None` = a filter with nothing set.
        filters: Vec<Option<KeyQuery>>,
    },
    Delete {
        target: String,
        keys: Vec<String>,
    },
}

fn api_of(op: Operation) -> Option<Api> {
    Some(match op {
        Operation::SetUserMetadataV2
        | Operation::ListUserMetadataV2
        | Operation::DeleteUserMetadataV2 => Api::User,
        Operation::SetOrgMetadataV2
        | Operation::ListOrgMetadataV2
        | Operation::DeleteOrgMetadataV2 => Api::Org,
        Operation::SetOrgMetadataV2beta
        | Operation::ListOrgMetadataV2beta
        | Operation::DeleteOrgMetadataV2beta => Api::OrgBeta,
        _ => return None,
    })
}

/// The target id: from the path over REST (the path overwrites a body field of that name), from
/// the body over Connect.
fn target(api: Api, params: &Params, obj: &Obj) -> Result<String, ApiError> {
    let (json, proto, _) = api.id_field();
    let from_body = wire::string(obj, json, proto)?;
    Ok(params.id.clone().unwrap_or(from_body))
}

fn decode(
    op: Operation,
    api: Api,
    params: &Params,
    query: &str,
    body: &[u8],
) -> Result<V2Req, ApiError> {
    let delete = matches!(
        op,
        Operation::DeleteUserMetadataV2
            | Operation::DeleteOrgMetadataV2
            | Operation::DeleteOrgMetadataV2beta
    );
    let set = op.sets_metadata();
    // REST DELETE has no body: the gateway fills the message from the query string.
    let obj = if delete && params.id.is_some() {
        wire::parse_query(query)
    } else {
        wire::parse_body(body)?
    };
    let target = target(api, params, &obj)?;
    if set {
        let items = super::handlers::metadata_items(&obj)?;
        return Ok(V2Req::Set { target, items });
    }
    if delete {
        let keys = match obj.get("keys") {
            // A query parameter given once is a plain string.
            Some(Value::String(k)) if params.id.is_some() => vec![k.clone()],
            _ => wire::array(&obj, "keys", "keys")?
                .iter()
                .map(|k| wire::element_string(k, "keys"))
                .collect::<Result<_, _>>()?,
        };
        return Ok(V2Req::Delete { target, keys });
    }
    let (offset, limit, asc) = match wire::message(&obj, "pagination", "pagination")? {
        Some(p) => (
            wire::uint64(p, "offset", "offset")?,
            wire::uint32(p, "limit", "limit")?,
            wire::boolean(p, "asc", "asc")?,
        ),
        None => (0, 0, false),
    };
    let (list_json, oneof_json, oneof_proto, methods): (&str, &str, &str, &[&str]) =
        if api == Api::OrgBeta {
            (
                "filter",
                "keyQuery",
                "key_query",
                &super::handlers::TEXT_QUERY_METHODS,
            )
        } else {
            ("filters", "keyFilter", "key_filter", &TEXT_FILTER_METHODS)
        };
    let filters = wire::array(&obj, list_json, list_json)?
        .iter()
        .map(|f| {
            let f = wire::element_message(f, list_json)?;
            wire::message(f, oneof_json, oneof_proto)?
                .map(|kf| {
                    Ok(KeyQuery {
                        key: wire::string(kf, "key", "key")?,
                        method: wire::enumeration(kf, "method", "method", methods)?,
                    })
                })
                .transpose()
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(V2Req::List {
        target,
        offset,
        limit,
        asc,
        filters,
    })
}

/// Size of the protobuf request message (for the gateway's 4 MiB limit).
fn proto_size(req: &V2Req) -> usize {
    match req {
        V2Req::Set { target, items } => {
            len_field(target.len())
                + items
                    .iter()
                    .map(|(k, v)| len_field(len_field(k.len()) + len_field(v.len())))
                    .sum::<usize>()
        }
        V2Req::Delete { target, keys } => {
            len_field(target.len()) + keys.iter().map(|k| len_field(k.len())).sum::<usize>()
        }
        V2Req::List { target, .. } => len_field(target.len()),
    }
}

fn runes(v: &str, min: usize, max: usize) -> Option<String> {
    let n = v.chars().count();
    (n < min || n > max)
        .then(|| format!("value length must be between {min} and {max} runes, inclusive"))
}

/// PGV (protoc-gen-validate) rules of the request messages; first violation only.
fn validate(api: Api, req: &V2Req, facts: &ProfileFacts) -> Result<(), String> {
    let (_, _, id_go) = api.id_field();
    match req {
        V2Req::Set { target, items } => {
            let m = api.request("Set");
            check(&m, id_go, runes(target, 1, MAX_ID_RUNES))?;
            let (item, min_value) = match api {
                Api::OrgBeta => ("SetMetadataEntry", 1),
                _ if facts.empty_value_deletes => ("Metadata", 0),
                _ => ("Metadata", 1),
            };
            for (i, (key, value)) in items.iter().enumerate() {
                let value_rule = if value.len() < min_value || value.len() > MAX_VALUE_BYTES {
                    Some(if min_value == 0 {
                        format!("value length must be at most {MAX_VALUE_BYTES} bytes")
                    } else {
                        format!(
                            "value length must be between 1 and {MAX_VALUE_BYTES} bytes, inclusive"
                        )
                    })
                } else {
                    None
                };
                check(item, "Key", runes(key, 1, MAX_KEY_RUNES))
                    .and_then(|()| check(item, "Value", value_rule))
                    .map_err(|c| embedded(&m, &format!("Metadata[{i}]"), &c))?;
            }
            Ok(())
        }
        V2Req::List {
            target, filters, ..
        } => {
            let m = api.request("List");
            check(&m, id_go, runes(target, 1, MAX_ID_RUNES))?;
            let (list, filter_msg, oneof, key_msg) = if api == Api::OrgBeta {
                ("Filter", "MetadataQuery", "KeyQuery", "MetadataKeyQuery")
            } else {
                (
                    "Filters",
                    "MetadataSearchFilter",
                    "KeyFilter",
                    "MetadataKeyFilter",
                )
            };
            for (i, f) in filters.iter().enumerate() {
                let cause = match f {
                    None => Some(format!("invalid {filter_msg}.Filter: value is required")),
                    Some(kf) => {
                        let too_long = (kf.key.chars().count() > MAX_KEY_RUNES)
                            .then(|| format!("value length must be at most {MAX_KEY_RUNES} runes"));
                        let bad_enum = (!(0..8).contains(&kf.method))
                            .then(|| "value must be one of the defined enum values".to_owned());
                        check(key_msg, "Key", too_long)
                            .and_then(|()| check(key_msg, "Method", bad_enum))
                            .err()
                            .map(|c| embedded(filter_msg, oneof, &c))
                    }
                };
                if let Some(cause) = cause {
                    return Err(embedded(&m, &format!("{list}[{i}]"), &cause));
                }
            }
            Ok(())
        }
        V2Req::Delete { target, keys } => {
            let m = api.request("Delete");
            // The user `userId` has no rule; the org id has 1–200 (v2e §1.2).
            if api != Api::User {
                check(&m, id_go, runes(target, 1, MAX_ID_RUNES))?;
            }
            for (i, key) in keys.iter().enumerate() {
                check(&m, &format!("Keys[{i}]"), runes(key, 1, MAX_KEY_RUNES))?;
            }
            Ok(())
        }
    }
}

fn zitadel(code: i32, id: &'static str, msg: Msg) -> ApiError {
    ApiError::zitadel(code, id, msg)
}

fn permission_denied() -> ApiError {
    zitadel(
        code::PERMISSION_DENIED,
        "AUTH-AWfge",
        Msg::PermissionMissing,
    )
}

/// The zero `google.protobuf.Timestamp` (an object that never had metadata events).
fn zero_time() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(-62_135_596_800, 0).unwrap_or_default()
}

/// `zitadel.metadata.v2.Metadata`: dates, key and value; no sequence, no resource owner.
fn item(key: &str, entry: &MetaEntry) -> Value {
    Out::new()
        .time("creationDate", entry.creation_date)
        .time("changeDate", entry.change_date)
        .str("key", key)
        .bytes("value", &entry.value)
        .build()
}

/// What a Set entry does to the stored state (decided against the state before the push).
enum Step {
    Set,
    Remove,
    Skip,
}

/// Applies a Set to `agg`; returns the answer's date.
fn apply_set(
    agg: &mut Aggregate,
    push: &super::state::Push,
    items: &[(String, Vec<u8>)],
    skip_unchanged: bool,
    empty_deletes: bool,
) -> (DateTime<Utc>, u64) {
    let steps: Vec<Step> = items
        .iter()
        .map(|(key, value)| {
            if value.is_empty() && empty_deletes {
                if agg.metadata.contains_key(key) {
                    Step::Remove
                } else {
                    Step::Skip
                }
            } else if skip_unchanged && agg.holds(key, value) {
                Step::Skip
            } else {
                Step::Set
            }
        })
        .collect();
    let mut written = 0;
    for ((key, value), step) in items.iter().zip(steps) {
        match step {
            Step::Set => {
                agg.set_metadata(push, key, value);
                written += 1;
            }
            Step::Remove => {
                agg.remove_metadata(push, key);
                written += 1;
            }
            Step::Skip => {}
        }
    }
    let date = if written > 0 {
        push.at
    } else {
        agg.last_metadata_event.map_or_else(zero_time, |s| s.at)
    };
    (date, written)
}

/// A decoded v2 / v2beta metadata request, ready to run after authentication.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    api: Api,
    req: V2Req,
}

/// Decodes a v2 / v2beta metadata request (`rest` = through the gateway, which enforces the
/// 4 MiB request limit); runs before authentication like the gateway's / connect-go's decoding.
pub(crate) fn prepare(
    op: Operation,
    params: &Params,
    query: &str,
    body: &[u8],
    rest: bool,
) -> Result<Prepared, ApiError> {
    let Some(api) = api_of(op) else {
        return Err(ApiError::plain(code::NOT_FOUND, "Not Found"));
    };
    let req = decode(op, api, params, query, body)?;
    if rest {
        let size = proto_size(&req);
        if size > super::handlers::MAX_GRPC_MESSAGE {
            return Err(super::handlers::too_large(size));
        }
    }
    Ok(Prepared { api, req })
}

/// Runs a prepared v2 / v2beta metadata RPC for an authenticated caller: validation (PGV), then
/// the command or query with ZITADEL's order of checks.
// Long because it is the dispatch over the five v2 requests, each arm in ZITADEL's order of checks
// (shared pieces: no_data, authorize_write, aggregate_mut, listed_aggregate, write, apply_set,
// remove_all).
pub(crate) fn exec(
    st: &mut State,
    auth: &Auth,
    prepared: Prepared,
    write_fault: Option<super::handlers::WriteFault>,
) -> Result<Value, ApiError> {
    let Prepared { api, mut req } = prepared;
    let facts = st.profile.facts();
    validate(api, &req, &facts).map_err(ApiError::invalid_argument)?;
    let check_permissions = api != Api::OrgBeta || facts.v2beta_permission_check;
    let empty_deletes = api != Api::OrgBeta && facts.empty_value_deletes;
    if let V2Req::Set { items, .. } = &mut req
        && write_fault == Some(super::handlers::WriteFault::Corrupt)
    {
        for (_, value) in items.iter_mut() {
            super::handlers::corrupt(value);
        }
    }
    let dropped = write_fault == Some(super::handlers::WriteFault::Drop);
    match (api, req) {
        (api, V2Req::Set { target, items }) => {
            if items.is_empty() {
                return Err(no_data("META-9mm2d"));
            }
            let push = authorize_write(st, auth, api, &target, check_permissions)?;
            // Users skip unchanged values on every profile; orgs where empty values delete.
            let skip_unchanged = api == Api::User || facts.empty_value_deletes;
            let (date, written) = write(aggregate_mut(st, api, &target)?, dropped, |agg| {
                apply_set(agg, &push, &items, skip_unchanged, empty_deletes)
            });
            st.total_events += written;
            Ok(Out::new().time("setDate", date).build())
        }
        (api, V2Req::Delete { target, keys }) => {
            let user = api == Api::User;
            if keys.is_empty() {
                return Err(no_data(if user { "META-9mm2d" } else { "META-9mw2d" }));
            }
            let push = authorize_write(st, auth, api, &target, check_permissions)?;
            let missing = if user { "META-2nnds" } else { "META-2npds" };
            remove_all(aggregate_mut(st, api, &target)?, &push, &keys, missing)?;
            st.total_events += keys.len() as u64;
            Ok(Out::new().time("deletionDate", push.at).build())
        }
        (
            api,
            V2Req::List {
                target,
                offset,
                limit,
                asc,
                filters,
            },
        ) => {
            if limit > V2_MAX_LIMIT {
                return Err(zitadel(
                    code::INVALID_ARGUMENT,
                    "QUERY-4M0fs",
                    Msg::QueryLimitExceeded,
                ));
            }
            let effective = if limit == 0 { V2_DEFAULT_LIMIT } else { limit };
            let filters: Vec<KeyQuery> = filters.into_iter().flatten().collect();
            let shuffle = st.shuffler();
            let (agg, readable) = listed_aggregate(st, auth, api, check_permissions, &target);
            let mut rows: Vec<(&String, &MetaEntry)> = agg
                .map(|a| {
                    a.metadata
                        .iter()
                        .filter(|(k, _)| filters.iter().all(|f| f.matches(k)))
                        .collect()
                })
                .unwrap_or_default();
            super::state::apply_order(shuffle, &mut rows);
            let total = match api {
                // Permission check v1: the count includes rows filtered out (v2e §1.4).
                Api::User => rows.len() as u64,
                // The org list's SQL permission clause filters before counting.
                Api::Org | Api::OrgBeta if readable => rows.len() as u64,
                Api::Org | Api::OrgBeta => 0,
            };
            if !readable {
                rows.clear();
            }
            if api == Api::User {
                // ORDER BY creation_date, no tie-breaker: a stable sort keeps the (possibly
                // shuffled) order of equal dates.
                rows.sort_by_key(|(_, e)| e.creation_date);
                if !asc {
                    rows.reverse();
                }
            }
            let items: Vec<Value> = super::handlers::page(rows, offset, effective)
                .into_iter()
                .map(|(k, e)| item(k, e))
                .collect();
            // The user list reports the effective limit, the org list the requested one.
            let applied = if api == Api::User { effective } else { limit };
            Ok(Out::new()
                .obj(
                    "pagination",
                    Out::new()
                        .u64("totalResult", total)
                        .u64("appliedLimit", u64::from(applied)),
                )
                .list("metadata", items)
                .build())
        }
    }
}

/// `FAILED_PRECONDITION` for a write without keys (`id`: the user's or the organization's).
fn no_data(id: &'static str) -> ApiError {
    zitadel(code::FAILED_PRECONDITION, id, Msg::MetadataNoData)
}

/// The aggregate a list reads (if the target exists), and whether the caller may read it.
fn listed_aggregate<'s>(
    st: &'s State,
    auth: &Auth,
    api: Api,
    check_permissions: bool,
    target: &str,
) -> (Option<&'s Aggregate>, bool) {
    match api {
        Api::User => match st.users.get(target) {
            Some(u) => (
                Some(&u.agg),
                auth.grant.allows(&u.org_id, Permission::UserRead)
                    || auth.grant.user_id.as_deref() == Some(target),
            ),
            None => (None, false),
        },
        Api::Org | Api::OrgBeta => (
            st.orgs.get(target).map(|o| &o.agg),
            !check_permissions || auth.grant.allows(target, Permission::OrgRead),
        ),
    }
}

/// Runs a write on `agg`, or on a scratch copy when the write is dropped
/// ([`super::handlers::WriteFault::Drop`]); the event count is 0 for a dropped write.
fn write(
    agg: &mut Aggregate,
    dropped: bool,
    f: impl FnOnce(&mut Aggregate) -> (DateTime<Utc>, u64),
) -> (DateTime<Utc>, u64) {
    if dropped {
        let mut scratch = agg.clone();
        let (date, _) = f(&mut scratch);
        (date, 0)
    } else {
        f(agg)
    }
}

fn remove_all(
    agg: &mut Aggregate,
    push: &super::state::Push,
    keys: &[String],
    missing_id: &'static str,
) -> Result<(), ApiError> {
    if keys.iter().any(|k| !agg.metadata.contains_key(k)) {
        return Err(zitadel(
            code::NOT_FOUND,
            missing_id,
            Msg::MetadataKeyNotExisting,
        ));
    }
    for key in keys {
        agg.remove_metadata(push, key);
    }
    Ok(())
}

fn user_not_found() -> ApiError {
    zitadel(
        code::FAILED_PRECONDITION,
        "COMMAND-uXHNj",
        Msg::UserNotFound,
    )
}

fn org_not_found() -> ApiError {
    zitadel(code::FAILED_PRECONDITION, "COMMAND-QXPGs", Msg::OrgNotFound)
}

/// The org of an existing user, looked up in any org (v2e §1.3), before any permission check.
/// ZITADEL's permission check before a v2 write (for a user: after looking it up; for an org:
/// unless the profile's v2beta checks none), then the push of the events to write.
fn authorize_write(
    st: &mut State,
    auth: &Auth,
    api: Api,
    target: &str,
    check_permissions: bool,
) -> Result<Push, ApiError> {
    let allowed = match api {
        Api::User => auth
            .grant
            .allows(&user_org(st, target)?, Permission::UserWrite),
        Api::Org | Api::OrgBeta => {
            !check_permissions || auth.grant.allows(target, Permission::OrgWrite)
        }
    };
    if !allowed {
        return Err(permission_denied());
    }
    Ok(st.push_by(&auth.editor()))
}

/// The user's or org's aggregate a v2 write goes to.
fn aggregate_mut<'a>(
    st: &'a mut State,
    api: Api,
    target: &str,
) -> Result<&'a mut Aggregate, ApiError> {
    match api {
        Api::User => st
            .users
            .get_mut(target)
            .map(|u| &mut u.agg)
            .ok_or_else(user_not_found),
        Api::Org | Api::OrgBeta => st
            .orgs
            .get_mut(target)
            .map(|o| &mut o.agg)
            .ok_or_else(org_not_found),
    }
}

fn user_org(st: &State, user_id: &str) -> Result<String, ApiError> {
    st.users
        .get(user_id)
        .map(|u| u.org_id.clone())
        .ok_or_else(user_not_found)
}
