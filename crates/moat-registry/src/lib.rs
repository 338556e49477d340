//! moat's registry client: pull, push and login against any registry speaking the OCI
//! distribution API (Docker Hub, Debian's `docker-registry`, ...).
//!
//! - [`client`]: one registry over HTTP(S): auth (anonymous, basic, bearer tokens), retries.
//! - [`credentials`]: logins, kept in Docker's `config.json`.
//! - [`manifest`]: manifests and indexes, platform selection.
//! - [`pull`] / [`push`]: moving images between a registry and the local store.
//! - [`progress`]: what pulls and pushes report, for a terminal or the API.

pub mod client;
pub mod credentials;
pub mod manifest;
pub mod progress;
pub mod pull;
pub mod push;

pub use client::{Client, ClientError, ClientOptions};
pub use credentials::{CredentialStore, Credentials};
