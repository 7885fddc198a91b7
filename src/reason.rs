//! Every PascalCase reason the operator writes into a condition or an Event, in one enum.
//!
//! Conditions, Events, the metrics wrapper and the error mapping all name a [`Reason`]; no other
//! place spells a reason as a string. Each reason says whether it always means "retry with
//! backoff, it clears by itself" ([`Reason::is_transient`]) or "stuck until someone acts"
//! ([`Reason::is_stalled`]). A few are neither on their own (`ConnectionNotReady`,
//! `CleanupFailed`, `ZitadelRejected`, `TlsVerificationFailed`, …): whoever produces them decides
//! from the data at hand (the error, the refusal) and records that in the
//! [`Outcome`](crate::status::Outcome) it builds.

/// How a reason classifies on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// Always clears without anyone acting: Reconciling, retried with backoff.
    Transient,
    /// Always needs someone to act: Stalled.
    Stalled,
    /// Neither on its own: settled states (Synced, Drifted…), Events, or reasons whose
    /// transience the producer decides from data.
    Neither,
}

macro_rules! reasons {
    ($($(#[doc = $doc:literal])* $name:ident => $class:ident,)*) => {
        /// A PascalCase reason of a condition or an Event.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Reason {
            $($(#[doc = $doc])* $name,)*
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [Reason] = &[$(Reason::$name,)*];

            /// The PascalCase word written into conditions and Events.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)*
                }
            }

            const fn class(self) -> Class {
                match self {
                    $(Reason::$name => Class::$class,)*
                }
            }
        }
    };
}

reasons! {
    // Metadata objects: settled states (Drifted stalls).
    /// ZITADEL matches the spec (Ready=True).
    Synced => Neither,
    /// driftPolicy `Report` found differences (Stalled: only a person can resolve it; and the
    /// `Drifted` condition).
    Drifted => Stalled,
    /// The `Drifted` condition is False: ZITADEL matches the spec.
    InSync => Neither,
    /// `spec.suspend` is true.
    Suspended => Neither,

    // Metadata objects: the user must act.
    /// The spec is invalid (e.g. a value over ZITADEL's byte limit).
    InvalidSpec => Stalled,
    /// Another object already manages one of the keys on the same target.
    KeyConflict => Stalled,
    /// A `valueFrom` Secret/ConfigMap or key does not exist.
    ValueSourceNotFound => Stalled,
    /// No org/user matches the name given in the spec.
    TargetNotFound => Stalled,
    /// Several orgs/users match the name given in the spec.
    TargetAmbiguous => Stalled,
    /// The user is not in the given organization (or does not exist).
    UserNotFound => Stalled,
    /// ZITADEL answered 404 (never read as "target gone" unless it is the proof of
    /// `ZitadelApi::target_exists`).
    ZitadelNotFound => Stalled,
    /// The instance has no route for the API in use (a connection pinned to v1 on ZITADEL v5,
    /// or to v2 before it existed); in `Auto` mode the client already probed again.
    ZitadelApiUnavailable => Stalled,
    /// gRPC refused a message over its 4 MiB limit even at the smallest size.
    ZitadelMessageTooLarge => Stalled,
    /// ZITADEL answered 403.
    ZitadelPermissionDenied => Stalled,
    /// ZITADEL answered 401.
    ZitadelUnauthenticated => Stalled,
    /// An answer that is not the documented JSON, or larger than the client reads.
    ZitadelBadResponse => Stalled,
    /// The bearer token could not be read.
    CredentialsUnavailable => Stalled,
    /// The referenced connection does not exist (or no default connection is configured).
    ConnectionNotFound => Stalled,
    /// The connection does not allow this namespace or organization.
    TargetNotAllowed => Stalled,

    // Metadata objects: clears by itself.
    /// ZITADEL answered 5xx.
    ZitadelUnavailable => Transient,
    /// ZITADEL answered 429.
    ZitadelRateLimited => Transient,
    /// No answer from ZITADEL in time.
    ZitadelTimeout => Transient,
    /// ZITADEL cannot be reached (connection refused, reset, DNS…).
    ZitadelUnreachable => Transient,
    /// Someone else removed a key while the operator was removing keys.
    ConcurrentMetadataChange => Transient,
    /// `AUTH-Bs7Ds`: ZITADEL could not resolve the organization (it does not exist, or its
    /// lookup failed); never proof that it is gone.
    OrganizationLookupFailed => Transient,
    /// A paged listing did not add up (ZITADEL reported more keys than it returned).
    ZitadelListingIncomplete => Transient,
    /// ZITADEL acknowledged a write but the read-back shows other values.
    ReadBackMismatch => Transient,
    /// Reading a `valueFrom` Secret/ConfigMap from the Kubernetes API failed.
    SourceUnreadable => Transient,

    // Decided by the producer from data.
    /// Any other ZITADEL refusal (400, 409…): transient only for 409 Aborted.
    ZitadelRejected => Neither,
    /// ZITADEL's certificate is not trusted or not valid for the name. An object's own call
    /// retries (a rotation may be in progress); a connection probe failing on it stalls the
    /// connection's objects (add `caBundle` / `tlsServerName`).
    TlsVerificationFailed => Neither,
    /// The connection exists but is not Ready: transient while its probe is pending or failed
    /// on a transient ZITADEL error, stalled otherwise.
    ConnectionNotReady => Neither,
    /// Removing managed keys during deletion failed (transient or not, as the cause); the
    /// finalizer stays until the keys are removed, the target is proven gone, or
    /// `deletionPolicy` is `Orphan`.
    CleanupFailed => Neither,
    /// Whether the organization or user still exists could not be established (it is
    /// invisible to the service user, and ZITADEL does not say why): after an ambiguous answer
    /// (`AUTH-Bs7Ds`, `COMMAND-uXHNj`) the sync retries with backoff rather than call the
    /// target gone.
    TargetExistenceUnknown => Neither,
    /// The object is being deleted and its managed keys are being removed (Reconciling=True;
    /// the message counts keys removed and remaining).
    Deleting => Neither,

    // Events.
    /// Keys were set (Event).
    MetadataSet => Neither,
    /// Keys were removed (Event).
    MetadataRemoved => Neither,
    /// Cleanup found the target gone: nothing to remove (Event).
    TargetGone => Neither,

    // Connections.
    /// The authenticated probe succeeded.
    Connected => Neither,
    /// A connection's Secret/ConfigMap or a key in it is missing.
    SecretNotFound => Stalled,
    /// A connection's credentials are malformed.
    InvalidCredentials => Stalled,
    /// Reading a connection's Secret/ConfigMap from the Kubernetes API failed.
    SecretUnreadable => Neither,
    /// The HTTP client cannot be built from the connection's settings (e.g. a bad CA bundle).
    InvalidSettings => Stalled,
    /// A connection (or a Secret it reads) is being deleted while objects still use it: it
    /// stays until they are gone or finished their cleanup (condition `Terminating`, Events).
    InUse => Neither,
    /// The operator could not add or remove one of its finalizers on a Secret/ConfigMap (Event).
    FinalizerFailed => Neither,
    /// A connection picked up changed Secrets/ConfigMaps (Event; names them with their
    /// resourceVersion, never their content).
    CredentialsChanged => Neither,
    /// ZITADEL accepted a connection's credentials for the first time since they changed
    /// (Event).
    CredentialsAccepted => Neither,
    /// ZITADEL rejected a connection's new credentials (Event).
    CredentialsRejected => Neither,
}

impl Reason {
    /// Whether this reason always names a condition that clears without anyone acting
    /// (Reconciling=True, retried with backoff).
    pub const fn is_transient(self) -> bool {
        matches!(self.class(), Class::Transient)
    }

    /// Whether this reason always names a condition someone must fix (Stalled=True).
    pub const fn is_stalled(self) -> bool {
        matches!(self.class(), Class::Stalled)
    }

    /// The reason spelled `s`, if it is one of ours.
    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.iter().copied().find(|r| r.as_str() == s)
    }
}

display_as_str!(Reason);

impl AsRef<str> for Reason {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for Reason {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_pascal_case_words() {
        let mut seen = std::collections::BTreeSet::new();
        for r in Reason::ALL {
            let s = r.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                s.chars().next().is_some_and(|c| c.is_ascii_uppercase()),
                "{s}"
            );
            assert!(s.chars().all(|c| c.is_ascii_alphanumeric()), "{s}");
            assert_eq!(Reason::parse(s), Some(*r));
            assert_eq!(*r, s);
        }
        assert_eq!(Reason::parse("NoSuchReason"), None);
    }

    #[test]
    fn no_reason_is_both_transient_and_stalled() {
        for r in Reason::ALL {
            assert!(!(r.is_transient() && r.is_stalled()), "{r}");
        }
        assert!(Reason::ZitadelUnavailable.is_transient());
        assert!(Reason::KeyConflict.is_stalled());
        assert!(!Reason::ConnectionNotReady.is_transient());
        assert!(!Reason::ConnectionNotReady.is_stalled());
    }
}
