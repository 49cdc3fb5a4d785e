//! Passphrase-protected payloads: argon2id stretches the passphrase into an
//! AES-256-GCM key. The caller's clear header and the KDF parameters are the
//! AAD, so editing any of them makes the file fail to open.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::encode::{b64, lp, unb64};
use crate::{CeremonyError, Result};

/// argon2id cost. The defaults follow RFC 9106's second recommendation
/// (64 MiB, 3 passes); files below the floor are refused, and files above the
/// ceiling too (a crafted file must not exhaust memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams {
            m_kib: 64 * 1024,
            t: 3,
            p: 1,
        }
    }
}

const MIN_M_KIB: u32 = 19 * 1024;
const MAX_M_KIB: u32 = 1024 * 1024;

impl KdfParams {
    fn check(&self) -> Result<()> {
        if !(MIN_M_KIB..=MAX_M_KIB).contains(&self.m_kib)
            || !(1..=16).contains(&self.t)
            || !(1..=8).contains(&self.p)
        {
            return Err(CeremonyError::Malformed(
                "the file's argon2id parameters are outside the accepted range".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassBox {
    /// Always "argon2id+aes-256-gcm".
    pub scheme: String,
    pub kdf: KdfParams,
    pub salt: String,
    pub nonce: String,
    pub ciphertext: String,
}

const SCHEME: &str = "argon2id+aes-256-gcm";

fn stretch(passphrase: &[u8], salt: &[u8], p: KdfParams) -> Result<LessSafeKey> {
    let params = argon2::Params::new(p.m_kib, p.t, p.p, Some(32))
        .map_err(|_| CeremonyError::Malformed("invalid argon2id parameters".into()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase, salt, &mut key[..])
        .map_err(|_| CeremonyError::Crypto("argon2id"))?;
    let unbound =
        UnboundKey::new(&AES_256_GCM, &key[..]).map_err(|_| CeremonyError::Crypto("aes key"))?;
    Ok(LessSafeKey::new(unbound))
}

fn aad(header: &[u8], p: KdfParams, salt: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len() + 64);
    lp(&mut out, SCHEME.as_bytes());
    lp(&mut out, header);
    lp(&mut out, &p.m_kib.to_be_bytes());
    lp(&mut out, &p.t.to_be_bytes());
    lp(&mut out, &p.p.to_be_bytes());
    lp(&mut out, salt);
    out
}

impl PassBox {
    /// Encrypts `secret` under `passphrase`, binding `header`.
    pub fn seal(passphrase: &[u8], header: &[u8], secret: &[u8], p: KdfParams) -> Result<PassBox> {
        p.check()?;
        let mut salt = [0u8; 16];
        let mut nonce = [0u8; 12];
        aws_lc_rs::rand::fill(&mut salt).map_err(|_| CeremonyError::Crypto("random"))?;
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| CeremonyError::Crypto("random"))?;
        let key = stretch(passphrase, &salt, p)?;
        let mut buf = secret.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(header, p, &salt)),
            &mut buf,
        )
        .map_err(|_| CeremonyError::Crypto("seal"))?;
        Ok(PassBox {
            scheme: SCHEME.into(),
            kdf: p,
            salt: b64(&salt),
            nonce: b64(&nonce),
            ciphertext: b64(&buf),
        })
    }

    /// Decrypts with `passphrase`; the header must be the one sealed.
    pub fn open(&self, passphrase: &[u8], header: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if self.scheme != SCHEME {
            return Err(CeremonyError::Malformed(format!(
                "unknown protection scheme {:?}",
                self.scheme
            )));
        }
        self.kdf.check()?;
        let salt = unb64(&self.salt, "salt")?;
        let nonce: [u8; 12] = unb64(&self.nonce, "nonce")?
            .try_into()
            .map_err(|_| CeremonyError::Malformed("the nonce is not 12 bytes".into()))?;
        let key = stretch(passphrase, &salt, self.kdf)?;
        let mut buf = Zeroizing::new(unb64(&self.ciphertext, "ciphertext")?);
        let n = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(header, self.kdf, &salt)),
                &mut buf,
            )
            .map_err(|_| CeremonyError::WrongPassphrase)?
            .len();
        buf.truncate(n);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        m_kib: MIN_M_KIB,
        t: 1,
        p: 1,
    };

    #[test]
    fn round_trip_wrong_passphrase_and_tamper() {
        let b = PassBox::seal(b"correct horse", b"hdr", b"secret", FAST).unwrap();
        assert_eq!(&b.open(b"correct horse", b"hdr").unwrap()[..], b"secret");
        assert_eq!(
            b.open(b"wrong horse", b"hdr").unwrap_err(),
            CeremonyError::WrongPassphrase
        );
        assert_eq!(
            b.open(b"correct horse", b"other").unwrap_err(),
            CeremonyError::WrongPassphrase
        );
        let mut t = b.clone();
        t.kdf.t = 2;
        assert_eq!(
            t.open(b"correct horse", b"hdr").unwrap_err(),
            CeremonyError::WrongPassphrase
        );
        let mut weak = b.clone();
        weak.kdf.m_kib = 8;
        assert!(matches!(
            weak.open(b"correct horse", b"hdr").unwrap_err(),
            CeremonyError::Malformed(_)
        ));
    }
}
