//! The performance benchmark at N=100 (the only size CI runs): the real operator binary against
//! the test control plane and the ZITADEL emulator (5 ms per call), next to the per-key baseline,
//! in Polling mode (the bench's default) and in Events mode (`DRIFT_DETECTION=auto`, a 1 s event
//! poll); and a 2-shard run at N=40 proving each object was reconciled by its own shard only.
//! Asserts structural facts, and the drift repairs' bounds (issue 13: poll interval + 5 s in
//! Events mode; by the resync in Polling mode).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use zmo_testkit::bench::{self, Drift, Options, Report, Strategy};

/// One benchmark at a time: they share the control plane and the machine, and count the shared
/// control plane's requests (`apiserver_request_total`), which another run's writes would inflate.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs the bench, writes its report to `out` (returning the files written) and prints it.
async fn run_and_write(
    cp: &zmo_testkit::controlplane::ControlPlane,
    opts: &Options,
    out: &std::path::Path,
) -> (Report, Vec<PathBuf>) {
    let report = bench::run(cp, opts).await.expect("benchmark run");
    let paths = report.write(out).expect("write the report");
    println!("{}", report.markdown());
    (report, paths)
}

/// Requests on OrgMetadata/UserMetadata (`sub`: the subresource, "" for the object) with this
/// verb, as kube-apiserver counted them in `phase`.
fn on_our_kinds(phase: &bench::PhaseCost, verb: &str, sub: &str) -> u64 {
    phase
        .requests
        .iter()
        .filter(|r| {
            r.verb == verb
                && (r.resource == "orgmetadatas" || r.resource == "usermetadatas")
                && r.subresource == sub
        })
        .map(|r| r.count)
        .sum()
}

/// The CSV is rectangular (every row has the header's columns); the Markdown shows the drift
/// tables.
fn assert_outputs(report: &Report) {
    let csv = report.csv();
    let widths: Vec<usize> = csv.lines().map(|l| l.split(',').count()).collect();
    assert!(widths.iter().all(|w| *w == widths[0]), "{csv}");
    let md = report.markdown();
    assert!(md.contains("| N | steady: drift mode |"), "{md}");
    assert!(md.contains("| N | drift repair: mode |"), "{md}");
}

/// Every out-of-band edit repaired, each by one write to its own target.
fn assert_all_repaired(d: &Drift) {
    assert_eq!(d.org_edits * 2, d.edits, "{d:?}");
    assert!(!d.timed_out, "{d:?}");
    assert_eq!(d.repaired, d.edits, "{d:?}");
    assert_eq!(d.edited_targets_written, d.edits, "{d:?}");
    assert_eq!(d.max_writes_per_edited_target, 1, "{d:?}");
    assert_eq!(d.edited_calls.bulk_set, d.edits as u64, "{d:?}");
    assert_eq!(d.edited_calls.errors + d.calls.errors, 0, "{d:?}");
    // No write for an object that was not edited.
    assert_eq!(d.other_target_calls.writes(), 0, "{d:?}");
    assert!(d.p50_ms <= d.p99_ms && d.p99_ms <= d.max_ms, "{d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benchmark_smoke_at_100_objects() {
    let _serial = SERIAL.lock().await;
    let cp = common::shared_with_crds().await;
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-smoke");
    // With the control plane's floor (the other smoke tests leave it out).
    let opts = Options {
        floor: true,
        ..Options::smoke(
            PathBuf::from(env!("CARGO_BIN_EXE_zitadel-metadata-operator")),
            out.clone(),
        )
    };
    let (report, _) = run_and_write(cp, &opts, &out).await;

    let run = &report.runs[0];
    let n = run.objects as u64;
    let bulk = run.bulk.as_ref().expect("bulk run");
    let per_key = run.per_key.as_ref().expect("per-key run");

    // Everything converged; nothing failed.
    assert_eq!(bulk.ready, run.objects);
    assert_eq!(bulk.create_calls.errors, 0, "{:?}", bulk.create_calls);
    assert_eq!(per_key.calls.errors, 0, "{:?}", per_key.calls);

    // Create: 2 ZITADEL calls per object — one bulk set (a new object manages nothing, so it does
    // not list first) and one read-back list that verifies every key written; nothing else (no
    // reconcile is triggered by the operator's own status write).
    let c = &bulk.create_calls;
    // A second reconcile of an object that reads it from a cache not yet showing its status
    // lists instead of writing again: a few objects may cost one list more, never a write.
    assert_eq!(c.bulk_set, n, "{c:?}");
    assert!(c.list >= n && c.list <= n + n / 10, "{c:?}");
    assert_eq!(bulk.max_bulk_sets_per_object, 1, "{bulk:?}");
    assert!(bulk.max_lists_per_object <= 2, "{bulk:?}");
    assert_eq!(c.bulk_remove + c.set, 0, "{c:?}");
    // Other calls: only the v2 client's user lookup (GetUserByID: the user's organization,
    // remembered), at most one per UserMetadata object (half the workload).
    assert!(c.other <= n / 2, "{c:?}");
    // Kubernetes: one status write per object and nothing else: the finalizer policy added the
    // finalizer at create, and a first sync's writes get no Event (the Ready condition says it).
    assert!(report.finalizer_policy);
    assert_eq!(bulk.create_kube.finalizer, 0, "{:?}", bulk.create_kube);
    // One status write per object; a reconcile that reads the object from a cache not yet
    // showing its first status (a loaded machine) writes the same status once more.
    let status = bulk.create_kube.status;
    assert!(
        status >= n && status <= n + n / 20,
        "{:?}",
        bulk.create_kube
    );
    assert_eq!(bulk.create_kube.events, 0, "{:?}", bulk.create_kube);

    // Steady state: one list per object and resync, no writes anywhere (ZITADEL, status, Events).
    let s = &bulk.steady;
    assert_eq!(s.zitadel_writes, 0, "{s:?}");
    assert_eq!(s.kube.total(), 0, "{s:?}");
    assert_eq!(s.calls.total(), s.calls.list, "{s:?}");
    assert!(s.calls.list >= n, "{s:?}");
    assert!(s.calls.list <= n * (u64::from(s.resyncs) + 1), "{s:?}");

    // The edit: one list, one bulk set, one read-back list; one status write and its Event.
    let e = &bulk.edit;
    assert_eq!(e.calls.bulk_set, 1, "{e:?}");
    assert_eq!(e.calls.list, 2, "{e:?}");
    assert_eq!(e.calls.total(), 3, "{e:?}");
    assert_eq!(e.kube.status, 1, "{e:?}");
    assert_eq!(e.kube.events, 1, "{e:?}");

    // The control plane's own counters see the operator's writes: per object one status write
    // next to the bench's create; no finalizer patch, no Event.
    let cc = bulk
        .phase("create+converge")
        .expect("the create+converge phase was measured");
    let count = |verb: &str, sub: &str| on_our_kinds(cc, verb, sub);
    assert_eq!(count("POST", ""), n, "{:?}", cc.requests);
    // One conditional status PUT per object; no forced apply (the fallback after a conflict).
    assert_eq!(count("PUT", "status"), n, "{:?}", cc.requests);
    assert_eq!(count("APPLY", "status"), 0, "{:?}", cc.requests);
    assert_eq!(count("PATCH", ""), 0, "{:?}", cc.requests);
    let events: u64 = cc
        .requests
        .iter()
        .filter(|r| r.verb == "POST" && r.resource == "events")
        .map(|r| r.count)
        .sum();
    assert_eq!(events, 0, "{:?}", cc.requests);
    assert!(cc.apiserver_cpu_s > 0.0 && cc.etcd_puts >= 2 * n, "{cc:?}");
    assert!(cc.watch_events_sent >= 2 * n, "{cc:?}");
    // Steady state: every list is in the spread's timeline.
    assert_eq!(s.spread.calls, s.calls.list, "{:?}", s.spread);
    assert_eq!(
        s.spread.timeline.iter().map(|c| u64::from(*c)).sum::<u64>(),
        s.calls.list
    );

    // The per-key baseline makes one list and one set per key for each object: 10x the writes
    // and (with the operator's read-back list) 11/2 the calls.
    assert_eq!(per_key.calls.set, n * run.keys as u64, "{per_key:?}");
    assert_eq!(per_key.calls.list, n, "{per_key:?}");
    assert!(
        per_key.calls.writes() >= 5 * c.writes(),
        "per-key writes {per_key:?} vs bulk {c:?}"
    );
    // Polling mode: no event log read; the drift repairs come from the resync (each object is
    // re-checked within one and a half intervals of its last sync; 2 intervals + 5 s is generous).
    assert_eq!(bulk.drift_mode, "Polling");
    assert_eq!(s.list_events, 0, "{s:?}");
    let d = bulk.drift.as_ref().expect("the drift phase ran");
    assert_eq!(d.edits, opts.drift_edits, "{d:?}");
    assert_all_repaired(d);
    assert_eq!(d.list_events, 0, "{d:?}");
    assert_eq!(d.drift_events_read.unwrap_or(0.0), 0.0, "{d:?}");
    // The repair: the resync's list, the bulk set, the read-back list (an edited object's next
    // resync may list it once more before the phase ends).
    assert!(d.edited_calls.list >= 2 * d.edits as u64, "{d:?}");
    let c = &d.edited_calls;
    assert_eq!(c.total(), c.list + c.bulk_set, "{d:?}");
    assert!(d.max_ms <= (2.0 * bulk.resync_s + 5.0) * 1000.0, "{d:?}");
    // The other objects' resyncs go on: lists only.
    assert_eq!(
        d.other_target_calls.total(),
        d.other_target_calls.list,
        "{d:?}"
    );

    // The machine was sampled while converging (the report says how busy it was and with what).
    assert_outputs(&report);
    let md = report.markdown();
    assert!(md.contains("machine busy (mean / peak)"), "{md}");
    if bulk.converge_s >= 2.0 {
        assert!(bulk.contention.samples >= 1, "{:?}", bulk.contention);
    }
    let ratios = run.ratios.as_ref().expect("ratios");
    assert!(
        ratios.calls >= 3.0,
        "per-key should make several times more calls: {ratios:?}"
    );

    // The control plane's floor: the same creates answered by a stand-in that only PUTs each
    // object's status; the control plane's own counters see exactly one create and one status
    // PUT per object there, nothing else on our kinds.
    let floor = run.floor.as_ref().expect("the floor ran");
    assert!(
        floor.converge_s > 0.0 && floor.converge_s >= floor.create_s * 0.5,
        "{floor:?}"
    );
    assert_eq!(
        floor.status_puts as u64,
        n + floor.conflicts as u64,
        "{floor:?}"
    );
    let fc = &floor.control_plane;
    let ours = |verb: &str, sub: &str| on_our_kinds(fc, verb, sub);
    assert_eq!(ours("POST", ""), n, "{:?}", fc.requests);
    assert_eq!(
        ours("PUT", "status"),
        floor.status_puts as u64,
        "{:?}",
        fc.requests
    );
    assert_eq!(
        ours("APPLY", "status") + ours("PATCH", ""),
        0,
        "{:?}",
        fc.requests
    );
    assert!(md.contains("per-key ÷ floor (best reachable)"), "{md}");
}

/// Events mode (`DRIFT_DETECTION=auto`, the bench's token may read events, 1 s event poll):
/// steady state of ListEvents only (at most 2 calls per poll interval, issue 13), and the
/// out-of-band edits repaired within poll interval + 5 s by exactly one list, one bulk set and one
/// read-back list of each edited target, nothing for the other objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benchmark_smoke_events_mode_drift_repair() {
    let _serial = SERIAL.lock().await;
    let cp = common::shared_with_crds().await;
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-smoke-events");
    let poll = Duration::from_secs(1);
    let opts = Options {
        strategy: Strategy::Bulk,
        resyncs: 1,
        // The operator re-reads the 5 s before the newest event until it has stayed the newest
        // for longer than that: let the creation's events settle, then watch five poll intervals.
        settle: Duration::from_secs(6),
        steady: Some(poll * 5),
        event_poll: Some(poll),
        operator_env: vec![("DRIFT_DETECTION".into(), "auto".into())],
        command: "bench smoke test, Events mode".into(),
        ..Options::smoke(
            PathBuf::from(env!("CARGO_BIN_EXE_zitadel-metadata-operator")),
            out.clone(),
        )
    };
    let (report, _) = run_and_write(cp, &opts, &out).await;
    let run = &report.runs[0];
    let bulk = run.bulk.as_ref().expect("bulk run");
    assert_eq!(bulk.ready, run.objects);
    assert_eq!(bulk.drift_mode, "Events");
    assert_eq!(bulk.event_poll_s, 1.0);

    // Steady state: the event log is read, nothing else (no listing, no write), at most 2 calls
    // per poll interval (issue 13).
    let s = &bulk.steady;
    assert!(s.list_events >= 1, "{s:?}");
    assert_eq!(s.calls.total(), s.list_events, "{s:?}");
    assert!(s.calls_per_poll <= 2.0, "{s:?}");
    assert_eq!(s.zitadel_writes, 0, "{s:?}");
    assert_eq!(s.kube.total(), 0, "{s:?}");

    // The Kubernetes-side edit costs what it costs in Polling mode.
    let e = &bulk.edit;
    assert_eq!(e.calls.bulk_set, 1, "{e:?}");
    assert_eq!(e.calls.total(), 3, "{e:?}");

    // Drift: every edit read from the event log as drift and repaired within poll + 5 s, by
    // exactly one list, one bulk set and one read-back list of its target; no call for another
    // object; nothing but ListEvents besides.
    let d = bulk.drift.as_ref().expect("the drift phase ran");
    assert_eq!(d.edits, opts.drift_edits, "{d:?}");
    assert_all_repaired(d);
    assert_eq!(d.drift_events_read, Some(d.edits as f64), "{d:?}");
    assert!(
        d.max_ms <= (poll + Duration::from_secs(5)).as_secs_f64() * 1000.0,
        "{d:?}"
    );
    assert_eq!(d.edited_calls.list, 2 * d.edits as u64, "{d:?}");
    assert_eq!(d.edited_calls.total(), 3 * d.edits as u64, "{d:?}");
    assert_eq!(d.other_target_calls.total(), 0, "{d:?}");
    assert_eq!(d.unattributed_calls.total(), 0, "{d:?}");
    assert!(d.list_events >= 1, "{d:?}");
    assert_eq!(d.calls.total(), 3 * d.edits as u64 + d.list_events, "{d:?}");
    assert_outputs(&report);
}

/// `--shards 2` at N=40 (operator only, no steady-state window): two operator processes split
/// the objects by label, and the emulator's request log proves each object was read and written
/// by its own shard only, every object by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benchmark_smoke_with_two_shards() {
    let _serial = SERIAL.lock().await;
    let cp = common::shared_with_crds().await;
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-smoke-shards");
    let mut opts = Options::smoke(
        PathBuf::from(env!("CARGO_BIN_EXE_zitadel-metadata-operator")),
        out.clone(),
    );
    opts.objects = vec![40];
    opts.strategy = bench::Strategy::Bulk;
    opts.resyncs = 0;
    opts.shards = 2;
    opts.command = "bench smoke test --shards 2".into();
    let (report, paths) = run_and_write(cp, &opts, &out).await;

    let run = &report.runs[0];
    let n = run.objects;
    let bulk = run.bulk.as_ref().expect("bulk run");
    assert_eq!(bulk.ready, n);
    let shards = bulk
        .shards
        .as_ref()
        .expect("a sharded run reports its shards");
    // Proven from the emulator's log: no object's target was called by another shard's token
    // (or a token naming no shard), and every object's target was called by its own shard.
    assert_eq!(shards.violations, 0, "{shards:?}");
    assert_eq!(shards.unreconciled, 0, "{shards:?}");
    assert_eq!(shards.unknown_caller_calls, 0, "{shards:?}");
    assert!(shards.proven());
    report.check_shards().expect("the split is proven");
    assert_eq!(shards.shards.len(), 2, "{shards:?}");
    for s in &shards.shards {
        // Both shards did work: half the objects each, every one of them reconciled (at least
        // its bulk set and the read-back list), nothing on the other shard's objects.
        assert_eq!(s.objects, n / 2, "{s:?}");
        assert_eq!(s.reconciled, n / 2, "{s:?}");
        assert!(s.metadata_calls >= 2 * (n / 2) as u64, "{s:?}");
        assert_eq!(s.foreign_calls, 0, "{s:?}");
        assert!(s.calls >= s.metadata_calls, "{s:?}");
        assert!(s.cpu_total_s > 0.0 && s.rss_peak_mib > 0.0, "{s:?}");
        assert_eq!(s.selector, format!("zmo-bench/shard={}", s.name));
    }
    // Each object was written once: no two shards both wrote it.
    assert_eq!(
        bulk.create_calls.bulk_set, n as u64,
        "{:?}",
        bulk.create_calls
    );
    assert_eq!(bulk.create_calls.errors, 0, "{:?}", bulk.create_calls);
    // The report has the Shards section and a per-shard CSV.
    let md = report.markdown();
    assert!(md.contains("| N | shard | selector |"), "{md}");
    let csv = std::fs::read_to_string(out.join("bench-shards.csv")).expect("bench-shards.csv");
    assert!(paths.contains(&out.join("bench-shards.csv")));
    assert_eq!(csv.lines().count(), 3, "{csv}");
    let widths: Vec<usize> = csv.lines().map(|l| l.split(',').count()).collect();
    assert!(widths.iter().all(|w| *w == widths[0]), "{csv}");
}
