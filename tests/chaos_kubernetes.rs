//! Kubernetes-side chaos: the operator against a real kube-apiserver + etcd that misbehave.
//!
//! * `apiserver_restarts_short_and_long_outage`: kube-apiserver is SIGKILLed and started again on
//!   the same port, certificates and etcd, once for a few seconds and once for 25 s. During the
//!   outage the operator must stay up, leave ZITADEL alone (no writes) and keep its ZITADEL calls
//!   bounded (no hot loop); afterwards the objects are still Ready and an edit made through the
//!   restarted apiserver converges.
//! * `watch_expiry_after_compaction_relists_and_misses_nothing`: edits around an apiserver
//!   restart followed by an etcd compaction; the operator's watches resume at resource versions
//!   that no longer exist (`410 Gone`), relist, and every edit, delete and create converges.
//! * `concurrent_writers_and_stale_updates_converge`: another client edits the same objects' specs
//!   and writes their status (server-side apply by another field manager, replace with a stale
//!   `resourceVersion`, which gets `409 Conflict`) while the operator reconciles; the operator
//!   converges on the latest spec and settles down afterwards.
//! * `sigkill_loop_converges_every_time`: the real operator binary is SIGKILLed at seeded random
//!   points of its reconciles (ZITADEL latency makes them long) and restarted, over and over; after
//!   every round ZITADEL holds exactly the desired keys, none lost, none left over.
//!
//! Restart tests use private control planes ([`ControlPlane::start_with`]), so the shared one used
//! by the other tests of this binary is never disturbed.
//!
//! Environment:
//! * `CHAOS_LONG=1`: 50 SIGKILL rounds instead of 12 (the default keeps the whole file within
//!   about 2–3 minutes on 2 cores).
//! * `CHAOS_SEED=<u64>`: seed of the SIGKILL loop's random choices (default: fixed, printed).
//!
//! Each scenario prints one `FIGURE <scenario> key=value…` line with what it measured
//! (`cargo test --test chaos_kubernetes -- --nocapture | grep FIGURE`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams};
use kube::{Api, Client, ResourceExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::time::Instant;
use zitadel_metadata_operator::crd::{MetadataResource, OrgMetadata, UserMetadata};
use zmo_testkit::controlplane::{ControlPlane, Options};
use zmo_testkit::emulator::{Emulator, Fault, Operation};

/// Field manager of the test's spec edits.
const MANAGER: &str = "chaos-test";
/// Field manager of the "other client" writing status.
const INTRUDER: &str = "chaos-intruder";
/// Operator timings used throughout (as in the other binary tests).
const RESYNC: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The real operator binary as a child process, killed when dropped and (PDEATHSIG) when the test
/// binary dies; stdout and stderr go to a log file that survives restarts.
struct OperatorProcess {
    binary: OperatorBinary,
}

impl OperatorProcess {
    fn start(
        kubeconfig: &Path,
        zitadel_url: &str,
        namespace: &str,
        token_file: &Path,
        log: &Path,
    ) -> OperatorProcess {
        let out = std::fs::File::options()
            .create(true)
            .append(true)
            .open(log)
            .expect("operator log file");
        let binary = Launch::new(kubeconfig, namespace, "1s")
            .zitadel(zitadel_url, token_file)
            .args(["--request-timeout", "5s"])
            // The watcher's debug lines show 410 Gone and relists.
            .env("RUST_LOG", "info,kube_runtime::watcher=debug")
            .env("LOG_FORMAT", "text")
            .output(out.try_clone().expect("log file handle"), out)
            .die_with_parent()
            .spawn();
        OperatorProcess { binary }
    }

    /// Panics if the process has exited (crashed).
    fn assert_running(&mut self, log: &Path) {
        if let Some(status) = self.binary.exited() {
            panic!(
                "the operator exited with {status}; log tail:\n{}",
                tail(log, 40)
            );
        }
    }

    async fn sigkill(mut self) {
        self.binary.kill().await;
    }
}

/// The resourceVersions of the objects `api` lists.
async fn resource_versions<K>(api: &Api<K>) -> Vec<String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(|o| o.resource_version().unwrap_or_default())
        .collect()
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// An OrgMetadata spec with exactly these keys.
fn org_spec(org: &str, keys: &BTreeMap<String, String>) -> serde_json::Value {
    let metadata: Vec<_> = keys
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect();
    json!({"organizationId": org, "metadata": metadata})
}

/// A UserMetadata spec with exactly these keys.
fn user_spec(user: &str, keys: &BTreeMap<String, String>) -> serde_json::Value {
    let metadata: Vec<_> = keys
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect();
    json!({"userId": user, "metadata": metadata})
}

async fn apply_org(api: &Api<OrgMetadata>, name: &str, spec: serde_json::Value) -> OrgMetadata {
    apply_as(api, MANAGER, name, spec).await
}

async fn apply_user(api: &Api<UserMetadata>, name: &str, spec: serde_json::Value) -> UserMetadata {
    apply_as(api, MANAGER, name, spec).await
}

/// The emulator's metadata of an org / user as strings.
fn strings(map: BTreeMap<String, Vec<u8>>) -> BTreeMap<String, String> {
    map.into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect()
}

fn one_key(key: &str, value: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(key.to_string(), value.to_string())])
}

/// A random subset of `keys`, each with a random value starting with `prefix`.
fn random_keys(rng: &mut StdRng, keys: &[&str], prefix: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for key in keys {
        if rng.random_bool(0.5) {
            out.insert(
                key.to_string(),
                format!("{prefix}{}", rng.random_range(0..1000)),
            );
        }
    }
    out
}

/// Ready for the current generation.
fn ready<K: MetadataResource>(obj: &K) -> bool {
    is_ready(obj.status(), obj.meta().generation)
}

/// Calls to the emulator that write (set or remove metadata).
fn writes(emu: &Emulator) -> usize {
    emu.requests()
        .iter()
        .filter(|r| {
            r.operation.sets_metadata()
                || matches!(
                    r.operation,
                    Operation::RemoveOrgMetadata
                        | Operation::BulkRemoveOrgMetadata
                        | Operation::RemoveUserMetadata
                        | Operation::BulkRemoveUserMetadata
                )
        })
        .count()
}

/// A private control plane (audit log on) with the CRDs, a namespace, an emulator with `orgs`
/// fresh organizations, and a token file.
struct Private {
    cp: ControlPlane,
    client: Client,
    ns: String,
    emu: Emulator,
    orgs: Vec<String>,
    dir: tempfile::TempDir,
}

impl Private {
    async fn start(prefix: &str, orgs: usize) -> Private {
        let cp = ControlPlane::start_with(Options { audit_log: true })
            .await
            .expect("private control plane");
        let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
        cp.install_crds(&crds).await.expect("install crds/");
        let client = cp.client().await.expect("client");
        let ns = cp.create_namespace(prefix).await.expect("namespace");
        let emu = Emulator::start_seeded().await.expect("emulator");
        let orgs: Vec<String> = (0..orgs).map(|i| format!("31000000000000{i:04}")).collect();
        for org in &orgs {
            emu.add_org(org, &format!("chaos org {org}"));
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("token"), TOKEN).expect("token file");
        Private {
            cp,
            client,
            ns,
            emu,
            orgs,
            dir,
        }
    }

    fn orgs_api(&self) -> Api<OrgMetadata> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("operator.log")
    }

    fn start_operator(&self) -> OperatorProcess {
        OperatorProcess::start(
            self.cp.kubeconfig_path(),
            &self.emu.url(),
            &self.ns,
            &self.dir.path().join("token"),
            &self.log(),
        )
    }

    /// A fresh client (the old one may hold connections to the killed apiserver).
    async fn refresh_client(&mut self) {
        self.client = self.cp.client().await.expect("client");
    }

    /// Waits until `name` is Ready for its generation and the emulator holds exactly `keys` on
    /// `org`; returns how long that took.
    async fn converged(
        &self,
        name: &str,
        org: &str,
        keys: &BTreeMap<String, String>,
        within: Duration,
    ) -> Duration {
        let started = Instant::now();
        let api = self.orgs_api();
        loop {
            let obj = api.get_opt(name).await.ok().flatten();
            let held = strings(self.emu.org_metadata(org));
            if obj.as_ref().is_some_and(ready) && held == *keys {
                break;
            }
            if started.elapsed() > within {
                let status = obj
                    .as_ref()
                    .and_then(|o| serde_json::to_value(o.status()).ok());
                let audit: Vec<String> = self
                    .cp
                    .audit_events()
                    .unwrap_or_default()
                    .iter()
                    .filter(|e| e["objectRef"]["resource"] == "orgmetadatas")
                    .map(|e| {
                        format!(
                            "{} {} {} {}",
                            e["requestReceivedTimestamp"],
                            e["verb"],
                            e["requestURI"],
                            e["responseStatus"]["code"]
                        )
                    })
                    .collect();
                panic!(
                    "timed out after {within:?}: {name} converged on {keys:?}; ZITADEL holds \
                     {held:?}; generation {:?}, status {status:#?}\noperator log tail:\n{}\n\
                     audit (orgmetadatas):\n{}",
                    obj.as_ref().and_then(|o| o.metadata.generation),
                    tail(&self.log(), 150),
                    audit.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        started.elapsed()
    }

    /// Audit events of the operator's requests on `orgmetadatas` with `verb` since `since`
    /// (RFC 3339 `requestReceivedTimestamp` compared as text, which sorts in time order).
    fn operator_calls(&self, verb: &str, since: &str) -> usize {
        self.cp
            .audit_events()
            .expect("audit log")
            .iter()
            .filter(|e| {
                e["verb"] == verb
                    && e["objectRef"]["resource"] == "orgmetadatas"
                    && e["requestReceivedTimestamp"].as_str().unwrap_or("") >= since
                    // The test's own requests use `get` and field manager `chaos-test`.
                    && !e["requestURI"].as_str().unwrap_or("").contains(MANAGER)
            })
            .count()
    }
}

/// Current time as an RFC 3339 string with microseconds, like the audit log's timestamps.
fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

// ---------------------------------------------------------------------------------------------
// 1. kube-apiserver restarts
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_restarts_short_and_long_outage() {
    const N: usize = 4;
    let mut env = Private::start("chaos-restart", N).await;
    let api = env.orgs_api();
    let mut op = env.start_operator();
    for (i, org) in env.orgs.iter().enumerate() {
        apply_org(&api, &format!("o{i}"), org_spec(org, &one_key("k", "v0"))).await;
    }
    for (i, org) in env.orgs.iter().enumerate() {
        env.converged(
            &format!("o{i}"),
            org,
            &one_key("k", "v0"),
            Duration::from_secs(60),
        )
        .await;
    }

    for (label, outage) in [
        ("short", Duration::from_secs(4)),
        ("long", Duration::from_secs(25)),
    ] {
        let before: Vec<OrgMetadata> = env
            .orgs_api()
            .list(&ListParams::default())
            .await
            .expect("list")
            .items;
        let calls_before = env.emu.requests().len();
        let writes_before = writes(&env.emu);

        env.cp.stop_apiserver();
        let down = Instant::now();
        while down.elapsed() < outage {
            tokio::time::sleep(Duration::from_millis(500)).await;
            op.assert_running(&env.log());
        }
        let calls = env.emu.requests().len() - calls_before;
        let outage_writes = writes(&env.emu) - writes_before;
        let restart_ready = env
            .cp
            .start_apiserver()
            .await
            .expect("restart kube-apiserver");
        let outage_total = down.elapsed();
        env.refresh_client().await;
        let since = now_rfc3339();
        op.assert_running(&env.log());

        // Nothing to do during the outage: ZITADEL is only read (resync), never written, and
        // at most about one read per object and resync interval (no hot loop).
        assert_eq!(
            outage_writes, 0,
            "{label}: ZITADEL written during the outage"
        );
        let bound = N * (outage_total.as_secs() as usize / RESYNC.as_secs() as usize + 2) * 2;
        assert!(
            calls <= bound,
            "{label}: {calls} ZITADEL calls during a {outage_total:?} outage (bound {bound})"
        );

        // Objects that were Ready still are, unchanged (the operator wrote no status meanwhile).
        let api = env.orgs_api();
        for old in &before {
            let now = api.get(&old.name_any()).await.expect("get after restart");
            assert!(
                ready(&now),
                "{label}: {} not Ready after the restart",
                old.name_any()
            );
            assert_eq!(
                now.status(),
                old.status(),
                "{label}: status changed by the outage"
            );
        }

        // An edit through the restarted apiserver converges within seconds: each watch backs
        // off on its own, so the 410s after the restart do not queue up behind one shared
        // backoff (that took ~30 s; 5–7 s measured since, generous bound for a loaded machine).
        let value = format!("after-{label}");
        apply_org(&api, "o0", org_spec(&env.orgs[0], &one_key("k", &value))).await;
        let to_converge = env
            .converged(
                "o0",
                &env.orgs[0],
                &one_key("k", &value),
                Duration::from_secs(20),
            )
            .await;
        for (i, org) in env.orgs.iter().enumerate().skip(1) {
            assert_eq!(
                strings(env.emu.org_metadata(org)),
                one_key("k", "v0"),
                "o{i}"
            );
        }
        op.assert_running(&env.log());

        // Settled: a quiet window without hot loops on either side.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let quiet_start = now_rfc3339();
        let quiet_calls_before = env.emu.requests().len();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let quiet_calls = env.emu.requests().len() - quiet_calls_before;
        let quiet_patches = env.operator_calls("patch", &quiet_start);
        assert!(
            quiet_calls <= N * (5 + 2) * 2,
            "{label}: {quiet_calls} ZITADEL calls in 5 quiet seconds after the restart"
        );
        assert_eq!(
            quiet_patches, 0,
            "{label}: status patches in a quiet window"
        );
        let relists = env.operator_calls("list", &since);
        let watches = env.operator_calls("watch", &since);
        println!(
            "FIGURE apiserver_restart_{label} outage_s={:.1} apiserver_ready_after_start_s={:.1} \
             zitadel_calls_during_outage={calls} zitadel_call_bound={bound} zitadel_writes_during_outage={outage_writes} \
             edit_converged_after_restart_s={:.1} operator_relists={relists} operator_watches={watches} \
             quiet_5s_zitadel_calls={quiet_calls} quiet_5s_status_patches={quiet_patches} objects={N}",
            outage_total.as_secs_f64(),
            restart_ready.as_secs_f64(),
            to_converge.as_secs_f64(),
        );
    }
    op.sigkill().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Watch expiry (410 Gone) after compaction
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_expiry_after_compaction_relists_and_misses_nothing() {
    const N: usize = 5;
    let mut env = Private::start("chaos-410", N).await;
    let api = env.orgs_api();
    let mut op = env.start_operator();
    for i in 0..4 {
        apply_org(
            &api,
            &format!("o{i}"),
            org_spec(&env.orgs[i], &one_key("k", "v0")),
        )
        .await;
    }
    for i in 0..4 {
        env.converged(
            &format!("o{i}"),
            &env.orgs[i],
            &one_key("k", "v0"),
            Duration::from_secs(60),
        )
        .await;
    }
    // A resourceVersion the operator's watches have certainly passed.
    let old_rv = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("list resourceVersion");

    // An edit right before the outage (maybe not seen before the kill) ...
    apply_org(
        &api,
        "o3",
        org_spec(&env.orgs[3], &one_key("k", "before-kill")),
    )
    .await;
    env.cp.stop_apiserver();
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.cp
        .start_apiserver()
        .await
        .expect("restart kube-apiserver");
    let restarted = Instant::now();
    env.refresh_client().await;
    let since = now_rfc3339();
    let api = env.orgs_api();
    // ... edits, a delete and a create right after the restart, before the operator re-watches ...
    apply_org(
        &api,
        "o1",
        org_spec(&env.orgs[1], &one_key("k", "after-restart")),
    )
    .await;
    api.delete("o2", &DeleteParams::default())
        .await
        .expect("delete o2");
    apply_org(&api, "o4", org_spec(&env.orgs[4], &one_key("k", "new"))).await;
    // ... and all history up to now compacted away.
    let compacted = env.cp.compact_etcd().await.expect("compact etcd");

    // The resourceVersion from before is gone for good: a watch from it gets 410 Gone, as the
    // operator's resumed watches do.
    let gone = watch_from(&api, &old_rv).await;
    assert!(
        gone,
        "a watch from resourceVersion {old_rv} was not answered with 410 Gone"
    );

    // 4 s measured (21 s while one backoff was shared by all watches of a controller).
    let within = Duration::from_secs(20);
    env.converged("o1", &env.orgs[1], &one_key("k", "after-restart"), within)
        .await;
    env.converged("o3", &env.orgs[3], &one_key("k", "before-kill"), within)
        .await;
    env.converged("o4", &env.orgs[4], &one_key("k", "new"), within)
        .await;
    eventually(within, "o2 deleted and its keys removed", || async {
        let gone = api.get_opt("o2").await.ok()?.is_none();
        (gone && env.emu.org_metadata(&env.orgs[2]).is_empty()).then_some(())
    })
    .await;
    let converged = restarted.elapsed();
    env.converged("o0", &env.orgs[0], &one_key("k", "v0"), within)
        .await;

    // A change after the relist still arrives through the new watch.
    apply_org(
        &api,
        "o0",
        org_spec(&env.orgs[0], &one_key("k", "after-relist")),
    )
    .await;
    let after_relist = env
        .converged("o0", &env.orgs[0], &one_key("k", "after-relist"), within)
        .await;
    op.assert_running(&env.log());

    let log = std::fs::read_to_string(env.log()).unwrap_or_default();
    let gone_in_log = log
        .lines()
        .filter(|l| l.contains("code: 410") || l.contains("too old resource version"))
        .count();
    let relists = env.operator_calls("list", &since);
    assert!(
        relists >= 1,
        "the operator never relisted orgmetadatas after its watch expired; log tail:\n{}",
        tail(&env.log(), 30)
    );
    println!(
        "FIGURE watch_expiry compacted_revision={compacted} watch_410_lines_in_operator_log={gone_in_log} \
         operator_orgmetadata_relists={relists} all_changes_converged_after_restart_s={:.1} \
         edit_after_relist_converged_s={:.1}",
        converged.as_secs_f64(),
        after_relist.as_secs_f64(),
    );
    op.sigkill().await;
}

/// Whether a watch of `api` from `resource_version` is answered with 410 Gone (as an HTTP error
/// or as the stream's first ERROR event).
async fn watch_from(api: &Api<OrgMetadata>, resource_version: &str) -> bool {
    use futures::StreamExt as _;
    use kube::core::WatchEvent;
    match api
        .watch(&WatchParams::default().timeout(5), resource_version)
        .await
    {
        Err(kube::Error::Api(status)) => status.code == 410,
        Err(e) => panic!("watch failed: {e}"),
        Ok(stream) => {
            let mut stream = Box::pin(stream);
            match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
                Ok(Some(Ok(WatchEvent::Error(e)))) => e.code == 410,
                _ => false,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Concurrent writers, stale updates, 409 Conflict
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_and_stale_updates_converge() {
    const N: usize = 4;
    const KEYS: [&str; 5] = ["a", "b", "c", "d", "e"];
    let env = TestEnv::new("chaos-conflict").await;
    let orgs: Vec<String> = (0..N).map(|i| format!("32000000000000{i:04}")).collect();
    for org in &orgs {
        env.emu.add_org(org, &format!("conflict org {org}"));
    }
    // Slow ZITADEL: reconciles take long enough for writes to land in the middle.
    env.emu
        .inject(Fault::latency(Duration::from_millis(150)).on_operations([
            Operation::ListOrgMetadata,
            Operation::BulkSetOrgMetadata,
            Operation::BulkRemoveOrgMetadata,
        ]));
    let operator = env.start_operator(fast_settings());
    let api = env.orgs();
    for (i, org) in orgs.iter().enumerate() {
        apply_org(&api, &format!("c{i}"), org_spec(org, &one_key("a", "0"))).await;
    }

    let mut rng = StdRng::seed_from_u64(7);
    let (mut spec_edits, mut foreign_status, mut stale_ok, mut conflicts) = (0, 0, 0, 0);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        let i = rng.random_range(0..N);
        let name = format!("c{i}");
        match rng.random_range(0..4) {
            // A spec edit (the latest one is what must end up in ZITADEL).
            0 => {
                let keys = random_keys(&mut rng, &KEYS, "");
                apply_org(&api, &name, org_spec(&orgs[i], &keys)).await;
                spec_edits += 1;
            }
            // Another field manager takes over the Ready condition (forced status apply).
            1 => {
                let patch = json!({
                    "apiVersion": "metadata.zitadel-operator.dev/v1alpha1",
                    "kind": "OrgMetadata",
                    "status": {"conditions": [{
                        "type": "Ready", "status": "False", "reason": "Intruder",
                        "message": "written by another client",
                        "lastTransitionTime": "2020-01-01T00:00:00Z",
                    }]},
                });
                api.patch_status(
                    &name,
                    &PatchParams::apply(INTRUDER).force(),
                    &Patch::Apply(&patch),
                )
                .await
                .expect("foreign status apply");
                foreign_status += 1;
            }
            // Replace the status (and, alternately, the whole object) from a stale read.
            _ => {
                let mut stale = api.get(&name).await.expect("get");
                if rng.random_bool(0.5) {
                    // A label edit in between (it also triggers a reconcile): `stale` is stale.
                    let label = json!({"metadata": {"labels": {"chaos": rng.random_range(0..1000).to_string()}}});
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&label))
                        .await
                        .expect("label patch");
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..400))).await;
                let data = if rng.random_bool(0.5) {
                    if let Some(st) = stale.status.as_mut() {
                        st.conditions.retain(|c| c.type_ != "Ready");
                    }
                    api.replace_status(&name, &PostParams::default(), &stale)
                        .await
                } else {
                    stale.spec.common.metadata.clear();
                    api.replace(&name, &PostParams::default(), &stale).await
                };
                match data {
                    Ok(_) => stale_ok += 1,
                    Err(kube::Error::Api(s)) if s.code == 409 => conflicts += 1,
                    Err(e) => panic!("stale replace: {e}"),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..200))).await;
    }
    assert!(
        conflicts > 0,
        "no stale write was refused with 409: the test did not test conflicts"
    );

    // Converged on whatever spec each object holds now, with exactly those keys in ZITADEL.
    let settle = Instant::now();
    for (i, org) in orgs.iter().enumerate() {
        let name = format!("c{i}");
        eventually(
            Duration::from_secs(60),
            &format!("{name} converged"),
            || async {
                let obj = api.get(&name).await.ok()?;
                let want: BTreeMap<String, String> = obj
                    .spec
                    .common
                    .metadata
                    .iter()
                    .map(|e| (e.key.clone(), e.value.clone().unwrap_or_default()))
                    .collect();
                (ready(&obj) && strings(env.emu.org_metadata(org)) == want).then_some(())
            },
        )
        .await;
    }
    let settled = settle.elapsed();

    // Quiet afterwards: no status churn (resourceVersions stable) and ZITADEL reads at the resync
    // rate only.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rvs = resource_versions(&api).await;
    let calls_before = env.emu.requests().len();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let quiet_calls = env.emu.requests().len() - calls_before;
    let rvs_after = resource_versions(&api).await;
    assert_eq!(
        rvs, rvs_after,
        "objects kept changing after the writers stopped"
    );
    assert!(
        quiet_calls <= N * (5 + 2) * 2,
        "{quiet_calls} ZITADEL calls in 5 quiet seconds"
    );
    println!(
        "FIGURE concurrent_writers objects={N} seconds=15 spec_edits={spec_edits} foreign_status_applies={foreign_status} \
         stale_replaces_accepted={stale_ok} stale_replaces_409={conflicts} converged_after_writers_stopped_s={:.1} \
         quiet_5s_zitadel_calls={quiet_calls}",
        settled.as_secs_f64()
    );
    operator.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. SIGKILL at random points, in a loop
// ---------------------------------------------------------------------------------------------

/// One object of the SIGKILL loop: its target and desired keys (`None` = deleted).
struct Target {
    name: String,
    user: bool,
    id: String,
    keys: Option<BTreeMap<String, String>>,
}

/// Three orgs and two users (in the first org), none with an object yet.
fn sigkill_targets(env: &TestEnv) -> Vec<Target> {
    let mut targets = Vec::new();
    for i in 0..3 {
        let id = format!("33000000000000{i:04}");
        env.emu.add_org(&id, &format!("sigkill org {i}"));
        targets.push(Target {
            name: format!("org{i}"),
            user: false,
            id,
            keys: None,
        });
    }
    for i in 0..2 {
        let id = format!("34000000000000{i:04}");
        env.emu
            .add_user(&id, &targets[0].id, &format!("sigkill-user-{i}"));
        targets.push(Target {
            name: format!("user{i}"),
            user: true,
            id,
            keys: None,
        });
    }
    targets
}

/// ZITADEL latency of this round (0–400 ms on every metadata call), so kills land inside calls.
fn inject_round_latency(env: &TestEnv, rng: &mut StdRng) -> Duration {
    env.emu.clear_faults();
    let latency = Duration::from_millis(rng.random_range(0..400));
    env.emu.inject(Fault::latency(latency).on_operations([
        Operation::ListOrgMetadata,
        Operation::BulkSetOrgMetadata,
        Operation::BulkRemoveOrgMetadata,
        Operation::ListUserMetadata,
        Operation::BulkSetUserMetadata,
        Operation::BulkRemoveUserMetadata,
        Operation::GetUserV2,
    ]));
    latency
}

/// Edits of 1–3 objects: new key sets, deletes, re-creates; `targets` records what is desired.
async fn edit_random_targets(
    orgs: &Api<OrgMetadata>,
    users: &Api<UserMetadata>,
    targets: &mut [Target],
    rng: &mut StdRng,
    round: usize,
) {
    const KEYS: [&str; 6] = ["team", "tier", "region", "owner", "cost", "env"];
    for _ in 0..rng.random_range(1..=3) {
        let t = &mut targets[rng.random_range(0..5)];
        let delete = t.keys.is_some() && rng.random_bool(0.2);
        if delete {
            let result = if t.user {
                users
                    .delete(&t.name, &DeleteParams::default())
                    .await
                    .map(drop)
            } else {
                orgs.delete(&t.name, &DeleteParams::default())
                    .await
                    .map(drop)
            };
            match result {
                Ok(()) => t.keys = None,
                Err(kube::Error::Api(s)) if s.code == 404 => t.keys = None,
                Err(e) => panic!("delete {}: {e}", t.name),
            }
            continue;
        }
        let mut keys = random_keys(rng, &KEYS, &format!("r{round}-"));
        if keys.is_empty() {
            keys.insert("team".into(), format!("r{round}"));
        }
        // A re-create must wait for a pending delete to finish (the finalizer may still hold it).
        if t.keys.is_none() {
            wait_gone(orgs, users, t).await;
        }
        if t.user {
            apply_user(users, &t.name, user_spec(&t.id, &keys)).await;
        } else {
            apply_org(orgs, &t.name, org_spec(&t.id, &keys)).await;
        }
        t.keys = Some(keys);
    }
}

/// Kills `op` at a random point of this round; returns where the kill landed.
async fn sigkill_at_random_point(
    env: &TestEnv,
    op: OperatorProcess,
    rng: &mut StdRng,
    latency: Duration,
) -> String {
    // SIGKILL at a random point: during startup, or after the n-th ZITADEL request of this
    // round (list, bulk set, read-back) plus a random part of the latency, which lands inside
    // a call or between a call and the next one or the status write.
    let round_start = env.emu.requests().len();
    if rng.random_bool(0.25) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..1000))).await;
    } else {
        let nth = rng.random_range(1..=8);
        let deadline = Instant::now() + Duration::from_secs(10);
        while env.emu.requests().len() < round_start + nth && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let extra = latency.as_millis() as u64 + 50;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..extra))).await;
    }
    let recent: Vec<_> = env.emu.requests().into_iter().skip(round_start).collect();
    op.sigkill().await;
    match recent.iter().find(|r| r.status == 0) {
        Some(r) => format!("in {:?}", r.operation),
        None if recent.is_empty() => "before any call".to_string(),
        None => format!("after {:?}", recent[recent.len() - 1].operation),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loop_converges_every_time() {
    let long = std::env::var("CHAOS_LONG").is_ok_and(|v| v == "1");
    let rounds = if long { 50 } else { 12 };
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_123);
    let mut rng = StdRng::seed_from_u64(seed);

    let env = TestEnv::new("chaos-sigkill").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).expect("token file");
    let log = dir.path().join("operator.log");
    let mut targets = sigkill_targets(&env);
    let (orgs, users) = (env.orgs(), env.users());
    let start = || {
        OperatorProcess::start(
            env.cp.kubeconfig_path(),
            &env.emu.url(),
            &env.ns,
            &token,
            &log,
        )
    };

    let mut landed: BTreeMap<String, usize> = BTreeMap::new();
    let mut max_converge = Duration::ZERO;
    let mut total_converge = Duration::ZERO;
    let loop_started = Instant::now();
    for round in 0..rounds {
        // ZITADEL latency of this round, so kills land inside calls.
        let latency = inject_round_latency(&env, &mut rng);
        let op = start();
        edit_random_targets(&orgs, &users, &mut targets, &mut rng, round).await;
        let phase = sigkill_at_random_point(&env, op, &mut rng, latency).await;
        *landed.entry(phase).or_default() += 1;

        // A fresh operator finishes the job: ZITADEL equals the desired state exactly.
        env.emu.clear_faults();
        let mut op = start();
        let converge = Instant::now();
        for t in &targets {
            wait_target(&env, &orgs, &users, t, round).await;
        }
        let took = converge.elapsed();
        op.assert_running(&log);
        max_converge = max_converge.max(took);
        total_converge += took;
        op.sigkill().await;
    }
    let landed: Vec<String> = landed.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    println!(
        "FIGURE sigkill_loop rounds={rounds} seed={seed} objects={} mean_converge_after_restart_s={:.1} \
         max_converge_after_restart_s={:.1} loop_s={:.0} lost_or_leftover_keys=0 kills_landed_in={}",
        targets.len(),
        total_converge.as_secs_f64() / rounds as f64,
        max_converge.as_secs_f64(),
        loop_started.elapsed().as_secs_f64(),
        landed.join(","),
    );
}

/// Waits until `t`'s object is gone from the API.
async fn wait_gone(orgs: &Api<OrgMetadata>, users: &Api<UserMetadata>, t: &Target) {
    eventually(
        Duration::from_secs(60),
        &format!("{} deleted", t.name),
        || async {
            let exists = if t.user {
                users.get_opt(&t.name).await.ok()?.is_some()
            } else {
                orgs.get_opt(&t.name).await.ok()?.is_some()
            };
            (!exists).then_some(())
        },
    )
    .await;
}

/// Waits until ZITADEL holds exactly `t`'s desired keys (none when deleted) and the object is
/// Ready (or gone).
async fn wait_target(
    env: &TestEnv,
    orgs: &Api<OrgMetadata>,
    users: &Api<UserMetadata>,
    t: &Target,
    round: usize,
) {
    let want = t.keys.clone().unwrap_or_default();
    let what = format!("round {round}: {} converged on {want:?}", t.name);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let held = if t.user {
            strings(env.emu.user_metadata(&t.id))
        } else {
            strings(env.emu.org_metadata(&t.id))
        };
        let object_ok = match (&t.keys, t.user) {
            (None, true) => users.get_opt(&t.name).await.expect("get").is_none(),
            (None, false) => orgs.get_opt(&t.name).await.expect("get").is_none(),
            (Some(_), true) => users
                .get_opt(&t.name)
                .await
                .expect("get")
                .is_some_and(|o| ready(&o)),
            (Some(_), false) => orgs
                .get_opt(&t.name)
                .await
                .expect("get")
                .is_some_and(|o| ready(&o)),
        };
        if object_ok && held == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out: {what}; ZITADEL holds {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
