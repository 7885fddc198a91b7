//! Child processes that cannot outlive the test binary.
//!
//! Every child is started with `prctl(PR_SET_PDEATHSIG, SIGKILL)`, so the kernel kills it when its
//! parent goes away, even when the test binary exits without running destructors (statics are never
//! dropped) or is killed outright. The "parent" the kernel tracks is the *thread* that forked, so all
//! children are forked by one dedicated spawner thread that lives as long as the process. Each child
//! also leads its own process group, so [`Process::kill`] can take down anything it started.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{OnceLock, mpsc};

use anyhow::{Context, Result, anyhow};

/// A request to the spawner thread: the command, and where to send the result.
struct SpawnRequest {
    command: Command,
    reply: mpsc::SyncSender<io::Result<Child>>,
}

/// The channel to the spawner thread, which is started on first use and never exits.
fn spawner() -> Result<&'static mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Result<mpsc::Sender<SpawnRequest>, String>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<SpawnRequest>();
            std::thread::Builder::new()
                .name("zmo-envtest-spawner".into())
                .spawn(move || {
                    // The sender lives in a static, so `recv` only fails at process exit.
                    while let Ok(SpawnRequest { mut command, reply }) = rx.recv() {
                        // The requester may have given up; nothing to do then but let the
                        // child be dropped (it is killed with this process at the latest).
                        let _ = reply.send(spawn_tied(&mut command));
                    }
                })
                .map(|_| tx)
                .map_err(|e| format!("cannot start the child-process spawner thread: {e}"))
        })
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}

/// Forks `command` from the current thread with a parent-death signal and a new process group.
fn spawn_tied(command: &mut Command) -> io::Result<Child> {
    // `getppid` in the child reports the parent *process*, so compare against our pid.
    let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(libc::pid_t::MAX);
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
    // (prctl, getppid, raise); it allocates nothing and takes no locks.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl; then the signal never comes.
            if libc::getppid() != parent {
                libc::raise(libc::SIGKILL);
            }
            Ok(())
        });
    }
    command.process_group(0).spawn()
}

/// A child process of the control plane, its output captured in a log file.
#[derive(Debug)]
pub(crate) struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
    /// Set once the child has been reaped; its pid (and process group id) may then be reused.
    reaped: Option<ExitStatus>,
}

impl Process {
    /// Starts `program` with `args`, stdout and stderr appended to `log` (created if missing, so a
    /// restarted process keeps its predecessor's output), stdin closed.
    pub(crate) fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        log: PathBuf,
    ) -> Result<Process> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone().context("duplicating the log file handle")?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let (reply, result) = mpsc::sync_channel(1);
        spawner()?
            .send(SpawnRequest { command, reply })
            .map_err(|_| anyhow!("the child-process spawner thread is gone"))?;
        let child = result
            .recv()
            .map_err(|_| anyhow!("the child-process spawner thread is gone"))?
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        tracing::debug!(name, pid = child.id(), "started");
        Ok(Process {
            name,
            child,
            log,
            reaped: None,
        })
    }

    /// The process name used in messages (`etcd`, `kube-apiserver`).
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// The operating-system process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file holding the process's stdout and stderr.
    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    /// Returns the exit status if the process has exited (reaping it), `None` while it runs.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        if self.reaped.is_none() {
            self.reaped = self.child.try_wait().ok().flatten();
        }
        self.reaped
    }

    /// Kills the process group with SIGKILL and reaps the process. Idempotent.
    pub(crate) fn kill(&mut self) {
        if self.reaped.is_some() {
            return;
        }
        if let Ok(pgid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: plain syscall; the group id is our own unreaped child's pid, so it cannot
            // have been recycled for an unrelated process group.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
        // In case the child left its group: kill the leader directly too (errors mean it is gone).
        let _ = self.child.kill();
        match self.child.wait() {
            Ok(status) => self.reaped = Some(status),
            Err(e) => tracing::warn!(name = self.name, error = %e, "cannot reap child process"),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
