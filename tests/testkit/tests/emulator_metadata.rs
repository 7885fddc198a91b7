//! Metadata endpoints, lookups, semantics and validation of the ZITADEL emulator, over real HTTP.

mod support;

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Resp, admin, assert_error, b64, call, delete, get, keys, post};
use zmo_testkit::emulator::{
    DEMO_ADMIN_TOKEN, DEMO_ORG_ACME as ACME, DEMO_ORG_GLOBEX as GLOBEX, DEMO_USER_ALICE as ALICE,
    DEMO_USER_BOB as BOB, Emulator, Mode, Operation, TokenGrant,
};

fn assert_ts(v: &Value) {
    let s = v.as_str().expect("timestamp string");
    assert!(s.ends_with('Z'), "{s}");
    chrono::DateTime::parse_from_rfc3339(s).expect("RFC 3339");
    let frac = s
        .split('.')
        .nth(1)
        .map_or(0, |f| f.trim_end_matches('Z').len());
    assert!([0, 3, 6, 9].contains(&frac), "{s}");
}

fn seq(v: &Value) -> u64 {
    v.as_str()
        .expect("sequence is a JSON string")
        .parse()
        .expect("numeric sequence")
}

fn assert_plain_error(r: &Resp, http: u16, code: i64) -> String {
    assert_eq!(r.status, http, "{}", r.text);
    assert_eq!(r.body["code"], code, "{}", r.text);
    assert!(r.body.get("details").is_none(), "{}", r.text);
    assert_eq!(keys(&r.body), ["code", "message"]);
    r.body["message"].as_str().expect("message").to_owned()
}

/// A BulkSet body: `metadata` items of `(key, value as sent on the wire)`.
fn items(pairs: &[(&str, &str)]) -> Value {
    let items: Vec<Value> = pairs
        .iter()
        .map(|(key, value)| json!({ "key": key, "value": value }))
        .collect();
    json!({ "metadata": items })
}

/// The keys in a search answer's `result`, in order (empty when there is none).
fn listed_keys(r: &Resp) -> Vec<String> {
    r.body["result"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| m["key"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

const ORG_BULK: &str = "/management/v1/metadata/_bulk";
const ORG_SEARCH: &str = "/management/v1/metadata/_search";

/// `/management/v1/users/<user>/metadata/<rest>` (`rest`: a key, `_bulk` or `_search`).
fn user_md(user: &str, rest: &str) -> String {
    format!("/management/v1/users/{user}/metadata/{rest}")
}

/// A 400 / code 3 without details whose message is `message`.
fn assert_invalid(r: &Resp, message: &str) {
    assert_eq!(assert_plain_error(r, 400, 3), message);
}

async fn set_org(emu: &Emulator, org: Option<&str>, key: &str, value: &[u8]) -> Resp {
    admin(
        emu,
        Method::POST,
        &format!("/management/v1/metadata/{key}"),
        org,
        Some(json!({ "value": b64(value) })),
    )
    .await
}

async fn set_user(emu: &Emulator, org: Option<&str>, user: &str, key: &str, value: &[u8]) -> Resp {
    admin(
        emu,
        Method::POST,
        &format!("/management/v1/users/{user}/metadata/{key}"),
        org,
        Some(json!({ "value": b64(value) })),
    )
    .await
}

#[tokio::test]
async fn org_metadata_happy_path_shapes() {
    let emu = Emulator::start_seeded().await.unwrap();
    let before = emu.org_sequence(ACME);
    assert!(before > 0, "orgs start at a non-zero sequence");

    let r = set_org(&emu, None, "team", b"platform").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(keys(&r.body), ["details"]);
    let d = &r.body["details"];
    assert_eq!(keys(d), ["creationDate", "resourceOwner", "sequence"]);
    assert_eq!(seq(&d["sequence"]), before + 1);
    assert_eq!(d["resourceOwner"], ACME);
    assert_ts(&d["creationDate"]);
    let set_seq = seq(&d["sequence"]);

    let r = get(&emu, "/management/v1/metadata/team").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(keys(&r.body), ["metadata"]);
    let m = &r.body["metadata"];
    assert_eq!(keys(m), ["details", "key", "value"]);
    assert_eq!(m["key"], "team");
    assert_eq!(m["value"], "cGxhdGZvcm0=");
    assert_eq!(
        keys(&m["details"]),
        ["changeDate", "creationDate", "resourceOwner", "sequence"]
    );
    assert_eq!(seq(&m["details"]["sequence"]), set_seq);
    assert_eq!(m["details"]["resourceOwner"], ACME);
    assert_ts(&m["details"]["creationDate"]);
    assert_ts(&m["details"]["changeDate"]);

    let r = post(&emu, ORG_SEARCH, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["details"]["totalResult"], "1");
    assert_ts(&r.body["details"]["viewTimestamp"]);
    let result = r.body["result"].as_array().unwrap();
    assert_eq!(result.len(), 1);
    assert_eq!(result[0], *m);

    // BulkSet: changeDate instead of creationDate, padded standard base64 on output even for
    // URL-safe unpadded input.
    let r = post(&emu, ORG_BULK, items(&[("a", "YQ"), ("bin", "-_8")])).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        keys(&r.body["details"]),
        ["changeDate", "resourceOwner", "sequence"]
    );
    assert_eq!(seq(&r.body["details"]["sequence"]), set_seq + 2);
    assert_eq!(emu.org_metadata(ACME)["a"], b"a");
    assert_eq!(emu.org_metadata(ACME)["bin"], vec![0xfb, 0xff]);
    let r = get(&emu, "/management/v1/metadata/a").await;
    assert_eq!(r.body["metadata"]["value"], "YQ==");
    let r = get(&emu, "/management/v1/metadata/bin").await;
    assert_eq!(r.body["metadata"]["value"], "+/8=");

    // Remove and BulkRemove (DELETE with a JSON body) report changeDate.
    let r = delete(&emu, "/management/v1/metadata/a", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        keys(&r.body["details"]),
        ["changeDate", "resourceOwner", "sequence"]
    );
    assert_eq!(seq(&r.body["details"]["sequence"]), set_seq + 3);
    let r = delete(&emu, ORG_BULK, Some(json!({ "keys": ["bin", "team"] }))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(seq(&r.body["details"]["sequence"]), set_seq + 5);
    assert!(emu.org_metadata(ACME).is_empty());
    assert_eq!(emu.org_sequence(ACME), set_seq + 5);

    // Empty list: no `result`, no `totalResult`.
    let r = admin(&emu, Method::POST, ORG_SEARCH, None, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body.get("result").is_none(), "{}", r.text);
    assert!(r.body["details"].get("totalResult").is_none(), "{}", r.text);
    emu.shutdown().await;
}

#[tokio::test]
async fn user_metadata_happy_path_shapes() {
    let emu = Emulator::start_seeded().await.unwrap();
    let before = emu.user_sequence(ALICE);
    let r = set_user(&emu, Some(ACME), ALICE, "role", b"admin").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(keys(&r.body), ["details"]);
    assert_eq!(
        keys(&r.body["details"]),
        ["creationDate", "resourceOwner", "sequence"]
    );
    assert_eq!(seq(&r.body["details"]["sequence"]), before + 1);
    assert_eq!(r.body["details"]["resourceOwner"], ACME);

    let r = admin(
        &emu,
        Method::POST,
        &user_md(ALICE, "_bulk"),
        Some(ACME),
        Some(items(&[("x", &b64(b"1")), ("y", &b64(b"2"))])),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(seq(&r.body["details"]["sequence"]), before + 3);
    assert_eq!(
        keys(&r.body["details"]),
        ["changeDate", "resourceOwner", "sequence"]
    );

    let r = get(&emu, &user_md(ALICE, "role")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["metadata"]["value"], b64(b"admin"));
    assert_eq!(r.body["metadata"]["details"]["resourceOwner"], ACME);
    assert_eq!(seq(&r.body["metadata"]["details"]["sequence"]), before + 1);

    let r = post(
        &emu,
        &user_md(ALICE, "_search"),
        json!({ "query": { "limit": 2 } }),
    )
    .await;
    assert_eq!(r.body["details"]["totalResult"], "3");
    assert_eq!(listed_keys(&r), ["role", "x"]);

    let r = delete(
        &emu,
        &user_md(ALICE, "_bulk"),
        Some(json!({ "keys": ["x", "y"] })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = delete(&emu, &user_md(ALICE, "role"), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(seq(&r.body["details"]["sequence"]), before + 6);
    assert!(emu.user_metadata(ALICE).is_empty());
    emu.shutdown().await;
}

#[tokio::test]
async fn sequences_are_per_aggregate() {
    let emu = Emulator::start_seeded().await.unwrap();
    let (acme, globex) = (emu.org_sequence(ACME), emu.org_sequence(GLOBEX));
    let (alice, bob) = (emu.user_sequence(ALICE), emu.user_sequence(BOB));

    for i in 0..3u8 {
        let r = set_org(&emu, None, "k", &[b'0' + i]).await;
        assert_eq!(seq(&r.body["details"]["sequence"]), acme + 1 + u64::from(i));
    }
    let r = set_org(&emu, Some(GLOBEX), "k", b"v").await;
    assert_eq!(seq(&r.body["details"]["sequence"]), globex + 1);
    let r = set_user(&emu, Some(GLOBEX), BOB, "k", b"v").await;
    assert_eq!(seq(&r.body["details"]["sequence"]), bob + 1);

    assert_eq!(emu.org_sequence(ACME), acme + 3);
    assert_eq!(emu.org_sequence(GLOBEX), globex + 1);
    assert_eq!(emu.user_sequence(ALICE), alice);
    assert_eq!(emu.user_sequence(BOB), bob + 1);

    // Out-of-band changes append events too.
    emu.put_org_metadata(ACME, "k", b"2");
    assert_eq!(emu.org_sequence(ACME), acme + 4);
    emu.delete_org_metadata(ACME, "k");
    assert_eq!(emu.org_sequence(ACME), acme + 5);
    emu.delete_org_metadata(ACME, "k");
    assert_eq!(
        emu.org_sequence(ACME),
        acme + 5,
        "deleting a missing key is a no-op"
    );
    emu.put_user_metadata(ALICE, "u", b"1");
    emu.delete_user_metadata(ALICE, "u");
    assert_eq!(emu.user_sequence(ALICE), alice + 2);
    emu.shutdown().await;
}

#[tokio::test]
async fn same_value_writes_follow_the_mode() {
    let emu = Emulator::start_seeded().await.unwrap();
    assert_eq!(emu.mode(), Mode::default());
    let bulk = || items(&[("a", &b64(b"1")), ("b", &b64(b"2"))]);
    let r = post(&emu, ORG_BULK, bulk()).await;
    let first = r.body["details"].clone();
    let s = emu.org_sequence(ACME);
    assert_eq!(seq(&first["sequence"]), s);

    // Unchanged bulk: no event, details of the latest metadata event.
    let r = post(&emu, ORG_BULK, bulk()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["details"], first);
    assert_eq!(emu.org_sequence(ACME), s);

    // Partially changed: one event.
    let r = post(
        &emu,
        ORG_BULK,
        items(&[("a", &b64(b"1")), ("b", &b64(b"3"))]),
    )
    .await;
    assert_eq!(seq(&r.body["details"]["sequence"]), s + 1);

    // Org single Set always writes.
    let r = set_org(&emu, None, "a", b"1").await;
    assert_eq!(seq(&r.body["details"]["sequence"]), s + 2);

    // User Set/BulkSet skip unchanged (v4+).
    let r1 = set_user(&emu, None, ALICE, "k", b"v").await;
    let u = emu.user_sequence(ALICE);
    let r2 = set_user(&emu, None, ALICE, "k", b"v").await;
    assert_eq!(r2.status, 200);
    assert_eq!(r2.body["details"], r1.body["details"]);
    assert_eq!(emu.user_sequence(ALICE), u);
    let r3 = post(&emu, &user_md(ALICE, "_bulk"), items(&[("k", &b64(b"v"))])).await;
    assert_eq!(seq(&r3.body["details"]["sequence"]), u);
    assert_eq!(emu.user_sequence(ALICE), u);

    // Legacy mode: everything writes.
    emu.set_mode(Mode::legacy());
    let r = post(&emu, ORG_BULK, bulk()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(seq(&r.body["details"]["sequence"]), s + 4);
    set_user(&emu, None, ALICE, "k", b"v").await;
    assert_eq!(emu.user_sequence(ALICE), u + 1);

    // v4: org bulk always writes, user skips.
    emu.set_mode(Mode::v4());
    post(&emu, ORG_BULK, bulk()).await;
    assert_eq!(emu.org_sequence(ACME), s + 6);
    set_user(&emu, None, ALICE, "k", b"v").await;
    assert_eq!(emu.user_sequence(ALICE), u + 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn bulk_operations_are_all_or_nothing() {
    let emu = Emulator::start_seeded().await.unwrap();
    let empty = |field: &str| json!({ field: [] });
    let r = post(&emu, ORG_BULK, empty("metadata")).await;
    assert_error(&r, 400, 9, "META-9mm2d");
    let r = delete(&emu, ORG_BULK, Some(empty("keys"))).await;
    assert_error(&r, 400, 9, "META-9mw2d");
    let r = post(&emu, &user_md(ALICE, "_bulk"), empty("metadata")).await;
    assert_error(&r, 400, 9, "META-9mm2d");
    let r = delete(&emu, &user_md(ALICE, "_bulk"), None).await;
    assert_error(&r, 400, 9, "META-9mm2d");

    // A bad item fails the whole bulk set.
    let r = post(
        &emu,
        ORG_BULK,
        items(&[("good", &b64(b"1")), ("", &b64(b"2"))]),
    )
    .await;
    assert_invalid(
        &r,
        "invalid BulkSetOrgMetadataRequest.Metadata[1]: embedded message failed validation | caused by: invalid BulkSetOrgMetadataRequest_Metadata.Key: value length must be between 1 and 200 runes, inclusive",
    );
    assert!(emu.org_metadata(ACME).is_empty());

    set_org(&emu, None, "a", b"1").await;
    set_org(&emu, None, "b", b"2").await;
    let s = emu.org_sequence(ACME);
    let r = delete(
        &emu,
        ORG_BULK,
        Some(json!({ "keys": ["a", "missing", "b"] })),
    )
    .await;
    assert_error(&r, 404, 5, "META-2npds");
    assert_eq!(emu.org_metadata(ACME).len(), 2, "nothing removed");
    assert_eq!(emu.org_sequence(ACME), s);

    set_user(&emu, None, ALICE, "a", b"1").await;
    let r = delete(
        &emu,
        &user_md(ALICE, "_bulk"),
        Some(json!({ "keys": ["a", "nope"] })),
    )
    .await;
    assert_error(&r, 404, 5, "META-2nnds");
    assert_eq!(emu.user_metadata(ALICE).len(), 1);

    // Duplicate keys are accepted, one event each.
    let r = delete(&emu, ORG_BULK, Some(json!({ "keys": ["a", "a"] }))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(emu.org_sequence(ACME), s + 2);
    assert_eq!(
        emu.org_metadata(ACME),
        BTreeMap::from([("b".to_owned(), b"2".to_vec())])
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn missing_keys_are_not_found() {
    let emu = Emulator::start_seeded().await.unwrap();
    let r = delete(&emu, "/management/v1/metadata/nope", None).await;
    assert_error(&r, 404, 5, "META-mcnw3");
    assert_eq!(r.body["message"], "Metadata not found (META-mcnw3)");
    let r = get(&emu, "/management/v1/metadata/nope").await;
    assert_error(&r, 404, 5, "QUERY-Rph32");
    let r = delete(&emu, &user_md(ALICE, "nope"), None).await;
    assert_error(&r, 404, 5, "META-ncnw3");
    let r = get(&emu, &user_md(ALICE, "nope")).await;
    assert_error(&r, 404, 5, "QUERY-Rgh32");
    emu.shutdown().await;
}

#[tokio::test]
async fn user_outside_the_context_org() {
    let emu = Emulator::start_seeded().await.unwrap();
    set_user(&emu, Some(ACME), ALICE, "k", b"v").await;
    // Context org Globex (IAM owner may act there), user alice lives in Acme.
    let r = set_user(&emu, Some(GLOBEX), ALICE, "k", b"w").await;
    assert_error(&r, 400, 9, "COMMAND-uXHNj");
    assert_eq!(r.body["message"], "User could not be found (COMMAND-uXHNj)");
    for (method, path, body) in [
        (Method::POST, "_bulk", Some(items(&[("k", "dw==")]))),
        (Method::DELETE, "_bulk", Some(json!({ "keys": ["k"] }))),
        (Method::DELETE, "k", None),
    ] {
        let r = admin(
            &emu,
            method,
            &format!("/management/v1/users/{ALICE}/metadata/{path}"),
            Some(GLOBEX),
            body,
        )
        .await;
        assert_error(&r, 400, 9, "COMMAND-uXHNj");
    }
    let r = admin(&emu, Method::GET, &user_md(ALICE, "k"), Some(GLOBEX), None).await;
    assert_error(&r, 404, 5, "QUERY-Rgh32");
    let r = admin(
        &emu,
        Method::POST,
        &user_md(ALICE, "_search"),
        Some(GLOBEX),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body.get("result").is_none());
    assert_eq!(emu.user_metadata(ALICE)["k"], b"v");

    // Unknown user: same as another org's user.
    let r = set_user(&emu, None, "999", "k", b"v").await;
    assert_error(&r, 400, 9, "COMMAND-uXHNj");
    emu.remove_user(ALICE);
    let r = set_user(&emu, Some(ACME), ALICE, "k", b"v").await;
    assert_error(&r, 400, 9, "COMMAND-uXHNj");
    emu.shutdown().await;
}

#[tokio::test]
async fn route_precedence_and_routing_errors() {
    let emu = Emulator::start_seeded().await.unwrap();
    // `_bulk` / `_search` win for POST and DELETE.
    let r = post(&emu, ORG_BULK, items(&[("_bulk", "eA==")])).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(emu.count(Operation::BulkSetOrgMetadata), 1);
    assert_eq!(emu.count(Operation::SetOrgMetadata), 0);
    let r = post(&emu, ORG_SEARCH, json!({ "value": "eA==" })).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["details"]["totalResult"], "1");
    assert_eq!(emu.count(Operation::ListOrgMetadata), 1);
    // GET is unaffected: the key `_bulk` can be read.
    let r = get(&emu, ORG_BULK).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["metadata"]["key"], "_bulk");
    // DELETE `_search` is a single-key Remove.
    let r = delete(&emu, ORG_SEARCH, None).await;
    assert_error(&r, 404, 5, "META-mcnw3");
    assert_eq!(emu.count(Operation::RemoveOrgMetadata), 1);
    // Same for the user routes.
    let r = delete(
        &emu,
        &user_md(ALICE, "_bulk"),
        Some(json!({ "keys": ["x"] })),
    )
    .await;
    assert_error(&r, 404, 5, "META-2nnds");
    assert_eq!(emu.count(Operation::BulkRemoveUserMetadata), 1);

    // An encoded slash splits the path: no route.
    let r = get(&emu, "/management/v1/metadata/a%2Fb").await;
    assert_eq!(assert_plain_error(&r, 404, 5), "Not Found");
    let r = get(&emu, "/management/v1/nothing").await;
    assert_eq!(assert_plain_error(&r, 404, 5), "Not Found");
    // Known path, wrong method: code 12 (grpc-gateway maps Unimplemented to 501).
    let r = admin(&emu, Method::PUT, "/management/v1/metadata/k", None, None).await;
    assert_eq!(assert_plain_error(&r, 501, 12), "Method Not Allowed");
    assert_eq!(emu.count(Operation::Other), 3);
    emu.shutdown().await;
}

#[tokio::test]
async fn lenient_input_decoding() {
    let emu = Emulator::start_seeded().await.unwrap();
    // Unknown fields are ignored; body `key` is overridden by the path.
    let r = post(
        &emu,
        "/management/v1/metadata/real",
        json!({ "value": "dg==", "key": "ignored", "somethingElse": {"x": 1} }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(emu.org_metadata(ACME).keys().collect::<Vec<_>>(), ["real"]);
    // Unpadded standard base64.
    let r = set_org(&emu, None, "x", b"").await; // empty value is invalid in v1
    assert_plain_error(&r, 400, 3);
    let r = post(&emu, "/management/v1/metadata/u", json!({ "value": "aGk" })).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(emu.org_metadata(ACME)["u"], b"hi");

    // snake_case names, enum as number, offset as number or string, limit as string.
    for body in [
        json!({ "query": { "offset": 0, "limit": "5", "asc": true }, "queries": [{ "key_query": { "key": "REA", "method": 3 } }] }),
        json!({ "query": { "offset": "0" }, "queries": [{ "keyQuery": { "key": "REA", "method": "TEXT_QUERY_METHOD_STARTS_WITH_IGNORE_CASE" } }] }),
    ] {
        let r = post(&emu, ORG_SEARCH, body).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["details"]["totalResult"], "1", "{}", r.text);
        assert_eq!(r.body["result"][0]["key"], "real");
    }

    // Bad JSON and bad base64 → 400 code 3 without details.
    let resp = reqwest::Client::new()
        .post(format!("{}/management/v1/metadata/k", emu.url()))
        .bearer_auth(DEMO_ADMIN_TOKEN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 3);
    assert!(body.get("details").is_none());
    let r = post(
        &emu,
        "/management/v1/metadata/k",
        json!({ "value": "!!not base64!!" }),
    )
    .await;
    assert_plain_error(&r, 400, 3);
    let r = post(&emu, "/management/v1/metadata/k", json!({ "value": 12 })).await;
    assert_plain_error(&r, 400, 3);
    let r = post(&emu, ORG_SEARCH, json!({ "query": { "offset": "-1" } })).await;
    assert_plain_error(&r, 400, 3);
    assert!(!emu.org_metadata(ACME).contains_key("k"));
    emu.shutdown().await;
}

#[tokio::test]
async fn validation_limits() {
    let emu = Emulator::start_seeded().await.unwrap();
    // Keys count runes, not bytes.
    let key200 = "ä".repeat(200);
    let key201 = "ä".repeat(201);
    let r = post(&emu, ORG_BULK, items(&[(&key200, "dg==")])).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = post(&emu, ORG_BULK, items(&[(&key201, "dg==")])).await;
    assert_invalid(
        &r,
        "invalid BulkSetOrgMetadataRequest.Metadata[0]: embedded message failed validation | caused by: invalid BulkSetOrgMetadataRequest_Metadata.Key: value length must be between 1 and 200 runes, inclusive",
    );
    let r = set_org(&emu, None, &"k".repeat(201), b"v").await;
    assert_invalid(
        &r,
        "invalid SetOrgMetadataRequest.Key: value length must be between 1 and 200 runes, inclusive",
    );

    // Values count decoded bytes.
    let ok = vec![b'x'; 500_000];
    let r = set_org(&emu, None, "big", &ok).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(emu.org_metadata(ACME)["big"].len(), 500_000);
    let too_big = vec![b'x'; 500_001];
    let r = set_org(&emu, None, "big", &too_big).await;
    assert_invalid(
        &r,
        "invalid SetOrgMetadataRequest.Value: value length must be between 1 and 500000 bytes, inclusive",
    );
    let r = set_user(&emu, None, ALICE, "big", &too_big).await;
    assert_invalid(
        &r,
        "invalid SetUserMetadataRequest.Value: value length must be between 1 and 500000 bytes, inclusive",
    );
    let r = set_user(&emu, None, &"1".repeat(201), "k", b"v").await;
    assert_invalid(
        &r,
        "invalid SetUserMetadataRequest.Id: value length must be between 1 and 200 runes, inclusive",
    );

    // Key filter at most 200 runes, method must be defined.
    let r = post(
        &emu,
        ORG_SEARCH,
        json!({ "queries": [{ "keyQuery": { "key": "q".repeat(201) } }] }),
    )
    .await;
    assert_invalid(
        &r,
        "invalid ListOrgMetadataRequest.Queries[0]: embedded message failed validation | caused by: invalid MetadataQuery.KeyQuery: embedded message failed validation | caused by: invalid MetadataKeyQuery.Key: value length must be at most 200 runes",
    );
    let r = post(
        &emu,
        ORG_SEARCH,
        json!({ "queries": [{ "keyQuery": { "key": "k", "method": 8 } }] }),
    )
    .await;
    assert!(assert_plain_error(&r, 400, 3).ends_with(
        "invalid MetadataKeyQuery.Method: value must be one of the defined enum values"
    ));
    // A query without a query type.
    let r = post(&emu, ORG_SEARCH, json!({ "queries": [{}] })).await;
    assert_error(&r, 400, 3, "METAD-fdg23");

    // BulkRemove items 1–200 runes.
    let r = delete(&emu, ORG_BULK, Some(json!({ "keys": ["big", ""] }))).await;
    assert_invalid(
        &r,
        "invalid BulkRemoveOrgMetadataRequest.Keys[1]: value length must be between 1 and 200 runes, inclusive",
    );
    assert!(emu.org_metadata(ACME).contains_key("big"));

    // A message above gRPC's 4 MiB limit is ResourceExhausted.
    let items: Vec<Value> = (0..9)
        .map(|i| json!({ "key": format!("k{i}"), "value": b64(&ok) }))
        .collect();
    let r = post(&emu, ORG_BULK, json!({ "metadata": items })).await;
    assert_plain_error(&r, 429, 8);
    emu.shutdown().await;
}

#[tokio::test]
async fn pagination_and_total() {
    let emu = Emulator::start_seeded().await.unwrap();
    let items: Vec<Value> = (0..10)
        .rev()
        .map(|i| json!({ "key": format!("k{i:02}"), "value": b64(b"v") }))
        .collect();
    let r = post(&emu, ORG_BULK, json!({ "metadata": items })).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let page = |query: Value| {
        let emu = emu.clone();
        async move {
            let r = post(&emu, ORG_SEARCH, json!({ "query": query })).await;
            assert_eq!(r.status, 200, "{}", r.text);
            (r.body["details"]["totalResult"].clone(), listed_keys(&r))
        }
    };
    let (total, listed) = page(json!({})).await;
    assert_eq!(total, "10");
    assert_eq!(listed.len(), 10, "no implicit limit");
    assert_eq!(listed[0], "k00");
    assert_eq!(listed[9], "k09");
    let (total, listed) = page(json!({ "offset": "3", "limit": 4 })).await;
    assert_eq!(total, "10");
    assert_eq!(listed, ["k03", "k04", "k05", "k06"]);
    let (total, listed) = page(json!({ "offset": 8, "limit": 5 })).await;
    assert_eq!(total, "10");
    assert_eq!(listed, ["k08", "k09"]);
    let (total, listed) = page(json!({ "offset": "20" })).await;
    assert_eq!(total, "10");
    assert!(listed.is_empty());
    emu.shutdown().await;
}

#[tokio::test]
async fn key_query_methods() {
    let emu = Emulator::start_seeded().await.unwrap();
    for key in [
        "Team",
        "team-lead",
        "ops_team",
        "opsXteam",
        "a%b",
        "axb",
        "TEAM",
    ] {
        set_org(&emu, None, key, b"v").await;
    }
    let search = |key: &str, method: &str| {
        let emu = emu.clone();
        let body = json!({ "queries": [{ "keyQuery": { "key": key, "method": method } }] });
        async move {
            let r = post(&emu, ORG_SEARCH, body).await;
            assert_eq!(r.status, 200, "{}", r.text);
            let mut listed = listed_keys(&r);
            listed.sort();
            listed
        }
    };
    assert_eq!(search("Team", "TEXT_QUERY_METHOD_EQUALS").await, ["Team"]);
    assert_eq!(
        search("team", "TEXT_QUERY_METHOD_EQUALS_IGNORE_CASE").await,
        ["TEAM", "Team"]
    );
    assert_eq!(
        search("team", "TEXT_QUERY_METHOD_STARTS_WITH").await,
        ["team-lead"]
    );
    assert_eq!(
        search("TEAM", "TEXT_QUERY_METHOD_STARTS_WITH_IGNORE_CASE").await,
        ["TEAM", "Team", "team-lead"]
    );
    assert_eq!(
        search("_", "TEXT_QUERY_METHOD_CONTAINS").await,
        ["ops_team"]
    );
    assert_eq!(
        search("S_T", "TEXT_QUERY_METHOD_CONTAINS_IGNORE_CASE").await,
        ["ops_team"]
    );
    assert_eq!(
        search("team", "TEXT_QUERY_METHOD_ENDS_WITH").await,
        ["opsXteam", "ops_team"]
    );
    assert_eq!(
        search("EAM", "TEXT_QUERY_METHOD_ENDS_WITH_IGNORE_CASE").await,
        ["TEAM", "Team", "opsXteam", "ops_team"]
    );
    assert_eq!(search("a%b", "TEXT_QUERY_METHOD_EQUALS").await, ["a%b"]);
    assert!(search("team", "TEXT_QUERY_METHOD_EQUALS").await.is_empty());

    // Multiple queries are ANDed.
    let r = post(
        &emu,
        ORG_SEARCH,
        json!({ "queries": [
            { "keyQuery": { "key": "ops", "method": "TEXT_QUERY_METHOD_STARTS_WITH" } },
            { "keyQuery": { "key": "_", "method": "TEXT_QUERY_METHOD_CONTAINS" } }
        ] }),
    )
    .await;
    assert_eq!(r.body["details"]["totalResult"], "1");
    assert_eq!(r.body["result"][0]["key"], "ops_team");
    emu.shutdown().await;
}

#[tokio::test]
async fn user_and_org_lookups() {
    let emu = Emulator::start_seeded().await.unwrap();
    let r = get(&emu, &format!("/v2/users/{BOB}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let user = &r.body["user"];
    assert_eq!(user["userId"], BOB);
    assert_eq!(user["details"]["resourceOwner"], GLOBEX);
    assert_eq!(seq(&user["details"]["sequence"]), emu.user_sequence(BOB));
    assert_ts(&user["details"]["changeDate"]);
    assert_eq!(user["state"], "USER_STATE_ACTIVE");
    assert_eq!(user["username"], "bob");
    assert_eq!(user["loginNames"], json!(["bob@globex.localhost"]));
    assert_eq!(user["preferredLoginName"], "bob@globex.localhost");
    assert_eq!(r.body["details"], user["details"]);

    let r = get(&emu, "/v2/users/404404").await;
    assert_error(&r, 404, 5, "QUERY-Dfbg2");
    assert_eq!(r.body["message"], "User could not be found (QUERY-Dfbg2)");

    // An org-scoped token only sees users of orgs where it has user.read; the header is ignored.
    emu.add_token("globex-owner", TokenGrant::org_owner(GLOBEX));
    let r = call(
        &emu,
        Method::GET,
        &format!("/v2/users/{BOB}"),
        Some("globex-owner"),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = call(
        &emu,
        Method::GET,
        &format!("/v2/users/{ALICE}"),
        Some("globex-owner"),
        Some(ACME),
        None,
    )
    .await;
    assert_error(&r, 404, 5, "QUERY-Dfbg2");
    let r = call(
        &emu,
        Method::GET,
        &format!("/v2/users/{ALICE}"),
        None,
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 401);

    // v1 lookup is scoped to the context org.
    let r = get(&emu, &format!("/management/v1/users/{ALICE}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["user"]["id"], ALICE);
    assert_eq!(r.body["user"]["userName"], "alice");
    assert_eq!(r.body["user"]["details"]["resourceOwner"], ACME);
    let r = admin(
        &emu,
        Method::GET,
        &format!("/management/v1/users/{ALICE}"),
        Some(GLOBEX),
        None,
    )
    .await;
    assert_error(&r, 404, 5, "MANAG-fpo4B");

    let r = get(&emu, "/management/v1/orgs/me").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["org"]["id"], ACME);
    assert_eq!(r.body["org"]["name"], "Acme");
    assert_eq!(r.body["org"]["state"], "ORG_STATE_ACTIVE");
    assert_eq!(r.body["org"]["primaryDomain"], "acme.localhost");
    assert_eq!(
        seq(&r.body["org"]["details"]["sequence"]),
        emu.org_sequence(ACME)
    );
    let r = admin(
        &emu,
        Method::GET,
        "/management/v1/orgs/me",
        Some(GLOBEX),
        None,
    )
    .await;
    assert_eq!(r.body["org"]["name"], "Globex");
    emu.shutdown().await;
}

#[tokio::test]
async fn german_messages_keep_codes_and_ids() {
    let emu = Emulator::start_seeded().await.unwrap();
    let english = delete(&emu, "/management/v1/metadata/nope", None).await;
    emu.set_language_german(true);
    let german = delete(&emu, "/management/v1/metadata/nope", None).await;
    assert_error(&german, 404, 5, "META-mcnw3");
    assert_ne!(german.body["message"], english.body["message"]);
    assert_eq!(
        german.body["message"],
        "Metadaten konnten nicht gefunden werden (META-mcnw3)"
    );
    let r = set_user(&emu, Some(GLOBEX), ALICE, "k", b"v").await;
    assert_error(&r, 400, 9, "COMMAND-uXHNj");
    assert_eq!(
        r.body["details"][0]["message"],
        "Benutzer konnte nicht gefunden werden"
    );
    let r = call(
        &emu,
        Method::GET,
        "/management/v1/metadata/k",
        Some("bogus"),
        None,
        None,
    )
    .await;
    assert_error(&r, 401, 16, "AUTH-7fs1e");
    assert_eq!(r.body["message"], "Token ist ungültig (AUTH-7fs1e)");
    emu.set_language_german(false);
    let r = delete(&emu, "/management/v1/metadata/nope", None).await;
    assert_eq!(r.body["message"], english.body["message"]);
    emu.shutdown().await;
}
