//! Helpers shared by the emulator tests of the v2 APIs, profiles and events: a plain reqwest
//! client speaking the contract (Connect and REST), and a decoder of Connect error details.

#![allow(dead_code)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use reqwest::Method;
use serde_json::Value;
use zmo_testkit::emulator::{DEMO_ADMIN_TOKEN, Emulator};

/// One answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub content_type: String,
    pub text: String,
    /// The body as JSON (`null` if it is not JSON).
    pub body: Value,
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("client")
}

pub async fn send(rb: reqwest::RequestBuilder) -> Resp {
    let r = rb.send().await.expect("request sent");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = r.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        content_type,
        text,
        body,
    }
}

pub const ADMIN: &str = DEMO_ADMIN_TOKEN;

/// A Connect unary call: `POST /<service>/<method>`, JSON, `Connect-Protocol-Version: 1`.
pub async fn connect(emu: &Emulator, path: &str, token: &str, body: &Value) -> Resp {
    send(
        client()
            .post(format!("{}{path}", emu.url()))
            .header("authorization", format!("Bearer {token}"))
            .header("connect-protocol-version", "1")
            .json(body),
    )
    .await
}

/// A request on `client` with an optional raw `authorization` header value (as sent, so that
/// malformed ones can be tried), `x-zitadel-orgid` and JSON body.
pub fn request(
    client: &reqwest::Client,
    (emu, method, path): (&Emulator, Method, &str),
    authorization: Option<&str>,
    org: Option<&str>,
    body: Option<&Value>,
) -> reqwest::RequestBuilder {
    let mut rb = client.request(method, format!("{}{path}", emu.url()));
    if let Some(authorization) = authorization {
        rb = rb.header("authorization", authorization);
    }
    if let Some(org) = org {
        rb = rb.header("x-zitadel-orgid", org);
    }
    if let Some(body) = body {
        rb = rb.json(body);
    }
    rb
}

/// A REST call with an optional JSON body and `x-zitadel-orgid`.
pub async fn rest(
    emu: &Emulator,
    method: Method,
    path: &str,
    token: &str,
    org: Option<&str>,
    body: Option<&Value>,
) -> Resp {
    let bearer = format!("Bearer {token}");
    send(request(
        &client(),
        (emu, method, path),
        Some(&bearer),
        org,
        body,
    ))
    .await
}

/// A REST call as the admin, without a context org.
pub async fn rest_admin(emu: &Emulator, method: Method, path: &str, body: Option<&Value>) -> Resp {
    rest(emu, method, path, ADMIN, None, body).await
}

/// A REST call with an optional bearer token, `x-zitadel-orgid` and JSON body (a client
/// without a timeout, as the metadata and search suites use).
pub async fn call(
    emu: &Emulator,
    method: Method,
    path: &str,
    token: Option<&str>,
    org: Option<&str>,
    body: Option<Value>,
) -> Resp {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let rb = request(
        &reqwest::Client::new(),
        (emu, method, path),
        bearer.as_deref(),
        org,
        body.as_ref(),
    );
    send(rb).await
}

/// A call as the demo IAM owner with an optional context org header.
pub async fn admin(
    emu: &Emulator,
    method: Method,
    path: &str,
    org: Option<&str>,
    body: Option<Value>,
) -> Resp {
    call(emu, method, path, Some(ADMIN), org, body).await
}

/// `GET` as the demo IAM owner in its own org.
pub async fn get(emu: &Emulator, path: &str) -> Resp {
    admin(emu, Method::GET, path, None, None).await
}

/// `POST` with a JSON body as the demo IAM owner in its own org.
pub async fn post(emu: &Emulator, path: &str, body: Value) -> Resp {
    admin(emu, Method::POST, path, None, Some(body)).await
}

/// `DELETE` (with an optional JSON body) as the demo IAM owner in its own org.
pub async fn delete(emu: &Emulator, path: &str, body: Option<Value>) -> Resp {
    admin(emu, Method::DELETE, path, None, body).await
}

/// The keys of a JSON object, sorted.
pub fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

/// Asserts a REST error with exactly one `zitadel.v1.ErrorDetail` of `id`, whose message the
/// top-level message repeats as `"<detail> (<id>)"`.
pub fn assert_error(r: &Resp, http: u16, code: i64, id: &str) {
    assert_eq!(r.status, http, "{}", r.text);
    assert_eq!(r.body["code"], code, "{}", r.text);
    let details = r.body["details"].as_array().expect("details");
    assert_eq!(details.len(), 1);
    assert_eq!(
        details[0]["@type"],
        "type.googleapis.com/zitadel.v1.ErrorDetail"
    );
    assert_eq!(details[0]["id"], id, "{}", r.text);
    let text = details[0]["message"].as_str().expect("detail message");
    assert_eq!(r.body["message"], format!("{text} ({id})"));
}

pub const USER_SVC: &str = "/zitadel.user.v2.UserService";
pub const ORG_SVC: &str = "/zitadel.org.v2.OrganizationService";
pub const ORG_BETA_SVC: &str = "/zitadel.org.v2beta.OrganizationService";

/// The `id` inside a Connect error's `zitadel.v1.ErrorDetail` (base64 without padding of the
/// protobuf message), decoded by walking the protobuf as the contract's client recipe does.
pub fn connect_detail_id(body: &Value) -> Option<(String, String)> {
    let detail = body["details"]
        .as_array()?
        .iter()
        .find(|d| d["type"] == "zitadel.v1.ErrorDetail")?;
    let value = detail["value"].as_str()?;
    assert!(
        !value.ends_with('='),
        "detail value must be unpadded: {value}"
    );
    let bytes = STANDARD_NO_PAD.decode(value).ok()?;
    let (mut id, mut message) = (String::new(), String::new());
    let mut i = 0;
    while i < bytes.len() {
        let tag = bytes[i];
        i += 1;
        assert_eq!(tag & 7, 2, "only string fields");
        let mut len = 0usize;
        let mut shift = 0;
        loop {
            let b = bytes[i];
            i += 1;
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        let text = String::from_utf8(bytes[i..i + len].to_vec()).ok()?;
        i += len;
        match tag >> 3 {
            1 => id = text,
            2 => message = text,
            _ => {}
        }
    }
    Some((id, message))
}

/// Asserts a Connect error: HTTP status, `code` name and detail id (decoded from the protobuf).
pub fn assert_connect_error(r: &Resp, http: u16, code: &str, id: Option<&str>) {
    assert_eq!(r.status, http, "{}", r.text);
    assert!(
        r.content_type.starts_with("application/json"),
        "{}",
        r.content_type
    );
    assert_eq!(r.body["code"], code, "{}", r.text);
    match id {
        Some(id) => {
            let (got, message) = connect_detail_id(&r.body).expect("an ErrorDetail");
            assert_eq!(got, id, "{}", r.text);
            assert_eq!(r.body["details"][0]["debug"]["id"], id);
            assert_eq!(r.body["message"], format!("{message} ({id})"));
        }
        None => assert!(r.body.get("details").is_none(), "no details: {}", r.text),
    }
}

/// Asserts a gateway (REST) error: status, numeric code and detail id.
pub fn assert_rest_error(r: &Resp, http: u16, code: i64, id: Option<&str>) {
    assert_eq!(r.status, http, "{}", r.text);
    assert_eq!(r.body["code"], code, "{}", r.text);
    match id {
        Some(id) => assert_eq!(r.body["details"][0]["id"], id, "{}", r.text),
        None => assert!(r.body.get("details").is_none(), "no details: {}", r.text),
    }
}

/// Standard padded base64.
pub fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(v)
}
