//! `zitadel-metadata-operator diff` (also `kubectl zitadel diff`): what applying manifests — or
//! the next reconcile of live objects — would do to ZITADEL, without writing anything.
//!
//! The preview runs the controller's own planning half ([`sync::prepare_with`]: value sources,
//! connection and its guards, target resolution, key claims, the listing and the pure planner)
//! and the controller's own outcome mapping ([`outcome::decide`]); it never reaches the
//! executing half. Kubernetes is only read (`get`/`list`), ZITADEL only listed and searched.
//!
//! - [`preview`]: one object → what its next reconcile would do ([`ObjectPreview`]);
//! - [`model`]: the report (the stable `-o json` schema) built from previews, with redaction;
//! - [`render`]: the text output;
//! - [`manifests`]: reading `-f` files, directories and stdin;
//! - [`cluster`]: live objects, manifests merged with them, the neighbours for key claims;
//! - [`cli`]: flags, the run, exit codes.
//!
//! [`sync::prepare_with`]: crate::controller::metadata::sync::prepare_with
//! [`outcome::decide`]: crate::controller::metadata::outcome::decide

pub mod cli;
pub mod cluster;
pub mod manifests;
pub mod model;
pub mod preview;
pub mod render;

pub use model::{DiffReport, KeyAction, KeyDiff, ObjectDiff, ObjectResult, Reveal};
pub use preview::{ObjectPreview, Verdict, preview};
