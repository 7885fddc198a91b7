//! The OAuth / OIDC side of the emulated instance (contract §5): the token endpoint with the JWT
//! profile grant (RFC 7523) for service users, the discovery document, and RSA key files.
//!
//! The assertion checks follow ZITADEL (zitadel/oidc's `VerifyJWTAssertion`, with ZITADEL's
//! 1 h maximum `iat` age and 1 s clock offset), in its order: `aud` contains the issuer → not
//! expired (`now + 1 s < exp`) → `iat` present, not in the future (`iat <= round(now + 1 s)`) and
//! not older than 1 h → `iss == sub`, naming a registered service user → header `alg` is `RS256`
//! → `kid` is a key registered for `iss` → signature. Every failure is answered as RFC 7523 §3.1
//! prescribes: HTTP 400 `{"error":"invalid_grant","error_description":"…"}`. Requests without
//! `grant_type`, `assertion` or `scope` get `invalid_request`, other grant types
//! `unsupported_grant_type` (both 400).
//!
//! The scope only has to be non-empty (ZITADEL drops scopes it does not know and no longer
//! requires `openid`). A token is issued either way, but only one requested with
//! `urn:zitadel:iam:org:project:id:zitadel:aud` carries ZITADEL's API audience; the API rejects
//! any other with 401 `AUTH-7fs1e` "Token is invalid", as it does expired tokens.

use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context as _;
use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SecondsFormat, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use percent_encoding::percent_decode_str;
use rsa::RsaPrivateKey;
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::{EncodePublicKey as _, LineEnding};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::lock;
use super::model::Operation;
use super::state::{IssuedToken, State};

/// `grant_type` of the JWT profile grant.
pub(crate) const GRANT_TYPE_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The scope that adds ZITADEL's own project to the token's audience (needed for API calls).
pub(crate) const SCOPE_ZITADEL_API: &str = "urn:zitadel:iam:org:project:id:zitadel:aud";
/// Path of the token endpoint.
pub(crate) const TOKEN_PATH: &str = "/oauth/v2/token";
/// `expirationDate` of generated key files (ZITADEL's "no expiry").
pub(crate) const KEY_FILE_EXPIRATION: &str = "9999-12-31T23:59:59Z";
/// Size of generated RSA keys.
const KEY_BITS: usize = 2048;
/// Oldest accepted `iat` (ZITADEL: `time.Hour`).
const MAX_IAT_AGE_SECS: f64 = 3600.0;
/// Clock offset of the assertion checks (ZITADEL: `time.Second`).
const OFFSET_SECS: f64 = 1.0;
/// `error_description` of a request without scope (zitadel/oidc `ValidateAuthReqScopes`).
const SCOPE_MISSING: &str = "The scope of your request is missing. Please ensure some scopes are \
    requested. If you have any questions, you may contact the administrator of the application.";

/// An RFC 6749 §5.2 error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OAuthError {
    error: &'static str,
    description: String,
}

impl OAuthError {
    fn invalid_request(description: impl Into<String>) -> Self {
        OAuthError {
            error: "invalid_request",
            description: description.into(),
        }
    }

    fn invalid_grant(description: impl Into<String>) -> Self {
        OAuthError {
            error: "invalid_grant",
            description: description.into(),
        }
    }

    fn unsupported_grant_type(description: impl Into<String>) -> Self {
        OAuthError {
            error: "unsupported_grant_type",
            description: description.into(),
        }
    }

    fn render(&self) -> Response {
        no_store(
            (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": self.error, "error_description": self.description })),
            )
                .into_response(),
        )
    }
}

/// Adds the cache headers RFC 6749 §5.1 requires on token responses.
fn no_store(mut resp: Response) -> Response {
    let headers = resp.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// Handles a request routed to an OAuth / OIDC endpoint (`query` = the raw URL query string).
pub(crate) fn handle(
    state: &Mutex<State>,
    op: Operation,
    headers: &HeaderMap,
    query: &str,
    body: &[u8],
) -> Response {
    let mut st = lock(state);
    match op {
        Operation::OAuthToken => match token(&mut st, headers, query, body) {
            Ok(value) => no_store(Json(value).into_response()),
            Err(e) => e.render(),
        },
        Operation::OidcDiscovery => Json(discovery(&st.issuer)).into_response(),
        _ => (StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}

/// The discovery document. Only the token endpoint is served by the emulator; the other
/// endpoints are listed at ZITADEL's paths for clients that insist on them.
fn discovery(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/oauth/v2/authorize"),
        "token_endpoint": format!("{issuer}{TOKEN_PATH}"),
        "introspection_endpoint": format!("{issuer}/oauth/v2/introspect"),
        "userinfo_endpoint": format!("{issuer}/oidc/v1/userinfo"),
        "revocation_endpoint": format!("{issuer}/oauth/v2/revoke"),
        "end_session_endpoint": format!("{issuer}/oidc/v1/end_session"),
        "jwks_uri": format!("{issuer}/oauth/v2/keys"),
        "scopes_supported": ["openid", "profile", "email", "phone", "address", "offline_access"],
        "response_types_supported": ["code", "id_token", "id_token token"],
        "grant_types_supported": [GRANT_TYPE_JWT_BEARER],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
        "claims_supported": ["sub", "aud", "exp", "iat", "iss", "auth_time", "nonce", "acr", "amr", "c_hash", "at_hash", "act", "scopes", "client_id", "azp", "preferred_username", "name", "family_name", "given_name", "locale", "email", "email_verified", "phone_number", "phone_number_verified"],
        "code_challenge_methods_supported": ["S256"],
        "request_parameter_supported": true,
        "request_uri_parameter_supported": false,
    })
}

/// The form fields of a request like Go's `r.FormValue`: the url-encoded body (only with a
/// `application/x-www-form-urlencoded` content type) before the URL query; the first value wins.
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(headers: &HeaderMap, query: &str, body: &[u8]) -> Self {
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        let mut pairs = Vec::new();
        if is_form {
            pairs.extend(url_encoded(&String::from_utf8_lossy(body)));
        }
        pairs.extend(url_encoded(query));
        Form(pairs)
    }

    /// The first value of `name` (empty when absent).
    fn value(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

fn url_encoded(text: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

/// `POST /oauth/v2/token`.
fn token(
    st: &mut State,
    headers: &HeaderMap,
    query: &str,
    body: &[u8],
) -> Result<Value, OAuthError> {
    let form = Form::parse(headers, query, body);
    match form.value("grant_type") {
        "" => return Err(OAuthError::invalid_request("grant_type missing")),
        GRANT_TYPE_JWT_BEARER => {}
        other => {
            return Err(OAuthError::unsupported_grant_type(format!(
                "{other} not supported"
            )));
        }
    }
    let assertion = form.value("assertion");
    if assertion.is_empty() {
        return Err(OAuthError::invalid_request("assertion missing"));
    }
    let user_id = verify_assertion(st, assertion)?;
    let scopes: Vec<&str> = form.value("scope").split_whitespace().collect();
    if scopes.is_empty() {
        return Err(OAuthError::invalid_request(SCOPE_MISSING));
    }
    let lifetime = st.access_token_lifetime();
    let access_token = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    st.issued_tokens.insert(
        access_token.clone(),
        IssuedToken {
            user_id,
            expires_at: Instant::now() + lifetime,
            api_audience: scopes.contains(&SCOPE_ZITADEL_API),
        },
    );
    let expires_in = lifetime.as_secs() + u64::from(lifetime.subsec_nanos() > 0);
    Ok(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": expires_in,
    }))
}

/// A Unix time for error descriptions.
fn show_time(secs: f64) -> String {
    // Truncation to whole seconds is intended.
    DateTime::<Utc>::from_timestamp(secs.floor() as i64, 0).map_or_else(
        || secs.to_string(),
        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

/// Decodes one base64url JWT segment into a JSON object.
fn segment(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Verifies a JWT profile assertion; returns the service user's id.
fn verify_assertion(st: &State, assertion: &str) -> Result<String, OAuthError> {
    let parse_error =
        |what: &str| OAuthError::invalid_grant(format!("parsing of request failed: {what}"));
    let parts: Vec<&str> = assertion.split('.').collect();
    let [header, payload, _signature] = parts[..] else {
        return Err(parse_error("token contains an invalid number of segments"));
    };
    let claims = segment(payload).ok_or_else(|| parse_error("malformed jwt payload"))?;
    let header = segment(header).ok_or_else(|| parse_error("malformed jwt header"))?;
    let text = |map: &Map<String, Value>, name: &str| -> String {
        map.get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let number = |name: &str| claims.get(name).and_then(Value::as_f64);

    let issuer = st.issuer.as_str();
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == issuer,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(issuer)),
        _ => false,
    };
    if !audience_ok {
        return Err(OAuthError::invalid_grant(format!(
            "audience is not valid: Audience must contain client_id {issuer:?}"
        )));
    }

    // The emulator's clock (it may be skewed from the client's: `Emulator::set_clock_offset`).
    let now = st.clock().timestamp_micros() as f64 / 1e6;
    let exp = number("exp").unwrap_or(0.0);
    if now + OFFSET_SECS >= exp {
        return Err(OAuthError::invalid_grant(format!(
            "token has expired: exp: {}",
            show_time(exp)
        )));
    }

    let Some(iat) = number("iat") else {
        return Err(OAuthError::invalid_grant("issuedAt of token is missing"));
    };
    let now_with_offset = (now + OFFSET_SECS).round();
    if iat > now_with_offset {
        return Err(OAuthError::invalid_grant(format!(
            "issuedAt of token is in the future: (iat: {}, now with offset: {})",
            show_time(iat),
            show_time(now_with_offset)
        )));
    }
    let max_age = (now - MAX_IAT_AGE_SECS).round();
    if iat < max_age {
        return Err(OAuthError::invalid_grant(format!(
            "issuedAt of token is to old: must not be older than {}, but was {}",
            show_time(max_age),
            show_time(iat)
        )));
    }

    let iss = text(&claims, "iss");
    if iss != text(&claims, "sub") {
        return Err(OAuthError::invalid_grant(
            "delegation not allowed, issuer and sub must be identical",
        ));
    }
    let Some(user) = st.service_users.get(&iss) else {
        return Err(OAuthError::invalid_grant("User could not be found"));
    };

    let alg = text(&header, "alg");
    if alg != "RS256" {
        return Err(OAuthError::invalid_grant(format!(
            "signature algorithm not supported: id token signed with unsupported algorithm, \
             expected [\"RS256\"] got {alg:?}"
        )));
    }
    let kid = text(&header, "kid");
    let Some(pem) = user.keys.get(&kid) else {
        return Err(OAuthError::invalid_grant(
            "invalid signature (error fetching keys: Errors.AuthNKey.NotFound)",
        ));
    };
    let key = DecodingKey::from_rsa_pem(pem.as_bytes())
        .map_err(|e| OAuthError::invalid_grant(format!("invalid signature ({e})")))?;
    let mut validation = Validation::new(Algorithm::RS256);
    // The claims were checked above, with ZITADEL's rules; only the signature is left.
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.leeway = 0;
    jsonwebtoken::decode::<Value>(assertion, &key, &validation)
        .map_err(|e| OAuthError::invalid_grant(format!("invalid signature ({e})")))?;
    Ok(iss)
}

/// Checks that `pem` is an RSA public key (PKCS#1 `RSA PUBLIC KEY` or SPKI `PUBLIC KEY`).
pub(crate) fn check_public_key(pem: &str) -> anyhow::Result<()> {
    DecodingKey::from_rsa_pem(pem.as_bytes())
        .map(|_| ())
        .context("not an RSA public key in PEM form")
}

/// A ZITADEL service-account key file.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct KeyFile<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    key_id: &'a str,
    key: &'a str,
    expiration_date: &'a str,
    user_id: &'a str,
}

/// A new RSA key pair: the private key as PKCS#1 PEM (`RSA PRIVATE KEY`) and the public key as
/// SPKI PEM (`PUBLIC KEY`).
pub(crate) fn generate_key_pair() -> anyhow::Result<(String, String)> {
    let private = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, KEY_BITS)
        .context("generating an RSA key")?;
    let private_pem = private
        .to_pkcs1_pem(LineEnding::LF)
        .context("encoding the RSA private key")?
        .to_string();
    let public_pem = private
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .context("encoding the RSA public key")?;
    Ok((private_pem, public_pem))
}

/// The key file JSON ZITADEL hands out for a service user key.
pub(crate) fn key_file(user_id: &str, key_id: &str, private_pem: &str) -> anyhow::Result<String> {
    serde_json::to_string(&KeyFile {
        kind: "serviceaccount",
        key_id,
        key: private_pem,
        expiration_date: KEY_FILE_EXPIRATION,
        user_id,
    })
    .context("serializing the key file")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_body_first() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        );
        let form = Form::parse(&headers, "scope=q&x=1", b"scope=openid+a%3Ab&grant_type=g");
        assert_eq!(form.value("scope"), "openid a:b");
        assert_eq!(form.value("grant_type"), "g");
        assert_eq!(form.value("x"), "1");
        assert_eq!(form.value("missing"), "");
        // Without the form content type the body is not read.
        let form = Form::parse(&HeaderMap::new(), "", b"grant_type=g");
        assert_eq!(form.value("grant_type"), "");
    }

    #[test]
    fn malformed_assertions() {
        let st = State::default();
        let err = verify_assertion(&st, "a.b").unwrap_err();
        assert_eq!(err.error, "invalid_grant");
        assert!(err.description.contains("invalid number of segments"));
        let err = verify_assertion(&st, "a.b.c").unwrap_err();
        assert!(err.description.contains("malformed jwt payload"));
    }
}
