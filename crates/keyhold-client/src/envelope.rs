//! Envelope encryption of data with a root key held by the KMS: every file gets a fresh
//! data key (DEK), generated here, wrapped by the root key, and stored wrapped in the
//! file's header ([`crate::stream`]). Decryption asks the KMS to unwrap it, so whoever
//! may not unwrap with the root key (a disabled or deleted key, a missing role) cannot
//! decrypt. Files made before a rotation still decrypt: unwrap accepts ciphertexts of
//! older key versions.

use std::io::{Read, Write};

use tokio::io::{AsyncRead, AsyncWrite};

use crate::dek_cache::{CacheLimits, DekCache, Sealing};
use crate::error::ClientError;
use crate::stream::{self, Dek, Header, StreamError, DEFAULT_SEGMENT};
use crate::Client;

/// The AAD given to the KMS with every DEK wrapped for a file, so a DEK wrapped for
/// something else cannot be passed off as a file's (and vice versa).
pub const WRAP_AAD: &str = "keyhold-file-v1";

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error(transparent)]
    Kms(#[from] ClientError),
    #[error(transparent)]
    Format(#[from] StreamError),
}

/// Encrypts and decrypts data under root keys of one client.
pub struct Envelope {
    client: Client,
    cache: Option<DekCache>,
    segment_size: u32,
}

impl Envelope {
    pub fn new(client: Client) -> Envelope {
        Envelope {
            client,
            cache: None,
            segment_size: DEFAULT_SEGMENT,
        }
    }

    /// Reuse DEKs within these limits (see [`crate::dek_cache`]).
    pub fn with_cache(mut self, limits: CacheLimits) -> Envelope {
        self.cache = Some(DekCache::new(limits));
        self
    }

    pub fn with_segment_size(mut self, size: u32) -> Envelope {
        self.segment_size = size;
        self
    }

    /// A DEK for `key` (id or alias) and the header of a new file under it.
    pub async fn begin_encrypt(&self, key: &str) -> Result<(Dek, Header), EnvelopeError> {
        let sealing = match self.cache.as_ref().and_then(|c| c.sealing(key)) {
            Some(s) => s,
            None => {
                let dek = Dek::generate()?;
                let aad = [WRAP_AAD.to_string()];
                let wrapped = self.client.wrap(key, Some(dek.as_bytes()), &aad).await?;
                // The header names the key by id: an alias may later point elsewhere.
                let key_id = if is_uuid(key) {
                    key.to_string()
                } else {
                    self.client.get_key_metadata(key).await?.id
                };
                let s = Sealing {
                    dek,
                    key_id,
                    key_version: wrapped.key_version.map(|v| v.id).unwrap_or_default(),
                    wrapped: wrapped.ciphertext,
                };
                if let Some(c) = &self.cache {
                    c.put_sealing(key, s.clone());
                }
                s
            }
        };
        let header = Header::new(
            &sealing.key_id,
            &sealing.key_version,
            &sealing.wrapped,
            self.segment_size,
        )?;
        Ok((sealing.dek, header))
    }

    /// Counts bytes encrypted under `key`'s cached DEK (for the cache's byte bound).
    pub fn note_encrypted(&self, key: &str, bytes: u64) {
        if let Some(c) = &self.cache {
            c.add_bytes(key, bytes);
        }
    }

    /// The DEK of a file whose header has been read (asks the KMS to unwrap it).
    pub async fn open_dek(&self, header: &Header) -> Result<Dek, EnvelopeError> {
        if let Some(d) = self
            .cache
            .as_ref()
            .and_then(|c| c.opened(&header.wrapped_dek))
        {
            return Ok(d);
        }
        let aad = [WRAP_AAD.to_string()];
        let plain = self
            .client
            .unwrap_bytes(&header.key_id, &header.wrapped_dek, &aad)
            .await?;
        let dek = Dek::from_slice(&plain)?;
        if let Some(c) = &self.cache {
            c.put_opened(&header.wrapped_dek, dek.clone());
        }
        Ok(dek)
    }

    /// Encrypts `r` into `w` under `key`; sync I/O runs on the calling thread (call it
    /// from `spawn_blocking` inside a runtime, or from plain threads with a runtime handle).
    pub async fn encrypt_to<R: Read, W: Write>(
        &self,
        key: &str,
        r: &mut R,
        w: &mut W,
    ) -> Result<u64, EnvelopeError> {
        let (dek, header) = self.begin_encrypt(key).await?;
        let n = stream::encrypt(&dek, &header, r, w, &mut |_| {})?;
        self.note_encrypted(key, n);
        Ok(n)
    }

    /// Decrypts a whole file from `r` into `w`.
    pub async fn decrypt_to<R: Read, W: Write>(
        &self,
        r: &mut R,
        w: &mut W,
    ) -> Result<u64, EnvelopeError> {
        let header = Header::read_from(r)?;
        let dek = self.open_dek(&header).await?;
        Ok(stream::decrypt(&dek, &header, r, w, &mut |_| {})?)
    }

    /// Encrypts an async stream into another.
    pub async fn encrypt_async<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        &self,
        key: &str,
        r: &mut R,
        w: &mut W,
    ) -> Result<u64, EnvelopeError> {
        let (dek, header) = self.begin_encrypt(key).await?;
        let n = stream::encrypt_async(&dek, &header, r, w).await?;
        self.note_encrypted(key, n);
        Ok(n)
    }

    /// Decrypts an async stream into another.
    pub async fn decrypt_async<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        &self,
        r: &mut R,
        w: &mut W,
    ) -> Result<u64, EnvelopeError> {
        let header = Header::read_from_async(r).await?;
        let dek = self.open_dek(&header).await?;
        Ok(stream::decrypt_async(&dek, &header, r, w).await?)
    }
}

fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok() && s.len() == 36
}
