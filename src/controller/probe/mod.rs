//! Controllers of `ZitadelConnection` and `ClusterZitadelConnection`: build a client from the
//! connection's Secrets, make an authenticated probe call, and report `Ready` with the reachable
//! URL and the authenticated identity, and `Reconciling` while the probe waits for ZITADEL (the
//! connection's objects then wait too instead of stalling). Watching the referenced Secrets makes
//! rotation take effect without a restart (objects using the connection are re-synced when its
//! status changes).
//!
//! Each connection also keeps what its objects need for their cleanup ([`lifecycle`]): its own
//! in-use finalizer until no object uses it, and a finalizer on the Secrets/ConfigMaps it reads
//! while it exists. [`status`] builds the status (pure).

pub mod lifecycle;
mod report;
mod resource;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeSet;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use self::lifecycle::{Executed, Facts, Plan};
use self::status::{DriftAsk, probe, probe_status, terminating};
use super::finalizers::{self, Finalizers, Held, HeldKind, IN_USE};
use super::usage::{ConnectionKey, UsageIndex};
use super::watches::{NoTriggerBackoff, matching, scoped_api, watch};
use super::{FIELD_MANAGER, Namespaces, Settings, Shutdown};
use crate::connections::build;
use crate::connections::guard;
use crate::crd::{
    ClusterZitadelConnection, ConnectionKind, ConnectionSettings, ConnectionStatus,
    DriftDetectionMode, DriftDetectionSpec, ZitadelConnection,
};
use crate::drift::Detection;
use crate::reason::Reason;
use crate::sources::{SourceKind, ValueSources};
use crate::status as conditions;

use report::*;
pub use resource::ConnectionResource;
use resource::*;

/// What the connection controllers share.
pub struct ConnectionParts {
    /// Kubernetes client.
    pub client: Client,
    /// Reads the connections' Secrets/ConfigMaps.
    pub sources: Arc<dyn ValueSources>,
    /// Which objects use which connection.
    pub usage: UsageIndex,
    /// Adds and removes finalizers.
    pub finalizers: Arc<dyn Finalizers>,
    /// Timing knobs.
    pub settings: Settings,
}

struct Ctx {
    parts: ConnectionParts,
    recorder: Recorder,
}

/// Run the controller(s) of one connection kind until `shutdown` resolves.
pub async fn run<C: ConnectionResource>(
    parts: ConnectionParts,
    namespaces: &Namespaces,
    shutdown: impl Fn() -> Shutdown,
) {
    let client = parts.client.clone();
    let usage = parts.usage.clone();
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), Reporter::from(FIELD_MANAGER)),
        parts,
    });
    // Secrets are watched (metadata only) where the connections can reference them: their own
    // namespaces for ZitadelConnection; all namespaces for ClusterZitadelConnection when the
    // operator watches everything (otherwise rotation is picked up by the periodic re-probe).
    let secret_scopes: Vec<Option<String>> = match namespaces {
        Namespaces::All => vec![None],
        Namespaces::Only(_) if C::KIND == ConnectionKind::ZitadelConnection => namespaces.scopes(),
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
        // A connection being deleted goes as soon as its last user is gone.
        let store = controller.store();
        let users_changed = futures::stream::unfold(usage.subscribe(), |mut rx| async move {
            rx.recv().await.map(|key| (key, rx))
        })
        .filter_map(move |key| {
            let found = deleting_connection(&store, &key);
            async move { found }
        });
        controller
            .reconcile_on(users_changed)
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

/// The connection `key` names, if it is in `store` and being deleted.
fn deleting_connection<C: ConnectionResource>(
    store: &Store<C>,
    key: &ConnectionKey,
) -> Option<ObjectRef<C>> {
    let reference = match key {
        ConnectionKey::Namespaced { namespace, name } => ObjectRef::new(name).within(namespace),
        ConnectionKey::Cluster { name } => ObjectRef::new(name),
        ConnectionKey::Default => return None,
    };
    let conn = store.get(&reference)?;
    (key_of(conn.as_ref()) == *key && conn.meta().deletion_timestamp.is_some()).then_some(reference)
}

/// Connections that read the Secret `namespace/name`.
fn referencing<C: ConnectionResource>(
    store: &Store<C>,
    namespace: Option<&str>,
    name: &str,
) -> Vec<ObjectRef<C>> {
    matching(store, |c| {
        lifecycle::sources(&c.settings()).iter().any(|h| {
            h.kind == HeldKind::Source(SourceKind::Secret)
                && h.name == name
                && h.namespace.as_deref() == namespace
        })
    })
}

fn error_policy<C: ConnectionResource>(_: Arc<C>, error: &kube::Error, _: Arc<Ctx>) -> Action {
    tracing::warn!(controller = C::CONTROLLER, error = %error, "connection reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// Write the connection's status (server-side apply).
async fn patch_status<C: ConnectionResource>(
    obj: &C,
    client: &Client,
    status: &ConnectionStatus,
) -> Result<(), kube::Error> {
    let patch = serde_json::json!({
        "apiVersion": C::api_version(&()),
        "kind": C::kind(&()),
        "status": status,
    });
    obj.api_for(client)
        .patch_status(
            &obj.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok(())
}

/// Keep the finalizers, probe the connection and write its status (only when it changed).
async fn reconcile<C: ConnectionResource>(
    obj: Arc<C>,
    ctx: Arc<Ctx>,
) -> Result<Action, kube::Error> {
    let parts = &ctx.parts;
    let settings = obj.settings();
    let previous = obj.connection_status().cloned().unwrap_or_default();
    let deleting = obj.meta().deletion_timestamp.is_some();
    let has_finalizer = obj.finalizers().iter().any(|f| f == IN_USE);
    let users = if deleting && has_finalizer {
        parts.usage.synced().await;
        parts.usage.users(&key_of(obj.as_ref()))
    } else {
        Vec::new()
    };
    let facts = Facts {
        deleting,
        has_finalizer,
        users,
        held: previous
            .held_sources
            .iter()
            .filter_map(|r| Held::parse_source(r))
            .collect(),
        desired: lifecycle::sources(&settings),
    };
    let plan = lifecycle::plan(&facts);
    if plan.add_finalizer {
        parts
            .finalizers
            .ensure(&held_of(obj.as_ref()), IN_USE, true)
            .await?;
    }
    let mut recorded = previous.clone();
    if let Some(record) = &plan.record {
        recorded.held_sources = records(record);
        patch_status(obj.as_ref(), &parts.client, &recorded).await?;
    }
    let holder = finalizers::holder(C::KIND, &obj.name_any());
    let done = lifecycle::execute(&plan, parts.finalizers.as_ref(), &holder).await;
    ctx.report_holds(obj.as_ref(), &done).await;
    if deleting && !has_finalizer {
        return Ok(Action::await_change());
    }
    if plan.finishes() {
        if !lifecycle::may_remove_finalizer(&plan, &done) {
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
        parts
            .finalizers
            .ensure(&held_of(obj.as_ref()), IN_USE, false)
            .await?;
        tracing::info!(connection = %key_of(obj.as_ref()), "no object uses the connection any more; released it");
        return Ok(Action::await_change());
    }
    let (next, requeue) = next_status(obj.as_ref(), &ctx, &recorded, &plan, &done).await;
    if next != recorded {
        patch_status(obj.as_ref(), &parts.client, &next).await?;
        announce(obj.as_ref(), &ctx, &recorded, &next).await;
    }
    let retry_holds = !(done.hold_failures.is_empty() && done.release_failures.is_empty());
    Ok(Action::requeue(if retry_holds {
        requeue.min(Duration::from_secs(30))
    } else {
        requeue
    }))
}

/// The status after this reconcile: probed (unless a connection being deleted is still usable
/// on its last probe with unchanged Secrets), the held sources, and `Terminating` while in use.
async fn next_status<C: ConnectionResource>(
    obj: &C,
    ctx: &Ctx,
    previous: &ConnectionStatus,
    plan: &Plan,
    done: &Executed,
) -> (ConnectionStatus, Duration) {
    let parts = &ctx.parts;
    let settings = obj.settings();
    let generation = obj.meta().generation;
    let deleting = obj.meta().deletion_timestamp.is_some();
    let built = build::build(&parts.sources, &settings, parts.settings.request_timeout).await;
    let unchanged = built
        .as_ref()
        .is_ok_and(|b| b.versions == previous.observed_secret_versions);
    let (mut next, requeue) =
        if deleting && unchanged && guard::is_usable(previous, generation, true) {
            let mut kept = previous.clone();
            kept.conditions
                .retain(|c| c.type_ == conditions::READY || c.type_ == conditions::RECONCILING);
            (kept, parts.settings.resync)
        } else {
            let drift = drift_ask(obj, &parts.settings);
            probe_status(
                previous,
                generation,
                &settings.endpoint.url,
                probe(built, &drift).await,
                parts.settings.resync,
                &drift,
            )
        };
    next.held_sources = records(&done.held);
    if let Some(c) = terminating(previous, generation, plan.in_use.as_deref()) {
        next.conditions.push(c);
    }
    (next, requeue)
}

/// The drift detection a connection asks for: its spec, within the operator's flags.
fn drift_ask<C: ConnectionResource>(obj: &C, settings: &Settings) -> DriftAsk {
    let spec = obj.drift_detection();
    let events = settings.drift.detection == Detection::Auto
        && spec.is_none_or(|s| s.mode == DriftDetectionMode::Auto);
    let fallback = settings.drift.event_poll_interval;
    let interval = spec
        .map_or(Ok(None), DriftDetectionSpec::poll_interval)
        .map(|d| d.unwrap_or(fallback));
    DriftAsk {
        events,
        interval,
        fallback,
    }
}

#[cfg(test)]
mod tests;
