//! Secure import: the instance's import token (an RSA-4096 key pair held by the
//! crypto unit, a nonce, an expiry and a retrieval count) and the opening of key
//! material encrypted under it.

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::constant_time::verify_slices_are_equal;
use keyhold_core::model::ImportToken;
use keyhold_core::{Error, Reason, Result};
use keyhold_crypto::{Binding, Purpose};
use zeroize::Zeroizing;

use super::{crypto_err, store_err, ImportMaterial, Service};

pub const DEFAULT_TOKEN_EXPIRATION: i64 = 600;
pub const DEFAULT_MAX_RETRIEVALS: i64 = 1;

fn token_binding(token: &ImportToken) -> Binding<'_> {
    Binding {
        purpose: Purpose::ImportTokenKey,
        instance_id: &token.instance_id,
        object_id: &token.token_id,
        version_id: "1",
    }
}

fn expired() -> Error {
    Error::new(
        Reason::ImportTokenExpired,
        "The import token has expired or has no retrievals left; create a new one",
    )
}

impl Service {
    pub fn create_import_token(
        &self,
        instance_id: &str,
        expiration: Option<i64>,
        max_retrievals: Option<i64>,
    ) -> Result<ImportToken> {
        let expiration = expiration.unwrap_or(DEFAULT_TOKEN_EXPIRATION);
        if !(300..=86400).contains(&expiration) {
            return Err(Error::invalid_field(
                "expiration",
                "an integer between 300 and 86400 (inclusive)",
            ));
        }
        let max = max_retrievals.unwrap_or(DEFAULT_MAX_RETRIEVALS);
        if !(1..=500).contains(&max) {
            return Err(Error::invalid_field(
                "maxAllowedRetrievals",
                "an integer between 1 and 500 (inclusive)",
            ));
        }
        let now = self.now();
        let mut nonce = vec![0u8; 12];
        self.unit.random(&mut nonce).map_err(crypto_err)?;
        let mut token = ImportToken {
            instance_id: instance_id.to_string(),
            created_at: now,
            expires_at: now + expiration,
            max_retrievals: max as u32,
            remaining_retrievals: max as u32,
            public_key_pem: String::new(),
            nonce,
            wrapped_private_key: Vec::new(),
            token_id: Self::new_id(),
        };
        let (pem, wrapped) = self
            .unit
            .generate_import_key(&token_binding(&token))
            .map_err(crypto_err)?;
        token.public_key_pem = pem;
        token.wrapped_private_key = wrapped;
        self.store.put_import_token(&token).map_err(store_err)?;
        Ok(token)
    }

    /// Hands out the token's public key and nonce, counting the retrieval.
    pub fn retrieve_import_token(&self, instance_id: &str) -> Result<ImportToken> {
        let token = self
            .store
            .get_import_token(instance_id)
            .map_err(store_err)?
            .ok_or_else(|| {
                Error::new(
                    Reason::ImportTokenNotFound,
                    "No import token exists for this instance",
                )
            })?;
        if token.expires_at <= self.now() {
            return Err(expired());
        }
        match self
            .store
            .retrieve_import_token(instance_id)
            .map_err(store_err)?
        {
            Some((token, true)) => Ok(token),
            _ => Err(expired()),
        }
    }

    /// Decrypts securely imported key material and checks the nonce proof.
    pub(crate) fn open_secure_import(
        &self,
        instance_id: &str,
        m: &ImportMaterial,
    ) -> Result<Zeroizing<Vec<u8>>> {
        match m.algorithm.as_deref() {
            None | Some("RSAES_OAEP_SHA_256") => {}
            Some(_) => {
                return Err(Error::invalid_field(
                    "encryptionAlgorithm",
                    "RSAES_OAEP_SHA_256",
                ))
            }
        }
        let (Some(encrypted_nonce), Some(iv)) = (&m.encrypted_nonce, &m.iv) else {
            return Err(Error::new(
                Reason::IncorrectNonceIv,
                "Both encryptedNonce and iv are required for a secure import",
            ));
        };
        let iv: [u8; 12] = iv.as_slice().try_into().map_err(|_| {
            Error::field(
                Reason::IncorrectNonceIv,
                "iv",
                "The iv must be 12 bytes, base64 encoded",
            )
        })?;
        let token = self
            .store
            .get_import_token(instance_id)
            .map_err(store_err)?
            .ok_or_else(|| {
                Error::new(
                    Reason::ImportTokenExpired,
                    "No import token exists for this instance; create one first",
                )
            })?;
        if token.expires_at <= self.now() {
            return Err(expired());
        }
        let material = self
            .unit
            .import_decrypt(
                &token_binding(&token),
                &token.wrapped_private_key,
                &m.payload,
            )
            .map_err(crypto_err)?;
        let alg = match material.len() {
            16 => &aead::AES_128_GCM,
            24 => &aead::AES_192_GCM,
            32 => &aead::AES_256_GCM,
            _ => {
                return Err(Error::invalid_field(
                    "payload",
                    "key material of 16, 24 or 32 bytes, encrypted with the import token",
                ))
            }
        };
        let wrong_nonce = || {
            Error::field(
                Reason::IncorrectNonce,
                "encryptedNonce",
                "The encrypted nonce given does not match existing record",
            )
        };
        let key = LessSafeKey::new(UnboundKey::new(alg, &material).map_err(|_| Error::internal())?);
        let mut buf = encrypted_nonce.clone();
        let opened = key
            .open_in_place(Nonce::assume_unique_for_key(iv), Aad::empty(), &mut buf)
            .map_err(|_| wrong_nonce())?;
        verify_slices_are_equal(opened, &token.nonce).map_err(|_| wrong_nonce())?;
        Ok(material)
    }
}
