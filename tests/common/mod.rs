//! Shared helpers of the end-to-end suites: a namespace on the real control plane, a fresh
//! ZITADEL emulator, and the operator (in-process or the real binary) watching that namespace.
#![allow(dead_code)]

mod binary;
pub mod conformance;
pub mod namespace;

#[allow(unused_imports)]
pub use binary::{Launch, OperatorBinary, free_addr, http_get};

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use zitadel_metadata_operator::connections::credentials::{
    CredentialState, FlagToken, TokenLocation,
};
use zitadel_metadata_operator::controller::{self, Namespaces, Settings, Shutdown};
use zitadel_metadata_operator::crd::{
    ClusterZitadelConnection, MetadataStatus, OrgMetadata, UserMetadata, ZitadelConnection,
};
use zitadel_metadata_operator::sources::{KubeSources, ValueSources};
use zitadel_metadata_operator::status;
#[allow(unused_imports)]
pub use zitadel_metadata_operator::zitadel::ApiMode;
use zitadel_metadata_operator::zitadel::{ClientConfig, HttpClient, TokenSource};
use zmo_testkit::controlplane::ControlPlane;
use zmo_testkit::emulator::{Emulator, RecordedRequest};

/// Seeded by `Emulator::seed_demo`.
pub const ACME: &str = "100000000000000001";
pub const GLOBEX: &str = "100000000000000002";
pub const ALICE: &str = "200000000000000001";
pub const BOB: &str = "200000000000000002";
pub const TOKEN: &str = "demo-admin-token";

/// Short timings so resync and backoff are observable within seconds. Drift is detected by
/// polling (each object re-lists its target every second), which the suites written before
/// event-driven drift detection assume; `tests/e2e_drift.rs` covers Events mode.
pub fn fast_settings() -> Settings {
    Settings {
        resync: Duration::from_secs(1),
        stalled_requeue: Duration::from_secs(30),
        backoff_base: Duration::from_millis(200),
        backoff_max: Duration::from_secs(2),
        concurrency: 4,
        request_timeout: Duration::from_secs(2),
        drift: zitadel_metadata_operator::drift::DriftSettings::polling(),
        ..Settings::default()
    }
}

pub struct TestEnv {
    pub cp: &'static ControlPlane,
    pub client: Client,
    pub ns: String,
    pub emu: Emulator,
}

impl TestEnv {
    pub async fn new(prefix: &str) -> TestEnv {
        let cp = shared_with_crds().await;
        let client = cp.client().await.expect("kube client");
        let ns = cp.create_namespace(prefix).await.expect("namespace");
        let emu = Emulator::start_seeded().await.expect("emulator");
        TestEnv {
            cp,
            client,
            ns,
            emu,
        }
    }

    /// Like [`Self::new`] with an emulator imitating the ZITADEL version `profile`.
    pub async fn with_profile(prefix: &str, profile: zmo_testkit::emulator::Profile) -> TestEnv {
        let cp = shared_with_crds().await;
        let client = cp.client().await.expect("kube client");
        let ns = cp.create_namespace(prefix).await.expect("namespace");
        let emu = Emulator::start_seeded_with(profile)
            .await
            .expect("emulator");
        TestEnv {
            cp,
            client,
            ns,
            emu,
        }
    }

    pub fn orgs(&self) -> Api<OrgMetadata> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// The OrgMetadata's current resourceVersion (changes with every write, status included).
    pub async fn org_version(&self, name: &str) -> Option<String> {
        self.orgs()
            .get(name)
            .await
            .expect("get")
            .metadata
            .resource_version
    }

    pub fn users(&self) -> Api<UserMetadata> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Server-side apply a ZitadelConnection named `name` with `spec` in this test's namespace.
    pub async fn apply_connection(&self, name: &str, spec: serde_json::Value) {
        self.apply_connection_in(&self.ns, name, spec).await;
    }

    /// Server-side apply a ZitadelConnection named `name` with `spec` in `ns`.
    pub async fn apply_connection_in(&self, ns: &str, name: &str, spec: serde_json::Value) {
        let api: Api<ZitadelConnection> = Api::namespaced(self.client.clone(), ns);
        apply_json(&api, json!({"name": name}), spec).await;
    }

    /// Waits until the ZitadelConnection `name` in the test namespace satisfies `pred`.
    pub async fn wait_connection(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&ZitadelConnection) -> bool,
    ) -> ZitadelConnection {
        let api: Api<ZitadelConnection> = Api::namespaced(self.client.clone(), &self.ns);
        wait_obj(&api, name, what, pred).await
    }

    /// Applies the ClusterZitadelConnection `name` with `spec` (as JSON, server-side apply as
    /// `e2e-test`); returns the API of cluster connections.
    pub async fn apply_cluster_connection(
        &self,
        name: &str,
        spec: serde_json::Value,
    ) -> Api<ClusterZitadelConnection> {
        let api = Api::all(self.client.clone());
        apply_json(&api, json!({"name": name}), spec).await;
        api
    }

    /// Run the controllers in-process, watching only this test's namespace; the default
    /// connection probes the instance (`ApiMode::Auto`).
    pub fn start_operator(&self, settings: Settings) -> Operator {
        Operator::start(self.client.clone(), &self.emu.url(), &self.ns, settings)
    }

    /// Like [`Self::start_operator`], with the default connection's API pinned (`--zitadel-api`).
    /// Suites about v1 behaviour (request shapes, operation counts) pin `ApiMode::V1` so that
    /// they test what they name whatever `Auto` picks on the emulator's default profile.
    pub fn start_operator_with_api(&self, settings: Settings, api: ApiMode) -> Operator {
        Operator::start_with_api(
            self.client.clone(),
            &self.emu.url(),
            &self.ns,
            settings,
            api,
        )
    }

    pub async fn apply_org(&self, name: &str, spec: serde_json::Value) -> OrgMetadata {
        apply_as(&self.orgs(), "e2e-test", name, spec).await
    }

    /// An OrgMetadata on `org` with these inline values.
    pub async fn apply_org_values(
        &self,
        name: &str,
        org: &str,
        values: &[(&str, &str)],
    ) -> OrgMetadata {
        let metadata: Vec<_> = values
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        self.apply_org(name, json!({"organizationId": org, "metadata": metadata}))
            .await
    }

    pub async fn apply_user(&self, name: &str, spec: serde_json::Value) -> UserMetadata {
        apply_as(&self.users(), "e2e-test", name, spec).await
    }

    pub async fn create_org(&self, obj: &OrgMetadata) -> kube::Result<OrgMetadata> {
        self.orgs().create(&PostParams::default(), obj).await
    }

    pub async fn delete_org(&self, name: &str) {
        self.orgs()
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }

    /// Poll an OrgMetadata until `pred` holds (30 s).
    pub async fn wait_org(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&OrgMetadata) -> bool,
    ) -> OrgMetadata {
        wait_obj(&self.orgs(), name, what, pred).await
    }

    /// Ready for its current generation (30 s).
    pub async fn wait_org_ready(&self, name: &str) -> OrgMetadata {
        self.wait_org(name, "Ready", |o| {
            is_ready(o.status.as_ref(), o.metadata.generation)
        })
        .await
    }

    /// Ready for its current generation (30 s).
    pub async fn wait_user_ready(&self, name: &str) -> UserMetadata {
        self.wait_user(name, "Ready", |o| {
            is_ready(o.status.as_ref(), o.metadata.generation)
        })
        .await
    }

    /// Stalled=True (30 s).
    pub async fn wait_org_stalled(&self, name: &str) -> OrgMetadata {
        self.wait_org(name, "Stalled", |o| {
            condition(o.status.as_ref(), status::STALLED) == Some("True")
        })
        .await
    }

    /// Stalled=True (30 s).
    pub async fn wait_user_stalled(&self, name: &str) -> UserMetadata {
        self.wait_user(name, "Stalled", |o| {
            condition(o.status.as_ref(), status::STALLED) == Some("True")
        })
        .await
    }

    pub async fn wait_user(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&UserMetadata) -> bool,
    ) -> UserMetadata {
        wait_obj(&self.users(), name, what, pred).await
    }

    /// Wait until the object is gone from the API.
    pub async fn wait_org_gone(&self, name: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match self.orgs().get_opt(name).await.expect("get") {
                None => return,
                Some(_) if tokio::time::Instant::now() > deadline => {
                    panic!("{name} was not deleted within 30s")
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Events recorded for objects in this namespace, as (reason, note).
    pub async fn events(&self) -> Vec<(String, String)> {
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &self.ns);
        api.list(&Default::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect()
    }

    /// Create or replace the Secret `ns/name` holding one key.
    pub async fn put_secret(&self, ns: &str, name: &str, key: &str, value: &str) {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(std::collections::BTreeMap::from([(
                key.to_string(),
                k8s_openapi::ByteString(value.as_bytes().to_vec()),
            )])),
            ..Default::default()
        };
        api.patch(
            name,
            &PatchParams::apply("e2e-test").force(),
            &Patch::Apply(&secret),
        )
        .await
        .expect("apply secret");
    }

    pub fn org_value(&self, org: &str, key: &str) -> Option<String> {
        self.emu
            .org_metadata(org)
            .get(key)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// The binary-wide control plane with this repo's `crds/` installed (idempotent, ~0.2 s).
pub async fn shared_with_crds() -> &'static ControlPlane {
    let cp = ControlPlane::shared();
    let crds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    cp.install_crds(&crds).await.expect("install crds/");
    cp
}

pub async fn wait_obj<K>(api: &Api<K>, name: &str, what: &str, pred: impl Fn(&K) -> bool) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        if let Some(obj) = api.get_opt(name).await.expect("get") {
            if pred(&obj) {
                return obj;
            }
            last = Some(obj);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The status is what explains a timeout; managedFields would drown it.
    let status = last
        .as_ref()
        .and_then(|o| serde_json::to_value(o).ok())
        .map(|v| v["status"].clone());
    panic!("timed out waiting for {name}: {what}; last status seen: {status:#?}");
}

/// Server-side applies (as `e2e-test`) a `K` with `metadata` (holding its `name`) and `spec`,
/// as plain JSON: no round trip through the typed struct.
pub async fn apply_json<K>(api: &Api<K>, metadata: serde_json::Value, spec: serde_json::Value) -> K
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let kind = K::kind(&());
    let name = metadata["name"].as_str().expect("metadata.name").to_owned();
    let obj = json!({"apiVersion": K::api_version(&()), "kind": kind,
        "metadata": metadata, "spec": spec});
    api.patch(
        &name,
        &PatchParams::apply("e2e-test").force(),
        &Patch::Apply(&obj),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {kind} {name}: {e}"))
}

/// The finalizers of `name` (none when it has none, or is gone).
pub async fn finalizers_of<K>(api: &Api<K>, name: &str) -> Vec<String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name)
        .await
        .expect("get")
        .map(|o| o.meta().finalizers.clone().unwrap_or_default())
        .unwrap_or_default()
}

/// The target a v1 metadata request acts on: `org/ID` (header) or `user/ID` (path).
pub fn target_of(r: &RecordedRequest) -> Option<String> {
    let segments: Vec<&str> = r.path.split('/').collect();
    if let ["", "management", "v1", "users", id, "metadata", ..] = segments.as_slice() {
        return Some(format!("user/{id}"));
    }
    if r.path.starts_with("/management/v1/metadata") {
        return r.org_header.as_ref().map(|o| format!("org/{o}"));
    }
    None
}

/// Server-side apply (forced, field manager `manager`) an object of kind `K` named `name` with
/// `spec`.
pub async fn apply_as<K>(api: &Api<K>, manager: &str, name: &str, spec: serde_json::Value) -> K
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    // Through the typed struct, as a client built on these types would send it (defaults
    // included, unknown fields dropped).
    let obj: K = serde_json::from_value(json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap_or_else(|e| panic!("{} json: {e}", K::kind(&())));
    api.patch(
        name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&obj),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {} {name}: {e}", K::kind(&())))
}

/// Poll `check` every 100 ms until it yields `Some`, or panic with `what` after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `status` of the condition `type_`, e.g. `Some("True")`.
pub fn condition<'a>(st: Option<&'a MetadataStatus>, type_: &str) -> Option<&'a str> {
    st.and_then(|s| status::find(&s.conditions, type_))
        .map(|c| c.status.as_str())
}

pub fn reason(st: Option<&MetadataStatus>) -> Option<&str> {
    st.and_then(|s| status::find(&s.conditions, status::READY))
        .map(|c| c.reason.as_str())
}

pub fn message(st: Option<&MetadataStatus>) -> String {
    st.and_then(|s| status::find(&s.conditions, status::READY))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// The Ready message mentions `needle`.
pub fn assert_message_contains(st: Option<&MetadataStatus>, needle: &str) {
    let text = message(st);
    assert!(text.contains(needle), "{text}");
}

/// Ready=True for the object's current generation.
pub fn is_ready(st: Option<&MetadataStatus>, generation: Option<i64>) -> bool {
    condition(st, status::READY) == Some("True")
        && st.and_then(|s| s.observed_generation) == generation
}

/// A stop switch and the shutdown futures it resolves.
fn stop_signal() -> (watch::Sender<bool>, impl Fn() -> Shutdown + Clone) {
    let (stop, rx) = watch::channel(false);
    let shutdown = move || -> Shutdown {
        let mut rx = rx.clone();
        Box::pin(async move {
            let _ = rx.wait_for(|s| *s).await;
        })
    };
    (stop, shutdown)
}

/// The controllers running in-process on the test's runtime.
pub struct Operator {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

/// A ZITADEL client for `url` with `token` (2 s timeout), as the default connection.
pub fn zitadel_client(url: &str, token: TokenSource) -> Arc<HttpClient> {
    let mut config = ClientConfig::new(url.parse().expect("emulator url"), token);
    config.request_timeout = Duration::from_secs(2);
    Arc::new(HttpClient::new(config).expect("zitadel client"))
}

/// The default connection as the binary builds it from `--token-secret` / `--token-file`
/// (`location`): followed over its life, the Secret held while objects use it.
pub fn flag_connection(
    client: &Client,
    url: &str,
    location: TokenLocation,
) -> controller::DefaultConnection {
    let sources: Arc<dyn ValueSources> = Arc::new(KubeSources::new(client.clone()));
    let token = Arc::new(FlagToken::new(location, sources));
    let state = Arc::new(CredentialState::new(token.location().to_string()));
    let http = zitadel_client(url, TokenSource::Provided(token.clone()));
    controller::DefaultConnection {
        api: http.clone(),
        credentials: Some(controller::FlagCredentials {
            token,
            client: http,
            state,
        }),
    }
}

impl Operator {
    pub fn start(client: Client, zitadel_url: &str, ns: &str, settings: Settings) -> Operator {
        Operator::start_with_api(client, zitadel_url, ns, settings, ApiMode::Auto)
    }

    /// The controllers with the default connection's API set to `api`.
    pub fn start_with_api(
        client: Client,
        zitadel_url: &str,
        ns: &str,
        settings: Settings,
        api: ApiMode,
    ) -> Operator {
        let url = zitadel_url.parse().expect("emulator url");
        let mut config = ClientConfig::new(url, TokenSource::Static(Arc::from(TOKEN)));
        config.request_timeout = Duration::from_secs(2);
        config.api = api;
        let zitadel = Arc::new(HttpClient::new(config).expect("zitadel client"));
        let (stop, shutdown) = stop_signal();
        let handle = tokio::spawn(controller::run(
            client,
            zitadel,
            Namespaces::Only(vec![ns.to_string()]),
            settings,
            shutdown,
        ));
        Operator { stop, handle }
    }

    /// The controllers without a default connection (multi-tenant mode), watching `namespaces`.
    pub fn start_multi_tenant(
        client: Client,
        namespaces: Vec<String>,
        settings: Settings,
    ) -> Operator {
        Operator::start_with(client, None, namespaces, settings)
    }

    /// The controllers with `default` as the default connection (if any), watching
    /// `namespaces`.
    pub fn start_with(
        client: Client,
        default: Option<controller::DefaultConnection>,
        namespaces: Vec<String>,
        settings: Settings,
    ) -> Operator {
        let (stop, shutdown) = stop_signal();
        let handle = tokio::spawn(controller::run_with(
            client,
            default,
            Namespaces::Only(namespaces),
            settings,
            shutdown,
            controller::Hooks::default(),
        ));
        Operator { stop, handle }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.handle).await;
    }
}
