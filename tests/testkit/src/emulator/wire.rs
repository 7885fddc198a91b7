//! protojson-style wire handling: lenient input decoding (camelCase or snake_case names, 64-bit
//! integers as strings or numbers, enums as names or numbers, standard or URL-safe base64 with or
//! without padding, unknown fields discarded) and canonical output (camelCase, zero values omitted,
//! 64-bit integers as strings, padded standard base64, RFC 3339 `Z` timestamps).

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use chrono::{DateTime, SecondsFormat, Utc};
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};

use super::errors::ApiError;

/// A decoded JSON object.
pub(crate) type Obj = Map<String, Value>;

fn decode_error(message: impl std::fmt::Display) -> ApiError {
    ApiError::invalid_argument(format!("proto: {message}"))
}

/// Parses a request body; an empty (or whitespace-only) body is an empty message.
pub(crate) fn parse_body(bytes: &[u8]) -> Result<Obj, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Obj::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(decode_error(format!(
            "syntax error (line 1:1): unexpected token {other}"
        ))),
        Err(e) => Err(decode_error(format!("syntax error: {e}"))),
    }
}

/// Parses a URL query string the way grpc-gateway populates request fields from it: `+` is a
/// space, percent escapes are decoded, a parameter given once is a string and one given several
/// times a list (which a singular field then rejects). Field names may be JSON or proto names;
/// unknown parameters are ignored by the decoders.
pub(crate) fn parse_query(query: &str) -> Obj {
    let mut obj = Obj::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        let (name, value) = (decode(name), Value::String(decode(value)));
        match obj.get_mut(&name) {
            Some(Value::Array(values)) => values.push(value),
            Some(first) => {
                let first = first.take();
                obj.insert(name, Value::Array(vec![first, value]));
            }
            None => {
                obj.insert(name, value);
            }
        }
    }
    obj
}

/// Looks up a field by its JSON (camelCase) or proto (snake_case) name; `null` counts as absent.
fn field<'a>(obj: &'a Obj, json: &str, proto: &str) -> Result<Option<&'a Value>, ApiError> {
    let a = obj.get(json);
    let b = if json == proto { None } else { obj.get(proto) };
    let v = match (a, b) {
        (Some(_), Some(_)) => return Err(decode_error(format!("duplicate field \"{proto}\""))),
        (Some(v), None) | (None, Some(v)) => v,
        (None, None) => return Ok(None),
    };
    Ok(if v.is_null() { None } else { Some(v) })
}

fn type_error(kind: &str, name: &str, v: &Value) -> ApiError {
    decode_error(format!("invalid value for {kind} field {name}: {v}"))
}

fn as_string(v: &Value, name: &str) -> Result<String, ApiError> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| type_error("string", name, v))
}

/// A `string` field (default `""`).
pub(crate) fn string(obj: &Obj, json: &str, proto: &str) -> Result<String, ApiError> {
    match field(obj, json, proto)? {
        Some(v) => as_string(v, proto),
        None => Ok(String::new()),
    }
}

/// Decodes base64 the way Go's protojson does: URL alphabet when the text contains `-` or `_`,
/// unpadded when its length is not a multiple of 4; CR and LF are ignored.
pub(crate) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let alphabet = if text.contains(['-', '_']) {
        alphabet::URL_SAFE
    } else {
        alphabet::STANDARD
    };
    let padding = if text.len().is_multiple_of(4) {
        DecodePaddingMode::RequireCanonical
    } else {
        DecodePaddingMode::RequireNone
    };
    let engine = GeneralPurpose::new(
        &alphabet,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(padding)
            .with_decode_allow_trailing_bits(true),
    );
    let cleaned: String = text.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    engine.decode(cleaned).ok()
}

/// A `bytes` field (default empty).
pub(crate) fn bytes(obj: &Obj, json: &str, proto: &str) -> Result<Vec<u8>, ApiError> {
    match field(obj, json, proto)? {
        Some(Value::String(s)) => {
            decode_base64(s).ok_or_else(|| type_error("bytes", proto, &Value::String(s.clone())))
        }
        Some(v) => Err(type_error("bytes", proto, v)),
        None => Ok(Vec::new()),
    }
}

fn unsigned(v: &Value, kind: &str, name: &str, max: u64) -> Result<u64, ApiError> {
    let parsed = match v {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().and_then(integral_f64)),
        Value::String(s) => s
            .parse::<u64>()
            .ok()
            .or_else(|| s.parse::<f64>().ok().and_then(integral_f64)),
        _ => None,
    };
    parsed
        .filter(|n| *n <= max)
        .ok_or_else(|| type_error(kind, name, v))
}

fn integral_f64(f: f64) -> Option<u64> {
    // 2^64 as f64; anything at or above it does not fit.
    const LIMIT: f64 = 18_446_744_073_709_551_616.0;
    if f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f < LIMIT {
        // Exact: `f` is a non-negative integer below 2^64.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(f as u64)
    } else {
        None
    }
}

/// A `uint64` field given as a JSON number or a decimal string (default 0).
pub(crate) fn uint64(obj: &Obj, json: &str, proto: &str) -> Result<u64, ApiError> {
    match field(obj, json, proto)? {
        Some(v) => unsigned(v, "uint64", proto, u64::MAX),
        None => Ok(0),
    }
}

/// A `uint32` field given as a JSON number or a decimal string (default 0).
pub(crate) fn uint32(obj: &Obj, json: &str, proto: &str) -> Result<u32, ApiError> {
    match field(obj, json, proto)? {
        Some(v) => unsigned(v, "uint32", proto, u64::from(u32::MAX))
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        None => Ok(0),
    }
}

/// A `bool` field (default false).
pub(crate) fn boolean(obj: &Obj, json: &str, proto: &str) -> Result<bool, ApiError> {
    match field(obj, json, proto)? {
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(type_error("bool", proto, v)),
        None => Ok(false),
    }
}

/// An enum field given by name or number (default 0). Unknown names are discarded (treated as
/// unset, i.e. 0) because ZITADEL's gateway unmarshals with `DiscardUnknown`; unknown numbers are
/// kept so that validation can reject them.
pub(crate) fn enumeration(
    obj: &Obj,
    json: &str,
    proto: &str,
    names: &[&str],
) -> Result<i32, ApiError> {
    match field(obj, json, proto)? {
        Some(Value::String(s)) => Ok(names
            .iter()
            .position(|n| n == s)
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or(0)),
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|i| i32::try_from(i).ok())
            .ok_or_else(|| type_error("enum", proto, &Value::Number(n.clone()))),
        Some(v) => Err(type_error("enum", proto, v)),
        None => Ok(0),
    }
}

/// A repeated field (absent or `null` = empty).
pub(crate) fn array<'a>(obj: &'a Obj, json: &str, proto: &str) -> Result<&'a [Value], ApiError> {
    match field(obj, json, proto)? {
        Some(Value::Array(items)) => Ok(items),
        Some(v) => Err(type_error("repeated", proto, v)),
        None => Ok(&[]),
    }
}

/// A message field (absent or `null` = unset).
pub(crate) fn message<'a>(
    obj: &'a Obj,
    json: &str,
    proto: &str,
) -> Result<Option<&'a Obj>, ApiError> {
    match field(obj, json, proto)? {
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(v) => Err(type_error("message", proto, v)),
        None => Ok(None),
    }
}

/// An element of a repeated message field.
pub(crate) fn element_message<'a>(v: &'a Value, proto: &str) -> Result<&'a Obj, ApiError> {
    v.as_object().ok_or_else(|| type_error("message", proto, v))
}

/// An element of a repeated string field.
pub(crate) fn element_string(v: &Value, proto: &str) -> Result<String, ApiError> {
    as_string(v, proto)
}

/// A `google.protobuf.Timestamp` field (RFC 3339); `None` when absent.
pub(crate) fn timestamp_field(
    obj: &Obj,
    json: &str,
    proto: &str,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    match field(obj, json, proto)? {
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| {
                decode_error(format!(
                    "invalid google.protobuf.Timestamp value {:?}",
                    Value::String(s.clone())
                ))
            }),
        Some(v) => Err(type_error("google.protobuf.Timestamp", proto, v)),
        None => Ok(None),
    }
}

/// Size of a varint.
fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        len += 1;
        n >>= 7;
    }
    len
}

/// Size of a length-delimited field (one-byte tag) with a body of `len` bytes.
fn delimited(len: usize) -> usize {
    1 + varint_len(len) + len
}

/// Estimated size of the protobuf encoding of an answer given as its protojson form: bytes
/// fields (`value`) count decoded, timestamps as `google.protobuf.Timestamp`, 64-bit integers
/// as varints, `google.protobuf.Struct` payloads as their text. Close enough to ZITADEL's real
/// encoding to decide the gateway's 4 MiB limit (the overhead per field is a few bytes).
pub(crate) fn proto_size(value: &Value) -> usize {
    fn field_size(name: &str, v: &Value, in_struct: bool) -> usize {
        match v {
            Value::Array(items) => items.iter().map(|i| field_size(name, i, in_struct)).sum(),
            Value::Object(map) => {
                let inner: usize = map
                    .iter()
                    .map(|(k, v)| field_size(k, v, in_struct || name == "payload"))
                    .sum();
                // Struct map entries carry the key as a field too.
                delimited(inner + if in_struct { delimited(name.len()) } else { 0 })
            }
            Value::String(s) if !in_struct && name == "value" => {
                delimited(decode_base64(s).map_or(s.len(), |b| b.len()))
            }
            Value::String(s) if !in_struct && DateTime::parse_from_rfc3339(s).is_ok() => {
                delimited(12)
            }
            Value::String(s) if !in_struct && s.parse::<u64>().is_ok() => {
                1 + varint_len(usize::try_from(s.parse::<u64>().unwrap_or(0)).unwrap_or(usize::MAX))
            }
            Value::String(s) => {
                delimited(s.len()) + if in_struct { delimited(name.len()) } else { 0 }
            }
            Value::Number(_) => 6,
            Value::Bool(_) => 2,
            Value::Null => 0,
        }
    }
    match value {
        Value::Object(map) => map.iter().map(|(k, v)| field_size(k, v, false)).sum(),
        other => field_size("", other, false),
    }
}

/// RFC 3339 UTC with `Z` and 0, 3, 6 or 9 fractional digits.
pub(crate) fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Standard base64 with padding.
pub(crate) fn base64(value: &[u8]) -> String {
    STANDARD.encode(value)
}

/// Builds a protojson object, omitting zero values.
#[derive(Debug, Default)]
pub(crate) struct Out(Obj);

impl Out {
    pub(crate) fn new() -> Self {
        Out(Obj::new())
    }

    /// A string field, omitted when empty.
    pub(crate) fn str(mut self, name: &str, v: &str) -> Self {
        if !v.is_empty() {
            self.0.insert(name.to_owned(), Value::String(v.to_owned()));
        }
        self
    }

    /// A 64-bit integer field as a JSON string, omitted when 0.
    pub(crate) fn u64(mut self, name: &str, v: u64) -> Self {
        if v != 0 {
            self.0.insert(name.to_owned(), Value::String(v.to_string()));
        }
        self
    }

    /// A timestamp field.
    pub(crate) fn time(mut self, name: &str, t: DateTime<Utc>) -> Self {
        self.0.insert(name.to_owned(), Value::String(timestamp(t)));
        self
    }

    /// A bool field, omitted when false.
    pub(crate) fn bool(mut self, name: &str, v: bool) -> Self {
        if v {
            self.0.insert(name.to_owned(), Value::Bool(true));
        }
        self
    }

    /// A bytes field (padded standard base64), omitted when empty.
    pub(crate) fn bytes(self, name: &str, v: &[u8]) -> Self {
        let encoded = base64(v);
        self.str(name, &encoded)
    }

    /// A message field, omitted when empty.
    pub(crate) fn obj(mut self, name: &str, v: Out) -> Self {
        if !v.0.is_empty() {
            self.0.insert(name.to_owned(), Value::Object(v.0));
        }
        self
    }

    /// A repeated field, omitted when empty.
    pub(crate) fn list(mut self, name: &str, items: Vec<Value>) -> Self {
        if !items.is_empty() {
            self.0.insert(name.to_owned(), Value::Array(items));
        }
        self
    }

    /// The finished JSON value.
    pub(crate) fn build(self) -> Value {
        Value::Object(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_variants() {
        assert_eq!(decode_base64("aGk/Pz8+").as_deref(), Some(&b"hi???>"[..]));
        assert_eq!(decode_base64("aGk_Pz8-").as_deref(), Some(&b"hi???>"[..]));
        assert_eq!(decode_base64("YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(decode_base64("YQ").as_deref(), Some(&b"a"[..]));
        assert_eq!(decode_base64("YQ=").as_deref(), None);
        assert_eq!(decode_base64("!!!!"), None);
        assert_eq!(decode_base64("").as_deref(), Some(&b""[..]));
    }

    #[test]
    fn integers_as_strings_or_numbers() {
        let obj = parse_body(br#"{"a":"12","b":13,"c":"x","d":1e2,"e":-1}"#).unwrap();
        assert_eq!(uint64(&obj, "a", "a").unwrap(), 12);
        assert_eq!(uint64(&obj, "b", "b").unwrap(), 13);
        assert!(uint64(&obj, "c", "c").is_err());
        assert_eq!(uint32(&obj, "d", "d").unwrap(), 100);
        assert!(uint32(&obj, "e", "e").is_err());
        assert_eq!(uint64(&obj, "zz", "zz").unwrap(), 0);
    }

    #[test]
    fn query_strings() {
        let obj = parse_query("domain=a%2Eb+c&login_name=x%40y&&flag&r=1&r=2");
        assert_eq!(string(&obj, "domain", "domain").unwrap(), "a.b c");
        assert_eq!(string(&obj, "loginName", "login_name").unwrap(), "x@y");
        assert_eq!(string(&obj, "flag", "flag").unwrap(), "");
        assert!(string(&obj, "r", "r").is_err());
        assert!(parse_query("").is_empty());
    }

    #[test]
    fn camel_and_snake_names() {
        let obj = parse_body(br#"{"key_query":{"key":"k"}}"#).unwrap();
        assert!(message(&obj, "keyQuery", "key_query").unwrap().is_some());
        let dup = parse_body(br#"{"key_query":{},"keyQuery":{}}"#).unwrap();
        assert!(message(&dup, "keyQuery", "key_query").is_err());
    }
}
