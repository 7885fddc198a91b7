//! The HTTP endpoints: `/healthz` and `/readyz` on the health address, `/metrics` on the metrics
//! address (one listener serves all three when both addresses are equal).
//!
//! - `/healthz`: 200 while the process runs.
//! - `/readyz`: 200 once the controllers' caches hold their initial lists and the default
//!   connection (if configured) has a credential to use; a standby replica (leader election on,
//!   Lease held by another replica) is healthy and answers 200 as well, so rolling updates of a
//!   multi-replica Deployment are not blocked by replicas that wait for the Lease. 503 otherwise
//!   (starting up, a new leader still syncing its caches, or the `--token-secret` Secret /
//!   `--token-file` missing or unreadable), with the reason as the body.
//! - `/metrics`: Prometheus metrics in the OpenMetrics text format.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::connections::credentials::CredentialState;
use crate::metrics::{self, Metrics};

/// Readiness state shared by the controllers, the leader election and `/readyz`.
#[derive(Debug, Default)]
pub struct Health {
    standby: AtomicBool,
    caches_synced: Arc<AtomicBool>,
    /// The default connection's credential, when there is one.
    credentials: OnceLock<Arc<CredentialState>>,
}

impl Health {
    /// Mark this replica as a standby waiting for the Lease (`true`) or as running controllers.
    pub fn set_standby(&self, standby: bool) {
        self.standby.store(standby, Ordering::SeqCst);
    }

    /// The flag the controllers set once their caches are synced.
    pub fn caches_synced(&self) -> Arc<AtomicBool> {
        self.caches_synced.clone()
    }

    /// Report the default connection's credential on `/readyz` (unready while it is
    /// unavailable).
    pub fn watch_credentials(&self, state: Arc<CredentialState>) {
        let _ = self.credentials.set(state);
    }

    /// What `/readyz` answers: `Ok`, or why not.
    pub fn readiness(&self) -> Result<(), String> {
        if self.standby.load(Ordering::SeqCst) {
            return Ok(());
        }
        if !self.caches_synced.load(Ordering::SeqCst) {
            return Err("controller caches are not synced yet".into());
        }
        match self.credentials.get().and_then(|c| c.problem()) {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.readiness().is_ok()
    }
}

/// The HTTP servers could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Binding the address failed (in use, no permission, …).
    #[error("cannot listen on {addr} ({flag}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The flag that set it.
        flag: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Routes `/healthz` and `/readyz`.
pub fn health_router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(health)
}

/// Route `/metrics`.
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(metrics)
}

async fn readyz(State(health): State<Arc<Health>>) -> Response {
    match health.readiness() {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> Response {
    match metrics.encode() {
        Ok(body) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response(),
    }
}

/// Bind the health and metrics addresses and serve them in background tasks. Returns the bound
/// addresses (health, metrics) once both listen.
pub async fn serve(
    health_addr: SocketAddr,
    metrics_addr: SocketAddr,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) -> Result<(SocketAddr, SocketAddr), HttpError> {
    let bind = |addr: SocketAddr, flag: &'static str| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| HttpError::Bind { addr, flag, source })
    };
    if health_addr == metrics_addr {
        let listener = bind(health_addr, "--health-addr/--metrics-addr").await?;
        let local = listener.local_addr().unwrap_or(health_addr);
        spawn(
            listener,
            health_router(health).merge(metrics_router(metrics)),
        );
        return Ok((local, local));
    }
    let health_listener = bind(health_addr, "--health-addr").await?;
    let metrics_listener = bind(metrics_addr, "--metrics-addr").await?;
    let health_local = health_listener.local_addr().unwrap_or(health_addr);
    let metrics_local = metrics_listener.local_addr().unwrap_or(metrics_addr);
    spawn(health_listener, health_router(health));
    spawn(metrics_listener, metrics_router(metrics));
    Ok((health_local, metrics_local))
}

fn spawn(listener: TcpListener, router: Router) {
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_standby_and_cache_sync() {
        let h = Health::default();
        assert!(!h.is_ready());
        h.set_standby(true);
        assert!(h.is_ready());
        h.set_standby(false);
        assert!(!h.is_ready());
        h.caches_synced().store(true, Ordering::SeqCst);
        assert!(h.is_ready());
    }

    #[test]
    fn an_unavailable_default_credential_makes_the_leader_unready_and_says_why() {
        use crate::connections::credentials::CredentialStatus;
        let h = Health::default();
        h.caches_synced().store(true, Ordering::SeqCst);
        let state = Arc::new(CredentialState::new(
            "Secret a/b key \"token\" (--token-secret)",
        ));
        h.watch_credentials(state.clone());
        assert!(h.is_ready());
        state.set(CredentialStatus::Unavailable("Secret a/b not found".into()));
        assert_eq!(
            h.readiness(),
            Err("default connection: credentials unavailable: Secret a/b not found".into())
        );
        h.set_standby(true);
        assert!(h.is_ready(), "a standby reads no credential");
        h.set_standby(false);
        state.set(CredentialStatus::Rejected("401".into()));
        assert!(
            h.is_ready(),
            "a rejected credential is the objects' to report"
        );
    }
}
