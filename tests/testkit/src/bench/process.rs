//! The operator binary as a child process, and the kernel's accounting of a process (CPU seconds
//! from `/proc/<pid>/stat`, resident memory from `/proc/<pid>/status`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use tokio::process::{Child, Command};

/// CPU and memory of a process as the kernel accounts them.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStats {
    /// User + system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident set size now, KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size, KiB (`VmHWM`).
    pub peak_rss_kib: u64,
    /// Anonymous resident memory now (heap, stacks), KiB (`RssAnon`).
    pub rss_anon_kib: u64,
    /// File-backed resident memory now (the binary's pages, shared libraries), KiB (`RssFile`).
    pub rss_file_kib: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`.
pub fn proc_stats(pid: u32) -> Result<ProcStats> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start at field 3 (`state`);
    // utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("unexpected /proc/<pid>/stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .context("short /proc/<pid>/stat")?
            .parse::<u64>()
            .context("parsing /proc/<pid>/stat")
    };
    let (utime, stime) = (ticks(11)?, ticks(12)?);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib = |field: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcStats {
        cpu_seconds: (utime + stime) as f64 / hz,
        rss_kib: kib("VmRSS:"),
        peak_rss_kib: kib("VmHWM:"),
        rss_anon_kib: kib("RssAnon:"),
        rss_file_kib: kib("RssFile:"),
    })
}

/// CPU time consumed so far by the calling thread, seconds.
pub fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer to a timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// How to run the operator.
#[derive(Clone, Debug)]
pub struct OperatorArgs {
    /// The binary.
    pub binary: PathBuf,
    /// ZITADEL (emulator) URL.
    pub zitadel_url: String,
    /// File holding the token.
    pub token_file: PathBuf,
    /// Kubeconfig of the control plane.
    pub kubeconfig: PathBuf,
    /// Namespace to watch.
    pub namespace: String,
    /// `--resync-interval`.
    pub resync: Duration,
    /// `--max-concurrent-reconciles`, or the operator's default.
    pub concurrency: Option<u16>,
    /// `--zitadel-rps` (0 = not passed).
    pub rps: u32,
    /// `--event-poll-interval` (`None`: not passed; the operator's default or the
    /// `EVENT_POLL_INTERVAL` of `env`).
    pub event_poll: Option<Duration>,
    /// Where stdout/stderr go.
    pub log: PathBuf,
    /// A command (and arguments) the binary runs under (`heaptrack -o FILE`); empty: none.
    pub prefix: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

/// A running operator binary.
pub struct Operator {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    log: PathBuf,
    wrapped: bool,
}

impl Operator {
    /// Starts the binary and waits until `/readyz` answers 200 (its caches hold the initial
    /// lists).
    pub async fn start(args: &OperatorArgs) -> Result<Operator> {
        let addr = free_addr()?;
        let log = std::fs::File::create(&args.log)
            .with_context(|| format!("creating {}", args.log.display()))?;
        let mut command = match args.prefix.split_first() {
            Some((wrapper, wrapper_args)) => {
                let mut c = Command::new(wrapper);
                c.args(wrapper_args).arg(&args.binary);
                c
            }
            None => Command::new(&args.binary),
        };
        // The bench measures per-object polling (one listing per object and resync, as its
        // tables report); `--operator-env DRIFT_DETECTION=auto` measures Events mode instead.
        command.env("DRIFT_DETECTION", "polling");
        // The bench reports calls per event poll interval: only `env` or `event_poll` set it.
        command.env_remove("EVENT_POLL_INTERVAL");
        command.envs(args.env.iter().map(|(k, v)| (k, v)));
        command
            .args(["--zitadel-url", &args.zitadel_url])
            .arg("--token-file")
            .arg(&args.token_file)
            .args(["--namespace", &args.namespace])
            .args([
                "--resync-interval",
                &format!("{}ms", args.resync.as_millis()),
            ])
            .args(["--health-addr", &addr.to_string()])
            .args(["--metrics-addr", &addr.to_string()])
            .env("KUBECONFIG", &args.kubeconfig)
            .env_remove("MAX_CONCURRENT_RECONCILES")
            .env_remove("ZITADEL_RPS")
            .env_remove("WATCH_NAMESPACES")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        if let Some(c) = args.concurrency {
            command.args(["--max-concurrent-reconciles", &c.to_string()]);
        }
        if args.rps > 0 {
            command.args(["--zitadel-rps", &args.rps.to_string()]);
        }
        if let Some(poll) = args.event_poll {
            command.args(["--event-poll-interval", &format!("{}ms", poll.as_millis())]);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", args.binary.display()))?;
        let mut pid = child.id().context("operator pid")?;
        let http = reqwest::Client::new();
        let url = format!("http://{addr}/readyz");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the operator exited with {status} during start-up:\n{}",
                    tail(&args.log)
                );
            }
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the operator was not ready within 60 s:\n{}",
                    tail(&args.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !args.prefix.is_empty() {
            // Under a wrapper the child is the wrapper: measure (and stop) the operator itself.
            pid = descendant_running(pid, &args.binary)
                .with_context(|| format!("no {} under the wrapper", args.binary.display()))?;
        }
        Ok(Operator {
            child,
            pid,
            addr,
            log: args.log.clone(),
            wrapped: !args.prefix.is_empty(),
        })
    }

    /// The operator's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The value of one sample of the operator's Prometheus metrics, `series` written as the
    /// exposition shows it (`name{label="value",...}`); `None` when absent or unreadable.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let url = format!("http://{}/metrics", self.addr);
        let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
        metric_value(&text, series)
    }

    /// CPU and memory of the operator process so far.
    pub fn stats(&self) -> Result<ProcStats> {
        proc_stats(self.pid)
    }

    /// Fails if the operator has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the operator exited with {status}:\n{}", tail(&self.log));
        }
        Ok(())
    }

    /// SIGTERM, then wait (SIGKILL after 15 s).
    pub async fn stop(mut self) -> Result<()> {
        // SAFETY: plain kill(2) on our own child (or the operator under its wrapper).
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        // A wrapper (a heap profiler) may need a while to write its results.
        let grace = if self.wrapped { 300 } else { 15 };
        match tokio::time::timeout(Duration::from_secs(grace), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => self.child.kill().await?,
        }
        Ok(())
    }
}

/// The value of `series` (`name{labels}` exactly as exposed) in a Prometheus text exposition.
fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The first descendant of `root` (or `root` itself) whose executable is `binary`.
fn descendant_running(root: u32, binary: &Path) -> Option<u32> {
    let want = std::fs::canonicalize(binary).ok()?;
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.push((pid, ppid));
        }
    }
    let mut family = vec![root];
    let mut i = 0;
    while i < family.len() {
        let p = family[i];
        if std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|exe| exe == want) {
            return Some(p);
        }
        family.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    None
}

/// A free loopback address (bound, then released).
fn free_addr() -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// The last lines of a log file.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The operator's default `--max-concurrent-reconciles`, read from its `--help`.
pub fn default_concurrency(binary: &Path) -> Option<u16> {
    help_default(binary, "--max-concurrent-reconciles")?
        .parse()
        .ok()
}

/// The default of `flag` as the operator's `--help` shows it (`[default: 15s]` → `15s`).
pub fn help_default(binary: &Path, flag: &str) -> Option<String> {
    let out = std::process::Command::new(binary)
        .arg("--help")
        .output()
        .ok()?;
    let help = String::from_utf8_lossy(&out.stdout);
    let after = help.split(flag).nth(1)?;
    let default = after.split("[default: ").nth(1)?;
    Some(default.split(']').next()?.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::metric_value;

    #[test]
    fn metric_value_reads_one_series_exactly() {
        let text = "# HELP x y\n\
            zitadel_drift_detection_mode{connection_kind=\"default\",mode=\"Events\"} 1\n\
            zitadel_drift_detection_mode{connection_kind=\"default\",mode=\"Polling\"} 0\n\
            zitadel_drift_events_total{verdict=\"drift\"} 12\n";
        let mode = |m: &str| {
            format!("zitadel_drift_detection_mode{{connection_kind=\"default\",mode=\"{m}\"}}")
        };
        assert_eq!(metric_value(text, &mode("Events")), Some(1.0));
        assert_eq!(metric_value(text, &mode("Polling")), Some(0.0));
        assert_eq!(
            metric_value(text, "zitadel_drift_events_total{verdict=\"drift\"}"),
            Some(12.0)
        );
        assert_eq!(metric_value(text, "zitadel_drift_events_total"), None);
    }
}
