//! The wrapped-DEK envelope (DESIGN §2):
//! `magic "KH" | format 1 | version id (16 bytes) | nonce (12) | AES-256-GCM(ct ‖ tag)`,
//! base64 on the wire. GCM's AAD binds instance, key, version and the caller's `aad`
//! list, each length-prefixed so no two different inputs give the same AAD.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use uuid::Uuid;

use crate::error::{Error, Reason, Result};

const MAGIC: &[u8; 2] = b"KH";
const FORMAT: u8 = 1;
pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 2 + 1 + 16 + NONCE_LEN;

/// A parsed envelope; `sealed` is the GCM ciphertext with its tag appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub version_id: Uuid,
    pub nonce: [u8; NONCE_LEN],
    pub sealed: Vec<u8>,
}

impl Envelope {
    pub fn encode(&self) -> String {
        let mut out = Vec::with_capacity(HEADER_LEN + self.sealed.len());
        out.extend_from_slice(MAGIC);
        out.push(FORMAT);
        out.extend_from_slice(self.version_id.as_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.sealed);
        STANDARD.encode(out)
    }

    /// Parses a caller's ciphertext; any defect is the caller's (a 4xx).
    pub fn decode(text: &str) -> Result<Envelope> {
        let bad = || {
            Error::field(
                Reason::InvalidField,
                "ciphertext",
                "The field `ciphertext` must be: the original base64 encoded ciphertext from the wrap operation",
            )
        };
        let raw = STANDARD.decode(text.trim()).map_err(|_| bad())?;
        if raw.len() < HEADER_LEN + TAG_LEN || &raw[..2] != MAGIC || raw[2] != FORMAT {
            return Err(bad());
        }
        let version_id = Uuid::from_slice(&raw[3..19]).map_err(|_| bad())?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&raw[19..HEADER_LEN]);
        Ok(Envelope {
            version_id,
            nonce,
            sealed: raw[HEADER_LEN..].to_vec(),
        })
    }
}

/// The GCM additional data for one wrap: binds the DEK to where it was wrapped.
pub fn dek_aad(
    instance_id: &str,
    key_id: &str,
    version_id: &str,
    caller_aad: &[String],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + caller_aad.iter().map(|a| a.len() + 4).sum::<usize>());
    let mut put = |bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    put(b"keyhold-dek-v1");
    put(instance_id.as_bytes());
    put(key_id.as_bytes());
    put(version_id.as_bytes());
    put(&(caller_aad.len() as u32).to_be_bytes());
    for a in caller_aad {
        put(a.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let e = Envelope {
            version_id: Uuid::new_v4(),
            nonce: [7; 12],
            sealed: vec![1; 48],
        };
        assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
    }

    #[test]
    fn aad_is_unambiguous() {
        let a = dek_aad("i", "k", "v", &["ab".into(), "c".into()]);
        let b = dek_aad("i", "k", "v", &["a".into(), "bc".into()]);
        let c = dek_aad("i", "k", "v", &["abc".into()]);
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Envelope::decode(&STANDARD.encode(&bytes));
        }

        #[test]
        fn decode_arbitrary_text_never_panics(s in ".{0,120}") {
            let _ = Envelope::decode(&s);
        }
    }
}
