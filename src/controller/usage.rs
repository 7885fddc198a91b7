//! Which metadata objects hold which connection back from deletion, maintained from the kind
//! controllers' watch streams (the Crossplane ProviderConfig pattern: a connection in use keeps
//! its finalizer until its last user is gone).
//!
//! An object holds its connection ([`holds`], pure) while it exists and is not being deleted,
//! and, once it is being deleted with `deletionPolicy: Delete`, until its cleanup finished (the
//! operator's cleanup finalizer is gone). An object being deleted with `deletionPolicy: Orphan`
//! holds nothing: its cleanup makes no ZITADEL call.
//!
//! Whoever waits for a connection's users ([`UsageIndex::subscribe`]) hears of every change of
//! that connection's users; [`UsageIndex::synced`] resolves once every watch listed its objects,
//! so that "no users" is never answered from an empty cache.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kube::ResourceExt;
use kube::runtime::watcher::Event;
use tokio::sync::{mpsc, watch};

use super::FINALIZER;
use crate::crd::{ConnectionKind, DeletionPolicy, MetadataResource};

/// A connection objects can use.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConnectionKey {
    /// The operator's default connection (objects without `connectionRef`).
    Default,
    /// A `ZitadelConnection`.
    Namespaced {
        /// Its namespace (the objects').
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A `ClusterZitadelConnection`.
    Cluster {
        /// Its name.
        name: String,
    },
}

impl ConnectionKey {
    /// The key of a `connectionRef` from an object in `namespace`.
    pub fn of_ref(namespace: &str, reference: Option<&crate::crd::ConnectionRef>) -> Self {
        match reference {
            None => ConnectionKey::Default,
            Some(r) => match r.kind {
                ConnectionKind::ZitadelConnection => ConnectionKey::Namespaced {
                    namespace: namespace.to_string(),
                    name: r.name.clone(),
                },
                ConnectionKind::ClusterZitadelConnection => ConnectionKey::Cluster {
                    name: r.name.clone(),
                },
            },
        }
    }
}

impl std::fmt::Display for ConnectionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectionKey::Default => f.write_str("the default connection"),
            ConnectionKey::Namespaced { namespace, name } => {
                write!(f, "ZitadelConnection {namespace}/{name}")
            }
            ConnectionKey::Cluster { name } => write!(f, "ClusterZitadelConnection {name}"),
        }
    }
}

/// An object that uses a connection: `Kind namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct User {
    /// `OrgMetadata` or `UserMetadata`.
    pub kind: &'static str,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// `n objects (A, B, C and k more)`: a count and the first few names, for messages.
pub fn describe_users(users: &[User], named: usize) -> String {
    let names: Vec<String> = users.iter().take(named).map(User::to_string).collect();
    let more = users.len().saturating_sub(named);
    let noun = if users.len() == 1 {
        "object"
    } else {
        "objects"
    };
    let tail = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!("{} {noun} ({}{tail})", users.len(), names.join(", "))
}

/// The connection `obj` holds back from deletion, if any (pure).
pub fn holds<K: MetadataResource>(obj: &K) -> Option<ConnectionKey> {
    let meta = obj.meta();
    if meta.deletion_timestamp.is_some() {
        let cleaning = obj.deletion_policy() == DeletionPolicy::Delete
            && obj.finalizers().iter().any(|f| f == FINALIZER);
        if !cleaning {
            return None;
        }
    }
    Some(ConnectionKey::of_ref(
        meta.namespace.as_deref().unwrap_or_default(),
        obj.connection_ref(),
    ))
}

#[derive(Default)]
struct Inner {
    /// Object → the connection it holds.
    by_user: HashMap<User, ConnectionKey>,
    /// Connection → the objects holding it.
    by_connection: BTreeMap<ConnectionKey, BTreeSet<User>>,
    /// Objects seen during a re-list in progress, per (kind, watch scope).
    relisting: HashMap<(&'static str, Option<String>), HashSet<User>>,
    /// (kind, scope) pairs that finished their first list.
    listed: HashSet<(&'static str, Option<String>)>,
    subscribers: Vec<mpsc::UnboundedSender<ConnectionKey>>,
}

impl Inner {
    /// Record that `user` holds `key` (or nothing); returns the connections whose users changed.
    fn set(&mut self, user: User, key: Option<ConnectionKey>) -> Vec<ConnectionKey> {
        let old = self.by_user.get(&user).cloned();
        if old == key {
            return Vec::new();
        }
        let mut changed = Vec::new();
        if let Some(old) = old {
            if let Some(users) = self.by_connection.get_mut(&old) {
                users.remove(&user);
                if users.is_empty() {
                    self.by_connection.remove(&old);
                }
            }
            self.by_user.remove(&user);
            changed.push(old);
        }
        if let Some(new) = key {
            self.by_connection
                .entry(new.clone())
                .or_default()
                .insert(user.clone());
            self.by_user.insert(user, new.clone());
            changed.push(new);
        }
        changed
    }

    fn notify(&mut self, keys: Vec<ConnectionKey>) {
        for key in keys {
            self.subscribers.retain(|s| s.send(key.clone()).is_ok());
        }
    }
}

/// Connection → the objects holding it, across both kinds and every watched namespace. Cheap to
/// clone.
#[derive(Clone)]
pub struct UsageIndex {
    inner: Arc<Mutex<Inner>>,
    /// How many (kind, scope) watches finished their first list.
    listed: Arc<watch::Sender<usize>>,
    /// How many there are.
    expected: usize,
}

impl UsageIndex {
    /// An index fed by `watches` watch streams (kinds × scopes); [`Self::synced`] waits for the
    /// first list of each.
    pub fn new(watches: usize) -> Self {
        Self {
            inner: Arc::default(),
            listed: Arc::new(watch::channel(0).0),
            expected: watches,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn user_of<K: MetadataResource>(obj: &K) -> User {
        User {
            kind: K::KIND,
            namespace: obj.namespace().unwrap_or_default(),
            name: obj.name_any(),
        }
    }

    /// Applies one watch event of the `K` stream watching `scope` (a namespace, `None` = all).
    pub fn observe<K: MetadataResource>(&self, scope: Option<&str>, event: &Event<K>) {
        let mut inner = self.lock();
        let stream = (K::KIND, scope.map(str::to_owned));
        let changed = match event {
            Event::Apply(obj) => inner.set(Self::user_of(obj), holds(obj)),
            Event::Delete(obj) => inner.set(Self::user_of(obj), None),
            Event::Init => {
                inner.relisting.insert(stream, HashSet::new());
                Vec::new()
            }
            Event::InitApply(obj) => {
                let user = Self::user_of(obj);
                if let Some(seen) = inner.relisting.get_mut(&stream) {
                    seen.insert(user.clone());
                }
                inner.set(user, holds(obj))
            }
            Event::InitDone => {
                let seen = inner.relisting.remove(&stream).unwrap_or_default();
                let gone: Vec<User> = inner
                    .by_user
                    .keys()
                    .filter(|u| u.kind == K::KIND)
                    .filter(|u| scope.is_none_or(|s| s == u.namespace))
                    .filter(|u| !seen.contains(*u))
                    .cloned()
                    .collect();
                let mut changed = Vec::new();
                for user in gone {
                    changed.extend(inner.set(user, None));
                }
                if inner.listed.insert(stream) {
                    let listed = inner.listed.len();
                    self.listed.send_replace(listed);
                }
                changed
            }
        };
        inner.notify(changed);
    }

    /// The objects holding `key`, sorted.
    pub fn users(&self, key: &ConnectionKey) -> Vec<User> {
        self.lock()
            .by_connection
            .get(key)
            .map(|u| u.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// A stream of connections whose users changed (from now on).
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<ConnectionKey> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().subscribers.push(tx);
        rx
    }

    /// Resolves once every watch feeding the index listed its objects.
    pub async fn synced(&self) {
        let mut rx = self.listed.subscribe();
        let expected = self.expected;
        // Err only when the sender is gone, which it is not while `self` lives.
        let _ = rx.wait_for(|n| *n >= expected).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{OrgMetadata, UserMetadata};
    use serde_json::json;

    fn org(name: &str, spec: serde_json::Value, meta: serde_json::Value) -> OrgMetadata {
        let mut metadata = json!({"name": name, "namespace": "team"});
        if let (Some(m), Some(extra)) = (metadata.as_object_mut(), meta.as_object()) {
            m.extend(extra.clone());
        }
        let mut full = json!({"organizationId": "1", "metadata": []});
        if let (Some(f), Some(extra)) = (full.as_object_mut(), spec.as_object()) {
            f.extend(extra.clone());
        }
        serde_json::from_value(json!({
            "apiVersion": "metadata.zitadel-operator.dev/v1alpha1",
            "kind": "OrgMetadata",
            "metadata": metadata,
            "spec": full,
        }))
        .expect("OrgMetadata")
    }

    fn conn() -> serde_json::Value {
        json!({"connectionRef": {"name": "z"}})
    }

    fn deleting(finalizers: &[&str]) -> serde_json::Value {
        json!({"deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": finalizers})
    }

    fn z() -> ConnectionKey {
        ConnectionKey::Namespaced {
            namespace: "team".into(),
            name: "z".into(),
        }
    }

    #[test]
    fn live_objects_hold_their_connection_and_deleting_ones_only_while_cleaning_up() {
        assert_eq!(holds(&org("a", conn(), json!({}))), Some(z()));
        assert_eq!(
            holds(&org("a", json!({}), json!({}))),
            Some(ConnectionKey::Default)
        );
        let cluster = json!({"connectionRef": {"kind": "ClusterZitadelConnection", "name": "c"}});
        assert_eq!(
            holds(&org("a", cluster, json!({}))),
            Some(ConnectionKey::Cluster { name: "c".into() })
        );
        // An Orphan object holds while it lives…
        let orphan = json!({"connectionRef": {"name": "z"}, "deletionPolicy": "Orphan"});
        assert_eq!(holds(&org("a", orphan.clone(), json!({}))), Some(z()));
        // …and nothing once it is being deleted, even with its finalizer still on.
        let d = deleting(&[FINALIZER, "example.com/other"]);
        assert_eq!(holds(&org("a", orphan, d.clone())), None);
        // A Delete object being deleted holds until its cleanup released the finalizer.
        assert_eq!(holds(&org("a", conn(), d)), Some(z()));
        assert_eq!(
            holds(&org("a", conn(), deleting(&["example.com/other"]))),
            None
        );
    }

    #[tokio::test]
    async fn follows_objects_notifies_changes_and_syncs_after_every_first_list() {
        let index = UsageIndex::new(2);
        let mut changes = index.subscribe();
        let scope = Some("team");
        index.observe(scope, &Event::<OrgMetadata>::Init);
        index.observe(scope, &Event::InitApply(org("a", conn(), json!({}))));
        index.observe(scope, &Event::<OrgMetadata>::InitDone);
        // Not synced until the UserMetadata watch listed too.
        let early = tokio::time::timeout(std::time::Duration::from_millis(20), index.synced());
        assert!(early.await.is_err());
        index.observe(scope, &Event::<UserMetadata>::Init);
        index.observe(scope, &Event::<UserMetadata>::InitDone);
        index.synced().await;
        index.observe(scope, &Event::Apply(org("b", conn(), json!({}))));
        let names: Vec<String> = index.users(&z()).iter().map(User::to_string).collect();
        assert_eq!(names, vec!["OrgMetadata team/a", "OrgMetadata team/b"]);
        // Deletion with cleanup pending still holds; the cleanup's end releases.
        index.observe(
            scope,
            &Event::Apply(org("a", conn(), deleting(&[FINALIZER]))),
        );
        assert_eq!(index.users(&z()).len(), 2);
        index.observe(scope, &Event::Apply(org("a", conn(), deleting(&[]))));
        index.observe(scope, &Event::Delete(org("b", conn(), json!({}))));
        assert!(index.users(&z()).is_empty());
        let mut seen = Vec::new();
        while let Ok(key) = changes.try_recv() {
            seen.push(key);
        }
        // a (listed), b (added), a (released), b (deleted); the no-op update was not announced.
        assert_eq!(seen, vec![z(), z(), z(), z()]);
        // A re-list that no longer returns an object drops it.
        index.observe(scope, &Event::Apply(org("c", conn(), json!({}))));
        index.observe(scope, &Event::<OrgMetadata>::Init);
        index.observe(scope, &Event::<OrgMetadata>::InitDone);
        assert!(index.users(&z()).is_empty());
    }

    #[test]
    fn users_are_described_by_count_and_a_few_names() {
        let user = |n: &str| User {
            kind: "OrgMetadata",
            namespace: "t".into(),
            name: n.into(),
        };
        let users: Vec<User> = ["a", "b", "c", "d"].iter().map(|n| user(n)).collect();
        assert_eq!(
            describe_users(&users, 2),
            "4 objects (OrgMetadata t/a, OrgMetadata t/b and 2 more)"
        );
        assert_eq!(describe_users(&users[..1], 3), "1 object (OrgMetadata t/a)");
    }
}
