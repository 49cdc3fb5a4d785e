//! Printing results: aligned tables for people, JSON for scripts (`--output json`).

use keyhold_client::model::{state_name, Key};
use serde::Serialize;
use serde_json::Value;

use super::error::{CliError, CliResult};
use super::profile::Output;

pub fn json<T: Serialize + ?Sized>(v: &T) -> CliResult<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| CliError::Local(e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// Prints rows under headers, each column as wide as its widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(headers.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// Prints `field  value` lines.
pub fn fields(pairs: &[(&str, String)]) {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in pairs {
        println!("{k:<w$}  {v}");
    }
}

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_default()
}

/// Drops the payload unless it was asked for: a standard key's material is a secret.
pub fn redact(mut k: Key, show_payload: bool) -> Key {
    if !show_payload {
        k.payload = None;
    }
    k
}

pub fn key_row(k: &Key) -> Vec<String> {
    vec![
        k.id.clone(),
        k.name.clone(),
        k.kind().to_string(),
        state_name(k.state).to_string(),
        opt(&k.key_ring_id),
        k.aliases.join(","),
        opt(&k.creation_date),
    ]
}

pub const KEY_HEADERS: &[&str] = &["ID", "NAME", "TYPE", "STATE", "RING", "ALIASES", "CREATED"];

pub fn key(out: Output, k: &Key) -> CliResult<()> {
    match out {
        Output::Json => json(k),
        Output::Table => {
            let mut pairs = vec![
                ("id", k.id.clone()),
                ("name", k.name.clone()),
                ("type", k.kind().to_string()),
                ("state", format!("{} ({})", state_name(k.state), k.state)),
                ("key ring", opt(&k.key_ring_id)),
                ("aliases", k.aliases.join(", ")),
                (
                    "version",
                    k.key_version
                        .as_ref()
                        .map(|v| v.id.clone())
                        .unwrap_or_default(),
                ),
                ("created", opt(&k.creation_date)),
            ];
            for (name, field) in [
                ("description", "description"),
                ("last rotated", "lastRotateDate"),
                ("expires", "expirationDate"),
                ("deleted", "deletionDate"),
            ] {
                if let Some(Value::String(s)) = k.extra.get(field) {
                    pairs.push((name, s.clone()));
                }
            }
            if let Some(Value::Bool(true)) = k.extra.get("imported") {
                pairs.push(("imported", "yes".into()));
            }
            if let Some(p) = &k.payload {
                pairs.push(("payload", p.clone()));
            }
            fields(&pairs);
            Ok(())
        }
    }
}

pub fn keys(out: Output, ks: &[Key]) -> CliResult<()> {
    match out {
        Output::Json => json(ks),
        Output::Table => {
            let rows: Vec<Vec<String>> = ks.iter().map(key_row).collect();
            table(KEY_HEADERS, &rows);
            Ok(())
        }
    }
}

/// JSON values printed as a table of their top-level members.
pub fn values(out: Output, vs: &[Value]) -> CliResult<()> {
    match out {
        Output::Json => json(vs),
        Output::Table => {
            for (i, v) in vs.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                match v.as_object() {
                    Some(m) => {
                        let pairs: Vec<(&str, String)> = m
                            .iter()
                            .map(|(k, v)| {
                                let s = match v {
                                    Value::String(s) => s.clone(),
                                    other => other.to_string(),
                                };
                                (k.as_str(), s)
                            })
                            .collect();
                        fields(&pairs);
                    }
                    None => println!("{v}"),
                }
            }
            if vs.is_empty() {
                println!("(none)");
            }
            Ok(())
        }
    }
}

/// A one-line confirmation, or `{"ok":true,…}` in JSON.
pub fn done(out: Output, message: &str, extra: Value) -> CliResult<()> {
    match out {
        Output::Json => {
            let mut v = serde_json::json!({"ok": true, "message": message});
            if let (Some(m), Value::Object(e)) = (v.as_object_mut(), extra) {
                m.extend(e);
            }
            json(&v)
        }
        Output::Table => {
            println!("{message}");
            Ok(())
        }
    }
}
