//! Prometheus metrics, named like Go controller-runtime's so existing dashboards work, plus the
//! ZITADEL client, the managed objects and leader election.
//!
//! Every label is bounded: controller/kind names, ZITADEL operation names, HTTP status codes,
//! condition statuses and the Lease name. Object names never appear.
//!
//! Families are registered without their `_total` / `_seconds` suffix; `prometheus-client` adds
//! them when it encodes (OpenMetrics text format).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

mod labels;
mod registry;

use labels::*;

/// `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Outcome label of `controller_runtime_reconcile_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconcileResult {
    /// The object is in sync (or its cleanup finished).
    Success,
    /// The reconcile failed (transient errors are retried with backoff; terminal ones, i.e.
    /// `Stalled`, also count in `controller_runtime_terminal_reconcile_errors_total`).
    Error,
    /// Nothing synced yet, another reconcile follows (the finalizer was just added).
    Requeue,
}

impl ReconcileResult {
    fn label(self) -> &'static str {
        match self {
            ReconcileResult::Success => "success",
            ReconcileResult::Error => "error",
            ReconcileResult::Requeue => "requeue",
        }
    }
}

/// Ready-condition statuses of managed objects, counted per kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConditionCounts {
    /// `Ready=True`.
    pub ready_true: i64,
    /// `Ready=False`.
    pub ready_false: i64,
    /// No `Ready` condition yet, or `Ready=Unknown`.
    pub unknown: i64,
}

impl ConditionCounts {
    /// Count one object by the status of its `Ready` condition (`None` = no condition).
    pub fn add(&mut self, ready: Option<&str>) {
        match ready {
            Some("True") => self.ready_true += 1,
            Some("False") => self.ready_false += 1,
            _ => self.unknown += 1,
        }
    }
}

/// Something that can count the managed objects of one kind when `/metrics` is scraped (the
/// controllers' caches).
pub type ObjectCounter = Box<dyn Fn() -> ConditionCounts + Send + Sync>;

/// All metrics of the process and their registry. Cheap to share (`Arc<Metrics>`); the metric
/// handles are internally reference-counted and atomic.
pub struct Metrics {
    registry: Registry,
    reconcile_total: Family<ReconcileLabels, Counter>,
    reconcile_errors: Family<ControllerLabels, Counter>,
    terminal_errors: Family<ControllerLabels, Counter>,
    reconcile_time: HistogramFamily<ControllerLabels>,
    cleanup_failures: Family<CleanupLabels, Counter>,
    max_concurrent: Family<ControllerLabels, Gauge>,
    active_workers: Family<ControllerLabels, Gauge>,
    zitadel_requests: Family<RequestLabels, Counter>,
    zitadel_duration: HistogramFamily<OperationLabels>,
    token_refreshes: Counter,
    api_selected: Family<ApiLabels, Gauge>,
    objects: Family<ObjectLabels, Gauge>,
    object_counters: Mutex<BTreeMap<String, ObjectCounter>>,
    leader: Family<LeaseLabels, Gauge>,
    default_credentials: Family<CredentialLabels, Gauge>,
    drift_mode: Family<DriftModeLabels, Gauge>,
    drift_polls: Family<ResultLabels, Counter>,
    drift_events: Family<VerdictLabels, Counter>,
    drift_triggered: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Declare a controller: publishes its concurrency limit and zero-valued series, so
    /// dashboards show it before its first reconcile.
    pub fn register_controller(&self, controller: &'static str, max_concurrent: u16) {
        let labels = ControllerLabels { controller };
        self.max_concurrent
            .get_or_create(&labels)
            .set(i64::from(max_concurrent));
        let _ = self.active_workers.get_or_create(&labels);
        let _ = self.reconcile_errors.get_or_create(&labels);
        let _ = self.terminal_errors.get_or_create(&labels);
        for result in [
            ReconcileResult::Success,
            ReconcileResult::Error,
            ReconcileResult::Requeue,
        ] {
            let _ = self.reconcile_total.get_or_create(&ReconcileLabels {
                controller,
                result: result.label(),
            });
        }
    }

    /// A reconcile started; the returned guard counts it as an active worker until dropped.
    pub fn reconcile_started(&self, controller: &'static str) -> ActiveWorker {
        let gauge = self
            .active_workers
            .get_or_create_owned(&ControllerLabels { controller });
        gauge.inc();
        ActiveWorker { gauge }
    }

    /// A reconcile finished after `elapsed` with `result`; `terminal` marks an error the
    /// operator will not resolve by retrying (the object is `Stalled`).
    pub fn reconcile_finished(
        &self,
        controller: &'static str,
        result: ReconcileResult,
        terminal: bool,
        elapsed: Duration,
    ) {
        let labels = ControllerLabels { controller };
        self.reconcile_total
            .get_or_create(&ReconcileLabels {
                controller,
                result: result.label(),
            })
            .inc();
        if result == ReconcileResult::Error {
            self.reconcile_errors.get_or_create(&labels).inc();
            if terminal {
                self.terminal_errors.get_or_create(&labels).inc();
            }
        }
        self.reconcile_time
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// A cleanup of `controller` failed for `reason` (the finalizer stays).
    pub fn cleanup_failed(&self, controller: &'static str, reason: crate::reason::Reason) {
        self.cleanup_failures
            .get_or_create(&CleanupLabels {
                controller,
                reason: reason.as_str(),
            })
            .inc();
    }

    /// One ZITADEL request finished. `code` is the HTTP status, or `"timeout"` / `"error"`.
    pub fn zitadel_request(&self, operation: &'static str, code: &str, elapsed: Duration) {
        self.zitadel_requests
            .get_or_create(&RequestLabels {
                operation,
                code: code.to_string(),
            })
            .inc();
        self.zitadel_duration
            .get_or_create(&OperationLabels { operation })
            .observe(elapsed.as_secs_f64());
    }

    /// The default connection's credential at `source` is in `state` now (one of `states`).
    pub fn set_default_credentials(
        &self,
        source: &str,
        state: &'static str,
        states: &[&'static str],
    ) {
        for s in states {
            let labels = CredentialLabels {
                source: source.to_string(),
                state: s,
            };
            self.default_credentials
                .get_or_create(&labels)
                .set(i64::from(*s == state));
        }
    }

    /// The ZITADEL token changed since it was last used (a rotation was picked up).
    pub fn token_refreshed(&self) {
        self.token_refreshes.inc();
    }

    /// A client started (`delta` 1) or stopped (-1) using `api` for `service`.
    pub fn zitadel_api_selected(&self, service: &'static str, api: &'static str, delta: i64) {
        self.api_selected
            .get_or_create(&ApiLabels { service, api })
            .inc_by(delta);
    }

    /// Count `kind`'s objects with `counter` on every scrape (replaces an earlier counter of the
    /// same kind).
    pub fn set_object_counter(&self, kind: &str, counter: ObjectCounter) {
        if let Ok(mut map) = self.object_counters.lock() {
            map.insert(kind.to_string(), counter);
        }
    }

    /// Stop counting `kind`'s objects (its controllers stopped); its series drop to zero.
    pub fn clear_object_counter(&self, kind: &str) {
        if let Ok(mut map) = self.object_counters.lock() {
            map.remove(kind);
        }
        self.set_objects(kind, ConditionCounts::default());
    }

    fn set_objects(&self, kind: &str, counts: ConditionCounts) {
        for (condition, value) in [
            ("True", counts.ready_true),
            ("False", counts.ready_false),
            ("Unknown", counts.unknown),
        ] {
            self.objects
                .get_or_create(&ObjectLabels {
                    kind: kind.to_string(),
                    condition,
                })
                .set(value);
        }
    }

    /// Set `zitadel_drift_detection_mode{connection_kind, mode}` to `connections`.
    pub fn drift_detection_mode(
        &self,
        connection_kind: &'static str,
        mode: &'static str,
        connections: i64,
    ) {
        self.drift_mode
            .get_or_create(&DriftModeLabels {
                connection_kind,
                mode,
            })
            .set(connections);
    }

    /// One round of reading an event log ended with `result` (`ok` / `error`).
    pub fn drift_poll(&self, result: &'static str) {
        self.drift_polls
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// One new event, with its verdict (`drift`, `own`, `ignored`).
    pub fn drift_event(&self, verdict: &'static str) {
        self.drift_events
            .get_or_create(&VerdictLabels { verdict })
            .inc();
    }

    /// `objects` reconciles were triggered by events.
    pub fn drift_triggered(&self, objects: usize) {
        self.drift_triggered
            .inc_by(u64::try_from(objects).unwrap_or(u64::MAX));
    }

    /// Set `leader_election_master_status{name}`.
    pub fn set_leader(&self, lease: &str, leading: bool) {
        self.leader
            .get_or_create(&LeaseLabels {
                name: lease.to_string(),
            })
            .set(i64::from(leading));
    }

    /// Refresh the object gauges from the caches and render everything in the OpenMetrics text
    /// format (`# EOF`-terminated).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let counts: Vec<(String, ConditionCounts)> = match self.object_counters.lock() {
            Ok(map) => map
                .iter()
                .map(|(kind, count)| (kind.clone(), count()))
                .collect(),
            Err(_) => Vec::new(),
        };
        for (kind, c) in counts {
            self.set_objects(&kind, c);
        }
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Counts a running reconcile in `controller_runtime_active_workers` while alive.
#[derive(Debug)]
pub struct ActiveWorker {
    gauge: Gauge,
}

impl Drop for ActiveWorker {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests;
