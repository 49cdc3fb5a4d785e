//! Import-token key pairs (RSA-4096, OAEP with SHA-256 and MGF1-SHA-256), shared by
//! both units. The private key is computed in software (aws-lc-rs) and stored
//! wrapped by the unit: SoftHSM's CKM_RSA_PKCS_OAEP accepts only SHA-1, and the
//! Key Protect clients encrypt with OAEP-SHA256 (see the Pkcs11Unit module doc).

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{
    KeySize, OaepPrivateDecryptingKey, PrivateDecryptingKey, OAEP_SHA256_MGF1SHA256,
};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use zeroize::Zeroizing;

use crate::{CryptoError, Result};

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A new key pair: the public key as a PEM `PUBLIC KEY` block and the private key
/// as PKCS#8 DER (to be wrapped by the unit at once).
pub(crate) fn generate() -> Result<(String, Zeroizing<Vec<u8>>)> {
    let private = PrivateDecryptingKey::generate(KeySize::Rsa4096)
        .map_err(|_| CryptoError::Unit("rsa keygen"))?;
    let public: PublicKeyX509Der<'static> = private
        .public_key()
        .as_der()
        .map_err(|_| CryptoError::Unit("rsa public der"))?;
    let pkcs8: Pkcs8V1Der<'static> = private
        .as_der()
        .map_err(|_| CryptoError::Unit("rsa private der"))?;
    let der = Zeroizing::new(pkcs8.as_ref().to_vec());
    Ok((pem("PUBLIC KEY", public.as_ref()), der))
}

/// RSA-OAEP-SHA256 decryption with a PKCS#8 private key.
pub(crate) fn decrypt(pkcs8: &[u8], ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let key = PrivateDecryptingKey::from_pkcs8(pkcs8).map_err(|_| CryptoError::BlobIntegrity)?;
    let key = OaepPrivateDecryptingKey::new(key).map_err(|_| CryptoError::Unit("oaep key"))?;
    let mut out = Zeroizing::new(vec![0u8; key.min_output_size()]);
    let n = key
        .decrypt(&OAEP_SHA256_MGF1SHA256, ciphertext, &mut out, None)
        .map_err(|_| {
            CryptoError::InvalidInput(
                "payload is not RSA-OAEP-SHA256 ciphertext for this import token",
            )
        })?
        .len();
    out.truncate(n);
    Ok(out)
}
