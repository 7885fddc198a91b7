//! Assembly: one kube-runtime [`Controller`] per kind and watched namespace, with the watches
//! that re-sync dependents, plus the connection controllers; run until shutdown.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Predicate, PredicateConfig, WatchStreamExt, predicates};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::mpsc;

use super::default_connection::{self, FlagCredentials, Requeue};
use super::drift::{DriftHub, Route, Routed};
use super::finalizers::{Finalizers, Held, KubeFinalizers};
use super::index::TargetIndex;
use super::instrument::{count_conditions, error_policy, reconcile_instrumented};
use super::metadata::claims;
use super::usage::UsageIndex;
use super::watches::{
    NoTriggerBackoff, connection_changes, connection_dependents, default_requeues, dependents,
    scoped_api, watch, watch_selected,
};
use super::{Context, LAST_APPLIED, Settings, probe, token_secret};
use crate::connections::Connections;
use crate::connections::credentials::TokenLocation;
use crate::crd::{
    ClusterZitadelConnection, ConnectionKind, MetadataResource, OrgMetadata, UserMetadata,
    ZitadelConnection,
};
use crate::metrics::Metrics;
use crate::sources::{KubeSources, SourceKind, ValueSources};
use crate::zitadel::ZitadelApi;

/// Where the controllers report to the rest of the process.
#[derive(Clone, Debug, Default)]
pub struct Hooks {
    /// Metrics to record into.
    pub metrics: Arc<Metrics>,
    /// Set once the caches of every controller hold their initial lists (`/readyz`).
    pub caches_synced: Arc<AtomicBool>,
}

/// The operator-wide default connection (single-tenant mode), used by objects without
/// `spec.connectionRef`.
#[derive(Clone)]
pub struct DefaultConnection {
    /// The client.
    pub api: Arc<dyn ZitadelApi>,
    /// Its credential from the flags, followed over its life (missing, rotated, revoked) and,
    /// for `--token-secret`, held with a finalizer while objects use the default connection.
    /// `None`: a fixed token (tests).
    pub credentials: Option<FlagCredentials>,
}

impl From<Arc<dyn ZitadelApi>> for DefaultConnection {
    fn from(api: Arc<dyn ZitadelApi>) -> Self {
        Self {
            api,
            credentials: None,
        }
    }
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

impl Namespaces {
    /// One scope per watch: `None` for all namespaces.
    pub(super) fn scopes(&self) -> Vec<Option<String>> {
        match self {
            Namespaces::All => vec![None],
            Namespaces::Only(list) => list.iter().cloned().map(Some).collect(),
        }
    }
}

/// The controller of kind `K` for one watch scope, with its trigger stream (which also feeds the
/// target index) and the watches that re-sync dependents of Secrets, ConfigMaps and connections.
fn kind_controller<K>(
    client: &Client,
    scope: Option<String>,
    targets: &TargetIndex,
    usage: &UsageIndex,
    settings: &Settings,
    requeues: &tokio::sync::watch::Receiver<Requeue>,
    drifted: mpsc::UnboundedReceiver<ObjectRef<K>>,
) -> Controller<K>
where
    K: MetadataResource + Resource<DynamicType = ()>,
{
    let api: Api<K> = scoped_api(client, scope.as_deref());
    let (reader, writer) = reflector::store();
    let index = targets.clone();
    let users = usage.clone();
    let watched = scope.clone();
    // Sharded: this process reconciles only the objects its selector matches; the target index
    // and the connections' users are fed by the watch of all objects instead ([`claims_watch`]).
    let sharded = settings.watch_selector.is_some();
    let trigger = watch_selected(api, settings.watch_selector.as_deref())
        // Nothing reads managedFields (three quarters of the cache's memory) or kubectl's copy of
        // the last applied object.
        .modify(strip_meta::<K>)
        .inspect_ok(move |event| {
            if !sharded {
                index.observe(watched.as_deref(), event, claims::identity::<K>);
                users.observe(watched.as_deref(), event);
            }
        })
        .reflect(writer)
        .applied_objects()
        // Reconcile on changes of spec (generation; deletion bumps it too), finalizers, labels
        // and annotations — not on the operator's own status writes, which would cost one more
        // ZITADEL read per write. Drift is caught from ZITADEL's event log (`drifted`) or by
        // the periodic resync.
        .predicate_filter(
            predicates::generation
                .combine(predicates::finalizers)
                .combine(predicates::labels)
                .combine(predicates::annotations),
            PredicateConfig::default(),
        );
    let drifted =
        futures::stream::unfold(
            drifted,
            |mut rx| async move { rx.recv().await.map(|r| (r, rx)) },
        );
    let controller = Controller::for_stream(trigger, reader)
        .with_config(controller::Config::default().concurrency(settings.concurrency))
        .trigger_backoff(NoTriggerBackoff)
        .reconcile_on(drifted);
    // Re-sync objects whose valueFrom names a Secret/ConfigMap that changed (metadata-only
    // watches: values are read on reconcile, never cached), and the objects using a connection
    // when what they depend on changes (it becomes Ready, rotates, is deleted).
    let ns = scope.as_deref();
    let secrets: Api<PartialObjectMeta<Secret>> = scoped_api(client, ns);
    let config_maps: Api<PartialObjectMeta<ConfigMap>> = scoped_api(client, ns);
    let connections: Api<ZitadelConnection> = scoped_api(client, ns);
    let cluster_connections: Api<ClusterZitadelConnection> = Api::all(client.clone());
    let store = controller.store();
    let (s1, s2, s3) = (store.clone(), store.clone(), store.clone());
    // A change of the default connection's credential re-queues the objects it can unblock.
    let controller = controller.reconcile_on(default_requeues(store.clone(), requeues.clone()));
    let connections = connection_changes(watch(connections), |c: &ZitadelConnection| {
        c.status.as_ref()
    });
    let cluster_connections = connection_changes(
        watch(cluster_connections),
        |c: &ClusterZitadelConnection| c.status.as_ref(),
    );
    controller
        .watches_stream(connections, move |c| {
            let ns = c.metadata.namespace.as_deref();
            connection_dependents(&s1, ConnectionKind::ZitadelConnection, ns, &c.name_any())
        })
        .watches_stream(cluster_connections, move |c| {
            let kind = ConnectionKind::ClusterZitadelConnection;
            connection_dependents(&s2, kind, None, &c.name_any())
        })
        .watches_stream(watch(secrets).touched_objects(), move |s| {
            dependents(&s3, SourceKind::Secret, &s)
        })
        .watches_stream(watch(config_maps).touched_objects(), move |c| {
            dependents(&store, SourceKind::ConfigMap, &c)
        })
}

/// Drop what nothing reads from a cached object: managedFields (three quarters of the cache's
/// memory) and kubectl's copy of the last applied object.
fn strip_meta<K: MetadataResource>(o: &mut K) {
    let meta = o.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// Sharded (`--watch-label-selector`): a watch of **all** objects of kind `K` in `scope`, whose
/// cache holds only what key claims and connection usage read (targets, keys, status ids and
/// conditions, finalizers; no values), so that a shard still sees the claims of objects other
/// shards reconcile, and connections are not released while another shard's objects use them.
/// Feeds the target index and the usage index. Returns the cache and the stream to drive.
fn claims_watch<K: MetadataResource + Resource<DynamicType = ()>>(
    client: &Client,
    scope: Option<String>,
    targets: &TargetIndex,
    usage: &UsageIndex,
) -> (Store<K>, futures::future::BoxFuture<'static, ()>) {
    let api: Api<K> = scoped_api(client, scope.as_deref());
    let (reader, writer) = reflector::store();
    let (index, users) = (targets.clone(), usage.clone());
    let drive = watch(api)
        .modify(|o: &mut K| {
            strip_meta(o);
            for entry in o.entries_mut() {
                entry.value = None;
                entry.binary_value = None;
                entry.value_from = None;
            }
        })
        .inspect_ok(move |event| {
            index.observe(scope.as_deref(), event, claims::identity::<K>);
            users.observe(scope.as_deref(), event);
        })
        .reflect(writer)
        .for_each(|_| futures::future::ready(()))
        .boxed();
    (reader, drive)
}

/// What [`run_kind`] needs besides the kind.
pub struct KindParts {
    /// Kubernetes client.
    pub client: Client,
    /// Resolves objects' connections.
    pub connections: Arc<Connections>,
    /// Reads `valueFrom` sources.
    pub sources: Arc<dyn ValueSources>,
    /// Timing knobs.
    pub settings: Settings,
    /// Metrics to record into.
    pub metrics: Arc<Metrics>,
    /// Fed with the objects' connections (which objects hold which connection).
    pub usage: UsageIndex,
    /// Ticks when the default connection's credential changed.
    pub requeues: tokio::sync::watch::Receiver<Requeue>,
    /// Event-driven drift detection (triggers, re-check pacing, own writes).
    pub drift: Arc<DriftHub>,
}

/// Build and run the controllers of one kind until `shutdown` resolves; `synced` fires once their
/// caches hold the initial lists.
pub async fn run_kind<K>(
    parts: KindParts,
    namespaces: &Namespaces,
    shutdown: impl Fn() -> Shutdown,
    synced: tokio::sync::oneshot::Sender<()>,
) where
    K: Routed,
{
    let KindParts {
        client,
        connections,
        sources,
        settings,
        metrics,
        usage,
        requeues,
        drift,
    } = parts;
    let targets = TargetIndex::default();
    let mut senders = Vec::new();
    let controllers: Vec<Controller<K>> = namespaces
        .scopes()
        .into_iter()
        .map(|scope| {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push((scope.clone(), tx));
            kind_controller(&client, scope, &targets, &usage, &settings, &requeues, rx)
        })
        .collect();
    metrics.register_controller(K::CONTROLLER, settings.concurrency);
    let stores: Vec<Store<K>> = controllers.iter().map(Controller::store).collect();
    // Key claims are decided over every object, also those other shards reconcile.
    let (claim_stores, claim_watches): (Vec<Store<K>>, Vec<_>) =
        if settings.watch_selector.is_some() {
            namespaces
                .scopes()
                .into_iter()
                .map(|scope| claims_watch::<K>(&client, scope, &targets, &usage))
                .unzip()
        } else {
            (stores.clone(), Vec::new())
        };
    let kind = K::kind(&()).to_string();
    let counted = stores.clone();
    metrics.set_object_counter(&kind, Box::new(move || count_conditions(&counted)));
    drift.register(Route::new(targets.clone(), stores.clone(), senders));
    let ctx = Arc::new(Context::new(
        client,
        drift.recording(connections),
        sources,
        settings,
        claim_stores,
        targets,
        metrics.clone(),
        drift,
    ));
    let runs = controllers.into_iter().map(|c| {
        c.graceful_shutdown_on(shutdown())
            .run(reconcile_instrumented::<K>, error_policy::<K>, ctx.clone())
            .for_each(|result| async move {
                if let Err(e) = result {
                    tracing::debug!(controller = K::CONTROLLER, error = %e, "controller event");
                }
            })
    });
    tokio::select! {
        _ = futures::future::join_all(runs) => {}
        () = report_synced::<K>(stores, synced) => {}
        () = drive_all(claim_watches) => {}
    }
    metrics.clear_object_counter(&kind);
}

/// Drive `watches` (watch streams never end); pending forever when there are none.
async fn drive_all(watches: Vec<futures::future::BoxFuture<'static, ()>>) {
    futures::future::join_all(watches).await;
    futures::future::pending::<()>().await;
}

/// Fire `synced` once every store holds its initial list; never returns (the controllers decide
/// when the kind stops).
async fn report_synced<K: MetadataResource>(
    stores: Vec<Store<K>>,
    synced: tokio::sync::oneshot::Sender<()>,
) {
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
    futures::future::pending::<()>().await;
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
    let hooks = Hooks::default();
    let default = Some(DefaultConnection::from(zitadel));
    run_with(client, default, namespaces, settings, shutdown, hooks).await;
}

/// Run both controllers until `shutdown` resolves, reporting metrics and cache sync to `hooks`.
/// When `shutdown` resolves, no new reconcile starts and the function returns once the running
/// ones finished.
pub async fn run_with(
    client: Client,
    default_connection: Option<DefaultConnection>,
    namespaces: Namespaces,
    settings: Settings,
    shutdown: impl Fn() -> Shutdown + Clone,
    hooks: Hooks,
) {
    let sources: Arc<dyn ValueSources> = Arc::new(KubeSources::new(client.clone()));
    let finalizers: Arc<dyn Finalizers> = Arc::new(KubeFinalizers::new(client.clone()));
    // Fed by one OrgMetadata and one UserMetadata watch per scope.
    let usage = UsageIndex::new(2 * namespaces.scopes().len());
    let credentials = default_connection
        .as_ref()
        .and_then(|d| d.credentials.clone());
    let (requeue_tx, requeues) = tokio::sync::watch::channel(Requeue::default());
    let has_default = default_connection.is_some();
    let connections = Arc::new(Connections::new(
        client.clone(),
        sources.clone(),
        default_connection.map(|d| d.api),
        settings.request_timeout,
    ));
    let drift = DriftHub::new(
        settings.clone(),
        connections.clone(),
        usage.clone(),
        hooks.metrics.clone(),
    );
    if has_default {
        drift.start_default();
    }
    let parts = || KindParts {
        client: client.clone(),
        connections: connections.clone(),
        sources: sources.clone(),
        settings: settings.clone(),
        metrics: hooks.metrics.clone(),
        usage: usage.clone(),
        requeues: requeues.clone(),
        drift: drift.clone(),
    };
    let connection_parts = || probe::ConnectionParts {
        client: client.clone(),
        sources: sources.clone(),
        usage: usage.clone(),
        finalizers: finalizers.clone(),
        settings: settings.clone(),
    };
    let (org_synced, org_rx) = tokio::sync::oneshot::channel();
    let (user_synced, user_rx) = tokio::sync::oneshot::channel();
    let flag = hooks.caches_synced.clone();
    let report = async move {
        if org_rx.await.is_ok() && user_rx.await.is_ok() {
            flag.store(true, Ordering::SeqCst);
        }
    };
    let stop = shutdown.clone();
    let token_secret = credentials.as_ref().and_then(|c| match c.token.location() {
        TokenLocation::Secret {
            namespace, name, ..
        } => Some(Held::source(SourceKind::Secret, namespace, name)),
        TokenLocation::File(_) => None,
    });
    let hold_token = async {
        if let Some(secret) = token_secret {
            let (client, finalizers, usage) = (client.clone(), finalizers.clone(), usage.clone());
            let kicks = requeues.clone();
            let recheck = settings.resync;
            token_secret::run(client, finalizers, usage, secret, recheck, kicks, stop()).await;
        }
    };
    let stop = shutdown.clone();
    let follow_credentials = async {
        if let Some(credentials) = credentials {
            let metrics = hooks.metrics.clone();
            default_connection::run(client.clone(), credentials, metrics, requeue_tx, stop()).await;
        }
    };
    tokio::join!(
        run_kind::<OrgMetadata>(parts(), &namespaces, shutdown.clone(), org_synced),
        run_kind::<UserMetadata>(parts(), &namespaces, shutdown.clone(), user_synced),
        report,
        hold_token,
        follow_credentials,
        probe::run::<ZitadelConnection>(connection_parts(), &namespaces, shutdown.clone()),
        probe::run::<ClusterZitadelConnection>(connection_parts(), &Namespaces::All, shutdown),
    );
    drift.stop();
}
