//! The real operator binary as a child process, as the suites that test the shipped binary start
//! it: watching one namespace, short timings, its own ports, none of the operator's environment
//! variables inherited from the test's environment.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

/// Environment variables the operator reads: a test sets what it means, nothing leaks in.
const OPERATOR_ENV: &[&str] = &[
    "ZITADEL_URL",
    "ZITADEL_TOKEN_FILE",
    "ZITADEL_TOKEN_SECRET",
    "LEADER_ELECT",
    "POD_NAMESPACE",
    "WATCH_NAMESPACES",
];

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    addr.to_string()
}

/// `GET http://<addr><path>` (2 s timeout): status, `Content-Type` and body; `None` when there
/// is no answer (yet).
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String, String)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?;
    let response = client
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Some((status, content_type, response.text().await.ok()?))
}

/// How to start the binary; [`Launch::spawn`] starts it.
pub struct Launch {
    command: Command,
    health: String,
    metrics: String,
}

impl Launch {
    /// The binary with `KUBECONFIG` = `kubeconfig`, watching `namespace`, re-syncing every
    /// `resync`, backing off 200 ms … 2 s, on any free loopback ports, stdin closed, killed
    /// when dropped, output discarded (stderr inherited) unless redirected.
    pub fn new(kubeconfig: &Path, namespace: &str, resync: &str) -> Launch {
        let mut command = Command::new(env!("CARGO_BIN_EXE_zitadel-metadata-operator"));
        command
            .args(["--namespace", namespace, "--resync-interval", resync])
            .args(["--backoff-base", "200ms", "--backoff-max", "2s"])
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for var in OPERATOR_ENV {
            command.env_remove(var);
        }
        Launch {
            command,
            health: "127.0.0.1:0".into(),
            metrics: "127.0.0.1:0".into(),
        }
    }

    /// The default connection: `url` with the token in `token_file` (single-tenant mode).
    pub fn zitadel(mut self, url: &str, token_file: &Path) -> Launch {
        self.command
            .args(["--zitadel-url", url])
            .arg("--token-file")
            .arg(token_file);
        self
    }

    /// More flags.
    pub fn args<I, S>(mut self, args: I) -> Launch
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    /// An environment variable.
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Launch {
        self.command.env(key, value);
        self
    }

    /// Serve `/healthz`+`/readyz` and `/metrics` on these addresses (default: any free port).
    pub fn addresses(mut self, health: &str, metrics: &str) -> Launch {
        self.health = health.into();
        self.metrics = metrics.into();
        self
    }

    /// Where stdout and stderr go.
    pub fn output(mut self, stdout: impl Into<Stdio>, stderr: impl Into<Stdio>) -> Launch {
        self.command.stdout(stdout).stderr(stderr);
        self
    }

    /// Run in `dir` (nothing may be written there: the operator writes no files).
    pub fn current_dir(mut self, dir: &Path) -> Launch {
        self.command.current_dir(dir);
        self
    }

    /// Killed (SIGKILL) when the test process dies, even without unwinding.
    pub fn die_with_parent(mut self) -> Launch {
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            self.command.pre_exec(|| {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self
    }

    /// Start it.
    pub fn spawn(mut self) -> OperatorBinary {
        let child = self
            .command
            .args([
                "--health-addr",
                &self.health,
                "--metrics-addr",
                &self.metrics,
            ])
            .spawn()
            .expect("start operator binary");
        OperatorBinary { child }
    }
}

/// A running operator binary.
pub struct OperatorBinary {
    /// The process.
    pub child: Child,
}

impl OperatorBinary {
    /// SIGKILL, and reap it.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("SIGKILL operator");
    }

    /// SIGTERM (a graceful stop).
    pub fn terminate(&self) {
        let pid = self.child.id().expect("pid") as i32;
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }

    /// Wait for the exit; panics after `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("operator did not exit")
            .expect("wait")
    }

    /// SIGTERM, then wait up to 15 s for the exit.
    pub async fn stop(mut self) -> ExitStatus {
        self.terminate();
        self.wait_exit(Duration::from_secs(15)).await
    }

    /// The exit status if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }
}
