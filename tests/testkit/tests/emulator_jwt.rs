//! Machine-client authentication of the ZITADEL emulator over real HTTP (contract §5): the JWT
//! profile grant at `POST /oauth/v2/token` with service-user key files, the access tokens it
//! issues (permissions, API audience scope, expiry) and the discovery document.
//!
//! RSA key generation is slow in unoptimised builds, so only the key-file tests generate keys;
//! the others register the fixed test keys below with `add_service_user_key`.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use reqwest::Method;
use reqwest::header::{CACHE_CONTROL, WWW_AUTHENTICATE};
use rsa::RsaPrivateKey;
use rsa::pkcs1::{DecodeRsaPrivateKey as _, EncodeRsaPublicKey as _};
use rsa::pkcs8::{EncodePublicKey as _, LineEnding};
use serde_json::{Value, json};
use support::{Resp, send};
use zmo_testkit::emulator::{
    DEMO_ORG_ACME as ACME, DEMO_ORG_GLOBEX as GLOBEX, Emulator, Operation, TokenGrant,
};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const SCOPES: &str = "openid urn:zitadel:iam:org:project:id:zitadel:aud";
const SERVICE_USER: &str = "250000000000000001";
const OTHER_USER: &str = "250000000000000002";
const KEY_ID: &str = "350000000000000001";
const OTHER_KEY_ID: &str = "350000000000000002";

/// Test-only RSA-2048 keys (PKCS#1), never used anywhere else.
const TEST_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEpQIBAAKCAQEA5gsTNBG0S0DdT6TA8rjaTfhqvErlVc2ZdnYWqHtC63y3KttR
tQ2DKwUiYPyA6FfsaPBCQBuS7OoXxLVfUvSID/8IhrDzhI+n6DcAv5A+rpm1p6kv
WE44l1wZoaMmnvlLzsarN7ito+YRsmU3MMQJtHZqPMG8coiXI2tLli9NE4ic1qRs
Cl0EHWe/L5sGMzlw30g2UXPyIuBUedos+S9Mr6PLgjrMGNttr5mb2xtIkv9z3Yy8
yhRQRXZLn82eZqFNj4fg5Qc+EEahuS3fQaN3VC87N2fau14KsM+kEs122tNW4pge
1jJbbQuG6VODg/7BHHyg78ORWbJ8UYZG5Z2GsQIDAQABAoIBAFuK2bP1PaFaqRb5
8XxFWj3/1n2icjugSursmByonFs4cG1iBFQ/kcxrSSB+KtAKuP2TalG3h1K23wl8
wXex7nkrHFn5DZbZUdBjHu2cOY1ihnq3JSuHSRbWZC7BzWsiumuI/HZ6i8K2maE7
jOhfgpspKiKOV+7d8wL5vgUAQrQ7/kJbS67B/HV1kCvTj5MU8bzk84cvjzla6VNq
BaScf4B1fF1n6ICGPtUTcugBduF2b+Y7NJW8uLVwIaJGWFVMQDhVHiPoFtY8igdy
GM4hKFIu6SB+6EENpTeX6qUmCdQc5pu+1IhdM6EdkSzB7TZ0DtM9+SMQ2gbN4nlj
tsSk/88CgYEA9XTU/2fdY5nV52NXcoeEmoHMYxaOQq/mxG3OvoLes+PinT211RBy
hyRwsL5w4CGvi6sizWahz4b9jub7NhJj0/Pm4wmm0YnSnQzUwBiP8AhXnl9rrSHs
0nnIHfRoMHapfn/OvOpDFf96qXwUnhTBsXF3bFHHo+zIerXLvV4p1R8CgYEA7+zA
k7odUPWnFDKcE0EtMyEXy2U7vUpsTT/7vCQQY20NtETSLfv4ZPAdtqUpDA8KJmUu
jd7fVcCvzhZvCGUAGDOZWZuv8m3Kls5mKjdTJHlNrFllU362wmY5XO34ha3o7I5+
XWY9z2kMbDlNdrMonIgXcfKuyVH1uBex4Lot2i8CgYEAiU2VaFl9ah2/nfPgEtzj
vFonLraLVZp4CCE0qTUjxpUPSs4eTNUqe5ZSw0uEcJvnSsWsbiGfGit04t8qXxDi
bsncudvISSZDfj6TM/GJcsf320udO/fiNcqRus/hCFsYbP6pctvIMyH6R5x1HAiY
YN4L47fLaVMmwh23nnJyDBkCgYEAiyiK2iRM9LRG4FQqapCXItzC7FofOD9+aZ/+
5rUUPFb4Z+Ky9bD79a+/zDwnfrMKdBKj2e23JAnK7oHcjMXoNCFZhLvkZXyA0M+O
OlY0hydEgf6n4rHQVxjrlJcCWqbwPqS3bnzqxO5tIihqYbqwh3n3/0N/VY2QM+Kq
bWoPRkkCgYEAmY8tVvbm8vbqLBbwyBCuHYiazi8ZlRYb18JcP63nB7uy3GgBk/gg
xxB77/0vxkRPLg3vBLYtWY6EA8v++9wVkRR8KxP7p6UZG5hPkUMmNut8+ZHmgYvv
IhUpvA2deA6EuQvvA6CDcDE4ql+xhldzGicuzbcxr6x1q9MODmr2sxk=
-----END RSA PRIVATE KEY-----";
const OTHER_TEST_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEogIBAAKCAQEAkmtowu5QDGwy21QxAHUzVUkGJxs3cjCi6PunI4/00JH9398k
yxzrnh+O8DNE389frYbU6ssM+HFlo6C9mmaN631nU03fvFDojfKX+phNWN65ImAd
lirqYke/oJdCxoAZECQUCfghhps2OLVc+/Lf77esbATrIiswaRPxUpefFsgvQK0O
DiXVqGJwQ3bi1rkfbGFOrTQfpgJ6xNdnVq0CjACZBQNQ35My/v1VWJPQ+hK3PyHL
S4UNz45ThmyN2iDf39sgb2X5z2SemCJbj+UYsSmYNiWDchZVsAikhAzJFhAJS3nX
39FBYnjTFW2U92zcPvfNE9a7F2sAPRoZrvypXwIDAQABAoIBAB4NfMGx321FUgTx
mWMyKxigteoV7IH8GJwAdxRWClY6+ORX7TnhVD0u1gxYQZU8f7NivtX4Wk+uGsIE
jpYf4ZZJtYkELV1+L9VeyzHsy8dnY5F6L+hwI46Lknn4QgTzKvHErfZD30G9Htpx
40V1WuBdjz7WnZp0SenvZXNh2o32tjIO41H96ZNt2AXNBHniBysn8HSWkmdcX/EV
UFjeUt5UprV7CbwcdrBVo/2sZ/0qEpZP9iZUneh/8kcQw11IPyB+YYBSh9DAX4Bm
RpdbPF6Ya1VsJKpgyfzDPTFO7TPi34X70BZWrzSTeHZR4zbkYylWwyBNyYYQmW2p
e8X60CUCgYEAyGM1YaEk2hEzje/oFk8s9mP6lPePGb2Ff+n1IKfEV5/vVU/4WGBc
Bu7SWju3XHhpkr6PGdCdRpn/PVL5vbr0+4hkkEDOpaiiMTjbfF4wncpoNPnaUsim
xYh1UiwBLsTzh54ru48wtAhDtmca743tTgl4bDntHImYxp1B9L3wPLsCgYEAuw36
DM2B3wcNBMyFLF+ItvIrrbgjH/adGVqAzvaRbts2/kwjLxhRnrY1w/al788lR3l5
MSfgSOfRliEe24op23pd0CR3Qh+UwbkvYyoYg5U4PVtOQxCTtMeHj6cIWSXI+tBr
yeMpy7j9W+gzMjqpA6WkI1TH0D9kBjc9gaTYba0CgYAkC9yVZFRpucBpXueD49g1
tkRkOagPPE1gdih3KFakYIu/7/O/ig3j3WAPhUB1rN9o20iIn0M7aQZF9MAiBhh9
isp0PIQvvob2jcDFvXfHWpqmNO+2BowhamuYTXwk+p7IHYbGZXqgWAA+Novc3c37
RK7Z4Q2rHYFS8QTlTqmBcwKBgG7+VCnUqAOXQ3pdgYhbB9zGxnRGl1EYHRA2S8iD
Nrj5CyDKPPZtD8GFjVHCwaQS3qQSyH8KkmOwawUSkiTjTwMVESW4/asW4kYxhJTr
HbC2krCVxVK2O29CFoZ/Lsz3RtLNaahaSyq/klc+6WIcvL2VRFhSrl47vzaRAMY0
8tfhAoGAXrLNJxB6EQAf9ZQ1wSv8gO1GFqB4eVeSd67vdYVpb9YVkJFWDC53PLHc
MJDMOU6SzQm+bb3fl/ZyQyCjAmZ+EL4KGZiycNSGb1kGXpRXLs0BnIIDTonW2leR
FDXtmy+KC7xRGj9EZruXFz4wjB8u9GWedT6rUQhkx9q0r68bzb4=
-----END RSA PRIVATE KEY-----";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// `POST /oauth/v2/token` with these form fields.
async fn token_request(emu: &Emulator, form: &[(&str, &str)]) -> Resp {
    send(
        client()
            .post(format!("{}/oauth/v2/token", emu.url()))
            .form(form),
    )
    .await
}

/// The JWT profile grant with `assertion` and the usual scopes.
async fn grant(emu: &Emulator, assertion: &str) -> Resp {
    token_request(
        emu,
        &[
            ("grant_type", JWT_BEARER),
            ("assertion", assertion),
            ("scope", SCOPES),
        ],
    )
    .await
}

/// An API call with `Authorization: Bearer <token>`.
async fn api(
    emu: &Emulator,
    method: Method,
    path: &str,
    token: &str,
    org: Option<&str>,
    body: Option<Value>,
) -> Resp {
    let mut rb = client()
        .request(method, format!("{}{}", emu.url(), path))
        .header("authorization", format!("Bearer {token}"));
    if let Some(org) = org {
        rb = rb.header("x-zitadel-orgid", org);
    }
    if let Some(body) = body {
        rb = rb.json(&body);
    }
    send(rb).await
}

async fn my_org(emu: &Emulator, token: &str) -> Resp {
    api(
        emu,
        Method::GET,
        "/management/v1/orgs/me",
        token,
        None,
        None,
    )
    .await
}

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// Claims of a valid assertion for `user`.
fn claims(emu: &Emulator, user: &str) -> Value {
    let now = now();
    json!({ "iss": user, "sub": user, "aud": emu.issuer(), "iat": now, "exp": now + 300 })
}

/// Signs `claims` with RS256 and header `kid`.
fn sign(private_pem: &str, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let key = EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("RSA private key");
    encode(&header, claims, &key).expect("JWT signed")
}

fn public_pem(private_pem: &str) -> String {
    RsaPrivateKey::from_pkcs1_pem(private_pem)
        .unwrap()
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap()
}

/// A seeded emulator with [`SERVICE_USER`] (ORG_OWNER of Acme) holding [`TEST_KEY`] as
/// [`KEY_ID`].
async fn emulator() -> Emulator {
    let emu = Emulator::start_seeded().await.unwrap();
    emu.register_service_user(SERVICE_USER, TokenGrant::org_owner(ACME));
    emu.add_service_user_key(SERVICE_USER, KEY_ID, &public_pem(TEST_KEY));
    emu
}

/// A valid assertion of [`SERVICE_USER`].
fn assertion(emu: &Emulator) -> String {
    sign(TEST_KEY, KEY_ID, &claims(emu, SERVICE_USER))
}

/// Obtains an access token, asserting success.
async fn access_token(emu: &Emulator, assertion: &str) -> String {
    let resp = grant(emu, assertion).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.body["access_token"].as_str().unwrap().to_owned()
}

#[track_caller]
fn assert_oauth_error(resp: &Resp, error: &str, description: &str) {
    assert_eq!(resp.status, 400, "{}", resp.body);
    assert_eq!(resp.body["error"], error, "{}", resp.body);
    let text = resp.body["error_description"].as_str().unwrap_or_default();
    assert!(
        text.contains(description),
        "error_description {text:?} lacks {description:?}"
    );
    assert_eq!(resp.headers[CACHE_CONTROL], "no-store");
}

#[track_caller]
fn assert_token_invalid(resp: &Resp) {
    assert_eq!(resp.status, 401, "{}", resp.body);
    assert_eq!(resp.body["code"], 16);
    assert_eq!(resp.body["message"], "Token is invalid (AUTH-7fs1e)");
    assert_eq!(resp.body["details"][0]["id"], "AUTH-7fs1e");
    assert_eq!(
        resp.headers[WWW_AUTHENTICATE],
        "Token is invalid (AUTH-7fs1e)"
    );
}

#[tokio::test]
async fn key_file_grant_and_api_calls() {
    let emu = Emulator::start_seeded().await.unwrap();
    emu.register_service_user(SERVICE_USER, TokenGrant::org_owner(ACME));
    let file: Value = serde_json::from_str(&emu.generate_key_file(SERVICE_USER).unwrap()).unwrap();
    assert_eq!(file["type"], "serviceaccount");
    assert_eq!(file["userId"], SERVICE_USER);
    assert_eq!(file["expirationDate"], "9999-12-31T23:59:59Z");
    let key_id = file["keyId"].as_str().unwrap();
    assert_eq!(key_id.len(), 18);
    assert!(key_id.bytes().all(|b| b.is_ascii_digit()));
    let key = file["key"].as_str().unwrap();
    assert!(
        key.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"),
        "{key}"
    );
    assert!(key.trim_end().ends_with("-----END RSA PRIVATE KEY-----"));
    assert_eq!(file.as_object().unwrap().len(), 5);

    // What a client does with the key file: sign an assertion, exchange it for a token.
    let resp = grant(&emu, &sign(key, key_id, &claims(&emu, SERVICE_USER))).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.body["token_type"], "Bearer");
    assert_eq!(resp.body["expires_in"], 43199);
    assert_eq!(resp.headers[CACHE_CONTROL], "no-store");
    let token = resp.body["access_token"].as_str().unwrap();
    assert!(token.len() >= 32);
    assert_eq!(emu.token_requests(), 1);
    assert_eq!(emu.count(Operation::OAuthToken), 1);

    // The token acts as the service user: context org = its org, ORG_OWNER permissions there.
    let org = my_org(&emu, token).await;
    assert_eq!(org.status, 200, "{}", org.body);
    assert_eq!(org.body["org"]["id"], ACME);
    let set = api(
        &emu,
        Method::POST,
        "/management/v1/metadata/team",
        token,
        None,
        Some(json!({ "value": "cGxhdGZvcm0=" })),
    )
    .await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(emu.org_metadata(ACME)["team"], b"platform");
    let other = api(
        &emu,
        Method::GET,
        "/management/v1/orgs/me",
        token,
        Some(GLOBEX),
        None,
    )
    .await;
    // An org owner of Acme holds no membership in Globex: 404 AUTHZ-cdgFk (contract §3).
    assert_eq!(other.status, 404, "{}", other.body);
    assert_eq!(other.body["details"][0]["id"], "AUTHZ-cdgFk");

    // Each key file is a new key under a new id; both verify.
    let second: Value =
        serde_json::from_str(&emu.generate_key_file(SERVICE_USER).unwrap()).unwrap();
    assert_ne!(second["keyId"], file["keyId"]);
    assert_ne!(second["key"], file["key"]);
    let second_key_id = second["keyId"].as_str().unwrap();
    let resp = grant(
        &emu,
        &sign(
            second["key"].as_str().unwrap(),
            second_key_id,
            &claims(&emu, SERVICE_USER),
        ),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_ne!(resp.body["access_token"], token);

    let state = send(client().get(format!("{}/_emulator/state", emu.url()))).await;
    assert_eq!(state.body["issuer"], emu.issuer());
    assert_eq!(
        state.body["serviceUsers"],
        json!([{ "id": SERVICE_USER, "ownerOrg": ACME, "keyIds": [key_id, second_key_id] }])
    );
    assert_eq!(state.body["issuedTokens"], 2);

    assert!(emu.generate_key_file("no-such-user").is_err());
    emu.shutdown().await;
}

#[tokio::test]
async fn discovery_names_issuer_and_token_endpoint() {
    let emu = Emulator::start().await.unwrap();
    assert_eq!(emu.issuer(), emu.url());
    let resp = send(client().get(format!("{}/.well-known/openid-configuration", emu.url()))).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body["issuer"], emu.url());
    assert_eq!(
        resp.body["token_endpoint"],
        format!("{}/oauth/v2/token", emu.url())
    );
    assert!(
        resp.body["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(JWT_BEARER))
    );
    assert_eq!(emu.count(Operation::OidcDiscovery), 1);
    assert_eq!(Operation::OidcDiscovery.grpc_method(), None);
    assert_eq!(
        Operation::OIDC,
        [Operation::OAuthToken, Operation::OidcDiscovery]
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn public_keys_as_spki_or_pkcs1_and_audience_arrays() {
    let emu = emulator().await;
    let pkcs1 = RsaPrivateKey::from_pkcs1_pem(OTHER_TEST_KEY)
        .unwrap()
        .to_public_key()
        .to_pkcs1_pem(LineEnding::LF)
        .unwrap();
    assert!(pkcs1.starts_with("-----BEGIN RSA PUBLIC KEY-----"));
    emu.add_service_user_key(SERVICE_USER, OTHER_KEY_ID, &pkcs1);
    access_token(
        &emu,
        &sign(OTHER_TEST_KEY, OTHER_KEY_ID, &claims(&emu, SERVICE_USER)),
    )
    .await;

    // `aud` may be an array that contains the issuer among others.
    let mut c = claims(&emu, SERVICE_USER);
    c["aud"] = json!(["https://elsewhere.example", emu.issuer()]);
    access_token(&emu, &sign(TEST_KEY, KEY_ID, &c)).await;
    emu.shutdown().await;
}

#[tokio::test]
#[should_panic(expected = "not an RSA public key")]
async fn adding_a_non_key_panics() {
    let emu = emulator().await;
    emu.add_service_user_key(
        SERVICE_USER,
        OTHER_KEY_ID,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n",
    );
}

#[tokio::test]
async fn wrong_signing_key_or_algorithm() {
    let emu = emulator().await;
    // Signed with another key than the one registered under the kid.
    let resp = grant(
        &emu,
        &sign(OTHER_TEST_KEY, KEY_ID, &claims(&emu, SERVICE_USER)),
    )
    .await;
    assert_oauth_error(&resp, "invalid_grant", "invalid signature");

    // A tampered payload.
    let token = assertion(&emu);
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut forged = claims(&emu, SERVICE_USER);
    forged["exp"] = json!(now() + 3000);
    parts[1] = base64_url(&forged);
    let resp = grant(&emu, &parts.join(".")).await;
    assert_oauth_error(&resp, "invalid_grant", "invalid signature");

    // HS256 with the public key as secret (algorithm confusion) is refused before any key use.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(KEY_ID.to_owned());
    let hs = encode(
        &header,
        &claims(&emu, SERVICE_USER),
        &EncodingKey::from_secret(public_pem(TEST_KEY).as_bytes()),
    )
    .unwrap();
    let resp = grant(&emu, &hs).await;
    assert_oauth_error(&resp, "invalid_grant", "signature algorithm not supported");
    assert_eq!(emu.token_requests(), 3);
    emu.shutdown().await;
}

fn base64_url(value: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

#[tokio::test]
async fn unknown_kid_or_key_of_another_user() {
    let emu = emulator().await;
    let resp = grant(
        &emu,
        &sign(TEST_KEY, "999999999999999999", &claims(&emu, SERVICE_USER)),
    )
    .await;
    assert_oauth_error(&resp, "invalid_grant", "invalid signature");

    // The kid exists, but for another service user: keys are looked up per `iss`.
    emu.register_service_user(OTHER_USER, TokenGrant::org_owner(GLOBEX));
    emu.add_service_user_key(OTHER_USER, OTHER_KEY_ID, &public_pem(OTHER_TEST_KEY));
    let resp = grant(
        &emu,
        &sign(OTHER_TEST_KEY, OTHER_KEY_ID, &claims(&emu, SERVICE_USER)),
    )
    .await;
    assert_oauth_error(&resp, "invalid_grant", "invalid signature");
    // ... and works for its owner.
    let token = access_token(
        &emu,
        &sign(OTHER_TEST_KEY, OTHER_KEY_ID, &claims(&emu, OTHER_USER)),
    )
    .await;
    assert_eq!(my_org(&emu, &token).await.body["org"]["id"], GLOBEX);

    // A header without kid.
    let header = Header::new(Algorithm::RS256);
    let no_kid = encode(
        &header,
        &claims(&emu, SERVICE_USER),
        &EncodingKey::from_rsa_pem(TEST_KEY.as_bytes()).unwrap(),
    )
    .unwrap();
    let resp = grant(&emu, &no_kid).await;
    assert_oauth_error(&resp, "invalid_grant", "invalid signature");
    emu.shutdown().await;
}

#[tokio::test]
async fn issuer_must_equal_subject_and_name_a_service_user() {
    let emu = emulator().await;
    emu.register_service_user(OTHER_USER, TokenGrant::org_owner(GLOBEX));
    let mut c = claims(&emu, SERVICE_USER);
    c["sub"] = json!(OTHER_USER);
    let resp = grant(&emu, &sign(TEST_KEY, KEY_ID, &c)).await;
    assert_oauth_error(
        &resp,
        "invalid_grant",
        "delegation not allowed, issuer and sub must be identical",
    );

    let resp = grant(&emu, &sign(TEST_KEY, KEY_ID, &claims(&emu, "no-such-user"))).await;
    assert_oauth_error(&resp, "invalid_grant", "User could not be found");
    emu.shutdown().await;
}

#[tokio::test]
async fn audience_must_contain_the_issuer() {
    let emu = emulator().await;
    for aud in [
        json!("https://zitadel.example"),
        json!(format!("{}/", emu.issuer())),
        json!([]),
        Value::Null,
    ] {
        let mut c = claims(&emu, SERVICE_USER);
        c["aud"] = aud.clone();
        let resp = grant(&emu, &sign(TEST_KEY, KEY_ID, &c)).await;
        assert_oauth_error(&resp, "invalid_grant", "audience is not valid");
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn expired_assertions_are_rejected() {
    let emu = emulator().await;
    let now = now();
    // Expired, expiring within ZITADEL's 1 s offset, no `exp`.
    for exp in [Some(now - 10), Some(now), Some(now + 1), None] {
        let mut c = claims(&emu, SERVICE_USER);
        c["iat"] = json!(now - 60);
        match exp {
            Some(exp) => c["exp"] = json!(exp),
            None => {
                c.as_object_mut().unwrap().remove("exp");
            }
        }
        let resp = grant(&emu, &sign(TEST_KEY, KEY_ID, &c)).await;
        assert_oauth_error(&resp, "invalid_grant", "token has expired");
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn issued_at_window() {
    let emu = emulator().await;
    let now = now();
    let with_iat = |iat: i64| {
        let mut c = claims(&emu, SERVICE_USER);
        c["iat"] = json!(iat);
        c["exp"] = json!(now + 600);
        sign(TEST_KEY, KEY_ID, &c)
    };
    let resp = grant(&emu, &with_iat(now + 60)).await;
    assert_oauth_error(&resp, "invalid_grant", "issuedAt of token is in the future");
    let resp = grant(&emu, &with_iat(now + 5)).await;
    assert_oauth_error(&resp, "invalid_grant", "issuedAt of token is in the future");
    // One second ahead is within ZITADEL's clock tolerance.
    access_token(&emu, &with_iat(now + 1)).await;

    let resp = grant(&emu, &with_iat(now - 3700)).await;
    assert_oauth_error(&resp, "invalid_grant", "issuedAt of token is to old");
    access_token(&emu, &with_iat(now - 3500)).await;

    let mut c = claims(&emu, SERVICE_USER);
    c.as_object_mut().unwrap().remove("iat");
    let resp = grant(&emu, &sign(TEST_KEY, KEY_ID, &c)).await;
    assert_oauth_error(&resp, "invalid_grant", "issuedAt of token is missing");
    emu.shutdown().await;
}

#[tokio::test]
async fn without_the_api_audience_scope_the_token_is_useless() {
    let emu = emulator().await;
    // No scope at all: rejected at the endpoint.
    let resp = token_request(
        &emu,
        &[("grant_type", JWT_BEARER), ("assertion", &assertion(&emu))],
    )
    .await;
    assert_oauth_error(
        &resp,
        "invalid_request",
        "The scope of your request is missing",
    );

    // `openid` only: a token is issued, but ZITADEL's API does not accept it.
    let resp = token_request(
        &emu,
        &[
            ("grant_type", JWT_BEARER),
            ("assertion", &assertion(&emu)),
            ("scope", "openid profile"),
        ],
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let token = resp.body["access_token"].as_str().unwrap();
    assert_token_invalid(&my_org(&emu, token).await);

    // The audience scope alone is enough.
    let resp = token_request(
        &emu,
        &[
            ("grant_type", JWT_BEARER),
            ("assertion", &assertion(&emu)),
            ("scope", "urn:zitadel:iam:org:project:id:zitadel:aud"),
        ],
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let token = resp.body["access_token"].as_str().unwrap();
    assert_eq!(my_org(&emu, token).await.status, 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn malformed_token_requests() {
    let emu = emulator().await;
    let resp = token_request(&emu, &[("assertion", &assertion(&emu)), ("scope", SCOPES)]).await;
    assert_oauth_error(&resp, "invalid_request", "grant_type missing");

    let resp = token_request(
        &emu,
        &[("grant_type", "client_credentials"), ("scope", SCOPES)],
    )
    .await;
    assert_oauth_error(
        &resp,
        "unsupported_grant_type",
        "client_credentials not supported",
    );

    let resp = token_request(&emu, &[("grant_type", JWT_BEARER), ("scope", SCOPES)]).await;
    assert_oauth_error(&resp, "invalid_request", "assertion missing");

    let resp = grant(&emu, "not-a-jwt").await;
    assert_oauth_error(&resp, "invalid_grant", "parsing of request failed");

    // A JSON body is not a form: nothing is read from it.
    let resp =
        send(client().post(format!("{}/oauth/v2/token", emu.url())).json(
            &json!({ "grant_type": JWT_BEARER, "assertion": assertion(&emu), "scope": SCOPES }),
        ))
        .await;
    assert_oauth_error(&resp, "invalid_request", "grant_type missing");

    // Only POST.
    let resp = send(client().get(format!("{}/oauth/v2/token", emu.url()))).await;
    assert_eq!(resp.status, 501);
    assert_eq!(emu.token_requests(), 5);
    assert_eq!(emu.count(Operation::Other), 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn access_tokens_expire() {
    let emu = emulator().await;
    emu.set_access_token_lifetime(Duration::from_secs(1));
    let resp = grant(&emu, &assertion(&emu)).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.body["expires_in"], 1);
    let token = resp.body["access_token"].as_str().unwrap();
    assert_eq!(my_org(&emu, token).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_token_invalid(&my_org(&emu, token).await);

    // A new grant gets a new token; sub-second lifetimes are reported rounded up.
    emu.set_access_token_lifetime(Duration::from_millis(2500));
    let resp = grant(&emu, &assertion(&emu)).await;
    assert_eq!(resp.body["expires_in"], 3);
    let fresh = resp.body["access_token"].as_str().unwrap();
    assert_eq!(my_org(&emu, fresh).await.status, 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn removed_keys_no_longer_grant() {
    let emu = emulator().await;
    let token = access_token(&emu, &assertion(&emu)).await;
    emu.remove_service_user_key(SERVICE_USER, KEY_ID);
    let resp = grant(&emu, &assertion(&emu)).await;
    assert_oauth_error(&resp, "invalid_grant", "invalid signature");
    // Tokens issued before stay valid until they expire.
    assert_eq!(my_org(&emu, &token).await.status, 200);
    // Removing an unknown key or user is a no-op.
    emu.remove_service_user_key(SERVICE_USER, KEY_ID);
    emu.remove_service_user_key("no-such-user", KEY_ID);
    emu.shutdown().await;
}

async fn set_org_metadata(emu: &Emulator, token: &str) -> Resp {
    api(
        emu,
        Method::POST,
        "/management/v1/metadata/k",
        token,
        None,
        Some(json!({ "value": "dg==" })),
    )
    .await
}

#[tokio::test]
async fn tokens_follow_the_service_users_current_grant() {
    let emu = Emulator::start_seeded().await.unwrap();
    emu.register_service_user(SERVICE_USER, TokenGrant::org_owner_viewer(ACME));
    emu.add_service_user_key(SERVICE_USER, KEY_ID, &public_pem(TEST_KEY));
    let token = access_token(&emu, &assertion(&emu)).await;
    let denied = set_org_metadata(&emu, &token).await;
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert_eq!(denied.body["details"][0]["id"], "AUTH-5mWD2");
    // Re-registering changes the grant (keys are kept), also for issued tokens.
    emu.register_service_user(SERVICE_USER, TokenGrant::iam_owner(ACME));
    assert_eq!(set_org_metadata(&emu, &token).await.status, 200);
    let globex = api(
        &emu,
        Method::GET,
        "/management/v1/orgs/me",
        &token,
        Some(GLOBEX),
        None,
    )
    .await;
    assert_eq!(globex.body["org"]["id"], GLOBEX);
    access_token(&emu, &assertion(&emu)).await;
    emu.shutdown().await;
}

/// A client whose clock runs ahead of ZITADEL's: an `iat` of "now" on the client is more than
/// 1 s in the emulator's future and is refused; a backdated `iat` passes (contract §11).
#[tokio::test]
async fn skewed_emulator_clock_refuses_future_iat() {
    let emu = emulator().await;
    emu.set_clock_offset(chrono::TimeDelta::seconds(-5));
    let resp = grant(&emu, &assertion(&emu)).await;
    assert_oauth_error(&resp, "invalid_grant", "issuedAt of token is in the future");
    let now = now();
    let backdated = json!({ "iss": SERVICE_USER, "sub": SERVICE_USER, "aud": emu.issuer(), "iat": now - 60, "exp": now + 300 });
    let resp = grant(&emu, &sign(TEST_KEY, KEY_ID, &backdated)).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    // An emulator clock ahead of the client by more than the assertion's lifetime: expired.
    emu.set_clock_offset(chrono::TimeDelta::seconds(600));
    let resp = grant(&emu, &assertion(&emu)).await;
    assert_oauth_error(&resp, "invalid_grant", "token has expired");
    // And an iat older than one hour in the emulator's time.
    emu.set_clock_offset(chrono::TimeDelta::seconds(3700));
    let long = json!({ "iss": SERVICE_USER, "sub": SERVICE_USER, "aud": emu.issuer(), "iat": now, "exp": now + 7200 });
    let resp = grant(&emu, &sign(TEST_KEY, KEY_ID, &long)).await;
    assert_oauth_error(&resp, "invalid_grant", "issuedAt of token is to old");
    emu.shutdown().await;
}
