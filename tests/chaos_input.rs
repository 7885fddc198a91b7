//! Bad input: arbitrary CRD entries through validation and the planner, and malformed ZITADEL
//! answers through the HTTP client. Nothing may panic; every failure must be a typed error; a
//! huge answer must not be buffered whole.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use zitadel_metadata_operator::crd::{
    self, EntryError, KeyRef, MAX_KEY_CHARS, MAX_VALUE_BYTES, MetadataEntry, ValueSource,
};
use zitadel_metadata_operator::plan::{self, MAX_REMOVE_BATCH_KEYS, MAX_SET_BATCH_BYTES};
use zitadel_metadata_operator::zitadel::{
    ApiMode, ClientConfig, HttpClient, MAX_RESPONSE_BYTES, MetadataMap, OrgQuery, Relevant, Target,
    TokenSource, ZitadelApi, ZitadelError,
};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

// ---------------------------------------------------------------------------------------------
// CRD entries → validate → (resolve valueFrom) → plan
// ---------------------------------------------------------------------------------------------

/// What a fuzzed entry's value looks like.
#[derive(Clone, Debug)]
enum ValueShape {
    Text(String),
    Binary(String),
    Both(String, String),
    Neither,
    From(ValueSource),
    TextAndFrom(String, ValueSource),
}

/// Keys: a small pool (so duplicates happen), arbitrary unicode, empty, and lengths around the
/// 200-character limit in one- to four-byte characters.
fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["a", "b", "team", "ÄÖÜ", "🔑", "_bulk", "a/b", " "])
            .prop_map(str::to_owned),
        3 => any::<String>().prop_map(|s| s.chars().take(12).collect()),
        1 => Just(String::new()),
        2 => (195usize..=205, prop::sample::select(vec!['k', 'é', '語', '🦀']))
            .prop_map(|(n, c)| std::iter::repeat_n(c, n).collect()),
    ]
}

/// Value sizes: small, empty, and around (and well past) the 500 000-byte limit.
fn arb_size() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0usize..40,
        1 => Just(0usize),
        1 => MAX_VALUE_BYTES - 2..=MAX_VALUE_BYTES + 2,
        1 => Just(700_000usize),
    ]
}

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<String>().prop_map(|s| s.chars().take(30).collect()),
        // Huge text, ASCII or two-byte characters (fewer characters than bytes: the schema
        // counts characters, ZITADEL bytes).
        1 => (arb_size(), any::<bool>()).prop_map(|(n, wide)| {
            if wide { "é".repeat(n / 2 + n % 2) } else { "x".repeat(n) }
        }),
    ]
}

fn arb_binary() -> impl Strategy<Value = String> {
    prop_oneof![
        // Valid standard base64 of any size class.
        4 => arb_size().prop_map(|n| B64.encode(vec![0xA5u8; n])),
        // Arbitrary text: mostly not base64.
        2 => any::<String>().prop_map(|s| s.chars().take(20).collect()),
        // URL-safe alphabet / missing padding / whitespace: not *standard* base64.
        1 => prop::sample::select(vec!["-_-_", "AAE", "AA E=", "AAE=\n", "====", "A==="])
            .prop_map(str::to_owned),
    ]
}

fn arb_key_ref() -> impl Strategy<Value = KeyRef> {
    ("[a-z]{1,8}", "[a-z.]{1,8}", any::<bool>()).prop_map(|(name, key, optional)| KeyRef {
        name,
        key,
        optional,
    })
}

fn arb_source() -> impl Strategy<Value = ValueSource> {
    (
        prop::option::of(arb_key_ref()),
        prop::option::of(arb_key_ref()),
    )
        .prop_map(|(secret_key_ref, config_map_key_ref)| ValueSource {
            secret_key_ref,
            config_map_key_ref,
        })
}

fn arb_shape() -> impl Strategy<Value = ValueShape> {
    prop_oneof![
        6 => arb_text().prop_map(ValueShape::Text),
        4 => arb_binary().prop_map(ValueShape::Binary),
        1 => (arb_text(), arb_binary()).prop_map(|(t, b)| ValueShape::Both(t, b)),
        1 => Just(ValueShape::Neither),
        2 => arb_source().prop_map(ValueShape::From),
        1 => (arb_text(), arb_source()).prop_map(|(t, s)| ValueShape::TextAndFrom(t, s)),
    ]
}

fn entry(key: String, shape: ValueShape) -> MetadataEntry {
    let (value, binary_value, value_from) = match shape {
        ValueShape::Text(t) => (Some(t), None, None),
        ValueShape::Binary(b) => (None, Some(b), None),
        ValueShape::Both(t, b) => (Some(t), Some(b), None),
        ValueShape::Neither => (None, None, None),
        ValueShape::From(s) => (None, None, Some(Box::new(s))),
        ValueShape::TextAndFrom(t, s) => (Some(t), None, Some(Box::new(s))),
    };
    MetadataEntry {
        key,
        value,
        binary_value,
        value_from,
    }
}

fn arb_entries() -> impl Strategy<Value = Vec<MetadataEntry>> {
    prop::collection::vec(
        (arb_key(), arb_shape()).prop_map(|(k, s)| entry(k, s)),
        0..8,
    )
}

/// An independent statement of the rules: why (if at all) the entries must be refused. Returns
/// the first offending key, entries in order, like `crd::validate`.
fn oracle(entries: &[MetadataEntry]) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for e in entries {
        let chars = e.key.chars().count();
        if chars == 0 || chars > MAX_KEY_CHARS || !seen.insert(e.key.as_str()) {
            return Err(e.key.clone());
        }
        let bytes = match (&e.value, &e.binary_value, &e.value_from) {
            (Some(t), None, None) => t.as_bytes().to_vec(),
            (None, Some(b), None) => match B64.decode(b) {
                Ok(bytes) => bytes,
                Err(_) => return Err(e.key.clone()),
            },
            (None, None, Some(s))
                if s.secret_key_ref.is_some() != s.config_map_key_ref.is_some() =>
            {
                continue;
            }
            _ => return Err(e.key.clone()),
        };
        if bytes.is_empty() || bytes.len() > MAX_VALUE_BYTES {
            return Err(e.key.clone());
        }
    }
    Ok(())
}

fn error_key(e: &EntryError) -> &str {
    match e {
        EntryError::ValueChoice { key }
        | EntryError::InvalidBase64 { key }
        | EntryError::EmptyValue { key }
        | EntryError::ValueTooLarge { key, .. }
        | EntryError::KeyLength { key, .. }
        | EntryError::DuplicateKey { key } => key,
    }
}

/// Arbitrary spec entries, the contents of their Secrets/ConfigMaps, what ZITADEL holds and the
/// managed keys, through the reconciler's pure steps: `crd::validate`, `crd::check_value` for
/// resolved sources, `plan::plan` and the batch split. Either a typed error that names an
/// offending key (never a value), agreeing with an independent oracle, or a plan that is exactly
/// right.
#[test]
fn fuzz_crd_to_plan() {
    let cases = AtomicUsize::new(0);
    let accepted = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 600,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        arb_entries(),
        // Bytes the valueFrom sources resolve to (cycled over the sourced keys).
        prop::collection::vec(arb_size().prop_map(|n| vec![7u8; n]), 1..3),
        // What ZITADEL holds: some spec keys (equal or not) plus foreign keys.
        prop::collection::btree_map("[a-e]", prop::collection::vec(any::<u8>(), 0..4), 0..5),
        prop::collection::btree_set("[a-e]|team|🔑", 0..5),
        any::<bool>(),
    );
    runner
        .run(
            &strategy,
            |(entries, sourced_values, foreign, managed, mirror)| {
                cases.fetch_add(1, Ordering::Relaxed);
                let expected = oracle(&entries);
                let desired_spec = match crd::validate(&entries) {
                    Err(e) => {
                        let key = error_key(&e);
                        prop_assert_eq!(expected, Err(key.to_string()), "validate refused: {}", e);
                        let msg = e.to_string();
                        prop_assert!(msg.contains(&format!("{key:?}")), "message names the key");
                        // Values never appear in the message (only keys and sizes do).
                        for entry in &entries {
                            if let Some(v) = entry.value.as_deref().filter(|v| {
                                v.len() >= 16 && !entries.iter().any(|e| e.key.contains(*v))
                            }) {
                                prop_assert!(!msg.contains(v), "message leaks a value");
                            }
                        }
                        return Ok(());
                    }
                    Ok(d) => {
                        prop_assert!(expected.is_ok(), "validate accepted {:?}", expected);
                        d
                    }
                };
                // Every entry is in exactly one of inline / sourced.
                let keys: BTreeSet<&str> = entries.iter().map(|e| e.key.as_str()).collect();
                prop_assert_eq!(keys.len(), entries.len());
                prop_assert_eq!(
                    desired_spec.inline.len() + desired_spec.sourced.len(),
                    entries.len()
                );
                for (key, value) in &desired_spec.inline {
                    prop_assert!(keys.contains(key.as_str()));
                    prop_assert!(!value.is_empty() && value.len() <= MAX_VALUE_BYTES);
                }
                // Resolve the sources as the reconciler does: each value is checked again.
                let mut desired: MetadataMap = desired_spec.inline.clone();
                for (i, key) in desired_spec.sourced.keys().enumerate() {
                    let bytes = &sourced_values[i % sourced_values.len()];
                    match crd::check_value(key, bytes) {
                        Ok(()) => {
                            desired.insert(key.clone(), bytes.clone());
                        }
                        Err(e) => {
                            prop_assert!(bytes.is_empty() || bytes.len() > MAX_VALUE_BYTES);
                            prop_assert_eq!(error_key(&e), key.as_str());
                            return Ok(());
                        }
                    }
                }
                accepted.fetch_add(1, Ordering::Relaxed);
                // Observed: foreign keys, plus (optionally) the desired state itself.
                let mut observed: MetadataMap = foreign.clone();
                if mirror {
                    observed.extend(desired.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                let managed: BTreeSet<String> = managed.clone();
                let p = plan::plan(&desired, &observed, &managed);
                // Applying the plan makes ZITADEL hold the desired values and drops only
                // managed, undesired keys.
                let mut after = observed.clone();
                for (k, v) in &p.set {
                    prop_assert_eq!(desired.get(k), Some(v));
                    after.insert(k.clone(), v.clone());
                }
                for k in &p.remove {
                    prop_assert!(managed.contains(k) && !desired.contains_key(k));
                    prop_assert!(after.remove(k).is_some());
                }
                for (k, v) in &desired {
                    prop_assert_eq!(after.get(k), Some(v));
                }
                for k in observed.keys() {
                    if !managed.contains(k) || desired.contains_key(k) {
                        prop_assert!(after.contains_key(k), "foreign key {} removed", k);
                    }
                }
                if mirror {
                    prop_assert!(p.set.is_empty(), "no write when ZITADEL already matches");
                }
                // Batches cover the plan exactly, none empty, each under the request limit
                // unless a single item is itself that large.
                let batches = p.set_batches();
                let mut covered = BTreeMap::new();
                for batch in &batches {
                    prop_assert!(!batch.is_empty());
                    let size: usize = batch
                        .iter()
                        .map(|(k, v)| k.len() * 6 + v.len() * 4 / 3 + 30)
                        .sum();
                    prop_assert!(
                        batch.len() == 1 || size <= MAX_SET_BATCH_BYTES + 64 * batch.len()
                    );
                    for (k, v) in batch {
                        prop_assert!(covered.insert(k.to_string(), v.to_vec()).is_none());
                    }
                }
                prop_assert_eq!(&covered, &p.set);
                let removed: Vec<&str> = p.remove_batches().into_iter().flatten().collect();
                prop_assert_eq!(removed.len(), p.remove.len());
                prop_assert!(
                    p.remove_batches()
                        .iter()
                        .all(|b| !b.is_empty() && b.len() <= MAX_REMOVE_BATCH_KEYS)
                );
                Ok(())
            },
        )
        .expect("CRD entries → plan");
    let cases = cases.load(Ordering::Relaxed);
    let accepted = accepted.load(Ordering::Relaxed);
    println!(
        "FIGURE fuzz_crd_to_plan cases={cases} planned={accepted} refused={}",
        cases - accepted
    );
    // The generator must reach both outcomes, or the test proves little.
    assert!(
        accepted > cases / 10,
        "only {accepted} of {cases} inputs were valid"
    );
    assert!(accepted < cases, "no invalid input generated");
}

// ---------------------------------------------------------------------------------------------
// Malformed ZITADEL answers
// ---------------------------------------------------------------------------------------------

/// One request as the raw server saw it.
#[derive(Clone, Debug)]
struct Seen {
    /// Request path.
    path: String,
    body: serde_json::Value,
}

/// What the raw server answers.
#[derive(Clone)]
enum Answer {
    /// These exact bytes, then close.
    Raw(Vec<u8>),
    /// These exact bytes, then keep the connection open until the client closes it (so the
    /// client decides on the head alone).
    Hold(Vec<u8>),
    /// `200 OK` with a chunked body of `total` bytes streamed in 64 KiB chunks.
    Stream { total: u64 },
    /// Close without answering.
    Close,
}

type Responder = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

fn http(status: &str, body: &[u8]) -> Answer {
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    Answer::Raw(out)
}

fn ok(body: &str) -> Answer {
    http("200 OK", body.as_bytes())
}

/// A one-connection-at-a-time HTTP/1.1 server answering from a closure; counts the body bytes it
/// managed to stream.
struct RawServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    streamed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RawServer {
    async fn start(responder: Responder) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let streamed = Arc::new(AtomicU64::new(0));
        let (s, st) = (Arc::clone(&seen), Arc::clone(&streamed));
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (responder, s, st) = (Arc::clone(&responder), Arc::clone(&s), Arc::clone(&st));
                tokio::spawn(async move {
                    let _ = serve_one(sock, responder, s, st).await;
                });
            }
        });
        RawServer {
            addr,
            seen,
            streamed,
            task,
        }
    }

    /// A client pinned to Management API v1 (no probe requests).
    fn client(&self) -> HttpClient {
        self.client_with(ApiMode::V1)
    }

    fn client_with(&self, api: ApiMode) -> HttpClient {
        let url = format!("http://{}", self.addr).parse().expect("url");
        let mut config = ClientConfig::new(url, TokenSource::Static(Arc::from("raw-token")));
        config.request_timeout = Duration::from_secs(20);
        config.rate_limit = None;
        config.api = api;
        HttpClient::new(config).expect("client")
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_one(
    mut sock: TcpStream,
    responder: Responder,
    seen: Arc<Mutex<Vec<Seen>>>,
    streamed: Arc<AtomicU64>,
) -> std::io::Result<()> {
    // Read the head, then Content-Length bytes of body.
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let path = head
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let body = serde_json::from_slice(&buf[head_end..]).unwrap_or(serde_json::Value::Null);
    let request = Seen { path, body };
    seen.lock().expect("lock").push(request.clone());
    match responder(&request) {
        Answer::Raw(bytes) => {
            sock.write_all(&bytes).await?;
            sock.shutdown().await?;
        }
        Answer::Hold(bytes) => {
            sock.write_all(&bytes).await?;
            // Returns when the client closes (or after 30 s).
            let _ = tokio::time::timeout(Duration::from_secs(30), sock.read(&mut tmp)).await;
        }
        Answer::Close => {}
        Answer::Stream { total } => {
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
                .await?;
            let chunk = vec![b' '; 64 * 1024];
            let mut sent = 0u64;
            while sent < total {
                sock.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await?;
                sock.write_all(&chunk).await?;
                sock.write_all(b"\r\n").await?;
                sent += chunk.len() as u64;
                streamed.store(sent, Ordering::Relaxed);
            }
            sock.write_all(b"0\r\n\r\n").await?;
        }
    }
    Ok(())
}

fn org() -> Target {
    Target::Org {
        org_id: "100000000000000001".into(),
    }
}

/// Which client call a case makes.
#[derive(Clone, Copy, Debug)]
enum Call {
    List,
    BulkSet,
    BulkRemove,
    UserOrg,
    FindOrgs,
    Probe,
    Exists,
}

async fn make(client: &HttpClient, call: Call) -> Result<(), ZitadelError> {
    match call {
        Call::List => client.list_metadata(&org()).await.map(drop),
        Call::BulkSet => client
            .bulk_set_metadata(&org(), &[("k", b"v".as_slice())])
            .await
            .map(drop),
        Call::BulkRemove => client.bulk_remove_metadata(&org(), &["k"]).await.map(drop),
        Call::UserOrg => client
            .user_organization("200000000000000001")
            .await
            .map(drop),
        Call::FindOrgs => client
            .find_organizations(&OrgQuery::Name("Acme".into()))
            .await
            .map(drop),
        Call::Probe => client.probe().await.map(drop),
        Call::Exists => client.target_exists(&org()).await.map(drop),
    }
}

/// The expected typed outcome.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Decode,
    Transport,
    TooLarge,
    Api(u16),
    RouteMissing,
}

fn matches(err: &ZitadelError, expect: Expect) -> bool {
    match (err, expect) {
        (ZitadelError::Decode(_), Expect::Decode) => true,
        (ZitadelError::Transport(_), Expect::Transport) => true,
        (ZitadelError::ResponseTooLarge { limit, .. }, Expect::TooLarge) => {
            *limit == MAX_RESPONSE_BYTES
        }
        (
            ZitadelError::Api {
                status, message, ..
            },
            Expect::Api(s),
        ) => *status == s && message.chars().count() <= 200,
        (ZitadelError::RouteMissing { .. }, Expect::RouteMissing) => true,
        _ => false,
    }
}

/// Peak resident memory of this process (`VmHWM`), in bytes.
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Runs each case against a fresh raw server with a client of `api`; every outcome must be the
/// expected typed error.
async fn expect_errors(api: ApiMode, cases: Vec<(&str, Call, Answer, Expect)>) {
    for (what, call, answer, expect) in cases {
        let server = RawServer::start(Arc::new(move |_: &Seen| answer.clone())).await;
        let client = server.client_with(api);
        let result = tokio::time::timeout(Duration::from_secs(30), make(&client, call))
            .await
            .unwrap_or_else(|_| panic!("{what}: client hung"));
        match result {
            Ok(()) => panic!("{what}: {call:?} accepted a malformed answer"),
            Err(e) => assert!(
                matches(&e, expect),
                "{what}: expected {expect:?}, got {e:?}"
            ),
        }
    }
}

#[tokio::test]
async fn malformed_responses_are_typed_errors() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let big_error = format!(
        "{{\"code\":13,\"message\":\"{}\"}}",
        "e".repeat(10 * 1024 * 1024)
    );
    let v1_cases: Vec<(&str, Call, Answer, Expect)> = vec![
        ("not JSON", Call::List, ok("not json"), Expect::Decode),
        ("HTML page", Call::List, ok("<html><body>Login</body></html>"), Expect::Decode),
        ("JSON null", Call::List, ok("null"), Expect::Decode),
        ("result is a string", Call::List, ok(r#"{"result":"x"}"#), Expect::Decode),
        ("item without key", Call::List, ok(r#"{"details":{"totalResult":"1"},"result":[{"value":"YQ=="}]}"#), Expect::Decode),
        ("value is a number", Call::List, ok(r#"{"result":[{"key":"a","value":5}]}"#), Expect::Decode),
        ("value is null", Call::List, ok(r#"{"result":[{"key":"a","value":null}]}"#), Expect::Decode),
        ("value not base64", Call::List, ok(r#"{"details":{"totalResult":"1"},"result":[{"key":"a","value":"!!not*base64"}]}"#), Expect::Decode),
        ("totalResult is an object", Call::List, ok(r#"{"details":{"totalResult":{"n":1}},"result":[]}"#), Expect::Decode),
        ("totalResult is not a number", Call::List, ok(r#"{"details":{"totalResult":"many"},"result":[]}"#), Expect::Decode),
        ("truncated body", Call::List, ok(r#"{"details":{"totalResult":"1"},"result":[{"key":"a","val"#), Expect::Decode),
        ("invalid UTF-8", Call::List, http("200 OK", b"{\"result\":[{\"key\":\"\xff\xfe\",\"value\":\"YQ==\"}]}"), Expect::Decode),
        ("nesting 100000 deep", Call::List, ok(&deep), Expect::Decode),
        (
            "Content-Length longer than the body",
            Call::List,
            Answer::Raw(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n{\"result\":[]}".to_vec()),
            Expect::Transport,
        ),
        (
            "Content-Length shorter than the body",
            Call::List,
            Answer::Raw(b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n{\"result\":[{\"key\":\"a\",\"value\":\"YQ==\"}]}".to_vec()),
            Expect::Decode,
        ),
        (
            "Content-Length of 300 MB (no body)",
            Call::List,
            Answer::Hold(b"HTTP/1.1 200 OK\r\ncontent-length: 300000000\r\n\r\n".to_vec()),
            Expect::TooLarge,
        ),
        ("not HTTP at all", Call::List, Answer::Raw(b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec()), Expect::Transport),
        ("connection closed", Call::List, Answer::Close, Expect::Transport),
        ("10 MiB error body", Call::List, http("500 Internal Server Error", big_error.as_bytes()), Expect::Api(500)),
        ("error body not JSON", Call::BulkSet, http("502 Bad Gateway", b"<html>bad gateway</html>"), Expect::Api(502)),
        ("routing 404", Call::BulkSet, http("404 Not Found", br#"{"code":5,"message":"Not Found"}"#), Expect::RouteMissing),
        ("sequence is an object", Call::BulkSet, ok(r#"{"details":{"sequence":{"x":1}}}"#), Expect::Decode),
        ("details is an array", Call::BulkRemove, ok(r#"{"details":[1,2]}"#), Expect::Decode),
        ("user without organization", Call::UserOrg, ok(r#"{"user":{"userId":"2"}}"#), Expect::Decode),
        ("resourceOwner is a number", Call::UserOrg, ok(r#"{"user":{"details":{"resourceOwner":42}}}"#), Expect::Decode),
        ("empty body for a user", Call::UserOrg, ok(""), Expect::Decode),
        ("org id is a number", Call::FindOrgs, ok(r#"{"result":[{"id":7}]}"#), Expect::Decode),
        ("orgs/me without org", Call::Probe, ok(r#"{"org":null}"#), Expect::Decode),
        ("org lookup result is a string", Call::Exists, ok(r#"{"result":"x"}"#), Expect::Decode),
    ];
    // The v2 services over Connect: the same kinds of garbage in their own shapes.
    let v2_cases: Vec<(&str, Call, Answer, Expect)> = vec![
        ("not JSON", Call::List, ok("not json"), Expect::Decode),
        ("metadata is a string", Call::List, ok(r#"{"metadata":"x"}"#), Expect::Decode),
        ("item without key", Call::List, ok(r#"{"pagination":{"totalResult":"1"},"metadata":[{"value":"YQ=="}]}"#), Expect::Decode),
        ("value not base64", Call::List, ok(r#"{"pagination":{"totalResult":"1"},"metadata":[{"key":"a","value":"!!"}]}"#), Expect::Decode),
        ("totalResult is an object", Call::List, ok(r#"{"pagination":{"totalResult":{}}}"#), Expect::Decode),
        ("setDate is a number", Call::BulkSet, ok(r#"{"setDate":5}"#), Expect::Decode),
        ("deletionDate is an object", Call::BulkRemove, ok(r#"{"deletionDate":{}}"#), Expect::Decode),
        ("Connect error, garbage detail", Call::BulkSet, http("400 Bad Request", br#"{"code":"invalid_argument","message":"x","details":[{"type":"zitadel.v1.ErrorDetail","value":"%%%"},7,null]}"#), Expect::Api(400)),
        ("Connect error, unknown code", Call::BulkSet, http("418 I'm a teapot", br#"{"code":"teapot","message":"x"}"#), Expect::Api(418)),
        (
            "Connect service without the method",
            Call::BulkRemove,
            Answer::Raw(b"HTTP/1.1 404 Not Found\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 19\r\nconnection: close\r\n\r\n404 page not found\n".to_vec()),
            Expect::RouteMissing,
        ),
        ("10 MiB Connect error", Call::List, http("503 Service Unavailable", big_error.replace("13", "\"unavailable\"").as_bytes()), Expect::Api(503)),
        ("user without organization", Call::UserOrg, ok(r#"{"user":{"userId":"2"}}"#), Expect::Decode),
        ("org list result is a number", Call::FindOrgs, ok(r#"{"result":5}"#), Expect::Decode),
    ];
    // + 5: the huge body below and the four single-case tests after this one.
    let total = v1_cases.len() + v2_cases.len() + 5;
    expect_errors(ApiMode::V1, v1_cases).await;
    expect_errors(ApiMode::V2, v2_cases).await;

    // A 200 MiB streamed body: refused after at most MAX_RESPONSE_BYTES were buffered.
    let total_stream = 200 * 1024 * 1024;
    let server = RawServer::start(Arc::new(move |_: &Seen| Answer::Stream {
        total: total_stream,
    }))
    .await;
    let before = peak_rss();
    let started = std::time::Instant::now();
    let client = server.client();
    let err = make(&client, Call::BulkSet).await.expect_err("huge body");
    let grew = peak_rss().saturating_sub(before);
    assert!(matches(&err, Expect::TooLarge), "{err:?}");
    let streamed = server.streamed.load(Ordering::Relaxed);
    assert!(
        streamed < total_stream / 2,
        "client kept reading: {streamed} bytes streamed"
    );
    assert!(
        grew < 4 * MAX_RESPONSE_BYTES as u64,
        "peak memory grew by {grew} bytes reading a huge body"
    );
    println!(
        "FIGURE malformed_responses cases={total} huge_body_streamed_bytes={streamed} peak_rss_growth_bytes={grew} huge_body_ms={} cap_bytes={MAX_RESPONSE_BYTES}",
        started.elapsed().as_millis()
    );
}

/// A server that ignores `offset` and keeps claiming more results: an error, not an endless
/// loop.
#[tokio::test]
async fn a_list_that_never_ends_is_an_error() {
    let server = RawServer::start(Arc::new(|_: &Seen| {
        ok(r#"{"details":{"totalResult":"1000000000"},"result":[{"key":"a","value":"YQ=="}]}"#)
    }))
    .await;
    let err = server
        .client()
        .list_metadata(&org())
        .await
        .expect_err("endless list");
    assert!(
        matches!(
            err,
            ZitadelError::IncompleteListing {
                seen: 1,
                total: 1_000_000_000
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert!(
        server.seen().len() <= 3,
        "{} pages fetched",
        server.seen().len()
    );
}

/// One item over the cap is an error after two tries (everything, then one row).
#[tokio::test]
async fn one_item_over_the_cap_is_an_error_after_two_tries() {
    let server = RawServer::start(Arc::new(|_: &Seen| {
        Answer::Hold(b"HTTP/1.1 200 OK\r\ncontent-length: 30000000\r\n\r\n".to_vec())
    }))
    .await;
    let err = server
        .client()
        .list_metadata(&org())
        .await
        .expect_err("too large");
    assert!(matches(&err, Expect::TooLarge), "{err:?}");
    assert_eq!(server.seen().len(), 2, "everything, then 1 item");
}

/// A probe answered with garbage decides nothing: the call fails, and nothing but the first
/// probe call (Auto asks v1 first: it is preferred where served, for status.sequence) is sent.
#[tokio::test]
async fn a_garbage_probe_decides_nothing() {
    let server = RawServer::start(Arc::new(|_: &Seen| ok("not json"))).await;
    let client = server.client_with(ApiMode::Auto);
    let err = make(&client, Call::BulkSet).await.expect_err("bad probe");
    assert!(matches(&err, Expect::Decode), "{err:?}");
    let paths: Vec<String> = server.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/management/v1/users/probe/metadata/_search"]);
    assert_eq!(client.api_selection(), None);
}

/// An empty value is never sent (v2 reads it as "delete").
#[tokio::test]
async fn an_empty_value_is_never_sent() {
    let server = RawServer::start(Arc::new(|_: &Seen| ok("{}"))).await;
    let err = server
        .client_with(ApiMode::V2)
        .bulk_set_metadata(&org(), &[("k", b"")])
        .await
        .expect_err("empty value");
    assert!(matches!(err, ZitadelError::InvalidRequest(_)), "{err:?}");
    assert!(server.seen().is_empty());
}

/// How an over-large page is refused.
#[derive(Clone, Copy, Debug)]
enum Refusal {
    /// Like ZITADEL's REST gateway: 429, code 8, gRPC's text with the size (> 4 MiB).
    Grpc,
    /// An answer over the client's own cap: announced by `Content-Length`, never sent.
    OverCap,
}

/// A target of many small keys and some large values, served page by page (v1 `query` or v2
/// `pagination`, key filters honoured), in key order or shuffled per request.
struct BigTarget {
    rows: Vec<(String, usize)>,
    large: String,
    refusal: Refusal,
    shuffle: bool,
    requests: AtomicUsize,
}

impl BigTarget {
    fn new(small: usize, large_at: &[usize], refusal: Refusal, shuffle: bool) -> Self {
        let rows = (0..small + large_at.len())
            .map(|i| {
                let size = if large_at.contains(&i) { 450_000 } else { 8 };
                (format!("key-{i:05}"), size)
            })
            .collect();
        BigTarget {
            rows,
            large: B64.encode(vec![b'x'; 450_000]),
            refusal,
            shuffle,
            requests: AtomicUsize::new(0),
        }
    }

    fn value(&self, i: usize) -> String {
        let (_, size) = &self.rows[i];
        if *size > 8 {
            self.large.clone()
        } else {
            B64.encode(format!("v{i:06}"))
        }
    }

    fn answer(&self, seen: &Seen) -> Answer {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        let v2 = seen.body.get("pagination").is_some();
        let paging = if v2 {
            &seen.body["pagination"]
        } else {
            &seen.body["query"]
        };
        let offset: usize = paging["offset"]
            .as_str()
            .and_then(|o| o.parse().ok())
            .unwrap_or(0);
        let limit = paging["limit"].as_u64().map_or(usize::MAX, |l| l as usize);
        let filter = if v2 {
            seen.body["filters"][0]["keyFilter"]["key"].as_str()
        } else {
            seen.body["queries"][0]["keyQuery"]["key"].as_str()
        };
        let mut order: Vec<usize> = (0..self.rows.len()).collect();
        if self.shuffle {
            // A different order on every request.
            let mut seed = 0x2545_f491_4f6c_dd1d_u64 ^ (n as u64).wrapping_mul(0x9e37_79b9);
            for i in (1..order.len()).rev() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                order.swap(i, (seed % (i as u64 + 1)) as usize);
            }
        }
        let matching: Vec<usize> = order
            .into_iter()
            .filter(|&i| filter.is_none_or(|k| k == self.rows[i].0))
            .collect();
        let page: Vec<usize> = matching.iter().copied().skip(offset).take(limit).collect();
        let size: usize = page
            .iter()
            .map(|&i| 160 + self.rows[i].0.len() + self.rows[i].1.div_ceil(3) * 4)
            .sum();
        let cap = match self.refusal {
            Refusal::Grpc => 4 * 1024 * 1024,
            Refusal::OverCap => MAX_RESPONSE_BYTES,
        };
        if size > cap {
            return match self.refusal {
                Refusal::Grpc => http(
                    "429 Too Many Requests",
                    format!(
                        r#"{{"code":8,"message":"grpc: received message larger than max ({size} vs. 4194304)","details":[]}}"#
                    )
                    .as_bytes(),
                ),
                Refusal::OverCap => Answer::Hold(
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n").into_bytes(),
                ),
            };
        }
        let items: Vec<serde_json::Value> = page
            .iter()
            .map(|&i| serde_json::json!({"key": self.rows[i].0, "value": self.value(i)}))
            .collect();
        let total = matching.len().to_string();
        let body = if v2 {
            serde_json::json!({"pagination": {"totalResult": total}, "metadata": items})
        } else {
            serde_json::json!({"details": {"totalResult": total}, "result": items})
        };
        ok(&body.to_string())
    }
}

/// Issue #16's target (1,500 small keys, 8 values of 450 kB): a page too large is asked again
/// with fewer rows and the page grows back; the listing costs a bounded number of calls, and
/// the relevant keys are exact in key order and shuffled per request, for v1 and v2.
#[tokio::test]
async fn large_targets_list_in_a_bounded_number_of_calls() {
    let large_at: Vec<usize> = vec![3, 4, 700, 701, 702, 1_200, 1_506, 1_507];
    let relevant: BTreeSet<String> = large_at
        .iter()
        .map(|i| format!("key-{i:05}"))
        .chain(["key-00010".into(), "not-there".into()])
        .collect();
    for (api, refusal, shuffle) in [
        (ApiMode::V1, Refusal::Grpc, false),
        (ApiMode::V1, Refusal::Grpc, true),
        (ApiMode::V1, Refusal::OverCap, false),
        (ApiMode::V2, Refusal::OverCap, false),
        (ApiMode::V2, Refusal::OverCap, true),
        (ApiMode::V2, Refusal::Grpc, true),
    ] {
        let target = Arc::new(BigTarget::new(1_500, &large_at, refusal, shuffle));
        let t = Arc::clone(&target);
        let server = RawServer::start(Arc::new(move |seen: &Seen| t.answer(seen))).await;
        let client = server.client_with(api);
        let started = std::time::Instant::now();
        let listing = client
            .list_metadata_for(&org(), Relevant::Only(&relevant))
            .await
            .unwrap_or_else(|e| panic!("{api:?} {refusal:?} shuffled={shuffle}: {e}"));
        for key in &relevant {
            let want = target
                .rows
                .iter()
                .position(|(k, _)| k == key)
                .map(|i| B64.decode(target.value(i)).expect("b64"));
            assert_eq!(listing.metadata.get(key), want.as_ref(), "{key}");
        }
        let calls = server.seen().len();
        assert_eq!(calls, listing.calls as usize);
        // ceil(keys / page) + ceil(bytes / 4 MiB): 2 + 1 for v1 (one page allowed), 2 + 1 for
        // v2; the constant covers refusals and lookups after a shuffled listing.
        println!(
            "FIGURE large_target_listing api={api:?} refusal={refusal:?} shuffled={shuffle} calls={calls} complete={} ms={}",
            listing.complete,
            started.elapsed().as_millis()
        );
        assert!(
            calls <= 3 + 12,
            "{api:?} {refusal:?} shuffled={shuffle}: {calls} calls"
        );
        if !shuffle {
            assert!(listing.complete);
        }
    }
}
