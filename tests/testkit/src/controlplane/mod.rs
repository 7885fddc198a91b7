//! A real Kubernetes control plane for tests: `etcd` and `kube-apiserver` as child processes on
//! loopback, started the way controller-runtime's envtest starts them.
//!
//! Only etcd and the apiserver run: there is no controller manager, so no garbage collection
//! (ownerReference cascades never happen), no namespace finalization (deleted namespaces stay
//! `Terminating`), no Pods actually run and no default ServiceAccounts are created.
//!
//! The binaries come from `KUBEBUILDER_ASSETS` when it names a directory with `kube-apiserver` and
//! `etcd`, otherwise from `tests/envtest/build.sh`, which builds them from source (a cold build
//! takes many minutes) and caches them. A missing toolchain is an error, never a skipped test.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use zmo_testkit::controlplane::ControlPlane;
//!
//! let cp = ControlPlane::shared(); // one control plane per test binary
//! let ns = cp.create_namespace("my-test").await?;
//! let client = cp.client().await?; // one client per runtime / test
//! # let _ = (ns, client);
//! # Ok(())
//! # }
//! ```
//!
//! Processes are killed when the [`ControlPlane`] is dropped. Every child also gets
//! `PR_SET_PDEATHSIG=SIGKILL`, so none outlives the test binary even when destructors do not run;
//! the [`ControlPlane::shared`] instance (a static, never dropped) is additionally shut down, and its
//! temporary directory removed, from an `atexit` handler.

mod assets;
mod certs;
mod net;
mod spawner;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock, TryLockError};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{
    AuthInfo, Cluster, Context as KubeContext, KubeConfigOptions, Kubeconfig, NamedAuthInfo,
    NamedCluster, NamedContext,
};
use kube::runtime::wait::{await_condition, conditions};
use rand::Rng as _;
use serde::Deserialize as _;
use tempfile::TempDir;
use tokio::time::Instant;

use self::certs::Pki;
use self::spawner::Process;

/// Name of the kubeconfig cluster, user and context.
const KUBECONFIG_NAME: &str = "envtest";
/// Field manager for server-side apply.
const FIELD_MANAGER: &str = "zmo-testkit";
/// Start timeout unless `KUBEBUILDER_CONTROLPLANE_START_TIMEOUT` says otherwise (2 shared cores).
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(90);
/// Environment variable overriding the start timeout (`90`, `90s` or `2m`), as in envtest.
const START_TIMEOUT_ENV: &str = "KUBEBUILDER_CONTROLPLANE_START_TIMEOUT";
/// How often a start is retried after losing a free port to another process.
const START_ATTEMPTS: usize = 3;
/// Upper bound for one readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long [`ControlPlane::install_crds`] waits for CRDs to be established and served.
const CRD_TIMEOUT: Duration = Duration::from_secs(60);
/// Log lines shown when a start fails.
const LOG_TAIL_LINES: usize = 40;
/// Maximum length of a namespace name (DNS-1123 label).
const MAX_NAME_LEN: usize = 63;
/// Length of the random suffix of [`ControlPlane::create_namespace`] names.
const SUFFIX_LEN: usize = 6;
/// Audit policy of [`Options::audit_log`]: every request at level `Metadata`, one event per
/// request (when the response is complete; panics too).
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: Metadata
";

/// A running etcd + kube-apiserver pair on 127.0.0.1, with an admin kubeconfig.
///
/// Start one per test binary with [`ControlPlane::shared`] (cheapest), or a private one with
/// [`ControlPlane::start`]. Dropping it kills both processes and removes its temporary directory
/// (data, certificates, kubeconfig, logs).
#[derive(Debug)]
pub struct ControlPlane {
    bin_dir: PathBuf,
    root: PathBuf,
    kubeconfig_path: PathBuf,
    kubeconfig: Kubeconfig,
    url: String,
    /// etcd's client URL, `http://127.0.0.1:<port>`.
    etcd_url: String,
    /// The kube-apiserver command line, reused by [`ControlPlane::start_apiserver`].
    apiserver_args: Vec<String>,
    /// Where the apiserver writes its audit log, if [`Options::audit_log`] was set.
    audit_log: Option<PathBuf>,
    state: Mutex<State>,
}

/// How [`ControlPlane::start_with`] starts a control plane.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Run the apiserver with an audit log of every request at level `Metadata` (verb, user,
    /// resource, URI, response code; no bodies), read back with [`ControlPlane::audit_events`].
    pub audit_log: bool,
}

/// What [`ControlPlane::shutdown`] tears down.
#[derive(Debug)]
struct State {
    /// Started processes, in start order (etcd first).
    processes: Vec<Process>,
    /// The temporary directory; `None` once removed.
    dir: Option<TempDir>,
}

/// Why one start attempt failed.
enum StartError {
    /// A child could not bind its port: retry with new ports.
    PortConflict(anyhow::Error),
    /// Anything else.
    Fatal(anyhow::Error),
}

impl From<anyhow::Error> for StartError {
    fn from(e: anyhow::Error) -> Self {
        StartError::Fatal(e)
    }
}

impl From<std::io::Error> for StartError {
    fn from(e: std::io::Error) -> Self {
        StartError::Fatal(e.into())
    }
}

impl ControlPlane {
    /// Ensures the binaries, starts etcd and kube-apiserver on free 127.0.0.1 ports in a new
    /// temporary directory, and waits until the apiserver is ready and namespace `default` exists.
    ///
    /// Binaries come from `KUBEBUILDER_ASSETS` if it holds `kube-apiserver` and `etcd`, otherwise
    /// from `tests/envtest/build.sh` (its progress is streamed to stderr; a cold build takes many
    /// minutes). The start is retried with new ports if one was taken in the meantime. The timeout
    /// is 90 s, or `KUBEBUILDER_CONTROLPLANE_START_TIMEOUT`; on failure the error carries the last
    /// 40 log lines of both processes.
    pub async fn start() -> Result<ControlPlane> {
        Self::start_with(Options::default()).await
    }

    /// Like [`start`](Self::start), with [`Options`].
    pub async fn start_with(options: Options) -> Result<ControlPlane> {
        let bin_dir = assets::ensure().await?;
        let timeout = start_timeout();
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            match Self::try_start(&bin_dir, timeout, &options).await {
                Ok(cp) => {
                    tracing::info!(
                        url = %cp.url,
                        elapsed_ms = started.elapsed().as_millis(),
                        "envtest control plane ready"
                    );
                    return Ok(cp);
                }
                Err(StartError::PortConflict(e)) if attempt < START_ATTEMPTS => {
                    tracing::warn!(attempt, error = %e, "port taken while starting; retrying");
                    attempt += 1;
                }
                Err(StartError::PortConflict(e) | StartError::Fatal(e)) => {
                    return Err(e.context("starting the envtest control plane"));
                }
            }
        }
    }

    /// The control plane shared by all tests of this test binary, started on first use.
    ///
    /// The start blocks the caller (on its own thread and runtime, so it may be called from any
    /// async test). Panics with the start error if it cannot start; every later caller panics with
    /// the same message rather than retrying. Use a fresh [`client`](Self::client) per test and
    /// [`create_namespace`](Self::create_namespace) to keep tests apart.
    pub fn shared() -> &'static ControlPlane {
        static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

        extern "C" fn shut_down_shared() {
            if let Some(Ok(cp)) = SHARED.get() {
                cp.shutdown(false);
            }
        }

        let shared = SHARED.get_or_init(|| {
            let started = std::thread::Builder::new()
                .name("zmo-envtest-start".into())
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| format!("cannot build a tokio runtime: {e}"))?;
                    runtime
                        .block_on(ControlPlane::start())
                        .map_err(|e| format!("{e:#}"))
                })
                .map_err(|e| format!("cannot spawn the start thread: {e}"))
                .and_then(|handle| {
                    handle
                        .join()
                        .unwrap_or_else(|_| Err("the start thread panicked".into()))
                });
            if started.is_ok() {
                // SAFETY: registers a plain `extern "C" fn` that cannot unwind.
                if unsafe { libc::atexit(shut_down_shared) } != 0 {
                    tracing::warn!("atexit failed; the shared control plane relies on PDEATHSIG");
                }
            }
            started
        });
        match shared {
            Ok(cp) => cp,
            Err(e) => panic!(
                "the shared envtest control plane (etcd + kube-apiserver) could not start: {e}"
            ),
        }
    }

    /// Path of a kubeconfig file for user `admin` in group `system:masters` (cluster, user and
    /// context all named `envtest`, credentials embedded).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The kubeconfig written to [`kubeconfig_path`](Self::kubeconfig_path).
    pub fn kubeconfig(&self) -> Kubeconfig {
        self.kubeconfig.clone()
    }

    /// A new admin client.
    ///
    /// Every call builds a fresh client, since a client is tied to the tokio runtime it was
    /// created on and each `#[tokio::test]` has its own runtime.
    pub async fn client(&self) -> Result<kube::Client> {
        let options = KubeConfigOptions {
            context: Some(KUBECONFIG_NAME.into()),
            ..KubeConfigOptions::default()
        };
        let config = kube::Config::from_custom_kubeconfig(self.kubeconfig(), &options)
            .await
            .context("loading the envtest kubeconfig")?;
        kube::Client::try_from(config).context("building a client for the envtest control plane")
    }

    /// A `kubectl` command from the binary directory (same version as the apiserver), with
    /// `--kubeconfig` already set; add arguments and run it.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(self.bin_dir.join("kubectl"));
        command.arg("--kubeconfig").arg(&self.kubeconfig_path);
        command
    }

    /// The directory holding `kube-apiserver`, `etcd` and `kubectl`.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Applies every CustomResourceDefinition in the `*.yaml` / `*.yml` files of `dir` (multi-document
    /// files allowed) with server-side apply, field manager `zmo-testkit`, then waits until each is
    /// `Established` and its resource is served by discovery.
    ///
    /// Fails if a document is not a CRD or the directory holds none.
    pub async fn install_crds(&self, dir: &Path) -> Result<()> {
        let crds = read_crds(dir).await?;
        let client = self.client().await?;
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mut names = Vec::with_capacity(crds.len());
        for crd in &crds {
            let name = crd
                .metadata
                .name
                .clone()
                .context("a CustomResourceDefinition has no metadata.name")?;
            api.patch(&name, &params, &Patch::Apply(crd))
                .await
                .with_context(|| format!("applying CRD {name}"))?;
            names.push(name);
        }
        for (crd, name) in crds.iter().zip(&names) {
            tokio::time::timeout(
                CRD_TIMEOUT,
                await_condition(api.clone(), name, conditions::is_crd_established()),
            )
            .await
            .map_err(|_| anyhow!("CRD {name} not Established within {CRD_TIMEOUT:?}"))?
            .with_context(|| format!("watching CRD {name}"))?;
            wait_for_discovery(&client, crd).await?;
        }
        Ok(())
    }

    /// Applies the operator's MutatingAdmissionPolicy and its binding from `file`
    /// (`deploy/admission/cleanup-finalizer.yaml`: new OrgMetadata/UserMetadata get the cleanup
    /// finalizer at admission) with server-side apply, then waits until the apiserver enforces it
    /// (policies load asynchronously): a dry-run create of an `OrgMetadata` in `default` comes
    /// back with the finalizer.
    pub async fn install_finalizer_policy(&self, file: &Path) -> Result<()> {
        use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
        let client = self.client().await?;
        let text = tokio::fs::read_to_string(file)
            .await
            .with_context(|| format!("reading {}", file.display()))?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(document)?;
            if value.is_null() {
                continue;
            }
            let object: DynamicObject = serde_yaml::from_value(value)?;
            let types = object
                .types
                .clone()
                .context("a document without apiVersion/kind")?;
            let (group, version) = types
                .api_version
                .split_once('/')
                .context("a policy document without an API group")?;
            let kind = types.kind.to_lowercase();
            let plural = match kind.strip_suffix('y') {
                Some(stem) => format!("{stem}ies"),
                None => format!("{kind}s"),
            };
            let resource = ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk(group, version, &types.kind),
                &plural,
            );
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            let name = object
                .metadata
                .name
                .clone()
                .context("a document without a name")?;
            api.patch(&name, &params, &Patch::Apply(&object))
                .await
                .with_context(|| format!("applying {} {name}", types.kind))?;
        }
        let probe = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("metadata.zitadel-operator.dev", "v1alpha1", "OrgMetadata"),
            "orgmetadatas",
        );
        let api: Api<DynamicObject> = Api::namespaced_with(client, "default", &probe);
        let object: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "metadata.zitadel-operator.dev/v1alpha1",
            "kind": "OrgMetadata",
            "metadata": {"name": "finalizer-policy-probe"},
            "spec": {"organizationId": "probe", "metadata": []},
        }))?;
        let dry_run = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let created = api.create(&dry_run, &object).await?;
            if created.metadata.finalizers.is_some_and(|f| {
                f.iter()
                    .any(|f| f == "metadata.zitadel-operator.dev/cleanup")
            }) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the finalizer policy of {} was not enforced within 60 s",
                    file.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Creates a namespace named `{prefix}-{random}` and returns its name.
    ///
    /// `prefix` is lower-cased and reduced to a DNS-1123 label; the whole name stays within 63
    /// characters. Note that without a namespace controller, deleted namespaces never go away.
    pub async fn create_namespace(&self, prefix: &str) -> Result<String> {
        let api: Api<Namespace> = Api::all(self.client().await?);
        let mut attempts = 0;
        loop {
            let name = unique_name(prefix);
            let namespace = Namespace {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some(
                        [(
                            "app.kubernetes.io/created-by".to_owned(),
                            FIELD_MANAGER.to_owned(),
                        )]
                        .into(),
                    ),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            };
            match api.create(&PostParams::default(), &namespace).await {
                Ok(_) => return Ok(name),
                Err(kube::Error::Api(status)) if status.code == 409 && attempts < 3 => {
                    attempts += 1;
                }
                Err(e) => return Err(e).with_context(|| format!("creating namespace {name}")),
            }
        }
    }

    /// The apiserver URL, `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The temporary directory holding etcd's data, certificates, the kubeconfig and the process
    /// logs (`etcd.log`, `kube-apiserver.log`); removed on drop.
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// Process ids of the etcd and kube-apiserver processes still owned (empty after shutdown).
    pub fn process_ids(&self) -> Vec<u32> {
        self.lock(true)
            .map(|state| state.processes.iter().map(Process::pid).collect())
            .unwrap_or_default()
    }

    /// etcd's client URL, `http://127.0.0.1:<port>` (plain HTTP; it also serves etcd's v3
    /// HTTP/JSON gateway under `/v3/`).
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// Whether a kube-apiserver process is currently owned (false between
    /// [`stop_apiserver`](Self::stop_apiserver) and [`start_apiserver`](Self::start_apiserver)).
    pub fn apiserver_running(&self) -> bool {
        self.lock(true)
            .is_some_and(|state| state.processes.iter().any(|p| p.name() == "kube-apiserver"))
    }

    /// Kills kube-apiserver (SIGKILL, whole process group) and reaps it; etcd keeps running. A
    /// no-op if it is not running.
    ///
    /// Never call this on the [`shared`](Self::shared) instance while other tests use it: start a
    /// private control plane with [`start`](Self::start) for restart tests.
    pub fn stop_apiserver(&self) {
        let Some(mut state) = self.lock(true) else {
            return;
        };
        if let Some(index) = state
            .processes
            .iter()
            .position(|p| p.name() == "kube-apiserver")
        {
            let mut process = state.processes.remove(index);
            process.kill();
            tracing::info!(url = %self.url, "kube-apiserver stopped");
        }
    }

    /// Starts kube-apiserver again with the command line of the first start: same port,
    /// certificates, etcd (and so the same data) and flags; its output is appended to
    /// `kube-apiserver.log`. Waits until `/readyz` answers (start timeout as in
    /// [`start`](Self::start)) and returns how long that took.
    ///
    /// Fails if the apiserver is already running or exits while starting (e.g. its port was taken
    /// in the meantime; the error then carries the log tails).
    pub async fn start_apiserver(&self) -> Result<Duration> {
        if self.apiserver_running() {
            bail!("kube-apiserver is already running");
        }
        let timeout = start_timeout();
        let started = Instant::now();
        self.spawn("kube-apiserver", self.apiserver_args.clone())?;
        let client = self.client().await?;
        self.wait_for(
            started + timeout,
            timeout,
            "restarted kube-apiserver /readyz",
            async || {
                let request = http::Request::get("/readyz").body(Vec::new())?;
                client.request_text(request).await?;
                Ok(())
            },
        )
        .await
        .map_err(|(StartError::PortConflict(e) | StartError::Fatal(e))| e)?;
        let elapsed = started.elapsed();
        tracing::info!(url = %self.url, elapsed_ms = elapsed.as_millis(), "kube-apiserver restarted");
        Ok(elapsed)
    }

    /// [`stop_apiserver`](Self::stop_apiserver), then [`start_apiserver`](Self::start_apiserver).
    pub async fn restart_apiserver(&self) -> Result<Duration> {
        self.stop_apiserver();
        self.start_apiserver().await
    }

    /// etcd's current revision (the cluster-wide `resourceVersion` counter), via the v3
    /// HTTP/JSON gateway (`POST /v3/kv/range`).
    pub async fn etcd_revision(&self) -> Result<i64> {
        // Any key does: the response header carries the store's revision.
        let body = serde_json::json!({ "key": BASE64_STANDARD.encode("/"), "count_only": true });
        let answer = self.etcd_call("/v3/kv/range", &body).await?;
        answer["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .or_else(|| answer["header"]["revision"].as_i64())
            .with_context(|| format!("no header.revision in etcd's answer: {answer}"))
    }

    /// Compacts etcd's history up to its current revision (physically, waiting for it), so every
    /// older revision is gone: a watch or list at an older `resourceVersion` that reaches etcd
    /// gets `410 Gone`. Returns the revision compacted at.
    ///
    /// The apiserver's watch cache is not affected until the apiserver restarts (or its own
    /// watch on etcd breaks); combine with [`restart_apiserver`](Self::restart_apiserver).
    pub async fn compact_etcd(&self) -> Result<i64> {
        let revision = self.etcd_revision().await?;
        let body = serde_json::json!({ "revision": revision.to_string(), "physical": true });
        self.etcd_call("/v3/kv/compaction", &body).await?;
        tracing::info!(revision, "etcd compacted");
        Ok(revision)
    }

    /// One call to etcd's v3 HTTP/JSON gateway; fails on a non-2xx answer.
    async fn etcd_call(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value> {
        let client = reqwest::Client::builder()
            .timeout(PROBE_TIMEOUT)
            .build()
            .context("building an HTTP client for etcd")?;
        let response = client
            .post(format!("{}{path}", self.etcd_url))
            .json(body)
            .send()
            .await
            .with_context(|| format!("calling etcd {path}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("etcd {path} answered {status}: {text}");
        }
        serde_json::from_str(&text)
            .with_context(|| format!("etcd {path} answered non-JSON: {text}"))
    }

    /// The audit events written so far (one JSON object per request, level `Metadata`: `verb`,
    /// `requestURI`, `objectRef`, `responseStatus`, `userAgent`, ...), across apiserver restarts.
    ///
    /// Fails unless the control plane was started with [`Options::audit_log`]. A line the
    /// apiserver is still writing is skipped.
    pub fn audit_events(&self) -> Result<Vec<serde_json::Value>> {
        let path = self
            .audit_log
            .as_ref()
            .context("the control plane was started without Options::audit_log")?;
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect())
    }

    /// One start attempt with fresh ports and directory. Whatever was started is cleaned up by
    /// `Drop` if the attempt fails.
    async fn try_start(
        bin_dir: &Path,
        timeout: Duration,
        options: &Options,
    ) -> Result<ControlPlane, StartError> {
        let deadline = Instant::now() + timeout;
        let dir = tempfile::Builder::new()
            .prefix("zmo-envtest-")
            .tempdir()
            .context("creating the control-plane temp dir")?;
        let root = dir.path().to_path_buf();
        let [etcd_port, peer_port, api_port] = net::free_ports::<3>()?;
        let url = format!("https://127.0.0.1:{api_port}");
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");

        let cert_dir = root.join("certs");
        std::fs::create_dir(&cert_dir)?;
        let pki = Pki::generate()?;
        for (file, pem) in [
            ("apiserver.crt", &pki.serving_cert),
            ("apiserver.key", &pki.serving_key),
            ("client-cert-auth-ca.crt", &pki.client_ca),
            ("sa-signer.key", &pki.sa_key),
            ("sa-signer.pub", &pki.sa_pub),
        ] {
            std::fs::write(cert_dir.join(file), pem).with_context(|| format!("writing {file}"))?;
        }
        let kubeconfig = admin_kubeconfig(&url, &pki);
        let kubeconfig_path = root.join("kubeconfig");
        let yaml = serde_yaml::to_string(&kubeconfig).context("serializing the kubeconfig")?;
        std::fs::write(&kubeconfig_path, yaml).context("writing the kubeconfig")?;

        let cert = |file: &str| cert_dir.join(file).display().to_string();
        let mut apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--secure-port={api_port}"),
            "--bind-address=127.0.0.1".into(),
            format!("--cert-dir={}", cert_dir.display()),
            format!("--tls-cert-file={}", cert("apiserver.crt")),
            format!("--tls-private-key-file={}", cert("apiserver.key")),
            format!("--client-ca-file={}", cert("client-cert-auth-ca.crt")),
            "--authorization-mode=RBAC".into(),
            format!("--service-account-issuer=https://127.0.0.1:{api_port}/"),
            format!("--service-account-key-file={}", cert("sa-signer.pub")),
            format!(
                "--service-account-signing-key-file={}",
                cert("sa-signer.key")
            ),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--disable-admission-plugins=ServiceAccount".into(),
            "--allow-privileged=true".into(),
        ];
        if let Some(ip) = net::advertise_address() {
            apiserver_args.push(format!("--advertise-address={ip}"));
        }
        let audit_log = if options.audit_log {
            let policy = root.join("audit-policy.yaml");
            std::fs::write(&policy, AUDIT_POLICY).context("writing the audit policy")?;
            let log = root.join("audit.log");
            apiserver_args.extend([
                format!("--audit-policy-file={}", policy.display()),
                format!("--audit-log-path={}", log.display()),
                "--audit-log-format=json".into(),
                "--audit-log-mode=blocking".into(),
            ]);
            Some(log)
        } else {
            None
        };

        let cp = ControlPlane {
            bin_dir: bin_dir.to_path_buf(),
            root: root.clone(),
            kubeconfig_path,
            kubeconfig,
            url,
            etcd_url: etcd_url.clone(),
            apiserver_args,
            audit_log,
            state: Mutex::new(State {
                processes: Vec::new(),
                dir: Some(dir),
            }),
        };

        let data_dir = root.join("etcd");
        cp.spawn(
            "etcd",
            vec![
                format!("--data-dir={}", data_dir.display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
                "--unsafe-no-fsync=true".into(),
            ],
        )?;
        cp.wait_for(deadline, timeout, "etcd /health", async || {
            etcd_healthy(etcd_port).await
        })
        .await?;

        cp.spawn("kube-apiserver", cp.apiserver_args.clone())?;

        let client = cp.client().await?;
        cp.wait_for(deadline, timeout, "kube-apiserver /readyz", async || {
            let request = http::Request::get("/readyz").body(Vec::new())?;
            client.request_text(request).await?;
            Ok(())
        })
        .await?;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        cp.wait_for(deadline, timeout, "namespace default", async || {
            namespaces
                .get_opt("default")
                .await?
                .map(drop)
                .ok_or_else(|| anyhow!("namespace default does not exist yet"))
        })
        .await?;
        Ok(cp)
    }

    /// Starts one of the control-plane binaries, logging to `<root>/<name>.log`.
    fn spawn(&self, name: &'static str, args: Vec<String>) -> Result<()> {
        let log = self.root.join(format!("{name}.log"));
        tracing::debug!(name, ?args, "starting");
        let process = Process::spawn(name, &self.bin_dir.join(name), &args, log)?;
        self.lock(true)
            .context("control-plane state unavailable")?
            .processes
            .push(process);
        Ok(())
    }

    /// Runs `probe` until it succeeds, failing when a process exits or `deadline` passes.
    async fn wait_for(
        &self,
        deadline: Instant,
        timeout: Duration,
        what: &str,
        mut probe: impl AsyncFnMut() -> Result<()>,
    ) -> Result<(), StartError> {
        let mut last = String::from("no probe completed");
        loop {
            self.check_running()?;
            let now = Instant::now();
            if now >= deadline {
                return Err(StartError::Fatal(anyhow!(
                    "{what} not ready within {timeout:?} (last probe: {last})\n{}",
                    self.log_tails()
                )));
            }
            match tokio::time::timeout((deadline - now).min(PROBE_TIMEOUT), probe()).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => last = format!("{e:#}"),
                Err(_) => last = format!("no answer within {PROBE_TIMEOUT:?}"),
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Fails if a started process has exited; a port conflict is reported as such.
    fn check_running(&self) -> Result<(), StartError> {
        let mut state = self.lock(true).context("control-plane state unavailable")?;
        let exited = state.processes.iter_mut().find_map(|p| {
            p.exited()
                .map(|status| (p.name(), p.log().to_path_buf(), status))
        });
        let Some((name, log, status)) = exited else {
            return Ok(());
        };
        let conflict =
            std::fs::read_to_string(&log).is_ok_and(|text| text.contains("address already in use"));
        let error = anyhow!(
            "{name} exited during start-up with {status}\n{}",
            tails(&state.processes)
        );
        Err(if conflict {
            StartError::PortConflict(error)
        } else {
            StartError::Fatal(error)
        })
    }

    /// The last log lines of every process, for error messages.
    fn log_tails(&self) -> String {
        self.lock(true)
            .map(|state| tails(&state.processes))
            .unwrap_or_default()
    }

    /// Locks the state, waiting (`block`) or not; a poisoned lock is still usable.
    fn lock(&self, block: bool) -> Option<MutexGuard<'_, State>> {
        if block {
            return Some(self.state.lock().unwrap_or_else(|p| p.into_inner()));
        }
        match self.state.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Kills the processes (apiserver first) and removes the temporary directory. Idempotent.
    fn shutdown(&self, block: bool) {
        let Some(mut state) = self.lock(block) else {
            return;
        };
        while let Some(mut process) = state.processes.pop() {
            process.kill();
        }
        if let Some(dir) = state.dir.take() {
            let path = dir.path().to_path_buf();
            if let Err(e) = dir.close() {
                tracing::warn!(dir = %path.display(), error = %e, "cannot remove control-plane dir");
            }
        }
    }
}

impl Drop for ControlPlane {
    /// Kills etcd and kube-apiserver (their whole process groups) and removes the temp dir.
    fn drop(&mut self) {
        self.shutdown(true);
    }
}

/// The start timeout: `KUBEBUILDER_CONTROLPLANE_START_TIMEOUT` (`90`, `90s`, `2m`) or 90 s.
fn start_timeout() -> Duration {
    std::env::var(START_TIMEOUT_ENV)
        .ok()
        .and_then(|v| {
            let parsed = parse_duration(&v);
            if parsed.is_none() {
                tracing::warn!(value = %v, "ignoring unparsable {START_TIMEOUT_ENV}");
            }
            parsed
        })
        .unwrap_or(DEFAULT_START_TIMEOUT)
}

/// Parses whole seconds (`90`, `90s`) or minutes (`2m`).
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Some(minutes) = text.strip_suffix('m') {
        return minutes
            .parse::<u64>()
            .ok()
            .and_then(|m| m.checked_mul(60))
            .map(Duration::from_secs);
    }
    text.strip_suffix('s')
        .unwrap_or(text)
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// The last [`LOG_TAIL_LINES`] lines of each process's log.
fn tails(processes: &[Process]) -> String {
    let mut out = String::new();
    for process in processes {
        let text = std::fs::read(process.log())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", process.log().display()));
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(LOG_TAIL_LINES);
        let _ = writeln!(
            out,
            "--- last {} lines of {} (pid {}) ---",
            lines.len() - start,
            process.name(),
            process.pid()
        );
        for line in &lines[start..] {
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

/// Kubeconfig for `admin` (client certificate) against `url`, all names `envtest`.
fn admin_kubeconfig(url: &str, pki: &Pki) -> Kubeconfig {
    let b64 = |pem: &str| BASE64_STANDARD.encode(pem);
    Kubeconfig {
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        clusters: vec![NamedCluster {
            name: KUBECONFIG_NAME.into(),
            cluster: Some(Cluster {
                server: Some(url.into()),
                certificate_authority_data: Some(b64(&pki.serving_ca)),
                ..Cluster::default()
            }),
            ..NamedCluster::default()
        }],
        auth_infos: vec![NamedAuthInfo {
            name: KUBECONFIG_NAME.into(),
            auth_info: Some(AuthInfo {
                client_certificate_data: Some(b64(&pki.admin_cert)),
                client_key_data: Some(b64(&pki.admin_key).into()),
                ..AuthInfo::default()
            }),
            ..NamedAuthInfo::default()
        }],
        contexts: vec![NamedContext {
            name: KUBECONFIG_NAME.into(),
            context: Some(KubeContext {
                cluster: KUBECONFIG_NAME.into(),
                user: Some(KUBECONFIG_NAME.into()),
                ..KubeContext::default()
            }),
            ..NamedContext::default()
        }],
        current_context: Some(KUBECONFIG_NAME.into()),
        ..Kubeconfig::default()
    }
}

/// One probe of etcd's `/health` endpoint (plain HTTP/1.0 over loopback).
async fn etcd_healthy(port: u16) -> Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response);
    let status_ok = response
        .lines()
        .next()
        .is_some_and(|line| line.split_whitespace().nth(1) == Some("200"));
    if status_ok && response.contains(r#""health":"true""#) {
        Ok(())
    } else {
        bail!(
            "unhealthy: {}",
            response.lines().last().unwrap_or_default().trim()
        )
    }
}

/// Reads every CRD document from the `*.yaml` / `*.yml` files in `dir`, in file-name order.
async fn read_crds(dir: &Path) -> Result<Vec<CustomResourceDefinition>> {
    let mut files = Vec::new();
    let mut entries = tokio::fs::read_dir(dir)
        .await
        .with_context(|| format!("reading {}", dir.display()))?;
    while let Some(entry) = entries.next_entry().await? {
        let path = entry.path();
        let is_yaml = path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml");
        if is_yaml && entry.file_type().await?.is_file() {
            files.push(path);
        }
    }
    files.sort();
    let mut crds = Vec::new();
    for file in &files {
        let text = tokio::fs::read_to_string(file)
            .await
            .with_context(|| format!("reading {}", file.display()))?;
        for (index, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let value = serde_yaml::Value::deserialize(document)
                .with_context(|| format!("parsing document {index} of {}", file.display()))?;
            if value.is_null() {
                continue;
            }
            let crd: CustomResourceDefinition =
                serde_yaml::from_value(value).with_context(|| {
                    format!(
                        "document {index} of {} is not a CustomResourceDefinition",
                        file.display()
                    )
                })?;
            crds.push(crd);
        }
    }
    if crds.is_empty() {
        bail!("no CustomResourceDefinition found in {}", dir.display());
    }
    Ok(crds)
}

/// Waits until discovery lists the CRD's resource in every served version.
async fn wait_for_discovery(client: &kube::Client, crd: &CustomResourceDefinition) -> Result<()> {
    let group = &crd.spec.group;
    let plural = &crd.spec.names.plural;
    let deadline = Instant::now() + CRD_TIMEOUT;
    for version in crd.spec.versions.iter().filter(|v| v.served) {
        let api_version = format!("{group}/{}", version.name);
        loop {
            let served = client
                .list_api_group_resources(&api_version)
                .await
                .is_ok_and(|list| list.resources.iter().any(|r| &r.name == plural));
            if served {
                break;
            }
            if Instant::now() >= deadline {
                bail!("{plural}.{api_version} not served by discovery within {CRD_TIMEOUT:?}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
    Ok(())
}

/// `{prefix}-{random}`, reduced to a DNS-1123 label of at most 63 characters.
fn unique_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut base: String = prefix
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    base.truncate(MAX_NAME_LEN - SUFFIX_LEN - 1);
    let base = base.trim_matches('-');
    let base = if base.is_empty() { "ns" } else { base };
    let mut rng = rand::rng();
    let suffix: String = (0..SUFFIX_LEN)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    format!("{base}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_dns1123_label(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.starts_with('-')
            && !name.ends_with('-')
    }

    #[test]
    fn unique_names_are_dns1123_labels() {
        for prefix in [
            "my-test",
            "Weird_Prefix!",
            "",
            "---",
            &"x".repeat(100),
            "Ünïcödé",
        ] {
            let name = unique_name(prefix);
            assert!(is_dns1123_label(&name), "{prefix:?} gave {name:?}");
        }
        assert!(unique_name("my-test").starts_with("my-test-"));
        assert_ne!(unique_name("a"), unique_name("a"));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("45s"), Some(Duration::from_secs(45)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("soon"), None);
    }
}
