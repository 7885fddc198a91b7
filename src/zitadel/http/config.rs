//! Client settings and the request budget.

use super::*;

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

pub(super) static PROCESS_RATE_LIMIT: OnceLock<Arc<RateLimit>> = OnceLock::new();

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
