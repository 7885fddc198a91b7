//! What the default connection's credential is known to be, shared with `/readyz` and metrics.

use super::*;

/// What the default connection's credential is known to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialStatus {
    /// Not looked at yet.
    Unknown,
    /// Missing or unreadable (why, naming the Secret and key or the file).
    Unavailable(String),
    /// Read, not yet checked by ZITADEL (or ZITADEL could not be asked).
    Read,
    /// ZITADEL accepted it.
    Accepted,
    /// ZITADEL rejected it (its answer).
    Rejected(String),
}

impl CredentialStatus {
    /// The `state` label of the metric.
    pub fn label(&self) -> &'static str {
        match self {
            CredentialStatus::Unknown => "unknown",
            CredentialStatus::Unavailable(_) => "unavailable",
            CredentialStatus::Read => "read",
            CredentialStatus::Accepted => "accepted",
            CredentialStatus::Rejected(_) => "rejected",
        }
    }

    /// Every label, for the metric's series.
    pub const LABELS: [&'static str; 5] =
        ["unknown", "unavailable", "read", "accepted", "rejected"];
}

/// The default connection's credential state, shared with `/readyz`.
#[derive(Debug)]
pub struct CredentialState {
    /// Where the credential is (`Secret ns/name key "token" (--token-secret)`, `file …`).
    pub source: String,
    status: StdMutex<CredentialStatus>,
}

impl CredentialState {
    /// Unknown, for `source`.
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            status: StdMutex::new(CredentialStatus::Unknown),
        }
    }

    /// The status now.
    pub fn get(&self) -> CredentialStatus {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Record `status`; returns the previous one.
    pub fn set(&self, status: CredentialStatus) -> CredentialStatus {
        std::mem::replace(
            &mut *self.status.lock().unwrap_or_else(PoisonError::into_inner),
            status,
        )
    }

    /// Why the default connection cannot work at all (its credential is unavailable), for
    /// `/readyz`; `None` otherwise.
    pub fn problem(&self) -> Option<String> {
        match self.get() {
            CredentialStatus::Unavailable(why) => Some(format!(
                "default connection: credentials unavailable: {why}"
            )),
            _ => None,
        }
    }
}
