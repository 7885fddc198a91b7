//! The default connection's credential (`--token-secret` / `--token-file`) over its life: read
//! at start without failing when it is missing, followed afterwards — the Secret through a
//! single-object watch (`metadata.name` field selector: `get`/`list`/`watch` on that one name),
//! the file by polling it every second — and each change checked with ZITADEL (an authenticated
//! call). What it is known to be goes to `/readyz`, the metric
//! `zitadel_default_connection_credentials` and the log (naming the Secret and key or the file,
//! never the token); a change re-queues the objects using the default connection that are not
//! Ready (all of them when ZITADEL rejected the new credential, so that they report it).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client};
use tokio::sync::watch;

use super::Shutdown;
use super::watches::WatchBackoff;
use crate::connections::credentials::{
    CredentialState, CredentialStatus, FlagToken, TokenLocation,
};
use crate::metrics::Metrics;
use crate::reason::Reason;
use crate::zitadel::{HttpClient, ZitadelError};

/// How often a `--token-file` is read for changes.
const FILE_POLL: Duration = Duration::from_secs(1);
/// How often the Secret is read besides its watch (a missed or forbidden watch still heals), and
/// a credential ZITADEL could not be asked about is checked again.
const RECHECK: Duration = Duration::from_secs(30);
/// Re-check delay of a credential ZITADEL could not judge (unreachable, 5xx).
const UNVERIFIED_RECHECK: Duration = Duration::from_secs(5);

/// The default connection's credential from the flags, and the client it authenticates.
#[derive(Clone)]
pub struct FlagCredentials {
    /// The token and where it is.
    pub token: Arc<FlagToken>,
    /// The default connection's client (checks a new credential).
    pub client: Arc<HttpClient>,
    /// What the credential is known to be (shared with `/readyz`).
    pub state: Arc<CredentialState>,
}

/// A request to re-queue the objects using the default connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requeue {
    /// Counts requests (a watch channel only tells a change).
    pub serial: u64,
    /// Every object, not only those that are not Ready.
    pub all: bool,
}

/// What ZITADEL's answer to the authenticated check makes of a credential (pure): accepted,
/// rejected (401), or not known (ZITADEL could not be asked, or refused for another reason).
pub(super) fn verdict(result: &Result<(), ZitadelError>) -> CredentialStatus {
    match result {
        Ok(()) => CredentialStatus::Accepted,
        Err(e) if e.reason() == Reason::ZitadelUnauthenticated => {
            CredentialStatus::Rejected(e.to_string())
        }
        Err(_) => CredentialStatus::Read,
    }
}

struct Monitor {
    credentials: FlagCredentials,
    metrics: Arc<Metrics>,
    requeue: watch::Sender<Requeue>,
    /// Fingerprint of the last token announced.
    last: Option<u64>,
    /// The first check is done (the objects are reconciled at start anyway: no re-queue for it).
    started: bool,
}

impl Monitor {
    fn set(&self, status: CredentialStatus) -> CredentialStatus {
        let state = &self.credentials.state;
        self.metrics.set_default_credentials(
            &state.source,
            status.label(),
            &CredentialStatus::LABELS,
        );
        state.set(status)
    }

    fn requeue(&self, all: bool) {
        if !self.started {
            return;
        }
        self.requeue.send_modify(|r| {
            r.serial = r.serial.wrapping_add(1);
            r.all = all;
        });
    }

    /// Read the credential; announce and check it with ZITADEL when it changed (or was not
    /// judged yet). Returns when to look again at the latest.
    async fn check(&mut self) -> Duration {
        let source = self.credentials.state.source.clone();
        let observed = self.credentials.token.observe().await;
        let print = match observed {
            Err(why) => {
                self.last = None;
                let status = CredentialStatus::Unavailable(why.clone());
                if self.set(status.clone()) != status {
                    tracing::warn!(source = %source, problem = %why,
                        "default connection: credentials unavailable; objects using it report CredentialsUnavailable until they appear");
                }
                return RECHECK;
            }
            Ok(print) => print,
        };
        let changed = self.last != Some(print);
        let judged = matches!(
            self.credentials.state.get(),
            CredentialStatus::Accepted | CredentialStatus::Rejected(_)
        );
        if !changed && judged {
            return RECHECK;
        }
        if changed {
            // (`zitadel_token_refreshes_total` counts it when the client first uses it.)
            self.last = Some(print);
            tracing::info!(source = %source, "default connection: picked up a new credential");
        }
        let status = verdict(&self.credentials.client.check().await.map(|_| ()));
        match &status {
            CredentialStatus::Accepted => {
                tracing::info!(source = %source, "default connection: ZITADEL accepted the credential")
            }
            CredentialStatus::Rejected(why) => {
                tracing::warn!(source = %source, answer = %why, "default connection: ZITADEL rejected the credential")
            }
            _ => {
                tracing::info!(source = %source, "default connection: ZITADEL could not check the credential yet; trying again")
            }
        }
        let was = self.set(status.clone());
        let rejected = matches!(status, CredentialStatus::Rejected(_));
        if changed || (status != was && !matches!(status, CredentialStatus::Read)) {
            self.requeue(rejected);
        }
        if status == CredentialStatus::Read {
            UNVERIFIED_RECHECK
        } else {
            RECHECK
        }
    }
}

/// A stream that yields when the `--token-secret` Secret may have changed (any event of its
/// single-object, metadata-only watch).
fn secret_events(
    client: &Client,
    namespace: &str,
    name: &str,
) -> futures::stream::BoxStream<'static, ()> {
    let api: Api<PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), namespace);
    let config = watcher::Config::default()
        .fields(&format!("metadata.name={name}"))
        .any_semantic();
    let source = format!("{namespace}/{name}");
    watcher(api, config)
        .backoff(WatchBackoff::default())
        .filter_map(move |event| {
            let keep = match event {
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => None,
                Ok(_) => Some(()),
                Err(e) => {
                    tracing::debug!(secret = %source, error = %e, "watch of the --token-secret Secret failed; retrying");
                    None
                }
            };
            async move { keep }
        })
        .boxed()
}

/// Follow the default connection's credential until `shutdown`; `requeue` asks the kind
/// controllers to re-queue its objects.
pub(super) async fn run(
    client: Client,
    credentials: FlagCredentials,
    metrics: Arc<Metrics>,
    requeue: watch::Sender<Requeue>,
    shutdown: Shutdown,
) {
    let mut events = match credentials.token.location() {
        TokenLocation::Secret {
            namespace, name, ..
        } => secret_events(&client, namespace, name),
        TokenLocation::File(_) => futures::stream::pending().boxed(),
    };
    let poll = match credentials.token.location() {
        TokenLocation::Secret { .. } => None,
        TokenLocation::File(_) => Some(FILE_POLL),
    };
    let mut monitor = Monitor {
        credentials,
        metrics,
        requeue,
        last: None,
        started: false,
    };
    let work = async {
        let mut wait = monitor.check().await;
        monitor.started = true;
        loop {
            let sleep = tokio::time::sleep(poll.map_or(wait, |p| p.min(wait)));
            tokio::select! {
                () = sleep => {}
                event = events.next() => if event.is_none() { return },
            }
            wait = monitor.check().await;
        }
    };
    tokio::select! {
        () = work => {}
        () = shutdown => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zitadel_judges_a_credential_only_by_a_401() {
        assert_eq!(verdict(&Ok(())), CredentialStatus::Accepted);
        let unauthenticated = ZitadelError::from_response(
            401,
            None,
            r#"{"code":16,"message":"Token is invalid (AUTH-7fs1e)"}"#,
        );
        assert!(matches!(
            verdict(&Err(unauthenticated)),
            CredentialStatus::Rejected(m) if m.contains("AUTH-7fs1e")
        ));
        let down = ZitadelError::from_response(503, None, "{}");
        assert_eq!(verdict(&Err(down)), CredentialStatus::Read);
    }
}
