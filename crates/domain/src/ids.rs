//! Typed identifiers. All are UUIDv7, so they sort by creation time and index
//! well in PostgreSQL.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// Creates a new time-ordered identifier.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

id_type!(
    /// A customer team: the unit that owns API keys, tasks and integrations.
    TeamId
);
id_type!(
    /// A submitted task: one callback URL and its attachments.
    TaskId
);
id_type!(
    /// One attachment URI of a task.
    AttachmentId
);
id_type!(
    /// The callback of a task. Its webhook id is derived from it and stays
    /// the same across every retry and replay.
    CallbackId
);

impl CallbackId {
    /// Returns the Standard Webhooks message id sent as `webhook-id`.
    pub fn webhook_id(&self) -> String {
        format!("msg_{}", self.0.simple())
    }
}
