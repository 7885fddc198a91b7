//! Sharded runs (`bench --shards K`, issue 13): the operator as K processes that split the
//! objects by label, and the proof — from the emulator's request log, not assumed — that every
//! object was reconciled by exactly one of them, the one its label names.
//!
//! * Object `i` gets the label [`LABEL`]`=s<shard_of(i)>`; consecutive pairs (an `OrgMetadata`
//!   and a `UserMetadata`) go round-robin, so every shard gets both kinds evenly.
//! * Shard `sI` is the operator binary with `WATCH_LABEL_SELECTOR=zmo-bench/shard=sI` (the
//!   environment form of `--watch-label-selector`), its own health/metrics addresses and log, and
//!   its own token, whose emulator grant is the single operator's (IAM_OWNER of the first object's
//!   org) with a distinct service-user id: the emulator records that id as the `caller` of every
//!   request made with it. The bench's operator runs without leader election, so no Lease ids.
//! * The proof: every metadata call (list, bulk set, bulk remove; not `ListEvents`, not user
//!   lookups) on an object's target came from that object's shard; every object had at least one.
//!   The proof covers create, convergence, steady state and the edit (not a restart phase). A
//!   violation fails the bench ([`crate::bench::Report::check_shards`]) after the report is
//!   written.
//!
//! With one shard (the default) this is today's single process: no label, the bench's token.

mod proof;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::process::{Operator, OperatorArgs, ProcStats};
use super::workload::{self, Object, Targets};
use crate::emulator::{Emulator, RecordedRequest, TokenGrant};

pub(crate) use proof::summary;
pub use proof::{ShardRun, Shards};

/// The label that assigns an object to a shard.
pub const LABEL: &str = "zmo-bench/shard";

/// The shard (index) of object `i` among `shards`: pairs of objects round-robin.
pub fn shard_of(i: usize, shards: usize) -> usize {
    (i / 2) % shards.max(1)
}

/// The label value (and name) of shard `s`.
fn shard_name(s: usize) -> String {
    format!("s{s}")
}

/// The service-user id shard `s` calls ZITADEL as (18 digits, like ZITADEL's ids).
fn shard_user(s: usize) -> String {
    format!("{}", 500_000_000_000_000_000u64 + s as u64)
}

/// Adds the shard label to object `i`'s manifest (nothing with one shard).
pub(crate) fn label(manifest: &mut Value, i: usize, shards: usize) {
    if shards < 2 {
        return;
    }
    if let Some(meta) = manifest.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "labels".into(),
            serde_json::json!({ LABEL: shard_name(shard_of(i, shards)) }),
        );
    }
}

/// `log` with `-<suffix>` before its extension (`operator-40.log` → `operator-40-s0.log`).
fn log_for(log: &Path, suffix: &str) -> PathBuf {
    let stem = log
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    let ext = log
        .extension()
        .map_or_else(String::new, |e| format!(".{}", e.to_string_lossy()));
    log.with_file_name(format!("{stem}-{suffix}{ext}"))
}

/// One shard's process arguments.
#[derive(Clone, Debug)]
struct ShardArgs {
    selector: String,
    user: String,
    args: OperatorArgs,
}

/// How to start the operator: one process (`shards` ≤ 1), or one per shard.
#[derive(Clone, Debug)]
pub(crate) struct Launch {
    base: OperatorArgs,
    shards: Vec<ShardArgs>,
}

impl Launch {
    /// One process with `base`, or (`shards` ≥ 2) one per shard: registers each shard's token
    /// in `emu` and writes it to `dir`.
    pub(crate) fn new(
        base: OperatorArgs,
        shards: usize,
        emu: &Emulator,
        objects: &[Object],
        dir: &Path,
    ) -> Result<Launch> {
        let mut out = Launch {
            base,
            shards: Vec::new(),
        };
        if shards < 2 {
            return Ok(out);
        }
        // The single operator's grant (`workload::emulator`), with a service-user id per shard.
        let owner = objects.first().map_or("1", |o| o.org_id.as_str());
        for s in 0..shards {
            let token = format!("{}-{}", workload::TOKEN, shard_name(s));
            let user = shard_user(s);
            emu.add_token(&token, TokenGrant::iam_owner(owner).with_user_id(&user));
            let token_file = dir.join(format!("token-{}", shard_name(s)));
            std::fs::write(&token_file, &token)
                .with_context(|| format!("writing {}", token_file.display()))?;
            let selector = format!("{LABEL}={}", shard_name(s));
            let mut args = out.base.clone();
            args.token_file = token_file;
            args.env
                .push(("WATCH_LABEL_SELECTOR".into(), selector.clone()));
            out.shards.push(ShardArgs {
                selector,
                user,
                args,
            });
        }
        out.relog(out.base.log.clone());
        Ok(out)
    }

    /// The same launch logging to `log` (shards: `log` with `-sI` before the extension).
    pub(crate) fn with_log(&self, log: PathBuf) -> Launch {
        let mut out = self.clone();
        out.relog(log);
        out
    }

    fn relog(&mut self, log: PathBuf) {
        for (s, shard) in self.shards.iter_mut().enumerate() {
            shard.args.log = log_for(&log, &shard_name(s));
        }
        self.base.log = log;
    }

    /// Starts the process(es), one after the other, each until `/readyz` answers.
    pub(crate) async fn start(&self) -> Result<Fleet> {
        let mut procs = Vec::new();
        if self.shards.is_empty() {
            procs.push(Operator::start(&self.base).await?);
        }
        for shard in &self.shards {
            procs.push(Operator::start(&shard.args).await?);
        }
        let start_cpu = procs
            .iter()
            .map(|p| p.stats().map(|s| s.cpu_seconds))
            .collect::<Result<Vec<f64>>>()?;
        Ok(Fleet {
            shards: self.shards.clone(),
            procs,
            start_cpu,
        })
    }
}

/// The running operator: one process, or one per shard. CPU and memory are summed over them.
pub(crate) struct Fleet {
    shards: Vec<ShardArgs>,
    procs: Vec<Operator>,
    start_cpu: Vec<f64>,
}

impl Fleet {
    /// The process ids.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(Operator::pid).collect()
    }

    /// CPU and memory of each process.
    pub(crate) fn each_stats(&self) -> Result<Vec<ProcStats>> {
        self.procs.iter().map(Operator::stats).collect()
    }

    /// CPU and memory summed over the processes (with one process: its own).
    pub(crate) fn stats(&self) -> Result<ProcStats> {
        let mut sum = ProcStats::default();
        for s in self.each_stats()? {
            sum.cpu_seconds += s.cpu_seconds;
            sum.rss_kib += s.rss_kib;
            sum.peak_rss_kib += s.peak_rss_kib;
            sum.rss_anon_kib += s.rss_anon_kib;
            sum.rss_file_kib += s.rss_file_kib;
        }
        Ok(sum)
    }

    /// A series of the processes' `/metrics`, summed over them (`None` when none reports it).
    pub(crate) async fn metric(&self, series: &str) -> Option<f64> {
        let mut sum = None;
        for p in &self.procs {
            if let Some(v) = p.metric(series).await {
                sum = Some(sum.unwrap_or(0.0) + v);
            }
        }
        sum
    }

    /// Fails if any process has exited.
    pub(crate) fn check_running(&mut self) -> Result<()> {
        for (i, p) in self.procs.iter_mut().enumerate() {
            p.check_running()
                .with_context(|| match self.shards.get(i) {
                    Some(s) => format!("shard {} ({})", shard_name(i), s.selector),
                    None => "the operator".into(),
                })?;
        }
        Ok(())
    }

    /// Stops every process.
    pub(crate) async fn stop(self) -> Result<()> {
        for p in self.procs {
            p.stop().await?;
        }
        Ok(())
    }

    /// With shards: who reconciled what, from `requests` (the emulator's log), and each
    /// shard's CPU (since start; `converged`: at convergence) and peak RSS now.
    pub(crate) fn report(
        &self,
        requests: &[RecordedRequest],
        targets: &Targets,
        n: usize,
        converged: &[ProcStats],
    ) -> Result<Option<Shards>> {
        if self.shards.is_empty() {
            return Ok(None);
        }
        let users: Vec<&str> = self.shards.iter().map(|s| s.user.as_str()).collect();
        let mut out = proof::prove(requests, targets, n, &users);
        let now = self.each_stats()?;
        for (i, row) in out.shards.iter_mut().enumerate() {
            row.selector = self.shards[i].selector.clone();
            let start = self.start_cpu.get(i).copied().unwrap_or(0.0);
            row.cpu_converge_s = converged.get(i).map_or(0.0, |c| c.cpu_seconds - start);
            row.cpu_total_s = now.get(i).map_or(0.0, |c| c.cpu_seconds);
            row.rss_peak_mib = now.get(i).map_or(0.0, |c| c.peak_rss_kib as f64 / 1024.0);
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_go_round_robin() {
        let shards: Vec<usize> = (0..8).map(|i| shard_of(i, 2)).collect();
        assert_eq!(shards, [0, 0, 1, 1, 0, 0, 1, 1]);
        assert_eq!(shard_of(5, 1), 0);
    }

    #[test]
    fn a_label_only_with_shards() {
        let o = &workload::objects(4, 1)[2];
        let mut one = o.manifest("ns");
        label(&mut one, 2, 1);
        assert!(one["metadata"].get("labels").is_none());
        let mut two = o.manifest("ns");
        label(&mut two, 2, 2);
        assert_eq!(two["metadata"]["labels"][LABEL], "s1");
    }

    #[test]
    fn shard_logs_are_named_after_the_shard() {
        let p = log_for(Path::new("/x/operator-40-restart.log"), "s1");
        assert_eq!(p, Path::new("/x/operator-40-restart-s1.log"));
    }
}
