//! ZITADEL's instance-wide event log: admin `ListEvents` (`POST /admin/v1/events/_search`,
//! permission `events.read`, held by IAM_OWNER and IAM_OWNER_VIEWER only;
//! `shared/zitadel-v2-and-events.md` §2.2). REST only: there is no Connect or v2 equivalent.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::http::HttpClient;
use super::{ZitadelError, string_or_number};

/// The `operation` label of `ListEvents` in `zitadel_requests_total`.
pub const LIST_EVENTS: &str = "ListEvents";

/// The event types that change metadata or remove its owner (v2e §2.1): the filter of every
/// drift-detection query.
pub const DRIFT_EVENT_TYPES: [&str; 8] = [
    "org.metadata.set",
    "org.metadata.removed",
    "org.metadata.removed.all",
    "org.removed",
    "user.metadata.set",
    "user.metadata.removed",
    "user.metadata.removed.all",
    "user.removed",
];

/// One `ListEvents` request: the drift event types, oldest first from a strict lower bound
/// (`asc`), or — for the newest event (`asc: false`, `limit: 1`) — without one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventQuery {
    /// Oldest first (`true`) or newest first.
    pub asc: bool,
    /// At most this many events (1…1000; ZITADEL clamps 0 and larger values to 1000).
    pub limit: u32,
    /// Only events created strictly after this time (`range.since`).
    pub since: Option<DateTime<Utc>>,
}

/// An event as the drift detection reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// `aggregate.type.type`: `org` or `user`.
    pub aggregate_type: String,
    /// `aggregate.id`: the org or user id.
    pub aggregate_id: String,
    /// `aggregate.resourceOwner`: the org (of a user: its org).
    pub resource_owner: String,
    /// Per-aggregate sequence.
    pub sequence: u64,
    /// `creationDate` (server clock; all events of one push share it).
    pub created: DateTime<Utc>,
    /// `type.type`, e.g. `org.metadata.set`.
    pub event_type: String,
    /// `editor.userId`: who caused it.
    pub editor: String,
    /// `payload.key` of metadata events.
    pub key: Option<String>,
    /// [`value_hash`] of the decoded `payload.value` of `*.metadata.set` (the value itself is
    /// not kept).
    pub value_hash: Option<u64>,
}

/// A 64-bit hash of a metadata value: what the drift detection compares an event's payload
/// with (values are never kept or logged).
pub fn value_hash(value: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

impl Event {
    /// The de-duplication key (v2e §2.2 step 2: aggregate type + id + sequence, unique since
    /// sequences are per aggregate) as a 128-bit fingerprint, so that remembering an event
    /// keeps no strings (a collision among the few thousand events of an overlap window is
    /// vanishingly unlikely: ~2⁻¹⁰⁰).
    pub fn id(&self) -> u128 {
        use std::hash::{Hash, Hasher};
        let half = |salt: u8| {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            (
                salt,
                &self.aggregate_type,
                &self.aggregate_id,
                self.sequence,
            )
                .hash(&mut hasher);
            hasher.finish()
        };
        (u128::from(half(0)) << 64) | u128::from(half(1))
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListEventsRequest<'a> {
    asc: bool,
    limit: u32,
    event_types: &'a [&'a str],
    #[serde(skip_serializing_if = "Option::is_none")]
    range: Option<Range>,
}

#[derive(Serialize)]
struct Range {
    since: String,
}

#[derive(Deserialize, Default)]
struct ListEventsResponse {
    #[serde(default)]
    events: Vec<WireEvent>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireEvent {
    #[serde(default)]
    editor: Option<Editor>,
    #[serde(default)]
    aggregate: Option<Aggregate>,
    #[serde(default, deserialize_with = "string_or_number")]
    sequence: Option<String>,
    #[serde(default)]
    creation_date: Option<String>,
    #[serde(default)]
    payload: Option<Payload>,
    #[serde(default, rename = "type")]
    event_type: Option<Typed>,
}

/// The payload fields the drift detection reads; the others are skipped while parsing, not
/// materialised (a page holds up to 1,000 events).
#[derive(Deserialize, Default)]
struct Payload {
    #[serde(default, deserialize_with = "text_or_none")]
    key: Option<String>,
    #[serde(default, deserialize_with = "text_or_none")]
    value: Option<String>,
}

/// A string field, or `None` when it holds anything else.
fn text_or_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    })
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Editor {
    #[serde(default)]
    user_id: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Aggregate {
    #[serde(default)]
    id: String,
    #[serde(default, rename = "type")]
    aggregate_type: Option<Typed>,
    #[serde(default)]
    resource_owner: String,
}

#[derive(Deserialize, Default)]
struct Typed {
    #[serde(default, rename = "type")]
    name: String,
}

/// RFC 3339 with microseconds (Postgres' precision), as protojson accepts a Timestamp.
pub fn format_timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl WireEvent {
    fn decode(self) -> Result<Event, ZitadelError> {
        let bad = |what: &str| ZitadelError::Decode(format!("ListEvents: event without {what}"));
        let aggregate = self.aggregate.ok_or_else(|| bad("aggregate"))?;
        let sequence = self
            .sequence
            .as_deref()
            .unwrap_or("0")
            .parse::<u64>()
            .map_err(|_| bad("a numeric sequence"))?;
        let created = self
            .creation_date
            .as_deref()
            .ok_or_else(|| bad("creationDate"))
            .and_then(|d| {
                DateTime::parse_from_rfc3339(d)
                    .map(|d| d.with_timezone(&Utc))
                    .map_err(|_| bad("an RFC 3339 creationDate"))
            })?;
        let payload = self.payload.unwrap_or_default();
        Ok(Event {
            aggregate_type: aggregate
                .aggregate_type
                .map(|t| t.name)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| bad("aggregate.type"))?,
            aggregate_id: aggregate.id,
            resource_owner: aggregate.resource_owner,
            sequence,
            created,
            event_type: self
                .event_type
                .map(|t| t.name)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| bad("type"))?,
            editor: self.editor.map(|e| e.user_id).unwrap_or_default(),
            key: payload.key,
            value_hash: payload
                .value
                .and_then(|v| super::error::decode_base64(&v).ok())
                .map(|v| value_hash(&v)),
        })
    }
}

impl HttpClient {
    /// `POST /admin/v1/events/_search` with the drift event types (v2e §2.2).
    pub(crate) async fn admin_list_events(
        &self,
        query: &EventQuery,
    ) -> Result<Vec<Event>, ZitadelError> {
        let body = ListEventsRequest {
            asc: query.asc,
            limit: query.limit,
            event_types: &DRIFT_EVENT_TYPES,
            range: query.since.map(|since| Range {
                since: format_timestamp(since),
            }),
        };
        let url = self.url(&["admin", "v1", "events", "_search"])?;
        let response: ListEventsResponse =
            self.rest_large(LIST_EVENTS, url, &body).await?.json()?;
        response.events.into_iter().map(WireEvent::decode).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_decode_from_the_contract_shape() {
        let body = serde_json::json!({"events": [
            {"editor": {"userId": "312909", "displayName": "k8s-operator", "service": "zitadel"},
             "aggregate": {"id": "3129090752", "type": {"type": "user", "localized": {"key": "AggregateTypes.user", "localizedMessage": "User"}},
                           "resourceOwner": "3129090751"},
             "sequence": "17",
             "creationDate": "2026-03-30T10:15:02.123456Z",
             "payload": {"key": "team", "value": "cGxhdGZvcm0="},
             "type": {"type": "user.metadata.set", "localized": {"key": "EventTypes.user.metadata.set", "localizedMessage": "User metadata set"}}},
            {"aggregate": {"id": "1", "type": {"type": "org"}, "resourceOwner": "1"},
             "sequence": 3, "creationDate": "2026-03-30T10:15:02Z", "type": {"type": "org.removed"}}
        ]});
        let response: ListEventsResponse = serde_json::from_value(body).expect("shape");
        let events: Vec<Event> = response
            .events
            .into_iter()
            .map(WireEvent::decode)
            .collect::<Result<_, _>>()
            .expect("decoded");
        assert_eq!(events[0].aggregate_type, "user");
        assert_eq!(events[0].sequence, 17);
        assert_eq!(events[0].editor, "312909");
        assert_eq!(events[0].key.as_deref(), Some("team"));
        assert_eq!(events[0].value_hash, Some(value_hash(b"platform")));
        assert_eq!(
            format_timestamp(events[0].created),
            "2026-03-30T10:15:02.123456Z"
        );
        assert_eq!(events[1].event_type, "org.removed");
        assert_eq!(events[1].key, None);
        assert_eq!(events[1].editor, "");
        let odd: WireEvent = serde_json::from_value(serde_json::json!({
            "aggregate": {"id": "1", "type": {"type": "org"}},
            "sequence": "4", "creationDate": "2026-03-30T10:15:02Z", "type": {"type": "org.metadata.set"},
            "payload": {"key": 7, "value": {"nested": true}, "other": [1, 2]}}))
        .expect("shape");
        let odd = odd.decode().expect("decoded");
        assert_eq!((odd.key, odd.value_hash), (None, None));
        let missing: WireEvent =
            serde_json::from_value(serde_json::json!({"sequence": "1"})).expect("shape");
        assert!(missing.decode().is_err());
    }

    #[test]
    fn the_request_is_the_contracts() {
        let since = DateTime::parse_from_rfc3339("2026-03-30T10:15:02.5Z")
            .expect("time")
            .with_timezone(&Utc);
        let body = ListEventsRequest {
            asc: true,
            limit: 100,
            event_types: &DRIFT_EVENT_TYPES,
            range: Some(Range {
                since: format_timestamp(since),
            }),
        };
        let json = serde_json::to_value(&body).expect("json");
        assert_eq!(json["range"]["since"], "2026-03-30T10:15:02.500000Z");
        assert_eq!(json["eventTypes"].as_array().map(Vec::len), Some(8));
        assert_eq!(json["asc"], true);
        let newest = ListEventsRequest {
            asc: false,
            limit: 1,
            event_types: &DRIFT_EVENT_TYPES,
            range: None,
        };
        assert!(
            serde_json::to_value(&newest)
                .expect("json")
                .get("range")
                .is_none()
        );
    }
}
