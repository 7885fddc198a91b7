//! v2 metadata over Connect and REST (v2e §1.1–§1.8): shapes, the command layer's semantics and
//! order of checks, permissions, pagination, Connect errors, lookups, unordered lists, the 4 MiB
//! gateway limit on answers, and the deletion-safety faults of api §3 / §10.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::*;
use zmo_testkit::emulator::{
    DEMO_ORG_ACME as ACME, DEMO_ORG_GLOBEX as GLOBEX, DEMO_USER_ALICE as ALICE,
    DEMO_USER_BOB as BOB, Emulator, Fault, ListOrder, Operation, Profile, TokenGrant,
};

/// Connect method names of the v2 metadata RPCs.
const SET_USER: &str = "SetUserMetadata";
const LIST_USER: &str = "ListUserMetadata";
const SET_ORG: &str = "SetOrganizationMetadata";
const LIST_ORG: &str = "ListOrganizationMetadata";

fn set_user(user: &str, entries: &[(&str, &str)]) -> Value {
    let metadata: Vec<Value> = entries
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect();
    json!({"userId": user, "metadata": metadata})
}

async fn user_call(emu: &Emulator, method: &str, token: &str, body: &Value) -> Resp {
    connect(emu, &format!("{USER_SVC}/{method}"), token, body).await
}

async fn org_call(emu: &Emulator, method: &str, token: &str, body: &Value) -> Resp {
    connect(emu, &format!("{ORG_SVC}/{method}"), token, body).await
}

/// `DeleteUserMetadata` of `keys` as the admin.
async fn delete_user_keys(emu: &Emulator, user: &str, keys: &[&str]) -> Resp {
    user_admin(
        emu,
        "DeleteUserMetadata",
        &json!({"userId": user, "keys": keys}),
    )
    .await
}

/// `DeleteOrganizationMetadata` of `keys` as the admin.
async fn delete_org_keys(emu: &Emulator, org: &str, keys: &[&str]) -> Resp {
    let body = json!({"organizationId": org, "keys": keys});
    org_admin(emu, "DeleteOrganizationMetadata", &body).await
}

/// `ListUserMetadata` of `user` as the admin, no filters or pagination.
async fn list_user(emu: &Emulator, user: &str) -> Resp {
    user_admin(emu, LIST_USER, &json!({"userId": user})).await
}

/// A user-service call as the admin.
async fn user_admin(emu: &Emulator, method: &str, body: &Value) -> Resp {
    user_call(emu, method, ADMIN, body).await
}

/// An organization-service call as the admin.
async fn org_admin(emu: &Emulator, method: &str, body: &Value) -> Resp {
    org_call(emu, method, ADMIN, body).await
}

#[tokio::test]
async fn user_v2_semantics_over_connect() {
    let emu = Emulator::start_seeded().await.unwrap();
    let v = b64(b"platform");
    // Set: only `setDate`.
    let r = user_admin(
        &emu,
        SET_USER,
        &set_user(ALICE, &[("team", &v), ("tier", "Z29sZA")]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let set_date = r.body["setDate"].as_str().unwrap().to_owned();
    assert_eq!(r.body.as_object().unwrap().len(), 1, "{}", r.text);
    // Unpadded / URL-safe input accepted, padded output.
    assert_eq!(emu.user_metadata(ALICE)["tier"], b"gold");
    let r = list_user(&emu, ALICE).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["pagination"],
        json!({"totalResult": "2", "appliedLimit": "100"})
    );
    let items = r.body["metadata"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    for item in items {
        let keys: Vec<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            ["changeDate", "creationDate", "key", "value"],
            "{item}"
        );
        assert_eq!(item["creationDate"], set_date.as_str());
    }
    assert!(
        items
            .iter()
            .any(|i| i["key"] == "tier" && i["value"] == "Z29sZA==")
    );
    // Filters (TEXT_FILTER_METHOD_*), ANDed.
    let r = user_admin(&emu, LIST_USER, &json!({"userId": ALICE,
        "filters": [{"keyFilter": {"key": "T", "method": "TEXT_FILTER_METHOD_STARTS_WITH_IGNORE_CASE"}},
                    {"keyFilter": {"key": "am", "method": "TEXT_FILTER_METHOD_ENDS_WITH"}}]})).await;
    assert_eq!(
        r.body["metadata"].as_array().unwrap().len(),
        1,
        "{}",
        r.text
    );
    assert_eq!(r.body["metadata"][0]["key"], "team");
    // Same value: no event; setDate = date of the last metadata event.
    let seq = emu.user_sequence(ALICE);
    let r = user_admin(&emu, SET_USER, &set_user(ALICE, &[("team", &v)])).await;
    assert_eq!(r.body["setDate"], set_date.as_str());
    assert_eq!(emu.user_sequence(ALICE), seq);
    // Empty value (main): deletes; absent key: no-op.
    let r = user_admin(
        &emu,
        SET_USER,
        &json!({"userId": ALICE, "metadata": [{"key": "tier"}, {"key": "never", "value": ""}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!emu.user_metadata(ALICE).contains_key("tier"));
    assert_eq!(emu.user_sequence(ALICE), seq + 1);
    // Delete of a missing key: 404, all or nothing.
    let r = delete_user_keys(&emu, ALICE, &["team", "missing"]).await;
    assert_connect_error(&r, 404, "not_found", Some("META-2nnds"));
    assert_eq!(
        r.body["details"][0]["value"],
        "CgpNRVRBLTJubmRzEh1PbmUgb3IgbW9yZSBrZXlzIGRvIG5vdCBleGlzdA"
    );
    assert!(emu.user_metadata(ALICE).contains_key("team"));
    let r = delete_user_keys(&emu, ALICE, &["team"]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["deletionDate"].is_string());
    assert!(emu.user_metadata(ALICE).is_empty());
    // Empty lists.
    let r = user_admin(&emu, SET_USER, &json!({"userId": ALICE, "metadata": []})).await;
    assert_connect_error(&r, 400, "failed_precondition", Some("META-9mm2d"));
    let r = delete_user_keys(&emu, ALICE, &[]).await;
    assert_connect_error(&r, 400, "failed_precondition", Some("META-9mm2d"));
    // PGV: no details.
    let r = user_admin(&emu, SET_USER, &set_user(ALICE, &[("", &v)])).await;
    assert_connect_error(&r, 400, "invalid_argument", None);
    assert_eq!(
        r.body["message"],
        "invalid SetUserMetadataRequest.Metadata[0]: embedded message failed validation | caused by: invalid Metadata.Key: value length must be between 1 and 200 runes, inclusive"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn user_v2_permissions_and_order_of_checks() {
    let emu = Emulator::start_seeded().await.unwrap();
    emu.put_user_metadata(BOB, "k", b"v");
    emu.add_token("acme", TokenGrant::org_owner(ACME));
    // Unknown user: 400 COMMAND-uXHNj even without any permission.
    emu.add_token("nobody", TokenGrant::new(ACME));
    let r = user_call(&emu, SET_USER, "nobody", &set_user("404", &[("k", "dg==")])).await;
    assert_connect_error(&r, 400, "failed_precondition", Some("COMMAND-uXHNj"));
    let r = user_call(
        &emu,
        "DeleteUserMetadata",
        "nobody",
        &json!({"userId": "404", "keys": ["k"]}),
    )
    .await;
    assert_connect_error(&r, 400, "failed_precondition", Some("COMMAND-uXHNj"));
    // A user of another org: 403 AUTH-AWfge (x-zitadel-orgid is ignored by v2).
    let r = user_call(&emu, SET_USER, "acme", &set_user(BOB, &[("k", "dg==")])).await;
    assert_connect_error(&r, 403, "permission_denied", Some("AUTH-AWfge"));
    assert_eq!(
        r.body["details"][0]["value"],
        "CgpBVVRILUFXZmdlEh1ObyBtYXRjaGluZyBwZXJtaXNzaW9ucyBmb3VuZA"
    );
    // List never answers 403: empty, but totalResult counts the hidden rows.
    let r = user_call(&emu, LIST_USER, "acme", &json!({"userId": BOB})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"pagination": {"totalResult": "1", "appliedLimit": "100"}})
    );
    // The user itself may read its metadata.
    emu.add_token("bob", TokenGrant::new(GLOBEX).with_user_id(BOB));
    let r = user_call(&emu, LIST_USER, "bob", &json!({"userId": BOB})).await;
    assert_eq!(
        r.body["metadata"].as_array().map(Vec::len),
        Some(1),
        "{}",
        r.text
    );
    // Pagination: max 1000.
    let r = user_admin(
        &emu,
        LIST_USER,
        &json!({"userId": BOB, "pagination": {"limit": 1001}}),
    )
    .await;
    assert_connect_error(&r, 400, "invalid_argument", Some("QUERY-4M0fs"));
    let r = user_admin(
        &emu,
        LIST_USER,
        &json!({"userId": BOB, "pagination": {"offset": "1", "limit": 1000}}),
    )
    .await;
    assert_eq!(
        r.body,
        json!({"pagination": {"totalResult": "1", "appliedLimit": "1000"}})
    );
    // Missing token.
    let r = send(
        client()
            .post(format!("{}{USER_SVC}/ListUserMetadata", emu.url()))
            .json(&json!({})),
    )
    .await;
    assert_connect_error(&r, 401, "unauthenticated", None);
    assert_eq!(r.body["message"], "auth header missing");
    emu.shutdown().await;
}

#[tokio::test]
async fn no_op_set_without_history_answers_the_zero_date() {
    let emu = Emulator::start_seeded().await.unwrap();
    let r = user_admin(&emu, SET_USER, &set_user(ALICE, &[("k", "")])).await;
    assert_eq!(
        r.body,
        json!({"setDate": "0001-01-01T00:00:00Z"}),
        "{}",
        r.text
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn org_v2_semantics() {
    let emu = Emulator::start_seeded().await.unwrap();
    let set = |org: &str, k: &str, v: &str| json!({"organizationId": org, "metadata": [{"key": k, "value": v}]});
    let r = org_admin(&emu, SET_ORG, &set(ACME, "tier", "Z29sZA==")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Unchanged value on main: no event.
    let seq = emu.org_sequence(ACME);
    let again = org_admin(&emu, SET_ORG, &set(ACME, "tier", "Z29sZA==")).await;
    assert_eq!(again.body["setDate"], r.body["setDate"]);
    assert_eq!(emu.org_sequence(ACME), seq);
    // Unknown org: instance rights → COMMAND-QXPGs; org-scoped caller → AUTH-AWfge first.
    let r = org_admin(&emu, SET_ORG, &set("999", "k", "dg==")).await;
    assert_connect_error(&r, 400, "failed_precondition", Some("COMMAND-QXPGs"));
    emu.add_token("acme", TokenGrant::org_owner(ACME));
    let r = org_call(&emu, SET_ORG, "acme", &set("999", "k", "dg==")).await;
    assert_connect_error(&r, 403, "permission_denied", Some("AUTH-AWfge"));
    // List: unreadable org → 200 {} (empty, totalResult absent); appliedLimit echoes the request.
    let r = org_call(&emu, LIST_ORG, "acme", &json!({"organizationId": GLOBEX})).await;
    assert_eq!(r.body, json!({}), "{}", r.text);
    let r = org_call(&emu, LIST_ORG, "acme", &json!({"organizationId": ACME})).await;
    assert_eq!(
        r.body["pagination"],
        json!({"totalResult": "1"}),
        "{}",
        r.text
    );
    let r = org_admin(
        &emu,
        LIST_ORG,
        &json!({"organizationId": ACME, "pagination": {"limit": 5}}),
    )
    .await;
    assert_eq!(
        r.body["pagination"],
        json!({"totalResult": "1", "appliedLimit": "5"})
    );
    // Delete.
    let r = delete_org_keys(&emu, ACME, &[]).await;
    assert_connect_error(&r, 400, "failed_precondition", Some("META-9mw2d"));
    let r = delete_org_keys(&emu, ACME, &["tier", "x"]).await;
    assert_connect_error(&r, 404, "not_found", Some("META-2npds"));
    let r = delete_org_keys(&emu, ACME, &["tier"]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(emu.org_metadata(ACME).is_empty());
    // v4.x: an unchanged org value still writes an event.
    emu.set_profile(Profile::V4x);
    org_admin(&emu, SET_ORG, &set(ACME, "a", "dg==")).await;
    let seq = emu.org_sequence(ACME);
    org_admin(&emu, SET_ORG, &set(ACME, "a", "dg==")).await;
    assert_eq!(emu.org_sequence(ACME), seq + 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn rest_transcoding_of_the_metadata_rpcs() {
    let emu = Emulator::start_seeded().await.unwrap();
    let path = format!("/v2/users/{ALICE}/metadata");
    let r = rest_admin(&emu, Method::POST, &path, Some(&json!({"metadata": [{"key": "a/b?c", "value": "dg=="}, {"key": "b", "value": "dg=="}, {"key": "c", "value": "dg=="}]}))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["setDate"].is_string());
    let r = rest_admin(
        &emu,
        Method::POST,
        &format!("{path}/search"),
        Some(&json!({"pagination": {"asc": true}})),
    )
    .await;
    assert_eq!(r.body["pagination"]["totalResult"], "3", "{}", r.text);
    let r = rest_admin(&emu, Method::DELETE, &format!("{path}?keys=b&keys=c"), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(emu.user_metadata(ALICE).len(), 1);
    // Errors through the gateway: google.rpc.Status with @type details.
    let r = rest_admin(&emu, Method::DELETE, &format!("{path}?keys=zzz"), None).await;
    assert_rest_error(&r, 404, 5, Some("META-2nnds"));
    assert_eq!(
        r.body["details"][0]["@type"],
        "type.googleapis.com/zitadel.v1.ErrorDetail"
    );
    let r = rest_admin(
        &emu,
        Method::POST,
        "/v2/users/404/metadata",
        Some(&json!({"metadata": [{"key": "k", "value": "dg=="}]})),
    )
    .await;
    assert_rest_error(&r, 400, 9, Some("COMMAND-uXHNj"));
    let r = rest_admin(
        &emu,
        Method::POST,
        &format!("/v2/organizations/{ACME}/metadata"),
        Some(&json!({"metadata": [{"key": "o", "value": "dg=="}]})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = rest_admin(
        &emu,
        Method::DELETE,
        &format!("/v2/organizations/{ACME}/metadata?keys=o"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(emu.org_metadata(ACME).is_empty());
    assert_eq!(emu.count(Operation::DeleteOrgMetadataV2), 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn connect_transport_rules() {
    let emu = Emulator::start_seeded().await.unwrap();
    let url = format!("{}{USER_SVC}/ListUserMetadata", emu.url());
    let auth = format!("Bearer {ADMIN}");
    // Without Connect-Protocol-Version: fine (the header is optional).
    let r = send(
        client()
            .post(&url)
            .header("authorization", &auth)
            .json(&json!({"userId": "x"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = send(
        client()
            .post(&url)
            .header("authorization", &auth)
            .header("connect-protocol-version", "2")
            .json(&json!({})),
    )
    .await;
    assert_connect_error(&r, 400, "invalid_argument", None);
    let r = send(
        client()
            .post(&url)
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body(""),
    )
    .await;
    assert_connect_error(&r, 400, "invalid_argument", None);
    let r = send(
        client()
            .post(&url)
            .header("authorization", &auth)
            .header("content-type", "text/plain")
            .body("{}"),
    )
    .await;
    assert_eq!(r.status, 415);
    // Snake_case input and unknown fields are accepted.
    let r = send(
        client()
            .post(&url)
            .header("authorization", &auth)
            .json(&json!({"user_id": ALICE, "unknown": 1})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Injected faults answer in Connect's shape on Connect routes.
    emu.inject(
        Fault::unavailable()
            .on(Operation::ListUserMetadataV2)
            .times(1),
    );
    let r = send(
        client()
            .post(&url)
            .header("authorization", &auth)
            .json(&json!({})),
    )
    .await;
    assert_connect_error(&r, 503, "unavailable", None);
    emu.shutdown().await;
}

#[tokio::test]
async fn lookups_and_user_not_found() {
    let emu = Emulator::start_seeded().await.unwrap();
    let r = user_admin(&emu, "GetUserByID", &json!({"userId": ALICE})).await;
    assert_eq!(r.body["user"]["userId"], ALICE, "{}", r.text);
    emu.remove_user(ALICE);
    let r = user_admin(&emu, "GetUserByID", &json!({"userId": ALICE})).await;
    assert_connect_error(&r, 404, "not_found", Some("QUERY-Dfbg2"));
    let r = rest_admin(&emu, Method::GET, &format!("/v2/users/{ALICE}"), None).await;
    assert_rest_error(&r, 404, 5, Some("QUERY-Dfbg2"));
    // ListUsers (no default limit) and ListOrganizations over Connect and REST.
    let r = user_admin(
        &emu,
        "ListUsers",
        &json!({"queries": [{"organizationIdQuery": {"organizationId": GLOBEX}}]}),
    )
    .await;
    assert_eq!(r.body["details"]["totalResult"], "1", "{}", r.text);
    assert_eq!(r.body["result"][0]["username"], "bob");
    let r = rest_admin(&emu, Method::POST, "/v2/users", Some(&json!({"queries": [{"loginNameQuery": {"loginName": "bob@globex.localhost", "method": "TEXT_QUERY_METHOD_EQUALS"}}]}))).await;
    assert_eq!(r.body["result"][0]["userId"], BOB, "{}", r.text);
    let r = org_admin(
        &emu,
        "ListOrganizations",
        &json!({"queries": [{"idQuery": {"id": ACME}}]}),
    )
    .await;
    assert_eq!(r.body["result"][0]["name"], "Acme", "{}", r.text);
    emu.shutdown().await;
}

fn keys_of(r: &Resp, list: &str) -> Vec<String> {
    r.body[list]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| i["key"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn shuffled_lists_change_order_on_every_request() {
    let emu = Emulator::start_seeded().await.unwrap();
    for i in 0..30 {
        emu.put_org_metadata(ACME, &format!("k{i:02}"), b"v");
    }
    let v1 = async || {
        rest_admin(
            &emu,
            Method::POST,
            "/management/v1/metadata/_search",
            Some(&json!({})),
        )
        .await
    };
    let sorted = keys_of(&v1().await, "result");
    assert!(
        sorted.windows(2).all(|w| w[0] < w[1]),
        "key order by default"
    );
    emu.set_list_order(ListOrder::Shuffled { seed: 7 });
    let a = keys_of(&v1().await, "result");
    let b = keys_of(&v1().await, "result");
    assert_ne!(a, b);
    assert_ne!(a, sorted);
    let mut a_sorted = a.clone();
    a_sorted.sort();
    assert_eq!(a_sorted, sorted, "same rows, other order");
    // Paging across a shuffled listing overlaps/skips: two pages rarely cover every key.
    let page = async |offset: u32| {
        rest_admin(
            &emu,
            Method::POST,
            "/management/v1/metadata/_search",
            Some(&json!({"query": {"offset": offset.to_string(), "limit": 15}})),
        )
        .await
    };
    let mut seen = keys_of(&page(0).await, "result");
    seen.extend(keys_of(&page(15).await, "result"));
    seen.sort();
    seen.dedup();
    assert!(seen.len() <= 30);
    // Org v2 list: unordered too.
    let org = async || org_admin(&emu, LIST_ORG, &json!({"organizationId": ACME})).await;
    assert_ne!(
        keys_of(&org().await, "metadata"),
        keys_of(&org().await, "metadata")
    );
    // User v2: creation date order, ties (one push) in random order.
    let entries: Vec<(String, String)> = (0..20).map(|i| (format!("u{i:02}"), b64(b"x"))).collect();
    let refs: Vec<(&str, &str)> = entries
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    user_admin(&emu, SET_USER, &set_user(ALICE, &refs)).await;
    emu.put_user_metadata(ALICE, "later", b"x");
    let user = async || list_user(&emu, ALICE).await;
    let first = keys_of(&user().await, "metadata");
    let second = keys_of(&user().await, "metadata");
    assert_eq!(first[0], "later", "newest first by default");
    assert_eq!(second[0], "later");
    assert_ne!(first, second, "ties in another order");
    emu.shutdown().await;
}

#[tokio::test]
async fn answers_over_4_mib_fail_through_the_gateway_only() {
    let emu = Emulator::start_seeded().await.unwrap();
    let big = vec![b'x'; 500_000];
    for i in 0..9 {
        emu.put_org_metadata(ACME, &format!("big{i}"), &big);
        emu.put_user_metadata(ALICE, &format!("big{i}"), &big);
    }
    let r = rest_admin(
        &emu,
        Method::POST,
        "/management/v1/metadata/_search",
        Some(&json!({})),
    )
    .await;
    assert_rest_error(&r, 429, 8, None);
    let msg = r.body["message"].as_str().unwrap();
    assert!(
        msg.starts_with("grpc: received message larger than max ("),
        "{msg}"
    );
    assert!(msg.ends_with(" vs. 4194304)"), "{msg}");
    let n: usize = msg
        .trim_start_matches("grpc: received message larger than max (")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(n > 4_500_000 && n < 4_600_000, "{n}");
    // Smaller pages fit.
    let r = rest_admin(
        &emu,
        Method::POST,
        "/management/v1/metadata/_search",
        Some(&json!({"query": {"limit": 8}})),
    )
    .await;
    assert_eq!(r.status, 200);
    // REST v2 likewise; Connect has no limit.
    let r = rest_admin(
        &emu,
        Method::POST,
        &format!("/v2/users/{ALICE}/metadata/search"),
        Some(&json!({})),
    )
    .await;
    assert_rest_error(&r, 429, 8, None);
    let r = list_user(&emu, ALICE).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["metadata"].as_array().unwrap().len(), 9);
    // Requests over 4 MiB through REST v2 fail too; over Connect they pass.
    let entries: Vec<Value> = (0..9)
        .map(|i| json!({"key": format!("n{i}"), "value": b64(&big)}))
        .collect();
    let r = rest_admin(
        &emu,
        Method::POST,
        &format!("/v2/users/{ALICE}/metadata"),
        Some(&json!({"metadata": entries})),
    )
    .await;
    assert_rest_error(&r, 429, 8, None);
    let r = user_admin(
        &emu,
        SET_USER,
        &json!({"userId": ALICE, "metadata": entries}),
    )
    .await;
    assert_eq!(r.status, 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn deletion_safety_answers() {
    let emu = Emulator::start_seeded().await.unwrap();
    let list = async |token: &'static str, org: Option<&'static str>| {
        rest(
            &emu,
            Method::POST,
            "/management/v1/metadata/_search",
            token,
            org,
            Some(&json!({})),
        )
        .await
    };
    // A caller scoped to other orgs only: 404 AUTHZ-cdgFk, a permission problem.
    emu.add_token("globex", TokenGrant::org_owner(GLOBEX));
    let r = list("globex", Some(ACME)).await;
    assert_rest_error(&r, 404, 5, Some("AUTHZ-cdgFk"));
    // Transient AUTH-Bs7Ds for an org that exists, then normal answers.
    emu.inject(
        Fault::org_lookup_failed()
            .on(Operation::ListOrgMetadata)
            .times(2),
    );
    for _ in 0..2 {
        let r = list(ADMIN, Some(ACME)).await;
        assert_rest_error(&r, 403, 7, Some("AUTH-Bs7Ds"));
        assert_eq!(r.body["message"], "Organisation doesn't exist (AUTH-Bs7Ds)");
    }
    assert_eq!(list(ADMIN, Some(ACME)).await.status, 200);
    // The same faults in Connect's shape on v2 routes.
    emu.inject(
        Fault::org_lookup_failed()
            .on(Operation::SetOrgMetadataV2)
            .times(1),
    );
    let r = org_admin(
        &emu,
        SET_ORG,
        &json!({"organizationId": ACME, "metadata": [{"key": "k", "value": "dg=="}]}),
    )
    .await;
    assert_connect_error(&r, 403, "permission_denied", Some("AUTH-Bs7Ds"));
    emu.inject(
        Fault::route_not_found()
            .on(Operation::ListOrgMetadata)
            .times(1),
    );
    let r = list(ADMIN, None).await;
    assert_eq!(r.body, json!({"code": 5, "message": "Not Found"}));
    emu.inject(Fault::no_membership().times(1));
    assert_rest_error(&list(ADMIN, None).await, 404, 5, Some("AUTHZ-cdgFk"));
    emu.shutdown().await;
}

#[tokio::test]
async fn bodies_are_recorded() {
    let emu = Emulator::start_seeded().await.unwrap();
    list_user(&emu, ALICE).await;
    user_admin(&emu, "NoSuch", &json!({})).await;
    let reqs = emu.requests();
    assert_eq!(reqs[0].body, json!({"userId": ALICE}));
    assert_eq!(
        reqs[0].response_body,
        json!({"pagination": {"appliedLimit": "100"}})
    );
    assert!(
        reqs[0]
            .response_content_type
            .starts_with("application/json")
    );
    assert_eq!(reqs[1].response_body, json!("404 page not found\n"));
    emu.shutdown().await;
}
