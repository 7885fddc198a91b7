//! Command-line flags with environment fallbacks, and their validation.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use url::Url;

use crate::controller::{Namespaces, Settings};
use crate::drift::{Detection, DriftSettings};
use crate::zitadel::ApiMode;

mod default_connection;
mod parse;

pub use default_connection::DefaultConnectionArgs;

pub use parse::{parse_api_mode, parse_detection, parse_duration, parse_label_selector};

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Keeps ZITADEL organization and user metadata in sync with OrgMetadata / UserMetadata objects.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "zitadel-metadata-operator",
    version,
    about,
    after_help = "Preview what manifests would change in ZITADEL (read-only): zitadel-metadata-operator diff --help"
)]
pub struct Config {
    /// The default connection: --zitadel-url and the token flags.
    #[command(flatten)]
    pub default_connection: DefaultConnectionArgs,

    /// Namespaces to watch (comma-separated or repeated). Empty: all namespaces.
    #[arg(long = "namespace", env = "WATCH_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// How often a synced object is re-checked against ZITADEL to repair drift (e.g. 30s, 5m).
    #[arg(long, env = "RESYNC_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub resync_interval: Duration,

    /// How often an object stalled on a permanent error is retried.
    #[arg(long, env = "STALLED_RETRY_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub stalled_retry_interval: Duration,

    /// First retry delay after a transient error (doubles per failure, with jitter).
    #[arg(long, env = "BACKOFF_BASE", default_value = "1s", value_parser = parse_duration)]
    pub backoff_base: Duration,

    /// Longest retry delay after transient errors.
    #[arg(long, env = "BACKOFF_MAX", default_value = "5m", value_parser = parse_duration)]
    pub backoff_max: Duration,

    /// Reconciles running at once, per kind.
    #[arg(long, env = "MAX_CONCURRENT_RECONCILES", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub max_concurrent_reconciles: u16,

    /// Timeout of one ZITADEL request.
    #[arg(long, env = "ZITADEL_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Client-side budget of ZITADEL requests per second for the whole process (all
    /// connections), spaced evenly; 0 = unlimited. ZITADEL Cloud allows about 50 per second per
    /// IP.
    #[arg(long, env = "ZITADEL_RPS", default_value_t = 0)]
    pub zitadel_rps: u32,

    /// Reconcile only the OrgMetadata/UserMetadata objects whose labels match this selector
    /// (Kubernetes label-selector syntax, e.g. `shard=a` or `shard in (a,b)`), so that several
    /// operator Deployments (each with its own --leader-election-id) split the objects between
    /// them. Key claims are still decided over all objects. Empty: all objects.
    #[arg(long, env = "WATCH_LABEL_SELECTOR", value_parser = parse_label_selector)]
    pub watch_label_selector: Option<String>,

    /// How changes made in ZITADEL outside Kubernetes are noticed: `auto` (from ZITADEL's event
    /// log where the credentials may read it — `events.read`, IAM_OWNER or IAM_OWNER_VIEWER —
    /// else polling) or `polling` (each object re-lists its target every --resync-interval).
    #[arg(long, env = "DRIFT_DETECTION", default_value = "auto", value_parser = parse_detection)]
    pub drift_detection: Detection,

    /// Events mode: how often each connection's event log is read (changes made outside
    /// Kubernetes are repaired within about this long). A connection's
    /// spec.driftDetection.eventPollInterval overrides it.
    #[arg(long, env = "EVENT_POLL_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    pub event_poll_interval: Duration,

    /// Events mode: how often each object still re-lists its target as a safety net (at least
    /// --resync-interval).
    #[arg(long, env = "EVENTS_RESYNC_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    pub events_resync_interval: Duration,

    /// Which ZITADEL API the default connection uses for metadata: `auto` (probe the instance:
    /// Management API v1 wherever it is served, so `status.sequence` keeps being reported; the
    /// v2 services where v1 is gone, as on ZITADEL v5), `v1` or `v2` (pinned, no probe).
    /// Connections set this with `spec.api`.
    #[arg(long, env = "ZITADEL_API", default_value = "auto", value_parser = parse_api_mode)]
    pub zitadel_api: ApiMode,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Elect a leader through a coordination.k8s.io Lease; only the leader reconciles. Needed
    /// when more than one replica runs.
    #[arg(
        long,
        env = "LEADER_ELECT",
        num_args = 0..=1,
        default_value_t = false,
        default_missing_value = "true",
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub leader_elect: bool,

    /// Namespace of the leader-election Lease (default: the pod's namespace from POD_NAMESPACE or
    /// the service-account mount, else `default`).
    #[arg(long, env = "LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "LEADER_ELECTION_ID",
        default_value = "zitadel-metadata-operator"
    )]
    pub leader_election_id: String,

    /// How long a leader's Lease stays valid after its last renewal; a standby takes over after
    /// that when the leader dies.
    #[arg(long, env = "LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub leader_election_lease_duration: Duration,

    /// How long the leader tries to renew before it gives up leadership (and exits).
    #[arg(long, env = "LEADER_ELECTION_RENEW_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    pub leader_election_renew_deadline: Duration,

    /// Interval between leader-election attempts (acquire and renew).
    #[arg(long, env = "LEADER_ELECTION_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    pub leader_election_retry_period: Duration,

    /// How long a shutdown (SIGTERM) waits for in-flight reconciles before it stops them anyway
    /// and releases the Lease; whoever leads next redoes a stopped reconcile. Keep it below the
    /// pod's
    /// `terminationGracePeriodSeconds` (30 s by default).
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Address of the /healthz and /readyz endpoints.
    #[arg(long, env = "HEALTH_ADDR", default_value = "0.0.0.0:8080")]
    pub health_addr: SocketAddr,

    /// Address of the /metrics endpoint (Prometheus).
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Neither or both token sources.
    #[error(
        "set exactly one of --token-file (ZITADEL_TOKEN_FILE) or --token-secret (ZITADEL_TOKEN_SECRET)"
    )]
    TokenSource,
    /// A token without a URL.
    #[error("--token-file / --token-secret need --zitadel-url (ZITADEL_URL)")]
    MissingUrl,
    /// `--token-secret` is not NAMESPACE/NAME.
    #[error("--token-secret must be NAMESPACE/NAME, got {0:?}")]
    SecretRef(String),
    /// `--token-file` is empty. (A file that does not exist yet is not an error: the operator
    /// reports it and uses the file as soon as it appears.)
    #[error("--token-file must name a file")]
    TokenFile,
    /// URL scheme is not http(s).
    #[error("--zitadel-url must be an http:// or https:// URL, got {0}")]
    Url(Url),
    /// Leader-election timings that cannot work.
    #[error(
        "leader election needs --leader-election-lease-duration > --leader-election-renew-deadline > --leader-election-retry-period > 0, got {lease:?} / {renew:?} / {retry:?}"
    )]
    LeaderTiming {
        /// Lease duration.
        lease: Duration,
        /// Renew deadline.
        renew: Duration,
        /// Retry period.
        retry: Duration,
    },
    /// `--leader-election-id` is empty.
    #[error("--leader-election-id must not be empty")]
    LeaderElectionId,
}

/// Where the service-account mount keeps the pod's namespace.
pub const SERVICE_ACCOUNT_NAMESPACE_FILE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Where the token comes from, after validation.
#[derive(Clone, Debug)]
pub enum TokenConfig {
    /// A file.
    File(PathBuf),
    /// A Secret key.
    Secret {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Key.
        key: String,
    },
}

impl Config {
    /// Check the combination of flags; fail with a message naming the flag.
    pub fn validate(&self) -> Result<Option<TokenConfig>, ConfigError> {
        let conn = &self.default_connection;
        if let Some(url) = &conn.zitadel_url
            && !matches!(url.scheme(), "http" | "https")
        {
            return Err(ConfigError::Url(url.clone()));
        }
        if self.leader_elect {
            let (lease, renew, retry) = (
                self.leader_election_lease_duration,
                self.leader_election_renew_deadline,
                self.leader_election_retry_period,
            );
            if retry.is_zero() || renew <= retry || lease <= renew {
                return Err(ConfigError::LeaderTiming {
                    lease,
                    renew,
                    retry,
                });
            }
            if self.leader_election_id.trim().is_empty() {
                return Err(ConfigError::LeaderElectionId);
            }
        }
        let token = match (&conn.token_file, &conn.token_secret) {
            (None, None) if conn.zitadel_url.is_none() => return Ok(None),
            (Some(path), None) if path.as_os_str().is_empty() => {
                return Err(ConfigError::TokenFile);
            }
            (Some(path), None) => TokenConfig::File(path.clone()),
            (None, Some(reference)) => match reference.split_once('/') {
                Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                    TokenConfig::Secret {
                        namespace: ns.to_string(),
                        name: name.to_string(),
                        key: conn.token_secret_key.clone(),
                    }
                }
                _ => return Err(ConfigError::SecretRef(reference.clone())),
            },
            _ => return Err(ConfigError::TokenSource),
        };
        if conn.zitadel_url.is_none() {
            return Err(ConfigError::MissingUrl);
        }
        Ok(Some(token))
    }

    /// Namespaces to watch.
    pub fn watch(&self) -> Namespaces {
        let list: Vec<String> = self
            .namespaces
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if list.is_empty() {
            Namespaces::All
        } else {
            Namespaces::Only(list)
        }
    }

    /// Leader-election settings (`None` when `--leader-elect` is off), with `identity` as this
    /// process's candidate identity.
    pub fn leader_election(&self, identity: String) -> Option<crate::leader::LeaderElectionConfig> {
        self.leader_elect
            .then(|| crate::leader::LeaderElectionConfig {
                namespace: self.leader_election_namespace_or(
                    std::env::var("POD_NAMESPACE").ok(),
                    Path::new(SERVICE_ACCOUNT_NAMESPACE_FILE),
                ),
                name: self.leader_election_id.trim().to_string(),
                identity,
                lease_duration: self.leader_election_lease_duration,
                renew_deadline: self.leader_election_renew_deadline,
                retry_period: self.leader_election_retry_period,
            })
    }

    /// The Lease namespace: the flag, else `pod_namespace` (`POD_NAMESPACE`), else the content of
    /// `sa_file`, else `default`.
    pub fn leader_election_namespace_or(
        &self,
        pod_namespace: Option<String>,
        sa_file: &Path,
    ) -> String {
        [
            self.leader_election_namespace.clone(),
            pod_namespace,
            std::fs::read_to_string(sa_file).ok(),
        ]
        .into_iter()
        .flatten()
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "default".to_string())
    }

    /// Reconciler timing.
    pub fn settings(&self) -> Settings {
        Settings {
            resync: self.resync_interval,
            stalled_requeue: self.stalled_retry_interval,
            backoff_base: self.backoff_base,
            backoff_max: self.backoff_max,
            concurrency: self.max_concurrent_reconciles,
            request_timeout: self.request_timeout,
            drift: DriftSettings {
                detection: self.drift_detection,
                event_poll_interval: self.event_poll_interval,
                events_resync: self.events_resync_interval,
            },
            watch_selector: self
                .watch_label_selector
                .clone()
                .filter(|s| !s.trim().is_empty()),
        }
    }
}

#[cfg(test)]
mod tests;
