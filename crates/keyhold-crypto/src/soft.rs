//! The software crypto unit: the master key lives in this process's memory.
//! For development and for deployments whose master key is loaded by a ceremony;
//! production keys that must never leave hardware belong in an HSM unit.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::hkdf;
use lru::LruCache;
use zeroize::Zeroizing;

use crate::blob::BlobSealer;
use crate::import;
use crate::{Binding, CryptoError, CryptoUnit, Purpose, Result};

/// Root-key versions kept unwrapped by default. Each entry is an aws-lc AEAD
/// context; aws-lc cleanses its allocations when they are freed, so an evicted
/// key leaves no copy behind.
pub const DEFAULT_CACHE_ENTRIES: usize = 10_000;

pub struct SoftUnit {
    sealer: BlobSealer,
    /// During a master-key rotation: the old master key's sealer. Blobs the
    /// current key does not open (their MAC fails fast) are tried with it.
    legacy: Option<BlobSealer>,
    /// Shared with the unit this one was rotated from or to: the root keys'
    /// bytes do not change with their wrapping, so cached entries stay valid.
    root_keys: Arc<Mutex<LruCache<String, Arc<LessSafeKey>>>>,
}

fn derive(master: &[u8; 32], info: &[u8]) -> Zeroizing<[u8; 32]> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"keyhold-soft-unit-v1").extract(master);
    let mut out = Zeroizing::new([0u8; 32]);
    // Expanding 32 bytes from SHA-256 cannot fail.
    if let Ok(okm) = prk.expand(&[info], hkdf::HKDF_SHA256) {
        let _ = okm.fill(&mut out[..]);
    }
    out
}

fn gcm_for(len: usize) -> Result<&'static aead::Algorithm> {
    match len {
        16 => Ok(&aead::AES_128_GCM),
        24 => Ok(&aead::AES_192_GCM),
        32 => Ok(&aead::AES_256_GCM),
        _ => Err(CryptoError::BlobIntegrity),
    }
}

impl SoftUnit {
    /// Takes ownership of the master key; only derived keys are kept.
    pub fn new(master: Zeroizing<[u8; 32]>, cache_entries: usize) -> Self {
        let cap = NonZeroUsize::new(cache_entries.max(1)).unwrap_or(NonZeroUsize::MIN);
        SoftUnit {
            sealer: Self::sealer_for(&master),
            legacy: None,
            root_keys: Arc::new(Mutex::new(LruCache::new(cap))),
        }
    }

    fn sealer_for(master: &[u8; 32]) -> BlobSealer {
        let kek = derive(master, b"blob-wrap");
        let mac = derive(master, b"blob-mac");
        BlobSealer::new(kek, &mac[..])
    }

    /// A unit that wraps under `new_master` and still opens what this unit's
    /// current key wrapped (master-key rotation). The root-key cache is shared.
    pub fn rotated(&self, new_master: Zeroizing<[u8; 32]>) -> SoftUnit {
        SoftUnit {
            sealer: Self::sealer_for(&new_master),
            legacy: Some(self.sealer.clone()),
            root_keys: self.root_keys.clone(),
        }
    }

    /// A unit holding both keys from the start: `new_master` wraps, `old_master`
    /// still opens (unsealing in the middle of a rotation).
    pub fn rotating(
        old_master: Zeroizing<[u8; 32]>,
        new_master: Zeroizing<[u8; 32]>,
        cache_entries: usize,
    ) -> SoftUnit {
        let old = SoftUnit::new(old_master, cache_entries);
        old.rotated(new_master)
    }

    /// This unit without its old key (the rotation is over); the cache is shared.
    pub fn retired(&self) -> SoftUnit {
        SoftUnit {
            sealer: self.sealer.clone(),
            legacy: None,
            root_keys: self.root_keys.clone(),
        }
    }

    pub fn is_rotating(&self) -> bool {
        self.legacy.is_some()
    }

    /// Opens a blob under the current key, or the old one during a rotation.
    fn open(&self, binding: &Binding<'_>, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        match self.sealer.open(binding, blob) {
            Err(CryptoError::BlobIntegrity) => match &self.legacy {
                Some(old) => old.open(binding, blob),
                None => Err(CryptoError::BlobIntegrity),
            },
            other => other,
        }
    }

    /// Re-wraps a blob under the current key: `None` when it already is, the new
    /// blob when the old key wrapped it. A blob neither key opens (tampered,
    /// swapped) is `BlobIntegrity`. The material never leaves the unit.
    pub fn rewrap(&self, binding: &Binding<'_>, blob: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.sealer.open(binding, blob) {
            Ok(_) => Ok(None),
            Err(CryptoError::BlobIntegrity) => {
                let Some(old) = &self.legacy else {
                    return Err(CryptoError::BlobIntegrity);
                };
                let material = old.open(binding, blob)?;
                self.sealer.seal(binding, &material).map(Some)
            }
            Err(e) => Err(e),
        }
    }

    fn root_key(&self, binding: &Binding<'_>, blob: &[u8]) -> Result<Arc<LessSafeKey>> {
        if let Ok(mut cache) = self.root_keys.lock() {
            if let Some(k) = cache.get(binding.version_id) {
                return Ok(k.clone());
            }
        }
        let material = self.open(binding, blob)?;
        let alg = gcm_for(material.len())?;
        let key = UnboundKey::new(alg, &material).map_err(|_| CryptoError::Unit("aead key"))?;
        let key = Arc::new(LessSafeKey::new(key));
        if let Ok(mut cache) = self.root_keys.lock() {
            cache.put(binding.version_id.to_string(), key.clone());
        }
        Ok(key)
    }
}

impl CryptoUnit for SoftUnit {
    fn kind(&self) -> &'static str {
        "soft"
    }

    fn random(&self, out: &mut [u8]) -> Result<()> {
        aws_lc_rs::rand::fill(out).map_err(|_| CryptoError::Unit("random"))
    }

    fn generate_wrapped(&self, binding: &Binding<'_>, len: usize) -> Result<Vec<u8>> {
        let mut material = Zeroizing::new(vec![0u8; len]);
        self.random(&mut material)?;
        self.sealer.seal(binding, &material)
    }

    fn wrap_material(&self, binding: &Binding<'_>, material: &[u8]) -> Result<Vec<u8>> {
        if binding.purpose == Purpose::RootKey {
            gcm_for(material.len())
                .map_err(|_| CryptoError::InvalidInput("root keys are 16, 24 or 32 bytes"))?;
        }
        self.sealer.seal(binding, material)
    }

    fn unwrap_material(&self, binding: &Binding<'_>, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if binding.purpose == Purpose::RootKey {
            return Err(CryptoError::Unit("root key material never leaves the unit"));
        }
        self.open(binding, blob)
    }

    fn encrypt_dek(
        &self,
        binding: &Binding<'_>,
        blob: &[u8],
        nonce: &[u8; 12],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let key = self.root_key(binding, blob)?;
        let mut buf = Vec::with_capacity(plaintext.len() + 16);
        buf.extend_from_slice(plaintext);
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(aad),
            &mut buf,
        )
        .map_err(|_| CryptoError::Unit("seal"))?;
        Ok(buf)
    }

    fn decrypt_dek(
        &self,
        binding: &Binding<'_>,
        blob: &[u8],
        nonce: &[u8; 12],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let key = self.root_key(binding, blob)?;
        let mut buf = Zeroizing::new(sealed.to_vec());
        let n = key
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| CryptoError::Unauthentic)?
            .len();
        buf.truncate(n);
        Ok(buf)
    }

    fn generate_import_key(&self, binding: &Binding<'_>) -> Result<(String, Vec<u8>)> {
        let (public_pem, der) = import::generate()?;
        let wrapped = self.sealer.seal(binding, &der)?;
        Ok((public_pem, wrapped))
    }

    fn import_decrypt(
        &self,
        binding: &Binding<'_>,
        wrapped_private: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let der = self.open(binding, wrapped_private)?;
        import::decrypt(&der, ciphertext)
    }

    fn forget(&self, version_id: &str) {
        if let Ok(mut cache) = self.root_keys.lock() {
            cache.pop(version_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit() -> SoftUnit {
        SoftUnit::new(Zeroizing::new([9u8; 32]), 4)
    }

    fn b<'a>(obj: &'a str, ver: &'a str) -> Binding<'a> {
        Binding {
            purpose: Purpose::RootKey,
            instance_id: "inst",
            object_id: obj,
            version_id: ver,
        }
    }

    #[test]
    fn dek_round_trip_and_tamper() {
        let u = unit();
        let blob = u.generate_wrapped(&b("k", "v1"), 32).unwrap();
        let ct = u
            .encrypt_dek(&b("k", "v1"), &blob, &[1; 12], b"aad", b"secret dek")
            .unwrap();
        assert_eq!(
            &u.decrypt_dek(&b("k", "v1"), &blob, &[1; 12], b"aad", &ct)
                .unwrap()[..],
            b"secret dek"
        );
        assert_eq!(
            u.decrypt_dek(&b("k", "v1"), &blob, &[1; 12], b"aaX", &ct)
                .unwrap_err(),
            CryptoError::Unauthentic
        );
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert_eq!(
            u.decrypt_dek(&b("k", "v1"), &blob, &[1; 12], b"aad", &bad)
                .unwrap_err(),
            CryptoError::Unauthentic
        );
    }

    #[test]
    fn blobs_are_bound_to_their_key() {
        let u = unit();
        let blob = u.generate_wrapped(&b("k", "v1"), 32).unwrap();
        assert_eq!(
            u.encrypt_dek(&b("other", "v2"), &blob, &[1; 12], b"", b"x")
                .unwrap_err(),
            CryptoError::BlobIntegrity
        );
        let mut flipped = blob.clone();
        flipped[5] ^= 1;
        assert_eq!(
            u.encrypt_dek(&b("k", "v3"), &flipped, &[1; 12], b"", b"x")
                .unwrap_err(),
            CryptoError::BlobIntegrity
        );
        // Another master key cannot open it either.
        let other = SoftUnit::new(Zeroizing::new([8u8; 32]), 4);
        assert_eq!(
            other
                .encrypt_dek(&b("k", "v1"), &blob, &[1; 12], b"", b"x")
                .unwrap_err(),
            CryptoError::BlobIntegrity
        );
    }

    #[test]
    fn imported_sizes() {
        let u = unit();
        for len in [16, 24, 32] {
            let blob = u.wrap_material(&b("k", "v"), &vec![3u8; len]).unwrap();
            u.forget("v");
            let ct = u
                .encrypt_dek(&b("k", "v"), &blob, &[0; 12], b"", b"dek")
                .unwrap();
            assert_eq!(
                &u.decrypt_dek(&b("k", "v"), &blob, &[0; 12], b"", &ct)
                    .unwrap()[..],
                b"dek"
            );
        }
        assert!(u.wrap_material(&b("k", "v"), &[1u8; 17]).is_err());
        assert!(u
            .unwrap_material(
                &b("k", "v"),
                &u.wrap_material(&b("k", "v"), &[1u8; 32]).unwrap()
            )
            .is_err());
    }

    #[test]
    fn rotation_rewraps_and_retires_the_old_key() {
        let k1 = unit();
        let sb = |v| Binding {
            purpose: Purpose::StandardKey,
            instance_id: "inst",
            object_id: "k",
            version_id: v,
        };
        let root = k1.generate_wrapped(&b("k", "v1"), 32).unwrap();
        let std = k1.wrap_material(&sb("s1"), b"standard").unwrap();
        let ct = k1
            .encrypt_dek(&b("k", "v1"), &root, &[2; 12], b"", b"dek")
            .unwrap();
        let k2 = k1.rotated(Zeroizing::new([7u8; 32]));
        assert!(k2.is_rotating());
        // Old blobs still open, new ones are wrapped under the new key.
        k2.forget("v1");
        assert_eq!(
            &k2.decrypt_dek(&b("k", "v1"), &root, &[2; 12], b"", &ct)
                .unwrap()[..],
            b"dek"
        );
        assert_eq!(
            &k2.unwrap_material(&sb("s1"), &std).unwrap()[..],
            b"standard"
        );
        let new_std = k2.rewrap(&sb("s1"), &std).unwrap().unwrap();
        assert_eq!(k2.rewrap(&sb("s1"), &new_std).unwrap(), None);
        let new_root = k2.rewrap(&b("k", "v1"), &root).unwrap().unwrap();
        // A tampered or swapped blob is refused by both keys.
        let mut bad = root.clone();
        bad[3] ^= 1;
        assert_eq!(
            k2.rewrap(&b("k", "v1"), &bad).unwrap_err(),
            CryptoError::BlobIntegrity
        );
        assert_eq!(
            k2.rewrap(&b("k", "v2"), &root).unwrap_err(),
            CryptoError::BlobIntegrity
        );
        let done = k2.retired();
        assert!(!done.is_rotating());
        done.forget("v1");
        assert_eq!(
            &done
                .decrypt_dek(&b("k", "v1"), &new_root, &[2; 12], b"", &ct)
                .unwrap()[..],
            b"dek"
        );
        assert_eq!(
            &done.unwrap_material(&sb("s1"), &new_std).unwrap()[..],
            b"standard"
        );
        assert_eq!(
            done.unwrap_material(&sb("s1"), &std).unwrap_err(),
            CryptoError::BlobIntegrity
        );
        // Unsealing mid-rotation with both keys gives the same unit.
        let both = SoftUnit::rotating(Zeroizing::new([9u8; 32]), Zeroizing::new([7u8; 32]), 4);
        assert_eq!(
            &both.unwrap_material(&sb("s1"), &std).unwrap()[..],
            b"standard"
        );
        assert_eq!(
            &both.unwrap_material(&sb("s1"), &new_std).unwrap()[..],
            b"standard"
        );
    }
}
