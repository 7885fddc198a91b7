//! The axum server: request recording, fault injection, the emulated API (as the router's
//! fallback, with grpc-gateway routing done by [`super::routes`]; the OAuth / OIDC endpoints are
//! answered by [`super::oauth`]) and the `/_emulator/*` admin routes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State as AxState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::conn::Connections;
use super::errors::{ApiError, Msg, code};
use super::handlers::{self, WriteFault};
use super::lock;
use super::model::{Fault, FaultKind, Operation, RECORDED_BODY_LIMIT, RecordedRequest};
use super::oauth;
use super::routes;
use super::state::{Aggregate, State};
use super::wire;

/// Largest request body read (anything bigger is far beyond gRPC's 4 MiB anyway).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Body of the plain-text 429 of the edge / a blocked instance.
const BLOCKED_TEXT: &str = "Your ZITADEL instance is blocked.";

#[derive(Debug, Default)]
struct RequestLog {
    next_id: u64,
    entries: Vec<(u64, RecordedRequest)>,
}

/// Shared server state.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) state: Mutex<State>,
    log: Mutex<RequestLog>,
    faults: Mutex<Vec<Fault>>,
    /// Draws of probabilistic faults ([`Fault::probability`]).
    fault_rng: Mutex<StdRng>,
    /// Live connections, for [`FaultKind::Reset`].
    pub(crate) connections: Arc<Connections>,
    /// Whether answer bodies are kept in the request log.
    pub(crate) record_answers: std::sync::atomic::AtomicBool,
    shutdown: watch::Receiver<bool>,
}

/// Seed of the fault generator until [`Core::seed_faults`] sets another.
const DEFAULT_FAULT_SEED: u64 = 0x5eed_2026;

/// What the fault stage decided.
enum FaultOutcome {
    /// Handle the request (after the total latency), with a write fault if one applies.
    Proceed(Option<WriteFault>),
    /// Answer with this response.
    Respond(Response),
    /// Never answer.
    Hang,
    /// Close the connection without answering.
    Reset,
    /// Handle the request (after the total latency, with a write fault if one applies), then
    /// close the connection instead of answering.
    ProceedThenReset(Option<WriteFault>),
}

impl Core {
    pub(crate) fn new(shutdown: watch::Receiver<bool>) -> Self {
        Core {
            state: Mutex::new(State::default()),
            log: Mutex::new(RequestLog::default()),
            faults: Mutex::new(Vec::new()),
            fault_rng: Mutex::new(StdRng::seed_from_u64(DEFAULT_FAULT_SEED)),
            connections: Arc::default(),
            record_answers: std::sync::atomic::AtomicBool::new(true),
            shutdown,
        }
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.log)
            .entries
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }

    pub(crate) fn count(&self, op: Operation) -> usize {
        lock(&self.log)
            .entries
            .iter()
            .filter(|(_, r)| r.operation == op)
            .count()
    }

    pub(crate) fn clear_requests(&self) {
        lock(&self.log).entries.clear();
    }

    pub(crate) fn inject(&self, fault: Fault) {
        lock(&self.faults).push(fault);
    }

    pub(crate) fn clear_faults(&self) {
        lock(&self.faults).clear();
    }

    pub(crate) fn seed_faults(&self, seed: u64) {
        *lock(&self.fault_rng) = StdRng::seed_from_u64(seed);
    }

    fn faults(&self) -> Vec<Fault> {
        lock(&self.faults).clone()
    }

    fn record_start(&self, request: RecordedRequest) -> u64 {
        let mut log = lock(&self.log);
        let id = log.next_id;
        log.next_id += 1;
        log.entries.push((id, request));
        id
    }

    fn record_finish(&self, id: u64, status: u16, body: Value, content_type: String) {
        let mut log = lock(&self.log);
        if let Some((_, r)) = log.entries.iter_mut().rev().find(|(i, _)| *i == id) {
            r.status = status;
            r.response_body = body;
            r.response_content_type = content_type;
        }
    }

    /// Consumes the faults that apply to `op`: all latencies add up, the first terminal fault
    /// wins; without a terminal fault, the first write fault applies to a metadata Set/BulkSet.
    fn take_faults(&self, op: Operation) -> (Duration, Option<FaultKind>, Option<WriteFault>) {
        let mut faults = lock(&self.faults);
        let mut rng = lock(&self.fault_rng);
        // One draw per request and probabilistic fault that could act on it, in fault order: the
        // same seed and request sequence hit the same requests.
        let mut hits = |fault: &Fault| fault.probability.is_none_or(|p| rng.random::<f64>() < p);
        let mut latency = Duration::ZERO;
        let mut terminal = None;
        for fault in faults.iter_mut() {
            if !fault.applies_to(op) || fault.times == Some(0) {
                continue;
            }
            let kind = match &fault.kind {
                FaultKind::DropWrites | FaultKind::CorruptWrites => continue,
                FaultKind::Latency(_) => None,
                _ if terminal.is_some() => continue,
                other => Some(other.clone()),
            };
            if !hits(fault) {
                continue;
            }
            if let FaultKind::Latency(d) = &fault.kind {
                latency += *d;
            }
            if let Some(n) = fault.times.as_mut() {
                *n -= 1;
            }
            if kind.is_some() {
                terminal = kind;
            }
        }
        let mut write = None;
        if terminal.is_none() && op.sets_metadata() {
            let candidate = faults
                .iter_mut()
                .filter(|f| f.applies_to(op) && f.times != Some(0))
                .filter(|f| matches!(f.kind, FaultKind::DropWrites | FaultKind::CorruptWrites))
                .find(|f| hits(f));
            if let Some(fault) = candidate {
                if let Some(n) = fault.times.as_mut() {
                    *n -= 1;
                }
                write = Some(match fault.kind {
                    FaultKind::CorruptWrites => WriteFault::Corrupt,
                    _ => WriteFault::Drop,
                });
            }
        }
        faults.retain(|f| f.times != Some(0));
        (latency, terminal, write)
    }

    async fn apply_faults(&self, op: Operation, connect: bool) -> FaultOutcome {
        let (latency, terminal, write) = self.take_faults(op);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let german = lock(&self.state).german;
        match terminal {
            None
            | Some(FaultKind::Latency(_) | FaultKind::DropWrites | FaultKind::CorruptWrites) => {
                FaultOutcome::Proceed(write)
            }
            Some(FaultKind::Status { http, code }) => {
                let reason = StatusCode::from_u16(http)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("injected fault");
                FaultOutcome::Respond(
                    ApiError::plain(code, reason)
                        .with_http(http)
                        .render_for(connect, german),
                )
            }
            Some(FaultKind::TooManyRequests {
                retry_after,
                plain_text: true,
            }) => {
                let mut resp = (StatusCode::TOO_MANY_REQUESTS, BLOCKED_TEXT).into_response();
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                if let Some(secs) = retry_after {
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
                FaultOutcome::Respond(resp)
            }
            Some(FaultKind::TooManyRequests {
                retry_after,
                plain_text: false,
            }) => FaultOutcome::Respond(
                ApiError::zitadel(code::RESOURCE_EXHAUSTED, "QUOTA-vjAy8", Msg::QuotaExhausted)
                    .with_retry_after(retry_after)
                    .render_for(connect, german),
            ),
            Some(FaultKind::OrgLookupFailed) => FaultOutcome::Respond(
                ApiError::zitadel(code::PERMISSION_DENIED, "AUTH-Bs7Ds", Msg::OrgDoesNotExist)
                    .render_for(connect, german),
            ),
            Some(FaultKind::NoMembership) => {
                FaultOutcome::Respond(handlers::no_membership().render_for(connect, german))
            }
            // A missing route is the gateway's catch-all, whatever the transport.
            Some(FaultKind::RouteNotFound) => {
                FaultOutcome::Respond(ApiError::plain(code::NOT_FOUND, "Not Found").render(german))
            }
            Some(FaultKind::Hang) => FaultOutcome::Hang,
            Some(FaultKind::Reset) => FaultOutcome::Reset,
            Some(FaultKind::ResetAfterHandling) => FaultOutcome::ProceedThenReset(write),
        }
    }

    /// Resolves once the emulator shuts down (or its last handle is dropped).
    async fn shutdown_signal(&self) {
        let mut rx = self.shutdown.clone();
        // An error means the sender is gone, which is a shutdown as well.
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// JSON snapshot for `GET /_emulator/state`.
    pub(crate) fn snapshot(&self) -> Value {
        let st = lock(&self.state);
        let orgs: Vec<Value> = st
            .orgs
            .values()
            .map(|o| {
                let domains: Vec<Value> = o
                    .domains
                    .iter()
                    .map(|d| json!({ "domain": d.domain, "verified": d.verified }))
                    .collect();
                json!({
                    "id": o.id,
                    "name": o.name,
                    "primaryDomain": o.primary_domain,
                    "domains": domains,
                    "sequence": o.agg.sequence,
                    "metadata": metadata_snapshot(&o.agg),
                })
            })
            .collect();
        let users: Vec<Value> = st
            .users
            .values()
            .map(|u| {
                json!({
                    "id": u.id,
                    "orgId": u.org_id,
                    "userName": u.user_name,
                    "loginName": u.login_name(&st.orgs),
                    "loginNames": u.login_names(&st.orgs),
                    "email": u.email(&st.orgs),
                    "sequence": u.agg.sequence,
                    "metadata": metadata_snapshot(&u.agg),
                })
            })
            .collect();
        let service_users: Vec<Value> = st
            .service_users
            .iter()
            .map(|(id, u)| {
                json!({
                    "id": id,
                    "ownerOrg": u.grant.owner_org,
                    "keyIds": u.keys.keys().collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "orgs": orgs,
            "users": users,
            "issuer": st.issuer,
            "serviceUsers": service_users,
            "issuedTokens": st.issued_tokens.len(),
            "mode": st.mode,
            "profile": st.profile.to_string(),
            "listOrder": st.list_order,
            "events": st.all_events().len(),
            "german": st.german,
            "defaultOrg": st.default_org,
            "tokens": st.tokens.len(),
            "totalEvents": st.total_events,
        })
    }
}

fn metadata_snapshot(agg: &Aggregate) -> Vec<Value> {
    agg.metadata
        .iter()
        .map(|(key, e)| {
            let (value, encoding) = match std::str::from_utf8(&e.value) {
                Ok(text) => (text.to_owned(), "utf8"),
                Err(_) => (wire::base64(&e.value), "base64"),
            };
            json!({
                "key": key,
                "value": value,
                "encoding": encoding,
                "sequence": e.sequence,
                "creationDate": wire::timestamp(e.creation_date),
                "changeDate": wire::timestamp(e.change_date),
            })
        })
        .collect()
}

/// Microseconds since the Unix epoch (0 if the clock is before it).
fn unix_micros_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A body as recorded: `null` when empty, JSON when it parses, else the raw text; bodies over
/// [`RECORDED_BODY_LIMIT`] as a note of their size.
fn recorded_body(bytes: &[u8]) -> Value {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    if bytes.len() > RECORDED_BODY_LIMIT {
        return Value::String(format!("<{} bytes not recorded>", bytes.len()));
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// Builds the router.
pub(crate) fn router(core: Arc<Core>) -> Router {
    Router::new()
        .route("/_emulator/state", get(admin_state))
        .route(
            "/_emulator/requests",
            get(admin_requests).delete(admin_clear_requests),
        )
        .route(
            "/_emulator/faults",
            get(admin_faults)
                .post(admin_add_fault)
                .delete(admin_clear_faults),
        )
        .fallback(api)
        .with_state(core)
}

async fn api(AxState(core): AxState<Arc<Core>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let method = parts.method.as_str().to_owned();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or_default().to_owned();
    let facts = lock(&core.state).profile.facts();
    let route = routes::route(&method, &path, &facts);
    let operation = route.operation();
    let connect = route.is_connect();
    let org_header = parts
        .headers
        .get("x-zitadel-orgid")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let (bytes, too_large) = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => (bytes, false),
        Err(_) => (Bytes::new(), true),
    };
    let caller = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|token| lock(&core.state).token_grant(token))
        .and_then(|grant| grant.user_id);
    let id = core.record_start(RecordedRequest {
        method: method.clone(),
        path: path.clone(),
        operation,
        org_header,
        status: 0,
        body: recorded_body(&bytes),
        received_unix_micros: unix_micros_now(),
        response_body: Value::Null,
        response_content_type: String::new(),
        caller,
    });
    let outcome = core.apply_faults(operation, connect).await;
    let reset_after = matches!(outcome, FaultOutcome::ProceedThenReset(_));
    let response = match outcome {
        FaultOutcome::Respond(resp) => resp,
        FaultOutcome::Hang => {
            tracing::debug!(%method, %path, %operation, "emulator: hanging request");
            core.shutdown_signal().await;
            return (StatusCode::SERVICE_UNAVAILABLE, "emulator shut down").into_response();
        }
        FaultOutcome::Reset => {
            if reset_connection(&core, &parts.extensions) {
                tracing::debug!(%method, %path, %operation, "emulator: resetting the connection");
                // Never sent: writing it fails and the connection closes with a RST.
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
            (StatusCode::SERVICE_UNAVAILABLE, "connection reset").into_response()
        }
        FaultOutcome::Proceed(_) | FaultOutcome::ProceedThenReset(_) if too_large => {
            let german = lock(&core.state).german;
            ApiError::plain(
                code::RESOURCE_EXHAUSTED,
                format!("grpc: received message larger than max (> {MAX_BODY})"),
            )
            .render_for(connect, german)
        }
        FaultOutcome::Proceed(_) | FaultOutcome::ProceedThenReset(_)
            if Operation::OIDC.contains(&operation) =>
        {
            oauth::handle(&core.state, operation, &parts.headers, &query, &bytes)
        }
        FaultOutcome::Proceed(write) | FaultOutcome::ProceedThenReset(write) => {
            handlers::handle(&core.state, &route, &parts.headers, &query, &bytes, write)
        }
    };
    if reset_after && reset_connection(&core, &parts.extensions) {
        tracing::debug!(%method, %path, %operation, "emulator: handled, resetting the connection");
        // Recorded as unanswered (status 0): the client never sees this response.
        return response;
    }
    let status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    let answer = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let recorded = if core
        .record_answers
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        recorded_body(&answer)
    } else {
        Value::Null
    };
    core.record_finish(id, status, recorded, content_type);
    tracing::debug!(%method, %path, %operation, status, "emulator: request");
    Response::from_parts(parts, axum::body::Body::from(answer))
}

/// Resets the connection the request came on ([`FaultKind::Reset`]); false if it is not known
/// (not served through the resettable listener).
fn reset_connection(core: &Core, extensions: &axum::http::Extensions) -> bool {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(peer)| core.connections.reset(*peer))
}

fn loopback_only(addr: SocketAddr) -> Result<(), Box<Response>> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(Box::new(
            (StatusCode::FORBIDDEN, "admin routes are loopback-only").into_response(),
        ))
    }
}

async fn admin_state(
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    AxState(core): AxState<Arc<Core>>,
) -> Response {
    match loopback_only(addr) {
        Ok(()) => Json(core.snapshot()).into_response(),
        Err(resp) => *resp,
    }
}

async fn admin_requests(
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    AxState(core): AxState<Arc<Core>>,
) -> Response {
    match loopback_only(addr) {
        Ok(()) => Json(core.requests()).into_response(),
        Err(resp) => *resp,
    }
}

async fn admin_clear_requests(
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    AxState(core): AxState<Arc<Core>>,
) -> Response {
    match loopback_only(addr) {
        Ok(()) => {
            core.clear_requests();
            StatusCode::NO_CONTENT.into_response()
        }
        Err(resp) => *resp,
    }
}

async fn admin_faults(
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    AxState(core): AxState<Arc<Core>>,
) -> Response {
    match loopback_only(addr) {
        Ok(()) => Json(core.faults()).into_response(),
        Err(resp) => *resp,
    }
}

async fn admin_add_fault(
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    AxState(core): AxState<Arc<Core>>,
    body: Bytes,
) -> Response {
    if let Err(resp) = loopback_only(addr) {
        return *resp;
    }
    match serde_json::from_slice::<Fault>(&body) {
        Ok(fault) => {
            core.inject(fault);
            Json(core.faults()).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": format!("invalid fault: {e}") })),
        )
            .into_response(),
    }
}

async fn admin_clear_faults(
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    AxState(core): AxState<Arc<Core>>,
) -> Response {
    match loopback_only(addr) {
        Ok(()) => {
            core.clear_faults();
            StatusCode::NO_CONTENT.into_response()
        }
        Err(resp) => *resp,
    }
}
