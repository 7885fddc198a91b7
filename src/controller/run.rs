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
use super::{Context, LAST_APPLIED, Settings, probe, resync, token_secret};
use crate::connections::Connections;
use crate::connections::credentials::TokenLocation;
use crate::crd::{
    ClusterZitadelConnection, ConnectionKind, MetadataResource, OrgMetadata, UserMetadata,
    ZitadelConnection,
};
use crate::metrics::Metrics;
use crate::sources::{KubeSources, SourceKind, ValueSources};
use crate::zitadel::ZitadelApi;

mod kind;

use kind::*;

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
    // One resync walker per controller, triggering through the same channel as drift events.
    let walkers: Vec<_> = stores
        .iter()
        .zip(&senders)
        .map(|(store, (_, tx))| (store.clone(), tx.clone()))
        .collect();
    let (hub, tick) = (drift.clone(), resync::tick(settings.resync));
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
    let walks = walkers
        .into_iter()
        .map(|(store, tx)| resync::walk(store, tx, hub.clone(), ctx.resyncs.clone(), tick).boxed())
        .collect();
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
        () = drive_all(walks) => {}
    }
    metrics.clear_object_counter(&kind);
}

/// Drive `watches` (watch streams and walkers end only with their controller); pending forever
/// once they all ended.
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

/// Sets `flag` once both kinds' caches hold their initial lists.
async fn report_caches_synced(
    flag: Arc<AtomicBool>,
    org_rx: tokio::sync::oneshot::Receiver<()>,
    user_rx: tokio::sync::oneshot::Receiver<()>,
) {
    if org_rx.await.is_ok() && user_rx.await.is_ok() {
        flag.store(true, Ordering::SeqCst);
    }
}

/// The Secret the default connection's token is read from, if any (held with a finalizer).
fn token_secret_of(credentials: Option<&FlagCredentials>) -> Option<Held> {
    credentials.and_then(|c| match c.token.location() {
        TokenLocation::Secret {
            namespace, name, ..
        } => Some(Held::source(SourceKind::Secret, namespace, name)),
        TokenLocation::File(_) => None,
    })
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
    let report = report_caches_synced(hooks.caches_synced.clone(), org_rx, user_rx);
    let stop = shutdown.clone();
    let token_secret = token_secret_of(credentials.as_ref());
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
