use super::*;
use crate::crd::MetadataResource;

const ORG_YAML: &str = "apiVersion: metadata.zitadel-operator.dev/v1alpha1
kind: OrgMetadata
metadata: {name: acme}
spec:
  organizationId: \"1\"
  metadata:
    - {key: a, value: x}
";

#[test]
fn yaml_streams_json_and_lists_become_documents() {
    let text = format!(
        "{ORG_YAML}---\n# only a comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\n"
    );
    let docs = parse("m.yaml", &text).expect("yaml");
    let origins: Vec<&str> = docs.iter().map(|d| d.origin.as_str()).collect();
    assert_eq!(origins, ["m.yaml#1", "m.yaml#2"]);
    let json = r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}},{"apiVersion":"v1","kind":"Secret","metadata":{"name":"b"}}]}
{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}"#;
    let docs = parse("-", json).expect("json");
    let origins: Vec<&str> = docs.iter().map(|d| d.origin.as_str()).collect();
    assert_eq!(origins, ["-#1[0]", "-#1[1]", "-#2"]);
    assert!(matches!(
        parse("bad.json", "{\"a\": ").expect_err("syntax"),
        ManifestError::Syntax { format: "JSON", .. }
    ));
    assert!(matches!(
        parse("bad.yaml", "a: [").expect_err("syntax"),
        ManifestError::Syntax { format: "YAML", .. }
    ));
}

#[test]
fn previewed_kinds_get_the_namespace_and_others_are_ignored() {
    let text = format!(
        "{ORG_YAML}---\napiVersion: metadata.zitadel-operator.dev/v1alpha1\nkind: ZitadelConnection\nmetadata: {{name: z}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\n"
    );
    let docs = parse("m.yaml", &text).expect("yaml");
    let (manifests, ignored) = classify(docs.clone(), "team-a", None).expect("classified");
    assert_eq!(manifests.len(), 1);
    let Manifest::Org(org) = &manifests[0].1 else {
        panic!("an OrgMetadata")
    };
    assert_eq!(org.metadata.namespace.as_deref(), Some("team-a"));
    assert_eq!(org.entries().len(), 1);
    let kinds: Vec<(&str, &str)> = ignored
        .iter()
        .map(|i| (i.kind.as_str(), i.reason.as_str()))
        .collect();
    assert_eq!(kinds[0].0, "ZitadelConnection");
    assert!(kinds[0].1.contains("read from the cluster"));
    assert_eq!(kinds[1], ("Secret", "not an OrgMetadata or UserMetadata"));
    // -n that contradicts the document's namespace is an error, as with kubectl.
    let mut named = docs;
    named[0].value["metadata"]["namespace"] = "team-b".into();
    let err = classify(named, "default", Some("team-a")).expect_err("mismatch");
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[test]
fn unknown_fields_wrong_versions_and_missing_names_are_errors() {
    let unknown = ORG_YAML.replace("    - {key: a, value: x}", "    - {key: a, valu: x}");
    let err =
        classify(parse("m.yaml", &unknown).expect("yaml"), "ns", None).expect_err("unknown field");
    assert!(err.to_string().contains("spec.metadata[0].valu"), "{err}");
    let version = ORG_YAML.replace("v1alpha1", "v1");
    let err = classify(parse("m.yaml", &version).expect("yaml"), "ns", None).expect_err("version");
    assert!(err.to_string().contains("is not served"), "{err}");
    let nameless = ORG_YAML.replace("metadata: {name: acme}", "metadata: {generateName: a-}");
    let err = classify(parse("m.yaml", &nameless).expect("yaml"), "ns", None).expect_err("name");
    assert!(
        err.to_string().contains("metadata.name is required"),
        "{err}"
    );
    assert!(matches!(
        classify(Vec::new(), "ns", None),
        Err(ManifestError::Empty)
    ));
    // A status in the manifest is dropped (the live one counts), nulls are not unknown.
    let with_status = format!("{ORG_YAML}  suspend: null\nstatus: {{managedKeys: [x]}}\n");
    let (manifests, _) =
        classify(parse("m.yaml", &with_status).expect("yaml"), "ns", None).expect("ok");
    let Manifest::Org(org) = &manifests[0].1 else {
        panic!("an OrgMetadata")
    };
    assert!(org.status.is_none());
}

#[test]
fn directories_expand_to_their_manifest_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    for file in ["b.yaml", "a.json", "notes.txt", "sub/c.yml"] {
        let path = dir.path().join(file);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, "{}").expect("write");
    }
    let root = dir.path().to_str().expect("utf-8");
    let names = |files: Vec<PathBuf>| -> Vec<String> {
        files
            .iter()
            .map(|p| {
                p.strip_prefix(dir.path())
                    .expect("inside")
                    .display()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(
        names(expand(root, false).expect("dir")),
        ["a.json", "b.yaml"]
    );
    assert_eq!(
        names(expand(root, true).expect("dir")),
        ["a.json", "b.yaml", "sub/c.yml"]
    );
    assert!(matches!(
        expand("/nonexistent/zmo", false),
        Err(ManifestError::Read { .. })
    ));
}
