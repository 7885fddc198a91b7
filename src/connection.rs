//! Connections: which ZITADEL client an object may use, and for which organizations.
//!
//! An object with `spec.connectionRef` uses that `ZitadelConnection` (same namespace) or
//! `ClusterZitadelConnection` (only if its `allowedNamespaces` rules allow the object's
//! namespace, and then only for the organizations they list). Without a reference, the
//! operator's default connection from its flags is used — if it was started with one
//! (single-tenant mode). Clients are built from the connection's Secrets and cached until the
//! connection or its Secrets change.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::core::{Selector, SelectorExt};
use kube::{Api, Client, ResourceExt};
use tokio::sync::Mutex;

use crate::crd::{
    ClusterZitadelConnection, ConnectionKind, ConnectionRef, ConnectionSettings, ConnectionStatus,
    NamespaceRule, SecretKeyRef, ZitadelConnection,
};
use crate::reason::Reason;
use crate::status;
use crate::zitadel::{
    ClientConfig, HttpClient, JwtProfile, KeyFile, TokenSource, ZitadelApi, ZitadelError,
};

/// Why an object may not use a connection. No ZITADEL call is made in these cases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub reason: Reason,
    /// Human message.
    pub message: String,
    /// The refusal clears without anyone acting: the connection's probe is pending or failed on
    /// a transient ZITADEL error, or the connection could not be read from the API. Objects
    /// retry with backoff (Reconciling) instead of stalling.
    pub transient: bool,
}

/// Which organizations an object may target through its connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowedOrgs {
    /// Any (namespaced connections, the default connection, or a `"*"` rule).
    Any,
    /// Only these ids.
    Only(Vec<String>),
}

impl AllowedOrgs {
    /// Whether `org_id` may be targeted.
    pub fn allows(&self, org_id: &str) -> bool {
        match self {
            AllowedOrgs::Any => true,
            AllowedOrgs::Only(ids) => ids.iter().any(|i| i == org_id),
        }
    }
}

/// A client an object may use, and its limits.
#[derive(Clone)]
pub struct Granted {
    /// The ZITADEL client.
    pub api: Arc<dyn ZitadelApi>,
    /// Organizations it may target.
    pub allowed: AllowedOrgs,
    /// `Kind/name` of the connection, for messages.
    pub name: String,
}

/// The guard of a ClusterZitadelConnection (pure): `None` when no rule matches the namespace,
/// else the organizations the matching rules allow (union).
pub fn evaluate_rules(
    rules: &[NamespaceRule],
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Option<AllowedOrgs> {
    let mut ids: Vec<String> = Vec::new();
    let mut matched = false;
    for rule in rules {
        let by_name = rule.names.is_empty() || rule.names.iter().any(|n| n == namespace);
        let by_selector = match &rule.selector {
            None => true,
            Some(sel) => match Selector::try_from(sel.clone()) {
                Ok(selector) => selector.matches(labels),
                // An invalid selector matches nothing.
                Err(_) => false,
            },
        };
        if by_name && by_selector && (!rule.names.is_empty() || rule.selector.is_some()) {
            matched = true;
            if rule.organization_ids.iter().any(|i| i == "*") {
                return Some(AllowedOrgs::Any);
            }
            ids.extend(rule.organization_ids.iter().cloned());
        }
    }
    matched.then(|| {
        ids.sort();
        ids.dedup();
        AllowedOrgs::Only(ids)
    })
}

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
    /// PascalCase reason for the connection's condition.
    pub fn reason(&self) -> Reason {
        match self {
            BuildError::Missing(_) => Reason::SecretNotFound,
            BuildError::Invalid(_) => Reason::InvalidCredentials,
            BuildError::Kube(_) => Reason::SecretUnreadable,
            BuildError::Client(_) => Reason::InvalidSettings,
        }
    }
}

/// A built client and what it was built from.
pub struct Built {
    /// The client.
    pub client: Arc<HttpClient>,
    /// `Kind/ns/name@resourceVersion` of the Secrets/ConfigMaps read.
    pub versions: Vec<String>,
    /// For a key file: the service user id.
    pub service_user: Option<String>,
}

/// The namespace a connection's Secret/ConfigMap reference reads from. A `ZitadelConnection`
/// (`own_ns` = its namespace) reads only from its own namespace: a reference naming another one
/// is refused, so that whoever may create connections in one namespace cannot make the operator
/// read (and use) credentials of another. A `ClusterZitadelConnection` (`own_ns` = `None`) must
/// name the namespace.
pub fn reference_namespace<'a>(
    kind: &str,
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

async fn read_key(
    client: &Client,
    kind: &str,
    reference: &SecretKeyRef,
    default_ns: Option<&str>,
) -> Result<(Vec<u8>, String), BuildError> {
    let ns = reference_namespace(kind, reference, default_ns)?;
    let (data, rv) = if kind == "ConfigMap" {
        let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
            .get_opt(&reference.name)
            .await?
            .ok_or_else(|| {
                BuildError::Missing(format!("ConfigMap {ns}/{} not found", reference.name))
            })?;
        let value = cm
            .data
            .as_ref()
            .and_then(|d| d.get(&reference.key))
            .map(|s| s.clone().into_bytes());
        (value, cm.resource_version())
    } else {
        let secret = Api::<Secret>::namespaced(client.clone(), ns)
            .get_opt(&reference.name)
            .await?
            .ok_or_else(|| {
                BuildError::Missing(format!("Secret {ns}/{} not found", reference.name))
            })?;
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&reference.key))
            .map(|b| b.0.clone());
        (value, secret.resource_version())
    };
    let bytes = data.ok_or_else(|| {
        BuildError::Missing(format!(
            "{kind} {ns}/{} has no key {:?}",
            reference.name, reference.key
        ))
    })?;
    Ok((
        bytes,
        format!("{kind}/{ns}/{}@{}", reference.name, rv.unwrap_or_default()),
    ))
}

/// Build a client from connection settings, reading its Secrets/ConfigMaps.
pub async fn build(
    client: &Client,
    settings: &ConnectionSettings,
    request_timeout: std::time::Duration,
) -> Result<Built, BuildError> {
    let url: url::Url = settings
        .url
        .parse()
        .map_err(|e| BuildError::Invalid(format!("url {:?} is not a URL: {e}", settings.url)))?;
    let ns = settings.namespace.as_deref();
    let mut versions = Vec::new();
    let mut config = ClientConfig::new(url.clone(), TokenSource::Static(Arc::from("")));
    config.request_timeout = request_timeout;
    config.tls_server_name = settings.tls_server_name.clone();
    if let Some(ca) = &settings.ca_bundle {
        let (kind, reference) = match (&ca.secret_ref, &ca.config_map_ref) {
            (Some(r), None) => ("Secret", r),
            (None, Some(r)) => ("ConfigMap", r),
            _ => {
                return Err(BuildError::Invalid(
                    "caBundle: set exactly one of secretRef or configMapRef".into(),
                ));
            }
        };
        let (pem, version) = read_key(client, kind, reference, ns).await?;
        versions.push(version);
        config.ca_pem.push(pem);
    }
    let http = config.build_http()?;
    let creds = &settings.credentials;
    let (token, service_user) = match (&creds.personal_access_token, &creds.jwt_profile) {
        (Some(r), None) => {
            let (bytes, version) = read_key(client, "Secret", r, ns).await?;
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
            (TokenSource::Static(Arc::from(token)), None)
        }
        (None, Some(r)) => {
            let (bytes, version) = read_key(client, "Secret", r, ns).await?;
            versions.push(version);
            let key = KeyFile::parse(&bytes).map_err(|e| {
                BuildError::Invalid(format!(
                    "Secret {:?} key {:?} (jwtProfile): {e}",
                    r.name, r.key
                ))
            })?;
            let user = key.user_id.clone();
            let profile = JwtProfile::new(key, &config.base_url, http.clone())?
                .with_request_timeout(config.request_timeout);
            (TokenSource::JwtProfile(Arc::new(profile)), Some(user))
        }
        _ => {
            return Err(BuildError::Invalid(
                "credentials: set exactly one of personalAccessToken or jwtProfile".into(),
            ));
        }
    };
    config.token = token;
    Ok(Built {
        client: Arc::new(HttpClient::with_http(config, http)),
        versions,
        service_user,
    })
}

/// Resolves objects' connections to clients; caches built clients.
pub struct Connections {
    client: Client,
    default: Option<Arc<dyn ZitadelApi>>,
    request_timeout: std::time::Duration,
    cache: Mutex<HashMap<String, (String, Arc<HttpClient>)>>,
}

impl Connections {
    /// With an optional operator-wide default client (single-tenant mode).
    pub fn new(
        client: Client,
        default: Option<Arc<dyn ZitadelApi>>,
        request_timeout: std::time::Duration,
    ) -> Self {
        Self {
            client,
            default,
            request_timeout,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The client for an object in `namespace` with `reference`, or why it may not have one.
    pub async fn for_object(
        &self,
        namespace: &str,
        reference: Option<&ConnectionRef>,
    ) -> Result<Granted, Refusal> {
        let Some(reference) = reference else {
            return match &self.default {
                Some(api) => Ok(Granted {
                    api: api.clone(),
                    allowed: AllowedOrgs::Any,
                    name: "the operator's default connection".into(),
                }),
                None => Err(Refusal {
                    reason: Reason::ConnectionNotFound,
                    message: "spec.connectionRef is not set and the operator runs without a default connection (multi-tenant mode)".into(),
                    transient: false,
                }),
            };
        };
        let api_error = |e: kube::Error| Refusal {
            reason: Reason::ConnectionNotReady,
            message: format!("cannot read {:?} {:?}: {e}", reference.kind, reference.name),
            transient: true,
        };
        let (key, name, settings, status, generation, allowed) = match reference.kind {
            ConnectionKind::ZitadelConnection => {
                let api: Api<ZitadelConnection> = Api::namespaced(self.client.clone(), namespace);
                let conn = api
                    .get_opt(&reference.name)
                    .await
                    .map_err(api_error)?
                    .ok_or_else(|| Refusal {
                        reason: Reason::ConnectionNotFound,
                        message: format!(
                            "ZitadelConnection {namespace}/{} not found",
                            reference.name
                        ),
                        transient: false,
                    })?;
                (
                    format!("ns/{namespace}/{}", reference.name),
                    format!("ZitadelConnection {namespace}/{}", reference.name),
                    conn.settings(),
                    conn.status.clone().unwrap_or_default(),
                    conn.metadata.generation,
                    AllowedOrgs::Any,
                )
            }
            ConnectionKind::ClusterZitadelConnection => {
                let api: Api<ClusterZitadelConnection> = Api::all(self.client.clone());
                let conn = api
                    .get_opt(&reference.name)
                    .await
                    .map_err(api_error)?
                    .ok_or_else(|| Refusal {
                        reason: Reason::ConnectionNotFound,
                        message: format!("ClusterZitadelConnection {} not found", reference.name),
                        transient: false,
                    })?;
                // The namespace's labels matter only to rules with a selector: no read otherwise.
                let labels = if conn
                    .spec
                    .allowed_namespaces
                    .iter()
                    .any(|r| r.selector.is_some())
                {
                    Api::<Namespace>::all(self.client.clone())
                        .get_opt(namespace)
                        .await
                        .map_err(api_error)?
                        .map(|n| n.labels().clone())
                        .unwrap_or_default()
                } else {
                    BTreeMap::new()
                };
                let allowed = evaluate_rules(&conn.spec.allowed_namespaces, namespace, &labels).ok_or_else(|| Refusal {
                    reason: Reason::TargetNotAllowed,
                    message: format!(
                        "ClusterZitadelConnection {} does not allow namespace {namespace} (spec.allowedNamespaces)",
                        reference.name
                    ),
                    transient: false,
                })?;
                (
                    format!("cluster/{}", reference.name),
                    format!("ClusterZitadelConnection {}", reference.name),
                    conn.settings(),
                    conn.status.clone().unwrap_or_default(),
                    conn.metadata.generation,
                    allowed,
                )
            }
        };
        if !is_ready(&status, generation) {
            let ready = status::find(&status.conditions, status::READY);
            let why = ready
                .map(|c| format!("{}: {}", c.reason, c.message))
                .unwrap_or_else(|| "not probed yet".into());
            // Not probed (yet, or not since the last spec change), or ZITADEL failed the probe
            // transiently: waiting helps. Bad credentials, TLS or permissions do not.
            let transient = status.observed_generation != generation
                || ready.is_none_or(|c| Reason::parse(&c.reason).is_some_and(Reason::is_transient));
            return Err(Refusal {
                reason: Reason::ConnectionNotReady,
                message: format!("{name} is not Ready ({why})"),
                transient,
            });
        }
        let fingerprint = format!(
            "{generation:?}|{}",
            status.observed_secret_versions.join(",")
        );
        let mut cache = self.cache.lock().await;
        if let Some((fp, client)) = cache.get(&key)
            && *fp == fingerprint
        {
            return Ok(Granted {
                api: client.clone(),
                allowed,
                name,
            });
        }
        let built = build(&self.client, &settings, self.request_timeout)
            .await
            .map_err(|e| Refusal {
                reason: Reason::ConnectionNotReady,
                message: format!("{name}: {e}"),
                transient: false,
            })?;
        cache.insert(key, (fingerprint, built.client.clone()));
        Ok(Granted {
            api: built.client,
            allowed,
            name,
        })
    }
}

/// Ready=True for the current generation.
pub fn is_ready(status: &ConnectionStatus, generation: Option<i64>) -> bool {
    status::find(&status.conditions, status::READY).is_some_and(|c| c.status == "True")
        && status.observed_generation == generation
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn rule(names: &[&str], selector: Option<(&str, &str)>, orgs: &[&str]) -> NamespaceRule {
        NamespaceRule {
            names: names.iter().map(|s| s.to_string()).collect(),
            selector: selector.map(|(k, v)| LabelSelector {
                match_labels: Some(BTreeMap::from([(k.to_string(), v.to_string())])),
                ..Default::default()
            }),
            organization_ids: orgs.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn labels(items: &[(&str, &str)]) -> BTreeMap<String, String> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_rules_allow_nothing() {
        assert_eq!(evaluate_rules(&[], "team-a", &labels(&[])), None);
    }

    #[test]
    fn namespaced_connections_read_only_their_own_namespace() {
        let reference = |ns: Option<&str>| SecretKeyRef {
            name: "token".into(),
            key: "pat".into(),
            namespace: ns.map(str::to_owned),
        };
        let own = reference(None);
        assert_eq!(
            reference_namespace("Secret", &own, Some("team-a")).ok(),
            Some("team-a")
        );
        let same = reference(Some("team-a"));
        assert_eq!(
            reference_namespace("Secret", &same, Some("team-a")).ok(),
            Some("team-a")
        );
        let other = reference(Some("zitadel-system"));
        let err = reference_namespace("Secret", &other, Some("team-a")).expect_err("refused");
        assert_eq!(err.reason(), "InvalidCredentials");
        assert!(
            err.to_string()
                .contains("\"zitadel-system\" is not allowed"),
            "{err}"
        );
        // Cluster connections name the namespace.
        assert_eq!(
            reference_namespace("Secret", &other, None).ok(),
            Some("zitadel-system")
        );
        assert!(reference_namespace("Secret", &own, None).is_err());
    }

    #[test]
    fn names_and_selectors_grant_listed_orgs() {
        let rules = vec![
            rule(&["team-a"], None, &["1"]),
            rule(&[], Some(("tenant", "b")), &["2", "3"]),
            rule(&["team-c"], Some(("tier", "prod")), &["*"]),
        ];
        assert_eq!(
            evaluate_rules(&rules, "team-a", &labels(&[])),
            Some(AllowedOrgs::Only(vec!["1".into()]))
        );
        assert_eq!(
            evaluate_rules(&rules, "anything", &labels(&[("tenant", "b")])),
            Some(AllowedOrgs::Only(vec!["2".into(), "3".into()]))
        );
        // names AND selector
        assert_eq!(evaluate_rules(&rules, "team-c", &labels(&[])), None);
        assert_eq!(
            evaluate_rules(&rules, "team-c", &labels(&[("tier", "prod")])),
            Some(AllowedOrgs::Any)
        );
        assert_eq!(
            evaluate_rules(&rules, "other", &labels(&[("tenant", "x")])),
            None
        );
        // Several matching rules: union.
        let both = evaluate_rules(&rules, "team-a", &labels(&[("tenant", "b")])).expect("allowed");
        assert!(both.allows("1") && both.allows("3") && !both.allows("4"));
    }
}
