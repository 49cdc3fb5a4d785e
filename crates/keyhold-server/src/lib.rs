//! Keyhold's server: the Key Protect v2 HTTP API (`api`), the domain services
//! behind it (`service`), authentication (`auth`), and process set-up
//! (`config`, `dev`, `server`).

pub mod api;
pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod ceremony;
pub mod config;
pub mod dev;
pub mod metrics;
pub mod request_id;
pub mod server;
pub mod service;
