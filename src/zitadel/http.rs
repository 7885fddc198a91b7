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

/// Settings of the HTTP client.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Base URL of the instance, e.g. `https://acme.zitadel.cloud`.
    pub base_url: Url,
    /// Where the bearer token comes from.
    pub token: TokenSource,
    /// Timeout of one request, connection included.
    pub request_timeout: Duration,
    /// Timeout of establishing a connection.
    pub connect_timeout: Duration,
    /// Extra PEM CA certificates to trust.
    pub ca_pem: Vec<Vec<u8>>,
    /// Verify the server certificate against (and send SNI for) this name instead of the URL's
    /// host; connections still go to the URL's address.
    pub tls_server_name: Option<String>,
    /// Request budget to wait for before each request (default: the process-wide one, see
    /// [`RateLimit::install_for_process`]).
    pub rate_limit: Option<Arc<RateLimit>>,
    /// Which API to use for metadata (default [`ApiMode::Auto`]: probe the instance).
    pub api: ApiMode,
}

/// A client-side budget of ZITADEL requests per second, shared by every client holding it:
/// requests are spaced evenly (no bursts), so the operator stays under a server-side rate limit
/// (ZITADEL Cloud allows about 50 requests per second per IP) instead of running into 429s.
#[derive(Debug)]
pub struct RateLimit {
    interval: Duration,
    next: Mutex<tokio::time::Instant>,
}

static PROCESS_RATE_LIMIT: OnceLock<Arc<RateLimit>> = OnceLock::new();

impl RateLimit {
    /// At most `rps` requests per second; `None` for 0 (unlimited).
    pub fn per_second(rps: u32) -> Option<Arc<RateLimit>> {
        (rps > 0).then(|| {
            Arc::new(RateLimit {
                interval: Duration::from_secs(1) / rps,
                next: Mutex::new(tokio::time::Instant::now()),
            })
        })
    }

    /// Makes `limit` the budget of every client configured afterwards with [`ClientConfig::new`]
    /// (the operator-wide connection and those built from `ZitadelConnection`s alike). Only the
    /// first call takes effect; returns whether it did.
    pub fn install_for_process(limit: Arc<RateLimit>) -> bool {
        PROCESS_RATE_LIMIT.set(limit).is_ok()
    }

    /// Waits for this request's slot.
    pub async fn acquire(&self) {
        let now = tokio::time::Instant::now();
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        if slot > now {
            tokio::time::sleep_until(slot).await;
        }
    }
}

impl ClientConfig {
    /// Config with default timeouts (30 s per request, 10 s to connect).
    pub fn new(base_url: Url, token: TokenSource) -> Self {
        Self {
            base_url,
            token,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            ca_pem: Vec::new(),
            tls_server_name: None,
            rate_limit: PROCESS_RATE_LIMIT.get().cloned(),
            api: ApiMode::Auto,
        }
    }

    /// The reqwest client these settings describe (CA bundle, server name, timeouts). When a TLS
    /// server name is set, `base_url`'s host is replaced by it and the name is pinned to the
    /// original host's address.
    pub fn build_http(&mut self) -> Result<reqwest::Client, ZitadelError> {
        let mut builder = reqwest::Client::builder()
            .timeout(self.request_timeout)
            .connect_timeout(self.connect_timeout)
            .user_agent(concat!(
                "zitadel-metadata-operator/",
                env!("CARGO_PKG_VERSION")
            ));
        for pem in &self.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                ZitadelError::Credentials(format!("CA bundle is not PEM certificates: {e}"))
            })? {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(name) = self.tls_server_name.clone() {
            let host = self
                .base_url
                .host_str()
                .ok_or_else(|| ZitadelError::Transport("ZITADEL URL has no host".into()))?
                .to_string();
            let port = self.base_url.port_or_known_default().unwrap_or(443);
            let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
                .map_err(|e| ZitadelError::Transport(format!("cannot resolve {host}: {e}")))?
                .next()
                .ok_or_else(|| ZitadelError::Transport(format!("{host} has no address")))?;
            self.base_url
                .set_host(Some(&name))
                .map_err(|e| ZitadelError::Transport(format!("TLS server name {name:?}: {e}")))?;
            builder = builder.resolve(&name, addr);
        }
        builder
            .build()
            .map_err(|e| ZitadelError::Transport(e.to_string()))
    }
}

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

/// Decode a 2xx JSON body.
pub(crate) fn decode_json<R: DeserializeOwned + Default>(body: &[u8]) -> Result<R, ZitadelError> {
    if body.trim_ascii().is_empty() {
        return Ok(R::default());
    }
    serde_json::from_slice(body).map_err(|e| ZitadelError::Decode(e.to_string()))
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

/// One HTTP request.
struct Request<'a> {
    operation: &'static str,
    method: Method,
    url: Url,
    org_id: Option<&'a str>,
    body: Option<Vec<u8>>,
    connect: bool,
}

fn to_json<B: Serialize + ?Sized>(body: &B) -> Result<Vec<u8>, ZitadelError> {
    serde_json::to_vec(body).map_err(|e| ZitadelError::Decode(format!("cannot encode: {e}")))
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

    /// The current selection, probing first when there is none. Callers that waited while a
    /// probe failed get its error rather than probing again one after the other.
    async fn selection(&self) -> Result<(u64, ApiSelection), ZitadelError> {
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
    async fn probe_instance(&self) -> Result<ApiSelection, ZitadelError> {
        let user_v1 = probe::classify_v1(self.probe_v1(Service::User).await)?;
        let org_v1 = probe::classify_v1(self.probe_v1(Service::Org).await)?;
        let user_v2 = if user_v1 {
            None
        } else {
            Some(probe::classify(
                self.probe_call(
                    op::PROBE_USER,
                    probe::requests::USER_PATH,
                    &probe::requests::user_body(),
                )
                .await,
            )?)
        };
        let org_v2 = if org_v1 {
            None
        } else {
            Some(probe::classify(
                self.probe_call(
                    op::PROBE_ORG,
                    probe::requests::ORG_PATH,
                    &probe::requests::org_body(),
                )
                .await,
            )?)
        };
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
    async fn probe_v1(&self, service: Service) -> Result<(), ZitadelError> {
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
        let raw = self
            .rest_raw(
                operation,
                Method::POST,
                url,
                None,
                Some(&probe::requests::v1_body()),
            )
            .await?;
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&raw)
            .map(drop)
            .map_err(|e| ZitadelError::Decode(format!("probe answer: {e}")))
    }

    /// One probe call: 2xx with a JSON object, or an error.
    async fn probe_call(
        &self,
        operation: &'static str,
        path: &'static str,
        body: &serde_json::Value,
    ) -> Result<(), ZitadelError> {
        let raw = self.connect_raw_as(operation, path, body).await?;
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&raw)
            .map(drop)
            .map_err(|e| ZitadelError::Decode(format!("probe answer: {e}")))
    }

    /// Run `call` with the API selected for `service`. In `Auto` mode, an answer "no such
    /// route" discards the selection and probes again; when the new selection differs, `call`
    /// runs once more with it.
    async fn on_service<'a, T: Send + 'a>(
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

    /// A REST call decoded as `R`.
    pub(crate) async fn rest<B: Serialize + ?Sized, R: DeserializeOwned + Default>(
        &self,
        operation: &'static str,
        method: Method,
        url: Url,
        org_id: Option<&str>,
        body: Option<&B>,
    ) -> Result<R, ZitadelError> {
        decode_json(&self.rest_raw(operation, method, url, org_id, body).await?)
    }

    /// A REST call; the raw 2xx body.
    pub(crate) async fn rest_raw<B: Serialize + ?Sized>(
        &self,
        operation: &'static str,
        method: Method,
        url: Url,
        org_id: Option<&str>,
        body: Option<&B>,
    ) -> Result<Vec<u8>, ZitadelError> {
        let body = body.map(to_json).transpose()?;
        self.execute(Request {
            operation,
            method,
            url,
            org_id,
            body,
            connect: false,
        })
        .await
    }

    /// A Connect unary call (`POST /<path>`, JSON body) decoded as `R`; the path is the
    /// operation name.
    pub(crate) async fn connect<B: Serialize + ?Sized, R: DeserializeOwned + Default>(
        &self,
        path: &'static str,
        body: &B,
    ) -> Result<R, ZitadelError> {
        decode_json(&self.connect_raw(path, body).await?)
    }

    /// A Connect unary call; the raw 2xx body.
    pub(crate) async fn connect_raw<B: Serialize + ?Sized>(
        &self,
        path: &'static str,
        body: &B,
    ) -> Result<Vec<u8>, ZitadelError> {
        self.connect_raw_as(path, path, body).await
    }

    async fn connect_raw_as<B: Serialize + ?Sized>(
        &self,
        operation: &'static str,
        path: &'static str,
        body: &B,
    ) -> Result<Vec<u8>, ZitadelError> {
        let segments: Vec<&str> = path.split('/').collect();
        let url = self.url(&segments)?;
        // Connect rejects a zero-length body: a message always serialises to at least `{}`.
        let body = to_json(body)?;
        self.execute(Request {
            operation,
            method: Method::POST,
            url,
            org_id: None,
            body: Some(body),
            connect: true,
        })
        .await
    }

    /// One request (with a single retry on 401 when the token source can refresh); the 2xx
    /// body, or the typed error.
    async fn execute(&self, request: Request<'_>) -> Result<Vec<u8>, ZitadelError> {
        let token = self.config.token.token().await?;
        if self.token_seen.changed(&token)
            && let Some(m) = &self.metrics
        {
            m.token_refreshed();
        }
        if let Some(limit) = &self.config.rate_limit {
            limit.acquire().await;
        }
        let started = Instant::now();
        let mut result = self.send(&request, &token).await;
        // An expired or rotated token: fetch a new one and retry once.
        if matches!(&result, Ok((status, _, _)) if *status == StatusCode::UNAUTHORIZED)
            && self.config.token.refreshable()
        {
            self.config.token.invalidate().await;
            let fresh = self.config.token.token().await?;
            if self.token_seen.changed(&fresh)
                && let Some(m) = &self.metrics
            {
                m.token_refreshed();
            }
            if let Some(limit) = &self.config.rate_limit {
                limit.acquire().await;
            }
            result = self.send(&request, &fresh).await;
        }
        if let Some(m) = &self.metrics {
            let code = match &result {
                Ok((status, _, _)) => status.as_u16().to_string(),
                Err(ZitadelError::Timeout(_)) => "timeout".to_string(),
                Err(_) => "error".to_string(),
            };
            m.zitadel_request(request.operation, &code, started.elapsed());
        }
        let (status, retry_after, body) = result?;
        if !status.is_success() {
            return Err(ZitadelError::from_response(
                status.as_u16(),
                retry_after.as_deref(),
                &String::from_utf8_lossy(&body),
            ));
        }
        Ok(body)
    }

    /// Send a request and read the answer: (status, `Retry-After`, body). A 2xx body longer
    /// than [`MAX_RESPONSE_BYTES`] is an error; an error body is cut at 64 KiB.
    async fn send(
        &self,
        request: &Request<'_>,
        token: &str,
    ) -> Result<(StatusCode, Option<String>, Vec<u8>), ZitadelError> {
        let mut builder = self
            .http
            .request(request.method.clone(), request.url.clone())
            .bearer_auth(token)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(org) = request.org_id {
            builder = builder.header("x-zitadel-orgid", org);
        }
        if request.connect {
            builder = builder.header("connect-protocol-version", "1");
        }
        if let Some(body) = &request.body {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let response = builder.send().await.map_err(|e| self.transport_error(e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = if status.is_success() {
            read_body(response, MAX_RESPONSE_BYTES)
                .await
                .map_err(|e| self.body_error(e))?
        } else {
            read_body_prefix(response, MAX_ERROR_BODY_BYTES)
                .await
                .map_err(|e| self.transport_error(e))?
        };
        Ok((status, retry_after, body))
    }

    fn body_error(&self, e: BodyError) -> ZitadelError {
        match e {
            BodyError::TooLarge { limit, size } => ZitadelError::ResponseTooLarge { limit, size },
            BodyError::Read(e) => self.transport_error(e),
        }
    }

    fn transport_error(&self, e: reqwest::Error) -> ZitadelError {
        if e.is_timeout() {
            ZitadelError::Timeout(self.config.request_timeout)
        } else if let Some(tls) = tls_error(&e) {
            tls
        } else {
            ZitadelError::Transport(error_chain(&e))
        }
    }
}

/// The error and its sources, joined by `: `. Only the chain: reqwest errors carry the URL,
/// never headers or bodies.
fn error_chain(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// [`ZitadelError::Tls`] when the request failed in the TLS handshake: a rustls error somewhere
/// in the chain (`io::Error` hides its inner error from `source()`, and the connector nests
/// them, so look inside each).
pub(crate) fn tls_error(e: &reqwest::Error) -> Option<ZitadelError> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            let url = e.url().map(|u| format!(" ({u})")).unwrap_or_default();
            return Some(ZitadelError::Tls(format!("{tls}{url}")));
        }
        current = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

/// Why a response body could not be read.
pub(crate) enum BodyError {
    /// The body is (or claims to be) longer than the limit.
    TooLarge {
        /// The limit in bytes.
        limit: usize,
        /// The announced `Content-Length`, if any.
        size: Option<u64>,
    },
    /// The connection failed while reading (including a body shorter than its `Content-Length`).
    Read(reqwest::Error),
}

/// Read a whole response body, refusing (without buffering more than `limit` bytes) one longer
/// than `limit`: a `Content-Length` above the limit fails before reading, a streamed body as soon
/// as it passes the limit.
pub(crate) async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    let size = response.content_length();
    if size.is_some_and(|len| len > limit as u64) {
        return Err(BodyError::TooLarge { limit, size });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit, size: None });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Read at most the first `limit` bytes of a response body and drop the rest (error bodies,
/// of which only a short message is reported).
pub(crate) async fn read_body_prefix(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    Ok(body)
}

fn service_of(target: &Target) -> Service {
    match target {
        Target::Org { .. } => Service::Org,
        Target::User { .. } => Service::User,
    }
}

impl HttpClient {
    /// `GetUserByID`: over Connect where the v2 user service is served, else `GET /v2/users/{id}`.
    async fn get_user(
        &self,
        selection: ApiSelection,
        user_id: &str,
    ) -> Result<super::v2::GetUserResponse, ZitadelError> {
        if selection.user_service_v2 {
            self.v2_get_user(user_id).await
        } else {
            let url = self.url(&["v2", "users", user_id])?;
            self.rest::<(), _>(op::GET_USER, Method::GET, url, None, None)
                .await
        }
    }

    /// The organization of `user_id` (remembered: users never change organization).
    async fn user_org(
        &self,
        selection: ApiSelection,
        user_id: &str,
    ) -> Result<String, ZitadelError> {
        if let Some(org) = self.user_orgs.get(user_id) {
            return Ok(org);
        }
        let org = self
            .get_user(selection, user_id)
            .await?
            .resource_owner()
            .ok_or_else(|| {
                ZitadelError::Decode(format!("user {user_id}: answer names no organization"))
            })?;
        self.user_orgs.put(user_id, &org);
        Ok(org)
    }

    /// v2 acts on a user whatever organization the target names (v1's `x-zitadel-orgid` makes
    /// ZITADEL refuse a user of another org): check it, so an object cannot reach a user
    /// outside the organizations its connection allows.
    async fn ensure_user_in_org(
        &self,
        selection: ApiSelection,
        target: &Target,
    ) -> Result<(), ZitadelError> {
        let Target::User { org_id, user_id } = target else {
            return Ok(());
        };
        let actual = self.user_org(selection, user_id).await?;
        if &actual == org_id {
            Ok(())
        } else {
            Err(ZitadelError::UserNotInOrganization {
                user_id: user_id.clone(),
                org_id: org_id.clone(),
                actual,
            })
        }
    }

    async fn list_with(
        &self,
        selection: ApiSelection,
        target: &Target,
        relevant: Relevant<'_>,
    ) -> Result<Listing, ZitadelError> {
        match selection.for_service(service_of(target)) {
            Api::V1 => {
                listing::list(
                    &V1Pages {
                        client: self,
                        target,
                    },
                    relevant,
                )
                .await
            }
            Api::V2 => {
                self.ensure_user_in_org(selection, target).await?;
                listing::list(
                    &V2Pages {
                        client: self,
                        target,
                    },
                    relevant,
                )
                .await
            }
        }
    }

    /// An org search (`{"query":…,"queries":[…]}`): Connect `ListOrganizations` where the v2
    /// org service is served, else `POST /v2/organizations/_search`, else (instances without
    /// it) `POST /admin/v1/orgs/_search`.
    async fn search_orgs(
        &self,
        selection: ApiSelection,
        body: &serde_json::Value,
    ) -> Result<Vec<SearchHit>, ZitadelError> {
        if selection.org_service_v2 {
            return self.v2_list_orgs(body).await;
        }
        let url = self.url(&["v2", "organizations", "_search"])?;
        match self
            .rest::<_, SearchResponse>(op::LIST_ORGS, Method::POST, url, None, Some(body))
            .await
        {
            Ok(response) => Ok(response.result),
            Err(e) if e.is_route_missing() => self.v1_admin_search_orgs(body).await,
            Err(e) => Err(e),
        }
    }

    async fn user_exists(
        &self,
        selection: ApiSelection,
        user_id: &str,
    ) -> Result<Existence, ZitadelError> {
        match self.get_user(selection, user_id).await {
            Ok(_) => Ok(Existence::Exists),
            Err(e) if e.status() == Some(404) && e.id() == Some(super::ids::USER_NOT_FOUND) => {
                Ok(Existence::Gone)
            }
            Err(e) => Err(e),
        }
    }

    async fn org_exists(
        &self,
        selection: ApiSelection,
        org_id: &str,
    ) -> Result<Existence, ZitadelError> {
        let by_id = serde_json::json!({
            "query": {"offset": "0", "limit": 1},
            "queries": [{"idQuery": {"id": org_id}}],
        });
        if self
            .search_orgs(selection, &by_id)
            .await?
            .iter()
            .any(|hit| hit.id == org_id)
        {
            return Ok(Existence::Exists);
        }
        let any = serde_json::json!({"query": {"offset": "0", "limit": 1}});
        if self.search_orgs(selection, &any).await?.is_empty() {
            return Err(ZitadelError::Unproven(format!(
                "organization {org_id} is not visible to the operator, and no other organization is either: it may be deleted, or the service user may have lost its roles"
            )));
        }
        // Where v1 is the org metadata API, `x-zitadel-orgid` tells a deleted org
        // (`AUTH-Bs7Ds`) from one the caller lost its membership in (`AUTHZ-cdgFk` /
        // `AUTH-5mWD2`). Where v2 is, v1 may be gone (v5) and is not asked.
        if selection.org_metadata == Api::V2 {
            return Ok(Existence::Gone);
        }
        match self.v1_my_org(Some(org_id)).await {
            Ok(_) => Ok(Existence::Exists),
            Err(e) if e.is_org_lookup_failed() || e.is_route_missing() => Ok(Existence::Gone),
            Err(e) if e.is_permission() => Err(ZitadelError::Unproven(format!(
                "organization {org_id} is not visible to the operator although other organizations are, and ZITADEL refuses access to it ({e}): the service user's membership may have been removed"
            ))),
            Err(e) => Err(e),
        }
    }
}

/// An empty value means "delete this key" to newer v2 builds and is rejected by v1: never sent.
fn check_entries(entries: &[(&str, &[u8])]) -> Result<(), ZitadelError> {
    if entries.is_empty() {
        return Err(ZitadelError::InvalidRequest(
            "a metadata write needs at least one key".into(),
        ));
    }
    if let Some((key, _)) = entries.iter().find(|(_, value)| value.is_empty()) {
        return Err(ZitadelError::InvalidRequest(format!(
            "metadata key {key:?}: an empty value is not sent (ZITADEL v2 reads it as \"delete\")"
        )));
    }
    Ok(())
}

#[async_trait::async_trait]
impl ZitadelApi for HttpClient {
    async fn list_metadata(&self, target: &Target) -> Result<super::MetadataMap, ZitadelError> {
        Ok(self
            .list_metadata_for(target, Relevant::All)
            .await?
            .metadata)
    }

    async fn list_metadata_for(
        &self,
        target: &Target,
        relevant: Relevant<'_>,
    ) -> Result<Listing, ZitadelError> {
        self.on_service(service_of(target), move |selection| {
            Box::pin(self.list_with(selection, target, relevant))
        })
        .await
    }

    async fn bulk_set_metadata(
        &self,
        target: &Target,
        entries: &[(&str, &[u8])],
    ) -> Result<ObjectDetails, ZitadelError> {
        check_entries(entries)?;
        let service = service_of(target);
        self.on_service(service, move |selection| {
            Box::pin(async move {
                match selection.for_service(service) {
                    Api::V1 => self.v1_bulk_set(target, entries).await,
                    Api::V2 => {
                        self.ensure_user_in_org(selection, target).await?;
                        self.v2_set(target, entries).await
                    }
                }
            })
        })
        .await
    }

    async fn bulk_remove_metadata(
        &self,
        target: &Target,
        keys: &[&str],
    ) -> Result<ObjectDetails, ZitadelError> {
        if keys.is_empty() {
            return Err(ZitadelError::InvalidRequest(
                "a metadata removal needs at least one key".into(),
            ));
        }
        let service = service_of(target);
        self.on_service(service, move |selection| {
            Box::pin(async move {
                match selection.for_service(service) {
                    Api::V1 => self.v1_bulk_remove(target, keys).await,
                    Api::V2 => {
                        self.ensure_user_in_org(selection, target).await?;
                        self.v2_delete(target, keys).await
                    }
                }
            })
        })
        .await
    }

    async fn user_organization(&self, user_id: &str) -> Result<String, ZitadelError> {
        self.on_service(Service::User, move |selection| {
            Box::pin(self.user_org(selection, user_id))
        })
        .await
    }

    async fn find_organizations(&self, query: &OrgQuery) -> Result<Vec<Found>, ZitadelError> {
        let q = match query {
            OrgQuery::Name(name) => {
                serde_json::json!({"nameQuery": {"name": name, "method": "TEXT_QUERY_METHOD_EQUALS"}})
            }
            OrgQuery::Domain(domain) => {
                serde_json::json!({"domainQuery": {"domain": domain, "method": "TEXT_QUERY_METHOD_EQUALS_IGNORE_CASE"}})
            }
        };
        let body = serde_json::json!({"query": {"offset": "0", "limit": 100}, "queries": [q]});
        let hits = self
            .on_service(Service::Org, |selection| {
                Box::pin(self.search_orgs(selection, &body))
            })
            .await?;
        Ok(hits
            .into_iter()
            .filter(|h| !h.id.is_empty())
            .map(|h| Found {
                org_id: h.id.clone(),
                id: h.id,
            })
            .collect())
    }

    async fn find_users(&self, query: &UserQuery) -> Result<Vec<Found>, ZitadelError> {
        let hits = self
            .on_service(Service::User, move |selection| {
                Box::pin(async move {
                    if selection.user_service_v2 {
                        let method = "TEXT_QUERY_METHOD_EQUALS";
                        let queries = match query {
                            UserQuery::LoginName(login) => vec![
                                serde_json::json!({"loginNameQuery": {"loginName": login, "method": method}}),
                            ],
                            UserQuery::UserName { org_id, user_name } => vec![
                                serde_json::json!({"organizationIdQuery": {"organizationId": org_id}}),
                                serde_json::json!({"userNameQuery": {"userName": user_name, "method": method}}),
                            ],
                            UserQuery::Email { org_id, email } => vec![
                                serde_json::json!({"organizationIdQuery": {"organizationId": org_id}}),
                                serde_json::json!({"emailQuery": {"emailAddress": email, "method": "TEXT_QUERY_METHOD_EQUALS_IGNORE_CASE"}}),
                            ],
                        };
                        return self.v2_list_users(queries).await;
                    }
                    match query {
                        UserQuery::LoginName(login) => self.v1_user_by_login_name(login).await,
                        UserQuery::UserName { org_id, user_name } => {
                            let q = serde_json::json!({"userNameQuery": {"userName": user_name, "method": "TEXT_QUERY_METHOD_EQUALS"}});
                            self.v1_search_users(org_id, q).await
                        }
                        UserQuery::Email { org_id, email } => {
                            let q = serde_json::json!({"emailQuery": {"emailAddress": email, "method": "TEXT_QUERY_METHOD_EQUALS_IGNORE_CASE"}});
                            self.v1_search_users(org_id, q).await
                        }
                    }
                })
            })
            .await?;
        Ok(hits
            .into_iter()
            .filter(|h| !h.id.is_empty())
            .map(|h| Found {
                id: h.id,
                org_id: h.details.resource_owner.unwrap_or_default(),
            })
            .collect())
    }

    async fn target_exists(&self, target: &Target) -> Result<Existence, ZitadelError> {
        match target {
            Target::User { user_id, .. } => {
                self.on_service(Service::User, move |selection| {
                    Box::pin(self.user_exists(selection, user_id))
                })
                .await
            }
            Target::Org { org_id } => {
                self.on_service(Service::Org, move |selection| {
                    Box::pin(self.org_exists(selection, org_id))
                })
                .await
            }
        }
    }

    fn api_selection(&self) -> Option<ApiSelection> {
        self.selector.get().map(|(_, selection)| selection)
    }

    async fn list_events(
        &self,
        query: &super::EventQuery,
    ) -> Result<Vec<super::Event>, ZitadelError> {
        self.admin_list_events(query).await
    }

    fn caller_id(&self) -> Option<String> {
        match &self.config.token {
            TokenSource::JwtProfile(profile) => Some(profile.user_id().to_owned()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_means_unlimited() {
        assert!(RateLimit::per_second(0).is_none());
    }

    #[tokio::test]
    async fn requests_are_spaced_by_the_budget() {
        let limit = RateLimit::per_second(50).expect("limit");
        let started = std::time::Instant::now();
        let waits = (0..6).map(|_| limit.acquire());
        futures::future::join_all(waits).await;
        // Six requests at 50/s: the first goes at once, the sixth 5 × 20 ms later.
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(95), "{elapsed:?}");
    }

    #[test]
    fn empty_values_and_empty_batches_are_never_sent() {
        assert!(check_entries(&[("a", b"x")]).is_ok());
        let err = check_entries(&[("a", b"x"), ("b", b"")]).expect_err("empty value");
        assert!(matches!(err, ZitadelError::InvalidRequest(_)));
        assert!(err.to_string().contains("\"b\""));
        assert!(check_entries(&[]).is_err());
    }
}
