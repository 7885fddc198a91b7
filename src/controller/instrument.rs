//! Around each reconcile: metrics (active workers, duration, result as controller-runtime labels
//! it) and the retry policy after a failure.

use std::sync::Arc;
use std::time::Instant;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;

use super::metadata::reconcile;
use super::{Context, Error, FINALIZER};
use crate::crd::MetadataResource;
use crate::metrics::{ConditionCounts, ReconcileResult};
use crate::status;

/// The reconcile with metrics: active workers, duration, and the result as controller-runtime
/// labels it (`error` for failures and `Stalled` outcomes, `requeue` when the reconcile only added
/// the finalizer, else `success`). A `Stalled` object is a terminal error (retrying alone will not
/// fix it) even though the reconcile returns `Ok`: the reconcile says so in its return value.
pub async fn reconcile_instrumented<K: MetadataResource>(
    obj: Arc<K>,
    ctx: Arc<Context<K>>,
) -> Result<Action, Error> {
    let metrics = ctx.metrics.clone();
    let _worker = metrics.reconcile_started(K::CONTROLLER);
    let started = Instant::now();
    let adds_finalizer =
        obj.meta().deletion_timestamp.is_none() && !obj.finalizers().iter().any(|f| f == FINALIZER);
    let done = reconcile(obj, ctx).await;
    if let Err(Error::Cleanup(e)) = &done.result {
        metrics.cleanup_failed(K::CONTROLLER, e.reason());
    }
    let (label, terminal) = match &done.result {
        Err(e) => (ReconcileResult::Error, e.is_terminal()),
        Ok(_) if done.stalled => (ReconcileResult::Error, true),
        Ok(_) if adds_finalizer => (ReconcileResult::Requeue, false),
        Ok(_) => (ReconcileResult::Success, false),
    };
    metrics.reconcile_finished(K::CONTROLLER, label, terminal, started.elapsed());
    done.result
}

/// Called by the controller when a reconcile fails: retry with per-object backoff.
pub fn error_policy<K: MetadataResource>(
    obj: Arc<K>,
    error: &Error,
    ctx: Arc<Context<K>>,
) -> Action {
    let delay = ctx.next_backoff(&obj, error.retry_after());
    tracing::warn!(
        controller = K::CONTROLLER,
        namespace = obj.namespace().unwrap_or_default(),
        name = obj.name_any(),
        error = %error,
        retry_in = ?delay,
        "reconcile failed"
    );
    Action::requeue(delay)
}

/// Ready-condition statuses of the objects in `stores`.
pub(super) fn count_conditions<K: MetadataResource>(stores: &[Store<K>]) -> ConditionCounts {
    let mut counts = ConditionCounts::default();
    for obj in stores.iter().flat_map(Store::state) {
        counts.add(
            obj.status()
                .and_then(|s| s.condition(status::READY))
                .map(|c| c.status),
        );
    }
    counts
}
