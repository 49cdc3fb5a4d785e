//! The master-key ceremony (Keep Your Own Key), the parts that need no server:
//!
//! - [`admin`]: administrators' signature keys (Ed25519, ECDSA P-256/P-521) and
//!   their passphrase-protected key files;
//! - [`part`]: master-key parts in passphrase-protected files, verification
//!   patterns, and combining parts;
//! - [`command`]: ceremony commands and the canonical bytes administrators sign;
//! - [`state`]: the stored ceremony state and its rules (imprint mode,
//!   thresholds, quorum);
//! - [`register`]: the new-master-key and unseal registers (memory only);
//! - [`transport`]: how a part travels from an administrator's terminal to the
//!   server (X25519 + HKDF + AES-GCM to a key the server publishes).
//!
//! Nothing here stores a part or a master key; callers keep them in
//! [`zeroize::Zeroizing`] buffers that are wiped on drop.

pub mod admin;
pub mod command;
mod encode;
mod error;
pub mod part;
mod passbox;
pub mod register;
pub mod state;
pub mod transport;

pub use error::{CeremonyError, Result};
pub use passbox::{KdfParams, PassBox};

/// A master key or key part: 256 bits, wiped on drop.
pub type Secret32 = zeroize::Zeroizing<[u8; 32]>;

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
