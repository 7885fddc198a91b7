//! The compact form of a cached object's entries: one byte buffer instead of a `Vec` of
//! [`MetadataEntry`] with up to five small heap strings each.
//!
//! The controllers' caches hold every object of a kind; at 10,000 objects with 10 entries the
//! entries alone took ~11 MiB of heap (80 B per entry, at least 32 B per small string with glibc
//! malloc). Packed, an object's entries take one allocation of about the size of their text.
//! The reconcile restores them ([`PackedEntries::unpack`]); the readers of cached objects that
//! only need the keys or the `valueFrom` source names walk the buffer without allocating
//! ([`PackedEntries::views`]).
//!
//! Layout, per entry: a flag byte ([`flags`]), the key, then — as the flags say — `value`,
//! `binaryValue`, the Secret reference's name and key, the ConfigMap reference's name and key.
//! Each string is its length (LEB128) followed by its UTF-8 bytes. Every combination of fields
//! is kept, also those the CRD's rules reject, so that an unpacked object is always exactly the
//! object that was packed (a reconcile then reports the same errors).

use super::{KeyRef, MetadataEntry, ValueSource};

/// Bits of an entry's flag byte.
mod flags {
    pub const VALUE: u8 = 1;
    pub const BINARY: u8 = 1 << 1;
    pub const VALUE_FROM: u8 = 1 << 2;
    pub const SECRET: u8 = 1 << 3;
    pub const CONFIG_MAP: u8 = 1 << 4;
    pub const SECRET_OPTIONAL: u8 = 1 << 5;
    pub const CONFIG_MAP_OPTIONAL: u8 = 1 << 6;
}

/// A list of [`MetadataEntry`] in one buffer. Only [`PackedEntries::pack`] makes one, so the
/// buffer is always well formed.
#[derive(Clone, PartialEq, Eq)]
pub struct PackedEntries {
    buf: Box<[u8]>,
    count: u32,
}

/// Values are never printed (they may be secrets): the count and size only.
impl std::fmt::Debug for PackedEntries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedEntries")
            .field("entries", &self.count)
            .field("bytes", &self.buf.len())
            .finish()
    }
}

/// What the readers of a cached object see of one entry without unpacking it: its key and the
/// names of the Secret / ConfigMap its value comes from (never the value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryView<'a> {
    /// The metadata key.
    pub key: &'a str,
    /// `valueFrom.secretKeyRef.name`.
    pub secret: Option<&'a str>,
    /// `valueFrom.configMapKeyRef.name`.
    pub config_map: Option<&'a str>,
}

impl<'a> EntryView<'a> {
    /// The view of an unpacked entry.
    pub fn of(entry: &'a MetadataEntry) -> Self {
        let source = entry.value_from.as_deref();
        Self {
            key: &entry.key,
            secret: source
                .and_then(|s| s.secret_key_ref.as_ref())
                .map(|r| r.name.as_str()),
            config_map: source
                .and_then(|s| s.config_map_key_ref.as_ref())
                .map(|r| r.name.as_str()),
        }
    }
}

impl PackedEntries {
    /// Pack `entries` (exactly: [`PackedEntries::unpack`] gives them back equal).
    pub fn pack(entries: &[MetadataEntry]) -> Self {
        let size: usize = entries.iter().map(packed_size).sum();
        let mut buf = Vec::with_capacity(size);
        for entry in entries {
            let source = entry.value_from.as_deref();
            let secret = source.and_then(|s| s.secret_key_ref.as_ref());
            let config_map = source.and_then(|s| s.config_map_key_ref.as_ref());
            let mut flag = 0;
            for (set, bit) in [
                (entry.value.is_some(), flags::VALUE),
                (entry.binary_value.is_some(), flags::BINARY),
                (source.is_some(), flags::VALUE_FROM),
                (secret.is_some(), flags::SECRET),
                (config_map.is_some(), flags::CONFIG_MAP),
                (secret.is_some_and(|r| r.optional), flags::SECRET_OPTIONAL),
                (
                    config_map.is_some_and(|r| r.optional),
                    flags::CONFIG_MAP_OPTIONAL,
                ),
            ] {
                if set {
                    flag |= bit;
                }
            }
            buf.push(flag);
            put_str(&mut buf, &entry.key);
            for text in [&entry.value, &entry.binary_value].into_iter().flatten() {
                put_str(&mut buf, text);
            }
            for r in [secret, config_map].into_iter().flatten() {
                put_str(&mut buf, &r.name);
                put_str(&mut buf, &r.key);
            }
        }
        Self {
            buf: buf.into_boxed_slice(),
            count: u32::try_from(entries.len()).unwrap_or(u32::MAX),
        }
    }

    /// The entries, as they were packed.
    pub fn unpack(&self) -> Vec<MetadataEntry> {
        let mut out = Vec::with_capacity(self.len());
        let mut reader = Reader(&self.buf);
        while !reader.0.is_empty() {
            match reader.entry() {
                Some(entry) => out.push(entry),
                None => {
                    // Unreachable: only `pack` writes the buffer.
                    debug_assert!(false, "malformed packed entries");
                    break;
                }
            }
        }
        out
    }

    /// The keys and source names of the entries, in order, without unpacking the values.
    pub fn views(&self) -> Views<'_> {
        Views(Reader(&self.buf))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the buffer in bytes.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }
}

/// Iterator over the [`EntryView`]s of a [`PackedEntries`].
pub struct Views<'a>(Reader<'a>);

impl<'a> Iterator for Views<'a> {
    type Item = EntryView<'a>;

    fn next(&mut self) -> Option<EntryView<'a>> {
        if self.0.0.is_empty() {
            return None;
        }
        let view = self.0.view();
        if view.is_none() {
            // Unreachable: only `pack` writes the buffer.
            debug_assert!(false, "malformed packed entries");
            self.0.0 = &[];
        }
        view
    }
}

/// Iterator over the [`EntryView`]s of an object's entries, packed or not
/// ([`super::MetadataResource::entry_views`]).
pub enum EntryViews<'a> {
    /// Of unpacked entries.
    Entries(std::slice::Iter<'a, MetadataEntry>),
    /// Of packed entries.
    Packed(Views<'a>),
}

impl<'a> Iterator for EntryViews<'a> {
    type Item = EntryView<'a>;

    fn next(&mut self) -> Option<EntryView<'a>> {
        match self {
            Self::Entries(entries) => entries.next().map(EntryView::of),
            Self::Packed(views) => views.next(),
        }
    }
}

fn packed_size(entry: &MetadataEntry) -> usize {
    let source = entry.value_from.as_deref();
    let refs = source
        .into_iter()
        .flat_map(|s| [&s.secret_key_ref, &s.config_map_key_ref])
        .flatten()
        .flat_map(|r| [&r.name, &r.key]);
    let texts = [&entry.value, &entry.binary_value].into_iter().flatten();
    1 + std::iter::once(&entry.key)
        .chain(texts)
        .chain(refs)
        .map(|s| s.len() + varint_len(s.len()))
        .sum::<usize>()
}

fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

/// Append `n` as LEB128.
pub(super) fn put_len(buf: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        // Truncation intended: the low seven bits, with the continuation bit.
        buf.push((n & 0x7f) as u8 | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

/// Append `s` as its length and its bytes.
pub(super) fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_len(buf, s.len());
    buf.extend_from_slice(s.as_bytes());
}

/// Reads a buffer written with [`put_len`] and [`put_str`]; `None` on malformed input (never,
/// by construction).
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn byte(&mut self) -> Option<u8> {
        let (first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*first)
    }

    pub(super) fn len(&mut self) -> Option<usize> {
        let mut len: usize = 0;
        let mut shift = 0u32;
        loop {
            let b = self.byte()?;
            len |= usize::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(len);
            }
            shift += 7;
        }
    }

    /// The next `n` bytes.
    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(s)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.len()?;
        self.take(len)
    }

    pub(super) fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    pub(super) fn text(&mut self, present: bool) -> Option<Option<String>> {
        if !present {
            return Some(None);
        }
        Some(Some(self.str()?.to_owned()))
    }

    fn key_ref(&mut self, present: bool, optional: bool) -> Option<Option<KeyRef>> {
        if !present {
            return Some(None);
        }
        Some(Some(KeyRef {
            name: self.str()?.to_owned(),
            key: self.str()?.to_owned(),
            optional,
        }))
    }

    fn entry(&mut self) -> Option<MetadataEntry> {
        let flag = self.byte()?;
        let has = |bit: u8| flag & bit != 0;
        let key = self.str()?.to_owned();
        let value = self.text(has(flags::VALUE))?;
        let binary_value = self.text(has(flags::BINARY))?;
        let secret = self.key_ref(has(flags::SECRET), has(flags::SECRET_OPTIONAL))?;
        let config_map = self.key_ref(has(flags::CONFIG_MAP), has(flags::CONFIG_MAP_OPTIONAL))?;
        let value_from = has(flags::VALUE_FROM).then(|| {
            Box::new(ValueSource {
                secret_key_ref: secret,
                config_map_key_ref: config_map,
            })
        });
        Some(MetadataEntry {
            key,
            value,
            binary_value,
            value_from,
        })
    }

    fn view(&mut self) -> Option<EntryView<'a>> {
        let flag = self.byte()?;
        let has = |bit: u8| flag & bit != 0;
        let key = self.str()?;
        for bit in [flags::VALUE, flags::BINARY] {
            if has(bit) {
                self.bytes()?;
            }
        }
        let mut name = |present: bool| -> Option<Option<&'a str>> {
            if !present {
                return Some(None);
            }
            let name = self.str()?;
            self.bytes()?;
            Some(Some(name))
        };
        let secret = name(has(flags::SECRET))?;
        let config_map = name(has(flags::CONFIG_MAP))?;
        Some(EntryView {
            key,
            secret,
            config_map,
        })
    }
}

#[cfg(test)]
#[path = "packed_tests.rs"]
mod tests;
