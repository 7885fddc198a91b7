//! Strict conformance of recorded traffic: every request body the operator sent and every answer
//! it read (as the emulator recorded them) decoded with ZITADEL's published definitions —
//! `@zitadel/proto` through `@bufbuild/protobuf`'s `fromJson` (unknown field = failure) and,
//! for what that package lacks (org v2 metadata), the official `zitadel-client` Python models —
//! by `tests/conformance/check.mjs` and `check_models.py`.

use std::collections::BTreeSet;

use serde_json::json;
use zmo_testkit::conformance as tools;
use zmo_testkit::emulator::{Operation, RecordedRequest};

/// Request and answer message of each operation the operator uses (proto full names).
pub fn schemas(op: Operation) -> Option<(&'static str, &'static str)> {
    use Operation::*;
    let pair = |a, b| Some((a, b));
    match op {
        BulkSetOrgMetadata => pair(
            "zitadel.management.v1.BulkSetOrgMetadataRequest",
            "zitadel.management.v1.BulkSetOrgMetadataResponse",
        ),
        ListOrgMetadata => pair(
            "zitadel.management.v1.ListOrgMetadataRequest",
            "zitadel.management.v1.ListOrgMetadataResponse",
        ),
        BulkRemoveOrgMetadata => pair(
            "zitadel.management.v1.BulkRemoveOrgMetadataRequest",
            "zitadel.management.v1.BulkRemoveOrgMetadataResponse",
        ),
        BulkSetUserMetadata => pair(
            "zitadel.management.v1.BulkSetUserMetadataRequest",
            "zitadel.management.v1.BulkSetUserMetadataResponse",
        ),
        ListUserMetadata => pair(
            "zitadel.management.v1.ListUserMetadataRequest",
            "zitadel.management.v1.ListUserMetadataResponse",
        ),
        BulkRemoveUserMetadata => pair(
            "zitadel.management.v1.BulkRemoveUserMetadataRequest",
            "zitadel.management.v1.BulkRemoveUserMetadataResponse",
        ),
        GetUserV2 => pair(
            "zitadel.user.v2.GetUserByIDRequest",
            "zitadel.user.v2.GetUserByIDResponse",
        ),
        GetMyOrg => pair(
            "zitadel.management.v1.GetMyOrgRequest",
            "zitadel.management.v1.GetMyOrgResponse",
        ),
        ListOrganizationsV2 => pair(
            "zitadel.org.v2.ListOrganizationsRequest",
            "zitadel.org.v2.ListOrganizationsResponse",
        ),
        GetUserByLoginNameGlobal => pair(
            "zitadel.management.v1.GetUserByLoginNameGlobalRequest",
            "zitadel.management.v1.GetUserByLoginNameGlobalResponse",
        ),
        ListUsersV1 => pair(
            "zitadel.management.v1.ListUsersRequest",
            "zitadel.management.v1.ListUsersResponse",
        ),
        ListUsersV2 => pair(
            "zitadel.user.v2.ListUsersRequest",
            "zitadel.user.v2.ListUsersResponse",
        ),
        SetUserMetadataV2 => pair(
            "zitadel.user.v2.SetUserMetadataRequest",
            "zitadel.user.v2.SetUserMetadataResponse",
        ),
        ListUserMetadataV2 => pair(
            "zitadel.user.v2.ListUserMetadataRequest",
            "zitadel.user.v2.ListUserMetadataResponse",
        ),
        DeleteUserMetadataV2 => pair(
            "zitadel.user.v2.DeleteUserMetadataRequest",
            "zitadel.user.v2.DeleteUserMetadataResponse",
        ),
        SetOrgMetadataV2 => pair(
            "zitadel.org.v2.SetOrganizationMetadataRequest",
            "zitadel.org.v2.SetOrganizationMetadataResponse",
        ),
        ListOrgMetadataV2 => pair(
            "zitadel.org.v2.ListOrganizationMetadataRequest",
            "zitadel.org.v2.ListOrganizationMetadataResponse",
        ),
        DeleteOrgMetadataV2 => pair(
            "zitadel.org.v2.DeleteOrganizationMetadataRequest",
            "zitadel.org.v2.DeleteOrganizationMetadataResponse",
        ),
        _ => None,
    }
}

/// Decode the 2xx requests and answers of `requests` strictly. Returns a summary
/// (`"N cases, operations [...]"`), or `"skipped (...)"` when the tools are not installed
/// outside CI (on CI, `.ci/run` installs them and their absence fails). Panics on any refusal.
pub fn check(requests: &[RecordedRequest], label: &str) -> String {
    match decode_strictly(requests, label) {
        None => "skipped".into(),
        Some(d) => format!(
            "\"{} cases, operations {}\"",
            d.cases,
            d.operations.into_iter().collect::<Vec<_>>().join(",")
        ),
    }
}

/// What [`decode_strictly`] checked.
pub struct Decoded {
    /// Bodies decoded (requests and answers).
    pub cases: usize,
    /// The operations they belong to.
    pub operations: BTreeSet<String>,
    /// What the Python models check printed (empty when no case needed it).
    pub python: String,
}

/// The check behind [`check`]: `None` when the tools are missing outside CI (said on stderr).
pub fn decode_strictly(requests: &[RecordedRequest], label: &str) -> Option<Decoded> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    if !tools::tools_ready(&dir, &format!("conformance of {label}")) {
        return None;
    }
    let mut cases = Vec::new();
    let mut ops = BTreeSet::new();
    for r in requests.iter().filter(|r| r.status == 200) {
        let Some((req, resp)) = schemas(r.operation) else {
            continue;
        };
        ops.insert(r.operation.to_string());
        if r.body.is_object() {
            cases.push(json!({"op": r.operation, "kind": "request", "schema": req, "json": r.body, "path": r.path}));
        }
        if r.response_body.is_object() {
            cases.push(json!({"op": r.operation, "kind": "response", "schema": resp, "json": r.response_body, "path": r.path}));
        }
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join("cases.json");
    std::fs::write(&file, serde_json::to_vec(&cases).expect("json")).expect("write");
    let node = tools::run_node(&dir, &file);
    let node_out = String::from_utf8_lossy(&node.stdout);
    assert!(
        node.status.success(),
        "{label}: @zitadel/proto refused bodies the operator sent or read:\n{node_out}{}",
        String::from_utf8_lossy(&node.stderr)
    );
    let python_cases = tmp.path().join("cases.json.python.json");
    let mut python_out = String::new();
    if python_cases.exists() {
        let python = tools::run_python(&dir, &python_cases);
        python_out = String::from_utf8_lossy(&python.stdout).into_owned();
        assert!(
            python.status.success(),
            "{label}: zitadel-client models refused bodies the operator sent or read:\n{python_out}{}",
            String::from_utf8_lossy(&python.stderr)
        );
    }
    Some(Decoded {
        cases: cases.len(),
        operations: ops,
        python: python_out,
    })
}
