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

/// [`Event::id`]: a fingerprint of (aggregate type, aggregate id, sequence).
type EventId = u128;

/// Tuning of a [`Cursor`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CursorConfig {
    /// How far before the newest event seen each poll starts again.
    pub overlap: TimeDelta,
    /// Page size (grows back to it after a halving).
    pub limit: u32,
    /// Largest page asked for while reading a backlog (at most [`MAX_LIMIT`]). Smaller pages
    /// cost more calls on a backlog but smaller answers held at once (and smaller HTTP read
    /// buffers kept by pooled connections). A page stuck on one timestamp may still grow to
    /// [`MAX_LIMIT`].
    pub max_page: u32,
}

impl Default for CursorConfig {
    fn default() -> Self {
        Self {
            overlap: TimeDelta::seconds(5),
            limit: 100,
            max_page: MAX_LIMIT,
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
        let limit = config.limit.clamp(1, config.max_page.clamp(1, MAX_LIMIT));
        Self {
            config,
            ready: false,
            newest: None,
            floor: None,
            seen: HashMap::new(),
            limit,
            stable: None,
            ceiling: config.max_page.clamp(1, MAX_LIMIT),
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
        self.ceiling = self
            .ceiling
            .saturating_mul(2)
            .min(self.config.max_page.clamp(1, MAX_LIMIT));
        self.limit = self
            .limit
            .saturating_mul(2)
            .min(self.config.limit.clamp(1, MAX_LIMIT))
            .min(self.ceiling);
    }
}

#[cfg(test)]
mod tests;
