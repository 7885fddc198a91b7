use super::*;

fn key_ref(name: &str, key: &str, optional: bool) -> KeyRef {
    KeyRef {
        name: name.into(),
        key: key.into(),
        optional,
    }
}

fn sourced(key: &str, secret: Option<KeyRef>, config_map: Option<KeyRef>) -> MetadataEntry {
    MetadataEntry {
        key: key.into(),
        value: None,
        binary_value: None,
        value_from: Some(Box::new(ValueSource {
            secret_key_ref: secret,
            config_map_key_ref: config_map,
        })),
    }
}

/// Every shape an entry can have, the ones the CRD rejects included.
fn all_shapes() -> Vec<MetadataEntry> {
    let large: String = "x".repeat(500_000);
    let bytes: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    vec![
        MetadataEntry::text("plain", "gold"),
        MetadataEntry::text("unicode-ключ-🔑", "значение\0with NUL\nand newline"),
        MetadataEntry::text("large", large),
        MetadataEntry::binary("binary", &bytes),
        MetadataEntry::binary("one-byte", &[0]),
        sourced("from-secret", Some(key_ref("db", "password", false)), None),
        sourced("from-cm", None, Some(key_ref("settings", "tier", true))),
        sourced(
            "both",
            Some(key_ref("a", "b", true)),
            Some(key_ref("c", "d", false)),
        ),
        sourced("neither", None, None),
        MetadataEntry {
            key: "value-and-binary".into(),
            value: Some("v".into()),
            binary_value: Some("dg==".into()),
            value_from: None,
        },
        MetadataEntry {
            key: String::new(),
            value: Some(String::new()),
            binary_value: None,
            value_from: None,
        },
        MetadataEntry {
            key: "nothing".into(),
            value: None,
            binary_value: None,
            value_from: None,
        },
        MetadataEntry {
            key: "value-and-source".into(),
            value: Some("v".into()),
            binary_value: None,
            value_from: Some(Box::new(ValueSource {
                secret_key_ref: Some(key_ref("s", "k", false)),
                config_map_key_ref: None,
            })),
        },
    ]
}

#[test]
fn unpack_gives_back_exactly_what_was_packed() {
    let entries = all_shapes();
    let packed = PackedEntries::pack(&entries);
    assert_eq!(packed.unpack(), entries);
    assert_eq!(packed.len(), entries.len());
    for one in &entries {
        let single = std::slice::from_ref(one);
        assert_eq!(PackedEntries::pack(single).unpack(), single);
    }
    let empty = PackedEntries::pack(&[]);
    assert!(empty.is_empty());
    assert_eq!(empty.unpack(), Vec::<MetadataEntry>::new());
}

#[test]
fn lengths_around_varint_boundaries_round_trip() {
    for n in [0, 1, 126, 127, 128, 129, 16_383, 16_384, 16_385, 2_097_152] {
        let entries = vec![
            MetadataEntry::text("k".repeat(n.min(300)), "v".repeat(n)),
            MetadataEntry::text("after", "ok"),
        ];
        assert_eq!(PackedEntries::pack(&entries).unpack(), entries, "{n}");
    }
}

#[test]
fn views_give_keys_and_source_names_of_packed_and_unpacked_entries_alike() {
    let entries = all_shapes();
    let packed = PackedEntries::pack(&entries);
    let direct: Vec<EntryView<'_>> = entries.iter().map(EntryView::of).collect();
    let walked: Vec<EntryView<'_>> = packed.views().collect();
    assert_eq!(walked, direct);
    let find = |key: &str| walked.iter().find(|v| v.key == key).copied();
    assert_eq!(
        find("from-secret"),
        Some(EntryView {
            key: "from-secret",
            secret: Some("db"),
            config_map: None
        })
    );
    assert_eq!(find("from-cm").and_then(|v| v.config_map), Some("settings"));
    assert_eq!(
        find("both").map(|v| (v.secret, v.config_map)),
        Some((Some("a"), Some("c")))
    );
    assert_eq!(
        find("large").map(|v| (v.secret, v.config_map)),
        Some((None, None))
    );
}

#[test]
fn packed_form_is_about_the_size_of_the_text_and_debug_hides_values() {
    let entries: Vec<MetadataEntry> = (0..10)
        .map(|i| MetadataEntry::text(format!("key-{i}"), format!("value-number-{i}")))
        .collect();
    let text: usize = entries
        .iter()
        .map(|e| e.key.len() + e.value.as_ref().map_or(0, String::len))
        .sum();
    let packed = PackedEntries::pack(&entries);
    // A flag byte and two one-byte lengths per entry.
    assert_eq!(packed.bytes(), text + 3 * entries.len());
    let shown = format!("{packed:?}");
    assert!(!shown.contains("value-number"), "{shown}");
    assert!(shown.contains("entries: 10"), "{shown}");
}
