//! The operator binary: parse flags, start logging, run both controllers, stop cleanly on
//! SIGTERM / Ctrl-C.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use tokio::sync::watch;

use zitadel_metadata_operator::config::{Config, TokenConfig};
use zitadel_metadata_operator::controller::{self, Shutdown};
use zitadel_metadata_operator::telemetry;
use zitadel_metadata_operator::zitadel::{ClientConfig, HttpClient, TokenSource};

#[tokio::main]
async fn main() -> ExitCode {
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

async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let token_config = config.validate()?;
    let client = Client::try_default().await.map_err(|e| {
        format!("cannot configure the Kubernetes client (KUBECONFIG or in-cluster): {e}")
    })?;
    let token = match token_config {
        TokenConfig::File(path) => TokenSource::File(path),
        TokenConfig::Secret {
            namespace,
            name,
            key,
        } => {
            let source = TokenSource::secret(
                Api::<Secret>::namespaced(client.clone(), &namespace),
                name,
                key,
            );
            source
                .token()
                .await
                .map_err(|e| format!("cannot read the ZITADEL token at startup: {e}"))?;
            source
        }
    };
    let mut zitadel_config = ClientConfig::new(config.zitadel_url.clone(), token);
    zitadel_config.request_timeout = config.request_timeout;
    let zitadel = Arc::new(HttpClient::new(zitadel_config)?);

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; finishing in-flight reconciles");
        let _ = stop_tx.send(true);
    });
    let shutdown = move || -> Shutdown {
        let mut rx = stop_rx.clone();
        Box::pin(async move {
            let _ = rx.wait_for(|stop| *stop).await;
        })
    };

    tracing::info!(
        zitadel = %config.zitadel_url,
        namespaces = ?config.watch(),
        resync = ?config.resync_interval,
        "starting controllers"
    );
    controller::run(client, zitadel, config.watch(), config.settings(), shutdown).await;
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
