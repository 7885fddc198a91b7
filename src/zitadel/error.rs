//! Typed errors of the ZITADEL client, and the parsing of ZITADEL's three error shapes:
//! grpc-gateway `google.rpc.Status` JSON (v1 and v2 REST), Connect JSON (v2 over Connect, the
//! ZITADEL error id inside a base64 protobuf `zitadel.v1.ErrorDetail`), and bodies that are not
//! ZITADEL's at all (edge proxies, the routing 404 in plain text).
//!
//! No error here is proof that an organization or user is gone: see
//! [`super::ZitadelApi::target_exists`] (`shared/zitadel-api.md` §10).

use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use crate::reason::Reason;

/// gRPC status codes ZITADEL reports in the `code` field of its error body.
pub mod code {
    /// Unknown (HTTP 500).
    pub const UNKNOWN: i32 = 2;
    /// InvalidArgument (HTTP 400).
    pub const INVALID_ARGUMENT: i32 = 3;
    /// DeadlineExceeded (HTTP 504).
    pub const DEADLINE_EXCEEDED: i32 = 4;
    /// NotFound (HTTP 404).
    pub const NOT_FOUND: i32 = 5;
    /// PermissionDenied (HTTP 403).
    pub const PERMISSION_DENIED: i32 = 7;
    /// ResourceExhausted (HTTP 429).
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    /// FailedPrecondition (HTTP 400).
    pub const FAILED_PRECONDITION: i32 = 9;
    /// Aborted (HTTP 409).
    pub const ABORTED: i32 = 10;
    /// Unimplemented (HTTP 501).
    pub const UNIMPLEMENTED: i32 = 12;
    /// Internal (HTTP 500).
    pub const INTERNAL: i32 = 13;
    /// Unavailable (HTTP 503).
    pub const UNAVAILABLE: i32 = 14;
    /// Unauthenticated (HTTP 401).
    pub const UNAUTHENTICATED: i32 = 16;

    /// The numeric code of a Connect error code name (`"not_found"` → 5).
    pub fn from_connect(name: &str) -> Option<i32> {
        Some(match name {
            "canceled" => 1,
            "unknown" => 2,
            "invalid_argument" => 3,
            "deadline_exceeded" => 4,
            "not_found" => 5,
            "already_exists" => 6,
            "permission_denied" => 7,
            "resource_exhausted" => 8,
            "failed_precondition" => 9,
            "aborted" => 10,
            "out_of_range" => 11,
            "unimplemented" => 12,
            "internal" => 13,
            "unavailable" => 14,
            "data_loss" => 15,
            "unauthenticated" => 16,
            _ => return None,
        })
    }
}

/// ZITADEL error ids (`details[].id`) the operator reacts to. Messages are translated, ids are not.
pub mod ids {
    /// BulkRemove / Delete of org metadata with a key that does not exist.
    pub const ORG_KEY_NOT_EXISTING: &str = "META-2npds";
    /// BulkRemove / Delete of user metadata with a key that does not exist.
    pub const USER_KEY_NOT_EXISTING: &str = "META-2nnds";
    /// A user metadata write for a user that is not in the context org (v1), or that does not
    /// exist (v2, looked up in any org). Not proof that the user is gone: on v1 it also means
    /// "the user is in another organization".
    pub const USER_NOT_FOUND_IN_ORG: &str = "COMMAND-uXHNj";
    /// v2 org metadata Set/Delete for an organization that does not exist (with instance
    /// rights; without them `AUTH-AWfge` comes first). Confirmed with `target_exists` before
    /// anyone calls the org gone.
    pub const ORG_NOT_FOUND_V2: &str = "COMMAND-QXPGs";
    /// `x-zitadel-orgid` could not be resolved: the org does not exist **or its lookup failed**
    /// (database error, timeout). Ambiguous; never proof (`shared/zitadel-api.md` §3).
    pub const ORG_DOES_NOT_EXIST: &str = "AUTH-Bs7Ds";
    /// The caller holds no role with the needed permission in the org (v1 interceptor).
    pub const NO_PERMISSION: &str = "AUTH-5mWD2";
    /// The caller holds no role with the needed permission (v2 handlers).
    pub const NO_PERMISSION_V2: &str = "AUTH-AWfge";
    /// The caller has no membership at all in the org or instance (404, a permission problem).
    pub const NO_MEMBERSHIP: &str = "AUTHZ-cdgFk";
    /// `GetUserByID`: no user with that id in the instance (looked up before any permission
    /// check) — the one positive proof that a user is gone.
    pub const USER_NOT_FOUND: &str = "QUERY-Dfbg2";
    /// v2 list `limit` above 1000.
    pub const LIMIT_EXCEEDED: &str = "QUERY-4M0fs";
}

/// An error talking to ZITADEL. Display output never contains tokens or metadata values.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ZitadelError {
    /// ZITADEL answered with an error status.
    #[error("ZITADEL answered HTTP {status} (code {code}{}): {message}", id.as_deref().map(|i| format!(", {i}")).unwrap_or_default())]
    Api {
        /// HTTP status.
        status: u16,
        /// gRPC code from the body (numeric, or a Connect code name mapped to its number;
        /// derived from the HTTP status when the body is not ZITADEL JSON).
        code: i32,
        /// The ZITADEL error id (`ErrorDetail.id`), when present.
        id: Option<String>,
        /// The message (translated text, for humans only; at most 200 characters).
        message: String,
        /// Parsed `Retry-After`, when present.
        retry_after: Option<Duration>,
    },
    /// The instance has no route for this call (the routing 404: JSON `{"code":5,"message":
    /// "Not Found"}` without details, or `text/plain` `404 page not found` from a Connect
    /// service without the method): the API is not served by this ZITADEL version.
    #[error(
        "ZITADEL has no route for this call (HTTP {status}: {message}): this API is not available on the instance"
    )]
    RouteMissing {
        /// HTTP status (404).
        status: u16,
        /// The body's message, for humans.
        message: String,
        /// True for the plain-text 404 of a Connect service that exists without the method;
        /// false when the whole service (or REST prefix) is unknown.
        service_exists: bool,
    },
    /// No answer in time.
    #[error("request to ZITADEL timed out after {0:?}")]
    Timeout(Duration),
    /// Connection-level failure.
    #[error("cannot reach ZITADEL: {0}")]
    Transport(String),
    /// The TLS handshake failed: the server's certificate is not trusted (unknown CA: see
    /// `caBundle`), not valid for the name (see `tlsServerName`), expired, ...
    #[error("TLS verification of ZITADEL's certificate failed: {0}")]
    Tls(String),
    /// A 2xx answer that is not the documented JSON.
    #[error("unexpected answer from ZITADEL: {0}")]
    Decode(String),
    /// The bearer token could not be read.
    #[error("cannot read the ZITADEL token: {0}")]
    Credentials(String),
    /// A 2xx answer longer than the client reads (see [`super::MAX_RESPONSE_BYTES`]).
    #[error("answer from ZITADEL is larger than {limit} bytes")]
    ResponseTooLarge {
        /// The limit in bytes.
        limit: usize,
        /// The answer's size, when it announced one (`Content-Length`).
        size: Option<u64>,
    },
    /// A paged listing did not add up even after listing again: ZITADEL reported `total` keys
    /// but only `seen` distinct ones came back (rows reordered between pages, or rows the caller
    /// may not read).
    #[error(
        "ZITADEL reported {total} metadata keys but only {seen} distinct keys could be listed (rows reordered between pages, or rows the service user may not read)"
    )]
    IncompleteListing {
        /// Distinct keys received.
        seen: usize,
        /// `totalResult` reported.
        total: u64,
    },
    /// Whether the target still exists could not be established either way.
    #[error("cannot tell whether the target still exists in ZITADEL: {0}")]
    Unproven(String),
    /// The client refused to send a request (it would be rejected, or misread: an empty value
    /// means "delete" on newer v2 builds).
    #[error("refused to send to ZITADEL: {0}")]
    InvalidRequest(String),
    /// The user exists but not in the organization the target names (checked by the client on
    /// v2, where ZITADEL itself ignores the organization).
    #[error("user {user_id} is in organization {actual}, not in {org_id}")]
    UserNotInOrganization {
        /// The user.
        user_id: String,
        /// The organization the object names.
        org_id: String,
        /// The user's actual organization.
        actual: String,
    },
}

impl ZitadelError {
    /// Whether retrying later may succeed without anyone changing anything (429 other than
    /// gRPC's size refusal, 5xx, timeouts, connection failures, 409 Aborted, a bulk remove that
    /// lost a race with another writer, `AUTH-Bs7Ds` — ZITADEL's answer to *any* failed org
    /// lookup —, and a listing that did not add up).
    pub fn is_transient(&self) -> bool {
        match self {
            ZitadelError::Api { status, code, .. } => {
                (*status == 429 && !self.is_message_too_large())
                    || *status >= 500
                    || *code == code::ABORTED
                    || *status == 409
                    || self.is_key_not_existing()
                    || self.is_org_lookup_failed()
            }
            // TLS: may be a certificate rotation in progress; retried with backoff.
            ZitadelError::Timeout(_)
            | ZitadelError::Transport(_)
            | ZitadelError::Tls(_)
            | ZitadelError::IncompleteListing { .. } => true,
            ZitadelError::RouteMissing { .. }
            | ZitadelError::Decode(_)
            | ZitadelError::Credentials(_)
            | ZitadelError::ResponseTooLarge { .. }
            | ZitadelError::Unproven(_)
            | ZitadelError::InvalidRequest(_)
            | ZitadelError::UserNotInOrganization { .. } => false,
        }
    }

    /// How long ZITADEL asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ZitadelError::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The ZITADEL error id, if any.
    pub fn id(&self) -> Option<&str> {
        match self {
            ZitadelError::Api { id, .. } => id.as_deref(),
            _ => None,
        }
    }

    /// The HTTP status, if ZITADEL answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ZitadelError::Api { status, .. } | ZitadelError::RouteMissing { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }

    /// True when ZITADEL's gRPC layer refused a message for its size: ResourceExhausted (code 8,
    /// HTTP 429) with gRPC's own text (`grpc: received message larger than max (… vs. 4194304)`,
    /// or `trying to send message larger than max`) and none of ZITADEL's quota/limit ids. Not a
    /// rate limit: waiting does not help, a smaller request or page does.
    pub fn is_message_too_large(&self) -> bool {
        matches!(
            self,
            ZitadelError::Api { code: 8, id: None, message, .. } if message.contains("message larger than max")
        )
    }

    /// The size a "too large" refusal reports: gRPC's `(N vs. M)` (bytes of the protobuf
    /// message), or the announced `Content-Length` of an answer over our cap.
    pub fn refused_size(&self) -> Option<u64> {
        match self {
            ZitadelError::ResponseTooLarge { size, .. } => *size,
            ZitadelError::Api { message, .. } if self.is_message_too_large() => {
                let open = message.rfind('(')?;
                let digits: String = message[open + 1..]
                    .trim_start_matches(|c: char| c == '>' || c.is_whitespace())
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                digits.parse().ok()
            }
            _ => None,
        }
    }

    /// True when an answer (or a request) was refused for its size, by our cap or by gRPC.
    pub fn is_too_large(&self) -> bool {
        matches!(self, ZitadelError::ResponseTooLarge { .. }) || self.is_message_too_large()
    }

    /// True when the error says a key to remove was not there (a remove fails whole).
    pub fn is_key_not_existing(&self) -> bool {
        matches!(
            self.id(),
            Some(ids::ORG_KEY_NOT_EXISTING | ids::USER_KEY_NOT_EXISTING)
        )
    }

    /// True when the instance has no route for the call (the API is not served there). The
    /// client re-probes the instance after such an answer (in `Auto` mode).
    pub fn is_route_missing(&self) -> bool {
        matches!(self, ZitadelError::RouteMissing { .. })
    }

    /// True for a permission problem of the service user: 403 (other than `AUTH-Bs7Ds`), and
    /// 404 `AUTHZ-cdgFk` (no membership at all in the org or instance).
    pub fn is_permission(&self) -> bool {
        match self {
            ZitadelError::Api { status, code, .. } => {
                self.id() == Some(ids::NO_MEMBERSHIP)
                    || ((*status == 403 || *code == code::PERMISSION_DENIED)
                        && !self.is_org_lookup_failed())
            }
            _ => false,
        }
    }

    /// True for `AUTH-Bs7Ds`: ZITADEL could not resolve the organization of `x-zitadel-orgid`.
    /// It answers this for a missing org **and** for any failure of the lookup, so it is
    /// retried, never taken as proof that the org is gone.
    pub fn is_org_lookup_failed(&self) -> bool {
        self.id() == Some(ids::ORG_DOES_NOT_EXIST)
    }

    /// True when the user is not in the organization the target names (v1 `COMMAND-uXHNj`,
    /// which also covers a user that does not exist; v2: checked by the client). Not proof
    /// that the user is gone: use [`super::ZitadelApi::target_exists`].
    pub fn is_user_not_in_org(&self) -> bool {
        self.id() == Some(ids::USER_NOT_FOUND_IN_ORG)
            || matches!(self, ZitadelError::UserNotInOrganization { .. })
    }

    /// True only for the one error that is positive proof of a missing target: `GetUserByID`
    /// (`GET /v2/users/{id}` or Connect) answering 404 `QUERY-Dfbg2` — ZITADEL looks the id up
    /// instance-wide before any permission check (`shared/zitadel-api.md` §10). A route 404,
    /// `AUTHZ-cdgFk`, `AUTH-Bs7Ds`, `COMMAND-uXHNj` and any other 404 are **not** proof. For an
    /// organization no single error is; use [`super::ZitadelApi::target_exists`], which also
    /// proves an org gone.
    pub fn is_target_missing(&self) -> bool {
        self.status() == Some(404) && self.id() == Some(ids::USER_NOT_FOUND)
    }

    /// True for the answers that may mean "the target is gone" but prove nothing on their own:
    /// `AUTH-Bs7Ds` (any failed org lookup), `COMMAND-uXHNj` (v1: the user is not in the
    /// context org, or does not exist; v2: not found) and v2's `COMMAND-QXPGs`. The reconciler
    /// confirms them with [`super::ZitadelApi::target_exists`] before it says `TargetNotFound`.
    pub fn needs_existence_proof(&self) -> bool {
        matches!(
            self.id(),
            Some(ids::ORG_DOES_NOT_EXIST | ids::USER_NOT_FOUND_IN_ORG | ids::ORG_NOT_FOUND_V2)
        )
    }

    /// The reason for conditions and Events. Every reason a ZITADEL error can map to is chosen
    /// here, in one place.
    pub fn reason(&self) -> Reason {
        if self.is_key_not_existing() {
            return Reason::ConcurrentMetadataChange;
        }
        if self.is_org_lookup_failed() {
            return Reason::OrganizationLookupFailed;
        }
        if self.is_permission() {
            return Reason::ZitadelPermissionDenied;
        }
        if self.is_user_not_in_org() {
            return Reason::UserNotFound;
        }
        if self.is_message_too_large() {
            return Reason::ZitadelMessageTooLarge;
        }
        match self {
            ZitadelError::Api { status: 401, .. } => Reason::ZitadelUnauthenticated,
            ZitadelError::Api { status: 404, .. } => Reason::ZitadelNotFound,
            ZitadelError::Api { status: 429, .. } => Reason::ZitadelRateLimited,
            ZitadelError::Api { status, .. } if *status >= 500 => Reason::ZitadelUnavailable,
            ZitadelError::Api { .. } => Reason::ZitadelRejected,
            ZitadelError::RouteMissing { .. } => Reason::ZitadelApiUnavailable,
            ZitadelError::Timeout(_) => Reason::ZitadelTimeout,
            ZitadelError::Transport(_) => Reason::ZitadelUnreachable,
            ZitadelError::Tls(_) => Reason::TlsVerificationFailed,
            ZitadelError::Decode(_) | ZitadelError::ResponseTooLarge { .. } => {
                Reason::ZitadelBadResponse
            }
            ZitadelError::Credentials(_) => Reason::CredentialsUnavailable,
            ZitadelError::IncompleteListing { .. } => Reason::ZitadelListingIncomplete,
            ZitadelError::Unproven(_) => Reason::TargetExistenceUnknown,
            ZitadelError::InvalidRequest(_) => Reason::InvalidSpec,
            ZitadelError::UserNotInOrganization { .. } => Reason::UserNotFound,
        }
    }

    /// Build an error from a non-2xx response (status, `Retry-After` and body text). Accepts
    /// grpc-gateway JSON (`{"code":5,…,"details":[{"@type":…,"id":…}]}`), Connect JSON
    /// (`{"code":"not_found",…,"details":[{"type":…,"value":"<b64 protobuf>","debug":…}]}`),
    /// and anything else (plain text, HTML).
    pub fn from_response(status: u16, retry_after: Option<&str>, body: &str) -> Self {
        let retry_after = retry_after.and_then(parse_retry_after);
        let parsed = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| StatusBody::from_value(&v));
        match parsed {
            Some(parsed) => {
                let message = short(&parsed.message);
                if status == 404
                    && parsed.code.is_none_or(|c| c == code::NOT_FOUND)
                    && parsed.id.is_none()
                    && !parsed.has_details
                    && parsed.message == "Not Found"
                {
                    return ZitadelError::RouteMissing {
                        status,
                        message,
                        service_exists: false,
                    };
                }
                let id = parsed.id.or_else(|| id_from_message(&parsed.message));
                ZitadelError::Api {
                    status,
                    code: parsed.code.unwrap_or_else(|| code_for_status(status)),
                    id,
                    message,
                    retry_after,
                }
            }
            // Not ZITADEL JSON (edge proxy, plain-text "instance is blocked", HTML, the routing
            // 404 of a Connect service without the method...).
            None => {
                let message = short(body);
                if status == 404 && body.trim() == "404 page not found" {
                    return ZitadelError::RouteMissing {
                        status,
                        message,
                        service_exists: true,
                    };
                }
                ZitadelError::Api {
                    status,
                    code: code_for_status(status),
                    id: None,
                    message,
                    retry_after,
                }
            }
        }
    }
}

/// The first 200 characters, trimmed.
fn short(text: &str) -> String {
    text.chars()
        .take(200)
        .collect::<String>()
        .trim()
        .to_string()
}

/// An error body of either JSON shape, reduced to what the client uses.
struct StatusBody {
    code: Option<i32>,
    message: String,
    id: Option<String>,
    has_details: bool,
}

impl StatusBody {
    fn from_value(v: &Value) -> Option<Self> {
        let obj = v.as_object()?;
        let code = match obj.get("code") {
            Some(Value::Number(n)) => n.as_i64().and_then(|n| i32::try_from(n).ok()),
            Some(Value::String(s)) => code::from_connect(s),
            _ => None,
        };
        let message = obj
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if code.is_none() && message.is_none() {
            return None;
        }
        let details = obj
            .get("details")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        Some(StatusBody {
            code,
            message: message.unwrap_or_default(),
            id: details.iter().find_map(detail_id),
            has_details: !details.is_empty(),
        })
    }
}

/// The ZITADEL id of one error detail: `id` (grpc-gateway's `@type` form), else the protobuf
/// `value` of a Connect detail (`zitadel.v1.ErrorDetail` / `CredentialsCheckError`, field 1),
/// else `debug.id`.
fn detail_id(detail: &Value) -> Option<String> {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    if let Some(id) = detail.get("id").and_then(Value::as_str) {
        return non_empty(id);
    }
    let type_name = detail
        .get("type")
        .or_else(|| detail.get("@type"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let type_name = type_name.rsplit('/').next().unwrap_or_default();
    if matches!(
        type_name,
        "zitadel.v1.ErrorDetail" | "zitadel.v1.CredentialsCheckError"
    ) && let Some(id) = detail
        .get("value")
        .and_then(Value::as_str)
        .and_then(|v| decode_base64(v).ok())
        .and_then(|bytes| protobuf_string_field(&bytes, 1))
    {
        return non_empty(&id);
    }
    detail
        .get("debug")
        .and_then(|d| d.get("id"))
        .and_then(Value::as_str)
        .and_then(non_empty)
}

/// Base64 as protojson accepts it: standard or URL-safe alphabet, padded or not.
pub(crate) fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::alphabet::{STANDARD, URL_SAFE};
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const CONFIG: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STD: GeneralPurpose = GeneralPurpose::new(&STANDARD, CONFIG);
    const URL: GeneralPurpose = GeneralPurpose::new(&URL_SAFE, CONFIG);
    STD.decode(text).or_else(|_| URL.decode(text))
}

/// Field `field` (wire type 2, UTF-8) of a protobuf message, read by hand: a varint tag
/// (`field << 3 | wire type`), then per wire type a varint (0), 8 bytes (1), a varint length and
/// that many bytes (2), or 4 bytes (5). `None` for malformed input.
pub(crate) fn protobuf_string_field(bytes: &[u8], field: u64) -> Option<String> {
    fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *bytes.get(*at)?;
            *at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    let mut at = 0usize;
    let mut found = None;
    while at < bytes.len() {
        let tag = varint(bytes, &mut at)?;
        let skip = match tag & 7 {
            0 => {
                varint(bytes, &mut at)?;
                0
            }
            1 => 8,
            2 => {
                let len = usize::try_from(varint(bytes, &mut at)?).ok()?;
                let end = at.checked_add(len).filter(|end| *end <= bytes.len())?;
                if tag >> 3 == field {
                    found = Some(String::from_utf8(bytes[at..end].to_vec()).ok()?);
                }
                len
            }
            5 => 4,
            _ => return None,
        };
        at = at.checked_add(skip).filter(|at| *at <= bytes.len())?;
    }
    found
}

/// The `(ID)` at the end of a ZITADEL message (`"User could not be found (COMMAND-uXHNj)"`):
/// letters, a dash, letters and digits.
fn id_from_message(message: &str) -> Option<String> {
    let inner = message.trim_end().strip_suffix(')')?;
    let candidate = &inner[inner.rfind('(')? + 1..];
    let (prefix, rest) = candidate.split_once('-')?;
    let ok = !prefix.is_empty()
        && prefix.chars().all(|c| c.is_ascii_alphabetic())
        && !rest.is_empty()
        && rest.chars().all(|c| c.is_ascii_alphanumeric());
    ok.then(|| candidate.to_owned())
}

/// `Retry-After` as delay-seconds (the HTTP-date form is rare for APIs; treated as absent).
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The gRPC code grpc-gateway would have mapped to this HTTP status.
fn code_for_status(status: u16) -> i32 {
    match status {
        400 => code::INVALID_ARGUMENT,
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        404 => code::NOT_FOUND,
        409 => code::ABORTED,
        429 => code::RESOURCE_EXHAUSTED,
        501 => code::UNIMPLEMENTED,
        503 => code::UNAVAILABLE,
        504 => code::DEADLINE_EXCEEDED,
        500 => code::INTERNAL,
        _ => code::UNKNOWN,
    }
}

#[cfg(test)]
mod tests;
