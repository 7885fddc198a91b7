//! Controllers of `ZitadelConnection` and `ClusterZitadelConnection`: build a client from the
//! connection's Secrets, make an authenticated probe call, and report `Ready` with the reachable
//! URL and the authenticated identity, and `Reconciling` while the probe waits for ZITADEL (the
//! connection's objects then wait too instead of stalling). Watching the referenced Secrets makes
//! rotation take effect without a restart (objects using the connection are re-synced when its
//! status changes).

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

use super::watches::{NoTriggerBackoff, matching, scoped_api, watch};
use super::{FIELD_MANAGER, Namespaces, Settings, Shutdown};
use crate::connections::build::{self, BuildError, Built, ProbeResult};
use crate::crd::{
    ApiVersion, ClusterZitadelConnection, ConnectionSettings, ConnectionStatus, ZitadelConnection,
};
use crate::reason::Reason;
use crate::sources::ValueSources;
use crate::status;
use crate::zitadel::ZitadelError;

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

/// The parts both connection kinds implement alike.
macro_rules! settings_and_status {
    ($kind:ty) => {
        fn settings(&self) -> ConnectionSettings {
            <$kind>::settings(self)
        }

        fn connection_status(&self) -> Option<&ConnectionStatus> {
            self.status.as_ref()
        }
    };
}

impl ConnectionResource for ZitadelConnection {
    const CONTROLLER: &'static str = "zitadelconnection";

    settings_and_status!(ZitadelConnection);

    fn apis(client: &Client, namespaces: &Namespaces) -> Vec<Api<Self>> {
        namespaces
            .scopes()
            .iter()
            .map(|ns| scoped_api(client, ns.as_deref()))
            .collect()
    }

    fn api_for(&self, client: &Client) -> Api<Self> {
        Api::namespaced(client.clone(), &self.namespace().unwrap_or_default())
    }
}

impl ConnectionResource for ClusterZitadelConnection {
    const CONTROLLER: &'static str = "clusterzitadelconnection";

    settings_and_status!(ClusterZitadelConnection);

    fn apis(client: &Client, _: &Namespaces) -> Vec<Api<Self>> {
        vec![Api::all(client.clone())]
    }

    fn api_for(&self, client: &Client) -> Api<Self> {
        Api::all(client.clone())
    }
}

struct Ctx {
    client: Client,
    sources: Arc<dyn ValueSources>,
    recorder: Recorder,
    settings: Settings,
}

/// Run the controller(s) of one connection kind until `shutdown` resolves; Secrets are read
/// through `sources`.
pub async fn run<C: ConnectionResource>(
    client: Client,
    sources: Arc<dyn ValueSources>,
    namespaces: &Namespaces,
    settings: Settings,
    shutdown: impl Fn() -> Shutdown,
) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        sources,
        recorder: Recorder::new(client.clone(), Reporter::from(FIELD_MANAGER)),
        settings,
    });
    // Secrets are watched (metadata only) where the connections can reference them: their own
    // namespaces for ZitadelConnection; all namespaces for ClusterZitadelConnection when the
    // operator watches everything (otherwise rotation is picked up by the periodic re-probe).
    let secret_scopes: Vec<Option<String>> = match namespaces {
        Namespaces::All => vec![None],
        Namespaces::Only(_) if C::CONTROLLER == "zitadelconnection" => namespaces.scopes(),
        Namespaces::Only(_) => vec![],
    };
    let runs = C::apis(&client, namespaces).into_iter().map(|api| {
        let (reader, writer) = reflector::store();
        let main = watch(api).reflect(writer).applied_objects();
        let mut controller = Controller::for_stream(main, reader).trigger_backoff(NoTriggerBackoff);
        for scope in &secret_scopes {
            let secrets: Api<PartialObjectMeta<Secret>> = scoped_api(&client, scope.as_deref());
            let store = controller.store();
            controller = controller.watches_stream(watch(secrets).touched_objects(), move |s| {
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
    matching(store, |c| {
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
            r.name == name && r.namespace.as_deref().or(settings.namespace.as_deref()) == namespace
        })
    })
}

fn error_policy<C: ConnectionResource>(_: Arc<C>, error: &kube::Error, _: Arc<Ctx>) -> Action {
    tracing::warn!(controller = C::CONTROLLER, error = %error, "connection reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// How a probe ended.
enum Probed {
    /// The client could not be built (no call was made).
    Unbuilt(BuildError),
    /// The probe call failed.
    Failed(Vec<String>, ZitadelError),
    /// Authenticated; `service_user` for a key file.
    Connected {
        versions: Vec<String>,
        service_user: Option<String>,
        found: ProbeResult,
    },
}

async fn probe(built: Result<Built, BuildError>) -> Probed {
    match built {
        Err(e) => Probed::Unbuilt(e),
        Ok(built) => match built.probe().await {
            Ok(found) => Probed::Connected {
                versions: built.versions,
                service_user: built.service_user,
                found,
            },
            Err(e) => Probed::Failed(built.versions, e),
        },
    }
}

/// The connection's status after a probe (pure), and when to probe again. `Reconciling=True`
/// records that the probe failed on a transient ZITADEL error (its reason is transient):
/// objects using the connection wait for it instead of stalling.
fn probe_status(
    previous: &ConnectionStatus,
    generation: Option<i64>,
    url: &str,
    probed: Probed,
    resync: Duration,
) -> (ConnectionStatus, Duration) {
    let mut next = ConnectionStatus {
        observed_generation: generation,
        ..Default::default()
    };
    let (ready, reason, message, retry) = match probed {
        Probed::Unbuilt(e) => (false, e.reason(), e.to_string(), Duration::from_secs(30)),
        Probed::Failed(versions, e) => {
            next.observed_secret_versions = versions;
            let retry = if e.is_transient() {
                TRANSIENT_PROBE_RETRY
            } else {
                Duration::from_secs(30)
            };
            let message = format!("authenticated probe failed: {e}");
            (false, e.reason(), message, retry)
        }
        Probed::Connected {
            versions,
            service_user,
            found,
        } => {
            next.observed_secret_versions = versions;
            next.url = Some(url.to_string());
            next.identity = Some(match (service_user, found.organization) {
                (Some(user), Some((org_id, org_name))) => {
                    format!("service user {user} in organization {org_name} ({org_id})")
                }
                (None, Some((org_id, org_name))) => {
                    format!("token of organization {org_name} ({org_id})")
                }
                // v2 has no "my organization" call (v1 is not in use).
                (Some(user), None) => format!("service user {user}"),
                (None, None) => "token (organization not reported over v2)".to_string(),
            });
            let api = &found.api;
            let message = format!(
                "authenticated probe succeeded; metadata APIs: user {} / org {} ({:?})",
                api_label(api.user_metadata),
                api_label(api.org_metadata),
                api.mode
            );
            next.api = Some(found.api);
            (true, Reason::Connected, message, resync)
        }
    };
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let waiting = !ready && reason.is_transient();
    let condition = |type_, state: bool| {
        let state = if state { "True" } else { "False" };
        status::condition(
            &previous.conditions,
            type_,
            state,
            reason,
            &message,
            generation,
            &now,
        )
    };
    next.conditions = vec![
        condition(status::READY, ready),
        condition(status::RECONCILING, waiting),
    ];
    // Objects using a connection wait for it: probe again soon after a transient failure.
    (next, resync.min(retry))
}

fn api_label(api: ApiVersion) -> &'static str {
    match api {
        ApiVersion::V1 => "v1",
        ApiVersion::V2 => "v2",
    }
}

/// Probe the connection and write its status (only when it changed).
async fn reconcile<C: ConnectionResource>(
    obj: Arc<C>,
    ctx: Arc<Ctx>,
) -> Result<Action, kube::Error> {
    let settings = obj.settings();
    let previous = obj.connection_status().cloned().unwrap_or_default();
    let built = build::build(
        ctx.sources.as_ref(),
        &settings,
        ctx.settings.request_timeout,
    )
    .await;
    let probed = probe(built).await;
    let (next, requeue) = probe_status(
        &previous,
        obj.meta().generation,
        &settings.url,
        probed,
        ctx.settings.resync,
    );
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
        if let Some(ready) = status::find(&next.conditions, status::READY)
            && ready.status == "False"
        {
            let event = Event {
                type_: EventType::Warning,
                reason: ready.reason.clone(),
                note: Some(ready.message.chars().take(1000).collect()),
                action: "Probe".into(),
                secondary: None,
            };
            if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
                tracing::warn!(error = %e, "cannot publish event");
            }
        }
    }
    Ok(Action::requeue(requeue))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready_and_reconciling(status: &ConnectionStatus) -> (String, String, String) {
        let get = |t| status::find(&status.conditions, t).map(|c| c.status.clone());
        let ready = status::find(&status.conditions, status::READY).expect("Ready");
        (
            ready.reason.clone(),
            get(status::READY).unwrap_or_default(),
            get(status::RECONCILING).unwrap_or_default(),
        )
    }

    #[test]
    fn probe_outcomes_give_ready_reconciling_and_a_retry() {
        let resync = Duration::from_secs(300);
        let previous = ConnectionStatus::default();
        let outage = Probed::Failed(
            vec!["Secret/ns/pat@1".into()],
            ZitadelError::from_response(503, None, "{}"),
        );
        let (s, retry) = probe_status(&previous, Some(2), "https://z", outage, resync);
        assert_eq!(
            ready_and_reconciling(&s),
            ("ZitadelUnavailable".into(), "False".into(), "True".into())
        );
        assert_eq!(retry, TRANSIENT_PROBE_RETRY);
        assert_eq!(s.observed_generation, Some(2));
        // TLS is retried soon but does not make the connection's objects wait (add a caBundle).
        let tls = Probed::Failed(vec![], ZitadelError::Tls("UnknownIssuer".into()));
        let (s, retry) = probe_status(&previous, Some(2), "https://z", tls, resync);
        assert_eq!(
            ready_and_reconciling(&s),
            (
                "TlsVerificationFailed".into(),
                "False".into(),
                "False".into()
            )
        );
        assert_eq!(retry, TRANSIENT_PROBE_RETRY);
        let unbuilt = Probed::Unbuilt(BuildError::Missing("Secret ns/x not found".into()));
        let (s, retry) = probe_status(&previous, Some(2), "https://z", unbuilt, resync);
        assert_eq!(ready_and_reconciling(&s).0, "SecretNotFound");
        assert_eq!(retry, Duration::from_secs(30));
        let api = |user, org, mode| crate::crd::ApiStatus {
            mode,
            user_metadata: user,
            org_metadata: org,
        };
        let ok = Probed::Connected {
            versions: vec!["Secret/ns/pat@1".into()],
            service_user: Some("300".into()),
            found: ProbeResult {
                organization: Some(("1".into(), "Acme".into())),
                api: api(
                    ApiVersion::V1,
                    ApiVersion::V1,
                    crate::zitadel::ApiMode::Auto,
                ),
            },
        };
        let (s, retry) = probe_status(&previous, Some(2), "https://z", ok, resync);
        assert_eq!(
            ready_and_reconciling(&s),
            ("Connected".into(), "True".into(), "False".into())
        );
        assert_eq!(retry, resync);
        assert_eq!(s.url.as_deref(), Some("https://z"));
        assert_eq!(
            s.identity.as_deref(),
            Some("service user 300 in organization Acme (1)")
        );
        // The API per service is in the status (and its message), e.g. v5 over v2.
        let v5 = Probed::Connected {
            versions: vec![],
            service_user: None,
            found: ProbeResult {
                organization: None,
                api: api(
                    ApiVersion::V2,
                    ApiVersion::V2,
                    crate::zitadel::ApiMode::Auto,
                ),
            },
        };
        let (s, _) = probe_status(&previous, Some(3), "https://z", v5, resync);
        let shown = serde_json::to_value(&s).expect("json");
        assert_eq!(
            shown["api"],
            serde_json::json!({"mode": "Auto", "userMetadata": "v2", "orgMetadata": "v2"})
        );
        assert_eq!(
            s.identity.as_deref(),
            Some("token (organization not reported over v2)")
        );
        let ready = status::find(&s.conditions, status::READY).expect("Ready");
        assert!(
            ready.message.contains("user v2 / org v2 (Auto)"),
            "{}",
            ready.message
        );
    }
}
