//! Building an object's diff from its preview: provenance, redaction, key by key.

use super::*;

/// Where a key's desired value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Provenance {
    Inline,
    Secret(String),
    ConfigMap(String),
}

impl Provenance {
    pub(super) fn label(&self) -> String {
        match self {
            Provenance::Inline => "inline".into(),
            Provenance::Secret(name) => format!("Secret/{name}"),
            Provenance::ConfigMap(name) => format!("ConfigMap/{name}"),
        }
    }
}

pub(super) fn provenance<K: MetadataResource>(obj: &K) -> BTreeMap<String, Provenance> {
    obj.entries()
        .iter()
        .map(|e| {
            let source = e.value_from.as_deref();
            let p = match (
                source.and_then(|s| s.secret_key_ref.as_ref()),
                source.and_then(|s| s.config_map_key_ref.as_ref()),
            ) {
                (Some(r), _) => Provenance::Secret(r.name.clone()),
                (None, Some(r)) => Provenance::ConfigMap(r.name.clone()),
                (None, None) => Provenance::Inline,
            };
            (e.key.clone(), p)
        })
        .collect()
}

/// Shows or redacts values of one key.
pub(super) struct Redactor {
    pub(super) reveal: Reveal,
    /// Values of this key may be shown at `--show-values`: a spec key whose value is inline or
    /// from a ConfigMap.
    pub(super) shareable: bool,
}

impl Redactor {
    pub(super) fn show(&self, bytes: Option<&Vec<u8>>, redacted: &mut bool) -> Option<Value> {
        let bytes = bytes?;
        let shown = match self.reveal {
            Reveal::All => true,
            Reveal::NonSecret => self.shareable,
            Reveal::None => false,
        };
        if shown {
            Some(Value::of(bytes))
        } else {
            *redacted = true;
            None
        }
    }
}

pub(super) fn key_diff(
    key: &str,
    action: KeyAction,
    change: Option<Change>,
    values: (Option<&Vec<u8>>, Option<&Vec<u8>>),
    source: Option<&Provenance>,
    reveal: Reveal,
) -> KeyDiff {
    // Only values whose origin is known to be the spec (inline or a ConfigMap) are shareable,
    // and only for keys the spec still lists and this object writes or keeps.
    let from_spec = matches!(
        action,
        KeyAction::Set | KeyAction::Adopt | KeyAction::Unchanged | KeyAction::Drift
    ) && change != Some(Change::Remove);
    let shareable =
        from_spec && matches!(source, Some(Provenance::Inline | Provenance::ConfigMap(_)));
    let redactor = Redactor { reveal, shareable };
    let mut redacted = false;
    let current = redactor.show(values.0, &mut redacted);
    let desired = redactor.show(values.1, &mut redacted);
    KeyDiff {
        key: key.to_string(),
        action,
        change,
        source: source.map(Provenance::label),
        claimed_by: None,
        current,
        desired,
        redacted,
    }
}

/// The keys of a planned object: what each would become.
pub(super) fn planned_keys(
    preview: &ObjectPreview,
    planned: &crate::controller::metadata::sync::Planned,
    policy: DriftPolicy,
    sources: &BTreeMap<String, Provenance>,
    reveal: Reveal,
) -> Vec<KeyDiff> {
    let (d, o, plan) = (&planned.desired, &planned.observed, &planned.plan);
    let report = policy == DriftPolicy::Report;
    let mut keys: BTreeSet<&String> = d.keys().chain(o.keys()).collect();
    keys.extend(planned.conflicts.keys());
    keys.extend(preview.previously_managed.iter());
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let (current, desired) = (o.get(key), d.get(key));
        let source = sources.get(key);
        let (action, change) =
            if plan.set.contains_key(key) && current.is_some() && current == desired {
                // A new object's first write sends every key without listing: one ZITADEL already
                // holds is adopted by setting it again (no value changes).
                (KeyAction::Adopt, Some(Change::Same))
            } else if plan.set.contains_key(key) {
                let change = if current.is_some() {
                    Change::Update
                } else {
                    Change::Add
                };
                let action = if report {
                    KeyAction::Drift
                } else {
                    KeyAction::Set
                };
                (action, Some(change))
            } else if plan.remove.contains(key) {
                if report {
                    (KeyAction::Drift, Some(Change::Remove))
                } else {
                    (KeyAction::Remove, None)
                }
            } else if plan.unchanged.contains(key) {
                if preview.previously_managed.contains(key) {
                    (KeyAction::Unchanged, None)
                } else {
                    (KeyAction::Adopt, None)
                }
            } else if let Some(owner) = planned.conflicts.get(key) {
                let mut diff = key_diff(
                    key,
                    KeyAction::Conflict,
                    None,
                    (current, None),
                    source,
                    reveal,
                );
                diff.claimed_by = Some(owner.clone());
                out.push(diff);
                continue;
            } else if current.is_none() {
                // Managed, left the spec, already gone.
                (KeyAction::Forget, None)
            } else {
                (KeyAction::Unmanaged, None)
            };
        out.push(key_diff(
            key,
            action,
            change,
            (current, desired),
            source,
            reveal,
        ));
    }
    out
}

/// The report entry of one previewed object (`origin`, `exists` and notes are the caller's).
pub fn object_diff<K: MetadataResource>(
    obj: &K,
    preview: &ObjectPreview,
    reveal: Reveal,
) -> ObjectDiff {
    let sources = provenance(obj);
    let (result, outcome, keys, connection) = match &preview.verdict {
        Verdict::Suspended => (
            ObjectResult::Suspended,
            Some(OutcomeView {
                state: "Suspended".into(),
                reason: crate::reason::Reason::Suspended.to_string(),
                message: "spec.suspend is true: ZITADEL is neither read nor written".into(),
            }),
            Vec::new(),
            None,
        ),
        Verdict::Deleting => (ObjectResult::Deleting, None, Vec::new(), None),
        Verdict::Unchanged => (
            ObjectResult::NotRead,
            Some(OutcomeView {
                state: "Ready".into(),
                reason: crate::reason::Reason::Synced.to_string(),
                message: "driftPolicy Ignore and nothing changed since the last sync: ZITADEL is neither read nor written".into(),
            }),
            Vec::new(),
            None,
        ),
        Verdict::Failed { outcome } => (
            ObjectResult::Error,
            Some(OutcomeView::of(outcome)),
            Vec::new(),
            None,
        ),
        Verdict::Planned { planned, outcome } => {
            let keys = planned_keys(preview, planned, obj.drift_policy(), &sources, reveal);
            let result = if keys.iter().any(|k| k.action.writes()) {
                ObjectResult::Changes
            } else if keys.iter().any(|k| k.action == KeyAction::Drift) {
                ObjectResult::DriftReported
            } else {
                ObjectResult::NoChanges
            };
            (
                result,
                Some(OutcomeView::of(outcome)),
                keys,
                Some(planned.granted.name.clone()),
            )
        }
    };
    ObjectDiff {
        result,
        connection,
        target: TargetIds {
            organization_id: preview.org_id.clone(),
            user_id: preview.user_id.clone(),
        },
        outcome,
        keys,
        ..base(obj)
    }
}

/// The entry of a manifest the API server would reject (`InvalidSpec`): nothing is previewed.
pub fn rejected_diff<K: MetadataResource>(obj: &K, message: &str) -> ObjectDiff {
    ObjectDiff {
        result: ObjectResult::Error,
        outcome: Some(OutcomeView {
            state: "Rejected".into(),
            reason: crate::reason::Reason::InvalidSpec.to_string(),
            message: message.to_string(),
        }),
        ..base(obj)
    }
}

pub(super) fn base<K: MetadataResource>(obj: &K) -> ObjectDiff {
    ObjectDiff {
        kind: K::kind(&()).to_string(),
        namespace: obj.namespace().unwrap_or_default(),
        name: obj.name_any(),
        origin: None,
        exists: false,
        result: ObjectResult::NoChanges,
        connection: None,
        target: TargetIds::default(),
        drift_policy: obj.drift_policy(),
        deletion_policy: obj.deletion_policy(),
        outcome: None,
        keys: Vec::new(),
        notes: Vec::new(),
    }
}
