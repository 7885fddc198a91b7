//! The strict conformance checkers in `tests/conformance/`: `check.mjs` (`@zitadel/proto` through
//! `@bufbuild/protobuf`'s `fromJson`, unknown field = failure) and `check_models.py` (the official
//! `zitadel-client` Python models, for what the proto package lacks). They read a JSON file of
//! cases `{op, kind, schema, json, path}`; `check.mjs` writes the cases for the Python models
//! next to it as `<file>.python.json`.

use std::path::Path;
use std::process::{Command, Output};

/// Whether the checkers can run from `dir`: `node` with `npm ci` done there, and `python3` with
/// `zitadel-client`. When they cannot, says so on stderr as the skip of `what` and answers
/// `false`, except on CI (`CI=true`), where that is a failure.
///
/// # Panics
/// On CI when a tool is missing (`.ci/run` installs them).
pub fn tools_ready(dir: &Path, what: &str) -> bool {
    let ok = |cmd: &mut Command| cmd.output().is_ok_and(|o| o.status.success());
    let node_ready = ok(Command::new("node").arg("--version"))
        && dir
            .join("node_modules/@zitadel/proto/package.json")
            .exists()
        && dir
            .join("node_modules/@bufbuild/protobuf/package.json")
            .exists();
    let python_ready =
        ok(Command::new("python3").args(["-W", "ignore", "-c", "import zitadel_client.models"]));
    if node_ready && python_ready {
        return true;
    }
    let missing = format!(
        "conformance tools missing (node + `npm ci` in {}: {node_ready}; python3 + `pip install --user -r requirements.txt`: {python_ready})",
        dir.display()
    );
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(!ci, "{missing}: .ci/run installs them");
    eprintln!("SKIPPED {what}: {missing}");
    false
}

/// Runs `check.mjs` (in `dir`) on the case file `cases`.
///
/// # Panics
/// If `node` cannot be started.
pub fn run_node(dir: &Path, cases: &Path) -> Output {
    Command::new("node")
        .arg(dir.join("check.mjs"))
        .arg(cases)
        .current_dir(dir)
        .output()
        .expect("node")
}

/// Runs `check_models.py` (in `dir`) on the case file `cases` (`check.mjs` writes it as
/// `<file>.python.json`).
///
/// # Panics
/// If `python3` cannot be started.
pub fn run_python(dir: &Path, cases: &Path) -> Output {
    Command::new("python3")
        .args(["-W", "ignore"])
        .arg(dir.join("check_models.py"))
        .arg(cases)
        .output()
        .expect("python")
}
