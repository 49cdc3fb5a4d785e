//! Crypto units: where key material is kept and used.
//!
//! A [`CryptoUnit`] owns a master key and never hands out root-key material: it
//! returns blobs wrapped under the master key and performs DEK wrap/unwrap itself.
//! [`SoftUnit`] is the in-process unit (aws-lc-rs); [`Pkcs11Unit`] keeps the
//! master key in an HSM (cryptoki) and implements the same trait.

mod blob;
mod import;
mod pkcs11;
mod sealable;
mod soft;

pub use pkcs11::{
    pkcs11_context, Pkcs11Config, Pkcs11Unit, DEFAULT_MAC_LABEL, DEFAULT_MASTER_LABEL,
};
pub use sealable::SealableUnit;
pub use soft::{SoftUnit, DEFAULT_CACHE_ENTRIES};
use zeroize::Zeroizing;

/// What a stored blob belongs to. Blobs are MAC-bound to it, so a blob copied
/// onto another key, version or instance fails to unwrap.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub purpose: Purpose,
    pub instance_id: &'a str,
    pub object_id: &'a str,
    pub version_id: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    RootKey,
    StandardKey,
    ImportTokenKey,
    /// Server secrets such as the token-signing key.
    ServiceSecret,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::RootKey => b"root-key",
            Purpose::StandardKey => b"standard-key",
            Purpose::ImportTokenKey => b"import-token-key",
            Purpose::ServiceSecret => b"service-secret",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// A stored blob failed its integrity check: tampering or a swapped blob.
    #[error("stored key material failed its integrity check")]
    BlobIntegrity,
    /// The caller's ciphertext or AAD does not authenticate.
    #[error("the ciphertext could not be decrypted with this key and aad")]
    Unauthentic,
    /// The caller's input cannot be used (bad length, bad RSA ciphertext…).
    #[error("invalid input: {0}")]
    InvalidInput(&'static str),
    #[error("crypto unit failure: {0}")]
    Unit(&'static str),
    /// The unit holds no master key: a quorum of administrators must unseal it.
    #[error("the crypto unit is sealed")]
    Sealed,
    /// The master key was destroyed on purpose (crypto-shredding): nothing unwraps again.
    #[error("the master key was zeroized")]
    Zeroized,
}

pub type Result<T> = std::result::Result<T, CryptoError>;

/// Whether a unit holds its master key (readiness and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealState {
    Unsealed,
    /// No master key loaded yet (or sealed again): a quorum must unseal.
    Sealed,
    /// The master key was destroyed for good.
    Zeroized,
}

impl SealState {
    pub const ALL: [SealState; 3] = [SealState::Unsealed, SealState::Sealed, SealState::Zeroized];

    pub fn as_str(self) -> &'static str {
        match self {
            SealState::Unsealed => "unsealed",
            SealState::Sealed => "sealed",
            SealState::Zeroized => "zeroized",
        }
    }
}

pub const IMPORT_KEY_BITS: usize = 4096;

pub trait CryptoUnit: Send + Sync + 'static {
    /// A short name for logs and status ("soft", "pkcs11").
    fn kind(&self) -> &'static str;

    /// Units whose master key is always present (a file, an HSM) are never sealed.
    fn seal_state(&self) -> SealState {
        SealState::Unsealed
    }

    /// True when operations may block (an HSM round trip): callers then keep
    /// them off async worker threads. In-process units compute and return.
    fn blocks(&self) -> bool {
        false
    }

    /// Fills `out` from the unit's random generator.
    fn random(&self, out: &mut [u8]) -> Result<()>;

    /// Generates `len` bytes of key material inside the unit and returns them wrapped.
    fn generate_wrapped(&self, binding: &Binding<'_>, len: usize) -> Result<Vec<u8>>;

    /// Wraps caller-supplied key material (import).
    fn wrap_material(&self, binding: &Binding<'_>, material: &[u8]) -> Result<Vec<u8>>;

    /// Unwraps material that may leave the unit (standard-key payloads only).
    fn unwrap_material(&self, binding: &Binding<'_>, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>>;

    /// AES-GCM encrypts `plaintext` under the root key version in `blob`; returns ct ‖ tag.
    fn encrypt_dek(
        &self,
        binding: &Binding<'_>,
        blob: &[u8],
        nonce: &[u8; 12],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>>;

    /// The inverse of [`CryptoUnit::encrypt_dek`].
    fn decrypt_dek(
        &self,
        binding: &Binding<'_>,
        blob: &[u8],
        nonce: &[u8; 12],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>>;

    /// Generates an RSA-4096 key pair for secure import; returns the public key as a
    /// PEM `PUBLIC KEY` block and the private key wrapped.
    fn generate_import_key(&self, binding: &Binding<'_>) -> Result<(String, Vec<u8>)>;

    /// RSA-OAEP (SHA-256, MGF1-SHA-256) decryption with a wrapped import private key.
    fn import_decrypt(
        &self,
        binding: &Binding<'_>,
        wrapped_private: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>>;

    /// Drops any cached unwrapped material for a key version (after purge, say).
    fn forget(&self, version_id: &str);
}
