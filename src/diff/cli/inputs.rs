//! Reading the inputs of a diff: manifests from files or stdin, live objects by selector, and their previews.

use super::*;

/// Every document of the `-f` arguments, in order.
pub(super) fn read_documents(
    paths: &[String],
    recursive: bool,
) -> Result<Vec<Document>, DiffError> {
    let mut documents = Vec::new();
    let mut stdin_read = false;
    for path in paths {
        for file in manifests::expand(path, recursive)? {
            let name = file.display().to_string();
            let read_error = |source| ManifestError::Read {
                path: name.clone(),
                source,
            };
            let text = if name == "-" {
                if std::mem::replace(&mut stdin_read, true) {
                    return Err(DiffError::Flags("-f - may be given only once".into()));
                }
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .map_err(read_error)?;
                text
            } else {
                std::fs::read_to_string(&file).map_err(read_error)?
            };
            documents.extend(manifests::parse(&name, &text)?);
        }
    }
    Ok(documents)
}

/// Manifests by kind, with their position.
pub(super) type Indexed<K> = Vec<(usize, String, K)>;

pub(super) fn split(
    manifests: Vec<(String, Manifest)>,
) -> (Indexed<OrgMetadata>, Indexed<UserMetadata>) {
    let (mut orgs, mut users) = (Vec::new(), Vec::new());
    for (index, (origin, manifest)) in manifests.into_iter().enumerate() {
        match manifest {
            Manifest::Org(o) => orgs.push((index, origin, *o)),
            Manifest::User(u) => users.push((index, origin, *u)),
        }
    }
    (orgs, users)
}

/// Manifests of one kind merged with their live objects, and the snapshot of that kind after
/// the apply.
pub(super) async fn manifest_items<K: MetadataResource>(
    client: &Client,
    manifests: Indexed<K>,
    namespaces: &BTreeSet<String>,
    notes: &mut Vec<String>,
) -> Result<(Vec<Item<K>>, Snapshot<K>), DiffError> {
    let listed = list_kind::<K>(client, namespaces, notes).await?;
    let key = |o: &K| (o.namespace().unwrap_or_default(), o.name_any());
    let mut seen = BTreeSet::new();
    let mut items = Vec::new();
    for (index, origin, manifest) in manifests {
        if !seen.insert(key(&manifest)) {
            return Err(DiffError::Flags(format!(
                "{origin}: {} {}/{} appears more than once in the manifests",
                K::kind(&()),
                manifest.namespace().unwrap_or_default(),
                manifest.name_any()
            )));
        }
        let live = listed.iter().find(|o| key(o) == key(&manifest));
        let (obj, item_notes, refused) = match as_applied(&manifest, live) {
            Ok((obj, notes)) => (obj, notes, None),
            Err(refused) => (manifest, Vec::new(), Some(refused.0)),
        };
        items.push(Item {
            index,
            obj,
            origin: Some(origin),
            exists: live.is_some(),
            notes: item_notes,
            refused,
        });
    }
    let applied: Vec<K> = items
        .iter()
        .filter(|i| i.refused.is_none())
        .map(|i| i.obj.clone())
        .collect();
    let snapshot = Snapshot::new(listed, &applied);
    Ok((items, snapshot))
}

/// Live objects of one kind (all namespaces, else those given), with any note.
pub(super) async fn list_kind<K: MetadataResource>(
    client: &Client,
    namespaces: &BTreeSet<String>,
    notes: &mut Vec<String>,
) -> Result<Vec<K>, DiffError> {
    let Listed {
        objects,
        notes: more,
    } = list_live::<K>(client, namespaces)
        .await
        .map_err(|source| DiffError::Kube {
            what: format!("{} objects", K::kind(&())),
            source,
        })?;
    notes.extend(more);
    Ok(objects)
}

/// `--live` object selection.
pub(super) struct Selection {
    /// (kind, name): `None` kind = all kinds; `None` name = all of the kind.
    pub(super) wanted: Vec<(&'static str, Option<String>)>,
}

impl Selection {
    pub(super) fn parse(args: &[String]) -> Result<Selection, DiffError> {
        let mut wanted = Vec::new();
        for arg in args {
            let (kind, name) = match arg.split_once('/') {
                Some((k, n)) if !n.is_empty() => (k, Some(n.to_string())),
                Some(_) => return Err(DiffError::Flags(format!("{arg:?}: name missing"))),
                None => (arg.as_str(), None),
            };
            let kind = match kind.to_ascii_lowercase().as_str() {
                "orgmetadata"
                | "orgmetadatas"
                | "orgmd"
                | "orgmetadatas.metadata.zitadel-operator.dev" => "OrgMetadata",
                "usermetadata"
                | "usermetadatas"
                | "usermd"
                | "usermetadatas.metadata.zitadel-operator.dev" => "UserMetadata",
                _ => {
                    return Err(DiffError::Flags(format!(
                        "{arg:?}: unknown type (use orgmetadata, orgmd, usermetadata or usermd)"
                    )));
                }
            };
            wanted.push((kind, name));
        }
        Ok(Selection { wanted })
    }

    pub(super) fn selects<K: MetadataResource>(&self, obj: &K) -> bool {
        let kind = K::kind(&());
        self.wanted.is_empty()
            || self
                .wanted
                .iter()
                .any(|(k, name)| *k == kind && name.as_deref().is_none_or(|n| n == obj.name_any()))
    }
}

/// Live objects of one kind to preview (in `scope`, else all namespaces), and the snapshot of
/// all of that kind.
pub(super) async fn live_items<K: MetadataResource>(
    client: &Client,
    scope: Option<&str>,
    selection: &Selection,
    notes: &mut Vec<String>,
) -> Result<(Vec<Item<K>>, Snapshot<K>), DiffError> {
    let namespaces: BTreeSet<String> = scope.map(str::to_owned).into_iter().collect();
    let listed = list_kind::<K>(client, &namespaces, notes).await?;
    let base = if K::kind(&()) == "OrgMetadata" {
        0
    } else {
        listed.len() + 1_000_000
    };
    let items: Vec<Item<K>> = listed
        .iter()
        .filter(|o| scope.is_none_or(|ns| o.namespace().as_deref() == Some(ns)))
        .filter(|o| selection.selects(*o))
        .enumerate()
        .map(|(i, obj)| Item {
            index: base + i,
            obj: obj.clone(),
            origin: None,
            exists: true,
            notes: Vec::new(),
            refused: None,
        })
        .collect();
    for (kind, name) in &selection.wanted {
        if let Some(name) = name
            && *kind == K::kind(&())
            && !items.iter().any(|i| i.obj.name_any() == *name)
        {
            return Err(DiffError::Flags(format!(
                "{kind} {name:?} not found{}",
                scope
                    .map(|ns| format!(" in namespace {ns}"))
                    .unwrap_or_default()
            )));
        }
    }
    Ok((items, Snapshot::new(listed, &[])))
}

/// Preview the items of one kind (at most `env.concurrency` at once), as (index, entry).
pub(super) async fn preview_kind<K: MetadataResource>(
    env: &Env,
    items: Vec<Item<K>>,
    snapshot: Snapshot<K>,
) -> Vec<(usize, ObjectDiff)> {
    let reads = Reads {
        sources: env.sources.as_ref(),
        connections: &env.connections,
        neighbours: &snapshot,
    };
    let reads = &reads;
    futures::stream::iter(items)
        .map(|item| async move { (item.index, preview_item(env, reads, item).await) })
        .buffered(env.concurrency)
        .collect()
        .await
}

pub(super) async fn preview_item<K: MetadataResource>(
    env: &Env,
    reads: &Reads<'_, K>,
    item: Item<K>,
) -> ObjectDiff {
    let mut diff = match &item.refused {
        Some(why) => rejected_diff(&item.obj, why),
        None => {
            let preview = preview(&item.obj, reads, &env.settings).await;
            object_diff(&item.obj, &preview, env.reveal)
        }
    };
    diff.origin = item.origin;
    diff.exists = item.exists;
    diff.notes = item.notes;
    let no_connection = diff
        .outcome
        .as_ref()
        .is_some_and(|o| o.reason == Reason::ConnectionNotFound.as_str());
    if no_connection && env.no_default && item.obj.connection_ref().is_none() {
        diff.notes.push(
            "pass --zitadel-url with --token-file or --token-secret to preview objects without spec.connectionRef (the operator's default connection)".into(),
        );
    }
    diff
}
