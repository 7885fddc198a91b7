//! Why a sync failed.

use super::*;

/// A sync failure.
#[derive(Debug)]
pub enum SyncError {
    /// The spec (or a value read from a source) cannot be sent to ZITADEL.
    Invalid(crd::EntryError),
    /// A referenced Secret/ConfigMap or key does not exist (message names it, never a value).
    SourceMissing(String),
    /// Reading a Secret/ConfigMap failed.
    Kube(kube::Error),
    /// ZITADEL answered with an error.
    Zitadel(ZitadelError),
    /// After a write, ZITADEL did not hold what was sent (keys listed).
    ReadBack(Vec<String>),
    /// The object's connection refused it (transient or not, as the refusal says).
    Refused(Refusal),
    /// The target named in the spec cannot be resolved to exactly one org/user.
    Resolve {
        /// Why.
        reason: Reason,
        /// Human message.
        message: String,
    },
    /// ZITADEL gave an answer that may mean "the target is gone" (`AUTH-Bs7Ds`,
    /// `COMMAND-uXHNj`, `COMMAND-QXPGs`) and [`ZitadelApi::target_exists`] was asked.
    Ambiguous {
        /// The target the answer was about.
        target: Target,
        /// The ambiguous answer.
        cause: ZitadelError,
        /// What the existence check found.
        check: Confirmed,
    },
}

/// What confirming an ambiguous answer found.
#[derive(Debug)]
pub enum Confirmed {
    /// The target is proven gone (Stalled `TargetNotFound`).
    Gone,
    /// The target exists; for a user, the organization it belongs to (when it could be read).
    Exists {
        /// The user's organization, for a user target (`None` for orgs or when unknown).
        user_org: Option<String>,
    },
    /// Existence could not be established either way (retried with backoff).
    Unknown(ZitadelError),
}

impl From<ZitadelError> for SyncError {
    fn from(e: ZitadelError) -> Self {
        SyncError::Zitadel(e)
    }
}

impl From<SourceError> for SyncError {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::Invalid(e) => SyncError::Invalid(e),
            SourceError::Missing(m) => SyncError::SourceMissing(m),
            SourceError::Unreadable(e) => SyncError::Kube(e),
        }
    }
}

impl From<TargetError> for SyncError {
    fn from(e: TargetError) -> Self {
        match e {
            TargetError::Zitadel(e) => SyncError::Zitadel(e),
            TargetError::Unresolved { reason, message } => SyncError::Resolve { reason, message },
        }
    }
}
