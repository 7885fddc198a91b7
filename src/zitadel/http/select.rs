//! Choosing the API: the capability probe and the per-service dispatch.

use super::*;

impl HttpClient {
    /// The current selection, probing first when there is none. Callers that waited while a
    /// probe failed get its error rather than probing again one after the other.
    pub(super) async fn selection(&self) -> Result<(u64, ApiSelection), ZitadelError> {
        if let Some(current) = self.selector.get() {
            return Ok(current);
        }
        let attempts = self.selector.attempts();
        let _probing = self.selector.probing.lock().await;
        if let Some(current) = self.selector.get() {
            return Ok(current);
        }
        if self.selector.attempts() != attempts
            && let Some(error) = self.selector.last_failure()
        {
            return Err(error);
        }
        match self.probe_instance().await {
            Ok(selection) => {
                tracing::info!(url = %self.config.base_url, %selection, "ZITADEL API selected");
                Ok((self.selector.store(selection), selection))
            }
            Err(e) => {
                self.selector.failed(&e);
                Err(e)
            }
        }
    }

    /// The probe calls, one after the other (concurrent calls would each fetch a token when none
    /// is cached); an inconclusive answer ends the probe. First each service's v1 list (a key
    /// nobody uses, limit 1); only for a service whose v1 route is gone, its v2 list (a fake
    /// id, limit 1). Two calls on ZITADEL up to v4.x, four on v5; all of them reads.
    pub(super) async fn probe_instance(&self) -> Result<ApiSelection, ZitadelError> {
        let user_v1 = probe::classify_v1(self.probe_v1(Service::User).await)?;
        let org_v1 = probe::classify_v1(self.probe_v1(Service::Org).await)?;
        let user_v2 = self.probe_v2_unless(user_v1, Service::User).await?;
        let org_v2 = self.probe_v2_unless(org_v1, Service::Org).await?;
        if !user_v1 || !org_v1 {
            // v1 is gone (for at least one service): `orgs/me` is not asked by `check`.
            self.selector.v1_gone.store(true, Ordering::Relaxed);
        }
        Ok(probe::decide(
            probe::ServiceProbe {
                v1: user_v1,
                v2: user_v2,
            },
            probe::ServiceProbe {
                v1: org_v1,
                v2: org_v2,
            },
        ))
    }

    /// One v1 probe call: `POST …/metadata/_search` of the caller's own org (no
    /// `x-zitadel-orgid`), for the org or a fake user, filtered to a key nobody uses.
    pub(super) async fn probe_v1(&self, service: Service) -> Result<(), ZitadelError> {
        let (operation, segments): (&'static str, &[&str]) = match service {
            Service::User => (
                op::PROBE_USER_V1,
                &[
                    "management",
                    "v1",
                    "users",
                    probe::requests::PROBE_USER_ID,
                    "metadata",
                    "_search",
                ],
            ),
            Service::Org => (
                op::PROBE_ORG_V1,
                &["management", "v1", "metadata", "_search"],
            ),
        };
        let url = self.url(segments)?;
        let reply = self
            .rest(
                operation,
                Method::POST,
                url,
                None,
                Some(&probe::requests::v1_body()),
            )
            .await?;
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(reply.bytes())
            .map(drop)
            .map_err(|e| ZitadelError::Decode(format!("probe answer: {e}")))
    }

    /// The v2 probe of `service`, only where its v1 route is gone (`v1_served` false).
    pub(super) async fn probe_v2_unless(
        &self,
        v1_served: bool,
        service: Service,
    ) -> Result<Option<probe::ProbeAnswer>, ZitadelError> {
        if v1_served {
            return Ok(None);
        }
        let outcome = match service {
            Service::User => {
                let body = probe::requests::user_body();
                self.probe_call(op::PROBE_USER, probe::requests::USER_PATH, &body)
                    .await
            }
            Service::Org => {
                let body = probe::requests::org_body();
                self.probe_call(op::PROBE_ORG, probe::requests::ORG_PATH, &body)
                    .await
            }
        };
        probe::classify(outcome).map(Some)
    }

    /// One probe call: 2xx with a JSON object, or an error.
    pub(super) async fn probe_call(
        &self,
        operation: &'static str,
        path: &'static str,
        body: &serde_json::Value,
    ) -> Result<(), ZitadelError> {
        let reply = self.connect_as(operation, path, body).await?;
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(reply.bytes())
            .map(drop)
            .map_err(|e| ZitadelError::Decode(format!("probe answer: {e}")))
    }

    /// Run `call` with the API selected for `service`. In `Auto` mode, an answer "no such
    /// route" discards the selection and probes again; when the new selection differs, `call`
    /// runs once more with it.
    pub(super) async fn on_service<'a, T: Send + 'a>(
        &'a self,
        service: Service,
        call: impl Fn(ApiSelection) -> BoxFuture<'a, Result<T, ZitadelError>> + Send + Sync + 'a,
    ) -> Result<T, ZitadelError> {
        let (generation, selection) = self.selection().await?;
        match call(selection).await {
            Err(e) if e.is_route_missing() && self.selector.mode == ApiMode::Auto => {
                tracing::info!(
                    url = %self.config.base_url,
                    service = service.label(),
                    api = %selection.for_service(service),
                    "ZITADEL has no route for a call: probing the instance again"
                );
                self.selector.forget(Some(generation));
                match self.selection().await {
                    Ok((_, fresh)) if fresh != selection => call(fresh).await,
                    _ => Err(e),
                }
            }
            other => other,
        }
    }
}
