//! A connection's finalizers: the in-use finalizer on the connection itself and the holder
//! finalizer on the Secrets/ConfigMaps it reads. [`plan`] decides (pure), [`execute`] changes
//! the finalizers through [`Finalizers`].
//!
//! - A live connection carries [`IN_USE`] and holds every Secret/ConfigMap its spec references
//!   (recorded in `status.heldSources` *before* the finalizer is added, so a crash can never
//!   leave a finalizer the operator forgot); one it no longer references is released.
//! - A connection being deleted keeps everything while objects use it ([`usage`]) and reports
//!   them; once the last one is gone it releases its Secrets/ConfigMaps, then its own
//!   finalizer, and Kubernetes deletes it.
//!
//! [`usage`]: crate::controller::usage

use std::collections::BTreeSet;

use crate::connections::build::reference_namespace;
#[cfg(doc)]
use crate::controller::finalizers::IN_USE;
use crate::controller::finalizers::{Finalizers, Held, Presence};
use crate::controller::usage::{User, describe_users};
use crate::crd::ConnectionSettings;
use crate::sources::SourceKind;

/// How many users a message names (the rest are counted).
const NAMED_USERS: usize = 5;

/// What the plan is made from.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// The connection is marked for deletion.
    pub deleting: bool,
    /// It carries [`IN_USE`].
    pub has_finalizer: bool,
    /// Objects holding it (only asked for while deleting).
    pub users: Vec<User>,
    /// `status.heldSources`.
    pub held: BTreeSet<Held>,
    /// The Secrets/ConfigMaps its spec references ([`sources`]).
    pub desired: BTreeSet<Held>,
}

/// What to do, in this order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Add [`IN_USE`] to the connection.
    pub add_finalizer: bool,
    /// Record these in `status.heldSources` before holding anything new.
    pub record: Option<BTreeSet<Held>>,
    /// Hold these (add the connection's holder finalizer).
    pub hold: BTreeSet<Held>,
    /// Release these (remove it).
    pub release: BTreeSet<Held>,
    /// Then remove [`IN_USE`] (only if every release succeeded).
    pub remove_finalizer: bool,
    /// `status.heldSources` afterwards (if every release succeeded).
    pub held_after: BTreeSet<Held>,
    /// Being deleted while in use: the `Terminating` message.
    pub in_use: Option<String>,
}

impl Plan {
    /// The connection goes away after this plan: no probe, no status.
    pub fn finishes(&self) -> bool {
        self.remove_finalizer
    }
}

/// The Secrets/ConfigMaps a connection's settings reference, in the namespaces the operator
/// would read them from. A reference the connection may not read (another namespace) is not held:
/// nothing is read from it either.
pub fn sources(settings: &ConnectionSettings) -> BTreeSet<Held> {
    let own = settings.namespace.as_deref();
    let creds = &settings.endpoint.credentials;
    let ca = settings.endpoint.ca_bundle.as_ref();
    let refs = [
        (SourceKind::Secret, creds.personal_access_token.as_ref()),
        (SourceKind::Secret, creds.jwt_profile.as_ref()),
        (SourceKind::Secret, ca.and_then(|c| c.secret_ref.as_ref())),
        (
            SourceKind::ConfigMap,
            ca.and_then(|c| c.config_map_ref.as_ref()),
        ),
    ];
    refs.into_iter()
        .filter_map(|(kind, r)| {
            let r = r?;
            let ns = reference_namespace(kind, r, own).ok()?;
            Some(Held::source(kind, ns, &r.name))
        })
        .collect()
}

/// Decide what to do with the finalizers (pure).
pub fn plan(facts: &Facts) -> Plan {
    let Facts {
        deleting,
        has_finalizer,
        users,
        held,
        desired,
    } = facts;
    let everything: BTreeSet<Held> = held.union(desired).cloned().collect();
    let record = (!desired.is_subset(held)).then(|| everything.clone());
    let dropped: BTreeSet<Held> = held.difference(desired).cloned().collect();
    match (deleting, users.is_empty()) {
        // Being deleted, nobody needs it (or it is not ours to keep): let everything go.
        (true, true) => Plan {
            release: everything,
            remove_finalizer: *has_finalizer,
            ..Plan::default()
        },
        (true, false) if !has_finalizer => Plan {
            release: everything,
            ..Plan::default()
        },
        // Being deleted while in use: keep serving, say why it stays.
        (true, false) => Plan {
            record,
            hold: desired.clone(),
            release: dropped,
            held_after: desired.clone(),
            in_use: Some(format!(
                "being deleted; it stays until the {} using it are deleted and finished their cleanup (objects with deletionPolicy Orphan do not wait)",
                describe_users(users, NAMED_USERS)
            )),
            ..Plan::default()
        },
        (false, _) => Plan {
            add_finalizer: !has_finalizer,
            record,
            hold: desired.clone(),
            release: dropped,
            held_after: desired.clone(),
            ..Plan::default()
        },
    }
}

/// A Secret/ConfigMap that is being deleted while the connection holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldWhileDeleting {
    /// The object.
    pub object: Held,
    /// Its finalizers (the operator's holders and anyone else's).
    pub finalizers: Vec<String>,
}

/// How [`execute`] went.
#[derive(Debug, Default)]
pub struct Executed {
    /// Held sources that are being deleted (Events say why they stay).
    pub deleting: Vec<HeldWhileDeleting>,
    /// Holds that failed (the connection still works; Events say so).
    pub hold_failures: Vec<(Held, kube::Error)>,
    /// Releases that failed: they stay in `status.heldSources` and are retried.
    pub release_failures: Vec<(Held, kube::Error)>,
    /// `status.heldSources` now.
    pub held: BTreeSet<Held>,
}

/// Hold and release the sources of `plan` with the finalizer `holder` (after the caller added
/// [`IN_USE`] and recorded `plan.record`). A release the operator is forbidden to make is logged
/// and dropped: it could not have added that finalizer either.
pub async fn execute(plan: &Plan, finalizers: &dyn Finalizers, holder: &str) -> Executed {
    let mut done = Executed {
        held: plan.held_after.clone(),
        ..Executed::default()
    };
    for object in &plan.hold {
        match finalizers.ensure(object, holder, true).await {
            Ok(Presence::Present {
                deleting: true,
                finalizers,
            }) => done.deleting.push(HeldWhileDeleting {
                object: object.clone(),
                finalizers,
            }),
            Ok(_) => {}
            Err(e) => done.hold_failures.push((object.clone(), e)),
        }
    }
    for object in &plan.release {
        match finalizers.ensure(object, holder, false).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 403 => {
                tracing::warn!(object = %object, finalizer = holder, error = %s.message,
                    "not allowed to release the finalizer; remove it by hand if it is there");
            }
            Err(e) => {
                done.held.insert(object.clone());
                done.release_failures.push((object.clone(), e));
            }
        }
    }
    done
}

/// Whether the connection's own finalizer may go now: the plan says so and every release
/// succeeded.
pub fn may_remove_finalizer(plan: &Plan, done: &Executed) -> bool {
    plan.remove_finalizer && done.release_failures.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{CaBundle, ConnectionEndpoint, Credentials, SecretKeyRef};
    use crate::testing::{FakeFinalizers, kube_error};

    fn secret(name: &str) -> Held {
        Held::source(SourceKind::Secret, "team", name)
    }

    fn set(items: &[Held]) -> BTreeSet<Held> {
        items.iter().cloned().collect()
    }

    fn user(name: &str) -> User {
        User {
            kind: "OrgMetadata",
            namespace: "team".into(),
            name: name.into(),
        }
    }

    fn key_ref(name: &str, ns: Option<&str>) -> SecretKeyRef {
        SecretKeyRef {
            name: name.into(),
            key: "k".into(),
            namespace: ns.map(str::to_owned),
        }
    }

    #[test]
    fn a_connection_holds_what_its_spec_references_in_the_namespaces_it_reads() {
        let settings = ConnectionSettings {
            endpoint: ConnectionEndpoint {
                url: "https://z".into(),
                ca_bundle: Some(CaBundle {
                    secret_ref: None,
                    config_map_ref: Some(key_ref("ca", None)),
                }),
                tls_server_name: None,
                credentials: Credentials {
                    personal_access_token: Some(key_ref("pat", Some("team"))),
                    jwt_profile: None,
                },
            },
            api: Default::default(),
            namespace: Some("team".into()),
        };
        assert_eq!(
            sources(&settings),
            set(&[
                secret("pat"),
                Held::source(SourceKind::ConfigMap, "team", "ca")
            ])
        );
        // A reference into another namespace is refused when read: nothing to hold there.
        let mut other = settings.clone();
        other.endpoint.credentials.personal_access_token = Some(key_ref("pat", Some("elsewhere")));
        assert_eq!(
            sources(&other),
            set(&[Held::source(SourceKind::ConfigMap, "team", "ca")])
        );
        // A cluster connection names the namespaces.
        let cluster = ConnectionSettings {
            namespace: None,
            endpoint: ConnectionEndpoint {
                ca_bundle: None,
                credentials: Credentials {
                    personal_access_token: None,
                    jwt_profile: Some(key_ref("key", Some("zitadel-system"))),
                },
                ..settings.endpoint
            },
            ..settings
        };
        assert_eq!(
            sources(&cluster),
            set(&[Held::source(SourceKind::Secret, "zitadel-system", "key")])
        );
    }

    #[test]
    fn a_live_connection_adds_its_finalizer_records_then_holds_and_releases_what_it_dropped() {
        let fresh = plan(&Facts {
            desired: set(&[secret("pat")]),
            ..Facts::default()
        });
        assert!(fresh.add_finalizer && !fresh.remove_finalizer);
        assert_eq!(fresh.record, Some(set(&[secret("pat")])));
        assert_eq!(fresh.hold, set(&[secret("pat")]));
        assert!(fresh.release.is_empty() && fresh.in_use.is_none());
        // Steady state: nothing new to record.
        let steady = plan(&Facts {
            has_finalizer: true,
            held: set(&[secret("pat")]),
            desired: set(&[secret("pat")]),
            ..Facts::default()
        });
        assert_eq!(steady.record, None);
        assert!(!steady.add_finalizer);
        // The spec moved to another Secret: record both, hold the new, release the old.
        let moved = plan(&Facts {
            has_finalizer: true,
            held: set(&[secret("old")]),
            desired: set(&[secret("new")]),
            ..Facts::default()
        });
        assert_eq!(moved.record, Some(set(&[secret("new"), secret("old")])));
        assert_eq!(moved.hold, set(&[secret("new")]));
        assert_eq!(moved.release, set(&[secret("old")]));
        assert_eq!(moved.held_after, set(&[secret("new")]));
    }

    #[test]
    fn a_deleted_connection_waits_for_its_users_then_lets_everything_go() {
        let in_use = plan(&Facts {
            deleting: true,
            has_finalizer: true,
            users: vec![user("a"), user("b")],
            held: set(&[secret("pat")]),
            desired: set(&[secret("pat")]),
        });
        assert!(!in_use.remove_finalizer && !in_use.finishes());
        assert_eq!(in_use.hold, set(&[secret("pat")]));
        let message = in_use.in_use.expect("InUse message");
        assert!(
            message.contains("2 objects (OrgMetadata team/a, OrgMetadata team/b)"),
            "{message}"
        );
        let unused = plan(&Facts {
            deleting: true,
            has_finalizer: true,
            users: vec![],
            held: set(&[secret("old")]),
            desired: set(&[secret("pat")]),
        });
        assert!(unused.remove_finalizer && unused.finishes());
        assert_eq!(unused.release, set(&[secret("old"), secret("pat")]));
        assert!(unused.hold.is_empty() && unused.held_after.is_empty());
        // Someone removed our finalizer by hand: release the sources, do not hold anything.
        let taken = plan(&Facts {
            deleting: true,
            has_finalizer: false,
            users: vec![user("a")],
            held: set(&[secret("pat")]),
            desired: set(&[secret("pat")]),
        });
        assert_eq!(taken.release, set(&[secret("pat")]));
        assert!(!taken.remove_finalizer && taken.hold.is_empty());
    }

    #[tokio::test]
    async fn execution_reports_deleting_sources_and_keeps_failed_releases() {
        let fake = FakeFinalizers::default();
        let holder = "zitadelconnection.metadata.zitadel-operator.dev/z";
        fake.put(&secret("pat"), &[], true);
        fake.put(&secret("old"), &[holder], false);
        fake.put(&secret("stuck"), &[holder], false);
        fake.fail(&secret("stuck"), kube_error(500));
        fake.put(&secret("forbidden"), &[holder], false);
        fake.fail(&secret("forbidden"), kube_error(403));
        let plan = Plan {
            hold: set(&[secret("pat"), secret("absent")]),
            release: set(&[secret("old"), secret("stuck"), secret("forbidden")]),
            held_after: set(&[secret("pat")]),
            ..Plan::default()
        };
        let done = execute(&plan, &fake, holder).await;
        // The Secret being deleted could not get the finalizer (the API refuses new ones then).
        assert_eq!(done.deleting.len(), 1);
        assert_eq!(done.deleting[0].object, secret("pat"));
        assert_eq!(fake.finalizers(&secret("old")), Vec::<String>::new());
        assert_eq!(done.release_failures.len(), 1);
        assert_eq!(done.held, set(&[secret("pat"), secret("stuck")]));
        assert!(!may_remove_finalizer(
            &Plan {
                remove_finalizer: true,
                ..Plan::default()
            },
            &done
        ));
    }
}
