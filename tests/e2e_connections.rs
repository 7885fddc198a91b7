//! End-to-end: ZitadelConnection / ClusterZitadelConnection, tenant guards, PAT and JWT-profile
//! credentials, Secret rotation — the operator in multi-tenant mode (no default connection).

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use zitadel_metadata_operator::crd::{MetadataResource, ZitadelConnection};
use zitadel_metadata_operator::status::STALLED;
use zmo_testkit::emulator::{Operation, TokenGrant};

/// A test namespace whose Secret `zitadel-pat` holds `token`, a new IAM-owner token, and a
/// multi-tenant operator for it.
async fn tenant(prefix: &str, token: &str) -> (TestEnv, Operator) {
    let env = TestEnv::new(prefix).await;
    env.emu.add_token(token, TokenGrant::iam_owner(ACME));
    env.put_secret(&env.ns, "zitadel-pat", "token", token).await;
    let op =
        Operator::start_multi_tenant(env.client.clone(), vec![env.ns.clone()], fast_settings());
    (env, op)
}

fn conn_ready(c: &ZitadelConnection) -> Option<(String, String, String)> {
    c.status.as_ref().and_then(|s| {
        zitadel_metadata_operator::status::find(&s.conditions, "Ready")
            .map(|r| (r.status.clone(), r.reason.clone(), r.message.clone()))
    })
}

/// Applies the connection `name` and waits until its Ready condition gives `reason`; returns
/// the condition's message.
async fn refused_connection(
    env: &TestEnv,
    name: &str,
    spec: serde_json::Value,
    reason: &str,
) -> String {
    env.apply_connection(name, spec).await;
    let c = env
        .wait_connection(name, reason, |c| {
            conn_ready(c).is_some_and(|r| r.1 == reason)
        })
        .await;
    conn_ready(&c).expect("ready condition").2
}

/// Asserts that a (cluster) connection's `status.identity` names `who`.
fn assert_identity(conn: &impl serde::Serialize, who: &str) {
    let conn = serde_json::to_value(conn).expect("json");
    let identity = conn["status"]["identity"].as_str().unwrap_or_default();
    assert!(identity.contains(who), "{identity}");
}

/// Requests other than the connection probes.
fn metadata_requests(env: &TestEnv) -> usize {
    env.emu
        .requests()
        .into_iter()
        .filter(|r| r.operation != Operation::GetMyOrg && !r.path.starts_with("/oauth/"))
        .count()
}

#[tokio::test]
async fn cluster_connection_guards_namespaces_and_organizations() {
    let env = TestEnv::new("tenant-a").await;
    let denied = env
        .cp
        .create_namespace("tenant-b")
        .await
        .expect("namespace");
    env.emu
        .add_token("cluster-pat", TokenGrant::iam_owner(ACME));
    env.put_secret(&env.ns, "zitadel-pat", "token", "cluster-pat")
        .await;
    let name = format!("shared-{}", env.ns);
    let spec = json!({"url": env.emu.url(),
        "credentials": {"personalAccessToken": {"name": "zitadel-pat", "key": "token", "namespace": env.ns}},
        "allowedNamespaces": [
            {"names": [env.ns], "organizationIds": [ACME]},
            {"selector": {"matchLabels": {"zmo-e2e/tenant": denied}}, "organizationIds": [GLOBEX]}]});
    let api = env.apply_cluster_connection(&name, spec).await;
    let op = Operator::start_multi_tenant(
        env.client.clone(),
        vec![env.ns.clone(), denied.clone()],
        fast_settings(),
    );
    let conn = wait_obj(&api, &name, "Ready", |c| {
        c.status.as_ref().is_some_and(|s| {
            zitadel_metadata_operator::status::find(&s.conditions, "Ready")
                .is_some_and(|r| r.status == "True")
        })
    })
    .await;
    assert_identity(&conn, ACME);

    // A namespace the guard does not list: refused, and ZITADEL sees nothing from it.
    let other_orgs: Api<zitadel_metadata_operator::crd::OrgMetadata> =
        Api::namespaced(env.client.clone(), &denied);
    let spec = json!({"organizationId": ACME, "connectionRef": {"kind": "ClusterZitadelConnection", "name": name},
                      "metadata": [{"key": "k", "value": "v"}]});
    apply_as(&other_orgs, "e2e-test", "sneaky", spec).await;
    let refused = wait_obj(&other_orgs, "sneaky", "TargetNotAllowed", |o| {
        reason(o.status()) == Some("TargetNotAllowed")
    })
    .await;
    assert_eq!(condition(refused.status(), STALLED), Some("True"));
    assert_message_contains(refused.status(), &denied);

    // The allowed namespace works for the allowed org, even though the refused object is older
    // and lists the same key (a refused object claims nothing)…
    tokio::time::sleep(Duration::from_millis(1100)).await;
    env.apply_org(
        "allowed",
        json!({"organizationId": ACME, "connectionRef": {"kind": "ClusterZitadelConnection", "name": name},
               "metadata": [{"key": "k", "value": "v"}]}),
    )
    .await;
    env.wait_org_ready("allowed").await;
    assert_eq!(env.org_value(ACME, "k").as_deref(), Some("v"));
    // …and not for another org.
    env.apply_org(
        "other-org",
        json!({"organizationId": GLOBEX, "connectionRef": {"kind": "ClusterZitadelConnection", "name": name},
               "metadata": [{"key": "k", "value": "v"}]}),
    )
    .await;
    env.wait_org("other-org", "TargetNotAllowed", |o| {
        reason(o.status()) == Some("TargetNotAllowed")
    })
    .await;
    assert!(env.emu.org_metadata(GLOBEX).is_empty());
    // Only the allowed object's calls reached ZITADEL: nothing names Globex — not the v1
    // context org header, nor a v2 path or body (API-agnostic: the connection probes).
    for r in env.emu.requests() {
        assert_ne!(
            r.org_header.as_deref(),
            Some(GLOBEX),
            "{:?} reached ZITADEL",
            r.operation
        );
        assert!(
            !r.path.contains(GLOBEX) && !r.body.to_string().contains(GLOBEX),
            "{:?} reached ZITADEL for Globex",
            r.operation
        );
    }
    assert!(
        env.emu
            .requests()
            .iter()
            .any(|r| r.org_header.as_deref() == Some(ACME) || r.body.to_string().contains(ACME)),
        "the allowed object's calls reached ZITADEL"
    );

    // A selector rule: once the refused namespace carries the label it names, it may write to
    // the org that rule lists (and only there).
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    let labelled = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": denied, "labels": {"zmo-e2e/tenant": denied}}});
    namespaces
        .patch(
            &denied,
            &PatchParams::apply("e2e-test").force(),
            &Patch::Apply(&labelled),
        )
        .await
        .expect("label the namespace");
    let spec = json!({"organizationId": GLOBEX, "connectionRef": {"kind": "ClusterZitadelConnection", "name": name},
                      "metadata": [{"key": "team", "value": "c"}]});
    apply_as(&other_orgs, "e2e-test", "by-label", spec).await;
    wait_obj(&other_orgs, "by-label", "Ready", |o| {
        is_ready(o.status(), o.metadata.generation)
    })
    .await;
    assert_eq!(
        env.emu.org_metadata(GLOBEX).get("team").map(Vec::as_slice),
        Some(&b"c"[..])
    );
    op.stop().await;
    let _ = api.delete(&name, &DeleteParams::default()).await;
}

#[tokio::test]
async fn jwt_profile_connection_exchanges_and_refreshes_tokens() {
    let env = TestEnv::new("jwt").await;
    let service_user = "300000000000000042";
    env.emu
        .register_service_user(service_user, TokenGrant::org_owner(ACME));
    let key_json = env.emu.generate_key_file(service_user).expect("key file");
    env.emu.set_access_token_lifetime(Duration::from_secs(3));
    env.put_secret(&env.ns, "zitadel-key", "key.json", &key_json)
        .await;
    let op =
        Operator::start_multi_tenant(env.client.clone(), vec![env.ns.clone()], fast_settings());
    env.apply_connection("acme", json!({"url": env.emu.url(), "credentials": {"jwtProfile": {"name": "zitadel-key", "key": "key.json"}}})).await;
    let conn = env
        .wait_connection("acme", "Ready", |c| {
            conn_ready(c).is_some_and(|r| r.0 == "True")
        })
        .await;
    assert_identity(&conn, service_user);

    env.apply_org("a", json!({"organizationId": ACME, "connectionRef": {"name": "acme"}, "metadata": [{"key": "k", "value": "1"}]})).await;
    env.wait_org_ready("a").await;
    let exchanges = env
        .emu
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/oauth/v2/token"))
        .count();
    assert!(exchanges >= 1);
    // Let the access token expire, then change the spec: a fresh token is obtained and used.
    tokio::time::sleep(Duration::from_secs(4)).await;
    env.apply_org("a", json!({"organizationId": ACME, "connectionRef": {"name": "acme"}, "metadata": [{"key": "k", "value": "2"}]})).await;
    env.wait_org("a", "Ready after expiry", |o| {
        is_ready(o.status(), o.metadata.generation)
    })
    .await;
    assert_eq!(env.org_value(ACME, "k").as_deref(), Some("2"));
    let after = env
        .emu
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/oauth/v2/token"))
        .count();
    assert!(
        after > exchanges,
        "no token refresh after expiry ({exchanges} -> {after})"
    );
    // Org-owner rights in Acme do not reach Globex: without any membership there ZITADEL
    // answers 404 `AUTHZ-cdgFk` (contract §3), a permission problem — never "not found".
    env.apply_org("b", json!({"organizationId": GLOBEX, "connectionRef": {"name": "acme"}, "metadata": [{"key": "k", "value": "1"}]})).await;
    let b = env.wait_org_stalled("b").await;
    assert_eq!(reason(b.status()), Some("ZitadelPermissionDenied"));
    op.stop().await;
}

#[tokio::test]
async fn rotating_the_credentials_secret_switches_tokens() {
    let (env, op) = tenant("rotate", "pat-one").await;
    env.apply_connection("main", json!({"url": env.emu.url(), "credentials": {"personalAccessToken": {"name": "zitadel-pat", "key": "token"}}})).await;
    env.wait_connection("main", "Ready", |c| {
        conn_ready(c).is_some_and(|r| r.0 == "True")
    })
    .await;
    env.apply_org("a", json!({"organizationId": ACME, "connectionRef": {"name": "main"}, "metadata": [{"key": "k", "value": "1"}]})).await;
    env.wait_org_ready("a").await;

    // Rotate: the old token stops working, the Secret gets the new one.
    env.emu.add_token("pat-two", TokenGrant::iam_owner(ACME));
    env.emu.revoke_token("pat-one");
    env.put_secret(&env.ns, "zitadel-pat", "token", "pat-two")
        .await;
    env.apply_org("a", json!({"organizationId": ACME, "connectionRef": {"name": "main"}, "metadata": [{"key": "k", "value": "2"}]})).await;
    env.wait_org("a", "Ready with the new token", |o| {
        is_ready(o.status(), o.metadata.generation)
    })
    .await;
    assert_eq!(
        env.org_value(ACME, "k").as_deref(),
        Some("2"),
        "the write after rotation must use the new token"
    );
    op.stop().await;
}

#[tokio::test]
async fn missing_or_malformed_credentials_give_precise_messages_and_no_calls() {
    let env = TestEnv::new("badcreds").await;
    let op =
        Operator::start_multi_tenant(env.client.clone(), vec![env.ns.clone()], fast_settings());
    // No connection at all.
    env.apply_org("none", json!({"organizationId": ACME, "connectionRef": {"name": "nope"}, "metadata": [{"key": "k", "value": "v"}]})).await;
    let o = env
        .wait_org("none", "ConnectionNotFound", |o| {
            reason(o.status()) == Some("ConnectionNotFound")
        })
        .await;
    assert!(message(o.status()).contains("nope"));
    // No connectionRef in multi-tenant mode.
    env.apply_org_values("bare", ACME, &[("k", "v")]).await;
    env.wait_org("bare", "ConnectionNotFound", |o| {
        reason(o.status()) == Some("ConnectionNotFound")
    })
    .await;

    // A connection whose Secret is missing.
    let spec = json!({"url": env.emu.url(), "credentials": {"personalAccessToken": {"name": "absent", "key": "token"}}});
    let msg = refused_connection(&env, "missing", spec, "SecretNotFound").await;
    assert!(
        msg.contains(&format!("Secret {}/absent not found", env.ns)),
        "{msg}"
    );

    // A malformed key file: the message names the field, never the content.
    env.put_secret(
        &env.ns,
        "bad-key",
        "key.json",
        r#"{"type":"serviceaccount","keyId":"k1","key":"TOP-SECRET-MATERIAL"}"#,
    )
    .await;
    let spec = json!({"url": env.emu.url(), "credentials": {"jwtProfile": {"name": "bad-key", "key": "key.json"}}});
    let msg = refused_connection(&env, "malformed", spec, "InvalidCredentials").await;
    assert!(msg.contains("userId"), "{msg}");
    assert!(!msg.contains("TOP-SECRET"), "{msg}");

    // Objects using a connection that is not Ready: refused, no call.
    env.apply_org("uses-bad", json!({"organizationId": ACME, "connectionRef": {"name": "malformed"}, "metadata": [{"key": "k", "value": "v"}]})).await;
    let o = env
        .wait_org("uses-bad", "ConnectionNotReady", |o| {
            reason(o.status()) == Some("ConnectionNotReady")
        })
        .await;
    assert_message_contains(o.status(), "userId");
    let events = env.events().await;
    assert!(
        events.iter().any(|(r, _)| r == "ConnectionNotReady"),
        "{events:?}"
    );
    assert!(
        events.iter().all(|(_, n)| !n.contains("TOP-SECRET")),
        "{events:?}"
    );
    assert_eq!(
        metadata_requests(&env),
        0,
        "refused objects must not call ZITADEL"
    );
    op.stop().await;
}

/// `status.api` shows the API per service (here v1 on the emulator's default profile, which
/// serves v1: `Auto` keeps v1 where it is served), and switching `spec.api` takes effect
/// without a restart: the connection re-probes, its objects get a new client, and the next
/// write goes over v2 — with no sequence (v2 returns none, and none is invented).
#[tokio::test]
async fn switching_spec_api_takes_effect_without_a_restart() {
    use zitadel_metadata_operator::crd::{ApiStatus, ApiVersion, ZitadelConnection};
    let (env, op) = tenant("api-switch", "pat-api").await;
    let spec = |api: &str| {
        json!({"url": env.emu.url(), "api": api,
               "credentials": {"personalAccessToken": {"name": "zitadel-pat", "key": "token"}}})
    };
    let api_of = |c: &ZitadelConnection| c.status.as_ref().and_then(|s| s.api.clone());
    env.apply_connection("main", spec("Auto")).await;
    let conn = env
        .wait_connection("main", "Ready with status.api", |c| {
            conn_ready(c).is_some_and(|r| r.0 == "True") && api_of(c).is_some()
        })
        .await;
    assert_eq!(
        api_of(&conn),
        Some(ApiStatus {
            mode: ApiMode::Auto,
            user_metadata: ApiVersion::V1,
            org_metadata: ApiVersion::V1,
        })
    );
    let ready = conn_ready(&conn).expect("Ready");
    assert!(ready.2.contains("user v1 / org v1 (Auto)"), "{}", ready.2);
    env.apply_org("a", json!({"organizationId": ACME, "connectionRef": {"name": "main"}, "metadata": [{"key": "k", "value": "1"}]})).await;
    let first = env.wait_org_ready("a").await;
    let sequence = first.status().and_then(|s| s.sequence.clone());
    assert!(sequence.is_some(), "v1 reports a sequence");
    assert_eq!(env.emu.count(Operation::BulkSetOrgMetadata), 1);

    // Switch to v2: no restart.
    env.apply_connection("main", spec("V2")).await;
    env.wait_connection("main", "re-probed as V2", |c| {
        conn_ready(c).is_some_and(|r| r.0 == "True")
            && api_of(c).is_some_and(|a| {
                a.mode == ApiMode::V2
                    && a.user_metadata == ApiVersion::V2
                    && a.org_metadata == ApiVersion::V2
            })
    })
    .await;
    env.apply_org("a", json!({"organizationId": ACME, "connectionRef": {"name": "main"}, "metadata": [{"key": "k", "value": "2"}]})).await;
    let second = env.wait_org_ready("a").await;
    assert_eq!(env.org_value(ACME, "k").as_deref(), Some("2"));
    assert_eq!(env.emu.count(Operation::SetOrgMetadataV2), 1);
    assert_eq!(
        env.emu.count(Operation::BulkSetOrgMetadata),
        1,
        "no v1 write"
    );
    let st = second.status().expect("status");
    // The status describes the last write: v2 returned no sequence, none is invented (nor is
    // the v1 write's kept beside a newer date).
    assert_eq!(st.sequence, None, "v2 invents no sequence");
    assert_ne!(
        st.change_date,
        first.status().and_then(|s| s.change_date.clone()),
        "changeDate from v2's setDate"
    );
    op.stop().await;
}
