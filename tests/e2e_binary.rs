//! End-to-end with the real operator binary as a subprocess: the same binary users deploy, with
//! its flags, against the real API server and the ZITADEL emulator.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::process::Command;
use zitadel_metadata_operator::crd::MetadataResource;
use zmo_testkit::emulator::{Fault, FaultKind, Operation};

/// The binary in single-tenant mode on the emulator, as users run it.
fn start(env: &TestEnv, token_file: &std::path::Path) -> OperatorBinary {
    Launch::new(env.cp.kubeconfig_path(), &env.ns, "1s")
        .zitadel(&env.emu.url(), token_file)
        .env("RUST_LOG", "info")
        .spawn()
}

#[tokio::test]
async fn binary_converges_across_a_restart_without_duplicate_writes() {
    let env = TestEnv::new("binary").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).expect("token file");
    let orgs: Vec<String> = (0..6).map(|i| format!("30000000000000000{i}")).collect();
    for org in &orgs {
        env.emu.add_org(org, &format!("org {org}"));
    }
    // Slow writes (v1 bulk set or v2 set, whichever API the client picked), so the restart
    // lands in the middle of the work.
    env.emu.inject(Fault {
        operations: Some(vec![
            Operation::BulkSetOrgMetadata,
            Operation::SetOrgMetadataV2,
        ]),
        kind: FaultKind::Latency(Duration::from_millis(700)),
        times: None,
        probability: None,
    });
    let mut first = start(&env, &token);
    for (i, org) in orgs.iter().enumerate() {
        env.apply_org(
            &format!("o{i}"),
            json!({"organizationId": org, "metadata": [{"key": "k", "value": format!("v{i}")}]}),
        )
        .await;
    }
    // Wait until some writes went out, then kill the operator hard.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while env.emu.count(Operation::BulkSetOrgMetadata) + env.emu.count(Operation::SetOrgMetadataV2)
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "operator never wrote"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill().await;
    env.emu.clear_faults();

    let second = start(&env, &token);
    for (i, org) in orgs.iter().enumerate() {
        env.wait_org(&format!("o{i}"), "Ready after restart", |o| {
            is_ready(o.status(), o.metadata.generation)
        })
        .await;
        assert_eq!(env.org_value(org, "k"), Some(format!("v{i}")));
    }
    // Nothing written twice: each org got at most one successful write across both runs (v1
    // names the org in a header, v2 in the body).
    for org in &orgs {
        let writes = env
            .emu
            .requests()
            .into_iter()
            .filter(|r| {
                let v1 = r.operation == Operation::BulkSetOrgMetadata
                    && r.org_header.as_deref() == Some(org);
                let v2 = r.operation == Operation::SetOrgMetadataV2
                    && r.body["organizationId"].as_str() == Some(org);
                (v1 || v2) && r.status == 200
            })
            .count();
        assert_eq!(writes, 1, "org {org} written {writes} times");
    }

    // The user kind works through the binary too.
    env.apply_user(
        "alice",
        json!({"userId": ALICE, "metadata": [{"key": "team", "value": "sre"}]}),
    )
    .await;
    env.wait_user_ready("alice").await;
    assert_eq!(
        env.emu.user_metadata(ALICE).get("team").map(Vec::as_slice),
        Some(&b"sre"[..])
    );

    // SIGTERM: finish in-flight work and exit 0.
    let status = second.stop().await;
    assert!(status.success(), "operator exited with {status}");
}

#[tokio::test]
async fn binary_rejects_bad_configuration_with_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_zitadel-metadata-operator"))
        .args(["--zitadel-url", "https://zitadel.example"])
        .env_remove("ZITADEL_TOKEN_FILE")
        .env_remove("ZITADEL_TOKEN_SECRET")
        .output()
        .await
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("set exactly one of --token-file"),
        "{stderr}"
    );
}
