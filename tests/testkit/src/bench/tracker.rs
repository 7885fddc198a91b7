//! Watches the benchmark's objects and records, per object, when it was created, when it first
//! became `Ready=True` (for its current generation), and every write to it by someone other than
//! the benchmark (finalizer, status, other), with timestamps; and every Event created or updated
//! in the namespace.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use futures::StreamExt as _;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher;
use serde_json::Value;
use tokio::task::JoinHandle;

/// What a write changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    /// `metadata.finalizers` changed (the operator adds its finalizer).
    Finalizer,
    /// `status` changed.
    Status,
    /// The generation changed: a spec edit (the benchmark's own, not counted as an operator
    /// write).
    Spec,
    /// Anything else (labels, annotations, ...).
    Other,
}

/// One observed write.
#[derive(Clone, Copy, Debug)]
pub struct Write {
    /// When the watch delivered it.
    pub at: Instant,
    /// Object index.
    pub object: usize,
    /// What changed.
    pub kind: WriteKind,
}

#[derive(Clone, Debug, Default)]
struct Snapshot {
    resource_version: String,
    generation: i64,
    finalizers: Vec<String>,
    status: Value,
}

#[derive(Debug, Default)]
struct Track {
    created_at: Option<Instant>,
    first_ready: Option<Instant>,
    /// Latest generation seen Ready, and when it was first seen Ready.
    ready_generation: Option<(i64, Instant)>,
    last: Option<Snapshot>,
}

#[derive(Debug, Default)]
struct Inner {
    index: HashMap<String, usize>,
    tracks: Vec<Track>,
    writes: Vec<Write>,
    /// Event objects created or updated (an Event series is updated in place).
    event_writes: Vec<Instant>,
    ready: usize,
    /// Watch (re)starts after the first list of each kind: writes may be missed around them.
    restarts: usize,
    inits: usize,
}

/// Shared tracker state.
#[derive(Clone, Debug, Default)]
pub struct Tracker {
    inner: Arc<Mutex<Inner>>,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `Ready=True` with `status.observedGeneration == metadata.generation`.
pub fn is_ready(status: &Value, generation: i64) -> bool {
    let observed = status.get("observedGeneration").and_then(Value::as_i64);
    let ready = status
        .get("conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        });
    ready && observed == Some(generation)
}

impl Tracker {
    /// A tracker for the objects named `names` (index = position).
    pub fn new(names: &[String]) -> Tracker {
        let inner = Inner {
            index: names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i))
                .collect(),
            tracks: names.iter().map(|_| Track::default()).collect(),
            ..Inner::default()
        };
        Tracker {
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    /// Watches `api` (one kind, one namespace) until the returned task is aborted. `synced` is
    /// sent once the initial list is done.
    pub fn watch(
        &self,
        api: Api<DynamicObject>,
        synced: tokio::sync::oneshot::Sender<()>,
    ) -> JoinHandle<()> {
        let tracker = self.clone();
        tokio::spawn(async move {
            let mut synced = Some(synced);
            let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()));
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                        tracker.observe(&obj);
                    }
                    Ok(watcher::Event::Init) => {
                        let mut inner = lock(&tracker.inner);
                        inner.inits += 1;
                        if synced.is_none() {
                            inner.restarts += 1;
                        }
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = synced.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(watcher::Event::Delete(_)) => {}
                    Err(e) => {
                        eprintln!("bench: watch error (retrying): {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    }
                }
            }
        })
    }

    /// Watches the Events of a namespace (created or updated) until the task is aborted.
    pub fn watch_events(
        &self,
        api: Api<KubeEvent>,
        synced: tokio::sync::oneshot::Sender<()>,
    ) -> JoinHandle<()> {
        let tracker = self.clone();
        tokio::spawn(async move {
            let mut synced = Some(synced);
            let mut seen: HashMap<String, String> = HashMap::new();
            let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()));
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(e) | watcher::Event::InitApply(e)) => {
                        let name = e.metadata.name.clone().unwrap_or_default();
                        let rv = e.metadata.resource_version.clone().unwrap_or_default();
                        if seen.insert(name, rv.clone()).as_ref() != Some(&rv) {
                            lock(&tracker.inner).event_writes.push(Instant::now());
                        }
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = synced.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("bench: event watch error (retrying): {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    }
                }
            }
        })
    }

    fn observe(&self, obj: &DynamicObject) {
        let now = Instant::now();
        let Some(name) = obj.metadata.name.as_deref() else {
            return;
        };
        let snapshot = Snapshot {
            resource_version: obj.metadata.resource_version.clone().unwrap_or_default(),
            generation: obj.metadata.generation.unwrap_or(0),
            finalizers: obj.metadata.finalizers.clone().unwrap_or_default(),
            status: obj.data.get("status").cloned().unwrap_or(Value::Null),
        };
        let mut inner = lock(&self.inner);
        let Some(&i) = inner.index.get(name) else {
            return;
        };
        let ready = is_ready(&snapshot.status, snapshot.generation);
        let mut newly_ready = false;
        let write = {
            let track = &mut inner.tracks[i];
            let write = match &track.last {
                Some(prev) if prev.resource_version == snapshot.resource_version => None,
                Some(prev) => Some(if prev.generation != snapshot.generation {
                    WriteKind::Spec
                } else if prev.finalizers != snapshot.finalizers {
                    WriteKind::Finalizer
                } else if prev.status != snapshot.status {
                    WriteKind::Status
                } else {
                    WriteKind::Other
                }),
                None => None,
            };
            if ready {
                if track.first_ready.is_none() {
                    track.first_ready = Some(now);
                    newly_ready = true;
                }
                if track
                    .ready_generation
                    .is_none_or(|(g, _)| g < snapshot.generation)
                {
                    track.ready_generation = Some((snapshot.generation, now));
                }
            }
            track.last = Some(snapshot);
            write
        };
        if newly_ready {
            inner.ready += 1;
        }
        if let Some(kind) = write {
            inner.writes.push(Write {
                at: now,
                object: i,
                kind,
            });
        }
    }

    /// Records that object `i` is about to be created.
    pub fn created(&self, i: usize, at: Instant) {
        lock(&self.inner).tracks[i].created_at = Some(at);
    }

    /// Objects that have been Ready at least once.
    pub fn ready_count(&self) -> usize {
        lock(&self.inner).ready
    }

    /// When object `i` was seen Ready at generation `generation` or later.
    pub fn ready_at_generation(&self, i: usize, generation: i64) -> Option<Instant> {
        lock(&self.inner).tracks[i]
            .ready_generation
            .filter(|(g, _)| *g >= generation)
            .map(|(_, at)| at)
    }

    /// Current generation of object `i` as last seen.
    pub fn generation(&self, i: usize) -> Option<i64> {
        lock(&self.inner).tracks[i]
            .last
            .as_ref()
            .map(|s| s.generation)
    }

    /// (created, first Ready) per object.
    pub fn times(&self) -> Vec<(Option<Instant>, Option<Instant>)> {
        lock(&self.inner)
            .tracks
            .iter()
            .map(|t| (t.created_at, t.first_ready))
            .collect()
    }

    /// Every write observed so far.
    pub fn writes(&self) -> Vec<Write> {
        lock(&self.inner).writes.clone()
    }

    /// When Events were created or updated.
    pub fn event_writes(&self) -> Vec<Instant> {
        lock(&self.inner).event_writes.clone()
    }

    /// Watch restarts after the initial lists (0 means no write can have been missed).
    pub fn restarts(&self) -> usize {
        lock(&self.inner).restarts
    }
}
