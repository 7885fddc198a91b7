use super::*;

fn parse(args: &[&str]) -> Result<DiffArgs, clap::Error> {
    let all = std::iter::once("zitadel-metadata-operator diff").chain(args.iter().copied());
    DiffArgs::try_parse_from(all)
}

#[test]
fn flags_follow_kubectl_diff() {
    let args = parse(&["-f", "a.yaml", "-f", "dir/", "-R", "-o", "json"]).expect("ok");
    assert_eq!(args.filenames, ["a.yaml", "dir/"]);
    assert!(args.recursive && args.output == Output::Json);
    assert_eq!(args.reveal(), Reveal::None);
    let args = parse(&["--live", "-A", "orgmd/acme", "--show-values"]).expect("ok");
    assert!(args.live && args.all_namespaces);
    assert_eq!(args.reveal(), Reveal::NonSecret);
    let args = parse(&["--live", "--show-secret-values"]).expect("ok");
    assert_eq!(args.reveal(), Reveal::All);
    // Either manifests or --live, not both, not neither.
    assert!(parse(&[]).is_err());
    assert!(parse(&["-f", "a.yaml", "--live"]).is_err());
    // Object names and -A only with --live.
    let e = parse(&["-f", "a.yaml", "orgmd/acme"]);
    assert!(e.is_err(), "{e:?}");
    assert!(parse(&["-f", "a.yaml", "-A"]).is_err());
    assert!(parse(&["--live", "--zitadel-api", "v3"]).is_err());
    let args = parse(&["--live", "--zitadel-api", "V2"]).expect("ok");
    assert_eq!(args.zitadel_api, ApiMode::V2);
}

#[test]
fn live_selections_name_kinds_and_objects() {
    let s = Selection::parse(&["orgmd/acme".into(), "usermetadata".into()]).expect("ok");
    assert_eq!(
        s.wanted,
        vec![("OrgMetadata", Some("acme".into())), ("UserMetadata", None)]
    );
    assert!(Selection::parse(&["secret/x".into()]).is_err());
    assert!(Selection::parse(&["orgmd/".into()]).is_err());
}
