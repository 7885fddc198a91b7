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

mod codes;
mod parse;

pub use codes::{code, ids};
pub(crate) use parse::{decode_base64, parse_retry_after};
#[cfg(test)]
use parse::{id_from_message, protobuf_string_field};

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
}

#[cfg(test)]
mod tests;
