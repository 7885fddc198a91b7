//! Drift detection from ZITADEL's event log, and the pacing of re-checks (pure parts; the
//! pollers and their wiring into the controllers live in `controller::drift`).
//!
//! - [`cursor`]: the `ListEvents` paging and de-duplication recipe of the contract.
//! - [`own`]: which events the operator's own writes caused.
//! - [`schedule`]: the drift-detection [`Mode`] and each object's re-check phase.
//! - [`classify`]: what one event means for the objects.

pub mod cursor;
pub mod own;
pub mod schedule;

pub use cursor::{Cursor, CursorConfig, PageOutcome};
pub use own::OwnWrites;
pub use schedule::{Mode, phased_delay, recheck_interval};

use std::time::{Duration, Instant};

use crate::zitadel::Event;

/// Whether drift may be detected from events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Detection {
    /// From the event log where the credentials may read it (`events.read`), else polling.
    #[default]
    Auto,
    /// Never read events: each object re-lists its target every resync interval.
    Polling,
}

/// Drift-detection knobs (`--drift-detection`, `--event-poll-interval`,
/// `--events-resync-interval`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriftSettings {
    /// Events where possible, or never.
    pub detection: Detection,
    /// How often a connection's event log is read in Events mode (a connection's
    /// `spec.driftDetection.eventPollInterval` overrides it).
    pub event_poll_interval: Duration,
    /// Events mode: how often each object still re-lists its target (safety net; never more
    /// often than the resync interval).
    pub events_resync: Duration,
}

impl Default for DriftSettings {
    fn default() -> Self {
        Self {
            detection: Detection::Auto,
            event_poll_interval: Duration::from_secs(15),
            events_resync: Duration::from_secs(3600),
        }
    }
}

impl DriftSettings {
    /// Polling only (every object re-lists its target each resync interval).
    pub fn polling() -> Self {
        Self {
            detection: Detection::Polling,
            ..Self::default()
        }
    }
}

/// What an event changed, as far as objects are concerned.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Affected {
    /// Metadata of this organization (objects targeting it re-sync).
    Org(String),
    /// Metadata of this user, or the user was removed.
    User(String),
    /// The organization was removed: its objects and those of its users re-sync (ZITADEL
    /// writes no `user.removed` for the users of a removed organization).
    OrgGone(String),
}

/// An event's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Caused by the operator (its user, or a write it recorded): nothing to do.
    Own,
    /// Objects on this target re-sync.
    Affects(Affected),
    /// Not a drift event (another type slipped through, or malformed).
    Ignored,
}

/// Classify one event (new, i.e. already de-duplicated): the operator's own (`caller` is its
/// user id where known), or what it affects.
pub fn classify(event: &Event, caller: Option<&str>, own: &mut OwnWrites, now: Instant) -> Verdict {
    let id = event.aggregate_id.clone();
    if id.is_empty() {
        return Verdict::Ignored;
    }
    let affected = match (event.aggregate_type.as_str(), event.event_type.as_str()) {
        ("org", "org.removed") => Affected::OrgGone(id),
        ("org", t) if t.starts_with("org.metadata.") => Affected::Org(id),
        ("user", "user.removed") => Affected::User(id),
        ("user", t) if t.starts_with("user.metadata.") => Affected::User(id),
        _ => return Verdict::Ignored,
    };
    // The operator removes neither organizations nor users, nor all metadata at once.
    let removal = matches!(affected, Affected::OrgGone(_))
        || event.event_type.ends_with(".all")
        || event.event_type == "user.removed";
    if !removal {
        let by_caller = caller.is_some_and(|c| !c.is_empty() && c == event.editor);
        // Consume a recorded write either way, so it cannot explain a later foreign event.
        let recorded = own.explains(event, now);
        if by_caller || recorded {
            return Verdict::Own;
        }
    }
    Verdict::Affects(affected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zitadel::{Target, value_hash};
    use std::time::Duration;

    fn event(kind: &str, id: &str, event_type: &str, editor: &str) -> Event {
        Event {
            aggregate_type: kind.into(),
            aggregate_id: id.into(),
            resource_owner: "1".into(),
            sequence: 1,
            created: chrono::Utc::now(),
            event_type: event_type.into(),
            editor: editor.into(),
            key: Some("k".into()),
            value_hash: Some(value_hash(b"v")),
        }
    }

    #[test]
    fn events_map_to_what_they_affect() {
        let now = Instant::now();
        let mut own = OwnWrites::new(Duration::from_secs(60));
        let v = |e: &Event, own: &mut OwnWrites| classify(e, None, own, now);
        for t in [
            "org.metadata.set",
            "org.metadata.removed",
            "org.metadata.removed.all",
        ] {
            assert_eq!(
                v(&event("org", "1", t, "x"), &mut own),
                Verdict::Affects(Affected::Org("1".into()))
            );
        }
        for t in [
            "user.metadata.set",
            "user.metadata.removed",
            "user.metadata.removed.all",
            "user.removed",
        ] {
            assert_eq!(
                v(&event("user", "2", t, "x"), &mut own),
                Verdict::Affects(Affected::User("2".into()))
            );
        }
        assert_eq!(
            v(&event("org", "1", "org.removed", "x"), &mut own),
            Verdict::Affects(Affected::OrgGone("1".into()))
        );
        assert_eq!(
            v(&event("org", "1", "org.added", "x"), &mut own),
            Verdict::Ignored
        );
        assert_eq!(
            v(&event("org", "", "org.metadata.set", "x"), &mut own),
            Verdict::Ignored
        );
    }

    #[test]
    fn own_writes_by_user_id_or_by_payload_trigger_nothing() {
        let now = Instant::now();
        let mut own = OwnWrites::new(Duration::from_secs(60));
        let set = event("org", "1", "org.metadata.set", "operator");
        assert_eq!(
            classify(&set, Some("operator"), &mut own, now),
            Verdict::Own
        );
        assert_eq!(
            classify(&set, Some("other"), &mut own, now),
            Verdict::Affects(Affected::Org("1".into()))
        );
        own.set(&Target::Org { org_id: "1".into() }, "k", b"v", now);
        assert_eq!(classify(&set, None, &mut own, now), Verdict::Own);
        // Removals of whole orgs/users are never the operator's, whoever the editor is.
        let gone = event("org", "1", "org.removed", "operator");
        assert_eq!(
            classify(&gone, Some("operator"), &mut own, now),
            Verdict::Affects(Affected::OrgGone("1".into()))
        );
    }
}
