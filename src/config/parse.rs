//! Parsers of flag values: label selectors, drift detection, API mode, durations.

use super::*;

/// Check a Kubernetes label selector (`a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`,
/// `a`, `!a`, comma-separated) and return it trimmed; an empty one selects everything.
pub fn parse_label_selector(s: &str) -> Result<String, String> {
    let s = s.trim();
    let mut depth = 0usize;
    let mut start = 0usize;
    let mut parts = Vec::new();
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1).ok_or("unbalanced ')'")?,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("invalid label selector {s:?}: unbalanced '('"));
    }
    if !s.is_empty() {
        parts.push(&s[start..]);
    }
    for part in parts {
        check_requirement(part.trim()).map_err(|e| format!("invalid label selector {s:?}: {e}"))?;
    }
    Ok(s.to_string())
}

/// One requirement of a label selector.
pub(super) fn check_requirement(r: &str) -> Result<(), String> {
    if let Some(key) = r.strip_prefix('!') {
        return label_key(key.trim());
    }
    for op in ["!=", "==", "="] {
        if let Some((key, value)) = r.split_once(op) {
            label_key(key.trim())?;
            return label_value(value.trim());
        }
    }
    for op in [" notin ", " in "] {
        if let Some((key, values)) = r.split_once(op) {
            label_key(key.trim())?;
            let values = values
                .trim()
                .strip_prefix('(')
                .and_then(|v| v.strip_suffix(')'))
                .ok_or_else(|| format!("{r:?}: values must be in parentheses"))?;
            for value in values.split(',') {
                label_value(value.trim())?;
            }
            return Ok(());
        }
    }
    label_key(r)
}

pub(super) fn label_name(name: &str, what: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if name.len() > 63 || !ok_chars || !ends(name.chars().next()) || !ends(name.chars().last()) {
        return Err(format!(
            "{what} {name:?} must be 1–63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric"
        ));
    }
    Ok(())
}

pub(super) fn label_key(key: &str) -> Result<(), String> {
    match key.rsplit_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() || prefix.len() > 253 {
                return Err(format!(
                    "label key prefix {prefix:?} must be a DNS subdomain"
                ));
            }
            label_name(name, "label name")
        }
        None => label_name(key, "label key"),
    }
}

pub(super) fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    label_name(value, "label value")
}

/// Parse `auto` or `polling` (any case).
pub fn parse_detection(s: &str) -> Result<Detection, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(Detection::Auto),
        "polling" => Ok(Detection::Polling),
        _ => Err(format!(
            "invalid drift detection {s:?} (use auto or polling)"
        )),
    }
}

/// Parse `auto`, `v1` or `v2` (any case) into an [`ApiMode`].
pub fn parse_api_mode(s: &str) -> Result<ApiMode, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(ApiMode::Auto),
        "v1" => Ok(ApiMode::V1),
        "v2" => Ok(ApiMode::V2),
        _ => Err(format!("invalid ZITADEL API {s:?} (use auto, v1 or v2)")),
    }
}

/// Parse `500ms`, `30s`, `5m`, `1h` (or a bare number of seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .or_else(|_| s.parse::<u64>().map(Duration::from_secs))
        .map_err(|_| format!("invalid duration {s:?} (use e.g. 500ms, 30s, 5m, 1h)"))
}
