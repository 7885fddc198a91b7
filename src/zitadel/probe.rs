//! Which API serves user and org metadata on an instance: the mode a connection asks for
//! ([`ApiMode`]), the capability probe's decision table (`shared/zitadel-v2-and-events.md` §1.7)
//! and the selection it produces ([`ApiSelection`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use serde::{Deserialize, Serialize};

use super::ZitadelError;
use crate::metrics::Metrics;

/// Which ZITADEL API a connection uses for metadata.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
pub enum ApiMode {
    /// Probe the instance (side-effect-free calls) and pick per service: Management API v1
    /// wherever the instance serves it (ZITADEL up to v4.x: `status.sequence` keeps being
    /// reported, nothing changes for existing users), the v2 service where v1 is gone (ZITADEL
    /// v5). Probed again after a call answers "no such route" (an upgrade removed v1) and when
    /// the connection changes.
    #[default]
    Auto,
    /// Management API v1 (`/management/v1`) for both; no probe. Gone in ZITADEL v5.
    V1,
    /// The v2 services over Connect (`zitadel.user.v2.UserService`,
    /// `zitadel.org.v2.OrganizationService`) for both; no probe. Needs a ZITADEL v4.x with org
    /// metadata v2.
    V2,
}

/// One API version.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Api {
    /// Management API v1 over REST.
    V1,
    /// v2 services over Connect.
    V2,
}

impl Api {
    /// `"v1"` / `"v2"` (metric label, status text).
    pub fn as_str(self) -> &'static str {
        match self {
            Api::V1 => "v1",
            Api::V2 => "v2",
        }
    }
}

display_as_str!(Api);

/// The APIs in use on one instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ApiSelection {
    /// API of user metadata (and of user lookups).
    pub user_metadata: Api,
    /// API of org metadata.
    pub org_metadata: Api,
    /// `zitadel.user.v2.UserService` answers over Connect (ListUsers, GetUserByID).
    pub user_service_v2: bool,
    /// `zitadel.org.v2.OrganizationService` answers over Connect (ListOrganizations), with or
    /// without its metadata methods.
    pub org_service_v2: bool,
    /// Chosen by a probe (`Auto`); false when pinned.
    pub probed: bool,
}

impl ApiSelection {
    /// The selection of a pinned mode (`None` for `Auto`).
    pub fn pinned(mode: ApiMode) -> Option<Self> {
        let api = match mode {
            ApiMode::Auto => return None,
            ApiMode::V1 => Api::V1,
            ApiMode::V2 => Api::V2,
        };
        Some(ApiSelection {
            user_metadata: api,
            org_metadata: api,
            user_service_v2: api == Api::V2,
            org_service_v2: api == Api::V2,
            probed: false,
        })
    }

    /// The API of `service`.
    pub fn for_service(&self, service: Service) -> Api {
        match service {
            Service::User => self.user_metadata,
            Service::Org => self.org_metadata,
        }
    }
}

/// `user=v2 org=v1` (`(pinned)` appended when not probed): for a connection's status.
impl std::fmt::Display for ApiSelection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "user={} org={}", self.user_metadata, self.org_metadata)?;
        if !self.probed {
            f.write_str(" (pinned)")?;
        }
        Ok(())
    }
}

/// The two metadata services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    /// User metadata.
    User,
    /// Org metadata.
    Org,
}

impl Service {
    /// Metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Service::User => "user_metadata",
            Service::Org => "org_metadata",
        }
    }
}

/// Classify a v1 probe call (a side-effect-free v1 metadata list): `true` when the v1 route is
/// served — a 2xx, or any error ZITADEL itself answered with an error id (`AUTH-5mWD2`,
/// `AUTHZ-cdgFk`, ...: the service user may lack rights, but the route exists) —, `false` on the
/// routing 404 (v1 removed, ZITADEL v5). Anything else (401 without an id, 5xx, timeouts) is
/// inconclusive and returned as the error.
pub(crate) fn classify_v1(outcome: Result<(), ZitadelError>) -> Result<bool, ZitadelError> {
    match outcome {
        Ok(()) => Ok(true),
        Err(ZitadelError::RouteMissing { .. }) => Ok(false),
        Err(e) if e.id().is_some() && !e.is_transient() => Ok(true),
        Err(e) => Err(e),
    }
}

/// What one probe call said about its service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProbeAnswer {
    /// 2xx: the v2 metadata method exists.
    Available,
    /// 404 `text/plain` `404 page not found`: the Connect service exists without the method
    /// (org on v4.0 before org metadata v2).
    MethodMissing,
    /// 404 JSON `{"code":5,"message":"Not Found"}`: no Connect service at that prefix (before
    /// v4, or a removed service).
    ServiceMissing,
}

/// Classify one probe call's outcome; anything but the three shapes above (401, 403, 5xx,
/// timeouts...) is inconclusive and returned as the error.
pub(crate) fn classify(outcome: Result<(), ZitadelError>) -> Result<ProbeAnswer, ZitadelError> {
    match outcome {
        Ok(()) => Ok(ProbeAnswer::Available),
        Err(ZitadelError::RouteMissing {
            service_exists: true,
            ..
        }) => Ok(ProbeAnswer::MethodMissing),
        Err(ZitadelError::RouteMissing {
            service_exists: false,
            ..
        }) => Ok(ProbeAnswer::ServiceMissing),
        Err(e) => Err(e),
    }
}

/// What the probe learnt about one service: whether its v1 route is served and, where v1 is not
/// (only then is v2 asked), what the v2 probe answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ServiceProbe {
    /// The v1 metadata route answered (see [`classify_v1`]).
    pub(crate) v1: bool,
    /// The v2 probe's answer; `None` when not asked (v1 is served).
    pub(crate) v2: Option<ProbeAnswer>,
}

impl ServiceProbe {
    /// v1 wherever it is served: it reports ZITADEL's `sequence` (the product promises it in
    /// `.status`) and is what every existing installation runs on. v2 only where v1 is gone and
    /// the v2 method answered. Neither served: v1, whose calls then fail with the routing 404
    /// (`ZitadelApiUnavailable`).
    fn api(self) -> Api {
        match (self.v1, self.v2) {
            (false, Some(ProbeAnswer::Available)) => Api::V2,
            _ => Api::V1,
        }
    }

    /// The v2 service answers over Connect (with or without the metadata method); unknown
    /// (false) when it was not asked.
    fn service_v2(self) -> bool {
        self.v2.is_some_and(|a| a != ProbeAnswer::ServiceMissing)
    }
}

/// The decision table (README "ZITADEL versions"): per service, v1 where served, else v2.
pub(crate) fn decide(user: ServiceProbe, org: ServiceProbe) -> ApiSelection {
    ApiSelection {
        user_metadata: user.api(),
        org_metadata: org.api(),
        user_service_v2: user.service_v2(),
        org_service_v2: org.service_v2(),
        probed: true,
    }
}

/// The probe requests: side-effect-free lists with a fake id (or the caller's own org, for v1
/// org metadata), limit 1.
pub(crate) mod requests {
    /// Connect path of the user probe.
    pub const USER_PATH: &str = "zitadel.user.v2.UserService/ListUserMetadata";
    /// Connect path of the org probe.
    pub const ORG_PATH: &str = "zitadel.org.v2.OrganizationService/ListOrganizationMetadata";
    /// The user id the probes list (ZITADEL's list does not check the user, §1b / v2e §1.7).
    pub const PROBE_USER_ID: &str = "probe";
    /// The key the v1 probes filter on: the answer is empty whatever the org holds.
    pub const PROBE_KEY: &str = "zitadel-metadata-operator/probe";

    /// v1 `ListUserMetadata` / `ListOrgMetadata` body: one row at most, of a key nobody uses.
    pub fn v1_body() -> serde_json::Value {
        serde_json::json!({
            "query": {"offset": "0", "limit": 1, "asc": true},
            "queries": [{"keyQuery": {"key": PROBE_KEY, "method": "TEXT_QUERY_METHOD_EQUALS"}}],
        })
    }

    /// `{"userId":"probe","pagination":{"limit":1}}`.
    pub fn user_body() -> serde_json::Value {
        serde_json::json!({"userId": "probe", "pagination": {"limit": 1}})
    }

    /// `{"organizationId":"probe","pagination":{"limit":1}}`.
    pub fn org_body() -> serde_json::Value {
        serde_json::json!({"organizationId": "probe", "pagination": {"limit": 1}})
    }
}

/// The selection state of one client (shared by its clones).
pub(crate) struct Selector {
    pub(crate) mode: ApiMode,
    current: Mutex<Option<(u64, ApiSelection)>>,
    generation: AtomicU64,
    /// Serialises probes so concurrent first calls probe once.
    pub(crate) probing: tokio::sync::Mutex<()>,
    probes: AtomicU64,
    /// Probe attempts (successful or not), and the error of the last failed one: callers that
    /// waited for a probe that failed share its error instead of probing again one by one.
    attempts: AtomicU64,
    last_failure: Mutex<Option<ZitadelError>>,
    /// `/management/v1/orgs/me` answered the routing 404 since the last probe (v5): not asked
    /// again until the next probe.
    pub(crate) v1_gone: AtomicBool,
    metrics: OnceLock<Arc<Metrics>>,
}

impl Selector {
    pub(crate) fn new(mode: ApiMode) -> Self {
        Selector {
            mode,
            current: Mutex::new(ApiSelection::pinned(mode).map(|s| (0, s))),
            generation: AtomicU64::new(0),
            probing: tokio::sync::Mutex::new(()),
            probes: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            last_failure: Mutex::new(None),
            v1_gone: AtomicBool::new(false),
            metrics: OnceLock::new(),
        }
    }

    /// Report the selection into `metrics` from now on.
    pub(crate) fn set_metrics(&self, metrics: Arc<Metrics>) {
        if self.metrics.set(metrics).is_ok()
            && let Some((_, sel)) = self.get()
        {
            self.record(&sel, 1);
        }
    }

    fn record(&self, sel: &ApiSelection, delta: i64) {
        if let Some(m) = self.metrics.get() {
            for service in [Service::User, Service::Org] {
                m.zitadel_api_selected(service.label(), sel.for_service(service).as_str(), delta);
            }
        }
    }

    /// The current selection and its generation.
    pub(crate) fn get(&self) -> Option<(u64, ApiSelection)> {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Store a probe's result.
    pub(crate) fn store(&self, sel: ApiSelection) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.probes.fetch_add(1, Ordering::Relaxed);
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let previous = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace((generation, sel));
        if let Some((_, old)) = previous {
            self.record(&old, -1);
        }
        self.record(&sel, 1);
        generation
    }

    /// Forget the selection of `generation` (`None`: whatever is current), so the next call
    /// probes again. Pinned modes are never forgotten.
    pub(crate) fn forget(&self, generation: Option<u64>) {
        if self.mode != ApiMode::Auto {
            return;
        }
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((g, old)) = *current
            && generation.is_none_or(|want| want == g)
        {
            *current = None;
            drop(current);
            self.v1_gone.store(false, Ordering::Relaxed);
            self.record(&old, -1);
        }
    }

    /// Probe attempts so far (to recognise one that ran while waiting for the lock).
    pub(crate) fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// A probe attempt failed with `error`.
    pub(crate) fn failed(&self, error: &ZitadelError) {
        *self
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error.clone());
        self.attempts.fetch_add(1, Ordering::Relaxed);
    }

    /// The error of the last failed probe.
    pub(crate) fn last_failure(&self) -> Option<ZitadelError> {
        self.last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Successful probes so far.
    pub(crate) fn probes(&self) -> u64 {
        self.probes.load(Ordering::Relaxed)
    }
}

impl Drop for Selector {
    fn drop(&mut self) {
        if let Some((_, sel)) = self.get() {
            self.record(&sel, -1);
        }
    }
}

#[cfg(test)]
mod tests;
