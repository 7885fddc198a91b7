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
use url::Url;

use super::cluster::{Listed, Snapshot, as_applied, list_live};
use super::manifests::{self, Document, Manifest, ManifestError};
use super::model::{DiffReport, EXIT_ERROR, Mode, ObjectDiff, Reveal, object_diff, rejected_diff};
use super::preview::preview;
use super::render;
use crate::config::{parse_api_mode, parse_duration};
use crate::connections::Connections;
use crate::connections::build::default_connection as build_default;
use crate::controller::Settings;
use crate::controller::metadata::Reads;
use crate::crd::{MetadataResource, OrgMetadata, UserMetadata};
use crate::metrics::Metrics;
use crate::reason::Reason;
use crate::sources::{KubeSources, ValueSources};
use crate::zitadel::{ApiMode, TokenSource, ZitadelApi, ZitadelError};

/// How the report is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people: a block per object, a line per key, a summary line.
    Text,
    /// For CI bots: the `MetadataDiff` JSON document (see the README).
    Json,
}

/// Preview what applying OrgMetadata / UserMetadata manifests (or the next reconcile of live
/// objects) would change in ZITADEL, without writing anything: per object and key what would be
/// set, removed, adopted or left alone. Uses the operator's own planner.
///
/// Exit status: 0 no change, 1 changes, 2 an error (bad flags or manifests, or an object whose
/// plan could not be computed).
#[derive(Parser, Debug, Clone)]
#[command(version)]
pub struct DiffArgs {
    /// Manifests: a file, a directory (its .yaml, .yml and .json files) or - for stdin.
    /// Repeatable. Multi-document YAML, JSON and List kinds; kinds other than OrgMetadata and
    /// UserMetadata are ignored with a note.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "PATH",
        required_unless_present = "live",
        conflicts_with = "live"
    )]
    pub filenames: Vec<String>,

    /// Process the directories given with -f recursively.
    #[arg(short = 'R', long)]
    pub recursive: bool,

    /// Preview the next reconcile of live objects instead of manifests (what drift repair would
    /// write now).
    #[arg(long)]
    pub live: bool,

    /// With --live: the objects, as TYPE or TYPE/NAME (orgmetadata, orgmd, usermetadata,
    /// usermd). Default: every OrgMetadata and UserMetadata in the namespace.
    #[arg(value_name = "TYPE[/NAME]", conflicts_with = "filenames")]
    pub objects: Vec<String>,

    /// The namespace of manifests that name none (and the only one they may name); with
    /// --live, the namespace previewed. Default: the kubeconfig context's namespace.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,

    /// With --live: objects in all namespaces.
    #[arg(short = 'A', long, conflicts_with_all = ["namespace", "filenames"])]
    pub all_namespaces: bool,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,

    /// Show values of inline (value, binaryValue) and ConfigMap entries and what ZITADEL holds
    /// for those keys. Values from Secrets, and current values of keys whose origin is unknown
    /// (removed, unmanaged, claimed), stay redacted.
    #[arg(long)]
    pub show_values: bool,

    /// Show every value, Secret-sourced ones included (implies --show-values). Do not use in
    /// CI logs others can read.
    #[arg(long)]
    pub show_secret_values: bool,

    /// Path of the kubeconfig file (default: KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use.
    #[arg(long)]
    pub context: Option<String>,

    /// Base URL of the default ZITADEL instance, for objects without spec.connectionRef (as the
    /// operator's flag). Objects with a connectionRef use that connection's Secret.
    #[arg(long, env = "ZITADEL_URL")]
    pub zitadel_url: Option<Url>,

    /// File with a token for the default connection (a read-only service user suffices).
    #[arg(long, env = "ZITADEL_TOKEN_FILE", conflicts_with = "token_secret")]
    pub token_file: Option<PathBuf>,

    /// Secret with the token for the default connection, as NAMESPACE/NAME.
    #[arg(long, env = "ZITADEL_TOKEN_SECRET")]
    pub token_secret: Option<String>,

    /// Key of the token in --token-secret.
    #[arg(long, env = "ZITADEL_TOKEN_SECRET_KEY", default_value = "token")]
    pub token_secret_key: String,

    /// Which ZITADEL API the default connection uses for metadata: auto, v1 or v2 (as the
    /// operator's flag).
    #[arg(long, env = "ZITADEL_API", default_value = "auto", value_parser = parse_api_mode)]
    pub zitadel_api: ApiMode,

    /// Timeout of one ZITADEL request.
    #[arg(long, env = "ZITADEL_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Objects previewed at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
}

/// Why the preview as a whole failed (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// Flags that cannot work together.
    #[error("{0}")]
    Flags(String),
    /// Reading or parsing manifests.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The Kubernetes client cannot be configured.
    #[error("cannot configure the Kubernetes client: {0}")]
    KubeConfig(String),
    /// Listing objects failed.
    #[error("cannot read {what} from the cluster: {source}")]
    Kube {
        /// What was read.
        what: String,
        /// The error.
        source: kube::Error,
    },
    /// The default connection's token cannot be read.
    #[error("cannot read the ZITADEL token of the default connection: {0}")]
    Token(ZitadelError),
    /// The default connection's client cannot be built.
    #[error("cannot build the ZITADEL client of the default connection: {0}")]
    Client(ZitadelError),
}

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
    let token = match (&args.token_file, &args.token_secret) {
        (None, None) if args.zitadel_url.is_none() => return Ok(None),
        (None, None) => {
            return Err(DiffError::Flags(
                "--zitadel-url needs --token-file or --token-secret".into(),
            ));
        }
        (Some(path), _) => TokenSource::File(path.clone()),
        (None, Some(reference)) => match reference.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                let secrets = Api::<Secret>::namespaced(client.clone(), ns);
                TokenSource::secret(secrets, name, args.token_secret_key.clone())
            }
            _ => {
                return Err(DiffError::Flags(format!(
                    "--token-secret must be NAMESPACE/NAME, got {reference:?}"
                )));
            }
        },
    };
    let Some(url) = args.zitadel_url.clone() else {
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

/// Every document of the `-f` arguments, in order.
fn read_documents(paths: &[String], recursive: bool) -> Result<Vec<Document>, DiffError> {
    let mut documents = Vec::new();
    let mut stdin_read = false;
    for path in paths {
        for file in manifests::expand(path, recursive)? {
            let name = file.display().to_string();
            let read_error = |source| ManifestError::Read {
                path: name.clone(),
                source,
            };
            let text = if name == "-" {
                if std::mem::replace(&mut stdin_read, true) {
                    return Err(DiffError::Flags("-f - may be given only once".into()));
                }
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .map_err(read_error)?;
                text
            } else {
                std::fs::read_to_string(&file).map_err(read_error)?
            };
            documents.extend(manifests::parse(&name, &text)?);
        }
    }
    Ok(documents)
}

/// Manifests by kind, with their position.
type Indexed<K> = Vec<(usize, String, K)>;

fn split(manifests: Vec<(String, Manifest)>) -> (Indexed<OrgMetadata>, Indexed<UserMetadata>) {
    let (mut orgs, mut users) = (Vec::new(), Vec::new());
    for (index, (origin, manifest)) in manifests.into_iter().enumerate() {
        match manifest {
            Manifest::Org(o) => orgs.push((index, origin, *o)),
            Manifest::User(u) => users.push((index, origin, *u)),
        }
    }
    (orgs, users)
}

/// Manifests of one kind merged with their live objects, and the snapshot of that kind after
/// the apply.
async fn manifest_items<K: MetadataResource>(
    client: &Client,
    manifests: Indexed<K>,
    namespaces: &BTreeSet<String>,
    notes: &mut Vec<String>,
) -> Result<(Vec<Item<K>>, Snapshot<K>), DiffError> {
    let listed = list_kind::<K>(client, namespaces, notes).await?;
    let key = |o: &K| (o.namespace().unwrap_or_default(), o.name_any());
    let mut seen = BTreeSet::new();
    let mut items = Vec::new();
    for (index, origin, manifest) in manifests {
        if !seen.insert(key(&manifest)) {
            return Err(DiffError::Flags(format!(
                "{origin}: {} {}/{} appears more than once in the manifests",
                K::kind(&()),
                manifest.namespace().unwrap_or_default(),
                manifest.name_any()
            )));
        }
        let live = listed.iter().find(|o| key(o) == key(&manifest));
        let (obj, item_notes, refused) = match as_applied(&manifest, live) {
            Ok((obj, notes)) => (obj, notes, None),
            Err(refused) => (manifest, Vec::new(), Some(refused.0)),
        };
        items.push(Item {
            index,
            obj,
            origin: Some(origin),
            exists: live.is_some(),
            notes: item_notes,
            refused,
        });
    }
    let applied: Vec<K> = items
        .iter()
        .filter(|i| i.refused.is_none())
        .map(|i| i.obj.clone())
        .collect();
    let snapshot = Snapshot::new(listed, &applied);
    Ok((items, snapshot))
}

/// Live objects of one kind (all namespaces, else those given), with any note.
async fn list_kind<K: MetadataResource>(
    client: &Client,
    namespaces: &BTreeSet<String>,
    notes: &mut Vec<String>,
) -> Result<Vec<K>, DiffError> {
    let Listed {
        objects,
        notes: more,
    } = list_live::<K>(client, namespaces)
        .await
        .map_err(|source| DiffError::Kube {
            what: format!("{} objects", K::kind(&())),
            source,
        })?;
    notes.extend(more);
    Ok(objects)
}

/// `--live` object selection.
struct Selection {
    /// (kind, name): `None` kind = all kinds; `None` name = all of the kind.
    wanted: Vec<(&'static str, Option<String>)>,
}

impl Selection {
    fn parse(args: &[String]) -> Result<Selection, DiffError> {
        let mut wanted = Vec::new();
        for arg in args {
            let (kind, name) = match arg.split_once('/') {
                Some((k, n)) if !n.is_empty() => (k, Some(n.to_string())),
                Some(_) => return Err(DiffError::Flags(format!("{arg:?}: name missing"))),
                None => (arg.as_str(), None),
            };
            let kind = match kind.to_ascii_lowercase().as_str() {
                "orgmetadata"
                | "orgmetadatas"
                | "orgmd"
                | "orgmetadatas.metadata.zitadel-operator.dev" => "OrgMetadata",
                "usermetadata"
                | "usermetadatas"
                | "usermd"
                | "usermetadatas.metadata.zitadel-operator.dev" => "UserMetadata",
                _ => {
                    return Err(DiffError::Flags(format!(
                        "{arg:?}: unknown type (use orgmetadata, orgmd, usermetadata or usermd)"
                    )));
                }
            };
            wanted.push((kind, name));
        }
        Ok(Selection { wanted })
    }

    fn selects<K: MetadataResource>(&self, obj: &K) -> bool {
        let kind = K::kind(&());
        self.wanted.is_empty()
            || self
                .wanted
                .iter()
                .any(|(k, name)| *k == kind && name.as_deref().is_none_or(|n| n == obj.name_any()))
    }
}

/// Live objects of one kind to preview (in `scope`, else all namespaces), and the snapshot of
/// all of that kind.
async fn live_items<K: MetadataResource>(
    client: &Client,
    scope: Option<&str>,
    selection: &Selection,
    notes: &mut Vec<String>,
) -> Result<(Vec<Item<K>>, Snapshot<K>), DiffError> {
    let namespaces: BTreeSet<String> = scope.map(str::to_owned).into_iter().collect();
    let listed = list_kind::<K>(client, &namespaces, notes).await?;
    let base = if K::kind(&()) == "OrgMetadata" {
        0
    } else {
        listed.len() + 1_000_000
    };
    let items: Vec<Item<K>> = listed
        .iter()
        .filter(|o| scope.is_none_or(|ns| o.namespace().as_deref() == Some(ns)))
        .filter(|o| selection.selects(*o))
        .enumerate()
        .map(|(i, obj)| Item {
            index: base + i,
            obj: obj.clone(),
            origin: None,
            exists: true,
            notes: Vec::new(),
            refused: None,
        })
        .collect();
    for (kind, name) in &selection.wanted {
        if let Some(name) = name
            && *kind == K::kind(&())
            && !items.iter().any(|i| i.obj.name_any() == *name)
        {
            return Err(DiffError::Flags(format!(
                "{kind} {name:?} not found{}",
                scope
                    .map(|ns| format!(" in namespace {ns}"))
                    .unwrap_or_default()
            )));
        }
    }
    Ok((items, Snapshot::new(listed, &[])))
}

/// Preview the items of one kind (at most `env.concurrency` at once), as (index, entry).
async fn preview_kind<K: MetadataResource>(
    env: &Env,
    items: Vec<Item<K>>,
    snapshot: Snapshot<K>,
) -> Vec<(usize, ObjectDiff)> {
    let reads = Reads {
        sources: env.sources.as_ref(),
        connections: &env.connections,
        neighbours: &snapshot,
    };
    let reads = &reads;
    futures::stream::iter(items)
        .map(|item| async move { (item.index, preview_item(env, reads, item).await) })
        .buffered(env.concurrency)
        .collect()
        .await
}

async fn preview_item<K: MetadataResource>(
    env: &Env,
    reads: &Reads<'_, K>,
    item: Item<K>,
) -> ObjectDiff {
    let mut diff = match &item.refused {
        Some(why) => rejected_diff(&item.obj, why),
        None => {
            let preview = preview(&item.obj, reads, &env.settings).await;
            object_diff(&item.obj, &preview, env.reveal)
        }
    };
    diff.origin = item.origin;
    diff.exists = item.exists;
    diff.notes = item.notes;
    let no_connection = diff
        .outcome
        .as_ref()
        .is_some_and(|o| o.reason == Reason::ConnectionNotFound.as_str());
    if no_connection && env.no_default && item.obj.connection_ref().is_none() {
        diff.notes.push(
            "pass --zitadel-url with --token-file or --token-secret to preview objects without spec.connectionRef (the operator's default connection)".into(),
        );
    }
    diff
}

#[cfg(test)]
mod tests;
