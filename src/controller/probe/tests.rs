use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

fn probed(versions: &[&str], ready: bool, reason: Reason) -> ConnectionStatus {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let state = if ready { "True" } else { "False" };
    ConnectionStatus {
        observed_secret_versions: versions.iter().map(|v| v.to_string()).collect(),
        identity: Some("service user 7".into()),
        conditions: vec![conditions::condition(
            &[],
            conditions::READY,
            state,
            reason,
            "Token is invalid (AUTH-7fs1e)",
            Some(1),
            &now,
        )],
        ..Default::default()
    }
}

fn reasons(events: &[(bool, Reason, String)]) -> Vec<Reason> {
    events.iter().map(|e| e.1).collect()
}

#[test]
fn a_credential_change_is_announced_then_accepted_or_rejected_once() {
    let first = probed(&["Secret/t/pat@1"], true, Reason::Connected);
    // The first probe: picked up and accepted.
    let events = credential_events(&ConnectionStatus::default(), &first);
    assert_eq!(
        reasons(&events),
        vec![Reason::CredentialsChanged, Reason::CredentialsAccepted]
    );
    assert_eq!(events[0].2, "picked up Secret/t/pat@1");
    assert!(events[1].2.contains("service user 7"));
    // Nothing changed: no Event.
    assert!(credential_events(&first, &first).is_empty());
    // Rotated to a rejected token.
    let rejected = probed(&["Secret/t/pat@2"], false, Reason::ZitadelUnauthenticated);
    let events = credential_events(&first, &rejected);
    assert_eq!(
        reasons(&events),
        vec![Reason::CredentialsChanged, Reason::CredentialsRejected]
    );
    assert!(events[1].0 && events[1].2.contains("AUTH-7fs1e"));
    assert!(credential_events(&rejected, &rejected).is_empty());
    // Rotated back.
    let back = probed(&["Secret/t/pat@3"], true, Reason::Connected);
    assert_eq!(
        reasons(&credential_events(&rejected, &back)),
        vec![Reason::CredentialsChanged, Reason::CredentialsAccepted]
    );
    // ZITADEL down is neither.
    let down = probed(&["Secret/t/pat@4"], false, Reason::ZitadelUnavailable);
    assert_eq!(
        reasons(&credential_events(&back, &down)),
        vec![Reason::CredentialsChanged]
    );
    // …and accepted once it answers.
    let up = probed(&["Secret/t/pat@4"], true, Reason::Connected);
    assert_eq!(
        reasons(&credential_events(&down, &up)),
        vec![Reason::CredentialsAccepted]
    );
}
