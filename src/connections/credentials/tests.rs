use super::*;
use crate::testing::FakeSources;

fn secret_location() -> TokenLocation {
    TokenLocation::Secret {
        namespace: "zitadel-system".into(),
        name: "zitadel-token".into(),
        key: "token".into(),
    }
}

#[tokio::test]
async fn a_missing_secret_is_a_state_naming_the_secret_and_key_until_it_appears() {
    let fake = Arc::new(FakeSources::default());
    let token = FlagToken::new(secret_location(), fake.clone());
    let why = token.observe().await.expect_err("missing");
    assert_eq!(
        why,
        "Secret zitadel-system/zitadel-token not found (--token-secret)"
    );
    match token.token().await {
        Err(ZitadelError::Credentials(m)) => assert_eq!(m, why),
        other => panic!("{other:?}"),
    }
    fake.put_secret("zitadel-system", "zitadel-token", "other", b"x");
    let why = token.observe().await.expect_err("no key");
    assert!(
        why.contains("has no key \"token\" (--token-secret-key)"),
        "{why}"
    );
    fake.put_secret("zitadel-system", "zitadel-token", "token", b" pat-1\n");
    let first = token.observe().await.expect("read");
    assert_eq!(&*token.token().await.expect("token"), "pat-1");
    // The watch re-reads on a change; the same value is no change.
    fake.put_secret("zitadel-system", "zitadel-token", "token", b"pat-1");
    assert_eq!(token.observe().await, Ok(first));
    fake.put_secret("zitadel-system", "zitadel-token", "token", b"pat-2");
    assert_ne!(token.observe().await, Ok(first));
    assert_eq!(&*token.token().await.expect("token"), "pat-2");
}

#[tokio::test]
async fn a_rejected_secret_token_is_read_again_before_the_retry() {
    let fake = Arc::new(FakeSources::default());
    fake.put_secret("zitadel-system", "zitadel-token", "token", b"old");
    let token = FlagToken::new(secret_location(), fake.clone());
    assert_eq!(&*token.token().await.expect("token"), "old");
    // Rotated before the watch told us: served from the cache until a 401 invalidates it.
    fake.put_secret("zitadel-system", "zitadel-token", "token", b"new");
    assert_eq!(&*token.token().await.expect("token"), "old");
    token.invalidate().await;
    assert_eq!(&*token.token().await.expect("token"), "new");
}

#[tokio::test]
async fn a_token_file_is_read_on_every_call_and_missing_is_named() {
    let dir = std::env::temp_dir().join(format!("zmo-flag-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("token");
    let _ = std::fs::remove_file(&path);
    let fake: Arc<dyn ValueSources> = Arc::new(FakeSources::default());
    let token = FlagToken::new(TokenLocation::File(path.clone()), fake);
    let why = token.observe().await.expect_err("missing");
    assert!(
        why.contains("does not exist (--token-file)") && why.contains("token"),
        "{why}"
    );
    std::fs::write(&path, "one\n").expect("write");
    assert_eq!(&*token.token().await.expect("token"), "one");
    std::fs::write(&path, "two").expect("write");
    assert_eq!(&*token.token().await.expect("token"), "two");
    std::fs::write(&path, "  ").expect("write");
    let why = token.observe().await.expect_err("empty");
    assert!(why.ends_with("is empty"), "{why}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_connection_pat_is_read_again_after_a_401() {
    let fake = Arc::new(FakeSources::default());
    fake.put_secret("team", "pat", "token", b"new");
    let secret = SecretKey {
        namespace: "team".into(),
        name: "pat".into(),
        key: "token".into(),
    };
    let token = SourceToken::new(secret, fake.clone(), Arc::from("old"));
    assert_eq!(&*token.token().await.expect("token"), "old");
    token.invalidate().await;
    assert_eq!(&*token.token().await.expect("token"), "new");
    fake.put_secret("team", "pat", "token", b"");
    token.invalidate().await;
    assert!(matches!(
        token.token().await,
        Err(ZitadelError::Credentials(m)) if m.contains("personalAccessToken) is empty")
    ));
}

#[test]
fn only_an_unavailable_credential_is_a_readiness_problem() {
    let state = CredentialState::new("Secret a/b key \"token\" (--token-secret)");
    assert_eq!(state.problem(), None);
    state.set(CredentialStatus::Unavailable("Secret a/b not found".into()));
    assert_eq!(
        state.problem().as_deref(),
        Some("default connection: credentials unavailable: Secret a/b not found")
    );
    let previous = state.set(CredentialStatus::Rejected("401".into()));
    assert_eq!(previous.label(), "unavailable");
    assert_eq!(state.problem(), None);
}
