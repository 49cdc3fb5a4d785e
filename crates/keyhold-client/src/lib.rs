//! Keyhold's client side.
//!
//! - [`Client`]: a typed async client for the Key Protect v2 API that Keyhold serves. It
//!   exchanges an API key for an IAM token and refreshes it before it expires, retries
//!   429 and 5xx answers with exponential backoff and jitter, and its errors carry the
//!   Key Protect reason code and message.
//! - [`stream`]: the encrypted-file format (STREAM over AES-256-GCM, 64 KiB segments).
//! - [`envelope`]: envelope encryption of data with a root key: a fresh DEK per file,
//!   wrapped by the KMS, over `Read`/`Write` or tokio's async streams, with an optional
//!   DEK cache bounded by age, uses and bytes.

pub mod admin;
mod audit;
mod client;
pub mod dek_cache;
pub mod envelope;
mod error;
pub mod iam;
pub mod import;
pub mod instances;
mod keys;
pub mod model;
mod retry;
pub mod stream;

pub use client::{Answer, Client, ClientConfig};
pub use error::{ClientError, Reason, Result};
pub use retry::RetryPolicy;
