//! Transport: one request with token, rate limit, size caps and typed errors.

use super::*;

/// The 2xx body of a call: [`Reply::json`] decodes it, [`Reply::bytes`] gives it raw.
pub(crate) struct Reply(Vec<u8>);

impl Reply {
    /// The body decoded as `R` (an empty body is `R::default()`).
    pub(crate) fn json<R: DeserializeOwned + Default>(&self) -> Result<R, ZitadelError> {
        if self.0.trim_ascii().is_empty() {
            return Ok(R::default());
        }
        serde_json::from_slice(&self.0).map_err(|e| ZitadelError::Decode(e.to_string()))
    }

    /// The body as received.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl HttpClient {
    /// A REST call (`body`, if any, sent as JSON).
    pub(crate) async fn rest<B: Serialize + ?Sized>(
        &self,
        operation: &'static str,
        method: Method,
        url: Url,
        org_id: Option<&str>,
        body: Option<&B>,
    ) -> Result<Reply, ZitadelError> {
        let body = body.map(to_json).transpose()?;
        self.execute(Request {
            operation,
            method,
            url,
            org_id,
            body,
            connect: false,
            close: false,
        })
        .await
        .map(Reply)
    }

    /// A REST `POST` whose answer may be large (an event-log page: up to 1,000 events, ~0.6 MB),
    /// on a connection closed after it (`Connection: close`). A pooled HTTP/1 connection keeps
    /// the read buffer it grew for the largest answer it carried: event pages read over pooled
    /// connections would leave such buffers on many of the connections the reconciles use.
    pub(crate) async fn rest_large<B: Serialize + ?Sized>(
        &self,
        operation: &'static str,
        url: Url,
        body: &B,
    ) -> Result<Reply, ZitadelError> {
        self.execute(Request {
            operation,
            method: Method::POST,
            url,
            org_id: None,
            body: Some(to_json(body)?),
            connect: false,
            close: true,
        })
        .await
        .map(Reply)
    }

    /// A Connect unary call (`POST /<path>`, JSON body); the path is the operation name.
    pub(crate) async fn connect<B: Serialize + ?Sized>(
        &self,
        path: &'static str,
        body: &B,
    ) -> Result<Reply, ZitadelError> {
        self.connect_as(path, path, body).await
    }

    /// A Connect unary call counted in metrics as `operation`.
    pub(super) async fn connect_as<B: Serialize + ?Sized>(
        &self,
        operation: &'static str,
        path: &'static str,
        body: &B,
    ) -> Result<Reply, ZitadelError> {
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
            close: false,
        })
        .await
        .map(Reply)
    }

    /// Before each send: count a token rotation (`token` differs from the last one used), then
    /// wait for the request's slot in the rate limit.
    async fn before_send(&self, token: &str) {
        if self.token_seen.changed(token)
            && let Some(m) = &self.metrics
        {
            m.token_refreshed();
        }
        if let Some(limit) = &self.config.rate_limit {
            limit.acquire().await;
        }
    }

    /// One request (with a single retry on 401 when the token source can refresh); the 2xx
    /// body, or the typed error.
    pub(super) async fn execute(&self, request: Request<'_>) -> Result<Vec<u8>, ZitadelError> {
        let token = self.config.token.token().await?;
        self.before_send(&token).await;
        let started = Instant::now();
        let mut result = self.send(&request, &token).await;
        // An expired or rotated token: fetch a new one and retry once.
        if matches!(&result, Ok((status, _, _)) if *status == StatusCode::UNAUTHORIZED)
            && self.config.token.refreshable()
        {
            self.config.token.invalidate().await;
            let fresh = self.config.token.token().await?;
            self.before_send(&fresh).await;
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
    pub(super) async fn send(
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
        if request.close {
            builder = builder.header(reqwest::header::CONNECTION, "close");
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

    pub(super) fn body_error(&self, e: BodyError) -> ZitadelError {
        match e {
            BodyError::TooLarge { limit, size } => ZitadelError::ResponseTooLarge { limit, size },
            BodyError::Read(e) => self.transport_error(e),
        }
    }

    pub(super) fn transport_error(&self, e: reqwest::Error) -> ZitadelError {
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
pub(super) fn error_chain(e: &reqwest::Error) -> String {
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
    // The announced length (within the limit; at most the 4 MiB ZITADEL's REST gateway relays,
    // whatever a server claims) at once: no doubling copies of a large answer.
    let mut body = Vec::with_capacity(size.map_or(0, |len| len as usize).min(4 << 20));
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

/// One HTTP request.
pub(super) struct Request<'a> {
    operation: &'static str,
    method: Method,
    url: Url,
    org_id: Option<&'a str>,
    body: Option<Vec<u8>>,
    connect: bool,
    /// Not kept in the pool afterwards (`Connection: close`).
    close: bool,
}

pub(super) fn to_json<B: Serialize + ?Sized>(body: &B) -> Result<Vec<u8>, ZitadelError> {
    serde_json::to_vec(body).map_err(|e| ZitadelError::Decode(format!("cannot encode: {e}")))
}
