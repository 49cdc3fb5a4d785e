//! One error type for the ceremony. Messages name what went wrong and never
//! carry key material or passphrases.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CeremonyError {
    /// AES-GCM refused the file: a wrong passphrase, or the file was altered.
    #[error("wrong passphrase, or the file was altered")]
    WrongPassphrase,
    /// Input that cannot be used (a file of another kind, a bad field).
    #[error("{0}")]
    Malformed(String),
    /// A signature that does not verify, or a signer who is not an administrator.
    #[error("{0}")]
    BadSignature(String),
    /// The command is not allowed in the ceremony's current state.
    #[error("{0}")]
    NotAllowed(String),
    /// The command was prepared for another sequence number or crypto instance.
    #[error("{0}")]
    Stale(String),
    /// A key part that does not match what the ceremony expects.
    #[error("{0}")]
    PartMismatch(String),
    /// The crypto library failed where it should not.
    #[error("cryptographic failure: {0}")]
    Crypto(&'static str),
}

pub type Result<T> = std::result::Result<T, CeremonyError>;
