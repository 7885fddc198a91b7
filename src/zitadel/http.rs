//! [`ZitadelApi`] over ZITADEL's REST/JSON gateway (Management API v1).

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use url::Url;

use super::{
    Found, MetadataMap, ObjectDetails, OrgQuery, Target, TokenSource, UserQuery, ZitadelApi,
    ZitadelError,
};
use crate::metrics::Metrics;

/// Page size used when listing metadata (v1 has no maximum; keep responses moderate).
const LIST_PAGE: u32 = 1000;

/// Largest response body read from ZITADEL, in bytes (16 MiB). Anything longer fails with
/// [`ZitadelError::ResponseTooLarge`] after at most this much was buffered, whatever the server
/// claims in `Content-Length` or streams.
///
/// Only list pages can legitimately come near it: one metadata item is at most about 668 kB of
/// JSON (a 500 000-byte value is 666 668 base64 characters, a key at most 200 characters, i.e.
/// at most 2 400 bytes even fully `\u`-escaped, plus its `details`), so a full page of
/// [`LIST_PAGE`] items of maximal size could be ~670 MB. [`HttpClient::list_metadata`] therefore
/// retries a page that is too large with a page size ten times smaller, down to one item per
/// page, which always fits: no response ZITADEL may send under the contract is rejected, and
/// memory per request stays bounded. (ZITADEL itself answers through a gRPC connection whose
/// default message limit is 4 MiB, so real pages should never get here.)
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

/// The reqwest-based ZITADEL client.
#[derive(Clone, Debug)]
pub struct HttpClient {
    http: reqwest::Client,
    config: ClientConfig,
    metrics: Option<Arc<Metrics>>,
    token_seen: Arc<TokenFingerprint>,
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

/// ZITADEL operation names (the RPCs behind the REST calls): the `operation` metric label.
mod op {
    pub const LIST_ORG: &str = "ListOrgMetadata";
    pub const LIST_USER: &str = "ListUserMetadata";
    pub const BULK_SET_ORG: &str = "BulkSetOrgMetadata";
    pub const BULK_SET_USER: &str = "BulkSetUserMetadata";
    pub const BULK_REMOVE_ORG: &str = "BulkRemoveOrgMetadata";
    pub const BULK_REMOVE_USER: &str = "BulkRemoveUserMetadata";
    pub const GET_USER: &str = "GetUserByID";
    pub const LIST_ORGS: &str = "ListOrganizations";
    pub const GET_USER_BY_LOGIN_NAME: &str = "GetUserByLoginNameGlobal";
    pub const LIST_USERS: &str = "ListUsers";
}

fn by_target(target: &Target, org: &'static str, user: &'static str) -> &'static str {
    match target {
        Target::Org { .. } => org,
        Target::User { .. } => user,
    }
}

#[derive(Serialize)]
struct ListRequest {
    query: ListQuery,
}

#[derive(Serialize)]
struct ListQuery {
    /// uint64 → JSON string, as protojson writes it.
    offset: String,
    limit: u32,
    asc: bool,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ListResponse {
    #[serde(default)]
    details: ListDetails,
    #[serde(default)]
    result: Vec<MetadataItem>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ListDetails {
    #[serde(default, deserialize_with = "super::string_or_number")]
    total_result: Option<String>,
}

#[derive(Deserialize)]
struct MetadataItem {
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Serialize)]
struct BulkSetRequest<'a> {
    metadata: Vec<BulkSetItem<'a>>,
}

#[derive(Serialize)]
struct BulkSetItem<'a> {
    key: &'a str,
    value: String,
}

#[derive(Serialize)]
struct BulkRemoveRequest<'a> {
    keys: &'a [&'a str],
}

#[derive(Deserialize, Default)]
struct DetailsResponse {
    #[serde(default)]
    details: ObjectDetails,
}

#[derive(Deserialize)]
struct GetUserResponse {
    #[serde(default)]
    details: ObjectDetails,
    #[serde(default)]
    user: Option<UserV2>,
}

#[derive(Deserialize, Default)]
struct SearchResponse {
    #[serde(default)]
    result: Vec<SearchHit>,
}

#[derive(Deserialize)]
struct SearchHit {
    #[serde(default)]
    id: String,
    #[serde(default)]
    details: ObjectDetails,
}

#[derive(Deserialize, Default)]
struct UserByLoginName {
    #[serde(default)]
    user: Option<SearchHit>,
}

#[derive(Deserialize)]
struct UserV2 {
    #[serde(default)]
    details: ObjectDetails,
}

impl HttpClient {
    /// Build a client.
    pub fn new(mut config: ClientConfig) -> Result<Self, ZitadelError> {
        let http = config.build_http()?;
        Ok(Self::with_http(config, http))
    }

    /// A client using an already built reqwest client (see [`ClientConfig::build_http`]).
    pub fn with_http(config: ClientConfig, http: reqwest::Client) -> Self {
        Self {
            http,
            config,
            metrics: None,
            token_seen: Arc::default(),
        }
    }

    /// An authenticated probe: `GET /management/v1/orgs/me`. Returns the id and name of the
    /// organization the credentials act in.
    pub async fn probe(&self) -> Result<(String, String), ZitadelError> {
        #[derive(Deserialize, Default)]
        struct MyOrg {
            #[serde(default)]
            org: Option<OrgItem>,
        }
        #[derive(Deserialize)]
        struct OrgItem {
            #[serde(default)]
            id: String,
            #[serde(default)]
            name: String,
        }
        let url = self.url(&["management", "v1", "orgs", "me"])?;
        let me: MyOrg = self
            .call::<(), MyOrg>("GetMyOrg", Method::GET, url, None, None)
            .await?;
        let org = me
            .org
            .ok_or_else(|| ZitadelError::Decode("orgs/me answered without an org".into()))?;
        Ok((org.id, org.name))
    }

    /// Record requests, latencies and token rotations into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Base URL in use.
    pub fn base_url(&self) -> &Url {
        &self.config.base_url
    }

    /// `…/management/v1/metadata/<last>` or `…/management/v1/users/{id}/metadata/<last>`.
    fn metadata_url(&self, target: &Target, last: &str) -> Result<Url, ZitadelError> {
        let mut segments = vec!["management", "v1"];
        if let Target::User { user_id, .. } = target {
            segments.push("users");
            segments.push(user_id);
        }
        segments.push("metadata");
        segments.push(last);
        self.url(&segments)
    }

    fn url(&self, segments: &[&str]) -> Result<Url, ZitadelError> {
        let mut url = self.config.base_url.clone();
        url.path_segments_mut()
            .map_err(|_| ZitadelError::Transport("ZITADEL URL cannot be a base".into()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// One request; `operation` names it in the metrics.
    async fn call<B: Serialize + ?Sized, R: DeserializeOwned + Default>(
        &self,
        operation: &'static str,
        method: Method,
        url: Url,
        org_id: Option<&str>,
        body: Option<&B>,
    ) -> Result<R, ZitadelError> {
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
        let mut result = self
            .send(method.clone(), url.clone(), org_id, body, &token)
            .await;
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
            result = self.send(method, url, org_id, body, &fresh).await;
        }
        if let Some(m) = &self.metrics {
            let code = match &result {
                Ok((status, _, _)) => status.as_u16().to_string(),
                Err(ZitadelError::Timeout(_)) => "timeout".to_string(),
                Err(_) => "error".to_string(),
            };
            m.zitadel_request(operation, &code, started.elapsed());
        }
        let (status, retry_after, body) = result?;
        if !status.is_success() {
            return Err(ZitadelError::from_response(
                status.as_u16(),
                retry_after.as_deref(),
                &String::from_utf8_lossy(&body),
            ));
        }
        if body.trim_ascii().is_empty() || status == StatusCode::NO_CONTENT {
            return Ok(R::default());
        }
        serde_json::from_slice(&body).map_err(|e| ZitadelError::Decode(e.to_string()))
    }

    /// Send a request and read the answer: (status, `Retry-After`, body). A 2xx body longer
    /// than [`MAX_RESPONSE_BYTES`] is an error; an error body is cut at 64 KiB.
    async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        url: Url,
        org_id: Option<&str>,
        body: Option<&B>,
        token: &str,
    ) -> Result<(StatusCode, Option<String>, Vec<u8>), ZitadelError> {
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(token)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(org) = org_id {
            request = request.header("x-zitadel-orgid", org);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.transport_error(e))?;
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
            BodyError::TooLarge { limit } => ZitadelError::ResponseTooLarge { limit },
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
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(BodyError::TooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
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

#[async_trait::async_trait]
impl ZitadelApi for HttpClient {
    async fn list_metadata(&self, target: &Target) -> Result<MetadataMap, ZitadelError> {
        let url = self.metadata_url(target, "_search")?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut out = MetadataMap::new();
        let mut offset: u64 = 0;
        let mut limit = LIST_PAGE;
        loop {
            let body = ListRequest {
                query: ListQuery {
                    offset: offset.to_string(),
                    limit,
                    asc: true,
                },
            };
            let page: ListResponse = match self
                .call(
                    by_target(target, op::LIST_ORG, op::LIST_USER),
                    Method::POST,
                    url.clone(),
                    Some(target.org_id()),
                    Some(&body),
                )
                .await
            {
                Ok(page) => page,
                // Large values: ask again for fewer items (see MAX_RESPONSE_BYTES), whether our
                // cap or ZITADEL's gRPC layer refused the page for its size.
                Err(e)
                    if limit > 1
                        && (matches!(e, ZitadelError::ResponseTooLarge { .. })
                            || e.is_message_too_large()) =>
                {
                    limit = (limit / 10).max(1);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let received = page.result.len() as u64;
            let known = out.len();
            for item in page.result {
                let value = b64
                    .decode(item.value.as_bytes())
                    .or_else(|_| {
                        base64::engine::general_purpose::URL_SAFE.decode(item.value.as_bytes())
                    })
                    .map_err(|_| {
                        ZitadelError::Decode(format!(
                            "metadata key {:?}: value is not base64",
                            item.key
                        ))
                    })?;
                out.insert(item.key, value);
            }
            offset += received;
            let total = page
                .details
                .total_result
                .as_deref()
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0);
            if received == 0 || offset >= total {
                return Ok(out);
            }
            // A server that ignores `offset` (or keeps claiming more results) would page forever.
            if out.len() == known {
                return Err(ZitadelError::Decode(format!(
                    "metadata list claims {total} results but page at offset {} brought no new key",
                    offset - received
                )));
            }
        }
    }

    async fn bulk_set_metadata(
        &self,
        target: &Target,
        entries: &[(&str, &[u8])],
    ) -> Result<ObjectDetails, ZitadelError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = BulkSetRequest {
            metadata: entries
                .iter()
                .map(|(key, value)| BulkSetItem {
                    key,
                    value: b64.encode(value),
                })
                .collect(),
        };
        let url = self.metadata_url(target, "_bulk")?;
        let response: DetailsResponse = self
            .call(
                by_target(target, op::BULK_SET_ORG, op::BULK_SET_USER),
                Method::POST,
                url,
                Some(target.org_id()),
                Some(&body),
            )
            .await?;
        Ok(response.details)
    }

    async fn bulk_remove_metadata(
        &self,
        target: &Target,
        keys: &[&str],
    ) -> Result<ObjectDetails, ZitadelError> {
        let url = self.metadata_url(target, "_bulk")?;
        let response: DetailsResponse = self
            .call(
                by_target(target, op::BULK_REMOVE_ORG, op::BULK_REMOVE_USER),
                Method::DELETE,
                url,
                Some(target.org_id()),
                Some(&BulkRemoveRequest { keys }),
            )
            .await?;
        Ok(response.details)
    }

    async fn user_organization(&self, user_id: &str) -> Result<String, ZitadelError> {
        let url = self.url(&["v2", "users", user_id])?;
        let response: Option<GetUserResponse> = self
            .call::<(), Option<GetUserResponse>>(op::GET_USER, Method::GET, url, None, None)
            .await?;
        response
            .and_then(|r| {
                r.user
                    .and_then(|u| u.details.resource_owner)
                    .or(r.details.resource_owner)
            })
            .filter(|org| !org.is_empty())
            .ok_or_else(|| {
                ZitadelError::Decode(format!("user {user_id}: answer names no organization"))
            })
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
        let url = self.url(&["v2", "organizations", "_search"])?;
        let response: SearchResponse = self
            .call(op::LIST_ORGS, Method::POST, url, None, Some(&body))
            .await?;
        Ok(response
            .result
            .into_iter()
            .filter(|h| !h.id.is_empty())
            .map(|h| Found {
                org_id: h.id.clone(),
                id: h.id,
            })
            .collect())
    }

    async fn find_users(&self, query: &UserQuery) -> Result<Vec<Found>, ZitadelError> {
        let hits = match query {
            UserQuery::LoginName(login) => {
                let mut url =
                    self.url(&["management", "v1", "global", "users", "_by_login_name"])?;
                url.query_pairs_mut().append_pair("loginName", login);
                match self
                    .call::<(), UserByLoginName>(
                        op::GET_USER_BY_LOGIN_NAME,
                        Method::GET,
                        url,
                        None,
                        None,
                    )
                    .await
                {
                    Ok(r) => r.user.into_iter().collect(),
                    Err(e) if e.status() == Some(404) => Vec::new(),
                    Err(e) => return Err(e),
                }
            }
            UserQuery::UserName { org_id, user_name } => {
                let q = serde_json::json!({"userNameQuery": {"userName": user_name, "method": "TEXT_QUERY_METHOD_EQUALS"}});
                self.search_users(org_id, q).await?
            }
            UserQuery::Email { org_id, email } => {
                let q = serde_json::json!({"emailQuery": {"emailAddress": email, "method": "TEXT_QUERY_METHOD_EQUALS_IGNORE_CASE"}});
                self.search_users(org_id, q).await?
            }
        };
        Ok(hits
            .into_iter()
            .filter(|h| !h.id.is_empty())
            .map(|h| Found {
                id: h.id,
                org_id: h.details.resource_owner.unwrap_or_default(),
            })
            .collect())
    }
}

impl HttpClient {
    /// `POST /management/v1/users/_search` in `org_id` with one query.
    async fn search_users(
        &self,
        org_id: &str,
        query: serde_json::Value,
    ) -> Result<Vec<SearchHit>, ZitadelError> {
        let body = serde_json::json!({"query": {"offset": "0", "limit": 100}, "queries": [query]});
        let url = self.url(&["management", "v1", "users", "_search"])?;
        let response: SearchResponse = self
            .call(op::LIST_USERS, Method::POST, url, Some(org_id), Some(&body))
            .await?;
        Ok(response.result)
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
}
