//! The command: `zitadel-metadata-operator diff …`, or `kubectl zitadel diff …` when the binary
//! is installed as the kubectl plugin `kubectl-zitadel`. Flags follow `kubectl diff` (`-f`,
//! `-R`, `-n`, `-A`, `--kubeconfig`, `--context`, `-o`) and the operator (`--zitadel-url`,
//! `--token-file` / `--token-secret`, `--zitadel-api`, `--request-timeout`, with the same
//! environment fallbacks). Exit codes follow `diff`: 0 no change, 1 changes, 2 an error.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, ValueEnum};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, ResourceExt};

use super::cluster::{Listed, Snapshot, as_applied, list_live};
use super::manifests::{self, Document, Manifest, ManifestError};
use super::model::{DiffReport, EXIT_ERROR, Mode, ObjectDiff, Reveal, object_diff, rejected_diff};
use super::preview::preview;
use super::render;
use crate::config::{DefaultConnectionArgs, parse_api_mode, parse_duration};
use crate::connections::Connections;
use crate::connections::build::default_connection as build_default;
use crate::controller::Settings;
use crate::controller::metadata::Reads;
use crate::crd::{MetadataResource, OrgMetadata, UserMetadata};
use crate::metrics::Metrics;
use crate::reason::Reason;
use crate::sources::{KubeSources, ValueSources};
use crate::zitadel::{ApiMode, TokenSource, ZitadelApi, ZitadelError};

mod args;
mod inputs;

pub use args::{DiffArgs, DiffError, Output};
use inputs::*;

/// The run's `main` when the process was started as `zitadel-metadata-operator diff …` or as the
/// kubectl plugin (`kubectl-zitadel`, i.e. `kubectl zitadel …`); `None` otherwise (run the
/// operator).
pub async fn main_if_invoked() -> Option<ExitCode> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let program = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let plugin = program.starts_with("kubectl-");
    let subcommand = args.get(1).and_then(|a| a.to_str());
    if subcommand == Some("diff") {
        let bin = if plugin {
            "kubectl zitadel diff"
        } else {
            "zitadel-metadata-operator diff"
        };
        let rest = std::iter::once(OsString::from(bin)).chain(args.into_iter().skip(2));
        return Some(main(bin, rest).await);
    }
    if plugin {
        let help = matches!(subcommand, Some("-h" | "--help" | "help"));
        let usage = "Usage: kubectl zitadel diff (-f PATH... | --live [TYPE[/NAME]...]) [OPTIONS]\n\nPreview what OrgMetadata / UserMetadata manifests would change in ZITADEL.\nSee `kubectl zitadel diff --help`.";
        if help {
            println!("{usage}");
            return Some(ExitCode::SUCCESS);
        }
        eprintln!(
            "error: unknown command {:?} for kubectl zitadel\n{usage}",
            subcommand.unwrap_or_default()
        );
        return Some(ExitCode::from(EXIT_ERROR));
    }
    None
}

/// Parse `args` (the first one is the program name, shown as `bin`), run, print, exit code.
pub async fn main(bin: &'static str, args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let command = DiffArgs::command().bin_name(bin).name(bin);
    let parsed = command
        .try_get_matches_from(args)
        .and_then(|m| DiffArgs::from_arg_matches(&m));
    let args = match parsed {
        Ok(args) => args,
        // Help and version exit 0, usage errors 2.
        Err(e) => e.exit(),
    };
    init_logging();
    match run(&args).await {
        Ok(report) => {
            let printed = match args.output {
                Output::Text => render::text(&report),
                Output::Json => match serde_json::to_string_pretty(&report) {
                    Ok(json) => json + "\n",
                    Err(e) => return fail(&format!("cannot encode the report: {e}")),
                },
            };
            let mut stdout = std::io::stdout().lock();
            if stdout
                .write_all(printed.as_bytes())
                .and_then(|()| stdout.flush())
                .is_err()
            {
                return ExitCode::from(EXIT_ERROR);
            }
            ExitCode::from(report.exit_code)
        }
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_ERROR)
}

/// Logs (warnings by default, `RUST_LOG` otherwise) go to stderr: stdout is the report.
fn init_logging() {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

impl DiffArgs {
    fn reveal(&self) -> Reveal {
        if self.show_secret_values {
            Reveal::All
        } else if self.show_values {
            Reveal::NonSecret
        } else {
            Reveal::None
        }
    }
}

/// The Kubernetes client and the default namespace (the flag, else the context's).
async fn kube_client(args: &DiffArgs) -> Result<(Client, String), DiffError> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    let error = |e: &dyn std::fmt::Display| DiffError::KubeConfig(e.to_string());
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| error(&e))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| error(&e))?
        }
        None if args.context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| error(&e))?,
        None => kube::Config::infer().await.map_err(|e| error(&e))?,
    };
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| error(&e))?;
    Ok((client, namespace))
}

/// The default connection from the flags, as the operator builds it (single-tenant mode), or
/// `None` without flags. The token is read once up front so a bad one fails the run at once.
async fn default_connection(
    args: &DiffArgs,
    client: &Client,
) -> Result<Option<Arc<dyn ZitadelApi>>, DiffError> {
    let conn = &args.default_connection;
    let token = match (&conn.token_file, &conn.token_secret) {
        (None, None) if conn.zitadel_url.is_none() => return Ok(None),
        (None, None) => {
            return Err(DiffError::Flags(
                "--zitadel-url needs --token-file or --token-secret".into(),
            ));
        }
        (Some(path), _) => TokenSource::File(path.clone()),
        (None, Some(reference)) => match reference.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                let secrets = Api::<Secret>::namespaced(client.clone(), ns);
                TokenSource::secret(secrets, name, conn.token_secret_key.clone())
            }
            _ => {
                return Err(DiffError::Flags(format!(
                    "--token-secret must be NAMESPACE/NAME, got {reference:?}"
                )));
            }
        },
    };
    let Some(url) = conn.zitadel_url.clone() else {
        return Err(DiffError::Flags(
            "--token-file / --token-secret need --zitadel-url".into(),
        ));
    };
    if !matches!(url.scheme(), "http" | "https") {
        return Err(DiffError::Flags(format!(
            "--zitadel-url must be an http:// or https:// URL, got {url}"
        )));
    }
    token.token().await.map_err(DiffError::Token)?;
    // The operator's own builder; the metrics registry is private to this run.
    let api = build_default(
        url,
        token,
        args.request_timeout,
        args.zitadel_api,
        Arc::new(Metrics::new()),
    )
    .map_err(DiffError::Client)?;
    Ok(Some(api))
}

/// One object to preview and what the report says about it besides the plan.
struct Item<K> {
    /// Position in the output.
    index: usize,
    /// The object as it would be (manifests merged with the live object).
    obj: K,
    origin: Option<String>,
    exists: bool,
    notes: Vec<String>,
    /// The API server would refuse the manifest (immutable target).
    refused: Option<String>,
}

/// What the preview reads, for both kinds.
struct Env {
    sources: Arc<dyn ValueSources>,
    connections: Connections,
    settings: Settings,
    reveal: Reveal,
    concurrency: usize,
    /// Without flags for a default connection.
    no_default: bool,
}

/// Run the preview: read, plan, report. Writes nothing anywhere.
pub async fn run(args: &DiffArgs) -> Result<DiffReport, DiffError> {
    let (client, namespace) = kube_client(args).await?;
    // Read the manifests before any network call: a typo fails fast.
    let (manifests, ignored) = if args.live {
        (Vec::new(), Vec::new())
    } else {
        let documents = read_documents(&args.filenames, args.recursive)?;
        manifests::classify(documents, &namespace, args.namespace.as_deref())?
    };
    let default = default_connection(args, &client).await?;
    let sources: Arc<dyn ValueSources> = Arc::new(KubeSources::new(client.clone()));
    let env = Env {
        connections: Connections::new(
            client.clone(),
            sources.clone(),
            default.clone(),
            args.request_timeout,
        ),
        sources,
        settings: Settings {
            request_timeout: args.request_timeout,
            ..Settings::default()
        },
        reveal: args.reveal(),
        concurrency: usize::from(args.concurrency),
        no_default: default.is_none(),
    };
    let mut notes = Vec::new();
    let mut objects = if args.live {
        let scope = if args.all_namespaces {
            None
        } else {
            Some(namespace.as_str())
        };
        let selection = Selection::parse(&args.objects)?;
        let orgs = live_items::<OrgMetadata>(&client, scope, &selection, &mut notes).await?;
        let users = live_items::<UserMetadata>(&client, scope, &selection, &mut notes).await?;
        let mut out = preview_kind(&env, orgs.0, orgs.1).await;
        out.extend(preview_kind(&env, users.0, users.1).await);
        out
    } else {
        let namespaces: BTreeSet<String> = manifests
            .iter()
            .map(|(_, m)| match m {
                Manifest::Org(o) => o.namespace().unwrap_or_default(),
                Manifest::User(u) => u.namespace().unwrap_or_default(),
            })
            .collect();
        let (orgs, users) = split(manifests);
        let orgs = manifest_items(&client, orgs, &namespaces, &mut notes).await?;
        let users = manifest_items(&client, users, &namespaces, &mut notes).await?;
        let mut out = preview_kind(&env, orgs.0, orgs.1).await;
        out.extend(preview_kind(&env, users.0, users.1).await);
        out
    };
    objects.sort_by_key(|(index, _)| *index);
    let objects: Vec<ObjectDiff> = objects.into_iter().map(|(_, o)| o).collect();
    let mode = if args.live {
        Mode::Live
    } else {
        Mode::Manifests
    };
    Ok(DiffReport::new(mode, objects, ignored, notes))
}

#[cfg(test)]
mod tests;
