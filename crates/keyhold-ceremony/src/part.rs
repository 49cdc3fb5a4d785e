//! Master-key parts: 32 random bytes each, held by one administrator in a file
//! sealed under their passphrase. The master key is the XOR of its parts, so
//! any part short of all of them says nothing about it.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::admin::check_name;
use crate::encode::lps;
use crate::{hex, CeremonyError, KdfParams, PassBox, Result, Secret32};

const KIND: &str = "keyhold-key-part";
const PART_LABEL: &[u8] = b"keyhold-key-part-vp-v1";
const MASTER_LABEL: &[u8] = b"keyhold-master-key-vp-v1";

fn pattern(label: &[u8], key: &[u8; 32]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &lps(&[label, key]));
    hex(&d.as_ref()[..16])
}

/// The verification pattern of a key part: shows which part is which without
/// revealing it (a domain-separated hash, never the part itself).
pub fn part_pattern(part: &[u8; 32]) -> String {
    pattern(PART_LABEL, part)
}

/// The verification pattern of a master key, compared across nodes and restarts.
pub fn master_pattern(key: &[u8; 32]) -> String {
    pattern(MASTER_LABEL, key)
}

/// XOR of the parts.
pub fn combine<'a>(parts: impl IntoIterator<Item = &'a [u8; 32]>) -> Secret32 {
    let mut out = Zeroizing::new([0u8; 32]);
    for p in parts {
        for (o, b) in out.iter_mut().zip(p.iter()) {
            *o ^= b;
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPartFile {
    pub kind: String,
    pub version: u32,
    /// The administrator who holds (and loads) this part.
    pub holder: String,
    pub verification_pattern: String,
    pub sealed: PassBox,
}

fn header(holder: &str, vp: &str) -> Vec<u8> {
    lps(&[KIND.as_bytes(), holder.as_bytes(), vp.as_bytes()])
}

impl KeyPartFile {
    /// Generates a random part for `holder` and seals it under `passphrase`.
    pub fn generate(holder: &str, passphrase: &[u8], kdf: KdfParams) -> Result<Self> {
        check_name(holder)?;
        let mut part = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(&mut part[..]).map_err(|_| CeremonyError::Crypto("random"))?;
        let vp = part_pattern(&part);
        let sealed = PassBox::seal(passphrase, &header(holder, &vp), &part[..], kdf)?;
        Ok(KeyPartFile {
            kind: KIND.into(),
            version: 1,
            holder: holder.into(),
            verification_pattern: vp,
            sealed,
        })
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let f: KeyPartFile = serde_json::from_slice(bytes)
            .map_err(|_| CeremonyError::Malformed("not a Keyhold key-part file".into()))?;
        if f.kind != KIND || f.version != 1 {
            return Err(CeremonyError::Malformed(
                "not a Keyhold key-part file (version 1)".into(),
            ));
        }
        Ok(f)
    }

    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|_| CeremonyError::Crypto("json"))
    }

    /// Opens the part with the holder's passphrase.
    pub fn open(&self, passphrase: &[u8]) -> Result<Secret32> {
        let bytes = self.sealed.open(
            passphrase,
            &header(&self.holder, &self.verification_pattern),
        )?;
        let mut part = Zeroizing::new([0u8; 32]);
        if bytes.len() != 32 {
            return Err(CeremonyError::Malformed("a key part is 32 bytes".into()));
        }
        part.copy_from_slice(&bytes);
        if part_pattern(&part) != self.verification_pattern {
            return Err(CeremonyError::Malformed(
                "the key part does not match its verification pattern".into(),
            ));
        }
        Ok(part)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        m_kib: 19 * 1024,
        t: 1,
        p: 1,
    };

    #[test]
    fn generate_open_and_refuse() {
        let f = KeyPartFile::generate("alice", b"pw-alice", FAST).unwrap();
        let f = KeyPartFile::from_json(f.to_json().unwrap().as_bytes()).unwrap();
        let p = f.open(b"pw-alice").unwrap();
        assert_eq!(part_pattern(&p), f.verification_pattern);
        assert_eq!(
            f.open(b"pw-bob").err(),
            Some(CeremonyError::WrongPassphrase)
        );
        let mut other_holder = f.clone();
        other_holder.holder = "bob".into();
        assert_eq!(
            other_holder.open(b"pw-alice").err(),
            Some(CeremonyError::WrongPassphrase)
        );
        let mut flipped = f.clone();
        flipped.sealed.ciphertext.replace_range(0..1, "A");
        if flipped != f {
            assert!(flipped.open(b"pw-alice").is_err());
        }
    }

    #[test]
    fn combine_is_xor_and_patterns_differ() {
        let a = Zeroizing::new([0x0fu8; 32]);
        let b = Zeroizing::new([0xf1u8; 32]);
        let k = combine([&*a, &*b]);
        assert_eq!(k[0], 0xfe);
        assert_ne!(master_pattern(&k), part_pattern(&k));
        assert_eq!(master_pattern(&k).len(), 32);
    }
}
