//! In-memory fakes of the reconciler's I/O, for unit tests: a ZITADEL that keeps metadata in
//! maps and fails on request, Secrets/ConfigMaps, a connection table, neighbours and a report
//! that records what would have been written.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::connections::{AllowedOrgs, ConnectionResolver, Granted, Refusal, Resolution};
use crate::controller::Settings;
use crate::controller::finalizers::{Finalizers, Held, Presence};
use crate::controller::metadata::{Io, Neighbours, Notice, Report};
use crate::crd::{ConnectionRef, MetadataStatus};
use crate::sources::{Lookup, SourceKind, SourceObject, ValueSources};
use crate::zitadel::{
    Existence, Found, Listing, MetadataMap, ObjectDetails, OrgQuery, Relevant, Target, UserQuery,
    ZitadelApi, ZitadelError,
};

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

/// The operations of [`ZitadelApi`], to inject failures into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `list_metadata`.
    List,
    /// `bulk_set_metadata`.
    Set,
    /// `bulk_remove_metadata`.
    Remove,
    /// `user_organization`.
    UserOrg,
    /// `find_organizations`.
    FindOrgs,
    /// `find_users`.
    FindUsers,
    /// `target_exists`.
    Exists,
}

#[derive(Default)]
struct Zitadel {
    metadata: HashMap<Target, MetadataMap>,
    orgs: Vec<(OrgQuery, Found)>,
    users: Vec<(UserQuery, Found)>,
    user_orgs: HashMap<String, String>,
    failures: HashMap<Op, VecDeque<ZitadelError>>,
    /// A failure after a number of successful calls.
    delayed: HashMap<Op, (usize, ZitadelError)>,
    drop_writes: bool,
    calls: Vec<Op>,
    sequence: u64,
    /// What `target_exists` answers per target (default: `Exists`).
    existence: HashMap<Target, Existence>,
    /// Keys hidden from listings (as a v2 list hides rows the caller may not read).
    hidden: BTreeSet<String>,
    /// The `relevant` keys of each listing, in order (`None`: all).
    listings: Vec<Option<BTreeSet<String>>>,
}

/// The hits registered for `query`.
fn matching<Q: PartialEq>(hits: &[(Q, Found)], query: &Q) -> Vec<Found> {
    hits.iter()
        .filter(|(q, _)| q == query)
        .map(|(_, f)| f.clone())
        .collect()
}

/// A ZITADEL in memory.
#[derive(Default)]
pub struct FakeZitadel {
    inner: Mutex<Zitadel>,
}

impl FakeZitadel {
    /// Put `key = value` on `target` (as if written by someone).
    pub fn put(&self, target: &Target, key: &str, value: &[u8]) {
        lock(&self.inner)
            .metadata
            .entry(target.clone())
            .or_default()
            .insert(key.to_string(), value.to_vec());
    }

    /// What `target` holds.
    pub fn metadata(&self, target: &Target) -> MetadataMap {
        lock(&self.inner)
            .metadata
            .get(target)
            .cloned()
            .unwrap_or_default()
    }

    /// The next call of `op` fails with `error` (queued: several calls fail in turn).
    pub fn fail(&self, op: Op, error: ZitadelError) {
        lock(&self.inner)
            .failures
            .entry(op)
            .or_default()
            .push_back(error);
    }

    /// The call of `op` after the next `skip` ones fails with `error`.
    pub fn fail_after(&self, op: Op, skip: usize, error: ZitadelError) {
        lock(&self.inner).delayed.insert(op, (skip, error));
    }

    /// Remove `key` from `target` (as if someone else removed it).
    pub fn delete(&self, target: &Target, key: &str) {
        if let Some(map) = lock(&self.inner).metadata.get_mut(target) {
            map.remove(key);
        }
    }

    /// Writes are acknowledged but not kept (for read-back mismatches).
    pub fn drop_writes(&self) {
        lock(&self.inner).drop_writes = true;
    }

    /// An organization found by `query`.
    pub fn add_org(&self, query: OrgQuery, id: &str) {
        let found = Found {
            id: id.into(),
            org_id: id.into(),
        };
        lock(&self.inner).orgs.push((query, found));
    }

    /// A user found by `query`, in `org_id`.
    pub fn add_user(&self, query: UserQuery, id: &str, org_id: &str) {
        let found = Found {
            id: id.into(),
            org_id: org_id.into(),
        };
        let mut inner = lock(&self.inner);
        inner.users.push((query, found));
        inner.user_orgs.insert(id.into(), org_id.into());
    }

    /// The calls made so far.
    pub fn calls(&self) -> Vec<Op> {
        lock(&self.inner).calls.clone()
    }

    /// How many calls of `op` were made so far.
    pub fn count(&self, op: Op) -> usize {
        lock(&self.inner).calls.iter().filter(|c| **c == op).count()
    }

    /// `target_exists` answers `existence` for `target` from now on (default `Exists`).
    pub fn set_existence(&self, target: &Target, existence: Existence) {
        lock(&self.inner)
            .existence
            .insert(target.clone(), existence);
    }

    /// Listings leave out `key` (still stored, writable and removable), like a v2 list leaves
    /// out rows the caller may not read.
    pub fn hide_from_listings(&self, key: &str) {
        lock(&self.inner).hidden.insert(key.to_string());
    }

    /// The `relevant` keys each listing asked for, in order (`None`: every key).
    pub fn listings(&self) -> Vec<Option<BTreeSet<String>>> {
        lock(&self.inner).listings.clone()
    }

    fn listed(&self, target: &Target) -> MetadataMap {
        let inner = lock(&self.inner);
        let mut map = inner.metadata.get(target).cloned().unwrap_or_default();
        map.retain(|k, _| !inner.hidden.contains(k));
        map
    }

    /// Record a call of `op`; its injected failure, if any.
    fn call(&self, op: Op) -> Result<(), ZitadelError> {
        let mut inner = lock(&self.inner);
        inner.calls.push(op);
        if let Some((skip, _)) = inner.delayed.get_mut(&op) {
            if *skip == 0 {
                if let Some((_, e)) = inner.delayed.remove(&op) {
                    return Err(e);
                }
            } else {
                *skip -= 1;
            }
        }
        match inner.failures.get_mut(&op).and_then(VecDeque::pop_front) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn details(inner: &mut Zitadel) -> ObjectDetails {
        inner.sequence += 1;
        ObjectDetails {
            sequence: Some(inner.sequence.to_string()),
            change_date: Some("2026-01-01T00:00:00Z".into()),
            creation_date: None,
            resource_owner: None,
        }
    }
}

#[async_trait::async_trait]
impl ZitadelApi for FakeZitadel {
    async fn list_metadata(&self, target: &Target) -> Result<MetadataMap, ZitadelError> {
        self.call(Op::List)?;
        lock(&self.inner).listings.push(None);
        Ok(self.listed(target))
    }

    async fn list_metadata_for(
        &self,
        target: &Target,
        relevant: Relevant<'_>,
    ) -> Result<Listing, ZitadelError> {
        self.call(Op::List)?;
        let keys = match relevant {
            Relevant::All => None,
            Relevant::Only(keys) => Some(keys.clone()),
        };
        lock(&self.inner).listings.push(keys);
        Ok(Listing {
            metadata: self.listed(target),
            complete: true,
            calls: 1,
        })
    }

    async fn bulk_set_metadata(
        &self,
        target: &Target,
        entries: &[(&str, &[u8])],
    ) -> Result<ObjectDetails, ZitadelError> {
        self.call(Op::Set)?;
        let mut inner = lock(&self.inner);
        if !inner.drop_writes {
            let stored = inner.metadata.entry(target.clone()).or_default();
            for (k, v) in entries {
                stored.insert(k.to_string(), v.to_vec());
            }
        }
        Ok(Self::details(&mut inner))
    }

    async fn bulk_remove_metadata(
        &self,
        target: &Target,
        keys: &[&str],
    ) -> Result<ObjectDetails, ZitadelError> {
        self.call(Op::Remove)?;
        let mut inner = lock(&self.inner);
        let stored = inner.metadata.entry(target.clone()).or_default();
        // All or nothing, like ZITADEL: one missing key fails the whole remove.
        if keys.iter().any(|k| !stored.contains_key(*k)) {
            let id = match target {
                Target::Org { .. } => crate::zitadel::ids::ORG_KEY_NOT_EXISTING,
                Target::User { .. } => crate::zitadel::ids::USER_KEY_NOT_EXISTING,
            };
            let body = format!(
                r#"{{"code":5,"message":"One or more keys do not exist ({id})","details":[{{"id":"{id}"}}]}}"#
            );
            return Err(ZitadelError::from_response(404, None, &body));
        }
        if !inner.drop_writes {
            let stored = inner.metadata.entry(target.clone()).or_default();
            for k in keys {
                stored.remove(*k);
            }
        }
        Ok(Self::details(&mut inner))
    }

    async fn user_organization(&self, user_id: &str) -> Result<String, ZitadelError> {
        self.call(Op::UserOrg)?;
        lock(&self.inner)
            .user_orgs
            .get(user_id)
            .cloned()
            .ok_or_else(|| {
                ZitadelError::from_response(404, None, r#"{"code":5,"message":"User not found"}"#)
            })
    }

    async fn find_organizations(&self, query: &OrgQuery) -> Result<Vec<Found>, ZitadelError> {
        self.call(Op::FindOrgs)?;
        Ok(matching(&lock(&self.inner).orgs, query))
    }

    async fn find_users(&self, query: &UserQuery) -> Result<Vec<Found>, ZitadelError> {
        self.call(Op::FindUsers)?;
        Ok(matching(&lock(&self.inner).users, query))
    }

    async fn target_exists(&self, target: &Target) -> Result<Existence, ZitadelError> {
        self.call(Op::Exists)?;
        Ok(lock(&self.inner)
            .existence
            .get(target)
            .copied()
            .unwrap_or(Existence::Exists))
    }
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

impl<K> FakeNeighbours<K> {
    /// One more object in the caches.
    pub fn add(&self, obj: K) {
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
    async fn patch_status(&self, _obj: &K, status: &MetadataStatus) -> Result<(), kube::Error> {
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
