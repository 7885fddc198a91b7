//! Label sets of the families and the histogram buckets.

use super::*;

/// Declares the label set of a family: a struct whose fields are the label names.
macro_rules! label_set {
    ($(#[$doc:meta])* $name:ident { $($label:ident: $ty:ty),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        pub(super) struct $name {
            $(pub(super) $label: $ty,)+
        }
    };
}

label_set!(ControllerLabels { controller: &'static str });
label_set!(ReconcileLabels { controller: &'static str, result: &'static str });
label_set!(CleanupLabels { controller: &'static str, reason: &'static str });
label_set!(RequestLabels { operation: &'static str, code: String });
label_set!(OperationLabels { operation: &'static str });
label_set!(ApiLabels { service: &'static str, api: &'static str });
label_set!(ObjectLabels { kind: String, condition: &'static str });
label_set!(DriftModeLabels { connection_kind: &'static str, mode: &'static str });
label_set!(ResultLabels { result: &'static str });
label_set!(VerdictLabels { verdict: &'static str });
label_set!(LeaseLabels { name: String });
label_set!(
    /// The default connection's credential: where it is (one value per process) and its state.
    CredentialLabels { source: String, state: &'static str }
);

pub(super) type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub(super) fn reconcile_histogram() -> Histogram {
    // 5 ms … ~82 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

pub(super) fn request_histogram() -> Histogram {
    // 5 ms … ~41 s (the request timeout defaults to 30 s).
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}
