//! Error model of the emulator: gRPC status codes, the HTTP status map of grpc-gateway, ZITADEL
//! errors with `zitadel.v1.ErrorDetail` details and plain errors without details.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
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

/// Connect's snake_case name of a gRPC code ([C] `code.go`).
pub(crate) fn connect_code_name(code: i32) -> &'static str {
    match code {
        1 => "canceled",
        3 => "invalid_argument",
        4 => "deadline_exceeded",
        5 => "not_found",
        6 => "already_exists",
        7 => "permission_denied",
        8 => "resource_exhausted",
        9 => "failed_precondition",
        10 => "aborted",
        11 => "out_of_range",
        12 => "unimplemented",
        13 => "internal",
        14 => "unavailable",
        15 => "data_loss",
        16 => "unauthenticated",
        _ => "unknown",
    }
}

/// Protobuf encoding of `zitadel.v1.ErrorDetail {string id = 1; string message = 2;}`.
pub(crate) fn error_detail_proto(id: &str, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(id.len() + message.len() + 8);
    for (tag, text) in [(0x0a_u8, id), (0x12_u8, message)] {
        if text.is_empty() {
            continue;
        }
        out.push(tag);
        let mut len = text.len();
        while len >= 0x80 {
            // Low 7 bits with the continuation bit; truncation is the point.
            out.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(text.as_bytes());
    }
    out
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
    /// `membership not found` (`AUTHZ-cdgFk`): a plain Go string, never translated.
    MembershipNotFound,
    /// `No matching permissions found` of `authz.CheckPermission` (`AUTH-AWfge`): not an i18n
    /// key, so it stays English (v2e §1.4).
    PermissionMissing,
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
            (Msg::MembershipNotFound, _) => "membership not found",
            (Msg::PermissionMissing, _) => "No matching permissions found",
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

    /// The Connect error body (v2e §1.6): `code` as its snake_case name, the message, and for
    /// ZITADEL errors exactly one `zitadel.v1.ErrorDetail` detail whose `value` is the protobuf
    /// encoding in standard base64 without padding, plus the `debug` protojson.
    pub(crate) fn connect_body(&self, german: bool) -> Value {
        let mut body = Map::new();
        body.insert("code".into(), json!(connect_code_name(self.code)));
        let message = self.message(german);
        if !message.is_empty() {
            body.insert("message".into(), Value::String(message));
        }
        if let Kind::Zitadel { id, msg } = &self.kind {
            let text = msg.text(german);
            body.insert(
                "details".into(),
                json!([{
                    "type": "zitadel.v1.ErrorDetail",
                    "value": STANDARD_NO_PAD.encode(error_detail_proto(id, text)),
                    "debug": { "id": id, "message": text },
                }]),
            );
        }
        Value::Object(body)
    }

    /// Renders a Connect error answer (`application/json`, HTTP status from the same map).
    pub(crate) fn render_connect(&self, german: bool) -> Response {
        let status =
            StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, Json(self.connect_body(german))).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }

    /// Renders in the shape of `transport`.
    pub(crate) fn render_for(&self, connect: bool, german: bool) -> Response {
        if connect {
            self.render_connect(german)
        } else {
            self.render(german)
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_detail_matches_the_contract_examples() {
        // v2e §1.6: the values computed for the contract.
        let cases = [
            (
                "META-2nnds",
                "One or more keys do not exist",
                "CgpNRVRBLTJubmRzEh1PbmUgb3IgbW9yZSBrZXlzIGRvIG5vdCBleGlzdA",
            ),
            (
                "COMMAND-uXHNj",
                "User could not be found",
                "Cg1DT01NQU5ELXVYSE5qEhdVc2VyIGNvdWxkIG5vdCBiZSBmb3VuZA",
            ),
            (
                "META-2npds",
                "One or more keys do not exist",
                "CgpNRVRBLTJucGRzEh1PbmUgb3IgbW9yZSBrZXlzIGRvIG5vdCBleGlzdA",
            ),
            (
                "AUTH-AWfge",
                "No matching permissions found",
                "CgpBVVRILUFXZmdlEh1ObyBtYXRjaGluZyBwZXJtaXNzaW9ucyBmb3VuZA",
            ),
        ];
        for (id, message, value) in cases {
            assert_eq!(
                STANDARD_NO_PAD.encode(error_detail_proto(id, message)),
                value,
                "{id}"
            );
        }
    }
}
