//! Registering every family (the order `/metrics` lists them in).

use prometheus_client::registry::Metric;

use super::*;

impl Metrics {
    /// A registry with every family of the operator registered.
    // Long because it is one registration per family, in the order `/metrics` lists them (the
    // order of the fields below: Rust evaluates them as written); splitting it would only
    // scatter that list.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let r = &mut registry;
        Self {
            reconcile_total: add(
                r,
                "controller_runtime_reconcile",
                "Total number of reconciliations per controller and result (success, error, requeue)",
            ),
            reconcile_errors: add(
                r,
                "controller_runtime_reconcile_errors",
                "Total number of reconciliation errors per controller",
            ),
            terminal_errors: add(
                r,
                "controller_runtime_terminal_reconcile_errors",
                "Total number of terminal reconciliation errors per controller (objects left Stalled until the user acts)",
            ),
            reconcile_time: histogram(
                r,
                "controller_runtime_reconcile_time",
                "Length of time per reconciliation per controller",
                reconcile_histogram,
            ),
            cleanup_failures: add(
                r,
                "zitadel_metadata_cleanup_failures",
                "Deletions whose cleanup failed (the object keeps its finalizer and is retried), per controller and reason of the failure",
            ),
            max_concurrent: add(
                r,
                "controller_runtime_max_concurrent_reconciles",
                "Maximum number of concurrent reconciles per controller",
            ),
            active_workers: add(
                r,
                "controller_runtime_active_workers",
                "Number of currently running reconciles per controller",
            ),
            zitadel_requests: add(
                r,
                "zitadel_requests",
                "ZITADEL API requests by operation and HTTP status code (\"timeout\" / \"error\" when no response arrived)",
            ),
            zitadel_duration: histogram(
                r,
                "zitadel_request_duration",
                "Latency of ZITADEL API requests by operation",
                request_histogram,
            ),
            token_refreshes: add(
                r,
                "zitadel_token_refreshes",
                "Times the ZITADEL token read from its file or Secret changed (rotation picked up)",
            ),
            api_selected: add(
                r,
                "zitadel_api_selected",
                "ZITADEL clients (connections) using API `api` (v1/v2) for `service` (user_metadata/org_metadata), as probed or pinned",
            ),
            objects: add(
                r,
                "zitadel_metadata_objects",
                "Managed OrgMetadata/UserMetadata objects by kind and status of their Ready condition",
            ),
            leader: add(
                r,
                "leader_election_master_status",
                "1 while this process holds the leader-election Lease `name`, else 0",
            ),
            default_credentials: add(
                r,
                "zitadel_default_connection_credentials",
                "1 for the state of the default connection's credential (unknown, unavailable: missing or unreadable, read: not yet checked, accepted, rejected by ZITADEL), 0 for the others; `source` names the Secret and key or the file",
            ),
            drift_mode: add(
                r,
                "zitadel_drift_detection_mode",
                "Connections in use (`connection_kind`: default, ZitadelConnection, ClusterZitadelConnection) by how drift is detected: Events (ZITADEL's event log) or Polling (per-object re-listing)",
            ),
            drift_polls: add(
                r,
                "zitadel_drift_event_polls",
                "Rounds of reading a connection's ZITADEL event log, by result (ok, error)",
            ),
            drift_events: add(
                r,
                "zitadel_drift_events",
                "New ZITADEL events read, by verdict: drift (re-syncs the objects on that organization or user), own (caused by the operator's own writes: nothing to do), ignored",
            ),
            drift_triggered: add(
                r,
                "zitadel_drift_triggered_reconciles",
                "Reconciles triggered by ZITADEL events",
            ),
            object_counters: Mutex::new(BTreeMap::new()),
            registry,
        }
    }
}

/// Register a new metric (family) under `name` and return the handle to record with.
fn add<M: Metric + Default + Clone>(registry: &mut Registry, name: &str, help: &str) -> M {
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

/// Register a new histogram family in seconds, with the buckets `buckets` makes.
fn histogram<L: Clone + std::hash::Hash + Eq>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    buckets: fn() -> Histogram,
) -> HistogramFamily<L>
where
    HistogramFamily<L>: Metric + Clone,
{
    let family = Family::new_with_constructor(buckets);
    registry.register_with_unit(name, help, Unit::Seconds, family.clone());
    family
}
