//! End-to-end: targets named by org name/domain and user login name/user name/email, resolved
//! through ZITADEL's search endpoints (in the emulator) once, recorded in status.
//!
//! The default connection is pinned to Management API v1 (`--zitadel-api v1`): the tests count
//! v1 writes; the lookups they are about go through `/v2/organizations/_search` and v1 search
//! either way.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use zitadel_metadata_operator::crd::MetadataResource;
use zmo_testkit::emulator::{Fault, FaultKind, Operation};

#[tokio::test]
async fn organizations_by_name_and_domain() {
    let env = TestEnv::new("orgnames").await;
    env.emu.add_org_domain(GLOBEX, "globex.example", true);
    let op = env.start_operator_with_api(fast_settings(), ApiMode::V1);
    env.apply_org(
        "by-name",
        json!({"organization": {"name": "Acme"}, "metadata": [{"key": "k", "value": "by name"}]}),
    )
    .await;
    env.apply_org(
        "by-domain",
        json!({"organization": {"domain": "globex.example"}, "metadata": [{"key": "k", "value": "by domain"}]}),
    )
    .await;
    let o = env.wait_org_ready("by-name").await;
    assert_eq!(
        o.status.as_ref().and_then(|s| s.organization_id.as_deref()),
        Some(ACME)
    );
    let o = env.wait_org_ready("by-domain").await;
    assert_eq!(
        o.status.as_ref().and_then(|s| s.organization_id.as_deref()),
        Some(GLOBEX)
    );
    assert_eq!(env.org_value(ACME, "k").as_deref(), Some("by name"));
    assert_eq!(env.org_value(GLOBEX, "k").as_deref(), Some("by domain"));
    // Resolved once: several resyncs later, no further searches.
    let searches = env.emu.count(Operation::ListOrganizationsV2);
    assert_eq!(searches, 2);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.emu.count(Operation::ListOrganizationsV2), searches);
    op.stop().await;
}

#[tokio::test]
async fn ambiguous_and_missing_names_stall_with_precise_messages() {
    let env = TestEnv::new("ambiguous").await;
    env.emu.add_org("100000000000000009", "Acme");
    let op = env.start_operator_with_api(fast_settings(), ApiMode::V1);
    env.apply_org(
        "two",
        json!({"organization": {"name": "Acme"}, "metadata": [{"key": "k", "value": "v"}]}),
    )
    .await;
    env.apply_org(
        "none",
        json!({"organization": {"name": "Initech"}, "metadata": [{"key": "k", "value": "v"}]}),
    )
    .await;
    env.apply_user("nobody", json!({"user": {"loginName": "nobody@acme.localhost"}, "metadata": [{"key": "k", "value": "v"}]}))
        .await;
    let o = env.wait_org_stalled("two").await;
    assert_eq!(reason(o.status()), Some("TargetAmbiguous"));
    let msg = message(o.status());
    assert!(
        msg.contains(ACME) && msg.contains("100000000000000009") && msg.contains("Acme"),
        "{msg}"
    );
    let o = env.wait_org_stalled("none").await;
    assert_eq!(reason(o.status()), Some("TargetNotFound"));
    assert_message_contains(o.status(), "Initech");
    let u = env.wait_user_stalled("nobody").await;
    assert_eq!(reason(u.status()), Some("TargetNotFound"));
    assert_message_contains(u.status(), "nobody@acme.localhost");
    assert_eq!(env.emu.count(Operation::BulkSetOrgMetadata), 0);
    assert_eq!(env.emu.count(Operation::BulkSetUserMetadata), 0);
    op.stop().await;
}

#[tokio::test]
async fn users_by_login_name_user_name_and_email() {
    let env = TestEnv::new("usernames").await;
    env.emu.set_user_email(BOB, "Bob@Globex.example");
    let op = env.start_operator_with_api(fast_settings(), ApiMode::V1);
    env.apply_user(
        "by-login",
        json!({"user": {"loginName": "alice@acme.localhost"}, "metadata": [{"key": "via", "value": "login"}]}),
    )
    .await;
    env.apply_user(
        "by-username",
        json!({"user": {"userName": "alice"}, "organizationId": ACME, "metadata": [{"key": "via2", "value": "username"}]}),
    )
    .await;
    env.apply_user(
        "by-email",
        json!({"user": {"email": "bob@globex.example"}, "organizationId": GLOBEX, "metadata": [{"key": "via", "value": "email"}]}),
    )
    .await;
    for name in ["by-login", "by-username"] {
        let u = env.wait_user_ready(name).await;
        let st = u.status.as_ref().expect("status");
        assert_eq!(st.user_id.as_deref(), Some(ALICE));
        assert_eq!(st.organization_id.as_deref(), Some(ACME));
    }
    let u = env.wait_user_ready("by-email").await;
    assert_eq!(
        u.status.as_ref().and_then(|s| s.user_id.as_deref()),
        Some(BOB)
    );
    let alice = env.emu.user_metadata(ALICE);
    assert_eq!(alice.get("via").map(Vec::as_slice), Some(&b"login"[..]));
    assert_eq!(alice.get("via2").map(Vec::as_slice), Some(&b"username"[..]));
    assert_eq!(
        env.emu.user_metadata(BOB).get("via").map(Vec::as_slice),
        Some(&b"email"[..])
    );
    op.stop().await;
}

#[tokio::test]
async fn read_back_mismatch_is_a_visible_error_then_recovers() {
    let env = TestEnv::new("readback").await;
    env.emu.inject(Fault {
        operations: Some(vec![Operation::BulkSetOrgMetadata]),
        kind: FaultKind::DropWrites,
        times: Some(2),
        probability: None,
    });
    let op = env.start_operator_with_api(fast_settings(), ApiMode::V1);
    env.apply_org_values("acme", ACME, &[("a", "1")]).await;
    let o = env
        .wait_org("acme", "ReadBackMismatch", |o| {
            reason(o.status()) == Some("ReadBackMismatch")
        })
        .await;
    assert_eq!(condition(o.status(), "Ready"), Some("False"));
    assert!(
        message(o.status()).contains("\"a\"") || message(o.status()).contains("a"),
        "{}",
        message(o.status())
    );
    let events = env.events().await;
    assert!(
        events.iter().any(|(r, _)| r == "ReadBackMismatch"),
        "{events:?}"
    );
    // Once ZITADEL stores writes again, the retry converges.
    env.wait_org_ready("acme").await;
    assert_eq!(env.org_value(ACME, "a").as_deref(), Some("1"));
    let sets = env.emu.count(Operation::BulkSetOrgMetadata);
    assert_eq!(sets, 3, "two dropped writes, then one that stuck");
    op.stop().await;
}
