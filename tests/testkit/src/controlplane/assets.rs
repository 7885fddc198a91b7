//! Locating (and if needed building) the control-plane binaries.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow};

/// Environment variable naming a directory with `kube-apiserver`, `etcd` and `kubectl`.
pub(crate) const ASSETS_ENV: &str = "KUBEBUILDER_ASSETS";

/// The build script, relative to this crate's manifest directory.
fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("envtest")
        .join("build.sh")
}

/// Returns the binary directory, resolving it once per process.
///
/// The (possibly very long) build runs on a blocking thread; concurrent callers wait for the
/// first one and share its result, including a failure.
pub(crate) async fn ensure() -> Result<PathBuf> {
    static ASSETS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    tokio::task::spawn_blocking(|| ASSETS.get_or_init(resolve).clone())
        .await
        .context("the binary lookup task failed")?
        .map_err(|e| anyhow!("{e}"))
}

/// Whether `dir` holds executable `kube-apiserver` and `etcd`.
fn has_binaries(dir: &Path) -> bool {
    ["kube-apiserver", "etcd"]
        .iter()
        .all(|b| is_executable(&dir.join(b)))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

fn resolve() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(ASSETS_ENV).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if has_binaries(&dir) {
            tracing::info!(dir = %dir.display(), "using control-plane binaries from {ASSETS_ENV}");
            return Ok(dir);
        }
        tracing::warn!(
            dir = %dir.display(),
            "{ASSETS_ENV} has no kube-apiserver and etcd; building them with tests/envtest/build.sh"
        );
    }
    build().map_err(|e| {
        let hint = if in_ci() {
            "CI is set: the control-plane tests cannot run without these binaries, so this is a hard failure"
        } else {
            "install Go >= 1.26 so tests/envtest/build.sh can build them, or point KUBEBUILDER_ASSETS at a directory with kube-apiserver, etcd and kubectl"
        };
        format!("control-plane binaries unavailable: {e:#}\n({hint})")
    })
}

/// Runs the build script (stderr streamed to ours) and returns the directory it prints last.
fn build() -> Result<PathBuf> {
    let script = build_script();
    if !script.is_file() {
        return Err(anyhow!("build script {} not found", script.display()));
    }
    tracing::info!(script = %script.display(), "ensuring control-plane binaries");
    let output = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running bash {}", script.display()))?;
    if !output.status.success() {
        return Err(anyhow!(
            "{} failed with {} (its output is above)",
            script.display(),
            output.status
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir = stdout
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("{} printed no directory", script.display()))?;
    if !has_binaries(&dir) {
        return Err(anyhow!(
            "{} reported {}, which lacks kube-apiserver or etcd",
            script.display(),
            dir.display()
        ));
    }
    Ok(dir)
}
