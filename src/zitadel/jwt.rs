//! JWT-profile authentication (RFC 7523) for ZITADEL service users: sign an RS256 assertion with
//! the key from the service-user key file, exchange it at `/oauth/v2/token`, cache the access
//! token until shortly before it expires.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use url::Url;

use super::ZitadelError;

/// Scopes the Management API needs (`…:zitadel:aud` makes the token valid for ZITADEL's APIs).
pub const SCOPES: &str = "openid urn:zitadel:iam:org:project:id:zitadel:aud";
/// Refresh this long before the token expires (at most; a tenth of the lifetime for short-lived
/// tokens).
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// How far the assertion's `iat` is backdated: ZITADEL rejects an `iat` more than 1 s in its
/// future, so an operator whose clock runs up to this much ahead still authenticates
/// (`shared/zitadel-api.md` §11).
const IAT_BACKDATE: u64 = 60;
/// How long the assertion is valid after its (backdated) `iat`: well inside the hour ZITADEL
/// accepts an `iat` for, and long enough for a clock that runs a few minutes behind.
const ASSERTION_LIFETIME: u64 = 600;
/// Largest token endpoint answer read (an access token, maybe an id token: a few kB).
const MAX_TOKEN_RESPONSE_BYTES: usize = 1024 * 1024;

/// A ZITADEL service-user key file, validated. Debug output never shows the key.
pub struct KeyFile {
    /// `keyId`.
    pub key_id: String,
    /// `userId` (the service user; `iss` and `sub` of the assertion).
    pub user_id: String,
    key: EncodingKey,
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFile")
            .field("key_id", &self.key_id)
            .field("user_id", &self.user_id)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// A key file that cannot be used. Messages name the field, never its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    /// Not JSON.
    #[error("the service-user key is not valid JSON")]
    NotJson,
    /// A required field is missing or not a non-empty string.
    #[error("the service-user key JSON has no usable field {0:?}")]
    Missing(&'static str),
    /// `type` is not `serviceaccount`.
    #[error(
        "the service-user key JSON field \"type\" must be \"serviceaccount\" (application keys are not supported)"
    )]
    WrongType,
    /// `key` is not an RSA private key PEM.
    #[error("the service-user key JSON field \"key\" is not an RSA private key in PEM form")]
    BadKey,
}

impl KeyFile {
    /// Parse and validate a key file.
    pub fn parse(bytes: &[u8]) -> Result<Self, KeyFileError> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|_| KeyFileError::NotJson)?;
        let field = |name: &'static str| -> Result<String, KeyFileError> {
            value
                .get(name)
                .and_then(|v| v.as_str())
                .filter(|s| !s.trim().is_empty())
                .map(str::to_owned)
                .ok_or(KeyFileError::Missing(name))
        };
        if field("type")? != "serviceaccount" {
            return Err(KeyFileError::WrongType);
        }
        let key_id = field("keyId")?;
        let user_id = field("userId")?;
        let pem = field("key")?;
        let key = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| KeyFileError::BadKey)?;
        Ok(KeyFile {
            key_id,
            user_id,
            key,
        })
    }
}

#[derive(Serialize, Debug)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct OAuthError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

/// The wall clock, replaceable in tests.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The assertion's claims at wall-clock time `now`: `iat` backdated by [`IAT_BACKDATE`], `exp`
/// [`ASSERTION_LIFETIME`] after it.
fn claims<'a>(user_id: &'a str, audience: &'a str, now: SystemTime) -> Claims<'a> {
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let iat = now.saturating_sub(IAT_BACKDATE);
    Claims {
        iss: user_id,
        sub: user_id,
        aud: audience,
        iat,
        exp: iat + ASSERTION_LIFETIME,
    }
}

/// The token endpoint's `Retry-After` (on a 429 or 503), kept with the cached token, so every
/// caller of one profile sees it: until it runs out, a token request is answered from here
/// without calling.
#[derive(Default)]
struct Pause(Option<(Instant, u16)>);

impl Pause {
    /// Remember a `Retry-After` the token endpoint sent with a 429 or 503.
    fn after(&mut self, err: &ZitadelError, now: Instant) {
        if let (Some(status @ (429 | 503)), Some(wait)) = (err.status(), err.retry_after()) {
            self.0 = Some((now + wait, status));
        }
    }

    /// The error to answer without calling while the token endpoint's `Retry-After` runs: the
    /// same status, with the time left as its `Retry-After`, so the caller's backoff honours it.
    fn check(&mut self, now: Instant) -> Option<ZitadelError> {
        let (until, status) = self.0?;
        if now >= until {
            self.0 = None;
            return None;
        }
        let left = until - now;
        Some(ZitadelError::Api {
            status,
            code: if status == 429 {
                super::error::code::RESOURCE_EXHAUSTED
            } else {
                super::error::code::UNAVAILABLE
            },
            id: None,
            message: format!(
                "token endpoint asked to wait (Retry-After); next token request in {:.1} s",
                left.as_secs_f64()
            ),
            retry_after: Some(left),
        })
    }
}

/// An access token and when to refresh it.
type Cached = (Instant, Arc<str>);

/// Access tokens for one service user, exchanged on demand and cached.
pub struct JwtProfile {
    key: KeyFile,
    issuer: String,
    token_url: Url,
    http: reqwest::Client,
    /// The token and when to refresh it, and the token endpoint's pause (`Retry-After` on a 429
    /// or 503): every caller sharing this profile waits, not only the one that got the answer.
    cache: Mutex<(Option<Cached>, Pause)>,
    exchanges: std::sync::atomic::AtomicU64,
    /// The `http` client's request timeout, for the error message of a timed-out exchange.
    timeout: Duration,
    clock: Clock,
}

impl std::fmt::Debug for JwtProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "JwtProfile(user {}, key {})",
            self.key.user_id, self.key.key_id
        )
    }
}

impl JwtProfile {
    /// For the instance at `base_url` (its issuer), using `http` for the token exchange.
    pub fn new(key: KeyFile, base_url: &Url, http: reqwest::Client) -> Result<Self, ZitadelError> {
        let issuer = base_url.as_str().trim_end_matches('/').to_string();
        let token_url = base_url
            .join("oauth/v2/token")
            .map_err(|e| ZitadelError::Credentials(format!("token endpoint URL: {e}")))?;
        Ok(Self {
            key,
            issuer,
            token_url,
            http,
            cache: Mutex::new((None, Pause::default())),
            exchanges: std::sync::atomic::AtomicU64::new(0),
            timeout: Duration::ZERO,
            clock: Arc::new(SystemTime::now),
        })
    }

    /// Use `clock` instead of the system clock for the assertion's times (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// A signed assertion as sent to the token endpoint.
    pub fn assertion(&self) -> Result<String, ZitadelError> {
        let claims = claims(&self.key.user_id, &self.issuer, (self.clock)());
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.key.key_id.clone());
        jsonwebtoken::encode(&header, &claims, &self.key.key)
            .map_err(|e| ZitadelError::Credentials(format!("cannot sign the JWT assertion: {e}")))
    }

    /// Names the timeout `http` was built with, so a timed-out exchange reports it.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The service user the key belongs to.
    pub fn user_id(&self) -> &str {
        &self.key.user_id
    }

    /// How many token exchanges were made (for metrics and tests).
    pub fn exchanges(&self) -> u64 {
        self.exchanges.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A valid access token: cached, or freshly exchanged when missing or about to expire.
    pub async fn token(&self) -> Result<Arc<str>, ZitadelError> {
        let mut cache = self.cache.lock().await;
        let (cached, pause) = &mut *cache;
        if let Some((refresh_at, token)) = cached.as_ref()
            && Instant::now() < *refresh_at
        {
            return Ok(token.clone());
        }
        if let Some(err) = pause.check(Instant::now()) {
            return Err(err);
        }
        let (token, lifetime) = match self.exchange().await {
            Ok(answer) => answer,
            Err(err) => {
                pause.after(&err, Instant::now());
                return Err(err);
            }
        };
        let margin = REFRESH_MARGIN.min(lifetime / 10);
        *cached = Some((Instant::now() + lifetime - margin, token.clone()));
        Ok(token)
    }

    /// Forget the cached token (after a 401), so the next call exchanges a new one.
    pub async fn invalidate(&self) {
        self.cache.lock().await.0 = None;
    }

    async fn exchange(&self) -> Result<(Arc<str>, Duration), ZitadelError> {
        let assertion = self.assertion()?;
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
            .append_pair("assertion", &assertion)
            .append_pair("scope", SCOPES)
            .finish();
        let response = self
            .http
            .post(self.token_url.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    ZitadelError::Timeout(self.timeout)
                } else if let Some(tls) = super::http::tls_error(&e) {
                    tls
                } else {
                    ZitadelError::Transport(format!("token endpoint: {e}"))
                }
            })?;
        let status = response.status().as_u16();
        // A rate-limited token endpoint says when to come back, like the API does.
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = super::http::read_body(response, MAX_TOKEN_RESPONSE_BYTES)
            .await
            .map_err(|e| match e {
                super::http::BodyError::TooLarge { limit, size } => {
                    ZitadelError::ResponseTooLarge { limit, size }
                }
                super::http::BodyError::Read(e) => {
                    ZitadelError::Transport(format!("token endpoint: {e}"))
                }
            })?;
        let text = String::from_utf8_lossy(&text);
        self.exchanges
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !(200..300).contains(&status) {
            // RFC 6749 error body; fall back to ZITADEL's gRPC shape or plain text.
            if let Ok(err) = serde_json::from_str::<OAuthError>(&text)
                && !err.error.is_empty()
            {
                return Err(ZitadelError::Api {
                    status,
                    code: if status >= 500 { 14 } else { 16 },
                    id: Some(err.error),
                    message: format!("token exchange failed: {}", err.error_description),
                    retry_after: retry_after
                        .as_deref()
                        .and_then(super::error::parse_retry_after),
                });
            }
            return Err(ZitadelError::from_response(
                status,
                retry_after.as_deref(),
                &text,
            ));
        }
        let parsed: TokenResponse = serde_json::from_str(&text)
            .map_err(|e| ZitadelError::Decode(format!("token endpoint answer: {e}")))?;
        if parsed.access_token.is_empty() {
            return Err(ZitadelError::Decode(
                "token endpoint returned an empty access_token".into(),
            ));
        }
        let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(3600).max(1));
        Ok((Arc::from(parsed.access_token.as_str()), lifetime))
    }
}

#[cfg(test)]
mod tests;
