//! Test kit for `zitadel-metadata-operator`.
//!
//! * [`emulator`] — a stateful emulator of the ZITADEL APIs the operator uses (Management v1,
//!   v2/v2beta metadata over Connect and REST, the events API), per ZITADEL version profile,
//!   written to the contracts in `shared/`, with request recording and fault injection.
//! * [`controlplane`] — a real `kube-apiserver` + `etcd` started on loopback, envtest-style.
//! * [`bench`] — the performance benchmark (operator binary vs. a per-key baseline).
//! * [`conformance`] — runs the strict decoders of recorded traffic in `tests/conformance/`.
//!
//! Used by the integration and end-to-end tests, the benchmarks and the local demo.

pub mod bench;
pub mod conformance;
pub mod controlplane;
pub mod emulator;
