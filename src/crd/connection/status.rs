//! The status of a connection: readiness, identity, the API in use, drift detection.

use super::*;

/// `status.driftDetection` of a connection: how drift is detected for its objects.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftDetectionStatus {
    /// `Events` (ZITADEL's event log is read every `eventPollInterval`) or `Polling` (each
    /// object re-lists its target every resync interval).
    pub mode: String,
    /// The poll interval of Events mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_poll_interval: Option<String>,
    /// Why this mode (e.g. the credentials lack `events.read`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Observed state of a connection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The URL the last successful probe reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Who the credentials authenticate as (`user <id>` for a key file; the organization the
    /// token's user belongs to otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The ZITADEL API serving each metadata service, as the last successful probe chose it
    /// (`spec.api` `Auto`) or as pinned (`V1` / `V2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiStatus>,
    /// `resourceVersion`s of the Secrets/ConfigMaps the client was built from (rotation
    /// detection; never their content).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub observed_secret_versions: Vec<String>,
    /// `Secret/namespace/name` / `ConfigMap/namespace/name` of the Secrets and ConfigMaps this
    /// connection holds with its finalizer (`zitadelconnection.metadata.zitadel-operator.dev/NAME`
    /// or `clusterzitadelconnection.…/NAME`), so that they cannot disappear while the connection
    /// exists. Released when the connection is gone or no longer references them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_sources: Vec<String>,
    /// How drift is detected for the objects using this connection, as its last probe found
    /// (one `ListEvents` call with `limit: 1`: allowed → `Events`, refused → `Polling`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_detection: Option<DriftDetectionStatus>,
    /// `Ready`: True after a successful authenticated probe. `Reconciling`: True while the last
    /// probe failed on a transient ZITADEL error (objects using the connection wait for it).
    /// `Terminating`: True (reason `InUse`) while the connection is being deleted and objects
    /// still use it; the message counts and names them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Which API a connection uses per metadata service (`status.api`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiStatus {
    /// The `spec.api` this selection was made for (`Auto`: probed).
    pub mode: ApiMode,
    /// API of user metadata: `v1` (Management API) or `v2` (`zitadel.user.v2.UserService`).
    pub user_metadata: ApiVersion,
    /// API of org metadata: `v1` (Management API) or `v2`
    /// (`zitadel.org.v2.OrganizationService`).
    pub org_metadata: ApiVersion,
}

/// A ZITADEL API version, as shown in `status.api`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ApiVersion {
    /// Management API v1 (`/management/v1`); writes report `status.sequence`.
    #[serde(rename = "v1")]
    V1,
    /// The v2 services over Connect; writes report only a date.
    #[serde(rename = "v2")]
    V2,
}

impl From<crate::zitadel::Api> for ApiVersion {
    fn from(api: crate::zitadel::Api) -> Self {
        match api {
            crate::zitadel::Api::V1 => ApiVersion::V1,
            crate::zitadel::Api::V2 => ApiVersion::V2,
        }
    }
}
