//! End-to-end: two operator processes (the real binary) split the objects by label
//! (`--watch-label-selector shard=a` / `shard=b`), each with its own Lease. Every object is
//! reconciled by exactly one shard — proven from the emulator's request log (each shard calls
//! ZITADEL with its own token, and the log names the caller of every request) and from each
//! shard's metrics — a relabelled object is taken over by the other shard, and a key claimed by
//! an object of one shard is still refused to a later object of the other.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use zitadel_metadata_operator::crd::{MetadataResource, UserMetadata};
use zmo_testkit::emulator::{Operation, RecordedRequest, TokenGrant};

const SHARD_A: &str = "300000000000000a01";
const SHARD_B: &str = "300000000000000b01";
const ORGS: usize = 6;

fn org_id(i: usize) -> String {
    format!("1000000000000008{i:02}")
}

/// One shard: the operator binary with its selector, Lease, token and log file.
struct Shard {
    binary: OperatorBinary,
    metrics: String,
    log: PathBuf,
}

impl Shard {
    fn start(env: &TestEnv, dir: &Path, name: &str) -> Shard {
        let token = dir.join(format!("token-{name}"));
        std::fs::write(&token, format!("shard-{name}-pat")).expect("token file");
        let log = dir.join(format!("shard-{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let metrics = free_addr();
        let binary = Launch::new(env.cp.kubeconfig_path(), &env.ns, "30s")
            .zitadel(&env.emu.url(), &token)
            // v1: every request names its target (org header, user path).
            .args(["--zitadel-api", "v1"])
            .args(["--watch-label-selector", &format!("shard={name}")])
            .args(["--leader-elect", "--leader-election-namespace", &env.ns])
            .args(["--leader-election-id", &format!("zmo-shard-{name}")])
            .args(["--event-poll-interval", "1s", "--log-format", "json"])
            .addresses(&free_addr(), &metrics)
            .env("RUST_LOG", "info,kube=warn")
            .env("POD_NAME", format!("shard-{name}"))
            .output(out, std::process::Stdio::inherit())
            .spawn();
        Shard {
            binary,
            metrics,
            log,
        }
    }

    async fn scrape(&self) -> Option<String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .ok()?;
        let response = client
            .get(format!("http://{}/metrics", self.metrics))
            .send()
            .await
            .ok()?;
        response.text().await.ok()
    }

    async fn sample(&self, series: &str) -> Option<f64> {
        let text = self.scrape().await?;
        text.lines().find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Server-side apply `K` named `name` with `labels` and `spec`.
async fn apply_labelled<K>(api: &Api<K>, name: &str, shard: &str, spec: serde_json::Value) -> K
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    apply_json(api, json!({"name": name, "labels": {"shard": shard}}), spec).await
}

/// Callers of the metadata requests (lists and writes) on each target.
fn callers_by_target(requests: &[RecordedRequest]) -> BTreeMap<String, BTreeSet<String>> {
    let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in requests {
        if let Some(target) = target_of(r) {
            map.entry(target)
                .or_default()
                .insert(r.caller.clone().unwrap_or_else(|| "unknown".into()));
        }
    }
    map
}

fn shard_user(shard: &str) -> String {
    match shard {
        "a" => SHARD_A.into(),
        _ => SHARD_B.into(),
    }
}

/// Objects alternate between the shards by index.
fn shard_of(i: usize) -> &'static str {
    if i.is_multiple_of(2) { "a" } else { "b" }
}

/// Both shards' PATs (IAM_OWNER), the orgs, and the two operator processes.
fn start_two_shards(env: &TestEnv, dir: &Path) -> (Shard, Shard) {
    env.emu.add_token(
        "shard-a-pat",
        TokenGrant::iam_owner(ACME).with_user_id(SHARD_A),
    );
    env.emu.add_token(
        "shard-b-pat",
        TokenGrant::iam_owner(ACME).with_user_id(SHARD_B),
    );
    for i in 0..ORGS {
        env.emu.add_org(&org_id(i), &format!("Shard org {i}"));
    }
    (Shard::start(env, dir, "a"), Shard::start(env, dir, "b"))
}

/// One OrgMetadata per org (alternating shards) and one UserMetadata per shard, all Ready.
async fn apply_objects_on_both_shards(env: &TestEnv) {
    // Objects alternate between the shards; one UserMetadata each.
    let orgs = env.orgs();
    for i in 0..ORGS {
        apply_labelled(
            &orgs,
            &format!("o{i}"),
            shard_of(i),
            json!({"organizationId": org_id(i), "metadata": [{"key": "k", "value": format!("v{i}")}]}),
        )
        .await;
    }
    let users: Api<UserMetadata> = env.users();
    apply_labelled(
        &users,
        "alice",
        "a",
        json!({"userId": ALICE, "organizationId": ACME, "metadata": [{"key": "team", "value": "a"}]}),
    )
    .await;
    apply_labelled(
        &users,
        "bob",
        "b",
        json!({"userId": BOB, "organizationId": GLOBEX, "metadata": [{"key": "team", "value": "b"}]}),
    )
    .await;
    for i in 0..ORGS {
        env.wait_org_ready(&format!("o{i}")).await;
        assert_eq!(env.org_value(&org_id(i), "k"), Some(format!("v{i}")));
    }
    env.wait_user_ready("alice").await;
    env.wait_user_ready("bob").await;
}

/// Each target is served by its own shard; per-shard counts, Leases and Events-mode drift.
async fn assert_objects_split_between_shards(env: &TestEnv, a: &Shard, b: &Shard) {
    // Every target was read and written by exactly one shard: the one its object's label names.
    let requests = env.emu.requests();
    let callers = callers_by_target(&requests);
    let mut expected: BTreeMap<String, BTreeSet<String>> = (0..ORGS)
        .map(|i| {
            (
                format!("org/{}", org_id(i)),
                BTreeSet::from([shard_user(shard_of(i))]),
            )
        })
        .collect();
    expected.insert(format!("user/{ALICE}"), BTreeSet::from([SHARD_A.into()]));
    expected.insert(format!("user/{BOB}"), BTreeSet::from([SHARD_B.into()]));
    assert_eq!(
        callers, expected,
        "each target served by its own shard only"
    );
    // Each process counts (and caches) only its own objects.
    for (shard, name) in [(&a, "a"), (&b, "b")] {
        let own = r#"zitadel_metadata_objects{kind="OrgMetadata",condition="True"}"#;
        eventually(
            Duration::from_secs(10),
            "object counts per shard",
            || async { (shard.sample(own).await == Some((ORGS / 2) as f64)).then_some(()) },
        )
        .await;
        println!("FIGURE shard_split shard={name} org_objects={}", ORGS / 2);
    }
    // Each shard holds its own Lease.
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns);
    for name in ["a", "b"] {
        let lease = leases
            .get(&format!("zmo-shard-{name}"))
            .await
            .expect("lease");
        let holder = lease
            .spec
            .and_then(|s| s.holder_identity)
            .unwrap_or_default();
        assert!(holder.starts_with(&format!("shard-{name}")), "{holder}");
    }
    // Both detect drift from events (their PATs are IAM_OWNER's): log line and metric.
    for shard in [&a, &b] {
        let mode = r#"zitadel_drift_detection_mode{connection_kind="default",mode="Events"}"#;
        eventually(Duration::from_secs(10), "Events mode metric", || async {
            (shard.sample(mode).await == Some(1.0)).then_some(())
        })
        .await;
        let log = shard.log();
        assert!(
            log.lines().any(
                |l| l.contains("drift detection: reading ZITADEL's event log")
                    && l.contains("the default connection")
            ),
            "no Events-mode log line"
        );
    }
}

/// An out-of-band edit on a shard-b object: both shards read the event, only b repairs.
async fn out_of_band_edit_is_repaired_by_its_shard_only(env: &TestEnv) {
    let mark = env.emu.requests().len();
    let started = Instant::now();
    env.emu.put_org_metadata(&org_id(1), "k", b"tampered");
    eventually(Duration::from_secs(6), "repaired by shard b", || async {
        (env.org_value(&org_id(1), "k").as_deref() == Some("v1")).then_some(())
    })
    .await;
    println!(
        "FIGURE shard_drift_repair latency_ms={} poll_interval_s=1",
        started.elapsed().as_millis()
    );
    // Both shards keep reading the event log (one poll per second each; on a loaded machine a
    // poll may come late, so wait for it rather than for a fixed window).
    let event_readers = |after: &[RecordedRequest]| -> BTreeSet<String> {
        after
            .iter()
            .filter(|r| r.operation == Operation::ListEvents)
            .filter_map(|r| r.caller.clone())
            .collect()
    };
    eventually(
        Duration::from_secs(15),
        "both shards read events",
        || async {
            let after: Vec<RecordedRequest> = env.emu.requests().into_iter().skip(mark).collect();
            (event_readers(&after) == BTreeSet::from([SHARD_A.into(), SHARD_B.into()]))
                .then_some(())
        },
    )
    .await;
    let after: Vec<RecordedRequest> = env.emu.requests().into_iter().skip(mark).collect();
    assert_eq!(
        callers_by_target(&after),
        BTreeMap::from([(
            format!("org/{}", org_id(1)),
            BTreeSet::from([SHARD_B.into()])
        )])
    );
}

/// A later shard-b object claiming a key o0 (shard a) manages is seen as a conflict.
async fn a_key_claim_is_seen_across_shards(env: &TestEnv) {
    let orgs = env.orgs();
    // A later object of shard b claiming a key that o0 (shard a) manages on the same org: the
    // claim is seen across shards.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    apply_labelled(
        &orgs,
        "late",
        "b",
        json!({"organizationId": org_id(0), "metadata": [{"key": "k", "value": "mine"}, {"key": "extra", "value": "x"}]}),
    )
    .await;
    let late = env.wait_org_stalled("late").await;
    assert_eq!(reason(late.status()), Some("KeyConflict"));
    assert_message_contains(late.status(), "o0");
    assert_eq!(env.org_value(&org_id(0), "k").as_deref(), Some("v0"));
    assert_eq!(env.org_value(&org_id(0), "extra").as_deref(), Some("x"));
}

/// Relabel o2 from a to b, then change it: shard b takes over, shard a lets go.
async fn a_relabelled_object_moves_to_the_other_shard(env: &TestEnv, a: &Shard, b: &Shard) {
    let orgs = env.orgs();
    let relabel = json!({"metadata": {"labels": {"shard": "b"}}});
    orgs.patch("o2", &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .expect("relabel");
    // Both shards' caches saw the relabel (shard a dropped o2, shard b holds it, still Ready
    // from shard a's last sync) before the change: any call on org 2 after it is shard b's own.
    let ready = r#"zitadel_metadata_objects{kind="OrgMetadata",condition="True"}"#;
    eventually(
        Duration::from_secs(30),
        "shard a saw the relabel",
        || async { (a.sample(ready).await == Some(2.0)).then_some(()) },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "shard b saw the relabel",
        || async { (b.sample(ready).await == Some(4.0)).then_some(()) },
    )
    .await;
    let mark = env.emu.requests().len();
    apply_labelled(
        &orgs,
        "o2",
        "b",
        json!({"organizationId": org_id(2), "metadata": [{"key": "k", "value": "moved"}]}),
    )
    .await;
    let moved = env.wait_org_ready("o2").await;
    assert_eq!(moved.labels().get("shard").map(String::as_str), Some("b"));
    assert_eq!(env.org_value(&org_id(2), "k").as_deref(), Some("moved"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after: Vec<RecordedRequest> = env.emu.requests().into_iter().skip(mark).collect();
    let by_target = callers_by_target(&after);
    assert_eq!(
        by_target.get(&format!("org/{}", org_id(2))),
        Some(&BTreeSet::from([SHARD_B.into()])),
        "the relabelled object is served by shard b only"
    );
    let written_by: BTreeSet<String> = after
        .iter()
        .filter(|r| r.operation == Operation::BulkSetOrgMetadata)
        .filter_map(|r| r.caller.clone())
        .collect();
    assert_eq!(written_by, BTreeSet::from([SHARD_B.into()]));
    // Shard a still counts 2 Ready org objects (o0, o4), shard b 4 (o1, o3, o5, o2; `late` is
    // stalled).
    eventually(Duration::from_secs(10), "shard a let go", || async {
        (a.sample(ready).await == Some(2.0)).then_some(())
    })
    .await;
    eventually(Duration::from_secs(10), "shard b took over", || async {
        (b.sample(ready).await == Some(4.0)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn two_shards_split_the_objects_and_take_over_a_relabelled_one() {
    let env = TestEnv::new("shards").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = start_two_shards(&env, dir.path());
    apply_objects_on_both_shards(&env).await;
    assert_objects_split_between_shards(&env, &a, &b).await;
    out_of_band_edit_is_repaired_by_its_shard_only(&env).await;
    a_key_claim_is_seen_across_shards(&env).await;
    a_relabelled_object_moves_to_the_other_shard(&env, &a, &b).await;

    for shard in [a, b] {
        let status = shard.binary.stop().await;
        assert!(status.success(), "shard exited with {status}");
    }
}
