//! Events (v2e Part 2): what the emulator records, admin ListEvents with its strict time bounds,
//! ordering, limits and cursors, same-timestamp batches, the types APIs, the org-scoped changes
//! APIs and their permissions.

mod support;

use chrono::TimeDelta;
use reqwest::Method;
use serde_json::{Value, json};
use support::*;
use zmo_testkit::emulator::{
    DEMO_ORG_ACME, DEMO_ORG_GLOBEX, DEMO_USER_ALICE, DEMO_USER_BOB, Emulator, OUT_OF_BAND_EDITOR,
    TokenGrant,
};

const METADATA_TYPES: [&str; 8] = [
    "org.metadata.set",
    "org.metadata.removed",
    "org.metadata.removed.all",
    "user.metadata.set",
    "user.metadata.removed",
    "user.metadata.removed.all",
    "org.removed",
    "user.removed",
];

async fn list_events(emu: &Emulator, token: &str, body: &Value) -> Resp {
    post_as(emu, "/admin/v1/events/_search", token, body).await
}

/// A REST `POST` of `body` with `token`, without a context org.
async fn post_as(emu: &Emulator, path: &str, token: &str, body: &Value) -> Resp {
    rest(emu, Method::POST, path, token, None, Some(body)).await
}

fn events(r: &Resp) -> Vec<Value> {
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["events"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn writes_are_recorded_as_zitadel_events() {
    let emu = Emulator::start_seeded().await.unwrap();
    emu.add_token(
        "operator",
        TokenGrant::org_owner(DEMO_ORG_ACME).with_user_id("270000000000000001"),
    );
    let r = connect(
        &emu,
        &format!("{USER_SVC}/SetUserMetadata"),
        "operator",
        &json!({"userId": DEMO_USER_ALICE, "metadata": [{"key": "team", "value": b64(b"platform")}, {"key": "tier", "value": b64(b"gold")}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = list_events(
        &emu,
        ADMIN,
        &json!({"asc": true, "eventTypes": METADATA_TYPES}),
    )
    .await;
    let evs = events(&r);
    assert_eq!(evs.len(), 2, "{}", r.text);
    let e = &evs[0];
    assert_eq!(e["type"]["type"], "user.metadata.set");
    assert_eq!(
        e["type"]["localized"]["key"],
        "EventTypes.user.metadata.set"
    );
    assert_eq!(
        e["type"]["localized"]["localizedMessage"],
        "User metadata set"
    );
    assert_eq!(
        e["editor"],
        json!({"userId": "270000000000000001", "service": "zitadel"})
    );
    assert_eq!(e["aggregate"]["id"], DEMO_USER_ALICE);
    assert_eq!(e["aggregate"]["type"]["type"], "user");
    assert_eq!(e["aggregate"]["resourceOwner"], DEMO_ORG_ACME);
    assert_eq!(
        e["payload"],
        json!({"key": "team", "value": "cGxhdGZvcm0="})
    );
    assert_eq!(e["sequence"], "3", "creation wrote 2 events");
    assert_eq!(evs[1]["sequence"], "4");
    // One push, one timestamp.
    assert_eq!(evs[0]["creationDate"], evs[1]["creationDate"]);
    // Removals, org and user deletion.
    emu.delete_user_metadata(DEMO_USER_ALICE, "tier");
    emu.remove_user(DEMO_USER_ALICE);
    emu.remove_org(DEMO_ORG_GLOBEX);
    let evs = events(
        &list_events(
            &emu,
            ADMIN,
            &json!({"asc": true, "eventTypes": METADATA_TYPES}),
        )
        .await,
    );
    let types: Vec<&str> = evs
        .iter()
        .map(|e| e["type"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "user.metadata.set",
            "user.metadata.set",
            "user.metadata.removed",
            "user.removed",
            "org.removed"
        ]
    );
    assert_eq!(evs[2]["payload"], json!({"key": "tier"}));
    assert_eq!(evs[2]["editor"]["userId"], OUT_OF_BAND_EDITOR);
    assert!(evs[4].get("payload").is_none(), "no payload: {}", evs[4]);
    assert_eq!(
        emu.events()
            .iter()
            .filter(|e| e.event_type == "org.removed")
            .count(),
        1
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn list_events_filters_order_and_limits() {
    let emu = Emulator::start_seeded().await.unwrap();
    for i in 0..5 {
        emu.put_org_metadata(DEMO_ORG_ACME, &format!("k{i}"), b"v");
    }
    emu.put_user_metadata(DEMO_USER_BOB, "b", b"v");
    // Newest first by default; empty filter results are `{}`.
    let evs = events(
        &list_events(
            &emu,
            ADMIN,
            &json!({"eventTypes": ["org.metadata.set"], "limit": 2}),
        )
        .await,
    );
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[0]["payload"]["key"], "k4");
    let r = list_events(
        &emu,
        ADMIN,
        &json!({"eventTypes": ["org.metadata.removed"]}),
    )
    .await;
    assert_eq!(r.body, json!({}));
    // resourceOwner / aggregateTypes derived from event types.
    let evs = events(
        &list_events(
            &emu,
            ADMIN,
            &json!({"resourceOwner": DEMO_ORG_GLOBEX, "eventTypes": ["user.metadata.set"]}),
        )
        .await,
    );
    assert_eq!(evs.len(), 1);
    // Exact per-object cursor: aggregateId + sequence, ordered by sequence.
    let seq = emu.org_sequence(DEMO_ORG_ACME);
    let evs = events(&list_events(&emu, ADMIN, &json!({"aggregateId": DEMO_ORG_ACME, "aggregateTypes": ["org"], "sequence": (seq - 2).to_string(), "asc": true})).await);
    let seqs: Vec<&str> = evs
        .iter()
        .map(|e| e["sequence"].as_str().unwrap())
        .collect();
    assert_eq!(seqs, [(seq - 1).to_string(), seq.to_string()]);
    // Descending: `sequence` flips to `<`.
    let evs = events(
        &list_events(
            &emu,
            ADMIN,
            &json!({"aggregateId": DEMO_ORG_ACME, "sequence": "3"}),
        )
        .await,
    );
    let seqs: Vec<&str> = evs
        .iter()
        .map(|e| e["sequence"].as_str().unwrap())
        .collect();
    assert_eq!(seqs, ["2", "1"]);
    // limit 0 → 1000 (everything here); PGV bounds: 31 event types, 11 aggregate types.
    let all = events(&list_events(&emu, ADMIN, &json!({"limit": 0})).await).len();
    assert_eq!(all, emu.events().len());
    let types: Vec<String> = (0..31).map(|i| format!("t{i}")).collect();
    assert_rest_error(
        &list_events(&emu, ADMIN, &json!({"eventTypes": types})).await,
        400,
        3,
        None,
    );
    let aggs: Vec<String> = (0..11).map(|i| format!("a{i}")).collect();
    assert_rest_error(
        &list_events(&emu, ADMIN, &json!({"aggregateTypes": aggs})).await,
        400,
        3,
        None,
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn strict_since_and_same_timestamp_batches() {
    let emu = Emulator::start_seeded().await.unwrap();
    emu.put_org_metadata(DEMO_ORG_ACME, "before", b"v");
    let frozen = emu.now() + TimeDelta::seconds(1);
    emu.freeze_clock(Some(frozen));
    for i in 0..6 {
        emu.put_org_metadata(DEMO_ORG_ACME, &format!("b{i}"), b"v");
    }
    emu.unfreeze_clock();
    emu.put_org_metadata(DEMO_ORG_ACME, "after", b"v");
    let ts =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let body = |since: &str, limit: u32| json!({"asc": true, "limit": limit, "eventTypes": ["org.metadata.set"], "range": {"since": since}});
    // Page 1 cuts the batch: 4 of the 6 same-timestamp events.
    let before = emu
        .events()
        .iter()
        .find(|e| e.payload.as_ref().is_some_and(|p| p["key"] == "before"))
        .unwrap()
        .creation_date;
    let page1 = events(&list_events(&emu, ADMIN, &body(&ts(before), 4)).await);
    assert_eq!(page1.len(), 4);
    assert!(
        page1
            .iter()
            .all(|e| e["creationDate"] == ts(frozen).as_str()
                || e["creationDate"]
                    == frozen.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    );
    // Strict since: passing the last timestamp unchanged drops the rest of the batch.
    let last = page1[3]["creationDate"].as_str().unwrap();
    let keys = |evs: &[Value]| {
        evs.iter()
            .map(|e| e["payload"]["key"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(&events(&list_events(&emu, ADMIN, &body(last, 4)).await)),
        ["after"]
    );
    // since = last − 1µs gets the whole batch again (de-duplicate on aggregate + sequence).
    let minus = ts(frozen - TimeDelta::microseconds(1));
    let page2 = events(&list_events(&emu, ADMIN, &body(&minus, 10)).await);
    assert_eq!(keys(&page2), ["b0", "b1", "b2", "b3", "b4", "b5", "after"]);
    // until is strict too; `from` follows asc.
    let r = list_events(&emu, ADMIN, &json!({"asc": true, "eventTypes": ["org.metadata.set"], "range": {"since": minus, "until": ts(frozen)}})).await;
    assert_eq!(r.body, json!({}));
    let r = list_events(
        &emu,
        ADMIN,
        &json!({"eventTypes": ["org.metadata.set"], "from": ts(frozen)}),
    )
    .await;
    assert_eq!(keys(&events(&r)), ["before"]);
    emu.shutdown().await;
}

#[tokio::test]
async fn events_read_permission_and_types() {
    let emu = Emulator::start_seeded().await.unwrap();
    emu.add_token("owner", TokenGrant::org_owner(DEMO_ORG_ACME));
    emu.add_token("viewer", TokenGrant::iam_owner_viewer(DEMO_ORG_ACME));
    let r = list_events(&emu, "owner", &json!({})).await;
    assert_rest_error(&r, 403, 7, Some("AUTH-5mWD2"));
    assert_eq!(
        r.body["message"],
        "No matching permissions found (AUTH-5mWD2)"
    );
    assert_eq!(list_events(&emu, "viewer", &json!({})).await.status, 200);
    let r = post_as(&emu, "/admin/v1/events/types/_search", ADMIN, &json!({})).await;
    let types: Vec<&str> = r.body["eventTypes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    for t in METADATA_TYPES {
        assert!(types.contains(&t), "{t}");
    }
    let r = post_as(
        &emu,
        "/admin/v1/aggregates/types/_search",
        "owner",
        &json!({}),
    )
    .await;
    assert_rest_error(&r, 403, 7, Some("AUTH-5mWD2"));
    let r = post_as(
        &emu,
        "/admin/v1/aggregates/types/_search",
        ADMIN,
        &json!({}),
    )
    .await;
    assert_eq!(
        r.body["aggregateTypes"][0]["localized"]["key"], "AggregateTypes.org",
        "{}",
        r.text
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn org_and_user_changes() {
    let emu = Emulator::start_seeded().await.unwrap();
    emu.add_token("owner", TokenGrant::org_owner(DEMO_ORG_ACME));
    for i in 0..3 {
        emu.put_org_metadata(DEMO_ORG_ACME, &format!("k{i}"), b"v");
    }
    let seq = emu.org_sequence(DEMO_ORG_ACME);
    let r = post_as(
        &emu,
        "/management/v1/orgs/me/changes/_search",
        "owner",
        &json!({"query": {"sequence": (seq - 2).to_string(), "asc": true}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let result = r.body["result"].as_array().unwrap();
    assert_eq!(result.len(), 2);
    let c = &result[0];
    assert_eq!(
        c["eventType"],
        json!({"key": "EventTypes.org.metadata.set", "localizedMessage": "Metadata set"})
    );
    assert_eq!(c["sequence"], (seq - 1).to_string());
    assert_eq!(c["resourceOwnerId"], DEMO_ORG_ACME);
    assert!(c.get("payload").is_none());
    // limit 0 = everything.
    let r = post_as(
        &emu,
        "/management/v1/orgs/me/changes/_search",
        "owner",
        &json!({"query": {"limit": 0}}),
    )
    .await;
    assert_eq!(r.body["result"].as_array().unwrap().len() as u64, seq);
    // User changes: restricted to the context org.
    emu.put_user_metadata(DEMO_USER_BOB, "b", b"v");
    let path = format!("/management/v1/users/{DEMO_USER_BOB}/changes/_search");
    let r = post_as(&emu, &path, ADMIN, &json!({})).await;
    assert_eq!(r.body, json!({}), "{}", r.text);
    let r = rest(
        &emu,
        Method::POST,
        &path,
        ADMIN,
        Some(DEMO_ORG_GLOBEX),
        Some(&json!({})),
    )
    .await;
    assert_eq!(r.body["result"].as_array().unwrap().len(), 3, "{}", r.text);
    emu.shutdown().await;
}
