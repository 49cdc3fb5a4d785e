//! Administrators' signature keys. A key file holds the name, the algorithm and
//! the public key in clear, and the PKCS#8 private key sealed under the
//! holder's passphrase (a public-only copy, without `sealed`, is what other
//! people are given).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1,
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P521_SHA512_ASN1, ECDSA_P521_SHA512_ASN1_SIGNING,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::encode::{b64, lps, unb64};
use crate::{hex, CeremonyError, KdfParams, PassBox, Result};

const KIND: &str = "keyhold-admin-key";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SigAlg {
    #[serde(rename = "ed25519")]
    Ed25519,
    #[serde(rename = "p256")]
    P256,
    #[serde(rename = "p521")]
    P521,
}

impl SigAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            SigAlg::Ed25519 => "ed25519",
            SigAlg::P256 => "p256",
            SigAlg::P521 => "p521",
        }
    }

    pub fn parse(s: &str) -> Result<SigAlg> {
        match s.to_ascii_lowercase().as_str() {
            "ed25519" => Ok(SigAlg::Ed25519),
            "p256" | "p-256" | "ecdsa-p256" => Ok(SigAlg::P256),
            "p521" | "p-521" | "ecdsa-p521" => Ok(SigAlg::P521),
            _ => Err(CeremonyError::Malformed(format!(
                "unknown signature algorithm {s:?} (ed25519, p256 or p521)"
            ))),
        }
    }

    /// The public key's length (raw Ed25519 key, or an uncompressed EC point).
    fn public_len(self) -> usize {
        match self {
            SigAlg::Ed25519 => 32,
            SigAlg::P256 => 65,
            SigAlg::P521 => 133,
        }
    }
}

/// Administrator names: what status shows and what signatures are recorded under.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
    {
        return Err(CeremonyError::Malformed(
            "an administrator name is 1-64 characters from A-Z a-z 0-9 - _ . @".into(),
        ));
    }
    Ok(())
}

/// Checks that `public` has the shape of a public key for `alg`.
pub fn check_public(alg: SigAlg, public: &[u8]) -> Result<()> {
    let ok = public.len() == alg.public_len() && (alg == SigAlg::Ed25519 || public[0] == 4);
    if !ok {
        return Err(CeremonyError::Malformed(format!(
            "not a {} public key",
            alg.as_str()
        )));
    }
    Ok(())
}

/// A short, stable name for a public key, shown in status and by the CLI.
pub fn fingerprint(alg: SigAlg, public: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        &lps(&[
            b"keyhold-admin-fingerprint-v1",
            alg.as_str().as_bytes(),
            public,
        ]),
    );
    hex(&d.as_ref()[..16])
}

/// Verifies `sig` over `msg` with an administrator's public key.
pub fn verify(alg: SigAlg, public: &[u8], msg: &[u8], sig: &[u8]) -> Result<()> {
    let verifier: &dyn signature::VerificationAlgorithm = match alg {
        SigAlg::Ed25519 => &signature::ED25519,
        SigAlg::P256 => &ECDSA_P256_SHA256_ASN1,
        SigAlg::P521 => &ECDSA_P521_SHA512_ASN1,
    };
    UnparsedPublicKey::new(verifier, public)
        .verify(msg, sig)
        .map_err(|_| CeremonyError::BadSignature("the signature does not verify".into()))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminKeyFile {
    pub kind: String,
    pub version: u32,
    pub name: String,
    pub algorithm: SigAlg,
    pub public_key: String,
    pub fingerprint: String,
    /// The sealed private key; absent in a public-only copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<PassBox>,
}

fn header(name: &str, alg: SigAlg, public: &[u8]) -> Vec<u8> {
    lps(&[
        KIND.as_bytes(),
        name.as_bytes(),
        alg.as_str().as_bytes(),
        public,
    ])
}

impl AdminKeyFile {
    /// Generates a key pair and seals its private half under `passphrase`.
    pub fn generate(name: &str, alg: SigAlg, passphrase: &[u8], kdf: KdfParams) -> Result<Self> {
        check_name(name)?;
        let rng = SystemRandom::new();
        let pkcs8 = Zeroizing::new(
            match alg {
                SigAlg::Ed25519 => {
                    Ed25519KeyPair::generate_pkcs8(&rng).map(|d| d.as_ref().to_vec())
                }
                SigAlg::P256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
                    .map(|d| d.as_ref().to_vec()),
                SigAlg::P521 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P521_SHA512_ASN1_SIGNING, &rng)
                    .map(|d| d.as_ref().to_vec()),
            }
            .map_err(|_| CeremonyError::Crypto("key generation"))?,
        );
        let signer = AdminSigner::from_pkcs8(name, alg, pkcs8)?;
        let public = signer.public_key();
        let sealed = PassBox::seal(passphrase, &header(name, alg, &public), &signer.pkcs8, kdf)?;
        Ok(AdminKeyFile {
            kind: KIND.into(),
            version: 1,
            name: name.into(),
            algorithm: alg,
            public_key: b64(&public),
            fingerprint: fingerprint(alg, &public),
            sealed: Some(sealed),
        })
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let f: AdminKeyFile = serde_json::from_slice(bytes)
            .map_err(|_| CeremonyError::Malformed("not a Keyhold administrator key file".into()))?;
        if f.kind != KIND || f.version != 1 {
            return Err(CeremonyError::Malformed(
                "not a Keyhold administrator key file (version 1)".into(),
            ));
        }
        check_name(&f.name)?;
        check_public(f.algorithm, &f.public()?)?;
        Ok(f)
    }

    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|_| CeremonyError::Crypto("json"))
    }

    pub fn public(&self) -> Result<Vec<u8>> {
        unb64(&self.public_key, "public_key")
    }

    /// The copy to hand to other people: no private key.
    pub fn public_only(&self) -> AdminKeyFile {
        AdminKeyFile {
            sealed: None,
            ..self.clone()
        }
    }

    /// Opens the private key with the holder's passphrase.
    pub fn unlock(&self, passphrase: &[u8]) -> Result<AdminSigner> {
        let sealed = self.sealed.as_ref().ok_or_else(|| {
            CeremonyError::Malformed(
                "this is a public-only administrator file: it cannot sign".into(),
            )
        })?;
        let public = self.public()?;
        let pkcs8 = sealed.open(passphrase, &header(&self.name, self.algorithm, &public))?;
        let signer = AdminSigner::from_pkcs8(&self.name, self.algorithm, pkcs8)?;
        if signer.public_key() != public {
            return Err(CeremonyError::Malformed(
                "the private key does not match the file's public key".into(),
            ));
        }
        Ok(signer)
    }
}

/// An unlocked administrator key (its PKCS#8 bytes are wiped on drop).
pub struct AdminSigner {
    pub name: String,
    pub algorithm: SigAlg,
    pkcs8: Zeroizing<Vec<u8>>,
}

impl AdminSigner {
    fn from_pkcs8(name: &str, alg: SigAlg, pkcs8: Zeroizing<Vec<u8>>) -> Result<Self> {
        let s = AdminSigner {
            name: name.into(),
            algorithm: alg,
            pkcs8,
        };
        // Parse once so a damaged key fails here, not at the first signature.
        s.sign(b"probe")?;
        Ok(s)
    }

    pub fn public_key(&self) -> Vec<u8> {
        match self.algorithm {
            SigAlg::Ed25519 => Ed25519KeyPair::from_pkcs8(&self.pkcs8)
                .map(|k| k.public_key().as_ref().to_vec())
                .unwrap_or_default(),
            SigAlg::P256 => EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &self.pkcs8)
                .map(|k| k.public_key().as_ref().to_vec())
                .unwrap_or_default(),
            SigAlg::P521 => EcdsaKeyPair::from_pkcs8(&ECDSA_P521_SHA512_ASN1_SIGNING, &self.pkcs8)
                .map(|k| k.public_key().as_ref().to_vec())
                .unwrap_or_default(),
        }
    }

    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        let bad = |_| CeremonyError::Malformed("the private key cannot be parsed".into());
        match self.algorithm {
            SigAlg::Ed25519 => Ok(Ed25519KeyPair::from_pkcs8(&self.pkcs8)
                .map_err(bad)?
                .sign(msg)
                .as_ref()
                .to_vec()),
            SigAlg::P256 | SigAlg::P521 => {
                let alg = if self.algorithm == SigAlg::P256 {
                    &ECDSA_P256_SHA256_ASN1_SIGNING
                } else {
                    &ECDSA_P521_SHA512_ASN1_SIGNING
                };
                let key = EcdsaKeyPair::from_pkcs8(alg, &self.pkcs8).map_err(bad)?;
                key.sign(&SystemRandom::new(), msg)
                    .map(|s| s.as_ref().to_vec())
                    .map_err(|_| CeremonyError::Crypto("ecdsa sign"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const FAST: KdfParams = KdfParams {
        m_kib: 19 * 1024,
        t: 1,
        p: 1,
    };

    #[test]
    fn every_algorithm_signs_and_verifies() {
        for alg in [SigAlg::Ed25519, SigAlg::P256, SigAlg::P521] {
            let f = AdminKeyFile::generate("alice", alg, b"pass phrase", FAST).unwrap();
            let f = AdminKeyFile::from_json(f.to_json().unwrap().as_bytes()).unwrap();
            let s = f.unlock(b"pass phrase").unwrap();
            let sig = s.sign(b"msg").unwrap();
            let public = f.public().unwrap();
            verify(alg, &public, b"msg", &sig).unwrap();
            assert!(verify(alg, &public, b"msG", &sig).is_err());
            assert_eq!(f.fingerprint, fingerprint(alg, &public));
        }
    }

    #[test]
    fn wrong_passphrase_tamper_and_public_only() {
        let f = AdminKeyFile::generate("bob", SigAlg::Ed25519, b"right", FAST).unwrap();
        assert_eq!(
            f.unlock(b"wrong").err(),
            Some(CeremonyError::WrongPassphrase)
        );
        // Renaming the holder breaks the AAD.
        let mut renamed = f.clone();
        renamed.name = "mallory".into();
        assert_eq!(
            renamed.unlock(b"right").err(),
            Some(CeremonyError::WrongPassphrase)
        );
        // Swapping in another public key breaks it too.
        let other = AdminKeyFile::generate("bob", SigAlg::Ed25519, b"right", FAST).unwrap();
        let mut swapped = f.clone();
        swapped.public_key = other.public_key.clone();
        assert!(swapped.unlock(b"right").is_err());
        assert!(matches!(
            f.public_only().unlock(b"right").err(),
            Some(CeremonyError::Malformed(_))
        ));
        assert!(AdminKeyFile::from_json(b"{\"kind\":\"x\"}").is_err());
        assert!(AdminKeyFile::generate("no spaces", SigAlg::Ed25519, b"x", FAST).is_err());
    }
}
