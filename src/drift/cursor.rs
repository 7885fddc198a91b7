//! The event cursor (pure): which `ListEvents` query comes next, which events of an answer are
//! new, and when to page — the contract's recipe (`shared/zitadel-v2-and-events.md` §2.2):
//!
//! 1. Bootstrap from the server's newest event (`asc: false, limit: 1`), never the local clock;
//!    everything up to it is reflected in the listings the objects make afterwards.
//! 2. Poll `asc: true, since: newest − overlap`: `since` is strict and the events of one push
//!    share one timestamp, so starting exactly at the newest event seen could drop the rest of a
//!    batch cut by the page limit; the overlap also covers events that commit late.
//! 3. Drop events already seen, keyed by (aggregate type, id, sequence). Once the newest event
//!    seen has stayed the newest for longer than the overlap (no late commit can still appear
//!    before it), polls start at it instead: a quiet log costs one small answer per poll, not a
//!    re-read of the last burst's overlap window (10,000 events after 10,000 creates).
//! 4. While a page is full, ask again from `last.creationDate − 1 µs`; when a whole page shares
//!    one timestamp (no progress), double the limit (at most 1000, ZITADEL's maximum).
//! 5. Start each poll with a modest limit and halve it when an answer is refused for its size
//!    (4 MiB through the REST gateway; a value can be 500 kB). While pages come back full (a
//!    backlog: 10,000 objects created at once leave 100,000 events), double it page by page up
//!    to 1000, but never above half of a size that was refused recently — so a backlog is read
//!    in a tenth of the calls and large values cost at most one refused call per poll.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};

use crate::zitadel::{Event, EventQuery};

/// ZITADEL answers at most this many events per request (`limit` 0 or above → 1000).
pub const MAX_LIMIT: u32 = 1000;

/// (aggregate type, aggregate id, sequence): unique per event.
type EventId = (String, String, u64);

/// Tuning of a [`Cursor`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CursorConfig {
    /// How far before the newest event seen each poll starts again.
    pub overlap: TimeDelta,
    /// Page size (grows back to it after a halving).
    pub limit: u32,
}

impl Default for CursorConfig {
    fn default() -> Self {
        Self {
            overlap: TimeDelta::seconds(5),
            limit: 100,
        }
    }
}

/// What a page tells the poll.
#[derive(Debug, PartialEq, Eq)]
pub enum PageOutcome {
    /// The page's events not seen before, and the next query if the page was full.
    Next {
        /// New events, in the server's order.
        fresh: Vec<Event>,
        /// Ask this next (`None`: the poll is complete).
        next: Option<EventQuery>,
    },
    /// More than [`MAX_LIMIT`] events share the timestamp `at`: paging by time cannot get past
    /// them. The cursor skips to after `at`; the caller must re-list every object of the
    /// connection instead (events it did not get may be among them).
    Stuck {
        /// New events of this page.
        fresh: Vec<Event>,
        /// The timestamp no page can get past.
        at: DateTime<Utc>,
    },
}

/// Where a connection's event stream was read up to.
#[derive(Clone, Debug)]
pub struct Cursor {
    config: CursorConfig,
    /// Bootstrapped (the newest event was asked for).
    ready: bool,
    /// `creationDate` of the newest event processed.
    newest: Option<DateTime<Utc>>,
    /// Nothing at or before this time is new (the bootstrap point, or a timestamp skipped
    /// when stuck).
    floor: Option<DateTime<Utc>>,
    /// Events seen within the overlap window.
    seen: HashMap<EventId, DateTime<Utc>>,
    /// Current page size (doubled while pages come back full, halved after a refusal for size;
    /// each poll starts again from the configured one).
    limit: u32,
    /// The newest event seen when [`Self::settle`] last saw it change, and since when (local
    /// clock) it has stayed the newest.
    stable: Option<(DateTime<Utc>, std::time::Instant)>,
    /// Largest page size to ask for: [`MAX_LIMIT`], or half a size refused for its answer's
    /// size (doubled back after each completed poll).
    ceiling: u32,
}

impl Cursor {
    /// A cursor that still needs its bootstrap.
    pub fn new(config: CursorConfig) -> Self {
        let limit = config.limit.clamp(1, MAX_LIMIT);
        Self {
            config,
            ready: false,
            newest: None,
            floor: None,
            seen: HashMap::new(),
            limit,
            stable: None,
            ceiling: MAX_LIMIT,
        }
    }

    /// Whether [`Self::bootstrapped`] happened.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// The current page size.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Number of event ids remembered for de-duplication.
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }

    /// The bootstrap query: the newest drift event (also the permission probe).
    pub fn bootstrap_query() -> EventQuery {
        EventQuery {
            asc: false,
            limit: 1,
            since: None,
        }
    }

    /// The bootstrap answered with `newest` (`None`: the instance has no such event yet).
    /// Everything up to it counts as seen.
    pub fn bootstrapped(&mut self, newest: Option<&Event>) {
        self.ready = true;
        if let Some(e) = newest {
            self.newest = Some(e.created);
            self.floor = Some(e.created);
            self.seen.insert(e.id(), e.created);
        }
    }

    /// The lower bound of the next poll: the newest event seen minus the overlap, but never
    /// before the floor.
    fn lower_bound(&self) -> Option<DateTime<Utc>> {
        let from_newest = self.newest.map(|n| n - self.config.overlap);
        match (from_newest, self.floor) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// The first query of a poll.
    pub fn start(&self) -> EventQuery {
        EventQuery {
            asc: true,
            limit: self.limit,
            since: self.lower_bound(),
        }
    }

    /// Absorb the answer to `query`.
    pub fn page(&mut self, query: &EventQuery, events: Vec<Event>) -> PageOutcome {
        let full = events.len() >= query.limit as usize;
        let last = events.last().map(|e| e.created);
        let mut fresh = Vec::new();
        for e in events {
            if self.floor.is_some_and(|f| e.created <= f) {
                continue;
            }
            if self.seen.insert(e.id(), e.created).is_none() {
                fresh.push(e);
            }
        }
        if let Some(max) = fresh.iter().map(|e| e.created).max() {
            self.newest = Some(self.newest.map_or(max, |n| n.max(max)));
        }
        let Some(last) = last.filter(|_| full) else {
            self.finish();
            return PageOutcome::Next { fresh, next: None };
        };
        let since = last - TimeDelta::microseconds(1);
        if query.since.is_some_and(|s| s >= since) {
            // The whole page shares one timestamp: a bigger page is the only way forward.
            if query.limit >= MAX_LIMIT {
                self.floor = Some(self.floor.map_or(last, |f| f.max(last)));
                self.newest = Some(self.newest.map_or(last, |n| n.max(last)));
                self.finish();
                return PageOutcome::Stuck { fresh, at: last };
            }
            let next = EventQuery {
                limit: query.limit.saturating_mul(2).min(MAX_LIMIT),
                ..query.clone()
            };
            return PageOutcome::Next {
                fresh,
                next: Some(next),
            };
        }
        // A backlog: read it in bigger pages.
        self.limit = query.limit.saturating_mul(2).min(self.ceiling).max(1);
        PageOutcome::Next {
            fresh,
            next: Some(EventQuery {
                asc: true,
                limit: self.limit,
                since: Some(since),
            }),
        }
    }

    /// After a completed poll at `now` (local clock): when the newest event seen has not changed
    /// for longer than the overlap, nothing can still commit before it, so later polls start at
    /// it (the overlap window is not re-read every poll).
    pub fn settle(&mut self, now: std::time::Instant) {
        let Some(newest) = self.newest else { return };
        match self.stable {
            Some((seen, since)) if seen == newest => {
                let quiet = now.saturating_duration_since(since);
                if self.config.overlap.to_std().is_ok_and(|o| quiet > o)
                    && self.floor.is_none_or(|f| f < newest)
                {
                    self.floor = Some(newest);
                    if let Some(bound) = self.lower_bound() {
                        self.seen.retain(|_, created| *created >= bound);
                    }
                }
            }
            _ => self.stable = Some((newest, now)),
        }
    }

    /// `query` was refused for its answer's size: the same query with half the page, or
    /// `None` when a single event is refused (nothing smaller to ask for).
    pub fn too_large(&mut self, query: &EventQuery) -> Option<EventQuery> {
        let half = query.limit / 2;
        if half == 0 {
            return None;
        }
        self.limit = self.limit.min(half);
        self.ceiling = self.ceiling.min(half);
        Some(EventQuery {
            limit: half,
            ..query.clone()
        })
    }

    /// A poll completed: forget ids that fell out of the overlap window, start the next poll
    /// with the configured page size (or less, after a refusal), let a lowered ceiling grow back.
    fn finish(&mut self) {
        if let Some(bound) = self.lower_bound() {
            self.seen.retain(|_, created| *created > bound);
            if self.seen.capacity() > 4 * self.seen.len().max(1024) {
                self.seen.shrink_to_fit();
            }
        }
        self.ceiling = self.ceiling.saturating_mul(2).min(MAX_LIMIT);
        self.limit = self
            .limit
            .saturating_mul(2)
            .min(self.config.limit.clamp(1, MAX_LIMIT))
            .min(self.ceiling);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(micros: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(1_800_000_000_000_000 + micros).expect("time")
    }

    fn event(agg: &str, seq: u64, micros: i64) -> Event {
        Event {
            aggregate_type: "org".into(),
            aggregate_id: agg.into(),
            resource_owner: agg.into(),
            sequence: seq,
            created: at(micros),
            event_type: "org.metadata.set".into(),
            editor: "someone".into(),
            key: Some("k".into()),
            value_hash: None,
        }
    }

    /// A server holding `log` (in global order) answering like ZITADEL: strict `since`,
    /// ascending, `limit` items.
    fn answer(log: &[Event], q: &EventQuery) -> Vec<Event> {
        log.iter()
            .filter(|e| q.since.is_none_or(|s| e.created > s))
            .take(q.limit as usize)
            .cloned()
            .collect()
    }

    /// One complete poll against `log`: the fresh events and the number of requests.
    fn poll(cursor: &mut Cursor, log: &[Event]) -> (Vec<Event>, usize, bool) {
        let mut query = cursor.start();
        let mut all = Vec::new();
        let mut calls = 0;
        loop {
            calls += 1;
            match cursor.page(&query, answer(log, &query)) {
                PageOutcome::Next { fresh, next } => {
                    all.extend(fresh);
                    match next {
                        Some(n) => query = n,
                        None => return (all, calls, false),
                    }
                }
                PageOutcome::Stuck { fresh, .. } => {
                    all.extend(fresh);
                    return (all, calls, true);
                }
            }
        }
    }

    fn config(limit: u32) -> CursorConfig {
        CursorConfig {
            overlap: TimeDelta::seconds(5),
            limit,
        }
    }

    #[test]
    fn bootstrap_takes_the_servers_newest_event_and_skips_everything_before() {
        let mut cursor = Cursor::new(config(10));
        assert!(!cursor.is_ready());
        let q = Cursor::bootstrap_query();
        assert_eq!((q.asc, q.limit, q.since), (false, 1, None));
        let log = vec![event("a", 1, 0), event("a", 2, 1_000), event("b", 1, 2_000)];
        cursor.bootstrapped(log.last());
        assert!(cursor.is_ready());
        // The next poll starts at the newest event (not 5 s earlier: everything up to it is
        // reflected in the listings that follow the bootstrap), and nothing old is new.
        assert_eq!(cursor.start().since, Some(at(2_000)));
        let (fresh, calls, _) = poll(&mut cursor, &log);
        assert!(fresh.is_empty());
        assert_eq!(calls, 1);
    }

    #[test]
    fn an_empty_instance_polls_from_the_beginning() {
        let mut cursor = Cursor::new(config(10));
        cursor.bootstrapped(None);
        assert_eq!(cursor.start().since, None);
        let log = vec![event("a", 1, 10)];
        let (fresh, _, _) = poll(&mut cursor, &log);
        assert_eq!(fresh, log);
        assert_eq!(cursor.start().since, Some(at(10) - TimeDelta::seconds(5)));
    }

    #[test]
    fn polls_overlap_and_never_deliver_an_event_twice() {
        let mut cursor = Cursor::new(config(10));
        cursor.bootstrapped(None);
        let mut log = vec![event("a", 1, 0), event("b", 1, 100)];
        let (fresh, _, _) = poll(&mut cursor, &log);
        assert_eq!(fresh.len(), 2);
        // Within the overlap: re-read, de-duplicated; only the new one is fresh.
        log.push(event("a", 2, 200));
        let (fresh, _, _) = poll(&mut cursor, &log);
        assert_eq!(fresh, vec![event("a", 2, 200)]);
        let (fresh, calls, _) = poll(&mut cursor, &log);
        assert!(fresh.is_empty());
        assert_eq!(calls, 1);
        // An event committed late with an earlier timestamp, still inside the overlap.
        log.insert(1, event("c", 1, 50));
        let (fresh, _, _) = poll(&mut cursor, &log);
        assert_eq!(fresh, vec![event("c", 1, 50)]);
    }

    #[test]
    fn a_same_timestamp_batch_cut_by_the_page_limit_loses_nothing() {
        // 7 events of one push (same timestamp) between others, pages of 3.
        let mut log = vec![event("x", 1, 0)];
        log.extend((1..=7).map(|s| event("batch", s, 500)));
        log.push(event("y", 1, 900));
        let mut cursor = Cursor::new(config(3));
        cursor.bootstrapped(None);
        let (fresh, calls, stuck) = poll(&mut cursor, &log);
        assert!(!stuck);
        assert_eq!(fresh, log, "every event exactly once, in order");
        assert!(calls >= 3, "paged: {calls} calls");
        // The page grew for the batch and shrinks back afterwards.
        assert_eq!(cursor.limit(), 3);
        let (fresh, _, _) = poll(&mut cursor, &log);
        assert!(fresh.is_empty());
    }

    #[test]
    fn bigger_batches_than_zitadel_pages_skip_ahead_and_say_so() {
        let mut log: Vec<Event> = (1..=1_001).map(|s| event("huge", s, 500)).collect();
        log.push(event("after", 1, 600));
        let mut cursor = Cursor::new(config(100));
        cursor.bootstrapped(None);
        let (fresh, _, stuck) = poll(&mut cursor, &log);
        assert!(stuck);
        assert_eq!(fresh.len(), 1_000);
        // The next poll starts after the stuck timestamp and still sees what followed.
        assert_eq!(cursor.start().since, Some(at(500)));
        let (fresh, _, stuck) = poll(&mut cursor, &log);
        assert!(!stuck);
        assert_eq!(fresh, vec![event("after", 1, 600)]);
    }

    #[test]
    fn refused_pages_are_halved_and_grow_back() {
        let mut cursor = Cursor::new(config(100));
        cursor.bootstrapped(None);
        let q = cursor.start();
        let smaller = cursor.too_large(&q).expect("halved");
        assert_eq!(smaller.limit, 50);
        assert_eq!(smaller.since, q.since);
        assert_eq!(cursor.limit(), 50);
        let one = EventQuery { limit: 1, ..q };
        assert_eq!(cursor.too_large(&one), None);
        // A complete poll lets the page grow back (doubling) to the configured size.
        let (_, _, _) = poll(&mut cursor, &[]);
        assert_eq!(cursor.limit(), 100);
    }

    #[test]
    fn a_backlog_is_read_in_growing_pages_bounded_by_a_refused_size() {
        let log: Vec<Event> = (0..2_500).map(|i| event("a", i + 1, i as i64)).collect();
        let mut cursor = Cursor::new(config(100));
        cursor.bootstrapped(None);
        let (fresh, calls, stuck) = poll(&mut cursor, &log);
        assert!(!stuck);
        assert_eq!(fresh, log);
        // 100 + 200 + 400 + 800 + 1000 (full) + the rest.
        assert_eq!(calls, 6, "{calls} calls for 2,500 events");
        assert_eq!(cursor.limit(), 100, "the next poll starts modest again");
        // A refused size caps the growth for the rest of the poll.
        let mut cursor = Cursor::new(config(100));
        cursor.bootstrapped(None);
        let q = cursor.start();
        let smaller = cursor.too_large(&q).expect("halved");
        let mut query = smaller;
        let mut sizes = Vec::new();
        loop {
            sizes.push(query.limit);
            match cursor.page(&query, answer(&log, &query)) {
                PageOutcome::Next { next: Some(n), .. } => query = n,
                _ => break,
            }
        }
        assert!(sizes.iter().all(|s| *s <= 50), "{sizes:?}");
    }

    #[test]
    fn a_quiet_log_is_not_re_read_once_the_overlap_has_passed() {
        // A burst of 2,500 events within one second, then nothing.
        let log: Vec<Event> = (0..2_500)
            .map(|i| event("a", i + 1, i as i64 * 400))
            .collect();
        let mut cursor = Cursor::new(config(100));
        cursor.bootstrapped(None);
        let t0 = std::time::Instant::now();
        poll(&mut cursor, &log);
        cursor.settle(t0);
        // Within the overlap the window is re-read (and de-duplicated).
        let (fresh, calls, _) = poll(&mut cursor, &log);
        assert!(fresh.is_empty());
        assert!(calls > 1, "{calls}");
        cursor.settle(t0 + std::time::Duration::from_secs(2));
        // Quiet for longer than the overlap: one call per poll, starting at the newest event.
        cursor.settle(t0 + std::time::Duration::from_secs(6));
        assert_eq!(cursor.start().since, Some(log[2_499].created));
        let (fresh, calls, _) = poll(&mut cursor, &log);
        assert!(fresh.is_empty());
        assert_eq!(calls, 1);
        // A new event is still read, and the overlap applies to it again.
        let mut more = log.clone();
        more.push(event("b", 1, 2_000_000));
        let (fresh, _, _) = poll(&mut cursor, &more);
        assert_eq!(fresh, vec![event("b", 1, 2_000_000)]);
        cursor.settle(t0 + std::time::Duration::from_secs(7));
        // The overlap before the new event applies again, but never before the settled point.
        assert_eq!(cursor.start().since, Some(log[2_499].created));
        let mut later = more.clone();
        later.push(event("c", 1, 9_000_000));
        poll(&mut cursor, &later);
        assert_eq!(
            cursor.start().since,
            Some(at(9_000_000) - TimeDelta::seconds(5)),
            "late commits before the newest event are covered again"
        );
    }

    #[test]
    fn seen_ids_are_forgotten_once_outside_the_overlap() {
        let mut cursor = Cursor::new(config(10));
        cursor.bootstrapped(None);
        let log = vec![event("a", 1, 0)];
        poll(&mut cursor, &log);
        assert_eq!(cursor.remembered(), 1);
        let later = vec![event("a", 1, 0), event("b", 1, 10_000_000)];
        let (fresh, _, _) = poll(&mut cursor, &later);
        assert_eq!(fresh, vec![event("b", 1, 10_000_000)]);
        assert_eq!(cursor.remembered(), 1, "the old id fell out of the window");
    }
}
