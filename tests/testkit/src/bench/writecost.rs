//! The controlled experiment behind the control-plane columns (`bench --write-costs M`): what
//! one write of each kind the operator makes (or could make instead) costs kube-apiserver + etcd,
//! measured on M objects with no operator running. Every step makes exactly one request per
//! object, `concurrency` at a time, and is measured alone: wall time, kube-apiserver and etcd CPU
//! seconds (`/proc`), the apiserver's request counters, etcd puts, watch events sent, and the
//! machine's contention while it ran. CPU per write is also given net of the control plane's idle
//! rate (measured first, with nothing running).
//!
//! The steps, in order (each needs the state the previous ones left):
//!
//! | step | request | what it stands for |
//! |---|---|---|
//! | `create` | `POST` of the object (10 keys) | the user's create, for scale |
//! | `get` | `GET` of the object | a read, for scale |
//! | `finalizer add: JSON patch` | `PATCH` (JSON patch `test` + `add`) | kube-runtime's `finalizer()`, today's finalizer write |
//! | `finalizer remove: JSON patch` | `PATCH` (`test` + `remove`) | the same on deletion |
//! | `finalizer add: merge patch` | `PATCH` (merge patch of `metadata.finalizers`) | the alternative |
//! | `status first: SSA forced` | `APPLY` to `/status`, forced | today's status write on create (new managedFields entry) |
//! | `status change: SSA forced` | `APPLY` to `/status` with a changed condition | today's status write on a change |
//! | `status no-op: SSA forced` | `APPLY` of the identical status (right after the SSA change) | a write that changes nothing |
//! | `status change: merge patch` | merge `PATCH` to `/status`, a changed condition | the alternative |
//! | `status no-op: merge patch` | merge `PATCH` of the identical status | the same as a merge patch |
//! | `Event create` | `POST` of an `events.k8s.io/v1` Event | today's Event per write |
//! | `status change: merge patch, W watchers` | as above, with W extra watches of each kind open | watch fan-out: the difference to the step without watchers, per watch event |
//! | `status change: SSA forced (again, drift check)` | the SSA change once more | how much the cost drifted over the run (apiserver heap, contention) |
//! | `control: ConfigMap create` / `change: merge patch` | the same data as a ConfigMap; an annotation change | a built-in kind (protobuf, no CRD schema) |
//! | `control: schemaless CR create` / `status change: merge patch` | the same object in a CRD with no schema (`x-kubernetes-preserve-unknown-fields`, no CEL) | what the CRD's schema, CEL rules and typed managedFields add |
//! | `control: our CRD without CEL create` / `status first: SSA forced` / `status change: SSA forced` | the same objects in a copy of our CRDs (another group) without any `x-kubernetes-validations` | what the CEL rules add, against the schema alone |
//! | `create, finalizer policy installed` | `POST` of the same objects in a second namespace with `deploy/admission/cleanup-finalizer.yaml` installed | what the MutatingAdmissionPolicy adds to a create (against `create`), instead of a finalizer write |
//! | `A/B shape: status first/change (three conditions / Ready only), SSA forced, round R` | `APPLY` to `/status` on the objects of the policy step, one half with today's status, the other with the `Ready` condition only; a first write and two changes, alternated | what the status's size adds (`Reconciling` / `Stalled` while `False`) |
//! | `A/B CEL: status change (our CRD / without CEL), SSA forced, round R` | the SSA change on our CRD and on its copy without CEL rules, alternated twice | what the CEL rules add to a status write, with drift cancelled |
//! | `A/B method: create (finalizer policy installed)`, `A/B method: status first/change, SSA forced / PUT / merge patch, round R` | fresh objects in a third namespace, split in thirds, one method per third, the order rotated each round; the `PUT` carries the resourceVersion of the writer's previous write | the status write's method: forced apply (the fallback), conditional `PUT` (the operator's write), merge patch |

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::runtime::watcher;
use serde::Serialize;
use serde_json::{Value, json};

use super::apiserver::{PhaseCost, Scraper};
use super::busy::Sampler;
use super::report::quantile;
use super::workload::{self, Object, TargetKind};
use super::{KindApis, Machine};
use crate::controlplane::ControlPlane;

/// The operator's field manager (the status writes use it, as the operator does).
pub(super) const MANAGER: &str = "zitadel-metadata-operator";
const FINALIZER: &str = "metadata.zitadel-operator.dev/cleanup";

/// Group of the schemaless control CRD.
const SCHEMALESS_GROUP: &str = "bench.zmo.dev";

/// Installs (or finds) the control CRD `benchplains.bench.zmo.dev`: namespaced, a status
/// subresource, no schema beyond `x-kubernetes-preserve-unknown-fields`; waits until it is served.
async fn schemaless_crd(client: &kube::Client) -> Result<ApiResource> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = format!("benchplains.{SCHEMALESS_GROUP}");
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {
            "group": SCHEMALESS_GROUP,
            "scope": "Namespaced",
            "names": {"plural": "benchplains", "singular": "benchplain", "kind": "BenchPlain",
                      "listKind": "BenchPlainList"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    },
                }},
            }],
        },
    }))?;
    if crds.get_opt(&name).await?.is_none() {
        crds.create(&PostParams::default(), &crd).await?;
    }
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(SCHEMALESS_GROUP, "v1", "BenchPlain"),
        "benchplains",
    );
    let probe: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let deadline = Instant::now() + Duration::from_secs(60);
    while probe.list(&Default::default()).await.is_err() {
        if Instant::now() > deadline {
            anyhow::bail!("the control CRD {name} was not served within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(resource)
}

/// Group of the copy of our CRDs without CEL rules.
const NOCEL_GROUP: &str = "nocel.bench.zmo.dev";

/// Removes every `x-kubernetes-validations` below `value`; returns how many rule lists it removed.
fn strip_cel(value: &mut Value) -> usize {
    match value {
        Value::Object(map) => {
            let mut removed = usize::from(map.remove("x-kubernetes-validations").is_some());
            for v in map.values_mut() {
                removed += strip_cel(v);
            }
            removed
        }
        Value::Array(items) => items.iter_mut().map(strip_cel).sum(),
        _ => 0,
    }
}

/// Installs (or finds) copies of the OrgMetadata and UserMetadata CRDs of `crds/` in group
/// [`NOCEL_GROUP`] with every CEL rule removed (same schema otherwise); waits until served.
/// Returns (orgs, users).
async fn nocel_crds(client: &kube::Client) -> Result<(ApiResource, ApiResource)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut out = Vec::new();
    for (plural, kind) in [
        ("orgmetadatas", "OrgMetadata"),
        ("usermetadatas", "UserMetadata"),
    ] {
        let file = dir.join(format!("{plural}.metadata.zitadel-operator.dev.yaml"));
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let mut crd: Value = serde_yaml::from_str(&text)?;
        let removed = strip_cel(&mut crd["spec"]);
        anyhow::ensure!(removed > 0, "{} has no CEL rules to remove", file.display());
        let name = format!("{plural}.{NOCEL_GROUP}");
        crd["metadata"] = json!({"name": name});
        crd["spec"]["group"] = json!(NOCEL_GROUP);
        crd["spec"]["names"]["shortNames"] = json!([]);
        crd["spec"]["names"]["categories"] = json!([]);
        let crd: CustomResourceDefinition = serde_json::from_value(crd)?;
        if crds.get_opt(&name).await?.is_none() {
            crds.create(&PostParams::default(), &crd).await?;
        }
        let version = crd
            .spec
            .versions
            .first()
            .map_or("v1alpha1", |v| v.name.as_str());
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(NOCEL_GROUP, version, kind),
            plural,
        );
        let probe: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let deadline = Instant::now() + Duration::from_secs(60);
        while probe.list(&Default::default()).await.is_err() {
            if Instant::now() > deadline {
                anyhow::bail!("the control CRD {name} was not served within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        out.push(resource);
    }
    let users = out.pop().context("users CRD")?;
    let orgs = out.pop().context("orgs CRD")?;
    Ok((orgs, users))
}

/// What the experiment runs.
#[derive(Clone, Debug)]
pub struct WriteCostOptions {
    /// Objects (half OrgMetadata, half UserMetadata); one write of each kind per object.
    pub objects: usize,
    /// Keys per object.
    pub keys: usize,
    /// Requests in flight at once (the operator: `--max-concurrent-reconciles` × 2 kinds).
    pub concurrency: usize,
    /// Extra watches of each kind open during the fan-out step.
    pub watchers: usize,
    /// Seconds of idle measured first (the control plane's background rate).
    pub idle: Duration,
    /// Where the results go.
    pub out_dir: PathBuf,
    /// The command line, for the report.
    pub command: String,
}

/// One step of the experiment.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WriteCostRow {
    /// Short name.
    pub step: String,
    /// Requests made by the experiment in the step (one per object).
    pub writes: usize,
    /// Failed requests.
    pub failures: usize,
    /// Client-side latency, mean ms.
    pub client_mean_ms: f64,
    /// Client-side latency, 99th percentile ms.
    pub client_p99_ms: f64,
    /// Requests per second achieved.
    pub per_s: f64,
    /// kube-apiserver + etcd CPU per request, µs, less the idle rate × wall time.
    pub net_cpu_us_per_write: f64,
    /// Of which kube-apiserver (net of its idle rate).
    pub net_apiserver_us_per_write: f64,
    /// Of which etcd (net of its idle rate).
    pub net_etcd_us_per_write: f64,
    /// `net_cpu_us_per_write` ÷ that of `status change: SSA forced`.
    pub ratio_to_ssa_change: f64,
    /// Watch events sent per request.
    pub watch_events_per_write: f64,
    /// Everything measured (counters, contention).
    pub cost: PhaseCost,
}

/// The experiment's results.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WriteCostReport {
    /// UTC start time, RFC 3339.
    pub date: String,
    /// The command line.
    pub command: String,
    /// The machine.
    pub machine: Machine,
    /// Objects.
    pub objects: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Extra watches per kind in the fan-out step.
    pub watchers: usize,
    /// kube-apiserver CPU seconds per second while idle.
    pub idle_apiserver_cpu_per_s: f64,
    /// etcd CPU seconds per second while idle.
    pub idle_etcd_cpu_per_s: f64,
    /// One row per step.
    pub rows: Vec<WriteCostRow>,
}

/// Which conditions a status carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// `Ready`, `Reconciling` and `Stalled` (the last two `False`): the operator's status today.
    Triplet,
    /// `Ready` only (kstatus reads an absent `Reconciling` / `Stalled` as `False`).
    ReadyOnly,
}

pub(super) fn status_body(o: &Object, generation: i64, message: &str, at: &str) -> Value {
    shaped_status_body(o, generation, message, at, Shape::Triplet)
}

fn shaped_status_body(o: &Object, generation: i64, message: &str, at: &str, shape: Shape) -> Value {
    let keys: Vec<&str> = o.entries.iter().map(|(k, _)| k.as_str()).collect();
    let condition = |t: &str, s: &str, reason: &str, msg: &str| {
        json!({"type": t, "status": s, "reason": reason, "message": msg,
               "lastTransitionTime": at, "observedGeneration": generation})
    };
    let mut status = json!({
        "observedGeneration": generation,
        "sequence": "42",
        "changeDate": at,
        "resourceOwner": o.org_id,
        "organizationId": o.org_id,
        "managedKeys": keys,
        "managedKeyCount": keys.len(),
        "conditions": [
            condition("Ready", "True", "Synced", message),
            condition("Reconciling", "False", "Synced", message),
            condition("Stalled", "False", "Synced", message),
        ],
    });
    if shape == Shape::ReadyOnly
        && let Some(conditions) = status["conditions"].as_array_mut()
    {
        conditions.truncate(1);
    }
    if o.kind == TargetKind::User {
        status["userId"] = json!(o.user_id);
    }
    status
}

/// Runs `f` once per object, `concurrency` at a time; returns (client latencies ms, failures).
async fn each<'a, F, Fut>(objects: &'a [Object], concurrency: usize, f: F) -> (Vec<f64>, usize)
where
    F: Fn(usize, &'a Object) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let results: Vec<(f64, bool)> = futures::stream::iter(objects.iter().enumerate())
        .map(|(i, o)| {
            let fut = f(i, o);
            async move {
                let t = Instant::now();
                let ok = fut.await.is_ok();
                (t.elapsed().as_secs_f64() * 1000.0, ok)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let failures = results.iter().filter(|(_, ok)| !ok).count();
    (results.into_iter().map(|(ms, _)| ms).collect(), failures)
}

/// The `apiVersion` of our metadata CRDs.
pub(super) const CRD_VERSION: &str = "metadata.zitadel-operator.dev/v1alpha1";

/// One measured step: name, cost, client latencies (ms), failures.
type Measured = (String, PhaseCost, Vec<f64>, usize);

/// Measures the steps one after another, each alone, from snapshots taken around it.
struct Steps<'o> {
    scraper: Scraper,
    own: Vec<u32>,
    objects: &'o [Object],
    concurrency: usize,
    measured: Vec<Measured>,
}

impl<'o> Steps<'o> {
    /// Runs `f` once per object as the step `name` and records what it cost.
    async fn step<F, Fut>(&mut self, name: impl Into<String>, f: F) -> Result<()>
    where
        F: Fn(usize, &'o Object) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let name: String = name.into();
        let before = self.scraper.snapshot().await?;
        let sampler = Sampler::start(self.own.clone(), Duration::from_millis(500));
        let (lat, failures) = each(self.objects, self.concurrency, f).await;
        let contention = sampler.finish().await;
        let after = self.scraper.snapshot().await?;
        let mut cost = PhaseCost::between(&name, self.objects.len(), &before, &after);
        cost.contention = Some(contention);
        eprintln!(
            "bench: write costs: {name}: {:.1} s, kube-apiserver {:.2} + etcd {:.2} CPU-s, {failures} failed",
            cost.wall_s, cost.apiserver_cpu_s, cost.etcd_cpu_s
        );
        self.measured.push((name, cost, lat, failures));
        // Let watch deliveries and etcd compaction of the step settle.
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(())
    }
}

pub(super) fn kind_name(o: &Object) -> &'static str {
    match o.kind {
        TargetKind::Org => "OrgMetadata",
        TargetKind::User => "UserMetadata",
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The operator's status write: a forced server-side apply as its field manager.
fn ssa() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// The body of a server-side apply of `o`'s status.
fn applied_status(api_version: &str, o: &Object, message: &str, at: &str) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": kind_name(o),
        "status": status_body(o, 1, message, at),
    })
}

/// The body of a merge patch of `o`'s status.
fn merged_status(o: &Object, message: &str, at: &str) -> Value {
    json!({"status": status_body(o, 1, message, at)})
}

/// A status merge patch of `o` (the alternative to the operator's server-side apply).
async fn merge_status(api: Api<DynamicObject>, o: &Object, message: &str, at: &str) -> Result<()> {
    let body = merged_status(o, message, at);
    patch_status(api, &o.name, PatchParams::default(), Patch::Merge(body)).await
}

async fn create(api: Api<DynamicObject>, obj: serde_json::Result<DynamicObject>) -> Result<()> {
    api.create(&PostParams::default(), &obj?).await?;
    Ok(())
}

async fn patch<K>(api: Api<K>, name: &str, params: PatchParams, patch: Patch<Value>) -> Result<()>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(name, &params, &patch).await?;
    Ok(())
}

async fn patch_status(
    api: Api<DynamicObject>,
    name: &str,
    params: PatchParams,
    patch: Patch<Value>,
) -> Result<()> {
    api.patch_status(name, &params, &patch).await?;
    Ok(())
}

async fn json_patch(api: Api<DynamicObject>, name: &str, ops: Value) -> Result<()> {
    let ops = Patch::Json::<()>(serde_json::from_value(ops)?);
    api.patch(name, &PatchParams::default(), &ops).await?;
    Ok(())
}

/// Runs the experiment on `cp` (CRDs installed). Prints progress to stderr.
pub async fn run(cp: &ControlPlane, opts: &WriteCostOptions) -> Result<WriteCostReport> {
    let client = cp.client().await?;
    let ns = cp.create_namespace("bench-writecost").await?;
    let apis = KindApis::ours(&client, &ns);
    let objects = workload::objects(opts.objects, opts.keys);
    let scraper = Scraper::new(cp).await?;
    let mut report = WriteCostReport {
        date: now(),
        command: opts.command.clone(),
        machine: Machine::at_start(),
        objects: objects.len(),
        concurrency: opts.concurrency,
        watchers: opts.watchers,
        ..WriteCostReport::default()
    };
    measure_idle(&scraper, opts.idle, &mut report).await;

    let mut steps = Steps {
        scraper,
        own: cp.process_ids(),
        objects: &objects,
        concurrency: opts.concurrency,
        measured: Vec::new(),
    };
    finalizer_steps(&mut steps, &apis, &ns).await?;
    status_steps(&mut steps, &apis).await?;
    event_step(&mut steps, &client, &ns).await?;
    fanout_steps(&mut steps, &apis, opts.watchers).await?;
    control_steps(&mut steps, &client, &ns).await?;
    let nocel = nocel_steps(&mut steps, &client, &ns).await?;
    let fresh = policy_step(&mut steps, cp, &client).await?;
    ab_steps(&mut steps, &objects, &apis, &nocel, &fresh).await?;
    method_steps(&mut steps, &objects, cp, &client).await?;

    report.rows = rows(
        steps.measured,
        report.idle_apiserver_cpu_per_s,
        report.idle_etcd_cpu_per_s,
    );
    report.machine.finish();
    Ok(report)
}

/// The control plane's own background rate, measured with nothing running.
async fn measure_idle(scraper: &Scraper, idle: Duration, report: &mut WriteCostReport) {
    let (a0, e0) = scraper.cpu();
    let idle_start = Instant::now();
    tokio::time::sleep(idle).await;
    let (a1, e1) = scraper.cpu();
    let idle_s = idle_start.elapsed().as_secs_f64();
    report.idle_apiserver_cpu_per_s = (a1 - a0) / idle_s;
    report.idle_etcd_cpu_per_s = (e1 - e0) / idle_s;
    eprintln!(
        "bench: write costs: idle kube-apiserver {:.3} CPU-s/s, etcd {:.3} CPU-s/s",
        report.idle_apiserver_cpu_per_s, report.idle_etcd_cpu_per_s
    );
}

/// `create`, `get` and the finalizer writes (JSON patch add/remove, merge patch add).
async fn finalizer_steps(steps: &mut Steps<'_>, apis: &KindApis, ns: &str) -> Result<()> {
    steps
        .step("create", |_, o| {
            create(apis.of(o), serde_json::from_value(o.manifest(ns)))
        })
        .await?;
    steps
        .step("get", |_, o| {
            let api = apis.of(o);
            async move {
                api.get(&o.name).await?;
                Ok(())
            }
        })
        .await?;
    steps
        .step("finalizer add: JSON patch", |_, o| {
            let ops = json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
            ]);
            json_patch(apis.of(o), &o.name, ops)
        })
        .await?;
    steps
        .step("finalizer remove: JSON patch", |_, o| {
            let ops = json!([
                {"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
                {"op": "remove", "path": "/metadata/finalizers/0"},
            ]);
            json_patch(apis.of(o), &o.name, ops)
        })
        .await?;
    steps
        .step("finalizer add: merge patch", |_, o| {
            let body = Patch::Merge(json!({"metadata": {"finalizers": [FINALIZER]}}));
            patch(apis.of(o), &o.name, PatchParams::default(), body)
        })
        .await
}

/// The status writes: SSA first/change/no-op, merge patch change/no-op.
async fn status_steps(steps: &mut Steps<'_>, apis: &KindApis) -> Result<()> {
    let t1 = now();
    steps
        .step("status first: SSA forced", |_, o| {
            let body = applied_status(CRD_VERSION, o, "10 keys in sync", &t1);
            patch_status(apis.of(o), &o.name, ssa(), Patch::Apply(body))
        })
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t2 = now();
    for name in ["status change: SSA forced", "status no-op: SSA forced"] {
        steps
            .step(name, |_, o| {
                let body = applied_status(CRD_VERSION, o, "10 keys in sync (round 2)", &t2);
                patch_status(apis.of(o), &o.name, ssa(), Patch::Apply(body))
            })
            .await?;
        if name == "status change: SSA forced" {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let t3 = now();
    for name in ["status change: merge patch", "status no-op: merge patch"] {
        steps
            .step(name, |_, o| {
                merge_status(apis.of(o), o, "10 keys in sync (round 3)", &t3)
            })
            .await?;
    }
    Ok(())
}

/// An `events.k8s.io/v1` Event per object, as the operator publishes one per write.
async fn event_step(steps: &mut Steps<'_>, client: &kube::Client, ns: &str) -> Result<()> {
    let events: Api<KubeEvent> = Api::namespaced(client.clone(), ns);
    steps.step("Event create", |i, o: &Object| {
        let events = events.clone();
        let event = json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": format!("{}.{:x}", o.name, i), "namespace": ns},
            "eventTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "reportingController": MANAGER,
            "reportingInstance": MANAGER,
            "action": "BulkSet",
            "reason": "MetadataSet",
            "type": "Normal",
            "note": format!("Set 10 key(s) on organization {}: key-0, key-1, key-2, key-3, key-4, key-5, key-6, key-7, key-8, key-9", o.org_id),
            "regarding": {"apiVersion": CRD_VERSION, "kind": kind_name(o),
                          "name": o.name, "namespace": ns},
        });
        async move {
            let event: KubeEvent = serde_json::from_value(event)?;
            events.create(&PostParams::default(), &event).await?;
            Ok(())
        }
    })
    .await
}

/// Watch fan-out: the same status change with extra watches of both kinds open; then the
/// first status step again: how far the control plane's cost drifted over the run.
async fn fanout_steps(steps: &mut Steps<'_>, apis: &KindApis, watchers: usize) -> Result<()> {
    let mut watches = Vec::new();
    for _ in 0..watchers {
        for api in [apis.orgs.clone(), apis.users.clone()] {
            watches.push(tokio::spawn(async move {
                let stream = watcher(api, watcher::Config::default());
                let _ = stream.try_for_each(|_| async { Ok(()) }).await;
            }));
        }
    }
    // Let the watches list and settle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let t4 = now();
    steps
        .step(
            format!("status change: merge patch, {watchers} watchers"),
            |_, o| merge_status(apis.of(o), o, "10 keys in sync (round 4)", &t4),
        )
        .await?;
    for w in watches {
        w.abort();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t5 = now();
    steps
        .step("status change: SSA forced (again, drift check)", |_, o| {
            let body = applied_status(CRD_VERSION, o, "10 keys in sync (round 5)", &t5);
            patch_status(apis.of(o), &o.name, ssa(), Patch::Apply(body))
        })
        .await
}

/// Controls: the same data in a built-in kind (protobuf, no CRD schema), and in a custom
/// resource whose CRD has no schema to validate (x-kubernetes-preserve-unknown-fields, no CEL).
async fn control_steps(steps: &mut Steps<'_>, client: &kube::Client, ns: &str) -> Result<()> {
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    steps
        .step("control: ConfigMap create", |_, o: &Object| {
            let api = config_maps.clone();
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(o.name.clone()),
                    ..ObjectMeta::default()
                },
                data: Some(o.entries.iter().cloned().collect()),
                ..ConfigMap::default()
            };
            async move {
                api.create(&PostParams::default(), &cm).await?;
                Ok(())
            }
        })
        .await?;
    let t6 = now();
    steps
        .step("control: ConfigMap change: merge patch", |_, o| {
            let body = json!({"metadata": {"annotations": {"bench/synced": t6}}});
            patch(
                config_maps.clone(),
                &o.name,
                PatchParams::default(),
                Patch::Merge(body),
            )
        })
        .await?;
    let plains = schemaless_crd(client).await?;
    let plains: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &plains);
    steps
        .step("control: schemaless CR create", |_, o| {
            let mut manifest = o.manifest(ns);
            manifest["apiVersion"] = json!(format!("{SCHEMALESS_GROUP}/v1"));
            manifest["kind"] = json!("BenchPlain");
            create(plains.clone(), serde_json::from_value(manifest))
        })
        .await?;
    let t7 = now();
    steps
        .step(
            "control: schemaless CR status change: merge patch",
            |_, o| merge_status(plains.clone(), o, "10 keys in sync (round 7)", &t7),
        )
        .await
}

/// Our CRDs without their CEL rules: what CEL adds to a create and to the status writes.
async fn nocel_steps(steps: &mut Steps<'_>, client: &kube::Client, ns: &str) -> Result<KindApis> {
    let (nocel_orgs, nocel_users) = nocel_crds(client).await?;
    let nocel = KindApis::new(client, ns, &nocel_orgs, &nocel_users);
    let nocel_version = format!("{NOCEL_GROUP}/v1alpha1");
    steps
        .step("control: our CRD without CEL create", |_, o| {
            let mut manifest = o.manifest(ns);
            manifest["apiVersion"] = json!(nocel_version);
            create(nocel.of(o), serde_json::from_value(manifest))
        })
        .await?;
    let t8 = now();
    steps
        .step(
            "control: our CRD without CEL status first: SSA forced",
            |_, o| {
                let body = applied_status(&nocel_version, o, "10 keys in sync", &t8);
                patch_status(nocel.of(o), &o.name, ssa(), Patch::Apply(body))
            },
        )
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t9 = now();
    steps
        .step(
            "control: our CRD without CEL status change: SSA forced",
            |_, o| {
                let body = applied_status(&nocel_version, o, "10 keys in sync (round 9)", &t9);
                patch_status(nocel.of(o), &o.name, ssa(), Patch::Apply(body))
            },
        )
        .await?;
    Ok(nocel)
}

/// The same creates with the MutatingAdmissionPolicy that adds the cleanup finalizer. Returns
/// the APIs of the new objects (in a namespace of their own, no status yet).
async fn policy_step(
    steps: &mut Steps<'_>,
    cp: &ControlPlane,
    client: &kube::Client,
) -> Result<KindApis> {
    let policy =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/admission/cleanup-finalizer.yaml");
    cp.install_finalizer_policy(&policy).await?;
    let ns2 = cp.create_namespace("bench-writecost-map").await?;
    let apis2 = KindApis::ours(client, &ns2);
    let failed_policy = std::sync::atomic::AtomicUsize::new(0);
    steps
        .step("create, finalizer policy installed", |_, o| {
            let api = apis2.of(o);
            let obj: Result<DynamicObject, _> = serde_json::from_value(o.manifest(&ns2));
            let failed_policy = &failed_policy;
            async move {
                let created = api.create(&PostParams::default(), &obj?).await?;
                if !created
                    .metadata
                    .finalizers
                    .is_some_and(|f| f.iter().any(|f| f == FINALIZER))
                {
                    failed_policy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(())
            }
        })
        .await?;
    let failed_policy = failed_policy.into_inner();
    anyhow::ensure!(
        failed_policy == 0,
        "{failed_policy} objects were created without the finalizer although the policy was installed"
    );
    Ok(apis2)
}

/// A/B steps, alternated so that the control plane's drift over the run (its heap, etcd's size)
/// falls on both sides alike:
///
/// - **status shape**: the objects just created with the finalizer policy (no status yet) split
///   in two halves (each half organizations and users alike); half A gets today's status (three
///   conditions), half B the same with the `Ready` condition only: a first write each, then two
///   changes each, A B A B.
/// - **CEL**: status changes on our CRD and on its copy without CEL rules, alternated twice.
async fn ab_steps<'o>(
    steps: &mut Steps<'o>,
    objects: &'o [Object],
    ours: &KindApis,
    nocel: &KindApis,
    fresh: &KindApis,
) -> Result<()> {
    let half = objects.len() / 2;
    let (a, b) = objects.split_at(half);
    let halves = [
        (a, Shape::Triplet, "three conditions"),
        (b, Shape::ReadyOnly, "Ready only"),
    ];
    for round in 0..3 {
        let at = now();
        let what = if round == 0 { "first" } else { "change" };
        for (part, shape, label) in halves {
            steps.objects = part;
            let message = format!("10 keys in sync (shape round {round})");
            steps
                .step(
                    format!("A/B shape: status {what} ({label}), SSA forced, round {round}"),
                    |_, o| {
                        let body = json!({
                            "apiVersion": CRD_VERSION,
                            "kind": kind_name(o),
                            "status": shaped_status_body(o, 1, &message, &at, shape),
                        });
                        patch_status(fresh.of(o), &o.name, ssa(), Patch::Apply(body))
                    },
                )
                .await?;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    steps.objects = objects;
    let nocel_version = format!("{NOCEL_GROUP}/v1alpha1");
    for round in 0..2 {
        let at = now();
        for (apis, version, label) in [
            (ours, CRD_VERSION, "our CRD"),
            (nocel, nocel_version.as_str(), "without CEL"),
        ] {
            let message = format!("10 keys in sync (CEL round {round})");
            steps
                .step(
                    format!("A/B CEL: status change ({label}), SSA forced, round {round}"),
                    |_, o| {
                        let body = applied_status(version, o, &message, &at);
                        patch_status(apis.of(o), &o.name, ssa(), Patch::Apply(body))
                    },
                )
                .await?;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

/// The last resourceVersion seen per object name (the `PUT` steps).
type Versions = std::sync::Mutex<std::collections::HashMap<String, String>>;

/// Records `version` (when the answer had one) as the last resourceVersion seen of `name`.
fn remember(versions: &Versions, name: &str, version: Option<String>) -> Result<()> {
    if let Some(v) = version {
        versions
            .lock()
            .map_err(|_| anyhow::anyhow!("the resourceVersion map is poisoned"))?
            .insert(name.to_owned(), v);
    }
    Ok(())
}

/// How a status write is sent.
#[derive(Clone, Copy, Debug)]
enum Method {
    /// Server-side apply, forced, as the operator's field manager (today).
    Ssa,
    /// `PUT` of `/status` with a body of `apiVersion`, `kind`, name, namespace and the status (the
    /// status strategy keeps the stored spec and metadata), as the operator's field manager, no
    /// `resourceVersion` (unconditional).
    Put,
    /// Merge patch of `/status` with the whole status.
    Merge,
}

impl Method {
    fn label(self) -> &'static str {
        match self {
            Method::Ssa => "SSA forced",
            Method::Put => "PUT",
            Method::Merge => "merge patch",
        }
    }

    async fn write(
        self,
        api: Api<DynamicObject>,
        o: &Object,
        ns: &str,
        (message, at): (&str, &str),
        versions: &Versions,
    ) -> Result<()> {
        match self {
            Method::Ssa => {
                let body = applied_status(CRD_VERSION, o, message, at);
                patch_status(api, &o.name, ssa(), Patch::Apply(body)).await
            }
            Method::Merge => merge_status(api, o, message, at).await,
            Method::Put => {
                // A custom resource takes no unconditional update: the body names the
                // resourceVersion the writer last saw (here: of its own last write; the operator
                // would take its cache's).
                let version = versions
                    .lock()
                    .map_err(|_| anyhow::anyhow!("the resourceVersion map is poisoned"))?
                    .get(&o.name)
                    .cloned();
                let body = json!({
                    "apiVersion": CRD_VERSION,
                    "kind": kind_name(o),
                    "metadata": {"name": o.name, "namespace": ns, "resourceVersion": version},
                    "status": status_body(o, 1, message, at),
                });
                let params = PostParams {
                    field_manager: Some(MANAGER.into()),
                    ..PostParams::default()
                };
                let written = api
                    .replace_subresource("status", &o.name, &params, &body)
                    .await?;
                remember(versions, &o.name, written.metadata.resource_version)
            }
        }
    }
}

/// A/B/C of the status write's method on fresh objects (created with the finalizer policy, in a
/// namespace of their own): the objects split in thirds (organizations and users alike in each),
/// one third per method; a first write each, then two changes, the order of the thirds rotated
/// each round so that drift over the run falls on every method alike.
async fn method_steps<'o>(
    steps: &mut Steps<'o>,
    objects: &'o [Object],
    cp: &ControlPlane,
    client: &kube::Client,
) -> Result<()> {
    let ns = cp.create_namespace("bench-writecost-method").await?;
    let apis = KindApis::ours(client, &ns);
    steps.objects = objects;
    let versions = Versions::default();
    steps
        .step("A/B method: create (finalizer policy installed)", |_, o| {
            let api = apis.of(o);
            let obj: Result<DynamicObject, _> = serde_json::from_value(o.manifest(&ns));
            let versions = &versions;
            async move {
                let created = api.create(&PostParams::default(), &obj?).await?;
                remember(versions, &o.name, created.metadata.resource_version)
            }
        })
        .await?;
    // Thirds of an even size keep organizations and users half and half.
    let third = (objects.len() / 3) & !1;
    let parts = [
        (&objects[..third], Method::Ssa),
        (&objects[third..2 * third], Method::Put),
        (&objects[2 * third..], Method::Merge),
    ];
    for round in 0..3 {
        let at = now();
        let what = if round == 0 { "first" } else { "change" };
        let message = format!("10 keys in sync (method round {round})");
        for k in 0..parts.len() {
            let (part, method) = parts[(k + round) % parts.len()];
            steps.objects = part;
            steps
                .step(
                    format!(
                        "A/B method: status {what}, {}, round {round}",
                        method.label()
                    ),
                    |_, o| method.write(apis.of(o), o, &ns, (&message, &at), &versions),
                )
                .await?;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    steps.objects = objects;
    Ok(())
}

/// The report's rows: per-write figures net of the idle rates (`ia`, `ie`: CPU-s/s), and the
/// ratio to `status change: SSA forced`.
fn rows(measured: Vec<Measured>, ia: f64, ie: f64) -> Vec<WriteCostRow> {
    let mut rows: Vec<WriteCostRow> = measured
        .into_iter()
        .map(|(step, cost, mut lat, failures)| {
            let writes = lat.len();
            let w = writes.max(1) as f64;
            let net_a = (cost.apiserver_cpu_s - ia * cost.wall_s).max(0.0) * 1e6 / w;
            let net_e = (cost.etcd_cpu_s - ie * cost.wall_s).max(0.0) * 1e6 / w;
            let mean = lat.iter().sum::<f64>() / w;
            WriteCostRow {
                step,
                writes,
                failures,
                client_mean_ms: mean,
                client_p99_ms: quantile(&mut lat, 0.99),
                per_s: writes as f64 / cost.wall_s.max(1e-6),
                net_cpu_us_per_write: net_a + net_e,
                net_apiserver_us_per_write: net_a,
                net_etcd_us_per_write: net_e,
                ratio_to_ssa_change: 0.0,
                watch_events_per_write: cost.watch_events_sent as f64 / w,
                cost,
            }
        })
        .collect();
    let reference = rows
        .iter()
        .find(|r| r.step == "status change: SSA forced")
        .map_or(0.0, |r| r.net_cpu_us_per_write);
    for r in &mut rows {
        r.ratio_to_ssa_change = if reference > 0.0 {
            r.net_cpu_us_per_write / reference
        } else {
            0.0
        };
    }
    rows
}

impl WriteCostReport {
    /// Markdown: one table of the steps.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} objects, {} requests in flight, idle control plane {:.3} (kube-apiserver) + {:.3} (etcd) CPU-s/s\n",
            self.objects, self.concurrency, self.idle_apiserver_cpu_per_s, self.idle_etcd_cpu_per_s
        );
        let _ = writeln!(
            out,
            "| step | requests | failed | wall s | per s | client mean / p99 ms | apiserver CPU s | etcd CPU s | net CPU µs per request (apiserver + etcd) | ÷ SSA status change | etcd puts | watch events per request | machine busy mean / peak | others CPU s |"
        );
        let _ = writeln!(
            out,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in &self.rows {
            let c = &r.cost;
            let (busy, other) = c.contention.as_ref().map_or((String::from("-"), 0.0), |k| {
                (
                    format!(
                        "{:.0}% / {:.0}%",
                        k.machine_busy_mean_pct, k.machine_busy_peak_pct
                    ),
                    k.other_cpu_s,
                )
            });
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1} | {:.0} | {:.1} / {:.1} | {:.2} | {:.2} | {:.0} ({:.0} + {:.0}) | {:.2} | {} | {:.2} | {} | {:.1} |",
                r.step,
                r.writes,
                r.failures,
                c.wall_s,
                r.per_s,
                r.client_mean_ms,
                r.client_p99_ms,
                c.apiserver_cpu_s,
                c.etcd_cpu_s,
                r.net_cpu_us_per_write,
                r.net_apiserver_us_per_write,
                r.net_etcd_us_per_write,
                r.ratio_to_ssa_change,
                c.etcd_puts,
                r.watch_events_per_write,
                busy,
                other,
            );
        }
        out
    }

    /// CSV: one row per step.
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "step,requests,failures,wall_s,per_s,client_mean_ms,client_p99_ms,apiserver_cpu_s,etcd_cpu_s,net_cpu_us_per_request,net_apiserver_us,net_etcd_us,ratio_to_ssa_change,etcd_puts,watch_events,machine_busy_mean_pct,machine_busy_peak_pct,other_cpu_s\n",
        );
        for r in &self.rows {
            let c = &r.cost;
            let k = c.contention.clone().unwrap_or_default();
            let _ = writeln!(
                out,
                "{},{},{},{:.3},{:.1},{:.2},{:.2},{:.3},{:.3},{:.1},{:.1},{:.1},{:.3},{},{},{:.1},{:.1},{:.2}",
                r.step.replace(',', ";"),
                r.writes,
                r.failures,
                c.wall_s,
                r.per_s,
                r.client_mean_ms,
                r.client_p99_ms,
                c.apiserver_cpu_s,
                c.etcd_cpu_s,
                r.net_cpu_us_per_write,
                r.net_apiserver_us_per_write,
                r.net_etcd_us_per_write,
                r.ratio_to_ssa_change,
                c.etcd_puts,
                c.watch_events_sent,
                k.machine_busy_mean_pct,
                k.machine_busy_peak_pct,
                k.other_cpu_s,
            );
        }
        out
    }

    /// Writes `write-costs.{json,csv,md}` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        super::report::write_files(
            dir,
            "write-costs",
            serde_json::to_string_pretty(self)?,
            self.csv(),
            format!("{} — `{}`\n\n{}", self.date, self.command, self.markdown()),
        )
    }
}
