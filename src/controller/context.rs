//! What one kind's controllers share: settings, the Kubernetes client behind small traits, the
//! caches for conflict detection, metrics and per-object backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use rand::Rng as _;

use super::drift::DriftHub;
use super::index::TargetIndex;
use super::metadata::sync::FirstWrites;
use super::metadata::unrecorded::UnrecordedKeys;
use super::metadata::{Io, KubeReport, Neighbours, claims};
use super::resync::ResyncLedger;
use super::usage::ConnectionKey;
use crate::connections::ConnectionResolver;
use crate::crd::MetadataResource;
use crate::drift::DriftSettings;
use crate::metrics::Metrics;
use crate::sources::ValueSources;

/// Timing knobs of the reconciler.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Re-check interval of a successful object (drift repair). In the settings of one
    /// reconcile ([`Context::settings_for`]): the object's current re-check interval (the
    /// safety net in Events mode).
    pub resync: Duration,
    /// Re-check interval of an object stalled on a permanent error.
    pub stalled_requeue: Duration,
    /// First retry delay after a transient error; doubles per consecutive failure. Each delay is
    /// jittered by ±20% but never shorter than this.
    pub backoff_base: Duration,
    /// Longest retry delay after transient errors (jitter included; only a longer `Retry-After`
    /// from ZITADEL waits longer).
    pub backoff_max: Duration,
    /// Reconciles running at once per controller.
    pub concurrency: u16,
    /// Timeout of one ZITADEL request (clients built from connections).
    pub request_timeout: Duration,
    /// How drift is detected: ZITADEL's event log where allowed, and how objects are paced.
    pub drift: DriftSettings,
    /// Only objects whose labels match this selector are reconciled (sharding across several
    /// operator processes, `--watch-label-selector`); `None`: all.
    pub watch_selector: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            resync: Duration::from_secs(300),
            stalled_requeue: Duration::from_secs(600),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            concurrency: 16,
            request_timeout: Duration::from_secs(30),
            drift: DriftSettings::default(),
            watch_selector: None,
        }
    }
}

/// Shared state of one kind's controllers.
pub struct Context<K: MetadataResource> {
    /// Kubernetes client (finalizer patches).
    pub client: Client,
    /// Resolves each object's connection to a ZITADEL client.
    pub connections: Arc<dyn ConnectionResolver>,
    /// Reads `valueFrom` Secrets/ConfigMaps.
    pub sources: Arc<dyn ValueSources>,
    /// Writes status and Events.
    pub report: KubeReport,
    /// Timing knobs.
    pub settings: Settings,
    /// Caches of all watched objects of this kind (one per watched namespace), for conflict
    /// detection.
    pub stores: Vec<Store<K>>,
    /// Objects by target identity, across `stores`.
    pub(super) targets: TargetIndex,
    /// Metrics (reconcile counters and timings are recorded around the reconcile).
    pub metrics: Arc<Metrics>,
    /// Drift detection: when each object is re-checked, and its connection's event poller.
    pub(super) drift: Arc<DriftHub>,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// New objects whose first write went out without a listing before it.
    first_writes: FirstWrites,
    /// Keys ZITADEL acknowledged that no status write has shown yet.
    unrecorded: UnrecordedKeys,
    /// Resync slots to skip (objects synced shortly before them), shared with the kind's
    /// resync walkers.
    pub(super) resyncs: Arc<ResyncLedger>,
}

impl<K: MetadataResource> Context<K> {
    /// A context over these parts.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        client: Client,
        connections: Arc<dyn ConnectionResolver>,
        sources: Arc<dyn ValueSources>,
        settings: Settings,
        stores: Vec<Store<K>>,
        targets: TargetIndex,
        metrics: Arc<Metrics>,
        drift: Arc<DriftHub>,
    ) -> Self {
        Self {
            report: KubeReport::new(client.clone()),
            client,
            connections,
            sources,
            settings,
            stores,
            targets,
            metrics,
            drift,
            failures: Mutex::new(HashMap::new()),
            first_writes: FirstWrites::default(),
            unrecorded: UnrecordedKeys::default(),
            resyncs: Arc::default(),
        }
    }

    /// The reconcile steps' view of this context.
    pub fn io(&self) -> Io<'_, K> {
        self.io_with(&self.settings)
    }

    /// The reconcile steps' view of this context, with `settings` for this one object.
    pub fn io_with<'a>(&'a self, settings: &'a Settings) -> Io<'a, K> {
        Io {
            settings,
            sources: self.sources.as_ref(),
            connections: self.connections.as_ref(),
            neighbours: self,
            report: &self.report,
            first_writes: &self.first_writes,
            unrecorded: &self.unrecorded,
            resyncs: &self.resyncs,
        }
    }

    /// The settings for one reconcile of `obj`: `resync` is its connection's re-check interval
    /// now (the resync in Polling mode, the safety net in Events mode), at whose phase the
    /// kind's resync walker re-checks it after a successful sync. The first reconcile on a
    /// connection waits until its drift detection started (bounded).
    pub(super) async fn settings_for(&self, obj: &K) -> Settings {
        let ns = obj.namespace().unwrap_or_default();
        let key = ConnectionKey::of_ref(&ns, obj.connection_ref());
        self.drift.before_sync(&key).await;
        Settings {
            resync: self.drift.recheck_interval(&key),
            ..self.settings.clone()
        }
    }

    fn object_key(obj: &K) -> String {
        format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
    }

    pub(super) fn reset_failures(&self, obj: &K) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(&Self::object_key(obj));
        }
    }

    pub(super) fn next_backoff(&self, obj: &K, retry_after: Option<Duration>) -> Duration {
        let attempt = match self.failures.lock() {
            Ok(mut map) => {
                let n = map.entry(Self::object_key(obj)).or_insert(0);
                *n = n.saturating_add(1);
                *n
            }
            Err(_) => 1,
        };
        backoff_delay(
            &self.settings,
            attempt,
            retry_after,
            rand::rng().random_range(0.8..1.2),
        )
    }
}

#[async_trait::async_trait]
impl<K: MetadataResource> Neighbours<K> for Context<K> {
    /// Objects in the caches on `obj`'s target, once every cache holds its initial list (the
    /// answer must be complete, e.g. right after a restart).
    async fn on_target(&self, obj: &K) -> Vec<Arc<K>> {
        for store in &self.stores {
            // Err only if the watcher is gone, in which case the controller is stopping anyway.
            let _ = store.wait_until_ready().await;
        }
        self.targets
            .objects(&claims::identity(obj))
            .into_iter()
            .filter_map(|(ns, name)| {
                let reference = ObjectRef::new(&name).within(&ns);
                self.stores.iter().find_map(|s| s.get(&reference))
            })
            .collect()
    }
}

/// Exponential backoff with jitter (`jitter` is a factor, drawn from 0.8–1.2), kept within
/// `backoff_base..=backoff_max` so that neither bound is broken by the jitter, and at least what
/// `Retry-After` asked for (which may exceed `backoff_max`).
pub fn backoff_delay(
    settings: &Settings,
    attempt: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    let max = settings.backoff_max;
    let exp = settings
        .backoff_base
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(20)))
        .min(max);
    let jittered = if jitter.is_finite() && jitter > 0.0 {
        exp.mul_f64(jitter.min(2.0))
    } else {
        exp
    };
    let delay = jittered.clamp(settings.backoff_base.min(max), max);
    retry_after.map_or(delay, |ra| delay.max(ra))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(base: Duration, max: Duration) -> Settings {
        Settings {
            backoff_base: base,
            backoff_max: max,
            ..Settings::default()
        }
    }

    #[test]
    fn backoff_doubles_caps_and_honours_retry_after() {
        let s = bounds(Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(backoff_delay(&s, 1, None, 1.0), Duration::from_secs(1));
        assert_eq!(backoff_delay(&s, 2, None, 1.0), Duration::from_secs(2));
        assert_eq!(backoff_delay(&s, 5, None, 1.0), Duration::from_secs(16));
        assert_eq!(backoff_delay(&s, 30, None, 1.0), Duration::from_secs(60));
        assert_eq!(
            backoff_delay(&s, u32::MAX, None, 1.0),
            Duration::from_secs(60)
        );
        assert_eq!(
            backoff_delay(&s, 1, Some(Duration::from_secs(9)), 1.0),
            Duration::from_secs(9)
        );
        // Jitter never goes below the base nor above the maximum.
        assert_eq!(backoff_delay(&s, 1, None, 0.8), Duration::from_secs(1));
        assert_eq!(backoff_delay(&s, 1, None, 1.2), Duration::from_millis(1200));
        assert_eq!(backoff_delay(&s, 3, None, 0.8), Duration::from_millis(3200));
        assert_eq!(backoff_delay(&s, 30, None, 1.2), Duration::from_secs(60));
        assert_eq!(backoff_delay(&s, 30, None, 0.8), Duration::from_secs(48));
        // Retry-After may exceed the maximum.
        assert_eq!(
            backoff_delay(&s, 30, Some(Duration::from_secs(90)), 0.8),
            Duration::from_secs(90)
        );
    }

    #[test]
    fn jittered_backoff_stays_within_base_and_max() {
        let s = bounds(Duration::from_millis(200), Duration::from_secs(2));
        for attempt in 1..40 {
            for step in 0..=40 {
                let jitter = 0.8 + f64::from(step) * 0.01;
                let d = backoff_delay(&s, attempt, None, jitter);
                assert!(
                    (s.backoff_base..=s.backoff_max).contains(&d),
                    "attempt {attempt} jitter {jitter}: {d:?}"
                );
            }
        }
        // A base above the maximum (rejected by the flags) does not panic.
        let odd = bounds(Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(backoff_delay(&odd, 1, None, 1.0), Duration::from_secs(1));
        assert_eq!(
            backoff_delay(&odd, 1, None, f64::NAN),
            Duration::from_secs(1)
        );
    }
}
