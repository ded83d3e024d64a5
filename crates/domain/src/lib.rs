//! Domain types shared by every Attaché binary.
//!
//! Nothing here performs I/O. The producer validates attachment URIs with
//! [`uri::parse`], the workers parse them again from the stored text (parsing
//! is deterministic), and every binary speaks [`job::JobMessage`] over the
//! broker while PostgreSQL keeps the state described by [`status`].

pub mod error_code;
pub mod ids;
pub mod job;
pub mod retry;
pub mod status;
pub mod uri;

pub use error_code::ErrorCode;
pub use ids::{AttachmentId, CallbackId, TaskId, TeamId};
pub use job::{CallbackJob, FETCH_GROUP_SIZE, FetchGroupJob, FetchJob, JobMessage};
pub use retry::RetryPolicy;
pub use status::{AttachmentStatus, CallbackStatus, TaskStatus};
pub use uri::{AttachmentRef, Provider, UriError};
