//! Standalone ZITADEL Management API emulator for demos and manual testing.
//!
//! ```text
//! zitadel-emulator [--listen 127.0.0.1:8080] [--seed-demo true|false] [--profile v4.x]
//! ```
//!
//! Prints the base URL and the demo token, then serves until Ctrl-C.

use std::net::SocketAddr;

use clap::{ArgAction, Parser};
use tracing_subscriber::EnvFilter;
use zmo_testkit::emulator::{DEMO_ADMIN_TOKEN, Emulator, Profile};

/// Stateful emulator of the ZITADEL Management API (metadata endpoints and user/org lookups).
#[derive(Debug, Parser)]
#[command(name = "zitadel-emulator", version)]
struct Args {
    /// Address to listen on.
    #[arg(
        long,
        default_value = "127.0.0.1:8080",
        env = "ZITADEL_EMULATOR_LISTEN"
    )]
    listen: SocketAddr,
    /// Seed the demo orgs (Acme, Globex), users (alice, bob) and the IAM-owner token.
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    seed_demo: bool,
    /// ZITADEL version line to imitate: v3, v4.0, v4.x, main-2026 or v5.
    #[arg(long, default_value = "main-2026", env = "ZITADEL_EMULATOR_PROFILE")]
    profile: Profile,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let emulator = Emulator::start_on(args.listen).await?;
    emulator.set_profile(args.profile);
    if args.seed_demo {
        emulator.seed_demo();
    }
    println!(
        "ZITADEL emulator ({}) listening on {}",
        args.profile,
        emulator.url()
    );
    if args.seed_demo {
        println!("demo token (IAM owner, org Acme): {DEMO_ADMIN_TOKEN}");
    } else {
        println!("no demo data seeded: no org, user or token exists");
    }
    println!("state: {}/_emulator/state", emulator.url());
    tokio::signal::ctrl_c().await?;
    println!("shutting down");
    emulator.shutdown().await;
    Ok(())
}
