//! The pure core of the reconciler: from (desired, observed, managed keys) to the writes that make
//! ZITADEL match. No I/O here; everything is unit- and property-tested.

use std::collections::{BTreeMap, BTreeSet};

use crate::zitadel::MetadataMap;

/// ZITADEL (gRPC) rejects messages over 4 MiB; keep each bulk-set request well below that.
pub const MAX_SET_BATCH_BYTES: usize = 3 * 1024 * 1024;
/// BulkRemove accepts at most 200 keys.
pub const MAX_REMOVE_BATCH_KEYS: usize = 200;

/// The writes needed to make ZITADEL match the spec.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Keys to set: missing in ZITADEL or holding another value.
    pub set: BTreeMap<String, Vec<u8>>,
    /// Keys to remove: managed by this object, no longer desired, still present in ZITADEL.
    pub remove: BTreeSet<String>,
    /// Desired keys ZITADEL already holds with the desired value.
    pub unchanged: BTreeSet<String>,
}

impl Plan {
    /// No write is needed.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    /// The keys to set, split into bulk requests that each stay under
    /// [`MAX_SET_BATCH_BYTES`] of JSON. Never yields an empty batch.
    pub fn set_batches(&self) -> Vec<Vec<(&str, &[u8])>> {
        let mut batches = Vec::new();
        let mut current: Vec<(&str, &[u8])> = Vec::new();
        let mut size = 0;
        for (key, value) in &self.set {
            let item = encoded_item_size(key, value);
            if !current.is_empty() && size + item > MAX_SET_BATCH_BYTES {
                batches.push(std::mem::take(&mut current));
                size = 0;
            }
            size += item;
            current.push((key.as_str(), value.as_slice()));
        }
        if !current.is_empty() {
            batches.push(current);
        }
        batches
    }

    /// The keys to remove, in bulk requests of at most [`MAX_REMOVE_BATCH_KEYS`] keys.
    pub fn remove_batches(&self) -> Vec<Vec<&str>> {
        let keys: Vec<&str> = self.remove.iter().map(String::as_str).collect();
        keys.chunks(MAX_REMOVE_BATCH_KEYS)
            .map(<[&str]>::to_vec)
            .collect()
    }
}

/// Bytes one `{"key":…,"value":…}` item adds to a BulkSet body (base64 grows values by 4/3;
/// keys are counted at their worst-case JSON escaping).
fn encoded_item_size(key: &str, value: &[u8]) -> usize {
    const OVERHEAD: usize = r#"{"key":"","value":""},"#.len();
    OVERHEAD + key.len() * 6 + value.len().div_ceil(3) * 4
}

/// Compute the writes.
///
/// * set — desired keys that are missing or differ in ZITADEL;
/// * remove — keys in `managed` that are no longer desired and still exist in ZITADEL;
/// * everything else (keys written by someone else, unmanaged keys) is left alone.
pub fn plan(desired: &MetadataMap, observed: &MetadataMap, managed: &BTreeSet<String>) -> Plan {
    let mut out = Plan::default();
    for (key, value) in desired {
        if observed.get(key) == Some(value) {
            out.unchanged.insert(key.clone());
        } else {
            out.set.insert(key.clone(), value.clone());
        }
    }
    out.remove = managed
        .iter()
        .filter(|k| !desired.contains_key(*k) && observed.contains_key(*k))
        .cloned()
        .collect();
    out
}

/// The keys an object claims, with what decides precedence among claimants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// `namespace/name` of the object.
    pub object: String,
    /// Creation time (RFC 3339 or any string that orders like time); `None` sorts last.
    pub created: Option<String>,
    /// The keys the object's spec lists.
    pub keys: BTreeSet<String>,
}

impl Claim {
    fn precedence(&self) -> (bool, Option<&str>, &str) {
        // Objects without a creation time lose; then earlier wins; then name order.
        (
            self.created.is_none(),
            self.created.as_deref(),
            &self.object,
        )
    }
}

/// Keys of `me` that an earlier object on the same target already claims, mapped to that
/// object's `namespace/name`. `others` must hold only live objects on the same target.
pub fn conflicts(me: &Claim, others: &[Claim]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for other in others {
        if other.object == me.object || other.precedence() >= me.precedence() {
            continue;
        }
        for key in me.keys.intersection(&other.keys) {
            let winner = out
                .entry(key.clone())
                .or_insert_with(|| other.object.clone());
            if other.object < *winner {
                *winner = other.object.clone();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map(items: &[(&str, &str)]) -> MetadataMap {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn keys(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn equal_state_plans_nothing() {
        let d = map(&[("a", "1"), ("b", "2")]);
        let p = plan(&d, &d, &keys(&["a", "b"]));
        assert!(p.is_empty());
        assert_eq!(p.unchanged, keys(&["a", "b"]));
        assert!(p.set_batches().is_empty());
        assert!(p.remove_batches().is_empty());
    }

    #[test]
    fn only_changed_and_new_keys_are_set() {
        let desired = map(&[("a", "1"), ("b", "new"), ("c", "3")]);
        let observed = map(&[("a", "1"), ("b", "old")]);
        let p = plan(&desired, &observed, &keys(&["a", "b"]));
        assert_eq!(p.set, map(&[("b", "new"), ("c", "3")]));
        assert!(p.remove.is_empty());
    }

    #[test]
    fn removed_managed_key_is_removed_but_foreign_key_is_not() {
        let desired = map(&[("a", "1")]);
        let observed = map(&[("a", "1"), ("gone", "x"), ("foreign", "y")]);
        let p = plan(&desired, &observed, &keys(&["a", "gone"]));
        assert_eq!(p.remove, keys(&["gone"]));
        assert!(p.set.is_empty());
    }

    #[test]
    fn managed_key_already_absent_is_not_removed() {
        // BulkRemove fails whole on a missing key: never ask for one.
        let p = plan(&map(&[]), &map(&[]), &keys(&["vanished"]));
        assert!(p.is_empty());
    }

    #[test]
    fn adoption_of_equal_values_writes_nothing() {
        let d = map(&[("a", "1")]);
        let p = plan(&d, &map(&[("a", "1")]), &BTreeSet::new());
        assert!(p.is_empty());
    }

    #[test]
    fn large_sets_are_split_under_the_request_limit() {
        let big = vec![b'x'; 500_000];
        let desired: MetadataMap = (0..20).map(|i| (format!("k{i:02}"), big.clone())).collect();
        let p = plan(&desired, &MetadataMap::new(), &BTreeSet::new());
        let batches = p.set_batches();
        assert!(batches.len() > 1);
        let mut seen = 0;
        for batch in &batches {
            assert!(!batch.is_empty());
            let size: usize = batch.iter().map(|(k, v)| encoded_item_size(k, v)).sum();
            assert!(size <= MAX_SET_BATCH_BYTES, "batch of {size} bytes");
            seen += batch.len();
        }
        assert_eq!(seen, 20);
    }

    #[test]
    fn removals_are_chunked_by_200() {
        let managed: BTreeSet<String> = (0..450).map(|i| format!("k{i:03}")).collect();
        let observed: MetadataMap = managed.iter().map(|k| (k.clone(), b"v".to_vec())).collect();
        let p = plan(&MetadataMap::new(), &observed, &managed);
        let sizes: Vec<usize> = p.remove_batches().iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![200, 200, 50]);
    }

    #[test]
    fn earlier_object_wins_a_key() {
        let first = Claim {
            object: "ns/first".into(),
            created: Some("2026-01-01T00:00:00Z".into()),
            keys: keys(&["shared", "a"]),
        };
        let second = Claim {
            object: "ns/second".into(),
            created: Some("2026-01-02T00:00:00Z".into()),
            keys: keys(&["shared", "b"]),
        };
        assert!(conflicts(&first, std::slice::from_ref(&second)).is_empty());
        let lost = conflicts(&second, &[first]);
        assert_eq!(lost.len(), 1);
        assert_eq!(lost.get("shared").map(String::as_str), Some("ns/first"));
    }

    #[test]
    fn same_creation_time_breaks_ties_by_name() {
        let t = Some("2026-01-01T00:00:00Z".to_string());
        let a = Claim {
            object: "ns/a".into(),
            created: t.clone(),
            keys: keys(&["k"]),
        };
        let b = Claim {
            object: "ns/b".into(),
            created: t,
            keys: keys(&["k"]),
        };
        assert!(conflicts(&a, std::slice::from_ref(&b)).is_empty());
        assert_eq!(conflicts(&b, &[a]).len(), 1);
    }

    fn arb_map() -> impl Strategy<Value = MetadataMap> {
        prop::collection::btree_map("[a-e]", prop::collection::vec(0u8..3, 1..3), 0..5)
    }

    proptest! {
        #[test]
        fn applying_the_plan_converges(desired in arb_map(), observed in arb_map(), managed in prop::collection::btree_set("[a-e]", 0..5)) {
            let p = plan(&desired, &observed, &managed);
            // Apply the plan to a copy of ZITADEL's state.
            let mut after = observed.clone();
            for (k, v) in &p.set { after.insert(k.clone(), v.clone()); }
            for k in &p.remove { after.remove(k); }
            // Every desired key now holds its value.
            for (k, v) in &desired { prop_assert_eq!(after.get(k), Some(v)); }
            // Keys neither desired nor managed are untouched (foreign keys never removed).
            for (k, v) in &observed {
                if !desired.contains_key(k) && !managed.contains(k) {
                    prop_assert_eq!(after.get(k), Some(v));
                }
            }
            // Only managed keys are ever removed, and only ones that exist.
            for k in &p.remove {
                prop_assert!(managed.contains(k));
                prop_assert!(observed.contains_key(k));
                prop_assert!(!desired.contains_key(k));
            }
            // Only new or changed keys are set.
            for (k, v) in &p.set { prop_assert_ne!(observed.get(k), Some(v)); }
            // The second pass has nothing to do.
            let managed_after: BTreeSet<String> = desired.keys().cloned().collect();
            prop_assert!(plan(&desired, &after, &managed_after).is_empty());
        }

        #[test]
        fn no_write_when_equal(state in arb_map(), managed in prop::collection::btree_set("[a-e]", 0..5)) {
            let managed: BTreeSet<String> = managed.into_iter().filter(|k| state.contains_key(k)).collect();
            prop_assert!(plan(&state, &state, &managed).is_empty());
        }
    }
}
