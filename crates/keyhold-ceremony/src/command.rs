//! Ceremony commands and the canonical bytes administrators sign.
//!
//! A command names the crypto instance, the ceremony's sequence number (each
//! executed command advances it, so a signature cannot be replayed), the verb
//! and its arguments. The signed bytes are a length-prefixed encoding with the
//! arguments in name order, so every terminal derives the same bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::encode::{lp, lps};
use crate::{hex, CeremonyError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verb {
    AddAdmin,
    RemoveAdmin,
    SetThresholds,
    ExitImprint,
    LoadPart,
    Commit,
    Activate,
    /// Crypto-shredding: the instance's master key is destroyed on every node.
    Zeroize,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::AddAdmin => "add-admin",
            Verb::RemoveAdmin => "remove-admin",
            Verb::SetThresholds => "set-thresholds",
            Verb::ExitImprint => "exit-imprint",
            Verb::LoadPart => "load-part",
            Verb::Commit => "commit",
            Verb::Activate => "activate",
            Verb::Zeroize => "zeroize",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub crypto_instance: String,
    pub seq: u64,
    pub verb: Verb,
    #[serde(default)]
    pub args: BTreeMap<String, String>,
}

const DOMAIN: &[u8] = b"keyhold-ceremony-command-v1";
const MAX_ARGS: usize = 16;
const MAX_ARG_LEN: usize = 4096;

impl Command {
    pub fn new(crypto_instance: &str, seq: u64, verb: Verb) -> Self {
        Command {
            crypto_instance: crypto_instance.into(),
            seq,
            verb,
            args: BTreeMap::new(),
        }
    }

    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.args.insert(name.into(), value.into());
        self
    }

    /// The bytes a signature covers.
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = lps(&[
            DOMAIN,
            self.crypto_instance.as_bytes(),
            &self.seq.to_be_bytes(),
            self.verb.as_str().as_bytes(),
        ]);
        out.extend_from_slice(&(self.args.len() as u32).to_be_bytes());
        for (k, v) in &self.args {
            lp(&mut out, k.as_bytes());
            lp(&mut out, v.as_bytes());
        }
        out
    }

    /// Names the command among pending ones: a digest of its canonical bytes.
    pub fn id(&self) -> String {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.canonical());
        hex(&d.as_ref()[..12])
    }

    /// Bounds what a client may send.
    pub fn check_size(&self) -> Result<()> {
        if self.args.len() > MAX_ARGS
            || self
                .args
                .iter()
                .any(|(k, v)| k.len() > 64 || v.len() > MAX_ARG_LEN)
            || self.crypto_instance.len() > 128
        {
            return Err(CeremonyError::Malformed("the command is too large".into()));
        }
        Ok(())
    }

    pub fn arg(&self, name: &str) -> Result<&str> {
        self.args.get(name).map(String::as_str).ok_or_else(|| {
            CeremonyError::Malformed(format!(
                "the {} command needs the argument {name:?}",
                self.verb.as_str()
            ))
        })
    }

    pub fn arg_u8(&self, name: &str) -> Result<u8> {
        self.arg(name)?.parse().map_err(|_| {
            CeremonyError::Malformed(format!("the argument {name:?} must be a small number"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_bytes_are_order_independent_and_unambiguous() {
        let a = Command::new("ci", 3, Verb::SetThresholds)
            .with("signature", "2")
            .with("revocation", "2");
        let b = Command::new("ci", 3, Verb::SetThresholds)
            .with("revocation", "2")
            .with("signature", "2");
        assert_eq!(a.canonical(), b.canonical());
        assert_eq!(a.id(), b.id());
        let c = Command::new("ci", 4, Verb::SetThresholds)
            .with("signature", "2")
            .with("revocation", "2");
        assert_ne!(a.canonical(), c.canonical());
        // Moving bytes between fields changes the encoding.
        let d = Command::new("c", 3, Verb::SetThresholds).with("isignature", "2");
        let e = Command::new("ci", 3, Verb::SetThresholds).with("signature", "2");
        assert_ne!(d.canonical(), e.canonical());
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.contains("\"set-thresholds\""));
        assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), a);
    }
}
