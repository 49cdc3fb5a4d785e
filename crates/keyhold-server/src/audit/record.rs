//! The audit records and their canonical form (docs/audit.md is the
//! specification): what is hashed, what is signed, and the offline check of an
//! export that `keyhold audit verify` runs.
//!
//! A record's canonical serialisation is its compact JSON object with the fields
//! in the declared order and without `hash`; `hash` is the lowercase hex SHA-256
//! of those bytes, and the stored/exported line is the same object with `hash`
//! appended last. The verifier re-serialises the parsed fields, so a line edited
//! in any way (a field changed, added or removed) fails its hash.

use aws_lc_rs::digest::{digest, SHA256};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const CHECKPOINT_DOMAIN: &str = "keyhold-audit-checkpoint-v1";
const HEAD_DOMAIN: &str = "keyhold-audit-head-v1";

fn is_empty(s: &str) -> bool {
    s.is_empty()
}

/// One audited call. No request or response body is ever part of it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub seq: u64,
    pub prev_hash: String,
    /// RFC 3339 UTC with milliseconds.
    pub time: String,
    /// Always `event`.
    #[serde(rename = "type")]
    pub kind: String,
    pub request_id: String,
    pub action: String,
    /// `success` (2xx/3xx) or `failure`.
    pub outcome: String,
    pub status: u16,
    /// The Key Protect reason code of a failure; empty on success.
    pub reason: String,
    pub account_id: String,
    pub principal_id: String,
    pub principal_kind: String,
    pub source_ip: String,
    pub user_agent: String,
    pub instance_id: String,
    /// The key id or alias named in the path.
    pub key_id: String,
    pub key_version: String,
    pub method: String,
    /// The route template (`/api/v2/keys/{id}/actions/{action}`), never the raw path.
    pub route: String,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub hash: String,
}

/// An event's fields after its place in the chain (`type` to `route`), borrowed
/// from the request and serialised on its thread. The writer prefixes `seq`,
/// `prev_hash` and `time` ([`seal_line`]); the result is byte for byte the
/// canonical form of the [`Event`] (the names and order here are Event's, and
/// `batch_lines_are_the_canonical_form` pins that). Building it copies no
/// string; it is serialised straight into the audit queue.
#[derive(Debug, Default, Serialize)]
pub struct EventBody<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub request_id: &'a str,
    pub action: &'a str,
    pub outcome: &'a str,
    pub status: u16,
    pub reason: &'a str,
    pub account_id: &'a str,
    pub principal_id: &'a str,
    pub principal_kind: &'a str,
    pub source_ip: &'a str,
    pub user_agent: &'a str,
    pub instance_id: &'a str,
    pub key_id: &'a str,
    pub key_version: &'a str,
    pub method: &'a str,
    pub route: &'a str,
}

impl EventBody<'_> {
    /// Appends the compact JSON object, `{"type":…,"route":…}`: byte for byte
    /// what serde_json writes for it, without serde's per-field machinery
    /// (this runs on every audited request).
    pub fn write_json(&self, out: &mut String) {
        // One call per field, not a loop over (name, value) pairs: inlined, each
        // name is a constant and is copied by a few moves rather than by a call to
        // memmove (half of the 34 such calls an event; `memmove` was among the
        // largest items of the request side's audit cost in perf).
        out.reserve(512);
        field(out, "{\"type\":", self.kind);
        field(out, ",\"request_id\":", self.request_id);
        field(out, ",\"action\":", self.action);
        field(out, ",\"outcome\":", self.outcome);
        out.push_str(",\"status\":");
        out.push_str(itoa::Buffer::new().format(self.status));
        field(out, ",\"reason\":", self.reason);
        field(out, ",\"account_id\":", self.account_id);
        field(out, ",\"principal_id\":", self.principal_id);
        field(out, ",\"principal_kind\":", self.principal_kind);
        field(out, ",\"source_ip\":", self.source_ip);
        field(out, ",\"user_agent\":", self.user_agent);
        field(out, ",\"instance_id\":", self.instance_id);
        field(out, ",\"key_id\":", self.key_id);
        field(out, ",\"key_version\":", self.key_version);
        field(out, ",\"method\":", self.method);
        field(out, ",\"route\":", self.route);
        out.push('}');
    }
}

#[inline(always)]
fn field(out: &mut String, name: &'static str, value: &str) {
    out.push_str(name);
    json_str(value, out);
}

/// Appends `s` as a JSON string, exactly as serde_json writes it: a string
/// with nothing to escape (nearly every one) is copied as it is.
fn json_str(s: &str, out: &mut String) {
    if needs_escape(s.as_bytes()) {
        // Serialising a str cannot fail.
        out.push_str(&serde_json::to_string(s).unwrap_or_default());
    } else {
        out.reserve(s.len() + 2);
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
}

/// Whether `s` holds a byte JSON escapes (`"`, `\` or a control character),
/// eight bytes per step: every field of every event passes through here, and
/// the byte-at-a-time check was two thirds of writing an event.
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Some byte of `v` is below `n` (n <= 0x80): the classic SWAR test, exact as a yes/no.
    let has_below = |v: u64, n: u8| v.wrapping_sub(ONES * u64::from(n)) & !v & HIGH != 0;
    let has_byte = |v: u64, b: u8| has_below(v ^ (ONES * u64::from(b)), 1);
    let mut words = s.chunks_exact(8);
    for w in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(w);
        let v = u64::from_ne_bytes(bytes);
        if has_below(v, 0x20) || has_byte(v, b'"') || has_byte(v, b'\\') {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// Appends the stored line of the event at `seq` (after `prev_hash`, at `time`)
/// whose serialised [`EventBody`] is `body`, and a newline, to `out`; returns
/// the event's hash. `prev_hash` (hex) and `time` (RFC 3339) need no escaping.
pub fn seal_line(seq: u64, prev_hash: &str, time: &str, body: &str, out: &mut String) -> HexDigest {
    let start = out.len();
    out.push_str("{\"seq\":");
    out.push_str(itoa::Buffer::new().format(seq));
    out.push_str(",\"prev_hash\":\"");
    out.push_str(prev_hash);
    out.push_str("\",\"time\":\"");
    out.push_str(time);
    out.push_str("\",");
    out.push_str(body.get(1..).unwrap_or_default());
    let hash = HexDigest::sha256(&out.as_bytes()[start..]);
    out.pop(); // the closing brace
    out.push_str(",\"hash\":\"");
    out.push_str(hash.as_str());
    out.push_str("\"}\n");
    hash
}

/// A SHA-256 as lowercase hex, held inline: the writer makes one per event.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HexDigest([u8; 64]);

impl HexDigest {
    pub fn sha256(bytes: &[u8]) -> Self {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0u8; 64];
        for (pair, b) in hex.chunks_exact_mut(2).zip(digest(&SHA256, bytes).as_ref()) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 15)];
        }
        HexDigest(hex)
    }

    pub fn as_str(&self) -> &str {
        // Hex digits only, so this never fails.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for HexDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A signed statement that the chain up to `covers_seq` ends in `prev_hash`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub seq: u64,
    pub prev_hash: String,
    pub time: String,
    /// Always `checkpoint`.
    #[serde(rename = "type")]
    pub kind: String,
    pub covers_seq: u64,
    pub signing_key_id: String,
    /// Base64 Ed25519 signature over [`checkpoint_message`].
    pub signature: String,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub hash: String,
}

/// The last line of an export: the chain's head when the export was made, signed,
/// so a truncated export is told from a complete one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Head {
    #[serde(rename = "type")]
    pub kind: String,
    pub seq: u64,
    pub hash: String,
    pub time: String,
    pub signing_key_id: String,
    pub signature: String,
}

/// An event of another account in an export: its place in the chain without its content.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Redacted {
    pub seq: u64,
    pub prev_hash: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub hash: String,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    HexDigest::sha256(bytes).as_str().to_string()
}

/// The stored line: the canonical form with `"hash"` appended as its last member
/// (what serialising the record with `hash` set gives, without serialising twice).
fn with_hash(mut bare: String, hash: &str) -> String {
    bare.pop(); // the closing brace
    bare.reserve(hash.len() + 11);
    bare.push_str(",\"hash\":\"");
    bare.push_str(hash);
    bare.push_str("\"}");
    bare
}

/// Canonical bytes of a record: compact JSON, declared field order, no `hash`.
fn canonical<T: Serialize>(record: &T) -> String {
    // Serialising these plain structs cannot fail (no maps with non-string keys).
    serde_json::to_string(record).unwrap_or_default()
}

impl Event {
    /// Fills `hash` from the canonical form; returns the stored line. (The
    /// server seals through [`EventBody`] and [`seal_line`]; tests build chains with this.)
    #[cfg(test)]
    pub fn seal(&mut self) -> String {
        self.hash.clear();
        let bare = canonical(self);
        self.hash = sha256_hex(bare.as_bytes());
        with_hash(bare, &self.hash)
    }

    fn computed_hash(&self) -> String {
        let mut c = self.clone();
        c.hash.clear();
        sha256_hex(canonical(&c).as_bytes())
    }
}

pub fn checkpoint_message(covers_seq: u64, covers_hash: &str, time: &str) -> String {
    format!("{CHECKPOINT_DOMAIN}\n{covers_seq}\n{covers_hash}\n{time}")
}

pub fn head_message(seq: u64, hash: &str, time: &str) -> String {
    format!("{HEAD_DOMAIN}\n{seq}\n{hash}\n{time}")
}

/// The short id of an audit public key: the first 16 hex digits of its SHA-256.
pub fn key_id(public_key: &[u8]) -> String {
    sha256_hex(public_key)[..16].to_string()
}

/// Signs checkpoints and export heads.
pub struct Signer {
    key: Ed25519KeyPair,
    id: String,
}

impl Signer {
    pub fn new(pkcs8: &[u8]) -> Result<Self, String> {
        let key = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|_| "the audit signing key is not an Ed25519 key".to_string())?;
        let id = key_id(key.public_key().as_ref());
        Ok(Signer { key, id })
    }

    pub fn generate() -> Result<Vec<u8>, String> {
        Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| "cannot generate the audit signing key".to_string())
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn public_key(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    /// A checkpoint over the chain ending at (`seq - 1`, `prev_hash`); returns it sealed.
    pub fn checkpoint(&self, seq: u64, prev_hash: &str, time: String) -> (Checkpoint, String) {
        let sig = self
            .key
            .sign(checkpoint_message(seq - 1, prev_hash, &time).as_bytes());
        let mut c = Checkpoint {
            seq,
            prev_hash: prev_hash.to_string(),
            time,
            kind: "checkpoint".into(),
            covers_seq: seq - 1,
            signing_key_id: self.id.clone(),
            signature: B64.encode(sig.as_ref()),
            hash: String::new(),
        };
        let bare = canonical(&c);
        c.hash = sha256_hex(bare.as_bytes());
        let line = with_hash(bare, &c.hash);
        (c, line)
    }

    pub fn head(&self, seq: u64, hash: &str, time: String) -> Head {
        let sig = self.key.sign(head_message(seq, hash, &time).as_bytes());
        Head {
            kind: "head".into(),
            seq,
            hash: hash.to_string(),
            time,
            signing_key_id: self.id.clone(),
            signature: B64.encode(sig.as_ref()),
        }
    }
}

/// Where an export first fails its check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// The sequence number of the first record that is missing, altered or out of place.
    pub seq: u64,
    /// The export's line (1-based) where it was found.
    pub line: usize,
    pub what: String,
}

/// What an intact export holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    pub checkpoints: u64,
    pub redacted: u64,
    pub head_seq: u64,
}

/// Checks an export (JSON lines: records in sequence order, then the signed head)
/// against trusted public keys `(key id, raw Ed25519 key)`.
pub fn verify<'a>(
    lines: impl Iterator<Item = &'a str>,
    keys: &[(String, Vec<u8>)],
) -> Result<Verified, Break> {
    let mut expected = 1u64;
    let mut prev = ZERO_HASH.to_string();
    let mut out = Verified {
        records: 0,
        checkpoints: 0,
        redacted: 0,
        head_seq: 0,
    };
    let mut head: Option<(usize, Head)> = None;
    let broken = |seq: u64, line: usize, what: String| Break { seq, line, what };
    let signature_ok = |key_id: &str, msg: &str, sig: &str| -> bool {
        let Some((_, pk)) = keys.iter().find(|(id, _)| id == key_id) else {
            return false;
        };
        let Ok(sig) = B64.decode(sig) else {
            return false;
        };
        UnparsedPublicKey::new(&ED25519, pk)
            .verify(msg.as_bytes(), &sig)
            .is_ok()
    };
    for (i, raw) in lines.enumerate() {
        let n = i + 1;
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        if head.is_some() {
            return Err(broken(
                expected,
                n,
                "a record follows the signed head".into(),
            ));
        }
        let value: serde_json::Value = serde_json::from_str(raw)
            .map_err(|_| broken(expected, n, "the line is not JSON".into()))?;
        let kind = value.get("type").and_then(|t| t.as_str()).unwrap_or("");
        if kind == "head" {
            let h: Head = serde_json::from_value(value)
                .map_err(|_| broken(expected, n, "malformed head".into()))?;
            head = Some((n, h));
            continue;
        }
        let seq = value.get("seq").and_then(|s| s.as_u64()).unwrap_or(0);
        if seq != expected {
            let what = if seq > expected {
                format!("record {expected} is missing (the next record is {seq})")
            } else {
                format!("record {seq} appears where record {expected} belongs (duplicated, inserted or reordered)")
            };
            return Err(broken(expected, n, what));
        }
        let (record_prev, hash, computed) = match kind {
            "event" => {
                let e: Event = serde_json::from_value(value)
                    .map_err(|_| broken(seq, n, "malformed event".into()))?;
                let c = e.computed_hash();
                (e.prev_hash, e.hash, c)
            }
            "checkpoint" => {
                let c: Checkpoint = serde_json::from_value(value)
                    .map_err(|_| broken(seq, n, "malformed checkpoint".into()))?;
                if c.covers_seq + 1 != seq
                    || !signature_ok(
                        &c.signing_key_id,
                        &checkpoint_message(c.covers_seq, &c.prev_hash, &c.time),
                        &c.signature,
                    )
                {
                    return Err(broken(
                        seq,
                        n,
                        "the checkpoint's signature does not verify with the trusted audit key"
                            .into(),
                    ));
                }
                out.checkpoints += 1;
                let mut bare = c.clone();
                bare.hash.clear();
                let computed = sha256_hex(canonical(&bare).as_bytes());
                (c.prev_hash, c.hash, computed)
            }
            "redacted" => {
                let r: Redacted = serde_json::from_value(value)
                    .map_err(|_| broken(seq, n, "malformed redacted record".into()))?;
                out.redacted += 1;
                (r.prev_hash, r.hash.clone(), r.hash)
            }
            other => return Err(broken(seq, n, format!("unknown record type {other:?}"))),
        };
        if record_prev != prev {
            return Err(broken(
                seq,
                n,
                "prev_hash does not match the previous record's hash (a record before it was removed or altered)".into(),
            ));
        }
        if hash != computed {
            return Err(broken(
                seq,
                n,
                "the record's content does not match its hash (altered)".into(),
            ));
        }
        prev = hash;
        out.records += 1;
        expected += 1;
    }
    let Some((n, h)) = head else {
        return Err(broken(
            expected,
            0,
            "the export has no signed head: it was truncated".into(),
        ));
    };
    if !signature_ok(
        &h.signing_key_id,
        &head_message(h.seq, &h.hash, &h.time),
        &h.signature,
    ) {
        return Err(broken(
            h.seq,
            n,
            "the head's signature does not verify with the trusted audit key".into(),
        ));
    }
    if h.seq != expected - 1 {
        return Err(broken(
            expected,
            n,
            format!(
                "the signed head names record {} but the export ends at record {}: truncated",
                h.seq,
                expected - 1
            ),
        ));
    }
    if h.hash != prev {
        return Err(broken(
            h.seq,
            n,
            "the signed head's hash does not match the last record".into(),
        ));
    }
    out.head_seq = h.seq;
    Ok(out)
}

/// Now as RFC 3339 UTC with milliseconds, and as unix milliseconds.
pub fn now() -> (String, i64) {
    let ms = now_ms();
    (format_ms(ms), ms)
}

/// Now as unix milliseconds (what a request takes; the writer formats it). Read
/// from the system clock directly: through `OffsetDateTime` every request
/// would also work out a calendar date it does not use.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds.
pub fn format_ms(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(signer: &Signer, n: u64) -> Vec<String> {
        let mut prev = ZERO_HASH.to_string();
        let mut lines = Vec::new();
        for seq in 1..=n {
            let line = if seq % 3 == 0 {
                let (c, line) = signer.checkpoint(seq, &prev, "2026-01-01T00:00:00.000Z".into());
                prev = c.hash;
                line
            } else {
                let mut e = Event {
                    seq,
                    prev_hash: prev.clone(),
                    kind: "event".into(),
                    action: "kms.secrets.wrap".into(),
                    ..Default::default()
                };
                let line = e.seal();
                prev = e.hash;
                line
            };
            lines.push(line);
        }
        let head = signer.head(n, &prev, "2026-01-01T00:00:01.000Z".into());
        lines.push(serde_json::to_string(&head).unwrap());
        lines
    }

    #[test]
    fn batch_lines_are_the_canonical_form() {
        let body = EventBody {
            kind: "event",
            request_id: "r-1",
            action: "kms.secrets.wrap",
            outcome: "success",
            status: 200,
            reason: "",
            account_id: "acct",
            principal_id: "IBMid-1",
            principal_kind: "user",
            source_ip: "127.0.0.1",
            user_agent: "quote \" backslash \\ tab \t é",
            instance_id: "inst",
            key_id: "key",
            key_version: "ver",
            method: "POST",
            route: "/api/v2/keys/{id}/actions/{action}",
        };
        let mut out = "earlier line\n".to_string();
        let mut json = String::new();
        body.write_json(&mut json);
        assert_eq!(json, serde_json::to_string(&body).unwrap());
        let hash = seal_line(9, ZERO_HASH, "2026-01-01T00:00:00.000Z", &json, &mut out);
        let line = out["earlier line\n".len()..].strip_suffix('\n').unwrap();
        // The verifier's reading: the line parses as an Event whose canonical form hashes to it.
        let e: Event = serde_json::from_str(line).unwrap();
        assert_eq!((e.seq, e.hash.as_str()), (9, hash.as_str()));
        assert_eq!(e.computed_hash(), hash.as_str());
        assert_eq!(
            canonical(&e),
            line,
            "serialising the event gives the stored line"
        );
        assert_eq!(e.user_agent, body.user_agent);
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        let samples = [
            "",
            "plain",
            "quote \" backslash \\ slash /",
            "controls \u{0} \u{8} \t \n \u{b} \u{c} \r \u{1f} \u{7f}",
            "non-ASCII é ✓ 🔑 \u{2028}",
        ];
        for s in samples {
            let mut out = String::new();
            json_str(s, &mut out);
            assert_eq!(out, serde_json::to_string(s).unwrap(), "{s:?}");
        }
        // Every byte value at every offset of a word and of the tail, next to
        // bytes just outside the escaped ranges.
        for len in [1usize, 7, 8, 9, 16, 17, 23] {
            for at in 0..len {
                for b in 0u8..0x80 {
                    let mut v: Vec<u8> = (0..len)
                        .map(|i| [0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, b'A'][i % 7])
                        .collect();
                    v[at] = b;
                    let s = std::str::from_utf8(&v).unwrap();
                    let mut out = String::new();
                    json_str(s, &mut out);
                    assert_eq!(out, serde_json::to_string(s).unwrap(), "{s:?}");
                }
            }
        }
        let mut status = String::new();
        EventBody {
            status: 503,
            ..Default::default()
        }
        .write_json(&mut status);
        assert!(status.contains(",\"status\":503,"));
    }

    #[test]
    fn intact_and_tampered() {
        let signer = Signer::new(&Signer::generate().unwrap()).unwrap();
        let keys = vec![(signer.id().to_string(), signer.public_key().to_vec())];
        let lines = chain(&signer, 7);
        for l in &lines[..lines.len() - 1] {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let again = if v["type"] == "event" {
                canonical(&serde_json::from_value::<Event>(v).unwrap())
            } else {
                canonical(&serde_json::from_value::<Checkpoint>(v).unwrap())
            };
            assert_eq!(
                &again, l,
                "the stored line is the record serialised with its hash"
            );
        }
        let ok = verify(lines.iter().map(String::as_str), &keys).unwrap();
        assert_eq!((ok.records, ok.checkpoints, ok.head_seq), (7, 2, 7));

        let mut modified = lines.clone();
        modified[3] = modified[3].replace("kms.secrets.wrap", "kms.secrets.unwrap");
        assert_eq!(
            verify(modified.iter().map(String::as_str), &keys)
                .unwrap_err()
                .seq,
            4
        );

        let mut deleted = lines.clone();
        deleted.remove(1);
        assert_eq!(
            verify(deleted.iter().map(String::as_str), &keys)
                .unwrap_err()
                .seq,
            2
        );

        let mut swapped = lines.clone();
        swapped.swap(3, 4);
        assert_eq!(
            verify(swapped.iter().map(String::as_str), &keys)
                .unwrap_err()
                .seq,
            4
        );

        let mut truncated = lines.clone();
        truncated.remove(6);
        assert_eq!(
            verify(truncated.iter().map(String::as_str), &keys)
                .unwrap_err()
                .seq,
            7
        );
        truncated.pop();
        assert!(verify(truncated.iter().map(String::as_str), &keys).is_err());

        let other = Signer::new(&Signer::generate().unwrap()).unwrap();
        let wrong = vec![(signer.id().to_string(), other.public_key().to_vec())];
        assert!(verify(lines.iter().map(String::as_str), &wrong).is_err());
    }
}
