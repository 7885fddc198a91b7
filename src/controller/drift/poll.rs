//! The poller: which event source a connection has, and one poll round after another.

use super::*;

/// The organization a UserMetadata's user belongs to, as far as known.
pub(super) fn user_org(u: &UserMetadata) -> Option<String> {
    u.status
        .as_ref()
        .and_then(|s| s.organization_id.clone())
        .or_else(|| u.spec.organization_id.clone())
}

/// What one round of a poller saw of its connection.
pub(super) enum Source {
    /// Events may be read with this client.
    Events {
        source: DriftSource,
        interval: Duration,
    },
    /// Polling, and why.
    Polling(String),
}

pub(super) async fn source_of(hub: &DriftHub, key: &ConnectionKey) -> Source {
    let (ns, reference) = reference_of(key);
    match hub.connections.drift_source(&ns, reference.as_ref()).await {
        Err(refusal) => Source::Polling(refusal.to_string()),
        Ok(source) => match (&source.status, key) {
            (None, ConnectionKey::Default) => {
                if hub.settings.drift.detection == Detection::Polling {
                    Source::Polling("--drift-detection polling".into())
                } else {
                    Source::Events {
                        source,
                        interval: hub.settings.drift.event_poll_interval,
                    }
                }
            }
            (Some(status), _) if status.mode == Mode::Events.as_str() => {
                let interval = status
                    .event_poll_interval
                    .as_deref()
                    .and_then(|d| humantime::parse_duration(d).ok())
                    .unwrap_or(hub.settings.drift.event_poll_interval);
                Source::Events { source, interval }
            }
            (Some(status), _) => Source::Polling(status.message.clone()),
            (None, _) => Source::Polling("the connection was not probed for events yet".into()),
        },
    }
}

/// One poller per connection: every interval, read the new events and re-sync what they
/// affect. Ends when the hub is gone or stopped, or no local object uses the connection.
pub(super) async fn run_poller(
    hub: Weak<DriftHub>,
    key: ConnectionKey,
    poller: Arc<Poller>,
    mut stop: watch::Receiver<bool>,
) {
    let config = CursorConfig::default();
    let mut cursor = Cursor::new(config);
    // The client the cursor belongs to (a new client: the credentials changed; start over).
    let mut client: Option<Arc<dyn ZitadelApi>> = None;
    // Events refused with this client: not asked again before this (or a new client).
    let mut denied_until: Option<Instant> = None;
    // Consecutive failed rounds (only the first is a warning).
    let mut failures = 0u32;
    let mut idle = 0u32;
    loop {
        let Some(strong) = hub.upgrade() else { return };
        let source = source_of(&strong, &key).await;
        let wait = match source {
            Source::Polling(why) => {
                cursor = Cursor::new(config);
                client = None;
                denied_until = None;
                strong.decided(&key, &poller, State::Polling, &why);
                strong.settings.drift.event_poll_interval
            }
            Source::Events { source, interval } => {
                *lock(&poller.interval) = interval;
                let same = client.as_ref().is_some_and(|c| Arc::ptr_eq(c, &source.api));
                if !same {
                    cursor = Cursor::new(config);
                    client = Some(source.api.clone());
                    denied_until = None;
                }
                if denied_until.is_none_or(|t| Instant::now() >= t) {
                    let outcome =
                        poll_round(&strong, &key, &poller, source.api.as_ref(), &mut cursor).await;
                    match outcome {
                        Ok(()) => failures = 0,
                        Err(e) if e.is_permission() || e.is_route_missing() => {
                            // Credentials may change (a rotated token): ask again after a resync
                            // interval.
                            denied_until = Some(Instant::now() + strong.settings.resync);
                            cursor = Cursor::new(config);
                            let why = format!("the event log cannot be read ({})", e.reason());
                            strong.decided(&key, &poller, State::Polling, &why);
                        }
                        Err(e) => {
                            round_failed(&strong, &key, &poller, &cursor, &mut failures, &e);
                        }
                    }
                }
                interval
            }
        };
        lock(&poller.own).prune(Instant::now());
        if stop_when_idle(&strong, &key, &poller, &mut idle) {
            return;
        }
        drop(strong);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// A failed round that is not a refusal: counted (only the first of a series is a warning); a
/// cursor that has not started yet keeps the connection on polling.
fn round_failed(
    hub: &DriftHub,
    key: &ConnectionKey,
    poller: &Poller,
    cursor: &Cursor,
    failures: &mut u32,
    e: &ZitadelError,
) {
    hub.metrics.drift_poll("error");
    *failures += 1;
    if *failures == 1 {
        tracing::warn!(connection = %key, error = %e, "reading ZITADEL's event log failed; retrying every poll interval");
    } else {
        tracing::debug!(connection = %key, error = %e, failures = *failures, "reading ZITADEL's event log failed again");
    }
    if !cursor.is_ready() {
        hub.decided(
            key,
            poller,
            State::Polling,
            "the event log could not be read yet",
        );
    } else {
        let _ = poller.ready.send_replace(true);
        hub.publish_modes();
    }
}

/// Whether the poller stops: no local object used the connection for two rounds in a row (it
/// is then removed from the hub).
fn stop_when_idle(
    hub: &DriftHub,
    key: &ConnectionKey,
    poller: &Arc<Poller>,
    idle: &mut u32,
) -> bool {
    if hub.in_use_locally(key) {
        *idle = 0;
    } else {
        *idle += 1;
    }
    if *idle < 2 {
        return false;
    }
    let mut pollers = lock(&hub.pollers);
    if pollers.get(key).is_some_and(|p| Arc::ptr_eq(p, poller)) {
        pollers.remove(key);
    }
    drop(pollers);
    hub.publish_modes();
    tracing::debug!(connection = %key, "no object uses the connection: its drift poller stops");
    true
}

/// Every event after the cursor, page by page (smaller pages when one is too large), each page
/// handed to `on_page` as it comes (a backlog of 100,000 events is never held at once); whether
/// the cursor got stuck on one timestamp. A failure after some pages keeps what they delivered:
/// the cursor has moved past them.
async fn read_new(
    key: &ConnectionKey,
    api: &dyn ZitadelApi,
    cursor: &mut Cursor,
    mut on_page: impl FnMut(Vec<Event>),
) -> Result<bool, ZitadelError> {
    let mut query = cursor.start();
    loop {
        let page = match api.list_events(&query).await {
            Ok(page) => page,
            Err(e) if e.is_too_large() => match cursor.too_large(&query) {
                Some(smaller) => {
                    query = smaller;
                    continue;
                }
                None => return Err(e),
            },
            Err(e) => return Err(e),
        };
        match cursor.page(&query, page) {
            PageOutcome::Next { fresh, next } => {
                on_page(fresh);
                match next {
                    Some(n) => query = n,
                    None => return Ok(false),
                }
            }
            PageOutcome::Stuck { fresh, at } => {
                on_page(fresh);
                tracing::warn!(connection = %key, at = %at, "more events share one timestamp than ZITADEL returns at once: re-syncing every object of the connection");
                return Ok(true);
            }
        }
    }
}

/// One round: bootstrap the cursor, or read everything new, classify and dispatch.
pub(super) async fn poll_round(
    hub: &DriftHub,
    key: &ConnectionKey,
    poller: &Poller,
    api: &dyn ZitadelApi,
    cursor: &mut Cursor,
) -> Result<(), ZitadelError> {
    if !cursor.is_ready() {
        let newest = api.list_events(&Cursor::bootstrap_query()).await?;
        cursor.bootstrapped(newest.first());
        hub.metrics.drift_poll("ok");
        hub.decided(
            key,
            poller,
            State::Events(Instant::now()),
            "the credentials may read events",
        );
        return Ok(());
    }
    let caller = api.caller_id();
    let mut affected = BTreeSet::new();
    let mut events = 0;
    let classify_page = |fresh: Vec<Event>| {
        events += fresh.len();
        let now = Instant::now();
        let mut own = lock(&poller.own);
        for e in &fresh {
            match classify(e, caller.as_deref(), &mut own, now) {
                Verdict::Own => hub.metrics.drift_event("own"),
                Verdict::Ignored => hub.metrics.drift_event("ignored"),
                Verdict::Affects(a) => {
                    hub.metrics.drift_event("drift");
                    tracing::debug!(connection = %key, event = %e.event_type, aggregate = %e.aggregate_id, editor = %e.editor, "drift event");
                    affected.insert(a);
                }
            }
        }
    };
    let read = read_new(key, api, cursor, classify_page).await;
    // What the pages read before a failure showed is dispatched all the same.
    let stuck = matches!(read, Ok(true));
    let triggered = if stuck {
        hub.dispatch_all(key)
    } else {
        hub.dispatch(key, &affected)
    };
    if triggered > 0 {
        hub.metrics.drift_triggered(triggered);
        tracing::info!(connection = %key, events, objects = triggered, "changes made in ZITADEL: re-syncing the objects they affect");
    }
    read?;
    cursor.settle(Instant::now());
    hub.metrics.drift_poll("ok");
    *lock(&poller.found) = State::Events(Instant::now());
    let _ = poller.ready.send_replace(true);
    hub.publish_modes();
    Ok(())
}
