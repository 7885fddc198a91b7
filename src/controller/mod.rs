//! The controllers: one kube-runtime [`Controller`] per kind (and per watched namespace), sharing a
//! [`Context`] with the ZITADEL client, an event recorder and per-object backoff state.

mod connection;
mod index;
mod reconcile;

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::future::Future;
use std::pin::Pin;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Predicate, PredicateConfig, WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use rand::Rng as _;

use crate::connection::Connections;
use crate::crd::{
    ClusterZitadelConnection, ConnectionKind, MetadataResource, OrgMetadata, UserMetadata,
    ZitadelConnection,
};
use crate::metrics::{ConditionCounts, Metrics, ReconcileResult};
use crate::status::{self, Outcome};
use crate::zitadel::{ZitadelApi, ZitadelError};

pub use reconcile::reconcile;

/// Finalizer that guards removal of managed keys on deletion.
pub const FINALIZER: &str = "metadata.zitadel-operator.dev/cleanup";
/// Field manager for server-side-apply status writes.
pub const FIELD_MANAGER: &str = "zitadel-metadata-operator";
/// kubectl's client-side-apply annotation (a copy of the object), dropped from the caches.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Timing knobs of the reconciler.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Re-check interval of a successful object (drift repair).
    pub resync: Duration,
    /// Re-check interval of an object stalled on a permanent error.
    pub stalled_requeue: Duration,
    /// First retry delay after a transient error; doubles per consecutive failure. Each delay is
    /// jittered by ±20% but never shorter than this.
    pub backoff_base: Duration,
    /// Longest retry delay after transient errors (jitter included; only a longer `Retry-After`
    /// from ZITADEL waits longer).
    pub backoff_max: Duration,
    /// Reconciles running at once per controller.
    pub concurrency: u16,
    /// Timeout of one ZITADEL request (clients built from connections).
    pub request_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            resync: Duration::from_secs(300),
            stalled_requeue: Duration::from_secs(600),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            concurrency: 16,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Errors a reconcile returns to the controller (which then applies [`error_policy`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// ZITADEL failed transiently; retried with backoff.
    #[error(transparent)]
    Zitadel(#[from] ZitadelError),
    /// The Kubernetes API failed.
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    /// The object's connection is not Ready yet for a reason that clears by itself (probe
    /// pending, ZITADEL failing the probe transiently).
    #[error("{0}")]
    ConnectionNotReady(String),
    /// ZITADEL acknowledged a write, but reading back shows other values.
    #[error("read-back after write to {target} does not match for key(s) {keys}")]
    ReadBack {
        /// The target.
        target: String,
        /// The keys that differ.
        keys: String,
    },
    /// Adding/removing the finalizer or a wrapped reconcile error.
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// `Retry-After` from ZITADEL, if the root cause carries one.
    fn retry_after(&self) -> Option<Duration> {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::Zitadel(e) => e.retry_after(),
            Error::Finalizer(inner) => match inner.as_ref() {
                F::ApplyFailed(e) | F::CleanupFailed(e) => e.retry_after(),
                _ => None,
            },
            Error::Kube(_) | Error::ReadBack { .. } | Error::ConnectionNotReady(_) => None,
        }
    }

    /// Whether retrying cannot help (a permanent ZITADEL error): counted as a terminal error.
    fn is_terminal(&self) -> bool {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::Zitadel(e) => !e.is_transient(),
            Error::Finalizer(inner) => {
                matches!(inner.as_ref(), F::ApplyFailed(e) | F::CleanupFailed(e) if e.is_terminal())
            }
            _ => false,
        }
    }
}

/// Shared state of one kind's controllers.
pub struct Context<K: MetadataResource> {
    /// Kubernetes client.
    pub client: Client,
    /// Resolves each object's connection to a ZITADEL client.
    pub connections: Arc<Connections>,
    /// Event recorder.
    pub recorder: Recorder,
    /// Timing knobs.
    pub settings: Settings,
    /// Caches of all watched objects of this kind (one per watched namespace), for conflict
    /// detection.
    pub stores: Vec<Store<K>>,
    /// Objects by target identity, across `stores`.
    targets: index::TargetIndex,
    /// Metrics (reconcile counters and timings are recorded around [`reconcile`]).
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl<K: MetadataResource> Context<K> {
    /// Objects in the caches whose target identity is `identity` (as far as the index knows;
    /// callers re-check each against its cached version).
    fn on_target(&self, identity: &str) -> Vec<Arc<K>> {
        self.targets
            .objects(identity)
            .into_iter()
            .filter_map(|(ns, name)| {
                let reference = ObjectRef::new(&name).within(&ns);
                self.stores.iter().find_map(|s| s.get(&reference))
            })
            .collect()
    }

    fn object_key(obj: &K) -> String {
        format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
    }

    fn reset_failures(&self, obj: &K) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(&Self::object_key(obj));
        }
    }

    fn next_backoff(&self, obj: &K, retry_after: Option<Duration>) -> Duration {
        let attempt = match self.failures.lock() {
            Ok(mut map) => {
                let n = map.entry(Self::object_key(obj)).or_insert(0);
                *n = n.saturating_add(1);
                *n
            }
            Err(_) => 1,
        };
        backoff_delay(
            &self.settings,
            attempt,
            retry_after,
            rand::rng().random_range(0.8..1.2),
        )
    }
}

/// Exponential backoff with jitter (`jitter` is a factor, drawn from 0.8–1.2), kept within
/// `backoff_base..=backoff_max` so that neither bound is broken by the jitter, and at least what
/// `Retry-After` asked for (which may exceed `backoff_max`).
pub fn backoff_delay(
    settings: &Settings,
    attempt: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    let max = settings.backoff_max;
    let exp = settings
        .backoff_base
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(20)))
        .min(max);
    let jittered = if jitter.is_finite() && jitter > 0.0 {
        exp.mul_f64(jitter.min(2.0))
    } else {
        exp
    };
    let delay = jittered.clamp(settings.backoff_base.min(max), max);
    retry_after.map_or(delay, |ra| delay.max(ra))
}

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

/// Called by the controller when [`reconcile`] fails: retry with per-object backoff.
pub fn error_policy<K: MetadataResource>(
    obj: Arc<K>,
    error: &Error,
    ctx: Arc<Context<K>>,
) -> Action {
    let delay = ctx.next_backoff(&obj, error.retry_after());
    tracing::warn!(
        controller = K::CONTROLLER,
        namespace = obj.namespace().unwrap_or_default(),
        name = obj.name_any(),
        error = %error,
        retry_in = ?delay,
        "reconcile failed"
    );
    Action::requeue(delay)
}

tokio::task_local! {
    /// Set by [`note_outcome`] when the running reconcile ended `Stalled`.
    static STALLED: Cell<bool>;
}

/// Record the outcome of the running reconcile for the metrics: a `Stalled` object is a terminal
/// error (retrying alone will not fix it), even though the reconcile returns `Ok`.
pub(crate) fn note_outcome(outcome: &Outcome) {
    if matches!(outcome, Outcome::Stalled { .. }) {
        let _ = STALLED.try_with(|s| s.set(true));
    }
}

/// [`reconcile`] with metrics: active workers, duration, and the result as controller-runtime
/// labels it (`error` for failures and `Stalled` outcomes, `requeue` when the reconcile only added
/// the finalizer, else `success`).
pub async fn reconcile_instrumented<K: MetadataResource>(
    obj: Arc<K>,
    ctx: Arc<Context<K>>,
) -> Result<Action, Error> {
    let metrics = ctx.metrics.clone();
    let _worker = metrics.reconcile_started(K::CONTROLLER);
    let started = Instant::now();
    let adds_finalizer =
        obj.meta().deletion_timestamp.is_none() && !obj.finalizers().iter().any(|f| f == FINALIZER);
    let (result, stalled) = STALLED
        .scope(Cell::new(false), async move {
            let result = reconcile(obj, ctx).await;
            (result, STALLED.with(Cell::get))
        })
        .await;
    let (label, terminal) = match &result {
        Err(e) => (ReconcileResult::Error, e.is_terminal()),
        Ok(_) if stalled => (ReconcileResult::Error, true),
        Ok(_) if adds_finalizer => (ReconcileResult::Requeue, false),
        Ok(_) => (ReconcileResult::Success, false),
    };
    metrics.reconcile_finished(K::CONTROLLER, label, terminal, started.elapsed());
    result
}

/// Ready-condition statuses of the objects in `stores`.
fn count_conditions<K: MetadataResource>(stores: &[Store<K>]) -> ConditionCounts {
    let mut counts = ConditionCounts::default();
    for obj in stores.iter().flat_map(Store::state) {
        counts.add(
            obj.status()
                .and_then(|s| status::find(&s.conditions, status::READY))
                .map(|c| c.status.as_str()),
        );
    }
    counts
}

/// Where the controllers report to the rest of the process.
#[derive(Clone, Debug, Default)]
pub struct Hooks {
    /// Metrics to record into.
    pub metrics: Arc<Metrics>,
    /// Set once the caches of every controller hold their initial lists (`/readyz`).
    pub caches_synced: Arc<AtomicBool>,
}

/// A future that resolves when the operator should stop taking new work.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

/// Which namespaces to watch.
#[derive(Clone, Debug)]
pub enum Namespaces {
    /// Every namespace.
    All,
    /// Only these.
    Only(Vec<String>),
}

/// Build and run the controllers of one kind until `shutdown` resolves; `synced` fires once their
/// caches hold the initial lists.
pub async fn run_kind<K>(
    client: Client,
    connections: Arc<Connections>,
    namespaces: &Namespaces,
    settings: Settings,
    shutdown: impl Fn() -> Shutdown,
    metrics: Arc<Metrics>,
    synced: tokio::sync::oneshot::Sender<()>,
) where
    K: MetadataResource + Resource<DynamicType = ()>,
{
    let apis: Vec<Api<K>> = match namespaces {
        Namespaces::All => vec![Api::all(client.clone())],
        Namespaces::Only(list) => list
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect(),
    };
    let namespaces_list: Vec<Option<String>> = match namespaces {
        Namespaces::All => vec![None],
        Namespaces::Only(list) => list.iter().cloned().map(Some).collect(),
    };
    let targets = index::TargetIndex::default();
    let controllers: Vec<Controller<K>> = apis
        .into_iter()
        .zip(namespaces_list)
        .map(|(api, ns)| {
            let (reader, writer) = reflector::store();
            let (index, scope) = (targets.clone(), ns.clone());
            let trigger = watch(api)
                // Nothing reads managedFields (three quarters of the cache's memory) or kubectl's
                // copy of the last applied object.
                .modify(|o: &mut K| {
                    let meta = o.meta_mut();
                    meta.managed_fields = None;
                    if let Some(annotations) = meta.annotations.as_mut() {
                        annotations.remove(LAST_APPLIED);
                    }
                })
                .inspect_ok(move |event| {
                    index.observe(scope.as_deref(), event, reconcile::identity::<K>)
                })
                .reflect(writer)
                .applied_objects()
                // Reconcile on changes of spec (generation; deletion bumps it too), finalizers,
                // labels and annotations — not on the operator's own status writes, which would
                // cost one more ZITADEL read per write. Drift is caught by the periodic resync.
                .predicate_filter(
                    predicates::generation
                        .combine(predicates::finalizers)
                        .combine(predicates::labels)
                        .combine(predicates::annotations),
                    PredicateConfig::default(),
                );
            let controller = Controller::for_stream(trigger, reader)
                .with_config(controller::Config::default().concurrency(settings.concurrency))
                .trigger_backoff(NoTriggerBackoff);
            // Re-sync objects whose valueFrom names a Secret/ConfigMap that changed (metadata-only
            // watches: values are read on reconcile, never cached).
            let secrets: Api<PartialObjectMeta<Secret>> = scoped_api(&client, ns.as_deref());
            let config_maps: Api<PartialObjectMeta<ConfigMap>> = scoped_api(&client, ns.as_deref());
            let store = controller.store();
            let store2 = controller.store();
            let store3 = controller.store();
            let store4 = controller.store();
            let connections: Api<ZitadelConnection> = scoped_api(&client, ns.as_deref());
            let cluster_connections: Api<ClusterZitadelConnection> = Api::all(client.clone());
            controller
                // Re-sync the objects using a connection when it changes (becomes Ready, rotates).
                .watches_stream(watch(connections).touched_objects(), move |c| {
                    connection_dependents(
                        &store3,
                        ConnectionKind::ZitadelConnection,
                        c.metadata.namespace.as_deref(),
                        &c.name_any(),
                    )
                })
                .watches_stream(watch(cluster_connections).touched_objects(), move |c| {
                    connection_dependents(
                        &store4,
                        ConnectionKind::ClusterZitadelConnection,
                        None,
                        &c.name_any(),
                    )
                })
                .watches_stream(watch(secrets).touched_objects(), move |s| {
                    dependents(&store, SourceKind::Secret, &s)
                })
                .watches_stream(watch(config_maps).touched_objects(), move |c| {
                    dependents(&store2, SourceKind::ConfigMap, &c)
                })
        })
        .collect();
    metrics.register_controller(K::CONTROLLER, settings.concurrency);
    let stores: Vec<Store<K>> = controllers.iter().map(Controller::store).collect();
    let kind = K::kind(&()).to_string();
    let counted = stores.clone();
    metrics.set_object_counter(&kind, Box::new(move || count_conditions(&counted)));
    let ctx = Arc::new(Context {
        client: client.clone(),
        connections,
        recorder: Recorder::new(client, Reporter::from(FIELD_MANAGER)),
        settings,
        stores: stores.clone(),
        targets,
        metrics: metrics.clone(),
        failures: Mutex::new(HashMap::new()),
    });
    let runs = controllers.into_iter().map(|c| {
        c.graceful_shutdown_on(shutdown())
            .run(reconcile_instrumented::<K>, error_policy::<K>, ctx.clone())
            .for_each(|result| async move {
                if let Err(e) = result {
                    tracing::debug!(controller = K::CONTROLLER, error = %e, "controller event");
                }
            })
    });
    let runs = futures::future::join_all(runs);
    let ready = async move {
        let mut all = true;
        for store in &stores {
            // Err: the controller stopped before its first list; nothing to report then.
            if store.wait_until_ready().await.is_err() {
                all = false;
                break;
            }
        }
        if all {
            tracing::info!(controller = K::CONTROLLER, "caches synced");
            let _ = synced.send(());
        }
        // Never ends: the controllers decide when this kind stops.
        futures::future::pending::<()>().await;
    };
    tokio::select! {
        _ = runs => {}
        () = ready => {}
    }
    metrics.clear_object_counter(&kind);
}

fn scoped_api<R>(client: &Client, ns: Option<&str>) -> Api<R>
where
    R: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Kind of a `valueFrom` source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// A Secret.
    Secret,
    /// A ConfigMap.
    ConfigMap,
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
    store
        .state()
        .into_iter()
        .filter(|o| o.namespace().as_deref() == Some(ns))
        .filter(|o| {
            o.entries().iter().any(|e| {
                e.value_from.as_ref().is_some_and(|v| {
                    let r = match kind {
                        SourceKind::Secret => v.secret_key_ref.as_ref(),
                        SourceKind::ConfigMap => v.config_map_key_ref.as_ref(),
                    };
                    r.is_some_and(|r| r.name == name)
                })
            })
        })
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

/// Objects in `store` whose `connectionRef` names this connection.
fn connection_dependents<K: MetadataResource>(
    store: &Store<K>,
    kind: ConnectionKind,
    namespace: Option<&str>,
    name: &str,
) -> Vec<ObjectRef<K>> {
    store
        .state()
        .into_iter()
        .filter(|o| {
            o.connection_ref()
                .is_some_and(|r| r.kind == kind && r.name == name)
                && (kind == ConnectionKind::ClusterZitadelConnection
                    || o.namespace().as_deref() == namespace)
        })
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

/// Run both controllers until `shutdown` resolves (metrics go to a private registry), with
/// `zitadel` as the default connection.
pub async fn run(
    client: Client,
    zitadel: Arc<dyn ZitadelApi>,
    namespaces: Namespaces,
    settings: Settings,
    shutdown: impl Fn() -> Shutdown + Clone,
) {
    run_with(
        client,
        Some(zitadel),
        namespaces,
        settings,
        shutdown,
        Hooks::default(),
    )
    .await;
}

/// Run both controllers until `shutdown` resolves, reporting metrics and cache sync to `hooks`.
/// When `shutdown` resolves, no new reconcile starts and the function returns once the running
/// ones finished.
pub async fn run_with(
    client: Client,
    default_connection: Option<Arc<dyn ZitadelApi>>,
    namespaces: Namespaces,
    settings: Settings,
    shutdown: impl Fn() -> Shutdown + Clone,
    hooks: Hooks,
) {
    let connections = Arc::new(Connections::new(
        client.clone(),
        default_connection,
        settings.request_timeout,
    ));
    let settings_for_conn = settings.clone();
    let shutdown_for_conn = shutdown.clone();
    let (org_synced, org_rx) = tokio::sync::oneshot::channel();
    let (user_synced, user_rx) = tokio::sync::oneshot::channel();
    let flag = hooks.caches_synced.clone();
    let report = async move {
        if org_rx.await.is_ok() && user_rx.await.is_ok() {
            flag.store(true, Ordering::SeqCst);
        }
    };
    tokio::join!(
        run_kind::<OrgMetadata>(
            client.clone(),
            connections.clone(),
            &namespaces,
            settings.clone(),
            shutdown.clone(),
            hooks.metrics.clone(),
            org_synced,
        ),
        run_kind::<UserMetadata>(
            client.clone(),
            connections,
            &namespaces,
            settings,
            shutdown,
            hooks.metrics.clone(),
            user_synced,
        ),
        report,
        connection::run::<ZitadelConnection>(
            client.clone(),
            &namespaces,
            settings_for_conn.clone(),
            shutdown_for_conn.clone()
        ),
        connection::run::<ClusterZitadelConnection>(
            client,
            &Namespaces::All,
            settings_for_conn,
            shutdown_for_conn
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_honours_retry_after() {
        let s = Settings {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            ..Settings::default()
        };
        assert_eq!(backoff_delay(&s, 1, None, 1.0), Duration::from_secs(1));
        assert_eq!(backoff_delay(&s, 2, None, 1.0), Duration::from_secs(2));
        assert_eq!(backoff_delay(&s, 5, None, 1.0), Duration::from_secs(16));
        assert_eq!(backoff_delay(&s, 30, None, 1.0), Duration::from_secs(60));
        assert_eq!(
            backoff_delay(&s, u32::MAX, None, 1.0),
            Duration::from_secs(60)
        );
        assert_eq!(
            backoff_delay(&s, 1, Some(Duration::from_secs(9)), 1.0),
            Duration::from_secs(9)
        );
        // Jitter never goes below the base nor above the maximum.
        assert_eq!(backoff_delay(&s, 1, None, 0.8), Duration::from_secs(1));
        assert_eq!(backoff_delay(&s, 1, None, 1.2), Duration::from_millis(1200));
        assert_eq!(backoff_delay(&s, 3, None, 0.8), Duration::from_millis(3200));
        assert_eq!(backoff_delay(&s, 30, None, 1.2), Duration::from_secs(60));
        assert_eq!(backoff_delay(&s, 30, None, 0.8), Duration::from_secs(48));
        // Retry-After may exceed the maximum.
        assert_eq!(
            backoff_delay(&s, 30, Some(Duration::from_secs(90)), 0.8),
            Duration::from_secs(90)
        );
    }

    #[test]
    fn jittered_backoff_stays_within_base_and_max() {
        let s = Settings {
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(2),
            ..Settings::default()
        };
        for attempt in 1..40 {
            for step in 0..=40 {
                let jitter = 0.8 + f64::from(step) * 0.01;
                let d = backoff_delay(&s, attempt, None, jitter);
                assert!(
                    (s.backoff_base..=s.backoff_max).contains(&d),
                    "attempt {attempt} jitter {jitter}: {d:?}"
                );
            }
        }
        // A base above the maximum (rejected by the flags) does not panic.
        let odd = Settings {
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(1),
            ..Settings::default()
        };
        assert_eq!(backoff_delay(&odd, 1, None, 1.0), Duration::from_secs(1));
        assert_eq!(
            backoff_delay(&odd, 1, None, f64::NAN),
            Duration::from_secs(1)
        );
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
