//! The events APIs (v2e Part 2, api §9): admin `ListEvents`, `ListEventTypes`,
//! `ListAggregateTypes` (permission `events.read`) and the org-scoped `ListOrgChanges` /
//! `ListUserChanges` of the Management API v1, served from the events every state change of the
//! emulator records (ZITADEL's event types, editor, aggregate, per-aggregate sequence, one
//! timestamp per push, payloads of v2e §2.1).

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::errors::{ApiError, Msg, code};
use super::handlers::{authorize, no_membership};
use super::model::{Operation, Permission};
use super::routes::Params;
use super::state::{AggKind, State, StoredEvent};
use super::wire::{self, Out};

/// `limit` 0 or above this → this (admin `event.go`).
const MAX_EVENTS_LIMIT: u32 = 1000;
/// PGV bounds of `ListEventsRequest`.
const MAX_EVENT_TYPES: usize = 30;
const MAX_AGGREGATE_TYPES: usize = 10;
const MAX_FILTER_RUNES: usize = 200;

/// Event types the emulator writes or ZITADEL registers for metadata and removals, with their
/// English localization (`internal/static/i18n/en.yaml`; entries not quoted in the contract
/// are the emulator's own wording).
pub(crate) const EVENT_TYPES: [(&str, &str); 18] = [
    ("org.added", "Organization created"),
    ("org.changed", "Organization changed"),
    ("org.removed", "Organization removed"),
    ("org.domain.added", "Domain added"),
    ("org.domain.verified", "Domain verified"),
    ("org.domain.primary.set", "Primary domain set"),
    ("org.member.added", "Organization member added"),
    ("org.metadata.set", "Metadata set"),
    ("org.metadata.removed", "Metadata removed"),
    ("org.metadata.removed.all", "All metadata removed"),
    ("user.human.added", "Person added"),
    ("user.human.email.changed", "Email address changed"),
    ("user.human.email.verified", "Email address verified"),
    ("user.username.changed", "Username changed"),
    ("user.removed", "User deleted"),
    ("user.metadata.set", "User metadata set"),
    ("user.metadata.removed", "User metadata removed"),
    ("user.metadata.removed.all", "All user metadata removed"),
];

/// Aggregate types with their localization.
const AGGREGATE_TYPES: [(&str, &str); 2] = [("org", "Organization"), ("user", "User")];

/// Whether `op` is served here.
pub(crate) fn serves(op: Operation) -> bool {
    matches!(
        op,
        Operation::ListEvents
            | Operation::ListEventTypes
            | Operation::ListAggregateTypes
            | Operation::ListOrgChanges
            | Operation::ListUserChanges
    )
}

fn localized_event(event_type: &str) -> String {
    EVENT_TYPES
        .iter()
        .find(|(t, _)| *t == event_type)
        .map_or_else(|| event_type.to_owned(), |(_, l)| (*l).to_owned())
}

/// `zitadel.v1.LocalizedMessage`.
fn localized(key: String, message: &str) -> Out {
    Out::new().str("key", &key).str("localizedMessage", message)
}

/// `zitadel.event.v1.EventType` / `AggregateType`: `{type, localized}`.
fn typed(kind: &str, prefix: &str, message: &str) -> Out {
    Out::new()
        .str("type", kind)
        .obj("localized", localized(format!("{prefix}.{kind}"), message))
}

fn aggregate_localized(kind: AggKind) -> &'static str {
    AGGREGATE_TYPES
        .iter()
        .find(|(t, _)| *t == kind.as_str())
        .map_or("", |(_, l)| l)
}

/// Display name of an editor: the user name of a known user, else nothing.
fn editor_name<'a>(st: &'a State, editor: &str) -> &'a str {
    st.users.get(editor).map_or("", |u| u.user_name.as_str())
}

fn event_json(st: &State, e: &StoredEvent) -> Value {
    let mut out = Out::new()
        .obj(
            "editor",
            Out::new()
                .str("userId", &e.editor)
                .str("displayName", editor_name(st, &e.editor))
                .str("service", "zitadel"),
        )
        .obj(
            "aggregate",
            Out::new()
                .str("id", &e.agg_id)
                .obj(
                    "type",
                    typed(
                        e.agg_kind.as_str(),
                        "AggregateTypes",
                        aggregate_localized(e.agg_kind),
                    ),
                )
                .str("resourceOwner", &e.owner),
        )
        .u64("sequence", e.sequence)
        .time("creationDate", e.at)
        .build();
    if let (Value::Object(map), Some(Value::Object(payload))) = (&mut out, &e.payload)
        && !payload.is_empty()
    {
        map.insert("payload".into(), Value::Object(payload.clone()));
    }
    if let Value::Object(map) = &mut out {
        map.insert(
            "type".into(),
            typed(e.event_type, "EventTypes", &localized_event(e.event_type)).build(),
        );
    }
    out
}

/// The decoded `ListEventsRequest`.
#[derive(Debug, Default)]
struct EventsQuery {
    sequence: u64,
    limit: u32,
    asc: bool,
    editor: String,
    event_types: Vec<String>,
    aggregate_id: String,
    aggregate_types: Vec<String>,
    resource_owner: String,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    from: Option<DateTime<Utc>>,
    has_range: bool,
}

fn strings(obj: &wire::Obj, json: &str, proto: &str) -> Result<Vec<String>, ApiError> {
    wire::array(obj, json, proto)?
        .iter()
        .map(|v| wire::element_string(v, proto))
        .collect()
}

fn decode_events_query(body: &[u8]) -> Result<EventsQuery, ApiError> {
    let obj = wire::parse_body(body)?;
    let range = wire::message(&obj, "range", "range")?;
    let (since, until) = match range {
        Some(r) => (
            wire::timestamp_field(r, "since", "since")?,
            wire::timestamp_field(r, "until", "until")?,
        ),
        None => (None, None),
    };
    let from = wire::timestamp_field(&obj, "from", "from")?;
    let creation_date = wire::timestamp_field(&obj, "creationDate", "creation_date")?;
    let set = [range.is_some(), from.is_some(), creation_date.is_some()];
    if set.iter().filter(|s| **s).count() > 1 {
        return Err(ApiError::invalid_argument(
            "proto: oneof zitadel.admin.v1.ListEventsRequest.creation_date_filter is already set",
        ));
    }
    Ok(EventsQuery {
        sequence: wire::uint64(&obj, "sequence", "sequence")?,
        limit: wire::uint32(&obj, "limit", "limit")?,
        asc: wire::boolean(&obj, "asc", "asc")?,
        editor: wire::string(&obj, "editorUserId", "editor_user_id")?,
        event_types: strings(&obj, "eventTypes", "event_types")?,
        aggregate_id: wire::string(&obj, "aggregateId", "aggregate_id")?,
        aggregate_types: strings(&obj, "aggregateTypes", "aggregate_types")?,
        resource_owner: wire::string(&obj, "resourceOwner", "resource_owner")?,
        since,
        until,
        from: from.or(creation_date),
        has_range: range.is_some(),
    })
}

fn validate_events_query(q: &EventsQuery) -> Result<(), String> {
    let m = "ListEventsRequest";
    let long = |v: &str| v.chars().count() > MAX_FILTER_RUNES;
    let too_long = format!("value length must be at most {MAX_FILTER_RUNES} runes");
    if long(&q.editor) {
        return Err(format!("invalid {m}.EditorUserId: {too_long}"));
    }
    if q.event_types.len() > MAX_EVENT_TYPES {
        return Err(format!(
            "invalid {m}.EventTypes: value must contain no more than {MAX_EVENT_TYPES} item(s)"
        ));
    }
    if long(&q.aggregate_id) {
        return Err(format!("invalid {m}.AggregateId: {too_long}"));
    }
    if q.aggregate_types.len() > MAX_AGGREGATE_TYPES {
        return Err(format!(
            "invalid {m}.AggregateTypes: value must contain no more than {MAX_AGGREGATE_TYPES} item(s)"
        ));
    }
    if long(&q.resource_owner) {
        return Err(format!("invalid {m}.ResourceOwner: {too_long}"));
    }
    Ok(())
}

/// `ListEvents` semantics (v2e §2.2): strict time bounds, `sequence` flipping with `asc`,
/// aggregate types derived from event types, order by position (by sequence with an
/// `aggregateId`), limit 0 / over 1000 → 1000.
fn list_events(st: &State, q: &EventsQuery) -> Value {
    let mut aggregate_types = q.aggregate_types.clone();
    if aggregate_types.is_empty() {
        for t in &q.event_types {
            let prefix = t.split('.').next().unwrap_or_default().to_owned();
            if !aggregate_types.contains(&prefix) {
                aggregate_types.push(prefix);
            }
        }
    }
    let limit = if q.limit == 0 || q.limit > MAX_EVENTS_LIMIT {
        MAX_EVENTS_LIMIT
    } else {
        q.limit
    };
    let mut events: Vec<&StoredEvent> = st
        .all_events()
        .into_iter()
        .filter(|e| {
            aggregate_types.is_empty() || aggregate_types.iter().any(|t| t == e.agg_kind.as_str())
        })
        .filter(|e| q.event_types.is_empty() || q.event_types.iter().any(|t| t == e.event_type))
        .filter(|e| q.aggregate_id.is_empty() || e.agg_id == q.aggregate_id)
        .filter(|e| q.resource_owner.is_empty() || e.owner == q.resource_owner)
        .filter(|e| q.editor.is_empty() || e.editor == q.editor)
        .filter(|e| match q.sequence {
            0 => true,
            n if q.asc => e.sequence > n,
            n => e.sequence < n,
        })
        .filter(|e| {
            if q.has_range {
                q.since.is_none_or(|s| e.at > s) && q.until.is_none_or(|u| e.at < u)
            } else {
                match q.from {
                    None => true,
                    Some(f) if q.asc => e.at > f,
                    Some(f) => e.at < f,
                }
            }
        })
        .collect();
    if !q.aggregate_id.is_empty() {
        events.sort_by_key(|e| (e.sequence, e.position));
    }
    if !q.asc {
        events.reverse();
    }
    let list: Vec<Value> = events
        .into_iter()
        .take(limit as usize)
        .map(|e| event_json(st, e))
        .collect();
    Out::new().list("events", list).build()
}

/// `ChangeQuery {sequence, limit, asc}` of `ListOrgChanges` / `ListUserChanges`.
fn decode_change_query(body: &[u8]) -> Result<(u64, u32, bool), ApiError> {
    let obj = wire::parse_body(body)?;
    Ok(match wire::message(&obj, "query", "query")? {
        Some(q) => (
            wire::uint64(q, "sequence", "sequence")?,
            wire::uint32(q, "limit", "limit")?,
            wire::boolean(q, "asc", "asc")?,
        ),
        None => (0, 0, false),
    })
}

/// `zitadel.change.v1.Change` items of one aggregate, by sequence; `limit` 0 = all (v2e §2.3).
fn changes(
    st: &State,
    kind: AggKind,
    id: &str,
    owner: &str,
    (sequence, limit, asc): (u64, u32, bool),
) -> Value {
    let mut events: Vec<&StoredEvent> = st
        .all_events()
        .into_iter()
        .filter(|e| e.agg_kind == kind && e.agg_id == id && e.owner == owner)
        .filter(|e| match sequence {
            0 => true,
            n if asc => e.sequence > n,
            n => e.sequence < n,
        })
        .collect();
    events.sort_by_key(|e| (e.sequence, e.position));
    if !asc {
        events.reverse();
    }
    let take = if limit == 0 {
        usize::MAX
    } else {
        limit as usize
    };
    let result: Vec<Value> = events
        .into_iter()
        .take(take)
        .map(|e| {
            let login = st
                .users
                .get(&e.editor)
                .map(|u| u.login_name(&st.orgs))
                .unwrap_or_default();
            Out::new()
                .time("changeDate", e.at)
                .obj(
                    "eventType",
                    localized(
                        format!("EventTypes.{}", e.event_type),
                        &localized_event(e.event_type),
                    ),
                )
                .u64("sequence", e.sequence)
                .str("editorId", &e.editor)
                .str("editorDisplayName", editor_name(st, &e.editor))
                .str("resourceOwnerId", &e.owner)
                .str("editorPreferredLoginName", &login)
                .build()
        })
        .collect();
    Out::new().list("result", result).build()
}

/// Handles one events RPC: decoding → authentication and permission → validation → query.
pub(crate) fn exec(
    st: &mut State,
    headers: &HeaderMap,
    op: Operation,
    params: &Params,
    body: &[u8],
) -> Result<Value, ApiError> {
    match op {
        Operation::ListEvents | Operation::ListEventTypes | Operation::ListAggregateTypes => {
            let query = if op == Operation::ListEvents {
                Some(decode_events_query(body)?)
            } else {
                wire::parse_body(body)?;
                None
            };
            let auth = authorize(st, headers, None)?;
            if !auth.grant.reads_events() {
                // The v1 interceptor checks `events.read` in the caller's org context.
                if !auth.grant.has_membership(&auth.grant.owner_org)
                    && auth.grant.org_permissions.is_empty()
                {
                    return Err(no_membership());
                }
                return Err(ApiError::zitadel(
                    code::PERMISSION_DENIED,
                    "AUTH-5mWD2",
                    Msg::NoMatchingPermissions,
                ));
            }
            Ok(match query {
                Some(q) => {
                    validate_events_query(&q).map_err(ApiError::invalid_argument)?;
                    list_events(st, &q)
                }
                None if op == Operation::ListEventTypes => {
                    let types: Vec<Value> = EVENT_TYPES
                        .iter()
                        .map(|(t, l)| typed(t, "EventTypes", l).build())
                        .collect();
                    Out::new().list("eventTypes", types).build()
                }
                None => {
                    let types: Vec<Value> = AGGREGATE_TYPES
                        .iter()
                        .map(|(t, l)| typed(t, "AggregateTypes", l).build())
                        .collect();
                    Out::new().list("aggregateTypes", types).build()
                }
            })
        }
        Operation::ListOrgChanges => {
            let query = decode_change_query(body)?;
            let auth = authorize(st, headers, Some(Permission::OrgRead))?;
            let org = auth.ctx_org.clone();
            Ok(changes(st, AggKind::Org, &org, &org, query))
        }
        Operation::ListUserChanges => {
            let query = decode_change_query(body)?;
            let auth = authorize(st, headers, Some(Permission::UserRead))?;
            let user = params.id.clone().unwrap_or_default();
            Ok(changes(st, AggKind::User, &user, &auth.ctx_org, query))
        }
        _ => Err(ApiError::plain(code::NOT_FOUND, "Not Found")),
    }
}
