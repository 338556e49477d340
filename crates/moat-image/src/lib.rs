//! moat's local image store: content-addressed blobs (sha256, verified while written), one
//! unpacked snapshot per distinct layer with overlayfs whiteouts, SQLite metadata, and the
//! overlay mount of a container's root filesystem.

pub mod archive;
pub mod blobs;
pub mod changes;
pub mod check;
pub mod commit;
pub mod db;
pub mod digest;
pub mod docker;
pub mod layer_stream;
pub mod mount;
pub mod reference;
pub mod store;
pub mod unpack;

pub use digest::Digest;
pub use reference::Reference;
pub use store::{ImageStore, StoreError};
