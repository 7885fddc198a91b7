//! The resync walker's I/O: every tick, walk one controller's cache and trigger the objects
//! whose slot fell in the window since the previous walk.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use super::{ResyncLedger, Window, object_id, since_epoch, walked};
use crate::controller::drift::DriftHub;
use crate::controller::usage::ConnectionKey;
use crate::crd::MetadataResource;
use crate::drift::schedule::id_hash;

/// Walk `store` every `tick` (once it holds its initial list) and send each synced object whose
/// slot fell in the window since the previous walk to `triggers` (the controller's
/// `reconcile_on` stream). Each object's interval is its connection's current re-check interval
/// (`hub`); `ledger` holds the slots to skip. Returns when the controller is gone.
pub(crate) async fn walk<K: MetadataResource>(
    store: Store<K>,
    triggers: mpsc::UnboundedSender<ObjectRef<K>>,
    hub: Arc<DriftHub>,
    ledger: Arc<ResyncLedger>,
    tick: Duration,
) {
    if store.wait_until_ready().await.is_err() {
        return;
    }
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut previous = since_epoch();
    ledger.walked(previous);
    loop {
        ticks.tick().await;
        let now = since_epoch();
        let window = Window::new(previous, now);
        let due = due_objects(&store, &hub, &ledger, &window);
        ledger.walked(now);
        ledger.prune(now);
        if !due.is_empty() {
            tracing::trace!(controller = K::CONTROLLER, due = due.len(), "resync walk");
        }
        for reference in due {
            if triggers.send(reference).is_err() {
                return;
            }
        }
        // A clock that went back: wait until it passes the last walk again (no slot twice).
        previous = previous.max(now);
    }
}

/// The objects of `store` due in `window`.
fn due_objects<K: MetadataResource>(
    store: &Store<K>,
    hub: &DriftHub,
    ledger: &ResyncLedger,
    window: &Window,
) -> Vec<ObjectRef<K>> {
    // One look-up per connection and walk.
    let mut intervals: HashMap<ConnectionKey, Duration> = HashMap::new();
    let mut due = Vec::new();
    for obj in store.state() {
        if !walked(obj.as_ref()) {
            continue;
        }
        let ns = obj.meta().namespace.as_deref().unwrap_or_default();
        let key = ConnectionKey::of_ref(ns, obj.connection_ref());
        let interval = *intervals
            .entry(key)
            .or_insert_with_key(|k| hub.recheck_interval(k));
        if ledger.due(window, id_hash(&object_id(obj.as_ref())), interval) {
            due.push(ObjectRef::from_obj(obj.as_ref()));
        }
    }
    due
}
