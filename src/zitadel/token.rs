//! Where the bearer token (a ZITADEL Personal Access Token) comes from.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use tokio::sync::Mutex;

use super::ZitadelError;

/// How long a token read from a Kubernetes Secret is reused before it is read again (rotation).
const SECRET_TTL: Duration = Duration::from_secs(60);

/// A source of the bearer token. Tokens are never logged.
#[derive(Clone)]
pub enum TokenSource {
    /// A fixed token (tests, or a token passed through the environment).
    Static(Arc<str>),
    /// A file holding the token; read on every use, so a rotated file (e.g. a mounted Secret)
    /// is picked up without a restart.
    File(PathBuf),
    /// A key of a Kubernetes Secret, re-read at most once a minute.
    Secret(Arc<SecretToken>),
    /// Access tokens from the JWT-profile grant of a service-user key file.
    JwtProfile(Arc<super::JwtProfile>),
    /// A token kept up to date by someone else (the operator's credential watchers); a 401
    /// invalidates it and the call is retried once with what the provider reads then.
    Provided(Arc<dyn TokenProvider>),
}

/// A source of bearer tokens kept outside the client (e.g. a watched Secret or file). Never
/// logs the token.
#[async_trait::async_trait]
pub trait TokenProvider: Send + Sync {
    /// The current token, or why there is none ([`ZitadelError::Credentials`], naming where it
    /// was looked for).
    async fn token(&self) -> Result<Arc<str>, ZitadelError>;
    /// The token was rejected: read it again before the next use.
    async fn invalidate(&self);
    /// Where the token comes from, for `Debug` (never the token).
    fn describe(&self) -> String;
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Static(_) => f.write_str("TokenSource::Static(<redacted>)"),
            TokenSource::File(p) => write!(f, "TokenSource::File({})", p.display()),
            TokenSource::Secret(s) => write!(f, "TokenSource::Secret({}/{})", s.name, s.key),
            TokenSource::JwtProfile(j) => write!(f, "TokenSource::{j:?}"),
            TokenSource::Provided(p) => write!(f, "TokenSource::Provided({})", p.describe()),
        }
    }
}

impl TokenSource {
    /// A token from a Secret key.
    pub fn secret(api: Api<Secret>, name: impl Into<String>, key: impl Into<String>) -> Self {
        TokenSource::Secret(Arc::new(SecretToken {
            api,
            name: name.into(),
            key: key.into(),
            cache: Mutex::new(None),
        }))
    }

    /// Whether a 401 may be cured by fetching a new token (then [`Self::invalidate`] and retry once).
    pub fn refreshable(&self) -> bool {
        matches!(
            self,
            TokenSource::JwtProfile(_) | TokenSource::Secret(_) | TokenSource::Provided(_)
        )
    }

    /// Drop any cached token.
    pub async fn invalidate(&self) {
        match self {
            TokenSource::JwtProfile(j) => j.invalidate().await,
            TokenSource::Secret(s) => *s.cache.lock().await = None,
            TokenSource::Provided(p) => p.invalidate().await,
            TokenSource::Static(_) | TokenSource::File(_) => {}
        }
    }

    /// The current token.
    pub async fn token(&self) -> Result<Arc<str>, ZitadelError> {
        match self {
            TokenSource::JwtProfile(j) => j.token().await,
            TokenSource::Provided(p) => p.token().await,
            TokenSource::Static(t) => Ok(t.clone()),
            TokenSource::File(path) => {
                let raw = tokio::fs::read_to_string(path).await.map_err(|e| {
                    ZitadelError::Credentials(format!("token file {}: {e}", path.display()))
                })?;
                non_empty(raw.trim(), || {
                    format!("token file {} is empty", path.display())
                })
            }
            TokenSource::Secret(secret) => {
                let SecretToken {
                    api,
                    name,
                    key,
                    cache,
                } = secret.as_ref();
                let mut cache = cache.lock().await;
                if let Some((at, token)) = cache.as_ref()
                    && at.elapsed() < SECRET_TTL
                {
                    return Ok(token.clone());
                }
                let secret = api
                    .get(name)
                    .await
                    .map_err(|e| ZitadelError::Credentials(format!("Secret {name}: {e}")))?;
                let bytes = secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|b| b.0.clone())
                    .or_else(|| {
                        secret
                            .string_data
                            .as_ref()
                            .and_then(|d| d.get(key))
                            .map(|s| s.clone().into_bytes())
                    })
                    .ok_or_else(|| {
                        ZitadelError::Credentials(format!("Secret {name} has no key {key:?}"))
                    })?;
                let text = String::from_utf8(bytes).map_err(|_| {
                    ZitadelError::Credentials(format!("Secret {name} key {key:?} is not UTF-8"))
                })?;
                let token = non_empty(text.trim(), || {
                    format!("Secret {name} key {key:?} is empty")
                })?;
                *cache = Some((Instant::now(), token.clone()));
                Ok(token)
            }
        }
    }
}

/// A token kept in a Kubernetes Secret key, with the last value read.
pub struct SecretToken {
    api: Api<Secret>,
    name: String,
    key: String,
    cache: Mutex<Option<(Instant, Arc<str>)>>,
}

fn non_empty(token: &str, what: impl FnOnce() -> String) -> Result<Arc<str>, ZitadelError> {
    if token.is_empty() {
        Err(ZitadelError::Credentials(what()))
    } else {
        Ok(Arc::from(token))
    }
}
