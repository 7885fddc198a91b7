//! Scenarios that fail: what the user must fix, ZITADEL errors, races, connection refusals.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;

/// Spec, source and target problems: Stalled, nothing written.
pub(super) async fn stalls_on_what_the_user_must_fix() -> BTreeSet<Reason> {
    let mut reasons = BTreeSet::new();
    let cases: Vec<(Value, Reason)> = vec![
        (
            json!({"organizationId": ORG, "metadata": [{"key": "no-value"}]}),
            Reason::InvalidSpec,
        ),
        (
            json!({"organizationId": ORG, "metadata": [{"key": "k", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "x"}}}]}),
            Reason::ValueSourceNotFound,
        ),
        (
            json!({"organization": {"name": "Nobody"}, "metadata": entries(&[("a", "1")])}),
            Reason::TargetNotFound,
        ),
        (
            json!({"organization": {"name": "Twice"}, "metadata": entries(&[("a", "1")])}),
            Reason::TargetAmbiguous,
        ),
    ];
    for (spec, want) in cases {
        let io = FakeIo::default();
        io.zitadel.add_org(OrgQuery::Name("Twice".into()), "1");
        io.zitadel.add_org(OrgQuery::Name("Twice".into()), "2");
        let seen = apply_once(&io, &org(spec)).await;
        assert_eq!(seen.ready_reason(), Some(want));
        assert!(seen.stalled() && want.is_stalled(), "{want}");
        assert!(!io.zitadel.calls().contains(&Op::Set), "{want}");
        reasons.extend(seen.reasons());
    }
    reasons
}

/// Every ZITADEL error class: transient ones retry with backoff, permanent ones stall.
// Long because it is one table: an error per class and the reason it maps to.
pub(super) async fn maps_zitadel_errors() -> BTreeSet<Reason> {
    let cases: Vec<(ZitadelError, Reason)> = vec![
        (
            ZitadelError::from_response(401, None, "{}"),
            Reason::ZitadelUnauthenticated,
        ),
        (
            ZitadelError::from_response(403, None, "{}"),
            Reason::ZitadelPermissionDenied,
        ),
        (
            ZitadelError::from_response(404, None, "{}"),
            Reason::ZitadelNotFound,
        ),
        (
            ZitadelError::from_response(400, None, "{}"),
            Reason::ZitadelRejected,
        ),
        (
            ZitadelError::from_response(409, None, "{}"),
            Reason::ZitadelRejected,
        ),
        (
            ZitadelError::from_response(429, Some("3"), "busy"),
            Reason::ZitadelRateLimited,
        ),
        (
            ZitadelError::from_response(503, None, "{}"),
            Reason::ZitadelUnavailable,
        ),
        (
            ZitadelError::Timeout(Duration::from_secs(2)),
            Reason::ZitadelTimeout,
        ),
        (
            ZitadelError::Transport("refused".into()),
            Reason::ZitadelUnreachable,
        ),
        (
            ZitadelError::Tls("UnknownIssuer".into()),
            Reason::TlsVerificationFailed,
        ),
        (
            ZitadelError::Decode("not JSON".into()),
            Reason::ZitadelBadResponse,
        ),
        (
            ZitadelError::Credentials("no token".into()),
            Reason::CredentialsUnavailable,
        ),
        // The client's contract-driven kinds (issue #11): a missing route, no membership, the
        // ambiguous org lookup, gRPC's size refusal, a listing that does not add up.
        (
            ZitadelError::from_response(404, None, r#"{"code":5,"message":"Not Found"}"#),
            Reason::ZitadelApiUnavailable,
        ),
        (
            ZitadelError::from_response(
                404,
                None,
                r#"{"code":5,"message":"x","details":[{"id":"AUTHZ-cdgFk"}]}"#,
            ),
            Reason::ZitadelPermissionDenied,
        ),
        (
            ZitadelError::from_response(
                403,
                None,
                r#"{"code":7,"message":"x","details":[{"id":"AUTH-Bs7Ds"}]}"#,
            ),
            Reason::OrganizationLookupFailed,
        ),
        (
            ZitadelError::from_response(
                429,
                None,
                r#"{"code":8,"message":"grpc: received message larger than max (5 vs. 4)"}"#,
            ),
            Reason::ZitadelMessageTooLarge,
        ),
        (
            ZitadelError::IncompleteListing { seen: 1, total: 2 },
            Reason::ZitadelListingIncomplete,
        ),
        (
            ZitadelError::Unproven("invisible".into()),
            Reason::TargetExistenceUnknown,
        ),
    ];
    let mut reasons = BTreeSet::new();
    for (error, want) in cases {
        let transient = error.is_transient();
        let io = FakeIo::default();
        io.zitadel.fail(Op::List, error);
        let seen = apply_once(
            &io,
            &org(json!({"organizationId": ORG, "metadata": entries(&[("a", "1")])})),
        )
        .await;
        assert_eq!(seen.ready_reason(), Some(want));
        assert_eq!(seen.stalled(), !transient, "{want}");
        assert_eq!(seen.result.is_err(), transient, "{want}: {:?}", seen.result);
        assert!(!(seen.stalled() && want.is_transient() || transient && want.is_stalled()));
        assert_eq!(seen.events.last(), Some(&want));
        reasons.extend(seen.reasons());
    }
    reasons
}

/// A user outside the given org; a race on a remove (twice); a write ZITADEL does not keep.
pub(super) async fn user_races_and_read_back() -> BTreeSet<Reason> {
    let mut reasons = BTreeSet::new();
    let io: FakeIo<UserMetadata> = FakeIo::default();
    io.zitadel.fail(
        Op::Set,
        ZitadelError::from_response(
            400,
            None,
            r#"{"code":9,"message":"x","details":[{"id":"COMMAND-uXHNj"}]}"#,
        ),
    );
    // The user exists, in another organization: confirmed, then Stalled UserNotFound.
    io.zitadel
        .add_user(UserQuery::LoginName("u@x".into()), "200", "999");
    let user = user_alice();
    let seen = apply_once(&io, &user).await;
    assert_eq!(seen.ready_reason(), Some(Reason::UserNotFound));
    assert!(
        seen.outcome
            .as_ref()
            .is_some_and(|o| format!("{o:?}").contains("user 200 is in organization 999")),
        "{:?}",
        seen.outcome
    );
    assert!(io.zitadel.calls().contains(&Op::Exists));
    reasons.extend(seen.reasons());

    let io = FakeIo::default();
    io.zitadel.put(&org_target(), "gone", b"x");
    for _ in 0..2 {
        io.zitadel.fail(
            Op::Remove,
            ZitadelError::from_response(
                404,
                None,
                r#"{"code":5,"message":"x","details":[{"id":"META-2npds"}]}"#,
            ),
        );
    }
    let managed = MetadataStatus {
        managed_keys: vec!["gone".into()],
        ..Default::default()
    };
    let obj: OrgMetadata = object(
        "acme",
        json!({"organizationId": ORG, "metadata": []}),
        Some(&managed),
    );
    let seen = apply_once(&io, &obj).await;
    assert_eq!(seen.ready_reason(), Some(Reason::ConcurrentMetadataChange));
    assert_eq!(
        io.zitadel
            .calls()
            .iter()
            .filter(|c| **c == Op::Remove)
            .count(),
        2
    );
    reasons.extend(seen.reasons());

    let io = FakeIo::default();
    io.zitadel.drop_writes();
    let seen = apply_once(
        &io,
        &org(json!({"organizationId": ORG, "metadata": entries(&[("a", "1")])})),
    )
    .await;
    assert_eq!(seen.ready_reason(), Some(Reason::ReadBackMismatch));
    // The acknowledged write is remembered although the read-back failed.
    assert_eq!(
        seen.status.as_ref().map(|s| s.managed_keys.clone()),
        Some(vec!["a".into()])
    );
    reasons.extend(seen.reasons());
    reasons
}

/// Connection refusals: no ZITADEL call; transient ones retry, the others stall.
pub(super) async fn refused_by_the_connection() -> BTreeSet<Reason> {
    let mut reasons = BTreeSet::new();
    let refusals = [
        (Reason::ConnectionNotFound, false),
        (Reason::ConnectionNotReady, false),
        (Reason::ConnectionNotReady, true),
        (Reason::TargetNotAllowed, false),
    ];
    for (reason, transient) in refusals {
        let io = FakeIo::default();
        let refusal = Refusal {
            reason,
            message: "no".into(),
            transient,
        };
        io.connections.set(Err(refusal));
        let seen = apply_once(
            &io,
            &org(json!({"organizationId": ORG, "metadata": entries(&[("a", "1")])})),
        )
        .await;
        assert_eq!(seen.ready_reason(), Some(reason));
        assert_eq!(seen.stalled(), !transient);
        assert!(io.zitadel.calls().is_empty());
        reasons.extend(seen.reasons());
    }
    // Allowed for other organizations only: refused after resolving, before any metadata call.
    let io = FakeIo::default();
    let api = io.zitadel.clone();
    io.connections.set(Ok(Granted {
        api,
        allowed: AllowedOrgs::Only(vec!["2".into()]),
        name: "c".into(),
    }));
    let seen = apply_once(
        &io,
        &org(json!({"organizationId": ORG, "metadata": entries(&[("a", "1")])})),
    )
    .await;
    assert_eq!(seen.ready_reason(), Some(Reason::TargetNotAllowed));
    assert!(io.zitadel.calls().is_empty());
    reasons.extend(seen.reasons());
    reasons
}
