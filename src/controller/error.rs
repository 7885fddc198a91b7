//! What a reconcile returns to the controller when it fails (the controller then applies
//! [`error_policy`](super::error_policy): retry with per-object backoff).

use std::time::Duration;

use crate::connections::Refusal;
use crate::zitadel::ZitadelError;

/// Errors of a metadata reconcile, flat: the finalizer's own failures are variants here, not a
/// wrapper around this type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// ZITADEL failed transiently; retried with backoff.
    #[error(transparent)]
    Zitadel(#[from] ZitadelError),
    /// The Kubernetes API failed (status write, value source read).
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    /// The object's connection is not Ready yet for a reason that clears by itself (probe
    /// pending, ZITADEL failing the probe transiently).
    #[error("{0}")]
    ConnectionNotReady(String),
    /// ZITADEL acknowledged a write, but reading back shows other values.
    #[error("read-back after write to {target} does not match for key(s) {keys}")]
    ReadBack {
        /// The target.
        target: String,
        /// The keys that differ.
        keys: String,
    },
    /// ZITADEL's answer might mean "the target is gone" but that could not be confirmed (the
    /// target exists, or its existence is unknown): retried with backoff.
    #[error("{0}")]
    Unconfirmed(String),
    /// Removing the managed keys on deletion failed.
    #[error("cleanup failed: {0}")]
    Cleanup(#[from] CleanupError),
    /// Adding or removing the finalizer failed.
    #[error("cannot update the finalizer: {0}")]
    Finalizer(#[source] kube::Error),
    /// The object cannot carry a finalizer (no name; kube-runtime's invalid finalizer path).
    #[error("{0}")]
    InvalidObject(String),
}

/// Why the managed keys could not be removed on deletion.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    /// The object's connection refused (missing, not Ready, not allowed): no ZITADEL call.
    #[error("{0}")]
    Refused(Refusal),
    /// ZITADEL failed.
    #[error(transparent)]
    Zitadel(#[from] ZitadelError),
}

impl CleanupError {
    /// Why it failed (the metric label of `zitadel_metadata_cleanup_failures_total`).
    pub fn reason(&self) -> crate::reason::Reason {
        match self {
            CleanupError::Refused(r) => r.reason,
            CleanupError::Zitadel(e) => e.reason(),
        }
    }

    /// Whether retrying later may succeed without anyone acting.
    pub fn is_transient(&self) -> bool {
        match self {
            CleanupError::Refused(r) => r.transient,
            CleanupError::Zitadel(e) => e.is_transient(),
        }
    }
}

impl From<kube::runtime::finalizer::Error<Error>> for Error {
    fn from(e: kube::runtime::finalizer::Error<Error>) -> Self {
        use kube::runtime::finalizer::Error as F;
        match e {
            F::ApplyFailed(e) | F::CleanupFailed(e) => e,
            F::AddFinalizer(e) | F::RemoveFinalizer(e) => Error::Finalizer(e),
            other @ (F::UnnamedObject | F::InvalidFinalizer) => {
                Error::InvalidObject(other.to_string())
            }
        }
    }
}

impl Error {
    /// `Retry-After` from ZITADEL, if the root cause carries one.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Zitadel(e) | Error::Cleanup(CleanupError::Zitadel(e)) => e.retry_after(),
            _ => None,
        }
    }

    /// Whether retrying cannot help (a permanent error): counted as a terminal error.
    pub(crate) fn is_terminal(&self) -> bool {
        match self {
            Error::Zitadel(e) => !e.is_transient(),
            Error::Cleanup(e) => !e.is_transient(),
            Error::InvalidObject(_) => true,
            Error::Kube(_)
            | Error::Unconfirmed(_)
            | Error::ConnectionNotReady(_)
            | Error::ReadBack { .. }
            | Error::Finalizer(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reason::Reason;
    use kube::runtime::finalizer::Error as F;

    #[test]
    fn finalizer_errors_flatten_and_keep_their_retry_facts() {
        let busy = ZitadelError::from_response(429, Some("4"), "slow down");
        let flat: Error = F::ApplyFailed(Error::Zitadel(busy)).into();
        assert_eq!(flat.retry_after(), Some(Duration::from_secs(4)));
        assert!(!flat.is_terminal());
        let refused = CleanupError::Refused(Refusal {
            reason: Reason::ConnectionNotFound,
            message: "gone".into(),
            transient: false,
        });
        let flat: Error = F::CleanupFailed(Error::Cleanup(refused)).into();
        assert!(flat.is_terminal());
        assert_eq!(flat.to_string(), "cleanup failed: ConnectionNotFound: gone");
        let flat: Error = F::<Error>::UnnamedObject.into();
        assert!(matches!(flat, Error::InvalidObject(_)) && flat.is_terminal());
    }
}
