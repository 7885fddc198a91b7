use std::collections::HashMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::*;
use crate::crd::OrgMetadata;
use crate::reason::Reason;

/// A wall-clock time at the start of a 60 s cycle (and of a 300 s one).
const BASE_MS: u64 = 1_700_000_100_000;

fn at(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// The uid's hash and its slot in the second cycle of `cycle_ms` after [`BASE_MS`].
fn slot_of(uid: &str, cycle_ms: u64) -> (u64, u64) {
    let hash = id_hash(uid);
    let slot = u64::try_from(phase(hash, u128::from(cycle_ms))).expect("ms");
    (hash, BASE_MS + slot + cycle_ms)
}

#[test]
fn a_window_holds_the_slots_after_its_start_up_to_its_end_across_the_wrap() {
    let minute = Duration::from_secs(60);
    assert_eq!(BASE_MS % 60_000, 0);
    // From 59.5 s into one cycle to 0.5 s into the next. A hash below 60,000 is its own phase.
    let w = Window::new(at(BASE_MS + 59_500), at(BASE_MS + 60_500));
    for due in [59_501, 59_700, 59_999, 0, 200, 500] {
        assert!(w.holds(due, minute), "{due}");
    }
    for not in [59_500, 59_499, 30_000, 501, 1_000] {
        assert!(!w.holds(not, minute), "{not}");
    }
    // The same phases from a hash beyond the cycle.
    assert!(w.holds(60_000 * 7 + 200, minute));
    assert!(!w.holds(60_000 * 7 + 30_000, minute));
    // Inside one cycle.
    let w = Window::new(at(BASE_MS + 10_000), at(BASE_MS + 11_000));
    assert!(w.holds(10_001, minute) && w.holds(11_000, minute));
    assert!(!w.holds(10_000, minute) && !w.holds(11_001, minute));
}

#[test]
fn a_long_window_holds_every_slot_and_a_backward_one_none() {
    let minute = Duration::from_secs(60);
    let long = Window::new(at(BASE_MS), at(BASE_MS + 60_000));
    let back = Window::new(at(BASE_MS + 5_000), at(BASE_MS));
    let empty = Window::new(at(BASE_MS), at(BASE_MS));
    for hash in [0, 1, 29_999, 59_999, u64::MAX] {
        assert!(long.holds(hash, minute));
        assert!(!back.holds(hash, minute) && !empty.holds(hash, minute));
    }
    // No interval: due at every walk.
    let w = Window::new(at(BASE_MS), at(BASE_MS + 1));
    assert!(w.holds(12_345, Duration::ZERO));
}

#[test]
fn consecutive_windows_hold_each_slot_exactly_once_per_cycle() {
    let interval = Duration::from_secs(300);
    let hashes: Vec<u64> = (0..2_000).map(|i| id_hash(&format!("uid-{i}"))).collect();
    let mut held = vec![0u32; hashes.len()];
    // Irregular walks (0.6–1.5 s apart, as a loaded machine ticks) over exactly three cycles.
    let (start, end) = (BASE_MS + 1_234, BASE_MS + 1_234 + 3 * 300_000);
    let mut from = start;
    let mut step = 0u64;
    while from < end {
        step += 1;
        let to = (from + 600 + (step * 7_919) % 900).min(end);
        let w = Window::new(at(from), at(to));
        for (i, h) in hashes.iter().enumerate() {
            held[i] += u32::from(w.holds(*h, interval));
        }
        from = to;
    }
    assert!(held.iter().all(|n| *n == 3), "{held:?}");
}

#[test]
fn a_slot_closer_than_half_an_interval_after_a_sync_is_skipped_once() {
    let interval = Duration::from_secs(300);
    let ledger = ResyncLedger::default();
    let uid = "0b0e-uid";
    let (hash, slot_at) = slot_of(uid, 300_000);
    let window_at = |t: u64| Window::new(at(t - 1_000), at(t));
    // Synced a quarter interval before the slot: the slot is skipped, the next one is due.
    ledger.synced(uid, interval, at(slot_at - 75_000));
    assert_eq!(ledger.len(), 1);
    assert!(!ledger.due(&window_at(slot_at), hash, interval));
    assert!(ledger.is_empty());
    assert!(ledger.due(&window_at(slot_at + 300_000), hash, interval));
    // Synced three quarters of an interval before the slot: nothing to skip.
    ledger.synced(uid, interval, at(slot_at - 225_000));
    assert!(ledger.is_empty());
    assert!(ledger.due(&window_at(slot_at), hash, interval));
    // Synced again closer to the slot: skipped after all; synced just after it: not recorded.
    ledger.synced(uid, interval, at(slot_at - 225_000));
    ledger.synced(uid, interval, at(slot_at - 1_000));
    assert!(!ledger.due(&window_at(slot_at), hash, interval));
    ledger.synced(uid, interval, at(slot_at + 400));
    assert!(ledger.is_empty());
    // Not due outside its window, whatever the ledger says.
    assert!(!ledger.due(&window_at(slot_at + 150_000), hash, interval));
}

/// A slot that came after the walkers' last walk but before the sync completed is the one the
/// sync stood for: the next walk must not re-list the object right after it synced (a mass
/// create with a short resync re-listed ~5 % of the objects within a tick of their first sync).
#[test]
fn a_slot_between_the_last_walk_and_the_sync_is_skipped_not_re_listed_at_once() {
    let interval = Duration::from_secs(60);
    let ledger = ResyncLedger::default();
    let uid = "5e1f-uid";
    let (hash, slot_at) = slot_of(uid, 60_000);
    // The walkers walked up to 400 ms before the slot; the sync completed 300 ms after it.
    ledger.walked(at(slot_at - 400));
    ledger.synced(uid, interval, at(slot_at + 300));
    assert_eq!(ledger.len(), 1);
    let next_walk = Window::new(at(slot_at - 400), at(slot_at + 600));
    assert!(next_walk.holds(hash, interval));
    assert!(
        !ledger.due(&next_walk, hash, interval),
        "re-listed right after its sync"
    );
    assert!(ledger.is_empty());
    // The next slot, an interval later, is due.
    let later = Window::new(at(slot_at + 59_600), at(slot_at + 60_600));
    assert!(ledger.due(&later, hash, interval));
    // Walker-triggered: the walk passed the slot before the sync, so nothing is recorded (the
    // next slot is an interval away) and the next cycle is due.
    ledger.walked(at(slot_at + 60_600));
    ledger.synced(uid, interval, at(slot_at + 60_700));
    assert!(ledger.is_empty());
    let after = Window::new(at(slot_at + 119_600), at(slot_at + 120_600));
    assert!(ledger.due(&after, hash, interval));
}

/// A stale skip (its slot passed unwalked, e.g. the object was being reconciled) does not
/// swallow a later slot.
#[test]
fn a_stale_skip_does_not_swallow_a_later_slot() {
    let interval = Duration::from_secs(60);
    let ledger = ResyncLedger::default();
    let uid = "77aa-uid";
    let (hash, slot_at) = slot_of(uid, 60_000);
    ledger.synced(uid, interval, at(slot_at - 10_000));
    assert_eq!(ledger.len(), 1);
    let a_cycle_later = Window::new(at(slot_at + 59_500), at(slot_at + 60_500));
    assert!(ledger.due(&a_cycle_later, hash, interval));
    assert!(ledger.is_empty());
}

#[test]
fn a_failed_object_is_held_back_until_its_hold_ends_or_it_syncs() {
    let interval = Duration::from_secs(300);
    let ledger = ResyncLedger::default();
    let uid = "failing";
    let hash = id_hash(uid);
    let slot = u64::try_from(phase(hash, 300_000)).expect("ms");
    let slot_at = |cycle: u64| BASE_MS + cycle * 300_000 + slot;
    let window_at = |t: u64| Window::new(at(t - 1_000), at(t));
    // Held until 490 s after slot 1: slots 1 and 2 (300 s later) fall in it, slot 3 does not.
    let hold = Duration::from_secs(500);
    ledger.failed(uid, at(slot_at(1) - 10_000), hold);
    assert_eq!(ledger.held(), 1);
    // Held at the next two slots (its own retry comes within the hold), due after it ended.
    assert!(!ledger.due(&window_at(slot_at(1)), hash, interval));
    assert!(!ledger.due(&window_at(slot_at(2)), hash, interval));
    assert!(ledger.due(&window_at(slot_at(3)), hash, interval));
    ledger.prune(at(slot_at(3)));
    assert_eq!(ledger.held(), 0);
    // A retry that syncs ends the hold at once.
    ledger.failed(uid, at(slot_at(4) - 10_000), hold);
    ledger.synced(uid, interval, at(slot_at(4) - 200_000));
    assert_eq!(ledger.held(), 0);
    assert!(ledger.due(&window_at(slot_at(4)), hash, interval));
    // A failure replaces a pending skip; forgetting drops both.
    ledger.synced(uid, interval, at(slot_at(5) - 1_000));
    assert_eq!(ledger.len(), 1);
    ledger.failed(uid, at(slot_at(5) - 500), hold);
    assert_eq!((ledger.len(), ledger.held()), (0, 1));
    ledger.forget(uid);
    assert_eq!((ledger.len(), ledger.held()), (0, 0));
}

#[test]
fn unconsumed_skips_are_pruned_a_minute_after_their_slot() {
    let interval = Duration::from_secs(300);
    let ledger = ResyncLedger::default();
    let uid = "gone";
    let slot = u64::try_from(phase(id_hash(uid), 300_000)).expect("ms");
    let slot_at = BASE_MS + 300_000 + slot;
    ledger.synced(uid, interval, at(slot_at - 10_000));
    ledger.prune(at(slot_at + 59_000));
    assert_eq!(ledger.len(), 1);
    ledger.prune(at(slot_at + 62_000));
    assert!(ledger.is_empty());
    ledger.synced(uid, Duration::ZERO, at(slot_at));
    assert!(ledger.is_empty());
}

/// 10,000 objects synced within the same 10 s (a mass create or a restart's first pass), then
/// walked every second for three intervals, each re-check syncing 300 ms after its trigger:
/// every object is first re-checked between half and one and a half intervals after its sync,
/// then exactly once per interval; the re-checks are evenly spread; the ledger drains to empty.
#[test]
fn a_simulated_cycle_rechecks_every_object_once_per_interval_evenly_spread() {
    let interval = Duration::from_secs(300);
    let ledger = ResyncLedger::default();
    let n = 10_000usize;
    let uids: Vec<String> = (0..n).map(|i| format!("0b0e{i:08x}-uid")).collect();
    let hashes: Vec<u64> = uids.iter().map(|u| id_hash(u)).collect();
    let t0 = BASE_MS + 123_456;
    for (i, uid) in uids.iter().enumerate() {
        ledger.synced(uid, interval, at(t0 + (i as u64 % 10_000)));
    }
    // About half the objects have their slot within half an interval: skipped once.
    let recorded = ledger.len();
    assert!((4_500..=5_500).contains(&recorded), "{recorded}");
    let mut checks: Vec<Vec<u64>> = vec![Vec::new(); n];
    let mut per_second: HashMap<u64, u32> = HashMap::new();
    let mut peak = recorded;
    let mut previous = t0 + 10_000;
    for second in 1..=900u64 {
        let now = t0 + 10_000 + second * 1_000;
        let w = Window::new(at(previous), at(now));
        for (i, h) in hashes.iter().enumerate() {
            if ledger.due(&w, *h, interval) {
                checks[i].push(now);
                *per_second.entry(second).or_default() += 1;
                ledger.synced(&uids[i], interval, at(now + 300));
            }
        }
        ledger.prune(at(now));
        peak = peak.max(ledger.len());
        previous = now;
    }
    assert!(ledger.is_empty(), "{}", ledger.len());
    assert_eq!(peak, recorded, "re-checks at their slot record nothing");
    for (i, times) in checks.iter().enumerate() {
        let first = times[0] - t0;
        assert!((149_000..=461_000).contains(&first), "object {i}: {first}");
        for pair in times.windows(2) {
            assert_eq!(pair[1] - pair[0], 300_000, "object {i}: {times:?}");
        }
        assert!((2..=3).contains(&times.len()), "object {i}: {times:?}");
    }
    // Steady state (the third interval): every object once, about N / interval per second.
    let steady: Vec<u32> = (601..=900)
        .map(|s| per_second.get(&s).copied().unwrap_or(0))
        .collect();
    assert_eq!(steady.iter().sum::<u32>(), n as u32);
    let tenths: Vec<u32> = steady.chunks(30).map(|c| c.iter().sum()).collect();
    assert!(
        tenths.iter().all(|t| (850..=1_150).contains(t)),
        "{tenths:?}"
    );
    assert!(steady.iter().all(|c| *c <= 80), "{steady:?}");
}

fn org(spec: serde_json::Value, ready: Option<Reason>, deleting: bool) -> OrgMetadata {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let conditions: Vec<_> = ready
        .map(|r| {
            let state = if r == Reason::Synced { "True" } else { "False" };
            status::condition(&[], status::READY, state, r, "m", Some(1), &now)
        })
        .into_iter()
        .collect();
    let mut metadata = json!({"name": "a", "namespace": "t", "uid": "u-1"});
    if deleting {
        metadata["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        metadata["finalizers"] = json!(["x"]);
    }
    let mut full = json!({"organizationId": "1", "metadata": []});
    if let (Some(f), Some(extra)) = (full.as_object_mut(), spec.as_object()) {
        f.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "metadata.zitadel-operator.dev/v1alpha1", "kind": "OrgMetadata",
        "metadata": metadata,
        "spec": full,
        "status": {"conditions": conditions},
    }))
    .expect("OrgMetadata")
}

#[test]
fn only_live_objects_that_detect_drift_are_walked_whatever_their_status_says() {
    let plain = json!({});
    // The status may be stale or someone else's: the ledger knows which reconciles failed.
    for r in [
        Reason::Synced,
        Reason::Drifted,
        Reason::KeyConflict,
        Reason::TargetNotFound,
    ] {
        assert!(walked(&org(plain.clone(), Some(r), false)), "{r}");
        let report = json!({"driftPolicy": "Report"});
        assert!(walked(&org(report, Some(r), false)), "{r}");
    }
    // Never reconciled (or its first status not cached yet): reconciled on creation.
    assert!(!walked(&org(plain.clone(), None, false)));
    // A cached copy's packed status reads the same.
    let mut packed = org(plain.clone(), Some(Reason::Synced), false);
    if let Some(st) = packed.status.as_mut() {
        st.pack();
        assert!(st.is_packed() && st.conditions.is_empty());
    }
    assert!(walked(&packed));
    // Deleting, suspended, driftPolicy Ignore.
    assert!(!walked(&org(plain, Some(Reason::Synced), true)));
    let suspended = json!({"suspend": true});
    assert!(!walked(&org(suspended, Some(Reason::Synced), false)));
    let ignore = json!({"driftPolicy": "Ignore"});
    assert!(!walked(&org(ignore, Some(Reason::Synced), false)));
}

#[test]
fn the_phase_comes_from_the_uid_or_else_the_name() {
    let obj = org(json!({}), None, false);
    assert_eq!(object_id(&obj), "u-1");
    let mut nameless = obj.clone();
    nameless.metadata.uid = None;
    assert_eq!(object_id(&nameless), "t/a");
}

#[test]
fn walks_tick_at_a_quarter_of_the_resync_within_bounds() {
    assert_eq!(tick(Duration::from_secs(300)), Duration::from_secs(1));
    assert_eq!(tick(Duration::from_secs(2)), Duration::from_millis(500));
    assert_eq!(tick(Duration::from_millis(100)), Duration::from_millis(100));
}

/// A successful sync records the slot to skip when its next slot is near; a failed one or
/// driftPolicy `Ignore` records nothing.
#[tokio::test]
async fn a_successful_sync_records_the_near_slot_to_skip() {
    use crate::controller::metadata::apply;
    use crate::testing::FakeIo;
    let day = Duration::from_secs(86_400);
    let now = since_epoch().as_millis();
    // An object whose slot comes a quarter day from now (far from either bound of the rule).
    let near = (0..10_000)
        .map(|i| format!("acme-{i}"))
        .find(|name| {
            let ahead = (phase(id_hash(name), day.as_millis()) + day.as_millis()
                - now % 86_400_000)
                % 86_400_000;
            (18_000_000..25_200_000).contains(&ahead)
        })
        .expect("some name's slot comes in 5-7 h");
    let build = |spec: serde_json::Value| -> OrgMetadata {
        serde_json::from_value(json!({
            "apiVersion": "metadata.zitadel-operator.dev/v1alpha1", "kind": "OrgMetadata",
            "metadata": {"name": near, "namespace": "t", "uid": near, "generation": 1},
            "spec": spec,
        }))
        .expect("OrgMetadata")
    };
    let spec = json!({"organizationId": "1", "metadata": [{"key": "a", "value": "1"}]});
    let mut io = FakeIo::<OrgMetadata>::default();
    io.settings.resync = day;
    let (result, _) = apply(&build(spec.clone()), &io.io()).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(io.resyncs.len(), 1);
    let hash = id_hash(&near);
    let slot_window = |t: u128| {
        let t = Duration::from_millis(u64::try_from(t).expect("ms"));
        Window::new(t - Duration::from_secs(1), t)
    };
    let slot_at = now
        + 18_000_000
        + (phase(hash, 86_400_000) + 86_400_000 - (now + 18_000_000) % 86_400_000) % 86_400_000;
    assert!(!io.resyncs.due(&slot_window(slot_at), hash, day));
    assert!(
        io.resyncs
            .due(&slot_window(slot_at + 86_400_000), hash, day)
    );

    let mut ignored = spec.clone();
    ignored["driftPolicy"] = json!("Ignore");
    let io = FakeIo::<OrgMetadata> {
        settings: io.settings.clone(),
        ..FakeIo::default()
    };
    let (result, _) = apply(&build(ignored), &io.io()).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(io.resyncs.is_empty() && io.resyncs.held() == 0);

    // Stalled on a missing value source: its own requeue, no skip recorded.
    let io = FakeIo::<OrgMetadata> {
        settings: io.settings.clone(),
        ..FakeIo::default()
    };
    let missing = json!({"organizationId": "1", "metadata": [
        {"key": "k", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "x"}}}]});
    let (result, outcome) = apply(&build(missing), &io.io()).await;
    assert_eq!(
        outcome.map(|o| o.reason()),
        Some(Reason::ValueSourceNotFound)
    );
    assert!(result.is_ok(), "{result:?}");
    assert!(io.resyncs.is_empty());
    // … and held back from the walk: its own re-check (stalled_requeue) comes first.
    assert_eq!(io.resyncs.held(), 1);
    // Fixed: synced again, walked again.
    let (result, _) = apply(&build(spec), &io.io()).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(io.resyncs.held(), 0);
}

#[test]
fn an_object_being_reconciled_is_not_triggered_by_a_walk() {
    let interval = Duration::from_secs(300);
    let ledger = ResyncLedger::default();
    let uid = "busy";
    let hash = id_hash(uid);
    let slot = u64::try_from(phase(hash, 300_000)).expect("ms");
    let window = Window::new(at(BASE_MS + slot - 500), at(BASE_MS + slot + 500));
    {
        let _first = ledger.running(uid);
        let second = ledger.running(uid);
        assert!(!ledger.due(&window, hash, interval));
        drop(second);
        assert!(!ledger.due(&window, hash, interval));
    }
    assert!(ledger.due(&window, hash, interval));
}
