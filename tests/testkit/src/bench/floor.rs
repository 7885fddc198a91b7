//! The control plane's floor (`bench --floor`): how fast *any* operator that reports each
//! object's status could converge the same N objects on this machine.
//!
//! The same objects are created the same way as in the operator's run (same watches of the
//! bench, same create concurrency, the finalizer policy as configured) in a namespace of their
//! own, but no operator runs: a stand-in inside the bench watches both kinds and answers each new
//! object with exactly the operator's Kubernetes work for a created object — one conditional
//! `PUT` of its `/status` (the operator's status shape: `Ready`, `Reconciling`, `Stalled`, the
//! managed keys, the write's details) at the resourceVersion the watch delivered — and nothing
//! else: no ZITADEL call, no planning, no caches. Its time to "all Ready" is therefore a lower
//! bound for every operator that keeps the status promise on this control plane, and
//! per-key baseline ÷ floor is the best convergence ratio such an operator can reach here.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::events::v1::Event as KubeEvent;
use kube::api::{Api, DynamicObject, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde::Serialize;
use serde_json::json;

use super::apiserver::{PhaseCost, Scraper};
use super::tracker::Tracker;
use super::workload::{Object, TargetKind};
use super::writecost::{CRD_VERSION, MANAGER, kind_name, status_body};
use super::{KindApis, Options, create_all, others_cpu, readiness, start_watches};
use crate::controlplane::ControlPlane;

/// The floor at one N.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FloorRun {
    /// Stand-in status writers per kind (the operator's concurrency per kind).
    pub concurrency: usize,
    /// First create to last object seen Ready, seconds.
    pub converge_s: f64,
    /// First create to last create acknowledged, seconds.
    pub create_s: f64,
    /// Apply → Ready, median, ms.
    pub p50_ms: f64,
    /// Apply → Ready, 99th percentile, ms.
    pub p99_ms: f64,
    /// Status `PUT`s sent (one per object, plus retries after a conflict).
    pub status_puts: usize,
    /// Of them, refused with 409 and sent again at the newer resourceVersion.
    pub conflicts: usize,
    /// kube-apiserver + etcd over create + converge.
    pub control_plane: PhaseCost,
    /// CPU seconds of the bench process (its watches, the creates and the stand-in).
    pub bench_cpu_s: f64,
    /// The machine while the floor ran (other processes: contention).
    pub contention: super::busy::Contention,
}

/// Runs the floor for `objects` (see the module docs).
pub(super) async fn run(
    cp: &ControlPlane,
    opts: &Options,
    objects: &[Object],
    concurrency: usize,
) -> Result<FloorRun> {
    let n = objects.len();
    let client = cp.client().await?;
    let ns = cp.create_namespace(&format!("floor-{n}")).await?;
    let apis = KindApis::ours(&client, &ns);
    let events: Api<KubeEvent> = Api::namespaced(client.clone(), &ns);
    let names: Vec<String> = objects.iter().map(|o| o.name.clone()).collect();
    let tracker = Tracker::new(&names);
    let watches = start_watches(&tracker, &apis, events).await?;

    let by_name: Arc<HashMap<String, Object>> = Arc::new(
        objects
            .iter()
            .map(|o| (o.name.clone(), o.clone()))
            .collect(),
    );
    let count = |kind: TargetKind| objects.iter().filter(|o| o.kind == kind).count();
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut stand_ins = Vec::new();
    for (api, expected) in [
        (apis.orgs.clone(), count(TargetKind::Org)),
        (apis.users.clone(), count(TargetKind::User)),
    ] {
        let by_name = by_name.clone();
        let (ns, at) = (ns.clone(), at.clone());
        stand_ins.push(tokio::spawn(async move {
            stand_in(api, &ns, by_name, expected, concurrency, &at).await
        }));
    }

    let scraper = Scraper::new(cp).await?;
    let snap_start = scraper.snapshot().await?;
    let bench_start = others_cpu(cp).1;
    let sampler = super::busy::Sampler::start(cp.process_ids(), Duration::from_secs(1));
    let t0 = Instant::now();
    create_all(objects, &apis, &ns, &tracker, opts).await?;
    let create_s = t0.elapsed().as_secs_f64();
    eprintln!("bench: N={n}: floor: {n} objects created in {create_s:.1} s");

    let mut puts = (0, 0);
    for task in stand_ins {
        let (p, c) = tokio::time::timeout(opts.converge_timeout, task)
            .await
            .context("the floor's stand-in did not write every status in time")?
            .context("the floor's stand-in panicked")??;
        puts = (puts.0 + p, puts.1 + c);
    }
    // The PUTs are acknowledged; wait for the bench's watch to see them, as for the operator.
    let deadline = Instant::now() + Duration::from_secs(60);
    while tracker.ready_count() < n {
        if Instant::now() > deadline {
            bail!(
                "floor: {} of {n} objects seen Ready 60 s after their status PUTs",
                tracker.ready_count()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let snap_end = scraper.snapshot().await?;
    let bench_cpu_s = others_cpu(cp).1 - bench_start;
    let contention = sampler.finish().await;
    for w in watches {
        w.abort();
    }
    let (ready_at, [p50, p99, _]) = readiness(&tracker);
    let last = ready_at.iter().copied().max().unwrap_or(t0);
    let converge_s = last.duration_since(t0).as_secs_f64();
    eprintln!(
        "bench: N={n}: floor: all Ready in {converge_s:.1} s ({} status PUTs, {} after a conflict)",
        puts.0, puts.1
    );
    Ok(FloorRun {
        concurrency,
        converge_s,
        create_s,
        p50_ms: p50,
        p99_ms: p99,
        status_puts: puts.0,
        conflicts: puts.1,
        control_plane: PhaseCost::between("floor: create+converge", n, &snap_start, &snap_end),
        bench_cpu_s,
        contention,
    })
}

/// Watches one kind and `PUT`s the status of each new object once, `concurrency` at a time,
/// until `expected` objects have theirs. Returns (PUTs sent, of them after a conflict).
async fn stand_in(
    api: Api<DynamicObject>,
    ns: &str,
    by_name: Arc<HashMap<String, Object>>,
    expected: usize,
    concurrency: usize,
    at: &str,
) -> Result<(usize, usize)> {
    let mut seen = HashSet::new();
    let fresh = move |obj: DynamicObject| {
        let name = obj.metadata.name.clone().unwrap_or_default();
        // New: no condition yet (the CRD defaults `status.observedGeneration` on create).
        let reported = obj.data.pointer("/status/conditions").is_some();
        let new = !reported && seen.insert(name);
        futures::future::ready(Ok(new.then_some(obj)))
    };
    let written: Vec<(usize, usize)> = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .map_err(anyhow::Error::from)
        .try_filter_map(fresh)
        .map_ok(|obj| put_status(&api, ns, &by_name, obj, at))
        .try_buffer_unordered(concurrency.max(1))
        .take(expected)
        .try_collect()
        .await?;
    Ok(written
        .iter()
        .fold((0, 0), |(p, c), (dp, dc)| (p + dp, c + dc)))
}

/// The operator's status write for a created object: a `PUT` of `/status` conditional on the
/// resourceVersion the watch delivered; after a 409 the object is read again and the `PUT`
/// repeated (at most three times). Returns (PUTs sent, of them after a conflict).
async fn put_status(
    api: &Api<DynamicObject>,
    ns: &str,
    by_name: &HashMap<String, Object>,
    obj: DynamicObject,
    at: &str,
) -> Result<(usize, usize)> {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let o = by_name
        .get(&name)
        .with_context(|| format!("floor: {name} is not one of the bench's objects"))?;
    let params = PostParams {
        field_manager: Some(MANAGER.into()),
        ..PostParams::default()
    };
    let mut meta = obj.metadata;
    for attempt in 0..3 {
        let body = json!({
            "apiVersion": CRD_VERSION,
            "kind": kind_name(o),
            "metadata": {"name": name, "namespace": ns,
                         "resourceVersion": meta.resource_version, "uid": meta.uid},
            "status": status_body(o, meta.generation.unwrap_or(1), "10 keys in sync", at),
        });
        let sent = api
            .replace_subresource("status", &name, &params, &body)
            .await;
        match sent {
            Ok(_) => return Ok((attempt + 1, attempt)),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                meta = api.get(&name).await?.metadata;
            }
            Err(e) => return Err(e).with_context(|| format!("floor: status PUT of {name}")),
        }
    }
    bail!("floor: the status PUT of {name} conflicted three times")
}
