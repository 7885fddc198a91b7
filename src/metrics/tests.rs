//! Unit tests of `metrics`.

use super::*;

#[test]
fn renders_expected_names_and_labels() {
    let m = Metrics::new();
    m.register_controller("orgmetadata", 4);
    {
        let _w = m.reconcile_started("orgmetadata");
        m.reconcile_finished(
            "orgmetadata",
            ReconcileResult::Error,
            true,
            Duration::from_millis(20),
        );
    }
    m.reconcile_finished(
        "orgmetadata",
        ReconcileResult::Success,
        false,
        Duration::from_millis(5),
    );
    m.zitadel_request("BulkSetOrgMetadata", "200", Duration::from_millis(3));
    m.cleanup_failed("orgmetadata", crate::reason::Reason::ZitadelApiUnavailable);
    m.cleanup_failed("orgmetadata", crate::reason::Reason::ZitadelApiUnavailable);
    m.set_leader("zitadel-metadata-operator", true);
    m.set_object_counter(
        "OrgMetadata",
        Box::new(|| {
            let mut c = ConditionCounts::default();
            c.add(Some("True"));
            c.add(Some("True"));
            c.add(None);
            c
        }),
    );
    let text = m.encode().expect("encode");
    for line in [
        "controller_runtime_reconcile_total{controller=\"orgmetadata\",result=\"success\"} 1",
        "controller_runtime_reconcile_total{controller=\"orgmetadata\",result=\"error\"} 1",
        "controller_runtime_reconcile_total{controller=\"orgmetadata\",result=\"requeue\"} 0",
        "controller_runtime_reconcile_errors_total{controller=\"orgmetadata\"} 1",
        "controller_runtime_terminal_reconcile_errors_total{controller=\"orgmetadata\"} 1",
        "controller_runtime_reconcile_time_seconds_count{controller=\"orgmetadata\"} 2",
        "controller_runtime_max_concurrent_reconciles{controller=\"orgmetadata\"} 4",
        "controller_runtime_active_workers{controller=\"orgmetadata\"} 0",
        "zitadel_requests_total{operation=\"BulkSetOrgMetadata\",code=\"200\"} 1",
        "zitadel_request_duration_seconds_count{operation=\"BulkSetOrgMetadata\"} 1",
        "zitadel_token_refreshes_total 0",
        "zitadel_metadata_cleanup_failures_total{controller=\"orgmetadata\",reason=\"ZitadelApiUnavailable\"} 2",
        "zitadel_metadata_objects{kind=\"OrgMetadata\",condition=\"True\"} 2",
        "zitadel_metadata_objects{kind=\"OrgMetadata\",condition=\"False\"} 0",
        "zitadel_metadata_objects{kind=\"OrgMetadata\",condition=\"Unknown\"} 1",
        "leader_election_master_status{name=\"zitadel-metadata-operator\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(!text.contains("_total_total"), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");

    m.clear_object_counter("OrgMetadata");
    let text = m.encode().expect("encode");
    assert!(text.contains("zitadel_metadata_objects{kind=\"OrgMetadata\",condition=\"True\"} 0"));
}
