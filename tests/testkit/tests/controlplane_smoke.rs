//! Smoke tests of the envtest-style control plane: a real etcd + kube-apiserver.
//!
//! Needs the binaries (KUBEBUILDER_ASSETS or tests/envtest/build.sh, which builds them with Go).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use zmo_testkit::controlplane::ControlPlane;

const TEST_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.zmo-testkit.dev
spec:
  group: smoke.zmo-testkit.dev
  scope: Namespaced
  names:
    plural: widgets
    singular: widget
    kind: Widget
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size:
                  type: integer
"#;

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// A private control plane: everything the harness promises, then drop kills the processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_control_plane_end_to_end() -> Result<()> {
    let started = Instant::now();
    let cp = ControlPlane::start().await?;
    eprintln!(
        "control plane started in {:?} at {}",
        started.elapsed(),
        cp.url()
    );
    assert!(cp.url().starts_with("https://127.0.0.1:"));
    assert!(cp.kubeconfig_path().is_file());
    assert_eq!(cp.kubeconfig().current_context.as_deref(), Some("envtest"));

    let client = cp.client().await?;
    let version = client.apiserver_version().await?;
    assert_eq!(version.git_version, "v1.36.3");

    // Namespaces.
    let ns = cp.create_namespace("Smoke_Test").await?;
    assert!(ns.starts_with("smoke-test-"), "{ns}");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(namespaces.get_opt(&ns).await?.is_some());

    // A CRD from a directory (plus a non-YAML file, which is ignored).
    let crd_dir = tempfile::tempdir()?;
    std::fs::write(crd_dir.path().join("widgets.yaml"), TEST_CRD)?;
    std::fs::write(crd_dir.path().join("README.md"), "not a CRD")?;
    cp.install_crds(crd_dir.path()).await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds.get("widgets.smoke.zmo-testkit.dev").await?;
    let established = crd
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Established" && c.status == "True");
    assert!(established, "CRD not Established");
    // Applying again is a no-op, and the CRD serves objects right away.
    cp.install_crds(crd_dir.path()).await?;
    let gvk = GroupVersionKind::gvk("smoke.zmo-testkit.dev", "v1", "Widget");
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &ApiResource::from_gvk(&gvk));
    let widget: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "smoke.zmo-testkit.dev/v1",
        "kind": "Widget",
        "metadata": { "name": "w1" },
        "spec": { "size": 3 },
    }))?;
    widgets.create(&PostParams::default(), &widget).await?;
    assert_eq!(widgets.get("w1").await?.data["spec"]["size"], 3);

    // A ConfigMap round trip.
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "smoke" },
        "data": { "greeting": "hello" },
    }))?;
    config_maps.create(&PostParams::default(), &cm).await?;
    let read = config_maps.get("smoke").await?;
    assert_eq!(
        read.data
            .unwrap_or_default()
            .get("greeting")
            .map(String::as_str),
        Some("hello")
    );

    // kubectl from the asset directory, with the kubeconfig.
    let output = cp
        .kubectl()
        .args(["get", "ns", "-o", "name"])
        .output()
        .context("running kubectl")?;
    ensure!(
        output.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("namespace/default"), "{stdout}");
    assert!(stdout.contains(&format!("namespace/{ns}")), "{stdout}");

    // Drop kills both processes and removes the directory.
    let pids = cp.process_ids();
    let root = cp.root_dir().to_path_buf();
    assert_eq!(pids.len(), 2, "etcd and kube-apiserver");
    assert!(pids.iter().all(|pid| pid_alive(*pid)));
    drop(client);
    drop(cp);
    for pid in pids {
        assert!(!pid_alive(pid), "process {pid} still exists after drop");
    }
    assert!(!root.exists(), "{} still exists after drop", root.display());
    Ok(())
}

/// The shared instance works from several tests (each with its own runtime and client).
#[tokio::test]
async fn shared_control_plane_serves_two_tests_a() -> Result<()> {
    shared_round_trip("shared-a").await
}

/// See [`shared_control_plane_serves_two_tests_a`].
#[tokio::test]
async fn shared_control_plane_serves_two_tests_b() -> Result<()> {
    shared_round_trip("shared-b").await
}

async fn shared_round_trip(prefix: &str) -> Result<()> {
    let cp = ControlPlane::shared();
    let ns = cp.create_namespace(prefix).await?;
    let client = cp.client().await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(client, &ns);
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "shared" },
        "data": { "test": prefix },
    }))?;
    config_maps.create(&PostParams::default(), &cm).await?;
    let read = tokio::time::timeout(Duration::from_secs(10), config_maps.get("shared")).await??;
    assert_eq!(
        read.data
            .unwrap_or_default()
            .get("test")
            .map(String::as_str),
        Some(prefix)
    );
    Ok(())
}
