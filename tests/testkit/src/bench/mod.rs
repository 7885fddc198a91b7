//! The performance benchmark: the real operator binary against a real kube-apiserver and the
//! ZITADEL emulator with a per-call latency, at several object counts, next to a per-key baseline
//! run in the same process (`cargo run --release -p zmo-testkit --bin bench`, or `make bench`).
//!
//! For each N it:
//!
//! 1. starts a fresh emulator holding N/2 orgs and N/2 users, with a latency fault on every
//!    operation, and the operator binary watching a fresh namespace;
//! 2. creates N objects (half `OrgMetadata`, half `UserMetadata`, `keys` keys each) with bounded
//!    client concurrency, and watches them: apply→Ready per object, total converge time, and
//!    every write to them (finalizer, status) as the watch delivers it;
//! 3. attributes every ZITADEL call to the object whose target it acts on: an object's creation
//!    cost is the calls for its target until its first re-check may come (Ready + 0.45 × resync: the operator re-checks each object
//!    at its own phase, between half and one and a half intervals after it synced);
//! 4. observes the converged system for several resync intervals (steady state): ZITADEL calls,
//!    writes, status writes, Events;
//! 5. edits one object and measures the time to Ready and the calls it caused;
//! 6. edits `drift_edits` objects' keys directly in ZITADEL (out of band, [`drift`]) and
//!    measures the time until the operator put each back, and the calls it made for that;
//! 7. reads the operator's CPU seconds (`/proc/<pid>/stat`) and peak RSS (`VmHWM`);
//! 8. runs the per-key baseline ([`perkey`]) for the same objects against a fresh emulator with
//!    the same latency, with as many objects at once as the operator reconciles at once.
//!
//! With `shards` ≥ 2 the operator is that many processes splitting the objects by label, and
//! the run proves from the emulator's log that each object was reconciled by its shard only
//! (module `shards`).

mod apiserver;
mod busy;
mod drift;
mod floor;
mod large;
mod perkey;
mod process;
mod report;
mod shards;
mod tracker;
mod workload;
mod writecost;

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::events::v1::Event as KubeEvent;
use kube::api::PostParams;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::json;

use crate::controlplane::ControlPlane;
use crate::emulator::{Operation, RecordedRequest};

pub use apiserver::{Metrics, PhaseCost, RequestStat, Scraper};
pub use drift::Drift;
pub use floor::FloorRun;
pub use large::run as large_run;
pub use large::{LargeOptions, LargeOrderRun, LargePhase, LargeReport};
pub use process::{ProcStats, default_concurrency, proc_stats};
pub use report::{
    BulkRun, Calls, Edit, KubeWrites, Machine, PerKeyRunReport, Ratios, Report, Restart, RunReport,
    Spread, Steady,
};
pub use shards::{ShardRun, Shards};
pub use workload::{CallKind, Object, TargetKind, objects};
pub use writecost::run as writecost_run;
pub use writecost::{WriteCostOptions, WriteCostReport, WriteCostRow};

use self::tracker::{Tracker, WriteKind};
use self::workload::Targets;

/// Where an object's creation ends, as a fraction of the resync interval after the reconcile
/// that made it Ready: just before its first re-check may come. The operator re-checks each
/// object at its own phase of the interval, between half and one and a half intervals after it
/// synced (`src/drift/schedule.rs`), so the earliest is half an interval.
const FIRST_RECHECK: f64 = 0.45;

const GROUP: &str = "metadata.zitadel-operator.dev";
const VERSION: &str = "v1alpha1";

/// Which strategies to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Only the operator (bulk diff).
    Bulk,
    /// Only the per-key baseline.
    PerKey,
    /// Both, and their ratios.
    Both,
}

impl Strategy {
    fn bulk(self) -> bool {
        matches!(self, Strategy::Bulk | Strategy::Both)
    }

    fn per_key(self) -> bool {
        matches!(self, Strategy::PerKey | Strategy::Both)
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The operator binary.
    pub operator: PathBuf,
    /// Object counts, one run each.
    pub objects: Vec<usize>,
    /// Keys per object.
    pub keys: usize,
    /// Emulator latency per call.
    pub latency: Duration,
    /// `--max-concurrent-reconciles` (per kind); `None` = the operator's default.
    pub concurrency: Option<u16>,
    /// Requests-per-second budget for both strategies (0 = unlimited).
    pub rps: u32,
    /// Strategies.
    pub strategy: Strategy,
    /// The operator's `--resync-interval`.
    pub resync: Duration,
    /// Resync intervals observed for the steady state.
    pub resyncs: u32,
    /// Object creations in flight at once.
    pub create_concurrency: usize,
    /// Give up when not converged after this long.
    pub converge_timeout: Duration,
    /// Where operator logs and results go.
    pub out_dir: PathBuf,
    /// The command line, for the report.
    pub command: String,
    /// A command (and arguments) the operator binary is run under, e.g. `heaptrack -o FILE`.
    pub operator_prefix: Vec<String>,
    /// Extra environment of the operator process (`MALLOC_ARENA_MAX=2`, `LD_PRELOAD=...`).
    pub operator_env: Vec<(String, String)>,
    /// After the edit, restart the operator and observe this many resync intervals (0: no
    /// restart phase).
    pub restart_resyncs: u32,
    /// Install `deploy/admission/cleanup-finalizer.yaml` first (the chart's default where the
    /// cluster serves MutatingAdmissionPolicy): new objects get the finalizer at admission.
    pub finalizer_policy: bool,
    /// The operator's `--event-poll-interval` (`None`: not passed; then the bench reads the
    /// value from `operator_env`'s `EVENT_POLL_INTERVAL` or the operator's `--help`).
    pub event_poll: Option<Duration>,
    /// Wait this long after the first resync interval before the steady window starts (lets a
    /// backlog, e.g. the event log of the creation, drain first).
    pub settle: Duration,
    /// Length of the steady window (`None`: `resyncs` × `resync`).
    pub steady: Option<Duration>,
    /// Objects edited out of band in the drift-repair phase (0: no such phase; capped at the
    /// object count).
    pub drift_edits: usize,
    /// Give up on the drift-repair phase after this long (`None`: 2 × the longer of the resync
    /// and event poll intervals, plus 30 s). A timeout is reported, not an error.
    pub drift_timeout: Option<Duration>,
    /// Operator processes splitting the objects by label (1: one process, no label); see
    /// the module `shards`.
    pub shards: usize,
    /// Also run the control plane's floor (module `floor`) at each N.
    pub floor: bool,
}

impl Options {
    /// The CI smoke test: N=100, 10 keys, 5 ms latency, 2 s resync, both strategies.
    pub fn smoke(operator: PathBuf, out_dir: PathBuf) -> Options {
        Options {
            operator,
            objects: vec![100],
            keys: 10,
            latency: Duration::from_millis(5),
            concurrency: None,
            rps: 0,
            strategy: Strategy::Both,
            resync: Duration::from_secs(2),
            resyncs: 2,
            create_concurrency: 16,
            converge_timeout: Duration::from_secs(120),
            out_dir,
            command: "bench smoke test".into(),
            operator_prefix: Vec::new(),
            operator_env: Vec::new(),
            restart_resyncs: 0,
            finalizer_policy: true,
            event_poll: None,
            settle: Duration::ZERO,
            steady: None,
            drift_edits: 10,
            drift_timeout: None,
            shards: 1,
            floor: false,
        }
    }

    /// The steady window's length.
    fn steady_window(&self) -> Duration {
        self.steady.unwrap_or(self.resync * self.resyncs)
    }

    /// The drift-repair phase's timeout.
    fn drift_timeout(&self, event_poll: Duration) -> Duration {
        self.drift_timeout
            .unwrap_or_else(|| self.resync.max(event_poll) * 2 + Duration::from_secs(30))
    }

    /// The event poll interval the operator runs with: `event_poll`, else `EVENT_POLL_INTERVAL`
    /// in `operator_env`, else the operator's default (its `--help`), else 15 s.
    fn effective_event_poll(&self) -> Duration {
        let parse = |s: &str| {
            humantime::parse_duration(s)
                .ok()
                .or_else(|| s.parse().ok().map(Duration::from_secs))
        };
        self.event_poll
            .or_else(|| {
                let (_, v) = self
                    .operator_env
                    .iter()
                    .rfind(|(k, _)| k == "EVENT_POLL_INTERVAL")?;
                parse(v)
            })
            .or_else(|| {
                parse(&process::help_default(
                    &self.operator,
                    "--event-poll-interval",
                )?)
            })
            .unwrap_or(Duration::from_secs(15))
    }
}

/// A per-key request pacer: at most `rps` requests per second, evenly spaced (0 = unlimited).
pub(crate) struct Pacer {
    interval: Option<Duration>,
    next: Mutex<tokio::time::Instant>,
}

impl Pacer {
    pub(crate) fn new(rps: u32) -> Pacer {
        Pacer {
            interval: (rps > 0).then(|| Duration::from_secs(1) / rps),
            next: Mutex::new(tokio::time::Instant::now()),
        }
    }

    pub(crate) async fn wait(&self) {
        let Some(interval) = self.interval else {
            return;
        };
        let at = {
            let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
            let at = (*next).max(tokio::time::Instant::now());
            *next = at + interval;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// Converts the emulator's wall-clock timestamps to `Instant`s.
#[derive(Clone, Copy)]
struct Clock {
    instant: Instant,
    unix_micros: u64,
}

impl Clock {
    fn now() -> Clock {
        Clock {
            instant: Instant::now(),
            unix_micros: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
        }
    }

    fn at(&self, unix_micros: u64) -> Instant {
        if unix_micros >= self.unix_micros {
            self.instant + Duration::from_micros(unix_micros - self.unix_micros)
        } else {
            self.instant
                .checked_sub(Duration::from_micros(self.unix_micros - unix_micros))
                .unwrap_or(self.instant)
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Runs the benchmark for every N in `opts.objects`. Prints progress to stderr.
pub async fn run(cp: &ControlPlane, opts: &Options) -> Result<Report> {
    let default = default_concurrency(&opts.operator);
    let concurrency = opts.concurrency.or(default).unwrap_or(4);
    let mut report = Report {
        date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        command: opts.command.clone(),
        machine: Machine::at_start(),
        finalizer_policy: opts.finalizer_policy,
        runs: Vec::new(),
    };
    if opts.finalizer_policy {
        let policy = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/admission/cleanup-finalizer.yaml");
        cp.install_finalizer_policy(&policy).await?;
    }
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("creating {}", opts.out_dir.display()))?;
    for &n in &opts.objects {
        let objects = workload::objects(n, opts.keys);
        let mut run = RunReport {
            objects: n,
            keys: opts.keys,
            latency_ms: opts.latency.as_millis() as u64,
            ..RunReport::default()
        };
        if opts.strategy.bulk() {
            eprintln!("bench: N={n}: operator (bulk diff), concurrency {concurrency} per kind");
            let mut bulk = bulk(cp, opts, &objects).await?;
            bulk.concurrency = concurrency;
            bulk.default_concurrency = opts.concurrency.is_none() || opts.concurrency == default;
            run.bulk = Some(bulk);
        }
        if opts.strategy.per_key() {
            // As many objects at once as the operator reconciles at once (both kinds, all shards).
            let workers = usize::from(concurrency) * 2 * opts.shards.max(1);
            eprintln!("bench: N={n}: per-key baseline, {workers} objects at once");
            run.per_key = Some(per_key(opts, &objects, workers).await?);
        }
        if opts.floor {
            // As many status writers per kind as the operator reconciles at once (all shards).
            let writers = usize::from(concurrency) * opts.shards.max(1);
            eprintln!("bench: N={n}: control-plane floor, {writers} status writers per kind");
            run.floor = Some(floor::run(cp, opts, &objects, writers).await?);
        }
        if let (Some(b), Some(p)) = (&run.bulk, &run.per_key) {
            let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
            run.ratios = Some(Ratios {
                calls: ratio(p.calls.total() as f64, b.create_calls.total() as f64),
                wall: ratio(p.wall_s, b.converge_s),
                cpu: ratio(p.cpu_s, b.cpu_converge_s),
            });
        }
        report.runs.push(run);
    }
    report.machine.finish();
    Ok(report)
}

fn api_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, kind), plural)
}

/// Tallies `requests`.
fn tally<'a>(requests: impl IntoIterator<Item = &'a RecordedRequest>) -> Calls {
    let mut calls = Calls::default();
    for r in requests {
        calls.add(CallKind::of(r.operation), r.status);
    }
    calls
}

fn kube_writes<'a>(writes: impl IntoIterator<Item = &'a tracker::Write>) -> KubeWrites {
    let mut out = KubeWrites::default();
    for w in writes {
        match w.kind {
            WriteKind::Finalizer => out.finalizer += 1,
            WriteKind::Status => out.status += 1,
            WriteKind::Other => out.other += 1,
            WriteKind::Spec => {}
        }
    }
    out
}

/// One bulk run at `objects.len()` objects: the numbered steps of the module documentation.
// Long because it is the run's timeline: each phase is one call, but the snapshots and instants
// between them (and the one `BulkRun` literal they fill) read best in order, in one place.
async fn bulk(cp: &ControlPlane, opts: &Options, objects: &[Object]) -> Result<BulkRun> {
    let n = objects.len();
    let client = cp.client().await?;
    let ns = cp.create_namespace(&format!("bench-{n}")).await?;
    let emu = workload::emulator(objects, opts.latency).await?;
    let targets = Targets::new(objects);
    let apis = KindApis::ours(&client, &ns);
    let events: Api<KubeEvent> = Api::namespaced(client.clone(), &ns);

    let names: Vec<String> = objects.iter().map(|o| o.name.clone()).collect();
    let tracker = Tracker::new(&names);
    let watches = start_watches(&tracker, &apis, events).await?;

    let work = tempfile::tempdir()?;
    let token_file = work.path().join("token");
    std::fs::write(&token_file, workload::TOKEN)?;
    let operator_args = operator_args(cp, opts, &ns, emu.url(), token_file, n);
    let operator_args =
        shards::Launch::new(operator_args, opts.shards, &emu, objects, work.path())?;
    let mut operator = operator_args.start().await?;
    let clock = Clock::now();
    let cpu_start = operator.stats()?.cpu_seconds;
    let others_start = others_cpu(cp);
    let scraper = apiserver::Scraper::new(cp).await?;
    let snap_start = scraper.snapshot().await?;

    // Other work on a shared machine skews the numbers: sample the machine while converging.
    let mut own = cp.process_ids();
    own.extend(operator.pids());
    let sampler = busy::Sampler::start(own, Duration::from_secs(1));

    // Create everything, a bounded number at a time.
    let t0 = Instant::now();
    create_all(objects, &apis, &ns, &tracker, opts).await?;
    let create_s = t0.elapsed().as_secs_f64();
    let snap_created = scraper.snapshot().await?;
    eprintln!("bench: N={n}: {n} objects created in {create_s:.1} s");

    wait_converged(&tracker, &mut operator, opts, n, t0).await?;
    let converged_stats = operator.stats()?;
    let shards_converged = operator.each_stats()?;
    let snap_converged = scraper.snapshot().await?;
    let contention = sampler.finish().await;
    let others_converged = others_cpu(cp);
    let (ready_at, [p50, p99, max]) = readiness(&tracker);
    let last_ready = ready_at.iter().copied().max().unwrap_or(t0);
    let converge_s = last_ready.duration_since(t0).as_secs_f64();
    eprintln!(
        "bench: N={n}: converged in {converge_s:.1} s (p50 {p50:.0} ms, p99 {p99:.0} ms); observing {} resyncs of {:?}",
        opts.resyncs, opts.resync
    );

    // Without a steady window to observe (`resyncs` 0, no `steady`), go straight to the edit.
    let steady_window = opts.steady_window();
    if !steady_window.is_zero() {
        tokio::time::sleep_until((last_ready + opts.resync).into()).await;
        if !opts.settle.is_zero() {
            eprintln!("bench: N={n}: settling for {:?}", opts.settle);
            tokio::time::sleep(opts.settle).await;
        }
    }
    let steady_cpu_before = operator.stats()?.cpu_seconds;
    let snap_steady_start = scraper.snapshot().await?;
    let list_events_before = emu.count(Operation::ListEvents);
    let steady_start = Instant::now();
    tokio::time::sleep(steady_window).await;
    let steady_end = Instant::now();
    let snap_steady_end = scraper.snapshot().await?;
    let steady_cpu = operator.stats()?.cpu_seconds - steady_cpu_before;
    operator.check_running()?;
    let drift_mode = drift_mode(&operator, opts).await;
    let event_poll = opts.effective_event_poll();
    if !steady_window.is_zero() {
        let list_events = emu.count(Operation::ListEvents) - list_events_before;
        eprintln!(
            "bench: N={n}: steady window {:.1} s, drift detection {drift_mode}: {list_events} ListEvents ({:.2} per event poll interval of {:?})",
            steady_window.as_secs_f64(),
            list_events as f64 * event_poll.as_secs_f64() / steady_window.as_secs_f64(),
            event_poll,
        );
    }

    // One edit.
    let edited = 0;
    let edit_generation = tracker.generation(edited).unwrap_or(1) + 1;
    let EditRun {
        snap_start: snap_edit_start,
        start: edit_start,
        ready: edit_ready,
        end: edit_end,
        snap_end: snap_edit_end,
    } = edit_one(
        &apis.of(&objects[edited]),
        &objects[edited],
        (&tracker, edited, edit_generation),
        &scraper,
        opts.resync,
        n,
    )
    .await?;

    // Out-of-band edits in ZITADEL, repaired by the operator.
    let drift_run = if opts.drift_edits > 0 {
        let mut desired = objects.to_vec();
        desired[edited].entries = edited_entries(&objects[edited]);
        let picks = drift::pick(&desired, opts.drift_edits);
        let timeout = opts.drift_timeout(event_poll);
        eprintln!(
            "bench: N={n}: {} out-of-band edits in ZITADEL; waiting (at most {timeout:?}) for their repair",
            picks.len()
        );
        let tail = opts.resync.mul_f64(0.5).min(Duration::from_secs(3));
        let run = drift::run(&emu, &operator, &scraper, picks, timeout, tail).await?;
        operator.check_running()?;
        Some(run)
    } else {
        None
    };

    let mut whole =
        apiserver::PhaseCost::between("create+converge", n, &snap_start, &snap_converged);
    whole.contention = Some(contention.clone());
    let mut control_plane = vec![
        apiserver::PhaseCost::between("create", n, &snap_start, &snap_created),
        apiserver::PhaseCost::between("converge", n, &snap_created, &snap_converged),
        whole,
        apiserver::PhaseCost::between("steady", n, &snap_steady_start, &snap_steady_end),
        apiserver::PhaseCost::between("edit", 1, &snap_edit_start, &snap_edit_end),
    ];
    if let Some(d) = &drift_run {
        control_plane.push(apiserver::PhaseCost::between(
            "drift",
            opts.drift_edits.min(n),
            &d.snap_start,
            &d.snap_end,
        ));
    }

    let final_stats = operator.stats()?;
    let requests = emu.requests();
    let shard_proof = operator.report(&requests, &targets, n, &shards_converged)?;
    if let Some(s) = &shard_proof {
        eprintln!("{}", shards::summary(n, s));
    }
    let writes = tracker.writes();
    let event_writes = tracker.event_writes();
    let watch_restarts = tracker.restarts();
    operator.stop().await?;

    let restart = if opts.restart_resyncs > 0 {
        Some(restart(&scraper, opts, &operator_args, &emu, &clock, &tracker, n).await?)
    } else {
        None
    };
    for w in watches {
        w.abort();
    }
    emu.shutdown().await;

    // Every call relative to its object's first Ready, for digging into the numbers.
    if let Some(path) = std::env::var_os("ZMO_BENCH_TRACE") {
        write_trace(&path, &requests, &clock, &targets, objects, &ready_at)?;
    }

    let timeline = Timeline {
        clock: &clock,
        targets: &targets,
        ready_at: &ready_at,
        last_ready,
        first_recheck: opts.resync.mul_f64(FIRST_RECHECK),
        edited,
        edit: edit_start..edit_end,
        steady: steady_start..steady_end,
        drift: drift_run
            .as_ref()
            .map_or(edit_end..edit_end, |d| d.window.clone()),
    };
    let Attributed {
        create_calls,
        per_object,
        steady_calls,
        steady_list_times,
        steady_list_events,
        edit_calls,
    } = timeline.attribute(&requests);
    let [create_kube, steady_kube, edit_kube, drift_kube] =
        timeline.kube(&writes, &event_writes, t0);
    let drift = drift_run.map(|d| {
        let report = d.report(
            &requests,
            (&clock, &targets),
            (&drift_mode, event_poll, opts.resync),
            drift_kube,
        );
        eprintln!("bench: N={n}: {}", report.summary());
        report
    });
    let steady_s = steady_end.duration_since(steady_start).as_secs_f64();
    let per_interval = |calls: u64, interval: Duration| {
        if steady_s > 0.0 {
            calls as f64 * interval.as_secs_f64() / steady_s
        } else {
            0.0
        }
    };

    Ok(BulkRun {
        concurrency: 0,
        default_concurrency: false,
        rps: opts.rps,
        resync_s: opts.resync.as_secs_f64(),
        ready: n,
        converge_s,
        create_s,
        p50_ms: p50,
        p99_ms: p99,
        max_ms: max,
        create_calls,
        max_lists_per_object: per_object.iter().map(|p| p.0).max().unwrap_or(0),
        max_bulk_sets_per_object: per_object.iter().map(|p| p.1).max().unwrap_or(0),
        create_kube,
        drift_mode,
        event_poll_s: event_poll.as_secs_f64(),
        steady: Steady {
            window_s: steady_s,
            resyncs: opts.resyncs,
            settle_s: opts.settle.as_secs_f64(),
            calls: steady_calls,
            zitadel_writes: steady_calls.writes(),
            kube: steady_kube,
            reads_per_resync: per_interval(steady_calls.list, opts.resync),
            list_events: steady_list_events,
            list_events_per_poll: per_interval(steady_list_events, event_poll),
            calls_per_poll: per_interval(steady_calls.total(), event_poll),
            cpu_s: steady_cpu,
            spread: Spread::of(
                &steady_list_times,
                steady_end.duration_since(steady_start),
                Duration::from_secs(1),
            ),
        },
        edit: Edit {
            ready_ms: ms(edit_ready.duration_since(edit_start)),
            calls: edit_calls,
            kube: edit_kube,
        },
        cpu_converge_s: converged_stats.cpu_seconds - cpu_start,
        control_plane_cpu_converge_s: others_converged.0 - others_start.0,
        contention,
        bench_cpu_converge_s: others_converged.1 - others_start.1,
        cpu_total_s: final_stats.cpu_seconds,
        rss_converged_mib: mib(converged_stats.rss_kib),
        rss_peak_mib: mib(final_stats.peak_rss_kib),
        rss_anon_converged_mib: mib(converged_stats.rss_anon_kib),
        rss_file_converged_mib: mib(converged_stats.rss_file_kib),
        watch_restarts,
        control_plane,
        restart,
        drift,
        shards: shard_proof,
    })
}

/// The OrgMetadata and UserMetadata APIs of one namespace (or of a copy of the CRDs).
pub(crate) struct KindApis {
    orgs: Api<DynamicObject>,
    users: Api<DynamicObject>,
}

impl KindApis {
    pub(crate) fn new(
        client: &kube::Client,
        ns: &str,
        orgs: &ApiResource,
        users: &ApiResource,
    ) -> Self {
        KindApis {
            orgs: Api::namespaced_with(client.clone(), ns, orgs),
            users: Api::namespaced_with(client.clone(), ns, users),
        }
    }

    /// Our CRDs in `ns`.
    pub(crate) fn ours(client: &kube::Client, ns: &str) -> Self {
        Self::new(
            client,
            ns,
            &api_resource("OrgMetadata", "orgmetadatas"),
            &api_resource("UserMetadata", "usermetadatas"),
        )
    }

    pub(crate) fn of(&self, o: &Object) -> Api<DynamicObject> {
        match o.kind {
            TargetKind::Org => self.orgs.clone(),
            TargetKind::User => self.users.clone(),
        }
    }
}

/// When each object became Ready (all are), and apply→Ready latency quantiles in ms
/// (p50, p99, max).
fn readiness(tracker: &Tracker) -> (Vec<Instant>, [f64; 3]) {
    let times = tracker.times();
    let ready_at: Vec<Instant> = times
        .iter()
        .map(|(_, r)| r.expect("every object is Ready"))
        .collect();
    let mut latencies: Vec<f64> = times
        .iter()
        .filter_map(|(c, r)| Some(ms(r.as_ref()?.duration_since(*c.as_ref()?))))
        .collect();
    let p50 = report::quantile(&mut latencies, 0.5);
    let p99 = report::quantile(&mut latencies, 0.99);
    let max = report::quantile(&mut latencies, 1.0);
    (ready_at, [p50, p99, max])
}

/// The operator's command line for the run at `n` objects in `ns`.
fn operator_args(
    cp: &ControlPlane,
    opts: &Options,
    ns: &str,
    zitadel_url: String,
    token_file: PathBuf,
    n: usize,
) -> process::OperatorArgs {
    process::OperatorArgs {
        binary: opts.operator.clone(),
        zitadel_url,
        token_file,
        kubeconfig: cp.kubeconfig_path().to_path_buf(),
        namespace: ns.to_string(),
        resync: opts.resync,
        concurrency: opts.concurrency,
        rps: opts.rps,
        event_poll: opts.event_poll,
        log: opts.out_dir.join(format!("operator-{n}.log")),
        prefix: opts.operator_prefix.clone(),
        env: opts.operator_env.clone(),
    }
}

/// The edit phase: when it started, the edited object was Ready, and it ended, with the
/// control plane's snapshots around it.
struct EditRun {
    snap_start: apiserver::Snapshot,
    start: Instant,
    ready: Instant,
    end: Instant,
    snap_end: apiserver::Snapshot,
}

/// One edit of `object` (its first value changed); `(tracker, index, generation)` says when
/// it is Ready again. Lets whatever the edit triggers finish (but stays clear of the object's
/// next resync).
async fn edit_one(
    api: &Api<DynamicObject>,
    object: &Object,
    (tracker, edited, edit_generation): (&Tracker, usize, i64),
    scraper: &apiserver::Scraper,
    resync: Duration,
    n: usize,
) -> Result<EditRun> {
    let metadata = edited_metadata(object);
    let snap_start = scraper.snapshot().await?;
    let start = Instant::now();
    api.patch(
        &object.name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"metadata": metadata}})),
    )
    .await
    .context("editing an object")?;
    let ready = wait_ready_at_generation(tracker, edited, edit_generation, start, n).await?;
    tokio::time::sleep(resync.mul_f64(0.5).min(Duration::from_secs(3))).await;
    let end = Instant::now();
    let snap_end = scraper.snapshot().await?;
    Ok(EditRun {
        snap_start,
        start,
        ready,
        end,
        snap_end,
    })
}

/// Starts the tracker's watches on both kinds and on Events; waits until each has listed.
async fn start_watches(
    tracker: &Tracker,
    apis: &KindApis,
    events: Api<KubeEvent>,
) -> Result<[tokio::task::JoinHandle<()>; 3]> {
    let (org_synced, org_rx) = tokio::sync::oneshot::channel();
    let (user_synced, user_rx) = tokio::sync::oneshot::channel();
    let (events_synced, events_rx) = tokio::sync::oneshot::channel();
    let watches = [
        tracker.watch(apis.orgs.clone(), org_synced),
        tracker.watch(apis.users.clone(), user_synced),
        tracker.watch_events(events, events_synced),
    ];
    tokio::time::timeout(Duration::from_secs(30), async {
        let _ = org_rx.await;
        let _ = user_rx.await;
        let _ = events_rx.await;
    })
    .await
    .context("the benchmark's watches did not start")?;
    Ok(watches)
}

/// Creates every object (labelled for its shard), `opts.create_concurrency` at a time, telling
/// the tracker when each create starts.
async fn create_all(
    objects: &[Object],
    apis: &KindApis,
    ns: &str,
    tracker: &Tracker,
    opts: &Options,
) -> Result<()> {
    futures::stream::iter(objects.iter().enumerate())
        .map(|(i, o)| {
            let api = apis.of(o);
            let mut manifest = o.manifest(ns);
            shards::label(&mut manifest, i, opts.shards);
            let obj: Result<DynamicObject, _> = serde_json::from_value(manifest);
            let tracker = tracker.clone();
            async move {
                let obj = obj?;
                tracker.created(i, Instant::now());
                api.create(&PostParams::default(), &obj)
                    .await
                    .with_context(|| format!("creating {}", o.name))?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(opts.create_concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Waits until all `n` objects are Ready (created from `t0` on), reporting progress every 10 s;
/// fails if the operator exits or `opts.converge_timeout` passes.
async fn wait_converged(
    tracker: &Tracker,
    operator: &mut shards::Fleet,
    opts: &Options,
    n: usize,
    t0: Instant,
) -> Result<()> {
    let mut last_report = Instant::now();
    loop {
        let ready = tracker.ready_count();
        if ready >= n {
            return Ok(());
        }
        operator.check_running()?;
        if t0.elapsed() > opts.converge_timeout {
            bail!(
                "N={n}: only {ready} of {n} objects Ready after {:?}; operator log: {}",
                opts.converge_timeout,
                opts.out_dir.join(format!("operator-{n}.log")).display()
            );
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "bench: N={n}: {ready}/{n} Ready after {:.0} s",
                t0.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The edited object's entries: its first value changed.
fn edited_entries(object: &Object) -> Vec<(String, String)> {
    let mut entries = object.entries.clone();
    if let Some(first) = entries.first_mut() {
        first.1 = format!("{}-edited", first.1);
    }
    entries
}

/// The edited object's `spec.metadata` ([`edited_entries`]).
fn edited_metadata(object: &Object) -> Vec<serde_json::Value> {
    edited_entries(object)
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect()
}

/// How the operator detects drift for the default connection, from its metric
/// `zitadel_drift_detection_mode` (`Events` or `Polling`); without it, what
/// `DRIFT_DETECTION` asked for (the bench's `polling` unless `operator_env` says otherwise).
async fn drift_mode(operator: &shards::Fleet, opts: &Options) -> String {
    for mode in ["Events", "Polling"] {
        let series =
            format!(r#"zitadel_drift_detection_mode{{connection_kind="default",mode="{mode}"}}"#);
        if operator.metric(&series).await.is_some_and(|v| v >= 1.0) {
            return mode.to_owned();
        }
    }
    let asked = opts
        .operator_env
        .iter()
        .rfind(|(k, _)| k == "DRIFT_DETECTION")
        .map_or("polling", |(_, v)| v.as_str());
    format!("{asked} (not in the metric)")
}

/// Waits (at most 60 s from `edit_start`) until object `edited` is Ready at `generation`;
/// returns when it was.
async fn wait_ready_at_generation(
    tracker: &Tracker,
    edited: usize,
    generation: i64,
    edit_start: Instant,
    n: usize,
) -> Result<Instant> {
    loop {
        if let Some(at) = tracker.ready_at_generation(edited, generation) {
            return Ok(at);
        }
        if edit_start.elapsed() > Duration::from_secs(60) {
            bail!("N={n}: the edited object did not become Ready within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A restart of the converged system: the new process reconciles every object at start, and
/// its resyncs then follow that first pass (the burst a long-running installation sees after
/// every restart or leader change).
async fn restart(
    scraper: &apiserver::Scraper,
    opts: &Options,
    operator_args: &shards::Launch,
    emu: &crate::emulator::Emulator,
    clock: &Clock,
    tracker: &Tracker,
    n: usize,
) -> Result<Restart> {
    eprintln!(
        "bench: N={n}: operator restarted; observing {} resyncs",
        opts.restart_resyncs
    );
    let snap_before = scraper.snapshot().await?;
    let start = Instant::now();
    let mut second = operator_args
        .with_log(opts.out_dir.join(format!("operator-{n}-restart.log")))
        .start()
        .await?;
    tokio::time::sleep_until((start + opts.resync * opts.restart_resyncs).into()).await;
    second.check_running()?;
    let end = Instant::now();
    let snap_after = scraper.snapshot().await?;
    let stats = second.stats()?;
    second.stop().await?;
    let mut calls = Calls::default();
    let mut lists = Vec::new();
    for r in emu.requests() {
        let at = clock.at(r.received_unix_micros);
        if at < start || at >= end {
            continue;
        }
        let kind = CallKind::of(r.operation);
        calls.add(kind, r.status);
        if kind == CallKind::List {
            lists.push(at.duration_since(start));
        }
    }
    let all_writes = tracker.writes();
    let mut kube = kube_writes(all_writes.iter().filter(|w| w.at >= start && w.at < end));
    kube.events = tracker
        .event_writes()
        .iter()
        .filter(|t| **t >= start && **t < end)
        .count() as u64;
    Ok(Restart {
        window_s: end.duration_since(start).as_secs_f64(),
        resyncs: opts.restart_resyncs,
        calls,
        zitadel_writes: calls.writes(),
        kube,
        lists_per_resync: calls.list as f64 / f64::from(opts.restart_resyncs),
        spread: Spread::of(&lists, end.duration_since(start), Duration::from_secs(1)),
        cpu_s: stats.cpu_seconds,
        rss_peak_mib: mib(stats.peak_rss_kib),
        control_plane: apiserver::PhaseCost::between("restart", n, &snap_before, &snap_after),
    })
}

/// Every call relative to its object's first Ready, for digging into the numbers
/// (`ZMO_BENCH_TRACE=FILE`).
fn write_trace(
    path: &std::ffi::OsStr,
    requests: &[RecordedRequest],
    clock: &Clock,
    targets: &Targets,
    objects: &[Object],
    ready_at: &[Instant],
) -> Result<()> {
    let mut out = String::from("object,operation,status,ms_after_ready\n");
    for r in requests {
        let at = clock.at(r.received_unix_micros);
        let (name, since) = match targets.object_of(r) {
            Some(i) => (
                objects[i].name.as_str(),
                at.saturating_duration_since(ready_at[i]).as_secs_f64() * 1000.0
                    - ready_at[i].saturating_duration_since(at).as_secs_f64() * 1000.0,
            ),
            None => ("", 0.0),
        };
        out.push_str(&format!(
            "{name},{:?},{},{since:.1}\n",
            r.operation, r.status
        ));
    }
    std::fs::write(path, out).with_context(|| format!("writing {path:?}"))?;
    Ok(())
}

/// When the phases of one bulk run happened, to attribute each ZITADEL call to one.
struct Timeline<'a> {
    clock: &'a Clock,
    targets: &'a Targets,
    ready_at: &'a [Instant],
    last_ready: Instant,
    /// Until an object's first re-check may come, after its last call before Ready.
    first_recheck: Duration,
    edited: usize,
    edit: std::ops::Range<Instant>,
    steady: std::ops::Range<Instant>,
    /// The drift-repair phase (empty when not run).
    drift: std::ops::Range<Instant>,
}

/// The ZITADEL calls of each phase.
struct Attributed {
    create_calls: Calls,
    /// Per object: (lists, bulk sets) during its creation.
    per_object: Vec<(u64, u64)>,
    steady_calls: Calls,
    steady_list_times: Vec<Duration>,
    /// ListEvents calls in the steady window.
    steady_list_events: u64,
    edit_calls: Calls,
}

impl Timeline<'_> {
    /// Attributes the calls. An object's creation ends where its first resync may start: one
    /// resync interval after the reconcile that made it Ready, i.e. after that reconcile's last
    /// ZITADEL call (the watch may deliver Ready late on a busy machine).
    fn attribute(&self, requests: &[RecordedRequest]) -> Attributed {
        let n = self.ready_at.len();
        let mut last_call = vec![None::<Instant>; n];
        for r in requests {
            let at = self.clock.at(r.received_unix_micros);
            if let Some(i) = self.targets.object_of(r)
                && at < self.ready_at[i]
            {
                last_call[i] = Some(last_call[i].map_or(at, |l: Instant| l.max(at)));
            }
        }
        let call_window_end: Vec<Instant> = (0..n)
            .map(|i| last_call[i].unwrap_or(self.ready_at[i]) + self.first_recheck)
            .collect();
        let mut out = Attributed {
            create_calls: Calls::default(),
            per_object: vec![(0u64, 0u64); n],
            steady_calls: Calls::default(),
            steady_list_times: Vec::new(),
            steady_list_events: 0,
            edit_calls: Calls::default(),
        };
        for r in requests {
            let at = self.clock.at(r.received_unix_micros);
            let object = self.targets.object_of(r);
            let kind = CallKind::of(r.operation);
            let in_create = match object {
                Some(i) => at < call_window_end[i],
                None => at < self.last_ready,
            };
            if self.edit.contains(&at) {
                if object == Some(self.edited) {
                    out.edit_calls.add(kind, r.status);
                }
            } else if self.drift.contains(&at) {
                // The drift-repair phase's own report counts these.
            } else if in_create {
                out.create_calls.add(kind, r.status);
                if let Some(i) = object {
                    match kind {
                        CallKind::List => out.per_object[i].0 += 1,
                        CallKind::BulkSet => out.per_object[i].1 += 1,
                        _ => {}
                    }
                }
            } else if self.steady.contains(&at) {
                out.steady_calls.add(kind, r.status);
                if r.operation == Operation::ListEvents {
                    out.steady_list_events += 1;
                }
                if kind == CallKind::List {
                    out.steady_list_times
                        .push(at.duration_since(self.steady.start));
                }
            }
        }
        out
    }

    /// The Kubernetes writes (and Events) of creation, steady state, edit and drift repair, as
    /// the watch saw them. An object's creation lasts until its first resync may start; Events of creation
    /// are those from `t0` to the steady state.
    fn kube(
        &self,
        writes: &[tracker::Write],
        event_writes: &[Instant],
        t0: Instant,
    ) -> [KubeWrites; 4] {
        let window_end: Vec<Instant> = self
            .ready_at
            .iter()
            .map(|r| *r + self.first_recheck)
            .collect();
        let events_in = |from: Instant, to: Instant| {
            event_writes
                .iter()
                .filter(|t| **t >= from && **t < to)
                .count() as u64
        };
        let (edit, steady, drift) = (&self.edit, &self.steady, &self.drift);
        let mut create_kube = kube_writes(writes.iter().filter(|w| {
            w.at < window_end[w.object] && !edit.contains(&w.at) && !drift.contains(&w.at)
        }));
        create_kube.events = events_in(t0, steady.start);
        let mut steady_kube = kube_writes(writes.iter().filter(|w| steady.contains(&w.at)));
        steady_kube.events = events_in(steady.start, steady.end);
        let mut edit_kube = kube_writes(writes.iter().filter(|w| edit.contains(&w.at)));
        edit_kube.events = events_in(edit.start, edit.end);
        let mut drift_kube = kube_writes(writes.iter().filter(|w| drift.contains(&w.at)));
        drift_kube.events = events_in(drift.start, drift.end);
        [create_kube, steady_kube, edit_kube, drift_kube]
    }
}

async fn per_key(opts: &Options, objects: &[Object], workers: usize) -> Result<PerKeyRunReport> {
    let emu = workload::emulator(objects, opts.latency).await?;
    let url = emu.url();
    let owned = objects.to_vec();
    let rps = opts.rps;
    let run = tokio::task::spawn_blocking(move || {
        perkey::run(&url, workload::TOKEN, &owned, workers, rps)
    })
    .await
    .context("per-key thread")??;
    let calls = tally(&emu.requests());
    emu.shutdown().await;
    let mut done: Vec<f64> = run.done_after.iter().map(|d| ms(*d)).collect();
    eprintln!(
        "bench: N={}: per-key baseline took {:.1} s ({} calls, {} failed)",
        objects.len(),
        run.wall.as_secs_f64(),
        calls.total(),
        run.errors
    );
    Ok(PerKeyRunReport {
        workers,
        rps,
        wall_s: run.wall.as_secs_f64(),
        p50_ms: report::quantile(&mut done, 0.5),
        p99_ms: report::quantile(&mut done, 0.99),
        calls,
        cpu_s: run.cpu_seconds,
    })
}

/// CPU seconds so far of (etcd + kube-apiserver, this process: the emulator, watches, creates).
fn others_cpu(cp: &ControlPlane) -> (f64, f64) {
    let control_plane = cp
        .process_ids()
        .into_iter()
        .filter_map(|pid| proc_stats(pid).ok())
        .map(|s| s.cpu_seconds)
        .sum();
    let bench = proc_stats(std::process::id()).map_or(0.0, |s| s.cpu_seconds);
    (control_plane, bench)
}

impl Machine {
    /// The machine as a run starts: CPUs, load, other compilers running.
    fn at_start() -> Machine {
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            load_start: load_average(),
            other_rustc_start: count_processes("rustc"),
            ..Machine::default()
        }
    }

    /// Records the load and other compilers as the run ends.
    fn finish(&mut self) {
        self.load_end = load_average();
        self.other_rustc_end = count_processes("rustc");
    }
}

/// 1-minute load average.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Processes whose command name is `name`.
fn count_processes(name: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .count()
}
