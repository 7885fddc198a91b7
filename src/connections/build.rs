//! The connection builder: the one place that turns settings (a connection's spec, or the
//! operator's flags) into a ZITADEL client, and that runs the authenticated probe.
//!
//! Credentials and CA bundles are read through [`ValueSources`], like `valueFrom` entries.

use std::sync::Arc;
use std::time::Duration;

use url::Url;

use super::credentials::{JwtSettings, ReloadingJwt, SecretKey, SourceToken};
use crate::crd::{ConnectionSettings, SecretKeyRef};
use crate::metrics::Metrics;
use crate::reason::Reason;
use crate::sources::{SourceKind, ValueSources};
use crate::zitadel::{
    ApiMode, ClientConfig, HttpClient, KeyFile, TokenSource, ZitadelApi, ZitadelError,
};

/// A connection that cannot produce a client: missing Secret/key, bad key file, bad CA bundle.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A Secret/ConfigMap or a key in it is missing.
    #[error("{0}")]
    Missing(String),
    /// The credentials are malformed (message names the field, never the content).
    #[error("{0}")]
    Invalid(String),
    /// Reading from Kubernetes failed.
    #[error("cannot read a connection Secret/ConfigMap: {0}")]
    Kube(#[from] kube::Error),
    /// Building the HTTP client failed.
    #[error(transparent)]
    Client(#[from] ZitadelError),
}

impl BuildError {
    /// The reason for the connection's condition.
    pub fn reason(&self) -> Reason {
        match self {
            BuildError::Missing(_) => Reason::SecretNotFound,
            BuildError::Invalid(_) => Reason::InvalidCredentials,
            BuildError::Kube(_) => Reason::SecretUnreadable,
            BuildError::Client(_) => Reason::InvalidSettings,
        }
    }
}

/// What the authenticated probe found: the APIs in use and the caller's organization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    /// Id and name of the caller's organization (`GET /management/v1/orgs/me`); `None` where
    /// v1 is not in use (ZITADEL v5, or pinned to v2): v2 has no such call.
    pub organization: Option<(String, String)>,
    /// The API per metadata service, and the mode it was chosen in.
    pub api: crate::crd::ApiStatus,
}

/// A built client and what it was built from.
pub struct Built {
    client: Arc<HttpClient>,
    /// `Kind/ns/name@resourceVersion` of the Secrets/ConfigMaps read.
    pub versions: Vec<String>,
    /// For a key file: the service user id.
    pub service_user: Option<String>,
}

impl Built {
    /// The client, as the reconciler uses it.
    pub fn api(&self) -> Arc<dyn ZitadelApi> {
        self.client.clone()
    }

    /// Choose the APIs (probing the instance in `Auto` mode) and authenticate: who the
    /// credentials are (where v1 is in use) and which API serves each metadata service.
    pub async fn probe(&self) -> Result<ProbeResult, ZitadelError> {
        let check = self.client.check().await?;
        Ok(ProbeResult {
            organization: check.organization,
            api: crate::crd::ApiStatus {
                mode: self.client.api_mode(),
                user_metadata: check.selection.user_metadata.into(),
                org_metadata: check.selection.org_metadata.into(),
            },
        })
    }
}

/// The operator-wide default connection (single-tenant mode) from its flags (`--zitadel-url`,
/// the token flag, `--request-timeout`, `--zitadel-api`).
pub fn default_connection(
    url: Url,
    token: TokenSource,
    request_timeout: Duration,
    api: ApiMode,
    metrics: Arc<Metrics>,
) -> Result<Arc<HttpClient>, ZitadelError> {
    let mut config = ClientConfig::new(url, token);
    config.request_timeout = request_timeout;
    config.api = api;
    Ok(Arc::new(HttpClient::new(config)?.with_metrics(metrics)))
}

/// The namespace a connection's Secret/ConfigMap reference reads from. A `ZitadelConnection`
/// (`own_ns` = its namespace) reads only from its own namespace: a reference naming another one
/// is refused, so that whoever may create connections in one namespace cannot make the operator
/// read (and use) credentials of another. A `ClusterZitadelConnection` (`own_ns` = `None`) must
/// name the namespace.
pub fn reference_namespace<'a>(
    kind: SourceKind,
    reference: &'a SecretKeyRef,
    own_ns: Option<&'a str>,
) -> Result<&'a str, BuildError> {
    match (reference.namespace.as_deref(), own_ns) {
        (Some(named), Some(own)) if named != own => Err(BuildError::Invalid(format!(
            "{kind} {:?}: namespace {named:?} is not allowed: a ZitadelConnection reads Secrets and ConfigMaps only from its own namespace {own:?}",
            reference.name
        ))),
        (_, Some(own)) => Ok(own),
        (Some(named), None) => Ok(named),
        (None, None) => Err(BuildError::Invalid(format!(
            "{kind} {:?}: no namespace given",
            reference.name
        ))),
    }
}

/// The bytes of one referenced key and the `Kind/ns/name@resourceVersion` it was read at.
async fn read_key(
    sources: &dyn ValueSources,
    kind: SourceKind,
    reference: &SecretKeyRef,
    default_ns: Option<&str>,
) -> Result<(Vec<u8>, String), BuildError> {
    let ns = reference_namespace(kind, reference, default_ns)?;
    let object = sources
        .get(kind, ns, &reference.name)
        .await?
        .ok_or_else(|| BuildError::Missing(format!("{kind} {ns}/{} not found", reference.name)))?;
    let bytes = object.value(&reference.key).ok_or_else(|| {
        BuildError::Missing(format!(
            "{kind} {ns}/{} has no key {:?}",
            reference.name, reference.key
        ))
    })?;
    let version = object.version(kind, ns, &reference.name).qualified();
    Ok((bytes.to_vec(), version))
}

/// The Secret key `reference` names, in the namespace it is read from.
fn secret_key(reference: &SecretKeyRef, own_ns: Option<&str>) -> Result<SecretKey, BuildError> {
    Ok(SecretKey {
        namespace: reference_namespace(SourceKind::Secret, reference, own_ns)?.to_string(),
        name: reference.name.clone(),
        key: reference.key.clone(),
    })
}

/// The token source of the credentials, and the service user of a key file. Both read their
/// Secret again when ZITADEL answers 401 ([`SourceToken`], [`ReloadingJwt`]).
async fn credentials(
    sources: &Arc<dyn ValueSources>,
    settings: &ConnectionSettings,
    config: &ClientConfig,
    http: &reqwest::Client,
    versions: &mut Vec<String>,
) -> Result<(TokenSource, Option<String>), BuildError> {
    let ns = settings.namespace.as_deref();
    let creds = &settings.endpoint.credentials;
    match (&creds.personal_access_token, &creds.jwt_profile) {
        (Some(r), None) => {
            let (bytes, version) = read_key(sources.as_ref(), SourceKind::Secret, r, ns).await?;
            versions.push(version);
            let token = String::from_utf8(bytes).map_err(|_| {
                BuildError::Invalid(format!(
                    "Secret key {:?} (personalAccessToken) is not UTF-8",
                    r.key
                ))
            })?;
            let token = token.trim();
            if token.is_empty() {
                return Err(BuildError::Invalid(format!(
                    "Secret key {:?} (personalAccessToken) is empty",
                    r.key
                )));
            }
            let provider = SourceToken::new(secret_key(r, ns)?, sources.clone(), Arc::from(token));
            Ok((TokenSource::Provided(Arc::new(provider)), None))
        }
        (None, Some(r)) => {
            let (bytes, version) = read_key(sources.as_ref(), SourceKind::Secret, r, ns).await?;
            let resource_version = version.rsplit('@').next().unwrap_or_default().to_string();
            versions.push(version);
            let key = KeyFile::parse(&bytes).map_err(|e| {
                BuildError::Invalid(format!(
                    "Secret {:?} key {:?} (jwtProfile): {e}",
                    r.name, r.key
                ))
            })?;
            let user = key.user_id.clone();
            let jwt = JwtSettings {
                base_url: config.base_url.clone(),
                http: http.clone(),
                request_timeout: config.request_timeout,
            };
            let secret = secret_key(r, ns)?;
            let provider = ReloadingJwt::new(secret, sources.clone(), jwt, key, resource_version)?;
            Ok((TokenSource::Provided(Arc::new(provider)), Some(user)))
        }
        _ => Err(BuildError::Invalid(
            "credentials: set exactly one of personalAccessToken or jwtProfile".into(),
        )),
    }
}

/// Build a client from connection settings, reading its Secrets/ConfigMaps.
pub async fn build(
    sources: &Arc<dyn ValueSources>,
    settings: &ConnectionSettings,
    request_timeout: Duration,
) -> Result<Built, BuildError> {
    let endpoint = &settings.endpoint;
    let url: Url = endpoint
        .url
        .parse()
        .map_err(|e| BuildError::Invalid(format!("url {:?} is not a URL: {e}", endpoint.url)))?;
    let mut versions = Vec::new();
    let mut config = ClientConfig::new(url, TokenSource::Static(Arc::from("")));
    config.request_timeout = request_timeout;
    config.tls_server_name = endpoint.tls_server_name.clone();
    config.api = settings.api;
    if let Some(ca) = &endpoint.ca_bundle {
        let (kind, reference) = match (&ca.secret_ref, &ca.config_map_ref) {
            (Some(r), None) => (SourceKind::Secret, r),
            (None, Some(r)) => (SourceKind::ConfigMap, r),
            _ => {
                return Err(BuildError::Invalid(
                    "caBundle: set exactly one of secretRef or configMapRef".into(),
                ));
            }
        };
        let (pem, version) = read_key(
            sources.as_ref(),
            kind,
            reference,
            settings.namespace.as_deref(),
        )
        .await?;
        versions.push(version);
        config.ca_pem.push(pem);
    }
    let http = config.build_http()?;
    let (token, service_user) =
        credentials(sources, settings, &config, &http, &mut versions).await?;
    config.token = token;
    Ok(Built {
        client: Arc::new(HttpClient::with_http(config, http)),
        versions,
        service_user,
    })
}

#[cfg(test)]
mod tests;
