//! The cluster as the preview reads it (`get` and `list` only): the live objects of a kind,
//! manifests merged with their live versions as the API server would hold them after the
//! apply, and those objects as the neighbours the controller's key claims are decided from.

use std::collections::BTreeSet;
use std::sync::Arc;

use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

use crate::controller::metadata::{Neighbours, claims};
use crate::crd::{MetadataResource, TargetRef};

/// Objects of one kind as they would be after the apply: the live ones, manifests in place of
/// their live versions, new manifests added. Answers [`Neighbours`] like the controllers' caches.
pub struct Snapshot<K> {
    objects: Vec<Arc<K>>,
}

impl<K: MetadataResource> Snapshot<K> {
    /// `live` with `applied` (manifests merged by [`as_applied`]) replacing same-named objects.
    pub fn new(live: Vec<K>, applied: &[K]) -> Self {
        let key = |o: &K| (o.namespace().unwrap_or_default(), o.name_any());
        let replaced: BTreeSet<(String, String)> = applied.iter().map(key).collect();
        let mut objects: Vec<Arc<K>> = live
            .into_iter()
            .filter(|o| !replaced.contains(&key(o)))
            .map(Arc::new)
            .collect();
        objects.extend(applied.iter().cloned().map(Arc::new));
        Snapshot { objects }
    }

    /// The objects.
    pub fn objects(&self) -> impl Iterator<Item = &K> {
        self.objects.iter().map(Arc::as_ref)
    }
}

#[async_trait::async_trait]
impl<K: MetadataResource> Neighbours<K> for Snapshot<K> {
    async fn on_target(&self, obj: &K) -> Vec<Arc<K>> {
        let identity = claims::identity(obj);
        self.objects
            .iter()
            .filter(|o| claims::identity(o.as_ref()) == identity)
            .cloned()
            .collect()
    }
}

/// Live objects of a kind, and what the listing could not cover.
pub struct Listed<K> {
    /// The objects.
    pub objects: Vec<K>,
    /// Remarks (namespaces that could not be listed).
    pub notes: Vec<String>,
}

/// Every live object of kind `K`: cluster-wide, or — when that is forbidden (a namespaced
/// preview role) — in each of `namespaces`, with a note that key claims of objects elsewhere
/// are not considered.
pub async fn list_live<K: MetadataResource>(
    client: &Client,
    namespaces: &BTreeSet<String>,
) -> Result<Listed<K>, kube::Error> {
    let params = ListParams::default();
    match Api::<K>::all(client.clone()).list(&params).await {
        Ok(list) => Ok(Listed {
            objects: list.items,
            notes: Vec::new(),
        }),
        Err(kube::Error::Api(status)) if status.code == 403 => {
            let mut objects = Vec::new();
            for ns in namespaces {
                let list = Api::<K>::namespaced(client.clone(), ns)
                    .list(&params)
                    .await?;
                objects.extend(list.items);
            }
            let kind = K::kind(&());
            Ok(Listed {
                objects,
                notes: vec![format!(
                    "cannot list {kind} in all namespaces (forbidden): keys claimed by {kind} objects outside {} are not considered",
                    namespaces.iter().cloned().collect::<Vec<_>>().join(", ")
                )],
            })
        }
        Err(e) => Err(e),
    }
}

/// A manifest the API server would refuse as a change of `live`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The manifest as the API server would hold it after the apply, and notes about it: with the
/// live object's uid, creation time, finalizers, deletion time and status (its managed keys and
/// resolved ids), and its generation bumped when the spec changes. A new object has generation 1,
/// no status and no creation time yet: in key claims it loses to every existing object (it will
/// be created after them), and among new objects the name decides, as for objects created in the
/// same second. A changed target (immutable) is refused.
pub fn as_applied<K: MetadataResource>(
    manifest: &K,
    live: Option<&K>,
) -> Result<(K, Vec<String>), Refused> {
    let json = |e: serde_json::Error| Refused(format!("cannot convert the object: {e}"));
    let mut value = serde_json::to_value(manifest).map_err(json)?;
    let mut notes = Vec::new();
    match live {
        Some(live) => {
            if let Some(why) = target_change(live, manifest) {
                return Err(Refused(why));
            }
            let live_value = serde_json::to_value(live).map_err(json)?;
            let spec_changed = value.get("spec") != live_value.get("spec");
            let generation = live.meta().generation.unwrap_or(1) + i64::from(spec_changed);
            let meta = &mut value["metadata"];
            for field in [
                "uid",
                "creationTimestamp",
                "resourceVersion",
                "deletionTimestamp",
                "finalizers",
            ] {
                if let Some(v) = live_value["metadata"].get(field) {
                    meta[field] = v.clone();
                }
            }
            meta["generation"] = generation.into();
            value["status"] = live_value.get("status").cloned().unwrap_or(Value::Null);
            notes.push(if spec_changed {
                "changes the spec of the live object".to_string()
            } else {
                "spec unchanged: the preview is the live object's next resync".to_string()
            });
        }
        None => {
            value["metadata"]["generation"] = 1.into();
            notes.push("new object".into());
        }
    }
    let applied = serde_json::from_value(value).map_err(json)?;
    Ok((applied, notes))
}

/// Why the API server would refuse the manifest's target as a change of the live object's (the
/// CRD's immutability rules): `None` when it is the same (a user's organization may be added).
fn target_change<K: MetadataResource>(live: &K, manifest: &K) -> Option<String> {
    let (old, new) = (live.target_ref(), manifest.target_ref());
    let same = match (&old, &new) {
        (
            Some(TargetRef::User {
                user: a,
                org_id: old_org,
            }),
            Some(TargetRef::User {
                user: b,
                org_id: new_org,
            }),
        ) => a == b && (old_org.is_none() || old_org == new_org),
        _ => old == new,
    };
    (!same).then(|| {
        let show = |t: &Option<TargetRef>| t.as_ref().map_or("none".to_string(), |t| t.to_string());
        format!(
            "the API server would reject this change: the target is immutable (live: {}, manifest: {}); create a new object to target another one",
            show(&old),
            show(&new)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{MetadataStatus, OrgMetadata, UserMetadata};
    use serde_json::json;

    fn org(name: &str, org_id: &str, keys: &[&str], status: Option<MetadataStatus>) -> OrgMetadata {
        let metadata: Vec<Value> = keys
            .iter()
            .map(|k| json!({"key": k, "value": "v"}))
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "metadata.zitadel-operator.dev/v1alpha1",
            "kind": "OrgMetadata",
            "metadata": {"name": name, "namespace": "team-a", "uid": format!("uid-{name}"),
                         "generation": 3, "creationTimestamp": "2026-01-01T00:00:00Z",
                         "finalizers": ["metadata.zitadel-operator.dev/cleanup"]},
            "spec": {"organizationId": org_id, "metadata": metadata},
            "status": status,
        }))
        .expect("org")
    }

    fn manifest(name: &str, org_id: &str, keys: &[&str]) -> OrgMetadata {
        let mut o = org(name, org_id, keys, None);
        o.metadata = kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some("team-a".into()),
            ..Default::default()
        };
        o
    }

    #[test]
    fn a_manifest_takes_the_live_identity_status_and_generation() {
        let status = MetadataStatus {
            managed_keys: vec!["a".into(), "gone".into()],
            organization_id: Some("1".into()),
            ..Default::default()
        };
        let live = org("acme", "1", &["a", "gone"], Some(status.clone()));
        let (same, notes) =
            as_applied(&manifest("acme", "1", &["a", "gone"]), Some(&live)).expect("ok");
        assert_eq!(same.metadata.generation, Some(3));
        assert_eq!(same.status, Some(status.clone()));
        assert_eq!(same.metadata.uid.as_deref(), Some("uid-acme"));
        assert_eq!(same.finalizers().len(), 1);
        assert!(notes[0].starts_with("spec unchanged"));
        let (changed, notes) = as_applied(&manifest("acme", "1", &["a"]), Some(&live)).expect("ok");
        assert_eq!(changed.metadata.generation, Some(4));
        assert_eq!(changed.status, Some(status));
        assert_eq!(notes, ["changes the spec of the live object"]);
        let (new, notes) = as_applied(&manifest("new", "1", &["a"]), None).expect("ok");
        assert_eq!(new.metadata.generation, Some(1));
        assert!(new.status.is_none());
        assert!(new.metadata.creation_timestamp.is_none());
        assert_eq!(notes, ["new object"]);
        let err = as_applied(&manifest("acme", "2", &["a"]), Some(&live)).expect_err("immutable");
        assert!(err.0.contains("target is immutable"), "{err}");
    }

    #[test]
    fn a_user_organization_may_be_added_but_not_changed() {
        let user = |org: Option<&str>| -> UserMetadata {
            serde_json::from_value(json!({
                "apiVersion": "metadata.zitadel-operator.dev/v1alpha1",
                "kind": "UserMetadata",
                "metadata": {"name": "alice", "namespace": "team-a"},
                "spec": {"userId": "9", "organizationId": org, "metadata": []},
            }))
            .expect("user")
        };
        assert!(target_change(&user(None), &user(Some("1"))).is_none());
        assert!(target_change(&user(Some("1")), &user(Some("1"))).is_none());
        assert!(target_change(&user(Some("1")), &user(Some("2"))).is_some());
    }

    #[tokio::test]
    async fn the_snapshot_answers_neighbours_by_target_with_manifests_in_place() {
        let live = vec![
            org("a", "1", &["x"], None),
            org("b", "1", &["y"], None),
            org("c", "2", &["z"], None),
        ];
        let applied = vec![org("b", "2", &["y"], None), org("new", "1", &["x"], None)];
        let snapshot = Snapshot::new(live, &applied);
        assert_eq!(snapshot.objects().count(), 4);
        let names = |objs: Vec<Arc<OrgMetadata>>| -> Vec<String> {
            let mut n: Vec<String> = objs.iter().map(|o| o.name_any()).collect();
            n.sort();
            n
        };
        let on_1 = snapshot.on_target(&org("q", "1", &[], None)).await;
        assert_eq!(names(on_1), ["a", "new"]);
        let on_2 = snapshot.on_target(&org("q", "2", &[], None)).await;
        assert_eq!(names(on_2), ["b", "c"]);
    }
}
