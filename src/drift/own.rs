//! Recognising the events the operator's own writes caused (pure), so that they trigger no
//! reconcile.
//!
//! Two ways, either suffices:
//!
//! * the event's `editor.userId` is the operator's service user — known for key-file
//!   credentials (the key file's `userId`); the contract has no call that names the user of a
//!   Personal Access Token;
//! * its payload is what the operator last wrote there: every write is recorded (target, key,
//!   hash of the value, or "removed") before it is sent, and an event that matches a recorded
//!   write consumes it. Recorded writes expire after a while (a write whose event never came,
//!   e.g. because the request failed, is forgotten).
//!
//! An event someone else caused that happens to write exactly what the operator last wrote
//! also counts as "own": it changes nothing the operator would repair.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use crate::zitadel::{Event, Target, value_hash};

/// A recorded write of one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Written {
    /// Set to a value with this hash.
    Set(u64),
    /// Removed.
    Removed,
}

/// Writes remembered per key at most (the newest ones).
const PER_KEY: usize = 4;

/// The writes recorded for one key, oldest first: the first inline (almost every key has one
/// write in flight), more only when the same key is written again before its event is read.
#[derive(Debug)]
struct Recent {
    first: (Written, Instant),
    more: Vec<(Written, Instant)>,
}

impl Recent {
    fn len(&self) -> usize {
        1 + self.more.len()
    }

    fn push(&mut self, write: (Written, Instant)) {
        if self.len() >= PER_KEY {
            // Four or more: `more` is not empty, so the slot stays.
            self.remove(0);
        }
        self.more.push(write);
    }

    fn get(&self, i: usize) -> (Written, Instant) {
        if i == 0 { self.first } else { self.more[i - 1] }
    }

    /// Remove the `i`-th write; false when none is left (the slot is to be dropped).
    fn remove(&mut self, i: usize) -> bool {
        if i == 0 {
            if self.more.is_empty() {
                return false;
            }
            self.first = self.more.remove(0);
        } else {
            self.more.remove(i - 1);
        }
        true
    }

    /// Keep the writes not older than `ttl`; false when none is left.
    fn retain_fresh(&mut self, now: Instant, ttl: Duration) -> bool {
        let fresh = |(_, at): &(Written, Instant)| now.saturating_duration_since(*at) <= ttl;
        self.more.retain(fresh);
        if fresh(&self.first) {
            return true;
        }
        if self.more.is_empty() {
            return false;
        }
        self.first = self.more.remove(0);
        true
    }
}

/// The operator's recent writes on one connection, keyed by a 64-bit hash of (aggregate type,
/// aggregate id, key): about 70 bytes per write in flight instead of three strings and two maps
/// (100,000 writes at once while 10,000 objects are created). Two keys whose hashes collide
/// could let an event of one be taken for the operator's write of the other only if the value
/// hashes matched too (then at worst one drift is repaired by the safety-net re-list instead).
#[derive(Debug)]
pub struct OwnWrites {
    ttl: Duration,
    entries: HashMap<u64, Recent>,
}

fn slot(kind: &str, aggregate_id: &str, key: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (kind, aggregate_id, key).hash(&mut h);
    h.finish()
}

fn target_slot(target: &Target, key: &str) -> u64 {
    match target {
        Target::Org { org_id } => slot("org", org_id, key),
        Target::User { user_id, .. } => slot("user", user_id, key),
    }
}

impl OwnWrites {
    /// Writes are remembered for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: HashMap::new(),
        }
    }

    fn push(&mut self, target: &Target, key: &str, written: Written, now: Instant) {
        let write = (written, now);
        self.entries
            .entry(target_slot(target, key))
            .and_modify(|r| r.push(write))
            .or_insert(Recent {
                first: write,
                more: Vec::new(),
            });
    }

    /// The operator is about to set `key` to `value` on `target`.
    pub fn set(&mut self, target: &Target, key: &str, value: &[u8], now: Instant) {
        self.push(target, key, Written::Set(value_hash(value)), now);
    }

    /// The operator is about to remove `key` from `target`.
    pub fn removed(&mut self, target: &Target, key: &str, now: Instant) {
        self.push(target, key, Written::Removed, now);
    }

    /// Whether `event` is one the recorded writes explain; a match is consumed.
    pub fn explains(&mut self, event: &Event, now: Instant) -> bool {
        let written = match event.event_type.as_str() {
            "org.metadata.set" | "user.metadata.set" => match event.value_hash {
                Some(hash) => Written::Set(hash),
                None => return false,
            },
            "org.metadata.removed" | "user.metadata.removed" => Written::Removed,
            _ => return false,
        };
        let Some(key) = event.key.as_deref() else {
            return false;
        };
        if !matches!(event.aggregate_type.as_str(), "org" | "user") {
            return false;
        }
        let at = slot(&event.aggregate_type, &event.aggregate_id, key);
        let ttl = self.ttl;
        let Some(recent) = self.entries.get_mut(&at) else {
            return false;
        };
        let found = (0..recent.len()).find(|i| {
            let (w, when) = recent.get(*i);
            w == written && now.saturating_duration_since(when) <= ttl
        });
        if let Some(i) = found
            && !recent.remove(i)
        {
            self.entries.remove(&at);
        }
        found.is_some()
    }

    /// Forget writes older than the TTL.
    pub fn prune(&mut self, now: Instant) {
        let ttl = self.ttl;
        self.entries.retain(|_, r| r.retain_fresh(now, ttl));
        // Give memory back after a burst (10,000 creates) once it is mostly consumed.
        if self.entries.capacity() > 4 * self.entries.len().max(1024) {
            self.entries.shrink_to_fit();
        }
    }

    /// Writes remembered now.
    pub fn len(&self) -> usize {
        self.entries.values().map(Recent::len).sum()
    }

    /// Nothing remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn event(kind: &str, id: &str, event_type: &str, key: &str, value: Option<&[u8]>) -> Event {
        Event {
            aggregate_type: kind.into(),
            aggregate_id: id.into(),
            resource_owner: "1".into(),
            sequence: 1,
            created: Utc::now(),
            event_type: event_type.into(),
            editor: "someone".into(),
            key: Some(key.into()),
            value_hash: value.map(value_hash),
        }
    }

    #[test]
    fn a_recorded_write_explains_its_event_once() {
        let now = Instant::now();
        let org = Target::Org { org_id: "1".into() };
        let mut own = OwnWrites::new(Duration::from_secs(60));
        own.set(&org, "tier", b"gold", now);
        own.removed(&org, "old", now);
        let set = event("org", "1", "org.metadata.set", "tier", Some(b"gold"));
        assert!(own.explains(&set, now));
        assert!(!own.explains(&set, now), "consumed");
        assert!(own.explains(&event("org", "1", "org.metadata.removed", "old", None), now));
        assert!(own.is_empty());
    }

    #[test]
    fn other_values_keys_targets_and_kinds_are_not_explained() {
        let now = Instant::now();
        let user = Target::User {
            org_id: "1".into(),
            user_id: "2".into(),
        };
        let mut own = OwnWrites::new(Duration::from_secs(60));
        own.set(&user, "team", b"a", now);
        let cases = [
            event("user", "2", "user.metadata.set", "team", Some(b"b")),
            event("user", "2", "user.metadata.set", "other", Some(b"a")),
            event("user", "3", "user.metadata.set", "team", Some(b"a")),
            event("org", "2", "org.metadata.set", "team", Some(b"a")),
            event("user", "2", "user.metadata.removed", "team", None),
            event("user", "2", "user.removed", "team", None),
            event("user", "2", "user.metadata.removed.all", "team", None),
        ];
        for e in &cases {
            assert!(!own.explains(e, now), "{e:?}");
        }
        assert_eq!(own.len(), 1);
    }

    #[test]
    fn several_quick_writes_of_one_key_each_explain_their_event() {
        let now = Instant::now();
        let org = Target::Org { org_id: "1".into() };
        let mut own = OwnWrites::new(Duration::from_secs(60));
        own.set(&org, "k", b"1", now);
        own.set(&org, "k", b"2", now);
        own.removed(&org, "k", now);
        assert!(own.explains(&event("org", "1", "org.metadata.set", "k", Some(b"1")), now));
        assert!(own.explains(&event("org", "1", "org.metadata.set", "k", Some(b"2")), now));
        assert!(own.explains(&event("org", "1", "org.metadata.removed", "k", None), now));
    }

    #[test]
    fn only_the_newest_writes_of_a_key_are_kept_and_expiry_keeps_the_fresh_ones() {
        let start = Instant::now();
        let org = Target::Org { org_id: "1".into() };
        let mut own = OwnWrites::new(Duration::from_secs(60));
        for (i, v) in [b"1", b"2", b"3", b"4", b"5"].iter().enumerate() {
            own.set(&org, "k", *v, start + Duration::from_secs(i as u64 * 20));
        }
        assert_eq!(own.len(), PER_KEY, "the oldest was dropped");
        let set = |v: &[u8]| event("org", "1", "org.metadata.set", "k", Some(v));
        let at = start + Duration::from_secs(80);
        assert!(!own.explains(&set(b"1"), at), "dropped");
        // At 101 s, the writes at 20 s and 40 s are older than the TTL.
        own.prune(start + Duration::from_secs(101));
        assert_eq!(own.len(), 2);
        let at = start + Duration::from_secs(101);
        assert!(own.explains(&set(b"5"), at));
        assert!(own.explains(&set(b"4"), at));
        assert!(own.is_empty());
    }

    #[test]
    fn writes_expire() {
        let start = Instant::now();
        let org = Target::Org { org_id: "1".into() };
        let mut own = OwnWrites::new(Duration::from_secs(60));
        own.set(&org, "k", b"v", start);
        let later = start + Duration::from_secs(61);
        let e = event("org", "1", "org.metadata.set", "k", Some(b"v"));
        assert!(!own.explains(&e, later));
        own.prune(later);
        assert!(own.is_empty());
    }
}
