//! Fault kinds of the ZITADEL emulator used by the chaos suites, over real HTTP: connection
//! resets and probabilistic faults with a seeded, reproducible generator.

use std::time::Duration;

use serde_json::{Value, json};
use zmo_testkit::emulator::{
    DEMO_ADMIN_TOKEN, DEMO_ORG_ACME as ACME, Emulator, Fault, FaultKind, Operation,
};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// `POST /management/v1/metadata/{key}` in Acme (value "v").
async fn set(client: &reqwest::Client, emu: &Emulator, key: &str) -> reqwest::Result<u16> {
    let resp = client
        .post(format!("{}/management/v1/metadata/{key}", emu.url()))
        .bearer_auth(DEMO_ADMIN_TOKEN)
        .header("x-zitadel-orgid", ACME)
        .json(&json!({"value": "dg=="}))
        .send()
        .await?;
    let status = resp.status().as_u16();
    resp.text().await?;
    Ok(status)
}

#[tokio::test]
async fn reset_closes_the_connection_without_answer_and_writes_nothing() {
    let emu = Emulator::start_seeded().await.expect("emulator");
    let client = client();
    // A pooled connection first: the reset must hit a connection the client already reuses.
    assert_eq!(set(&client, &emu, "before").await.expect("set"), 200);
    emu.inject(Fault::reset().on(Operation::SetOrgMetadata).times(1));

    let err = set(&client, &emu, "lost")
        .await
        .expect_err("a reset connection gives no answer");
    assert!(!err.is_timeout() && !err.is_status(), "{err:?}");
    // The whole error chain names what happened at the TCP level.
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    assert!(
        chain.contains("reset") || chain.contains("closed"),
        "not a connection-level failure: {chain}"
    );
    assert!(!emu.org_metadata(ACME).contains_key("lost"));
    let recorded = emu.requests();
    let last = recorded.last().expect("recorded");
    assert_eq!(
        (last.operation, last.status),
        (Operation::SetOrgMetadata, 0)
    );

    // Consumed: the next request (on a new connection) is handled normally.
    assert_eq!(set(&client, &emu, "after").await.expect("set"), 200);
    assert!(emu.org_metadata(ACME).contains_key("after"));
    emu.shutdown().await;
}

#[tokio::test]
async fn reset_after_handling_stores_the_write_but_loses_the_answer() {
    let emu = Emulator::start_seeded().await.expect("emulator");
    let client = client();
    let before = emu.org_sequence(ACME);
    emu.inject(
        Fault::reset_after_handling()
            .on(Operation::SetOrgMetadata)
            .times(1),
    );
    let err = set(&client, &emu, "landed")
        .await
        .expect_err("the answer is lost");
    assert!(!err.is_timeout() && !err.is_status(), "{err:?}");
    // ZITADEL committed it: one event, value stored.
    assert_eq!(emu.org_sequence(ACME), before + 1);
    assert!(emu.org_metadata(ACME).contains_key("landed"));
    let last = emu.requests().pop().expect("recorded");
    assert_eq!(
        (last.operation, last.status),
        (Operation::SetOrgMetadata, 0)
    );
    assert_eq!(set(&client, &emu, "next").await.expect("set"), 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn reset_is_available_through_the_admin_route() {
    let emu = Emulator::start_seeded().await.expect("emulator");
    let added: Value = client()
        .post(format!("{}/_emulator/faults", emu.url()))
        .json(&json!({"kind": "reset", "times": 1, "probability": 0.5}))
        .send()
        .await
        .expect("admin")
        .json()
        .await
        .expect("json");
    assert_eq!(added[0]["kind"], json!("reset"));
    assert_eq!(added[0]["probability"], json!(0.5));
    let parsed: Fault = serde_json::from_value(added[0].clone()).expect("fault");
    assert_eq!(parsed.kind, FaultKind::Reset);
    emu.shutdown().await;
}

/// Statuses of `n` sequential Sets after seeding the fault generator with `seed`.
async fn pattern(emu: &Emulator, seed: u64, n: usize) -> Vec<u16> {
    emu.seed_faults(seed);
    let client = client();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(set(&client, emu, &format!("k{i}")).await.expect("set"));
    }
    out
}

#[tokio::test]
async fn probabilistic_faults_hit_about_their_share_reproducibly() {
    let emu = Emulator::start_seeded().await.expect("emulator");
    emu.inject(
        Fault::unavailable()
            .on(Operation::SetOrgMetadata)
            .with_probability(0.25),
    );
    let first = pattern(&emu, 7, 400).await;
    let hits = first.iter().filter(|s| **s == 503).count();
    assert!(first.iter().all(|s| *s == 200 || *s == 503), "{first:?}");
    // Binomial(400, 0.25): mean 100, sd ~8.7; ±5 sd.
    assert!((57..=143).contains(&hits), "{hits} hits of 400 at p=0.25");
    // Same seed, same request sequence: the same requests fail.
    assert_eq!(pattern(&emu, 7, 400).await, first);
    // Another seed: another pattern.
    assert_ne!(pattern(&emu, 8, 400).await, first);
    emu.shutdown().await;
}

#[tokio::test]
async fn a_probabilistic_miss_does_not_use_up_times() {
    let emu = Emulator::start_seeded().await.expect("emulator");
    emu.inject(
        Fault::unavailable()
            .on(Operation::SetOrgMetadata)
            .with_probability(0.5)
            .times(3),
    );
    let statuses = pattern(&emu, 1, 60).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        3,
        "{statuses:?}"
    );
    // Probability 0 never hits, 1 always does.
    emu.inject(
        Fault::internal()
            .on(Operation::SetOrgMetadata)
            .with_probability(0.0),
    );
    assert!(pattern(&emu, 2, 20).await.iter().all(|s| *s == 200));
    emu.clear_faults();
    emu.inject(
        Fault::internal()
            .on(Operation::SetOrgMetadata)
            .with_probability(1.0),
    );
    assert!(pattern(&emu, 3, 5).await.iter().all(|s| *s == 500));
    emu.shutdown().await;
}
