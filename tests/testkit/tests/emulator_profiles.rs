//! Version profiles: the capability probe answers of v2e §1.7 on each profile, the routing 404
//! of removed APIs (api §10), and the profile's same-value and empty-value semantics.

mod support;

use reqwest::Method;
use serde_json::json;
use support::*;
use zmo_testkit::emulator::{DEMO_ORG_ACME, DEMO_USER_ALICE, Emulator, Mode, Operation, Profile};

const PROBE_USER: &str = "/zitadel.user.v2.UserService/ListUserMetadata";
const PROBE_ORG: &str = "/zitadel.org.v2.OrganizationService/ListOrganizationMetadata";

/// The capability probe: a one-item list at `path` of the object `id_field` = `probe`.
async fn probe(emu: &Emulator, path: &str, id_field: &str) -> Resp {
    let body = json!({id_field: "probe", "pagination": {"limit": 1}});
    connect(emu, path, ADMIN, &body).await
}

async fn probe_user(emu: &Emulator) -> Resp {
    probe(emu, PROBE_USER, "userId").await
}

async fn probe_org(emu: &Emulator) -> Resp {
    probe(emu, PROBE_ORG, "organizationId").await
}

fn assert_routing_404(r: &Resp) {
    assert_eq!(r.status, 404, "{}", r.text);
    assert!(r.content_type.starts_with("application/json"));
    assert_eq!(r.body, json!({"code": 5, "message": "Not Found"}));
}

fn assert_page_not_found(r: &Resp) {
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.content_type, "text/plain; charset=utf-8");
    assert_eq!(r.text.trim_end(), "404 page not found");
}

async fn v1_list(emu: &Emulator) -> Resp {
    rest_admin(
        emu,
        Method::POST,
        "/management/v1/metadata/_search",
        Some(&json!({})),
    )
    .await
}

async fn beta_list(emu: &Emulator) -> Resp {
    connect(
        emu,
        &format!("{ORG_BETA_SVC}/ListOrganizationMetadata"),
        ADMIN,
        &json!({"organizationId": DEMO_ORG_ACME}),
    )
    .await
}

#[tokio::test]
async fn v3_serves_v1_only() {
    let emu = Emulator::start_seeded_with(Profile::V3).await.unwrap();
    assert_eq!(emu.mode(), Mode::legacy());
    assert_routing_404(&probe_user(&emu).await);
    assert_routing_404(&probe_org(&emu).await);
    assert_routing_404(&beta_list(&emu).await);
    let r = rest_admin(
        &emu,
        Method::POST,
        &format!("/v2/users/{DEMO_USER_ALICE}/metadata/search"),
        Some(&json!({})),
    )
    .await;
    assert_routing_404(&r);
    assert_eq!(v1_list(&emu).await.status, 200);
    // The v2 REST lookups existed before v4.
    let r = rest_admin(
        &emu,
        Method::GET,
        &format!("/v2/users/{DEMO_USER_ALICE}"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    emu.shutdown().await;
}

#[tokio::test]
async fn v4_0_has_user_v2_and_org_service_without_metadata() {
    let emu = Emulator::start_seeded_with(Profile::V4_0).await.unwrap();
    let r = probe_user(&emu).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, json!({"pagination": {"appliedLimit": "1"}}));
    assert_page_not_found(&probe_org(&emu).await);
    // The org service itself exists.
    let r = connect(
        &emu,
        &format!("{ORG_SVC}/ListOrganizations"),
        ADMIN,
        &json!({}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // v2beta: present, writes an event even for an unchanged value, rejects empty values.
    let set = format!("{ORG_BETA_SVC}/SetOrganizationMetadata");
    let body =
        json!({"organizationId": DEMO_ORG_ACME, "metadata": [{"key": "k", "value": b64(b"v")}]});
    assert_eq!(connect(&emu, &set, ADMIN, &body).await.status, 200);
    let seq = emu.org_sequence(DEMO_ORG_ACME);
    assert_eq!(connect(&emu, &set, ADMIN, &body).await.status, 200);
    assert_eq!(emu.org_sequence(DEMO_ORG_ACME), seq + 1);
    let empty = json!({"organizationId": DEMO_ORG_ACME, "metadata": [{"key": "k", "value": ""}]});
    let r = connect(&emu, &set, ADMIN, &empty).await;
    assert_connect_error(&r, 400, "invalid_argument", None);
    // v2beta on v4.0 checked no permission at all (v2e §1.4 historical caveat).
    emu.add_token(
        "nobody",
        zmo_testkit::emulator::TokenGrant::new(DEMO_ORG_ACME),
    );
    assert_eq!(connect(&emu, &set, "nobody", &body).await.status, 200);
    // User v2 rejects empty values before "empty deletes" (PGV, no details).
    let r = connect(
        &emu,
        &format!("{USER_SVC}/SetUserMetadata"),
        ADMIN,
        &json!({"userId": "probe", "metadata": [{"key": "probe", "value": ""}]}),
    )
    .await;
    assert_connect_error(&r, 400, "invalid_argument", None);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("between 1 and 500000 bytes")
    );
    assert_eq!(v1_list(&emu).await.status, 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn v4x_has_both_v2_services_and_v1() {
    let emu = Emulator::start_seeded_with(Profile::V4x).await.unwrap();
    assert_eq!(probe_user(&emu).await.status, 200);
    let r = probe_org(&emu).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // The org list echoes the requested limit; a fake id is empty.
    assert_eq!(r.body, json!({"pagination": {"appliedLimit": "1"}}));
    assert_eq!(v1_list(&emu).await.status, 200);
    assert_eq!(beta_list(&emu).await.status, 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn v5_removes_v1_and_v2beta() {
    let emu = Emulator::start_seeded_with(Profile::V5).await.unwrap();
    assert_eq!(probe_user(&emu).await.status, 200);
    assert_eq!(probe_org(&emu).await.status, 200);
    assert_routing_404(&v1_list(&emu).await);
    for (method, path) in [
        (Method::POST, "/management/v1/metadata/k".to_owned()),
        (Method::GET, "/management/v1/orgs/me".to_owned()),
        (
            Method::DELETE,
            format!("/management/v1/users/{DEMO_USER_ALICE}/metadata/_bulk"),
        ),
    ] {
        let r = rest_admin(&emu, method, &path, Some(&json!({}))).await;
        assert_routing_404(&r);
    }
    assert_routing_404(&beta_list(&emu).await);
    // Admin is never served over Connect.
    let r = connect(
        &emu,
        "/zitadel.admin.v1.AdminService/ListEvents",
        ADMIN,
        &json!({}),
    )
    .await;
    assert_routing_404(&r);
    // The empty-value probe reaches the user lookup: new semantics.
    let r = connect(
        &emu,
        &format!("{USER_SVC}/SetUserMetadata"),
        ADMIN,
        &json!({"userId": "probe", "metadata": [{"key": "probe", "value": ""}]}),
    )
    .await;
    assert_connect_error(&r, 400, "failed_precondition", Some("COMMAND-uXHNj"));
    // Routing 404s are recorded as `Other`, not as the v1 operation.
    assert_eq!(emu.count(Operation::ListOrgMetadata), 0);
    assert!(
        emu.requests()
            .iter()
            .filter(|r| r.path.starts_with("/management/v1"))
            .all(|r| r.operation == Operation::Other && r.status == 404)
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn default_profile_and_switching() {
    let emu = Emulator::start_seeded().await.unwrap();
    assert_eq!(emu.profile(), Profile::Main2026);
    assert_eq!(emu.mode(), Mode::main_2026());
    assert_eq!(probe_user(&emu).await.status, 200);
    assert_eq!(v1_list(&emu).await.status, 200);
    emu.set_profile(Profile::V3);
    assert_routing_404(&probe_user(&emu).await);
    emu.set_profile(Profile::V5);
    assert_routing_404(&v1_list(&emu).await);
    assert_eq!(probe_user(&emu).await.status, 200);
    // Wrong HTTP method on a Connect route, unknown method of an existing service.
    let r = send(client().get(format!("{}{PROBE_USER}", emu.url()))).await;
    assert_eq!(r.status, 405);
    let r = connect(&emu, &format!("{USER_SVC}/NoSuchMethod"), ADMIN, &json!({})).await;
    assert_page_not_found(&r);
    emu.shutdown().await;
}
