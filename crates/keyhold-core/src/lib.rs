//! Pure domain model of Keyhold: no I/O, no async.
//!
//! Everything here is deterministic given its inputs (time is passed in), so the
//! rules of the key lifecycle can be unit-tested exhaustively.

pub mod access;
pub mod envelope;
pub mod error;
pub mod iam;
pub mod list;
pub mod model;
pub mod resource;
pub mod rules;
pub mod timefmt;
pub mod validate;

pub use error::{Error, Reason, Result};
