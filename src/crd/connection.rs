//! `ZitadelConnection` (namespaced) and `ClusterZitadelConnection` (cluster-scoped): where a
//! ZITADEL instance is and how to authenticate to it — like cert-manager's Issuer / ClusterIssuer.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

pub use crate::zitadel::ApiMode;

mod status;

pub use status::*;

/// A ZITADEL instance and credentials, usable by OrgMetadata/UserMetadata in the same namespace.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "metadata.zitadel-operator.dev",
    version = "v1alpha1",
    kind = "ZitadelConnection",
    plural = "zitadelconnections",
    singular = "zitadelconnection",
    shortname = "zconn",
    category = "zitadel",
    namespaced,
    status = "ConnectionStatus",
    doc = "A ZITADEL instance and the credentials to reach it. OrgMetadata and UserMetadata in the same namespace use it through spec.connectionRef.",
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".spec.url"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Identity","type":"string","jsonPath":".status.identity"}"#,
    printcolumn = r#"{"name":"Drift","type":"string","jsonPath":".status.driftDetection.mode"}"#,
    printcolumn = r#"{"name":"UserAPI","type":"string","jsonPath":".status.api.userMetadata"}"#,
    printcolumn = r#"{"name":"OrgAPI","type":"string","jsonPath":".status.api.orgMetadata"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ZitadelConnectionSpec {
    /// Base URL of the ZITADEL instance (its custom domain, also the OIDC issuer), e.g.
    /// `https://acme.zitadel.cloud`.
    #[schemars(
        length(min = 1, max = 2048),
        regex(pattern = r"^https?://[^\s/]+(/.*)?$")
    )]
    pub url: String,
    /// Extra CA certificates (PEM) to trust for the instance's TLS certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<CaBundle>,
    /// Server name to verify the TLS certificate against (and send as SNI) when it differs from
    /// the URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::common::optional_id_schema")]
    pub tls_server_name: Option<String>,
    /// How to authenticate. The Secret must be in the connection's namespace.
    pub credentials: Credentials,
    /// Which API serves metadata and how drift is detected.
    #[serde(flatten)]
    pub modes: ConnectionModes,
}

/// A ZITADEL instance and credentials for the whole cluster, usable only from the namespaces
/// and for the organizations its `allowedNamespaces` rules allow (none by default).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "metadata.zitadel-operator.dev",
    version = "v1alpha1",
    kind = "ClusterZitadelConnection",
    plural = "clusterzitadelconnections",
    singular = "clusterzitadelconnection",
    shortname = "czconn",
    category = "zitadel",
    status = "ConnectionStatus",
    doc = "A cluster-wide ZITADEL connection. Only namespaces matched by allowedNamespaces may use it, and only for the organizations listed there; by default no namespace may.",
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".spec.url"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Identity","type":"string","jsonPath":".status.identity"}"#,
    printcolumn = r#"{"name":"Drift","type":"string","jsonPath":".status.driftDetection.mode"}"#,
    printcolumn = r#"{"name":"UserAPI","type":"string","jsonPath":".status.api.userMetadata"}"#,
    printcolumn = r#"{"name":"OrgAPI","type":"string","jsonPath":".status.api.orgMetadata"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("(has(self.credentials.personalAccessToken) && has(self.credentials.personalAccessToken.namespace)) || (has(self.credentials.jwtProfile) && has(self.credentials.jwtProfile.namespace))").message("a ClusterZitadelConnection must name the namespace of its credentials Secret"))]
#[serde(rename_all = "camelCase")]
pub struct ClusterZitadelConnectionSpec {
    /// Base URL of the ZITADEL instance (its custom domain, also the OIDC issuer).
    #[schemars(
        length(min = 1, max = 2048),
        regex(pattern = r"^https?://[^\s/]+(/.*)?$")
    )]
    pub url: String,
    /// Extra CA certificates (PEM) to trust; `namespace` is required here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<CaBundle>,
    /// Server name to verify the TLS certificate against when it differs from the URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::common::optional_id_schema")]
    pub tls_server_name: Option<String>,
    /// How to authenticate; the Secret reference must name its namespace.
    pub credentials: Credentials,
    /// Which API serves metadata and how drift is detected.
    #[serde(flatten)]
    pub modes: ConnectionModes,
    /// Which namespaces may use this connection, and for which organizations. A namespace
    /// matching no rule is refused (`TargetNotAllowed`). Empty (the default): no namespace.
    #[serde(default)]
    pub allowed_namespaces: Vec<NamespaceRule>,
}

/// The spec fields both connection kinds share word for word, embedded with
/// `#[serde(flatten)]`: which API serves metadata and how drift is detected.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionModes {
    /// Which ZITADEL API serves metadata: `Auto` (default) probes the instance with
    /// side-effect-free calls and picks per service — Management API v1 wherever the instance
    /// serves it (up to ZITADEL v4.x; writes report `status.sequence`), the v2 services over
    /// Connect where v1 is gone (ZITADEL v5) — and probes again when a call answers "no such
    /// route" (e.g. after an upgrade to v5). `V1` pins Management API v1 (gone in ZITADEL v5);
    /// `V2` opts in to the v2 services early (ZITADEL v4.x with org metadata v2, or v5;
    /// `status.sequence` then stays empty: v2 has none).
    #[serde(default)]
    pub api: ApiMode,
    /// How the objects using this connection notice changes made in ZITADEL outside
    /// Kubernetes (drift). By default from ZITADEL's event log when the credentials may read
    /// it (`events.read`: IAM_OWNER or IAM_OWNER_VIEWER), else by re-listing each object's
    /// target every `--resync-interval`; `status.driftDetection` shows which.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_detection: Option<DriftDetectionSpec>,
}

/// One guard rule of a ClusterZitadelConnection.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("size(self.names) > 0 || has(self.selector)").message("a rule needs names or a selector"))]
pub struct NamespaceRule {
    /// Namespace names the rule applies to.
    #[serde(default)]
    pub names: Vec<String>,
    /// Label selector of namespaces the rule applies to (ANDed with `names` when both are set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// ZITADEL organization ids these namespaces may target (for UserMetadata: the user's
    /// organization). `"*"` allows every organization the credentials reach.
    #[schemars(length(min = 1))]
    pub organization_ids: Vec<String>,
}

/// Exactly one credential kind.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.personalAccessToken) != has(self.jwtProfile)").message("set exactly one of personalAccessToken or jwtProfile"))]
pub struct Credentials {
    /// A Personal Access Token of a ZITADEL service user, in a Secret key (sent as bearer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal_access_token: Option<SecretKeyRef>,
    /// The service-user key JSON that ZITADEL issues (`{"type":"serviceaccount","keyId",
    /// "key","userId",...}`), in a Secret key: the operator signs an RS256 assertion and exchanges
    /// it at `/oauth/v2/token` for an access token, refreshed before it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_profile: Option<SecretKeyRef>,
}

/// A key of a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
    /// Secret namespace: required for ClusterZitadelConnection. A ZitadelConnection reads only
    /// from its own namespace: leave it out (or name that namespace); another one is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::common::optional_id_schema")]
    pub namespace: Option<String>,
}

/// PEM CA certificates from a Secret or ConfigMap key (exactly one).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretRef) != has(self.configMapRef)").message("set exactly one of secretRef or configMapRef"))]
pub struct CaBundle {
    /// A Secret key holding PEM certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// A ConfigMap key holding PEM certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<SecretKeyRef>,
}

/// `spec.driftDetection` of a connection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftDetectionSpec {
    /// `Auto` (default): read ZITADEL's event log when the credentials may (one `ListEvents`
    /// per poll interval; objects re-list their target only as a slow safety net,
    /// `--events-resync-interval`), else poll. `Polling`: never read events; each object
    /// re-lists its target every `--resync-interval`.
    #[serde(default)]
    pub mode: DriftDetectionMode,
    /// How often the event log is read in Events mode, e.g. `15s` (default:
    /// `--event-poll-interval`). A change made outside Kubernetes is repaired within about
    /// this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "poll_interval_schema")]
    pub event_poll_interval: Option<String>,
}

/// A Go duration (`15s`, `1m30s`) between 1 s and 1 h, checked at admission (the same bounds
/// as [`DriftDetectionSpec::poll_interval`], which stays for objects stored before the rule).
fn poll_interval_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "maxLength": 32,
        "pattern": r"^([0-9]+(ms|s|m|h))+$",
        "x-kubernetes-validations": [{
            "rule": "!self.matches('^([0-9]+(ms|s|m|h))+$') || (duration(self) >= duration('1s') && duration(self) <= duration('1h'))",
            "message": "eventPollInterval must be between 1s and 1h",
        }],
    })
}

impl DriftDetectionSpec {
    /// The poll interval the spec asks for: `Ok(None)` when unset; an error message for a
    /// duration that cannot be used (unparseable, under 1 s or over 1 h).
    pub fn poll_interval(&self) -> Result<Option<std::time::Duration>, String> {
        let Some(text) = self.event_poll_interval.as_deref() else {
            return Ok(None);
        };
        let d = humantime::parse_duration(text)
            .map_err(|e| format!("spec.driftDetection.eventPollInterval {text:?}: {e}"))?;
        if d < std::time::Duration::from_secs(1) || d > std::time::Duration::from_secs(3600) {
            return Err(format!(
                "spec.driftDetection.eventPollInterval {text:?} must be between 1s and 1h"
            ));
        }
        Ok(Some(d))
    }
}

/// `spec.driftDetection.mode`.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum DriftDetectionMode {
    /// Events when the credentials may read them, else Polling.
    #[default]
    Auto,
    /// Never read events: re-list each object's target every resync interval.
    Polling,
}

/// `spec.connectionRef` of OrgMetadata / UserMetadata.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionRef {
    /// `ZitadelConnection` (same namespace, default) or `ClusterZitadelConnection`.
    #[serde(default)]
    pub kind: ConnectionKind,
    /// Name of the connection.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Kinds a `connectionRef` may name.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    schemars::JsonSchema,
)]
pub enum ConnectionKind {
    /// A `ZitadelConnection` in the object's namespace.
    #[default]
    ZitadelConnection,
    /// A `ClusterZitadelConnection`.
    ClusterZitadelConnection,
}

/// The parts of a connection spec both kinds share.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionSettings {
    /// Base URL.
    pub url: String,
    /// CA bundle reference.
    pub ca_bundle: Option<CaBundle>,
    /// TLS server name.
    pub tls_server_name: Option<String>,
    /// Credentials.
    pub credentials: Credentials,
    /// Namespace the referenced Secrets/ConfigMaps live in by default.
    pub namespace: Option<String>,
    /// Which API serves metadata (`spec.api`).
    pub api: ApiMode,
}

impl ZitadelConnection {
    /// Shared settings (Secrets resolved in the connection's namespace).
    pub fn settings(&self) -> ConnectionSettings {
        ConnectionSettings {
            url: self.spec.url.clone(),
            ca_bundle: self.spec.ca_bundle.clone(),
            tls_server_name: self.spec.tls_server_name.clone(),
            credentials: self.spec.credentials.clone(),
            namespace: self.metadata.namespace.clone(),
            api: self.spec.modes.api,
        }
    }
}

impl ClusterZitadelConnection {
    /// Shared settings (Secrets resolved in the namespace each reference names).
    pub fn settings(&self) -> ConnectionSettings {
        ConnectionSettings {
            url: self.spec.url.clone(),
            ca_bundle: self.spec.ca_bundle.clone(),
            tls_server_name: self.spec.tls_server_name.clone(),
            credentials: self.spec.credentials.clone(),
            namespace: None,
            api: self.spec.modes.api,
        }
    }
}
