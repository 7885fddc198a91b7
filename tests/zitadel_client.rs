//! The ZITADEL client against the emulator over real HTTP: every call, base64 round trip,
//! pagination, and each error class.

use std::sync::Arc;
use std::time::Duration;

use zitadel_metadata_operator::zitadel::{
    ClientConfig, HttpClient, Target, TokenSource, ZitadelApi, ZitadelError,
};
use zmo_testkit::emulator::{
    DEMO_ADMIN_TOKEN, DEMO_ORG_ACME as ACME, DEMO_ORG_GLOBEX as GLOBEX, DEMO_USER_ALICE as ALICE,
    DEMO_USER_BOB as BOB, Emulator, Fault, FaultKind, Operation, TokenGrant,
};

fn client(emu: &Emulator, token: &str) -> HttpClient {
    client_with_timeout(emu, token, Duration::from_secs(15))
}

/// A short timeout only where a test waits for one (hangs); generous elsewhere, since a busy
/// 2-core CI machine can take seconds to move 500 kB or 2,345 keys through a debug build.
fn client_with_timeout(emu: &Emulator, token: &str, timeout: Duration) -> HttpClient {
    let mut config = ClientConfig::new(
        emu.url().parse().expect("url"),
        TokenSource::Static(Arc::from(token)),
    );
    config.request_timeout = timeout;
    HttpClient::new(config).expect("client")
}

fn org(id: &str) -> Target {
    Target::Org { org_id: id.into() }
}

fn user(org_id: &str, user_id: &str) -> Target {
    Target::User {
        org_id: org_id.into(),
        user_id: user_id.into(),
    }
}

#[tokio::test]
async fn bulk_set_list_and_bulk_remove_round_trip_bytes() {
    let emu = Emulator::start_seeded().await.expect("emulator");
    let c = client(&emu, DEMO_ADMIN_TOKEN);
    let binary: Vec<u8> = (0..=255u8).collect();
    let details = c
        .bulk_set_metadata(
            &org(ACME),
            &[("text", "grüße".as_bytes()), ("bin", &binary)],
        )
        .await
        .expect("bulk set");
    assert_eq!(details.sequence, Some(emu.org_sequence(ACME).to_string()));
    assert_eq!(details.resource_owner.as_deref(), Some(ACME));
    assert!(
        details
            .change_date
            .as_deref()
            .is_some_and(|d| d.ends_with('Z'))
    );
    assert_eq!(emu.org_metadata(ACME).get("bin"), Some(&binary));

    let listed = c.list_metadata(&org(ACME)).await.expect("list");
    assert_eq!(
        listed.get("text").map(Vec::as_slice),
        Some("grüße".as_bytes())
    );
    assert_eq!(listed.get("bin"), Some(&binary));
    assert!(
        c.list_metadata(&org(GLOBEX))
            .await
            .expect("list")
            .is_empty(),
        "org scoping"
    );

    let before = emu.org_sequence(ACME);
    let details = c
        .bulk_remove_metadata(&org(ACME), &["text"])
        .await
        .expect("remove");
    assert!(emu.org_sequence(ACME) > before);
    assert_eq!(details.sequence, Some(emu.org_sequence(ACME).to_string()));
    assert!(!emu.org_metadata(ACME).contains_key("text"));

    // Every call carried the org header of its target and succeeded.
    let headers: Vec<Option<String>> = emu
        .requests()
        .into_iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{:?}", r.operation);
            r.org_header
        })
        .collect();
    let expected: Vec<Option<String>> = [ACME, ACME, GLOBEX, ACME]
        .iter()
        .map(|o| Some(o.to_string()))
        .collect();
    assert_eq!(headers, expected);
}

#[tokio::test]
async fn user_metadata_and_user_lookup() {
    let emu = Emulator::start_seeded().await.expect("emulator");
    let c = client(&emu, DEMO_ADMIN_TOKEN);
    assert_eq!(c.user_organization(ALICE).await.expect("lookup"), ACME);
    assert_eq!(c.user_organization(BOB).await.expect("lookup"), GLOBEX);
    let d = c
        .bulk_set_metadata(&user(GLOBEX, BOB), &[("team", b"sre")])
        .await
        .expect("set");
    assert_eq!(d.resource_owner.as_deref(), Some(GLOBEX));
    assert_eq!(d.sequence, Some(emu.user_sequence(BOB).to_string()));
    let listed = c.list_metadata(&user(GLOBEX, BOB)).await.expect("list");
    assert_eq!(listed.get("team").map(Vec::as_slice), Some(&b"sre"[..]));
    c.bulk_remove_metadata(&user(GLOBEX, BOB), &["team"])
        .await
        .expect("remove");
    assert!(emu.user_metadata(BOB).is_empty());

    let err = c.user_organization("nope").await.expect_err("unknown user");
    assert_eq!(err.status(), Some(404));
    assert!(!err.is_transient());
}

#[tokio::test]
async fn list_reads_every_page() {
    let emu = Emulator::start_seeded().await.expect("emulator");
    for i in 0..2_345 {
        emu.put_org_metadata(ACME, &format!("key-{i:05}"), format!("v{i}").as_bytes());
    }
    let c = client(&emu, DEMO_ADMIN_TOKEN);
    let listed = c.list_metadata(&org(ACME)).await.expect("list");
    assert_eq!(listed.len(), 2_345);
    assert_eq!(
        listed.get("key-02344").map(Vec::as_slice),
        Some(&b"v2344"[..])
    );
    assert_eq!(
        emu.count(Operation::ListOrgMetadata),
        3,
        "1000 + 1000 + 345"
    );
}

#[tokio::test]
async fn permanent_errors_are_typed_by_code_and_id() {
    let emu = Emulator::start_seeded().await.expect("emulator");
    emu.set_language_german(true);
    let c = client(&emu, DEMO_ADMIN_TOKEN);

    // Removing a key that is not there fails the whole batch with 404 KeyNotExisting.
    c.bulk_set_metadata(&org(ACME), &[("a", b"1")])
        .await
        .expect("set");
    let err = c
        .bulk_remove_metadata(&org(ACME), &["a", "missing"])
        .await
        .expect_err("404");
    assert!(err.is_key_not_existing(), "{err}");
    assert!(emu.org_metadata(ACME).contains_key("a"), "nothing removed");

    // A user outside the context org: 400 FailedPrecondition COMMAND-uXHNj.
    let err = c
        .bulk_set_metadata(&user(ACME, BOB), &[("k", b"v")])
        .await
        .expect_err("400");
    assert_eq!(err.status(), Some(400));
    assert_eq!(err.id(), Some("COMMAND-uXHNj"));
    assert!(err.is_target_missing());
    assert_eq!(err.reason(), "UserNotFound");

    // Unknown org: 403 AUTH-Bs7Ds.
    let err = c.list_metadata(&org("999")).await.expect_err("403");
    assert_eq!(err.status(), Some(403));
    assert_eq!(err.id(), Some("AUTH-Bs7Ds"));
    assert!(!err.is_transient());

    // Bad token: 401.
    let err = client(&emu, "wrong")
        .list_metadata(&org(ACME))
        .await
        .expect_err("401");
    assert_eq!(err.status(), Some(401));
    assert_eq!(err.reason(), "ZitadelUnauthenticated");

    // No permission in that org: 403 AUTH-5mWD2. (A membership in Globex without org.read; no
    // membership there at all is 404 AUTHZ-cdgFk, contract §3.)
    emu.add_token(
        "acme-only",
        TokenGrant::org_owner(ACME).with_permissions(GLOBEX, std::iter::empty()),
    );
    let err = client(&emu, "acme-only")
        .list_metadata(&org(GLOBEX))
        .await
        .expect_err("403");
    assert_eq!(err.id(), Some("AUTH-5mWD2"));

    // Validation: a value over 500000 bytes is rejected whole.
    let big = vec![b'x'; 500_001];
    let err = c
        .bulk_set_metadata(&org(ACME), &[("big", &big)])
        .await
        .expect_err("400");
    assert_eq!(err.status(), Some(400));
    assert!(!emu.org_metadata(ACME).contains_key("big"));
}

#[tokio::test]
async fn transient_errors_carry_retry_after_and_time_out() {
    let emu = Emulator::start_seeded().await.expect("emulator");
    let c = client(&emu, DEMO_ADMIN_TOKEN);

    emu.inject(Fault {
        operations: None,
        kind: FaultKind::Status {
            http: 503,
            code: 14,
        },
        times: Some(1),
        probability: None,
    });
    let err = c.list_metadata(&org(ACME)).await.expect_err("503");
    assert!(err.is_transient());
    assert_eq!(err.reason(), "ZitadelUnavailable");

    emu.inject(Fault {
        operations: None,
        kind: FaultKind::Status {
            http: 500,
            code: 13,
        },
        times: Some(1),
        probability: None,
    });
    assert!(
        c.list_metadata(&org(ACME))
            .await
            .expect_err("500")
            .is_transient()
    );

    for plain_text in [true, false] {
        emu.inject(Fault {
            operations: None,
            kind: FaultKind::TooManyRequests {
                retry_after: Some(7),
                plain_text,
            },
            times: Some(1),
            probability: None,
        });
        let err = c.list_metadata(&org(ACME)).await.expect_err("429");
        assert!(err.is_transient());
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(err.status(), Some(429));
    }

    emu.inject(Fault {
        operations: None,
        kind: FaultKind::Hang,
        times: Some(1),
        probability: None,
    });
    let hang_client = client_with_timeout(&emu, DEMO_ADMIN_TOKEN, Duration::from_millis(800));
    let err = hang_client
        .list_metadata(&org(ACME))
        .await
        .expect_err("timeout");
    assert!(matches!(err, ZitadelError::Timeout(_)), "{err:?}");
    assert!(err.is_transient());

    // And the next call goes through.
    assert!(c.list_metadata(&org(ACME)).await.is_ok());
}

#[tokio::test]
async fn unreachable_server_is_transient() {
    let emu = Emulator::start_seeded().await.expect("emulator");
    let c = client(&emu, DEMO_ADMIN_TOKEN);
    emu.shutdown().await;
    let err = c.list_metadata(&org(ACME)).await.expect_err("down");
    assert!(err.is_transient(), "{err:?}");
}
