//! Credentials that change under a running operator, as [`TokenProvider`]s of the ZITADEL client:
//!
//! - [`FlagToken`]: the default connection's token from `--token-secret` (kept up to date by a
//!   single-object watch) or `--token-file` (read on every call, polled for changes). Missing or
//!   unreadable is a state, not a start-up failure: calls fail with
//!   [`ZitadelError::Credentials`] naming the Secret and key or the file, and objects report
//!   `CredentialsUnavailable` until it appears.
//! - [`SourceToken`] / [`ReloadingJwt`]: a connection's PAT or key file, read when the client
//!   was built and read again when ZITADEL answers 401 — so a call right after a rotation is
//!   retried with the new credential before anything is declared stalled.
//!
//! [`CredentialState`] is what the default connection's credential is known to be (for
//! `/readyz`, the metric and the logs). Tokens are never logged; changes are detected by a hash
//! kept in memory.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::Duration;

use tokio::sync::Mutex;
use url::Url;

use crate::sources::{SourceKind, ValueSources};
use crate::zitadel::{JwtProfile, KeyFile, TokenProvider, ZitadelError};

mod state;

pub use state::{CredentialState, CredentialStatus};

/// Where the default connection's token is (from the flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenLocation {
    /// `--token-secret NAMESPACE/NAME` with `--token-secret-key`.
    Secret {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Key.
        key: String,
    },
    /// `--token-file`.
    File(PathBuf),
}

impl std::fmt::Display for TokenLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenLocation::Secret {
                namespace,
                name,
                key,
            } => write!(f, "Secret {namespace}/{name} key {key:?} (--token-secret)"),
            TokenLocation::File(path) => write!(f, "file {} (--token-file)", path.display()),
        }
    }
}

/// A hash of a token: compares reads without keeping or logging a second copy.
fn fingerprint(token: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    token.hash(&mut hasher);
    hasher.finish()
}

/// Text bytes of a token: UTF-8, trimmed, not empty; else what is wrong with `what`.
fn token_text(bytes: Vec<u8>, what: &dyn std::fmt::Display) -> Result<Arc<str>, String> {
    let text = String::from_utf8(bytes).map_err(|_| format!("{what} is not UTF-8"))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("{what} is empty"));
    }
    Ok(Arc::from(token))
}

/// The default connection's token.
pub struct FlagToken {
    location: TokenLocation,
    sources: Arc<dyn ValueSources>,
    /// The last token read (a Secret's is served from here until invalidated or re-read).
    current: Mutex<Option<Arc<str>>>,
}

impl FlagToken {
    /// The token at `location`; Secrets are read through `sources`.
    pub fn new(location: TokenLocation, sources: Arc<dyn ValueSources>) -> Self {
        Self {
            location,
            sources,
            current: Mutex::new(None),
        }
    }

    /// Where the token is.
    pub fn location(&self) -> &TokenLocation {
        &self.location
    }

    /// Read the token now: it, or what is missing (naming the Secret and key or the file).
    async fn read(&self) -> Result<Arc<str>, String> {
        match &self.location {
            TokenLocation::Secret {
                namespace,
                name,
                key,
            } => {
                let secret = self
                    .sources
                    .get(SourceKind::Secret, namespace, name)
                    .await
                    .map_err(|e| format!("cannot read Secret {namespace}/{name}: {e}"))?
                    .ok_or_else(|| {
                        format!("Secret {namespace}/{name} not found (--token-secret)")
                    })?;
                let bytes = secret.value(key).ok_or_else(|| {
                    format!("Secret {namespace}/{name} has no key {key:?} (--token-secret-key)")
                })?;
                token_text(bytes.to_vec(), &self.location)
            }
            TokenLocation::File(path) => {
                let bytes = tokio::fs::read(path).await.map_err(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        format!(
                            "token file {} does not exist (--token-file)",
                            path.display()
                        )
                    } else {
                        format!("cannot read token file {}: {e}", path.display())
                    }
                })?;
                token_text(bytes, &self.location)
            }
        }
    }

    /// Read the token now and keep it: its fingerprint (to tell a change), or what is missing.
    pub async fn observe(&self) -> Result<u64, String> {
        let read = self.read().await;
        let mut current = self.current.lock().await;
        match read {
            Ok(token) => {
                let print = fingerprint(&token);
                *current = Some(token);
                Ok(print)
            }
            Err(why) => {
                *current = None;
                Err(why)
            }
        }
    }
}

#[async_trait::async_trait]
impl TokenProvider for FlagToken {
    async fn token(&self) -> Result<Arc<str>, ZitadelError> {
        let mut current = self.current.lock().await;
        // A Secret's token is kept up to date by its watch; a file is read on every call (the
        // kubelet replaces a mounted Secret's file in place).
        if let (TokenLocation::Secret { .. }, Some(token)) = (&self.location, current.as_ref()) {
            return Ok(token.clone());
        }
        let token = self.read().await.map_err(ZitadelError::Credentials)?;
        *current = Some(token.clone());
        Ok(token)
    }

    async fn invalidate(&self) {
        *self.current.lock().await = None;
    }

    fn describe(&self) -> String {
        self.location.to_string()
    }
}

/// A key of a Secret a connection reads, as a provider needs it.
#[derive(Clone, Debug)]
pub struct SecretKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Key.
    pub key: String,
}

impl SecretKey {
    /// The key's bytes and the Secret's resourceVersion, or why not.
    async fn read(&self, sources: &dyn ValueSources) -> Result<(Vec<u8>, String), String> {
        let (ns, name, key) = (&self.namespace, &self.name, &self.key);
        let secret = sources
            .get(SourceKind::Secret, ns, name)
            .await
            .map_err(|e| format!("cannot read Secret {ns}/{name}: {e}"))?
            .ok_or_else(|| format!("Secret {ns}/{name} not found"))?;
        let bytes = secret
            .value(key)
            .ok_or_else(|| format!("Secret {ns}/{name} has no key {key:?}"))?;
        Ok((bytes.to_vec(), secret.resource_version.unwrap_or_default()))
    }
}

/// A connection's Personal Access Token: the value read when the client was built, read again
/// after a 401.
pub struct SourceToken {
    secret: SecretKey,
    sources: Arc<dyn ValueSources>,
    current: Mutex<Option<Arc<str>>>,
}

impl SourceToken {
    /// Starting with `token` (just read from `secret`).
    pub fn new(secret: SecretKey, sources: Arc<dyn ValueSources>, token: Arc<str>) -> Self {
        Self {
            secret,
            sources,
            current: Mutex::new(Some(token)),
        }
    }
}

#[async_trait::async_trait]
impl TokenProvider for SourceToken {
    async fn token(&self) -> Result<Arc<str>, ZitadelError> {
        let mut current = self.current.lock().await;
        if let Some(token) = current.as_ref() {
            return Ok(token.clone());
        }
        let what = format!(
            "Secret {}/{} key {:?} (personalAccessToken)",
            self.secret.namespace, self.secret.name, self.secret.key
        );
        let (bytes, _) = self
            .secret
            .read(self.sources.as_ref())
            .await
            .map_err(ZitadelError::Credentials)?;
        let token = token_text(bytes, &what).map_err(ZitadelError::Credentials)?;
        *current = Some(token.clone());
        Ok(token)
    }

    async fn invalidate(&self) {
        *self.current.lock().await = None;
    }

    fn describe(&self) -> String {
        format!("Secret {}/{}", self.secret.namespace, self.secret.name)
    }
}

/// What a [`ReloadingJwt`] builds profiles with.
pub struct JwtSettings {
    /// The instance URL (the assertion's audience).
    pub base_url: Url,
    /// The HTTP client of the connection.
    pub http: reqwest::Client,
    /// Timeout of one token request.
    pub request_timeout: Duration,
}

/// A connection's service-user key: access tokens from the JWT-profile grant; after a 401 the
/// key Secret is read again and, if it changed, the new key is used from then on.
pub struct ReloadingJwt {
    secret: SecretKey,
    sources: Arc<dyn ValueSources>,
    settings: JwtSettings,
    /// The Secret's resourceVersion the profile was built from, and the profile.
    current: Mutex<(String, Arc<JwtProfile>)>,
}

impl ReloadingJwt {
    /// Build a profile from `key` (read from `secret` at `version`).
    ///
    /// # Errors
    /// If the key cannot sign (see [`JwtProfile::new`]).
    pub fn new(
        secret: SecretKey,
        sources: Arc<dyn ValueSources>,
        settings: JwtSettings,
        key: KeyFile,
        version: String,
    ) -> Result<Self, ZitadelError> {
        let profile = Self::profile(&settings, key)?;
        Ok(Self {
            secret,
            sources,
            settings,
            current: Mutex::new((version, Arc::new(profile))),
        })
    }

    fn profile(settings: &JwtSettings, key: KeyFile) -> Result<JwtProfile, ZitadelError> {
        Ok(
            JwtProfile::new(key, &settings.base_url, settings.http.clone())?
                .with_request_timeout(settings.request_timeout),
        )
    }
}

#[async_trait::async_trait]
impl TokenProvider for ReloadingJwt {
    async fn token(&self) -> Result<Arc<str>, ZitadelError> {
        let profile = self.current.lock().await.1.clone();
        profile.token().await
    }

    async fn invalidate(&self) {
        let mut current = self.current.lock().await;
        current.1.invalidate().await;
        // A rotated key: use it from now on. An unreadable or malformed one keeps the old key
        // (the connection's probe reports what is wrong with the new one).
        let Ok((bytes, version)) = self.secret.read(self.sources.as_ref()).await else {
            return;
        };
        if version == current.0 {
            return;
        }
        match KeyFile::parse(&bytes).map(|key| Self::profile(&self.settings, key)) {
            Ok(Ok(profile)) => *current = (version, Arc::new(profile)),
            _ => tracing::debug!(secret = %self.describe(), "rotated key file not usable yet"),
        }
    }

    fn describe(&self) -> String {
        format!("Secret {}/{}", self.secret.namespace, self.secret.name)
    }
}

#[cfg(test)]
mod tests;
