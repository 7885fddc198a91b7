//! `zitadel-metadata-operator diff` end to end: the real binary, as the read-only identity of
//! `deploy/preview/rbac.yaml`, against the real kube-apiserver and the ZITADEL emulator.
//!
//! * the preview shows exactly the writes the controller then makes for the same manifests
//!   (compared with the emulator's events), and writes nothing itself: no ZITADEL write in the
//!   emulator's request log, no event, and only `get`/`list` in the apiserver's audit log;
//! * exit codes (0 no change, 1 changes, 2 errors), `-f -`, directories, JSON, redaction;
//! * `--live` through the kubectl plugin (`kubectl zitadel diff`), with a ZitadelConnection's
//!   credentials and a ClusterZitadelConnection's guard.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::config::KubeConfigOptions;
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;

use common::{
    ACME, ALICE, GLOBEX, Operator, TOKEN, apply_as, condition, fast_settings, shared_with_crds,
    wait_obj,
};
use zitadel_metadata_operator::crd::{
    ClusterZitadelConnection, MetadataResource, OrgMetadata, UserMetadata, ZitadelConnection,
};
use zitadel_metadata_operator::status;
use zmo_testkit::controlplane::{ControlPlane, Options};
use zmo_testkit::emulator::{EmulatedEvent, Emulator, Operation};

/// The ServiceAccount of `deploy/preview/rbac.yaml`, impersonated by the preview's kubeconfig.
const PREVIEW_USER: &str = "system:serviceaccount:zitadel-system:zitadel-metadata-preview";
const MANAGER: &str = "e2e-test";

/// ZITADEL operations that change state (every API version).
const WRITES: &[Operation] = &[
    Operation::SetOrgMetadata,
    Operation::BulkSetOrgMetadata,
    Operation::RemoveOrgMetadata,
    Operation::BulkRemoveOrgMetadata,
    Operation::SetUserMetadata,
    Operation::BulkSetUserMetadata,
    Operation::RemoveUserMetadata,
    Operation::BulkRemoveUserMetadata,
    Operation::SetUserMetadataV2,
    Operation::DeleteUserMetadataV2,
    Operation::SetOrgMetadataV2,
    Operation::DeleteOrgMetadataV2,
    Operation::SetOrgMetadataV2beta,
    Operation::DeleteOrgMetadataV2beta,
];

/// A control plane (the binary's shared one, or a private one with an audit log), a namespace,
/// an emulator, and a directory with the token, the read-only kubeconfig and manifests.
struct Env {
    private: Option<ControlPlane>,
    shared: Option<&'static ControlPlane>,
    client: Client,
    ns: String,
    emu: Emulator,
    dir: tempfile::TempDir,
    /// The read-only kubeconfig (impersonating [`PREVIEW_USER`]).
    readonly: PathBuf,
}

/// What one run of the binary did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts the exit code (stdout and stderr are shown when it differs).
    fn assert_code(&self, code: i32) {
        assert_eq!(self.code, code, "{}\n{}", self.stdout, self.stderr);
    }

    /// Asserts that stdout contains `needle` (stdout is shown when not).
    fn assert_stdout_has(&self, needle: &str) {
        assert!(self.stdout.contains(needle), "{}", self.stdout);
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

impl Env {
    async fn shared(prefix: &str) -> Env {
        let cp = shared_with_crds().await;
        static RBAC: OnceLock<()> = OnceLock::new();
        RBAC.get_or_init(|| install_preview_rbac(cp));
        Env::with(None, Some(cp), prefix).await
    }

    async fn audited(prefix: &str) -> Env {
        let cp = ControlPlane::start_with(Options { audit_log: true })
            .await
            .expect("private control plane");
        let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
        cp.install_crds(&crds).await.expect("install crds/");
        install_preview_rbac(&cp);
        Env::with(Some(cp), None, prefix).await
    }

    async fn with(
        private: Option<ControlPlane>,
        shared: Option<&'static ControlPlane>,
        prefix: &str,
    ) -> Env {
        let cp = private.as_ref().or(shared).expect("a control plane");
        let client = cp.client().await.expect("client");
        let ns = cp.create_namespace(prefix).await.expect("namespace");
        let emu = Emulator::start_seeded().await.expect("emulator");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("token"), TOKEN).expect("token file");
        let readonly = readonly_kubeconfig(cp, dir.path());
        await_rbac(cp).await;
        Env {
            private,
            shared,
            client,
            ns,
            emu,
            dir,
            readonly,
        }
    }

    fn cp(&self) -> &ControlPlane {
        self.private
            .as_ref()
            .or(self.shared)
            .expect("a control plane")
    }

    fn orgs(&self) -> Api<OrgMetadata> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn users(&self) -> Api<UserMetadata> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn operator(&self) -> Operator {
        Operator::start(
            self.client.clone(),
            &self.emu.url(),
            &self.ns,
            fast_settings(),
        )
    }

    fn token(&self) -> PathBuf {
        self.dir.path().join("token")
    }

    /// A manifests directory with these files.
    fn manifests(&self, name: &str, files: &[(&str, String)]) -> PathBuf {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        for (file, text) in files {
            std::fs::write(dir.join(file), text).expect("write manifest");
        }
        dir
    }

    /// `zitadel-metadata-operator diff ARGS` as the read-only identity, with the emulator as the
    /// default connection and the test's namespace as the default namespace.
    async fn diff(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut command =
            tokio::process::Command::new(env!("CARGO_BIN_EXE_zitadel-metadata-operator"));
        command
            .arg("diff")
            .args(["--zitadel-url", &self.emu.url(), "--request-timeout", "5s"])
            .arg("--token-file")
            .arg(self.token())
            .args(["-n", &self.ns]);
        command.args(args);
        run(command, &self.readonly, stdin).await
    }

    /// Server-side apply of every manifest in `dir` as the test's field manager (so entries
    /// that left a list are removed), with the real kubectl as admin.
    fn apply_dir(&self, dir: &Path) {
        let out = self
            .cp()
            .kubectl()
            .args([
                "apply",
                "--server-side",
                "--force-conflicts",
                &format!("--field-manager={MANAGER}"),
                "-n",
                &self.ns,
                "-f",
            ])
            .arg(dir)
            .output()
            .expect("kubectl apply");
        assert!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn put_secret(&self, name: &str, key: &str, value: &str) {
        common_secret(&self.client, &self.ns, name, key, value).await;
    }

    /// Wait until the object observed its generation and `pred` holds for its status.
    /// Applies the OrgMetadata `name` as [`MANAGER`].
    async fn apply_org(&self, name: &str, spec: Value) {
        apply_as(&self.orgs(), MANAGER, name, spec).await;
    }

    /// Applies the UserMetadata `name` as [`MANAGER`].
    async fn apply_user(&self, name: &str, spec: Value) {
        apply_as(&self.users(), MANAGER, name, spec).await;
    }

    /// Waits until the OrgMetadata `name` is Ready (Synced).
    async fn wait_org_synced(&self, name: &str) {
        self.wait_org(name, "Ready", |o| has(o, status::READY, "True", "Synced"))
            .await;
    }

    /// Waits until the UserMetadata `name` is Ready (Synced).
    async fn wait_user_synced(&self, name: &str) {
        self.wait_user(name, "Ready", |o| has(o, status::READY, "True", "Synced"))
            .await;
    }

    async fn wait_org(&self, name: &str, what: &str, pred: impl Fn(&OrgMetadata) -> bool) {
        wait_obj(&self.orgs(), name, what, |o| observed(o) && pred(o)).await;
    }

    async fn wait_user(&self, name: &str, what: &str, pred: impl Fn(&UserMetadata) -> bool) {
        wait_obj(&self.users(), name, what, |o| observed(o) && pred(o)).await;
    }

    /// ZITADEL-side effects so far: writes in the request log and metadata events.
    fn effects(&self) -> (usize, usize) {
        let writes = self
            .emu
            .requests()
            .iter()
            .filter(|r| WRITES.contains(&r.operation))
            .count();
        (writes, self.emu.events().len())
    }
}

async fn common_secret(client: &Client, ns: &str, name: &str, key: &str, value: &str) {
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), ns);
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "stringData": {key: value}});
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&secret),
    )
    .await
    .expect("apply secret");
}

/// Run `command` with `KUBECONFIG` = `kubeconfig`, none of the operator's environment, and
/// `stdin`; bounded to 2 minutes.
async fn run(mut command: tokio::process::Command, kubeconfig: &Path, stdin: Option<&str>) -> Run {
    for var in [
        "ZITADEL_URL",
        "ZITADEL_TOKEN_FILE",
        "ZITADEL_TOKEN_SECRET",
        "ZITADEL_API",
        "RUST_LOG",
    ] {
        command.env_remove(var);
    }
    command
        .env("KUBECONFIG", kubeconfig)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("start diff");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).await.expect("stdin");
        drop(pipe);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("diff finished within 2 minutes")
        .expect("diff output");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `deploy/preview/rbac.yaml` applied with the real kubectl (its namespace created first).
fn install_preview_rbac(cp: &ControlPlane) {
    let _ = cp
        .kubectl()
        .args(["create", "namespace", "zitadel-system"])
        .output();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/preview/rbac.yaml");
    let out = cp
        .kubectl()
        .args(["apply", "-f"])
        .arg(&file)
        .output()
        .expect("kubectl apply");
    assert!(
        out.status.success(),
        "applying deploy/preview/rbac.yaml: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The admin kubeconfig, impersonating [`PREVIEW_USER`] (`as:` in the kubeconfig, honoured by
/// kube-rs and kubectl alike).
fn readonly_kubeconfig(cp: &ControlPlane, dir: &Path) -> PathBuf {
    let mut kubeconfig = cp.kubeconfig();
    for user in &mut kubeconfig.auth_infos {
        if let Some(auth) = user.auth_info.as_mut() {
            auth.impersonate = Some(PREVIEW_USER.into());
        }
    }
    let path = dir.join("readonly.kubeconfig");
    let yaml = serde_yaml::to_string(&kubeconfig).expect("kubeconfig yaml");
    std::fs::write(&path, yaml).expect("write kubeconfig");
    path
}

/// Waits until the preview identity may list OrgMetadata everywhere, and checks it may not write.
async fn await_rbac(cp: &ControlPlane) {
    let mut config =
        kube::Config::from_custom_kubeconfig(cp.kubeconfig(), &KubeConfigOptions::default())
            .await
            .expect("kubeconfig");
    config.auth_info.impersonate = Some(PREVIEW_USER.into());
    let client = Client::try_from(config).expect("impersonating client");
    let orgs: Api<OrgMetadata> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while let Err(e) = orgs.list(&Default::default()).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the preview identity cannot list OrgMetadata: {e}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let maps: Api<ConfigMap> = Api::namespaced(client, "default");
    let cm =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "preview-probe"}});
    match maps
        .patch(
            "preview-probe",
            &PatchParams::apply("preview"),
            &Patch::Apply(&cm),
        )
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("the preview identity may write: {other:?}"),
    }
}

fn observed<K: MetadataResource>(o: &K) -> bool {
    o.status()
        .is_some_and(|s| s.observed_generation == o.meta().generation)
}

fn has<K: MetadataResource>(o: &K, type_: &str, status_: &str, reason: &str) -> bool {
    o.status()
        .and_then(|s| status::find(&s.conditions, type_))
        .is_some_and(|c| c.status == status_ && c.reason == reason)
}

fn org_yaml(name: &str, spec: Value) -> String {
    manifest("OrgMetadata", name, spec)
}

fn user_yaml(name: &str, spec: Value) -> String {
    manifest("UserMetadata", name, spec)
}

fn manifest(kind: &str, name: &str, spec: Value) -> String {
    serde_yaml::to_string(&json!({
        "apiVersion": "metadata.zitadel-operator.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("yaml")
}

fn entries(pairs: &[(&str, &str)]) -> Vec<Value> {
    pairs
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect()
}

fn secret_entry(key: &str, secret: &str, secret_key: &str) -> Value {
    json!({"key": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": secret_key}}})
}

/// A write as the emulator recorded it, or as the preview announced it:
/// (`set`/`removed`, aggregate id, key, base64 value for sets).
type Write = (String, String, String, Option<String>);

fn writes_in_events(events: &[EmulatedEvent]) -> Vec<Write> {
    let mut out: Vec<Write> = events
        .iter()
        .filter_map(|e| {
            let action = if e.event_type.ends_with(".metadata.set") {
                "set"
            } else if e.event_type.ends_with(".metadata.removed") {
                "removed"
            } else {
                return None;
            };
            let payload = e.payload.as_ref()?;
            Some((
                action.to_string(),
                e.aggregate_id.clone(),
                payload["key"].as_str()?.to_string(),
                payload["value"].as_str().map(str::to_owned),
            ))
        })
        .collect();
    out.sort();
    out
}

fn writes_in_preview(report: &Value) -> Vec<Write> {
    use base64::Engine as _;
    let mut out = Vec::new();
    for object in report["objects"].as_array().expect("objects") {
        let aggregate = if object["kind"] == "UserMetadata" {
            &object["target"]["userId"]
        } else {
            &object["target"]["organizationId"]
        };
        for key in object["keys"].as_array().expect("keys") {
            let aggregate = aggregate
                .as_str()
                .expect("target id of an object with keys");
            let name = key["key"].as_str().expect("key").to_string();
            match key["action"].as_str() {
                Some("set") => {
                    let value = match &key["desired"] {
                        v if v["text"].is_string() => base64::engine::general_purpose::STANDARD
                            .encode(v["text"].as_str().expect("text")),
                        v => v["base64"].as_str().expect("value shown").to_string(),
                    };
                    out.push(("set".into(), aggregate.into(), name, Some(value)));
                }
                Some("remove") => out.push(("removed".into(), aggregate.into(), name, None)),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// (object name, key) → action, from a JSON report.
fn actions(report: &Value) -> BTreeSet<(String, String, String)> {
    report["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .flat_map(|o| {
            o["keys"].as_array().expect("keys").iter().map(move |k| {
                (
                    o["name"].as_str().unwrap_or_default().to_string(),
                    k["key"].as_str().unwrap_or_default().to_string(),
                    k["action"].as_str().unwrap_or_default().to_string(),
                )
            })
        })
        .collect()
}

fn result_of<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in the report: {report:#}"))
}

/// The baseline the "pull request" changes: objects synced by the operator, then changed in
/// ZITADEL out of band.
async fn baseline(env: &Env) {
    env.put_secret("api-creds", "key", "secret-value-v1").await;
    let operator = env.operator();
    env.apply_org(
        "acme",
        json!({"organizationId": ACME, "metadata": [
        {"key": "tier", "value": "gold"}, {"key": "legacy", "value": "old"},
        {"key": "region", "value": "eu"}, secret_entry("api-key", "api-creds", "key")]}),
    )
    .await;
    env.apply_org(
        "globex-report",
        json!({"organizationId": GLOBEX,
        "driftPolicy": "Report", "metadata": entries(&[("plan", "basic")])}),
    )
    .await;
    env.apply_org(
        "paused",
        json!({"organizationId": GLOBEX,
        "metadata": entries(&[("paused-key", "1")])}),
    )
    .await;
    env.apply_user(
        "alice",
        json!({"userId": ALICE,
        "metadata": entries(&[("team", "platform")])}),
    )
    .await;
    for name in ["acme", "paused"] {
        env.wait_org_synced(name).await;
    }
    env.wait_user_synced("alice").await;
    env.wait_org("globex-report", "Drifted", |o| {
        has(o, status::STALLED, "True", "Drifted")
    })
    .await;
    operator.stop().await;
    // Out of band: a key nobody manages, a key to adopt, drift under Report, a rotated Secret.
    env.emu.put_org_metadata(ACME, "external", b"x");
    env.emu.put_org_metadata(ACME, "adopt-me", b"same");
    env.emu.put_org_metadata(GLOBEX, "plan", b"premium");
    env.put_secret("api-creds", "key", "secret-value-v2").await;
}

/// The "pull request": every kind of change, as files of a directory (YAML and JSON).
fn pull_request(env: &Env) -> PathBuf {
    let acme = org_yaml(
        "acme",
        json!({"organizationId": ACME, "metadata": [
        {"key": "tier", "value": "platinum"}, {"key": "region", "value": "eu"},
        {"key": "cost-center", "value": "CC-4711"}, secret_entry("api-key", "api-creds", "key")]}),
    );
    let extra = format!(
        "{}---\n{}",
        org_yaml(
            "acme-extra",
            json!({"organizationId": ACME, "metadata": entries(&[
            ("adopt-me", "same"), ("region", "us"), ("fresh", "1")])})
        ),
        serde_yaml::to_string(&json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "unrelated"}, "data": {"a": "b"}}))
        .expect("yaml")
    );
    let report = serde_json::to_string_pretty(&json!({
        "apiVersion": "metadata.zitadel-operator.dev/v1alpha1", "kind": "OrgMetadata",
        "metadata": {"name": "globex-report"},
        "spec": {"organizationId": GLOBEX, "driftPolicy": "Report",
                 "metadata": entries(&[("plan", "basic")])}}))
    .expect("json");
    let users = user_yaml(
        "alice",
        json!({"userId": ALICE, "metadata": entries(&[("team", "platform"), ("shell", "zsh")])}),
    );
    let paused = org_yaml(
        "paused",
        json!({"organizationId": GLOBEX, "suspend": true,
               "metadata": entries(&[("paused-key", "2"), ("more", "3")])}),
    );
    env.manifests(
        "pr",
        &[
            ("acme.yaml", acme),
            ("extra.yaml", extra),
            ("report.json", report),
            ("users.yaml", users),
            ("paused.yaml", paused),
        ],
    )
}

#[tokio::test]
async fn the_preview_shows_exactly_what_the_controller_then_writes_and_writes_nothing() {
    let env = Env::audited("diff-exact").await;
    baseline(&env).await;
    let pr = pull_request(&env);
    let before = env.effects();
    let events_before = env.emu.events().len();

    let pr_arg = pr.to_str().expect("utf-8");
    let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let preview = env
        .diff(&["-f", pr_arg, "-o", "json", "--show-secret-values"], None)
        .await;
    preview.assert_code(1);
    let report = preview.json();

    // Nothing written: no ZITADEL write, no event; the apiserver saw only get/list from it.
    assert_eq!(env.effects(), before, "the preview wrote to ZITADEL");
    let verbs: BTreeSet<String> = env
        .cp()
        .audit_events()
        .expect("audit log")
        .iter()
        .filter(|e| e["impersonatedUser"]["username"] == PREVIEW_USER)
        .filter(|e| e["requestReceivedTimestamp"].as_str().unwrap_or("") >= since.as_str())
        .map(|e| e["verb"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(verbs.contains("list") && verbs.contains("get"), "{verbs:?}");
    assert!(
        verbs.iter().all(|v| v == "get" || v == "list"),
        "the preview identity sent {verbs:?}"
    );
    let maps: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.ns);
    assert!(maps.get_opt("unrelated").await.expect("get").is_none());

    // What it announced, key by key.
    let expected: BTreeSet<(String, String, String)> = [
        ("acme", "tier", "set"),
        ("acme", "cost-center", "set"),
        ("acme", "api-key", "set"),
        ("acme", "legacy", "remove"),
        ("acme", "region", "unchanged"),
        ("acme", "external", "unmanaged"),
        ("acme", "adopt-me", "unmanaged"),
        ("acme-extra", "adopt-me", "adopt"),
        ("acme-extra", "region", "conflict"),
        ("acme-extra", "fresh", "set"),
        ("acme-extra", "tier", "unmanaged"),
        ("acme-extra", "legacy", "unmanaged"),
        ("acme-extra", "api-key", "unmanaged"),
        ("acme-extra", "external", "unmanaged"),
        ("globex-report", "plan", "drift"),
        ("globex-report", "paused-key", "unmanaged"),
        ("alice", "team", "unchanged"),
        ("alice", "shell", "set"),
    ]
    .iter()
    .map(|(o, k, a)| (o.to_string(), k.to_string(), a.to_string()))
    .collect();
    let got = actions(&report);
    assert_eq!(
        got,
        expected,
        "missing {:?}, unexpected {:?}",
        expected.difference(&got).collect::<Vec<_>>(),
        got.difference(&expected).collect::<Vec<_>>()
    );
    assert_eq!(result_of(&report, "paused")["result"], "suspended");
    assert_eq!(
        result_of(&report, "globex-report")["result"],
        "driftReported"
    );
    assert_eq!(
        result_of(&report, "acme-extra")["outcome"]["reason"],
        "KeyConflict"
    );
    assert_eq!(result_of(&report, "acme-extra")["exists"], false);
    assert_eq!(result_of(&report, "acme")["exists"], true);
    assert_eq!(report["ignored"][0]["kind"], "ConfigMap");
    assert_eq!(report["summary"]["set"], 5);
    assert_eq!(report["summary"]["removed"], 1);
    let announced = writes_in_preview(&report);

    // Apply the same manifests with the operator running; the writes it makes are the preview.
    env.apply_dir(&pr);
    let operator = env.operator();
    env.wait_org_synced("acme").await;
    env.wait_org("acme-extra", "KeyConflict", |o| {
        has(o, status::STALLED, "True", "KeyConflict")
    })
    .await;
    env.wait_org("globex-report", "Drifted", |o| {
        has(o, status::STALLED, "True", "Drifted")
    })
    .await;
    env.wait_org("paused", "Suspended", |o| {
        condition(o.status.as_ref(), status::READY).is_none()
    })
    .await;
    env.wait_user_synced("alice").await;
    operator.stop().await;
    let events = env.emu.events();
    let made = writes_in_events(&events[events_before..]);
    assert_eq!(
        made, announced,
        "the controller's writes differ from the preview"
    );
    assert_eq!(
        env.emu.org_metadata(ACME).get("api-key").map(Vec::as_slice),
        Some(&b"secret-value-v2"[..])
    );

    // Converged: the same preview now announces nothing (claims and reported drift stay).
    let again = env.diff(&["-f", pr_arg, "-o", "json"], None).await;
    again.assert_code(0);
    let again = again.json();
    assert_eq!(again["changes"], false);
    assert_eq!(result_of(&again, "acme")["result"], "noChanges");
    assert_eq!(
        result_of(&again, "acme-extra")["outcome"]["reason"],
        "KeyConflict"
    );
}

/// A Secret and a ConfigMap with marked values, and an OrgMetadata manifest using both plus an
/// inline marked value.
async fn marked_manifest(env: &Env) -> String {
    env.put_secret("vault", "pw", "hunter2-SECRET-MARK").await;
    let maps: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.ns);
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
        "data": {"color": "cm-MARK-blue"}});
    maps.patch("settings", &PatchParams::apply(MANAGER), &Patch::Apply(&cm))
        .await
        .expect("configmap");
    let spec = json!({"organizationId": ACME, "metadata": [
        {"key": "inline", "value": "inline-MARK"},
        secret_entry("password", "vault", "pw"),
        {"key": "color", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "color"}}}]});
    org_yaml("marks", spec)
}

/// Changes, from stdin: values redacted by default, shown only as asked.
async fn values_are_redacted_unless_asked(env: &Env, yaml: &str) {
    // Changes, from stdin; values redacted by default.
    let plain = env.diff(&["-f", "-"], Some(yaml)).await;
    plain.assert_code(1);
    for mark in ["inline-MARK", "hunter2", "cm-MARK"] {
        assert!(
            !plain.stdout.contains(mark) && !plain.stderr.contains(mark),
            "{mark}"
        );
    }
    plain.assert_stdout_has("+ inline (value redacted)");
    assert!(
        plain
            .stdout
            .contains("+ password [Secret/vault] (value redacted)"),
        "{}",
        plain.stdout
    );
    plain.assert_stdout_has("keys: 3 to set, 0 to remove");
    // --show-values: inline and ConfigMap values, never the Secret's.
    let shown = env.diff(&["-f", "-", "--show-values"], Some(yaml)).await;
    shown.assert_stdout_has("+ inline = \"inline-MARK\"");
    shown.assert_stdout_has("cm-MARK-blue");
    assert!(!shown.stdout.contains("hunter2"), "{}", shown.stdout);
    // --show-secret-values, as JSON: everything.
    let all = env
        .diff(
            &["-f", "-", "--show-secret-values", "-o", "json"],
            Some(yaml),
        )
        .await;
    assert!(all.stdout.contains("hunter2-SECRET-MARK"));
    assert_eq!(all.json()["exitCode"], 1);
}

/// A directory, as JSON; once ZITADEL holds the values, nothing changes (adopted): exit 0.
async fn a_directory_of_adopted_values_exits_0(env: &Env, yaml: &str) {
    let dir = env.manifests("dir", &[("marks.yaml", yaml.to_string())]);
    let dir_arg = dir.to_str().expect("utf-8");
    for (key, value) in [
        ("inline", "inline-MARK"),
        ("password", "hunter2-SECRET-MARK"),
        ("color", "cm-MARK-blue"),
    ] {
        env.emu.put_org_metadata(ACME, key, value.as_bytes());
    }
    let same = env.diff(&["-f", dir_arg, "-o", "json"], None).await;
    same.assert_code(0);
    let report = same.json();
    assert_eq!(report["changes"], false);
    let marks = result_of(&report, "marks");
    assert_eq!(marks["origin"], format!("{dir_arg}/marks.yaml"));
    assert_eq!(report["summary"]["adopted"], 3);
    assert!(!same.stdout.contains("MARK"), "{}", same.stdout);
}

/// Errors: a missing Secret (per object), bad YAML, an unknown flag, no default connection.
async fn errors_exit_2(env: &Env, yaml: &str) {
    let missing = org_yaml(
        "broken",
        json!({"organizationId": ACME, "metadata": [secret_entry("k", "absent", "x")]}),
    );
    let broken = env.diff(&["-f", "-", "-o", "json"], Some(&missing)).await;
    broken.assert_code(2);
    let object = result_of(&broken.json(), "broken").clone();
    assert_eq!(object["result"], "error");
    assert_eq!(object["outcome"]["reason"], "ValueSourceNotFound");
    let bad = env.diff(&["-f", "-"], Some("kind: [")).await;
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("not valid YAML"), "{}", bad.stderr);
    let flag = env.diff(&["-f", "-", "--no-such-flag"], Some(yaml)).await;
    assert_eq!(flag.code, 2);
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_zitadel-metadata-operator"));
    command.args(["diff", "-n", &env.ns, "-f", "-"]);
    let nodefault = run(command, &env.readonly, Some(yaml)).await;
    nodefault.assert_code(2);
    nodefault.assert_stdout_has("ConnectionNotFound");
    nodefault.assert_stdout_has("pass --zitadel-url");
}

/// `diff -n NS -f - --zitadel-url URL --token-secret NS/<secret>`.
fn diff_with_token_secret(env: &Env, secret: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_zitadel-metadata-operator"));
    let (url, secret_ref) = (env.emu.url(), format!("{}/{secret}", env.ns));
    command.args(["diff", "-n", &env.ns, "-f", "-", "--zitadel-url", &url]);
    command.args(["--token-secret", &secret_ref]);
    command
}

/// The default connection's token from a Secret (--token-secret), read with the preview's own
/// read-only identity; an absent Secret is an error that does not leak the token.
async fn the_token_from_a_secret(env: &Env, yaml: &str) {
    // The default connection's token from a Secret (--token-secret), read with the preview's
    // own read-only identity.
    env.put_secret("zitadel-token", "token", TOKEN).await;
    let command = diff_with_token_secret(env, "zitadel-token");
    let from_secret = run(command, &env.readonly, Some(yaml)).await;
    from_secret.assert_code(0);
    let command = diff_with_token_secret(env, "absent");
    let no_secret = run(command, &env.readonly, Some(yaml)).await;
    assert_eq!(no_secret.code, 2);
    assert!(no_secret.stdout.is_empty(), "{}", no_secret.stdout);
    assert!(
        no_secret.stderr.contains("cannot read the ZITADEL token"),
        "{}",
        no_secret.stderr
    );
    assert!(!no_secret.stderr.contains(TOKEN));
}

#[tokio::test]
async fn exit_codes_stdin_directories_and_redaction() {
    let env = Env::shared("diff-exit").await;
    let yaml = marked_manifest(&env).await;
    values_are_redacted_unless_asked(&env, &yaml).await;
    a_directory_of_adopted_values_exits_0(&env, &yaml).await;
    errors_exit_2(&env, &yaml).await;
    the_token_from_a_secret(&env, &yaml).await;

    // None of it wrote to ZITADEL.
    assert_eq!(env.effects().0, 0, "the preview wrote to ZITADEL");
}

/// A namespaced connection with a PAT Secret, and a cluster connection that lets this namespace
/// target Globex only; returns the cluster connection's name.
async fn apply_tenant_and_guarded_connections(env: &Env) -> String {
    // A namespaced connection with a PAT Secret, and a cluster connection that lets this
    // namespace target Globex only.
    env.put_secret("zitadel-pat", "token", TOKEN).await;
    let connections: Api<ZitadelConnection> = Api::namespaced(env.client.clone(), &env.ns);
    apply_as(
        &connections,
        MANAGER,
        "tenant",
        json!({"url": env.emu.url(),
        "credentials": {"personalAccessToken": {"name": "zitadel-pat", "key": "token"}}}),
    )
    .await;
    let cluster: Api<ClusterZitadelConnection> = Api::all(env.client.clone());
    let guarded = format!("{}-guard", env.ns);
    apply_as(
        &cluster,
        MANAGER,
        &guarded,
        json!({"url": env.emu.url(),
        "credentials": {"personalAccessToken": {"name": "zitadel-pat", "key": "token",
                                                "namespace": env.ns}},
        "allowedNamespaces": [{"names": [env.ns], "organizationIds": [GLOBEX]}]}),
    )
    .await;
    guarded
}

/// Two objects synced by the operator (then stopped), drift out of band, and an object the guard
/// refuses, never reconciled.
async fn apply_synced_drifted_and_refused_objects(env: &Env, guarded: &str) {
    let operator = env.operator();
    env.apply_org(
        "tenant-acme",
        json!({"organizationId": ACME,
        "connectionRef": {"name": "tenant"}, "metadata": entries(&[("a", "1"), ("b", "2")])}),
    )
    .await;
    env.apply_org(
        "guarded-globex",
        json!({"organizationId": GLOBEX,
        "connectionRef": {"kind": "ClusterZitadelConnection", "name": guarded},
        "metadata": entries(&[("g", "1")])}),
    )
    .await;
    env.wait_org_synced("tenant-acme").await;
    env.wait_org_synced("guarded-globex").await;
    operator.stop().await;
    // Drift out of band; and an object the guard refuses, never reconciled.
    env.emu.put_org_metadata(ACME, "a", b"changed");
    env.emu.delete_org_metadata(ACME, "b");
    env.apply_org(
        "guarded-acme",
        json!({"organizationId": ACME,
        "connectionRef": {"kind": "ClusterZitadelConnection", "name": guarded},
        "metadata": entries(&[("h", "1")])}),
    )
    .await;
}

/// `kubectl zitadel diff`: the binary on PATH as `kubectl-zitadel`, run by the real kubectl;
/// returns kubectl's path and the PATH to run it with.
fn kubectl_plugin(env: &Env) -> (PathBuf, String) {
    let bin = env.dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_zitadel-metadata-operator"),
        bin.join("kubectl-zitadel"),
    )
    .expect("symlink");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kubectl = env.cp().bin_dir().join("kubectl");
    (kubectl, path)
}

/// `kubectl zitadel diff --live -n NS ARGS…` with the plugin on `path`.
fn plugin_command(env: &Env, kubectl: &Path, path: &str, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(kubectl);
    command
        .args(["zitadel", "diff", "--live", "-n", &env.ns])
        .args(args)
        .env("PATH", path);
    command
}

/// One object at a time: the drift is a change (exit 1), the synced one clean (0), the refused
/// one an error (2).
async fn one_live_object_at_a_time(env: &Env, kubectl: &Path, path: &str) {
    let plugin = |args: &[&str]| plugin_command(env, kubectl, path, args);
    let drift = run(plugin(&["orgmd/tenant-acme"]), &env.readonly, None).await;
    drift.assert_code(1);
    drift.assert_stdout_has(&format!(
        "OrgMetadata {}/tenant-acme: organization {ACME} via ZitadelConnection {}/tenant",
        env.ns, env.ns
    ));
    drift.assert_stdout_has("~ a (value redacted)");
    drift.assert_stdout_has("+ b (value redacted)");
    let clean = run(
        plugin(&["orgmd/guarded-globex", "-o", "json"]),
        &env.readonly,
        None,
    )
    .await;
    clean.assert_code(0);
    let report = clean.json();
    assert_eq!(report["mode"], "live");
    assert_eq!(report["objects"].as_array().map(Vec::len), Some(1));
    // The guard refuses what the controller would refuse, before any ZITADEL call.
    let refused = run(
        plugin(&["orgmd/guarded-acme", "-o", "json"]),
        &env.readonly,
        None,
    )
    .await;
    refused.assert_code(2);
    assert_eq!(
        result_of(&refused.json(), "guarded-acme")["outcome"]["reason"],
        "TargetNotAllowed"
    );
}

/// All live objects at once, an unknown object, an unknown subcommand.
async fn all_live_objects_and_bad_requests(env: &Env, kubectl: &Path, path: &str) {
    let plugin = |args: &[&str]| plugin_command(env, kubectl, path, args);
    // All live objects at once: the drift is a change, the refusal an error.
    let all = run(plugin(&["-o", "json"]), &env.readonly, None).await;
    all.assert_code(2);
    let all = all.json();
    assert_eq!(all["summary"]["objects"], 3);
    assert_eq!(all["summary"]["withChanges"], 1);
    let unknown = run(plugin(&["orgmd/nope"]), &env.readonly, None).await;
    assert_eq!(unknown.code, 2);
    assert!(unknown.stderr.contains("not found"), "{}", unknown.stderr);
    // `kubectl zitadel` without a known subcommand.
    let mut bare = tokio::process::Command::new(kubectl);
    bare.args(["zitadel", "frobnicate"]).env("PATH", path);
    let bare = run(bare, &env.readonly, None).await;
    assert_eq!(bare.code, 2);
    assert!(
        bare.stderr.contains("kubectl zitadel diff"),
        "{}",
        bare.stderr
    );
}

#[tokio::test]
async fn live_objects_through_the_kubectl_plugin_with_connections_and_guards() {
    let env = Env::shared("diff-live").await;
    let guarded = apply_tenant_and_guarded_connections(&env).await;
    apply_synced_drifted_and_refused_objects(&env, &guarded).await;

    let before = env.effects();

    let (kubectl, path) = kubectl_plugin(&env);
    one_live_object_at_a_time(&env, &kubectl, &path).await;
    all_live_objects_and_bad_requests(&env, &kubectl, &path).await;
    assert_eq!(env.effects(), before, "the preview wrote to ZITADEL");
    let cluster: Api<ClusterZitadelConnection> = Api::all(env.client.clone());
    cluster
        .delete(&guarded, &Default::default())
        .await
        .expect("delete cluster connection");
}
