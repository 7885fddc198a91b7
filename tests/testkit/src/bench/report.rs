//! Results of a benchmark run: the data (serialised as JSON), a flat CSV, and Markdown tables.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::workload::CallKind;

/// ZITADEL calls by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Calls {
    /// Metadata lists.
    pub list: u64,
    /// Bulk sets.
    pub bulk_set: u64,
    /// Bulk removes.
    pub bulk_remove: u64,
    /// Single-key sets.
    pub set: u64,
    /// Everything else.
    pub other: u64,
    /// Answers other than 2xx.
    pub errors: u64,
}

impl Calls {
    /// Counts one call.
    pub fn add(&mut self, kind: CallKind, status: u16) {
        match kind {
            CallKind::List => self.list += 1,
            CallKind::BulkSet => self.bulk_set += 1,
            CallKind::BulkRemove => self.bulk_remove += 1,
            CallKind::Set => self.set += 1,
            CallKind::Other => self.other += 1,
        }
        if !(200..300).contains(&status) {
            self.errors += 1;
        }
    }

    /// All calls.
    pub fn total(&self) -> u64 {
        self.list + self.bulk_set + self.bulk_remove + self.set + self.other
    }

    /// Metadata writes (bulk set, bulk remove, set).
    pub fn writes(&self) -> u64 {
        self.bulk_set + self.bulk_remove + self.set
    }

    /// Calls other than lists and bulk sets.
    pub fn besides_list_and_bulk_set(&self) -> u64 {
        self.total() - self.list - self.bulk_set
    }

    /// Markdown cells: total, list, bulk set, bulk remove, set, other, calls per object.
    fn markdown_cells(&self, objects: usize) -> String {
        format!(
            "{} | {} | {} | {} | {} | {} | {:.2}",
            self.total(),
            self.list,
            self.bulk_set,
            self.bulk_remove,
            self.set,
            self.other,
            self.total() as f64 / objects as f64,
        )
    }

    /// CSV cells: total, list, bulk set, bulk remove, set, other, errors.
    fn csv_cells(&self) -> String {
        let c = self;
        let (total, errors) = (c.total(), c.errors);
        format!(
            "{total},{},{},{},{},{},{errors}",
            c.list, c.bulk_set, c.bulk_remove, c.set, c.other
        )
    }
}

/// Writes to the benchmark's objects and Events, as seen through a watch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KubeWrites {
    /// Finalizer additions/removals.
    pub finalizer: u64,
    /// Status patches that changed something.
    pub status: u64,
    /// Other metadata changes.
    pub other: u64,
    /// Event objects created in the namespace.
    pub events: u64,
}

impl KubeWrites {
    /// All writes.
    pub fn total(&self) -> u64 {
        self.finalizer + self.status + self.other + self.events
    }
}

/// Steady state: several resync intervals on the converged system, nothing changed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Steady {
    /// Length of the observed window, seconds.
    pub window_s: f64,
    /// Resync intervals in the window (as asked; `window_s` says when `--steady-secs` set it).
    pub resyncs: u32,
    /// Wait before the window (after the first resync interval from convergence), seconds.
    pub settle_s: f64,
    /// ZITADEL calls in the window.
    pub calls: Calls,
    /// ZITADEL metadata writes in the window (target 0).
    pub zitadel_writes: u64,
    /// Kubernetes writes in the window (target 0).
    pub kube: KubeWrites,
    /// Metadata lists per resync interval (Polling mode: ideally = N).
    pub reads_per_resync: f64,
    /// ListEvents calls (reads of ZITADEL's event log) in the window (counted in `calls.other`).
    pub list_events: u64,
    /// ListEvents calls per event poll interval (Events mode: ideally 1).
    pub list_events_per_poll: f64,
    /// All ZITADEL calls per event poll interval (issue 13: ≤ 2 per connection in Events mode;
    /// the bench has one connection).
    pub calls_per_poll: f64,
    /// Operator CPU seconds in the window.
    pub cpu_s: f64,
    /// How the lists were spread over the window (bursts vs evenly).
    pub spread: Spread,
}

/// A restart of the converged operator: a new process, observed for a few resync intervals.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Restart {
    /// Length of the observed window (from the new process's start), seconds.
    pub window_s: f64,
    /// Resync intervals in the window.
    pub resyncs: u32,
    /// ZITADEL calls in the window.
    pub calls: Calls,
    /// ZITADEL metadata writes in the window (target 0).
    pub zitadel_writes: u64,
    /// Kubernetes writes in the window (target 0).
    pub kube: KubeWrites,
    /// Lists per resync interval (the start's full pass included).
    pub lists_per_resync: f64,
    /// How the lists were spread over the window.
    pub spread: Spread,
    /// The new process's CPU seconds.
    pub cpu_s: f64,
    /// The new process's peak RSS, MiB.
    pub rss_peak_mib: f64,
    /// kube-apiserver + etcd cost of the window.
    pub control_plane: super::apiserver::PhaseCost,
}

/// How calls are distributed over a window, in buckets of `bucket_s` seconds: evenly spread
/// calls fill every bucket near the mean; a burst fills a few buckets far above it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Spread {
    /// Bucket length, seconds.
    pub bucket_s: f64,
    /// Calls in the window.
    pub calls: u64,
    /// Calls per second over the window.
    pub mean_per_s: f64,
    /// Busiest bucket, calls per second.
    pub peak_per_s: f64,
    /// 90th percentile of the buckets, calls per second.
    pub p90_per_s: f64,
    /// Busiest bucket ÷ mean (1 = perfectly even).
    pub peak_to_mean: f64,
    /// Share of the buckets holding at least one call, percent.
    pub active_pct: f64,
    /// Share of the window (its busiest buckets) holding 90 % of the calls, percent (about 90
    /// when even; small when bursty).
    pub window_pct_for_90pct: f64,
    /// Calls per bucket, in time order.
    pub timeline: Vec<u32>,
}

impl Spread {
    /// The spread of calls made at `offsets` (from the start of a window of length `window`).
    pub fn of(
        offsets: &[std::time::Duration],
        window: std::time::Duration,
        bucket: std::time::Duration,
    ) -> Spread {
        let bucket_s = bucket.as_secs_f64().max(1e-3);
        let buckets = ((window.as_secs_f64() / bucket_s).ceil() as usize).max(1);
        let mut timeline = vec![0u32; buckets];
        for o in offsets {
            let i = ((o.as_secs_f64() / bucket_s) as usize).min(buckets - 1);
            timeline[i] += 1;
        }
        let calls = offsets.len() as u64;
        let window_s = window.as_secs_f64().max(bucket_s);
        let mean_per_s = calls as f64 / window_s;
        let mut sorted: Vec<u32> = timeline.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let peak_per_s = f64::from(sorted.first().copied().unwrap_or(0)) / bucket_s;
        let mut ascending: Vec<f64> = sorted.iter().map(|c| f64::from(*c) / bucket_s).collect();
        let p90_per_s = quantile(&mut ascending, 0.9);
        let target = (calls as f64 * 0.9).ceil() as u64;
        let mut covered = 0u64;
        let mut used = 0usize;
        for c in &sorted {
            if covered >= target {
                break;
            }
            covered += u64::from(*c);
            used += 1;
        }
        Spread {
            bucket_s,
            calls,
            mean_per_s,
            peak_per_s,
            p90_per_s,
            peak_to_mean: if mean_per_s > 0.0 {
                peak_per_s / mean_per_s
            } else {
                0.0
            },
            active_pct: 100.0 * timeline.iter().filter(|c| **c > 0).count() as f64 / buckets as f64,
            window_pct_for_90pct: if calls == 0 {
                0.0
            } else {
                100.0 * used as f64 / buckets as f64
            },
            timeline,
        }
    }
}

/// One edit of one object on the converged system.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Edit {
    /// Patch sent to Ready=True at the new generation, ms.
    pub ready_ms: f64,
    /// ZITADEL calls for the edited object's target.
    pub calls: Calls,
    /// Writes to the edited object (status, ...) and Events.
    pub kube: KubeWrites,
}

/// The operator (bulk diff strategy) at one N.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BulkRun {
    /// `--max-concurrent-reconciles` (per kind).
    pub concurrency: u16,
    /// Whether that is the operator's default.
    pub default_concurrency: bool,
    /// `--zitadel-rps` (0 = unlimited).
    pub rps: u32,
    /// `--resync-interval`, seconds.
    pub resync_s: f64,
    /// Objects that became Ready.
    pub ready: usize,
    /// First create sent to last object Ready, seconds.
    pub converge_s: f64,
    /// Time the creates took (bounded client concurrency), seconds.
    pub create_s: f64,
    /// Apply→Ready per object, median, ms.
    pub p50_ms: f64,
    /// Apply→Ready per object, 99th percentile, ms.
    pub p99_ms: f64,
    /// Apply→Ready, slowest object, ms.
    pub max_ms: f64,
    /// ZITADEL calls made for the creation (per object: until its first resync).
    pub create_calls: Calls,
    /// Most lists made for one object on create.
    pub max_lists_per_object: u64,
    /// Most bulk sets made for one object on create.
    pub max_bulk_sets_per_object: u64,
    /// Kubernetes writes for the creation.
    pub create_kube: KubeWrites,
    /// Steady state.
    pub steady: Steady,
    /// One edit.
    pub edit: Edit,
    /// Operator CPU seconds from the first create to convergence.
    pub cpu_converge_s: f64,
    /// etcd + kube-apiserver CPU seconds from the first create to convergence.
    pub control_plane_cpu_converge_s: f64,
    /// How busy the machine was while converging, and how much of it went to processes that
    /// are not part of the benchmark (contention).
    pub contention: super::busy::Contention,
    /// The benchmark process's CPU seconds in that time (emulator, watches, creates).
    pub bench_cpu_converge_s: f64,
    /// Operator CPU seconds over its whole life in this run.
    pub cpu_total_s: f64,
    /// Operator resident memory at convergence, MiB.
    pub rss_converged_mib: f64,
    /// Operator peak resident memory (VmHWM), MiB.
    pub rss_peak_mib: f64,
    /// Operator anonymous resident memory (heap, stacks) at convergence, MiB.
    pub rss_anon_converged_mib: f64,
    /// Operator file-backed resident memory (its binary, libraries) at convergence, MiB.
    pub rss_file_converged_mib: f64,
    /// Watch restarts of the benchmark's own watch (0: no write can have been missed).
    pub watch_restarts: usize,
    /// kube-apiserver + etcd cost per phase: `create` (first create sent to the last create
    /// answered), `converge` (from there to the last object Ready), `create+converge`, `steady`
    /// (the steady-state window), `edit` (one object edited).
    pub control_plane: Vec<super::apiserver::PhaseCost>,
    /// The restart phase, when run.
    pub restart: Option<Restart>,
    /// How the operator detected drift after the steady window: `Events` or `Polling` (its
    /// metric `zitadel_drift_detection_mode` for the default connection), else what
    /// `DRIFT_DETECTION` asked for, marked "(not in the metric)".
    pub drift_mode: String,
    /// The operator's event poll interval, seconds.
    pub event_poll_s: f64,
    /// The drift-repair phase (out-of-band edits in ZITADEL), when run.
    pub drift: Option<super::drift::Drift>,
    /// With `--shards` ≥ 2: who reconciled what, per shard (CPU and RSS above are summed over
    /// the shards).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<super::shards::Shards>,
}

impl BulkRun {
    /// The control-plane cost of `phase`, if measured.
    pub fn phase(&self, phase: &str) -> Option<&super::apiserver::PhaseCost> {
        self.control_plane.iter().find(|p| p.phase == phase)
    }
}

/// The per-key baseline at one N.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PerKeyRunReport {
    /// Objects synced at once.
    pub workers: usize,
    /// Requests per second budget (0 = unlimited).
    pub rps: u32,
    /// Start to last object synced, seconds.
    pub wall_s: f64,
    /// Start to object synced, median, ms.
    pub p50_ms: f64,
    /// Start to object synced, 99th percentile, ms.
    pub p99_ms: f64,
    /// ZITADEL calls.
    pub calls: Calls,
    /// CPU seconds of the syncer's own thread.
    pub cpu_s: f64,
}

/// Per-key divided by bulk.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Ratios {
    /// ZITADEL calls on create.
    pub calls: f64,
    /// Wall time to converge.
    pub wall: f64,
    /// CPU seconds (per-key syncer thread vs operator process).
    pub cpu: f64,
}

/// Everything measured at one N.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunReport {
    /// Objects.
    pub objects: usize,
    /// Keys per object.
    pub keys: usize,
    /// Emulator latency per call, ms.
    pub latency_ms: u64,
    /// The operator.
    pub bulk: Option<BulkRun>,
    /// The per-key baseline.
    pub per_key: Option<PerKeyRunReport>,
    /// Per-key / bulk.
    pub ratios: Option<Ratios>,
    /// The control plane's floor (`--floor`): the same creates, only a status `PUT` per object.
    pub floor: Option<super::FloorRun>,
}

/// The machine while the benchmark ran.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Machine {
    /// CPUs available.
    pub cpus: usize,
    /// 1-minute load average at the start.
    pub load_start: f64,
    /// 1-minute load average at the end.
    pub load_end: f64,
    /// Other `rustc` processes seen at the start and at the end (other builds on a shared box).
    pub other_rustc_start: usize,
    /// See `other_rustc_start`.
    pub other_rustc_end: usize,
}

/// A whole benchmark run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// UTC start time, RFC 3339.
    pub date: String,
    /// The command line.
    pub command: String,
    /// The machine.
    pub machine: Machine,
    /// `deploy/admission/cleanup-finalizer.yaml` was installed: new objects got the cleanup
    /// finalizer at admission, so the operator made no finalizer write.
    pub finalizer_policy: bool,
    /// One entry per N.
    pub runs: Vec<RunReport>,
}

fn f1(x: f64) -> String {
    format!("{x:.1}")
}

fn f0(x: f64) -> String {
    format!("{x:.0}")
}

/// A Markdown table after a blank line: the `header` and `align` rows, then `rows`; nothing
/// when there are no rows.
pub(crate) fn table(out: &mut String, header: &str, align: &str, rows: Vec<String>) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "{header}");
    let _ = writeln!(out, "{align}");
    for row in rows {
        let _ = writeln!(out, "{row}");
    }
}

impl Report {
    /// Markdown tables: convergence, steady state + edit, and ratios.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        self.markdown_runs(&mut out);
        self.markdown_steady(&mut out);
        self.markdown_drift(&mut out);
        self.markdown_cpu(&mut out);
        self.markdown_control_plane(&mut out);
        self.markdown_ratios(&mut out);
        self.markdown_floor(&mut out);
        self.markdown_shards(&mut out);
        out
    }

    /// The first table: one row per run and strategy (creation).
    fn markdown_runs(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "Finalizer policy (MutatingAdmissionPolicy): {}\n",
            if self.finalizer_policy {
                "installed"
            } else {
                "not installed"
            }
        );
        let _ = writeln!(
            out,
            "| N | strategy | converge s | p50 ms | p99 ms | ZITADEL calls | list | bulk set | bulk rm | set | other | calls/object | K8s writes (finalizer/status/events) | CPU s | peak RSS MiB |"
        );
        let _ = writeln!(
            out,
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"
        );
        for r in &self.runs {
            if let Some(b) = &r.bulk {
                let k = &b.create_kube;
                let _ = writeln!(
                    out,
                    "| {} | bulk diff (operator) | {} | {} | {} | {} | {}/{}/{} | {:.1} | {} |",
                    r.objects,
                    f1(b.converge_s),
                    f0(b.p50_ms),
                    f0(b.p99_ms),
                    b.create_calls.markdown_cells(r.objects),
                    k.finalizer,
                    k.status,
                    k.events,
                    b.cpu_converge_s,
                    f1(b.rss_peak_mib),
                );
            }
            if let Some(p) = &r.per_key {
                let _ = writeln!(
                    out,
                    "| {} | per-key baseline | {} | {} | {} | {} | – | {:.1} | – |",
                    r.objects,
                    f1(p.wall_s),
                    f0(p.p50_ms),
                    f0(p.p99_ms),
                    p.calls.markdown_cells(r.objects),
                    p.cpu_s,
                );
            }
        }
    }

    /// Steady state and the edit, per bulk run.
    fn markdown_steady(&self, out: &mut String) {
        let rows = self.bulk_runs().into_iter().map(|(r, b)| {
            let e = &b.edit.calls;
            format!(
                    "| {} | {} | {} | {} | {} | {:.1} | {} | {} list + {} bulk set + {} other | {} | {} |",
                    r.objects,
                    b.steady.resyncs,
                    b.steady.zitadel_writes,
                    b.steady.kube.total(),
                    f0(b.steady.reads_per_resync),
                    b.steady.cpu_s,
                    f0(b.edit.ready_ms),
                    e.list,
                    e.bulk_set,
                    e.bulk_remove + e.set + e.other,
                    b.edit.kube.total(),
                    f1(b.rss_converged_mib),
            )
        });
        table(
            out,
            "| N | steady: resyncs | ZITADEL writes | K8s writes | lists/resync | CPU s | edit: ms to Ready | edit: ZITADEL calls | edit: K8s writes | RSS at converge MiB |",
            "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
            rows.collect(),
        );
    }

    /// Drift detection in the steady window, and the drift-repair phase, per bulk run.
    fn markdown_drift(&self, out: &mut String) {
        let runs = self.bulk_runs();
        let steady = runs
            .iter()
            .filter(|(_, b)| b.steady.window_s > 0.0)
            .map(|(r, b)| {
                let s = &b.steady;
                // Per event poll interval means nothing where the event log is not read.
                let per_poll = |x: f64| {
                    if b.drift_mode == "Polling" {
                        "–".to_owned()
                    } else {
                        format!("{x:.2}")
                    }
                };
                format!(
                    "| {} | {} | {:.0} | {:.0} | {:.1} | {:.1} | {} | {} | {} | {} |",
                    r.objects,
                    b.drift_mode,
                    b.event_poll_s,
                    b.resync_s,
                    s.settle_s,
                    s.window_s,
                    s.list_events,
                    per_poll(s.list_events_per_poll),
                    s.calls.total(),
                    per_poll(s.calls_per_poll),
                )
            });
        table(
            out,
            "| N | steady: drift mode | event poll s | resync s | settle s | window s | ListEvents | ListEvents / poll interval | ZITADEL calls | calls / poll interval |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            steady.collect(),
        );
        let [header, align] = super::drift::MARKDOWN_HEADER;
        let rows = runs
            .iter()
            .filter_map(|(r, b)| Some(b.drift.as_ref()?.markdown_row(r.objects)));
        table(out, header, align, rows.collect());
    }

    /// Where the CPU went during convergence, per bulk run.
    fn markdown_cpu(&self, out: &mut String) {
        let rows = self.bulk_runs().into_iter().map(|(r, b)| {
            format!(
                    "| {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.0}% / {:.0}% | {:.1} CPU s, busy in {:.0}% of samples | {} |",
                    r.objects,
                    b.converge_s * self.machine.cpus as f64,
                    b.cpu_converge_s,
                    b.control_plane_cpu_converge_s,
                    b.bench_cpu_converge_s,
                    b.contention.machine_busy_mean_pct,
                    b.contention.machine_busy_peak_pct,
                    b.contention.other_cpu_s,
                    b.contention.others_busy_pct(),
                    b.contention.top_others_text(3),
            )
        });
        let header = format!(
            "| N | CPU s during convergence: available ({} cores × converge s) | operator | kube-apiserver + etcd | bench + emulator | machine busy (mean / peak) | other processes (contention) | busiest others |",
            self.machine.cpus
        );
        table(
            out,
            &header,
            "|---:|---:|---:|---:|---:|---:|---:|---|",
            rows.collect(),
        );
    }

    /// The control plane's cost per phase, and how the lists spread over the window.
    fn markdown_control_plane(&self, out: &mut String) {
        let mut costed = self.bulk_runs();
        costed.retain(|(_, b)| !b.control_plane.is_empty());
        let phases = costed.iter().flat_map(|(r, b)| {
            b.control_plane.iter().map(|p| {
                format!(
                    "| {} | {} | {:.1} | {:.1} | {:.1} | {:.2} | {} | {} | {} ({:.1}) | {} |",
                    r.objects,
                    p.phase,
                    p.wall_s,
                    p.apiserver_cpu_s,
                    p.etcd_cpu_s,
                    p.cpu_ms_per_object(),
                    p.request_count(),
                    p.etcd_puts,
                    p.watch_events_sent,
                    p.watch_event_bytes as f64 / 1024.0 / 1024.0,
                    p.top_requests(6),
                )
            })
        });
        table(
            out,
            "| N | control plane: phase | wall s | kube-apiserver CPU s | etcd CPU s | CPU ms per object | requests | etcd puts | watch events sent (MiB) | most frequent requests |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
            phases.collect(),
        );
        let spreads = costed.iter().flat_map(|(r, b)| {
            let steady = ("steady", &b.steady.spread, b.steady.reads_per_resync);
            let restart = b
                .restart
                .as_ref()
                .map(|x| ("after a restart", &x.spread, x.lists_per_resync));
            std::iter::once(steady).chain(restart).map(|(what, sp, per_resync)| {
                format!(
                    "| {} ({what}) | {} | {:.0} | {:.1} | {:.0} | {:.0} | {:.1} | {:.0}% | {:.0}% |",
                    r.objects,
                    sp.calls,
                    per_resync,
                    sp.mean_per_s,
                    sp.peak_per_s,
                    sp.p90_per_s,
                    sp.peak_to_mean,
                    sp.active_pct,
                    sp.window_pct_for_90pct,
                )
            })
        });
        table(
            out,
            "| N | lists over the window | per resync | mean / s | peak / s | p90 / s | peak ÷ mean | buckets with calls | share of window holding 90 % |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            spreads.collect(),
        );
    }

    /// Per-key ÷ bulk, per run that had both.
    fn markdown_ratios(&self, out: &mut String) {
        let rows = self.runs.iter().filter_map(|r| {
            let x = r.ratios.as_ref()?;
            Some(format!(
                "| {} | {:.1}x | {:.1}x | {:.2}x |",
                r.objects, x.calls, x.wall, x.cpu
            ))
        });
        table(
            out,
            "| N | per-key ÷ bulk: ZITADEL calls | wall time | CPU |",
            "|---:|---:|---:|---:|",
            rows.collect(),
        );
    }

    /// The control plane's floor against the operator and the per-key baseline of the same run.
    fn markdown_floor(&self, out: &mut String) {
        let secs = |s: Option<f64>| s.map_or("-".to_string(), |s| format!("{s:.1}"));
        let ratio = |a: Option<f64>, b: f64| match a {
            Some(a) if b > 0.0 => format!("{:.2}x", a / b),
            _ => "-".to_string(),
        };
        let rows = self.runs.iter().filter_map(|r| {
            let f = r.floor.as_ref()?;
            let operator = r.bulk.as_ref().map(|b| b.converge_s);
            let per_key = r.per_key.as_ref().map(|p| p.wall_s);
            Some(format!(
                "| {} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {:.2} | {} ({} after a 409) | {:.1} | {:.1} CPU s, busy in {:.0}% of samples |",
                r.objects,
                f.converge_s,
                f.create_s,
                secs(operator),
                secs(per_key),
                ratio(per_key, f.converge_s),
                ratio(per_key, operator.unwrap_or(0.0)),
                ratio(operator, f.converge_s),
                f.control_plane.cpu_ms_per_object(),
                f.status_puts,
                f.conflicts,
                f.bench_cpu_s,
                f.contention.other_cpu_s,
                f.contention.others_busy_pct(),
            ))
        });
        table(
            out,
            "| N | floor: all Ready s | floor: creates s | operator: all Ready s | per-key baseline s | per-key ÷ floor (best reachable) | per-key ÷ operator | operator ÷ floor | floor: control plane CPU ms per object | floor: status PUTs | floor: bench CPU s | floor: other processes (contention) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            rows.collect(),
        );
    }

    /// The runs that had a bulk (operator) run.
    fn bulk_runs(&self) -> Vec<(&RunReport, &BulkRun)> {
        self.runs
            .iter()
            .filter_map(|r| r.bulk.as_ref().map(|b| (r, b)))
            .collect()
    }

    /// One CSV row per N and strategy.
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "objects,keys,latency_ms,strategy,concurrency,rps,converge_s,p50_ms,p99_ms,max_ms,calls_total,calls_list,calls_bulk_set,calls_bulk_remove,calls_set,calls_other,calls_errors,max_lists_per_object,max_bulk_sets_per_object,k8s_finalizer_writes,k8s_status_writes,k8s_other_writes,k8s_events,cpu_s,rss_converged_mib,rss_peak_mib,steady_resyncs,steady_zitadel_writes,steady_k8s_writes,steady_lists_per_resync,steady_cpu_s,edit_ready_ms,edit_calls,edit_k8s_writes,machine_busy_mean_pct,machine_busy_peak_pct,other_cpu_s,others_busy_pct,rss_anon_converged_mib,rss_file_converged_mib,cp_create_apiserver_cpu_s,cp_create_etcd_cpu_s,cp_converge_apiserver_cpu_s,cp_converge_etcd_cpu_s,cp_create_converge_cpu_ms_per_object,cp_steady_apiserver_cpu_s,cp_steady_etcd_cpu_s,cp_converge_requests,cp_converge_watch_events,steady_lists_peak_per_s,steady_lists_mean_per_s,steady_window_pct_for_90pct,drift_mode,event_poll_s,steady_window_s,steady_list_events,steady_list_events_per_poll,steady_calls_per_poll,",
        );
        out.push_str(super::drift::CSV_HEADER);
        out.push('\n');
        let none = super::apiserver::PhaseCost::default();
        for r in &self.runs {
            if let Some(b) = &r.bulk {
                let k = &b.create_kube;
                let cp = |phase: &str| b.phase(phase).unwrap_or(&none);
                let _ = writeln!(
                    out,
                    "{},{},{},bulk,{},{},{:.3},{:.1},{:.1},{:.1},{},{},{},{},{},{},{},{:.3},{:.1},{:.1},{},{},{},{:.1},{:.3},{:.1},{},{},{:.1},{:.1},{:.2},{:.1},{:.1},{:.1},{:.2},{:.2},{:.2},{:.2},{:.3},{:.2},{:.2},{},{},{:.0},{:.2},{:.1},{},{:.1},{:.1},{},{:.2},{:.2},{}",
                    r.objects,
                    r.keys,
                    r.latency_ms,
                    b.concurrency,
                    b.rps,
                    b.converge_s,
                    b.p50_ms,
                    b.p99_ms,
                    b.max_ms,
                    b.create_calls.csv_cells(),
                    b.max_lists_per_object,
                    b.max_bulk_sets_per_object,
                    k.finalizer,
                    k.status,
                    k.other,
                    k.events,
                    b.cpu_converge_s,
                    b.rss_converged_mib,
                    b.rss_peak_mib,
                    b.steady.resyncs,
                    b.steady.zitadel_writes,
                    b.steady.kube.total(),
                    b.steady.reads_per_resync,
                    b.steady.cpu_s,
                    b.edit.ready_ms,
                    b.edit.calls.total(),
                    b.edit.kube.total(),
                    b.contention.machine_busy_mean_pct,
                    b.contention.machine_busy_peak_pct,
                    b.contention.other_cpu_s,
                    b.contention.others_busy_pct(),
                    b.rss_anon_converged_mib,
                    b.rss_file_converged_mib,
                    cp("create").apiserver_cpu_s,
                    cp("create").etcd_cpu_s,
                    cp("converge").apiserver_cpu_s,
                    cp("converge").etcd_cpu_s,
                    cp("create+converge").cpu_ms_per_object(),
                    cp("steady").apiserver_cpu_s,
                    cp("steady").etcd_cpu_s,
                    cp("converge").request_count(),
                    cp("converge").watch_events_sent,
                    b.steady.spread.peak_per_s,
                    b.steady.spread.mean_per_s,
                    b.steady.spread.window_pct_for_90pct,
                    b.drift_mode.replace(',', ";"),
                    b.event_poll_s,
                    b.steady.window_s,
                    b.steady.list_events,
                    b.steady.list_events_per_poll,
                    b.steady.calls_per_poll,
                    b.drift
                        .as_ref()
                        .map_or_else(|| super::drift::CSV_EMPTY.to_owned(), |d| d.csv_cells()),
                );
            }
            if let Some(p) = &r.per_key {
                let _ = writeln!(
                    out,
                    "{},{},{},per-key,{},{},{:.3},{:.1},{:.1},,{},,,,,,,{:.3},,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,{}",
                    r.objects,
                    r.keys,
                    r.latency_ms,
                    p.workers,
                    p.rps,
                    p.wall_s,
                    p.p50_ms,
                    p.p99_ms,
                    p.calls.csv_cells(),
                    p.cpu_s,
                    super::drift::CSV_EMPTY,
                );
            }
        }
        out
    }

    /// Writes `bench.json`, `bench.csv` and `bench.md` (and `bench-shards.csv` when a run was
    /// sharded) into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let mut paths = write_files(
            dir,
            "bench",
            serde_json::to_string_pretty(self)?,
            self.csv(),
            format!("{} — `{}`\n\n{}", self.date, self.command, self.markdown()),
        )?;
        // Sharded runs: one row per shard as well (`bench-shards.csv`).
        if let Some(csv) = self.shards_csv() {
            let path = dir.join("bench-shards.csv");
            std::fs::write(&path, csv).with_context(|| format!("writing {}", path.display()))?;
            paths.push(path);
        }
        Ok(paths)
    }
}

/// Writes `<stem>.json`, `<stem>.csv` and `<stem>.md` into `dir` (created if missing); returns
/// their paths.
pub(crate) fn write_files(
    dir: &Path,
    stem: &str,
    json: String,
    csv: String,
    markdown: String,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = [
        (dir.join(format!("{stem}.json")), json),
        (dir.join(format!("{stem}.csv")), csv),
        (dir.join(format!("{stem}.md")), markdown),
    ];
    let mut paths = Vec::new();
    for (path, text) in files {
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        paths.push(path);
    }
    Ok(paths)
}

/// The `q`-quantile (0..=1) of `values` (nearest rank), 0 when empty.
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = (q * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}
