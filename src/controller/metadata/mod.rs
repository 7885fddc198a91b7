//! One reconcile of an `OrgMetadata` / `UserMetadata`, a step per file:
//!
//! - `sources`: read `valueFrom` Secrets/ConfigMaps;
//! - `target`: resolve the org/user the calls act on;
//! - `claims`: keys an earlier object on the same target already manages;
//! - `sync`: list → plan → execute → read back;
//! - `outcome`: (pure) the sync result's conditions, requeue and retry;
//! - `report`: status and Events;
//! - `cleanup`: deletion.
//!
//! The steps reach Kubernetes and ZITADEL only through the traits in [`Io`], so each runs against
//! in-memory fakes in unit tests.

pub mod claims;
pub mod cleanup;
pub mod outcome;
pub mod report;
pub mod sources;
pub mod sync;
pub mod target;
pub mod unrecorded;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Api, ResourceExt};

pub use claims::Neighbours;
pub use report::{KubeReport, Notice, Report};

use super::resync::{ResyncLedger, object_id, since_epoch};
use super::{Context, Error, FINALIZER, Settings};
use crate::connections::ConnectionResolver;
use crate::crd::{DriftPolicy, MetadataResource};
use crate::sources::ValueSources;
use crate::status::Outcome;

/// What the reconcile steps read and write, behind traits.
pub struct Io<'a, K> {
    /// Timing knobs.
    pub settings: &'a Settings,
    /// `valueFrom` Secrets/ConfigMaps.
    pub sources: &'a dyn ValueSources,
    /// The object's connection → a ZITADEL client.
    pub connections: &'a dyn ConnectionResolver,
    /// Other objects on the same target.
    pub neighbours: &'a dyn Neighbours<K>,
    /// Status and Events.
    pub report: &'a dyn Report<K>,
    /// New objects whose first write went out without a listing before it.
    pub first_writes: &'a sync::FirstWrites,
    /// Keys ZITADEL acknowledged that no status write has shown yet.
    pub unrecorded: &'a unrecorded::UnrecordedKeys,
    /// Resync slots to skip: a successful sync records itself here.
    pub resyncs: &'a ResyncLedger,
}

impl<K> Io<'_, K> {
    /// The read-only part: what the planning steps need.
    pub fn reads(&self) -> Reads<'_, K> {
        Reads {
            sources: self.sources,
            connections: self.connections,
            neighbours: self.neighbours,
        }
    }
}

/// What the planning steps ([`sync::prepare_with`]) read, and nothing they could write with: the
/// read-only part of [`Io`], shared by the reconcile and the `diff` preview.
pub struct Reads<'a, K> {
    /// `valueFrom` Secrets/ConfigMaps.
    pub sources: &'a dyn ValueSources,
    /// The object's connection → a ZITADEL client.
    pub connections: &'a dyn ConnectionResolver,
    /// Other objects on the same target.
    pub neighbours: &'a dyn Neighbours<K>,
}

/// The object's connection: a client, or why it may not have one (no ZITADEL call then).
async fn connect<K: MetadataResource>(obj: &K, io: &Io<'_, K>) -> crate::connections::Resolution {
    let ns = obj.namespace().unwrap_or_default();
    io.connections.for_object(&ns, obj.connection_ref()).await
}

/// The result of one reconcile, and whether it left the object Stalled (a terminal error for
/// the metrics, although the controller gets `Ok`).
pub struct Reconciled {
    /// What the controller gets.
    pub result: Result<Action, Error>,
    /// The object is Stalled.
    pub stalled: bool,
}

/// Reconcile one object: the finalizer first, then [`apply`] or [`cleanup::cleanup`]. The
/// object comes from the cache with its entries packed: they are restored here, once, for every
/// step after (which would otherwise unpack them on each read, see
/// [`MetadataResource::entries`]).
pub async fn reconcile<K: MetadataResource>(obj: Arc<K>, ctx: Arc<Context<K>>) -> Reconciled {
    let obj = unpacked(obj);
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let stalled = AtomicBool::new(false);
    // The resync walker leaves the object alone meanwhile.
    let _running = ctx.resyncs.running(&object_id(obj.as_ref()));
    let settings = ctx.settings_for(obj.as_ref()).await;
    let io = ctx.io_with(&settings);
    let result = finalizer(&api, FINALIZER, obj.clone(), |event| async {
        match event {
            Event::Apply(o) => {
                let (result, outcome) = apply(o.as_ref(), &io).await;
                stalled.store(
                    outcome.as_ref().is_some_and(Outcome::is_stalled),
                    Ordering::Relaxed,
                );
                result
            }
            Event::Cleanup(o) => cleanup::cleanup(o.as_ref(), &io).await,
        }
    })
    .await
    .map_err(Error::from);
    if result.is_ok() {
        ctx.reset_failures(&obj);
    }
    Reconciled {
        result,
        stalled: stalled.load(Ordering::Relaxed),
    }
}

/// `obj` with its entries restored (the same `Arc` when they are not packed).
pub fn unpacked<K: MetadataResource>(obj: Arc<K>) -> Arc<K> {
    if obj.is_packed() {
        Arc::new(obj.unpacked())
    } else {
        obj
    }
}

/// Sync the object and report: status only when it changed, an Event for a new failure or
/// drift, one per write after the first sync. Returns the controller's result and the outcome (if the reconcile got
/// that far). The resync walker learns whether it re-checks the object at its slots (synced)
/// or leaves it to its own retry (failed).
pub async fn apply<K: MetadataResource>(
    obj: &K,
    io: &Io<'_, K>,
) -> (Result<Action, Error>, Option<Outcome>) {
    let shown = obj.full_status().unwrap_or_default();
    // Plan from the keys the status shows and those a failed status write did not record.
    let previous = io.unrecorded.managed_view(&uid_of(obj), &shown);
    if obj.suspended() {
        return (suspend(obj, io, &previous, &shown).await, None);
    }
    let (next, outcome) = sync_and_report(obj, io, &previous, &shown).await;
    let (id, now) = (object_id(obj), since_epoch());
    match &next {
        Ok(outcome::Requeue::Resync) => io.resyncs.synced(&id, io.settings.resync, now),
        _ if obj.drift_policy() == DriftPolicy::Ignore => io.resyncs.forget(&id),
        _ => io.resyncs.failed(&id, now, held_for(io.settings)),
    }
    (next.map(Action::from), outcome)
}

/// How long a failed object is left to its own retry before the walker considers it again:
/// longer than its retry (stalled re-check or longest backoff) waits, which refreshes it.
fn held_for(settings: &Settings) -> std::time::Duration {
    settings.stalled_requeue.max(settings.backoff_max) + std::time::Duration::from_secs(60)
}

/// The object's uid (empty for an object the API server has not stored, as in some tests).
fn uid_of<K: MetadataResource>(obj: &K) -> String {
    obj.uid().unwrap_or_default()
}

/// Write `new_status` unless the object already shows it (`shown`); keep track of managed keys
/// a failed write leaves out of the status ([`unrecorded`]).
async fn write_if_changed<K: MetadataResource>(
    obj: &K,
    io: &Io<'_, K>,
    new_status: &crate::crd::MetadataStatus,
    shown: &crate::crd::MetadataStatus,
) -> Result<bool, kube::Error> {
    let uid = uid_of(obj);
    if new_status == shown {
        io.unrecorded.forget(&uid);
        return Ok(false);
    }
    match io.report.write_status(obj, new_status).await {
        Ok(()) => {
            io.unrecorded.forget(&uid);
            Ok(true)
        }
        Err(e) => {
            io.unrecorded
                .write_failed(&uid, &new_status.managed_keys, shown);
            Err(e)
        }
    }
}

/// `previous`: the object's status with its [unrecorded](unrecorded) keys among the managed ones
/// (what the sync plans from); `shown`: the status as the object carries it (what a status write
/// is compared with).
async fn sync_and_report<K: MetadataResource>(
    obj: &K,
    io: &Io<'_, K>,
    previous: &crate::crd::MetadataStatus,
    shown: &crate::crd::MetadataStatus,
) -> (Result<outcome::Requeue, Error>, Option<Outcome>) {
    let mut progress = sync::Progress::default();
    let first = sync::first_sync(previous);
    let result = sync::sync(obj, io, previous, &mut progress).await;
    let decision = outcome::decide(obj, io.settings, previous, &progress, result);
    // The first sync's writes are told by the Ready condition (and status.managedKeys) alone:
    // no Event flood when thousands of objects are created at once.
    if !first {
        for notice in report::write_notices(obj, &progress) {
            io.report.event(obj, notice).await;
        }
    }
    let mut new_status = report::build_status(
        obj,
        previous,
        &progress,
        decision.managed,
        &decision.outcome,
    );
    new_status.observed_source_versions = decision.source_versions;
    if let Some(drifted) = &decision.drifted {
        let condition = report::drifted_condition(obj, previous, drifted);
        report::add_own_condition(&mut new_status, condition);
    }
    match write_if_changed(obj, io, &new_status, shown).await {
        Err(e) => return (Err(e.into()), Some(decision.outcome)),
        Ok(true) => {
            if let Some(notice) = report::outcome_notice(&decision.outcome) {
                io.report.event(obj, notice).await;
            }
        }
        Ok(false) => {}
    }
    (decision.next, Some(decision.outcome))
}

/// `spec.suspend`: no ZITADEL call; the status says so.
async fn suspend<K: MetadataResource>(
    obj: &K,
    io: &Io<'_, K>,
    previous: &crate::crd::MetadataStatus,
    shown: &crate::crd::MetadataStatus,
) -> Result<Action, Error> {
    let outcome = Outcome::Suspended {
        message:
            "reconciliation is suspended (spec.suspend is true); ZITADEL is neither read nor written"
                .into(),
    };
    let managed = previous.managed_keys.iter().cloned().collect();
    let mut new_status =
        report::build_status(obj, previous, &sync::Progress::default(), managed, &outcome);
    new_status.observed_source_versions = previous.observed_source_versions.clone();
    write_if_changed(obj, io, &new_status, shown).await?;
    Ok(Action::await_change())
}
