//! The compact form of a cached object's status: everything but what the readers of the caches
//! use as plain fields (the ids, `observedGeneration`, `managedKeyCount`) in one buffer. The
//! conditions are packed too (at 10,000 objects their `Vec`s and small strings took ~7 MiB);
//! those readers see a condition's status and reason through [`MetadataStatus::condition`],
//! which reads either form.
//!
//! Layout: the conditions (a count, then per condition its type, status and reason, a marker —
//! the message is the previous condition's, or a string follows —, its `observedGeneration` and
//! its `lastTransitionTime`), first so that [`MetadataStatus::condition`] finds them without
//! walking the rest; a flag byte ([`flags`]) and the write details it announces; the managed
//! keys and the source versions, each as a count and strings. Strings are written as in
//! [`super::packed`], numbers as little-endian bytes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

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

/// Sizes only (keeps cached copies' debug output short).
impl std::fmt::Debug for PackedStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedStatus")
            .field("bytes", &self.buf.len())
            .finish()
    }
}

/// What the readers of cached objects see of one condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConditionView<'a> {
    /// `True`, `False` or `Unknown`.
    pub status: &'a str,
    /// The reason (a [`crate::reason::Reason`] of this operator).
    pub reason: &'a str,
}

impl MetadataStatus {
    /// The condition of type `type_`, packed or not.
    pub fn condition(&self, type_: &str) -> Option<ConditionView<'_>> {
        match &self.packed {
            Some(packed) => find_packed(&mut Reader(&packed.buf), type_),
            None => self
                .conditions
                .iter()
                .find(|c| c.type_ == type_)
                .map(|c| ConditionView {
                    status: &c.status,
                    reason: &c.reason,
                }),
        }
    }

    /// Move everything but the ids, `observedGeneration` and `managedKeyCount` into one buffer
    /// (the fields then empty; see the module's documentation). A packed status must be
    /// [`MetadataStatus::unpack`]ed before it is compared or written; no-op when already packed.
    /// Kept packed only when the buffer restores the status exactly (checked here, in release
    /// builds too: the reconcile decides from `managedKeys` which keys it removes from ZITADEL);
    /// otherwise the status stays as it is.
    pub fn pack(&mut self) {
        if self.packed.is_some() {
            return;
        }
        let original = self.clone();
        self.pack_unchecked();
        let mut check = self.clone();
        check.unpack();
        if check != original {
            tracing::error!("a status could not be packed losslessly; it is cached as it is");
            *self = original;
        }
    }

    fn pack_unchecked(&mut self) {
        let mut buf = Vec::new();
        put_len(&mut buf, self.conditions.len());
        let mut previous: Option<String> = None;
        for c in std::mem::take(&mut self.conditions) {
            for text in [&c.type_, &c.status, &c.reason] {
                put_str(&mut buf, text);
            }
            if previous.as_ref() == Some(&c.message) {
                buf.push(SAME_MESSAGE);
            } else {
                buf.push(OWN_MESSAGE);
                put_str(&mut buf, &c.message);
                previous = Some(c.message);
            }
            match c.observed_generation {
                Some(generation) => {
                    buf.push(1);
                    buf.extend_from_slice(&generation.to_le_bytes());
                }
                None => buf.push(0),
            }
            let at = c.last_transition_time.0;
            buf.extend_from_slice(&at.as_second().to_le_bytes());
            buf.extend_from_slice(&at.subsec_nanosecond().to_le_bytes());
        }
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
        let n = reader.len()?;
        let mut conditions = Vec::with_capacity(n);
        let mut message = String::new();
        for _ in 0..n {
            let (type_, status, reason) = (reader.str()?, reader.str()?, reader.str()?);
            if reader.byte()? == OWN_MESSAGE {
                message = reader.str()?.to_owned();
            }
            let observed_generation = match reader.byte()? {
                0 => None,
                _ => Some(i64::from_le_bytes(reader.take(8)?.try_into().ok()?)),
            };
            let seconds = i64::from_le_bytes(reader.take(8)?.try_into().ok()?);
            let nanos = i32::from_le_bytes(reader.take(4)?.try_into().ok()?);
            let at = k8s_openapi::jiff::Timestamp::new(seconds, nanos).ok()?;
            conditions.push(Condition {
                last_transition_time: Time(at),
                message: message.clone(),
                observed_generation,
                reason: reason.to_owned(),
                status: status.to_owned(),
                type_: type_.to_owned(),
            });
        }
        self.conditions = conditions;
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
        Some(())
    }

    /// Whether [`MetadataStatus::pack`] moved parts of this status into a buffer.
    pub fn is_packed(&self) -> bool {
        self.packed.is_some()
    }
}

/// The condition of type `type_` in a packed status's conditions.
fn find_packed<'a>(reader: &mut Reader<'a>, type_: &str) -> Option<ConditionView<'a>> {
    for _ in 0..reader.len()? {
        let (this, status, reason) = (reader.str()?, reader.str()?, reader.str()?);
        if this == type_ {
            return Some(ConditionView { status, reason });
        }
        if reader.byte()? == OWN_MESSAGE {
            reader.str()?;
        }
        if reader.byte()? != 0 {
            reader.take(8)?;
        }
        reader.take(12)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    use super::*;

    fn condition(type_: &str, status: &str, message: &str) -> Condition {
        Condition {
            last_transition_time: Time(
                k8s_openapi::jiff::Timestamp::new(1_780_000_000, 123_456_789).expect("time"),
            ),
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
                Condition {
                    observed_generation: None,
                    ..condition("Other", "False", "x".repeat(300).as_str())
                },
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
    fn what_the_caches_readers_use_stays_in_place_or_is_found_in_the_buffer() {
        let status = full();
        let mut packed = status.clone();
        packed.pack();
        assert!(packed.managed_keys.is_empty() && packed.sequence.is_none());
        assert!(packed.conditions.is_empty());
        assert_eq!(packed.organization_id, status.organization_id);
        assert_eq!(packed.user_id, status.user_id);
        assert_eq!(packed.observed_generation, status.observed_generation);
        assert_eq!(packed.managed_key_count, status.managed_key_count);
        for type_ in [
            "Ready",
            "Reconciling",
            "Stalled",
            "Drifted",
            "Other",
            "Missing",
        ] {
            let want = status.condition(type_);
            assert_eq!(packed.condition(type_), want, "{type_}");
            assert_eq!(want.is_some(), type_ != "Missing");
        }
        assert_eq!(
            packed.condition("Ready"),
            Some(ConditionView {
                status: "True",
                reason: "Synced"
            })
        );
        assert_eq!(MetadataStatus::default().condition("Ready"), None);
    }
}
