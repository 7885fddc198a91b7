//! End-to-end: invalid objects are rejected by `kubectl apply` itself (CRD schema and CEL rules on
//! the real API server), with a message naming the problem.

mod common;

use std::io::Write;
use std::process::Stdio;

use zmo_testkit::controlplane::ControlPlane;

/// `kubectl apply --server-side -n NS -f -` with `yaml`; returns (success, stderr).
fn kubectl_apply(cp: &ControlPlane, ns: &str, yaml: &str) -> (bool, String) {
    let mut child = cp
        .kubectl()
        .args([
            "apply",
            "--server-side",
            "--field-manager=e2e",
            "-n",
            ns,
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("write manifest");
    let out = child.wait_with_output().expect("kubectl output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn org(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: metadata.zitadel-operator.dev/v1alpha1\nkind: OrgMetadata\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

#[tokio::test]
async fn kubectl_rejects_invalid_objects_with_specific_messages() {
    let cp = common::shared_with_crds().await;
    let ns = cp.create_namespace("admission").await.expect("namespace");

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "duplicate keys",
            org("dup", "  organizationId: \"1\"\n  metadata:\n  - {key: a, value: \"x\"}\n  - {key: a, value: \"z\"}\n"),
            "duplicate entries for key [key=\"a\"]",
        ),
        (
            "empty value",
            org("empty", "  organizationId: \"1\"\n  metadata:\n  - {key: a, value: \"\"}\n"),
            "spec.metadata[0].value",
        ),
        (
            "value over 500000 characters",
            org("huge", &format!("  organizationId: \"1\"\n  metadata:\n  - key: a\n    value: {}\n", "x".repeat(500_001))),
            "spec.metadata[0].value: Too long",
        ),
        (
            "bad base64",
            org("b64", "  organizationId: \"1\"\n  metadata:\n  - {key: a, binaryValue: \"not base64!\"}\n"),
            "spec.metadata[0].binaryValue",
        ),
        ("missing target id", org("noid", "  metadata:\n  - {key: a, value: x}\n"), "set exactly one of organizationId or organization"),
        ("empty target id", org("emptyid", "  organizationId: \"\"\n"), "spec.organizationId"),
        (
            "value and binaryValue",
            org("both", "  organizationId: \"1\"\n  metadata:\n  - {key: a, value: x, binaryValue: AAE=}\n"),
            "exactly one of value, binaryValue or valueFrom must be set",
        ),
        (
            "key over 200 characters",
            org("longkey", &format!("  organizationId: \"1\"\n  metadata:\n  - {{key: {}, value: x}}\n", "k".repeat(201))),
            "spec.metadata[0].key: Too long",
        ),
        (
            "missing user id",
            "apiVersion: metadata.zitadel-operator.dev/v1alpha1\nkind: UserMetadata\nmetadata:\n  name: nouser\nspec:\n  metadata: []\n".to_string(),
            "set exactly one of userId or user",
        ),
        (
            "connectionRef without a name",
            org("noconnname", "  organizationId: \"1\"\n  connectionRef: {kind: ZitadelConnection}\n"),
            "spec.connectionRef.name: Required value",
        ),
        (
            "connectionRef of an unknown kind",
            org("badconnkind", "  organizationId: \"1\"\n  connectionRef: {kind: Secret, name: x}\n"),
            "spec.connectionRef.kind: Unsupported value",
        ),
        (
            "valueFrom with both references",
            org("bothrefs", "  organizationId: \"1\"\n  metadata:\n  - key: a\n    valueFrom: {secretKeyRef: {name: s, key: k}, configMapKeyRef: {name: c, key: k}}\n"),
            "exactly one of secretKeyRef or configMapKeyRef must be set",
        ),
        (
            "valueFrom naming another namespace",
            org("xns", "  organizationId: \"1\"\n  metadata:\n  - key: a\n    valueFrom: {secretKeyRef: {name: s, key: k, namespace: kube-system}}\n"),
            "secretKeyRef.namespace: field not declared in schema",
        ),
    ];
    let connection = |name: &str, interval: &str| {
        format!(
            "apiVersion: metadata.zitadel-operator.dev/v1alpha1\nkind: ZitadelConnection\nmetadata:\n  name: {name}\nspec:\n  url: https://zitadel.example\n  credentials:\n    personalAccessToken: {{name: pat, key: token}}\n  driftDetection: {{eventPollInterval: \"{interval}\"}}\n"
        )
    };
    let mut cases = cases;
    for (name, interval) in [("fast", "500ms"), ("slow", "1h1s"), ("zero", "0s")] {
        cases.push((
            "eventPollInterval out of range",
            connection(name, interval),
            "eventPollInterval must be between 1s and 1h",
        ));
    }
    for (what, yaml, expected) in &cases {
        let (ok, stderr) = kubectl_apply(cp, &ns, yaml);
        assert!(!ok, "{what}: kubectl apply accepted an invalid object");
        assert!(
            stderr.contains(expected),
            "{what}: expected {expected:?} in:\n{}",
            &stderr[..stderr.len().min(2000)]
        );
    }

    for interval in ["1s", "15s", "1m30s", "1h"] {
        let (ok, stderr) = kubectl_apply(cp, &ns, &connection("ok", interval));
        assert!(ok, "eventPollInterval {interval} rejected: {stderr}");
    }

    // A valid object is accepted, and its target cannot be changed afterwards.
    let (ok, stderr) = kubectl_apply(
        cp,
        &ns,
        &org(
            "valid",
            "  organizationId: \"1\"\n  metadata:\n  - {key: a, value: x}\n",
        ),
    );
    assert!(ok, "valid object rejected: {stderr}");
    let (ok, stderr) = kubectl_apply(cp, &ns, &org("valid", "  organizationId: \"2\"\n"));
    assert!(!ok);
    assert!(stderr.contains("organizationId is immutable"), "{stderr}");

    // Same for a user's id.
    let user = |id: &str| {
        format!(
            "apiVersion: metadata.zitadel-operator.dev/v1alpha1\nkind: UserMetadata\nmetadata:\n  name: u\nspec:\n  userId: \"{id}\"\n"
        )
    };
    let (ok, stderr) = kubectl_apply(cp, &ns, &user("1"));
    assert!(ok, "valid user rejected: {stderr}");
    let (ok, stderr) = kubectl_apply(cp, &ns, &user("2"));
    assert!(!ok);
    assert!(stderr.contains("userId is immutable"), "{stderr}");
}
