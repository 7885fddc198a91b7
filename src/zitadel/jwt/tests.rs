//! Unit tests of `jwt`.

use super::*;

#[test]
fn retry_after_from_the_token_endpoint_pauses_every_caller() {
    let mut p = Pause::default();
    let now = Instant::now();
    assert!(p.check(now).is_none());
    // Answers without Retry-After, or other statuses, do not pause.
    p.after(&ZitadelError::from_response(429, None, "slow"), now);
    p.after(&ZitadelError::from_response(400, Some("5"), "bad"), now);
    assert!(p.check(now).is_none());
    p.after(&ZitadelError::from_response(429, Some("3"), "slow"), now);
    let err = p
        .check(now + Duration::from_secs(1))
        .expect("paused for 3 s");
    assert_eq!(err.status(), Some(429));
    assert!(err.is_transient());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
    assert!(p.check(now + Duration::from_secs(3)).is_none());
    assert!(
        p.check(now + Duration::from_secs(1)).is_none(),
        "a lapsed pause is cleared"
    );
    p.after(&ZitadelError::from_response(503, Some("2"), "down"), now);
    assert_eq!(p.check(now).and_then(|e| e.status()), Some(503));
}

/// ZITADEL's checks of a JWT-profile assertion at its own time `server_now` (zitadel/oidc
/// `JWTProfileVerifier` with a 1 h maximum `iat` age and a 1 s offset): not expired, `iat`
/// not in the future, not older than an hour.
fn zitadel_accepts(claims: &Claims<'_>, server_now: u64) -> bool {
    server_now + 1 < claims.exp && claims.iat <= server_now + 1 && claims.iat + 3600 >= server_now
}

#[test]
fn assertion_survives_a_skewed_clock() {
    let server_now = 1_800_000_000u64;
    // skew = operator clock − ZITADEL clock, in seconds.
    for skew in [-300i64, -30, 0, 1, 2, 30, 60] {
        let client = UNIX_EPOCH + Duration::from_secs(server_now.saturating_add_signed(skew));
        let c = claims("user", "https://issuer", client);
        assert!(zitadel_accepts(&c, server_now), "skew {skew} s: {c:?}");
        assert!(c.exp - c.iat <= 3600, "exp beyond ZITADEL's hour");
    }
    // Without the backdating, a clock 2 s ahead was refused; 2 minutes ahead still is.
    let ahead = UNIX_EPOCH + Duration::from_secs(server_now + 120);
    assert!(!zitadel_accepts(&claims("user", "aud", ahead), server_now));
    let c = claims("u", "a", UNIX_EPOCH + Duration::from_secs(server_now));
    assert_eq!(c.iat, server_now - IAT_BACKDATE);
    assert_eq!((c.iss, c.sub, c.aud), ("u", "u", "a"));
}

#[test]
fn key_file_errors_name_the_field_and_never_the_content() {
    assert_eq!(
        KeyFile::parse(b"not json").err(),
        Some(KeyFileError::NotJson)
    );
    let no_key = br#"{"type":"serviceaccount","keyId":"k1","userId":"u1"}"#;
    assert_eq!(
        KeyFile::parse(no_key).err(),
        Some(KeyFileError::Missing("key"))
    );
    let no_user = br#"{"type":"serviceaccount","keyId":"k1","key":"x"}"#;
    assert_eq!(
        KeyFile::parse(no_user).err(),
        Some(KeyFileError::Missing("userId"))
    );
    let app = br#"{"type":"application","keyId":"k1","key":"x","userId":"u"}"#;
    assert_eq!(KeyFile::parse(app).err(), Some(KeyFileError::WrongType));
    let bad = br#"{"type":"serviceaccount","keyId":"k1","key":"-----BEGIN RSA PRIVATE KEY-----\nsecret-material\n-----END RSA PRIVATE KEY-----","userId":"u"}"#;
    let err = KeyFile::parse(bad).expect_err("bad key");
    assert_eq!(err, KeyFileError::BadKey);
    assert!(!err.to_string().contains("secret-material"));
}
