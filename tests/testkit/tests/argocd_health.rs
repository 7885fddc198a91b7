//! The Argo CD health check `deploy/argocd/health.lua`, run in a Lua 5.1 interpreter (C Lua via
//! mlua; Argo CD's gopher-lua implements 5.1) against hand-written OrgMetadata/UserMetadata
//! samples, including statuses of earlier operator versions: the live object in the global
//! `obj`, the returned table's `status` and `message`. Also: `deploy/argocd/argocd-cm-patch.yaml`
//! embeds exactly that script for both kinds. The proof on objects the operator wrote, in
//! gopher-lua with Argo CD's sandbox, is `tests/e2e_gitops.rs`.

use std::path::PathBuf;

use mlua::serde::SerializeOptions;
use mlua::{Lua, LuaSerdeExt, Table};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn script() -> String {
    std::fs::read_to_string(repo().join("deploy/argocd/health.lua")).expect("health.lua")
}

/// Runs the health check on `obj`; returns (status, message).
fn health(obj: &Value) -> (String, String) {
    let lua = Lua::new();
    // JSON null becomes nil, as in Argo CD (not mlua's null light userdata).
    let options = SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    let value = lua.to_value_with(obj, options).expect("object to Lua");
    lua.globals().set("obj", value).expect("set obj");
    let hs: Table = lua
        .load(script())
        .set_name("health.lua")
        .eval()
        .expect("health.lua runs and returns a table");
    (
        hs.get::<String>("status").expect("status"),
        hs.get::<String>("message").expect("message"),
    )
}

fn condition(type_: &str, status: &str, reason: &str, message: &str, generation: i64) -> Value {
    json!({
        "type": type_, "status": status, "reason": reason, "message": message,
        "observedGeneration": generation, "lastTransitionTime": "2026-11-23T12:00:00Z",
    })
}

/// An object of `kind` at `generation` with the three conditions (Ready, Reconciling, Stalled)
/// as the operator writes them, for `observed`.
fn object(
    kind: &str,
    generation: i64,
    observed: i64,
    (ready, reconciling, stalled): (&str, &str, &str),
    reason: &str,
    message: &str,
) -> Value {
    json!({
        "apiVersion": "metadata.zitadel-operator.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": "acme", "namespace": "default", "generation": generation},
        "spec": {"organizationId": "100000000000000001", "metadata": [{"key": "a", "value": "x"}]},
        "status": {
            "observedGeneration": observed,
            "organizationId": "100000000000000001",
            "managedKeys": ["a"],
            "managedKeyCount": 1,
            "conditions": [
                condition("Ready", ready, reason, message, observed),
                condition("Reconciling", reconciling, reason, message, observed),
                condition("Stalled", stalled, reason, message, observed),
            ],
        },
    })
}

const KINDS: [&str; 2] = ["OrgMetadata", "UserMetadata"];

#[test]
fn the_interpreter_is_lua_5_1_like_argo_cd() {
    let version: String = Lua::new().globals().get("_VERSION").expect("_VERSION");
    assert_eq!(version, "Lua 5.1");
}

#[test]
fn ready_for_the_current_generation_is_healthy() {
    for kind in KINDS {
        let obj = object(
            kind,
            3,
            3,
            ("True", "False", "False"),
            "Synced",
            "1 key in sync",
        );
        assert_eq!(
            health(&obj),
            ("Healthy".into(), "Synced: 1 key in sync".into()),
            "{kind}"
        );
    }
}

#[test]
fn no_status_or_no_conditions_is_progressing() {
    for kind in KINDS {
        let mut obj = object(kind, 1, 1, ("True", "False", "False"), "Synced", "");
        obj.as_object_mut().unwrap().remove("status");
        let (status, message) = health(&obj);
        assert_eq!(status, "Progressing", "{kind}");
        assert!(message.contains("Waiting for the operator"), "{message}");

        obj["status"] = json!({});
        assert_eq!(health(&obj).0, "Progressing");
        obj["status"] = json!({"conditions": []});
        assert_eq!(health(&obj).0, "Progressing");
    }
}

#[test]
fn a_status_for_an_older_generation_is_progressing_even_if_ready() {
    for kind in KINDS {
        let obj = object(kind, 4, 3, ("True", "False", "False"), "Synced", "ok");
        assert_eq!(
            health(&obj),
            (
                "Progressing".into(),
                "Waiting for the operator to observe generation 4".into()
            ),
            "{kind}"
        );
        // An old Stalled status is not trusted either: the new spec may have fixed it.
        let obj = object(kind, 2, 1, ("False", "False", "True"), "InvalidSpec", "bad");
        assert_eq!(health(&obj).0, "Progressing");
    }
}

#[test]
fn reconciling_is_progressing_with_the_ready_message() {
    for kind in KINDS {
        let obj = object(
            kind,
            2,
            2,
            ("False", "True", "False"),
            "ZitadelUnavailable",
            "ZITADEL answered 503; retrying in 4s",
        );
        assert_eq!(
            health(&obj),
            (
                "Progressing".into(),
                "ZitadelUnavailable: ZITADEL answered 503; retrying in 4s".into()
            ),
            "{kind}"
        );
    }
}

#[test]
fn stalled_is_degraded_with_the_ready_message() {
    for kind in KINDS {
        let obj = object(
            kind,
            5,
            5,
            ("False", "False", "True"),
            "ZitadelPermissionDenied",
            "the service user may not write metadata in org 100000000000000001",
        );
        assert_eq!(
            health(&obj),
            (
                "Degraded".into(),
                "ZitadelPermissionDenied: the service user may not write metadata in org 100000000000000001".into()
            ),
            "{kind}"
        );
    }
}

#[test]
fn suspended_without_ready_and_drift_as_stalled() {
    // What the operator writes now: suspended objects have no Ready condition; reported drift
    // is Stalled=True with reason Drifted.
    let mut obj = object(
        "OrgMetadata",
        3,
        3,
        ("False", "False", "False"),
        "Suspended",
        "reconciliation is suspended",
    );
    obj["status"]["conditions"]
        .as_array_mut()
        .unwrap()
        .retain(|c| c["type"] != "Ready");
    assert_eq!(
        health(&obj),
        (
            "Suspended".into(),
            "Suspended: reconciliation is suspended".into()
        )
    );
    let obj = object(
        "UserMetadata",
        2,
        2,
        ("False", "False", "True"),
        "Drifted",
        "1 key(s) differ",
    );
    assert_eq!(
        health(&obj),
        ("Degraded".into(), "Drifted: 1 key(s) differ".into())
    );
}

/// Statuses written by earlier versions of the operator (Ready=False with reason Suspended or
/// Drifted, nothing stalled) keep their meaning.
#[test]
fn suspended_and_reported_drift() {
    let obj = object(
        "OrgMetadata",
        2,
        2,
        ("False", "False", "False"),
        "Suspended",
        "reconciliation is suspended",
    );
    assert_eq!(health(&obj).0, "Suspended");
    let obj = object(
        "UserMetadata",
        2,
        2,
        ("False", "False", "False"),
        "Drifted",
        "ZITADEL differs in key a",
    );
    assert_eq!(
        health(&obj),
        (
            "Degraded".into(),
            "Drifted: ZITADEL differs in key a".into()
        )
    );
    // Ready=False with no other signal: still on its way.
    let obj = object(
        "OrgMetadata",
        1,
        1,
        ("Unknown", "False", "False"),
        "Pending",
        "",
    );
    assert_eq!(health(&obj), ("Progressing".into(), "Pending".into()));
}

#[test]
fn the_argocd_cm_patch_embeds_the_script_for_both_kinds() {
    let patch = std::fs::read_to_string(repo().join("deploy/argocd/argocd-cm-patch.yaml"))
        .expect("argocd-cm-patch.yaml");
    let doc: Value = serde_yaml::from_str(&patch).expect("patch is YAML");
    let data = doc["data"].as_object().expect("data");
    let script = script();
    for kind in KINDS {
        let key = format!("resource.customizations.health.metadata.zitadel-operator.dev_{kind}");
        assert_eq!(
            data.get(&key).and_then(Value::as_str),
            Some(script.as_str()),
            "{key} must be deploy/argocd/health.lua verbatim; run deploy/argocd/gen-patch.sh"
        );
    }
    assert_eq!(data.len(), 2);
}
