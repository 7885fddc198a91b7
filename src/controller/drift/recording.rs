//! Clients that record their writes, so the poller recognises its own events.

use super::*;

/// A resolver that hands out clients recording their writes (for own-write recognition).
pub(super) struct RecordingResolver {
    pub(super) inner: Arc<dyn ConnectionResolver>,
    pub(super) hub: Arc<DriftHub>,
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
pub(super) struct Recording {
    pub(super) inner: Arc<dyn ZitadelApi>,
    pub(super) poller: Arc<Poller>,
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
