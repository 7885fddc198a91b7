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

use std::collections::{HashMap, VecDeque};
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

/// (aggregate type, aggregate id).
type Aggregate = (&'static str, String);

/// The operator's recent writes on one connection.
#[derive(Debug)]
pub struct OwnWrites {
    ttl: Duration,
    entries: HashMap<Aggregate, HashMap<String, VecDeque<(Written, Instant)>>>,
}

fn aggregate(target: &Target) -> Aggregate {
    match target {
        Target::Org { org_id } => ("org", org_id.clone()),
        Target::User { user_id, .. } => ("user", user_id.clone()),
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
        let list = self
            .entries
            .entry(aggregate(target))
            .or_default()
            .entry(key.to_owned())
            .or_default();
        if list.len() >= PER_KEY {
            list.pop_front();
        }
        list.push_back((written, now));
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
        let kind = match event.aggregate_type.as_str() {
            "org" => "org",
            "user" => "user",
            _ => return false,
        };
        let agg = (kind, event.aggregate_id.clone());
        let ttl = self.ttl;
        let Some(keys) = self.entries.get_mut(&agg) else {
            return false;
        };
        let Some(list) = keys.get_mut(key) else {
            return false;
        };
        let found = list
            .iter()
            .position(|(w, at)| *w == written && now.saturating_duration_since(*at) <= ttl);
        if let Some(i) = found {
            list.remove(i);
            if list.is_empty() {
                keys.remove(key);
                if keys.is_empty() {
                    self.entries.remove(&agg);
                }
            }
        }
        found.is_some()
    }

    /// Forget writes older than the TTL.
    pub fn prune(&mut self, now: Instant) {
        let ttl = self.ttl;
        self.entries.retain(|_, keys| {
            keys.retain(|_, list| {
                list.retain(|(_, at)| now.saturating_duration_since(*at) <= ttl);
                !list.is_empty()
            });
            !keys.is_empty()
        });
    }

    /// Writes remembered now.
    pub fn len(&self) -> usize {
        self.entries
            .values()
            .flat_map(HashMap::values)
            .map(VecDeque::len)
            .sum()
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
