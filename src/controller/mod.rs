//! The controllers: one kube-runtime controller per kind (and per watched namespace), sharing a
//! [`Context`] with the connections, the value sources, an event recorder and per-object backoff
//! state; plus the connection probes.
//!
//! - [`run`](mod@run): assembly and the watches feeding each controller ([`watches`]).
//! - [`metadata`]: one reconcile of an `OrgMetadata` / `UserMetadata`, step by step.
//! - `instrument`: metrics around each reconcile, the retry policy after a failure.
//! - `probe`: the `ZitadelConnection` / `ClusterZitadelConnection` controllers, and their
//!   finalizers (`probe::lifecycle`).
//! - [`resync`]: one walker per controller re-checks synced objects, each at its phase of the
//!   re-check interval.
//! - [`usage`]: which objects hold which connection back from deletion.
//! - [`finalizers`]: the finalizers the operator keeps on connections and their Secrets.
//! - `token_secret`: the finalizer on the `--token-secret` Secret while objects use it.
//! - `default_connection`: the default connection's credential over its life (missing,
//!   rotated, revoked): `/readyz`, metric, logs, and re-queueing what a change can unblock.

mod context;
mod default_connection;
pub mod drift;
mod error;
pub mod finalizers;
mod index;
mod instrument;
pub mod metadata;
mod probe;
pub mod resync;
pub mod run;
mod token_secret;
pub mod usage;
pub mod watches;

pub use context::{Context, Settings, backoff_delay};
pub use default_connection::{FlagCredentials, Requeue};
pub use error::{CleanupError, Error};
pub use instrument::{error_policy, reconcile_instrumented};
pub use metadata::reconcile;
pub use run::{DefaultConnection, Hooks, KindParts, Namespaces, Shutdown, run, run_kind, run_with};
pub use watches::{NoTriggerBackoff, WatchBackoff, dependents, watch};

/// Finalizer that guards removal of managed keys on deletion.
pub const FINALIZER: &str = "metadata.zitadel-operator.dev/cleanup";
/// Field manager for server-side-apply status writes.
pub const FIELD_MANAGER: &str = "zitadel-metadata-operator";
/// kubectl's client-side-apply annotation (a copy of the object), dropped from the caches.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
