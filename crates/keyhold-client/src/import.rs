//! Secure import, done client-side as Key Protect does it (keyprotect-api.md §6.2, §6.9):
//! the key material is encrypted with the import token's RSA public key
//! (RSA-OAEP, SHA-256), and the token's nonce is encrypted with AES-GCM under the key
//! material itself, which proves to the service that whoever sent the material also
//! holds the nonce of this token.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_192_GCM, AES_256_GCM};
use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, OAEP_SHA256_MGF1SHA256};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use zeroize::Zeroizing;

use crate::client::Client;
use crate::error::{ClientError, Result};
use crate::model::{ImportToken, Key, NewKey};

/// The three fields a secure import sends.
pub struct SecureFields {
    /// base64 RSA-OAEP ciphertext of the key material.
    pub payload: Zeroizing<String>,
    /// base64 AES-GCM ciphertext ‖ tag of the token's nonce.
    pub encrypted_nonce: String,
    /// base64 12-byte GCM IV.
    pub iv: String,
}

/// Encrypts `material` (16, 24 or 32 bytes) for a retrieved import token.
pub fn seal_for_token(token: &ImportToken, material: &[u8]) -> Result<SecureFields> {
    let bad = |m: &str| ClientError::Invalid(format!("import token: {m}"));
    let pem = token
        .payload
        .as_deref()
        .ok_or_else(|| bad("no public key (retrieve the token with a get)"))?;
    let pem = STANDARD
        .decode(pem)
        .map_err(|_| bad("public key is not base64"))?;
    let der = pem_to_der(&pem).ok_or_else(|| bad("public key is not a PEM block"))?;
    let nonce = STANDARD
        .decode(token.nonce.as_deref().ok_or_else(|| bad("no nonce"))?)
        .map_err(|_| bad("nonce is not base64"))?;

    let public = PublicEncryptingKey::from_der(&der).map_err(|_| bad("public key is not RSA"))?;
    let oaep = OaepPublicEncryptingKey::new(public).map_err(|_| bad("RSA key unusable"))?;
    let mut ct = vec![0u8; oaep.ciphertext_size()];
    let ct = oaep
        .encrypt(&OAEP_SHA256_MGF1SHA256, material, &mut ct, None)
        .map_err(|_| ClientError::Invalid("key material too long for the import token".into()))?;

    let alg = match material.len() {
        16 => &AES_128_GCM,
        24 => &AES_192_GCM,
        32 => &AES_256_GCM,
        n => {
            return Err(ClientError::Invalid(format!(
                "a root key must be 16, 24 or 32 bytes, not {n}"
            )))
        }
    };
    let key = LessSafeKey::new(UnboundKey::new(alg, material).map_err(|_| bad("aes key"))?);
    let mut iv = [0u8; 12];
    aws_lc_rs::rand::fill(&mut iv).map_err(|_| bad("no randomness"))?;
    let mut sealed = nonce;
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(iv), Aad::empty(), &mut sealed)
        .map_err(|_| bad("aes-gcm"))?;
    Ok(SecureFields {
        payload: Zeroizing::new(STANDARD.encode(ct)),
        encrypted_nonce: STANDARD.encode(sealed),
        iv: STANDARD.encode(iv),
    })
}

fn pem_to_der(pem: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(pem).ok()?;
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    STANDARD.decode(body).ok()
}

impl Client {
    /// Imports a root key securely: retrieves the import token, encrypts the material for
    /// it and creates the key. The token must exist (`create_import_token`).
    pub async fn import_key_secure(&self, key: &NewKey, material: &[u8]) -> Result<Key> {
        let token = self.get_import_token().await?;
        let fields = seal_for_token(&token, material)?;
        let mut k = key.clone();
        k.extractable = false;
        k.payload = Some(fields.payload);
        k.encrypted_nonce = Some(fields.encrypted_nonce);
        k.iv = Some(fields.iv);
        self.create_key(&k).await
    }
}
