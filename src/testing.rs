//! In-memory fakes of the reconciler's I/O, for unit tests: a ZITADEL that keeps metadata in
//! maps and fails on request, Secrets/ConfigMaps, a connection table, neighbours and a report
//! that records what would have been written.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::connections::{AllowedOrgs, ConnectionResolver, Granted, Refusal, Resolution};
use crate::controller::Settings;
use crate::controller::finalizers::{Finalizers, Held, Presence};
use crate::controller::metadata::{Io, Neighbours, Notice, Report};
use crate::crd::{ConnectionRef, MetadataResource, MetadataStatus};
use crate::sources::{Lookup, SourceKind, SourceObject, ValueSources};
use crate::zitadel::{
    Existence, Found, Listing, MetadataMap, ObjectDetails, OrgQuery, Relevant, Target, UserQuery,
    ZitadelApi, ZitadelError,
};

mod zitadel;

pub use zitadel::{FakeZitadel, Op};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A Kubernetes API failure, as a client would see it.
pub fn kube_error(code: u16) -> kube::Error {
    kube::Error::Api(
        kube::core::Status::failure("the server is on fire", "InternalError")
            .with_code(code)
            .boxed(),
    )
}

/// Secrets and ConfigMaps in memory.
#[derive(Default)]
pub struct FakeSources {
    objects: Mutex<BTreeMap<(SourceKind, String, String), SourceObject>>,
    failing: Mutex<bool>,
}

impl FakeSources {
    fn put(&self, kind: SourceKind, ns: &str, name: &str, key: &str, value: &[u8]) {
        let mut objects = lock(&self.objects);
        let object = objects.entry((kind, ns.into(), name.into())).or_default();
        let version = object
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        object.resource_version = Some((version + 1).to_string());
        object.values.insert(key.into(), value.to_vec());
    }

    /// A Secret `ns/name` with `key` (created or updated; its resourceVersion grows).
    pub fn put_secret(&self, ns: &str, name: &str, key: &str, value: &[u8]) {
        self.put(SourceKind::Secret, ns, name, key, value);
    }

    /// A ConfigMap `ns/name` with `key` in `binaryData`.
    pub fn put_config_map_binary(&self, ns: &str, name: &str, key: &str, value: &[u8]) {
        self.put(SourceKind::ConfigMap, ns, name, key, value);
    }

    /// Every read fails from now on (as if the API server failed).
    pub fn fail_reads(&self) {
        *lock(&self.failing) = true;
    }
}

#[async_trait::async_trait]
impl ValueSources for FakeSources {
    async fn get(&self, kind: SourceKind, ns: &str, name: &str) -> Lookup {
        if *lock(&self.failing) {
            return Err(kube_error(500));
        }
        Ok(lock(&self.objects)
            .get(&(kind, ns.into(), name.into()))
            .cloned())
    }
}

/// Every object gets the same answer for its connection.
pub struct FakeConnections {
    answer: Mutex<Result<Granted, Refusal>>,
}

impl FakeConnections {
    /// Grants `api` for any organization.
    pub fn granting(api: Arc<dyn ZitadelApi>) -> Self {
        Self::answering(Ok(Granted {
            api,
            allowed: AllowedOrgs::Any,
            name: "the fake connection".into(),
        }))
    }

    /// Always this answer.
    pub fn answering(answer: Result<Granted, Refusal>) -> Self {
        Self {
            answer: Mutex::new(answer),
        }
    }

    /// From now on, this answer.
    pub fn set(&self, answer: Result<Granted, Refusal>) {
        *lock(&self.answer) = answer;
    }
}

#[async_trait::async_trait]
impl ConnectionResolver for FakeConnections {
    async fn for_object(&self, _ns: &str, _reference: Option<&ConnectionRef>) -> Resolution {
        lock(&self.answer).clone()
    }
}

/// The other objects the caches would hold.
pub struct FakeNeighbours<K> {
    /// All objects of the kind (the index's candidates).
    pub objects: Mutex<Vec<Arc<K>>>,
}

impl<K> Default for FakeNeighbours<K> {
    fn default() -> Self {
        Self {
            objects: Mutex::new(Vec::new()),
        }
    }
}

impl<K: MetadataResource> FakeNeighbours<K> {
    /// One more object in the caches, its entries packed as the controllers' caches keep them.
    pub fn add(&self, mut obj: K) {
        obj.pack();
        lock(&self.objects).push(Arc::new(obj));
    }
}

#[async_trait::async_trait]
impl<K: Send + Sync> Neighbours<K> for FakeNeighbours<K> {
    async fn on_target(&self, _obj: &K) -> Vec<Arc<K>> {
        lock(&self.objects).clone()
    }
}

/// Records status writes and Events.
#[derive(Default)]
pub struct RecordingReport {
    /// Statuses written, in order.
    pub statuses: Mutex<Vec<MetadataStatus>>,
    /// Events published, in order.
    pub events: Mutex<Vec<Notice>>,
    /// Status writes fail.
    pub fail_patch: Mutex<bool>,
}

#[async_trait::async_trait]
impl<K: Send + Sync> Report<K> for RecordingReport {
    async fn write_status(&self, _obj: &K, status: &MetadataStatus) -> Result<(), kube::Error> {
        if *lock(&self.fail_patch) {
            return Err(kube_error(500));
        }
        lock(&self.statuses).push(status.clone());
        Ok(())
    }

    async fn event(&self, _obj: &K, notice: Notice) {
        lock(&self.events).push(notice);
    }
}

/// All fakes together, for one kind.
pub struct FakeIo<K> {
    /// Timing knobs.
    pub settings: Settings,
    /// ZITADEL.
    pub zitadel: Arc<FakeZitadel>,
    /// Secrets/ConfigMaps.
    pub sources: FakeSources,
    /// The connection answer (grants `zitadel` at first).
    pub connections: FakeConnections,
    /// Other objects.
    pub neighbours: FakeNeighbours<K>,
    /// What was written.
    pub report: RecordingReport,
    /// New objects whose first write went out without a listing before it.
    pub first_writes: crate::controller::metadata::sync::FirstWrites,
    /// Keys ZITADEL acknowledged that no status write has shown yet.
    pub unrecorded: crate::controller::metadata::unrecorded::UnrecordedKeys,
    /// Resync slots to skip (successful syncs record themselves).
    pub resyncs: crate::controller::resync::ResyncLedger,
}

impl<K: Send + Sync + 'static> Default for FakeIo<K> {
    fn default() -> Self {
        let zitadel = Arc::new(FakeZitadel::default());
        Self {
            settings: Settings::default(),
            connections: FakeConnections::granting(zitadel.clone()),
            zitadel,
            sources: FakeSources::default(),
            neighbours: FakeNeighbours::default(),
            report: RecordingReport::default(),
            first_writes: Default::default(),
            unrecorded: Default::default(),
            resyncs: Default::default(),
        }
    }
}

impl<K: Send + Sync + 'static> FakeIo<K> {
    /// The steps' view of the fakes.
    pub fn io(&self) -> Io<'_, K> {
        Io {
            settings: &self.settings,
            sources: &self.sources,
            connections: &self.connections,
            neighbours: &self.neighbours,
            report: &self.report,
            first_writes: &self.first_writes,
            unrecorded: &self.unrecorded,
            resyncs: &self.resyncs,
        }
    }

    /// The last status written.
    pub fn last_status(&self) -> Option<MetadataStatus> {
        lock(&self.report.statuses).last().cloned()
    }

    /// Reasons of the Events published so far.
    pub fn event_reasons(&self) -> Vec<crate::reason::Reason> {
        lock(&self.report.events).iter().map(|n| n.reason).collect()
    }
}

/// Objects' finalizers in memory, with the API's rule that an object being deleted takes no new
/// finalizer and disappears with its last one.
#[derive(Default)]
pub struct FakeFinalizers {
    /// Object → (finalizers, being deleted).
    objects: Mutex<BTreeMap<Held, (Vec<String>, bool)>>,
    failures: Mutex<HashMap<Held, kube::Error>>,
}

impl FakeFinalizers {
    /// An object with these finalizers, possibly being deleted.
    pub fn put(&self, object: &Held, finalizers: &[&str], deleting: bool) {
        let list = finalizers.iter().map(|f| f.to_string()).collect();
        lock(&self.objects).insert(object.clone(), (list, deleting));
    }

    /// Every call on `object` fails with `error`.
    pub fn fail(&self, object: &Held, error: kube::Error) {
        lock(&self.failures).insert(object.clone(), error);
    }

    /// The finalizers of `object` (empty when it does not exist).
    pub fn finalizers(&self, object: &Held) -> Vec<String> {
        lock(&self.objects)
            .get(object)
            .map(|(f, _)| f.clone())
            .unwrap_or_default()
    }

    /// Whether `object` exists.
    pub fn exists(&self, object: &Held) -> bool {
        lock(&self.objects).contains_key(object)
    }
}

fn copy_error(e: &kube::Error) -> kube::Error {
    match e {
        kube::Error::Api(s) => kube_error(s.code),
        _ => kube_error(500),
    }
}

#[async_trait::async_trait]
impl Finalizers for FakeFinalizers {
    async fn ensure(
        &self,
        object: &Held,
        finalizer: &str,
        present: bool,
    ) -> Result<Presence, kube::Error> {
        if let Some(e) = lock(&self.failures).get(object) {
            return Err(copy_error(e));
        }
        let mut objects = lock(&self.objects);
        let Some((list, deleting)) = objects.get_mut(object) else {
            return Ok(Presence::Absent);
        };
        let has = list.iter().any(|f| f == finalizer);
        if present && !has && !*deleting {
            list.push(finalizer.to_string());
        } else if !present && has {
            list.retain(|f| f != finalizer);
        }
        let presence = Presence::Present {
            deleting: *deleting,
            finalizers: list.clone(),
        };
        if *deleting && list.is_empty() {
            objects.remove(object);
        }
        Ok(presence)
    }
}
