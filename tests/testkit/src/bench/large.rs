//! The large-target benchmark (`bench --large-target`, issue 16): one organization that already
//! holds many keys the operator does not manage ("foreign" keys), and one `OrgMetadata` declaring
//! a few keys, most of them large values read from Secrets. It runs the object's create, a steady
//! state of a few resyncs, and its deletion against the real operator binary, once with the
//! emulator's lists in key order and once in a new random order per request
//! ([`ListOrder::Shuffled`]), and reports per phase: wall time, ZITADEL calls, and how many list
//! calls each listing took (a listing starts at offset 0; a retry of a refused page at the same
//! offset belongs to the same listing), with the page sizes asked for and the pages refused for
//! their size (429, code 8, `message larger than max`). It also checks the outcome: the managed
//! values exact after create, nothing rewritten at steady state, exactly the managed keys removed
//! on deletion and the foreign keys untouched.
//!
//! A phase that does not finish within the phase timeout is reported as such (with the calls it
//! made so far) and the run goes on.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use serde::Serialize;
use serde_json::{Value, json};

use super::report::Calls;
use super::tracker::is_ready;
use super::workload::{CallKind, TOKEN};
use super::{Machine, api_resource, process};
use crate::controlplane::ControlPlane;
use crate::emulator::{Emulator, Fault, ListOrder, RecordedRequest, TokenGrant};

const ORG: &str = "310000000000000001";
const NAME: &str = "large-target";
/// The gRPC message limit behind ZITADEL's REST gateway.
const MAX_MESSAGE: f64 = 4.0 * 1024.0 * 1024.0;
/// ZITADEL's largest list page.
const MAX_PAGE: f64 = 1000.0;

/// What the large-target run does.
#[derive(Clone, Debug)]
pub struct LargeOptions {
    /// The operator binary.
    pub operator: PathBuf,
    /// Keys the organization holds that the operator does not manage.
    pub foreign_keys: usize,
    /// Bytes of each foreign value.
    pub foreign_value_bytes: usize,
    /// Managed keys with a large value from a Secret.
    pub large_values: usize,
    /// Bytes of each large value.
    pub large_value_bytes: usize,
    /// Emulator latency per call.
    pub latency: Duration,
    /// The operator's `--resync-interval`.
    pub resync: Duration,
    /// Resync intervals observed for the steady state.
    pub resyncs: u32,
    /// Give up on a phase after this long.
    pub phase_timeout: Duration,
    /// Where operator logs and results go.
    pub out_dir: PathBuf,
    /// The command line, for the report.
    pub command: String,
    /// See [`super::Options::operator_prefix`].
    pub operator_prefix: Vec<String>,
    /// See [`super::Options::operator_env`].
    pub operator_env: Vec<(String, String)>,
}

/// One phase (create, steady, delete) in one row order.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LargePhase {
    /// `create`, `steady`, `delete`.
    pub phase: String,
    /// Whether it finished within the phase timeout (steady: always).
    pub finished: bool,
    /// Wall time: apply/delete to Ready/gone, or the observed window, seconds.
    pub wall_s: f64,
    /// ZITADEL calls in the phase.
    pub calls: Calls,
    /// Listings (a list starting at offset 0).
    pub listings: u64,
    /// List calls per listing, mean.
    pub list_calls_per_listing: f64,
    /// List calls of the longest listing.
    pub max_list_calls_per_listing: u64,
    /// Pages refused for their size (429 `message larger than max`).
    pub refused_pages: u64,
    /// Page sizes asked for: limit → list calls.
    pub page_limits: BTreeMap<u64, u64>,
    /// Wall time of one listing (first call sent to last answer), mean seconds.
    pub listing_s: f64,
}

/// Both row orders' results.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LargeOrderRun {
    /// `key order` or `shuffled`.
    pub order: String,
    /// create, steady, delete.
    pub phases: Vec<LargePhase>,
    /// After create: every managed value exact in ZITADEL.
    pub values_exact: bool,
    /// Managed keys still in ZITADEL after the deletion phase (0 expected).
    pub managed_keys_left: usize,
    /// Foreign keys unchanged at the end (all of them expected).
    pub foreign_keys_intact: usize,
    /// Metadata writes at steady state (0 expected).
    pub steady_writes: u64,
    /// Operator peak RSS over the run, MiB.
    pub operator_peak_rss_mib: f64,
}

/// The large-target run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LargeReport {
    /// UTC start time, RFC 3339.
    pub date: String,
    /// The command line.
    pub command: String,
    /// The machine.
    pub machine: Machine,
    /// Foreign keys.
    pub foreign_keys: usize,
    /// Bytes per foreign value.
    pub foreign_value_bytes: usize,
    /// Managed keys with large values (plus one small inline key).
    pub large_values: usize,
    /// Bytes per large value.
    pub large_value_bytes: usize,
    /// Emulator latency, ms.
    pub latency_ms: u64,
    /// `--resync-interval`, seconds.
    pub resync_s: f64,
    /// Issue 16's bound on the calls of one listing: ceil(keys / 1000) + ceil(bytes / 4 MiB).
    pub bound_calls_per_listing: u64,
    /// One run per row order.
    pub runs: Vec<LargeOrderRun>,
}

/// A value of `len` printable bytes, different per `seed`.
fn value(len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|i| b'a' + ((i.wrapping_mul(7) + seed.wrapping_mul(13) + i / 26) % 26) as u8)
        .collect()
}

fn foreign_key(i: usize) -> String {
    format!("ext-{i:05}")
}

fn large_key(i: usize) -> String {
    format!("bench-blob-{i}")
}

const PLAIN_KEY: &str = "bench-plain";
const PLAIN_VALUE: &str = "a small inline value";

/// `query.offset` / `pagination.offset` (and `limit`) of a list request, numbers or strings.
fn page(body: &Value) -> (u64, u64) {
    let q = body
        .get("query")
        .or_else(|| body.get("pagination"))
        .unwrap_or(&Value::Null);
    let num = |v: Option<&Value>| match v {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    };
    (num(q.get("offset")), num(q.get("limit")))
}

/// Splits a phase's calls into listings and summarises them.
fn phase_stats(
    phase: &str,
    finished: bool,
    wall: Duration,
    requests: &[RecordedRequest],
    latency: Duration,
) -> LargePhase {
    let mut calls = Calls::default();
    let mut listings: Vec<(u64, u64, u64)> = Vec::new(); // (calls, first µs, last µs)
    let mut page_limits: BTreeMap<u64, u64> = BTreeMap::new();
    let mut refused = 0;
    let mut previous_ok = true;
    for r in requests {
        let kind = CallKind::of(r.operation);
        calls.add(kind, r.status);
        if kind != CallKind::List {
            continue;
        }
        let (offset, limit) = page(&r.body);
        *page_limits.entry(limit).or_default() += 1;
        let ok = (200..300).contains(&r.status);
        if !ok && r.status == 429 {
            refused += 1;
        }
        match listings.last_mut() {
            Some(l) if !(offset == 0 && previous_ok) => {
                l.0 += 1;
                l.2 = r.received_unix_micros;
            }
            _ => listings.push((1, r.received_unix_micros, r.received_unix_micros)),
        }
        previous_ok = ok;
    }
    let n = listings.len() as u64;
    let total: u64 = listings.iter().map(|l| l.0).sum();
    let listing_s = if n == 0 {
        0.0
    } else {
        listings
            .iter()
            .map(|l| (l.2 - l.1) as f64 / 1e6 + latency.as_secs_f64())
            .sum::<f64>()
            / n as f64
    };
    LargePhase {
        phase: phase.to_owned(),
        finished,
        wall_s: wall.as_secs_f64(),
        calls,
        listings: n,
        list_calls_per_listing: if n == 0 { 0.0 } else { total as f64 / n as f64 },
        max_list_calls_per_listing: listings.iter().map(|l| l.0).max().unwrap_or(0),
        refused_pages: refused,
        page_limits,
        listing_s,
    }
}

/// Polls `until` every 100 ms for at most `timeout`; returns whether it came true.
async fn wait_for<F, Fut>(timeout: Duration, mut until: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if until().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the large-target benchmark in key order and in shuffled order.
pub async fn run(cp: &ControlPlane, opts: &LargeOptions) -> Result<LargeReport> {
    let keys = opts.foreign_keys + opts.large_values + 1;
    let bytes = opts.foreign_keys * (opts.foreign_value_bytes + 16)
        + opts.large_values * (opts.large_value_bytes + 16);
    let mut report = LargeReport {
        date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        command: opts.command.clone(),
        machine: Machine::at_start(),
        foreign_keys: opts.foreign_keys,
        foreign_value_bytes: opts.foreign_value_bytes,
        large_values: opts.large_values,
        large_value_bytes: opts.large_value_bytes,
        latency_ms: opts.latency.as_millis() as u64,
        resync_s: opts.resync.as_secs_f64(),
        bound_calls_per_listing: ((keys as f64 / MAX_PAGE).ceil()
            + (bytes as f64 / MAX_MESSAGE).ceil()) as u64,
        runs: Vec::new(),
    };
    std::fs::create_dir_all(&opts.out_dir)?;
    for (label, order) in [
        ("key order", ListOrder::Sorted),
        ("shuffled", ListOrder::Shuffled { seed: 16 }),
    ] {
        eprintln!("bench: large target, {label}");
        report.runs.push(one_order(cp, opts, label, order).await?);
    }
    report.machine.finish();
    Ok(report)
}

/// The emulator of one run: the target organization with `foreign_keys` keys it does not
/// manage, listing in `order`, with the per-call latency.
async fn large_emulator(opts: &LargeOptions, order: ListOrder) -> Result<Emulator> {
    let emu = Emulator::start().await?;
    emu.record_answer_bodies(false);
    emu.add_org(ORG, "Bench large target");
    emu.add_token(TOKEN, TokenGrant::iam_owner(ORG));
    for i in 0..opts.foreign_keys {
        emu.put_org_metadata(ORG, &foreign_key(i), &value(opts.foreign_value_bytes, i));
    }
    emu.set_list_order(order);
    if !opts.latency.is_zero() {
        emu.inject(Fault::latency(opts.latency));
    }
    Ok(emu)
}

/// The Secrets `large-<i>` holding the large values.
async fn create_large_secrets(client: &kube::Client, ns: &str, opts: &LargeOptions) -> Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    for i in 0..opts.large_values {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(format!("large-{i}")),
                ..ObjectMeta::default()
            },
            data: Some(
                [(
                    "value".to_owned(),
                    ByteString(value(opts.large_value_bytes, 100_000 + i)),
                )]
                .into(),
            ),
            ..Secret::default()
        };
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .with_context(|| format!("creating Secret large-{i}"))?;
    }
    Ok(())
}

/// The large-target object: one plain key and the large values from their Secrets.
fn large_manifest(ns: &str, opts: &LargeOptions) -> Value {
    let mut entries = vec![json!({"key": PLAIN_KEY, "value": PLAIN_VALUE})];
    for i in 0..opts.large_values {
        entries.push(json!({"key": large_key(i),
            "valueFrom": {"secretKeyRef": {"name": format!("large-{i}"), "key": "value"}}}));
    }
    json!({
        "apiVersion": "metadata.zitadel-operator.dev/v1alpha1",
        "kind": "OrgMetadata",
        "metadata": {"name": NAME, "namespace": ns},
        "spec": {"organizationId": ORG, "metadata": entries},
    })
}

/// One run of the large target with the emulator listing in `order`: create, steady state, delete.
async fn one_order(
    cp: &ControlPlane,
    opts: &LargeOptions,
    label: &str,
    order: ListOrder,
) -> Result<LargeOrderRun> {
    let client = cp.client().await?;
    let ns = cp.create_namespace("bench-large").await?;
    let emu = large_emulator(opts, order).await?;

    create_large_secrets(&client, &ns, opts).await?;

    let work = tempfile::tempdir()?;
    let token_file = work.path().join("token");
    std::fs::write(&token_file, TOKEN)?;
    let slug = label.replace(' ', "-");
    let operator = process::Operator::start(&process::OperatorArgs {
        binary: opts.operator.clone(),
        zitadel_url: emu.url(),
        token_file,
        kubeconfig: cp.kubeconfig_path().to_path_buf(),
        namespace: ns.clone(),
        resync: opts.resync,
        concurrency: None,
        rps: 0,
        event_poll: None,
        log: opts.out_dir.join(format!("operator-large-{slug}.log")),
        prefix: opts.operator_prefix.clone(),
        env: opts.operator_env.clone(),
    })
    .await?;

    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &api_resource("OrgMetadata", "orgmetadatas"),
    );
    let manifest = large_manifest(&ns, opts);
    let mut run = LargeOrderRun {
        order: label.to_owned(),
        ..LargeOrderRun::default()
    };

    // Create.
    emu.clear_requests();
    let t = Instant::now();
    api.create(&PostParams::default(), &serde_json::from_value(manifest)?)
        .await
        .context("creating the large-target object")?;
    let ready = wait_for(opts.phase_timeout, || {
        let api = api.clone();
        async move {
            api.get_opt(NAME).await.ok().flatten().is_some_and(|o| {
                is_ready(
                    o.data.get("status").unwrap_or(&Value::Null),
                    o.metadata.generation.unwrap_or(0),
                )
            })
        }
    })
    .await;
    let wall = t.elapsed();
    // Let the reconcile that made it Ready finish its last call.
    tokio::time::sleep(Duration::from_millis(500)).await;
    run.phases.push(phase_stats(
        "create",
        ready,
        wall,
        &emu.requests(),
        opts.latency,
    ));
    let state = emu.org_metadata(ORG);
    run.values_exact = state.get(PLAIN_KEY).map(Vec::as_slice) == Some(PLAIN_VALUE.as_bytes())
        && (0..opts.large_values)
            .all(|i| state.get(&large_key(i)) == Some(&value(opts.large_value_bytes, 100_000 + i)));
    eprintln!(
        "bench: large target, {label}: create {} in {:.1} s",
        if ready { "Ready" } else { "NOT Ready" },
        wall.as_secs_f64()
    );

    // Steady state.
    emu.clear_requests();
    let t = Instant::now();
    tokio::time::sleep(opts.resync * opts.resyncs).await;
    let steady = phase_stats("steady", true, t.elapsed(), &emu.requests(), opts.latency);
    run.steady_writes = steady.calls.writes();
    run.phases.push(steady);

    // Delete.
    emu.clear_requests();
    let t = Instant::now();
    api.delete(NAME, &DeleteParams::default())
        .await
        .context("deleting the large-target object")?;
    let gone = wait_for(opts.phase_timeout, || {
        let api = api.clone();
        async move { matches!(api.get_opt(NAME).await, Ok(None)) }
    })
    .await;
    let wall = t.elapsed();
    run.phases.push(phase_stats(
        "delete",
        gone,
        wall,
        &emu.requests(),
        opts.latency,
    ));
    eprintln!(
        "bench: large target, {label}: delete {} in {:.1} s",
        if gone { "done" } else { "NOT done" },
        wall.as_secs_f64()
    );
    let state = emu.org_metadata(ORG);
    run.managed_keys_left = state
        .keys()
        .filter(|k| k.as_str() == PLAIN_KEY || k.starts_with("bench-blob-"))
        .count();
    run.foreign_keys_intact = (0..opts.foreign_keys)
        .filter(|i| state.get(&foreign_key(*i)) == Some(&value(opts.foreign_value_bytes, *i)))
        .count();
    run.operator_peak_rss_mib = operator
        .stats()
        .map_or(0.0, |s| s.peak_rss_kib as f64 / 1024.0);
    operator.stop().await?;
    emu.shutdown().await;
    Ok(run)
}

impl LargeReport {
    /// Markdown tables.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Target: {} foreign keys of {} B, plus 1 small inline key and {} keys of {} B from Secrets; {} ms per call, resync {:.0} s. Issue 16's bound per listing: {} calls.\n",
            self.foreign_keys,
            self.foreign_value_bytes,
            self.large_values,
            self.large_value_bytes,
            self.latency_ms,
            self.resync_s,
            self.bound_calls_per_listing
        );
        let _ = writeln!(
            out,
            "| order | phase | finished | wall s | ZITADEL calls (list / bulk set / bulk rm / other) | listings | list calls per listing (mean / max) | one listing s | pages refused (too large) | page sizes asked (limit × calls) |"
        );
        let _ = writeln!(out, "|---|---|---|---:|---|---:|---:|---:|---:|---|");
        for r in &self.runs {
            for p in &r.phases {
                let c = &p.calls;
                let limits: Vec<String> = p
                    .page_limits
                    .iter()
                    .rev()
                    .map(|(l, n)| format!("{l}×{n}"))
                    .collect();
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.1} | {} ({} / {} / {} / {}) | {} | {:.1} / {} | {:.1} | {} | {} |",
                    r.order,
                    p.phase,
                    if p.finished {
                        "yes"
                    } else {
                        "**no** (timeout)"
                    },
                    p.wall_s,
                    c.total(),
                    c.list,
                    c.bulk_set,
                    c.bulk_remove,
                    c.set + c.other,
                    p.listings,
                    p.list_calls_per_listing,
                    p.max_list_calls_per_listing,
                    p.listing_s,
                    p.refused_pages,
                    if limits.is_empty() {
                        "-".into()
                    } else {
                        limits.join(", ")
                    },
                );
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| order | managed values exact after create | metadata writes at steady state | managed keys left after delete | foreign keys intact | operator peak RSS MiB |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|");
        for r in &self.runs {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} of {} | {:.1} |",
                r.order,
                if r.values_exact { "yes" } else { "**no**" },
                r.steady_writes,
                r.managed_keys_left,
                r.foreign_keys_intact,
                self.foreign_keys,
                r.operator_peak_rss_mib,
            );
        }
        out
    }

    /// CSV: one row per order and phase.
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "order,phase,finished,wall_s,calls_total,calls_list,calls_bulk_set,calls_bulk_remove,calls_other,calls_errors,listings,list_calls_per_listing,max_list_calls_per_listing,listing_s,refused_pages,bound_calls_per_listing,values_exact,steady_writes,managed_keys_left,foreign_keys_intact\n",
        );
        for r in &self.runs {
            for p in &r.phases {
                let c = &p.calls;
                let _ = writeln!(
                    out,
                    "{},{},{},{:.3},{},{},{},{},{},{},{},{:.2},{},{:.3},{},{},{},{},{},{}",
                    r.order,
                    p.phase,
                    p.finished,
                    p.wall_s,
                    c.total(),
                    c.list,
                    c.bulk_set,
                    c.bulk_remove,
                    c.set + c.other,
                    c.errors,
                    p.listings,
                    p.list_calls_per_listing,
                    p.max_list_calls_per_listing,
                    p.listing_s,
                    p.refused_pages,
                    self.bound_calls_per_listing,
                    r.values_exact,
                    r.steady_writes,
                    r.managed_keys_left,
                    r.foreign_keys_intact,
                );
            }
        }
        out
    }

    /// Writes `large-target.{json,csv,md}` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        super::report::write_files(
            dir,
            "large-target",
            serde_json::to_string_pretty(self)?,
            self.csv(),
            format!("{} — `{}`\n\n{}", self.date, self.command, self.markdown()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::Operation;

    fn list(offset: u64, limit: u64, status: u16, at: u64) -> RecordedRequest {
        RecordedRequest {
            method: "POST".into(),
            path: "/management/v1/metadata/_search".into(),
            operation: Operation::ListOrgMetadata,
            org_header: Some(ORG.into()),
            status,
            body: json!({"query": {"offset": offset.to_string(), "limit": limit}}),
            received_unix_micros: at,
            response_body: Value::Null,
            response_content_type: String::new(),
            caller: None,
        }
    }

    #[test]
    fn listings_start_at_offset_zero_and_retries_belong_to_them() {
        let requests = vec![
            // Listing 1: page refused, retried smaller at the same offset, then two more pages.
            list(0, 1000, 429, 0),
            list(0, 100, 200, 1_000),
            list(100, 100, 200, 2_000),
            list(200, 100, 200, 3_000),
            // Listing 2: one page.
            list(0, 1000, 200, 10_000),
        ];
        let p = phase_stats(
            "steady",
            true,
            Duration::from_secs(1),
            &requests,
            Duration::ZERO,
        );
        assert_eq!(p.listings, 2);
        assert_eq!(p.calls.list, 5);
        assert_eq!(p.refused_pages, 1);
        assert_eq!(p.max_list_calls_per_listing, 4);
        assert!((p.list_calls_per_listing - 2.5).abs() < 1e-9);
        assert_eq!(p.page_limits, BTreeMap::from([(100, 3), (1000, 2)]));
        assert!((p.listing_s - 0.0015).abs() < 1e-9);
    }

    #[test]
    fn values_differ_per_seed_and_are_printable() {
        let a = value(1000, 1);
        assert_eq!(a.len(), 1000);
        assert!(a.iter().all(u8::is_ascii_lowercase));
        assert_ne!(a, value(1000, 2));
    }
}
