//! End-to-end: the MutatingAdmissionPolicy of `deploy/admission/cleanup-finalizer.yaml` (also in
//! the Helm chart) adds the cleanup finalizer as an object is created, so the operator makes no
//! finalizer write of its own (counted by kube-apiserver itself); deletion still removes the
//! managed keys; without the policy the operator adds the finalizer as before. The policy is
//! installed on this binary's own control plane (no other suite sees it).

mod common;

use std::path::Path;
use std::time::Duration;

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use serde_json::json;
use zitadel_metadata_operator::controller::FINALIZER;
use zitadel_metadata_operator::crd::OrgMetadata;
use zmo_testkit::bench::{PhaseCost, Scraper};

use common::{ACME, TestEnv, fast_settings};

fn policy_file() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/admission/cleanup-finalizer.yaml")
}

/// `PATCH` requests on OrgMetadata objects (not their status) kube-apiserver served in `cost`.
fn object_patches(cost: &PhaseCost) -> u64 {
    cost.requests
        .iter()
        .filter(|r| r.verb == "PATCH" && r.resource == "orgmetadatas" && r.subresource.is_empty())
        .map(|r| r.count)
        .sum()
}

fn org_manifest(name: &str, ns: &str, finalizers: &[&str]) -> OrgMetadata {
    serde_json::from_value(json!({
        "apiVersion": "metadata.zitadel-operator.dev/v1alpha1",
        "kind": "OrgMetadata",
        "metadata": {"name": name, "namespace": ns, "finalizers": finalizers},
        "spec": {"organizationId": ACME, "metadata": [{"key": format!("{name}-key"), "value": "v"}]},
    }))
    .expect("OrgMetadata")
}

fn has_finalizer(o: &OrgMetadata) -> bool {
    o.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == FINALIZER))
}

#[tokio::test]
async fn the_finalizer_policy_saves_the_operators_finalizer_write_and_is_optional() {
    let env = TestEnv::new("finalizer-policy").await;
    env.cp
        .install_finalizer_policy(&policy_file())
        .await
        .expect("install the finalizer policy");
    let scraper = Scraper::new(env.cp).await.expect("metrics scraper");
    let orgs = env.orgs();

    // Created without a finalizer: the policy adds it; one already listed is not doubled.
    let before = scraper.snapshot().await.expect("snapshot");
    let plain = orgs
        .create(&PostParams::default(), &org_manifest("plain", &env.ns, &[]))
        .await
        .expect("create");
    assert_eq!(plain.metadata.finalizers, Some(vec![FINALIZER.to_string()]));
    let listed = orgs
        .create(
            &PostParams::default(),
            &org_manifest("listed", &env.ns, &["example.com/other", FINALIZER]),
        )
        .await
        .expect("create");
    assert_eq!(
        listed.metadata.finalizers,
        Some(vec!["example.com/other".to_string(), FINALIZER.to_string()])
    );
    let op = env.start_operator(fast_settings());
    for name in ["plain", "listed"] {
        env.wait_org_ready(name).await;
    }
    assert_eq!(env.org_value(ACME, "plain-key").as_deref(), Some("v"));
    let after = scraper.snapshot().await.expect("snapshot");
    let cost = PhaseCost::between("create", 2, &before, &after);
    assert_eq!(
        object_patches(&cost),
        0,
        "the operator patched objects that had their finalizer: {:?}",
        cost.requests
    );

    // Deletion still goes through the operator's cleanup: the key leaves ZITADEL first.
    orgs.delete("plain", &DeleteParams::default())
        .await
        .expect("delete");
    env.wait_org_gone("plain").await;
    assert_eq!(env.org_value(ACME, "plain-key"), None);

    // Without the policy (binding removed) new objects arrive without the finalizer and the
    // operator adds it itself, as on clusters that do not serve MutatingAdmissionPolicy.
    let bindings: Api<DynamicObject> = Api::all_with(
        env.client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(
                "admissionregistration.k8s.io",
                "v1",
                "MutatingAdmissionPolicyBinding",
            ),
            "mutatingadmissionpolicybindings",
        ),
    );
    bindings
        .delete(
            "zitadel-metadata-operator-cleanup-finalizer",
            &DeleteParams::default(),
        )
        .await
        .expect("delete the binding");
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    common::eventually(Duration::from_secs(30), "the policy to stop", || {
        let orgs = orgs.clone();
        let dry_run = dry_run.clone();
        let obj = org_manifest("probe", &env.ns, &[]);
        async move {
            let created = orgs.create(&dry_run, &obj).await.ok()?;
            (!has_finalizer(&created)).then_some(())
        }
    })
    .await;
    let before = scraper.snapshot().await.expect("snapshot");
    let bare = orgs
        .create(&PostParams::default(), &org_manifest("bare", &env.ns, &[]))
        .await
        .expect("create");
    assert!(!has_finalizer(&bare), "{:?}", bare.metadata.finalizers);
    let ready = env.wait_org_ready("bare").await;
    assert!(has_finalizer(&ready), "{:?}", ready.metadata.finalizers);
    let after = scraper.snapshot().await.expect("snapshot");
    let cost = PhaseCost::between("fallback", 1, &before, &after);
    assert_eq!(object_patches(&cost), 1, "{:?}", cost.requests);
    orgs.delete("bare", &DeleteParams::default())
        .await
        .expect("delete");
    env.wait_org_gone("bare").await;
    assert_eq!(env.org_value(ACME, "bare-key"), None);
    op.stop().await;
}
