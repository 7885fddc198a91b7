//! GitOps tools, proven with their own evaluators on objects the operator wrote on a real
//! kube-apiserver (README "GitOps"):
//!
//! * kstatus (`sigs.k8s.io/cli-utils` `status.Compute`: Flux, `helm --wait`) and Argo CD's health
//!   check (`deploy/argocd/argocd-cm-patch.yaml`, i.e. `deploy/argocd/health.lua` under
//!   `resource.customizations.health.<group>_<kind>`, in gopher-lua with Argo CD's sandbox) judge
//!   every state the operator writes: not reported yet, Reconciling, Ready, a generation not yet
//!   observed, drift reported, suspended, deleting with a failing cleanup, and Stalled for each
//!   reason. Both run in `gitops-eval`, a Go helper built by `tests/envtest/build.sh` next to
//!   `kubectl` (`tests/envtest/gitops/`).
//! * `kubectl`: `explain`, the short names, the `zitadel` category, `-o wide` columns and
//!   `kubectl wait`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{GroupVersionKind, Resource};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use zitadel_metadata_operator::crd::{
    ClusterZitadelConnection, MetadataResource, MetadataStatus, OrgMetadata, UserMetadata,
    ZitadelConnection,
};
use zitadel_metadata_operator::status::{self, READY, RECONCILING, STALLED};
use zmo_testkit::controlplane::ControlPlane;
use zmo_testkit::emulator::{Fault, Operation, TokenGrant};

/// What Argo CD shows for an object (gitops-engine's HealthStatus).
#[derive(Debug, Deserialize, Clone, PartialEq)]
struct Health {
    #[serde(default)]
    status: String,
    #[serde(default)]
    message: String,
}

#[derive(Debug, Deserialize)]
struct Kstatus {
    status: String,
    message: String,
}

/// One line of `gitops-eval`'s output.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Verdict {
    kstatus: Option<Kstatus>,
    kstatus_error: Option<String>,
    /// health.lua's own answer.
    lua: Option<Health>,
    lua_error: Option<String>,
    /// What Argo CD shows (its deletion rule, then health.lua).
    argocd: Option<Health>,
}

impl Verdict {
    fn kstatus(&self) -> &Kstatus {
        self.kstatus
            .as_ref()
            .unwrap_or_else(|| panic!("kstatus failed: {:?}", self.kstatus_error))
    }

    fn lua(&self) -> &Health {
        self.lua
            .as_ref()
            .unwrap_or_else(|| panic!("health.lua failed: {:?}", self.lua_error))
    }

    fn argocd(&self) -> &Health {
        self.argocd.as_ref().expect("Argo CD health")
    }

    /// Asserts the kstatus status and Argo CD's health.
    fn expect(&self, state: &str, kstatus: &str, argocd: &str) {
        // The observed table (`cargo test --test e2e_gitops -- --nocapture`).
        eprintln!(
            "gitops | {state} | kstatus {} ({}) | Argo CD {} ({})",
            self.kstatus().status,
            self.kstatus().message,
            self.argocd().status,
            self.argocd().message
        );
        assert_eq!(
            (
                self.kstatus().status.as_str(),
                self.argocd().status.as_str()
            ),
            (kstatus, argocd),
            "{state}: (kstatus, Argo CD) of {self:#?}"
        );
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `gitops-eval` from the control plane's binary directory.
fn gitops_eval(cp: &ControlPlane) -> PathBuf {
    let bin = cp.bin_dir().join("gitops-eval");
    assert!(
        bin.is_file(),
        "no gitops-eval in {}: tests/envtest/build.sh builds it (KUBEBUILDER_ASSETS pointing at a \
         folder without it skips that; unset KUBEBUILDER_ASSETS and run the script)",
        cp.bin_dir().display()
    );
    bin
}

fn resource<K: Resource<DynamicType = ()>>() -> ApiResource {
    let gvk = GroupVersionKind::gvk(&K::group(&()), &K::version(&()), &K::kind(&()));
    ApiResource::from_gvk_with_plural(&gvk, &K::plural(&()))
}

/// The live object `kind/name` exactly as the API server returns it.
async fn live<K: Resource<DynamicType = ()>>(env: &TestEnv, name: &str) -> Value {
    let api: Api<DynamicObject> =
        Api::namespaced_with(env.client.clone(), &env.ns, &resource::<K>());
    let obj = api.get(name).await.expect("get live object");
    serde_json::to_value(obj).expect("object to JSON")
}

/// Server-side applies `spec` to `kind/name` (field manager `e2e-test`, like
/// `TestEnv::apply_org`) and returns the API server's answer as is.
async fn apply_raw<K: Resource<DynamicType = ()>>(env: &TestEnv, name: &str, spec: Value) -> Value {
    let api: Api<DynamicObject> =
        Api::namespaced_with(env.client.clone(), &env.ns, &resource::<K>());
    let obj = json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()),
        "metadata": {"name": name}, "spec": spec});
    let applied = api
        .patch(
            name,
            &PatchParams::apply("e2e-test").force(),
            &Patch::Apply(&obj),
        )
        .await
        .expect("apply");
    serde_json::to_value(applied).expect("object to JSON")
}

/// Runs `gitops-eval` with the shipped argocd-cm patch on `objects`.
async fn judge_all(cp: &ControlPlane, objects: &[Value]) -> Vec<Verdict> {
    let mut child = tokio::process::Command::new(gitops_eval(cp))
        .arg("-argocd-cm")
        .arg(repo().join("deploy/argocd/argocd-cm-patch.yaml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start gitops-eval");
    let mut input = Vec::new();
    for obj in objects {
        serde_json::to_writer(&mut input, obj).expect("encode");
        input.push(b'\n');
    }
    // Written while the output is read, so neither pipe can fill up and block the other.
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = tokio::spawn(async move { stdin.write_all(&input).await });
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("gitops-eval finishes within 60 s")
        .expect("gitops-eval output");
    writer
        .await
        .expect("writer task")
        .expect("write objects to gitops-eval");
    assert!(
        out.status.success(),
        "gitops-eval failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<Verdict> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("verdict {l}: {e}")))
        .collect();
    assert_eq!(verdicts.len(), objects.len(), "one verdict per object");
    verdicts
}

async fn judge<K: Resource<DynamicType = ()>>(env: &TestEnv, name: &str) -> (Value, Verdict) {
    let obj = live::<K>(env, name).await;
    let verdict = judge_all(env.cp, std::slice::from_ref(&obj))
        .await
        .pop()
        .expect("verdict");
    (obj, verdict)
}

/// (status, reason, message) of condition `type_`.
fn cond<'a>(st: Option<&'a MetadataStatus>, type_: &str) -> Option<(&'a str, &'a str, &'a str)> {
    st.and_then(|s| status::find(&s.conditions, type_))
        .map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
}

/// The status describes the object's current generation.
fn observed<K: MetadataResource>(o: &K) -> bool {
    o.status().and_then(|s| s.observed_generation) == o.meta().generation
}

/// Stalled=True with `reason`, for the current generation.
fn stalled_with<K: MetadataResource>(o: &K, reason: &str) -> bool {
    observed(o) && cond(o.status(), STALLED).is_some_and(|(s, r, _)| s == "True" && r == reason)
}

fn string(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// One object walks through every state but Stalled; each is judged by kstatus and Argo CD.
/// The spec of the life-cycle test's object: `tier` = `value`, plus `extra` fields.
fn tier_spec(value: &str, extra: Value) -> Value {
    let mut spec = json!({"organizationId": ACME, "metadata": [{"key": "tier", "value": value}]});
    spec.as_object_mut()
        .expect("spec")
        .extend(extra.as_object().cloned().unwrap_or_default());
    spec
}

/// Applied with no operator running: InProgress / Progressing, waiting for status.
async fn not_reported_yet(env: &TestEnv) {
    // Not reported yet: the operator is not running. The CRD's status default makes the object
    // "generation 1, observed 0" for kstatus, not an object without conditions (Current).
    env.apply_org("acme", tier_spec("gold", json!({}))).await;
    let (obj, v) = judge::<OrgMetadata>(env, "acme").await;
    v.expect("not reported yet", "InProgress", "Progressing");
    assert_eq!(obj["status"], json!({"observedGeneration": 0}), "{obj:#}");
    assert_eq!(
        v.kstatus().message,
        "OrgMetadata generation is 1, but latest observed generation is 0"
    );
    assert_eq!(
        v.argocd().message,
        "Waiting for the operator to report status"
    );
}

/// Reconciling while ZITADEL is unavailable, then Ready; returns the running operator.
async fn reconciling_then_ready(env: &TestEnv) -> Operator {
    // Reconciling: ZITADEL answers 503 to everything.
    env.emu.inject(Fault::unavailable());
    let op = env.start_operator(fast_settings());
    let o = env
        .wait_org("acme", "Reconciling=True", |o| {
            observed(o) && cond(o.status(), RECONCILING).is_some_and(|(s, _, _)| s == "True")
        })
        .await;
    let (_, reason, message) = cond(o.status(), READY).expect("Ready");
    assert_eq!(reason, "ZitadelUnavailable");
    let (_, v) = judge::<OrgMetadata>(env, "acme").await;
    v.expect(
        "Reconciling (ZITADEL unavailable)",
        "InProgress",
        "Progressing",
    );
    assert_eq!(v.kstatus().message, message);
    assert_eq!(v.argocd().message, format!("{reason}: {message}"));

    // Ready.
    env.emu.clear_faults();
    let o = env
        .wait_org("acme", "Ready", |o| {
            is_ready(o.status(), o.metadata.generation)
        })
        .await;
    let (_, v) = judge::<OrgMetadata>(env, "acme").await;
    v.expect("Ready", "Current", "Healthy");
    assert_eq!(v.kstatus().message, "Resource is Ready");
    assert_eq!(
        v.argocd().message,
        format!("Synced: {}", cond(o.status(), READY).expect("Ready").2)
    );
    op
}

/// A generation the (stopped) operator has not seen is not Current; Ready again after a restart.
async fn an_unobserved_generation_is_in_progress(env: &TestEnv, op: Operator) -> Operator {
    // A newer generation the operator has not seen (it is stopped): not Current any more. Judged
    // on the API server's answer to the apply itself, which no operator can have seen yet.
    op.stop().await;
    let obj = apply_raw::<OrgMetadata>(env, "acme", tier_spec("platinum", json!({}))).await;
    assert_eq!(obj["metadata"]["generation"], 2);
    let v = judge_all(env.cp, std::slice::from_ref(&obj))
        .await
        .pop()
        .expect("verdict");
    v.expect("generation not observed yet", "InProgress", "Progressing");
    assert_eq!(
        v.kstatus().message,
        "OrgMetadata generation is 2, but latest observed generation is 1"
    );
    assert_eq!(
        v.argocd().message,
        "Waiting for the operator to observe generation 2"
    );
    assert_eq!(env.org_value(ACME, "tier").as_deref(), Some("gold"));
    let op = env.start_operator(fast_settings());
    env.wait_org("acme", "Ready at generation 2", |o| {
        is_ready(o.status(), o.metadata.generation)
    })
    .await;
    assert_eq!(env.org_value(ACME, "tier").as_deref(), Some("platinum"));
    let (_, v) = judge::<OrgMetadata>(env, "acme").await;
    v.expect("Ready again", "Current", "Healthy");
    op
}

/// driftPolicy Report with an out-of-band edit: Failed / Degraded, nothing written; Enforce repairs.
async fn reported_drift_is_failed_and_degraded(env: &TestEnv) {
    // driftPolicy Report, then someone edits ZITADEL: drift reported, nothing written.
    env.apply_org(
        "acme",
        tier_spec("platinum", json!({"driftPolicy": "Report"})),
    )
    .await;
    env.wait_org("acme", "Ready with driftPolicy Report", |o| {
        is_ready(o.status(), o.metadata.generation)
    })
    .await;
    env.emu
        .put_org_metadata(ACME, "tier", b"edited in the console");
    let o = env
        .wait_org("acme", "Drifted", |o| stalled_with(o, "Drifted"))
        .await;
    let (ready, _, message) = cond(o.status(), READY).expect("Ready");
    assert_eq!(ready, "False");
    assert!(message.contains("tier"), "{message}");
    let (_, v) = judge::<OrgMetadata>(env, "acme").await;
    v.expect("Drifted (driftPolicy Report)", "Failed", "Degraded");
    assert_eq!(v.kstatus().message, message);
    assert_eq!(v.argocd().message, format!("Drifted: {message}"));
    assert_eq!(
        env.org_value(ACME, "tier").as_deref(),
        Some("edited in the console"),
        "Report must not write"
    );
    env.apply_org(
        "acme",
        tier_spec("platinum", json!({"driftPolicy": "Enforce"})),
    )
    .await;
    env.wait_org("acme", "repaired", |o| {
        is_ready(o.status(), o.metadata.generation)
    })
    .await;
    assert_eq!(env.org_value(ACME, "tier").as_deref(), Some("platinum"));
}

/// Suspended: kstatus Current, Argo CD Suspended, nothing written; resuming syncs.
async fn suspended_is_current_and_suspended(env: &TestEnv) {
    // Suspended: paused as asked. kstatus Current (no Ready condition), Argo CD Suspended.
    env.apply_org("acme", tier_spec("diamond", json!({"suspend": true})))
        .await;
    let o = env
        .wait_org("acme", "Suspended", |o| {
            observed(o)
                && cond(o.status(), RECONCILING)
                    .is_some_and(|(s, r, _)| (s, r) == ("False", "Suspended"))
        })
        .await;
    assert_eq!(cond(o.status(), READY), None, "no Ready while suspended");
    assert_eq!(
        cond(o.status(), STALLED).map(|(s, r, _)| (s, r)),
        Some(("False", "Suspended"))
    );
    let message = cond(o.status(), RECONCILING).expect("Reconciling").2;
    let (_, v) = judge::<OrgMetadata>(env, "acme").await;
    v.expect("Suspended", "Current", "Suspended");
    assert_eq!(v.argocd().message, format!("Suspended: {message}"));
    assert_eq!(env.org_value(ACME, "tier").as_deref(), Some("platinum"));
    env.apply_org("acme", tier_spec("diamond", json!({"suspend": false})))
        .await;
    env.wait_org("acme", "resumed", |o| {
        is_ready(o.status(), o.metadata.generation)
    })
    .await;
    assert_eq!(env.org_value(ACME, "tier").as_deref(), Some("diamond"));
}

/// Deleting while the cleanup fails: Terminating / Pending deletion; gone once ZITADEL allows it.
async fn a_failing_cleanup_is_terminating(env: &TestEnv) {
    // Deleting while the cleanup fails (ZITADEL refuses the removal): Terminating, and Argo CD's
    // own "Pending deletion" before the script (which alone says Degraded).
    env.emu.inject(
        Fault::status(403, 7)
            .on(Operation::BulkRemoveOrgMetadata)
            .on(Operation::RemoveOrgMetadata),
    );
    env.delete_org("acme").await;
    let o = env
        .wait_org("acme", "CleanupFailed", |o| {
            o.metadata.deletion_timestamp.is_some()
                && cond(o.status(), STALLED)
                    .is_some_and(|(s, r, _)| (s, r) == ("True", "CleanupFailed"))
        })
        .await;
    let message = cond(o.status(), READY).expect("Ready").2;
    let (_, v) = judge::<OrgMetadata>(env, "acme").await;
    v.expect("deleting, cleanup failing", "Terminating", "Progressing");
    assert_eq!(v.kstatus().message, "Resource scheduled for deletion");
    assert_eq!(v.argocd().message, "Pending deletion");
    assert_eq!(
        *v.lua(),
        Health {
            status: "Degraded".into(),
            message: format!("CleanupFailed: {message}")
        }
    );
    env.emu.clear_faults();
    env.wait_org_gone("acme").await;
    assert_eq!(env.org_value(ACME, "tier"), None);
}

#[tokio::test]
async fn one_object_through_every_state_in_kstatus_and_argo_cd() {
    let env = TestEnv::new("gitops-life").await;
    not_reported_yet(&env).await;
    let op = reconciling_then_ready(&env).await;
    let op = an_unobserved_generation_is_in_progress(&env, op).await;
    reported_drift_is_failed_and_degraded(&env).await;
    suspended_is_current_and_suspended(&env).await;
    a_failing_cleanup_is_terminating(&env).await;
    op.stop().await;
}

/// A ClusterZitadelConnection whose rules admit only another namespace.
async fn apply_cluster_connection(env: &TestEnv, name: &str) {
    env.put_secret(&env.ns, "zitadel-pat", "token", TOKEN).await;
    let spec = json!({"url": env.emu.url(),
        "credentials": {"personalAccessToken": {"name": "zitadel-pat", "key": "token", "namespace": env.ns}},
        "allowedNamespaces": [{"names": ["somewhere-else"], "organizationIds": [ACME]}]});
    env.apply_cluster_connection(name, spec).await;
}

async fn delete_cluster_connection(env: &TestEnv, name: &str) {
    let api: Api<ClusterZitadelConnection> = Api::all(env.client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
}

/// Connections for the Stalled reasons: a ClusterZitadelConnection admitting only another
/// namespace, one with an absent Secret, and one of a read-only service user.
async fn apply_stalled_connections(env: &TestEnv, czconn: &str) {
    env.emu.add_org("100000000000000009", "Acme");
    apply_cluster_connection(env, czconn).await;
    env.apply_connection(
        "broken",
        json!({"url": env.emu.url(), "credentials": {"personalAccessToken": {"name": "absent", "key": "token"}}}),
    )
    .await;
    // A service user that may read but not write Acme's metadata.
    env.emu
        .add_token("viewer-pat", TokenGrant::org_owner_viewer(ACME));
    env.put_secret(&env.ns, "viewer-pat", "token", "viewer-pat")
        .await;
    env.apply_connection(
        "viewer",
        json!({"url": env.emu.url(), "credentials": {"personalAccessToken": {"name": "viewer-pat", "key": "token"}}}),
    )
    .await;
}

type StalledCase = (&'static str, &'static str, Value);

/// OrgMetadata specs, each Stalled with its reason.
fn stalled_orgs(czconn: &str, entry: &Value) -> [StalledCase; 9] {
    [
        (
            "second",
            "KeyConflict",
            json!({"organizationId": ACME, "metadata": [{"key": "shared", "value": "2"}]}),
        ),
        (
            "too-large",
            "InvalidSpec",
            json!({"organizationId": ACME, "metadata": [{"key": "big", "value": "é".repeat(250_001)}]}),
        ),
        (
            "no-source",
            "ValueSourceNotFound",
            json!({"organizationId": ACME, "metadata": [{"key": "k", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}]}),
        ),
        (
            "no-such-name",
            "TargetNotFound",
            json!({"organization": {"name": "Initech"}, "metadata": entry}),
        ),
        (
            "two-named-acme",
            "TargetAmbiguous",
            json!({"organization": {"name": "Acme"}, "metadata": entry}),
        ),
        (
            "no-connection",
            "ConnectionNotFound",
            json!({"organizationId": ACME, "connectionRef": {"name": "nope"}, "metadata": entry}),
        ),
        (
            "broken-connection",
            "ConnectionNotReady",
            json!({"organizationId": ACME, "connectionRef": {"name": "broken"}, "metadata": entry}),
        ),
        (
            "not-allowed",
            "TargetNotAllowed",
            json!({"organizationId": ACME, "connectionRef": {"kind": "ClusterZitadelConnection", "name": czconn}, "metadata": entry}),
        ),
        (
            "read-only",
            "ZitadelPermissionDenied",
            // A key of its own: the others' "k" would be a KeyConflict first.
            json!({"organizationId": ACME, "connectionRef": {"name": "viewer"}, "metadata": [{"key": "own", "value": "v"}]}),
        ),
    ]
}

/// UserMetadata specs, each Stalled with its reason.
fn stalled_users(entry: &Value) -> [StalledCase; 3] {
    [
        // ZITADEL answers AUTH-Bs7Ds for the unknown org; the operator confirms before it
        // speaks: the user exists, in Acme — so the spec's organization is what to fix.
        (
            "no-such-org",
            "UserNotFound",
            json!({"userId": ALICE, "organizationId": "999999999999999999", "metadata": entry}),
        ),
        (
            "wrong-org",
            "UserNotFound",
            json!({"userId": BOB, "organizationId": ACME, "metadata": entry}),
        ),
        (
            "ghost",
            "ZitadelNotFound",
            json!({"userId": "299999999999999999", "metadata": entry}),
        ),
    ]
}

/// Waits until each case is Stalled with its reason; its live object and (what, reason, message).
async fn wait_stalled(
    env: &TestEnv,
    orgs: &[StalledCase],
    users: &[StalledCase],
) -> (Vec<Value>, Vec<(String, &'static str, String)>) {
    let mut objects = Vec::new();
    let mut expected = Vec::new();
    for (name, reason, _) in orgs {
        let o = env
            .wait_org(name, reason, |o| stalled_with(o, reason))
            .await;
        let message = cond(o.status(), READY).expect("Ready").2.to_string();
        objects.push(live::<OrgMetadata>(env, name).await);
        expected.push((format!("OrgMetadata {name}"), *reason, message));
    }
    for (name, reason, _) in users {
        let o = env
            .wait_user(name, reason, |o| stalled_with(o, reason))
            .await;
        let message = cond(o.status(), READY).expect("Ready").2.to_string();
        objects.push(live::<UserMetadata>(env, name).await);
        expected.push((format!("UserMetadata {name}"), *reason, message));
    }
    (objects, expected)
}

/// Every Stalled reason the operator writes is kstatus Failed (Flux and `helm --wait` fail at once
/// with the message) and Argo CD Degraded (with reason and message); a Ready object of each kind
/// is Current and Healthy next to them.
#[tokio::test]
async fn every_stalled_reason_is_failed_in_kstatus_and_degraded_in_argo_cd() {
    let env = TestEnv::new("gitops-stalled").await;
    let czconn = format!("{}-guarded", env.ns);
    apply_stalled_connections(&env, &czconn).await;
    let op = env.start_operator(fast_settings());
    let entry = json!([{"key": "k", "value": "v"}]);

    // The older of two objects claiming a key wins; the other reports KeyConflict.
    env.apply_org(
        "first",
        json!({"organizationId": ACME, "metadata": [{"key": "shared", "value": "1"}]}),
    )
    .await;
    env.apply_user("alice", json!({"userId": ALICE, "metadata": entry}))
        .await;
    env.wait_org("first", "Ready", |o| {
        is_ready(o.status(), o.metadata.generation)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let orgs = stalled_orgs(&czconn, &entry);
    let users = stalled_users(&entry);
    for (name, _, spec) in &orgs {
        env.apply_org(name, spec.clone()).await;
    }
    for (name, _, spec) in &users {
        env.apply_user(name, spec.clone()).await;
    }

    let (mut objects, expected) = wait_stalled(&env, &orgs, &users).await;
    env.wait_user("alice", "Ready", |o| {
        is_ready(o.status(), o.metadata.generation)
    })
    .await;
    let controls = [
        live::<OrgMetadata>(&env, "first").await,
        live::<UserMetadata>(&env, "alice").await,
    ];
    objects.extend(controls.iter().cloned());

    let verdicts = judge_all(env.cp, &objects).await;
    for (v, (what, reason, message)) in verdicts.iter().zip(&expected) {
        v.expect(&format!("{what}: Stalled {reason}"), "Failed", "Degraded");
        assert_eq!(&v.kstatus().message, message, "{what}");
        assert_eq!(v.argocd().message, format!("{reason}: {message}"), "{what}");
    }
    for (v, obj) in verdicts[expected.len()..].iter().zip(&controls) {
        v.expect(
            &format!(
                "{} {}",
                string(&obj["kind"]),
                string(&obj["metadata"]["name"])
            ),
            "Current",
            "Healthy",
        );
    }
    // No write for any stalled object: ZITADEL holds only the two Ready objects' keys.
    assert_eq!(
        env.emu
            .org_metadata(ACME)
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        ["shared"]
    );
    assert_eq!(env.org_value(ACME, "shared").as_deref(), Some("1"));
    op.stop().await;
    delete_cluster_connection(&env, &czconn).await;
}

/// `kubectl get -o wide` of every kind has the README's columns (same set: README lists default
/// and wide columns apart, kubectl interleaves them) and shows the values of a fresh read of each
/// object's status. Err describes the first difference.
async fn wide_columns_show_status(env: &TestEnv, czconn: &str) -> Result<(), String> {
    let cp = env.cp;
    let ns = env.ns.as_str();
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let expect_columns = |short: &str, text: &str| -> Vec<BTreeMap<String, String>> {
        let (headers, rows) = table(text);
        let documented = readme
            .lines()
            .find(|l| l.contains(&format!("(`{short}`)")) && l.starts_with("| `"))
            .unwrap_or_else(|| panic!("README row for {short}"));
        let cells: Vec<&str> = documented.split('|').map(str::trim).collect();
        let mut want = vec!["NAME".to_string()];
        for cell in [cells[2], cells[3]] {
            want.extend(cell.split(", ").map(|c| c.trim_matches('`').to_uppercase()));
        }
        let mut got = headers;
        got.sort();
        want.sort();
        assert_eq!(got, want, "{short} columns vs README: {documented}");
        rows
    };
    let same = |what: &str, got: &str, want: &str| -> Result<(), String> {
        if got == want {
            Ok(())
        } else {
            Err(format!(
                "{what}: kubectl shows {got:?}, status has {want:?}"
            ))
        }
    };
    let orgs: Api<OrgMetadata> = Api::namespaced(env.client.clone(), ns);
    let users: Api<UserMetadata> = Api::namespaced(env.client.clone(), ns);
    let conns: Api<ZitadelConnection> = Api::namespaced(env.client.clone(), ns);
    let cluster_conns: Api<ClusterZitadelConnection> = Api::all(env.client.clone());

    let acme = orgs.get("acme").await.map_err(|e| e.to_string())?;
    let rows = expect_columns(
        "orgmd",
        &kubectl(cp, &["get", "orgmd", "-n", ns, "-o", "wide"]),
    );
    let row = |name: &str| {
        rows.iter()
            .find(|r| r["NAME"] == name)
            .unwrap_or_else(|| panic!("{name} in {rows:?}"))
            .clone()
    };
    let st = acme.status.clone().unwrap_or_default();
    let acme_row = row("acme");
    assert_eq!(acme_row["ORGANIZATION"], ACME);
    assert_eq!(acme_row["KEYS"], "2");
    same("acme READY", &acme_row["READY"], "True")?;
    same(
        "acme SEQUENCE",
        &acme_row["SEQUENCE"],
        st.sequence.as_deref().unwrap_or("<no sequence>"),
    )?;
    same("acme REASON", &acme_row["REASON"], "Synced")?;
    same(
        "acme CHANGED",
        &acme_row["CHANGED"],
        st.change_date.as_deref().unwrap_or("<no changeDate>"),
    )?;
    assert!(!acme_row["AGE"].is_empty());
    let paused = row("paused");
    assert_eq!(
        (paused["READY"].as_str(), paused["REASON"].as_str()),
        ("", "Suspended")
    );
    let lost = row("lost");
    assert_eq!(
        (lost["READY"].as_str(), lost["REASON"].as_str()),
        ("False", "ConnectionNotFound")
    );

    let alice = users.get("alice").await.map_err(|e| e.to_string())?;
    let rows = expect_columns(
        "usermd",
        &kubectl(cp, &["get", "usermd", "-n", ns, "-o", "wide"]),
    );
    let st = alice.status.clone().unwrap_or_default();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["USER"], ALICE);
    assert_eq!(rows[0]["ORGANIZATION"], ACME, "looked up");
    assert_eq!(rows[0]["KEYS"], "1");
    same("alice READY", &rows[0]["READY"], "True")?;
    same(
        "alice SEQUENCE",
        &rows[0]["SEQUENCE"],
        st.sequence.as_deref().unwrap_or("<no sequence>"),
    )?;
    same("alice REASON", &rows[0]["REASON"], "Synced")?;
    same(
        "alice CHANGED",
        &rows[0]["CHANGED"],
        st.change_date.as_deref().unwrap_or("<no changeDate>"),
    )?;

    let team = conns.get("team").await.map_err(|e| e.to_string())?;
    let guarded = cluster_conns.get(czconn).await.map_err(|e| e.to_string())?;
    for (short, args, conn_status) in [
        (
            "zconn",
            vec!["get", "zconn", "team", "-n", ns, "-o", "wide"],
            team.status.clone(),
        ),
        (
            "czconn",
            vec!["get", "czconn", czconn, "-o", "wide"],
            guarded.status.clone(),
        ),
    ] {
        let rows = expect_columns(short, &kubectl(cp, &args));
        let st = conn_status.unwrap_or_default();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["URL"], env.emu.url(), "{short}");
        same(&format!("{short} READY"), &rows[0]["READY"], "True")?;
        same(
            &format!("{short} IDENTITY"),
            &rows[0]["IDENTITY"],
            st.identity.as_deref().unwrap_or("<no identity>"),
        )?;
        same(&format!("{short} REASON"), &rows[0]["REASON"], "Connected")?;
    }
    Ok(())
}

/// `kubectl` with the given arguments; panics unless it succeeds; returns stdout.
fn kubectl(cp: &ControlPlane, args: &[&str]) -> String {
    let out = cp.kubectl().args(args).output().expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The rows of a `kubectl get` table, keyed by header. Cells are cut at the header positions
/// (kubectl aligns columns), so values with spaces stay whole.
fn table(text: &str) -> (Vec<String>, Vec<BTreeMap<String, String>>) {
    let mut lines = text.lines();
    let header = lines.next().expect("header line");
    let mut starts: Vec<(usize, String)> = Vec::new();
    let mut prev = ' ';
    for (i, c) in header.char_indices() {
        if c != ' ' && prev == ' ' {
            let name: String = header[i..].chars().take_while(|c| *c != ' ').collect();
            starts.push((i, name));
        }
        prev = c;
    }
    let headers = starts.iter().map(|(_, n)| n.clone()).collect();
    let rows = lines
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            starts
                .iter()
                .enumerate()
                .map(|(n, (start, name))| {
                    let end = starts.get(n + 1).map_or(line.len(), |(s, _)| *s);
                    let cell = line.get(*start..end.min(line.len())).unwrap_or("");
                    (name.clone(), cell.trim().to_string())
                })
                .collect()
        })
        .collect();
    (headers, rows)
}

fn names(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

/// Collapses whitespace (kubectl explain wraps descriptions).
fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The description of `path` (property names) in the OrgMetadata CRD's schema.
fn crd_description(path: &[&str]) -> String {
    let crd: Value = serde_yaml::from_str(
        &std::fs::read_to_string(
            repo().join("crds/orgmetadatas.metadata.zitadel-operator.dev.yaml"),
        )
        .expect("CRD file"),
    )
    .expect("CRD YAML");
    let mut schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    for p in path {
        schema = &schema["properties"][*p];
        if schema["type"] == "array" {
            schema = &schema["items"];
        }
    }
    string(&schema["description"])
}

#[tokio::test]
async fn kubectl_explain_short_names_category_and_wide_columns() {
    let env = TestEnv::new("gitops-kubectl").await;
    let cp = env.cp;
    let ns = env.ns.as_str();
    env.put_secret(ns, "zitadel-pat", "token", TOKEN).await;
    env.apply_connection(
        "team",
        json!({"url": env.emu.url(), "credentials": {"personalAccessToken": {"name": "zitadel-pat", "key": "token"}}}),
    )
    .await;
    let czconn = format!("{ns}-kubectl");
    apply_cluster_connection(&env, &czconn).await;
    let op = env.start_operator(fast_settings());
    env.apply_org(
        "acme",
        json!({"organizationId": ACME, "connectionRef": {"name": "team"},
        "metadata": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}]}),
    )
    .await;
    env.apply_org("paused", json!({"organizationId": GLOBEX, "suspend": true, "metadata": [{"key": "a", "value": "1"}]}))
        .await;
    env.apply_org("lost", json!({"organizationId": ACME, "connectionRef": {"name": "nope"}, "metadata": [{"key": "c", "value": "3"}]}))
        .await;
    env.apply_user(
        "alice",
        json!({"userId": ALICE, "metadata": [{"key": "team", "value": "platform"}]}),
    )
    .await;
    env.wait_org("acme", "Ready", |o| {
        is_ready(o.status(), o.metadata.generation)
    })
    .await;
    env.wait_org("paused", "Suspended", |o| {
        observed(o) && cond(o.status(), RECONCILING).is_some_and(|(_, r, _)| r == "Suspended")
    })
    .await;
    env.wait_org("lost", "ConnectionNotFound", |o| {
        stalled_with(o, "ConnectionNotFound")
    })
    .await;
    env.wait_user("alice", "Ready", |o| {
        is_ready(o.status(), o.metadata.generation)
    })
    .await;
    let conns: Api<ZitadelConnection> = Api::namespaced(env.client.clone(), ns);
    wait_obj(&conns, "team", "Ready", |c| {
        c.status
            .as_ref()
            .is_some_and(|s| status::find(&s.conditions, READY).is_some_and(|r| r.status == "True"))
    })
    .await;
    let cluster_conns: Api<ClusterZitadelConnection> = Api::all(env.client.clone());
    wait_obj(&cluster_conns, &czconn, "Ready", |c| {
        c.status
            .as_ref()
            .is_some_and(|s| status::find(&s.conditions, READY).is_some_and(|r| r.status == "True"))
    })
    .await;

    // kubectl explain shows the field documentation of the CRD (from the Rust doc comments).
    let explain = words(&kubectl(cp, &["explain", "orgmetadata.spec.metadata"]));
    assert!(explain.contains("FIELD: metadata"), "{explain}");
    for path in [
        &["spec", "metadata"][..],
        &["spec", "metadata", "key"],
        &["spec", "metadata", "value"],
        &["spec", "metadata", "binaryValue"],
        &["spec", "metadata", "valueFrom"],
    ] {
        let doc = crd_description(path);
        assert!(!doc.is_empty(), "{path:?} has a description");
        assert!(
            explain.contains(&words(&doc)),
            "{path:?}: {doc:?} not in {explain}"
        );
    }

    // Short names and the category list exactly the objects of each kind.
    let org_names: BTreeSet<String> = ["acme", "lost", "paused"]
        .iter()
        .map(|n| format!("orgmetadata.metadata.zitadel-operator.dev/{n}"))
        .collect();
    let user_names = names("usermetadata.metadata.zitadel-operator.dev/alice");
    let conn_names = names("zitadelconnection.metadata.zitadel-operator.dev/team");
    assert_eq!(
        names(&kubectl(cp, &["get", "orgmd", "-n", ns, "-o", "name"])),
        org_names
    );
    assert_eq!(
        names(&kubectl(cp, &["get", "usermd", "-n", ns, "-o", "name"])),
        user_names
    );
    assert_eq!(
        names(&kubectl(cp, &["get", "zconn", "-n", ns, "-o", "name"])),
        conn_names
    );
    let cluster = names(&kubectl(cp, &["get", "czconn", "-o", "name"]));
    let guarded_name = format!("clusterzitadelconnection.metadata.zitadel-operator.dev/{czconn}");
    assert!(cluster.contains(&guarded_name), "{cluster:?}");
    let category = names(&kubectl(cp, &["get", "zitadel", "-n", ns, "-o", "name"]));
    let namespaced: BTreeSet<String> = org_names
        .iter()
        .chain(&user_names)
        .chain(&conn_names)
        .cloned()
        .collect();
    assert!(category.is_superset(&namespaced), "{category:?}");
    assert!(category.contains(&guarded_name), "{category:?}");
    assert!(
        category
            .iter()
            .all(|n| namespaced.contains(n) || n.starts_with("clusterzitadelconnection.")),
        "only this namespace's objects and cluster connections: {category:?}"
    );

    // -o wide: the README's columns, holding the status values. The values are compared with a
    // fresh read of each object; on a loaded machine a connection may be re-probed (and an object
    // re-reconciled) between the two reads, so a mismatch is read again (bounded).
    let mut last = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match wide_columns_show_status(&env, &czconn).await {
            Ok(()) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                last = e;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("{e} (previous attempt: {last})"),
        }
    }

    // kubectl wait --for=condition=Ready, as the README shows.
    let waited = kubectl(
        cp,
        &[
            "wait",
            "--for=condition=Ready",
            "orgmetadata/acme",
            "-n",
            ns,
            "--timeout=60s",
        ],
    );
    assert!(waited.contains("condition met"), "{waited}");

    op.stop().await;
    delete_cluster_connection(&env, &czconn).await;
}
