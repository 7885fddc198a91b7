//! The preview report: per object and key what the controller would do, with values redacted
//! unless asked for. This is the `-o json` schema (`apiVersion: diff.metadata.zitadel-operator.dev/v1`,
//! documented in the README); fields are only ever added within a version.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use kube::ResourceExt;
use serde::{Deserialize, Serialize};

use super::preview::{ObjectPreview, Verdict};
use crate::crd::{DeletionPolicy, DriftPolicy, MetadataResource};
use crate::status::Outcome;

mod build;

pub use build::{object_diff, rejected_diff};

/// `apiVersion` of the JSON report.
pub const API_VERSION: &str = "diff.metadata.zitadel-operator.dev/v1";
/// `kind` of the JSON report.
pub const KIND: &str = "MetadataDiff";

/// Exit code: nothing would change.
pub const EXIT_NO_CHANGES: u8 = 0;
/// Exit code: ZITADEL would be written to.
pub const EXIT_CHANGES: u8 = 1;
/// Exit code: an error (bad arguments or manifests, an unreadable cluster, or an object whose
/// plan could not be computed).
pub const EXIT_ERROR: u8 = 2;

/// Which values the report shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reveal {
    /// None (the default): every value is redacted.
    #[default]
    None,
    /// `--show-values`: values of inline (`value`, `binaryValue`) and ConfigMap entries, and
    /// what ZITADEL holds for those keys. Never a Secret's value, nor the current value of a
    /// key whose origin is unknown (removed, unmanaged or claimed keys may have come from a
    /// Secret).
    NonSecret,
    /// `--show-secret-values`: every value, Secret-sourced ones included.
    All,
}

/// The whole report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiffReport {
    /// [`API_VERSION`].
    pub api_version: String,
    /// [`KIND`].
    pub kind: String,
    /// What was previewed.
    pub mode: Mode,
    /// Whether ZITADEL would be written to (set or remove) by any object.
    pub changes: bool,
    /// The process's exit code: 0 no change, 1 changes, 2 an object could not be previewed.
    pub exit_code: u8,
    /// Counts.
    pub summary: Summary,
    /// One entry per previewed object, in input order.
    pub objects: Vec<ObjectDiff>,
    /// Documents of other kinds in the manifests, not previewed.
    pub ignored: Vec<Ignored>,
    /// Remarks about the preview as a whole (e.g. namespaces whose objects could not be listed).
    pub notes: Vec<String>,
}

/// What was previewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    /// Manifests (`-f`): what applying them would do.
    Manifests,
    /// Live objects (`--live`): what their next reconcile would do.
    Live,
}

/// Counts over all objects.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Objects previewed.
    pub objects: usize,
    /// Objects whose reconcile would write to ZITADEL.
    pub with_changes: usize,
    /// Objects previewed without errors whose reconcile would not write.
    pub without_changes: usize,
    /// Objects whose plan could not be computed.
    pub errors: usize,
    /// Keys that would be set.
    pub set: usize,
    /// Keys that would be removed.
    pub removed: usize,
    /// Keys that would be adopted (ZITADEL already holds the desired value).
    pub adopted: usize,
    /// Differences driftPolicy `Report` would only report.
    pub drifted: usize,
    /// Keys of a spec left alone because an earlier object claims them.
    pub conflicts: usize,
    /// Keys in ZITADEL no object of this preview manages, left alone.
    pub unmanaged: usize,
    /// Managed keys already holding the desired value.
    pub unchanged: usize,
}

/// A document of another kind in the manifests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ignored {
    /// Where it was read (`file`, `file#N` for the N-th document, `-` for stdin).
    pub origin: String,
    /// Its `apiVersion`.
    pub api_version: String,
    /// Its `kind`.
    pub kind: String,
    /// Its `metadata.name`, if any.
    pub name: Option<String>,
    /// Why it is not previewed.
    pub reason: String,
}

/// One object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectDiff {
    /// `OrgMetadata` or `UserMetadata`.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Where the manifest was read (`None` for a live object).
    pub origin: Option<String>,
    /// Whether the object exists in the cluster (its status supplied the managed keys).
    pub exists: bool,
    /// What would happen, in one word.
    pub result: ObjectResult,
    /// The connection the calls would use, once resolved.
    pub connection: Option<String>,
    /// The ids the calls would act on, as far as resolved.
    pub target: TargetIds,
    /// `spec.driftPolicy`.
    pub drift_policy: DriftPolicy,
    /// `spec.deletionPolicy`.
    pub deletion_policy: DeletionPolicy,
    /// The conditions the object would carry afterwards (absent for `deleting`).
    pub outcome: Option<OutcomeView>,
    /// Per key, sorted by key.
    pub keys: Vec<KeyDiff>,
    /// Remarks (new object, spec unchanged, …).
    pub notes: Vec<String>,
}

/// What would happen to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ObjectResult {
    /// Keys would be set or removed.
    Changes,
    /// ZITADEL already matches (adoptions, claims and unmanaged keys write nothing).
    NoChanges,
    /// driftPolicy `Report`: ZITADEL differs; the differences would be reported, not written.
    DriftReported,
    /// `spec.suspend`: nothing at all.
    Suspended,
    /// driftPolicy `Ignore` and nothing changed since the last sync: ZITADEL is not even read.
    NotRead,
    /// Being deleted: the cleanup runs instead (not previewed).
    Deleting,
    /// The plan could not be computed (see `outcome`): the reconcile would not write either.
    Error,
}

/// The ids the calls act on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetIds {
    /// Organization (`x-zitadel-orgid`).
    pub organization_id: Option<String>,
    /// User (UserMetadata).
    pub user_id: Option<String>,
}

/// The conditions an object would carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutcomeView {
    /// `Ready`, `Retrying` (Reconciling), `Stalled`, `Drifted`, `Suspended` or `Deleting`.
    pub state: String,
    /// The conditions' reason (`Synced`, `KeyConflict`, `ValueSourceNotFound`, …).
    pub reason: String,
    /// Their message (key names, never values).
    pub message: String,
}

impl OutcomeView {
    /// The view of an [`Outcome`].
    pub fn of(outcome: &Outcome) -> Self {
        let (state, message) = match outcome {
            Outcome::Ready { message } => ("Ready", message),
            Outcome::Retrying { message, .. } => ("Retrying", message),
            Outcome::Stalled { message, .. } => ("Stalled", message),
            Outcome::Drifted { message } => ("Drifted", message),
            Outcome::Suspended { message } => ("Suspended", message),
            Outcome::Deleting { message } => ("Deleting", message),
        };
        OutcomeView {
            state: state.into(),
            reason: outcome.reason().to_string(),
            message: message.clone(),
        }
    }
}

/// One key of one object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyDiff {
    /// The metadata key.
    pub key: String,
    /// What would happen to it.
    pub action: KeyAction,
    /// For `set` and `drift`: `add` (missing in ZITADEL), `update` (another value) or `remove`
    /// (drift of a managed key that left the spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
    /// For keys of the spec: `inline`, `Secret/NAME` or `ConfigMap/NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// For `conflict`: the earlier object (`namespace/name`) that claims the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<String>,
    /// What ZITADEL holds now (absent when redacted or not held).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<Value>,
    /// What the spec asks for (absent when redacted or not desired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<Value>,
    /// A value exists but is not shown.
    pub redacted: bool,
}

/// What would happen to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum KeyAction {
    /// Written (missing or another value in ZITADEL).
    Set,
    /// Removed: managed by this object, no longer in the spec, still in ZITADEL.
    Remove,
    /// ZITADEL already holds the desired value: no write, the key becomes managed.
    Adopt,
    /// Managed and already holding the desired value.
    Unchanged,
    /// driftPolicy `Report`: differs, would be reported, not written.
    Drift,
    /// In the spec but claimed by an earlier object on the same target: left alone.
    Conflict,
    /// In ZITADEL, not in the spec, not managed by this object: left alone.
    Unmanaged,
    /// Managed, left the spec, already gone from ZITADEL: no write, no longer managed.
    Forget,
}

impl KeyAction {
    /// Whether this action writes to ZITADEL.
    pub fn writes(self) -> bool {
        matches!(self, KeyAction::Set | KeyAction::Remove)
    }
}

/// How a `set` / `drift` changes the key (or, `same`, how an `adopt` is made).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Change {
    /// Missing in ZITADEL.
    Add,
    /// Another value in ZITADEL.
    Update,
    /// With `adopt`: ZITADEL already holds the desired value and the key is set again (no value
    /// changes): the first write of an object the operator has not reported on yet sends every
    /// key without listing first.
    Same,
    /// In ZITADEL, would be removed.
    Remove,
}

/// A metadata value: UTF-8 text, else base64.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Value {
    /// The bytes are UTF-8 text.
    Text(String),
    /// Standard base64 of bytes that are not UTF-8.
    Base64(String),
}

impl Value {
    /// The bytes as text when they are UTF-8, else as base64.
    pub fn of(bytes: &[u8]) -> Value {
        match std::str::from_utf8(bytes) {
            Ok(text) => Value::Text(text.to_string()),
            Err(_) => Value::Base64(base64::engine::general_purpose::STANDARD.encode(bytes)),
        }
    }
}

impl DiffReport {
    /// The report over `objects`, with its summary, `changes` and exit code.
    pub fn new(
        mode: Mode,
        objects: Vec<ObjectDiff>,
        ignored: Vec<Ignored>,
        notes: Vec<String>,
    ) -> Self {
        let mut summary = Summary {
            objects: objects.len(),
            ..Summary::default()
        };
        for object in &objects {
            match object.result {
                ObjectResult::Error => summary.errors += 1,
                ObjectResult::Changes => summary.with_changes += 1,
                _ => summary.without_changes += 1,
            }
            for key in &object.keys {
                let counter = match key.action {
                    KeyAction::Set => &mut summary.set,
                    KeyAction::Remove => &mut summary.removed,
                    KeyAction::Adopt => &mut summary.adopted,
                    KeyAction::Unchanged => &mut summary.unchanged,
                    KeyAction::Drift => &mut summary.drifted,
                    KeyAction::Conflict => &mut summary.conflicts,
                    KeyAction::Unmanaged => &mut summary.unmanaged,
                    KeyAction::Forget => continue,
                };
                *counter += 1;
            }
        }
        let changes = summary.with_changes > 0;
        let exit_code = if summary.errors > 0 {
            EXIT_ERROR
        } else if changes {
            EXIT_CHANGES
        } else {
            EXIT_NO_CHANGES
        };
        DiffReport {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            mode,
            changes,
            exit_code,
            summary,
            objects,
            ignored,
            notes,
        }
    }
}

#[cfg(test)]
mod tests;
