//! Chaos on deletion (issue #11 "Done when"): ZITADEL answers something that is **not** proof
//! that the target is gone while OrgMetadata and UserMetadata objects are deleted — the routing
//! 404 of a missing API, 404 `AUTHZ-cdgFk` (no membership), a transient 403 `AUTH-Bs7Ds`. Each
//! object keeps its finalizer (`CleanupFailed`, the keys still in ZITADEL) for as long as the
//! answer lasts, and its keys are removed (and the object goes) once ZITADEL answers properly.
//! With `deletionPolicy: Orphan` deletion completes at once whatever ZITADEL answers.
//!
//! Each of these failed before issue #11's work (main at 04eea3f read any 404 other than "key
//! not existing", and `AUTH-Bs7Ds`, as "target gone" and released the finalizer with the keys
//! left behind). Cases run on the default connection in `Auto` mode (v1 on the emulator's default
//! profile) and pinned to v2. Each prints `FIGURE chaos_deletion …`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use zitadel_metadata_operator::crd::MetadataResource;
use zitadel_metadata_operator::status::{READY, STALLED};
use zmo_testkit::emulator::{Fault, Operation};

/// How long the test watches a stuck deletion to be sure the finalizer stays.
const HOLD: Duration = Duration::from_secs(3);

/// One OrgMetadata (ACME) and one UserMetadata (ALICE), both Ready, with a foreign key beside.
async fn two_objects(env: &TestEnv, policy: &str) {
    env.emu.put_org_metadata(ACME, "foreign", b"keep");
    env.apply_org(
        "org",
        json!({"organizationId": ACME, "deletionPolicy": policy,
               "metadata": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}]}),
    )
    .await;
    env.apply_user(
        "user",
        json!({"userId": ALICE, "organizationId": ACME, "deletionPolicy": policy,
               "metadata": [{"key": "u", "value": "1"}]}),
    )
    .await;
    env.wait_org_ready("org").await;
    env.wait_user_ready("user").await;
}

async fn delete_both(env: &TestEnv) {
    env.delete_org("org").await;
    env.users()
        .delete("user", &Default::default())
        .await
        .expect("delete user");
}

async fn user_gone(env: &TestEnv) -> bool {
    env.users().get_opt("user").await.expect("get").is_none()
}

/// Delete while `fault` lasts: both objects stay (deletionTimestamp, finalizer, CleanupFailed
/// naming `remedy`), Stalled as `stalled` says, the keys stay; then ZITADEL recovers and both go
/// with exactly their keys.
async fn stuck_then_recovers(
    prefix: &str,
    api: ApiMode,
    fault: Fault,
    remedy: &str,
    stalled: bool,
) {
    let env = TestEnv::new(prefix).await;
    let op = env.start_operator_with_api(fast_settings(), api);
    two_objects(&env, "Delete").await;
    env.emu.inject(fault);
    delete_both(&env).await;
    let stuck = env
        .wait_org("org", "CleanupFailed", |o| {
            o.metadata.deletion_timestamp.is_some() && reason(o.status()) == Some("CleanupFailed")
        })
        .await;
    let text = message(stuck.status());
    assert!(text.contains(remedy), "{prefix}: {text}");
    assert!(
        text.contains("deletionPolicy to Orphan"),
        "{prefix}: {text}"
    );
    assert_eq!(
        condition(stuck.status(), STALLED),
        Some(if stalled { "True" } else { "False" }),
        "{prefix}: {text}"
    );
    env.wait_user("user", "CleanupFailed", |o| {
        o.metadata.deletion_timestamp.is_some() && reason(o.status()) == Some("CleanupFailed")
    })
    .await;
    // The finalizer holds while ZITADEL keeps answering so.
    let held = Instant::now();
    while held.elapsed() < HOLD {
        let org = env.orgs().get_opt("org").await.expect("get");
        assert!(
            org.is_some_and(|o| o
                .metadata
                .finalizers
                .unwrap_or_default()
                .iter()
                .any(|f| f.contains("cleanup"))),
            "{prefix}: released without proof"
        );
        assert!(
            !user_gone(&env).await,
            "{prefix}: user released without proof"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        env.emu.org_metadata(ACME).len(),
        3,
        "{prefix}: keys still there"
    );
    assert!(env.emu.user_metadata(ALICE).contains_key("u"));
    let events = env.events().await;
    assert!(
        events.iter().any(|(r, _)| r == "CleanupFailed"),
        "{prefix}: {events:?}"
    );
    assert!(
        !events.iter().any(|(r, _)| r == "TargetGone"),
        "{prefix}: {events:?}"
    );

    // ZITADEL answers properly again: the keys go, then the objects.
    env.emu.clear_faults();
    let recovered = Instant::now();
    env.wait_org_gone("org").await;
    eventually(Duration::from_secs(30), "user deleted", || async {
        user_gone(&env).await.then_some(())
    })
    .await;
    let left: Vec<String> = env.emu.org_metadata(ACME).into_keys().collect();
    assert_eq!(left, vec!["foreign".to_string()], "{prefix}");
    assert!(env.emu.user_metadata(ALICE).is_empty(), "{prefix}");
    println!(
        "FIGURE chaos_deletion case={prefix} api={api:?} held_s={:.1} removed_after_recovery_s={:.1} stalled={stalled}",
        HOLD.as_secs_f64(),
        recovered.elapsed().as_secs_f64()
    );
    op.stop().await;
}

#[tokio::test]
async fn routing_404_keeps_the_finalizer_until_the_api_answers() {
    stuck_then_recovers(
        "del-route",
        ApiMode::Auto,
        Fault::route_not_found(),
        "spec.api",
        true,
    )
    .await;
}

#[tokio::test]
async fn routing_404_on_v2_keeps_the_finalizer_until_the_api_answers() {
    stuck_then_recovers(
        "del-route-v2",
        ApiMode::V2,
        Fault::route_not_found(),
        "spec.api",
        true,
    )
    .await;
}

#[tokio::test]
async fn no_membership_keeps_the_finalizer_until_access_is_back() {
    stuck_then_recovers(
        "del-authz",
        ApiMode::Auto,
        Fault::no_membership(),
        "grant the service user",
        true,
    )
    .await;
}

#[tokio::test]
async fn no_membership_on_v2_keeps_the_finalizer_until_access_is_back() {
    stuck_then_recovers(
        "del-authz-v2",
        ApiMode::V2,
        Fault::no_membership(),
        "grant the service user",
        true,
    )
    .await;
}

/// `AUTH-Bs7Ds` is what v1 answers when its lookup of the `x-zitadel-orgid` organization fails
/// (for a deleted org, and for a database hiccup alike): only on the calls that carry the header.
/// The org lookup by id still finds the org, so it is not gone: retried (Reconciling).
#[tokio::test]
async fn transient_org_lookup_failure_keeps_the_finalizer_and_is_retried() {
    let v1_scoped = [
        Operation::ListOrgMetadata,
        Operation::BulkRemoveOrgMetadata,
        Operation::ListUserMetadata,
        Operation::BulkRemoveUserMetadata,
    ];
    stuck_then_recovers(
        "del-bs7ds",
        ApiMode::V1,
        Fault::org_lookup_failed().on_operations(v1_scoped),
        "AUTH-Bs7Ds",
        false,
    )
    .await;
}

/// `deletionPolicy: Orphan` lets go at once whatever ZITADEL answers: from the start, and when a
/// stuck deletion is switched to it.
#[tokio::test]
async fn orphan_completes_at_once() {
    let env = TestEnv::new("del-orphan").await;
    let op = env.start_operator_with_api(fast_settings(), ApiMode::Auto);
    two_objects(&env, "Orphan").await;
    env.emu.inject(Fault::route_not_found());
    let before = env.emu.requests().len();
    let started = Instant::now();
    delete_both(&env).await;
    env.wait_org_gone("org").await;
    eventually(Duration::from_secs(10), "user deleted", || async {
        user_gone(&env).await.then_some(())
    })
    .await;
    let orphaned = started.elapsed();
    assert_eq!(
        env.emu.requests().len(),
        before,
        "no ZITADEL call for Orphan"
    );
    assert_eq!(env.emu.org_metadata(ACME).len(), 3, "keys left as asked");

    // Stuck with Delete, then switched to Orphan: goes at once.
    env.emu.clear_faults();
    env.apply_org(
        "stuck",
        json!({"organizationId": ACME, "metadata": [{"key": "s", "value": "1"}]}),
    )
    .await;
    env.wait_org_ready("stuck").await;
    env.emu.inject(Fault::route_not_found());
    env.delete_org("stuck").await;
    let o = env
        .wait_org("stuck", "CleanupFailed", |o| {
            reason(o.status()) == Some("CleanupFailed")
        })
        .await;
    assert_eq!(condition(o.status(), READY), Some("False"));
    let switched = Instant::now();
    env.orgs()
        .patch(
            "stuck",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"deletionPolicy": "Orphan"}})),
        )
        .await
        .expect("patch");
    env.wait_org_gone("stuck").await;
    assert!(env.emu.org_metadata(ACME).contains_key("s"), "orphaned");
    println!(
        "FIGURE chaos_deletion case=orphan deleted_s={:.2} switched_to_orphan_deleted_s={:.2}",
        orphaned.as_secs_f64(),
        switched.elapsed().as_secs_f64()
    );
    op.stop().await;
}
