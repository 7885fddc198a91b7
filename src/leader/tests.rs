//! Unit tests of `leader`.

use super::*;

fn elector_config() -> LeaderElectionConfig {
    LeaderElectionConfig {
        namespace: "ns".into(),
        name: "lease".into(),
        identity: "me_1".into(),
        lease_duration: Duration::from_millis(15_500),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(2),
    }
}

#[test]
fn identity_has_a_random_suffix() {
    let a = default_identity();
    let b = default_identity();
    assert_ne!(a, b);
    assert!(a.contains('_'));
}

#[test]
fn jitter_stays_within_bounds() {
    for _ in 0..100 {
        let d = jittered(Duration::from_secs(2));
        assert!(d >= Duration::from_secs(2) && d < Duration::from_millis(2400));
    }
}

#[tokio::test]
async fn spec_counts_transitions_only_when_the_holder_changes() {
    // A client is needed for the Api handle only; no request is made.
    let config = kube::Config::new("http://127.0.0.1:1".parse().expect("uri"));
    let client = Client::try_from(config).expect("client");
    let e = LeaderElector::new(client, elector_config());
    assert_eq!(e.duration_seconds(), 16);
    let now = Timestamp::now();

    let fresh = e.spec(None, now);
    assert_eq!(fresh.holder_identity.as_deref(), Some("me_1"));
    assert_eq!(fresh.lease_transitions, Some(0));

    let other = LeaseSpec {
        holder_identity: Some("other".into()),
        lease_transitions: Some(3),
        ..LeaseSpec::default()
    };
    let taken = e.spec(Some(&other), now);
    assert_eq!(taken.lease_transitions, Some(4));
    assert!(taken.acquire_time.is_some());

    let renewed = e.spec(Some(&taken), Timestamp::now());
    assert_eq!(renewed.lease_transitions, Some(4));
    assert_eq!(renewed.acquire_time, taken.acquire_time);

    let released = LeaseSpec {
        holder_identity: None,
        lease_transitions: Some(4),
        ..LeaseSpec::default()
    };
    assert_eq!(e.spec(Some(&released), now).lease_transitions, Some(5));
}
