//! Tolerant request-body parsing (keyprotect-api.md §3): empty, `{}` and `null`
//! bodies mean "no body"; member names match case-insensitively (they are
//! lower-cased before typed decoding, so typed fields use lower-case names).
//! Error messages name fields, never echo values (a value may be key material).

use axum::body::Bytes;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use keyhold_core::{Error, Reason, Result};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

fn lowercase_keys(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::with_capacity(m.len());
            for (k, v) in m {
                out.insert(k.to_ascii_lowercase(), lowercase_keys(v));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.into_iter().map(lowercase_keys).collect()),
        other => other,
    }
}

/// A rotation policy as keys and key policies carry it.
#[derive(serde::Deserialize)]
pub struct RotationIn {
    pub enabled: Option<bool>,
    pub interval_month: Option<i64>,
}

/// A dual-authorization-delete policy as keys and key policies carry it.
#[derive(serde::Deserialize)]
pub struct DualAuthIn {
    pub enabled: Option<bool>,
}

/// Key material sent with rotate (and, by legacy clients, restore).
#[derive(serde::Deserialize, Default)]
pub struct MaterialIn {
    pub payload: Option<String>,
    pub encryptednonce: Option<String>,
    pub iv: Option<String>,
    pub encryptionalgorithm: Option<String>,
}

/// `None` for an empty or `null` body.
pub fn parse(bytes: &Bytes) -> Result<Option<Value>> {
    let text = bytes.as_ref();
    if text.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(text).map_err(|e| {
        Error::bad_body(format!(
            "The request body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    Ok(match value {
        Value::Null => None,
        v => Some(lowercase_keys(v)),
    })
}

/// Decodes an already-parsed (lower-cased) value into `T`.
pub fn typed<T: DeserializeOwned>(v: Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| {
        let msg = e.to_string();
        // serde names the field for missing/unknown fields; other messages may quote values.
        if msg.starts_with("unknown field") || msg.starts_with("missing field") {
            let short = msg.split(", expected").next().unwrap_or(&msg).to_string();
            Error::bad_body(format!("json: {short}"))
        } else {
            Error::bad_body("The request body has a member of the wrong type or shape")
        }
    })
}

/// The members of a `{"metadata":…, "resources":[…]}` body; checks `collectionTotal`.
pub fn resources(body: Option<Value>) -> Result<Vec<Value>> {
    let Some(Value::Object(mut m)) = body else {
        return Err(Error::new(
            Reason::NoBody,
            "The request needs a body with `metadata` and `resources`",
        ));
    };
    let resources = match m.remove("resources") {
        Some(Value::Array(r)) => r,
        _ => {
            return Err(Error::bad_body(
                "The request body needs a `resources` array",
            ))
        }
    };
    if let Some(meta) = m.get("metadata") {
        let total = meta.get("collectiontotal");
        match total {
            None | Some(Value::Null) => {}
            Some(t) if t.as_u64() == Some(resources.len() as u64) => {}
            Some(_) => {
                return Err(Error::new(
                    Reason::CollectionTotalMismatch,
                    "The collectionTotal in metadata does not match the number of resources",
                ))
            }
        }
    }
    if resources.is_empty() {
        return Err(Error::new(
            Reason::NumCollectionResource,
            "The request body needs at least one resource",
        ));
    }
    Ok(resources)
}

/// Decodes standard, padded base64 from a named field; anything else is refused
/// rather than guessed at.
pub fn base64_field(field: &'static str, value: &str, must_be: &str) -> Result<Zeroizing<Vec<u8>>> {
    STANDARD
        .decode(value.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| Error::invalid_field(field, must_be))
}

pub fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerant_bodies() {
        assert_eq!(parse(&Bytes::from_static(b"")).unwrap(), None);
        assert_eq!(parse(&Bytes::from_static(b"  \n")).unwrap(), None);
        assert_eq!(parse(&Bytes::from_static(b"null")).unwrap(), None);
        assert_eq!(
            parse(&Bytes::from_static(b"{}")).unwrap(),
            Some(serde_json::json!({}))
        );
        assert_eq!(
            parse(&Bytes::from_static(br#"{"KeyRingID":"r"}"#)).unwrap(),
            Some(serde_json::json!({"keyringid":"r"}))
        );
        assert!(parse(&Bytes::from_static(b"{")).is_err());
    }

    #[test]
    fn typed_errors_do_not_echo_values() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            n: u8,
        }
        let e = typed::<T>(serde_json::json!({"n": "top-secret"})).unwrap_err();
        assert!(!e.message.contains("top-secret"));
    }

    #[test]
    fn collection_checks() {
        let ok = resources(Some(
            serde_json::json!({"metadata":{"collectiontotal":1},"resources":[{}]}),
        ))
        .unwrap();
        assert_eq!(ok.len(), 1);
        let e = resources(Some(
            serde_json::json!({"metadata":{"collectiontotal":2},"resources":[{}]}),
        ))
        .unwrap_err();
        assert_eq!(e.reason, Reason::CollectionTotalMismatch);
        assert_eq!(resources(None).unwrap_err().reason, Reason::NoBody);
    }
}
