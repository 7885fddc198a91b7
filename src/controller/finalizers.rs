//! The finalizers the operator holds on objects it does not own, and the one place that adds and
//! removes them ([`Finalizers`]).
//!
//! | finalizer | on | held while | removed by |
//! |---|---|---|---|
//! | [`IN_USE`] | `ZitadelConnection`, `ClusterZitadelConnection` | the connection exists and, once it is being deleted, objects still use it | the connection controller, when its last user is gone |
//! | [`holder`] (one per connection) | the Secrets (and CA bundle ConfigMap) a connection reads | that connection exists | the connection controller, when the connection goes or stops referencing it |
//! | [`DEFAULT_CONNECTION`] | the `--token-secret` Secret | objects use the default connection | the operator, when no object uses it any more |
//!
//! Every holder adds and removes only its own finalizer, so holders never need to agree on who
//! still needs a shared Secret. Finalizers are changed with a merge patch carrying the
//! `resourceVersion` read (a conflict re-reads and retries): the `patch` verb, nothing else.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use crate::crd::{ClusterZitadelConnection, ConnectionKind, ZitadelConnection};
use crate::sources::SourceKind;

/// On a connection: it stays until no object uses it.
pub const IN_USE: &str = "metadata.zitadel-operator.dev/in-use";
/// On the `--token-secret` Secret: it stays while objects use the default connection.
pub const DEFAULT_CONNECTION: &str = "metadata.zitadel-operator.dev/default-connection";
/// Longest name part of a qualified finalizer name.
const MAX_NAME: usize = 63;

/// The finalizer a connection holds its Secrets and ConfigMaps with:
/// `zitadelconnection.metadata.zitadel-operator.dev/NAME` (a ZitadelConnection's Secrets are in
/// its own namespace, so the name is unambiguous there) or
/// `clusterzitadelconnection.metadata.zitadel-operator.dev/NAME`. A name longer than 63
/// characters is cut and made unique with a stable hash.
pub fn holder(kind: ConnectionKind, name: &str) -> String {
    let prefix = match kind {
        ConnectionKind::ZitadelConnection => "zitadelconnection",
        ConnectionKind::ClusterZitadelConnection => "clusterzitadelconnection",
    };
    let part = if name.len() <= MAX_NAME {
        name.to_string()
    } else {
        let cut: String = name.chars().take(MAX_NAME - 17).collect();
        let cut = cut.trim_end_matches(['-', '.']);
        format!("{cut}-{:016x}", fnv1a(name.as_bytes()))
    };
    format!("{prefix}.metadata.zitadel-operator.dev/{part}")
}

/// FNV-1a, 64 bits: stable across Rust releases (finalizer names must not change between
/// operator versions, or a newer one could not release what an older one added).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Kinds the operator holds with a finalizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HeldKind {
    /// A Secret or ConfigMap a connection reads.
    Source(SourceKind),
    /// A connection.
    Connection(ConnectionKind),
}

/// An object the operator may hold.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Held {
    /// Kind.
    pub kind: HeldKind,
    /// Namespace (`None` for cluster-scoped kinds).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl Held {
    /// A Secret or ConfigMap.
    pub fn source(kind: SourceKind, namespace: &str, name: &str) -> Self {
        Held {
            kind: HeldKind::Source(kind),
            namespace: Some(namespace.to_string()),
            name: name.to_string(),
        }
    }

    /// `Secret/ns/name` (as recorded in a connection's `status.heldSources`); connections
    /// render as `Kind/ns/name` or `Kind/name`.
    pub fn record(&self) -> String {
        let kind = match self.kind {
            HeldKind::Source(k) => k.as_str(),
            HeldKind::Connection(ConnectionKind::ZitadelConnection) => "ZitadelConnection",
            HeldKind::Connection(ConnectionKind::ClusterZitadelConnection) => {
                "ClusterZitadelConnection"
            }
        };
        match &self.namespace {
            Some(ns) => format!("{kind}/{ns}/{}", self.name),
            None => format!("{kind}/{}", self.name),
        }
    }

    /// A Secret/ConfigMap back from its [`Self::record`].
    pub fn parse_source(record: &str) -> Option<Self> {
        let mut parts = record.splitn(3, '/');
        let kind = match parts.next()? {
            "Secret" => SourceKind::Secret,
            "ConfigMap" => SourceKind::ConfigMap,
            _ => return None,
        };
        let (ns, name) = (parts.next()?, parts.next()?);
        (!ns.is_empty() && !name.is_empty() && !name.contains('/'))
            .then(|| Held::source(kind, ns, name))
    }
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let record = self.record();
        let (kind, rest) = record.split_once('/').unwrap_or((&record, ""));
        write!(f, "{kind} {rest}")
    }
}

/// What [`Finalizers::ensure`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Presence {
    /// The object does not exist.
    Absent,
    /// It exists.
    Present {
        /// It is being deleted (a finalizer cannot be added then: the API refuses new ones).
        deleting: bool,
        /// Its finalizers after the call.
        finalizers: Vec<String>,
    },
}

/// Adds and removes finalizers (the Kubernetes API in production, a map in unit tests).
#[async_trait::async_trait]
pub trait Finalizers: Send + Sync {
    /// Make `finalizer` present (or absent) on `object`. Adding to an object being deleted is
    /// skipped (the API refuses it); a missing object is [`Presence::Absent`].
    async fn ensure(
        &self,
        object: &Held,
        finalizer: &str,
        present: bool,
    ) -> Result<Presence, kube::Error>;
}

/// [`Finalizers`] through the Kubernetes API: read the metadata, merge-patch the list with the
/// `resourceVersion` read; retried on a conflict.
#[derive(Clone)]
pub struct KubeFinalizers {
    client: Client,
}

impl KubeFinalizers {
    /// With `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

/// Conflicts tolerated in a row before giving up (the caller retries later).
const ATTEMPTS: usize = 5;

async fn ensure_on<K>(
    api: Api<K>,
    name: &str,
    finalizer: &str,
    present: bool,
) -> Result<Presence, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let Some(meta): Option<PartialObjectMeta<K>> = api.get_metadata_opt(name).await? else {
            return Ok(Presence::Absent);
        };
        let meta = meta.metadata;
        let deleting = meta.deletion_timestamp.is_some();
        let mut finalizers = meta.finalizers.unwrap_or_default();
        let has = finalizers.iter().any(|f| f == finalizer);
        if has == present || (present && deleting) {
            return Ok(Presence::Present {
                deleting,
                finalizers,
            });
        }
        if present {
            finalizers.push(finalizer.to_string());
        } else {
            finalizers.retain(|f| f != finalizer);
        }
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": meta.resource_version, "finalizers": finalizers}
        });
        match api
            .patch_metadata(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                return Ok(Presence::Present {
                    deleting,
                    finalizers,
                });
            }
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < ATTEMPTS => continue,
            // Removing the last finalizer of an object being deleted deletes it: gone is done.
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Presence::Absent),
            Err(e) => return Err(e),
        }
    }
}

#[async_trait::async_trait]
impl Finalizers for KubeFinalizers {
    async fn ensure(
        &self,
        object: &Held,
        finalizer: &str,
        present: bool,
    ) -> Result<Presence, kube::Error> {
        let client = self.client.clone();
        let ns = object.namespace.as_deref().unwrap_or_default();
        let name = &object.name;
        match object.kind {
            HeldKind::Source(SourceKind::Secret) => {
                ensure_on(
                    Api::<Secret>::namespaced(client, ns),
                    name,
                    finalizer,
                    present,
                )
                .await
            }
            HeldKind::Source(SourceKind::ConfigMap) => {
                let api = Api::<ConfigMap>::namespaced(client, ns);
                ensure_on(api, name, finalizer, present).await
            }
            HeldKind::Connection(ConnectionKind::ZitadelConnection) => {
                let api = Api::<ZitadelConnection>::namespaced(client, ns);
                ensure_on(api, name, finalizer, present).await
            }
            HeldKind::Connection(ConnectionKind::ClusterZitadelConnection) => {
                let api = Api::<ClusterZitadelConnection>::all(client);
                ensure_on(api, name, finalizer, present).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kubernetes' rule for the name part of a qualified name.
    fn valid_name_part(s: &str) -> bool {
        let bytes = s.as_bytes();
        !s.is_empty()
            && s.len() <= MAX_NAME
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    }

    #[test]
    fn holder_names_are_readable_qualified_and_stable() {
        assert_eq!(
            holder(ConnectionKind::ZitadelConnection, "zitadel"),
            "zitadelconnection.metadata.zitadel-operator.dev/zitadel"
        );
        assert_eq!(
            holder(ConnectionKind::ClusterZitadelConnection, "shared.prod"),
            "clusterzitadelconnection.metadata.zitadel-operator.dev/shared.prod"
        );
        let long = format!("{}-x.y", "a".repeat(60));
        let other = format!("{}-x.z", "a".repeat(60));
        let (a, b) = (
            holder(ConnectionKind::ZitadelConnection, &long),
            holder(ConnectionKind::ZitadelConnection, &other),
        );
        assert_ne!(a, b);
        for name in [&a, &b] {
            let part = name.split_once('/').expect("qualified").1;
            assert!(valid_name_part(part), "{part}");
        }
        // Stable: the same input always gives the same name (FNV-1a of the full name).
        assert_eq!(a, holder(ConnectionKind::ZitadelConnection, &long));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn held_sources_round_trip_through_their_record() {
        let s = Held::source(SourceKind::Secret, "team", "pat");
        assert_eq!(s.record(), "Secret/team/pat");
        assert_eq!(s.to_string(), "Secret team/pat");
        assert_eq!(Held::parse_source(&s.record()), Some(s));
        let c = Held::source(SourceKind::ConfigMap, "team", "ca");
        assert_eq!(Held::parse_source("ConfigMap/team/ca"), Some(c));
        for bad in ["Secret/team", "Pod/a/b", "Secret//x", "Secret/a/b/c"] {
            assert_eq!(Held::parse_source(bad), None, "{bad}");
        }
    }
}
