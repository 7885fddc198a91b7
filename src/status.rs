//! Kstatus conditions (`Ready`, `Reconciling`, `Stalled`) built from a reconcile outcome.
//!
//! What kstatus (`sigs.k8s.io/cli-utils`, used by Flux and `helm --wait`) makes of each outcome,
//! checked on live objects by `tests/e2e_gitops.rs`:
//!
//! | outcome | Ready | Reconciling | Stalled | kstatus |
//! |---|---|---|---|---|
//! | Ready | True | False | False | Current |
//! | Retrying | False | True | False | InProgress |
//! | Stalled | False | False | True | Failed |
//! | Drifted (driftPolicy Report) | False | False | True | Failed: only a person can resolve it |
//! | Suspended | — | False | False | Current: paused as the spec asks; a `Ready` condition of any status would be a lie or keep `--wait` waiting |
//! | Deleting (cleanup running) | False | True (`Deleting`, keys removed / remaining) | False | Terminating (deletionTimestamp set) |
//!
//! Status is rebuilt from the current result every time; `lastTransitionTime` is carried over
//! unless a condition's `status` flips, so an unchanged outcome yields an identical status and no
//! write.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::reason::Reason;

/// `Ready` condition type.
pub const READY: &str = "Ready";
/// `Reconciling` condition type.
pub const RECONCILING: &str = "Reconciling";
/// `Stalled` condition type.
pub const STALLED: &str = "Stalled";
/// `Drifted` condition type (driftPolicy `Report` only).
pub const DRIFTED: &str = "Drifted";
/// `Terminating` condition type (connections being deleted while objects still use them).
pub const TERMINATING: &str = "Terminating";

/// What a reconcile ended in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// In sync.
    Ready {
        /// Human message.
        message: String,
    },
    /// Failed, will retry by itself (backoff).
    Retrying {
        /// Why.
        reason: Reason,
        /// Human message.
        message: String,
    },
    /// ZITADEL differs from the spec and driftPolicy `Report` forbids writing.
    Drifted {
        /// Human message (key names only).
        message: String,
    },
    /// `spec.suspend` is true.
    Suspended {
        /// Human message.
        message: String,
    },
    /// Being deleted: the managed keys are being removed (the message counts progress).
    Deleting {
        /// Human message.
        message: String,
    },
    /// Needs the user to act (spec, permissions, target, conflict).
    Stalled {
        /// Why.
        reason: Reason,
        /// Human message.
        message: String,
    },
}

impl Outcome {
    fn parts(&self) -> (Option<&str>, &str, &str, Reason, &str) {
        // (ready status — None: no Ready condition, reconciling status, stalled status, reason,
        // message)
        match self {
            Outcome::Ready { message } => (Some("True"), "False", "False", Reason::Synced, message),
            Outcome::Retrying { reason, message } => {
                (Some("False"), "True", "False", *reason, message)
            }
            // Only a person can resolve reported drift (fix ZITADEL or the spec, or switch the
            // policy): Stalled, so `--wait` fails at once with the message instead of timing out.
            Outcome::Drifted { message } => {
                (Some("False"), "False", "True", Reason::Drifted, message)
            }
            // Paused on purpose: kstatus Current. Ready=False would keep `--wait` waiting until
            // it times out, Ready=True would claim a sync that did not happen.
            Outcome::Suspended { message } => (None, "False", "False", Reason::Suspended, message),
            Outcome::Stalled { reason, message } => {
                (Some("False"), "False", "True", *reason, message)
            }
            // Work in progress that ends by itself (kstatus InProgress; with a
            // deletionTimestamp kstatus says Terminating whatever the conditions).
            Outcome::Deleting { message } => {
                (Some("False"), "True", "False", Reason::Deleting, message)
            }
        }
    }

    /// The reason its conditions carry.
    pub fn reason(&self) -> Reason {
        self.parts().3
    }

    /// Whether the reconcile failed on something someone must fix: a terminal error for the
    /// metrics. (Reported drift is `Stalled=True` too, but not a failed reconcile.)
    pub fn is_stalled(&self) -> bool {
        matches!(self, Outcome::Stalled { .. })
    }
}

/// Build the conditions for `outcome` (`Ready`, `Reconciling`, `Stalled`; no `Ready` while
/// suspended), keeping `lastTransitionTime` from `existing` where a condition's status did not
/// change.
pub fn conditions(
    existing: &[Condition],
    outcome: &Outcome,
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let (ready, reconciling, stalled, reason, message) = outcome.parts();
    [
        (READY, ready),
        (RECONCILING, Some(reconciling)),
        (STALLED, Some(stalled)),
    ]
    .into_iter()
    .filter_map(|(type_, status)| status.map(|status| (type_, status)))
    .map(|(type_, status)| condition(existing, type_, status, reason, message, generation, now))
    .collect()
}

/// One condition, keeping `lastTransitionTime` from `existing` when its status is unchanged.
pub fn condition(
    existing: &[Condition],
    type_: &str,
    status: &str,
    reason: Reason,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let last = existing
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.as_str().to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time: last,
    }
}

/// The condition of a type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Time {
        Time(s.parse().expect("timestamp"))
    }

    #[test]
    fn ready_sets_kstatus_triplet() {
        let c = conditions(
            &[],
            &Outcome::Ready {
                message: "ok".into(),
            },
            Some(3),
            &t("2026-01-01T00:00:00Z"),
        );
        let ready = find(&c, READY).expect("ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Synced")
        );
        assert_eq!(ready.observed_generation, Some(3));
        assert_eq!(find(&c, STALLED).map(|c| c.status.as_str()), Some("False"));
        assert_eq!(
            find(&c, RECONCILING).map(|c| c.status.as_str()),
            Some("False")
        );
    }

    fn statuses(c: &[Condition]) -> Vec<(&str, &str, &str)> {
        c.iter()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect()
    }

    #[test]
    fn reported_drift_is_stalled() {
        let c = conditions(
            &[],
            &Outcome::Drifted {
                message: "1 key(s) differ".into(),
            },
            Some(2),
            &t("2026-01-01T00:00:00Z"),
        );
        assert_eq!(
            statuses(&c),
            [
                (READY, "False", "Drifted"),
                (RECONCILING, "False", "Drifted"),
                (STALLED, "True", "Drifted")
            ]
        );
    }

    #[test]
    fn suspended_has_no_ready_condition() {
        let ready = conditions(
            &[],
            &Outcome::Ready {
                message: "ok".into(),
            },
            Some(1),
            &t("2026-01-01T00:00:00Z"),
        );
        let c = conditions(
            &ready,
            &Outcome::Suspended {
                message: "paused".into(),
            },
            Some(2),
            &t("2026-02-01T00:00:00Z"),
        );
        assert_eq!(
            statuses(&c),
            [
                (RECONCILING, "False", "Suspended"),
                (STALLED, "False", "Suspended")
            ]
        );
        assert!(c.iter().all(|c| c.observed_generation == Some(2)));
        // Reconciling stayed False: its transition time is kept.
        assert_eq!(
            find(&c, RECONCILING).map(|c| c.last_transition_time.clone()),
            Some(t("2026-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn transition_time_kept_while_status_unchanged() {
        let first = conditions(
            &[],
            &Outcome::Ready {
                message: "ok".into(),
            },
            Some(1),
            &t("2026-01-01T00:00:00Z"),
        );
        let again = conditions(
            &first,
            &Outcome::Ready {
                message: "ok".into(),
            },
            Some(1),
            &t("2026-02-01T00:00:00Z"),
        );
        assert_eq!(
            first, again,
            "identical outcome must give identical conditions"
        );
        let failed = conditions(
            &again,
            &Outcome::Stalled {
                reason: Reason::ZitadelNotFound,
                message: "gone".into(),
            },
            Some(2),
            &t("2026-03-01T00:00:00Z"),
        );
        let ready = find(&failed, READY).expect("ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.last_transition_time, t("2026-03-01T00:00:00Z"));
        // Reconciling stayed False: its transition time is kept.
        assert_eq!(
            find(&failed, RECONCILING).map(|c| c.last_transition_time.clone()),
            Some(t("2026-01-01T00:00:00Z"))
        );
    }
}
