//! Deleting a namespace as Kubernetes' namespace controller does (the test control plane has no
//! kube-controller-manager): mark the Namespace Terminating, then delete every kind in it at once.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client};
use zitadel_metadata_operator::crd::{
    MetadataResource as _, OrgMetadata, UserMetadata, ZitadelConnection,
};

use super::message;

/// What the namespace controller does: mark the Namespace Terminating, then delete every kind in
/// it with one delete-collection each — Secrets and ConfigMaps first.
pub async fn delete_namespace_contents(client: &Client, ns: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete(ns, &DeleteParams::default())
        .await
        .expect("delete namespace");
    let (dp, lp) = (DeleteParams::default(), ListParams::default());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    secrets.delete_collection(&dp, &lp).await.expect("secrets");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    cms.delete_collection(&dp, &lp).await.expect("configmaps");
    let conns: Api<ZitadelConnection> = Api::namespaced(client.clone(), ns);
    conns.delete_collection(&dp, &lp).await.expect("conns");
    let orgs: Api<OrgMetadata> = Api::namespaced(client.clone(), ns);
    orgs.delete_collection(&dp, &lp).await.expect("orgs");
    let users: Api<UserMetadata> = Api::namespaced(client.clone(), ns);
    users.delete_collection(&dp, &lp).await.expect("users");
}

/// What is left of the four kinds in `ns`: `Kind/name [finalizers] Ready reason: message`.
pub async fn left_in(client: &Client, ns: &str) -> Vec<String> {
    let lp = ListParams::default();
    let mut left = Vec::new();
    for s in Api::<Secret>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .expect("list")
    {
        left.push(format!(
            "Secret/{} {:?}",
            s.metadata.name.unwrap_or_default(),
            s.metadata.finalizers
        ));
    }
    for c in Api::<ZitadelConnection>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .expect("list")
    {
        let status = serde_json::to_string(&c.status).unwrap_or_default();
        left.push(format!(
            "ZitadelConnection/{} {:?} {status}",
            c.metadata.name.unwrap_or_default(),
            c.metadata.finalizers
        ));
    }
    for o in Api::<OrgMetadata>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .expect("list")
    {
        left.push(format!(
            "OrgMetadata/{} {:?} {}",
            o.metadata.name.clone().unwrap_or_default(),
            o.metadata.finalizers,
            message(o.status())
        ));
    }
    for u in Api::<UserMetadata>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .expect("list")
    {
        left.push(format!(
            "UserMetadata/{} {:?} {}",
            u.metadata.name.clone().unwrap_or_default(),
            u.metadata.finalizers,
            message(u.status())
        ));
    }
    left
}

/// Until nothing of the four kinds is left in `ns`; panics with what is left after `within`.
pub async fn wait_namespace_empty(client: &Client, ns: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let left = left_in(client, ns).await;
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left after {within:?}:\n{}",
            left.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
