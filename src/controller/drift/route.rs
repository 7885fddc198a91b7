//! Where triggers go: per kind, the target index, the caches and the controller channels.

use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::mpsc;

use super::*;
use crate::controller::index::TargetIndex;
use crate::controller::metadata::claims::identity as claims_identity;

/// Where the triggers of one kind go: its target index, its controllers' caches, and one
/// channel per controller (watch scope).
pub struct Route<K: MetadataResource> {
    targets: TargetIndex,
    stores: Vec<Store<K>>,
    senders: Vec<(Option<String>, mpsc::UnboundedSender<ObjectRef<K>>)>,
}

impl<K: MetadataResource> Route<K> {
    /// A route over these parts.
    pub fn new(
        targets: TargetIndex,
        stores: Vec<Store<K>>,
        senders: Vec<(Option<String>, mpsc::UnboundedSender<ObjectRef<K>>)>,
    ) -> Self {
        Self {
            targets,
            stores,
            senders,
        }
    }

    pub(super) fn get(&self, ns: &str, name: &str) -> Option<Arc<K>> {
        let reference = ObjectRef::new(name).within(ns);
        self.stores.iter().find_map(|s| s.get(&reference))
    }

    /// Whether this process watches the object `ns/name`.
    pub(super) fn holds(&self, ns: &str, name: &str) -> bool {
        self.get(ns, name).is_some()
    }

    /// Trigger a reconcile of `obj`; false when its controller is gone.
    pub(super) fn send(&self, obj: &K) -> bool {
        let ns = obj.namespace().unwrap_or_default();
        let reference = ObjectRef::from_obj(obj);
        self.senders
            .iter()
            .find(|(scope, _)| scope.as_deref().is_none_or(|s| s == ns))
            .is_some_and(|(_, tx)| tx.send(reference).is_ok())
    }

    /// Objects of `key` on the target `identity` (`org/ID` or `user/ID`).
    pub(super) fn on_target(&self, key: &ConnectionKey, identity: &str) -> Vec<Arc<K>> {
        self.targets
            .objects(identity)
            .into_iter()
            .filter_map(|(ns, name)| self.get(&ns, &name))
            .filter(|o| claims_identity(o.as_ref()) == identity && uses(o.as_ref(), key))
            .collect()
    }

    /// Every object of `key` for which `pred` holds (a scan: only for rare events).
    pub(super) fn all(&self, key: &ConnectionKey, pred: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        self.stores
            .iter()
            .flat_map(Store::state)
            .filter(|o| uses(o.as_ref(), key) && pred(o))
            .collect()
    }
}

pub(super) fn uses<K: MetadataResource>(obj: &K, key: &ConnectionKey) -> bool {
    ConnectionKey::of_ref(&obj.namespace().unwrap_or_default(), obj.connection_ref()) == *key
}

/// The kinds whose objects the drift detection re-syncs.
pub trait Routed: MetadataResource + kube::Resource<DynamicType = ()> {
    /// Where this kind's route is kept.
    fn slot(hub: &DriftHub) -> &OnceLock<Route<Self>>;
}

impl Routed for OrgMetadata {
    fn slot(hub: &DriftHub) -> &OnceLock<Route<Self>> {
        &hub.org
    }
}

impl Routed for UserMetadata {
    fn slot(hub: &DriftHub) -> &OnceLock<Route<Self>> {
        &hub.user
    }
}
