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
//!   A violation fails the bench ([`Report::check_shards`]) after the report is written.
//!
//! With one shard (the default) this is today's single process: no label, the bench's token.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use serde_json::Value;

use super::process::{Operator, OperatorArgs, ProcStats};
use super::report::{Report, table};
use super::workload::{self, Object, Targets};
use crate::emulator::{Emulator, RecordedRequest, TokenGrant};

/// The label that assigns an object to a shard.
pub const LABEL: &str = "zmo-bench/shard";

/// Violations described in the report (the counts cover all).
const EXAMPLES: usize = 5;

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
        let mut out = prove(requests, targets, n, &users);
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

/// One shard of a sharded run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ShardRun {
    /// `s0`, `s1`, …
    pub name: String,
    /// Its label selector.
    pub selector: String,
    /// The service-user id its token acts as (the emulator's `caller`).
    pub caller: String,
    /// Objects labelled for it.
    pub objects: usize,
    /// Of those, objects whose target it made metadata calls on.
    pub reconciled: usize,
    /// Every ZITADEL call made with its token (metadata, user lookups, probes, …).
    pub calls: u64,
    /// Of those, metadata calls (list, bulk set, bulk remove) on the benchmark's targets.
    pub metadata_calls: u64,
    /// Its metadata calls on targets of objects of other shards.
    pub foreign_calls: u64,
    /// CPU seconds from its start to convergence.
    pub cpu_converge_s: f64,
    /// CPU seconds over the measured run.
    pub cpu_total_s: f64,
    /// Peak resident memory (VmHWM), MiB.
    pub rss_peak_mib: f64,
}

/// The proof of a sharded run: from the emulator's log, over the whole measured run (create,
/// converge, steady state, edit; before any restart phase).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Shards {
    /// The label that assigns objects to shards.
    pub label: String,
    /// Per shard.
    pub shards: Vec<ShardRun>,
    /// Objects whose target got a metadata call from a caller other than their shard
    /// (another shard, or a token naming no shard). Must be 0.
    pub violations: usize,
    /// Objects whose target got no metadata call at all. Must be 0.
    pub unreconciled: usize,
    /// Metadata calls on the benchmark's targets made by no shard's token.
    pub unknown_caller_calls: u64,
    /// The first few violations, described.
    pub examples: Vec<String>,
}

impl Shards {
    /// Whether every object was reconciled by exactly one shard, its own.
    pub fn proven(&self) -> bool {
        self.violations == 0 && self.unreconciled == 0
    }
}

/// Who called what: object `i` belongs to shard `shard_of(i, users.len())`, whose token acts as
/// `users[shard]`.
fn prove(requests: &[RecordedRequest], targets: &Targets, n: usize, users: &[&str]) -> Shards {
    let k = users.len();
    let shard_by_user = |u: &str| users.iter().position(|x| *x == u);
    let mut rows: Vec<ShardRun> = (0..k)
        .map(|s| ShardRun {
            name: shard_name(s),
            caller: users[s].to_owned(),
            objects: (0..n).filter(|i| shard_of(*i, k) == s).count(),
            ..ShardRun::default()
        })
        .collect();
    // Per object: calls from its own shard, and the foreign callers seen.
    let mut own = vec![0u64; n];
    let mut foreign: Vec<Vec<String>> = vec![Vec::new(); n];
    let mut unknown = 0u64;
    for r in requests {
        let caller = r.caller.as_deref().and_then(shard_by_user);
        if let Some(s) = caller {
            rows[s].calls += 1;
        }
        let Some(i) = targets.object_of(r).filter(|i| *i < n) else {
            continue;
        };
        let expected = shard_of(i, k);
        match caller {
            Some(s) => {
                rows[s].metadata_calls += 1;
                if s == expected {
                    own[i] += 1;
                } else {
                    rows[s].foreign_calls += 1;
                    if !foreign[i].contains(&shard_name(s)) {
                        foreign[i].push(shard_name(s));
                    }
                }
            }
            None => {
                unknown += 1;
                let who = format!("caller {:?}", r.caller.as_deref().unwrap_or("none"));
                if !foreign[i].contains(&who) {
                    foreign[i].push(who);
                }
            }
        }
    }
    let mut out = Shards {
        label: LABEL.into(),
        unknown_caller_calls: unknown,
        ..Shards::default()
    };
    for i in 0..n {
        let s = shard_of(i, k);
        if own[i] > 0 {
            rows[s].reconciled += 1;
        }
        if !foreign[i].is_empty() {
            out.violations += 1;
            if out.examples.len() < EXAMPLES {
                out.examples.push(format!(
                    "object #{i} (shard {}) was also called by {}",
                    shard_name(s),
                    foreign[i].join(", ")
                ));
            }
        } else if own[i] == 0 {
            out.unreconciled += 1;
            if out.examples.len() < EXAMPLES {
                out.examples.push(format!(
                    "object #{i} (shard {}): no metadata call at all",
                    shard_name(s)
                ));
            }
        }
    }
    out.shards = rows;
    out
}

impl Report {
    /// The Shards section: one row per shard of each sharded run.
    pub(crate) fn markdown_shards(&self, out: &mut String) {
        let runs: Vec<(usize, &Shards)> = self
            .runs
            .iter()
            .filter_map(|r| Some((r.objects, r.bulk.as_ref()?.shards.as_ref()?)))
            .collect();
        if runs.is_empty() {
            return;
        }
        let _ = write!(
            out,
            "\nShards (label `{LABEL}`; from the emulator's request log):"
        );
        for (n, s) in &runs {
            let _ = write!(
                out,
                " N={n}: {} shards, {} violations, {} objects without a call{}.",
                s.shards.len(),
                s.violations,
                s.unreconciled,
                if s.proven() {
                    " — every object reconciled by exactly one shard"
                } else {
                    " — NOT PROVEN"
                }
            );
        }
        let _ = writeln!(out);
        let rows = runs.iter().flat_map(|(n, s)| {
            s.shards.iter().map(move |r| {
                format!(
                    "| {n} | {} | `{}` | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {} |",
                    r.name,
                    r.selector,
                    r.objects,
                    r.reconciled,
                    r.calls,
                    r.metadata_calls,
                    r.cpu_converge_s,
                    r.cpu_total_s,
                    r.rss_peak_mib,
                    r.foreign_calls,
                )
            })
        });
        table(
            out,
            "| N | shard | selector | objects | reconciled | ZITADEL calls | metadata calls | CPU s converge | CPU s total | peak RSS MiB | calls on other shards' objects (violations) |",
            "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            rows.collect(),
        );
    }

    /// One CSV row per N and shard (`None` without sharded runs).
    pub(crate) fn shards_csv(&self) -> Option<String> {
        let mut out = String::from(
            "objects,shard,selector,caller,shard_objects,reconciled,calls,metadata_calls,foreign_calls,cpu_converge_s,cpu_total_s,rss_peak_mib,run_violations,run_unreconciled\n",
        );
        let mut any = false;
        for r in &self.runs {
            let Some(s) = r.bulk.as_ref().and_then(|b| b.shards.as_ref()) else {
                continue;
            };
            any = true;
            for x in &s.shards {
                let _ = writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},{},{:.3},{:.3},{:.1},{},{}",
                    r.objects,
                    x.name,
                    x.selector,
                    x.caller,
                    x.objects,
                    x.reconciled,
                    x.calls,
                    x.metadata_calls,
                    x.foreign_calls,
                    x.cpu_converge_s,
                    x.cpu_total_s,
                    x.rss_peak_mib,
                    s.violations,
                    s.unreconciled,
                );
            }
        }
        any.then_some(out)
    }

    /// Fails when a sharded run did not prove that every object was reconciled by exactly one
    /// shard (a correctness failure, not a figure).
    pub fn check_shards(&self) -> Result<()> {
        for r in &self.runs {
            let Some(s) = r.bulk.as_ref().and_then(|b| b.shards.as_ref()) else {
                continue;
            };
            if !s.proven() {
                bail!(
                    "N={}: sharding violated: {} objects called by a shard other than theirs (or an unknown caller), {} objects with no call at all; e.g. {}",
                    r.objects,
                    s.violations,
                    s.unreconciled,
                    s.examples.join("; ")
                );
            }
        }
        Ok(())
    }
}

/// The stderr summary of a sharded run.
pub(crate) fn summary(n: usize, s: &Shards) -> String {
    let per: Vec<String> = s
        .shards
        .iter()
        .map(|r| {
            format!(
                "{}: {} objects, {} calls, {:.1} CPU-s, {:.1} MiB peak",
                r.name, r.objects, r.calls, r.cpu_total_s, r.rss_peak_mib
            )
        })
        .collect();
    let verdict = if s.proven() {
        "every object reconciled by exactly one shard, its own".to_owned()
    } else {
        format!(
            "SHARDING VIOLATED: {} objects called by another shard, {} with no call",
            s.violations, s.unreconciled
        )
    };
    format!(
        "bench: N={n}: {} shards: {verdict} ({})",
        s.shards.len(),
        per.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::Operation;

    fn call(objects: &[Object], i: usize, caller: Option<&str>) -> RecordedRequest {
        let o = &objects[i];
        let (path, org) = match o.kind {
            workload::TargetKind::Org => (
                "/management/v1/metadata/_search".to_owned(),
                Some(o.org_id.clone()),
            ),
            workload::TargetKind::User => (
                format!("/management/v1/users/{}/metadata/_search", o.user_id),
                Some(o.org_id.clone()),
            ),
        };
        RecordedRequest {
            method: "POST".into(),
            path,
            operation: Operation::ListOrgMetadata,
            org_header: org,
            status: 200,
            body: Value::Null,
            received_unix_micros: 0,
            response_body: Value::Null,
            response_content_type: String::new(),
            caller: caller.map(str::to_owned),
        }
    }

    #[test]
    fn pairs_go_round_robin() {
        let shards: Vec<usize> = (0..8).map(|i| shard_of(i, 2)).collect();
        assert_eq!(shards, [0, 0, 1, 1, 0, 0, 1, 1]);
        assert_eq!(shard_of(5, 1), 0);
    }

    #[test]
    fn the_proof_counts_foreign_missing_and_unknown_callers() {
        let objects = workload::objects(8, 1);
        let targets = Targets::new(&objects);
        let users = [shard_user(0), shard_user(1)];
        let users: Vec<&str> = users.iter().map(String::as_str).collect();
        let mut log: Vec<RecordedRequest> = (0..8)
            .map(|i| call(&objects, i, Some(users[shard_of(i, 2)])))
            .collect();
        let clean = prove(&log, &targets, 8, &users);
        assert!(clean.proven(), "{clean:?}");
        assert_eq!(clean.shards[0].reconciled, 4);
        assert_eq!(clean.shards[1].metadata_calls, 4);

        // Object 2 (shard s1) also listed by s0; object 5 (s0) by a token naming no shard;
        // object 7 never called.
        log.push(call(&objects, 2, Some(users[0])));
        log.push(call(&objects, 5, None));
        log.retain(|r| targets.object_of(r) != Some(7) || r.caller.is_none());
        let bad = prove(&log, &targets, 8, &users);
        assert_eq!(bad.violations, 2, "{bad:?}");
        assert_eq!(bad.unreconciled, 1, "{bad:?}");
        assert_eq!(bad.unknown_caller_calls, 1);
        assert_eq!(bad.shards[0].foreign_calls, 1);
        assert!(!bad.proven());
        assert_eq!(bad.examples.len(), 3, "{:?}", bad.examples);
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
    fn a_violation_fails_the_check() {
        let proof = |violations| Shards {
            violations,
            examples: vec!["object #2 (shard s1) was also called by s0".into()],
            ..Shards::default()
        };
        let report = |s: Shards| Report {
            runs: vec![super::super::RunReport {
                objects: 8,
                bulk: Some(super::super::BulkRun {
                    shards: Some(s),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(report(proof(0)).check_shards().is_ok());
        let err = report(proof(1)).check_shards().expect_err("a violation");
        let msg = format!("{err:#}");
        assert!(msg.contains("sharding violated"), "{msg}");
        assert!(msg.contains("object #2"), "{msg}");
        assert!(report(proof(1)).markdown().contains("NOT PROVEN"));
    }

    #[test]
    fn shard_logs_are_named_after_the_shard() {
        let p = log_for(Path::new("/x/operator-40-restart.log"), "s1");
        assert_eq!(p, Path::new("/x/operator-40-restart-s1.log"));
    }
}
