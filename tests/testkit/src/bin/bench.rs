//! The performance benchmark (`make bench`): the real operator binary against a real
//! kube-apiserver and the ZITADEL emulator with a per-call latency, at several object counts, with
//! a per-key baseline in the same run. Prints Markdown tables and writes `bench.json`,
//! `bench.csv` and `bench.md` (plus the operator logs) under `target/bench/`.
//!
//! ```text
//! cargo build --release --workspace --bins && ./target/release/bench \
//!     [--objects 100,1000,10000] [--keys 10] [--latency-ms 20] [--concurrency N] [--rps 0] \
//!     [--strategy bulk|per-key|both] [--resync-secs 60] [--resyncs 3]
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use zmo_testkit::bench::{self, Options, Strategy};
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
        command,
    };

    eprintln!("bench: starting kube-apiserver + etcd…");
    let cp = ControlPlane::start().await?;
    let crds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds");
    cp.install_crds(&crds).await?;
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
    Ok(())
}
