//! The operator binary: parse flags, start logging, serve health and metrics, (optionally) win the
//! leader election, run both controllers, stop cleanly on SIGTERM / Ctrl-C.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use kube::Client;
use tokio::sync::watch;

use zitadel_metadata_operator::config::{Config, TokenConfig};
use zitadel_metadata_operator::connections::build::default_connection;
use zitadel_metadata_operator::connections::credentials::{
    CredentialState, FlagToken, TokenLocation,
};
use zitadel_metadata_operator::controller::{
    self, DefaultConnection, FlagCredentials, Hooks, Shutdown,
};
use zitadel_metadata_operator::http::{self, Health};
use zitadel_metadata_operator::leader::{self, LeaderElector};
use zitadel_metadata_operator::metrics::Metrics;
use zitadel_metadata_operator::sources::{KubeSources, ValueSources};
use zitadel_metadata_operator::telemetry;
use zitadel_metadata_operator::zitadel::{RateLimit, TokenSource};

#[tokio::main]
async fn main() -> ExitCode {
    // `zitadel-metadata-operator diff …` and the kubectl plugin `kubectl zitadel diff …`.
    if let Some(code) = zitadel_metadata_operator::diff::cli::main_if_invoked().await {
        return code;
    }
    let config = Config::parse();
    telemetry::init(config.log_format);
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

type BoxError = Box<dyn std::error::Error>;

async fn run(config: Config) -> Result<(), BoxError> {
    let token_config = config.validate()?;
    if let Some(limit) = RateLimit::per_second(config.zitadel_rps) {
        RateLimit::install_for_process(limit);
        tracing::info!(
            rps = config.zitadel_rps,
            "ZITADEL requests limited per second"
        );
    }
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let (health_addr, metrics_addr) = http::serve(
        config.health_addr,
        config.metrics_addr,
        health.clone(),
        metrics.clone(),
    )
    .await?;
    tracing::info!(%health_addr, %metrics_addr, "serving /healthz, /readyz and /metrics");
    let client = Client::try_default().await.map_err(|e| {
        format!("cannot configure the Kubernetes client (KUBECONFIG or in-cluster): {e}")
    })?;
    let default_connection =
        default_zitadel(&config, token_config, &client, metrics.clone(), &health)?;

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; finishing in-flight reconciles");
        let _ = stop_tx.send(true);
    });
    let stop = stop_rx.clone();
    let shutdown = move || -> Shutdown {
        let mut rx = stop.clone();
        Box::pin(async move {
            let _ = rx.wait_for(|stop| *stop).await;
        })
    };
    let hooks = Hooks {
        metrics: metrics.clone(),
        caches_synced: health.caches_synced(),
    };
    let (namespaces, settings) = (config.watch(), config.settings());
    let (url, resync) = (
        config.default_connection.zitadel_url.clone(),
        config.resync_interval,
    );
    let controller_client = client.clone();
    let (drain_limit, mut drain_stop) = (config.shutdown_timeout, stop_rx.clone());
    // Started only once this replica may reconcile (after winning the election, if any).
    let controllers = async move {
        tracing::info!(
            default_zitadel = ?url.map(|u| u.to_string()),
            namespaces = ?namespaces,
            resync = ?resync,
            "starting controllers"
        );
        let run = controller::run_with(
            controller_client,
            default_connection,
            namespaces,
            settings,
            shutdown,
            hooks,
        );
        // A shutdown waits for in-flight work, but not for ever (`--shutdown-timeout`).
        let deadline = async {
            let _ = drain_stop.wait_for(|stop| *stop).await;
            tokio::time::sleep(drain_limit).await;
        };
        tokio::select! {
            () = run => {}
            () = deadline => tracing::warn!(
                timeout = ?drain_limit,
                "in-flight reconciles did not finish within the shutdown timeout; stopping them"
            ),
        }
    };
    let Some(election) = config.leader_election(leader::default_identity()) else {
        controllers.await;
        tracing::info!("stopped");
        return Ok(());
    };
    lead(client, election, &metrics, &health, stop_rx, controllers).await
}

/// The operator-wide default connection (single-tenant mode), only when configured. Its token
/// is not read here: a missing or unreadable `--token-secret` / `--token-file` is a state the
/// operator reports (`/readyz`, metric, log, the objects' `CredentialsUnavailable`) and heals
/// from as soon as the credential appears, not a reason to exit.
fn default_zitadel(
    config: &Config,
    token_config: Option<TokenConfig>,
    client: &Client,
    metrics: Arc<Metrics>,
    health: &Health,
) -> Result<Option<DefaultConnection>, BoxError> {
    let (Some(token_config), Some(url)) =
        (token_config, config.default_connection.zitadel_url.clone())
    else {
        tracing::info!(
            "no default connection: every object must set spec.connectionRef (multi-tenant mode)"
        );
        return Ok(None);
    };
    let location = match token_config {
        TokenConfig::File(path) => TokenLocation::File(path),
        TokenConfig::Secret {
            namespace,
            name,
            key,
        } => TokenLocation::Secret {
            namespace,
            name,
            key,
        },
    };
    let sources: Arc<dyn ValueSources> = Arc::new(KubeSources::new(client.clone()));
    let token = Arc::new(FlagToken::new(location, sources));
    let state = Arc::new(CredentialState::new(token.location().to_string()));
    health.watch_credentials(state.clone());
    tracing::info!(url = %url, api = ?config.zitadel_api, source = %state.source, "default ZITADEL connection");
    let provided = TokenSource::Provided(token.clone());
    let client = default_connection(
        url,
        provided,
        config.request_timeout,
        config.zitadel_api,
        metrics,
    )?;
    Ok(Some(DefaultConnection {
        api: client.clone(),
        credentials: Some(FlagCredentials {
            token,
            client,
            state,
        }),
    }))
}

/// Longest wait for the Lease release on shutdown (one request to kube-apiserver).
const RELEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Leader election: stand by until the Lease is ours, reconcile while it stays ours. The
/// renewals go on while the controllers finish in-flight work after SIGTERM; losing the Lease
/// drops the controllers at once (in-flight reconciles are aborted) and exits non-zero.
async fn lead(
    client: Client,
    election: leader::LeaderElectionConfig,
    metrics: &Metrics,
    health: &Health,
    mut stopped: watch::Receiver<bool>,
    controllers: impl std::future::Future<Output = ()>,
) -> Result<(), BoxError> {
    let lease = election.name.clone();
    let mut elector = LeaderElector::new(client, election);
    metrics.set_leader(&lease, false);
    health.set_standby(true);
    tokio::select! {
        () = elector.acquire() => {}
        _ = stopped.wait_for(|stop| *stop) => {
            tracing::info!("stopped while standing by");
            return Ok(());
        }
    }
    metrics.set_leader(&lease, true);
    health.set_standby(false);
    let lost = tokio::select! {
        lost = elector.hold() => Some(lost),
        () = controllers => None,
    };
    metrics.set_leader(&lease, false);
    if let Some(lost) = lost {
        return Err(lost.into());
    }
    match tokio::time::timeout(RELEASE_TIMEOUT, elector.release()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("{e}; the standby takes over when the Lease expires"),
        Err(_) => tracing::warn!(
            "releasing the Lease took over {RELEASE_TIMEOUT:?}; the standby takes over when it expires"
        ),
    }
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
