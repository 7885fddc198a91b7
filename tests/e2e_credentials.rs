//! End-to-end: credentials over their life, on every path — `--token-secret` and `--token-file`
//! (the real binary), a `ZitadelConnection` with a PAT and with a JWT-profile key (in-process).
//! Each starts before its credential exists (the operator does not exit; objects say what is
//! missing), then the credential is created (objects Ready within 10 s, no restart), rotated to
//! one ZITADEL rejects (objects report it), and rotated back (Ready within 10 s).
//!
//! Resync and stalled-retry intervals are long (5 and 10 minutes): everything that heals here
//! heals because the change re-queued it, not because a timer came round.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::json;
use zitadel_metadata_operator::controller::Settings;
use zitadel_metadata_operator::crd::{MetadataResource as _, ZitadelConnection};
use zitadel_metadata_operator::status;
use zmo_testkit::emulator::TokenGrant;

/// The bound the issue sets for a fixed credential to heal its objects.
const BOUND: Duration = Duration::from_secs(10);
/// How long the tests give objects to report a rejected credential.
const REPORT: Duration = Duration::from_secs(15);

/// Production-like timers: nothing here may heal by a resync or a stalled retry.
fn slow_timers() -> Settings {
    Settings {
        resync: Duration::from_secs(300),
        stalled_requeue: Duration::from_secs(600),
        ..fast_settings()
    }
}

async fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    http_get(addr, path)
        .await
        .map(|(status, _, body)| (status, body))
}

/// Wait until object `name` is Ready for its generation; the time it took.
async fn ready_within(env: &TestEnv, name: &str, since: Instant) -> Duration {
    env.wait_org(name, "Ready", |o| {
        is_ready(o.status(), o.metadata.generation)
    })
    .await;
    since.elapsed()
}

/// Wait until object `name` is not Ready with one of `reasons`; its Ready message.
async fn reports(env: &TestEnv, name: &str, reasons: &[&str]) -> String {
    reports_with(env, name, reasons, "").await
}

/// Wait until object `name` is not Ready with one of `reasons` and a message containing
/// `needle`; its Ready message.
async fn reports_with(env: &TestEnv, name: &str, reasons: &[&str], needle: &str) -> String {
    let deadline = Instant::now() + REPORT;
    loop {
        let o = env.orgs().get(name).await.expect("get");
        if let Some(r) = reason(o.status())
            && reasons.contains(&r)
            && condition(o.status(), status::READY) == Some("False")
            && message(o.status()).contains(needle)
        {
            return message(o.status());
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not report {reasons:?}: {:?} {}",
            reason(o.status()),
            message(o.status())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The operator binary with the default connection from `flags`, timers slow, logs to `log`.
struct Flagged {
    binary: OperatorBinary,
    health: String,
    metrics: String,
    log: std::path::PathBuf,
}

impl Flagged {
    fn start(env: &TestEnv, flags: &[String], dir: &std::path::Path) -> Self {
        let (health, metrics) = (free_addr(), free_addr());
        let log = dir.join("operator.log");
        let out = std::fs::File::create(&log).expect("log file");
        let binary = Launch::new(env.cp.kubeconfig_path(), &env.ns, "5m")
            .args(["--zitadel-url", &env.emu.url()])
            .args(flags)
            .args(["--stalled-retry-interval", "10m"])
            .addresses(&health, &metrics)
            .env("RUST_LOG", "info,kube=warn")
            .output(out, Stdio::inherit())
            .spawn();
        Flagged {
            binary,
            health,
            metrics,
            log,
        }
    }

    async fn readyz(&self) -> Option<(u16, String)> {
        get(&self.health, "/readyz").await
    }

    /// The `zitadel_default_connection_credentials` series at 1.
    async fn credential_state(&self) -> Option<String> {
        let (_, text) = get(&self.metrics, "/metrics").await?;
        text.lines()
            .filter(|l| l.starts_with("zitadel_default_connection_credentials{"))
            .find(|l| l.ends_with(" 1"))
            .map(str::to_owned)
    }

    async fn wait_state(&self, state: &str) -> String {
        let needle = format!("state=\"{state}\"");
        eventually(REPORT, &format!("credential state {state}"), || async {
            self.credential_state()
                .await
                .filter(|l| l.contains(&needle))
        })
        .await
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The flag-configured credential's life, whatever `install` / `rotate` write it to.
async fn flag_credential_lifecycle(
    env: &TestEnv,
    op: &mut Flagged,
    missing: &str,
    install: impl AsyncFn(&str),
) -> [Duration; 2] {
    env.emu
        .add_token("rejected-soon", TokenGrant::iam_owner(ACME));
    // Serving, not ready, and saying what is missing (once the caches are synced).
    let (code, body) = eventually(BOUND, "/readyz names the credential", || async {
        op.readyz().await.filter(|(_, body)| body.contains(missing))
    })
    .await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(get(&op.health, "/healthz").await.map(|r| r.0), Some(200));
    let unavailable = op.wait_state("unavailable").await;
    assert!(
        unavailable.contains(missing.split(' ').next().unwrap_or_default()),
        "{unavailable}"
    );
    env.apply_org_values("acme", ACME, &[("k", "1")]).await;
    let text = reports(env, "acme", &["CredentialsUnavailable"]).await;
    assert!(text.contains(missing), "{text}");
    assert!(op.binary.exited().is_none(), "the operator exited");

    // The credential appears: Ready within the bound, no restart.
    let created = Instant::now();
    install(TOKEN).await;
    let healed_after_create = ready_within(env, "acme", created).await;
    assert_eq!(op.readyz().await.map(|r| r.0), Some(200));
    op.wait_state("accepted").await;
    assert_eq!(env.org_value(ACME, "k").as_deref(), Some("1"));

    // Rotated to a credential ZITADEL rejects: objects report it (re-queued, not resynced).
    env.emu.revoke_token("rejected-soon");
    install("rejected-soon").await;
    reports(env, "acme", &["ZitadelUnauthenticated"]).await;
    op.wait_state("rejected").await;
    assert_eq!(
        op.readyz().await.map(|r| r.0),
        Some(200),
        "rejected is the objects' to say"
    );

    // Rotated back: Ready within the bound.
    let restored = Instant::now();
    install(TOKEN).await;
    let healed_after_restore = ready_within(env, "acme", restored).await;
    op.wait_state("accepted").await;
    assert!(op.binary.exited().is_none(), "the operator restarted");
    let logs = op.logs();
    for line in [
        "credentials unavailable",
        "picked up a new credential",
        "ZITADEL accepted the credential",
        "ZITADEL rejected the credential",
    ] {
        assert!(logs.contains(line), "no {line:?} in the log:\n{logs}");
    }
    assert!(
        !logs.contains(TOKEN) && !logs.contains("rejected-soon"),
        "a token was logged"
    );
    [healed_after_create, healed_after_restore]
}

#[tokio::test]
async fn token_secret_created_after_start_rotated_and_restored() {
    let env = TestEnv::new("cred-secret").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let flags = [format!("--token-secret={}/zitadel-token", env.ns)];
    let mut op = Flagged::start(&env, &flags, dir.path());
    let missing = format!("Secret {}/zitadel-token not found", env.ns);
    let install = async |token: &str| {
        env.put_secret(&env.ns, "zitadel-token", "token", token)
            .await
    };
    let [created, restored] = flag_credential_lifecycle(&env, &mut op, &missing, install).await;
    // Held while the object uses the default connection (issue 17).
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    assert_eq!(
        finalizers_of(&secrets, "zitadel-token").await,
        ["metadata.zitadel-operator.dev/default-connection"]
    );
    println!(
        "FIGURE credentials_token_secret ready_after_create={created:?} ready_after_restore={restored:?}"
    );
    assert!(
        created < BOUND && restored < BOUND,
        "{created:?} {restored:?}"
    );
    assert!(op.binary.stop().await.success());
}

#[tokio::test]
async fn token_file_created_after_start_rotated_and_restored() {
    let env = TestEnv::new("cred-file").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("token");
    let flags = [format!("--token-file={}", path.display())];
    let mut op = Flagged::start(&env, &flags, dir.path());
    let missing = format!("token file {} does not exist", path.display());
    // As the kubelet updates a mounted Secret: a new file moved into place.
    let install = async |token: &str| {
        let next = dir.path().join("token.next");
        std::fs::write(&next, token).expect("write");
        std::fs::rename(&next, &path).expect("rename");
    };
    let [created, restored] = flag_credential_lifecycle(&env, &mut op, &missing, install).await;
    println!(
        "FIGURE credentials_token_file ready_after_create={created:?} ready_after_restore={restored:?}"
    );
    assert!(
        created < BOUND && restored < BOUND,
        "{created:?} {restored:?}"
    );
    assert!(op.binary.stop().await.success());
}

async fn connection_ready(conns: &Api<ZitadelConnection>, name: &str) -> Option<(String, String)> {
    let c = conns.get(name).await.ok()?;
    let s = c.status?;
    status::find(&s.conditions, status::READY).map(|r| (r.status.clone(), r.reason.clone()))
}

/// A connection's credential life: `install` writes the Secret's key.
async fn connection_credential_lifecycle(
    env: &TestEnv,
    connection: serde_json::Value,
    good: &str,
    bad: &str,
    install: impl AsyncFn(&str),
) -> [Duration; 2] {
    let op = Operator::start_multi_tenant(env.client.clone(), vec![env.ns.clone()], slow_timers());
    env.apply_connection("z", connection).await;
    let conns: Api<ZitadelConnection> = Api::namespaced(env.client.clone(), &env.ns);
    env.apply_org(
        "acme",
        json!({"organizationId": ACME, "connectionRef": {"name": "z"}, "metadata": [{"key": "k", "value": "1"}]}),
    )
    .await;
    let text = reports_with(env, "acme", &["ConnectionNotReady"], "SecretNotFound").await;
    assert!(text.contains("zitadel-cred"), "{text}");

    let created = Instant::now();
    install(good).await;
    let healed_after_create = ready_within(env, "acme", created).await;

    install(bad).await;
    reports_with(
        env,
        "acme",
        &["ConnectionNotReady"],
        "authenticated probe failed",
    )
    .await;
    let ready = connection_ready(&conns, "z").await;
    assert_eq!(
        ready.as_ref().map(|r| r.0.as_str()),
        Some("False"),
        "{ready:?}"
    );

    let restored = Instant::now();
    install(good).await;
    let healed_after_restore = ready_within(env, "acme", restored).await;
    // The rotations are visible on the connection, without the credential.
    let events = env.events().await;
    for reason in [
        "CredentialsChanged",
        "CredentialsAccepted",
        "CredentialsRejected",
    ] {
        assert!(
            events.iter().any(|(r, _)| r == reason),
            "no {reason}: {events:?}"
        );
    }
    assert!(
        events
            .iter()
            .all(|(_, n)| !n.contains(good) && !n.contains(bad)),
        "{events:?}"
    );
    op.stop().await;
    [healed_after_create, healed_after_restore]
}

#[tokio::test]
async fn connection_pat_created_after_start_rotated_and_restored() {
    let env = TestEnv::new("cred-pat").await;
    env.emu
        .add_token("pat-revoked", TokenGrant::iam_owner(ACME));
    env.emu.revoke_token("pat-revoked");
    let connection = json!({"url": env.emu.url(),
        "credentials": {"personalAccessToken": {"name": "zitadel-cred", "key": "token"}}});
    let install = async |token: &str| {
        env.put_secret(&env.ns, "zitadel-cred", "token", token)
            .await
    };
    let [created, restored] =
        connection_credential_lifecycle(&env, connection, TOKEN, "pat-revoked", install).await;
    println!(
        "FIGURE credentials_connection_pat ready_after_create={created:?} ready_after_restore={restored:?}"
    );
    assert!(
        created < BOUND && restored < BOUND,
        "{created:?} {restored:?}"
    );
}

#[tokio::test]
async fn connection_jwt_profile_created_after_start_rotated_and_restored() {
    let env = TestEnv::new("cred-jwt").await;
    let user = "300000000000000077";
    env.emu
        .register_service_user(user, TokenGrant::iam_owner(ACME));
    let good = env.emu.generate_key_file(user).expect("key file");
    let bad = env.emu.generate_key_file(user).expect("key file");
    let bad_id: serde_json::Value = serde_json::from_str(&bad).expect("json");
    env.emu
        .remove_service_user_key(user, bad_id["keyId"].as_str().expect("keyId"));
    let connection = json!({"url": env.emu.url(),
        "credentials": {"jwtProfile": {"name": "zitadel-cred", "key": "key.json"}}});
    let install = async |key: &str| {
        env.put_secret(&env.ns, "zitadel-cred", "key.json", key)
            .await
    };
    let [created, restored] =
        connection_credential_lifecycle(&env, connection, &good, &bad, install).await;
    println!(
        "FIGURE credentials_connection_jwt ready_after_create={created:?} ready_after_restore={restored:?}"
    );
    assert!(
        created < BOUND && restored < BOUND,
        "{created:?} {restored:?}"
    );
}

/// A call that gets a 401 right after a rotation is retried once with the credential read again
/// — the connection's PAT and the `--token-secret` token alike — so nothing is declared stalled
/// while the rest of the operator catches up. (No control plane: the Secret is in memory.)
#[tokio::test]
async fn a_401_right_after_a_rotation_is_retried_with_the_new_credential() {
    use std::sync::Arc;
    use zitadel_metadata_operator::connections::credentials::{
        FlagToken, SecretKey, SourceToken, TokenLocation,
    };
    use zitadel_metadata_operator::sources::{Lookup, SourceKind, SourceObject, ValueSources};
    use zitadel_metadata_operator::zitadel::{Target, TokenSource, ZitadelApi};
    use zmo_testkit::emulator::{Emulator, Operation};

    /// One Secret `team/pat` with key `token`, in memory.
    #[derive(Default)]
    struct OneSecret(std::sync::Mutex<(u64, Vec<u8>)>);
    impl OneSecret {
        fn put_secret(&self, _ns: &str, _name: &str, _key: &str, value: &[u8]) {
            let mut s = self.0.lock().expect("lock");
            *s = (s.0 + 1, value.to_vec());
        }
    }
    #[async_trait::async_trait]
    impl ValueSources for OneSecret {
        async fn get(&self, _kind: SourceKind, _ns: &str, _name: &str) -> Lookup {
            let (version, value) = self.0.lock().expect("lock").clone();
            Ok(Some(SourceObject {
                resource_version: Some(version.to_string()),
                values: [("token".to_string(), value)].into_iter().collect(),
            }))
        }
    }

    let emu = Emulator::start_seeded().await.expect("emulator");
    emu.add_token("old", TokenGrant::iam_owner(ACME));
    emu.add_token("new", TokenGrant::iam_owner(ACME));
    let fake = Arc::new(OneSecret::default());
    let sources: Arc<dyn ValueSources> = fake.clone();
    let target = Target::Org {
        org_id: ACME.into(),
    };
    let pat = SourceToken::new(
        SecretKey {
            namespace: "team".into(),
            name: "pat".into(),
            key: "token".into(),
        },
        sources.clone(),
        Arc::from("old"),
    );
    let flag = FlagToken::new(
        TokenLocation::Secret {
            namespace: "team".into(),
            name: "pat".into(),
            key: "token".into(),
        },
        sources,
    );
    fake.put_secret("team", "pat", "token", b"old");
    flag.observe().await.expect("read");
    for provider in [
        Arc::new(pat) as Arc<dyn zitadel_metadata_operator::zitadel::TokenProvider>,
        Arc::new(flag),
    ] {
        let client = zitadel_client(&emu.url(), TokenSource::Provided(provider));
        client
            .list_metadata(&target)
            .await
            .expect("the old token works");
        // Rotated: the Secret has the new token, ZITADEL no longer takes the old one, and the
        // client has not heard of it yet.
        fake.put_secret("team", "pat", "token", b"new");
        emu.revoke_token("old");
        emu.clear_requests();
        client
            .list_metadata(&target)
            .await
            .expect("retried with the new token");
        let statuses: Vec<u16> = emu
            .requests()
            .iter()
            .filter(|r| r.operation != Operation::GetMyOrg)
            .map(|r| r.status)
            .collect();
        assert_eq!(statuses.first(), Some(&401), "{statuses:?}");
        assert_eq!(statuses.last(), Some(&200), "{statuses:?}");
        // Back to the old one for the next provider.
        emu.add_token("old", TokenGrant::iam_owner(ACME));
        fake.put_secret("team", "pat", "token", b"old");
    }
}
