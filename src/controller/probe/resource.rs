//! The two connection kinds, seen alike by the connection controller.

use super::*;

/// What the connection controller needs from either connection kind.
pub trait ConnectionResource:
    Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// Controller name for logs.
    const CONTROLLER: &'static str;
    /// Which kind this is.
    const KIND: ConnectionKind;
    /// URL, CA bundle, credentials.
    fn settings(&self) -> ConnectionSettings;
    /// Current status.
    fn connection_status(&self) -> Option<&ConnectionStatus>;
    /// `spec.driftDetection`.
    fn drift_detection(&self) -> Option<&DriftDetectionSpec>;
    /// APIs to watch for the given namespaces.
    fn apis(client: &Client, namespaces: &Namespaces) -> Vec<Api<Self>>;
    /// API to patch this object's status.
    fn api_for(&self, client: &Client) -> Api<Self>;
}

/// The parts both connection kinds implement alike.
macro_rules! settings_and_status {
    ($kind:ty) => {
        fn settings(&self) -> ConnectionSettings {
            <$kind>::settings(self)
        }

        fn connection_status(&self) -> Option<&ConnectionStatus> {
            self.status.as_ref()
        }

        fn drift_detection(&self) -> Option<&DriftDetectionSpec> {
            self.spec.modes.drift_detection.as_ref()
        }
    };
}

impl ConnectionResource for ZitadelConnection {
    const CONTROLLER: &'static str = "zitadelconnection";
    const KIND: ConnectionKind = ConnectionKind::ZitadelConnection;

    settings_and_status!(ZitadelConnection);

    fn apis(client: &Client, namespaces: &Namespaces) -> Vec<Api<Self>> {
        namespaces
            .scopes()
            .iter()
            .map(|ns| scoped_api(client, ns.as_deref()))
            .collect()
    }

    fn api_for(&self, client: &Client) -> Api<Self> {
        Api::namespaced(client.clone(), &self.namespace().unwrap_or_default())
    }
}

impl ConnectionResource for ClusterZitadelConnection {
    const CONTROLLER: &'static str = "clusterzitadelconnection";
    const KIND: ConnectionKind = ConnectionKind::ClusterZitadelConnection;

    settings_and_status!(ClusterZitadelConnection);

    fn apis(client: &Client, _: &Namespaces) -> Vec<Api<Self>> {
        vec![Api::all(client.clone())]
    }

    fn api_for(&self, client: &Client) -> Api<Self> {
        Api::all(client.clone())
    }
}

/// The key objects name this connection by.
pub(super) fn key_of<C: ConnectionResource>(c: &C) -> ConnectionKey {
    match C::KIND {
        ConnectionKind::ZitadelConnection => ConnectionKey::Namespaced {
            namespace: c.namespace().unwrap_or_default(),
            name: c.name_any(),
        },
        ConnectionKind::ClusterZitadelConnection => ConnectionKey::Cluster { name: c.name_any() },
    }
}

/// The connection itself, as something to hold.
pub(super) fn held_of<C: ConnectionResource>(c: &C) -> Held {
    Held {
        kind: HeldKind::Connection(C::KIND),
        namespace: c.namespace(),
        name: c.name_any(),
    }
}
