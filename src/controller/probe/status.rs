//! A connection's status after a probe (pure): `Ready`, `Reconciling`, the reachable URL and the
//! authenticated identity; and, while it is being deleted and still in use, `Terminating`.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::connections::build::{BuildError, Built, ProbeResult};
use crate::crd::{ApiVersion, ConnectionStatus, DriftDetectionStatus};
use crate::drift::{Cursor, Mode};
use crate::reason::Reason;
use crate::status;
use crate::zitadel::ZitadelError;

/// Re-probe delay after a transient probe failure (ZITADEL unavailable, rate limited, timed out):
/// the objects using the connection are waiting for it.
pub(super) const TRANSIENT_PROBE_RETRY: Duration = Duration::from_secs(5);

/// How a probe ended.
pub(super) enum Probed {
    /// The client could not be built (no call was made).
    Unbuilt(BuildError),
    /// The probe call failed.
    Failed(Vec<String>, ZitadelError),
    /// Authenticated; `service_user` for a key file.
    Connected {
        versions: Vec<String>,
        service_user: Option<String>,
        found: ProbeResult,
        /// The events probe: `None` when drift detection is set to polling (no call made).
        events: Option<Result<(), ZitadelError>>,
    },
}

/// What drift detection the connection asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct DriftAsk {
    /// Events are allowed (`--drift-detection auto` and `spec.driftDetection.mode: Auto`).
    pub events: bool,
    /// The Events-mode poll interval, or why the spec's cannot be used.
    pub interval: Result<Duration, String>,
    /// The interval used when the spec's cannot be.
    pub fallback: Duration,
}

pub(super) async fn probe(built: Result<Built, BuildError>, drift: &DriftAsk) -> Probed {
    match built {
        Err(e) => Probed::Unbuilt(e),
        Ok(built) => match built.probe().await {
            Ok(found) => {
                // Side-effect free: the newest drift event (also how a poller bootstraps).
                let events = if drift.events {
                    Some(
                        built
                            .api()
                            .list_events(&Cursor::bootstrap_query())
                            .await
                            .map(drop),
                    )
                } else {
                    None
                };
                Probed::Connected {
                    versions: built.versions,
                    service_user: built.service_user,
                    found,
                    events,
                }
            }
            Err(e) => Probed::Failed(built.versions, e),
        },
    }
}

/// `status.driftDetection` after an events probe (pure). A probe that failed on a transient
/// error keeps the previous mode.
pub(super) fn drift_status(
    previous: Option<&DriftDetectionStatus>,
    drift: &DriftAsk,
    events: Option<&Result<(), ZitadelError>>,
) -> DriftDetectionStatus {
    let interval = match &drift.interval {
        Ok(d) => *d,
        Err(_) => drift.fallback,
    };
    let spec_note = match &drift.interval {
        Ok(_) => String::new(),
        Err(e) => format!(" ({e}; using {})", humantime::format_duration(interval)),
    };
    let events_mode = |message: String| DriftDetectionStatus {
        mode: Mode::Events.as_str().into(),
        event_poll_interval: Some(humantime::format_duration(interval).to_string()),
        message: format!("{message}{spec_note}"),
    };
    let polling = |message: &str| DriftDetectionStatus {
        mode: Mode::Polling.as_str().into(),
        event_poll_interval: None,
        message: message.to_string(),
    };
    match events {
        None => polling(
            "drift detection is set to polling (spec.driftDetection.mode or --drift-detection): each object re-lists its target every resync interval",
        ),
        Some(Ok(())) => events_mode(
            "the credentials may read ZITADEL's event log (events.read): it is read every poll interval and only the objects whose organization or user changed re-sync".into(),
        ),
        Some(Err(e)) if e.is_permission() => polling(
            "the credentials may not read ZITADEL's event log (events.read, held by IAM_OWNER and IAM_OWNER_VIEWER): each object re-lists its target every resync interval",
        ),
        Some(Err(e)) if e.is_route_missing() => polling(
            "the instance serves no event log (admin ListEvents): each object re-lists its target every resync interval",
        ),
        Some(Err(e)) => match previous.filter(|p| p.mode == Mode::Events.as_str()) {
            Some(_) => events_mode(format!(
                "the last events probe failed ({}); kept Events mode",
                e.reason()
            )),
            None => polling(&format!(
                "the events probe failed ({}); polling until the next probe succeeds",
                e.reason()
            )),
        },
    }
}

/// The connection's status after a probe (pure), and when to probe again. `Reconciling=True`
/// records that the probe failed on a transient ZITADEL error (its reason is transient):
/// objects using the connection wait for it instead of stalling.
pub(super) fn probe_status(
    previous: &ConnectionStatus,
    generation: Option<i64>,
    url: &str,
    probed: Probed,
    resync: Duration,
    drift: &DriftAsk,
) -> (ConnectionStatus, Duration) {
    let mut next = ConnectionStatus {
        observed_generation: generation,
        ..Default::default()
    };
    let (ready, reason, message, retry) = match probed {
        Probed::Unbuilt(e) => (false, e.reason(), e.to_string(), Duration::from_secs(30)),
        Probed::Failed(versions, e) => {
            next.observed_secret_versions = versions;
            let retry = if e.is_transient() {
                TRANSIENT_PROBE_RETRY
            } else {
                Duration::from_secs(30)
            };
            let message = format!("authenticated probe failed: {e}");
            (false, e.reason(), message, retry)
        }
        Probed::Connected {
            versions,
            service_user,
            found,
            events,
        } => {
            next.drift_detection = Some(drift_status(
                previous.drift_detection.as_ref(),
                drift,
                events.as_ref(),
            ));
            next.observed_secret_versions = versions;
            next.url = Some(url.to_string());
            next.identity = Some(match (service_user, found.organization) {
                (Some(user), Some((org_id, org_name))) => {
                    format!("service user {user} in organization {org_name} ({org_id})")
                }
                (None, Some((org_id, org_name))) => {
                    format!("token of organization {org_name} ({org_id})")
                }
                // v2 has no "my organization" call (v1 is not in use).
                (Some(user), None) => format!("service user {user}"),
                (None, None) => "token (organization not reported over v2)".to_string(),
            });
            let api = &found.api;
            let message = format!(
                "authenticated probe succeeded; metadata APIs: user {} / org {} ({:?})",
                api_label(api.user_metadata),
                api_label(api.org_metadata),
                api.mode
            );
            next.api = Some(found.api);
            (true, Reason::Connected, message, resync)
        }
    };
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let waiting = !ready && reason.is_transient();
    let condition = |type_, state: bool| {
        let state = if state { "True" } else { "False" };
        status::condition(
            &previous.conditions,
            type_,
            state,
            reason,
            &message,
            generation,
            &now,
        )
    };
    next.conditions = vec![
        condition(status::READY, ready),
        condition(status::RECONCILING, waiting),
    ];
    // Objects using a connection wait for it: probe again soon after a transient failure.
    (next, resync.min(retry))
}

fn api_label(api: ApiVersion) -> &'static str {
    match api {
        ApiVersion::V1 => "v1",
        ApiVersion::V2 => "v2",
    }
}

/// The `Terminating` condition of a connection being deleted while `in_use` (a message counting
/// and naming its users); `None` otherwise.
pub(super) fn terminating(
    previous: &ConnectionStatus,
    generation: Option<i64>,
    in_use: Option<&str>,
) -> Option<Condition> {
    let message = in_use?;
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    Some(status::condition(
        &previous.conditions,
        status::TERMINATING,
        "True",
        Reason::InUse,
        message,
        generation,
        &now,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready_and_reconciling(status: &ConnectionStatus) -> (String, String, String) {
        let get = |t| status::find(&status.conditions, t).map(|c| c.status.clone());
        let ready = status::find(&status.conditions, status::READY).expect("Ready");
        (
            ready.reason.clone(),
            get(status::READY).unwrap_or_default(),
            get(status::RECONCILING).unwrap_or_default(),
        )
    }

    fn ask() -> DriftAsk {
        DriftAsk {
            events: true,
            interval: Ok(Duration::from_secs(15)),
            fallback: Duration::from_secs(15),
        }
    }

    // Long because each probe outcome is one short block against the same previous status;
    // separate tests would repeat that setup.
    #[test]
    fn probe_outcomes_give_ready_reconciling_and_a_retry() {
        let resync = Duration::from_secs(300);
        let drift = ask();
        let previous = ConnectionStatus::default();
        let outage = Probed::Failed(
            vec!["Secret/ns/pat@1".into()],
            ZitadelError::from_response(503, None, "{}"),
        );
        let (s, retry) = probe_status(&previous, Some(2), "https://z", outage, resync, &drift);
        assert_eq!(
            ready_and_reconciling(&s),
            ("ZitadelUnavailable".into(), "False".into(), "True".into())
        );
        assert_eq!(retry, TRANSIENT_PROBE_RETRY);
        assert_eq!(s.observed_generation, Some(2));
        // TLS is retried soon but does not make the connection's objects wait (add a caBundle).
        let tls = Probed::Failed(vec![], ZitadelError::Tls("UnknownIssuer".into()));
        let (s, retry) = probe_status(&previous, Some(2), "https://z", tls, resync, &drift);
        assert_eq!(
            ready_and_reconciling(&s),
            (
                "TlsVerificationFailed".into(),
                "False".into(),
                "False".into()
            )
        );
        assert_eq!(retry, TRANSIENT_PROBE_RETRY);
        let unbuilt = Probed::Unbuilt(BuildError::Missing("Secret ns/x not found".into()));
        let (s, retry) = probe_status(&previous, Some(2), "https://z", unbuilt, resync, &drift);
        assert_eq!(ready_and_reconciling(&s).0, "SecretNotFound");
        assert_eq!(retry, Duration::from_secs(30));
        let api = |user, org, mode| crate::crd::ApiStatus {
            mode,
            user_metadata: user,
            org_metadata: org,
        };
        let ok = Probed::Connected {
            versions: vec!["Secret/ns/pat@1".into()],
            service_user: Some("300".into()),
            found: ProbeResult {
                organization: Some(("1".into(), "Acme".into())),
                api: api(
                    ApiVersion::V1,
                    ApiVersion::V1,
                    crate::zitadel::ApiMode::Auto,
                ),
            },
            events: Some(Ok(())),
        };
        let (s, retry) = probe_status(&previous, Some(2), "https://z", ok, resync, &drift);
        assert_eq!(
            ready_and_reconciling(&s),
            ("Connected".into(), "True".into(), "False".into())
        );
        assert_eq!(retry, resync);
        assert_eq!(s.url.as_deref(), Some("https://z"));
        assert_eq!(
            s.identity.as_deref(),
            Some("service user 300 in organization Acme (1)")
        );
        // The API per service is in the status (and its message), e.g. v5 over v2.
        let v5 = Probed::Connected {
            versions: vec![],
            service_user: None,
            found: ProbeResult {
                organization: None,
                api: api(
                    ApiVersion::V2,
                    ApiVersion::V2,
                    crate::zitadel::ApiMode::Auto,
                ),
            },
            events: None,
        };
        let (s, _) = probe_status(&previous, Some(3), "https://z", v5, resync, &drift);
        let shown = serde_json::to_value(&s).expect("json");
        assert_eq!(
            shown["api"],
            serde_json::json!({"mode": "Auto", "userMetadata": "v2", "orgMetadata": "v2"})
        );
        assert_eq!(
            s.identity.as_deref(),
            Some("token (organization not reported over v2)")
        );
        let ready = status::find(&s.conditions, status::READY).expect("Ready");
        assert!(
            ready.message.contains("user v2 / org v2 (Auto)"),
            "{}",
            ready.message
        );
    }

    #[test]
    fn the_events_probe_decides_the_drift_detection_mode() {
        let drift = ask();
        let mode = |events: Option<Result<(), ZitadelError>>, previous: Option<&str>| {
            let previous = previous.map(|m| DriftDetectionStatus {
                mode: m.into(),
                ..Default::default()
            });
            drift_status(previous.as_ref(), &drift, events.as_ref())
        };
        let events = mode(Some(Ok(())), None);
        assert_eq!(events.mode, "Events");
        assert_eq!(events.event_poll_interval.as_deref(), Some("15s"));
        let forbidden = ZitadelError::from_response(
            403,
            None,
            r#"{"code":7,"message":"No matching permissions found (AUTH-5mWD2)"}"#,
        );
        let denied = mode(Some(Err(forbidden)), Some("Events"));
        assert_eq!(denied.mode, "Polling");
        assert!(denied.message.contains("events.read"), "{}", denied.message);
        assert_eq!(denied.event_poll_interval, None);
        assert_eq!(mode(None, Some("Events")).mode, "Polling");
        // A transient failure keeps what the last probe found.
        let outage = || Some(Err(ZitadelError::from_response(503, None, "{}")));
        assert_eq!(mode(outage(), Some("Events")).mode, "Events");
        assert_eq!(mode(outage(), None).mode, "Polling");
        // A spec interval that cannot be used falls back, and says so.
        let bad = DriftAsk {
            interval: Err(
                "spec.driftDetection.eventPollInterval \"0s\" must be between 1s and 1h".into(),
            ),
            ..ask()
        };
        let status = drift_status(None, &bad, Some(&Ok(())));
        assert_eq!(status.event_poll_interval.as_deref(), Some("15s"));
        assert!(
            status.message.contains("must be between"),
            "{}",
            status.message
        );
    }
}
