//! Controllers of `ZitadelConnection` and `ClusterZitadelConnection`: build a client from the
//! connection's Secrets, make an authenticated probe call, and report `Ready` with the reachable
//! URL and the authenticated identity. Watching the referenced Secrets makes rotation take effect
//! without a restart (objects using the connection are re-synced when its status changes).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{FIELD_MANAGER, Namespaces, Settings, Shutdown};
use crate::connection;
use crate::crd::{
    ClusterZitadelConnection, ConnectionSettings, ConnectionStatus, ZitadelConnection,
};
use crate::reason::Reason;
use crate::status;

/// Re-probe delay after a transient probe failure (ZITADEL unavailable, rate limited, timed out):
/// the objects using the connection are waiting for it.
const TRANSIENT_PROBE_RETRY: Duration = Duration::from_secs(5);

/// What the connection controller needs from either connection kind.
pub trait ConnectionResource:
    Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// Controller name for logs.
    const CONTROLLER: &'static str;
    /// URL, CA bundle, credentials.
    fn settings(&self) -> ConnectionSettings;
    /// Current status.
    fn connection_status(&self) -> Option<&ConnectionStatus>;
    /// APIs to watch for the given namespaces.
    fn apis(client: &Client, namespaces: &Namespaces) -> Vec<Api<Self>>;
    /// API to patch this object's status.
    fn api_for(&self, client: &Client) -> Api<Self>;
}

impl ConnectionResource for ZitadelConnection {
    const CONTROLLER: &'static str = "zitadelconnection";

    fn settings(&self) -> ConnectionSettings {
        ZitadelConnection::settings(self)
    }

    fn connection_status(&self) -> Option<&ConnectionStatus> {
        self.status.as_ref()
    }

    fn apis(client: &Client, namespaces: &Namespaces) -> Vec<Api<Self>> {
        match namespaces {
            Namespaces::All => vec![Api::all(client.clone())],
            Namespaces::Only(list) => list
                .iter()
                .map(|ns| Api::namespaced(client.clone(), ns))
                .collect(),
        }
    }

    fn api_for(&self, client: &Client) -> Api<Self> {
        Api::namespaced(client.clone(), &self.namespace().unwrap_or_default())
    }
}

impl ConnectionResource for ClusterZitadelConnection {
    const CONTROLLER: &'static str = "clusterzitadelconnection";

    fn settings(&self) -> ConnectionSettings {
        ClusterZitadelConnection::settings(self)
    }

    fn connection_status(&self) -> Option<&ConnectionStatus> {
        self.status.as_ref()
    }

    fn apis(client: &Client, _: &Namespaces) -> Vec<Api<Self>> {
        vec![Api::all(client.clone())]
    }

    fn api_for(&self, client: &Client) -> Api<Self> {
        Api::all(client.clone())
    }
}

struct Ctx {
    client: Client,
    recorder: Recorder,
    settings: Settings,
}

/// Run the controller(s) of one connection kind until `shutdown` resolves.
pub async fn run<C: ConnectionResource>(
    client: Client,
    namespaces: &Namespaces,
    settings: Settings,
    shutdown: impl Fn() -> Shutdown,
) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), Reporter::from(FIELD_MANAGER)),
        settings,
    });
    // Secrets are watched (metadata only) where the connections can reference them: their own
    // namespaces for ZitadelConnection; all namespaces for ClusterZitadelConnection when the
    // operator watches everything (otherwise rotation is picked up by the periodic re-probe).
    let secret_scopes: Vec<Option<String>> = match namespaces {
        Namespaces::All => vec![None],
        Namespaces::Only(list) if C::CONTROLLER == "zitadelconnection" => {
            list.iter().cloned().map(Some).collect()
        }
        Namespaces::Only(_) => vec![],
    };
    let runs = C::apis(&client, namespaces).into_iter().map(|api| {
        let (reader, writer) = reflector::store();
        let main = super::watch(api).reflect(writer).applied_objects();
        let mut controller =
            Controller::for_stream(main, reader).trigger_backoff(super::NoTriggerBackoff);
        for scope in &secret_scopes {
            let secrets: Api<PartialObjectMeta<Secret>> = match scope {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            };
            let store = controller.store();
            controller = controller
                .watches_stream(super::watch(secrets).touched_objects(), move |s| {
                    referencing(&store, s.namespace().as_deref(), &s.name_any())
                });
        }
        controller
            .graceful_shutdown_on(shutdown())
            .run(reconcile::<C>, error_policy::<C>, ctx.clone())
            .for_each(|result| async move {
                if let Err(e) = result {
                    tracing::debug!(controller = C::CONTROLLER, error = %e, "controller event");
                }
            })
    });
    futures::future::join_all(runs).await;
}

/// Connections that read the Secret `namespace/name`.
fn referencing<C: ConnectionResource>(
    store: &Store<C>,
    namespace: Option<&str>,
    name: &str,
) -> Vec<ObjectRef<C>> {
    store
        .state()
        .into_iter()
        .filter(|c| {
            let settings = c.settings();
            let refs = [
                settings.credentials.personal_access_token.as_ref(),
                settings.credentials.jwt_profile.as_ref(),
                settings
                    .ca_bundle
                    .as_ref()
                    .and_then(|b| b.secret_ref.as_ref()),
            ];
            refs.into_iter().flatten().any(|r| {
                r.name == name
                    && r.namespace.as_deref().or(settings.namespace.as_deref()) == namespace
            })
        })
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

fn error_policy<C: ConnectionResource>(_: Arc<C>, error: &kube::Error, _: Arc<Ctx>) -> Action {
    tracing::warn!(controller = C::CONTROLLER, error = %error, "connection reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// Probe the connection and write its status (only when it changed).
async fn reconcile<C: ConnectionResource>(
    obj: Arc<C>,
    ctx: Arc<Ctx>,
) -> Result<Action, kube::Error> {
    let settings = obj.settings();
    let generation = obj.meta().generation;
    let previous = obj.connection_status().cloned().unwrap_or_default();
    let mut next = ConnectionStatus {
        observed_generation: generation,
        ..Default::default()
    };
    let mut transient = false;
    let (ready, reason, message) =
        match connection::build(&ctx.client, &settings, ctx.settings.request_timeout).await {
            Err(e) => ("False", e.reason(), e.to_string()),
            Ok(built) => {
                next.observed_secret_versions = built.versions.clone();
                match built.client.probe().await {
                    Ok((org_id, org_name)) => {
                        next.url = Some(settings.url.clone());
                        next.identity = Some(match &built.service_user {
                            Some(user) => {
                                format!("service user {user} in organization {org_name} ({org_id})")
                            }
                            None => format!("token of organization {org_name} ({org_id})"),
                        });
                        (
                            "True",
                            Reason::Connected,
                            "authenticated probe (GET /management/v1/orgs/me) succeeded"
                                .to_string(),
                        )
                    }
                    Err(e) => {
                        transient = e.is_transient();
                        (
                            "False",
                            e.reason(),
                            format!("authenticated probe failed: {e}"),
                        )
                    }
                }
            }
        };
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    next.conditions = vec![status::condition(
        &previous.conditions,
        status::READY,
        ready,
        reason,
        &message,
        generation,
        &now,
    )];
    if next != previous {
        let patch = serde_json::json!({
            "apiVersion": C::api_version(&()),
            "kind": C::kind(&()),
            "status": next,
        });
        obj.api_for(&ctx.client)
            .patch_status(
                &obj.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
        if ready == "False" {
            let event = Event {
                type_: EventType::Warning,
                reason: reason.to_string(),
                note: Some(message.chars().take(1000).collect()),
                action: "Probe".into(),
                secondary: None,
            };
            if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
                tracing::warn!(error = %e, "cannot publish event");
            }
        }
    }
    // Objects using a connection wait for it: probe again soon after a transient failure.
    Ok(Action::requeue(if ready == "True" {
        ctx.settings.resync
    } else if transient {
        ctx.settings.resync.min(TRANSIENT_PROBE_RETRY)
    } else {
        ctx.settings.resync.min(Duration::from_secs(30))
    }))
}
