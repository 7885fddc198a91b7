//! The guards between an object and its connection (pure): which namespaces and organizations a
//! `ClusterZitadelConnection` admits, and whether a connection is Ready — and if not, whether
//! waiting helps.

use std::collections::BTreeMap;

use kube::core::{Selector, SelectorExt};

use super::{AllowedOrgs, Refusal};
use crate::crd::{ConnectionStatus, NamespaceRule};
use crate::reason::Reason;
use crate::status;

/// The guard of a ClusterZitadelConnection: `None` when no rule matches the namespace, else the
/// organizations the matching rules allow (union).
pub fn evaluate_rules(
    rules: &[NamespaceRule],
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Option<AllowedOrgs> {
    let mut ids: Vec<String> = Vec::new();
    let mut matched = false;
    for rule in rules {
        let by_name = rule.names.is_empty() || rule.names.iter().any(|n| n == namespace);
        let by_selector = match &rule.selector {
            None => true,
            Some(sel) => match Selector::try_from(sel.clone()) {
                Ok(selector) => selector.matches(labels),
                // An invalid selector matches nothing.
                Err(_) => false,
            },
        };
        if by_name && by_selector && (!rule.names.is_empty() || rule.selector.is_some()) {
            matched = true;
            if rule.organization_ids.iter().any(|i| i == "*") {
                return Some(AllowedOrgs::Any);
            }
            ids.extend(rule.organization_ids.iter().cloned());
        }
    }
    matched.then(|| {
        ids.sort();
        ids.dedup();
        AllowedOrgs::Only(ids)
    })
}

/// Ready=True for the current generation.
pub fn is_ready(status: &ConnectionStatus, generation: Option<i64>) -> bool {
    status::find(&status.conditions, status::READY).is_some_and(|c| c.status == "True")
        && status.observed_generation == generation
}

/// Ready=True for the current generation, or — for a connection being deleted — for the
/// generation before: marking an object for deletion bumps its generation by one without
/// changing its spec, and a connection being deleted must keep serving its objects' cleanup.
pub fn is_usable(status: &ConnectionStatus, generation: Option<i64>, deleting: bool) -> bool {
    is_ready(status, generation)
        || (deleting && is_ready(status, generation.map(|g| g.saturating_sub(1))))
}

/// `Ok` when the connection `name` is usable ([`is_usable`]); else a `ConnectionNotReady`
/// refusal that is transient when waiting helps: the connection was not probed yet (or not since
/// its last change), or its last probe failed on a transient ZITADEL error, which the probe
/// records as `Reconciling=True`. Bad credentials, TLS or permissions do not clear by waiting.
pub fn check_ready(
    name: &str,
    status: &ConnectionStatus,
    generation: Option<i64>,
    deleting: bool,
) -> Result<(), Refusal> {
    if is_usable(status, generation, deleting) {
        return Ok(());
    }
    let ready = status::find(&status.conditions, status::READY);
    let why = ready
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_else(|| "not probed yet".into());
    let waiting =
        status::find(&status.conditions, status::RECONCILING).is_some_and(|c| c.status == "True");
    Err(Refusal {
        reason: Reason::ConnectionNotReady,
        message: format!("{name} is not Ready ({why})"),
        transient: status.observed_generation != generation || ready.is_none() || waiting,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};

    fn rule(names: &[&str], selector: Option<(&str, &str)>, orgs: &[&str]) -> NamespaceRule {
        NamespaceRule {
            names: names.iter().map(|s| s.to_string()).collect(),
            selector: selector.map(|(k, v)| LabelSelector {
                match_labels: Some(BTreeMap::from([(k.to_string(), v.to_string())])),
                ..Default::default()
            }),
            organization_ids: orgs.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn labels(items: &[(&str, &str)]) -> BTreeMap<String, String> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_rules_allow_nothing() {
        assert_eq!(evaluate_rules(&[], "team-a", &labels(&[])), None);
    }

    #[test]
    fn names_and_selectors_grant_listed_orgs() {
        let rules = vec![
            rule(&["team-a"], None, &["1"]),
            rule(&[], Some(("tenant", "b")), &["2", "3"]),
            rule(&["team-c"], Some(("tier", "prod")), &["*"]),
        ];
        assert_eq!(
            evaluate_rules(&rules, "team-a", &labels(&[])),
            Some(AllowedOrgs::Only(vec!["1".into()]))
        );
        assert_eq!(
            evaluate_rules(&rules, "anything", &labels(&[("tenant", "b")])),
            Some(AllowedOrgs::Only(vec!["2".into(), "3".into()]))
        );
        // names AND selector
        assert_eq!(evaluate_rules(&rules, "team-c", &labels(&[])), None);
        assert_eq!(
            evaluate_rules(&rules, "team-c", &labels(&[("tier", "prod")])),
            Some(AllowedOrgs::Any)
        );
        assert_eq!(
            evaluate_rules(&rules, "other", &labels(&[("tenant", "x")])),
            None
        );
        // Several matching rules: union.
        let both = evaluate_rules(&rules, "team-a", &labels(&[("tenant", "b")])).expect("allowed");
        assert!(both.allows("1") && both.allows("3") && !both.allows("4"));
    }

    fn probed(ready: &str, reason: Reason, reconciling: Option<&str>) -> ConnectionStatus {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let mut conditions = vec![status::condition(
            &[],
            status::READY,
            ready,
            reason,
            "m",
            Some(1),
            &now,
        )];
        if let Some(r) = reconciling {
            conditions.push(status::condition(
                &[],
                status::RECONCILING,
                r,
                reason,
                "m",
                Some(1),
                &now,
            ));
        }
        ConnectionStatus {
            observed_generation: Some(1),
            conditions,
            ..Default::default()
        }
    }

    #[test]
    fn readiness_says_whether_waiting_helps() {
        let ready = probed("True", Reason::Connected, Some("False"));
        assert!(check_ready("c", &ready, Some(1), false).is_ok());
        // Spec changed since the probe: pending.
        let pending = check_ready("c", &ready, Some(2), false).expect_err("not probed");
        assert!(pending.transient);
        // Marked for deletion (generation + 1, same spec): still usable for the cleanup…
        assert!(check_ready("c", &ready, Some(2), true).is_ok());
        // …but not after a further spec change.
        assert!(check_ready("c", &ready, Some(3), true).is_err());
        // Never probed.
        let none =
            check_ready("c", &ConnectionStatus::default(), Some(1), false).expect_err("none");
        assert!(none.transient && none.message.contains("not probed yet"));
        // The probe said it is waiting for ZITADEL.
        let outage = probed("False", Reason::ZitadelUnavailable, Some("True"));
        assert!(
            check_ready("c", &outage, Some(1), false)
                .expect_err("down")
                .transient
        );
        // Bad credentials (and a status written before probes recorded Reconciling) stall.
        for status in [
            probed("False", Reason::SecretNotFound, Some("False")),
            probed("False", Reason::ZitadelUnavailable, None),
        ] {
            let refusal = check_ready("c", &status, Some(1), false).expect_err("refused");
            assert_eq!(refusal.reason, Reason::ConnectionNotReady);
            assert!(!refusal.transient);
        }
    }
}
