//! Parsing ZITADEL error bodies (grpc-gateway JSON, Connect JSON, anything else) into [`ZitadelError`].

use super::*;

impl ZitadelError {
    /// Build an error from a non-2xx response (status, `Retry-After` and body text). Accepts
    /// grpc-gateway JSON (`{"code":5,…,"details":[{"@type":…,"id":…}]}`), Connect JSON
    /// (`{"code":"not_found",…,"details":[{"type":…,"value":"<b64 protobuf>","debug":…}]}`),
    /// and anything else (plain text, HTML).
    pub fn from_response(status: u16, retry_after: Option<&str>, body: &str) -> Self {
        let retry_after = retry_after.and_then(parse_retry_after);
        let parsed = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| StatusBody::from_value(&v));
        match parsed {
            Some(parsed) => {
                let message = short(&parsed.message);
                if status == 404
                    && parsed.code.is_none_or(|c| c == code::NOT_FOUND)
                    && parsed.id.is_none()
                    && !parsed.has_details
                    && parsed.message == "Not Found"
                {
                    return ZitadelError::RouteMissing {
                        status,
                        message,
                        service_exists: false,
                    };
                }
                let id = parsed.id.or_else(|| id_from_message(&parsed.message));
                ZitadelError::Api {
                    status,
                    code: parsed.code.unwrap_or_else(|| code_for_status(status)),
                    id,
                    message,
                    retry_after,
                }
            }
            // Not ZITADEL JSON (edge proxy, plain-text "instance is blocked", HTML, the routing
            // 404 of a Connect service without the method...).
            None => {
                let message = short(body);
                if status == 404 && body.trim() == "404 page not found" {
                    return ZitadelError::RouteMissing {
                        status,
                        message,
                        service_exists: true,
                    };
                }
                ZitadelError::Api {
                    status,
                    code: code_for_status(status),
                    id: None,
                    message,
                    retry_after,
                }
            }
        }
    }
}
/// The first 200 characters, trimmed.
pub(super) fn short(text: &str) -> String {
    text.chars()
        .take(200)
        .collect::<String>()
        .trim()
        .to_string()
}

/// An error body of either JSON shape, reduced to what the client uses.
pub(super) struct StatusBody {
    code: Option<i32>,
    message: String,
    id: Option<String>,
    has_details: bool,
}

impl StatusBody {
    fn from_value(v: &Value) -> Option<Self> {
        let obj = v.as_object()?;
        let code = match obj.get("code") {
            Some(Value::Number(n)) => n.as_i64().and_then(|n| i32::try_from(n).ok()),
            Some(Value::String(s)) => code::from_connect(s),
            _ => None,
        };
        let message = obj
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if code.is_none() && message.is_none() {
            return None;
        }
        let details = obj
            .get("details")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        Some(StatusBody {
            code,
            message: message.unwrap_or_default(),
            id: details.iter().find_map(detail_id),
            has_details: !details.is_empty(),
        })
    }
}

/// The ZITADEL id of one error detail: `id` (grpc-gateway's `@type` form), else the protobuf
/// `value` of a Connect detail (`zitadel.v1.ErrorDetail` / `CredentialsCheckError`, field 1),
/// else `debug.id`.
pub(super) fn detail_id(detail: &Value) -> Option<String> {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    if let Some(id) = detail.get("id").and_then(Value::as_str) {
        return non_empty(id);
    }
    let type_name = detail
        .get("type")
        .or_else(|| detail.get("@type"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let type_name = type_name.rsplit('/').next().unwrap_or_default();
    if matches!(
        type_name,
        "zitadel.v1.ErrorDetail" | "zitadel.v1.CredentialsCheckError"
    ) && let Some(id) = detail
        .get("value")
        .and_then(Value::as_str)
        .and_then(|v| decode_base64(v).ok())
        .and_then(|bytes| protobuf_string_field(&bytes, 1))
    {
        return non_empty(&id);
    }
    detail
        .get("debug")
        .and_then(|d| d.get("id"))
        .and_then(Value::as_str)
        .and_then(non_empty)
}

/// Base64 as protojson accepts it: standard or URL-safe alphabet, padded or not.
pub(crate) fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::alphabet::{STANDARD, URL_SAFE};
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const CONFIG: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STD: GeneralPurpose = GeneralPurpose::new(&STANDARD, CONFIG);
    const URL: GeneralPurpose = GeneralPurpose::new(&URL_SAFE, CONFIG);
    STD.decode(text).or_else(|_| URL.decode(text))
}

/// Field `field` (wire type 2, UTF-8) of a protobuf message, read by hand: a varint tag
/// (`field << 3 | wire type`), then per wire type a varint (0), 8 bytes (1), a varint length and
/// that many bytes (2), or 4 bytes (5). `None` for malformed input.
pub(crate) fn protobuf_string_field(bytes: &[u8], field: u64) -> Option<String> {
    fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *bytes.get(*at)?;
            *at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    let mut at = 0usize;
    let mut found = None;
    while at < bytes.len() {
        let tag = varint(bytes, &mut at)?;
        let skip = match tag & 7 {
            0 => {
                varint(bytes, &mut at)?;
                0
            }
            1 => 8,
            2 => {
                let len = usize::try_from(varint(bytes, &mut at)?).ok()?;
                let end = at.checked_add(len).filter(|end| *end <= bytes.len())?;
                if tag >> 3 == field {
                    found = Some(String::from_utf8(bytes[at..end].to_vec()).ok()?);
                }
                len
            }
            5 => 4,
            _ => return None,
        };
        at = at.checked_add(skip).filter(|at| *at <= bytes.len())?;
    }
    found
}

/// The `(ID)` at the end of a ZITADEL message (`"User could not be found (COMMAND-uXHNj)"`):
/// letters, a dash, letters and digits.
pub(super) fn id_from_message(message: &str) -> Option<String> {
    let inner = message.trim_end().strip_suffix(')')?;
    let candidate = &inner[inner.rfind('(')? + 1..];
    let (prefix, rest) = candidate.split_once('-')?;
    let ok = !prefix.is_empty()
        && prefix.chars().all(|c| c.is_ascii_alphabetic())
        && !rest.is_empty()
        && rest.chars().all(|c| c.is_ascii_alphanumeric());
    ok.then(|| candidate.to_owned())
}

/// `Retry-After` as delay-seconds (the HTTP-date form is rare for APIs; treated as absent).
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The gRPC code grpc-gateway would have mapped to this HTTP status.
pub(super) fn code_for_status(status: u16) -> i32 {
    match status {
        400 => code::INVALID_ARGUMENT,
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        404 => code::NOT_FOUND,
        409 => code::ABORTED,
        429 => code::RESOURCE_EXHAUSTED,
        501 => code::UNIMPLEMENTED,
        503 => code::UNAVAILABLE,
        504 => code::DEADLINE_EXCEEDED,
        500 => code::INTERNAL,
        _ => code::UNKNOWN,
    }
}
