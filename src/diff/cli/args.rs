//! The command line of `diff` and its errors.

use super::*;

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

    /// The default connection, as the operator's flags: --zitadel-url and the token flags.
    #[command(flatten)]
    pub default_connection: DefaultConnectionArgs,

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
