//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's protocol and timings.
//!
//! - **Acquire**: every `retry_period` (with jitter) read the Lease; take it when it does not exist
//!   (create), has no holder (released), or its record has not changed for `leaseDurationSeconds`
//!   as measured on this process's clock since it last saw the record change (robust to clock skew
//!   between nodes, like client-go). Writes are `replace`s carrying the read `resourceVersion`, so
//!   two candidates racing for the same Lease cannot both win (the loser gets 409 Conflict).
//!   `leaseTransitions` grows by one whenever the holder changes.
//! - **Hold**: the leader renews every `retry_period`; if no renewal succeeded for
//!   `renew_deadline`, or another holder shows up, leadership is lost and [`LeaderElector::hold`]
//!   returns, so the caller stops reconciling at once. `renew_deadline < lease_duration` keeps the
//!   old leader stopped before a standby may take over.
//! - **Release**: on a graceful shutdown the leader clears `holderIdentity` (and sets a 1 s
//!   duration), so a standby takes over on its next poll instead of waiting for the expiry.
//!
//! Written here rather than taken from a crate: `kube-leader-election` targets kube 4, and
//! `kube-lease-manager` 0.13 (kube 5), measured against the test control plane, handed over 12 s
//! after a release (standbys sleep until the old expiry), needs the `patch` verb on Leases, and
//! keeps reporting leadership while renewals fail (README, "Leader election").

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use rand::Rng as _;
use tokio::time::Instant;

/// Settings of one leader-election candidate.
#[derive(Clone, Debug)]
pub struct LeaderElectionConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease (all replicas must use the same).
    pub name: String,
    /// This candidate's identity, unique per process (e.g. pod name plus a random suffix).
    pub identity: String,
    /// How long a Lease is valid after its last renewal (`leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leadership.
    pub renew_deadline: Duration,
    /// Interval between acquire / renew attempts.
    pub retry_period: Duration,
}

/// Why leadership ended.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// Another candidate holds the Lease now.
    #[error("lost leadership of Lease {lease}: it is now held by {holder:?}")]
    TakenOver {
        /// `namespace/name` of the Lease.
        lease: String,
        /// The new holder.
        holder: String,
    },
    /// No renewal succeeded within the renew deadline.
    #[error(
        "lost leadership of Lease {lease}: could not renew it within the renew deadline of {deadline:?}{}",
        last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default()
    )]
    RenewDeadline {
        /// `namespace/name` of the Lease.
        lease: String,
        /// The renew deadline.
        deadline: Duration,
        /// The last failure, if a request failed (rather than timed out).
        last_error: Option<String>,
    },
    /// Releasing the Lease failed (the standby then waits for the expiry).
    #[error("cannot release Lease {lease}: {source}")]
    Release {
        /// `namespace/name` of the Lease.
        lease: String,
        /// The API error.
        source: kube::Error,
    },
}

/// The answer of one acquire-or-renew attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// This candidate holds the Lease (acquired or renewed).
    Leading,
    /// Another candidate holds a valid Lease.
    HeldBy(String),
    /// Someone wrote the Lease between our read and our write (409); try again.
    Conflict,
}

/// The last Lease record seen and when (on this process's monotonic clock) it last changed.
#[derive(Debug)]
struct Observed {
    resource_version: Option<String>,
    at: Instant,
}

/// One candidate in the election for a Lease.
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaderElectionConfig,
    observed: Option<Observed>,
}

impl LeaderElector {
    /// A candidate for `config.namespace/config.name`.
    pub fn new(client: Client, config: LeaderElectionConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &LeaderElectionConfig {
        &self.config
    }

    fn lease_ref(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }

    fn duration_seconds(&self) -> i32 {
        let secs = self.config.lease_duration.as_secs_f64().ceil();
        if secs < 1.0 {
            1
        } else if secs > f64::from(i32::MAX) {
            i32::MAX
        } else {
            secs as i32
        }
    }

    /// Remember `lease`; restart the expiry clock when its record changed.
    fn observe(&mut self, lease: &Lease) {
        let rv = lease.metadata.resource_version.clone();
        match &self.observed {
            Some(o) if o.resource_version == rv => {}
            _ => {
                self.observed = Some(Observed {
                    resource_version: rv,
                    at: Instant::now(),
                })
            }
        }
    }

    /// Whether the observed record has gone unchanged for longer than its lease duration.
    fn observed_expired(&self, spec: &LeaseSpec) -> bool {
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.config.lease_duration, Duration::from_secs);
        self.observed
            .as_ref()
            .is_none_or(|o| o.at.elapsed() >= duration)
    }

    fn spec(&self, previous: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
        let held_by_me = previous
            .and_then(|p| p.holder_identity.as_deref())
            .is_some_and(|h| h == self.config.identity);
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.duration_seconds()),
            acquire_time: if held_by_me {
                previous.and_then(|p| p.acquire_time.clone())
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if held_by_me || previous.is_none() {
                transitions
            } else {
                transitions.saturating_add(1)
            }),
            ..previous.cloned().unwrap_or_default()
        }
    }

    /// One attempt to acquire the Lease, or to renew it when already held.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let now = Timestamp::now();
        let Some(current) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(None, now)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created);
                    Ok(Attempt::Leading)
                }
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Conflict),
                Err(e) => Err(e),
            };
        };
        self.observe(&current);
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        if let Some(holder) = holder
            && holder != self.config.identity
            && !self.observed_expired(&spec)
        {
            return Ok(Attempt::HeldBy(holder));
        }
        let mut next = current;
        next.spec = Some(self.spec(Some(&spec), now));
        // `replace` sends the resourceVersion we read: optimistic concurrency.
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &next)
            .await
        {
            Ok(written) => {
                self.observe(&written);
                Ok(Attempt::Leading)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Conflict),
            Err(e) => Err(e),
        }
    }

    /// Wait until this candidate holds the Lease. Runs until it does; cancel by dropping.
    pub async fn acquire(&mut self) {
        tracing::info!(
            lease = %self.lease_ref(),
            identity = %self.config.identity,
            "waiting to acquire the leader-election Lease"
        );
        let mut last_holder: Option<String> = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => {
                    tracing::info!(
                        lease = %self.lease_ref(),
                        identity = %self.config.identity,
                        "acquired the leader-election Lease"
                    );
                    return;
                }
                Ok(Attempt::HeldBy(holder)) => {
                    if last_holder.as_ref() != Some(&holder) {
                        tracing::info!(lease = %self.lease_ref(), %holder, "Lease is held by another replica; standing by");
                        last_holder = Some(holder);
                    }
                }
                Ok(Attempt::Conflict) => {
                    tracing::debug!(lease = %self.lease_ref(), "Lease changed while acquiring; retrying");
                }
                Err(e) => {
                    tracing::warn!(lease = %self.lease_ref(), error = %e, "cannot read or write the leader-election Lease");
                }
            }
            tokio::time::sleep(jittered(self.config.retry_period)).await;
        }
    }

    /// Keep renewing the Lease; returns only when leadership is lost. Cancel by dropping.
    pub async fn hold(&mut self) -> LeaderError {
        let mut last_renew = Instant::now();
        let mut last_error: Option<String> = None;
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            let deadline = last_renew + self.config.renew_deadline;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt = if remaining.is_zero() {
                None
            } else {
                tokio::time::timeout(remaining, self.try_acquire_or_renew())
                    .await
                    .ok()
            };
            match attempt {
                Some(Ok(Attempt::Leading)) => {
                    last_renew = Instant::now();
                    last_error = None;
                }
                Some(Ok(Attempt::HeldBy(holder))) => {
                    return LeaderError::TakenOver {
                        lease: self.lease_ref(),
                        holder,
                    };
                }
                Some(Ok(Attempt::Conflict)) => {
                    tracing::debug!(lease = %self.lease_ref(), "Lease changed while renewing; retrying");
                }
                Some(Err(e)) => {
                    tracing::warn!(lease = %self.lease_ref(), error = %e, "cannot renew the leader-election Lease");
                    last_error = Some(e.to_string());
                }
                None => {}
            }
            if Instant::now() >= last_renew + self.config.renew_deadline {
                return LeaderError::RenewDeadline {
                    lease: self.lease_ref(),
                    deadline: self.config.renew_deadline,
                    last_error,
                };
            }
        }
    }

    /// Give the Lease up (if still ours) so a standby can take it at once.
    pub async fn release(&mut self) -> Result<(), LeaderError> {
        let err = |source| LeaderError::Release {
            lease: self.lease_ref(),
            source,
        };
        let Some(mut current) = self.api.get_opt(&self.config.name).await.map_err(err)? else {
            return Ok(());
        };
        let spec = current.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        let now = MicroTime(Timestamp::now());
        current.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            ..spec
        });
        self.api
            .replace(&self.config.name, &PostParams::default(), &current)
            .await
            .map_err(|source| LeaderError::Release {
                lease: self.lease_ref(),
                source,
            })?;
        tracing::info!(lease = %self.lease_ref(), "released the leader-election Lease");
        Ok(())
    }
}

/// `base` stretched by a random factor in [1, 1.2), as client-go's `JitterUntil` does.
fn jittered(base: Duration) -> Duration {
    base.mul_f64(rand::rng().random_range(1.0..1.2))
}

/// This process's identity: `POD_NAME`, else the hostname, plus a random suffix (a restarted
/// process never mistakes the previous one's Lease for its own).
pub fn default_identity() -> String {
    let base = std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| {
            hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "zitadel-metadata-operator".to_string());
    let suffix: u32 = rand::rng().random();
    format!("{}_{suffix:08x}", base.trim())
}

#[cfg(test)]
mod tests;
