//! Conformance of the emulator's wire format with ZITADEL's own published definitions (issue
//! #11 "Done when"): every operation the emulator serves (v1 and v2, REST and Connect) is
//! driven with a plain client that follows the contract, the request and answer bodies the
//! emulator captured are dumped, and `tests/conformance/` decodes each one strictly (unknown
//! field = failure) with the npm `@zitadel/proto@1.3.1` descriptors, and — for org v2
//! metadata, which that package lacks — the PyPI `zitadel-client==4.1.9` models.
//!
//! Needs `node` with `tests/conformance/node_modules` (`npm ci` there) and `python3` with
//! `zitadel-client` (`pip install --user -r tests/conformance/requirements.txt`); `.ci/run`
//! installs both. Under `CI=true` missing tools fail the test; otherwise it is skipped with a
//! message saying what to install.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;

use reqwest::Method;
use serde_json::{Value, json};
use support::*;
use zmo_testkit::conformance as tools;
use zmo_testkit::emulator::{DEMO_ORG_ACME, DEMO_USER_ALICE, Emulator, Operation, RecordedRequest};

/// Request and answer message of each served operation (proto full names).
fn schemas(op: Operation) -> Option<(&'static str, &'static str)> {
    use Operation::*;
    Some(match op {
        SetOrgMetadata => (
            "zitadel.management.v1.SetOrgMetadataRequest",
            "zitadel.management.v1.SetOrgMetadataResponse",
        ),
        BulkSetOrgMetadata => (
            "zitadel.management.v1.BulkSetOrgMetadataRequest",
            "zitadel.management.v1.BulkSetOrgMetadataResponse",
        ),
        ListOrgMetadata => (
            "zitadel.management.v1.ListOrgMetadataRequest",
            "zitadel.management.v1.ListOrgMetadataResponse",
        ),
        GetOrgMetadata => (
            "zitadel.management.v1.GetOrgMetadataRequest",
            "zitadel.management.v1.GetOrgMetadataResponse",
        ),
        RemoveOrgMetadata => (
            "zitadel.management.v1.RemoveOrgMetadataRequest",
            "zitadel.management.v1.RemoveOrgMetadataResponse",
        ),
        BulkRemoveOrgMetadata => (
            "zitadel.management.v1.BulkRemoveOrgMetadataRequest",
            "zitadel.management.v1.BulkRemoveOrgMetadataResponse",
        ),
        SetUserMetadata => (
            "zitadel.management.v1.SetUserMetadataRequest",
            "zitadel.management.v1.SetUserMetadataResponse",
        ),
        BulkSetUserMetadata => (
            "zitadel.management.v1.BulkSetUserMetadataRequest",
            "zitadel.management.v1.BulkSetUserMetadataResponse",
        ),
        ListUserMetadata => (
            "zitadel.management.v1.ListUserMetadataRequest",
            "zitadel.management.v1.ListUserMetadataResponse",
        ),
        GetUserMetadata => (
            "zitadel.management.v1.GetUserMetadataRequest",
            "zitadel.management.v1.GetUserMetadataResponse",
        ),
        RemoveUserMetadata => (
            "zitadel.management.v1.RemoveUserMetadataRequest",
            "zitadel.management.v1.RemoveUserMetadataResponse",
        ),
        BulkRemoveUserMetadata => (
            "zitadel.management.v1.BulkRemoveUserMetadataRequest",
            "zitadel.management.v1.BulkRemoveUserMetadataResponse",
        ),
        GetUserV2 => (
            "zitadel.user.v2.GetUserByIDRequest",
            "zitadel.user.v2.GetUserByIDResponse",
        ),
        GetUserV1 => (
            "zitadel.management.v1.GetUserByIDRequest",
            "zitadel.management.v1.GetUserByIDResponse",
        ),
        GetMyOrg => (
            "zitadel.management.v1.GetMyOrgRequest",
            "zitadel.management.v1.GetMyOrgResponse",
        ),
        ListOrganizationsV2 => (
            "zitadel.org.v2.ListOrganizationsRequest",
            "zitadel.org.v2.ListOrganizationsResponse",
        ),
        GetOrgByDomain => (
            "zitadel.management.v1.GetOrgByDomainGlobalRequest",
            "zitadel.management.v1.GetOrgByDomainGlobalResponse",
        ),
        GetUserByLoginNameGlobal => (
            "zitadel.management.v1.GetUserByLoginNameGlobalRequest",
            "zitadel.management.v1.GetUserByLoginNameGlobalResponse",
        ),
        ListUsersV1 => (
            "zitadel.management.v1.ListUsersRequest",
            "zitadel.management.v1.ListUsersResponse",
        ),
        SetUserMetadataV2 => (
            "zitadel.user.v2.SetUserMetadataRequest",
            "zitadel.user.v2.SetUserMetadataResponse",
        ),
        ListUserMetadataV2 => (
            "zitadel.user.v2.ListUserMetadataRequest",
            "zitadel.user.v2.ListUserMetadataResponse",
        ),
        DeleteUserMetadataV2 => (
            "zitadel.user.v2.DeleteUserMetadataRequest",
            "zitadel.user.v2.DeleteUserMetadataResponse",
        ),
        SetOrgMetadataV2 => (
            "zitadel.org.v2.SetOrganizationMetadataRequest",
            "zitadel.org.v2.SetOrganizationMetadataResponse",
        ),
        ListOrgMetadataV2 => (
            "zitadel.org.v2.ListOrganizationMetadataRequest",
            "zitadel.org.v2.ListOrganizationMetadataResponse",
        ),
        DeleteOrgMetadataV2 => (
            "zitadel.org.v2.DeleteOrganizationMetadataRequest",
            "zitadel.org.v2.DeleteOrganizationMetadataResponse",
        ),
        SetOrgMetadataV2beta => (
            "zitadel.org.v2beta.SetOrganizationMetadataRequest",
            "zitadel.org.v2beta.SetOrganizationMetadataResponse",
        ),
        ListOrgMetadataV2beta => (
            "zitadel.org.v2beta.ListOrganizationMetadataRequest",
            "zitadel.org.v2beta.ListOrganizationMetadataResponse",
        ),
        DeleteOrgMetadataV2beta => (
            "zitadel.org.v2beta.DeleteOrganizationMetadataRequest",
            "zitadel.org.v2beta.DeleteOrganizationMetadataResponse",
        ),
        ListUsersV2 => (
            "zitadel.user.v2.ListUsersRequest",
            "zitadel.user.v2.ListUsersResponse",
        ),
        ListEvents => (
            "zitadel.admin.v1.ListEventsRequest",
            "zitadel.admin.v1.ListEventsResponse",
        ),
        ListEventTypes => (
            "zitadel.admin.v1.ListEventTypesRequest",
            "zitadel.admin.v1.ListEventTypesResponse",
        ),
        ListAggregateTypes => (
            "zitadel.admin.v1.ListAggregateTypesRequest",
            "zitadel.admin.v1.ListAggregateTypesResponse",
        ),
        ListOrgChanges => (
            "zitadel.management.v1.ListOrgChangesRequest",
            "zitadel.management.v1.ListOrgChangesResponse",
        ),
        ListUserChanges => (
            "zitadel.management.v1.ListUserChangesRequest",
            "zitadel.management.v1.ListUserChangesResponse",
        ),
        OAuthToken | OidcDiscovery | Other => return None,
    })
}

/// Drives every served operation once or more, successfully.
async fn drive(emu: &Emulator) {
    let u = DEMO_USER_ALICE;
    let o = DEMO_ORG_ACME;
    let v = b64(b"value");
    let calls = management_calls(u, o, &v)
        .into_iter()
        .chain(metadata_and_event_calls(u, o, &v));
    for (method, path, body) in calls {
        let r = rest(emu, method.clone(), &path, ADMIN, None, body.as_ref()).await;
        assert_eq!(r.status, 200, "{method} {path}: {}", r.text);
    }
    for (path, body) in connect_calls(u, o, &v) {
        let r = connect(emu, &path, ADMIN, &body).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
    }
}

/// The REST calls of the management API (v1 metadata, lookups, searches) and the v2 user and
/// organization queries.
fn management_calls(u: &str, o: &str, v: &str) -> Vec<(Method, String, Option<Value>)> {
    let kq = json!([{"keyQuery": {"key": "k", "method": "TEXT_QUERY_METHOD_STARTS_WITH"}}]);
    let post = Method::POST;
    vec![
        (
            post.clone(),
            "/management/v1/metadata/k1".into(),
            Some(json!({"value": v})),
        ),
        (
            post.clone(),
            "/management/v1/metadata/_bulk".into(),
            Some(json!({"metadata": [{"key": "k2", "value": v}, {"key": "k3", "value": v}]})),
        ),
        (
            post.clone(),
            "/management/v1/metadata/_search".into(),
            Some(json!({"query": {"offset": "0", "limit": 10, "asc": true}, "queries": kq})),
        ),
        (Method::GET, "/management/v1/metadata/k1".into(), None),
        (Method::DELETE, "/management/v1/metadata/k1".into(), None),
        (
            Method::DELETE,
            "/management/v1/metadata/_bulk".into(),
            Some(json!({"keys": ["k2"]})),
        ),
        (
            post.clone(),
            format!("/management/v1/users/{u}/metadata/k1"),
            Some(json!({"value": v})),
        ),
        (
            post.clone(),
            format!("/management/v1/users/{u}/metadata/_bulk"),
            Some(json!({"metadata": [{"key": "k2", "value": v}]})),
        ),
        (
            post.clone(),
            format!("/management/v1/users/{u}/metadata/_search"),
            Some(json!({"query": {"limit": 10}, "queries": kq})),
        ),
        (
            Method::GET,
            format!("/management/v1/users/{u}/metadata/k1"),
            None,
        ),
        (
            Method::DELETE,
            format!("/management/v1/users/{u}/metadata/k1"),
            None,
        ),
        (
            Method::DELETE,
            format!("/management/v1/users/{u}/metadata/_bulk"),
            Some(json!({"keys": ["k2"]})),
        ),
        (Method::GET, format!("/v2/users/{u}"), None),
        (Method::GET, format!("/management/v1/users/{u}"), None),
        (Method::GET, "/management/v1/orgs/me".into(), None),
        (
            post.clone(),
            "/v2/organizations/_search".into(),
            Some(
                json!({"query": {"limit": 10}, "sortingColumn": "ORGANIZATION_FIELD_NAME_NAME", "queries": [{"nameQuery": {"name": "Acme", "method": "TEXT_QUERY_METHOD_EQUALS"}}]}),
            ),
        ),
        (
            Method::GET,
            "/management/v1/global/orgs/_by_domain?domain=acme.localhost".into(),
            None,
        ),
        (
            Method::GET,
            "/management/v1/global/users/_by_login_name?loginName=alice@acme.localhost".into(),
            None,
        ),
        (
            post.clone(),
            "/management/v1/users/_search".into(),
            Some(
                json!({"query": {"limit": 10}, "queries": [{"userNameQuery": {"userName": "alice", "method": "TEXT_QUERY_METHOD_EQUALS"}}]}),
            ),
        ),
        (
            post.clone(),
            "/v2/users".into(),
            Some(
                json!({"query": {"limit": 10, "asc": true}, "sortingColumn": "USER_FIELD_NAME_USER_NAME", "queries": [{"organizationIdQuery": {"organizationId": o}}]}),
            ),
        ),
    ]
}

/// The REST calls of the v2 / v2beta metadata endpoints, the event search and the change lists.
fn metadata_and_event_calls(u: &str, o: &str, v: &str) -> Vec<(Method, String, Option<Value>)> {
    let post = Method::POST;
    vec![
        (
            post.clone(),
            format!("/v2/users/{u}/metadata"),
            Some(json!({"metadata": [{"key": "r1", "value": v}, {"key": "r2", "value": v}]})),
        ),
        (
            post.clone(),
            format!("/v2/users/{u}/metadata/search"),
            Some(
                json!({"pagination": {"offset": "0", "limit": 10, "asc": true}, "filters": [{"keyFilter": {"key": "r", "method": "TEXT_FILTER_METHOD_STARTS_WITH"}}]}),
            ),
        ),
        (
            Method::DELETE,
            format!("/v2/users/{u}/metadata?keys=r1&keys=r2"),
            None,
        ),
        (
            post.clone(),
            format!("/v2/organizations/{o}/metadata"),
            Some(json!({"metadata": [{"key": "r1", "value": v}]})),
        ),
        (
            post.clone(),
            format!("/v2/organizations/{o}/metadata/search"),
            Some(
                json!({"pagination": {"limit": 10}, "filters": [{"keyFilter": {"key": "r1", "method": "TEXT_FILTER_METHOD_EQUALS"}}]}),
            ),
        ),
        (
            Method::DELETE,
            format!("/v2/organizations/{o}/metadata?keys=r1"),
            None,
        ),
        (
            post.clone(),
            format!("/v2beta/organizations/{o}/metadata"),
            Some(json!({"metadata": [{"key": "b1", "value": v}]})),
        ),
        (
            post.clone(),
            format!("/v2beta/organizations/{o}/metadata/search"),
            Some(
                json!({"pagination": {"limit": 10}, "filter": [{"keyQuery": {"key": "b", "method": "TEXT_QUERY_METHOD_STARTS_WITH"}}]}),
            ),
        ),
        (
            Method::DELETE,
            format!("/v2beta/organizations/{o}/metadata?keys=b1"),
            None,
        ),
        (
            post.clone(),
            "/admin/v1/events/_search".into(),
            Some(
                json!({"asc": true, "limit": 100, "eventTypes": ["org.metadata.set", "user.metadata.set", "org.metadata.removed", "user.metadata.removed"], "range": {"since": "2020-01-01T00:00:00Z"}}),
            ),
        ),
        (
            post.clone(),
            "/admin/v1/events/_search".into(),
            Some(
                json!({"aggregateId": u, "aggregateTypes": ["user"], "sequence": "1", "asc": true, "editorUserId": "", "resourceOwner": o}),
            ),
        ),
        (
            post.clone(),
            "/admin/v1/events/types/_search".into(),
            Some(json!({})),
        ),
        (
            post.clone(),
            "/admin/v1/aggregates/types/_search".into(),
            Some(json!({})),
        ),
        (
            post.clone(),
            "/management/v1/orgs/me/changes/_search".into(),
            Some(json!({"query": {"sequence": "0", "limit": 0, "asc": true}})),
        ),
        (
            post.clone(),
            format!("/management/v1/users/{u}/changes/_search"),
            Some(json!({"query": {"limit": 100}})),
        ),
    ]
}

/// The Connect calls of the v2 user and organization services (and the v2beta organizations).
fn connect_calls(u: &str, o: &str, v: &str) -> Vec<(String, Value)> {
    vec![
        (
            format!("{USER_SVC}/SetUserMetadata"),
            json!({"userId": u, "metadata": [{"key": "c1", "value": v}]}),
        ),
        (
            format!("{USER_SVC}/ListUserMetadata"),
            json!({"userId": u, "pagination": {"limit": 10}, "filters": [{"keyFilter": {"key": "c1", "method": "TEXT_FILTER_METHOD_EQUALS"}}]}),
        ),
        (
            format!("{USER_SVC}/DeleteUserMetadata"),
            json!({"userId": u, "keys": ["c1"]}),
        ),
        (format!("{USER_SVC}/GetUserByID"), json!({"userId": u})),
        (
            format!("{USER_SVC}/ListUsers"),
            json!({"queries": [{"userNameQuery": {"userName": "alice", "method": "TEXT_QUERY_METHOD_EQUALS"}}]}),
        ),
        (
            format!("{ORG_SVC}/SetOrganizationMetadata"),
            json!({"organizationId": o, "metadata": [{"key": "c1", "value": v}]}),
        ),
        (
            format!("{ORG_SVC}/ListOrganizationMetadata"),
            json!({"organizationId": o, "pagination": {"limit": 10}}),
        ),
        (
            format!("{ORG_SVC}/DeleteOrganizationMetadata"),
            json!({"organizationId": o, "keys": ["c1"]}),
        ),
        (
            format!("{ORG_SVC}/ListOrganizations"),
            json!({"queries": [{"idQuery": {"id": o}}]}),
        ),
        (
            format!("{ORG_BETA_SVC}/SetOrganizationMetadata"),
            json!({"organizationId": o, "metadata": [{"key": "c2", "value": v}]}),
        ),
        (
            format!("{ORG_BETA_SVC}/ListOrganizationMetadata"),
            json!({"organizationId": o}),
        ),
        (
            format!("{ORG_BETA_SVC}/DeleteOrganizationMetadata"),
            json!({"organizationId": o, "keys": ["c2"]}),
        ),
    ]
}

/// The strict-decoding cases of the captured traffic.
fn cases(requests: &[RecordedRequest]) -> Vec<Value> {
    let mut out = Vec::new();
    for r in requests.iter().filter(|r| r.status == 200) {
        let Some((req, resp)) = schemas(r.operation) else {
            continue;
        };
        if r.body.is_object() {
            out.push(json!({"op": r.operation, "kind": "request", "schema": req, "json": r.body, "path": r.path}));
        }
        if r.response_body.is_object() {
            out.push(json!({"op": r.operation, "kind": "response", "schema": resp, "json": r.response_body, "path": r.path}));
        }
    }
    out
}

#[tokio::test]
async fn captured_bodies_decode_strictly_with_zitadels_definitions() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../conformance");
    if !tools::tools_ready(&dir, "conformance of the emulator") {
        return;
    }

    let emu = Emulator::start_seeded().await.unwrap();
    drive(&emu).await;
    let requests = emu.requests();
    let cases = cases(&requests);
    // Every served operation produced at least one answer to check.
    let covered: BTreeSet<String> = cases
        .iter()
        .filter(|c| c["kind"] == "response")
        .map(|c| c["op"].as_str().unwrap().to_owned())
        .collect();
    let expected: BTreeSet<String> = Operation::ALL
        .into_iter()
        .filter(|op| schemas(*op).is_some())
        .map(|op| op.to_string())
        .collect();
    assert_eq!(covered, expected, "operations without a checked answer");
    // Connect and REST bodies of the v2 metadata RPCs are both in.
    assert!(
        requests
            .iter()
            .any(|r| r.path.starts_with("/zitadel.org.v2."))
    );
    assert!(
        requests
            .iter()
            .any(|r| r.path.starts_with("/v2/organizations/"))
    );

    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("cases.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&cases).unwrap()).unwrap();
    let node = tools::run_node(&dir, &file);
    let node_out = String::from_utf8_lossy(&node.stdout);
    eprintln!("{node_out}{}", String::from_utf8_lossy(&node.stderr));
    assert!(
        node.status.success(),
        "@zitadel/proto refused captured bodies:\n{node_out}"
    );
    let python = tools::run_python(&dir, &tmp.path().join("cases.json.python.json"));
    let py_out = String::from_utf8_lossy(&python.stdout);
    eprintln!("{py_out}{}", String::from_utf8_lossy(&python.stderr));
    assert!(
        python.status.success(),
        "zitadel-client models refused captured bodies:\n{py_out}"
    );
    // The org v2 metadata cases were checked by the SDK models.
    assert!(py_out.contains(" passed, 0 failed"));
    assert!(!py_out.starts_with("0 passed"));

    // The checkers do refuse what ZITADEL does not define (a v1-style `details` on a v2 answer,
    // an unknown field inside org v2 metadata).
    let bad = json!([
        {"op": "SetUserMetadataV2", "kind": "response", "schema": "zitadel.user.v2.SetUserMetadataResponse",
         "json": {"setDate": "2026-01-01T00:00:00Z", "details": {"sequence": "1"}}},
        {"op": "SetOrgMetadataV2", "kind": "request", "schema": "zitadel.org.v2.SetOrganizationMetadataRequest",
         "json": {"organizationId": "1", "metadata": [{"key": "k", "value": "dg==", "sequence": "1"}]}}
    ]);
    let bad_file = tmp.path().join("bad.json");
    std::fs::write(&bad_file, bad.to_string()).unwrap();
    let node = tools::run_node(&dir, &bad_file);
    assert!(!node.status.success());
    assert!(String::from_utf8_lossy(&node.stdout).contains("0 passed, 1 failed"));
    let python = tools::run_python(&dir, &tmp.path().join("bad.json.python.json"));
    assert!(!python.status.success());
    assert!(String::from_utf8_lossy(&python.stdout).contains("0 passed, 1 failed"));
    emu.shutdown().await;
}
