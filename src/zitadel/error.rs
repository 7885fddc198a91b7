//! Typed errors of the ZITADEL client.

use std::time::Duration;

use serde::Deserialize;

use crate::reason::Reason;

/// gRPC status codes ZITADEL reports in the `code` field of its error body.
pub mod code {
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
    /// Unavailable (HTTP 503).
    pub const UNAVAILABLE: i32 = 14;
    /// Unauthenticated (HTTP 401).
    pub const UNAUTHENTICATED: i32 = 16;
}

/// ZITADEL error ids (`details[].id`) the operator reacts to. Messages are translated, ids are not.
pub mod ids {
    /// BulkRemove of org metadata with a key that does not exist.
    pub const ORG_KEY_NOT_EXISTING: &str = "META-2npds";
    /// BulkRemove of user metadata with a key that does not exist.
    pub const USER_KEY_NOT_EXISTING: &str = "META-2nnds";
    /// User metadata write for a user that is not in the context org (or does not exist).
    pub const USER_NOT_FOUND_IN_ORG: &str = "COMMAND-uXHNj";
    /// `x-zitadel-orgid` names an organization that does not exist.
    pub const ORG_DOES_NOT_EXIST: &str = "AUTH-Bs7Ds";
    /// The caller holds no role with the needed permission in the org.
    pub const NO_PERMISSION: &str = "AUTH-5mWD2";
}

/// An error talking to ZITADEL. Display output never contains tokens or metadata values.
#[derive(Debug, thiserror::Error)]
pub enum ZitadelError {
    /// ZITADEL answered with an error status.
    #[error("ZITADEL answered HTTP {status} (code {code}{}): {message}", id.as_deref().map(|i| format!(", {i}")).unwrap_or_default())]
    Api {
        /// HTTP status.
        status: u16,
        /// gRPC code from the body (derived from the HTTP status when the body is not ZITADEL JSON).
        code: i32,
        /// `details[0].id`, when present.
        id: Option<String>,
        /// The message (translated text, for humans only).
        message: String,
        /// Parsed `Retry-After`, when present.
        retry_after: Option<Duration>,
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
    },
}

impl ZitadelError {
    /// Whether retrying later may succeed without anyone changing anything (429, 5xx,
    /// timeouts, connection failures, 409 Aborted, and a bulk remove that lost a race with
    /// another writer removing one of its keys: re-reading and planning again succeeds).
    pub fn is_transient(&self) -> bool {
        match self {
            ZitadelError::Api { status, code, .. } => {
                *status == 429
                    || *status >= 500
                    || *code == code::ABORTED
                    || *status == 409
                    || self.is_key_not_existing()
            }
            // TLS: may be a certificate rotation in progress; retried with backoff.
            ZitadelError::Timeout(_) | ZitadelError::Transport(_) | ZitadelError::Tls(_) => true,
            ZitadelError::Decode(_)
            | ZitadelError::Credentials(_)
            | ZitadelError::ResponseTooLarge { .. } => false,
        }
    }

    /// How long ZITADEL asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ZitadelError::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The ZITADEL error id (`details[].id`), if any.
    pub fn id(&self) -> Option<&str> {
        match self {
            ZitadelError::Api { id, .. } => id.as_deref(),
            _ => None,
        }
    }

    /// The HTTP status, if ZITADEL answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ZitadelError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when ZITADEL's gRPC layer refused a message for its size: ResourceExhausted (code 8,
    /// HTTP 429) with gRPC's own text (`grpc: received message larger than max (… vs. 4194304)`,
    /// or `trying to send message larger than max`) and none of ZITADEL's quota/limit ids. Not a
    /// rate limit: waiting does not help, a smaller request or page does. (The contract infers a
    /// 4 MiB gRPC default for requests; a list page answered through the gateway may hit the same
    /// default on the way back.)
    pub fn is_message_too_large(&self) -> bool {
        matches!(
            self,
            ZitadelError::Api { code: 8, id: None, message, .. } if message.contains("message larger than max")
        )
    }

    /// True when the error says a key to remove was not there (BulkRemove fails whole).
    pub fn is_key_not_existing(&self) -> bool {
        matches!(
            self.id(),
            Some(ids::ORG_KEY_NOT_EXISTING | ids::USER_KEY_NOT_EXISTING)
        )
    }

    /// True when the error says the target (org or user) does not exist. A 404 saying a
    /// metadata key does not exist ([`Self::is_key_not_existing`]) is not: the target is there.
    pub fn is_target_missing(&self) -> bool {
        matches!(
            self.id(),
            Some(ids::USER_NOT_FOUND_IN_ORG | ids::ORG_DOES_NOT_EXIST)
        ) || (matches!(self, ZitadelError::Api { status: 404, .. }) && !self.is_key_not_existing())
    }

    /// A one-word PascalCase reason for conditions and events.
    pub fn reason(&self) -> Reason {
        if self.is_key_not_existing() {
            return Reason::ConcurrentMetadataChange;
        }
        match self {
            ZitadelError::Api { status: 401, .. } => Reason::ZitadelUnauthenticated,
            ZitadelError::Api { status: 403, .. } => Reason::ZitadelPermissionDenied,
            ZitadelError::Api { status: 404, .. } => Reason::ZitadelNotFound,
            ZitadelError::Api { status: 429, .. } => Reason::ZitadelRateLimited,
            ZitadelError::Api { status, .. } if *status >= 500 => Reason::ZitadelUnavailable,
            ZitadelError::Api { id: Some(id), .. } if id == ids::USER_NOT_FOUND_IN_ORG => {
                Reason::UserNotFound
            }
            ZitadelError::Api { .. } => Reason::ZitadelRejected,
            ZitadelError::Timeout(_) => Reason::ZitadelTimeout,
            ZitadelError::Transport(_) => Reason::ZitadelUnreachable,
            ZitadelError::Tls(_) => Reason::TlsVerificationFailed,
            ZitadelError::Decode(_) | ZitadelError::ResponseTooLarge { .. } => {
                Reason::ZitadelBadResponse
            }
            ZitadelError::Credentials(_) => Reason::CredentialsUnavailable,
        }
    }

    /// Build an error from a non-2xx response (status, headers and body text).
    pub fn from_response(status: u16, retry_after: Option<&str>, body: &str) -> Self {
        let retry_after = retry_after.and_then(parse_retry_after);
        match serde_json::from_str::<StatusBody>(body) {
            Ok(parsed) if parsed.code.is_some() || parsed.message.is_some() => ZitadelError::Api {
                status,
                code: parsed.code.unwrap_or_else(|| code_for_status(status)),
                id: parsed.details.into_iter().find_map(|d| d.id),
                message: parsed.message.unwrap_or_default(),
                retry_after,
            },
            // Not ZITADEL JSON (edge proxy, plain-text "instance is blocked", HTML...).
            _ => ZitadelError::Api {
                status,
                code: code_for_status(status),
                id: None,
                message: body
                    .chars()
                    .take(200)
                    .collect::<String>()
                    .trim()
                    .to_string(),
                retry_after,
            },
        }
    }
}

/// The `google.rpc.Status` error body of the gRPC gateway.
#[derive(Deserialize)]
struct StatusBody {
    #[serde(default)]
    code: Option<i32>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    id: Option<String>,
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
        503 => code::UNAVAILABLE,
        504 => code::DEADLINE_EXCEEDED,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_zitadel_error_body_by_id_not_text() {
        let body = r#"{"code":5,"message":"Ein oder mehrere Schlüssel existieren nicht (META-2npds)","details":[{"@type":"type.googleapis.com/zitadel.v1.ErrorDetail","id":"META-2npds","message":"x"}]}"#;
        let err = ZitadelError::from_response(404, None, body);
        assert!(err.is_key_not_existing());
        assert_eq!(err.id(), Some("META-2npds"));
    }

    #[test]
    fn grpc_message_size_refusals_are_not_rate_limits() {
        let too_large = ZitadelError::from_response(
            429,
            None,
            r#"{"code":8,"message":"grpc: received message larger than max (9437184 vs. 4194304)","details":[]}"#,
        );
        assert!(too_large.is_message_too_large());
        for body in [
            r#"{"code":8,"message":"quota exceeded","details":[{"id":"QUOTA-vjAy8"}]}"#,
            r#"{"code":8,"message":"Instance is blocked","details":[{"id":"LIMITS-molsj"}]}"#,
            "Your ZITADEL instance is blocked.",
        ] {
            let err = ZitadelError::from_response(429, None, body);
            assert!(!err.is_message_too_large(), "{body}");
        }
    }

    #[test]
    fn a_missing_key_is_a_race_not_a_missing_target() {
        for (status, body) in [
            (
                404,
                r#"{"code":5,"message":"One or more keys do not exist (META-2npds)","details":[{"id":"META-2npds"}]}"#,
            ),
            (
                404,
                r#"{"code":5,"message":"x","details":[{"id":"META-2nnds"}]}"#,
            ),
        ] {
            let err = ZitadelError::from_response(status, None, body);
            assert!(err.is_key_not_existing());
            // Someone else removed a key between the read and the remove: retry (re-read),
            // never "organization/user not found" (which would stall, or end a cleanup early).
            assert!(!err.is_target_missing(), "{err}");
            assert!(err.is_transient(), "{err}");
            assert_eq!(err.reason(), "ConcurrentMetadataChange");
        }
        // Other 404s still mean the target is gone.
        let gone =
            ZitadelError::from_response(404, None, r#"{"code":5,"message":"User not found"}"#);
        assert!(gone.is_target_missing() && !gone.is_transient());
    }

    #[test]
    fn plain_text_429_is_transient_with_retry_after() {
        let err = ZitadelError::from_response(429, Some("7"), "Your ZITADEL instance is blocked.");
        assert!(err.is_transient());
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(err.reason(), "ZitadelRateLimited");
    }

    #[test]
    fn classifies_statuses() {
        for (status, transient) in [
            (400, false),
            (401, false),
            (403, false),
            (404, false),
            (409, true),
            (500, true),
            (503, true),
            (504, true),
        ] {
            let err = ZitadelError::from_response(status, None, "{}");
            assert_eq!(err.is_transient(), transient, "status {status}");
        }
        assert!(ZitadelError::Timeout(Duration::from_secs(1)).is_transient());
        assert!(ZitadelError::Transport("refused".into()).is_transient());
    }

    #[test]
    fn transient_reasons_name_only_transient_errors() {
        let samples = [
            ZitadelError::from_response(400, None, "{}"),
            ZitadelError::from_response(401, None, "{}"),
            ZitadelError::from_response(403, None, "{}"),
            ZitadelError::from_response(404, None, "{}"),
            ZitadelError::from_response(409, None, "{}"),
            ZitadelError::from_response(429, Some("3"), "blocked"),
            ZitadelError::from_response(500, None, "{}"),
            ZitadelError::from_response(503, None, "{}"),
            ZitadelError::from_response(
                404,
                None,
                r#"{"code":5,"message":"x","details":[{"id":"META-2npds"}]}"#,
            ),
            ZitadelError::Timeout(Duration::from_secs(1)),
            ZitadelError::Transport("reset".into()),
            ZitadelError::Decode("x".into()),
            ZitadelError::Credentials("x".into()),
        ];
        let mut transient_reasons = 0;
        for e in &samples {
            if e.reason().is_transient() {
                assert!(e.is_transient(), "{} is not transient: {e}", e.reason());
                transient_reasons += 1;
            }
        }
        assert_eq!(transient_reasons, 6);
        assert!(!Reason::ZitadelPermissionDenied.is_transient());
        assert!(!Reason::Connected.is_transient());
    }

    #[test]
    fn user_outside_org_is_target_missing() {
        let body = r#"{"code":9,"message":"User could not be found (COMMAND-uXHNj)","details":[{"id":"COMMAND-uXHNj"}]}"#;
        let err = ZitadelError::from_response(400, None, body);
        assert!(err.is_target_missing());
        assert_eq!(err.reason(), "UserNotFound");
    }
}
