//! `zitadel-metadata-operator`: keeps ZITADEL organization and user metadata in sync with
//! `OrgMetadata` / `UserMetadata` custom resources.
//!
//! The reconcile pipeline: resolve the target → validate the spec (pure) → read ZITADEL →
//! [`plan`] the writes (pure) → apply them with bulk calls → write status only if it changed.
#![warn(missing_docs)]

#[macro_use]
mod macros;

pub mod config;
pub mod connections;
pub mod controller;
pub mod crd;
pub mod diff;
pub mod drift;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod reason;
pub mod sources;
pub mod status;
pub mod telemetry;
#[cfg(test)]
pub mod testing;
pub mod zitadel;
