//! The attachment store: where fetched objects are kept.
//!
//! An upload is written chunk by chunk and becomes visible only when
//! committed; an upload dropped without a commit leaves nothing behind. The
//! local directory store is the only implementation; another backend, such
//! as a bucket of our own, would implement the same two traits.

mod directory_sync;
mod local;
mod unnamed;

use async_trait::async_trait;

pub use local::LocalDirStore;

/// Stores objects under keys such as `{team}/{task}/{attachment}`.
#[async_trait]
pub trait AttachmentStore: Send + Sync {
    /// Starts writing the object `key`, replacing any earlier one when
    /// committed.
    async fn begin(&self, key: &str) -> std::io::Result<Box<dyn Upload>>;
}

/// One object being written.
#[async_trait]
pub trait Upload: Send {
    /// Appends a chunk.
    async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()>;
    /// Makes the object durable and visible under its key.
    async fn commit(self: Box<Self>) -> std::io::Result<()>;
}
