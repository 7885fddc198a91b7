//! The local demo (`make demo`): a real kube-apiserver + etcd (built on first use), the ZITADEL
//! emulator, the CRDs, the operator binary, and `examples/` applied; then prints what Kubernetes
//! and ZITADEL hold. Keeps running until Ctrl-C, or exits after printing with `--once`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use zmo_testkit::controlplane::ControlPlane;
use zmo_testkit::emulator::Emulator;

/// Local demo of zitadel-metadata-operator.
#[derive(Parser)]
struct Args {
    /// Exit after printing the result instead of running until Ctrl-C.
    #[arg(long)]
    once: bool,
    /// The operator binary (default: `zitadel-metadata-operator` next to this binary).
    #[arg(long)]
    operator: Option<PathBuf>,
    /// Folder of manifests to apply.
    #[arg(long)]
    examples: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let operator = match args.operator {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("binary folder")?
            .join("zitadel-metadata-operator"),
    };
    if !operator.exists() {
        bail!(
            "operator binary not found at {} (run `cargo build --workspace --bins` or `make demo`)",
            operator.display()
        );
    }
    let examples = args.examples.unwrap_or_else(|| repo.join("examples"));

    eprintln!(
        "demo: starting kube-apiserver + etcd (the first run builds them from source: several minutes)…"
    );
    let cp = ControlPlane::start().await?;
    eprintln!("demo: control plane at {}", cp.url());
    cp.install_crds(&repo.join("crds")).await?;

    let emu = Emulator::start_seeded().await?;
    eprintln!(
        "demo: ZITADEL emulator at {} (orgs Acme, Globex; users alice, bob)",
        emu.url()
    );

    let work = tempfile::tempdir()?;
    let token = work.path().join("token");
    std::fs::write(&token, "demo-admin-token")?;
    let mut child = tokio::process::Command::new(&operator)
        .args(["--zitadel-url", &emu.url(), "--resync-interval", "30s"])
        // Loopback, any free port: the demo must not collide with whatever runs on 8080/9090.
        .args([
            "--health-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .arg("--token-file")
        .arg(&token)
        .env("KUBECONFIG", cp.kubeconfig_path())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {}", operator.display()))?;

    let status = cp
        .kubectl()
        .args(["apply", "-f"])
        .arg(&examples)
        .status()
        .context("kubectl apply")?;
    if !status.success() {
        bail!("kubectl apply -f {} failed", examples.display());
    }
    let status = cp
        .kubectl()
        .args([
            "wait",
            "--for=condition=Ready",
            "orgmetadata,usermetadata",
            "--all",
            "--all-namespaces",
            "--timeout=60s",
        ])
        .status()
        .context("kubectl wait")?;
    if !status.success() {
        eprintln!("demo: not everything became Ready; see the table and the operator log above");
    }

    println!("\n$ kubectl get orgmetadata,usermetadata -A -o wide");
    cp.kubectl()
        .args(["get", "orgmetadata,usermetadata", "-A", "-o", "wide"])
        .status()
        .context("kubectl get")?;
    println!("\nZITADEL (emulator) now holds:");
    let state = get_pretty(&format!("{}/_emulator/state", emu.url())).await?;
    println!("{state}");

    if args.once {
        child.kill().await.ok();
        return Ok(());
    }
    println!(
        "\nRunning. Try:  KUBECONFIG={} kubectl edit orgmetadata acme\nEmulator state: curl {}/_emulator/state\nCtrl-C to stop.",
        cp.kubeconfig_path().display(),
        emu.url()
    );
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        status = child.wait() => eprintln!("demo: operator exited: {status:?}"),
    }
    child.kill().await.ok();
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}

/// GET a JSON document and pretty-print it.
async fn get_pretty(url: &str) -> anyhow::Result<String> {
    let value: serde_json::Value = reqwest::get(url).await?.error_for_status()?.json().await?;
    Ok(serde_json::to_string_pretty(&value)?)
}
