//! When synced objects are re-checked (pure parts; the walker's I/O is in `walk`).
//!
//! A successful sync does not schedule its own re-check (a per-object timer kept one queue entry
//! and one map entry per object in the controller's scheduler, forever). Instead one resync
//! walker per controller walks its cache every tick and triggers each synced object whose phase
//! slot (from its uid, in its connection's re-check interval: the resync in Polling mode, the
//! safety net in Events mode) fell in the tick's window: every object once per interval, evenly
//! spread (N / interval per second).
//!
//! An object synced shortly before its slot (on creation, a spec change, an event) is not
//! re-listed at once: when its next slot is closer than half an interval, the [`ResyncLedger`]
//! remembers to skip that one slot — a few bytes per such object, only until the slot passed.

mod walk;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::crd::{DriftPolicy, MetadataResource};
use crate::drift::schedule::{id_hash, phase};
use crate::status;

pub(crate) use walk::walk;

/// How often a walker looks for due objects: a quarter of the shortest re-check interval
/// (`resync`), between 100 ms and 1 s.
pub fn tick(resync: Duration) -> Duration {
    (resync / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// The time since the Unix epoch (the slots are phases of wall-clock cycles).
pub fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// One walk's window of time `(from, to]` (since the Unix epoch): the slots that fell in it are
/// due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    from_ms: u128,
    to_ms: u128,
}

impl Window {
    /// The window after the previous walk at `from` up to and including `to`.
    pub fn new(from: Duration, to: Duration) -> Self {
        Self {
            from_ms: from.as_millis(),
            to_ms: to.as_millis(),
        }
    }

    /// Whether the slot of the object whose uid hashes to `hash` ([`id_hash`]), in a cycle of
    /// `interval`, fell in this window. A window as long as the interval or longer holds every
    /// slot; an empty or backwards one (the clock went back) holds none.
    pub fn holds(&self, hash: u64, interval: Duration) -> bool {
        let cycle = interval.as_millis();
        if self.to_ms <= self.from_ms {
            return false;
        }
        let length = self.to_ms - self.from_ms;
        if cycle == 0 || length >= cycle {
            return true;
        }
        // How far past the window's start the slot comes (wrapping around the cycle).
        let offset = (phase(hash, cycle) + cycle - self.from_ms % cycle) % cycle;
        offset != 0 && offset <= length
    }

    /// The time (milliseconds since the Unix epoch) of the latest slot of `hash` in a cycle of
    /// `interval` at or before the window's end.
    fn latest_slot(&self, hash: u64, interval: Duration) -> u128 {
        let cycle = interval.as_millis().max(1);
        let back = (self.to_ms % cycle + cycle - phase(hash, cycle)) % cycle;
        self.to_ms - back.min(self.to_ms)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the walkers need to know besides the cache, a few bytes per entry and only for few
/// objects (uid hash → a second since the Unix epoch):
///
/// - the slots to skip: objects synced less than half an interval before their next slot
///   (→ that slot). Entries leave when the walker passes the slot, or a minute after it when
///   nothing walked the object. Empty in steady state: a walker-triggered sync lands just
///   after its slot.
/// - the objects held back: their last reconcile failed, so they keep their own retry (backoff
///   or stalled re-check) and are not walked (→ until when; each failed retry extends it, a
///   successful sync ends it).
/// - the objects being reconciled right now (at most the controllers' concurrency): a walk
///   does not trigger them (the running reconcile is the check; a trigger would only run it
///   again at once, e.g. a new object's first sync, before its status reached the cache).
#[derive(Debug, Default)]
pub struct ResyncLedger {
    /// uid hash → the slot to skip (milliseconds since the Unix epoch).
    skips: Mutex<HashMap<u64, u64>>,
    /// How far the walkers walked (the end of their last window, milliseconds since the Unix
    /// epoch; 0 before the first walk).
    walked_to: AtomicU64,
    held: Mutex<HashMap<u64, u32>>,
    running: Mutex<HashMap<u64, u32>>,
}

/// While alive, the object it was made for counts as being reconciled
/// ([`ResyncLedger::running`]).
#[derive(Debug)]
pub struct Running<'a> {
    ledger: &'a ResyncLedger,
    hash: u64,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut running = lock(&self.ledger.running);
        if let Some(n) = running.get_mut(&self.hash) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                running.remove(&self.hash);
            }
        }
    }
}

/// How long past its slot an entry nobody consumed is kept.
const GRACE: Duration = Duration::from_secs(60);

fn seconds(t: Duration) -> u32 {
    u32::try_from(t.as_secs()).unwrap_or(u32::MAX)
}

impl ResyncLedger {
    /// The object `uid` synced successfully at `now` (since the Unix epoch) and is re-checked
    /// every `interval`. A slot the walkers have not passed yet although it came before the sync
    /// (it fell between their last walk and the sync) is to be skipped — the sync was that
    /// check; otherwise, when the next slot is closer than half an interval, that one is (it was
    /// just checked); the one after comes an interval later.
    pub fn synced(&self, uid: &str, interval: Duration, now: Duration) {
        let hash = id_hash(uid);
        lock(&self.held).remove(&hash);
        let mut skips = lock(&self.skips);
        let cycle = interval.as_millis();
        if cycle == 0 {
            skips.remove(&hash);
            return;
        }
        let now_ms = now.as_millis();
        let back = (now_ms % cycle + cycle - phase(hash, cycle)) % cycle;
        let previous = now_ms - back.min(now_ms);
        let next = previous + cycle;
        let walked = u128::from(self.walked_to.load(Ordering::Relaxed));
        let skip = if walked != 0 && previous > walked {
            Some(previous)
        } else if next - now_ms < cycle / 2 {
            Some(next)
        } else {
            None
        };
        match skip.and_then(|slot| u64::try_from(slot).ok()) {
            Some(slot) => {
                skips.insert(hash, slot);
            }
            None => {
                skips.remove(&hash);
            }
        }
    }

    /// The walkers walked up to `to` (since the Unix epoch): slots up to there are passed.
    pub fn walked(&self, to: Duration) {
        let to = u64::try_from(to.as_millis()).unwrap_or(u64::MAX);
        self.walked_to.fetch_max(to, Ordering::Relaxed);
    }

    /// The reconcile of the object `uid` at `now` failed: it keeps its own retry and is not
    /// walked for `hold` (its next failed retry, sooner than that, extends it).
    pub fn failed(&self, uid: &str, now: Duration, hold: Duration) {
        let hash = id_hash(uid);
        lock(&self.skips).remove(&hash);
        lock(&self.held).insert(hash, seconds(now + hold));
    }

    /// The object `uid` is not walked for other reasons (driftPolicy `Ignore`): nothing to keep.
    pub fn forget(&self, uid: &str) {
        let hash = id_hash(uid);
        lock(&self.skips).remove(&hash);
        lock(&self.held).remove(&hash);
    }

    /// The object `uid` is being reconciled until the guard drops.
    pub fn running(&self, uid: &str) -> Running<'_> {
        let hash = id_hash(uid);
        *lock(&self.running).entry(hash).or_insert(0) += 1;
        Running { ledger: self, hash }
    }

    /// Whether the object whose uid hashes to `hash` ([`id_hash`]) is due in `window`: its slot
    /// in a cycle of `interval` fell in it, it is not being reconciled nor held back, and the
    /// slot is not one to skip. A skipped slot is forgotten (the next one, an interval later,
    /// is due).
    pub fn due(&self, window: &Window, hash: u64, interval: Duration) -> bool {
        if !window.holds(hash, interval) || lock(&self.running).contains_key(&hash) {
            return false;
        }
        let end = seconds(Duration::from_millis(
            u64::try_from(window.to_ms).unwrap_or(u64::MAX),
        ));
        if lock(&self.held)
            .get(&hash)
            .is_some_and(|until| *until > end)
        {
            return false;
        }
        let slot = u64::try_from(window.latest_slot(hash, interval)).unwrap_or(u64::MAX);
        let mut skips = lock(&self.skips);
        match skips.get(&hash).copied() {
            // The slot to skip: forgotten, the next one (an interval later) is due.
            Some(skip) if skip == slot => {
                skips.remove(&hash);
                false
            }
            // One of an earlier cycle nobody walked: stale.
            Some(skip) if skip < slot => {
                skips.remove(&hash);
                true
            }
            _ => true,
        }
    }

    /// Drop the skips whose slot passed more than a minute before `now` (their object was not
    /// walked at its slot), and the holds that ended.
    pub fn prune(&self, now: Duration) {
        let oldest = u64::try_from(now.saturating_sub(GRACE).as_millis()).unwrap_or(u64::MAX);
        lock(&self.skips).retain(|_, slot| *slot >= oldest);
        let now = seconds(now);
        lock(&self.held).retain(|_, until| *until > now);
    }

    /// How many slots are to be skipped.
    pub fn len(&self) -> usize {
        lock(&self.skips).len()
    }

    /// No slot is to be skipped.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many objects are held back (failed, on their own retry).
    pub fn held(&self) -> usize {
        lock(&self.held).len()
    }
}

/// The stable id an object's phase comes from: its uid (`namespace/name` for an object without
/// one, which only tests build).
pub fn object_id<K: MetadataResource>(obj: &K) -> Cow<'_, str> {
    let meta = obj.meta();
    match meta.uid.as_deref() {
        Some(uid) => Cow::Borrowed(uid),
        None => Cow::Owned(format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default()
        )),
    }
}

/// Whether a walker may re-check `obj` at its slots: live (no deletionTimestamp), not
/// suspended, driftPolicy not `Ignore`, and its cached status has conditions (it was reconciled
/// at least once and the cache shows it: a new object is reconciled on creation, and one whose
/// first status is not in the cache yet would be synced twice). Which reconciles failed is the
/// ledger's business, not the status's: it may be stale or written by someone else.
pub fn walked<K: MetadataResource>(obj: &K) -> bool {
    obj.meta().deletion_timestamp.is_none()
        && !obj.suspended()
        && obj.drift_policy() != DriftPolicy::Ignore
        && obj.status().is_some_and(|s| {
            // Packed in cached copies or not; `Ready` is absent while suspended only.
            s.condition(status::READY).is_some() || s.condition(status::RECONCILING).is_some()
        })
}

#[cfg(test)]
mod tests;
