//! The Helm chart (`charts/zitadel-metadata-operator`), with the `helm` binary built from source by
//! tests/envtest/build.sh next to `kubectl`:
//!
//! * `helm lint` passes for default and non-default values; the values schema rejects typos.
//! * `helm template` for default values, `replicaCount=2`, `watchNamespaces`, `serviceMonitor`,
//!   `podDisruptionBudget` and both token modes renders what it should (exact RBAC rules, flags,
//!   security context, probes), and every rendered manifest is accepted by the real test apiserver
//!   with `kubectl apply --dry-run=server --validate=strict`; `helm install --dry-run=server` too.
//! * RBAC is sufficient: the operator, running as the chart's ServiceAccount (impersonation), syncs
//!   an OrgMetadata and a UserMetadata to Ready and cleans up on deletion; holds a connection and
//!   its Secret and CA ConfigMap with finalizers and lets go when a namespace is deleted; and
//!   minimal for status: the same ClusterRole without the `/status` rule leaves the object
//!   unready, and with only `patch` on `/status` (older RBAC) the operator applies its status
//!   instead of the `PUT`. The chart's ValidatingAdmissionPolicy lets that ServiceAccount change
//!   only `metadata.finalizers` of Secrets and ConfigMaps.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Patch, PatchParams};
use kube::config::KubeConfigOptions;
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::{Value, json};
use zitadel_metadata_operator::crd::{MetadataStatus, OrgMetadata, ZitadelConnection};
use zmo_testkit::controlplane::ControlPlane;

use common::{ACME, ALICE, GLOBEX, Operator, TestEnv, condition, fast_settings, is_ready};

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/zitadel-metadata-operator")
}

/// `helm` from the control plane's binary directory, with its config/cache/data kept in the
/// control plane's temporary directory and the envtest kubeconfig.
fn helm(cp: &ControlPlane) -> Command {
    let bin = cp.bin_dir().join("helm");
    assert!(
        bin.is_file(),
        "no helm in {}: tests/envtest/build.sh builds it (KUBEBUILDER_ASSETS pointing at a folder \
         without helm skips that; unset it or put a helm v4 binary there)",
        cp.bin_dir().display()
    );
    let home = cp.root_dir().join("helm-home");
    let mut command = Command::new(bin);
    command
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env("KUBECONFIG", cp.kubeconfig_path())
        .stdin(Stdio::null());
    command
}

fn run(mut command: Command, stdin: Option<&str>) -> Output {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("wait")
}

/// Puts the working token into the Secret `zitadel-token`; how long until `acme` is Ready.
async fn ready_after_token(env: &TestEnv) -> Duration {
    let started = std::time::Instant::now();
    env.put_secret(&env.ns, "zitadel-token", "token", common::TOKEN)
        .await;
    env.wait_org_ready("acme").await;
    started.elapsed()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `helm template RELEASE CHART --namespace NS ARGS…`; panics when helm fails.
fn template(cp: &ControlPlane, release: &str, ns: &str, args: &[&str]) -> String {
    let out = try_template(cp, release, ns, args);
    assert!(
        out.status.success(),
        "helm template {args:?} failed:\n{}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn try_template(cp: &ControlPlane, release: &str, ns: &str, args: &[&str]) -> Output {
    let mut command = helm(cp);
    command
        .args(["template", release])
        .arg(chart_dir())
        .args(["--namespace", ns])
        .args(args);
    run(command, None)
}

/// The YAML documents of a multi-document stream, as JSON values (empty documents dropped).
fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The YAML documents of a file of this repository.
fn docs_of_file(path: &str) -> Vec<Value> {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    docs(&std::fs::read_to_string(&file).expect("read a repository file"))
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind}, got {found:#?}"
    );
    found[0]
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {docs:#?}"))
}

fn kinds(docs: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = docs
        .iter()
        .map(|d| d["kind"].as_str().expect("kind").to_string())
        .collect();
    kinds.sort();
    kinds
}

fn container(docs: &[Value]) -> &Value {
    let containers = &one(docs, "Deployment")["spec"]["template"]["spec"]["containers"];
    assert_eq!(
        containers.as_array().map(Vec::len),
        Some(1),
        "one container"
    );
    &containers[0]
}

fn args(docs: &[Value]) -> Vec<String> {
    args_of(container(docs))
}

/// The `args` of a container.
fn args_of(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

/// The operator binary run with `args` and `--help` (which parses the flags, then prints help).
fn binary_help(args: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_zitadel-metadata-operator"))
        .args(args)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .expect("run the operator binary")
}

/// The rules every watched scope gets, exactly.
fn resource_rules() -> Value {
    json!([
        {"apiGroups": ["metadata.zitadel-operator.dev"], "resources": ["orgmetadatas", "usermetadatas"],
         "verbs": ["get", "list", "watch", "patch", "update"]},
        {"apiGroups": ["metadata.zitadel-operator.dev"], "resources": ["orgmetadatas/status", "usermetadatas/status"],
         "verbs": ["patch", "update"]},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
        {"apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": ["patch"]},
        {"apiGroups": ["metadata.zitadel-operator.dev"], "resources": ["zitadelconnections"], "verbs": ["get", "list", "watch", "patch"]},
        {"apiGroups": ["metadata.zitadel-operator.dev"], "resources": ["zitadelconnections/status"], "verbs": ["patch"]},
    ])
}

/// Rules for cluster-scoped objects, granted by a ClusterRole in every mode.
fn cluster_scoped_rules() -> Value {
    json!([
        {"apiGroups": ["metadata.zitadel-operator.dev"], "resources": ["clusterzitadelconnections"], "verbs": ["get", "list", "watch", "patch"]},
        {"apiGroups": ["metadata.zitadel-operator.dev"], "resources": ["clusterzitadelconnections/status"], "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]},
    ])
}

/// The all-namespaces ClusterRole: both rule sets.
fn cluster_role_rules() -> Value {
    let mut rules = resource_rules().as_array().cloned().unwrap_or_default();
    rules.extend(
        cluster_scoped_rules()
            .as_array()
            .cloned()
            .unwrap_or_default(),
    );
    Value::Array(rules)
}

/// `kubectl apply --dry-run=server --validate=strict -o name` of `docs` (as a List); returns (ok,
/// stdout: one `kind/name` line per accepted object, stderr).
fn server_dry_run(cp: &ControlPlane, docs: &[&Value]) -> (bool, String, String) {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": docs});
    let mut command = cp.kubectl();
    command.args([
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "-o",
        "name",
        "-f",
        "-",
    ]);
    let out = run(command, Some(&list.to_string()));
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// Server-side dry-run of every document; asserts the apiserver accepted each one.
fn assert_accepted(cp: &ControlPlane, docs: &[Value]) {
    let refs: Vec<&Value> = docs.iter().collect();
    let (ok, stdout, stderr) = server_dry_run(cp, &refs);
    assert!(
        ok,
        "the apiserver rejected the rendered chart:\n{stdout}{stderr}"
    );
    let mut applied: Vec<String> = stdout
        .lines()
        .map(|l| l.split('/').next_back().unwrap_or_default().to_string())
        .collect();
    let mut expected: Vec<String> = docs
        .iter()
        .map(|d| d["metadata"]["name"].as_str().expect("name").to_string())
        .collect();
    applied.sort();
    expected.sort();
    assert_eq!(
        applied, expected,
        "every document is dry-run applied:\n{stdout}{stderr}"
    );
}

async fn namespace(cp: &ControlPlane, prefix: &str) -> String {
    cp.create_namespace(prefix).await.expect("namespace")
}

#[tokio::test]
async fn helm_lint_passes_and_the_schema_rejects_bad_values() {
    let cp = common::shared_with_crds().await;

    let mut lint = helm(cp);
    lint.args(["lint", "--strict"]).arg(chart_dir());
    let out = run(lint, None);
    assert!(
        out.status.success(),
        "helm lint (defaults): {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("1 chart(s) linted, 0 chart(s) failed"));

    let mut lint = helm(cp);
    lint.args(["lint", "--strict"]).arg(chart_dir()).args([
        "--set",
        "replicaCount=3",
        "--set-json",
        r#"watchNamespaces=["team-a","team-b"]"#,
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "podDisruptionBudget.enabled=true",
        "--set",
        "zitadel.url=https://acme.zitadel.cloud",
        "--set",
        "zitadel.tokenSecret.name=zitadel-token",
        "--set",
        "operator.resyncInterval=1m 30s",
    ]);
    let out = run(lint, None);
    assert!(
        out.status.success(),
        "helm lint (non-default): {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // A typo, a bad URL, a bad duration and an out-of-range number are rejected by the schema.
    for (set, expected) in [
        (
            "replicaCont=2",
            "additional properties 'replicaCont' not allowed",
        ),
        ("zitadel.url=acme.zitadel.cloud", "/zitadel/url"),
        ("zitadel.api=v3", "/zitadel/api"),
        ("operator.resyncInterval=soon", "/operator/resyncInterval"),
        (
            "operator.maxConcurrentReconciles=0",
            "/operator/maxConcurrentReconciles",
        ),
        ("operator.logFormat=xml", "/operator/logFormat"),
        ("operator.driftDetection=events", "/operator/driftDetection"),
        (
            "operator.eventPollInterval=often",
            "/operator/eventPollInterval",
        ),
        ("shards[0].name=A_1", "/shards/0"),
    ] {
        let out = try_template(cp, "bad", "default", &["--set", set]);
        assert!(!out.status.success(), "{set} was accepted");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(expected),
            "{set}: {expected:?} not in {stderr}"
        );
    }
    // Both token modes at once.
    let out = try_template(
        cp,
        "bad",
        "default",
        &sets(&[
            "zitadel.tokenSecret.name=a",
            "zitadel.existingSecret.name=b",
        ]),
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("set at most one of zitadel.tokenSecret.name"));
    // A default connection is a URL and a token source together, or neither (multi-tenant mode).
    for (set, expected) in [
        (
            "zitadel.url=https://acme.zitadel.cloud",
            "zitadel.url needs a token source",
        ),
        (
            "zitadel.existingSecret.name=zitadel-pat",
            "a token source needs zitadel.url",
        ),
    ] {
        let out = try_template(cp, "bad", "default", &["--set", set]);
        assert!(!out.status.success(), "{set} was accepted");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(expected),
            "{set}: {expected:?} not in {stderr}"
        );
    }
}

/// The cleanup finalizer policy is rendered only for a cluster that serves the API, in the
/// version it serves, and not when turned off.
fn assert_mutating_policy_follows_the_served_api(cp: &ControlPlane, ns: &str) {
    // `helm template` without `--api-versions` knows none (the caller checks), `helm install`
    // asks the cluster.
    const MAP_V1: &str = "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy";
    const MAP_V1BETA1: &str = "admissionregistration.k8s.io/v1beta1/MutatingAdmissionPolicy";
    let served = self::docs(&template(cp, "zmo", ns, &["--api-versions", MAP_V1]));
    let mutating = one(&served, "MutatingAdmissionPolicy");
    assert_eq!(mutating["apiVersion"], "admissionregistration.k8s.io/v1");
    assert_eq!(mutating["spec"]["failurePolicy"], "Ignore");
    assert_eq!(
        mutating["spec"]["matchConstraints"]["resourceRules"][0]["operations"],
        json!(["CREATE"])
    );
    // The same policy as deploy/admission/ (for kubectl installs).
    let shipped: Vec<Value> = docs_of_file("deploy/admission/cleanup-finalizer.yaml");
    assert_eq!(mutating["spec"], shipped[0]["spec"]);
    let mutating_binding = one(&served, "MutatingAdmissionPolicyBinding");
    assert_eq!(
        mutating_binding["spec"]["policyName"],
        mutating["metadata"]["name"]
    );
    assert_eq!(
        mutating_binding["apiVersion"],
        "admissionregistration.k8s.io/v1"
    );
    // The test apiserver (1.36) accepts both documents.
    let policy_docs: Vec<Value> = served
        .iter()
        .filter(|d| {
            d["kind"] == "MutatingAdmissionPolicy" || d["kind"] == "MutatingAdmissionPolicyBinding"
        })
        .cloned()
        .collect();
    assert_accepted(cp, &policy_docs);
    // Where only v1beta1 is served (1.34/1.35 with the feature gate), that version.
    let beta = self::docs(&template(cp, "zmo", ns, &["--api-versions", MAP_V1BETA1]));
    assert_eq!(
        one(&beta, "MutatingAdmissionPolicy")["apiVersion"],
        "admissionregistration.k8s.io/v1beta1"
    );
    let off = self::docs(&template(
        cp,
        "zmo",
        ns,
        &[
            "--api-versions",
            MAP_V1,
            "--set",
            "admission.cleanupFinalizerPolicy=false",
        ],
    ));
    assert!(of_kind(&off, "MutatingAdmissionPolicy").is_empty());
    assert!(of_kind(&off, "MutatingAdmissionPolicyBinding").is_empty());
}

/// The ValidatingAdmissionPolicy (finalizer-only `patch` on Secrets/ConfigMaps) and the CRDs.
fn assert_validating_policy_and_crds(docs: &[Value], ns: &str) {
    // `patch` on Secrets/ConfigMaps is for finalizers only: the policy denies anything else the
    // chart's ServiceAccount would change.
    let policy = one(docs, "ValidatingAdmissionPolicy");
    assert_eq!(
        policy["spec"]["matchConditions"][0]["expression"],
        format!(
            r#"request.userInfo.username == "system:serviceaccount:{ns}:zmo-zitadel-metadata-operator""#
        )
    );
    assert_eq!(
        policy["spec"]["matchConstraints"]["resourceRules"][0]["resources"],
        json!(["secrets", "configmaps"])
    );
    let binding = one(docs, "ValidatingAdmissionPolicyBinding");
    assert_eq!(binding["spec"]["policyName"], policy["metadata"]["name"]);
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
    let crd_names: Vec<&str> = of_kind(docs, "CustomResourceDefinition")
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap())
        .collect();
    assert!(crd_names.contains(&"orgmetadatas.metadata.zitadel-operator.dev"));
    assert!(crd_names.contains(&"usermetadatas.metadata.zitadel-operator.dev"));
}

/// The ServiceAccount, ClusterRole (exact rules) and its binding.
fn assert_least_privilege_rbac(docs: &[Value], ns: &str) {
    let sa = one(docs, "ServiceAccount");
    assert_eq!(sa["metadata"]["name"], "zmo-zitadel-metadata-operator");
    assert_eq!(sa["metadata"]["namespace"], ns);

    let role = one(docs, "ClusterRole");
    assert_eq!(
        role["rules"],
        cluster_role_rules(),
        "ClusterRole rules, exactly"
    );
    let binding = one(docs, "ClusterRoleBinding");
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "zmo-zitadel-metadata-operator"})
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "zmo-zitadel-metadata-operator", "namespace": ns}])
    );
}

/// The Deployment (restricted pod and container, probes, ports, args) and the metrics Service.
fn assert_restricted_deployment_and_service(docs: &[Value]) {
    let deployment = one(docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 1);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "zmo-zitadel-metadata-operator");
    assert_eq!(
        pod["securityContext"],
        json!({"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
               "seccompProfile": {"type": "RuntimeDefault"}})
    );
    let c = container(docs);
    assert_eq!(
        c["securityContext"],
        json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "runAsNonRoot": true,
               "runAsUser": 65532, "runAsGroup": 65532, "capabilities": {"drop": ["ALL"]},
               "seccompProfile": {"type": "RuntimeDefault"}})
    );
    assert_eq!(c["image"], "zitadel-metadata-operator:0.1.0");
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "health"})
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "health"})
    );
    assert_eq!(
        c["ports"],
        json!([{"name": "health", "containerPort": 8080, "protocol": "TCP"},
               {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}])
    );
    assert_eq!(c["resources"]["requests"]["memory"], "64Mi");
    let a = args(docs);
    assert!(!a.iter().any(|a| a.starts_with("--leader-elect")), "{a:?}");
    assert!(!a.iter().any(|a| a.starts_with("--namespace")), "{a:?}");
    assert!(!a.iter().any(|a| a.starts_with("--token")), "{a:?}");
    for expected in [
        "--health-addr=0.0.0.0:8080",
        "--metrics-addr=0.0.0.0:9090",
        "--log-format=json",
    ] {
        assert!(a.iter().any(|a| a == expected), "{expected} in {a:?}");
    }

    let service = one(docs, "Service");
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}])
    );
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
}

#[tokio::test]
async fn default_values_render_a_restricted_least_privilege_install_the_apiserver_accepts() {
    let cp = common::shared_with_crds().await;
    let ns = namespace(cp, "helm-default").await;
    let docs = docs(&template(cp, "zmo", &ns, &["--include-crds"]));

    assert_eq!(
        kinds(&docs),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "Deployment",
            "Service",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding"
        ],
        "no Role (no leader election, no token Secret), no PDB, no ServiceMonitor by default"
    );
    // The cleanup finalizer policy is rendered only for a cluster that serves the API: `helm
    // template` without `--api-versions` knows none (above), `helm install` asks the cluster.
    assert_mutating_policy_follows_the_served_api(cp, &ns);
    assert_validating_policy_and_crds(&docs, &ns);
    assert_least_privilege_rbac(&docs, &ns);
    assert_restricted_deployment_and_service(&docs);
    assert_accepted(cp, &docs);
}

#[tokio::test]
async fn more_than_one_replica_turns_on_leader_election_with_a_lease_role() {
    let cp = common::shared_with_crds().await;
    let ns = namespace(cp, "helm-leader").await;
    let docs = docs(&template(cp, "zmo", &ns, &["--set", "replicaCount=2"]));

    assert_eq!(one(&docs, "Deployment")["spec"]["replicas"], 2);
    let a = args(&docs);
    for expected in [
        "--leader-elect".to_string(),
        format!("--leader-election-namespace={ns}"),
        "--leader-election-id=zmo-zitadel-metadata-operator".to_string(),
    ] {
        assert!(a.contains(&expected), "{expected} in {a:?}");
    }
    let role = named(
        &docs,
        "Role",
        "zmo-zitadel-metadata-operator-leader-election",
    );
    assert_eq!(role["metadata"]["namespace"], ns.as_str());
    assert_eq!(
        role["rules"],
        json!([
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "resourceNames": ["zmo-zitadel-metadata-operator"], "verbs": ["get", "update"]},
        ])
    );
    let binding = named(
        &docs,
        "RoleBinding",
        "zmo-zitadel-metadata-operator-leader-election",
    );
    assert_eq!(binding["metadata"]["namespace"], ns.as_str());
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(
        one(&docs, "ClusterRole")["rules"],
        cluster_role_rules(),
        "no lease rule at cluster scope"
    );
    assert_accepted(cp, &docs);

    // One replica with leaderElection.enabled also elects; one replica without it does not.
    let forced = docs_of(cp, &ns, &["--set", "leaderElection.enabled=true"]);
    assert!(args(&forced).contains(&"--leader-elect".to_string()));
    let single = docs_of(cp, &ns, &[]);
    assert!(of_kind(&single, "Role").is_empty());
}

/// `--set VALUE` for each value, as `helm template` arguments.
fn sets<'a>(values: &[&'a str]) -> Vec<&'a str> {
    values.iter().flat_map(|v| ["--set", *v]).collect()
}

/// The chart rendered with `--set VALUE` for each value.
fn docs_set(cp: &ControlPlane, ns: &str, values: &[&str]) -> Vec<Value> {
    docs_of(cp, ns, &sets(values))
}

fn docs_of(cp: &ControlPlane, ns: &str, args: &[&str]) -> Vec<Value> {
    docs(&template(cp, "zmo", ns, args))
}

#[tokio::test]
async fn watch_namespaces_get_namespaced_roles_and_only_cluster_scoped_cluster_role() {
    let cp = common::shared_with_crds().await;
    let ns = namespace(cp, "helm-watch").await;
    let team_a = namespace(cp, "helm-team-a").await;
    let team_b = namespace(cp, "helm-team-b").await;
    let list = format!(r#"watchNamespaces=["{team_a}","{team_b}"]"#);
    let docs = docs_of(cp, &ns, &["--set-json", &list]);

    // Only the cluster-scoped kinds (ClusterZitadelConnection, namespaces) at cluster scope.
    assert_eq!(
        one(&docs, "ClusterRole")["rules"],
        cluster_scoped_rules(),
        "ClusterRole has only cluster-scoped rules"
    );
    assert_eq!(of_kind(&docs, "ClusterRoleBinding").len(), 1);
    let roles = of_kind(&docs, "Role");
    assert_eq!(roles.len(), 2, "one Role per watched namespace");
    for watched in [&team_a, &team_b] {
        let role = roles
            .iter()
            .find(|r| r["metadata"]["namespace"] == watched.as_str())
            .unwrap_or_else(|| panic!("no Role in {watched}"));
        assert_eq!(role["rules"], resource_rules());
        let binding = of_kind(&docs, "RoleBinding")
            .into_iter()
            .find(|b| b["metadata"]["namespace"] == watched.as_str())
            .unwrap_or_else(|| panic!("no RoleBinding in {watched}"));
        assert_eq!(binding["roleRef"]["kind"], "Role");
        assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "zmo-zitadel-metadata-operator", "namespace": ns}])
        );
    }
    let a = args(&docs);
    assert!(
        a.contains(&format!("--namespace={team_a},{team_b}")),
        "{a:?}"
    );
    assert_accepted(cp, &docs);
}

#[tokio::test]
async fn service_monitor_and_pod_disruption_budget_are_optional() {
    let cp = common::shared_with_crds().await;
    let ns = namespace(cp, "helm-monitor").await;
    let docs = docs_set(
        cp,
        &ns,
        &[
            "serviceMonitor.enabled=true",
            "serviceMonitor.labels.release=prometheus",
            "podDisruptionBudget.enabled=true",
            "replicaCount=2",
        ],
    );
    let service = one(&docs, "Service");
    let monitor = one(&docs, "ServiceMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(
        monitor["spec"]["endpoints"],
        json!([{"port": "metrics", "path": "/metrics", "interval": "30s"}])
    );
    assert_eq!(
        monitor["spec"]["namespaceSelector"],
        json!({"matchNames": [ns]})
    );
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("selector")
    {
        assert_eq!(&service["metadata"]["labels"][k], v, "selects the Service");
    }
    let pdb = one(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert!(pdb["spec"].get("minAvailable").is_none());
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        one(&docs, "Deployment")["spec"]["selector"]["matchLabels"]
    );

    // The test apiserver has no ServiceMonitor CRD, so it rejects that document (the dry-run is a
    // real check), and accepts all the others.
    let (ok, _, stderr) = server_dry_run(cp, &[monitor]);
    assert!(!ok);
    assert!(
        stderr.contains("no matches for kind \"ServiceMonitor\""),
        "{stderr}"
    );
    let others: Vec<Value> = docs
        .iter()
        .filter(|d| d["kind"] != "ServiceMonitor")
        .cloned()
        .collect();
    assert_accepted(cp, &others);

    let min = docs_set(
        cp,
        &ns,
        &[
            "podDisruptionBudget.enabled=true",
            "podDisruptionBudget.minAvailable=1",
        ],
    );
    let pdb = one(&min, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert!(pdb["spec"].get("maxUnavailable").is_none());
    assert_accepted(cp, &min);
}

#[tokio::test]
async fn token_modes_render_flags_secret_access_and_mounts() {
    let cp = common::shared_with_crds().await;
    let ns = namespace(cp, "helm-token").await;
    let secrets_ns = namespace(cp, "helm-secrets").await;

    // Mode 1: read through the API; `get` on exactly that Secret, in its namespace.
    let api = docs_set(
        cp,
        &ns,
        &[
            "zitadel.url=https://acme.zitadel.cloud",
            "zitadel.tokenSecret.name=zitadel-token",
            &format!("zitadel.tokenSecret.namespace={secrets_ns}"),
            "zitadel.tokenSecret.key=pat",
            "zitadel.api=v2",
        ],
    );
    let a = args(&api);
    for expected in [
        "--zitadel-url=https://acme.zitadel.cloud".to_string(),
        format!("--token-secret={secrets_ns}/zitadel-token"),
        "--token-secret-key=pat".to_string(),
        "--zitadel-api=v2".to_string(),
    ] {
        assert!(a.contains(&expected), "{expected} in {a:?}");
    }
    assert!(!a.iter().any(|a| a.starts_with("--token-file")));
    let role = named(&api, "Role", "zmo-zitadel-metadata-operator-token");
    assert_eq!(role["metadata"]["namespace"], secrets_ns.as_str());
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["zitadel-token"], "verbs": ["get", "list", "watch", "patch"]}])
    );
    let binding = named(&api, "RoleBinding", "zmo-zitadel-metadata-operator-token");
    assert_eq!(binding["metadata"]["namespace"], secrets_ns.as_str());
    assert_eq!(binding["subjects"][0]["namespace"], ns.as_str());
    assert!(
        one(&api, "Deployment")["spec"]["template"]["spec"]
            .get("volumes")
            .is_none()
    );
    assert_accepted(cp, &api);

    // Mode 2: an existing Secret mounted read-only as a file; no Secret RBAC.
    let file = docs_set(
        cp,
        &ns,
        &[
            "zitadel.url=https://acme.zitadel.cloud",
            "zitadel.existingSecret.name=zitadel-pat",
            "zitadel.existingSecret.key=pat",
        ],
    );
    let a = args(&file);
    assert!(a.contains(&"--token-file=/var/run/secrets/zitadel/token".to_string()));
    // `zitadel.api: auto` (the default) is the binary's default: no flag.
    assert!(!a.iter().any(|a| a.starts_with("--zitadel-api")), "{a:?}");
    assert!(!a.iter().any(|a| a.starts_with("--token-secret")));
    assert!(of_kind(&file, "Role").is_empty());
    let pod = &one(&file, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"],
        json!([{"name": "zitadel-token", "secret": {"secretName": "zitadel-pat", "items": [{"key": "pat", "path": "token"}]}}])
    );
    assert_eq!(
        container(&file)["volumeMounts"],
        json!([{"name": "zitadel-token", "mountPath": "/var/run/secrets/zitadel", "readOnly": true}])
    );
    assert_accepted(cp, &file);

    // extraEnv and extraArgs land in the container.
    let extra = docs_of(
        cp,
        &ns,
        &[
            "--set-json",
            r#"extraEnv=[{"name":"HTTPS_PROXY","value":"http://proxy:3128"}]"#,
            "--set-json",
            r#"extraArgs=["--backoff-max=2m"]"#,
            "--set",
            "nodeSelector.kubernetes\\.io/os=linux",
        ],
    );
    let env = container(&extra)["env"].as_array().expect("env").clone();
    assert!(env.contains(&json!({"name": "HTTPS_PROXY", "value": "http://proxy:3128"})));
    assert!(args(&extra).contains(&"--backoff-max=2m".to_string()));
    assert_eq!(
        one(&extra, "Deployment")["spec"]["template"]["spec"]["nodeSelector"],
        json!({"kubernetes.io/os": "linux"})
    );
    assert_accepted(cp, &extra);
}

#[tokio::test]
async fn helm_install_dry_run_server_is_accepted() {
    let cp = common::shared_with_crds().await;
    let ns = namespace(cp, "helm-install").await;
    let mut install = helm(cp);
    install.args(["install", "zmo"]).arg(chart_dir()).args([
        "--namespace",
        &ns,
        "--dry-run=server",
        "--set",
        "replicaCount=2",
        "--set",
        "podDisruptionBudget.enabled=true",
        "--set",
        "zitadel.url=https://acme.zitadel.cloud",
        "--set",
        "zitadel.tokenSecret.name=zitadel-token",
    ]);
    let out = run(install, None);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "helm install --dry-run=server: {stdout}{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("STATUS: pending-install"), "{stdout}");
    assert!(stdout.contains("kind: Deployment"), "{stdout}");
    // `helm install` asks the cluster which APIs it serves: the 1.36 test apiserver serves
    // MutatingAdmissionPolicy as v1, so the cleanup finalizer policy is part of the release.
    assert!(
        stdout.contains(
            "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingAdmissionPolicy\n"
        ),
        "{stdout}"
    );
    // NOTES.txt rendered, naming the token Secret.
    assert!(
        stdout.contains(&format!(
            "reads its ZITADEL token from Secret {ns}/zitadel-token"
        )),
        "{stdout}"
    );
}

// ---------------------------------------------------------------------------------------------
// RBAC: the operator with exactly the chart's permissions.

/// Creates the chart's ServiceAccount, ClusterRole, ClusterRoleBinding and admission policy
/// (release `release` in `ns`), with `edit` applied to the ClusterRole first; returns the
/// ServiceAccount's user name.
fn install_rbac(
    cp: &ControlPlane,
    ns: &str,
    release: &str,
    edit: impl FnOnce(&mut Value),
) -> String {
    install_rbac_with(cp, ns, release, &[], 5, edit)
}

/// [`install_rbac`] for the chart rendered with `values`, keeping Roles and RoleBindings too
/// (`expected` documents in all).
fn install_rbac_with(
    cp: &ControlPlane,
    ns: &str,
    release: &str,
    values: &[&str],
    expected: usize,
    edit: impl FnOnce(&mut Value),
) -> String {
    let mut docs = docs(&template(cp, release, ns, values));
    docs.retain(|d| {
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ]
        .contains(&d["kind"].as_str().unwrap())
    });
    assert_eq!(docs.len(), expected);
    edit(
        docs.iter_mut()
            .find(|d| d["kind"] == "ClusterRole")
            .expect("ClusterRole"),
    );
    let sa = docs
        .iter()
        .find(|d| d["kind"] == "ServiceAccount")
        .and_then(|d| d["metadata"]["name"].as_str())
        .expect("sa name")
        .to_string();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": docs});
    let mut command = cp.kubectl();
    command.args([
        "apply",
        "--server-side",
        "--field-manager=e2e-helm",
        "-f",
        "-",
    ]);
    let out = run(command, Some(&list.to_string()));
    assert!(
        out.status.success(),
        "creating the chart's RBAC: {}",
        text(&out.stderr)
    );
    format!("system:serviceaccount:{ns}:{sa}")
}

/// A client that acts as `user` (impersonation by the admin client).
async fn client_as(cp: &ControlPlane, user: &str) -> Client {
    let mut config =
        kube::Config::from_custom_kubeconfig(cp.kubeconfig(), &KubeConfigOptions::default())
            .await
            .expect("kubeconfig");
    config.auth_info.impersonate = Some(user.to_string());
    Client::try_from(config).expect("impersonating client")
}

/// Waits until `client` may list OrgMetadata in `ns` (RBAC caches catch up within moments), and
/// checks that it is not an admin: listing Namespaces is forbidden.
async fn await_rbac(client: &Client, ns: &str) {
    let orgs: Api<OrgMetadata> = Api::namespaced(client.clone(), ns);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match orgs.list(&Default::default()).await {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() > deadline => {
                panic!("the ServiceAccount still cannot list OrgMetadata: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    match namespaces.list(&Default::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("the impersonated client is not restricted: {other:?}"),
    }
}

fn release_name(ns: &str) -> String {
    // Unique per test (the ClusterRole is cluster-scoped), and short enough for Helm.
    ns.to_string()
}

#[tokio::test]
async fn the_operator_runs_with_only_the_charts_rbac() {
    let env = TestEnv::new("hrbac").await;
    let user = install_rbac(env.cp, &env.ns, &release_name(&env.ns), |_| {});
    let client = client_as(env.cp, &user).await;
    await_rbac(&client, &env.ns).await;

    let operator = Operator::start(client, &env.emu.url(), &env.ns, fast_settings());

    env.apply_org_values("acme", ACME, &[("cost-center", "CC-4711")])
        .await;
    env.apply_user(
        "alice",
        json!({"userId": ALICE, "metadata": [{"key": "team", "value": "platform"}]}),
    )
    .await;
    env.wait_org("acme", "Ready as the chart's ServiceAccount", |o| {
        is_ready(o.status.as_ref(), o.metadata.generation)
    })
    .await;
    env.wait_user("alice", "Ready as the chart's ServiceAccount", |u| {
        is_ready(u.status.as_ref(), u.metadata.generation)
    })
    .await;
    assert_eq!(
        env.org_value(ACME, "cost-center").as_deref(),
        Some("CC-4711")
    );
    assert_eq!(
        env.emu.user_metadata(ALICE).get("team").map(Vec::as_slice),
        Some(&b"platform"[..])
    );

    // Events were recorded with the chart's events.k8s.io permissions: a first sync publishes
    // none (its Ready condition tells it), a later write does.
    env.apply_org_values("acme", ACME, &[("cost-center", "CC-4712")])
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let events = env.events().await;
        if events.iter().any(|(reason, _)| reason == "MetadataSet") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no MetadataSet event: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    assert_eq!(
        env.org_value(ACME, "cost-center").as_deref(),
        Some("CC-4712")
    );

    // Deletion: the finalizer runs (patch on the object) and the key leaves ZITADEL.
    env.delete_org("acme").await;
    env.wait_org_gone("acme").await;
    assert_eq!(env.org_value(ACME, "cost-center"), None);

    operator.stop().await;
}

/// `patch` of `body` on Secret/ConfigMap `name` through `api`: the error's message if refused.
async fn refused<K>(api: &Api<K>, name: &str, body: Value) -> Option<String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
    {
        Ok(_) => None,
        Err(kube::Error::Api(s)) => Some(format!("{} {}", s.code, s.message)),
        Err(e) => Some(e.to_string()),
    }
}

#[tokio::test]
async fn the_charts_rbac_holds_connections_and_their_secrets_and_changes_only_finalizers() {
    let env = TestEnv::new("hrbac-hold").await;
    let user = install_rbac(env.cp, &env.ns, &release_name(&env.ns), |_| {});
    let client = client_as(env.cp, &user).await;
    await_rbac(&client, &env.ns).await;
    env.put_secret(&env.ns, "pat", "token", common::TOKEN).await;
    let ca = zmo_testkit::emulator::TlsMaterial::generate(&["localhost"])
        .expect("a CA")
        .ca_pem;
    let admin_cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.ns);
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ca"}, "data": {"ca.crt": ca}});
    admin_cms
        .patch(
            "ca",
            &PatchParams::apply("e2e-helm").force(),
            &Patch::Apply(&cm),
        )
        .await
        .expect("ConfigMap");

    // As the ServiceAccount: the policy refuses any change but finalizers, once it is in force
    // (a fresh value per attempt: a patch that changes nothing is allowed).
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &env.ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &env.ns);
    let attempt = std::sync::atomic::AtomicU32::new(0);
    let why = common::eventually(Duration::from_secs(15), "the policy denies", || async {
        let n = attempt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        refused(&cms, "ca", json!({"data": {"probe": n.to_string()}})).await
    })
    .await;
    assert!(why.contains("may change only metadata.finalizers"), "{why}");
    let why = refused(&secrets, "pat", json!({"data": {"token": "c3RvbGVu"}})).await;
    assert!(why.is_some_and(|w| w.contains("may change only metadata.finalizers")));
    for body in [
        json!({"metadata": {"labels": {"x": "y"}}}),
        json!({"type": "kubernetes.io/basic-auth"}),
    ] {
        assert!(refused(&secrets, "pat", body).await.is_some());
    }
    let why = refused(&cms, "ca", json!({"data": {"ca.crt": "x"}})).await;
    assert!(why.is_some_and(|w| w.contains("may change only metadata.finalizers")));
    let hold = json!({"metadata": {"finalizers": ["e2e.zitadel-operator.dev/x"]}});
    assert_eq!(
        refused(&secrets, "pat", hold).await,
        None,
        "a finalizer is allowed"
    );
    let release = json!({"metadata": {"finalizers": null}});
    assert_eq!(refused(&secrets, "pat", release).await, None);
    assert_eq!(
        refused(
            &cms,
            "ca",
            json!({"metadata": {"finalizers": ["e2e.zitadel-operator.dev/x"]}})
        )
        .await,
        None
    );
    assert_eq!(
        refused(&cms, "ca", json!({"metadata": {"finalizers": null}})).await,
        None
    );

    // The operator as the ServiceAccount holds the connection, its Secret and its CA ConfigMap…
    let operator = Operator::start_multi_tenant(client, vec![env.ns.clone()], fast_settings());
    env.apply_connection(
        "z",
        json!({"url": env.emu.url(), "credentials": {"personalAccessToken": {"name": "pat", "key": "token"}},
               "caBundle": {"configMapRef": {"name": "ca", "key": "ca.crt"}}}),
    )
    .await;
    env.apply_org(
        "acme",
        json!({"organizationId": ACME, "connectionRef": {"name": "z"}, "metadata": [{"key": "k", "value": "v"}]}),
    )
    .await;
    env.wait_org_ready("acme").await;
    let holder = "zitadelconnection.metadata.zitadel-operator.dev/z";
    let finalizers = |m: kube::api::ObjectMeta| m.finalizers.unwrap_or_default();
    let admin_secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let conns: Api<ZitadelConnection> = Api::namespaced(env.client.clone(), &env.ns);
    assert_eq!(
        finalizers(admin_secrets.get("pat").await.expect("get").metadata),
        vec![holder]
    );
    assert_eq!(
        finalizers(admin_cms.get("ca").await.expect("get").metadata),
        vec![holder]
    );
    assert_eq!(
        finalizers(conns.get("z").await.expect("get").metadata),
        vec!["metadata.zitadel-operator.dev/in-use"]
    );
    // …and lets go of everything when the namespace is deleted, after removing the key.
    common::namespace::delete_namespace_contents(&env.client, &env.ns).await;
    common::namespace::wait_namespace_empty(&env.client, &env.ns, Duration::from_secs(10)).await;
    assert!(admin_cms.get_opt("ca").await.expect("get").is_none());
    assert_eq!(env.org_value(ACME, "k"), None);
    operator.stop().await;
}

/// `--token-secret` with only the chart's Role for it (`get`, `list`, `watch`, `patch` on that
/// one Secret; the ClusterRole's Secret rules, which are for `valueFrom` and connections, are
/// taken out): the single-object watch is authorized by name, so a Secret created after the
/// start, a rejected rotation and the rotation back are all seen within seconds (without its
/// watch the operator re-reads the Secret only every 30 s); the Secret is held while the object
/// uses the default connection and released after.
#[tokio::test]
async fn token_secret_mode_works_with_only_the_charts_rbac() {
    let env = TestEnv::new("hrbac-token").await;
    let values = [
        "--set",
        "zitadel.url=https://zitadel.example",
        "--set",
        "zitadel.tokenSecret.name=zitadel-token",
    ];
    let release = release_name(&env.ns);
    let user = install_rbac_with(env.cp, &env.ns, &release, &values, 7, |role| {
        let rules = role["rules"].as_array_mut().expect("rules");
        let before = rules.len();
        rules.retain(|r| r["resources"] != json!(["secrets", "configmaps"]));
        assert_eq!(rules.len(), before - 2, "both Secret rules are taken out");
    });
    let client = client_as(env.cp, &user).await;
    await_rbac(&client, &env.ns).await;
    // The grant is by name: listing the namespace's Secrets is forbidden, watching the one by
    // its name is not.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &env.ns);
    match secrets.list(&Default::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("listing all Secrets was allowed: {other:?}"),
    }
    let one = kube::api::ListParams::default().fields("metadata.name=zitadel-token");
    let named = common::eventually(
        Duration::from_secs(15),
        "the token Role applies",
        || async { secrets.list(&one).await.ok() },
    )
    .await;
    assert!(named.items.is_empty());
    let location = zitadel_metadata_operator::connections::credentials::TokenLocation::Secret {
        namespace: env.ns.clone(),
        name: "zitadel-token".into(),
        key: "token".into(),
    };
    let default = common::flag_connection(&client, &env.emu.url(), location);
    let mut settings = fast_settings();
    settings.resync = Duration::from_secs(300);
    settings.stalled_requeue = Duration::from_secs(600);
    let operator = Operator::start_with(client, Some(default), vec![env.ns.clone()], settings);
    env.apply_org_values("acme", ACME, &[("k", "v")]).await;
    env.wait_org("acme", "CredentialsUnavailable", |o| {
        common::reason(o.status.as_ref()) == Some("CredentialsUnavailable")
    })
    .await;
    let created = ready_after_token(&env).await;
    env.emu.add_token(
        "revoked",
        zmo_testkit::emulator::TokenGrant::iam_owner(ACME),
    );
    env.emu.revoke_token("revoked");
    env.put_secret(&env.ns, "zitadel-token", "token", "revoked")
        .await;
    env.wait_org("acme", "ZitadelUnauthenticated", |o| {
        common::reason(o.status.as_ref()) == Some("ZitadelUnauthenticated")
    })
    .await;
    let restored = ready_after_token(&env).await;
    println!(
        "FIGURE helm_token_secret_rbac ready_after_create={created:?} ready_after_restore={restored:?}"
    );
    assert!(created < Duration::from_secs(10) && restored < Duration::from_secs(10));
    let admin: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    assert_eq!(
        common::finalizers_of(&admin, "zitadel-token").await,
        ["metadata.zitadel-operator.dev/default-connection"]
    );
    env.delete_org("acme").await;
    env.wait_org_gone("acme").await;
    common::eventually(Duration::from_secs(10), "token Secret released", || async {
        let f = admin.get("zitadel-token").await.ok()?.metadata.finalizers;
        f.unwrap_or_default().is_empty().then_some(())
    })
    .await;
    operator.stop().await;
}

/// RBAC from before the status `PUT` (only `patch` on the status subresource): the first `PUT`
/// is refused, the operator applies the status from then on (server-side apply, as before), and
/// the objects become Ready.
#[tokio::test]
async fn with_only_the_status_patch_verb_objects_still_become_ready() {
    let env = TestEnv::new("hrbac-statuspatch").await;
    let user = install_rbac(env.cp, &env.ns, &release_name(&env.ns), |role| {
        let rules = role["rules"].as_array_mut().expect("rules");
        let status = rules
            .iter_mut()
            .find(|r| r["resources"] == json!(["orgmetadatas/status", "usermetadatas/status"]))
            .expect("the status rule");
        status["verbs"] = json!(["patch"]);
    });
    let client = client_as(env.cp, &user).await;
    await_rbac(&client, &env.ns).await;

    let operator = Operator::start(client.clone(), &env.emu.url(), &env.ns, fast_settings());
    env.apply_org_values("acme", ACME, &[("region", "eu")])
        .await;
    env.apply_org_values("globex", GLOBEX, &[("region", "us")])
        .await;
    for name in ["acme", "globex"] {
        let obj = env.wait_org_ready(name).await;
        let entries: Vec<(String, String)> = obj
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter(|m| m.manager.as_deref() == Some("zitadel-metadata-operator"))
            .map(|m| {
                (
                    m.operation.clone().unwrap_or_default(),
                    m.subresource.clone().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [("Apply".to_string(), "status".to_string())],
            "{name}: the status was applied"
        );
    }
    assert_eq!(env.org_value(ACME, "region").as_deref(), Some("eu"));
    operator.stop().await;
}

/// Without the status verbs the operator writes ZITADEL but never a status; deleting the object
/// still removes what it wrote.
#[tokio::test]
async fn without_the_status_patch_verb_the_object_never_becomes_ready() {
    let env = TestEnv::new("hrbac-nostatus").await;
    let user = install_rbac(env.cp, &env.ns, &release_name(&env.ns), |role| {
        let rules = role["rules"].as_array_mut().expect("rules");
        let before = rules.len();
        rules.retain(|r| r["resources"] != json!(["orgmetadatas/status", "usermetadatas/status"]));
        assert_eq!(
            rules.len(),
            before - 1,
            "the status rule (`patch`, `update`) is removed"
        );
    });
    let client = client_as(env.cp, &user).await;
    await_rbac(&client, &env.ns).await;

    let operator = Operator::start(client.clone(), &env.emu.url(), &env.ns, fast_settings());
    env.apply_org_values("acme", ACME, &[("no-status", "written")])
        .await;

    // The operator runs and writes ZITADEL (so everything but the status write works) ...
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while env.org_value(ACME, "no-status").is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the operator never wrote ZITADEL"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ... but the object never gets a status: not Ready through several retries.
    let until = tokio::time::Instant::now() + Duration::from_secs(6);
    while tokio::time::Instant::now() < until {
        let obj = env.orgs().get("acme").await.expect("get");
        // Only the CRD's default (`observedGeneration: 0`), never the operator's status.
        assert_eq!(
            obj.status.clone().unwrap_or_default(),
            MetadataStatus {
                observed_generation: Some(0),
                ..Default::default()
            },
            "status written without the verb"
        );
        assert_ne!(condition(obj.status.as_ref(), "Ready"), Some("True"));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The write the operator needs is forbidden for this role.
    let orgs: Api<OrgMetadata> = Api::namespaced(client, &env.ns);
    let patch = json!({
        "apiVersion": "metadata.zitadel-operator.dev/v1alpha1",
        "kind": "OrgMetadata",
        "status": {"observedGeneration": 1},
    });
    match orgs
        .patch_status(
            "acme",
            &PatchParams::apply("zitadel-metadata-operator"),
            &Patch::Apply(&patch),
        )
        .await
    {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403, "{s:?}");
            assert!(s.message.contains("orgmetadatas/status"), "{}", s.message);
        }
        other => panic!("status patch was not forbidden: {other:?}"),
    }

    // Deleting the object removes the key the operator wrote although no status ever recorded
    // it (the operator remembers keys whose status write failed), then lets the object go.
    env.delete_org("acme").await;
    env.wait_org_gone("acme").await;
    assert_eq!(
        env.org_value(ACME, "no-status"),
        None,
        "a key written before the failed status writes was left in ZITADEL"
    );

    operator.stop().await;
}

/// The operator binary accepts every flag the chart renders: clap parses (and validates the
/// values of) all arguments before the trailing `--help`, and fails on an unknown one.
#[tokio::test]
async fn the_operator_binary_accepts_every_rendered_flag() {
    let cp = common::shared_with_crds().await;
    let cases: [&[&str]; 3] = [
        &[],
        &[
            "--set",
            "replicaCount=2",
            "--set-json",
            r#"watchNamespaces=["team-a","team-b"]"#,
            "--set",
            "zitadel.url=https://acme.zitadel.cloud",
            "--set",
            "zitadel.tokenSecret.name=zitadel-token",
            "--set",
            "operator.logFormat=text",
            "--set",
            "operator.resyncInterval=1m 30s",
        ],
        &[
            "--set",
            "leaderElection.enabled=true",
            "--set",
            "zitadel.url=https://acme.zitadel.cloud",
            "--set",
            "zitadel.existingSecret.name=zitadel-pat",
            "--set-json",
            r#"extraArgs=["--backoff-max=2m"]"#,
        ],
    ];
    for values in cases {
        let rendered = args(&docs_of(cp, "flags", values));
        let out = binary_help(&rendered);
        assert!(
            out.status.success(),
            "the binary rejects the chart's flags {rendered:?}:\n{}",
            text(&out.stderr)
        );
        assert!(text(&out.stdout).contains("--leader-elect"));
    }
    // The check is real: an unknown flag before --help fails.
    let out = binary_help(&["--no-such-flag".to_string()]);
    assert!(!out.status.success());
}

/// `shards`: one Deployment per shard, each with its selector, its own Lease (leader election is
/// always on for shards) and PodDisruptionBudget; the Role names every Lease; the binary accepts
/// the rendered flags and the API server the manifests. A shard name used twice fails.
#[tokio::test]
async fn shards_render_a_deployment_lease_and_selector_each() {
    let cp = common::shared_with_crds().await;
    let ns = namespace(cp, "helm-shards").await;
    let values = [
        "--set-json",
        r#"shards=[{"name":"a","selector":"shard=a"},{"name":"b","selector":"shard in (b)","replicaCount":2}]"#,
        "--set",
        "podDisruptionBudget.enabled=true",
        "--set",
        "operator.eventPollInterval=5s",
    ];
    let docs = docs_of(cp, &ns, &values);
    assert_eq!(of_kind(&docs, "Deployment").len(), 2);
    for (shard, selector, replicas) in [("a", "shard=a", 1), ("b", "shard in (b)", 2)] {
        let name = format!("zmo-zitadel-metadata-operator-{shard}");
        let deployment = named(&docs, "Deployment", &name);
        assert_eq!(deployment["spec"]["replicas"], replicas);
        assert_eq!(
            deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/shard"],
            shard
        );
        assert_eq!(
            deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/shard"],
            shard
        );
        let args = args_of(&deployment["spec"]["template"]["spec"]["containers"][0]);
        for expected in [
            "--leader-elect".to_string(),
            format!("--leader-election-id={name}"),
            format!("--watch-label-selector={selector}"),
            "--event-poll-interval=5s".to_string(),
            "--drift-detection=auto".to_string(),
            // terminationGracePeriodSeconds (30) minus 5 s.
            "--shutdown-timeout=25s".to_string(),
        ] {
            assert!(args.contains(&expected), "{expected} in {args:?}");
        }
        let pdb = named(&docs, "PodDisruptionBudget", &name);
        assert_eq!(
            pdb["spec"]["selector"]["matchLabels"],
            deployment["spec"]["selector"]["matchLabels"]
        );
        let out = binary_help(&args);
        assert!(
            out.status.success(),
            "the binary rejects the shard's flags {args:?}:\n{}",
            text(&out.stderr)
        );
    }
    let role = named(
        &docs,
        "Role",
        "zmo-zitadel-metadata-operator-leader-election",
    );
    assert_eq!(
        role["rules"][1]["resourceNames"],
        json!([
            "zmo-zitadel-metadata-operator-a",
            "zmo-zitadel-metadata-operator-b"
        ])
    );
    // One metrics Service for all shards' pods.
    let service = one(&docs, "Service");
    assert!(service["spec"]["selector"]["app.kubernetes.io/shard"].is_null());
    assert_accepted(cp, &docs);

    let out = try_template(
        cp,
        "zmo",
        &ns,
        &[
            "--set-json",
            r#"shards=[{"name":"a","selector":"x=1"},{"name":"a","selector":"x=2"}]"#,
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("the name \"a\" is used twice"),
        "{}",
        text(&out.stderr)
    );
}
