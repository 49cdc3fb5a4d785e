//! How a key part travels from an administrator's terminal to the server: the
//! server publishes an X25519 public key per register session; the CLI makes an
//! ephemeral key pair, derives an AES-256-GCM key with HKDF-SHA256 over the
//! shared secret, both public keys and the context (crypto instance, transport
//! key, administrator, register), and encrypts the part. The ciphertext only
//! opens in the server process that holds the private key, for that context.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, X25519};
use aws_lc_rs::hkdf;
use zeroize::Zeroizing;

use crate::encode::lps;
use crate::{hex, CeremonyError, Result, Secret32};

const SALT: &[u8] = b"keyhold-ceremony-transport-v1";

/// What binds a sealed part to one use.
pub fn context(
    crypto_instance: &str,
    transport_key_id: &str,
    admin: &str,
    register: &str,
) -> Vec<u8> {
    lps(&[
        crypto_instance.as_bytes(),
        transport_key_id.as_bytes(),
        admin.as_bytes(),
        register.as_bytes(),
    ])
}

fn aead_key(shared: &[u8], info: &[u8]) -> Result<LessSafeKey> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(shared);
    let mut key = Zeroizing::new([0u8; 32]);
    prk.expand(&[info], hkdf::HKDF_SHA256)
        .and_then(|okm| okm.fill(&mut key[..]))
        .map_err(|_| CeremonyError::Crypto("hkdf"))?;
    let unbound =
        UnboundKey::new(&AES_256_GCM, &key[..]).map_err(|_| CeremonyError::Crypto("aes key"))?;
    Ok(LessSafeKey::new(unbound))
}

/// The server's key for one register session (memory only).
pub struct TransportKey {
    private: PrivateKey,
    public: Vec<u8>,
    id: String,
}

impl TransportKey {
    pub fn generate() -> Result<Self> {
        let private = PrivateKey::generate(&X25519).map_err(|_| CeremonyError::Crypto("x25519"))?;
        let public = private
            .compute_public_key()
            .map_err(|_| CeremonyError::Crypto("x25519"))?
            .as_ref()
            .to_vec();
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &public);
        Ok(TransportKey {
            private,
            id: hex(&d.as_ref()[..8]),
            public,
        })
    }

    pub fn public(&self) -> &[u8] {
        &self.public
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Opens a part sealed to this key for `context`.
    pub fn open(
        &self,
        ephemeral_public: &[u8],
        ciphertext: &[u8],
        context: &[u8],
    ) -> Result<Secret32> {
        let peer = UnparsedPublicKey::new(&X25519, ephemeral_public);
        let info = lps(&[context, ephemeral_public, &self.public]);
        let key = agreement::agree(
            &self.private,
            peer,
            CeremonyError::Malformed("the part's ephemeral public key is invalid".into()),
            |shared| aead_key(shared, &info),
        )?;
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let n = key
            .open_in_place(Nonce::assume_unique_for_key([0u8; 12]), Aad::from(context), &mut buf)
            .map_err(|_| {
                CeremonyError::Malformed(
                    "the key part does not open: it was sealed for another transport key or context".into(),
                )
            })?
            .len();
        if n != 32 {
            return Err(CeremonyError::Malformed("a key part is 32 bytes".into()));
        }
        let mut part = Zeroizing::new([0u8; 32]);
        part.copy_from_slice(&buf[..32]);
        Ok(part)
    }
}

/// Seals `part` to the server's transport public key; returns (ephemeral public, ciphertext).
pub fn seal(server_public: &[u8], context: &[u8], part: &[u8; 32]) -> Result<(Vec<u8>, Vec<u8>)> {
    let eph = PrivateKey::generate(&X25519).map_err(|_| CeremonyError::Crypto("x25519"))?;
    let eph_public = eph
        .compute_public_key()
        .map_err(|_| CeremonyError::Crypto("x25519"))?
        .as_ref()
        .to_vec();
    let peer = UnparsedPublicKey::new(&X25519, server_public);
    let info = lps(&[context, &eph_public, server_public]);
    let key = agreement::agree(
        &eph,
        peer,
        CeremonyError::Malformed("the server's transport key is invalid".into()),
        |shared| aead_key(shared, &info),
    )?;
    // A fresh ephemeral key per part makes each AEAD key single-use: a zero nonce is safe.
    let mut buf = part.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key([0u8; 12]),
        Aad::from(context),
        &mut buf,
    )
    .map_err(|_| CeremonyError::Crypto("seal"))?;
    Ok((eph_public, buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_context_or_key() {
        let server = TransportKey::generate().unwrap();
        let part = [5u8; 32];
        let ctx = context("ci", server.id(), "alice", "new");
        let (eph, ct) = seal(server.public(), &ctx, &part).unwrap();
        assert_eq!(*server.open(&eph, &ct, &ctx).unwrap(), part);
        let other_ctx = context("ci", server.id(), "bob", "new");
        assert!(server.open(&eph, &ct, &other_ctx).is_err());
        let other = TransportKey::generate().unwrap();
        assert!(other.open(&eph, &ct, &ctx).is_err());
        assert!(server.open(&[1u8; 5], &ct, &ctx).is_err());
    }
}
