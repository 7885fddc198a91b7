//! The controllers: one kube-runtime controller per kind (and per watched namespace), sharing a
//! [`Context`] with the connections, the value sources, an event recorder and per-object backoff
//! state; plus the connection probes.
//!
//! - [`run`](mod@run): assembly and the watches feeding each controller ([`watches`]).
//! - [`metadata`]: one reconcile of an `OrgMetadata` / `UserMetadata`, step by step.
//! - `instrument`: metrics around each reconcile, the retry policy after a failure.
//! - `probe`: the `ZitadelConnection` / `ClusterZitadelConnection` controllers.

mod context;
mod error;
mod index;
mod instrument;
pub mod metadata;
mod probe;
pub mod run;
pub mod watches;

pub use context::{Context, Settings, backoff_delay};
pub use error::{CleanupError, Error};
pub use instrument::{error_policy, reconcile_instrumented};
pub use metadata::reconcile;
pub use run::{Hooks, KindParts, Namespaces, Shutdown, run, run_kind, run_with};
pub use watches::{NoTriggerBackoff, WatchBackoff, dependents, watch};

/// Finalizer that guards removal of managed keys on deletion.
pub const FINALIZER: &str = "metadata.zitadel-operator.dev/cleanup";
/// Field manager for server-side-apply status writes.
pub const FIELD_MANAGER: &str = "zitadel-metadata-operator";
/// kubectl's client-side-apply annotation (a copy of the object), dropped from the caches.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
