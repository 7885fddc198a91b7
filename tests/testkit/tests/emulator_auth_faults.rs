//! Authentication, authorization, fault injection, request recording and the admin routes of the
//! ZITADEL emulator, over real HTTP.

mod support;

use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use support::{Resp, request, send};
use zmo_testkit::emulator::{
    DEMO_ADMIN_TOKEN, DEMO_ORG_ACME as ACME, DEMO_ORG_GLOBEX as GLOBEX, DEMO_USER_BOB as BOB,
    Emulator, Fault, FaultKind, Operation, Permission, TokenGrant,
};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A call with a raw `authorization` header value (`auth`) on a client with a 10 s timeout.
async fn call(
    emu: &Emulator,
    method: Method,
    path: &str,
    auth: Option<&str>,
    org: Option<&str>,
    body: Option<Value>,
) -> Resp {
    send(request(
        &client(),
        (emu, method, path),
        auth,
        org,
        body.as_ref(),
    ))
    .await
}

const ADMIN: &str = "Bearer demo-admin-token";

/// A call as the demo admin without a context org header.
async fn as_admin(emu: &Emulator, method: Method, path: &str, body: Option<Value>) -> Resp {
    call(emu, method, path, Some(ADMIN), None, body).await
}

/// A call without credentials or context org (the emulator's own admin routes, or to be refused).
async fn anonymous(emu: &Emulator, method: Method, path: &str, body: Option<Value>) -> Resp {
    call(emu, method, path, None, None, body).await
}

async fn set_org(emu: &Emulator, auth: Option<&str>, org: Option<&str>, key: &str) -> Resp {
    call(
        emu,
        Method::POST,
        &format!("/management/v1/metadata/{key}"),
        auth,
        org,
        Some(json!({ "value": "dg==" })),
    )
    .await
}

fn assert_error(r: &Resp, http: u16, code: i64, id: &str) {
    assert_eq!(r.status, http, "{}", r.text);
    assert_eq!(r.body["code"], code, "{}", r.text);
    assert_eq!(r.body["details"][0]["id"], id, "{}", r.text);
    assert_eq!(
        r.body["details"][0]["@type"],
        "type.googleapis.com/zitadel.v1.ErrorDetail"
    );
}

#[tokio::test]
async fn authentication_failures() {
    let emu = Emulator::start_seeded().await.unwrap();

    let r = set_org(&emu, None, None, "k").await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.body,
        json!({ "code": 16, "message": "auth header missing" })
    );
    assert_eq!(r.headers[WWW_AUTHENTICATE], "auth header missing");

    for malformed in [
        "demo-admin-token",
        "bearer demo-admin-token",
        "Basic ZGVtbzpkZW1v",
        "Bearer",
    ] {
        let r = set_org(&emu, Some(malformed), None, "k").await;
        assert_error(&r, 401, 16, "AUTH-toLo1");
        assert_eq!(r.body["message"], "invalid auth header (AUTH-toLo1)");
        assert!(r.headers.contains_key(WWW_AUTHENTICATE));
    }

    let r = set_org(&emu, Some("Bearer not-a-token"), None, "k").await;
    assert_error(&r, 401, 16, "AUTH-7fs1e");
    assert_eq!(r.body["message"], "Token is invalid (AUTH-7fs1e)");
    assert_eq!(r.headers[WWW_AUTHENTICATE], "Token is invalid (AUTH-7fs1e)");

    // Authentication is checked before validation.
    let r = anonymous(
        &emu,
        Method::POST,
        &format!("/management/v1/metadata/{}", "k".repeat(201)),
        Some(json!({ "value": "" })),
    )
    .await;
    assert_eq!(r.status, 401);
    let r = call(
        &emu,
        Method::POST,
        "/management/v1/metadata/_bulk",
        Some("Bearer nope"),
        None,
        Some(json!({ "metadata": [] })),
    )
    .await;
    assert_error(&r, 401, 16, "AUTH-7fs1e");

    // Revoked tokens stop working.
    emu.add_token("temp", TokenGrant::org_owner(ACME));
    assert_eq!(
        set_org(&emu, Some("Bearer temp"), None, "k").await.status,
        200
    );
    emu.revoke_token("temp");
    let r = set_org(&emu, Some("Bearer temp"), None, "k").await;
    assert_error(&r, 401, 16, "AUTH-7fs1e");
    assert!(emu.requests().iter().all(|r| r.status != 0));
    emu.shutdown().await;
}

#[tokio::test]
async fn authorization_and_context_org() {
    let emu = Emulator::start_seeded().await.unwrap();

    let r = set_org(&emu, Some(ADMIN), Some("999"), "k").await;
    assert_error(&r, 403, 7, "AUTH-Bs7Ds");
    assert_eq!(r.body["message"], "Organisation doesn't exist (AUTH-Bs7Ds)");

    emu.add_token("viewer", TokenGrant::org_owner_viewer(ACME));
    emu.add_token("users", TokenGrant::user_manager(ACME));
    emu.add_token("globex", TokenGrant::org_owner(GLOBEX));
    emu.add_token(
        "custom",
        TokenGrant::new(ACME).with_permission(GLOBEX, Permission::OrgWrite),
    );

    // Read-only token cannot write, but can read.
    let r = set_org(&emu, Some("Bearer viewer"), None, "k").await;
    assert_error(&r, 403, 7, "AUTH-5mWD2");
    assert_eq!(
        r.body["message"],
        "No matching permissions found (AUTH-5mWD2)"
    );
    let r = call(
        &emu,
        Method::POST,
        "/management/v1/metadata/_search",
        Some("Bearer viewer"),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // The user manager may write user metadata but not org metadata.
    let r = set_org(&emu, Some("Bearer users"), None, "k").await;
    assert_error(&r, 403, 7, "AUTH-5mWD2");
    let r = call(
        &emu,
        Method::POST,
        "/management/v1/users/200000000000000001/metadata/k",
        Some("Bearer users"),
        None,
        Some(json!({ "value": "dg==" })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Org owner of Globex: the header selects the org; its own org is the default. No
    // membership at all in the header's org is 404 AUTHZ-cdgFk (contract §3), not 403.
    let r = set_org(&emu, Some("Bearer globex"), Some(ACME), "k").await;
    assert_error(&r, 404, 5, "AUTHZ-cdgFk");
    assert_eq!(r.body["message"], "membership not found (AUTHZ-cdgFk)");
    let r = set_org(&emu, Some("Bearer globex"), None, "g").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["details"]["resourceOwner"], GLOBEX);
    assert!(emu.org_metadata(GLOBEX).contains_key("g"));

    // Permissions are per org and header names are case-insensitive.
    let r = send(
        client()
            .post(format!("{}/management/v1/metadata/c", emu.url()))
            .header("Authorization", "Bearer custom")
            .header("X-Zitadel-OrgId", GLOBEX)
            .json(&json!({ "value": "dg==" })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(emu.org_metadata(GLOBEX).contains_key("c"));
    // Its own org (no header) holds no membership of it.
    let r = set_org(&emu, Some("Bearer custom"), None, "c").await;
    assert_error(&r, 404, 5, "AUTHZ-cdgFk");
    // A membership without the permission is 403.
    emu.add_token(
        "custom2",
        TokenGrant::new(ACME).with_permission(ACME, Permission::UserRead),
    );
    let r = set_org(&emu, Some("Bearer custom2"), None, "c").await;
    assert_error(&r, 403, 7, "AUTH-5mWD2");

    // Authorization is checked before validation.
    let r = call(
        &emu,
        Method::POST,
        "/management/v1/metadata/_bulk",
        Some("Bearer viewer"),
        None,
        Some(json!({ "metadata": [{ "key": "", "value": "" }] })),
    )
    .await;
    assert_error(&r, 403, 7, "AUTH-5mWD2");
    emu.shutdown().await;
}

#[tokio::test]
async fn latency_and_status_faults() {
    let emu = Emulator::start_seeded().await.unwrap();

    emu.inject(Fault::latency(Duration::from_millis(300)).on(Operation::SetOrgMetadata));
    let started = Instant::now();
    let r = set_org(&emu, Some(ADMIN), None, "slow").await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(emu.org_metadata(ACME).contains_key("slow"));
    emu.clear_faults();

    emu.inject(Fault::unavailable().on(Operation::SetOrgMetadata).times(2));
    for _ in 0..2 {
        let r = set_org(&emu, Some(ADMIN), None, "k").await;
        assert_eq!(r.status, 503);
        assert_eq!(r.body["code"], 14);
        assert!(r.body.get("details").is_none());
    }
    assert!(!emu.org_metadata(ACME).contains_key("k"));
    assert_eq!(set_org(&emu, Some(ADMIN), None, "k").await.status, 200);

    // Only the targeted operation is affected; faults come before authentication.
    emu.inject(Fault::internal().on(Operation::GetOrgMetadata));
    let r = anonymous(&emu, Method::GET, "/management/v1/metadata/k", None).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.body["code"], 13);
    assert_eq!(set_org(&emu, Some(ADMIN), None, "k2").await.status, 200);
    emu.clear_faults();
    let r = as_admin(&emu, Method::GET, "/management/v1/metadata/k", None).await;
    assert_eq!(r.status, 200);

    // A fault on every operation.
    emu.inject(Fault::status(504, 4).times(1));
    let r = as_admin(&emu, Method::GET, "/v2/users/x", None).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.body["code"], 4);
    emu.shutdown().await;
}

#[tokio::test]
async fn too_many_requests_variants() {
    let emu = Emulator::start_seeded().await.unwrap();

    emu.inject(Fault::too_many_requests(Some(3), true).times(1));
    let r = set_org(&emu, Some(ADMIN), None, "k").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.text, "Your ZITADEL instance is blocked.");
    assert_eq!(r.body, Value::Null, "plain text, not JSON");
    assert_eq!(r.headers[RETRY_AFTER], "3");
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );

    emu.inject(Fault::too_many_requests(Some(7), false).times(1));
    let r = set_org(&emu, Some(ADMIN), None, "k").await;
    assert_error(&r, 429, 8, "QUOTA-vjAy8");
    assert_eq!(r.headers[RETRY_AFTER], "7");

    emu.inject(Fault::too_many_requests(None, false).times(1));
    let r = set_org(&emu, Some(ADMIN), None, "k").await;
    assert_error(&r, 429, 8, "QUOTA-vjAy8");
    assert!(!r.headers.contains_key(RETRY_AFTER));

    assert!(emu.org_metadata(ACME).is_empty());
    assert_eq!(set_org(&emu, Some(ADMIN), None, "k").await.status, 200);
    let statuses: Vec<u16> = emu.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 429, 429, 200]);
    emu.shutdown().await;
}

#[tokio::test]
async fn hang_requires_a_client_timeout() {
    let emu = Emulator::start_seeded().await.unwrap();
    emu.inject(Fault::hang().on(Operation::ListOrgMetadata).times(1));
    let started = Instant::now();
    let err = reqwest::Client::builder()
        .timeout(Duration::from_millis(400))
        .build()
        .unwrap()
        .post(format!("{}/management/v1/metadata/_search", emu.url()))
        .bearer_auth(DEMO_ADMIN_TOKEN)
        .json(&json!({}))
        .send()
        .await
        .expect_err("the emulator never answers");
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(400));
    let recorded = emu.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].operation, Operation::ListOrgMetadata);
    assert_eq!(recorded[0].status, 0);

    // The fault was used up: the next call is answered.
    let r = as_admin(&emu, Method::POST, "/management/v1/metadata/_search", None).await;
    assert_eq!(r.status, 200);

    // Shutdown releases hanging requests and completes promptly.
    emu.inject(Fault::hang());
    let pending = tokio::spawn(
        request(
            &client(),
            (&emu, Method::GET, "/management/v1/orgs/me"),
            Some(ADMIN),
            None,
            None,
        )
        .send(),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    emu.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let _ = pending.await;
}

#[tokio::test]
async fn requests_are_recorded() {
    let emu = Emulator::start_seeded().await.unwrap();
    set_org(&emu, Some(ADMIN), Some(GLOBEX), "k").await;
    set_org(&emu, None, None, "k").await;
    call(
        &emu,
        Method::DELETE,
        &format!("/management/v1/users/{BOB}/metadata/_bulk"),
        Some(ADMIN),
        Some(GLOBEX),
        Some(json!({ "keys": ["missing"] })),
    )
    .await;
    let recorded = emu.requests();
    assert_eq!(recorded.len(), 3);
    assert_eq!(recorded[0].method, "POST");
    assert_eq!(recorded[0].path, "/management/v1/metadata/k");
    assert_eq!(recorded[0].operation, Operation::SetOrgMetadata);
    assert_eq!(recorded[0].org_header.as_deref(), Some(GLOBEX));
    assert_eq!(recorded[0].status, 200);
    assert_eq!(recorded[0].body, json!({ "value": "dg==" }));
    assert_eq!(recorded[1].status, 401);
    assert_eq!(recorded[1].org_header, None);
    assert_eq!(recorded[2].operation, Operation::BulkRemoveUserMetadata);
    assert_eq!(recorded[2].status, 404);
    assert_eq!(recorded[2].body, json!({ "keys": ["missing"] }));
    assert_eq!(emu.count(Operation::SetOrgMetadata), 2);
    assert_eq!(emu.count(Operation::GetOrgMetadata), 0);
    emu.clear_requests();
    assert!(emu.requests().is_empty());
    assert_eq!(emu.count(Operation::SetOrgMetadata), 0);
    emu.shutdown().await;
}

#[tokio::test]
async fn admin_routes() {
    let emu = Emulator::start_seeded().await.unwrap();
    emu.put_org_metadata(ACME, "text", b"hello");
    emu.put_user_metadata(BOB, "bin", &[0xff, 0x00]);

    let state = anonymous(&emu, Method::GET, "/_emulator/state", None).await;
    assert_eq!(state.status, 200);
    let acme = state.body["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"] == ACME)
        .unwrap();
    assert_eq!(acme["name"], "Acme");
    assert_eq!(acme["sequence"], emu.org_sequence(ACME));
    assert_eq!(acme["metadata"][0]["key"], "text");
    assert_eq!(acme["metadata"][0]["value"], "hello");
    assert_eq!(acme["metadata"][0]["encoding"], "utf8");
    let bob = state.body["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == BOB)
        .unwrap();
    assert_eq!(bob["orgId"], GLOBEX);
    assert_eq!(bob["metadata"][0]["value"], "/wA=");
    assert_eq!(bob["metadata"][0]["encoding"], "base64");

    // Faults via HTTP.
    let r = anonymous(&emu, Method::POST, "/_emulator/faults", Some(json!({ "operations": ["GetMyOrg"], "kind": { "status": { "http": 503, "code": 14 } }, "times": 1 })))
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = as_admin(&emu, Method::GET, "/management/v1/orgs/me", None).await;
    assert_eq!(r.status, 503);
    let r = as_admin(&emu, Method::GET, "/management/v1/orgs/me", None).await;
    assert_eq!(r.status, 200);
    let r = anonymous(
        &emu,
        Method::POST,
        "/_emulator/faults",
        Some(json!({ "kind": { "latency_ms": 10 } })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        serde_json::from_value::<Vec<Fault>>(r.body).unwrap(),
        [Fault::new(FaultKind::Latency(Duration::from_millis(10)))]
    );
    let r = anonymous(&emu, Method::DELETE, "/_emulator/faults", None).await;
    assert_eq!(r.status, 204);
    let r = anonymous(&emu, Method::GET, "/_emulator/faults", None).await;
    assert_eq!(r.body, json!([]));
    let r = anonymous(
        &emu,
        Method::POST,
        "/_emulator/faults",
        Some(json!({ "kind": "explode" })),
    )
    .await;
    assert_eq!(r.status, 400);

    // Recorded requests via HTTP (admin routes themselves are not recorded).
    let r = anonymous(&emu, Method::GET, "/_emulator/requests", None).await;
    let recorded = r.body.as_array().unwrap();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0]["operation"], "GetMyOrg");
    assert_eq!(recorded[0]["status"], 503);
    assert_eq!(recorded[1]["status"], 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_server() {
    let emu = Emulator::start_seeded().await.unwrap();
    let url = emu.url();
    let second = emu.clone();
    drop(emu);
    let r = as_admin(&second, Method::GET, "/management/v1/orgs/me", None).await;
    assert_eq!(r.status, 200, "a clone keeps the server alive");
    drop(second);
    let mut stopped = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let attempt = reqwest::Client::new()
            .get(format!("{url}/management/v1/orgs/me"))
            .send()
            .await;
        if attempt.is_err() {
            stopped = true;
            break;
        }
    }
    assert!(
        stopped,
        "server still answering after the last handle was dropped"
    );
}
