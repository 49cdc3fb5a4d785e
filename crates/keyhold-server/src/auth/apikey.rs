//! API keys: 32 random bytes shown once, stored as a SHA-256 hash. A hash is
//! enough (no slow KDF) because the secret has full entropy.

use aws_lc_rs::digest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use keyhold_core::{Error, Result};
use zeroize::Zeroizing;

pub fn generate() -> Result<Zeroizing<String>> {
    let mut raw = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(&mut raw[..]).map_err(|_| Error::internal())?;
    Ok(Zeroizing::new(format!(
        "kh_{}",
        URL_SAFE_NO_PAD.encode(&raw[..])
    )))
}

pub fn hash(apikey: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, apikey.as_bytes())
        .as_ref()
        .to_vec()
}

/// A short fingerprint of a stored hash, put in refresh tokens so that a
/// rotated or deleted API key stops refreshing (compared with the stored one).
pub fn fingerprint(hash: &[u8]) -> String {
    let d = digest::digest(&digest::SHA256, hash);
    URL_SAFE_NO_PAD.encode(&d.as_ref()[..12])
}
