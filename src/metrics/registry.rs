//! Registering every family (the order `/metrics` lists them in).

use super::*;

impl Metrics {
    /// A registry with every family of the operator registered.
    // Long because it is one registration per family, in the order `/metrics` lists them;
    // splitting it would only scatter that list.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconcile_total = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "controller_runtime_reconcile",
            "Total number of reconciliations per controller and result (success, error, requeue)",
            reconcile_total.clone(),
        );
        let reconcile_errors = Family::<ControllerLabels, Counter>::default();
        registry.register(
            "controller_runtime_reconcile_errors",
            "Total number of reconciliation errors per controller",
            reconcile_errors.clone(),
        );
        let terminal_errors = Family::<ControllerLabels, Counter>::default();
        registry.register(
            "controller_runtime_terminal_reconcile_errors",
            "Total number of terminal reconciliation errors per controller (objects left Stalled until the user acts)",
            terminal_errors.clone(),
        );
        let reconcile_time: HistogramFamily<ControllerLabels> =
            Family::new_with_constructor(reconcile_histogram);
        registry.register_with_unit(
            "controller_runtime_reconcile_time",
            "Length of time per reconciliation per controller",
            Unit::Seconds,
            reconcile_time.clone(),
        );
        let cleanup_failures = Family::<CleanupLabels, Counter>::default();
        registry.register(
            "zitadel_metadata_cleanup_failures",
            "Deletions whose cleanup failed (the object keeps its finalizer and is retried), per controller and reason of the failure",
            cleanup_failures.clone(),
        );
        let max_concurrent = Family::<ControllerLabels, Gauge>::default();
        registry.register(
            "controller_runtime_max_concurrent_reconciles",
            "Maximum number of concurrent reconciles per controller",
            max_concurrent.clone(),
        );
        let active_workers = Family::<ControllerLabels, Gauge>::default();
        registry.register(
            "controller_runtime_active_workers",
            "Number of currently running reconciles per controller",
            active_workers.clone(),
        );
        let zitadel_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "zitadel_requests",
            "ZITADEL API requests by operation and HTTP status code (\"timeout\" / \"error\" when no response arrived)",
            zitadel_requests.clone(),
        );
        let zitadel_duration: HistogramFamily<OperationLabels> =
            Family::new_with_constructor(request_histogram);
        registry.register_with_unit(
            "zitadel_request_duration",
            "Latency of ZITADEL API requests by operation",
            Unit::Seconds,
            zitadel_duration.clone(),
        );
        let token_refreshes = Counter::default();
        registry.register(
            "zitadel_token_refreshes",
            "Times the ZITADEL token read from its file or Secret changed (rotation picked up)",
            token_refreshes.clone(),
        );
        let api_selected = Family::<ApiLabels, Gauge>::default();
        registry.register(
            "zitadel_api_selected",
            "ZITADEL clients (connections) using API `api` (v1/v2) for `service` (user_metadata/org_metadata), as probed or pinned",
            api_selected.clone(),
        );
        let objects = Family::<ObjectLabels, Gauge>::default();
        registry.register(
            "zitadel_metadata_objects",
            "Managed OrgMetadata/UserMetadata objects by kind and status of their Ready condition",
            objects.clone(),
        );
        let leader = Family::<LeaseLabels, Gauge>::default();
        registry.register(
            "leader_election_master_status",
            "1 while this process holds the leader-election Lease `name`, else 0",
            leader.clone(),
        );
        let default_credentials = Family::<CredentialLabels, Gauge>::default();
        registry.register(
            "zitadel_default_connection_credentials",
            "1 for the state of the default connection's credential (unknown, unavailable: missing or unreadable, read: not yet checked, accepted, rejected by ZITADEL), 0 for the others; `source` names the Secret and key or the file",
            default_credentials.clone(),
        );
        let drift_mode = Family::<DriftModeLabels, Gauge>::default();
        registry.register(
            "zitadel_drift_detection_mode",
            "Connections in use (`connection_kind`: default, ZitadelConnection, ClusterZitadelConnection) by how drift is detected: Events (ZITADEL's event log) or Polling (per-object re-listing)",
            drift_mode.clone(),
        );
        let drift_polls = Family::<ResultLabels, Counter>::default();
        registry.register(
            "zitadel_drift_event_polls",
            "Rounds of reading a connection's ZITADEL event log, by result (ok, error)",
            drift_polls.clone(),
        );
        let drift_events = Family::<VerdictLabels, Counter>::default();
        registry.register(
            "zitadel_drift_events",
            "New ZITADEL events read, by verdict: drift (re-syncs the objects on that organization or user), own (caused by the operator's own writes: nothing to do), ignored",
            drift_events.clone(),
        );
        let drift_triggered = Counter::default();
        registry.register(
            "zitadel_drift_triggered_reconciles",
            "Reconciles triggered by ZITADEL events",
            drift_triggered.clone(),
        );
        Self {
            registry,
            reconcile_total,
            reconcile_errors,
            terminal_errors,
            reconcile_time,
            cleanup_failures,
            max_concurrent,
            active_workers,
            zitadel_requests,
            zitadel_duration,
            token_refreshes,
            api_selected,
            objects,
            object_counters: Mutex::new(BTreeMap::new()),
            leader,
            default_credentials,
            drift_mode,
            drift_polls,
            drift_events,
            drift_triggered,
        }
    }
}
