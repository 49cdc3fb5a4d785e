//! A software unit whose master key comes from the ceremony: sealed (no master
//! key in memory) until a quorum loads the key parts, then delegating to a
//! [`SoftUnit`]. Sealing drops the inner unit, whose derived keys and cached
//! root keys are wiped on drop. The hot path is one atomic pointer load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use zeroize::Zeroizing;

use crate::{Binding, CryptoError, CryptoUnit, Result, SealState, SoftUnit};

pub struct SealableUnit {
    inner: ArcSwapOption<SoftUnit>,
    cache_entries: usize,
    zeroized: AtomicBool,
}

impl SealableUnit {
    /// Starts sealed.
    pub fn sealed(cache_entries: usize) -> Self {
        SealableUnit {
            inner: ArcSwapOption::empty(),
            cache_entries,
            zeroized: AtomicBool::new(false),
        }
    }

    pub fn is_sealed(&self) -> bool {
        self.inner.load().is_none()
    }

    /// Forgets the master key for good (crypto-shredding): calls answer
    /// [`CryptoError::Zeroized`] and unsealing does nothing any more.
    pub fn zeroize(&self) {
        self.zeroized.store(true, Ordering::SeqCst);
        self.inner.store(None);
    }

    pub fn is_zeroized(&self) -> bool {
        self.zeroized.load(Ordering::SeqCst)
    }

    /// Installs the master key (the ceremony checked its verification pattern).
    pub fn unseal(&self, master: Zeroizing<[u8; 32]>) {
        if self.is_zeroized() {
            return;
        }
        self.inner
            .store(Some(Arc::new(SoftUnit::new(master, self.cache_entries))));
    }

    /// Installs both keys of a rotation in progress (unsealing mid-rotation):
    /// `new` wraps, `old` still opens what is not re-wrapped yet.
    pub fn unseal_rotating(&self, old: Zeroizing<[u8; 32]>, new: Zeroizing<[u8; 32]>) {
        if self.is_zeroized() {
            return;
        }
        self.inner.store(Some(Arc::new(SoftUnit::rotating(
            old,
            new,
            self.cache_entries,
        ))));
    }

    /// Starts a master-key rotation: from now on blobs are wrapped under `new`,
    /// and the current key still opens the blobs not re-wrapped yet.
    pub fn begin_rotation(&self, new: Zeroizing<[u8; 32]>) -> Result<()> {
        let cur = self.inner.load_full().ok_or(CryptoError::Sealed)?;
        self.inner.store(Some(Arc::new(cur.rotated(new))));
        Ok(())
    }

    /// Ends a rotation: the old key is dropped (wiped); cached root keys stay.
    pub fn retire_old_key(&self) -> Result<()> {
        let cur = self.inner.load_full().ok_or(CryptoError::Sealed)?;
        self.inner.store(Some(Arc::new(cur.retired())));
        Ok(())
    }

    pub fn is_rotating(&self) -> bool {
        self.inner.load().as_ref().is_some_and(|u| u.is_rotating())
    }

    /// See [`SoftUnit::rewrap`].
    pub fn rewrap(&self, binding: &Binding<'_>, blob: &[u8]) -> Result<Option<Vec<u8>>> {
        self.with(|u| u.rewrap(binding, blob))
    }

    /// Forgets the master key. Requests in flight finish with the unit they loaded.
    pub fn seal(&self) {
        self.inner.store(None);
    }

    fn with<T>(&self, f: impl FnOnce(&SoftUnit) -> Result<T>) -> Result<T> {
        match &*self.inner.load() {
            Some(u) => f(u),
            None if self.is_zeroized() => Err(CryptoError::Zeroized),
            None => Err(CryptoError::Sealed),
        }
    }
}

impl CryptoUnit for SealableUnit {
    fn kind(&self) -> &'static str {
        "soft-sealable"
    }

    fn seal_state(&self) -> SealState {
        if self.is_zeroized() {
            SealState::Zeroized
        } else if self.is_sealed() {
            SealState::Sealed
        } else {
            SealState::Unsealed
        }
    }

    fn random(&self, out: &mut [u8]) -> Result<()> {
        // Randomness needs no master key.
        aws_lc_rs::rand::fill(out).map_err(|_| CryptoError::Unit("random"))
    }

    fn generate_wrapped(&self, binding: &Binding<'_>, len: usize) -> Result<Vec<u8>> {
        self.with(|u| u.generate_wrapped(binding, len))
    }

    fn wrap_material(&self, binding: &Binding<'_>, material: &[u8]) -> Result<Vec<u8>> {
        self.with(|u| u.wrap_material(binding, material))
    }

    fn unwrap_material(&self, binding: &Binding<'_>, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.with(|u| u.unwrap_material(binding, blob))
    }

    fn encrypt_dek(
        &self,
        binding: &Binding<'_>,
        blob: &[u8],
        nonce: &[u8; 12],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        self.with(|u| u.encrypt_dek(binding, blob, nonce, aad, plaintext))
    }

    fn decrypt_dek(
        &self,
        binding: &Binding<'_>,
        blob: &[u8],
        nonce: &[u8; 12],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        self.with(|u| u.decrypt_dek(binding, blob, nonce, aad, sealed))
    }

    fn generate_import_key(&self, binding: &Binding<'_>) -> Result<(String, Vec<u8>)> {
        self.with(|u| u.generate_import_key(binding))
    }

    fn import_decrypt(
        &self,
        binding: &Binding<'_>,
        wrapped_private: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        self.with(|u| u.import_decrypt(binding, wrapped_private, ciphertext))
    }

    fn forget(&self, version_id: &str) {
        if let Some(u) = &*self.inner.load() {
            u.forget(version_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Purpose;

    #[test]
    fn sealed_until_unsealed_and_again_after_seal() {
        let b = Binding {
            purpose: Purpose::RootKey,
            instance_id: "i",
            object_id: "k",
            version_id: "v",
        };
        let u = SealableUnit::sealed(4);
        assert!(u.is_sealed());
        assert_eq!(u.generate_wrapped(&b, 32).unwrap_err(), CryptoError::Sealed);
        let mut r = [0u8; 4];
        u.random(&mut r).unwrap();
        u.unseal(Zeroizing::new([1u8; 32]));
        let blob = u.generate_wrapped(&b, 32).unwrap();
        let ct = u.encrypt_dek(&b, &blob, &[0; 12], b"", b"dek").unwrap();
        u.seal();
        assert_eq!(
            u.decrypt_dek(&b, &blob, &[0; 12], b"", &ct).unwrap_err(),
            CryptoError::Sealed
        );
        u.unseal(Zeroizing::new([1u8; 32]));
        assert_eq!(
            &u.decrypt_dek(&b, &blob, &[0; 12], b"", &ct).unwrap()[..],
            b"dek"
        );
        u.zeroize();
        u.unseal(Zeroizing::new([1u8; 32]));
        assert_eq!(
            u.decrypt_dek(&b, &blob, &[0; 12], b"", &ct).unwrap_err(),
            CryptoError::Zeroized
        );
    }
}
