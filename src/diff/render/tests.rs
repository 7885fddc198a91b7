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

fn object(result: ObjectResult, keys: Vec<KeyDiff>, outcome: Option<OutcomeView>) -> ObjectDiff {
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
        message:
            "metadata key \"k\": Secret \"s\" not found in namespace team-a; nothing was written"
                .into(),
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
