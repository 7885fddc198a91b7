//! Connect protocol specifics (v2e §1.0, §1.6, §1.7; connect-go v1.19.1): the answers of the
//! generated handlers for unknown methods and wrong HTTP methods, and the unary request checks
//! connect-go makes before ZITADEL's interceptors run.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::errors::ApiError;

/// `http.NotFound` of the generated service handler: the service exists, the method does not.
pub(crate) fn page_not_found() -> Response {
    let mut resp = (StatusCode::NOT_FOUND, "404 page not found\n").into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// A unary Connect method called with another HTTP method than POST: 405 with `Allow: POST`.
pub(crate) fn method_not_allowed() -> Response {
    let mut resp = StatusCode::METHOD_NOT_ALLOWED.into_response();
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    resp
}

/// connect-go's checks of a unary JSON request after the content type ([`is_json`]): the
/// optional `Connect-Protocol-Version` (must be `1` when sent, v2e §1.0) and a non-empty body
/// (a zero-length payload is not a JSON object). `Some(error)` refuses the request with
/// `invalid_argument` and no details.
pub(crate) fn precheck(headers: &HeaderMap, body: &[u8]) -> Option<ApiError> {
    if let Some(version) = headers.get("connect-protocol-version") {
        let version = String::from_utf8_lossy(version.as_bytes());
        if version != "1" {
            return Some(ApiError::invalid_argument(format!(
                "connect-protocol-version must be \"1\": got \"{version}\""
            )));
        }
    }
    if body.is_empty() {
        return Some(ApiError::invalid_argument(
            "unmarshal message: zero-length payload is not a valid JSON object",
        ));
    }
    None
}

/// Whether the request's content type is Connect unary JSON (`application/json`, any charset).
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// 415 for a content type the emulator does not speak (`application/proto` and anything that is
/// not Connect JSON), with connect-go's `Accept-Post`.
pub(crate) fn unsupported_media_type() -> Response {
    let mut resp = StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
    resp.headers_mut().insert(
        "accept-post",
        HeaderValue::from_static("application/json, application/json; charset=utf-8"),
    );
    resp
}
