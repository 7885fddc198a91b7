//! `valueFrom` entries: read their Secrets/ConfigMaps through the one reader
//! ([`crate::sources`]) and record the versions read.

use std::collections::{BTreeMap, BTreeSet};

use crate::crd::{self, EntryError, KeyRef, ValueSource};
use crate::sources::{SourceKind, SourceObject, ValueSources};
use crate::zitadel::MetadataMap;

/// Why the `valueFrom` values could not be read.
#[derive(Debug)]
pub enum SourceError {
    /// A value read cannot be sent to ZITADEL (empty, too large), or an entry names no source.
    Invalid(EntryError),
    /// A referenced Secret/ConfigMap or key does not exist (message names it, never a value).
    Missing(String),
    /// Reading from the Kubernetes API failed.
    Unreadable(kube::Error),
}

/// Values of the `valueFrom` entries, and the `Kind/name@resourceVersion` of the sources read.
pub struct Resolved {
    /// Key → bytes.
    pub values: MetadataMap,
    /// Sorted, one per source object.
    pub versions: Vec<String>,
}

/// Read `valueFrom` sources in namespace `ns`, each Secret/ConfigMap once. A missing
/// non-optional source fails the whole sync (no half-way writes).
pub async fn resolve(
    sources: &dyn ValueSources,
    ns: &str,
    sourced: &BTreeMap<String, ValueSource>,
) -> Result<Resolved, SourceError> {
    let mut read: BTreeMap<(SourceKind, String), Option<SourceObject>> = BTreeMap::new();
    let mut values = MetadataMap::new();
    let mut versions = BTreeSet::new();
    for (key, source) in sourced {
        let (kind, reference): (SourceKind, &KeyRef) =
            match (&source.secret_key_ref, &source.config_map_key_ref) {
                (Some(r), None) => (SourceKind::Secret, r),
                (None, Some(r)) => (SourceKind::ConfigMap, r),
                _ => {
                    return Err(SourceError::Invalid(EntryError::ValueChoice {
                        key: key.clone(),
                    }));
                }
            };
        let slot = (kind, reference.name.clone());
        if !read.contains_key(&slot) {
            let got = sources
                .get(kind, ns, &reference.name)
                .await
                .map_err(SourceError::Unreadable)?;
            read.insert(slot.clone(), got);
        }
        let found = read.get(&slot).and_then(Option::as_ref);
        if let Some(object) = found
            && object.resource_version.is_some()
        {
            versions.insert(object.version(kind, ns, &reference.name).in_namespace());
        }
        match found.map(|o| o.value(&reference.key)) {
            Some(Some(bytes)) => {
                crd::check_value(key, bytes).map_err(SourceError::Invalid)?;
                values.insert(key.clone(), bytes.to_vec());
            }
            _ if reference.optional => {}
            Some(None) => {
                return Err(SourceError::Missing(format!(
                    "metadata key {key:?}: {kind} {:?} has no key {:?}",
                    reference.name, reference.key
                )));
            }
            None => {
                return Err(SourceError::Missing(format!(
                    "metadata key {key:?}: {kind} {:?} not found in namespace {ns}",
                    reference.name
                )));
            }
        }
    }
    Ok(Resolved {
        values,
        versions: versions.into_iter().collect(),
    })
}
