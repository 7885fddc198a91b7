//! The proof of a sharded run, from the emulator's request log: who called which object's
//! target; the Shards section of the report; the check that fails the bench on a violation.

use std::fmt::Write as _;

use anyhow::{Result, bail};
use serde::Serialize;

use super::{LABEL, shard_name, shard_of};
use crate::bench::report::{Report, table};
use crate::bench::workload::Targets;
use crate::emulator::RecordedRequest;

/// Violations described in the report (the counts cover all).
const EXAMPLES: usize = 5;

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
pub(super) fn prove(
    requests: &[RecordedRequest],
    targets: &Targets,
    n: usize,
    users: &[&str],
) -> Shards {
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
    use crate::bench::shards::shard_user;
    use crate::bench::workload::{self, Object};
    use crate::emulator::Operation;
    use serde_json::Value;

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
    fn a_violation_fails_the_check() {
        let proof = |violations| Shards {
            violations,
            examples: vec!["object #2 (shard s1) was also called by s0".into()],
            ..Shards::default()
        };
        let report = |s: Shards| Report {
            runs: vec![crate::bench::RunReport {
                objects: 8,
                bulk: Some(crate::bench::BulkRun {
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
}
