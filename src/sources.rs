//! The one reader of Secrets and ConfigMaps: `valueFrom` entries of metadata objects and the
//! credentials / CA bundles of connections both read through [`ValueSources`].
//!
//! A Secret's value is its `data[key]`; a ConfigMap's is `data[key]` as UTF-8 bytes, else
//! `binaryData[key]`. Values are never cached, logged or written anywhere but ZITADEL; what is
//! recorded is the object's [`SourceVersion`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client};

/// Kind of a Secret/ConfigMap reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    /// A Secret (`data`).
    Secret,
    /// A ConfigMap (`data`, else `binaryData`).
    ConfigMap,
}

impl SourceKind {
    /// `Secret` or `ConfigMap`, as in messages and recorded versions.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Secret => "Secret",
            SourceKind::ConfigMap => "ConfigMap",
        }
    }
}

display_as_str!(SourceKind);

/// Which object was read, at which `resourceVersion`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SourceVersion {
    /// Secret or ConfigMap.
    pub kind: SourceKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its `resourceVersion` (empty when the API did not send one).
    pub resource_version: String,
}

impl SourceVersion {
    /// `Kind/name@resourceVersion`: metadata objects read only from their own namespace
    /// (`status.observedSourceVersions`).
    pub fn in_namespace(&self) -> String {
        format!("{}/{}@{}", self.kind, self.name, self.resource_version)
    }

    /// `Kind/namespace/name@resourceVersion`: a cluster connection may read from any namespace
    /// (`status.observedSecretVersions` of connections).
    pub fn qualified(&self) -> String {
        format!(
            "{}/{}/{}@{}",
            self.kind, self.namespace, self.name, self.resource_version
        )
    }
}

/// A Secret or ConfigMap that exists: its version and its values as bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceObject {
    /// `resourceVersion`, if the API sent one.
    pub resource_version: Option<String>,
    /// Key → bytes (for a ConfigMap, `data` wins over `binaryData` for the same key).
    pub values: BTreeMap<String, Vec<u8>>,
}

impl SourceObject {
    /// The bytes under `key`, if present.
    pub fn value(&self, key: &str) -> Option<&[u8]> {
        self.values.get(key).map(Vec::as_slice)
    }

    /// The version record of this object.
    pub fn version(&self, kind: SourceKind, namespace: &str, name: &str) -> SourceVersion {
        SourceVersion {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
            resource_version: self.resource_version.clone().unwrap_or_default(),
        }
    }

    fn from_secret(secret: Secret) -> Self {
        SourceObject {
            resource_version: secret.metadata.resource_version,
            values: secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect(),
        }
    }

    fn from_config_map(cm: ConfigMap) -> Self {
        let mut values: BTreeMap<String, Vec<u8>> = cm
            .binary_data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        values.extend(
            cm.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes())),
        );
        SourceObject {
            resource_version: cm.metadata.resource_version,
            values,
        }
    }
}

/// A read object, `None` when it does not exist.
pub type Lookup = Result<Option<SourceObject>, kube::Error>;

/// Reads Secrets and ConfigMaps (the Kubernetes API in production, a map in unit tests).
#[async_trait::async_trait]
pub trait ValueSources: Send + Sync {
    /// The object `ns/name` of `kind`, or `None` when it does not exist.
    async fn get(&self, kind: SourceKind, ns: &str, name: &str) -> Lookup;
}

/// [`ValueSources`] through the Kubernetes API (one GET per call, no cache).
#[derive(Clone)]
pub struct KubeSources {
    client: Client,
}

impl KubeSources {
    /// Reads with `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

#[async_trait::async_trait]
impl ValueSources for KubeSources {
    async fn get(&self, kind: SourceKind, ns: &str, name: &str) -> Lookup {
        Ok(match kind {
            SourceKind::Secret => Api::<Secret>::namespaced(self.client.clone(), ns)
                .get_opt(name)
                .await?
                .map(SourceObject::from_secret),
            SourceKind::ConfigMap => Api::<ConfigMap>::namespaced(self.client.clone(), ns)
                .get_opt(name)
                .await?
                .map(SourceObject::from_config_map),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn config_map_data_wins_over_binary_data() {
        let cm = ConfigMap {
            data: Some(BTreeMap::from([("a".into(), "text".into())])),
            binary_data: Some(BTreeMap::from([
                ("a".into(), ByteString(vec![1])),
                ("b".into(), ByteString(vec![0xff, 0])),
            ])),
            ..Default::default()
        };
        let obj = SourceObject::from_config_map(cm);
        assert_eq!(obj.value("a"), Some(&b"text"[..]));
        assert_eq!(obj.value("b"), Some(&[0xff, 0][..]));
        assert_eq!(obj.value("c"), None);
    }

    #[test]
    fn versions_render_with_and_without_namespace() {
        let obj = SourceObject {
            resource_version: Some("42".into()),
            values: BTreeMap::new(),
        };
        let v = obj.version(SourceKind::Secret, "team-a", "token");
        assert_eq!(v.in_namespace(), "Secret/token@42");
        assert_eq!(v.qualified(), "Secret/team-a/token@42");
    }
}
