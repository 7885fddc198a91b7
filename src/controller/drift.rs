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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::{mpsc, watch};

use super::Settings;
use super::index::TargetIndex;
use super::metadata::claims::identity as claims_identity;
use super::usage::{ConnectionKey, UsageIndex};
use crate::connections::{ConnectionResolver, Connections, DriftSource, Granted, Resolution};
use crate::crd::{ConnectionKind, ConnectionRef, MetadataResource, OrgMetadata, UserMetadata};
use crate::drift::{
    Affected, Cursor, CursorConfig, Detection, Mode, OwnWrites, PageOutcome, Verdict, classify,
    phased_delay, recheck_interval,
};
use crate::metrics::Metrics;
use crate::zitadel::{
    ApiSelection, Event, EventQuery, Existence, Found, Listing, MetadataMap, ObjectDetails,
    OrgQuery, Relevant, Target, UserQuery, ZitadelApi, ZitadelError,
};

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

    fn get(&self, ns: &str, name: &str) -> Option<Arc<K>> {
        let reference = ObjectRef::new(name).within(ns);
        self.stores.iter().find_map(|s| s.get(&reference))
    }

    /// Whether this process watches the object `ns/name`.
    fn holds(&self, ns: &str, name: &str) -> bool {
        self.get(ns, name).is_some()
    }

    /// Trigger a reconcile of `obj`; false when its controller is gone.
    fn send(&self, obj: &K) -> bool {
        let ns = obj.namespace().unwrap_or_default();
        let reference = ObjectRef::from_obj(obj);
        self.senders
            .iter()
            .find(|(scope, _)| scope.as_deref().is_none_or(|s| s == ns))
            .is_some_and(|(_, tx)| tx.send(reference).is_ok())
    }

    /// Objects of `key` on the target `identity` (`org/ID` or `user/ID`).
    fn on_target(&self, key: &ConnectionKey, identity: &str) -> Vec<Arc<K>> {
        self.targets
            .objects(identity)
            .into_iter()
            .filter_map(|(ns, name)| self.get(&ns, &name))
            .filter(|o| claims_identity(o.as_ref()) == identity && uses(o.as_ref(), key))
            .collect()
    }

    /// Every object of `key` for which `pred` holds (a scan: only for rare events).
    fn all(&self, key: &ConnectionKey, pred: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        self.stores
            .iter()
            .flat_map(Store::state)
            .filter(|o| uses(o.as_ref(), key) && pred(o))
            .collect()
    }
}

fn uses<K: MetadataResource>(obj: &K, key: &ConnectionKey) -> bool {
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

fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
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

    /// When an object of `key` with the stable id `uid` is re-checked after a successful
    /// sync: at its phase of the resync interval (Polling) or of the safety net (Events).
    pub fn recheck_delay(&self, key: &ConnectionKey, uid: &str) -> Duration {
        let interval = recheck_interval(
            self.mode(key),
            self.settings.resync,
            self.settings.drift.events_resync,
        );
        phased_delay(interval, uid, since_epoch())
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

/// The organization a UserMetadata's user belongs to, as far as known.
fn user_org(u: &UserMetadata) -> Option<String> {
    u.status
        .as_ref()
        .and_then(|s| s.organization_id.clone())
        .or_else(|| u.spec.organization_id.clone())
}

/// What one round of a poller saw of its connection.
enum Source {
    /// Events may be read with this client.
    Events {
        source: DriftSource,
        interval: Duration,
    },
    /// Polling, and why.
    Polling(String),
}

async fn source_of(hub: &DriftHub, key: &ConnectionKey) -> Source {
    let (ns, reference) = reference_of(key);
    match hub.connections.drift_source(&ns, reference.as_ref()).await {
        Err(refusal) => Source::Polling(refusal.to_string()),
        Ok(source) => match (&source.status, key) {
            (None, ConnectionKey::Default) => {
                if hub.settings.drift.detection == Detection::Polling {
                    Source::Polling("--drift-detection polling".into())
                } else {
                    Source::Events {
                        source,
                        interval: hub.settings.drift.event_poll_interval,
                    }
                }
            }
            (Some(status), _) if status.mode == Mode::Events.as_str() => {
                let interval = status
                    .event_poll_interval
                    .as_deref()
                    .and_then(|d| humantime::parse_duration(d).ok())
                    .unwrap_or(hub.settings.drift.event_poll_interval);
                Source::Events { source, interval }
            }
            (Some(status), _) => Source::Polling(status.message.clone()),
            (None, _) => Source::Polling("the connection was not probed for events yet".into()),
        },
    }
}

/// One poller per connection: every interval, read the new events and re-sync what they
/// affect. Ends when the hub is gone or stopped, or no local object uses the connection.
async fn run_poller(
    hub: Weak<DriftHub>,
    key: ConnectionKey,
    poller: Arc<Poller>,
    mut stop: watch::Receiver<bool>,
) {
    let config = CursorConfig::default();
    let mut cursor = Cursor::new(config);
    // The client the cursor belongs to (a new client: the credentials changed; start over).
    let mut client: Option<Arc<dyn ZitadelApi>> = None;
    // Events refused with this client: not asked again before this (or a new client).
    let mut denied_until: Option<Instant> = None;
    // Consecutive failed rounds (only the first is a warning).
    let mut failures = 0u32;
    let mut idle = 0u32;
    loop {
        let Some(strong) = hub.upgrade() else { return };
        let source = source_of(&strong, &key).await;
        let wait = match source {
            Source::Polling(why) => {
                cursor = Cursor::new(config);
                client = None;
                denied_until = None;
                strong.decided(&key, &poller, State::Polling, &why);
                strong.settings.drift.event_poll_interval
            }
            Source::Events { source, interval } => {
                *lock(&poller.interval) = interval;
                let same = client.as_ref().is_some_and(|c| Arc::ptr_eq(c, &source.api));
                if !same {
                    cursor = Cursor::new(config);
                    client = Some(source.api.clone());
                    denied_until = None;
                }
                if denied_until.is_none_or(|t| Instant::now() >= t) {
                    let outcome =
                        poll_round(&strong, &key, &poller, source.api.as_ref(), &mut cursor).await;
                    match outcome {
                        Ok(()) => failures = 0,
                        Err(e) if e.is_permission() || e.is_route_missing() => {
                            // Credentials may change (a rotated token): ask again after a resync
                            // interval.
                            denied_until = Some(Instant::now() + strong.settings.resync);
                            cursor = Cursor::new(config);
                            let why = format!("the event log cannot be read ({})", e.reason());
                            strong.decided(&key, &poller, State::Polling, &why);
                        }
                        Err(e) => {
                            strong.metrics.drift_poll("error");
                            failures += 1;
                            if failures == 1 {
                                tracing::warn!(connection = %key, error = %e, "reading ZITADEL's event log failed; retrying every poll interval");
                            } else {
                                tracing::debug!(connection = %key, error = %e, failures, "reading ZITADEL's event log failed again");
                            }
                            if !cursor.is_ready() {
                                strong.decided(
                                    &key,
                                    &poller,
                                    State::Polling,
                                    "the event log could not be read yet",
                                );
                            } else {
                                let _ = poller.ready.send_replace(true);
                                strong.publish_modes();
                            }
                        }
                    }
                }
                interval
            }
        };
        lock(&poller.own).prune(Instant::now());
        if strong.in_use_locally(&key) {
            idle = 0;
        } else {
            idle += 1;
        }
        if idle >= 2 {
            let mut pollers = lock(&strong.pollers);
            if pollers.get(&key).is_some_and(|p| Arc::ptr_eq(p, &poller)) {
                pollers.remove(&key);
            }
            drop(pollers);
            strong.publish_modes();
            tracing::debug!(connection = %key, "no object uses the connection: its drift poller stops");
            return;
        }
        drop(strong);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// One round: bootstrap the cursor, or read everything new, classify and dispatch.
async fn poll_round(
    hub: &DriftHub,
    key: &ConnectionKey,
    poller: &Poller,
    api: &dyn ZitadelApi,
    cursor: &mut Cursor,
) -> Result<(), ZitadelError> {
    if !cursor.is_ready() {
        let newest = api.list_events(&Cursor::bootstrap_query()).await?;
        cursor.bootstrapped(newest.first());
        hub.metrics.drift_poll("ok");
        hub.decided(
            key,
            poller,
            State::Events(Instant::now()),
            "the credentials may read events",
        );
        return Ok(());
    }
    let mut query = cursor.start();
    let mut fresh: Vec<Event> = Vec::new();
    let mut stuck = false;
    loop {
        let page = match api.list_events(&query).await {
            Ok(page) => page,
            Err(e) if e.is_too_large() => match cursor.too_large(&query) {
                Some(smaller) => {
                    query = smaller;
                    continue;
                }
                None => return Err(e),
            },
            Err(e) => return Err(e),
        };
        match cursor.page(&query, page) {
            PageOutcome::Next { fresh: f, next } => {
                fresh.extend(f);
                match next {
                    Some(n) => query = n,
                    None => break,
                }
            }
            PageOutcome::Stuck { fresh: f, at } => {
                fresh.extend(f);
                tracing::warn!(connection = %key, at = %at, "more events share one timestamp than ZITADEL returns at once: re-syncing every object of the connection");
                stuck = true;
                break;
            }
        }
    }
    hub.metrics.drift_poll("ok");
    *lock(&poller.found) = State::Events(Instant::now());
    let _ = poller.ready.send_replace(true);
    let caller = api.caller_id();
    let now = Instant::now();
    let mut affected = BTreeSet::new();
    {
        let mut own = lock(&poller.own);
        for e in &fresh {
            match classify(e, caller.as_deref(), &mut own, now) {
                Verdict::Own => hub.metrics.drift_event("own"),
                Verdict::Ignored => hub.metrics.drift_event("ignored"),
                Verdict::Affects(a) => {
                    hub.metrics.drift_event("drift");
                    tracing::debug!(connection = %key, event = %e.event_type, aggregate = %e.aggregate_id, editor = %e.editor, "drift event");
                    affected.insert(a);
                }
            }
        }
    }
    let triggered = if stuck {
        hub.dispatch_all(key)
    } else {
        hub.dispatch(key, &affected)
    };
    if triggered > 0 {
        hub.metrics.drift_triggered(triggered);
        tracing::info!(connection = %key, events = fresh.len(), objects = triggered, "changes made in ZITADEL: re-syncing the objects they affect");
    }
    hub.publish_modes();
    Ok(())
}

/// A resolver that hands out clients recording their writes (for own-write recognition).
struct RecordingResolver {
    inner: Arc<dyn ConnectionResolver>,
    hub: Arc<DriftHub>,
}

#[async_trait::async_trait]
impl ConnectionResolver for RecordingResolver {
    async fn for_object(&self, ns: &str, reference: Option<&ConnectionRef>) -> Resolution {
        let granted = self.inner.for_object(ns, reference).await?;
        let key = ConnectionKey::of_ref(ns, reference);
        let Some(poller) = self.hub.running(&key) else {
            return Ok(granted);
        };
        Ok(Granted {
            api: Arc::new(Recording {
                inner: granted.api,
                poller,
            }),
            ..granted
        })
    }
}

/// A client that records its writes in the connection's [`OwnWrites`] (in Events mode) before
/// sending them.
struct Recording {
    inner: Arc<dyn ZitadelApi>,
    poller: Arc<Poller>,
}

#[async_trait::async_trait]
impl ZitadelApi for Recording {
    async fn list_metadata(&self, target: &Target) -> Result<MetadataMap, ZitadelError> {
        self.inner.list_metadata(target).await
    }

    async fn list_metadata_for(
        &self,
        target: &Target,
        relevant: Relevant<'_>,
    ) -> Result<Listing, ZitadelError> {
        self.inner.list_metadata_for(target, relevant).await
    }

    async fn bulk_set_metadata(
        &self,
        target: &Target,
        entries: &[(&str, &[u8])],
    ) -> Result<ObjectDetails, ZitadelError> {
        if self.poller.in_events_mode() {
            let now = Instant::now();
            let mut own = lock(&self.poller.own);
            for (k, v) in entries {
                own.set(target, k, v, now);
            }
        }
        self.inner.bulk_set_metadata(target, entries).await
    }

    async fn bulk_remove_metadata(
        &self,
        target: &Target,
        keys: &[&str],
    ) -> Result<ObjectDetails, ZitadelError> {
        if self.poller.in_events_mode() {
            let now = Instant::now();
            let mut own = lock(&self.poller.own);
            for k in keys {
                own.removed(target, k, now);
            }
        }
        self.inner.bulk_remove_metadata(target, keys).await
    }

    async fn user_organization(&self, user_id: &str) -> Result<String, ZitadelError> {
        self.inner.user_organization(user_id).await
    }

    async fn find_organizations(&self, query: &OrgQuery) -> Result<Vec<Found>, ZitadelError> {
        self.inner.find_organizations(query).await
    }

    async fn find_users(&self, query: &UserQuery) -> Result<Vec<Found>, ZitadelError> {
        self.inner.find_users(query).await
    }

    async fn target_exists(&self, target: &Target) -> Result<Existence, ZitadelError> {
        self.inner.target_exists(target).await
    }

    fn api_selection(&self) -> Option<ApiSelection> {
        self.inner.api_selection()
    }

    async fn list_events(&self, query: &EventQuery) -> Result<Vec<Event>, ZitadelError> {
        self.inner.list_events(query).await
    }

    fn caller_id(&self) -> Option<String> {
        self.inner.caller_id()
    }
}
