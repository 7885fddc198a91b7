//! Which objects of one kind write to which ZITADEL metadata store (their target identity),
//! maintained from the controllers' watch streams.
//!
//! Conflict detection needs the other objects on the same target. Scanning the whole cache for
//! them on every reconcile costs O(N) per reconcile (O(N²) to converge N objects: at 10,000
//! objects it was three quarters of the operator's CPU); this index answers in O(objects on that
//! target). Candidates are re-checked against the caches by the caller (targets are kept as
//! hashes of their identity: a collision only adds a candidate).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kube::ResourceExt;
use kube::runtime::watcher::Event;

use crate::crd::MetadataResource;

/// `(namespace, name)` of an object.
pub type Key = (String, String);

/// Hash of a target identity.
type Target = u64;

/// Hash of an object's [`Key`].
type KeyHash = u64;

fn hash_of(value: &(impl Hash + ?Sized)) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

fn target(identity: &str) -> Target {
    hash_of(identity)
}

fn key_hash(ns: &str, name: &str) -> KeyHash {
    hash_of(&(ns, name))
}

/// One copy of each object's name per index: `by_object` and the re-list bookkeeping hold
/// hashes only (at 10,000 objects the index held two copies of every name, ~0.4 KB per object).
/// Two objects whose keys hash alike (64 bits) would only leave a stale candidate behind, which
/// the caller's re-check against the caches drops.
#[derive(Default)]
struct Inner {
    /// Object → target.
    by_object: HashMap<KeyHash, Target>,
    /// Target → objects (usually one).
    by_target: HashMap<Target, Vec<Key>>,
    /// Objects seen during a re-list in progress, per watch scope (namespace, `None` = all).
    relisting: HashMap<Option<String>, HashSet<KeyHash>>,
}

impl Inner {
    fn upsert(&mut self, ns: &str, name: &str, identity: &str) {
        let new = target(identity);
        let hash = key_hash(ns, name);
        if let Some(&old) = self.by_object.get(&hash) {
            if old == new {
                return;
            }
            self.unlink(ns, name, old);
        }
        let keys = self.by_target.entry(new).or_default();
        keys.push((ns.to_owned(), name.to_owned()));
        keys.shrink_to_fit();
        self.by_object.insert(hash, new);
    }

    fn remove(&mut self, ns: &str, name: &str) {
        if let Some(old) = self.by_object.remove(&key_hash(ns, name)) {
            self.unlink(ns, name, old);
        }
    }

    fn unlink(&mut self, ns: &str, name: &str, target: Target) {
        if let Some(keys) = self.by_target.get_mut(&target) {
            keys.retain(|(n, m)| n != ns || m != name);
            if keys.is_empty() {
                self.by_target.remove(&target);
            }
        }
    }
}

/// Target identity → objects, for one kind across all watched namespaces. Cheap to clone.
#[derive(Clone, Default)]
pub struct TargetIndex {
    inner: Arc<Mutex<Inner>>,
}

fn key_of<K: MetadataResource>(obj: &K) -> Key {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

impl TargetIndex {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies one watch event of the stream watching `scope` (a namespace, `None` = all).
    pub fn observe<K: MetadataResource>(
        &self,
        scope: Option<&str>,
        event: &Event<K>,
        identity: impl Fn(&K) -> String,
    ) {
        let mut inner = self.lock();
        match event {
            Event::Apply(obj) => {
                let (ns, name) = key_of(obj);
                inner.upsert(&ns, &name, &identity(obj));
            }
            Event::Delete(obj) => {
                let (ns, name) = key_of(obj);
                inner.remove(&ns, &name);
            }
            Event::Init => {
                inner
                    .relisting
                    .insert(scope.map(str::to_owned), HashSet::new());
            }
            Event::InitApply(obj) => {
                let (ns, name) = key_of(obj);
                if let Some(seen) = inner.relisting.get_mut(&scope.map(str::to_owned)) {
                    seen.insert(key_hash(&ns, &name));
                }
                inner.upsert(&ns, &name, &identity(obj));
            }
            Event::InitDone => {
                // Objects of this scope the re-list did not return are gone.
                let seen = inner
                    .relisting
                    .remove(&scope.map(str::to_owned))
                    .unwrap_or_default();
                let gone: Vec<Key> = inner
                    .by_target
                    .values()
                    .flatten()
                    .filter(|(ns, _)| scope.is_none_or(|s| s == ns))
                    .filter(|(ns, name)| !seen.contains(&key_hash(ns, name)))
                    .cloned()
                    .collect();
                for (ns, name) in &gone {
                    inner.remove(ns, name);
                }
            }
        }
    }

    /// Objects whose target identity is `identity` (and, rarely, some whose identity only
    /// hashes alike).
    pub fn objects(&self, identity: &str) -> Vec<Key> {
        self.lock()
            .by_target
            .get(&target(identity))
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::OrgMetadata;

    fn org(ns: &str, name: &str, org_id: &str) -> OrgMetadata {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "metadata.zitadel-operator.dev/v1alpha1",
            "kind": "OrgMetadata",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"organizationId": org_id, "metadata": []},
        }))
        .expect("OrgMetadata")
    }

    fn id(o: &OrgMetadata) -> String {
        o.spec.organization_id.clone().unwrap_or_default()
    }

    fn sorted(mut keys: Vec<Key>) -> Vec<Key> {
        keys.sort();
        keys
    }

    fn key(ns: &str, name: &str) -> Key {
        (ns.to_string(), name.to_string())
    }

    #[test]
    fn follows_applies_deletes_and_target_changes() {
        let index = TargetIndex::default();
        let scope = Some("a");
        index.observe(scope, &Event::Apply(org("a", "x", "1")), id);
        index.observe(scope, &Event::Apply(org("a", "y", "1")), id);
        index.observe(scope, &Event::Apply(org("a", "z", "2")), id);
        assert_eq!(
            sorted(index.objects("1")),
            vec![key("a", "x"), key("a", "y")]
        );
        index.observe(scope, &Event::Apply(org("a", "y", "2")), id);
        assert_eq!(index.objects("1"), vec![key("a", "x")]);
        assert_eq!(
            sorted(index.objects("2")),
            vec![key("a", "y"), key("a", "z")]
        );
        index.observe(scope, &Event::Delete(org("a", "x", "1")), id);
        assert!(index.objects("1").is_empty());
    }

    #[test]
    fn a_relist_drops_what_it_no_longer_returns_in_its_scope_only() {
        let index = TargetIndex::default();
        index.observe(Some("a"), &Event::Apply(org("a", "x", "1")), id);
        index.observe(Some("a"), &Event::Apply(org("a", "gone", "1")), id);
        index.observe(Some("b"), &Event::Apply(org("b", "other", "1")), id);
        index.observe(Some("a"), &Event::<OrgMetadata>::Init, id);
        index.observe(Some("a"), &Event::InitApply(org("a", "x", "1")), id);
        index.observe(Some("a"), &Event::InitApply(org("a", "new", "1")), id);
        index.observe(Some("a"), &Event::<OrgMetadata>::InitDone, id);
        assert_eq!(
            sorted(index.objects("1")),
            vec![key("a", "new"), key("a", "x"), key("b", "other")]
        );
    }
}
