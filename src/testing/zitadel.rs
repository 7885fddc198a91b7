//! A ZITADEL in memory: metadata in maps, failures on request, every call counted.

use super::*;

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
pub(super) struct Zitadel {
    pub(super) metadata: HashMap<Target, MetadataMap>,
    pub(super) orgs: Vec<(OrgQuery, Found)>,
    pub(super) users: Vec<(UserQuery, Found)>,
    pub(super) user_orgs: HashMap<String, String>,
    pub(super) failures: HashMap<Op, VecDeque<ZitadelError>>,
    /// A failure after a number of successful calls.
    pub(super) delayed: HashMap<Op, (usize, ZitadelError)>,
    pub(super) drop_writes: bool,
    pub(super) calls: Vec<Op>,
    pub(super) sequence: u64,
    /// What `target_exists` answers per target (default: `Exists`).
    pub(super) existence: HashMap<Target, Existence>,
    /// Keys hidden from listings (as a v2 list hides rows the caller may not read).
    pub(super) hidden: BTreeSet<String>,
    /// The `relevant` keys of each listing, in order (`None`: all).
    pub(super) listings: Vec<Option<BTreeSet<String>>>,
}

/// The hits registered for `query`.
pub(super) fn matching<Q: PartialEq>(hits: &[(Q, Found)], query: &Q) -> Vec<Found> {
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
        Ok(Listing::whole(self.listed(target)))
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
