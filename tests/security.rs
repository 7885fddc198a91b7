//! Security: no secret in logs or Events (real binary at trace level), TLS verification on by
//! default (CA bundles, server names), least-privilege RBAC in the Helm chart, and no
//! cross-namespace reads.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, ValidationDirective};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use zitadel_metadata_operator::crd::{MetadataResource, OrgMetadata, ZitadelConnection};
use zmo_testkit::emulator::{Emulator, Operation, TlsMaterial, TokenGrant};

const SERVICE_USER: &str = "300000000000000777";

/// Random suffix, so markers are unique to this run.
fn marker(what: &str) -> String {
    format!("{what}-{:016x}", rand_u64())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

/// (status, reason, message) of a connection's Ready condition, once it has one.
async fn connection_ready(env: &TestEnv, name: &str, want: &str) -> (String, String) {
    let api: Api<ZitadelConnection> = Api::namespaced(env.client.clone(), &env.ns);
    let conn = wait_obj(&api, name, &format!("Ready={want}"), |c| {
        c.status.as_ref().is_some_and(|s| {
            zitadel_metadata_operator::status::find(&s.conditions, "Ready")
                .is_some_and(|r| r.status == want)
        })
    })
    .await;
    let ready = conn
        .status
        .as_ref()
        .and_then(|s| zitadel_metadata_operator::status::find(&s.conditions, "Ready"))
        .expect("Ready");
    (ready.reason.clone(), ready.message.clone())
}

async fn put_config_map(env: &TestEnv, name: &str, key: &str, value: &str) {
    let api: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.ns);
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
        "data": {key: value}});
    api.patch(
        name,
        &PatchParams::apply("e2e-test").force(),
        &Patch::Apply(&cm),
    )
    .await
    .expect("apply ConfigMap");
}

/// Every Event in `ns`, as JSON text.
async fn events_json(env: &TestEnv, ns: &str) -> Vec<String> {
    let api: Api<K8sEvent> = Api::namespaced(env.client.clone(), ns);
    api.list(&Default::default())
        .await
        .expect("list events")
        .items
        .iter()
        .map(|e| serde_json::to_string(e).expect("event json"))
        .collect()
}

/// `text` without ANSI SGR sequences (`ESC [ … m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

async fn read_all(mut pipe: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = pipe.read_to_end(&mut out).await;
    out
}

/// What must never appear: tokens, the assertion(s), the private key, every value (also
/// base64-encoded, as they travel to ZITADEL).
fn secrets_to_look_for(
    env: &TestEnv,
    pat: &str,
    key_file: &str,
    values: &[(&str, &String)],
) -> BTreeMap<String, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut secrets: BTreeMap<String, String> = BTreeMap::new();
    secrets.insert("PAT".into(), pat.to_string());
    for (i, token) in env.emu.issued_access_tokens().into_iter().enumerate() {
        secrets.insert(format!("access token {i}"), token);
    }
    let assertions: Vec<String> = env
        .emu
        .requests()
        .into_iter()
        .filter(|r| r.operation == Operation::OAuthToken)
        .filter_map(|r| r.body.as_str().map(str::to_owned))
        .filter_map(|form| {
            url::form_urlencoded::parse(form.as_bytes())
                .find(|(k, _)| k == "assertion")
                .map(|(_, v)| v.into_owned())
        })
        .collect();
    assert!(!assertions.is_empty(), "the JWT profile grant was not used");
    for (i, assertion) in assertions.iter().enumerate() {
        secrets.insert(format!("assertion {i}"), assertion.clone());
        // The signature alone, too.
        if let Some(sig) = assertion.rsplit('.').next() {
            secrets.insert(format!("assertion {i} signature"), sig.to_owned());
        }
    }
    let key: Value = serde_json::from_str(key_file).expect("key file json");
    let pem = key["key"].as_str().expect("key pem");
    for (i, line) in pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 32)
        .enumerate()
    {
        secrets.insert(format!("private key line {i}"), line.to_owned());
    }
    secrets.insert("key file (base64)".into(), b64.encode(key_file));
    for (what, value) in values {
        secrets.insert(what.to_string(), value.to_string());
        secrets.insert(format!("{what} (base64)"), b64.encode(value));
    }

    secrets
}

/// Each secret found in the logs, an Event or a status, and any credential-looking log line.
fn find_leaks(
    logs: &str,
    events: &[String],
    statuses: &[String],
    secrets: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut leaks = Vec::new();
    for (what, secret) in secrets {
        if let Some(line) = logs.lines().find(|l| l.contains(secret.as_str())) {
            leaks.push(format!("{what} in log line: {line}"));
        }
        for event in events {
            if event.contains(secret.as_str()) {
                leaks.push(format!("{what} in event: {event}"));
            }
        }
        for status in statuses {
            if status.contains(secret.as_str()) {
                leaks.push(format!("{what} in status: {status}"));
            }
        }
    }
    // Any bearer header or JWT at all.
    for line in logs.lines() {
        if line.contains("Bearer ") || line.contains("eyJhbGciOi") || line.contains("eyJ0eXAiOi") {
            leaks.push(format!("credential-looking log line: {line}"));
        }
    }
    leaks
}

/// A JWT-profile connection `jwt` and a PAT connection `pat` on the emulator; returns the key
/// file and the PAT.
async fn two_connections(env: &TestEnv) -> (String, String) {
    env.emu
        .register_service_user(SERVICE_USER, TokenGrant::iam_owner(ACME));
    let key_file = env.emu.generate_key_file(SERVICE_USER).expect("key file");
    let pat = marker("pat-token-marker");
    env.emu.add_token(&pat, TokenGrant::iam_owner(ACME));
    env.put_secret(&env.ns, "zitadel-key", "key.json", &key_file)
        .await;
    env.put_secret(&env.ns, "zitadel-pat", "token", &pat).await;
    env.apply_connection_in(&env.ns,
        "jwt",
        json!({"url": env.emu.url(), "credentials": {"jwtProfile": {"name": "zitadel-key", "key": "key.json"}}}),
    )
    .await;
    env.apply_connection_in(&env.ns,
        "pat",
        json!({"url": env.emu.url(), "credentials": {"personalAccessToken": {"name": "zitadel-pat", "key": "token"}}}),
    )
    .await;

    (key_file, pat)
}

/// The statuses of the UserMetadata and connections in the namespace, as JSON.
async fn statuses_left(env: &TestEnv) -> Vec<String> {
    let mut statuses = Vec::new();
    for obj in env
        .users()
        .list(&Default::default())
        .await
        .expect("list")
        .items
    {
        statuses.push(serde_json::to_string(&obj.status).expect("json"));
    }
    let conns: Api<ZitadelConnection> = Api::namespaced(env.client.clone(), &env.ns);
    for obj in conns.list(&Default::default()).await.expect("list").items {
        statuses.push(serde_json::to_string(&obj.status).expect("json"));
    }

    statuses
}

/// Edit the org's inline value and rotate the Secret; wait until ZITADEL holds both.
async fn edit_and_rotate(env: &TestEnv, edited: &str, binary: &str, rotated: &str) {
    let b64 = base64::engine::general_purpose::STANDARD;
    env.apply_org(
        "org",
        json!({"organizationId": ACME, "connectionRef": {"name": "jwt"}, "metadata": [
            {"key": "plain", "value": edited},
            {"key": "bin", "binaryValue": b64.encode(binary)},
            {"key": "api-key", "valueFrom": {"secretKeyRef": {"name": "app", "key": "apiKey"}}},
        ]}),
    )
    .await;
    env.put_secret(&env.ns, "app", "apiKey", rotated).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while env.org_value(ACME, "plain").as_deref() != Some(edited)
        || env.org_value(ACME, "api-key").as_deref() != Some(rotated)
        || env
            .emu
            .user_metadata(ALICE)
            .get("api-key")
            .map(Vec::as_slice)
            != Some(rotated.as_bytes())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "edit / rotation not applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A whole scenario with the real binary at `RUST_LOG=trace`: a JWT-profile connection and a PAT
/// connection, Org and User metadata with inline, binary and Secret-sourced values, an edit, a
/// Secret rotation and a delete. No token, assertion, key material, Secret value or metadata value
/// may appear in the logs, in any Event, or in any status.
#[tokio::test]
async fn no_secret_reaches_logs_events_or_status() {
    let env = TestEnv::new("security-logs").await;
    let ns = env.ns.clone();
    let b64 = base64::engine::general_purpose::STANDARD;

    let (key_file, pat) = two_connections(&env).await;

    // Values.
    let inline = marker("inline-value-marker");
    let edited = marker("edited-value-marker");
    let binary = marker("binary-value-marker");
    let secret_value = marker("secret-value-marker");
    let rotated = marker("rotated-secret-marker");
    let user_value = marker("user-value-marker");
    env.put_secret(&ns, "app", "apiKey", &secret_value).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let mut op = Launch::new(env.cp.kubeconfig_path(), &ns, "2s")
        .env("RUST_LOG", "trace")
        .current_dir(dir.path())
        .output(Stdio::piped(), Stdio::piped())
        .spawn();
    let stdout = tokio::spawn(read_all(op.child.stdout.take().expect("stdout")));
    let stderr = tokio::spawn(read_all(op.child.stderr.take().expect("stderr")));

    connection_ready(&env, "jwt", "True").await;
    connection_ready(&env, "pat", "True").await;
    env.apply_org(
        "org",
        json!({"organizationId": ACME, "connectionRef": {"name": "jwt"}, "metadata": [
            {"key": "plain", "value": inline},
            {"key": "bin", "binaryValue": b64.encode(&binary)},
            {"key": "api-key", "valueFrom": {"secretKeyRef": {"name": "app", "key": "apiKey"}}},
        ]}),
    )
    .await;
    env.apply_user(
        "user",
        json!({"userId": ALICE, "connectionRef": {"name": "pat"}, "metadata": [
            {"key": "team", "value": user_value},
            {"key": "api-key", "valueFrom": {"secretKeyRef": {"name": "app", "key": "apiKey"}}},
        ]}),
    )
    .await;
    env.wait_org_ready("org").await;
    env.wait_user_ready("user").await;
    assert_eq!(env.org_value(ACME, "plain"), Some(inline.clone()));
    assert_eq!(env.org_value(ACME, "bin"), Some(binary.clone()));
    assert_eq!(env.org_value(ACME, "api-key"), Some(secret_value.clone()));

    // Edit the spec and rotate the Secret.
    edit_and_rotate(&env, &edited, &binary, &rotated).await;

    // Delete: the managed keys leave ZITADEL.
    env.delete_org("org").await;
    env.wait_org_gone("org").await;
    assert_eq!(env.org_value(ACME, "plain"), None);

    // Statuses of what is left, before stopping.
    let statuses = statuses_left(&env).await;

    let exit = op.stop().await;
    assert!(exit.success(), "operator exited with {exit}");
    let mut logs = stdout.await.expect("stdout");
    logs.extend(stderr.await.expect("stderr"));
    // Without ANSI colours, so a value is one contiguous string.
    let logs = strip_ansi(&String::from_utf8_lossy(&logs));
    let events = events_json(&env, &ns).await;

    let values = [
        ("inline value", &inline),
        ("edited value", &edited),
        ("binary value", &binary),
        ("secret value", &secret_value),
        ("rotated secret value", &rotated),
        ("user value", &user_value),
    ];
    let secrets = secrets_to_look_for(&env, &pat, &key_file, &values);

    let lines = logs.lines().count();
    // Trace level really was on (else this proves nothing): transport-level traces are there.
    assert!(
        lines > 200 && logs.contains("TRACE"),
        "expected trace logs, got {lines} lines"
    );
    let emulator_host = env.emu.url().trim_start_matches("http://").to_string();
    assert!(
        logs.lines()
            .filter(|l| l.contains(&emulator_host) && l.contains("reconciling"))
            .count()
            > 5,
        "the logs do not trace the ZITADEL calls"
    );
    let leaks = find_leaks(&logs, &events, &statuses, &secrets);
    if !leaks.is_empty() {
        let dump = std::env::temp_dir().join(format!("zmo-security-{ns}.log"));
        let _ = std::fs::write(&dump, &logs);
        panic!(
            "{} leak(s) (logs in {}):\n{}",
            leaks.len(),
            dump.display(),
            leaks.join("\n")
        );
    }
    println!(
        "FIGURE security_logs log_lines={lines} log_bytes={} markers={} events_scanned={} statuses_scanned={} leaks=0",
        logs.len(),
        secrets.len(),
        events.len(),
        statuses.len()
    );
}

/// TLS: verification is on by default. Without the CA a connection fails with a TLS reason and
/// nothing is written; with the CA (Secret or ConfigMap) it syncs; `tlsServerName` verifies
/// against another name than the URL's host.
#[tokio::test]
async fn tls_is_verified_and_ca_bundles_and_server_names_work() {
    let env = TestEnv::new("security-tls").await;
    let tls = TlsMaterial::generate(&["localhost", "zitadel.test"]).expect("certificates");
    let emu = Emulator::start_tls(&tls).await.expect("TLS emulator");
    emu.seed_demo();
    env.put_secret(&env.ns, "pat", "token", TOKEN).await;
    env.put_secret(&env.ns, "ca", "ca.crt", &tls.ca_pem).await;
    put_config_map(&env, "ca", "ca.crt", &tls.ca_pem).await;
    let pat = json!({"personalAccessToken": {"name": "pat", "key": "token"}});
    let localhost = emu.https_url("localhost");
    let by_ip = emu.https_url("127.0.0.1");
    env.apply_connection_in(
        &env.ns,
        "no-ca",
        json!({"url": localhost, "credentials": pat}),
    )
    .await;
    env.apply_connection_in(
        &env.ns,
        "secret-ca",
        json!({"url": localhost, "credentials": pat,
               "caBundle": {"secretRef": {"name": "ca", "key": "ca.crt"}}}),
    )
    .await;
    env.apply_connection_in(
        &env.ns,
        "configmap-ca-server-name",
        json!({"url": by_ip, "credentials": pat, "tlsServerName": "zitadel.test",
               "caBundle": {"configMapRef": {"name": "ca", "key": "ca.crt"}}}),
    )
    .await;
    env.apply_connection_in(
        &env.ns,
        "wrong-name",
        json!({"url": by_ip, "credentials": pat,
               "caBundle": {"configMapRef": {"name": "ca", "key": "ca.crt"}}}),
    )
    .await;
    let op =
        Operator::start_multi_tenant(env.client.clone(), vec![env.ns.clone()], fast_settings());

    let (why, text) = connection_ready(&env, "no-ca", "False").await;
    assert_eq!(why, "TlsVerificationFailed", "{text}");
    assert!(text.contains("UnknownIssuer"), "{text}");
    let (why, text) = connection_ready(&env, "wrong-name", "False").await;
    assert_eq!(why, "TlsVerificationFailed", "{text}");
    assert!(text.contains("not valid for name"), "{text}");
    connection_ready(&env, "secret-ca", "True").await;
    connection_ready(&env, "configmap-ca-server-name", "True").await;

    for (name, conn, org) in [
        ("untrusted", "no-ca", ACME),
        ("trusted", "secret-ca", ACME),
        ("server-name", "configmap-ca-server-name", GLOBEX),
    ] {
        env.apply_org(
            name,
            json!({"organizationId": org, "connectionRef": {"name": conn},
                   "metadata": [{"key": name, "value": "v"}]}),
        )
        .await;
    }
    env.wait_org_ready("trusted").await;
    env.wait_org_ready("server-name").await;
    let untrusted = env
        .wait_org("untrusted", "Ready=False", |o| {
            condition(o.status(), "Ready") == Some("False")
        })
        .await;
    assert_eq!(
        reason(untrusted.status()),
        Some("ConnectionNotReady"),
        "{}",
        message(untrusted.status())
    );
    assert!(emu.org_metadata(ACME).contains_key("trusted"));
    assert!(emu.org_metadata(GLOBEX).contains_key("server-name"));
    assert!(
        !emu.org_metadata(ACME).contains_key("untrusted"),
        "written without a trusted certificate"
    );
    let writes_without_ca = emu
        .requests()
        .into_iter()
        .filter(|r| r.body.to_string().contains("untrusted"))
        .count();
    assert_eq!(writes_without_ca, 0);
    op.stop().await;
    println!(
        "FIGURE security_tls connections=4 refused_without_ca=1 refused_wrong_name=1 ready_with_secret_ca=1 ready_with_configmap_ca_and_server_name=1 unverified_writes=0"
    );
}

/// `helm template` for several value sets: no wildcard in any Role/ClusterRole, and no write verb
/// on Secrets but `patch` — which the chart's ValidatingAdmissionPolicy (rendered with it, bound
/// with `Deny`) limits to `metadata.finalizers` for the operator's ServiceAccount
/// (`tests/e2e_helm.rs` shows the policy refusing data changes on the real apiserver).
#[tokio::test]
async fn rbac_has_no_wildcards_and_writes_secrets_only_for_finalizers() {
    let cp = shared_with_crds().await;
    let helm = cp.bin_dir().join("helm");
    assert!(
        helm.is_file(),
        "no helm in {}: tests/envtest/build.sh builds it",
        cp.bin_dir().display()
    );
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/zitadel-metadata-operator");
    let home = cp.root_dir().join("helm-home-security");
    let variants: [&[&str]; 6] = [
        &[],
        &["--set", "replicaCount=2"],
        &["--set", "watchNamespaces={team-a,team-b}"],
        &[
            "--set",
            "zitadel.url=https://z.example",
            "--set",
            "zitadel.tokenSecret.name=tok",
        ],
        &[
            "--set",
            "zitadel.url=https://z.example",
            "--set",
            "zitadel.existingSecret.name=tok",
        ],
        &[
            "--set",
            "leaderElection.enabled=true",
            "--set",
            "watchNamespaces={x}",
        ],
    ];
    let (mut roles, mut rules, mut secret_patches) = (0, 0, 0);
    let mut problems = Vec::new();
    for args in variants {
        let out = std::process::Command::new(&helm)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .args(["template", "zmo"])
            .arg(&chart)
            .args(["--namespace", "zitadel-system"])
            .args(args)
            .output()
            .expect("run helm");
        assert!(
            out.status.success(),
            "helm template {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
            .map(|doc| serde::Deserialize::deserialize(doc).expect("yaml"))
            .collect();
        let sa = docs
            .iter()
            .find(|d| d["kind"] == "ServiceAccount")
            .and_then(|d| d["metadata"]["name"].as_str())
            .unwrap_or_default();
        let user = format!("system:serviceaccount:zitadel-system:{sa}");
        let policy = docs
            .iter()
            .find(|d| d["kind"] == "ValidatingAdmissionPolicy");
        let guarded = policy.is_some_and(|p| {
            let spec = &p["spec"];
            let expression = spec["validations"][0]["expression"]
                .as_str()
                .unwrap_or_default();
            spec["matchConditions"][0]["expression"]
                .as_str()
                .is_some_and(|e| e.contains(&format!("{user:?}")))
                && spec["matchConstraints"]["resourceRules"][0]["resources"]
                    == serde_json::json!(["secrets", "configmaps"])
                && expression.contains("object.data == oldObject.data")
                && docs.iter().any(|d| {
                    d["kind"] == "ValidatingAdmissionPolicyBinding"
                        && d["spec"]["policyName"] == p["metadata"]["name"]
                        && d["spec"]["validationActions"] == serde_json::json!(["Deny"])
                })
        });
        for doc in docs.iter() {
            let kind = doc["kind"].as_str().unwrap_or_default();
            if kind != "Role" && kind != "ClusterRole" {
                continue;
            }
            roles += 1;
            let name = doc["metadata"]["name"].as_str().unwrap_or_default();
            for rule in doc["rules"].as_array().into_iter().flatten() {
                rules += 1;
                let list = |field: &str| -> Vec<String> {
                    rule[field]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                };
                for field in ["verbs", "resources", "apiGroups", "resourceNames"] {
                    if list(field).iter().any(|v| v.contains('*')) {
                        problems.push(format!(
                            "{args:?} {kind} {name}: wildcard in {field}: {rule}"
                        ));
                    }
                }
                if !rule["nonResourceURLs"].is_null() {
                    problems.push(format!("{args:?} {kind} {name}: nonResourceURLs: {rule}"));
                }
                let core = list("apiGroups").iter().any(|g| g.is_empty());
                if core
                    && list("resources")
                        .iter()
                        .any(|r| r == "secrets" || r.starts_with("secrets/"))
                {
                    let writes: Vec<String> = list("verbs")
                        .into_iter()
                        .filter(|v| !matches!(v.as_str(), "get" | "list" | "watch"))
                        .collect();
                    if writes.iter().any(|v| v != "patch") {
                        problems.push(format!(
                            "{args:?} {kind} {name}: writes Secrets ({writes:?}): {rule}"
                        ));
                    }
                    if !writes.is_empty() {
                        secret_patches += 1;
                        if !guarded {
                            problems.push(format!(
                                "{args:?} {kind} {name}: patches Secrets without the finalizers-only policy: {rule}"
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(
        roles >= 6 && rules >= 6,
        "rendered too little RBAC: {roles} roles, {rules} rules"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    println!(
        "FIGURE security_rbac variants={} roles={roles} rules={rules} wildcards=0 secret_writes_besides_finalizer_patch=0 secret_patch_rules={secret_patches} all_guarded_by_policy=true",
        variants.len()
    );
}

/// A tenant cannot make the operator read another namespace: a ZitadelConnection's credentials
/// or CA bundle naming another namespace are refused (and nothing is sent to ZITADEL with them);
/// a `valueFrom` reference has no namespace field (strict validation rejects one, and without it
/// the field is pruned, so the object's own namespace is read).
#[tokio::test]
async fn cross_namespace_references_are_refused() {
    let env = TestEnv::new("security-xns").await;
    let victim = env.cp.create_namespace("victim").await.expect("namespace");
    let victim_pat = marker("victim-pat");
    let victim_value = marker("victim-value");
    // Not a token the emulator knows: had the operator sent it, ZITADEL would have answered 401.
    env.put_secret(&victim, "zitadel-pat", "token", &victim_pat)
        .await;
    env.put_secret(&victim, "app", "apiKey", &victim_value)
        .await;
    env.put_secret(&env.ns, "own-pat", "token", TOKEN).await;

    env.apply_connection_in(
        &env.ns,
        "steal-token",
        json!({"url": env.emu.url(), "credentials": {"personalAccessToken":
            {"name": "zitadel-pat", "key": "token", "namespace": victim}}}),
    )
    .await;
    env.apply_connection_in(&env.ns,
        "steal-ca",
        json!({"url": env.emu.url(), "credentials": {"personalAccessToken": {"name": "own-pat", "key": "token"}},
               "caBundle": {"secretRef": {"name": "app", "key": "apiKey", "namespace": victim}}}),
    )
    .await;
    env.apply_connection_in(
        &env.ns,
        "own",
        json!({"url": env.emu.url(), "credentials": {"personalAccessToken":
            {"name": "own-pat", "key": "token", "namespace": env.ns}}}),
    )
    .await;
    let op =
        Operator::start_multi_tenant(env.client.clone(), vec![env.ns.clone()], fast_settings());
    for name in ["steal-token", "steal-ca"] {
        let (reason, message) = connection_ready(&env, name, "False").await;
        assert_eq!(reason, "InvalidCredentials", "{name}: {message}");
        assert!(message.contains("is not allowed"), "{name}: {message}");
        assert!(!message.contains(&victim_pat) && !message.contains(&victim_value));
    }
    // Naming its own namespace is fine.
    connection_ready(&env, "own", "True").await;
    // ZITADEL saw only "own"'s probes: nothing was sent with the victim's token.
    let requests = env.emu.requests();
    assert!(
        !requests.is_empty() && requests.iter().all(|r| r.status == 200),
        "{requests:?}"
    );

    // valueFrom with a namespace: strict field validation rejects it ...
    let obj: OrgMetadata = serde_json::from_value(json!({
        "apiVersion": "metadata.zitadel-operator.dev/v1alpha1", "kind": "OrgMetadata",
        "metadata": {"name": "steal-value"},
        "spec": {"organizationId": ACME, "connectionRef": {"name": "own"}, "metadata": [{"key": "k", "valueFrom":
            {"secretKeyRef": {"name": "app", "key": "apiKey"}}}]}}))
    .expect("json");
    let mut raw = serde_json::to_value(&obj).expect("json");
    raw["spec"]["metadata"][0]["valueFrom"]["secretKeyRef"]["namespace"] = json!(victim);
    // Server-side apply refuses the undeclared field whatever the field validation ...
    let mut lax = PatchParams::apply("e2e-test").force();
    lax.field_validation = Some(ValidationDirective::Ignore);
    let err = env
        .orgs()
        .patch("steal-value", &lax, &Patch::Apply(&raw))
        .await
        .expect_err("server-side apply accepted a namespace in valueFrom");
    assert!(err.to_string().contains("secretKeyRef.namespace"), "{err}");
    // ... and a plain create (default field validation) drops it: the object's own namespace is
    // read, where there is no such Secret.
    let ar = kube::api::ApiResource::erase::<OrgMetadata>(&());
    let dynamic: Api<kube::api::DynamicObject> =
        Api::namespaced_with(env.client.clone(), &env.ns, &ar);
    let obj: kube::api::DynamicObject = serde_json::from_value(raw).expect("dynamic object");
    let stored = dynamic
        .create(&kube::api::PostParams::default(), &obj)
        .await
        .expect("create");
    assert!(
        stored.data["spec"]["metadata"][0]["valueFrom"]["secretKeyRef"]["namespace"].is_null(),
        "namespace kept: {:?}",
        stored.data
    );
    let refused = env
        .wait_org("steal-value", "Ready=False", |o| {
            condition(o.status(), "Ready") == Some("False")
        })
        .await;
    let msg = message(refused.status());
    assert!(msg.contains(&env.ns) || msg.contains("not found"), "{msg}");
    assert!(env.org_value(ACME, "k").is_none());
    let events = events_json(&env, &env.ns).await;
    assert!(
        events
            .iter()
            .all(|e| !e.contains(&victim_value) && !e.contains(&victim_pat))
    );
    env.orgs()
        .delete("steal-value", &DeleteParams::default())
        .await
        .expect("delete");
    op.stop().await;
    println!(
        "FIGURE security_cross_namespace refused_connection_refs=2 apply_rejected_value_refs=1 pruned_value_refs=1 victim_reads=0"
    );
}
