//! Unit tests of `cursor`.

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
        max_page: MAX_LIMIT,
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

#[test]
fn a_backlog_never_asks_for_more_than_the_configured_page() {
    let log: Vec<Event> = (0..2_500).map(|i| event("a", i + 1, i as i64)).collect();
    let mut cursor = Cursor::new(CursorConfig {
        max_page: 250,
        ..config(100)
    });
    cursor.bootstrapped(None);
    let mut query = cursor.start();
    let mut sizes = Vec::new();
    let mut all = Vec::new();
    loop {
        sizes.push(query.limit);
        match cursor.page(&query, answer(&log, &query)) {
            PageOutcome::Next { fresh, next } => {
                all.extend(fresh);
                match next {
                    Some(n) => query = n,
                    None => break,
                }
            }
            PageOutcome::Stuck { .. } => panic!("not stuck"),
        }
    }
    assert_eq!(all, log);
    // 100 + 200, then 250 per page.
    assert_eq!(sizes[..3], [100, 200, 250]);
    assert!(sizes.iter().all(|s| *s <= 250), "{sizes:?}");
    // A batch sharing one timestamp may still grow past it to ZITADEL's maximum.
    let batch: Vec<Event> = (0..600).map(|i| event("b", i + 1, 0)).collect();
    let mut cursor = Cursor::new(CursorConfig {
        max_page: 250,
        ..config(100)
    });
    cursor.bootstrapped(None);
    let (fresh, _, stuck) = poll(&mut cursor, &batch);
    assert!(!stuck);
    assert_eq!(fresh.len(), 600);
}
