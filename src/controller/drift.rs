//! Event-driven drift detection, per connection: a poller reads the connection's ZITADEL event
//! log every poll interval (one `ListEvents`, paged only when full) and re-syncs exactly the
//! objects whose organization or user changed, through the kind controllers' `reconcile_on`
//! triggers; events the operator's own writes caused trigger nothing. Objects re-list their
//! target only as a slow safety net then. Connections whose credentials may not read events
//! (or set to polling) keep per-object re-listing, spread evenly over the resync interval by a
//! per-object phase.
//!
//! A connection's poller starts with the first reconcile of an object using it, and that
//! reconcile waits for the poller's bootstrap (the server's newest event), so no change made
//! between an object's listing and the cursor's start can slip through. It stops when no object
//! of this process uses the connection any more.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use kube::ResourceExt;
use tokio::sync::watch;

use super::Settings;
use super::usage::{ConnectionKey, UsageIndex};
use crate::connections::{ConnectionResolver, Connections, DriftSource, Granted, Resolution};
use crate::crd::{ConnectionKind, ConnectionRef, MetadataResource, OrgMetadata, UserMetadata};
use crate::drift::{
    Affected, Cursor, CursorConfig, Detection, Mode, OwnWrites, PageOutcome, Verdict, classify,
    recheck_interval,
};
use crate::metrics::Metrics;

mod poll;
mod recording;
mod route;

use crate::zitadel::{
    ApiSelection, Event, EventQuery, Existence, Found, Listing, MetadataMap, ObjectDetails,
    OrgQuery, Relevant, Target, UserQuery, ZitadelApi, ZitadelError,
};
use poll::*;
use recording::*;
pub use route::{Route, Routed};

/// What a poller found about its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not decided yet (first round running).
    Pending,
    /// Polling: no events, or not allowed.
    Polling,
    /// Events read successfully at this time.
    Events(Instant),
}

/// State shared by a connection's poller and the reconciles of its objects.
struct Poller {
    found: Mutex<State>,
    /// The poll interval in use.
    interval: Mutex<Duration>,
    /// The first round is done (mode known).
    ready: watch::Sender<bool>,
    /// Writes the operator made on this connection, recognised in its events.
    own: Mutex<OwnWrites>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Poller {
    fn new(interval: Duration, ttl: Duration) -> Self {
        Self {
            found: Mutex::new(State::Pending),
            interval: Mutex::new(interval),
            ready: watch::channel(false).0,
            own: Mutex::new(OwnWrites::new(ttl)),
        }
    }

    /// Events mode, and the event log was read recently enough that drift is still noticed.
    fn events_live(&self, now: Instant) -> bool {
        let interval = *lock(&self.interval);
        match *lock(&self.found) {
            State::Events(at) => {
                now.saturating_duration_since(at) <= interval * 3 + Duration::from_secs(60)
            }
            _ => false,
        }
    }

    fn in_events_mode(&self) -> bool {
        matches!(*lock(&self.found), State::Events(_))
    }
}

/// The drift detection of every connection this process's objects use.
pub struct DriftHub {
    settings: Settings,
    connections: Arc<Connections>,
    usage: UsageIndex,
    metrics: Arc<Metrics>,
    org: OnceLock<Route<OrgMetadata>>,
    user: OnceLock<Route<UserMetadata>>,
    pollers: Mutex<HashMap<ConnectionKey, Arc<Poller>>>,
    /// Last mode logged per connection (a restarted poller logs only a change).
    logged: Mutex<HashMap<ConnectionKey, Mode>>,
    stop: watch::Sender<bool>,
    me: Weak<DriftHub>,
}

/// `default`, `ZitadelConnection` or `ClusterZitadelConnection` (metric label).
fn kind_label(key: &ConnectionKey) -> &'static str {
    match key {
        ConnectionKey::Default => "default",
        ConnectionKey::Namespaced { .. } => "ZitadelConnection",
        ConnectionKey::Cluster { .. } => "ClusterZitadelConnection",
    }
}

/// The namespace and `connectionRef` that name `key` (for the resolver).
fn reference_of(key: &ConnectionKey) -> (String, Option<ConnectionRef>) {
    match key {
        ConnectionKey::Default => (String::new(), None),
        ConnectionKey::Namespaced { namespace, name } => (
            namespace.clone(),
            Some(ConnectionRef {
                kind: ConnectionKind::ZitadelConnection,
                name: name.clone(),
            }),
        ),
        ConnectionKey::Cluster { name } => (
            String::new(),
            Some(ConnectionRef {
                kind: ConnectionKind::ClusterZitadelConnection,
                name: name.clone(),
            }),
        ),
    }
}

impl DriftHub {
    /// A hub over the connections' clients; objects' usage tells which connections to poll.
    pub fn new(
        settings: Settings,
        connections: Arc<Connections>,
        usage: UsageIndex,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            settings,
            connections,
            usage,
            metrics,
            org: OnceLock::new(),
            user: OnceLock::new(),
            pollers: Mutex::new(HashMap::new()),
            logged: Mutex::new(HashMap::new()),
            stop: watch::channel(false).0,
            me: me.clone(),
        })
    }

    /// Register the route of kind `K` (once).
    pub fn register<K: Routed>(&self, route: Route<K>) {
        let _ = K::slot(self).set(route);
    }

    /// Stop every poller.
    pub fn stop(&self) {
        let _ = self.stop.send_replace(true);
        lock(&self.pollers).clear();
        self.publish_modes();
    }

    /// Events mode for `key` right now (its poller bootstrapped and read the log recently).
    pub fn mode(&self, key: &ConnectionKey) -> Mode {
        let live = lock(&self.pollers)
            .get(key)
            .is_some_and(|p| p.events_live(Instant::now()));
        if live { Mode::Events } else { Mode::Polling }
    }

    /// How often a synced object of `key` is re-checked right now: the resync interval
    /// (Polling) or the safety net (Events). The kind's resync walker triggers each object at
    /// its phase of this interval.
    pub fn recheck_interval(&self, key: &ConnectionKey) -> Duration {
        recheck_interval(
            self.mode(key),
            self.settings.resync,
            self.settings.drift.events_resync,
        )
    }

    /// Before an object of `key` syncs: make sure the connection's poller runs, and wait
    /// (bounded) until its first round decided the mode — so the cursor starts before the
    /// object's listing.
    pub async fn before_sync(&self, key: &ConnectionKey) {
        let poller = self.poller(key);
        let mut ready = poller.ready.subscribe();
        let bound = self.settings.request_timeout * 2 + Duration::from_secs(1);
        let _ = tokio::time::timeout(bound, ready.wait_for(|r| *r)).await;
    }

    /// The poller of `key`, started if none runs.
    fn poller(&self, key: &ConnectionKey) -> Arc<Poller> {
        let mut pollers = lock(&self.pollers);
        if let Some(p) = pollers.get(key) {
            return p.clone();
        }
        let interval = self.settings.drift.event_poll_interval;
        let ttl = (interval * 4).max(Duration::from_secs(600));
        let poller = Arc::new(Poller::new(interval, ttl));
        pollers.insert(key.clone(), poller.clone());
        if let Some(hub) = self.me.upgrade() {
            tokio::spawn(run_poller(
                Arc::downgrade(&hub),
                key.clone(),
                poller.clone(),
                self.stop.subscribe(),
            ));
        }
        poller
    }

    /// The poller of `key` if one runs.
    fn running(&self, key: &ConnectionKey) -> Option<Arc<Poller>> {
        lock(&self.pollers).get(key).cloned()
    }

    /// Start the default connection's poller now (its mode is logged at startup).
    pub fn start_default(&self) {
        let _ = self.poller(&ConnectionKey::Default);
    }

    /// Whether an object this process watches uses `key`.
    fn in_use_locally(&self, key: &ConnectionKey) -> bool {
        self.usage.users(key).iter().any(|u| match u.kind {
            "OrgMetadata" => self
                .org
                .get()
                .is_some_and(|r| r.holds(&u.namespace, &u.name)),
            _ => self
                .user
                .get()
                .is_some_and(|r| r.holds(&u.namespace, &u.name)),
        })
    }

    /// `zitadel_drift_detection_mode{connection_kind, mode}` from the running pollers.
    fn publish_modes(&self) {
        let mut counts: HashMap<(&'static str, Mode), i64> = HashMap::new();
        let now = Instant::now();
        for (key, poller) in lock(&self.pollers).iter() {
            if *lock(&poller.found) == State::Pending {
                continue;
            }
            let mode = if poller.events_live(now) {
                Mode::Events
            } else {
                Mode::Polling
            };
            *counts.entry((kind_label(key), mode)).or_default() += 1;
        }
        for kind in ["default", "ZitadelConnection", "ClusterZitadelConnection"] {
            for mode in [Mode::Events, Mode::Polling] {
                let n = counts.get(&(kind, mode)).copied().unwrap_or(0);
                self.metrics.drift_detection_mode(kind, mode.as_str(), n);
            }
        }
    }

    /// Record (and log, when it changed) the mode a poller decided.
    fn decided(&self, key: &ConnectionKey, poller: &Poller, found: State, why: &str) {
        *lock(&poller.found) = found;
        let _ = poller.ready.send_replace(true);
        let mode = if matches!(found, State::Events(_)) {
            Mode::Events
        } else {
            Mode::Polling
        };
        let previous = lock(&self.logged).insert(key.clone(), mode);
        if previous != Some(mode) {
            let interval = *lock(&poller.interval);
            match mode {
                Mode::Events => tracing::info!(
                    connection = %key,
                    mode = %mode,
                    poll_interval = ?interval,
                    safety_net = ?recheck_interval(mode, self.settings.resync, self.settings.drift.events_resync),
                    "drift detection: reading ZITADEL's event log"
                ),
                Mode::Polling => tracing::info!(
                    connection = %key,
                    mode = %mode,
                    resync = ?self.settings.resync,
                    why,
                    "drift detection: each object re-lists its target"
                ),
            }
        }
        self.publish_modes();
    }

    /// Re-sync the objects of `key` that `affected` names; returns how many were triggered.
    fn dispatch(&self, key: &ConnectionKey, affected: &BTreeSet<Affected>) -> usize {
        let mut sent = 0;
        let (Some(org), Some(user)) = (self.org.get(), self.user.get()) else {
            return 0;
        };
        let mut orgs: Vec<Arc<OrgMetadata>> = Vec::new();
        let mut users: Vec<Arc<UserMetadata>> = Vec::new();
        for a in affected {
            match a {
                Affected::Org(id) => orgs.extend(org.on_target(key, &format!("org/{id}"))),
                Affected::User(id) => users.extend(user.on_target(key, &format!("user/{id}"))),
                Affected::OrgGone(id) => {
                    orgs.extend(org.on_target(key, &format!("org/{id}")));
                    users.extend(user.all(key, |u| user_org(u).as_deref() == Some(id)));
                }
            }
        }
        for o in &orgs {
            sent += usize::from(org.send(o));
        }
        for u in &users {
            sent += usize::from(user.send(u));
        }
        sent
    }

    /// Re-sync every object of `key` (events may have been lost).
    fn dispatch_all(&self, key: &ConnectionKey) -> usize {
        let mut sent = 0;
        if let Some(org) = self.org.get() {
            for o in org.all(key, |_| true) {
                sent += usize::from(org.send(&o));
            }
        }
        if let Some(user) = self.user.get() {
            for u in user.all(key, |_| true) {
                sent += usize::from(user.send(&u));
            }
        }
        sent
    }

    /// Wrap a resolver so that the writes of objects in Events mode are recorded.
    pub fn recording(
        self: &Arc<Self>,
        inner: Arc<dyn ConnectionResolver>,
    ) -> Arc<dyn ConnectionResolver> {
        Arc::new(RecordingResolver {
            inner,
            hub: self.clone(),
        })
    }
}
