//! Resolving human-friendly references (org search and lookup by domain, user lookup by login name,
//! user search) and the write faults (dropped and corrupted writes) of the ZITADEL emulator, over
//! real HTTP.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Resp, admin, assert_error, b64, call, get, keys, post};
use zmo_testkit::emulator::{
    DEMO_ADMIN_TOKEN, DEMO_ORG_ACME as ACME, DEMO_ORG_GLOBEX as GLOBEX, DEMO_USER_ALICE as ALICE,
    DEMO_USER_BOB as BOB, Emulator, Fault, FaultKind, Operation, Permission, RecordedRequest,
    TokenGrant,
};

const ORGS_SEARCH: &str = "/v2/organizations/_search";
const USERS_SEARCH: &str = "/management/v1/users/_search";
const BY_DOMAIN: &str = "/management/v1/global/orgs/_by_domain";
const BY_LOGIN_NAME: &str = "/management/v1/global/users/_by_login_name";

const CAROL: &str = "200000000000000003";
const DAVE: &str = "200000000000000004";

/// `POST /v2/organizations/_search` with `token`.
async fn search_orgs(emu: &Emulator, token: &str, body: Value) -> Resp {
    call(
        emu,
        Method::POST,
        ORGS_SEARCH,
        Some(token),
        None,
        Some(body),
    )
    .await
}

/// `POST /v2/organizations/_search` as the demo admin.
async fn admin_orgs(emu: &Emulator, body: Value) -> Resp {
    search_orgs(emu, DEMO_ADMIN_TOKEN, body).await
}

/// `GET <path><query>` with `token` and context org `org`.
async fn get_query(
    emu: &Emulator,
    path: &str,
    query: String,
    token: &str,
    org: Option<&str>,
) -> Resp {
    call(
        emu,
        Method::GET,
        &format!("{path}{query}"),
        Some(token),
        org,
        None,
    )
    .await
}

/// `POST /management/v1/users/_search` as the demo admin in context org `org`.
async fn search_users(emu: &Emulator, org: Option<&str>, body: Value) -> Resp {
    admin(emu, Method::POST, USERS_SEARCH, org, Some(body)).await
}

fn assert_ts(v: &Value) {
    let s = v.as_str().expect("timestamp string");
    assert!(s.ends_with('Z'), "{s}");
    chrono::DateTime::parse_from_rfc3339(s).expect("RFC 3339");
}

/// A 400 / code 3 without details; returns the message.
fn assert_invalid(r: &Resp) -> String {
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["code"], 3, "{}", r.text);
    assert_eq!(keys(&r.body), ["code", "message"], "{}", r.text);
    r.body["message"].as_str().expect("message").to_owned()
}

/// `field` of every item in `result` (empty when `result` is absent).
fn column(r: &Resp, field: &str) -> Vec<String> {
    assert_eq!(r.status, 200, "{}", r.text);
    match r.body.get("result") {
        None => Vec::new(),
        Some(items) => items
            .as_array()
            .expect("result is a list")
            .iter()
            .map(|i| i[field].as_str().expect("string field").to_owned())
            .collect(),
    }
}

/// Asserts a v1 user or org: `id`, `details` (sequence, owner, both dates valid timestamps) and
/// the other fields as in `rest`.
fn assert_v1_object(got: &Value, (id, sequence, owner): (&str, u64, &str), mut rest: Value) {
    let details = &got["details"];
    assert_ts(&details["creationDate"]);
    assert_ts(&details["changeDate"]);
    rest["id"] = json!(id);
    rest["details"] = json!({
        "sequence": sequence.to_string(),
        "creationDate": details["creationDate"],
        "changeDate": details["changeDate"],
        "resourceOwner": owner,
    });
    assert_eq!(got, &rest);
}

/// Asserts `count` requests of `op` and that the last request recorded is one; returns it.
fn assert_recorded(emu: &Emulator, op: Operation, count: usize) -> RecordedRequest {
    assert_eq!(emu.count(op), count);
    let last = emu.requests().pop().expect("a recorded request");
    assert_eq!(last.operation, op);
    last
}

/// Asserts a non-empty list answer: `details` and `result`, the details being exactly
/// `processedSequence`, the timestamp field `ts` (a valid timestamp) and `totalResult` = `total`.
fn assert_list_page(r: &Resp, ts: &str, total: &str) {
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(keys(&r.body), ["details", "result"]);
    let mut fields = vec!["processedSequence", ts, "totalResult"];
    fields.sort_unstable();
    assert_eq!(keys(&r.body["details"]), fields);
    assert_eq!(r.body["details"]["totalResult"], total);
    assert_ts(&r.body["details"][ts]);
}

fn total(r: &Resp) -> u64 {
    match r.body["details"].get("totalResult") {
        None => 0,
        Some(v) => v
            .as_str()
            .expect("totalResult is a string")
            .parse()
            .expect("numeric"),
    }
}

async fn org_names(emu: &Emulator, query: Value) -> Vec<String> {
    let r = search_orgs(emu, DEMO_ADMIN_TOKEN, json!({ "queries": [query] })).await;
    column(&r, "name")
}

async fn user_names(emu: &Emulator, queries: Value) -> Vec<String> {
    let r = search_users(emu, None, json!({ "queries": queries })).await;
    column(&r, "userName")
}

/// For each case, the org names one query finds (in order).
async fn expect_orgs(emu: &Emulator, cases: &[(Value, &[&str])]) {
    for (query, expected) in cases {
        assert_eq!(org_names(emu, query.clone()).await, *expected, "{query}");
    }
}

/// For each case, the user names a list of queries finds (in order).
async fn expect_users(emu: &Emulator, cases: &[(Value, &[&str])]) {
    for (queries, expected) in cases {
        assert_eq!(
            user_names(emu, queries.clone()).await,
            *expected,
            "{queries}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// POST /v2/organizations/_search
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn list_organizations_shape_and_pagination() {
    let emu = Emulator::start_seeded().await.unwrap();

    // No body at all: every org, default limit.
    let r = admin(&emu, Method::POST, ORGS_SEARCH, None, None).await;
    assert_list_page(&r, "timestamp", "2");
    let acme = &r.body["result"][0];
    assert_ts(&acme["details"]["changeDate"]);
    assert_eq!(
        acme,
        &json!({
            "id": ACME,
            "details": {
                "sequence": emu.org_sequence(ACME).to_string(),
                "changeDate": acme["details"]["changeDate"],
                "resourceOwner": ACME,
            },
            "state": "ORGANIZATION_STATE_ACTIVE",
            "name": "Acme",
            "primaryDomain": "acme.localhost",
        })
    );
    assert_eq!(r.body["result"][1]["id"], GLOBEX);

    // offset (string or number) / limit; totalResult ignores them.
    let r = admin_orgs(&emu, json!({ "query": { "offset": "1", "limit": 1 } })).await;
    assert_eq!(column(&r, "name"), ["Globex"]);
    assert_eq!(total(&r), 2);
    let r = admin_orgs(&emu, json!({ "query": { "offset": 2, "limit": 1 } })).await;
    assert_eq!(column(&r, "name"), Vec::<String>::new());
    assert_eq!(total(&r), 2);

    // Sorting by name, descending unless asc.
    let r = admin_orgs(
        &emu,
        json!({ "sortingColumn": "ORGANIZATION_FIELD_NAME_NAME" }),
    )
    .await;
    assert_eq!(column(&r, "name"), ["Globex", "Acme"]);
    let r = admin_orgs(
        &emu,
        json!({ "sorting_column": 1, "query": { "asc": true } }),
    )
    .await;
    assert_eq!(column(&r, "name"), ["Acme", "Globex"]);

    // v2 limits: 1000 is fine, beyond is Errors.Query.LimitExceeded.
    let r = admin_orgs(&emu, json!({ "query": { "limit": 1000 } })).await;
    assert_eq!(column(&r, "name").len(), 2);
    let r = admin_orgs(&emu, json!({ "query": { "limit": 1001 } })).await;
    assert_error(&r, 400, 3, "QUERY-4M0fs");

    // The default limit is 100.
    for i in 0..105 {
        emu.add_org(&format!("3000000000000{i:05}"), &format!("Org {i}"));
    }
    let r = admin_orgs(&emu, json!({})).await;
    assert_eq!(column(&r, "name").len(), 100);
    assert_eq!(total(&r), 107);

    let last = assert_recorded(&emu, Operation::ListOrganizationsV2, 8);
    assert_eq!(last.path, ORGS_SEARCH);
    assert_eq!(last.status, 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn list_organizations_queries() {
    let emu = Emulator::start_seeded().await.unwrap();
    let name =
        |name: &str, method: Value| json!({ "nameQuery": { "name": name, "method": method } });

    expect_orgs(
        &emu,
        &[
            (name("Acme", json!("TEXT_QUERY_METHOD_EQUALS")), &["Acme"]),
            (json!({ "nameQuery": { "name": "Acme" } }), &["Acme"]),
            (name("acme", json!("TEXT_QUERY_METHOD_EQUALS")), &[]),
            (
                name("acme", json!("TEXT_QUERY_METHOD_EQUALS_IGNORE_CASE")),
                &["Acme"],
            ),
            (
                name("G", json!("TEXT_QUERY_METHOD_STARTS_WITH")),
                &["Globex"],
            ),
            (name("g", json!(3)), &["Globex"]),
            (
                name("e", json!("TEXT_QUERY_METHOD_CONTAINS")),
                &["Acme", "Globex"],
            ),
            (
                name("EX", json!("TEXT_QUERY_METHOD_ENDS_WITH_IGNORE_CASE")),
                &["Globex"],
            ),
            // Literal matching: `%` is no wildcard.
            (name("%", json!("TEXT_QUERY_METHOD_CONTAINS")), &[]),
        ],
    )
    .await;

    // Zero matches: no `result`, no `totalResult`.
    let r = admin_orgs(&emu, json!({ "queries": [name("Initech", json!(0))] })).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(keys(&r.body), ["details"]);
    assert_eq!(keys(&r.body["details"]), ["processedSequence", "timestamp"]);

    // idQuery, stateQuery, defaultQuery (the first org created: Acme).
    let state = |state: &str| json!({ "stateQuery": { "state": state } });
    expect_orgs(
        &emu,
        &[
            (json!({ "idQuery": { "id": GLOBEX } }), &["Globex"]),
            (state("ORGANIZATION_STATE_ACTIVE"), &["Acme", "Globex"]),
            (state("ORGANIZATION_STATE_INACTIVE"), &[]),
            (json!({ "defaultQuery": {} }), &["Acme"]),
        ],
    )
    .await;

    // domainQuery matches any verified domain, not unverified ones.
    let domain = |domain: &str, method: i32| json!({ "domainQuery": { "domain": domain, "method": method } });
    assert_eq!(org_names(&emu, domain("acme.localhost", 0)).await, ["Acme"]);
    assert_eq!(
        org_names(&emu, domain(".localhost", 6)).await,
        ["Acme", "Globex"]
    );
    let before = emu.org_sequence(ACME);
    emu.add_org_domain(ACME, "acme.example", false);
    assert_eq!(emu.org_sequence(ACME), before + 1);
    assert!(org_names(&emu, domain("acme.example", 0)).await.is_empty());
    emu.add_org_domain(ACME, "acme.example", true);
    assert_eq!(emu.org_sequence(ACME), before + 2);
    assert_eq!(org_names(&emu, domain("acme.example", 0)).await, ["Acme"]);
    emu.add_org_domain(GLOBEX, "globex.example", true);
    assert_eq!(
        org_names(&emu, domain("EXAMPLE", 7)).await,
        ["Acme", "Globex"]
    );
    // ... while the primary domain stays.
    let r = admin_orgs(&emu, json!({ "queries": [domain("acme.example", 0)] })).await;
    assert_eq!(r.body["result"][0]["primaryDomain"], "acme.localhost");

    // Queries are ANDed; snake_case names are accepted.
    let r = admin_orgs(
        &emu,
        json!({ "queries": [
            { "name_query": { "name": "e", "method": "TEXT_QUERY_METHOD_CONTAINS" } },
            { "domain_query": { "domain": "globex.", "method": "TEXT_QUERY_METHOD_STARTS_WITH" } },
        ] }),
    )
    .await;
    assert_eq!(column(&r, "name"), ["Globex"]);
    assert_eq!(total(&r), 1);
    let r = admin_orgs(
        &emu,
        json!({ "queries": [ { "idQuery": { "id": ACME } }, { "idQuery": { "id": GLOBEX } } ] }),
    )
    .await;
    assert!(column(&r, "name").is_empty());
    emu.shutdown().await;
}

#[tokio::test]
async fn list_organizations_validation() {
    let emu = Emulator::start_seeded().await.unwrap();
    let r = admin_orgs(&emu, json!({ "queries": [{}] })).await;
    assert_eq!(
        assert_invalid(&r),
        "invalid ListOrganizationsRequest.Queries[0]: embedded message failed validation | \
         caused by: invalid SearchQuery.Query: value is required"
    );
    // An unknown query name is discarded, leaving the query empty.
    let r = admin_orgs(
        &emu,
        json!({ "queries": [{ "idQuery": { "id": ACME } }, { "colourQuery": {} }] }),
    )
    .await;
    assert!(assert_invalid(&r).starts_with("invalid ListOrganizationsRequest.Queries[1]:"));
    let r = admin_orgs(
        &emu,
        json!({ "queries": [{ "nameQuery": { "name": "" } }] }),
    )
    .await;
    assert_eq!(
        assert_invalid(&r),
        "invalid ListOrganizationsRequest.Queries[0]: embedded message failed validation | \
         caused by: invalid SearchQuery.NameQuery: embedded message failed validation | \
         caused by: invalid OrganizationNameQuery.Name: value length must be between 1 and 200 \
         runes, inclusive"
    );
    let r = admin_orgs(
        &emu,
        json!({ "queries": [{ "domainQuery": { "domain": "x", "method": 8 } }] }),
    )
    .await;
    assert!(assert_invalid(&r).ends_with(
        "invalid OrganizationDomainQuery.Method: value must be one of the defined enum values"
    ));
    let r = admin_orgs(
        &emu,
        json!({ "queries": [{ "idQuery": { "id": "x".repeat(201) } }] }),
    )
    .await;
    assert!(assert_invalid(&r).contains("invalid OrganizationIDQuery.Id"));
    let r = admin_orgs(
        &emu,
        json!({ "queries": [{ "idQuery": { "id": ACME }, "defaultQuery": {} }] }),
    )
    .await;
    assert!(assert_invalid(&r).contains("already set"));
    let r = admin_orgs(&emu, json!({ "queries": {} })).await;
    assert!(assert_invalid(&r).starts_with("proto:"));
    emu.shutdown().await;
}

#[tokio::test]
async fn list_organizations_returns_only_readable_orgs() {
    let emu = Emulator::start_seeded().await.unwrap();
    emu.add_org("100000000000000003", "Initech");
    emu.add_token("globex-owner", TokenGrant::org_owner(GLOBEX));
    emu.add_token("acme-user-manager", TokenGrant::user_manager(ACME));
    emu.add_token(
        "reader",
        TokenGrant::new(ACME)
            .with_permission(ACME, Permission::OrgRead)
            .with_permission("100000000000000003", Permission::OrgRead),
    );

    let r = search_orgs(&emu, "globex-owner", json!({})).await;
    assert_eq!(column(&r, "name"), ["Globex"]);
    assert_eq!(total(&r), 1);
    // v2 ignores x-zitadel-orgid.
    let r = call(
        &emu,
        Method::POST,
        ORGS_SEARCH,
        Some("globex-owner"),
        Some(ACME),
        Some(json!({})),
    )
    .await;
    assert_eq!(column(&r, "name"), ["Globex"]);
    let r = call(
        &emu,
        Method::POST,
        ORGS_SEARCH,
        Some("globex-owner"),
        Some("404"),
        Some(json!({})),
    )
    .await;
    assert_eq!(column(&r, "name"), ["Globex"]);
    // Searching for an org the caller may not read finds nothing.
    let r = search_orgs(
        &emu,
        "globex-owner",
        json!({ "queries": [{ "nameQuery": { "name": "Acme" } }] }),
    )
    .await;
    assert!(column(&r, "name").is_empty());
    assert_eq!(total(&r), 0);

    // user.read/user.write but no org.read: nothing.
    let r = search_orgs(&emu, "acme-user-manager", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(keys(&r.body), ["details"]);

    let r = search_orgs(&emu, "reader", json!({})).await;
    assert_eq!(column(&r, "name"), ["Acme", "Initech"]);
    let r = admin_orgs(&emu, json!({})).await;
    assert_eq!(column(&r, "name"), ["Acme", "Globex", "Initech"]);

    let r = call(&emu, Method::POST, ORGS_SEARCH, None, None, Some(json!({}))).await;
    assert_eq!(r.status, 401, "{}", r.text);
    let r = search_orgs(&emu, "nope", json!({})).await;
    assert_error(&r, 401, 16, "AUTH-7fs1e");
    emu.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// GET /management/v1/global/orgs/_by_domain
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn org_by_domain() {
    let emu = Emulator::start_seeded().await.unwrap();
    let get = |query: String, token: &'static str, org: Option<&'static str>| {
        get_query(&emu, BY_DOMAIN, query, token, org)
    };

    let r = get("?domain=globex.localhost".into(), DEMO_ADMIN_TOKEN, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(keys(&r.body), ["org"]);
    assert_v1_object(
        &r.body["org"],
        (GLOBEX, emu.org_sequence(GLOBEX), GLOBEX),
        json!({
            "state": "ORG_STATE_ACTIVE",
            "name": "Globex",
            "primaryDomain": "globex.localhost",
        }),
    );
    // Percent-encoding in the query string.
    let r = get("?domain=acme%2Elocalhost".into(), DEMO_ADMIN_TOKEN, None).await;
    assert_eq!(r.body["org"]["id"], ACME, "{}", r.text);

    // Primary domain only, exact.
    emu.add_org_domain(GLOBEX, "globex.example", true);
    let r = get("?domain=globex.example".into(), DEMO_ADMIN_TOKEN, None).await;
    assert_error(&r, 404, 5, "QUERY-iTTGJ");
    assert_eq!(r.body["message"], "Organisation not found (QUERY-iTTGJ)");
    let r = get("?domain=Globex.localhost".into(), DEMO_ADMIN_TOKEN, None).await;
    assert_error(&r, 404, 5, "QUERY-iTTGJ");
    let r = get("?domain=initech.localhost".into(), DEMO_ADMIN_TOKEN, None).await;
    assert_error(&r, 404, 5, "QUERY-iTTGJ");

    // Validation.
    let r = get(String::new(), DEMO_ADMIN_TOKEN, None).await;
    assert_eq!(
        assert_invalid(&r),
        "invalid GetOrgByDomainGlobalRequest.Domain: value length must be between 1 and 200 \
         runes, inclusive"
    );
    let r = get("?domain=a&domain=b".into(), DEMO_ADMIN_TOKEN, None).await;
    assert_invalid(&r);

    // Permission: org.read in the context org; the lookup itself is instance-wide.
    emu.add_token("globex-owner", TokenGrant::org_owner(GLOBEX));
    emu.add_token("acme-user-manager", TokenGrant::user_manager(ACME));
    let r = get("?domain=acme.localhost".into(), "globex-owner", None).await;
    assert_eq!(r.body["org"]["id"], ACME, "{}", r.text);
    // No membership at all in the header's org: 404 AUTHZ-cdgFk (contract §3).
    let r = get("?domain=acme.localhost".into(), "globex-owner", Some(ACME)).await;
    assert_error(&r, 404, 5, "AUTHZ-cdgFk");
    let r = get("?domain=acme.localhost".into(), "acme-user-manager", None).await;
    assert_error(&r, 403, 7, "AUTH-5mWD2");
    let r = get(
        "?domain=acme.localhost".into(),
        DEMO_ADMIN_TOKEN,
        Some("404404"),
    )
    .await;
    assert_error(&r, 403, 7, "AUTH-Bs7Ds");
    // Authentication before validation.
    let r = call(&emu, Method::GET, BY_DOMAIN, None, None, None).await;
    assert_eq!(r.status, 401, "{}", r.text);

    let recorded = assert_recorded(&emu, Operation::GetOrgByDomain, 12);
    assert_eq!(recorded.path, BY_DOMAIN);
    emu.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// GET /management/v1/global/users/_by_login_name
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn user_by_login_name() {
    let emu = Emulator::start_seeded().await.unwrap();
    let get =
        |query: String, token: &'static str| get_query(&emu, BY_LOGIN_NAME, query, token, None);

    // Instance-wide: the admin (owner org Acme) finds bob in Globex.
    let r = get("?loginName=bob@globex.localhost".into(), DEMO_ADMIN_TOKEN).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(keys(&r.body), ["user"]);
    assert_v1_object(
        &r.body["user"],
        (BOB, emu.user_sequence(BOB), GLOBEX),
        json!({
            "state": "USER_STATE_ACTIVE",
            "userName": "bob",
            "loginNames": ["bob@globex.localhost"],
            "preferredLoginName": "bob@globex.localhost",
            "human": {
                "profile": { "firstName": "bob", "lastName": "Emulated", "displayName": "bob" },
                "email": { "email": "bob@globex.localhost", "isEmailVerified": true },
            },
        }),
    );
    // snake_case parameter and percent-encoding.
    let r = get(
        "?login_name=alice%40acme.localhost".into(),
        DEMO_ADMIN_TOKEN,
    )
    .await;
    assert_eq!(r.body["user"]["id"], ALICE, "{}", r.text);
    assert_eq!(r.body["user"]["details"]["resourceOwner"], ACME);

    // Exact match on the preferred login name only.
    emu.add_org_domain(GLOBEX, "globex.example", true);
    emu.set_user_email(BOB, "bob@mail.example");
    let r = get("?loginName=bob@globex.localhost".into(), DEMO_ADMIN_TOKEN).await;
    assert_eq!(
        r.body["user"]["loginNames"],
        json!(["bob@globex.localhost", "bob@globex.example"])
    );
    assert_eq!(r.body["user"]["preferredLoginName"], "bob@globex.localhost");
    assert_eq!(
        r.body["user"]["human"]["email"]["email"],
        "bob@mail.example"
    );
    for missing in [
        "bob@globex.example",
        "Bob@globex.localhost",
        "bob",
        "bob@mail.example",
        "nobody@globex.localhost",
    ] {
        let r = get(format!("?loginName={missing}"), DEMO_ADMIN_TOKEN).await;
        assert_error(&r, 404, 5, "QUERY-Dfbg2");
        assert_eq!(r.body["message"], "User could not be found (QUERY-Dfbg2)");
    }

    let r = get(String::new(), DEMO_ADMIN_TOKEN).await;
    assert_eq!(
        assert_invalid(&r),
        "invalid GetUserByLoginNameGlobalRequest.LoginName: value length must be between 1 and \
         200 runes, inclusive"
    );

    // Permission: user.read in the context org.
    emu.add_token("acme-user-manager", TokenGrant::user_manager(ACME));
    emu.add_token(
        "acme-org-reader",
        TokenGrant::new(ACME).with_permission(ACME, Permission::OrgRead),
    );
    let r = get(
        "?loginName=bob@globex.localhost".into(),
        "acme-user-manager",
    )
    .await;
    assert_eq!(r.body["user"]["id"], BOB, "{}", r.text);
    let r = get("?loginName=bob@globex.localhost".into(), "acme-org-reader").await;
    assert_error(&r, 403, 7, "AUTH-5mWD2");
    let r = get("?loginName=bob@globex.localhost".into(), "revoked").await;
    assert_error(&r, 401, 16, "AUTH-7fs1e");

    assert_recorded(&emu, Operation::GetUserByLoginNameGlobal, 12);
    emu.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// POST /management/v1/users/_search
// ---------------------------------------------------------------------------------------------

/// Seeded data plus carol (custom email) and dave in Acme.
async fn users_fixture() -> Emulator {
    let emu = Emulator::start_seeded().await.unwrap();
    emu.add_user(CAROL, ACME, "carol");
    emu.add_user(DAVE, ACME, "dave");
    let before = emu.user_sequence(CAROL);
    emu.set_user_email(CAROL, "Carol@Example.com");
    assert_eq!(emu.user_sequence(CAROL), before + 2);
    emu.set_user_email(CAROL, "Carol@Example.com");
    assert_eq!(emu.user_sequence(CAROL), before + 2);
    emu
}

#[tokio::test]
async fn list_users_shape_and_pagination() {
    let emu = users_fixture().await;

    let r = search_users(&emu, None, json!({})).await;
    assert_list_page(&r, "viewTimestamp", "3");
    assert_eq!(column(&r, "userName"), ["alice", "carol", "dave"]);
    assert_v1_object(
        &r.body["result"][1],
        (CAROL, emu.user_sequence(CAROL), ACME),
        json!({
            "state": "USER_STATE_ACTIVE",
            "userName": "carol",
            "loginNames": ["carol@acme.localhost"],
            "preferredLoginName": "carol@acme.localhost",
            "human": {
                "profile": { "firstName": "carol", "lastName": "Emulated", "displayName": "carol" },
                "email": { "email": "Carol@Example.com", "isEmailVerified": true },
            },
        }),
    );

    // The context org comes from the header (or the token owner).
    let r = search_users(&emu, Some(GLOBEX), json!({})).await;
    assert_eq!(column(&r, "userName"), ["bob"]);
    assert_eq!(r.body["result"][0]["details"]["resourceOwner"], GLOBEX);

    // offset/limit; v1 has no implicit limit.
    let r = search_users(
        &emu,
        None,
        json!({ "query": { "offset": "1", "limit": 1, "asc": true } }),
    )
    .await;
    assert_eq!(column(&r, "userName"), ["carol"]);
    assert_eq!(total(&r), 3);
    for i in 0..120 {
        emu.add_user(&format!("2100000000000{i:05}"), GLOBEX, &format!("u{i}"));
    }
    let r = search_users(&emu, Some(GLOBEX), json!({ "query": { "limit": 0 } })).await;
    assert_eq!(column(&r, "userName").len(), 121);
    let r = search_users(&emu, Some(GLOBEX), json!({ "query": { "limit": 5000 } })).await;
    assert_eq!(column(&r, "userName").len(), 121);

    // Zero matches.
    let r = search_users(
        &emu,
        None,
        json!({ "queries": [{ "userNameQuery": { "userName": "zed" } }] }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(keys(&r.body), ["details"]);
    assert_eq!(
        keys(&r.body["details"]),
        ["processedSequence", "viewTimestamp"]
    );

    let recorded = assert_recorded(&emu, Operation::ListUsersV1, 6);
    assert_eq!(recorded.path, USERS_SEARCH);
    emu.shutdown().await;
}

#[tokio::test]
async fn list_users_queries() {
    let emu = users_fixture().await;
    user_name_queries(&emu).await;
    email_queries(&emu).await;
    login_name_queries(&emu).await;
    combined_queries(&emu).await;
    emu.shutdown().await;
}

fn user_name(name: &str, method: &str) -> Value {
    json!({ "userNameQuery": { "userName": name, "method": method } })
}

fn email(address: &str, method: i32) -> Value {
    json!({ "emailQuery": { "emailAddress": address, "method": method } })
}

fn login(name: &str, method: i32) -> Value {
    json!({ "loginNameQuery": { "loginName": name, "method": method } })
}

fn ids(ids: Value) -> Value {
    json!({ "inUserIdsQuery": { "userIds": ids } })
}

/// `userNameQuery` with its methods; users of other orgs never match.
async fn user_name_queries(emu: &Emulator) {
    let q = |name: &str, method: &str| json!([user_name(name, method)]);
    expect_users(
        emu,
        &[
            (q("carol", "TEXT_QUERY_METHOD_EQUALS"), &["carol"]),
            (q("CAROL", "TEXT_QUERY_METHOD_EQUALS"), &[]),
            (
                q("CAROL", "TEXT_QUERY_METHOD_EQUALS_IGNORE_CASE"),
                &["carol"],
            ),
            (
                q("a", "TEXT_QUERY_METHOD_CONTAINS"),
                &["alice", "carol", "dave"],
            ),
            (q("e", "TEXT_QUERY_METHOD_ENDS_WITH"), &["alice", "dave"]),
            (
                q("CA", "TEXT_QUERY_METHOD_STARTS_WITH_IGNORE_CASE"),
                &["carol"],
            ),
            // Users of other orgs never match.
            (q("bob", "TEXT_QUERY_METHOD_EQUALS"), &[]),
        ],
    )
    .await;
}

/// `emailQuery`: the explicit email, else the preferred login name.
async fn email_queries(emu: &Emulator) {
    expect_users(
        emu,
        &[
            (json!([email("Carol@Example.com", 0)]), &["carol"]),
            (json!([email("carol@example.com", 0)]), &[]),
            (json!([email("carol@example.com", 1)]), &["carol"]),
            (json!([email("@acme.localhost", 6)]), &["alice", "dave"]),
            (
                json!([{ "email_query": { "email_address": "dave@acme.localhost" } }]),
                &["dave"],
            ),
        ],
    )
    .await;
}

/// `loginNameQuery` matches any login name (one per verified domain); adds a verified domain to Acme.
async fn login_name_queries(emu: &Emulator) {
    // loginNameQuery matches any login name (one per verified domain).
    let dave_example = || json!([login("dave@acme.example", 0)]);
    expect_users(emu, &[(dave_example(), &[])]).await;
    emu.add_org_domain(ACME, "acme.example", false);
    expect_users(emu, &[(dave_example(), &[])]).await;
    emu.add_org_domain(ACME, "acme.example", true);
    expect_users(
        emu,
        &[
            (dave_example(), &["dave"]),
            (json!([login("dave@acme.localhost", 0)]), &["dave"]),
            (
                json!([login("@ACME.EXAMPLE", 7)]),
                &["alice", "carol", "dave"],
            ),
        ],
    )
    .await;
    let r = search_users(
        emu,
        None,
        json!({ "queries": [login("dave@acme.example", 0)] }),
    )
    .await;
    assert_eq!(
        r.body["result"][0]["loginNames"],
        json!(["dave@acme.localhost", "dave@acme.example"])
    );
    assert_eq!(
        r.body["result"][0]["preferredLoginName"],
        "dave@acme.localhost"
    );
}

/// `inUserIdsQuery` (scoped to the context org), ANDed queries, and the further query kinds.
async fn combined_queries(emu: &Emulator) {
    let equals = |name: &str| user_name(name, "TEXT_QUERY_METHOD_EQUALS");
    expect_users(
        emu,
        &[
            // inUserIdsQuery, scoped to the context org.
            (json!([ids(json!([DAVE, BOB, ALICE, "nope"]))]), &["alice", "dave"]),
            (json!([ids(json!([]))]), &[]),
            (json!([ids(json!([BOB]))]), &[]),
            // Queries are ANDed.
            (
                json!([
                    ids(json!([ALICE, CAROL, DAVE])),
                    user_name("a", "TEXT_QUERY_METHOD_CONTAINS"),
                    email("@acme.", 4),
                ]),
                &["alice", "dave"],
            ),
            // Further query kinds: state, type, resource owner, profile names, or/and/not.
            (json!([{ "typeQuery": { "type": "TYPE_MACHINE" } }]), &[]),
            (json!([{ "resourceOwner": { "orgId": GLOBEX } }]), &[]),
            (
                json!([{ "lastNameQuery": { "lastName": "Emulated" } }, { "firstNameQuery": { "firstName": "dave" } }]),
                &["dave"],
            ),
            (
                json!([{ "orQuery": { "queries": [equals("alice"), equals("dave")] } }]),
                &["alice", "dave"],
            ),
            (
                json!([{ "notQuery": { "query": equals("alice") } }]),
                &["carol", "dave"],
            ),
            (
                json!([{ "andQuery": { "queries": [
                    user_name("a", "TEXT_QUERY_METHOD_CONTAINS"),
                    { "notQuery": { "query": email("Carol@Example.com", 0) } },
                ] } }]),
                &["alice", "dave"],
            ),
        ],
    )
    .await;
    assert_eq!(
        user_names(
            emu,
            json!([{ "stateQuery": { "state": "USER_STATE_ACTIVE" } }])
        )
        .await
        .len(),
        3
    );
}

#[tokio::test]
async fn list_users_validation_and_permissions() {
    let emu = users_fixture().await;

    let r = search_users(&emu, None, json!({ "queries": [{}] })).await;
    assert_eq!(
        assert_invalid(&r),
        "invalid ListUsersRequest.Queries[0]: embedded message failed validation | caused by: \
         invalid SearchQuery.Query: value is required"
    );
    let r = search_users(
        &emu,
        None,
        json!({ "queries": [{ "userNameQuery": { "userName": "x".repeat(201) } }] }),
    )
    .await;
    assert_eq!(
        assert_invalid(&r),
        "invalid ListUsersRequest.Queries[0]: embedded message failed validation | caused by: \
         invalid SearchQuery.UserNameQuery: embedded message failed validation | caused by: \
         invalid UserNameQuery.UserName: value length must be at most 200 runes"
    );
    let r = search_users(
        &emu,
        None,
        json!({ "queries": [{ "emailQuery": { "emailAddress": "a", "method": 42 } }] }),
    )
    .await;
    assert!(
        assert_invalid(&r)
            .ends_with("invalid EmailQuery.Method: value must be one of the defined enum values")
    );
    let r = search_users(
        &emu,
        None,
        json!({ "queries": [{ "notQuery": { "query": {} } }] }),
    )
    .await;
    assert!(
        assert_invalid(&r).contains("invalid NotQuery.Query: embedded message failed validation")
    );
    let r = search_users(
        &emu,
        None,
        json!({ "queries": [{ "userNameQuery": {}, "emailQuery": {} }] }),
    )
    .await;
    assert!(assert_invalid(&r).contains("already set"));
    let r = search_users(
        &emu,
        None,
        json!({ "queries": [{ "inUserIdsQuery": { "userIds": [1] } }] }),
    )
    .await;
    assert!(assert_invalid(&r).starts_with("proto:"));

    // Permission user.read in the context org.
    emu.add_token("acme-viewer", TokenGrant::org_owner_viewer(ACME));
    emu.add_token(
        "acme-org-reader",
        TokenGrant::new(ACME).with_permission(ACME, Permission::OrgRead),
    );
    emu.add_token("globex-owner", TokenGrant::org_owner(GLOBEX));
    let as_token = |token: &'static str, org: Option<&'static str>| {
        let emu = emu.clone();
        async move {
            call(
                &emu,
                Method::POST,
                USERS_SEARCH,
                Some(token),
                org,
                Some(json!({})),
            )
            .await
        }
    };
    let r = as_token("acme-viewer", None).await;
    assert_eq!(column(&r, "userName"), ["alice", "carol", "dave"]);
    let r = as_token("globex-owner", None).await;
    assert_eq!(column(&r, "userName"), ["bob"]);
    let r = as_token("acme-org-reader", None).await;
    assert_error(&r, 403, 7, "AUTH-5mWD2");
    let r = as_token("globex-owner", Some(ACME)).await;
    assert_error(&r, 404, 5, "AUTHZ-cdgFk");
    let r = as_token("globex-owner", Some("404404")).await;
    assert_error(&r, 403, 7, "AUTH-Bs7Ds");
    // Authentication and authorization before validation.
    let r = call(
        &emu,
        Method::POST,
        USERS_SEARCH,
        None,
        None,
        Some(json!({ "queries": [{}] })),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text);
    let r = call(
        &emu,
        Method::POST,
        USERS_SEARCH,
        Some("acme-org-reader"),
        None,
        Some(json!({ "queries": [{}] })),
    )
    .await;
    assert_error(&r, 403, 7, "AUTH-5mWD2");
    emu.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Write faults
// ---------------------------------------------------------------------------------------------

async fn set_org(emu: &Emulator, key: &str, value: &[u8]) -> Resp {
    post(
        emu,
        &format!("/management/v1/metadata/{key}"),
        json!({ "value": b64(value) }),
    )
    .await
}

async fn bulk_set_user(emu: &Emulator, user: &str, org: &str, items: &[(&str, &[u8])]) -> Resp {
    let metadata: Vec<Value> = items
        .iter()
        .map(|(k, v)| json!({ "key": k, "value": b64(v) }))
        .collect();
    admin(
        emu,
        Method::POST,
        &format!("/management/v1/users/{user}/metadata/_bulk"),
        Some(org),
        Some(json!({ "metadata": metadata })),
    )
    .await
}

async fn add_fault(emu: &Emulator, fault: Value) {
    let r = call(
        emu,
        Method::POST,
        "/_emulator/faults",
        None,
        None,
        Some(fault),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

async fn faults(emu: &Emulator) -> Value {
    call(emu, Method::GET, "/_emulator/faults", None, None, None)
        .await
        .body
}

fn seq(v: &Value) -> u64 {
    v.as_str().expect("string").parse().expect("number")
}

/// Asserts a successful write's answer: `details` with exactly `fields`, `sequence` and `owner`.
fn assert_write_details(r: &Resp, fields: &[&str], sequence: u64, owner: &str) {
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(keys(&r.body["details"]), fields);
    assert_eq!(seq(&r.body["details"]["sequence"]), sequence);
    assert_eq!(r.body["details"]["resourceOwner"], owner);
}

#[tokio::test]
async fn drop_writes_answers_but_stores_nothing() {
    let emu = Emulator::start_seeded().await.unwrap();
    emu.inject(Fault::drop_writes().on(Operation::SetOrgMetadata).times(1));

    let before = emu.org_sequence(ACME);
    let r = set_org(&emu, "team", b"blue").await;
    let fields = ["creationDate", "resourceOwner", "sequence"];
    assert_write_details(&r, &fields, before + 1, ACME);
    assert!(emu.org_metadata(ACME).is_empty());
    assert_eq!(emu.org_sequence(ACME), before);
    let r = get(&emu, "/management/v1/metadata/team").await;
    assert_error(&r, 404, 5, "QUERY-Rph32");

    // `times` is used up: the next write is stored (and gets the sequence again).
    let r = set_org(&emu, "team", b"blue").await;
    assert_eq!(seq(&r.body["details"]["sequence"]), before + 1);
    assert_eq!(emu.org_metadata(ACME)["team"], b"blue");
    assert_eq!(emu.org_sequence(ACME), before + 1);
    assert_eq!(faults(&emu).await, json!([]));

    // Admin JSON: only Set/BulkSet consume the fault; reads and removes pass through.
    add_fault(&emu, json!({ "kind": "drop_writes", "times": 2 })).await;
    assert_eq!(faults(&emu).await[0]["kind"], "drop_writes");
    let r = get(&emu, "/management/v1/metadata/team").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = admin_orgs(&emu, json!({})).await;
    assert_eq!(r.status, 200);
    assert_eq!(faults(&emu).await[0]["times"], 2);

    let user_before = emu.user_sequence(BOB);
    let r = bulk_set_user(&emu, BOB, GLOBEX, &[("a", b"1"), ("b", b"2")]).await;
    let fields = ["changeDate", "resourceOwner", "sequence"];
    assert_write_details(&r, &fields, user_before + 2, GLOBEX);
    assert!(emu.user_metadata(BOB).is_empty());
    assert_eq!(emu.user_sequence(BOB), user_before);
    let r = admin(
        &emu,
        Method::POST,
        &format!("/management/v1/users/{BOB}/metadata/_search"),
        Some(GLOBEX),
        Some(json!({})),
    )
    .await;
    assert_eq!(keys(&r.body), ["details"], "{}", r.text);
    // Errors are still errors (the fault is consumed by the request all the same).
    let r = bulk_set_user(&emu, BOB, ACME, &[("a", b"1")]).await;
    assert_error(&r, 400, 9, "COMMAND-uXHNj");
    assert_eq!(faults(&emu).await, json!([]));
    let r = bulk_set_user(&emu, BOB, GLOBEX, &[("a", b"1")]).await;
    assert_eq!(seq(&r.body["details"]["sequence"]), user_before + 1);
    assert_eq!(emu.user_metadata(BOB)["a"], b"1");

    // A terminal fault wins and leaves the write fault untouched.
    emu.inject(Fault::unavailable().on(Operation::SetOrgMetadata).times(1));
    emu.inject(Fault::drop_writes().times(1));
    let r = set_org(&emu, "colour", b"red").await;
    assert_eq!(r.status, 503, "{}", r.text);
    let r = set_org(&emu, "colour", b"red").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!emu.org_metadata(ACME).contains_key("colour"));
    let r = set_org(&emu, "colour", b"red").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(emu.org_metadata(ACME)["colour"], b"red");
    emu.shutdown().await;
}

#[tokio::test]
async fn corrupt_writes_store_a_flipped_last_byte() {
    let emu = Emulator::start_seeded().await.unwrap();
    // Reads do not consume the fault.
    emu.inject(Fault::corrupt_writes().times(1));
    let r = get(&emu, &format!("/management/v1/users/{ALICE}/metadata/k")).await;
    assert_eq!(r.status, 404, "{}", r.text);

    let before = emu.user_sequence(ALICE);
    let r = post(
        &emu,
        &format!("/management/v1/users/{ALICE}/metadata/k"),
        json!({ "value": b64(b"hello") }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(seq(&r.body["details"]["sequence"]), before + 1);
    let damaged = [b'h', b'e', b'l', b'l', !b'o'];
    assert_eq!(emu.user_metadata(ALICE)["k"], damaged);
    let r = get(&emu, &format!("/management/v1/users/{ALICE}/metadata/k")).await;
    assert_eq!(r.body["metadata"]["value"], b64(&damaged), "{}", r.text);

    // Used up: the retry stores the right value.
    let r = post(
        &emu,
        &format!("/management/v1/users/{ALICE}/metadata/k"),
        json!({ "value": b64(b"hello") }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(emu.user_metadata(ALICE)["k"], b"hello");

    // Admin JSON, restricted to org BulkSet: every value of the batch is damaged.
    add_fault(
        &emu,
        json!({ "kind": "corrupt_writes", "operations": ["BulkSetOrgMetadata"], "times": 1 }),
    )
    .await;
    let r = set_org(&emu, "single", b"ok").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(emu.org_metadata(ACME)["single"], b"ok");
    let r = post(
        &emu,
        "/management/v1/metadata/_bulk",
        json!({ "metadata": [
            { "key": "a", "value": b64(b"AB") },
            { "key": "b", "value": b64(&[0x00]) },
        ] }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let stored = emu.org_metadata(ACME);
    assert_eq!(stored["a"], [b'A', !b'B']);
    assert_eq!(stored["b"], [0xFF]);
    assert_eq!(faults(&emu).await, json!([]));
    emu.shutdown().await;
}

#[test]
fn write_faults_in_json_and_operation_table() {
    assert_eq!(
        serde_json::to_value(Fault::drop_writes().on(Operation::SetOrgMetadata)).unwrap(),
        json!({ "operations": ["SetOrgMetadata"], "kind": "drop_writes", "times": null })
    );
    let fault: Fault = serde_json::from_value(json!({ "kind": "corrupt_writes" })).unwrap();
    assert_eq!(fault, Fault::new(FaultKind::CorruptWrites));
    assert_eq!(fault, Fault::corrupt_writes());

    assert_eq!(Operation::ALL.len(), 35);
    assert_eq!(
        Operation::ListOrganizationsV2.grpc_method(),
        Some("/zitadel.org.v2.OrganizationService/ListOrganizations")
    );
    assert_eq!(
        Operation::GetOrgByDomain.grpc_method(),
        Some("/zitadel.management.v1.ManagementService/GetOrgByDomainGlobal")
    );
    assert_eq!(
        Operation::GetUserByLoginNameGlobal.grpc_method(),
        Some("/zitadel.management.v1.ManagementService/GetUserByLoginNameGlobal")
    );
    assert_eq!(
        Operation::ListUsersV1.grpc_method(),
        Some("/zitadel.management.v1.ManagementService/ListUsers")
    );
    let setters: Vec<Operation> = Operation::ALL
        .into_iter()
        .filter(|op| op.sets_metadata())
        .collect();
    assert_eq!(
        setters,
        [
            Operation::SetOrgMetadata,
            Operation::BulkSetOrgMetadata,
            Operation::SetUserMetadata,
            Operation::BulkSetUserMetadata,
            Operation::SetUserMetadataV2,
            Operation::SetOrgMetadataV2,
            Operation::SetOrgMetadataV2beta,
        ]
    );
}

#[tokio::test]
#[should_panic(expected = "already verified by org")]
async fn a_domain_is_verified_by_one_org_only() {
    let emu = Emulator::start_seeded().await.unwrap();
    emu.add_org_domain(ACME, "shared.example", true);
    emu.add_org_domain(GLOBEX, "shared.example", false);
    emu.add_org_domain(GLOBEX, "shared.example", true);
}
