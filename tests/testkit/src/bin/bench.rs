//! The performance benchmark (`make bench`): the real operator binary against a real
//! kube-apiserver and the ZITADEL emulator with a per-call latency, at several object counts, with
//! a per-key baseline in the same run. Prints Markdown tables and writes `bench.json`,
//! `bench.csv` and `bench.md` (plus the operator logs) under `target/bench/`.
//!
//! ```text
//! cargo build --release --workspace --bins && ./target/release/bench \
//!     [--objects 100,1000,10000] [--keys 10] [--latency-ms 20] [--concurrency N] [--rps 0] \
//!     [--strategy bulk|per-key|both] [--resync-secs 60] [--resyncs 3] \
//!     [--settle-secs 0] [--steady-secs S] [--event-poll-secs 15] \
//!     [--drift-edits 100] [--drift-timeout-secs S] [--shards 1] [--floor]
//! ./target/release/bench --write-costs 2000     # what each kind of write costs the apiserver
//! ./target/release/bench --large-target         # issue 16: list calls per listing, big target
//! ```
//!
//! `--write-costs` and `--large-target` replace the default runs (give `--objects` too to run
//! both). `--operator-prefix 'heaptrack -o FILE'` and `--operator-env KEY=VALUE` run the operator
//! under a profiler or with allocator settings. `--floor` adds the control plane's floor at each
//! N: the same creates answered by a stand-in that only `PUT`s each status (no operator).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use zmo_testkit::bench::{self, LargeOptions, Options, Strategy, WriteCostOptions};
use zmo_testkit::controlplane::ControlPlane;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum StrategyArg {
    /// The operator only.
    Bulk,
    /// The per-key baseline only.
    PerKey,
    /// Both, plus ratios.
    Both,
}

/// Benchmark of zitadel-metadata-operator (bulk diff sync) against a per-key baseline.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Args {
    /// Object counts (half OrgMetadata, half UserMetadata), one run each.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    objects: Vec<usize>,
    /// Metadata keys per object.
    #[arg(long, default_value_t = 10)]
    keys: usize,
    /// Emulator latency per ZITADEL call, milliseconds.
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// The operator's --max-concurrent-reconciles (per kind); default: the operator's default.
    #[arg(long)]
    concurrency: Option<u16>,
    /// ZITADEL requests-per-second budget for both strategies (the operator's --zitadel-rps);
    /// 0 = unlimited.
    #[arg(long, default_value_t = 0)]
    rps: u32,
    /// Which strategies to run.
    #[arg(long, value_enum, default_value = "both")]
    strategy: StrategyArg,
    /// The operator's --resync-interval, seconds (its default is 300; 60 keeps the steady-state
    /// phase short).
    #[arg(long, default_value_t = 60)]
    resync_secs: u64,
    /// Resync intervals observed for the steady state (0: skip the steady state).
    #[arg(long, default_value_t = 3)]
    resyncs: u32,
    /// Length of the steady window, seconds (default: --resyncs × --resync-secs).
    #[arg(long)]
    steady_secs: Option<u64>,
    /// Wait this many seconds more before the steady window starts (e.g. until the operator
    /// has read the event log of the creation, in Events mode).
    #[arg(long, default_value_t = 0)]
    settle_secs: u64,
    /// The operator's --event-poll-interval, seconds (Events mode: `--operator-env
    /// DRIFT_DETECTION=auto`); default: not passed, i.e. EVENT_POLL_INTERVAL from
    /// --operator-env or the operator's default (15 s). The steady state reports ZITADEL calls
    /// per poll interval of this length.
    #[arg(long)]
    event_poll_secs: Option<f64>,
    /// After the edit: edit this many objects' keys directly in ZITADEL (out of band; half
    /// organizations, half users, a fixed-seed pick) and measure each one's time until the
    /// operator put it back (0: skip; capped at --objects).
    #[arg(long, default_value_t = 100)]
    drift_edits: usize,
    /// Give up waiting for the drift repairs after this many seconds (reported, not an error);
    /// default: 2 × the longer of the resync and event poll intervals, plus 30.
    #[arg(long)]
    drift_timeout_secs: Option<u64>,
    /// After the steady state and the edit, restart the operator and observe this many resync
    /// intervals: how the new process's first pass and its resyncs are spread (0: skip).
    #[arg(long, default_value_t = 0)]
    restart_resyncs: u32,
    /// Object creations in flight at once.
    #[arg(long, default_value_t = 32)]
    create_concurrency: usize,
    /// Give up on an N when not converged after this many seconds.
    #[arg(long, default_value_t = 1800)]
    timeout_secs: u64,
    /// The operator binary (default: `zitadel-metadata-operator` next to this binary).
    #[arg(long)]
    operator: Option<PathBuf>,
    /// Output folder (default: `target/bench`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run the write-cost experiment on this many objects (no operator): the control-plane CPU
    /// of each kind of write (finalizer patch, status SSA vs merge patch vs no-op, Event, watch
    /// fan-out). Writes `write-costs.{json,csv,md}`.
    #[arg(long)]
    write_costs: Option<usize>,
    /// Requests in flight at once in the write-cost experiment.
    #[arg(long, default_value_t = 32)]
    write_concurrency: usize,
    /// Extra watches per kind in the write-cost experiment's fan-out step.
    #[arg(long, default_value_t = 4)]
    watchers: usize,
    /// Run the large-target benchmark (issue 16): create, steady state and deletion of one
    /// object on an organization holding many foreign keys, in key order and shuffled order;
    /// reports list calls per listing. Writes `large-target.{json,csv,md}`.
    #[arg(long)]
    large_target: bool,
    /// Large target: keys the organization holds that the operator does not manage.
    #[arg(long, default_value_t = 1500)]
    foreign_keys: usize,
    /// Large target: bytes per foreign value.
    #[arg(long, default_value_t = 512)]
    foreign_value_bytes: usize,
    /// Large target: managed keys with a large value from a Secret (plus one small inline key).
    #[arg(long, default_value_t = 8)]
    large_values: usize,
    /// Large target: bytes per large value (450 KiB).
    #[arg(long, default_value_t = 460_800)]
    large_value_bytes: usize,
    /// Large target: give up on a phase (create, deletion) after this many seconds.
    #[arg(long, default_value_t = 120)]
    phase_timeout_secs: u64,
    /// Do not install `deploy/admission/cleanup-finalizer.yaml` (the MutatingAdmissionPolicy
    /// that adds the cleanup finalizer at create): the operator then adds it with a patch of its
    /// own, as on clusters without the policy.
    #[arg(long)]
    no_finalizer_policy: bool,
    /// Also measure the control plane's floor at each N (after the other strategies): the same
    /// creates with a stand-in in the bench that only `PUT`s each new object's status (no
    /// operator, no ZITADEL): the fastest any operator that reports status could converge here,
    /// and per-key baseline ÷ floor, the best ratio such an operator can reach on this machine.
    #[arg(long)]
    floor: bool,
    /// Run the operator under this command (split on spaces), e.g. `heaptrack -o /tmp/op`.
    #[arg(long)]
    operator_prefix: Option<String>,
    /// Extra environment of the operator process, `KEY=VALUE` (repeatable), e.g.
    /// `MALLOC_ARENA_MAX=2`.
    #[arg(long)]
    operator_env: Vec<String>,
    /// Run the operator as this many shards (processes with `--watch-label-selector
    /// zmo-bench/shard=sI`, each with its own token) and prove from the emulator's request log
    /// that every object was reconciled by exactly one shard, its own; a violation fails the
    /// bench after the report is written. 1: one process, no labels.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    shards: u16,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let exe = std::env::current_exe()?;
    let bin_dir = exe.parent().context("binary folder")?;
    let operator = match args.operator {
        Some(p) => p,
        None => bin_dir.join("zitadel-metadata-operator"),
    };
    if !operator.exists() {
        bail!(
            "operator binary not found at {} (run `cargo build --release --workspace --bins`)",
            operator.display()
        );
    }
    if !bin_dir.ends_with("release") {
        eprintln!(
            "bench: warning: {} is not a release build; numbers will not be representative",
            operator.display()
        );
    }
    let out = match args.out {
        Some(p) => p,
        // target/<profile>/bench -> target/bench
        None => bin_dir
            .parent()
            .map_or_else(|| PathBuf::from("target/bench"), |t| t.join("bench")),
    };
    let command = std::env::args()
        .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
        .collect::<Vec<_>>()
        .join(" ");
    let operator_prefix: Vec<String> = args
        .operator_prefix
        .as_deref()
        .map(|p| p.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let mut operator_env = Vec::new();
    for kv in &args.operator_env {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--operator-env {kv:?}: expected KEY=VALUE");
        };
        operator_env.push((k.to_owned(), v.to_owned()));
    }
    if args.shards > 1 && !operator_prefix.is_empty() {
        bail!("--operator-prefix runs one profiler per process: not with --shards > 1");
    }
    let modes = args.write_costs.is_some() || args.large_target;
    let objects_given = std::env::args().any(|a| a == "--objects" || a.starts_with("--objects="));
    let opts = Options {
        operator,
        objects: args.objects,
        keys: args.keys,
        latency: Duration::from_millis(args.latency_ms),
        concurrency: args.concurrency,
        rps: args.rps,
        strategy: match args.strategy {
            StrategyArg::Bulk => Strategy::Bulk,
            StrategyArg::PerKey => Strategy::PerKey,
            StrategyArg::Both => Strategy::Both,
        },
        resync: Duration::from_secs(args.resync_secs.max(1)),
        resyncs: args.resyncs,
        create_concurrency: args.create_concurrency,
        converge_timeout: Duration::from_secs(args.timeout_secs),
        out_dir: out.clone(),
        command: command.clone(),
        operator_prefix: operator_prefix.clone(),
        operator_env: operator_env.clone(),
        restart_resyncs: args.restart_resyncs,
        finalizer_policy: !args.no_finalizer_policy,
        event_poll: match args.event_poll_secs {
            Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
            Some(s) => bail!("--event-poll-secs {s}: expected a positive number of seconds"),
            None => None,
        },
        settle: Duration::from_secs(args.settle_secs),
        steady: args.steady_secs.map(Duration::from_secs),
        drift_edits: args.drift_edits,
        drift_timeout: args.drift_timeout_secs.map(Duration::from_secs),
        shards: usize::from(args.shards),
        floor: args.floor,
    };

    eprintln!("bench: starting kube-apiserver + etcd…");
    let cp = ControlPlane::start().await?;
    let crds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds");
    cp.install_crds(&crds).await?;
    if let Some(objects) = args.write_costs {
        let report = bench::writecost_run(
            &cp,
            &WriteCostOptions {
                objects,
                keys: args.keys,
                concurrency: args.write_concurrency,
                watchers: args.watchers,
                idle: Duration::from_secs(10),
                out_dir: out.clone(),
                command: command.clone(),
            },
        )
        .await?;
        publish(&report.date, &report.command, &report.markdown(), || {
            report.write(&out)
        })?;
    }
    if args.large_target {
        let report = bench::large_run(
            &cp,
            &LargeOptions {
                operator: opts.operator.clone(),
                foreign_keys: args.foreign_keys,
                foreign_value_bytes: args.foreign_value_bytes,
                large_values: args.large_values,
                large_value_bytes: args.large_value_bytes,
                latency: opts.latency,
                resync: opts.resync,
                resyncs: opts.resyncs.max(1),
                phase_timeout: Duration::from_secs(args.phase_timeout_secs),
                out_dir: out.clone(),
                command: command.clone(),
                operator_prefix,
                operator_env,
            },
        )
        .await?;
        publish(&report.date, &report.command, &report.markdown(), || {
            report.write(&out)
        })?;
    }
    if modes && !objects_given {
        return Ok(());
    }
    let report = bench::run(&cp, &opts).await?;
    println!(
        "\n{} — {} CPUs, load {:.1} → {:.1}, other rustc processes {} → {}\n`{}`\n",
        report.date,
        report.machine.cpus,
        report.machine.load_start,
        report.machine.load_end,
        report.machine.other_rustc_start,
        report.machine.other_rustc_end,
        report.command
    );
    println!("{}", report.markdown());
    for path in report.write(&out)? {
        println!("wrote {}", path.display());
    }
    // A sharded run that did not prove its split is a correctness failure, not a figure.
    report.check_shards()?;
    Ok(())
}

/// Prints a report's Markdown under its date and command, then writes its files (`write`) and
/// prints their paths.
fn publish(
    date: &str,
    command: &str,
    markdown: &str,
    write: impl FnOnce() -> anyhow::Result<Vec<PathBuf>>,
) -> anyhow::Result<()> {
    println!("\n{date} — `{command}`\n\n{markdown}");
    for path in write()? {
        println!("wrote {}", path.display());
    }
    Ok(())
}
