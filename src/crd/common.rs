//! Types shared by both kinds: metadata entries, the policies and the status.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// ZITADEL's limit on a metadata key, in characters (runes).
pub const MAX_KEY_CHARS: usize = 200;
/// ZITADEL's limit on a metadata value, in bytes after base64 decoding.
pub const MAX_VALUE_BYTES: usize = 500_000;
/// Longest standard base64 text that can decode to at most [`MAX_VALUE_BYTES`] (+ at most one byte,
/// which the reconcile-time check catches).
pub const MAX_BINARY_VALUE_CHARS: usize = 666_668;
/// Most entries one object may list.
pub const MAX_ENTRIES: usize = 1000;

/// One metadata key and its value. Exactly one of `value`, `binaryValue` and `valueFrom` is set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.value) ? 1 : 0) + (has(self.binaryValue) ? 1 : 0) + (has(self.valueFrom) ? 1 : 0) == 1").message("exactly one of value, binaryValue or valueFrom must be set"))]
pub struct MetadataEntry {
    /// The metadata key in ZITADEL: 1 to 200 characters, unique within the object.
    #[schemars(length(min = 1, max = 200))]
    pub key: String,

    /// The value as plain UTF-8 text; the operator base64-encodes it for ZITADEL. Must not be
    /// empty; at most 500000 bytes once UTF-8 encoded (the schema caps it at 500000 characters,
    /// the byte limit is checked when reconciling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "text_value_schema")]
    pub value: Option<String>,

    /// The value as standard base64 (with padding), sent to ZITADEL as-is. Use it for binary
    /// data. Must decode to 1 to 500000 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "binary_value_schema")]
    pub binary_value: Option<String>,

    /// The value read from a key of a Secret or ConfigMap in the object's namespace. The
    /// operator watches the source and re-syncs when it changes. Secret values never appear in
    /// status, events or logs.
    // Boxed: rarely set, and inline it would double the entry's size in the operator's cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<Box<ValueSource>>,
}

/// Where a value comes from. Exactly one of `secretKeyRef` and `configMapKeyRef` is set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretKeyRef) != has(self.configMapKeyRef)").message("exactly one of secretKeyRef or configMapKeyRef must be set"))]
pub struct ValueSource {
    /// A key of a Secret in the same namespace (its decoded bytes are the value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeyRef>,
    /// A key of a ConfigMap in the same namespace (`data`, or `binaryData` for bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeyRef>,
}

/// A key of a Secret or ConfigMap in the object's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyRef {
    /// Name of the Secret / ConfigMap.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key in it.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
    /// When true, a missing Secret/ConfigMap or key means "this metadata entry is absent" (it is
    /// not set, and removed from ZITADEL if this object manages it). When false (default), the
    /// object stops with `Ready=False` and nothing is written until the source exists.
    #[serde(default)]
    pub optional: bool,
}

/// Schema of an optional string: not nullable, so a `null` is pruned by the API server rather
/// than stored (kube's default for `Option` is `nullable: true`).
fn optional_string(min: usize, max: usize, pattern: Option<&str>) -> schemars::Schema {
    let mut schema = schemars::json_schema!({
        "type": "string",
        "minLength": min,
        "maxLength": max,
    });
    if let Some(pattern) = pattern {
        schema.insert("pattern".into(), pattern.into());
    }
    schema
}

fn text_value_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    optional_string(1, 500_000, None)
}

fn binary_value_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    optional_string(
        4,
        MAX_BINARY_VALUE_CHARS,
        Some(r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"),
    )
}

/// Schema of an optional ZITADEL id (1 to 200 characters, not nullable).
pub(crate) fn optional_id_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    optional_string(1, 200, None)
}

impl MetadataEntry {
    /// An entry with a UTF-8 text value.
    pub fn text(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: Some(value.into()),
            binary_value: None,
            value_from: None,
        }
    }

    /// An entry with a binary value (encoded here as standard base64).
    pub fn binary(key: impl Into<String>, value: &[u8]) -> Self {
        Self {
            key: key.into(),
            value: None,
            binary_value: Some(base64::engine::general_purpose::STANDARD.encode(value)),
            value_from: None,
        }
    }

    /// The inline value's bytes as ZITADEL will store them; `Ok(None)` for a `valueFrom` entry
    /// (resolved by the reconciler).
    pub fn decoded(&self) -> Result<Option<Vec<u8>>, EntryError> {
        match (&self.value, &self.binary_value, &self.value_from) {
            (Some(text), None, None) => Ok(Some(text.as_bytes().to_vec())),
            (None, Some(b64), None) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map(Some)
                .map_err(|_| EntryError::InvalidBase64 {
                    key: self.key.clone(),
                }),
            (None, None, Some(source))
                if source.secret_key_ref.is_some() != source.config_map_key_ref.is_some() =>
            {
                Ok(None)
            }
            _ => Err(EntryError::ValueChoice {
                key: self.key.clone(),
            }),
        }
    }
}

/// A spec entry that cannot be sent to ZITADEL. Messages name the key, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Not exactly one of `value` / `binaryValue` / `valueFrom` (with one reference) is set.
    #[error(
        "metadata key {key:?}: exactly one of value, binaryValue or valueFrom (with exactly one of secretKeyRef / configMapKeyRef) must be set"
    )]
    ValueChoice {
        /// The offending key.
        key: String,
    },
    /// `binaryValue` is not standard base64.
    #[error("metadata key {key:?}: binaryValue is not valid standard base64")]
    InvalidBase64 {
        /// The offending key.
        key: String,
    },
    /// The decoded value is empty.
    #[error("metadata key {key:?}: value must not be empty")]
    EmptyValue {
        /// The offending key.
        key: String,
    },
    /// The decoded value exceeds ZITADEL's limit.
    #[error("metadata key {key:?}: value is {bytes} bytes, ZITADEL accepts at most 500000 bytes")]
    ValueTooLarge {
        /// The offending key.
        key: String,
        /// The value's size in bytes.
        bytes: usize,
    },
    /// The key is empty or longer than 200 characters.
    #[error("metadata key {key:?}: key must be 1 to 200 characters, it has {chars}")]
    KeyLength {
        /// The offending key.
        key: String,
        /// Its length in characters.
        chars: usize,
    },
    /// The same key appears twice.
    #[error("metadata key {key:?} is listed more than once")]
    DuplicateKey {
        /// The offending key.
        key: String,
    },
}

/// Validate a spec's entries and decode the inline values to the bytes ZITADEL should hold.
/// Entries with `valueFrom` are checked for shape and returned separately, to be resolved by
/// the reconciler and then checked with [`check_value`].
///
/// The API server already enforces most of this through the CRD schema; this is the defence in
/// depth for what the schema cannot express (byte sizes) and for objects admitted before a schema
/// change.
pub fn validate(entries: &[MetadataEntry]) -> Result<Desired, EntryError> {
    let mut out = Desired::default();
    let mut seen = std::collections::BTreeSet::new();
    for entry in entries {
        let chars = entry.key.chars().count();
        if chars == 0 || chars > MAX_KEY_CHARS {
            return Err(EntryError::KeyLength {
                key: entry.key.clone(),
                chars,
            });
        }
        if !seen.insert(entry.key.clone()) {
            return Err(EntryError::DuplicateKey {
                key: entry.key.clone(),
            });
        }
        match entry.decoded()? {
            Some(bytes) => {
                check_value(&entry.key, &bytes)?;
                out.inline.insert(entry.key.clone(), bytes);
            }
            None => {
                if let Some(source) = &entry.value_from {
                    out.sourced
                        .insert(entry.key.clone(), ValueSource::clone(source));
                }
            }
        }
    }
    Ok(out)
}

/// ZITADEL's value limits: 1 to 500000 bytes.
pub fn check_value(key: &str, bytes: &[u8]) -> Result<(), EntryError> {
    if bytes.is_empty() {
        return Err(EntryError::EmptyValue {
            key: key.to_string(),
        });
    }
    if bytes.len() > MAX_VALUE_BYTES {
        return Err(EntryError::ValueTooLarge {
            key: key.to_string(),
            bytes: bytes.len(),
        });
    }
    Ok(())
}

/// A validated spec: inline values, and entries whose value comes from a Secret/ConfigMap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    /// Key → bytes, for `value` / `binaryValue` entries.
    pub inline: BTreeMap<String, Vec<u8>>,
    /// Key → source, for `valueFrom` entries.
    pub sourced: BTreeMap<String, ValueSource>,
}

/// What happens to the keys an object manages when the object is deleted.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum DeletionPolicy {
    /// Remove the keys this object manages from ZITADEL, then let the object go.
    #[default]
    Delete,
    /// Leave the keys in ZITADEL.
    Orphan,
}

/// What the operator does when ZITADEL differs from the spec.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum DriftPolicy {
    /// Make ZITADEL match: set and remove keys (the default).
    #[default]
    Enforce,
    /// Never write; report differences in a `Drifted` condition (key names only, never values).
    Report,
    /// Apply the spec when it (or a referenced Secret/ConfigMap) changes; do not read ZITADEL in
    /// between, so changes made outside Kubernetes are left alone.
    Ignore,
}

/// Observed state, written by the operator (kstatus conventions). Until the operator first
/// reports, the API server shows the schema default `{observedGeneration: 0}`, so kstatus tools
/// (Flux, `helm --wait`) see the object as in progress rather than current.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("default" = {"observedGeneration": 0}))]
pub struct MetadataStatus {
    /// The `metadata.generation` this status describes; 0 until the operator first reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// ZITADEL's `details.sequence` from the last write this object made (the org's or user's
    /// event sequence after that write). Unchanged by reconciles that write nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<String>,

    /// ZITADEL's `details.changeDate` from the last write this object made (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_date: Option<String>,

    /// ZITADEL's `details.resourceOwner` from the last write: the organization that owns the
    /// metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_owner: Option<String>,

    /// The organization the operator acts in (`x-zitadel-orgid`): the spec's `organizationId`,
    /// the organization found by `spec.organization`, or the user's organization looked up in
    /// ZITADEL. Resolved once; the target fields are immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,

    /// The keys this object has written to (or adopted in) ZITADEL. Keys that leave the spec
    /// are removed from ZITADEL only if they are listed here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_keys: Vec<String>,

    /// The Secrets and ConfigMaps the last successful sync read values from, as
    /// `Kind/name@resourceVersion` (versions only, never content).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub observed_source_versions: Vec<String>,

    /// The user the operator acts on (the spec's `userId`, or the user found by `spec.user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,

    /// Number of entries in `managedKeys` (for `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_key_count: Option<i64>,

    /// Ready, Reconciling and Stalled conditions (kstatus).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// A cached copy's conditions, `managedKeys`, `observedSourceVersions` and write details in
    /// compact form, those fields then being empty ([`MetadataStatus::pack`]; read a cached
    /// copy's conditions with [`MetadataStatus::condition`]). Never serialised and not part of
    /// the CRD: only the operator's caches set it.
    #[serde(skip)]
    #[schemars(skip)]
    pub packed: Option<super::PackedStatus>,
}
