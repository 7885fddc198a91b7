//! Key claims: which keys an earlier object on the same target already manages (pure, over the
//! other objects the caches hold for that target).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kube::ResourceExt;

use crate::crd::MetadataResource;
use crate::plan::{self, Claim};
use crate::reason::Reason;
use crate::status;

/// The other objects of a kind on an object's target (the controllers' caches in production).
#[async_trait::async_trait]
pub trait Neighbours<K>: Send + Sync {
    /// Objects whose target identity may equal `obj`'s (callers re-check), `obj` possibly
    /// among them. Complete: waits until the caches hold their initial lists.
    async fn on_target(&self, obj: &K) -> Vec<Arc<K>>;
}

/// Which metadata store an object writes to, with the ids resolved so far.
pub fn identity<K: MetadataResource>(obj: &K) -> String {
    obj.target_ref()
        .map_or_else(String::new, |t| t.identity(obj.status()))
}

fn claim<K: MetadataResource>(obj: &K) -> Claim {
    Claim {
        object: format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any()),
        created: obj
            .meta()
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string()),
        keys: obj.entry_views().map(|e| e.key.to_owned()).collect(),
    }
}

/// Claims of the other live objects in `others` on `obj`'s target.
fn other_claims<'a, K: MetadataResource>(
    obj: &K,
    others: &'a [Arc<K>],
) -> impl Iterator<Item = (&'a K, Claim)> {
    let identity = identity(obj);
    let me = claim(obj).object;
    others
        .iter()
        .map(Arc::as_ref)
        .filter(move |o| o.meta().deletion_timestamp.is_none() && self::identity(*o) == identity)
        .map(|o| (o, claim(o)))
        .filter(move |(_, c)| c.object != me)
}

/// Keys of `obj` that an earlier live object of the same kind claims on the same target
/// (key → that object).
pub fn conflicts<K: MetadataResource>(obj: &K, others: &[Arc<K>]) -> BTreeMap<String, String> {
    let claims: Vec<Claim> = other_claims(obj, others)
        .filter(|(o, _)| !refused_by_guard(*o))
        .map(|(_, c)| c)
        .collect();
    plan::conflicts(&claim(obj), &claims)
}

/// Keys of `obj` that any other live object of the same kind lists on the same target (left to
/// it on deletion).
pub fn claimed_elsewhere<K: MetadataResource>(obj: &K, others: &[Arc<K>]) -> BTreeSet<String> {
    other_claims(obj, others)
        .flat_map(|(_, c)| c.keys)
        .collect()
}

/// An object its connection's guard refuses (`TargetNotAllowed` for its current generation)
/// never writes, so it claims nothing: otherwise a namespace that may not use a connection could
/// block the keys of one that may, just by being created first.
fn refused_by_guard<K: MetadataResource>(obj: &K) -> bool {
    obj.status().is_some_and(|s| {
        s.observed_generation == obj.meta().generation
            && s.condition(status::STALLED)
                .is_some_and(|c| c.status == "True" && Reason::TargetNotAllowed == c.reason)
    })
}
