//! No stray etcd / kube-apiserver survives a test binary that dies without running destructors.
//!
//! The test re-runs this test binary in "victim" mode: the victim starts a control plane on a
//! short-lived runtime thread (which then exits, showing the children are not tied to it), leaks it,
//! reports the pids and aborts (no destructors, no atexit handlers). The parent checks that the
//! kernel's parent-death signal took both processes down.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use zmo_testkit::controlplane::ControlPlane;

const VICTIM_ENV: &str = "ZMO_TESTKIT_ORPHAN_VICTIM";
const TEST_NAME: &str = "control_plane_dies_with_an_aborted_test_binary";

/// Whether `pid` is running (a zombie waiting to be reaped counts as dead).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the parenthesised command name.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

fn victim() -> ! {
    let started = std::thread::spawn(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        runtime.block_on(ControlPlane::start())
    })
    .join();
    let cp = match started {
        Ok(Ok(cp)) => cp,
        Ok(Err(e)) => {
            eprintln!("victim: start failed: {e:#}");
            std::process::exit(2);
        }
        Err(_) => {
            eprintln!("victim: start thread panicked");
            std::process::exit(2);
        }
    };
    // The thread (and runtime) that asked for the processes is gone; they must still run.
    std::thread::sleep(Duration::from_millis(500));
    let pids = cp.process_ids();
    let alive = pids.iter().all(|pid| running(*pid));
    println!(
        "PIDS {} ALIVE {alive} ROOT {}",
        pids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
        cp.root_dir().display()
    );
    std::mem::forget(cp);
    std::process::abort();
}

#[test]
fn control_plane_dies_with_an_aborted_test_binary() -> Result<()> {
    if std::env::var_os(VICTIM_ENV).is_some() {
        victim();
    }
    // Become the subreaper of the victim's orphans, so the killed processes are reparented to
    // this process and can be reaped here (the container's pid 1 may never reap them).
    // SAFETY: plain prctl on the current process.
    let subreaper = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } == 0;
    let exe = std::env::current_exe()?;
    let mut child = Command::new(&exe)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(VICTIM_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("re-running {}", exe.display()))?;
    let stdout = child.stdout.take().context("victim stdout")?;
    let mut report = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        // libtest may have printed "test <name> ... " on the same line.
        if let Some((_, rest)) = line.split_once("PIDS ") {
            report = Some(rest.to_owned());
        }
    }
    let status = child.wait()?;
    let Some(report) = report else {
        bail!("the victim reported no pids (exit {status})");
    };
    assert!(!status.success(), "the victim was meant to abort");
    let (pids, rest) = report.split_once(" ALIVE ").context("malformed report")?;
    let (alive, root) = rest.split_once(" ROOT ").context("malformed report")?;
    assert_eq!(
        alive, "true",
        "children died with the thread that started them"
    );
    let pids: Vec<u32> = pids
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("malformed pids")?;
    assert_eq!(pids.len(), 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pending = pids.clone();
    while !pending.is_empty() {
        pending.retain(|pid| {
            if subreaper {
                // The processes were reparented to us: reap them. A killed multi-threaded process
                // shows as a zombie before all its threads are gone, and is only reapable then.
                let Ok(raw) = libc::pid_t::try_from(*pid) else {
                    return false;
                };
                let mut status = 0;
                // SAFETY: reaps an orphan reparented to this process; WNOHANG never blocks.
                let reaped = unsafe { libc::waitpid(raw, &mut status, libc::WNOHANG) } == raw;
                !reaped && Path::new(&format!("/proc/{pid}")).exists()
            } else {
                running(*pid)
            }
        });
        if pending.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "control-plane processes {pending:?} outlived the aborted test binary"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The leaked temp dir is all that remains; tidy it up.
    std::fs::remove_dir_all(Path::new(root))
        .with_context(|| format!("removing the victim's directory {root}"))?;
    Ok(())
}
