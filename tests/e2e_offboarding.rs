//! End-to-end: offboarding a team. Deleting a namespace (or only a connection) removes the
//! team's keys from ZITADEL and everything terminates — connections stay while objects use them
//! (in-use finalizer), their Secrets stay while the connections exist (holder finalizers), the
//! default connection's `--token-secret` stays while objects use it, and nothing the operator
//! added is left behind when it is uninstalled in the documented order.
//!
//! The test control plane has no kube-controller-manager, so the namespace controller is played
//! by the test: it marks the Namespace Terminating, then deletes every object in it at once —
//! credentials first, the order least favourable to the operator.

mod common;

use std::time::{Duration, Instant};

use common::namespace::{delete_namespace_contents, wait_namespace_empty};
use common::*;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde_json::json;
use zitadel_metadata_operator::connections::credentials::TokenLocation;
use zitadel_metadata_operator::controller::FINALIZER;
use zitadel_metadata_operator::controller::finalizers::{DEFAULT_CONNECTION, IN_USE};
use zitadel_metadata_operator::crd::ZitadelConnection;
use zitadel_metadata_operator::status;
use zmo_testkit::emulator::TlsMaterial;

/// Every operator reconciles every ClusterZitadelConnection, also one started with
/// `--namespace` (as these in-process operators are), and releases it when none of *its*
/// objects uses it (README: one installation per cluster with cluster connections). The test
/// deleting a cluster connection therefore runs alone; the others share.
static OPERATORS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// The bound the issue sets, from the deletes to everything gone and every key removed.
const BOUND: Duration = Duration::from_secs(10);
/// A finalizer someone else holds (keeps an object present while it is being deleted).
const FOREIGN: &str = "e2e.zitadel-operator.dev/hold";

/// A team namespace with the Secret `zitadel-pat`, an operator for it, and the Ready
/// ZitadelConnection `z` using that Secret.
struct Team {
    env: TestEnv,
    op: Operator,
    conns: Api<ZitadelConnection>,
    /// `z` as it was first seen Ready.
    conn: ZitadelConnection,
    /// A `connectionRef` to `z`.
    z: serde_json::Value,
}

async fn team(prefix: &str) -> Team {
    let env = TestEnv::new(prefix).await;
    env.put_secret(&env.ns, "zitadel-pat", "token", TOKEN).await;
    let op =
        Operator::start_multi_tenant(env.client.clone(), vec![env.ns.clone()], fast_settings());
    env.apply_connection(
        "z",
        json!({"url": env.emu.url(), "credentials": pat("zitadel-pat", None)}),
    )
    .await;
    let conns = Api::namespaced(env.client.clone(), &env.ns);
    let conn = wait_ready_connection(&conns, "z").await;
    let z = uses("ZitadelConnection", "z");
    Team {
        env,
        op,
        conns,
        conn,
        z,
    }
}

fn pat(secret: &str, ns: Option<&str>) -> serde_json::Value {
    let mut r = json!({"name": secret, "key": "token"});
    if let Some(ns) = ns {
        r["namespace"] = json!(ns);
    }
    json!({"personalAccessToken": r})
}

fn uses(kind: &str, name: &str) -> serde_json::Value {
    json!({"kind": kind, "name": name})
}

/// Poll until `name` is gone from `api`; panics after `within`.
async fn wait_gone<K>(api: &Api<K>, name: &str, within: Duration)
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let what = format!("{name} gone");
    eventually(within, &what, || async {
        api.get_opt(name)
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
}

async fn wait_ready_connection<K>(api: &Api<K>, name: &str) -> K
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    wait_obj(api, name, "Ready", |c| {
        let v = serde_json::to_value(c).expect("json");
        v["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
    .await
}

async fn add_foreign_finalizer<K>(api: &Api<K>, name: &str)
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut list = finalizers_of(api, name).await;
    list.push(FOREIGN.into());
    let patch = json!({"metadata": {"finalizers": list}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("add finalizer");
}

async fn drop_foreign_finalizer<K>(api: &Api<K>, name: &str)
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let list: Vec<String> = finalizers_of(api, name)
        .await
        .into_iter()
        .filter(|f| f != FOREIGN)
        .collect();
    let patch = json!({"metadata": {"finalizers": list}});
    let _ = api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await;
}

#[tokio::test]
async fn deleting_a_namespace_removes_the_teams_keys_and_terminates() {
    let _shared = OPERATORS.read().await;
    let Team {
        env,
        op,
        conns,
        conn,
        z,
    } = team("offboard").await;
    for (name, org, keys) in [
        ("acme", ACME, &["a1", "a2"][..]),
        ("globex", GLOBEX, &["g1", "g2"][..]),
    ] {
        let metadata: Vec<_> = keys
            .iter()
            .map(|k| json!({"key": k, "value": "v"}))
            .collect();
        env.apply_org(
            name,
            json!({"organizationId": org, "connectionRef": z, "metadata": metadata}),
        )
        .await;
    }
    env.apply_user(
        "alice",
        json!({"userId": ALICE, "connectionRef": z, "metadata": [{"key": "team", "value": "x"}]}),
    )
    .await;
    env.apply_org(
        "kept",
        json!({"organizationId": ACME, "connectionRef": z, "deletionPolicy": "Orphan",
               "metadata": [{"key": "kept", "value": "v"}]}),
    )
    .await;
    for name in ["acme", "globex", "kept"] {
        env.wait_org_ready(name).await;
    }
    env.wait_user_ready("alice").await;
    assert_eq!(env.emu.org_metadata(ACME).len(), 3);
    // The connection and its Secret are held.
    assert!(
        finalizers_of(&conns, "z")
            .await
            .contains(&IN_USE.to_string())
    );
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let holder = "zitadelconnection.metadata.zitadel-operator.dev/z".to_string();
    assert!(
        finalizers_of(&secrets, "zitadel-pat")
            .await
            .contains(&holder)
    );
    let held = conn.status.map(|s| s.held_sources).unwrap_or_default();
    let held = if held.is_empty() {
        conns
            .get("z")
            .await
            .expect("get")
            .status
            .map(|s| s.held_sources)
            .unwrap_or_default()
    } else {
        held
    };
    assert_eq!(held, vec![format!("Secret/{}/zitadel-pat", env.ns)]);

    let started = Instant::now();
    delete_namespace_contents(&env.client, &env.ns).await;
    wait_namespace_empty(&env.client, &env.ns, BOUND).await;
    let emptied = started.elapsed();
    assert_eq!(
        env.emu.org_metadata(ACME).keys().collect::<Vec<_>>(),
        vec!["kept"],
        "Delete keys removed, the Orphan key kept"
    );
    assert!(env.emu.org_metadata(GLOBEX).is_empty());
    assert!(env.emu.user_metadata(ALICE).is_empty());
    println!(
        "FIGURE offboarding_namespace objects=4 keys_removed=5 everything_gone_after={emptied:?}"
    );
    assert!(emptied < BOUND, "{emptied:?}");
    op.stop().await;
}

#[tokio::test]
async fn deleting_a_cluster_connection_its_secret_and_its_objects_at_once() {
    let _alone = OPERATORS.write().await;
    let env = TestEnv::new("offboard-cz").await;
    let system = env
        .cp
        .create_namespace("offboard-sys")
        .await
        .expect("namespace");
    env.put_secret(&system, "shared-pat", "token", TOKEN).await;
    let name = format!("shared-{}", env.ns);
    let spec = json!({"url": env.emu.url(), "credentials": pat("shared-pat", Some(&system)),
        "allowedNamespaces": [{"names": [env.ns], "organizationIds": ["*"]}]});
    let api = env.apply_cluster_connection(&name, spec).await;
    let op = Operator::start_multi_tenant(
        env.client.clone(),
        vec![env.ns.clone(), system.clone()],
        fast_settings(),
    );
    wait_ready_connection(&api, &name).await;
    let cz = uses("ClusterZitadelConnection", &name);
    env.apply_org(
        "acme",
        json!({"organizationId": ACME, "connectionRef": cz,
        "metadata": [{"key": "c1", "value": "v"}, {"key": "c2", "value": "v"}]}),
    )
    .await;
    env.apply_user(
        "alice",
        json!({"userId": ALICE, "connectionRef": cz,
        "metadata": [{"key": "c3", "value": "v"}]}),
    )
    .await;
    env.wait_org_ready("acme").await;
    env.wait_user_ready("alice").await;
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &system);
    let holder = format!("clusterzitadelconnection.metadata.zitadel-operator.dev/{name}");
    assert!(
        finalizers_of(&secrets, "shared-pat")
            .await
            .contains(&holder)
    );
    assert_eq!(finalizers_of(&api, &name).await, vec![IN_USE.to_string()]);

    // The platform team removes the shared connection and its Secret while the team namespace is
    // deleted: all at once, credentials first.
    let started = Instant::now();
    secrets
        .delete("shared-pat", &DeleteParams::default())
        .await
        .expect("delete Secret");
    api.delete(&name, &DeleteParams::default())
        .await
        .expect("delete connection");
    delete_namespace_contents(&env.client, &env.ns).await;
    wait_namespace_empty(&env.client, &env.ns, BOUND).await;
    wait_gone(&api, &name, BOUND).await;
    wait_gone(&secrets, "shared-pat", BOUND).await;
    let gone = started.elapsed();
    assert!(env.emu.org_metadata(ACME).is_empty());
    assert!(env.emu.user_metadata(ALICE).is_empty());
    println!(
        "FIGURE offboarding_cluster_connection objects=2 keys_removed=3 everything_gone_after={gone:?}"
    );
    assert!(gone < BOUND, "{gone:?}");
    op.stop().await;
}

#[tokio::test]
async fn deleting_only_the_connection_waits_for_its_objects() {
    let _shared = OPERATORS.read().await;
    let Team {
        env, op, conns, z, ..
    } = team("offboard-conn").await;
    env.apply_org("a", json!({"organizationId": ACME, "connectionRef": z, "metadata": [{"key": "a", "value": "1"}]}))
        .await;
    env.apply_org(
        "b",
        json!({"organizationId": GLOBEX, "connectionRef": z, "deletionPolicy": "Orphan",
        "metadata": [{"key": "b", "value": "1"}]}),
    )
    .await;
    env.wait_org_ready("a").await;
    env.wait_org_ready("b").await;

    conns
        .delete("z", &DeleteParams::default())
        .await
        .expect("delete connection");
    // Held: Terminating, InUse with the two objects counted and named, and an Event saying so.
    let held = wait_obj(&conns, "z", "Terminating/InUse", |c| {
        c.status.as_ref().is_some_and(|s| {
            status::find(&s.conditions, status::TERMINATING)
                .is_some_and(|t| t.status == "True" && t.reason == "InUse")
        })
    })
    .await;
    let status = held.status.clone().unwrap_or_default();
    let in_use = status::find(&status.conditions, status::TERMINATING).expect("condition");
    assert!(
        in_use.message.contains("2 objects (OrgMetadata")
            && in_use.message.contains(&format!("{}/a", env.ns))
            && in_use.message.contains(&format!("{}/b", env.ns)),
        "{}",
        in_use.message
    );
    assert!(held.meta().deletion_timestamp.is_some());
    eventually(Duration::from_secs(10), "InUse event", || async {
        env.events()
            .await
            .iter()
            .any(|(r, n)| r == "InUse" && n.contains("2 objects"))
            .then_some(())
    })
    .await;
    // It keeps working for its objects: an edit still reaches ZITADEL through it.
    env.apply_org("a", json!({"organizationId": ACME, "connectionRef": z, "metadata": [{"key": "a", "value": "2"}]}))
        .await;
    env.wait_org_ready("a").await;
    assert_eq!(env.org_value(ACME, "a").as_deref(), Some("2"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        conns.get_opt("z").await.expect("get").is_some(),
        "still held"
    );

    // The objects go: the Delete object's key is removed, the Orphan's kept; then the connection
    // goes, and its Secret (not deleted) is released.
    let started = Instant::now();
    env.delete_org("a").await;
    env.delete_org("b").await;
    wait_gone(&conns, "z", BOUND).await;
    let gone = started.elapsed();
    env.wait_org_gone("a").await;
    env.wait_org_gone("b").await;
    assert_eq!(env.org_value(ACME, "a"), None);
    assert_eq!(env.org_value(GLOBEX, "b").as_deref(), Some("1"));
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    assert_eq!(
        finalizers_of(&secrets, "zitadel-pat").await,
        Vec::<String>::new()
    );
    println!("FIGURE offboarding_connection_only held_by=2 connection_gone_after_objects={gone:?}");
    assert!(gone < BOUND, "{gone:?}");
    op.stop().await;
}

#[tokio::test]
async fn orphan_objects_being_deleted_hold_nothing_back() {
    let _shared = OPERATORS.read().await;
    let Team {
        env, op, conns, z, ..
    } = team("offboard-orphan").await;
    env.apply_org(
        "orphan",
        json!({"organizationId": ACME, "connectionRef": z, "deletionPolicy": "Orphan",
        "metadata": [{"key": "o", "value": "1"}]}),
    )
    .await;
    env.apply_org(
        "cleaned",
        json!({"organizationId": GLOBEX, "connectionRef": z,
        "metadata": [{"key": "c", "value": "1"}]}),
    )
    .await;
    env.wait_org_ready("orphan").await;
    env.wait_org_ready("cleaned").await;
    // Someone else's finalizer keeps both objects present while they are being deleted.
    let orgs = env.orgs();
    add_foreign_finalizer(&orgs, "orphan").await;
    add_foreign_finalizer(&orgs, "cleaned").await;
    env.delete_org("orphan").await;
    env.delete_org("cleaned").await;
    // The operator lets go of both (Orphan: at once; Delete: after its cleanup).
    for name in ["orphan", "cleaned"] {
        env.wait_org(name, "operator finalizer gone", |o| {
            !o.meta().finalizers.iter().flatten().any(|f| f == FINALIZER)
        })
        .await;
    }
    assert_eq!(env.org_value(GLOBEX, "c"), None);
    // Neither holds the connection any more although both still exist.
    let started = Instant::now();
    conns
        .delete("z", &DeleteParams::default())
        .await
        .expect("delete connection");
    wait_gone(&conns, "z", BOUND).await;
    let gone = started.elapsed();
    assert!(orgs.get_opt("orphan").await.expect("get").is_some());
    assert_eq!(env.org_value(ACME, "o").as_deref(), Some("1"));
    println!(
        "FIGURE offboarding_orphan connection_gone_after={gone:?} while_orphan_object_terminating=true"
    );
    drop_foreign_finalizer(&orgs, "orphan").await;
    drop_foreign_finalizer(&orgs, "cleaned").await;
    op.stop().await;
}

/// Every finalizer the operator adds on Secrets and ConfigMaps in `ns`.
async fn operator_finalizers(client: &Client, ns: &str) -> Vec<String> {
    let lp = ListParams::default();
    let secrets = Api::<Secret>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .expect("list");
    let cms = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .expect("list");
    let metas = secrets
        .items
        .into_iter()
        .map(|s| s.metadata)
        .chain(cms.items.into_iter().map(|c| c.metadata));
    metas
        .flat_map(|m| {
            let name = m.name.unwrap_or_default();
            m.finalizers
                .unwrap_or_default()
                .into_iter()
                .filter(|f| f.contains("zitadel-operator.dev"))
                .map(move |f| format!("{name}: {f}"))
        })
        .collect()
}

#[tokio::test]
async fn uninstalling_in_the_documented_order_leaves_no_finalizer_behind() {
    let _shared = OPERATORS.read().await;
    let env = TestEnv::new("uninstall").await;
    env.put_secret(&env.ns, "zitadel-token", "token", TOKEN)
        .await;
    env.put_secret(&env.ns, "zitadel-pat", "token", TOKEN).await;
    let ca = TlsMaterial::generate(&["localhost"]).expect("a CA").ca_pem;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.ns);
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "zitadel-ca"},
        "data": {"ca.crt": ca}});
    cms.patch(
        "zitadel-ca",
        &PatchParams::apply("e2e-test").force(),
        &Patch::Apply(&cm),
    )
    .await
    .expect("ConfigMap");
    // Single-tenant mode with --token-secret, plus a connection with a CA bundle.
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let location = TokenLocation::Secret {
        namespace: env.ns.clone(),
        name: "zitadel-token".into(),
        key: "token".into(),
    };
    let default = flag_connection(&env.client, &env.emu.url(), location);
    let op = Operator::start_with(
        env.client.clone(),
        Some(default),
        vec![env.ns.clone()],
        fast_settings(),
    );
    env.apply_connection(
        "z",
        json!({"url": env.emu.url(), "credentials": pat("zitadel-pat", None),
        "caBundle": {"configMapRef": {"name": "zitadel-ca", "key": "ca.crt"}}}),
    )
    .await;
    let conns: Api<ZitadelConnection> = Api::namespaced(env.client.clone(), &env.ns);
    wait_ready_connection(&conns, "z").await;
    env.apply_org_values("by-default", ACME, &[("d", "1")])
        .await;
    env.apply_org(
        "by-conn",
        json!({"organizationId": GLOBEX, "connectionRef": uses("ZitadelConnection", "z"),
        "metadata": [{"key": "z", "value": "1"}]}),
    )
    .await;
    env.wait_org_ready("by-default").await;
    env.wait_org_ready("by-conn").await;
    let mut held = operator_finalizers(&env.client, &env.ns).await;
    held.sort();
    assert_eq!(
        held,
        vec![
            format!("zitadel-ca: zitadelconnection.metadata.zitadel-operator.dev/z"),
            format!("zitadel-pat: zitadelconnection.metadata.zitadel-operator.dev/z"),
            format!("zitadel-token: {DEFAULT_CONNECTION}"),
        ]
    );

    // 1. Delete the objects (the operator removes their keys), and wait for them.
    env.delete_org("by-default").await;
    env.delete_org("by-conn").await;
    env.wait_org_gone("by-default").await;
    env.wait_org_gone("by-conn").await;
    assert!(env.emu.org_metadata(ACME).is_empty() && env.emu.org_metadata(GLOBEX).is_empty());
    // No object uses the default connection any more: its token Secret is released.
    eventually(Duration::from_secs(10), "token Secret released", || async {
        finalizers_of(&secrets, "zitadel-token")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    // 2. Delete the connections, and wait for them.
    conns
        .delete("z", &DeleteParams::default())
        .await
        .expect("delete");
    wait_gone(&conns, "z", BOUND).await;
    // 3. Uninstall the operator.
    op.stop().await;
    // Nothing of the operator's is left on the Secrets and ConfigMaps, which still exist.
    assert_eq!(
        operator_finalizers(&env.client, &env.ns).await,
        Vec::<String>::new()
    );
    assert!(secrets.get_opt("zitadel-pat").await.expect("get").is_some());
    assert!(cms.get_opt("zitadel-ca").await.expect("get").is_some());
}
