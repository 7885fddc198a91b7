//! Reading manifests as `kubectl diff -f` does: files, directories (their `.yaml`, `.yml` and
//! `.json` files, sorted; `-R` recurses) and `-` for stdin; multi-document YAML, JSON objects
//! (one or several in a row) and `List` kinds. `OrgMetadata` / `UserMetadata` are previewed;
//! documents of other kinds are ignored with a note.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::model::Ignored;
use crate::crd::{OrgMetadata, UserMetadata};

/// The API group and version of the previewed kinds.
pub const API_VERSION: &str = "metadata.zitadel-operator.dev/v1alpha1";
const GROUP: &str = "metadata.zitadel-operator.dev";

/// A manifest that cannot be previewed.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file or directory cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not YAML / JSON.
    #[error("{origin}: not valid {format}: {message}")]
    Syntax {
        /// Where.
        origin: String,
        /// `YAML` or `JSON`.
        format: &'static str,
        /// The parser's message.
        message: String,
    },
    /// A document of a previewed kind does not fit its schema.
    #[error("{origin}: {kind} {name}: {message}")]
    Invalid {
        /// Where.
        origin: String,
        /// The kind.
        kind: String,
        /// Its name (or `(no name)`).
        name: String,
        /// What is wrong.
        message: String,
    },
    /// No previewable or other document at all.
    #[error("no objects passed to diff (the manifests are empty)")]
    Empty,
}

/// One document and where it was read.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// `path` (a file's only document), `path#N` (its N-th, from 1), `-` / `-#N` for stdin;
    /// a `List`'s items get `[i]` appended.
    pub origin: String,
    /// The document.
    pub value: Value,
}

/// A previewed manifest.
#[derive(Clone, Debug)]
pub enum Manifest {
    /// An `OrgMetadata`.
    Org(Box<OrgMetadata>),
    /// A `UserMetadata`.
    User(Box<UserMetadata>),
}

/// The paths a `-f` argument stands for: itself (a file or `-`), or a directory's manifest
/// files (sorted; recursing with `recursive`).
pub fn expand(path: &str, recursive: bool) -> Result<Vec<PathBuf>, ManifestError> {
    if path == "-" {
        return Ok(vec![PathBuf::from("-")]);
    }
    let p = Path::new(path);
    let read_error = |source| ManifestError::Read {
        path: path.to_string(),
        source,
    };
    if !p.metadata().map_err(read_error)?.is_dir() {
        return Ok(vec![p.to_path_buf()]);
    }
    let mut files = Vec::new();
    walk(p, recursive, &mut files)?;
    files.sort();
    Ok(files)
}

fn walk(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> Result<(), ManifestError> {
    let read_error = |source| ManifestError::Read {
        path: dir.display().to_string(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        if path.is_dir() {
            if recursive {
                walk(&path, recursive, out)?;
            }
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// The documents of `text` read from `name`: JSON when it starts with `{`, else YAML (several
/// documents separated by `---`). Empty documents are skipped; `List` kinds are expanded.
pub fn parse(name: &str, text: &str) -> Result<Vec<Document>, ManifestError> {
    let mut values = Vec::new();
    if text.trim_start().starts_with('{') {
        for value in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
            values.push(value.map_err(|e| ManifestError::Syntax {
                origin: name.to_string(),
                format: "JSON",
                message: e.to_string(),
            })?);
        }
    } else {
        for document in serde_yaml::Deserializer::from_str(text) {
            let value = Value::deserialize(document).map_err(|e| ManifestError::Syntax {
                origin: name.to_string(),
                format: "YAML",
                message: e.to_string(),
            })?;
            if !value.is_null() {
                values.push(value);
            }
        }
    }
    let several = values.len() > 1;
    let mut out = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        let origin = if several {
            format!("{name}#{}", i + 1)
        } else {
            name.to_string()
        };
        flatten(origin, value, &mut out);
    }
    Ok(out)
}

/// A `List` (`v1/List`, `OrgMetadataList`, …) becomes its items.
fn flatten(origin: String, value: Value, out: &mut Vec<Document>) {
    let is_list = value
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"))
        && value.get("items").is_some_and(Value::is_array);
    if !is_list {
        out.push(Document { origin, value });
        return;
    }
    if let Some(Value::Array(items)) = value.get("items") {
        for (i, item) in items.iter().enumerate() {
            flatten(format!("{origin}[{i}]"), item.clone(), out);
        }
    }
}

/// Previewed manifests with their origin, and the ignored documents.
pub type Classified = (Vec<(String, Manifest)>, Vec<Ignored>);

/// Documents sorted into previewed manifests and ignored ones. A document of a previewed kind
/// is checked like `kubectl apply --validate=strict` would for the fields this tool knows
/// (unknown fields are errors) and gets `default_namespace` when it names none.
pub fn classify(
    documents: Vec<Document>,
    default_namespace: &str,
    forced_namespace: Option<&str>,
) -> Result<Classified, ManifestError> {
    let mut manifests = Vec::new();
    let mut ignored = Vec::new();
    for Document { origin, mut value } in documents {
        let text = |field: &str| value.get(field).and_then(Value::as_str).map(str::to_owned);
        let api_version = text("apiVersion").unwrap_or_default();
        let kind = text("kind").unwrap_or_default();
        let name = value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let invalid = |message: String| ManifestError::Invalid {
            origin: origin.clone(),
            kind: kind.clone(),
            name: name.clone().unwrap_or_else(|| "(no name)".into()),
            message,
        };
        let group = api_version.split_once('/').map_or("", |(g, _)| g);
        let previewed = matches!(kind.as_str(), "OrgMetadata" | "UserMetadata");
        if group != GROUP || !previewed {
            let reason = if group == GROUP {
                "connections are read from the cluster, not from the manifests (apply them first)"
            } else {
                "not an OrgMetadata or UserMetadata"
            };
            ignored.push(Ignored {
                origin,
                api_version,
                kind,
                name,
                reason: reason.into(),
            });
            continue;
        }
        if api_version != API_VERSION {
            return Err(invalid(format!(
                "apiVersion {api_version} is not served; use {API_VERSION}"
            )));
        }
        if name.as_deref().is_none_or(str::is_empty) {
            return Err(invalid(
                "metadata.name is required (generateName is not supported)".into(),
            ));
        }
        let namespace =
            set_namespace(&mut value, default_namespace, forced_namespace).map_err(invalid)?;
        // The API server ignores a manifest's status (a subresource); the live one is used.
        if let Some(object) = value.as_object_mut() {
            object.remove("status");
        }
        // Nulls in the spec are pruned by the API server (no field is nullable).
        if let Some(spec) = value.get_mut("spec") {
            drop_nulls(spec);
        }
        let manifest = match kind.as_str() {
            "OrgMetadata" => typed::<OrgMetadata>(&value).map(|o| Manifest::Org(Box::new(o))),
            _ => typed::<UserMetadata>(&value).map(|u| Manifest::User(Box::new(u))),
        }
        .map_err(|m| invalid(format!("{m} (in namespace {namespace})")))?;
        manifests.push((origin, manifest));
    }
    if manifests.is_empty() && ignored.is_empty() {
        return Err(ManifestError::Empty);
    }
    Ok((manifests, ignored))
}

/// Fill in the namespace like kubectl: the document's, else the default; with `-n`, a
/// different one is an error.
fn set_namespace(
    value: &mut Value,
    default_namespace: &str,
    forced: Option<&str>,
) -> Result<String, String> {
    let named = value
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let namespace = match (named, forced) {
        (Some(ns), Some(forced)) if ns != forced => {
            return Err(format!(
                "the namespace from the provided object ({ns}) does not match the namespace \"{forced}\" (-n)"
            ));
        }
        (Some(ns), _) => ns,
        (None, _) => default_namespace.to_string(),
    };
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("namespace".into(), Value::String(namespace.clone()));
    }
    Ok(namespace)
}

/// Remove `null` members of objects, recursively.
fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Deserialize strictly: a field the typed object drops (unknown to this version of the CRD)
/// is an error, as with `kubectl apply --validate=strict`.
fn typed<K: serde::de::DeserializeOwned + serde::Serialize>(value: &Value) -> Result<K, String> {
    let obj: K = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let round = serde_json::to_value(&obj).map_err(|e| e.to_string())?;
    let mut unknown = Vec::new();
    if let (Some(spec), Some(known)) = (value.get("spec"), round.get("spec")) {
        unknown_fields("spec", spec, known, &mut unknown);
    }
    if unknown.is_empty() {
        Ok(obj)
    } else {
        Err(format!("unknown field(s): {}", unknown.join(", ")))
    }
}

/// Paths present (and not null) in `given` but absent from `known`.
fn unknown_fields(path: &str, given: &Value, known: &Value, out: &mut Vec<String>) {
    match (given, known) {
        (Value::Object(g), Value::Object(k)) => {
            for (field, value) in g {
                let here = format!("{path}.{field}");
                match k.get(field) {
                    None if !value.is_null() => out.push(here),
                    None => {}
                    Some(known) => unknown_fields(&here, value, known, out),
                }
            }
        }
        (Value::Array(g), Value::Array(k)) => {
            for (i, (value, known)) in g.iter().zip(k).enumerate() {
                unknown_fields(&format!("{path}[{i}]"), value, known, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
