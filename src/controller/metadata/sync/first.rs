//! Which new objects this process has already sent a first write without listing before it.

use std::collections::HashSet;
use std::sync::Mutex;

/// The new objects (by uid) whose first bulk set went out without a listing before it, until
/// their status shows that sync. A reconcile that reads such an object from a cache that does
/// not show the status written yet (or after a failed status write) lists first, so an
/// acknowledged write is never sent a second time.
#[derive(Debug, Default)]
pub struct FirstWrites(Mutex<HashSet<String>>);

impl FirstWrites {
    /// Whether the sync of the object `uid` may skip the listing before its first write: the
    /// operator has [never reported](super::never_reported) on it and this process has not
    /// skipped it for this object before. Records the skip; forgets the object once its status
    /// reports something.
    pub fn may_skip_listing(&self, uid: &str, never_reported: bool) -> bool {
        let mut seen = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if never_reported {
            seen.insert(uid.to_owned())
        } else {
            seen.remove(uid);
            false
        }
    }

    /// The object is gone (or being deleted): forget it.
    pub fn forget(&self, uid: &str) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_sync_of_a_new_object_skips_the_listing() {
        let first = FirstWrites::default();
        assert!(first.may_skip_listing("a", true));
        // A stale cache (status not seen yet): list first.
        assert!(!first.may_skip_listing("a", true));
        // The status shows the sync: forgotten, and never skipped again while it reports.
        assert!(!first.may_skip_listing("a", false));
        assert!(first.0.lock().expect("lock").is_empty());
        assert!(first.may_skip_listing("b", true));
        first.forget("b");
        assert!(first.0.lock().expect("lock").is_empty());
    }
}
