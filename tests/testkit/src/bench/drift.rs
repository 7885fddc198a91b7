//! The drift-repair phase: out-of-band edits made directly in ZITADEL (the emulator's writers,
//! with a foreign editor, as a person in the console would), and how long the operator takes to
//! put each edited key back, with the ZITADEL calls it made for that.
//!
//! The edited objects are a fixed-seed shuffle of the workload, half organizations and half
//! users; each gets one managed key set to a value other than the desired one, all in one burst.
//! The emulator is then read in-process every [`RESOLUTION`] until every edited key holds its
//! desired value again, or the phase times out (reported, not an error).

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::time::{Duration, Instant};

use anyhow::Result;
use rand::SeedableRng as _;
use rand::seq::SliceRandom as _;
use serde::Serialize;

use super::report::{Calls, KubeWrites, quantile};
use super::workload::{CallKind, Object, TargetKind, Targets};
use super::{Clock, apiserver};
use crate::emulator::{Emulator, Operation, RecordedRequest};

/// How often the emulator is read for repaired keys: the latencies' resolution.
pub(super) const RESOLUTION: Duration = Duration::from_millis(100);

/// The seed of the shuffle that picks the edited objects (the same objects in every run).
const SEED: u64 = 13;

/// The drift-repair phase of one bulk run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Drift {
    /// How the operator detected drift: `Events` or `Polling`, from its metric
    /// `zitadel_drift_detection_mode` (see [`super::BulkRun::drift_mode`]).
    pub mode: String,
    /// The operator's event poll interval, seconds (Events mode).
    pub event_poll_s: f64,
    /// The operator's resync interval, seconds (Polling mode).
    pub resync_s: f64,
    /// Objects edited out of band (one key each).
    pub edits: usize,
    /// Of those, `OrgMetadata` objects (the rest are `UserMetadata`).
    pub org_edits: usize,
    /// Edited keys holding their desired value again by the end of the phase.
    pub repaired: usize,
    /// The phase ended at its timeout with keys not repaired.
    pub timed_out: bool,
    /// The phase's timeout, seconds.
    pub timeout_s: f64,
    /// Time the burst of edits took, ms.
    pub burst_ms: f64,
    /// Edit to desired value back in ZITADEL, per repaired key: median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest repaired key, ms.
    pub max_ms: f64,
    /// Resolution of the latencies (how often ZITADEL's state is read), ms.
    pub resolution_ms: f64,
    /// First edit to the end of the phase (last repair plus a short tail for read-backs), s.
    pub window_s: f64,
    /// Every ZITADEL call in the phase, by kind (ListEvents counts as `other`).
    pub calls: Calls,
    /// Calls for the edited objects' targets.
    pub edited_calls: Calls,
    /// Calls for the targets of objects not edited (Polling mode: their resyncs; Events mode:
    /// expected 0).
    pub other_target_calls: Calls,
    /// ListEvents calls (reads of the event log).
    pub list_events: u64,
    /// Calls for no object that are not ListEvents (token, user lookups, ...).
    pub unattributed_calls: Calls,
    /// Edited targets that got at least one metadata write.
    pub edited_targets_written: usize,
    /// Most metadata writes to one edited target (expected 1).
    pub max_writes_per_edited_target: u64,
    /// Events the operator read as drift in the phase (`zitadel_drift_events_total{verdict="drift"}`).
    pub drift_events_read: Option<f64>,
    /// Reconciles the event log triggered in the phase (`zitadel_drift_triggered_reconciles_total`).
    pub triggered_reconciles: Option<f64>,
    /// Kubernetes writes (status, Events) in the phase.
    pub kube: KubeWrites,
}

/// One out-of-band edit: the object, its target, the key, and the value it must get back.
#[derive(Clone, Debug)]
pub(super) struct Pick {
    object: usize,
    kind: TargetKind,
    /// The org id or the user id.
    target: String,
    key: String,
    desired: Vec<u8>,
}

impl Pick {
    fn current(&self, emu: &Emulator) -> Option<Vec<u8>> {
        let mut values = match self.kind {
            TargetKind::Org => emu.org_metadata(&self.target),
            TargetKind::User => emu.user_metadata(&self.target),
        };
        values.remove(&self.key)
    }

    fn edit(&self, emu: &Emulator) {
        let mut value = self.desired.clone();
        value.extend_from_slice(b"-drift");
        match self.kind {
            TargetKind::Org => emu.put_org_metadata(&self.target, &self.key, &value),
            TargetKind::User => emu.put_user_metadata(&self.target, &self.key, &value),
        }
    }
}

/// `count` objects of `desired` (capped at those with a key), half organizations and half users
/// (more of one kind where the other runs out), each chosen by a fixed-seed shuffle; one managed
/// key each, in turn the first, second, ... key of its object.
pub(super) fn pick(desired: &[Object], count: usize) -> Vec<Pick> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(SEED);
    let mut pool = |kind: TargetKind| {
        let mut of_kind: Vec<usize> = (0..desired.len())
            .filter(|i| desired[*i].kind == kind && !desired[*i].entries.is_empty())
            .collect();
        of_kind.shuffle(&mut rng);
        of_kind
    };
    let (orgs, users) = (pool(TargetKind::Org), pool(TargetKind::User));
    let count = count.min(orgs.len() + users.len());
    let from_orgs = count
        .div_ceil(2)
        .min(orgs.len())
        .max(count.saturating_sub(users.len()));
    let (orgs, users) = (&orgs[..from_orgs], &users[..count - from_orgs]);
    // Alternate the kinds in the burst.
    let mut order = Vec::with_capacity(count);
    for i in 0..orgs.len().max(users.len()) {
        order.extend(orgs.get(i));
        order.extend(users.get(i));
    }
    order
        .into_iter()
        .enumerate()
        .map(|(p, &object)| {
            let o = &desired[object];
            let (key, value) = &o.entries[p % o.entries.len()];
            Pick {
                object,
                kind: o.kind,
                target: match o.kind {
                    TargetKind::Org => o.org_id.clone(),
                    TargetKind::User => o.user_id.clone(),
                },
                key: key.clone(),
                desired: value.clone().into_bytes(),
            }
        })
        .collect()
}

/// What happened in the phase, for [`DriftRun::report`].
pub(super) struct DriftRun {
    picks: Vec<Pick>,
    edited_at: Vec<Instant>,
    repaired_at: Vec<Option<Instant>>,
    timeout: Duration,
    timed_out: bool,
    /// First edit to the end of the tail.
    pub(super) window: Range<Instant>,
    pub(super) snap_start: apiserver::Snapshot,
    pub(super) snap_end: apiserver::Snapshot,
    drift_events: Option<f64>,
    triggered: Option<f64>,
}

/// The operator's counters of drift events read and reconciles they triggered.
async fn counters(operator: &super::shards::Fleet) -> (Option<f64>, Option<f64>) {
    (
        operator
            .metric(r#"zitadel_drift_events_total{verdict="drift"}"#)
            .await,
        operator
            .metric("zitadel_drift_triggered_reconciles_total")
            .await,
    )
}

/// Edits every pick in one burst, then waits until all are repaired or `timeout` passes, then
/// `tail` more (for the repairs' read-backs).
pub(super) async fn run(
    emu: &Emulator,
    operator: &super::shards::Fleet,
    scraper: &apiserver::Scraper,
    picks: Vec<Pick>,
    timeout: Duration,
    tail: Duration,
) -> Result<DriftRun> {
    let before = counters(operator).await;
    let snap_start = scraper.snapshot().await?;
    let start = Instant::now();
    let mut edited_at = Vec::with_capacity(picks.len());
    for p in &picks {
        p.edit(emu);
        edited_at.push(Instant::now());
    }
    let mut repaired_at: Vec<Option<Instant>> = vec![None; picks.len()];
    let mut pending: Vec<usize> = (0..picks.len()).collect();
    let deadline = start + timeout;
    loop {
        let now = Instant::now();
        pending.retain(|&i| {
            let done = picks[i].current(emu).as_deref() == Some(picks[i].desired.as_slice());
            if done {
                repaired_at[i] = Some(now);
            }
            !done
        });
        if pending.is_empty() || now >= deadline {
            break;
        }
        tokio::time::sleep(RESOLUTION).await;
    }
    let timed_out = !pending.is_empty();
    if !timed_out {
        tokio::time::sleep(tail).await;
    }
    let end = Instant::now();
    let snap_end = scraper.snapshot().await?;
    let after = counters(operator).await;
    let delta = |a: Option<f64>, b: Option<f64>| Some(a? - b.unwrap_or(0.0));
    Ok(DriftRun {
        picks,
        edited_at,
        repaired_at,
        timeout,
        timed_out,
        window: start..end,
        snap_start,
        snap_end,
        drift_events: delta(after.0, before.0),
        triggered: delta(after.1, before.1),
    })
}

impl DriftRun {
    /// The phase's figures: latencies from the edits and repairs, calls from the emulator's
    /// log (`requests`, attributed to objects by `targets`), Kubernetes writes `kube`.
    pub(super) fn report(
        &self,
        requests: &[RecordedRequest],
        (clock, targets): (&Clock, &Targets),
        (mode, event_poll, resync): (&str, Duration, Duration),
        kube: KubeWrites,
    ) -> Drift {
        let mut latencies: Vec<f64> = self
            .edited_at
            .iter()
            .zip(&self.repaired_at)
            .filter_map(|(e, r)| Some(super::ms(r.as_ref()?.saturating_duration_since(*e))))
            .collect();
        let edited: HashSet<usize> = self.picks.iter().map(|p| p.object).collect();
        let mut out = Drift {
            mode: mode.to_owned(),
            event_poll_s: event_poll.as_secs_f64(),
            resync_s: resync.as_secs_f64(),
            edits: self.picks.len(),
            org_edits: self
                .picks
                .iter()
                .filter(|p| p.kind == TargetKind::Org)
                .count(),
            repaired: latencies.len(),
            timed_out: self.timed_out,
            timeout_s: self.timeout.as_secs_f64(),
            burst_ms: self
                .edited_at
                .last()
                .map_or(0.0, |l| super::ms(l.duration_since(self.window.start))),
            p50_ms: quantile(&mut latencies, 0.5),
            p99_ms: quantile(&mut latencies, 0.99),
            max_ms: quantile(&mut latencies, 1.0),
            resolution_ms: super::ms(RESOLUTION),
            window_s: self
                .window
                .end
                .duration_since(self.window.start)
                .as_secs_f64(),
            drift_events_read: self.drift_events,
            triggered_reconciles: self.triggered,
            kube,
            ..Drift::default()
        };
        let mut writes_per_target: HashMap<usize, u64> = HashMap::new();
        for r in requests {
            if !self.window.contains(&clock.at(r.received_unix_micros)) {
                continue;
            }
            let kind = CallKind::of(r.operation);
            out.calls.add(kind, r.status);
            match targets.object_of(r) {
                Some(i) if edited.contains(&i) => {
                    out.edited_calls.add(kind, r.status);
                    if kind.writes() {
                        *writes_per_target.entry(i).or_default() += 1;
                    }
                }
                Some(_) => out.other_target_calls.add(kind, r.status),
                None if r.operation == Operation::ListEvents => out.list_events += 1,
                None => out.unattributed_calls.add(kind, r.status),
            }
        }
        out.edited_targets_written = writes_per_target.len();
        out.max_writes_per_edited_target = writes_per_target.values().copied().max().unwrap_or(0);
        out
    }
}

impl Drift {
    /// The one-line summary on stderr.
    pub(super) fn summary(&self) -> String {
        let c = &self.edited_calls;
        format!(
            "drift repair ({} mode): {}/{} out-of-band edits repaired{} (p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms); edited targets: {} list + {} bulk set + {} other; other targets: {} calls ({} writes); {} ListEvents",
            self.mode,
            self.repaired,
            self.edits,
            if self.timed_out {
                format!(", TIMED OUT after {:.0} s", self.timeout_s)
            } else {
                String::new()
            },
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            c.list,
            c.bulk_set,
            c.besides_list_and_bulk_set(),
            self.other_target_calls.total(),
            self.other_target_calls.writes(),
            self.list_events,
        )
    }

    /// A Markdown row for `n` objects (see [`MARKDOWN_HEADER`]).
    pub(super) fn markdown_row(&self, n: usize) -> String {
        let c = &self.edited_calls;
        format!(
            "| {n} | {} | {:.0} | {:.0} | {} ({} org) | {}{} | {:.0} | {:.0} | {:.0} | {} list + {} bulk set + {} other | {} ({} writes) | {} | {} |",
            self.mode,
            self.event_poll_s,
            self.resync_s,
            self.edits,
            self.org_edits,
            self.repaired,
            if self.timed_out { " (timed out)" } else { "" },
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            c.list,
            c.bulk_set,
            c.besides_list_and_bulk_set(),
            self.other_target_calls.total(),
            self.other_target_calls.writes(),
            self.list_events,
            self.kube.total(),
        )
    }

    /// CSV cells (see [`CSV_HEADER`]).
    pub(super) fn csv_cells(&self) -> String {
        format!(
            "{},{},{},{:.1},{:.1},{:.1},{},{},{},{},{},{}",
            self.edits,
            self.repaired,
            u8::from(self.timed_out),
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.calls.total(),
            self.edited_calls.total(),
            self.edited_calls.writes(),
            self.other_target_calls.total(),
            self.other_target_calls.writes(),
            self.list_events,
        )
    }
}

/// The Markdown table's header and alignment rows.
pub(super) const MARKDOWN_HEADER: [&str; 2] = [
    "| N | drift repair: mode | event poll s | resync s | out-of-band edits | repaired | p50 ms | p99 ms | max ms | ZITADEL calls for edited targets | calls for other targets | ListEvents | K8s writes |",
    "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
];

/// The CSV columns of [`Drift::csv_cells`].
pub(super) const CSV_HEADER: &str = "drift_edits,drift_repaired,drift_timed_out,drift_p50_ms,drift_p99_ms,drift_max_ms,drift_calls,drift_edited_calls,drift_edited_writes,drift_other_target_calls,drift_other_target_writes,drift_list_events";

/// Empty CSV cells in place of [`Drift::csv_cells`].
pub(super) const CSV_EMPTY: &str = ",,,,,,,,,,,";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::workload::objects;

    #[test]
    fn picks_are_distinct_half_orgs_half_users_and_stable() {
        let all = objects(200, 3);
        let picks = pick(&all, 21);
        assert_eq!(picks.len(), 21);
        let distinct: HashSet<usize> = picks.iter().map(|p| p.object).collect();
        assert_eq!(distinct.len(), 21);
        let orgs = picks.iter().filter(|p| p.kind == TargetKind::Org).count();
        assert_eq!(orgs, 11);
        // Spread over the set, not its first objects.
        assert!(picks.iter().any(|p| p.object >= 100), "{distinct:?}");
        // Keys in turn; the desired value is the object's.
        for (i, p) in picks.iter().enumerate() {
            let (k, v) = &all[p.object].entries[i % 3];
            assert_eq!((&p.key, p.desired.as_slice()), (k, v.as_bytes()));
        }
        let again: Vec<usize> = pick(&all, 21).iter().map(|p| p.object).collect();
        assert_eq!(again, picks.iter().map(|p| p.object).collect::<Vec<_>>());
        // Capped at the objects; one kind running out is made up by the other.
        assert_eq!(pick(&all, 1000).len(), 200);
        let few_users = objects(3, 1);
        assert_eq!(pick(&few_users, 3).len(), 3);
        assert_eq!(CSV_EMPTY.len() + 1, CSV_HEADER.split(',').count());
    }
}
