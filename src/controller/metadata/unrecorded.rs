//! Keys ZITADEL acknowledged whose status write then failed.
//!
//! `status.managedKeys` is what the operator removes when a key leaves the spec or the object is
//! deleted. A reconcile that wrote keys to ZITADEL and then failed to write the status (the API
//! server refused or timed out) would leave them out of it: had the spec dropped such a key, or
//! the object been deleted, before the next status write landed, the key would stay in ZITADEL
//! with nothing left to remove it. So this process remembers them, per object, until a status
//! write shows them, and every later reconcile and cleanup of the object treats them as managed.
//! (A restart forgets them: the status is then all there is. The next reconcile of an object
//! whose spec still lists such a key records it again.)

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use crate::crd::MetadataStatus;

/// Per object (by uid): the managed keys its status does not show yet.
#[derive(Debug, Default)]
pub struct UnrecordedKeys(Mutex<HashMap<String, BTreeSet<String>>>);

impl UnrecordedKeys {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeSet<String>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `shown` (the status the object carries) with this object's unrecorded keys among its
    /// managed keys: what the reconcile plans and cleans up from.
    /// Borrows `shown` when there are none (the common case: no copy).
    pub fn managed_view<'s>(
        &self,
        uid: &str,
        shown: &'s MetadataStatus,
    ) -> Cow<'s, MetadataStatus> {
        let map = self.lock();
        let Some(keys) = map.get(uid) else {
            return Cow::Borrowed(shown);
        };
        let mut all: BTreeSet<String> = shown.managed_keys.iter().cloned().collect();
        all.extend(keys.iter().cloned());
        let mut view = shown.clone();
        view.managed_keys = all.into_iter().collect();
        Cow::Owned(view)
    }

    /// A status write failed: of `managed` (what the status would have listed), remember those
    /// the object's status (`shown`) does not list. Replaces what was remembered: `managed` was
    /// planned from [`managed_view`](Self::managed_view), so it holds every key still managed.
    pub fn write_failed(&self, uid: &str, managed: &[String], shown: &MetadataStatus) {
        let missing: BTreeSet<String> = managed
            .iter()
            .filter(|k| !shown.managed_keys.contains(k))
            .cloned()
            .collect();
        let mut map = self.lock();
        if missing.is_empty() {
            map.remove(uid);
        } else {
            map.insert(uid.to_owned(), missing);
        }
    }

    /// The object's status now shows every key it manages (a status write landed, or nothing
    /// needed writing), or the object is gone: forget it.
    pub fn forget(&self, uid: &str) {
        self.lock().remove(uid);
    }

    /// Objects with unrecorded keys (for tests and diagnostics).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no object has unrecorded keys.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(keys: &[&str]) -> MetadataStatus {
        MetadataStatus {
            managed_keys: keys.iter().map(|k| k.to_string()).collect(),
            ..Default::default()
        }
    }

    fn strings(keys: &[&str]) -> Vec<String> {
        keys.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn keys_missing_from_the_status_stay_managed_until_a_write_lands() {
        let u = UnrecordedKeys::default();
        let shown = status(&["a"]);
        assert!(matches!(u.managed_view("x", &shown), Cow::Borrowed(_)));
        u.write_failed("x", &strings(&["a", "b", "c"]), &shown);
        assert_eq!(
            u.managed_view("x", &shown).managed_keys,
            strings(&["a", "b", "c"])
        );
        // Another object is not affected.
        assert_eq!(*u.managed_view("y", &shown), shown);
        // A later failure replaces the set (here "c" was removed meanwhile).
        u.write_failed("x", &strings(&["a", "b"]), &shown);
        assert_eq!(
            u.managed_view("x", &shown).managed_keys,
            strings(&["a", "b"])
        );
        // A failure that leaves nothing unrecorded, or a landed write, forgets the object.
        u.write_failed("x", &strings(&["a"]), &shown);
        assert!(u.is_empty());
        u.write_failed("x", &strings(&["a", "b"]), &shown);
        assert_eq!(u.len(), 1);
        u.forget("x");
        assert_eq!(*u.managed_view("x", &shown), shown);
    }
}
