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
        (KeyAction::Adopt, Some(Change::Same)) => format!(
            "= {name}{source} (adopt: ZITADEL already holds the desired value; a new object's first write sets it again)"
        ),
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
mod tests;
