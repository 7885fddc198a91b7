//! [`ZitadelApi`] over HTTP/JSON: Management API v1 through ZITADEL's REST gateway, the v2
//! services over Connect, the capability probe that picks between them, and the transport
//! (token, rate limit, size caps, redaction) they share.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use url::Url;

use super::listing;
use super::probe::{self, Api, ApiMode, ApiSelection, Selector, Service};
use super::v1::V1Pages;
use super::v2::V2Pages;
use super::{
    Existence, Found, Listing, ObjectDetails, OrgQuery, Relevant, Target, TokenSource, UserQuery,
    ZitadelApi, ZitadelError,
};
use crate::metrics::Metrics;

mod api;
mod config;
mod lookups;
mod select;
mod transport;

pub use config::{ClientConfig, RateLimit};
use lookups::*;
pub(crate) use transport::{BodyError, read_body, tls_error};

/// Largest response body read from ZITADEL, in bytes (16 MiB). Anything longer fails with
/// [`ZitadelError::ResponseTooLarge`] after at most this much was buffered, whatever the server
/// claims in `Content-Length` or streams.
///
/// Only list pages can legitimately come near it: one metadata item is at most about 668 kB of
/// JSON (a 500 000-byte value is 666 668 base64 characters, a key at most 200 characters, i.e.
/// at most 2 400 bytes even fully `\u`-escaped, plus its `details`), so a page of 1000 items of
/// maximal size could be ~670 MB. The listing therefore sizes pages from the bytes it sees and
/// asks again with fewer items when a page is refused (by this cap, or by ZITADEL's gRPC limit
/// of 4 MiB behind the REST gateway), down to one item, which always fits: no response ZITADEL
/// may send under the contract is rejected, and memory per request stays bounded.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Largest part of an error (non-2xx) body read; only its first 200 characters are reported.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// The reqwest-based ZITADEL client. Clones share the token, the API selection and the caches.
#[derive(Clone, Debug)]
pub struct HttpClient {
    http: reqwest::Client,
    config: ClientConfig,
    metrics: Option<Arc<Metrics>>,
    token_seen: Arc<TokenFingerprint>,
    selector: Arc<Selector>,
    user_orgs: Arc<UserOrgs>,
}

impl std::fmt::Debug for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Selector")
            .field("mode", &self.mode)
            .field("selection", &self.get().map(|(_, s)| s))
            .finish_non_exhaustive()
    }
}

/// A hash of the last token used, to count rotations without keeping the token.
#[derive(Default)]
struct TokenFingerprint(AtomicU64);

impl std::fmt::Debug for TokenFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenFingerprint(<redacted>)")
    }
}

impl TokenFingerprint {
    /// Remember `token`; true when a different token was used before.
    fn changed(&self, token: &str) -> bool {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        token.hash(&mut hasher);
        // 0 means "none seen yet".
        let hash = hasher.finish().max(1);
        let previous = self.0.swap(hash, Ordering::Relaxed);
        previous != 0 && previous != hash
    }
}

/// Organizations of users seen on v2 (users never change organization): v2 ignores the
/// organization of a user target, so the client checks it once per user.
#[derive(Debug, Default)]
struct UserOrgs(Mutex<HashMap<String, String>>);

/// Users remembered at most (the cache starts over when full).
const MAX_CACHED_USERS: usize = 10_000;

impl UserOrgs {
    fn get(&self, user_id: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(user_id)
            .cloned()
    }

    fn put(&self, user_id: &str, org_id: &str) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_CACHED_USERS {
            map.clear();
        }
        map.insert(user_id.to_owned(), org_id.to_owned());
    }
}

/// Operation names of calls that are neither v1 metadata nor v2 Connect metadata.
mod op {
    /// `GET /v2/users/{id}` (REST).
    pub const GET_USER: &str = "GetUserByID";
    /// `POST /v2/organizations/_search` (REST).
    pub const LIST_ORGS: &str = "ListOrganizations";
    /// The capability probes.
    pub const PROBE_USER: &str = "ProbeUserMetadataV2";
    pub const PROBE_ORG: &str = "ProbeOrganizationMetadataV2";
    pub const PROBE_USER_V1: &str = "ProbeUserMetadataV1";
    pub const PROBE_ORG_V1: &str = "ProbeOrganizationMetadataV1";
}

/// The org search results (v2 `ListOrganizations`, v1 admin `ListOrgs`) and the v1 user search.
#[derive(Deserialize, Default)]
pub(crate) struct SearchResponse {
    #[serde(default)]
    pub(crate) result: Vec<SearchHit>,
}

/// One search hit: `id` and its `details`.
#[derive(Deserialize)]
pub(crate) struct SearchHit {
    #[serde(default)]
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) details: ObjectDetails,
}

/// What [`HttpClient::check`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionCheck {
    /// The APIs in use.
    pub selection: ApiSelection,
    /// Id and name of the organization the credentials act in (`GET /management/v1/orgs/me`);
    /// `None` where v1 is not served (v5) or pinned to v2 — the credentials were then checked
    /// with an authenticated v2 call.
    pub organization: Option<(String, String)>,
}

impl HttpClient {
    /// Build a client.
    pub fn new(mut config: ClientConfig) -> Result<Self, ZitadelError> {
        let http = config.build_http()?;
        Ok(Self::with_http(config, http))
    }

    /// A client using an already built reqwest client (see [`ClientConfig::build_http`]).
    pub fn with_http(config: ClientConfig, http: reqwest::Client) -> Self {
        let selector = Arc::new(Selector::new(config.api));
        Self {
            http,
            config,
            metrics: None,
            token_seen: Arc::default(),
            selector,
            user_orgs: Arc::default(),
        }
    }

    /// An authenticated probe: `GET /management/v1/orgs/me`. Returns the id and name of the
    /// organization the credentials act in. v1 only (gone in ZITADEL v5): prefer
    /// [`Self::check`].
    pub async fn probe(&self) -> Result<(String, String), ZitadelError> {
        self.v1_my_org(None).await
    }

    /// Check the connection: choose the APIs (probing in `Auto` mode unless already known),
    /// then authenticate — with `orgs/me` where v1 is in use (identity), else with a v2 call.
    pub async fn check(&self) -> Result<ConnectionCheck, ZitadelError> {
        let (_, selection) = self.selection().await?;
        let v1_in_use = selection.user_metadata == Api::V1 || selection.org_metadata == Api::V1;
        let v1_possible = self.selector.mode != ApiMode::V2
            && v1_in_use
            && !self.selector.v1_gone.load(Ordering::Relaxed);
        let organization = if v1_possible {
            match self.v1_my_org(None).await {
                Ok(org) => Some(org),
                Err(e) if e.is_route_missing() && self.selector.mode == ApiMode::Auto => {
                    self.selector.v1_gone.store(true, Ordering::Relaxed);
                    None
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        if organization.is_none() {
            self.probe_call(
                op::PROBE_USER,
                probe::requests::USER_PATH,
                &probe::requests::user_body(),
            )
            .await?;
        }
        Ok(ConnectionCheck {
            selection,
            organization,
        })
    }

    /// The API selection, probing the instance first when none is known (`Auto`).
    pub async fn select_api(&self) -> Result<ApiSelection, ZitadelError> {
        Ok(self.selection().await?.1)
    }

    /// Forget the API selection: the next call probes the instance again (`Auto`; pinned modes
    /// are unaffected). For a spec or credential change, build a new client instead.
    pub fn reprobe(&self) {
        self.selector.forget(None);
    }

    /// How many capability probes this client (and its clones) made.
    pub fn api_probes(&self) -> u64 {
        self.selector.probes()
    }

    /// The configured mode.
    pub fn api_mode(&self) -> ApiMode {
        self.selector.mode
    }

    /// Record requests, latencies, token rotations and the API selection into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.selector.set_metrics(metrics.clone());
        self.metrics = Some(metrics);
        self
    }

    /// Base URL in use.
    pub fn base_url(&self) -> &Url {
        &self.config.base_url
    }

    pub(crate) fn url(&self, segments: &[&str]) -> Result<Url, ZitadelError> {
        let mut url = self.config.base_url.clone();
        url.path_segments_mut()
            .map_err(|_| ZitadelError::Transport("ZITADEL URL cannot be a base".into()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }
}

#[cfg(test)]
mod tests;
