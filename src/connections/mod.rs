//! Connections: which ZITADEL client an object may use, and for which organizations.
//!
//! An object with `spec.connectionRef` uses that `ZitadelConnection` (same namespace) or
//! `ClusterZitadelConnection` (only if its `allowedNamespaces` rules allow the object's
//! namespace, and then only for the organizations they list). Without a reference, the
//! operator's default connection from its flags is used — if it was started with one
//! (single-tenant mode). Clients are built ([`build`]) from the connection's Secrets and cached
//! until the connection or its Secrets change; [`guard`] holds the pure checks.

pub mod build;
pub mod credentials;
pub mod guard;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client, ResourceExt};
use tokio::sync::Mutex;

use crate::crd::{
    ClusterZitadelConnection, ConnectionKind, ConnectionRef, ConnectionSettings, ConnectionStatus,
    ZitadelConnection,
};
use crate::reason::Reason;
use crate::sources::ValueSources;
use crate::zitadel::ZitadelApi;

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

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
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

/// A client an object may use, or why not.
pub type Resolution = Result<Granted, Refusal>;

/// Resolves an object's connection to a client (the Kubernetes API and built clients in
/// production, a table in unit tests).
#[async_trait::async_trait]
pub trait ConnectionResolver: Send + Sync {
    /// The client for an object in namespace `ns` with `reference`, or why it may not have one.
    async fn for_object(&self, ns: &str, reference: Option<&ConnectionRef>) -> Resolution;
}

/// A connection object as the resolver needs it.
struct Found {
    /// Cache key.
    key: String,
    /// `Kind ns/name`, for messages.
    name: String,
    settings: ConnectionSettings,
    status: ConnectionStatus,
    generation: Option<i64>,
    /// Marked for deletion (it stays while objects use it).
    deleting: bool,
    allowed: AllowedOrgs,
}

/// What the resolver reads from either connection kind.
trait ConnectionParts {
    /// URL, CA bundle, credentials; status; generation; whether it is being deleted.
    fn parts(&self) -> (ConnectionSettings, ConnectionStatus, Option<i64>, bool);
}

impl ConnectionParts for ZitadelConnection {
    fn parts(&self) -> (ConnectionSettings, ConnectionStatus, Option<i64>, bool) {
        let status = self.status.clone().unwrap_or_default();
        let deleting = self.metadata.deletion_timestamp.is_some();
        (self.settings(), status, self.metadata.generation, deleting)
    }
}

impl ConnectionParts for ClusterZitadelConnection {
    fn parts(&self) -> (ConnectionSettings, ConnectionStatus, Option<i64>, bool) {
        let status = self.status.clone().unwrap_or_default();
        let deleting = self.metadata.deletion_timestamp.is_some();
        (self.settings(), status, self.metadata.generation, deleting)
    }
}

impl Found {
    fn new(key: String, name: String, conn: &impl ConnectionParts, allowed: AllowedOrgs) -> Found {
        let (settings, status, generation, deleting) = conn.parts();
        Found {
            key,
            name,
            settings,
            status,
            generation,
            deleting,
            allowed,
        }
    }
}

/// A built client and the fingerprint of what it was built from.
type Cached = (String, Arc<dyn ZitadelApi>);

/// Resolves objects' connections to clients; caches built clients.
pub struct Connections {
    client: Client,
    sources: Arc<dyn ValueSources>,
    default: Option<Arc<dyn ZitadelApi>>,
    request_timeout: std::time::Duration,
    /// Connection key → (fingerprint of what the client was built from, client).
    cache: Mutex<HashMap<String, Cached>>,
}

impl Connections {
    /// With an optional operator-wide default client (single-tenant mode); connection Secrets
    /// are read through `sources`.
    pub fn new(
        client: Client,
        sources: Arc<dyn ValueSources>,
        default: Option<Arc<dyn ZitadelApi>>,
        request_timeout: std::time::Duration,
    ) -> Self {
        Self {
            client,
            sources,
            default,
            request_timeout,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn not_found(message: String) -> Refusal {
        Refusal {
            reason: Reason::ConnectionNotFound,
            message,
            transient: false,
        }
    }

    /// Read the connection `reference` names. With `guarded`, a cluster connection's
    /// `allowedNamespaces` must allow `namespace` (read, for rules with a label selector);
    /// without, it allows any organization (the drift source: the guard limits objects, not the
    /// connection's own event log).
    async fn find(
        &self,
        namespace: &str,
        reference: &ConnectionRef,
        guarded: bool,
    ) -> Result<Found, Refusal> {
        let api_error = |e: kube::Error| Refusal {
            reason: Reason::ConnectionNotReady,
            message: format!("cannot read {:?} {:?}: {e}", reference.kind, reference.name),
            transient: true,
        };
        let name = &reference.name;
        match reference.kind {
            ConnectionKind::ZitadelConnection => {
                let api: Api<ZitadelConnection> = Api::namespaced(self.client.clone(), namespace);
                let conn = api.get_opt(name).await.map_err(api_error)?.ok_or_else(|| {
                    Self::not_found(format!("ZitadelConnection {namespace}/{name} not found"))
                })?;
                let label = format!("ZitadelConnection {namespace}/{name}");
                let key = format!("ns/{namespace}/{name}");
                Ok(Found::new(key, label, &conn, AllowedOrgs::Any))
            }
            ConnectionKind::ClusterZitadelConnection => {
                let api: Api<ClusterZitadelConnection> = Api::all(self.client.clone());
                let conn = api.get_opt(name).await.map_err(api_error)?.ok_or_else(|| {
                    Self::not_found(format!("ClusterZitadelConnection {name} not found"))
                })?;
                let label = format!("ClusterZitadelConnection {name}");
                if !guarded {
                    return Ok(Found::new(
                        format!("cluster/{name}"),
                        label,
                        &conn,
                        AllowedOrgs::Any,
                    ));
                }
                let rules = &conn.spec.allowed_namespaces;
                // The namespace's labels matter only to rules with a selector: no read otherwise.
                let labels = if rules.iter().any(|r| r.selector.is_some()) {
                    Api::<Namespace>::all(self.client.clone())
                        .get_opt(namespace)
                        .await
                        .map_err(api_error)?
                        .map(|n| n.labels().clone())
                        .unwrap_or_default()
                } else {
                    BTreeMap::new()
                };
                let allowed = guard::evaluate_rules(rules, namespace, &labels).ok_or_else(|| Refusal {
                    reason: Reason::TargetNotAllowed,
                    message: format!(
                        "ClusterZitadelConnection {name} does not allow namespace {namespace} (spec.allowedNamespaces)"
                    ),
                    transient: false,
                })?;
                Ok(Found::new(format!("cluster/{name}"), label, &conn, allowed))
            }
        }
    }
}

/// What the drift detection of one connection needs: the client its objects use and what the
/// connection's last probe found.
#[derive(Clone)]
pub struct DriftSource {
    /// The same (cached) client the connection's objects use.
    pub api: Arc<dyn ZitadelApi>,
    /// `status.driftDetection` (`None` for the default connection, which has no status).
    pub status: Option<crate::crd::DriftDetectionStatus>,
}

impl Connections {
    /// The client of a connection (cached like [`ConnectionResolver::for_object`]'s, rebuilt
    /// when the connection's probe saw a new generation or new Secrets).
    async fn client_for(&self, found: &Found) -> Result<Arc<dyn ZitadelApi>, Refusal> {
        let fingerprint = format!(
            "{:?}|{}",
            found.status.observed_generation,
            found.status.observed_secret_versions.join(",")
        );
        let mut cache = self.cache.lock().await;
        if let Some((fp, api)) = cache.get(&found.key)
            && *fp == fingerprint
        {
            return Ok(api.clone());
        }
        let built = build::build(&self.sources, &found.settings, self.request_timeout)
            .await
            .map_err(|e| Refusal {
                reason: Reason::ConnectionNotReady,
                message: format!("{}: {e}", found.name),
                transient: false,
            })?;
        let api = built.api();
        cache.insert(found.key.clone(), (fingerprint, api.clone()));
        Ok(api)
    }

    /// The drift source of the connection `reference` names (`None`: the default connection)
    /// for objects in `namespace` (a `ClusterZitadelConnection` is read without its namespace
    /// guard: the guard limits objects, not the connection's own event log).
    pub async fn drift_source(
        &self,
        namespace: &str,
        reference: Option<&ConnectionRef>,
    ) -> Result<DriftSource, Refusal> {
        let Some(reference) = reference else {
            return match &self.default {
                Some(api) => Ok(DriftSource {
                    api: api.clone(),
                    status: None,
                }),
                None => Err(Self::not_found("no default connection".into())),
            };
        };
        let found = self.find(namespace, reference, false).await?;
        guard::check_ready(&found.name, &found.status, found.generation, found.deleting)?;
        let api = self.client_for(&found).await?;
        Ok(DriftSource {
            api,
            status: found.status.drift_detection.clone(),
        })
    }
}

#[async_trait::async_trait]
impl ConnectionResolver for Connections {
    async fn for_object(&self, ns: &str, reference: Option<&ConnectionRef>) -> Resolution {
        let Some(reference) = reference else {
            return match &self.default {
                Some(api) => Ok(Granted {
                    api: api.clone(),
                    allowed: AllowedOrgs::Any,
                    name: "the operator's default connection".into(),
                }),
                None => Err(Self::not_found(
                    "spec.connectionRef is not set and the operator runs without a default connection (multi-tenant mode)".into(),
                )),
            };
        };
        let found = self.find(ns, reference, true).await?;
        guard::check_ready(&found.name, &found.status, found.generation, found.deleting)?;
        // The client is rebuilt when the probe saw a new generation or new Secrets (deletion
        // bumps the generation, not the spec).
        let api = self.client_for(&found).await?;
        Ok(Granted {
            api,
            allowed: found.allowed,
            name: found.name,
        })
    }
}
