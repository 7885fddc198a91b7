//! Deletion only on proof (issue #11 item 3) and deletion that shows its progress (issue #16),
//! and the sync's answers to ambiguous "not found"s: each case against the fakes.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::controller::CleanupError;
use crate::zitadel::Existence;

/// An OrgMetadata being deleted that manages `keys` (all held by ZITADEL).
fn deleting(io: &FakeIo<OrgMetadata>, keys: &[&str], policy: &str) -> OrgMetadata {
    for k in keys {
        io.zitadel.put(&org_target(), k, b"v");
    }
    let managed = MetadataStatus {
        managed_keys: keys.iter().map(|k| k.to_string()).collect(),
        organization_id: Some(ORG.into()),
        ..Default::default()
    };
    let values: Vec<(&str, &str)> = keys.iter().map(|k| (*k, "v")).collect();
    object(
        "acme",
        json!({"organizationId": ORG, "deletionPolicy": policy, "metadata": entries(&values)}),
        Some(&managed),
    )
}

fn error(status: u16, body: &str) -> ZitadelError {
    ZitadelError::from_response(status, None, body)
}

fn route_404() -> ZitadelError {
    error(404, r#"{"code":5,"message":"Not Found"}"#)
}

fn no_membership() -> ZitadelError {
    error(
        404,
        r#"{"code":5,"message":"membership not found (AUTHZ-cdgFk)","details":[{"id":"AUTHZ-cdgFk"}]}"#,
    )
}

fn org_lookup_failed() -> ZitadelError {
    error(
        403,
        r#"{"code":7,"message":"Organisation doesn't exist (AUTH-Bs7Ds)","details":[{"id":"AUTH-Bs7Ds"}]}"#,
    )
}

fn ready_condition(seen: &Seen) -> (String, String, String) {
    let status = seen.status.clone().expect("a status was written");
    let ready = status::find(&status.conditions, status::READY).expect("Ready");
    let stalled = status::find(&status.conditions, status::STALLED).expect("Stalled");
    (
        ready.reason.clone(),
        stalled.status.clone(),
        ready.message.clone(),
    )
}

/// Every answer that is not proof keeps the finalizer: CleanupFailed (Stalled or Reconciling as
/// the cause), a message that says what to fix and that `Orphan` lets go, an Event, an error for
/// the controller's backoff, and the keys still in ZITADEL.
#[tokio::test]
async fn cleanup_keeps_the_finalizer_without_proof() {
    let cases: Vec<(&str, ZitadelError, bool, &str, bool)> = vec![
        // (case, error on the list, transient, the remedy named, existence asked)
        ("route 404", route_404(), false, "spec.api", true),
        (
            "AUTHZ-cdgFk",
            no_membership(),
            false,
            "grant the service user",
            true,
        ),
        ("AUTH-Bs7Ds", org_lookup_failed(), true, "AUTH-Bs7Ds", true),
        (
            "other 403",
            error(
                403,
                r#"{"code":7,"message":"No matching permissions found (AUTH-5mWD2)","details":[{"id":"AUTH-5mWD2"}]}"#,
            ),
            false,
            "grant the service user",
            true,
        ),
        (
            "other 404",
            error(404, r#"{"code":5,"message":"Organisation not found"}"#),
            false,
            "check the error",
            true,
        ),
        ("503", error(503, "{}"), true, "retrying", false),
        (
            "timeout",
            ZitadelError::Timeout(Duration::from_secs(2)),
            true,
            "retrying",
            false,
        ),
    ];
    for (case, err, transient, remedy, asked) in cases {
        let io = FakeIo::default();
        let obj = deleting(&io, &["a", "b"], "Delete");
        io.zitadel.fail(Op::List, err);
        let seen = cleanup_once(&io, &obj).await;
        let message = seen.result.clone().expect_err("keeps the finalizer");
        assert!(message.starts_with("cleanup failed"), "{case}: {message}");
        let (reason, stalled, text) = ready_condition(&seen);
        assert_eq!(reason, "CleanupFailed", "{case}");
        assert_eq!(stalled, if transient { "False" } else { "True" }, "{case}");
        assert!(text.contains(remedy), "{case}: {text}");
        assert!(text.contains("deletionPolicy to Orphan"), "{case}: {text}");
        assert!(seen.events.contains(&Reason::CleanupFailed), "{case}");
        assert!(!seen.events.contains(&Reason::TargetGone), "{case}");
        assert_eq!(io.zitadel.calls().contains(&Op::Exists), asked, "{case}");
        assert_eq!(keys_held(&io), vec!["a", "b"], "{case}: nothing removed");
        if asked {
            assert!(text.contains("the target still exists"), "{case}: {text}");
        }
        assert_eq!(
            seen.status.expect("status").managed_keys,
            vec!["a".to_string(), "b".into()],
            "{case}"
        );
    }
}

/// The existence check itself failing is no proof either; and a failing remove (not the list)
/// is handled the same way.
#[tokio::test]
async fn an_unknown_existence_or_a_failed_remove_keeps_the_finalizer() {
    let io = FakeIo::default();
    let obj = deleting(&io, &["a"], "Delete");
    io.zitadel.fail(Op::Remove, no_membership());
    io.zitadel
        .fail(Op::Exists, ZitadelError::Unproven("sees no org".into()));
    let seen = cleanup_once(&io, &obj).await;
    assert!(seen.result.is_err());
    let (reason, _, text) = ready_condition(&seen);
    assert_eq!(reason, "CleanupFailed");
    assert!(
        text.contains("whether the target still exists is unknown"),
        "{text}"
    );
    assert_eq!(keys_held(&io), vec!["a"]);
}

/// Positive proof lets go at once, keys left behind (they went with the target); a transient
/// `AUTH-Bs7Ds` is retried and the keys are removed once ZITADEL answers properly.
#[tokio::test]
async fn proof_lets_go_and_a_transient_answer_is_retried() {
    let io = FakeIo::default();
    let obj = deleting(&io, &["a"], "Delete");
    io.zitadel.fail(Op::List, org_lookup_failed());
    io.zitadel.set_existence(&org_target(), Existence::Gone);
    let seen = cleanup_once(&io, &obj).await;
    assert_eq!(seen.result, Ok(await_change()));
    assert!(seen.events.contains(&Reason::TargetGone));

    let io = FakeIo::default();
    let obj = deleting(&io, &["a", "b"], "Delete");
    io.zitadel.fail(Op::List, org_lookup_failed());
    let first = cleanup_once(&io, &obj).await;
    assert!(first.result.is_err());
    let failed = first.status.clone().expect("status");
    let again: OrgMetadata = object(
        "acme",
        json!({"organizationId": ORG, "metadata": entries(&[("a", "v"), ("b", "v")])}),
        Some(&failed),
    );
    let before = io.report.statuses.lock().expect("lock").len();
    let second = cleanup_once(&io, &again).await;
    assert_eq!(second.result, Ok(await_change()));
    assert!(keys_held(&io).is_empty());
    // The retry did not flip CleanupFailed to Deleting before it got anywhere.
    assert_eq!(io.report.statuses.lock().expect("lock").len(), before);
}

/// `deletionPolicy: Orphan` completes at once, without a single ZITADEL call, whatever ZITADEL
/// would answer.
#[tokio::test]
async fn orphan_deletes_at_once() {
    let io = FakeIo::default();
    let obj = deleting(&io, &["a"], "Orphan");
    io.zitadel.fail(Op::List, route_404());
    let seen = cleanup_once(&io, &obj).await;
    assert_eq!(seen.result, Ok(await_change()));
    assert!(io.zitadel.calls().is_empty());
    assert_eq!(keys_held(&io), vec!["a"]);
}

/// A listing that hides managed keys (a v2 list leaves out rows the caller may not read) does
/// not let the finalizer go with the keys still there: each unseen key is removed or proven
/// absent by ZITADEL's all-or-nothing remove.
#[tokio::test]
async fn keys_a_listing_does_not_show_are_removed_or_proven_absent() {
    let io = FakeIo::default();
    let obj = deleting(&io, &["a", "b", "c", "d"], "Delete");
    // "b" and "c" are held but hidden; "d" was removed by someone else.
    io.zitadel.hide_from_listings("b");
    io.zitadel.hide_from_listings("c");
    io.zitadel.delete(&org_target(), "d");
    let seen = cleanup_once(&io, &obj).await;
    assert_eq!(seen.result, Ok(await_change()));
    assert!(keys_held(&io).is_empty(), "hidden keys removed");
    // List; remove "a"; remove b,c,d (refused whole: d is missing); then the halves.
    assert_eq!(io.zitadel.count(Op::List), 1);
    assert!(io.zitadel.count(Op::Remove) >= 3);

    // A hidden key the service user may not remove: the finalizer stays.
    let io = FakeIo::default();
    let obj = deleting(&io, &["a", "b"], "Delete");
    io.zitadel.hide_from_listings("b");
    let refused = error(
        403,
        r#"{"code":7,"message":"No matching permissions found (AUTH-AWfge)","details":[{"id":"AUTH-AWfge"}]}"#,
    );
    io.zitadel.fail_after(Op::Remove, 1, refused);
    let seen = cleanup_once(&io, &obj).await;
    assert!(seen.result.is_err(), "{:?}", seen.result);
    assert_eq!(keys_held(&io), vec!["b"]);
    let status = seen.status.expect("status");
    assert_eq!(status.managed_keys, vec!["b".to_string()]);
}

/// A long cleanup says what it does: Reconciling=True `Deleting` first, then keys removed /
/// remaining after batches (at most one progress write per second), managed keys counting down.
#[tokio::test]
async fn deletion_reports_progress() {
    let io = FakeIo::default();
    let keys: Vec<String> = (0..450).map(|i| format!("k{i:03}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let obj = deleting(&io, &refs, "Delete");
    let seen = cleanup_once(&io, &obj).await;
    assert_eq!(seen.result, Ok(await_change()));
    assert!(keys_held(&io).is_empty());
    let statuses = io.report.statuses.lock().expect("lock").clone();
    let first = statuses.first().expect("a progress status");
    let reconciling = status::find(&first.conditions, status::RECONCILING).expect("Reconciling");
    assert_eq!(
        (reconciling.status.as_str(), reconciling.reason.as_str()),
        ("True", "Deleting")
    );
    assert!(
        reconciling.message.contains("0 removed, 450 remaining"),
        "{}",
        reconciling.message
    );
    let ready = status::find(&first.conditions, status::READY).expect("Ready");
    assert_eq!(ready.status, "False");
    // 3 batches (200 + 200 + 50): a write after the first batch only if a second passed.
    assert!(statuses.len() <= 3, "{}", statuses.len());
    assert_eq!(io.zitadel.count(Op::Remove), 3);
    assert_eq!(
        io.event_reasons()
            .iter()
            .filter(|r| **r == Reason::MetadataRemoved)
            .count(),
        1
    );
}

/// The cleanup failure's reason (the metric label) is its cause's.
#[test]
fn cleanup_failures_are_labelled_by_cause() {
    for (err, reason) in [
        (route_404(), Reason::ZitadelApiUnavailable),
        (no_membership(), Reason::ZitadelPermissionDenied),
        (org_lookup_failed(), Reason::OrganizationLookupFailed),
        (error(503, "{}"), Reason::ZitadelUnavailable),
    ] {
        assert_eq!(CleanupError::Zitadel(err).reason(), reason);
    }
}

/// During a sync, `AUTH-Bs7Ds` / `COMMAND-uXHNj` are confirmed before anyone says
/// `TargetNotFound`: Gone → Stalled TargetNotFound; Exists → retried (OrganizationLookupFailed);
/// existence unknown → retried (TargetExistenceUnknown). A missing route is
/// `ZitadelApiUnavailable`, never "not found".
pub(super) async fn reasons_of_deletion_and_ambiguous_answers() -> BTreeSet<Reason> {
    let mut reasons = BTreeSet::new();
    let spec = json!({"organizationId": ORG, "metadata": entries(&[("a", "1")])});
    let cases: Vec<(Option<Existence>, Reason, bool)> = vec![
        (Some(Existence::Gone), Reason::TargetNotFound, true),
        (
            Some(Existence::Exists),
            Reason::OrganizationLookupFailed,
            false,
        ),
        (None, Reason::TargetExistenceUnknown, false),
    ];
    for (existence, want, stalled) in cases {
        let io: FakeIo<OrgMetadata> = FakeIo::default();
        io.zitadel.fail(Op::Set, org_lookup_failed());
        match existence {
            Some(e) => io.zitadel.set_existence(&org_target(), e),
            None => io.zitadel.fail(Op::Exists, error(503, "{}")),
        }
        let seen = apply_once(&io, &org(spec.clone())).await;
        assert_eq!(seen.ready_reason(), Some(want), "{existence:?}");
        assert_eq!(seen.stalled(), stalled, "{existence:?}");
        assert_eq!(
            seen.result.is_err(),
            !stalled,
            "{existence:?}: retried with backoff"
        );
        let text = format!("{:?}", seen.outcome);
        assert!(text.contains("AUTH-Bs7Ds"), "{text}");
        reasons.extend(seen.reasons());
    }
    // COMMAND-uXHNj for a user ZITADEL proves gone: TargetNotFound, not UserNotFound.
    let io: FakeIo<UserMetadata> = FakeIo::default();
    io.zitadel.fail(
        Op::Set,
        error(
            400,
            r#"{"code":9,"message":"User could not be found (COMMAND-uXHNj)","details":[{"id":"COMMAND-uXHNj"}]}"#,
        ),
    );
    let user_target = Target::User {
        org_id: ORG.into(),
        user_id: "200".into(),
    };
    io.zitadel.set_existence(&user_target, Existence::Gone);
    let user = user_alice();
    let seen = apply_once(&io, &user).await;
    assert_eq!(seen.ready_reason(), Some(Reason::TargetNotFound));
    reasons.extend(seen.reasons());
    // A missing route during a sync.
    let io: FakeIo<OrgMetadata> = FakeIo::default();
    io.zitadel.fail(Op::List, route_404());
    let seen = apply_once(&io, &org(spec.clone())).await;
    assert_eq!(seen.ready_reason(), Some(Reason::ZitadelApiUnavailable));
    assert!(!io.zitadel.calls().contains(&Op::Exists));
    reasons.extend(seen.reasons());
    // Deletion in progress.
    let io = FakeIo::default();
    let obj = deleting(&io, &["a"], "Delete");
    let seen = cleanup_once(&io, &obj).await;
    assert_eq!(seen.result, Ok(await_change()));
    reasons.extend(seen.reasons());
    assert!(reasons.contains(&Reason::Deleting));
    reasons
}

/// Keys ZITADEL acknowledged before the status write failed are still the object's: a spec
/// that drops one before a status write lands removes it from ZITADEL, and so does deletion.
/// (Before, `status.managedKeys` was all that counted: both left the keys behind.)
#[tokio::test]
async fn keys_written_before_a_failed_status_write_are_not_left_behind() {
    let both = || {
        org(json!({"organizationId": ORG,
                   "metadata": entries(&[("a", "1"), ("b", "2")])}))
    };
    let failed_write = |io: &FakeIo<OrgMetadata>| {
        *io.report.fail_patch.lock().expect("lock") = true;
    };

    // The spec drops "b" while the object still shows no status.
    let io: FakeIo<OrgMetadata> = FakeIo::default();
    failed_write(&io);
    let first = apply_once(&io, &both()).await;
    assert!(first.result.is_err());
    assert!(first.status.is_none());
    assert_eq!(keys_held(&io), vec!["a", "b"]);
    assert_eq!(io.unrecorded.len(), 1);
    *io.report.fail_patch.lock().expect("lock") = false;
    let only_a = org(json!({"organizationId": ORG, "metadata": entries(&[("a", "1")])}));
    let second = apply_once(&io, &only_a).await;
    assert_eq!(second.result, Ok(resync()));
    assert_eq!(keys_held(&io), vec!["a"]);
    assert_eq!(second.status.expect("status").managed_keys, vec!["a"]);
    assert!(io.unrecorded.is_empty(), "the landed write recorded them");

    // The object is deleted while it still shows no status.
    let io: FakeIo<OrgMetadata> = FakeIo::default();
    failed_write(&io);
    let first = apply_once(&io, &both()).await;
    assert!(first.result.is_err());
    let deleted = cleanup_once(&io, &both()).await;
    assert_eq!(deleted.result, Ok(await_change()));
    assert!(keys_held(&io).is_empty());
    assert!(io.unrecorded.is_empty());
}
