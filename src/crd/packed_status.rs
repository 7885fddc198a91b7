//! The compact form of a cached object's status: the parts only the reconcile reads
//! (`managedKeys`, `observedSourceVersions`, the last write's details, the conditions' messages)
//! in one buffer; what the readers of the caches use stays as it is (the ids, the generation,
//! the count, each condition's type, status and reason).
//!
//! Layout: a flag byte ([`flags`]) and the write details it announces; the managed keys and the
//! source versions, each as a count and strings; then per condition a marker (the message is the
//! previous condition's, or a string follows). Strings are written as in [`super::packed`].

use super::MetadataStatus;
use super::packed::{Reader, put_len, put_str};

/// Bits of the flag byte.
mod flags {
    pub const SEQUENCE: u8 = 1;
    pub const CHANGE_DATE: u8 = 1 << 1;
    pub const RESOURCE_OWNER: u8 = 1 << 2;
}

/// Marker of a condition whose message equals the previous condition's (the kstatus conditions
/// of one outcome share it).
const SAME_MESSAGE: u8 = 0;
/// Marker of a condition whose message follows.
const OWN_MESSAGE: u8 = 1;

/// What [`MetadataStatus::pack`] moved out of a status. Only `pack` makes one, so the buffer is
/// always well formed.
#[derive(Clone, PartialEq, Eq)]
pub struct PackedStatus {
    buf: Box<[u8]>,
}

/// Sizes only (the managed keys are not secret, but keep cached copies' output short).
impl std::fmt::Debug for PackedStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedStatus")
            .field("bytes", &self.buf.len())
            .finish()
    }
}

impl MetadataStatus {
    /// Move the parts only the reconcile reads into one buffer (the fields then empty; see the
    /// module's documentation). A packed status must be [`MetadataStatus::unpack`]ed before it
    /// is compared or written; no-op when already packed.
    pub fn pack(&mut self) {
        if self.packed.is_some() {
            return;
        }
        let mut buf = Vec::new();
        let details = [
            (self.sequence.take(), flags::SEQUENCE),
            (self.change_date.take(), flags::CHANGE_DATE),
            (self.resource_owner.take(), flags::RESOURCE_OWNER),
        ];
        let flag = details
            .iter()
            .filter(|(value, _)| value.is_some())
            .fold(0, |flag, (_, bit)| flag | bit);
        buf.push(flag);
        for value in details.iter().filter_map(|(value, _)| value.as_deref()) {
            put_str(&mut buf, value);
        }
        for list in [
            std::mem::take(&mut self.managed_keys),
            std::mem::take(&mut self.observed_source_versions),
        ] {
            put_len(&mut buf, list.len());
            for item in &list {
                put_str(&mut buf, item);
            }
        }
        let mut previous: Option<String> = None;
        for condition in &mut self.conditions {
            let message = std::mem::take(&mut condition.message);
            if previous.as_ref() == Some(&message) {
                buf.push(SAME_MESSAGE);
            } else {
                buf.push(OWN_MESSAGE);
                put_str(&mut buf, &message);
                previous = Some(message);
            }
        }
        self.packed = Some(PackedStatus {
            buf: buf.into_boxed_slice(),
        });
    }

    /// Restore what [`MetadataStatus::pack`] moved (no-op when not packed).
    pub fn unpack(&mut self) {
        if let Some(packed) = self.packed.take() {
            let restored = self.restore(&mut Reader(&packed.buf));
            // Unreachable: only `pack` writes the buffer.
            debug_assert!(restored.is_some(), "malformed packed status");
        }
    }

    fn restore(&mut self, reader: &mut Reader<'_>) -> Option<()> {
        let flag = reader.byte()?;
        self.sequence = reader.text(flag & flags::SEQUENCE != 0)?;
        self.change_date = reader.text(flag & flags::CHANGE_DATE != 0)?;
        self.resource_owner = reader.text(flag & flags::RESOURCE_OWNER != 0)?;
        for list in [&mut self.managed_keys, &mut self.observed_source_versions] {
            let n = reader.len()?;
            *list = Vec::with_capacity(n);
            for _ in 0..n {
                list.push(reader.str()?.to_owned());
            }
        }
        let mut previous = String::new();
        for condition in &mut self.conditions {
            if reader.byte()? == OWN_MESSAGE {
                previous = reader.str()?.to_owned();
            }
            condition.message = previous.clone();
        }
        Some(())
    }

    /// Whether [`MetadataStatus::pack`] moved parts of this status into a buffer.
    pub fn is_packed(&self) -> bool {
        self.packed.is_some()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    use super::*;

    fn condition(type_: &str, status: &str, message: &str) -> Condition {
        Condition {
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            message: message.into(),
            observed_generation: Some(3),
            reason: "Synced".into(),
            status: status.into(),
            type_: type_.into(),
        }
    }

    fn full() -> MetadataStatus {
        MetadataStatus {
            observed_generation: Some(3),
            sequence: Some("42".into()),
            change_date: None,
            resource_owner: Some("1".into()),
            organization_id: Some("1".into()),
            managed_keys: (0..130).map(|i| format!("key-{i}-ключ")).collect(),
            observed_source_versions: vec!["Secret/creds@7".into()],
            user_id: Some("2".into()),
            managed_key_count: Some(130),
            conditions: vec![
                condition("Ready", "True", "10 key(s) in sync"),
                condition("Reconciling", "False", "10 key(s) in sync"),
                condition("Stalled", "False", "10 key(s) in sync"),
                condition("Drifted", "False", ""),
                condition("Other", "False", "x".repeat(300).as_str()),
            ],
            packed: None,
        }
    }

    #[test]
    fn unpack_restores_exactly_what_pack_moved() {
        for status in [full(), MetadataStatus::default()] {
            let mut packed = status.clone();
            packed.pack();
            assert!(packed.is_packed());
            assert_ne!(packed, status);
            packed.pack();
            packed.unpack();
            assert_eq!(packed, status);
        }
    }

    #[test]
    fn what_the_caches_readers_use_stays_in_place() {
        let status = full();
        let mut packed = status.clone();
        packed.pack();
        assert!(packed.managed_keys.is_empty() && packed.sequence.is_none());
        assert_eq!(packed.organization_id, status.organization_id);
        assert_eq!(packed.user_id, status.user_id);
        assert_eq!(packed.observed_generation, status.observed_generation);
        assert_eq!(packed.managed_key_count, status.managed_key_count);
        let kept = |s: &MetadataStatus| -> Vec<(String, String, String, Option<i64>)> {
            s.conditions
                .iter()
                .map(|c| {
                    let c = c.clone();
                    (c.type_, c.status, c.reason, c.observed_generation)
                })
                .collect()
        };
        assert_eq!(kept(&packed), kept(&status));
        assert!(packed.conditions.iter().all(|c| c.message.is_empty()));
    }
}
