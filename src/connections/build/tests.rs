use super::*;
use crate::crd::{CaBundle, ConnectionEndpoint, Credentials};
use crate::testing::FakeSources;

fn settings(credentials: Credentials, ca_bundle: Option<CaBundle>) -> ConnectionSettings {
    ConnectionSettings {
        endpoint: ConnectionEndpoint {
            url: "https://zitadel.example".into(),
            ca_bundle,
            tls_server_name: None,
            credentials,
        },
        namespace: Some("team-a".into()),
        api: Default::default(),
    }
}

fn key_ref(name: &str, key: &str) -> SecretKeyRef {
    SecretKeyRef {
        name: name.into(),
        key: key.into(),
        namespace: None,
    }
}

fn pat(name: &str) -> Credentials {
    Credentials {
        personal_access_token: Some(key_ref(name, "token")),
        jwt_profile: None,
    }
}

async fn reason_of(sources: &Arc<FakeSources>, s: &ConnectionSettings) -> Reason {
    let sources: Arc<dyn ValueSources> = sources.clone();
    match build(&sources, s, Duration::from_secs(1)).await {
        Ok(_) => Reason::Connected,
        Err(e) => e.reason(),
    }
}

#[test]
fn namespaced_connections_read_only_their_own_namespace() {
    let reference = |ns: Option<&str>| SecretKeyRef {
        name: "token".into(),
        key: "pat".into(),
        namespace: ns.map(str::to_owned),
    };
    let secret = SourceKind::Secret;
    let own = reference(None);
    assert_eq!(
        reference_namespace(secret, &own, Some("team-a")).ok(),
        Some("team-a")
    );
    let same = reference(Some("team-a"));
    assert_eq!(
        reference_namespace(secret, &same, Some("team-a")).ok(),
        Some("team-a")
    );
    let other = reference(Some("zitadel-system"));
    let err = reference_namespace(secret, &other, Some("team-a")).expect_err("refused");
    assert_eq!(err.reason(), Reason::InvalidCredentials);
    assert!(
        err.to_string()
            .contains("\"zitadel-system\" is not allowed"),
        "{err}"
    );
    // Cluster connections name the namespace.
    assert_eq!(
        reference_namespace(secret, &other, None).ok(),
        Some("zitadel-system")
    );
    assert!(reference_namespace(secret, &own, None).is_err());
}

#[test]
fn the_default_connection_uses_the_api_flag() {
    let url: Url = "https://zitadel.example".parse().expect("url");
    let build = |api| {
        default_connection(
            url.clone(),
            TokenSource::Static(Arc::from("t")),
            Duration::from_secs(1),
            api,
            Arc::new(Metrics::new()),
        )
        .expect("client")
    };
    // Pinned: selected without a probe. Auto: nothing selected before the first call.
    for mode in [ApiMode::V1, ApiMode::V2] {
        assert_eq!(
            build(mode).api_selection(),
            crate::zitadel::ApiSelection::pinned(mode)
        );
    }
    assert_eq!(build(ApiMode::Auto).api_selection(), None);
}

#[tokio::test]
async fn every_build_failure_has_its_reason_and_versions_are_qualified() {
    let sources = Arc::new(FakeSources::default());
    let dyn_sources: Arc<dyn ValueSources> = sources.clone();
    sources.put_secret("team-a", "pat", "token", b"secret-token");
    sources.put_secret("team-a", "empty", "token", b"  ");
    sources.put_config_map_binary(
        "team-a",
        "ca",
        "ca.pem",
        b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    );
    let ok = settings(pat("pat"), None);
    let built = build(&dyn_sources, &ok, Duration::from_secs(1))
        .await
        .expect("built");
    assert_eq!(built.versions, vec!["Secret/team-a/pat@1".to_string()]);
    assert_eq!(built.client.api_mode(), crate::zitadel::ApiMode::Auto);
    // `spec.api` reaches the client.
    let pinned = ConnectionSettings {
        api: crate::zitadel::ApiMode::V2,
        ..ok.clone()
    };
    let built = build(&dyn_sources, &pinned, Duration::from_secs(1))
        .await
        .expect("built");
    assert_eq!(built.client.api_mode(), crate::zitadel::ApiMode::V2);
    assert_eq!(
        reason_of(&sources, &settings(pat("absent"), None)).await,
        Reason::SecretNotFound
    );
    assert_eq!(
        reason_of(&sources, &settings(pat("empty"), None)).await,
        Reason::InvalidCredentials
    );
    // A CA bundle in a ConfigMap's binaryData is read (it is not PEM: the client refuses it).
    let ca = CaBundle {
        secret_ref: None,
        config_map_ref: Some(key_ref("ca", "ca.pem")),
    };
    assert_eq!(
        reason_of(&sources, &settings(pat("pat"), Some(ca))).await,
        Reason::InvalidSettings
    );
    sources.fail_reads();
    assert_eq!(
        reason_of(&sources, &settings(pat("pat"), None)).await,
        Reason::SecretUnreadable
    );
}
