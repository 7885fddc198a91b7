//! When each object is re-checked (pure): at its own phase of the interval, so that N objects
//! re-list ZITADEL evenly spread (N / interval per second) instead of in bursts — after a
//! restart or a mass create, every object would otherwise come due at the same moment, every
//! interval, forever.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::Duration;

/// How drift is detected for the objects of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// From ZITADEL's event log (one `ListEvents` per poll interval); objects are re-listed
    /// only as a slow safety net.
    Events,
    /// Each object re-lists its target every resync interval.
    Polling,
}

impl Mode {
    /// `Events` / `Polling` (status field and metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Events => "Events",
            Mode::Polling => "Polling",
        }
    }
}

display_as_str!(Mode);

/// The re-check interval of a synced object: `resync` in Polling mode; in Events mode the
/// safety net, never shorter than `resync` (events make re-listing rarer, not more frequent).
pub fn recheck_interval(mode: Mode, resync: Duration, safety_net: Duration) -> Duration {
    match mode {
        Mode::Events => safety_net.max(resync),
        Mode::Polling => resync,
    }
}

/// A stable hash of an object's id (its uid): its phase comes from it ([`phase`]).
pub fn id_hash(id: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish()
}

/// The phase (milliseconds into a cycle of `interval_ms`, which must not be 0) of the object
/// whose id hashes to `hash` ([`id_hash`]).
pub fn phase(hash: u64, interval_ms: u128) -> u128 {
    u128::from(hash) % interval_ms
}

/// Time from `now` (since the Unix epoch) until the object `id`'s next slot in a cycle of
/// `interval`, between half and one and a half intervals: a slot closer than half an interval
/// is skipped, so an object just synced (e.g. on creation) is not re-listed at once. In steady
/// state an object is re-checked exactly once per interval, at its slot.
pub fn phased_delay(interval: Duration, id: &str, now: Duration) -> Duration {
    let interval_ms = interval.as_millis();
    if interval_ms == 0 {
        return interval;
    }
    let position = now.as_millis() % interval_ms;
    let slot = phase(id_hash(id), interval_ms);
    let mut wait = (slot + interval_ms - position) % interval_ms;
    if wait < interval_ms / 2 {
        wait += interval_ms;
    }
    Duration::from_millis(u64::try_from(wait).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_mode_rechecks_at_the_safety_net_never_faster_than_polling() {
        let (m5, h1) = (Duration::from_secs(300), Duration::from_secs(3600));
        assert_eq!(recheck_interval(Mode::Polling, m5, h1), m5);
        assert_eq!(recheck_interval(Mode::Events, m5, h1), h1);
        let day = Duration::from_secs(86_400);
        assert_eq!(recheck_interval(Mode::Events, day, h1), day);
    }

    #[test]
    fn delays_stay_within_half_and_one_and_a_half_intervals() {
        let interval = Duration::from_secs(300);
        for i in 0..500u64 {
            let now = Duration::from_millis(1_700_000_000_000 + i * 7_919);
            let d = phased_delay(interval, &format!("uid-{i}"), now);
            assert!(d >= interval / 2 && d < interval * 3 / 2, "{d:?}");
        }
        assert_eq!(
            phased_delay(Duration::ZERO, "x", Duration::from_secs(5)),
            Duration::ZERO
        );
    }

    #[test]
    fn an_object_keeps_its_slot_once_per_interval() {
        let interval = Duration::from_secs(60);
        let mut now = Duration::from_secs(1_700_000_000);
        let first = now + phased_delay(interval, "uid", now);
        // Checked at its slot (plus the reconcile's own time): the next slot is one interval on.
        now = first + Duration::from_millis(150);
        let second = now + phased_delay(interval, "uid", now);
        assert_eq!(second - first, interval);
    }

    #[test]
    fn objects_synced_at_once_spread_evenly_over_the_interval() {
        // 10,000 objects synced in the same second (a mass create): when do they re-list?
        let interval = Duration::from_secs(300);
        let now = Duration::from_secs(1_700_000_000);
        let mut per_bucket = [0u32; 10];
        for i in 0..10_000 {
            let due = now + phased_delay(interval, &format!("0b0e{i:08x}-uid"), now);
            // Position of the slot within the cycle, in tenths of the interval.
            let bucket = (due.as_millis() % interval.as_millis()) * 10 / interval.as_millis();
            per_bucket[bucket as usize] += 1;
        }
        // Even spread: every tenth of the cycle gets about 1,000 (no burst at one moment).
        for n in per_bucket {
            assert!((850..=1_150).contains(&n), "{per_bucket:?}");
        }
    }
}
