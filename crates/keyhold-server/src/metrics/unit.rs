//! A crypto unit that counts what it is asked to do: every operation of the
//! unit it wraps, by unit kind, operation and outcome. One relaxed atomic add
//! per call; the unit's slot is resolved once, here.

use std::sync::Arc;

use keyhold_crypto::{Binding, CryptoUnit, Result, SealState};
use zeroize::Zeroizing;

use super::{record_crypto, unit_index, CryptoOp};

pub struct MeteredUnit {
    inner: Arc<dyn CryptoUnit>,
    slot: usize,
}

impl MeteredUnit {
    pub fn new(inner: Arc<dyn CryptoUnit>) -> Self {
        let slot = unit_index(inner.kind());
        MeteredUnit { inner, slot }
    }

    fn count<T>(&self, op: CryptoOp, r: Result<T>) -> Result<T> {
        record_crypto(self.slot, op, r.as_ref().map(|_| ()));
        r
    }
}

impl CryptoUnit for MeteredUnit {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn seal_state(&self) -> SealState {
        self.inner.seal_state()
    }

    fn blocks(&self) -> bool {
        self.inner.blocks()
    }

    fn random(&self, out: &mut [u8]) -> Result<()> {
        self.inner.random(out)
    }

    fn generate_wrapped(&self, binding: &Binding<'_>, len: usize) -> Result<Vec<u8>> {
        self.count(
            CryptoOp::GenerateKey,
            self.inner.generate_wrapped(binding, len),
        )
    }

    fn wrap_material(&self, binding: &Binding<'_>, material: &[u8]) -> Result<Vec<u8>> {
        self.count(
            CryptoOp::WrapMaterial,
            self.inner.wrap_material(binding, material),
        )
    }

    fn unwrap_material(&self, binding: &Binding<'_>, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.count(
            CryptoOp::UnwrapMaterial,
            self.inner.unwrap_material(binding, blob),
        )
    }

    fn encrypt_dek(
        &self,
        binding: &Binding<'_>,
        blob: &[u8],
        nonce: &[u8; 12],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        self.count(
            CryptoOp::WrapDek,
            self.inner.encrypt_dek(binding, blob, nonce, aad, plaintext),
        )
    }

    fn decrypt_dek(
        &self,
        binding: &Binding<'_>,
        blob: &[u8],
        nonce: &[u8; 12],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        self.count(
            CryptoOp::UnwrapDek,
            self.inner.decrypt_dek(binding, blob, nonce, aad, sealed),
        )
    }

    fn generate_import_key(&self, binding: &Binding<'_>) -> Result<(String, Vec<u8>)> {
        self.count(
            CryptoOp::GenerateImportKey,
            self.inner.generate_import_key(binding),
        )
    }

    fn import_decrypt(
        &self,
        binding: &Binding<'_>,
        wrapped_private: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        self.count(
            CryptoOp::ImportDecrypt,
            self.inner
                .import_decrypt(binding, wrapped_private, ciphertext),
        )
    }

    fn forget(&self, version_id: &str) {
        self.inner.forget(version_id)
    }
}
