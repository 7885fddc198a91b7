//! The text output: one block per object, a line per key that matters, a summary line.
//!
//! ```text
//! OrgMetadata team-a/acme (manifests/acme.yaml): organization 100000000000000001 via the operator's default connection
//!   + cost-center = "CC-4711"
//!   ~ tier: "gold" -> "platinum"
//!   - legacy (value redacted)
//!   = region (adopt: ZITADEL already holds the desired value)
//!   ! shared (left alone: claimed by team-a/older)
//!   . left alone (not managed by this object): external
//!     2 keys unchanged
//!   after: Stalled (KeyConflict): …
//! ```

use std::fmt::Write as _;

use super::model::{
    Change, DiffReport, KeyAction, KeyDiff, ObjectDiff, ObjectResult, OutcomeView, Value,
};

/// Longest value shown in full; longer ones are cut with their size.
const MAX_SHOWN_CHARS: usize = 120;
/// Unmanaged keys named per object; the rest are counted.
const MAX_LISTED_KEYS: usize = 20;

/// Order of key lines: writes, reported drift, adoptions, claims, forgotten, left alone.
fn rank(action: KeyAction) -> u8 {
    match action {
        KeyAction::Set => 0,
        KeyAction::Remove => 1,
        KeyAction::Drift => 2,
        KeyAction::Adopt => 3,
        KeyAction::Conflict => 4,
        KeyAction::Forget => 5,
        KeyAction::Unmanaged => 6,
        KeyAction::Unchanged => 7,
    }
}

/// The whole report as text.
pub fn text(report: &DiffReport) -> String {
    let mut out = String::new();
    for object in &report.objects {
        object_block(&mut out, object);
    }
    for ignored in &report.ignored {
        let name = ignored.name.as_deref().unwrap_or("(no name)");
        let _ = writeln!(
            out,
            "ignored: {} {} {name} ({}): {}",
            ignored.api_version, ignored.kind, ignored.origin, ignored.reason
        );
    }
    for note in &report.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out.push_str(&summary(report));
    out.push('\n');
    out
}

/// The summary line.
pub fn summary(report: &DiffReport) -> String {
    let s = &report.summary;
    let mut line = format!(
        "Summary: {} {} previewed: {} with changes, {} without, {} {}; keys: {} to set, {} to remove, {} to adopt",
        s.objects,
        plural(s.objects, "object", "objects"),
        s.with_changes,
        s.without_changes,
        s.errors,
        plural(s.errors, "error", "errors"),
        s.set,
        s.removed,
        s.adopted,
    );
    for (n, what) in [
        (s.drifted, "drifted (reported, not written)"),
        (s.conflicts, "claimed by other objects"),
        (s.unmanaged, "unmanaged (left alone)"),
        (s.unchanged, "unchanged"),
    ] {
        if n > 0 {
            let _ = write!(line, ", {n} {what}");
        }
    }
    line.push('.');
    line
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

fn object_block(out: &mut String, object: &ObjectDiff) {
    let _ = write!(out, "{} {}/{}", object.kind, object.namespace, object.name);
    if let Some(origin) = &object.origin {
        let _ = write!(out, " ({origin})");
    }
    match object.result {
        ObjectResult::Suspended => {
            out.push_str(": suspended (spec.suspend): nothing would be read or written\n");
        }
        ObjectResult::Deleting => {
            out.push_str(
                ": being deleted: the cleanup runs instead of a sync (not previewed)\n",
            );
        }
        ObjectResult::NotRead => out.push_str(
            ": nothing to do (driftPolicy Ignore and nothing changed since the last sync; ZITADEL is not read)\n",
        ),
        ObjectResult::Error => {
            out.push_str(": cannot be previewed; the reconcile would not write either\n");
            if let Some(outcome) = &object.outcome {
                let _ = writeln!(out, "  error: {}", outcome_text(outcome));
            }
        }
        ObjectResult::Changes | ObjectResult::NoChanges | ObjectResult::DriftReported => {
            planned_block(out, object);
        }
    }
    for note in &object.notes {
        let _ = writeln!(out, "  note: {note}");
    }
}

fn planned_block(out: &mut String, object: &ObjectDiff) {
    out.push_str(": ");
    match (&object.target.user_id, &object.target.organization_id) {
        (Some(user), Some(org)) => {
            let _ = write!(out, "user {user} in organization {org}");
        }
        (Some(user), None) => {
            let _ = write!(out, "user {user}");
        }
        (None, Some(org)) => {
            let _ = write!(out, "organization {org}");
        }
        (None, None) => out.push_str("target not resolved"),
    }
    if let Some(connection) = &object.connection {
        let _ = write!(out, " via {connection}");
    }
    if object.result == ObjectResult::NoChanges {
        out.push_str(": no changes");
    }
    out.push('\n');
    // Writes first, then what is only reported or adopted, then what is left alone.
    let mut keys: Vec<&KeyDiff> = object.keys.iter().collect();
    keys.sort_by_key(|k| (rank(k.action), k.key.as_str()));
    let mut unmanaged = Vec::new();
    let mut unchanged = 0;
    for key in keys {
        match key.action {
            KeyAction::Unchanged => unchanged += 1,
            KeyAction::Unmanaged => unmanaged.push(key.key.as_str()),
            _ => {
                let _ = writeln!(out, "  {}", key_line(key));
            }
        }
    }
    if !unmanaged.is_empty() {
        let shown: Vec<String> = unmanaged
            .iter()
            .take(MAX_LISTED_KEYS)
            .map(|k| k.to_string())
            .collect();
        let more = unmanaged.len().saturating_sub(MAX_LISTED_KEYS);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  . left alone (not managed by this object): {}{more}",
            shown.join(", ")
        );
    }
    if unchanged > 0 {
        let _ = writeln!(
            out,
            "    {unchanged} {} unchanged",
            plural(unchanged, "key", "keys")
        );
    }
    if let Some(outcome) = &object.outcome {
        let _ = writeln!(out, "  after: {}", outcome_text(outcome));
    }
}

fn outcome_text(outcome: &OutcomeView) -> String {
    match outcome.state.as_str() {
        "Ready" => "Ready".into(),
        state if state == outcome.reason => format!("{state}: {}", outcome.message),
        state => format!("{state} ({}): {}", outcome.reason, outcome.message),
    }
}

/// One key's line (without indentation).
pub fn key_line(key: &KeyDiff) -> String {
    let name = &key.key;
    let source = key
        .source
        .as_deref()
        .filter(|s| *s != "inline")
        .map(|s| format!(" [{s}]"))
        .unwrap_or_default();
    let redacted = if key.redacted {
        " (value redacted)"
    } else {
        ""
    };
    match (key.action, key.change) {
        (KeyAction::Set, Some(Change::Update)) => match (&key.current, &key.desired) {
            (Some(current), Some(desired)) => format!(
                "~ {name}{source}: {} -> {}",
                value_text(current),
                value_text(desired)
            ),
            _ => format!("~ {name}{source}{redacted}"),
        },
        (KeyAction::Set, _) => match &key.desired {
            Some(desired) => format!("+ {name}{source} = {}", value_text(desired)),
            None => format!("+ {name}{source}{redacted}"),
        },
        (KeyAction::Remove, _) => match &key.current {
            Some(current) => format!("- {name} (was {})", value_text(current)),
            None => format!("- {name}{redacted}"),
        },
        (KeyAction::Adopt, _) => {
            format!("= {name}{source} (adopt: ZITADEL already holds the desired value)")
        }
        (KeyAction::Unchanged, _) => format!("  {name}{source} (unchanged)"),
        (KeyAction::Drift, change) => {
            let what = match change {
                Some(Change::Add) => "missing in ZITADEL",
                Some(Change::Update) => "differs",
                _ => "managed, left the spec, still in ZITADEL",
            };
            let values = match (&key.current, &key.desired) {
                (Some(c), Some(d)) => format!(": {} -> {}", value_text(c), value_text(d)),
                (None, Some(d)) => format!(" = {}", value_text(d)),
                _ => redacted.to_string(),
            };
            format!("? {name}{source}{values} (drift, {what}: reported, not written)")
        }
        (KeyAction::Conflict, _) => format!(
            "! {name}{source} (left alone: claimed by {})",
            key.claimed_by.as_deref().unwrap_or("another object")
        ),
        (KeyAction::Unmanaged, _) => {
            format!(". {name} (left alone: not managed by this object)")
        }
        (KeyAction::Forget, _) => {
            format!("x {name} (no longer managed: already gone from ZITADEL)")
        }
    }
}

/// A value for humans: quoted text (cut after [`MAX_SHOWN_CHARS`] characters), or base64.
pub fn value_text(value: &Value) -> String {
    let (prefix, body) = match value {
        Value::Text(t) => ("", t.as_str()),
        Value::Base64(b) => ("base64:", b.as_str()),
    };
    let chars = body.chars().count();
    if chars <= MAX_SHOWN_CHARS {
        return format!("{prefix}{body:?}");
    }
    let cut: String = body.chars().take(MAX_SHOWN_CHARS).collect();
    format!("{prefix}{cut:?}… ({chars} characters)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::model::{Mode, Summary, TargetIds};

    fn key(name: &str, action: KeyAction, change: Option<Change>) -> KeyDiff {
        KeyDiff {
            key: name.into(),
            action,
            change,
            source: Some("inline".into()),
            claimed_by: None,
            current: None,
            desired: None,
            redacted: false,
        }
    }

    fn text_value(s: &str) -> Option<Value> {
        Some(Value::Text(s.into()))
    }

    #[test]
    fn key_lines_say_what_happens() {
        let mut add = key("cost-center", KeyAction::Set, Some(Change::Add));
        add.desired = text_value("CC-4711");
        assert_eq!(key_line(&add), r#"+ cost-center = "CC-4711""#);
        let mut update = key("tier", KeyAction::Set, Some(Change::Update));
        update.current = text_value("gold");
        update.desired = text_value("platinum");
        assert_eq!(key_line(&update), r#"~ tier: "gold" -> "platinum""#);
        let mut secret = key("api-key", KeyAction::Set, Some(Change::Update));
        secret.source = Some("Secret/api".into());
        secret.redacted = true;
        assert_eq!(key_line(&secret), "~ api-key [Secret/api] (value redacted)");
        let mut removed = key("legacy", KeyAction::Remove, None);
        removed.source = None;
        removed.redacted = true;
        assert_eq!(key_line(&removed), "- legacy (value redacted)");
        assert_eq!(
            key_line(&key("region", KeyAction::Adopt, None)),
            "= region (adopt: ZITADEL already holds the desired value)"
        );
        let mut claimed = key("shared", KeyAction::Conflict, None);
        claimed.claimed_by = Some("team-a/older".into());
        assert_eq!(
            key_line(&claimed),
            "! shared (left alone: claimed by team-a/older)"
        );
        assert_eq!(
            key_line(&key("external", KeyAction::Unmanaged, None)),
            ". external (left alone: not managed by this object)"
        );
        assert_eq!(
            key_line(&key("gone", KeyAction::Forget, None)),
            "x gone (no longer managed: already gone from ZITADEL)"
        );
        let mut drift = key("tier", KeyAction::Drift, Some(Change::Update));
        drift.redacted = true;
        assert_eq!(
            key_line(&drift),
            "? tier (value redacted) (drift, differs: reported, not written)"
        );
    }

    #[test]
    fn long_and_binary_values_are_cut_and_encoded() {
        let long = "x".repeat(500);
        let shown = value_text(&Value::Text(long));
        assert!(shown.ends_with("… (500 characters)"), "{shown}");
        assert!(shown.chars().count() < 150, "{shown}");
        assert_eq!(
            value_text(&Value::Base64("3q2+7w==".into())),
            "base64:\"3q2+7w==\""
        );
        assert_eq!(value_text(&Value::Text("a\nb".into())), r#""a\nb""#);
    }

    fn object(
        result: ObjectResult,
        keys: Vec<KeyDiff>,
        outcome: Option<OutcomeView>,
    ) -> ObjectDiff {
        ObjectDiff {
            kind: "OrgMetadata".into(),
            namespace: "team-a".into(),
            name: "acme".into(),
            origin: Some("manifests/acme.yaml".into()),
            exists: true,
            result,
            connection: Some("the operator's default connection".into()),
            target: TargetIds {
                organization_id: Some("1".into()),
                user_id: None,
            },
            drift_policy: Default::default(),
            deletion_policy: Default::default(),
            outcome,
            keys,
            notes: Vec::new(),
        }
    }

    #[test]
    fn a_report_renders_block_by_block_with_a_summary() {
        let mut add = key("a", KeyAction::Set, Some(Change::Add));
        add.desired = text_value("1");
        let mut removed = key("0-old", KeyAction::Remove, None);
        removed.redacted = true;
        let keys = vec![
            removed,
            key("a-ext", KeyAction::Unmanaged, None),
            add,
            key("b", KeyAction::Unchanged, None),
            key("c", KeyAction::Unchanged, None),
            key("z-ext", KeyAction::Unmanaged, None),
        ];
        let ready = OutcomeView {
            state: "Ready".into(),
            reason: "Synced".into(),
            message: "3 key(s) in sync".into(),
        };
        let stalled = OutcomeView {
            state: "Stalled".into(),
            reason: "ValueSourceNotFound".into(),
            message: "metadata key \"k\": Secret \"s\" not found in namespace team-a; nothing was written".into(),
        };
        let mut failed = object(ObjectResult::Error, Vec::new(), Some(stalled));
        failed.name = "broken".into();
        failed.origin = None;
        let mut paused = object(ObjectResult::Suspended, Vec::new(), None);
        paused.name = "paused".into();
        paused.notes.push("spec unchanged".into());
        let report = DiffReport::new(
            Mode::Manifests,
            vec![
                object(ObjectResult::Changes, keys, Some(ready)),
                failed,
                paused,
            ],
            vec![crate::diff::model::Ignored {
                origin: "manifests/cm.yaml".into(),
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: Some("settings".into()),
                reason: "not an OrgMetadata or UserMetadata".into(),
            }],
            vec!["a note".into()],
        );
        let expected = r#"OrgMetadata team-a/acme (manifests/acme.yaml): organization 1 via the operator's default connection
  + a = "1"
  - 0-old (value redacted)
  . left alone (not managed by this object): a-ext, z-ext
    2 keys unchanged
  after: Ready
OrgMetadata team-a/broken: cannot be previewed; the reconcile would not write either
  error: Stalled (ValueSourceNotFound): metadata key "k": Secret "s" not found in namespace team-a; nothing was written
OrgMetadata team-a/paused (manifests/acme.yaml): suspended (spec.suspend): nothing would be read or written
  note: spec unchanged
ignored: v1 ConfigMap settings (manifests/cm.yaml): not an OrgMetadata or UserMetadata
note: a note
Summary: 3 objects previewed: 1 with changes, 1 without, 1 error; keys: 1 to set, 1 to remove, 0 to adopt, 2 unmanaged (left alone), 2 unchanged.
"#;
        assert_eq!(text(&report), expected);
        assert_eq!(report.exit_code, 2);
        assert_eq!(
            report.summary,
            Summary {
                objects: 3,
                with_changes: 1,
                without_changes: 1,
                errors: 1,
                set: 1,
                removed: 1,
                unmanaged: 2,
                unchanged: 2,
                ..Summary::default()
            }
        );
    }
}
