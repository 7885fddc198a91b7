//! Watches: each with its own short backoff, and the mappings from a changed Secret, ConfigMap or
//! connection to the objects that must re-sync.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use futures::StreamExt as _;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use rand::Rng as _;

use super::default_connection::Requeue;
use crate::crd::{ConnectionKind, ConnectionStatus, MetadataResource};
use crate::reason::Reason;
use crate::sources::SourceKind;
use crate::status;

/// Backoff of each Kubernetes watch on its own (see [`watch`]; the controllers' merged trigger
/// stream has none, see [`NoTriggerBackoff`]): exponential from 250 ms, doubling per consecutive
/// error of that watch, capped at 5 s, ±20 % jitter, reset by its next event.
///
/// kube-runtime's default (800 ms doubling to 30 s, plus up to 100 % jitter) keeps growing with
/// every error of every watch during an apiserver outage — several per reconnect attempt — and the
/// `410 Gone` that follows a restart counts as one more. After a 4 s kube-apiserver restart the
/// operator was blind to changes for over a minute (`tests/chaos_kubernetes.rs`). With this
/// backoff it resumes within a few seconds; retrying a dozen watches every 5 s costs an apiserver
/// nothing.
#[derive(Clone, Debug, Default)]
pub struct WatchBackoff {
    /// Consecutive errors so far.
    attempt: u32,
}

impl WatchBackoff {
    /// First delay.
    pub const BASE: Duration = Duration::from_millis(250);
    /// Longest delay (before jitter).
    pub const MAX: Duration = Duration::from_secs(5);

    /// The delay before retry number `attempt` (1-based), before jitter.
    pub fn delay(attempt: u32) -> Duration {
        Self::BASE
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(16)))
            .min(Self::MAX)
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.attempt = self.attempt.saturating_add(1);
        Some(Self::delay(self.attempt).mul_f64(rand::rng().random_range(0.8..1.2)))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// The controllers' merged trigger stream does not back off on its own: every watch feeding it
/// already does ([`watch`]). One shared backoff over all of a controller's watches (kube-runtime's
/// `trigger_backoff`) pauses every watch for each error of any of them and is only reset by an
/// event that reaches the trigger — a re-list of an empty Secret/ConfigMap/connection watch
/// never does. After a kube-apiserver restart each watch's `410 Gone` then cost one full delay in
/// turn: edits took ~30 s to be seen (`tests/chaos_kubernetes.rs`).
#[derive(Clone, Debug, Default)]
pub struct NoTriggerBackoff;

impl Iterator for NoTriggerBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(Duration::ZERO)
    }
}

impl kube::runtime::utils::Backoff for NoTriggerBackoff {
    fn reset(&mut self) {}
}

/// A watch of `api` (any-semantic lists, served from the apiserver's cache) with its own
/// [`WatchBackoff`], reset by any event of this watch, including the markers of an empty re-list.
pub fn watch<K>(
    api: Api<K>,
) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, watcher::Config::default().any_semantic()).backoff(WatchBackoff::default())
}

/// [`watch`] of the objects of `api` whose labels match `selector` (all when `None`).
pub fn watch_selected<K>(
    api: Api<K>,
    selector: Option<&str>,
) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let mut config = watcher::Config::default().any_semantic();
    if let Some(selector) = selector {
        config = config.labels(selector);
    }
    watcher(api, config).backoff(WatchBackoff::default())
}

/// `Api` of a namespaced kind in `ns` (`None`: all namespaces).
pub(super) fn scoped_api<R>(client: &Client, ns: Option<&str>) -> Api<R>
where
    R: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// References to the objects in `store` for which `pred` holds.
pub(super) fn matching<K>(store: &Store<K>, pred: impl Fn(&K) -> bool) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    store
        .state()
        .into_iter()
        .filter(|o| pred(o))
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

/// Objects in `store` that read a value from the Secret/ConfigMap `source`.
pub fn dependents<K: MetadataResource, S: Resource>(
    store: &Store<K>,
    kind: SourceKind,
    source: &S,
) -> Vec<ObjectRef<K>> {
    let (Some(ns), Some(name)) = (
        source.meta().namespace.as_deref(),
        source.meta().name.as_deref(),
    ) else {
        return Vec::new();
    };
    matching(store, |o| {
        o.namespace().as_deref() == Some(ns)
            && o.entry_views().any(|e| {
                let source = match kind {
                    SourceKind::Secret => e.secret,
                    SourceKind::ConfigMap => e.config_map,
                };
                source == Some(name)
            })
    })
}

/// Reasons a credential change may clear: objects failing on them are re-queued first.
const CREDENTIAL_REASONS: [Reason; 5] = [
    Reason::CredentialsUnavailable,
    Reason::ZitadelUnauthenticated,
    Reason::ConnectionNotReady,
    Reason::ConnectionNotFound,
    Reason::ZitadelPermissionDenied,
];

/// Where an object goes in a re-queue after its connection changed: failing on credentials (0),
/// otherwise not Ready (1), Ready (2).
pub fn requeue_rank<K: MetadataResource>(obj: &K) -> u8 {
    let ready = obj.status().and_then(|s| s.condition(status::READY));
    match ready {
        Some(c) if c.status == "True" => 2,
        Some(c) if CREDENTIAL_REASONS.iter().any(|r| *r == c.reason) => 0,
        _ => 1,
    }
}

/// References to the objects in `store` for which `pred` holds, credential failures first.
fn ranked<K: MetadataResource>(store: &Store<K>, pred: impl Fn(&K) -> bool) -> Vec<ObjectRef<K>> {
    let mut found: Vec<(u8, ObjectRef<K>)> = store
        .state()
        .into_iter()
        .filter(|o| pred(o))
        .map(|o| (requeue_rank(o.as_ref()), ObjectRef::from_obj(o.as_ref())))
        .collect();
    found.sort_by_key(|(rank, _)| *rank);
    found.into_iter().map(|(_, r)| r).collect()
}

/// Objects in `store` whose `connectionRef` names this connection, credential failures first.
pub(super) fn connection_dependents<K: MetadataResource>(
    store: &Store<K>,
    kind: ConnectionKind,
    namespace: Option<&str>,
    name: &str,
) -> Vec<ObjectRef<K>> {
    ranked(store, |o| {
        o.connection_ref()
            .is_some_and(|r| r.kind == kind && r.name == name)
            && (kind == ConnectionKind::ClusterZitadelConnection
                || o.namespace().as_deref() == namespace)
    })
}

/// Objects in `store` using the default connection: those that are not Ready (every one with
/// `all`), credential failures first.
pub(super) fn default_dependents<K: MetadataResource>(
    store: &Store<K>,
    all: bool,
) -> Vec<ObjectRef<K>> {
    ranked(store, |o| {
        o.connection_ref().is_none() && (all || requeue_rank(o) < 2)
    })
}

/// The objects to re-queue whenever the default connection's credential changed.
pub(super) fn default_requeues<K: MetadataResource>(
    store: Store<K>,
    requeues: tokio::sync::watch::Receiver<Requeue>,
) -> impl futures::Stream<Item = ObjectRef<K>> + Send + 'static {
    futures::stream::unfold(requeues, |mut rx| async move {
        rx.changed().await.ok()?;
        let requeue = *rx.borrow_and_update();
        Some((requeue, rx))
    })
    .flat_map(move |requeue| futures::stream::iter(default_dependents(&store, requeue.all)))
}

/// What of a connection its objects' reconciles depend on: its generation, the generation and
/// outcome of its last probe (`Ready`, whether it waits for ZITADEL) and the Secret versions it
/// was built from. Anything else — the `Terminating` message counting users, `heldSources`,
/// finalizers — re-syncs nobody (with a user count in the message, every object deleted would
/// otherwise re-sync all others).
pub fn connection_fingerprint(generation: Option<i64>, status: Option<&ConnectionStatus>) -> u64 {
    let mut hasher = DefaultHasher::new();
    generation.hash(&mut hasher);
    if let Some(s) = status {
        s.observed_generation.hash(&mut hasher);
        s.observed_secret_versions.hash(&mut hasher);
        for type_ in [status::READY, status::RECONCILING] {
            status::find(&s.conditions, type_)
                .map(|c| (&c.status, &c.reason, &c.message))
                .hash(&mut hasher);
        }
    }
    hasher.finish()
}

/// The connections of a watch stream whose [`connection_fingerprint`] changed, and the deleted
/// ones.
pub(super) fn connection_changes<C>(
    events: impl futures::Stream<Item = Result<watcher::Event<C>, watcher::Error>> + Send + 'static,
    status_of: fn(&C) -> Option<&ConnectionStatus>,
) -> impl futures::Stream<Item = Result<C, watcher::Error>> + Send + 'static
where
    C: Resource + Clone + Send + 'static,
{
    let mut seen: HashMap<(Option<String>, String), u64> = HashMap::new();
    events.flat_map(move |event| {
        let changed: Vec<Result<C, watcher::Error>> = match event {
            Err(e) => vec![Err(e)],
            Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => {
                let key = (c.namespace(), c.name_any());
                let fingerprint = connection_fingerprint(c.meta().generation, status_of(&c));
                if seen.insert(key, fingerprint) == Some(fingerprint) {
                    vec![]
                } else {
                    vec![Ok(c)]
                }
            }
            Ok(watcher::Event::Delete(c)) => {
                seen.remove(&(c.namespace(), c.name_any()));
                vec![Ok(c)]
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => vec![],
        };
        futures::stream::iter(changed)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn credential_failures_are_requeued_first_and_ready_objects_last() {
        use crate::crd::OrgMetadata;
        let org = |ready: Option<(&str, Reason)>| -> OrgMetadata {
            let now = Time(k8s_openapi::jiff::Timestamp::now());
            let conditions: Vec<_> = ready
                .map(|(state, reason)| {
                    status::condition(&[], status::READY, state, reason, "m", Some(1), &now)
                })
                .into_iter()
                .collect();
            serde_json::from_value(serde_json::json!({
                "apiVersion": "metadata.zitadel-operator.dev/v1alpha1", "kind": "OrgMetadata",
                "metadata": {"name": "a", "namespace": "t"},
                "spec": {"organizationId": "1", "metadata": []},
                "status": {"conditions": conditions},
            }))
            .expect("OrgMetadata")
        };
        assert_eq!(
            requeue_rank(&org(Some(("False", Reason::ZitadelUnauthenticated)))),
            0
        );
        assert_eq!(
            requeue_rank(&org(Some(("False", Reason::CredentialsUnavailable)))),
            0
        );
        assert_eq!(
            requeue_rank(&org(Some(("False", Reason::ConnectionNotReady)))),
            0
        );
        assert_eq!(requeue_rank(&org(Some(("False", Reason::KeyConflict)))), 1);
        assert_eq!(requeue_rank(&org(None)), 1);
        assert_eq!(requeue_rank(&org(Some(("True", Reason::Synced)))), 2);
        // As the caches hold them: the conditions' status and reason stay in place.
        for (state, reason, rank) in [
            ("False", Reason::ZitadelUnauthenticated, 0),
            ("False", Reason::KeyConflict, 1),
            ("True", Reason::Synced, 2),
        ] {
            let mut packed = org(Some((state, reason)));
            packed.pack();
            assert!(packed.is_packed());
            assert_eq!(requeue_rank(&packed), rank, "{reason:?}");
        }
    }

    #[test]
    fn only_what_objects_depend_on_changes_a_connection_fingerprint() {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let cond = |type_: &str, state: &str, message: &str| {
            status::condition(
                &[],
                type_,
                state,
                crate::reason::Reason::Connected,
                message,
                Some(1),
                &now,
            )
        };
        let ready = ConnectionStatus {
            observed_generation: Some(1),
            observed_secret_versions: vec!["Secret/t/pat@1".into()],
            conditions: vec![cond(status::READY, "True", "ok")],
            ..Default::default()
        };
        let base = connection_fingerprint(Some(1), Some(&ready));
        let mut in_use = ready.clone();
        in_use.held_sources = vec!["Secret/t/pat".into()];
        in_use
            .conditions
            .push(cond(status::TERMINATING, "True", "3 objects"));
        assert_eq!(connection_fingerprint(Some(1), Some(&in_use)), base);
        let mut rotated = ready.clone();
        rotated.observed_secret_versions = vec!["Secret/t/pat@2".into()];
        assert_ne!(connection_fingerprint(Some(1), Some(&rotated)), base);
        let mut failed = ready.clone();
        failed.conditions = vec![cond(status::READY, "False", "401")];
        assert_ne!(connection_fingerprint(Some(1), Some(&failed)), base);
        assert_ne!(connection_fingerprint(Some(2), Some(&ready)), base);
    }

    #[test]
    fn watch_backoff_is_short_capped_and_resets() {
        use kube::runtime::utils::Backoff as _;
        assert_eq!(WatchBackoff::delay(1), Duration::from_millis(250));
        assert_eq!(WatchBackoff::delay(3), Duration::from_secs(1));
        assert_eq!(WatchBackoff::delay(6), WatchBackoff::MAX);
        assert_eq!(WatchBackoff::delay(u32::MAX), WatchBackoff::MAX);
        let mut backoff = WatchBackoff::default();
        let delays: Vec<Duration> = backoff.by_ref().take(20).collect();
        assert!(delays.iter().all(|d| *d <= WatchBackoff::MAX.mul_f64(1.2)));
        assert!(delays[0] <= Duration::from_millis(300));
        backoff.reset();
        assert!(backoff.next().expect("endless") <= Duration::from_millis(300));
    }
}
