//! Error model of the emulator: gRPC status codes, the HTTP status map of grpc-gateway, ZITADEL
//! errors with `zitadel.v1.ErrorDetail` details and plain errors without details.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// Numeric gRPC status codes.
pub(crate) mod code {
    pub(crate) const INVALID_ARGUMENT: i32 = 3;
    pub(crate) const NOT_FOUND: i32 = 5;
    pub(crate) const PERMISSION_DENIED: i32 = 7;
    pub(crate) const RESOURCE_EXHAUSTED: i32 = 8;
    pub(crate) const FAILED_PRECONDITION: i32 = 9;
    pub(crate) const UNIMPLEMENTED: i32 = 12;
    pub(crate) const UNAUTHENTICATED: i32 = 16;
}

/// `@type` of ZITADEL's error detail.
pub(crate) const ERROR_DETAIL_TYPE: &str = "type.googleapis.com/zitadel.v1.ErrorDetail";

/// grpc-gateway's `HTTPStatusFromCode` (contract §4).
pub(crate) fn http_status_from_code(code: i32) -> u16 {
    match code {
        0 => 200,
        1 => 499,
        3 | 9 | 11 => 400,
        4 => 504,
        5 => 404,
        6 | 10 => 409,
        7 => 403,
        8 => 429,
        12 => 501,
        14 => 503,
        16 => 401,
        _ => 500,
    }
}

/// A translatable ZITADEL error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Msg {
    MetadataNotFound,
    MetadataNoData,
    MetadataKeyNotExisting,
    UserNotFound,
    OrgNotFound,
    TokenInvalid,
    InvalidAuthHeader,
    OrgDoesNotExist,
    NoMatchingPermissions,
    ListQueryInvalid,
    QueryLimitExceeded,
    QuotaExhausted,
}

impl Msg {
    /// The localized text (English, or German when `german`).
    pub(crate) fn text(self, german: bool) -> &'static str {
        match (self, german) {
            (Msg::MetadataNotFound, false) => "Metadata not found",
            (Msg::MetadataNotFound, true) => "Metadaten konnten nicht gefunden werden",
            (Msg::MetadataNoData, false) => "Metadata list is empty",
            (Msg::MetadataNoData, true) => "Metadatenliste ist leer",
            (Msg::MetadataKeyNotExisting, false) => "One or more keys do not exist",
            (Msg::MetadataKeyNotExisting, true) => "Ein oder mehrere Schlüssel existieren nicht",
            (Msg::UserNotFound, false) => "User could not be found",
            (Msg::UserNotFound, true) => "Benutzer konnte nicht gefunden werden",
            (Msg::OrgNotFound, false) => "Organisation not found",
            (Msg::OrgNotFound, true) => "Organisation konnte nicht gefunden werden",
            (Msg::TokenInvalid, false) => "Token is invalid",
            (Msg::TokenInvalid, true) => "Token ist ungültig",
            (Msg::InvalidAuthHeader, false) => "invalid auth header",
            (Msg::InvalidAuthHeader, true) => "ungültiger Auth-Header",
            (Msg::OrgDoesNotExist, false) => "Organisation doesn't exist",
            (Msg::OrgDoesNotExist, true) => "Organisation existiert nicht",
            (Msg::NoMatchingPermissions, false) => "No matching permissions found",
            (Msg::NoMatchingPermissions, true) => "Keine passenden Berechtigungen gefunden",
            (Msg::ListQueryInvalid, false) => "List.Query.Invalid",
            (Msg::ListQueryInvalid, true) => "Ungültige Listenabfrage",
            (Msg::QueryLimitExceeded, false) => "Query limit exceeded",
            (Msg::QueryLimitExceeded, true) => "Abfragelimit überschritten",
            (Msg::QuotaExhausted, false) => "The quota for authenticated requests is exhausted",
            (Msg::QuotaExhausted, true) => {
                "Das Kontingent für authentifizierte Anfragen ist aufgebraucht"
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// A status raised outside ZITADEL's error type: no details, never translated.
    Plain(String),
    /// A ZITADEL error: `message = "<text> (<id>)"` plus one `ErrorDetail`.
    Zitadel { id: &'static str, msg: Msg },
}

/// An error answer of the emulated API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("gRPC code {code}: {}", self.message(false))]
pub(crate) struct ApiError {
    code: i32,
    kind: Kind,
    http: Option<u16>,
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error without details (PGV validation, decoding, routing, "auth header missing").
    pub(crate) fn plain(code: i32, message: impl Into<String>) -> Self {
        ApiError {
            code,
            kind: Kind::Plain(message.into()),
            http: None,
            retry_after: None,
        }
    }

    /// A ZITADEL error with an id and a translatable message.
    pub(crate) fn zitadel(code: i32, id: &'static str, msg: Msg) -> Self {
        ApiError {
            code,
            kind: Kind::Zitadel { id, msg },
            http: None,
            retry_after: None,
        }
    }

    /// 400 / code 3 without details.
    pub(crate) fn invalid_argument(message: impl Into<String>) -> Self {
        ApiError::plain(code::INVALID_ARGUMENT, message)
    }

    /// Overrides the HTTP status derived from the code.
    pub(crate) fn with_http(mut self, status: u16) -> Self {
        self.http = Some(status);
        self
    }

    /// Adds a `Retry-After` header (seconds).
    pub(crate) fn with_retry_after(mut self, secs: Option<u64>) -> Self {
        self.retry_after = secs;
        self
    }

    fn message(&self, german: bool) -> String {
        match &self.kind {
            Kind::Plain(m) => m.clone(),
            Kind::Zitadel { id, msg } => format!("{} ({id})", msg.text(german)),
        }
    }

    /// The HTTP status this error is answered with.
    pub(crate) fn http_status(&self) -> u16 {
        self.http
            .unwrap_or_else(|| http_status_from_code(self.code))
    }

    /// The JSON `google.rpc.Status` body (protojson: empty fields omitted).
    pub(crate) fn body(&self, german: bool) -> Value {
        let mut body = Map::new();
        if self.code != 0 {
            body.insert("code".into(), json!(self.code));
        }
        let message = self.message(german);
        if !message.is_empty() {
            body.insert("message".into(), Value::String(message));
        }
        if let Kind::Zitadel { id, msg } = &self.kind {
            body.insert(
                "details".into(),
                json!([{ "@type": ERROR_DETAIL_TYPE, "id": id, "message": msg.text(german) }]),
            );
        }
        Value::Object(body)
    }

    /// Renders the full HTTP response.
    pub(crate) fn render(&self, german: bool) -> Response {
        let status =
            StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, Json(self.body(german))).into_response();
        if status == StatusCode::UNAUTHORIZED
            && let Ok(v) = HeaderValue::from_bytes(self.message(german).as_bytes())
        {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
