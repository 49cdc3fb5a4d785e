//! `keyhold audit verify|export|events`: the audit trail (docs/audit.md).
//! `verify` checks an export offline: sequence continuity, hash links, record
//! hashes, checkpoint and head signatures; it names the first broken record.

use std::io::Write;
use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use clap::{Args, Subcommand};
use keyhold_client::Client;
use keyhold_server::audit::record::{self, Break};
use serde_json::Value;

use super::error::{CliError, CliResult};
use super::output;
use super::profile::{self, ConnArgs, Output};

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Verify an export (a file, `-` for stdin, or a server URL to export from now).
    /// Exit 0 when intact; 6 when broken, naming the first broken record.
    #[command(
        after_help = "Examples:\n  keyhold audit export trail.jsonl && keyhold audit verify trail.jsonl --public-key audit-keys.json\n  \
keyhold audit verify http://127.0.0.1:8080 --dev-json keyhold-data/dev.json\n\n\
Exit codes: 0 intact, 6 broken or unverifiable (first broken record named on stderr), others as for every command."
    )]
    Verify(VerifyArgs),
    /// Stream the audit trail (events, checkpoints, signed head) as JSON lines.
    #[command(
        after_help = "Examples:\n  keyhold audit export trail.jsonl\n  keyhold audit export - | gzip > trail.jsonl.gz"
    )]
    Export {
        /// Where to write (`-`: stdout).
        #[arg(default_value = "-")]
        file: PathBuf,
    },
    /// List the account's audit events (Administrator only), oldest first.
    #[command(
        after_help = "Examples:\n  keyhold audit events --action kms.secrets.wrap --outcome failure\n  \
keyhold audit events --key 6f3c…-uuid --from 2026-11-28T00:00:00Z -o json"
    )]
    Events(EventsArgs),
    /// Print the public keys the trail's checkpoints and heads are signed with.
    #[command(after_help = "Example:\n  keyhold audit keys -o json > audit-keys.json")]
    Keys,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// An export file, `-` for stdin, or the base URL of a server (http:// or https://).
    source: String,
    /// The trusted public keys: the JSON of `GET /audit/v1/keys` (`keyhold audit keys -o json`)
    /// or one base64 Ed25519 key. Required for a file; for a URL they are fetched from the
    /// server when omitted (which trusts that server).
    #[arg(long, value_name = "FILE")]
    public_key: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Events at or after this RFC 3339 time.
    #[arg(long)]
    from: Option<String>,
    /// Events at or before this RFC 3339 time.
    #[arg(long)]
    to: Option<String>,
    /// Events naming this key id (or alias, as given in the path).
    #[arg(long)]
    key: Option<String>,
    /// Events of this principal id.
    #[arg(long)]
    principal: Option<String>,
    /// Events of this action (e.g. kms.secrets.wrap).
    #[arg(long)]
    action: Option<String>,
    /// success or failure.
    #[arg(long)]
    outcome: Option<String>,
    /// Events of this instance.
    #[arg(long)]
    instance: Option<String>,
    /// At most this many (1-1000).
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Events after this sequence number (the `next_after` of the previous page).
    #[arg(long)]
    after: Option<u64>,
}

fn parse_keys(text: &str) -> CliResult<Vec<(String, Vec<u8>)>> {
    let bad = || {
        CliError::Usage("--public-key must hold the JSON of GET /audit/v1/keys or one base64 Ed25519 public key".into())
    };
    let text = text.trim();
    if text.starts_with('{') {
        let v: Value = serde_json::from_str(text).map_err(|_| bad())?;
        let keys = v.get("keys").and_then(Value::as_array).ok_or_else(bad)?;
        keys.iter()
            .map(|k| {
                let pk = k
                    .get("public_key")
                    .and_then(Value::as_str)
                    .and_then(|p| B64.decode(p).ok())
                    .ok_or_else(bad)?;
                Ok((record::key_id(&pk), pk))
            })
            .collect()
    } else {
        let pk = B64.decode(text).map_err(|_| bad())?;
        Ok(vec![(record::key_id(&pk), pk)])
    }
}

fn url_client(conn: &ConnArgs, url: &str) -> CliResult<Client> {
    let mut cfg = profile::resolve(conn)?;
    cfg.url = url.trim_end_matches('/').to_string();
    Ok(Client::new(cfg)?)
}

fn report(result: Result<record::Verified, Break>, out: Output) -> CliResult<()> {
    match result {
        Ok(v) => {
            match out {
                Output::Json => {
                    output::json(&serde_json::json!({"intact": true, "records": v.records,
                    "checkpoints": v.checkpoints, "redacted": v.redacted, "head_seq": v.head_seq}))?
                }
                Output::Table => println!(
                    "intact: {} records ({} checkpoints, {} redacted), signed head at seq {}",
                    v.records, v.checkpoints, v.redacted, v.head_seq
                ),
            }
            Ok(())
        }
        Err(b) => {
            if out == Output::Json {
                output::json(
                    &serde_json::json!({"intact": false, "seq": b.seq, "line": b.line, "problem": b.what}),
                )?;
            }
            Err(CliError::Broken(format!(
                "the audit trail is broken at seq {} (line {}): {}",
                b.seq, b.line, b.what
            )))
        }
    }
}

pub async fn run(conn: &ConnArgs, out: Output, cmd: AuditCmd) -> CliResult<()> {
    match cmd {
        AuditCmd::Verify(a) => {
            let pinned = match &a.public_key {
                Some(p) => Some(parse_keys(&std::fs::read_to_string(p).map_err(|e| {
                    CliError::Local(format!("cannot read {}: {e}", p.display()))
                })?)?),
                None => None,
            };
            let is_url = a.source.starts_with("http://") || a.source.starts_with("https://");
            let (text, keys) = if is_url {
                let c = url_client(conn, &a.source)?;
                let keys = match pinned {
                    Some(k) => k,
                    None => parse_keys(&c.audit_keys().await?.to_string())?,
                };
                let mut buf = Vec::new();
                c.audit_export(&mut buf).await?;
                (buf, keys)
            } else {
                let keys = pinned.ok_or_else(|| {
                    CliError::Usage("verifying a file needs --public-key (keyhold audit keys -o json > keys.json)".into())
                })?;
                let mut buf = Vec::new();
                if a.source == "-" {
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
                } else {
                    buf = std::fs::read(&a.source)
                        .map_err(|e| CliError::Local(format!("cannot read {}: {e}", a.source)))?;
                }
                (buf, keys)
            };
            let text = String::from_utf8(text)
                .map_err(|_| CliError::Broken("the export is not UTF-8 text".into()))?;
            report(record::verify(text.lines(), &keys), out)
        }
        AuditCmd::Export { file } => {
            let c = super::client(conn)?;
            if file.as_os_str() == "-" {
                let mut stdout = std::io::stdout();
                c.audit_export(&mut stdout).await?;
                stdout.flush()?;
            } else {
                let mut f = std::fs::File::create(&file).map_err(|e| {
                    CliError::Local(format!("cannot create {}: {e}", file.display()))
                })?;
                c.audit_export(&mut f).await?;
                f.sync_all()?;
            }
            Ok(())
        }
        AuditCmd::Keys => {
            let c = super::client(conn)?;
            let v = c.audit_keys().await?;
            match out {
                Output::Json => output::json(&v),
                Output::Table => {
                    let rows: Vec<Vec<String>> = v
                        .get("keys")
                        .and_then(Value::as_array)
                        .map(|ks| {
                            ks.iter()
                                .map(|k| {
                                    ["id", "alg", "public_key"]
                                        .iter()
                                        .map(|f| {
                                            k.get(*f)
                                                .and_then(Value::as_str)
                                                .unwrap_or("")
                                                .to_string()
                                        })
                                        .collect()
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    output::table(&["ID", "ALG", "PUBLIC KEY"], &rows);
                    Ok(())
                }
            }
        }
        AuditCmd::Events(a) => {
            let c = super::client(conn)?;
            let mut f: Vec<(&'static str, String)> = vec![("limit", a.limit.to_string())];
            let opt = [
                ("from", a.from),
                ("to", a.to),
                ("key_id", a.key),
                ("principal", a.principal),
                ("action", a.action),
                ("outcome", a.outcome),
                ("instance", a.instance),
                ("after", a.after.map(|n| n.to_string())),
            ];
            for (k, v) in opt {
                if let Some(v) = v {
                    f.push((k, v));
                }
            }
            let v = c.audit_events(&f).await?;
            let events = v
                .get("resources")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            match out {
                Output::Json => output::json(&v),
                Output::Table => {
                    let s = |e: &Value, k: &str| match e.get(k) {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Number(n)) => n.to_string(),
                        _ => String::new(),
                    };
                    let rows: Vec<Vec<String>> = events
                        .iter()
                        .map(|e| {
                            [
                                "seq",
                                "time",
                                "action",
                                "outcome",
                                "status",
                                "reason",
                                "principal_id",
                                "key_id",
                            ]
                            .iter()
                            .map(|k| s(e, k))
                            .collect()
                        })
                        .collect();
                    output::table(
                        &[
                            "SEQ",
                            "TIME",
                            "ACTION",
                            "OUTCOME",
                            "STATUS",
                            "REASON",
                            "PRINCIPAL",
                            "KEY",
                        ],
                        &rows,
                    );
                    if let Some(n) = v.get("next_after").and_then(Value::as_u64) {
                        println!("more: --after {n}");
                    }
                    Ok(())
                }
            }
        }
    }
}
